//! The MQTT source against the Mosquitto broker on loopback (started by `scripts/mosquitto.sh`
//! when it is not running): micro-batches land as versions, a re-sent event lands once, a bad
//! message is quarantined, and the job stops when the topic goes quiet; bursts at 1,000 and
//! 5,000 messages/s with a job killed twice land every message exactly once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use crate::common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::{Child, ok, root, sluice_cmd};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

/// Publishes `messages` (topic, payload) with QoS 1 and waits for the broker's acknowledgements.
fn publish(messages: Vec<(String, String)>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let mut options = MqttOptions::new(format!("sluice-test-pub-{}", std::process::id()), "127.0.0.1", 1883);
        options.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(options, 1000);
        let n = messages.len();
        tokio::spawn(async move {
            for (topic, payload) in messages {
                client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
            }
        });
        let mut acked = 0;
        while acked < n {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked += 1;
            }
        }
    });
}

fn event(base: &str, i: usize) -> (String, String) {
    let device = format!("d{}", i % 5);
    let payload = format!(
        "{{\"device_id\": \"{device}\", \"ts\": \"2026-11-24T08:{:02}:{:02}\", \"temperature\": {}.25}}",
        i / 60,
        i % 60,
        i % 30
    );
    (format!("{base}/{device}/events"), payload)
}

