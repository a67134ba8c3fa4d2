//! The node's queries: each one a dataflow on the node's workers that an operator starts
//! and stops while the others run.
//!
//! A query comes from a file named on the command line (or in the config) or is added
//! over the API; added ones are kept in `<output>/_state/<query>/query.sql`, and every
//! query's wanted state (running or stopped) in `<output>/_state/<query>/node.json`, so
//! a restarted node comes back as the operator left it. Stopping says what becomes of
//! the open windows ([`EndOfInput`]): `close` writes them as final, `keep` writes them
//! and resumes them at the next start, `discard` gives them up.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::ingest::Ingests;
use crate::Error;
use crate::engine::control::{Control, EndOfInput, Metrics, OpenState};
use crate::engine::{self, RunConfig, RunSummary, RunningQuery, Workers};
use crate::query::{self, QueryError, QueryPlan};
use crate::source::live::LiveInput;
use crate::source::{Input, SourceLimits};
use crate::sync::{Backlog, Syncer};

/// Why a control request cannot be done; each maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// No such query (404).
    #[error("no query named `{0}` on this node")]
    NotFound(String),
    /// The request does not fit the query's state (409).
    #[error("{0}")]
    Conflict(String),
    /// The query text is wrong (400), with its position when it has one.
    #[error("{message}")]
    Invalid {
        /// `edgeflow check`'s message.
        message: String,
        /// 1-based line, when the mistake has a place.
        line: Option<u64>,
        /// 1-based column.
        column: Option<u64>,
    },
    /// The node failed doing it (500).
    #[error("{0}")]
    Failed(String),
    /// The node is stopping and starts nothing more (503).
    #[error("the node is stopping: it starts and adds no query")]
    Stopping,
}

impl From<QueryError> for ControlError {
    fn from(e: QueryError) -> Self {
        let (line, column) = match &e {
            QueryError::At { position, .. } => (Some(position.line), Some(position.column)),
            _ => (None, None),
        };
        ControlError::Invalid {
            message: e.to_string(),
            line,
            column,
        }
    }
}

/// Where a query is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryState {
    /// Its dataflow runs.
    Running,
    /// Asked to stop: its last readings are being processed and its windows written.
    Stopping,
    /// Not running.
    Stopped,
    /// Its last run ended with an error.
    Failed,
}

/// Counters of a query over every run since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Readings decoded.
    pub readings: u64,
    /// Bad lines and rejected readings (dead letters).
    pub bad: u64,
    /// Late (reading, window) rows.
    pub late: u64,
    /// (reading, window) pairs taken within the allowed lateness, as corrections.
    #[serde(default)]
    pub corrections: u64,
    /// Result rows written.
    pub rows: u64,
    /// Files committed.
    pub files: u64,
    /// Bytes of committed files.
    pub bytes: u64,
    /// (reading, window) pairs a registry `INNER` join dropped: no registry row.
    #[serde(default)]
    pub registry_unmatched: u64,
    /// Rows in the registry version in force (the latest run's).
    #[serde(default)]
    pub registry_rows: u64,
    /// Registry reloads taken.
    #[serde(default)]
    pub registry_reloads: u64,
    /// Registry reloads refused for a malformed row.
    #[serde(default)]
    pub registry_errors: u64,
}

impl Figures {
    fn of(metrics: &Metrics) -> Self {
        Figures {
            readings: Metrics::get(&metrics.readings),
            bad: Metrics::get(&metrics.bad),
            late: Metrics::get(&metrics.late),
            corrections: Metrics::get(&metrics.corrections),
            rows: Metrics::get(&metrics.rows),
            files: Metrics::get(&metrics.files),
            bytes: Metrics::get(&metrics.bytes_written),
            registry_unmatched: Metrics::get(&metrics.registry_unmatched),
            registry_rows: Metrics::get(&metrics.registry_rows),
            registry_reloads: Metrics::get(&metrics.registry_reloads),
            registry_errors: Metrics::get(&metrics.registry_errors),
        }
    }

    fn plus(self, o: Figures) -> Figures {
        Figures {
            readings: self.readings + o.readings,
            bad: self.bad + o.bad,
            late: self.late + o.late,
            corrections: self.corrections + o.corrections,
            rows: self.rows + o.rows,
            files: self.files + o.files,
            bytes: self.bytes + o.bytes,
            registry_unmatched: self.registry_unmatched + o.registry_unmatched,
            // A gauge: the later run's (`o`), once it has read its registry.
            registry_rows: if o.registry_rows > 0 {
                o.registry_rows
            } else {
                self.registry_rows
            },
            registry_reloads: self.registry_reloads + o.registry_reloads,
            registry_errors: self.registry_errors + o.registry_errors,
        }
    }
}

