//! JSON lines, decoded straight into typed columns.
//!
//! A hand-written scanner rather than serde: it looks for declared fields only, parses
//! each value as its declared type and skips unknown fields while still validating them.
//! A record is exactly one line: line breaks are not whitespace here, so a broken line
//! can never swallow the next one. Well-formed compact lines take the learned-shape fast
//! path ([`shape`]); everything else takes the general parser ([`general`]). Both agree
//! with serde_json on what is valid JSON; the tests check that.

mod general;
mod scan;
mod shape;

use super::deferred::DeferredTexts;
use super::{
    BadRecord, DEFAULT_MAX_LINE_BYTES, DecodedChunk, over_limit_without_cr, raw_line,
    whole_line_too_long,
};
use crate::batch::{Batch, Interner};
use crate::query::SourceSchema;
use scan::skip_ws;
use shape::Shape;

#[derive(Debug)]
struct JsonField {
    name: Box<[u8]>,
}

/// A key as the general parser met it, for learning the shape.
#[derive(Debug)]
struct Key {
    name: Box<[u8]>,
    column: Option<usize>,
    /// Whether the key was written with escapes (then the shape cannot match it bytewise).
    escaped: bool,
}

/// Decodes JSON lines for one source schema.
#[derive(Debug)]
pub struct JsonDecoder {
    fields: Vec<JsonField>,
    pub(super) event_time: usize,
    pub(super) max_future_skew: i64,
    /// `seen[c] == stamp` when column `c` was set on the current line.
    seen: Vec<u64>,
    stamp: u64,
    types: Vec<crate::types::DataType>,
    scratch: Vec<u8>,
    /// The RFC 3339 date of the last event time read as a string.
    dates: crate::time::DateCache,
    keys: Vec<Key>,
    shape: Shape,
    /// Keys read by the fast path, interned a batch at a time once the interner is large.
    deferred: DeferredTexts,
    max_line: usize,
}

impl JsonDecoder {
    /// A decoder for the declared columns of `schema`.
    pub fn new(schema: &SourceSchema) -> Self {
        let fields: Vec<JsonField> = schema
            .columns
            .iter()
            .map(|c| JsonField {
                name: c.name.as_bytes().into(),
            })
            .collect();
        JsonDecoder {
            seen: vec![0; fields.len()],
            fields,
            event_time: schema.event_time,
            max_future_skew: schema.max_future_skew,
            stamp: 0,
            types: schema.types(),
            scratch: Vec::new(),
            dates: crate::time::DateCache::default(),
            keys: Vec::new(),
            shape: Shape::default(),
            deferred: DeferredTexts::default(),
            max_line: DEFAULT_MAX_LINE_BYTES,
        }
    }

    /// Sets the longest line decoded (default [`DEFAULT_MAX_LINE_BYTES`]); a longer one
    /// is a bad record.
    pub fn with_max_line_bytes(mut self, limit: usize) -> Self {
        self.max_line = limit;
        self
    }

    /// Decodes a chunk of whole lines.
    pub fn decode(&mut self, data: &[u8], interner: &mut Interner) -> DecodedChunk {
        let mut batch = Batch::new(&self.types, data.len() / 96 + 1);
        let mut bad = Vec::new();
        let mut pos = 0;
        let mut line = 0u64;
        let limit = self.max_line;
        // The length check runs once per line, on the end the parser found anyway.
        let too_long = |start: usize, end: usize| {
            end - start > limit && over_limit_without_cr(&data[start..end], limit)
        };
        while pos < data.len() {
            let start = pos;
            let i = skip_ws(data, pos);
            if i >= data.len() || data[i] == b'\n' {
                line += 1;
                if too_long(start, i) {
                    bad.push(whole_line_too_long(line - 1, limit, &data[start..i]));
                }
                pos = i + 1;
                continue;
            }
            line += 1;
            if self.shape.is_set() {
                if let Some(end) = self.fast_object(data, i, &mut batch, interner) {
                    self.shape.record(true);
                    pos = end + 1;
                    if too_long(start, end) {
                        // The line's key is interned before the line is undone, as it
                        // was when keys were interned on the spot.
                        self.deferred.resolve(data, &mut batch, interner);
                        batch.rollback_row();
                        bad.push(whole_line_too_long(line - 1, limit, &data[start..end]));
                    } else {
                        batch.len += 1;
                        if self.deferred.is_full() {
                            self.deferred.resolve(data, &mut batch, interner);
                        }
                    }
                    continue;
                }
                self.deferred.resolve(data, &mut batch, interner);
                batch.rollback_row();
                self.shape.record(false);
            }
            // The general path interns as it reads: whatever waits goes first, so that
            // ids follow the order of the lines.
            self.deferred.resolve(data, &mut batch, interner);
            match self.object(data, i, &mut batch, interner) {
                Ok(end) if !too_long(start, end) => {
                    batch.len += 1;
                    if self.shape.wants() {
                        self.shape.learn(&self.keys, &self.types);
                    }
                    pos = end + 1;
                }
                Ok(end) => {
                    batch.rollback_row();
                    bad.push(whole_line_too_long(line - 1, limit, &data[start..end]));
                    pos = end + 1;
                }
                Err(e) => {
                    batch.rollback_row();
                    let at = e.at.min(data.len());
                    let end = memchr::memchr(b'\n', &data[at..]).map_or(data.len(), |k| at + k);
                    bad.push(if too_long(start, end) {
                        whole_line_too_long(line - 1, limit, &data[start..end])
                    } else {
                        BadRecord {
                            line: line - 1,
                            reason: format!("column {}: {}", at - start + 1, e.reason),
                            raw: raw_line(&data[start..end]),
                        }
                    });
                    pos = end + 1;
                }
            }
        }
        self.deferred.resolve(data, &mut batch, interner);
        let max_event_time = batch.timestamps(self.event_time).iter().copied().max();
        DecodedChunk {
            batch,
            bad,
            lines: line,
            max_event_time,
            bytes: data.len() as u64,
        }
    }
}

