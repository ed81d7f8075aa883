//! ONNX models through the product: registered with their own output names, scored by alias with
//! `sluice score` on a cluster of scheduler and executor processes and with `predict` in `sluice
//! sql`, equal to Python onnxruntime (udfs/tests/fixtures/expected_onnx.json); drift measured in
//! the scoring pass; a missing runtime library is a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use common::*;

fn fixture(name: &str) -> PathBuf {
    root().join("udfs/tests/fixtures").join(name)
}

fn write_parquet(dir: &Path, columns: Vec<(&str, ArrayRef)>) {
    std::fs::create_dir_all(dir).unwrap();
    let schema = Arc::new(Schema::new(
        columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), false)).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    let file = std::fs::File::create(dir.join("part-0.parquet")).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Imports the fixture's inputs as asset `gbm_inputs(id, f1..f8)` and Python's outputs as
/// `gbm_expected(id, label, p0, p1, p2)`.
fn import_fixture(lake: &Path, dir: &Path) {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected_onnx.json")).unwrap()).unwrap();
    let case = &expected["gbm_classes_8x3"];
    let inputs: Vec<Vec<f32>> = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..inputs.len() as i64));
    let names: Vec<String> = (1..=8).map(|c| format!("f{c}")).collect();
    let mut columns = vec![("id", ids.clone())];
    for (c, name) in names.iter().enumerate() {
        columns.push((name.as_str(), Arc::new(Float32Array::from_iter_values(inputs.iter().map(|r| r[c]))) as ArrayRef));
    }
    write_parquet(&dir.join("inputs"), columns);
    let labels = case["outputs"]["label"].as_array().unwrap();
    let probabilities = case["outputs"]["probabilities"].as_array().unwrap();
    let p = |k: usize| -> ArrayRef {
        Arc::new(Float64Array::from_iter_values(probabilities.iter().map(|r| r[k].as_f64().unwrap())))
    };
    write_parquet(
        &dir.join("expected"),
        vec![
            ("id", ids),
            ("label", Arc::new(Int64Array::from_iter_values(labels.iter().map(|v| v.as_i64().unwrap()))) as ArrayRef),
            ("p0", p(0)),
            ("p1", p(1)),
            ("p2", p(2)),
        ],
    );
    run_at(lake, &["asset", "import", "gbm_inputs", dir.join("inputs").to_str().unwrap()]);
    run_at(lake, &["asset", "import", "gbm_expected", dir.join("expected").to_str().unwrap()]);
}

fn value(lake: &Path, sql: &str) -> String {
    first_value(&run_at(lake, &["sql", sql]))
}

