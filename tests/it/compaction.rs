//! Compaction of closed hours: each becomes one file, locally and in the bucket, and
//! `edgeflow query` answers the same before, while and after it happens, also when a
//! pass is cut short between writing the hour file and removing what it replaces.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use edgeflow::outputs::{Outputs, QueryResult};
use edgeflow::sync::target::Target;

use super::s3_server::{Moto, assert_target_mirrors, target_objects};
use super::support::{canonical_run, parquet_files, read_rows, sort_rows};

/// Every reading once: the window rows' counts and the late rows.
const TOTALS: &str = "SELECT sum(n), sum(b) FROM (
        SELECT readings AS n, bytes_in AS b FROM device_traffic
        UNION ALL SELECT 1, bytes_in FROM device_traffic_late)";

const READINGS: i64 = 40_000;

fn edgeflow() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    command
        .env_remove("EDGEFLOW_SYNC")
        .env_remove("EDGEFLOW_NODE_NAME")
        .env_remove("FAILPOINTS");
    command
}

fn check(command: &mut Command, what: &str) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Readings over about two and a half hours, out of order, some late.
fn readings(dir: &Path) -> PathBuf {
    let input = dir.join("readings.jsonl");
    check(
        edgeflow()
            .args([
                "gen",
                "--devices",
                "40",
                "--readings",
                &READINGS.to_string(),
            ])
            .args([
                "--rate",
                "4.5",
                "--disorder-ms",
                "3000",
                "--late-fraction",
                "0.01",
            ])
            .args(["--seed", "11", "--output"])
            .arg(&input),
        "edgeflow gen",
    );
    input
}

/// `edgeflow run` of the canonical query at two workers, synced to `url`.
fn run(moto: &Moto, input: &Path, out: &Path, url: &str, extra: &[&str], failpoints: Option<&str>) {
    let mut command = synced_run(&moto.endpoint(), &moto.creds, input, out, url, extra);
    if let Some(points) = failpoints {
        command.env("FAILPOINTS", points);
    }
    check(&mut command, "edgeflow run");
}

/// `edgeflow run` of the canonical query over `input` into `out` on two workers,
/// syncing to `url` through the S3 endpoint at `endpoint`.
fn synced_run(
    endpoint: &str,
    creds: &super::s3_server::Creds,
    input: &Path,
    out: &Path,
    url: &str,
    extra: &[&str],
) -> Command {
    let mut command = edgeflow();
    super::s3_server::env_for(&mut command, endpoint, creds);
    canonical_run(&mut command, input, out)
        .args(["--sync", url])
        .args(extra);
    command
}

/// The sum of `bytes_in` over the input, computed from its lines.
fn bytes_in(input: &Path) -> i64 {
    std::fs::read_to_string(input)
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
        .map(|line| {
            let v: serde_json::Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            v["bytes_in"].as_i64().unwrap_or_else(|| panic!("{line}"))
        })
        .sum()
}

/// An input file with nothing in it, for a run that only compacts.
fn empty_input(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, b"").unwrap_or_else(|e| panic!("{e}"));
    path
}

/// Every hour folder of `out` holds one hour file or only window files (the last hour,
/// still open); the bucket mirrors `out`; both answer `want`.
fn assert_compacted_everywhere(moto: &Moto, out: &Path, url: &str, want: (i64, i64)) {
    let folders = hour_folders(out);
    assert!(
        folders
            .iter()
            .all(|f| f.len() == 1 || f.iter().all(|n| n.starts_with("window-"))),
        "a compacted hour keeps nothing else: {folders:?}"
    );
    assert!(
        folders
            .iter()
            .any(|f| f.len() == 1 && f[0].starts_with("hour-")),
        "{folders:?}"
    );
    assert_target_mirrors(out, url, &moto.options());
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(totals(&runtime, &local(out, &runtime)), want);
    assert_eq!(totals(&runtime, &remote(moto, url, &runtime)), want);
}

fn totals(runtime: &tokio::runtime::Runtime, outputs: &Outputs) -> (i64, i64) {
    let result: QueryResult = runtime
        .block_on(outputs.sql(TOTALS))
        .unwrap_or_else(|e| panic!("{TOTALS}: {e}"));
    let batch = &result.batches[0];
    let value = |c: usize| {
        let column = arrow::compute::cast(batch.column(c), &arrow::datatypes::DataType::Int64)
            .unwrap_or_else(|e| panic!("{e}"));
        column
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .map(|a| a.value(0))
            .unwrap_or_else(|| panic!("not integers"))
    };
    (value(0), value(1))
}

/// File names of the hour folders of the canonical query's result table.
fn hour_folders(root: &Path) -> Vec<Vec<String>> {
    let mut folders: std::collections::BTreeMap<PathBuf, Vec<String>> = Default::default();
    for file in parquet_files(&root.join("device_traffic")) {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        folders
            .entry(file.parent().map(Path::to_owned).unwrap_or_default())
            .or_default()
            .push(name);
    }
    folders.into_values().collect()
}