/// Decodes one line at a time only to tell whether it is a reading of the schema.
///
/// Live connectors reshape what they receive (a device id filled in, counters made
/// deltas) before the readings are logged and decoded; checked as they are shaped, a
/// record the table cannot take is dead-lettered as it was received, naming where it
/// came from, rather than as the reshaped line a worker would see.
#[derive(Debug)]
pub struct LineCheck {
    decoder: JsonDecoder,
    batch: Batch,
    interner: Interner,
}

/// Texts the check's interner holds before it starts afresh: a publisher inventing ids
/// must not grow it without bound.
const CHECK_INTERNER_TEXTS: usize = 1 << 16;

impl LineCheck {
    /// A check against the declared columns of `schema`.
    pub fn new(schema: &SourceSchema) -> Self {
        let decoder = JsonDecoder::new(schema);
        LineCheck {
            batch: Batch::new(&decoder.types, 1),
            decoder,
            interner: Interner::new(),
        }
    }

    /// Why `line` (one JSON object, without its line break) is not a reading of the
    /// schema, if it is not: the general parser's reason, without a column (the line is
    /// not the text received); or, for a reading that arrived when the node's clock read
    /// `clock` (microseconds), that it is stamped more than `max_ahead` after it, as
    /// [`crate::decode::clock::quarantine_ahead_of_clock`] says.
    pub fn check(&mut self, line: &[u8], clock: i64, max_ahead: i64) -> Result<(), String> {
        if line.trim_ascii().is_empty() {
            return Err("expected a JSON object, found an empty line".into());
        }
        if self.interner.len() > CHECK_INTERNER_TEXTS {
            self.interner = Interner::new();
        }
        let read = self
            .decoder
            .object(line, 0, &mut self.batch, &mut self.interner);
        // The row is pushed but not counted: its event time is the first value.
        let stamped = match &self.batch.columns[self.decoder.event_time].values {
            crate::batch::ColumnValues::Timestamp(ts) => ts.first().copied(),
            _ => None,
        };
        self.batch.rollback_row();
        read.map_err(|e| e.reason.into_owned())?;
        match stamped {
            Some(t) if t > clock.saturating_add(max_ahead) => {
                Err(crate::decode::clock::ahead_of_clock(t, clock, max_ahead))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::ColumnValues;
    use crate::decode::deferred::large_interner;
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
        let row = |r: usize| -> Vec<Value> {
            c.batch.columns.iter().map(|col| col.value(r, &i)).collect()
        };
        assert_eq!(
            row(1),
            vec![
                Value::Text("bé".into()),
                Value::Timestamp(2_000_000),
                Value::BigInt(-7),
                Value::Double(2.0),
                Value::Boolean(false)
            ]
        );
        assert_eq!(
            row(2),
            vec![
                Value::Null,
                Value::Timestamp(3_000_000),
                Value::Null,
                Value::Null,
                Value::Null
            ]
        );
    }

    /// Live readings are judged by the node's clock: a device reset to 1970 next to
    /// readings stamped now does not make those "too far ahead" (as the chunk rule of
    /// files would, the 1970 readings being the majority); beyond the clock's allowance
    /// a reading is quarantined.
    #[test]
    fn live_readings_are_judged_by_the_node_clock_not_by_their_neighbours() {
        let now = 1_796_000_000_000i64;
        let line = |ts: i64| {
            format!("{{\"device_id\":\"a\",\"ts\":{ts},\"bytes\":1,\"lat\":1.0,\"up\":true}}\n")
        };
        let mut text: String = (0..6).map(|_| line(0)).collect();
        text.push_str(&line(now));
        text.push_str(&line(now + 3_600_000));
        let mut decoder = crate::decode::Decoder::Json(JsonDecoder::new(&schema()));
        let chunk = decoder.decode_live(
            text.as_bytes(),
            &mut Interner::new(),
            now * 1000,
            300_000_000,
        );
        assert_eq!(chunk.batch.len, 7, "{:?}", chunk.bad);
        assert_eq!(chunk.bad.len(), 1);
        assert_eq!(chunk.bad[0].line, 7);
        assert!(
            chunk.bad[0]
                .reason
                .starts_with(crate::decode::clock::AHEAD_OF_CLOCK),
            "{}",
            chunk.bad[0].reason
        );
        assert_eq!(chunk.max_event_time, Some(now * 1000));
    }

    #[test]
    fn a_byte_order_mark_before_a_line_is_skipped() {
        let line = "{\"device_id\":\"a\",\"ts\":1000,\"bytes\":5,\"lat\":1.5,\"up\":true}";
        // The start of a file, then the start of a second file joined after it.
        let (c, i) = decode(&format!(
            "\u{feff}{line}\n{line}\n\u{feff} {line}\n\u{feff}\n"
        ));
        assert_eq!(c.batch.len, 3, "{:?}", c.bad);
        assert_eq!(c.batch.columns[0].value(2, &i), Value::Text("a".into()));
        // A mark with no object after it is still a bad line.
        assert_eq!(c.bad.len(), 1);
        assert_eq!(c.bad[0].line, 3);
        assert!(
            c.bad[0]
                .reason
                .starts_with("column 1: expected a JSON object"),
            "{}",
            c.bad[0].reason
        );
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
        assert!(
            c.bad[0].reason.contains("missing field `up`"),
            "{}",
            c.bad[0].reason
        );
        assert!(
            c.bad[1].reason.contains("field `bytes`: expected BIGINT"),
            "{}",
            c.bad[1].reason
        );
        assert!(
            c.bad[2].reason.contains("field `ts`"),
            "{}",
            c.bad[2].reason
        );
        assert!(
            c.bad[3]
                .reason
                .starts_with("column 1: expected a JSON object"),
            "{}",
            c.bad[3].reason
        );
        assert!(c.bad[4].reason.contains("RFC 3339"), "{}", c.bad[4].reason);
        assert!(
            c.bad[5].reason.contains("unexpected text"),
            "{}",
            c.bad[5].reason
        );
        assert!(
            c.bad[6].reason.contains("duplicate field"),
            "{}",
            c.bad[6].reason
        );
        assert_eq!(c.bad[3].raw, "not json");
    }

    #[test]
    fn invalid_utf8_only_spoils_its_line() {
        let mut data =
            b"{\"device_id\":\"a\",\"ts\":1,\"bytes\":5,\"lat\":1.5,\"up\":true}\n".to_vec();
        data.extend_from_slice(
            b"{\"device_id\":\"\xff\",\"ts\":1,\"bytes\":5,\"lat\":1.5,\"up\":true}\n",
        );
        let mut interner = Interner::new();
        let c = JsonDecoder::new(&schema()).decode(&data, &mut interner);
        assert_eq!(c.batch.len, 1);
        assert_eq!(c.bad.len(), 1);
        assert!(c.bad[0].reason.contains("UTF-8"), "{}", c.bad[0].reason);
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
            let duplicated = serde_json::from_slice::<Pairs>(&bytes).is_ok_and(|p| p.has_duplicate_declared());
            let expected = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .filter(|_| !duplicated)
                .and_then(|v| expected_row(&v));
            // Alone, the line takes the general parser; after a line with the same keys in
            // the same order, it takes the learned-shape fast path. Both must agree.
            let mut teacher = serde_json::Map::new();
            for key in object.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
                teacher.insert(key, serde_json::json!(0));
            }
            for (k, v) in [("device_id", serde_json::json!("x")), ("ts", serde_json::json!(1)), ("bytes", serde_json::json!(1)),
                           ("lat", serde_json::json!(1.5)), ("up", serde_json::json!(true))] {
                teacher.insert(k.to_owned(), v);
            }
            let mut two_lines = serde_json::Value::Object(teacher).to_string().into_bytes();
            two_lines.push(b'\n');
            two_lines.extend_from_slice(&bytes);
            for (data, row) in [(&bytes, 0usize), (&two_lines, 1)] {
                let text = String::from_utf8_lossy(data).into_owned();
                let mut interner = Interner::new();
                let c = JsonDecoder::new(&schema()).decode(data, &mut interner);
                match &expected {
                    Some(want) => {
                        prop_assert!(c.bad.is_empty(), "{} -> {:?}", text, c.bad);
                        prop_assert_eq!(c.batch.len, row + 1);
                        let got: Vec<Value> = c.batch.columns.iter().map(|col| col.value(row, &interner)).collect();
                        prop_assert_eq!(&got, want, "{}", text);
                    }
                    None => {
                        prop_assert_eq!(c.batch.len, row, "{}", text);
                        prop_assert_eq!(c.bad.len(), usize::from(!String::from_utf8_lossy(&bytes).trim().is_empty()));
                    }
                }
            }
        }
    }

