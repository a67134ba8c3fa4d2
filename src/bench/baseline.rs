//! The plain single-threaded loop the engine is measured against (COST): the canonical
//! query written by hand with serde_json and a hash map, as well as one would for a
//! one-off job. It reads the whole file, splits lines with memchr, parses each into a
//! borrowed struct, keeps the watermark, skips late readings and aggregates per
//! (window, device) in a hash map with a fast hasher, looking each key up once.

use std::path::Path;

type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use serde::Deserialize;

#[derive(Deserialize)]
struct Reading<'a> {
    #[serde(borrow)]
    device_id: &'a str,
    ts: i64,
    bytes_in: i64,
    bytes_out: i64,
    #[allow(dead_code)]
    packets: i64,
    latency_ms: f64,
}

/// One result row of the canonical query.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Totals {
    /// `COUNT(*)`
    pub readings: i64,
    /// `SUM(bytes_in)`
    pub bytes_in: i64,
    /// `SUM(bytes_out)`
    pub bytes_out: i64,
    /// `MAX(bytes_in)`
    pub max_bytes_in: i64,
    /// Sum of `latency_ms`, for `AVG`.
    pub latency_sum: f64,
}

/// What the loop computed.
#[derive(Debug, Default)]
pub struct BaselineResult {
    /// Readings parsed.
    pub readings: u64,
    /// Lines that did not parse.
    pub bad: u64,
    /// Late readings skipped.
    pub late: u64,
    /// Result rows by window start (ms) and device.
    pub windows: HashMap<i64, HashMap<String, Totals>>,
}

impl BaselineResult {
    /// Number of result rows.
    pub fn rows(&self) -> usize {
        self.windows.values().map(HashMap::len).sum()
    }
}

/// Runs the canonical query (one-minute tumbling windows, 5 s out-of-orderness) over a
/// JSON lines file.
pub fn run(path: &Path) -> std::io::Result<BaselineResult> {
    let data = std::fs::read(path)?;
    Ok(aggregate(&data, 60_000, 5_000))
}

/// The loop itself, over JSON lines in memory; window and out-of-orderness in ms.
pub fn aggregate(data: &[u8], window_ms: i64, ooo_ms: i64) -> BaselineResult {
    let mut result = BaselineResult::default();
    let mut max_ts = i64::MIN;
    let mut start = 0;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |i| start + i);
        let line = &data[start..end];
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        let Ok(r) = serde_json::from_slice::<Reading>(line) else {
            result.bad += 1;
            continue;
        };
        result.readings += 1;
        let watermark = max_ts.saturating_sub(ooo_ms);
        max_ts = max_ts.max(r.ts);
        let start_ms = r.ts.div_euclid(window_ms) * window_ms;
        if start_ms + window_ms <= watermark {
            result.late += 1;
            continue;
        }
        let w = result.windows.entry(start_ms).or_default();
        let totals = match w.get_mut(r.device_id) {
            Some(t) => t,
            None => w.entry(r.device_id.to_owned()).or_default(),
        };
        totals.readings += 1;
        totals.bytes_in += r.bytes_in;
        totals.bytes_out += r.bytes_out;
        totals.max_bytes_in = if totals.readings == 1 {
            r.bytes_in
        } else {
            totals.max_bytes_in.max(r.bytes_in)
        };
        totals.latency_sum += r.latency_ms;
    }
    result
}
