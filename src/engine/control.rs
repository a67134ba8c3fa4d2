//! What workers share while a run goes: counters for the summary, and the first fatal
//! error, which stops the sources so the dataflow drains and the run ends cleanly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::scheduling::SyncActivator;

use crate::Error;

/// Counters every worker adds to.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Readings decoded.
    pub readings: AtomicU64,
    /// Bad lines.
    pub bad: AtomicU64,
    /// Late (reading, window) rows written to the late output.
    pub late: AtomicU64,
    /// (reading, window) pairs taken within the allowed lateness, as corrections.
    pub corrections: AtomicU64,
    /// Readings dropped by `WHERE`.
    pub filtered: AtomicU64,
    /// Result rows written.
    pub rows: AtomicU64,
    /// Files committed.
    pub files: AtomicU64,
    /// Bytes of committed files.
    pub bytes_written: AtomicU64,
    /// Input bytes read.
    pub input_bytes: AtomicU64,
    /// Windows written while still open and kept for the next run.
    pub kept_windows: AtomicU64,
    /// Closed windows kept for corrections within the allowed lateness.
    pub correctable_windows: AtomicU64,
    /// Readings whose device has no registry row, dropped by an `INNER` join.
    pub registry_unmatched: AtomicU64,
    /// Rows in the registry version in force.
    pub registry_rows: AtomicU64,
    /// Registry reloads that found the file changed and took it.
    pub registry_reloads: AtomicU64,
    /// Rows inserted or retracted by those reloads.
    pub registry_changes: AtomicU64,
    /// Registry reloads refused for a malformed row.
    pub registry_errors: AtomicU64,
    /// Result files of older revisions moved to `<query>_revisions/`.
    pub superseded: AtomicU64,
    /// Sums and averages whose final value overflowed (integer sums past `BIGINT`,
    /// `DOUBLE` sums that ended infinite), written as NULL.
    pub overflows: AtomicU64,
    /// Largest number of open (window, key) groups seen on one worker.
    pub peak_groups: AtomicU64,
    /// State bytes on that worker at that moment.
    pub peak_state_bytes: AtomicU64,
    /// Distinct windows closed.
    pub windows: Mutex<BTreeSet<i64>>,
    /// When the watermark first passed each window's end, by window start.
    closing: Mutex<HashMap<i64, Instant>>,
    /// From a window's close to its result file being durable, one sample per file.
    pub close_to_durable: Mutex<Vec<Duration>>,
    /// Each worker's open windows, groups and state bytes now.
    state: Mutex<BTreeMap<usize, OpenState>>,
    /// Each worker's sessions (`SESSION` windows) and their state bytes now.
    sessions: Mutex<BTreeMap<usize, OpenState>>,
    /// State kept by an earlier run (or checkpoint) waiting at each window's owner for
    /// the window to close.
    resumed: Mutex<BTreeMap<usize, OpenState>>,
}

/// What is open on the workers now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OpenState {
    /// Windows with open groups (the largest count on any worker: windows span workers).
    pub windows: u64,
    /// Open (window, key) groups, over every worker.
    pub keys: u64,
    /// Bytes of aggregate state, over every worker.
    pub bytes: u64,
}

impl Metrics {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Sets a gauge.
    pub fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Records a state sample; keeps the one with the most open groups.
    pub fn sample_state(&self, groups: u64, bytes: u64) {
        if groups > self.peak_groups.fetch_max(groups, Ordering::Relaxed) {
            self.peak_state_bytes.store(bytes, Ordering::Relaxed);
        }
    }

    /// Records what is open on `worker` now.
    pub fn state_now(&self, worker: usize, windows: u64, keys: u64, bytes: u64) {
        if let Ok(mut state) = self.state.lock() {
            state.insert(
                worker,
                OpenState {
                    windows,
                    keys,
                    bytes,
                },
            );
        }
    }

    /// Records the sessions held on `worker` now (a session is an open group).
    pub fn sessions_now(&self, worker: usize, sessions: u64, bytes: u64) {
        if let Ok(mut held) = self.sessions.lock() {
            held.insert(
                worker,
                OpenState {
                    windows: 0,
                    keys: sessions,
                    bytes,
                },
            );
        }
    }

    /// Records the kept state waiting at `worker`'s windows now.
    pub fn resumed_now(&self, worker: usize, resumed: OpenState) {
        if let Ok(mut held) = self.resumed.lock() {
            held.insert(worker, resumed);
        }
    }

