//! An output folder is one stream: what a run leaves there for the next one.
//!
//! Runs on one output folder continue each other. At the end of a run the folder keeps,
//! per query, in `<root>/_state/<query>/stream.json`:
//!
//! * the largest event time seen, so the next run starts under the same watermark and
//!   a reading that was late stays late;
//! * the windows the watermark had not passed yet, as merged aggregate state: they were
//!   written (so results are visible) and the next run resumes them; a window that gets
//!   more readings is written again as a new **revision**;
//! * the last revision written of every window, so a window written again never reuses
//!   a file name (an uploaded object is never overwritten);
//! * the inputs consumed and how far ([`input`]), so an input is never fed twice.
//!
//! The state is written atomically after every file of the run is committed, and only
//! by a run that did not fail: a failed run leaves the previous state in place, and the
//! next run redoes its work, writing the same files with the same bytes under the same
//! names.

pub mod input;
mod packed;
mod revision_runs;

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use input::{ConsumedInput, InputKey};

use crate::query::QueryPlan;
use crate::window::aggregate::Accumulator;
use crate::window::key::KeyRows;

/// Format version of `stream.json`; a newer edgeflow reads older versions or refuses.
/// Version 6 packs kept windows in bincode rather than JSON (see `packed`); version 5 stores the revisions written as runs of windows (see `revision_runs`);
/// version 4 may keep an `APPROX_DISTINCT` over a number as the numbers' bits (an older
/// edgeflow would not know that state); version 3 packs each kept window's keys and
/// state (see [`KeptWindow`]); version 2 holds sketches as base64 text (version 1:
/// arrays of byte values).
pub const STATE_VERSION: u32 = 6;

/// A stream state that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Reading or writing the state failed.
    #[error("stream state {}: {source}", path.display())]
    Io {
        /// The state file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state file is not what this edgeflow writes.
    #[error("stream state {}: {reason}", path.display())]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The query changed since the state was kept: its open windows cannot be resumed.
    #[error(
        "{query}: the query differs from the one whose open windows and inputs {} keeps; run with --fresh to start this query's stream again (windows written again become new revisions)",
        path.display()
    )]
    QueryChanged {
        /// Query name.
        query: String,
        /// The state file.
        path: PathBuf,
    },
}

/// A window kept at the end of a run, merged over every worker: open (the watermark
/// has not passed its end), or closed less than the allowed lateness ago, kept for
/// corrections.
///
/// In `stream.json` its keys and state are one compressed field, `packed` (since state
/// version 3: a window of a million groups is about 6 MB instead of 30).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "packed::Stored")]
pub struct KeptWindow {
    /// Window start, microseconds.
    pub start: i64,
    /// Window end.
    pub end: i64,
    /// Group keys, one row per group.
    pub keys: KeyRows,
    /// One accumulator per aggregate.
    pub accs: Vec<Accumulator>,
    /// Kept by a checkpoint before its latest readings were written: the next run
    /// writes it even if nothing more arrives for it.
    pub unwritten: bool,
    /// Not the window but a correction of it that a checkpoint cut short: readings
    /// within the allowed lateness, due then (see
    /// [`crate::window::closed::correction_due`]). The next run merges them with its own
    /// corrections of that interval and writes them when they are due, so where a
    /// checkpoint falls changes no revision.
    pub correction: Option<i64>,
    /// Keys and state packed ahead of the save, if they were.
    pub prepacked: packed::Prepacked,
}

