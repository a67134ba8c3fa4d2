//! An output folder is one stream: bad clocks, reruns, consecutive files and interrupted
//! runs all end with the rows of one clean, uninterrupted run over the whole input.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edgeflow::decode::Format;
use edgeflow::engine::{RunConfig, RunSummary};
use edgeflow::source::Input;
use edgeflow::source::generator::{GeneratorConfig, Reading, TimestampFormat, write_readings};

use super::oracle::{Late, Spec, late_rows, oracle, top_n};
use super::support::{
    assert_rows_eq, parquet_files, plan, read_rows, revisions, run_within_deadline,
};

const YEAR_MS: i64 = 365 * 24 * 3600 * 1000;

fn spec() -> Spec {
    Spec::minute()
}

fn config(readings: u64, seed: u64) -> GeneratorConfig {
    GeneratorConfig {
        devices: 100,
        readings,
        rate: 100.0,
        disorder_ms: 4_000,
        late_fraction: 0.01,
        seed,
        ..GeneratorConfig::default()
    }
}

/// The generator's readings as JSON lines, one string per line.
fn lines(config: &GeneratorConfig) -> Vec<String> {
    let mut bytes = Vec::new();
    write_readings(config, Format::Jsonl, TimestampFormat::Millis, &mut bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&bytes)
        .lines()
        .map(str::to_owned)
        .collect()
}

fn readings(config: &GeneratorConfig) -> Vec<Reading> {
    (0..config.readings).map(|i| config.reading(i)).collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The generator's readings written as `in.jsonl` under `dir`.
fn input_file(dir: &Path, config: &GeneratorConfig) -> PathBuf {
    let path = dir.join("in.jsonl");
    write_lines(&path, &lines(config));
    path
}

fn json_input(path: &Path) -> Input {
    Input::File {
        path: path.to_owned(),
        format: Format::Jsonl,
    }
}

fn try_run(
    sql: &str,
    input: Input,
    out: &Path,
    workers: usize,
    fresh: bool,
) -> Result<RunSummary, edgeflow::Error> {
    let mut config = RunConfig::new(plan(sql), input, out.to_owned());
    config.workers = workers;
    config.chunk_bytes = 16 * 1024;
    config.fresh = fresh;
    run_within_deadline(config)
}

fn run(sql: &str, input: Input, out: &Path, workers: usize, fresh: bool) -> RunSummary {
    try_run(sql, input, out, workers, fresh).unwrap_or_else(|e| panic!("run failed: {e}"))
}

/// The folder's results and late rows equal the oracle's answer for `readings`.
fn assert_stream_equals_oracle(out: &Path, readings: &[Reading], context: &str) {
    assert_stream_equals(out, &spec(), readings, context);
}

/// The folder's results and late rows equal the answer of `spec`'s oracle.
fn assert_stream_equals(out: &Path, spec: &Spec, readings: &[Reading], context: &str) {
    let (want, want_late): (_, Vec<Late>) = oracle(spec, readings);
    assert_rows_eq(&read_rows(&out.join("q")), &want, context);
    assert_eq!(
        late_rows(&out.join("q_late")),
        want_late,
        "{context}: late rows"
    );
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

fn bad_clock_line(device: &str, ts_ms: i64) -> String {
    format!(
        r#"{{"device_id":"{device}","ts":{ts_ms},"bytes_in":1,"bytes_out":1,"packets":1,"latency_ms":1.0}}"#
    )
}

#[test]
fn bad_clocks_leave_every_other_row_as_a_clean_run_has_it() {
    let config = config(12_000, 3);
    let clean = lines(&config);
    let start = config.reading(0).ts_ms;
    let mid = config.reading(6_000).ts_ms;
    let cases: Vec<(&str, Vec<(usize, String)>)> = vec![
        (
            "first line a year ahead",
            vec![(0, bad_clock_line("d-bad", start + YEAR_MS))],
        ),
        (
            "middle line a year ahead",
            vec![(6_000, bad_clock_line("d-bad", mid + YEAR_MS))],
        ),
        (
            "several devices, several clocks",
            vec![
                (0, bad_clock_line("d-x", start + 30 * 24 * 3600 * 1000)),
                (2_000, bad_clock_line("d-y", start + YEAR_MS)),
                (2_001, bad_clock_line("d-z", start + 2 * YEAR_MS)),
                (9_000, bad_clock_line("d-x", mid + 3 * 3600 * 1000)),
                (11_000, bad_clock_line("d-w", mid + 10 * YEAR_MS)),
            ],
        ),
    ];
    for (name, bad) in cases {
        let mut input = clean.clone();
        for (at, line) in bad.iter().rev() {
            input.insert(*at, line.clone());
        }
        for workers in [1, 2, 4] {
            let dir = tempdir();
            let path = dir.path().join("in.jsonl");
            write_lines(&path, &input);
            let out = dir.path().join("out");
            let summary = run(&spec().sql(), json_input(&path), &out, workers, false);
            let context = format!("{name}, {workers} workers");
            assert_eq!(summary.bad, bad.len() as u64, "{context}: quarantined");
            let letters = super::support::dead_letters(&out, "q");
            assert_eq!(
                letters.matches("timestamp too far ahead").count(),
                bad.len(),
                "{context}: {letters}"
            );
            assert_stream_equals_oracle(&out, &readings(&config), &context);
        }
    }
}

#[test]
fn a_whole_fleet_moving_forward_is_followed() {
    // Every device jumps two days ahead half-way through: nothing is quarantined, and
    // the second half is on time under the new clock.
    let mut config = config(6_000, 5);
    config.late_fraction = 0.0;
    let mut input = lines(&config);
    let second: Vec<String> = lines(&config)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}"));
            let ts = v["ts"].as_i64().unwrap_or_default() + 2 * 24 * 3600 * 1000;
            let mut v = v;
            v["ts"] = ts.into();
            v.to_string()
        })
        .collect();
    input.extend(second);
    let dir = tempdir();
    let path = dir.path().join("in.jsonl");
    write_lines(&path, &input);
    let summary = run(
        &spec().sql(),
        json_input(&path),
        &dir.path().join("out"),
        2,
        false,
    );
    assert_eq!(summary.bad, 0);
    assert_eq!(summary.late, 0);
    assert_eq!(summary.readings, 12_000);
}

