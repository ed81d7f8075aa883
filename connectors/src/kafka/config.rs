//! How to reach a Kafka cluster, shared by the consumer and the producer.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::{Deserialize, Serialize};

use sluice_lake::datastore::SecretRef;
use crate::error::{Error, Result};

/// How to reach the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConnection {
    /// Bootstrap servers, `host:port[,host:port...]` (default 127.0.0.1:9092).
    #[serde(default = "default_brokers")]
    pub brokers: String,
    /// `plaintext` (default), `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default)]
    pub security_protocol: Option<String>,
    /// SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`), with `username`/`password`.
    #[serde(default)]
    pub sasl_mechanism: Option<String>,
    /// SASL user name.
    #[serde(default)]
    pub username: Option<String>,
    /// SASL password (`{ env = "NAME" }` or `{ file = "PATH" }`).
    #[serde(default)]
    pub password: Option<SecretRef>,
    /// Other client properties, as librdkafka names them (`"socket.keepalive.enable" = "true"`).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConnection {
    fn default() -> Self {
        Self {
            brokers: default_brokers(),
            security_protocol: None,
            sasl_mechanism: None,
            username: None,
            password: None,
            properties: BTreeMap::new(),
        }
    }
}

fn default_brokers() -> String {
    "127.0.0.1:9092".into()
}

/// Where a consumer group with no committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest event the topic keeps (default: nothing already there is missed).
    #[default]
    Earliest,
    /// Events produced from now on.
    Latest,
}

impl KafkaConnection {
    /// The client settings both sides share; the password never leaves this config.
    pub(crate) fn client_config(&self) -> Result<ClientConfig> {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            if key.contains("password") || key.contains("secret") {
                return Err(Error::Config(format!(
                    "kafka property '{key}': give secrets as `password = {{ env = \"NAME\" }}`, not in properties"
                )));
            }
            config.set(key, value);
        }
        if let Some(protocol) = &self.security_protocol {
            config.set("security.protocol", protocol);
        }
        if let Some(mechanism) = &self.sasl_mechanism {
            config.set("sasl.mechanism", mechanism);
        }
        if let Some(user) = &self.username {
            config.set("sasl.username", user);
        }
        if let Some(password) = &self.password {
            let secret = password.resolve("kafka password").map_err(Error::Config)?;
            config.set("sasl.password", secret.expose());
        }
        Ok(config)
    }
}
