//! The long-running node: live sources feeding queries until it is told to stop.
//!
//! Queries that declare the same table with the same connector share one ingest: one
//! poller (each device polled once per interval), one MQTT subscription, one push
//! endpoint, whose readings reach every one of those queries through a
//! [`crate::source::live::Feed`]. Each query is a dataflow of its own on the node's
//! timely workers ([`Workers`]), started and stopped at run time over the API
//! ([`queries`]) while the others run. Stopping the node is orderly: sources stop
//! first (polls in flight finish, push requests in flight are answered), then every
//! reading received is processed, the open windows are written and kept for the next
//! start (as revisions it resumes, like the end of any run), and sync gets its timeout
//! to ship them.

pub mod cluster;
pub mod config;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod openapi;
mod page;
pub mod queries;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use tokio::sync::watch;

use self::ingest::Ingests;
use self::queries::Queries;
use crate::Error;
use crate::cluster::lockstep::{Lockstep, Step};
use crate::engine::{RunSummary, Workers};
use crate::query::QueryPlan;
use crate::query::connector::ConnectorKind;
use crate::source::ProcessShare;
use crate::source::SourceLimits;
use crate::source::http_poll::PollReport;
use crate::source::live::FsyncPolicy;
use crate::source::mqtt::MqttReport;
use crate::sync::Syncer;

pub use config::{NodeFile, Tokens};

/// How to run a node.
pub struct NodeConfig {
    /// The queries.
    pub queries: Vec<QueryPlan>,
    /// Output root.
    pub output: PathBuf,
    /// Timely workers per query.
    pub workers: usize,
    /// Input limits (chunk size, longest line).
    pub limits: SourceLimits,
    /// Address of the HTTP listener (push ingest, health); `None`: no listener.
    pub listen: Option<SocketAddr>,
    /// Bearer tokens.
    pub tokens: Tokens,
    /// Listen beyond loopback without tokens.
    pub insecure: bool,
    /// Stop by itself after this long (`--for`).
    pub run_for: Option<Duration>,
    /// The sync, already started on `output`.
    pub syncer: Option<Arc<Syncer>>,
    /// Forget what earlier runs kept for each query and start from scratch (`--fresh`).
    pub forget_state: bool,
    /// Compact closed hours at each checkpoint ([`crate::sink::compaction`]).
    pub compaction: bool,
    /// TLS for the listener: certificate and key in PEM.
    pub tls: Option<tls::TlsFiles>,
    /// Limits of the HTTP routes.
    pub http: http::HttpLimits,
    /// When a pushed batch's acknowledgement waits for the write-ahead log's fsync.
    pub wal_fsync: FsyncPolicy,
    /// How often a running query checkpoints (its open windows' state and the log
    /// position they reflect), so the log can be cut and a restart replays little.
    pub checkpoint_every: Duration,
    /// The cluster this node is a process of (none: a node of its own).
    pub cluster: Option<crate::cluster::Cluster>,
}

/// Why a node cannot start or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// A table that running queries read, declared otherwise.
    #[error(
        "query {query} declares table `{table}` otherwise (columns, types, connector or its options) than the running queries that read it: one table, one ingest, so declare it the same way in every query"
    )]
    ConflictingTable {
        /// The query.
        query: String,
        /// The table.
        table: String,
    },
    /// TLS cannot be set up.
    #[error("TLS: {0}")]
    Tls(String),
    /// Two queries with one name would write one output folder.
    #[error("two queries are named {0}: query names (the file names) must differ")]
    DuplicateName(String),
    /// Two queries declare one table differently.
    #[error(
        "queries {0} and {1} both declare table `{2}` but with different columns, types, connectors or options: one table, one ingest, so declare it the same way in every query"
    )]
    ConflictingTables(String, String, String),
    /// A live node without a live source.
    #[error(
        "query {0} reads connector '{1}', which `serve` cannot run: serve needs live connectors (http_poll, http_push, mqtt)"
    )]
    NotLive(String, String),
    /// Listening beyond loopback without tokens.
    #[error(
        "refusing to listen on {0} without tokens: anyone who can reach it could push readings. Set tokens (EDGEFLOW_INGEST_TOKEN or [tokens] in --config) or pass --insecure"
    )]
    Insecure(SocketAddr),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A source could not start.
    #[error("query {query}: {message}")]
    Source {
        /// The query.
        query: String,
        /// Why.
        message: String,
    },
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// A query failed on this process of a cluster.
    #[error(
        "query {query} failed on this process: {message}. Every process of a cluster builds each query's dataflows together, so this one stops and the others stop with an error naming it; the next start resumes every query from its last checkpoint"
    )]
    ClusterQuery {
        /// The query.
        query: String,
        /// Why it failed.
        message: String,
    },
    /// Process 0 of the cluster ended the lockstep without announcing the stop.
    #[error(
        "{0}: this process stops without committing its run (the next start of the cluster replays it)"
    )]
    LeaderGone(#[from] crate::cluster::lockstep::LeaderGone),
}