    /// What is open on the workers now: windows (panes, for `SESSION`), sessions, and the
    /// state kept by the run before (a key with kept state and new readings counts in
    /// both, as it is held twice until its window closes).
    pub fn open_state(&self) -> OpenState {
        // Windows span workers: the most any worker holds; groups and bytes add up.
        let fold = |map: &Mutex<BTreeMap<usize, OpenState>>| {
            map.lock().map_or(OpenState::default(), |m| {
                m.values().fold(OpenState::default(), |all, w| OpenState {
                    windows: all.windows.max(w.windows),
                    keys: all.keys + w.keys,
                    bytes: all.bytes + w.bytes,
                })
            })
        };
        let (windows, sessions, resumed) =
            (fold(&self.state), fold(&self.sessions), fold(&self.resumed));
        OpenState {
            windows: windows.windows.max(resumed.windows),
            keys: windows.keys + sessions.keys + resumed.keys,
            bytes: windows.bytes + sessions.bytes + resumed.bytes,
        }
    }

    /// Records a closed window.
    pub fn window_closed(&self, start: i64) {
        if let Ok(mut w) = self.windows.lock() {
            w.insert(start);
        }
    }

    /// Notes that the watermark has passed the end of the window starting at `start`
    /// (the first worker to see it wins).
    pub fn window_closing(&self, start: i64) {
        if let Ok(mut c) = self.closing.lock() {
            c.entry(start).or_insert_with(Instant::now);
        }
    }

    /// Notes that a result file of the window starting at `start` is durable.
    pub fn window_durable(&self, start: i64) {
        // Taken, not read: a later revision (a correction) is not a window closing, and
        // a node that runs for months must not keep an entry per window.
        let closed = self.closing.lock().ok().and_then(|mut c| c.remove(&start));
        if let (Some(closed), Ok(mut samples)) = (closed, self.close_to_durable.lock()) {
            samples.push(closed.elapsed());
        }
    }
}

/// When an operator refreshes its open-state gauge ([`Metrics::state_now`],
/// [`Metrics::sessions_now`]). Measuring the state walks every slot or key (a sketch by
/// what it holds), so it is done when asked to (after a close, at the end) and
/// otherwise a few times a second, not on every activation.
#[derive(Debug, Default)]
pub struct GaugeClock(Option<Instant>);

impl GaugeClock {
    /// How often the gauge is refreshed between closes.
    const EVERY: Duration = Duration::from_millis(250);

    /// Whether to refresh now; `anyway` forces it.
    pub fn due(&mut self, anyway: bool) -> bool {
        let due = anyway || self.0.is_none_or(|at| at.elapsed() >= Self::EVERY);
        if due {
            self.0 = Some(Instant::now());
        }
        due
    }
}

/// Asked by the sources before each chunk: while it says yes, they wait (sync's
/// backpressure quota uses it).
pub type PauseCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Which chunks the sources have read, and where a graceful stop cuts the input.
///
/// A stop must leave a clean cut: every chunk before it processed, none after it, so
/// the next run resumes exactly there. Readers claim each chunk under this lock and a
/// stop sets the cut under it, so no chunk can slip past a cut made at the same moment.
#[derive(Debug)]
struct Cut {
    /// Chunks `0..read_upto` include every chunk claimed so far.
    read_upto: u64,
    /// Chunks at or after this index are not read.
    stop_at: u64,
}

impl Default for Cut {
    fn default() -> Self {
        Cut {
            read_upto: 0,
            stop_at: u64::MAX,
        }
    }
}

/// What happens to the windows still open when the input ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EndOfInput {
    /// Write them as they stand and keep their state: the next run resumes them and
    /// writes them again as new revisions (the end of every `edgeflow run`).
    #[default]
    Keep,
    /// Write them as final: the stream's watermark moves past them, so a reading for
    /// one of them that comes later is late.
    Close,
    /// Neither write nor keep them: their readings are given up.
    Discard,
    /// Keep their state without writing them (a checkpoint of a query that goes on at
    /// once): the next run resumes them as if nothing had happened.
    Checkpoint,
}

impl std::str::FromStr for EndOfInput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "keep" => Ok(EndOfInput::Keep),
            "close" => Ok(EndOfInput::Close),
            "discard" => Ok(EndOfInput::Discard),
            other => Err(format!(
                "windows={other}: expected close (write open windows as final), keep (write them and resume them at the next start) or discard"
            )),
        }
    }
}

