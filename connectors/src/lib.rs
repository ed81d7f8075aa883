//! Sluice's connectors: sources data comes from and sinks it lands in, one folder per protocol.
//!
//! [`registry`] lists them by name; the engine wires them into DataFusion and Ballista.

pub mod avro;
pub mod files;
pub mod json;
pub mod kafka;
pub mod mqtt;
pub mod mysql;
pub mod parquet;
pub mod postgres;
pub mod quarantine;
pub mod relational;
pub mod rest;
pub mod tls;

// The connectors and the lake report data errors with one type.
pub use sluice_lake::{Error, Result, error};

/// `value` seconds from setting `key` as a duration: negative, NaN or endless values are errors
/// that name the setting (`Duration::from_secs_f64` would panic on them).
pub fn seconds(key: &str, value: f64) -> Result<std::time::Duration> {
    std::time::Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| d.as_secs() < 10 * 365 * 24 * 3600)
        .ok_or_else(|| Error::Config(format!("{key} = {value}: give a number of seconds from 0 up to a few years")))
}

/// What a connector can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// It reads data into Sluice.
    Source,
    /// It writes data out of Sluice.
    Sink,
}

/// A connector known to Sluice.
#[derive(Debug, Clone, Copy)]
pub struct Connector {
    /// Name used in job files and on the command line.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// Whether it reads, writes or both.
    pub roles: &'static [Role],
}

/// Every connector, by name.
pub fn registry() -> Vec<Connector> {
    vec![
        Connector {
            name: "parquet",
            description: "Parquet files in a local directory (a data set is a directory of part files)",
            roles: &[Role::Source, Role::Sink],
        },
        Connector {
            name: "postgres",
            description: "PostgreSQL tables and queries, read in parallel partitions, incrementally by a watermark",
            roles: &[Role::Source],
        },
        Connector {
            name: "mysql",
            description: "MySQL and MariaDB tables and queries, read in parallel partitions, incrementally by a watermark",
            roles: &[Role::Source],
        },
        Connector {
            name: "rest",
            description: "REST/JSON APIs (CRM systems): next-link, cursor, offset and page pagination, bearer or OAuth2, retries, incremental",
            roles: &[Role::Source],
        },
        Connector {
            name: "mqtt",
            description: "MQTT subscriptions (IoT devices) landed in micro-batches, acknowledged after each commit",
            roles: &[Role::Source],
        },
        Connector {
            name: "files",
            description: "Files from any datastore: NDJSON (plain or gzip, bad lines quarantined), CSV, Parquet",
            roles: &[Role::Source],
        },
        Connector {
            name: "delta",
            description: "Data assets: versioned Delta Lake tables in the lake (local, Azure Blob, ADLS Gen2, S3)",
            roles: &[Role::Source, Role::Sink],
        },
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn seconds_refuse_what_is_no_duration() {
        assert_eq!(super::seconds("a", 1.5).unwrap(), std::time::Duration::from_millis(1500));
        for bad in [-1.0, f64::NAN, f64::INFINITY, 1e30] {
            let e = super::seconds("read.batch_seconds", bad).unwrap_err().to_string();
            assert!(e.starts_with("read.batch_seconds = "), "{e}");
        }
    }
}
