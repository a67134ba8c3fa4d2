//! `edgeflow query`: SQL over the outputs answers what a plain computation over the raw
//! readings answers; partition filters prune files; the bucket copy reads the same, and
//! a file both local and in the bucket counts once.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use edgeflow::outputs::{Outputs, QueryResult};
use edgeflow::sync::target::Target;

use super::s3_server::Moto;
use super::support::canonical_run;

struct Reading {
    device: String,
    ts_ms: i64,
    bytes_in: i64,
    bytes_out: i64,
}

fn edgeflow() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    command.env_remove("EDGEFLOW_SYNC");
    command
}

fn check(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generates out-of-order readings with some late ones, runs the canonical query over
/// them at two workers, and returns the raw readings.
fn produce(dir: &Path, extra: &[&str]) -> Vec<Reading> {
    let input = dir.join("readings.jsonl");
    check(
        edgeflow()
            .args([
                "gen",
                "--devices",
                "50",
                "--readings",
                "60000",
                "--rate",
                "8",
            ])
            .args([
                "--disorder-ms",
                "3000",
                "--late-fraction",
                "0.01",
                "--seed",
                "7",
            ])
            .arg("--output")
            .arg(&input),
        "edgeflow gen",
    );
    check(
        canonical_run(&mut edgeflow(), &input, &dir.join("out")).args(extra),
        "edgeflow run",
    );
    let text = std::fs::read_to_string(&input).unwrap_or_else(|e| panic!("{e}"));
    text.lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            Reading {
                device: v["device_id"].as_str().unwrap_or_default().to_owned(),
                ts_ms: v["ts"].as_i64().unwrap_or_default(),
                bytes_in: v["bytes_in"].as_i64().unwrap_or_default(),
                bytes_out: v["bytes_out"].as_i64().unwrap_or_default(),
            }
        })
        .collect()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn open(
    runtime: &tokio::runtime::Runtime,
    root: Option<&Path>,
    remote: Option<&Target>,
) -> Outputs {
    runtime
        .block_on(Outputs::open(root, remote))
        .unwrap_or_else(|e| panic!("opening the outputs: {e}"))
}

