//! MySQL column types as Arrow types, and text-protocol values as Arrow arrays.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float32Builder, Float64Builder,
    Int8Builder, Int16Builder, Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};
use mysql_async::consts::{ColumnFlags, ColumnType};
use serde::{Deserialize, Serialize};

use crate::relational::parse_decimal;

/// How one column is read and typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MyKind {
    /// BIT(1), BOOL is TINYINT(1) and stays Int8
    Bool,
    /// TINYINT
    Int8,
    /// SMALLINT, TINYINT UNSIGNED, YEAR
    Int16,
    /// MEDIUMINT, INT, SMALLINT UNSIGNED
    Int32,
    /// BIGINT, INT UNSIGNED
    Int64,
    /// BIGINT UNSIGNED, exactly
    UInt64AsDecimal,
    /// FLOAT
    Float32,
    /// DOUBLE
    Float64,
    /// DECIMAL(p, s)
    Decimal {
        /// Digits in all.
        precision: u8,
        /// Digits after the point.
        scale: i8,
    },
    /// CHAR, VARCHAR, TEXT, ENUM, SET, JSON
    Text,
    /// BINARY, VARBINARY, BLOB
    Binary,
    /// DATE
    Date,
    /// DATETIME
    DateTime,
    /// TIMESTAMP (read in UTC)
    Timestamp,
    /// a type Sluice does not map (its name): in the schema so that plans see the column, and
    /// an error naming every such column when a read needs one
    Unmapped(String),
}

/// The binary character set: BLOB and BINARY columns carry it.
const BINARY_CHARSET: u16 = 63;

impl MyKind {
    /// The kind of a column, or None when Sluice does not map its type.
    pub fn of(ty: ColumnType, flags: ColumnFlags, length: u32, decimals: u8, charset: u16) -> Option<Self> {
        let unsigned = flags.contains(ColumnFlags::UNSIGNED_FLAG);
        use ColumnType::*;
        Some(match ty {
            MYSQL_TYPE_BIT if length == 1 => Self::Bool,
            MYSQL_TYPE_TINY if unsigned => Self::Int16,
            MYSQL_TYPE_TINY => Self::Int8,
            MYSQL_TYPE_SHORT if unsigned => Self::Int32,
            MYSQL_TYPE_SHORT | MYSQL_TYPE_YEAR => Self::Int16,
            MYSQL_TYPE_INT24 => Self::Int32,
            MYSQL_TYPE_LONG if unsigned => Self::Int64,
            MYSQL_TYPE_LONG => Self::Int32,
            MYSQL_TYPE_LONGLONG if unsigned => Self::UInt64AsDecimal,
            MYSQL_TYPE_LONGLONG => Self::Int64,
            MYSQL_TYPE_FLOAT => Self::Float32,
            MYSQL_TYPE_DOUBLE => Self::Float64,
            MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_DECIMAL => {
                // Display length counts the sign (signed) and the point (scale > 0).
                let digits = length.saturating_sub(u32::from(!unsigned)).saturating_sub(u32::from(decimals > 0));
                Self::Decimal { precision: digits.clamp(1, 38) as u8, scale: decimals as i8 }
            }
            MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB => {
                if charset == BINARY_CHARSET {
                    Self::Binary
                } else {
                    Self::Text
                }
            }
            MYSQL_TYPE_ENUM | MYSQL_TYPE_SET | MYSQL_TYPE_JSON => Self::Text,
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => Self::Date,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => Self::DateTime,
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => Self::Timestamp,
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
            Self::Int8 => DataType::Int8,
            Self::Int16 => DataType::Int16,
            Self::Int32 => DataType::Int32,
            Self::Int64 => DataType::Int64,
            Self::UInt64AsDecimal => DataType::Decimal128(20, 0),
            Self::Float32 => DataType::Float32,
            Self::Float64 => DataType::Float64,
            Self::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            Self::Text | Self::Unmapped(_) => DataType::Utf8,
            Self::Binary => DataType::Binary,
            Self::Date => DataType::Date32,
            Self::DateTime => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        }
    }

    /// The select-list expression reading column `quoted` (BIT as a number).
    pub fn select(&self, quoted: &str) -> String {
        match self {
            Self::Bool => format!("{quoted} + 0 AS {quoted}"),
            _ => quoted.to_string(),
        }
    }
}

/// Appends text-protocol values into Arrow arrays.
pub(crate) enum Builder {
    Bool(BooleanBuilder),
    Int8(Int8Builder),
    Int16(Int16Builder),
    Int32(Int32Builder),
    Int64(Int64Builder),
    Decimal(Decimal128Builder, u8, i8),
    Float32(Float32Builder),
    Float64(Float64Builder),
    Text(StringBuilder),
    Binary(BinaryBuilder),
    Date(Date32Builder),
    Timestamp(TimestampMicrosecondBuilder),
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163;

fn parse<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("'{text}' is not {what}"))
}

