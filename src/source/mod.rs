//! Sources: where readings come from, cut into numbered chunks.
//!
//! Every input is a sequence of chunks `0, 1, 2, ...` in input order; worker `w` of `n`
//! takes chunks `w, w + n, w + 2n, ...`. Interleaving keeps workers at the same point of
//! event time (the frontier is the slowest worker's watermark, so a worker that ran ahead
//! would only pile up open windows), and chunk numbers let every worker reconstruct the
//! input order, which is what makes lateness and line numbers independent of the number
//! of workers.

mod file;
pub mod generator;
mod stdin;

use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::Interner;
use crate::decode::{CsvHeaderError, DecodedChunk, Format};
use crate::query::SourceSchema;

pub use file::FileInput;
pub use generator::{GeneratorConfig, GeneratorInput};
pub use stdin::StdinInput;

/// Default chunk size: large enough to amortise per-chunk work, small enough that every
/// worker gets many chunks of a modest file.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// What to read.
#[derive(Clone, Debug)]
pub enum Input {
    /// A file of JSON lines or CSV.
    File {
        /// Path.
        path: PathBuf,
        /// Format.
        format: Format,
    },
    /// Standard input.
    Stdin {
        /// Format.
        format: Format,
    },
    /// Synthetic readings.
    Generator(GeneratorConfig),
}

impl Input {
    /// A short description for summaries and dead letters.
    pub fn describe(&self) -> String {
        match self {
            Input::File { path, .. } => path.display().to_string(),
            Input::Stdin { .. } => "-".into(),
            Input::Generator(_) => "generator".into(),
        }
    }
}

/// A source that failed to open or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The input could not be opened.
    #[error("cannot open input {}: {source}", path.display())]
    Open {
        /// The input.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Reading failed part way.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The input.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A CSV header that does not name the declared columns.
    #[error("{}: {source}", path.display())]
    CsvHeader {
        /// The input.
        path: PathBuf,
        /// Why.
        source: CsvHeaderError,
    },
    /// A declared column the generator cannot fill.
    #[error("{0}")]
    Generator(String),
}

/// What a worker's source has next.
#[derive(Debug)]
pub enum SourcePoll {
    /// Chunk `index`, decoded.
    Chunk(u64, DecodedChunk),
    /// Nothing now; the source will activate the operator when there is.
    Pending,
    /// No more chunks for this worker.
    Done,
}

/// One worker's share of an input.
pub trait ChunkSource {
    /// The next chunk for this worker.
    fn poll(&mut self, interner: &mut Interner) -> Result<SourcePoll, SourceError>;

    /// Lets the source wake the operator when data arrives from another thread.
    fn set_activator(&mut self, _activator: timely::scheduling::SyncActivator) {}
}

/// An input opened once per run and shared by all workers.
pub trait OpenInput: Send + Sync {
    /// The source for worker `worker` of `peers`.
    fn worker_source(&self, worker: usize, peers: usize) -> Box<dyn ChunkSource>;
    /// Line number of the first data line (2 for CSV, after the header).
    fn line_base(&self) -> u64;
    /// Total input bytes when known in advance (files), for progress.
    fn total_bytes(&self) -> Option<u64>;
    /// The input position (bytes for files, readings for the generator) after its first
    /// `chunks` chunks, or after all of it for `None`: where the next run resumes.
    fn position_after(&self, chunks: Option<u64>) -> u64;
}

/// Opens an input for a schema, from `position` on (a byte offset for files, a reading
/// count for the generator; ignored for stdin), as an earlier run left it.
pub fn open(
    input: &Input,
    schema: &SourceSchema,
    chunk_bytes: usize,
    position: u64,
) -> Result<Arc<dyn OpenInput>, SourceError> {
    Ok(match input {
        Input::File { path, format } => Arc::new(FileInput::open(
            path,
            *format,
            schema,
            chunk_bytes,
            position,
        )?),
        Input::Stdin { format } => Arc::new(StdinInput::open(*format, schema, chunk_bytes)?),
        Input::Generator(config) => Arc::new(GeneratorInput::new(
            config.clone(),
            schema,
            chunk_bytes,
            position,
        )?),
    })
}
