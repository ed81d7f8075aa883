//! Shared set-up of the engine's cluster tests: an embedded cluster and fixture data as Parquet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Int64Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use datafusion::prelude::SessionContext;
use parquet::arrow::ArrowWriter;
use sluice_engine::{EmbeddedCluster, EmbeddedOptions};

/// Path of a fixture of the udfs crate (TorchScript files and their expected outputs).
pub fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../udfs/tests/fixtures").join(name).to_string_lossy().into_owned()
}

/// Inputs and Python torch outputs of the `scorer_16` fixture.
pub fn scorer_fixture() -> (Vec<Vec<f32>>, Vec<f32>) {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let inputs = v["scorer_16"]["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        .collect();
    let outputs = v["scorer_16"]["outputs"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    (inputs, outputs)
}

/// Writes `rows` as `files` Parquet files `part-N.parquet` under `dir`, columns `id, f1..fN`
/// (feature `null_at` = (row, column) is NULL when given).
pub fn write_features(dir: &Path, rows: &[Vec<f32>], files: usize, null_at: Option<(usize, usize)>) {
    std::fs::create_dir_all(dir).unwrap();
    let width = rows[0].len();
    let mut fields = vec![Field::new("id", DataType::Int64, false)];
    fields.extend((1..=width).map(|c| Field::new(format!("f{c}"), DataType::Float32, true)));
    let schema = Arc::new(Schema::new(fields));
    let per_file = rows.len().div_ceil(files);
    for (f, chunk) in rows.chunks(per_file).enumerate() {
        let base = f * per_file;
        let mut cols: Vec<ArrayRef> =
            vec![Arc::new(Int64Array::from_iter_values((0..chunk.len()).map(|i| (base + i) as i64)))];
        for c in 0..width {
            let values = chunk.iter().enumerate().map(|(i, r)| (null_at != Some((base + i, c + 1))).then_some(r[c]));
            cols.push(Arc::new(Float32Array::from_iter(values)));
        }
        let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
}

/// An embedded cluster with two executors, and a client session on it.
pub async fn cluster() -> (EmbeddedCluster, SessionContext, sluice_engine::Functions) {
    cluster_with(Vec::new()).await
}

/// An embedded cluster with two executors and `datastores` registered on every site.
pub async fn cluster_with(
    datastores: Vec<sluice_engine::Datastore>,
) -> (EmbeddedCluster, SessionContext, sluice_engine::Functions) {
    let options = EmbeddedOptions { executors: 2, vcores_per_executor: Some(1), datastores };
    let cluster = EmbeddedCluster::start(options).await.unwrap();
    let functions = sluice_engine::client_functions();
    let ctx = cluster.connect(&functions).await.unwrap();
    (cluster, ctx, functions)
}

/// `f1, ..., fN`.
pub fn columns(n: usize) -> String {
    (1..=n).map(|c| format!("f{c}")).collect::<Vec<_>>().join(", ")
}

/// The error of a statement that must fail, at planning or at execution.
pub async fn error_of(ctx: &SessionContext, sql: &str) -> String {
    match ctx.sql(sql).await {
        Err(e) => e.to_string(),
        Ok(df) => match df.collect().await {
            Err(e) => e.to_string(),
            Ok(batches) => panic!("expected `{sql}` to fail, it returned {} batches", batches.len()),
        },
    }
}
