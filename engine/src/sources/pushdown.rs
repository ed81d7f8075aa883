//! Conditions of a query sent down to SQL sources: a filter DataFusion hands the table becomes a
//! condition in each partition's `WHERE`, so the database skips the rows (and its indexes help).
//! Filters are pushed as inexact, so DataFusion still checks every row: a condition may only ever
//! let more rows through than the engine's own comparison would, never fewer, which is why text
//! is compared only for equality and columns with source-specific comparisons are left alone.

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use sluice_connectors::relational::{Dialect, FilterClass};

/// The condition for `expr` in `dialect`, when every part of it can be sent; `class` says how
/// a column may be compared (None: not a column of the source).
pub fn to_sql(expr: &Expr, dialect: Dialect, class: &dyn Fn(&str) -> Option<FilterClass>) -> Option<String> {
    let column = |e: &Expr| match e {
        Expr::Column(c) => class(&c.name).map(|k| (dialect.ident(&c.name), k)),
        _ => None,
    };
    match expr {
        Expr::BinaryExpr(BinaryExpr { left, op: op @ (Operator::And | Operator::Or), right }) => {
            let (l, r) = (to_sql(left, dialect, class)?, to_sql(right, dialect, class)?);
            Some(format!("({l} {op} {r})"))
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (name, kind, value, op) = match (column(left), column(right)) {
                (Some((name, kind)), None) => (name, kind, literal(right, kind, dialect)?, *op),
                (None, Some((name, kind))) => (name, kind, literal(left, kind, dialect)?, op.swap()?),
                _ => return None,
            };
            let sql_op = match op {
                Operator::Eq => "=",
                Operator::NotEq if kind != FilterClass::TextEquality => "<>",
                Operator::Lt if kind != FilterClass::TextEquality => "<",
                Operator::LtEq if kind != FilterClass::TextEquality => "<=",
                Operator::Gt if kind != FilterClass::TextEquality => ">",
                Operator::GtEq if kind != FilterClass::TextEquality => ">=",
                _ => return None,
            };
            Some(format!("{name} {sql_op} {value}"))
        }
        Expr::IsNull(e) => column(e).map(|(name, _)| format!("{name} IS NULL")),
        Expr::IsNotNull(e) => column(e).map(|(name, _)| format!("{name} IS NOT NULL")),
        Expr::InList(list) => {
            let (name, kind) = column(&list.expr)?;
            if list.negated && kind == FilterClass::TextEquality || list.list.is_empty() {
                return None;
            }
            let values = list.list.iter().map(|v| literal(v, kind, dialect)).collect::<Option<Vec<_>>>()?;
            let not = if list.negated { "NOT " } else { "" };
            Some(format!("{name} {not}IN ({})", values.join(", ")))
        }
        Expr::Between(between) if !between.negated => {
            let (name, kind) = column(&between.expr)?;
            if kind == FilterClass::TextEquality {
                return None;
            }
            let (low, high) = (literal(&between.low, kind, dialect)?, literal(&between.high, kind, dialect)?);
            Some(format!("{name} BETWEEN {low} AND {high}"))
        }
        _ => None,
    }
}

