//! Avro event payloads in the Confluent wire format (a zero byte, the writer schema's registry id
//! as 4 big-endian bytes, then the record), decoded into Arrow batches of one reader schema.
//!
//! Each writer schema is resolved to the reader schema by Avro's rules (fields the writer lacks
//! take the reader's defaults, fields the reader lacks are skipped), so events written by older
//! and newer producers land in the same columns. Writer schemas come from the job (by id) or, for
//! ids it does not list, from a Confluent-compatible schema registry. An event that cannot be
//! decoded (not framed, unknown id, cut short, extra bytes) is a [`Reject`]; the others of its
//! batch still decode.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_avro::reader::{Decoder, ReaderBuilder};
use arrow_avro::schema::{AvroSchema, Fingerprint, FingerprintAlgorithm, SchemaStore};

use crate::error::{Error, Result};
use crate::json::{Decoded, Reject};

/// Bytes before the record: the magic zero and the 4-byte schema id.
const PREFIX: usize = 5;

/// Decodes Confluent-framed Avro payloads into batches of the reader schema.
pub struct AvroDecoder {
    reader: AvroSchema,
    store: SchemaStore,
    schema: SchemaRef,
    batch_size: usize,
    decoder: Option<Decoder>,
    registry: Option<Registry>,
    /// Ids that cannot be read, with why (not listed, not in the registry, not resolvable).
    unusable: HashMap<u32, String>,
}

impl std::fmt::Debug for AvroDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvroDecoder").field("schema", &self.schema).field("batch_size", &self.batch_size).finish()
    }
}

impl AvroDecoder {
    /// A decoder into `reader` (an Avro record schema, JSON), reading the writer schemas given by
    /// id and asking `registry` (a base URL) for the others. Batches hold at most `batch_size` rows.
    pub fn new(reader: &str, writers: &BTreeMap<u32, String>, registry: Option<&str>, batch_size: usize) -> Result<Self> {
        let reader = AvroSchema::new(reader.to_string());
        // The columns come from the reader schema alone: read it as its own writer once.
        let mut own = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        own.set(Fingerprint::Id(0), reader.clone()).map_err(|e| Error::Config(format!("the reader schema: {e}")))?;
        let schema = builder(&reader, own, 1)
            .build_decoder()
            .map_err(|e| Error::Config(format!("the reader schema is not a usable Avro record schema: {e}")))?
            .schema();
        let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
        for (id, json) in writers {
            let writer = AvroSchema::new(json.clone());
            resolvable(&reader, *id, &writer).map_err(|e| Error::Config(format!("writer schema {id}: {e}")))?;
            store.set(Fingerprint::Id(*id), writer).map_err(|e| Error::Config(format!("writer schema {id}: {e}")))?;
        }
        let registry = registry.map(Registry::new).transpose()?;
        let mut decoder = Self { reader, store, schema, batch_size: batch_size.max(1), decoder: None, registry, unusable: HashMap::new() };
        decoder.rebuild()?;
        Ok(decoder)
    }

    /// The Arrow schema of the decoded batches.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Fetches from the registry the writer schemas of `payloads` not known yet. An id the
    /// registry does not have makes its events rejects; a registry that cannot be reached is an
    /// error (the events are not lost: decode them again once it answers).
    pub async fn resolve(&mut self, payloads: &[&[u8]]) -> Result<()> {
        let new: BTreeSet<u32> = payloads
            .iter()
            .filter_map(|p| schema_id(p).ok())
            .filter(|id| self.store.lookup(&Fingerprint::Id(*id)).is_none() && !self.unusable.contains_key(id))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        for id in new {
            match registry.fetch(id).await? {
                Err(why) => {
                    self.unusable.insert(id, why);
                }
                Ok(json) => {
                    let writer = AvroSchema::new(json);
                    match resolvable(&self.reader, id, &writer)
                        .and_then(|()| self.store.set(Fingerprint::Id(id), writer).map(|_| ()).map_err(|e| e.to_string()))
                    {
                        Ok(()) => tracing::info!(id, registry = %registry.host, "writer schema fetched"),
                        Err(e) => {
                            self.unusable.insert(id, format!("schema id {id} from the registry at {}: {e}", registry.host));
                        }
                    }
                }
            }
        }
        self.rebuild()
    }

