//! Approximate aggregates: estimates within their sketches' bounds at 1, 2 and 4
//! workers on out-of-order input; sketch columns that load in Python's `datasketches`
//! and roll up in `edgeflow query` to the answer over all readings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
use edgeflow::outputs::Outputs;
use edgeflow::source::Input;
use edgeflow::source::generator::{GeneratorConfig, Reading, device_name};

use super::interop::python;
use super::oracle::{Spec, windowed};
use super::support::{plan, read_batches, run};

const SQL: &str =
    "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
        WITH (event_time = 'ts', max_out_of_orderness = '5000ms');
    SELECT device_id, window_start, COUNT(*) AS n,
           APPROX_DISTINCT(bytes_in % 1000) AS distinct_in,
           APPROX_PERCENTILE(latency_ms, 0.5) AS p50,
           APPROX_PERCENTILE(latency_ms, 0.99) AS p99
    FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
    GROUP BY device_id, window_start";

fn spec() -> Spec {
    Spec::minute()
}

fn config() -> GeneratorConfig {
    GeneratorConfig {
        devices: 20,
        readings: 40_000,
        rate: 100.0,
        disorder_ms: 6_000,
        late_fraction: 0.01,
        seed: 23,
        ..GeneratorConfig::default()
    }
}

/// One result row: estimates by (device, window start ms).
#[derive(Debug)]
struct Estimates {
    n: i64,
    distinct: i64,
    p50: f64,
    p99: f64,
}

fn estimates(table: &Path) -> BTreeMap<(String, i64), Estimates> {
    let mut out = BTreeMap::new();
    for batch in read_batches(table) {
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .unwrap_or_else(|| panic!("no column {name} in {:?}", batch.schema()))
                .clone()
        };
        let (devices, starts) = (column("device_id"), column("window_start"));
        let (n, distinct) = (column("n"), column("distinct_in"));
        let (p50, p99) = (column("p50"), column("p99"));
        for i in 0..batch.num_rows() {
            let key = (
                devices.as_string::<i32>().value(i).to_owned(),
                starts.as_primitive::<TimestampMicrosecondType>().value(i) / 1000,
            );
            out.insert(
                key,
                Estimates {
                    n: n.as_primitive::<Int64Type>().value(i),
                    distinct: distinct.as_primitive::<Int64Type>().value(i),
                    p50: p50.as_primitive::<Float64Type>().value(i),
                    p99: p99.as_primitive::<Float64Type>().value(i),
                },
            );
        }
    }
    out
}

/// Runs `sql` over the test readings at `workers` into a new folder.
fn run_at(sql: &str, workers: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    run(
        &plan(sql),
        Input::Generator(config()),
        dir.path(),
        workers,
        16 * 1024,
    );
    dir
}

