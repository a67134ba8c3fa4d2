//! Computes each closed window's rows and commits them as one Parquet file, then moves
//! the revision it replaces out of the result table; all on a writer thread.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::window_rows::window_rows;
use super::{ClosedWindow, Time};
use crate::engine::control::{Control, Metrics};
use crate::query::QueryPlan;
use crate::sink::{CommittedFile, Layout, Superseded, commit_encoded, result_schema};
use crate::stream::Continuation;

/// Called with every committed file (the sync journal listens here).
pub type OnCommit = Arc<dyn Fn(&CommittedFile) + Send + Sync>;

/// Called when a result file was replaced by a newer revision and moved locally.
pub type OnSupersede = Arc<dyn Fn(&Superseded) + Send + Sync>;

/// Called with `(from, into)` when compaction replaced the file `from` by the compacted
/// file `into` (paths relative to the output root). It answers whether `from` may be
/// deleted: `false` while the replacement could not be recorded (the sync journal's
/// disk is full), so the file stays until a later pass records it.
pub type OnCompact = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// Where a run's committed and superseded files are reported.
#[derive(Clone)]
pub struct Notify {
    /// Every committed file.
    pub commit: OnCommit,
    /// Every superseded revision.
    pub supersede: OnSupersede,
    /// Every file compaction replaced ([`crate::sink::compaction`]); see [`OnCompact`].
    pub compacted: OnCompact,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            commit: Arc::new(|_| {}),
            supersede: Arc::new(|_| {}),
            compacted: Arc::new(|_, _| true),
        }
    }
}

/// Moves revision `revision - 1` of the window at `start` to the revisions folder, once
/// `revision` is durable: the result table then holds each window once.
fn supersede_previous(
    layout: &Layout,
    start: i64,
    revision: u32,
) -> std::io::Result<Option<Superseded>> {
    let Some(previous) = revision.checked_sub(1) else {
        return Ok(None);
    };
    let moved = Superseded {
        from: layout.window_file(start, previous),
        to: layout.superseded_file(start, previous),
    };
    let from = layout.absolute(&moved.from);
    let to = layout.absolute(&moved.to);
    // Gone already: moved by a run that failed after it, or deleted by retention once
    // uploaded; sync still converges the target.
    if from.exists() {
        crate::sink::commit::move_durably(&from, &to)?;
    }
    Ok(Some(moved))
}

/// Windows handed to a writer thread and not yet taken: enough to keep the writer busy
/// while the worker merges the next window, few enough to bound memory.
const QUEUED_WINDOWS: usize = 2;

/// The writer threads of a run, joined before the run counts as done.
pub type Writers = Arc<std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>>;

/// Starts the writer thread `name` running `work`, joined with `writers`; whether it
/// started (if not, the failure is recorded in `control`).
pub fn start_writer(
    name: String,
    writers: &Writers,
    control: &Control,
    work: impl FnOnce() + Send + 'static,
) -> bool {
    match std::thread::Builder::new().name(name.clone()).spawn(work) {
        Ok(handle) => {
            if let Ok(mut w) = writers.lock() {
                w.push(handle);
            }
            true
        }
        Err(e) => {
            control.fail(crate::Error::Internal(format!("starting {name}: {e}")));
            false
        }
    }
}

/// Everything a writer thread needs to commit windows.
struct WindowWriter {
    plan: Arc<QueryPlan>,
    schema: SchemaRef,
    layout: Layout,
    unique: Option<String>,
    stream: Arc<Continuation>,
    notify: Notify,
    control: Arc<Control>,
    metrics: Arc<Metrics>,
    /// Windows this run writes at revisions moved past a killed run's files, and by
    /// how many ([`WindowWriter::clear_of_leftovers`]).
    moved: HashMap<i64, u32>,
}

impl WindowWriter {
    /// The window's rows as revision `revision` and the values that overflowed, or
    /// `None` once the failure is recorded.
    fn rows(&self, window: &ClosedWindow, revision: u32) -> Option<(RecordBatch, u64)> {
        let rows = window_rows(
            &self.plan,
            &self.schema,
            window.start,
            window.end,
            &window.keys,
            &window.accs,
            revision,
        );
        match rows {
            Ok(rows) => Some((rows.batch, rows.overflows)),
            Err(e) => {
                self.control
                    .fail(crate::Error::Internal(format!("window rows: {e}")));
                None
            }
        }
    }

    /// `batch` encoded as the file at `relative`, or `None` once the failure is recorded.
    fn encode(&self, batch: &RecordBatch, relative: &str) -> Option<Vec<u8>> {
        let unique = self.unique.as_deref();
        match crate::sink::parquet::encode(batch, unique.as_slice()) {
            Ok(bytes) => Some(bytes),
            Err(source) => {
                let path = self.layout.absolute(relative);
                self.control
                    .fail(crate::sink::SinkError::Parquet { path, source }.into());
                None
            }
        }
    }

