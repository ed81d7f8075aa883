//! Online inference, `sluice serve --predict`: registered versions answered over real HTTP on the
//! /v1 and KServe v2 routes, equal to `sluice score` of the same rows and version; concurrent
//! requests share forward passes; aliases move only on a reload; bad input is a clear 4xx and
//! roles are enforced.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{Float32Type, Int64Type};
use common::*;
use serde_json::{Value, json};

const ACCESS: &str = r#"
[[users]]
name = "ana"
role = "reader"
password = { env = "TEST_ANA_PASSWORD" }

[[users]]
name = "ops"
role = "operator"
password = { env = "TEST_OPS_PASSWORD" }
"#;

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// Every batch of the Parquet files under `dir` (a data asset's folder; these assets only append).
fn parquet_batches(dir: &Path) -> Vec<arrow::record_batch::RecordBatch> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let file = std::fs::File::open(&path).unwrap();
                let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
                out.extend(reader.map(Result::unwrap));
            }
        }
    }
    out
}

/// Every row of the asset under `dir`: id to prediction.
fn read_predictions(dir: &Path) -> HashMap<i64, f32> {
    let mut out = HashMap::new();
    for batch in parquet_batches(dir) {
        let ids = batch.column_by_name("id").unwrap().as_primitive::<Int64Type>().clone();
        let p = batch.column_by_name("prediction").unwrap().as_primitive::<Float32Type>().clone();
        for r in 0..batch.num_rows() {
            out.insert(ids.value(r), p.value(r));
        }
    }
    out
}