impl Serialize for KeptWindow {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        packed::pack(self)
            .map_err(serde::ser::Error::custom)?
            .serialize(serializer)
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// What an output folder keeps of one query's stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// Format version.
    pub version: u32,
    /// Fingerprint of the plan the open windows belong to.
    pub plan: String,
    /// Runs completed on this folder; numbers late files so runs never collide.
    pub runs: u64,
    /// Runs committed on this folder. Unlike `runs`, which also skips the numbers of
    /// attempts that died after writing late files, it moves only with a commit: the
    /// processes of a live cluster compare it.
    #[serde(default)]
    pub commits: u64,
    /// Largest event time accepted so far (microseconds).
    pub max_event_time: Option<i64>,
    /// Inputs consumed, and how far.
    pub inputs: Vec<ConsumedInput>,
    /// Last revision written, by window start (stored as runs, see `revision_runs`).
    #[serde(with = "revision_runs")]
    pub revisions: BTreeMap<i64, u32>,
    /// Windows still open, and closed windows within the allowed lateness (their state
    /// is what a correction merges into).
    pub open: Vec<KeptWindow>,
    /// The allowed lateness the closed windows in `open` cover: a window that closed
    /// less than this before the watermark is there. A run under a larger allowance
    /// cannot correct the windows that closed before that.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub allowed_lateness: i64,
    /// Where a live query stands in its table's write-ahead log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<LivePosition>,
    /// The cluster whose process keeps this folder (none: a single process). Who owns a
    /// window or a key depends on it, and each process keeps only what its workers own,
    /// so the stream goes on only on the same cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterShape>,
}

/// The last revision of every window a folder wrote, on its own: in a state file (read
/// whatever else the file holds), and between a cluster's processes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Revisions {
    /// By window start.
    #[serde(default, with = "revision_runs")]
    pub revisions: BTreeMap<i64, u32>,
}

/// Processes and workers of a cluster, and which process a folder belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterShape {
    /// Processes.
    pub processes: usize,
    /// The process.
    pub process: usize,
    /// Workers in every process together.
    pub workers: usize,
}

impl std::fmt::Display for ClusterShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process {} of {} ({} workers in all)",
            self.process, self.processes, self.workers
        )
    }
}

/// How far a live query's state reflects its table's write-ahead log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LivePosition {
    /// The table.
    pub table: String,
    /// First record of the log the state does not reflect.
    pub next: u64,
    /// The query was running when the state was saved (a checkpoint, or its start):
    /// a start after a crash replays the log from `next`. A query stopped on purpose
    /// starts at the chunk being filled instead: what arrived while it was stopped was
    /// not for it.
    pub running: bool,
}

/// A fingerprint of what makes kept window state meaningful: the plan without its file
/// path (moving a query file is fine).
pub fn plan_fingerprint(plan: &QueryPlan) -> String {
    let mut plan = plan.clone();
    plan.file = PathBuf::new();
    // The ranking only picks rows as windows are written; kept state is the aggregate's.
    plan.top_n = None;
    // Where readings come from and how often they are polled changes nothing kept.
    plan.source.connector = Default::default();
    // The allowance may change between runs: the state says what it kept
    // (`StreamState::allowed_lateness`).
    plan.source.allowed_lateness = 0;
    // Kept windows are not joined yet: where the registry is and how often it is read
    // change nothing kept.
    if let Some(join) = &mut plan.join {
        join.table.path = PathBuf::new();
        join.table.reload = None;
    }
    let text = serde_json::to_vec(&plan).unwrap_or_default();
    crate::digest::md5_hex(&text)
}

impl StreamState {
    /// Where `query`'s state lives under `root`.
    pub fn path(root: &Path, query: &str) -> PathBuf {
        root.join("_state").join(query).join("stream.json")
    }

    /// A new stream for `plan`.
    pub fn new(plan: &QueryPlan) -> Self {
        StreamState {
            version: STATE_VERSION,
            plan: plan_fingerprint(plan),
            ..StreamState::default()
        }
    }

    /// Where a cluster process keeps the state its last commit replaced.
    pub fn previous_path(root: &Path, query: &str) -> PathBuf {
        root.join("_state").join(query).join("stream.prev.json")
    }

    /// Loads the state of `plan` under `root`, or a new one when there is none.
    pub fn load(root: &Path, plan: &QueryPlan) -> Result<Self, StateError> {
        Self::load_at(Self::path(root, &plan.name), plan)
    }

