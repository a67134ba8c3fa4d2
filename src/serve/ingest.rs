//! The node's ingests: one per table being read, shared by every query reading it.
//!
//! An ingest starts when the first query reading its table starts (subscriptions first,
//! so no reading published later misses that query) and stops when the last one stops:
//! a poller with no reader would poll the fleet for nobody, and a push to a table no
//! query reads must be refused, not accepted and dropped. Its source begins to receive
//! only once that query's dataflow is running ([`Ingests::start_sources`]): a query
//! refused at its start (its folder holds another stream) must not have polled a
//! device, moving its counters' baseline, nor have taken a message or a push that no
//! query will read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use super::NodeError;
use crate::query::SourceSchema;
use crate::query::connector::ConnectorKind;
use crate::source::ProcessShare;
use crate::source::SourceLimits;
use crate::source::http_poll::{PollReport, Poller};
use crate::source::http_push::PushTable;
use crate::source::idempotency::{Keys, keys_file};
use crate::source::live::{
    Admit, DEFAULT_QUEUE_BYTES, Feed, FeedConfig, FsyncPolicy, KeyKeeper, LiveInput, Opened,
    WalConfig, now_micros,
};
use crate::source::mqtt::{MqttReport, MqttSource};
use crate::source::wal::{DEFAULT_SEGMENT_BYTES, wal_dir};

/// What receives a table's readings.
enum Receiver {
    Poll(Arc<Poller>),
    Mqtt(Arc<MqttSource>),
    Push(Arc<PushTable>),
}

/// One table being read.
struct Ingest {
    /// The table as its first reader declared it; every reader declares it so.
    schema: SourceSchema,
    feed: Arc<Feed>,
    receiver: Receiver,
    /// Stops the poller or subscription.
    stop: watch::Sender<bool>,
    /// The source's task once it runs; before that, what stops it.
    task: Task,
}

/// Where a table's source stands.
enum Task {
    /// Not receiving yet: the first reader's dataflow has not started.
    Waiting(watch::Receiver<bool>),
    /// Polling or subscribed (a push table has no task: it is called).
    Running(Option<tokio::task::JoinHandle<()>>),
}

impl Ingest {
    fn status(&self) -> Option<Value> {
        match &self.receiver {
            Receiver::Poll(p) => serde_json::to_value(p.report()).ok(),
            Receiver::Mqtt(m) => serde_json::to_value(m.report()).ok(),
            Receiver::Push(_) => None,
        }
    }

    /// Whether the source reaches its devices: an MQTT subscription is connected (a
    /// poller and a push endpoint are always "connected": their devices are many).
    fn connected(&self) -> bool {
        match &self.receiver {
            Receiver::Mqtt(m) => m.report().connected,
            _ => true,
        }
    }
}

/// A table's figures for the status routes.
#[derive(Debug, serde::Serialize)]
pub struct TableStatus {
    /// Connector name.
    pub connector: &'static str,
    /// Readings received since the ingest started.
    pub received: u64,
    /// Queries reading it now.
    pub readers: usize,
    /// Whether the source reaches its devices (MQTT: connected to the broker).
    pub connected: bool,
    /// The poller's or subscription's own figures.
    pub source: Option<Value>,
}

/// Every table being read on this node.
pub struct Ingests {
    tables: Mutex<BTreeMap<String, Ingest>>,
    runtime: tokio::runtime::Handle,
    accepting: Admit,
    limits: SourceLimits,
    /// The output root, where tables keep their write-ahead logs and push tables their
    /// idempotency keys (none: in memory).
    state_root: Option<PathBuf>,
    /// When acknowledgements wait for the log's fsync.
    fsync: FsyncPolicy,
    /// Each table's feed (and log), kept across its ingests.
    feeds: Mutex<BTreeMap<String, Arc<Feed>>>,
    /// What a table's log gave back when it opened, for the first ingest of the table:
    /// key lines for its push endpoint or MQTT marks, counter baselines for its polls.
    recovered: Mutex<BTreeMap<String, Opened>>,
    /// Until [`Ingests::resumed`]: the queries started are those that were running.
    resuming: std::sync::atomic::AtomicBool,
    /// Bytes of every table's log.
    logged: Arc<AtomicU64>,
    /// Poll and MQTT reports of ingests that stopped, for the node's summary.
    finished: Mutex<Reports>,
    /// This process's share of the devices and messages, in a cluster.
    share: ProcessShare,
}

