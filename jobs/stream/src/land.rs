//! The cold path of a stream: decoded events with their coordinates gathered and committed to a
//! data asset every few seconds. Each commit records the offset ranges it covers; on start the
//! offsets already in the asset are read back, so a restart neither loses nor repeats an event
//! in the lake.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use datafusion::prelude::SessionContext;
use sluice_lake::delta::Lake;
use sluice_engine::assets::{WriteOptions, WriteSummary, write_asset};

use super::config::Land;
use sluice_catalog::error::{Error, Result};
use sluice_catalog::sql::ident;

/// A partition of a topic.
pub type Partition = (String, i32);

/// Events waiting to land, and what has landed.
pub struct Lander {
    config: Land,
    job: String,
    buffer: Vec<RecordBatch>,
    rows: usize,
    /// The first and last offset buffered per partition.
    ranges: BTreeMap<Partition, (i64, i64)>,
    /// The next offset not yet in the asset, per partition.
    landed: HashMap<Partition, i64>,
    since: Instant,
}

impl Lander {
    /// Reads which offsets the asset already holds.
    pub async fn open(ctx: &SessionContext, lake: &Lake, config: &Land, job: &str) -> Result<Self> {
        let mut landed = HashMap::new();
        if lake.exists(&config.asset).await? {
            let sql =
                format!("SELECT _topic, _partition, MAX(_offset) + 1 FROM {} GROUP BY _topic, _partition", ident(&config.asset));
            let batches = ctx.sql(&sql).await?.collect().await.map_err(|e| {
                Error::Invalid(format!("land.asset {}: reading the offsets it holds: {e}", config.asset))
            })?;
            for b in &batches {
                let (topics, parts, next) = (b.column(0).as_string::<i32>(), b.column(1).as_primitive::<Int32Type>(), b.column(2).as_primitive::<Int64Type>());
                for i in 0..b.num_rows() {
                    landed.insert((topics.value(i).to_string(), parts.value(i)), next.value(i));
                }
            }
            tracing::info!(asset = %config.asset, partitions = landed.len(), "landed offsets read back");
        }
        Ok(Self {
            config: config.clone(),
            job: job.to_string(),
            buffer: Vec::new(),
            rows: 0,
            ranges: BTreeMap::new(),
            landed,
            since: Instant::now(),
        })
    }

    /// Buffers the events of `batch` (decoded columns and coordinates) not in the asset yet.
    pub fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        let schema = batch.schema();
        let column = |name: &str| schema.index_of(name).map(|i| batch.column(i).clone());
        let (topics, parts, offsets) = (column("_topic")?, column("_partition")?, column("_offset")?);
        let (topics, parts, offsets) =
            (topics.as_string::<i32>(), parts.as_primitive::<Int32Type>(), offsets.as_primitive::<Int64Type>());
        let mut keep = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            let key = (topics.value(i).to_string(), parts.value(i));
            let offset = offsets.value(i);
            let new = self.landed.get(&key).is_none_or(|next| offset >= *next);
            if new {
                let range = self.ranges.entry(key).or_insert((offset, offset));
                range.0 = range.0.min(offset);
                range.1 = range.1.max(offset);
            }
            keep.push(new);
        }
        let kept = arrow::compute::filter_record_batch(batch, &BooleanArray::from(keep))?;
        if kept.num_rows() > 0 {
            if self.buffer.is_empty() {
                self.since = Instant::now();
            }
            self.rows += kept.num_rows();
            self.buffer.push(kept);
        }
        Ok(())
    }

    /// Drops what is buffered of `partitions` (a rebalance gave them to another consumer, which
    /// reads them again from the last commit, short of these events).
    pub fn forget(&mut self, partitions: &[Partition]) -> Result<()> {
        if partitions.is_empty() || self.rows == 0 {
            return Ok(());
        }
        let mut kept = Vec::with_capacity(self.buffer.len());
        for batch in &self.buffer {
            let schema = batch.schema();
            let (topics, parts) =
                (batch.column(schema.index_of("_topic")?), batch.column(schema.index_of("_partition")?));
            let (topics, parts) = (topics.as_string::<i32>(), parts.as_primitive::<Int32Type>());
            let keep: BooleanArray = (0..batch.num_rows())
                .map(|i| Some(!partitions.iter().any(|(t, p)| t == topics.value(i) && *p == parts.value(i))))
                .collect();
            let batch = arrow::compute::filter_record_batch(batch, &keep)?;
            if batch.num_rows() > 0 {
                kept.push(batch);
            }
        }
        self.rows = kept.iter().map(RecordBatch::num_rows).sum();
        self.buffer = kept;
        for partition in partitions {
            self.ranges.remove(partition);
        }
        Ok(())
    }

    /// Whether the buffer should be committed now.
    pub fn due(&self) -> bool {
        self.rows > 0
            && (self.rows >= self.config.max_rows || self.since.elapsed() >= Duration::from_secs_f64(self.config.every_s))
    }

    /// The first buffered offset per partition: the consumer must not commit past it.
    pub fn pending(&self) -> impl Iterator<Item = (&Partition, i64)> {
        self.ranges.iter().map(|(p, (first, _))| (p, *first))
    }

    /// Commits the buffer as one version of the asset, with the offset ranges it covers.
    pub async fn flush(&mut self, ctx: &SessionContext, lake: &Lake) -> Result<Option<WriteSummary>> {
        if self.rows == 0 {
            return Ok(None);
        }
        let batch = arrow::compute::concat_batches(&self.buffer[0].schema(), &self.buffer)?;
        let (extra, partition_by) = match self.config.partition_by.as_str() {
            "hour" => (
                ", CAST(_timestamp AS DATE) AS day, CAST(date_part('hour', _timestamp) AS INT) AS hour",
                vec!["day".to_string(), "hour".to_string()],
            ),
            "day" => (", CAST(_timestamp AS DATE) AS day", vec!["day".to_string()]),
            _ => ("", Vec::new()),
        };
        let df = ctx.read_batch(batch)?;
        let table = "__land";
        ctx.deregister_table(table)?;
        ctx.register_table(table, df.into_view())?;
        let df = ctx.sql(&format!("SELECT *{extra} FROM {table}")).await?;
        let offsets: serde_json::Map<String, serde_json::Value> = self
            .ranges
            .iter()
            .map(|((topic, partition), (first, last))| (format!("{topic}/{partition}"), serde_json::json!([first, last])))
            .collect();
        let mut lineage = serde_json::Map::new();
        lineage.insert("kafka_offsets".into(), serde_json::Value::Object(offsets));
        let options = WriteOptions { partition_by, job: self.job.clone(), lineage, ..Default::default() };
        let written = write_asset(lake, &self.config.asset, df, &options).await;
        ctx.deregister_table(table)?;
        let written = written?;
        for (partition, (_, last)) in std::mem::take(&mut self.ranges) {
            self.landed.insert(partition, last + 1);
        }
        self.buffer.clear();
        self.rows = 0;
        Ok(Some(written))
    }
}
