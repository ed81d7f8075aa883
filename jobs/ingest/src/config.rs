//! ETL job files: sources -> SQL transform -> a data asset, validated before anything runs.
//!
//! ```toml
//! [job]
//! name = "customers"
//!
//! [sources.crm]                  # read as table `crm` in the transform
//! kind = "postgres"
//! connection = { host = "127.0.0.1", database = "crm", password = { env = "PGPASSWORD" } }
//! read = { table = "public.customers", partition_column = "id", watermark_column = "updated_at" }
//!
//! [transform]
//! sql = "SELECT id, name, updated_at FROM crm"
//!
//! [sink]
//! asset = "customers"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sluice_connectors::files::{BinaryOptions, CsvOptions, Format};
use sluice_connectors::json::JsonOptions;
use sluice_connectors::mysql::MysqlConnection;
use sluice_connectors::postgres::PostgresConnection;
use sluice_connectors::relational::TableRead;
use sluice_connectors::mqtt::{MqttConnection, MqttRead};
use sluice_connectors::rest::{RestConnection, RestRead};

use sluice_catalog::error::{Error, Result};
pub use sluice_catalog::jobfile::ErrorThreshold;
use sluice_catalog::jobfile::{from_toml, interpolate, read_job_file};

/// A job file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// What the job is.
    pub job: JobInfo,
    /// Named sources; each is a table of that name in the transform.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// A scoring job instead of sources and a transform: a model over an asset into the sink.
    pub score: Option<sluice_score::score::ScoreConfig>,
    /// A quality check instead: predictions joined with labels, the report appended to the sink.
    pub quality: Option<sluice_monitor::quality::QualitySpec>,
    /// The SQL that shapes the rows (default: all rows of the only source).
    #[serde(default)]
    pub transform: Transform,
    /// Where the rows land.
    pub sink: SinkConfig,
    /// Where records that cannot be parsed or typed go, and how many a run tolerates.
    #[serde(default)]
    pub quarantine: QuarantineConfig,
    /// De-duplication, rules and a profile for the transform's rows.
    pub prepare: Option<sluice_datasets::prepare::Prepare>,
}

/// The quarantine of a job: bad records land there with their location and reason.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuarantineConfig {
    /// The quarantine asset (default: the sink's name with `_quarantine`).
    pub asset: Option<String>,
    /// The run fails once more records than this are bad: a count (`100`) or a percentage of
    /// the records read (`"2.5%"`); default: no limit, every bad record is quarantined.
    pub max_errors: Option<ErrorThreshold>,
}

/// The job's name and description.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInfo {
    /// Name, recorded in each version's lineage.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// When `sluice serve` runs it: cron, `"0 2 * * *"` (or 6 fields with seconds first).
    pub schedule: Option<String>,
    /// The schedule's time zone (IANA name; default UTC).
    pub timezone: Option<String>,
    /// Fire times missed while nothing served: `last` (default, one run), `all` or `none`.
    pub catch_up: Option<String>,
}

impl JobInfo {
    /// The job's schedule, when it has one.
    pub fn schedule(&self) -> Result<Option<crate::schedule::Schedule>> {
        self.schedule
            .as_deref()
            .map(|s| crate::schedule::Schedule::parse(s, self.timezone.as_deref(), self.catch_up.as_deref()))
            .transpose()
    }
}

