//! `edgeflow run QUERY.sql`: run a query over an input to its end.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use edgeflow::decode::Format;
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
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
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
    tracing::info!(query = %args.query.display(), input = %config.input.describe(), workers, "Run started");
    // The output folder is checked before sync opens its journal there, so an unusable
    // folder is reported as such.
    engine::ensure_writable(&args.output)?;
    let syncer = match args.sync.config()? {
        Some(mut sync) => {
            sync.own_logs = logs.as_ref().map(|l| l.prefix.clone());
            Some(Syncer::start(&args.output, sync, false)?)
        }
        None => None,
    };
    if let Some(syncer) = &syncer {
        config.on_commit = Some(syncer.on_commit());
        config.pause = Some(syncer.pause_check());
    }
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
    Ok(result?)
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
