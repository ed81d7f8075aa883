//! An embedded Ballista cluster (scheduler + 2 executors over gRPC/Flight on loopback) scoring
//! with `predict` on its executors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use arrow::array::AsArray;
use arrow::datatypes::{Float32Type, Int64Type};
use datafusion::prelude::ParquetReadOptions;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scores_on_the_executors_equal_python_torch() {
    let (inputs, expected) = scorer_fixture();
    let dir = tempfile::tempdir().unwrap();
    write_features(&dir.path().join("features"), &inputs, 4, None);
    let (cluster, ctx, client) = cluster().await;
    ctx.register_parquet("t", dir.path().join("features").to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();

    let sql = format!("SELECT id, predict('{}', {}) AS score FROM t ORDER BY id", fixture("scorer_16.pt"), columns(16));
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let mut scored = Vec::new();
    for b in &batches {
        let ids = b.column(0).as_primitive::<Int64Type>();
        let scores = b.column(1).as_primitive::<Float32Type>();
        scored.extend((0..b.num_rows()).map(|r| (ids.value(r), scores.value(r))));
    }
    assert_eq!(scored.len(), expected.len());
    for (id, score) in &scored {
        let want = expected[*id as usize];
        assert!((score - want).abs() <= 1e-6, "row {id}: {score} vs python {want}");
    }

    // Where did predict run? Each executor registered its own instance; the client's only planned.
    let per_executor: Vec<u64> = cluster.executors().iter().map(|e| e.predict.rows()).collect();
    assert_eq!(client.predict.stats().rows(), 0, "predict must not run on the client");
    assert_eq!(per_executor.iter().sum::<u64>(), 1000, "{per_executor:?}");
    assert!(per_executor.iter().all(|n| *n > 0), "both executors should have scored rows: {per_executor:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_run_before_predict() {
    let (inputs, _) = scorer_fixture();
    let dir = tempfile::tempdir().unwrap();
    write_features(&dir.path().join("features"), &inputs, 2, None);
    let (cluster, ctx, _) = cluster().await;
    ctx.register_parquet("t", dir.path().join("features").to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap();
    let sql =
        format!("SELECT id, predict('{}', {}) AS score FROM t WHERE id < 100", fixture("scorer_16.pt"), columns(16));
    let rows: usize = ctx.sql(&sql).await.unwrap().collect().await.unwrap().iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 100);
    // With filters pushed into the scan only the 100 surviving rows reach the model, not 1000.
    let scored: u64 = cluster.executors().iter().map(|e| e.predict.rows()).sum();
    assert_eq!(scored, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_calls_fail_clearly_and_the_cluster_stays_up() {
    let (inputs, expected) = scorer_fixture();
    let dir = tempfile::tempdir().unwrap();
    write_features(&dir.path().join("ok"), &inputs[..50], 1, None);
    write_features(&dir.path().join("nulls"), &inputs[..50], 1, Some((7, 3)));
    let (cluster, ctx, _) = cluster().await;
    ctx.register_parquet("t", dir.path().join("ok").to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    ctx.register_parquet("n", dir.path().join("nulls").to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let model = fixture("scorer_16.pt");

    let e = error_of(&ctx, &format!("SELECT predict('/missing/churn.pt', {}) FROM t", columns(16))).await;
    assert!(e.contains("cannot read model '/missing/churn.pt'"), "{e}");
    assert!(e.contains("Given 16 feature column(s): (f1 Float32"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{model}', f1, f2) FROM t")).await;
    assert!(e.contains(&format!("model '{model}'")), "{e}");
    assert!(e.contains("expects 16 numeric feature columns") && e.contains("was given 2"), "{e}");

    let e = error_of(&ctx, &format!("SELECT predict('{model}', {}, CAST(id AS VARCHAR)) FROM t", columns(15))).await;
    assert!(e.contains("not numeric") && e.contains("Utf8"), "{e}");

    // NULLs are only seen while scoring, on an executor: the task fails and the error reaches the client.
    let e = error_of(&ctx, &format!("SELECT predict('{model}', {}) FROM n", columns(16))).await;
    assert!(e.contains("feature 3 ('f3', Float32) is NULL at row"), "{e}");
    assert!(e.contains(&format!("model '{model}'")), "{e}");

    // The cluster is still up and scores correctly.
    let batches = ctx
        .sql(&format!("SELECT id, predict('{model}', {}) FROM t ORDER BY id", columns(16)))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let first = batches[0].column(1).as_primitive::<Float32Type>().value(0);
    assert!((first - expected[0]).abs() <= 1e-6);
    assert_eq!(cluster.executors().len(), 2);
}