    /// Decodes `payloads`; `locate(i)` names payload `i` in rejects. Call [`Self::resolve`] first
    /// so that ids only the registry knows are decoded too.
    pub fn decode(&mut self, payloads: &[&[u8]], locate: &dyn Fn(usize) -> String) -> Result<Decoded> {
        let mut rejects: Vec<(usize, String)> = Vec::new();
        // Payloads by writer schema, each decoded as one run (a decoder's batch holds one
        // writer's rows), then put back in their order.
        let mut by_writer: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, payload) in payloads.iter().enumerate() {
            match schema_id(payload) {
                Err(why) => rejects.push((i, why)),
                Ok(id) if let Some(why) = self.unusable.get(&id) => rejects.push((i, why.clone())),
                Ok(id) if self.store.lookup(&Fingerprint::Id(id)).is_none() => rejects.push((i, match &self.registry {
                    None => format!("schema id {id} is not in input.avro.writer_schemas and no input.avro.registry is set"),
                    Some(registry) => format!("schema id {id} was not fetched from the registry at {}", registry.host),
                })),
                Ok(id) => by_writer.entry(id).or_default().push(i),
            }
        }
        let mut runs: Vec<RecordBatch> = Vec::new();
        // (payload, run, row in run) of every decoded payload.
        let mut rows: Vec<(usize, usize, usize)> = Vec::new();
        for (id, members) in by_writer {
            let mut batches = Vec::new();
            // Payloads fed since the last flush: fed again into a fresh decoder after a bad one.
            let mut fed: Vec<usize> = Vec::new();
            let mut decoded: Vec<usize> = Vec::new();
            for i in members {
                let decoder = self.decoder.as_mut().ok_or_else(|| Error::Config("no writer schema to decode with".into()))?;
                if decoder.capacity() == 0 {
                    batches.extend(flush(decoder)?);
                    fed.clear();
                }
                match feed(decoder, payloads[i]) {
                    Ok(()) => {
                        fed.push(i);
                        decoded.push(i);
                    }
                    Err(why) => {
                        rejects.push((i, format!("schema id {id}: {why}")));
                        // The bad record may have left part of a row behind: start again without it.
                        self.rebuild()?;
                        let decoder = self.decoder.as_mut().ok_or_else(|| Error::Config("no writer schema to decode with".into()))?;
                        for &j in &fed {
                            feed(decoder, payloads[j]).map_err(|e| Error::Source(format!("decoding {} again: {e}", locate(j))))?;
                        }
                    }
                }
            }
            if let Some(decoder) = self.decoder.as_mut() {
                batches.extend(flush(decoder)?);
            }
            let run = concat(&self.schema, batches)?;
            if let Some(run) = run {
                if run.num_rows() != decoded.len() {
                    return Err(Error::Schema(format!(
                        "schema id {id}: {} events decoded into {} rows; please report this",
                        decoded.len(),
                        run.num_rows()
                    )));
                }
                rows.extend(decoded.into_iter().enumerate().map(|(row, i)| (i, runs.len(), row)));
                runs.push(run);
            }
        }
        let batch = match runs.len() {
            0 => None,
            1 => runs.pop(),
            _ => {
                rows.sort_unstable();
                let order: Vec<(usize, usize)> = rows.iter().map(|(_, run, row)| (*run, *row)).collect();
                let columns = (0..self.schema.fields().len())
                    .map(|c| {
                        let arrays: Vec<&dyn arrow::array::Array> = runs.iter().map(|r| r.column(c).as_ref()).collect();
                        arrow::compute::interleave(&arrays, &order)
                    })
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| Error::Schema(format!("ordering decoded Avro rows: {e}")))?;
                Some(
                    RecordBatch::try_new(self.schema.clone(), columns)
                        .map_err(|e| Error::Schema(format!("ordering decoded Avro rows: {e}")))?,
                )
            }
        };
        rejects.sort_by_key(|(i, _)| *i);
        let rejects = rejects.into_iter().map(|(i, why)| reject(locate(i), payloads[i], why)).collect();
        Ok(Decoded { batch, rejects })
    }

    fn rebuild(&mut self) -> Result<()> {
        self.decoder = if self.store.fingerprints().is_empty() {
            None
        } else {
            Some(
                builder(&self.reader, self.store.clone(), self.batch_size)
                    .build_decoder()
                    .map_err(|e| Error::Config(format!("building the Avro decoder: {e}")))?,
            )
        };
        Ok(())
    }
}

fn builder(reader: &AvroSchema, store: SchemaStore, batch_size: usize) -> ReaderBuilder {
    ReaderBuilder::new().with_batch_size(batch_size).with_reader_schema(reader.clone()).with_writer_schema_store(store)
}

