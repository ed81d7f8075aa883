//! A files read planned on the client (list, sample, split into pieces) and read on the
//! executors piece by piece.

use std::io::Read;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::binary::BinaryOptions;
use super::csv::{CsvOptions, CsvReader};
use super::lines::{Line, LineBuffer};
pub use super::piece::Piece;
use super::piece::{Listed, shown};
use crate::error::{Error, Result};
use crate::json::{Decoded, JsonOptions, RecordDecoder, Reject};

/// How the files' bytes become records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Format {
    /// One JSON object per line.
    Ndjson(JsonOptions),
    /// Delimited text.
    Csv(CsvOptions),
    /// Whole files as rows of metadata and bytes.
    Binary(BinaryOptions),
}

impl Format {
    fn name(&self) -> &'static str {
        match self {
            Self::Ndjson(_) => "ndjson",
            Self::Csv(_) => "csv",
            Self::Binary(_) => "binary",
        }
    }
}

/// A planned read of files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilesPlan {
    /// The source's name.
    pub source: String,
    /// The URL the files were listed under, as given.
    pub url: String,
    /// The object store they are in (`file:///`, `az://container`).
    pub store_url: String,
    /// The records' columns.
    pub schema: Schema,
    /// How bytes become records.
    pub format: Format,
    /// The pieces each partition reads.
    pub partitions: Vec<Vec<Piece>>,
}

impl FilesPlan {
    /// The records' schema.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(self.schema.clone())
    }

    /// A file's path as users know it: `/data/a.json`, `az://raw/a.json`.
    pub fn shown(&self, path: &str) -> String {
        shown(&self.store_url, path)
    }

    /// The kind of files (`ndjson`, `csv`, `binary`).
    pub fn kind(&self) -> &'static str {
        self.format.name()
    }

    /// What lineage records as the input.
    pub fn lineage(&self) -> String {
        let files: std::collections::BTreeSet<&str> =
            self.partitions.iter().flatten().map(|p| p.path.as_str()).collect();
        format!("{} ({} {} files)", self.url, files.len(), self.format.name())
    }
}

/// Where the files are: the source, the URL as given, its store and the prefix in it, and the
/// ending of the names to read (all files when None; `x.gz` matches too).
pub struct Listing<'a> {
    /// The source's name (for errors).
    pub source: &'a str,
    /// The URL as given.
    pub url: &'a str,
    /// The store the files are in.
    pub store: Arc<dyn ObjectStore>,
    /// The store's URL.
    pub store_url: &'a str,
    /// The folder (or file) in the store.
    pub prefix: &'a Path,
    /// Names must end in this (or this plus `.gz`).
    pub extension: Option<&'a str>,
}

/// Plans reading the files of `listing` as `format`: pieces of about `piece_bytes` spread over at
/// most `partitions` partitions, and the columns from the options and a sample of the first
/// records.
pub async fn plan(listing: Listing<'_>, format: Format, partitions: usize, piece_bytes: u64) -> Result<FilesPlan> {
    let Listing { source, url, store, store_url, prefix, extension } = listing;
    let listed: Vec<_> = store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|e| Error::Source(format!("source '{source}': listing {url}: {e}")))?;
    let wanted = |name: &str| match extension {
        Some(ext) => name.ends_with(ext) || name.ends_with(&format!("{ext}.gz")),
        None => true,
    };
    let meta = |o: object_store::ObjectMeta| Listed {
        path: o.location,
        size: o.size,
        modified: o.last_modified.timestamp_micros(),
    };
    let mut files: Vec<Listed> = listed
        .into_iter()
        .filter(|o| {
            let name = o.location.filename().unwrap_or_default();
            !name.starts_with(['.', '_']) && wanted(name)
        })
        .map(meta)
        .collect();
    if files.is_empty()
        && let Ok(one) = store.head(prefix).await
    {
        files.push(meta(one));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(Error::Source(match extension {
            Some(ext) => format!(
                "source '{source}': no files ending in '{ext}' (or '{ext}.gz') under {url}; check url and extension"
            ),
            None => format!("source '{source}': no files under {url}; check url"),
        }));
    }

    let schema = match &format {
        Format::Ndjson(options) => super::ndjson::schema(&store, &files, options)
            .await
            .and_then(|schema| options.decoder(schema.clone()).map(|_| schema)),
        Format::Csv(options) => super::csv::schema(&store, store_url, &files, options).await,
        Format::Binary(_) => Ok(super::binary::schema()),
    }
    .map_err(|e| match e {
        Error::Config(msg) => Error::Config(format!("source '{source}': {msg}")),
        other => other,
    })?;
    let whole = match &format {
        Format::Binary(_) => true,
        Format::Csv(options) => options.multiline,
        Format::Ndjson(_) => false,
    };

    let mut pieces = Vec::new();
    for file in &files {
        let gzip = !matches!(format, Format::Binary(_)) && file.path.as_ref().ends_with(".gz");
        let piece = |start, end| Piece {
            path: file.path.to_string(),
            start,
            end,
            gzip,
            size: file.size,
            modified: file.modified,
        };
        if gzip || whole || file.size <= piece_bytes {
            pieces.push(piece(0, if gzip { u64::MAX } else { file.size }));
            continue;
        }
        let mut start = 0;
        while start < file.size {
            let end = (start + piece_bytes).min(file.size);
            pieces.push(piece(start, end));
            start = end;
        }
    }
    Ok(FilesPlan {
        source: source.to_string(),
        url: url.to_string(),
        store_url: store_url.to_string(),
        schema: schema.as_ref().clone(),
        format,
        partitions: spread(pieces, partitions.max(1)),
    })
}

