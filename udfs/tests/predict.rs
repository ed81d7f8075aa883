//! `predict` against committed TorchScript fixtures and their outputs from Python torch, run in
//! a local DataFusion session (the cluster tests live in the engine crate).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float32Array, Float64Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Float64Type, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use serde_json::Value;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).to_string_lossy().into_owned()
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect()
}

/// A session with Sluice's functions and a table `t(id, f1..fN)` holding `rows`.
fn session(rows: &[Vec<f32>], batch_rows: usize) -> (SessionContext, Arc<sluice_udfs::PredictUdf>) {
    let ctx = SessionContext::new();
    let functions = sluice_udfs::functions("test");
    for udf in &functions.scalar {
        ctx.register_udf(udf.as_ref().clone());
    }
    let width = rows[0].len();
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    fields.extend((1..=width).map(|c| Field::new(format!("f{c}"), DataType::Float32, true)));
    let schema = Arc::new(Schema::new(fields));
    let batches: Vec<RecordBatch> = rows
        .chunks(batch_rows)
        .enumerate()
        .map(|(b, chunk)| {
            let mut cols: Vec<ArrayRef> =
                vec![Arc::new(Int64Array::from_iter_values((0..chunk.len()).map(|i| (b * batch_rows + i) as i64)))];
            cols.extend(
                (0..width).map(|c| Arc::new(Float32Array::from_iter_values(chunk.iter().map(|r| r[c]))) as ArrayRef),
            );
            RecordBatch::try_new(schema.clone(), cols).unwrap()
        })
        .collect();
    ctx.register_batch("t", arrow::compute::concat_batches(&schema, &batches).unwrap()).unwrap();
    (ctx, functions.predict)
}

fn columns(n: usize) -> String {
    (1..=n).map(|c| format!("f{c}")).collect::<Vec<_>>().join(", ")
}

