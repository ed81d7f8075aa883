//! The Kafka hot path's peers: a paced producer of JSON events with 32 features, and the floor, a
//! plain consume -> produce loop (no decoding, no scoring) with the same delivery rules as
//! `sluice stream` (idempotent producer, offsets committed after acknowledgements).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Runs librdkafka's mock cluster (one broker) until the process is killed, with `topics`
/// created (one partition each); prints its bootstrap servers first.
pub async fn mock_broker(topics: &[String]) -> Result<()> {
    let cluster = rdkafka::mocking::MockCluster::new(1).context("starting librdkafka's mock cluster")?;
    for topic in topics {
        cluster.create_topic(topic, 1, 1).with_context(|| format!("creating topic {topic} on the mock broker"))?;
    }
    println!("{}", cluster.bootstrap_servers());
    std::io::Write::flush(&mut std::io::stdout())?;
    tokio::signal::ctrl_c().await?;
    drop(cluster);
    Ok(())
}

/// Creates `topic` with `partitions` partitions, unless it exists.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", brokers).create().context("creating an admin client")?;
    let topics = [NewTopic::new(topic, partitions, TopicReplication::Fixed(1))];
    for result in admin.create_topics(&topics, &AdminOptions::new()).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name}: {code}"),
        }
    }
    Ok(())
}

/// Produces `count` events to `topic` at `rate` events/s (0: as fast as the broker takes them).
/// The Avro schema of the events `produce` writes with `avro`: `id` long, `f0..` float.
pub fn avro_schema(features: usize) -> String {
    let fields: Vec<String> = (0..features).map(|f| format!(r#"{{"name":"f{f}","type":"float"}}"#)).collect();
    format!(r#"{{"type":"record","name":"Event","fields":[{{"name":"id","type":"long"}},{}]}}"#, fields.join(","))
}

/// An event as `produce` writes it with `avro`: Confluent wire format (zero byte, schema id 1),
/// then the record (zig-zag `id`, little-endian floats).
pub fn avro_event(id: u64, values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    let mut out = vec![0, 0, 0, 0, 1];
    let mut n = id << 1;
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

pub async fn produce(brokers: &str, topic: &str, count: u64, rate: f64, features: usize, avro: bool) -> Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", if rate > 0.0 { "0" } else { "5" })
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the producer")?;
    let started = Instant::now();
    let mut pending = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..count {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let mut json = format!("{{\"id\": {i}");
        let mut values = Vec::with_capacity(features);
        for f in 0..features {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let x = (state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0;
            if avro {
                values.push(x);
            } else {
                json.push_str(&format!(", \"f{f}\": {x}"));
            }
        }
        json.push('}');
        let binary = if avro { avro_event(i, values) } else { Vec::new() };
        let payload: &[u8] = if avro { &binary } else { json.as_bytes() };
        let key = i.to_string();
        loop {
            match producer.send_result(FutureRecord::to(topic).key(&key).payload(payload)) {
                Ok(delivery) => {
                    pending.push(delivery);
                    break;
                }
                Err(_) => {
                    for d in pending.drain(..) {
                        let _ = d.await;
                    }
                }
            }
        }
        if pending.len() >= 10_000 {
            for d in pending.drain(..) {
                d.await.context("delivery")?.map_err(|(e, _)| e).context("delivery")?;
            }
        }
    }
    for d in pending {
        d.await.context("delivery")?.map_err(|(e, _)| e).context("delivery")?;
    }
    producer.flush(Duration::from_secs(30))?;
    let seconds = started.elapsed().as_secs_f64();
    println!("produced {count} events to {topic} in {seconds:.1} s ({:.0}/s)", count as f64 / seconds);
    Ok(())
}

/// Consumes `from` as group `group` and produces every payload to `to`, committing after
/// acknowledgements, until `idle` passes without an event. Prints events/s (first event to last
/// acknowledgement) and latency p50/p99 (event timestamp to acknowledgement).
pub async fn passthrough(
    brokers: &str,
    from: &str,
    to: &str,
    group: &str,
    idle: Duration,
    max_rows: usize,
    fetch_wait_ms: Option<u32>,
) -> Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("session.timeout.ms", "10000") // as `sluice stream` (a new group joins sooner)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    if let Some(ms) = fetch_wait_ms {
        config.set("fetch.wait.max.ms", ms.to_string());
    }
    let consumer: StreamConsumer = config.create().context("creating the consumer")?;
    consumer.subscribe(&[from])?;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()
        .context("creating the producer")?;
    let mut latencies: Vec<f64> = Vec::new();
    let mut events = 0u64;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut quiet_since = Instant::now();
    loop {
        // A micro-batch: up to max_rows events or 20 ms after the first.
        let mut batch = Vec::new();
        if let Ok(m) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await {
            batch.push(m?.detach());
            let deadline = Instant::now() + Duration::from_millis(20);
            while batch.len() < max_rows {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, consumer.recv()).await {
                    Ok(m) => batch.push(m?.detach()),
                    Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            if quiet_since.elapsed() >= idle {
                break;
            }
            continue;
        }
        quiet_since = Instant::now();
        first.get_or_insert_with(Instant::now);
        let mut deliveries = Vec::with_capacity(batch.len());
        for m in &batch {
            let mut record = FutureRecord::to(to).payload(m.payload().unwrap_or_default());
            if let Some(k) = m.key() {
                record = record.key(k);
            }
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for d in deliveries {
            d.await.context("delivery")?.map_err(|(e, _)| e)?;
        }
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis() as i64;
        let mut offsets = TopicPartitionList::new();
        for m in &batch {
            if let Some(ts) = m.timestamp().to_millis() {
                latencies.push((now_ms - ts).max(0) as f64);
            }
            offsets.add_partition_offset(m.topic(), m.partition(), Offset::Offset(m.offset() + 1))?;
        }
        consumer.commit(&offsets, CommitMode::Async)?;
        events += batch.len() as u64;
        last = Instant::now();
    }
    let seconds = first.map_or(0.0, |f| (last - f).as_secs_f64()).max(1e-9);
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies.get(((latencies.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or(0.0);
    println!(
        "passthrough {events} events in {seconds:.2} s: {:.0} events/s, latency p50 {:.1} ms p99 {:.1} ms",
        events as f64 / seconds,
        pick(0.5),
        pick(0.99)
    );
    Ok(())
}