/// `sluice serve --predict` on a free port with the test's access file and `args`, logging to
/// `dir/serve.log`: the process, its port and the log's path.
fn serve_predict(dir: &Path, lake: &Path, args: &[&str]) -> (Child, u16, std::path::PathBuf) {
    let access = dir.join("access.toml");
    std::fs::write(&access, ACCESS).unwrap();
    let port = free_port();
    let log_path = dir.join("serve.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = Child(
        sluice_at(lake)
            .args(["serve", "--predict", &format!("127.0.0.1:{port}"), "--access", access.to_str().unwrap()])
            .args(args)
            .env("TEST_ANA_PASSWORD", "ana-pass-1")
            .env("TEST_OPS_PASSWORD", "ops-pass-2")
            .env("SLUICE_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    (server, port, log_path)
}

/// Waits (60 s at most) until `up` says the endpoint answers.
fn wait_until_up(log_path: &Path, mut up: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !up() {
        assert!(Instant::now() < deadline, "{}", std::fs::read_to_string(log_path).unwrap());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 200 rows of `row(id)` as float32 columns a, b, c, for `sluice asset write events --sql`.
const EVENTS: &str = "SELECT value AS id, CAST(value % 17 AS FLOAT) * CAST(0.37 AS FLOAT) - CAST(2.0 AS FLOAT) AS a, \
    CAST(value % 11 AS FLOAT) * CAST(0.21 AS FLOAT) AS b, CAST(value % 5 AS FLOAT) * CAST(1.3 AS FLOAT) - CAST(0.4 AS FLOAT) AS c \
    FROM (SELECT unnest(range(0, 200)) AS value)";

fn row(id: i64) -> (f32, f32, f32) {
    ((id % 17) as f32 * 0.37 - 2.0, (id % 11) as f32 * 0.21, (id % 5) as f32 * 1.3 - 0.4)
}

#[test]
fn the_prediction_endpoint_serves_registered_versions_like_sluice_score() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mlp = dir.path().join("mlp.pt");
    mlp_model(&mlp, 16, 5);
    let lin = dir.path().join("lin.pt");
    linear_model(&lin);
    run_at(&lake, &["asset", "write", "events", "--sql", EVENTS]);
    run_at(&lake, &["model", "register", "churn", mlp.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "production"]);
    run_at(&lake, &["model", "register", "churn", lin.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "staging"]);
    let out = run_at(&lake, &["score", "events", "--model", "churn@production", "--key", "id", "--output", "preds"]);
    assert!(out.contains("predictions  preds@0: 200 rows"), "{out}");
    let batch = read_predictions(&lake.join("preds"));
    assert_eq!(batch.len(), 200);

    let (_server, port, log_path) =
        serve_predict(dir.path(), &lake, &["--model", "churn@production", "--max-delay-ms", "5", "--max-body-bytes", "100000"]);
    wait_until_up(&log_path, || http_get(port, "/healthz").contains("ok"));
    let ana = basic("ana", "ana-pass-1");
    let call = |method: &str, path: &str, body: &Value| http_call(port, method, path, &[&ana], &body.to_string());

    // /v1 by feature name and in order: the batch job's values for the same rows and version.
    let ids: Vec<i64> = (0..40).collect();
    let rows: Vec<Value> = ids.iter().map(|i| { let (a, b, c) = row(*i); json!({"a": a, "b": b, "c": c}) }).collect();
    let (status, body) = call("POST", "/v1/models/churn@production/predict", &json!({ "rows": rows }));
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["model"], "churn");
    assert_eq!(answer["model_version"], 1);
    for (i, p) in ids.iter().zip(answer["predictions"].as_array().unwrap()) {
        let want = f64::from(batch[i]);
        assert!((p.as_f64().unwrap() - want).abs() <= 1e-6, "row {i}: {p} vs sluice score {want}");
    }
    let inputs: Vec<Value> = ids.iter().map(|i| { let (a, b, c) = row(*i); json!([a, b, c]) }).collect();
    let (status, body) = call("POST", "/v1/models/churn@1/predict", &json!({ "inputs": inputs }));
    assert_eq!(status, 200, "{body}");
    let by_order: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(by_order["predictions"], answer["predictions"]);

    // KServe v2: metadata, readiness, infer with one tensor per input.
    let (status, body) = call("GET", "/v2/models/churn", &json!({}));
    assert_eq!(status, 200, "{body}");
    let meta: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(meta["platform"], "pytorch_torchscript");
    assert_eq!(meta["inputs"].as_array().unwrap().len(), 3);
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert!(http_get(port, "/v2/health/ready").contains("\"ready\":true"));
    assert!(http_get(port, "/v2/health/live").contains("\"live\":true"));
    assert!(http_get(port, "/readyz").contains("ready"));
    let (status, body) = call("GET", "/v2/models/churn/ready", &json!({}));
    assert!(status == 200 && body.contains("\"ready\":true"), "{body}");
    let (status, body) = call("GET", "/v2/models/churn/versions/2", &json!({}));
    assert_eq!(status, 200, "{body}");
    let v2_meta: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v2_meta["inputs"][0], json!({"name": "a", "datatype": "FP32", "shape": [-1]}));
    let (status, body) = call("GET", "/v2/models/churn/versions/1/ready", &json!({}));
    assert!(status == 200 && body.contains("\"ready\":true"), "{body}");
    let (status, body) = call("GET", "/v2/models/churn/versions/7/ready", &json!({}));
    assert!(status == 404 && body.contains("no version 7"), "{status} {body}");
    let column = |k: usize| -> Vec<f32> { ids.iter().map(|i| { let r = row(*i); [r.0, r.1, r.2][k] }).collect() };
    let tensors: Vec<Value> = ["a", "b", "c"]
        .iter()
        .enumerate()
        .map(|(k, n)| json!({"name": n, "shape": [ids.len()], "datatype": "FP32", "data": column(k)}))
        .collect();
    let infer = json!({ "id": "r-1", "inputs": tensors });
    let (status, body) = call("POST", "/v2/models/churn/versions/1/infer", &infer);
    assert_eq!(status, 200, "{body}");
    let v2: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v2["id"], "r-1");
    assert_eq!(v2["model_version"], "1");
    assert_eq!(v2["outputs"][0]["data"], answer["predictions"]);
    // Arrow IPC in (a column per input, any numeric type), Arrow IPC out.
    let arrow_body = |columns: Vec<(&str, arrow::array::ArrayRef)>| -> Vec<u8> {
        let batch = arrow::record_batch::RecordBatch::try_from_iter(columns).unwrap();
        let mut out = Vec::new();
        let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        out
    };
    let f32s = |k: usize| -> arrow::array::ArrayRef { std::sync::Arc::new(arrow::array::Float32Array::from(column(k))) };
    let stream = "Content-Type: application/vnd.apache.arrow.stream";
    let body = arrow_body(vec![("c", f32s(2)), ("a", f32s(0)), ("b", f32s(1))]);
    let (status, head, answer) = http_call_bytes(port, "POST", "/v1/models/churn@production/predict", &[&ana, stream], &body);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    assert_eq!(head["content-type"], "application/vnd.apache.arrow.stream");
    assert_eq!(head["x-sluice-model-version"], "1");
    let read: Vec<arrow::record_batch::RecordBatch> =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(answer), None).unwrap().map(Result::unwrap).collect();
    let got: Vec<f64> = read.iter().flat_map(|b| b.column(0).as_primitive::<arrow::datatypes::Float64Type>().values().to_vec()).collect();
    assert_eq!(got.len(), ids.len());
    for (i, p) in ids.iter().zip(&got) {
        assert!((p - f64::from(batch[i])).abs() <= 1e-6, "Arrow row {i}: {p} vs sluice score {}", batch[i]);
    }
    let ints: arrow::array::ArrayRef = std::sync::Arc::new(arrow::array::Int64Array::from(vec![1i64, 2]));
    let texts: arrow::array::ArrayRef = std::sync::Arc::new(arrow::array::StringArray::from(vec!["x", "y"]));
    let nulls: arrow::array::ArrayRef = std::sync::Arc::new(arrow::array::Float64Array::from(vec![Some(1.0), None]));
    let nans: arrow::array::ArrayRef = std::sync::Arc::new(arrow::array::Float64Array::from(vec![1.0, f64::NAN]));
    for (columns, says) in [
        (vec![("a", ints.clone()), ("b", ints.clone())], "the column 'c' is missing"),
        (vec![("a", ints.clone()), ("b", texts), ("c", ints.clone())], "the column 'b' is Utf8, not a number"),
        (vec![("a", ints.clone()), ("b", nulls), ("c", ints.clone())], "row 1: the feature 'b' is null"),
        (vec![("a", ints.clone()), ("b", nans), ("c", ints)], "row 1: the feature 'b' is NaN"),
    ] {
        let (status, _, answer) = http_call_bytes(port, "POST", "/v1/models/churn/predict", &[&ana, stream], &arrow_body(columns));
        let answer = String::from_utf8_lossy(&answer);
        assert!(status == 400 && answer.contains(says), "{status} {answer}");
    }
    // Checked before decoding: a batch declaring 2^40 rows in a few bytes, and compressed
    // buffers (whose declared sizes would be allocated).
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::empty());
    let options = arrow::record_batch::RecordBatchOptions::new().with_row_count(Some(1 << 40));
    let huge = arrow::record_batch::RecordBatch::try_new_with_options(schema.clone(), vec![], &options).unwrap();
    let mut body = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(&mut body, &schema).unwrap();
    writer.write(&huge).unwrap();
    writer.finish().unwrap();
    drop(writer);
    assert!(body.len() < 1000);
    let (status, _, answer) = http_call_bytes(port, "POST", "/v1/models/churn/predict", &[&ana, stream], &body);
    assert!(status == 413 && String::from_utf8_lossy(&answer).contains("over the limit of 100000"), "{status}");
    let plain = arrow::record_batch::RecordBatch::try_from_iter(vec![("a", f32s(0)), ("b", f32s(1)), ("c", f32s(2))]).unwrap();
    let options = arrow::ipc::writer::IpcWriteOptions::default()
        .try_with_compression(Some(arrow::ipc::CompressionType::LZ4_FRAME))
        .unwrap();
    let mut body = Vec::new();
    let mut writer = arrow::ipc::writer::StreamWriter::try_new_with_options(&mut body, &plain.schema(), options).unwrap();
    writer.write(&plain).unwrap();
    writer.finish().unwrap();
    drop(writer);
    let (status, _, answer) = http_call_bytes(port, "POST", "/v1/models/churn/predict", &[&ana, stream], &body);
    assert!(status == 415 && String::from_utf8_lossy(&answer).contains("uncompressed"), "{status}");
    let (status, _, answer) = http_call_bytes(port, "POST", "/v1/models/churn/predict", &[&ana, stream], b"not arrow");
    assert!(status == 400 && String::from_utf8_lossy(&answer).contains("not a readable Arrow IPC"), "{status}");

    let negative = json!({"inputs": [{"name": "x", "shape": [-1, -3], "datatype": "FP32", "data": [1, 2, 3]}]});
    let (status, body) = call("POST", "/v2/models/churn/infer", &negative);
    assert!(status == 400 && body.contains("the real size of every dimension"), "{status} {body}");

    // Concurrent requests of one row each share forward passes, every answer its own row's.
    let batches_before = batch_count(port, &ana);
    std::thread::scope(|scope| {
        for t in 0..16i64 {
            let ana = &ana;
            let batch = &batch;
            scope.spawn(move || {
                for k in 0..10 {
                    let id = (t * 10 + k) % 200;
                    let (a, b, c) = row(id);
                    let (status, body) = http_call(port, "POST", "/v1/models/churn@production/predict", &[ana], &json!({"rows": [{"a": a, "b": b, "c": c}]}).to_string());
                    assert_eq!(status, 200, "{body}");
                    let p = serde_json::from_str::<Value>(&body).unwrap()["predictions"][0].as_f64().unwrap();
                    assert!((p - f64::from(batch[&id])).abs() <= 1e-6, "row {id}: {p}");
                }
            });
        }
    });
    let batches = batch_count(port, &ana) - batches_before;
    assert!(batches < 160, "160 concurrent requests took {batches} forward passes: nothing was batched");

    // Bad input: each a 4xx naming what is wrong; the server keeps answering.
    let cases = [
        (json!({"rows": [{"a": 1.0, "b": 2.0}]}), 400, "the feature 'c' is missing"),
        (json!({"rows": [{"a": 1.0, "b": "x", "c": 3.0}]}), 400, "'b' is a string"),
        (json!({"rows": [{"a": 1.0, "b": null, "c": 3.0}]}), 400, "'b' is null"),
        (json!({"rows": [{"a": 1.0, "b": true, "c": 3.0}]}), 400, "'b' is a boolean"),
        (json!({"inputs": [[1.0, 2.0]]}), 400, "array of 3 numbers"),
        (json!({"rows": []}), 400, "no rows"),
        (json!({"features": []}), 400, "the body needs"),
    ];
    for (body, code, says) in cases {
        let (status, answer) = call("POST", "/v1/models/churn/predict", &body);
        assert_eq!(status, code, "{body}: {answer}");
        assert!(answer.contains(says), "{body}: {answer}");
    }
    let (status, answer) = http_call(port, "POST", "/v1/models/churn/predict", &[&ana], "{\"rows\": [");
    assert!(status == 400 && answer.contains("not valid JSON"), "{answer}");
    let (status, answer) = call("POST", "/v1/models/nosuch/predict", &json!({"inputs": [[1, 2, 3]]}));
    assert!(status == 404 && answer.contains("no model named 'nosuch'"), "{answer}");
    let (status, answer) = call("POST", "/v1/models/churn@9/predict", &json!({"inputs": [[1, 2, 3]]}));
    assert!(status == 404 && answer.contains("no version 9"), "{answer}");
    let big = json!({"inputs": vec![[1.5f32, 2.5, 3.5]; 8_000]});
    let (status, answer) = call("POST", "/v1/models/churn/predict", &big);
    assert!(status == 413 && answer.contains("over the limit of 100000 bytes"), "{status} {answer}");

    // Roles: no credentials or a wrong password are refused; a reader predicts but may not reload.
    let (status, _) = http_call(port, "POST", "/v1/models/churn/predict", &[], "{\"inputs\": [[1, 2, 3]]}");
    assert_eq!(status, 401);
    let (status, _) = http_call(port, "POST", "/v1/models/churn/predict", &[&basic("ana", "wrong")], "{\"inputs\": [[1, 2, 3]]}");
    assert_eq!(status, 401);
    let (status, answer) = call("POST", "/v1/reload", &json!({}));
    assert!(status == 403 && answer.contains("operator"), "{answer}");

    // An alias moves only on a reload: until then production still answers version 1.
    run_at(&lake, &["model", "promote", "churn@2", "production"]);
    let probe = json!({"inputs": [[1.0, 2.0, 3.0]]});
    let (_, before) = call("POST", "/v1/models/churn@production/predict", &probe);
    assert_eq!(serde_json::from_str::<Value>(&before).unwrap()["model_version"], 1, "{before}");
    let (status, answer) = http_call(port, "POST", "/v1/reload", &[&basic("ops", "ops-pass-2")], "");
    assert!(status == 200 && answer.contains("churn@production: 1 -> 2"), "{answer}");
    let (_, after) = call("POST", "/v1/models/churn@production/predict", &probe);
    let after: Value = serde_json::from_str(&after).unwrap();
    assert_eq!(after["model_version"], 2);
    // Version 2 is y = 0.5a - 2b + 0.25c + 1.
    assert!((after["predictions"][0].as_f64().unwrap() - (0.5 - 4.0 + 0.75 + 1.0)).abs() < 1e-6, "{after}");

    // Metrics: requests per version and code, latency, batch sizes.
    let (status, text) = http_call(port, "GET", "/metrics", &[&ana], "");
    assert_eq!(status, 200);
    assert!(text.contains("sluice_predict_requests_total{model=\"churn\",version=\"1\",code=\"200\"}"), "{text}");
    assert!(text.contains("sluice_predict_requests_total{model=\"churn\",version=\"\",code=\"400\"}"), "{text}");
    assert!(text.contains("sluice_predict_requests_total{model=\"-\",version=\"\",code=\"404\"}"), "{text}");
    assert!(text.contains("sluice_predict_request_seconds_count{model=\"churn\",version=\"2\"}"), "{text}");
}

