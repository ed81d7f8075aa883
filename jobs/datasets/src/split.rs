//! Train / validate / test splits that are reproducible and leak-free, written as data assets.
//!
//! A row's split is a function of its own values only, never of partitioning, executor count,
//! file order or the run: `random` and `group` compare `split_hash(key, seed)` (xxHash3 of the
//! key's text) with the ratios, so a row added later does not move the others and every row of
//! a group shares its split; `stratified` ranks each label's rows by that hash (ties by key) and
//! cuts each stratum at its own ratios, so every stratum's proportions are within one row of the
//! target; `time` cuts at two instants (given, or the ratios' quantiles of the time column).
//! Every run records the method, seed, ratios, input version and a report (rows and label
//! balance per split, overlap, which must be 0) with the version it writes.

use std::fmt;
use std::str::FromStr;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, Schema};
use arrow::util::display::array_value_to_string;
use datafusion::prelude::SessionContext;
use serde::Serialize;
use sluice_lake::delta::{AssetRef, Lake, WriteMode};
use sluice_engine::assets::{WriteOptions, WriteSummary, stage_asset};

use sluice_catalog::error::{Error, Result};
use sluice_catalog::sql::ident;

/// The splits, in order.
pub const SPLITS: [&str; 3] = ["train", "validate", "test"];

/// How rows are assigned to splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// By a hash of the row key and the seed.
    Random,
    /// Within each label value, by rank of the hash: proportions exact per stratum.
    Stratified,
    /// By a hash of a group column: every row of an entity in one split.
    Group,
    /// Before, between and after two instants of a time column.
    Time,
}

impl FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "random" => Ok(Self::Random),
            "stratified" => Ok(Self::Stratified),
            "group" => Ok(Self::Group),
            "time" => Ok(Self::Time),
            other => Err(Error::Invalid(format!(
                "split method '{other}' is not known; use random, stratified, group or time"
            ))),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Random => "random",
            Self::Stratified => "stratified",
            Self::Group => "group",
            Self::Time => "time",
        })
    }
}

/// Where the splits land.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One asset with a `split` column (partitioned by it).
    Column,
    /// Three assets, `<output>_train`, `<output>_validate`, `<output>_test`.
    Assets,
}

impl FromStr for Layout {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "column" => Ok(Self::Column),
            "assets" => Ok(Self::Assets),
            other => Err(Error::Invalid(format!("split layout '{other}' is not known; use column or assets"))),
        }
    }
}

/// What to split and how.
#[derive(Debug, Clone, Serialize)]
pub struct SplitSpec {
    /// The input asset: `name`, `name@7` or `name@tag`.
    pub input: String,
    /// The output asset (or the prefix of three).
    pub output: String,
    /// How rows are assigned.
    pub method: Method,
    /// The row key (random, stratified; also what overlap is counted by).
    pub key: Vec<String>,
    /// The label (stratified; reported per split for every method).
    pub label: Option<String>,
    /// The entity column (group).
    pub group: Option<String>,
    /// The time column (time).
    pub time: Option<String>,
    /// Time: the instants validate and test start at (default: the ratios' quantiles).
    pub cuts: Option<[String; 2]>,
    /// Train, validate and test fractions (they sum to 1).
    pub ratios: [f64; 3],
    /// The hash seed.
    pub seed: u64,
    /// Where the splits land.
    pub layout: Layout,
}

