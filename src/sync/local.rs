//! What the local output folder holds, brought into the journal: files a crash left
//! unjournaled, revisions the engine moved without the journal hearing of it, and, at a
//! start, settled files still on disk to be looked at again.

use std::collections::HashSet;
use std::path::Path;

use super::journal::{FileKind, FileState, Journal, JournalError, Record, now_ms};
use super::{LOG_QUIET, Shared, lock, paths};
use crate::digest::md5_hex;
use crate::sink::Superseded;

/// Adds output files the journal does not know (committed just before a crash, or
/// written by a run without sync) and, with `logs_too`, every log file.
pub(super) fn adopt_local_files(shared: &Shared, logs_too: bool) -> Result<(), JournalError> {
    let mut found = Vec::new();
    collect_files(&shared.root, &shared.root, &mut found);
    let own = shared.config.own_logs.as_deref();
    let is_own = |relative: &str| {
        own.is_some_and(|prefix| {
            relative
                .rsplit('/')
                .next()
                .is_some_and(|name| name.starts_with(prefix))
        })
    };
    let newest_own = found
        .iter()
        .filter(|(relative, kind)| *kind == FileKind::Log && is_own(relative))
        .map(|(relative, _)| relative.clone())
        .max();
    // A log file is done when it is not the one this process writes to now and nobody
    // has written to it for a while (another process may still own it).
    let closed = |relative: &str| {
        if is_own(relative) {
            return newest_own.as_deref() != Some(relative);
        }
        std::fs::metadata(shared.root.join(relative))
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().unwrap_or_default() >= LOG_QUIET)
    };
    let mut journal = lock(&shared.journal);
    let known: HashSet<String> = journal.records().map(|r| r.path.clone()).collect();
    for (relative, kind) in found {
        if known.contains(&relative) {
            continue;
        }
        if kind == FileKind::Log && !logs_too && !closed(&relative) {
            continue;
        }
        let Ok(bytes) = std::fs::read(shared.root.join(&relative)) else {
            continue;
        };
        let md5 = md5_hex(&bytes);
        if let Some(moved) = unreported_move(&shared.root, &journal, &relative, &md5) {
            supersede_in(&shared.root, &mut journal, &moved)?;
            continue;
        }
        let record = Record {
            path: relative,
            size: bytes.len() as u64,
            md5,
            kind,
            committed_ms: now_ms(),
            from: None,
            attempts: 0,
            state: FileState::Committed,
        };
        match journal.put(record) {
            Ok(()) => {}
            // A name the journal refuses (a backslash, say) costs that file, not the scan.
            Err(e) if e.source.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::error!(error = %e, "Not adopting a file");
            }
            Err(e) => return Err(e),
        }
    }
    shared.recompute_pending(&journal);
    Ok(())
}

/// The record of a superseded file's new place: the same bytes, pending, remembering
/// where it came from so the target can copy it if the local file is gone.
pub(super) fn successor(old: &Record, to: &str) -> Record {
    Record {
        path: to.to_owned(),
        size: old.size,
        md5: old.md5.clone(),
        kind: old.kind,
        committed_ms: old.committed_ms,
        from: Some(old.path.clone()),
        attempts: 0,
        state: FileState::Committed,
    }
}

/// Whether a path is a compacted hour file's ([`crate::sink::compaction`]).
pub(super) fn is_compacted_path(path: &str) -> bool {
    crate::sink::compaction::is_compacted(path.rsplit('/').next().unwrap_or(path))
}

