//! `sluice stream`: the hot path. A consumer group reads JSON events from Kafka in micro-batches,
//! runs the job's SQL (with `predict`, the same UDF and model version as batch scoring) on each
//! in-process, and produces the result rows keyed like the events; raw events land in a data
//! asset (the cold path). Offsets are committed only after every output of them was acknowledged
//! (and landed), so a crash repeats results, each naming its source offset, but loses none.
//! Events that cannot be decoded or scored go to a dead-letter topic and the stream goes on.
//! The command's arguments are in [`cli`].

pub mod cli;
pub mod config;
pub mod drift;
mod land;

pub use sluice_catalog::{Error, Result, error};

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use arrow::datatypes::{DataType, Field, Int32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use datafusion::common::Column;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection};
use datafusion::prelude::{DataFrame, SessionContext};
use serde::Serialize;
use sluice_lake::delta::Lake;
use sluice_connectors::json::{Decoded, RecordDecoder};
use sluice_connectors::kafka::{Consumer, Message, Offsets, Producer, Record};
use sluice_connectors::postgres::Upserter;

pub use config::StreamJob;
use land::Lander;


/// Columns each event carries besides its payload's: where it came from and when.
pub const COORDINATES: [&str; 4] = ["_topic", "_partition", "_offset", "_timestamp"];

/// An error when one of `names` (the payload's columns, from `key`) is a coordinate's name.
pub fn reserved<'a>(mut names: impl Iterator<Item = &'a str>, key: &str) -> Result<()> {
    match names.find(|n| COORDINATES.contains(n)) {
        Some(taken) => Err(Error::Invalid(format!(
            "{key}: '{taken}' is the name Sluice gives each event's coordinates ({}); rename the column",
            COORDINATES.join(", ")
        ))),
        None => Ok(()),
    }
}

/// What a stream did so far (the status line, and the summary at the end).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StreamStatus {
    /// Seconds since the stream started.
    pub seconds: f64,
    /// Seconds from the first event received to the last micro-batch done (the summary's rates
    /// are over this time: a group join or an idle wait does not count).
    pub busy_seconds: f64,
    /// Events read.
    pub events: u64,
    /// Result rows produced.
    pub outputs: u64,
    /// Events sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Micro-batches processed.
    pub batches: u64,
    /// Events in the last micro-batch.
    pub last_batch: usize,
    /// Events landed in the asset.
    pub landed: u64,
    /// Events behind the end of the assigned partitions (-1: not known yet).
    pub lag: i64,
    /// Events per second read since the last status.
    pub events_per_s: f64,
    /// Result rows per second produced since the last status.
    pub outputs_per_s: f64,
    /// Milliseconds from an event's timestamp to its result's acknowledgement, since the last
    /// status: median and 99th percentile.
    pub latency_p50_ms: f64,
    /// See `latency_p50_ms`.
    pub latency_p99_ms: f64,
    /// Drift windows compared so far.
    pub drift_windows: u64,
    /// The last window's drift: column, deciding metric, its value, whether it drifted.
    pub drift: Vec<(String, &'static str, f64, bool)>,
}

impl StreamStatus {
    /// The status as Prometheus metrics (stable names).
    pub fn metrics(&self) -> Vec<sluice_engine::metrics::Metric> {
        use sluice_engine::metrics::Metric;
        let mut metrics = vec![
            Metric::counter("sluice_stream_events_total", "Events read.", self.events as f64),
            Metric::counter("sluice_stream_results_total", "Result rows produced (topic or serving table).", self.outputs as f64),
            Metric::counter("sluice_stream_dead_letters_total", "Events sent to the dead-letter topic.", self.dead_letters as f64),
            Metric::counter("sluice_stream_landed_total", "Events landed in the asset.", self.landed as f64),
            Metric::counter("sluice_stream_batches_total", "Micro-batches processed.", self.batches as f64),
            Metric::gauge("sluice_stream_batch_events", "Events in the last micro-batch.", self.last_batch as f64),
            Metric::gauge("sluice_stream_lag_events", "Events behind the end of the assigned partitions (-1: not known yet).", self.lag as f64),
            Metric::gauge("sluice_stream_events_per_second", "Events read per second, over the last status interval.", self.events_per_s),
            Metric::gauge("sluice_stream_results_per_second", "Results per second, over the last status interval.", self.outputs_per_s),
            Metric::gauge("sluice_stream_latency_p50_ms", "Median milliseconds from an event's timestamp to its result's acknowledgement.", self.latency_p50_ms),
            Metric::gauge("sluice_stream_latency_p99_ms", "99th percentile of that latency.", self.latency_p99_ms),
            Metric::counter("sluice_stream_drift_windows_total", "Drift windows compared with the reference.", self.drift_windows as f64),
        ];
        for (column, metric, value, _) in &self.drift {
            let help = "The deciding drift metric of a column in the last window.";
            metrics.push(Metric::gauge("sluice_stream_drift_value", help, *value).with_label("column", column).with_label("metric", metric));
        }
        for (column, _, _, drifted) in &self.drift {
            let help = "1 when the column drifted past its threshold in the last window.";
            metrics.push(Metric::gauge("sluice_stream_drift_detected", help, f64::from(u8::from(*drifted))).with_label("column", column));
        }
        metrics
    }
}