/// Runs `script` with the result folder `table` as its argument; returns what it printed.
fn python_checks(script: &str, table: &Path, what: &str) -> String {
    let out = std::process::Command::new(python())
        .args(["-c", script])
        .arg(table)
        .output()
        .unwrap_or_else(|e| panic!("python: {e}"));
    assert!(
        out.status.success(),
        "datasketches could not load the {what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `v` is a `q` quantile of `values` to within `eps` of rank.
fn within_rank(values: &[f64], q: f64, v: f64, eps: f64) -> bool {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let last = (sorted.len() - 1) as f64;
    let lo = sorted[((q - eps).max(0.0) * last).floor() as usize];
    let hi = sorted[((q + eps).min(1.0) * last).ceil() as usize];
    lo <= v && v <= hi
}

fn distinct_in(readings: &[Reading]) -> usize {
    readings
        .iter()
        .map(|r| r.bytes_in % 1000)
        .collect::<BTreeSet<_>>()
        .len()
}

#[test]
fn approximate_aggregates_stay_within_their_bounds_at_1_2_and_4_workers() {
    let config = config();
    let readings: Vec<Reading> = (0..config.readings).map(|i| config.reading(i)).collect();
    let (windows, _) = windowed(&spec(), &readings);
    for workers in [1, 2, 4] {
        let dir = run_at(SQL, workers);
        let got = estimates(&dir.path().join("q"));
        assert_eq!(got.len(), windows.len(), "{workers} workers: windows");
        for (key, rs) in &windows {
            let e = &got[key];
            let context = format!("{workers} workers, {key:?}: {e:?}");
            assert_eq!(e.n, rs.len() as i64, "{context}");
            let exact = distinct_in(rs) as i64;
            // HLL at lg_k 12: 1.6% standard error; few values are counted nearly exactly.
            assert!(
                (e.distinct - exact).abs() <= 1 + exact / 20,
                "{context}: distinct {exact}"
            );
            let latency: Vec<f64> = rs.iter().map(Reading::latency_ms).collect();
            assert!(within_rank(&latency, 0.5, e.p50, 0.05), "{context}: p50");
            assert!(within_rank(&latency, 0.99, e.p99, 0.02), "{context}: p99");
        }
    }
}

#[test]
fn sketch_columns_load_in_python_and_roll_up_in_edgeflow_query() {
    let config = config();
    let readings: Vec<Reading> = (0..config.readings).map(|i| config.reading(i)).collect();
    let (windows, _) = windowed(&spec(), &readings);
    let dir = run_at(SQL, 2);

    // The same bytes load in Apache DataSketches for Python: the same count of values,
    // the same distinct estimate, and our percentile at the same rank there.
    let script = r#"
import glob, sys
import pyarrow.parquet as pq
from datasketches import hll_sketch, tdigest_double
rows = 0
for path in glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True):
    for r in pq.read_table(path).to_pylist():
        h = hll_sketch.deserialize(r["distinct_in_sketch"])
        assert round(h.get_estimate()) == r["distinct_in"], (path, r["distinct_in"], h.get_estimate())
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            t = tdigest_double.deserialize(r[name + "_sketch"])
            assert t.get_total_weight() == r["n"], (path, name, t.get_total_weight(), r["n"])
            # Implementations interpolate differently; in rank they agree (to one value).
            assert abs(t.get_rank(r[name]) - q) <= 0.02 + 1 / r["n"], (path, name, t.get_rank(r[name]), q, r["n"])
        rows += 1
print(rows)
"#;
    let loaded: usize = python_checks(script, &dir.path().join("q"), "sketch columns")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("python printed no row count: {e}"));
    assert_eq!(loaded, windows.len(), "rows checked in Python");

    // Rolled up over every window by merging sketches: the answer over all readings.
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let outputs = runtime
        .block_on(Outputs::open(Some(dir.path()), None))
        .unwrap_or_else(|e| panic!("{e}"));
    let result = runtime
        .block_on(outputs.sql(
            "SELECT device_id, merge_percentile(p99_sketch, 0.99) AS p99, \
             merge_distinct(distinct_in_sketch) AS distinct_in FROM q GROUP BY device_id",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut per_device: BTreeMap<String, Vec<Reading>> = BTreeMap::new();
    for ((device, _), rs) in windows {
        per_device.entry(device).or_default().extend(rs);
    }
    let mut seen = 0;
    for batch in &result.batches {
        for i in 0..batch.num_rows() {
            let devices = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .unwrap_or_else(|e| panic!("{e}"));
            let device = devices.as_string::<i32>().value(i).to_owned();
            let p99 = batch.column(1).as_primitive::<Float64Type>().value(i);
            let distinct = batch.column(2).as_primitive::<Int64Type>().value(i);
            let rs = &per_device[&device];
            let latency: Vec<f64> = rs.iter().map(Reading::latency_ms).collect();
            assert!(
                within_rank(&latency, 0.99, p99, 0.01),
                "{device}: merged p99 {p99} is not the p99 of its {} readings",
                rs.len()
            );
            let exact = distinct_in(rs) as i64;
            assert!(
                (distinct - exact).abs() <= exact / 20,
                "{device}: merged distinct {distinct}, exact {exact}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, per_device.len(), "one rolled-up row per device");
    assert!(per_device.contains_key(&device_name(0)));
}

const TOP_SQL: &str = "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
        WITH (event_time = 'ts', max_out_of_orderness = '5000ms');
    SELECT window_start, COUNT(*) AS n, APPROX_TOP_K(device_id, 3) AS busiest
    FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
    GROUP BY window_start";

/// Per window start (ms): the devices by readings, most first, ties by name.
fn busiest(windows: &super::oracle::Windows) -> BTreeMap<i64, Vec<(String, i64)>> {
    let mut out: BTreeMap<i64, Vec<(String, i64)>> = BTreeMap::new();
    for ((device, start), rs) in windows {
        out.entry(*start)
            .or_default()
            .push((device.clone(), rs.len() as i64));
    }
    for list in out.values_mut() {
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    out
}

/// The `busiest` lists of a result folder, by window start (ms).
fn top_lists(table: &Path) -> BTreeMap<i64, Vec<(String, i64)>> {
    let mut out = BTreeMap::new();
    for batch in read_batches(table) {
        let starts = batch
            .column_by_name("window_start")
            .unwrap_or_else(|| panic!("no window_start"))
            .as_primitive::<TimestampMicrosecondType>()
            .clone();
        let lists = batch
            .column_by_name("busiest")
            .unwrap_or_else(|| panic!("no busiest"))
            .as_list::<i32>()
            .clone();
        for i in 0..batch.num_rows() {
            let entries = lists.value(i);
            let entries = entries.as_struct();
            let values = entries.column(0).as_string::<i32>();
            let counts = entries.column(1).as_primitive::<Int64Type>();
            let list = (0..entries.len())
                .map(|j| (values.value(j).to_owned(), counts.value(j)))
                .collect();
            out.insert(starts.value(i) / 1000, list);
        }
    }
    out
}

#[test]
fn approx_top_k_lists_the_busiest_devices_at_1_2_and_4_workers() {
    let config = config();
    let readings: Vec<Reading> = (0..config.readings).map(|i| config.reading(i)).collect();
    let (windows, _) = windowed(&spec(), &readings);
    // Twenty devices: well within the sketch's exact range, so counts are exact.
    let want: BTreeMap<i64, Vec<(String, i64)>> = busiest(&windows)
        .into_iter()
        .map(|(start, mut list)| {
            list.truncate(3);
            (start, list)
        })
        .collect();
    for workers in [1, 2, 4] {
        let dir = run_at(TOP_SQL, workers);
        assert_eq!(top_lists(&dir.path().join("q")), want, "{workers} workers");
    }

    // The sketches load in Python, and merge in `edgeflow query` to the whole run's.
    let dir = run_at(TOP_SQL, 2);
    let script = r#"
import glob, sys
import pyarrow.parquet as pq
from datasketches import frequent_strings_sketch
for path in glob.glob(sys.argv[1] + "/**/*.parquet", recursive=True):
    for r in pq.read_table(path).to_pylist():
        s = frequent_strings_sketch.deserialize(r["busiest_sketch"])
        assert s.total_weight == r["n"], (path, s.total_weight, r["n"])
        for e in r["busiest"]:
            assert s.get_estimate(e["value"]) == e["count"], (path, e)
"#;
    python_checks(script, &dir.path().join("q"), "frequent items sketches");
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let outputs = runtime
        .block_on(Outputs::open(Some(dir.path()), None))
        .unwrap_or_else(|e| panic!("{e}"));
    let result = runtime
        .block_on(outputs.sql("SELECT merge_top_k(busiest_sketch, 3) FROM q"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for ((device, _), rs) in &windows {
        *totals.entry(device.clone()).or_default() += rs.len() as i64;
    }
    let mut want: Vec<(String, i64)> = totals.into_iter().collect();
    want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    want.truncate(3);
    let list = result.batches[0].column(0).as_list::<i32>().value(0);
    let entries = list.as_struct();
    let values = arrow::compute::cast(entries.column(0), &arrow::datatypes::DataType::Utf8)
        .unwrap_or_else(|e| panic!("{e}"));
    let got: Vec<(String, i64)> = (0..entries.len())
        .map(|j| {
            (
                values.as_string::<i32>().value(j).to_owned(),
                entries.column(1).as_primitive::<Int64Type>().value(j),
            )
        })
        .collect();
    assert_eq!(got, want, "merge_top_k over every window");
    // CSV has no lists: the list is written as the text the table shows.
    let mut csv = Vec::new();
    edgeflow::outputs::format::write(
        &result.batches[0].schema(),
        &result.batches,
        edgeflow::outputs::format::OutputFormat::Csv,
        &mut csv,
    )
    .unwrap_or_else(|e| panic!("CSV of a list: {e}"));
    let csv = String::from_utf8_lossy(&csv);
    assert!(
        csv.contains(&format!("{{value: {}, count: {}}}", want[0].0, want[0].1)),
        "{csv}"
    );
}
