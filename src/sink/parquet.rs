//! Parquet encoding of result and late batches.

use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

/// Rows per row group: large enough for good compression and scans, small enough that a
/// reader can skip by statistics within a big window.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The writer settings of every file edgeflow writes.
///
/// Dictionaries are kept for columns that repeat values (window bounds, text, flags) and
/// left out where they cost time and save nothing: numbers, which are aggregates and
/// nearly all distinct, and the columns named in `unique` (a window's only group key,
/// different in every row). zstd then does the compressing.
pub fn writer_properties(schema: &Schema, unique: &[&str]) -> WriterProperties {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page);
    for field in schema.fields() {
        let name = field.name().as_str();
        let unique_key = unique.contains(&name);
        let repeats = matches!(
            field.data_type(),
            DataType::Utf8 | DataType::Boolean | DataType::Timestamp(..)
        ) && !unique_key;
        if repeats {
            continue;
        }
        let path = ColumnPath::from(name);
        builder = builder.set_column_dictionary_enabled(path.clone(), false);
        // Smaller input for zstd: sorted unique keys share prefixes, integers fit in far
        // fewer bits than 64. Both encodings are read by every mainstream reader.
        match field.data_type() {
            DataType::Utf8 => {
                builder = builder.set_column_encoding(path, Encoding::DELTA_BYTE_ARRAY)
            }
            DataType::Int64 | DataType::Timestamp(..) => {
                builder = builder.set_column_encoding(path, Encoding::DELTA_BINARY_PACKED)
            }
            _ => {}
        }
    }
    builder.build()
}

/// Encodes a batch as a complete Parquet file in memory; see [`writer_properties`] for
/// `unique`.
pub fn encode(batch: &RecordBatch, unique: &[&str]) -> Result<Vec<u8>, ParquetError> {
    let mut bytes = Vec::with_capacity(batch.get_array_memory_size() / 4 + 1024);
    let properties = writer_properties(&batch.schema(), unique);
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(bytes)
}