impl std::fmt::Display for StreamStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events ({:.0}/s) -> {} results ({:.0}/s), {} dead letters, {} landed, batch {}, latency p50 {:.1} ms p99 {:.1} ms, lag {}",
            self.events,
            self.events_per_s,
            self.outputs,
            self.outputs_per_s,
            self.dead_letters,
            self.landed,
            self.last_batch,
            self.latency_p50_ms,
            self.latency_p99_ms,
            if self.lag < 0 { "?".to_string() } else { self.lag.to_string() },
        )?;
        let drifted: Vec<&str> = self.drift.iter().filter(|d| d.3).map(|d| d.0.as_str()).collect();
        match (self.drift_windows, drifted.is_empty()) {
            (0, _) => Ok(()),
            (n, true) => write!(f, ", window {n}: no drift"),
            (n, false) => write!(f, ", window {n}: DRIFT in {}", drifted.join(", ")),
        }
    }
}

/// Counters and latencies; `window` holds the samples since the last status line.
#[derive(Default)]
struct Meter {
    status: StreamStatus,
    window: Vec<f64>,
    all: Vec<f64>,
    window_events: u64,
    window_outputs: u64,
    window_start: Option<Instant>,
    first_event: Option<Instant>,
    last_done: Option<Instant>,
}

/// Latency samples kept for the run's summary (the first ones; enough for a stable p99).
const SUMMARY_SAMPLES: usize = 2_000_000;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Meter {
    fn record(&mut self, latencies: &[f64]) {
        self.window.extend_from_slice(latencies);
        let room = SUMMARY_SAMPLES.saturating_sub(self.all.len());
        self.all.extend_from_slice(&latencies[..latencies.len().min(room)]);
    }

    /// The status since the last call, and a new window.
    fn snapshot(&mut self, started: Instant, lag: i64) -> StreamStatus {
        let since = self.window_start.replace(Instant::now()).unwrap_or(started).elapsed().as_secs_f64().max(1e-9);
        self.window.sort_by(f64::total_cmp);
        let status = &mut self.status;
        status.seconds = started.elapsed().as_secs_f64();
        status.lag = lag;
        status.events_per_s = self.window_events as f64 / since;
        status.outputs_per_s = self.window_outputs as f64 / since;
        status.latency_p50_ms = percentile(&self.window, 0.5);
        status.latency_p99_ms = percentile(&self.window, 0.99);
        self.window.clear();
        self.window_events = 0;
        self.window_outputs = 0;
        status.clone()
    }

    /// The whole run.
    fn summary(&mut self, started: Instant, lag: i64) -> StreamStatus {
        self.all.sort_by(f64::total_cmp);
        let mut status = self.status.clone();
        status.seconds = started.elapsed().as_secs_f64();
        status.busy_seconds = match (self.first_event, self.last_done) {
            (Some(first), Some(last)) => (last - first).as_secs_f64(),
            _ => 0.0,
        };
        let busy = status.busy_seconds.max(1e-9);
        status.lag = lag;
        status.events_per_s = status.events as f64 / busy;
        status.outputs_per_s = status.outputs as f64 / busy;
        status.latency_p50_ms = percentile(&self.all, 0.5);
        status.latency_p99_ms = percentile(&self.all, 0.99);
        status
    }
}