/// One source.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
#[allow(clippy::large_enum_variant)] // parsed once per job
pub enum SourceConfig {
    /// A PostgreSQL table or query, read in parallel partitions on the executors.
    Postgres {
        /// How to connect.
        connection: PostgresConnection,
        /// What to read.
        read: TableRead,
    },
    /// A MySQL or MariaDB table or query, read in parallel partitions on the executors.
    Mysql {
        /// How to connect.
        connection: MysqlConnection,
        /// What to read.
        read: TableRead,
    },
    /// A REST/JSON API (a CRM): pages of records, read on the executors.
    Rest {
        /// How to reach the API (base URL, auth, retries).
        connection: RestConnection,
        /// What to read (path, records, pagination, incremental).
        read: RestRead,
        /// Column types, `"Id string, Amount double"` (they win over inferred types).
        schema: Option<String>,
        /// Infer columns from the first page (default true; false reads exactly `schema`).
        infer: Option<bool>,
        /// Records sampled to infer columns (default 1000).
        #[serde(default = "default_sample")]
        sample: usize,
        /// Flatten nested objects into `parent<sep>child` columns (e.g. `"_"`); default keeps
        /// them as structs.
        flatten: Option<String>,
        /// Parse numbers written as strings (`"seq": "15"`) into number columns (default false:
        /// such records are quarantined).
        #[serde(default)]
        coerce: bool,
        /// De-duplicate records with the same key (and time), keeping one.
        dedup: Option<Dedup>,
        /// Columns every record must hold, not null; a record without one is quarantined (the
        /// dedup key and time are always required).
        #[serde(default)]
        required: Vec<String>,
    },
    /// A live MQTT subscription (IoT devices), landed in micro-batches until stopped.
    Mqtt {
        /// How to reach the broker.
        connection: MqttConnection,
        /// Topics and micro-batches.
        read: MqttRead,
        /// Column types, `"device_id string, ts timestamp"` (they win over inferred types).
        schema: Option<String>,
        /// Infer columns from the first micro-batch (default true; false reads exactly `schema`).
        infer: Option<bool>,
        /// Records sampled to infer columns (default 1000).
        #[serde(default = "default_sample")]
        sample: usize,
        /// Flatten nested objects into `parent<sep>child` columns (e.g. `"_"`).
        flatten: Option<String>,
        /// Parse numbers written as strings (`"seq": "15"`) into number columns (default false:
        /// such records are quarantined).
        #[serde(default)]
        coerce: bool,
        /// Drop events seen before (same key and event time: re-sends, late duplicates).
        dedup: Option<Dedup>,
        /// Columns every message must hold, not null; a message without one is quarantined (the
        /// dedup key and time are always required).
        #[serde(default)]
        required: Vec<String>,
    },
    /// Files in a datastore or a local directory (read by the executors).
    Files {
        /// A directory or file URL: `az://raw/events/`, `file:///data/x.csv`, a local path
        /// (relative to the job file).
        url: String,
        /// `parquet`, `csv`, `ndjson` (CSV and NDJSON also `.gz`) or `binary` (any file as a row of
        /// path, name, size, modified time, content type and bytes).
        format: FileFormat,
        /// CSV: whether the first line names the columns (default true).
        #[serde(default = "default_true")]
        header: bool,
        /// CSV: the field delimiter (default `,`).
        #[serde(default = "default_delimiter")]
        delimiter: char,
        /// CSV: the quote character (default `"`; a quote inside quotes is doubled).
        #[serde(default = "default_quote")]
        quote: char,
        /// CSV: an escape character inside quoted fields (e.g. `\\`), when quotes are not doubled.
        escape: Option<char>,
        /// CSV: the files' text encoding (default `utf-8`; `windows-1252`, `latin1`, `shift_jis`, ...).
        #[serde(default = "default_encoding")]
        encoding: String,
        /// CSV: quoted fields may hold line breaks (files are then read whole, not in pieces).
        #[serde(default)]
        multiline: bool,
        /// File name ending to read (default: by format, e.g. `.csv`, also `.csv.gz`; binary: all
        /// files).
        extension: Option<String>,
        /// CSV and NDJSON: column types, `"device_id string, ts timestamp, reading double"` (they
        /// win over inferred types; CSV without a header: the columns in order).
        schema: Option<String>,
        /// CSV and NDJSON: infer columns from a sample (default true; false reads exactly `schema`).
        infer: Option<bool>,
        /// CSV and NDJSON: records sampled to infer columns (default 1000).
        #[serde(default = "default_sample")]
        sample: usize,
        /// NDJSON: flatten nested objects into `parent<sep>child` columns (e.g. `"_"`); default
        /// keeps them as structs.
        flatten: Option<String>,
        /// NDJSON: parse numbers written as strings (`"seq": "15"`) into number columns (default
        /// false: such records are quarantined).
        #[serde(default)]
        coerce: bool,
        /// Binary: files up to this many bytes carry their content; larger ones have NULL content
        /// and are read by path (default 16 MiB).
        max_inline_bytes: Option<u64>,
        /// CSV, NDJSON and binary: parallel reads (default: the session's target partitions).
        partitions: Option<usize>,
        /// De-duplicate records with the same key and event time (late re-sends, retries),
        /// keeping one.
        dedup: Option<Dedup>,
        /// NDJSON: columns every record must hold, not null; a record without one is quarantined
        /// (the dedup key and time are always required).
        #[serde(default)]
        required: Vec<String>,
    },
}

