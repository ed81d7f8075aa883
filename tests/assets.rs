//! `sluice asset ...` as users run it, on a local lake and on Azurite: a writer killed mid-write
//! leaves no new version, concurrent writers both commit, and an independent Delta reader (the
//! Python `deltalake` package) reads the same rows Sluice wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn sluice(workspace: &Path) -> Command {
    let mut cmd = sluice_cmd();
    cmd.env("SLUICE_WORKSPACE", workspace);
    cmd
}

/// Workspace files for each backend: a local assets directory, and Azurite (started by
/// `scripts/azurite.sh` when needed) with a container unique to this test.
fn backends(dir: &Path, test: &str) -> Vec<(&'static str, PathBuf)> {
    let local = dir.join("local.toml");
    std::fs::write(&local, format!("[assets]\nlocation = \"{}\"\n", dir.join("assets").display())).unwrap();
    let container = format!("{test}{}", std::process::id());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/azurite.sh");
    assert!(Command::new("bash").arg(script).args(["container", &container]).status().unwrap().success());
    let azurite = dir.join("azurite.toml");
    std::fs::write(
        &azurite,
        format!(
            "[datastores.lake]\nurl = \"az://{container}/lake\"\nemulator = true\n\n[assets]\nlocation = \"lake\"\n"
        ),
    )
    .unwrap();
    vec![("local", local), ("azurite", azurite)]
}

fn count(ws: &Path, sql: &str) -> String {
    first_value(&ok(sluice(ws).args(["sql", sql]).output().unwrap(), sql))
}

/// Unreferenced files `vacuum --dry-run` reports for `asset`.
fn unreferenced(ws: &Path, asset: &str) -> usize {
    let out = ok(
        sluice(ws).args(["asset", "vacuum", asset, "--retain-hours", "0", "--dry-run"]).output().unwrap(),
        "vacuum --dry-run",
    );
    out.lines().filter(|l| l.starts_with("  ")).count()
}

#[test]
fn a_killed_writer_leaves_no_version_and_vacuum_removes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, ws) in backends(dir.path(), "kill") {
        let small = "SELECT value AS id FROM (SELECT unnest(range(1, 101)) AS value)";
        let out = ok(sluice(&ws).args(["asset", "write", "events", "--sql", small]).output().unwrap(), "first write");
        assert!(out.contains("events@0: 100 rows"), "{backend}: {out}");

        // A long write with small files, so some are complete in the store before it is killed.
        // (Ballista cannot ship DataFusion's generate_series table; a cross join of two lists is as long.)
        let big = "SELECT a * 100000 + b AS id, b * 2 AS twice, random() AS x \
                   FROM (SELECT unnest(range(0, 100000)) AS a) CROSS JOIN (SELECT unnest(range(0, 100000)) AS b)";
        let mut writer = sluice(&ws)
            .args(["asset", "write", "events", "--target-file-size", "256KB", "--sql", big])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while unreferenced(&ws, "events") < 2 {
            assert!(Instant::now() < deadline, "{backend}: the writer wrote no file in 120 s");
            assert!(writer.try_wait().unwrap().is_none(), "{backend}: the writer ended before it was killed");
            std::thread::sleep(Duration::from_millis(300));
        }
        writer.kill().unwrap(); // SIGKILL: no clean-up code runs
        writer.wait().unwrap();

        // Readers still see version 0 only.
        let show = ok(sluice(&ws).args(["asset", "show", "events"]).output().unwrap(), "show");
        assert!(show.contains("asset      events@0") && show.contains("rows       100"), "{backend}: {show}");
        assert_eq!(count(&ws, "SELECT COUNT(*) FROM events"), "100", "{backend}");
        // Vacuum deletes the orphans; the asset stays readable.
        assert!(unreferenced(&ws, "events") >= 2);
        let out =
            ok(sluice(&ws).args(["asset", "vacuum", "events", "--retain-hours", "0"]).output().unwrap(), "vacuum");
        assert!(out.contains("events: deleted"), "{backend}: {out}");
        assert_eq!(unreferenced(&ws, "events"), 0, "{backend}");
        assert_eq!(count(&ws, "SELECT COUNT(*) FROM events@0"), "100", "{backend}");
    }
}