fn sql(runtime: &tokio::runtime::Runtime, outputs: &Outputs, sql: &str) -> QueryResult {
    runtime
        .block_on(outputs.sql(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Rows of (text key, integer values), for results shaped `key, n1, n2, ...`.
fn rows(result: &QueryResult) -> Vec<(String, Vec<i64>)> {
    let mut out = Vec::new();
    for batch in &result.batches {
        let keys = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
            .unwrap_or_else(|e| panic!("{e}"));
        let keys = keys.as_string::<i32>();
        for row in 0..batch.num_rows() {
            let values = (1..batch.num_columns())
                .map(|c| {
                    let column =
                        arrow::compute::cast(batch.column(c), &arrow::datatypes::DataType::Int64)
                            .unwrap_or_else(|e| panic!("{e}"));
                    let column = column.as_primitive::<Int64Type>();
                    if column.is_null(row) {
                        i64::MIN
                    } else {
                        column.value(row)
                    }
                })
                .collect();
            out.push((keys.value(row).to_owned(), values));
        }
    }
    out
}

const ALL_READINGS: &str =
    "(SELECT device_id, window_start, readings, bytes_in, bytes_out FROM device_traffic
     UNION ALL
     SELECT device_id, window_start, 1, bytes_in, bytes_out FROM device_traffic_late)";

#[test]
fn answers_equal_a_plain_computation_over_the_raw_readings() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let readings = produce(dir.path(), &["--no-sync"]);
    let runtime = runtime();
    let outputs = open(&runtime, Some(&dir.path().join("out")), None);
    let names: Vec<&str> = outputs.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["device_traffic", "device_traffic_late"]);

    // Totals: every reading is in a window row or in the late table.
    let total = sql(
        &runtime,
        &outputs,
        &format!("SELECT 'all', sum(readings), sum(bytes_in), sum(bytes_out) FROM {ALL_READINGS}"),
    );
    let want = vec![
        readings.len() as i64,
        readings.iter().map(|r| r.bytes_in).sum(),
        readings.iter().map(|r| r.bytes_out).sum(),
    ];
    assert_eq!(rows(&total), [("all".to_owned(), want)]);
    let late = sql(
        &runtime,
        &outputs,
        "SELECT 'late', count(*) FROM device_traffic_late",
    );
    assert!(
        rows(&late)[0].1[0] > 0,
        "the data should include late readings"
    );

    // Top 5 devices by bytes moved.
    let top = sql(
        &runtime,
        &outputs,
        &format!(
            "SELECT device_id, sum(bytes_in + bytes_out) AS moved FROM {ALL_READINGS}
                  GROUP BY device_id ORDER BY moved DESC, device_id LIMIT 5"
        ),
    );
    let mut per_device: BTreeMap<&str, i64> = BTreeMap::new();
    for r in &readings {
        *per_device.entry(&r.device).or_default() += r.bytes_in + r.bytes_out;
    }
    let mut ranked: Vec<(String, Vec<i64>)> = per_device
        .into_iter()
        .map(|(d, b)| (d.to_owned(), vec![b]))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(5);
    assert_eq!(rows(&top), ranked);

    // Per-hour rollup of the one-minute windows, keyed by the hour partition columns.
    let hourly = sql(
        &runtime,
        &outputs,
        "SELECT concat(CAST(date AS VARCHAR), ' ', CAST(hour AS VARCHAR)) AS h, sum(readings), sum(bytes_in)
         FROM device_traffic GROUP BY date, hour ORDER BY date, hour",
    );
    let by_window = sql(
        &runtime,
        &outputs,
        "SELECT concat(CAST(CAST(date_trunc('hour', window_start) AS DATE) AS VARCHAR), ' ',
                       CAST(date_part('hour', window_start) AS VARCHAR)) AS h,
                sum(readings), sum(bytes_in)
         FROM device_traffic GROUP BY 1 ORDER BY 1",
    );
    assert_eq!(
        rows(&hourly),
        rows(&by_window),
        "partition columns match the window hours"
    );
    let all_hourly = sql(
        &runtime,
        &outputs,
        &format!("SELECT CAST(date_trunc('hour', window_start) AS VARCHAR) AS h, sum(readings), sum(bytes_in)
                  FROM {ALL_READINGS} GROUP BY 1 ORDER BY 1"),
    );
    let mut per_hour: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for r in &readings {
        let e = per_hour.entry(r.ts_ms.div_euclid(3_600_000)).or_default();
        e.0 += 1;
        e.1 += r.bytes_in;
    }
    let got: Vec<Vec<i64>> = rows(&all_hourly).into_iter().map(|(_, v)| v).collect();
    let want: Vec<Vec<i64>> = per_hour.values().map(|(n, b)| vec![*n, *b]).collect();
    assert!(want.len() >= 2, "the data should span several hours");
    assert_eq!(got, want);
}

#[test]
fn partition_filters_scan_only_their_folder() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    produce(dir.path(), &["--no-sync"]);
    let root = dir.path().join("out");
    let runtime = runtime();
    let outputs = open(&runtime, Some(&root), None);
    let everything = sql(
        &runtime,
        &outputs,
        "SELECT sum(bytes_in) FROM device_traffic",
    );
    let total_files = outputs.tables()[0].files;
    assert_eq!(everything.files_scanned.len(), total_files);
    let one_hour = sql(
        &runtime,
        &outputs,
        "SELECT sum(bytes_in) FROM device_traffic WHERE date = DATE '2026-01-01' AND hour = 1",
    );
    let folder = root.join("device_traffic/date=2026-01-01/hour=01");
    let in_folder = std::fs::read_dir(&folder)
        .unwrap_or_else(|e| panic!("{}: {e}", folder.display()))
        .count();
    assert_eq!(one_hour.files_scanned.len(), in_folder);
    assert!(
        one_hour
            .files_scanned
            .iter()
            .all(|f| f.contains("date=2026-01-01/hour=01/"))
    );
    assert!(in_folder < total_files, "{in_folder} of {total_files}");
}

