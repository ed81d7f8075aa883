//! The `sluice` binary as a user runs it: `sql` and `demo` on the embedded cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type};
use common::{Child, free_port, registered_executors};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn sluice() -> Command {
    common::sluice_cmd()
}

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("udfs/tests/fixtures").join(name).to_string_lossy().into_owned()
}

fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
}

#[test]
fn demo_writes_one_prediction_per_test_row() {
    let out = tempfile::tempdir().unwrap();
    let result = sluice().args(["demo", "--rows", "4000", "--out"]).arg(out.path()).output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for stage in ["land raw", "features + split", "train", "score test", "evaluate"] {
        assert!(stdout.contains(stage), "summary lacks stage {stage}:\n{stdout}");
    }
    // The model learned something: the test split's AUC, as the demo prints it.
    let auc: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test         AUC "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no test AUC in the summary:\n{stdout}"));
    assert!(auc >= 0.75, "test AUC {auc} < 0.75:\n{stdout}");

    // Read the predictions back with the parquet crate's own reader.
    let mut rows = 0;
    let mut ids = std::collections::HashSet::new();
    for file in parquet_files(&out.path().join("predictions")) {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let schema = batch.schema();
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            assert_eq!(names, ["account_id", "score", "model_id"]);
            assert_eq!(schema.field(1).data_type(), &DataType::Float32);
            let scores = batch.column(1).as_primitive::<Float32Type>();
            assert_eq!(scores.null_count(), 0);
            assert!(scores.values().iter().all(|s| (0.0..=1.0).contains(s)), "a score outside [0, 1]");
            let model_ids = arrow::compute::cast(batch.column(2), &DataType::Utf8).unwrap();
            assert!(model_ids.as_string::<i32>().iter().all(|m| m.is_some_and(|m| m.starts_with("churn_mlp@"))));
            let id_col = batch.column(0).as_primitive::<arrow::datatypes::Int64Type>();
            ids.extend(id_col.values().iter().copied());
            rows += batch.num_rows();
        }
    }
    assert_eq!(rows, ids.len(), "an account was scored twice");

    // Exactly the test split: recount it from the features the demo wrote.
    let mut test_rows = 0;
    for file in parquet_files(&out.path().join("lake/curated/features")) {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let split = arrow::compute::cast(batch.column_by_name("split").unwrap(), &DataType::Utf8).unwrap();
            test_rows += split.as_string::<i32>().iter().filter(|s| *s == Some("test")).count();
        }
    }
    assert!(test_rows > 400, "test split of 4000 accounts should be ~600 rows, is {test_rows}");
    assert_eq!(rows, test_rows);
    assert!(stdout.contains(&format!("({rows} rows, one per test-split account)")), "{stdout}");
}

#[test]
fn sql_prints_a_table_with_predict() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("x.csv");
    let header = (1..=16).map(|c| format!("f{c}")).collect::<Vec<_>>().join(",");
    let row = (1..=16).map(|_| "0.25").collect::<Vec<_>>().join(",");
    std::fs::write(&csv, format!("{header}\n{row}\n{row}\n")).unwrap();
    let cols = (1..=16).map(|c| format!("f{c}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT COUNT(*) AS n, MIN(predict('{}', {cols})) AS lo, MAX(predict('{}', {cols})) AS hi FROM '{}'",
        fixture("scorer_16.pt"),
        fixture("scorer_16.pt"),
        csv.display()
    );
    let result = sluice().args(["sql", &sql]).output().unwrap();
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("| n "), "{stdout}");
    let line = stdout.lines().find(|l| l.starts_with("| 2 ")).unwrap_or_else(|| panic!("no row with n = 2:\n{stdout}"));
    let cells: Vec<&str> = line.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells[1], cells[2], "identical rows score the same: {line}");
    let score: f32 = cells[1].parse().unwrap();
    assert!((0.0..=1.0).contains(&score), "{line}");
}

#[test]
fn bad_sql_fails_with_a_message_and_exit_code() {
    let result = sluice().args(["sql", "SELECT predict('/nope/model.pt', 1.0)"]).output().unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("cannot read model '/nope/model.pt'"), "{stderr}");

    let result = sluice().args(["sql", "SELECT 1", "--cluster", "df://nohost"]).output().unwrap();
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("expected df://HOST:PORT"));
}

fn spawn(args: &[&str], log: PathBuf, filter: &str, workspace: &Path) -> Child {
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .env("SLUICE_LOG", filter)
        .env("SLUICE_WORKSPACE", workspace)
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .spawn()
        .unwrap();
    Child(child)
}

/// Starts Azurite if needed, creates a container unique to this process, and writes a workspace
/// file in `dir` with one emulator datastore `lake` at `az://CONTAINER/PREFIX`.
fn azurite_workspace(dir: &Path, name: &str, prefix: &str) -> (String, PathBuf) {
    let container = format!("{name}{}", std::process::id());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/azurite.sh");
    assert!(Command::new("bash").arg(script).args(["container", &container]).status().unwrap().success());
    let ws = dir.join("sluice.toml");
    std::fs::write(&ws, format!("[datastores.lake]\nurl = \"az://{container}/{prefix}\"\nemulator = true\n")).unwrap();
    (container, ws)
}

