//! What the brokers say before a stream starts: a broker that does not answer is an error at
//! once (never an idle topic), and topics that do not exist yet are named, waited for, or
//! created.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

use super::config::KafkaConnection;
use crate::error::{Error, Result};

/// The topics of `topics` the cluster at `connection` does not have; an error naming the
/// brokers when none of them answers within `timeout`.
pub async fn missing_topics(connection: &KafkaConnection, topics: &[String], timeout: Duration) -> Result<Vec<String>> {
    let config = connection.client_config()?;
    let brokers = connection.brokers.clone();
    let topics = topics.to_vec();
    tokio::task::spawn_blocking(move || {
        let client: BaseConsumer = config
            .create()
            .map_err(|e| Error::Source(format!("kafka {brokers}: cannot create a client: {e}")))?;
        // All topics (naming one could make a broker with auto-create on create it).
        let metadata = client.fetch_metadata(None, timeout).map_err(|e| {
            Error::Source(format!(
                "kafka {brokers}: no broker answered within {} s ({e}); check kafka.brokers and that the broker runs",
                timeout.as_secs()
            ))
        })?;
        let known: Vec<&str> =
            metadata.topics().iter().filter(|t| t.error().is_none() && !t.partitions().is_empty()).map(|t| t.name()).collect();
        Ok(topics.into_iter().filter(|t| !known.contains(&t.as_str())).collect())
    })
    .await
    .map_err(|e| Error::Source(format!("kafka: the metadata request failed: {e}")))?
}

/// Creates `topics` with `partitions` partitions each and the cluster's default replication
/// (or 1 where the broker does not take "default"); a topic another process created meanwhile
/// is fine.
pub async fn create_topics(connection: &KafkaConnection, topics: &[String], partitions: i32) -> Result<()> {
    match create(connection, topics, partitions, -1).await {
        Err(Retry::Replication) => create(connection, topics, partitions, 1).await.map_err(Retry::into_error),
        other => other.map_err(Retry::into_error),
    }
}

enum Retry {
    Replication,
    Failed(Error),
}

impl Retry {
    fn into_error(self) -> Error {
        match self {
            Self::Replication => Error::Source("kafka: the broker refused the topics' replication factor".into()),
            Self::Failed(e) => e,
        }
    }
}

async fn create(connection: &KafkaConnection, topics: &[String], partitions: i32, replication: i32) -> std::result::Result<(), Retry> {
    use rdkafka::types::RDKafkaErrorCode as Code;
    let admin: AdminClient<DefaultClientContext> = connection.client_config().map_err(Retry::Failed)?.create().map_err(|e| {
        Retry::Failed(Error::Source(format!("kafka {}: cannot create an admin client: {e}", connection.brokers)))
    })?;
    let new: Vec<NewTopic> = topics.iter().map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication))).collect();
    let results = admin
        .create_topics(&new, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))))
        .await
        .map_err(|e| Retry::Failed(Error::Source(format!("kafka {}: creating {}: {e}", connection.brokers, topics.join(", ")))))?;
    for result in results {
        match result {
            Ok(_) | Err((_, Code::TopicAlreadyExists)) => {}
            Err((_, Code::InvalidReplicationFactor)) if replication == -1 => return Err(Retry::Replication),
            Err((topic, code)) => {
                return Err(Retry::Failed(Error::Source(format!("kafka {}: cannot create topic {topic}: {code}", connection.brokers))));
            }
        }
    }
    Ok(())
}
