//! Parquet encoding of result and late batches.

use arrow::datatypes::{DataType, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, compute_leaves,
};
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

/// Row groups with at least this many rows, or this many bytes of column data, have
/// their columns encoded on several threads; below both, starting a thread costs more
/// than it saves. Bytes count too because a few thousand rows of sketches (a t-digest
/// keeps 16 bytes per value) take longer to encode than a hundred thousand of numbers.
const PARALLEL_ROWS: usize = 16 * 1024;
/// See [`PARALLEL_ROWS`].
const PARALLEL_BYTES: usize = 2 << 20;

/// Encodes a batch as a complete Parquet file in memory; see [`writer_properties`] for
/// `unique`.
///
/// A big window's columns are encoded in parallel (one share of the columns per
/// available core, at most [`MAX_ENCODE_THREADS`]): encoding is most of the time between
/// a window closing and its file being durable, and the columns are independent. The
/// file is the same as a single-threaded `ArrowWriter` writes, Arrow schema included.
pub fn encode(batch: &RecordBatch, unique: &[&str]) -> Result<Vec<u8>, ParquetError> {
    let mut bytes = Vec::with_capacity(batch.get_array_memory_size() / 4 + 1024);
    let mut properties = writer_properties(&batch.schema(), unique);
    if batch.num_rows() < COMPRESS_FROM_ROWS {
        properties = properties
            .into_builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build();
    }
    let writer = ArrowWriter::try_new(&mut bytes, batch.schema(), Some(properties))?;
    let (mut file, factory) = writer.into_serialized_writer()?;
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_ENCODE_THREADS);
    let mut offset = 0;
    for group in 0.. {
        if offset >= batch.num_rows() {
            break;
        }
        let rows = batch.slice(offset, ROW_GROUP_ROWS.min(batch.num_rows() - offset));
        offset += rows.num_rows();
        let writers = factory.create_column_writers(group)?;
        let mut leaves = Vec::with_capacity(writers.len());
        let mut costs = Vec::with_capacity(writers.len());
        for (field, array) in rows.schema().fields().iter().zip(rows.columns()) {
            let of_field = compute_leaves(field, array)?;
            // The row group's own rows: a slice's buffers are the whole batch's.
            let bytes = array
                .to_data()
                .get_slice_memory_size()
                .unwrap_or_else(|_| array.get_array_memory_size());
            let cost = bytes / of_field.len().max(1);
            costs.extend(std::iter::repeat_n(cost, of_field.len()));
            leaves.extend(of_field);
        }
        let parallel =
            if rows.num_rows() >= PARALLEL_ROWS || costs.iter().sum::<usize>() >= PARALLEL_BYTES {
                threads
            } else {
                1
            };
        let columns = writers.into_iter().zip(leaves).zip(costs).collect();
        let chunks = encode_columns(columns, parallel)?;
        let mut row_group = file.next_row_group()?;
        for chunk in chunks {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    file.close()?;
    Ok(bytes)
}

/// Files of fewer rows are written uncompressed: zstd's contexts (two per column, made
/// for each column of each file) cost more than the few bytes they would save, most of
/// the time of writing a window of one device. Compaction compresses them with the rest
/// of their hour.
pub const COMPRESS_FROM_ROWS: usize = 64;

/// At most this many threads encode one file.
pub const MAX_ENCODE_THREADS: usize = 4;

/// Encodes each leaf column with its writer (pages, statistics and compression all
/// happen here), `threads` at a time; returns the chunks in column order. Each column
/// comes with its cost: the bytes of its Arrow data.
fn encode_columns(
    columns: Vec<((ArrowColumnWriter, ArrowLeafColumn), usize)>,
    threads: usize,
) -> Result<Vec<ArrowColumnChunk>, ParquetError> {
    let encode = |share: Vec<(usize, (ArrowColumnWriter, ArrowLeafColumn))>| {
        share
            .into_iter()
            .map(|(i, (mut writer, leaf))| {
                writer.write(&leaf)?;
                writer.close().map(|chunk| (i, chunk))
            })
            .collect::<Result<Vec<_>, ParquetError>>()
    };
    let count = columns.len();
    let threads = threads.clamp(1, count.max(1));
    let mut shares: Vec<Vec<_>> = (0..threads).map(|_| Vec::new()).collect();
    let costs: Vec<usize> = columns.iter().map(|(_, cost)| *cost).collect();
    let owners = balanced_shares(&costs, threads);
    for (i, ((column, _), share)) in columns.into_iter().zip(owners).enumerate() {
        shares[share].push((i, column));
    }
    let mine = shares.remove(0);
    let results = std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || encode(share)))
            .collect();
        let mut results = vec![encode(mine)];
        for handle in handles {
            results.push(handle.join().unwrap_or_else(|_| {
                Err(ParquetError::General(
                    "a column encoding thread panicked".into(),
                ))
            }));
        }
        results
    });
    let mut chunks: Vec<Option<ArrowColumnChunk>> = (0..count).map(|_| None).collect();
    for result in results {
        for (i, chunk) in result? {
            chunks[i] = Some(chunk);
        }
    }
    Ok(chunks.into_iter().flatten().collect())
}

