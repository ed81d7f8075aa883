//! A consumer group read in micro-batches. Offsets are stored by the caller, after the outputs
//! of a batch were acknowledged (at-least-once): nothing is committed automatically.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use super::config::{KafkaConnection, StartFrom};
use crate::error::{Error, Result};

/// Next offset to read, per (topic, partition).
pub type Offsets = BTreeMap<(String, i32), i64>;

/// One event as it was read.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// Its key.
    pub key: Option<Vec<u8>>,
    /// Its payload, as produced.
    pub payload: Option<Vec<u8>>,
    /// Its timestamp (ms since the epoch), when the producer or the broker set one.
    pub timestamp_ms: Option<i64>,
    /// Its headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// When this process received it.
    pub received: Instant,
}

/// Librdkafka's callbacks: the statistics give each partition's end; a rebalance that takes
/// partitions away first commits what was fully processed of them (so their next owner starts
/// right after it) and tells the reader which partitions went.
struct Context {
    group: String,
    ends: Arc<Mutex<Ends>>,
    /// The offsets that may be committed (processed, and landed where events land).
    committable: Arc<Mutex<Offsets>>,
    /// Partitions revoked since the reader last asked.
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
}

/// The end and the committed offset of each partition, from the last statistics.
type Ends = BTreeMap<(String, i32), (i64, i64)>;

impl ClientContext for Context {
    fn stats(&self, statistics: Statistics) {
        let mut ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        ends.clear();
        for (topic, t) in &statistics.topics {
            for p in t.partitions.values().filter(|p| p.partition >= 0 && p.hi_offset >= 0) {
                ends.insert((topic.clone(), p.partition), (p.hi_offset, p.committed_offset));
            }
        }
    }
}

impl ConsumerContext for Context {
    fn pre_rebalance(&self, consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(parts) => {
                let gone: Vec<(String, i32)> =
                    parts.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
                let mut committable = self.committable.lock().unwrap_or_else(|p| p.into_inner());
                let mut list = TopicPartitionList::new();
                for part in &gone {
                    if let Some(next) = committable.get(part) {
                        let _ = list.add_partition_offset(&part.0, part.1, Offset::Offset(*next));
                    }
                }
                if list.count() > 0
                    && let Err(e) = consumer.commit(&list, CommitMode::Sync)
                {
                    tracing::warn!(group = %self.group, error = %e, "committing before the rebalance failed; events may repeat");
                }
                for part in &gone {
                    committable.remove(part);
                }
                drop(committable);
                self.revoked.lock().unwrap_or_else(|p| p.into_inner()).extend(gone);
                tracing::info!(group = %self.group, partitions = %names(parts), committed = list.count(), "partitions revoked")
            }
            Rebalance::Assign(parts) => {
                tracing::info!(group = %self.group, partitions = %names(parts), "partitions assigned")
            }
            Rebalance::Error(e) => tracing::warn!(group = %self.group, error = %e, "rebalance failed"),
        }
    }
}

fn names(list: &TopicPartitionList) -> String {
    list.elements().iter().map(|e| format!("{}/{}", e.topic(), e.partition())).collect::<Vec<_>>().join(", ")
}

/// A consumer in a group, reading micro-batches.
pub struct Consumer {
    inner: StreamConsumer<Context>,
    group: String,
    ends: Arc<Mutex<Ends>>,
    committable: Arc<Mutex<Offsets>>,
    revoked: Arc<Mutex<Vec<(String, i32)>>>,
    handed_over: Mutex<Vec<(String, i32)>>,
}

