//! JSON lines, decoded straight into typed columns.
//!
//! A hand-written scanner rather than serde: it looks up each key among the declared
//! columns (trying the column after the last match first, since producers write keys in
//! a fixed order), parses the value as the declared type, and skips unknown fields while
//! still validating them. A record is exactly one line: line breaks are not whitespace
//! here, so a broken line can never swallow the next one. The decoder agrees with
//! serde_json on what is valid JSON; the tests check that.

use std::borrow::Cow;

use super::field::{FieldError, millis_to_micros, timestamp_from_text};
use super::number::{NumberError, parse_f64, parse_i64, scan_json_number};
use super::{BadRecord, DecodedChunk, raw_line};
use crate::batch::{Batch, Column, ColumnValues, Interner};
use crate::query::SourceSchema;

const MAX_DEPTH: usize = 128;

#[derive(Debug)]
struct JsonField {
    name: Box<[u8]>,
    /// Whether the name can be matched against raw input bytes (no quote, backslash or
    /// control characters that JSON would escape).
    plain: bool,
}

/// Decodes JSON lines for one source schema.
#[derive(Debug)]
pub struct JsonDecoder {
    fields: Vec<JsonField>,
    event_time: usize,
    /// `seen[c] == stamp` when column `c` was set on the current line.
    seen: Vec<u64>,
    stamp: u64,
    types: Vec<crate::types::DataType>,
    scratch: Vec<u8>,
}

struct LineError {
    at: usize,
    reason: Cow<'static, str>,
}

type Scan<T> = Result<T, LineError>;

fn fail<T>(at: usize, reason: impl Into<Cow<'static, str>>) -> Scan<T> {
    Err(LineError { at, reason: reason.into() })
}

#[inline]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\r') {
        i += 1;
    }
    i
}

fn describe(b: &[u8], i: usize) -> &'static str {
    match b.get(i) {
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'\n') | None => "the end of the line",
        Some(_) => "an invalid token",
    }
}

fn literal(b: &[u8], i: usize, word: &'static [u8]) -> Scan<usize> {
    if b[i..].starts_with(word) {
        Ok(i + word.len())
    } else {
        fail(i, "invalid JSON literal")
    }
}

fn hex4(b: &[u8], i: usize) -> Scan<u32> {
    let mut v = 0u32;
    for k in 0..4 {
        let d = match b.get(i + k) {
            Some(c @ b'0'..=b'9') => c - b'0',
            Some(c @ b'a'..=b'f') => c - b'a' + 10,
            Some(c @ b'A'..=b'F') => c - b'A' + 10,
            _ => return fail(i + k, "invalid \\u escape"),
        };
        v = v * 16 + u32::from(d);
    }
    Ok(v)
}

/// Scans a string whose opening quote is at `i - 1`; returns the index after the closing
/// quote and the unescaped text (borrowed from the input when it has no escapes).
#[inline]
fn string<'a>(b: &'a [u8], i: usize, scratch: &'a mut Vec<u8>) -> Scan<(usize, &'a str)> {
    let start = i;
    let mut j = i;
    while j < b.len() {
        match b[j] {
            b'"' => {
                let text = std::str::from_utf8(&b[start..j]).map_err(|_| LineError { at: start, reason: "invalid UTF-8".into() })?;
                return Ok((j + 1, text));
            }
            b'\\' => return unescape(b, start, scratch),
            c if c < 0x20 => return fail(j, "control character in string"),
            _ => j += 1,
        }
    }
    fail(j, "unterminated string")
}

