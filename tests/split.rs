//! `sluice split`: the same rows land in the same split whatever the executor count, the file
//! layout or the run; rows added later do not move the others; group and time splits do not
//! leak; stratified proportions hold within one row per stratum; bad input is refused clearly.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::Path;

use common::*;

/// Every cell of the rows `sluice sql` printed, row by row.
fn rows(assets: &Path, sql: &str) -> Vec<Vec<String>> {
    let out = ok(sluice_at(assets).args(["sql", sql]).output().unwrap(), sql);
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with('|')).collect();
    lines
        .iter()
        .skip(1) // the header
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect())
        .collect()
}

fn value(assets: &Path, sql: &str) -> String {
    rows(assets, sql).first().and_then(|r| r.first().cloned()).unwrap_or_default()
}

/// Accounts `from..to`: key, customer (about 20 accounts each), a 10% label, an event time not in
/// key order, and a bucket to spread files by.
fn accounts_sql(from: u64, to: u64) -> String {
    format!(
        "SELECT value AS account_id, value % 997 AS customer_id, (value * 7919) % 10 = 0 AS churned, \
         to_timestamp_seconds(1767225600 + ((value * 7907) % 25000) * 60) AS ts, value % 16 AS bucket \
         FROM (SELECT unnest(range({from}, {to})) AS value)"
    )
}

fn write(assets: &Path, name: &str, sql: &str, extra: &[&str]) -> String {
    ok(sluice_at(assets).args(["asset", "write", name, "--sql", sql]).args(extra).output().unwrap(), name)
}

fn split(assets: &Path, args: &[&str]) -> String {
    ok(sluice_at(assets).arg("split").args(args).output().unwrap(), &args.join(" "))
}