/// Forward passes of churn@1 so far, from /metrics.
fn batch_count(port: u16, auth: &str) -> u64 {
    let (_, text) = http_call(port, "GET", "/metrics", &[auth], "");
    text.lines()
        .find_map(|l| l.strip_prefix("sluice_predict_batch_rows_count{model=\"churn\",version=\"1\"} "))
        .map_or(0, |n| n.trim().parse().unwrap())
}

/// Every row of the asset under `dir`, as column name to value.
fn read_rows(dir: &Path) -> Vec<HashMap<String, Value>> {
    use arrow::array::Array;
    use arrow::datatypes::DataType;
    let mut out = Vec::new();
    for batch in parquet_batches(dir) {
        for r in 0..batch.num_rows() {
            let mut row = HashMap::new();
            for (f, column) in batch.schema().fields().iter().zip(batch.columns()) {
                let value = match column.data_type() {
                    DataType::Utf8 => json!(column.as_string::<i32>().value(r)),
                    DataType::Boolean => json!(column.as_boolean().value(r)),
                    DataType::Float64 => json!(column.as_primitive::<arrow::datatypes::Float64Type>().value(r)),
                    DataType::Int64 => json!(column.as_primitive::<Int64Type>().value(r)),
                    DataType::Int32 => json!(column.as_primitive::<arrow::datatypes::Int32Type>().value(r)),
                    _ => json!(column.is_valid(r)),
                };
                row.insert(f.name().clone(), value);
            }
            out.push(row);
        }
    }
    out
}