impl Ingests {
    /// No table yet; sources run on `runtime`; tables keep their write-ahead logs
    /// (synced as `fsync` says, their bytes counted in `logged`) and push tables their
    /// idempotency keys under `state_root`.
    pub fn new(
        runtime: tokio::runtime::Handle,
        accepting: Admit,
        limits: SourceLimits,
        state_root: Option<PathBuf>,
        fsync: FsyncPolicy,
        logged: Arc<AtomicU64>,
    ) -> Self {
        Ingests {
            tables: Mutex::new(BTreeMap::new()),
            runtime,
            state_root,
            fsync,
            feeds: Mutex::default(),
            recovered: Mutex::default(),
            resuming: std::sync::atomic::AtomicBool::new(true),
            logged,
            accepting,
            limits,
            finished: Mutex::new(Reports::default()),
            share: ProcessShare::default(),
        }
    }

    /// Receives only this process's share of each live source (a cluster's process).
    pub fn with_share(mut self, share: ProcessShare) -> Self {
        self.share = share;
        self
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Ingest>> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes `query` to its table, starting the table's ingest if it is the first
    /// reader. A table that running queries read declared otherwise (columns, types,
    /// connector or its options) is refused: its one ingest shapes and checks readings
    /// for the declaration it started with.
    pub fn attach(&self, query: &str, schema: &SourceSchema) -> Result<Arc<LiveInput>, NodeError> {
        let mut tables = self.tables();
        let kind = &schema.connector.kind;
        if let Some(ingest) = tables.get(&schema.name) {
            if ingest.schema.same_ingest(schema) {
                return Ok(Arc::new(ingest.feed.subscribe(schema, self.limits)));
            }
            if ingest.feed.readers() > 0 {
                return Err(NodeError::ConflictingTable {
                    query: query.to_owned(),
                    table: schema.name.clone(),
                });
            }
        }
        // An old ingest declared otherwise has no reader: nothing it still publishes
        // reaches a query, so it is retired without waiting for its task (the caller may
        // hold locks that the I/O runtime's handlers take).
        let old = tables.remove(&schema.name);
        let fail = |message: String| NodeError::Source {
            query: query.to_owned(),
            message,
        };
        let feed = self
            .feed(&schema.name, schema)
            .map_err(|e| fail(e.to_string()))?;
        let input = Arc::new(feed.subscribe(schema, self.limits));
        let opened = self
            .recovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&schema.name)
            .unwrap_or_default();
        let (stop, stopped) = watch::channel(false);
        let receiver = match kind {
            ConnectorKind::HttpPoll(spec) => {
                let poller = Poller::new(spec, schema, feed.clone(), self.share, &opened.baselines)
                    .map_err(|e| fail(e.to_string()))?;
                Receiver::Poll(poller)
            }
            ConnectorKind::Mqtt(spec) => {
                let source =
                    MqttSource::new(spec, schema, feed.clone(), &opened.key_lines, self.share)
                        .map_err(|e| fail(e.to_string()))?;
                Receiver::Mqtt(source)
            }
            ConnectorKind::HttpPush(spec) => {
                let keys = Keys::open(
                    self.state_root
                        .as_deref()
                        .map(|root| keys_file(root, &schema.name)),
                    spec.idempotency_ttl,
                    now_micros(),
                    &opened.key_lines,
                )
                .map_err(|e| fail(e.to_string()))?;
                Receiver::Push(PushTable::new(schema, spec, feed.clone(), keys))
            }
            other => {
                return Err(NodeError::NotLive(
                    query.to_owned(),
                    super::connector_name(other),
                ));
            }
        };
        tables.insert(
            schema.name.clone(),
            Ingest {
                schema: schema.clone(),
                feed,
                receiver,
                stop,
                task: Task::Waiting(stopped),
            },
        );
        drop(tables);
        if let Some(old) = old {
            self.retire(&schema.name, old, false);
        }
        Ok(input)
    }

