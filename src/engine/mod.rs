//! Runs a query over an input on timely workers and reports what happened.

pub mod control;
mod dataflow;
mod pool;
mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use pool::Workers;
pub use summary::{RunSummary, peak_rss_bytes};

use self::control::{Control, EndOfInput, Metrics};
use self::dataflow::Shared;
use crate::Error;
use crate::operators::write_parquet::{Notify, OnCommit, OnCompact, OnSupersede};
use crate::query::QueryPlan;
use crate::sink::{Layout, commit};
use crate::source::{self, DEFAULT_CHUNK_BYTES, Input};
use crate::stream::input::{self as consumed, StartAt};
use crate::stream::{Continuation, StreamState};

/// How to run a query.
#[derive(Clone)]
pub struct RunConfig {
    /// The query.
    pub plan: QueryPlan,
    /// The readings.
    pub input: Input,
    /// Output root.
    pub output: PathBuf,
    /// Timely worker threads.
    pub workers: usize,
    /// Input chunk size in bytes (default [`DEFAULT_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
    /// Longest line read; a longer one is a dead letter (default
    /// [`crate::decode::DEFAULT_MAX_LINE_BYTES`], 1 MiB).
    pub max_line_bytes: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Told about every committed file.
    pub on_commit: Option<OnCommit>,
    /// Told about every result file moved out by a newer revision.
    pub on_supersede: Option<OnSupersede>,
    /// Told about every file compaction replaced.
    pub on_compact: Option<OnCompact>,
    /// Compact each closed hour's files into one when a run (or a node's checkpoint)
    /// ends ([`crate::sink::compaction`]). On by default (`--no-compaction` turns it off).
    pub compaction: bool,
    /// With [`RunConfig::compaction`]: an input already consumed still gets a pass, to
    /// finish one a crash cut short (on by default). A run over many files asks it of
    /// its first only: each pass lists every hour folder.
    pub compaction_when_consumed: bool,
    /// The run's control: pause hook, graceful interrupt ([`Control::interrupt`]).
    pub control: Arc<Control>,
    /// Forget what earlier runs on the output folder left (open windows, consumed
    /// inputs, watermark) and compute from scratch; windows written again become new
    /// revisions.
    pub fresh: bool,
}

impl RunConfig {
    /// A run of `plan` over `input` into `output` on one worker.
    pub fn new(plan: QueryPlan, input: Input, output: PathBuf) -> Self {
        RunConfig {
            plan,
            input,
            output,
            workers: 1,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            max_line_bytes: crate::decode::DEFAULT_MAX_LINE_BYTES,
            progress: false,
            on_commit: None,
            on_supersede: None,
            on_compact: None,
            compaction: true,
            compaction_when_consumed: true,
            control: Arc::new(Control::default()),
            fresh: false,
        }
    }
}

/// Where the run of `config` reports its files (nowhere, for what it leaves unset).
fn notify_of(config: &RunConfig) -> Notify {
    let defaults = Notify::default();
    Notify {
        commit: config.on_commit.clone().unwrap_or(defaults.commit),
        supersede: config.on_supersede.clone().unwrap_or(defaults.supersede),
        compacted: config.on_compact.clone().unwrap_or(defaults.compacted),
    }
}

/// Compacts the hours of the query's result and late tables that no reading can change
/// any more. A failure is logged, never fatal: the files stay as they are, readable,
/// and the next pass tries again.
fn compact(config: &RunConfig, plan: &QueryPlan, state: &StreamState, notify: &Notify) {
    let Some(max) = state.max_event_time else {
        return;
    };
    if config.on_compact.is_none()
        && crate::sync::journal::Journal::path_for(&config.output).exists()
    {
        // The folder was synced before and this run does not sync: deleting files the
        // bucket holds without journaling it would leave them there, next to the hour
        // file, for every reader that does not know the rule. A synced run compacts.
        tracing::info!(query = %plan.name, "Compaction left to a run that syncs this folder");
        return;
    }
    let watermark = max.saturating_sub(plan.source.max_out_of_orderness);
    let before = crate::sink::compaction::closed_before(plan, watermark);
    let tables = [plan.name.clone(), format!("{}_late", plan.name)];
    match crate::sink::compaction::compact_closed_hours(&config.output, &tables, before, notify) {
        Ok(report) if report.written > 0 => {
            tracing::info!(query = %plan.name, files = report.written, replaced = report.replaced, "Closed hours compacted");
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(query = %plan.name, error = %e, "Compaction failed; the files stay as they are")
        }
    }
}

