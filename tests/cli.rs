//! The `sluice` binary as a user runs it: `sql` and `demo` on the embedded cluster.

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float32Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn sluice() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
    cmd.env("SLUICE_LOG", "warn");
    cmd
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
    assert!(stdout.contains("test         AUC"), "{stdout}");

    // Read the predictions back with the parquet crate's own reader.
    let mut rows = 0;
    let mut ids = std::collections::HashSet::new();
    for file in parquet_files(&out.path().join("predictions")) {
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
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
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&file).unwrap()).unwrap().build().unwrap();
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
