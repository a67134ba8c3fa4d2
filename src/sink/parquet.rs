//! Parquet encoding of result and late batches.

use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

/// Rows per row group: large enough for good compression and scans, small enough that a
/// reader can skip by statistics within a big window.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The writer settings of every file edgeflow writes.
pub fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build()
}

/// Encodes a batch as a complete Parquet file in memory.
pub fn encode(batch: &RecordBatch) -> Result<Vec<u8>, ParquetError> {
    let mut bytes = Vec::with_capacity(batch.get_array_memory_size() / 4 + 1024);
    let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(writer_properties()))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(bytes)
}