#[test]
fn reruns_with_other_worker_counts_count_once() {
    let config = config(8_000, 9);
    let dir = tempdir();
    let path = input_file(dir.path(), &config);
    let out = dir.path().join("out");
    let first = run(&spec().sql(), json_input(&path), &out, 2, false);
    assert!(!first.already_consumed);
    for workers in [1, 4] {
        let again = run(&spec().sql(), json_input(&path), &out, workers, false);
        assert!(again.already_consumed, "{workers} workers: fed twice");
        assert_eq!(again.readings, 0);
    }
    assert_stream_equals_oracle(&out, &readings(&config), "after reruns");
    // A window is one file whatever the worker count.
    let files = parquet_files(&out.join("q"));
    assert!(
        files
            .iter()
            .all(|f| f.to_string_lossy().contains("-r0.parquet"))
    );

    // --fresh recomputes with another worker count: every window becomes revision 1,
    // the first revisions leave the table, and nothing counts twice.
    let fresh = run(&spec().sql(), json_input(&path), &out, 4, true);
    assert_eq!(fresh.readings, config.readings);
    assert_stream_equals_oracle(&out, &readings(&config), "after --fresh");
    assert!(revisions(&out.join("q")).iter().all(|&r| r == 1));
    assert_eq!(
        parquet_files(&out.join("q_revisions")).len(),
        files.len(),
        "superseded revisions are kept"
    );
}

fn split(lines: &[String], parts: usize) -> Vec<Vec<String>> {
    let per = lines.len().div_ceil(parts);
    lines.chunks(per).map(<[String]>::to_vec).collect()
}

#[test]
fn consecutive_files_equal_one_run_over_the_whole() {
    let config = config(12_000, 21);
    let all = lines(&config);
    for parts in [3, 10] {
        let dir = tempdir();
        let out = dir.path().join("out");
        let mut revised = 0;
        for (i, part) in split(&all, parts).iter().enumerate() {
            let path = dir.path().join(format!("hour-{i:02}.jsonl"));
            write_lines(&path, part);
            let workers = [1, 2, 4][i % 3];
            let summary = run(&spec().sql(), json_input(&path), &out, workers, false);
            revised += summary.superseded;
        }
        assert!(revised > 0, "{parts} files: no window spanned two files");
        assert_stream_equals_oracle(&out, &readings(&config), &format!("{parts} files"));
    }
}

