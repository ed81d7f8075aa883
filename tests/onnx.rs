//! ONNX models through the product: registered with their own output names, scored by alias with
//! `sluice score` on a cluster of scheduler and executor processes and with `predict` in `sluice
//! sql`, equal to Python onnxruntime (udfs/tests/fixtures/expected_onnx.json); drift measured in
//! the scoring pass; a missing runtime library is a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{Field, Schema};
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

/// Imports fixture `name`'s inputs as asset `NAME_inputs(id, f1..fk)` and Python's outputs, each
/// flattened into its values in the model's output order, as `NAME_expected(id, v1..vm)`.
/// Returns the feature list `f1, ..., fk` and m.
fn import_fixture(lake: &Path, dir: &Path, name: &str) -> (String, usize) {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected_onnx.json")).unwrap()).unwrap();
    let case = &expected[name];
    let inputs: Vec<Vec<f32>> = case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect())
        .collect();
    let outputs: Vec<Vec<f64>> = (0..inputs.len())
        .map(|r| {
            case["output_names"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|o| match &case["outputs"][o.as_str().unwrap()][r] {
                    serde_json::Value::Array(v) => v.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(),
                    x => vec![x.as_f64().unwrap()],
                })
                .collect()
        })
        .collect();
    let ids: ArrayRef = Arc::new(Int64Array::from_iter_values(0..inputs.len() as i64));
    let k = inputs[0].len();
    let m = outputs[0].len();
    let names: Vec<String> = (1..=k).map(|c| format!("f{c}")).collect();
    let mut columns = vec![("id", ids.clone())];
    for (c, name) in names.iter().enumerate() {
        columns.push((name.as_str(), Arc::new(Float32Array::from_iter_values(inputs.iter().map(|r| r[c]))) as ArrayRef));
    }
    let data = dir.join(name);
    write_parquet(&data.join("inputs"), columns);
    let values: Vec<String> = (1..=m).map(|v| format!("v{v}")).collect();
    let mut columns = vec![("id", ids)];
    for (v, value) in values.iter().enumerate() {
        columns.push((value.as_str(), Arc::new(Float64Array::from_iter_values(outputs.iter().map(|r| r[v]))) as ArrayRef));
    }
    write_parquet(&data.join("expected"), columns);
    run_at(lake, &["asset", "import", &format!("{name}_inputs"), data.join("inputs").to_str().unwrap()]);
    run_at(lake, &["asset", "import", &format!("{name}_expected"), data.join("expected").to_str().unwrap()]);
    (names.join(", "), m)
}

fn value(lake: &Path, sql: &str) -> String {
    first_value(&run_at(lake, &["sql", sql]))
}

/// SQL counting the rows of `scores` (a `prediction` per `id`) that differ from `NAME_expected`
/// by more than 1e-5 in any value, or are missing.
fn wrong_rows(scores: &str, name: &str, m: usize) -> String {
    let differs: Vec<String> = if m == 1 {
        vec!["abs(s.prediction - e.v1) > 1e-5".into()]
    } else {
        (1..=m).map(|v| format!("abs(s.prediction[{v}] - e.v{v}) > 1e-5")).collect()
    };
    format!(
        "SELECT COUNT(*) FROM {name}_expected e LEFT JOIN {scores} s ON s.id = e.id \
         WHERE s.id IS NULL OR {}",
        differs.join(" OR ")
    )
}

