//! The dataflow's answer equals a plain sequential pass over the same readings, at 1, 2
//! and 4 workers, for tumbling and hopping windows, with out-of-order and late readings,
//! from the generator, a JSON lines file and a CSV file.

use std::collections::BTreeMap;

use edgeflow::decode::Format;
use edgeflow::source::Input;
use edgeflow::source::generator::{
    GeneratorConfig, Reading, TimestampFormat, device_name, write_readings,
};
use edgeflow::types::Value;
use proptest::prelude::*;

use super::support::{assert_rows_eq, plan, read_rows, run, sort_rows};

/// A windowed aggregation the oracle computes by hand.
#[derive(Clone, Debug)]
pub struct Spec {
    pub size_ms: i64,
    pub slide_ms: i64,
    pub ooo_ms: i64,
    pub filtered: bool,
}

impl Spec {
    /// One-minute tumbling windows, 5 s of allowed out-of-orderness, no filter.
    pub fn minute() -> Spec {
        Spec {
            size_ms: 60_000,
            slide_ms: 60_000,
            ooo_ms: 5_000,
            filtered: false,
        }
    }

    pub fn sql(&self) -> String {
        let (create, aggregate) = self.parts();
        format!("{create}; {aggregate}")
    }

    /// The window Top-N over the aggregate: per window, the `n` rows with the most
    /// readings (ties by device), with their rank.
    pub fn top_n_sql(&self, n: usize) -> String {
        let (create, aggregate) = self.parts();
        format!(
            "{create};
             SELECT * FROM (
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY readings DESC) AS rank
                 FROM ({aggregate})
             ) WHERE rank <= {n}"
        )
    }

    /// The `CREATE TABLE` and the windowed aggregate.
    fn parts(&self) -> (String, String) {
        let window = if self.slide_ms == self.size_ms {
            format!(
                "TUMBLE(readings, ts, INTERVAL '{}' MILLISECOND)",
                self.size_ms
            )
        } else {
            format!(
                "HOP(readings, ts, INTERVAL '{}' MILLISECOND, INTERVAL '{}' MILLISECOND)",
                self.slide_ms, self.size_ms
            )
        };
        let filter = if self.filtered {
            "WHERE latency_ms >= 20.0 OR bytes_in > 100000"
        } else {
            ""
        };
        let create = format!(
            "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, bytes_out BIGINT, packets BIGINT, latency_ms DOUBLE)
               WITH (event_time = 'ts', max_out_of_orderness = '{}ms')",
            self.ooo_ms
        );
        let aggregate = format!(
            "SELECT device_id, window_start, window_end, COUNT(*) AS readings, SUM(bytes_in) AS bytes_in,
                    SUM(bytes_out) AS bytes_out, MAX(bytes_in) AS max_bytes_in, AVG(latency_ms) AS avg_latency_ms,
                    STDDEV(latency_ms) AS sd_latency_ms, FIRST_VALUE(bytes_in) AS first_bytes_in,
                    LAST_VALUE(bytes_out) AS last_bytes_out
             FROM {window} {filter}
             GROUP BY device_id, window_start, window_end"
        );
        (create, aggregate)
    }

    fn keep(&self, r: &Reading) -> bool {
        !self.filtered || r.latency_ms() >= 20.0 || r.bytes_in > 100_000
    }

    /// Window starts (ms) that hold `ts`, computed independently of the engine.
    fn starts(&self, ts: i64) -> Vec<i64> {
        let mut out = Vec::new();
        let mut k = ts.div_euclid(self.slide_ms);
        while k * self.slide_ms + self.size_ms > ts {
            out.push(k * self.slide_ms);
            k -= 1;
        }
        out.reverse();
        out
    }
}

#[derive(Default)]
struct Acc {
    n: i64,
    bytes_in: i64,
    bytes_out: i64,
    max_in: i64,
    latency: Vec<f64>,
    /// (event time, bytes in) of the first reading; ties go to the least value.
    first_in: (i64, i64),
    /// (event time, bytes out) of the last reading; ties go to the greatest value.
    last_out: (i64, i64),
}

/// A late reading: device, event time (ms) and the start (ms) of the window it missed.
pub type Late = (String, i64, i64);

/// The readings of each (device, window start ms), in arrival order.
pub type Windows = BTreeMap<(String, i64), Vec<Reading>>;

