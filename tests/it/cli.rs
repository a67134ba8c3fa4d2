//! The `edgeflow` command as a user meets it: exit codes, one-line errors, gen, stdin.

use std::io::Write;
use std::process::{Command, Stdio};

fn edgeflow() -> Command {
    static TARGET: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    // Runs here sync to the default target; keep it out of the working tree, and empty
    // it once per test run: objects an earlier build wrote under the same keys with
    // other bytes would be refused as conflicts.
    let target = TARGET.get_or_init(|| {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli-sync");
        std::fs::remove_dir_all(&dir).ok();
        dir
    });
    command.env("EDGEFLOW_SYNC", format!("file://{}", target.display()));
    command
}

fn canonical() -> String {
    format!("{}/queries/device_traffic.sql", env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_input_unwritable_output_and_bad_query_exit_nonzero_with_one_line() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let (code, _, err) = output(
        edgeflow()
            .args([
                "run",
                &canonical(),
                "--input",
                "/nonexistent/readings.jsonl",
                "--output",
            ])
            .arg(&out),
    );
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot open input /nonexistent/readings.jsonl"),
        "{err}"
    );

    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = output(
        edgeflow()
            .args(["run", &canonical(), "--readings", "10", "--output"])
            .arg(blocker.join("sub")),
    );
    assert_eq!(code, 2);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not writable"), "{err}");

    let bad = dir.path().join("bad.sql");
    std::fs::write(&bad, "CREATE TABLE r (ts TIMESTAMP) WITH (event_time = 'ts');\nSELECT nope FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY window_start").unwrap_or_else(|e| panic!("{e}"));
    let (code, _, err) = output(edgeflow().arg("run").arg(&bad));
    assert_eq!(code, 2);
    assert_eq!(
        err.trim(),
        format!(
            "error: {}:2:8: unknown column `nope`; r has: ts",
            bad.display()
        )
    );

    let (code, _, err) = output(edgeflow().arg("check").arg(dir.path().join("missing.sql")));
    assert_eq!(code, 2);
    assert!(err.contains("missing.sql: cannot read query file"), "{err}");
    // A query that cannot be read (mistyped path, wrong SQL, empty folder) must not
    // leave an output folder (with its `_logs/`) behind that looks like a node that ran.
    let empty = dir.path().join("no-queries");
    std::fs::create_dir(&empty).unwrap_or_else(|e| panic!("{e}"));
    for command in ["run", "serve"] {
        for (query, says) in [
            (
                dir.path().join("missing.sql"),
                "missing.sql: cannot read query file",
            ),
            (bad.clone(), "bad.sql:2:8: unknown column `nope`"),
            (empty.clone(), "no-queries"),
        ] {
            let out = dir.path().join(format!("never-{command}"));
            let (code, _, err) = output(
                edgeflow()
                    .arg(command)
                    .arg(&query)
                    .arg("--output")
                    .arg(&out),
            );
            assert_eq!(code, 2, "{command} {}: {err}", query.display());
            assert!(err.contains(says), "{err}");
            assert!(!out.exists(), "{command} made {}", out.display());
        }
    }

    let (code, _, err) = output(edgeflow().args([
        "run",
        &canonical(),
        "--readings",
        "10",
        "--chunk-bytes",
        "1KiB",
    ]));
    assert_eq!(code, 2);
    assert!(err.contains("a chunk must be at least 4KiB"), "{err}");
}

#[test]
fn gen_is_deterministic_and_stdin_gives_the_same_result_as_a_file() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let a = dir.path().join("a.jsonl");
    let gen_args = [
        "gen",
        "--devices",
        "30",
        "--readings",
        "3000",
        "--rate",
        "50",
        "--seed",
        "9",
        "--output",
    ];
    assert_eq!(output(edgeflow().args(gen_args).arg(&a)).0, 0);
    let (code, stdout, _) = output(edgeflow().args(&gen_args[..gen_args.len() - 1]));
    assert_eq!(code, 0);
    let file = std::fs::read_to_string(&a).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(file, stdout);
    assert_eq!(file.lines().count(), 3000);

    let from_file = dir.path().join("from_file");
    let (code, summary, err) = output(
        edgeflow()
            .args(["run", &canonical(), "--workers", "2", "--input"])
            .arg(&a)
            .arg("--output")
            .arg(&from_file),
    );
    assert_eq!(code, 0, "{err}");
    assert!(summary.contains("readings     3000"), "{summary}");

    let from_stdin = dir.path().join("from_stdin");
    let mut child = edgeflow()
        .args([
            "run",
            &canonical(),
            "--workers",
            "2",
            "--chunk-bytes",
            "4KiB",
            "--input",
            "-",
            "--output",
        ])
        .arg(&from_stdin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(file.as_bytes()))
        .transpose()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    let rows_file = super::support::read_rows(&from_file.join("device_traffic"));
    let rows_stdin = super::support::read_rows(&from_stdin.join("device_traffic"));
    assert!(!rows_file.is_empty());
    assert_eq!(rows_file, rows_stdin);
}

