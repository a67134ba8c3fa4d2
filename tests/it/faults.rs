//! Injected faults (`src/fault.rs`, named in `FAILPOINTS`) through the real binary: a
//! disk that fills up at any moment ends the run with its error at any worker count,
//! never a hang; it leaves no half-written file, and the next run completes the answer.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use edgeflow::decode::Format;
use edgeflow::source::generator::{GeneratorConfig, Reading, TimestampFormat, write_readings};

use super::live::written;
use super::oracle::{Late, Spec, late_rows, oracle};
use super::s3_server::{Moto, assert_target_mirrors, free_port, wait_until};
use super::support::{assert_rows_eq, read_rows};
use edgeflow::types::Value;

/// Far beyond a run of this input (a few seconds); reached only by a hang.
const HANG: Duration = Duration::from_secs(180);

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn spec() -> Spec {
    Spec::minute()
}

fn config() -> GeneratorConfig {
    GeneratorConfig {
        devices: 50,
        readings: 60_000,
        rate: 100.0,
        disorder_ms: 4_000,
        late_fraction: 0.01,
        seed: 21,
        ..GeneratorConfig::default()
    }
}

/// `edgeflow run` in 16 KiB chunks (hundreds of them, so readers are mid-input when a
/// commit fails), its stderr in `<out>.stderr`; fails the test if it outlives [`HANG`].
fn run(dir: &Path, out: &Path, workers: usize, failpoints: Option<&str>) -> (ExitStatus, String) {
    run_with(dir, out, workers, failpoints, |c| {
        c.arg("--no-sync");
    })
}

/// [`run`] with its sync set by `more`.
fn run_with(
    dir: &Path,
    out: &Path,
    workers: usize,
    failpoints: Option<&str>,
    more: impl FnOnce(&mut Command),
) -> (ExitStatus, String) {
    let stderr = out.with_extension("stderr");
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    command
        .arg("run")
        .arg(dir.join("q.sql"))
        .arg("--input")
        .arg(dir.join("in.jsonl"))
        .arg("--output")
        .arg(out)
        .args(["--chunk-bytes", "16384", "--workers"])
        .arg(workers.to_string())
        .stdout(Stdio::null())
        .stderr(ok(File::create(&stderr)));
    more(&mut command);
    match failpoints {
        Some(f) => command.env("FAILPOINTS", f),
        None => command.env_remove("FAILPOINTS"),
    };
    let mut child = ok(command.spawn());
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Some(status) = ok(child.try_wait()) {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            child.wait().ok();
            panic!("{workers} workers, FAILPOINTS={failpoints:?}: the run hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status, ok(std::fs::read_to_string(&stderr)))
}

/// Every file under `dir` whose name ends in `.inprogress`.
fn in_progress(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".inprogress") {
                found.push(path);
            }
        }
    }
    found
}

/// Writes the generated input and the query into `dir`; returns the oracle's rows and
/// late rows.
fn prepare(dir: &Path) -> (Vec<Vec<Value>>, Vec<Late>) {
    let config = config();
    let mut w = BufWriter::new(ok(File::create(dir.join("in.jsonl"))));
    ok(write_readings(
        &config,
        Format::Jsonl,
        TimestampFormat::Millis,
        &mut w,
    ));
    ok(w.flush());
    ok(std::fs::write(dir.join("q.sql"), spec().sql()));
    let readings: Vec<Reading> = (0..config.readings).map(|i| config.reading(i)).collect();
    oracle(&spec(), &readings)
}

#[test]
fn a_disk_that_fills_up_ends_the_run_cleanly_and_the_next_run_completes_it() {
    let dir = ok(tempfile::tempdir());
    let (want, want_late) = prepare(dir.path());
    // The disk fills after `ok` file commits (results, late rows, state): at once, with
    // windows half written, and near the end.
    for workers in [1, 2, 4] {
        for ok_commits in [0, 3, 8] {
            let context = format!("{workers} workers, full after {ok_commits} commits");
            let out = dir.path().join(format!("out-{workers}-{ok_commits}"));
            let failpoints = format!("commit-write={ok_commits}*off->return(ENOSPC)");
            let (status, stderr) = run(dir.path(), &out, workers, Some(&failpoints));
            assert_eq!(status.code(), Some(1), "{context}: {stderr}");
            assert!(
                stderr.contains("storage space"),
                "{context}: the error names the full disk: {stderr}"
            );
            assert_eq!(in_progress(&out), Vec::<PathBuf>::new(), "{context}");
            // What was committed reads whole.
            read_rows(&out.join("q"));
            read_rows(&out.join("q_late"));
            let (status, stderr) = run(dir.path(), &out, 3 - workers.min(2), None);
            assert!(status.success(), "{context}: the next run: {stderr}");
            assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
            assert_eq!(late_rows(&out.join("q_late")), want_late, "{context}");
        }
    }
}