    /// The state a cluster process's last commit replaced (a new stream when there was
    /// none); `None` when it keeps none.
    pub fn load_previous(root: &Path, plan: &QueryPlan) -> Result<Option<Self>, StateError> {
        let path = Self::previous_path(root, &plan.name);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() == 0 => Ok(Some(StreamState::new(plan))),
            Ok(_) => Self::load_at(path, plan).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Saves the state as [`StreamState::save`] does, keeping the one it replaces (an
    /// empty file: none) for [`StreamState::roll_back`]: a cluster process commits on
    /// its own, and one that committed a run a peer did not goes back.
    pub fn save_keeping_previous(&self, root: &Path, query: &str) -> Result<(), StateError> {
        let path = Self::path(root, query);
        let previous = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let kept = Self::previous_path(root, query);
        crate::sink::commit::commit_bytes(&kept, &previous)
            .map_err(|source| StateError::Io { path: kept, source })?;
        self.save(root, query)
    }

    /// Puts back the state the last commit replaced, as if that commit had not
    /// happened (what it wrote is then written again, as after a crash before it).
    pub fn roll_back(root: &Path, query: &str) -> Result<(), StateError> {
        let (path, kept) = (Self::path(root, query), Self::previous_path(root, query));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io { path, source }
        };
        let previous = std::fs::read(&kept).map_err(io(&kept))?;
        if previous.is_empty() {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&path)(e)),
                _ => {}
            }
        } else {
            crate::sink::commit::commit_bytes(&path, &previous).map_err(io(&path))?;
        }
        // One step back only: a second roll-back would have nothing to go to.
        std::fs::remove_file(&kept).map_err(io(&kept))
    }

    fn load_at(path: PathBuf, plan: &QueryPlan) -> Result<Self, StateError> {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(StreamState::new(plan));
            }
            Err(source) => return Err(StateError::Io { path, source }),
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.clone(),
            reason,
        };
        let value: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| corrupt(format!("not JSON: {e}")))?;
        let version = value.get("version").and_then(serde_json::Value::as_u64);
        if !version.is_some_and(|v| (1..=u64::from(STATE_VERSION)).contains(&v)) {
            return Err(corrupt(format!(
                "format version {}, this edgeflow reads versions up to {STATE_VERSION}; run a newer edgeflow on this folder",
                version.map_or("missing".into(), |v| v.to_string())
            )));
        }
        // Files from before the commit counter counted their commits as runs.
        let counted = value.get("commits").is_some();
        let mut state: StreamState =
            serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
        if !counted {
            state.commits = state.runs;
        }
        let fingerprint = plan_fingerprint(plan);
        if state.plan != fingerprint && !state.open.is_empty() {
            return Err(StateError::QueryChanged {
                query: plan.name.clone(),
                path,
            });
        }
        // No open windows depend on the old plan: the stream goes on under the new one,
        // and is saved in this edgeflow's format.
        Ok(StreamState {
            plan: fingerprint,
            version: STATE_VERSION,
            ..state
        })
    }

    /// Where the live position of the state a cluster process's last commit replaced
    /// stands (none: no such state, or not a live one). Only that field is read: this
    /// is asked at every checkpoint, and the rest can be large.
    pub fn previous_live(root: &Path, query: &str) -> Result<Option<LivePosition>, StateError> {
        #[derive(Deserialize)]
        struct LiveOnly {
            live: Option<LivePosition>,
        }
        let path = Self::previous_path(root, query);
        let text = match std::fs::read(&path) {
            Ok(text) if !text.is_empty() => text,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_slice::<LiveOnly>(&text)
            .map(|only| only.live)
            .map_err(|e| StateError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// Deletes the state a cluster process's last commit replaced: a stream started
    /// afresh has nothing to go back to, and its commits count from zero again (a
    /// previous count left over could pass for one commit behind a peer).
    pub fn forget_previous(root: &Path, query: &str) -> Result<(), StateError> {
        let path = Self::previous_path(root, query);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StateError::Io { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// The revisions `root`'s state file records for `query`, whatever else it holds
    /// (the state of another plan, with open windows this edgeflow would refuse): what
    /// a `--fresh` start numbers its windows past. Empty when there is no such file or
    /// it cannot be read.
    pub fn recorded_revisions(root: &Path, query: &str) -> BTreeMap<i64, u32> {
        std::fs::read(Self::path(root, query))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Revisions>(&bytes).ok())
            .map(|r| r.revisions)
            .unwrap_or_default()
    }

    /// The stream a `--fresh` start forgets from: the folder's state, or, when this
    /// edgeflow cannot go on from it (another plan with open windows), a new stream
    /// that still knows which revisions its windows are at: written again, they must
    /// take new names.
    pub fn load_for_fresh(root: &Path, plan: &QueryPlan) -> Self {
        Self::load(root, plan).unwrap_or_else(|_| {
            let mut state = StreamState::new(plan);
            state.raise_revisions(&Self::recorded_revisions(root, &plan.name));
            state
        })
    }

    /// Raises the revision of every window in `known` to at least its revision there,
    /// so the next write of it supersedes that revision.
    pub fn raise_revisions(&mut self, known: &BTreeMap<i64, u32>) {
        for (&start, &revision) in known {
            let r = self.revisions.entry(start).or_insert(revision);
            *r = (*r).max(revision);
        }
    }

    /// Forgets the open windows, the watermark and the consumed inputs, keeping the
    /// revision numbers so that windows written again supersede what is there.
    pub fn forget(&mut self, plan: &QueryPlan) {
        self.plan = plan_fingerprint(plan);
        self.max_event_time = None;
        self.inputs.clear();
        self.open.clear();
        self.cluster = None;
        // The processes of a cluster started afresh together count from here.
        self.commits = 0;
    }

    /// Folds in what a run that ended well did: its largest event time, the revisions
    /// it wrote and the windows it left open.
    pub fn advance(&mut self, run: &Continuation, max_event_time: Option<i64>) {
        self.max_event_time = self.max_event_time.max(max_event_time);
        if let Ok(written) = run.written.lock() {
            self.revisions.extend(written.iter().map(|(&k, &v)| (k, v)));
        }
        self.open = run
            .kept
            .lock()
            .map(|mut k| std::mem::take(&mut *k))
            .unwrap_or_default();
        // Parts of one window (a session's, kept by each worker for the keys it owns)
        // come in the order the workers finished: ordered by their first key, which
        // parts of one window never share (parts with no keys are alike), so one input
        // saves the same state file.
        self.open.sort_by(|a, b| {
            (a.start, a.end, a.correction)
                .cmp(&(b.start, b.end, b.correction))
                .then_with(|| match (a.keys.len, b.keys.len) {
                    (0, 0) => Ordering::Equal,
                    (0, _) => Ordering::Less,
                    (_, 0) => Ordering::Greater,
                    _ => a.keys.cmp_rows(0, &b.keys, 0),
                })
        });
        self.allowed_lateness = run.allowed_lateness;
        self.runs += 1;
        self.commits += 1;
    }

    /// After a run that wrote its open windows as final: moves the watermark past the
    /// last window written (of `size`, under `out_of_orderness`), so a reading for any
    /// of them that comes later is late rather than the start of a window that would
    /// replace the final one.
    pub fn close_written(&mut self, size: i64, out_of_orderness: i64) {
        self.open.clear();
        self.allowed_lateness = 0;
        if let Some(&start) = self.revisions.keys().next_back() {
            let past = start.saturating_add(size).saturating_add(out_of_orderness);
            self.max_event_time = self.max_event_time.max(Some(past));
        }
    }

    /// Writes the state atomically and durably.
    pub fn save(&self, root: &Path, query: &str) -> Result<(), StateError> {
        let path = Self::path(root, query);
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(self).map_err(|e| io(std::io::Error::other(e)))?;
        crate::sink::commit::commit_bytes(&path, &bytes).map_err(io)
    }
}

/// What one run reads from and adds to its stream, shared by every worker.
#[derive(Debug, Default)]
pub struct Continuation {
    /// Largest event time of earlier runs: the watermark starts from it.
    pub max_event_time: Option<i64>,
    /// Last revision of each window written by earlier runs.
    pub revisions: BTreeMap<i64, u32>,
    /// Windows earlier runs left open, to resume.
    pub resumed: Vec<KeptWindow>,
    /// Revisions this run wrote.
    pub written: std::sync::Mutex<BTreeMap<i64, u32>>,
    /// Windows this run leaves open.
    pub kept: std::sync::Mutex<Vec<KeptWindow>>,
    /// The query's allowed lateness.
    pub allowed_lateness: i64,
    /// Windows ending at or before it cannot be corrected in this run: an earlier run
    /// closed them under a smaller allowance than this run's and kept nothing of them.
    pub uncorrectable_until: i64,
}

impl Continuation {
    /// The continuation of `state` under `plan`.
    pub fn of(state: &StreamState, plan: &QueryPlan) -> Self {
        let allowed_lateness = plan.source.allowed_lateness;
        let uncorrectable_until = match state.max_event_time {
            Some(max) if allowed_lateness > state.allowed_lateness => max
                .saturating_sub(plan.source.max_out_of_orderness)
                .saturating_sub(state.allowed_lateness),
            _ => i64::MIN,
        };
        Continuation {
            max_event_time: state.max_event_time,
            revisions: state.revisions.clone(),
            resumed: state.open.clone(),
            allowed_lateness,
            uncorrectable_until,
            ..Continuation::default()
        }
    }

    /// The revision the next write of the window starting at `start` gets.
    pub fn next_revision(&self, start: i64) -> u32 {
        self.revisions.get(&start).map_or(0, |r| r + 1)
    }

    /// Notes that revision `revision` of the window starting at `start` was written.
    pub fn wrote(&self, start: i64, revision: u32) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(start, revision);
        }
    }

    /// Packs the windows kept so far for the save ([`KeptWindow::prepack`]).
    pub fn prepack_kept(&self) {
        if let Ok(kept) = self.kept.lock() {
            kept.iter().for_each(KeptWindow::prepack);
        }
    }

    /// Keeps a window open for the next run.
    pub fn keep(&self, window: KeptWindow) {
        if let Ok(mut k) = self.kept.lock() {
            k.push(window);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> QueryPlan {
        crate::query::parse("q", Path::new("q.sql"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn tempdir() -> Result<tempfile::TempDir, StateError> {
        tempfile::tempdir().map_err(|source| StateError::Io {
            path: PathBuf::new(),
            source,
        })
    }

    const Q: &str = "CREATE TABLE r (k TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts');
        SELECT k, window_start, SUM(v) AS s FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY k, window_start";

    #[test]
    fn an_older_version_loads_and_is_saved_as_this_one_and_a_newer_one_is_refused()
    -> Result<(), StateError> {
        let dir = tempdir()?;
        let p = plan(Q);
        let path = StreamState::path(dir.path(), "q");
        let write = |version: u32| {
            let mut state = StreamState::new(&p);
            state.version = version;
            state.runs = 3;
            state.save(dir.path(), "q")
        };
        write(1)?;
        let state = StreamState::load(dir.path(), &p)?;
        assert_eq!((state.version, state.runs), (STATE_VERSION, 3));
        write(STATE_VERSION + 1)?;
        match StreamState::load(dir.path(), &p) {
            Err(StateError::Corrupt { path: at, reason }) => {
                assert_eq!(at, path);
                assert!(reason.contains("run a newer edgeflow"), "{reason}");
            }
            other => panic!("a newer version should be refused, not {other:?}"),
        }
        Ok(())
    }

    /// What a live cluster's processes compare: commits counted as runs in files from
    /// before the counter, the previous state's live position read alone, and nothing
    /// to go back to once a stream starts afresh.
    #[test]
    fn commits_and_the_previous_live_position_survive_old_files_and_fresh_starts()
    -> Result<(), StateError> {
        let dir = tempdir()?;
        let p = plan(Q);
        let path = StreamState::path(dir.path(), "q");
        let mut old = StreamState::new(&p);
        old.runs = 4;
        old.live = Some(LivePosition {
            table: "r".into(),
            next: 17,
            running: true,
        });
        let mut text = serde_json::to_value(&old).map_err(|e| StateError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        if let Some(fields) = text.as_object_mut() {
            fields.remove("commits");
        }
        crate::sink::commit::commit_bytes(&path, text.to_string().as_bytes()).map_err(
            |source| StateError::Io {
                path: path.clone(),
                source,
            },
        )?;
        let loaded = StreamState::load(dir.path(), &p)?;
        assert_eq!(loaded.commits, 4, "an older file's runs were its commits");
        loaded.save_keeping_previous(dir.path(), "q")?;
        assert_eq!(
            StreamState::previous_live(dir.path(), "q")?.map(|l| l.next),
            Some(17)
        );
        StreamState::forget_previous(dir.path(), "q")?;
        assert_eq!(StreamState::previous_live(dir.path(), "q")?, None);
        assert!(StreamState::load_previous(dir.path(), &p)?.is_none());
        Ok(())
    }

    #[test]
    fn round_trips_and_refuses_a_changed_query_with_open_windows() -> Result<(), StateError> {
        let dir = tempdir()?;
        let p = plan(Q);
        let mut state = StreamState::load(dir.path(), &p)?;
        assert_eq!(state, StreamState::new(&p));
        state.max_event_time = Some(42);
        state.revisions.insert(0, 3);
        state.open.push(KeptWindow {
            start: 0,
            end: 60_000_000,
            keys: KeyRows::default(),
            accs: Vec::new(),
            unwritten: true,
            correction: None,
            prepacked: Default::default(),
        });
        state.live = Some(LivePosition {
            table: "readings".into(),
            next: 7,
            running: true,
        });
        state.save(dir.path(), "q")?;
        assert_eq!(StreamState::load(dir.path(), &p)?, state);
        // Kept DOUBLE state comes back bit for bit (a float off by one unit in the last
        // place would be carried on by a resumed run), NaN included: values this small
        // square below the normal range, which makes their variance state NaN.
        let c = crate::query::AggregateCall {
            func: crate::query::AggregateFunction::VarSamp,
            arg: p.aggregates[0].arg.clone(),
            output_type: crate::types::DataType::Double,
            param: None,
        };
        let mut acc = Accumulator::new(&c);
        let mut bits = 0x9E37_79B9_7F4A_7C15u64;
        let values: Vec<f64> = (0..2000)
            .map(|_| {
                bits = bits
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                f64::from_bits(bits >> 2) % 1e6
            })
            .collect();
        let mut pairs = crate::window::aggregate::Pairs::default();
        for (i, _) in values.iter().enumerate() {
            crate::window::aggregate::Aggregate::push_empty(&mut acc);
            pairs.push(i as u32, i as u32);
        }
        let column = crate::batch::Column {
            values: crate::batch::ColumnValues::Double(values),
            validity: None,
        };
        let interner = crate::batch::Interner::new();
        let input = crate::window::aggregate::Input {
            arg: Some(&column),
            times: &[],
            interner: &interner,
        };
        crate::window::aggregate::Aggregate::update(&mut acc, &pairs, input);
        state.open[0].accs = vec![acc];
        state.save(dir.path(), "q")?;
        // NaN equals nothing: compare the states' every digit.
        assert_eq!(
            format!("{:?}", StreamState::load(dir.path(), &p)?),
            format!("{state:?}")
        );
        let other = plan(&Q.replace("SUM(v)", "MAX(v)"));
        assert!(matches!(
            StreamState::load(dir.path(), &other),
            Err(StateError::QueryChanged { .. })
        ));
        Ok(())
    }
}