impl SourceConfig {
    /// How a JSON source's records become columns (REST, MQTT, files; None for the others):
    /// its declared columns, inference, flattening, coercion and required columns.
    pub fn json_options(&self) -> Option<JsonOptions> {
        let (schema, infer, sample, flatten, coerce) = match self {
            SourceConfig::Rest { schema, infer, sample, flatten, coerce, .. }
            | SourceConfig::Mqtt { schema, infer, sample, flatten, coerce, .. }
            | SourceConfig::Files { schema, infer, sample, flatten, coerce, .. } => (schema, infer, sample, flatten, coerce),
            _ => return None,
        };
        Some(JsonOptions {
            schema: schema.clone(),
            infer: *infer,
            sample: *sample,
            flatten: flatten.clone(),
            coerce: *coerce,
            required: self.required_columns(),
        })
    }

    /// The columns every JSON record of the source must hold: its dedup key and time, and its
    /// `required` columns, each once.
    fn required_columns(&self) -> Vec<String> {
        let (dedup, required) = match self {
            SourceConfig::Rest { dedup, required, .. }
            | SourceConfig::Mqtt { dedup, required, .. }
            | SourceConfig::Files { dedup, required, .. } => (dedup, required),
            _ => return Vec::new(),
        };
        let mut columns: Vec<String> = Vec::new();
        let keys = dedup.iter().flat_map(|d| d.key.iter().chain(d.time.iter()));
        for column in keys.chain(required.iter()) {
            if !columns.contains(column) {
                columns.push(column.clone());
            }
        }
        columns
    }

    /// How a files source's records are read by Sluice's own reader (CSV, NDJSON, binary), with
    /// the options checked; None for Parquet files and other sources.
    pub fn files_format(&self) -> Option<std::result::Result<Format, String>> {
        let SourceConfig::Files {
            format,
            header,
            delimiter,
            quote,
            escape,
            encoding,
            multiline,
            schema,
            infer,
            sample,
            flatten,
            coerce,
            max_inline_bytes,
            required,
            ..
        } = self
        else {
            return None;
        };
        let only = |set: bool, key: &str, formats: &str| {
            if set { Err(format!("{key} is for format = {formats}, not {}", format.name())) } else { Ok(()) }
        };
        let checked = (|| {
            only(flatten.is_some() && *format != FileFormat::Ndjson, "flatten", "\"ndjson\"")?;
            only(*coerce && *format != FileFormat::Ndjson, "coerce", "\"ndjson\"")?;
            only(!required.is_empty() && *format != FileFormat::Ndjson, "required", "\"ndjson\"")?;
            only(max_inline_bytes.is_some() && *format != FileFormat::Binary, "max_inline_bytes", "\"binary\"")?;
            let text = matches!(format, FileFormat::Csv | FileFormat::Ndjson);
            only(!text && (schema.is_some() || infer.is_some()), "schema", "\"csv\" or \"ndjson\"")?;
            let csv = *format == FileFormat::Csv;
            only(!csv && (escape.is_some() || *multiline || encoding != &default_encoding()), "a CSV option", "\"csv\"")?;
            if let Some(spec) = schema {
                sluice_connectors::json::parse_columns(spec).map_err(|e| e.to_string())?;
            }
            Ok(Some(match format {
                FileFormat::Parquet => return Ok(None),
                FileFormat::Ndjson => match self.json_options() {
                    Some(options) => Format::Ndjson(options),
                    None => return Ok(None),
                },
                FileFormat::Csv => {
                    let options = CsvOptions {
                        header: *header,
                        delimiter: *delimiter,
                        quote: *quote,
                        escape: *escape,
                        encoding: encoding.clone(),
                        multiline: *multiline,
                        schema: schema.clone(),
                        infer: *infer,
                        sample: *sample,
                    };
                    options.check().map_err(|e| e.to_string())?;
                    Format::Csv(options)
                }
                FileFormat::Binary => {
                    let defaults = BinaryOptions::default();
                    Format::Binary(BinaryOptions {
                        max_inline_bytes: max_inline_bytes.unwrap_or(defaults.max_inline_bytes),
                    })
                }
            }))
        })();
        checked.transpose()
    }
}

