//! What live connectors receive (a JSON object, a JSON array, or JSON lines) turned into
//! JSON lines in the table's schema, with the gaps filled the way the connector says:
//! the device id from the URL or topic, the event time from the node's clock, and
//! cumulative counters turned into deltas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::baselines::{self, Baseline, Baselines};
use super::live::{Arrival, Reject};
use crate::decode::{LONG_LINE_RAW_BYTES, LineCheck};
use crate::query::SourceSchema;
use crate::time::MICROS_PER_MILLI;

/// A record as received, before it is shaped.
pub type Record = Map<String, Value>;

/// One record of a body: the object, where it was in the body (`line 2`, `element 3 of
/// the array`) and its text as received (cut to a KiB), for its dead letter.
#[derive(Debug)]
pub struct Received {
    /// The object.
    pub record: Record,
    /// Where it was in the body.
    pub place: String,
    /// Its text as received.
    pub raw: String,
}

/// A body's parts in the order received: records, and what is not one.
pub type Parts = Vec<Result<Received, Reject>>;

/// Splits a body into records: one JSON object, a JSON array of objects, or JSON lines.
/// Whatever is not an object becomes a reject naming `origin` and the line or element.
pub fn split_body(body: &[u8], origin: &str) -> Parts {
    let trimmed = body.trim_ascii();
    let mut parts = Vec::new();
    if trimmed.is_empty() {
        parts.push(Err(Reject {
            reason: format!("{origin}: empty body, expected a JSON object, array or JSON lines"),
            raw: cut(body),
        }));
        return parts;
    }
    if trimmed.starts_with(b"[") {
        match serde_json::from_slice::<Vec<&RawValue>>(trimmed) {
            Ok(elements) => {
                for (i, element) in elements.into_iter().enumerate() {
                    let place = format!("element {} of the array", i + 1);
                    let raw = cut(element.get().as_bytes());
                    parts.push(match serde_json::from_str::<Value>(element.get()) {
                        Ok(Value::Object(record)) => Ok(Received { record, place, raw }),
                        _ => Err(Reject {
                            reason: format!("{origin}: {place} is not a JSON object"),
                            raw,
                        }),
                    });
                }
            }
            Err(e) => parts.push(Err(Reject {
                reason: format!("{origin}: broken JSON array: {e}"),
                raw: cut(trimmed),
            })),
        }
        return parts;
    }
    // One object written over several lines (pretty-printed) is one record; JSON lines
    // fail this at the second object, having parsed only the first.
    if trimmed.starts_with(b"{")
        && memchr::memchr(b'\n', trimmed).is_some()
        && let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(trimmed)
    {
        parts.push(Ok(Received {
            record,
            place: "the body".into(),
            raw: cut(trimmed),
        }));
        return parts;
    }
    for (i, line) in trimmed.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let place = format!("line {}", i + 1);
        parts.push(match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(record)) => Ok(Received {
                record,
                place,
                raw: cut(line),
            }),
            Ok(_) => Err(Reject {
                reason: format!("{origin}: {place}: expected a JSON object"),
                raw: cut(line),
            }),
            Err(e) => Err(Reject {
                reason: format!("{origin}: {place}: broken JSON: {e}"),
                raw: cut(line),
            }),
        });
    }
    parts
}