/// The sync journal's disk fills up: the sync halts with an error naming the journal,
/// the journal keeps only whole records, and the next run ships every file once, so the
/// bucket ends up equal to the local folder.
#[test]
fn a_journal_append_that_fails_halts_the_sync_and_the_next_run_ships_every_file_once() {
    let dir = ok(tempfile::tempdir());
    let (want, _) = prepare(dir.path());
    let moto = Moto::signed();
    moto.bucket("journal");
    // Appends are a file's record, then its upload starting and ending: the journal
    // fills before the first file, after some uploads, and well into the run.
    for ok_appends in [0, 5, 40] {
        let context = format!("journal full after {ok_appends} appends");
        let out = dir.path().join(format!("out-journal-{ok_appends}"));
        let url = format!("s3://journal/j{ok_appends}");
        let with_sync = |c: &mut Command| {
            c.arg("--sync").arg(&url);
            moto.env(c);
        };
        let failpoints = format!("journal-append={ok_appends}*off->return(ENOSPC)");
        let (status, stderr) = run_with(dir.path(), &out, 2, Some(&failpoints), with_sync);
        assert_eq!(status.code(), Some(1), "{context}: {stderr}");
        assert!(
            stderr.contains("journal.jsonl") && stderr.contains("storage space"),
            "{context}: the error names the journal and the full disk: {stderr}"
        );
        let journal = ok(std::fs::read_to_string(out.join("_sync/journal.jsonl")));
        for line in journal.lines() {
            ok(serde_json::from_str::<serde_json::Value>(line));
        }
        let (status, stderr) = run_with(dir.path(), &out, 2, None, with_sync);
        assert!(status.success(), "{context}: the next run: {stderr}");
        assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
        assert_target_mirrors(&out, &url, &moto.options());
    }
}

/// The result rows under `dir` without their sketches and revision, sorted: what a
/// query answers, whatever bytes its sketches were written with.
fn rows_without_sketches(dir: &Path) -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = super::support::read_batches(dir)
        .iter()
        .flat_map(|b| {
            let schema = b.schema();
            let keep: Vec<usize> = (0..b.num_columns())
                .filter(|&c| {
                    let name = schema.field(c).name();
                    !name.ends_with("_sketch") && name != edgeflow::sink::REVISION_COLUMN
                })
                .collect();
            let b = ok(b.project(&keep));
            (0..b.num_rows())
                .map(|i| super::support::row(&b, i))
                .collect::<Vec<_>>()
        })
        .collect();
    super::support::sort_rows(&mut rows);
    rows
}

/// A run of a sketch query dies after some windows were uploaded, and is done again at
/// another worker count. Sketch bytes depend on the worker count, so those windows come
/// out with other bytes: they are written as the next revision rather than under a name
/// the bucket already holds, so the sync meets no conflict, the run succeeds, and the
/// bucket ends up equal to the local folder, with the rows of a run that never died.
#[test]
fn a_sketch_query_redone_at_another_worker_count_writes_new_revisions_without_conflicts() {
    let dir = ok(tempfile::tempdir());
    prepare(dir.path());
    let sql = spec().sql().replace(
        " FROM TUMBLE(",
        ", APPROX_PERCENTILE(latency_ms, 0.9) AS p90, APPROX_DISTINCT(packets) AS kinds FROM TUMBLE(",
    );
    assert!(sql.contains("p90"), "{sql}");
    ok(std::fs::write(dir.path().join("q.sql"), &sql));
    let clean = dir.path().join("clean");
    let (status, stderr) = run(dir.path(), &clean, 2, None);
    assert!(status.success(), "{stderr}");
    let moto = Moto::signed();
    moto.bucket("redo");
    // Each worker's late rows are committed first, then windows.
    for (first, again, commits) in [(1, 2, 5), (4, 1, 12)] {
        let context = format!("died at {first} workers, done again at {again}");
        let out = dir.path().join(format!("out-{first}-{again}"));
        let url = format!("s3://redo/w{first}");
        let with_sync = |c: &mut Command| {
            c.arg("--sync").arg(&url);
            moto.env(c);
        };
        // Dies after `commits` commits, windows among them, uploaded before it ends.
        let failpoints = format!("commit-write={commits}*off->return(EIO)");
        let (status, stderr) = run_with(dir.path(), &out, first, Some(&failpoints), with_sync);
        assert_eq!(status.code(), Some(1), "{context}: {stderr}");
        let (status, stderr) = run_with(dir.path(), &out, again, None, with_sync);
        assert!(status.success(), "{context}: {stderr}");
        assert!(!stderr.contains("conflict"), "{context}: {stderr}");
        assert!(
            super::support::revisions(&out.join("q")).contains(&1),
            "{context}: a window that came out other than before is its next revision"
        );
        assert_eq!(
            rows_without_sketches(&out.join("q")),
            rows_without_sketches(&clean.join("q")),
            "{context}"
        );
        assert_target_mirrors(&out, &url, &moto.options());
    }
}

