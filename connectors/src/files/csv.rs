//! Delimited text (CSV, TSV) read leniently: records split by quote-aware line grouping and
//! `csv-core`, text decoded from the configured encoding, every field typed by Arrow's casts; a
//! record with the wrong number of fields, bytes that are not text in the encoding, or a value
//! that is not of its column's type becomes a reject with file, line and reason.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray, StringBuilder};
use arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use encoding_rs::Encoding;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use super::lines::{Line, LineBuffer};
use super::piece::{Listed, Piece, head_bytes, shown};
use crate::error::{Error, Result};
use crate::json::{Decoded, Reject, parse_columns};

/// How delimited text is read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsvOptions {
    /// Whether each file's first record names the columns.
    pub header: bool,
    /// Field delimiter (`,`, `;`, tab).
    pub delimiter: char,
    /// Quote character.
    pub quote: char,
    /// Escape character inside quoted fields (None: quotes are escaped by doubling them).
    pub escape: Option<char>,
    /// Text encoding, any WHATWG label: `utf-8`, `windows-1252`, `latin1`, `shift_jis`.
    pub encoding: String,
    /// Quoted fields may hold line breaks: files are then read whole instead of in pieces.
    pub multiline: bool,
    /// Column types, `"id bigint, amount decimal(12,2)"` (they win over inferred types; without a
    /// header they name the columns in order).
    pub schema: Option<String>,
    /// Infer the other columns' types from a sample (default true; false: undeclared columns are
    /// strings).
    pub infer: Option<bool>,
    /// Records sampled to infer types.
    pub sample: usize,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: ',',
            quote: '"',
            escape: None,
            encoding: "utf-8".into(),
            multiline: false,
            schema: None,
            infer: None,
            sample: 1000,
        }
    }
}

impl CsvOptions {
    /// Checks the options: single-byte ASCII delimiter, quote and escape, and a known encoding
    /// in which those are ASCII.
    pub fn check(&self) -> Result<()> {
        self.encoding()?;
        let byte = |c: char, what: &str| -> Result<u8> {
            u8::try_from(c).ok().filter(u8::is_ascii).filter(|b| *b != b'\n' && *b != b'\r').ok_or_else(|| {
                Error::Config(format!("{what} '{c}' is not a single ASCII character (other than a line break)"))
            })
        };
        let delimiter = byte(self.delimiter, "delimiter")?;
        let quote = byte(self.quote, "quote")?;
        if delimiter == quote {
            return Err(Error::Config(format!("delimiter and quote are both '{}'", self.delimiter)));
        }
        if let Some(escape) = self.escape {
            byte(escape, "escape")?;
        }
        if let Some(spec) = &self.schema {
            parse_columns(spec)?;
        }
        Ok(())
    }

    fn encoding(&self) -> Result<&'static Encoding> {
        let encoding = Encoding::for_label(self.encoding.trim().as_bytes()).ok_or_else(|| {
            Error::Config(format!(
                "encoding '{}' is not known; use a label such as utf-8, windows-1252, latin1, iso-8859-15, shift_jis",
                self.encoding
            ))
        })?;
        if !encoding.is_ascii_compatible() {
            return Err(Error::Config(format!(
                "encoding '{}' ({}) is not read here: convert the files to UTF-8 first",
                self.encoding,
                encoding.name()
            )));
        }
        Ok(encoding)
    }
}

/// Splits one record into fields with `csv-core`.
struct Fields {
    reader: csv_core::Reader,
    out: Vec<u8>,
    ends: Vec<usize>,
    count: usize,
}

impl Fields {
    fn new(options: &CsvOptions) -> Self {
        let mut builder = csv_core::ReaderBuilder::new();
        builder.delimiter(options.delimiter as u8).quote(options.quote as u8).double_quote(true);
        if let Some(escape) = options.escape {
            builder.escape(Some(escape as u8));
        }
        Self { reader: builder.build(), out: vec![0; 1024], ends: vec![0; 64], count: 0 }
    }

    /// Splits `record` (without its line break); returns the number of fields.
    fn split(&mut self, record: &[u8]) -> usize {
        self.reader.reset();
        let (mut input, mut written, mut ended) = (record, 0, 0);
        loop {
            let (result, read, out, ends) =
                self.reader.read_record(input, &mut self.out[written..], &mut self.ends[ended..]);
            input = &input[read..];
            written += out;
            ended += ends;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => self.out.resize(self.out.len() * 2, 0),
                csv_core::ReadRecordResult::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => break,
            }
        }
        self.count = ended;
        ended
    }

    fn field(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.out[start..self.ends[i]]
    }
}

