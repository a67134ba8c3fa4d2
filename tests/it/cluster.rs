//! Cluster mode: one run's workers spread over processes on 127.0.0.1, exchanging data
//! over TCP. The processes' output folders together hold exactly the rows of a plain
//! sequential pass (and so of one process), for two and three processes at several
//! worker counts, over out-of-order and late input, across two runs of one stream; a
//! killed process ends the others with an error naming it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgeflow::decode::Format;
use edgeflow::source::generator::{GeneratorConfig, Reading, TimestampFormat, write_readings};
use edgeflow::types::Value;

use crate::oracle::{Late, Spec, late_rows, oracle};
use crate::s3_server::{Moto, free_port, local_outputs, target_objects, wait_until};
use crate::support::{assert_rows_eq, dead_letters, read_rows, sort_rows};

/// Far beyond any run here; reached only by a hang.
const HANG: Duration = Duration::from_secs(120);

/// A hostfile of `processes` free ports on 127.0.0.1.
fn hostfile(dir: &Path, processes: usize) -> (PathBuf, Vec<String>) {
    let addresses: Vec<String> = (0..processes)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let path = dir.join("hosts");
    std::fs::write(&path, addresses.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
    (path, addresses)
}

/// Process `process` of the cluster in `hosts`, running `query` into `out`; `extra`
/// says what it reads.
fn start(
    query: &Path,
    out: &Path,
    workers: usize,
    hosts: &Path,
    (process, processes): (usize, usize),
    extra: &[&str],
    moto: Option<&Moto>,
) -> Child {
    command(moto)
        .arg("run")
        .arg(query)
        .arg("-o")
        .arg(out)
        .args([
            "-w",
            &workers.to_string(),
            "--chunk-bytes",
            "8192",
            "--json",
        ])
        .args(["--processes", &processes.to_string()])
        .args(["--process", &process.to_string()])
        .arg("--hostfile")
        .arg(hosts)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting edgeflow: {e}"))
}

/// An edgeflow command, with the variables that point it at `moto` if given.
fn command(moto: Option<&Moto>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    if let Some(moto) = moto {
        moto.env(&mut command);
    }
    command
}

/// Waits for `child`, failing the test if it outlives [`HANG`].
fn finish(mut child: Child, what: &str) -> Output {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > HANG => {
                child.kill().ok();
                panic!("{what} did not end within {HANG:?}");
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("{what}: {e}"),
        }
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// Runs a whole cluster of `processes` x `workers` over `input`, each process into
/// `outs[i]`, and checks every process succeeded; returns each process's summary.
fn run_cluster(
    query: &Path,
    input: &Path,
    outs: &[PathBuf],
    workers: usize,
    dir: &Path,
    sync: Option<(&Moto, &str)>,
) -> Vec<serde_json::Value> {
    run_cluster_with(query, input, outs, workers, dir, sync, &[])
}

/// [`run_cluster`] with more arguments for every process.
fn run_cluster_with(
    query: &Path,
    input: &Path,
    outs: &[PathBuf],
    workers: usize,
    dir: &Path,
    sync: Option<(&Moto, &str)>,
    more: &[&str],
) -> Vec<serde_json::Value> {
    let (hosts, _) = hostfile(dir, outs.len());
    let input = input.to_string_lossy().into_owned();
    let mut extra = vec!["--input", &input];
    extra.extend_from_slice(more);
    match sync {
        Some((_, url)) => extra.extend(["--sync", url]),
        None => extra.push("--no-sync"),
    }
    let children: Vec<Child> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            start(
                query,
                out,
                workers,
                &hosts,
                (i, outs.len()),
                &extra,
                sync.map(|(moto, _)| moto),
            )
        })
        .collect();
    let mut summaries = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let what = format!("process {i} of {} x {workers}", outs.len());
        let output = finish(child, &what);
        assert!(
            output.status.success(),
            "{what} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        summaries.push(
            serde_json::from_slice(&output.stdout)
                .unwrap_or_else(|e| panic!("{what}: summary is not JSON: {e}")),
        );
    }
    summaries
}

/// One figure of each process's summary.
fn each(summaries: &[serde_json::Value], figure: &str) -> Vec<u64> {
    summaries
        .iter()
        .map(|s| s[figure].as_u64().unwrap_or(0))
        .collect()
}

/// The result rows and late rows of every process's folder together.
fn union(outs: &[PathBuf]) -> (Vec<Vec<Value>>, Vec<Late>) {
    let mut rows = Vec::new();
    let mut late = Vec::new();
    for out in outs {
        rows.extend(read_rows(&out.join("q")));
        late.extend(late_rows(&out.join("q_late")));
    }
    sort_rows(&mut rows);
    late.sort();
    (rows, late)
}