/// The run's shared stop switch, pause hook and first fatal error.
pub struct Control {
    stop: AtomicBool,
    fatal: Mutex<Option<Error>>,
    pause: Option<PauseCheck>,
    paused_once: AtomicBool,
    /// Set by [`Control::drain`].
    draining: AtomicBool,
    cut: Mutex<Cut>,
    interrupted_by: Mutex<Option<i32>>,
    lines: AtomicU64,
    max_event_time: AtomicI64,
    /// Lines in the contiguous prefix of the input every worker has summaries of.
    prefix_lines: AtomicU64,
    /// Largest event time in it (and of earlier runs).
    prefix_max_event_time: AtomicI64,
    end_of_input: Mutex<EndOfInput>,
    /// Set once a worker has seen the whole input: windows flushed after it are open.
    input_ended: AtomicBool,
    /// The readers, woken by a stop: one held back by its backlog is not scheduled
    /// otherwise, and its capabilities would keep the others from draining.
    readers: Mutex<Vec<SyncActivator>>,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            stop: AtomicBool::new(false),
            fatal: Mutex::new(None),
            pause: None,
            paused_once: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            cut: Mutex::new(Cut::default()),
            interrupted_by: Mutex::new(None),
            lines: AtomicU64::new(0),
            max_event_time: AtomicI64::new(i64::MIN),
            prefix_lines: AtomicU64::new(0),
            prefix_max_event_time: AtomicI64::new(i64::MIN),
            end_of_input: Mutex::new(EndOfInput::Keep),
            input_ended: AtomicBool::new(false),
            readers: Mutex::new(Vec::new()),
        }
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("stop", &self.stop)
            .field("pause", &self.pause.is_some())
            .finish_non_exhaustive()
    }
}

impl Control {
    /// A control whose sources wait while `pause` says so.
    pub fn with_pause(pause: Option<PauseCheck>) -> Self {
        Control {
            pause,
            ..Control::default()
        }
    }