#[test]
fn separate_processes_share_datastores_and_score_with_predict() {
    let dir = tempfile::tempdir().unwrap();
    // Every process gets the same workspace: one datastore on the Azurite emulator.
    let (container, ws) = azurite_workspace(dir.path(), "cli", "data");
    let port = free_port();
    let p = port.to_string();
    let scheduler_addr = format!("127.0.0.1:{port}");
    let _scheduler = spawn(&["scheduler", "--port", &p], dir.path().join("scheduler.log"), "info", &ws);
    let executors: Vec<Child> = ["exec-a", "exec-b"]
        .iter()
        .map(|id| {
            spawn(
                &[
                    "executor",
                    "--scheduler",
                    &scheduler_addr,
                    "--id",
                    id,
                    "--flight-port",
                    "0",
                    "--grpc-port",
                    "0",
                    "--vcores",
                    "1",
                ],
                dir.path().join(format!("{id}.log")),
                "info,sluice_udfs=debug",
                &ws,
            )
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while registered_executors(port) < 2 {
        assert!(std::time::Instant::now() < deadline, "executors did not register within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let csv = dir.path().join("x.csv");
    let header = (1..=16).map(|c| format!("f{c}")).collect::<Vec<_>>().join(",");
    let body: String = (0..200)
        .map(|i| (1..=16).map(|c| format!("{}", ((i * c) % 7) as f32 / 7.0)).collect::<Vec<_>>().join(",") + "\n")
        .collect();
    std::fs::write(&csv, format!("{header}\n{body}")).unwrap();
    let cluster = format!("df://{scheduler_addr}");
    let run =
        |sql: &str| sluice().env("SLUICE_WORKSPACE", &ws).args(["sql", "--cluster", &cluster, sql]).output().unwrap();
    // The executors write the data to Blob storage...
    let copied =
        run(&format!("COPY (SELECT * FROM '{}') TO 'az://{container}/data/x/' STORED AS PARQUET", csv.display()));
    assert!(copied.status.success(), "COPY failed: {}", String::from_utf8_lossy(&copied.stderr));
    // ...and read it back from there to score it.
    let cols = (1..=16).map(|c| format!("f{c}")).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT COUNT(*) AS n, SUM(CASE WHEN s BETWEEN 0 AND 1 THEN 1 ELSE 0 END) AS ok FROM (SELECT predict('{}', {cols}) AS s FROM 'az://{container}/data/x/')",
        fixture("scorer_16.pt"),
    );
    let result = run(&sql);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "stdout:\n{stdout}\nstderr:\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("| 200 | 200 ")), "{stdout}");

    // The rows were scored inside the executor processes: their own predict logged the batches.
    drop(executors);
    let scored_in = |id: &str| {
        std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap().contains("predict scored a batch")
    };
    assert!(scored_in("exec-a") || scored_in("exec-b"), "no executor logged a predict batch");
}

#[test]
fn demo_runs_with_its_lake_on_azurite_and_reruns_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (container, ws) = azurite_workspace(dir.path(), "demo", "demo");
    let lake = format!("az://{container}/demo");
    let count = |sql: &str| -> String {
        let out = sluice().env("SLUICE_WORKSPACE", &ws).args(["sql", sql]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        stdout
            .lines()
            .find(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit()))
            .unwrap()
            .to_string()
    };
    // Twice: a re-run replaces the lake's data instead of adding to it.
    for _ in 0..2 {
        let out = sluice()
            .env("SLUICE_WORKSPACE", &ws)
            .args(["demo", "--rows", "3000", "--lake", &lake, "--out"])
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("predictions  {lake}/predictions/")), "{stdout}");
    }
    assert_eq!(
        count(&format!("SELECT COUNT(*) FROM '{lake}/raw/accounts/'")).split('|').nth(1).unwrap().trim(),
        "3000"
    );
    let tests = count(&format!("SELECT COUNT(*) FROM '{lake}/curated/features/' WHERE split = 'test'"));
    let scored = count(&format!(
        "SELECT COUNT(*), COUNT(DISTINCT account_id), SUM(CASE WHEN score BETWEEN 0 AND 1 THEN 1 ELSE 0 END) FROM '{lake}/predictions/'"
    ));
    let cells: Vec<&str> = scored.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
    let test_rows = tests.split('|').nth(1).unwrap().trim();
    assert_eq!(cells, [test_rows, test_rows, test_rows], "predictions vs test split");
}

#[test]
fn an_executor_without_a_scheduler_gives_up_with_a_message() {
    let port = free_port().to_string();
    let result = sluice()
        .args(["executor", "--scheduler", &format!("127.0.0.1:{port}"), "--flight-port", "0", "--grpc-port", "0"])
        .args(["--connect-timeout", "1"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains(&format!("cannot reach the scheduler at 127.0.0.1:{port} after 1 s")), "{stderr}");
}
