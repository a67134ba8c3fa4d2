//! Sync: committed files go from the local disk to object storage, whenever the uplink
//! allows, exactly once.
//!
//! Every committed file is recorded in a crash-safe [`journal`] before anything else
//! happens to it. A background task on its own thread (a small tokio runtime) uploads
//! pending files, data before logs and oldest first, with create-only puts under
//! deterministic keys ([`mod@upload`]); retryable failures back off with jitter and are tried
//! again without limit, a non-retryable one (bad credentials, missing bucket) stops the
//! uploader and is reported once. A local disk quota either pauses the sources or drops
//! the oldest pending files, loudly. Uploaded files are deleted locally after a retention
//! period. On a restart the journal resumes where it stopped, and files committed but not
//! yet journaled (a crash in between) are found by scanning the output folder.
//!
//! When the engine writes a window again, it moves the old revision's file to
//! `<query>_revisions/…` and reports it ([`SyncHandle::superseded`]); the target follows:
//! the new key gets the bytes (uploaded, or copied from the old key if the local file is
//! gone), then the old key is deleted. Each step is journaled and idempotent.

pub mod journal;
mod local;
pub mod paths;
mod report;
pub mod target;
pub mod upload;
mod uploader;

pub use report::{Backlog, SyncReport, status};

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use self::journal::{FileKind, FileState, Journal, JournalError, Record, now_ms};
use self::local::{adopt_local_files, requeue_present, successor, supersede_in};
use self::target::{Target, TargetError};
use self::upload::UploadConfig;
use self::uploader::{expire_uploaded, replacement, uploader};
use crate::digest::md5_hex;
use crate::sink::{CommittedFile, Superseded};

/// The small interface sync offers to whoever writes files: it hears of committed and
/// superseded files and says when the sources should wait. It knows nothing of the
/// engine; the command line or the node wires it to the writers.
#[derive(Clone)]
pub struct SyncHandle {
    shared: Arc<Shared>,
}

impl SyncHandle {
    /// A file is durably in place: journal it for upload.
    pub fn committed(&self, file: &CommittedFile) {
        let shared = &self.shared;
        let record = Record {
            path: file.relative.clone(),
            size: file.bytes,
            md5: file.md5.clone(),
            kind: FileKind::Data,
            committed_ms: now_ms(),
            from: None,
            attempts: 0,
            state: FileState::Committed,
        };
        if let Err(e) = shared.record(record) {
            tracing::error!(error = %e, "Could not record a committed file in the sync journal");
            *lock(&shared.halted) = Some(e.to_string());
        }
    }

    /// A result file was moved aside for a newer revision (after the local rename). The
    /// journal records it durably; the uploader then makes the target hold the file
    /// under `to` and no longer under `from`.
    pub fn superseded(&self, moved: &Superseded) {
        if let Err(e) = self.shared.supersede(moved) {
            tracing::error!(error = %e, from = %moved.from, to = %moved.to, "Could not record a superseded revision in the sync journal");
            *lock(&self.shared.halted) = Some(e.to_string());
        }
    }

    /// Compaction replaced `from` by the compacted file `into` (already journaled as
    /// committed) and is about to delete `from` locally. Its key leaves the target once
    /// `into` is there, so a reader of the bucket always finds the rows in one of them.
    /// Returns whether it was recorded, and so whether `from` may be deleted.
    pub fn compacted(&self, from: &str, into: &str) -> bool {
        match self.shared.compacted(from, into) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, from, into, "Could not record a compacted file in the sync journal; it stays until the next pass");
                *lock(&self.shared.halted) = Some(e.to_string());
                false
            }
        }
    }

    /// Whether the sources should wait: pending files fill the quota under
    /// [`QuotaPolicy::Backpressure`].
    pub fn over_quota(&self) -> bool {
        pause(&self.shared)
    }

    /// Whether the quota leaves no room once `logged` bytes of write-ahead logs count
    /// against it. Logs are never dropped to make room: under backpressure they count
    /// with the pending files; under drop-oldest, files make room for them, so only a
    /// log bigger than the quota by itself fills it.
    pub fn full_with_logs(&self, logged: u64) -> bool {
        let shared = &self.shared;
        let Some(quota) = shared.config.max_pending_bytes else {
            return false;
        };
        match shared.config.on_quota {
            QuotaPolicy::Backpressure => {
                pause(shared)
                    || shared
                        .pending_bytes
                        .load(Ordering::Relaxed)
                        .saturating_add(logged)
                        > quota
                        && lock(&shared.halted).is_none()
            }
            QuotaPolicy::DropOldest => logged > quota,
        }
    }
}

