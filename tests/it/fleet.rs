//! A fleet: nodes that sync with `--node NAME` into one bucket read, in `edgeflow query
//! --remote s3://bucket/prefix`, as one table per query with a `node` column; answers
//! equal the plain computation over every node's readings, a filter on `node` reads
//! only that node's files, and sketch columns roll the nodes up to the answer one box
//! would give over all readings.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMicrosecondType};
use edgeflow::outputs::{Outputs, QueryResult};
use edgeflow::source::generator::{GeneratorConfig, Reading, device_name};
use edgeflow::sync::target::Target;
use edgeflow::types::Value;

use super::oracle::{Late, Spec, oracle};
use super::s3_server::Moto;
use super::support::{assert_rows_eq, parquet_files, row, sort_rows};

/// The nodes, each with its own worker count.
const NODES: [(&str, usize); 3] = [("edge-a", 1), ("edge-b", 2), ("edge-c", 4)];

fn node_of(device: u64) -> usize {
    (device % NODES.len() as u64) as usize
}

/// Readings as the devices send them, in the generator's JSON lines.
fn json_line(r: &Reading) -> String {
    format!(
        "{{\"device_id\":\"{}\",\"ts\":{},\"bytes_in\":{},\"bytes_out\":{},\"packets\":{},\"latency_ms\":{}.{:02}}}\n",
        device_name(r.device),
        r.ts_ms,
        r.bytes_in,
        r.bytes_out,
        r.packets,
        r.latency_centi / 100,
        r.latency_centi % 100
    )
}

/// Each node's readings, in arrival order: the devices split by number.
fn split(config: &GeneratorConfig) -> Vec<Vec<Reading>> {
    let mut nodes = vec![Vec::new(); NODES.len()];
    for i in 0..config.readings {
        let r = config.reading(i);
        nodes[node_of(r.device)].push(r);
    }
    nodes
}