/// Groups lines into records: a record goes on past a line break inside quotes.
struct Quotes {
    quote: u8,
    escape: Option<u8>,
}

impl Quotes {
    /// Whether `line` leaves a quoted field open, given whether one was open before it.
    fn open_after(&self, line: &[u8], mut open: bool) -> bool {
        let mut i = 0;
        while i < line.len() {
            let b = line[i];
            if open && Some(b) == self.escape {
                i += 2;
                continue;
            }
            if b == self.quote {
                open = !open;
            }
            i += 1;
        }
        open
    }
}

/// The columns of CSV files: names from the first file's header (or the declared columns, or
/// `column_1`, ...), types declared or inferred from a sample of the first records.
pub(crate) async fn schema(
    store: &Arc<dyn ObjectStore>,
    store_url: &str,
    files: &[Listed],
    options: &CsvOptions,
) -> Result<SchemaRef> {
    options.check()?;
    let encoding = options.encoding()?;
    let declared = match &options.schema {
        Some(spec) => parse_columns(spec)?,
        None => Vec::new(),
    };
    let quotes = Quotes { quote: options.quote as u8, escape: options.escape.map(|c| c as u8) };
    let mut fields = Fields::new(options);
    let mut header: Option<(String, Vec<String>)> = None;
    let mut rows: Vec<Vec<String>> = Vec::new();
    head_bytes(store, files, |path, bytes, whole| {
        let mut records = Vec::new();
        let mut record: Vec<u8> = Vec::new();
        let mut open = false;
        let mut lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        if !whole {
            lines.pop(); // cut off
        }
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !open && line.is_empty() {
                continue;
            }
            if open {
                record.push(b'\n');
            }
            record.extend_from_slice(line);
            open = quotes.open_after(line, open);
            if !open {
                records.push(std::mem::take(&mut record));
            }
        }
        let mut records = records.into_iter();
        if options.header {
            let Some(first) = records.next() else { return false };
            let (text, _, _) = encoding.decode(&first);
            let n = fields.split(text.as_bytes());
            let names = (0..n).map(|i| String::from_utf8_lossy(fields.field(i)).trim().to_string()).collect();
            header.get_or_insert((shown(store_url, path.as_ref()), names));
        }
        for record in records.take(options.sample.saturating_sub(rows.len())) {
            let (text, _, _) = encoding.decode(&record);
            let n = fields.split(text.as_bytes());
            rows.push((0..n).map(|i| String::from_utf8_lossy(fields.field(i)).into_owned()).collect());
        }
        rows.len() >= options.sample
    })
    .await?;

    let width = rows.iter().map(Vec::len).max().unwrap_or(0);
    let names: Vec<String> = match &header {
        Some((file, names)) => {
            if let Some(missing) = declared.iter().find(|f| !names.contains(f.name())) {
                return Err(Error::Config(format!(
                    "schema names column '{}' but the header of {file} has {}",
                    missing.name(),
                    names.join(", ")
                )));
            }
            unique(names)
        }
        None if !declared.is_empty() && options.infer == Some(false) => {
            declared.iter().map(|f| f.name().clone()).collect()
        }
        None => (0..width.max(declared.len()))
            .map(|i| declared.get(i).map_or_else(|| format!("column_{}", i + 1), |f| f.name().clone()))
            .collect(),
    };
    if names.is_empty() {
        return Err(Error::Config(
            "no records in the files to take columns from; give schema = \"name type, ...\" or point the source at \
             data"
                .into(),
        ));
    }
    let infer = options.infer.unwrap_or(true);
    let columns = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let data_type = match declared.iter().find(|f| f.name() == name) {
                Some(f) => f.data_type().clone(),
                None if infer => infer_type(rows.iter().filter_map(|r| r.get(i)).map(|v| v.trim())),
                None => DataType::Utf8,
            };
            Field::new(name, data_type, true)
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(Schema::new(columns)))
}

/// Header names made usable: empty ones become `column_N`, repeated ones get `_2`, `_3`.
fn unique(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let base = if name.is_empty() { format!("column_{}", i + 1) } else { name.clone() };
        let mut candidate = base.clone();
        let mut n = 2;
        while out.contains(&candidate) {
            candidate = format!("{base}_{n}");
            n += 1;
        }
        out.push(candidate);
    }
    out
}

