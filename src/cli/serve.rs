//! `edgeflow serve [QUERY.sql ...|queries/]`: the live node, until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use edgeflow::query::QueryPlan;
use edgeflow::serve::config::Scope;
use edgeflow::serve::http::HttpLimits;
use edgeflow::serve::tls::TlsFiles;
use edgeflow::serve::{Node, NodeConfig, NodeFile, NodeSummary};
use edgeflow::source::SourceLimits;
use edgeflow::source::live::FsyncPolicy;
use edgeflow::sync::target::S3Options;
use edgeflow::sync::{QuotaPolicy, Syncer};

use super::logging::FileLogs;
use super::sync::{SyncFlags, UploadFlags, parse_bytes};
use super::{ClusterArgs, Usage, default_output};

/// Where `serve` listens by default, and where `ctl` looks for it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Query files, or folders whose `*.sql` files are all served (default: the
    /// `queries` of --config).
    pub queries: Vec<PathBuf>,
    /// Node settings file (listen address, tokens, output, sync, quota); flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the API, status page, metrics and push ingest.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Listen beyond loopback without tokens (anyone who reaches the node can push and
    /// steer it).
    #[arg(long)]
    pub insecure: bool,
    /// File holding the admin token (first line): may do anything.
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding the ingest token: may only push readings.
    #[arg(long, value_name = "FILE")]
    pub ingest_token_file: Option<PathBuf>,
    /// File holding the read token: may read status and metrics.
    #[arg(long, value_name = "FILE")]
    pub read_token_file: Option<PathBuf>,
    /// TLS certificate chain (PEM) for the listener; with --tls-key.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM); with --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Longest an HTTP request may take, body included.
    #[arg(long, default_value = "30s", value_parser = crate::cli::duration)]
    pub request_timeout: Duration,
    /// Push requests per second taken from one client address (0: no limit).
    #[arg(long, default_value_t = 200)]
    pub ingest_rate_limit: u32,
    /// Output root; each query's results go to `<output>/<query name>/`.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Timely worker threads, shared by every query (default: one per core).
    #[arg(long, short)]
    pub workers: Option<usize>,
    /// Stop by itself after this long (e.g. 90s, 2h), as SIGTERM would.
    #[arg(long = "for", value_name = "DURATION", value_parser = crate::cli::duration)]
    pub run_for: Option<Duration>,
    /// Forget what earlier runs kept for each query and start from scratch.
    #[arg(long)]
    pub fresh: bool,
    /// Leave each window's file as it is: do not compact the files of closed hours into
    /// one per hour at checkpoints.
    #[arg(long)]
    pub no_compaction: bool,
    /// Longest reading line (JSON) taken.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    pub max_line_bytes: u64,
    /// When a push or MQTT message is acknowledged: `always` once its readings are
    /// fsync'd in the table's write-ahead log (one fsync covers every request waiting),
    /// or an interval such as 10ms: acknowledged once written, fsync'd at that interval,
    /// so a power loss can lose the last interval's readings (a crash of the process
    /// alone loses nothing).
    #[arg(long, default_value = "always", value_name = "always|INTERVAL")]
    pub wal_fsync: FsyncPolicy,
    /// How often each running query checkpoints its open windows and the log position
    /// they reflect: the log behind every checkpoint is deleted, and a restart after a
    /// crash replays only what came after.
    #[arg(long, default_value = "1m", value_parser = crate::cli::duration)]
    pub checkpoint_every: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
    /// Sync target: s3://bucket/prefix or file:///path (default: $EDGEFLOW_SYNC, else the
    /// config file's, else the local folder ./edgeflow-sync/<output folder name>-<hash of
    /// its path>/).
    #[arg(long = "sync", value_name = "URL")]
    pub sync: Option<String>,
    /// This box's name in a fleet: files go under `node=NAME/` of the target, so many
    /// nodes share one bucket (default: $EDGEFLOW_NODE_NAME, else the config file's).
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// Do not sync (wins over $EDGEFLOW_SYNC and the config file's target).
    #[arg(long, conflicts_with = "sync")]
    pub no_sync: bool,
    /// Local quota for files not yet uploaded, e.g. 512MiB or 2G.
    #[arg(long, value_parser = parse_bytes)]
    pub max_pending_bytes: Option<u64>,
    /// What to do when the quota is full (default backpressure: push answers 503,
    /// polls wait).
    #[arg(long, value_enum)]
    pub on_quota: Option<QuotaPolicy>,
    /// How long a stopping node waits for the target to take the last files.
    #[arg(long, default_value = "5m", value_parser = crate::cli::duration)]
    pub sync_timeout: Duration,
    /// Upload and retention settings.
    #[command(flatten)]
    pub upload: UploadFlags,
    /// S3 connection settings.
    #[command(flatten)]
    pub s3: S3Options,
    /// Cluster settings: the node's workers on several processes.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