/// A running stream job.
struct Stream<'a> {
    job: &'a StreamJob,
    lake: Option<&'a Lake>,
    ctx: SessionContext,
    consumer: Consumer,
    producer: Producer,
    decoder: Payloads,
    /// The job's SQL with registered models resolved to their files.
    sql: Option<String>,
    lander: Option<Lander>,
    /// The serving table results are upserted into.
    serving: Option<Upserter>,
    /// Drift windows of the events and scores.
    drift: Option<drift::WindowDrift>,
    dead_letter_topic: String,
    meter: Meter,
    /// The next offset per partition whose events are fully processed (outputs acknowledged).
    processed: Offsets,
}

/// Runs `job` until it is idle for `batch.stop_when_idle_s` or `stop` resolves; `on_status` hears
/// a status line every `batch.status_every_s`. Returns the run's totals.
pub async fn run(
    job: &StreamJob,
    lake: Option<&Lake>,
    stop: impl std::future::Future<Output = ()>,
    on_status: &mut dyn FnMut(&StreamStatus),
) -> Result<StreamStatus> {
    let started = Instant::now();
    let ctx = sluice_engine::session::in_process(&sluice_udfs::functions("stream"), lake)?;
    let mut models = Vec::new();
    let sql = match (&job.output, lake) {
        (Some(output), Some(lake)) => {
            let (sql, used) = sluice_catalog::models::resolve::resolve_sql(lake, &output.sql).await?;
            for m in &used {
                tracing::info!(model = %m.reference, version = m.version, "scoring with");
            }
            models = used;
            Some(sql)
        }
        (Some(output), None) => Some(output.sql.clone()),
        (None, _) => None,
    };
    let lander = match (&job.land, lake) {
        (Some(land), Some(lake)) => Some(Lander::open(&ctx, lake, land, &job.job.name).await?),
        (Some(_), None) => return Err(Error::Invalid("[land] needs a workspace lake (--lake)".into())),
        (None, _) => None,
    };
    let serving = match job.output.as_ref().and_then(|o| o.table.as_ref()) {
        Some(table) => Some(Upserter::open(table).await?),
        None => None,
    };
    let decoder = match &job.input.avro {
        Some(avro) => {
            let decoder = avro.decoder(job.batch.max_rows)?;
            let schema = decoder.schema();
            reserved(schema.fields().iter().map(|f| f.name().as_str()), "input.avro.schema")?;
            Payloads::Avro(Box::new(decoder))
        }
        None => {
            let json = job.json();
            Payloads::Json(json.decoder(json.schema_from(&[])?).map_err(|e| Error::Invalid(format!("input.required: {e}")))?)
        }
    };
    let transactional_id = job.transactional_id();
    tokio::pin!(stop);
    if !wait_for_topics(job, &mut stop).await? {
        return Ok(Meter::default().summary(started, 0));
    }
    let consumer = Consumer::subscribe(&job.kafka, &job.group(), &job.input.topics, job.input.start)?;
    let producer = Producer::new(&job.kafka, transactional_id.as_deref())?;
    tracing::info!(group = %job.group(), topics = %job.input.topics.join(", "), "stream started");
    let mut stream = Stream {
        job,
        lake,
        ctx,
        consumer,
        producer,
        decoder,
        sql,
        lander,
        serving,
        drift: None,
        dead_letter_topic: job.dead_letter_topic(),
        meter: Meter::default(),
        processed: Offsets::new(),
    };
    if let Some(sql) = &stream.sql {
        // Plan errors show now, not as a dead letter per event.
        let empty = with_coordinates(&RecordBatch::new_empty(stream.decoder.schema()), &[])?;
        let (results, _) = stream.score(sql, &empty).await.map_err(|e| {
            let e = e.to_string();
            Error::Invalid(if e.starts_with("output.sql") { e } else { format!("output.sql: {e}") })
        })?;
        if let (Some(monitor), Some(lake)) = (&job.monitor, lake) {
            let columns: Vec<String> =
                results.first().map(|b| b.schema().fields().iter().map(|f| f.name().clone()).collect()).unwrap_or_default();
            let windows = drift::WindowDrift::open(&stream.ctx, lake, monitor, &models, &columns).await?;
            windows.check(&stream.decoder.schema(), &columns)?;
            stream.drift = Some(windows);
        }
    } else if job.monitor.is_some() {
        return Err(Error::Invalid("[monitor] watches scores: add [output] sql with predict(...)".into()));
    }
    let result = stream.run_loop(started, stop, on_status).await;
    // Whatever was fully processed is committed before leaving, even after an error.
    let flushed = stream.finish().await;
    result.and(flushed)?;
    Ok(stream.meter.summary(started, stream.consumer.lag(&stream.processed)))
}