/// The readings of every (device, window start) in arrival order, and the late ones, by
/// the sequential watermark rule.
pub fn windowed(spec: &Spec, readings: &[Reading]) -> (Windows, Vec<Late>) {
    let mut windows = Windows::new();
    let mut late = Vec::new();
    let mut max_seen: Option<i64> = None;
    for r in readings {
        let watermark = max_seen.map(|m| m - spec.ooo_ms);
        max_seen = Some(max_seen.map_or(r.ts_ms, |m| m.max(r.ts_ms)));
        if !spec.keep(r) {
            continue;
        }
        for start in spec.starts(r.ts_ms) {
            let end = start + spec.size_ms;
            if watermark.is_some_and(|w| end <= w) {
                late.push((device_name(r.device), r.ts_ms, start));
                continue;
            }
            windows
                .entry((device_name(r.device), start))
                .or_default()
                .push(*r);
        }
    }
    late.sort();
    (windows, late)
}

/// The sequential answer: result rows and late readings.
pub fn oracle(spec: &Spec, readings: &[Reading]) -> (Vec<Vec<Value>>, Vec<Late>) {
    let (by_window, late) = windowed(spec, readings);
    let mut windows: BTreeMap<(String, i64), Acc> = BTreeMap::new();
    for (key, rs) in by_window {
        let acc = windows.entry(key).or_default();
        for r in rs {
            acc.n += 1;
            acc.bytes_in += r.bytes_in;
            acc.bytes_out += r.bytes_out;
            let (first, last) = ((r.ts_ms, r.bytes_in), (r.ts_ms, r.bytes_out));
            (acc.max_in, acc.first_in, acc.last_out) = if acc.n == 1 {
                (r.bytes_in, first, last)
            } else {
                (
                    acc.max_in.max(r.bytes_in),
                    acc.first_in.min(first),
                    acc.last_out.max(last),
                )
            };
            acc.latency.push(r.latency_ms());
        }
    }
    let us = |ms: i64| Value::Timestamp(ms * 1000);
    let mut rows: Vec<Vec<Value>> = windows
        .into_iter()
        .map(|((device, start), a)| {
            let n = a.latency.len() as f64;
            let avg = a.latency.iter().sum::<f64>() / n;
            let sd = if a.latency.len() < 2 {
                Value::Null
            } else {
                let m2: f64 = a.latency.iter().map(|x| (x - avg) * (x - avg)).sum();
                Value::Double((m2 / (n - 1.0)).sqrt())
            };
            vec![
                Value::Text(device),
                us(start),
                us(start + spec.size_ms),
                Value::BigInt(a.n),
                Value::BigInt(a.bytes_in),
                Value::BigInt(a.bytes_out),
                Value::BigInt(a.max_in),
                Value::Double(avg),
                sd,
                Value::BigInt(a.first_in.1),
                Value::BigInt(a.last_out.1),
            ]
        })
        .collect();
    sort_rows(&mut rows);
    (rows, late)
}

/// The late table as (device, ts ms, window start ms), sorted.
pub fn late_rows(dir: &std::path::Path) -> Vec<Late> {
    let mut out: Vec<Late> = read_rows(dir)
        .into_iter()
        .map(|r| match (&r[0], &r[1], &r[6]) {
            (Value::Text(d), Value::Timestamp(ts), Value::Timestamp(start)) => {
                (d.clone(), ts / 1000, start / 1000)
            }
            other => panic!("unexpected late row {other:?}"),
        })
        .collect();
    out.sort();
    out
}

#[derive(Clone, Copy, Debug)]
pub enum Via {
    Generator,
    Json,
    Csv,
}

/// Runs the spec over the generator's readings, through `via`, and checks results and
/// late rows against the oracle.
pub fn check(spec: &Spec, config: &GeneratorConfig, via: Via, workers: usize, chunk_bytes: usize) {
    let readings: Vec<Reading> = (0..config.readings).map(|i| config.reading(i)).collect();
    let (want, want_late) = oracle(spec, &readings);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let input = match via {
        Via::Generator => Input::Generator(config.clone()),
        Via::Json | Via::Csv => {
            let (format, ts, name) = match via {
                Via::Json => (Format::Jsonl, TimestampFormat::Millis, "in.jsonl"),
                _ => (Format::Csv, TimestampFormat::Rfc3339, "in.csv"),
            };
            let path = dir.path().join(name);
            let mut bytes = Vec::new();
            write_readings(config, format, ts, &mut bytes).unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
            Input::File { path, format }
        }
    };
    let out = dir.path().join("out");
    let plan = plan(&spec.sql());
    let summary = run(&plan, input, &out, workers, chunk_bytes);
    let context = format!("{spec:?} via {via:?}, {workers} workers, {chunk_bytes}-byte chunks");
    assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
    assert_eq!(
        late_rows(&out.join("q_late")),
        want_late,
        "{context}: late rows"
    );
    assert_eq!(
        summary.late,
        want_late.len() as u64,
        "{context}: late count"
    );
    assert_eq!(summary.readings, config.readings, "{context}: readings");
    assert_eq!(summary.bad, 0, "{context}");
}

