//! Running a job file: plan each source, register it as a table, run the transform on the
//! cluster and commit the rows as one new version of the sink asset.

use std::path::Path;
use std::sync::Arc;

use datafusion::logical_expr::col;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use serde::Serialize;
use sluice_lake::delta::Lake;
use sluice_connectors::quarantine::{self, Counts, QuarantineTarget};
use sluice_engine::assets::{WriteOptions, WriteSummary, commit_folder, stage_asset};
use sluice_engine::sources::SourcePlan;
use sluice_engine::sources::SourceTable;

use super::config::{Dedup, ErrorThreshold, FileFormat, JobFile, SourceConfig};
use sluice_catalog::error::{Error, Result};

/// CSV and NDJSON files are read in pieces of about this size, so one big file spreads over executors.
const PIECE_BYTES: u64 = 32 << 20;

/// What a job run did.
#[derive(Debug, Clone, Serialize)]
pub struct JobSummary {
    /// The job's name.
    pub job: String,
    /// The asset write.
    pub write: WriteSummary,
    /// Partitions read per source.
    pub partitions: Vec<(String, usize)>,
    /// Records read from the sources that quarantine bad records (JSON files), and of those
    /// quarantined; every record read is landed, quarantined, or dropped by de-duplication or
    /// the transform.
    pub records: Option<Counts>,
    /// The quarantine version written, when records were bad.
    pub quarantine: Option<WriteSummary>,
    /// What the `[prepare]` step did, when the job has one.
    pub prepare: Option<PrepareSummary>,
}

/// What the `[prepare]` step did.
#[derive(Debug, Clone, Serialize)]
pub struct PrepareSummary {
    /// Rows, duplicates, violations by rule, profile.
    pub prepared: sluice_datasets::prepare::Prepared,
    /// The violations version written, when rows broke a rule.
    pub violations: Option<WriteSummary>,
}

/// Where the run's bad records go.
struct QuarantineRun {
    asset: String,
    run: String,
    rows_url: url::Url,
    target: QuarantineTarget,
    threshold: Option<ErrorThreshold>,
}

impl QuarantineRun {
    fn new(lake: &Lake, job: &JobFile) -> Result<Self> {
        let asset = job.quarantine_asset();
        let run = sluice_engine::assets::write::run_id();
        let base = lake.asset_url(&asset)?;
        let join = |p: &str| base.join(p).map_err(|e| Error::Invalid(format!("quarantine asset '{asset}': {e}")));
        let rows_url = join(&format!("run-{run}/"))?;
        let counts_url = join(&format!("_counts/run-{run}/"))?;
        let threshold = job.quarantine.max_errors;
        let target = QuarantineTarget {
            source: String::new(),
            store_url: lake.store_url().to_string(),
            rows_path: lake.store_path(&rows_url)?.to_string(),
            counts_path: lake.store_path(&counts_url)?.to_string(),
            // Executors stop early on a count; a percentage needs every partition's counts.
            max_errors: match threshold {
                Some(ErrorThreshold::Count(n)) => Some(n),
                _ => None,
            },
        };
        Ok(Self { asset, run, rows_url, target, threshold })
    }

    fn for_source(&self, name: &str) -> QuarantineTarget {
        QuarantineTarget { source: name.to_string(), ..self.target.clone() }
    }

    /// Sums the partitions' counts, commits the bad records (if any) and removes the counts.
    async fn finish(&self, lake: &Lake, job: &JobFile) -> Result<(Counts, Option<WriteSummary>)> {
        let store = lake.store();
        let counts = quarantine::read_counts(&store, &self.target).await?;
        let lineage = serde_json::json!({
            "run_id": self.run,
            "job": job.job.name,
            "inputs": job.sources.keys().collect::<Vec<_>>(),
            "mode": "append",
            "quarantine_of": job.sink.asset,
            "records_read": counts.read,
        });
        let written =
            commit_folder(lake, &self.asset, &self.rows_url, quarantine::schema(), lineage).await?;
        quarantine::remove_counts(&store, &self.target).await?;
        Ok((counts, written))
    }
}