/// A counter's value from /metrics (0 when absent).
fn metric(port: u16, auth: &str, series: &str) -> f64 {
    let (_, text) = http_call(port, "GET", "/metrics", &[auth], "");
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
}

#[test]
fn traffic_splits_by_weight_shadows_score_and_every_request_is_logged_for_drift() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let mlp = dir.path().join("mlp.pt");
    mlp_model(&mlp, 16, 5);
    let lin = dir.path().join("lin.pt");
    linear_model(&lin);
    let candidate = dir.path().join("candidate.pt");
    linear(&candidate, &[1.0, 1.0, -1.0], &[0.5]);
    run_at(&lake, &["asset", "write", "events", "--sql", EVENTS]);
    run_at(&lake, &["model", "register", "churn", mlp.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "production"]);
    run_at(&lake, &["model", "register", "churn", lin.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "staging"]);
    run_at(&lake, &["model", "register", "churn", candidate.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "candidate"]);
    run_at(&lake, &["score", "events", "--model", "churn@production", "--key", "id", "--output", "preds"]);
    let production = read_predictions(&lake.join("preds"));
    // What each version answers for row `id`.
    let want = |version: i64, id: i64| -> f64 {
        let (a, b, c) = row(id);
        let (a, b, c) = (f64::from(a), f64::from(b), f64::from(c));
        match version {
            1 => f64::from(production[&id]),
            2 => 0.5 * a - 2.0 * b + 0.25 * c + 1.0,
            3 => a + b - c + 0.5,
            v => panic!("version {v}"),
        }
    };

    let (mut server, port, log_path) = serve_predict(dir.path(), &lake, &[
        "--route", "churn=production:90,staging:10", "--shadow", "churn=candidate",
        "--request-log", "churn=churn_requests", "--request-log-every-s", "0.5", "--max-delay-ms", "0",
    ]);
    wait_until_up(&log_path, || http_get(port, "/healthz").contains("ok"));
    let started = std::fs::read_to_string(&log_path).unwrap();
    assert!(started.contains("route churn=production:90,staging:10") && started.contains("shadow churn=churn@candidate"), "{started}");
    let ana = basic("ana", "ana-pass-1");

    // 10,000 requests of the bare name from 8 clients: 10% answered by staging, each answer
    // that version's value for its row.
    const REQUESTS: i64 = 10_000;
    let answered: Vec<(String, i64)> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..8i64)
            .map(|t| {
                let ana = &ana;
                let want = &want;
                scope.spawn(move || {
                    let mut seen = Vec::new();
                    for k in (t..REQUESTS).step_by(8) {
                        let id = k % 200;
                        let (a, b, c) = row(id);
                        let body = json!({"rows": [{"a": a, "b": b, "c": c}]}).to_string();
                        let (status, answer) = http_call(port, "POST", "/v1/models/churn/predict", &[ana], &body);
                        assert_eq!(status, 200, "{answer}");
                        let answer: Value = serde_json::from_str(&answer).unwrap();
                        let version = answer["model_version"].as_i64().unwrap();
                        let p = answer["predictions"][0].as_f64().unwrap();
                        assert!((p - want(version, id)).abs() <= 1e-5, "row {id} by version {version}: {p}");
                        seen.push((answer["route"].as_str().unwrap().to_string(), version));
                    }
                    seen
                })
            })
            .collect();
        clients.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });
    let staging = answered.iter().filter(|(route, _)| route == "staging").count() as f64;
    assert!((staging / REQUESTS as f64 - 0.10).abs() <= 0.003, "{staging} of {REQUESTS} went to staging");
    assert!(answered.iter().all(|(route, v)| (route == "staging") == (*v == 2) && (route == "production") == (*v == 1)));
    // A route key keeps a caller on one version; asking for a version is never rerouted.
    for user in 0..20 {
        let key = format!("X-Sluice-Route-Key: user-{user}");
        let versions: std::collections::BTreeSet<i64> = (0..5)
            .map(|_| {
                let (_, answer) = http_call(port, "POST", "/v1/models/churn/predict", &[&ana, &key], "{\"inputs\": [[1, 2, 3]]}");
                serde_json::from_str::<Value>(&answer).unwrap()["model_version"].as_i64().unwrap()
            })
            .collect();
        assert_eq!(versions.len(), 1, "user-{user} saw versions {versions:?}");
    }
    let (_, answer) = http_call(port, "POST", "/v1/models/churn@staging/predict", &[&ana], "{\"inputs\": [[1, 2, 3]]}");
    assert_eq!(serde_json::from_str::<Value>(&answer).unwrap()["model_version"], 2);
    let metrics_routed = metric(port, &ana, "sluice_predict_routed_total{model=\"churn\",target=\"staging\",version=\"2\"} ");
    assert!(metrics_routed >= staging, "{metrics_routed}");

    // Every request is logged once, and its shadow's predictions with it.
    let requests = REQUESTS + 20 * 5 + 1;
    let deadline = Instant::now() + Duration::from_secs(120);
    while metric(port, &ana, "sluice_predict_logged_rows_total{asset=\"churn_requests\"} ") < (2 * requests) as f64 {
        assert!(Instant::now() < deadline, "{}", http_call(port, "GET", "/metrics", &[&ana], "").1);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(metric(port, &ana, "sluice_predict_shadow_total{model=\"churn\",version=\"3\",outcome=\"ok\"} "), requests as f64);
    // SIGTERM: the endpoint commits what waits and ends cleanly.
    let pid = server.0.id().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.0.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", std::fs::read_to_string(&log_path).unwrap());

    let logged = read_rows(&lake.join("churn_requests"));
    assert_eq!(logged.len() as i64, 2 * requests);
    let by_features: HashMap<String, i64> = (0..200).map(|id| (format!("{:?}", row(id)), id)).collect();
    let mut per_request: HashMap<String, (i64, i64)> = HashMap::new();
    for r in &logged {
        let (a, b, c) = (r["a"].as_f64().unwrap() as f32, r["b"].as_f64().unwrap() as f32, r["c"].as_f64().unwrap() as f32);
        let version = r["model_version"].as_i64().unwrap();
        let shadow = r["shadow"].as_bool().unwrap();
        assert_eq!(shadow, version == 3, "{r:?}");
        assert_eq!(r["route"] == "shadow", shadow, "{r:?}");
        if let Some(id) = by_features.get(&format!("{:?}", (a, b, c))) {
            let p = r["prediction"].as_f64().unwrap();
            assert!((p - want(version, *id)).abs() <= 1e-5, "logged row {id} of version {version}: {p}");
        }
        let seen = per_request.entry(r["request_id"].as_str().unwrap().to_string()).or_default();
        if shadow { seen.1 += 1 } else { seen.0 += 1 }
    }
    assert_eq!(per_request.len() as i64, requests);
    assert!(per_request.values().all(|s| *s == (1, 1)), "each request once and its shadow once");

    // An independent Delta reader sees the same rows and columns.
    let reader = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/delta-reader.sh");
    let out = std::process::Command::new("bash").arg(&reader).arg(lake.join("churn_requests")).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let table: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(table["rows"], 2 * requests);
    for column in ["request_id", "row", "scored_at", "model", "model_version", "route", "shadow", "latency_ms", "a", "b", "c", "prediction"] {
        assert!(table["columns"].as_array().unwrap().iter().any(|c| c == column), "{column}: {table}");
    }
    let sum_a: f64 = logged.iter().map(|r| r["a"].as_f64().unwrap()).sum();
    assert!((table["sums"]["a"].as_f64().unwrap() - sum_a).abs() < 1e-6 * sum_a.abs().max(1.0), "{table}");

    // Drift of online traffic against the data the batch job scored: the same rows, no drift;
    // quality joins labels that arrive later on request_id and row.
    let drift = run_at(&lake, &["monitor", "drift", "events", "churn_requests", "--columns", "a,b,c"]);
    assert!(drift.contains(&format!("{}/{}", 200, 2 * requests)) && drift.contains("drifted      none"), "{drift}");
    run_at(&lake, &[
        "asset", "write", "labels", "--sql",
        "SELECT request_id, \"row\", CASE WHEN a + b > 0 THEN 1.0 ELSE 0.0 END AS label FROM churn_requests WHERE NOT shadow",
    ]);
    let quality = run_at(&lake, &[
        "monitor", "quality", "churn_requests", "--labels", "labels", "--key", "request_id,row", "--label", "label",
        "--window", "none", "--where", "p.model_version = 1", "--model", "churn@1",
    ]);
    assert!(quality.contains("rmse"), "{quality}");
}