#[test]
fn check_prints_the_plan() {
    let (code, out, _) = output(edgeflow().arg("check").arg(canonical()));
    assert_eq!(code, 0);
    for expected in [
        "event time  ts  (watermark = max seen - 5s)",
        "window      TUMBLE size 1m",
        "keys        device_id",
        "AVG(latency_ms) -> DOUBLE",
        "avg_latency_ms       DOUBLE",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in\n{out}");
    }
}

#[test]
fn bench_json_names_every_figure() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let json = dir.path().join("bench.json");
    let (code, _, err) = output(
        edgeflow()
            .current_dir(dir.path())
            .args(["bench", "--query", &canonical(), "--devices", "100"])
            .args([
                "--readings",
                "20000",
                "--workers",
                "1,2",
                "--runs",
                "1",
                "--json",
            ])
            .arg(&json),
    );
    assert_eq!(code, 0, "{err}");
    let text = std::fs::read_to_string(&json).unwrap_or_else(|e| panic!("{e}"));
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert!(
        report["cost_ratio"].as_f64().is_some_and(|r| r > 0.0),
        "{report}"
    );
    let engine = report["engine"].as_array().cloned().unwrap_or_default();
    assert_eq!(engine.len(), 2, "{report}");
    assert_eq!(engine[0]["speedup"].as_f64(), Some(1.0), "{report}");
    assert!(
        engine[1]["speedup"].as_f64().is_some_and(|s| s > 0.0),
        "{report}"
    );
    for run in &engine {
        let latency = &run["close_to_durable"];
        let (p50, p99, max) = (
            latency["p50_ms"].as_f64(),
            latency["p99_ms"].as_f64(),
            latency["max_ms"].as_f64(),
        );
        assert!(
            matches!((p50, p99, max), (Some(a), Some(b), Some(c)) if a <= b && b <= c),
            "{run}"
        );
    }
}

/// `edgeflow` for runs with `--no-sync`, which wins over the target in the environment.
fn unsynced() -> Command {
    edgeflow()
}

#[test]
fn no_sync_wins_over_a_target_in_the_environment_but_not_over_the_flag() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let target = dir.path().join("target");
    let run = |extra: &[&str]| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        command
            .env("EDGEFLOW_SYNC", format!("file://{}", target.display()))
            .arg("run")
            .arg(canonical())
            .args(["--readings", "2000", "--devices", "10", "--output"])
            .arg(dir.path().join("out"))
            .args(extra);
        output(&mut command)
    };
    let (code, _, err) = run(&["--no-sync"]);
    assert_eq!(code, 0, "--no-sync with EDGEFLOW_SYNC set: {err}");
    assert!(!target.exists(), "--no-sync still synced to EDGEFLOW_SYNC");
    let (code, _, err) = run(&["--no-sync", "--sync", "file:///tmp/x"]);
    assert_eq!(
        code, 2,
        "--sync with --no-sync must be a usage error: {err}"
    );
    let (code, _, err) = run(&[]);
    assert_eq!(code, 0, "{err}");
    assert!(target.is_dir(), "EDGEFLOW_SYNC was not used as the target");
}

#[test]
fn several_queries_in_one_run_write_what_each_writes_alone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = dir.path().join("readings.jsonl");
    let (code, _, err) = output(
        edgeflow()
            .args([
                "gen",
                "--devices",
                "200",
                "--readings",
                "30000",
                "--rate",
                "400",
            ])
            .args([
                "--disorder-ms",
                "4000",
                "--late-fraction",
                "0.01",
                "--seed",
                "9",
            ])
            .arg("--output")
            .arg(&input),
    );
    assert_eq!(code, 0, "{err}");
    let queries = format!("{}/queries", env!("CARGO_MANIFEST_DIR"));
    let traffic = format!("{queries}/device_traffic.sql");
    let talkers = format!("{queries}/heavy_talkers_5m.sql");
    for workers in ["1", "2", "4"] {
        let together = dir.path().join(format!("together-{workers}"));
        let (code, stdout, err) = output(
            unsynced()
                .args([
                    "run",
                    &traffic,
                    &talkers,
                    "--no-sync",
                    "--json",
                    "--workers",
                    workers,
                ])
                .arg("--input")
                .arg(&input)
                .arg("--output")
                .arg(&together),
        );
        assert_eq!(code, 0, "{err}");
        let summaries: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        let names: Vec<&str> = summaries
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["query"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["device_traffic", "heavy_talkers_5m"], "{stdout}");
        let alone = dir.path().join(format!("alone-{workers}"));
        for query in [&traffic, &talkers] {
            let (code, _, err) = output(
                unsynced()
                    .args(["run", query, "--no-sync", "--workers", workers])
                    .arg("--input")
                    .arg(&input)
                    .arg("--output")
                    .arg(&alone),
            );
            assert_eq!(code, 0, "{err}");
        }
        let (together, alone) = (
            super::support::parquet_snapshot(&together),
            super::support::parquet_snapshot(&alone),
        );
        assert!(
            together.keys().any(|k| k.starts_with("heavy_talkers_5m/")),
            "{:?}",
            together.keys()
        );
        assert!(
            together == alone,
            "{workers} worker(s): files differ: together {:?}, alone {:?}",
            together.keys(),
            alone.keys()
        );
    }
    // Standard input is read once: it feeds one query.
    let (code, _, err) = output(edgeflow().args(["run", &traffic, &talkers, "--input", "-"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("standard input"), "{err}");
}