/// Parses `0.7,0.15,0.15` (or `0.8,0.2`: no validate split) into fractions that sum to 1.
pub fn parse_ratios(text: &str) -> Result<[f64; 3]> {
    let values = text
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|_| Error::Invalid(format!("split ratios '{text}' are not numbers; write e.g. 0.7,0.15,0.15")))?;
    let ratios = match values.as_slice() {
        [train, test] => [*train, 0.0, *test],
        [train, validate, test] => [*train, *validate, *test],
        _ => {
            return Err(Error::Invalid(format!(
                "split ratios '{text}' need three values (train, validate, test) or two (train, test)"
            )));
        }
    };
    if ratios.iter().any(|r| !(0.0..=1.0).contains(r)) {
        return Err(Error::Invalid(format!("split ratios '{text}': each must be between 0 and 1")));
    }
    let sum: f64 = ratios.iter().sum();
    if (sum - 1.0).abs() > 1e-9 {
        return Err(Error::Invalid(format!("split ratios '{text}' sum to {}; they must sum to 1", (sum * 1e9).round() / 1e9)));
    }
    Ok(ratios)
}

/// What a split run did.
#[derive(Debug, Clone, Serialize)]
pub struct SplitReport {
    /// The input version split (`name@version`).
    pub input: String,
    /// Method, seed and ratios.
    pub method: Method,
    /// The seed.
    pub seed: u64,
    /// The ratios.
    pub ratios: [f64; 3],
    /// Rows per split (train, validate, test).
    pub rows: [u64; 3],
    /// Rows per label value and split, when a label is known.
    pub labels: Vec<(String, [u64; 3])>,
    /// What overlap is counted by (the key, the group or the time column).
    pub overlap_by: String,
    /// Keys (or groups) found in more than one split; time: rows of an earlier split at or after
    /// the start of a later one. Always 0 unless something is wrong.
    pub overlap: u64,
    /// Time: the instants validate and test start at.
    pub cuts: Option<[String; 2]>,
    /// The versions written.
    pub outputs: Vec<WriteSummary>,
}