#[cold]
fn unescape<'a>(b: &'a [u8], start: usize, out: &'a mut Vec<u8>) -> Scan<(usize, &'a str)> {
    out.clear();
    let mut j = start;
    while j < b.len() {
        match b[j] {
            b'"' => {
                let text = std::str::from_utf8(out).map_err(|_| LineError { at: start, reason: "invalid UTF-8".into() })?;
                return Ok((j + 1, text));
            }
            b'\\' => {
                let c = match b.get(j + 1) {
                    Some(b'"') => '"',
                    Some(b'\\') => '\\',
                    Some(b'/') => '/',
                    Some(b'b') => '\u{8}',
                    Some(b'f') => '\u{c}',
                    Some(b'n') => '\n',
                    Some(b'r') => '\r',
                    Some(b't') => '\t',
                    Some(b'u') => {
                        let hi = hex4(b, j + 2)?;
                        let (code, used) = if (0xD800..0xDC00).contains(&hi) {
                            if b.get(j + 6) != Some(&b'\\') || b.get(j + 7) != Some(&b'u') {
                                return fail(j, "unpaired surrogate in \\u escape");
                            }
                            let lo = hex4(b, j + 8)?;
                            if !(0xDC00..0xE000).contains(&lo) {
                                return fail(j, "unpaired surrogate in \\u escape");
                            }
                            (0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00), 12)
                        } else {
                            (hi, 6)
                        };
                        let Some(c) = char::from_u32(code) else { return fail(j, "invalid \\u escape") };
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        j += used;
                        continue;
                    }
                    _ => return fail(j, "invalid escape in string"),
                };
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                j += 2;
            }
            c if c < 0x20 => return fail(j, "control character in string"),
            c => {
                out.push(c);
                j += 1;
            }
        }
    }
    fail(j, "unterminated string")
}

/// Skips one JSON value starting at `i`, validating it.
fn skip_value(b: &[u8], i: usize, depth: usize, scratch: &mut Vec<u8>) -> Scan<usize> {
    match b.get(i) {
        Some(b'"') => string(b, i + 1, scratch).map(|(end, _)| end),
        Some(b'-' | b'0'..=b'9') => scan_json_number(b, i).map(|(end, _)| end).or_else(|_| fail(i, "invalid number")),
        Some(b't') => literal(b, i, b"true"),
        Some(b'f') => literal(b, i, b"false"),
        Some(b'n') => literal(b, i, b"null"),
        Some(open @ (b'{' | b'[')) => {
            if depth >= MAX_DEPTH {
                return fail(i, "JSON nested too deeply");
            }
            let (object, close) = if *open == b'{' { (true, b'}') } else { (false, b']') };
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&close) {
                return Ok(j + 1);
            }
            loop {
                if object {
                    if b.get(j) != Some(&b'"') {
                        return fail(j, "expected a field name in double quotes");
                    }
                    j = skip_ws(b, string(b, j + 1, scratch)?.0);
                    if b.get(j) != Some(&b':') {
                        return fail(j, "expected ':'");
                    }
                    j = skip_ws(b, j + 1);
                }
                j = skip_ws(b, skip_value(b, j, depth + 1, scratch)?);
                match b.get(j) {
                    Some(b',') => j = skip_ws(b, j + 1),
                    Some(c) if *c == close => return Ok(j + 1),
                    _ => return fail(j, if object { "expected ',' or '}'" } else { "expected ',' or ']'" }),
                }
            }
        }
        _ => fail(i, format!("expected a JSON value, found {}", describe(b, i))),
    }
}

impl JsonDecoder {
    /// A decoder for the declared columns of `schema`.
    pub fn new(schema: &SourceSchema) -> Self {
        let fields = schema
            .columns
            .iter()
            .map(|c| JsonField {
                name: c.name.as_bytes().into(),
                plain: c.name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'),
            })
            .collect::<Vec<_>>();
        JsonDecoder {
            seen: vec![0; fields.len()],
            fields,
            event_time: schema.event_time,
            stamp: 0,
            types: schema.types(),
            scratch: Vec::new(),
        }
    }