/// A folder holding the query of `spec` (`q.sql`) and the readings of `config`
/// (`in.jsonl`).
fn case(spec: &Spec, config: &GeneratorConfig) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let query = dir.path().join("q.sql");
    std::fs::write(&query, spec.sql()).unwrap_or_else(|e| panic!("{e}"));
    let input = dir.path().join("in.jsonl");
    append(&input, config);
    (dir, query, input)
}

fn readings_of(config: &GeneratorConfig) -> Vec<Reading> {
    (0..config.readings).map(|i| config.reading(i)).collect()
}

fn append(path: &Path, config: &GeneratorConfig) {
    let mut bytes = Vec::new();
    write_readings(config, Format::Jsonl, TimestampFormat::Millis, &mut bytes)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{e}"));
    file.write_all(&bytes).unwrap_or_else(|e| panic!("{e}"));
}

/// Two runs of one stream on a cluster of `processes`, at each of `workers` per
/// process: the first over a file (over an hour of event time), the second over what
/// was appended to it (a bad line, then readings that overlap the first run's, some of
/// them late). After each
/// run the processes' folders together equal the sequential answer and one process's
/// output; the bad line is reported once, at its line, by process 0.
fn cluster_equals_one_process(processes: usize, workers: &[usize]) {
    let spec = Spec::minute();
    let first = GeneratorConfig {
        devices: 60,
        readings: 6_000,
        rate: 1.5,
        disorder_ms: 8_000,
        late_fraction: 0.02,
        seed: 11,
        ..GeneratorConfig::default()
    };
    let second = GeneratorConfig {
        readings: 3_000,
        seed: 12,
        start_ms: first.start_ms + 3_900_000,
        ..first.clone()
    };
    let (want_first, want_first_late) = oracle(&spec, &readings_of(&first));
    let mut all = readings_of(&first);
    all.extend(readings_of(&second));
    let (want_all, want_all_late) = oracle(&spec, &all);
    for &w in workers {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let query = dir.path().join("q.sql");
        std::fs::write(&query, spec.sql()).unwrap_or_else(|e| panic!("{e}"));
        let input = dir.path().join("in.jsonl");
        append(&input, &first);
        let outs: Vec<PathBuf> = (0..processes)
            .map(|i| dir.path().join(format!("out{i}")))
            .collect();
        let context = format!("{processes} processes x {w} workers");

        let read = each(
            &run_cluster(&query, &input, &outs, w, dir.path(), None),
            "readings",
        );
        let (rows, late) = union(&outs);
        assert_rows_eq(&rows, &want_first, &format!("{context}, first run"));
        assert_eq!(late, want_first_late, "{context}, first run: late rows");
        // Every process read a share of the file, and the shares make the whole.
        assert!(read.iter().all(|&r| r > 0), "{context}: shares {read:?}");
        assert_eq!(read.iter().sum::<u64>(), first.readings, "{context}");
        // One process over the same input, for comparison.
        let single = dir.path().join("single");
        let status = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .arg("run")
            .arg(&query)
            .arg("--input")
            .arg(&input)
            .arg("-o")
            .arg(&single)
            .args(["-w", "2", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.status.success(), "one process failed");
        assert_rows_eq(
            &rows,
            &read_rows(&single.join("q")),
            &format!("{context} against one process"),
        );

        // The stream goes on: a bad line and more readings, some late.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&input)
            .and_then(|mut f| f.write_all(b"{\"device_id\": oops\n"))
            .unwrap_or_else(|e| panic!("{e}"));
        append(&input, &second);
        run_cluster(&query, &input, &outs, w, dir.path(), None);
        let (rows, late) = union(&outs);
        assert_rows_eq(&rows, &want_all, &format!("{context}, second run"));
        assert_eq!(late, want_all_late, "{context}, second run: late rows");
        // The second run began by compacting the hours the first one closed.
        let compacted = outs.iter().any(|out| {
            crate::support::parquet_files(&out.join("q"))
                .iter()
                .any(|f| {
                    f.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("hour-"))
                })
        });
        assert!(compacted, "{context}: no hour was compacted");
        let letters = dead_letters(&outs[0], "q");
        let bad_line = first.readings + 1;
        assert!(
            letters.contains(&format!("\"line\":{bad_line}")),
            "{context}: the bad line is reported at line {bad_line}: {letters}"
        );
        for out in &outs[1..] {
            assert!(
                !out.join("_deadletter").exists(),
                "{context}: only process 0 writes dead letters"
            );
        }

        // A folder of the cluster goes on only with the same cluster.
        let alone = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .arg("run")
            .arg(&query)
            .arg("--input")
            .arg(&input)
            .arg("-o")
            .arg(&outs[0])
            .args(["-w", "1", "--no-sync"])
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&alone.stderr);
        assert_eq!(alone.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("process 0 of {processes}"))
                && stderr.contains("this run is a single process"),
            "{stderr}"
        );
    }
}

