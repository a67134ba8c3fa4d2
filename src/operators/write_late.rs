//! Writes late readings to the `<query>_late` table.
//!
//! Late rows are grouped by the epoch (one window slide long) of the watermark they met,
//! and an epoch is written once the frontier has passed it, as one file per partition of
//! the windows they missed. Grouping by watermark rather than by arrival keeps file
//! contents independent of scheduling. An epoch that piles up more than
//! [`FLUSH_ROWS`] rows before the frontier passes it is written early, as a further
//! part, so memory stays bounded.
//!
//! The files are encoded and made durable on a thread of the worker's own, joined with
//! the result writers before a run counts as done: each epoch's files cost fsyncs of
//! file and folder, about 1 ms, that the worker spent waiting before.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, TimestampMicrosecondArray, UInt32Array};
use arrow::compute::{concat_batches, take_record_batch};
use arrow::record_batch::RecordBatch;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::write_parquet::{OnCommit, Writers, start_writer};
use super::{LateRows, Time};
use crate::engine::control::{Control, Metrics};
use crate::sink::{Layout, write_parquet};
use crate::time::hour_floor;

fn timestamps(batch: &RecordBatch, column: usize) -> Vec<i64> {
    batch
        .column(column)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .map(|a| a.values().to_vec())
        .unwrap_or_default()
}

/// Splits `batch` into groups of rows by `key(row)`.
fn split_by(batch: &RecordBatch, keys: &[i64]) -> BTreeMap<i64, RecordBatch> {
    let mut rows: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (i, &k) in keys.iter().enumerate() {
        rows.entry(k).or_default().push(i as u32);
    }
    rows.into_iter()
        .filter_map(|(k, idx)| {
            take_record_batch(batch, &UInt32Array::from(idx))
                .ok()
                .map(|b| (k, b))
        })
        .collect()
}

/// Late rows of one epoch held before they are written anyway.
pub const FLUSH_ROWS: usize = 1 << 20;

/// Writes the late rows of epoch `e` as part `part`, one file per partition.
#[allow(clippy::too_many_arguments)]
fn write_epoch(
    layout: &Layout,
    epoch: i64,
    e: i64,
    part: u32,
    worker: usize,
    batches: &[RecordBatch],
    on_commit: &OnCommit,
    metrics: &Metrics,
) -> Result<(), crate::Error> {
    let Some(schema) = batches.first().map(RecordBatch::schema) else {
        return Ok(());
    };
    let all = concat_batches(&schema, batches)
        .map_err(|e| crate::Error::Internal(format!("late rows: {e}")))?;
    let window_start = schema.fields().len() - 3;
    let hours: Vec<i64> = timestamps(&all, window_start)
        .into_iter()
        .map(hour_floor)
        .collect();
    for (hour, rows) in split_by(&all, &hours) {
        let relative = layout.late_file(e * epoch, hour, part, worker);
        let file = write_parquet(layout, relative, &rows, &[], || {})?;
        Metrics::add(&metrics.files, 1);
        Metrics::add(&metrics.bytes_written, file.bytes);
        on_commit(&file);
    }
    Ok(())
}

/// Epochs handed to the late writer and not yet written, at most: the worker waits
/// beyond, so memory stays bounded.
const QUEUED_EPOCHS: usize = 4;

/// One epoch's late rows (part `part` of epoch `e`) for the late writer.
struct LateEpoch {
    e: i64,
    part: u32,
    batches: Vec<RecordBatch>,
}

/// Writes late rows.
pub trait WriteLate {
    /// Writes late rows in epochs of `epoch` microseconds, on a thread joined with
    /// `writers`.
    fn write_late(
        self,
        layout: Layout,
        epoch: i64,
        on_commit: OnCommit,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
        writers: Writers,
    );
}

impl WriteLate for StreamVec<'_, Time, LateRows> {
    fn write_late(
        self,
        layout: Layout,
        epoch: i64,
        on_commit: OnCommit,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
        writers: Writers,
    ) {
        let worker = self.scope().index();
        let (queue, epochs) = std::sync::mpsc::sync_channel::<LateEpoch>(QUEUED_EPOCHS);
        let failed = control.clone();
        let name = format!("edgeflow-late-{worker}");
        let started = start_writer(name, &writers, &control, move || {
            for LateEpoch { e, part, batches } in epochs {
                let written = write_epoch(
                    &layout, epoch, e, part, worker, &batches, &on_commit, &metrics,
                );
                if let Err(err) = written {
                    failed.fail(err);
                }
            }
        });
        let mut queue = started.then_some(queue);
        let mut buffered: BTreeMap<i64, (Vec<RecordBatch>, usize)> = BTreeMap::new();
        let mut parts: BTreeMap<i64, u32> = BTreeMap::new();
        self.sink(Pipeline, "WriteLate", move |(input, frontier)| {
            let mut full = Vec::new();
            input.for_each_stamp(|_cap, data| {
                for rows in data {
                    for LateRows { batch } in rows.drain(..) {
                        let watermark = timestamps(&batch, batch.num_columns() - 1);
                        let epochs: Vec<i64> =
                            watermark.iter().map(|w| w.div_euclid(epoch)).collect();
                        for (e, part) in split_by(&batch, &epochs) {
                            let entry = buffered.entry(e).or_default();
                            entry.1 += part.num_rows();
                            entry.0.push(part);
                            if entry.1 >= FLUSH_ROWS {
                                full.push(e);
                            }
                        }
                    }
                }
            });
            // A failed run publishes nothing half-done: the next run redoes these epochs
            // under the same names.
            if frontier.frontier().is_empty() && control.failed() {
                buffered.clear();
                queue = None;
                return;
            }
            let limit = frontier.frontier().first().copied().unwrap_or(Time::MAX);
            let due: Vec<i64> = buffered
                .keys()
                .copied()
                .filter(|&e| (e + 1).saturating_mul(epoch) <= limit || full.contains(&e))
                .collect();
            for e in due {
                let Some((batches, _)) = buffered.remove(&e) else {
                    continue;
                };
                let part = parts.entry(e).or_insert(0);
                let job = LateEpoch {
                    e,
                    part: *part,
                    batches,
                };
                *part += 1;
                // A closed queue means the writer is gone; its error is recorded.
                if queue.as_ref().is_some_and(|q| q.send(job).is_err()) {
                    queue = None;
                }
            }
            // The writer ends once it has written what it was given.
            if frontier.frontier().is_empty() {
                queue = None;
            }
        });
    }
}
