//! The `[prepare]` step of a job: de-duplication by key keeping the latest row, declarative
//! rules (not null, range, allowed values, regex, unique key, foreign key against another
//! asset) whose violating rows go to a violations asset with the rule that failed, and a profile
//! of the rows that pass (rows, NULLs, distinct counts, min/max, label balance) recorded with the
//! version.
//!
//! The transform's rows are checked once, on the executors, and materialised in a staging folder
//! of the lake; the sink and the violations asset are both written from it, so the sources are
//! read exactly once (an API or a table that changes cannot make the two disagree).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, Schema};
use arrow::util::display::array_value_to_string;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};
use sluice_lake::delta::Lake;

use sluice_catalog::error::{Error, Result};
use sluice_catalog::sql::ident;

/// The `[prepare]` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prepare {
    /// Keep one row per key: the latest by a timestamp column.
    pub dedup: Option<DedupLatest>,
    /// Rules every row must pass.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// The asset violating rows go to (default: the sink's name with `_violations`).
    pub violations: Option<String>,
    /// A label column whose balance the profile records.
    pub label: Option<String>,
}

/// De-duplication keeping the latest row of each key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupLatest {
    /// The key columns.
    pub key: Vec<String>,
    /// The row with the greatest value of this column is kept (ties: any one of them).
    pub latest_by: String,
}

/// One rule: checks on a column, or a unique key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// The column checked.
    pub column: Option<String>,
    /// It must not be NULL.
    #[serde(default)]
    pub not_null: bool,
    /// Inclusive bounds `[low, high]` (numbers, or text such as dates).
    pub range: Option<[toml::Value; 2]>,
    /// The values allowed.
    pub allowed: Option<Vec<toml::Value>>,
    /// A regular expression the text must match.
    pub regex: Option<String>,
    /// These columns together identify a row: rows sharing a key all violate it.
    pub unique: Option<Vec<String>>,
    /// A foreign key: the value must exist in `asset.column` (NULLs pass).
    pub references: Option<String>,
}

/// A check as SQL: the condition a row must not make false, and its name.
struct Check {
    name: String,
    condition: String,
    /// A window column or join it needs.
    helper: Option<Helper>,
}

enum Helper {
    Unique { alias: String, keys: Vec<String> },
    Reference { alias: String, column: String, asset: String, target: String },
}

/// The `_rule` of rows dropped as older duplicates of their key.
const DUPLICATE: &str = "duplicate";