    /// Whether sources should wait before reading more; says so in the log the first
    /// time.
    pub fn paused(&self) -> bool {
        if self.draining.load(Ordering::Relaxed) {
            return false;
        }
        let paused = self.pause.as_ref().is_some_and(|p| p());
        if paused && !self.paused_once.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "Sources paused: files waiting for upload fill the local quota (--max-pending-bytes); reading resumes as uploads make room"
            );
        }
        paused
    }

    /// Reads what is left regardless of the quota: a stopping node processes every
    /// reading it accepted, even if that takes the local disk past the quota.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Records a fatal error (the first one wins) and stops the sources.
    pub fn fail(&self, error: Error) {
        if let Ok(mut f) = self.fatal.lock()
            && f.is_none()
        {
            *f = Some(error);
        }
        self.stop();
    }

    /// Asks the sources to stop reading.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Ok(readers) = self.readers.lock() {
            for reader in readers.iter() {
                // A reader whose dataflow has ended needs no waking.
                reader.activate().ok();
            }
        }
    }

    /// Registers a reader to wake when the sources are asked to stop.
    pub fn wake_on_stop(&self, reader: SyncActivator) {
        if let Ok(mut readers) = self.readers.lock() {
            readers.push(reader);
        }
    }

    /// Whether sources should stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether a fatal error has been recorded: work not finished must not be published.
    pub fn failed(&self) -> bool {
        self.fatal.lock().map_or(true, |f| f.is_some())
    }

    /// Ends the input gracefully, as its end would (after `signal`, e.g. SIGINT): sources
    /// stop after the chunks already claimed, so the input is cut cleanly.
    pub fn interrupt(&self, signal: i32) {
        if let Ok(mut by) = self.interrupted_by.lock() {
            by.get_or_insert(signal);
        }
        // A signal during a checkpoint ends the run as a signal does: open windows
        // written and kept.
        if let Ok(mut end) = self.end_of_input.lock()
            && *end == EndOfInput::Checkpoint
        {
            *end = EndOfInput::Keep;
        }
        self.cut_now();
    }

    fn cut_now(&self) {
        if let Ok(mut cut) = self.cut.lock() {
            cut.stop_at = cut.stop_at.min(cut.read_upto);
        }
    }

    /// Ends the run at the chunks already read as a checkpoint: the open windows are
    /// kept as state, not written, and the position saved, so a run that goes on from
    /// there (or after a crash) writes what one uninterrupted run would.
    pub fn checkpoint(&self) {
        // A run that has read all its input ends as it is.
        if self.interrupted_by().is_some() || self.input_ended() {
            return;
        }
        self.set_end_of_input(EndOfInput::Checkpoint);
        self.cut_now();
    }

    /// Whether a source has claimed a chunk of this run's input. A checkpoint before that
    /// would end the run where it began: taken at once, it ends every run there, and one
    /// whose start takes longer than the checkpoint interval never moves.
    pub fn has_claimed(&self) -> bool {
        self.cut.lock().is_ok_and(|c| c.read_upto > 0)
    }

    /// Whether the run ended at a checkpoint (and not at a signal or its input's end).
    pub fn checkpointed(&self) -> bool {
        self.end_of_input() == EndOfInput::Checkpoint && self.cut_at().is_some()
    }

    /// The signal that interrupted the run, if one did.
    pub fn interrupted_by(&self) -> Option<i32> {
        self.interrupted_by.lock().ok().and_then(|s| *s)
    }

    /// A source claims chunk `index` before emitting it; `false` means the input was cut
    /// before it and the source is done.
    pub fn claim_chunk(&self, index: u64) -> bool {
        let Ok(mut cut) = self.cut.lock() else {
            return false;
        };
        if index >= cut.stop_at {
            return false;
        }
        cut.read_upto = cut.read_upto.max(index + 1);
        true
    }

    /// Where the input was cut: `Some(chunks)` when the run stopped after that many
    /// chunks, `None` when it read its input to the end.
    pub fn cut_at(&self) -> Option<u64> {
        self.cut
            .lock()
            .ok()
            .and_then(|c| (c.stop_at != u64::MAX).then_some(c.stop_at))
    }

    /// Notes how far the input's summarised prefix reaches: its lines and largest event
    /// time. Every worker of every process hears every chunk's summary, so this is the
    /// whole input's, also in a cluster where this process read only a share of it.
    pub fn note_prefix(&self, lines: u64, max_event_time: Option<i64>) {
        self.prefix_lines.fetch_max(lines, Ordering::Relaxed);
        if let Some(m) = max_event_time {
            self.prefix_max_event_time.fetch_max(m, Ordering::Relaxed);
        }
    }

    /// Lines and largest event time of the summarised prefix ([`Control::note_prefix`]).
    pub fn stream_prefix(&self) -> (u64, Option<i64>) {
        let m = self.prefix_max_event_time.load(Ordering::Relaxed);
        (
            self.prefix_lines.load(Ordering::Relaxed),
            (m != i64::MIN).then_some(m),
        )
    }

    /// Counts what a claimed chunk holds: lines and largest event time.
    pub fn note_chunk(&self, lines: u64, max_event_time: Option<i64>) {
        self.lines.fetch_add(lines, Ordering::Relaxed);
        if let Some(m) = max_event_time {
            self.max_event_time.fetch_max(m, Ordering::Relaxed);
        }
    }

    /// Lines in the chunks read.
    pub fn lines_read(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// Largest event time in the chunks read.
    pub fn max_event_time(&self) -> Option<i64> {
        let m = self.max_event_time.load(Ordering::Relaxed);
        (m != i64::MIN).then_some(m)
    }

    /// Decides what the end of the input does to the open windows (before it ends).
    pub fn set_end_of_input(&self, end: EndOfInput) {
        if let Ok(mut e) = self.end_of_input.lock() {
            *e = end;
        }
    }

    /// What the end of the input does to the open windows.
    pub fn end_of_input(&self) -> EndOfInput {
        self.end_of_input.lock().map_or(EndOfInput::Keep, |e| *e)
    }

    /// Records that the whole input has been aggregated, before any worker flushes the
    /// windows the watermark has not passed.
    ///
    /// Downstream of the flush the frontier passes those windows one by one as each
    /// worker releases them, well before it is empty; only this mark tells a window
    /// flushed open from one the watermark closed.
    pub fn mark_input_ended(&self) {
        self.input_ended.store(true, Ordering::SeqCst);
    }

    /// Whether [`Control::mark_input_ended`] was called.
    pub fn input_ended(&self) -> bool {
        self.input_ended.load(Ordering::SeqCst)
    }

    /// Takes the fatal error, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }
}