/// Splits `spec.input` as `spec` says and writes the result; the report is also recorded with
/// each version written.
pub async fn run(ctx: &SessionContext, lake: &Lake, spec: &SplitSpec) -> Result<SplitReport> {
    let asset = AssetRef::parse(&spec.input)?;
    let version = lake.resolve(&asset).await?;
    let input = format!("{}@{}", version.name, version.version);
    let schema = version.schema.clone();
    let columns = |names: &[&String]| check_columns(&schema, &input, names);

    fn needs<'a>(what: Option<&'a String>, method: Method, flag: &str) -> Result<&'a String> {
        what.ok_or_else(|| Error::Invalid(format!("a {method} split needs {flag}")))
    }
    let key_cols: Vec<&String> = spec.key.iter().collect();
    let overlap_cols: Vec<&String> = match spec.method {
        Method::Random | Method::Stratified => {
            if key_cols.is_empty() {
                return Err(Error::Invalid(format!("a {} split needs --key (the row's id columns)", spec.method)));
            }
            key_cols.clone()
        }
        Method::Group => vec![needs(spec.group.as_ref(), spec.method, "--group (the entity column, e.g. customer_id)")?],
        Method::Time => vec![needs(spec.time.as_ref(), spec.method, "--time (the event-time column)")?],
    };
    if spec.method == Method::Stratified {
        needs(spec.label.as_ref(), spec.method, "--label (the column whose proportions are kept)")?;
    }
    let mut used: Vec<&String> = overlap_cols.clone();
    used.extend(key_cols.iter().copied());
    used.extend(spec.label.iter());
    columns(&used)?;
    if schema.field_with_name("split").is_ok() {
        return Err(Error::Invalid(format!(
            "{input} already has a column named split; drop or rename it before splitting"
        )));
    }

    // Empty input and NULLs where a row's split is decided.
    let mut must_have: Vec<&String> = overlap_cols.clone();
    if spec.method == Method::Stratified {
        must_have.extend(spec.label.iter());
    }
    must_have.dedup();
    let counts = must_have
        .iter()
        .map(|c| format!("COUNT(*) FILTER (WHERE {} IS NULL)", ident(c)))
        .chain(std::iter::once("COUNT(*)".to_string()))
        .collect::<Vec<_>>()
        .join(", ");
    let row = one_row(ctx, &format!("SELECT {counts} FROM {}", ident(&input))).await?;
    let total = int(&row, must_have.len());
    if total == 0 {
        return Err(Error::Invalid(format!("{input} has no rows; there is nothing to split")));
    }
    for (i, column) in must_have.iter().enumerate() {
        let nulls = int(&row, i);
        if nulls > 0 {
            return Err(Error::Invalid(format!(
                "column '{column}' is NULL in {nulls} of {total} rows of {input}; a {} split needs it on every \
                 row: filter or fill those rows first",
                spec.method
            )));
        }
    }

    let cuts = match (spec.method, &spec.cuts) {
        (Method::Time, Some(cuts)) => Some(cuts.clone()),
        (Method::Time, None) => Some(quantile_cuts(ctx, &input, &overlap_cols[0].clone(), total, spec.ratios).await?),
        _ => None,
    };
    let select = split_sql(spec, &schema, &input, &overlap_cols, cuts.as_ref())?;
    let spin = sluice_catalog::progress::spinner(&format!("splitting {input}"));
    let (rows, labels, overlap) = report(ctx, spec, &select, &overlap_cols, cuts.as_ref()).await?;
    spin.finish_and_clear();

    let mut report = SplitReport {
        input: input.clone(),
        method: spec.method,
        seed: spec.seed,
        ratios: spec.ratios,
        rows,
        labels,
        overlap_by: overlap_cols.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", "),
        overlap,
        cuts,
        outputs: Vec::new(),
    };
    let lineage = serde_json::json!({
        "method": spec.method,
        "seed": spec.seed,
        "ratios": spec.ratios,
        "input": input,
        "key": spec.key,
        "label": spec.label,
        "group": spec.group,
        "time": spec.time,
        "cuts": report.cuts,
        "rows": { "train": rows[0], "validate": rows[1], "test": rows[2] },
        "labels": report.labels,
        "overlap": overlap,
    });
    let options = |partition_by: Vec<String>| WriteOptions {
        mode: WriteMode::Overwrite,
        partition_by,
        job: format!("split ({})", spec.method),
        lineage: serde_json::Map::from_iter([("split".to_string(), lineage.clone())]),
        ..Default::default()
    };
    let targets: Vec<(String, String, Vec<String>)> = match spec.layout {
        Layout::Column => vec![(spec.output.clone(), select.clone(), vec!["split".to_string()])],
        Layout::Assets => {
            let plain = schema.fields().iter().map(|f| ident(f.name())).collect::<Vec<_>>().join(", ");
            SPLITS
                .iter()
                .map(|s| (format!("{}_{s}", spec.output), format!("SELECT {plain} FROM ({select}) WHERE split = '{s}'"), Vec::new()))
                .collect()
        }
    };
    for (name, sql, partition_by) in targets {
        let spin = sluice_catalog::progress::spinner(&format!("writing {name}"));
        let staged = stage_asset(lake, &name, ctx.sql(&sql).await?, &options(partition_by)).await;
        spin.finish_and_clear();
        let written = staged?.commit(lake).await?;
        sluice_monitor::profile::profile_written(ctx, lake, &written).await;
        report.outputs.push(written);
    }
    Ok(report)
}

/// Errors naming the missing columns and the ones there are.
fn check_columns(schema: &Schema, input: &str, names: &[&String]) -> Result<()> {
    for name in names {
        if schema.field_with_name(name).is_err() {
            let have = schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
            return Err(Error::Invalid(format!("{input} has no column '{name}'; its columns are {have}")));
        }
    }
    Ok(())
}