    /// Decodes a chunk of whole lines.
    pub fn decode(&mut self, data: &[u8], interner: &mut Interner) -> DecodedChunk {
        let mut batch = Batch::new(&self.types, data.len() / 96 + 1);
        let mut bad = Vec::new();
        let mut max_ts: Option<i64> = None;
        let utf8 = std::str::from_utf8(data).is_ok();
        let mut pos = 0;
        let mut line = 0u64;
        while pos < data.len() {
            let start = pos;
            let i = skip_ws(data, pos);
            if i >= data.len() {
                line += 1;
                break;
            }
            if data[i] == b'\n' {
                pos = i + 1;
                line += 1;
                continue;
            }
            let parsed = if utf8 || line_is_utf8(data, start) {
                self.object(data, i, &mut batch, interner)
            } else {
                fail(i, "invalid UTF-8")
            };
            match parsed {
                Ok(end) => {
                    if let ColumnValues::Timestamp(ts) = &batch.columns[self.event_time].values
                        && let Some(&t) = ts.last() {
                            max_ts = Some(max_ts.map_or(t, |m| m.max(t)));
                        }
                    batch.len += 1;
                    pos = end + 1;
                }
                Err(e) => {
                    batch.rollback_row();
                    let end = memchr::memchr(b'\n', &data[e.at.min(data.len())..]).map_or(data.len(), |k| e.at + k);
                    let column = e.at - start + 1;
                    bad.push(BadRecord {
                        line,
                        reason: format!("column {column}: {}", e.reason),
                        raw: raw_line(&data[start..end]),
                    });
                    pos = end + 1;
                }
            }
            line += 1;
        }
        DecodedChunk { batch, bad, lines: line, max_event_time: max_ts, bytes: data.len() as u64 }
    }

    /// Parses the object at `i`, pushing one row; returns the index of the line break (or
    /// the end of the data) that ends it.
    #[inline]
    fn object(&mut self, b: &[u8], i: usize, batch: &mut Batch, interner: &mut Interner) -> Scan<usize> {
        if b[i] != b'{' {
            return fail(i, format!("expected a JSON object, found {}", describe(b, i)));
        }
        self.stamp += 1;
        let n = self.fields.len();
        let mut matched = 0;
        let mut next = 0;
        let mut j = skip_ws(b, i + 1);
        if b.get(j) == Some(&b'}') {
            j += 1;
        } else {
            loop {
                if b.get(j) != Some(&b'"') {
                    return fail(j, "expected a field name in double quotes");
                }
                j += 1;
                let field = match self.fields.get(next) {
                    Some(f) if f.plain && b[j..].starts_with(&f.name) && b.get(j + f.name.len()) == Some(&b'"') => {
                        j += f.name.len() + 1;
                        Some(next)
                    }
                    _ => {
                        let (end, key) = string(b, j, &mut self.scratch)?;
                        j = end;
                        self.fields.iter().position(|f| *f.name == *key.as_bytes())
                    }
                };
                j = skip_ws(b, j);
                if b.get(j) != Some(&b':') {
                    return fail(j, "expected ':' after the field name");
                }
                j = skip_ws(b, j + 1);
                match field {
                    Some(c) => {
                        if self.seen[c] == self.stamp {
                            let name = String::from_utf8_lossy(&self.fields[c].name).into_owned();
                            return fail(j, format!("duplicate field `{name}`"));
                        }
                        self.seen[c] = self.stamp;
                        matched += 1;
                        next = c + 1;
                        j = self.value(b, j, c, &mut batch.columns[c], interner)?;
                    }
                    None => j = skip_value(b, j, 1, &mut self.scratch)?,
                }
                j = skip_ws(b, j);
                match b.get(j) {
                    Some(b',') => j = skip_ws(b, j + 1),
                    Some(b'}') => {
                        j += 1;
                        break;
                    }
                    _ => return fail(j, format!("expected ',' or '}}', found {}", describe(b, j))),
                }
            }
        }
        j = skip_ws(b, j);
        if j < b.len() && b[j] != b'\n' {
            return fail(j, "unexpected text after the JSON object");
        }
        if matched != n {
            let missing = (0..n).find(|&c| self.seen[c] != self.stamp).unwrap_or(0);
            let name = String::from_utf8_lossy(&self.fields[missing].name).into_owned();
            return fail(j, format!("missing field `{name}`"));
        }
        Ok(j)
    }

