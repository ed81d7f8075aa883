//! PostgreSQL as a source on the cluster, against the real server on loopback (started by
//! `scripts/postgres.sh` when it is not running; endpoint from SLUICE_TEST_PG_HOST / _PORT):
//! every mapped type and NULLs, partitioned reads by range and by pages, an unsupported type,
//! and a source that goes away in the middle of a read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int16Type, Int32Type, Int64Type, TimeUnit};
use sluice_connectors::postgres::{PostgresConnection, connect, plan};
use sluice_connectors::relational::TableRead;
use sluice_engine::sources::SourcePlan;
use sluice_engine::sources::SourceTable;

use common::*;

fn connection() -> PostgresConnection {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/postgres.sh");
    assert!(std::process::Command::new("bash").arg(script).status().unwrap().success(), "PostgreSQL is not available");
    PostgresConnection {
        host: std::env::var("SLUICE_TEST_PG_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
        port: std::env::var("SLUICE_TEST_PG_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(5432),
        user: "postgres".into(),
        password: None,
        database: "test".into(),
        connect_timeout_s: 10,
        tls: None,
    }
}

/// A fresh schema for one test, dropped by the guard.
struct Schema(String, PostgresConnection);

impl Schema {
    async fn new(sql: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sluice_t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let conn = connection();
        let client = connect("test", &conn).await.unwrap();
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}; SET search_path = {name}; {sql}"
            ))
            .await
            .unwrap();
        Self(name, conn)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args(["-h", &self.1.host, "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0))
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_and_nulls_read_on_the_executors() {
    let s = Schema::new(
        "CREATE TABLE types (id int4 PRIMARY KEY, i2 int2, i8 int8, f4 float4, f8 float8, n numeric(12,3), \
         t text, v varchar(20), c char(3), b bool, d date, ts timestamp, tz timestamptz, u uuid, j jsonb, js json, \
         by bytea, ai int4[], at text[], af float8[]); \
         INSERT INTO types VALUES (1, -7, 9000000000, 1.5, 2.25, 123456789.125, 'héllo', 'v', 'abc', true, \
         '2026-11-24', '2026-11-24 10:11:12.345678', '2026-11-24 10:11:12+02', \
         'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"k\": [1, 2]}', '{\"x\": 1}', '\\x00ff10', '{1,NULL,3}', \
         '{a,b}', '{0.5}'); \
         INSERT INTO types (id) VALUES (2);",
    )
    .await;
    let (_cluster, ctx, _) = cluster().await;
    let read = TableRead { table: Some(format!("{}.types", s.0)), partitions: 2, ..Default::default() };
    let planned = plan("crm", &s.1, &read, None).await.unwrap();
    let schema = planned.schema();
    let ty = |c: &str| schema.field_with_name(c).unwrap().data_type().clone();
    assert_eq!(ty("n"), DataType::Decimal128(12, 3));
    assert_eq!(ty("tz"), DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    assert_eq!(ty("ts"), DataType::Timestamp(TimeUnit::Microsecond, None));
    assert!(matches!(ty("ai"), DataType::List(_)));
    ctx.register_table("types", Arc::new(SourceTable::new(SourcePlan::Postgres(planned), None))).unwrap();

    let batches = ctx.sql("SELECT * FROM types ORDER BY id").await.unwrap().collect().await.unwrap();
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_rows(), 2);
    let text = |c: &str| {
        let col = b.column_by_name(c).unwrap();
        let shown = |i: usize| arrow::util::display::array_value_to_string(col, i).unwrap();
        (col.is_valid(0).then(|| shown(0)), col.is_null(1))
    };
    assert_eq!(b.column_by_name("i2").unwrap().as_primitive::<Int16Type>().value(0), -7);
    assert_eq!(b.column_by_name("i8").unwrap().as_primitive::<Int64Type>().value(0), 9_000_000_000);
    assert_eq!(b.column_by_name("f8").unwrap().as_primitive::<Float64Type>().value(0), 2.25);
    assert_eq!(text("n"), (Some("123456789.125".into()), true));
    assert_eq!(text("t"), (Some("héllo".into()), true));
    assert_eq!(text("c"), (Some("abc".into()), true));
    assert_eq!(text("b"), (Some("true".into()), true));
    assert_eq!(text("d"), (Some("2026-11-24".into()), true));
    assert_eq!(text("ts"), (Some("2026-11-24T10:11:12.345678".into()), true));
    assert_eq!(text("tz"), (Some("2026-11-24T08:11:12Z".into()), true));
    assert_eq!(text("v"), (Some("v".into()), true));
    assert_eq!(text("u"), (Some("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11".into()), true));
    assert_eq!(text("j"), (Some("{\"k\":[1,2]}".into()), true));
    assert_eq!(text("js"), (Some("{\"x\":1}".into()), true));
    assert_eq!(text("by"), (Some("00ff10".into()), true));
    assert_eq!(text("ai"), (Some("[1, , 3]".into()), true));
    assert_eq!(text("at"), (Some("[a, b]".into()), true));
    assert_eq!(text("af"), (Some("[0.5]".into()), true));
    assert_eq!(text("f4"), (Some("1.5".into()), true));
    assert_eq!(b.column_by_name("id").unwrap().as_primitive::<Int32Type>().values(), &[1, 2]);

    // Only the columns a query needs are read: a NaN numeric (no Decimal128 form) fails the
    // query that reads it, naming the column and row, and not the one that does not.
    let client = connect("test", &s.1).await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE {0}.nan (id int, n numeric(10,2)); INSERT INTO {0}.nan VALUES (1, 1.5), (2, 'NaN')",
            s.0
        ))
        .await
        .unwrap();
    let read = TableRead { table: Some(format!("{}.nan", s.0)), partitions: 1, ..Default::default() };
    let planned = plan("crm", &s.1, &read, None).await.unwrap();
    ctx.register_table("nan", Arc::new(SourceTable::new(SourcePlan::Postgres(planned), None))).unwrap();
    let ids = ctx.sql("SELECT SUM(id) FROM nan").await.unwrap().collect().await.unwrap();
    assert_eq!(ids[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    let e = error_of(&ctx, "SELECT SUM(n) FROM nan").await;
    assert!(e.contains("column 'n'") && e.contains("row 2") && e.contains("NaN"), "{e}");

    // Columns of types Sluice does not map fail only the queries that use them, all of them
    // named at once with their table, type and what to do.
    let client = connect("test", &s.1).await.unwrap();
    client
        .batch_execute(&format!(
            "CREATE TABLE {0}.odd (id int, span interval, spot point); \
             INSERT INTO {0}.odd VALUES (1, '1 day', '(1,2)'), (2, '2 days', '(3,4)')",
            s.0
        ))
        .await
        .unwrap();
    let read = TableRead { table: Some(format!("{}.odd", s.0)), ..Default::default() };
    let planned = plan("crm", &s.1, &read, None).await.unwrap();
    ctx.register_table("odd", Arc::new(SourceTable::new(SourcePlan::Postgres(planned), None))).unwrap();
    let ids = ctx.sql("SELECT SUM(id) FROM odd").await.unwrap().collect().await.unwrap();
    assert_eq!(ids[0].column(0).as_primitive::<Int64Type>().value(0), 3);
    let e = error_of(&ctx, "SELECT * FROM odd").await;
    assert!(
        e.contains("odd columns 'span' (interval), 'spot' (point) have a type Sluice does not map")
            && e.matches("::text AS").count() == 2,
        "{e}"
    );
    let e = error_of(&ctx, "SELECT id FROM odd WHERE span IS NOT NULL").await;
    assert!(e.contains("odd column 'span' (interval) has a type") && !e.contains("spot"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_read_in_partitions_by_range_and_by_pages() {
    let s = Schema::new(
        "CREATE TABLE big AS SELECT g AS id, g % 97 AS k, md5(g::text) AS h FROM generate_series(1, 1000000) g; \
         ANALYZE big;",
    )
    .await;
    let (_cluster, ctx, _) = cluster().await;
    for (label, partition_column) in [("range", Some("id".to_string())), ("pages", None)] {
        let read = TableRead {
            table: Some(format!("{}.big", s.0)),
            partition_column: partition_column.clone(),
            partitions: 4,
            ..Default::default()
        };
        let planned = plan("db", &s.1, &read, None).await.unwrap();
        assert_eq!(planned.partitions.len(), 4, "{label}: {:?}", planned.partitions);
        ctx.deregister_table("big").unwrap();
        ctx.register_table("big", Arc::new(SourceTable::new(SourcePlan::Postgres(planned), None))).unwrap();
        let batches =
            ctx.sql("SELECT COUNT(*), SUM(id), COUNT(DISTINCT id) FROM big").await.unwrap().collect().await.unwrap();
        let v: Vec<i64> = (0..3).map(|c| batches[0].column(c).as_primitive::<Int64Type>().value(0)).collect();
        assert_eq!(v, [1_000_000, 500_000_500_000, 1_000_000], "{label}: every row exactly once");
    }

    // Conditions go down to PostgreSQL: the source sends only the rows they select.
    let read = TableRead { table: Some(format!("{}.big", s.0)), partition_column: Some("id".into()), partitions: 4, ..Default::default() };
    let planned = plan("db", &s.1, &read, None).await.unwrap();
    let count = |sql: String, planned: sluice_connectors::postgres::PostgresPlan| {
        let ctx = ctx.clone();
        async move {
            let (key, progress) = sluice_engine::sources::progress::track();
            ctx.deregister_table("big").unwrap();
            let table = SourceTable::new(SourcePlan::Postgres(planned), None).with_progress(key);
            ctx.register_table("big", Arc::new(table)).unwrap();
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            (batches[0].column(0).as_primitive::<Int64Type>().value(0), progress.records())
        }
    };
    let expected = (1..=1000).filter(|g| g % 97 == 5).count() as i64;
    let (n, read) = count("SELECT COUNT(*) FROM big WHERE id <= 1000 AND k = 5".into(), planned.clone()).await;
    assert_eq!((n, read), (expected, expected as u64), "both conditions run in PostgreSQL");
    // md5('5'): text equality is sent; text order is not (collations order text otherwise).
    let (n, read) = count("SELECT COUNT(*) FROM big WHERE h = 'e4da3b7fbbce2345d7772b0674a318d5'".into(), planned.clone()).await;
    assert_eq!((n, read), (1, 1));
    let (n, read) = count("SELECT COUNT(*) FROM big WHERE h < '1' AND id BETWEEN 10 AND 19".into(), planned.clone()).await;
    let client = connect("test", &s.1).await.unwrap();
    let want: i64 = client
        .query_one(&format!("SELECT COUNT(*) FROM {}.big WHERE h COLLATE \"C\" < '1' AND id BETWEEN 10 AND 19", s.0), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((n, read), (want, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_goes_away_mid_read_fails_clearly_and_commits_nothing() {
    let s =
        Schema::new("CREATE TABLE slow AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 3000000) g;")
            .await;
    let (_cluster, ctx, _) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let lake = sluice_engine::Lake::open(dir.path().to_str().unwrap(), &[]).unwrap();
    let read = TableRead { table: Some(format!("{}.slow", s.0)), partitions: 2, ..Default::default() };
    let planned = plan("db", &s.1, &read, None).await.unwrap();
    ctx.register_table("slow", Arc::new(SourceTable::new(SourcePlan::Postgres(planned), None))).unwrap();
    let writer = {
        let (ctx, lake) = (ctx.clone(), lake.clone());
        tokio::spawn(async move {
            let df = ctx.sql("SELECT * FROM slow").await.unwrap();
            sluice_engine::assets::write_asset(&lake, "slow", df, &Default::default()).await
        })
    };
    // Once the reads are running, the server ends them (as a restart or failover would).
    let admin = connect("test", &s.1).await.unwrap();
    let mut killed = 0;
    for _ in 0..200 {
        let rows = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sluice' \
                 AND state = 'active' AND query LIKE 'SELECT%slow%' AND pid <> pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        killed += rows.len();
        if killed > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(killed > 0, "no read was seen running");
    let e = writer.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("source 'db'") && e.contains("slow") && e.contains("failed"), "{e}");
    assert!(e.contains("no new version was committed"), "{e}");
    assert!(!lake.exists("slow").await.unwrap());
}
