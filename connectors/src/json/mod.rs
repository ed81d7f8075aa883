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
    /// Columns every record must hold, not null (a source's de-duplication key and time, its
    /// declared `required` columns): a record without one is quarantined with the column named.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required: Vec<String>,
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

    /// A decoder of records into `schema` with these options (flattening, coercion, required
    /// columns, which must be columns of `schema`).
    pub fn decoder(&self, schema: SchemaRef) -> Result<RecordDecoder> {
        RecordDecoder::new(schema, self.flatten.clone()).coercing(self.coerce).requiring(&self.required)
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
    /// Columns that must not be missing or null, by index in the schema, with their names.
    required: Vec<(usize, String)>,
}

impl RecordDecoder {
    /// A decoder into `schema`; nested objects are flattened with `flatten` as separator when set.
    /// A record whose number column holds a string is rejected (see [`Self::coercing`]).
    pub fn new(schema: SchemaRef, flatten: Option<String>) -> Self {
        let numbers = schema.fields().iter().filter(|f| f.data_type().is_numeric()).map(|f| f.name().clone()).collect();
        Self { schema, flatten, numbers, required: Vec::new() }
    }

    /// With `coerce`, numbers written as strings are parsed instead of rejected.
    pub fn coercing(mut self, coerce: bool) -> Self {
        if coerce {
            self.numbers.clear();
        }
        self
    }