/// Creates the output root if needed and checks that files can be written in it.
pub fn ensure_writable(root: &std::path::Path) -> Result<(), Error> {
    let fail = |source: std::io::Error| Error::Output {
        path: root.to_owned(),
        source,
    };
    if root.exists() && !root.is_dir() {
        return Err(fail(std::io::Error::other(
            "it is a file; --output names a folder",
        )));
    }
    std::fs::create_dir_all(root).map_err(fail)?;
    // Unique per call: queries of one node check the same root at the same time.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let probe = root.join(format!(
        ".edgeflow-write-check-{}-{}",
        std::process::id(),
        PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&probe, b"").map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

/// Makes sure the output root exists and is writable, and clears half-written files of
/// a crashed run.
fn prepare_output(layout: &Layout) -> Result<(), Error> {
    ensure_writable(layout.root())?;
    let fail = |source: std::io::Error| Error::Output {
        path: layout.root().to_owned(),
        source,
    };
    for dir in [
        layout.results_dir(),
        layout.late_dir(),
        layout.revisions_dir(),
    ] {
        let removed = commit::remove_stale(&dir).map_err(fail)?;
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "Removed files left half-written by an earlier run");
        }
    }
    Ok(())
}

/// The run number in the name of a late file (`late-<epoch>-n<run>-w<i>of<n>...`) or a
/// dead-letter file (`deadletters-n<run>-<part>.jsonl`).
fn run_in_name(name: &str) -> Option<u64> {
    name.split('-')
        .find_map(|part| part.strip_prefix('n')?.parse().ok())
}

/// Moves the late files whose names `retire` picks to `<query>_late_revisions/` (and so
/// in the bucket): their rows are being computed again and must not count twice.
/// Returns the largest run number among the files moved.
fn retire_late_files(
    layout: &Layout,
    on_supersede: Option<&OnSupersede>,
    retire: impl Fn(&str) -> bool,
) -> Result<Option<u64>, Error> {
    let fail = |source: std::io::Error| Error::Output {
        path: layout.late_dir(),
        source,
    };
    let files = commit::files_under(&layout.late_dir()).map_err(fail)?;
    let late = format!("{}_late", layout.query());
    let revisions = format!("{late}_revisions");
    retire_files(layout, on_supersede, files, retire, |relative| {
        relative
            .strip_prefix(&late)
            .map(|rest| format!("{revisions}{rest}"))
    })
}

/// Moves the dead-letter files whose names `retire` picks to
/// `_deadletter/<query>/superseded/` (and so in the bucket): their lines are being read
/// again and would be reported twice.
fn retire_dead_letters(
    layout: &Layout,
    on_supersede: Option<&OnSupersede>,
    retire: impl Fn(&str) -> bool,
) -> Result<Option<u64>, Error> {
    let dir = layout.dead_letter_dir();
    let fail = |source: std::io::Error| Error::Output {
        path: dir.clone(),
        source,
    };
    let files = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(fail)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(fail(e)),
    };
    let files = files
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    retire_files(layout, on_supersede, files, retire, |relative| {
        let (folder, name) = relative.rsplit_once('/')?;
        Some(format!("{folder}/superseded/{name}"))
    })
}