    /// Where a window whose first write in this run is revision `revision`, encoded as
    /// `bytes`, must go instead, if anywhere: past the files a killed run left for it
    /// when they hold other bytes (a sketch's bytes depend on the worker count and the
    /// order of merges), because a name once written never gets other bytes: the
    /// target may already hold it. Later writes of the window in this run keep the
    /// same distance.
    fn clear_of_leftovers(&mut self, start: i64, revision: u32, bytes: &[u8]) -> Option<u32> {
        let layout = &self.layout;
        let leftover = |r: u32| {
            [
                layout.window_file(start, r),
                layout.superseded_file(start, r),
            ]
            .into_iter()
            .map(|relative| layout.absolute(&relative))
            .find(|path| path.exists())
        };
        let found = leftover(revision)?;
        if std::fs::read(&found).is_ok_and(|old| old == bytes) {
            return None;
        }
        let mut last = revision;
        while leftover(last + 1).is_some() {
            last += 1;
        }
        self.moved.insert(start, last + 1 - revision);
        tracing::info!(
            file = %found.display(),
            revision = last + 1,
            "A window written by a run that did not finish differs now: written as the next revision"
        );
        Some(last + 1)
    }

    /// Computes one window's rows and commits them, then moves the revision they replace.
    fn write(&mut self, window: &ClosedWindow) {
        let moved = self.moved.get(&window.start).copied();
        let mut revision = window.revision + moved.unwrap_or(0);
        let Some((mut batch, overflows)) = self.rows(window, revision) else {
            return;
        };
        Metrics::add(&self.metrics.overflows, overflows);
        if batch.num_rows() == 0 && window.revision == 0 {
            return;
        }
        let mut relative = self.layout.window_file(window.start, revision);
        let Some(mut bytes) = self.encode(&batch, &relative) else {
            return;
        };
        if moved.is_none()
            && let Some(clear) = self.clear_of_leftovers(window.start, revision, &bytes)
        {
            revision = clear;
            relative = self.layout.window_file(window.start, revision);
            let Some((again, _)) = self.rows(window, revision) else {
                return;
            };
            batch = again;
            let Some(again) = self.encode(&batch, &relative) else {
                return;
            };
            bytes = again;
        }
        let (layout, metrics) = (&self.layout, &self.metrics);
        let file = commit_encoded(layout, relative, &bytes, batch.num_rows(), || {
            metrics.window_durable(window.start)
        });
        let file = match file {
            Ok(file) => file,
            Err(e) => return self.control.fail(e.into()),
        };
        Metrics::add(&metrics.rows, file.rows);
        Metrics::add(&metrics.files, 1);
        Metrics::add(&metrics.bytes_written, file.bytes);
        (self.notify.commit)(&file);
        self.stream.wrote(window.start, revision);
        // Written past a killed run's files, the window also moves those of them still in
        // the result table, and its own earlier revision if this run wrote it there.
        let lowest = window.revision.saturating_sub(1);
        for older in (lowest..revision.saturating_sub(1)).rev() {
            if layout
                .absolute(&layout.window_file(window.start, older))
                .exists()
            {
                self.supersede(window.start, older + 1);
            }
        }
        self.supersede(window.start, revision);
    }

    /// Moves revision `revision - 1` of the window at `start` out of the result table.
    fn supersede(&self, start: i64, revision: u32) {
        match supersede_previous(&self.layout, start, revision) {
            Ok(Some(moved)) => {
                Metrics::add(&self.metrics.superseded, 1);
                (self.notify.supersede)(&moved);
            }
            Ok(None) => {}
            Err(source) => self.control.fail(
                crate::sink::SinkError::Io {
                    path: self
                        .layout
                        .absolute(&self.layout.window_file(start, revision.saturating_sub(1))),
                    source,
                }
                .into(),
            ),
        }
    }
}

/// Writes closed windows.
pub trait WriteParquet {
    /// Writes each window as `<query>/date=../hour=../window-<start>-r<revision>.parquet`
    /// on a thread of its own (registered in `writers`), so computing its rows, encoding
    /// and fsync never stall this worker's part of the dataflow; windows are committed
    /// in the order they close.
    #[allow(clippy::too_many_arguments)]
    fn write_parquet(
        self,
        plan: Arc<QueryPlan>,
        layout: Layout,
        unique: Option<String>,
        stream: Arc<Continuation>,
        notify: Notify,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
        writers: Writers,
    );
}

impl WriteParquet for StreamVec<'_, Time, ClosedWindow> {
    fn write_parquet(
        self,
        plan: Arc<QueryPlan>,
        layout: Layout,
        unique: Option<String>,
        stream: Arc<Continuation>,
        notify: Notify,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
        writers: Writers,
    ) {
        let writer = WindowWriter {
            schema: result_schema(&plan),
            plan,
            layout,
            unique,
            stream,
            notify,
            control: control.clone(),
            metrics,
            moved: HashMap::new(),
        };
        let (queue, windows) = std::sync::mpsc::sync_channel::<ClosedWindow>(QUEUED_WINDOWS);
        let name = format!("edgeflow-writer-{}", self.scope().index());
        let started = start_writer(name, &writers, &control, move || {
            let mut writer = writer;
            for window in windows {
                writer.write(&window);
            }
        });
        let mut queue = started.then_some(queue);
        self.sink(Pipeline, "WriteParquet", move |(input, frontier)| {
            input.for_each_stamp(|_cap, data| {
                for windows in data {
                    for window in windows.drain(..) {
                        // A closed queue means the writer is gone; its error is recorded.
                        if queue.as_ref().is_some_and(|q| q.send(window).is_err()) {
                            queue = None;
                        }
                    }
                }
            });
            // The writer drains what it has and ends once the input does.
            if frontier.frontier().is_empty() {
                queue = None;
            }
        });
    }
}
