//! Drift between a reference (the training data) and current data, per column, with the
//! metrics Azure ML model monitoring, Evidently and Databricks use:
//! - numeric: population stability index (PSI) and Jensen-Shannon distance over fixed bins taken
//!   from the reference, normalized Wasserstein distance (divided by the reference's standard
//!   deviation) and the two-sample Kolmogorov-Smirnov statistic;
//! - categorical: Jensen-Shannon distance, PSI and Pearson's chi-squared test (statistic and
//!   p-value) of the current counts against the reference proportions.
//!
//! These functions take counts (what the sketches merged on the client hold); the KS statistic
//! and the Wasserstein area are read off the 1,000-bin sketches themselves
//! ([`super::compare`]), and jobs/monitor/tests/drift.rs holds both against SciPy on the raw values.
//! Natural logarithms throughout (as SciPy's defaults).

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Proportions below this count as this, so that an empty bin does not make PSI infinite
/// (Evidently's choice).
pub const EMPTY_BIN: f64 = 1e-4;

fn proportions(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts.iter().map(|c| if total == 0 { 0.0 } else { *c as f64 / total as f64 }).collect()
}

/// Population stability index of `current` against `reference` counts over the same bins.
pub fn psi(reference: &[u64], current: &[u64]) -> f64 {
    proportions(reference)
        .into_iter()
        .zip(proportions(current))
        .map(|(r, c)| {
            let (r, c) = (r.max(EMPTY_BIN), c.max(EMPTY_BIN));
            (c - r) * (c / r).ln()
        })
        .sum()
}

/// Jensen-Shannon distance (the square root of the divergence) between two count vectors.
pub fn js_distance(reference: &[u64], current: &[u64]) -> f64 {
    let (p, q) = (proportions(reference), proportions(current));
    let kl = |a: &[f64], m: &[f64]| -> f64 {
        a.iter().zip(m).filter(|(x, _)| **x > 0.0).map(|(x, y)| x * (x / y).ln()).sum()
    };
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    ((kl(&p, &m) + kl(&q, &m)) / 2.0).max(0.0).sqrt()
}

/// Pearson's chi-squared test of `current` counts against the proportions of `reference`:
/// (statistic, p-value). Categories the reference never saw count as `EMPTY_BIN` of it.
pub fn chi_squared(reference: &[u64], current: &[u64]) -> (f64, f64) {
    let total: u64 = current.iter().sum();
    let expected: Vec<f64> = proportions(reference).into_iter().map(|r| r.max(EMPTY_BIN) * total as f64).collect();
    let scale = total as f64 / expected.iter().sum::<f64>();
    let statistic: f64 = current
        .iter()
        .zip(&expected)
        .map(|(o, e)| {
            let e = e * scale;
            (*o as f64 - e).powi(2) / e
        })
        .sum();
    let dof = (current.len().max(2) - 1) as f64;
    let p = ChiSquared::new(dof).map(|d| d.sf(statistic)).unwrap_or(f64::NAN);
    (statistic, p)
}

/// The asymptotic p-value of a two-sample KS statistic `d` for samples of `n` and `m` values
/// (the Kolmogorov distribution with Stephens' small-sample correction).
pub fn ks_p_value(d: f64, n: u64, m: u64) -> f64 {
    if n == 0 || m == 0 || !d.is_finite() {
        return f64::NAN;
    }
    let en = ((n as f64 * m as f64) / (n + m) as f64).sqrt();
    let lambda = (en + 0.12 + 0.11 / en) * d;
    if lambda < 0.2 {
        return 1.0;
    }
    let (mut sum, mut sign) = (0.0, 1.0);
    for k in 1..=100 {
        let term = sign * 2.0 * (-2.0 * f64::from(k * k) * lambda * lambda).exp();
        sum += term;
        if term.abs() < 1e-12 {
            break;
        }
        sign = -sign;
    }
    sum.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_counts_have_no_drift() {
        let counts = [120u64, 95, 101, 88, 99, 103, 97, 110, 90, 97];
        assert!(psi(&counts, &counts).abs() < 1e-12 && js_distance(&counts, &counts) < 1e-12);
        let (statistic, p) = chi_squared(&counts, &counts);
        assert!(statistic < 1e-9 && (p - 1.0).abs() < 1e-9);
    }

    #[test]
    fn ks_p_values_follow_the_asymptotics() {
        // SciPy's kstwo asymptotics: D = 0.1 between 1000 and 1000 values gives p near 6e-5.
        let p = ks_p_value(0.1, 1000, 1000);
        assert!(p > 1e-5 && p < 1e-4, "{p}");
        assert_eq!(ks_p_value(0.0, 1000, 1000), 1.0);
    }
}
