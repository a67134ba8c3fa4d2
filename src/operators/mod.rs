//! The dataflow's operators, each an extension of timely streams in its own file.
//!
//! Timestamps are event-time watermarks in microseconds ([`Time`]): a message at time `t`
//! carries readings whose watermark is at least `t`, so the frontier of any operator is
//! the watermark below which no more readings can arrive. Windows close when it passes
//! their end; there is no second watermark mechanism beside timely's progress tracking.

pub mod dead_letter;
pub mod key_merge;
pub mod read_chunks;
pub mod registry;
pub mod session_stitch;
pub mod stamp;
pub mod window_merge;
pub mod window_pact;
pub mod window_partial;
pub mod window_rows;
pub mod write_late;
pub mod write_parquet;

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::decode::DecodedChunk;
use crate::window::aggregate::Accumulator;
use crate::window::key::KeyRows;

/// Timely time in the engine's dataflow: an event-time watermark, microseconds.
pub type Time = i64;

/// A chunk as it leaves its source, before its place in the input is known.
#[derive(Debug)]
pub struct SourceChunk {
    /// Position of the chunk in the input.
    pub index: u64,
    /// Its readings and bad lines.
    pub chunk: DecodedChunk,
}

/// What every worker learns about every chunk: enough to know the watermark and line
/// number where any later chunk starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSummary {
    /// Position of the chunk in the input.
    pub index: u64,
    /// Largest event time in it.
    pub max_event_time: Option<i64>,
    /// Lines in it.
    pub lines: u64,
    /// The first worker of the process whose input it belongs to, for an input each
    /// process of a cluster has of its own ([`crate::source::OpenInput::per_process`]);
    /// 0 for one input shared by every process.
    pub origin: usize,
}

/// A chunk whose place in the input is resolved.
#[derive(Debug)]
pub struct StampedChunk {
    /// Position of the chunk in the input.
    pub index: u64,
    /// The watermark where the chunk starts: largest event time of all earlier chunks
    /// minus the allowed out-of-orderness.
    pub watermark: i64,
    /// Its readings.
    pub batch: Batch,
}

/// One closed window's merged state, to be written as one revision of its rows.
///
/// The rows themselves (aggregates finished, sketches serialised, `HAVING`, `SELECT`,
/// Arrow) are computed by the writer thread ([`window_rows`]), not by the worker that
/// merged the state: finishing a window is a large share of a worker's time when groups
/// are many or keep sketches, and on the writer thread it overlaps the next readings.
#[derive(Debug, Clone)]
pub struct ClosedWindow {
    /// Window start, microseconds.
    pub start: i64,
    /// Window end, microseconds.
    pub end: i64,
    /// Which revision of the window's rows this is (0 first).
    pub revision: u32,
    /// Group keys, one row per group.
    pub keys: KeyRows,
    /// One accumulator per aggregate, slot `i` for key row `i`.
    pub accs: Vec<Accumulator>,
}

/// Late readings found in one batch.
#[derive(Debug, Clone)]
pub struct LateRows {
    /// Source columns plus `window_start`, `window_end` and `watermark`.
    pub batch: RecordBatch,
}