/// Whether records of `writer` can be read as `reader`.
fn resolvable(reader: &AvroSchema, id: u32, writer: &AvroSchema) -> std::result::Result<(), String> {
    let mut store = SchemaStore::new_with_type(FingerprintAlgorithm::Id);
    store.set(Fingerprint::Id(id), writer.clone()).map_err(|e| e.to_string())?;
    builder(reader, store, 1)
        .build_decoder()
        .map(|_| ())
        .map_err(|e| format!("cannot be read as the job's schema: {e}"))
}

/// The writer schema id of a payload in the Confluent wire format.
fn schema_id(payload: &[u8]) -> std::result::Result<u32, String> {
    match payload {
        [0, a, b, c, d, ..] if payload.len() > PREFIX => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        [0, _, _, _, _] => Err("the event ends after its schema id: no record".into()),
        [first, ..] if payload.len() >= PREFIX => Err(format!(
            "not in the Confluent Avro wire format: it starts with byte 0x{first:02x}, not 0x00{}",
            if *first == b'{' { " (JSON? set input.format = \"json\")" } else { "" }
        )),
        _ => Err(format!("{} bytes is too short for the Confluent Avro wire format (5-byte header)", payload.len())),
    }
}

/// Decodes one payload: exactly one record, every byte read.
fn feed(decoder: &mut Decoder, payload: &[u8]) -> std::result::Result<(), String> {
    let before = decoder.capacity();
    let read = decoder.decode(payload).map_err(|e| e.to_string())?;
    if read < payload.len() {
        return Err(format!("the record is cut short or does not match its schema ({read} of {} bytes read)", payload.len()));
    }
    match before.saturating_sub(decoder.capacity()) {
        1 => Ok(()),
        0 => Err("the record is cut short".into()),
        n => Err(format!("the event holds {n} records, not one")),
    }
}

/// One batch of `batches` (None for none).
fn concat(schema: &SchemaRef, mut batches: Vec<RecordBatch>) -> Result<Option<RecordBatch>> {
    match batches.len() {
        0 | 1 => Ok(batches.pop()),
        _ => arrow::compute::concat_batches(schema, &batches)
            .map(Some)
            .map_err(|e| Error::Schema(format!("joining decoded Avro batches: {e}"))),
    }
}

fn flush(decoder: &mut Decoder) -> Result<Option<RecordBatch>> {
    decoder.flush().map_err(|e| Error::Schema(format!("finishing an Avro batch: {e}")))
}

fn reject(location: String, payload: &[u8], reason: String) -> Reject {
    let shown: String = payload.iter().take(32).map(|b| format!("{b:02x}")).collect();
    let raw = if payload.len() > 32 { format!("{shown}... ({} bytes)", payload.len()) } else { shown };
    Reject { location, raw, reason }
}

/// A Confluent-compatible schema registry (`GET /schemas/ids/{id}`).
struct Registry {
    base: url::Url,
    /// Host and port only: the URL may hold credentials.
    host: String,
    client: reqwest::Client,
}

impl Registry {
    fn new(url: &str) -> Result<Self> {
        let base = url::Url::parse(url.trim_end_matches('/'))
            .map_err(|e| Error::Config(format!("input.avro.registry: not a URL ({e}); use http://host:8081")))?;
        let host = format!("{}:{}", base.host_str().unwrap_or("?"), base.port_or_known_default().unwrap_or(0));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::Config(format!("input.avro.registry: {e}")))?;
        Ok(Self { base, host, client })
    }

    /// The schema's JSON, `Ok(Err(why))` when the registry has no usable Avro schema for `id`,
    /// or an error when it cannot be asked (after three tries).
    async fn fetch(&self, id: u32) -> Result<std::result::Result<String, String>> {
        let mut url = self.base.clone();
        url.set_path(&format!("{}/schemas/ids/{id}", self.base.path().trim_end_matches('/')));
        let (user, password) = (url.username().to_string(), url.password().map(str::to_string));
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut request = self.client.get(url.clone()).header("Accept", "application/vnd.schemaregistry.v1+json");
            if !user.is_empty() {
                request = request.basic_auth(&user, password.as_deref());
            }
            match request.send().await {
                Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => {
                    return Ok(Err(format!("the registry at {} has no schema id {id}", self.host)));
                }
                Ok(response) if response.status().is_success() => {
                    let bytes = response.bytes().await.map_err(|e| {
                        Error::Source(format!("schema registry {}: schema {id}: {}", self.host, without_url(&e)))
                    })?;
                    let body: serde_json::Value = serde_json::from_slice(&bytes)
                        .map_err(|e| Error::Source(format!("schema registry {}: schema {id}: not JSON ({e})", self.host)))?;
                    let kind = body.get("schemaType").and_then(|t| t.as_str()).unwrap_or("AVRO");
                    if kind != "AVRO" {
                        return Ok(Err(format!("schema id {id} in the registry at {} is {kind}, not AVRO", self.host)));
                    }
                    return match body.get("schema").and_then(|s| s.as_str()) {
                        Some(schema) => Ok(Ok(schema.to_string())),
                        None => Ok(Err(format!("the registry at {} answered schema id {id} without a schema", self.host))),
                    };
                }
                Ok(response) => last = format!("HTTP {}", response.status()),
                Err(e) => last = without_url(&e),
            }
        }
        Err(Error::Source(format!(
            "schema registry {}: cannot fetch schema id {id} ({last}); the events were not consumed, start again once it answers",
            self.host
        )))
    }
}

