//! `edgeflow run QUERY.sql [QUERY.sql ...]`: run queries over an input to its end.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use edgeflow::decode::Format;
use edgeflow::engine::control::Control;
use edgeflow::engine::{self, RunConfig};
use edgeflow::query::QueryPlan;
use edgeflow::query::connector::ConnectorKind;
use edgeflow::serve::Tokens;
use edgeflow::source::Input;
use edgeflow::source::live::FsyncPolicy;
use edgeflow::sync::{SyncReport, Syncer};

use super::logging::FileLogs;
use super::serve::{DEFAULT_LISTEN, NodeSettings, run_node};
use super::sync::SyncFlags;
use super::{ClusterArgs, GenFormat, GeneratorArgs, Usage, default_output, is_dash};

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The query files: several run together on one set of workers over the same input.
    #[arg(required = true, value_name = "QUERY")]
    pub queries: Vec<PathBuf>,
    /// Input file, or `-` for standard input. Without it, readings come from the
    /// query's `connector`, or the built-in generator when it names none.
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
    /// Input chunk size (e.g. 1MiB, 256KiB; at least 4KiB): the unit of work dealt to
    /// workers.
    #[arg(long, default_value = "1MiB", value_parser = parse_chunk_bytes, hide_short_help = true)]
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
    /// Leave each window's file as it is: do not compact the files of closed hours into
    /// one per hour when the run (or a checkpoint) ends.
    #[arg(long)]
    pub no_compaction: bool,
    /// With a live source (http_poll, http_push, mqtt, a followed file glob): stop
    /// after this long, as SIGTERM would (e.g. 90s, 2h).
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::cli::duration)]
    pub run_for: Option<Duration>,
    /// How often the run checkpoints (open windows as state, and the input position):
    /// a run killed with SIGKILL, or that crashed, resumes from its last checkpoint when
    /// run again (`--fresh` starts over). With a live source, as for `serve`.
    #[arg(long, default_value = "1m", value_parser = crate::cli::duration)]
    pub checkpoint_every: Duration,
    /// With an http_push source: where to take pushed readings.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Sync settings.
    #[command(flatten)]
    pub sync: SyncFlags,
    /// Cluster settings.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Generator settings, used when there is no `--input`.
    #[command(flatten)]
    pub generator: GeneratorArgs,
}

/// What `run` reads.
#[derive(Debug)]
enum Inputs {
    /// One input, read to its end.
    One(Input),
    /// The files a glob matches, in name order, one after the other (each continues
    /// the stream of the one before); with `follow`, new files and files that grew are
    /// read as they appear, until a signal or `--for`.
    Files {
        pattern: PathBuf,
        format: Option<Format>,
        follow: bool,
        poll: Duration,
    },
}

impl Inputs {
    fn of(args: &RunArgs, plan: &QueryPlan) -> anyhow::Result<Inputs> {
        let format = |path: &std::path::Path| {
            args.format
                .map_or_else(|| Format::from_path(path), Format::from)
        };
        if let Some(path) = &args.input {
            return Ok(Inputs::One(if is_dash(path) {
                Input::Stdin {
                    format: args.format.map_or(Format::Jsonl, Format::from),
                }
            } else {
                Input::File {
                    path: path.clone(),
                    format: format(path),
                }
            }));
        }
        Ok(match &plan.source.connector.kind {
            ConnectorKind::File(spec) => Inputs::Files {
                pattern: spec.path.clone(),
                format: args.format.map(Format::from).or(spec.format),
                follow: spec.follow,
                poll: Duration::from_micros(u64::try_from(spec.poll_interval).unwrap_or(1)),
            },
            ConnectorKind::Stdin(spec) => Inputs::One(Input::Stdin {
                format: args.format.map_or(spec.format, Format::from),
            }),
            ConnectorKind::Generator(spec) => {
                let mut config = args.generator.config().map_err(anyhow::Error::msg)?;
                config.devices = spec.devices;
                config.readings = spec.readings;
                config.rate = spec.rate as f64;
                config.seed = spec.seed;
                Inputs::One(Input::Generator(config))
            }
            _ => Inputs::One(Input::Generator(
                args.generator.config().map_err(anyhow::Error::msg)?,
            )),
        })
    }
}