    /// Records missing one of `columns` (or holding null there) are rejected with the column
    /// named; each must be a column of the schema.
    pub fn requiring(mut self, columns: &[String]) -> Result<Self> {
        for name in columns {
            let index = self.schema.index_of(name).map_err(|_| {
                Error::Schema(format!(
                    "'{name}' must be in every record (a key or required column), but it is not one of the records' \
                     columns ({}); declare it in `schema` or check its spelling",
                    self.schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                ))
            })?;
            if !self.required.iter().any(|(i, _)| *i == index) {
                self.required.push((index, name.clone()));
            }
        }
        Ok(self)
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
        let mut rejects: Vec<(usize, String)> = Vec::new();
        let mut kept = Vec::with_capacity(records.len());
        let mut at = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match self.precheck(record) {
                Some(reason) => rejects.push((i, reason)),
                None => {
                    kept.push(*record);
                    at.push(i);
                }
            }
        }
        let mut part = self.decode_objects(&kept)?;
        // Back to indices of `records`.
        for i in part.landed.iter_mut() {
            *i = at[*i];
        }
        rejects.extend(part.rejects.drain(..).map(|(i, reason)| (at[i], reason)));
        if let Some(batch) = part.batch.take() {
            part.batch = self.require(batch, &part.landed, records, &mut rejects)?;
        }
        rejects.sort_by_key(|(i, _)| *i);
        let rejects = rejects.into_iter().map(|(i, reason)| reject(locate(i), records[i], reason)).collect();
        Ok(Decoded { batch: part.batch, rejects })
    }

    /// Why `record` cannot land before it is decoded: more than one JSON value on it, or (strict
    /// reads) a number column written as a string.
    fn precheck(&self, record: &str) -> Option<String> {
        let scan = scan(record, &self.numbers);
        if let Some(at) = scan.trailing.filter(|_| self.flatten.is_none()) {
            // (The flattening path parses with serde_json, which refuses trailing text itself.)
            let rest: String = record[at..].chars().take(20).collect();
            return Some(format!(
                "more than one JSON value on one record: `{rest}` follows the object at byte {at}; \
                 NDJSON holds exactly one JSON value per line"
            ));
        }
        scan.string_number.map(|(key, value)| {
            format!(
                "'{key}' is the string \"{value}\" where a number is expected; send it as a JSON number, \
                 or set coerce = true on the source to parse numbers written as strings"
            )
        })
    }

    /// Rows of `batch` (record `landed[row]` each) whose required columns are null go to
    /// `rejects`; the rest stay.
    fn require(
        &self,
        batch: RecordBatch,
        landed: &[usize],
        records: &[&str],
        rejects: &mut Vec<(usize, String)>,
    ) -> Result<Option<RecordBatch>> {
        let mut missing: Option<Vec<bool>> = None;
        for (index, name) in &self.required {
            let column = batch.column(*index);
            if column.null_count() == 0 {
                continue;
            }
            let missing = missing.get_or_insert_with(|| vec![false; batch.num_rows()]);
            for (row, flag) in missing.iter_mut().enumerate() {
                if column.is_null(row) && !*flag {
                    *flag = true;
                    let record = records[landed[row]];
                    let how = if field_present(record, name) { "is null" } else { "is missing" };
                    rejects.push((
                        landed[row],
                        format!("'{name}' {how}, and every record must have it (a key or required column of the source)"),
                    ));
                }
            }
        }
        let Some(missing) = missing else { return Ok(Some(batch)) };
        let keep = arrow::array::BooleanArray::from(missing.iter().map(|m| !m).collect::<Vec<_>>());
        let kept = arrow::compute::filter_record_batch(&batch, &keep)
            .map_err(|e| Error::Schema(format!("setting aside records without their key: {e}")))?;
        Ok((kept.num_rows() > 0).then_some(kept))
    }

    fn decode_objects(&self, records: &[&str]) -> Result<Part> {
        if records.is_empty() {
            return Ok(Part::default());
        }
        match &self.flatten {
            None => self.decode_text(records),
            Some(sep) => self.decode_flattened(records, sep),
        }
    }

    fn decode_text(&self, records: &[&str]) -> Result<Part> {
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
            return Ok(Part { batch: Some(batch), landed: (0..records.len()).collect(), rejects: Vec::new() });
        }
        // Some record is bad: one at a time, to keep the good ones and say which are not.
        let mut batches = Vec::new();
        let mut part = Part::default();
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
                Ok(Some(batch)) => {
                    batches.push(batch);
                    part.landed.push(i);
                }
                Ok(None) => part.rejects.push((i, "no JSON object".into())),
                Err(e) => part.rejects.push((i, clean(e))),
            }
        }
        part.batch = concat(&self.schema, &batches)?;
        Ok(part)
    }

    fn decode_flattened(&self, records: &[&str], sep: &str) -> Result<Part> {
        let mut part = Part::default();
        let mut values = Vec::with_capacity(records.len());
        let mut kept = Vec::with_capacity(records.len());
        for (i, record) in records.iter().enumerate() {
            match serde_json::from_str::<Value>(record) {
                Ok(v @ Value::Object(_)) => {
                    values.push(flatten(v, sep));
                    kept.push(i);
                }
                Ok(_) => part.rejects.push((i, "not a JSON object".into())),
                Err(e) => part.rejects.push((i, format!("not valid JSON: {e}"))),
            }
        }
        let mut decoder = self.decoder(values.len())?;
        if let Ok(Some(batch)) = decoder.serialize(&values).and_then(|_| decoder.flush()) {
            part.batch = Some(batch);
            part.landed = kept;
            return Ok(part);
        }
        let mut batches = Vec::new();
        for (value, i) in values.iter().zip(kept) {
            let mut one = self.decoder(1)?;
            match one.serialize(std::slice::from_ref(value)).and_then(|_| one.flush()) {
                Ok(Some(batch)) => {
                    batches.push(batch);
                    part.landed.push(i);
                }
                Ok(None) => part.rejects.push((i, "no JSON object".into())),
                Err(e) => part.rejects.push((i, clean(e))),
            }
        }
        part.batch = concat(&self.schema, &batches)?;
        Ok(part)
    }
}

/// What one decoding step made of its records: the batch, which record each row is, and the
/// records rejected (by index) with their reasons.
#[derive(Default)]
struct Part {
    batch: Option<RecordBatch>,
    landed: Vec<usize>,
    rejects: Vec<(usize, String)>,
}

/// What one pass over a record's bytes found.
struct Scan {
    /// The first top-level key among the number columns whose value is a JSON string, with it.
    string_number: Option<(String, String)>,
    /// Where text other than white space starts after the first complete top-level value.
    trailing: Option<usize>,
}

/// Whether top-level key `name` is written in `record` (as `"name":`), for saying "missing" or
/// "null"; flattened names that are not written as such count as missing.
fn field_present(record: &str, name: &str) -> bool {
    serde_json::from_str::<Map<String, Value>>(record).is_ok_and(|m| m.contains_key(name))
}