#[test]
fn concurrent_writers_both_commit() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, ws) in backends(dir.path(), "race") {
        let writers: Vec<_> = (0..3)
            .map(|i| {
                let sql = format!("SELECT value + {} AS id FROM (SELECT unnest(range(1, 1001)) AS value)", i * 1000);
                sluice(&ws)
                    .args(["asset", "write", "shared", "--sql", &sql])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for w in writers {
            ok(w.wait_with_output().unwrap(), "a concurrent writer");
        }
        let versions = ok(sluice(&ws).args(["asset", "versions", "shared"]).output().unwrap(), "versions");
        let lines: Vec<_> = versions.lines().skip(1).collect();
        assert_eq!(lines.len(), 3, "{backend}: {versions}");
        assert_eq!(count(&ws, "SELECT COUNT(DISTINCT id) FROM shared"), "3000", "{backend}");
    }
}

#[test]
fn an_independent_delta_reader_reads_what_sluice_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let ws = &backends(dir.path(), "reader")[0].1;
    let v0 = "SELECT value AS id, CAST(value % 4 AS BIGINT) AS region, value * 0.5 AS amount FROM (SELECT unnest(range(1, 5001)) AS value)";
    ok(sluice(ws).args(["asset", "write", "sales", "--partition-by", "region", "--sql", v0]).output().unwrap(), "v0");
    let v1 = "SELECT value AS id, CAST(value % 4 AS BIGINT) AS region, value * 0.5 AS amount, value AS extra \
              FROM (SELECT unnest(range(5001, 6001)) AS value)";
    ok(sluice(ws).args(["asset", "write", "sales", "--partition-by", "region", "--sql", v1]).output().unwrap(), "v1");

    let reader = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/delta-reader.sh");
    let table = dir.path().join("assets/sales");
    let read = |version: &str| -> serde_json::Value {
        let out = Command::new("bash").arg(&reader).arg(&table).arg(version).output().unwrap();
        serde_json::from_str(&ok(out, "the deltalake reader")).unwrap()
    };
    let latest = read("1");
    assert_eq!(latest["rows"], 6000, "{latest}");
    assert_eq!(latest["sums"]["id"], (1..=6000).sum::<i64>(), "{latest}");
    assert_eq!(latest["sums"]["extra"], (5001..=6000).sum::<i64>(), "{latest}");
    assert_eq!(latest["sums"]["region"], (1..=6000).map(|v: i64| v % 4).sum::<i64>(), "{latest}");
    assert_eq!(latest["partition_columns"], serde_json::json!(["region"]));
    let first = read("0");
    assert_eq!(first["rows"], 5000, "{first}");
    assert_eq!(first["sums"]["amount"], (1..=5000).map(|v| v as f64 * 0.5).sum::<f64>(), "{first}");
    // Sluice reads the same.
    assert_eq!(count(ws, "SELECT SUM(id) FROM sales"), (1..=6000).sum::<i64>().to_string());
}