fn remote(moto: &Moto, url: &str, runtime: &tokio::runtime::Runtime) -> Outputs {
    let target = Target::open(url, &moto.options()).unwrap_or_else(|e| panic!("{e}"));
    runtime
        .block_on(Outputs::open(None, Some(&target)))
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

fn local(root: &Path, runtime: &tokio::runtime::Runtime) -> Outputs {
    runtime
        .block_on(Outputs::open(Some(root), None))
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
}

#[test]
fn compaction_while_queries_run_in_a_loop_never_changes_a_total() {
    let moto = Moto::signed();
    moto.bucket("compaction");
    let url = "s3://compaction/site";
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = readings(dir.path());
    let out = dir.path().join("out");
    run(&moto, &input, &out, url, &["--no-compaction"], None);
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let want = totals(&runtime, &local(&out, &runtime));
    assert_eq!(want, (READINGS, bytes_in(&input)), "every reading once");
    let before = hour_folders(&out);
    assert!(
        before.iter().filter(|f| f.len() > 1).count() >= 2,
        "hours of many windows: {before:?}"
    );

    // Readers of the local folder and of the bucket, in a loop while the next run
    // compacts: each stays on the `hour-…` step a while, so readers meet every state.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = [None, Some(url)]
        .into_iter()
        .map(|remote_url| {
            let (stop, out) = (stop.clone(), out.clone());
            let options = moto.options();
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
                let outputs = match remote_url {
                    Some(url) => {
                        let target = Target::open(url, &options).unwrap_or_else(|e| panic!("{e}"));
                        runtime
                            .block_on(Outputs::open(None, Some(&target)))
                            .unwrap_or_else(|e| panic!("{url}: {e}"))
                    }
                    None => local(&out, &runtime),
                };
                let queries = AtomicU64::new(0);
                while !stop.load(Ordering::SeqCst) {
                    assert_eq!(
                        totals(&runtime, &outputs),
                        want,
                        "{remote_url:?}: a total changed during compaction"
                    );
                    queries.fetch_add(1, Ordering::Relaxed);
                }
                queries.into_inner()
            })
        })
        .collect();
    let empty = empty_input(dir.path(), "nothing-new.jsonl");
    run(
        &moto,
        &empty,
        &out,
        url,
        &[],
        Some("compaction-retire=sleep(400)"),
    );
    stop.store(true, Ordering::SeqCst);
    for reader in readers {
        let queries = reader
            .join()
            .unwrap_or_else(|_| panic!("a reader failed (its message is above)"));
        assert!(queries > 0, "the reader ran no query");
    }

    let compacted = hour_folders(&out)
        .iter()
        .filter(|f| f.len() == 1 && f[0].starts_with("hour-"))
        .count();
    assert!(compacted >= 2, "{compacted} hours compacted");
    assert_compacted_everywhere(&moto, &out, url, want);
}

#[test]
fn a_compaction_cut_short_shows_no_row_twice_and_the_next_run_finishes_it() {
    let moto = Moto::signed();
    moto.bucket("compaction-cut");
    let url = "s3://compaction-cut/site";
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = readings(dir.path());
    let out = dir.path().join("out");
    // The hour files are written and synced; the files they replace stay everywhere.
    run(
        &moto,
        &input,
        &out,
        url,
        &[],
        Some("compaction-retire=return"),
    );
    let cut = hour_folders(&out);
    assert!(
        cut.iter()
            .any(|f| f.len() > 1 && f.iter().any(|n| n.starts_with("hour-"))),
        "hour files next to what they replace: {cut:?}"
    );
    let in_bucket = target_objects(url, &moto.options());
    assert!(in_bucket.keys().any(|k| k.contains("/hour-")));
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let want = (READINGS, bytes_in(&input));
    assert_eq!(totals(&runtime, &local(&out, &runtime)), want);
    assert_eq!(totals(&runtime, &remote(&moto, url, &runtime)), want);

    // The same input again: already consumed, nothing to read, but the pass that was
    // cut short is finished (a folder whose input is done may get no other run).
    run(&moto, &input, &out, url, &[], None);
    assert_compacted_everywhere(&moto, &out, url, want);
}