#[tokio::test]
async fn scores_equal_python_torch() {
    let expected = expected();
    let inputs = matrix(&expected["scorer_16"]["inputs"]);
    let outputs: Vec<f32> =
        expected["scorer_16"]["outputs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let (ctx, predict) = session(&inputs, 1000);
    let sql = format!("SELECT id, predict('{}', {}) AS score FROM t ORDER BY id", fixture("scorer_16.pt"), columns(16));
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let scores: Vec<f32> =
        batches.iter().flat_map(|b| b.column(1).as_primitive::<Float32Type>().values().to_vec()).collect();
    assert_eq!(batches[0].schema().field(1).data_type(), &DataType::Float32);
    assert_eq!(scores.len(), outputs.len());
    let max_diff = scores.iter().zip(&outputs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(max_diff <= 1e-6, "max abs difference {max_diff}");
    assert_eq!(predict.stats().rows(), 1000);
}

#[tokio::test]
async fn several_outputs_become_a_fixed_size_list() {
    let expected = expected();
    let inputs = matrix(&expected["classes_4x3"]["inputs"]);
    let outputs = matrix(&expected["classes_4x3"]["outputs"]);
    let (ctx, _) = session(&inputs, 1000);
    // Integer and double columns are accepted and converted to float32.
    let sql = format!(
        "SELECT predict('{}', f1, CAST(f2 AS DOUBLE), f3, f4) AS p FROM t ORDER BY id",
        fixture("classes_4x3.pt")
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let list = batches[0].column(0).as_fixed_size_list();
    assert_eq!(list.value_length(), 3);
    let values = list.values().as_primitive::<Float32Type>();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, outputs.len());
    for (r, want) in outputs.iter().enumerate().take(list.len()) {
        for (k, w) in want.iter().enumerate() {
            let got = values.value(r * 3 + k);
            assert!((got - w).abs() <= 1e-6, "row {r} class {k}: {got} vs {w}");
        }
    }
}

async fn error_of(ctx: &SessionContext, sql: &str) -> String {
    match ctx.sql(sql).await {
        Err(e) => e.to_string(),
        Ok(df) => df.collect().await.expect_err("query should fail").to_string(),
    }
}

#[tokio::test]
async fn bad_calls_say_what_the_model_expects_and_what_was_given() {
    let rows = vec![vec![0.5f32; 16]; 10];
    let (ctx, _) = session(&rows, 10);
    let model = fixture("scorer_16.pt");

    let e = error_of(&ctx, &format!("SELECT predict('/no/such/model.pt', {}) FROM t", columns(16))).await;
    assert!(e.contains("cannot read model '/no/such/model.pt'") && e.contains("Given 16 feature column(s)"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{}', f1) FROM t", fixture("not_a_model.pt"))).await;
    assert!(e.contains("is not a loadable TorchScript model"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{model}', f1, f2, f3) FROM t")).await;
    assert!(e.contains("expects 16 numeric feature columns") && e.contains("was given 3"), "{e}");
    assert!(e.contains("f1 Float32, f2 Float32, f3 Float32"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{model}', {}, 'text') FROM t", columns(15))).await;
    assert!(e.contains("not numeric") && e.contains("Utf8"), "{e}");

    let e = error_of(&ctx, "SELECT predict() FROM t").await;
    assert!(e.contains("predict"), "{e}");

    let e = error_of(&ctx, "SELECT predict(f1, f2) FROM t").await;
    assert!(e.contains("first argument must be the model path"), "{e}");
}

#[tokio::test]
async fn null_features_name_the_column_and_row() {
    let ctx = SessionContext::new();
    for udf in sluice_udfs::functions("test").scalar {
        ctx.register_udf(udf.as_ref().clone());
    }
    let mut fields = vec![Field::new("name", DataType::Utf8, false)];
    fields.extend((1..=16).map(|c| Field::new(format!("f{c}"), DataType::Float32, true)));
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec!["a", "b", "c"]))];
    for c in 1..=16 {
        let v = if c == 5 {
            Float32Array::from(vec![Some(1.0), None, Some(2.0)])
        } else {
            Float32Array::from(vec![1.0f32, 2.0, 3.0])
        };
        cols.push(Arc::new(v));
    }
    ctx.register_batch("t", RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()).unwrap();
    let e = error_of(&ctx, &format!("SELECT predict('{}', {}) FROM t", fixture("scorer_16.pt"), columns(16))).await;
    assert!(e.contains("feature 5 ('f5', Float32) is NULL at row 1"), "{e}");
    assert!(e.contains("COALESCE(f5, 0)"), "{e}");
}

#[test]
fn a_model_is_loaded_once_per_process() {
    let path = fixture("classes_4x3.pt");
    let a = sluice_udfs::Model::load(&path).unwrap();
    let b = sluice_udfs::Model::load(&path).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "the second load should return the cached model");
    assert!(a.id().starts_with("classes_4x3@"), "{}", a.id());
}

// ONNX models, against committed fixtures and their outputs from Python onnxruntime
// (tests/fixtures/make_onnx_fixtures.py).

fn expected_onnx() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected_onnx.json")).unwrap()).unwrap()
}

/// Python's outputs of `model` per row, in the model's output order (`output_names`), each
/// output flattened into its values (a label becomes one value, a probability vector k values).
fn onnx_rows(model: &Value) -> Vec<Vec<f64>> {
    let names: Vec<&str> = model["output_names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    let outputs: Vec<&Vec<Value>> = names.iter().map(|n| model["outputs"][*n].as_array().unwrap()).collect();
    (0..outputs[0].len())
        .map(|r| {
            outputs
                .iter()
                .flat_map(|o| match &o[r] {
                    Value::Array(v) => v.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(),
                    x => vec![x.as_f64().unwrap()],
                })
                .collect()
        })
        .collect()
}

/// Scores `name`'s fixture inputs through SQL, in batches of `batch_rows`, as f64 rows.
async fn onnx_scores(name: &str, batch_rows: usize) -> (Vec<Vec<f64>>, DataType) {
    let expected = expected_onnx();
    let inputs = matrix(&expected[name]["inputs"]);
    let (ctx, _) = session(&inputs, batch_rows);
    ctx.sql(&format!("SET datafusion.execution.batch_size = {batch_rows}")).await.unwrap();
    let sql = format!(
        "SELECT predict('{}', {}) AS p FROM t ORDER BY id",
        fixture(&format!("{name}.onnx")),
        columns(inputs[0].len())
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let data_type = batches[0].schema().field(0).data_type().clone();
    let mut rows = Vec::new();
    for batch in &batches {
        let column = batch.column(0);
        let (values, width) = match column.data_type() {
            DataType::FixedSizeList(_, n) => (column.as_fixed_size_list().values().clone(), *n as usize),
            _ => (column.clone(), 1),
        };
        let values = arrow::compute::cast(&values, &DataType::Float64).unwrap();
        let values = values.as_primitive::<arrow::datatypes::Float64Type>().values();
        rows.extend(values.chunks(width).map(<[f64]>::to_vec));
    }
    (rows, data_type)
}

fn assert_close(name: &str, got: &[Vec<f64>], want: &[Vec<f64>]) {
    assert_eq!(got.len(), want.len(), "{name}: rows");
    for (r, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{name}: values in row {r}");
        for (k, (a, b)) in g.iter().zip(w).enumerate() {
            assert!((a - b).abs() <= 1e-5, "{name} row {r} value {k}: {a} vs Python onnxruntime {b}");
        }
    }
}

#[tokio::test]
async fn onnx_models_score_equal_to_python_onnxruntime() {
    let expected = expected_onnx();
    // A classifier's label and probabilities become one list per row: [label, p0, p1, ...],
    // in f64 since the label is an integer tensor.
    for (name, width) in [("logreg_6", 3), ("gbm_classes_8x3", 4), ("named_3", 2)] {
        // Batches of 1,000 rows and of 7 (the forward calls' chunks) give the same values.
        for batch_rows in [1000, 7] {
            let (got, data_type) = onnx_scores(name, batch_rows).await;
            let DataType::FixedSizeList(_, n) = data_type else { panic!("{name}: {data_type}") };
            assert_eq!(n, width, "{name}");
            assert_close(name, &got, &onnx_rows(&expected[name]));
        }
    }
    // One output value per row is a plain column, float32 as the model returns it.
    let (got, data_type) = onnx_scores("gbm_regressor_8", 1000).await;
    assert_eq!(data_type, DataType::Float32);
    assert_close("gbm_regressor_8", &got, &onnx_rows(&expected["gbm_regressor_8"]));
    // The labels Sluice returns are the class of the highest probability, and all three occur.
    let (got, _) = onnx_scores("gbm_classes_8x3", 1000).await;
    let labels: std::collections::BTreeSet<i64> = got.iter().map(|r| r[0] as i64).collect();
    assert_eq!(labels, [0, 1, 2].into());
    for row in &got {
        let best = (0..3).max_by(|a, b| row[1 + a].total_cmp(&row[1 + b])).unwrap();
        assert_eq!(row[0] as usize, best, "{row:?}");
    }
}

/// A model that takes doubles gets float64 columns as they are: its fixture's values near 1e8
/// carry fractions float32 cannot hold (it steps by 8 there).
#[tokio::test]
async fn a_model_of_doubles_gets_unrounded_float64_features() {
    let expected = expected_onnx();
    let inputs: Vec<Vec<f64>> = expected["linear_f64_4"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect();
    let want = onnx_rows(&expected["linear_f64_4"]);
    let ctx = SessionContext::new();
    for udf in &sluice_udfs::functions("test").scalar {
        ctx.register_udf(udf.as_ref().clone());
    }
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    fields.extend((1..=4).map(|c| Field::new(format!("f{c}"), DataType::Float64, false)));
    let schema = Arc::new(Schema::new(fields));
    let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..inputs.len() as i64))];
    cols.extend((0..4).map(|c| Arc::new(Float64Array::from_iter_values(inputs.iter().map(|r| r[c]))) as ArrayRef));
    ctx.register_batch("d", RecordBatch::try_new(schema, cols).unwrap()).unwrap();
    let model = fixture("linear_f64_4.onnx");
    let scores = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            assert_eq!(batches[0].schema().field(0).data_type(), &DataType::Float64);
            batches.iter().flat_map(|b| b.column(0).as_primitive::<Float64Type>().values().to_vec()).collect::<Vec<f64>>()
        }
    };
    let got = scores(format!("SELECT predict('{model}', f1, f2, f3, f4) FROM d ORDER BY id")).await;
    assert_eq!(got.len(), want.len());
    for (r, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!((g - w[0]).abs() <= 1e-6, "row {r}: {g} vs Python onnxruntime {}", w[0]);
    }
    // The same rows through float32 columns land whole units away: what rounding would have done.
    let rounded = scores(format!(
        "SELECT predict('{model}', CAST(f1 AS FLOAT), CAST(f2 AS FLOAT), CAST(f3 AS FLOAT), CAST(f4 AS FLOAT)) \
         FROM d ORDER BY id"
    ))
    .await;
    let off = rounded.iter().zip(&want).filter(|(g, w)| (*g - w[0]).abs() > 0.1).count();
    assert!(off > want.len() / 2, "only {off} of {} rows moved by float32 rounding", want.len());
}

#[tokio::test]
async fn onnx_models_name_their_inputs_and_outputs() {
    let model = sluice_udfs::Model::load(&fixture("gbm_classes_8x3.onnx")).unwrap();
    assert_eq!(model.format(), sluice_udfs::model::Format::Onnx);
    assert_eq!(model.declared_inputs(), Some(8));
    let shape = model.probe(8).unwrap();
    assert_eq!(shape.outputs, 4);
    assert_eq!(
        model.output_names().unwrap(),
        ["label", "probabilities_0", "probabilities_1", "probabilities_2"].map(String::from)
    );
    let named = sluice_udfs::Model::load(&fixture("named_3.onnx")).unwrap();
    assert_eq!(named.onnx().unwrap().input_names(), ["a", "b", "c"].map(String::from));
}

/// Sessions are pooled: one thread reuses one session, and many threads scoring at once open at
/// most `max_sessions` (the cores by default), each returning Python's values.
#[test]
fn onnx_sessions_are_reused_and_capped() {
    // A private copy: the process-wide model cache keys on the path, so no other test shares it.
    let dir = std::env::temp_dir().join(format!("sluice-onnx-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gbm.onnx");
    std::fs::copy(fixture("gbm_classes_8x3.onnx"), &path).unwrap();
    let model = sluice_udfs::Model::load(path.to_str().unwrap()).unwrap();
    let shape = model.probe(8).unwrap();
    let expected = expected_onnx();
    let inputs = matrix(&expected["gbm_classes_8x3"]["inputs"]);
    let want = onnx_rows(&expected["gbm_classes_8x3"]);
    let columns: Vec<Vec<f32>> = (0..8).map(|c| inputs.iter().map(|r| r[c]).collect()).collect();
    let slices: Vec<&[f32]> = columns.iter().map(Vec::as_slice).collect();
    let check = |start: usize, n: usize, scratch: &mut Vec<f32>| {
        let sluice_udfs::model::Output::F64(out) = model.forward(&slices, start, n, shape, scratch).unwrap() else {
            panic!("a label and probabilities come back as f64")
        };
        for (r, row) in out.chunks(4).enumerate() {
            for (k, (a, b)) in row.iter().zip(&want[start + r]).enumerate() {
                assert!((a - b).abs() <= 1e-5, "row {} value {k}: {a} vs {b}", start + r);
            }
        }
    };
    let mut scratch = Vec::new();
    for start in [0, 100, 500] {
        check(start, 50, &mut scratch);
    }
    let onnx = model.onnx().unwrap();
    assert_eq!(onnx.sessions(), 1);
    let threads = onnx.max_sessions() * 3 + 2;
    std::thread::scope(|scope| {
        for t in 0..threads {
            let check = &check;
            scope.spawn(move || {
                let mut scratch = Vec::new();
                for i in 0..20 {
                    check((t * 37 + i * 11) % 900, 100, &mut scratch);
                }
            });
        }
    });
    assert!(onnx.sessions() <= onnx.max_sessions(), "{} sessions open, cap {}", onnx.sessions(), onnx.max_sessions());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn bad_onnx_calls_say_what_the_model_expects() {
    let rows = vec![vec![0.5f32; 8]; 10];
    let (ctx, _) = session(&rows, 10);
    let model = fixture("gbm_classes_8x3.onnx");

    let e = error_of(&ctx, &format!("SELECT predict('{model}', {}) FROM t", columns(5))).await;
    assert!(e.contains("expects 8 numeric feature columns") && e.contains("one input 'input' of 8 features"), "{e}");
    assert!(e.contains("was given 5"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{model}', {}, 'text') FROM t", columns(7))).await;
    assert!(e.contains("not numeric") && e.contains("Utf8"), "{e}");

    let named = fixture("named_3.onnx");
    let e = error_of(&ctx, &format!("SELECT predict('{named}', f1, f2) FROM t")).await;
    assert!(e.contains("3 named inputs (a, b, c)") && e.contains("was given 2"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{}', {}) FROM t", fixture("not_a_model.onnx"), columns(6))).await;
    assert!(e.contains("is not a loadable ONNX model") && e.contains("not_a_model.onnx"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{}', {}) FROM t", fixture("fixed_batch_1.onnx"), columns(4))).await;
    assert!(e.contains("fixed batch of 1 row") && e.contains("dynamic_axes") && e.contains("fixed_batch_1.onnx"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{model}', f1, f2, f3, f4, f5, f6, f7, CAST(NULL AS FLOAT)) FROM t")).await;
    assert!(e.contains("is NULL at row 0"), "{e}");
}
