//! Newline-delimited JSON files: planned on the client (list, sample, split into pieces),
//! read on the executors piece by piece, each line decoded leniently.

use std::io::Read;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::lines::{Line, LineBuffer};
use crate::error::{Error, Result};
use crate::json::{Decoded, JsonOptions, RecordDecoder, Reject};

/// A planned read of NDJSON files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NdjsonPlan {
    /// The source's name.
    pub source: String,
    /// The URL the files were listed under, as given.
    pub url: String,
    /// The object store they are in (`file:///`, `az://container`).
    pub store_url: String,
    /// The records' columns.
    pub schema: Schema,
    /// Separator nested objects are flattened with, when they are.
    pub flatten: Option<String>,
    /// The pieces each partition reads.
    pub partitions: Vec<Vec<Piece>>,
}

/// A byte range of one file (a whole file when compressed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// Object path in the store.
    pub path: String,
    /// First byte (lines starting before it belong to the previous piece).
    pub start: u64,
    /// End (exclusive) of the bytes whose lines this piece reads.
    pub end: u64,
    /// Whether the file is gzip compressed (then it is one piece).
    pub gzip: bool,
}

impl NdjsonPlan {
    /// The records' schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.schema.clone())
    }

    /// A file's path as users know it: `/data/a.json`, `az://raw/a.json`.
    pub fn shown(&self, path: &str) -> String {
        if self.store_url.starts_with("file:") {
            format!("/{path}")
        } else {
            format!("{}/{path}", self.store_url.trim_end_matches('/'))
        }
    }

    /// What lineage records as the input.
    pub fn lineage(&self) -> String {
        let files: std::collections::BTreeSet<&str> =
            self.partitions.iter().flatten().map(|p| p.path.as_str()).collect();
        format!("{} ({} files)", self.url, files.len())
    }
}

/// Plans reading the files under `prefix` in `store` whose names end in `extension` (or
/// `extension.gz`): pieces of about `piece_bytes` spread over at most `partitions` partitions,
/// and the columns from `options` and a sample of the first records.
#[allow(clippy::too_many_arguments)]
pub async fn plan(
    source: &str,
    url: &str,
    store: Arc<dyn ObjectStore>,
    store_url: &str,
    prefix: &Path,
    extension: &str,
    options: &JsonOptions,
    partitions: usize,
    piece_bytes: u64,
) -> Result<NdjsonPlan> {
    let listed: Vec<_> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|e| Error::Source(format!("source '{source}': listing {url}: {e}")))?;
    let mut files: Vec<(Path, u64)> = listed
        .into_iter()
        .filter(|o| {
            let name = o.location.filename().unwrap_or_default();
            !name.starts_with(['.', '_']) && (name.ends_with(extension) || name.ends_with(&format!("{extension}.gz")))
        })
        .map(|o| (o.location, o.size))
        .collect();
    if files.is_empty()
        && let Ok(meta) = store.head(prefix).await
    {
        files.push((meta.location, meta.size));
    }
    files.sort();
    if files.is_empty() {
        return Err(Error::Source(format!(
            "source '{source}': no files ending in '{extension}' (or '{extension}.gz') under {url}; check url and \
             extension"
        )));
    }

    let sample = sample(&store, &files, options.sample).await?;
    let schema = options.schema_from(&sample).map_err(|e| Error::Config(format!("source '{source}': {e}")))?;

    let mut pieces = Vec::new();
    for (path, size) in &files {
        let gzip = path.as_ref().ends_with(".gz");
        if gzip || *size <= piece_bytes {
            pieces.push(Piece { path: path.to_string(), start: 0, end: if gzip { u64::MAX } else { *size }, gzip });
            continue;
        }
        let mut start = 0;
        while start < *size {
            let end = (start + piece_bytes).min(*size);
            pieces.push(Piece { path: path.to_string(), start, end, gzip });
            start = end;
        }
    }
    Ok(NdjsonPlan {
        source: source.to_string(),
        url: url.to_string(),
        store_url: store_url.to_string(),
        schema: schema.as_ref().clone(),
        flatten: options.flatten.clone(),
        partitions: spread(pieces, &files, partitions.max(1)),
    })
}

/// Pieces over partitions, the biggest first onto the least loaded (sizes of gzip files
/// count as their compressed size).
fn spread(pieces: Vec<Piece>, files: &[(Path, u64)], partitions: usize) -> Vec<Vec<Piece>> {
    let size = |p: &Piece| {
        if p.gzip { files.iter().find(|(f, _)| f.as_ref() == p.path).map_or(0, |(_, s)| *s) } else { p.end - p.start }
    };
    let mut order: Vec<Piece> = pieces;
    order.sort_by_key(|p| std::cmp::Reverse(size(p)));
    let n = partitions.min(order.len());
    let mut groups: Vec<(u64, Vec<Piece>)> = vec![(0, Vec::new()); n];
    for piece in order {
        if let Some(group) = groups.iter_mut().min_by_key(|g| g.0) {
            group.0 += size(&piece);
            group.1.push(piece);
        }
    }
    groups
        .into_iter()
        .map(|(_, mut g)| {
            g.sort_by(|a, b| (&a.path, a.start).cmp(&(&b.path, b.start)));
            g
        })
        .collect()
}

