//! CSV with a header line, decoded into typed columns: lines without quotes split at
//! their commas, lines with quotes by the `csv` crate.
//!
//! The header is read once by the source; every declared column must appear in it (extra
//! columns are ignored). Empty fields are NULL. Records are one line each, ended by `\n`
//! (or `\r\n`): a quoted field with a line break inside cannot be split across workers,
//! so its line is reported as bad and the next line is read as the next record. A lone
//! `\r` is not a line break.

use super::deferred::{DeferredTexts, UNRESOLVED};
use super::field::{FieldError, millis_to_micros, push_text_value, timestamp_from_text_cached};
use super::number::{Decimal, decimal_prefix, integer_prefix};
use super::{
    BadRecord, DEFAULT_MAX_LINE_BYTES, DecodedChunk, over_limit_without_cr, raw_line,
    whole_line_too_long,
};
use crate::batch::{Batch, ColumnValues, Interner};
use crate::query::SourceSchema;
use crate::time::DateCache;

/// One record read by the `csv` crate's core parser (quotes, doubled quotes), into
/// buffers reused from line to line.
struct QuotedRecord {
    parser: csv_core::Reader,
    /// The fields' bytes, unquoted, one after the other.
    bytes: Vec<u8>,
    /// Where each field ends in `bytes`.
    ends: Vec<usize>,
    /// Fields read.
    fields: usize,
}

impl Default for QuotedRecord {
    fn default() -> Self {
        QuotedRecord {
            // Only `\n` ends a record, so a lone `\r` never splits a line into two
            // records and line numbers stay those of the file.
            parser: csv_core::ReaderBuilder::new()
                .terminator(csv_core::Terminator::Any(b'\n'))
                .build(),
            bytes: vec![0; 1024],
            ends: vec![0; 32],
            fields: 0,
        }
    }
}

impl QuotedRecord {
    /// Reads the record at the start of `input`; returns the bytes it took, its line
    /// break included.
    fn parse(&mut self, mut input: &[u8]) -> usize {
        self.parser.reset();
        let (mut consumed, mut written) = (0, 0);
        self.fields = 0;
        loop {
            let (result, nin, nout, nend) = self.parser.read_record(
                input,
                &mut self.bytes[written..],
                &mut self.ends[self.fields..],
            );
            input = &input[nin..];
            consumed += nin;
            written += nout;
            self.fields += nend;
            match result {
                // An empty input next tells the parser the data has ended.
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    self.bytes.resize(self.bytes.len() * 2, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    self.ends.resize(self.ends.len() * 2, 0);
                }
                csv_core::ReadRecordResult::Record | csv_core::ReadRecordResult::End => {
                    return consumed;
                }
            }
        }
    }

    /// Fields in the record.
    fn len(&self) -> usize {
        self.fields
    }

    /// Field `i`, unquoted.
    fn field(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[from..self.ends[i]]
    }
}

/// Where the field at the start of `rest` ends: at the next comma, or for the `last`
/// field at the end of the line. `None` when the line has too many fields or too few.
#[inline]
fn field_end(rest: &[u8], last: bool) -> Option<usize> {
    match (memchr::memchr(b',', rest), last) {
        (None, true) => Some(rest.len()),
        (Some(n), false) => Some(n),
        _ => None,
    }
}

/// A header that does not say where each declared column is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CsvHeaderError {
    /// Declared columns are not in the header.
    #[error("CSV header lacks declared column(s) {missing}; header has: {found}")]
    Missing {
        /// Declared columns not in the header.
        missing: String,
        /// The header's fields.
        found: String,
    },
    /// A carriage return inside the header line: the header and what follows the `\r`
    /// would be taken for one line (a file with old Mac line endings, or records glued
    /// to the header).
    #[error(
        "CSV header line holds a carriage return (\\r) before its end: lines must end in \\n or \\r\\n (old Mac line endings?)"
    )]
    CarriageReturn,
    /// No header line at all.
    #[error("CSV input has no header line (empty file)")]
    Empty,
    /// A declared column is named by more than one field.
    #[error(
        "CSV header names declared column `{column}` more than once (fields {fields}): which one to read is ambiguous"
    )]
    Twice {
        /// The declared column.
        column: String,
        /// The fields naming it, counting from 1.
        fields: String,
    },
}

