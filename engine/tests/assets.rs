//! Data assets on every backend (a local directory and Azure Blob on Azurite): versions written
//! by the executors and committed once, read back by version and by tag, schema evolution,
//! partitioning, and scoring an asset version on the executors.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, Int64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use sluice_engine::assets::{WriteOptions, register, write_asset};
use sluice_engine::{Datastore, Lake, WorkspaceConfig, WriteMode};

use common::*;

fn azurite_container() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!("a{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/azurite.sh");
    let status = std::process::Command::new("bash").arg(script).args(["container", &name]).status().unwrap();
    assert!(status.success(), "scripts/azurite.sh could not start Azurite or create container {name}");
    name
}

/// (backend, assets location, datastores, keep-alive for a temp dir)
fn backends() -> Vec<(&'static str, String, Vec<Datastore>, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let local = format!("file://{}/assets", dir.path().display());
    let container = azurite_container();
    let toml = format!("[datastores.lake]\nurl = \"az://{container}/lake\"\nemulator = true\n");
    let ws = Datastore::open_all(&WorkspaceConfig::parse(&toml, "test").unwrap()).unwrap();
    vec![("local", local, Vec::new(), Some(dir)), ("azurite", format!("az://{container}/lake/assets"), ws, None)]
}

async fn ints(ctx: &SessionContext, sql: &str) -> Vec<i64> {
    let batches = ctx
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let b = &batches[0];
    (0..b.num_columns()).map(|c| b.column(c).as_primitive::<Int64Type>().value(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_tags_time_travel_and_evolution_on_every_backend() {
    let (inputs, expected) = scorer_fixture();
    let source = tempfile::tempdir().unwrap();
    write_features(&source.path().join("features"), &inputs, 4, None);
    for (backend, location, datastores, _keep) in backends() {
        let (cluster, ctx, _) = cluster_with(datastores.clone()).await;
        let lake = Lake::open(&location, &datastores).unwrap();
        register(&ctx, &lake).unwrap();
        ctx.register_parquet("src", source.path().join("features").to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
        let write = |sql: &'static str, mode: WriteMode| {
            let (ctx, lake) = (ctx.clone(), lake.clone());
            async move {
                let df = ctx.sql(sql).await.unwrap();
                write_asset(&lake, "features", df, &WriteOptions { mode, ..Default::default() }).await
            }
        };

        let v0 = write("SELECT * FROM src WHERE id < 600", WriteMode::Append).await.unwrap();
        assert_eq!((v0.version, v0.rows), (0, 600), "{backend}");
        assert!(v0.inputs.iter().any(|i| i.contains("features")), "{backend}: lineage inputs {:?}", v0.inputs);
        let v1 = write("SELECT * FROM src WHERE id >= 600", WriteMode::Append).await.unwrap();
        assert_eq!((v1.version, v1.rows), (1, 400), "{backend}");

        // Latest, a version, a tag; quoted and unquoted.
        assert_eq!(
            ints(&ctx, "SELECT COUNT(*), SUM(id) FROM features").await,
            [1000, (0..1000).sum::<i64>()],
            "{backend}"
        );
        assert_eq!(ints(&ctx, "SELECT COUNT(*), SUM(id) FROM \"features@0\"").await, [600, (0..600).sum::<i64>()]);
        assert_eq!(lake.tag("features", "first", Some(0)).await.unwrap(), 0);
        assert_eq!(ints(&ctx, "SELECT COUNT(*) FROM features@first").await, [600], "{backend}");
        let e = error_of(&ctx, "SELECT * FROM features@nope").await;
        assert!(e.contains("has no tag 'nope'") && e.contains("first"), "{backend}: {e}");
        let e = error_of(&ctx, "SELECT * FROM features@9").await;
        assert!(e.contains("version 9 does not exist"), "{backend}: {e}");

        // Scoring a pinned version runs on the executors.
        let sql = format!(
            "SELECT SUM(CAST(predict('{}', {}) AS DOUBLE)) FROM features@1",
            fixture("scorer_16.pt"),
            columns(16)
        );
        let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap_or_else(|e| panic!("{backend}: {e}"));
        let got = batches[0].column(0).as_primitive::<Float64Type>().value(0);
        let want: f64 = expected.iter().map(|v| f64::from(*v)).sum();
        assert!((got - want).abs() < 1e-3, "{backend}: score sum {got} vs {want}");
        let scored: u64 = cluster.executors().iter().map(|e| e.predict.rows()).sum();
        assert_eq!(scored, 1000, "{backend}: rows scored on executors");

        // Overwrite keeps history; a new nullable column is allowed.
        let v2 = write("SELECT id, f1 FROM src WHERE id < 10", WriteMode::Overwrite).await.unwrap();
        assert_eq!(v2.version, 2);
        let v3 = write("SELECT id, f1, CAST(id AS VARCHAR) AS label FROM src WHERE id < 5", WriteMode::Append)
            .await
            .unwrap();
        assert_eq!(v3.version, 3);
        assert_eq!(ints(&ctx, "SELECT COUNT(*), COUNT(label), COUNT(f2) FROM features").await, [15, 5, 0], "{backend}");
        assert_eq!(
            ints(&ctx, "SELECT COUNT(*) FROM features@1").await,
            [1000],
            "{backend}: time travel after overwrite"
        );

        // A type change is refused, naming the column and both types; nothing is committed.
        let e = write("SELECT CAST(id AS VARCHAR) AS id FROM src", WriteMode::Append).await.unwrap_err().to_string();
        assert!(e.contains("column 'id' is long in the asset but string in the new data"), "{backend}: {e}");
        let history = lake.history("features", None).await.unwrap();
        assert_eq!(history.len(), 4, "{backend}: {history:?}");
        assert_eq!(history[0].version, 3);
        assert_eq!(history[0].lineage.as_ref().unwrap()["rows"], 5);
        assert_eq!(history[1].lineage.as_ref().unwrap()["mode"], "overwrite");
        // The refused write's files are unreferenced; vacuum deletes them and keeps every version readable.
        assert!(!lake.unreferenced_files("features").await.unwrap().is_empty(), "{backend}");
        let report = lake.vacuum("features", std::time::Duration::ZERO, false).await.unwrap();
        assert!(report.files.iter().all(|f| f.contains("run-")), "{backend}: {report:?}");
        assert_eq!(ints(&ctx, "SELECT COUNT(*) FROM features@3").await, [15], "{backend}");

        // Partitioned writes: one folder per value, values read back from the log.
        let df = ctx.sql("SELECT id, f1, id % 3 AS bucket FROM src").await.unwrap();
        let options = WriteOptions { partition_by: vec!["bucket".into()], ..Default::default() };
        let p = write_asset(&lake, "parts", df, &options).await.unwrap();
        assert_eq!(p.rows, 1000);
        let version = lake.resolve(&sluice_engine::AssetRef::parse("parts").unwrap()).await.unwrap();
        assert!(version.files.iter().all(|f| f.path.contains("bucket=")), "{backend}: {:?}", version.files);
        assert_eq!(version.partition_columns, ["bucket"]);
        assert_eq!(
            ints(&ctx, "SELECT COUNT(*), SUM(bucket) FROM parts WHERE bucket = 2").await,
            [333, 666],
            "{backend}"
        );
        let names: Vec<_> = lake.list().await.unwrap().into_iter().map(|a| (a.name, a.version)).collect();
        // Vacuum is itself recorded (Delta's VACUUM START / VACUUM END versions), data unchanged.
        assert_eq!(names, [("features".to_string(), 5), ("parts".to_string(), 0)], "{backend}");
        assert_eq!(lake.history("features", Some(1)).await.unwrap()[0].operation, "VACUUM END");
    }
}

/// One small Parquet file with ids `from..to`, put at `path` in the lake's store.
async fn put_ids(lake: &Lake, path: &str, from: i64, to: i64) -> sluice_lake::delta::DataFile {
    use std::sync::Arc;
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "id",
        arrow::datatypes::DataType::Int64,
        true,
    )]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(arrow::array::Int64Array::from_iter_values(from..to))],
    )
    .unwrap();
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let size = bytes.len() as u64;
    let location = object_store::path::Path::from(path);
    object_store::ObjectStoreExt::put(&lake.store(), &location, bytes.into()).await.unwrap();
    sluice_lake::delta::DataFile {
        path: location.to_string(),
        size,
        partition_values: Default::default(),
        num_records: Some((to - from) as u64),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_are_all_kept_on_every_backend() {
    use sluice_lake::delta::NewFiles;
    for (backend, location, datastores, _keep) in backends() {
        let lake = Lake::open(&location, &datastores).unwrap();
        let table = lake.store_path(&lake.asset_url("race").unwrap()).unwrap();
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
            "id",
            arrow::datatypes::DataType::Int64,
            true,
        )]));
        // Six writers commit at once, the first ones racing to create the asset.
        let mut tasks = Vec::new();
        for w in 0..6i64 {
            let file = put_ids(&lake, &format!("{table}/run-w{w}/part-0.parquet"), w * 100, w * 100 + 100).await;
            let new = NewFiles { schema: schema.clone(), partition_by: Vec::new(), files: vec![file] };
            let lake = lake.clone();
            tasks.push(tokio::spawn(async move {
                lake.commit("race", WriteMode::Append, &new, serde_json::json!({ "writer": w })).await
            }));
        }
        let mut versions = Vec::new();
        for t in tasks {
            versions.push(t.await.unwrap().unwrap_or_else(|e| panic!("{backend}: {e}")));
        }
        versions.sort();
        assert_eq!(versions, [0, 1, 2, 3, 4, 5], "{backend}: every writer got its own version");
        let latest = lake.resolve(&sluice_engine::AssetRef::parse("race").unwrap()).await.unwrap();
        assert_eq!((latest.files.len(), latest.rows()), (6, 600), "{backend}: no commit lost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_options_shape_the_files() {
    let (_cluster, ctx, _) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(dir.path().to_str().unwrap(), &[]).unwrap();
    // Rows arrive in descending order; the asset keeps them sorted ascending, in small snappy files.
    let df = ctx
        .sql("SELECT 200000 - value AS id, value * 1.5 AS x FROM (SELECT unnest(range(0, 200000)) AS value)")
        .await
        .unwrap();
    let options = WriteOptions {
        sort_by: vec!["id".into()],
        target_file_bytes: Some(256 * 1024),
        compression: "snappy".into(),
        ..Default::default()
    };
    let summary = write_asset(&lake, "opts", df, &options).await.unwrap();
    assert_eq!(summary.rows, 200_000);
    assert!(summary.files >= 3, "a 256 KiB target gives several files, got {}", summary.files);
    let version = lake.resolve(&sluice_engine::AssetRef::parse("opts").unwrap()).await.unwrap();
    let mut firsts = Vec::new();
    for file in &version.files {
        let f = std::fs::File::open(format!("/{}", file.path)).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
        let codec = reader.metadata().row_group(0).column(0).compression();
        assert_eq!(codec, parquet::basic::Compression::SNAPPY, "{}", file.path);
        let ids: Vec<i64> = reader
            .build()
            .unwrap()
            .flat_map(|b| b.unwrap().column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{}: rows not sorted", file.path);
        firsts.push(ids[0]);
    }
    assert_eq!(firsts.iter().min(), Some(&1));

    // Bad options are named.
    let df = ctx.sql("SELECT 1 AS id").await.unwrap();
    let bad = WriteOptions { sort_by: vec!["nope".into()], ..Default::default() };
    let e = write_asset(&lake, "opts", df, &bad).await.unwrap_err().to_string();
    assert!(e.contains("sort column 'nope' is not a column of the query (columns: id)"), "{e}");
    let df = ctx.sql("SELECT 1 AS id").await.unwrap();
    let bad = WriteOptions { partition_by: vec!["day".into()], ..Default::default() };
    let e = write_asset(&lake, "opts", df, &bad).await.unwrap_err().to_string();
    assert!(e.contains("partition column 'day' is not a column"), "{e}");
    // Partition columns cannot change between versions.
    let df = ctx.sql("SELECT 1 AS id, 2.0 AS x").await.unwrap();
    let other = WriteOptions { partition_by: vec!["id".into()], ..Default::default() };
    let e = write_asset(&lake, "opts", df, &other).await.unwrap_err().to_string();
    assert!(e.contains("partitioned by [] but this write by [id]"), "{e}");
}
