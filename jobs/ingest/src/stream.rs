//! Jobs whose source is a live MQTT subscription: each micro-batch of spooled messages is decoded
//! (bad ones quarantined), de-duplicated by key and event time against the events seen before,
//! transformed, and committed as one asset version that records the spool position it reached;
//! a restart lands what the spool holds past that position, once.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::row::{RowConverter, SortField};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use sluice_lake::delta::Lake;
use sluice_connectors::json::{JsonOptions, RecordDecoder};
use sluice_connectors::json::Reject;
use sluice_connectors::mqtt::{Batch, Record, Spool, Subscription};
use sluice_engine::assets::{WriteOptions, write_asset};

use super::config::{Dedup, JobFile, SourceConfig};
use sluice_catalog::error::{Error, Result};

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
    /// Messages that an earlier run spooled (acknowledged) but did not land land first.
    Resumed {
        /// How many.
        messages: usize,
        /// The spool they are in.
        spool: String,
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
    let SourceConfig::Mqtt { connection, read, dedup, .. } = source else {
        return Err(Error::Invalid("a stream job needs an mqtt source".into()));
    };
    let options = source.json_options().unwrap_or_default();
    let ctx = sluice_engine::session::in_process(&sluice_udfs::functions("mqtt"), Some(lake))?;

    let spool = Spool::open(&read.spool_path(&connection.client_id(&name)))?;
    // Where the last run got to: the spool's own record, or a commit it made before it could
    // write that record (a crash between the two).
    let sink_mark = landed_mark(lake, &job.sink.asset, spool.id()).await?;
    let quarantine_mark = landed_mark(lake, &job.quarantine_asset(), spool.id()).await?;
    let resume_after = spool.landed();
    let cut_short = sink_mark.max(quarantine_mark);
    let spool_id = spool.id().to_string();
    let spool_dir = spool.dir().display().to_string();
    let mut subscription = Subscription::connect(&name, connection, read, spool, resume_after).await?;
    if subscription.to_replay() > 0 {
        on_event(&StreamEvent::Resumed { messages: subscription.to_replay(), spool: spool_dir });
    }
    on_event(&StreamEvent::Subscribed { topics: read.topics.clone() });
    let mut state =
        StreamState { decoder: None, seen: Seen::default(), spool_id, max_message_bytes: read.max_message_bytes };
    let mut batches = Vec::new();
    // The batch a crash cut short is landed again as it was, skipping the asset it reached.
    let mut first_replay = (cut_short > resume_after).then_some(cut_short);
    while read.max_batches.is_none_or(|max| (batches.len() as u64) < max) {
        let Some(batch) = subscription.next_batch(read, first_replay).await? else { break };
        let started = Instant::now();
        let last = batch.last_seq();
        let skip = Skip {
            quarantine: first_replay.is_some() && quarantine_mark >= last,
            sink: first_replay.is_some() && sink_mark >= last,
        };
        first_replay = None;
        let mut summary = land(&ctx, lake, job, &name, &options, dedup.as_ref(), &mut state, &batch, skip).await?;
        // Only now does the spool let go of them; a crash before this lands them again, and the
        // position in the commits keeps them from landing twice.
        subscription.landed(last)?;
        summary.number = batches.len() as u64 + 1;
        summary.seconds = started.elapsed().as_secs_f64();
        on_event(&StreamEvent::Batch(summary.clone()));
        batches.push(summary);
    }
    subscription.close().await;
    Ok(batches)
}

/// The lineage key of a landed spool position.
const SPOOL_MARK: &str = "mqtt_spool";

/// The highest spool position that `asset` recorded for spool `id` (0 when none).
async fn landed_mark(lake: &Lake, asset: &str, id: &str) -> Result<u64> {
    if !lake.exists(asset).await? {
        return Ok(0);
    }
    let history = lake.history(asset, None).await?;
    Ok(history
        .iter()
        .find_map(|v| {
            let mark = v.lineage.as_ref()?.get(SPOOL_MARK)?;
            (mark.get("id")?.as_str()? == id).then(|| mark.get("upto")?.as_u64())?
        })
        .unwrap_or(0))
}

