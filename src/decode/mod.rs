//! Input decoding: a chunk of JSON lines or CSV into a columnar [`Batch`].
//!
//! Decoders are specialised to the declared schema: they look only for declared fields,
//! parse each straight into its typed column and intern text as they read it. A line that
//! does not fit the schema is rolled back out of the batch and reported as a
//! [`BadRecord`]; decoding always goes on with the next line.

pub mod clock;
mod csv;
mod deferred;
mod field;
#[cfg(test)]
mod fuzz;
mod json;
pub mod number;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use self::csv::{CsvDecoder, CsvHeaderError};
pub use self::json::{JsonDecoder, LineCheck};
use crate::batch::{Batch, Interner};
use crate::query::SourceSchema;

/// The input formats edgeflow reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// CSV with a header line.
    Csv,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        })
    }
}

impl Format {
    /// The format a file name suggests (`.csv` is CSV, anything else JSON lines).
    pub fn from_path(path: &std::path::Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Jsonl,
        }
    }
}

/// Default longest line, not counting its `\n`: long enough for any reading, short
/// enough that hostile input cannot make a chunk, or a dead letter, grow without bound.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 20;

/// How much of a too-long line its dead letter keeps.
pub const LONG_LINE_RAW_BYTES: usize = 1024;

/// Whether the line `text` (without its `\n`), longer than `limit` bytes, is still
/// longer once the `\r` of a `\r\n` ending is not counted: a CRLF file takes lines of
/// the same length as one with `\n` endings. Callers compare the length first; only a
/// line over the limit, which is rare, comes here (kept out of line so that the
/// decoders' per-line code stays as it was).
#[cold]
#[inline(never)]
pub(crate) fn over_limit_without_cr(text: &[u8], limit: usize) -> bool {
    text.len() > limit + 1 || text.last() != Some(&b'\r')
}

/// The dead letter of a line longer than `limit`: its length and its first
/// [`LONG_LINE_RAW_BYTES`], never the whole line. `line` is 0-based in its chunk; `len`
/// counts the line up to its `\n`, `head` is its start (or all of it), and `cr_lf`
/// says it ended in `\r\n`, whose `\r` is not part of the line.
pub fn line_too_long(line: u64, len: u64, limit: usize, head: &[u8], cr_lf: bool) -> BadRecord {
    let len = len - u64::from(cr_lf && len > 0);
    let kept = (LONG_LINE_RAW_BYTES as u64).min(len) as usize;
    let head = &head[..head.len().min(kept)];
    // A file with old Mac line endings reads as one long line: say why.
    let hint = if memchr::memchr(b'\r', head).is_some_and(|k| head.get(k + 1) != Some(&b'\n')) {
        "; it holds a carriage return without a line feed: lines must end in \\n or \\r\\n"
    } else {
        ""
    };
    BadRecord {
        line,
        reason: format!("line too long ({len} bytes, limit {limit}){hint}"),
        raw: String::from_utf8_lossy(head).into_owned(),
    }
}

/// [`line_too_long`] of a line the decoder holds whole (`text`, without its `\n`).
pub(crate) fn whole_line_too_long(line: u64, limit: usize, text: &[u8]) -> BadRecord {
    line_too_long(line, text.len() as u64, limit, text, text.ends_with(b"\r"))
}

/// A line that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BadRecord {
    /// Line number: 0-based within its chunk when decoded, made 1-based and global (in
    /// the whole input) by [`crate::operators::stamp`].
    pub line: u64,
    /// What was wrong, with the column in the line where it is known.
    pub reason: String,
    /// The line as read (invalid UTF-8 replaced).
    pub raw: String,
}

/// One decoded chunk.
#[derive(Debug)]
pub struct DecodedChunk {
    /// Good readings.
    pub batch: Batch,
    /// Bad lines.
    pub bad: Vec<BadRecord>,
    /// Lines in the chunk (good, bad and blank), for global line numbers.
    pub lines: u64,
    /// Largest event time among good readings.
    pub max_event_time: Option<i64>,
    /// Input bytes the chunk covered.
    pub bytes: u64,
}

impl DecodedChunk {
    /// An empty chunk for a schema.
    pub fn empty(schema: &SourceSchema) -> Self {
        DecodedChunk {
            batch: Batch::new(&schema.types(), 0),
            bad: Vec::new(),
            lines: 0,
            max_event_time: None,
            bytes: 0,
        }
    }
}

/// A decoder for one input format, created per worker.
#[derive(Debug)]
pub enum Decoder {
    /// JSON lines.
    Json(JsonDecoder),
    /// CSV after its header.
    Csv(CsvDecoder),
}

impl Decoder {
    /// Sets the longest line decoded (default [`DEFAULT_MAX_LINE_BYTES`]); a longer
    /// one is a bad record holding its first [`LONG_LINE_RAW_BYTES`].
    pub fn with_max_line_bytes(self, limit: usize) -> Self {
        match self {
            Decoder::Json(d) => Decoder::Json(d.with_max_line_bytes(limit)),
            Decoder::Csv(d) => Decoder::Csv(d.with_max_line_bytes(limit)),
        }
    }

    /// Decodes a chunk of whole lines.
    /// Readings too far ahead of the rest of the chunk are quarantined
    /// ([`clock::quarantine_future`]).
    pub fn decode(&mut self, data: &[u8], interner: &mut Interner) -> DecodedChunk {
        self.decode_at(data, interner, None)
    }

    /// Decodes a chunk of live readings that arrived when the node's clock read
    /// `clock`: readings more than `max_ahead` after it are quarantined
    /// ([`clock::quarantine_ahead_of_clock`]); the chunk rule of files
    /// ([`clock::quarantine_future`]) does not apply, the node's clock being the better
    /// judge.
    pub fn decode_live(
        &mut self,
        data: &[u8],
        interner: &mut Interner,
        clock: i64,
        max_ahead: i64,
    ) -> DecodedChunk {
        self.decode_at(data, interner, Some((clock, max_ahead)))
    }

    fn decode_at(
        &mut self,
        data: &[u8],
        interner: &mut Interner,
        node_clock: Option<(i64, i64)>,
    ) -> DecodedChunk {
        let (mut chunk, event_time, skew) = match self {
            Decoder::Json(d) => (d.decode(data, interner), d.event_time, d.max_future_skew),
            Decoder::Csv(d) => (d.decode(data, interner), d.event_time, d.max_future_skew),
        };
        match node_clock {
            // A live reading is measured against the node's clock, which the readings
            // around it cannot stand in for: next to a device reset to 1970, a reading
            // stamped now would be "far ahead" of its chunk.
            Some((clock, max_ahead)) => {
                clock::quarantine_ahead_of_clock(&mut chunk, data, event_time, clock, max_ahead)
            }
            None => clock::quarantine_future(&mut chunk, data, event_time, skew),
        }
        chunk
    }
}

/// The raw text of a line for a dead letter, without its line break.
pub(crate) fn raw_line(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}