/// How long after the sync starts the old key of a superseded file is left alone when
/// an earlier process was uploading that file as it ended (a kill, a crash): a request
/// it had already sent can still land, and deleting the key before it would leave the
/// object behind, its rows counted twice by readers of the bucket.
const LINGERING_PUT: Duration = Duration::from_secs(5);

/// Uploads in flight at once.
const CONCURRENCY: usize = 4;
/// Longest wait between attempts while the target fails. While it fails only one file is
/// tried at a time (a probe), so a short ceiling costs one request every few seconds and
/// bounds how long files wait once the target is back.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the uploader looks for closed log files and files past retention.
const HOUSEKEEPING: Duration = Duration::from_secs(5);
/// A log file not written to for this long is closed and can be shipped.
const LOG_QUIET: Duration = Duration::from_secs(120);

/// Uploads whose lag and speed the report's figures are taken over: the recent ones,
/// so a node that runs for months neither keeps nor sorts every upload it made.
const KEPT_UPLOADS: usize = 10_000;

/// What to do when pending files fill the local quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum QuotaPolicy {
    /// Pause the sources until uploads make room: nothing is lost.
    Backpressure,
    /// Delete the oldest pending files to make room, counting and logging each.
    DropOldest,
}

/// How to sync.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Where to.
    pub target: Target,
    /// Multipart settings.
    pub upload: UploadConfig,
    /// Local quota for files not yet uploaded.
    pub max_pending_bytes: Option<u64>,
    /// What to do when it is full.
    pub on_quota: QuotaPolicy,
    /// How long uploaded files stay on local disk.
    pub retention: Duration,
    /// Name prefix of this process's log files: the newest of them is still being
    /// written, so it is shipped only at [`Syncer::finish`].
    pub own_logs: Option<String>,
    /// The target is a folder shared by unrelated output folders (the default
    /// `./edgeflow-sync`): each output folder syncs into its own subfolder
    /// `<target>/<name>/`, named by [`folder_name`], so two of them never collide.
    pub subfolder_per_output: bool,
}

/// The name of an output folder's own subfolder in a shared target: its file name (made
/// URL-safe) and a short hash of its canonical path, so it is stable across runs of that
/// folder and different for folders that share a file name.
pub fn folder_name(root: &Path) -> String {
    let canonical = root
        .canonicalize()
        .or_else(|_| std::path::absolute(root))
        .unwrap_or_else(|_| root.to_owned());
    let base: String = canonical
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = base.trim_matches('.');
    let hash = md5_hex(canonical.as_os_str().as_encoded_bytes());
    let short = hash.get(..10).unwrap_or(&hash);
    if base.is_empty() {
        format!("output-{short}")
    } else {
        format!("{base}-{short}")
    }
}

/// Why sync did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The journal could not be read or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The target could not be opened.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The target refused in a way retrying cannot fix.
    #[error(
        "sync to {target} stopped: {reason}; {files} file(s) ({bytes} bytes) stay pending in the journal, run `edgeflow sync {root} --to {target}` after fixing it"
    )]
    Halted {
        /// Target URL.
        target: String,
        /// The refusal.
        reason: String,
        /// Files pending.
        files: usize,
        /// Bytes pending.
        bytes: u64,
        /// Output root.
        root: String,
    },
    /// The target stayed unreachable past the timeout.
    #[error("sync to {target} incomplete after {waited:?}: {files} file(s) ({bytes} bytes) pending{}; they stay in the journal, run `edgeflow sync {root} --to {target}` to finish", last_error.as_ref().map(|e| format!(", last error: {e}")).unwrap_or_default())]
    Timeout {
        /// Target URL.
        target: String,
        /// How long we waited.
        waited: Duration,
        /// Files pending.
        files: usize,
        /// Bytes pending.
        bytes: u64,
        /// The last failure.
        last_error: Option<String>,
        /// Output root.
        root: String,
    },
    /// Some keys in the target hold other content; those files were not uploaded.
    #[error("{} file(s) conflict with other content under the same key in {target} and were not overwritten: {}; they stay local", files.len(), files.join(", "))]
    Conflicts {
        /// Target URL.
        target: String,
        /// The files.
        files: Vec<String>,
    },
    /// The background thread could not start.
    #[error("sync could not start: {0}")]
    Start(String),
}

