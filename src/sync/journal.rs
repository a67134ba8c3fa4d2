//! The sync journal: which committed file is where, kept crash-safe on local disk.
//!
//! An append-only file of JSON lines under `<root>/_sync/journal.jsonl`; each line is the
//! whole new record of one file, and on open the last line per file wins. Every append is
//! fsync'd before the change counts, so a crash loses at most a change that had not
//! happened yet; a torn last line is ignored. The log is rewritten (to a temporary file,
//! fsync'd and renamed) when it has grown well past the records it holds, dropping files
//! that were uploaded and deleted locally long ago.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    file: File,
    records: BTreeMap<String, Record>,
    lines: usize,
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
        let fail = |source| JournalError {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let mut records = BTreeMap::new();
        let mut lines = 0;
        if let Ok(file) = File::open(&path) {
            for line in BufReader::new(file).lines() {
                let line = line.map_err(fail)?;
                // A torn last line from a crash is not a record; anything else that fails
                // to parse is skipped the same way rather than losing the rest.
                if let Ok(record) = serde_json::from_str::<Record>(&line) {
                    records.insert(record.path.clone(), record);
                    lines += 1;
                } else if !line.trim().is_empty() {
                    tracing::warn!(journal = %path.display(), "Skipping an unreadable journal line");
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(fail)?;
        let mut journal = Journal {
            path,
            file,
            records,
            lines,
        };
        journal.compact_if_large()?;
        Ok(journal)
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

    /// Remembers the target this root is synced to.
    pub fn set_target(&self, url: &str) -> Result<(), JournalError> {
        let path = self.target_file();
        crate::sink::commit::commit_bytes(&path, url.as_bytes())
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
        let mut line = serde_json::to_vec(&record).map_err(|e| self.error(e.into()))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(|e| self.error(e))?;
        self.file.sync_data().map_err(|e| self.error(e))?;
        self.records.insert(record.path.clone(), record);
        self.lines += 1;
        self.compact_if_large()
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
            !(matches!(r.state, FileState::Deleted | FileState::Dropped) && r.committed_ms < cutoff)
        });
        let temp = self.path.with_extension("jsonl.rewrite");
        let mut text = Vec::new();
        for record in self.records.values() {
            serde_json::to_writer(&mut text, record).map_err(|e| self.error(e.into()))?;
            text.push(b'\n');
        }
        crate::sink::commit::commit_bytes(&temp, &text).map_err(|e| self.error(e))?;
        std::fs::rename(&temp, &self.path).map_err(|e| self.error(e))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(|e| self.error(e))?;
        self.lines = self.records.len();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> Record {
        Record {
            path: path.into(),
            size: 10,
            md5: "x".into(),
            kind: FileKind::Data,
            committed_ms: 1,
            attempts: 0,
            state: FileState::Committed,
        }
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
}