#[test]
fn registered_onnx_models_score_on_the_cluster_and_in_sql_like_python_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let (features, _) = import_fixture(&lake, dir.path(), "gbm_classes_8x3");

    // Registered under its own output names, stored with its format.
    let model = fixture("gbm_classes_8x3.onnx");
    let out = run_at(&lake, &["model", "register", "gbm", model.to_str().unwrap(), "--inputs", &features, "--alias", "production"]);
    assert!(out.contains("registered   gbm@1 (@production)") && out.contains(", onnx, 8 inputs"), "{out}");
    assert!(out.contains("-> label, probabilities_0, probabilities_1, probabilities_2"), "{out}");
    let shown = run_at(&lake, &["model", "show", "gbm@production"]);
    assert!(shown.contains("onnx"), "{shown}");
    let refused = sluice_at(&lake)
        .args(["model", "register", "gbm", model.to_str().unwrap(), "--inputs", &features, "--format", "torchscript"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && stderr.contains("the file's format is onnx"), "{stderr}");

    let cluster = spawn_cluster(|_| sluice_at(&lake), dir.path(), &["ex1", "ex2"]);

    // `sluice score` by alias: each output a named column, equal to Python onnxruntime.
    let out = run_at(
        &lake,
        &[
            "score", "gbm_classes_8x3_inputs", "--model", "gbm@production", "--key", "id", "--output", "gbm_scores",
            "--chunks", "2", "--cluster", &cluster.url, "--reference", "gbm_classes_8x3_inputs",
        ],
    );
    assert!(out.contains("predictions  gbm_scores@0: 1000 rows"), "{out}");
    assert!(out.contains("drifted      none"), "{out}");
    assert_eq!(value(&lake, &wrong_rows("gbm_scores", "gbm_classes_8x3", 4)), "0");
    let named = "SELECT COUNT(*) FROM gbm_scores WHERE label <> prediction[1] OR probabilities_0 <> prediction[2] \
                 OR probabilities_1 <> prediction[3] OR probabilities_2 <> prediction[4]";
    assert_eq!(value(&lake, named), "0");
    assert_eq!(value(&lake, "SELECT COUNT(DISTINCT id) FROM gbm_scores WHERE model = 'gbm' AND model_version = 1"), "1000");
    let logs: String =
        ["ex1", "ex2"].iter().map(|id| std::fs::read_to_string(dir.path().join(format!("{id}.log"))).unwrap()).collect();
    assert!(logs.contains("loaded ONNX Runtime") && logs.contains("format=\"onnx\""), "{logs}");

    // Inputs moved: drift in the scoring pass names the feature.
    let moved = "SELECT id, f1 + 3 AS f1, f2, f3, f4, f5, f6, f7, f8 FROM gbm_classes_8x3_inputs";
    run_at(&lake, &["asset", "write", "gbm_moved", "--sql", moved]);
    let out = run_at(
        &lake,
        &[
            "score", "gbm_moved", "--model", "gbm@production", "--key", "id", "--output", "gbm_moved_scores",
            "--reference", "gbm_classes_8x3_inputs",
        ],
    );
    let drifted = out.lines().find_map(|l| l.strip_prefix("drifted      ")).unwrap_or_default();
    assert!(drifted.split(", ").any(|c| c == "f1"), "{out}");

    // `predict` in SQL on the cluster, by alias: the same label and every probability.
    let sql = format!(
        "SELECT COUNT(*) FROM (SELECT id, predict('gbm@production', {features}) AS prediction FROM gbm_classes_8x3_inputs) s \
         RIGHT JOIN gbm_classes_8x3_expected e ON s.id = e.id WHERE s.id IS NULL OR s.prediction[1] <> e.v1 \
         OR abs(s.prediction[2] - e.v2) > 1e-5 OR abs(s.prediction[3] - e.v3) > 1e-5 OR abs(s.prediction[4] - e.v4) > 1e-5"
    );
    let table = ok(sluice_at(&lake).args(["sql", &sql, "--cluster", &cluster.url]).output().unwrap(), "sql predict");
    assert_eq!(first_value(&table), "0", "{table}");

    // A logistic regression and a gradient-boosted regressor, registered and scored on the same
    // cluster, each equal to Python onnxruntime on every row.
    for (name, model, outputs) in [
        ("logreg_6", "logreg", "-> label, probabilities_0, probabilities_1"),
        ("gbm_regressor_8", "gbm_reg", "-> variable"),
    ] {
        let (features, m) = import_fixture(&lake, dir.path(), name);
        let file = fixture(&format!("{name}.onnx"));
        let out = run_at(&lake, &["model", "register", model, file.to_str().unwrap(), "--inputs", &features, "--alias", "production"]);
        assert!(out.contains(outputs), "{out}");
        let scores = format!("{model}_scores");
        let out = run_at(
            &lake,
            &[
                "score", &format!("{name}_inputs"), "--model", &format!("{model}@production"), "--key", "id", "--output",
                &scores, "--chunks", "2", "--cluster", &cluster.url,
            ],
        );
        assert!(out.contains(&format!("predictions  {scores}@0: 1000 rows")), "{out}");
        assert_eq!(value(&lake, &wrong_rows(&scores, name, m)), "0", "{name}");
    }
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