/// Which records are the same event.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dedup {
    /// The key columns (e.g. `["device_id"]`).
    pub key: Vec<String>,
    /// The event-time column; records with the same key and time are one event.
    pub time: Option<String>,
}

/// Formats of a files source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma (or other) separated values.
    Csv,
    /// Newline-delimited JSON.
    Ndjson,
    /// Unstructured files (images, PDFs, audio) as rows with their bytes.
    Binary,
}

impl FileFormat {
    /// The name written in job files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Csv => "csv",
            Self::Ndjson => "ndjson",
            Self::Binary => "binary",
        }
    }

    /// The file name ending read by default (all files when None).
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Self::Parquet => Some(".parquet"),
            Self::Csv => Some(".csv"),
            Self::Ndjson => Some(".json"),
            Self::Binary => None,
        }
    }
}

/// The transform step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transform {
    /// One SQL query over the sources (by name) and any asset (`name`, `name@7`).
    pub sql: Option<String>,
}

/// The asset the rows land in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The asset's name.
    pub asset: String,
    /// `append` (default), `overwrite`, or `merge` (rows replace the asset's rows of the same
    /// `key`, the others are appended).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Merge: the key columns (`["account_id"]`).
    #[serde(default)]
    pub key: Vec<String>,
    /// Merge: a boolean column of the rows; true removes the key from the asset (the column is
    /// not stored).
    pub delete: Option<String>,
    /// Partition columns.
    #[serde(default)]
    pub partition_by: Vec<String>,
    /// Sort order (`col` or `col DESC`).
    #[serde(default)]
    pub sort_by: Vec<String>,
    /// Parquet compression (default `zstd(3)`).
    #[serde(default = "default_compression")]
    pub compression: String,
}

fn default_true() -> bool {
    true
}
fn default_sample() -> usize {
    1000
}
fn default_delimiter() -> char {
    ','
}
fn default_quote() -> char {
    '"'
}
fn default_encoding() -> String {
    "utf-8".into()
}
fn default_mode() -> String {
    "append".into()
}
fn default_compression() -> String {
    "zstd(3)".into()
}

