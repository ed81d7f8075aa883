//! The `asset` and `split` commands.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use sluice_catalog::record::recorded;
use sluice_engine::assets::WriteOptions;
use sluice_engine::cli::{ClusterArgs, Say, WorkspaceArg};
use sluice_engine::{AssetRef, At};

use crate::assets::bytes;
use crate::{Error, Result};

/// `sluice asset`.
#[derive(Subcommand, Debug)]
pub enum AssetCommand {
    /// Every asset with its latest version, rows, files, size and tags.
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// One version of an asset (NAME, NAME@VERSION or NAME@TAG): location, schema, files.
    Show {
        /// The asset reference.
        asset: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// The versions of an asset, newest first, with what made each (job, inputs, rows).
    Versions {
        /// The asset's name.
        name: String,
        /// Versions to show at most.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Point a tag at a version: `sluice asset tag accounts@7 prod` (latest without @VERSION).
    Tag {
        /// NAME or NAME@VERSION.
        asset: String,
        /// The tag (a letter first, then letters, digits, '_' or '-').
        tag: String,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Run a query on the cluster and commit its rows as a new version of an asset.
    Write {
        /// The asset's name (created on its first write).
        name: String,
        /// The query whose rows are written.
        #[arg(long)]
        sql: String,
        /// append (default), overwrite, or merge (rows replace the asset's rows of the same --key).
        #[arg(long, default_value = "append")]
        mode: String,
        /// Merge: the key columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        key: Vec<String>,
        /// Merge: a boolean column of the query; true removes the key from the asset.
        #[arg(long)]
        delete_column: Option<String>,
        /// Partition columns, comma-separated.
        #[arg(long, value_delimiter = ',')]
        partition_by: Vec<String>,
        /// Sort order, comma-separated (`col` or `col DESC`).
        #[arg(long, value_delimiter = ',')]
        sort_by: Vec<String>,
        /// Aim for files of about this size, e.g. 128MB.
        #[arg(long)]
        target_file_size: Option<String>,
        /// Parquet compression: zstd(LEVEL), snappy, lz4, uncompressed.
        #[arg(long, default_value = "zstd(3)")]
        compression: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Commit existing Parquet files (a local directory) as a new version of an asset, byte for
    /// byte: they are copied into the asset's folder, not rewritten.
    Import {
        /// The asset's name (created on its first version).
        name: String,
        /// A local directory of Parquet files with one schema.
        dir: PathBuf,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
    /// Delete files no version needs any more (replaced by overwrites, or left by failed writes).
    Vacuum {
        /// The asset's name.
        name: String,
        /// Keep files younger than this many hours (writes still running are younger).
        #[arg(long, default_value_t = 168)]
        retain_hours: u64,
        /// List what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        workspace: WorkspaceArg,
    },
}

impl AssetCommand {
    pub async fn run(self, say: Say) -> Result<()> {
        match self {
            AssetCommand::List { workspace } => say.block(crate::assets::list_table(&workspace.lake()?.list().await?)),
            AssetCommand::Show { asset, workspace } => {
                let lake = workspace.lake()?;
                let asset = AssetRef::parse(&asset)?;
                let version = lake.resolve(&asset).await?;
                say.block(crate::assets::show(&version, &lake.tags(&asset.name).await?));
            }
            AssetCommand::Versions { name, limit, workspace } => {
                say.block(crate::assets::versions_table(&workspace.lake()?.history(&name, limit).await?));
            }
            AssetCommand::Tag { asset, tag, workspace } => {
                let asset = AssetRef::parse(&asset)?;
                let version = match asset.at {
                    At::Latest => None,
                    At::Version(v) => Some(v),
                    At::Tag(t) => return Err(Error::Invalid(format!("tag a version number, not the tag '{t}': NAME@VERSION"))),
                };
                let version = workspace.lake()?.tag(&asset.name, &tag, version).await?;
                say.out(format!("{}@{tag} -> version {version}", asset.name));
            }
            AssetCommand::Write {
                name,
                sql,
                mode,
                key,
                delete_column,
                partition_by,
                sort_by,
                target_file_size,
                compression,
                cluster,
            } => {
                let lake = cluster.workspace.lake()?;
                let (ctx, _cluster) = cluster.session().await?;
                let ctx = ctx.enable_url_table();
                let options = WriteOptions {
                    mode: mode.parse()?,
                    key,
                    delete_column,
                    partition_by,
                    sort_by,
                    target_file_bytes: target_file_size.as_deref().map(parse_size).transpose()?,
                    compression,
                    job: "sluice asset write".into(),
                    lineage: Default::default(),
                };
                let (s, models) = crate::assets::write(&ctx, &lake, &name, &sql, &options).await?;
                for m in &models {
                    say.out(format!("model        {} = {} version {} ({})", m.reference, m.name, m.version, m.id));
                }
                let inputs = if s.inputs.is_empty() { "none".to_string() } else { s.inputs.join(", ") };
                say.out(format!(
                    "{}@{}: {} rows in {} files ({}) in {:.1} s; inputs: {inputs}",
                    s.asset,
                    s.version,
                    s.rows,
                    s.files,
                    bytes(s.bytes),
                    s.seconds
                ));
                if let Some(m) = &s.merged {
                    say.out(format!("merged       {m}"));
                }
            }
            AssetCommand::Import { name, dir, workspace } => {
                let lake = workspace.lake()?;
                let s = crate::assets::import(&lake, &name, &dir).await?;
                say.out(format!(
                    "{}@{}: {} rows in {} files ({}) imported from {}",
                    s.asset,
                    s.version,
                    s.rows,
                    s.files,
                    bytes(s.bytes),
                    dir.display()
                ));
            }
            AssetCommand::Vacuum { name, retain_hours, dry_run, workspace } => {
                let retain = std::time::Duration::from_secs(retain_hours.saturating_mul(3600));
                let report = workspace.lake()?.vacuum(&name, retain, dry_run).await?;
                say.block(crate::assets::vacuum_report(&name, &report));
            }
        }
        Ok(())
    }
}

/// `sluice split`.
#[derive(Args, Debug)]
pub struct SplitArgs {
    /// The input asset: NAME, NAME@VERSION or NAME@TAG.
    input: String,
    /// The output asset (with a `split` column), or the prefix of three (--layout assets).
    #[arg(long)]
    output: Option<String>,
    /// random (hash of the key), stratified (per label value), group (whole entities) or time.
    #[arg(long, default_value = "random")]
    method: String,
    /// The row key, comma-separated columns (random, stratified).
    #[arg(long, value_delimiter = ',')]
    key: Vec<String>,
    /// The label: kept in proportion (stratified) and reported per split.
    #[arg(long)]
    label: Option<String>,
    /// The entity column whose rows stay together (group).
    #[arg(long)]
    group: Option<String>,
    /// The event-time column (time).
    #[arg(long)]
    time: Option<String>,
    /// Time: where validate and test start, T1,T2 (default: the ratios' quantiles).
    #[arg(long, value_delimiter = ',', num_args = 2)]
    cuts: Option<Vec<String>>,
    /// Train, validate, test fractions (or train, test).
    #[arg(long, default_value = "0.7,0.15,0.15")]
    ratios: String,
    /// Seed of the hash.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// column (one asset with a split column) or assets (NAME_train, NAME_validate, NAME_test).
    #[arg(long, default_value = "column")]
    layout: String,
    #[command(flatten)]
    cluster: ClusterArgs,
}

impl SplitArgs {
    pub async fn run(self, say: Say) -> Result<()> {
        let lake = self.cluster.workspace.lake()?;
        let name = AssetRef::parse(&self.input)?.name;
        let spec = crate::split::SplitSpec {
            output: self.output.unwrap_or_else(|| format!("{name}_split")),
            input: self.input,
            method: self.method.parse()?,
            key: self.key,
            label: self.label,
            group: self.group,
            time: self.time,
            cuts: self.cuts.map(|c| [c[0].clone(), c[1].clone()]),
            ratios: crate::split::parse_ratios(&self.ratios)?,
            seed: self.seed,
            layout: self.layout.parse()?,
        };
        let (ctx, _cluster) = self.cluster.session().await?;
        let work = crate::split::run(&ctx, &lake, &spec);
        let r = recorded(&lake, "split", &spec.input, None, work, |r| {
            let outputs = r.outputs.iter().map(|w| format!("{}@{}", w.asset, w.version)).collect::<Vec<_>>();
            (Some(r.rows.iter().sum()), Some(outputs.join(", ")), None)
        })
        .await?;
        let [train, validate, test] = r.ratios;
        say.out(format!("split        {} ({} by {}, seed {}, {train}/{validate}/{test})", r.input, r.method, r.overlap_by, r.seed));
        if let Some([t1, t2]) = &r.cuts {
            say.out(format!("cuts         validate from {t1}, test from {t2}"));
        }
        for (i, part) in crate::split::SPLITS.iter().enumerate() {
            let labels = r.labels.iter().map(|(value, n)| format!("{value}: {}", n[i])).collect::<Vec<_>>().join(", ");
            let share = r.rows[i] as f64 * 100.0 / r.rows.iter().sum::<u64>().max(1) as f64;
            let labels = if labels.is_empty() { String::new() } else { format!("  ({labels})") };
            say.out(format!("{part:<12} {} rows, {share:.1}%{labels}", r.rows[i]));
        }
        let meaning = match r.cuts {
            Some(_) => "rows of an earlier split at or after the start of a later one".to_string(),
            None => format!("{} in more than one split", r.overlap_by),
        };
        say.out(format!("overlap      {} ({meaning}; must be 0)", r.overlap));
        for w in &r.outputs {
            say.out(format!("written      {}@{}: {} rows in {} files", w.asset, w.version, w.rows, w.files));
        }
        if r.overlap > 0 {
            return Err(Error::Invalid(format!("the split overlaps: {} {} are in more than one split", r.overlap, r.overlap_by)));
        }
        Ok(())
    }
}

/// `128MB`, `1GiB`, `500k`, `1048576` as bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| Error::Invalid(format!("size '{text}': expected a number and a unit, e.g. 128MB")))?;
    let scale = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        other => return Err(Error::Invalid(format!("size '{text}': unknown unit '{other}'; use B, KB, MB or GB"))),
    };
    Ok((num * scale) as u64)
}
