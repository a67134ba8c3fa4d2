//! The uploader: a task on sync's runtime that takes pending files from the journal,
//! uploads or retires them a few at a time, records each outcome, backs off after
//! failures and deletes uploaded files once their retention has passed.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::journal::{FileState, Journal, Record, now_ms};
use super::local::adopt_local_files;
use super::upload::{Outcome, retire, upload};
use super::{CONCURRENCY, HOUSEKEEPING, LINGERING_PUT, MAX_BACKOFF, Shared, lock, paths};

/// The upload loop: runs until told to stop.
pub(super) async fn uploader(shared: Arc<Shared>) {
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut tasks: tokio::task::JoinSet<(Record, Job, Outcome, f64)> = tokio::task::JoinSet::new();
    let mut failures = 0u32;
    let mut not_before = Instant::now();
    let mut housekeeping = Instant::now();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            tasks.abort_all();
            break;
        }
        if housekeeping.elapsed() >= HOUSEKEEPING {
            housekeeping = Instant::now();
            if let Err(e) = adopt_local_files(&shared, false) {
                tracing::error!(error = %e, "Sync journal");
            }
            expire_uploaded(&shared);
        }
        let halted = lock(&shared.halted).is_some();
        if !halted && Instant::now() >= not_before {
            let mut next = next_jobs(&shared, &in_flight);
            next.sort_by_key(|(r, _)| (r.kind, r.committed_ms, r.path.clone()));
            // After a failure one attempt probes the target; its success opens the way
            // for all (see below), so files do not each wait out a backoff of their own.
            let room = if failures > 0 {
                usize::from(tasks.is_empty())
            } else {
                CONCURRENCY.saturating_sub(tasks.len())
            };
            for (record, job) in next.into_iter().take(room) {
                let look_first = !matches!(record.state, FileState::Committed);
                {
                    let mut journal = lock(&shared.journal);
                    // The engine may have superseded the file since the jobs were picked
                    // (a start retiring the files of a dead attempt): its state stands.
                    if journal.get(&record.path).map(|r| &r.state) != Some(&record.state) {
                        continue;
                    }
                    if job == Job::Upload
                        && let Err(e) = journal.set_state(&record.path, FileState::Uploading)
                    {
                        tracing::error!(error = %e, "Sync journal");
                        continue;
                    }
                }
                in_flight.insert(record.path.clone());
                let (target, root, config) = (
                    shared.config.target.clone(),
                    shared.root.clone(),
                    shared.config.upload,
                );
                tasks.spawn(async move {
                    let started = Instant::now();
                    let outcome = match job {
                        Job::Upload => upload(&target, &root, &record, config, look_first).await,
                        Job::Retire => retire(&target, &record).await,
                    };
                    (record, job, outcome, started.elapsed().as_secs_f64())
                });
            }
        }
        let wait = if halted {
            HOUSEKEEPING
        } else {
            // Old keys left alone for a while are looked at again when that ends.
            let lingering = (!shared.uncertain.is_empty())
                .then(|| LINGERING_PUT.checked_sub(shared.opened.elapsed()))
                .flatten()
                .unwrap_or(HOUSEKEEPING);
            not_before
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
                .min(HOUSEKEEPING)
                .min(lingering.max(Duration::from_millis(1)))
        };
        tokio::select! {
            done = tasks.join_next(), if !tasks.is_empty() => {
                let Some(Ok((record, job, outcome, seconds))) = done else { continue };
                in_flight.remove(&record.path);
                let retry = match job {
                    Job::Upload => settle(&shared, &record, outcome, seconds),
                    Job::Retire => settle_retire(&shared, &record, outcome),
                };
                if retry {
                    failures = failures.saturating_add(1);
                    not_before = Instant::now() + backoff(failures);
                } else {
                    failures = 0;
                    not_before = Instant::now();
                }
                shared.signal();
            }
            () = shared.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// What the uploader does for a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Job {
    /// Put the file under its key.
    Upload,
    /// Remove a superseded file's old key.
    Retire,
}