/// Every row of the result files under `dir` but its revision, keyed by its first two
/// columns (device, window start), each value as Arrow displays it (binary as hex).
fn rows_with_sketches(dir: &Path) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    use arrow::util::display::array_value_to_string;
    let mut rows = std::collections::BTreeMap::new();
    for batch in super::support::read_batches(dir) {
        let schema = batch.schema();
        let columns: Vec<usize> = (0..batch.num_columns())
            .filter(|&c| schema.field(c).name() != edgeflow::sink::REVISION_COLUMN)
            .collect();
        for i in 0..batch.num_rows() {
            let show = |c: usize| {
                array_value_to_string(batch.column(c), i).unwrap_or_else(|e| panic!("{e}"))
            };
            let values: Vec<String> = columns.iter().map(|&c| show(c)).collect();
            let key = (show(0), show(1));
            assert!(
                rows.insert(key.clone(), values).is_none(),
                "{key:?} twice in the latest files"
            );
        }
    }
    rows
}

/// A sketch query's input split over runs at other worker counts ends with the rows of
/// one run over the whole, sketch bytes included (each group holds fewer values in a
/// window than a slot keeps as values): the open windows' t-digest and HLL slots are
/// kept in the stream state as their values, not as sketches, and built from all of
/// them in one order when the window is written.
#[test]
fn a_sketch_query_over_consecutive_files_writes_the_bytes_of_one_run() {
    let sql = spec().sql().replace(
        " FROM TUMBLE(",
        ", APPROX_PERCENTILE(latency_ms, 0.99) AS p99, APPROX_DISTINCT(packets) AS kinds, \
         APPROX_DISTINCT(latency_ms) AS latencies FROM TUMBLE(",
    );
    assert!(sql.contains("latencies"), "{sql}");
    let config = config(12_000, 33);
    let all = lines(&config);
    let dir = tempdir();
    let whole = dir.path().join("whole");
    let path = dir.path().join("all.jsonl");
    write_lines(&path, &all);
    run(&sql, json_input(&path), &whole, 1, false);
    let want = rows_with_sketches(&whole.join("q"));
    assert!(want.len() > 100, "{} rows", want.len());
    let out = dir.path().join("out");
    let mut revised = 0;
    for (i, part) in split(&all, 3).iter().enumerate() {
        let path = dir.path().join(format!("part-{i}.jsonl"));
        write_lines(&path, part);
        revised += run(&sql, json_input(&path), &out, [2, 4, 1][i], false).superseded;
    }
    assert!(revised > 0, "no window spanned two files");
    let got = rows_with_sketches(&out.join("q"));
    assert_eq!(got.len(), want.len(), "rows");
    for (key, row) in &want {
        assert_eq!(got.get(key), Some(row), "{key:?}");
    }
}

/// Every worker flushes the windows still open when the input ends, one after the
/// other: a window flushed by one worker must not pass as closed at the next.
#[test]
fn hop_windows_left_open_by_several_workers_are_kept_whole() {
    let hop = Spec {
        size_ms: 90_000,
        slide_ms: 30_000,
        ..spec()
    };
    let config = config(12_000, 45);
    let all = lines(&config);
    for workers in [2, 4] {
        for attempt in 0..3 {
            let dir = tempdir();
            let out = dir.path().join("out");
            for (i, part) in split(&all, 2).iter().enumerate() {
                let path = dir.path().join(format!("part-{i}.jsonl"));
                write_lines(&path, part);
                run(&hop.sql(), json_input(&path), &out, workers, false);
            }
            let context = format!("{workers} workers, attempt {attempt}");
            assert_stream_equals(&out, &hop, &readings(&config), &context);
        }
    }
}

/// A window Top-N ranks each revision of a window whole: windows spanning two files are
/// ranked over all their readings.
#[test]
fn a_window_top_n_over_consecutive_files_equals_one_run() {
    let config = config(12_000, 29);
    let all = lines(&config);
    let dir = tempdir();
    let out = dir.path().join("out");
    for (i, part) in split(&all, 4).iter().enumerate() {
        let path = dir.path().join(format!("part-{i}.jsonl"));
        write_lines(&path, part);
        run(
            &spec().top_n_sql(3),
            json_input(&path),
            &out,
            [2, 1, 4, 2][i],
            false,
        );
    }
    let (rows, _) = oracle(&spec(), &readings(&config));
    assert_rows_eq(
        &read_rows(&out.join("q")),
        &top_n(&rows, 3),
        "top-3 over 4 files",
    );
}

