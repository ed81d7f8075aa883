//! An idempotent producer: every record of a micro-batch is sent, then all acknowledgements are
//! awaited before the caller commits the batch's offsets. A full local queue waits for
//! acknowledgements instead of growing (back-pressure).

use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer as _};
use rdkafka::util::Timeout;

use super::config::KafkaConnection;
use super::source::{Consumer, Offsets};
use crate::error::{Error, Result};

/// A header of a produced record.
pub type Header = (String, Vec<u8>);

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Record {
    /// Its topic.
    pub topic: String,
    /// Its key (records with the same key go to the same partition, in order).
    pub key: Option<Vec<u8>>,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Its headers.
    pub headers: Vec<Header>,
}

/// A producer; with a transactional id, a batch's records and its consumed offsets commit
/// together or not at all (exactly-once, on brokers that isolate aborted transactions).
pub struct Producer {
    inner: FutureProducer,
    brokers: String,
    transactional: bool,
}

/// How long a send may wait in a full local queue before the batch fails.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);

impl Producer {
    /// An idempotent producer (no duplicates or reordering from its own retries); with
    /// `transactional_id`, a transactional one.
    pub fn new(connection: &KafkaConnection, transactional_id: Option<&str>) -> Result<Self> {
        let mut config = connection.client_config()?;
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "1")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string());
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
        }
        let inner: FutureProducer = config
            .create()
            .map_err(|e| Error::Source(format!("kafka {}: cannot create a producer: {e}", connection.brokers)))?;
        if transactional_id.is_some() {
            inner.init_transactions(Timeout::After(Duration::from_secs(30))).map_err(|e| {
                Error::Source(format!(
                    "kafka {}: the broker refused transactions ({e}); use delivery = \"at_least_once\"",
                    connection.brokers
                ))
            })?;
        }
        Ok(Self { inner, brokers: connection.brokers.clone(), transactional: transactional_id.is_some() })
    }

    /// Sends `records` and waits until the broker acknowledged every one.
    pub async fn send_all(&self, records: &[Record]) -> Result<()> {
        let mut pending: std::collections::VecDeque<(DeliveryFuture, &str)> =
            std::collections::VecDeque::with_capacity(records.len());
        for record in records {
            let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
            for (key, value) in &record.headers {
                headers = headers.insert(KafkaHeader { key, value: Some(value) });
            }
            let mut message = FutureRecord::to(&record.topic).payload(&record.payload).headers(headers);
            if let Some(key) = &record.key {
                message = message.key(key);
            }
            loop {
                match self.inner.send_result(message) {
                    Ok(delivery) => {
                        pending.push_back((delivery, &record.topic));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue is full: wait for the oldest acknowledgement first.
                        message = back;
                        match pending.pop_front() {
                            Some((delivery, topic)) => self.acknowledged(delivery, topic).await?,
                            None => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                    Err((e, _)) => return Err(self.error(&record.topic, e)),
                }
            }
        }
        for (delivery, topic) in pending {
            self.acknowledged(delivery, topic).await?;
        }
        Ok(())
    }

    async fn acknowledged(&self, delivery: DeliveryFuture, topic: &str) -> Result<()> {
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(self.error(topic, e)),
            Err(_) => Err(Error::Source(format!("kafka {}: the producer stopped before {topic} acknowledged", self.brokers))),
        }
    }

    fn error(&self, topic: &str, e: KafkaError) -> Error {
        Error::Source(format!("kafka {}: producing to {topic}: {e}", self.brokers))
    }

    /// Whether records and offsets commit in one transaction.
    pub fn is_transactional(&self) -> bool {
        self.transactional
    }

    /// Opens a transaction (transactional producers only).
    pub fn begin(&self) -> Result<()> {
        self.inner.begin_transaction().map_err(|e| Error::Source(format!("kafka {}: beginning a transaction: {e}", self.brokers)))
    }

    /// Commits the open transaction with `consumer`'s `offsets`: the records sent since
    /// [`Producer::begin`] and the consumed position become visible together.
    pub fn commit_with(&self, consumer: &Consumer, offsets: &Offsets) -> Result<()> {
        let err = |what: &str, e: KafkaError| Error::Source(format!("kafka {}: {what}: {e}", self.brokers));
        let metadata = consumer
            .group_metadata()
            .ok_or_else(|| Error::Source(format!("kafka group {}: no group metadata for a transaction", consumer.group())))?;
        let mut list = rdkafka::TopicPartitionList::new();
        for ((topic, partition), next) in offsets {
            list.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*next))
                .map_err(|e| err("offsets of the transaction", e))?;
        }
        let timeout = Timeout::After(Duration::from_secs(30));
        let result = self
            .inner
            .send_offsets_to_transaction(&list, &metadata, timeout)
            .and_then(|()| self.inner.commit_transaction(timeout));
        if let Err(e) = result {
            let _ = self.inner.abort_transaction(timeout);
            return Err(err("committing the transaction (aborted: its records are not visible to read_committed consumers)", e));
        }
        Ok(())
    }

    /// Waits until every record sent so far was acknowledged.
    pub fn flush(&self) -> Result<()> {
        self.inner.flush(Timeout::After(DELIVERY_TIMEOUT)).map_err(|e| Error::Source(format!("kafka {}: flush: {e}", self.brokers)))
    }
}