/// Decodes CSV records for one source schema.
#[derive(Debug, Clone)]
pub struct CsvDecoder {
    /// For each declared column, its field index in a record.
    positions: Vec<usize>,
    /// For each field of a record, the declared column it feeds, if any.
    column_of: Vec<Option<usize>>,
    /// The RFC 3339 date of the last event time read as text.
    dates: DateCache,
    names: Vec<String>,
    width: usize,
    pub(super) event_time: usize,
    pub(super) max_future_skew: i64,
    types: Vec<crate::types::DataType>,
    max_line: usize,
    /// Whether lines without quotes are split at commas directly (always, but for the
    /// test that checks it agrees with the full parser).
    pub(super) split_plain: bool,
    /// Keys read by the fast path, interned a batch at a time once the interner is large.
    deferred: DeferredTexts,
}

impl CsvDecoder {
    /// Maps the declared columns onto a header line.
    pub fn new(schema: &SourceSchema, header: &[u8]) -> Result<Self, CsvHeaderError> {
        let line = header.strip_suffix(b"\n").unwrap_or(header);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.contains(&b'\r') {
            return Err(CsvHeaderError::CarriageReturn);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err(CsvHeaderError::Empty);
        }
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
            let exact: Vec<usize> = (0..fields.len()).filter(|&i| fields[i] == c.name).collect();
            let named = if exact.is_empty() {
                (0..fields.len())
                    .filter(|&i| fields[i].eq_ignore_ascii_case(&c.name))
                    .collect()
            } else {
                exact
            };
            match named[..] {
                [p] => positions.push(p),
                [] => missing.push(format!("`{}`", c.name)),
                _ => {
                    return Err(CsvHeaderError::Twice {
                        column: c.name.clone(),
                        fields: named
                            .iter()
                            .map(|i| (i + 1).to_string())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                }
            }
        }
        if !missing.is_empty() {
            return Err(CsvHeaderError::Missing {
                missing: missing.join(", "),
                found: fields.join(", "),
            });
        }
        let mut column_of = vec![None; fields.len()];
        for (c, &p) in positions.iter().enumerate() {
            if column_of[p].replace(c).is_some() {
                // Two declared columns read one field (names that differ only in
                // case): only the careful path fills both.
                column_of.clear();
                break;
            }
        }
        Ok(CsvDecoder {
            positions,
            column_of,
            dates: DateCache::default(),
            names: schema.columns.iter().map(|c| c.name.clone()).collect(),
            width: fields.len(),
            event_time: schema.event_time,
            max_future_skew: schema.max_future_skew,
            types: schema.types(),
            max_line: DEFAULT_MAX_LINE_BYTES,
            split_plain: true,
            deferred: DeferredTexts::default(),
        })
    }

    /// Sets the longest line decoded (default [`DEFAULT_MAX_LINE_BYTES`]); a longer one
    /// is a bad record.
    pub fn with_max_line_bytes(mut self, limit: usize) -> Self {
        self.max_line = limit;
        self
    }

    /// Decodes a chunk of whole lines, one record per line.
    ///
    /// A line without a quote is split at its commas directly, which is what CSV means
    /// for it; only a line with quotes goes through the `csv` crate's full parser.
    pub fn decode(&mut self, data: &[u8], interner: &mut Interner) -> DecodedChunk {
        let mut batch = Batch::new(&self.types, data.len() / 64 + 1);
        let mut bad = Vec::new();
        let mut max_ts: Option<i64> = None;
        let mut quoted = QuotedRecord::default();
        let mut commas: Vec<usize> = Vec::with_capacity(self.width + 1);
        // One pass over the chunk finds every line break and quote; commas are found
        // line by line, by the fields that need them.
        let mut marks = memchr::memchr2_iter(b'\n', b'"', data);
        let mut start = 0usize;
        let mut line = 0u64;
        while start < data.len() {
            let mut has_quote = false;
            let mut end = data.len();
            for at in marks.by_ref() {
                if data[at] == b'\n' {
                    end = at;
                    break;
                }
                has_quote = true;
            }
            let text = &data[start..end];
            let (this_line, this_start) = (line, start);
            line += 1;
            start = end + 1;
            if text.is_empty() || text == b"\r" {
                continue;
            }
            let bad_line = |reason: String| BadRecord {
                line: this_line,
                reason,
                raw: raw_line(text),
            };
            if text.len() > self.max_line && over_limit_without_cr(text, self.max_line) {
                bad.push(whole_line_too_long(this_line, self.max_line, text));
                continue;
            }
            // Only `\n` ends a record, so a CRLF line keeps its `\r`: not part of the last
            // field.
            let plain = text.strip_suffix(b"\r").unwrap_or(text);
            let fast = self.split_plain
                && self.push_plain((plain, this_start), has_quote, &mut batch, interner);
            if !fast {
                // Not the simple case: undo what was pushed, then read the line the
                // careful way, which words any error. Waiting keys, this line's too, are
                // interned first: ids follow the order of the lines, and a key read
                // before the line was found bad is interned, as it was on the spot.
                self.deferred.resolve(data, &mut batch, interner);
                batch.rollback_row();
            }
            let pushed = if fast {
                Ok(())
            } else if self.split_plain && !has_quote {
                commas.clear();
                commas.extend(memchr::memchr_iter(b',', plain));
                if commas.len() + 1 != self.width {
                    bad.push(bad_line(format!(
                        "expected {} fields, found {}",
                        self.width,
                        commas.len() + 1
                    )));
                    continue;
                }
                let field = |i: usize| {
                    let from = if i == 0 { 0 } else { commas[i - 1] + 1 };
                    let to = commas.get(i).copied().unwrap_or(plain.len());
                    &plain[from..to]
                };
                self.push_fields(field, plain.is_ascii(), &mut batch, interner)
            } else {
                let consumed = quoted.parse(&data[this_start..]);
                if consumed > text.len() + 1 {
                    // A quoted field went on past its line: records are one line each,
                    // so the line is bad and the next line is the next record.
                    bad.push(bad_line(
                        "invalid CSV: quoted field not closed on its line".into(),
                    ));
                    continue;
                }
                // The parser takes a lone quote inside an unquoted field as text; such a
                // line is most often the rest of a quoted field that spanned lines.
                if memchr::memchr_iter(b'"', text).count() % 2 == 1 {
                    bad.push(bad_line(
                        "invalid CSV: a double quote without its pair (the rest of a quoted field that spans lines?)".into(),
                    ));
                    continue;
                }
                if quoted.len() != self.width {
                    bad.push(bad_line(format!(
                        "expected {} fields, found {}",
                        self.width,
                        quoted.len()
                    )));
                    continue;
                }
                let last = quoted.len().saturating_sub(1);
                let field = |i: usize| {
                    let f = quoted.field(i);
                    // As above: the `\r` of a CRLF line is not part of the last field.
                    if i == last {
                        f.strip_suffix(b"\r").unwrap_or(f)
                    } else {
                        f
                    }
                };
                self.push_fields(field, false, &mut batch, interner)
            };
            match pushed {
                Ok(()) => {
                    if let ColumnValues::Timestamp(ts) = &batch.columns[self.event_time].values
                        && let Some(&t) = ts.last()
                    {
                        max_ts = Some(max_ts.map_or(t, |m| m.max(t)));
                    }
                    batch.len += 1;
                    if self.deferred.is_full() {
                        self.deferred.resolve(data, &mut batch, interner);
                    }
                }
                Err(reason) => {
                    batch.rollback_row();
                    bad.push(bad_line(reason));
                }
            }
        }
        self.deferred.resolve(data, &mut batch, interner);
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

    /// Reads a line in one pass, field by field: a number is parsed where it stands and
    /// must end at its comma, any other field ends at the next comma (`memchr`). With
    /// `quotes` (the line has a quote somewhere), a field may be quoted as a whole with
    /// no quote inside (`"a,b"`), and no other field may hold a quote. Returns false,
    /// with the row partly pushed, when the line is not that simple: a field count other
    /// than the header's, an empty event time, a value [`push_text_value`] rejects, or
    /// quoting beyond that. The caller then reads the line the careful way.
    ///
    /// `line_at` is where `text` starts in the chunk.
    #[inline]
    fn push_plain(
        &mut self,
        (text, line_at): (&[u8], usize),
        quotes: bool,
        batch: &mut Batch,
        interner: &mut Interner,
    ) -> bool {
        if self.column_of.is_empty() {
            return false;
        }
        let last = self.column_of.len().saturating_sub(1);
        let mut at = 0;
        for f in 0..self.column_of.len() {
            let wanted = self.column_of[f];
            let rest = &text[at..];
            let ends = |n: usize| {
                if f == last {
                    n == rest.len()
                } else {
                    rest.get(n) == Some(&b',')
                }
            };
            if quotes && rest.first() == Some(&b'"') {
                // The value is what lies between the quotes; a quote inside (doubled,
                // or one that does not end the field) is for the careful path.
                let Some(close) = memchr::memchr(b'"', &rest[1..]).map(|q| q + 1) else {
                    return false;
                };
                if !ends(close + 1) {
                    return false;
                }
                if let Some(c) = wanted
                    && !self.push_value(c, (&rest[1..close], line_at + at + 1), batch, interner)
                {
                    return false;
                }
                at += close + 2;
                continue;
            }
            let parsed = wanted.and_then(|c| {
                let column = &mut batch.columns[c];
                let n = match &mut column.values {
                    ColumnValues::BigInt(v) => {
                        let (n, x) = integer_prefix(rest).filter(|&(n, _)| ends(n))?;
                        v.push(x);
                        n
                    }
                    ColumnValues::Double(v) => match decimal_prefix(rest) {
                        Decimal::Short(n, x) if ends(n) => {
                            v.push(x);
                            n
                        }
                        _ => return None,
                    },
                    ColumnValues::Timestamp(v) => {
                        if let Some((n, ms)) = integer_prefix(rest).filter(|&(n, _)| ends(n)) {
                            v.push(millis_to_micros(ms).ok()?);
                            n
                        } else {
                            let n = field_end(rest, f == last)?;
                            v.push(timestamp_from_text_cached(&rest[..n], &mut self.dates).ok()?);
                            n
                        }
                    }
                    ColumnValues::Text(_) | ColumnValues::Boolean(_) => return None,
                };
                column.mark_pushed();
                Some(n)
            });
            let n = match parsed {
                Some(n) => n,
                None => {
                    let Some(n) = field_end(rest, f == last) else {
                        return false;
                    };
                    let value = &rest[..n];
                    if quotes && memchr::memchr(b'"', value).is_some() {
                        return false;
                    }
                    if let Some(c) = wanted
                        && !self.push_value(c, (value, line_at + at), batch, interner)
                    {
                        return false;
                    }
                    n
                }
            };
            at += n + 1;
        }
        true
    }

    /// Pushes `value` (at `value_at` in the chunk) to column `c` as the careful path
    /// would; false where it would report the line. Once the interner is large, a text
    /// value waits for its id (`decode::deferred`).
    #[inline]
    fn push_value(
        &mut self,
        c: usize,
        (value, value_at): (&[u8], usize),
        batch: &mut Batch,
        interner: &mut Interner,
    ) -> bool {
        if c == self.event_time && value.is_empty() {
            return false;
        }
        let row = batch.len;
        let column = &mut batch.columns[c];
        if let ColumnValues::Text(ids) = &mut column.values
            && !value.is_empty()
            && interner.is_large()
            && std::str::from_utf8(value).is_ok()
        {
            let span = (value_at, value_at + value.len());
            self.deferred.push(interner.hash(value), span, c, row);
            ids.push(UNRESOLVED);
            column.mark_pushed();
            return true;
        }
        push_text_value(column, value, false, interner).is_ok()
    }

    /// Pushes one record's declared columns; `field(i)` is the record's field `i`, and
    /// `ascii` says every field is ASCII (so UTF-8) already.
    fn push_fields<'f>(
        &self,
        field: impl Fn(usize) -> &'f [u8],
        ascii: bool,
        batch: &mut Batch,
        interner: &mut Interner,
    ) -> Result<(), String> {
        for (c, &p) in self.positions.iter().enumerate() {
            let text = field(p);
            let column = &mut batch.columns[c];
            if c == self.event_time && text.is_empty() {
                return Err(format!(
                    "field `{}`: expected an event time, found an empty field",
                    self.names[c]
                ));
            }
            push_text_value(column, text, ascii, interner).map_err(|e: FieldError| {
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
    use crate::decode::deferred::large_interner;
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

    /// One line of [`keys_interned_in_batches_get_the_ids_of_one_line_at_a_time`], for
    /// the header `device_id,ts,bytes`.
    fn batched_line(device: usize, kind: usize) -> String {
        match kind {
            // The fast path, whose keys wait, plain or quoted as a whole.
            0..=4 => format!("k{device},1000,5"),
            5 => format!("\"k{device}\",1000,5"),
            // A key that waits, then a bad number undoes the line and the careful path
            // (which interns the key before it meets the number) reports it.
            6 => format!("k{device},1000,five"),
            // A doubled quote: the careful path.
            7 => format!("\"k{device}\"\"\",1000,5"),
            // A field short: the fast path has read the key; the careful path only counts
            // the fields.
            8 => format!("k{device},1000"),
            _ => ",1000,5".to_owned(),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// With an interner large enough that keys wait and are interned a batch at a time,
        /// every key gets the id it gets when each line's key is interned as the line is
        /// read, through quoted keys, undone lines and careful-path lines.
        #[test]
        fn keys_interned_in_batches_get_the_ids_of_one_line_at_a_time(
            lines in proptest::collection::vec((0usize..50_200, 0usize..10), 0..700),
        ) {
            let (mut interner, mut oracle) = (large_interner(), large_interner());
            proptest::prop_assert!(interner.is_large());
            let mut d = match CsvDecoder::new(&schema(), b"device_id,ts,bytes\n") {
                Ok(d) => d,
                Err(e) => panic!("{e}"),
            };
            let text: String = lines.iter().map(|&(k, kind)| batched_line(k, kind) + "\n").collect();
            let c = d.decode(text.as_bytes(), &mut interner);
            let mut want = Vec::new();
            for &(k, kind) in &lines {
                match kind {
                    6 | 8 => _ = oracle.intern(&format!("k{k}")),
                    7 => want.push(oracle.intern(&format!("k{k}\""))),
                    9 => want.push(0),
                    _ => want.push(oracle.intern(&format!("k{k}"))),
                }
            }
            let ColumnValues::Text(ids) = &c.batch.columns[0].values else {
                panic!("device_id is a text column");
            };
            proptest::prop_assert_eq!(ids, &want);
            proptest::prop_assert_eq!(interner.len(), oracle.len());
            proptest::prop_assert_eq!(c.bad.len(), lines.iter().filter(|l| l.1 == 6 || l.1 == 8).count());
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
    fn a_byte_order_mark_before_the_header_is_skipped() {
        let header = "\u{feff}device_id,ts,bytes\n";
        let mut d = CsvDecoder::new(&schema(), header.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let mut interner = Interner::new();
        let c = d.decode(b"a,1000,5\n", &mut interner);
        assert!(c.bad.is_empty(), "{:?}", c.bad);
        assert_eq!(
            c.batch.columns[0].value(0, &interner),
            Value::Text("a".into())
        );
    }

    #[test]
    fn a_crlf_record_of_the_limit_is_read_like_an_lf_record_of_the_limit() {
        let header = b"device_id,ts,bytes\n";
        let mut d = CsvDecoder::new(&schema(), header)
            .unwrap_or_else(|e| panic!("{e}"))
            .with_max_line_bytes(20);
        let mut interner = Interner::new();
        // 20 bytes each before the ending, then 21.
        let c = d.decode(
            b"abcdefghijk,1000,500\r\nabcdefghijk,1000,500\nabcdefghijkl,1000,500\r\nabcdefghijkl,1000,500\n",
            &mut interner,
        );
        assert_eq!(c.batch.len, 2, "{:?}", c.bad);
        assert_eq!(c.bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![2, 3]);
    }

    #[test]
    fn a_quoted_field_spanning_lines_makes_both_lines_bad() {
        let header = b"device_id,ts,bytes\n";
        let mut d = CsvDecoder::new(&schema(), header).unwrap_or_else(|e| panic!("{e}"));
        let mut interner = Interner::new();
        let c = d.decode(b"\"a\nb\",1000,5\n\"c\"\"d\",2000,6\n", &mut interner);
        assert_eq!(c.batch.len, 1, "{:?}", c.bad);
        assert_eq!(
            c.batch.columns[0].value(0, &interner),
            Value::Text("c\"d".into())
        );
        assert_eq!(c.bad.iter().map(|b| b.line).collect::<Vec<_>>(), vec![0, 1]);
        assert!(
            c.bad[0].reason.contains("not closed on its line"),
            "{}",
            c.bad[0].reason
        );
        assert!(
            c.bad[1].reason.contains("without its pair"),
            "{}",
            c.bad[1].reason
        );
    }

    #[test]
    fn header_must_name_declared_columns() {
        let e = CsvDecoder::new(&schema(), b"device_id,bytes\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("`ts`"), "{e}");
        let e = CsvDecoder::new(&schema(), b"device_id,ts,bytes,Device_ID,device_id\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("`device_id` more than once (fields 1, 5)"),
            "{e}"
        );
        // Another field differing only in case does not make an exact name ambiguous, and
        // extra fields may repeat.
        let ok = CsvDecoder::new(&schema(), b"device_id,ts,BYTES,x,x,DEVICE_ID\n");
        assert!(ok.is_ok(), "{:?}", ok.err());
    }

    /// A record glued to the header by a lone `\r` would vanish with it: refused, as a
    /// header with old Mac line endings is; so is an empty file.
    #[test]
    fn a_header_holding_a_carriage_return_or_nothing_is_refused() {
        for header in [
            &b"device_id,ts,bytes\rd1,1767225601000,1\n"[..],
            b"device_id,ts,bytes\rd1,1767225601000,1\rd2,1767225601001,2\r",
        ] {
            assert!(matches!(
                CsvDecoder::new(&schema(), header),
                Err(CsvHeaderError::CarriageReturn)
            ));
        }
        assert!(matches!(
            CsvDecoder::new(&schema(), b""),
            Err(CsvHeaderError::Empty)
        ));
        for ending in [&b"\n"[..], b"\r\n", b""] {
            let header = [&b"device_id,ts,bytes"[..], ending].concat();
            let ok = CsvDecoder::new(&schema(), &header);
            assert!(ok.is_ok(), "{:?}", ok.err());
        }
    }
}