#[test]
fn a_file_that_grew_is_resumed_where_it_stopped() {
    let config = config(9_000, 33);
    let all = lines(&config);
    let dir = tempdir();
    let path = dir.path().join("growing.jsonl");
    let out = dir.path().join("out");
    write_lines(&path, &all[..4_000]);
    run(&spec().sql(), json_input(&path), &out, 2, false);
    write_lines(&path, &all);
    let second = run(&spec().sql(), json_input(&path), &out, 1, false);
    assert!(second.resumed_at.is_some());
    assert_eq!(second.readings, 5_000);
    assert_stream_equals_oracle(&out, &readings(&config), "grown file");
}

#[test]
fn a_changed_query_with_open_windows_is_refused_until_fresh() {
    let config = config(3_000, 1);
    let dir = tempdir();
    let path = input_file(dir.path(), &config);
    let out = dir.path().join("out");
    let first = run(&spec().sql(), json_input(&path), &out, 1, false);
    assert!(first.kept_windows > 0);
    let other = spec().sql().replace("MAX(bytes_in)", "MIN(bytes_in)");
    let refused = try_run(&other, json_input(&path), &out, 1, false);
    match refused {
        Err(e) => assert!(e.to_string().contains("--fresh"), "{e}"),
        Ok(_) => panic!("a changed query resumed windows of the old one"),
    }
    let fresh = run(&other, json_input(&path), &out, 1, true);
    assert_eq!(fresh.readings, config.readings);
}

fn edgeflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeflow"))
}

fn write_query(dir: &Path) -> PathBuf {
    let path = dir.join("q.sql");
    std::fs::write(&path, spec().sql()).unwrap_or_else(|e| panic!("{e}"));
    path
}

#[test]
fn a_run_stopped_by_sigint_resumes_to_the_uninterrupted_answer() {
    let dir = tempdir();
    let (path, config) = big_input(dir.path(), 400_000, 17);
    let query = write_query(dir.path());
    let out = dir.path().join("out");
    let mut child = start_run(&query, &path, &out, "2");
    // Wait until windows are being written, i.e. the run is well under way.
    wait_for_files(&mut child, &out, 3);
    let killed = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(killed.success());
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(130), "exit code after SIGINT");

    assert_resumes(&query, &path, &out, "2", config.readings);
    assert_stream_equals_oracle(&out, &readings(&config), "interrupted and resumed");
}

