//! PostgreSQL types as Arrow types, and rows as Arrow arrays.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int16Builder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, TimeUnit};
use serde::{Deserialize, Serialize};
use tokio_postgres::Row;
use tokio_postgres::types::Type;

use crate::relational::parse_decimal;

/// How one column is read and typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PgKind {
    /// boolean
    Bool,
    /// smallint
    Int2,
    /// integer
    Int4,
    /// bigint
    Int8,
    /// real
    Float4,
    /// double precision
    Float8,
    /// numeric(p, s), read as text and parsed exactly; unconstrained numeric is (38, 10)
    Numeric {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// text, varchar, char, name
    Text,
    /// date
    Date,
    /// timestamp without time zone
    Timestamp,
    /// timestamp with time zone (UTC in Arrow)
    Timestamptz,
    /// uuid, as its text form
    Uuid,
    /// json and jsonb, as text
    Json,
    /// bytea
    Bytea,
    /// a one-dimensional array of a scalar kind
    Array(Box<PgKind>),
    /// a type Sluice does not map (its name): in the schema so that plans see the column, and
    /// an error naming every such column when a read needs one
    Unmapped(String),
}

impl PgKind {
    /// The kind of a column of type `ty` (`typmod` from the catalog, -1 when unknown), or None
    /// when Sluice does not map it.
    pub fn of(ty: &Type, typmod: i32) -> Option<Self> {
        Some(match *ty {
            Type::BOOL => Self::Bool,
            Type::INT2 => Self::Int2,
            Type::INT4 => Self::Int4,
            Type::INT8 => Self::Int8,
            Type::FLOAT4 => Self::Float4,
            Type::FLOAT8 => Self::Float8,
            Type::NUMERIC if typmod >= 4 => {
                let precision = (((typmod - 4) >> 16) & 0xffff) as u8;
                let scale = ((typmod - 4) & 0xffff) as i8;
                Self::Numeric { precision: precision.clamp(1, 38), scale }
            }
            Type::NUMERIC => Self::Numeric { precision: 38, scale: 10 },
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => Self::Text,
            Type::DATE => Self::Date,
            Type::TIMESTAMP => Self::Timestamp,
            Type::TIMESTAMPTZ => Self::Timestamptz,
            Type::UUID => Self::Uuid,
            Type::JSON | Type::JSONB => Self::Json,
            Type::BYTEA => Self::Bytea,
            Type::BOOL_ARRAY => Self::Array(Box::new(Self::Bool)),
            Type::INT2_ARRAY => Self::Array(Box::new(Self::Int2)),
            Type::INT4_ARRAY => Self::Array(Box::new(Self::Int4)),
            Type::INT8_ARRAY => Self::Array(Box::new(Self::Int8)),
            Type::FLOAT4_ARRAY => Self::Array(Box::new(Self::Float4)),
            Type::FLOAT8_ARRAY => Self::Array(Box::new(Self::Float8)),
            Type::TEXT_ARRAY | Type::VARCHAR_ARRAY => Self::Array(Box::new(Self::Text)),
            _ => return None,
        })
    }

    /// The type's name when Sluice does not map it.
    pub fn unmapped(&self) -> Option<&str> {
        match self {
            Self::Unmapped(ty) => Some(ty),
            _ => None,
        }
    }

    /// The Arrow type of the column.
    pub fn arrow(&self) -> DataType {
        match self {
            Self::Bool => DataType::Boolean,
            Self::Int2 => DataType::Int16,
            Self::Int4 => DataType::Int32,
            Self::Int8 => DataType::Int64,
            Self::Float4 => DataType::Float32,
            Self::Float8 => DataType::Float64,
            Self::Numeric { precision, scale } => DataType::Decimal128(*precision, *scale),
            Self::Text | Self::Uuid | Self::Json | Self::Unmapped(_) => DataType::Utf8,
            Self::Date => DataType::Date32,
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Bytea => DataType::Binary,
            Self::Array(item) => DataType::List(Arc::new(Field::new("item", item.arrow(), true))),
        }
    }