/// A query in the list.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryInfo {
    /// Name (output folder).
    pub name: String,
    /// State.
    pub state: QueryState,
    /// The table it reads.
    pub table: String,
    /// That table's connector.
    pub connector: String,
    /// `file:<path>` for a query from a file, `api` for one added at run time.
    pub origin: String,
    /// When it entered its state (RFC 3339).
    pub since: String,
}

/// One query in full.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueryDetail {
    /// What the list shows.
    #[serde(flatten)]
    pub info: QueryInfo,
    /// Readings decoded per second, over the last few seconds.
    pub readings_per_s: f64,
    /// Counters since the node started.
    pub figures: Figures,
    /// The watermark (RFC 3339): windows ending before it are closed.
    pub watermark: Option<String>,
    /// How far the watermark is behind the node's clock, seconds.
    pub watermark_lag_s: Option<f64>,
    /// Windows, (window, key) groups and state bytes open now.
    pub open: OpenState,
    /// Its files not in the sync target yet.
    pub sync: Option<Backlog>,
    /// Why its last run failed.
    pub last_error: Option<String>,
    /// Runs since the node started.
    pub runs: u64,
    /// The query text.
    pub sql: String,
}

/// The wanted state, kept across restarts.
#[derive(Debug, Serialize, Deserialize)]
struct Wanted {
    state: QueryState,
}

/// A query's running dataflow.
struct Run {
    query: RunningQuery,
    input: Arc<LiveInput>,
}

/// What is read off a query while it runs or stops.
#[derive(Clone)]
struct Live {
    metrics: Arc<Metrics>,
    control: Arc<Control>,
    started_max_event_time: Option<i64>,
}

struct Entry {
    plan: QueryPlan,
    sql: String,
    origin: String,
    state: QueryState,
    since: SystemTime,
    last_error: Option<String>,
    run: Option<Run>,
    live: Option<Live>,
    /// Figures of finished runs.
    done: Figures,
    runs: u64,
    max_event_time: Option<i64>,
    samples: VecDeque<(Instant, u64)>,
    /// Close-to-durable samples of the running run already handed to `/metrics`.
    durable_seen: usize,
    /// Samples of ended runs not handed to `/metrics` yet, seconds.
    durable_unseen: Vec<f64>,
    /// `--fresh` still to be applied (at the first start).
    fresh: bool,
    /// When the running dataflow started or last checkpointed.
    checkpointed: Instant,
    /// The summary of the run's legs so far (a checkpoint ends a leg, not the run): the
    /// node's summary shows one per run, whatever the number of checkpoints.
    legs: Option<RunSummary>,
}

impl Entry {
    fn figures(&self) -> Figures {
        match &self.live {
            Some(live) => self.done.plus(Figures::of(&live.metrics)),
            None => self.done,
        }
    }

    fn info(&self) -> QueryInfo {
        QueryInfo {
            name: self.plan.name.clone(),
            state: self.state,
            table: self.plan.source.name.clone(),
            connector: self.plan.source.connector.name().to_owned(),
            origin: self.origin.clone(),
            since: rfc3339(self.since),
        }
    }

    /// Close-to-durable samples of `metrics` not handed to `/metrics` yet, seconds.
    fn new_durable_samples(&mut self, metrics: &Metrics) -> Vec<f64> {
        let Ok(samples) = metrics.close_to_durable.lock() else {
            return Vec::new();
        };
        let new = samples
            .get(self.durable_seen..)
            .unwrap_or_default()
            .iter()
            .map(std::time::Duration::as_secs_f64)
            .collect();
        self.durable_seen = samples.len();
        new
    }

    fn set_state(&mut self, state: QueryState) {
        self.state = state;
        self.since = SystemTime::now();
    }
}

