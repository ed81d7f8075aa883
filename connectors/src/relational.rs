//! What relational sources share: what to read from a table, partition ranges, exact decimals.

use arrow::array::ArrayRef;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::{RecordBatch, RecordBatchOptions};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What to read: a table (partitioned by a column's range or by its physical pages) or a query.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRead {
    /// `schema.table` or `table`.
    pub table: Option<String>,
    /// A query instead of a table (read as one partition unless `partition_column` is set).
    pub query: Option<String>,
    /// An integer, date or timestamp column whose range is split into `partitions` reads.
    pub partition_column: Option<String>,
    /// Parallel reads (default 4); each is one task on some executor.
    #[serde(default = "default_partitions")]
    pub partitions: usize,
    /// A column that grows with every insert and update (e.g. `updated_at`): re-runs read only
    /// rows above the watermark the previous version recorded.
    pub watermark_column: Option<String>,
}

fn default_partitions() -> usize {
    4
}

/// How a column may be compared in a condition sent to the source: only where the source's
/// answer keeps every row the engine's own comparison would (conditions sent down are
/// re-checked by the engine, so a source may return more rows, never fewer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterClass {
    /// Integers, floats, decimals: every comparison.
    Number,
    /// Text compared only for equality (collations order text differently than bytes).
    TextEquality,
    /// Booleans.
    Bool,
    /// Dates.
    Date,
    /// Timestamps without (false) or with (true, UTC) a time zone.
    Timestamp(bool),
    /// Only `IS NULL` / `IS NOT NULL`.
    NullOnly,
}

/// The SQL dialect of a source, for conditions sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl Dialect {
    /// A quoted identifier.
    pub fn ident(self, name: &str) -> String {
        match self {
            Self::Postgres => format!("\"{}\"", name.replace('"', "\"\"")),
            Self::Mysql => format!("`{}`", name.replace('`', "``")),
        }
    }

    /// A quoted text literal.
    pub fn text(self, value: &str) -> String {
        match self {
            Self::Postgres => format!("'{}'", value.replace('\'', "''")),
            Self::Mysql => format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''")),
        }
    }

    /// A timestamp literal (`2026-01-02 03:04:05.000006`), in UTC when `utc`.
    pub fn timestamp(self, value: &str, utc: bool) -> String {
        match (self, utc) {
            (Self::Postgres, false) => format!("TIMESTAMP '{value}'"),
            (Self::Postgres, true) => format!("TIMESTAMPTZ '{value}+00'"),
            (Self::Mysql, _) => format!("TIMESTAMP '{value}'"),
        }
    }
}

/// `n` contiguous ranges of `expr` covering [lo, hi], NULLs in the first.
pub(crate) fn ranges(expr: &str, lo: Option<i64>, hi: Option<i64>, n: usize) -> Vec<String> {
    let (Some(lo), Some(hi)) = (lo, hi) else { return vec!["TRUE".to_string()] };
    let span = (i128::from(hi) - i128::from(lo) + 1).max(1);
    let step = (span / n as i128).max(1);
    let mut parts = Vec::new();
    let mut start = i128::from(lo);
    for i in 0..n {
        let end = if i + 1 == n { i128::from(hi) + 1 } else { (start + step).min(i128::from(hi) + 1) };
        let mut p = format!("({expr} >= {start} AND {expr} < {end})");
        if i == 0 {
            p = format!("({p} OR {expr} IS NULL)");
        }
        parts.push(p);
        start = end;
        if start > i128::from(hi) {
            break;
        }
    }
    parts
}

/// Parses a numeric's text form exactly into an i128 with `scale` digits after the point.
pub(crate) fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let bad = |why: &str| format!("numeric value {text} does not fit numeric({precision}, {scale}): {why}");
    if text.eq_ignore_ascii_case("nan") || text.contains("inf") || text.contains("Inf") {
        return Err(bad("not a number"));
    }
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let scale = usize::try_from(scale).map_err(|_| bad("negative scale"))?;
    if frac.len() > scale && frac[scale..].bytes().any(|b| b != b'0') {
        return Err(bad("more digits after the point than the column's scale"));
    }
    let mut value: i128 = 0;
    let frac_digits = frac.bytes().chain(std::iter::repeat(b'0')).take(scale);
    for b in int.bytes().chain(frac_digits) {
        if !b.is_ascii_digit() {
            return Err(bad("not a decimal number"));
        }
        value =
            value.checked_mul(10).and_then(|v| v.checked_add(i128::from(b - b'0'))).ok_or_else(|| bad("too large"))?;
    }
    if value >= 10i128.pow(u32::from(precision)) {
        return Err(bad("too many digits"));
    }
    Ok(if negative { -value } else { value })
}

/// A batch of `rows` rows from finished column arrays (no columns: a row count only, as
/// `COUNT(*)` reads).
/// Fails when a read needs columns whose types Sluice does not map, naming all of them at once:
/// `columns` gives each needed column's name and, when unmapped, its type; `cast` writes the
/// query expression that reads one as text.
pub(crate) fn check_mapped<'a>(
    source: &str,
    label: &str,
    columns: impl Iterator<Item = (&'a str, Option<&'a str>)>,
    cast: impl Fn(&str) -> String,
) -> Result<()> {
    let unmapped: Vec<(&str, &str)> = columns.filter_map(|(name, ty)| Some((name, ty?))).collect();
    if unmapped.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = unmapped.iter().map(|(name, ty)| format!("'{name}' ({ty})")).collect();
    let casts: Vec<String> = unmapped.iter().map(|(name, _)| cast(name)).collect();
    let (s, have, them) = if unmapped.len() > 1 { ("s", "have", "them") } else { ("", "has", "it") };
    Err(Error::Source(format!(
        "source '{source}': {label} column{s} {} {have} a type Sluice does not map, and the transform uses {them}; \
         leave {them} out of the transform, or read {them} with query = \"SELECT ..., {} FROM ...\" (or another cast)",
        names.join(", "),
        casts.join(", ")
    )))
}

pub(crate) fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>, rows: usize) -> Result<RecordBatch> {
    RecordBatch::try_new_with_options(schema.clone(), columns, &RecordBatchOptions::new().with_row_count(Some(rows)))
        .map_err(|e| Error::Source(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_value_once() {
        let parts = ranges("x", Some(1), Some(10), 4);
        assert_eq!(parts.len(), 4);
        assert!(parts[0].contains("x IS NULL"));
        assert!(parts[3].ends_with("x < 11)"), "{parts:?}");
        assert_eq!(ranges("x", Some(5), Some(5), 4).len(), 1);
        assert_eq!(ranges("x", None, None, 4), ["TRUE"]);
    }

    #[test]
    fn numerics_parse_exactly_or_say_why_not() {
        assert_eq!(parse_decimal("12.34", 10, 2).unwrap(), 1234);
        assert_eq!(parse_decimal("-0.5", 10, 3).unwrap(), -500);
        assert_eq!(parse_decimal("7", 5, 0).unwrap(), 7);
        assert_eq!(parse_decimal("1.2300", 10, 2).unwrap(), 123);
        assert!(parse_decimal("1.234", 10, 2).unwrap_err().contains("more digits after the point"));
        assert!(parse_decimal("123456", 5, 0).unwrap_err().contains("too many digits"));
        assert!(parse_decimal("NaN", 5, 0).is_err());
    }
}