/// The narrowest type every non-empty sample value has: bigint, double, boolean, date,
/// timestamp, else string.
fn infer_type<'a>(values: impl Iterator<Item = &'a str> + Clone) -> DataType {
    let values = values.filter(|v| !v.is_empty());
    if values.clone().next().is_none() {
        return DataType::Utf8;
    }
    let all = |f: &dyn Fn(&str) -> bool| values.clone().all(f);
    let naive = |v: &str| {
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
            .iter()
            .any(|f| chrono::NaiveDateTime::parse_from_str(v, f).is_ok())
    };
    if all(&|v| v.parse::<i64>().is_ok()) {
        DataType::Int64
    } else if all(&|v| v.parse::<f64>().is_ok() && !v.chars().any(|c| c.is_alphabetic() && c != 'e' && c != 'E')) {
        DataType::Float64
    } else if all(&|v| v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false")) {
        DataType::Boolean
    } else if all(&|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").is_ok()) {
        DataType::Date32
    } else if all(&naive) {
        DataType::Timestamp(TimeUnit::Microsecond, None)
    } else if all(&|v| chrono::DateTime::parse_from_rfc3339(v).is_ok() || naive(v)) {
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    } else {
        DataType::Utf8
    }
}

/// A record waiting for the rest of its quoted field.
struct Open {
    bytes: Vec<u8>,
    location: String,
}

/// Reads the records of a partition's pieces.
pub(crate) struct CsvReader {
    schema: SchemaRef,
    options: CsvOptions,
    encoding: &'static Encoding,
    fields: Fields,
    quotes: Quotes,
    header_next: bool,
    open: Option<Open>,
}

impl CsvReader {
    /// A reader of records into `schema` (options checked when the read was planned).
    pub(crate) fn new(options: &CsvOptions, schema: SchemaRef) -> Self {
        Self {
            encoding: options.encoding().unwrap_or(encoding_rs::UTF_8),
            fields: Fields::new(options),
            quotes: Quotes { quote: options.quote as u8, escape: options.escape.map(|c| c as u8) },
            options: options.clone(),
            schema,
            header_next: false,
            open: None,
        }
    }

    /// A new piece starts (its first record is a header when it starts its file).
    pub(crate) fn start(&mut self, piece: &Piece) {
        self.header_next = self.options.header && piece.start == 0;
        self.open = None;
    }

    /// Decodes the lines `taken` of a piece of file `shown`; `last` when no more lines of the
    /// piece follow.
    pub(crate) fn decode(
        &mut self,
        lines: &LineBuffer,
        taken: &[Line],
        shown: &str,
        last: bool,
    ) -> Result<(Decoded, u64)> {
        let mut records: Vec<(Vec<u8>, String)> = Vec::with_capacity(taken.len());
        let mut rejects = Vec::new();
        for line in taken {
            let text = lines.text(line);
            let was_open = self.open.is_some();
            let open = match self.open.take() {
                Some(mut open) => {
                    open.bytes.push(b'\n');
                    open.bytes.extend_from_slice(text);
                    open
                }
                None if text.is_empty() => continue,
                None => Open { bytes: text.to_vec(), location: line.locate(shown) },
            };
            if self.quotes.open_after(text, was_open) {
                self.open = Some(open);
            } else if std::mem::take(&mut self.header_next) {
                self.check_header(&open.bytes, shown)?;
            } else {
                records.push((open.bytes, open.location));
            }
        }
        if last && let Some(open) = self.open.take() {
            rejects.push(Reject {
                location: open.location,
                raw: String::from_utf8_lossy(&open.bytes).into_owned(),
                reason: format!(
                    "a quoted field is never closed (quote {:?}); if quoted fields hold line breaks set multiline = \
                     true so files are read whole",
                    self.options.quote
                ),
            });
        }
        let read = (records.len() + rejects.len()) as u64;
        let mut decoded = self.records(&records)?;
        decoded.rejects.extend(rejects);
        Ok((decoded, read))
    }

    fn check_header(&mut self, record: &[u8], shown: &str) -> Result<()> {
        let (text, _, _) = self.encoding.decode(record);
        let n = self.fields.split(text.as_bytes());
        let names: Vec<String> =
            (0..n).map(|i| String::from_utf8_lossy(self.fields.field(i)).trim().to_string()).collect();
        let expected: Vec<String> = self.schema.fields().iter().map(|f| f.name().clone()).collect();
        if unique(&names) != expected {
            return Err(Error::Source(format!(
                "{shown}: the header has columns {} but the source's columns (from its first file) are {}; read \
                 files with other columns as another source",
                names.join(", "),
                expected.join(", ")
            )));
        }
        Ok(())
    }