/// What a node did, for the summary.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    /// Each query's runs that ended well.
    pub queries: Vec<RunSummary>,
    /// Queries that failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Each polled table.
    pub polls: BTreeMap<String, PollReport>,
    /// Each MQTT table.
    pub mqtt: BTreeMap<String, MqttReport>,
    /// Readings each table's ingest received.
    pub received: BTreeMap<String, u64>,
    /// Wall-clock time.
    pub elapsed: Duration,
}

/// Stops a running node from elsewhere (a signal handler, a test).
#[derive(Clone)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Asks the node to stop.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

/// A node being prepared: [`Node::stop_handle`] before [`Node::run`].
pub struct Node {
    config: NodeConfig,
    stop: watch::Sender<bool>,
}

impl Node {
    /// A node for `config`.
    pub fn new(config: NodeConfig) -> Self {
        Node {
            config,
            stop: watch::channel(false).0,
        }
    }

    /// A handle that stops the node.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.stop.clone())
    }

    /// Runs until stopped (or `--for` elapses).
    pub fn run(self) -> Result<NodeSummary, Error> {
        let started = Instant::now();
        let Node { config, stop } = self;
        check_tables(&config.queries)?;
        if let Some(addr) = config.listen
            && !addr.ip().is_loopback()
            && config.tokens.is_empty()
            && !config.insecure
        {
            return Err(NodeError::Insecure(addr).into());
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("edgeflow-io")
            .enable_all()
            .build()
            .map_err(NodeError::Runtime)?;
        // Bytes of the tables' write-ahead logs: they count against the local quota, and
        // a full quota stops acknowledgements rather than dropping acknowledged readings.
        let logged = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let accepting: crate::source::live::Admit = match &config.syncer {
            Some(syncer) => {
                let sync = syncer.handle();
                let logged = logged.clone();
                Arc::new(move || !sync.full_with_logs(logged.load(Ordering::Relaxed)))
            }
            None => Arc::new(|| true),
        };
        let (workers, lockstep, share) = start_workers(&config)?;
        let ingests = Arc::new(
            Ingests::new(
                runtime.handle().clone(),
                accepting,
                config.limits,
                Some(config.output.clone()),
                config.wal_fsync,
                logged,
            )
            .with_share(share),
        );
        let mut queries = Queries::new(
            config.output.clone(),
            workers.clone(),
            ingests.clone(),
            config.syncer.clone(),
            config.limits,
        )
        .with_compaction(config.compaction);
        if let Some(cluster) = &config.cluster {
            queries = queries.in_cluster(cluster.process, cluster.processes());
        }
        let queries = Arc::new(queries);
        for plan in &config.queries {
            queries
                .register(plan.clone(), config.forget_state)
                .map_err(|e| NodeError::Source {
                    query: plan.name.clone(),
                    message: e.to_string(),
                })?;
        }
        // Queries added over the API are this process's own: a cluster runs those every
        // process was started with.
        let restored = if config.cluster.is_some() {
            Vec::new()
        } else {
            queries.restore()?
        };
        if !restored.is_empty() {
            tracing::info!(queries = ?restored, "Queries added over the API by earlier runs are back");
        }
        let ready = Arc::new(AtomicBool::new(false));
        let server = match config.listen {
            Some(addr) => {
                let listener = runtime
                    .block_on(tokio::net::TcpListener::bind(addr))
                    .map_err(|source| NodeError::Listen { addr, source })?;
                let bound = listener.local_addr().unwrap_or(addr);
                let state = http::AppState {
                    queries: queries.clone(),
                    ingests: ingests.clone(),
                    tokens: config.tokens.clone(),
                    ready: ready.clone(),
                    syncer: config.syncer.clone(),
                    metrics: metrics::Exporter::new(),
                    limits: config.http.clone(),
                };
                let tls = match &config.tls {
                    Some(tls) => Some(tls::acceptor(tls)?),
                    None => None,
                };
                tracing::info!(listen = %bound, tls = tls.is_some(), "Listening: API, status page, push ingest");
                let app = http::router(state);
                let mut stopped = stop.subscribe();
                let shutdown = async move {
                    while !*stopped.borrow() {
                        if stopped.changed().await.is_err() {
                            break;
                        }
                    }
                };
                Some(runtime.spawn(tls::serve(listener, app, tls, shutdown)))
            }
            None => None,
        };
        let failed = queries.start_wanted();
        ingests.resumed();
        if config.cluster.is_some()
            && let Some((query, e)) = failed.first()
        {
            return Err(NodeError::ClusterQuery {
                query: query.clone(),
                message: e.to_string(),
            }
            .into());
        }
        ready.store(true, Ordering::Relaxed);
        tracing::info!(
            queries = queries.running(),
            failed = failed.len(),
            workers = config.workers,
            "Node running; SIGINT or SIGTERM stops it"
        );

        let deadline = config.run_for.map(|d| Instant::now() + d);
        let stop_seen = stop.subscribe();
        let steps = match &lockstep {
            Some(lockstep) if !lockstep.leads() => follow(lockstep, &queries, &stop_seen, deadline),
            _ => lead(
                lockstep.as_ref(),
                &queries,
                &stop_seen,
                deadline,
                config.checkpoint_every,
            ),
        };
        if let Err(e) = steps {
            // A cluster process out of step commits nothing: its queries' dataflows
            // wait for peers that will not finish them, so it leaves without stopping
            // them (what it acknowledged is in its logs for the next start).
            ready.store(false, Ordering::Relaxed);
            stop.send_replace(true);
            runtime.shutdown_timeout(Duration::from_secs(1));
            return Err(e.into());
        }

        tracing::info!(
            "Stopping: sources first, then every reading received is processed and the open windows are written"
        );
        ready.store(false, Ordering::Relaxed);
        stop.send_replace(true);
        // No start or add from the API after this point: every run is stopped below.
        queries.close();
        ingests.stop_all();
        queries.stop_all();
        if let Some(server) = server {
            runtime.block_on(server).ok();
        }
        workers.shutdown();
        let (runs, mut failures) = queries.outcomes();
        failures.extend(failed.into_iter().map(|(name, e)| (name, e.to_string())));
        let reports = ingests.reports();
        let summary = NodeSummary {
            queries: runs,
            failed: failures,
            polls: reports.polls,
            mqtt: reports.mqtt,
            received: ingests.received(),
            elapsed: started.elapsed(),
        };
        for (table, report) in &summary.polls {
            for device in &report.silent_devices {
                tracing::warn!(table = %table, device = %device.id, url = %device.url, failed_polls = device.failing_in_a_row, last_error = device.last_error.as_deref().unwrap_or(""), "Device not answering");
            }
        }
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(summary)
    }
}