/// The first KiB of what was received, for a dead letter.
pub fn cut(raw: &[u8]) -> String {
    let end = raw.len().min(LONG_LINE_RAW_BYTES);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

/// How a connector fills and shapes records.
#[derive(Clone, Debug)]
pub struct Shaper {
    /// Each shaped line decoded as the table's workers will, shared by the clones.
    check: Arc<Mutex<LineCheck>>,
    /// `max_ahead_of_clock`, microseconds.
    max_ahead: i64,
    /// The `device_id` column's name, if the table has one.
    device_column: Option<String>,
    /// The event-time column's name.
    event_time: String,
    /// Fill the event time with the arrival time.
    poll_time: bool,
    /// Counter columns' names.
    counters: Vec<String>,
    /// 32 or 64.
    counter_bits: u32,
    /// The `interval_ms` column's name, filled with counters.
    interval_column: Option<String>,
}

impl Shaper {
    /// Passes records through, filling only the device id.
    pub fn new(schema: &SourceSchema) -> Self {
        Shaper {
            check: Arc::new(Mutex::new(LineCheck::new(schema))),
            max_ahead: schema.connector.max_ahead_of_clock,
            device_column: schema
                .find("device_id")
                .map(|i| schema.columns[i].name.clone()),
            event_time: schema.columns[schema.event_time].name.clone(),
            poll_time: false,
            counters: Vec::new(),
            counter_bits: 64,
            interval_column: None,
        }
    }

    /// Fills the event time with the arrival time, for devices without a clock.
    pub fn with_poll_time(mut self, on: bool) -> Self {
        self.poll_time = on;
        self
    }

    /// Turns the columns `counters` (indexes into the schema) into deltas of `bits`-wide
    /// counters, and fills `interval` with the time between answers.
    pub fn with_counters(
        mut self,
        schema: &SourceSchema,
        counters: &[usize],
        bits: u32,
        interval: Option<usize>,
    ) -> Self {
        self.counters = counters
            .iter()
            .map(|&i| schema.columns[i].name.clone())
            .collect();
        self.counter_bits = bits;
        self.interval_column = interval.map(|i| schema.columns[i].name.clone());
        self
    }

    /// Whether counters are turned into deltas.
    pub fn has_counters(&self) -> bool {
        !self.counters.is_empty()
    }

    /// Shapes the `parts` of a body received from `device` (the URL's `{id}` or a topic
    /// level) at `at_ms`, appending one JSON line per reading to `out` and, in the order
    /// received, a reject for each part that is not one: what `split_body` refused, a
    /// counter that is not a count, a field the table cannot take (as received, not as
    /// shaped). With counters, a device's first answer yields no reading.
    pub fn shape(
        &self,
        parts: Parts,
        device: Option<&str>,
        at_ms: i64,
        counters: &Counters,
        out: &mut Arrival,
        origin: &str,
    ) {
        let mut check = self.check.lock().unwrap_or_else(|p| p.into_inner());
        let mut baselines = Baselines::new();
        for part in parts {
            let Received {
                mut record,
                place,
                raw,
            } = match part {
                Ok(received) => received,
                Err(reject) => {
                    out.rejects.push(reject);
                    continue;
                }
            };
            if let (Some(column), Some(device)) = (&self.device_column, device)
                && !record.contains_key(column)
            {
                record.insert(column.clone(), Value::String(device.to_owned()));
            }
            if self.poll_time {
                record.insert(self.event_time.clone(), Value::from(at_ms));
            }
            if self.has_counters() {
                let key = self
                    .device_column
                    .as_ref()
                    .and_then(|c| record.get(c))
                    .map(|v| match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .or_else(|| device.map(str::to_owned))
                    .unwrap_or_default();
                match counters.delta(self, &key, &mut record, at_ms, &mut baselines) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(reason) => {
                        out.rejects.push(Reject {
                            reason: format!("{origin}: {place}: {reason}"),
                            raw,
                        });
                        continue;
                    }
                }
            }
            let start = out.lines.len();
            if serde_json::to_writer(&mut out.lines, &record).is_err() {
                out.lines.truncate(start);
                continue;
            }
            match check.check(
                &out.lines[start..],
                at_ms * MICROS_PER_MILLI,
                self.max_ahead,
            ) {
                Ok(()) => out.lines.push(b'\n'),
                Err(reason) => {
                    out.lines.truncate(start);
                    out.rejects.push(Reject {
                        reason: format!("{origin}: {place}: {reason}"),
                        raw,
                    });
                }
            }
        }
        if !baselines.is_empty() {
            out.counters = Some(baselines::line(&baselines));
        }
    }
}

/// A device's counters at its previous answer.
#[derive(Clone, Debug)]
struct Previous {
    values: Vec<u64>,
    at_ms: i64,
}

/// What counters did: resets seen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterStats {
    /// Counters that went down (reboot) and were taken from zero.
    pub resets: u64,
    /// 32-bit counters that wrapped.
    pub wraps: u64,
}

