//! `sluice serve --flight`: Flight SQL queries with `predict` from an independent client (the
//! arrow-flight crate's `FlightSqlServiceClient`), prepared statements, GetTables listing the
//! assets, the Flight data plane (DoPut then DoGet, bulk ingest), and every refusal of the roles:
//! no token, a wrong password, a reader writing or submitting, an operator submitting or
//! granting. The server's output never shows a password or token. With a certificate and key
//! the endpoint speaks TLS only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetTables, CommandStatementIngest};
use arrow_flight::{Action, FlightClient, FlightDescriptor, FlightInfo};
use common::*;
use futures::TryStreamExt;
use tonic::transport::Channel;

const PASSWORD: &str = "reader-pass-4c1d";
const TOKEN: &str = "ds-token-93be0f7a";
const OPERATOR_PASSWORD: &str = "operator-pass-77";

const ACCESS: &str = r#"
[[users]]
name = "ana"
role = "reader"
password = { env = "TEST_ANA_PASSWORD" }

[[users]]
name = "dee"
role = "data_scientist"
token = { env = "TEST_DEE_TOKEN" }

[[users]]
name = "ops"
role = "operator"
password = { env = "TEST_OPS_PASSWORD" }
"#;

const EVENTS: &str = "SELECT value AS id, CAST(value % 10 AS FLOAT) AS a, CAST(value % 7 AS FLOAT) AS b, \
    CAST(value % 13 AS FLOAT) AS c FROM (SELECT unnest(range(0, 1000)) AS value)";

async fn channel(port: u16, server: &mut Child) -> Channel {
    connect(Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap(), server).await
}

async fn connect(endpoint: tonic::transport::Endpoint, server: &mut Child) -> Channel {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(channel) = endpoint.connect().await {
            // The port is bound before the cluster is up: wait for a real answer.
            let mut client = FlightSqlServiceClient::new(channel.clone());
            if client.handshake("ana", PASSWORD).await.is_ok() {
                return channel;
            }
        }
        assert!(server.0.try_wait().unwrap().is_none(), "sluice serve exited early");
        assert!(Instant::now() < deadline, "the Flight endpoint did not answer within 120 s");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Starts `sluice serve --flight` on a free port with the test's users; returns the process,
/// the port and the file its output goes to.
fn serve(dir: &std::path::Path, lake: &std::path::Path, extra: &[&str]) -> (Child, u16, std::path::PathBuf) {
    let access = dir.join("access.toml");
    std::fs::write(&access, ACCESS).unwrap();
    let port = free_port();
    let log = dir.join(format!("serve-{port}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let server = Child(
        sluice_at(lake)
            .env("SLUICE_LOG", "info")
            .env("TEST_ANA_PASSWORD", PASSWORD)
            .env("TEST_DEE_TOKEN", TOKEN)
            .env("TEST_OPS_PASSWORD", OPERATOR_PASSWORD)
            .args(["serve", "--flight", &format!("127.0.0.1:{port}"), "--access", access.to_str().unwrap(), "--executors", "1"])
            .args(extra)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    (server, port, log)
}

async fn fetch(client: &mut FlightSqlServiceClient<Channel>, info: FlightInfo) -> Vec<RecordBatch> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("an endpoint has a ticket");
        batches.extend(client.do_get(ticket).await.unwrap().try_collect::<Vec<_>>().await.unwrap());
    }
    batches
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

fn upload(first: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false), Field::new("label", DataType::Utf8, false)]));
    let ks: Vec<i64> = (first..first + n).collect();
    let labels: Vec<String> = ks.iter().map(|k| format!("row-{k}")).collect();
    RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(ks)), Arc::new(StringArray::from(labels))]).unwrap()
}

/// (k, label) pairs of batches, sorted.
fn pairs(batches: &[RecordBatch]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for b in batches {
        let k = b.column_by_name("k").unwrap().as_primitive::<Int64Type>();
        let label = b.column_by_name("label").unwrap().as_string::<i32>();
        out.extend((0..b.num_rows()).map(|i| (k.value(i), label.value(i).to_string())));
    }
    out.sort();
    out
}