/// The first `records` lines of the files, for inferring columns.
async fn sample(store: &Arc<dyn ObjectStore>, files: &[(Path, u64)], records: usize) -> Result<Vec<String>> {
    const SAMPLE_BYTES: u64 = 4 << 20;
    let mut out = Vec::new();
    for (path, size) in files {
        if out.len() >= records {
            break;
        }
        let gzip = path.as_ref().ends_with(".gz");
        let range = 0..if gzip { *size } else { (*size).min(SAMPLE_BYTES) };
        if range.is_empty() {
            continue;
        }
        let bytes = store.get_range(path, range).await.map_err(|e| Error::Source(format!("reading {path}: {e}")))?;
        let text = if gzip {
            let mut text = Vec::new();
            let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).take(SAMPLE_BYTES).read_to_end(&mut text);
            text
        } else {
            bytes.to_vec()
        };
        let text = String::from_utf8_lossy(&text);
        let complete = text.rfind('\n').map_or(&text[..], |end| &text[..end]);
        let complete = if gzip || *size <= SAMPLE_BYTES { &text[..] } else { complete };
        out.extend(complete.lines().filter(|l| !l.trim().is_empty()).take(records - out.len()).map(str::to_string));
    }
    Ok(out)
}

/// Reads partition `partition` of `plan` from `store`: batches of up to `batch_rows` decoded
/// records with the records rejected among them; `Decoded` per batch, with the lines read.
pub fn read_partition(
    plan: NdjsonPlan,
    store: Arc<dyn ObjectStore>,
    partition: usize,
    batch_rows: usize,
) -> impl Stream<Item = Result<(Decoded, u64)>> + Send + 'static {
    let decoder = RecordDecoder::new(plan.schema(), plan.flatten.clone());
    let pieces = plan.partitions.get(partition).cloned().unwrap_or_default();
    async_stream::try_stream! {
        for piece in pieces {
            let shown = plan.shown(&piece.path);
            let mut lines = LineBuffer::new(piece.start, piece.end);
            let mut chunks = std::pin::pin!(chunks(store.clone(), piece.clone()));
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(bytes) => lines.feed(&bytes),
                    Err(Chunk::Corrupt(reason)) => {
                        // The unreadable rest of a file is kept as one reject; the lines before it land.
                        let reject = Reject { location: shown.clone(), raw: String::new(), reason };
                        yield (Decoded { batch: None, rejects: vec![reject] }, 1);
                        break;
                    }
                    Err(Chunk::Unreadable(e)) => {
                        Err(Error::Source(format!("source '{}': {shown}: {e}", plan.source)))?;
                    }
                }
                while lines.complete() >= batch_rows {
                    let taken = lines.lines(false);
                    yield decode(&decoder, &lines, &taken, &shown)?;
                    lines.consume(&taken);
                    if lines.finished() {
                        break;
                    }
                }
                if lines.finished() {
                    break;
                }
            }
            if !lines.finished() {
                let taken = lines.lines(true);
                yield decode(&decoder, &lines, &taken, &shown)?;
            }
        }
    }
}

fn decode(decoder: &RecordDecoder, lines: &LineBuffer, taken: &[Line], shown: &str) -> Result<(Decoded, u64)> {
    let mut texts = Vec::with_capacity(taken.len());
    let mut at = Vec::with_capacity(taken.len());
    let mut rejects = Vec::new();
    let locate = |line: &Line| match line.number {
        Some(n) => format!("{} line {n}", shown),
        None => format!("{} byte {}", shown, line.offset),
    };
    for line in taken {
        let bytes = lines.text(line);
        match std::str::from_utf8(bytes) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => {
                texts.push(text);
                at.push(line);
            }
            Err(e) => rejects.push(Reject {
                location: locate(line),
                raw: String::from_utf8_lossy(bytes).into_owned(),
                reason: format!("not UTF-8 text: {e}"),
            }),
        }
    }
    let read = (texts.len() + rejects.len()) as u64;
    let mut decoded = decoder.decode(&texts, &|i| locate(at[i]))?;
    decoded.rejects.extend(rejects);
    Ok((decoded, read))
}

/// Why a piece's bytes stopped.
enum Chunk {
    /// The file could not be read (gone, no access): the read fails.
    Unreadable(String),
    /// The file's bytes cannot be decompressed: its rest is quarantined.
    Corrupt(String),
}

/// The bytes of `piece`, in chunks: ranged reads for plain files, decompressed blocks for gzip.
fn chunks(
    store: Arc<dyn ObjectStore>,
    piece: Piece,
) -> impl Stream<Item = std::result::Result<bytes::Bytes, Chunk>> + Send + 'static {
    async_stream::stream! {
        let path = Path::from(piece.path.as_str());
        let options = GetOptions { range: (piece.start > 0).then(|| GetRange::Offset(piece.start - 1)), ..Default::default() };
        let result = match store.get_opts(&path, options).await {
            Ok(result) => result,
            Err(e) => {
                yield Err(Chunk::Unreadable(e.to_string()));
                return;
            }
        };
        if !piece.gzip {
            let mut stream = result.into_stream();
            while let Some(chunk) = stream.next().await {
                match chunk {
                    Ok(chunk) => yield Ok(chunk),
                    Err(e) => {
                        yield Err(Chunk::Unreadable(e.to_string()));
                        return;
                    }
                }
            }
            return;
        }
        let compressed = match result.bytes().await {
            Ok(bytes) => bytes,
            Err(e) => {
                yield Err(Chunk::Unreadable(e.to_string()));
                return;
            }
        };
        let mut gz = flate2::read::MultiGzDecoder::new(std::io::Cursor::new(compressed));
        loop {
            let mut block = vec![0u8; 1 << 20];
            match gz.read(&mut block) {
                Ok(0) => return,
                Ok(n) => {
                    block.truncate(n);
                    yield Ok(bytes::Bytes::from(block));
                }
                Err(e) => {
                    yield Err(Chunk::Corrupt(format!("the gzip data is corrupt: {e}")));
                    return;
                }
            }
        }
    }
}