/// Every device's previous counter values, for deltas.
#[derive(Debug, Default)]
pub struct Counters {
    previous: Mutex<HashMap<String, Previous>>,
    stats: Mutex<CounterStats>,
}

impl Counters {
    /// Counters that take each device's next delta from `baselines` (what the table's
    /// log kept), where they hold every counter column of `shaper`.
    pub fn resumed(shaper: &Shaper, baselines: &Baselines) -> Self {
        let previous = baselines
            .iter()
            .filter_map(|(device, baseline)| {
                let values = shaper
                    .counters
                    .iter()
                    .map(|name| baseline.values.get(name).copied())
                    .collect::<Option<Vec<u64>>>()?;
                Some((
                    device.clone(),
                    Previous {
                        values,
                        at_ms: baseline.at_ms,
                    },
                ))
            })
            .collect();
        Counters {
            previous: Mutex::new(previous),
            stats: Mutex::default(),
        }
    }

    /// Resets and wraps so far.
    pub fn stats(&self) -> CounterStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Replaces the counters of `record` by their deltas since `device`'s previous
    /// answer; `Ok(false)` for the device's first answer, which yields no reading. The
    /// device's new baseline goes into `baselines`, to be logged with the arrival.
    fn delta(
        &self,
        shaper: &Shaper,
        device: &str,
        record: &mut Record,
        at_ms: i64,
        baselines: &mut Baselines,
    ) -> Result<bool, String> {
        let mut values = Vec::with_capacity(shaper.counters.len());
        for name in &shaper.counters {
            let value = match record.get(name) {
                Some(Value::Number(n)) => n.as_u64(),
                Some(Value::String(s)) => s.trim().parse().ok(),
                _ => None,
            };
            let Some(value) = value else {
                return Err(format!(
                    "counter `{name}` is missing or not a whole number of at least 0"
                ));
            };
            values.push(value);
        }
        baselines.insert(
            device.to_owned(),
            Baseline {
                values: shaper
                    .counters
                    .iter()
                    .cloned()
                    .zip(values.iter().copied())
                    .collect(),
                at_ms,
            },
        );
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let before = previous.insert(
            device.to_owned(),
            Previous {
                values: values.clone(),
                at_ms,
            },
        );
        drop(previous);
        let Some(before) = before else {
            return Ok(false);
        };
        let mut stats = CounterStats::default();
        for ((name, now), then) in shaper.counters.iter().zip(&values).zip(&before.values) {
            let delta = counter_delta(*then, *now, shaper.counter_bits, &mut stats);
            record.insert(
                name.clone(),
                Value::from(i64::try_from(delta).unwrap_or(i64::MAX)),
            );
        }
        if let Some(column) = &shaper.interval_column {
            record.insert(column.clone(), Value::from((at_ms - before.at_ms).max(0)));
        }
        if stats != CounterStats::default()
            && let Ok(mut total) = self.stats.lock()
        {
            total.resets += stats.resets;
            total.wraps += stats.wraps;
        }
        Ok(true)
    }
}