/// Deleting checkpointed log segments fails (a read-only or failing disk): the node
/// goes on taking pushes, keeps the segments, and a kill -9 then replays from the
/// checkpoint, not from the oldest segment kept, so nothing is counted twice; once
/// deleting works again the next checkpoints remove them.
#[test]
fn log_segments_that_cannot_be_deleted_stay_without_counting_anything_twice() {
    use crate::live::{
        Expected, LiveNode, PUSH_QUERY, add, http, line, now_ms, started, write_query,
    };
    let dir = ok(tempfile::tempdir());
    // No idle timeout: the watermark must not follow the clock while the node is down,
    // or the pushes after the restart would be late.
    let query = write_query(
        dir.path(),
        "waltrunc",
        &PUSH_QUERY.replace(", idle_timeout = '1s'", ""),
    );
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let out = dir.path().join("out");
    let args = [
        "serve",
        query.to_str().unwrap_or_default(),
        "--no-sync",
        "--workers",
        "2",
        "--checkpoint-every",
        "200ms",
        "--listen",
        &listen,
        "--output",
        out.to_str().unwrap_or_default(),
    ];
    let segments = || {
        std::fs::read_dir(out.join("_state/_wal/readings"))
            .map(|d| d.flatten().count())
            .unwrap_or(0)
    };
    // Readings 10 ms apart from an hour ago: however many batches the waits take, none
    // is ahead of the clock.
    let t0 = now_ms() - 3_600_000;
    let mut expected = Expected::new();
    let mut sent = 0i64;
    let mut push_batch = |expected: &mut Expected| {
        let body: String = (sent..sent + 10)
            .map(|i| line(&format!("d{}", i % 3), t0 + i * 10, i))
            .collect();
        let key = format!("batch-{sent}");
        let (status, _, answer) = http(
            port,
            "POST",
            "/ingest/readings",
            &[("Idempotency-Key", key.as_str())],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        for i in sent..sent + 10 {
            add(expected, &format!("d{}", i % 3), t0 + i * 10, i);
        }
        sent += 10;
    };
    {
        let mut node = LiveNode::spawn(
            dir.path(),
            port,
            &args,
            &[("FAILPOINTS", "wal-truncate=return(EIO)")],
        );
        node.wait_healthy(|| started(port));
        // Batches until checkpoints have rotated the log and failed to delete what
        // they covered.
        wait_until("a failed segment deletion", Duration::from_secs(60), || {
            push_batch(&mut expected);
            node.stderr()
                .contains("Write-ahead log segments not deleted")
                && segments() >= 3
        });
        // kill -9 with the segments still there.
    }
    let kept = segments();
    let mut node = LiveNode::spawn(dir.path(), port, &args, &[]);
    node.wait_healthy(|| started(port));
    wait_until(
        "the kept segments to be deleted",
        Duration::from_secs(60),
        || {
            push_batch(&mut expected);
            segments() <= 2
        },
    );
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(kept >= 3, "{kept} segments were kept while deleting failed");
    assert_eq!(written(&out, "waltrunc"), expected);
}

/// A full disk under the write-ahead log: the push is refused with `503` naming it (the
/// batch is not acknowledged, so nothing is lost), the resend is taken, and the log
/// keeps no trace of the failed write.
#[test]
fn a_full_disk_under_the_write_ahead_log_refuses_the_push_and_the_resend_counts_once() {
    use crate::live::{Expected, LiveNode, PUSH_QUERY, add, http, line, now_ms, write_query};
    let dir = ok(tempfile::tempdir());
    let query = write_query(
        dir.path(),
        "walfull",
        &PUSH_QUERY.replace(", idle_timeout = '1s'", ""),
    );
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--workers",
            "2",
        ],
        // The first write to the log finds the disk full.
        &[("FAILPOINTS", "wal-write=1*return(ENOSPC)")],
    );
    let t0 = now_ms() - 60_000;
    let mut expected = Expected::new();
    let batch = |first: i64| -> String {
        (first..first + 5)
            .map(|i| line(&format!("d{}", i % 2), t0 + i * 700, i))
            .collect()
    };
    let push = |key: &str, body: &str| {
        let (status, _, answer) = http(
            node.port,
            "POST",
            "/ingest/readings",
            &[("Idempotency-Key", key)],
            body.as_bytes(),
        );
        (status, String::from_utf8_lossy(&answer).into_owned())
    };
    let first = batch(0);
    let (status, answer) = push("first", &first);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer.contains("no storage space") && answer.contains("_wal"),
        "{answer}"
    );
    let (status, answer) = push("first", &first);
    assert_eq!(status, 200, "the resend: {answer}");
    let second = batch(5);
    let (status, answer) = push("second", &second);
    assert_eq!(status, 200, "{answer}");
    for i in 0..10 {
        add(&mut expected, &format!("d{}", i % 2), t0 + i * 700, i);
    }
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(written(&dir.path().join("out"), "walfull"), expected);
}