/// An error's message with its gRPC code.
fn status_of(e: impl std::fmt::Display + std::fmt::Debug) -> String {
    format!("{e} {e:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flight_sql_queries_with_predict_and_roles_refuse_what_they_must() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let model = dir.path().join("linear.pt");
    linear_model(&model);
    run_at(&lake, &["asset", "write", "events", "--sql", EVENTS]);
    run_at(&lake, &["model", "register", "lin", model.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "production"]);
    let (mut server, port, log) = serve(dir.path(), &lake, &[]);
    let channel = channel(port, &mut server).await;

    // No credentials, then a wrong password: refused.
    let mut anonymous = FlightSqlServiceClient::new(channel.clone());
    let e = status_of(anonymous.execute("SELECT 1".into(), None).await.unwrap_err());
    assert!(e.contains("Unauthenticated") && e.contains("no credentials"), "{e}");
    let e = status_of(anonymous.handshake("ana", "not-the-password").await.unwrap_err());
    assert!(e.contains("Unauthenticated") || e.contains("wrong user name or password"), "{e}");
    let mut forged = FlightSqlServiceClient::new(channel.clone());
    forged.set_token("made-up-token".into());
    let e = status_of(forged.execute("SELECT 1".into(), None).await.unwrap_err());
    assert!(e.contains("unknown or expired token"), "{e}");

    // A reader queries with predict on a registered model: every score is the model's.
    let mut ana = FlightSqlServiceClient::new(channel.clone());
    ana.handshake("ana", PASSWORD).await.unwrap();
    let info = ana
        .execute("SELECT id, a, b, c, predict('lin@production', a, b, c) AS p FROM events".into(), None)
        .await
        .unwrap();
    let batches = fetch(&mut ana, info).await;
    assert_eq!(rows(&batches), 1000);
    let mut checked = 0;
    for b in &batches {
        let col = |name: &str| b.column_by_name(name).unwrap().as_primitive::<Float32Type>().clone();
        let (a, bb, c) = (col("a"), col("b"), col("c"));
        let p = b.column_by_name("p").unwrap();
        let p: &Float32Array = match p.data_type() {
            DataType::Float32 => p.as_primitive(),
            other => panic!("prediction type {other}"),
        };
        for i in 0..b.num_rows() {
            let want = 0.5 * a.value(i) - 2.0 * bb.value(i) + 0.25 * c.value(i) + 1.0;
            assert!((p.value(i) - want).abs() < 1e-5, "row {i}: {} != {want}", p.value(i));
            checked += 1;
        }
    }
    assert_eq!(checked, 1000);

    // A prepared statement with a parameter.
    let mut prepared = ana.prepare("SELECT COUNT(*) AS n FROM events WHERE id < $1".into(), None).await.unwrap();
    assert_eq!(prepared.parameter_schema().unwrap().fields().len(), 1);
    let param = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("$1", DataType::Int64, false)])),
        vec![Arc::new(Int64Array::from(vec![100]))],
    )
    .unwrap();
    prepared.set_parameters(param).unwrap();
    let info = prepared.execute().await.unwrap();
    let counted = fetch(&mut ana, info).await;
    assert_eq!(counted[0].column(0).as_primitive::<Int64Type>().value(0), 100);
    prepared.close().await.unwrap();

    // GetTables lists the assets, with their schemas.
    let info = ana
        .get_tables(CommandGetTables { include_schema: true, ..Default::default() })
        .await
        .unwrap();
    let tables = fetch(&mut ana, info).await;
    let names: Vec<String> = tables
        .iter()
        .flat_map(|b| {
            let names = b.column_by_name("table_name").unwrap().as_string::<i32>().clone();
            (0..names.len()).map(move |i| names.value(i).to_string()).collect::<Vec<_>>()
        })
        .collect();
    assert!(names.contains(&"events".to_string()), "{names:?}");
    let schema_bytes = tables[0].column_by_name("table_schema").unwrap().as_binary::<i32>().value(0).to_vec();
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(&schema_bytes).unwrap();
    assert_eq!(schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["id", "a", "b", "c"]);

    // A reader may neither submit a job nor write an asset; statements that change state are refused.
    let e = status_of(ana.do_action(Action::new("submit", "[job]\nname = \"x\"\n")).await.unwrap_err());
    assert!(e.contains("PermissionDenied") && e.contains("may not run or submit jobs"), "{e}");
    let e = status_of(
        ana.execute_ingest(
            CommandStatementIngest { table: "uploads".into(), ..Default::default() },
            futures::stream::iter([Ok(upload(0, 3))]),
        )
        .await
        .unwrap_err(),
    );
    assert!(e.contains("may not write data assets"), "{e}");
    let e = status_of(ana.execute("CREATE TABLE t AS SELECT 1".into(), None).await.unwrap_err());
    assert!(e.contains("only queries"), "{e}");
    let e = status_of(ana.do_action(Action::new("cancel", "some-run")).await.unwrap_err());
    assert!(e.contains("may not manage runs"), "{e}");

    // An operator may not submit either; a data scientist's submission is checked and parsed.
    let mut ops = FlightSqlServiceClient::new(channel.clone());
    ops.handshake("ops", OPERATOR_PASSWORD).await.unwrap();
    let e = status_of(ops.do_action(Action::new("submit", "")).await.unwrap_err());
    assert!(e.contains("PermissionDenied"), "{e}");
    let mut dee = FlightSqlServiceClient::new(channel.clone());
    dee.set_token(TOKEN.into());
    let e = status_of(dee.do_action(Action::new("submit", "[job]\nname = 1\n")).await.unwrap_err());
    assert!(e.contains("InvalidArgument") && e.contains("the submitted job"), "{e}");

    // The Flight data plane: DoPut three batches to a new asset (one commit), then DoGet it.
    let mut flight = FlightClient::new(channel.clone());
    flight.add_header("authorization", &format!("Bearer {TOKEN}")).unwrap();
    let sent = vec![upload(0, 500), upload(500, 250), upload(750, 1)];
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["uploads".into()])))
        .build(futures::stream::iter(sent.clone().into_iter().map(Ok)));
    let results: Vec<_> = flight.do_put(data).await.unwrap().try_collect().await.unwrap();
    let reply = String::from_utf8(results[0].app_metadata.to_vec()).unwrap();
    assert!(reply.contains("\"rows\":751"), "{reply}");
    let info = flight.get_flight_info(FlightDescriptor::new_path(vec!["uploads".into()])).await.unwrap();
    assert_eq!(info.total_records, 751);
    let ticket = info.endpoint[0].ticket.clone().unwrap();
    let got: Vec<RecordBatch> = flight.do_get(ticket).await.unwrap().try_collect().await.unwrap();
    assert_eq!(pairs(&got), pairs(&sent));

    // Flight SQL bulk ingest appends a second version; version 0 still reads as it was.
    let added = dee
        .execute_ingest(
            CommandStatementIngest { table: "uploads".into(), ..Default::default() },
            futures::stream::iter([Ok(upload(1000, 10))]),
        )
        .await
        .unwrap();
    assert_eq!(added, 10);
    let info = flight.get_flight_info(FlightDescriptor::new_path(vec!["uploads".into()])).await.unwrap();
    assert_eq!(info.total_records, 761);
    let info = flight.get_flight_info(FlightDescriptor::new_path(vec!["uploads@0".into()])).await.unwrap();
    let got: Vec<RecordBatch> = flight.do_get(info.endpoint[0].ticket.clone().unwrap()).await.unwrap().try_collect().await.unwrap();
    assert_eq!(pairs(&got), pairs(&sent));
    // And the reader sees the uploaded asset through SQL.
    let info = ana.execute("SELECT COUNT(*) FROM uploads".into(), None).await.unwrap();
    let n = fetch(&mut ana, info).await;
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 761);

    // Granting roles is the owner's; nobody here is one.
    let e = status_of(dee.do_action(Action::new("grant", "ana=owner")).await.unwrap_err());
    assert!(e.contains("PermissionDenied") && e.contains("may not grant roles"), "{e}");
    let e = status_of(ops.do_action(Action::new("grant", "ops=owner")).await.unwrap_err());
    assert!(e.contains("may not grant roles"), "{e}");
    let mut put = FlightClient::new(channel.clone());
    put.add_header("authorization", &format!("Bearer {}", ana.token().unwrap())).unwrap();
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["uploads".into()])))
        .build(futures::stream::iter([Ok(upload(5000, 1))]));
    let refused = match put.do_put(data).await {
        Ok(results) => results.try_collect::<Vec<_>>().await.map(|_| ()),
        Err(e) => Err(e),
    };
    let e = status_of(refused.unwrap_err());
    assert!(e.contains("may not write data assets"), "{e}");

    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("handshake") && logged.contains("user=ana") && logged.contains("refused"), "{logged}");
    for secret in [PASSWORD, TOKEN, OPERATOR_PASSWORD] {
        assert!(!logged.contains(secret), "the server's output shows a secret:\n{logged}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_the_endpoint_speaks_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    run_at(&lake, &["asset", "write", "events", "--sql", EVENTS]);
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let (mut server, port, _) =
        serve(dir.path(), &lake, &["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()]);

    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.pem()))
        .domain_name("localhost");
    let endpoint = Channel::from_shared(format!("https://127.0.0.1:{port}")).unwrap().tls_config(tls).unwrap();
    let channel = connect(endpoint, &mut server).await;
    let mut ana = FlightSqlServiceClient::new(channel);
    ana.handshake("ana", PASSWORD).await.unwrap();
    let info = ana.execute("SELECT COUNT(*) FROM events".into(), None).await.unwrap();
    let n = fetch(&mut ana, info).await;
    assert_eq!(n[0].column(0).as_primitive::<Int64Type>().value(0), 1000);

    // A plain-text client gets nothing from it.
    let plain = Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await;
    if let Ok(plain) = plain {
        let mut client = FlightSqlServiceClient::new(plain);
        assert!(client.handshake("ana", PASSWORD).await.is_err(), "a plain-text handshake succeeded");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adbc_client_queries_prepares_lists_and_ingests() {
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let model = dir.path().join("linear.pt");
    linear_model(&model);
    run_at(&lake, &["asset", "write", "events", "--sql", EVENTS]);
    let (mut server, port, log) = serve(dir.path(), &lake, &[]);
    channel(port, &mut server).await;

    // ADBC's Flight SQL driver (Go, through Python), as notebooks and BI tools use it.
    let out = std::process::Command::new("bash")
        .arg(root().join("scripts/adbc-client.sh"))
        .args([&format!("grpc://127.0.0.1:{port}"), "ana", PASSWORD, model.to_str().unwrap(), TOKEN])
        .output()
        .unwrap();
    let stdout = ok(out, "scripts/adbc-client.sh");
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let anonymous = seen["anonymous"].as_str().unwrap();
    assert!(anonymous.contains("UNAUTHENTICATED") && anonymous.contains("no credentials"), "{anonymous}");
    let rows = seen["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1000);
    for row in rows {
        let f = |k: &str| row[k].as_f64().unwrap();
        let want = 0.5 * f("a") - 2.0 * f("b") + 0.25 * f("c") + 1.0;
        assert!((f("p") - want).abs() < 1e-4, "{row}");
    }
    assert_eq!(seen["prepared"], 100);
    assert_eq!(seen["tables"]["events"], serde_json::json!(["id", "a", "b", "c"]));
    let refused = seen["reader_ingest"].as_str().unwrap();
    assert!(refused.contains("may not write data assets"), "{refused}");
    assert_eq!(seen["ingested"], 3);
    assert_eq!(seen["read_back"], serde_json::json!([[1, "x"], [2, "y"], [3, "z"]]));
    drop(server);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains(PASSWORD) && !logged.contains(TOKEN), "{logged}");
}