/// The growth of a counter from `then` to `now`: a 32-bit counter that went down from
/// near the top wrapped (the delta is taken modulo 2^32); any other drop is a reset
/// (reboot), and the new value is the delta.
pub fn counter_delta(then: u64, now: u64, bits: u32, stats: &mut CounterStats) -> u64 {
    if now >= then {
        return now - then;
    }
    if bits == 32 && then <= u64::from(u32::MAX) && then >= 3 << 30 && now < 1 << 30 {
        stats.wraps += 1;
        return (now + (1u64 << 32)) - then;
    }
    stats.resets += 1;
    now
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_grow_reset_and_wrap() {
        let mut stats = CounterStats::default();
        assert_eq!(counter_delta(100, 250, 64, &mut stats), 150);
        assert_eq!(counter_delta(5_000, 40, 64, &mut stats), 40);
        assert_eq!(stats.resets, 1);
        let near_top = u64::from(u32::MAX) - 99;
        assert_eq!(counter_delta(near_top, 50, 32, &mut stats), 150);
        assert_eq!(stats.wraps, 1);
        // A 32-bit counter that drops from low down is a reboot, not a wrap.
        assert_eq!(counter_delta(70_000, 10, 32, &mut stats), 10);
        assert_eq!(stats.resets, 2);
    }

    #[test]
    fn bodies_of_every_shape_split_into_records() {
        let counts = |parts: &Parts| {
            let records = parts.iter().filter(|p| p.is_ok()).count();
            (records, parts.len() - records)
        };
        assert_eq!(counts(&split_body(br#"{"a":1}"#, "u")), (1, 0));
        let parts = split_body(br#"[{"a":1}, {"a" : 2},3]"#, "u");
        assert_eq!(counts(&parts), (2, 1));
        assert!(
            matches!(&parts[1], Ok(r) if r.raw == r#"{"a" : 2}"# && r.place == "element 2 of the array")
        );
        let parts = split_body(b"{\"a\":1}\n\n{\"a\":\n{\"a\":3}\n", "u");
        assert_eq!(counts(&parts), (2, 1));
        match &parts[1] {
            Err(e) => assert!(e.reason.starts_with("u: line 3: broken JSON"), "{e:?}"),
            Ok(r) => panic!("line 3 is broken: {r:?}"),
        }
        assert_eq!(counts(&split_body(b"<html>oops</html>", "u")), (0, 1));
        // Pretty-printed, an object is still one record.
        let parts = split_body(b"{\n  \"a\": 1,\n  \"b\": [1,\n 2]\n}\n", "u");
        assert_eq!(counts(&parts), (1, 0));
        assert!(
            matches!(&parts[0], Ok(r) if r.place == "the body" && r.raw.starts_with("{\n  \"a\""))
        );
        match &split_body(b"  \n ", "u")[..] {
            [Err(e)] => assert_eq!(e.raw, "  \n "),
            other => panic!("{other:?}"),
        }
    }

    fn shaper() -> Result<(Shaper, SourceSchema), crate::query::QueryError> {
        let schema = crate::query::parse(
            "t",
            std::path::Path::new("t.sql"),
            "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, bytes BIGINT) WITH (event_time = 'ts');
             SELECT COUNT(*) FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
        )?
        .source;
        Ok((Shaper::new(&schema), schema))
    }

    #[test]
    fn a_record_the_table_cannot_take_is_rejected_as_received_in_its_place()
    -> Result<(), crate::query::QueryError> {
        let (shaper, _) = shaper()?;
        let body = b"{\"ts\": 1000, \"bytes\": 5}\nnot json\n{\"ts\": 2000, \"bytes\": \"many\"}\n{\"ts\": 3000, \"bytes\": 7}\n{\"ts\": 86400000, \"bytes\": 9}";
        let mut out = Arrival::default();
        shaper.shape(
            split_body(body, "mqtt topic t/dev-1"),
            Some("dev-1"),
            0,
            &Counters::default(),
            &mut out,
            "mqtt topic t/dev-1",
        );
        let lines: Vec<&str> = std::str::from_utf8(&out.lines)
            .unwrap_or_default()
            .lines()
            .collect();
        assert_eq!(
            lines,
            [
                r#"{"bytes":5,"device_id":"dev-1","ts":1000}"#,
                r#"{"bytes":7,"device_id":"dev-1","ts":3000}"#
            ]
        );
        let rejects: Vec<(&str, &str)> = out
            .rejects
            .iter()
            .map(|r| (r.reason.as_str(), r.raw.as_str()))
            .collect();
        assert_eq!(rejects.len(), 3, "{rejects:?}");
        assert!(
            rejects[0]
                .0
                .starts_with("mqtt topic t/dev-1: line 2: broken JSON")
        );
        assert_eq!(
            rejects[1],
            (
                "mqtt topic t/dev-1: line 3: field `bytes`: expected BIGINT (an integer), found a string",
                r#"{"ts": 2000, "bytes": "many"}"#
            )
        );
        // Stamped a day after the node's clock (0 here): refused as received, in its
        // place, as the workers would refuse it.
        assert!(
            rejects[2]
                .0
                .starts_with("mqtt topic t/dev-1: line 5: timestamp ahead of the node's clock"),
            "{rejects:?}"
        );
        assert_eq!(rejects[2].1, r#"{"ts": 86400000, "bytes": 9}"#);
        Ok(())
    }
}