    #[inline]
    fn value(&mut self, b: &[u8], i: usize, c: usize, column: &mut Column, interner: &mut Interner) -> Scan<usize> {
        let mistyped = |what: &str, b: &[u8]| -> LineError {
            let name = String::from_utf8_lossy(&self.fields[c].name);
            LineError { at: i, reason: format!("field `{name}`: expected {what}, found {}", describe(b, i)).into() }
        };
        let field_error = |e: FieldError| -> LineError {
            let name = String::from_utf8_lossy(&self.fields[c].name);
            LineError { at: i, reason: format!("field `{name}`: {e}").into() }
        };
        if b.get(i) == Some(&b'n') {
            let end = literal(b, i, b"null")?;
            if c == self.event_time {
                return Err(mistyped("an event time", b));
            }
            column.push_null();
            return Ok(end);
        }
        let end = match &mut column.values {
            ColumnValues::Text(v) => {
                if b.get(i) != Some(&b'"') {
                    return Err(mistyped("TEXT (a string)", b));
                }
                let (end, text) = string(b, i + 1, &mut self.scratch)?;
                v.push(interner.intern(text));
                end
            }
            ColumnValues::BigInt(v) => {
                let (end, integer) = scan_json_number(b, i).map_err(|_| mistyped("BIGINT (an integer)", b))?;
                if !integer {
                    return Err(field_error(FieldError::Mistyped("expected BIGINT (an integer), found a fraction")));
                }
                v.push(parse_i64(&b[i..end]).map_err(|_| field_error(FieldError::Range))?);
                end
            }
            ColumnValues::Double(v) => {
                let (end, _) = scan_json_number(b, i).map_err(|_| mistyped("DOUBLE (a number)", b))?;
                v.push(parse_f64(&b[i..end]).map_err(|e| match e {
                    NumberError::Range => field_error(FieldError::Range),
                    _ => mistyped("DOUBLE (a number)", b),
                })?);
                end
            }
            ColumnValues::Boolean(v) => match b.get(i) {
                Some(b't') => {
                    v.push(true);
                    literal(b, i, b"true")?
                }
                Some(b'f') => {
                    v.push(false);
                    literal(b, i, b"false")?
                }
                _ => return Err(mistyped("BOOLEAN (true or false)", b)),
            },
            ColumnValues::Timestamp(v) => match b.get(i) {
                Some(b'"') => {
                    let (end, text) = string(b, i + 1, &mut self.scratch)?;
                    v.push(timestamp_from_text(text.as_bytes()).map_err(field_error)?);
                    end
                }
                Some(b'-' | b'0'..=b'9') => {
                    let (end, integer) = scan_json_number(b, i).map_err(|_| mistyped("a timestamp", b))?;
                    if !integer {
                        return Err(mistyped("integer epoch milliseconds or an RFC 3339 string", b));
                    }
                    let ms = parse_i64(&b[i..end]).map_err(|_| field_error(FieldError::Range))?;
                    v.push(millis_to_micros(ms).map_err(field_error)?);
                    end
                }
                _ => return Err(mistyped("a timestamp (epoch milliseconds or RFC 3339 string)", b)),
            },
        };
        column.mark_pushed();
        Ok(end)
    }
}