/// Checks the brokers before anything is read: none answering is an error naming them (a dead
/// broker must not look like an idle topic); input topics that do not exist yet are created
/// (`input.create_topics`) or waited for, with a line every 30 s. False when `stop` came first.
async fn wait_for_topics(job: &StreamJob, stop: &mut (impl std::future::Future<Output = ()> + Unpin)) -> Result<bool> {
    let since = Instant::now();
    let mut said = None::<Instant>;
    loop {
        let missing = sluice_connectors::kafka::missing_topics(&job.kafka, &job.input.topics, Duration::from_secs(10)).await?;
        if missing.is_empty() {
            if said.is_some() {
                tracing::warn!(topics = %job.input.topics.join(", "), waited_s = since.elapsed().as_secs(), "input topics exist now; starting");
            }
            return Ok(true);
        }
        if job.input.create_topics {
            // Checked again after the pause: a new topic takes a moment to show in the metadata.
            sluice_connectors::kafka::create_topics(&job.kafka, &missing, job.input.partitions).await?;
            tracing::warn!(topics = %missing.join(", "), partitions = job.input.partitions, "created the missing input topics");
        } else if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            tracing::warn!(
                topics = %missing.join(", "),
                brokers = %job.kafka.brokers,
                waited_s = since.elapsed().as_secs(),
                "waiting for input topics that do not exist yet (create them, or set input.create_topics = true)"
            );
            said = Some(Instant::now());
        }
        tokio::select! {
            () = &mut *stop => return Ok(false),
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

impl Stream<'_> {
    async fn run_loop(
        &mut self,
        started: Instant,
        stop: impl std::future::Future<Output = ()>,
        on_status: &mut dyn FnMut(&StreamStatus),
    ) -> Result<()> {
        let batch = &self.job.batch;
        let max_wait = Duration::from_millis(batch.max_latency_ms);
        let status_every = Duration::from_secs_f64(batch.status_every_s.max(0.1));
        let idle_stop = batch.stop_when_idle_s.filter(|s| *s > 0.0).map(Duration::from_secs_f64);
        let mut last_status = Instant::now();
        let mut last_event = Instant::now();
        tokio::pin!(stop);
        loop {
            let poll = Duration::from_millis(200).min(status_every);
            let messages = tokio::select! {
                () = &mut stop => return Ok(()),
                messages = self.consumer.next_batch(batch.max_rows, max_wait, poll) => messages?,
            };
            let revoked = self.consumer.take_revoked();
            if !revoked.is_empty() {
                // Their next owner reads them again from the commit made at the rebalance.
                self.processed.retain(|part, _| !revoked.contains(part));
                if let Some(lander) = self.lander.as_mut() {
                    lander.forget(&revoked)?;
                }
                tracing::info!(partitions = revoked.len(), "partitions handed over");
            }
            if messages.is_empty() {
                if idle_stop.is_some_and(|idle| last_event.elapsed() >= idle) {
                    return Ok(());
                }
            } else {
                last_event = Instant::now();
                self.process(messages).await?;
            }
            if let Some(lander) = &self.lander
                && lander.due()
            {
                self.land().await?;
            }
            if last_status.elapsed() >= status_every {
                last_status = Instant::now();
                on_status(&self.meter.snapshot(started, self.consumer.lag(&self.processed)));
            }
        }
    }

    /// Lands what is buffered and commits what was processed (at shutdown or after an error).
    async fn finish(&mut self) -> Result<()> {
        if self.lander.is_some() {
            self.land().await?;
        }
        self.producer.flush()?;
        if !self.processed.is_empty() {
            self.commit(true, false)?;
        }
        Ok(())
    }

    async fn land(&mut self) -> Result<()> {
        let (Some(lander), Some(lake)) = (self.lander.as_mut(), self.lake) else { return Ok(()) };
        if let Some(written) = lander.flush(&self.ctx, lake).await? {
            self.meter.status.landed += written.rows;
            tracing::debug!(asset = %written.asset, version = written.version, rows = written.rows, "landed");
        }
        // Landed events may be committed now (outputs of them were acknowledged before).
        self.commit(true, false)
    }

    /// Commits the processed offsets, short of any event still waiting to land; `in_transaction`:
    /// inside the open transaction of the batch's outputs.
    fn commit(&mut self, wait: bool, in_transaction: bool) -> Result<()> {
        let mut offsets = self.processed.clone();
        if let Some(lander) = &self.lander {
            for (partition, first) in lander.pending() {
                if let Some(next) = offsets.get_mut(partition) {
                    *next = (*next).min(first);
                }
            }
        }
        if self.producer.is_transactional() {
            if !in_transaction {
                self.producer.begin()?;
            }
            return Ok(self.producer.commit_with(&self.consumer, &offsets)?);
        }
        Ok(self.consumer.commit(&offsets, wait)?)
    }

    /// One micro-batch: decode, score, produce, land, commit.
    async fn process(&mut self, messages: Vec<Message>) -> Result<()> {
        if let Some(first) = messages.first() {
            self.meter.first_event.get_or_insert(first.received);
        }
        // Decode the payloads; an event that does not decode is a dead letter.
        let (decoded, body_of, undecodable) = self.decoder.decode(&messages).await?;
        let mut dead: Vec<Record> = undecodable.into_iter().map(|(i, why)| self.dead_letter(&messages[i], "decode", &why)).collect();
        let mut rejected = vec![false; body_of.len()];
        for reject in &decoded.rejects {
            if let Ok(j) = reject.location.parse::<usize>()
                && j < body_of.len()
            {
                rejected[j] = true;
                dead.push(self.dead_letter(&messages[body_of[j]], "decode", &reject.reason));
            }
        }
        let kept: Vec<&Message> =
            body_of.iter().zip(&rejected).filter(|(_, r)| !**r).map(|(i, _)| &messages[*i]).collect();
        let events = match decoded.batch {
            Some(batch) if batch.num_rows() == kept.len() => Some(with_coordinates(&batch, &kept)?),
            Some(batch) => {
                return Err(Error::Invalid(format!(
                    "decoding {} events gave {} rows and {} rejects; please report this",
                    body_of.len(),
                    batch.num_rows(),
                    decoded.rejects.len()
                )));
            }
            None => None,
        };

        // Score; a batch that fails is split until the failing events are alone.
        let index: HashMap<(&str, i32, i64), &Message> =
            messages.iter().map(|m| ((m.topic.as_str(), m.partition, m.offset), m)).collect();
        let mut outputs: Vec<(Record, &Message)> = Vec::new();
        let mut served: Vec<RecordBatch> = Vec::new();
        let mut scored: Vec<RecordBatch> = Vec::new();
        if let (Some(events), Some(sql), Some(output)) = (&events, &self.sql, &self.job.output) {
            let mut todo = vec![events.clone()];
            let mut failures = 0usize;
            while let Some(part) = todo.pop() {
                match self.score(sql, &part).await {
                    Ok((results, added)) => {
                        if self.drift.is_some() {
                            scored.extend(results.iter().cloned());
                        }
                        for batch in results {
                            let topic = output.topic.as_deref().unwrap_or_default();
                            self.results(&batch, &added, output.key.as_deref(), topic, &index, &mut outputs)?;
                            if self.serving.is_some() {
                                served.push(batch);
                            }
                        }
                    }
                    Err(e) if part.num_rows() > 1 => {
                        tracing::debug!(rows = part.num_rows(), error = %e, "micro-batch failed; splitting it");
                        let half = part.num_rows() / 2;
                        todo.push(part.slice(half, part.num_rows() - half));
                        todo.push(part.slice(0, half));
                    }
                    Err(e) => {
                        failures += 1;
                        let coordinates = Coordinates::of(&part)?;
                        let message = index.get(&coordinates.at(0)?).copied();
                        match message {
                            Some(m) => dead.push(self.dead_letter(m, "score", &first_line(&e.to_string()))),
                            None => return Err(e),
                        }
                    }
                }
            }
            if failures == events.num_rows() && failures > 1 {
                return Err(Error::Invalid(format!(
                    "output.sql failed on every one of {failures} events, so the fault is not in the events; \
                     nothing was committed. The first error is in the dead letters' headers; fix the SQL or \
                     the model and start again"
                )));
            }
        }
        if let (Some(events), Some(lander)) = (&events, self.lander.as_mut()) {
            lander.add(events)?;
        }
        if let (Some(events), Some(windows)) = (&events, self.drift.as_mut()) {
            windows.add(events, &scored)?;
            self.meter.status.drift_windows = windows.windows;
            self.meter.status.drift = windows.latest.iter().map(|c| (c.column.clone(), c.metric, c.value, c.drifted)).collect();
        }

        // Deliver; offsets are committed only once everything of theirs was acknowledged.
        let transactional = self.producer.is_transactional();
        if transactional {
            self.producer.begin()?;
        }
        let to_topic = self.job.output.as_ref().is_some_and(|o| o.topic.is_some());
        let (records, sources): (Vec<Record>, Vec<&Message>) = outputs.into_iter().unzip();
        let mut records = if to_topic { records } else { Vec::new() };
        let n_outputs = sources.len();
        let n_dead = dead.len();
        records.extend(dead);
        self.producer.send_all(&records).await?;
        if let Some(serving) = self.serving.as_mut() {
            serving.upsert(&served).await?;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let latencies: Vec<f64> = sources
            .iter()
            .map(|m| match m.timestamp_ms {
                Some(ts) if ts <= now_ms => (now_ms - ts) as f64,
                _ => m.received.elapsed().as_secs_f64() * 1e3,
            })
            .collect();
        self.meter.record(&latencies);
        for m in &messages {
            let next = self.processed.entry((m.topic.clone(), m.partition)).or_insert(0);
            *next = (*next).max(m.offset + 1);
        }
        let status = &mut self.meter.status;
        status.events += messages.len() as u64;
        status.outputs += n_outputs as u64;
        status.dead_letters += n_dead as u64;
        status.batches += 1;
        status.last_batch = messages.len();
        self.meter.window_events += messages.len() as u64;
        self.meter.window_outputs += n_outputs as u64;
        self.meter.last_done = Some(Instant::now());
        self.commit(false, transactional)
    }

    /// The job's SQL over one micro-batch; rows keep their event's coordinates.
    async fn score(&self, sql: &str, events: &RecordBatch) -> Result<(Vec<RecordBatch>, Vec<&'static str>)> {
        let table = self.job.input.table.as_str();
        self.ctx.deregister_table(table)?;
        self.ctx.register_batch(table, events.clone())?;
        let (df, added) = with_sources(self.ctx.sql(sql).await?)?;
        Ok((df.collect().await?, added))
    }

    /// The result rows of `batch` as records for `topic`.
    fn results<'m>(
        &self,
        batch: &RecordBatch,
        added: &[&str],
        key: Option<&str>,
        topic: &str,
        index: &HashMap<(&str, i32, i64), &'m Message>,
        outputs: &mut Vec<(Record, &'m Message)>,
    ) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let schema = batch.schema();
        let payload: Vec<usize> =
            (0..schema.fields().len()).filter(|i| !added.contains(&schema.field(*i).name().as_str())).collect();
        let lines = json_lines(&batch.project(&payload)?)?;
        let keys = match key {
            Some(k) => {
                let column = batch.column_by_name(k).ok_or_else(|| {
                    Error::Invalid(format!("output.key: the SQL's rows have no column '{k}'; name one of its columns"))
                })?;
                Some(arrow::compute::cast(column, &DataType::Utf8)?)
            }
            None => None,
        };
        let coordinates = Coordinates::of(batch)?;
        for (row, line) in lines.into_iter().enumerate() {
            let (t, p, o) = coordinates.at(row)?;
            let m = index.get(&(t, p, o)).copied().ok_or_else(|| {
                Error::Invalid(format!("output.sql: a result row names event {t}/{p}/{o}, which is not in its micro-batch"))
            })?;
            let key = match &keys {
                Some(k) => k.as_string::<i32>().is_valid(row).then(|| k.as_string::<i32>().value(row).as_bytes().to_vec()),
                None => m.key.clone(),
            };
            let headers = source_headers(m);
            outputs.push((Record { topic: topic.to_string(), key, payload: line, headers }, m));
        }
        Ok(())
    }

    fn dead_letter(&self, m: &Message, stage: &str, reason: &str) -> Record {
        let mut headers = vec![("sluice.error".to_string(), reason.as_bytes().to_vec()), ("sluice.stage".into(), stage.as_bytes().to_vec())];
        headers.extend(source_headers(m));
        headers.extend(m.headers.iter().cloned());
        Record {
            topic: self.dead_letter_topic.clone(),
            key: m.key.clone(),
            payload: m.payload.clone().unwrap_or_default(),
            headers,
        }
    }
}

/// Where a result or dead letter came from, so duplicates after a restart can be dropped.
fn source_headers(m: &Message) -> Vec<(String, Vec<u8>)> {
    vec![
        ("sluice.topic".into(), m.topic.as_bytes().to_vec()),
        ("sluice.partition".into(), m.partition.to_string().into_bytes()),
        ("sluice.offset".into(), m.offset.to_string().into_bytes()),
    ]
}

/// The decoded events with their coordinates appended.
fn with_coordinates(batch: &RecordBatch, events: &[&Message]) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    fields.push(Arc::new(Field::new(COORDINATES[0], DataType::Utf8, false)));
    fields.push(Arc::new(Field::new(COORDINATES[1], DataType::Int32, false)));
    fields.push(Arc::new(Field::new(COORDINATES[2], DataType::Int64, false)));
    fields.push(Arc::new(Field::new(COORDINATES[3], DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false)));
    let now = chrono::Utc::now().timestamp_millis();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(StringArray::from_iter_values(events.iter().map(|m| m.topic.as_str()))));
    columns.push(Arc::new(Int32Array::from_iter_values(events.iter().map(|m| m.partition))));
    columns.push(Arc::new(Int64Array::from_iter_values(events.iter().map(|m| m.offset))));
    columns.push(Arc::new(
        TimestampMillisecondArray::from_iter_values(events.iter().map(|m| m.timestamp_ms.unwrap_or(now))).with_timezone("UTC"),
    ));
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(RecordBatch::try_new(schema, columns)?)
}

