//! Writes bad lines to the query's dead-letter files, in input order.
//!
//! Bad records from every worker go to worker 0, which writes those whose time the
//! frontier has passed, sorted by line: records at later times come from later chunks,
//! so a file is in input order for any number of workers. A flood of bad lines behind a
//! stalled frontier is written once it passes [`FLUSH_BYTES`], so memory stays bounded.
//!
//! Files rotate: `_deadletter/<query>/deadletters-n<run>-<part>.jsonl`, a new part past
//! [`ROTATE_BYTES`] or [`ROTATE_AGE`] and at the end of the run. A finished part is fsync'd and reported
//! like any committed file, so sync ships it and the disk quota counts it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;

use md5::{Digest, Md5};
use serde::Serialize;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::Time;
use super::write_parquet::OnCommit;
use crate::decode::BadRecord;
use crate::engine::control::Control;
use crate::sink::{CommittedFile, Layout, SinkError};

/// Raw text held for bad lines waiting for the frontier before they are written anyway.
pub const FLUSH_BYTES: usize = 16 << 20;
/// A dead-letter file is closed and a new part started past this size.
pub const ROTATE_BYTES: u64 = 64 << 20;
/// ... or this long after it was opened: a live node's dead letters reach the bucket
/// within minutes, not at the end of a run that may last months.
pub const ROTATE_AGE: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Serialize)]
struct DeadLetter<'a> {
    input: &'a str,
    line: u64,
    reason: &'a str,
    raw: &'a str,
}

/// The part being written.
struct Part {
    relative: String,
    file: File,
    bytes: u64,
    md5: Md5,
    opened: std::time::Instant,
}

/// The dead-letter files of one run.
struct Writer {
    layout: Layout,
    input: String,
    parts: u32,
    current: Option<Part>,
    on_commit: OnCommit,
}

impl Writer {
    fn append(&mut self, records: &[BadRecord]) -> Result<(), SinkError> {
        let mut text = Vec::new();
        for r in records {
            let letter = DeadLetter {
                input: &self.input,
                line: r.line,
                reason: &r.reason,
                raw: &r.raw,
            };
            if serde_json::to_writer(&mut text, &letter).is_ok() {
                text.push(b'\n');
            }
        }
        if self.current.is_none() {
            let relative = self.layout.dead_letter_part(self.parts);
            self.parts += 1;
            let path = self.layout.absolute(&relative);
            let io = |source| SinkError::Io {
                path: path.clone(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&path)
                .map_err(io)?;
            self.current = Some(Part {
                relative,
                file,
                bytes: 0,
                md5: Md5::new(),
                opened: std::time::Instant::now(),
            });
        }
        let Some(part) = self.current.as_mut() else {
            return Ok(());
        };
        part.file.write_all(&text).map_err(|source| SinkError::Io {
            path: self.layout.absolute(&part.relative),
            source,
        })?;
        part.md5.update(&text);
        part.bytes += text.len() as u64;
        if part.bytes >= ROTATE_BYTES {
            self.close()?;
        }
        Ok(())
    }

    /// Makes the current part durable and reports it.
    fn close(&mut self) -> Result<(), SinkError> {
        let Some(part) = self.current.take() else {
            return Ok(());
        };
        let path = self.layout.absolute(&part.relative);
        part.file.sync_all().map_err(|source| SinkError::Io {
            path: path.clone(),
            source,
        })?;
        if let Some(dir) = path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|source| SinkError::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        (self.on_commit)(&CommittedFile {
            relative: part.relative,
            bytes: part.bytes,
            rows: 0,
            md5: format!("{:x}", part.md5.finalize()),
        });
        Ok(())
    }
}

/// Writes dead letters.
pub trait DeadLetters {
    /// Writes every bad record as a JSON line naming `input`, in rotating files under
    /// `_deadletter/<query>/`, each reported to `on_commit` once finished.
    fn dead_letters(
        self,
        layout: Layout,
        input: String,
        on_commit: OnCommit,
        control: Arc<Control>,
    );
}

impl DeadLetters for StreamVec<'_, Time, BadRecord> {
    fn dead_letters(
        self,
        layout: Layout,
        input: String,
        on_commit: OnCommit,
        control: Arc<Control>,
    ) {
        let mut pending: Vec<(Time, BadRecord)> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut writer = Writer {
            layout,
            input,
            parts: 0,
            current: None,
            on_commit,
        };
        self.sink(
            Exchange::new(|_: &BadRecord| 0),
            "DeadLetters",
            move |(input_handle, frontier)| {
                input_handle.for_each_stamp(|cap, data| {
                    let time = cap.least().copied().unwrap_or(Time::MIN);
                    for records in data {
                        pending_bytes += records.iter().map(|r| r.raw.len() + 64).sum::<usize>();
                        pending.extend(records.drain(..).map(|r| (time, r)));
                    }
                });
                let limit = frontier.frontier().first().copied();
                let flood = pending_bytes >= FLUSH_BYTES;
                let (mut ready, waiting): (Vec<_>, Vec<_>) = pending
                    .drain(..)
                    .partition(|(t, _)| flood || limit.is_none_or(|l| *t < l));
                pending = waiting;
                pending_bytes = pending.iter().map(|(_, r)| r.raw.len() + 64).sum();
                let mut result = Ok(());
                if !ready.is_empty() {
                    ready.sort_by_key(|(_, r)| r.line);
                    let records: Vec<BadRecord> = ready.into_iter().map(|(_, r)| r).collect();
                    result = writer.append(&records);
                }
                // A failed run's last part stays unreported: the next run redoes it.
                let old = writer
                    .current
                    .as_ref()
                    .is_some_and(|p| p.opened.elapsed() >= ROTATE_AGE);
                if result.is_ok() && (limit.is_none() || old) && !control.failed() {
                    result = writer.close();
                }
                if let Err(e) = result {
                    control.fail(e.into());
                }
            },
        );
    }
}
