//! The MQTT source against the Mosquitto broker on loopback (started by `scripts/mosquitto.sh`
//! when it is not running): micro-batches land as versions, a re-sent event lands once, a bad
//! message is quarantined, and the job stops when the topic goes quiet.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
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
    // that is not JSON and one message of two events.
    publish((0..50).map(|i| event(&base, i)).collect());
    std::thread::sleep(Duration::from_secs(3));
    let mut second: Vec<_> = (50..100).chain(0..10).map(|i| event(&base, i)).collect();
    second.push((format!("{base}/d9/events"), "temperature=12".into()));
    let (topic, a) = event(&base, 100);
    second.push((topic, format!("{a}\n{}", event(&base, 101).1)));
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
    assert!(text.contains("113 read = 102 landed + 1 quarantined + 10 duplicates"), "{text}");

    let sql = |query: &str| {
        ok(sluice_cmd().current_dir(root()).env("SLUICE_ASSETS", &lake).args(["sql", query]).output().unwrap(), query)
    };
    assert_eq!(common::first_value(&sql("SELECT COUNT(*) FROM device_events_live")), "102");
    assert_eq!(common::first_value(&sql("SELECT COUNT(DISTINCT (device_id, ts)) FROM device_events_live")), "102");
    let bad = sql("SELECT location, reason FROM device_events_live_quarantine");
    assert!(bad.contains("/d9/events message"), "{bad}");
}
