//! MQTT subscriptions (IoT devices): messages gathered into micro-batches and acknowledged only
//! once the batch they are in has landed (QoS 1 with a persistent session: at-least-once).

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::datastore::SecretRef;
use crate::error::{Error, Result};

/// How to reach the broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConnection {
    /// Broker host (default 127.0.0.1).
    #[serde(default = "default_host")]
    pub host: String,
    /// Broker port (default 1883).
    #[serde(default = "default_port")]
    pub port: u16,
    /// Client id; the broker keeps its session (and unacknowledged messages) across runs
    /// (default `sluice-<source>`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// User name, when the broker wants one.
    #[serde(default)]
    pub username: Option<String>,
    /// Password (`{ env = "NAME" }` or `{ file = "PATH" }`).
    #[serde(default)]
    pub password: Option<SecretRef>,
}

/// What to subscribe to and how to cut micro-batches.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttRead {
    /// Topic filters (`devices/+/events`).
    pub topics: Vec<String>,
    /// A micro-batch closes at this many messages (default 10000)...
    #[serde(default = "default_batch_messages")]
    pub batch_messages: usize,
    /// ...or this many seconds after its first message (default 5).
    #[serde(default = "default_batch_seconds")]
    pub batch_seconds: f64,
    /// Stop after this many seconds without a message (default or 0: run until stopped).
    #[serde(default)]
    pub stop_when_idle_s: Option<f64>,
    /// Stop after this many micro-batches (default: run until stopped).
    #[serde(default)]
    pub max_batches: Option<u64>,
}

fn default_host() -> String {
    "127.0.0.1".into()
}
fn default_port() -> u16 {
    1883
}
fn default_batch_messages() -> usize {
    10_000
}
fn default_batch_seconds() -> f64 {
    5.0
}

/// A live subscription.
pub struct Subscription {
    source: String,
    /// How long a micro-batch stays open after its first message.
    batch_window: Duration,
    /// How long without a message ends the run.
    idle_stop: Duration,
    client: AsyncClient,
    messages: mpsc::Receiver<std::result::Result<Publish, String>>,
}

impl Subscription {
    /// Connects and subscribes; returns once the broker confirmed the subscription.
    pub async fn connect(source: &str, connection: &MqttConnection, read: &MqttRead) -> Result<Self> {
        let at = format!("{}:{}", connection.host, connection.port);
        let key = |name: &str| format!("sources.{source}.read.{name}");
        let batch_window = crate::seconds(&key("batch_seconds"), read.batch_seconds)?;
        let idle_stop = match read.stop_when_idle_s {
            Some(s) if s != 0.0 => crate::seconds(&key("stop_when_idle_s"), s)?,
            // Run until stopped (a year of silence included).
            _ => Duration::from_secs(365 * 24 * 3600),
        };
        let client_id = connection.client_id.clone().unwrap_or_else(|| format!("sluice-{source}"));
        let mut options = MqttOptions::new(client_id, connection.host.clone(), connection.port);
        options.set_keep_alive(Duration::from_secs(30)).set_clean_session(false).set_manual_acks(true);
        if let Some(user) = &connection.username {
            let password = match &connection.password {
                Some(p) => p
                    .resolve(&format!("sources.{source}.connection.password"))
                    .map_err(|e| Error::Config(format!("source '{source}': {e}")))?
                    .expose()
                    .to_string(),
                None => String::new(),
            };
            options.set_credentials(user.clone(), password);
        }
        let (client, mut events) = AsyncClient::new(options, 1000);
        for topic in &read.topics {
            client
                .subscribe(topic.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| Error::Source(format!("source '{source}': subscribing to {topic}: {e}")))?;
        }
        // A bounded channel: a slow landing slows the reading instead of filling memory.
        let (tx, messages) = mpsc::channel(read.batch_messages.max(1));
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let name = source.to_string();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut subscribed = 0;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(Ok(p)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subscribed += 1;
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(Ok(subscribed));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(Err(e.to_string()));
                            return;
                        }
                        // rumqttc reconnects on the next poll; unacknowledged messages come again.
                        tracing::warn!(source = %name, error = %e, "MQTT connection lost; reconnecting");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        match tokio::time::timeout(Duration::from_secs(10), ready).await {
            Ok(Ok(Ok(_))) => Ok(Self { source: source.to_string(), batch_window, idle_stop, client, messages }),
            Ok(Ok(Err(e))) => Err(Error::Source(format!(
                "source '{source}': cannot connect to the MQTT broker at {at}: {e}; is it running?"
            ))),
            _ => Err(Error::Source(format!("source '{source}': the MQTT broker at {at} did not confirm the subscription"))),
        }
    }

    /// The next micro-batch: messages until `read.batch_messages` or `read.batch_seconds` after
    /// the first; None once idle for `read.stop_when_idle_s` or on Ctrl-C (what was not
    /// acknowledged comes again on the next run).
    pub async fn next_batch(&mut self, read: &MqttRead) -> Result<Option<Vec<Publish>>> {
        let idle = self.idle_stop;
        let first = tokio::select! {
            m = self.messages.recv() => m,
            _ = tokio::time::sleep(idle) => return Ok(None),
            _ = tokio::signal::ctrl_c() => return Ok(None),
        };
        let mut batch = match first {
            Some(Ok(p)) => vec![p],
            Some(Err(e)) => return Err(Error::Source(format!("source '{}': {e}", self.source))),
            None => return Ok(None),
        };
        let deadline = tokio::time::Instant::now() + self.batch_window;
        while batch.len() < read.batch_messages {
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(Ok(p))) => batch.push(p),
                Ok(Some(Err(e))) => return Err(Error::Source(format!("source '{}': {e}", self.source))),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Some(batch))
    }

    /// Acknowledges a batch that landed.
    pub async fn ack(&self, batch: &[Publish]) -> Result<()> {
        for p in batch {
            self.client.ack(p).await.map_err(|e| Error::Source(format!("source '{}': acknowledging: {e}", self.source)))?;
        }
        Ok(())
    }

    /// Disconnects (after the acknowledgements queued are sent).
    pub async fn close(self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