/// Every query of the node.
pub struct Queries {
    output: PathBuf,
    workers: Arc<Workers>,
    ingests: Arc<Ingests>,
    syncer: Option<Arc<Syncer>>,
    limits: SourceLimits,
    /// Whether runs compact closed hours when they checkpoint.
    compaction: bool,
    entries: Mutex<BTreeMap<String, Entry>>,
    /// Set (under the `entries` lock) when the node stops: no start or add after it,
    /// so every run is among those [`Queries::stop_all`] stops.
    closing: AtomicBool,
    /// Summaries of finished runs, for the node's summary.
    finished: Mutex<Vec<RunSummary>>,
    /// Failures, for the node's summary.
    failures: Mutex<Vec<(String, String)>>,
    /// Held by a checkpoint while its query has no dataflow, and by stops, so a stop
    /// never finds a query between two dataflows.
    transitions: Mutex<()>,
    /// This node is process `.0` of a cluster of `.1`: its queries are fixed at start.
    cluster: Option<(usize, usize)>,
}

/// How many rate samples are kept (one a second).
const RATE_SAMPLES: usize = 6;

impl Queries {
    /// No query yet.
    pub fn new(
        output: PathBuf,
        workers: Arc<Workers>,
        ingests: Arc<Ingests>,
        syncer: Option<Arc<Syncer>>,
        limits: SourceLimits,
    ) -> Self {
        Queries {
            output,
            workers,
            ingests,
            syncer,
            limits,
            compaction: true,
            entries: Mutex::new(BTreeMap::new()),
            closing: AtomicBool::new(false),
            finished: Mutex::new(Vec::new()),
            failures: Mutex::new(Vec::new()),
            transitions: Mutex::new(()),
            cluster: None,
        }
    }

    /// The same for process `process` of a cluster of `processes`: every process builds each query's
    /// dataflows in one order, so the set of queries is the one every process started
    /// with (no start, stop, add or remove over the API), and a checkpoint compacts
    /// nothing (a peer may not have committed the run before it; the next start does).
    pub fn in_cluster(mut self, process: usize, processes: usize) -> Self {
        self.cluster = Some((process, processes));
        self
    }

    /// This process and the processes of its cluster, if it is one's.
    pub fn cluster(&self) -> Option<(usize, usize)> {
        self.cluster
    }

    fn steerable(&self) -> Result<(), ControlError> {
        match self.cluster {
            None => Ok(()),
            Some((process, _)) => Err(ControlError::Conflict(format!(
                "this node is process {process} of a cluster, whose queries are those every process started with: to change them, stop the cluster (a signal to any process), change the query files on every host, and start it again"
            ))),
        }
    }

    /// The same, compacting closed hours at checkpoints only when `on`.
    pub fn with_compaction(mut self, on: bool) -> Self {
        self.compaction = on;
        self
    }