/// State shared between the engine, the uploader and the caller.
struct Shared {
    root: PathBuf,
    config: SyncConfig,
    journal: Mutex<Journal>,
    /// Bytes of pending files (the quota counts these).
    pending_bytes: AtomicU64,
    /// Set when new work may be there.
    wake: tokio::sync::Notify,
    /// Signalled whenever the pending set shrinks or the uploader halts.
    progress: (Mutex<()>, Condvar),
    halted: Mutex<Option<String>>,
    last_error: Mutex<Option<String>>,
    /// Upload attempts that failed.
    failures: AtomicU64,
    stop: AtomicBool,
    /// (commit to visible ms, bytes, upload seconds) of uploads by this process.
    /// The last [`KEPT_UPLOADS`] of them.
    stats: Mutex<std::collections::VecDeque<(f64, u64, f64)>>,
    /// Files and bytes uploaded by this process.
    uploads: (AtomicU64, AtomicU64),
    /// Paths an earlier process was uploading when it ended, outcome unknown.
    uncertain: HashSet<String>,
    /// When this sync started.
    opened: Instant,
}

/// A running sync: record files as they are committed, then [`Syncer::finish`].
pub struct Syncer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Counts an upload: (commit to visible ms, bytes, upload seconds).
    fn uploaded(&self, upload: (f64, u64, f64)) {
        self.uploads.0.fetch_add(1, Ordering::Relaxed);
        self.uploads.1.fetch_add(upload.1, Ordering::Relaxed);
        let mut stats = lock(&self.stats);
        if stats.len() == KEPT_UPLOADS {
            stats.pop_front();
        }
        stats.push_back(upload);
    }

    /// How long the old key of `path` is still left alone ([`LINGERING_PUT`]).
    fn lingering(&self, path: &str) -> Option<Duration> {
        if !self.uncertain.contains(path) {
            return None;
        }
        LINGERING_PUT.checked_sub(self.opened.elapsed())
    }

    fn recompute_pending(&self, journal: &Journal) {
        let pending: u64 = journal
            .records()
            .filter(|r| r.state.is_pending())
            .map(|r| r.size)
            .sum();
        self.pending_bytes.store(pending, Ordering::Relaxed);
    }

    fn signal(&self) {
        let _guard = lock(&self.progress.0);
        self.progress.1.notify_all();
    }

    /// Records a committed file; applies the drop-oldest policy.
    fn record(&self, record: Record) -> Result<(), JournalError> {
        let mut journal = lock(&self.journal);
        // A rerun may rewrite a file that is already in the target: if the content is the
        // same, nothing changes; otherwise it is pending again (and the target decides).
        if journal.get(&record.path).is_some_and(|old| {
            old.md5 == record.md5 && !matches!(old.state, FileState::Dropped | FileState::Deleted)
        }) {
            return Ok(());
        }
        journal.put(record)?;
        if let (Some(quota), QuotaPolicy::DropOldest) =
            (self.config.max_pending_bytes, self.config.on_quota)
        {
            self.drop_oldest(&mut journal, quota)?;
        }
        self.recompute_pending(&journal);
        drop(journal);
        self.wake.notify_one();
        Ok(())
    }

    /// Records that compaction replaced `from` by `into`: see [`SyncHandle::compacted`].
    fn compacted(&self, from: &str, into: &str) -> Result<(), JournalError> {
        let mut journal = lock(&self.journal);
        let Some(record) = journal.get(from) else {
            // Never journaled: written by a run without sync, so never uploaded either.
            return Ok(());
        };
        if matches!(
            record.state,
            FileState::Superseded { .. } | FileState::Moved { .. }
        ) {
            return Ok(());
        }
        journal.set_state(
            from,
            FileState::Superseded {
                to: into.to_owned(),
            },
        )?;
        self.recompute_pending(&journal);
        drop(journal);
        self.wake.notify_one();
        Ok(())
    }

    /// Records that a result file was moved aside for a newer revision.
    fn supersede(&self, moved: &Superseded) -> Result<(), JournalError> {
        let mut journal = lock(&self.journal);
        supersede_in(&self.root, &mut journal, moved)?;
        self.recompute_pending(&journal);
        drop(journal);
        self.wake.notify_one();
        Ok(())
    }

    /// Files (of `kind`, if given) the uploader still has work for: pending uploads, and
    /// superseded old keys whose new key is in the target or on its way there.
    fn outstanding(&self, journal: &Journal, kind: Option<FileKind>) -> usize {
        journal
            .records()
            .filter(|r| kind.is_none_or(|k| r.kind == k))
            .filter(|r| match &r.state {
                FileState::Superseded { to } => replacement(journal, to).is_some_and(|t| {
                    t.state.is_pending()
                        || matches!(t.state, FileState::Uploaded { .. } | FileState::Deleted)
                }),
                state => state.is_pending(),
            })
            .count()
    }

    fn drop_oldest(&self, journal: &mut Journal, quota: u64) -> Result<(), JournalError> {
        let mut pending: Vec<Record> = journal
            .records()
            .filter(|r| matches!(r.state, FileState::Committed | FileState::Failed { .. }))
            .cloned()
            .collect();
        pending.sort_by_key(|r| (r.committed_ms, r.path.clone()));
        let mut total: u64 = journal
            .records()
            .filter(|r| r.state.is_pending())
            .map(|r| r.size)
            .sum();
        for victim in pending {
            if total <= quota {
                break;
            }
            match paths::resolve(&self.root, &victim.path) {
                Ok(local) => {
                    std::fs::remove_file(local).ok();
                }
                Err(e) => tracing::error!(error = %e, "Not deleting outside the output folder"),
            }
            journal.set_state(&victim.path, FileState::Dropped)?;
            total -= victim.size;
            tracing::error!(file = %victim.path, bytes = victim.size, quota, "Local quota full: dropped the oldest pending file before it was uploaded");
        }
        Ok(())
    }
}

