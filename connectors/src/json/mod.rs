//! JSON records (NDJSON lines, API pages, device messages) into Arrow batches, leniently: a
//! record that cannot be parsed or typed becomes a [`Reject`] with its location, raw text and
//! reason, and the other records of its batch still land.

mod schema;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow::json::reader::{Decoder, ReaderBuilder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use schema::{parse_columns, resolve};

use crate::error::{Error, Result};

/// How a JSON source's records become columns (the same keys for files, APIs and MQTT).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonOptions {
    /// Column types, `"device_id string, ts timestamp, reading double"`; these win over inferred
    /// types.
    #[serde(default)]
    pub schema: Option<String>,
    /// Infer columns from a sample of records (default true; false reads exactly the `schema`
    /// columns).
    #[serde(default)]
    pub infer: Option<bool>,
    /// Records sampled to infer columns (default 1000).
    #[serde(default = "default_sample")]
    pub sample: usize,
    /// Nested objects become top-level columns named `parent<sep>child` (e.g. `"_"`); by default
    /// they are kept as struct columns.
    #[serde(default)]
    pub flatten: Option<String>,
    /// Parse numbers written as strings (`"seq": "15"`) into number columns; by default such a
    /// record is quarantined.
    #[serde(default)]
    pub coerce: bool,
}

fn default_sample() -> usize {
    1000
}

impl JsonOptions {
    /// The records' schema, from the declared columns and, unless turned off, a sample.
    pub fn schema_from(&self, sample: &[String]) -> Result<SchemaRef> {
        let declared = match &self.schema {
            Some(spec) => parse_columns(spec)?,
            None => Vec::new(),
        };
        let infer = self.infer.unwrap_or(true);
        resolve(&declared, infer, sample, self.flatten.as_deref())
    }
}

/// A record that did not land, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reject {
    /// Where it was: `file.json line 12`, `page 3 record 7`, `topic/partition/offset`.
    pub location: String,
    /// The record as it was read.
    pub raw: String,
    /// Why it did not land.
    pub reason: String,
}

/// Records decoded: the batch of those that landed, and those that did not.
#[derive(Debug)]
pub struct Decoded {
    /// The records that decoded (None when none did).
    pub batch: Option<RecordBatch>,
    /// The records that did not.
    pub rejects: Vec<Reject>,
}

/// Decodes JSON records into batches of one schema.
#[derive(Debug, Clone)]
pub struct RecordDecoder {
    schema: SchemaRef,
    flatten: Option<String>,
    /// Top-level number columns whose values must be JSON numbers (empty when coercing).
    numbers: Vec<String>,
}

impl RecordDecoder {
    /// A decoder into `schema`; nested objects are flattened with `flatten` as separator when set.
    /// A record whose number column holds a string is rejected (see [`Self::coercing`]).
    pub fn new(schema: SchemaRef, flatten: Option<String>) -> Self {
        let numbers = schema.fields().iter().filter(|f| f.data_type().is_numeric()).map(|f| f.name().clone()).collect();
        Self { schema, flatten, numbers }
    }

    /// With `coerce`, numbers written as strings are parsed instead of rejected.
    pub fn coercing(mut self, coerce: bool) -> Self {
        if coerce {
            self.numbers.clear();
        }
        self
    }