fn literal(value: &toml::Value) -> Result<String> {
    Ok(match value {
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_finite() => format!("{f:?}"),
        toml::Value::Boolean(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        toml::Value::String(s) => format!("'{}'", s.replace('\'', "''")),
        toml::Value::Datetime(d) => format!("'{d}'"),
        other => return Err(Error::Invalid(format!("prepare: {other} is not a number, text, boolean or date"))),
    })
}

fn shown(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Prepare {
    /// Checks the section against itself (columns are checked against the rows when it runs).
    pub fn check(&self) -> Result<()> {
        self.checks().map(|_| ())
    }

    fn checks(&self) -> Result<Vec<Check>> {
        let mut checks = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = |msg: String| Error::Invalid(format!("prepare.rules[{i}]: {msg}"));
            if let Some(keys) = &rule.unique {
                if keys.is_empty() || rule.column.is_some() {
                    return Err(at("unique = [\"col\", ...] names the key columns, without column".into()));
                }
                let alias = format!("__unique_{i}");
                checks.push(Check {
                    name: format!("unique({})", keys.join(", ")),
                    condition: format!("{alias} = 1"),
                    helper: Some(Helper::Unique { alias, keys: keys.clone() }),
                });
                continue;
            }
            let column = rule.column.as_ref().ok_or_else(|| at("name the column the rule checks".into()))?;
            let c = ident(column);
            let before = checks.len();
            if rule.not_null {
                checks.push(Check { name: format!("not_null({column})"), condition: format!("{c} IS NOT NULL"), helper: None });
            }
            if let Some([low, high]) = &rule.range {
                checks.push(Check {
                    name: format!("range({column}, {}, {})", shown(low), shown(high)),
                    condition: format!("{c} BETWEEN {} AND {}", literal(low)?, literal(high)?),
                    helper: None,
                });
            }
            if let Some(values) = &rule.allowed {
                if values.is_empty() {
                    return Err(at("allowed = [] allows nothing; list the values".into()));
                }
                let list = values.iter().map(literal).collect::<Result<Vec<_>>>()?.join(", ");
                checks.push(Check {
                    name: format!("allowed({column}: {})", values.iter().map(shown).collect::<Vec<_>>().join(", ")),
                    condition: format!("{c} IN ({list})"),
                    helper: None,
                });
            }
            if let Some(pattern) = &rule.regex {
                regex::Regex::new(pattern).map_err(|e| at(format!("regex '{pattern}' does not compile: {e}")))?;
                checks.push(Check {
                    name: format!("regex({column}, {pattern})"),
                    condition: format!("regexp_like(CAST({c} AS VARCHAR), '{}')", pattern.replace('\'', "''")),
                    helper: None,
                });
            }
            if let Some(target) = &rule.references {
                let (asset, target_column) = target
                    .rsplit_once('.')
                    .ok_or_else(|| at(format!("references = '{target}': write 'asset.column'")))?;
                let alias = format!("__ref_{i}");
                checks.push(Check {
                    name: format!("references({column} -> {target})"),
                    condition: format!("({c} IS NULL OR {alias} IS NOT NULL)"),
                    helper: Some(Helper::Reference {
                        alias,
                        column: column.clone(),
                        asset: asset.to_string(),
                        target: target_column.to_string(),
                    }),
                });
            }
            if checks.len() == before {
                return Err(at(format!(
                    "no check for '{column}': give not_null, range, allowed, regex or references"
                )));
            }
        }
        if let Some(dedup) = &self.dedup
            && dedup.key.is_empty()
        {
            return Err(Error::Invalid("prepare.dedup.key: name at least one key column".into()));
        }
        Ok(checks)
    }
}

/// What the step did.
#[derive(Debug, Clone, Serialize)]
pub struct Prepared {
    /// Rows out of the transform.
    pub rows_in: u64,
    /// Rows dropped as older duplicates of a key.
    pub duplicates: u64,
    /// Rows that broke a rule, by rule.
    pub violations: Vec<(String, u64)>,
    /// The profile of the rows that passed.
    pub profile: serde_json::Value,
}

impl Prepared {
    /// Rows that broke a rule.
    pub fn violating(&self) -> u64 {
        self.violations.iter().map(|(_, n)| n).sum()
    }
}

/// The staged, checked rows of one run: the SQL of the rows that passed and of those that did
/// not, and the folder to remove afterwards.
pub struct Staged {
    /// The rows that pass, with the transform's columns.
    pub passed_sql: String,
    /// The rows that do not, with `_rule` (the first rule broken).
    pub violating_sql: String,
    /// The step's counts and profile.
    pub prepared: Prepared,
    folder: url::Url,
    table: String,
}

impl Staged {
    /// Removes the staging folder and table.
    pub async fn remove(self, ctx: &SessionContext, lake: &Lake) -> Result<()> {
        let _ = ctx.deregister_table(self.table.as_str());
        let store = lake.store();
        let prefix = lake.store_path(&self.folder)?;
        let files: Vec<_> = store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await.unwrap_or_default();
        for file in files {
            let _ = store.delete(&file).await;
        }
        Ok(())
    }
}

/// Runs the step over the rows of `sql` for sink `sink`: de-duplicates, checks and stages them,
/// counts and profiles.
pub async fn run(ctx: &SessionContext, lake: &Lake, prepare: &Prepare, sql: &str, run_id: &str) -> Result<Staged> {
    let df = ctx.sql(sql).await?;
    let schema: Schema = df.schema().as_arrow().clone();
    let have = || schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
    let need = |column: &str, what: &str| {
        schema.field_with_name(column).map(|_| ()).map_err(|_| {
            Error::Invalid(format!("prepare: {what} '{column}' is not a column of the transform's rows ({})", have()))
        })
    };
    let checks = prepare.checks()?;
    for rule in &prepare.rules {
        if let Some(c) = &rule.column {
            need(c, "the rule's column")?;
        }
        for k in rule.unique.iter().flatten() {
            need(k, "unique key column")?;
        }
    }
    if let Some(d) = &prepare.dedup {
        for k in &d.key {
            need(k, "dedup key")?;
        }
        need(&d.latest_by, "dedup latest_by")?;
    }
    if let Some(label) = &prepare.label {
        need(label, "label")?;
    }
    if schema.field_with_name("_rule").is_ok() {
        return Err(Error::Invalid("prepare: the rows already have a column _rule; rename it in the transform".into()));
    }
    let cols = schema.fields().iter().map(|f| ident(f.name())).collect::<Vec<_>>().join(", ");
    let qualified = schema.fields().iter().map(|f| format!("t.{}", ident(f.name()))).collect::<Vec<_>>().join(", ");

    // Older rows of a key are kept in the staging as `_rule = 'duplicate'` (counted, not landed).
    let ranked = match &prepare.dedup {
        None => format!("SELECT {cols}, 1 AS __latest FROM ({sql})"),
        Some(d) => format!(
            "SELECT {cols}, row_number() OVER (PARTITION BY {} ORDER BY {} DESC NULLS LAST) AS __latest FROM ({sql})",
            d.key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", "),
            ident(&d.latest_by)
        ),
    };
    let mut helpers = Vec::new();
    let mut joins = String::new();
    for check in &checks {
        match &check.helper {
            Some(Helper::Unique { alias, keys }) => helpers.push(format!(
                "SUM(CASE WHEN t.__latest = 1 THEN 1 ELSE 0 END) OVER (PARTITION BY {}) AS {alias}",
                keys.iter().map(|k| format!("t.{}", ident(k))).collect::<Vec<_>>().join(", ")
            )),
            Some(Helper::Reference { alias, column, asset, target }) => {
                helpers.push(format!("{alias}.v AS {alias}"));
                joins.push_str(&format!(
                    " LEFT JOIN (SELECT DISTINCT {} AS v FROM {}) {alias} ON t.{} = {alias}.v",
                    ident(target),
                    ident(asset),
                    ident(column)
                ));
            }
            None => {}
        }
    }
    let helpers = if helpers.is_empty() { String::new() } else { format!(", {}", helpers.join(", ")) };
    let cases = checks
        .iter()
        .map(|c| format!(" WHEN NOT ({}) THEN '{}'", c.condition, c.name.replace('\'', "''")))
        .collect::<String>();
    let checked = format!(
        "SELECT {cols}, CASE WHEN __latest > 1 THEN '{DUPLICATE}'{cases} END AS _rule \
         FROM (SELECT {qualified}, t.__latest{helpers} FROM ({ranked}) t{joins})"
    );

    // Checked once, on the executors, into the lake's staging folder.
    let folder = lake
        .root()
        .join(&format!("_staging/prepare-{run_id}/"))
        .map_err(|e| Error::Invalid(format!("prepare: staging folder: {e}")))?;
    let spin = sluice_catalog::progress::spinner("prepare: checking rows");
    let written = async {
        ctx.sql(&checked).await?.write_parquet(folder.as_str(), Default::default(), None).await?;
        Ok::<_, Error>(())
    }
    .await;
    spin.finish_and_clear();
    written?;
    let table = format!("__prepared_{}", run_id.to_ascii_lowercase().replace('-', "_"));
    ctx.register_parquet(table.as_str(), folder.as_str(), ParquetReadOptions::default()).await?;
    let staged_table = ident(&table);

    let rows_in = count(ctx, &format!("SELECT COUNT(*) FROM {staged_table}")).await?;
    let duplicates = count(ctx, &format!("SELECT COUNT(*) FROM {staged_table} WHERE _rule = '{DUPLICATE}'")).await?;
    let by_rule = ctx
        .sql(&format!(
            "SELECT _rule, COUNT(*) FROM {staged_table} WHERE _rule <> '{DUPLICATE}' GROUP BY _rule ORDER BY _rule"
        ))
        .await?
        .collect()
        .await?;
    let mut violations = Vec::new();
    for batch in &by_rule {
        for r in 0..batch.num_rows() {
            let n = batch.column(1).as_primitive::<Int64Type>().value(r);
            violations.push((array_value_to_string(batch.column(0), r)?, u64::try_from(n).unwrap_or_default()));
        }
    }
    let passed_sql = format!("SELECT {cols} FROM {staged_table} WHERE _rule IS NULL");
    let profile = profile(ctx, &schema, &passed_sql, prepare.label.as_deref()).await?;
    Ok(Staged {
        violating_sql: format!("SELECT * FROM {staged_table} WHERE _rule <> '{DUPLICATE}'"),
        passed_sql,
        prepared: Prepared { rows_in, duplicates, violations, profile },
        folder,
        table,
    })
}

