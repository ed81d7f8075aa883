//! A live subscription: a task reads the broker, a thread spools what arrives (synced before the
//! acknowledgement), and the job takes micro-batches of spooled records.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::mpsc;

use super::config::{MqttConnection, MqttRead};
use super::spool::{Record, Spool};
use crate::error::{Error, Result};

/// The largest packet MQTT allows: nothing the broker may send is refused by the client (a
/// smaller limit would drop the connection on a large message, and the broker would send it
/// again on every reconnect).
const MAX_PACKET: usize = 268_435_455 + 5;
/// Messages spooled by one sync at most.
const GROUP: usize = 4096;

/// A micro-batch of spooled records.
#[derive(Debug)]
pub struct Batch {
    /// The records, oldest first.
    pub records: Vec<Record>,
    /// Whether they come from the spool of an earlier run (landed before this one started).
    pub replayed: bool,
}

impl Batch {
    /// The last record's position.
    pub fn last_seq(&self) -> u64 {
        self.records.last().map_or(0, |r| r.seq)
    }
}

/// A live subscription.
pub struct Subscription {
    source: String,
    /// How long a micro-batch stays open after its first message.
    batch_window: Duration,
    /// How long without a message ends the run.
    idle_stop: Duration,
    client: AsyncClient,
    spool: Arc<Mutex<Spool>>,
    /// Records spooled by an earlier run that have not landed.
    replay: VecDeque<Record>,
    records: mpsc::Receiver<std::result::Result<Record, String>>,
    /// Set when the job disconnects: the connection's end is then no loss.
    closing: Arc<AtomicBool>,
}