fn generator(
    readings: u64,
    devices: u64,
    rate: f64,
    disorder_ms: u64,
    late_fraction: f64,
    seed: u64,
) -> GeneratorConfig {
    GeneratorConfig {
        devices,
        readings,
        rate,
        disorder_ms,
        late_fraction,
        seed,
        ..GeneratorConfig::default()
    }
}

#[test]
fn canonical_query_matches_oracle_at_1_2_and_4_workers() {
    let spec = Spec::minute();
    let config = generator(30_000, 200, 200.0, 8_000, 0.01, 7);
    for workers in [1, 2, 4] {
        check(&spec, &config, Via::Json, workers, 16 * 1024);
    }
}

/// Sixty thousand devices: each worker's key table outgrows the caches, and the JSON and
/// CSV decoders intern keys a batch at a time (`decode::deferred`), which must change no
/// row.
#[test]
fn many_devices_match_oracle_at_1_2_and_4_workers() {
    let spec = Spec::minute();
    let config = generator(240_000, 60_000, 2_000.0, 8_000, 0.01, 11);
    for workers in [1, 2, 4] {
        for via in [Via::Json, Via::Csv] {
            check(&spec, &config, via, workers, 256 * 1024);
        }
    }
}

/// The oracle's Top-N: per window, the `n` rows with the most readings, ties by device,
/// each with its rank.
pub fn top_n(rows: &[Vec<Value>], n: usize) -> Vec<Vec<Value>> {
    let key = |r: &[Value]| match (&r[0], &r[1], &r[3]) {
        (Value::Text(device), Value::Timestamp(start), Value::BigInt(n)) => {
            (*start, device.clone(), *n)
        }
        _ => panic!("unexpected row {r:?}"),
    };
    let mut by_window: BTreeMap<i64, Vec<Vec<Value>>> = BTreeMap::new();
    for row in rows {
        by_window.entry(key(row).0).or_default().push(row.clone());
    }
    let mut out = Vec::new();
    for (_, mut window) in by_window {
        window.sort_by(|a, b| {
            let ((_, da, na), (_, db, nb)) = (key(a), key(b));
            nb.cmp(&na).then_with(|| da.cmp(&db))
        });
        for (rank, mut row) in window.into_iter().take(n).enumerate() {
            row.push(Value::BigInt(rank as i64 + 1));
            out.push(row);
        }
    }
    sort_rows(&mut out);
    out
}

#[test]
fn window_top_n_ranks_ties_by_key_at_1_2_and_4_workers() {
    let spec = Spec {
        size_ms: 10_000,
        slide_ms: 5_000,
        ooo_ms: 3_000,
        filtered: false,
    };
    // Few readings per device and window: many ties on the count.
    let config = generator(12_000, 300, 300.0, 6_000, 0.01, 17);
    let readings: Vec<Reading> = (0..config.readings).map(|i| config.reading(i)).collect();
    let (all, _) = oracle(&spec, &readings);
    let want = top_n(&all, 3);
    let plan = plan(&spec.top_n_sql(3));
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        run(
            &plan,
            Input::Generator(config.clone()),
            dir.path(),
            workers,
            8 * 1024,
        );
        let context = format!("top-3 at {workers} workers");
        assert_rows_eq(&read_rows(&dir.path().join("q")), &want, &context);
    }
}

#[test]
fn hopping_filtered_query_matches_oracle_from_csv() {
    let spec = Spec {
        size_ms: 30_000,
        slide_ms: 10_000,
        ooo_ms: 2_000,
        filtered: true,
    };
    let config = generator(8_000, 40, 100.0, 6_000, 0.02, 11);
    for workers in [1, 2, 4] {
        check(&spec, &config, Via::Csv, workers, 4 * 1024);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn any_window_disorder_and_workers_match_oracle(
        size_ms in prop_oneof![Just(1_000i64), Just(5_000), Just(60_000)],
        hops in prop_oneof![Just(1i64), Just(2), Just(3)],
        ooo_ms in 0i64..10_000,
        disorder_ms in 0u64..20_000,
        late_fraction in prop_oneof![Just(0.0), Just(0.03)],
        devices in 1u64..40,
        readings in 200u64..4_000,
        rate in 20.0f64..2_000.0,
        workers in prop_oneof![Just(1usize), Just(2), Just(4)],
        chunk_bytes in prop_oneof![Just(300usize), Just(2_000), Just(20_000)],
        via in prop_oneof![Just(Via::Generator), Just(Via::Json), Just(Via::Csv)],
        filtered in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let slide_ms = size_ms / hops;
        let spec = Spec { size_ms: slide_ms * hops, slide_ms, ooo_ms, filtered };
        check(&spec, &generator(readings, devices, rate, disorder_ms, late_fraction, seed), via, workers, chunk_bytes);
    }
}
