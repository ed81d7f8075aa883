//! `sluice monitor drift`: current data drawn like the reference drifts in no column; moving one
//! feature's mean by one standard deviation flags exactly that feature; a categorical column
//! whose mix changes is flagged by its Jensen-Shannon distance.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use common::*;

/// Rows `first..first+n` of a fixed pseudo-random data set (Weyl sequences): `a` and `b` are
/// bell-shaped (sums of three uniforms), `seg` one of four segments; `shift` moves `b` by one
/// standard deviation (0.5 for three uniforms on [0, 1)) and `mix` tilts the segments.
fn data(first: i64, n: i64, shift: bool, mix: bool) -> String {
    let u = |k: u64| format!("(CAST((value * {k}) % 1000003 AS DOUBLE) / 1000003.0)");
    let b_shift = if shift { " + 0.5" } else { "" };
    let seg = if mix { "CASE WHEN value % 10 < 7 THEN 's0' ELSE CONCAT('s', CAST(value % 4 AS VARCHAR)) END" } else { "CONCAT('s', CAST(value % 4 AS VARCHAR))" };
    format!(
        "SELECT value AS id, {} + {} + {} AS a, {} + {} + {}{b_shift} AS b, {seg} AS seg FROM (SELECT unnest(range({first}, {})) AS value)",
        u(7919), u(104_729), u(15_485_863), u(611_953), u(1_299_709), u(32_452_843), first + n
    )
}

fn drifted(report: &str) -> String {
    report.lines().find_map(|l| l.strip_prefix("drifted      ")).unwrap_or_else(|| panic!("no verdict:\n{report}")).to_string()
}

#[test]
fn one_moved_feature_is_flagged_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    run_at(&lake, &["asset", "write", "train", "--sql", &data(0, 20_000, false, false)]);
    run_at(&lake, &["asset", "write", "same", "--sql", &data(500_000, 5_000, false, false)]);
    run_at(&lake, &["asset", "write", "moved", "--sql", &data(500_000, 5_000, true, false)]);
    run_at(&lake, &["asset", "write", "mixed", "--sql", &data(500_000, 5_000, false, true)]);
    let drift = |current: &str| {
        run_at(&lake, &["monitor", "drift", "train", current, "--columns", "a,b", "--categorical", "seg", "--executors", "1"])
    };

    let same = drift("same");
    assert_eq!(drifted(&same), "none", "{same}");
    assert!(same.lines().any(|l| l.starts_with("a ") && l.contains("20000/5000")), "{same}");

    let moved = drift("moved");
    assert_eq!(drifted(&moved), "b", "{moved}");
    // Kept as an asset: a row per column with the pinned versions compared.
    let saved = run_at(&lake, &["monitor", "drift", "train", "moved", "--columns", "a,b", "--categorical", "seg", "--executors", "1", "--report", "drift_reports"]);
    assert!(saved.contains("report       drift_reports@0: 3 rows"), "{saved}");
    let rows = run_at(&lake, &["sql", "SELECT \"column\", reference, current, drifted FROM drift_reports ORDER BY \"column\""]);
    for want in ["| a      | train@0   | moved@0 | false   |", "| b      | train@0   | moved@0 | true    |", "| seg    | train@0   | moved@0 | false   |"] {
        assert!(rows.contains(want), "missing {want} in\n{rows}");
    }
    // One standard deviation: the normalized Wasserstein distance is about 1.
    let b = moved.lines().find(|l| l.starts_with("b ")).unwrap();
    let wass: f64 = b.split_whitespace().nth(6).unwrap().parse().unwrap();
    assert!((wass - 1.0).abs() < 0.1, "{b}");

    let mixed = drift("mixed");
    assert_eq!(drifted(&mixed), "seg", "{mixed}");
}
