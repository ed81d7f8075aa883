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