    fn transition(&self) -> MutexGuard<'_, ()> {
        self.transitions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entries(&self) -> MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.output.join("_state").join(name)
    }

    /// Registers a query from a file of the command line; `fresh` forgets what earlier
    /// runs kept at its first start.
    pub fn register(&self, plan: QueryPlan, fresh: bool) -> Result<(), ControlError> {
        let sql = std::fs::read_to_string(&plan.file).unwrap_or_default();
        let origin = format!("file:{}", plan.file.display());
        self.insert(plan, sql, origin, fresh)
    }

    fn insert(
        &self,
        plan: QueryPlan,
        sql: String,
        origin: String,
        fresh: bool,
    ) -> Result<(), ControlError> {
        self.insert_kept(plan, sql, origin, fresh, || Ok(()))
    }

    /// Inserts a query; `keep` runs under the lock once the name is known to be free and
    /// before the query is visible, so its files are written before anyone can act on it.
    fn insert_kept(
        &self,
        plan: QueryPlan,
        sql: String,
        origin: String,
        fresh: bool,
        keep: impl FnOnce() -> Result<(), ControlError>,
    ) -> Result<(), ControlError> {
        if !plan.source.connector.is_live()
            || matches!(
                plan.source.connector.kind,
                crate::query::connector::ConnectorKind::File(_)
            )
        {
            return Err(ControlError::Invalid {
                message: super::NodeError::NotLive(
                    plan.name.clone(),
                    plan.source.connector.name().to_owned(),
                )
                .to_string(),
                line: None,
                column: None,
            });
        }
        let mut entries = self.entries();
        if entries.contains_key(&plan.name) {
            return Err(ControlError::Conflict(format!(
                "a query named `{}` is already on this node: query names (output folders) must differ",
                plan.name
            )));
        }
        keep()?;
        entries.insert(
            plan.name.clone(),
            Entry {
                plan,
                sql,
                origin,
                state: QueryState::Stopped,
                since: SystemTime::now(),
                last_error: None,
                run: None,
                live: None,
                done: Figures::default(),
                runs: 0,
                max_event_time: None,
                samples: VecDeque::new(),
                durable_seen: 0,
                durable_unseen: Vec::new(),
                fresh,
                checkpointed: Instant::now(),
                legs: None,
            },
        );
        Ok(())
    }

    /// Registers the queries added over the API by earlier runs of the node.
    pub fn restore(&self) -> Result<Vec<String>, Error> {
        let dir = self.output.join("_state");
        let Ok(listing) = std::fs::read_dir(&dir) else {
            return Ok(Vec::new());
        };
        let mut restored = Vec::new();
        let mut paths: Vec<PathBuf> = listing
            .filter_map(|e| e.ok().map(|e| e.path().join("query.sql")))
            .filter(|p| p.is_file())
            .collect();
        paths.sort();
        for path in paths {
            let Some(name) = path
                .parent()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .map(str::to_owned)
            else {
                continue;
            };
            if self.entries().contains_key(&name) {
                tracing::warn!(query = %name, "A query file of the command line has the name of a query added over the API; the file's wins");
                continue;
            }
            let sql = std::fs::read_to_string(&path).map_err(|source| Error::Output {
                path: path.clone(),
                source,
            })?;
            // Relative paths in it (a file source, a registry) resolve as when it was
            // added: against the node's working folder, not the state folder.
            let parsed = query::parse(&name, Path::new(&format!("{name}.sql")), &sql).map(|plan| {
                QueryPlan {
                    file: path.clone(),
                    ..plan
                }
            });
            match parsed {
                Ok(plan) => match self.insert(plan, sql, "api".into(), false) {
                    Ok(()) => restored.push(name),
                    Err(e) => {
                        tracing::error!(query = %name, error = %e, "Cannot restore a query added over the API")
                    }
                },
                Err(e) => {
                    tracing::error!(query = %name, error = %e, "Cannot restore a query added over the API")
                }
            }
        }
        Ok(restored)
    }

    /// Starts every query whose wanted state is running (all of them, unless an
    /// operator stopped one before the node last stopped).
    pub fn start_wanted(&self) -> Vec<(String, ControlError)> {
        let names: Vec<String> = self.entries().keys().cloned().collect();
        let mut failed = Vec::new();
        for name in names {
            // Every process of a cluster builds every query's dataflows: a stop an
            // operator left in one folder (from a single node's life) does not count.
            let wanted = if self.cluster.is_some() {
                None
            } else {
                self.wanted(&name)
            };
            match wanted {
                Some(QueryState::Stopped) => {
                    tracing::info!(query = %name, "Left stopped, as an operator stopped it: `edgeflow ctl start {name}` starts it");
                }
                _ => {
                    if let Err(e) = self.start_query(&name) {
                        tracing::error!(query = %name, error = %e, "Query cannot start");
                        failed.push((name, e));
                    }
                }
            }
        }
        failed
    }

    fn wanted(&self, name: &str) -> Option<QueryState> {
        let text = std::fs::read(self.dir(name).join("node.json")).ok()?;
        serde_json::from_slice::<Wanted>(&text)
            .ok()
            .map(|w| w.state)
    }

    fn want(&self, name: &str, state: QueryState) -> Result<(), ControlError> {
        let bytes = serde_json::to_vec(&Wanted { state })
            .map_err(|e| ControlError::Failed(e.to_string()))?;
        let path = self.dir(name).join("node.json");
        crate::sink::commit::commit_bytes(&path, &bytes)
            .map_err(|e| ControlError::Failed(format!("{}: {e}", path.display())))
    }

    /// Adds a query from its text, keeps it for restarts, and starts it if asked. All
    /// or nothing: a query that cannot start is not added.
    pub fn add(&self, name: &str, sql: &str, start: bool) -> Result<QueryInfo, ControlError> {
        self.steerable()?;
        if self.closing.load(Ordering::SeqCst) {
            return Err(ControlError::Stopping);
        }
        let path = self.dir(name).join("query.sql");
        if !query::is_valid_name(name) {
            return Err(ControlError::Invalid {
                message: format!(
                    "`{name}` is not a valid query name (it names the query's output folder): use only letters, digits, `_` and `-`"
                ),
                line: None,
                column: None,
            });
        }
        // Errors name the query as the file it will be kept in.
        let plan = query::parse(name, Path::new(&format!("{name}.sql")), sql)?;
        let plan = QueryPlan {
            file: path.clone(),
            ..plan
        };
        // The wanted state first: a `query.sql` is never without its `node.json`.
        self.insert_kept(plan, sql.to_owned(), "api".into(), false, || {
            self.want(name, QueryState::Stopped)?;
            crate::sink::commit::commit_bytes(&path, sql.as_bytes())
                .map_err(|e| ControlError::Failed(format!("{}: {e}", path.display())))
        })?;
        tracing::info!(query = %name, "Query added");
        if !start {
            return self.info(name);
        }
        self.start(name).inspect_err(|_| {
            if let Err(e) = self.remove(name) {
                tracing::error!(query = %name, error = %e, "Cannot take back a query that failed to start");
            }
        })
    }

    /// Starts a stopped query's dataflow on the node's workers (asked over the API).
    pub fn start(&self, name: &str) -> Result<QueryInfo, ControlError> {
        self.steerable()?;
        self.start_query(name)
    }

    /// Starts a stopped query's dataflow on the node's workers.
    fn start_query(&self, name: &str) -> Result<QueryInfo, ControlError> {
        let mut entries = self.entries();
        if self.closing.load(Ordering::SeqCst) {
            return Err(ControlError::Stopping);
        }
        let entry = entries
            .get_mut(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        if matches!(entry.state, QueryState::Running | QueryState::Stopping) {
            return Err(ControlError::Conflict(format!(
                "query `{name}` is {}",
                state_word(entry.state)
            )));
        }
        let input = self
            .ingests
            .attach(name, &entry.plan.source)
            .map_err(|e| match e {
                super::NodeError::ConflictingTable { .. } => ControlError::Conflict(e.to_string()),
                other => ControlError::Failed(other.to_string()),
            })?;
        // Written under the lock, so a concurrent stop's `Stopped` cannot be overwritten.
        // A cluster's processes run every query whatever a folder says (so its wanted
        // state, from a single node's life, stays as it was).
        if self.cluster.is_none()
            && let Err(e) = self.want(name, QueryState::Running)
        {
            input.leave();
            drop(entries);
            self.ingests.release_unread();
            return Err(e);
        }
        if let Err(e) = self.launch(entry, input, false) {
            drop(entries);
            self.ingests.release_unread();
            // What the operator can mend (the folder holds another stream, an input
            // cannot be opened) conflicts with the request; the rest is the node's.
            return Err(match e.kind() {
                crate::error::ErrorKind::User => ControlError::Conflict(e.to_string()),
                _ => ControlError::Failed(e.to_string()),
            });
        }
        entry.runs += 1;
        let info = entry.info();
        drop(entries);
        tracing::info!(query = %name, "Query started");
        Ok(info)
    }

    /// Builds the query's dataflow over `input` (its own subscription to the table)
    /// as the continuation of its stream; on failure the entry says why.
    fn launch(
        &self,
        entry: &mut Entry,
        input: Arc<LiveInput>,
        successor: bool,
    ) -> Result<(), Error> {
        let mut run = RunConfig::new(
            entry.plan.clone(),
            Input::Live(input.clone()),
            self.output.clone(),
        );
        run.workers = self.workers.peers();
        run.chunk_bytes = self.limits.chunk_bytes;
        run.max_line_bytes = self.limits.max_line_bytes;
        run.fresh = std::mem::take(&mut entry.fresh);
        // In a cluster only the first run after the start compacts: then every peer is
        // known to have committed the runs before (the processes compared positions).
        run.compaction = self.compaction && (self.cluster.is_none() || !successor);
        if let Some(syncer) = &self.syncer {
            crate::wiring::attach_sync(&mut run, &syncer.handle());
        }
        let control = run.control.clone();
        let started = match engine::start(run, &self.workers) {
            Ok(started) => started,
            Err(e) => {
                input.leave();
                entry.last_error = Some(e.to_string());
                entry.set_state(QueryState::Failed);
                return Err(e);
            }
        };
        entry.live = Some(Live {
            metrics: started.metrics().clone(),
            control,
            started_max_event_time: started.max_event_time(),
        });
        entry.run = Some(Run {
            query: started,
            input,
        });
        // Only now that the dataflow runs may a new ingest of its table receive.
        self.ingests.start_sources();
        entry.last_error = None;
        if !successor {
            entry.samples.clear();
        }
        entry.durable_seen = 0;
        entry.checkpointed = Instant::now();
        if entry.state != QueryState::Running {
            entry.set_state(QueryState::Running);
        }
        Ok(())
    }

    /// Checkpoints every query that has run `every` since its last checkpoint and read
    /// something since (an idle query has nothing new to keep).
    pub fn checkpoint_due(&self, every: std::time::Duration) {
        for name in self.due(every, true) {
            if let Err(why) = self.checkpoint(&name) {
                tracing::debug!(query = %name, why, "No checkpoint");
            }
        }
    }

    /// The running queries, in name order, that ran `every` since their last
    /// checkpoint; with `read`, only those that read something since. A cluster's
    /// process 0 asks without `read`: another process may have read what it did not.
    pub fn due(&self, every: std::time::Duration, read: bool) -> Vec<String> {
        self.entries()
            .iter()
            .filter(|(_, e)| {
                e.run.as_ref().is_some_and(|r| !read || r.input.has_read())
                    && e.checkpointed.elapsed() >= every
            })
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Checkpoints a running query: its input ends at a chunk boundary, its open
    /// windows' state is saved unwritten with the log position it reflects (so the log
    /// before it can go, and a crash replays only what follows), and a new dataflow
    /// resumes from there at once. Readings arriving meanwhile wait in the log.
    ///
    /// Returns why the query did not go on to a new dataflow, when it did not: a
    /// process of a cluster cannot go on without it, as the others did.
    pub fn checkpoint(&self, name: &str) -> Result<(), String> {
        let _transition = self.transition();
        let (run, plan) = {
            let mut entries = self.entries();
            let Some(entry) = entries.get_mut(name) else {
                return Err("no such query".into());
            };
            if self.closing.load(Ordering::SeqCst) || entry.state != QueryState::Running {
                return Err(format!("it is {}", state_word(entry.state)));
            }
            let Some(run) = entry.run.take() else {
                return Err("it has no dataflow".into());
            };
            (run, entry.plan.clone())
        };
        // The successor subscribes first, so the log keeps what it will read.
        let successor = match self.ingests.attach(name, &plan.source) {
            Ok(input) => input,
            Err(e) => {
                tracing::warn!(query = %name, error = %e, "Checkpoint skipped");
                if let Some(entry) = self.entries().get_mut(name) {
                    entry.run = Some(run);
                    entry.checkpointed = Instant::now();
                }
                return Err(format!("its checkpoint was skipped: {e}"));
            }
        };
        let started = Instant::now();
        run.query.control().set_end_of_input(EndOfInput::Checkpoint);
        run.query.control().drain();
        run.input.finish();
        let ended = self.settle(name, run, false);
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(name) else {
            successor.leave();
            return Err("it was removed".into());
        };
        if !ended {
            let why = entry
                .last_error
                .clone()
                .unwrap_or_else(|| "its run failed".into());
            successor.leave();
            drop(entries);
            self.ingests.release_unread();
            return Err(why);
        }
        match self.launch(entry, successor, true) {
            Ok(()) => {
                tracing::debug!(query = %name, ms = started.elapsed().as_millis() as u64, "Checkpoint");
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                tracing::error!(query = %name, error = %message, "The query could not go on after its checkpoint");
                if let Ok(mut f) = self.failures.lock() {
                    f.push((name.to_owned(), message.clone()));
                }
                drop(entries);
                self.ingests.release_unread();
                Err(message)
            }
        }
    }

    /// Stops a running query: its input ends after what it has received, the open
    /// windows are treated as `windows` says, and the call returns once that is written.
    pub fn stop(&self, name: &str, windows: EndOfInput) -> Result<QueryInfo, ControlError> {
        self.steerable()?;
        let _transition = self.transition();
        let run = {
            let mut entries = self.entries();
            let entry = entries
                .get_mut(name)
                .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
            let Some(run) = entry.run.take() else {
                return Err(ControlError::Conflict(format!(
                    "query `{name}` is {}",
                    state_word(entry.state)
                )));
            };
            // Kept before anything changes: if it cannot be, the query runs on.
            if let Err(e) = self.want(name, QueryState::Stopped) {
                entry.run = Some(run);
                return Err(e);
            }
            entry.set_state(QueryState::Stopping);
            run
        };
        tracing::info!(query = %name, windows = ?windows, "Stopping query");
        self.ingests.quiet_for_last_reader(run.input.table());
        run.query.control().set_end_of_input(windows);
        run.query.control().drain();
        run.input.finish();
        self.finish(name, run);
        self.ingests.release_unread();
        self.info(name)
    }

    /// Waits for a run that is ending and records how it ended.
    fn finish(&self, name: &str, run: Run) {
        self.settle(name, run, true);
    }

    /// Waits for a run that is ending and records its figures; with `stopping` the
    /// query is stopped when it ended well (a checkpoint goes on with a new run).
    /// Returns whether it ended well.
    fn settle(&self, name: &str, run: Run, stopping: bool) -> bool {
        let max_event_time = run.query.max_event_time();
        let result = run.query.wait();
        run.input.leave();
        let mut entries = self.entries();
        let Some(entry) = entries.get_mut(name) else {
            return false;
        };
        if let Some(live) = entry.live.take() {
            entry.done = entry.done.plus(Figures::of(&live.metrics));
            let unseen = entry.new_durable_samples(&live.metrics);
            entry.durable_unseen.extend(unseen);
        }
        entry.max_event_time = entry.max_event_time.max(max_event_time);
        match result {
            Ok(summary) => {
                let summary = match entry.legs.take() {
                    Some(before) => before.then(summary),
                    None => summary,
                };
                if stopping {
                    entry.set_state(QueryState::Stopped);
                    if let Ok(mut f) = self.finished.lock() {
                        f.push(summary);
                    }
                } else {
                    entry.legs = Some(summary);
                }
                true
            }
            Err(e) => {
                if self.cluster.is_some() {
                    tracing::error!(query = %name, error = %e, "Query failed: this process of the cluster stops");
                } else {
                    tracing::error!(query = %name, error = %e, "Query failed; the node goes on with the others");
                }
                entry.last_error = Some(e.to_string());
                entry.set_state(QueryState::Failed);
                if let Some(before) = entry.legs.take()
                    && let Ok(mut f) = self.finished.lock()
                {
                    f.push(before);
                }
                if let Ok(mut f) = self.failures.lock() {
                    f.push((name.to_owned(), e.to_string()));
                }
                false
            }
        }
    }

    /// Removes a stopped query from the node; its outputs and stream state stay (a query
    /// added again under its name continues its revisions).
    pub fn remove(&self, name: &str) -> Result<(), ControlError> {
        self.steerable()?;
        let mut entries = self.entries();
        let entry = entries
            .get(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        if matches!(entry.state, QueryState::Running | QueryState::Stopping) {
            return Err(ControlError::Conflict(format!(
                "query `{name}` is {}: stop it first (POST /api/v1/queries/{name}/stop?windows=close|keep|discard)",
                state_word(entry.state)
            )));
        }
        for file in ["query.sql", "node.json"] {
            match std::fs::remove_file(self.dir(name).join(file)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(ControlError::Failed(e.to_string())),
            }
        }
        // The removal is durable before it is answered: the query does not come back.
        if let Err(e) = std::fs::File::open(self.dir(name)).and_then(|d| d.sync_all()) {
            tracing::warn!(query = %name, error = %e, "Cannot sync the query's state folder");
        }
        entries.remove(name);
        tracing::info!(query = %name, "Query removed; its outputs stay");
        Ok(())
    }

    /// Records how queries whose dataflow ended by itself (a failure) ended, and takes
    /// a rate sample of the running ones.
    pub fn tick(&self) {
        let ended: Vec<(String, Run)> = {
            let mut entries = self.entries();
            let now = Instant::now();
            let mut ended = Vec::new();
            for (name, entry) in entries.iter_mut() {
                if let Some(live) = &entry.live {
                    // Counted over the query's runs, so a checkpoint's new run goes on
                    // with the rate rather than starting it from nothing.
                    let readings = entry.done.readings + Metrics::get(&live.metrics.readings);
                    entry.samples.push_back((now, readings));
                    while entry.samples.len() > RATE_SAMPLES {
                        entry.samples.pop_front();
                    }
                }
                if entry.run.as_ref().is_some_and(|r| r.query.is_finished())
                    && let Some(run) = entry.run.take()
                {
                    ended.push((name.clone(), run));
                }
            }
            ended
        };
        for (name, run) in ended {
            self.finish(&name, run);
        }
        self.ingests.release_unread();
    }

    /// Stops every running query keeping its windows (the node is stopping): the
    /// sources have stopped, so each input ends after what was received.
    pub fn stop_all(&self) {
        let _transition = self.transition();
        let runs: Vec<(String, Run)> = {
            let mut entries = self.entries();
            self.closing.store(true, Ordering::SeqCst);
            entries
                .iter_mut()
                .filter_map(|(name, e)| {
                    let run = e.run.take()?;
                    e.set_state(QueryState::Stopping);
                    Some((name.clone(), run))
                })
                .collect()
        };
        for (_, run) in &runs {
            run.query.control().drain();
            run.input.finish();
        }
        for (name, run) in runs {
            self.finish(&name, run);
        }
    }

    /// Every query.
    pub fn list(&self) -> Vec<QueryInfo> {
        self.entries().values().map(Entry::info).collect()
    }

    /// Refuses every start and add from now on (the node is stopping).
    pub fn close(&self) {
        let _entries = self.entries();
        self.closing.store(true, Ordering::SeqCst);
    }

    /// Names of the running queries.
    pub fn running(&self) -> usize {
        self.entries()
            .values()
            .filter(|e| e.state == QueryState::Running)
            .count()
    }

    fn info(&self, name: &str) -> Result<QueryInfo, ControlError> {
        self.entries()
            .get(name)
            .map(Entry::info)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }

    /// One query in full.
    pub fn detail(&self, name: &str) -> Result<QueryDetail, ControlError> {
        let entries = self.entries();
        let entry = entries
            .get(name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))?;
        let readings_per_s = match (entry.samples.front(), entry.samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (b.1.saturating_sub(a.1)) as f64 / (b.0 - a.0).as_secs_f64()
            }
            _ => 0.0,
        };
        let max_event_time = match &entry.live {
            Some(live) => live
                .control
                .max_event_time()
                .max(live.started_max_event_time),
            None => entry.max_event_time,
        };
        let watermark =
            max_event_time.map(|m| m.saturating_sub(entry.plan.source.max_out_of_orderness));
        let now = crate::source::live::now_micros();
        Ok(QueryDetail {
            info: entry.info(),
            readings_per_s,
            figures: entry.figures(),
            watermark: watermark.map(crate::time::format_rfc3339_micros),
            watermark_lag_s: watermark.map(|w| (now - w) as f64 / 1e6),
            open: entry
                .live
                .as_ref()
                .map(|l| l.metrics.open_state())
                .unwrap_or_default(),
            sync: self.syncer.as_ref().map(|s| s.backlog(name)),
            last_error: entry.last_error.clone(),
            runs: entry.runs,
            sql: entry.sql.clone(),
        })
    }

    /// Every query's detail, for `/metrics`.
    pub fn details(&self) -> Vec<QueryDetail> {
        let names: Vec<String> = self.entries().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|name| self.detail(&name).ok())
            .collect()
    }

    /// Samples of window close to durable file not handed out yet, in seconds.
    pub fn take_close_to_durable(&self) -> Vec<(String, Vec<f64>)> {
        self.entries()
            .iter_mut()
            .map(|(name, e)| {
                let mut samples = std::mem::take(&mut e.durable_unseen);
                if let Some(metrics) = e.live.as_ref().map(|l| l.metrics.clone()) {
                    samples.extend(e.new_durable_samples(&metrics));
                }
                (name.clone(), samples)
            })
            .collect()
    }

    /// A query that failed, or whose running dataflow is failing (its workers stopped
    /// reading on an error): `(name, why)`.
    pub fn failure(&self) -> Option<(String, String)> {
        if let Some(first) = self.failures.lock().ok().and_then(|f| f.first().cloned()) {
            return Some(first);
        }
        self.entries().iter().find_map(|(name, entry)| {
            entry
                .live
                .as_ref()
                .filter(|live| live.control.failed())
                .map(|_| (name.clone(), "its dataflow failed (see the log)".to_owned()))
        })
    }

    /// Summaries of the runs that ended, and the failures.
    pub fn outcomes(&self) -> (Vec<RunSummary>, Vec<(String, String)>) {
        let mut runs = self.finished.lock().map(|f| f.clone()).unwrap_or_default();
        // Runs whose last leg ended at a checkpoint and never went on.
        runs.extend(self.entries().values().filter_map(|e| e.legs.clone()));
        (
            runs,
            self.failures.lock().map(|f| f.clone()).unwrap_or_default(),
        )
    }
}

fn state_word(state: QueryState) -> &'static str {
    match state {
        QueryState::Running => "running",
        QueryState::Stopping => "stopping",
        QueryState::Stopped => "stopped",
        QueryState::Failed => "failed",
    }
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
