//! The job file of `sluice stream`: which topics, how micro-batches are cut, the SQL run on each,
//! where results, dead letters and raw events go.

use std::path::Path;

use serde::Deserialize;
use sluice_connectors::json::JsonOptions;
use sluice_connectors::kafka::{KafkaConnection, StartFrom};
use sluice_connectors::postgres::ServingTable;

use sluice_catalog::error::{Error, Result};
use sluice_catalog::jobfile::{from_toml, read_job_file};

/// A stream job file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamJob {
    /// Name and description.
    pub job: StreamInfo,
    /// How to reach the cluster.
    #[serde(default)]
    pub kafka: KafkaConnection,
    /// What to read.
    pub input: Input,
    /// How micro-batches are cut.
    #[serde(default)]
    pub batch: Batching,
    /// The SQL run on each micro-batch (`predict` included) and where its rows go.
    pub output: Option<Output>,
    /// The cold path: raw events into a data asset.
    pub land: Option<Land>,
    /// Drift of the events and scores per window, against the model's training data.
    pub monitor: Option<super::drift::StreamMonitor>,
}

/// The job's name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamInfo {
    /// Name: the default consumer group, and the job in lineage.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
}

/// The topics read and how their JSON payloads become columns.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Topics to read.
    pub topics: Vec<String>,
    /// Consumer group (default `sluice-<job name>`); processes of one group share the partitions.
    pub group: Option<String>,
    /// Where a group with no committed offset starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub start: StartFrom,
    /// The micro-batch's table name in the SQL (default `events`).
    #[serde(default = "default_table")]
    pub table: String,
    /// How payloads are encoded: `json` (default) or `avro` (Confluent wire format, `[input.avro]`).
    #[serde(default)]
    pub format: PayloadFormat,
    /// Column types, `"id bigint, a float"`: the payload's fields (JSON objects).
    pub schema: Option<String>,
    /// Nested objects become `parent<sep>child` columns (e.g. `"_"`; JSON only).
    pub flatten: Option<String>,
    /// Parse numbers written as strings (`"seq": "15"`) into number columns (JSON only; default
    /// false: such events are dead letters).
    #[serde(default)]
    pub coerce: bool,
    /// Columns every JSON event must hold, not null (e.g. its key); an event without one is a
    /// dead letter with the column named.
    #[serde(default)]
    pub required: Vec<String>,
    /// Avro payloads: the reader schema (the columns) and where writer schemas come from.
    pub avro: Option<AvroInput>,
    /// Events that cannot be decoded or scored go here with the error (default
    /// `<first topic>.dead-letters`).
    pub dead_letter_topic: Option<String>,
    /// Create input topics that do not exist yet (default false: the stream waits for them,
    /// saying so every 30 s).
    #[serde(default)]
    pub create_topics: bool,
    /// Partitions of the topics `create_topics` creates (default 3).
    #[serde(default = "default_partitions")]
    pub partitions: i32,
}

fn default_partitions() -> i32 {
    3
}

/// The encoding of the events' payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadFormat {
    /// A JSON object per event (default).
    #[default]
    Json,
    /// An Avro record per event in the Confluent wire format (zero byte, 4-byte schema id, record).
    Avro,
}

/// `[input.avro]`: Avro payloads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvroInput {
    /// The reader schema, whose fields are the columns: an `.avsc` file or the JSON itself.
    pub schema: String,
    /// Writer schemas by registry id (`{ 1 = "event-v1.avsc" }`, files or JSON).
    #[serde(default)]
    pub writer_schemas: std::collections::BTreeMap<String, String>,
    /// A Confluent-compatible schema registry (`http://host:8081`) asked for ids not listed; a
    /// URL holding credentials goes in a secret reference (`{ env = "REGISTRY_URL" }`).
    pub registry: Option<sluice_lake::datastore::Setting>,
}