fn split_error(assets: &Path, args: &[&str]) -> String {
    let out = sluice_at(assets).arg("split").args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn splits_are_reproducible_leak_free_and_stratified() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path();
    // A LIMIT makes the query one partition: one file, or one per bucket.
    let single = format!("{} LIMIT 1000000", accounts_sql(0, 20_000));
    let one = write(lake, "one", &single, &["--target-file-size", "1GB"]);
    assert!(one.contains("in 1 files"), "{one}");
    let sixteen = write(lake, "sixteen", &single, &["--partition-by", "bucket", "--target-file-size", "1GB"]);
    assert!(sixteen.contains("in 16 files"), "{sixteen}");

    // Random by key: 1 file on 1 executor, 16 files on 2 executors, and a re-run, row by row.
    let first = split(lake, &["one", "--key", "account_id", "--seed", "7", "--output", "a1", "--executors", "1"]);
    assert!(first.contains("split        one@0 (random by account_id, seed 7, 0.7/0.15/0.15)"), "{first}");
    assert!(first.contains("overlap      0 "), "{first}");
    split(lake, &["sixteen", "--key", "account_id", "--seed", "7", "--output", "a16", "--executors", "2"]);
    split(lake, &["one", "--key", "account_id", "--seed", "7", "--output", "a1"]);
    let same = |a: &str, b: &str| {
        value(
            lake,
            &format!(
                "SELECT COUNT(*) FROM \"{a}\" x JOIN \"{b}\" y ON x.account_id = y.account_id AND x.split = y.split"
            ),
        )
    };
    assert_eq!(same("a1@0", "a16"), "20000", "1 file on 1 executor = 16 files on 2 executors");
    assert_eq!(same("a1@0", "a1@1"), "20000", "a re-run gives the same split");
    let shares = rows(lake, "SELECT split, COUNT(*) FROM a1 GROUP BY split ORDER BY split");
    let n = |s: &str| shares.iter().find(|r| r[0] == s).map(|r| r[1].parse::<f64>().unwrap()).unwrap();
    assert!((n("train") / 20_000.0 - 0.7).abs() < 0.02, "{shares:?}");
    assert!((n("validate") / 20_000.0 - 0.15).abs() < 0.02, "{shares:?}");
    // Another seed is another split.
    split(lake, &["one", "--key", "account_id", "--seed", "8", "--output", "b1"]);
    assert_ne!(same("a1@0", "b1"), "20000");

    // Rows added later do not move the others.
    write(lake, "one", &accounts_sql(20_000, 25_000), &["--mode", "append"]);
    split(lake, &["one", "--key", "account_id", "--seed", "7", "--output", "a1"]);
    assert_eq!(value(lake, "SELECT COUNT(*) FROM a1"), "25000");
    assert_eq!(same("a1@0", "a1"), "20000", "the first 20000 rows kept their split");
    let versions = ok(sluice_at(lake).args(["asset", "versions", "a1"]).output().unwrap(), "versions");
    assert!(versions.contains("one@1"), "the input version is in the lineage: {versions}");

    // Group: every customer's accounts in one split.
    let grouped = split(lake, &["one", "--method", "group", "--group", "customer_id", "--output", "g"]);
    assert!(grouped.contains("overlap      0 (customer_id"), "{grouped}");
    let leaks = "SELECT COUNT(*) FROM (SELECT customer_id FROM g GROUP BY customer_id HAVING COUNT(DISTINCT split) > 1)";
    assert_eq!(value(lake, leaks), "0");
    assert_eq!(value(lake, "SELECT COUNT(DISTINCT split) FROM g"), "3");

    // Time: train before validate before test, cut at the ratios' quantiles.
    let timed = split(lake, &["one", "--method", "time", "--time", "ts", "--output", "t"]);
    assert!(timed.contains("cuts         validate from 2026-"), "{timed}");
    let order = rows(
        lake,
        "SELECT MAX(CASE WHEN split = 'train' THEN ts END) < MIN(CASE WHEN split = 'validate' THEN ts END), \
         MAX(CASE WHEN split = 'validate' THEN ts END) < MIN(CASE WHEN split = 'test' THEN ts END), \
         COUNT(*) FILTER (WHERE split = 'train') FROM t",
    );
    assert_eq!(order[0][..2], ["true", "true"], "{order:?}");
    let train: f64 = order[0][2].parse().unwrap();
    assert!((train / 25_000.0 - 0.7).abs() < 0.01, "{order:?}");

    // Stratified: within one row of the target in each label value.
    let strat = split(lake, &["one", "--method", "stratified", "--key", "account_id", "--label", "churned", "--output", "st"]);
    assert!(strat.contains("(false: ") && strat.contains("true: "), "{strat}");
    let per = rows(lake, "SELECT CAST(churned AS VARCHAR), split, COUNT(*) FROM st GROUP BY 1, 2");
    for label in ["true", "false"] {
        let count = |s: &str| -> f64 {
            per.iter().find(|r| r[0] == label && r[1] == s).map_or(0.0, |r| r[2].parse().unwrap())
        };
        let total = count("train") + count("validate") + count("test");
        assert!(total > 1000.0, "{per:?}");
        assert!((count("train") - total * 0.7).abs() <= 1.0, "{label}: {per:?}");
        assert!((count("validate") - total * 0.15).abs() <= 1.0, "{label}: {per:?}");
        assert!((count("test") - total * 0.15).abs() <= 1.0, "{label}: {per:?}");
    }

    // Three assets instead of a column: the same rows as the column layout.
    split(lake, &["one", "--key", "account_id", "--seed", "7", "--output", "parts", "--layout", "assets"]);
    for part in ["train", "validate", "test"] {
        let sql = format!(
            "SELECT COUNT(*) FROM parts_{part} p JOIN a1 ON p.account_id = a1.account_id AND a1.split = '{part}'"
        );
        assert_eq!(value(lake, &sql), value(lake, &format!("SELECT COUNT(*) FROM a1 WHERE split = '{part}'")));
    }

    // Bad input.
    write(lake, "nulls", "SELECT value AS id, CASE WHEN value % 50 = 0 THEN NULL ELSE value % 2 END AS label \
         FROM (SELECT unnest(range(0, 1000)) AS value)", &[]);
    let e = split_error(lake, &["nulls", "--method", "stratified", "--key", "id", "--label", "label"]);
    assert!(e.contains("column 'label' is NULL in 20 of 1000 rows of nulls@0"), "{e}");
    let e = split_error(lake, &["one", "--key", "account_id", "--ratios", "0.7,0.2,0.2"]);
    assert!(e.contains("sum to") && e.contains("must sum to 1"), "{e}");
    let e = split_error(lake, &["one", "--key", "acount_id"]);
    assert!(e.contains("one@1 has no column 'acount_id'; its columns are account_id, customer_id"), "{e}");
    write(lake, "empty", "SELECT value AS id FROM (SELECT unnest(range(0, 10)) AS value) WHERE value > 100", &[]);
    let e = split_error(lake, &["empty", "--key", "id"]);
    assert!(e.contains("empty@0 has no rows"), "{e}");
    let e = split_error(lake, &["one", "--method", "stratified", "--key", "account_id"]);
    assert!(e.contains("needs --label"), "{e}");
}
