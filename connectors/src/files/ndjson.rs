//! Newline-delimited JSON: columns from a sample of the first lines, each line decoded leniently.

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use object_store::ObjectStore;

use super::lines::{Line, LineBuffer};
use super::piece::{Listed, head_bytes};
use crate::error::Result;
use crate::json::{Decoded, JsonOptions, RecordDecoder, Reject};

/// The columns of the files: declared and/or inferred from their first lines.
pub(crate) async fn schema(store: &Arc<dyn ObjectStore>, files: &[Listed], options: &JsonOptions) -> Result<SchemaRef> {
    let mut sample: Vec<String> = Vec::new();
    head_bytes(store, files, |_, bytes, whole| {
        let text = String::from_utf8_lossy(bytes);
        // A cut-off last line is no sample.
        let complete = if whole { &text[..] } else { text.rfind('\n').map_or(&text[..], |end| &text[..end]) };
        let wanted = options.sample.saturating_sub(sample.len());
        sample.extend(complete.lines().filter(|l| !l.trim().is_empty()).take(wanted).map(str::to_string));
        sample.len() >= options.sample
    })
    .await?;
    options.schema_from(&sample)
}

/// Decodes the lines `taken` of a piece of file `shown`: the records, the rejects, the lines read.
pub(crate) fn decode(
    decoder: &RecordDecoder,
    lines: &LineBuffer,
    taken: &[Line],
    shown: &str,
) -> Result<(Decoded, u64)> {
    let mut texts = Vec::with_capacity(taken.len());
    let mut at = Vec::with_capacity(taken.len());
    let mut rejects = Vec::new();
    for line in taken {
        let bytes = lines.text(line);
        match std::str::from_utf8(bytes) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => {
                texts.push(text);
                at.push(line);
            }
            Err(e) => rejects.push(Reject {
                location: line.locate(shown),
                raw: String::from_utf8_lossy(bytes).into_owned(),
                reason: format!("not UTF-8 text: {e}"),
            }),
        }
    }
    let read = (texts.len() + rejects.len()) as u64;
    let mut decoded = decoder.decode(&texts, &|i| at[i].locate(shown))?;
    decoded.rejects.extend(rejects);
    Ok((decoded, read))
}
