//! What workers share while a run goes: counters for the summary, and the first fatal
//! error, which stops the sources so the dataflow drains and the run ends cleanly.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Integer sums that overflowed (written as NULL).
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
}

impl Metrics {
    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
        let closed = self
            .closing
            .lock()
            .ok()
            .and_then(|c| c.get(&start).copied());
        if let (Some(closed), Ok(mut samples)) = (closed, self.close_to_durable.lock()) {
            samples.push(closed.elapsed());
        }
    }
}

/// Asked by the sources before each chunk: while it says yes, they wait (sync's
/// backpressure quota uses it).
pub type PauseCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// The run's shared stop switch, pause hook and first fatal error.
#[derive(Default)]
pub struct Control {
    stop: AtomicBool,
    fatal: Mutex<Option<Error>>,
    pause: Option<PauseCheck>,
    paused_once: AtomicBool,
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
        let paused = self.pause.as_ref().is_some_and(|p| p());
        if paused && !self.paused_once.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "Sources paused: files waiting for upload fill the local quota (--max-pending-bytes); reading resumes as uploads make room"
            );
        }
        paused
    }

    /// Records a fatal error (the first one wins) and stops the sources.
    pub fn fail(&self, error: Error) {
        if let Ok(mut f) = self.fatal.lock()
            && f.is_none()
        {
            *f = Some(error);
        }
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Asks the sources to stop reading.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Whether sources should stop.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Takes the fatal error, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }
}
