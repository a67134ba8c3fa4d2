//! The long-running node: live sources feeding queries until it is told to stop.
//!
//! Queries that declare the same table with the same connector share one ingest: one
//! poller (each device polled once per interval), one MQTT subscription, one push
//! endpoint, whose readings reach every one of those queries through a [`Feed`]. Each
//! query runs on its own timely workers as `edgeflow run` would, over a live input that
//! ends only when the node stops. Stopping is orderly: sources stop first (polls in
//! flight finish, push requests in flight are answered), then every reading received
//! is processed, the open windows are written and kept for the next start (as
//! revisions it resumes, like the end of any run), and sync gets its timeout to ship
//! them.

pub mod config;
pub mod http;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;

use crate::Error;
use crate::engine::control::Control;
use crate::engine::{self, RunConfig, RunSummary};
use crate::query::QueryPlan;
use crate::query::connector::ConnectorKind;
use crate::source::http_poll::{PollReport, Poller};
use crate::source::http_push::PushTable;
use crate::source::live::{DEFAULT_QUEUE_BYTES, Feed};
use crate::source::mqtt::{MqttReport, MqttSource};
use crate::source::{Input, SourceLimits};
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
}

/// Why a node cannot start or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No query given.
    #[error("no query to serve")]
    NoQueries,
    /// Two queries with one name would write one output folder.
    #[error("two queries are named {0}: query names (the file names) must differ")]
    DuplicateName(String),
    /// Two queries declare one table with different connectors.
    #[error(
        "queries {0} and {1} both declare table `{2}` but with different connectors or options: one table, one ingest"
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
}

/// One ingest: a table with its connector, and the queries reading it.
struct Ingest {
    table: String,
    feed: Arc<Feed>,
    queries: Vec<String>,
    kind: ConnectorKind,
}

/// What a node did, for the summary.
#[derive(Debug, Serialize)]
pub struct NodeSummary {
    /// Each query's run.
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