/// Runs `run`; `logs` are this process's log files, closed and shipped after the
/// results.
pub fn run(args: &RunArgs, logs: Option<FileLogs>) -> anyhow::Result<()> {
    let plans = args
        .queries
        .iter()
        .map(|q| edgeflow::query::load(q))
        .collect::<Result<Vec<_>, _>>()?;
    let mut names = std::collections::HashSet::new();
    if let Some(twice) = plans.iter().find(|p| !names.insert(&p.name)) {
        return Err(Usage(format!(
            "two queries are named `{}`: a query's name is its output folder, so names must differ",
            twice.name
        ))
        .into());
    }
    let is_live = |plan: &QueryPlan| {
        let connector = &plan.source.connector;
        args.input.is_none()
            && connector.is_live()
            && !matches!(connector.kind, ConnectorKind::File(_))
    };
    let live = plans.iter().filter(|p| is_live(p)).count();
    if live > 0 && live < plans.len() {
        return Err(Usage(
            "some of these queries read live sources and some finite inputs: run them apart (`edgeflow serve` for the live ones)".into(),
        )
        .into());
    }
    let cluster = args.cluster.cluster()?;
    if live > 0 {
        // A live source has no end: the queries run as a node (sharing each table's ingest).
        let listen = plans
            .iter()
            .any(|p| matches!(p.source.connector.kind, ConnectorKind::HttpPush(_)))
            .then_some(args.listen);
        let settings = NodeSettings {
            output: args.output.clone(),
            workers: args.workers,
            listen,
            insecure: false,
            tokens: Tokens::default(),
            tls: None,
            http: Default::default(),
            run_for: args.run_for,
            fresh: args.fresh,
            no_compaction: args.no_compaction,
            max_line_bytes: args.max_line_bytes,
            json: args.json,
            sync: args.sync.clone(),
            wal_fsync: FsyncPolicy::Always,
            checkpoint_every: args.checkpoint_every,
            cluster,
        };
        return run_node(plans, &settings, logs);
    }
    // Every query reads the same input; `Debug` shows every setting that decides which
    // readings an input gives.
    let inputs = Inputs::of(args, &plans[0])?;
    for plan in &plans[1..] {
        let other = Inputs::of(args, plan)?;
        if format!("{other:?}") != format!("{inputs:?}") {
            return Err(Usage(format!(
                "`{}` reads {other:?} but `{}` reads {inputs:?}: queries of one run read one input (--input gives them one)",
                plan.name, plans[0].name
            ))
            .into());
        }
    }
    if plans.len() > 1 && matches!(inputs, Inputs::One(Input::Stdin { .. })) {
        return Err(Usage(
            "standard input can be read by one query only: write it to a file and give that to the queries with --input".into(),
        )
        .into());
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 {
        return Err(Usage("--workers must be at least 1".into()).into());
    }
    let hello = match &cluster {
        Some(cluster) => Some(cluster_hello(args, &plans, &inputs, cluster, workers)?),
        None => None,
    };
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
    let signals = match &cluster {
        Some(_) => Signals::install_cluster(),
        None => Signals::install(),
    };
    let deadline = args.run_for.map(|d| Instant::now() + d);
    // One set of workers for every query and every input file: each query is a dataflow
    // of its own on them.
    let pool = match (&cluster, &hello) {
        (Some(cluster), Some(hello)) => {
            start_cluster(cluster, hello, &plans, &args.output, workers, args.fresh)?
        }
        _ => engine::Workers::start(workers)?,
    };
    // `--fresh` starts each query's stream over once, in the first leg: every later leg
    // (after a checkpoint, or over the next file) continues the stream that leg began.
    let fresh = std::cell::Cell::new(args.fresh);
    // The first leg finishes a compaction pass a crash cut short even when its input
    // was consumed; the legs after it (the next files of a glob) need not list the hours
    // again.
    let first_leg = std::cell::Cell::new(true);
    // One leg: every query over `input` until its end, a signal or a checkpoint.
    let leg = |input: &Input| -> anyhow::Result<(Vec<engine::RunSummary>, bool)> {
        let mut running = Vec::new();
        let mut failure = None;
        for plan in &plans {
            let mut config = RunConfig::new(plan.clone(), input.clone(), args.output.clone());
            config.workers = workers;
            config.chunk_bytes = args.chunk_bytes;
            // One bar per terminal: several queries would draw over each other.
            config.progress = plans.len() == 1 && std::io::stderr().is_terminal();
            config.fresh = fresh.get();
            config.compaction = !args.no_compaction;
            config.compaction_when_consumed = first_leg.get();
            config.max_line_bytes = usize::try_from(args.max_line_bytes).unwrap_or(usize::MAX);
            if let Some(syncer) = &syncer {
                edgeflow::wiring::attach_sync(&mut config, &syncer.handle());
            }
            signals.watch(config.control.clone());
            tracing::info!(query = %plan.file.display(), input = %config.input.describe(), workers, "Run started");
            match engine::start(config, &pool) {
                Ok(query) => running.push(query),
                Err(e) => {
                    // The queries already started still finish cleanly, then the run fails.
                    failure = Some(e);
                    break;
                }
            }
        }
        fresh.set(false);
        first_leg.set(false);
        if failure.is_some() {
            for query in &running {
                query.control().interrupt(15);
            }
        }
        // Every `--checkpoint-every` the leg ends at the chunks read, its open windows kept
        // as state: a run killed later resumes from there instead of from its start.
        let controls: Vec<Arc<Control>> = running.iter().map(|q| q.control().clone()).collect();
        let (leg_done, done) = std::sync::mpsc::channel::<()>();
        // Standard input cannot be read again from a position: it runs in one leg.
        // Nor does a cluster: each process would cut the input where its own timer says.
        let every = match input {
            Input::Stdin { .. } => Duration::MAX,
            _ if cluster.is_some() => Duration::MAX,
            _ => args.checkpoint_every,
        };
        let timer = std::thread::spawn({
            let controls = controls.clone();
            move || {
                // Not before every query has read something: a leg must move the input on.
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(every)
                {
                    if controls.iter().all(|c| c.has_claimed()) {
                        for control in &controls {
                            control.checkpoint();
                        }
                        break;
                    }
                }
            }
        });
        let mut summaries = Vec::new();
        for query in running {
            match query.wait() {
                Ok(summary) => {
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
                    summaries.push(summary);
                }
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        drop(leg_done);
        timer.join().ok();
        signals.forget();
        let checkpointed = !controls.is_empty() && controls.iter().all(|c| c.checkpointed());
        match failure {
            Some(e) => Err(e.into()),
            None => Ok((summaries, checkpointed)),
        }
    };
    let run_one = |input: Input| -> anyhow::Result<Vec<engine::RunSummary>> {
        let mut merged: Vec<engine::RunSummary> = Vec::new();
        loop {
            let (summaries, checkpointed) = leg(&input)?;
            merged = if merged.is_empty() {
                summaries
            } else {
                merged
                    .into_iter()
                    .zip(summaries)
                    .map(|(before, next)| before.then(next))
                    .collect()
            };
            if !checkpointed || signals.received().is_some() {
                return Ok(merged);
            }
            tracing::info!(input = %input.describe(), "Checkpoint: open windows and the input position saved; going on");
        }
    };
    let mut summaries = Vec::new();
    let mut failure = None;
    match inputs {
        Inputs::One(input) => match run_one(input) {
            Ok(ran) => summaries.extend(ran),
            Err(e) => failure = Some(e),
        },
        Inputs::Files {
            pattern,
            format,
            follow,
            poll,
        } => {
            let mut seen: std::collections::HashMap<PathBuf, u64> = Default::default();
            'follow: loop {
                for path in matching_files(&pattern)? {
                    let len = std::fs::metadata(&path).map_or(0, |m| m.len());
                    if seen.get(&path) == Some(&len) {
                        continue;
                    }
                    seen.insert(path.clone(), len);
                    let format = format.unwrap_or_else(|| Format::from_path(&path));
                    match run_one(Input::File { path, format }) {
                        Ok(ran) => summaries.extend(ran),
                        Err(e) => {
                            failure = Some(e);
                            break 'follow;
                        }
                    }
                    if signals.received().is_some() {
                        break 'follow;
                    }
                }
                if seen.is_empty() && !follow {
                    failure = Some(anyhow::anyhow!(
                        "no file matches {} (connector = 'file')",
                        pattern.display()
                    ));
                }
                if !follow {
                    break;
                }
                let next = Instant::now() + poll;
                while Instant::now() < next {
                    if signals.received().is_some() || deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        break 'follow;
                    }
                    std::thread::sleep(Duration::from_millis(50).min(poll));
                }
            }
        }
    }
    if failure.is_some() && cluster.is_some() {
        // Without the clean goodbye (see `Workers`' drop): the peers stop with an error
        // naming this process instead of waiting for it.
        drop(pool);
    } else if !pool.shutdown() && failure.is_none() {
        failure = Some(anyhow::Error::from(edgeflow::Error::Internal(
            "a worker failed".into(),
        )));
    }
    let mut result = Ok(());
    let mut sync_report = None;
    if let Some(syncer) = syncer {
        let (report, outcome) = syncer.finish(args.sync.sync_timeout, move || drop(logs));
        sync_report = Some(report);
        result = outcome;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    print_summaries(&summaries, sync_report.as_ref(), args.json)?;
    result?;
    match signals.received() {
        Some(signal) => Err(Interrupted(signal).into()),
        None => Ok(()),
    }
}

/// What every process of a cluster must agree on before its workers exchange a byte:
/// the same edgeflow and plans, the same input cut into the same chunks, and output
/// folders at the same point of the stream.
fn cluster_hello(
    args: &RunArgs,
    plans: &[QueryPlan],
    inputs: &Inputs,
    cluster: &edgeflow::cluster::Cluster,
    workers: usize,
) -> anyhow::Result<edgeflow::cluster::Hello> {
    let refuse = |what: &str| -> anyhow::Result<edgeflow::cluster::Hello> {
        Err(Usage(format!("cluster mode cannot {what}")).into())
    };
    match inputs {
        Inputs::One(Input::Stdin { .. }) => {
            return refuse(
                "read standard input: every process reads its share of one file (--input FILE, the same on every host)",
            );
        }
        Inputs::Files { follow: true, .. } => {
            return refuse("follow a file glob (follow = true): it reads finite inputs");
        }
        _ => {}
    }
    let mut hello = edgeflow::cluster::Hello::default()
        .with("edgeflow version", env!("CARGO_PKG_VERSION"))
        .with("processes", cluster.processes())
        .with("workers per process", workers)
        .with("--chunk-bytes", args.chunk_bytes)
        .with("--max-line-bytes", args.max_line_bytes)
        .with("--fresh", args.fresh);
    let sized = |path: &std::path::Path| {
        let bytes = std::fs::metadata(path).map_or(0, |m| m.len());
        format!("{} ({bytes} bytes)", path.display())
    };
    hello = match inputs {
        Inputs::One(input @ Input::File { path, .. }) => {
            hello.with("input", format!("{input:?}: {}", sized(path)))
        }
        Inputs::One(input) => hello.with("input", format!("{input:?}")),
        Inputs::Files { pattern, .. } => {
            let files = matching_files(pattern)?;
            let listed: Vec<String> = files.iter().map(|f| sized(f)).collect();
            hello.with("input", listed.join(", "))
        }
    };
    for plan in plans {
        hello = hello.with_plan(plan)?;
        if args.fresh {
            hello = hello.with_revisions(&args.output, &plan.name)?;
        } else {
            // Where each process's folder stands in the stream (every process records
            // the whole input's position and watermark, whatever share it read), and
            // where it stood before its last commit.
            use edgeflow::stream::StreamState;
            // Readable in a refusal, and exact: the digest covers the whole position.
            let position = |state: &StreamState| {
                let exact = format!("{:?} {:?}", state.max_event_time, state.inputs);
                let digest = edgeflow::digest::md5_hex(exact.as_bytes());
                match state.max_event_time {
                    None if state.inputs.is_empty() => {
                        format!("no earlier run (state {})", &digest[..8])
                    }
                    latest => format!(
                        "latest event time {}, {} input(s) consumed (state {})",
                        latest.map_or("none".to_owned(), edgeflow::time::format_rfc3339_micros),
                        state.inputs.len(),
                        &digest[..8]
                    ),
                }
            };
            let stream = match StreamState::load(&args.output, plan) {
                Ok(state) => position(&state),
                Err(e) => format!("unreadable ({e})"),
            };
            let previous = StreamState::load_previous(&args.output, plan)
                .ok()
                .flatten()
                .map(|state| position(&state));
            hello =
                hello.with_position(edgeflow::cluster::stream_fact(&plan.name), stream, previous);
        }
    }
    Ok(hello)
}

/// Connects the cluster and starts this process's workers; a query whose state is one
/// commit ahead of a peer's (a process died between the processes' commits) goes back
/// to its state before that commit, and the run is done again. With `fresh`, every
/// window is numbered past the revisions any process recorded.
fn start_cluster(
    cluster: &edgeflow::cluster::Cluster,
    hello: &edgeflow::cluster::Hello,
    plans: &[QueryPlan],
    output: &std::path::Path,
    workers: usize,
    fresh: bool,
) -> anyhow::Result<engine::Workers> {
    let connected = cluster.connect(hello).map_err(edgeflow::Error::from)?;
    if fresh {
        edgeflow::cluster::number_past_peers(output, plans, &connected)
            .map_err(edgeflow::Error::from)?;
    }
    for plan in plans {
        if connected
            .ahead
            .contains(&edgeflow::cluster::stream_fact(&plan.name))
        {
            edgeflow::stream::StreamState::roll_back(output, &plan.name)
                .map_err(edgeflow::Error::from)?;
            tracing::warn!(query = %plan.name, "This process had committed a run a peer had not: back to the state before it; the run is done again");
        }
    }
    Ok(engine::Workers::start_cluster(
        workers,
        cluster,
        connected.sockets,
    )?)
}

/// The files a pattern matches, in name order (a plain path matches itself).
fn matching_files(pattern: &std::path::Path) -> anyhow::Result<Vec<PathBuf>> {
    let text = pattern.to_string_lossy();
    if !text.contains(['*', '?', '[']) {
        return Ok(vec![pattern.to_owned()]);
    }
    let mut files: Vec<PathBuf> = glob::glob(&text)
        .map_err(|e| anyhow::anyhow!("bad glob {text}: {e}"))?
        .filter_map(Result::ok)
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Below a page, a chunk's fixed costs (a read, a decoder pass, a summary to the other
/// workers) outweigh its readings.
const MIN_CHUNK_BYTES: u64 = 4096;

fn parse_chunk_bytes(text: &str) -> Result<usize, String> {
    let bytes = super::sync::parse_bytes(text)?;
    if bytes < MIN_CHUNK_BYTES {
        return Err(format!(
            "a chunk must be at least 4KiB ({MIN_CHUNK_BYTES} bytes)"
        ));
    }
    usize::try_from(bytes).map_err(|_| format!("{text} is more than this machine can address"))
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

/// SIGINT and SIGTERM: each ends the run in progress gracefully (open windows are
/// written and kept, the input position saved) and no further input is started.
struct Signals {
    current: Arc<Mutex<Vec<Arc<Control>>>>,
    received: Arc<AtomicI32>,
}

impl Signals {
    /// In a cluster a signal cannot stop one process at a clean cut (the others go on
    /// reading): the process ends at once, its run not committed, and its peers stop
    /// with an error naming it. The next run of the cluster does the run again.
    fn install_cluster() -> Signals {
        super::on_signals(move |number| {
            tracing::warn!(
                signal = number,
                "Stopping a cluster process: its run is not committed, and the other processes stop too"
            );
            eprintln!(
                "edgeflow: signal {number}: this cluster process stops without committing its run; the next run of the cluster does it again"
            );
            std::process::exit(128 + number);
        });
        Signals {
            current: Arc::default(),
            received: Arc::new(AtomicI32::new(0)),
        }
    }

    fn install() -> Signals {
        let signals = Signals {
            current: Arc::default(),
            received: Arc::new(AtomicI32::new(0)),
        };
        let (current, received) = (signals.current.clone(), signals.received.clone());
        super::on_signals(move |number| {
            tracing::warn!(
                signal = number,
                "Stopping: writing open windows and keeping them for the next run"
            );
            received.store(number, Ordering::SeqCst);
            if let Ok(current) = current.lock() {
                for control in current.iter() {
                    control.interrupt(number);
                }
            }
        });
        signals
    }

    /// Adds `control` to the runs a signal interrupts.
    fn watch(&self, control: Arc<Control>) {
        if let Ok(mut current) = self.current.lock() {
            let signal = self.received.load(Ordering::SeqCst);
            if signal != 0 {
                control.interrupt(signal);
            }
            current.push(control);
        }
    }

    /// The watched runs are over.
    fn forget(&self) {
        if let Ok(mut current) = self.current.lock() {
            current.clear();
        }
    }

    /// The signal received, if any.
    fn received(&self) -> Option<i32> {
        Some(self.received.load(Ordering::SeqCst)).filter(|&s| s != 0)
    }
}

/// Prints one summary per input file run; what sync did goes with the last one (as its
/// `sync` field in JSON), since one sync served them all.
fn print_summaries(
    summaries: &[engine::RunSummary],
    sync: Option<&SyncReport>,
    json: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let mut values = summaries
            .iter()
            .map(serde_json::to_value)
            .collect::<Result<Vec<_>, _>>()?;
        if let (Some(serde_json::Value::Object(last)), Some(sync)) = (values.last_mut(), sync) {
            last.insert("sync".into(), serde_json::to_value(sync)?);
        }
        match values.as_slice() {
            [one] => serde_json::to_writer_pretty(&mut out, one)?,
            many => serde_json::to_writer_pretty(&mut out, many)?,
        }
        writeln!(out)?;
        return Ok(());
    }
    for summary in summaries {
        writeln!(out, "{summary}")?;
    }
    if let Some(sync) = sync {
        writeln!(out, "-- sync\n{sync}")?;
    }
    Ok(())
}
