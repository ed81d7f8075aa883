//! `sluice stream` against the Kafka-protocol broker on loopback (started by `scripts/kafka.sh`):
//! 100k events in while the consumer is killed with SIGKILL five times and restarted; every event
//! has a result or a dead letter, each result equals the batch `predict` of the same row and model
//! version, duplicates carry their source offset, and the lake holds each event exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::{Float32Type, Int64Type};
use common::*;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const BROKERS: &str = "127.0.0.1:9092";
const PARTITIONS: i32 = 3;

fn brokers() -> String {
    std::env::var("SLUICE_TEST_KAFKA").unwrap_or_else(|_| BROKERS.to_string())
}

fn start_broker() {
    if std::env::var("SLUICE_TEST_KAFKA").is_err() {
        assert!(Command::new("bash").arg(root().join("scripts/kafka.sh")).status().unwrap().success());
    }
}

fn create_topics(names: &[&str]) {
    let admin: AdminClient<_> = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let topics: Vec<NewTopic> = names.iter().map(|n| NewTopic::new(n, PARTITIONS, TopicReplication::Fixed(1))).collect();
    let results = futures::executor::block_on(admin.create_topics(&topics, &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap();
    }
}

/// Every message of `topic` until it has been quiet for `quiet`: (key, payload, headers).
type Read = (Option<Vec<u8>>, Vec<u8>, HashMap<String, String>);
fn read_all(topic: &str, quiet: Duration) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("reader-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut out = Vec::new();
    let mut last = Instant::now();
    while last.elapsed() < quiet {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let headers = m
                .headers()
                .map(|h| {
                    h.iter().map(|h| (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())).collect()
                })
                .unwrap_or_default();
            out.push((m.key().map(<[u8]>::to_vec), m.payload().unwrap_or_default().to_vec(), headers));
            last = Instant::now();
        }
    }
    out
}

/// Id and prediction of every row of the Parquet files under `dir`.
fn predictions(dir: &Path) -> HashMap<i64, f32> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let file = std::fs::File::open(&path).unwrap();
                let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(file, 8192).unwrap();
                for batch in reader {
                    let batch = batch.unwrap();
                    let ids = batch.column_by_name("id").unwrap().as_primitive::<Int64Type>().clone();
                    let scores = batch.column_by_name("prediction").unwrap().as_primitive::<Float32Type>().clone();
                    for i in 0..batch.num_rows() {
                        out.insert(ids.value(i), scores.value(i));
                    }
                }
            }
        }
    }
    out
}

/// A test run: the broker up, topics `events-RUN`, `scores-RUN` and `dead-RUN`, and a lake with
/// the linear model registered as `lin@production`.
struct TestRun {
    run: String,
    events: String,
    scores: String,
    dir: tempfile::TempDir,
    lake: std::path::PathBuf,
}

fn test_run() -> TestRun {
    start_broker();
    let run = uuid::Uuid::new_v4().simple().to_string();
    let (events, scores) = (format!("events-{run}"), format!("scores-{run}"));
    create_topics(&[&events, &scores, &format!("dead-{run}")]);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let model = dir.path().join("linear.pt");
    linear_model(&model);
    run_at(&lake, &["model", "register", "lin", model.to_str().unwrap(), "--inputs", "a, b, c", "--alias", "production"]);
    TestRun { run, events, scores, dir, lake }
}

/// `sluice stream examples/kafka_score_events.toml` on the topics of test run `run`.
fn example(lake: &Path, run: &str, env: &[(&str, &str)]) -> std::process::Child {
    stream(lake, "examples/kafka_score_events.toml", run, env)
}

