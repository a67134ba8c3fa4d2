//! Where outputs go: Hive-partitioned folders and deterministic file names.
//!
//! ```text
//! <root>/<query>/date=YYYY-MM-DD/hour=HH/window-<start>-w<i>of<n>.parquet   results
//! <root>/<query>_late/date=.../hour=.../late-<epoch>-w<i>of<n>.parquet     late readings
//! <root>/_deadletter/<query>.jsonl                                          bad lines
//! ```
//!
//! A name depends only on the window (or late epoch), the worker and the worker count,
//! so a rerun over the same input rewrites the same files with the same bytes, and an
//! upload can be retried under the same key.

use std::path::{Path, PathBuf};

use crate::time::{compact_stamp, partition_path};

/// File names and folders of one query's outputs.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
    query: String,
    workers: usize,
}

impl Layout {
    /// The layout of `query` under `root` for a run with `workers` workers.
    pub fn new(root: &Path, query: &str, workers: usize) -> Self {
        Layout {
            root: root.to_owned(),
            query: query.to_owned(),
            workers,
        }
    }

    /// The output root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The query name.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// Folder of the result table.
    pub fn results_dir(&self) -> PathBuf {
        self.root.join(&self.query)
    }

    /// Folder of the late table.
    pub fn late_dir(&self) -> PathBuf {
        self.root.join(format!("{}_late", self.query))
    }

    /// The dead-letter file.
    pub fn dead_letter_file(&self) -> PathBuf {
        self.root
            .join("_deadletter")
            .join(format!("{}.jsonl", self.query))
    }

    /// Path, relative to the root, of the result file of the window starting at `start`
    /// written by `worker`.
    pub fn window_file(&self, start: i64, worker: usize) -> String {
        format!(
            "{}/{}/window-{}-w{worker}of{}.parquet",
            self.query,
            partition_path(start),
            compact_stamp(start),
            self.workers
        )
    }

    /// Path, relative to the root, of the late file for late epoch `epoch`, holding rows
    /// whose missed window lies in the partition of `partition_time`.
    pub fn late_file(&self, epoch: i64, partition_time: i64, worker: usize) -> String {
        format!(
            "{}_late/{}/late-{}-w{worker}of{}.parquet",
            self.query,
            partition_path(partition_time),
            compact_stamp(epoch),
            self.workers
        )
    }

    /// Absolute path of a relative output path.
    pub fn absolute(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}
