//! CSV with a header line, decoded with the `csv` crate into typed columns.
//!
//! The header is read once by the source; every declared column must appear in it (extra
//! columns are ignored). Empty fields are NULL. Records are one line each, ended by `\n`
//! (or `\r\n`): a quoted field with a line break inside cannot be split across workers,
//! so its line is reported as bad and the next line is read as the next record. A lone
//! `\r` is not a line break.

use super::field::{FieldError, push_text_value};
use super::{BadRecord, DEFAULT_MAX_LINE_BYTES, DecodedChunk, line_too_long, raw_line};
use crate::batch::{Batch, ColumnValues, Interner};
use crate::query::SourceSchema;

/// A reader over lines ended by `\n` only, so that a lone `\r` never splits a line into
/// two records and line numbers stay those of the file.
fn line_reader(data: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(data)
}

/// Where the line starting at `start` ends: its `\n`, or the end of the data.
fn line_end(data: &[u8], start: usize) -> usize {
    memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |k| start + k)
}

/// The header does not name every declared column.
#[derive(Debug, thiserror::Error)]
#[error("CSV header lacks declared column(s) {missing}; header has: {found}")]
pub struct CsvHeaderError {
    /// Declared columns not in the header.
    pub missing: String,
    /// The header's fields.
    pub found: String,
}

/// Decodes CSV records for one source schema.
#[derive(Debug, Clone)]
pub struct CsvDecoder {
    /// For each declared column, its field index in a record.
    positions: Vec<usize>,
    names: Vec<String>,
    width: usize,
    pub(super) event_time: usize,
    pub(super) max_future_skew: i64,
    types: Vec<crate::types::DataType>,
    max_line: usize,
}