/// Rows of the Parquet objects under `table/` in a target, without `revision`; and the
/// keys seen.
fn bucket_rows(
    objects: &std::collections::BTreeMap<String, Vec<u8>>,
    table: &str,
) -> Vec<Vec<edgeflow::types::Value>> {
    let dir = tempdir();
    for (key, bytes) in objects {
        if key.starts_with(&format!("{table}/")) && key.ends_with(".parquet") {
            let path = dir.path().join(key);
            std::fs::create_dir_all(path.parent().unwrap_or(dir.path()))
                .unwrap_or_else(|e| panic!("{e}"));
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    read_rows(&dir.path().join(table))
}

fn sum_of_readings(command: &mut Command) -> i64 {
    let out = command
        .args(["--format", "csv", "SELECT sum(readings) FROM q"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "edgeflow query: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sum in {}", String::from_utf8_lossy(&out.stdout)))
}

fn synced_run(
    moto: &super::s3_server::Moto,
    query: &Path,
    input: &Path,
    out: &Path,
    workers: &str,
    extra: &[&str],
) {
    let mut command = edgeflow();
    moto.env(&mut command);
    let output = command
        .arg("run")
        .arg(query)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args([
            "--workers",
            workers,
            "--chunk-bytes",
            "16384",
            "--sync",
            "s3://stream/edge-7",
        ])
        .args(extra)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "edgeflow run {input:?} -w {workers} {extra:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The bucket holds each window once, equal to the oracle, after consecutive files,
/// reruns with other worker counts and a `--fresh` recompute; `edgeflow query` agrees
/// locally and over the bucket; each bad line is one dead letter, locally and in the
/// bucket.
#[test]
fn consecutive_files_and_reruns_land_once_in_the_bucket() {
    let moto = super::s3_server::Moto::signed();
    moto.bucket("stream");
    let config = config(9_000, 44);
    let mut all = lines(&config);
    // One bad line in each third of the input.
    for at in [8_000, 5_000, 2_000] {
        all.insert(at, format!("{{broken line {at}"));
    }
    let dead_letters = |files: &mut dyn Iterator<Item = (String, Vec<u8>)>| -> usize {
        files
            .filter(|(name, _)| name.starts_with("_deadletter/q/deadletters-"))
            .map(|(_, bytes)| bytes.iter().filter(|&&b| b == b'\n').count())
            .sum()
    };
    let dir = tempdir();
    let query = write_query(dir.path());
    let out = dir.path().join("out");
    let mut files = Vec::new();
    for (i, part) in split(&all, 3).iter().enumerate() {
        let path = dir.path().join(format!("part-{i}.jsonl"));
        write_lines(&path, part);
        synced_run(&moto, &query, &path, &out, ["2", "1", "4"][i], &[]);
        files.push(path);
    }
    // Reruns with other worker counts feed nothing twice.
    synced_run(&moto, &query, &files[0], &out, "4", &[]);
    synced_run(&moto, &query, &files[2], &out, "1", &[]);

    let (want, want_late) = oracle(&spec(), &readings(&config));
    let total: i64 = want
        .iter()
        .map(|r| match r[3] {
            edgeflow::types::Value::BigInt(n) => n,
            _ => 0,
        })
        .sum();
    let check_bucket = |context: &str| {
        let objects = super::s3_server::target_objects("s3://stream/edge-7", &moto.options());
        assert_rows_eq(&bucket_rows(&objects, "q"), &want, context);
        assert_eq!(
            dead_letters(&mut objects.clone().into_iter()),
            3,
            "{context}: each bad line is one dead letter in the bucket"
        );
        let mut local = std::fs::read_dir(out.join("_deadletter/q"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = format!("_deadletter/q/{}", entry.file_name().to_str()?);
                Some((name, std::fs::read(entry.path()).ok()?))
            });
        assert_eq!(
            dead_letters(&mut local),
            3,
            "{context}: each bad line is one dead letter locally"
        );
        let mut late: Vec<Late> = bucket_rows(&objects, "q_late")
            .into_iter()
            .map(|r| match (&r[0], &r[1], &r[6]) {
                (
                    edgeflow::types::Value::Text(d),
                    edgeflow::types::Value::Timestamp(ts),
                    edgeflow::types::Value::Timestamp(start),
                ) => (d.clone(), ts / 1000, start / 1000),
                other => panic!("unexpected late row {other:?}"),
            })
            .collect();
        late.sort();
        assert_eq!(late, want_late, "{context}: late rows in the bucket");
        let mut local = edgeflow();
        local.arg("query").arg("--root").arg(&out);
        assert_eq!(
            sum_of_readings(&mut local),
            total,
            "{context}: edgeflow query, local"
        );
        let mut remote = edgeflow();
        moto.env(&mut remote)
            .arg("query")
            .args(["--remote", "s3://stream/edge-7"]);
        assert_eq!(
            sum_of_readings(&mut remote),
            total,
            "{context}: edgeflow query, bucket"
        );
    };
    check_bucket("three consecutive files");
    assert_stream_equals_oracle(&out, &readings(&config), "three consecutive files, local");

    // --fresh over the whole: every window written again supersedes what is there.
    let whole = dir.path().join("whole.jsonl");
    write_lines(&whole, &all);
    synced_run(&moto, &query, &whole, &out, "2", &["--fresh"]);
    check_bucket("after --fresh");
    let objects = super::s3_server::target_objects("s3://stream/edge-7", &moto.options());
    assert!(
        objects.keys().any(|k| k.starts_with("q_revisions/")),
        "superseded revisions are kept in the bucket"
    );
}

/// Writes a large generated input and returns its path and readings' config.
fn big_input(dir: &Path, readings: u64, seed: u64) -> (PathBuf, GeneratorConfig) {
    let mut config = config(readings, seed);
    config.devices = 50;
    let path = dir.join("big.jsonl");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut w = std::io::BufWriter::new(file);
    write_readings(&config, Format::Jsonl, TimestampFormat::Millis, &mut w)
        .unwrap_or_else(|e| panic!("{e}"));
    w.flush().unwrap_or_else(|e| panic!("{e}"));
    (path, config)
}

/// `edgeflow run` of `query` over `input` into `out`, unsynced, in 64 KiB chunks.
fn run_command(query: &Path, input: &Path, out: &Path, workers: &str) -> Command {
    let mut command = edgeflow();
    command
        .arg("run")
        .arg(query)
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(out)
        .args(["--workers", workers, "--no-sync", "--chunk-bytes", "65536"]);
    command
}

fn start_run(query: &Path, input: &Path, out: &Path, workers: &str) -> std::process::Child {
    run_command(query, input, out, workers)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `command` to its end, failing with its stderr unless it succeeds.
fn succeed(command: &mut Command) -> std::process::Output {
    let output = command.output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs again to the end and checks that the run resumed where the last one stopped,
/// reading fewer than all `readings`.
fn assert_resumes(query: &Path, input: &Path, out: &Path, workers: &str, readings: u64) {
    let output = succeed(run_command(query, input, out, workers).arg("--json"));
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("{e}"));
    let resumed_at = summary["resumed_at"].as_u64().unwrap_or_default();
    assert!(resumed_at > 0, "the run started over: {summary}");
    assert!(summary["readings"].as_u64().unwrap_or_default() < readings);
}

/// Waits until the run has committed `files` result files.
fn wait_for_files(child: &mut std::process::Child, out: &Path, files: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while parquet_files(&out.join("q")).len() < files {
        assert!(Instant::now() < deadline, "no result files after 120 s");
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended too early: {status}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_process_on_the_same_folder_is_refused_with_the_holders_pid() {
    let dir = tempdir();
    let (input, _) = big_input(dir.path(), 400_000, 8);
    let query = write_query(dir.path());
    let out = dir.path().join("out");
    let mut first = start_run(&query, &input, &out, "1");
    wait_for_files(&mut first, &out, 1);
    let second = run_command(&query, &input, &out, "1")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&second.stderr);
    let pid = first.id().to_string();
    first.kill().ok();
    first.wait().ok();
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&pid),
        "the error names the holder: {stderr}"
    );
}

#[test]
fn a_run_killed_with_sigkill_is_redone_by_the_next_with_another_worker_count() {
    let dir = tempdir();
    let (input, config) = big_input(dir.path(), 300_000, 12);
    let query = write_query(dir.path());
    let out = dir.path().join("out");
    let mut first = start_run(&query, &input, &out, "2");
    wait_for_files(&mut first, &out, 3);
    first.kill().unwrap_or_else(|e| panic!("{e}"));
    first.wait().ok();
    let status = start_run(&query, &input, &out, "1")
        .wait()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "the redo failed: {status}");
    assert_stream_equals_oracle(&out, &readings(&config), "killed, then redone at 1 worker");
}

#[test]
fn a_run_killed_after_a_checkpoint_resumes_from_it_and_equals_one_run() {
    let dir = tempdir();
    let (input, config) = big_input(dir.path(), 300_000, 13);
    let query = write_query(dir.path());
    let out = dir.path().join("out");
    let mut first = run_command(&query, &input, &out, "2")
        .args(["--checkpoint-every", "200ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    // A checkpoint has saved a position past the start: the run is killed after it.
    let state = out.join("_state/q/stream.json");
    let checkpointed = || {
        std::fs::read(&state)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .and_then(|v| v["inputs"][0]["position"].as_u64())
            .is_some_and(|p| p > 0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !checkpointed() {
        assert!(Instant::now() < deadline, "no checkpoint after 120 s");
        if let Ok(Some(status)) = first.try_wait() {
            panic!("the run ended before a checkpoint: {status}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    first.kill().unwrap_or_else(|e| panic!("{e}"));
    first.wait().ok();
    assert_resumes(&query, &input, &out, "4", config.readings);
    assert_stream_equals_oracle(
        &out,
        &readings(&config),
        "killed after a checkpoint, resumed at 4 workers",
    );
}

#[test]
fn a_run_in_many_checkpointed_legs_writes_what_one_run_writes() {
    let dir = tempdir();
    let (input, config) = big_input(dir.path(), 100_000, 14);
    let query = write_query(dir.path());
    let out = dir.path().join("out");
    // Legs of a few milliseconds: windows open across many checkpoints, kept unwritten
    // between legs, are written once, as one run writes them.
    succeed(run_command(&query, &input, &out, "2").args(["--checkpoint-every", "5ms"]));
    assert_stream_equals_oracle(&out, &readings(&config), "many checkpointed legs");
}

/// A query reading the files `in/*.jsonl` under `dir`, at `q.sql`.
fn inbox_query(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("in")).unwrap_or_else(|e| panic!("{e}"));
    let sql = spec().sql().replacen(
        "WITH (",
        "WITH (connector = 'file', path = 'in/*.jsonl', ",
        1,
    );
    let query = dir.join("q.sql");
    std::fs::write(&query, sql).unwrap_or_else(|e| panic!("{e}"));
    query
}

/// `edgeflow run` of `query` (which names its files) into `out` at 2 workers, unsynced.
fn run_over_inbox(query: &Path, out: &Path) -> Command {
    let mut command = edgeflow();
    command
        .arg("run")
        .arg(query)
        .arg("--output")
        .arg(out)
        .args(["--workers", "2", "--no-sync", "--chunk-bytes", "16384"]);
    command
}

/// The readings of each `--json` summary of a run over several files.
fn readings_of_summaries(stdout: &[u8]) -> u64 {
    let summaries: Vec<serde_json::Value> =
        serde_json::from_slice(stdout).unwrap_or_else(|e| panic!("{e}"));
    summaries
        .iter()
        .map(|s| s["readings"].as_u64().unwrap_or_default())
        .sum()
}

/// `--fresh` forgets what the folder kept once, at the start: a run over consecutive
/// files in checkpointed legs then reads every reading once and ends, where each leg
/// and each file used to start over (the run never ended, and the windows spanning two
/// files lost the first file's readings).
#[test]
fn a_fresh_run_starts_over_once_however_many_legs_and_files_it_takes() {
    let dir = tempdir();
    let config = config(30_000, 22);
    let query = inbox_query(dir.path());
    for (i, part) in split(&lines(&config), 3).iter().enumerate() {
        write_lines(&dir.path().join(format!("in/part-{i}.jsonl")), part);
    }
    let out = dir.path().join("out");
    succeed(&mut run_over_inbox(&query, &out));
    let summary_path = dir.path().join("fresh.json");
    let summary_file = std::fs::File::create(&summary_path).unwrap_or_else(|e| panic!("{e}"));
    let log_path = dir.path().join("fresh.log");
    let log_file = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
    let mut fresh = run_over_inbox(&query, &out)
        .args(["--fresh", "--checkpoint-every", "5ms", "--json"])
        .env("EDGEFLOW_LOG", "info")
        .stdout(summary_file)
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = fresh.try_wait().unwrap_or_else(|e| panic!("{e}")) {
            break status;
        }
        if Instant::now() > deadline {
            fresh.kill().ok();
            fresh.wait().ok();
            panic!("the --fresh run did not end in 120 s: it started over at every leg");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "the --fresh run failed: {status}: {log}");
    assert!(
        log.contains("Checkpoint:"),
        "no leg ended at a checkpoint: {log}"
    );
    assert_eq!(
        log.matches("--fresh: forgetting").count(),
        1,
        "the stream started over once: {log}"
    );
    let stdout = std::fs::read(&summary_path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        readings_of_summaries(&stdout),
        config.readings,
        "every reading read once"
    );
    assert_stream_equals_oracle(&out, &readings(&config), "--fresh over three files in legs");
}

/// A file read to its end and then removed is forgotten once the stream has passed it
/// (the folder's state does not grow with every file an inbox ever held); put back, it
/// is read as new input, and every reading it holds is late: no window changes.
#[test]
fn a_removed_file_is_forgotten_and_put_back_changes_no_window() {
    let dir = tempdir();
    let config = config(12_000, 23);
    let query = inbox_query(dir.path());
    let parts = split(&lines(&config), 3);
    let path = |i: usize| dir.path().join(format!("in/part-{i}.jsonl"));
    let out = dir.path().join("out");
    write_lines(&path(0), &parts[0]);
    write_lines(&path(1), &parts[1]);
    succeed(&mut run_over_inbox(&query, &out));
    std::fs::remove_file(path(0)).unwrap_or_else(|e| panic!("{e}"));
    write_lines(&path(2), &parts[2]);
    succeed(&mut run_over_inbox(&query, &out));
    let state = std::fs::read(out.join("_state/q/stream.json")).unwrap_or_else(|e| panic!("{e}"));
    let state: serde_json::Value = serde_json::from_slice(&state).unwrap_or_else(|e| panic!("{e}"));
    let kept: Vec<&str> = state["inputs"]
        .as_array()
        .map(|inputs| {
            inputs
                .iter()
                .filter_map(|i| i["key"]["path"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.iter().all(|p| !p.ends_with("part-0.jsonl")),
        "{kept:?}"
    );

    write_lines(&path(0), &parts[0]);
    let again = succeed(run_over_inbox(&query, &out).arg("--json"));
    assert_eq!(
        readings_of_summaries(&again.stdout),
        parts[0].len() as u64,
        "the file put back is read again, the others are not"
    );
    let (want, want_late) = oracle(&spec(), &readings(&config));
    assert_rows_eq(&read_rows(&out.join("q")), &want, "a removed file put back");
    assert_eq!(
        late_rows(&out.join("q_late")).len(),
        want_late.len() + parts[0].len(),
        "every reading of the file put back is late"
    );
}

#[test]
fn a_longer_generator_run_continues_a_shorter_one() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let short = config(3_000, 4);
    let long = config(7_000, 4);
    run(&spec().sql(), Input::Generator(short), &out, 2, false);
    let second = run(
        &spec().sql(),
        Input::Generator(long.clone()),
        &out,
        1,
        false,
    );
    assert_eq!(second.resumed_at, Some(3_000));
    assert_eq!(second.readings, 4_000);
    assert_stream_equals_oracle(&out, &readings(&long), "generator continued");
}

/// A window kept open at the end of a run whose `DOUBLE` sum overflowed holds an
/// infinity (a variance of such values NaN): the next run loads it like any other and
/// goes on, and the window's sum and spread are NULL and counted, its count exact.
#[test]
fn a_kept_window_whose_sum_overflowed_is_continued_by_the_next_run() {
    use edgeflow::types::Value;
    let dir = tempdir();
    let sql = "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, x DOUBLE) \
               WITH (event_time = 'ts', max_out_of_orderness = '5s');\n\
               SELECT device_id, window_start, window_end, COUNT(*) AS n, SUM(x) AS s, \
               STDDEV(x) AS sd FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) \
               GROUP BY device_id, window_start, window_end";
    let line = |ts: i64, x: &str| format!(r#"{{"device_id":"a","ts":{ts},"x":{x}}}"#);
    let t0 = 1_767_225_600_000;
    let (a, b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    write_lines(&a, &[line(t0 + 1_000, "1e308"), line(t0 + 2_000, "1e308")]);
    write_lines(&b, &[line(t0 + 3_000, "1"), line(t0 + 300_000, "2.5")]);
    let out = dir.path().join("out");
    run(sql, json_input(&a), &out, 1, false);
    let second = try_run(sql, json_input(&b), &out, 2, false)
        .unwrap_or_else(|e| panic!("the folder must go on after an overflowed sum: {e}"));
    assert_eq!(second.overflows, 2, "the first window's sum and stddev");
    let mut rows = read_rows(&out.join("q"));
    rows.sort_by_key(|row| format!("{:?}", row[1]));
    let cells: Vec<Vec<Value>> = rows.iter().map(|row| row[3..6].to_vec()).collect();
    assert_eq!(
        cells,
        vec![
            vec![Value::BigInt(3), Value::Null, Value::Null],
            vec![Value::BigInt(1), Value::Double(2.5), Value::Null],
        ]
    );
}

/// A file read while its writer is in the middle of a line: the line with no line
/// break yet that does not parse is left for the next run, which reads it whole once
/// the writer finished it. Nothing goes to the dead letters and no reading is lost; a
/// last line that parses without a line break is read at once.
#[test]
fn a_line_still_being_written_is_read_whole_by_the_next_run() {
    use std::io::Write as _;
    let dir = tempdir();
    let path = dir.path().join("growing.jsonl");
    let out = dir.path().join("out");
    let config = config(3_000, 41);
    let lines = lines(&config);
    let whole = lines.join("\n") + "\n";
    let cut = whole.len() / 2 + 17;
    assert_ne!(
        whole.as_bytes()[cut - 1],
        b'\n',
        "the cut falls inside a line"
    );
    let append = |bytes: &str| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(bytes.as_bytes()))
            .unwrap_or_else(|e| panic!("{e}"));
    };
    append(&whole[..cut]);
    let first = run(&spec().sql(), json_input(&path), &out, 2, false);
    let before = whole[..cut].matches('\n').count() as u64;
    assert_eq!(
        (first.readings, first.bad),
        (before, 0),
        "the whole lines only"
    );
    // The rest, without the file's last line break: that line parses, so it is read.
    append(&whole[cut..whole.len() - 1]);
    let second = run(&spec().sql(), json_input(&path), &out, 1, false);
    assert_eq!(
        (second.readings, second.bad),
        (lines.len() as u64 - before, 0),
        "the finished line and the rest"
    );
    assert_eq!(
        super::support::dead_letters(&out, "q"),
        "",
        "no dead letters"
    );
    assert_stream_equals_oracle(&out, &readings(&config), "a file read while it grew");
}
