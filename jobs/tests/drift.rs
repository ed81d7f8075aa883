//! The drift metrics against an independent implementation (SciPy and NumPy, installed by
//! `scripts/drift-reference.sh`) on fixed data: a numeric column whose mean moved by a third of
//! a standard deviation and whose spread grew, and a categorical column whose mix changed and
//! gained a category the reference never saw. Each metric agrees within 1e-3.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;
use std::process::Command;

use sluice_jobs::monitor::drift;

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
    let edges = drift::reference_edges(&reference, 10);
    let (ref_counts, cur_counts) = (drift::bin_counts(&edges, &reference), drift::bin_counts(&edges, &current));
    let (cat_reference, cat_current): (Vec<u64>, Vec<u64>) = (vec![500, 300, 150, 50, 0], vec![300, 320, 200, 150, 30]);

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.json");
    let data = serde_json::json!({
        "reference": reference, "current": current, "edges": edges,
        "cat_reference": cat_reference, "cat_current": cat_current,
    });
    std::fs::write(&input, data.to_string()).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/drift-reference.sh");
    let out = Command::new("bash").arg(script).arg(&input).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let scipy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    // Same bins, same counts.
    assert_eq!(serde_json::json!(ref_counts), scipy["ref_counts"]);
    assert_eq!(serde_json::json!(cur_counts), scipy["cur_counts"]);
    close("psi", drift::psi(&ref_counts, &cur_counts), &scipy["psi"]);
    close("js", drift::js_distance(&ref_counts, &cur_counts), &scipy["js"]);
    let (mut r, mut c) = (reference.clone(), current.clone());
    r.sort_by(f64::total_cmp);
    c.sort_by(f64::total_cmp);
    close("ks", drift::ks_statistic(&r, &c), &scipy["ks"]);
    close("wasserstein", drift::wasserstein(&r, &c), &scipy["wasserstein"]);
    close("normalized_wasserstein", drift::normalized_wasserstein(&r, &c), &scipy["normalized_wasserstein"]);
    close("categorical js", drift::js_distance(&cat_reference, &cat_current), &scipy["cat_js"]);
    close("categorical psi", drift::psi(&cat_reference, &cat_current), &scipy["cat_psi"]);
    let (statistic, p) = drift::chi_squared(&cat_reference, &cat_current);
    assert!((statistic / scipy["chi2"].as_f64().unwrap() - 1.0).abs() < 1e-9, "chi2 {statistic} vs {}", scipy["chi2"]);
    close("chi2 p-value", p, &scipy["chi2_p"]);

    // The shift is visible, and no metric calls the reference drifted from itself.
    assert!(drift::psi(&ref_counts, &cur_counts) > 0.1 && drift::ks_statistic(&r, &c) > 0.1);
    assert!(drift::psi(&ref_counts, &ref_counts) < 1e-12 && drift::ks_statistic(&r, &r) == 0.0);
}
