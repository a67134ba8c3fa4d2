//! Sources: where readings come from, cut into numbered chunks.
//!
//! Every input is a sequence of chunks `0, 1, 2, ...` in input order; worker `w` of `n`
//! takes chunks `w, w + n, w + 2n, ...`. Interleaving keeps workers at the same point of
//! event time (the frontier is the slowest worker's watermark, so a worker that ran ahead
//! would only pile up open windows), and chunk numbers let every worker reconstruct the
//! input order, which is what makes lateness and line numbers independent of the number
//! of workers.

pub mod baselines;
mod file;
pub mod generator;
pub mod http_poll;
pub mod http_push;
pub mod idempotency;
pub mod live;
pub mod mqtt;
pub mod records;
pub mod redelivery;
mod stdin;
pub mod wal;

use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::Interner;
use crate::decode::{
    CsvHeaderError, DEFAULT_MAX_LINE_BYTES, DecodedChunk, Format, LONG_LINE_RAW_BYTES,
    line_too_long,
};
use crate::query::SourceSchema;

pub use file::FileInput;
pub use generator::{GeneratorConfig, GeneratorInput};
pub use stdin::StdinInput;

/// Default chunk size: large enough to amortise per-chunk work, small enough that every
/// worker gets many chunks of a modest file.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// Bounds on what one source holds in memory, whatever the input looks like.
///
/// A chunk never grows beyond `chunk_bytes + max_line_bytes` (plus one read block), and a
/// line longer than `max_line_bytes` is skipped in one forward scan and becomes a dead
/// letter holding its length and first KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceLimits {
    /// Input bytes per chunk, the unit of work dealt to workers (default
    /// [`DEFAULT_CHUNK_BYTES`], 1 MiB).
    pub chunk_bytes: usize,
    /// Longest line, not counting its `\n` (default [`DEFAULT_MAX_LINE_BYTES`], 1 MiB).
    pub max_line_bytes: usize,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

impl SourceLimits {
    /// Zero sizes would make no progress; they are taken as 1.
    pub(crate) fn sane(self) -> Self {
        SourceLimits {
            chunk_bytes: self.chunk_bytes.max(1),
            max_line_bytes: self.max_line_bytes.max(1),
        }
    }
}

/// How a thread that deals chunks to the workers wakes each worker's source operator:
/// one slot per worker, filled when the worker's operator hands its activator over.
#[derive(Clone, Default)]
pub(crate) struct Wakers(Arc<std::sync::Mutex<Vec<Option<timely::scheduling::SyncActivator>>>>);

impl Wakers {
    /// Makes room for `workers` slots.
    pub(crate) fn resize(&self, workers: usize) {
        if let Ok(mut slots) = self.0.lock() {
            slots.resize_with(workers, || None);
        }
    }

    /// Worker `worker`'s operator can be woken with `activator`.
    pub(crate) fn set(&self, worker: usize, activator: timely::scheduling::SyncActivator) {
        if let Ok(mut slots) = self.0.lock()
            && let Some(slot) = slots.get_mut(worker)
        {
            *slot = Some(activator);
        }
    }

    /// Wakes worker `worker`'s operator (once it has said how).
    pub(crate) fn wake(&self, worker: usize) {
        if let Ok(slots) = self.0.lock()
            && let Some(Some(a)) = slots.get(worker)
        {
            a.activate().ok();
        }
    }

    /// Wakes every worker: the input ended.
    pub(crate) fn wake_all(&self) {
        let workers = self.0.lock().map(|s| s.len()).unwrap_or(0);
        for worker in 0..workers {
            self.wake(worker);
        }
    }
}

/// Bytes read at a time when scanning past a long line.
const SCAN_BLOCK: usize = 64 * 1024;

/// A line over the limit, skipped: what its dead letter needs and nothing more.
#[derive(Debug)]
struct LongLine {
    /// Its first [`LONG_LINE_RAW_BYTES`].
    head: Vec<u8>,
    /// Its length without the `\n`.
    len: u64,
    /// Whether its last byte (so far) is a `\r`: once its end is found, whether it
    /// ended in `\r\n`.
    cr: bool,
}

impl LongLine {
    fn new(line: &[u8]) -> Self {
        LongLine {
            head: line[..line.len().min(LONG_LINE_RAW_BYTES)].to_vec(),
            len: line.len() as u64,
            cr: line.ends_with(b"\r"),
        }
    }

    /// Counts `more` of the line, read after what it has.
    fn extend(&mut self, more: &[u8]) {
        self.len += more.len() as u64;
        if let Some(&last) = more.last() {
            self.cr = last == b'\r';
        }
    }

