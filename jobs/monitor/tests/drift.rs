//! The drift metrics production computes, against an independent implementation (SciPy and
//! NumPy, installed by `scripts/drift-reference.sh`) on fixed data: a numeric column whose mean
//! moved by a third of a standard deviation and whose spread grew, sketched as the scoring pass
//! and the profiles sketch it (1,000 bins over the reference's range) and compared by
//! `compare_profiles`, against SciPy on the raw values; and a categorical column whose mix
//! changed and gained a category the reference never saw. The binned metrics agree within 1e-3;
//! KS and Wasserstein read off the sketch within the error the binning allows, stated below.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;
use std::process::Command;

use arrow::array::Float64Array;
use sluice_engine::profile::{Binning, ColumnProfile, ColumnSpec, Profile};
use sluice_monitor::compare::{Thresholds, compare_profiles};
use sluice_monitor::drift;

/// Standard normal draws from a fixed seed (xorshift and Box-Muller): the same on every run.
fn normals(seed: u64, n: usize) -> Vec<f64> {
    let mut state = seed;
    let mut uniform = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (uniform(), uniform());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        })
        .collect()
}

fn close(name: &str, ours: f64, theirs: &serde_json::Value) {
    let theirs = theirs.as_f64().unwrap_or_else(|| panic!("{name}: SciPy gave {theirs}"));
    assert!((ours - theirs).abs() < 1e-3, "{name}: Sluice {ours}, SciPy {theirs}");
}

#[test]
fn metrics_equal_scipy_on_fixed_data() {
    let reference: Vec<f64> = normals(7, 4000).into_iter().map(|x| 50.0 + 10.0 * x).collect();
    let current: Vec<f64> = normals(11, 3000).into_iter().map(|x| 53.3 + 12.0 * x).collect();
    let (cat_reference, cat_current): (Vec<u64>, Vec<u64>) = (vec![500, 300, 150, 50, 0], vec![300, 320, 200, 150, 30]);

    // Sketched as production sketches: 1,000 bins over the reference's range (the current data
    // also falls outside it), then compared as `sluice monitor drift` and the scoring pass do.
    let bins = 1000;
    let lo = reference.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = reference.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let spec = ColumnSpec { name: "x".into(), binning: Binning::Numeric { lo, hi, bins } };
    let sketch = |values: &[f64]| {
        let mut column = ColumnProfile::new(&spec);
        column.add(&Float64Array::from(values.to_vec())).unwrap();
        let mut profile = Profile::new(std::slice::from_ref(&spec));
        profile.columns = vec![column];
        profile
    };
    let (r_sketch, c_sketch) = (sketch(&reference), sketch(&current));
    let report = compare_profiles(&r_sketch, &c_sketch, &Thresholds::default()).unwrap();
    let x = &report[0];
    // The coarse bins production groups the fine ones into: 10 equal bins of the range, values
    // outside it in the end bins.
    let edges: Vec<f64> = (1..10).map(|k| lo + (hi - lo) * f64::from(k) / 10.0).collect();

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let data = serde_json::json!({
        "reference": reference, "current": current, "edges": edges,
        "cat_reference": cat_reference, "cat_current": cat_current,
    });
    std::fs::write(&input, data.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/drift-reference.sh");
    let out = Command::new("bash").arg(script).arg(&input).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scipy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    close("psi", x.psi, &scipy["psi"]);
    close("js", x.js_distance, &scipy["js"]);
    // KS from the sketch is the largest CDF gap at the fine bins' edges: below the exact one by at
    // most the mass of one fine bin of either side.
    let bin_mass = |p: &Profile| {
        let c = &p.columns[0];
        c.bins.iter().copied().max().unwrap_or(0) as f64 / c.count as f64
    };
    let ks_error = bin_mass(&r_sketch) + bin_mass(&c_sketch);
    let (ks, ks_scipy) = (x.ks.unwrap(), scipy["ks"].as_f64().unwrap());
    assert!((ks - ks_scipy).abs() <= ks_error, "ks: sketch {ks}, SciPy {ks_scipy}, binning error up to {ks_error}");
    // The Wasserstein area: exact outside the range (counts and sums of the values there), by
    // trapezoids inside, so off by at most one fine bin's width; divided by the reference's sd.
    let width = (hi - lo) / bins as f64;
    let std = r_sketch.columns[0].std();
    let (w, w_scipy) = (x.normalized_wasserstein.unwrap(), scipy["normalized_wasserstein"].as_f64().unwrap());
    assert!((w - w_scipy).abs() <= width / std, "normalized Wasserstein: sketch {w}, SciPy {w_scipy}, binning error up to {}", width / std);
    eprintln!("ks {ks} (SciPy {ks_scipy}, bound {ks_error:.5}); normalized Wasserstein {w} (SciPy {w_scipy}, bound {:.5})", width / std);
    // Its p-value is the asymptotic one of the sketch's statistic.
    assert_eq!(x.ks_p, Some(drift::ks_p_value(ks, 4000, 3000)));

    close("categorical js", drift::js_distance(&cat_reference, &cat_current), &scipy["cat_js"]);
    close("categorical psi", drift::psi(&cat_reference, &cat_current), &scipy["cat_psi"]);
    let (statistic, p) = drift::chi_squared(&cat_reference, &cat_current);
    assert!((statistic / scipy["chi2"].as_f64().unwrap() - 1.0).abs() < 1e-9, "chi2 {statistic} vs {}", scipy["chi2"]);
    close("chi2 p-value", p, &scipy["chi2_p"]);

    // The shift is visible, and no metric calls the reference drifted from itself.
    assert!(x.psi > 0.1 && ks > 0.1 && x.drifted, "{x:?}");
    let same = &compare_profiles(&r_sketch, &r_sketch, &Thresholds::default()).unwrap()[0];
    assert!(same.psi < 1e-12 && same.ks == Some(0.0) && same.normalized_wasserstein == Some(0.0) && !same.drifted, "{same:?}");
}