impl CsvDecoder {
    /// Maps the declared columns onto a header line.
    pub fn new(schema: &SourceSchema, header: &[u8]) -> Result<Self, CsvHeaderError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(header);
        let mut record = csv::StringRecord::new();
        let fields: Vec<String> = match reader.read_record(&mut record) {
            Ok(true) => record.iter().map(|f| f.trim().to_owned()).collect(),
            _ => Vec::new(),
        };
        let mut positions = Vec::with_capacity(schema.columns.len());
        let mut missing = Vec::new();
        for c in &schema.columns {
            match fields
                .iter()
                .position(|f| *f == c.name)
                .or_else(|| fields.iter().position(|f| f.eq_ignore_ascii_case(&c.name)))
            {
                Some(p) => positions.push(p),
                None => missing.push(format!("`{}`", c.name)),
            }
        }
        if !missing.is_empty() {
            return Err(CsvHeaderError {
                missing: missing.join(", "),
                found: fields.join(", "),
            });
        }
        Ok(CsvDecoder {
            positions,
            names: schema.columns.iter().map(|c| c.name.clone()).collect(),
            width: fields.len(),
            event_time: schema.event_time,
            max_future_skew: schema.max_future_skew,
            types: schema.types(),
            max_line: DEFAULT_MAX_LINE_BYTES,
        })
    }

    /// Sets the longest line decoded (default [`DEFAULT_MAX_LINE_BYTES`]); a longer one
    /// is a bad record.
    pub fn with_max_line_bytes(mut self, limit: usize) -> Self {
        self.max_line = limit;
        self
    }

    /// Decodes a chunk of whole lines, one record per line.
    pub fn decode(&mut self, data: &[u8], interner: &mut Interner) -> DecodedChunk {
        let mut batch = Batch::new(&self.types, data.len() / 64 + 1);
        let mut bad = Vec::new();
        let mut max_ts: Option<i64> = None;
        let mut record = csv::ByteRecord::new();
        // Where the current reader starts in `data`, and how many lines precede it.
        let mut base = 0usize;
        let mut base_line = 0u64;
        'readers: while base < data.len() {
            let mut reader = line_reader(&data[base..]);
            loop {
                let read = reader.read_byte_record(&mut record);
                let end = base + reader.position().byte() as usize;
                // The position is where the reader stood, before the blank lines it
                // skipped; the record starts after them.
                let (mut start, mut line) = match record.position() {
                    Some(p) => (base + p.byte() as usize, base_line + p.line() - 1),
                    None => break 'readers,
                };
                while data.get(start) == Some(&b'\n') {
                    start += 1;
                    line += 1;
                }
                let start = start.min(data.len());
                match read {
                    Ok(false) => break 'readers,
                    Ok(true) => {}
                    Err(e) => {
                        let line_end = line_end(data, start);
                        bad.push(BadRecord {
                            line,
                            reason: format!("invalid CSV: {e}"),
                            raw: raw_line(&data[start..line_end]),
                        });
                        base = line_end + 1;
                        base_line = line + 1;
                        continue 'readers;
                    }
                }
                let line_end = line_end(data, start);
                if line_end - start > self.max_line {
                    bad.push(line_too_long(
                        line,
                        (line_end - start) as u64,
                        self.max_line,
                        &data[start..line_end],
                    ));
                } else if end > line_end + 1 {
                    // A quoted field went on past its line: records are one line each, so
                    // the line is bad and reading starts again on the next one. The reader
                    // never looks past the chunk, which the source bounds.
                    bad.push(BadRecord {
                        line,
                        reason: "invalid CSV: quoted field not closed on its line".into(),
                        raw: raw_line(&data[start..line_end]),
                    });
                } else if &data[start..line_end] == b"\r" {
                    // A blank CRLF line (not a quoted `"\r`, which parses the same).
                    continue;
                } else if record.len() != self.width {
                    bad.push(BadRecord {
                        line,
                        reason: format!("expected {} fields, found {}", self.width, record.len()),
                        raw: raw_line(&data[start..line_end]),
                    });
                    continue;
                } else {
                    match self.push_record(&record, &mut batch, interner) {
                        Ok(()) => {
                            if let ColumnValues::Timestamp(ts) =
                                &batch.columns[self.event_time].values
                                && let Some(&t) = ts.last()
                            {
                                max_ts = Some(max_ts.map_or(t, |m| m.max(t)));
                            }
                            batch.len += 1;
                        }
                        Err(reason) => {
                            batch.rollback_row();
                            bad.push(BadRecord {
                                line,
                                reason,
                                raw: raw_line(&data[start..line_end]),
                            });
                        }
                    }
                    continue;
                }
                // Too long or broken across lines: go on after the line.
                base = line_end + 1;
                base_line = line + 1;
                continue 'readers;
            }
        }
        let mut lines = memchr::memchr_iter(b'\n', data).count() as u64;
        if data.last().is_some_and(|&b| b != b'\n') {
            lines += 1;
        }
        DecodedChunk {
            batch,
            bad,
            lines,
            max_event_time: max_ts,
            bytes: data.len() as u64,
        }
    }

    fn push_record(
        &self,
        record: &csv::ByteRecord,
        batch: &mut Batch,
        interner: &mut Interner,
    ) -> Result<(), String> {
        let last = record.len().saturating_sub(1);
        for (c, &p) in self.positions.iter().enumerate() {
            let text = record.get(p).unwrap_or_default();
            // Only `\n` ends a record, so a CRLF line leaves its `\r` on the last field.
            let text = if p == last {
                text.strip_suffix(b"\r").unwrap_or(text)
            } else {
                text
            };
            let column = &mut batch.columns[c];
            if c == self.event_time && text.is_empty() {
                return Err(format!(
                    "field `{}`: expected an event time, found an empty field",
                    self.names[c]
                ));
            }
            push_text_value(column, text, interner).map_err(|e: FieldError| {
                format!(
                    "field `{}` (column {}): {e}, found '{}'",
                    self.names[c],
                    p + 1,
                    String::from_utf8_lossy(text)
                )
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query;
    use crate::types::Value;

    fn schema() -> SourceSchema {
        match query::parse(
            "t",
            std::path::Path::new("t.sql"),
            "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, bytes BIGINT) WITH (event_time = 'ts');
             SELECT COUNT(*) FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
        ) {
            Ok(p) => p.source,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn maps_header_and_reports_bad_records() {
        let mut d = match CsvDecoder::new(&schema(), b"bytes,extra,ts,device_id\n") {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let mut interner = Interner::new();
        let data =
            b"5,x,1000,a\n\"6\",y,1970-01-01T00:00:02Z,\"b,c\"\n7,z,soon,d\n,w,3000,\n1,2,3\n";
        let c = d.decode(data, &mut interner);
        assert_eq!(c.batch.len, 3);
        assert_eq!(c.lines, 5);
        assert_eq!(
            c.batch.columns[0].value(1, &interner),
            Value::Text("b,c".into())
        );
        assert_eq!(c.batch.columns[2].value(2, &interner), Value::Null);
        assert_eq!(c.batch.columns[0].value(2, &interner), Value::Null);
        assert_eq!(c.bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 4]);
        assert!(
            c.bad[0].reason.contains("field `ts` (column 3)"),
            "{}",
            c.bad[0].reason
        );
        assert_eq!(c.bad[0].raw, "7,z,soon,d");
        assert!(c.bad[1].reason.contains("expected 4 fields, found 3"));
        assert_eq!(c.max_event_time, Some(3_000_000));
    }

    #[test]
    fn header_must_name_declared_columns() {
        let e = CsvDecoder::new(&schema(), b"device_id,bytes\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("`ts`"), "{e}");
    }
}
