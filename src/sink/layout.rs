//! Where outputs go: Hive-partitioned folders and deterministic file names.
//!
//! ```text
//! <root>/<query>/date=YYYY-MM-DD/hour=HH/window-<start>-r<rev>.parquet           results
//! <root>/<query>_revisions/date=.../hour=.../window-<start>-r<rev>.parquet       superseded revisions
//! <root>/<query>_late/date=.../hour=.../late-<epoch>-n<run>-w<i>of<n>.parquet    late readings
//! <root>/_deadletter/<query>/deadletters-n<run>-<part>.jsonl                     bad lines
//! <root>/_state/<query>/stream.json                                               kept stream state
//! ```
//!
//! A result file's name depends only on the window and its revision, never on the
//! worker count, so each window is in one file however many workers wrote it, and a
//! redone run writes the same names with the same bytes. Late files carry the number of
//! the run on the folder, so runs that continue each other never reuse a name.

use std::path::{Path, PathBuf};

use crate::time::{compact_stamp, partition_path};

/// File names and folders of one query's outputs.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
    query: String,
    workers: usize,
    run: u64,
}

impl Layout {
    /// The layout of `query` under `root` for run number `run` of the folder, with
    /// `workers` workers.
    pub fn new(root: &Path, query: &str, workers: usize, run: u64) -> Self {
        Layout {
            root: root.to_owned(),
            query: query.to_owned(),
            workers,
            run,
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

    /// The folder of the query's dead-letter files.
    pub fn dead_letter_dir(&self) -> PathBuf {
        self.root.join("_deadletter").join(&self.query)
    }

    /// Path, relative to the root, of part `part` of this run's dead letters.
    pub fn dead_letter_part(&self, part: u32) -> String {
        format!(
            "_deadletter/{}/deadletters-n{}-{part}.jsonl",
            self.query, self.run
        )
    }

    /// Folder of superseded revisions.
    pub fn revisions_dir(&self) -> PathBuf {
        self.root.join(format!("{}_revisions", self.query))
    }

    /// Path, relative to the root, of revision `revision` of the result file of the
    /// window starting at `start`.
    pub fn window_file(&self, start: i64, revision: u32) -> String {
        format!(
            "{}/{}/window-{}-r{revision}.parquet",
            self.query,
            partition_path(start),
            compact_stamp(start),
        )
    }

    /// Where revision `revision` of that file goes once a newer one supersedes it.
    pub fn superseded_file(&self, start: i64, revision: u32) -> String {
        format!(
            "{}_revisions/{}/window-{}-r{revision}.parquet",
            self.query,
            partition_path(start),
            compact_stamp(start),
        )
    }

    /// Path, relative to the root, of the late file for late epoch `epoch`, holding rows
    /// whose missed window lies in the partition of `partition_time`.
    /// `part` counts the files of one epoch written early because it grew large.
    pub fn late_file(&self, epoch: i64, partition_time: i64, part: u32, worker: usize) -> String {
        let part = if part == 0 {
            String::new()
        } else {
            format!("-p{part}")
        };
        format!(
            "{}_late/{}/late-{}-n{}-w{worker}of{}{part}.parquet",
            self.query,
            partition_path(partition_time),
            compact_stamp(epoch),
            self.run,
            self.workers
        )
    }

    /// Absolute path of a relative output path.
    pub fn absolute(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }
}

/// The window stamp and revision of a `window-<stamp>-r<N>.parquet` file name.
pub fn window_revision(file_name: &str) -> Option<(&str, u32)> {
    let body = file_name
        .strip_prefix("window-")?
        .strip_suffix(".parquet")?;
    let (stamp, revision) = body.rsplit_once("-r")?;
    if stamp.is_empty() || revision.is_empty() || !revision.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((stamp, revision.parse().ok()?))
}
