//! Running a job file: plan each source, register it as a table, run the transform on the
//! cluster and commit the rows as one new version of the sink asset.

use std::path::Path;
use std::sync::Arc;

use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};
use serde::Serialize;
use sluice_connectors::delta::Lake;
use sluice_engine::assets::{WriteOptions, WriteSummary, write_asset};
use sluice_engine::sources::SourcePlan;
use sluice_engine::sources::SourceTable;

use super::config::{FileFormat, JobFile, SourceConfig};
use crate::error::{Error, Result};

/// What a job run did.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// The job's name.
    pub job: String,
    /// The asset write.
    pub write: WriteSummary,
    /// Partitions read per source.
    pub partitions: Vec<(String, usize)>,
}

/// Runs `job` (read from `path`, which relative file paths are resolved against).
pub async fn run(ctx: &SessionContext, lake: &Lake, job: &JobFile, path: &Path) -> Result<JobSummary> {
    let base = path.parent().unwrap_or(Path::new("."));
    let previous = previous_watermarks(lake, &job.sink.asset).await?;
    let mut partitions = Vec::new();
    let mut watermarks = serde_json::Map::new();
    for (name, source) in &job.sources {
        match source {
            SourceConfig::Postgres { .. } | SourceConfig::Mysql { .. } => {
                let since = previous.get(name).and_then(|v| v.as_str()).map(str::to_string);
                let spin = crate::progress::spinner(&format!("planning source {name}"));
                let plan = match source {
                    SourceConfig::Postgres { connection, read } => {
                        sluice_connectors::postgres::plan(name, connection, read, since).await.map(SourcePlan::Postgres)
                    }
                    SourceConfig::Mysql { connection, read } => {
                        sluice_connectors::mysql::plan(name, connection, read, since).await.map(SourcePlan::Mysql)
                    }
                    SourceConfig::Files { .. } => unreachable_files(),
                };
                spin.finish_and_clear();
                let plan = plan?;
                if let Some((_, upto)) = plan.next_watermark() {
                    // No new rows: keep the previous watermark.
                    let value = upto.or_else(|| previous.get(name).and_then(|v| v.as_str()).map(str::to_string));
                    watermarks.insert(name.clone(), value.map_or(serde_json::Value::Null, serde_json::Value::String));
                }
                partitions.push((name.clone(), plan.partitions()));
                ctx.register_table(name.as_str(), Arc::new(SourceTable::new(plan)))?;
            }
            SourceConfig::Files { url, format, header, delimiter, extension } => {
                let url = resolve(base, url);
                register_files(ctx, name, &url, *format, *header, *delimiter, extension.as_deref()).await?;
                partitions.push((name.clone(), 0));
            }
        }
    }
    let options = WriteOptions {
        mode: job.sink.mode.parse()?,
        partition_by: job.sink.partition_by.clone(),
        sort_by: job.sink.sort_by.clone(),
        target_file_bytes: None,
        compression: job.sink.compression.clone(),
        job: job.job.name.clone(),
        lineage: if watermarks.is_empty() {
            serde_json::Map::new()
        } else {
            serde_json::Map::from_iter([("watermarks".to_string(), serde_json::Value::Object(watermarks))])
        },
    };
    let spin =
        crate::progress::spinner(&format!("job {}: reading, transforming, writing {}", job.job.name, job.sink.asset));
    let result = async {
        let df = ctx.sql(&job.sql()).await?;
        Ok::<_, Error>(write_asset(lake, &job.sink.asset, df, &options).await?)
    }
    .await;
    spin.finish_and_clear();
    Ok(JobSummary { job: job.job.name.clone(), write: result?, partitions })
}

fn unreachable_files() -> sluice_connectors::Result<SourcePlan> {
    Err(sluice_connectors::Error::Config("files sources are registered, not planned".into()))
}

/// The watermarks the asset's latest write recorded, by source.
async fn previous_watermarks(lake: &Lake, asset: &str) -> Result<serde_json::Map<String, serde_json::Value>> {
    if !lake.exists(asset).await? {
        return Ok(serde_json::Map::new());
    }
    let history = lake.history(asset, None).await?;
    Ok(history.iter().find_map(|v| v.lineage.as_ref()?.get("watermarks")?.as_object().cloned()).unwrap_or_default())
}

fn resolve(base: &Path, url: &str) -> String {
    if url.contains("://") || Path::new(url).is_absolute() {
        url.to_string()
    } else {
        base.join(url).display().to_string()
    }
}

async fn register_files(
    ctx: &SessionContext,
    name: &str,
    url: &str,
    format: FileFormat,
    header: bool,
    delimiter: char,
    extension: Option<&str>,
) -> Result<()> {
    let gz = url.ends_with(".gz") || extension.is_some_and(|e| e.ends_with(".gz"));
    let compression = if gz { FileCompressionType::GZIP } else { FileCompressionType::UNCOMPRESSED };
    let registered = match format {
        FileFormat::Parquet => {
            let options = ParquetReadOptions { file_extension: extension.unwrap_or(".parquet"), ..Default::default() };
            ctx.register_parquet(name, url, options).await
        }
        FileFormat::Csv => {
            let delimiter = u8::try_from(delimiter).map_err(|_| {
                Error::Invalid(format!("sources.{name}.delimiter: '{delimiter}' is not a single-byte character"))
            })?;
            let ext = extension.unwrap_or(if gz { ".csv.gz" } else { ".csv" });
            let options = CsvReadOptions::new()
                .has_header(header)
                .delimiter(delimiter)
                .file_extension(ext)
                .file_compression_type(compression);
            ctx.register_csv(name, url, options).await
        }
        FileFormat::Ndjson => {
            let ext = extension.unwrap_or(if gz { ".json.gz" } else { ".json" });
            let options = JsonReadOptions::default().file_extension(ext).file_compression_type(compression);
            ctx.register_json(name, url, options).await
        }
    };
    registered.map_err(|e| Error::Invalid(format!("sources.{name}: cannot read {url}: {e}")))
}
