//! Which inputs an output folder has consumed, and how far.
//!
//! A file is known by its canonical path and a fingerprint of the part consumed (its
//! first and last 64 KiB), so a file that grew (an hourly file still being written, a
//! log appended to) resumes where the last run stopped, and a file replaced by other
//! content under the same name is read as new. The generator is known by its settings.
//!
//! A folder fed a new file every minute (an inbox followed for months) would keep an
//! entry for every file it ever read, loaded and saved with the state at every file and
//! checkpoint. A file read to its end and since removed is forgotten once the stream has
//! moved past it ([`forget_gone`]): fed again, every reading it holds is late beyond the
//! allowance by then, so it changes no window (its readings go to the late table).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::source::{GeneratorConfig, Input};

/// Bytes of each end of the consumed part that go into the fingerprint.
const FINGERPRINT_BYTES: u64 = 64 * 1024;

/// What identifies an input across runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputKey {
    /// A file, by canonical path.
    File {
        /// Canonical path.
        path: String,
    },
    /// The built-in generator, by its settings except how many readings to make: its
    /// readings are one endless sequence, so a longer run of it resumes a shorter one.
    Generator {
        /// The settings, as JSON.
        config: String,
    },
}

impl InputKey {
    /// The key of `input`; `None` for inputs that cannot be read twice (stdin).
    pub fn of(input: &Input) -> Option<InputKey> {
        match input {
            Input::File { path, .. } => Some(InputKey::File {
                path: std::fs::canonicalize(path)
                    .unwrap_or_else(|_| path.clone())
                    .display()
                    .to_string(),
            }),
            Input::Generator(config) => Some(InputKey::Generator {
                config: serde_json::to_string(&GeneratorConfig {
                    readings: 0,
                    ..config.clone()
                })
                .unwrap_or_default(),
            }),
            Input::Stdin { .. } | Input::Live(_) => None,
        }
    }
}

/// How far an input has been consumed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumedInput {
    /// Which input.
    pub key: InputKey,
    /// Position up to which it is reflected in the outputs and the kept state: a byte
    /// offset for files, a reading count for the generator.
    pub position: u64,
    /// Lines (readings) before that position, so line numbers go on where they stopped.
    pub lines: u64,
    /// Whether the position was the end of the input when it was consumed.
    pub complete: bool,
    /// Fingerprint of the consumed part (files).
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The stream's largest event time when the input was consumed this far (none in
    /// state kept by an edgeflow before it was recorded: such entries stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_event_time: Option<i64>,
}

/// Fingerprint of the first `len` bytes of the file at `path`.
pub fn fingerprint(path: &Path, len: u64) -> std::io::Result<String> {
    let file = File::open(path)?;
    let mut hasher = Md5::new();
    let head = len.min(FINGERPRINT_BYTES);
    let tail_start = len.saturating_sub(FINGERPRINT_BYTES).max(head);
    for (offset, n) in [(0, head), (tail_start, len - tail_start)] {
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, offset)?;
        hasher.update(&buf);
    }
    hasher.update(len.to_le_bytes());
    Ok(format!("{:x}", hasher.finalize()))
}

/// Where to start reading `input` given what was consumed before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// From the beginning.
    Beginning,
    /// From a position, with the lines before it.
    Resume {
        /// Position (bytes or readings).
        position: u64,
        /// Lines before it.
        lines: u64,
    },
    /// Nothing is left to read.
    Done {
        /// Position (the end).
        position: u64,
        /// Lines before it.
        lines: u64,
    },
}

/// Decides where `input` starts, from the inputs consumed before.
pub fn start_at(input: &Input, consumed: &[ConsumedInput]) -> StartAt {
    let Some(key) = InputKey::of(input) else {
        return StartAt::Beginning;
    };
    let Some(before) = consumed.iter().find(|c| c.key == key) else {
        return StartAt::Beginning;
    };
    let current_end = match input {
        Input::File { path, .. } => {
            let Ok(len) = std::fs::metadata(path).map(|m| m.len()) else {
                return StartAt::Beginning;
            };
            if len < before.position
                || fingerprint(path, before.position).ok() != before.fingerprint
            {
                tracing::warn!(input = %input.describe(), "The input changed since an earlier run consumed it; reading it as new input");
                return StartAt::Beginning;
            }
            len
        }
        Input::Generator(config) => config.readings,
        Input::Stdin { .. } | Input::Live(_) => return StartAt::Beginning,
    };
    if before.position >= current_end {
        StartAt::Done {
            position: before.position,
            lines: before.lines,
        }
    } else {
        StartAt::Resume {
            position: before.position,
            lines: before.lines,
        }
    }
}