/// Runs `job` (read from `path`, which relative file paths are resolved against).
pub async fn run(ctx: &SessionContext, lake: &Lake, job: &JobFile, path: &Path) -> Result<JobSummary> {
    let base = path.parent().unwrap_or(Path::new("."));
    let previous = previous_watermarks(lake, &job.sink.asset).await?;
    let quarantine = QuarantineRun::new(lake, job)?;
    let mut quarantined_sources = 0;
    let mut partitions = Vec::new();
    let mut watermarks = serde_json::Map::new();
    let mut reads = sluice_catalog::progress::Reads::default();
    let mut watched = |plan: &SourcePlan| {
        let (key, progress) = sluice_engine::sources::progress::track();
        reads.add(progress, plan.partitions());
        key
    };
    for (name, source) in &job.sources {
        match source {
            SourceConfig::Postgres { .. } | SourceConfig::Mysql { .. } | SourceConfig::Rest { .. } => {
                let since = previous.get(name).and_then(|v| v.as_str()).map(str::to_string);
                let spin = sluice_catalog::progress::spinner(&format!("planning source {name}"));
                let plan = match source {
                    SourceConfig::Postgres { connection, read } => {
                        sluice_connectors::postgres::plan(name, connection, read, since).await.map(SourcePlan::Postgres)
                    }
                    SourceConfig::Mysql { connection, read } => {
                        sluice_connectors::mysql::plan(name, connection, read, since).await.map(SourcePlan::Mysql)
                    }
                    SourceConfig::Rest { connection, read, .. } => {
                        let options = source.json_options().unwrap_or_default();
                        sluice_connectors::rest::plan(name, connection, read, &options, since).await.map(SourcePlan::Rest)
                    }
                    SourceConfig::Files { .. } | SourceConfig::Mqtt { .. } => unreachable_files(),
                };
                spin.finish_and_clear();
                let plan = plan?;
                if let Some((_, upto)) = plan.next_watermark() {
                    // No new rows: keep the previous watermark.
                    let value = upto.or_else(|| previous.get(name).and_then(|v| v.as_str()).map(str::to_string));
                    watermarks.insert(name.clone(), value.map_or(serde_json::Value::Null, serde_json::Value::String));
                }
                partitions.push((name.clone(), plan.partitions()));
                let dedup = match source {
                    SourceConfig::Rest { dedup, .. } => dedup.as_ref(),
                    _ => None,
                };
                // Sources of JSON records keep their bad records aside; SQL rows are typed already.
                let quarantined = matches!(plan, SourcePlan::Rest(_)).then(|| quarantine.for_source(name));
                quarantined_sources += usize::from(quarantined.is_some());
                let key = watched(&plan);
                let table = Arc::new(SourceTable::new(plan, quarantined).with_progress(key));
                register_deduplicated(ctx, name, ctx.read_table(table)?, dedup)?;
            }
            SourceConfig::Files { url, format, extension, partitions: parallel, dedup, .. }
                if *format != FileFormat::Parquet =>
            {
                let url = resolve(base, url);
                let files = source.files_format().transpose().map_err(|e| Error::Invalid(format!("sources.{name}: {e}")))?;
                let files = files.ok_or_else(|| Error::Invalid(format!("sources.{name}: not read as records")))?;
                let parallel = parallel.unwrap_or_else(|| ctx.state().config().target_partitions());
                let ext = extension.as_deref().or(format.extension());
                let spin = sluice_catalog::progress::spinner(&format!("planning source {name}"));
                let plan = sluice_engine::sources::plan_files(ctx, name, &url, ext, files, parallel, PIECE_BYTES).await;
                spin.finish_and_clear();
                let plan = plan?;
                partitions.push((name.clone(), plan.partitions()));
                quarantined_sources += 1;
                let key = watched(&plan);
                let table = Arc::new(SourceTable::new(plan, Some(quarantine.for_source(name))).with_progress(key));
                register_deduplicated(ctx, name, ctx.read_table(table)?, dedup.as_ref())?;
            }
            SourceConfig::Mqtt { .. } => {
                return Err(Error::Invalid(format!(
                    "sources.{name}: an MQTT source runs as a stream (`sluice run` does that when it is the job's \
                     only source)"
                )));
            }
            SourceConfig::Files { url, extension, dedup, .. } => {
                let url = resolve(base, url);
                register_parquet(ctx, name, &url, extension.as_deref()).await?;
                if dedup.is_some() {
                    let raw = format!("__{name}_raw");
                    ctx.deregister_table(name.as_str())?;
                    register_parquet(ctx, &raw, &url, extension.as_deref()).await?;
                    let df = ctx.table(raw.as_str()).await?;
                    register_deduplicated(ctx, name, df, dedup.as_ref())?;
                }
                partitions.push((name.clone(), 0));
            }
        }
    }
    let options = WriteOptions {
        mode: job.sink.mode.parse()?,
        key: job.sink.key.clone(),
        delete_column: job.sink.delete.clone(),
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
    let (sql, models) = sluice_catalog::models::resolve::resolve_sql(lake, &job.sql()).await?;
    let mut options = options;
    if !models.is_empty() {
        options.lineage.insert("models".into(), serde_json::to_value(&models).unwrap_or_default());
    }
    let staging = async {
        let Some(prepare) = &job.prepare else {
            let df = ctx.sql(&sql).await?;
            return Ok::<_, Error>((stage_asset(lake, &job.sink.asset, df, &options).await?, None));
        };
        let prepared = sluice_datasets::prepare::run(ctx, lake, prepare, &sql, &sluice_engine::assets::write::run_id()).await?;
        let mut options = options.clone();
        options.lineage.insert("prepare".into(), serde_json::to_value(&prepared.prepared).unwrap_or_default());
        let written = async { stage_asset(lake, &job.sink.asset, ctx.sql(&prepared.passed_sql).await?, &options).await };
        match written.await {
            Ok(staged) => Ok((staged, Some(prepared))),
            Err(e) => {
                let _ = prepared.remove(ctx, lake).await;
                Err(e.into())
            }
        }
    };
    let message = format!("job {} -> {}", job.job.name, job.sink.asset);
    let (staged, prepared) = match reads.watch(&message, std::time::Duration::from_secs(10), staging).await {
        Ok((staged, prepared)) => (Ok(staged), prepared),
        Err(e) => (Err(e), None),
    };
    if quarantined_sources == 0 {
        let write = staged?.commit(lake).await?;
        sluice_monitor::profile::profile_written(ctx, lake, &write).await;
        let prepare = finish_prepare(ctx, lake, job, prepared).await?;
        return Ok(JobSummary { job: job.job.name.clone(), write, partitions, records: None, quarantine: None, prepare });
    }

    // Bad records are kept whether or not the run lands, so the reason is there to read.
    let (counts, kept) = quarantine.finish(lake, job).await?;
    let kept_at = kept.as_ref().map(|k| format!("{}@{}", k.asset, k.version));
    let look = |at: &str| {
        format!("see them with: sluice sql \"SELECT source, location, reason, raw FROM {at} LIMIT 20\"")
    };
    let mut staged = match staged {
        Ok(staged) => staged,
        Err(e) => {
            return Err(match &kept_at {
                Some(at) => Error::Invalid(format!(
                    "{e}\n{} bad records (of {} read before the run stopped) are kept in {at}; {}",
                    counts.rejected,
                    counts.read,
                    look(at)
                )),
                None => e,
            });
        }
    };
    if let (Some(threshold), Some(at)) = (quarantine.threshold, &kept_at)
        && threshold.exceeded(counts.rejected, counts.read)
    {
        return Err(Error::Invalid(format!(
            "job {}: {} of {} records read were bad ({:.2}%), over max_errors = {threshold}; nothing was landed \
             in {} (its written files stay invisible; `sluice asset vacuum` deletes them). The bad records are \
             in {at}; {}",
            job.job.name,
            counts.rejected,
            counts.read,
            counts.rejected as f64 * 100.0 / counts.read.max(1) as f64,
            job.sink.asset,
            look(at)
        )));
    }
    staged.add_lineage(
        "records",
        serde_json::json!({ "read": counts.read, "quarantined": counts.rejected, "quarantine": kept_at }),
    );
    let write = staged.commit(lake).await?;
    sluice_monitor::profile::profile_written(ctx, lake, &write).await;
    let prepare = finish_prepare(ctx, lake, job, prepared).await?;
    Ok(JobSummary { job: job.job.name.clone(), write, partitions, records: Some(counts), quarantine: kept, prepare })
}

/// After the sink committed: the rows that broke a rule become a version of the violations
/// asset, and the staging folder goes.
async fn finish_prepare(
    ctx: &SessionContext,
    lake: &Lake,
    job: &JobFile,
    staged: Option<sluice_datasets::prepare::Staged>,
) -> Result<Option<PrepareSummary>> {
    let (Some(staged), Some(prepare)) = (staged, &job.prepare) else { return Ok(None) };
    let mut violations = None;
    if staged.prepared.violating() > 0 {
        let asset = prepare.violations.clone().unwrap_or_else(|| format!("{}_violations", job.sink.asset));
        let options = WriteOptions {
            job: job.job.name.clone(),
            lineage: serde_json::Map::from_iter([("violations_of".to_string(), serde_json::json!(job.sink.asset))]),
            ..Default::default()
        };
        let written = async { stage_asset(lake, &asset, ctx.sql(&staged.violating_sql).await?, &options).await };
        violations = Some(written.await?.commit(lake).await?);
    }
    let prepared = staged.prepared.clone();
    staged.remove(ctx, lake).await?;
    Ok(Some(PrepareSummary { prepared, violations }))
}

/// Registers `df` as table `name`, without repeated events when `dedup` says which are the same.
fn register_deduplicated(
    ctx: &SessionContext,
    name: &str,
    df: datafusion::dataframe::DataFrame,
    dedup: Option<&Dedup>,
) -> Result<()> {
    let df = match dedup {
        None => df,
        Some(dedup) => {
            let columns: Vec<_> = dedup.key.iter().chain(dedup.time.iter()).collect();
            for column in &columns {
                if df.schema().field_with_unqualified_name(column).is_err() {
                    return Err(Error::Invalid(format!(
                        "sources.{name}.dedup: '{column}' is not a column of the source (columns: {})",
                        df.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
            let on: Vec<_> = columns.iter().map(|c| col(datafusion::common::Column::from_name(*c))).collect();
            let select: Vec<_> =
                df.schema().fields().iter().map(|f| col(datafusion::common::Column::from_name(f.name()))).collect();
            let sort = on.iter().map(|e| e.clone().sort(true, false)).collect();
            df.distinct_on(on, select, Some(sort))?
        }
    };
    ctx.register_table(name, df.into_view())?;
    Ok(())
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

async fn register_parquet(ctx: &SessionContext, name: &str, url: &str, extension: Option<&str>) -> Result<()> {
    let options = ParquetReadOptions { file_extension: extension.unwrap_or(".parquet"), ..Default::default() };
    ctx.register_parquet(name, url, options)
        .await
        .map_err(|e| Error::Invalid(format!("sources.{name}: cannot read {url}: {e}")))
}
