//! Unstructured files (images, PDFs, audio, anything) as rows: path, name, size, modified time,
//! content type and the bytes, so they can be scored or parsed later. Files larger than
//! `max_inline_bytes` keep NULL content; their path is the reference to read them by.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, LargeBinaryBuilder, RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures::Stream;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::piece::{Piece, shown};
use crate::error::{Error, Result};
use crate::json::Decoded;

/// How unstructured files land.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BinaryOptions {
    /// Files up to this size carry their bytes in `content`; larger ones have NULL content and
    /// are read by `path` (default 16 MiB).
    pub max_inline_bytes: u64,
}

impl Default for BinaryOptions {
    fn default() -> Self {
        Self { max_inline_bytes: 16 << 20 }
    }
}

/// The columns of a binary files source.
pub fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("path", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("size", DataType::Int64, false),
        Field::new("modified", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), false),
        Field::new("content_type", DataType::Utf8, false),
        Field::new("content", DataType::LargeBinary, true),
    ]))
}

const CONTENT: usize = 5;

/// Bytes held before a batch is handed on, however few rows it has.
const BATCH_BYTES: u64 = 64 << 20;

/// Rows of the files `pieces` (each a whole file), with the columns in `projection`; bytes are
/// read only when `content` is among them.
pub(crate) fn read(
    source: String,
    store_url: String,
    options: BinaryOptions,
    store: Arc<dyn ObjectStore>,
    pieces: Vec<Piece>,
    batch_rows: usize,
    projection: Option<Vec<usize>>,
) -> impl Stream<Item = Result<(Decoded, u64)>> + Send + 'static {
    let wants_content = projection.as_ref().is_none_or(|p| p.contains(&CONTENT));
    async_stream::try_stream! {
        let mut rows = Rows::default();
        for piece in pieces {
            let shown = shown(&store_url, &piece.path);
            let content = if wants_content && piece.size <= options.max_inline_bytes {
                let bytes = store
                    .get(&Path::from(piece.path.as_str()))
                    .await
                    .map_err(|e| Error::Source(format!("source '{}': {shown}: {e}", source)))?
                    .bytes()
                    .await
                    .map_err(|e| Error::Source(format!("source '{}': {shown}: {e}", source)))?;
                Some(bytes)
            } else {
                None
            };
            rows.push(&shown, &piece, content);
            if rows.len >= batch_rows.max(1) || rows.bytes >= BATCH_BYTES {
                yield std::mem::take(&mut rows).finish(projection.as_deref())?;
            }
        }
        if rows.len > 0 {
            yield rows.finish(projection.as_deref())?;
        }
    }
}

#[derive(Default)]
struct Rows {
    path: StringBuilder,
    name: StringBuilder,
    size: Int64Builder,
    modified: TimestampMicrosecondBuilder,
    content_type: StringBuilder,
    content: LargeBinaryBuilder,
    len: usize,
    bytes: u64,
}

impl Rows {
    fn push(&mut self, shown: &str, piece: &Piece, content: Option<bytes::Bytes>) {
        let name = shown.rsplit('/').next().unwrap_or(shown);
        self.path.append_value(shown);
        self.name.append_value(name);
        self.size.append_value(i64::try_from(piece.size).unwrap_or(i64::MAX));
        self.modified.append_value(piece.modified);
        self.content_type.append_value(mime_guess::from_path(name).first_or_octet_stream().essence_str());
        self.bytes += content.as_ref().map_or(0, |c| c.len() as u64);
        self.content.append_option(content);
        self.len += 1;
    }

    fn finish(mut self, projection: Option<&[usize]>) -> Result<(Decoded, u64)> {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.path.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.size.finish()),
            Arc::new(self.modified.finish().with_timezone("UTC")),
            Arc::new(self.content_type.finish()),
            Arc::new(self.content.finish()),
        ];
        let batch = RecordBatch::try_new(schema(), columns)
            .map_err(|e| Error::Schema(format!("building a batch of files: {e}")))?;
        let batch = match projection {
            Some(p) => batch.project(p).map_err(|e| Error::Schema(format!("projecting files: {e}")))?,
            None => batch,
        };
        Ok((Decoded { batch: Some(batch), rejects: Vec::new() }, self.len as u64))
    }
}