#[test]
fn two_processes_give_the_rows_of_one_at_1_and_2_workers_each() {
    cluster_equals_one_process(2, &[1, 2]);
}

#[test]
fn three_processes_give_the_rows_of_one_at_1_and_2_workers_each() {
    cluster_equals_one_process(3, &[1, 2]);
}

/// Two processes sync their folders to one prefix of one bucket: no object of one is
/// an object of the other, and the prefix holds exactly both folders' files, byte for
/// byte, whose rows are the sequential answer.
#[test]
fn two_processes_sync_to_one_prefix_without_conflicts() {
    let moto = Moto::signed();
    moto.bucket("cluster");
    let url = "s3://cluster/site-a";
    let spec = Spec::minute();
    let config = GeneratorConfig {
        devices: 40,
        readings: 5_000,
        rate: 20.0,
        disorder_ms: 8_000,
        late_fraction: 0.02,
        seed: 5,
        ..GeneratorConfig::default()
    };
    let (dir, query, input) = case(&spec, &config);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .and_then(|mut f| f.write_all(b"not a reading\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let outs: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("out{i}"))).collect();
    run_cluster(&query, &input, &outs, 2, dir.path(), Some((&moto, url)));

    let (rows, late) = union(&outs);
    let (want, want_late) = oracle(&spec, &readings_of(&config));
    assert_rows_eq(&rows, &want, "two processes synced");
    assert_eq!(late, want_late, "late rows");
    let mut local = local_outputs(&outs[0]);
    for (key, bytes) in local_outputs(&outs[1]) {
        assert!(
            local.insert(key.clone(), bytes).is_none(),
            "both processes wrote {key}"
        );
    }
    assert!(local.keys().any(|k| k.starts_with("_deadletter/")));
    // Log names carry the process, so two hosts with the same pid cannot collide.
    for process in 0..2 {
        let marker = format!("-p{process}-");
        assert!(
            local
                .keys()
                .any(|k| k.starts_with("_logs/edgeflow-") && k.contains(&marker)),
            "no log of process {process}: {:?}",
            local
                .keys()
                .filter(|k| k.starts_with("_logs/"))
                .collect::<Vec<_>>()
        );
    }
    let remote = target_objects(url, &moto.options());
    let keys =
        |m: &std::collections::BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        keys(&remote),
        keys(&local),
        "{url} holds both folders' files"
    );
    assert!(
        remote == local,
        "{url} differs from the folders byte for byte"
    );
}

/// A cluster's stream started again with `--fresh` at another worker count, over more
/// readings of the same minutes: a window's owner may now be the other process, whose
/// folder never held it. It writes the window past every revision either folder
/// recorded, so no name is written twice with other rows, and the bucket's latest
/// revisions are the sequential answer. (It wrote revision 0 again: two files of one
/// name, the second refused by the bucket, and the run failed.)
#[test]
fn a_fresh_cluster_at_another_worker_count_writes_every_window_under_a_new_name() {
    let moto = Moto::signed();
    moto.bucket("refresh");
    let url = "s3://refresh/site";
    let spec = Spec::minute();
    let config = GeneratorConfig {
        devices: 30,
        readings: 3_000,
        rate: 10.0,
        disorder_ms: 4_000,
        seed: 11,
        ..GeneratorConfig::default()
    };
    let (dir, query, input) = case(&spec, &config);
    let outs: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("out{i}"))).collect();
    let sync = Some((&moto, url));
    run_cluster(&query, &input, &outs, 1, dir.path(), sync);
    let first: Vec<_> = outs.iter().map(|o| local_outputs(o)).collect();
    // More readings of the same minutes: every window's rows change.
    let more = GeneratorConfig { seed: 12, ..config };
    append(&input, &more);
    run_cluster_with(&query, &input, &outs, 2, dir.path(), sync, &["--fresh"]);

    // Every window file name, wherever it is now, holds the bytes it was first written
    // with.
    let mut named = std::collections::BTreeMap::new();
    for (key, bytes) in first.into_iter().flatten() {
        named.insert(key, bytes);
    }
    for out in &outs {
        for (key, bytes) in local_outputs(out) {
            let window = |k: &str| k.rsplit('/').next().unwrap_or_default().to_owned();
            let name = window(&key);
            if !name.starts_with("window-") {
                continue;
            }
            let earlier = named
                .iter()
                .find(|(k, _)| window(k) == name)
                .map(|(_, b)| b.clone());
            match earlier {
                Some(earlier) => {
                    assert!(earlier == bytes, "{name} was written twice with other rows")
                }
                None => {
                    named.insert(key, bytes);
                }
            }
        }
    }
    // The latest view: each window's highest revision. (The revision the other process
    // wrote stays beside it: see the README's cluster section.)
    let mut remote = target_objects(url, &moto.options());
    let latest = |key: &str| {
        let (window, revision) = key.rsplit_once("-r")?;
        let revision: u32 = revision.strip_suffix(".parquet")?.parse().ok()?;
        Some((window.rsplit('/').next()?.to_owned(), revision))
    };
    let mut highest = std::collections::BTreeMap::new();
    for key in remote.keys().filter(|k| k.starts_with("q/")) {
        if let Some((window, revision)) = latest(key) {
            let r = highest.entry(window).or_insert(revision);
            *r = (*r).max(revision);
        }
    }
    remote.retain(|key, _| {
        !key.starts_with("q/") || latest(key).is_some_and(|(w, r)| highest.get(&w) == Some(&r))
    });
    let bucket = dir.path().join("bucket");
    for (key, bytes) in &remote {
        let path = bucket.join(key);
        std::fs::create_dir_all(path.parent().unwrap_or(&bucket)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    }
    let mut readings = readings_of(&config);
    readings.extend(readings_of(&more));
    let (want, _) = oracle(&spec, &readings);
    assert_rows_eq(
        &read_rows(&bucket.join("q")),
        &want,
        "the bucket after the fresh run",
    );
}