#[test]
fn existing_parquet_files_are_imported_byte_for_byte() {
    use std::sync::Arc;

    use arrow::array::{Float32Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false), Field::new("x", DataType::Float32, false)]));
    for f in 0..2 {
        let ids: Vec<i64> = (f * 500..(f + 1) * 500).collect();
        let xs: Vec<f32> = ids.iter().map(|i| *i as f32 / 2.0).collect();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(ids)), Arc::new(Float32Array::from(xs))]).unwrap();
        let file = std::fs::File::create(data.join(format!("part-{f}.parquet"))).unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    let lake = dir.path().join("lake");
    let out = ok(
        sluice_cmd().env("SLUICE_ASSETS", &lake).args(["asset", "import", "imported"]).arg(&data).output().unwrap(),
        "import",
    );
    assert!(out.contains("imported@0: 1000 rows in 2 files"), "{out}");
    let sum = ok(sluice_cmd().env("SLUICE_ASSETS", &lake).args(["sql", "SELECT SUM(x) FROM imported"]).output().unwrap(), "sum");
    assert!(sum.contains("249750"), "{sum}");
    // The asset's files are the files given.
    let copied: Vec<_> = std::fs::read_dir(lake.join("imported"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .flat_map(|run| std::fs::read_dir(run.path()).unwrap().flatten())
        .map(|f| std::fs::read(f.path()).unwrap())
        .collect();
    assert_eq!(copied.len(), 2);
    assert!(copied.contains(&std::fs::read(data.join("part-0.parquet")).unwrap()));
    let e = sluice_cmd().env("SLUICE_ASSETS", &lake).args(["asset", "import", "none"]).arg(dir.path().join("lake")).output().unwrap();
    assert!(String::from_utf8_lossy(&e.stderr).contains("holds no .parquet files"));
}

/// `--mode merge`: 2,000 rows, then 25 new keys and 40 changed ones land as 2,025 rows with the
/// new values in one version that rewrites only the files holding changed keys; a delete column
/// removes keys; two merges at once both land with no key twice; ambiguous new rows and a merge
/// without a key are refused. The independent reader reads the same rows.
#[test]
fn merges_replace_rows_by_key_and_append_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    for (backend, ws) in backends(dir.path(), "merge") {
        let range = |from: i64, to: i64, amount: &str, tag: &str| {
            format!("SELECT value AS id, {amount} AS amount, '{tag}' AS tag FROM (SELECT unnest(range({from}, {to})) AS value)")
        };
        let write = |sql: &str, extra: &[&str]| {
            let out = sluice(&ws).args(["asset", "write", "accounts", "--sql", sql]).args(extra).output().unwrap();
            ok(out, sql)
        };
        write(&range(1, 501, "value * 1.0", "v0"), &[]);
        for from in [501, 1001, 1501] {
            write(&range(from, from + 500, "value * 1.0", "v0"), &["--mode", "merge", "--key", "id"]);
        }
        let versions = ok(sluice(&ws).args(["asset", "versions", "accounts"]).output().unwrap(), "versions");
        assert_eq!(versions.lines().skip(1).count(), 4, "{backend}: {versions}");
        let changes = format!("{} UNION ALL {}", range(1, 41, "value * 2.0", "v1"), range(2001, 2026, "value * 1.0", "v1"));
        let out = write(&changes, &["--mode", "merge", "--key", "id"]);
        assert!(out.contains("merged       65 new rows: 25 inserted, 40 updated, 0 deleted"), "{backend}: {out}");
        let rewritten: u64 = out.split("deleted; ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        assert!(rewritten < 1000, "{backend}: only files holding changed keys are rewritten: {out}");
        assert_eq!(count(&ws, "SELECT COUNT(*) || '/' || COUNT(DISTINCT id) FROM accounts"), "2025/2025", "{backend}");
        let amount = (1..=2025).sum::<i64>() + (1..=40).sum::<i64>();
        assert_eq!(count(&ws, "SELECT CAST(SUM(amount) AS BIGINT) FROM accounts"), amount.to_string(), "{backend}");
        assert_eq!(count(&ws, "SELECT COUNT(*) FROM accounts WHERE tag = 'v1'"), "65", "{backend}");
        assert_eq!(count(&ws, "SELECT COUNT(*) FROM accounts@3"), "2000", "{backend}: the earlier version stays");
        if backend == "local" {
            let reader = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/delta-reader.sh");
            let out = Command::new("bash").arg(&reader).arg(dir.path().join("assets/accounts")).arg("4").output().unwrap();
            let read: serde_json::Value = serde_json::from_str(&ok(out, "the deltalake reader")).unwrap();
            assert_eq!(read["rows"], 2025, "{read}");
            assert_eq!(read["sums"]["id"], (1..=2025).sum::<i64>(), "{read}");
            assert_eq!(read["sums"]["amount"], amount as f64, "{read}");
        }

        // A delete column: even keys of 2001..2010 go, odd ones are updated.
        let deletes = "SELECT value AS id, 0.0 AS amount, 'v2' AS tag, value % 2 = 0 AS gone \
                       FROM (SELECT unnest(range(2001, 2011)) AS value)";
        let out = write(deletes, &["--mode", "merge", "--key", "id", "--delete-column", "gone"]);
        assert!(out.contains("10 new rows: 0 inserted, 5 updated, 5 deleted"), "{backend}: {out}");
        assert_eq!(count(&ws, "SELECT COUNT(*) || '/' || COUNT(DISTINCT id) FROM accounts"), "2020/2020", "{backend}");
        let row = ok(sluice(&ws).args(["sql", "SELECT * FROM accounts LIMIT 1"]).output().unwrap(), "a row");
        assert!(row.contains("tag") && !row.contains("gone"), "the delete column is not stored: {row}");

        // Two merges at once, with overlapping keys: both commit, no key twice.
        let writers: Vec<_> = [range(1, 101, "-1.0", "a"), range(51, 151, "-2.0", "b")]
            .iter()
            .map(|sql| {
                sluice(&ws)
                    .args(["asset", "write", "accounts", "--mode", "merge", "--key", "id", "--sql", sql])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for w in writers {
            ok(w.wait_with_output().unwrap(), "a concurrent merge");
        }
        assert_eq!(count(&ws, "SELECT COUNT(*) || '/' || COUNT(DISTINCT id) FROM accounts"), "2020/2020", "{backend}");
        assert_eq!(count(&ws, "SELECT COUNT(*) FROM accounts WHERE tag IN ('a', 'b')"), "150", "{backend}");
        assert_eq!(count(&ws, "SELECT COUNT(*) FROM accounts WHERE id <= 50 AND tag = 'a'"), "50", "{backend}");
        assert_eq!(count(&ws, "SELECT COUNT(*) FROM accounts WHERE id > 100 AND id <= 150 AND tag = 'b'"), "50", "{backend}");

        // Refused, with nothing committed.
        let twice = format!("{} UNION ALL {}", range(7, 9, "1.0", "x"), range(8, 9, "2.0", "x"));
        let out = sluice(&ws).args(["asset", "write", "accounts", "--mode", "merge", "--key", "id", "--sql", &twice]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("more than once ((8) x2)"), "{backend}: {stderr}");
        let out = sluice(&ws).args(["asset", "write", "accounts", "--mode", "merge", "--sql", &twice]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains("needs key"), "{backend}: {stderr}");
        assert_eq!(count(&ws, "SELECT COUNT(*) FROM accounts WHERE tag = 'x'"), "0", "{backend}");
    }
}