/// How the events' payloads become rows.
enum Payloads {
    Json(RecordDecoder),
    Avro(Box<sluice_connectors::avro::AvroDecoder>),
}

impl Payloads {
    fn schema(&self) -> SchemaRef {
        match self {
            Self::Json(d) => d.schema(),
            Self::Avro(d) => d.schema(),
        }
    }

    /// The decoded rows and rejects (located by their index among the decoded payloads), which
    /// message each decoded payload is, and the messages not decoded at all, with why.
    async fn decode(&mut self, messages: &[Message]) -> Result<(Decoded, Vec<usize>, Vec<(usize, String)>)> {
        let mut of: Vec<usize> = Vec::with_capacity(messages.len());
        let mut undecodable = Vec::new();
        let mut bodies: Vec<&[u8]> = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            match m.payload.as_deref() {
                Some(body) => {
                    bodies.push(body);
                    of.push(i);
                }
                None => undecodable.push((i, "the event has no payload".to_string())),
            }
        }
        let decoded = match self {
            Self::Json(decoder) => {
                let mut texts = Vec::with_capacity(bodies.len());
                let mut text_of = Vec::with_capacity(bodies.len());
                for (body, i) in bodies.iter().zip(&of) {
                    match std::str::from_utf8(body) {
                        Ok(text) => {
                            texts.push(text);
                            text_of.push(*i);
                        }
                        Err(e) => undecodable.push((*i, format!("the payload is not UTF-8 text: {e}"))),
                    }
                }
                of = text_of;
                decoder.decode(&texts, &|i| i.to_string())?
            }
            Self::Avro(decoder) => {
                decoder.resolve(&bodies).await?;
                decoder.decode(&bodies, &|i| i.to_string())?
            }
        };
        Ok((decoded, of, undecodable))
    }
}