    /// The schema of the batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn decoder(&self, rows: usize) -> Result<Decoder> {
        ReaderBuilder::new(self.schema.clone())
            .with_batch_size(rows.max(1))
            .with_coerce_primitive(true)
            .build_decoder()
            .map_err(|e| Error::Schema(format!("cannot decode JSON into the columns given: {e}")))
    }

    /// Decodes `records` (one JSON object each); `locate(i)` says where record `i` was, for
    /// the records that are rejected.
    pub fn decode(&self, records: &[&str], locate: &dyn Fn(usize) -> String) -> Result<Decoded> {
        if records.is_empty() {
            return Ok(Decoded { batch: None, rejects: Vec::new() });
        }
        if !self.numbers.is_empty() {
            // Arrow's decoder parses "15" into a number column: strict reads reject such records.
            let mut rejects = Vec::new();
            let mut kept = Vec::with_capacity(records.len());
            let mut at = Vec::with_capacity(records.len());
            for (i, record) in records.iter().enumerate() {
                match string_number(record, &self.numbers) {
                    Some((key, value)) => rejects.push((i, reject(
                        locate(i),
                        record,
                        format!(
                            "'{key}' is the string \"{value}\" where a number is expected; send it as a JSON number, \
                             or set coerce = true on the source to parse numbers written as strings"
                        ),
                    ))),
                    None => {
                        kept.push(*record);
                        at.push(i);
                    }
                }
            }
            if !rejects.is_empty() {
                // The decoder's rejects, by the index of their record, merged with these in order.
                let placed = std::cell::RefCell::new(Vec::new());
                let mut decoded = self.decode_objects(&kept, &|j| {
                    placed.borrow_mut().push(at[j]);
                    locate(at[j])
                })?;
                let mut all: Vec<(usize, Reject)> = placed.into_inner().into_iter().zip(decoded.rejects).collect();
                all.extend(rejects);
                all.sort_by_key(|(i, _)| *i);
                decoded.rejects = all.into_iter().map(|(_, r)| r).collect();
                return Ok(decoded);
            }
        }
        self.decode_objects(records, locate)
    }

    fn decode_objects(&self, records: &[&str], locate: &dyn Fn(usize) -> String) -> Result<Decoded> {
        if records.is_empty() {
            return Ok(Decoded { batch: None, rejects: Vec::new() });
        }
        match &self.flatten {
            None => self.decode_text(records, locate),
            Some(sep) => self.decode_flattened(records, sep, locate),
        }
    }

    fn decode_text(&self, records: &[&str], locate: &dyn Fn(usize) -> String) -> Result<Decoded> {
        // All at once first: the common case, at the decoder's full speed.
        let mut decoder = self.decoder(records.len())?;
        let whole = (|| {
            for record in records {
                decoder.decode(record.as_bytes())?;
                decoder.decode(b"\n")?;
            }
            if decoder.has_partial_record() || decoder.len() != records.len() {
                return Ok(None);
            }
            decoder.flush()
        })();
        if let Ok(Some(batch)) = whole {
            return Ok(Decoded { batch: Some(batch), rejects: Vec::new() });
        }
        // Some record is bad: one at a time, to keep the good ones and say which are not.
        let mut batches = Vec::new();
        let mut rejects = Vec::new();
        for (i, record) in records.iter().enumerate() {
            let mut one = self.decoder(1)?;
            let result = one.decode(record.as_bytes()).and_then(|_| {
                if one.has_partial_record() {
                    return Err(arrow::error::ArrowError::JsonError("the record is cut off (unbalanced braces or quotes)".into()));
                }
                if one.len() != 1 {
                    return Err(arrow::error::ArrowError::JsonError(format!(
                        "expected one JSON object, found {}",
                        one.len()
                    )));
                }
                one.flush()
            });
            match result {
                Ok(Some(batch)) => batches.push(batch),
                Ok(None) => rejects.push(reject(locate(i), record, "no JSON object".into())),
                Err(e) => rejects.push(reject(locate(i), record, clean(e))),
            }
        }
        Ok(Decoded { batch: concat(&self.schema, &batches)?, rejects })
    }

    fn decode_flattened(&self, records: &[&str], sep: &str, locate: &dyn Fn(usize) -> String) -> Result<Decoded> {
        let mut rejects = Vec::new();
        let mut values = Vec::with_capacity(records.len());
        let mut kept = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match serde_json::from_str::<Value>(record) {
                Ok(v @ Value::Object(_)) => {
                    values.push(flatten(v, sep));
                    kept.push(i);
                }
                Ok(_) => rejects.push(reject(locate(i), record, "not a JSON object".into())),
                Err(e) => rejects.push(reject(locate(i), record, format!("not valid JSON: {e}"))),
            }
        }
        let mut decoder = self.decoder(values.len())?;
        if let Ok(Some(batch)) = decoder.serialize(&values).and_then(|_| decoder.flush()) {
            return Ok(Decoded { batch: Some(batch), rejects });
        }
        let mut batches = Vec::new();
        for (value, i) in values.iter().zip(kept) {
            let mut one = self.decoder(1)?;
            match one.serialize(std::slice::from_ref(value)).and_then(|_| one.flush()) {
                Ok(Some(batch)) => batches.push(batch),
                Ok(None) => rejects.push(reject(locate(i), records[i], "no JSON object".into())),
                Err(e) => rejects.push(reject(locate(i), records[i], clean(e))),
            }
        }
        Ok(Decoded { batch: concat(&self.schema, &batches)?, rejects })
    }
}

/// The first top-level key of `record` among `numbers` whose value is a JSON string, with that
/// string (escapes as written); one pass over the bytes, without building values.
fn string_number(record: &str, numbers: &[String]) -> Option<(String, String)> {
    let bytes = record.as_bytes();
    // The end (exclusive, after the closing quote) of the string opening at `start`.
    let string_end = |start: usize| {
        let mut i = start + 1;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => i += 2,
                b'"' => return Some(i + 1),
                _ => i += 1,
            }
        }
        None
    };
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut depth = 0usize;
    let mut expect_key = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let end = string_end(i)?;
                if depth == 1 && expect_key {
                    expect_key = false;
                    let key = &record[i + 1..end - 1];
                    let colon = skip_space(end);
                    if bytes.get(colon) == Some(&b':') {
                        let value = skip_space(colon + 1);
                        if bytes.get(value) == Some(&b'"') && numbers.iter().any(|n| n == key) {
                            let value_end = string_end(value)?;
                            return Some((key.to_string(), record[value + 1..value_end - 1].to_string()));
                        }
                    }
                }
                i = end;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1 && bytes[i] == b'{';
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    None
}