/// Where an input stands once consumed: how far, the lines before that, whether that
/// was its end, and the stream's largest event time then.
#[derive(Clone, Copy, Debug)]
pub struct Consumed {
    /// Position reached.
    pub position: u64,
    /// Lines before it.
    pub lines: u64,
    /// Whether it was the end of the input.
    pub complete: bool,
    /// The stream's largest event time.
    pub max_event_time: Option<i64>,
}

/// Records that `input` is consumed as far as `at` says.
pub fn record(consumed: &mut Vec<ConsumedInput>, input: &Input, at: Consumed) {
    let Some(key) = InputKey::of(input) else {
        return;
    };
    let fingerprint = match input {
        Input::File { path, .. } => fingerprint(path, at.position).ok(),
        _ => None,
    };
    consumed.retain(|c| c.key != key);
    consumed.push(ConsumedInput {
        key,
        position: at.position,
        lines: at.lines,
        complete: at.complete,
        fingerprint,
        max_event_time: at.max_event_time,
    });
}

/// Forgets the files read to their end that no longer exist, once every reading they
/// held is at or before `settled` ([`crate::query::QueryPlan::settled_through`] the
/// stream's latest event time): fed again, they would only add late readings, never
/// change a window.
pub fn forget_gone(consumed: &mut Vec<ConsumedInput>, settled: i64) {
    consumed.retain(|c| {
        let InputKey::File { path } = &c.key else {
            return true;
        };
        let passed = c.complete && c.max_event_time.is_some_and(|t| t <= settled);
        let gone =
            || std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
        !(passed && gone())
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Format;

    #[test]
    fn a_grown_file_resumes_and_a_replaced_one_is_new() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("r.jsonl");
        std::fs::write(&path, b"line one\nline two\n")?;
        let input = Input::File {
            path: path.clone(),
            format: Format::Jsonl,
        };
        let mut consumed = Vec::new();
        assert_eq!(start_at(&input, &consumed), StartAt::Beginning);
        let at = |position, lines| Consumed {
            position,
            lines,
            complete: true,
            max_event_time: Some(0),
        };
        record(&mut consumed, &input, at(18, 2));
        assert_eq!(
            start_at(&input, &consumed),
            StartAt::Done {
                position: 18,
                lines: 2
            }
        );
        std::fs::write(&path, b"line one\nline two\nline three\n")?;
        assert_eq!(
            start_at(&input, &consumed),
            StartAt::Resume {
                position: 18,
                lines: 2
            }
        );
        std::fs::write(&path, b"other on\nline two\nline three\n")?;
        assert_eq!(start_at(&input, &consumed), StartAt::Beginning);
        Ok(())
    }

    /// Only a file read to its end, removed, and passed by the stream is forgotten;
    /// the generator and entries without a recorded event time always stay.
    #[test]
    fn gone_files_are_forgotten_once_the_stream_has_passed_them() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let file = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, b"x\n").map(|()| Input::File {
                path,
                format: Format::Jsonl,
            })
        };
        let (kept, removed, partial, early) = (
            file("kept.jsonl")?,
            file("removed.jsonl")?,
            file("partial.jsonl")?,
            file("early.jsonl")?,
        );
        let mut consumed = Vec::new();
        let at = |complete, max_event_time| Consumed {
            position: 2,
            lines: 1,
            complete,
            max_event_time,
        };
        record(&mut consumed, &kept, at(true, Some(10)));
        record(&mut consumed, &removed, at(true, Some(10)));
        record(&mut consumed, &partial, at(false, Some(10)));
        record(&mut consumed, &early, at(true, None));
        let generator = Input::Generator(GeneratorConfig::default());
        record(&mut consumed, &generator, at(true, Some(10)));
        for input in [&removed, &partial, &early] {
            if let Input::File { path, .. } = input {
                std::fs::remove_file(path)?;
            }
        }
        forget_gone(&mut consumed, 9);
        assert_eq!(consumed.len(), 5, "the stream has not passed them yet");
        forget_gone(&mut consumed, 10);
        let removed_key = InputKey::of(&removed);
        assert_eq!(consumed.len(), 4);
        assert!(
            consumed
                .iter()
                .all(|c| Some(&c.key) != removed_key.as_ref())
        );
        assert!(matches!(start_at(&kept, &consumed), StartAt::Done { .. }));
        Ok(())
    }
}