#[test]
fn a_registered_onnx_classifier_scores_on_the_cluster_and_in_sql_like_python_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    import_fixture(&lake, dir.path());
    let features = "f1, f2, f3, f4, f5, f6, f7, f8";

    // Registered under its own output names, stored with its format.
    let model = fixture("gbm_classes_8x3.onnx");
    let out = run_at(&lake, &["model", "register", "gbm", model.to_str().unwrap(), "--inputs", features, "--alias", "production"]);
    assert!(out.contains("registered   gbm@1 (@production)") && out.contains(", onnx, 8 inputs"), "{out}");
    assert!(out.contains("-> label, probabilities_0, probabilities_1, probabilities_2"), "{out}");
    let shown = run_at(&lake, &["model", "show", "gbm@production"]);
    assert!(shown.contains("onnx"), "{shown}");
    let refused = sluice_at(&lake)
        .args(["model", "register", "gbm", model.to_str().unwrap(), "--inputs", features, "--format", "torchscript"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("the file's format is onnx"), "{stderr}");

    // A scheduler and two executors of their own.
    let port = free_port();
    let spawn = |args: &[&str], name: &str| {
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).unwrap();
        Child(
            sluice_at(&lake)
                .args(args)
                .env("SLUICE_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    };
    let _scheduler = spawn(&["scheduler", "--port", &port.to_string()], "scheduler");
    let scheduler = format!("127.0.0.1:{port}");
    let _executors: Vec<_> = ["ex1", "ex2"]
        .iter()
        .map(|id| {
            let args = ["executor", "--scheduler", &scheduler, "--id", id, "--flight-port", "0", "--grpc-port", "0", "--vcores", "1"];
            spawn(&args, id)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while registered_executors(port) < 2 {
        assert!(Instant::now() < deadline, "executors did not register within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let cluster = format!("df://127.0.0.1:{port}");

    // `sluice score` by alias: each output a named column, equal to Python onnxruntime.
    let out = run_at(
        &lake,
        &[
            "score", "gbm_inputs", "--model", "gbm@production", "--key", "id", "--output", "gbm_scores", "--chunks", "2",
            "--cluster", &cluster, "--reference", "gbm_inputs",
        ],
    );
    assert!(out.contains("predictions  gbm_scores@0: 1000 rows"), "{out}");
    assert!(out.contains("drifted      none"), "{out}");
    let wrong = "SELECT COUNT(*) FROM gbm_scores s JOIN gbm_expected e ON s.id = e.id \
                 WHERE s.label <> e.label OR abs(s.probabilities_0 - e.p0) > 1e-5 \
                 OR abs(s.probabilities_1 - e.p1) > 1e-5 OR abs(s.probabilities_2 - e.p2) > 1e-5";
    assert_eq!(value(&lake, wrong), "0");
    assert_eq!(value(&lake, "SELECT COUNT(DISTINCT id) FROM gbm_scores WHERE model = 'gbm' AND model_version = 1"), "1000");
    let logs: String =
        ["ex1", "ex2"].iter().map(|id| std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap()).collect();
    assert!(logs.contains("loaded ONNX Runtime") && logs.contains("format=\"onnx\""), "{logs}");

    // Inputs moved: drift in the scoring pass names the feature.
    let moved = "SELECT id, f1 + 3 AS f1, f2, f3, f4, f5, f6, f7, f8 FROM gbm_inputs";
    run_at(&lake, &["asset", "write", "gbm_moved", "--sql", moved]);
    let out = run_at(
        &lake,
        &["score", "gbm_moved", "--model", "gbm@production", "--key", "id", "--output", "gbm_moved_scores", "--reference", "gbm_inputs"],
    );
    let drifted = out.lines().find_map(|l| l.strip_prefix("drifted      ")).unwrap_or_default();
    assert!(drifted.split(", ").any(|c| c == "f1"), "{out}");

    // `predict` in SQL on the cluster, by alias: the same probabilities.
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT id, predict('gbm@production', {features}) AS p FROM gbm_inputs) s \
         JOIN gbm_expected e ON s.id = e.id WHERE abs(p[3] - e.p1) > 1e-5 OR p[1] <> e.label"
    );
    let table = ok(sluice_at(&lake).args(["sql", &sql, "--cluster", &cluster]).output().unwrap(), "sql predict");
    assert_eq!(first_value(&table), "0", "{table}");
}

#[test]
fn a_missing_onnx_runtime_library_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let sql = format!(
        "SELECT predict('{}', 1.0, 2.0, 3.0) AS p",
        fixture("named_3.onnx").display()
    );
    let out = sluice_at(&lake).args(["sql", &sql]).env("SLUICE_ONNXRUNTIME", "/no/such/libonnxruntime.so").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("the ONNX Runtime library /no/such/libonnxruntime.so does not exist"), "{stderr}");
    assert!(stderr.contains("scripts/setup.sh") && stderr.contains("SLUICE_ONNXRUNTIME"), "{stderr}");
    // TorchScript models do not need it.
    let model = dir.path().join("linear.pt");
    linear_model(&model);
    let sql = format!("SELECT predict('{}', 1.0, 2.0, 3.0) AS p", model.display());
    ok(sluice_at(&lake).args(["sql", &sql]).env("SLUICE_ONNXRUNTIME", "/no/such/libonnxruntime.so").output().unwrap(), "torch");
}
