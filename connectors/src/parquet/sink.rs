//! Writes a stream of Arrow batches as a directory of Parquet part files.
//!
//! Each part is written to a hidden temporary name and renamed once complete, so a reader listing
//! the directory never sees a half-written file.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// Totals of what a writer produced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows written.
    pub rows: u64,
    /// Part files written.
    pub files: u64,
    /// Bytes on disk.
    pub bytes: u64,
}

/// Writes batches of one schema into `dir/part-NNNNN.parquet`, one file per [`Self::write_part`].
#[derive(Debug)]
pub struct ParquetDirWriter {
    dir: PathBuf,
    schema: SchemaRef,
    props: WriterProperties,
    stats: WriteStats,
}

impl ParquetDirWriter {
    /// Creates `dir` (and parents). Float columns are written without dictionary encoding, which
    /// only makes random floats larger.
    pub fn create(dir: impl AsRef<Path>, schema: SchemaRef) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(128 * 1024));
        for field in schema.fields() {
            if field.data_type().is_floating() {
                props = props.set_column_dictionary_enabled(field.name().as_str().into(), false);
            }
        }
        Ok(Self { dir, schema, props: props.build(), stats: WriteStats::default() })
    }

    /// Writes `batches` as the next part file.
    pub fn write_part(&mut self, batches: &[RecordBatch]) -> Result<()> {
        let name = format!("part-{:05}.parquet", self.stats.files);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let path = self.dir.join(&name);
        let file = File::create(&tmp).map_err(|source| Error::Io { path: tmp.clone(), source })?;
        let parquet_err = |source| Error::Parquet { path: path.clone(), source };
        let mut writer =
            ArrowWriter::try_new(file, self.schema.clone(), Some(self.props.clone())).map_err(parquet_err)?;
        let mut rows = 0;
        for batch in batches {
            if batch.schema() != self.schema {
                return Err(Error::Schema(format!(
                    "{}: batch schema {:?} differs from the data set's schema {:?}",
                    self.dir.display(),
                    batch.schema(),
                    self.schema
                )));
            }
            writer.write(batch).map_err(parquet_err)?;
            rows += batch.num_rows() as u64;
        }
        writer.close().map_err(parquet_err)?;
        std::fs::rename(&tmp, &path).map_err(|source| Error::Io { path: path.clone(), source })?;
        let bytes = std::fs::metadata(&path).map_err(|source| Error::Io { path: path.clone(), source })?.len();
        self.stats.rows += rows;
        self.stats.files += 1;
        self.stats.bytes += bytes;
        Ok(())
    }

    /// What was written so far.
    pub fn stats(&self) -> WriteStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float32Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::sync::Arc;

    #[test]
    fn writes_readable_parts_and_rejects_other_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float32, false),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from(vec![1, 2, 3])), Arc::new(Float32Array::from(vec![0.5, 1.5, 2.5]))],
        )
        .unwrap();
        let mut w = ParquetDirWriter::create(dir.path().join("t"), schema).unwrap();
        w.write_part(&[batch.clone(), batch]).unwrap();
        assert_eq!(w.stats().rows, 6);
        assert_eq!(w.stats().files, 1);
        let file = File::open(dir.path().join("t/part-00000.parquet")).unwrap();
        let rows: usize = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap().num_rows())
            .sum();
        assert_eq!(rows, 6);

        let other = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let err = w.write_part(&[other]).unwrap_err().to_string();
        assert!(err.contains("differs from the data set's schema"), "{err}");
        // The failed part left no visible file behind.
        let visible = std::fs::read_dir(dir.path().join("t"))
            .unwrap()
            .filter(|e| !e.as_ref().unwrap().file_name().to_string_lossy().starts_with('.'));
        assert_eq!(visible.count(), 1);
    }
}