impl AvroInput {
    /// The decoder of these settings, reading the schema files.
    pub fn decoder(&self, batch_size: usize) -> Result<sluice_connectors::avro::AvroDecoder> {
        let reader = schema_text(&self.schema, "input.avro.schema")?;
        let mut writers = std::collections::BTreeMap::new();
        for (id, schema) in &self.writer_schemas {
            let key = format!("input.avro.writer_schemas.{id}");
            let id: u32 = id.parse().map_err(|_| Error::Invalid(format!("{key}: the key must be a schema id (a number)")))?;
            writers.insert(id, schema_text(schema, &key)?);
        }
        let registry = self.registry.as_ref().map(|r| r.resolve("input.avro.registry")).transpose().map_err(Error::Invalid)?;
        sluice_connectors::avro::AvroDecoder::new(&reader, &writers, registry.as_ref().map(|r| r.expose()), batch_size)
            .map_err(|e| Error::Invalid(format!("input.avro: {e}")))
    }
}

/// An Avro schema given inline (JSON) or as a file.
fn schema_text(value: &str, key: &str) -> Result<String> {
    let trimmed = value.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('"') {
        return Ok(value.to_string());
    }
    std::fs::read_to_string(value)
        .map_err(|e| Error::Invalid(format!("{key}: cannot read the schema file {value}: {e} (give a path or the schema's JSON)")))
}

fn default_table() -> String {
    "events".into()
}

/// Micro-batches close at `max_rows` events or `max_latency_ms` after their first event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batching {
    /// Events per micro-batch at most (default 5000).
    #[serde(default = "default_max_rows")]
    pub max_rows: usize,
    /// Milliseconds a micro-batch waits for more events after its first (default 20).
    #[serde(default = "default_max_latency_ms")]
    pub max_latency_ms: u64,
    /// Stop after this many seconds without an event (default: run until stopped).
    pub stop_when_idle_s: Option<f64>,
    /// Seconds between status lines (default 5).
    #[serde(default = "default_status_s")]
    pub status_every_s: f64,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_rows: default_max_rows(),
            max_latency_ms: default_max_latency_ms(),
            stop_when_idle_s: None,
            status_every_s: default_status_s(),
        }
    }
}

fn default_max_rows() -> usize {
    5000
}
fn default_max_latency_ms() -> u64 {
    20
}
fn default_status_s() -> f64 {
    5.0
}

/// How results are delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Offsets are committed after the results were acknowledged; a crash repeats some results,
    /// each naming its source offset (default).
    #[default]
    AtLeastOnce,
    /// Results and offsets commit in one Kafka transaction (brokers that isolate aborted
    /// transactions; Apache Kafka does, the development broker does not).
    ExactlyOnce,
}

/// The SQL of each micro-batch and where its rows go: a topic, a serving table, or both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// The SQL over the micro-batch (`SELECT id, predict('model@production', a, b) AS score
    /// FROM events`). Each row carries `_topic`, `_partition`, `_offset` and `_timestamp` of its
    /// event; results keep them as headers (topic) or columns (table).
    pub sql: String,
    /// Topic the result rows go to, as JSON objects.
    pub topic: Option<String>,
    /// A PostgreSQL table that keeps the latest result per key (`[output.table]`: connection,
    /// table, key, create); a replayed older event never overwrites a newer row.
    pub table: Option<ServingTable>,
    /// Column whose value keys the results (default: the event's own key).
    pub key: Option<String>,
    /// `at_least_once` (default) or `exactly_once`.
    #[serde(default)]
    pub delivery: Delivery,
    /// With `exactly_once`: the producer's transactional id, stable across restarts so that a
    /// restarted process fences its predecessor's open transaction (default
    /// `<group>-<host name>`; give each process of one job its own when several share a host).
    pub transactional_id: Option<String>,
}