    /// The select-list expression reading column `quoted` (numeric as text: exact, any size).
    pub fn select(&self, quoted: &str) -> String {
        match self {
            Self::Numeric { .. } => format!("{quoted}::text AS {quoted}"),
            _ => quoted.to_string(),
        }
    }
}

/// Appends rows column by column into Arrow arrays.
pub(crate) enum Builder {
    Bool(BooleanBuilder),
    Int2(Int16Builder),
    Int4(Int32Builder),
    Int8(Int64Builder),
    Float4(Float32Builder),
    Float8(Float64Builder),
    Numeric(Decimal128Builder, u8, i8),
    Text(StringBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder, bool),
    Uuid(StringBuilder),
    Json(StringBuilder),
    Bytea(BinaryBuilder),
    ListBool(ListBuilder<BooleanBuilder>),
    ListInt2(ListBuilder<Int16Builder>),
    ListInt4(ListBuilder<Int32Builder>),
    ListInt8(ListBuilder<Int64Builder>),
    ListFloat4(ListBuilder<Float32Builder>),
    ListFloat8(ListBuilder<Float64Builder>),
    ListText(ListBuilder<StringBuilder>),
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

impl Builder {
    pub(crate) fn new(kind: &PgKind) -> Result<Self, String> {
        Ok(match kind {
            PgKind::Unmapped(ty) => return Err(format!("type {ty} is not mapped")),
            PgKind::Bool => Self::Bool(BooleanBuilder::new()),
            PgKind::Int2 => Self::Int2(Int16Builder::new()),
            PgKind::Int4 => Self::Int4(Int32Builder::new()),
            PgKind::Int8 => Self::Int8(Int64Builder::new()),
            PgKind::Float4 => Self::Float4(Float32Builder::new()),
            PgKind::Float8 => Self::Float8(Float64Builder::new()),
            PgKind::Numeric { precision, scale } => Self::Numeric(
                Decimal128Builder::new()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| format!("numeric({precision}, {scale}): {e}"))?,
                *precision,
                *scale,
            ),
            PgKind::Text => Self::Text(StringBuilder::new()),
            PgKind::Date => Self::Date(Date32Builder::new()),
            PgKind::Timestamp => Self::Timestamp(TimestampMicrosecondBuilder::new(), false),
            PgKind::Timestamptz => Self::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC"), true),
            PgKind::Uuid => Self::Uuid(StringBuilder::new()),
            PgKind::Json => Self::Json(StringBuilder::new()),
            PgKind::Bytea => Self::Bytea(BinaryBuilder::new()),
            PgKind::Array(item) => match item.as_ref() {
                PgKind::Bool => Self::ListBool(ListBuilder::new(BooleanBuilder::new())),
                PgKind::Int2 => Self::ListInt2(ListBuilder::new(Int16Builder::new())),
                PgKind::Int4 => Self::ListInt4(ListBuilder::new(Int32Builder::new())),
                PgKind::Int8 => Self::ListInt8(ListBuilder::new(Int64Builder::new())),
                PgKind::Float4 => Self::ListFloat4(ListBuilder::new(Float32Builder::new())),
                PgKind::Float8 => Self::ListFloat8(ListBuilder::new(Float64Builder::new())),
                PgKind::Text => Self::ListText(ListBuilder::new(StringBuilder::new())),
                other => return Err(format!("arrays of {other:?} are not mapped")),
            },
        })
    }