/// The share each column goes to: the costliest first, each to the share with the
/// least so far. A sketch query's binary sketch columns cost more to compress than the
/// rest of its file; taking turns by position could give both to one thread.
fn balanced_shares(costs: &[usize], threads: usize) -> Vec<usize> {
    let mut by_cost: Vec<usize> = (0..costs.len()).collect();
    by_cost.sort_by_key(|&i| std::cmp::Reverse(costs[i]));
    let mut loads = vec![0usize; threads.max(1)];
    let mut owners = vec![0; costs.len()];
    for i in by_cost {
        let (least, _) = loads
            .iter()
            .enumerate()
            .min_by_key(|&(_, &load)| load)
            .unwrap_or((0, &0));
        owners[i] = least;
        loads[least] += costs[i];
    }
    owners
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray};
    use arrow::datatypes::Field;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    #[test]
    fn the_costliest_columns_go_to_different_threads() {
        // Two sketch columns at odd positions among cheap ones: by turns they would
        // share one thread.
        let costs = [10, 500, 10, 400, 10, 10];
        let owners = balanced_shares(&costs, 2);
        assert_ne!(owners[1], owners[3]);
        let load = |share| -> usize {
            owners
                .iter()
                .zip(&costs)
                .filter(|&(&o, _)| o == share)
                .map(|(_, &c)| c)
                .sum()
        };
        assert_eq!((load(0), load(1)), (500, 440));
        assert_eq!(balanced_shares(&costs, 1), vec![0; 6]);
    }

    /// Parallel column encoding writes exactly the file a single `ArrowWriter` writes,
    /// over several row groups, and it reads back as the batch.
    #[test]
    fn parallel_encoding_matches_arrow_writer() -> Result<(), Box<dyn std::error::Error>> {
        let rows = 2 * ROW_GROUP_ROWS + 7;
        let schema = Arc::new(Schema::new(vec![
            Field::new("device_id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                (0..rows).map(|i| format!("dev-{i:07}")),
            )),
            Arc::new(Int64Array::from_iter(
                (0..rows as i64).map(|i| (i % 11 != 0).then_some(i * 7919 % 1000)),
            )),
            Arc::new(Float64Array::from_iter(
                (0..rows).map(|i| (i % 13 != 0).then_some(i as f64 / 3.0)),
            )),
        ];
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        let unique = ["device_id"];

        let parallel = encode(&batch, &unique)?;
        let mut single = Vec::new();
        let mut writer = ArrowWriter::try_new(
            &mut single,
            schema.clone(),
            Some(writer_properties(&schema, &unique)),
        )?;
        writer.write(&batch)?;
        writer.close()?;
        assert!(parallel == single, "the files differ");

        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(parallel))?;
        assert_eq!(reader.metadata().num_row_groups(), 3);
        let read: Vec<RecordBatch> = reader.build()?.collect::<Result<_, _>>()?;
        let read = arrow::compute::concat_batches(&schema, &read)?;
        assert_eq!(read, batch);
        Ok(())
    }

    /// A window of a few rows is written uncompressed; from `COMPRESS_FROM_ROWS` rows
    /// on, with zstd. Both read back whole.
    #[test]
    fn small_files_are_uncompressed_and_read_back() -> Result<(), Box<dyn std::error::Error>> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("device_id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]));
        let batch_of = |rows: usize| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from_iter_values(
                        (0..rows).map(|i| format!("dev-{i:07}")),
                    )) as ArrayRef,
                    Arc::new(Int64Array::from_iter_values(
                        (0..rows as i64).map(|i| i * 3),
                    )),
                ],
            )
        };
        for (rows, compressed) in [
            (1, false),
            (COMPRESS_FROM_ROWS - 1, false),
            (COMPRESS_FROM_ROWS, true),
        ] {
            let batch = batch_of(rows)?;
            let bytes = encode(&batch, &["device_id"])?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes))?;
            let column = reader.metadata().row_group(0).column(0).compression();
            assert_eq!(
                matches!(column, Compression::ZSTD(_)),
                compressed,
                "{rows} rows"
            );
            let read: Vec<RecordBatch> = reader.build()?.collect::<Result<_, _>>()?;
            assert_eq!(arrow::compute::concat_batches(&schema, &read)?, batch);
        }
        Ok(())
    }
}
