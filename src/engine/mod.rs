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
use crate::operators::write_parquet::OnCommit;
use crate::query::QueryPlan;
use crate::sink::{Layout, commit};
use crate::source::{self, DEFAULT_CHUNK_BYTES, Input};

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
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Told about every committed file.
    pub on_commit: Option<OnCommit>,
    /// Sources wait while this says so.
    pub pause: Option<control::PauseCheck>,
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
            progress: false,
            on_commit: None,
            pause: None,
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
    let probe = root.join(format!(".edgeflow-write-check-{}", std::process::id()));
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
    for dir in [layout.results_dir(), layout.late_dir()] {
        let removed = commit::remove_stale(&dir).map_err(fail)?;
        if removed > 0 {
            tracing::info!(dir = %dir.display(), removed, "Removed files left half-written by an earlier run");
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

/// Runs the query to the end of its input.
pub fn run(config: RunConfig) -> Result<RunSummary, Error> {
    let started = Instant::now();
    let workers = config.workers.max(1);
    let plan = Arc::new(config.plan);
    let layout = Layout::new(&config.output, &plan.name, workers);
    prepare_output(&layout)?;
    let input = source::open(&config.input, &plan.source, config.chunk_bytes.max(1))?;
    let control = Arc::new(Control::with_pause(config.pause.clone()));
    let metrics = Arc::new(Metrics::default());
    let progress = match input.total_bytes() {
        Some(total) if config.progress => Some(progress_bar(total, metrics.clone())),
        _ => None,
    };
    let shared = Shared {
        plan: plan.clone(),
        input,
        layout: layout.clone(),
        on_commit: config.on_commit.unwrap_or_else(|| Arc::new(|_| {})),
        input_name: config.input.describe(),
        control: control.clone(),
        metrics: metrics.clone(),
    };
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let shared = shared.clone();
        worker.dataflow::<crate::operators::Time, _, _>(|scope| dataflow::build(scope, &shared));
    })
    .map_err(|e| Error::Internal(format!("starting workers: {e}")))?;
    let results = guards.join();
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
        return Err(error);
    }
    Ok(RunSummary::collect(
        &plan,
        &config.input,
        &layout,
        workers,
        &metrics,
        started.elapsed(),
    ))
}