/// Moves each of `files` whose name `retire` picks to the relative path `moved_to`
/// gives, durably, and tells sync; returns the largest run number among them.
fn retire_files(
    layout: &Layout,
    on_supersede: Option<&OnSupersede>,
    files: Vec<std::path::PathBuf>,
    retire: impl Fn(&str) -> bool,
    moved_to: impl Fn(&str) -> Option<String>,
) -> Result<Option<u64>, Error> {
    let mut last = None;
    for path in files {
        let fail = |source: std::io::Error| Error::Output {
            path: path.clone(),
            source,
        };
        let Some(relative) = path
            .strip_prefix(layout.root())
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| retire(n))
        else {
            continue;
        };
        let Some(to) = moved_to(&relative) else {
            continue;
        };
        last = last.max(run_in_name(name).or(Some(0)));
        let moved = crate::sink::Superseded { to, from: relative };
        commit::move_durably(&path, &layout.absolute(&moved.to)).map_err(fail)?;
        if let Some(notify) = on_supersede {
            notify(&moved);
        }
    }
    Ok(last)
}

fn progress_bar(
    total: u64,
    metrics: Arc<Metrics>,
) -> (
    Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use indicatif::{ProgressBar, ProgressStyle};
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let handle = std::thread::spawn(move || {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style);
        }
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            bar.set_position(Metrics::get(&metrics.input_bytes));
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    });
    (done, handle)
}

/// Runs the query to the end of its input (or until [`Control::interrupt`]), as the
/// continuation of the stream kept in the output folder, on workers of its own.
pub fn run(config: RunConfig) -> Result<RunSummary, Error> {
    let workers = Workers::start(config.workers)?;
    let result = start(config, &workers).and_then(RunningQuery::wait);
    if !workers.shutdown() && result.is_ok() {
        return Err(Error::Internal("a worker failed".into()));
    }
    result
}

/// Places a live query in its table's write-ahead log: after a crash (the state says
/// it was running) it replays what its state does not reflect; a query stopped on
/// purpose, or new, reads from the chunk being filled. The position is saved before the
/// first chunk, so a crash from here on replays from it.
fn begin_live(
    live: &source::live::LiveInput,
    state: &mut StreamState,
    output: &std::path::Path,
    plan: &QueryPlan,
) -> Result<(), Error> {
    let query = plan.name.as_str();
    let resume = state
        .live
        .as_ref()
        .filter(|p| p.running && p.table == live.table())
        .map(|p| p.next);
    // A peer may not have committed the last checkpoint this process did: the records
    // since the one before stay in the log until the next one.
    let keep = match state.cluster {
        Some(_) => StreamState::previous_live(output, &plan.name)?
            .filter(|p| p.table == live.table())
            .map(|p| p.next),
        None => None,
    };
    let next = live.begin_keeping(resume, keep);
    if resume.is_some() {
        // Every leg after a checkpoint starts here, crash or not: at info level it read
        // as a recovery once a second. A recovery says so when the log is read back.
        tracing::debug!(
            query,
            table = live.table(),
            from = next,
            "Reading the table's write-ahead log from the query's last checkpoint"
        );
    }
    state.live = Some(crate::stream::LivePosition {
        table: live.table().to_owned(),
        next,
        running: true,
    });
    state.save(output, query)?;
    Ok(())
}

/// A query whose dataflow runs on a [`Workers`] pool.
pub struct RunningQuery {
    started: Instant,
    config: RunConfig,
    plan: Arc<QueryPlan>,
    state: StreamState,
    layout: Layout,
    position: u64,
    lines_before: u64,
    input: Option<Arc<dyn source::OpenInput>>,
    peers: usize,
    stream: Arc<Continuation>,
    metrics: Arc<Metrics>,
    writers: crate::operators::write_parquet::Writers,
    progress: Option<(
        Arc<std::sync::atomic::AtomicBool>,
        std::thread::JoinHandle<()>,
    )>,
    job: Option<Arc<pool::Job>>,
    /// Set when the input was consumed by earlier runs: nothing runs.
    consumed: Option<RunSummary>,
}