impl Consumer {
    /// Joins `group` and subscribes to `topics`; no offset is committed automatically.
    pub fn subscribe(connection: &KafkaConnection, group: &str, topics: &[String], start: StartFrom) -> Result<Self> {
        if topics.is_empty() {
            return Err(Error::Config("kafka: name at least one topic to read".into()));
        }
        let mut config = connection.client_config()?;
        if !connection.properties.contains_key("session.timeout.ms") {
            // A dead member's partitions move after this; brokers that hold a new group's join
            // for the session timeout (the development broker does) start this much sooner.
            config.set("session.timeout.ms", "10000");
        }
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "5000")
            .set("auto.offset.reset", match start {
                StartFrom::Earliest => "earliest",
                StartFrom::Latest => "latest",
            });
        let ends = Arc::new(Mutex::new(Ends::new()));
        let committable = Arc::new(Mutex::new(Offsets::new()));
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let context =
            Context { group: group.to_string(), ends: ends.clone(), committable: committable.clone(), revoked: revoked.clone() };
        let inner: StreamConsumer<Context> = config
            .create_with_context(context)
            .map_err(|e| Error::Source(format!("kafka {}: cannot create a consumer: {e}", connection.brokers)))?;
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        inner
            .subscribe(&refs)
            .map_err(|e| Error::Source(format!("kafka {}: cannot subscribe to {}: {e}", connection.brokers, topics.join(", "))))?;
        Ok(Self { inner, group: group.to_string(), ends, committable, revoked, handed_over: Mutex::new(Vec::new()) })
    }

    /// Partitions a rebalance took from this consumer since the last call. What was read of them
    /// and not committed will be read again by their next owner: drop it.
    pub fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.handed_over.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// After a poll: drops from `batch` the events of partitions a rebalance just took away (a
    /// message that poll returned comes after the rebalance, so it is kept by the caller).
    fn drop_revoked(&self, batch: &mut Vec<Message>) {
        let gone = std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()));
        if gone.is_empty() {
            return;
        }
        batch.retain(|m| !gone.iter().any(|(t, p)| *t == m.topic && *p == m.partition));
        self.handed_over.lock().unwrap_or_else(|p| p.into_inner()).extend(gone);
    }

    /// The next micro-batch: waits up to `idle` for a first event (an empty batch if none came),
    /// then gathers until `max_rows` events or `max_wait` after the first. Events of partitions
    /// a rebalance took away meanwhile are left out ([`Consumer::take_revoked`] names them).
    pub async fn next_batch(&self, max_rows: usize, max_wait: Duration, idle: Duration) -> Result<Vec<Message>> {
        let mut batch = Vec::new();
        let first = self.recv_within(idle).await?;
        self.drop_revoked(&mut batch);
        let Some(first) = first else { return Ok(batch) };
        let deadline = first.received + max_wait;
        batch.push(first);
        while batch.len() < max_rows {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let next = self.recv_within(left).await?;
            self.drop_revoked(&mut batch);
            match next {
                Some(message) => batch.push(message),
                None => break,
            }
        }
        Ok(batch)
    }

    async fn recv_within(&self, wait: Duration) -> Result<Option<Message>> {
        let received = match tokio::time::timeout(wait, self.inner.recv()).await {
            Err(_) => return Ok(None),
            Ok(received) => received,
        };
        let message = received.map_err(|e| Error::Source(format!("kafka group {}: {e}", self.group)))?;
        let headers = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect())
            .unwrap_or_default();
        Ok(Some(Message {
            topic: message.topic().to_string(),
            partition: message.partition(),
            offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            timestamp_ms: message.timestamp().to_millis(),
            headers,
            received: Instant::now(),
        }))
    }

    /// Commits `offsets` (the next offset to read per partition); `wait`: until the broker
    /// confirmed (at shutdown), else in the background (between micro-batches). A partition this consumer no longer owns (a rebalance moved it) is skipped, not an error:
    /// its new owner reads from the last commit, so events may repeat but are never lost.
    pub fn commit(&self, offsets: &Offsets, wait: bool) -> Result<()> {
        if offsets.is_empty() {
            return Ok(());
        }
        // What a rebalance commits before it takes partitions away.
        self.committable.lock().unwrap_or_else(|p| p.into_inner()).extend(offsets.iter().map(|(k, v)| (k.clone(), *v)));
        let mut list = TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            list.add_partition_offset(topic, *partition, Offset::Offset(*next))
                .map_err(|e| Error::Source(format!("kafka: offset {next} of {topic}/{partition}: {e}")))?;
        }
        match self.inner.commit(&list, if wait { CommitMode::Sync } else { CommitMode::Async }) {
            Ok(()) => Ok(()),
            Err(e) if is_rebalance(&e) => {
                tracing::warn!(group = %self.group, error = %e, "commit skipped: a rebalance moved the partitions");
                Ok(())
            }
            Err(e) => Err(Error::Source(format!("kafka group {}: committing offsets: {e}", self.group))),
        }
    }

    /// Events between `position` (the next offset to process, per partition) and the end of the
    /// assigned partitions, as of the last statistics (every 5 s); -1 while unknown.
    pub fn lag(&self, position: &Offsets) -> i64 {
        let ends = self.ends.lock().unwrap_or_else(|p| p.into_inner());
        if ends.is_empty() {
            return -1;
        }
        ends.iter()
            .map(|(partition, (end, committed))| {
                let at = position.get(partition).copied().unwrap_or(*committed).max(*committed).max(0);
                (end - at).max(0)
            })
            .sum()
    }

    /// The group's metadata, for committing offsets inside a producer's transaction.
    pub fn group_metadata(&self) -> Option<rdkafka::consumer::ConsumerGroupMetadata> {
        self.inner.group_metadata()
    }

    /// The group's name.
    pub fn group(&self) -> &str {
        &self.group
    }
}

fn is_rebalance(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e.rdkafka_error_code(),
        Some(Code::RebalanceInProgress | Code::IllegalGeneration | Code::UnknownMemberId | Code::State)
    )
}
