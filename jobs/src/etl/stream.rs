//! Jobs whose source is a live MQTT subscription: each micro-batch of messages is decoded
//! (bad ones quarantined), de-duplicated by key and event time against the events seen before,
//! transformed, and committed as one asset version; its messages are acknowledged after that.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::row::{RowConverter, SortField};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use sluice_connectors::delta::Lake;
use sluice_connectors::json::{JsonOptions, RecordDecoder};
use sluice_connectors::mqtt::Subscription;
use sluice_engine::assets::{WriteOptions, write_asset};

use super::config::{Dedup, JobFile, SourceConfig};
use crate::error::{Error, Result};

/// Events remembered for de-duplication (the oldest are forgotten first).
const DEDUP_MEMORY: usize = 1_000_000;

/// What happened in a stream job.
#[derive(Debug, Clone, Serialize)]
pub enum StreamEvent {
    /// Subscribed; messages published from now on land.
    Subscribed {
        /// The topic filters.
        topics: Vec<String>,
    },
    /// A micro-batch landed.
    Batch(BatchSummary),
}

/// One micro-batch.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchSummary {
    /// Its number in this run (1-based).
    pub number: u64,
    /// Records read.
    pub read: u64,
    /// Rows landed, and the version they landed as.
    pub landed: u64,
    /// The asset version (None when nothing landed).
    pub version: Option<u64>,
    /// Records quarantined.
    pub quarantined: u64,
    /// Events already seen, dropped.
    pub duplicates: u64,
    /// Seconds from the first message to the commit.
    pub seconds: f64,
}

/// Whether `job` reads a live subscription (and so runs until stopped).
pub fn is_stream(job: &JobFile) -> bool {
    job.sources.values().any(|s| matches!(s, SourceConfig::Mqtt { .. }))
}

/// Runs a stream job until its stop condition or Ctrl-C; `on_event` hears of each batch.
pub async fn run_stream(lake: &Lake, job: &JobFile, on_event: &mut dyn FnMut(&StreamEvent)) -> Result<Vec<BatchSummary>> {
    let (name, source) = match job.sources.iter().next() {
        Some((name, source)) if job.sources.len() == 1 => (name.clone(), source),
        _ => return Err(Error::Invalid("an MQTT job reads one source; land other sources in jobs of their own".into())),
    };
    let SourceConfig::Mqtt { connection, read, schema, infer, sample, flatten, dedup } = source else {
        return Err(Error::Invalid("a stream job needs an mqtt source".into()));
    };
    let options = JsonOptions { schema: schema.clone(), infer: *infer, sample: *sample, flatten: flatten.clone() };
    let ctx = sluice_engine::session::in_process(&sluice_udfs::functions("mqtt"), Some(lake))?;

    let mut subscription = Subscription::connect(&name, connection, read).await?;
    on_event(&StreamEvent::Subscribed { topics: read.topics.clone() });
    let mut state = StreamState { decoder: None, seen: Seen::default(), sequence: 0 };
    let mut batches = Vec::new();
    while read.max_batches.is_none_or(|max| (batches.len() as u64) < max) {
        let Some(messages) = subscription.next_batch(read).await? else { break };
        let started = Instant::now();
        let mut summary =
            land(&ctx, lake, job, &name, &options, dedup.as_ref(), &mut state, &messages).await?;
        // Acknowledged only now: a crash before this re-delivers the batch (at-least-once).
        subscription.ack(&messages).await?;
        summary.number = batches.len() as u64 + 1;
        summary.seconds = started.elapsed().as_secs_f64();
        on_event(&StreamEvent::Batch(summary.clone()));
        batches.push(summary);
    }
    subscription.close().await;
    Ok(batches)
}

struct StreamState {
    decoder: Option<RecordDecoder>,
    seen: Seen,
    sequence: u64,
}

