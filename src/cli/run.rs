//! `edgeflow run QUERY.sql`: run a query over an input to its end.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use edgeflow::decode::Format;
use edgeflow::engine::control::Control;
use edgeflow::engine::{self, RunConfig};
use edgeflow::source::{DEFAULT_CHUNK_BYTES, Input};
use edgeflow::sync::Syncer;

use super::logging::FileLogs;
use super::sync::SyncFlags;
use super::{GenFormat, GeneratorArgs, default_output, is_dash};

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The query file.
    pub query: PathBuf,
    /// Input file, or `-` for standard input. Without it, readings come from the
    /// built-in generator (see the generator options).
    #[arg(long, short)]
    pub input: Option<PathBuf>,
    /// Input format (default: from the file extension; JSON lines otherwise).
    #[arg(long, value_enum)]
    pub format: Option<GenFormat>,
    /// Output root; the query's results go to `<output>/<query name>/`.
    #[arg(long, short, default_value_os_t = default_output())]
    pub output: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long, short)]
    pub workers: Option<usize>,
    /// Input chunk size in bytes: the unit of work dealt to workers.
    #[arg(long, default_value_t = DEFAULT_CHUNK_BYTES, hide_short_help = true)]
    pub chunk_bytes: usize,
    /// Longest input line read (e.g. 1MiB, 64KiB); a longer line is a dead letter
    /// holding its first KiB, skipped in one pass.
    #[arg(long, default_value = "1MiB", value_parser = parse_line_limit)]
    pub max_line_bytes: u64,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Forget what earlier runs left in the output folder for this query (open windows,
    /// consumed inputs, watermark) and compute from scratch; windows written again
    /// become new revisions.
    #[arg(long)]
    pub fresh: bool,
    /// Sync settings.
    #[command(flatten)]
    pub sync: SyncFlags,
    /// Generator settings, used when there is no `--input`.
    #[command(flatten)]
    pub generator: GeneratorArgs,
}

/// Runs `run`; `logs` are this process's log files, closed and shipped after the
/// results.
pub fn run(args: &RunArgs, logs: Option<FileLogs>) -> anyhow::Result<()> {
    let plan = edgeflow::query::load(&args.query)?;
    let input = match &args.input {
        Some(path) if is_dash(path) => Input::Stdin {
            format: args.format.map_or(Format::Jsonl, Format::from),
        },
        Some(path) => Input::File {
            path: path.clone(),
            format: args
                .format
                .map_or_else(|| Format::from_path(path), Format::from),
        },
        None => Input::Generator(args.generator.config().map_err(anyhow::Error::msg)?),
    };
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    let mut config = RunConfig::new(plan, input, args.output.clone());
    config.workers = workers;
    config.chunk_bytes = args.chunk_bytes.max(4096);
    config.progress = std::io::stderr().is_terminal();
    config.fresh = args.fresh;
    config.max_line_bytes = usize::try_from(args.max_line_bytes).unwrap_or(usize::MAX);
    tracing::info!(query = %args.query.display(), input = %config.input.describe(), workers, "Run started");
    // The output folder is checked before sync opens its journal there, so an unusable
    // folder is reported as such.
    engine::ensure_writable(&args.output)?;
    // One writer per output folder, held until the run and its sync are done.
    let _lock = edgeflow::lock::OutputLock::acquire(&args.output).map_err(edgeflow::Error::from)?;
    let syncer = match args.sync.config()? {
        Some(mut sync) => {
            sync.own_logs = logs.as_ref().map(|l| l.prefix.clone());
            Some(Syncer::start(&args.output, sync, false)?)
        }
        None => None,
    };
    let control = Arc::new(Control::with_pause(
        syncer.as_ref().map(|syncer| syncer.pause_check()),
    ));
    if let Some(syncer) = &syncer {
        config.on_commit = Some(syncer.on_commit());
        config.on_supersede = Some(syncer.on_supersede());
    }
    config.control = control.clone();
    interrupt_on_signals(control);
    let mut summary = engine::run(config)?;
    tracing::info!(
        query = %summary.query,
        readings = summary.readings,
        bad = summary.bad,
        late = summary.late,
        rows = summary.rows,
        files = summary.files,
        elapsed_s = summary.elapsed.as_secs_f64(),
        "Run finished"
    );
    let mut result = Ok(());
    if let Some(syncer) = syncer {
        let (report, outcome) = syncer.finish(args.sync.sync_timeout, move || drop(logs));
        summary.sync = Some(report);
        result = outcome;
    }
    print_summary(&summary, args.json)?;
    result?;
    match summary.interrupted_by {
        Some(signal) => Err(Interrupted(signal).into()),
        None => Ok(()),
    }
}

fn parse_line_limit(text: &str) -> Result<u64, String> {
    match super::sync::parse_bytes(text) {
        Ok(0) => Err("the line limit must be at least 1 byte".into()),
        other => other,
    }
}

/// A run ended early by a signal, after writing what it had as the end of input would:
/// exits with 128 + the signal's number, as shells expect.
#[derive(Debug, thiserror::Error)]
#[error(
    "stopped by signal {0}; open windows were written and kept, and the next run on this output folder resumes the input"
)]
pub struct Interrupted(pub i32);

/// On SIGINT or SIGTERM, ends the input gracefully: open windows are written and kept,
/// the input position saved.
fn interrupt_on_signals(control: Arc<Control>) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            loop {
                let number = tokio::select! {
                    _ = int.recv() => 2,
                    _ = term.recv() => 15,
                };
                tracing::warn!(
                    signal = number,
                    "Stopping: writing open windows and keeping them for the next run"
                );
                control.interrupt(number);
            }
        });
    });
}

fn print_summary(summary: &engine::RunSummary, json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, summary)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{summary}")?;
    }
    Ok(())
}