/// The key as one text value: a column, or columns joined by a separator no text holds.
fn key_expr(columns: &[&String]) -> String {
    match columns {
        [one] => ident(one),
        many => format!(
            "concat_ws(chr(31), {})",
            many.iter().map(|c| format!("CAST({} AS VARCHAR)", ident(c))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A literal comparable with a value of `data_type`, from its text.
fn literal(data_type: &DataType, text: &str) -> Result<String> {
    let quoted = format!("'{}'", text.replace('\'', "''"));
    Ok(match data_type {
        DataType::Date32 | DataType::Date64 => format!("CAST({quoted} AS DATE)"),
        DataType::Timestamp(_, _) => format!("CAST({quoted} AS TIMESTAMP)"),
        t if t.is_numeric() => {
            text.parse::<f64>().map_err(|_| Error::Invalid(format!("time cut '{text}' is not a number")))?;
            text.to_string()
        }
        other => {
            return Err(Error::Invalid(format!(
                "a time split needs a timestamp, date or number column, not {other}"
            )));
        }
    })
}

/// The input's rows with a `split` column.
fn split_sql(
    spec: &SplitSpec,
    schema: &Schema,
    input: &str,
    overlap_cols: &[&String],
    cuts: Option<&[String; 2]>,
) -> Result<String> {
    let all = schema.fields().iter().map(|f| ident(f.name())).collect::<Vec<_>>().join(", ");
    let [train, validate, _] = spec.ratios;
    let (r1, r2) = (train, train + validate);
    let seed = spec.seed;
    let by_hash = |key: String| {
        format!(
            "SELECT {all}, CASE WHEN split_hash({key}, {seed}) < {r1:?} THEN 'train' \
             WHEN split_hash({key}, {seed}) < {r2:?} THEN 'validate' ELSE 'test' END AS split FROM {}",
            ident(input)
        )
    };
    Ok(match spec.method {
        Method::Random | Method::Group => by_hash(key_expr(overlap_cols)),
        Method::Stratified => {
            let label = ident(spec.label.as_deref().unwrap_or_default());
            let key = key_expr(overlap_cols);
            format!(
                "SELECT {all}, CASE WHEN __rank <= CAST(round(__n * {r1:?}) AS BIGINT) THEN 'train' \
                 WHEN __rank <= CAST(round(__n * {r2:?}) AS BIGINT) THEN 'validate' ELSE 'test' END AS split \
                 FROM (SELECT {all}, \
                 row_number() OVER (PARTITION BY {label} ORDER BY split_hash({key}, {seed}), {key}) AS __rank, \
                 COUNT(*) OVER (PARTITION BY {label}) AS __n FROM {})",
                ident(input)
            )
        }
        Method::Time => {
            let column = overlap_cols[0];
            let field = schema.field_with_name(column).map_err(|e| Error::Invalid(e.to_string()))?;
            let [t1, t2] = cuts.ok_or_else(|| Error::Invalid("a time split needs its cuts".into()))?;
            let (t1, t2) = (literal(field.data_type(), t1)?, literal(field.data_type(), t2)?);
            let c = ident(column);
            format!(
                "SELECT {all}, CASE WHEN {c} < {t1} THEN 'train' WHEN {c} < {t2} THEN 'validate' ELSE 'test' END \
                 AS split FROM {}",
                ident(input)
            )
        }
    })
}

/// The instants the ratios put validate and test at: the time values at those ranks.
async fn quantile_cuts(
    ctx: &SessionContext,
    input: &str,
    column: &str,
    total: u64,
    ratios: [f64; 3],
) -> Result<[String; 2]> {
    let mut cuts = Vec::new();
    for fraction in [ratios[0], ratios[0] + ratios[1]] {
        let offset = ((total as f64 * fraction).floor() as u64).min(total - 1);
        let batches = ctx
            .sql(&format!("SELECT {c} FROM {} ORDER BY {c} LIMIT 1 OFFSET {offset}", ident(input), c = ident(column)))
            .await?
            .collect()
            .await?;
        let batch = batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| {
            Error::Invalid(format!("{input}: no value of '{column}' at rank {offset} to cut the time split at"))
        })?;
        cuts.push(array_value_to_string(batch.column(0), 0)?);
    }
    Ok([cuts[0].clone(), cuts[1].clone()])
}

type Counts = ([u64; 3], Vec<(String, [u64; 3])>, u64);

/// Rows and labels per split, and the overlap, from the split query itself.
async fn report(
    ctx: &SessionContext,
    spec: &SplitSpec,
    select: &str,
    overlap_cols: &[&String],
    cuts: Option<&[String; 2]>,
) -> Result<Counts> {
    let slot = |s: &str| SPLITS.iter().position(|x| *x == s);
    let label = spec.label.as_deref().map(ident).unwrap_or_else(|| "''".into());
    let batches = ctx
        .sql(&format!(
            "SELECT split, CAST({label} AS VARCHAR) AS label, COUNT(*) AS n FROM ({select}) GROUP BY split, 2 \
             ORDER BY 2, split"
        ))
        .await?
        .collect()
        .await?;
    let mut rows = [0u64; 3];
    let mut labels: Vec<(String, [u64; 3])> = Vec::new();
    for batch in &batches {
        let (split, value, n) = (batch.column(0), batch.column(1), batch.column(2).as_primitive::<Int64Type>());
        for r in 0..batch.num_rows() {
            let Some(i) = slot(&array_value_to_string(split, r)?) else { continue };
            let count = u64::try_from(n.value(r)).unwrap_or_default();
            rows[i] += count;
            let value = if value.is_null(r) { "NULL".to_string() } else { array_value_to_string(value, r)? };
            match labels.iter_mut().find(|(v, _)| *v == value) {
                Some((_, per_split)) => per_split[i] += count,
                None => {
                    let mut per_split = [0; 3];
                    per_split[i] = count;
                    labels.push((value, per_split));
                }
            }
        }
    }
    if spec.label.is_none() {
        labels.clear();
    }
    let overlap_sql = match (spec.method, cuts) {
        (Method::Time, Some(_)) => {
            // Rows of an earlier split at or after the first instant of a later one.
            let c = ident(overlap_cols[0]);
            format!(
                "WITH s AS ({select}), starts AS (SELECT MIN(CASE WHEN split <> 'train' THEN {c} END) AS v, \
                 MIN(CASE WHEN split = 'test' THEN {c} END) AS t FROM s) \
                 SELECT COUNT(*) FROM s CROSS JOIN starts \
                 WHERE (split = 'train' AND {c} >= starts.v) OR (split = 'validate' AND {c} >= starts.t)"
            )
        }
        _ => format!(
            "SELECT COUNT(*) FROM (SELECT {k} AS k FROM ({select}) GROUP BY 1 HAVING COUNT(DISTINCT split) > 1)",
            k = key_expr(overlap_cols)
        ),
    };
    let overlap = int(&one_row(ctx, &overlap_sql).await?, 0);
    Ok((rows, labels, overlap))
}

async fn one_row(ctx: &SessionContext, sql: &str) -> Result<RecordBatch> {
    let batches = ctx.sql(sql).await?.collect().await?;
    batches
        .into_iter()
        .find(|b| b.num_rows() > 0)
        .ok_or_else(|| Error::Invalid(format!("no result from: {sql}")))
}

fn int(batch: &RecordBatch, column: usize) -> u64 {
    batch
        .column(column)
        .as_primitive_opt::<Int64Type>()
        .map_or(0, |a| u64::try_from(a.value(0)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_must_sum_to_one() {
        assert_eq!(parse_ratios("0.7,0.15,0.15").unwrap(), [0.7, 0.15, 0.15]);
        assert_eq!(parse_ratios("0.8, 0.2").unwrap(), [0.8, 0.0, 0.2]);
        let e = parse_ratios("0.7,0.2,0.2").unwrap_err().to_string();
        assert!(e.contains("sum to 1.1") && e.contains("must sum to 1"), "{e}");
        assert!(parse_ratios("a,b").unwrap_err().to_string().contains("not numbers"));
        assert!(parse_ratios("1.5,-0.5,0").unwrap_err().to_string().contains("between 0 and 1"));
        assert!(parse_ratios("1").unwrap_err().to_string().contains("three values"));
    }
}