/// `sluice stream JOB` (the example's variables) on the topics of test run `run`.
fn stream(lake: &Path, job: &str, run: &str, env: &[(&str, &str)]) -> std::process::Child {
    sluice_at(lake)
        .args(["stream", job])
        .envs([
            ("STREAM_NAME", format!("score-{run}")),
            ("KAFKA_BROKERS", brokers()),
            ("EVENTS_TOPIC", format!("events-{run}")),
            ("SCORES_TOPIC", format!("scores-{run}")),
            ("DEAD_LETTER_TOPIC", format!("dead-{run}")),
            ("STREAM_STATUS_S", "1".into()),
            ("KAFKA_SESSION_TIMEOUT_MS", "6000".into()),
        ])
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigterm_lands_and_commits_what_was_processed() {
    let TestRun { run, events, scores, dir: _dir, lake } = test_run();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    for i in 0..1000 {
        let payload = format!("{{\"id\": {i}, \"a\": 1, \"b\": 2, \"c\": 3}}");
        producer.send(BaseRecord::to(&events).key(&i.to_string()).payload(&payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // Runs until stopped; lands only every 10 minutes, so only the shutdown lands.
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let env = [("STREAM_STOP_WHEN_IDLE_S", "0"), ("LAND_EVERY_S", "600"), ("SLUICE_STREAM_METRICS", metrics.as_str())];
    let child = example(&lake, &run, &env);
    let started = Instant::now();
    while read_all(&scores, Duration::from_secs(1)).len() < 1000 {
        assert!(started.elapsed() < Duration::from_secs(90), "no results");
    }
    // Its status is exported for Prometheus (refreshed every second).
    let exported = |name: &str| -> Option<f64> {
        let text = http_get(port, "/metrics");
        let prefix = format!("{name}{{job=\"score-{run}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
    };
    while exported("sluice_stream_results_total") != Some(1000.0) {
        assert!(started.elapsed() < Duration::from_secs(90), "metrics: {}", http_get(port, "/metrics"));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(exported("sluice_stream_events_total"), Some(1000.0));
    assert_eq!(exported("sluice_stream_dead_letters_total"), Some(0.0));
    assert!(exported("sluice_stream_latency_p99_ms").is_some() && exported("sluice_stream_lag_events").is_some());
    assert!(!lake.join("events_raw/_delta_log").exists(), "landed before the shutdown");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stopped      1000 events"), "{stdout}");
    assert_eq!(first_value(&run_at(&lake, &["sql", "SELECT COUNT(*) FROM events_raw"])), "1000");

    // Offsets were committed: a restart has nothing left to read.
    let out = example(&lake, &run, &[("STREAM_STOP_WHEN_IDLE_S", "10")]).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("stopped      0 events"), "{stdout}");
}

/// A JSON event is one JSON value and holds its required key (the example declares
/// `required = ["id"]`): an event with text after it, or without its id, or with a null id, is a
/// dead letter whose error says so; the others are scored and landed.
#[test]
fn json_events_with_text_after_them_or_without_their_key_are_dead_letters() {
    let TestRun { run, events, scores, dir: _dir, lake } = test_run();
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let mut payloads: Vec<String> = (0..20).map(|i| format!("{{\"id\": {i}, \"a\": 1, \"b\": 2, \"c\": 3}}")).collect();
    payloads[5].push_str(" }{");
    payloads[6] = r#"{"a": 1, "b": 2, "c": 3}"#.into();
    payloads[7] = r#"{"id": null, "a": 1, "b": 2, "c": 3}"#.into();
    for (i, payload) in payloads.iter().enumerate() {
        producer.send(BaseRecord::to(&events).key(&i.to_string()).payload(payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let out = example(&lake, &run, &[("STREAM_STOP_WHEN_IDLE_S", "5"), ("LAND_EVERY_S", "1")]).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let results = read_all(&scores, Duration::from_secs(2));
    assert_eq!(results.len(), 17, "{stdout}");
    let mut errors: Vec<(String, String)> = read_all(&format!("dead-{run}"), Duration::from_secs(2))
        .into_iter()
        .map(|(key, _, headers)| (String::from_utf8(key.unwrap()).unwrap(), headers["sluice.error"].clone()))
        .collect();
    errors.sort();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[0].0, "5");
    assert!(errors[0].1.contains("more than one JSON value on one record: `}{`"), "{errors:?}");
    assert!(errors[1].0 == "6" && errors[1].1.contains("'id' is missing, and every record must have it"), "{errors:?}");
    assert!(errors[2].0 == "7" && errors[2].1.contains("'id' is null, and every record must have it"), "{errors:?}");
    assert_eq!(first_value(&run_at(&lake, &["sql", "SELECT COUNT(*) || '/' || COUNT(DISTINCT id) FROM events_raw"])), "17/17");
}

#[test]
fn events_scored_through_crashes_with_none_lost_and_the_lake_exact() {
    let TestRun { run, events, scores, dir: _dir, lake } = test_run();
    let dead = format!("dead-{run}");

    // 100k events, produced over a few seconds while the consumer is killed and restarted.
    const N: i64 = 100_000;
    let poison: HashSet<i64> = [17, 50_001, 99_998].into();
    let unscorable: HashSet<i64> = [4242, 77_777].into();
    let producer_brokers = brokers();
    let events_topic = events.clone();
    let (poison_p, unscorable_p) = (poison.clone(), unscorable.clone());
    let producing = std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", producer_brokers).set("linger.ms", "5").create().unwrap();
        for i in 0..N {
            let payload = if poison_p.contains(&i) {
                format!("{{\"id\": {i}, \"a\": not json")
            } else if unscorable_p.contains(&i) {
                format!("{{\"id\": {i}, \"a\": null, \"b\": 1, \"c\": 2}}")
            } else {
                let (a, b, c) = ((i % 100) as f32 / 10.0, (i % 7) as f32, ((i * 13) % 1000) as f32 / 100.0);
                format!("{{\"id\": {i}, \"a\": {a}, \"b\": {b}, \"c\": {c}}}")
            };
            let key = i.to_string();
            loop {
                match producer.send(BaseRecord::to(&events_topic).key(&key).payload(&payload)) {
                    Ok(()) => break,
                    Err(_) => {
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            // About 30 s in all, so the kills land while events flow.
            if i % 100 == 0 {
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(30));
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    });

    let stream = || example(&lake, &run, &[("STREAM_MAX_ROWS", "500"), ("STREAM_STOP_WHEN_IDLE_S", "15"), ("LAND_EVERY_S", "1")]);
    // Five kills at points spread over the run (after the group join, while events flow).
    let mut seed = 0x9e37_79b9_u64;
    for kill in 0..5 {
        let mut child = Child(stream());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let wait = Duration::from_millis(9_000 + seed % 3_000);
        std::thread::sleep(wait);
        assert!(child.0.try_wait().unwrap().is_none(), "the stream ended before kill {kill}");
        child.0.kill().unwrap(); // SIGKILL
        child.0.wait().unwrap();
    }
    producing.join().unwrap();
    // The killed runs did work: events landed and results went out before the last run.
    assert!(lake.join("events_raw/_delta_log").exists(), "nothing landed before the kills");
    let before = read_all(&scores, Duration::from_secs(2)).len();
    assert!(before > 0, "no result before the last run");
    // The last run goes until it is idle.
    let out = stream().wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stopped"), "{stdout}");

    // Every event has a result or a dead letter; duplicates name their source offset and agree.
    let results = read_all(&scores, Duration::from_secs(3));
    let dead_letters = read_all(&dead, Duration::from_secs(2));
    let mut by_source: HashMap<(String, String), f64> = HashMap::new();
    let mut ids: HashMap<i64, f64> = HashMap::new();
    let mut duplicates = 0;
    for (key, payload, headers) in &results {
        let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let (id, score) = (value["id"].as_i64().unwrap(), value["score"].as_f64().unwrap());
        assert_eq!(key.as_deref(), Some(id.to_string().as_bytes()), "results are keyed like the events");
        let source = (headers["sluice.partition"].clone(), headers["sluice.offset"].clone());
        if let Some(before) = by_source.insert(source, score) {
            duplicates += 1;
            assert_eq!(before, score, "a repeated result differs from the first");
        }
        ids.insert(id, score);
    }
    let mut dead_ids = HashSet::new();
    for (key, _, headers) in &dead_letters {
        let id: i64 = String::from_utf8(key.clone().unwrap()).unwrap().parse().unwrap();
        assert!(headers.contains_key("sluice.error") && headers.contains_key("sluice.offset"), "{headers:?}");
        let stage = &headers["sluice.stage"];
        assert_eq!(stage, if poison.contains(&id) { "decode" } else { "score" }, "{id}: {headers:?}");
        dead_ids.insert(id);
    }
    assert_eq!(dead_ids, poison.union(&unscorable).copied().collect(), "dead letters");
    assert_eq!(ids.len() as i64, N - 5, "every scorable event has a result ({duplicates} duplicates)");
    eprintln!("{before} results before the last run, {} in all, {duplicates} repeated after kills", results.len());

    // The lake holds every decodable event once, whatever the restarts.
    let counts = first_value(&run_at(
        &lake,
        &["sql", "SELECT COUNT(*) || '/' || COUNT(DISTINCT CAST(_partition AS VARCHAR) || ':' || CAST(_offset AS VARCHAR)) || '/' || COUNT(DISTINCT id) FROM events_raw"],
    ));
    assert_eq!(counts, format!("{0}/{0}/{0}", N - 3));

    // Each result equals the batch predict of the same row and model version.
    run_at(&lake, &["score", "events_raw", "--model", "lin@production", "--key", "id", "--output", "batch", "--on-error", "null"]);
    let batch = predictions(&lake.join("batch"));
    let mut compared = 0;
    for (id, score) in &ids {
        let expected = batch[id];
        assert!((f64::from(expected) - score).abs() <= 1e-6 * score.abs().max(1.0), "id {id}: stream {score}, batch {expected}");
        compared += 1;
    }
    assert_eq!(compared, N - 5);
}

/// `psql` on the local PostgreSQL (started by `scripts/postgres.sh` when needed): unaligned rows.
fn psql(sql: &str) -> String {
    assert!(Command::new("bash").arg(root().join("scripts/postgres.sh")).status().unwrap().success());
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-v", "ON_ERROR_STOP=1", "-AtF", ",", "-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_serving_table_keeps_each_keys_latest_score_and_ignores_replayed_older_events() {
    let TestRun { run, events, dir: _dir, lake, .. } = test_run();
    let table = format!("scores_{run}");

    // 3000 events for 100 accounts, keyed by account (one partition per account, in order); an
    // account's later events have a larger `a`.
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let send = |i: i64, a: i64, timestamp: Option<i64>| {
        let account = i % 100;
        let payload = format!("{{\"account_id\": {account}, \"a\": {a}, \"b\": 1, \"c\": 2}}");
        let key = account.to_string();
        let mut record = BaseRecord::to(&events).key(&key).payload(&payload);
        if let Some(ts) = timestamp {
            record = record.timestamp(ts);
        }
        producer.send(record).unwrap();
    };
    for i in 0..3000 {
        send(i, i, None);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let stream = |extra: &[(&str, &str)]| {
        let out = sluice_at(&lake)
            .args(["stream", "examples/kafka_serving_table.toml"])
            .envs([
                ("STREAM_NAME", format!("serve-{run}")),
                ("KAFKA_BROKERS", brokers()),
                ("EVENTS_TOPIC", events.clone()),
                ("DEAD_LETTER_TOPIC", format!("dead-{run}")),
                ("SERVING_TABLE", table.clone()),
                ("STREAM_STOP_WHEN_IDLE_S", "6".into()),
                ("KAFKA_SESSION_TIMEOUT_MS", "6000".into()),
            ])
            .envs(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .output()
            .unwrap();
        ok(out, "sluice stream examples/kafka_serving_table.toml")
    };
    let first = stream(&[]);
    assert!(first.contains("3000 events"), "{first}");

    // One row per account: its last event's values and score, with the event's coordinates.
    assert_eq!(psql(&format!("SELECT COUNT(*), COUNT(DISTINCT account_id) FROM {table}")), "100,100");
    let rows = psql(&format!("SELECT account_id, a, score, _topic, _offset FROM {table} ORDER BY account_id"));
    for (account, line) in rows.lines().enumerate() {
        let cols: Vec<&str> = line.split(',').collect();
        let a: f64 = cols[1].parse().unwrap();
        assert_eq!(a, (2900 + account) as f64, "account {account}: {line}");
        let want = 0.5 * a - 2.0 + 0.5 + 1.0;
        assert!((cols[2].parse::<f64>().unwrap() - want).abs() < 1e-3 * want.abs().max(1.0), "{line}");
        assert_eq!(cols[3], events, "{line}");
        assert!(cols[4].parse::<i64>().unwrap() >= 29, "{line}");
    }

    // An old event for account 7 arrives late (its time an hour back): the newer row stays. A new
    // one for account 8 replaces its row.
    let hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    send(7, -1, Some(hour_ago));
    send(8, 99_999, None);
    producer.flush(Duration::from_secs(30)).unwrap();
    let second = stream(&[]);
    assert!(second.contains("2 events"), "{second}");
    assert_eq!(psql(&format!("SELECT a FROM {table} WHERE account_id = 7")), "2907");
    assert_eq!(psql(&format!("SELECT a FROM {table} WHERE account_id = 8")), "99999");
    psql(&format!("DROP TABLE {table}"));
}

#[test]
fn two_consumers_share_a_group_through_rebalances_with_none_lost_and_the_lake_exact() {
    let TestRun { run, events, scores, dir: _dir, lake } = test_run();

    // 20k events over about 25 s.
    const N: i64 = 20_000;
    let (producer_brokers, events_topic) = (brokers(), events.clone());
    let producing = std::thread::spawn(move || {
        let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", producer_brokers).create().unwrap();
        for i in 0..N {
            let payload = format!("{{\"id\": {i}, \"a\": {}, \"b\": 1, \"c\": 2}}", i % 10);
            let key = i.to_string();
            while producer.send(BaseRecord::to(&events_topic).key(&key).payload(&payload)).is_err() {
                producer.poll(Duration::from_millis(10));
            }
            if i % 100 == 0 {
                producer.poll(Duration::ZERO);
                std::thread::sleep(Duration::from_millis(120));
            }
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    });

    // A starts alone; B joins the group (a rebalance moves partitions to it); A leaves with
    // SIGTERM (another rebalance gives B everything); B runs until the topic is idle.
    let member = |idle: &str| {
        let env = [("STREAM_MAX_ROWS", "300"), ("STREAM_STOP_WHEN_IDLE_S", idle), ("LAND_EVERY_S", "1"), ("SLUICE_LOG", "info")];
        example(&lake, &run, &env)
    };
    let a = member("0");
    std::thread::sleep(Duration::from_secs(8));
    let b = member("12");
    std::thread::sleep(Duration::from_secs(12));
    assert!(Command::new("kill").args(["-TERM", &a.id().to_string()]).status().unwrap().success());
    let a_out = a.wait_with_output().unwrap();
    producing.join().unwrap();
    let b_out = b.wait_with_output().unwrap();
    let (a_log, b_log) = (String::from_utf8_lossy(&a_out.stdout), String::from_utf8_lossy(&b_out.stdout));
    let (a_err, b_err) = (String::from_utf8_lossy(&a_out.stderr), String::from_utf8_lossy(&b_out.stderr));
    assert!(a_out.status.success(), "A: {a_log}\n{a_err}");
    assert!(b_out.status.success(), "B: {b_log}\n{b_err}");
    let processed = |log: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix("stopped").map(|r| r.split_whitespace().next().unwrap_or("0").parse().unwrap_or(0)))
            .unwrap_or(0)
    };
    assert!(processed(&a_log) > 0 && processed(&b_log) > 0, "both members worked:\nA: {a_log}\nB: {b_log}");
    assert!(a_err.contains("partitions handed over"), "A handed nothing over:\n{a_err}");

    // Every event has a result; the lake holds each exactly once.
    let ids: HashSet<i64> = read_all(&scores, Duration::from_secs(3))
        .iter()
        .map(|(_, payload, _)| serde_json::from_slice::<serde_json::Value>(payload).unwrap()["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len() as i64, N, "events without a result");
    let counted = run_at(&lake, &["sql", "SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids FROM events_raw"]);
    let row = counted.lines().find(|l| l.starts_with("| ") && l.chars().nth(2).is_some_and(|c| c.is_ascii_digit())).unwrap();
    let values: Vec<&str> = row.split('|').map(str::trim).filter(|v| !v.is_empty()).collect();
    assert_eq!(values, [N.to_string(), N.to_string()], "the lake is not exact: {counted}");
}

/// Events `first..first+n` with three features spread evenly over [0, 10) (Weyl sequences); `a`
/// moved by `shift`.
fn spread_events(first: u64, n: u64, shift: f64) -> Vec<String> {
    let u = |i: u64, k: u64| ((i * k) % 1000) as f64 / 100.0;
    (first..first + n)
        .map(|i| format!("{{\"id\": {i}, \"a\": {}, \"b\": {}, \"c\": {}}}", u(i, 7919) + shift, u(i, 104_729), u(i, 15_485_863)))
        .collect()
}

/// Drift on the hot path: the stream's windows of events and scores are compared with a
/// reference (profiled once, the model's scores of it included); a window drawn like it flags
/// nothing, one whose `a` moved by a standard deviation flags `a` and the score only, on the
/// metrics endpoint and the status line.
#[test]
fn stream_windows_report_drift_of_events_and_scores() {
    let TestRun { run, events, scores: _, dir, lake } = test_run();
    let u = |k: u64| format!("CAST((value * {k}) % 1000 AS DOUBLE) / 100.0");
    let reference = format!("SELECT {} AS a, {} AS b, {} AS c FROM (SELECT unnest(range(0, 20000)) AS value)", u(7919), u(104_729), u(15_485_863));
    run_at(&lake, &["asset", "write", "reference", "--sql", &reference]);
    let job = dir.path().join("drift.toml");
    let text = std::fs::read_to_string(root().join("examples/kafka_score_events.toml")).unwrap();
    std::fs::write(&job, format!("{text}\n[monitor]\nreference = \"reference\"\nwindow_events = 3000\n")).unwrap();

    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let send = |payloads: Vec<String>| {
        for (i, payload) in payloads.iter().enumerate() {
            producer.send(BaseRecord::to(&events).key(&i.to_string()).payload(payload)).unwrap();
        }
        producer.flush(Duration::from_secs(30)).unwrap();
    };
    send(spread_events(0, 3000, 0.0));
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let env = [("STREAM_STOP_WHEN_IDLE_S", "0"), ("SLUICE_STREAM_METRICS", metrics.as_str())];
    let child = stream(&lake, job.to_str().unwrap(), &run, &env);
    let started = Instant::now();
    let exported = |name: &str, labels: &str| -> Option<f64> {
        let prefix = format!("{name}{{job=\"score-{run}\"{labels}}} ");
        http_get(port, "/metrics").lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok())
    };
    let detected = |column: &str| exported("sluice_stream_drift_detected", &format!(",column=\"{column}\""));
    let windows = |n: f64| {
        while exported("sluice_stream_drift_windows_total", "") != Some(n) {
            assert!(started.elapsed() < Duration::from_secs(120), "window {n}: {}", http_get(port, "/metrics"));
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    windows(1.0);
    for column in ["a", "b", "c", "score"] {
        assert_eq!(detected(column), Some(0.0), "{column}: {}", http_get(port, "/metrics"));
    }
    send(spread_events(3000, 3000, 2.89));
    windows(2.0);
    let flagged: Vec<&str> = ["a", "b", "c", "score"].into_iter().filter(|c| detected(c) == Some(1.0)).collect();
    assert_eq!(flagged, ["a", "score"], "{}", http_get(port, "/metrics"));
    let wass = exported("sluice_stream_drift_value", ",column=\"a\",metric=\"normalized_wasserstein\"").unwrap();
    assert!((wass - 1.0).abs() < 0.1, "{wass}");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("window 2: DRIFT in a, score"), "{stdout}");
}

/// Avro's zig-zag varint of a long.
fn avro_long(v: i64, out: &mut Vec<u8>) {
    let mut n = ((v << 1) ^ (v >> 63)) as u64;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// An event in the Confluent wire format: schema `id`, then the record (id, a, b, c[, site]).
fn avro_event(schema: u32, id: i64, abc: [f32; 3], site: Option<&str>) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&schema.to_be_bytes());
    avro_long(id, &mut out);
    for v in abc {
        out.extend_from_slice(&v.to_le_bytes());
    }
    if let Some(site) = site {
        avro_long(site.len() as i64, &mut out);
        out.extend_from_slice(site.as_bytes());
    }
    out
}

/// A schema registry's read API on loopback (`GET /schemas/ids/N`), serving `schemas`; 404 for
/// other ids. Returns its URL and the requests it answered.
fn schema_registry(schemas: HashMap<u32, String>) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{Read as _, Write as _};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 4096];
            let n = conn.read(&mut buf).unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            let path = request.split_whitespace().nth(1).unwrap_or_default().to_string();
            log.lock().unwrap().push(path.clone());
            let id = path.strip_prefix("/schemas/ids/").and_then(|id| id.parse::<u32>().ok());
            let (status, body) = match id.and_then(|id| schemas.get(&id)) {
                Some(schema) => ("200 OK", serde_json::json!({ "schema": schema }).to_string()),
                None => ("404 Not Found", r#"{"error_code":40403,"message":"Schema not found"}"#.to_string()),
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/vnd.schemaregistry.v1+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    (url, asked)
}

#[test]
fn avro_events_of_two_schema_versions_score_and_bad_ones_are_dead_letters() {
    let TestRun { run, events, scores, dir, lake } = test_run();
    let v2 = std::fs::read_to_string(root().join("examples/schemas/event.avsc")).unwrap();
    let (registry, asked) = schema_registry(HashMap::from([(2, v2)]));

    // 600 events: two in three written with schema 1 (listed in the job), one in three with
    // schema 2 (only the registry has it); then four that cannot be decoded.
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let abc = |i: i64| [(i % 17) as f32, (i % 5) as f32 * 0.5, 1.0 + (i % 3) as f32];
    for i in 0..600i64 {
        let site = format!("site-{}", i % 7);
        let payload = if i % 3 == 0 { avro_event(2, i, abc(i), Some(&site)) } else { avro_event(1, i, abc(i), None) };
        producer.send(BaseRecord::to(&events).key(&i.to_string()).payload(&payload)).unwrap();
    }
    let mut cut = avro_event(1, 9001, abc(1), None);
    cut.truncate(cut.len() - 3);
    let poison: [(i64, Vec<u8>); 4] = [
        (9000, br#"{"id": 9000, "a": 1, "b": 2, "c": 3}"#.to_vec()),
        (9001, cut),
        (9002, avro_event(3, 9002, abc(2), None)),
        (9003, avro_event(1, 9003, abc(3), None)[..5].to_vec()),
    ];
    for (key, payload) in &poison {
        producer.send(BaseRecord::to(&events).key(&key.to_string()).payload(payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // The registry's URL carries credentials, so the job takes it as a secret reference: it
    // appears nowhere in the output or the dead letters.
    let example = std::fs::read_to_string(root().join("examples/kafka_score_avro.toml")).unwrap();
    let line = "registry = \"${SCHEMA_REGISTRY:-http://127.0.0.1:8081}\"";
    assert!(example.contains(line), "the example's registry line moved");
    let job = dir.path().join("avro_secret_registry.toml");
    std::fs::write(&job, example.replace(line, "registry = { env = \"SCHEMA_REGISTRY_URL\" }")).unwrap();
    let with_credentials = registry.replacen("http://", "http://reader:reg-s3cret@", 1);
    let env = [("STREAM_STOP_WHEN_IDLE_S", "6"), ("SCHEMA_REGISTRY_URL", with_credentials.as_str()), ("LAND_ASSET", "events_raw")];
    let out = stream(&lake, job.to_str().unwrap(), &run, &env).wait_with_output().unwrap();
    let everything = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!everything.contains("reg-s3cret"), "{everything}");
    let stdout = ok(out, "sluice stream examples/kafka_score_avro.toml");
    assert!(stdout.contains("604 events") && stdout.contains("4 dead letters"), "{stdout}");

    // Each result is the model's score of its event's values; version 1 events read `site` as
    // the reader schema's default.
    let results = read_all(&scores, Duration::from_secs(2));
    let mut seen = HashSet::new();
    for (_, payload, _) in &results {
        let row: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let i = row["id"].as_i64().unwrap();
        let [a, b, c] = abc(i);
        let want = 0.5 * a - 2.0 * b + 0.25 * c + 1.0;
        assert!((row["score"].as_f64().unwrap() as f32 - want).abs() < 1e-5, "{row}");
        let site = if i % 3 == 0 { format!("site-{}", i % 7) } else { "unknown".into() };
        assert_eq!(row["site"].as_str().unwrap(), site, "{row}");
        seen.insert(i);
    }
    assert_eq!(seen, (0..600).collect::<HashSet<i64>>());

    // The four bad events are dead letters, each with its reason and its payload intact.
    let dead = read_all(&format!("dead-{run}"), Duration::from_secs(2));
    let mut reasons: Vec<(String, String)> = dead
        .iter()
        .map(|(key, _, headers)| (String::from_utf8(key.clone().unwrap()).unwrap(), headers["sluice.error"].clone()))
        .collect();
    reasons.sort();
    let wants = ["JSON?", "cut short", "has no schema id 3", "no record"];
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    for ((key, reason), (want_key, want)) in reasons.iter().zip(poison.iter().map(|(k, _)| k).zip(wants)) {
        assert_eq!(key, &want_key.to_string());
        assert!(reason.contains(want), "{key}: {reason} (want {want})");
    }
    let payloads: HashMap<Vec<u8>, Vec<u8>> = dead.into_iter().map(|(k, p, _)| (k.unwrap(), p)).collect();
    for (key, payload) in &poison {
        assert_eq!(&payloads[key.to_string().as_bytes()], payload);
    }
    assert!(reasons.iter().all(|(_, reason)| !reason.contains("reg-s3cret")), "{reasons:?}");

    // The registry was asked once for each id the job does not list; the raw events landed with
    // the reader schema's columns.
    let mut asked = asked.lock().unwrap().clone();
    asked.sort();
    assert_eq!(asked, ["/schemas/ids/2", "/schemas/ids/3"]);
    assert_eq!(first_value(&run_at(&lake, &["sql", "SELECT COUNT(*) FROM events_raw"])), "600");
    let unknown = run_at(&lake, &["sql", "SELECT COUNT(*) FROM events_raw WHERE site = 'unknown'"]);
    assert_eq!(first_value(&unknown), "400");
}

/// Partitions of `topic` as the broker lists them (None: no such topic).
fn partitions_of(topic: &str) -> Option<usize> {
    let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10)).unwrap();
    metadata.topics().iter().find(|t| t.name() == topic && !t.partitions().is_empty()).map(|t| t.partitions().len())
}

#[test]
fn a_stream_waits_for_its_input_topic_creates_it_when_asked_and_a_dead_broker_is_an_error() {
    let TestRun { run, events: _, scores, dir, lake } = test_run();
    // The input topic does not exist yet: the stream waits and says so, then scores what comes.
    let late = format!("late-{run}");
    let mut child = example(&lake, &run, &[("EVENTS_TOPIC", late.as_str()), ("STREAM_STOP_WHEN_IDLE_S", "6")]);
    std::thread::sleep(Duration::from_secs(5));
    assert!(child.try_wait().unwrap().is_none(), "the stream exited while its topic did not exist");
    create_topics(&[&late]);
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    for i in 0..100 {
        let payload = format!("{{\"id\": {i}, \"a\": 1, \"b\": 2, \"c\": 3}}");
        producer.send(BaseRecord::to(&late).key(&i.to_string()).payload(&payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("waiting for input topics that do not exist yet") && stderr.contains(&late), "{stderr}");
    assert!(stdout.contains("stopped      100 events"), "{stdout}");
    assert_eq!(read_all(&scores, Duration::from_secs(2)).len(), 100);

    // With create_topics = true (the example's CREATE_TOPICS) it creates the missing topic with
    // the partitions asked for.
    let job = dir.path().join("create.toml");
    let text = std::fs::read_to_string(root().join("examples/kafka_score_events.toml")).unwrap();
    std::fs::write(&job, text.replacen("[input]\n", "[input]\npartitions = 2\n", 1)).unwrap();
    let fresh = format!("fresh-{run}");
    assert_eq!(partitions_of(&fresh), None);
    let env = [("EVENTS_TOPIC", fresh.as_str()), ("STREAM_STOP_WHEN_IDLE_S", "2"), ("CREATE_TOPICS", "true")];
    let out = stream(&lake, job.to_str().unwrap(), &run, &env)
        .wait_with_output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stderr.contains("created the missing input topics"), "{stdout}\n{stderr}");
    assert_eq!(partitions_of(&fresh), Some(2));

    // No broker at the address: a clear error within seconds, not "0 events".
    let dead = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = example(&lake, &run, &[("KAFKA_BROKERS", dead.as_str()), ("STREAM_STOP_WHEN_IDLE_S", "2")]).wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "a dead broker must fail the stream: {stdout}");
    assert!(stderr.contains(&format!("kafka {dead}: no broker answered")) && stderr.contains("check kafka.brokers"), "{stderr}");
    assert!(!stdout.contains("0 events"), "{stdout}");
    assert!(started.elapsed() < Duration::from_secs(40), "took {:?}", started.elapsed());
}

/// The hot path with an ONNX model: `named_3.onnx` (three named inputs a, b, c) registered and
/// called by alias in the stream's SQL; every event's result equals Python onnxruntime's output
/// for the same row (udfs/tests/fixtures/expected_onnx.json).
#[test]
fn onnx_models_score_events_like_python_onnxruntime() {
    let TestRun { run, events, scores, dir, lake } = test_run();
    let fixtures = root().join("udfs/tests/fixtures");
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("expected_onnx.json")).unwrap()).unwrap();
    // Three models on one event: named inputs (a, b, c), a logistic regression (l1..l6) and a
    // gradient-boosted regressor (g1..g8), each fed its fixture's row `id`.
    let cases = [("named_3", "named", "n"), ("logreg_6", "logreg", "l"), ("gbm_regressor_8", "reg", "g")];
    let mut schema = vec!["id bigint".to_string()];
    let mut columns = vec!["id".to_string()];
    let mut want: Vec<(String, Vec<f64>)> = Vec::new();
    for (fixture, model, prefix) in cases {
        let case = &expected[fixture];
        let width = case["inputs"][0].as_array().unwrap().len();
        let features: Vec<String> = if fixture == "named_3" {
            ["a", "b", "c"].map(String::from).to_vec()
        } else {
            (1..=width).map(|c| format!("{prefix}{c}")).collect()
        };
        schema.extend(features.iter().map(|f| format!("{f} float")));
        let file = fixtures.join(format!("{fixture}.onnx"));
        run_at(&lake, &["model", "register", model, file.to_str().unwrap(), "--inputs", &features.join(", "), "--alias", "production"]);
        let call = format!("predict('{model}@production', {})", features.join(", "));
        // Every value of every output, in the model's order, as a column of its own.
        let names: Vec<&str> = case["output_names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        let rows = case["inputs"].as_array().unwrap().len();
        let values: Vec<Vec<f64>> = (0..rows)
            .map(|r| {
                names
                    .iter()
                    .flat_map(|n| match &case["outputs"][*n][r] {
                        serde_json::Value::Array(v) => v.iter().map(|x| x.as_f64().unwrap()).collect::<Vec<_>>(),
                        x => vec![x.as_f64().unwrap()],
                    })
                    .collect()
            })
            .collect();
        let m = values[0].len();
        for k in 0..m {
            let column = format!("{prefix}_out{k}");
            columns.push(if m == 1 { format!("{call} AS {column}") } else { format!("{call}[{}] AS {column}", k + 1) });
            want.push((column, values.iter().map(|v| v[k]).collect()));
        }
    }
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", brokers()).create().unwrap();
    let rows = expected["named_3"]["inputs"].as_array().unwrap().len();
    for i in 0..rows {
        let mut fields = vec![format!("\"id\": {i}")];
        for (fixture, _, prefix) in cases {
            let row: Vec<f32> =
                expected[fixture]["inputs"][i].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
            for (c, v) in row.iter().enumerate() {
                let name = if fixture == "named_3" { ["a", "b", "c"][c].to_string() } else { format!("{prefix}{}", c + 1) };
                fields.push(format!("\"{name}\": {v}"));
            }
        }
        let payload = format!("{{{}}}", fields.join(", "));
        producer.send(BaseRecord::to(&events).key(&i.to_string()).payload(&payload)).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let job = dir.path().join("onnx.toml");
    let text = std::fs::read_to_string(root().join("examples/kafka_score_events.toml")).unwrap();
    let sql = format!("SELECT {} FROM events", columns.join(", "));
    let text = text
        .replace(
            "sql = \"SELECT id, predict('${SCORE_MODEL:-lin@production}', a, b, c) AS score FROM events\"",
            &format!("sql = \"{sql}\""),
        )
        .replace("schema = \"id bigint, a float, b float, c float\"", &format!("schema = \"{}\"", schema.join(", ")));
    assert!(text.contains("logreg@production") && text.contains("g8 float"), "the example's output SQL or schema changed");
    std::fs::write(&job, text).unwrap();
    let out = stream(&lake, job.to_str().unwrap(), &run, &[("STREAM_STOP_WHEN_IDLE_S", "10")]).wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let results = read_all(&scores, Duration::from_secs(2));
    let mut seen = std::collections::HashSet::new();
    for (_, payload, _) in &results {
        let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
        let id = value["id"].as_u64().unwrap() as usize;
        for (column, values) in &want {
            let got = value[column].as_f64().unwrap_or_else(|| panic!("event {id}: no {column} in {value}"));
            assert!((got - values[id]).abs() <= 1e-5, "event {id} {column}: {got} vs Python onnxruntime {}", values[id]);
        }
        seen.insert(id);
    }
    assert_eq!(seen.len(), rows, "{stdout}");
}