#[test]
fn with_a_certificate_the_prediction_endpoint_speaks_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let lin = dir.path().join("lin.pt");
    linear_model(&lin);
    run_at(&lake, &["model", "register", "churn", lin.to_str().unwrap(), "--inputs", "a, b, c"]);
    // A model that returns no values per row is refused when registered (the endpoint's answers
    // are cut into rows of its outputs).
    let empty = dir.path().join("empty.pt");
    linear(&empty, &[], &[]);
    let out = sluice_at(&lake).args(["model", "register", "empty", empty.to_str().unwrap(), "--inputs", "a, b, c"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("shape [2, 0]"), "{stderr}");
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let (_server, port, log_path) =
        serve_predict(dir.path(), &lake, &["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()]);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let trusted = https_client(Some(&cert.pem()));
    let untrusted = https_client(None);
    let ana = basic("ana", "ana-pass-1");
    let body = "{\"inputs\": [[1, 2, 3]]}";
    wait_until_up(&log_path, || https_call(&trusted, port, "GET", "/healthz", &[], "").is_ok_and(|(_, b)| b.contains("ok")));
    assert!(std::fs::read_to_string(&log_path).unwrap().contains(&format!("https://127.0.0.1:{port}")));
    let (status, answer) = https_call(&trusted, port, "POST", "/v1/models/churn/predict", &[&ana], body).unwrap();
    assert_eq!(status, 200, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert!((answer["predictions"][0].as_f64().unwrap() - (0.5 - 4.0 + 0.75 + 1.0)).abs() < 1e-6, "{answer}");
    // Plain HTTP gets no answer, and a client that does not trust the certificate is refused.
    let (status, _) = http_call(port, "POST", "/v1/models/churn/predict", &[&ana], body);
    assert_ne!(status, 200);
    let refused = https_call(&untrusted, port, "POST", "/v1/models/churn/predict", &[&ana], body);
    assert!(refused.as_ref().is_err_and(|e| e.contains("certificate")), "{refused:?}");
    // The server still answers after those.
    let (status, answer) = https_call(&trusted, port, "POST", "/v1/models/churn/predict", &[&ana], body).unwrap();
    assert!(status == 200 && answer.contains("\"model_version\":1"), "{answer}");
}

/// A TLS client trusting `ca` (PEM), or no one.
fn https_client(ca: Option<&str>) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = ca {
        roots.add(rustls::pki_types::CertificateDer::from_pem_slice(ca.as_bytes()).unwrap()).unwrap();
    }
    std::sync::Arc::new(rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth())
}

/// One HTTPS request to localhost:`port`: the status and body, or the TLS or I/O error.
fn https_call(
    config: &std::sync::Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let connection = rustls::ClientConnection::new(config.clone(), "localhost".try_into().unwrap()).map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost:{port}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // Servers may close without close_notify once the answer is out.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    let response = String::from_utf8_lossy(&response).to_string();
    let status = response.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}