/// The (topic, partition, offset) columns of a result batch, cast once.
struct Coordinates {
    topic: ArrayRef,
    partition: ArrayRef,
    offset: ArrayRef,
}

impl Coordinates {
    fn of(batch: &RecordBatch) -> Result<Self> {
        let column = |name: &str, to: &DataType| -> Result<ArrayRef> {
            let c = batch.column_by_name(name).ok_or_else(|| Error::Invalid(format!("output.sql: its rows lost {name}")))?;
            Ok(arrow::compute::cast(c, to)?)
        };
        Ok(Self {
            topic: column("_topic", &DataType::Utf8)?,
            partition: column("_partition", &DataType::Int32)?,
            offset: column("_offset", &DataType::Int64)?,
        })
    }

    /// The (topic, partition, offset) of row `row`.
    fn at(&self, row: usize) -> Result<(&str, i32, i64)> {
        if !(self.topic.is_valid(row) && self.partition.is_valid(row) && self.offset.is_valid(row)) {
            return Err(Error::Invalid("output.sql: a result row has a NULL _topic, _partition or _offset".into()));
        }
        Ok((
            self.topic.as_string::<i32>().value(row),
            self.partition.as_primitive::<Int32Type>().value(row),
            self.offset.as_primitive::<Int64Type>().value(row),
        ))
    }
}