    /// Records into a batch of the schema's types; bad ones become rejects.
    fn records(&mut self, records: &[(Vec<u8>, String)]) -> Result<Decoded> {
        let width = self.schema.fields().len();
        let mut builders: Vec<StringBuilder> = (0..width).map(|_| StringBuilder::new()).collect();
        let mut kept: Vec<usize> = Vec::with_capacity(records.len());
        let mut rejects: Vec<(usize, Reject)> = Vec::new();
        let reject = |i: usize, reason: String| {
            (i, Reject { location: records[i].1.clone(), raw: String::from_utf8_lossy(&records[i].0).into_owned(), reason })
        };
        for (i, (bytes, _)) in records.iter().enumerate() {
            let text = if self.encoding == encoding_rs::UTF_8 {
                match std::str::from_utf8(bytes) {
                    Ok(text) => std::borrow::Cow::Borrowed(text),
                    Err(e) => {
                        rejects.push(reject(
                            i,
                            format!(
                                "not UTF-8 text ({e}); if the file is in another encoding set encoding = \
                                 \"windows-1252\" (or its label)"
                            ),
                        ));
                        continue;
                    }
                }
            } else {
                match self.encoding.decode_without_bom_handling_and_without_replacement(bytes) {
                    Some(text) => text,
                    None => {
                        rejects.push(reject(i, format!("not {} text", self.encoding.name())));
                        continue;
                    }
                }
            };
            let n = self.fields.split(text.as_bytes());
            if n != width {
                rejects.push(reject(i, format!("{n} fields where the source has {width} columns")));
                continue;
            }
            for (c, builder) in builders.iter_mut().enumerate() {
                // csv-core only splits at ASCII bytes, so each field of UTF-8 text is UTF-8.
                let field = std::str::from_utf8(self.fields.field(c)).unwrap_or_default();
                let field = if self.schema.field(c).data_type() == &DataType::Utf8 { field } else { field.trim() };
                if field.is_empty() { builder.append_null() } else { builder.append_value(field) }
            }
            kept.push(i);
        }
        if kept.is_empty() {
            return Ok(Decoded { batch: None, rejects: rejects.into_iter().map(|r| r.1).collect() });
        }
        let options = CastOptions { safe: true, ..Default::default() };
        let mut good = vec![true; kept.len()];
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(width);
        for (c, mut builder) in builders.into_iter().enumerate() {
            let text: StringArray = builder.finish();
            let field = self.schema.field(c);
            let typed = cast_with_options(&text, field.data_type(), &options)
                .map_err(|e| Error::Schema(format!("column '{}' cannot be read as {}: {e}", field.name(), field.data_type())))?;
            for (row, ok) in good.iter_mut().enumerate() {
                if *ok && text.is_valid(row) && typed.is_null(row) {
                    *ok = false;
                    rejects.push(reject(
                        kept[row],
                        format!("column '{}': '{}' is not a {}", field.name(), text.value(row), field.data_type()),
                    ));
                }
            }
            columns.push(typed);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Schema(format!("building a batch of CSV records: {e}")))?;
        let batch = if good.iter().all(|g| *g) {
            batch
        } else {
            filter_record_batch(&batch, &BooleanArray::from(good))
                .map_err(|e| Error::Schema(format!("dropping rejected CSV records: {e}")))?
        };
        rejects.sort_by_key(|r| r.0);
        let rejects = rejects.into_iter().map(|r| r.1).collect();
        Ok(Decoded { batch: (batch.num_rows() > 0).then_some(batch), rejects })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(schema: &str, options: CsvOptions) -> CsvReader {
        let fields = parse_columns(schema).unwrap();
        CsvReader::new(&options, Arc::new(Schema::new(fields)))
    }

    fn read(reader: &mut CsvReader, text: &[u8], batch: usize) -> (Vec<RecordBatch>, Vec<Reject>, u64) {
        let piece = Piece { path: "a.csv".into(), start: 0, end: text.len() as u64, gzip: false, size: 0, modified: 0 };
        reader.start(&piece);
        let mut lines = LineBuffer::new(0, text.len() as u64);
        lines.feed(text);
        let (mut batches, mut rejects, mut read) = (Vec::new(), Vec::new(), 0);
        loop {
            let mut taken = lines.lines(true);
            let last = taken.len() <= batch;
            taken.truncate(batch);
            let (decoded, n) = reader.decode(&lines, &taken, "/a.csv", last).unwrap();
            lines.consume(&taken);
            batches.extend(decoded.batch);
            rejects.extend(decoded.rejects);
            read += n;
            if last {
                return (batches, rejects, read);
            }
        }
    }

    #[test]
    fn quoted_fields_with_delimiters_quotes_and_line_breaks_are_one_field() {
        let text = b"id,note,amount\n1,\"a, b\",1.5\n2,\"say \"\"hi\"\"\nand bye\",2\n\n3,plain,\n";
        for batch in [1, 2, 10] {
            let mut r = reader("id bigint, note string, amount double", CsvOptions::default());
            let (batches, rejects, read) = read(&mut r, text, batch);
            assert!(rejects.is_empty(), "{rejects:?}");
            assert_eq!(read, 3);
            let all = arrow::compute::concat_batches(&r.schema, &batches).unwrap();
            let notes = all.column(1).as_any().downcast_ref::<StringArray>().unwrap();
            assert_eq!(notes.value(0), "a, b");
            assert_eq!(notes.value(1), "say \"hi\"\nand bye");
            assert!(all.column(2).is_null(2), "an empty field is NULL");
        }
    }

    #[test]
    fn bad_records_are_rejected_with_line_and_reason_and_the_rest_land() {
        let text = b"id,amount,day\n1,2.5,2024-01-02\n2,abc,2024-01-03\n3,1\n4,7,2024-02-30\n5, 8 ,2024-03-01\n6,\"open\n";
        let mut r = reader("id bigint, amount double, day date", CsvOptions::default());
        let (batches, rejects, read) = read(&mut r, text, 100);
        let landed: usize = batches.iter().map(RecordBatch::num_rows).sum();
        assert_eq!((landed, rejects.len(), read), (2, 4, 6));
        let at: Vec<(&str, &str)> = rejects.iter().map(|r| (r.location.as_str(), r.reason.as_str())).collect();
        assert_eq!(at[0].0, "/a.csv line 3");
        assert!(at[0].1.contains("column 'amount': 'abc' is not a Float64"), "{at:?}");
        assert_eq!(at[1].0, "/a.csv line 4");
        assert!(at[1].1.contains("2 fields where the source has 3 columns"), "{at:?}");
        assert!(at[2].1.contains("column 'day': '2024-02-30'"), "{at:?}");
        assert_eq!(at[3].0, "/a.csv line 7");
        assert!(at[3].1.contains("never closed"), "{at:?}");
        assert_eq!(rejects[0].raw, "2,abc,2024-01-03");
    }

    #[test]
    fn other_encodings_are_decoded_and_bytes_that_are_not_text_rejected() {
        let options = CsvOptions { encoding: "latin1".into(), delimiter: ';', ..Default::default() };
        let mut r = reader("city string, n bigint", options);
        let (batches, rejects, _) = read(&mut r, b"city;n\nK\xf6ln;1\nM\xfcnchen;2\n", 10);
        assert!(rejects.is_empty());
        let cities = batches[0].column(0).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!((cities.value(0), cities.value(1)), ("Köln", "München"));

        let mut r = reader("city string, n bigint", CsvOptions::default());
        let (batches, rejects, _) = read(&mut r, b"city,n\nK\xf6ln,1\nBonn,2\n", 10);
        assert_eq!(batches[0].num_rows(), 1);
        assert!(rejects[0].reason.contains("not UTF-8") && rejects[0].reason.contains("encoding ="), "{rejects:?}");
    }

    #[test]
    fn a_header_unlike_the_first_files_fails_the_read() {
        let mut r = reader("id bigint, amount double", CsvOptions::default());
        let piece = Piece { path: "b.csv".into(), start: 0, end: 100, gzip: false, size: 0, modified: 0 };
        r.start(&piece);
        let mut lines = LineBuffer::new(0, 100);
        lines.feed(b"amount,id\n1,2\n");
        let taken = lines.lines(true);
        let e = r.decode(&lines, &taken, "/b.csv", true).unwrap_err().to_string();
        assert!(e.contains("/b.csv: the header has columns amount, id"), "{e}");
    }

    #[test]
    fn types_are_inferred_from_values() {
        let infer = |v: &[&str]| infer_type(v.iter().copied());
        assert_eq!(infer(&["1", "-2", ""]), DataType::Int64);
        assert_eq!(infer(&["1", "2.5"]), DataType::Float64);
        assert_eq!(infer(&["true", "FALSE"]), DataType::Boolean);
        assert_eq!(infer(&["2024-01-02"]), DataType::Date32);
        assert_eq!(infer(&["2024-01-02 10:00:00"]), DataType::Timestamp(TimeUnit::Microsecond, None));
        assert_eq!(
            infer(&["2024-01-02T10:00:00Z", "2024-01-02 10:00:00"]),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        );
        assert_eq!(infer(&["1", "x"]), DataType::Utf8);
        assert_eq!(infer(&["inf"]), DataType::Utf8);
        assert_eq!(unique(&["a".into(), "".into(), "a".into()]), ["a", "column_2", "a_2"]);
    }
}