#[test]
fn the_bucket_copy_answers_the_same_and_shared_files_count_once() {
    let moto = Moto::signed();
    moto.bucket("query-remote");
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let url = "s3://query-remote/site-3";
    let mut command = edgeflow();
    moto.env(&mut command);
    let readings = {
        let input = dir.path().join("readings.jsonl");
        check(
            edgeflow()
                .args([
                    "gen",
                    "--devices",
                    "20",
                    "--readings",
                    "20000",
                    "--rate",
                    "8",
                    "--output",
                ])
                .arg(&input),
            "edgeflow gen",
        );
        check(
            canonical_run(&mut command, &input, &dir.path().join("out")).args(["--sync", url]),
            "edgeflow run --sync s3",
        );
        20_000i64
    };
    let root = dir.path().join("out");
    let query = "SELECT 'n', sum(readings) FROM (SELECT readings FROM device_traffic UNION ALL SELECT 1 FROM device_traffic_late)";
    let runtime = runtime();
    let target = Target::open(url, &moto.options()).unwrap_or_else(|e| panic!("{e}"));
    let remote = open(&runtime, None, Some(&target));
    let local = open(&runtime, Some(&root), None);
    assert_eq!(
        rows(&sql(&runtime, &remote, query)),
        [("n".to_owned(), vec![readings])]
    );
    let both = open(&runtime, Some(&root), Some(&target));
    assert_eq!(
        rows(&sql(&runtime, &both, query)),
        [("n".to_owned(), vec![readings])]
    );
    assert_eq!(
        both.tables()[0].files,
        local.tables()[0].files,
        "a file in both places counts once"
    );

    // With half the local files gone, the bucket fills in the rest.
    let files = super::support::parquet_files(&root.join("device_traffic"));
    for file in files.iter().step_by(2) {
        std::fs::remove_file(file).unwrap_or_else(|e| panic!("{e}"));
    }
    let both = open(&runtime, Some(&root), Some(&target));
    assert_eq!(
        rows(&sql(&runtime, &both, query)),
        [("n".to_owned(), vec![readings])]
    );

    // The command line reads the bucket the same way, with the AWS settings of sync.
    let mut cli = edgeflow();
    moto.env(&mut cli);
    let csv = check(
        cli.args(["query", "--remote", url, "--format", "csv", query]),
        "edgeflow query --remote",
    );
    assert_eq!(
        csv.lines().nth(1),
        Some(format!("n,{readings}").as_str()),
        "{csv}"
    );
}

#[test]
fn the_command_line_formats_results_and_explains_unknown_tables() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    produce(dir.path(), &["--no-sync"]);
    let root = dir.path().join("out");
    let query =
        "SELECT device_id, sum(readings) AS n FROM device_traffic GROUP BY 1 ORDER BY 1 LIMIT 2";
    let table = check(
        edgeflow().args(["query", "--root"]).arg(&root).arg(query),
        "table",
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("+-") && lines[1].contains("device_id") && lines[1].contains(" n "),
        "{table}"
    );
    assert_eq!(lines.len(), 6, "{table}");
    let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
    assert!(widths.iter().all(|w| *w == widths[0]), "aligned: {table}");

    let csv = check(
        edgeflow()
            .args(["query", "--format", "csv", "--root"])
            .arg(&root)
            .arg(query),
        "csv",
    );
    assert!(csv.starts_with("device_id,n\ndev-000000,"), "{csv}");
    let json = check(
        edgeflow()
            .args(["query", "--format", "json", "--root"])
            .arg(&root)
            .arg(query),
        "json",
    );
    let first: serde_json::Value = serde_json::from_str(json.lines().next().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{json}: {e}"));
    assert_eq!(first["device_id"], "dev-000000");
    let parquet = dir.path().join("answer.parquet");
    check(
        edgeflow()
            .args(["query", "--format", "parquet", "--root"])
            .arg(&root)
            .arg("--out")
            .arg(&parquet)
            .arg(query),
        "parquet",
    );
    let file = std::fs::File::open(&parquet).unwrap_or_else(|e| panic!("{e}"));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .unwrap_or_else(|e| panic!("{e}"));
    let written: usize = reader.map(|b| b.map_or(0, |b| b.num_rows())).sum();
    assert_eq!(written, 2);

    let tables = check(edgeflow().args(["tables", "--root"]).arg(&root), "tables");
    assert!(
        tables.contains("device_traffic ") && tables.contains("device_traffic_late"),
        "{tables}"
    );

    let out = edgeflow()
        .args(["query", "--root"])
        .arg(&root)
        .arg("SELECT * FROM device_trafic")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("device_trafic") && err.contains("not found"),
        "{err}"
    );
    assert!(
        err.contains("known tables: device_traffic, device_traffic_late"),
        "{err}"
    );
}