/// Prepares the query's stream (state, output folder, input position) and builds its
/// dataflow on `workers`.
pub fn start(config: RunConfig, workers: &Workers) -> Result<RunningQuery, Error> {
    let started = Instant::now();
    let peers = workers.peers();
    let plan = Arc::new(config.plan.clone());
    let mut state = if config.fresh {
        let mut state = StreamState::load_for_fresh(&config.output, &plan);
        if !state.open.is_empty() || !state.inputs.is_empty() {
            tracing::warn!(
                query = %plan.name,
                open_windows = state.open.len(),
                consumed_inputs = state.inputs.len(),
                "--fresh: forgetting the open windows, consumed inputs and watermark kept in the output folder; windows written again become new revisions"
            );
        }
        state.forget(&plan);
        StreamState::forget_previous(&config.output, &plan.name)?;
        crate::registry::History::forget(&config.output, &plan.name).map_err(|source| {
            Error::Output {
                path: crate::registry::History::path(&config.output, &plan.name),
                source,
            }
        })?;
        state
    } else {
        StreamState::load(&config.output, &plan)?
    };
    let shape = workers.cluster_shape();
    if state.cluster != shape && state.runs > 0 && !config.fresh {
        let describe = |shape: Option<crate::stream::ClusterShape>| {
            shape.map_or_else(|| "a single process".to_owned(), |s| s.to_string())
        };
        return Err(crate::cluster::ClusterError::Shape {
            folder: config.output.clone(),
            was: describe(state.cluster),
            now: describe(shape),
        }
        .into());
    }
    state.cluster = shape;
    let mut layout = Layout::new(&config.output, &plan.name, peers, state.runs);
    prepare_output(&layout)?;
    if config.fresh {
        // The input is read again: its late rows and bad lines would count twice.
        retire_late_files(&layout, config.on_supersede.as_ref(), |_| true)?;
        retire_dead_letters(&layout, config.on_supersede.as_ref(), |_| true)?;
    } else {
        // Late and dead-letter files numbered from the state's run count on come from
        // attempts that died before they saved the stream state. This attempt redoes
        // their input, but not in the same pieces (a checkpoint ends a leg when its timer
        // says, and an epoch cut short by a leg's end is written as it stands), so their
        // rows are moved aside and this attempt takes a number none of them used.
        let dead = |name: &str| run_in_name(name).is_some_and(|run| run >= state.runs);
        let on_supersede = config.on_supersede.as_ref();
        let late = retire_late_files(&layout, on_supersede, dead)?;
        let letters = retire_dead_letters(&layout, on_supersede, dead)?;
        if let Some(last) = late.max(letters) {
            tracing::info!(query = %plan.name, run = last, "Late and dead-letter files of an attempt that died before its checkpoint moved aside; its input is done again");
            state.runs = last + 1;
            state.save(&config.output, &plan.name)?;
            layout = Layout::new(&config.output, &plan.name, peers, state.runs);
        }
    }
    if config.compaction && state.cluster.is_some() {
        // The hello found every process at this state: the last run is committed
        // everywhere, and its closed hours can be compacted.
        compact(&config, &plan, &state, &notify_of(&config));
    }
    let metrics = Arc::new(Metrics::default());
    let (position, lines_before) = match consumed::start_at(&config.input, &state.inputs) {
        StartAt::Beginning => (0, 0),
        StartAt::Resume { position, lines } => {
            tracing::info!(input = %config.input.describe(), position, "Resuming the input where an earlier run stopped");
            (position, lines)
        }
        // A checkpoint at the very end of the input kept windows it did not write: this
        // run reads nothing and writes them.
        StartAt::Done { position, lines } if state.open.iter().any(|w| w.unwritten) => {
            (position, lines)
        }
        StartAt::Done { .. } => {
            // Nothing to read; but a pass cut short by a crash (the run that consumed
            // the input died compacting) is finished, or its hours would keep their
            // originals next to the hour file until new input came.
            if config.compaction && config.compaction_when_consumed && state.cluster.is_none() {
                compact(&config, &plan, &state, &notify_of(&config));
            }
            let mut summary = RunSummary::collect(
                &plan,
                &config.input,
                &layout,
                peers,
                &metrics,
                started.elapsed(),
            );
            summary.already_consumed = true;
            return Ok(RunningQuery {
                started,
                plan,
                state,
                layout,
                position: 0,
                lines_before: 0,
                input: None,
                peers,
                stream: Arc::default(),
                metrics,
                writers: Arc::default(),
                progress: None,
                job: None,
                consumed: Some(summary),
                config,
            });
        }
    };
    if let Input::Live(live) = &config.input {
        begin_live(live, &mut state, &config.output, &plan)?;
    }
    let limits = source::SourceLimits {
        chunk_bytes: config.chunk_bytes,
        max_line_bytes: config.max_line_bytes,
    };
    // A registry that cannot be read refuses the start: there is no version to join with.
    let registry = plan
        .join
        .as_ref()
        .map(|join| crate::registry::Registry::open(&join.table, join.key).map(Arc::new))
        .transpose()
        .map_err(Error::Registry)?;
    let input = source::open(&config.input, &plan.source, limits, position)?;
    let progress = match input.total_bytes() {
        Some(total) if config.progress => Some(progress_bar(total, metrics.clone())),
        _ => None,
    };
    let stream = Arc::new(Continuation::of(&state, &plan));
    let writers: crate::operators::write_parquet::Writers = Arc::default();
    let notify = notify_of(&config);
    let shared = Shared {
        plan: plan.clone(),
        input: input.clone(),
        layout: layout.clone(),
        notify,
        stream: stream.clone(),
        first_line: input.line_base() + lines_before,
        input_name: config.input.describe(),
        control: config.control.clone(),
        metrics: metrics.clone(),
        writers: writers.clone(),
        registry,
        first_worker: workers.first(),
        local_workers: workers.local(),
    };
    let job = workers.build(shared)?;
    Ok(RunningQuery {
        started,
        plan,
        state,
        layout,
        position,
        lines_before,
        input: Some(input),
        peers,
        stream,
        metrics,
        writers,
        progress,
        job: Some(job),
        consumed: None,
        config,
    })
}