/// Work that can start now: pending uploads, and old keys of superseded files whose new
/// key is in the target (so deleting the old one can never lose the revision). Nothing for
/// a path already in flight: an upload of an old path that was superseded meanwhile must
/// finish before its key is looked at for deletion.
pub(super) fn next_jobs(shared: &Shared, in_flight: &HashSet<String>) -> Vec<(Record, Job)> {
    let journal = lock(&shared.journal);
    journal
        .records()
        .filter(|r| !in_flight.contains(&r.path))
        .filter_map(|r| match &r.state {
            FileState::Superseded { to } => {
                let ready = !in_flight.contains(to)
                    && shared.lingering(&r.path).is_none()
                    && replacement(&journal, to).is_some_and(|t| {
                        !in_flight.contains(&t.path)
                            && matches!(t.state, FileState::Uploaded { .. } | FileState::Deleted)
                    })
                    && next_revision(&r.path)
                        .and_then(|next| journal.get(&next))
                        .is_none_or(|next| !next.state.is_pending());
                ready.then(|| (r.clone(), Job::Retire))
            }
            state if state.is_pending() => Some((r.clone(), Job::Upload)),
            _ => None,
        })
        .collect()
}

/// The record of the file that holds a replaced file's rows now: `to`, or, when `to`
/// was replaced in turn before the old key could go (an hour compacted again while the
/// bucket was out of reach), what replaced it. `None` while that file is not journaled.
pub(super) fn replacement<'j>(journal: &'j Journal, to: &str) -> Option<&'j Record> {
    let mut record = journal.get(to)?;
    // A chain is one link per compaction of one hour; the bound only stops a cycle a
    // damaged journal could hold.
    for _ in 0..1024 {
        match &record.state {
            FileState::Superseded { to } | FileState::Moved { to } => {
                record = journal.get(to)?;
            }
            _ => return Some(record),
        }
    }
    None
}

/// The path of the revision after a window file's (`…/window-<stamp>-r<N+1>.parquet`):
/// the file that replaces it in the result table. Its old key stays until that one is
/// in the target too, so a reader of the bucket never finds the window in neither.
pub(super) fn next_revision(path: &str) -> Option<String> {
    let (folder, name) = path.rsplit_once('/')?;
    let (stamp, revision) = crate::sink::layout::window_revision(name)?;
    Some(format!(
        "{folder}/window-{stamp}-r{}.parquet",
        revision.checked_add(1)?
    ))
}

/// Journals the outcome of removing an old key; returns whether to back off and retry.
pub(super) fn settle_retire(shared: &Shared, record: &Record, outcome: Outcome) -> bool {
    let FileState::Superseded { to } = &record.state else {
        return false;
    };
    let mut journal = lock(&shared.journal);
    let retry = match outcome {
        Outcome::Retired { deleted } => {
            tracing::info!(from = %record.path, to = %to, deleted, "Superseded revision moved in the target");
            let moved = FileState::Moved { to: to.clone() };
            if let Err(e) = journal.set_state(&record.path, moved) {
                tracing::error!(error = %e, "Sync journal");
            }
            false
        }
        Outcome::Failed { reason, retryable } => {
            note_failure(shared, &record.path, &reason, retryable);
            retryable
        }
        other => {
            tracing::error!(file = %record.path, outcome = ?other, "Unexpected outcome removing an old key");
            false
        }
    };
    shared.recompute_pending(&journal);
    retry
}

/// Logs a failed attempt and remembers it; a refusal halts the uploader.
pub(super) fn note_failure(shared: &Shared, path: &str, reason: &str, retryable: bool) {
    if retryable {
        tracing::warn!(file = %path, error = %reason, "Upload failed, will retry");
    } else {
        tracing::error!(target_url = %shared.config.target.url, error = %reason, "Upload refused; sync stops until this is fixed");
        let mut halted = lock(&shared.halted);
        if halted.is_none() {
            *halted = Some(reason.to_owned());
        }
    }
    *lock(&shared.last_error) = Some(reason.to_owned());
    shared.failures.fetch_add(1, Ordering::Relaxed);
}