    /// Appends column `i` of `row`; errors say what the value was and why it does not fit.
    pub(crate) fn push(&mut self, row: &Row, i: usize) -> Result<(), String> {
        let e = |err: tokio_postgres::Error| err.to_string();
        match self {
            Self::Bool(b) => b.append_option(row.try_get::<_, Option<bool>>(i).map_err(e)?),
            Self::Int2(b) => b.append_option(row.try_get::<_, Option<i16>>(i).map_err(e)?),
            Self::Int4(b) => b.append_option(row.try_get::<_, Option<i32>>(i).map_err(e)?),
            Self::Int8(b) => b.append_option(row.try_get::<_, Option<i64>>(i).map_err(e)?),
            Self::Float4(b) => b.append_option(row.try_get::<_, Option<f32>>(i).map_err(e)?),
            Self::Float8(b) => b.append_option(row.try_get::<_, Option<f64>>(i).map_err(e)?),
            Self::Numeric(b, precision, scale) => match row.try_get::<_, Option<&str>>(i).map_err(e)? {
                None => b.append_null(),
                Some(text) => b.append_value(parse_decimal(text, *precision, *scale)?),
            },
            Self::Text(b) => b.append_option(row.try_get::<_, Option<&str>>(i).map_err(e)?),
            Self::Date(b) => b.append_option(
                row.try_get::<_, Option<chrono::NaiveDate>>(i)
                    .map_err(e)?
                    .map(|d| chrono::Datelike::num_days_from_ce(&d) - EPOCH_DAYS_FROM_CE),
            ),
            Self::Timestamp(b, false) => b.append_option(
                row.try_get::<_, Option<chrono::NaiveDateTime>>(i).map_err(e)?.map(|t| t.and_utc().timestamp_micros()),
            ),
            Self::Timestamp(b, true) => b.append_option(
                row.try_get::<_, Option<chrono::DateTime<chrono::Utc>>>(i).map_err(e)?.map(|t| t.timestamp_micros()),
            ),
            Self::Uuid(b) => {
                b.append_option(row.try_get::<_, Option<uuid::Uuid>>(i).map_err(e)?.map(|u| u.to_string()))
            }
            Self::Json(b) => {
                b.append_option(row.try_get::<_, Option<serde_json::Value>>(i).map_err(e)?.map(|v| v.to_string()))
            }
            Self::Bytea(b) => b.append_option(row.try_get::<_, Option<&[u8]>>(i).map_err(e)?),
            Self::ListBool(b) => b.append_option(row.try_get::<_, Option<Vec<Option<bool>>>>(i).map_err(e)?),
            Self::ListInt2(b) => b.append_option(row.try_get::<_, Option<Vec<Option<i16>>>>(i).map_err(e)?),
            Self::ListInt4(b) => b.append_option(row.try_get::<_, Option<Vec<Option<i32>>>>(i).map_err(e)?),
            Self::ListInt8(b) => b.append_option(row.try_get::<_, Option<Vec<Option<i64>>>>(i).map_err(e)?),
            Self::ListFloat4(b) => b.append_option(row.try_get::<_, Option<Vec<Option<f32>>>>(i).map_err(e)?),
            Self::ListFloat8(b) => b.append_option(row.try_get::<_, Option<Vec<Option<f64>>>>(i).map_err(e)?),
            Self::ListText(b) => b.append_option(row.try_get::<_, Option<Vec<Option<String>>>>(i).map_err(e)?),
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int2(b) => Arc::new(b.finish()),
            Self::Int4(b) => Arc::new(b.finish()),
            Self::Int8(b) => Arc::new(b.finish()),
            Self::Float4(b) => Arc::new(b.finish()),
            Self::Float8(b) => Arc::new(b.finish()),
            Self::Numeric(b, ..) => Arc::new(b.finish()),
            Self::Text(b) | Self::Uuid(b) | Self::Json(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b, _) => Arc::new(b.finish()),
            Self::Bytea(b) => Arc::new(b.finish()),
            Self::ListBool(b) => Arc::new(b.finish()),
            Self::ListInt2(b) => Arc::new(b.finish()),
            Self::ListInt4(b) => Arc::new(b.finish()),
            Self::ListInt8(b) => Arc::new(b.finish()),
            Self::ListFloat4(b) => Arc::new(b.finish()),
            Self::ListFloat8(b) => Arc::new(b.finish()),
            Self::ListText(b) => Arc::new(b.finish()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmods_give_precision_and_scale() {
        assert_eq!(PgKind::of(&Type::NUMERIC, (12 << 16) + 3 + 4), Some(PgKind::Numeric { precision: 12, scale: 3 }));
    }
}