impl RunningQuery {
    /// The run's counters, live.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The run's control.
    pub fn control(&self) -> &Arc<Control> {
        &self.config.control
    }

    /// Whether the dataflow has completed (the run can be waited for without blocking).
    pub fn is_finished(&self) -> bool {
        self.job.as_ref().is_none_or(|j| j.is_finished())
    }

    /// Largest event time of the stream so far, this run's and earlier runs'.
    pub fn max_event_time(&self) -> Option<i64> {
        self.config
            .control
            .max_event_time()
            .max(self.state.max_event_time)
    }

    /// The query's plan.
    pub fn plan(&self) -> &QueryPlan {
        &self.plan
    }

    /// Waits for the dataflow to complete, then commits the run: every result file is
    /// durable, the stream state saved, the summary made.
    pub fn wait(self) -> Result<RunSummary, Error> {
        let RunningQuery {
            started,
            config,
            plan,
            mut state,
            layout,
            position,
            lines_before,
            input,
            peers,
            stream,
            metrics,
            writers,
            progress,
            job,
            consumed,
        } = self;
        let (Some(input), None) = (input, consumed.as_ref()) else {
            return consumed.ok_or_else(|| Error::Internal("a run without input".into()));
        };
        let control = config.control.clone();
        if !job.is_none_or(|j| j.wait()) {
            // The other workers and the writers they feed never finish: commit nothing.
            control.fail(Error::Internal("a worker panicked".into()));
            return Err(Error::Internal("a worker panicked (see the log)".into()));
        }
        // Every result file is committed before the run counts as done. The windows
        // kept for the next run are final once the workers are: packing them (as long as
        // the last files take, for a big window of sketches) overlaps the writers.
        let handles = writers
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        std::thread::scope(|scope| {
            scope.spawn(|| stream.prepack_kept());
            for handle in handles {
                if handle.join().is_err() {
                    control.fail(Error::Internal("a result writer panicked".into()));
                }
            }
        });
        if let Some((done, handle)) = progress {
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            handle.join().ok();
        }
        if let Some(error) = control.take_error() {
            // The state stays as the last good run left it: the next run redoes this one.
            return Err(error);
        }
        let cut = control.cut_at();
        let end = input.position_after(cut);
        // A process of a cluster reads a share of the input; what it records is the
        // whole input's, which every worker learns from the chunks' summaries (of a
        // live input, which each process has of its own, its own input's).
        let (lines, max_event_time) = if state.cluster.is_some() {
            control.stream_prefix()
        } else {
            (control.lines_read(), control.max_event_time())
        };
        consumed::record(
            &mut state.inputs,
            &config.input,
            consumed::Consumed {
                position: end,
                lines: lines_before + lines,
                complete: cut.is_none(),
                max_event_time: state.max_event_time.max(max_event_time),
            },
        );
        state.advance(&stream, max_event_time);
        // The processes of a cluster compare what they consumed before they start: each
        // keeps every entry, whatever its own disk still holds.
        if let (Some(latest), None) = (state.max_event_time, state.cluster) {
            consumed::forget_gone(&mut state.inputs, plan.settled_through(latest));
        }
        if control.end_of_input() == EndOfInput::Close {
            state.close_written(plan.window.file_span(), plan.source.max_out_of_orderness);
        }
        let live = match &config.input {
            Input::Live(live) => Some(live.clone()),
            _ => None,
        };
        // Where this leg began: a cluster process keeps the log from there, in case a
        // peer did not commit this leg and this process goes back to its start.
        let leg_start = state.live.as_ref().map(|p| p.next);
        if let Some(live) = &live {
            state.live = Some(crate::stream::LivePosition {
                table: live.table().to_owned(),
                next: live.position(),
                running: control.end_of_input() == EndOfInput::Checkpoint,
            });
        }
        if state.cluster.is_some() {
            state.save_keeping_previous(&config.output, &plan.name)?;
        } else {
            state.save(&config.output, &plan.name)?;
        }
        if let Some(live) = &live {
            let keep = match leg_start {
                Some(start) if state.cluster.is_some() => start,
                _ => live.position(),
            };
            live.checkpointed(keep);
        }
        // A cluster process compacts at its next start instead, once every peer is known
        // to have committed this run too (a process one commit ahead goes back, and what
        // it compacted could not).
        if config.compaction && state.cluster.is_none() {
            compact(&config, &plan, &state, &notify_of(&config));
        }
        // Kept windows the watermark has passed are closed ones kept for corrections.
        let watermark = state.max_event_time.map_or(i64::MIN, |m| {
            m.saturating_sub(plan.source.max_out_of_orderness)
        });
        let windows = state.open.iter().filter(|w| w.correction.is_none());
        let (closed, open): (Vec<_>, Vec<_>) = windows.partition(|w| w.end <= watermark);
        Metrics::add(&metrics.kept_windows, open.len() as u64);
        Metrics::add(&metrics.correctable_windows, closed.len() as u64);
        let mut summary = RunSummary::collect(
            &plan,
            &config.input,
            &layout,
            peers,
            &metrics,
            started.elapsed(),
        );
        summary.resumed_at = (position > 0).then_some(position);
        summary.interrupted_by = control.interrupted_by();
        if state.cluster.is_some_and(|c| c.process != 0) {
            // Worker 0 writes every dead letter: in a cluster, process 0.
            summary.dead_letters = format!("process 0's _deadletter/{}", plan.name).into();
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::run_in_name;

    #[test]
    fn the_run_number_is_read_from_late_file_names() {
        assert_eq!(
            run_in_name("late-20260101T002400Z-n10-w0of2.parquet"),
            Some(10)
        );
        assert_eq!(
            run_in_name("late-20260101T002400Z-n3-w1of4-p2.parquet"),
            Some(3)
        );
        assert_eq!(run_in_name("late-1767225600000000-w0of2.parquet"), None);
        assert_eq!(run_in_name("deadletters-n7-0.jsonl"), Some(7));
    }
}