/// Which writes of a batch landed before a crash.
#[derive(Debug, Clone, Copy, Default)]
struct Skip {
    quarantine: bool,
    sink: bool,
}

struct StreamState {
    decoder: Option<RecordDecoder>,
    seen: Seen,
    /// Recorded with each commit, with the last position it holds.
    spool_id: String,
    max_message_bytes: usize,
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
    batch: &Batch,
    skip: Skip,
) -> Result<BatchSummary> {
    let mut texts = Vec::new();
    let mut locations = Vec::new();
    let mut oversize = Vec::new();
    for Record { seq, topic, payload, size, oversize: over } in &batch.records {
        let payload = String::from_utf8_lossy(payload);
        if *over {
            oversize.push(Reject {
                location: format!("{topic} message {seq}"),
                raw: payload.into_owned(),
                reason: format!(
                    "a message of {size} bytes, over sources.{name}.read.max_message_bytes = {} (its first KiB is kept here); raise the limit to land such messages",
                    state.max_message_bytes
                ),
            });
            continue;
        }
        let lines: Vec<&str> = payload.lines().filter(|l| !l.trim().is_empty()).collect();
        for (i, line) in lines.iter().enumerate() {
            let mut at = format!("{topic} message {seq}");
            if lines.len() > 1 {
                at.push_str(&format!(" line {}", i + 1));
            }
            texts.push(line.to_string());
            locations.push(at);
        }
    }
    let mark = serde_json::Map::from_iter([(
        SPOOL_MARK.to_string(),
        serde_json::json!({ "id": state.spool_id, "upto": batch.last_seq() }),
    )]);
    if texts.is_empty() && oversize.is_empty() {
        return Ok(BatchSummary::default());
    }
    let decoder = match &state.decoder {
        Some(d) => Some(d.clone()),
        None if texts.is_empty() => None,
        None => {
            let schema = options.schema_from(&texts[..texts.len().min(options.sample)])
                .map_err(|e| Error::Invalid(format!("sources.{name}: {e}")))?;
            let d = options.decoder(schema).map_err(|e| Error::Invalid(format!("sources.{name}: {e}")))?;
            state.decoder = Some(d.clone());
            Some(d)
        }
    };
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut decoded = match decoder {
        Some(decoder) => decoder.decode(&refs, &|i| locations[i].clone())?,
        None => sluice_connectors::json::Decoded { batch: None, rejects: Vec::new() },
    };
    decoded.rejects.extend(oversize.iter().cloned());
    let read = (texts.len() + oversize.len()) as u64;
    let mut summary = BatchSummary { read, quarantined: decoded.rejects.len() as u64, ..Default::default() };

    if !decoded.rejects.is_empty() && !skip.quarantine {
        let rows = sluice_connectors::quarantine::batch(name, &decoded.rejects)?;
        let options = WriteOptions { job: job.job.name.clone(), lineage: mark.clone(), ..Default::default() };
        write_asset(lake, &job.quarantine_asset(), ctx.read_batch(rows)?, &options).await?;
    }
    let Some(rows) = decoded.batch else { return Ok(summary) };
    let batch = match dedup {
        Some(dedup) => {
            let kept = state.seen.first_sightings(&rows, dedup, name)?;
            summary.duplicates = (rows.num_rows() - kept.num_rows()) as u64;
            kept
        }
        None => rows,
    };
    if batch.num_rows() == 0 || skip.sink {
        summary.landed = if skip.sink { batch.num_rows() as u64 } else { 0 };
        return Ok(summary);
    }
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(table))?;
    let df = ctx.sql(&job.sql()).await?;
    let options = WriteOptions {
        mode: job.sink.mode.parse()?,
        key: job.sink.key.clone(),
        delete_column: job.sink.delete.clone(),
        partition_by: job.sink.partition_by.clone(),
        sort_by: job.sink.sort_by.clone(),
        compression: job.sink.compression.clone(),
        job: job.job.name.clone(),
        lineage: mark,
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