fn line_is_utf8(data: &[u8], start: usize) -> bool {
    let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |k| start + k);
    std::str::from_utf8(&data[start..end]).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query;
    use crate::types::Value;
    use proptest::prelude::*;

    fn schema() -> SourceSchema {
        let plan = query::parse(
            "t",
            std::path::Path::new("t.sql"),
            "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, bytes BIGINT, lat DOUBLE, up BOOLEAN) WITH (event_time = 'ts');
             SELECT device_id, window_start, COUNT(*) FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start",
        );
        match plan {
            Ok(p) => p.source,
            Err(e) => panic!("{e}"),
        }
    }

    fn decode(text: &str) -> (DecodedChunk, Interner) {
        let mut interner = Interner::new();
        let chunk = JsonDecoder::new(&schema()).decode(text.as_bytes(), &mut interner);
        (chunk, interner)
    }

    #[test]
    fn decodes_typed_fields_in_any_order() {
        let (c, i) = decode(concat!(
            "{\"device_id\":\"a\",\"ts\":1000,\"bytes\":5,\"lat\":1.5,\"up\":true}\n",
            "{ \"up\" : false , \"lat\": 2, \"extra\": {\"x\": [1, \"}\"]}, \"bytes\": -7, \"ts\": \"1970-01-01T00:00:02Z\", \"device_id\": \"b\\u00e9\" }\r\n",
            "\n",
            "{\"device_id\":null,\"ts\":3000,\"bytes\":null,\"lat\":null,\"up\":null}",
        ));
        assert!(c.bad.is_empty(), "{:?}", c.bad);
        assert_eq!(c.batch.len, 3);
        assert_eq!(c.lines, 4);
        assert_eq!(c.max_event_time, Some(3_000_000));
        let row = |r: usize| -> Vec<Value> { c.batch.columns.iter().map(|col| col.value(r, &i)).collect() };
        assert_eq!(
            row(1),
            vec![Value::Text("bé".into()), Value::Timestamp(2_000_000), Value::BigInt(-7), Value::Double(2.0), Value::Boolean(false)]
        );
        assert_eq!(row(2), vec![Value::Null, Value::Timestamp(3_000_000), Value::Null, Value::Null, Value::Null]);
    }

    #[test]
    fn bad_lines_are_reported_and_rolled_back() {
        let (c, _) = decode(concat!(
            "{\"device_id\":\"a\",\"ts\":1000,\"bytes\":5,\"lat\":1.5}\n",
            "{\"device_id\":\"a\",\"ts\":1000,\"bytes\":5.5,\"lat\":1.5,\"up\":true}\n",
            "{\"device_id\":\"a\",\"ts\":null,\"bytes\":5,\"lat\":1.5,\"up\":true}\n",
            "not json\n",
            "{\"device_id\":\"a\",\"ts\":\"yesterday\",\"bytes\":5,\"lat\":1.5,\"up\":true}\n",
            "{\"device_id\":\"ok\",\"ts\":1000,\"bytes\":5,\"lat\":1.5,\"up\":true}\n",
            "{\"device_id\":\"a\",\"ts\":1000,\"bytes\":5,\"lat\":1.5,\"up\":true} trailing\n",
            "{\"device_id\":\"a\",\"device_id\":\"b\",\"ts\":1000,\"bytes\":5,\"lat\":1.5,\"up\":true}\n",
        ));
        assert_eq!(c.batch.len, 1);
        assert!(c.batch.columns.iter().all(|col| col.len() == 1));
        let lines: Vec<u64> = c.bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![0, 1, 2, 3, 4, 6, 7]);
        assert!(c.bad[0].reason.contains("missing field `up`"), "{}", c.bad[0].reason);
        assert!(c.bad[1].reason.contains("field `bytes`: expected BIGINT"), "{}", c.bad[1].reason);
        assert!(c.bad[2].reason.contains("field `ts`"), "{}", c.bad[2].reason);
        assert!(c.bad[3].reason.starts_with("column 1: expected a JSON object"), "{}", c.bad[3].reason);
        assert!(c.bad[4].reason.contains("RFC 3339"), "{}", c.bad[4].reason);
        assert!(c.bad[5].reason.contains("unexpected text"), "{}", c.bad[5].reason);
        assert!(c.bad[6].reason.contains("duplicate field"), "{}", c.bad[6].reason);
        assert_eq!(c.bad[3].raw, "not json");
    }

    #[test]
    fn invalid_utf8_only_spoils_its_line() {
        let mut data = b"{\"device_id\":\"a\",\"ts\":1,\"bytes\":5,\"lat\":1.5,\"up\":true}\n".to_vec();
        data.extend_from_slice(b"{\"device_id\":\"\xff\",\"ts\":1,\"bytes\":5,\"lat\":1.5,\"up\":true}\n");
        let mut interner = Interner::new();
        let c = JsonDecoder::new(&schema()).decode(&data, &mut interner);
        assert_eq!(c.batch.len, 1);
        assert_eq!(c.bad.len(), 1);
        assert!(c.bad[0].reason.contains("UTF-8"));
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|i| serde_json::json!(i)),
            (-1e6f64..1e6).prop_map(|f| serde_json::json!(f)),
            "[a-z\\\\\"\u{e9}\n]{0,6}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z_]{1,9}", inner, 0..3)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Whatever serde_json makes of a line, the decoder makes the same: the same
        /// values when the line fits the schema, a bad record when it does not.
        #[test]
        fn agrees_with_serde_json(
            fields in prop::collection::btree_map(
                prop_oneof![Just("device_id".to_string()), Just("ts".to_string()), Just("bytes".to_string()),
                            Just("lat".to_string()), Just("up".to_string()), "[a-z]{1,4}"],
                json_value(), 0..7),
            mangle in 0usize..60,
        ) {
            let object = serde_json::Value::Object(fields.into_iter().collect());
            let mut bytes = object.to_string().into_bytes();
            if mangle < bytes.len() && mangle % 3 == 0 {
                bytes.remove(mangle);
            }
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let mut interner = Interner::new();
            let c = JsonDecoder::new(&schema()).decode(&bytes, &mut interner);
            let duplicated = serde_json::from_slice::<Pairs>(&bytes).is_ok_and(|p| p.has_duplicate_declared());
            let expected = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .filter(|_| !duplicated)
                .and_then(|v| expected_row(&v));
            match expected {
                Some(row) => {
                    prop_assert!(c.bad.is_empty(), "{} -> {:?}", text, c.bad);
                    let got: Vec<Value> = c.batch.columns.iter().map(|col| col.value(0, &interner)).collect();
                    prop_assert_eq!(got, row);
                }
                None => {
                    prop_assert_eq!(c.batch.len, 0, "{}", text);
                    prop_assert_eq!(c.bad.len(), usize::from(!text.trim().is_empty()));
                }
            }
        }
    }

    /// The top-level fields of an object in input order, duplicates kept.
    struct Pairs(Vec<(String, serde::de::IgnoredAny)>);

    impl Pairs {
        fn has_duplicate_declared(&self) -> bool {
            let mut names: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            names.windows(2).any(|w| w[0] == w[1] && ["device_id", "ts", "bytes", "lat", "up"].contains(&w[0]))
        }
    }

    impl<'de> serde::Deserialize<'de> for Pairs {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Fields;
            impl<'de> serde::de::Visitor<'de> for Fields {
                type Value = Pairs;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Pairs, A::Error> {
                    let mut fields = Vec::new();
                    while let Some(entry) = map.next_entry()? {
                        fields.push(entry);
                    }
                    Ok(Pairs(fields))
                }
            }
            d.deserialize_map(Fields)
        }
    }

    /// The row a line should decode to, computed with serde_json.
    fn expected_row(v: &serde_json::Value) -> Option<Vec<Value>> {
        let o = v.as_object()?;
        let text = |v: &serde_json::Value| match v {
            serde_json::Value::Null => Some(Value::Null),
            serde_json::Value::String(s) => Some(Value::Text(s.clone())),
            _ => None,
        };
        let ts = match o.get("ts")? {
            serde_json::Value::Number(n) => Value::Timestamp(n.as_i64()?.checked_mul(1000).filter(|us| {
                (super::super::field::MIN_EVENT_TIME..=super::super::field::MAX_EVENT_TIME).contains(us)
            })?),
            serde_json::Value::String(s) => Value::Timestamp(timestamp_from_text(s.as_bytes()).ok()?),
            _ => return None,
        };
        let bytes = match o.get("bytes")? {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Number(n) if n.is_i64() => Value::BigInt(n.as_i64()?),
            _ => return None,
        };
        let lat = match o.get("lat")? {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Number(n) => Value::Double(n.as_f64()?),
            _ => return None,
        };
        let up = match o.get("up")? {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Boolean(*b),
            _ => return None,
        };
        Some(vec![text(o.get("device_id")?)?, ts, bytes, lat, up])
    }
}