#[test]
fn device_events_land_in_micro_batches_once_each() {
    assert!(Command::new("bash").arg(root().join("scripts/mosquitto.sh")).status().unwrap().success());
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let id = format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() ^ 0x5eed);
    let base = format!("sluice-test/{id}");

    let mut process = sluice_cmd()
        .current_dir(root())
        .env("SLUICE_ASSETS", &lake)
        .env("SLUICE_SPOOL_DIR", dir.path().join("spool"))
        .env("MQTT_TOPIC", format!("{base}/+/events"))
        .env("MQTT_CLIENT_ID", format!("sluice-test-{id}"))
        .env("MQTT_BATCH_SECONDS", "1")
        .env("MQTT_STOP_WHEN_IDLE_S", "4")
        .args(["run", "examples/mqtt_device_events.toml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = process.stdout.take().unwrap();
    let err = process.stderr.take().unwrap();
    let child = Child(process);
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let errors = std::thread::spawn(move || std::io::read_to_string(err).unwrap_or_default());
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.starts_with("subscribed")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("the job did not subscribe: {seen:?}"),
        }
    }

    // Two bursts a batch apart; the second re-sends 10 events of the first, carries one message
    // that is not JSON, one message of two events, one with text after its event and one without
    // the de-duplication key.
    publish((0..50).map(|i| event(&base, i)).collect());
    std::thread::sleep(Duration::from_secs(3));
    let mut second: Vec<_> = (50..100).chain(0..10).map(|i| event(&base, i)).collect();
    second.push((format!("{base}/d9/events"), "temperature=12".into()));
    let (topic, a) = event(&base, 100);
    second.push((topic, format!("{a}\n{}", event(&base, 101).1)));
    second.push((format!("{base}/d9/events"), format!("{} }}{{", event(&base, 102).1)));
    second.push((format!("{base}/d9/events"), r#"{"ts": "2026-11-24T09:00:00", "temperature": 1.5}"#.into()));
    publish(second);

    let mut child = child;
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the job did not stop when the topic went quiet: {seen:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    seen.extend(lines.try_iter());
    let status = child.0.wait().unwrap();
    let stderr = errors.join().unwrap();
    let text = seen.join("\n");
    assert!(status.success(), "{text}\n{stderr}");
    let batches = seen.iter().filter(|l| l.starts_with("batch ")).count();
    assert!(batches >= 2, "one version per micro-batch: {text}");
    assert!(text.contains("115 read = 102 landed + 3 quarantined + 10 duplicates"), "{text}");

    let sql = |query: &str| {
        ok(sluice_cmd().current_dir(root()).env("SLUICE_ASSETS", &lake).args(["sql", query]).output().unwrap(), query)
    };
    assert_eq!(common::first_value(&sql("SELECT COUNT(*) FROM device_events_live")), "102");
    assert_eq!(common::first_value(&sql("SELECT COUNT(DISTINCT (device_id, ts)) FROM device_events_live")), "102");
    let bad = sql("SELECT location, reason FROM device_events_live_quarantine");
    assert!(bad.contains("/d9/events message"), "{bad}");
    assert!(bad.contains("more than one JSON value on one record: `}{`"), "{bad}");
    assert!(bad.contains("'device_id' is missing, and every record must have it"), "{bad}");
}

/// A Mosquitto of the test's own on a free port, which keeps a stopped job's backlog (its default
/// `max_queued_messages` of 1,000 would drop the rest while the job is down); the in-flight
/// window stays at Mosquitto's default of 20.
fn own_broker(dir: &std::path::Path) -> (Child, u16) {
    assert!(Command::new("bash").arg(root().join("scripts/mosquitto.sh")).status().unwrap().success());
    let port = common::free_port();
    let conf = dir.join("mosquitto.conf");
    std::fs::write(&conf, format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 1000000\n")).unwrap();
    let bin = if std::path::Path::new("/usr/sbin/mosquitto").exists() { "/usr/sbin/mosquitto" } else { "mosquitto" };
    let child = Child(Command::new(bin).arg("-c").arg(&conf).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mosquitto did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// What the burst holds: message `i` of `n`.
fn burst_message(base: &str, i: usize) -> (String, Vec<u8>) {
    let topic = format!("{base}/d{}/events", i % 7);
    let payload = match i {
        // Valid, 1.1 MB.
        777 => format!("{{\"seq\": {i}, \"device\": \"d{}\", \"value\": 1.5, \"blob\": \"{}\"}}", i % 7, "x".repeat(1_100_000)),
        // Over the job's max_message_bytes (2 MB).
        1555 => format!("{{\"seq\": {i}, \"blob\": \"{}\"}}", "y".repeat(2_500_000)),
        i if i.is_multiple_of(997) => format!("not json {i}"),
        i => format!("{{\"seq\": {i}, \"device\": \"d{}\", \"value\": {}.25}}", i % 7, i % 100),
    };
    (topic, payload.into_bytes())
}

fn is_valid(i: usize) -> bool {
    i != 1555 && !i.is_multiple_of(997)
}

/// Publishes `n` burst messages at `rate` per second with QoS 1; `acked` counts the broker's
/// acknowledgements.
fn publish_at(port: u16, base: String, n: usize, rate: usize, acked: Arc<AtomicUsize>) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let mut options = MqttOptions::new(format!("sluice-test-burst-{}", std::process::id()), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(5)).set_max_packet_size(8 << 20, 8 << 20).set_inflight(1000);
        let (client, mut events) = AsyncClient::new(options, 1000);
        tokio::spawn(async move {
            let started = Instant::now();
            for i in 0..n {
                // Paced: message i leaves at i / rate seconds.
                let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(wait).await;
                }
                let (topic, payload) = burst_message(&base, i);
                client.publish(topic, QoS::AtLeastOnce, false, payload).await.unwrap();
            }
        });
        while acked.load(Ordering::SeqCst) < n {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.unwrap() {
                acked.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
}

/// Publishes 20,000 messages at `rate`/s while the job is killed with SIGKILL twice and started
/// again; then every valid message is in the asset exactly once and every bad one quarantined.
fn no_loss_through_two_kills(rate: usize) {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let (_broker, port) = own_broker(dir.path());
    let lake = dir.path().join("lake");
    let base = format!("sluice-burst/{rate}");
    let job = dir.path().join("burst.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "mqtt_burst"

[sources.iot]
kind = "mqtt"
schema = "seq bigint, device string, value double, blob string"
infer = false

[sources.iot.connection]
port = {port}
client_id = "sluice-burst-{rate}"

[sources.iot.read]
topics = ["{base}/#"]
batch_messages = 1000
batch_seconds = 2
stop_when_idle_s = 6
max_message_bytes = 2000000
spool_dir = "{spool}"

[transform]
sql = "SELECT seq, device, value, length(blob) AS blob_len FROM iot"

[sink]
asset = "burst"
"#,
            spool = dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let start = |log: &str| {
        let out = std::fs::File::create(dir.path().join(log)).unwrap();
        let mut process = sluice_cmd()
            .current_dir(root())
            .env("SLUICE_ASSETS", &lake)
            .args(["run", job.to_str().unwrap()])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !std::fs::read_to_string(dir.path().join(log)).unwrap().contains("subscribed") {
            if let Some(status) = process.try_wait().unwrap() {
                panic!("the job ended at start ({status}): {}", std::fs::read_to_string(dir.path().join(log)).unwrap());
            }
            assert!(Instant::now() < deadline, "the job did not subscribe");
            std::thread::sleep(Duration::from_millis(50));
        }
        Child(process)
    };
    let mut job_process = start("run1.log");
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let acked = acked.clone();
        let base = base.clone();
        std::thread::spawn(move || publish_at(port, base, N, rate, acked))
    };
    for (kill_at, next_log) in [(N * 3 / 10, "run2.log"), (N * 6 / 10, "run3.log")] {
        while acked.load(Ordering::SeqCst) < kill_at {
            std::thread::sleep(Duration::from_millis(5));
        }
        job_process.0.kill().unwrap(); // SIGKILL
        job_process.0.wait().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        job_process = start(next_log);
    }
    publisher.join().unwrap();
    assert_eq!(acked.load(Ordering::SeqCst), N, "the broker acknowledged every message");
    let deadline = Instant::now() + Duration::from_secs(180);
    while job_process.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the job did not stop when the topic went quiet");
        std::thread::sleep(Duration::from_millis(200));
    }
    let last = std::fs::read_to_string(dir.path().join("run3.log")).unwrap();
    assert!(job_process.0.wait().unwrap().success(), "{last}");

    // The kills left received messages in the spool, and the restarts landed them.
    let resumed: usize = ["run2.log", "run3.log"]
        .iter()
        .filter_map(|log| {
            let text = std::fs::read_to_string(dir.path().join(log)).unwrap();
            let line = text.lines().find(|l| l.starts_with("resumed"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<usize>().ok()
        })
        .sum();
    assert!(resumed > 0, "no restart found messages to land: the kills did not hit a batch in hand\n{last}");
    let sql = |query: &str| {
        ok(sluice_cmd().current_dir(root()).env("SLUICE_ASSETS", &lake).args(["sql", query]).output().unwrap(), query)
    };
    let valid = (0..N).filter(|&i| is_valid(i)).count();
    let bad = N - valid;
    let landed = sql("SELECT COUNT(*) AS n, COUNT(DISTINCT seq) AS distinct_seq, SUM(seq) AS sum_seq FROM burst");
    let expected_sum: usize = (0..N).filter(|&i| is_valid(i)).sum();
    let row = landed.lines().find(|l| l.starts_with("| ") && l.contains(|c: char| c.is_ascii_digit())).unwrap();
    let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
    assert_eq!(cells, [valid.to_string(), valid.to_string(), expected_sum.to_string()], "published {N}, valid {valid}:\n{landed}\n{last}");
    assert_eq!(common::first_value(&sql("SELECT blob_len FROM burst WHERE seq = 777")), "1100000");
    let quarantined = sql("SELECT COUNT(*) FROM burst_quarantine");
    assert_eq!(common::first_value(&quarantined), bad.to_string(), "{quarantined}");
    let oversize = sql("SELECT reason FROM burst_quarantine WHERE reason LIKE '%max_message_bytes%'");
    assert!(oversize.contains("2500") && oversize.contains("bytes"), "{oversize}");
}

#[test]
fn a_burst_at_1000_per_second_through_two_kills_lands_exactly_once() {
    no_loss_through_two_kills(1000);
}

#[test]
fn a_burst_at_5000_per_second_through_two_kills_lands_exactly_once() {
    no_loss_through_two_kills(5000);
}