impl Subscription {
    /// Connects and subscribes; returns once the broker confirmed the subscription. The records
    /// of `spool` after `resume_after` are served first.
    pub async fn connect(
        source: &str,
        connection: &MqttConnection,
        read: &MqttRead,
        spool: Spool,
        resume_after: u64,
    ) -> Result<Self> {
        let at = format!("{}:{}", connection.host, connection.port);
        let key = |name: &str| format!("sources.{source}.read.{name}");
        let batch_window = crate::seconds(&key("batch_seconds"), read.batch_seconds)?;
        let idle_stop = match read.stop_when_idle_s {
            Some(s) if s != 0.0 => crate::seconds(&key("stop_when_idle_s"), s)?,
            // Run until stopped (a year of silence included).
            _ => Duration::from_secs(365 * 24 * 3600),
        };
        if read.batch_messages == 0 {
            return Err(Error::Config(format!("{} = 0: give at least 1", key("batch_messages"))));
        }
        let replay: VecDeque<Record> = spool.records_after(resume_after)?.into();
        if !replay.is_empty() {
            tracing::info!(source, records = replay.len(), spool = %spool.dir().display(),
                "MQTT: landing the messages an earlier run spooled but did not land");
        }
        let mut options = MqttOptions::new(connection.client_id(source), connection.host.clone(), connection.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
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
        let tls_key = format!("sources.{source}.connection.tls");
        if let Some(tls) = connection.tls.as_ref().map(|t| t.client_config(&tls_key)).transpose()?.flatten() {
            options.set_transport(rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(tls)));
        }
        let (client, mut events) = AsyncClient::new(options, GROUP);
        for topic in &read.topics {
            client
                .subscribe(topic.clone(), QoS::AtLeastOnce)
                .await
                .map_err(|e| Error::Source(format!("source '{source}': subscribing to {topic}: {e}")))?;
        }
        let spool = Arc::new(Mutex::new(spool));
        // What arrives is bounded by the broker's in-flight window (nothing is acknowledged before
        // it is spooled), so this channel needs no bound of its own; with one, a full channel
        // would stop the polling that sends the spooler's acknowledgements. The spooled records
        // wait in a bounded one: a slow landing slows the acknowledgements, and the broker
        // holds back.
        let (incoming_tx, incoming) = mpsc::unbounded_channel::<Publish>();
        let (records_tx, records) = mpsc::channel(read.batch_messages.clamp(GROUP, 1 << 20));
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let name = source.to_string();
        let errors = records_tx.clone();
        let closing = Arc::new(AtomicBool::new(false));
        let closed = closing.clone();
        tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut subscribed = 0;
            let mut lost = false;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if incoming_tx.send(p).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        subscribed += 1;
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(Ok(subscribed));
                        }
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) if lost => {
                        lost = false;
                        tracing::info!(source = %name, "MQTT connection back; the broker sends what was not acknowledged");
                    }
                    Ok(_) => {}
                    Err(_) if closed.load(Ordering::SeqCst) => return,
                    Err(e) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(Err(e.to_string()));
                            return;
                        }
                        if let ConnectionError::ConnectionRefused(code) = e {
                            let _ = errors.send(Err(format!("the broker refused the connection ({code:?})"))).await;
                            return;
                        }
                        // rumqttc reconnects on the next poll; what was not acknowledged comes again.
                        tracing::warn!(source = %name, error = %e, "MQTT connection lost; reconnecting");
                        lost = true;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        let spooler = Spooler { spool: spool.clone(), client: client.clone(), max_message_bytes: read.max_message_bytes };
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name(format!("mqtt-spool-{source}"))
            .spawn(move || spooler.run(&runtime, incoming, records_tx))
            .map_err(|e| Error::Source(format!("source '{source}': starting the spool thread: {e}")))?;
        match tokio::time::timeout(Duration::from_secs(10), ready).await {
            Ok(Ok(Ok(_))) => {
                Ok(Self { source: source.to_string(), batch_window, idle_stop, client, spool, replay, records, closing })
            },
            Ok(Ok(Err(e))) => Err(Error::Source(format!(
                "source '{source}': cannot connect to the MQTT broker at {at}: {e}; is it running?"
            ))),
            _ => Err(Error::Source(format!("source '{source}': the MQTT broker at {at} did not confirm the subscription"))),
        }
    }

    /// The next micro-batch: first the records an earlier run left (at most `replay_upto`, when
    /// given, so a batch cut short by a crash is landed again as it was), then messages until
    /// `read.batch_messages` or `read.batch_seconds` after the first; None once idle for
    /// `read.stop_when_idle_s` or on Ctrl-C (what was spooled lands on the next run).
    pub async fn next_batch(&mut self, read: &MqttRead, replay_upto: Option<u64>) -> Result<Option<Batch>> {
        if !self.replay.is_empty() {
            let mut records = Vec::new();
            while records.len() < read.batch_messages
                && let Some(r) = self.replay.front()
                && replay_upto.is_none_or(|upto| r.seq <= upto)
            {
                records.extend(self.replay.pop_front());
            }
            if !records.is_empty() {
                return Ok(Some(Batch { records, replayed: true }));
            }
        }
        let idle = self.idle_stop;
        let first = tokio::select! {
            m = self.records.recv() => m,
            _ = tokio::time::sleep(idle) => return Ok(None),
            _ = tokio::signal::ctrl_c() => return Ok(None),
        };
        let mut records = match first {
            Some(Ok(r)) => vec![r],
            Some(Err(e)) => return Err(Error::Source(format!("source '{}': {e}", self.source))),
            None => return Ok(None),
        };
        let deadline = tokio::time::Instant::now() + self.batch_window;
        while records.len() < read.batch_messages {
            match tokio::time::timeout_at(deadline, self.records.recv()).await {
                Ok(Some(Ok(r))) => records.push(r),
                Ok(Some(Err(e))) => return Err(Error::Source(format!("source '{}': {e}", self.source))),
                Ok(None) | Err(_) => break,
            }
        }
        Ok(Some(Batch { records, replayed: false }))
    }

    /// How many records of an earlier run are still to land.
    pub fn to_replay(&self) -> usize {
        self.replay.len()
    }

    /// Records that every record up to `seq` landed (the spool forgets them).
    pub fn landed(&self, seq: u64) -> Result<()> {
        self.spool.lock().map_err(|_| Error::Source("MQTT spool: a spooling thread failed".into()))?.mark_landed(seq)
    }

    /// Disconnects (after the acknowledgements queued are sent).
    pub async fn close(self) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.closing.store(true, Ordering::SeqCst);
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Spools what arrives, a group per sync, and only then acknowledges it.
struct Spooler {
    spool: Arc<Mutex<Spool>>,
    client: AsyncClient,
    max_message_bytes: usize,
}

impl Spooler {
    fn run(
        self,
        runtime: &tokio::runtime::Handle,
        mut incoming: mpsc::UnboundedReceiver<Publish>,
        records: mpsc::Sender<std::result::Result<Record, String>>,
    ) {
        while let Some(first) = incoming.blocking_recv() {
            let mut group = vec![first];
            while group.len() < GROUP
                && let Ok(p) = incoming.try_recv()
            {
                group.push(p);
            }
            let spooled = match self.spool(&group) {
                Ok(spooled) => spooled,
                Err(e) => {
                    // Not acknowledged: the broker keeps these messages for the next run.
                    let _ = records.blocking_send(Err(e.to_string()));
                    return;
                }
            };
            for p in &group {
                if runtime.block_on(self.client.ack(p)).is_err() {
                    return;
                }
            }
            for r in spooled {
                if records.blocking_send(Ok(r)).is_err() {
                    return;
                }
            }
        }
    }

    fn spool(&self, group: &[Publish]) -> Result<Vec<Record>> {
        let mut spool = self.spool.lock().map_err(|_| Error::Source("MQTT spool: the landing thread failed".into()))?;
        let mut out = Vec::with_capacity(group.len());
        for p in group {
            if spool.is_redelivery(p) {
                // Spooled already; only its acknowledgement was lost.
                continue;
            }
            out.push(spool.append(p, self.max_message_bytes)?);
        }
        spool.sync()?;
        Ok(out)
    }
}
