//! The registry versions a later run may still join, kept in the output folder.
//!
//! A window joins the version in force when the watermark passed its end, also when a
//! correction writes it again, or when a run redoes what a killed run did. Both can
//! happen in a later run, after the file changed: that run must still join the window
//! with the version it closed under, which only the folder can tell it. So under
//! `allowed_lateness`, each version a run brings into force is recorded, with the time
//! it was stamped at, in `_state/<query>/registry.bin` (zstd-compressed bincode) before
//! any window joins it, and `registry.through` holds the last window boundary the
//! watermark passed, written before any window ending there joins. The next run feeds
//! these versions to its arrangement at their times, and the file as it is then from
//! that boundary on: windows closed before keep their versions, the others join the
//! file. Versions no window can be written under any more fold into one.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Change, Key, Row, Version};
use crate::operators::Time;

/// Versions by the time they came into force, each as its changes against the one
/// before (the first: every row inserted).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    versions: Vec<(Time, Vec<Change>)>,
}

/// zstd level of the kept file: small and quick, read once per run.
const LEVEL: i32 = 3;

impl History {
    /// Where a query's versions are kept.
    pub fn path(root: &Path, query: &str) -> PathBuf {
        root.join("_state").join(query).join("registry.bin")
    }

    /// Where the last window boundary the watermark passed is kept, next to `path`.
    pub fn through_path(path: &Path) -> PathBuf {
        path.with_file_name("registry.through")
    }

    /// Forgets what `root` keeps for `query` (a `--fresh` start: every window joins the
    /// file as it is then).
    pub fn forget(root: &Path, query: &str) -> std::io::Result<()> {
        let path = Self::path(root, query);
        for file in [Self::through_path(&path), path] {
            match std::fs::remove_file(&file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// The versions kept at `path`. None kept, or a file that cannot be read (logged),
    /// is no history: the current file then stands for every window.
    pub fn load(path: &Path) -> History {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return History::default(),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "The kept registry versions cannot be read; the registry file as it is now stands for every window written again");
                return History::default();
            }
        };
        let decoded = zstd::decode_all(bytes.as_slice())
            .map_err(|e| e.to_string())
            .and_then(|raw| bincode::deserialize::<History>(&raw).map_err(|e| e.to_string()));
        decoded.unwrap_or_else(|e| {
            tracing::warn!(file = %path.display(), error = %e, "The kept registry versions cannot be read; the registry file as it is now stands for every window written again");
            History::default()
        })
    }

    /// The last window boundary the watermark passed, as kept next to `path`.
    pub fn load_through(path: &Path) -> Option<Time> {
        std::fs::read_to_string(Self::through_path(path))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Keeps `through` as the last window boundary the watermark passed, durably.
    pub fn save_through(path: &Path, through: Time) -> std::io::Result<()> {
        crate::sink::commit::commit_bytes(&Self::through_path(path), through.to_string().as_bytes())
    }

    /// Writes the versions to `path`, durably.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let raw = bincode::serialize(self).map_err(std::io::Error::other)?;
        let bytes = zstd::bulk::compress(&raw, LEVEL)?;
        crate::sink::commit::commit_bytes(path, &bytes)
    }

    /// The versions, oldest first, each with the time it came into force.
    pub fn versions(&self) -> &[(Time, Vec<Change>)] {
        &self.versions
    }

    /// The last version's time, if any.
    pub fn last_time(&self) -> Option<Time> {
        self.versions.last().map(|(at, _)| *at)
    }

    /// The latest version.
    pub fn latest(&self) -> Version {
        let mut rows = HashMap::default();
        self.apply_through(Time::MAX, &mut rows);
        Version::of_rows(rows)
    }

    /// Records a version in force from `at`, as its changes.
    pub fn record(&mut self, at: Time, changes: Vec<Change>) {
        self.versions.push((at, changes));
    }

    /// Folds the versions in force at or before `horizon` into one: no window ending
    /// after `horizon` can tell them apart, and none ending before is written again.
    pub fn fold_through(&mut self, horizon: Time) {
        let folded = self
            .versions
            .iter()
            .take_while(|(at, _)| *at <= horizon)
            .count();
        if folded < 2 {
            return;
        }
        let at = self.versions[folded - 1].0;
        let mut rows = HashMap::default();
        self.apply_through(at, &mut rows);
        let mut base: Vec<Change> = rows.into_iter().map(|(k, r)| ((k, r), 1)).collect();
        base.sort();
        self.versions.splice(..folded, [(at, base)]);
    }

    /// Applies the versions up to `until` to `rows`.
    fn apply_through(&self, until: Time, rows: &mut HashMap<Key, Row>) {
        for (_, changes) in self.versions.iter().take_while(|(at, _)| *at <= until) {
            // Retractions first: a changed row is retracted and inserted in one version.
            for ((key, row), diff) in changes {
                if *diff < 0 && rows.get(key) == Some(row) {
                    rows.remove(key);
                }
            }
            for ((key, row), diff) in changes {
                if *diff > 0 {
                    rows.insert(key.clone(), row.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Value;

    fn change(key: &str, site: &str, diff: isize) -> Change {
        ((key.to_owned(), vec![Value::Text(site.to_owned())]), diff)
    }

    fn history() -> History {
        let mut history = History::default();
        history.record(i64::MIN, vec![change("a", "x", 1), change("b", "y", 1)]);
        history.record(100, vec![change("b", "y", -1), change("b", "z", 1)]);
        history.record(200, vec![change("c", "w", 1), change("a", "x", -1)]);
        history
    }

    #[test]
    fn folding_keeps_what_later_windows_see() {
        let mut folded = history();
        folded.fold_through(150);
        assert_eq!(folded.versions().len(), 2);
        assert_eq!(folded.versions()[0].0, 100);
        assert_eq!(folded.latest(), history().latest());
        let mut rows = HashMap::default();
        folded.apply_through(100, &mut rows);
        let mut expected = HashMap::default();
        history().apply_through(100, &mut expected);
        assert_eq!(rows, expected);
    }

    #[test]
    fn kept_versions_load_as_saved_and_a_broken_file_is_no_history() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("registry.bin");
        history().save(&path).unwrap_or_else(|e| panic!("{e}"));
        History::save_through(&path, 180).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(History::load(&path), history());
        assert_eq!(History::load_through(&path), Some(180));
        std::fs::write(&path, b"not zstd").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(History::load(&path), History::default());
        History::forget(dir.path(), "q").unwrap_or_else(|e| panic!("{e}"));
    }
}