/// Journals a supersede: the old path becomes [`FileState::Superseded`] and the new path
/// gets a pending record (unless it already has one with the same bytes). Reporting the
/// same move twice changes nothing.
pub(super) fn supersede_in(
    root: &Path,
    journal: &mut Journal,
    moved: &Superseded,
) -> Result<(), JournalError> {
    let old = journal.get(&moved.from).cloned();
    if let Some(FileState::Superseded { to } | FileState::Moved { to }) =
        old.as_ref().map(|r| &r.state)
    {
        if *to != moved.to {
            // Already replaced otherwise (by a compacted file, see `Shared::compacted`):
            // the rows left the result table with it, and its key may be gone.
            tracing::info!(from = %moved.from, to = %moved.to, replaced_by = %to, "A superseded revision had been compacted; nothing to move");
        }
        return Ok(());
    }
    let old = match old {
        Some(old) => old,
        // Never journaled (written by a run without sync): the moved file tells its bytes.
        None => {
            let bytes = paths::resolve(root, &moved.to)
                .ok()
                .and_then(|local| std::fs::read(local).ok());
            let Some(bytes) = bytes else {
                tracing::warn!(from = %moved.from, to = %moved.to, "A superseded file unknown to the journal is not on local disk either; nothing to sync");
                return Ok(());
            };
            Record {
                path: moved.from.clone(),
                size: bytes.len() as u64,
                md5: md5_hex(&bytes),
                kind: FileKind::Data,
                committed_ms: now_ms(),
                from: None,
                attempts: 0,
                state: FileState::Committed,
            }
        }
    };
    let new = match journal.get(&moved.to) {
        Some(existing)
            if existing.md5 == old.md5
                && !matches!(existing.state, FileState::Dropped | FileState::Deleted) =>
        {
            None
        }
        _ => Some(successor(&old, &moved.to)),
    };
    let old = Record {
        state: FileState::Superseded {
            to: moved.to.clone(),
        },
        ..old
    };
    journal.supersede(old, new)
}

/// A file found under `<query>_revisions/` (or `_deadletter/<query>/superseded/`) whose
/// old place `<query>/…` (`_deadletter/<query>/…`) the journal knows with the same
/// bytes but which is gone from local disk: the engine moved it and the process died
/// before the journal heard of it.
pub(super) fn unreported_move(
    root: &Path,
    journal: &Journal,
    relative: &str,
    md5: &str,
) -> Option<Superseded> {
    let from = match relative.strip_prefix("_deadletter/") {
        Some(rest) => {
            let (query, name) = rest.split_once("/superseded/")?;
            format!("_deadletter/{query}/{name}")
        }
        None => {
            let (top, rest) = relative.split_once('/')?;
            let query = top.strip_suffix("_revisions")?;
            format!("{query}/{rest}")
        }
    };
    let old = journal.get(&from)?;
    let moved = old.md5 == md5
        && !matches!(
            old.state,
            FileState::Superseded { .. } | FileState::Moved { .. }
        )
        && !root.join(&from).exists();
    moved.then(|| Superseded {
        from,
        to: relative.to_owned(),
    })
}

/// Makes every settled file that is still on local disk pending again; the uploader
/// looks before it writes, so files already in the target are only confirmed.
pub(super) fn requeue_present(shared: &Shared) -> Result<(), JournalError> {
    let mut journal = lock(&shared.journal);
    let settled: Vec<String> = journal
        .records()
        .filter(|r| {
            matches!(
                r.state,
                FileState::Uploaded { .. } | FileState::Conflict { .. }
            )
        })
        .filter(|r| shared.root.join(&r.path).is_file())
        .map(|r| r.path.clone())
        .collect();
    for path in settled {
        journal.set_state(
            &path,
            FileState::Failed {
                reason: "checking against the target again".into(),
                retryable: true,
            },
        )?;
    }
    shared.recompute_pending(&journal);
    Ok(())
}

/// Output files under `dir`: Parquet (data, `<query>_revisions/` included),
/// `_logs/*.log` (logs) and dead letters moved aside (`_deadletter/*/superseded/`,
/// whole files, unlike a part being written); skips `_sync`, the other dead letters
/// (journaled when their part closes), the engine's stream state in `_state`, files
/// being written, and symlinks (never followed, so nothing outside the root is picked
/// up).
pub(super) fn collect_files(root: &Path, dir: &Path, out: &mut Vec<(String, FileKind)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if file_type.is_dir() {
            if name == "_deadletter" {
                for query in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                    let superseded = query.path().join("superseded");
                    let is_dir = std::fs::symlink_metadata(&superseded).is_ok_and(|m| m.is_dir());
                    if query.file_type().is_ok_and(|t| t.is_dir()) && is_dir {
                        collect_files(root, &superseded, out);
                    }
                }
            } else if !matches!(name.as_str(), "_sync" | "_state") {
                collect_files(root, &path, out);
            }
            continue;
        }
        if !file_type.is_file() || name.ends_with(".inprogress") {
            continue;
        }
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        let relative = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let moved_dead_letters = relative.starts_with("_deadletter/") && name.ends_with(".jsonl");
        if name.ends_with(".parquet") || moved_dead_letters {
            out.push((relative, FileKind::Data));
        } else if relative.starts_with("_logs/")
            && name.contains(".log")
            && !name.ends_with(".inprogress")
        {
            out.push((relative, FileKind::Log));
        }
    }
}