impl Builder {
    pub(crate) fn new(kind: &MyKind) -> Result<Self, String> {
        Ok(match kind {
            MyKind::Unmapped(ty) => return Err(format!("type {ty} is not mapped")),
            MyKind::Bool => Self::Bool(BooleanBuilder::new()),
            MyKind::Int8 => Self::Int8(Int8Builder::new()),
            MyKind::Int16 => Self::Int16(Int16Builder::new()),
            MyKind::Int32 => Self::Int32(Int32Builder::new()),
            MyKind::Int64 => Self::Int64(Int64Builder::new()),
            MyKind::UInt64AsDecimal => Self::Decimal(
                Decimal128Builder::new().with_precision_and_scale(20, 0).map_err(|e| e.to_string())?,
                20,
                0,
            ),
            MyKind::Decimal { precision, scale } => Self::Decimal(
                Decimal128Builder::new()
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| format!("decimal({precision}, {scale}): {e}"))?,
                *precision,
                *scale,
            ),
            MyKind::Float32 => Self::Float32(Float32Builder::new()),
            MyKind::Float64 => Self::Float64(Float64Builder::new()),
            MyKind::Text => Self::Text(StringBuilder::new()),
            MyKind::Binary => Self::Binary(BinaryBuilder::new()),
            MyKind::Date => Self::Date(Date32Builder::new()),
            MyKind::DateTime => Self::Timestamp(TimestampMicrosecondBuilder::new()),
            MyKind::Timestamp => Self::Timestamp(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
        })
    }

    /// Appends one value (None is NULL); errors say what the value was and why it does not fit.
    pub(crate) fn push(&mut self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(bytes) = value else {
            match self {
                Self::Bool(b) => b.append_null(),
                Self::Int8(b) => b.append_null(),
                Self::Int16(b) => b.append_null(),
                Self::Int32(b) => b.append_null(),
                Self::Int64(b) => b.append_null(),
                Self::Decimal(b, ..) => b.append_null(),
                Self::Float32(b) => b.append_null(),
                Self::Float64(b) => b.append_null(),
                Self::Text(b) => b.append_null(),
                Self::Binary(b) => b.append_null(),
                Self::Date(b) => b.append_null(),
                Self::Timestamp(b) => b.append_null(),
            }
            return Ok(());
        };
        if let Self::Binary(b) = self {
            b.append_value(bytes);
            return Ok(());
        }
        let text = std::str::from_utf8(bytes).map_err(|_| "the value is not UTF-8 text".to_string())?;
        match self {
            Self::Bool(b) => b.append_value(parse::<u8>(text, "a bit")? != 0),
            Self::Int8(b) => b.append_value(parse(text, "an integer")?),
            Self::Int16(b) => b.append_value(parse(text, "an integer")?),
            Self::Int32(b) => b.append_value(parse(text, "an integer")?),
            Self::Int64(b) => b.append_value(parse(text, "an integer")?),
            Self::Decimal(b, p, s) => b.append_value(parse_decimal(text, *p, *s)?),
            Self::Float32(b) => b.append_value(parse(text, "a number")?),
            Self::Float64(b) => b.append_value(parse(text, "a number")?),
            Self::Text(b) => b.append_value(text),
            Self::Binary(_) => {}
            Self::Date(b) => {
                let d = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
                    format!("'{text}' is not a valid date (zero dates cannot be read; NULLIF them in a query)")
                })?;
                b.append_value(chrono::Datelike::num_days_from_ce(&d) - EPOCH_DAYS_FROM_CE)
            }
            Self::Timestamp(b) => {
                let t = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map_err(|_| {
                    format!("'{text}' is not a valid date and time (zero dates cannot be read; NULLIF them in a query)")
                })?;
                b.append_value(t.and_utc().timestamp_micros())
            }
        }
        Ok(())
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        match self {
            Self::Bool(b) => Arc::new(b.finish()),
            Self::Int8(b) => Arc::new(b.finish()),
            Self::Int16(b) => Arc::new(b.finish()),
            Self::Int32(b) => Arc::new(b.finish()),
            Self::Int64(b) => Arc::new(b.finish()),
            Self::Decimal(b, ..) => Arc::new(b.finish()),
            Self::Float32(b) => Arc::new(b.finish()),
            Self::Float64(b) => Arc::new(b.finish()),
            Self::Text(b) => Arc::new(b.finish()),
            Self::Binary(b) => Arc::new(b.finish()),
            Self::Date(b) => Arc::new(b.finish()),
            Self::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}