/// The cold path: decoded events with their coordinates, committed to a data asset together with
/// the offsets they cover.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Land {
    /// The data asset.
    pub asset: String,
    /// Seconds between commits (default 10).
    #[serde(default = "default_every_s")]
    pub every_s: f64,
    /// Events that close a commit earlier (default 100000).
    #[serde(default = "default_land_rows")]
    pub max_rows: usize,
    /// Partitions by the event's time: `day` (default), `hour` or `none`.
    #[serde(default = "default_partition")]
    pub partition_by: String,
}

fn default_every_s() -> f64 {
    10.0
}
fn default_land_rows() -> usize {
    100_000
}
fn default_partition() -> String {
    "day".into()
}

impl StreamJob {
    /// Reads and checks a job file.
    pub fn load(path: &Path) -> Result<Self> {
        Self::parse(&read_job_file(path)?, &path.display().to_string())
    }

    /// Parses and checks a job file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let job: StreamJob = from_toml(text, origin)?;
        let bad = |msg: &str| Err(Error::Invalid(format!("{origin}: {msg}")));
        if job.input.topics.is_empty() {
            return bad("input.topics: name at least one topic");
        }
        if job.output.is_none() && job.land.is_none() {
            return bad("give an [output] (SQL and topic), a [land] asset, or both");
        }
        if let Some(output) = &job.output
            && output.topic.is_none()
            && output.table.is_none()
        {
            return bad("output: give a topic, a [output.table] serving table, or both");
        }
        if let Some(output) = &job.output {
            if output.delivery == Delivery::ExactlyOnce && job.land.is_some() {
                return bad(
                    "output.delivery = \"exactly_once\" with [land]: the lake commit is not part of the Kafka \
                     transaction, so a crash between the two would land or emit a batch twice; run the landing as \
                     its own job (at-least-once landing is exact: it records its offsets), or use at_least_once here",
                );
            }
            if output.transactional_id.is_some() && output.delivery != Delivery::ExactlyOnce {
                return bad("output.transactional_id goes with delivery = \"exactly_once\"");
            }
        }
        if job.input.partitions < 1 {
            return bad("input.partitions must be at least 1");
        }
        if job.batch.max_rows == 0 {
            return bad("batch.max_rows must be at least 1");
        }
        // Seconds that become durations: a negative, NaN or endless value would stop the job
        // with a panic where it is used.
        let seconds = |key: &str, value: f64, zero_ok: bool| -> Result<()> {
            let fine = sluice_connectors::seconds(key, value).is_ok_and(|d| zero_ok || !d.is_zero());
            if fine {
                return Ok(());
            }
            let least = if zero_ok { "from 0" } else { "above 0" };
            Err(Error::Invalid(format!("{origin}: {key} = {value}: give a number of seconds {least} up to a few years")))
        };
        seconds("batch.status_every_s", job.batch.status_every_s, false)?;
        if let Some(idle) = job.batch.stop_when_idle_s {
            seconds("batch.stop_when_idle_s", idle, true)?;
        }
        if let Some(land) = &job.land {
            seconds("land.every_s", land.every_s, false)?;
        }
        if let Some(land) = &job.land
            && !["day", "hour", "none"].contains(&land.partition_by.as_str())
        {
            return bad("land.partition_by: use day, hour or none");
        }
        let spec = match (job.input.format, &job.input.schema, &job.input.avro) {
            (PayloadFormat::Json, Some(spec), None) => spec.clone(),
            (PayloadFormat::Json, None, _) => return bad("input.schema: give the payload's columns (\"id bigint, a float\")"),
            (PayloadFormat::Json, Some(_), Some(_)) => {
                return bad("[input.avro] is for Avro payloads: set input.format = \"avro\" or remove it");
            }
            (PayloadFormat::Avro, None, Some(_)) if !job.input.required.is_empty() => {
                return bad("input.required is for JSON payloads; an Avro reader schema says which fields may be null");
            }
            (PayloadFormat::Avro, None, Some(_)) if job.input.flatten.is_some() => {
                return bad("input.flatten is for JSON payloads; Avro records keep nested fields as struct columns");
            }
            (PayloadFormat::Avro, None, Some(_)) => String::new(),
            (PayloadFormat::Avro, Some(_), _) => {
                return bad("input.schema is for JSON payloads; Avro events take their columns from [input.avro] schema");
            }
            (PayloadFormat::Avro, None, None) => return bad("input.format = \"avro\" needs [input.avro] schema (an .avsc file)"),
        };
        let columns = sluice_connectors::json::parse_columns(&spec)
            .map_err(|e| Error::Invalid(format!("{origin}: input.schema: {e}")))?;
        super::reserved(columns.iter().map(|c| c.name().as_str()), "input.schema")
            .map_err(|e| Error::Invalid(format!("{origin}: {e}")))?;
        Ok(job)
    }

    /// The producer's transactional id with `exactly_once` (None otherwise): the same on every
    /// start of the job on a host.
    pub fn transactional_id(&self) -> Option<String> {
        let output = self.output.as_ref().filter(|o| o.delivery == Delivery::ExactlyOnce)?;
        Some(output.transactional_id.clone().unwrap_or_else(|| format!("{}-{}", self.group(), sluice_catalog::runs::host())))
    }

    /// The consumer group.
    pub fn group(&self) -> String {
        self.input.group.clone().unwrap_or_else(|| format!("sluice-{}", self.job.name))
    }

    /// The dead-letter topic.
    pub fn dead_letter_topic(&self) -> String {
        self.input.dead_letter_topic.clone().unwrap_or_else(|| format!("{}.dead-letters", self.input.topics[0]))
    }

    /// How JSON payloads are decoded: exactly the declared columns.
    pub fn json(&self) -> JsonOptions {
        JsonOptions {
            schema: self.input.schema.clone(),
            infer: Some(false),
            sample: 0,
            flatten: self.input.flatten.clone(),
            coerce: self.input.coerce,
            required: self.input.required.clone(),
        }
    }

    /// Whether a job file's text (variables replaced) is a Kafka stream job: it has
    /// `[input] topics`, which ETL and scoring jobs do not.
    pub fn looks_like(text: &str) -> bool {
        sluice_catalog::jobfile::is_stream_job(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"
[job]
name = "scores"
[input]
topics = ["events"]
schema = "id bigint, a float"
[output]
sql = "SELECT id, a * 2 AS b FROM events"
topic = "out"
"#;

    #[test]
    fn parses_with_defaults() {
        let job = StreamJob::parse(JOB, "job.toml").unwrap();
        assert_eq!(job.group(), "sluice-scores");
        assert_eq!(job.dead_letter_topic(), "events.dead-letters");
        assert_eq!(job.batch.max_rows, 5000);
        assert_eq!(job.kafka.brokers, "127.0.0.1:9092");
        assert!(StreamJob::looks_like(JOB));
    }

    #[test]
    fn names_what_is_wrong() {
        let e = StreamJob::parse(&JOB.replace("topic = \"out\"", "topik = \"out\""), "job.toml").unwrap_err().to_string();
        assert!(e.contains("job.toml") && e.contains("topik"), "{e}");
        let e = StreamJob::parse(&JOB.replace("id bigint", "id bogus"), "job.toml").unwrap_err().to_string();
        assert!(e.contains("input.schema"), "{e}");
        let e = StreamJob::parse(&JOB.replace("id bigint", "_offset bigint"), "job.toml").unwrap_err().to_string();
        assert!(e.contains("'_offset' is the name Sluice gives"), "{e}");
        let avro = JOB.replace("schema = \"id bigint, a float\"", "format = \"avro\"");
        let e = StreamJob::parse(&avro, "job.toml").unwrap_err().to_string();
        assert!(e.contains("needs [input.avro] schema"), "{e}");
        let e = StreamJob::parse(&JOB.replace("[input]", "[input]\nformat = \"avro\""), "job.toml").unwrap_err().to_string();
        assert!(e.contains("input.schema is for JSON payloads"), "{e}");
        let avro = avro.replace("[output]", "[input.avro]\nschema = \"e.avsc\"\nwriter_schemas = { v1 = \"{}\" }\n[output]");
        let job = StreamJob::parse(&avro, "job.toml").unwrap();
        let e = job.input.avro.as_ref().unwrap().decoder(10).unwrap_err().to_string();
        assert!(e.contains("input.avro.schema: cannot read the schema file e.avsc"), "{e}");
        let e = StreamJob::parse(&avro.replace("format = \"avro\"", "format = \"json\""), "job.toml").unwrap_err().to_string();
        assert!(e.contains("input.schema: give the payload's columns"), "{e}");
    }

    /// Seconds that used to panic where they became durations (TOML writes NaN and infinity as
    /// `nan` and `inf`) are refused at parse time with the key.
    #[test]
    fn bad_seconds_are_refused_with_their_key() {
        let with = |table: &str, line: &str| JOB.replace("[output]", &format!("[{table}]\n{line}\n[output]"));
        for (table, key, value) in [
            ("batch", "status_every_s", "-1.0"),
            ("batch", "status_every_s", "nan"),
            ("batch", "status_every_s", "inf"),
            ("batch", "status_every_s", "0.0"),
            ("batch", "stop_when_idle_s", "-5.0"),
            ("batch", "stop_when_idle_s", "nan"),
            ("batch", "stop_when_idle_s", "inf"),
        ] {
            let text = with(table, &format!("{key} = {value}"));
            let e = StreamJob::parse(&text, "job.toml").unwrap_err().to_string();
            assert!(e.contains(&format!("{table}.{key} = ")) && e.contains("number of seconds"), "{key} = {value}: {e}");
        }
        let land = |every: &str| format!("{JOB}\n[land]\nasset = \"raw\"\nevery_s = {every}\n");
        for every in ["-1.0", "nan", "inf", "0.0", "1e300"] {
            let e = StreamJob::parse(&land(every), "job.toml").unwrap_err().to_string();
            assert!(e.contains("land.every_s = ") && e.contains("number of seconds"), "every_s = {every}: {e}");
        }
        assert!(StreamJob::parse(&land("0.5"), "job.toml").is_ok());
        assert!(StreamJob::parse(&with("batch", "stop_when_idle_s = 0.0"), "job.toml").is_ok());
    }

    /// Exactly-once results with a lake landing cannot be atomic together: refused, with why.
    #[test]
    fn exactly_once_with_land_is_refused_and_the_transactional_id_is_stable() {
        let exactly = JOB.replace("topic = \"out\"", "topic = \"out\"\ndelivery = \"exactly_once\"");
        let e = StreamJob::parse(&format!("{exactly}\n[land]\nasset = \"raw\"\n"), "job.toml").unwrap_err().to_string();
        assert!(e.contains("exactly_once") && e.contains("[land]") && e.contains("twice"), "{e}");
        let job = StreamJob::parse(&exactly, "job.toml").unwrap();
        assert_eq!(job.transactional_id(), job.transactional_id(), "the same id on every start");
        assert!(job.transactional_id().unwrap().starts_with("sluice-scores-"), "{:?}", job.transactional_id());
        let named = exactly.replace("delivery = ", "transactional_id = \"scores-a\"\ndelivery = ");
        assert_eq!(StreamJob::parse(&named, "job.toml").unwrap().transactional_id().as_deref(), Some("scores-a"));
        assert_eq!(StreamJob::parse(JOB, "job.toml").unwrap().transactional_id(), None);
        let e = StreamJob::parse(&JOB.replace("topic = \"out\"", "topic = \"out\"\ntransactional_id = \"x\""), "job.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("goes with delivery"), "{e}");
    }
}
