//! Column types of JSON sources: written in job files as `"name type, name type"`, inferred
//! from a sample of records, or both (the written types win).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::Value;

use super::flatten;
use crate::error::{Error, Result};

/// Parses `"device_id string, ts timestamp, reading double"` into fields (all nullable).
///
/// Types: `string`, `boolean`, `smallint`, `int`, `bigint`, `float`, `double`, `decimal(p,s)`,
/// `date`, `timestamp` (UTC), `timestamp_ntz`, or any Arrow type as Arrow writes it
/// (`List(Int64)`).
pub fn parse_columns(spec: &str) -> Result<Vec<Field>> {
    let mut fields = Vec::new();
    for column in split_top_level(spec) {
        let column = column.trim();
        if column.is_empty() {
            continue;
        }
        let (name, ty) = column.split_once(char::is_whitespace).ok_or_else(|| {
            Error::Config(format!("schema: '{column}' needs a name and a type, e.g. 'reading double'"))
        })?;
        let name = name.trim_matches('"');
        let data_type = parse_type(ty.trim()).map_err(|e| Error::Config(format!("schema: column '{name}': {e}")))?;
        if fields.iter().any(|f: &Field| f.name() == name) {
            return Err(Error::Config(format!("schema: column '{name}' is given twice")));
        }
        fields.push(Field::new(name, data_type, true));
    }
    Ok(fields)
}

fn split_top_level(spec: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in spec.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&spec[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&spec[start..]);
    parts
}

fn parse_type(ty: &str) -> std::result::Result<DataType, String> {
    let lower = ty.to_ascii_lowercase();
    let utc = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    Ok(match lower.as_str() {
        "string" | "text" | "varchar" | "utf8" => DataType::Utf8,
        "bool" | "boolean" => DataType::Boolean,
        "smallint" | "int16" => DataType::Int16,
        "int" | "integer" | "int32" => DataType::Int32,
        "bigint" | "long" | "int64" => DataType::Int64,
        "float" | "real" | "float32" => DataType::Float32,
        "double" | "float64" => DataType::Float64,
        "date" => DataType::Date32,
        "timestamp" | "timestamptz" => utc(),
        "timestamp_ntz" => DataType::Timestamp(TimeUnit::Microsecond, None),
        _ if lower.starts_with("decimal(") && lower.ends_with(')') => {
            let inner = &lower[8..lower.len() - 1];
            let (p, s) = inner.split_once(',').unwrap_or((inner, "0"));
            let p: u8 = p.trim().parse().map_err(|_| format!("bad precision in '{ty}'"))?;
            let s: i8 = s.trim().parse().map_err(|_| format!("bad scale in '{ty}'"))?;
            if p == 0 || p > 38 {
                return Err(format!("'{ty}': precision must be 1 to 38"));
            }
            DataType::Decimal128(p, s)
        }
        _ => ty.parse::<DataType>().map_err(|_| {
            format!(
                "unknown type '{ty}'; use string, boolean, int, bigint, float, double, decimal(p,s), date, \
                 timestamp, timestamp_ntz or an Arrow type such as List(Int64)"
            )
        })?,
    })
}

/// The schema of records: inferred from `sample` (JSON texts) unless `infer` is false, with the
/// `declared` columns' types replacing inferred ones (and added when the sample lacks them).
pub fn resolve(declared: &[Field], infer: bool, sample: &[String], flatten_by: Option<&str>) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = Vec::new();
    if infer {
        let values: Vec<Value> = sample
            .iter()
            .filter_map(|text| serde_json::from_str::<Value>(text).ok())
            .filter(Value::is_object)
            .map(|v| match flatten_by {
                Some(sep) => flatten(v, sep),
                None => v,
            })
            .collect();
        if values.is_empty() && declared.is_empty() {
            return Err(Error::Config(
                "no JSON object in the sample to infer columns from; give the columns with \
                 schema = \"name type, ...\" or point the source at data"
                    .into(),
            ));
        }
        let inferred = arrow::json::reader::infer_json_schema_from_iterator(values.iter().map(Ok))
            .map_err(|e| Error::Config(format!("inferring columns from a sample: {e}")))?;
        fields.extend(inferred.fields().iter().map(|f| f.as_ref().clone().with_nullable(true)));
    }
    for field in declared {
        match fields.iter_mut().find(|f| f.name() == field.name()) {
            Some(existing) => *existing = field.clone(),
            None => fields.push(field.clone()),
        }
    }
    if fields.is_empty() {
        return Err(Error::Config("no columns: give schema = \"name type, ...\" or let columns be inferred".into()));
    }
    Ok(Arc::new(Schema::new(fields)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_columns_parse_and_mistakes_say_what_to_write() {
        let fields = parse_columns("device_id string, ts timestamp, amount decimal(10, 2), tags List(Utf8)").unwrap();
        let types: Vec<_> = fields.iter().map(|f| f.data_type().to_string()).collect();
        assert_eq!(types[0], "Utf8");
        assert_eq!(fields[1].data_type(), &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())));
        assert_eq!(fields[2].data_type(), &DataType::Decimal128(10, 2));
        assert!(matches!(fields[3].data_type(), DataType::List(_)));
        let e = parse_columns("a strng").unwrap_err().to_string();
        assert!(e.contains("column 'a': unknown type 'strng'"), "{e}");
        assert!(parse_columns("a").unwrap_err().to_string().contains("needs a name and a type"));
    }

    #[test]
    fn inferred_columns_take_declared_types() {
        let sample = vec![r#"{"id": 1, "ts": "2024-01-01T00:00:00Z", "pos": {"x": 1.5}}"#.to_string()];
        let declared = parse_columns("ts timestamp, extra string").unwrap();
        let schema = resolve(&declared, true, &sample, None).unwrap();
        assert_eq!(schema.field_with_name("id").unwrap().data_type(), &DataType::Int64);
        assert!(matches!(schema.field_with_name("ts").unwrap().data_type(), DataType::Timestamp(..)));
        assert!(matches!(schema.field_with_name("pos").unwrap().data_type(), DataType::Struct(_)));
        assert!(schema.field_with_name("extra").is_ok());
        let flat = resolve(&[], true, &sample, Some("_")).unwrap();
        assert_eq!(flat.field_with_name("pos_x").unwrap().data_type(), &DataType::Float64);
    }
}
