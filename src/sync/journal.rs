//! The sync journal: which committed file is where, kept crash-safe on local disk.
//!
//! An append-only file of JSON lines under `<root>/_sync/journal.jsonl`; each line is the
//! whole new record of one file, and on open the last line per file wins. Every append is
//! fsync'd before the change counts, so a crash loses at most a change that had not
//! happened yet; a torn last line is ignored. The log is rewritten (to a temporary file,
//! fsync'd and renamed) when it has grown well past the records it holds, dropping files
//! that were uploaded and deleted locally long ago.
//!
//! A superseded revision is two records: the old path goes to
//! [`FileState::Superseded`] (its object, if we uploaded one, must go once the new path is
//! in the target) and then [`FileState::Moved`]; the new path is an ordinary record whose
//! `from` names the old path, so that when the local file is gone the object can be copied
//! in the target instead. Both lines are written with one fsync; a crash after the first
//! line only is repaired when sync starts ([`Journal::superseded_without_successor`]).
//!
//! Every path read back is checked ([`super::paths`]): one that is absolute, has `..` or
//! leads out of the output root through a symlink is skipped, logged and counted.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::jsonl_format::Format;

/// The journal's layout; its first line says which version a file holds.
pub const FORMAT: Format = Format {
    name: "edgeflow-sync-journal",
    version: 1,
};

/// Terminal records older than this are dropped when the journal is rewritten.
const FORGET_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;

/// What kind of file a record is about; results and late files go before logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FileKind {
    /// A result or late Parquet file.
    Data,
    /// An engine log file.
    Log,
}

/// Where a file stands.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FileState {
    /// Committed locally, not uploaded yet.
    Committed,
    /// An upload started and its outcome is not known yet (or the process died).
    Uploading,
    /// The last attempt failed; still pending.
    Failed {
        /// Why, without credentials.
        reason: String,
        /// Whether trying again can help.
        retryable: bool,
    },
    /// In the target with this size.
    Uploaded {
        /// The object's e-tag, when the target reports one.
        etag: Option<String>,
        /// When it became visible, epoch ms.
        at_ms: i64,
    },
    /// The target holds other content under this key; never overwritten.
    Conflict {
        /// Size of the object found.
        remote_size: u64,
        /// Its e-tag.
        remote_etag: Option<String>,
    },
    /// Removed locally by the `drop-oldest` quota policy before it was uploaded.
    Dropped,
    /// Uploaded, then removed locally after the retention period.
    Deleted,
    /// Replaced by a newer revision and moved locally to `to`; the object under this
    /// path, if it holds our bytes, is deleted once `to` is in the target.
    Superseded {
        /// The path the file moved to (relative to the output root).
        to: String,
    },
    /// Superseded, and the target no longer holds our bytes under this path.
    Moved {
        /// The path the file moved to.
        to: String,
    },
}

impl FileState {
    /// Whether the file still waits for an upload.
    pub fn is_pending(&self) -> bool {
        matches!(
            self,
            FileState::Committed | FileState::Uploading | FileState::Failed { .. }
        )
    }
}

/// Everything known about one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Path relative to the output root, `/`-separated; also the object key under the
    /// target prefix.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// MD5 of the content, hex.
    pub md5: String,
    /// Data or log.
    pub kind: FileKind,
    /// When it was committed locally, epoch ms.
    pub committed_ms: i64,
    /// For a superseded revision's new place: the path it was moved from, whose object
    /// can be copied to this key when the local file is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Upload attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// Where it stands.
    #[serde(flatten)]
    pub state: FileState,
}

/// A journal that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("sync journal {}: {source}", path.display())]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// The journal of one output root.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// `None` when opened read-only ([`Journal::read`]).
    file: Option<File>,
    records: BTreeMap<String, Record>,
    lines: usize,
    rejected: usize,
}