/// Process 1 dies between the processes' commits: process 0 committed the first run,
/// process 1 did not (its files are there, its state is not). The next run finds them
/// one commit apart: process 0 goes back, the two do the first run's input again with
/// the second's, and the rows are the sequential answer, none twice.
#[test]
fn a_process_one_commit_ahead_of_its_peer_goes_back() {
    let spec = Spec::minute();
    let first = GeneratorConfig {
        devices: 30,
        readings: 4_000,
        rate: 20.0,
        disorder_ms: 8_000,
        late_fraction: 0.02,
        seed: 21,
        ..GeneratorConfig::default()
    };
    let second = GeneratorConfig {
        readings: 2_000,
        seed: 22,
        start_ms: first.start_ms + 150_000,
        ..first.clone()
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let query = dir.path().join("q.sql");
    std::fs::write(&query, spec.sql()).unwrap_or_else(|e| panic!("{e}"));
    let input = dir.path().join("in.jsonl");
    append(&input, &first);
    let outs: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("out{i}"))).collect();
    run_cluster(&query, &input, &outs, 1, dir.path(), None);
    // Process 1's commit never happened.
    let state = outs[1].join("_state/q");
    for name in ["stream.json", "stream.prev.json"] {
        std::fs::remove_file(state.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    append(&input, &second);
    let read = each(
        &run_cluster(&query, &input, &outs, 1, dir.path(), None),
        "readings",
    );
    let mut all = readings_of(&first);
    all.extend(readings_of(&second));
    assert_eq!(
        read.iter().sum::<u64>(),
        all.len() as u64,
        "the first run's input is read again"
    );
    let (want, want_late) = oracle(&spec, &all);
    let (rows, late) = union(&outs);
    assert_rows_eq(&rows, &want, "after going back");
    assert_eq!(late, want_late, "late rows after going back");
}

/// SESSION windows under an allowed lateness, over two runs of one stream on two
/// processes of two workers: the folders' latest views together are the sequential
/// sessionisation, and the processes' late readings and corrections add up to its counts.
/// A correction can bridge two sessions written by the first run; each key has one owner
/// in the cluster, so the revision that replaces them is in that owner's folder.
#[test]
fn sessions_with_corrections_over_two_runs_of_a_cluster_equal_the_sequential_answer() {
    let (gap, ooo, allowed) = (5_000, 2_000, 90_000);
    let input = crate::sessions::readings(41, 40, 200);
    let at = input.len() * 2 / 5;
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let query = dir.path().join("q.sql");
    std::fs::write(&query, crate::sessions::sql_allowing(gap, ooo, allowed))
        .unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("in.jsonl");
    let outs: Vec<PathBuf> = (0..2).map(|i| dir.path().join(format!("out{i}"))).collect();
    let (mut late, mut corrections) = (0, 0);
    for (run, part) in [&input[..at], &input[at..]].into_iter().enumerate() {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{e}"));
        file.write_all(crate::traffic::jsonl(part).as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let summaries = run_cluster(&query, &path, &outs, 2, dir.path(), None);
        late += each(&summaries, "late").iter().sum::<u64>();
        corrections += each(&summaries, "corrections").iter().sum::<u64>();
        let seen = &input[..at.max(run * input.len())];
        let (want, want_late, want_corrections) =
            crate::sessions::oracle_allowing(seen, gap, ooo, allowed);
        let mut rows: Vec<Vec<Value>> = outs.iter().flat_map(|o| read_rows(&o.join("q"))).collect();
        sort_rows(&mut rows);
        let context = format!("run {}", run + 1);
        assert_rows_eq(&rows, &want, &context);
        assert_eq!(late, want_late, "{context}: late readings");
        assert_eq!(corrections, want_corrections, "{context}: corrections");
    }
    assert!(corrections > 0, "the input makes corrections");
}

/// Three processes over a long generated input; process 1 is killed. The others stop
/// with an error naming it, and commit nothing.
#[test]
fn a_killed_process_ends_the_others_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let query = dir.path().join("q.sql");
    std::fs::write(&query, Spec::minute().sql()).unwrap_or_else(|e| panic!("{e}"));
    let (hosts, addresses) = hostfile(dir.path(), 3);
    let outs: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("out{i}"))).collect();
    // Far more readings than run before the kill.
    let mut children: Vec<Option<Child>> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            Some(start(
                &query,
                out,
                1,
                &hosts,
                (i, 3),
                &["--readings", "500000000", "--no-sync"],
                None,
            ))
        })
        .collect();
    // Killed once every process has written a window: the cluster is under way.
    wait_until("every process writing windows", HANG, || {
        outs.iter()
            .all(|out| !crate::support::parquet_files(&out.join("q")).is_empty())
    });
    let mut victim = children[1].take().unwrap_or_else(|| panic!("process 1"));
    victim.kill().unwrap_or_else(|e| panic!("kill: {e}"));
    victim.wait().ok();
    for i in [0, 2] {
        let child = children[i].take().unwrap_or_else(|| panic!("process {i}"));
        let output = finish(child, &format!("process {i}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "process {i}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "process 1 of the cluster ({}) is gone",
                addresses[1]
            )),
            "process {i}: {stderr}"
        );
        assert!(
            !outs[i].join("_state/q/stream.json").exists(),
            "process {i} committed a run its cluster did not finish"
        );
    }
}