/// Lands one micro-batch.
#[allow(clippy::too_many_arguments)]
async fn land(
    ctx: &SessionContext,
    lake: &Lake,
    job: &JobFile,
    name: &str,
    options: &JsonOptions,
    dedup: Option<&Dedup>,
    state: &mut StreamState,
    messages: &[rumqttc::Publish],
) -> Result<BatchSummary> {
    let mut texts = Vec::new();
    let mut locations = Vec::new();
    for message in messages {
        state.sequence += 1;
        let payload = String::from_utf8_lossy(&message.payload);
        let lines: Vec<&str> = payload.lines().filter(|l| !l.trim().is_empty()).collect();
        for (i, line) in lines.iter().enumerate() {
            let mut at = format!("{} message {}", message.topic, state.sequence);
            if lines.len() > 1 {
                at.push_str(&format!(" line {}", i + 1));
            }
            texts.push(line.to_string());
            locations.push(at);
        }
    }
    let decoder = match &state.decoder {
        Some(d) => d.clone(),
        None => {
            let schema = options.schema_from(&texts[..texts.len().min(options.sample)])
                .map_err(|e| Error::Invalid(format!("sources.{name}: {e}")))?;
            let d = RecordDecoder::new(schema, options.flatten.clone());
            state.decoder = Some(d.clone());
            d
        }
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let decoded = decoder.decode(&refs, &|i| locations[i].clone())?;
    let mut summary = BatchSummary { read: texts.len() as u64, quarantined: decoded.rejects.len() as u64, ..Default::default() };

    if !decoded.rejects.is_empty() {
        let rows = sluice_connectors::quarantine::batch(name, &decoded.rejects)?;
        let options = WriteOptions { job: job.job.name.clone(), ..Default::default() };
        write_asset(lake, &job.quarantine_asset(), ctx.read_batch(rows)?, &options).await?;
    }
    let Some(batch) = decoded.batch else { return Ok(summary) };
    let batch = match dedup {
        Some(dedup) => {
            let kept = state.seen.first_sightings(&batch, dedup, name)?;
            summary.duplicates = (batch.num_rows() - kept.num_rows()) as u64;
            kept
        }
        None => batch,
    };
    if batch.num_rows() == 0 {
        return Ok(summary);
    }
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(table))?;
    let df = ctx.sql(&job.sql()).await?;
    let options = WriteOptions {
        mode: job.sink.mode.parse()?,
        partition_by: job.sink.partition_by.clone(),
        sort_by: job.sink.sort_by.clone(),
        compression: job.sink.compression.clone(),
        job: job.job.name.clone(),
        ..Default::default()
    };
    let written = write_asset(lake, &job.sink.asset, df, &options).await?;
    summary.landed = written.rows;
    summary.version = Some(written.version);
    Ok(summary)
}

/// Events seen (by key and event time), the oldest forgotten first.
#[derive(Default)]
struct Seen {
    set: HashSet<Vec<u8>>,
    order: VecDeque<Vec<u8>>,
}

impl Seen {
    /// The rows of `batch` whose event was not seen before (nor earlier in the batch).
    fn first_sightings(&mut self, batch: &RecordBatch, dedup: &Dedup, source: &str) -> Result<RecordBatch> {
        let schema = batch.schema();
        let mut columns = Vec::new();
        for name in dedup.key.iter().chain(dedup.time.iter()) {
            let (i, field) = schema.column_with_name(name).ok_or_else(|| {
                Error::Invalid(format!("sources.{source}.dedup: '{name}' is not a column of the records"))
            })?;
            columns.push((batch.column(i).clone(), SortField::new(field.data_type().clone())));
        }
        let converter = RowConverter::new(columns.iter().map(|(_, f)| f.clone()).collect())?;
        let rows = converter.convert_columns(&columns.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>())?;
        let mut keep = Vec::with_capacity(batch.num_rows());
        for row in rows.iter() {
            let key = row.as_ref().to_vec();
            let new = self.set.insert(key.clone());
            if new {
                self.order.push_back(key);
                if self.order.len() > DEDUP_MEMORY
                    && let Some(old) = self.order.pop_front()
                {
                    self.set.remove(&old);
                }
            }
            keep.push(new);
        }
        Ok(arrow::compute::filter_record_batch(batch, &BooleanArray::from(keep))?)
    }
}