    /// Adds the line to the end of a decoded chunk, as its last line.
    fn append_to(self, chunk: &mut DecodedChunk, limit: usize) {
        chunk.bad.push(line_too_long(
            chunk.lines,
            self.len,
            limit,
            &self.head,
            self.cr,
        ));
        chunk.lines += 1;
    }
}

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
    /// Readings that arrive while the node runs, from a live connector.
    Live(Arc<live::LiveInput>),
}

impl Input {
    /// A short description for summaries and dead letters.
    pub fn describe(&self) -> String {
        match self {
            Input::File { path, .. } => path.display().to_string(),
            Input::Stdin { .. } => "-".into(),
            Input::Generator(_) => "generator".into(),
            Input::Live(live) => live.describe(),
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
    /// A CSV header line longer than the line limit.
    #[error("{}: CSV header longer than {limit} bytes", path.display())]
    HeaderTooLong {
        /// The input.
        path: PathBuf,
        /// The line limit.
        limit: usize,
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

/// Which part of a live source's traffic this process of a cluster receives: each
/// process polls its own share of the devices and holds its own MQTT session, in the
/// broker's shared subscription, so every reading arrives at exactly one process (and
/// the dataflow brings it to its key's owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessShare {
    /// This process, `0..processes`.
    pub process: usize,
    /// Processes in the cluster (1 outside a cluster).
    pub processes: usize,
}

impl Default for ProcessShare {
    fn default() -> Self {
        ProcessShare {
            process: 0,
            processes: 1,
        }
    }
}

impl ProcessShare {
    /// Whether this process polls the device `id`: by a hash of the id that every
    /// process computes alike (the one that places keys on workers), so the split does
    /// not depend on the order of a devices file.
    pub fn polls(&self, id: &str) -> bool {
        use std::hash::BuildHasher;
        self.processes <= 1
            || crate::window::key::owner_hasher().hash_one(id) % self.processes as u64
                == self.process as u64
    }

    /// The MQTT client id and topic filters of this process: in a cluster each process
    /// is its own client (a broker drops a client whose id connects again) in one
    /// shared subscription per topic (`$share/<client id>/<topic>`), over which the
    /// broker hands each message to one of them.
    pub fn mqtt(&self, client_id: String, topics: &[String]) -> (String, Vec<String>) {
        if self.processes <= 1 {
            return (client_id, topics.to_vec());
        }
        let shared = topics
            .iter()
            .map(|t| format!("$share/{client_id}/{t}"))
            .collect();
        (format!("{client_id}-p{}", self.process), shared)
    }
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
    /// Whether each process of a cluster reads an input of its own (a live table's
    /// log, in its own output folder), dealt to its own workers and stamped with its
    /// own watermark, rather than a share of one input every process sees.
    fn per_process(&self) -> bool {
        false
    }
}

/// Opens an input for a schema within `limits`, from `position` on (a byte offset for
/// files, a reading count for the generator; ignored for stdin), as an earlier run on
/// the same output folder left it.
pub fn open(
    input: &Input,
    schema: &SourceSchema,
    limits: SourceLimits,
    position: u64,
) -> Result<Arc<dyn OpenInput>, SourceError> {
    let limits = limits.sane();
    Ok(match input {
        Input::File { path, format } => {
            Arc::new(FileInput::open(path, *format, schema, limits, position)?)
        }
        Input::Stdin { format } => Arc::new(StdinInput::open(*format, schema, limits)?),
        Input::Generator(config) => Arc::new(GeneratorInput::new(
            config.clone(),
            schema,
            limits.chunk_bytes,
            position,
        )?),
        Input::Live(live) => live.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::ProcessShare;

    #[test]
    fn every_device_is_polled_by_exactly_one_process_of_a_cluster() {
        for processes in 1..=4 {
            let shares: Vec<ProcessShare> = (0..processes)
                .map(|process| ProcessShare { process, processes })
                .collect();
            let mut counts = vec![0usize; processes];
            for id in (0..1000).map(|i| format!("dev-{i:06}")) {
                let polling: Vec<usize> =
                    (0..processes).filter(|&p| shares[p].polls(&id)).collect();
                assert_eq!(
                    polling.len(),
                    1,
                    "{id} at {processes} processes: {polling:?}"
                );
                counts[polling[0]] += 1;
            }
            // A hash, not a range: each process gets about its share.
            assert!(counts.iter().all(|&c| c * processes > 800), "{counts:?}");
        }
    }

    #[test]
    fn cluster_processes_are_distinct_mqtt_clients_in_one_shared_subscription() {
        let topics = vec!["devices/+/traffic".to_owned()];
        let alone = ProcessShare::default().mqtt("edge".into(), &topics);
        assert_eq!(alone, ("edge".to_owned(), topics.clone()));
        let second = ProcessShare {
            process: 1,
            processes: 2,
        }
        .mqtt("edge".into(), &topics);
        assert_eq!(
            second,
            (
                "edge-p1".to_owned(),
                vec!["$share/edge/devices/+/traffic".to_owned()]
            )
        );
    }
}
