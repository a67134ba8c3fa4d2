//! Runs a query over an input on timely workers and reports what happened.

pub mod control;
mod dataflow;
mod summary;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use summary::{RunSummary, peak_rss_bytes, quantile};

use self::control::{Control, Metrics};
use self::dataflow::Shared;
use crate::Error;
use crate::operators::write_parquet::{Notify, OnCommit, OnSupersede};
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
            control: Arc::new(Control::default()),
            fresh: false,
        }
    }
}

/// Creates the output root if needed and checks that files can be written in it.
pub fn ensure_writable(root: &std::path::Path) -> Result<(), Error> {
    let fail = |source: std::io::Error| Error::Output {
        path: root.to_owned(),
        source,
    };
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

/// Moves the late files whose names `retire` picks to `<query>_late_revisions/` (and so
/// in the bucket): their rows are being computed again and must not count twice.
fn retire_late_files(
    layout: &Layout,
    on_supersede: Option<&OnSupersede>,
    retire: impl Fn(&str) -> bool,
) -> Result<(), Error> {
    let fail = |source: std::io::Error| Error::Output {
        path: layout.late_dir(),
        source,
    };
    let late = format!("{}_late", layout.query());
    for path in commit::files_under(&layout.late_dir()).map_err(fail)? {
        let Some(relative) = path
            .strip_prefix(layout.root())
            .ok()
            .and_then(|p| p.to_str())
            .map(str::to_owned)
        else {
            continue;
        };
        let Some(rest) = relative.strip_prefix(&late) else {
            continue;
        };
        if !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(&retire)
        {
            continue;
        }
        let moved = crate::sink::Superseded {
            to: format!("{late}_revisions{rest}"),
            from: relative,
        };
        commit::move_durably(&path, &layout.absolute(&moved.to)).map_err(fail)?;
        if let Some(notify) = on_supersede {
            notify(&moved);
        }
    }
    Ok(())
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
/// continuation of the stream kept in the output folder.
pub fn run(config: RunConfig) -> Result<RunSummary, Error> {
    let started = Instant::now();
    let workers = config.workers.max(1);
    let plan = Arc::new(config.plan);
    let mut state = if config.fresh {
        let mut state =
            StreamState::load(&config.output, &plan).unwrap_or_else(|_| StreamState::new(&plan));
        if !state.open.is_empty() || !state.inputs.is_empty() {
            tracing::warn!(
                query = %plan.name,
                open_windows = state.open.len(),
                consumed_inputs = state.inputs.len(),
                "--fresh: forgetting the open windows, consumed inputs and watermark kept in the output folder; windows written again become new revisions"
            );
        }
        state.forget(&plan);
        state
    } else {
        StreamState::load(&config.output, &plan)?
    };
    let layout = Layout::new(&config.output, &plan.name, workers, state.runs);
    prepare_output(&layout)?;
    if config.fresh {
        retire_late_files(&layout, config.on_supersede.as_ref(), |_| true)?;
    } else {
        // Late files of this run number come from an attempt that died before it saved
        // the stream state. This attempt redoes that input: with the same worker count
        // it writes the same files again; with another, its files have other names, so
        // the dead attempt's ones must go or their rows would count twice.
        let run = format!("-n{}-", state.runs);
        let (whole, part) = (format!("of{workers}.parquet"), format!("of{workers}-p"));
        retire_late_files(&layout, config.on_supersede.as_ref(), |name| {
            name.contains(&run) && !name.ends_with(&whole) && !name.contains(&part)
        })?;
    }
    let (position, lines_before) = match consumed::start_at(&config.input, &state.inputs) {
        StartAt::Beginning => (0, 0),
        StartAt::Resume { position, lines } => {
            tracing::info!(input = %config.input.describe(), position, "Resuming the input where an earlier run stopped");
            (position, lines)
        }
        StartAt::Done { .. } => {
            let mut summary = RunSummary::collect(
                &plan,
                &config.input,
                &layout,
                workers,
                &Metrics::default(),
                started.elapsed(),
            );
            summary.already_consumed = true;
            return Ok(summary);
        }
    };
    let limits = source::SourceLimits {
        chunk_bytes: config.chunk_bytes,
        max_line_bytes: config.max_line_bytes,
    };
    let input = source::open(&config.input, &plan.source, limits, position)?;
    let control = config.control.clone();
    let metrics = Arc::new(Metrics::default());
    let progress = match input.total_bytes() {
        Some(total) if config.progress => Some(progress_bar(total, metrics.clone())),
        _ => None,
    };
    let stream = Arc::new(Continuation::of(&state));
    let writers: crate::operators::write_parquet::Writers = Arc::default();
    let notify = Notify {
        commit: config.on_commit.unwrap_or_else(|| Arc::new(|_| {})),
        supersede: config.on_supersede.unwrap_or_else(|| Arc::new(|_| {})),
    };
    let shared = Shared {
        plan: plan.clone(),
        input: input.clone(),
        layout: layout.clone(),
        notify,
        stream: stream.clone(),
        first_line: input.line_base() + lines_before,
        input_name: config.input.describe(),
        control: control.clone(),
        metrics: metrics.clone(),
        writers: writers.clone(),
    };
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let shared = shared.clone();
        worker.dataflow::<crate::operators::Time, _, _>(|scope| dataflow::build(scope, &shared));
    })
    .map_err(|e| Error::Internal(format!("starting workers: {e}")))?;
    let results = guards.join();
    // Every result file is committed before the run counts as done.
    let handles = writers
        .lock()
        .map(|mut w| std::mem::take(&mut *w))
        .unwrap_or_default();
    for handle in handles {
        if handle.join().is_err() {
            control.fail(Error::Internal("a result writer panicked".into()));
        }
    }
    if let Some((done, handle)) = progress {
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        handle.join().ok();
    }
    for result in results {
        if let Err(e) = result {
            return Err(Error::Internal(format!("a worker failed: {e}")));
        }
    }
    if let Some(error) = control.take_error() {
        // The state stays as the last good run left it: the next run redoes this one.
        return Err(error);
    }
    let cut = control.cut_at();
    let end = input.position_after(cut);
    consumed::record(
        &mut state.inputs,
        &config.input,
        end,
        lines_before + control.lines_read(),
        cut.is_none(),
    );
    state.advance(&stream, control.max_event_time());
    state.save(&config.output, &plan.name)?;
    Metrics::add(&metrics.kept_windows, state.open.len() as u64);
    let mut summary = RunSummary::collect(
        &plan,
        &config.input,
        &layout,
        workers,
        &metrics,
        started.elapsed(),
    );
    summary.resumed_at = (position > 0).then_some(position);
    summary.interrupted_by = control.interrupted_by();
    Ok(summary)
}