/// Processes that would compute different things refuse to start, naming what differs.
#[test]
fn processes_that_disagree_refuse_to_start() {
    disagreeing_processes_refuse_to_start(2);
}

/// Of three processes, the last differs: it still greets process 1 after process 0
/// refused it, so process 1 stops with the difference too. (Process 1, which agrees
/// with process 0, waited the whole connect timeout for process 2 and exited 1.)
#[test]
fn three_processes_one_of_which_differs_all_refuse_to_start() {
    disagreeing_processes_refuse_to_start(3);
}

/// `processes` processes, the last running another query: every one exits 2 naming the
/// difference.
fn disagreeing_processes_refuse_to_start(processes: usize) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let query = dir.path().join("q.sql");
    std::fs::write(&query, Spec::minute().sql()).unwrap_or_else(|e| panic!("{e}"));
    let other = dir.path().join("other");
    std::fs::create_dir_all(&other).unwrap_or_else(|e| panic!("{e}"));
    let hopping = Spec {
        slide_ms: 30_000,
        ..Spec::minute()
    };
    std::fs::write(other.join("q.sql"), hopping.sql()).unwrap_or_else(|e| panic!("{e}"));
    let (hosts, _) = hostfile(dir.path(), processes);
    let children: Vec<Child> = (0..processes)
        .map(|i| {
            let file = if i + 1 == processes {
                other.join("q.sql")
            } else {
                query.clone()
            };
            start(
                &file,
                &dir.path().join(format!("out{i}")),
                1,
                &hosts,
                (i, processes),
                &["--readings", "1000", "--no-sync"],
                None,
            )
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let output = finish(child, &format!("process {i}"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "process {i}: {stderr}");
        assert!(
            stderr.contains("differs in query q"),
            "process {i}: {stderr}"
        );
    }
}
