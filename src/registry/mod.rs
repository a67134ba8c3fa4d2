//! The device registry a query joins: a CSV file read into a [`Version`], and on each
//! reload only what changed ([`Version::diff`]), fed to a differential dataflow
//! arrangement ([`crate::operators::registry`]).
//!
//! A file with a malformed row changes nothing: the version in force stays, and the
//! error names the file and line.

mod history;
mod load;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::query::registry::RegistryTable;

pub use history::History;
pub use load::load;

/// One value of a registry row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Value {
    /// An empty field.
    Null,
    /// `BIGINT`.
    Int(i64),
    /// `DOUBLE`, as its bits: rows only need to compare equal when they are.
    Float(u64),
    /// `TEXT`.
    Text(String),
    /// `BOOLEAN`.
    Bool(bool),
}

/// The registry's columns of one device besides the key, in declaration order
/// ([`crate::query::registry::RegistryJoin::row_position`]).
pub type Row = Vec<Value>;

/// The key of a registry row as the arrangement holds it: the join column's text
/// (a `BIGINT` in decimal).
pub type Key = String;

/// One change of the registry collection: a row inserted (1) or retracted (-1).
pub type Change = ((Key, Row), isize);

/// Why a registry file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The file cannot be read.
    #[error("registry {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The header lacks a declared column.
    #[error("{}:1: the header has no column `{column}`; the registry declares {declared}", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// Every declared column.
        declared: String,
    },
    /// A row is malformed.
    #[error("{}:{line}: {message}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// Its line, from 1.
        line: u64,
        /// What was expected.
        message: String,
    },
}

/// A device's row in a version, with the file line it came from.
#[derive(Clone, Debug, PartialEq)]
struct Listed {
    row: Row,
    line: u64,
}

/// Rows by key.
type Rows = HashMap<Key, Listed, foldhash::fast::RandomState>;

/// One version of the registry: each device's row by its key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Version {
    rows: Rows,
}

impl Version {
    /// The version of `rows` (lines unknown: it was kept, not read from a file).
    fn of_rows(rows: impl IntoIterator<Item = (Key, Row)>) -> Self {
        Version {
            rows: rows
                .into_iter()
                .map(|(key, row)| (key, Listed { row, line: 0 }))
                .collect(),
        }
    }

    /// Rows in the version.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether it has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Every row as an insertion: the first version fed to the arrangement.
    pub fn inserts(&self) -> Vec<Change> {
        self.rows
            .iter()
            .map(|(k, r)| ((k.clone(), r.row.clone()), 1))
            .collect()
    }

    /// What turns `self` into `next`: a row removed or changed is retracted, a row
    /// added or changed is inserted; rows that stay the same are not mentioned.
    pub fn diff(&self, next: &Version) -> Vec<Change> {
        let mut changes = Vec::new();
        for (key, was) in &self.rows {
            match next.rows.get(key) {
                Some(now) if now.row == was.row => {}
                _ => changes.push(((key.clone(), was.row.clone()), -1)),
            }
        }
        for (key, now) in &next.rows {
            if self.rows.get(key).is_none_or(|was| was.row != now.row) {
                changes.push(((key.clone(), now.row.clone()), 1));
            }
        }
        changes
    }
}

/// What identifies the file's content cheaply: a reload reads it only when this changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// The registry of one running query: the version in force and how to get the next.
#[derive(Debug)]
pub struct Registry {
    table: RegistryTable,
    key: usize,
    current: Mutex<(Version, Option<Stamp>)>,
}

/// What a reload found.
#[derive(Debug)]
pub enum Reload {
    /// The file is as it was.
    Unchanged,
    /// A new version, as its changes against the one in force (possibly none).
    Changed(Vec<Change>),
    /// The file was not taken; the version in force stays.
    Refused(Vec<RegistryError>),
}

impl Registry {
    /// Reads the first version of `table`, keyed by column `key`; a malformed file is an
    /// error, since there is no version to keep in force.
    pub fn open(table: &RegistryTable, key: usize) -> Result<Self, Vec<RegistryError>> {
        let before = stamp(&table.path);
        let version = load(table, key)?;
        Ok(Registry {
            table: table.clone(),
            key,
            current: Mutex::new((version, before)),
        })
    }

    /// The table.
    pub fn table(&self) -> &RegistryTable {
        &self.table
    }

    /// The version in force, as insertions.
    pub fn initial(&self) -> Vec<Change> {
        self.current
            .lock()
            .map(|c| c.0.inserts())
            .unwrap_or_default()
    }

    /// What turns `base` into the version in force.
    pub fn changes_from(&self, base: &Version) -> Vec<Change> {
        self.current
            .lock()
            .map(|c| base.diff(&c.0))
            .unwrap_or_default()
    }

    /// Rows in the version in force.
    pub fn len(&self) -> usize {
        self.current.lock().map(|c| c.0.len()).unwrap_or(0)
    }

    /// Whether the version in force has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file again if it changed, and makes it the version in force unless a
    /// row in it is malformed.
    pub fn reload(&self) -> Reload {
        let Ok(mut current) = self.current.lock() else {
            return Reload::Unchanged;
        };
        let now = stamp(&self.table.path);
        if now.is_some() && now == current.1 {
            return Reload::Unchanged;
        }
        match load(&self.table, self.key) {
            Ok(next) => {
                let changes = current.0.diff(&next);
                *current = (next, now);
                Reload::Changed(changes)
            }
            Err(errors) => {
                // Not again until the file changes once more.
                current.1 = now;
                Reload::Refused(errors)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(rows: &[(&str, &str)]) -> Version {
        Version {
            rows: rows
                .iter()
                .enumerate()
                .map(|(line, (k, v))| {
                    let row = vec![Value::Text(v.to_string())];
                    (
                        k.to_string(),
                        Listed {
                            row,
                            line: line as u64 + 2,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn diff_names_only_what_changed() {
        let old = version(&[("a", "x"), ("b", "y"), ("c", "z")]);
        let new = version(&[("a", "x"), ("b", "w"), ("d", "v")]);
        let mut changes = old.diff(&new);
        changes.sort();
        let text = |k: &str, v: &str| (k.to_string(), vec![Value::Text(v.into())]);
        assert_eq!(
            changes,
            vec![
                (text("b", "w"), 1),
                (text("b", "y"), -1),
                (text("c", "z"), -1),
                (text("d", "v"), 1),
            ]
        );
        assert!(new.diff(&new).is_empty());
    }
}