fn reject(location: String, raw: &str, reason: String) -> Reject {
    Reject { location, raw: raw.to_string(), reason }
}

fn clean(e: arrow::error::ArrowError) -> String {
    let text = e.to_string();
    text.strip_prefix("Json error: ").unwrap_or(&text).to_string()
}

fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Option<RecordBatch>> {
    if batches.is_empty() {
        return Ok(None);
    }
    arrow::compute::concat_batches(schema, batches)
        .map(Some)
        .map_err(|e| Error::Schema(format!("joining decoded records: {e}")))
}

/// `{"a": {"b": 1}}` as `{"a_b": 1}` (with `sep` = `_`); arrays are kept as they are.
pub fn flatten(value: Value, sep: &str) -> Value {
    fn into(prefix: &str, value: Value, sep: &str, out: &mut Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, v) in map {
                    let name = if prefix.is_empty() { key } else { format!("{prefix}{sep}{key}") };
                    into(&name, v, sep, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other);
            }
        }
    }
    match value {
        Value::Object(_) => {
            let mut out = Map::new();
            into("", value, sep, &mut out);
            Value::Object(out)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::Float64Type;

    fn decoder(flatten: Option<&str>) -> RecordDecoder {
        let options = JsonOptions {
            schema: Some("device string, reading double, pos_x double".into()),
            infer: Some(false),
            flatten: flatten.map(str::to_string),
            ..Default::default()
        };
        RecordDecoder::new(options.schema_from(&[]).unwrap(), options.flatten)
    }

    #[test]
    fn numbers_written_as_strings_are_rejected_unless_coerced() {
        let records = [
            r#"{"device": "a", "reading": 1.5}"#,
            r#"{"device": "15", "reading": "15"}"#,
            r#"{"nested": {"reading": "x"}, "device": "c", "reading": 2}"#,
            r#"{"device": "d\"", "reading" : "-3.5e2"}"#,
        ];
        let decoded = decoder(None).decode(&records, &|i| format!("line {}", i + 1)).unwrap();
        assert_eq!(decoded.batch.unwrap().num_rows(), 2, "a string in a nested object or a text column is no number column");
        let where_: Vec<_> = decoded.rejects.iter().map(|r| r.location.as_str()).collect();
        assert_eq!(where_, ["line 2", "line 4"]);
        assert!(decoded.rejects[0].reason.contains("'reading' is the string \"15\"") && decoded.rejects[0].reason.contains("coerce = true"));
        assert!(decoded.rejects[1].reason.contains("\"-3.5e2\""), "{:?}", decoded.rejects[1]);
        let coerced = decoder(None).coercing(true).decode(&records[..2], &|i| format!("line {}", i + 1)).unwrap();
        let batch = coerced.batch.unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(1).as_primitive::<Float64Type>().value(1), 15.0);
    }

    #[test]
    fn bad_records_are_rejected_with_location_and_reason_and_the_rest_land() {
        let records = [
            r#"{"device": "a", "reading": 1.5}"#,
            r#"{"device": "b", "reading": "hot"}"#,
            r#"{"device": "c", "reading": 2"#,
            r#"{"device": "d", "reading": 3, "unknown": [1]}"#,
            r#"[1, 2]"#,
        ];
        let decoded = decoder(None).decode(&records, &|i| format!("line {}", i + 1)).unwrap();
        let batch = decoded.batch.unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column(0).as_string::<i32>().value(1), "d");
        let where_: Vec<_> = decoded.rejects.iter().map(|r| r.location.as_str()).collect();
        assert_eq!(where_, ["line 2", "line 3", "line 5"]);
        assert!(decoded.rejects[0].reason.contains("reading"), "{:?}", decoded.rejects[0]);
        assert_eq!(decoded.rejects[1].raw, records[2]);
    }

    #[test]
    fn clean_batches_decode_at_once_and_nested_objects_flatten() {
        let records = [r#"{"device": "a", "pos": {"x": 1.0}}"#, r#"{"device": "b", "reading": 7}"#];
        let decoded = decoder(Some("_")).decode(&records, &|i| i.to_string()).unwrap();
        assert!(decoded.rejects.is_empty());
        let batch = decoded.batch.unwrap();
        assert_eq!(batch.column(2).as_primitive::<Float64Type>().value(0), 1.0);
        assert!(batch.column(1).is_null(0));
        assert_eq!(batch.column(1).as_primitive::<Float64Type>().value(1), 7.0);
        let bad = decoder(Some("_")).decode(&["{oops", "3"], &|i| i.to_string()).unwrap();
        assert_eq!(bad.rejects.len(), 2);
        assert!(bad.rejects[0].reason.starts_with("not valid JSON"));
        assert_eq!(bad.rejects[1].reason, "not a JSON object");
    }
}