/// Exponential backoff with full jitter: up to 100 ms × 2^n, at most [`MAX_BACKOFF`].
pub(super) fn backoff(failures: u32) -> Duration {
    let ceiling = Duration::from_millis(100)
        .saturating_mul(1 << failures.min(16))
        .min(MAX_BACKOFF);
    let jitter = (now_ms() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    ceiling.mul_f64(0.5 + 0.5 * (jitter as f64 / (1u64 << 53) as f64))
}

/// Journals the outcome of an attempt; returns whether it was a retryable failure.
pub(super) fn settle(shared: &Shared, record: &Record, outcome: Outcome, seconds: f64) -> bool {
    let mut journal = lock(&shared.journal);
    if !journal
        .get(&record.path)
        .is_some_and(|r| matches!(r.state, FileState::Uploading))
    {
        // Superseded while the upload was in flight: that state stands, and removing the
        // old key looks at the target itself, whatever this attempt left there.
        tracing::debug!(file = %record.path, outcome = ?outcome, "Upload of a superseded path finished");
        return false;
    }
    let (state, retry) = match outcome {
        Outcome::Uploaded { etag } => {
            let at_ms = now_ms();
            shared.uploaded(((at_ms - record.committed_ms) as f64, record.size, seconds));
            (FileState::Uploaded { etag, at_ms }, false)
        }
        Outcome::Conflict {
            remote_size,
            remote_etag,
        } => {
            tracing::error!(file = %record.path, remote_size, "The target holds other content under this key; keeping the local file and not overwriting");
            (
                FileState::Conflict {
                    remote_size,
                    remote_etag,
                },
                false,
            )
        }
        Outcome::Missing => {
            tracing::warn!(file = %record.path, "A pending file is gone from local disk; nothing to upload");
            (FileState::Dropped, false)
        }
        Outcome::Failed { reason, retryable } => {
            note_failure(shared, &record.path, &reason, retryable);
            (FileState::Failed { reason, retryable }, retryable)
        }
        Outcome::Unsafe(reason) => {
            tracing::error!(file = %record.path, error = %reason, "Not uploading a path that leaves the output folder");
            (FileState::Dropped, false)
        }
        Outcome::Retired { .. } => {
            tracing::error!(file = %record.path, "An upload reported a removal; trying again");
            let reason = "internal: unexpected outcome of an upload".to_owned();
            (
                FileState::Failed {
                    reason,
                    retryable: true,
                },
                true,
            )
        }
    };
    if let Err(e) = journal.set_state(&record.path, state) {
        tracing::error!(error = %e, "Sync journal");
    }
    shared.recompute_pending(&journal);
    retry
}

/// Deletes local copies of files uploaded longer ago than the retention period.
pub(super) fn expire_uploaded(shared: &Shared) {
    let cutoff = now_ms() - shared.config.retention.as_millis() as i64;
    let mut journal = lock(&shared.journal);
    let expired: Vec<String> = journal
        .records()
        .filter(|r| matches!(r.state, FileState::Uploaded { at_ms, .. } if at_ms <= cutoff))
        .map(|r| r.path.clone())
        .collect();
    for path in expired {
        let local = match paths::resolve(&shared.root, &path) {
            Ok(local) => local,
            Err(e) => {
                tracing::error!(error = %e, "Not deleting outside the output folder");
                continue;
            }
        };
        match std::fs::remove_file(local) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path, error = %e, "Could not delete an uploaded file past retention");
                continue;
            }
        }
        if let Err(e) = journal.set_state(&path, FileState::Deleted) {
            tracing::error!(error = %e, "Sync journal");
        }
    }
}
