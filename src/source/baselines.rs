//! Each polled device's last counter values, kept across restarts.
//!
//! A device with cumulative counters yields the growth since its previous answer; the
//! first answer a node sees only sets the baseline. Kept in memory alone, every restart
//! (a deploy, a crash) would make the next answer a first one again and lose what the
//! devices moved in between. So an arrival of a poll logs, with its readings, the values
//! each delta was taken up to, and the table's log writer keeps the latest per device:
//! before it deletes log segments it writes them to `counters.json` in the log's folder
//! (atomically, fsync'd), noting the last record they include. A start reads that file,
//! then the counter lines of later records still in the log, so the next delta starts
//! exactly where the last logged one ended, after a clean stop or a crash alike.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File name of the kept baselines, in a table's log folder.
const FILE: &str = "counters.json";

/// One device's counters at its last logged answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Baseline {
    /// Counter column → value.
    pub values: BTreeMap<String, u64>,
    /// When the answer came (node clock, milliseconds).
    pub at_ms: i64,
}

/// Every device's baseline, by device id.
pub type Baselines = BTreeMap<String, Baseline>;

/// The counter line of one arrival: the baselines it leaves, as logged.
pub fn line(devices: &Baselines) -> String {
    serde_json::to_string(devices).unwrap_or_default()
}

/// What `counters.json` holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    /// The last log record the baselines include.
    through: Option<u64>,
    devices: Baselines,
}

/// The baselines a table's log leaves: the kept file, then the logged lines after it.
#[derive(Debug, Default)]
pub struct Keeper {
    dir: Option<PathBuf>,
    kept: Kept,
    /// Whether lines were applied since the file was written.
    dirty: bool,
}

impl Keeper {
    /// The baselines kept in the log folder `dir` (none when there is no file; a file
    /// that cannot be read is reported and treated so).
    pub fn open(dir: Option<&Path>) -> Self {
        let kept = dir
            .map(|d| d.join(FILE))
            .and_then(|path| match std::fs::read(&path) {
                Ok(bytes) => match serde_json::from_slice::<Kept>(&bytes) {
                    Ok(kept) => Some(kept),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "Counter baselines not readable: each device's next answer starts its counters again");
                        None
                    }
                },
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "Counter baselines not readable: each device's next answer starts its counters again");
                    None
                }
            })
            .unwrap_or_default();
        Keeper {
            dir: dir.map(Path::to_owned),
            kept,
            dirty: false,
        }
    }

    /// Takes the counter line of log record `seq`; a record the file already includes
    /// (a segment not deleted yet) is passed over.
    pub fn apply(&mut self, seq: u64, line: &str) {
        if self.kept.through.is_some_and(|through| seq <= through) {
            return;
        }
        match serde_json::from_str::<Baselines>(line) {
            Ok(devices) => {
                self.kept.devices.extend(devices);
                self.dirty = true;
            }
            Err(e) => tracing::warn!(seq, error = %e, "Counter line of a log record not readable"),
        }
    }

    /// The baselines now.
    pub fn baselines(&self) -> &Baselines {
        &self.kept.devices
    }

    /// Writes the baselines, which include every record up to `through`, if lines came
    /// since the last write: the log may then delete those records.
    pub fn keep(&mut self, through: u64) -> std::io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        if !self.dirty {
            return Ok(());
        }
        self.kept.through = Some(through);
        let bytes = serde_json::to_vec(&self.kept).map_err(std::io::Error::other)?;
        let path = dir.join(FILE);
        let temporary = dir.join(format!("{FILE}.tmp"));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&temporary, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        self.dirty = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(device: &str, value: u64, at_ms: i64) -> String {
        let mut devices = Baselines::new();
        devices.insert(
            device.into(),
            Baseline {
                values: [("bytes_in".to_owned(), value)].into(),
                at_ms,
            },
        );
        line(&devices)
    }

    #[test]
    fn the_file_and_the_records_after_it_give_the_last_values() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let mut keeper = Keeper::open(Some(dir.path()));
        keeper.apply(1, &one("a", 10, 1));
        keeper.apply(2, &one("b", 20, 2));
        keeper.keep(2).unwrap_or_else(|e| panic!("{e}"));
        // Record 2 is in a segment not deleted yet, then record 3 came.
        let mut reopened = Keeper::open(Some(dir.path()));
        reopened.apply(2, &one("b", 20, 2));
        reopened.apply(3, &one("a", 15, 3));
        let values = |k: &Keeper, d: &str| k.baselines()[d].values["bytes_in"];
        assert_eq!((values(&reopened, "a"), values(&reopened, "b")), (15, 20));
        // An older record the file includes never moves a baseline back.
        reopened.apply(1, &one("a", 10, 1));
        assert_eq!(values(&reopened, "a"), 15);
    }
}