async fn count(ctx: &SessionContext, sql: &str) -> Result<u64> {
    let batches = ctx.sql(sql).await?.collect().await?;
    Ok(batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .map_or(0, |b| u64::try_from(b.column(0).as_primitive::<Int64Type>().value(0)).unwrap_or_default()))
}

/// Rows; per column NULLs, distinct values (approximate), min and max; the label's balance.
async fn profile(ctx: &SessionContext, schema: &Schema, rows: &str, label: Option<&str>) -> Result<serde_json::Value> {
    let ordered = |t: &DataType| t.is_numeric() || t.is_temporal() || matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Boolean | DataType::Date32);
    let mut exprs = vec!["COUNT(*)".to_string()];
    for f in schema.fields() {
        let c = ident(f.name());
        exprs.push(format!("COUNT(*) - COUNT({c})"));
        exprs.push(format!("approx_distinct({c})"));
        if ordered(f.data_type()) {
            exprs.push(format!("CAST(MIN({c}) AS VARCHAR)"));
            exprs.push(format!("CAST(MAX({c}) AS VARCHAR)"));
        }
    }
    let batches = ctx.sql(&format!("SELECT {} FROM ({rows})", exprs.join(", "))).await?.collect().await?;
    let batch: &RecordBatch =
        batches.iter().find(|b| b.num_rows() > 0).ok_or_else(|| Error::Invalid("prepare: no profile row".into()))?;
    let value = |i: usize| -> Result<serde_json::Value> {
        let column = batch.column(i);
        if column.is_null(0) {
            return Ok(serde_json::Value::Null);
        }
        Ok(match column.data_type() {
            DataType::Int64 => serde_json::json!(column.as_primitive::<Int64Type>().value(0)),
            DataType::UInt64 => serde_json::json!(column.as_primitive::<arrow::datatypes::UInt64Type>().value(0)),
            _ => serde_json::json!(array_value_to_string(column, 0)?),
        })
    };
    let mut columns = serde_json::Map::new();
    let mut i = 1;
    for f in schema.fields() {
        let mut entry = serde_json::Map::new();
        entry.insert("nulls".into(), value(i)?);
        entry.insert("distinct".into(), value(i + 1)?);
        i += 2;
        if ordered(f.data_type()) {
            entry.insert("min".into(), value(i)?);
            entry.insert("max".into(), value(i + 1)?);
            i += 2;
        }
        columns.insert(f.name().clone(), serde_json::Value::Object(entry));
    }
    let mut out = serde_json::json!({ "rows": value(0)?, "columns": columns });
    if let Some(label) = label {
        let c = ident(label);
        let batches = ctx
            .sql(&format!("SELECT CAST({c} AS VARCHAR), COUNT(*) FROM ({rows}) GROUP BY 1 ORDER BY 1"))
            .await?
            .collect()
            .await?;
        let mut balance = serde_json::Map::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                let key = if b.column(0).is_null(r) { "NULL".to_string() } else { array_value_to_string(b.column(0), r)? };
                balance.insert(key, serde_json::json!(b.column(1).as_primitive::<Int64Type>().value(r)));
            }
        }
        out["label"] = serde_json::json!({ "column": label, "counts": balance });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_become_named_checks_and_mistakes_name_the_rule() {
        let prepare: Prepare = toml::from_str(
            r#"
            rules = [
              { column = "age", not_null = true, range = [0, 120] },
              { column = "plan", allowed = ["free", "pro"] },
              { unique = ["id"] },
              { column = "country", references = "countries.code" },
            ]
            "#,
        )
        .unwrap();
        let names: Vec<String> = prepare.checks().unwrap().into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["not_null(age)", "range(age, 0, 120)", "allowed(plan: free, pro)", "unique(id)", "references(country -> countries.code)"]
        );
        let bad = |text: &str| toml::from_str::<Prepare>(text).unwrap().check().unwrap_err().to_string();
        assert!(bad(r#"rules = [{ column = "a" }]"#).contains("prepare.rules[0]: no check for 'a'"));
        assert!(bad(r#"rules = [{ column = "a", regex = "(" }]"#).contains("does not compile"));
        assert!(bad(r#"rules = [{ not_null = true }]"#).contains("name the column"));
        assert!(bad(r#"rules = [{ column = "a", references = "countries" }]"#).contains("asset.column"));
        assert!(toml::from_str::<Prepare>(r#"rules = [{ column = "a", notnull = true }]"#).is_err());
    }
}