/// A literal of a type that compares with a column of `kind` the same way in the source.
fn literal(expr: &Expr, kind: FilterClass, dialect: Dialect) -> Option<String> {
    let Expr::Literal(value, _) = expr else { return None };
    let micros = |v: i64, per_second: i64| -> Option<String> {
        let micros = v.checked_mul(1_000_000 / per_second)?;
        let at = chrono::DateTime::from_timestamp_micros(micros)?;
        Some(at.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
    };
    let utc = |tz: &Option<std::sync::Arc<str>>| match tz.as_deref() {
        None => Some(false),
        Some("UTC" | "+00:00" | "Z") => Some(true),
        Some(_) => None,
    };
    match (kind, value) {
        (FilterClass::Number, v) if v.is_null() => None,
        (
            FilterClass::Number,
            ScalarValue::Int8(Some(_))
            | ScalarValue::Int16(Some(_))
            | ScalarValue::Int32(Some(_))
            | ScalarValue::Int64(Some(_))
            | ScalarValue::UInt8(Some(_))
            | ScalarValue::UInt16(Some(_))
            | ScalarValue::UInt32(Some(_))
            | ScalarValue::UInt64(Some(_))
            | ScalarValue::Decimal128(Some(_), _, _),
        ) => Some(value.to_string()),
        (FilterClass::Number, ScalarValue::Float64(Some(f))) if f.is_finite() => Some(format!("{f:?}")),
        (FilterClass::Number, ScalarValue::Float32(Some(f))) if f.is_finite() => Some(format!("{f:?}")),
        (FilterClass::TextEquality, ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s))) => {
            Some(dialect.text(s))
        }
        (FilterClass::Bool, ScalarValue::Boolean(Some(b))) => Some(if *b { "TRUE" } else { "FALSE" }.to_string()),
        (FilterClass::Date, ScalarValue::Date32(Some(days))) => {
            let date = chrono::NaiveDate::from_epoch_days(*days)?;
            Some(format!("DATE '{}'", date.format("%Y-%m-%d")))
        }
        (FilterClass::Timestamp(column_utc), value) => {
            let (text, tz) = match value {
                ScalarValue::TimestampSecond(Some(v), tz) => (micros(*v, 1)?, tz),
                ScalarValue::TimestampMillisecond(Some(v), tz) => (micros(*v, 1_000)?, tz),
                ScalarValue::TimestampMicrosecond(Some(v), tz) => (micros(*v, 1_000_000)?, tz),
                ScalarValue::TimestampNanosecond(Some(v), tz) if v % 1_000 == 0 => (micros(v / 1_000, 1_000_000)?, tz),
                _ => return None,
            };
            (utc(tz)? == column_utc).then(|| dialect.timestamp(&text, column_utc))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn class(name: &str) -> Option<FilterClass> {
        match name {
            "id" => Some(FilterClass::Number),
            "name" => Some(FilterClass::TextEquality),
            "day" => Some(FilterClass::Date),
            "at" => Some(FilterClass::Timestamp(true)),
            "doc" => Some(FilterClass::NullOnly),
            _ => None,
        }
    }

    fn pg(e: Expr) -> Option<String> {
        to_sql(&e, Dialect::Postgres, &class)
    }

    #[test]
    fn comparisons_the_source_answers_alike_are_sent() {
        assert_eq!(pg(col("id").lt(lit(10i64))).as_deref(), Some("\"id\" < 10"));
        assert_eq!(pg(lit(10i64).lt(col("id"))).as_deref(), Some("\"id\" > 10"));
        assert_eq!(
            pg(col("id").gt_eq(lit(5i32)).and(col("name").eq(lit("O'Brien")))).as_deref(),
            Some("(\"id\" >= 5 AND \"name\" = 'O''Brien')")
        );
        assert_eq!(pg(col("id").in_list(vec![lit(1i64), lit(2i64)], true)).as_deref(), Some("\"id\" NOT IN (1, 2)"));
        assert_eq!(pg(col("doc").is_null()).as_deref(), Some("\"doc\" IS NULL"));
        let day = ScalarValue::Date32(Some(20_000));
        assert_eq!(pg(col("day").gt(lit(day))).as_deref(), Some("\"day\" > DATE '2024-10-04'"));
        let at = ScalarValue::TimestampMicrosecond(Some(1_500_000), Some("UTC".into()));
        assert_eq!(pg(col("at").lt(lit(at))).as_deref(), Some("\"at\" < TIMESTAMPTZ '1970-01-01 00:00:01.500000+00'"));
        let mysql = to_sql(&col("name").eq(lit("a\\b")), Dialect::Mysql, &class);
        assert_eq!(mysql.as_deref(), Some("`name` = 'a\\\\b'"));
    }

    #[test]
    fn comparisons_that_could_lose_rows_stay_in_the_engine() {
        // Collations order text differently than bytes; a case-insensitive one would also drop
        // rows from `<>`.
        assert_eq!(pg(col("name").lt(lit("m"))), None);
        assert_eq!(pg(col("name").not_eq(lit("m"))), None);
        assert_eq!(pg(col("doc").eq(lit("{}"))), None);
        assert_eq!(pg(col("id").eq(lit(f64::NAN))), None);
        assert_eq!(pg(col("other").eq(lit(1i64))), None);
        assert_eq!(pg(col("id").lt(lit(1i64)).or(col("name").lt(lit("x")))), None);
        let naive = ScalarValue::TimestampMicrosecond(Some(0), None);
        assert_eq!(pg(col("at").lt(lit(naive))), None);
        assert_eq!(pg(Expr::Not(Box::new(col("id").eq(lit(1i64))))), None);
    }
}
