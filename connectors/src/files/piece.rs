//! What every files format reads: pieces of listed files, their names as users know them, and
//! the first bytes of files for sampling. Below the formats and the planner that uses them.

use std::io::Read;
use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A byte range of one file (a whole file when compressed, binary or read as a whole).
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
    /// The file's size in bytes.
    pub size: u64,
    /// When the file was last modified, in microseconds since the epoch.
    pub modified: i64,
}

/// A file's path as users know it: `/data/a.json`, `az://raw/a.json`.
pub(crate) fn shown(store_url: &str, path: &str) -> String {
    if store_url.starts_with("file:") {
        format!("/{path}")
    } else {
        format!("{}/{path}", store_url.trim_end_matches('/'))
    }
}

/// A listed file.
pub(crate) struct Listed {
    pub path: Path,
    pub size: u64,
    pub modified: i64,
}

/// The first bytes (at most 4 MiB, decompressed) of each file, until `enough` says so; with
/// whether they are the whole file.
pub(crate) async fn head_bytes(
    store: &Arc<dyn ObjectStore>,
    files: &[Listed],
    mut enough: impl FnMut(&Path, &[u8], bool) -> bool,
) -> Result<()> {
    const SAMPLE_BYTES: u64 = 4 << 20;
    for file in files {
        let gzip = file.path.as_ref().ends_with(".gz");
        let range = 0..if gzip { file.size } else { file.size.min(SAMPLE_BYTES) };
        if range.is_empty() {
            continue;
        }
        let bytes =
            store.get_range(&file.path, range).await.map_err(|e| Error::Source(format!("reading {}: {e}", file.path)))?;
        let (text, whole) = if gzip {
            let mut text = Vec::new();
            let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).take(SAMPLE_BYTES).read_to_end(&mut text);
            let whole = (text.len() as u64) < SAMPLE_BYTES;
            (text, whole)
        } else {
            (bytes.to_vec(), file.size <= SAMPLE_BYTES)
        };
        if enough(&file.path, &text, whole) {
            break;
        }
    }
    Ok(())
}

