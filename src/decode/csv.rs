//! CSV with a header line, decoded with the `csv` crate into typed columns.
//!
//! The header is read once by the source; every declared column must appear in it (extra
//! columns are ignored). Empty fields are NULL. Records are one line each: a quoted field
//! with a line break inside cannot be split across workers and is reported as bad.

use super::field::{FieldError, push_text_value};
use super::{BadRecord, DecodedChunk, raw_line};
use crate::batch::{Batch, ColumnValues, Interner};
use crate::query::SourceSchema;

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
        })
    }

    /// Decodes a chunk of whole records.
    pub fn decode(&mut self, data: &[u8], interner: &mut Interner) -> DecodedChunk {
        let mut batch = Batch::new(&self.types, data.len() / 64 + 1);
        let mut bad = Vec::new();
        let mut max_ts: Option<i64> = None;
        let mut row_starts = Vec::new();
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(data);
        let mut record = csv::ByteRecord::new();
        loop {
            let start = reader.position().byte() as usize;
            let line = reader.position().line();
            let read = reader.read_byte_record(&mut record);
            let end = reader.position().byte() as usize;
            let raw = || raw_line(&data[start.min(data.len())..end.min(data.len())]);
            // Lines of the record start where the record does; blank lines were skipped.
            let record_line = record
                .position()
                .map_or(line, |p| p.line())
                .saturating_sub(1);
            match read {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    bad.push(BadRecord {
                        line: record_line,
                        reason: format!("invalid CSV: {e}"),
                        raw: raw(),
                    });
                    continue;
                }
            }
            if record.len() != self.width {
                bad.push(BadRecord {
                    line: record_line,
                    reason: format!("expected {} fields, found {}", self.width, record.len()),
                    raw: raw(),
                });
                continue;
            }
            match self.push_record(&record, &mut batch, interner) {
                Ok(()) => {
                    if let ColumnValues::Timestamp(ts) = &batch.columns[self.event_time].values
                        && let Some(&t) = ts.last()
                    {
                        max_ts = Some(max_ts.map_or(t, |m| m.max(t)));
                    }
                    batch.len += 1;
                    row_starts.push(record.position().map_or(start, |p| p.byte() as usize));
                }
                Err(reason) => {
                    batch.rollback_row();
                    bad.push(BadRecord {
                        line: record_line,
                        reason,
                        raw: raw(),
                    });
                }
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
            row_starts,
            bytes: data.len() as u64,
        }
    }

    fn push_record(
        &self,
        record: &csv::ByteRecord,
        batch: &mut Batch,
        interner: &mut Interner,
    ) -> Result<(), String> {
        for (c, &p) in self.positions.iter().enumerate() {
            let text = record.get(p).unwrap_or_default();
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