/// One pass over the bytes of `record`, without building values: the first top-level key
/// among `numbers` holding a string, and text after the first complete top-level value.
fn scan(record: &str, numbers: &[String]) -> Scan {
    let bytes = record.as_bytes();
    let mut found = Scan { string_number: None, trailing: None };
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
                let Some(end) = string_end(i) else { return found };
                if depth == 1 && expect_key {
                    expect_key = false;
                    let key = &record[i + 1..end - 1];
                    let colon = skip_space(end);
                    if found.string_number.is_none() && bytes.get(colon) == Some(&b':') {
                        let value = skip_space(colon + 1);
                        if bytes.get(value) == Some(&b'"') && numbers.iter().any(|n| n == key) {
                            let Some(value_end) = string_end(value) else { return found };
                            found.string_number = Some((key.to_string(), record[value + 1..value_end - 1].to_string()));
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
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    let rest = skip_space(i + 1);
                    if rest < bytes.len() {
                        found.trailing = Some(rest);
                    }
                    return found;
                }
            }
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    found
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
    fn a_record_holds_exactly_one_json_value() {
        let records = [
            r#"{"device": "a", "reading": 1.5}  "#,
            r#"{"device": "b", "reading": 2} }{"#,
            r#"{"device": "c", "reading": 3}{"device": "x", "reading": 4}"#,
            r#"{"device": "}{ \"}\" ", "reading": 5}"#,
            r#"{"device": "e", "reading": 6} 7"#,
        ];
        for flatten in [None, Some("_")] {
            let decoded = decoder(flatten).decode(&records, &|i| format!("line {}", i + 1)).unwrap();
            let batch = decoded.batch.unwrap();
            assert_eq!(batch.num_rows(), 2, "{flatten:?}");
            assert_eq!(batch.column(0).as_string::<i32>().value(1), "}{ \"}\" ", "braces in strings are text");
            let where_: Vec<_> = decoded.rejects.iter().map(|r| r.location.as_str()).collect();
            assert_eq!(where_, ["line 2", "line 3", "line 5"], "{flatten:?}");
            if flatten.is_none() {
                assert!(decoded.rejects[0].reason.contains("more than one JSON value") && decoded.rejects[0].reason.contains("`}{`"), "{:?}", decoded.rejects[0]);
                assert!(decoded.rejects[1].reason.contains("at byte 29"), "{:?}", decoded.rejects[1]);
            } else {
                assert!(decoded.rejects.iter().all(|r| r.reason.contains("trailing characters")), "{:?}", decoded.rejects);
            }
        }
    }

    #[test]
    fn records_without_a_required_column_are_rejected_with_it_named() {
        let required = ["device".to_string()];
        let records = [
            r#"{"device": "a", "reading": 1.5}"#,
            r#"{"reading": 2.5}"#,
            r#"{"device": null, "reading": "x"}"#,
            r#"{"device": null, "reading": 3.5}"#,
            r#"{"device": "e", "reading": 4.5}"#,
        ];
        for flatten in [None, Some("_")] {
            let decoded = decoder(flatten).requiring(&required).unwrap().decode(&records, &|i| format!("line {}", i + 1)).unwrap();
            let batch = decoded.batch.unwrap();
            assert_eq!(batch.num_rows(), 2);
            assert_eq!(batch.column(1).as_primitive::<Float64Type>().values(), &[1.5, 4.5]);
            let rejects: Vec<_> = decoded.rejects.iter().map(|r| (r.location.as_str(), r.reason.as_str())).collect();
            assert_eq!(rejects[0], ("line 2", "'device' is missing, and every record must have it (a key or required column of the source)"));
            assert_eq!(rejects[1].0, "line 3", "a record with a bad value is rejected once, for that");
            assert!(rejects[1].1.contains("reading"), "{rejects:?}");
            assert_eq!(rejects[2], ("line 4", "'device' is null, and every record must have it (a key or required column of the source)"));
            assert_eq!(decoded.rejects[2].raw, records[3]);
        }
        // Only required records rejected: all of them.
        let none = decoder(None).requiring(&required).unwrap().decode(&records[1..2], &|i| i.to_string()).unwrap();
        assert!(none.batch.is_none() && none.rejects.len() == 1);
        let e = decoder(None).requiring(&["id".to_string()]).unwrap_err().to_string();
        assert!(e.contains("'id' must be in every record") && e.contains("device, reading, pos_x"), "{e}");
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
