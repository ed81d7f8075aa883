//! Drift between a reference (the training data) and current data, per column, with the
//! metrics Azure ML model monitoring, Evidently and Databricks use:
//! - numeric: population stability index (PSI) and Jensen-Shannon distance over fixed bins taken
//!   from the reference, normalized Wasserstein distance (divided by the reference's standard
//!   deviation) and the two-sample Kolmogorov-Smirnov statistic;
//! - categorical: Jensen-Shannon distance, PSI and Pearson's chi-squared test (statistic and
//!   p-value) of the current counts against the reference proportions.
//!
//! Binned metrics take counts (what the sketches merged on the client hold); KS and Wasserstein
//! take sorted values. Natural logarithms throughout (as SciPy's defaults).

use statrs::distribution::{ChiSquared, ContinuousCDF};

/// Proportions below this count as this, so that an empty bin does not make PSI infinite
/// (Evidently's choice).
pub const EMPTY_BIN: f64 = 1e-4;

/// Edges of `bins` equal-width bins over the reference's range; values outside it fall in the
/// first or the last bin. Empty or constant references give one bin.
pub fn reference_edges(reference: &[f64], bins: usize) -> Vec<f64> {
    let finite = reference.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo.partial_cmp(&hi) != Some(std::cmp::Ordering::Less) || bins < 2 {
        return Vec::new();
    }
    (1..bins).map(|i| lo + (hi - lo) * i as f64 / bins as f64).collect()
}

/// Counts of `values` in the bins that inner `edges` make (`edges.len() + 1` bins; a value equal
/// to an edge goes to the bin above it). Non-finite values are not counted.
pub fn bin_counts(edges: &[f64], values: &[f64]) -> Vec<u64> {
    let mut counts = vec![0u64; edges.len() + 1];
    for v in values.iter().copied().filter(|v| v.is_finite()) {
        counts[edges.partition_point(|e| *e <= v)] += 1;
    }
    counts
}

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

/// The two-sample Kolmogorov-Smirnov statistic: the largest gap between the empirical CDFs of
/// two sorted samples.
pub fn ks_statistic(reference: &[f64], current: &[f64]) -> f64 {
    let (n, m) = (reference.len(), current.len());
    if n == 0 || m == 0 {
        return f64::NAN;
    }
    let (mut i, mut j, mut gap) = (0, 0, 0.0f64);
    while i < n && j < m {
        let x = reference[i].min(current[j]);
        while i < n && reference[i] <= x {
            i += 1;
        }
        while j < m && current[j] <= x {
            j += 1;
        }
        gap = gap.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    gap
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

/// The first Wasserstein (earth mover's) distance between two sorted samples.
pub fn wasserstein(reference: &[f64], current: &[f64]) -> f64 {
    let (n, m) = (reference.len(), current.len());
    if n == 0 || m == 0 {
        return f64::NAN;
    }
    // Integrate |F_ref - F_cur| over the merged support.
    let (mut i, mut j, mut area) = (0, 0, 0.0);
    let mut at = reference[0].min(current[0]);
    while i < n || j < m {
        let next = match (reference.get(i), current.get(j)) {
            (Some(a), Some(b)) => a.min(*b),
            (Some(a), None) => *a,
            (None, Some(b)) => *b,
            (None, None) => break,
        };
        area += (i as f64 / n as f64 - j as f64 / m as f64).abs() * (next - at);
        at = next;
        while i < n && reference[i] <= next {
            i += 1;
        }
        while j < m && current[j] <= next {
            j += 1;
        }
    }
    area
}

/// Wasserstein distance in units of the reference's (population) standard deviation.
pub fn normalized_wasserstein(reference: &[f64], current: &[f64]) -> f64 {
    let n = reference.len() as f64;
    let mean = reference.iter().sum::<f64>() / n;
    let std = (reference.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    wasserstein(reference, current) / std
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_data_has_no_drift() {
        let values: Vec<f64> = (0..1000).map(|i| f64::from(i % 97)).collect();
        let mut sorted = values.clone();
        sorted.sort_by(f64::total_cmp);
        let edges = reference_edges(&values, 10);
        let counts = bin_counts(&edges, &values);
        assert_eq!(counts.iter().sum::<u64>(), 1000);
        assert!(psi(&counts, &counts).abs() < 1e-12 && js_distance(&counts, &counts) < 1e-12);
        assert_eq!(ks_statistic(&sorted, &sorted), 0.0);
        assert_eq!(wasserstein(&sorted, &sorted), 0.0);
        let (statistic, p) = chi_squared(&counts, &counts);
        assert!(statistic < 1e-9 && (p - 1.0).abs() < 1e-9);
    }

    #[test]
    fn shifted_data_drifts_by_known_amounts() {
        let reference: Vec<f64> = (0..100).map(f64::from).collect();
        let current: Vec<f64> = (0..100).map(|i| f64::from(i) + 10.0).collect();
        // Every point moves by 10: the distance is 10; a tenth of the mass leaves the overlap.
        assert!((wasserstein(&reference, &current) - 10.0).abs() < 1e-9);
        assert!((ks_statistic(&reference, &current) - 0.1).abs() < 1e-9);
        assert_eq!(bin_counts(&[1.0, 2.0], &[0.5, 1.0, 1.5, 2.0, 9.0, f64::NAN]), [1, 2, 2]);
        // SciPy's kstwo asymptotics: D = 0.1 between 1000 and 1000 values gives p near 6e-5.
        let p = ks_p_value(0.1, 1000, 1000);
        assert!(p > 1e-5 && p < 1e-4, "{p}");
        assert_eq!(ks_p_value(0.0, 1000, 1000), 1.0);
    }
}