/// Whether every path a record names stays inside `root`.
fn check_record(root: &Path, record: &Record) -> Result<(), super::paths::PathError> {
    super::paths::resolve(root, &record.path)?;
    if let Some(from) = &record.from {
        super::paths::resolve(root, from)?;
    }
    if let FileState::Superseded { to } | FileState::Moved { to } = &record.state {
        super::paths::resolve(root, to)?;
    }
    Ok(())
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Journal {
    /// Where the journal of `root` lives.
    pub fn path_for(root: &Path) -> PathBuf {
        root.join("_sync").join("journal.jsonl")
    }

    /// Opens (or creates) the journal of `root`, replaying it.
    pub fn open(root: &Path) -> Result<Self, JournalError> {
        let path = Self::path_for(root);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| JournalError {
                path: path.clone(),
                source,
            })?;
        }
        let mut journal = Self::read(root)?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| journal.error(e))?;
        if file.metadata().map_err(|e| journal.error(e))?.len() == 0 {
            let header = FORMAT.header();
            let written = file
                .write_all(header.as_bytes())
                .and_then(|()| file.sync_data());
            written.map_err(|e| journal.error(e))?;
        }
        journal.file = Some(file);
        journal.compact_if_large()?;
        Ok(journal)
    }

    /// Replays the journal of `root` without creating, writing or compacting anything:
    /// safe while another process syncs the folder (`edgeflow status`).
    pub fn read(root: &Path) -> Result<Self, JournalError> {
        let path = Self::path_for(root);
        let fail = |source| JournalError {
            path: path.clone(),
            source,
        };
        let mut records = BTreeMap::new();
        let (mut lines, mut rejected) = (0, 0);
        if let Ok(file) = File::open(&path) {
            for line in FORMAT.lines(BufReader::new(file)) {
                let line = line.map_err(fail)?;
                // A torn last line from a crash is not a record; anything else that fails
                // to parse is skipped the same way rather than losing the rest.
                if let Ok(record) = serde_json::from_str::<Record>(&line) {
                    lines += 1;
                    if let Err(e) = check_record(root, &record) {
                        tracing::error!(journal = %path.display(), error = %e, "Skipping a journal record whose path leaves the output root");
                        rejected += 1;
                        continue;
                    }
                    records.insert(record.path.clone(), record);
                } else if !line.trim().is_empty() {
                    tracing::warn!(journal = %path.display(), "Skipping an unreadable journal line");
                }
            }
        }
        Ok(Journal {
            path,
            file: None,
            records,
            lines,
            rejected,
        })
    }

    /// Journal records skipped because their paths leave the output root.
    pub fn rejected(&self) -> usize {
        self.rejected
    }

    /// The target this root was last synced to.
    pub fn target(&self) -> Result<Option<String>, JournalError> {
        let path = self.target_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(JournalError { path, source }),
        }
    }

    /// Remembers the target this root is synced to (without any credentials written into
    /// the URL, since `edgeflow status` prints it).
    pub fn set_target(&self, url: &str) -> Result<(), JournalError> {
        let path = self.target_file();
        crate::sink::commit::commit_bytes(&path, without_userinfo(url).as_bytes())
            .map_err(|source| JournalError { path, source })
    }

    fn target_file(&self) -> PathBuf {
        self.path.with_file_name("target")
    }

    /// All records, by path.
    pub fn records(&self) -> impl Iterator<Item = &Record> {
        self.records.values()
    }

    /// The record of a path.
    pub fn get(&self, path: &str) -> Option<&Record> {
        self.records.get(path)
    }

    /// Writes a record durably and makes it current.
    pub fn put(&mut self, record: Record) -> Result<(), JournalError> {
        self.put_all(vec![record])
    }

    /// Writes records durably with one fsync, in order, and makes them current. A crash
    /// can keep a prefix of them. A record whose paths leave the output root is refused.
    pub fn put_all(&mut self, records: Vec<Record>) -> Result<(), JournalError> {
        let root = self.root();
        for record in &records {
            if let Err(e) = check_record(&root, record) {
                self.rejected += 1;
                return Err(self.error(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)));
            }
        }
        let mut text = Vec::new();
        for record in &records {
            serde_json::to_writer(&mut text, record).map_err(|e| self.error(e.into()))?;
            text.push(b'\n');
        }
        fail::fail_point!("journal-append", |arg| Err(
            self.error(crate::fault::io_error("journal-append", arg))
        ));
        let Some(file) = self.file.as_mut() else {
            return Err(self.error(std::io::Error::other("the journal was opened read-only")));
        };
        let written = file.write_all(&text).and_then(|()| file.sync_data());
        written.map_err(|e| self.error(e))?;
        for record in records {
            self.records.insert(record.path.clone(), record);
            self.lines += 1;
        }
        self.compact_if_large()
    }

    /// Records that `from` was replaced by a newer revision and moved to `to`. `to_record`
    /// is the new place's record (`from` set), or `None` when the journal already has it.
    /// The old path's line goes first: a crash after it alone is repaired at start-up.
    pub fn supersede(
        &mut self,
        from_record: Record,
        to_record: Option<Record>,
    ) -> Result<(), JournalError> {
        let mut records = vec![from_record];
        records.extend(to_record);
        self.put_all(records)
    }

    /// Superseded records whose new place has no record (a crash between the two lines).
    pub fn superseded_without_successor(&self) -> Vec<(Record, String)> {
        self.records
            .values()
            .filter_map(|r| match &r.state {
                FileState::Superseded { to } if !self.records.contains_key(to) => {
                    Some((r.clone(), to.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn root(&self) -> PathBuf {
        self.path
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// Changes the state of a known path; returns the new record.
    pub fn set_state(
        &mut self,
        path: &str,
        state: FileState,
    ) -> Result<Option<Record>, JournalError> {
        let Some(mut record) = self.records.get(path).cloned() else {
            return Ok(None);
        };
        if matches!(state, FileState::Uploading) {
            record.attempts += 1;
        }
        record.state = state;
        self.put(record.clone())?;
        Ok(Some(record))
    }

    fn error(&self, source: std::io::Error) -> JournalError {
        JournalError {
            path: self.path.clone(),
            source,
        }
    }

    fn compact_if_large(&mut self) -> Result<(), JournalError> {
        if self.lines <= 4 * self.records.len() + 1024 {
            return Ok(());
        }
        let cutoff = now_ms() - FORGET_AFTER_MS;
        self.records.retain(|_, r| {
            !(matches!(
                r.state,
                FileState::Deleted | FileState::Dropped | FileState::Moved { .. }
            ) && r.committed_ms < cutoff)
        });
        let temp = self.path.with_extension("jsonl.rewrite");
        let mut text = FORMAT.header().into_bytes();
        for record in self.records.values() {
            serde_json::to_writer(&mut text, record).map_err(|e| self.error(e.into()))?;
            text.push(b'\n');
        }
        crate::sink::commit::commit_bytes(&temp, &text).map_err(|e| self.error(e))?;
        std::fs::rename(&temp, &self.path).map_err(|e| self.error(e))?;
        self.file = Some(
            OpenOptions::new()
                .append(true)
                .open(&self.path)
                .map_err(|e| self.error(e))?,
        );
        self.lines = self.records.len();
        Ok(())
    }
}

/// `scheme://user:secret@host/...` without `user:secret@`.
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// A data file's record in `state`, for tests here and in sync.
#[cfg(test)]
pub(crate) fn test_record(path: &str, state: FileState) -> Record {
    Record {
        path: path.into(),
        size: 10,
        md5: "x".into(),
        kind: FileKind::Data,
        committed_ms: 1,
        from: None,
        attempts: 0,
        state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> Record {
        test_record(path, FileState::Committed)
    }

    #[test]
    fn survives_reopen_a_torn_line_and_compaction() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(|source| JournalError {
            path: "tmp".into(),
            source,
        })?;
        let mut j = Journal::open(dir.path())?;
        j.put(record("a"))?;
        j.put(record("b"))?;
        j.set_state("a", FileState::Uploading)?;
        j.set_state(
            "a",
            FileState::Uploaded {
                etag: Some("e".into()),
                at_ms: 5,
            },
        )?;
        drop(j);
        let path = Journal::path_for(dir.path());
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| JournalError {
                path: path.clone(),
                source,
            })?;
        f.write_all(b"{\"path\":\"c\",\"si")
            .map_err(|source| JournalError {
                path: path.clone(),
                source,
            })?;
        drop(f);
        let mut j = Journal::open(dir.path())?;
        assert_eq!(j.records().count(), 2);
        assert_eq!(
            j.get("a").map(|r| (r.attempts, r.state.clone())),
            Some((
                1,
                FileState::Uploaded {
                    etag: Some("e".into()),
                    at_ms: 5
                }
            ))
        );
        assert!(j.get("b").is_some_and(|r| r.state.is_pending()));
        for _ in 0..3000 {
            j.set_state("b", FileState::Uploading)?;
            j.set_state(
                "b",
                FileState::Failed {
                    reason: "down".into(),
                    retryable: true,
                },
            )?;
        }
        drop(j);
        let lines = std::fs::read_to_string(&path)
            .map_err(|source| JournalError {
                path: path.clone(),
                source,
            })?
            .lines()
            .count();
        assert!(lines < 1100, "{lines} lines after compaction");
        let j = Journal::open(dir.path())?;
        assert_eq!(j.get("b").map(|r| r.attempts), Some(3000));
        Ok(())
    }

    #[test]
    fn a_journal_starts_with_its_version_older_ones_read_and_newer_ones_are_refused()
    -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let path = Journal::path_for(dir.path());
        let mut j = Journal::open(dir.path())?;
        j.put(record("a"))?;
        drop(j);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        assert_eq!(text.lines().next(), Some(FORMAT.header().trim_end()));
        // A journal from before headers is version 1.
        let legacy = text.lines().skip(1).collect::<Vec<_>>().join("\n") + "\n";
        std::fs::write(&path, &legacy).map_err(io(&path))?;
        let j = Journal::open(dir.path())?;
        assert!(j.get("a").is_some());
        drop(j);
        let newer = format!("{{\"format\":\"{}\",\"version\":2}}\n{legacy}", FORMAT.name);
        std::fs::write(&path, newer).map_err(io(&path))?;
        let refused = Journal::read(dir.path()).map(|_| ()).err();
        let message = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("journal.jsonl") && message.contains("version 2"),
            "{message}"
        );
        Ok(())
    }

    fn io(path: &Path) -> impl Fn(std::io::Error) -> JournalError + '_ {
        move |source| JournalError {
            path: path.to_owned(),
            source,
        }
    }

    #[test]
    fn a_supersede_is_two_durable_records_that_survive_reopen_and_compaction()
    -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let mut j = Journal::open(dir.path())?;
        let old = Record {
            state: FileState::Uploaded {
                etag: None,
                at_ms: 3,
            },
            ..record("q/date=2026-01-01/hour=00/window-1-r0.parquet")
        };
        j.put(old.clone())?;
        let to = "q_revisions/date=2026-01-01/hour=00/window-1-r0.parquet";
        let new = Record {
            path: to.into(),
            from: Some(old.path.clone()),
            ..record(to)
        };
        j.supersede(
            Record {
                state: FileState::Superseded { to: to.into() },
                ..old.clone()
            },
            Some(new.clone()),
        )?;
        drop(j);
        let mut j = Journal::open(dir.path())?;
        assert_eq!(
            j.get(&old.path).map(|r| r.state.clone()),
            Some(FileState::Superseded { to: to.into() })
        );
        assert_eq!(j.get(to), Some(&new));
        assert!(j.superseded_without_successor().is_empty());
        // Compaction rewrites the journal: both records and the link between them stay.
        for _ in 0..3000 {
            j.set_state(to, FileState::Uploading)?;
        }
        j.set_state(&old.path, FileState::Moved { to: to.into() })?;
        drop(j);
        let j = Journal::open(dir.path())?;
        assert_eq!(
            j.get(&old.path).map(|r| r.state.clone()),
            Some(FileState::Moved { to: to.into() })
        );
        assert_eq!(j.get(to).and_then(|r| r.from.clone()), Some(old.path));
        Ok(())
    }

    #[test]
    fn a_supersede_torn_after_its_first_line_is_found_on_reopen() -> Result<(), JournalError> {
        let dir = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let mut j = Journal::open(dir.path())?;
        let to = "q_revisions/f-r0.parquet";
        j.supersede(
            Record {
                state: FileState::Superseded { to: to.into() },
                ..record("q/f-r0.parquet")
            },
            None,
        )?;
        drop(j);
        let j = Journal::open(dir.path())?;
        let torn = j.superseded_without_successor();
        assert_eq!(torn.len(), 1);
        assert_eq!(torn[0].0.path, "q/f-r0.parquet");
        assert_eq!(torn[0].1, to);
        Ok(())
    }

    #[test]
    fn paths_leaving_the_root_are_skipped_and_counted() -> Result<(), Box<dyn std::error::Error>> {
        let outside = tempfile::tempdir()?;
        let dir = tempfile::tempdir()?;
        std::os::unix::fs::symlink(outside.path(), dir.path().join("q"))?;
        let mut j = Journal::open(dir.path())?;
        j.put(record("ok/f.parquet"))?;
        // The journal refuses to write them...
        assert!(j.put(record("q/f.parquet")).is_err());
        assert!(j.put(record("../f.parquet")).is_err());
        drop(j);
        // ...and skips them when someone else did.
        let path = Journal::path_for(dir.path());
        let mut f = OpenOptions::new().append(true).open(&path)?;
        for bad in [
            record("/etc/passwd"),
            record("a/../../b"),
            record("q/f.parquet"),
            Record {
                state: FileState::Superseded {
                    to: "../elsewhere".into(),
                },
                ..record("ok/g.parquet")
            },
        ] {
            serde_json::to_writer(&mut f, &bad)?;
            f.write_all(b"\n")?;
        }
        drop(f);
        let j = Journal::read(dir.path())?;
        assert_eq!(j.rejected(), 4);
        assert_eq!(
            j.records().map(|r| r.path.as_str()).collect::<Vec<_>>(),
            ["ok/f.parquet"]
        );
        Ok(())
    }

    #[test]
    fn a_read_only_journal_creates_and_writes_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut j = Journal::read(dir.path())?;
        assert_eq!(j.records().count(), 0);
        assert!(j.put(record("a")).is_err());
        assert!(!dir.path().join("_sync").exists());
        Ok(())
    }

    #[test]
    fn credentials_in_a_target_url_are_not_remembered() {
        assert_eq!(
            without_userinfo("s3://key:secret@bucket/prefix/a@b"),
            "s3://bucket/prefix/a@b"
        );
        assert_eq!(without_userinfo("file:///tmp/x"), "file:///tmp/x");
    }
}
