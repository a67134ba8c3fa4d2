//! What sync did and what waits: for run summaries, the node's status and
//! `edgeflow status`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::journal::{FileState, Journal, JournalError, now_ms};
use super::local::is_compacted_path;

/// One query's files waiting for the target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Backlog {
    /// Files not uploaded yet.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Age of the oldest, seconds.
    pub oldest_s: Option<f64>,
}

/// What sync did, for summaries and `edgeflow status`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SyncReport {
    /// Target URL.
    pub target: String,
    /// Files in the target.
    pub uploaded_files: usize,
    /// Their bytes.
    pub uploaded_bytes: u64,
    /// Files still pending.
    pub pending_files: usize,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Age of the oldest pending file, seconds.
    pub oldest_pending_s: Option<f64>,
    /// Files whose key holds other content.
    pub conflicts: Vec<String>,
    /// Files dropped by the quota policy.
    pub dropped_files: usize,
    /// Superseded revisions whose old key is still to be removed from the target.
    #[serde(default)]
    pub superseded_files: usize,
    /// Superseded revisions moved to `<query>_revisions/` in the target too.
    #[serde(default)]
    pub moved_files: usize,
    /// Files replaced by a compacted hour file.
    #[serde(default)]
    pub compacted_files: usize,
    /// Of those, the ones whose key is still to be removed from the target.
    #[serde(default)]
    pub compacted_unremoved: usize,
    /// Journal records skipped because their paths leave the output root.
    #[serde(default)]
    pub rejected_paths: usize,
    /// Last failure.
    pub last_error: Option<String>,
    /// Commit to visible in the target, ms: p50, p99 (the last 10,000 files uploaded by
    /// this process).
    pub lag_ms: Option<[f64; 2]>,
    /// Upload throughput of this process, MB/s of wall time spent uploading.
    pub upload_mb_per_s: Option<f64>,
}

impl SyncReport {
    /// Summarises a journal.
    pub fn from_journal(journal: &Journal, target: &str) -> Self {
        let now = now_ms();
        let mut r = SyncReport {
            target: target.into(),
            rejected_paths: journal.rejected(),
            ..SyncReport::default()
        };
        for rec in journal.records() {
            match &rec.state {
                s if s.is_pending() => {
                    r.pending_files += 1;
                    r.pending_bytes += rec.size;
                    let age = (now - rec.committed_ms) as f64 / 1e3;
                    r.oldest_pending_s = Some(r.oldest_pending_s.map_or(age, |a: f64| a.max(age)));
                    if let FileState::Failed { reason, .. } = s {
                        r.last_error = Some(reason.clone());
                    }
                }
                FileState::Uploaded { .. } | FileState::Deleted => {
                    r.uploaded_files += 1;
                    r.uploaded_bytes += rec.size;
                }
                FileState::Conflict { .. } => r.conflicts.push(rec.path.clone()),
                FileState::Dropped => r.dropped_files += 1,
                FileState::Superseded { to } if is_compacted_path(to) => {
                    r.compacted_files += 1;
                    r.compacted_unremoved += 1;
                }
                FileState::Superseded { .. } => r.superseded_files += 1,
                FileState::Moved { to } if is_compacted_path(to) => r.compacted_files += 1,
                FileState::Moved { .. } => r.moved_files += 1,
                _ => {}
            }
        }
        r
    }
}

impl std::fmt::Display for SyncReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "target       {}", self.target)?;
        writeln!(
            f,
            "uploaded     {} file(s), {:.1} MB",
            self.uploaded_files,
            self.uploaded_bytes as f64 / 1e6
        )?;
        write!(
            f,
            "pending      {} file(s), {:.1} MB",
            self.pending_files,
            self.pending_bytes as f64 / 1e6
        )?;
        if let Some(age) = self.oldest_pending_s {
            write!(f, ", oldest {age:.0} s")?;
        }
        writeln!(f)?;
        if !self.conflicts.is_empty() {
            writeln!(
                f,
                "conflicts    {} (kept locally, never overwritten): {}",
                self.conflicts.len(),
                self.conflicts.join(", ")
            )?;
        }
        if self.dropped_files > 0 {
            writeln!(
                f,
                "dropped      {} file(s) by the drop-oldest quota policy",
                self.dropped_files
            )?;
        }
        if self.superseded_files + self.moved_files > 0 {
            writeln!(
                f,
                "revisions    {} superseded file(s) moved to _revisions, {} old key(s) still to remove",
                self.superseded_files + self.moved_files,
                self.superseded_files
            )?;
        }
        if self.compacted_files > 0 {
            write!(
                f,
                "compacted    {} file(s) replaced by hour files",
                self.compacted_files
            )?;
            if self.compacted_unremoved > 0 {
                write!(
                    f,
                    ", {} old key(s) still to remove",
                    self.compacted_unremoved
                )?;
            }
            writeln!(f)?;
        }
        if self.rejected_paths > 0 {
            writeln!(
                f,
                "rejected     {} journal path(s) leaving the output folder (skipped)",
                self.rejected_paths
            )?;
        }
        if let Some([p50, p99]) = self.lag_ms {
            writeln!(
                f,
                "sync lag     commit to visible: p50 {p50:.0} ms, p99 {p99:.0} ms"
            )?;
        }
        if let Some(mbps) = self.upload_mb_per_s {
            writeln!(f, "upload       {mbps:.1} MB/s")?;
        }
        write!(
            f,
            "last error   {}",
            self.last_error.as_deref().unwrap_or("none")
        )
    }
}

/// The journal of an output root, summarised (for `edgeflow status`).
/// Reads without writing or locking, so it works while a run syncs the folder.
pub fn status(root: &Path) -> Result<SyncReport, JournalError> {
    let journal = Journal::read(root)?;
    let target = journal.target()?.unwrap_or_else(|| "(never synced)".into());
    Ok(SyncReport::from_journal(&journal, &target))
}