#[test]
fn a_folder_synced_before_is_compacted_only_by_a_run_that_syncs_it() {
    let moto = Moto::signed();
    moto.bucket("compaction-nosync");
    let url = "s3://compaction-nosync/site";
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = readings(dir.path());
    let out = dir.path().join("out");
    run(&moto, &input, &out, url, &["--no-compaction"], None);
    let written = hour_folders(&out);
    let empty = empty_input(dir.path(), "nothing-new.jsonl");
    // Without sync, deleting what the bucket holds would go unrecorded: nothing moves.
    let mut command = edgeflow();
    check(
        canonical_run(&mut command, &empty, &out).arg("--no-sync"),
        "edgeflow run --no-sync",
    );
    assert_eq!(hour_folders(&out), written);
    // Another input: one already consumed is not run again.
    let empty = empty_input(dir.path(), "nothing-new-either.jsonl");
    run(&moto, &empty, &out, url, &[], None);
    assert_compacted_everywhere(&moto, &out, url, (READINGS, bytes_in(&input)));
}

/// An hour is compacted while the bucket is out of reach, and compacted again (late
/// readings arrived in it) before the first hour file could be uploaded. When the
/// bucket is back, the files the first pass replaced leave it too: they wait for the
/// file that holds their rows now, not for the first hour file, which is never uploaded.
#[test]
fn an_hour_compacted_twice_during_an_outage_leaves_nothing_it_replaced_in_the_bucket() {
    let moto = Moto::signed();
    moto.bucket("compaction-outage");
    let url = "s3://compaction-outage/site";
    let forwarder = super::s3_server::Forwarder::start();
    forwarder.point_at(moto.port);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = readings(dir.path());
    let out = dir.path().join("out");
    let run_via_forwarder = |input: &Path, extra: &[&str]| {
        synced_run(&forwarder.endpoint(), &moto.creds, input, &out, url, extra)
            .output()
            .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"))
    };
    // Every file uploaded, nothing compacted.
    let first = run_via_forwarder(&input, &["--no-compaction"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // Readings of the first hour again: late now, each pass adds late files to closed
    // hours that it then compacts, with the bucket out of reach.
    let text = std::fs::read_to_string(&input).unwrap_or_else(|e| panic!("{e}"));
    let early: String = text.lines().take(200).map(|l| format!("{l}\n")).collect();
    forwarder.point_at(0);
    for pass in ["late-1.jsonl", "late-2.jsonl"] {
        let late = dir.path().join(pass);
        std::fs::write(&late, &early).unwrap_or_else(|e| panic!("{e}"));
        let outage = run_via_forwarder(&late, &["--sync-timeout", "1s"]);
        let stderr = String::from_utf8_lossy(&outage.stderr);
        assert!(!stderr.contains("panicked"), "{pass}: {stderr}");
        assert!(
            out.join("_state/device_traffic/stream.json").exists(),
            "{pass}: {stderr}"
        );
    }
    forwarder.point_at(moto.port);
    let back = run_via_forwarder(&empty_input(dir.path(), "nothing.jsonl"), &[]);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    let mut bytes = bytes_in(&input);
    for pass in ["late-1.jsonl", "late-2.jsonl"] {
        bytes += bytes_in(&dir.path().join(pass));
    }
    assert_compacted_everywhere(&moto, &out, url, (READINGS + 400, bytes));
}

/// Every row of the canonical result table, each column as text, sorted.
fn result_rows(root: &Path, remote_copy: Option<(&Moto, &str)>) -> Vec<Vec<String>> {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let target = remote_copy.map(|(moto, url)| {
        Target::open(url, &moto.options()).unwrap_or_else(|e| panic!("{url}: {e}"))
    });
    let outputs = runtime
        .block_on(Outputs::open(Some(root), target.as_ref()))
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let sql = "SELECT device_id, window_start, readings, bytes_in, revision FROM device_traffic";
    let result = runtime
        .block_on(outputs.sql(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut rows = Vec::new();
    for batch in &result.batches {
        let columns: Vec<arrow::array::ArrayRef> = batch
            .columns()
            .iter()
            .map(|c| {
                arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                columns
                    .iter()
                    .map(|c| {
                        arrow::util::display::array_value_to_string(c, row).unwrap_or_default()
                    })
                    .collect(),
            );
        }
    }
    rows.sort();
    rows
}

/// The first `share` of `input`'s lines, as a file of its own.
fn head_of(input: &Path, share: f64, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(input).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = text.lines().collect();
    let take = (lines.len() as f64 * share) as usize;
    let path = input.with_file_name(name);
    let head: String = lines[..take].iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, head).unwrap_or_else(|e| panic!("{e}"));
    path
}

/// A fresh run writes again some windows of an hour an earlier run compacted, and stops
/// before that hour closes. Without compaction the hour file and the new revisions'
/// files sit side by side, and `edgeflow query` shows each window once, as last written
/// (it showed the hour file's rows of those windows as well: every rewritten window
/// counted twice). The next compaction pass compacts that hour again, though it is not
/// closed, so plain readers of the files see each window once too, and the rows it
/// replaces join the history (`<query>_revisions`).
#[test]
fn a_window_written_again_in_a_compacted_hour_shows_only_its_new_rows() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = readings(dir.path());
    let again = head_of(&input, 0.5, "again.jsonl");
    let (out, first, alone) = (
        dir.path().join("out"),
        dir.path().join("first"),
        dir.path().join("alone"),
    );
    for (file, folder, extra) in [
        (&input, &out, &[][..]),
        (&again, &out, &["--fresh", "--no-compaction"][..]),
        (&input, &first, &[][..]),
        (&again, &alone, &[][..]),
    ] {
        let mut command = edgeflow();
        check(
            canonical_run(&mut command, file, folder)
                .arg("--no-sync")
                .args(extra),
            "edgeflow run",
        );
    }
    assert!(
        hour_folders(&out).iter().any(|names| {
            names.iter().any(|n| n.starts_with("hour-"))
                && names.iter().any(|n| n.ends_with("-r1.parquet"))
        }),
        "no hour file next to a window written again: {:?}",
        hour_folders(&out)
    );
    // The latest view: the fresh run's rows where it wrote the window, the first run's
    // elsewhere.
    let fresh: Vec<Vec<String>> = result_rows(&alone, None);
    let rewritten: std::collections::BTreeSet<&String> = fresh.iter().map(|r| &r[1]).collect();
    let mut want: Vec<Vec<String>> = result_rows(&first, None)
        .into_iter()
        .filter(|r| !rewritten.contains(&r[1]))
        .chain(fresh.iter().map(|r| {
            let mut r = r.clone();
            r[4] = "1".into();
            r
        }))
        .collect();
    want.sort();
    assert_eq!(result_rows(&out, None), want);
    // A run with nothing new compacts the open hour again: the files alone hold the
    // latest view.
    let mut command = edgeflow();
    check(
        canonical_run(
            &mut command,
            &empty_input(dir.path(), "nothing.jsonl"),
            &out,
        )
        .arg("--no-sync"),
        "edgeflow run (compaction only)",
    );
    assert!(
        hour_folders(&out)
            .iter()
            .all(|names| names.len() == 1 || names.iter().all(|n| n.starts_with("window-"))),
        "an hour file with files next to it: {:?}",
        hour_folders(&out)
    );
    assert_eq!(result_rows(&out, None), want);
    let alone_raw = read_rows(&alone.join("device_traffic"));
    let rewritten: std::collections::BTreeSet<String> =
        alone_raw.iter().map(|r| format!("{:?}", r[1])).collect();
    let mut raw_want: Vec<_> = read_rows(&first.join("device_traffic"))
        .into_iter()
        .filter(|r| !rewritten.contains(&format!("{:?}", r[1])))
        .chain(alone_raw)
        .collect();
    sort_rows(&mut raw_want);
    assert_eq!(read_rows(&out.join("device_traffic")), raw_want);
    // The history keeps the first run's rows of every window written again, also of
    // those its hour file held.
    let mut history_want: Vec<_> = read_rows(&first.join("device_traffic"))
        .into_iter()
        .filter(|r| rewritten.contains(&format!("{:?}", r[1])))
        .collect();
    sort_rows(&mut history_want);
    assert_eq!(
        read_rows(&out.join("device_traffic_revisions")),
        history_want,
        "the history of the windows written again"
    );
}

/// The bucket is out of reach while a run writes a new revision of the window the run
/// before left open (uploaded as `r0`) and compacts its hour: the local hour file holds
/// `r1`, the bucket still `r0`. Local disk and bucket queried together show that window
/// once (they showed both revisions until the uplink came back).
#[test]
fn local_and_bucket_together_show_a_window_compacted_during_an_outage_once() {
    let moto = Moto::signed();
    moto.bucket("compaction-union");
    let url = "s3://compaction-union/site";
    let forwarder = super::s3_server::Forwarder::start();
    forwarder.point_at(moto.port);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = readings(dir.path());
    let text = std::fs::read_to_string(&input).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = text.lines().collect();
    let split = lines.len() * 2 / 5;
    let parts = [
        ("first.jsonl", &lines[..split]),
        ("rest.jsonl", &lines[split..]),
    ];
    let out = dir.path().join("out");
    for (name, part) in parts {
        let file = dir.path().join(name);
        let body: String = part.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&file, body).unwrap_or_else(|e| panic!("{e}"));
        let outcome = synced_run(
            &forwarder.endpoint(),
            &moto.creds,
            &file,
            &out,
            url,
            &["--sync-timeout", "1s"],
        )
        .output()
        .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"));
        let stderr = String::from_utf8_lossy(&outcome.stderr);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        // The uplink goes down after the first run.
        forwarder.point_at(0);
    }
    let local = result_rows(&out, None);
    assert!(
        local.iter().any(|r| r[4] == "1"),
        "the second run wrote no window again"
    );
    assert_eq!(result_rows(&out, Some((&moto, url))), local);
}