/// Pieces over partitions, the biggest first onto the least loaded (gzip files count as their
/// compressed size).
fn spread(pieces: Vec<Piece>, partitions: usize) -> Vec<Vec<Piece>> {
    let size = |p: &Piece| if p.gzip { p.size } else { p.end - p.start };
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

/// Reads partition `partition` of `plan` from `store`: batches of up to `batch_rows` records,
/// with the columns in `projection` (all when None), and the records rejected among them;
/// `Decoded` per batch, with the records read.
pub fn read_partition(
    plan: FilesPlan,
    store: Arc<dyn ObjectStore>,
    partition: usize,
    batch_rows: usize,
    projection: Option<Vec<usize>>,
) -> impl Stream<Item = Result<(Decoded, u64)>> + Send + 'static {
    let pieces = plan.partitions.get(partition).cloned().unwrap_or_default();
    let records: Records = match &plan.format {
        Format::Binary(options) => {
            let (source, store_url) = (plan.source.clone(), plan.store_url.clone());
            super::binary::read(source, store_url, options.clone(), store, pieces, batch_rows, projection.clone()).boxed()
        }
        Format::Ndjson(options) => {
            match options.decoder(plan.schema()) {
                Ok(decoder) => read_text(plan.clone(), TextDecoder::Ndjson(decoder), store, pieces, batch_rows).boxed(),
                Err(e) => futures::stream::once(async { Err(e) }).boxed(),
            }
        }
        Format::Csv(options) => {
            let decoder = TextDecoder::Csv(Box::new(CsvReader::new(options, plan.schema())));
            read_text(plan.clone(), decoder, store, pieces, batch_rows).boxed()
        }
    };
    let binary = matches!(plan.format, Format::Binary(_));
    records.map(move |decoded| if binary { decoded } else { project(decoded, projection.as_deref()) })
}

/// Records decoded as the query's columns: every column is decoded (so a record's fate does not
/// depend on the query), then only the query's are kept.
fn project(decoded: Result<(Decoded, u64)>, projection: Option<&[usize]>) -> Result<(Decoded, u64)> {
    let (decoded, read) = decoded?;
    let batch = match (decoded.batch, projection) {
        (Some(b), Some(p)) => {
            Some(b.project(p).map_err(|e| Error::Schema(format!("projecting decoded records: {e}")))?)
        }
        (batch, _) => batch,
    };
    Ok((Decoded { batch, rejects: decoded.rejects }, read))
}

/// Decoded records with the number read.
type Records = std::pin::Pin<Box<dyn Stream<Item = Result<(Decoded, u64)>> + Send>>;

/// Lines into records, by format.
enum TextDecoder {
    Ndjson(RecordDecoder),
    Csv(Box<CsvReader>),
}

impl TextDecoder {
    fn start(&mut self, piece: &Piece) {
        if let Self::Csv(csv) = self {
            csv.start(piece);
        }
    }

    fn decode(&mut self, lines: &LineBuffer, taken: &[Line], shown: &str, last: bool) -> Result<(Decoded, u64)> {
        match self {
            Self::Ndjson(decoder) => super::ndjson::decode(decoder, lines, taken, shown),
            Self::Csv(csv) => csv.decode(lines, taken, shown, last),
        }
    }
}

fn read_text(
    plan: FilesPlan,
    mut decoder: TextDecoder,
    store: Arc<dyn ObjectStore>,
    pieces: Vec<Piece>,
    batch_rows: usize,
) -> impl Stream<Item = Result<(Decoded, u64)>> + Send + 'static {
    async_stream::try_stream! {
        for piece in pieces {
            let shown = plan.shown(&piece.path);
            decoder.start(&piece);
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
                    let last = lines.finished();
                    yield decoder.decode(&lines, &taken, &shown, last)?;
                    lines.consume(&taken);
                    if last {
                        break;
                    }
                }
                if lines.finished() {
                    break;
                }
            }
            if !lines.finished() {
                let taken = lines.lines(true);
                yield decoder.decode(&lines, &taken, &shown, true)?;
            }
        }
    }
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