    /// Starts the sources of the ingests whose first reader's dataflow now runs.
    pub fn start_sources(&self) {
        let mut tables = self.tables();
        for (table, ingest) in tables.iter_mut() {
            let Task::Waiting(stopped) = &ingest.task else {
                continue;
            };
            if ingest.feed.readers() == 0 {
                continue;
            }
            let stopped = stopped.clone();
            let task = match &ingest.receiver {
                Receiver::Poll(poller) => Some(self.runtime.spawn(poller.clone().run(stopped))),
                Receiver::Mqtt(source) => Some(self.runtime.spawn(source.clone().run(stopped))),
                Receiver::Push(_) => None,
            };
            ingest.task = Task::Running(task);
            tracing::info!(table = %table, connector = ingest.schema.connector.name(), "Ingest started");
        }
    }

    /// Stops the source of `table` if one reader is all it has left (the query about to
    /// stop), waiting for its polls in flight to publish: what the devices answered
    /// before the query's input ends is then read by it, not logged after its end and
    /// passed over at its next start.
    pub fn quiet_for_last_reader(&self, table: &str) {
        let task = {
            let mut tables = self.tables();
            let Some(ingest) = tables.get_mut(table) else {
                return;
            };
            if ingest.feed.readers() != 1 {
                return;
            }
            ingest.stop.send_replace(true);
            match std::mem::replace(&mut ingest.task, Task::Running(None)) {
                Task::Running(Some(task)) => task,
                _ => return,
            }
        };
        // Waited for without the lock: the source's task runs on the I/O runtime, whose
        // handlers take it.
        let runtime = self.runtime.clone();
        std::thread::scope(|s| {
            s.spawn(|| runtime.block_on(task).ok());
        });
    }