impl JobFile {
    /// Reads and validates the job file at `path`: syntax and keys (errors name the file, line
    /// and key), then what the keys mean together.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_job_file(path)?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates a job file's text; `origin` names it in errors. `${NAME}` and
    /// `${NAME:-default}` are replaced by environment variables first.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let job: JobFile = from_toml(text, origin).map_err(|e| {
            let stream = interpolate(text).is_ok_and(|t| sluice_catalog::jobfile::is_stream_job(&t));
            if stream {
                return Error::Invalid(format!(
                    "{origin} is a Kafka stream job ([input] topics): run it with `sluice stream {origin}`"
                ));
            }
            e
        })?;
        let bad = |msg: String| Error::Invalid(format!("{origin}: {msg}"));
        if let Some(score) = &job.score {
            if !job.sources.is_empty() || job.transform.sql.is_some() || job.prepare.is_some() {
                return Err(bad("a [score] job has no sources, transform or prepare: it reads score.input".into()));
            }
            score.check().map_err(|e| bad(format!("score.{e}")))?;
        } else if job.quality.is_some() {
            if !job.sources.is_empty() || job.transform.sql.is_some() || job.prepare.is_some() {
                return Err(bad("a [quality] job has no sources, transform or prepare: it reads quality.predictions".into()));
            }
        } else if job.sources.is_empty() {
            return Err(bad(
                "no sources: add a [sources.NAME] table with kind = \"postgres\", \"mysql\", \"rest\", \"mqtt\" or \"files\", \
                 a [score] or a [quality] table"
                    .into(),
            ));
        }
        sluice_lake::delta::AssetRef::parse(&job.sink.asset).map_err(|e| bad(format!("sink.asset: {e}")))?;
        let mode = job.sink.mode.parse::<sluice_lake::delta::WriteMode>().map_err(|e| bad(format!("sink.mode: {e}")))?;
        match (mode, job.sink.key.is_empty()) {
            (sluice_lake::delta::WriteMode::Merge, true) => {
                return Err(bad("sink.mode = \"merge\" needs sink.key = [\"column\", ...]: the columns that make rows the same".into()));
            }
            (sluice_lake::delta::WriteMode::Merge, false) => {}
            (_, false) => return Err(bad(format!("sink.key is for mode = \"merge\", not \"{}\"", job.sink.mode))),
            (_, true) if job.sink.delete.is_some() => {
                return Err(bad(format!("sink.delete is for mode = \"merge\", not \"{}\"", job.sink.mode)));
            }
            _ => {}
        }
        if job.transform.sql.is_none() && job.sources.len() > 1 {
            return Err(bad("several sources need [transform] sql = \"...\" saying how they combine".into()));
        }
        for (name, source) in &job.sources {
            let read = match source {
                SourceConfig::Postgres { read, .. } | SourceConfig::Mysql { read, .. } => Some(read),
                SourceConfig::Files { .. } | SourceConfig::Rest { .. } | SourceConfig::Mqtt { .. } => None,
            };
            if let Some(read) = read
                && read.table.is_some() == read.query.is_some()
            {
                return Err(bad(format!("sources.{name}.read: give exactly one of table or query")));
            }
            if let SourceConfig::Files { dedup, .. } = source {
                source.files_format().transpose().map_err(|e| bad(format!("sources.{name}: {e}")))?;
                if dedup.as_ref().is_some_and(|d| d.key.is_empty()) {
                    return Err(bad(format!("sources.{name}.dedup.key: name at least one key column")));
                }
            }
        }
        if let Some(asset) = &job.quarantine.asset {
            sluice_lake::delta::AssetRef::parse(asset).map_err(|e| bad(format!("quarantine.asset: {e}")))?;
        }
        if job.job.schedule.is_none() && (job.job.timezone.is_some() || job.job.catch_up.is_some()) {
            return Err(bad("job.timezone and job.catch_up go with job.schedule".into()));
        }
        job.job.schedule().map_err(|e| bad(format!("job.{e}")))?;
        if let Some(prepare) = &job.prepare {
            prepare.check().map_err(|e| bad(e.to_string()))?;
            if let Some(asset) = &prepare.violations {
                sluice_lake::delta::AssetRef::parse(asset).map_err(|e| bad(format!("prepare.violations: {e}")))?;
            }
        }
        Ok(job)
    }

    /// The quarantine asset's name.
    pub fn quarantine_asset(&self) -> String {
        self.quarantine.asset.clone().unwrap_or_else(|| format!("{}_quarantine", self.sink.asset))
    }

    /// The transform's SQL.
    pub fn sql(&self) -> String {
        match (&self.transform.sql, self.sources.keys().next()) {
            (Some(sql), _) => sql.clone(),
            (None, Some(only)) => format!("SELECT * FROM \"{only}\""),
            (None, None) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = r#"
[job]
name = "customers"

[sources.crm]
kind = "postgres"
connection = { database = "test" }
read = { table = "public.customers", partition_column = "id" }

[sink]
asset = "customers"
"#;

    #[test]
    fn a_stream_job_given_to_run_says_which_command_runs_it() {
        let job = "[job]\nname = \"s\"\n\n[kafka]\nbrokers = \"b:9092\"\n\n[input]\ntopics = [\"t\"]\n\n[output]\nsql = \"SELECT 1\"\n";
        let e = JobFile::parse(job, "job.toml").unwrap_err().to_string();
        assert!(e.contains("run it with `sluice stream job.toml`"), "{e}");
    }

    #[test]
    fn an_unclosed_placeholder_before_multibyte_text_is_an_error_not_a_panic() {
        let text = "[job]\nname = \"x\"\ndescription = \"${KUNDEN Übersicht für das Geschäftsjahr — 顧客一覧 ☃☃☃☃\"\n";
        let e = interpolate(text).unwrap_err();
        assert!(e.starts_with("line 3: unclosed ${ in '${KUNDEN Übersicht für das Geschäftsjahr"), "{e}");
        assert!(e.contains("${NAME:-default}"), "{e}");
        // Every cut inside the multibyte run is an error too, never a panic.
        for cut in 0..text.len() {
            if text.is_char_boundary(cut) {
                let _ = interpolate(&text[..cut]);
            }
        }
    }

    #[test]
    fn environment_variables_fill_placeholders() {
        assert_eq!(interpolate("a ${SLUICE_TEST_UNSET_X:-b} c").unwrap(), "a b c");
        assert_eq!(interpolate("x > ${watermark} AND x <= ${run_start}").unwrap(), "x > ${watermark} AND x <= ${run_start}");
        assert!(interpolate("${SLUICE_TEST_UNSET_X}").unwrap_err().contains("SLUICE_TEST_UNSET_X} is not set"));
        assert_eq!(interpolate("${PATH}").unwrap(), std::env::var("PATH").unwrap());
    }

    #[test]
    fn valid_jobs_parse_and_mistakes_name_the_key_and_line() {
        let job = JobFile::parse(JOB, "job.toml").unwrap();
        assert_eq!(job.sql(), "SELECT * FROM \"crm\"");
        let e =
            JobFile::parse(&JOB.replace("partition_column", "partition_colum"), "job.toml").unwrap_err().to_string();
        assert!(e.contains("job.toml: line 8: unknown key `partition_colum`"), "{e}");
        let e = JobFile::parse(&JOB.replace("kind = \"postgres\"", "kind = \"oracle\""), "job.toml").unwrap_err();
        assert!(e.to_string().contains("oracle"), "{e}");
        let e = JobFile::parse(&JOB.replace("asset = \"customers\"", "asset = \"_x\""), "j").unwrap_err().to_string();
        assert!(e.contains("sink.asset"), "{e}");
        let e = JobFile::parse(&JOB.replace("[sink]", "[sink]\nmode = \"upsert\""), "j").unwrap_err().to_string();
        assert!(e.contains("write mode 'upsert'"), "{e}");
    }

    #[test]
    fn error_thresholds_are_counts_or_percentages() {
        let with = |t: &str| JobFile::parse(&format!("{JOB}\n[quarantine]\nmax_errors = {t}\n"), "j");
        assert_eq!(with("10").unwrap().quarantine.max_errors, Some(ErrorThreshold::Count(10)));
        assert_eq!(with("\"2.5%\"").unwrap().quarantine.max_errors, Some(ErrorThreshold::Percent(2.5)));
        assert_eq!(with("\"3\"").unwrap().quarantine.max_errors, Some(ErrorThreshold::Count(3)));
        let e = with("\"lots\"").unwrap_err().to_string();
        assert!(e.contains("'lots' is neither a count"), "{e}");
        assert!(ErrorThreshold::Percent(2.5).exceeded(3, 100));
        assert!(!ErrorThreshold::Percent(2.5).exceeded(2, 100));
        assert!(ErrorThreshold::Count(2).exceeded(3, 1_000_000));
        assert_eq!(with("1").unwrap().quarantine_asset(), "customers_quarantine");
    }
}
