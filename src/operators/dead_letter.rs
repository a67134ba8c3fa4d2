//! Appends bad lines to the query's dead-letter file, in input order.
//!
//! Bad records from every worker go to worker 0, which writes those whose time the
//! frontier has passed, sorted by line: records at later times come from later chunks,
//! so the file is in input order for any number of workers.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;

use super::Time;
use crate::decode::BadRecord;
use crate::engine::control::Control;
use crate::sink::SinkError;

#[derive(Serialize)]
struct DeadLetter<'a> {
    input: &'a str,
    line: u64,
    reason: &'a str,
    raw: &'a str,
}

fn append(path: &PathBuf, input: &str, records: &[BadRecord]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = Vec::new();
    for r in records {
        serde_json::to_writer(
            &mut text,
            &DeadLetter {
                input,
                line: r.line,
                reason: &r.reason,
                raw: &r.raw,
            },
        )?;
        text.push(b'\n');
    }
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(&text)?;
    file.sync_data()
}

/// Writes dead letters.
pub trait DeadLetters {
    /// Appends every bad record to `path` as a JSON line naming `input`.
    fn dead_letters(self, path: PathBuf, input: String, control: Arc<Control>);
}

impl DeadLetters for StreamVec<'_, Time, BadRecord> {
    fn dead_letters(self, path: PathBuf, input: String, control: Arc<Control>) {
        let mut pending: Vec<(Time, BadRecord)> = Vec::new();
        self.sink(
            Exchange::new(|_: &BadRecord| 0),
            "DeadLetters",
            move |(input_handle, frontier)| {
                input_handle.for_each_stamp(|cap, data| {
                    let time = cap.least().copied().unwrap_or(Time::MIN);
                    for records in data {
                        pending.extend(records.drain(..).map(|r| (time, r)));
                    }
                });
                let limit = frontier.frontier().first().copied();
                let (mut ready, waiting): (Vec<_>, Vec<_>) = pending
                    .drain(..)
                    .partition(|(t, _)| limit.is_none_or(|l| *t < l));
                pending = waiting;
                if ready.is_empty() {
                    return;
                }
                ready.sort_by_key(|(_, r)| r.line);
                let records: Vec<BadRecord> = ready.into_iter().map(|(_, r)| r).collect();
                if let Err(source) = append(&path, &input, &records) {
                    control.fail(
                        SinkError::Io {
                            path: path.clone(),
                            source,
                        }
                        .into(),
                    );
                }
            },
        );
    }
}