/// `df` with the event's coordinates added to its SELECT list where it dropped them; returns the
/// names added (kept out of the payload).
fn with_sources(df: DataFrame) -> Result<(DataFrame, Vec<&'static str>)> {
    let (state, plan) = df.into_parts();
    let missing: Vec<&'static str> =
        COORDINATES.iter().copied().filter(|c| !plan.schema().has_column_with_unqualified_name(c)).collect();
    if missing.is_empty() {
        return Ok((DataFrame::new(state, plan), missing));
    }
    let cannot = || {
        Error::Invalid(format!(
            "output.sql: each result must name its event; add {} to its SELECT list",
            missing.join(", ")
        ))
    };
    let LogicalPlan::Projection(projection) = &plan else { return Err(cannot()) };
    let mut expr = projection.expr.clone();
    for name in &missing {
        let (qualifier, field) =
            projection.input.schema().qualified_field_with_unqualified_name(name).map_err(|_| cannot())?;
        expr.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
    }
    let plan = LogicalPlan::Projection(Projection::try_new(expr, projection.input.clone())?);
    Ok((DataFrame::new(state, plan), missing))
}

/// One JSON object per row.
fn json_lines(batch: &RecordBatch) -> Result<Vec<Vec<u8>>> {
    let mut buffer = Vec::with_capacity(batch.num_rows() * 64);
    {
        let mut writer = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buffer);
        writer.write(batch)?;
        writer.finish()?;
    }
    Ok(buffer.split(|b| *b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(rows: i64) -> RecordBatch {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
            vec![Arc::new(Int64Array::from_iter(0..rows))],
        )
        .unwrap();
        let messages: Vec<Message> = (0..rows)
            .map(|i| Message {
                topic: "t".into(),
                partition: 0,
                offset: 100 + i,
                key: None,
                payload: None,
                timestamp_ms: Some(1_700_000_000_000),
                headers: Vec::new(),
                received: Instant::now(),
            })
            .collect();
        with_coordinates(&batch, &messages.iter().collect::<Vec<_>>()).unwrap()
    }

    #[tokio::test]
    async fn results_keep_their_events_coordinates() {
        let ctx = SessionContext::new();
        ctx.register_batch("events", events(3)).unwrap();
        let (df, added) = with_sources(ctx.sql("SELECT id * 2 AS twice FROM events WHERE id > 0").await.unwrap()).unwrap();
        assert_eq!(added, ["_topic", "_partition", "_offset", "_timestamp"]);
        let batches = df.collect().await.unwrap();
        assert_eq!(Coordinates::of(&batches[0]).unwrap().at(0).unwrap(), ("t", 0, 101));
        let lines = json_lines(&batches[0].project(&[0]).unwrap()).unwrap();
        assert_eq!(lines, [b"{\"twice\":2}".to_vec(), b"{\"twice\":4}".to_vec()]);

        // Selected by the SQL itself: nothing is added, they stay in the payload.
        let (_, added) = with_sources(ctx.sql("SELECT id, _topic, _partition, _offset, _timestamp FROM events").await.unwrap()).unwrap();
        assert!(added.is_empty());
        // Rows that are no longer events cannot name one.
        let e = with_sources(ctx.sql("SELECT COUNT(*) AS n FROM events").await.unwrap()).unwrap_err().to_string();
        assert!(e.contains("add _topic, _partition, _offset, _timestamp to its SELECT list"), "{e}");
    }

    #[test]
    fn nulls_are_written_out() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("score", DataType::Float32, true)])),
            vec![Arc::new(arrow::array::Float32Array::from(vec![Some(0.5), None]))],
        )
        .unwrap();
        assert_eq!(json_lines(&batch).unwrap(), [b"{\"score\":0.5}".to_vec(), b"{\"score\":null}".to_vec()]);
    }

    #[test]
    fn percentiles() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.5), 51.0);
        assert_eq!(percentile(&sorted, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }
}
