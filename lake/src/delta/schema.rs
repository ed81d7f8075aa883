//! Schemas of assets: which Arrow types Delta stores as they are, and how a new write's schema
//! may differ from the asset's (adding a nullable column is allowed; changing a type is not).

use arrow::datatypes::{DataType, Schema, TimeUnit};
use deltalake_core::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake_core::kernel::{StructField, StructType};

use crate::error::{Error, Result};

/// For each top-level column of `schema`, the type it must be cast to before it is written to
/// an asset (None: it is stored as it is). Delta has no unsigned integers, stores timestamps in
/// microseconds (UTC or without time zone) and has no time-of-day or duration types.
pub fn delta_compatible(schema: &Schema) -> Result<Vec<Option<DataType>>> {
    schema
        .fields()
        .iter()
        .map(|field| {
            let unsupported = |what: &str| {
                Error::Schema(format!(
                    "column '{}' has type {} which Delta tables cannot store ({what}); CAST it in the query, \
                     for example to BIGINT or VARCHAR",
                    field.name(),
                    field.data_type()
                ))
            };
            Ok(match field.data_type() {
                DataType::UInt8 => Some(DataType::Int16),
                DataType::UInt16 => Some(DataType::Int32),
                DataType::UInt32 | DataType::UInt64 => Some(DataType::Int64),
                DataType::Float16 => Some(DataType::Float32),
                DataType::Date64 => Some(DataType::Date32),
                DataType::Dictionary(_, value) => Some(value.as_ref().clone()),
                DataType::Timestamp(unit, tz) => {
                    let utc = tz.as_ref().map(|_| "UTC".into());
                    (*unit != TimeUnit::Microsecond || tz.as_deref().is_some_and(|t| !t.eq_ignore_ascii_case("utc")))
                        .then_some(DataType::Timestamp(TimeUnit::Microsecond, utc))
                }
                DataType::Time32(_) | DataType::Time64(_) => return Err(unsupported("time of day")),
                DataType::Duration(_) | DataType::Interval(_) => return Err(unsupported("duration")),
                _ => None,
            })
        })
        .collect()
}

/// The Delta schema of data with Arrow `schema` (already made [`delta_compatible`]); every
/// column is nullable, so later writes may leave columns out.
pub fn to_delta(schema: &Schema) -> Result<StructType> {
    let fields = schema
        .fields()
        .iter()
        .map(|f| {
            let field = StructField::try_from_arrow(f.as_ref()).map_err(|e| {
                Error::Schema(format!(
                    "column '{}' ({}) cannot be stored in a Delta table: {e}",
                    f.name(),
                    f.data_type()
                ))
            })?;
            Ok(StructField::new(field.name().clone(), field.data_type().clone(), true))
        })
        .collect::<Result<Vec<_>>>()?;
    StructType::try_new(fields).map_err(|e| Error::Schema(format!("invalid schema: {e}")))
}

/// Checks that data with schema `new` may be written to an asset with schema `old`, and returns
/// the asset's schema after the write when it grows (new columns are added at the end).
/// A column whose type differs is an error naming the column and both types.
pub fn evolve(asset: &str, old: &StructType, new: &StructType) -> Result<Option<StructType>> {
    let mut added = Vec::new();
    for field in new.fields() {
        match old.field(field.name()) {
            Some(existing) if existing.data_type() != field.data_type() => {
                return Err(Error::Schema(format!(
                    "asset '{asset}': column '{}' is {} in the asset but {} in the new data; CAST it in the query \
                     to {}, or write to a new asset",
                    field.name(),
                    existing.data_type(),
                    field.data_type(),
                    existing.data_type()
                )));
            }
            Some(_) => {}
            None => added.push(StructField::new(field.name().clone(), field.data_type().clone(), true)),
        }
    }
    if added.is_empty() {
        return Ok(None);
    }
    let fields = old.fields().cloned().chain(added);
    StructType::try_new(fields).map(Some).map_err(|e| Error::Schema(format!("asset '{asset}': {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    fn schema(fields: &[(&str, DataType)]) -> Schema {
        Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), false)).collect::<Vec<_>>())
    }

    #[test]
    fn casts_what_delta_cannot_store_and_refuses_time_of_day() {
        let s = schema(&[
            ("id", DataType::UInt32),
            ("ts", DataType::Timestamp(TimeUnit::Nanosecond, None)),
            ("name", DataType::Utf8View),
        ]);
        let casts = delta_compatible(&s).unwrap();
        assert_eq!(casts, vec![Some(DataType::Int64), Some(DataType::Timestamp(TimeUnit::Microsecond, None)), None]);
        let e = delta_compatible(&schema(&[("t", DataType::Time64(TimeUnit::Microsecond))])).unwrap_err();
        assert!(e.to_string().contains("column 't'"), "{e}");
    }

    #[test]
    fn adding_a_column_is_allowed_changing_a_type_names_both() {
        let old = to_delta(&schema(&[("id", DataType::Int64), ("x", DataType::Float64)])).unwrap();
        let wider = to_delta(&schema(&[("id", DataType::Int64), ("y", DataType::Utf8)])).unwrap();
        let merged = evolve("a", &old, &wider).unwrap().unwrap();
        assert_eq!(merged.fields().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["id", "x", "y"]);
        assert!(evolve("a", &old, &old).unwrap().is_none());
        let changed = to_delta(&schema(&[("x", DataType::Utf8)])).unwrap();
        let e = evolve("a", &old, &changed).unwrap_err().to_string();
        assert!(e.contains("column 'x' is double in the asset but string in the new data"), "{e}");
    }
}