    /// Runs until stopped (or `--for` elapses, or every query has ended).
    pub fn run(self) -> Result<NodeSummary, Error> {
        let started = Instant::now();
        let Node { config, stop } = self;
        if config.queries.is_empty() {
            return Err(NodeError::NoQueries.into());
        }
        let ingests = plan_ingests(&config.queries)?;
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
        let accepting: Arc<dyn Fn() -> bool + Send + Sync> = match &config.syncer {
            Some(syncer) => {
                let paused = syncer.pause_check();
                Arc::new(move || !paused())
            }
            None => Arc::new(|| true),
        };

        // Subscriptions first, so no reading published later misses a query.
        let mut runs = Vec::new();
        let mut controls = Vec::new();
        for plan in &config.queries {
            let Some(ingest) = ingests.iter().find(|i| i.queries.contains(&plan.name)) else {
                continue;
            };
            let input = Arc::new(ingest.feed.subscribe(&plan.source, config.limits));
            let mut run = RunConfig::new(plan.clone(), Input::Live(input), config.output.clone());
            run.workers = config.workers;
            run.chunk_bytes = config.limits.chunk_bytes;
            run.max_line_bytes = config.limits.max_line_bytes;
            run.fresh = config.forget_state;
            if let Some(syncer) = &config.syncer {
                run.on_commit = Some(syncer.on_commit());
                run.on_supersede = Some(syncer.on_supersede());
                run.control = Arc::new(Control::with_pause(Some(syncer.pause_check())));
            }
            controls.push(run.control.clone());
            runs.push(run);
        }

        let mut pollers: Vec<(String, Arc<Poller>)> = Vec::new();
        let mut brokers: Vec<(String, Arc<MqttSource>)> = Vec::new();
        let mut push = BTreeMap::new();
        for ingest in &ingests {
            let plan = config
                .queries
                .iter()
                .find(|p| ingest.queries.contains(&p.name))
                .ok_or_else(|| Error::Internal("an ingest without a query".into()))?;
            let fail = |message: String| NodeError::Source {
                query: plan.name.clone(),
                message,
            };
            match &ingest.kind {
                ConnectorKind::HttpPoll(spec) => {
                    let poller = Poller::new(spec, &plan.source, ingest.feed.clone())
                        .map_err(|e| fail(e.to_string()))?;
                    pollers.push((ingest.table.clone(), poller));
                }
                ConnectorKind::Mqtt(spec) => {
                    let source = MqttSource::new(spec, &plan.source, ingest.feed.clone())
                        .map_err(|e| fail(e.to_string()))?;
                    brokers.push((ingest.table.clone(), source));
                }
                ConnectorKind::HttpPush(spec) => {
                    push.insert(
                        ingest.table.clone(),
                        Arc::new(PushTable::new(
                            &plan.source,
                            spec,
                            ingest.feed.clone(),
                            accepting.clone(),
                        )),
                    );
                }
                other => {
                    return Err(NodeError::NotLive(plan.name.clone(), connector_name(other)).into());
                }
            }
        }

        let server = match config.listen {
            Some(addr) => {
                let listener = runtime
                    .block_on(tokio::net::TcpListener::bind(addr))
                    .map_err(|source| NodeError::Listen { addr, source })?;
                let bound = listener.local_addr().unwrap_or(addr);
                tracing::info!(listen = %bound, push_tables = ?push.keys().collect::<Vec<_>>(), "Listening");
                let state = http::AppState {
                    push,
                    tokens: config.tokens.clone(),
                    ready: Arc::new(std::sync::atomic::AtomicBool::new(true)),
                    feeds: ingests
                        .iter()
                        .map(|i| (i.table.clone(), i.feed.clone()))
                        .collect(),
                    sources: source_status(&pollers, &brokers),
                };
                let app = http::router(state);
                let mut stopped = stop.subscribe();
                Some(runtime.spawn(async move {
                    let shutdown = async move {
                        while !*stopped.borrow() {
                            if stopped.changed().await.is_err() {
                                break;
                            }
                        }
                    };
                    if let Err(e) = axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(shutdown)
                    .await
                    {
                        tracing::error!(error = %e, "The HTTP listener failed");
                    }
                }))
            }
            None => None,
        };

        // The queries' workers: one thread each, running until their input ends.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(String, Result<RunSummary, Error>)>();
        let mut threads = Vec::new();
        for run in runs {
            let name = run.plan.name.clone();
            let done = done_tx.clone();
            let live = match &run.input {
                Input::Live(live) => Some(live.clone()),
                _ => None,
            };
            let thread = std::thread::Builder::new()
                .name(format!("query-{name}"))
                .spawn(move || {
                    let result = engine::run(run);
                    // A query that ended takes no more readings: its queue must not
                    // hold back the ingest it shares with the others.
                    if let Some(live) = live {
                        live.leave();
                    }
                    done.send((name, result)).ok();
                })
                .map_err(NodeError::Runtime)?;
            threads.push(thread);
        }
        drop(done_tx);

        let mut source_tasks = Vec::new();
        for (_, poller) in &pollers {
            source_tasks.push(runtime.spawn(poller.clone().run(stop.subscribe())));
        }
        for (_, broker) in &brokers {
            source_tasks.push(runtime.spawn(broker.clone().run(stop.subscribe())));
        }
        tracing::info!(
            queries = config.queries.len(),
            ingests = ingests.len(),
            workers = config.workers,
            "Node running; SIGINT or SIGTERM stops it"
        );

        // Wait for the stop, the deadline, or queries ending on their own (a failure).
        let mut finished: Vec<(String, Result<RunSummary, Error>)> = Vec::new();
        let deadline = config.run_for.map(|d| Instant::now() + d);
        let stop_seen = stop.subscribe();
        loop {
            if *stop_seen.borrow() || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            match done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok((name, result)) => {
                    if let Err(e) = &result {
                        tracing::error!(query = %name, error = %e, "Query failed; the node goes on with the others");
                    }
                    finished.push((name, result));
                    if finished.len() == threads.len() {
                        break;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }

        tracing::info!(
            "Stopping: sources first, then every reading received is processed and the open windows are written"
        );
        stop.send_replace(true);
        runtime.block_on(async {
            for task in source_tasks {
                task.await.ok();
            }
            if let Some(server) = server {
                server.await.ok();
            }
        });
        for ingest in &ingests {
            ingest.feed.close();
        }
        for control in &controls {
            control.drain();
        }
        for thread in threads {
            thread.join().ok();
        }
        finished.extend(done_rx.try_iter());

        let mut summary = NodeSummary {
            queries: Vec::new(),
            failed: Vec::new(),
            polls: pollers
                .iter()
                .map(|(t, p)| (t.clone(), p.report()))
                .collect(),
            mqtt: brokers
                .iter()
                .map(|(t, b)| (t.clone(), b.report()))
                .collect(),
            received: ingests
                .iter()
                .map(|i| (i.table.clone(), i.feed.published()))
                .collect(),
            elapsed: started.elapsed(),
        };
        for (table, report) in &summary.polls {
            for device in &report.silent_devices {
                tracing::warn!(table = %table, device = %device.id, url = %device.url, failed_polls = device.failing_in_a_row, last_error = device.last_error.as_deref().unwrap_or(""), "Device not answering");
            }
        }
        for plan in &config.queries {
            if let Some((_, result)) = finished.iter_mut().find(|(n, _)| *n == plan.name) {
                match std::mem::replace(result, Err(Error::Internal(String::new()))) {
                    Ok(run) => summary.queries.push(run),
                    Err(e) => summary.failed.push((plan.name.clone(), e.to_string())),
                }
            }
        }
        runtime.shutdown_timeout(Duration::from_secs(1));
        Ok(summary)
    }
}

/// Each source's figures for the status route.
fn source_status(
    pollers: &[(String, Arc<Poller>)],
    brokers: &[(String, Arc<MqttSource>)],
) -> BTreeMap<String, http::SourceStatus> {
    let mut status: BTreeMap<String, http::SourceStatus> = BTreeMap::new();
    for (table, poller) in pollers {
        let poller = poller.clone();
        status.insert(
            table.clone(),
            Arc::new(move || serde_json::to_value(poller.report()).unwrap_or_default()),
        );
    }
    for (table, broker) in brokers {
        let broker = broker.clone();
        status.insert(
            table.clone(),
            Arc::new(move || serde_json::to_value(broker.report()).unwrap_or_default()),
        );
    }
    status
}

fn connector_name(kind: &ConnectorKind) -> String {
    crate::query::connector::Connector {
        kind: kind.clone(),
        ..Default::default()
    }
    .name()
    .to_owned()
}

/// Groups queries by the table they read: one ingest per (table, connector).
fn plan_ingests(queries: &[QueryPlan]) -> Result<Vec<Ingest>, Error> {
    let mut ingests: Vec<Ingest> = Vec::new();
    for plan in queries {
        if queries.iter().filter(|p| p.name == plan.name).count() > 1 {
            return Err(NodeError::DuplicateName(plan.name.clone()).into());
        }
        let connector = &plan.source.connector;
        if !connector.is_live() || matches!(connector.kind, ConnectorKind::File(_)) {
            return Err(NodeError::NotLive(plan.name.clone(), connector.name().to_owned()).into());
        }
        match ingests.iter_mut().find(|i| i.table == plan.source.name) {
            Some(ingest) if ingest.kind == connector.kind => ingest.queries.push(plan.name.clone()),
            Some(ingest) => {
                return Err(NodeError::ConflictingTables(
                    ingest.queries[0].clone(),
                    plan.name.clone(),
                    plan.source.name.clone(),
                )
                .into());
            }
            None => ingests.push(Ingest {
                table: plan.source.name.clone(),
                feed: Feed::new(&plan.source.name, DEFAULT_QUEUE_BYTES),
                queries: vec![plan.name.clone()],
                kind: connector.kind.clone(),
            }),
        }
    }
    Ok(ingests)
}