fn write_input(path: &Path, readings: &[Reading]) {
    let mut file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    for r in readings {
        file.write_all(json_line(r).as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

/// `edgeflow run` of `query` over `input` at `workers`, synced to `url` as `node`.
fn run_node(moto: &Moto, query: &Path, input: &Path, out: &Path, workers: usize, sync: &[&str]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    command
        .env_remove("EDGEFLOW_SYNC")
        .env_remove("EDGEFLOW_NODE_NAME");
    moto.env(&mut command);
    let output = command
        .arg("run")
        .arg(query)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(["--workers", &workers.to_string()])
        .args(sync)
        .output()
        .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"));
    assert!(
        output.status.success(),
        "edgeflow run {}: {}",
        input.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"))
}

fn open(runtime: &tokio::runtime::Runtime, moto: &Moto, url: &str) -> Outputs {
    let target = Target::open(url, &moto.options()).unwrap_or_else(|e| panic!("{e}"));
    runtime
        .block_on(Outputs::open(None, Some(&target)))
        .unwrap_or_else(|e| panic!("opening {url}: {e}"))
}

fn sql(runtime: &tokio::runtime::Runtime, outputs: &Outputs, text: &str) -> QueryResult {
    runtime
        .block_on(outputs.sql(text))
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn result_rows(result: &QueryResult) -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = result
        .batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| row(b, i)))
        .collect();
    sort_rows(&mut rows);
    rows
}

/// A query file named `name.sql` in `dir`.
fn query_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn a_fleet_bucket_answers_as_the_plain_computation_over_every_nodes_readings() {
    let moto = Moto::signed();
    moto.bucket("fleet");
    let url = "s3://fleet/region-1";
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let spec = Spec::minute();
    let query = query_file(dir.path(), "q", &spec.sql());
    let config = GeneratorConfig {
        devices: 30,
        readings: 30_000,
        rate: 40.0,
        disorder_ms: 8_000,
        late_fraction: 0.02,
        seed: 41,
        ..GeneratorConfig::default()
    };
    let mut want_rows = Vec::new();
    let mut want_late: Vec<Late> = Vec::new();
    let mut rows_per_node = BTreeMap::new();
    for (i, readings) in split(&config).iter().enumerate() {
        let (name, workers) = NODES[i];
        let input = dir.path().join(format!("{name}.jsonl"));
        write_input(&input, readings);
        let out = dir.path().join(name);
        run_node(
            &moto,
            &query,
            &input,
            &out,
            workers,
            &["--sync", url, "--node", name],
        );
        // Each node has its own watermark: lateness is decided per node.
        let (rows, late) = oracle(&spec, readings);
        rows_per_node.insert(name.to_owned(), rows.len() as i64);
        want_rows.extend(rows);
        want_late.extend(late);
    }
    sort_rows(&mut want_rows);
    want_late.sort();
    assert!(!want_late.is_empty(), "the input should hold late readings");

    let runtime = runtime();
    let fleet = open(&runtime, &moto, url);
    let names: Vec<&str> = fleet.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["q", "q_late"]);
    let got = sql(
        &runtime,
        &fleet,
        "SELECT arrow_cast(device_id, 'Utf8'), window_start, window_end, readings, bytes_in,
                bytes_out, max_bytes_in, avg_latency_ms, sd_latency_ms, first_bytes_in,
                last_bytes_out
         FROM q",
    );
    assert_rows_eq(&result_rows(&got), &want_rows, "fleet-wide rows");
    let late = sql(
        &runtime,
        &fleet,
        "SELECT arrow_cast(device_id, 'Utf8'), ts, window_start FROM q_late",
    );
    let mut got_late: Vec<Late> = result_rows(&late)
        .into_iter()
        .map(|r| match (&r[0], &r[1], &r[2]) {
            (Value::Text(d), Value::Timestamp(ts), Value::Timestamp(start)) => {
                (d.clone(), ts / 1000, start / 1000)
            }
            other => panic!("unexpected late row {other:?}"),
        })
        .collect();
    got_late.sort();
    assert_eq!(got_late, want_late, "fleet-wide late readings");

    // The node column says where each row came from.
    let per_node = sql(
        &runtime,
        &fleet,
        "SELECT node, count(*) FROM q GROUP BY node ORDER BY node",
    );
    let got_per_node: BTreeMap<String, i64> = result_rows(&per_node)
        .into_iter()
        .map(|r| match (&r[0], &r[1]) {
            (Value::Text(node), Value::BigInt(n)) => (node.clone(), *n),
            other => panic!("unexpected row {other:?}"),
        })
        .collect();
    assert_eq!(got_per_node, rows_per_node);

    // A filter on the node reads that node's files and no other's.
    let one = sql(
        &runtime,
        &fleet,
        "SELECT sum(readings) FROM q WHERE node = 'edge-b'",
    );
    let local_files = parquet_files(&dir.path().join("edge-b/q")).len();
    assert!(local_files > 0);
    assert_eq!(
        one.files_scanned.len(),
        local_files,
        "{:?}",
        one.files_scanned
    );
    assert!(
        one.files_scanned
            .iter()
            .all(|f| f.starts_with("q/node=edge-b/date=")),
        "{:?}",
        one.files_scanned
    );
    let all = sql(&runtime, &fleet, "SELECT sum(readings) FROM q");
    assert!(all.files_scanned.len() > local_files);

    // One node's folder is that node's outputs alone, without a node column.
    let single = open(&runtime, &moto, &format!("{url}/node=edge-c"));
    let rows = sql(&runtime, &single, "SELECT count(*) FROM q");
    assert_eq!(
        result_rows(&rows),
        [vec![Value::BigInt(rows_per_node["edge-c"])]]
    );
}

const ROLLUP_SQL: &str = "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
        WITH (event_time = 'ts', max_out_of_orderness = '5000ms');
    SELECT window_start, COUNT(*) AS n, APPROX_DISTINCT(device_id) AS devices,
           APPROX_PERCENTILE(bytes_in, 0.9) AS p90_in, APPROX_TOP_K(device_id, 3) AS busiest
    FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
    GROUP BY window_start";

const ROLLUP: &str = "SELECT window_start, sum(n), merge_distinct(devices_sketch),
        merge_percentile(p90_in_sketch, 0.9), merge_top_k(busiest_sketch, 3)
    FROM rollup GROUP BY window_start ORDER BY window_start";

/// Per window start (µs): readings, distinct devices, p90 of bytes in, and the top 3
/// devices with their readings.
type Rollup = BTreeMap<i64, (i64, f64, f64, TopK)>;

/// Values and their counts, most first.
type TopK = Vec<(String, i64)>;

fn rollup(result: &QueryResult) -> Rollup {
    let mut out = Rollup::new();
    for batch in &result.batches {
        let starts = batch.column(0).as_primitive::<TimestampMicrosecondType>();
        let n = batch.column(1).as_primitive::<Int64Type>();
        let distinct = arrow::compute::cast(batch.column(2), &DataType::Float64)
            .unwrap_or_else(|e| panic!("{e}"));
        let p90 = arrow::compute::cast(batch.column(3), &DataType::Float64)
            .unwrap_or_else(|e| panic!("{e}"));
        let lists = batch.column(4).as_list::<i32>();
        for i in 0..batch.num_rows() {
            let entries = lists.value(i);
            let entries = entries.as_struct();
            let values = arrow::compute::cast(entries.column(0), &DataType::Utf8)
                .unwrap_or_else(|e| panic!("{e}"));
            let top = (0..entries.len())
                .map(|j| {
                    (
                        values.as_string::<i32>().value(j).to_owned(),
                        entries.column(1).as_primitive::<Int64Type>().value(j),
                    )
                })
                .collect();
            out.insert(
                starts.value(i),
                (
                    n.value(i),
                    distinct.as_primitive::<Float64Type>().value(i),
                    p90.as_primitive::<Float64Type>().value(i),
                    top,
                ),
            );
        }
    }
    out
}

#[test]
fn sketch_columns_roll_a_fleet_up_to_what_one_box_computes_over_all_readings() {
    let moto = Moto::signed();
    moto.bucket("rollup");
    let url = "s3://rollup/fleet";
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let query = query_file(dir.path(), "rollup", ROLLUP_SQL);
    // Out of order within the allowed 5 s, and nothing late: every node and the one
    // box put every reading in its window, so their sketches summarise the same sets.
    let config = GeneratorConfig {
        devices: 24,
        readings: 24_000,
        rate: 40.0,
        disorder_ms: 3_000,
        late_fraction: 0.0,
        seed: 43,
        ..GeneratorConfig::default()
    };
    for (i, readings) in split(&config).iter().enumerate() {
        let (name, workers) = NODES[i];
        let input = dir.path().join(format!("{name}.jsonl"));
        write_input(&input, readings);
        run_node(
            &moto,
            &query,
            &input,
            &dir.path().join(name),
            workers,
            &["--sync", url, "--node", name],
        );
    }
    let all: Vec<Reading> = (0..config.readings).map(|i| config.reading(i)).collect();
    let input = dir.path().join("all.jsonl");
    write_input(&input, &all);
    let one_box = dir.path().join("one-box");
    run_node(&moto, &query, &input, &one_box, 2, &["--no-sync"]);

    let runtime = runtime();
    let fleet = rollup(&sql(&runtime, &open(&runtime, &moto, url), ROLLUP));
    let target = runtime
        .block_on(Outputs::open(Some(&one_box), None))
        .unwrap_or_else(|e| panic!("{e}"));
    let alone = rollup(&sql(&runtime, &target, ROLLUP));
    // Distinct-count and frequent-items sketches merge exactly: the same answer as one
    // box's. A t-digest's merge depends on how the values were grouped, so the
    // percentile is held to its error bound below instead.
    let exact_parts = |r: &Rollup| -> Vec<(i64, i64, f64, TopK)> {
        r.iter()
            .map(|(start, (n, distinct, _, top))| (*start, *n, *distinct, top.clone()))
            .collect()
    };
    assert_eq!(
        exact_parts(&fleet),
        exact_parts(&alone),
        "the fleet's roll-up equals one box's"
    );

    // And the exact parts are exact: readings, distinct devices, the busiest devices.
    let mut per_window: BTreeMap<i64, BTreeMap<String, i64>> = BTreeMap::new();
    let mut bytes_in: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for r in &all {
        let start = r.ts_ms.div_euclid(60_000) * 60_000 * 1000;
        *per_window
            .entry(start)
            .or_default()
            .entry(device_name(r.device))
            .or_default() += 1;
        bytes_in.entry(start).or_default().push(r.bytes_in as f64);
    }
    assert_eq!(
        fleet.keys().collect::<BTreeSet<_>>(),
        per_window.keys().collect()
    );
    for (start, devices) in &per_window {
        let (n, distinct, p90, top) = &fleet[start];
        // The t-digest's documented bound: within 1% of rank, 2% allowed here.
        let mut sorted = bytes_in[start].clone();
        sorted.sort_by(f64::total_cmp);
        let last = (sorted.len() - 1) as f64;
        let (lo, hi) = (
            sorted[(0.88 * last).floor() as usize],
            sorted[(0.92 * last).ceil() as usize],
        );
        assert!(
            (lo..=hi).contains(p90),
            "window {start}: p90 {p90} outside [{lo}, {hi}]"
        );
        assert_eq!(*n, devices.values().sum::<i64>(), "window {start}");
        assert!(
            (distinct - devices.len() as f64).abs() < 0.5,
            "window {start}: {distinct} estimated, {} exact",
            devices.len()
        );
        let mut ranked: Vec<(String, i64)> = devices.iter().map(|(d, n)| (d.clone(), *n)).collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(3);
        assert_eq!(top, &ranked, "window {start}");
    }
}