/// The node's workers: this process's threads, and in a cluster the lockstep with the
/// other processes and this process's share of the live sources.
fn start_workers(
    config: &NodeConfig,
) -> Result<(Arc<Workers>, Option<Lockstep>, ProcessShare), Error> {
    let Some(cluster) = &config.cluster else {
        let workers = Workers::start(config.workers)?;
        return Ok((Arc::new(workers), None, ProcessShare::default()));
    };
    let settings = cluster::Settings {
        fresh: config.forget_state,
        checkpoint_every: config.checkpoint_every,
    };
    let joined = cluster::join(
        cluster,
        &config.queries,
        &config.output,
        config.workers,
        &settings,
    )?;
    let share = ProcessShare {
        process: cluster.process,
        processes: cluster.processes(),
    };
    Ok((Arc::new(joined.workers), Some(joined.lockstep), share))
}

/// Runs the node's steps until it is to stop: a node of its own, or process 0 of a
/// cluster, which announces each step to the others before it takes it.
fn lead(
    lockstep: Option<&Lockstep>,
    queries: &Queries,
    stop_seen: &watch::Receiver<bool>,
    deadline: Option<Instant>,
    every: Duration,
) -> Result<(), NodeError> {
    let mut last_tick = Instant::now();
    loop {
        if *stop_seen.borrow() || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if let Some(process) = lockstep.and_then(Lockstep::stop_requested) {
            tracing::info!(
                process,
                "A process of the cluster was told to stop: the cluster stops"
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        if last_tick.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_tick = Instant::now();
        queries.tick();
        match lockstep {
            None => queries.checkpoint_due(every),
            Some(lockstep) => {
                cluster_failure(queries)?;
                for name in queries.due(every, false) {
                    lockstep.announce(&Step::Checkpoint(name.clone()));
                    checkpoint_in_step(queries, &name)?;
                }
            }
        }
    }
    if let Some(lockstep) = lockstep {
        lockstep.announce(&Step::Stop);
    }
    Ok(())
}

/// A query that failed on a process of a cluster ends the process: the others would
/// build its successors without it, and every later dataflow would pair with another.
fn cluster_failure(queries: &Queries) -> Result<(), NodeError> {
    match queries.failure() {
        Some((query, message)) => Err(NodeError::ClusterQuery { query, message }),
        None => Ok(()),
    }
}

/// Takes a checkpoint every process of the cluster takes: one this process cannot take
/// (the query failed here, or its successor cannot subscribe) ends it, as a failure.
fn checkpoint_in_step(queries: &Queries, name: &str) -> Result<(), NodeError> {
    queries
        .checkpoint(name)
        .map_err(|message| NodeError::ClusterQuery {
            query: name.to_owned(),
            message,
        })
}

/// Runs the steps process 0 announces until it announces the stop. A signal to this
/// process, or its `--for` passing, asks process 0 to stop the cluster: the others
/// would otherwise wait for this one's workers.
fn follow(
    lockstep: &Lockstep,
    queries: &Queries,
    stop_seen: &watch::Receiver<bool>,
    deadline: Option<Instant>,
) -> Result<(), NodeError> {
    let mut asked = false;
    let mut last_tick = Instant::now();
    loop {
        let due = deadline.is_some_and(|d| Instant::now() >= d);
        if !asked && (*stop_seen.borrow() || due) {
            asked = true;
            tracing::info!("Asking process 0 to stop the cluster");
            lockstep.request_stop();
        }
        match lockstep.next_step(Duration::from_millis(50)) {
            Ok(Some(Step::Checkpoint(name))) => checkpoint_in_step(queries, &name)?,
            Ok(Some(Step::Stop)) => break,
            Ok(None) => {}
            // Its workers are gone too (timely's lost connection ends this process with
            // an error naming it); no step will come, so nothing is committed.
            Err(gone) => return Err(gone.into()),
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            queries.tick();
            cluster_failure(queries)?;
        }
    }
    Ok(())
}

fn connector_name(kind: &ConnectorKind) -> String {
    crate::query::connector::Connector {
        kind: kind.clone(),
        ..Default::default()
    }
    .name()
    .to_owned()
}

fn connector_name_static(kind: &ConnectorKind) -> &'static str {
    crate::query::connector::Connector {
        kind: kind.clone(),
        ..Default::default()
    }
    .name()
}

/// Refuses a set of queries that cannot run together: two with one name, or one table
/// declared two ways.
fn check_tables(queries: &[QueryPlan]) -> Result<(), Error> {
    for (i, plan) in queries.iter().enumerate() {
        for other in &queries[..i] {
            if other.name == plan.name {
                return Err(NodeError::DuplicateName(plan.name.clone()).into());
            }
            if other.source.name == plan.source.name && !other.source.same_ingest(&plan.source) {
                return Err(NodeError::ConflictingTables(
                    other.name.clone(),
                    plan.name.clone(),
                    plan.source.name.clone(),
                )
                .into());
            }
        }
        let connector = &plan.source.connector;
        if !connector.is_live() || matches!(connector.kind, ConnectorKind::File(_)) {
            return Err(NodeError::NotLive(plan.name.clone(), connector.name().to_owned()).into());
        }
    }
    Ok(())
}
