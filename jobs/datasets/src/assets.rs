//! `sluice asset ...`: writing query results as asset versions, and the listings users read.

use std::fmt::Write as _;

use datafusion::prelude::SessionContext;
use sluice_lake::delta::{AssetSummary, AssetVersion, Lake, VacuumReport, VersionInfo};
use sluice_engine::assets::{WriteOptions, WriteSummary, write_asset};

use sluice_catalog::error::Result;
use sluice_catalog::models::resolve::ModelUse;

/// Runs `sql` on the cluster and commits its rows as a new version of asset `name`; registered
/// models it scores with (`predict('churn@production', ...)`) are resolved first and recorded
/// with the version.
pub async fn write(
    ctx: &SessionContext,
    lake: &Lake,
    name: &str,
    sql: &str,
    options: &WriteOptions,
) -> Result<(WriteSummary, Vec<ModelUse>)> {
    let (sql, models) = sluice_catalog::models::resolve::resolve_sql(lake, sql).await?;
    let mut options = options.clone();
    if !models.is_empty() {
        options.lineage.insert("models".into(), serde_json::to_value(&models).unwrap_or_default());
    }
    let spin = sluice_catalog::progress::spinner(&format!("writing asset {name}"));
    let result = async {
        let df = ctx.sql(&sql).await?;
        Ok::<_, sluice_catalog::error::Error>(write_asset(lake, name, df, &options).await?)
    }
    .await;
    spin.finish_and_clear();
    let written = result?;
    sluice_monitor::profile::profile_written(ctx, lake, &written).await;
    Ok((written, models))
}

/// Copies the Parquet files of local directory `dir` into a run folder of asset `name` and
/// commits them as a new version (appending), byte for byte.
pub async fn import(lake: &Lake, name: &str, dir: &std::path::Path) -> Result<WriteSummary> {
    use object_store::ObjectStoreExt;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(sluice_catalog::error::Error::io(format!("reading {}", dir.display())))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    files.sort();
    let first = files.first().ok_or_else(|| {
        sluice_catalog::error::Error::Invalid(format!("{} holds no .parquet files to import", dir.display()))
    })?;
    let schema = {
        let file = std::fs::File::open(first).map_err(sluice_catalog::error::Error::io(format!("reading {}", first.display())))?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| sluice_catalog::error::Error::Invalid(format!("{} is not Parquet: {e}", first.display())))?;
        reader.schema().clone()
    };
    let run = sluice_engine::assets::write::run_id();
    let folder = lake
        .asset_url(name)?
        .join(&format!("run-{run}/"))
        .map_err(|e| sluice_catalog::error::Error::Invalid(e.to_string()))?;
    let store = lake.store();
    for path in &files {
        let bytes = std::fs::read(path).map_err(sluice_catalog::error::Error::io(format!("reading {}", path.display())))?;
        let file_name = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let target = lake.store_path(&folder)?.join(file_name.as_str());
        store
            .put(&target, bytes.into())
            .await
            .map_err(|e| sluice_catalog::error::Error::Invalid(format!("copying {} into {name}: {e}", path.display())))?;
    }
    let lineage = serde_json::json!({ "run_id": run, "job": "sluice asset import", "inputs": [dir.display().to_string()], "mode": "append" });
    sluice_engine::assets::commit_folder(lake, name, &folder, schema, lineage)
        .await?
        .ok_or_else(|| sluice_catalog::error::Error::Invalid(format!("nothing to import from {}", dir.display())))
}

/// One line per asset: latest version, rows, files, size, tags.
pub fn list_table(assets: &[AssetSummary]) -> String {
    if assets.is_empty() {
        return "no assets yet; `sluice asset write NAME --sql ...` creates one\n".to_string();
    }
    let rows: Vec<Vec<String>> = assets
        .iter()
        .map(|a| {
            let tags = a.tags.iter().map(|(t, v)| format!("{t}@{v}")).collect::<Vec<_>>().join(" ");
            vec![a.name.clone(), a.version.to_string(), a.rows.to_string(), a.files.to_string(), bytes(a.bytes), tags]
        })
        .collect();
    table(&["asset", "version", "rows", "files", "size", "tags"], &rows)
}

/// The history of one asset, newest first, with the lineage of each version.
pub fn versions_table(versions: &[VersionInfo]) -> String {
    let rows: Vec<Vec<String>> = versions
        .iter()
        .map(|v| {
            let lineage = v.lineage.as_ref();
            let field = |k: &str| lineage.and_then(|l| l.get(k)).map(short).unwrap_or_default();
            vec![
                v.version.to_string(),
                v.timestamp_ms.map(time).unwrap_or_default(),
                v.operation.clone(),
                field("mode"),
                field("rows"),
                field("job"),
                inputs_and_models(lineage),
                field("run_id"),
            ]
        })
        .collect();
    table(&["version", "committed", "operation", "mode", "rows", "job", "inputs", "run"], &rows)
}

/// The inputs a version read, and the model versions it scored with (`model churn@production=v2`).
fn inputs_and_models(lineage: Option<&serde_json::Value>) -> String {
    let Some(lineage) = lineage else { return String::new() };
    let mut parts: Vec<String> = match lineage.get("inputs") {
        Some(serde_json::Value::Array(items)) => items.iter().map(short).collect(),
        Some(other) => vec![short(other)],
        None => Vec::new(),
    };
    if let Some(serde_json::Value::Array(models)) = lineage.get("models") {
        for m in models {
            let text = |k: &str| m.get(k).map(short).unwrap_or_default();
            parts.push(format!("model {}=v{}", text("reference"), text("version")));
        }
    }
    parts.join(", ")
}

/// One asset version: where it is, its schema and its files.
pub fn show(version: &AssetVersion, tags: &std::collections::BTreeMap<String, u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "asset      {}@{}", version.name, version.version);
    let _ = writeln!(out, "location   {}", version.url);
    let _ = writeln!(out, "rows       {}", version.rows());
    let _ = writeln!(out, "files      {} ({})", version.files.len(), bytes(version.bytes()));
    if !version.partition_columns.is_empty() {
        let _ = writeln!(out, "partitions {}", version.partition_columns.join(", "));
    }
    if !tags.is_empty() {
        let tags = tags.iter().map(|(t, v)| format!("{t}@{v}")).collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "tags       {tags}");
    }
    let _ = writeln!(out, "columns");
    for f in version.schema.fields() {
        let _ = writeln!(out, "  {:<24} {}", f.name(), f.data_type());
    }
    out
}

/// What vacuum removed or would remove.
pub fn vacuum_report(name: &str, report: &VacuumReport) -> String {
    let verb = if report.dry_run { "would delete" } else { "deleted" };
    let mut out = format!("{name}: {verb} {} unreferenced file(s)\n", report.files.len());
    for f in &report.files {
        let _ = writeln!(out, "  {f}");
    }
    out
}

fn short(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Array(items) => items.iter().map(short).collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    }
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
}

/// Bytes as B, KiB, MiB or GiB.
pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", units[unit]) }
}

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_tables_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        let t = table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    bb\nxyz  1\n");
    }
}