impl ServeArgs {
    /// The config file, or an empty one.
    pub fn file(&self) -> anyhow::Result<NodeFile> {
        Ok(match &self.config {
            Some(path) => NodeFile::load(path)?,
            None => NodeFile::default(),
        })
    }

    /// The output root: the flag, the config file's, or the default.
    pub fn output(&self, file: &NodeFile) -> PathBuf {
        self.output
            .clone()
            .or_else(|| file.output.clone())
            .unwrap_or_else(default_output)
    }
}

/// The query files named by `paths`: files as they are, folders as their `*.sql`.
pub fn query_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| anyhow::anyhow!("cannot list {}: {e}", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(Usage(format!("{} holds no .sql query file", path.display())).into());
            }
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Runs `serve`.
pub fn serve(args: &ServeArgs, logs: Option<FileLogs>) -> anyhow::Result<()> {
    let file = args.file()?;
    let paths = if args.queries.is_empty() {
        file.queries.clone()
    } else {
        args.queries.clone()
    };
    if paths.is_empty() {
        tracing::info!(
            "No query file given: the node serves the queries added over the API (edgeflow ctl add FILE.sql)"
        );
    }
    let plans = query_files(&paths)?
        .iter()
        .map(|p| edgeflow::query::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let listen = match (args.listen, &file.listen) {
        (Some(addr), _) => addr,
        (None, Some(text)) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("listen = \"{text}\" in the config file: {e}"))?,
        (None, None) => DEFAULT_LISTEN.parse()?,
    };
    let sync = SyncFlags {
        sync: args
            .sync
            .clone()
            .or_else(super::sync::sync_from_env)
            .or_else(|| file.sync.target.clone()),
        node: args
            .node
            .clone()
            .or_else(|| {
                std::env::var("EDGEFLOW_NODE_NAME")
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .or_else(|| file.sync.node.clone()),
        no_sync: args.no_sync || file.sync.enabled == Some(false),
        max_pending_bytes: match (args.max_pending_bytes, &file.sync.max_pending_bytes) {
            (Some(n), _) => Some(n),
            (None, Some(text)) => Some(parse_bytes(text).map_err(anyhow::Error::msg)?),
            (None, None) => None,
        },
        on_quota: match (args.on_quota, &file.sync.on_quota) {
            (Some(policy), _) => policy,
            (None, Some(text)) => clap::ValueEnum::from_str(text, true)
                .map_err(|e| anyhow::anyhow!("on_quota = \"{text}\" in the config file: {e}"))?,
            (None, None) => QuotaPolicy::Backpressure,
        },
        sync_timeout: args.sync_timeout,
        upload: args.upload.clone(),
        s3: args.s3.clone(),
    };
    let mut tokens = file.tokens.clone();
    for (path, scope) in [
        (&args.admin_token_file, Scope::Admin),
        (&args.ingest_token_file, Scope::Ingest),
        (&args.read_token_file, Scope::Read),
    ] {
        if let Some(path) = path {
            tokens.add_file(scope, path)?;
        }
    }
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let settings = NodeSettings {
        output: args.output(&file),
        workers: args.workers.or(file.workers),
        listen: Some(listen),
        insecure: args.insecure || file.insecure,
        tokens,
        tls,
        http: HttpLimits {
            request_timeout: args.request_timeout,
            ingest_per_client: NonZeroU32::new(args.ingest_rate_limit),
            ..HttpLimits::default()
        },
        run_for: args.run_for,
        fresh: args.fresh,
        no_compaction: args.no_compaction,
        max_line_bytes: args.max_line_bytes,
        json: args.json,
        sync,
        wal_fsync: args.wal_fsync,
        checkpoint_every: args.checkpoint_every,
        cluster: args.cluster.cluster()?,
    };
    run_node(plans, &settings, logs)
}

/// What `serve`, and `run` on a live query, need to start a node.
pub struct NodeSettings {
    /// Output root.
    pub output: PathBuf,
    /// Workers per query.
    pub workers: Option<usize>,
    /// HTTP listener.
    pub listen: Option<SocketAddr>,
    /// Listen beyond loopback without tokens.
    pub insecure: bool,
    /// Tokens from the config file (the environment's are added).
    pub tokens: edgeflow::serve::Tokens,
    /// TLS certificate and key for the listener.
    pub tls: Option<TlsFiles>,
    /// Timeouts and limits of the HTTP routes.
    pub http: HttpLimits,
    /// `--for`.
    pub run_for: Option<Duration>,
    /// `--fresh`.
    pub fresh: bool,
    /// `--no-compaction`.
    pub no_compaction: bool,
    /// Longest line.
    pub max_line_bytes: u64,
    /// JSON summary.
    pub json: bool,
    /// Sync.
    pub sync: SyncFlags,
    /// `--wal-fsync`.
    pub wal_fsync: FsyncPolicy,
    /// `--checkpoint-every`.
    pub checkpoint_every: Duration,
    /// The cluster the node is a process of.
    pub cluster: Option<edgeflow::cluster::Cluster>,
}

/// Runs `plans` as one node until a signal (or `--for`), then syncs and prints the
/// summary.
pub fn run_node(
    plans: Vec<QueryPlan>,
    settings: &NodeSettings,
    logs: Option<FileLogs>,
) -> anyhow::Result<()> {
    let workers = settings
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 {
        anyhow::bail!("--workers must be at least 1");
    }
    edgeflow::engine::ensure_writable(&settings.output)?;
    let _lock =
        edgeflow::lock::OutputLock::acquire(&settings.output).map_err(edgeflow::Error::from)?;
    let syncer = match settings.sync.config()? {
        Some(mut sync) => {
            sync.own_logs = logs.as_ref().map(|l| l.prefix.clone());
            Some(Arc::new(Syncer::start(&settings.output, sync, false)?))
        }
        None => None,
    };
    let node = Node::new(NodeConfig {
        queries: plans,
        output: settings.output.clone(),
        workers,
        limits: SourceLimits {
            max_line_bytes: usize::try_from(settings.max_line_bytes).unwrap_or(usize::MAX),
            ..SourceLimits::default()
        },
        listen: settings.listen,
        tokens: settings.tokens.clone().with_env(),
        insecure: settings.insecure,
        run_for: settings.run_for,
        syncer: syncer.clone(),
        forget_state: settings.fresh,
        compaction: !settings.no_compaction,
        tls: settings.tls.clone(),
        http: settings.http.clone(),
        wal_fsync: settings.wal_fsync,
        checkpoint_every: settings.checkpoint_every,
        cluster: settings.cluster.clone(),
    });
    stop_on_signals(node.stop_handle());
    let summary = node.run()?;
    let mut result = Ok(());
    let mut sync_report = None;
    if let Some(syncer) = syncer {
        match Arc::try_unwrap(syncer) {
            Ok(syncer) => {
                let (report, outcome) =
                    syncer.finish(settings.sync.sync_timeout, move || drop(logs));
                sync_report = Some(report);
                result = outcome.map_err(anyhow::Error::from);
            }
            Err(_) => tracing::error!(
                "the sync is still in use; the last files are shipped by the next start"
            ),
        }
    }
    print_summary(&summary, sync_report.as_ref(), settings.json)?;
    if let Some((query, error)) = summary.failed.first() {
        anyhow::bail!("query {query} failed: {error}");
    }
    result
}

/// SIGINT or SIGTERM stops the node in order.
fn stop_on_signals(stop: edgeflow::serve::StopHandle) {
    super::on_signals(move |number| {
        tracing::warn!(
            signal = number,
            "Stopping the node: sources stop, received readings are processed, open windows written and kept"
        );
        stop.stop();
    });
}

fn print_summary(
    summary: &NodeSummary,
    sync: Option<&edgeflow::sync::SyncReport>,
    json: bool,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let value = serde_json::json!({ "node": summary, "sync": sync });
        serde_json::to_writer_pretty(&mut out, &value)?;
        writeln!(out)?;
        return Ok(());
    }
    for (table, poll) in &summary.polls {
        writeln!(
            out,
            "table {table}: {} rounds, {} polls ok, {} failed, {} skipped (still running), {} held (node behind or local quota full), {} counter resets",
            poll.rounds,
            poll.polls_ok,
            poll.polls_failed,
            poll.polls_skipped,
            poll.polls_held,
            poll.counter_resets
        )?;
        if let (Some(p50), Some(p99)) = (poll.round_p50_ms, poll.round_p99_ms) {
            writeln!(
                out,
                "  round completion p50 {p50:.1} ms, p99 {p99:.1} ms (polls spread over the interval)"
            )?;
        }
        if let (Some(p50), Some(p99)) = (poll.poll_p50_ms, poll.poll_p99_ms) {
            writeln!(out, "  one poll p50 {p50:.1} ms, p99 {p99:.1} ms")?;
        }
        for device in &poll.silent_devices {
            writeln!(
                out,
                "  device {} not answering ({} polls in a row failed): {}",
                device.id,
                device.failing_in_a_row,
                device.last_error.as_deref().unwrap_or("")
            )?;
        }
    }
    for (table, mqtt) in &summary.mqtt {
        writeln!(
            out,
            "table {table}: {} MQTT messages, {} connections, {} lost",
            mqtt.messages, mqtt.connections, mqtt.disconnects
        )?;
    }
    for run in &summary.queries {
        writeln!(out, "{run}")?;
        if run.kept_windows > 0 {
            writeln!(
                out,
                "             {} windows closed early at shutdown: written, and kept so the next start resumes them as new revisions",
                run.kept_windows
            )?;
        }
    }
    for (query, error) in &summary.failed {
        writeln!(out, "query {query} FAILED: {error}")?;
    }
    if let Some(sync) = sync {
        writeln!(out, "{sync}")?;
    }
    Ok(())
}