    /// One line of [`keys_interned_in_batches_get_the_ids_of_one_line_at_a_time`]: a
    /// device (from a pool that overlaps the interner's keys) and how the line is written.
    fn batched_line(device: usize, kind: usize) -> String {
        let id = format!("k{device}");
        match kind {
            // The fast path, whose keys wait.
            0..=5 => format!(r#"{{"device_id":"{id}","ts":1,"bytes":2,"lat":1.5,"up":true}}"#),
            // An escaped key: copied out of the input, so the line takes the general path.
            6 => format!(
                r#"{{"device_id":"\u006b{}","ts":1,"bytes":2,"lat":1.5,"up":true}}"#,
                &id[1..]
            ),
            // A key that waits, then a bad field undoes the line.
            7 => format!(r#"{{"device_id":"{id}","ts":1,"bytes":"two","lat":1.5,"up":true}}"#),
            // Spaces: the general path, which interns at once.
            8 => {
                format!(r#"{{ "device_id": "{id}", "ts": 1, "bytes": 2, "lat": 1.5, "up": true }}"#)
            }
            _ => r#"{"device_id":null,"ts":1,"bytes":2,"lat":1.5,"up":true}"#.to_owned(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// With an interner large enough that keys wait and are interned a batch at a time,
        /// every key still gets the id it gets when each line's key is interned as the line
        /// is read, through fast lines, escaped keys, undone lines and general-path lines.
        #[test]
        fn keys_interned_in_batches_get_the_ids_of_one_line_at_a_time(
            lines in prop::collection::vec((0usize..50_200, 0usize..10), 0..700),
        ) {
            let (mut interner, mut oracle) = (large_interner(), large_interner());
            prop_assert!(interner.is_large());
            let text: String = lines.iter().map(|&(d, kind)| batched_line(d, kind) + "\n").collect();
            let c = JsonDecoder::new(&schema()).decode(text.as_bytes(), &mut interner);
            let mut want = Vec::new();
            for &(d, kind) in &lines {
                match kind {
                    // The general parser has interned the key by the time it meets the
                    // bad field (a key that is never used again costs its bytes).
                    7 => _ = oracle.intern(&format!("k{d}")),
                    9 => want.push(0),
                    _ => want.push(oracle.intern(&format!("k{d}"))),
                }
            }
            let ColumnValues::Text(ids) = &c.batch.columns[0].values else {
                panic!("device_id is a text column");
            };
            prop_assert_eq!(ids, &want);
            prop_assert_eq!(interner.len(), oracle.len());
            prop_assert_eq!(c.bad.len(), lines.iter().filter(|l| l.1 == 7).count());
        }
    }

    /// The top-level fields of an object in input order, duplicates kept.
    struct Pairs(Vec<(String, serde::de::IgnoredAny)>);

    impl Pairs {
        fn has_duplicate_declared(&self) -> bool {
            let mut names: Vec<&str> = self.0.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            names
                .windows(2)
                .any(|w| w[0] == w[1] && ["device_id", "ts", "bytes", "lat", "up"].contains(&w[0]))
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
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Pairs, A::Error> {
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
            serde_json::Value::Number(n) => {
                Value::Timestamp(n.as_i64()?.checked_mul(1000).filter(|us| {
                    (crate::decode::field::MIN_EVENT_TIME..=crate::decode::field::MAX_EVENT_TIME)
                        .contains(us)
                })?)
            }
            serde_json::Value::String(s) => {
                Value::Timestamp(crate::decode::field::timestamp_from_text(s.as_bytes()).ok()?)
            }
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
