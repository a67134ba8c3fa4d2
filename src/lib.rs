//! # edgeflow
//!
//! An edge stream-processing engine: device readings in, event-time window aggregates out
//! as Parquet, synced to object storage.
//!
//! ## The path of one reading
//!
//! 1. A [`source`] cuts the input (a file, stdin, or the built-in [`source::generator`])
//!    into numbered chunks; chunk `k` goes to worker `k % workers`, so workers move
//!    through event time together.
//! 2. [`decode`] turns a chunk of JSON lines or CSV into a columnar [`batch::Batch`],
//!    interning text as it goes. A bad line becomes a dead letter, never a panic.
//! 3. [`operators::stamp`] learns the largest event time of every earlier chunk (from all
//!    workers) and stamps the batch with the watermark in force where it starts, so which
//!    readings are late is the same for any number of workers.
//! 4. [`operators::window_partial`] applies `WHERE`, assigns windows ([`window::assign`]),
//!    sends late readings to the `late` side output and folds the rest into per-worker
//!    window state ([`window::state`]). When the timely frontier passes a window's end,
//!    the worker's partial aggregates travel to the worker that owns each key.
//! 5. [`operators::window_merge`] merges partials, computes the `SELECT` list and hands
//!    sorted rows to [`operators::write_parquet`], which commits one Parquet file per
//!    window and worker ([`sink`]).
//!
//! The plan every stage reads comes from a query file ([`query`]); [`engine`] wires the
//! dataflow and runs it on timely workers.
//!
//! [`devices`] simulates a fleet of devices to poll or to receive readings from, for
//! demos, tests and benchmarks.

pub mod batch;
pub mod bench;
pub mod cluster;
pub mod decode;
pub mod devices;
pub mod digest;
pub mod engine;
pub mod error;
pub mod eval;
pub mod fault;
pub mod jsonl_format;
pub mod lock;
pub mod operators;
#[cfg(feature = "sql")]
pub mod outputs;
pub mod query;
pub mod registry;
pub mod serve;
pub mod sink;
pub mod size;
pub mod source;
pub mod stats;
pub mod stream;
pub mod sync;
pub mod time;
pub mod types;
pub mod window;
pub mod wiring;

pub use error::Error;
