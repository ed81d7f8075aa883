//! One storage suite, run on every backend: a local directory and Azure Blob on the Azurite
//! emulator (installed and started by `scripts/azurite.sh` when it is not running). Data is
//! written by the executors with `COPY ... TO`, listed by the client, read and scored back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::ParquetReadOptions;
use sluice_engine::{Datastore, WorkspaceConfig};

use common::*;

/// Starts Azurite if needed and creates a fresh container; returns its name.
fn azurite_container() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("t{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/azurite.sh");
    let status = std::process::Command::new("bash").arg(script).args(["container", &name]).status().unwrap();
    assert!(status.success(), "scripts/azurite.sh could not start Azurite or create container {name}");
    name
}

fn workspace(toml: &str) -> Vec<Datastore> {
    Datastore::open_all(&WorkspaceConfig::parse(toml, "test workspace").unwrap()).unwrap()
}

/// (backend name, base URL, datastores, keep-alive for a temp dir)
fn backends() -> Vec<(&'static str, String, Vec<Datastore>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = format!("file://{}", dir.path().display());
    let container = azurite_container();
    let az = format!("az://{container}/lake");
    let ws = workspace(&format!("[datastores.lake]\nurl = \"{az}\"\nemulator = true\n"));
    vec![("local", local, Vec::new(), Some(dir)), ("azurite", az, ws, None)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_read_and_score_on_every_backend() {
    let (inputs, expected) = scorer_fixture();
    let source = tempfile::tempdir().unwrap();
    write_features(&source.path().join("features"), &inputs, 4, None);
    for (backend, base, datastores, _keep) in backends() {
        let (cluster, ctx, _) = cluster_with(datastores).await;
        ctx.register_parquet("src", source.path().join("features").to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        // Executors write the files to the backend.
        ctx.sql(&format!("COPY (SELECT * FROM src) TO '{base}/features/' STORED AS PARQUET"))
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"))
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{backend}: COPY failed: {e}"));
        // The client lists them; executors read and score them.
        ctx.register_parquet("t", &format!("{base}/features/"), ParquetReadOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
        let sql = format!(
            "SELECT COUNT(*), SUM(id), SUM(CAST(predict('{}', {}) AS DOUBLE)) FROM t",
            fixture("scorer_16.pt"),
            columns(16)
        );
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap_or_else(|e| panic!("{backend}: {e}"));
        let b = &batches[0];
        assert_eq!(b.column(0).as_primitive::<Int64Type>().value(0), 1000, "{backend}");
        assert_eq!(b.column(1).as_primitive::<Int64Type>().value(0), (0..1000).sum::<i64>(), "{backend}");
        let want: f64 = expected.iter().map(|v| f64::from(*v)).sum();
        let got = b.column(2).as_primitive::<Float64Type>().value(0);
        assert!((got - want).abs() < 1e-3, "{backend}: score sum {got} vs {want}");
        let scored: u64 = cluster.executors().iter().map(|e| e.predict.rows()).sum();
        assert_eq!(scored, 1000, "{backend}: rows scored on executors");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_and_missing_containers_fail_clearly_without_the_secret() {
    let container = azurite_container();
    // A well-formed key that is not the emulator's: every request is refused.
    let wrong_key = "c2x1aWNlLXdyb25nLWtleS1mb3ItdGVzdGluZy1vbmx5LTAxMjM0NTY3ODk=";
    // SAFETY: a variable unique to this test, set before anything reads it.
    unsafe { std::env::set_var("SLUICE_TEST_WRONG_AZ_KEY", wrong_key) };
    let ws = workspace(&format!(
        "[datastores.bad]\nurl = \"az://{container}/x\"\nemulator = true\naccount_key = {{ env = \"SLUICE_TEST_WRONG_AZ_KEY\" }}\n\
         [datastores.missing]\nurl = \"az://no-such-container-{container}/x\"\nemulator = true\n"
    ));
    let (_cluster, ctx, _) = cluster_with(ws.clone()).await;

    let e = match ctx.register_parquet("bad", &format!("az://{container}/x/t/"), ParquetReadOptions::default()).await {
        Err(err) => err.to_string(),
        Ok(()) => error_of(&ctx, "SELECT * FROM bad").await,
    };
    assert!(!e.contains(wrong_key), "the key leaked into the error: {e}");
    assert!(e.contains("403") || e.to_lowercase().contains("authoriz") || e.contains("Authentication"), "{e}");

    // Assets in that datastore fail the same way: the asset and store named, the key never shown.
    let ws_bad = ws.iter().filter(|d| d.name == "bad").cloned().collect::<Vec<_>>();
    let lake = sluice_engine::Lake::open("bad", &ws_bad).unwrap();
    let e = lake.list().await.unwrap_err().to_string();
    assert!(!e.contains(wrong_key) && e.contains("cannot list assets in az://"), "{e}");
    let df = ctx.sql("SELECT 1 AS id").await.unwrap();
    let e = sluice_engine::assets::write_asset(&lake, "a", df, &Default::default()).await.unwrap_err().to_string();
    assert!(!e.contains(wrong_key) && e.contains("writing asset 'a' failed"), "{e}");

    let e = match ctx
        .register_parquet("m", &format!("az://no-such-container-{container}/x/t/"), ParquetReadOptions::default())
        .await
    {
        Err(err) => err.to_string(),
        Ok(()) => error_of(&ctx, "SELECT * FROM m").await,
    };
    assert!(e.contains("ContainerNotFound") || e.contains("does not exist") || e.contains("404"), "{e}");
    let missing = ws.iter().filter(|d| d.name == "missing").cloned().collect::<Vec<_>>();
    let lake = sluice_engine::Lake::open("missing", &missing).unwrap();
    let df = ctx.sql("SELECT 1 AS id").await.unwrap();
    let e = sluice_engine::assets::write_asset(&lake, "a", df, &Default::default()).await.unwrap_err().to_string();
    assert!(e.contains("ContainerNotFound") || e.contains("does not exist") || e.contains("404"), "{e}");
}