    /// The table's feed: one per table for the node's life, since it owns the table's
    /// write-ahead log (one writer per log), whichever connector fills it.
    fn feed(
        &self,
        table: &str,
        schema: &SourceSchema,
    ) -> Result<Arc<Feed>, crate::source::wal::WalError> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(feed) = feeds.get(table).filter(|f| !f.is_closed()) {
            return Ok(feed.clone());
        }
        let config = FeedConfig {
            capacity: DEFAULT_QUEUE_BYTES,
            chunk_bytes: self.limits.chunk_bytes,
            idle_timeout: schema
                .connector
                .idle_timeout
                .and_then(|us| u64::try_from(us).ok())
                .map(Duration::from_micros),
            wal: self.state_root.as_ref().map(|root| WalConfig {
                dir: wal_dir(root, table),
                fsync: self.fsync,
                segment_bytes: DEFAULT_SEGMENT_BYTES,
            }),
            logged: self.logged.clone(),
            admit: Some(self.accepting.clone()),
        };
        let (feed, mut opened) = Feed::open(table, config)?;
        if !self.resuming.load(std::sync::atomic::Ordering::SeqCst) {
            // Opened for a query started on purpose: see `resumed`.
            opened.baselines.clear();
        }
        if let Ok(mut recovered) = self.recovered.lock() {
            recovered.insert(table.to_owned(), opened);
        }
        feeds.insert(table.to_owned(), feed.clone());
        Ok(feed)
    }

    /// The node has resumed the queries that were running when it last stopped: a query
    /// started later was stopped on purpose, and its polls start each device anew (the
    /// counters' growth while it was stopped was not for it), so the logged baselines go.
    pub fn resumed(&self) {
        let mut recovered = self.recovered.lock().unwrap_or_else(|p| p.into_inner());
        self.resuming
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for opened in recovered.values_mut() {
            opened.baselines.clear();
        }
    }

    /// Stops the ingests no query reads any more.
    pub fn release_unread(&self) {
        let unread: Vec<(String, Ingest)> = {
            let mut tables = self.tables();
            let names: Vec<String> = tables
                .iter()
                .filter(|(_, i)| i.feed.readers() == 0)
                .map(|(t, _)| t.clone())
                .collect();
            names
                .into_iter()
                .filter_map(|t| tables.remove(&t).map(|i| (t, i)))
                .collect()
        };
        // Retired without the lock: retiring waits for the source's task, which needs
        // the I/O runtime, whose handlers take the lock.
        for (table, ingest) in unread {
            self.retire(&table, ingest, true);
        }
    }

    /// Stops an ingest's source; with `wait`, the feed closes once in-flight work has
    /// published.
    fn retire(&self, table: &str, ingest: Ingest, wait: bool) {
        self.retire_source(table, ingest, wait, false)
    }

    /// [`Ingests::retire`]; with `close`, the table's feed closes too (the node stops):
    /// the chunk being filled is cut, and readers' inputs end after what is queued.
    fn retire_source(&self, table: &str, ingest: Ingest, wait: bool, close: bool) {
        ingest.stop.send_replace(true);
        if let Task::Running(Some(task)) = ingest.task
            && wait
        {
            // The source finishes its round (polls in flight) before it returns.
            let runtime = self.runtime.clone();
            std::thread::scope(|s| {
                s.spawn(|| runtime.block_on(task).ok());
            });
        }
        if let Receiver::Push(table) = &ingest.receiver {
            // Its keys are made durable as it goes: the log would otherwise keep their
            // batches, asking a keeper that is gone.
            table.keep_waiting_keys();
        }
        if close {
            ingest.feed.close();
        }
        if let Ok(mut finished) = self.finished.lock() {
            finished.add(table, &ingest.receiver);
        }
        tracing::info!(table, "Ingest stopped: no running query reads the table");
    }

    /// Stops every source (polls in flight finish, subscriptions end); readings already
    /// received stay queued for the queries.
    pub fn stop_all(&self) {
        let tables = std::mem::take(&mut *self.tables());
        for (table, ingest) in tables {
            self.retire_source(&table, ingest, true, true);
        }
        let feeds: Vec<Arc<Feed>> = self
            .feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for feed in feeds {
            feed.close();
        }
    }

    /// The push endpoint of `table`, if a running query reads it over `http_push`. A
    /// table whose last reader is stopping takes nothing: what it accepted would go
    /// nowhere.
    pub fn push_table(&self, table: &str) -> Option<Arc<PushTable>> {
        let tables = self.tables();
        let ingest = tables.get(table)?;
        match &ingest.receiver {
            Receiver::Push(p)
                if ingest.feed.readers() > 0 && matches!(ingest.task, Task::Running(_)) =>
            {
                Some(p.clone())
            }
            _ => None,
        }
    }

    /// Tables that take pushed readings now.
    pub fn push_tables(&self) -> Vec<String> {
        self.tables()
            .iter()
            .filter(|(_, i)| matches!(i.receiver, Receiver::Push(_)))
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Largest body any push table takes.
    pub fn max_push_body(&self) -> Option<usize> {
        self.tables()
            .values()
            .filter_map(|i| match &i.receiver {
                Receiver::Push(p) => Some(p.max_body()),
                _ => None,
            })
            .max()
    }

    /// Every table's figures now.
    pub fn status(&self) -> BTreeMap<String, TableStatus> {
        self.tables()
            .iter()
            .map(|(table, ingest)| {
                let status = TableStatus {
                    connector: super::connector_name_static(&ingest.schema.connector.kind),
                    received: ingest.feed.published(),
                    readers: ingest.feed.readers(),
                    connected: ingest.connected(),
                    source: ingest.status(),
                };
                (table.clone(), status)
            })
            .collect()
    }

    /// Tables whose source does not reach its devices now.
    pub fn disconnected(&self) -> Vec<String> {
        self.tables()
            .iter()
            .filter(|(_, i)| !i.connected())
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Readings received per table since the node started.
    pub fn received(&self) -> BTreeMap<String, u64> {
        self.feeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(table, feed)| (table.clone(), feed.published()))
            .collect()
    }

    /// Poll and MQTT reports: of running ingests, and the last of stopped ones.
    pub fn reports(&self) -> Reports {
        let mut reports = self.finished.lock().map(|f| f.clone()).unwrap_or_default();
        for (table, ingest) in self.tables().iter() {
            reports.add(table, &ingest.receiver);
        }
        reports
    }
}

/// The pollers' and subscriptions' figures by table.
#[derive(Clone, Debug, Default)]
pub struct Reports {
    /// Polled tables.
    pub polls: BTreeMap<String, PollReport>,
    /// MQTT tables.
    pub mqtt: BTreeMap<String, MqttReport>,
}

impl Reports {
    fn add(&mut self, table: &str, receiver: &Receiver) {
        match receiver {
            Receiver::Poll(p) => {
                self.polls.insert(table.to_owned(), p.report());
            }
            Receiver::Mqtt(m) => {
                self.mqtt.insert(table.to_owned(), m.report());
            }
            Receiver::Push(_) => {}
        }
    }
}
