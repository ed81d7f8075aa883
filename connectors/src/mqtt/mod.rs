//! MQTT subscriptions (IoT devices): each message is spooled to disk and acknowledged at once,
//! then landed in micro-batches; the spool remembers the last position that landed, so a crash
//! loses nothing and lands nothing twice (QoS 1 with a persistent session).

mod config;
mod source;
mod spool;

pub use config::{MqttConnection, MqttRead};
pub use source::{Batch, Subscription};
pub use spool::{Record, Spool};