/// A request error's text without its URL (which may hold credentials).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = r#"{"type":"record","name":"Event","fields":[
        {"name":"id","type":"long"},{"name":"a","type":"double"}]}"#;

    fn framed(id: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0];
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    /// Avro's zig-zag varint of a long, then a little-endian double.
    fn record(id: i64, a: f64) -> Vec<u8> {
        let mut n = ((id << 1) ^ (id >> 63)) as u64;
        let mut out = Vec::new();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(&a.to_le_bytes());
        out
    }

    #[test]
    fn bad_events_are_rejects_and_the_others_decode() {
        let writers = BTreeMap::from([(7, V1.to_string())]);
        let mut decoder = AvroDecoder::new(V1, &writers, None, 100).unwrap();
        let good = |i: i64| framed(7, &record(i, i as f64 / 2.0));
        let mut cut = good(3);
        cut.truncate(cut.len() - 2);
        let mut extra = good(4);
        extra.push(1);
        let payloads: Vec<Vec<u8>> =
            vec![good(1), good(2), cut, b"{\"id\":1}".to_vec(), framed(9, &record(5, 0.0)), extra, framed(7, &[]), good(6)];
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let decoded = decoder.decode(&refs, &|i| format!("#{i}")).unwrap();
        let batch = decoded.batch.unwrap();
        let ids = batch.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), [1, 2, 6]);
        let where_why: Vec<(String, String)> = decoded.rejects.iter().map(|r| (r.location.clone(), r.reason.clone())).collect();
        let locations: Vec<&str> = where_why.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(locations, ["#2", "#3", "#4", "#5", "#6"], "{where_why:?}");
        assert!(where_why[0].1.contains("cut short"), "{where_why:?}");
        assert!(where_why[1].1.contains("JSON?"), "{where_why:?}");
        assert!(where_why[2].1.contains("schema id 9 is not in input.avro.writer_schemas"), "{where_why:?}");
        assert!(where_why[4].1.contains("no record"), "{where_why:?}");
    }

    #[test]
    fn events_of_two_writers_keep_their_order() {
        let v2 = V1.replace(r#"{"name":"a","type":"double"}"#, r#"{"name":"a","type":"double"},{"name":"n","type":"long","default":-1}"#);
        let writers = BTreeMap::from([(1, V1.to_string()), (2, v2.clone())]);
        let mut decoder = AvroDecoder::new(&v2, &writers, None, 4).unwrap();
        let payloads: Vec<Vec<u8>> = (0..10i64)
            .map(|i| if i % 3 == 0 { framed(2, &[record(i, 0.5), vec![(i * 2) as u8 * 2]].concat()) } else { framed(1, &record(i, 0.5)) })
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
        let batch = decoder.decode(&refs, &|i| i.to_string()).unwrap().batch.unwrap();
        let column = |c: usize| batch.column(c).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap().values().to_vec();
        assert_eq!(column(0), (0..10).collect::<Vec<i64>>());
        assert_eq!(column(2), [0, -1, -1, 6, -1, -1, 12, -1, -1, 18]);
    }

    #[test]
    fn an_unresolvable_writer_schema_is_a_config_error() {
        let v2 = V1.replace(r#"{"name":"a","type":"double"}"#, r#"{"name":"b","type":"string"}"#);
        let error = AvroDecoder::new(V1, &BTreeMap::from([(2, v2)]), None, 10).unwrap_err().to_string();
        assert!(error.contains("writer schema 2") && error.contains("cannot be read as the job's schema"), "{error}");
    }
}