impl Syncer {
    /// Opens the journal of `root`, finds committed files it does not know yet, and
    /// starts the uploader.
    /// With `all`, files already uploaded are checked against the target again (and
    /// uploaded if missing); the same happens when the target differs from the last one
    /// this root was synced to.
    pub fn start(root: &Path, mut config: SyncConfig, all: bool) -> Result<Syncer, SyncError> {
        if config.subfolder_per_output {
            config.target = config.target.subfolder(&folder_name(root))?;
            config.subfolder_per_output = false;
        }
        let mut journal = Journal::open(root)?;
        // A crash between the two lines of a supersede left the new place unrecorded.
        for (old, to) in journal.superseded_without_successor() {
            journal.put(successor(&old, &to))?;
        }
        let previous = journal.target()?;
        let retarget = previous.as_deref().is_some_and(|p| p != config.target.url);
        if retarget {
            tracing::warn!(previous = previous.as_deref().unwrap_or_default(), target = %config.target.url, "Sync target changed: files uploaded to the previous target are checked and uploaded again");
        }
        journal.set_target(&config.target.url)?;
        let uncertain = journal
            .records()
            .filter(|r| matches!(r.state, FileState::Uploading))
            .map(|r| r.path.clone())
            .collect();
        let shared = Arc::new(Shared {
            root: root.to_owned(),
            config,
            journal: Mutex::new(journal),
            pending_bytes: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            progress: (Mutex::new(()), Condvar::new()),
            halted: Mutex::new(None),
            last_error: Mutex::new(None),
            failures: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stats: Mutex::default(),
            uploads: Default::default(),
            uncertain,
            opened: Instant::now(),
        });
        adopt_local_files(&shared, false)?;
        if all || retarget {
            requeue_present(&shared)?;
        }
        let runner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("edgeflow-sync".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(uploader(runner)),
                    Err(e) => {
                        *lock(&runner.halted) =
                            Some(format!("cannot start the upload runtime: {e}"));
                        runner.signal();
                    }
                }
            })
            .map_err(|e| SyncError::Start(e.to_string()))?;
        Ok(Syncer {
            shared,
            thread: Some(thread),
        })
    }

    /// What the writers tell this sync through: cheap to clone, one per run.
    pub fn handle(&self) -> SyncHandle {
        SyncHandle {
            shared: self.shared.clone(),
        }
    }

    /// Bytes not yet uploaded.
    pub fn pending_bytes(&self) -> u64 {
        self.shared.pending_bytes.load(Ordering::Relaxed)
    }

    /// Waits until every pending result file is in the target, then runs `close_logs`
    /// (which must flush and close this process's log files), ships the logs, and waits
    /// for them too; gives up when the target refuses for good or `timeout` passes.
    /// Stops the uploader either way.
    pub fn finish(
        mut self,
        timeout: Duration,
        close_logs: impl FnOnce(),
    ) -> (SyncReport, Result<(), SyncError>) {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut outcome = match adopt_local_files(&self.shared, false) {
            Ok(()) => self.wait_until_synced(deadline, Some(FileKind::Data)),
            Err(e) => Err(Some(e.to_string())),
        };
        close_logs();
        // Closed logs are journaled even when sync failed, so a later `edgeflow sync`
        // ships them with the rest.
        let adopted = adopt_local_files(&self.shared, true);
        if outcome.is_ok() {
            outcome = match adopted {
                Ok(()) => self.wait_until_synced(deadline, None),
                Err(e) => Err(Some(e.to_string())),
            };
        }
        self.stop();
        expire_uploaded(&self.shared);
        let report = self.report();
        let root = self.shared.root.display().to_string();
        let result = match outcome {
            Ok(()) if report.conflicts.is_empty() => Ok(()),
            Ok(()) => Err(SyncError::Conflicts {
                target: report.target.clone(),
                files: report.conflicts.clone(),
            }),
            Err(None) => Err(SyncError::Timeout {
                target: report.target.clone(),
                waited: started.elapsed(),
                files: report.pending_files,
                bytes: report.pending_bytes,
                last_error: lock(&self.shared.last_error)
                    .clone()
                    .or(report.last_error.clone()),
                root,
            }),
            Err(Some(reason)) => Err(SyncError::Halted {
                target: report.target.clone(),
                reason,
                files: report.pending_files,
                bytes: report.pending_bytes,
                root,
            }),
        };
        (report, result)
    }

    /// Waits until no file (of `kind`, if given) is pending. `Err(Some(reason))` when
    /// the uploader halted, `Err(None)` at the deadline.
    fn wait_until_synced(
        &self,
        deadline: Instant,
        kind: Option<FileKind>,
    ) -> Result<(), Option<String>> {
        self.shared.wake.notify_one();
        loop {
            let pending = self.shared.outstanding(&lock(&self.shared.journal), kind);
            if pending == 0 {
                return Ok(());
            }
            if let Some(reason) = lock(&self.shared.halted).clone() {
                return Err(Some(reason));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(None);
            }
            let guard = lock(&self.shared.progress.0);
            let _ = self
                .shared
                .progress
                .1
                .wait_timeout(guard, (deadline - now).min(Duration::from_millis(200)));
        }
    }

    /// Upload attempts that failed since the sync started.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Files and bytes this sync uploaded since it started: they only grow (the
    /// journal's uploaded figures fall when compaction replaces uploaded files).
    pub fn uploads(&self) -> (u64, u64) {
        let (files, bytes) = &self.shared.uploads;
        (files.load(Ordering::Relaxed), bytes.load(Ordering::Relaxed))
    }

    /// Why the sync stopped shipping, if it did: the uploader halted on an error it
    /// cannot retry past, or the local quota is full under backpressure (the node takes
    /// no readings until uploads catch up).
    pub fn halted(&self) -> Option<String> {
        if let Some(reason) = lock(&self.shared.halted).clone() {
            return Some(reason);
        }
        pause(&self.shared).then(|| {
            "local disk quota full (backpressure): pushes are answered 503 until uploads catch up"
                .to_owned()
        })
    }

    /// Files of `query` (results, late rows, dead letters) not in the target yet.
    pub fn backlog(&self, query: &str) -> Backlog {
        let journal = lock(&self.shared.journal);
        let now = now_ms();
        // The folders of `sink::Layout`: exact names, so query `a` does not count the
        // files of query `a_b`.
        let folders = [
            query.to_owned(),
            format!("{query}_late"),
            format!("{query}_revisions"),
        ];
        let ours = |path: &str| {
            let mut parts = path.split('/');
            match (parts.next(), parts.next()) {
                (Some("_deadletter"), Some(owner)) => owner == query,
                (Some(top), _) => folders.iter().any(|f| f == top),
                _ => false,
            }
        };
        let mut backlog = Backlog::default();
        for rec in journal.records() {
            if rec.state.is_pending() && ours(&rec.path) {
                backlog.files += 1;
                backlog.bytes += rec.size;
                let age = (now - rec.committed_ms) as f64 / 1e3;
                backlog.oldest_s = Some(backlog.oldest_s.map_or(age, |a: f64| a.max(age)));
            }
        }
        backlog
    }

    /// What has been synced so far.
    pub fn report(&self) -> SyncReport {
        let mut report =
            SyncReport::from_journal(&lock(&self.shared.journal), &self.shared.config.target.url);
        let stats = lock(&self.shared.stats);
        if !stats.is_empty() {
            let mut lags: Vec<f64> = stats.iter().map(|s| s.0).collect();
            lags.sort_by(f64::total_cmp);
            let q = |p: f64| crate::stats::quantile(&lags, p);
            report.lag_ms = Some([q(0.5), q(0.99)]);
            let bytes: u64 = stats.iter().map(|s| s.1).sum();
            let seconds: f64 =
                stats.iter().map(|s| s.2).sum::<f64>() / CONCURRENCY.min(stats.len()) as f64;
            report.upload_mb_per_s = (seconds > 0.0).then(|| bytes as f64 / 1e6 / seconds);
        }
        if report.last_error.is_none() {
            report.last_error = lock(&self.shared.last_error).clone();
        }
        report
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether the sources should wait. Once the target has refused for good no upload will
/// make room, so the sources go on (the files stay pending, nothing is lost) and the run
/// ends with the refusal instead of waiting forever.
fn pause(shared: &Shared) -> bool {
    match (shared.config.max_pending_bytes, shared.config.on_quota) {
        (Some(quota), QuotaPolicy::Backpressure) => {
            shared.pending_bytes.load(Ordering::Relaxed) > quota && lock(&shared.halted).is_none()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::journal::{FileState, Journal, JournalError, test_record as record};
    use super::uploader::{next_revision, replacement};

    /// An hour compacted, then compacted again before its first hour file was
    /// uploaded: the originals' old keys wait for the file that holds their rows now,
    /// not for one that will never be uploaded.
    #[test]
    fn a_replaced_file_waits_for_the_last_file_of_a_chain() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(|source| JournalError {
            path: "tmp".into(),
            source,
        })?;
        let mut journal = Journal::open(dir.path())?;
        let uploaded = FileState::Uploaded {
            etag: None,
            at_ms: 2,
        };
        journal.put(record(
            "late-1.parquet",
            FileState::Superseded {
                to: "hour-a".into(),
            },
        ))?;
        journal.put(record(
            "hour-a",
            FileState::Moved {
                to: "hour-b".into(),
            },
        ))?;
        journal.put(record("hour-b", uploaded.clone()))?;
        journal.put(record(
            "window-r0",
            FileState::Superseded { to: "gone".into() },
        ))?;
        assert_eq!(
            replacement(&journal, "hour-a").map(|r| (r.path.as_str(), &r.state)),
            Some(("hour-b", &uploaded))
        );
        assert!(replacement(&journal, "gone").is_none());
        journal.put(record(
            "loop-a",
            FileState::Superseded {
                to: "loop-b".into(),
            },
        ))?;
        journal.put(record(
            "loop-b",
            FileState::Moved {
                to: "loop-a".into(),
            },
        ))?;
        assert!(replacement(&journal, "loop-a").is_none());
        Ok(())
    }

    /// Files waiting for their hour file to be uploaded are compaction, not revisions.
    #[test]
    fn the_status_tells_compaction_from_revisions() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(|source| JournalError {
            path: "tmp".into(),
            source,
        })?;
        let mut journal = Journal::open(dir.path())?;
        let hour = "q/date=2026-01-01/hour=00/hour-20260101T000000Z-0a.parquet";
        let window = |minute: u32, revision: u32| {
            format!(
                "q/date=2026-01-01/hour=00/window-20260101T00{minute:02}00Z-r{revision}.parquet"
            )
        };
        for minute in 0..3 {
            journal.put(record(
                &window(minute, 0),
                FileState::Superseded { to: hour.into() },
            ))?;
        }
        journal.put(record(&window(3, 0), FileState::Moved { to: hour.into() }))?;
        journal.put(record(
            &window(4, 0),
            FileState::Superseded { to: window(4, 1) },
        ))?;
        let report = super::SyncReport::from_journal(&journal, "t");
        assert_eq!(
            (
                report.compacted_files,
                report.compacted_unremoved,
                report.superseded_files,
                report.moved_files
            ),
            (4, 3, 1, 0)
        );
        let shown = report.to_string();
        assert!(
            shown.contains(
                "compacted    4 file(s) replaced by hour files, 3 old key(s) still to remove"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("revisions    1 superseded file(s)"),
            "{shown}"
        );
        Ok(())
    }

    #[test]
    fn the_revision_after_a_window_file_is_its_replacement() {
        assert_eq!(
            next_revision("q/date=2026-01-01/hour=00/window-20260101T000000Z-r1.parquet")
                .as_deref(),
            Some("q/date=2026-01-01/hour=00/window-20260101T000000Z-r2.parquet")
        );
        assert_eq!(
            next_revision("q_late/date=2026-01-01/hour=00/late-1-n0-w0of1.parquet"),
            None
        );
    }
}
