//! MariaDB (MySQL protocol) as a source on the cluster, against the real server on loopback
//! (started by `scripts/mariadb.sh` when it is not running; endpoint from SLUICE_TEST_MYSQL_HOST
//! / _PORT): every mapped type and NULLs, a million rows split by the primary key, an unmapped
//! type, and a server that ends the reads mid-way.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type, TimeUnit};
use mysql_async::prelude::Queryable;
use sluice_connectors::mysql::{MysqlConnection, connect, plan};
use sluice_connectors::relational::TableRead;
use sluice_engine::sources::SourcePlan;
use sluice_engine::sources::SourceTable;

use common::*;

/// A database unique to one test, dropped by the guard.
struct Db(MysqlConnection);

impl Db {
    async fn new(sql: &[&str]) -> Self {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/mariadb.sh");
        assert!(std::process::Command::new("bash").arg(script).status().unwrap().success(), "MariaDB is not available");
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!("sluice_t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut conn = MysqlConnection {
            host: std::env::var("SLUICE_TEST_MYSQL_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
            port: std::env::var("SLUICE_TEST_MYSQL_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3306),
            user: "root".into(),
            password: None,
            database: "test".into(),
            tls: None,
        };
        let mut c = connect("setup", &conn).await.unwrap();
        c.query_drop(format!("DROP DATABASE IF EXISTS {name}")).await.unwrap();
        c.query_drop(format!("CREATE DATABASE {name}")).await.unwrap();
        c.query_drop(format!("USE {name}")).await.unwrap();
        for statement in sql {
            c.query_drop(*statement).await.unwrap();
        }
        conn.database = name;
        Self(conn)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::process::Command::new("mysql")
            .args(["-h", &self.0.host, "-u", "root", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.0.database))
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mapped_type_and_nulls_read_on_the_executors() {
    let db = Db::new(&[
        "CREATE TABLE types (id INT PRIMARY KEY, ti TINYINT, tu TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT, \
         bi BIGINT, bu BIGINT UNSIGNED, f FLOAT, d DOUBLE, n DECIMAL(12,3), b BIT(1), c CHAR(3), v VARCHAR(20), \
         t TEXT, e ENUM('a','b'), j JSON, vb VARBINARY(8), bl BLOB, dt DATE, dtt DATETIME(6), ts TIMESTAMP(6) NULL, \
         y YEAR)",
        "INSERT INTO types VALUES (1, -7, 200, -300, 70000, 9000000000, 18446744073709551615, 1.5, 2.25, \
         123456789.125, b'1', 'abc', 'héllo', 'long text', 'b', '{\"k\": [1, 2]}', x'00ff10', x'0102', \
         '2026-11-24', '2026-11-24 10:11:12.345678', '2026-11-24 10:11:12.5', 2026)",
        "INSERT INTO types (id) VALUES (2)",
    ])
    .await;
    let (_cluster, ctx, _) = cluster().await;
    let read = TableRead { table: Some("types".into()), partitions: 2, ..Default::default() };
    let planned = plan("shop", &db.0, &read, None).await.unwrap();
    let schema = planned.schema();
    let ty = |c: &str| schema.field_with_name(c).unwrap().data_type().clone();
    assert_eq!(ty("n"), DataType::Decimal128(12, 3));
    assert_eq!(ty("bu"), DataType::Decimal128(20, 0));
    assert_eq!(ty("tu"), DataType::Int16);
    assert_eq!(ty("b"), DataType::Boolean);
    assert_eq!(ty("vb"), DataType::Binary);
    assert_eq!(ty("ts"), DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
    assert_eq!(planned.partitions.len(), 2, "split by the integer primary key");
    ctx.register_table("types", Arc::new(SourceTable::new(SourcePlan::Mysql(planned), None))).unwrap();
    let batches = ctx.sql("SELECT * FROM types ORDER BY id").await.unwrap().collect().await.unwrap();
    let b = arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(b.num_rows(), 2);
    let text = |c: &str| {
        let col = b.column_by_name(c).unwrap();
        (col.is_valid(0).then(|| arrow::util::display::array_value_to_string(col, 0).unwrap()), col.is_null(1))
    };
    let want = [
        ("ti", "-7"),
        ("tu", "200"),
        ("si", "-300"),
        ("mi", "70000"),
        ("bi", "9000000000"),
        ("bu", "18446744073709551615"),
        ("f", "1.5"),
        ("d", "2.25"),
        ("n", "123456789.125"),
        ("b", "true"),
        ("c", "abc"),
        ("v", "héllo"),
        ("t", "long text"),
        ("e", "b"),
        ("vb", "00ff10"),
        ("bl", "0102"),
        ("dt", "2026-11-24"),
        ("dtt", "2026-11-24T10:11:12.345678"),
        ("ts", "2026-11-24T10:11:12.500Z"),
        ("y", "2026"),
    ];
    for (column, value) in want {
        assert_eq!(text(column), (Some(value.to_string()), true), "column {column}");
    }
    assert!(text("j").0.unwrap().contains("\"k\""));

    // Columns of types Sluice does not map fail only the queries that use them, all of them
    // named at once.
    let mut c = connect("t", &db.0).await.unwrap();
    c.query_drop("CREATE TABLE odd (id INT, at TIME, spot POINT)").await.unwrap();
    c.query_drop("INSERT INTO odd VALUES (1, '10:00:00', POINT(1, 2)), (2, '11:00:00', POINT(3, 4))").await.unwrap();
    let read = TableRead { table: Some("odd".into()), ..Default::default() };
    let planned = plan("shop", &db.0, &read, None).await.unwrap();
    ctx.register_table("odd", Arc::new(SourceTable::new(SourcePlan::Mysql(planned), None))).unwrap();
    let ids = ctx.sql("SELECT SUM(id) FROM odd").await.unwrap().collect().await.unwrap();
    assert_eq!(arrow::util::display::array_value_to_string(ids[0].column(0), 0).unwrap(), "3");
    let e = error_of(&ctx, "SELECT * FROM odd").await;
    assert!(
        e.contains("odd columns 'at' (time), 'spot' (geometry) have a type Sluice does not map")
            && e.contains("CAST(`at` AS CHAR) AS `at`"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_rows_split_by_the_primary_key() {
    let db = Db::new(&[
        "CREATE TABLE big (id BIGINT PRIMARY KEY, k INT) ENGINE=InnoDB",
        "INSERT INTO big SELECT seq, seq % 97 FROM seq_1_to_1000000",
    ])
    .await;
    let (_cluster, ctx, _) = cluster().await;
    let read = TableRead { table: Some("big".into()), partitions: 4, ..Default::default() };
    let planned = plan("shop", &db.0, &read, None).await.unwrap();
    assert_eq!(planned.partitions.len(), 4);
    ctx.register_table("big", Arc::new(SourceTable::new(SourcePlan::Mysql(planned), None))).unwrap();
    let batches =
        ctx.sql("SELECT COUNT(*), SUM(id), COUNT(DISTINCT id) FROM big").await.unwrap().collect().await.unwrap();
    let v: Vec<i64> = (0..3).map(|c| batches[0].column(c).as_primitive::<Int64Type>().value(0)).collect();
    assert_eq!(v, [1_000_000, 500_000_500_000, 1_000_000], "every row exactly once");

    // Conditions on numbers go down to MySQL: the source sends only the rows they select.
    let read = TableRead { table: Some("big".into()), partitions: 4, ..Default::default() };
    let planned = plan("shop", &db.0, &read, None).await.unwrap();
    let (key, progress) = sluice_engine::sources::progress::track();
    ctx.deregister_table("big").unwrap();
    ctx.register_table("big", Arc::new(SourceTable::new(SourcePlan::Mysql(planned), None).with_progress(key))).unwrap();
    let batches = ctx.sql("SELECT COUNT(*) FROM big WHERE id > 999000 AND k IN (1, 2)").await.unwrap().collect().await.unwrap();
    let expected = (999_001..=1_000_000).filter(|i| i % 97 == 1 || i % 97 == 2).count();
    assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), expected as i64);
    assert_eq!(progress.records(), expected as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_goes_away_mid_read_fails_clearly_and_commits_nothing() {
    let db = Db::new(&[
        "CREATE TABLE slow (id BIGINT PRIMARY KEY, pad VARCHAR(300))",
        "INSERT INTO slow SELECT seq, REPEAT('x', 250) FROM seq_1_to_1500000",
    ])
    .await;
    let (_cluster, ctx, _) = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let lake = sluice_engine::Lake::open(dir.path().to_str().unwrap(), &[]).unwrap();
    let read = TableRead { table: Some("slow".into()), partitions: 2, ..Default::default() };
    let planned = plan("shop", &db.0, &read, None).await.unwrap();
    ctx.register_table("slow", Arc::new(SourceTable::new(SourcePlan::Mysql(planned), None))).unwrap();
    let writer = {
        let (ctx, lake) = (ctx.clone(), lake.clone());
        tokio::spawn(async move {
            let df = ctx.sql("SELECT * FROM slow").await.unwrap();
            sluice_engine::assets::write_asset(&lake, "slow", df, &Default::default()).await
        })
    };
    let mut admin = connect("admin", &db.0).await.unwrap();
    let mut killed = 0;
    for _ in 0..200 {
        let ids: Vec<u64> = admin
            .query(format!(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{}' AND INFO LIKE 'SELECT%slow%' \
                 AND ID <> CONNECTION_ID()",
                db.0.database
            ))
            .await
            .unwrap();
        for id in &ids {
            let _ = admin.query_drop(format!("KILL {id}")).await;
        }
        killed += ids.len();
        if killed > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(killed > 0, "no read was seen running");
    let e = writer.await.unwrap().unwrap_err().to_string();
    assert!(e.contains("source 'shop'") && e.contains("slow") && e.contains("failed"), "{e}");
    assert!(!lake.exists("slow").await.unwrap());
}
