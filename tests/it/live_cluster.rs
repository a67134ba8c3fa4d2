//! A live node on two processes (timely's cluster mode on 127.0.0.1): readings pushed
//! to either process are counted once, in the folder of the process whose worker owns
//! their key, across checkpoints led by process 0, a stop asked of the other process, a
//! restart that revises the kept windows, and a process killed mid-stream. Polled
//! devices are split between the processes (each polled by one), and an MQTT topic is
//! one shared subscription whose messages each reach one process.

use std::path::{Path, PathBuf};

use crate::live::{
    Expected, LiveNode, add, http, line, now_ms, push_query_without_idle, started, tempdir,
    write_query, written,
};
use crate::live_mqtt::{Broker, ingest, publisher};
use crate::live_poll::{Fleet, Rows, expected_rows, poll_query, wait_served, written_rows};
use crate::s3_server::{free_port, wait_until};
use crate::support::read_rows;

/// Windows stay open until the node stops (ten minutes of allowed out-of-orderness and
/// no idle timeout): what a run writes is every reading pushed to it, in any order.
fn query(dir: &Path) -> PathBuf {
    write_query(
        dir,
        "pushed",
        &push_query_without_idle().replace(
            "max_out_of_orderness = '1s'",
            "max_out_of_orderness = '10m'",
        ),
    )
}

/// The two processes of a cluster, each serving `query` into `out<i>` under `dir`.
struct Pair {
    nodes: Vec<LiveNode>,
}

impl Pair {
    fn start(dir: &Path, query: &Path, workers: usize) -> Pair {
        Pair::start_checkpointing(dir, query, workers, "1s")
    }

    /// The same, checkpointing `every` (a duration).
    fn start_checkpointing(dir: &Path, query: &Path, workers: usize, every: &str) -> Pair {
        let hosts = dir.join("hosts");
        if !hosts.exists() {
            let lines: Vec<String> = (0..2)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect();
            std::fs::write(&hosts, lines.join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
        }
        let mut nodes: Vec<LiveNode> = (0..2)
            .map(|process| {
                let port = free_port();
                let listen = format!("127.0.0.1:{port}");
                let out = dir.join(format!("out{process}"));
                let (workers, process) = (workers.to_string(), process.to_string());
                let args = [
                    "serve",
                    query.to_str().unwrap_or_default(),
                    "--no-sync",
                    "--workers",
                    &workers,
                    "--checkpoint-every",
                    every,
                    "--listen",
                    &listen,
                    "--output",
                    out.to_str().unwrap_or_default(),
                    "--processes",
                    "2",
                    "--process",
                    &process,
                    "--hostfile",
                    hosts.to_str().unwrap_or_default(),
                ];
                LiveNode::spawn(dir, port, &args, &[])
            })
            .collect();
        for node in &mut nodes {
            let port = node.port;
            node.wait_healthy(|| started(port));
        }
        Pair { nodes }
    }

    /// Pushes `batch` to process `process`; the readings count once it answers 200.
    fn push(&self, process: usize, batch: &[(String, i64, i64)], expected: &mut Expected) {
        let mut body = String::new();
        for (device, ts, bytes) in batch {
            body.push_str(&line(device, *ts, *bytes));
        }
        let (status, _, reply) = http(
            self.nodes[process].port,
            "POST",
            "/ingest/readings",
            &[],
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
        for (device, ts, bytes) in batch {
            add(expected, device, *ts, *bytes);
        }
    }

    /// Asks process 1 to stop: process 0 stops the cluster, and both end well.
    fn stop_through_process_one(mut self) {
        let (Some(mut second), Some(mut first)) = (self.nodes.pop(), self.nodes.pop()) else {
            panic!("two processes");
        };
        second.send("TERM");
        let (code, stdout) = first.wait();
        assert_eq!(code, Some(0), "process 0: {stdout}");
        let (code, stdout) = second.wait();
        assert_eq!(code, Some(0), "process 1: {stdout}");
    }
}

/// Readings of 12 devices over six ten-second windows, in a scrambled order.
fn readings(base_ms: i64, count: usize, seed: u64) -> Vec<(String, i64, i64)> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 33
    };
    (0..count)
        .map(|_| {
            let device = format!("dev-{}", next() % 12);
            let ts = base_ms + (next() % 60_000) as i64;
            (device, ts, (next() % 5_000) as i64)
        })
        .collect()
}

/// Both processes' latest rows together; a window in both folders is a defect.
fn union(dir: &Path) -> Expected {
    let mut all = Expected::new();
    for process in 0..2 {
        for (key, value) in written(&dir.join(format!("out{process}")), "pushed") {
            assert!(
                all.insert(key.clone(), value).is_none(),
                "window {key:?} written by both processes"
            );
        }
    }
    all
}

/// Runs committed (checkpoints included) by process `process`'s query: what the
/// processes compare when they start.
fn commits(dir: &Path, process: usize) -> u64 {
    let path = dir
        .join(format!("out{process}"))
        .join("_state/pushed/stream.json");
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .and_then(|state| state["commits"].as_u64())
        .unwrap_or(0)
}

#[test]
fn two_serving_processes_count_every_pushed_reading_once_across_checkpoints_stops_and_restarts() {
    for workers in [1, 2] {
        let dir = tempdir();
        let query = query(dir.path());
        let base = (now_ms() - 600_000).div_euclid(10_000) * 10_000;
        let mut expected = Expected::new();
        let pair = Pair::start(dir.path(), &query, workers);
        let batches: Vec<_> = (0..8).map(|i| readings(base, 40, 7 + i)).collect();
        for (i, batch) in batches.iter().enumerate().take(4) {
            pair.push(i % 2, batch, &mut expected);
        }
        // Process 0 leads a checkpoint on both before the rest arrives.
        wait_until(
            "a checkpoint on both processes",
            std::time::Duration::from_secs(60),
            || commits(dir.path(), 0) >= 1 && commits(dir.path(), 1) >= 1,
        );
        for (i, batch) in batches.iter().enumerate().skip(4) {
            pair.push(i % 2, batch, &mut expected);
        }
        // Each process knows its place; the queries are the ones both started with.
        for (process, node) in pair.nodes.iter().enumerate() {
            let (_, _, body) = http(node.port, "GET", "/api/v1/node", &[], b"");
            let status: serde_json::Value =
                serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            assert_eq!(
                status["cluster"],
                serde_json::json!({"process": process, "processes": 2, "leads": process == 0})
            );
            let (code, _, body) = http(
                node.port,
                "POST",
                "/api/v1/queries/pushed/stop?windows=keep",
                &[],
                b"",
            );
            assert_eq!(code, 409, "{}", String::from_utf8_lossy(&body));
            assert!(
                String::from_utf8_lossy(&body).contains("of a cluster"),
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
        pair.stop_through_process_one();
        assert_eq!(union(dir.path()), expected, "{workers} workers per process");

        // The next start resumes the kept windows: readings for them make revisions.
        let pair = Pair::start(dir.path(), &query, workers);
        for (i, seed) in [101, 102, 103].into_iter().enumerate() {
            pair.push(i % 2, &readings(base, 30, seed), &mut expected);
        }
        pair.stop_through_process_one();
        assert_eq!(
            union(dir.path()),
            expected,
            "{workers} workers per process, second run"
        );
    }
}

#[test]
fn a_killed_serving_process_stops_the_other_naming_it_and_a_restart_loses_no_acknowledged_reading()
{
    // Process 1, then process 0 (which leads the steps).
    for victim in [1, 0] {
        let dir = tempdir();
        let query = query(dir.path());
        let base = (now_ms() - 600_000).div_euclid(10_000) * 10_000;
        let mut expected = Expected::new();
        let mut pair = Pair::start(dir.path(), &query, 2);
        for i in 0..6 {
            pair.push(i % 2, &readings(base, 40, 200 + i as u64), &mut expected);
            if i == 2 {
                wait_until(
                    "a checkpoint on both processes",
                    std::time::Duration::from_secs(60),
                    || commits(dir.path(), 0) >= 1 && commits(dir.path(), 1) >= 1,
                );
            }
        }
        let mut killed = pair.nodes.remove(victim);
        let mut survivor = pair.nodes.remove(0);
        killed.send("KILL");
        killed.wait();
        let (code, _) = survivor.wait();
        assert_ne!(code, Some(0), "a process must fail when its peer dies");
        let stderr = survivor.stderr();
        assert!(
            stderr.contains(&format!("process {victim}")),
            "the error names the dead process {victim}: {stderr}"
        );
        // Every acknowledged reading is in a write-ahead log or a checkpoint: a restart
        // replays what the checkpoints do not hold.
        let pair = Pair::start(dir.path(), &query, 2);
        pair.push(0, &readings(base, 10, 300), &mut expected);
        pair.stop_through_process_one();
        assert_eq!(union(dir.path()), expected, "process {victim} killed");
    }
}

/// Process 1 dies after process 0 committed a checkpoint but before it did: at the
/// next start process 0 goes back one commit, and both replay from their logs what
/// that checkpoint held (each kept its log from the start of the run the checkpoint
/// ended, though the checkpoint itself lets the log go).
#[test]
fn a_process_one_commit_ahead_of_its_peer_goes_back_and_both_replay_their_logs() {
    let dir = tempdir();
    let query = query(dir.path());
    let base = (now_ms() - 600_000).div_euclid(10_000) * 10_000;
    let mut expected = Expected::new();
    let mut pair = Pair::start_checkpointing(dir.path(), &query, 2, "2s");
    pair.push(0, &readings(base, 40, 400), &mut expected);
    pair.push(1, &readings(base, 40, 401), &mut expected);
    // Both committed a checkpoint, the next one is two seconds away: both die now.
    wait_until(
        "a checkpoint on both processes",
        std::time::Duration::from_secs(60),
        || {
            let (first, second) = (commits(dir.path(), 0), commits(dir.path(), 1));
            first >= 1 && first == second
        },
    );
    for node in &mut pair.nodes {
        node.send("KILL");
        node.wait();
    }
    drop(pair);
    // Process 1's last commit undone: its state is the one that checkpoint's run began
    // with.
    let state = dir.path().join("out1/_state/pushed");
    std::fs::rename(state.join("stream.prev.json"), state.join("stream.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(commits(dir.path(), 0), commits(dir.path(), 1) + 1);
    let pair = Pair::start_checkpointing(dir.path(), &query, 2, "1h");
    pair.push(1, &readings(base, 40, 402), &mut expected);
    pair.stop_through_process_one();
    assert_eq!(union(dir.path()), expected);
    assert_eq!(commits(dir.path(), 0), commits(dir.path(), 1));
}

/// Each process's readings travel at its own watermark, and a window closes once every
/// process's has passed it: a reading is late only behind the watermark of the process
/// that received it (as behind one source partition's in Flink), so a process whose
/// devices lag does not turn their readings into late ones.
#[test]
fn a_reading_is_late_only_behind_the_watermark_of_the_process_that_received_it() {
    let dir = tempdir();
    let query = write_query(dir.path(), "pushed", &push_query_without_idle());
    let base = (now_ms() - 600_000).div_euclid(10_000) * 10_000;
    let mut expected = Expected::new();
    let pair = Pair::start(dir.path(), &query, 2);
    let at = |offset_ms: i64| vec![("dev-1".to_owned(), base + offset_ms, 10)];
    pair.push(0, &at(50_000), &mut expected);
    // Process 0 has read it: what comes next is in a later chunk, behind its watermark.
    wait_until(
        "process 0 to read the reading",
        std::time::Duration::from_secs(60),
        || {
            let (_, _, body) = http(
                pair.nodes[0].port,
                "GET",
                "/api/v1/queries/pushed",
                &[],
                b"",
            );
            serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|detail| detail["figures"]["readings"].as_u64() >= Some(1))
        },
    );
    // Behind process 0's watermark, but process 1 has seen nothing yet.
    pair.push(1, &at(5_000), &mut expected);
    // Behind process 0's own watermark: late.
    pair.push(0, &at(2_000), &mut Expected::new());
    pair.stop_through_process_one();
    assert_eq!(union(dir.path()), expected);
    let late: usize = (0..2)
        .map(|p| read_rows(&dir.path().join(format!("out{p}/pushed_late"))).len())
        .sum();
    assert_eq!(late, 1, "one late reading");
}

/// A query whose writer fails on process 1 (its output folder is a file) ends the
/// cluster instead of leaving process 0 to build that query's successors alone: process
/// 1 names the query, process 0 names process 1. Once the folder is mended, the next
/// start replays both logs from the last checkpoint and loses nothing acknowledged.
#[test]
fn a_query_failing_on_one_process_ends_the_cluster_and_a_restart_loses_nothing() {
    let dir = tempdir();
    let query = write_query(dir.path(), "pushed", &push_query_without_idle());
    // A window whose file process 1 writes (one of workers 2 and 3 of 4).
    let base = (0..)
        .map(|i| (now_ms() - 600_000).div_euclid(10_000) * 10_000 + i * 10_000)
        .find(|start| edgeflow::window::state::window_owner(start * 1000, 4) >= 2)
        .unwrap_or_default();
    let mut expected = Expected::new();
    let mut pair = Pair::start(dir.path(), &query, 2);
    let folder = dir.path().join("out1/pushed");
    if folder.is_dir() {
        std::fs::remove_dir_all(&folder).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(&folder, b"not a folder").unwrap_or_else(|e| panic!("{e}"));
    // The window closes on both processes.
    let first: Vec<(String, i64, i64)> = (0..20)
        .map(|d| (format!("dev-{d}"), base + 1_000 + d, 7))
        .collect();
    let past = |d: i64| vec![(format!("dev-{d}"), base + 25_000, 1)];
    pair.push(0, &first, &mut expected);
    pair.push(1, &first, &mut expected);
    pair.push(0, &past(0), &mut expected);
    pair.push(1, &past(1), &mut expected);
    let (Some(mut second), Some(mut first)) = (pair.nodes.pop(), pair.nodes.pop()) else {
        panic!("two processes");
    };
    let (code, _) = second.wait();
    assert_ne!(code, Some(0));
    assert!(
        second
            .stderr()
            .contains("query pushed failed on this process"),
        "{}",
        second.stderr()
    );
    let (code, _) = first.wait();
    assert_ne!(code, Some(0));
    assert!(first.stderr().contains("process 1"), "{}", first.stderr());
    std::fs::remove_file(&folder).unwrap_or_else(|e| panic!("{e}"));
    let pair = Pair::start(dir.path(), &query, 2);
    pair.stop_through_process_one();
    assert_eq!(union(dir.path()), expected);
}

#[test]
fn two_processes_poll_each_device_once_and_give_the_plain_computation() {
    let dir = tempdir();
    let fleet = Fleet::start(
        dir.path(),
        &[
            "--devices",
            "60",
            "--seed",
            "11",
            "--rebooting",
            "0.1",
            "--reboot-every",
            "3",
        ],
    );
    // A device polled by both processes would give each a first answer without a
    // reading and deltas over half the answers: the rows would differ.
    let query = write_query(dir.path(), "polled", &poll_query(fleet.port, "0..59", ""));
    let pair = Pair::start(dir.path(), &query, 2);
    wait_served(&fleet, 300);
    let polled: Vec<u64> = pair
        .nodes
        .iter()
        .map(|node| {
            ingest(node)["tables"]["readings"]["source"]["devices"]
                .as_u64()
                .unwrap_or(0)
        })
        .collect();
    assert!(
        polled.iter().all(|&n| n > 0) && polled.iter().sum::<u64>() == 60,
        "each process polls a share of the 60 devices: {polled:?}"
    );
    let served = fleet.stop();
    pair.stop_through_process_one();
    let (want, _) = expected_rows(&served);
    let mut got = Rows::new();
    for process in 0..2 {
        for (key, row) in written_rows(&dir.path().join(format!("out{process}/polled"))) {
            assert!(
                got.insert(key.clone(), row).is_none(),
                "{key:?} in both folders"
            );
        }
    }
    assert_eq!(got, want);
}

#[test]
fn two_processes_share_one_mqtt_subscription_and_count_each_message_once() {
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let sql = format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'mqtt', broker = 'mqtt://127.0.0.1:{}', topic = 'devices/+/traffic', qos = '1',
      device_id_from_topic = '2', event_time = 'ts', max_out_of_orderness = '1h');
SELECT device_id, window_start, window_end, COUNT(*) AS n, SUM(bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '10' SECOND)
GROUP BY device_id, window_start, window_end;",
        broker.port
    );
    let query = write_query(dir.path(), "pushed", &sql);
    let pair = Pair::start(dir.path(), &query, 1);
    for node in &pair.nodes {
        wait_until(
            "both processes to subscribe",
            std::time::Duration::from_secs(30),
            || ingest(node)["tables"]["readings"]["source"]["subscribed"] == true,
        );
    }
    let log = dir.path().join("published.jsonl");
    let readings = 1500;
    let status = publisher(broker.port, readings, 1000, &log)
        .status()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "the publisher ended with {status}");
    let mut expected = Expected::new();
    for text in std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
    {
        let r: serde_json::Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
        add(
            &mut expected,
            r["device_id"].as_str().unwrap_or_default(),
            r["ts"].as_i64().unwrap_or_default(),
            r["bytes_in"].as_i64().unwrap_or_default(),
        );
    }
    let received = |node: &LiveNode| {
        ingest(node)["tables"]["readings"]["received"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until(
        "every message to arrive",
        std::time::Duration::from_secs(60),
        || received(&pair.nodes[0]) + received(&pair.nodes[1]) >= readings as u64,
    );
    let shares = [received(&pair.nodes[0]), received(&pair.nodes[1])];
    assert!(
        shares[0] > 0 && shares[1] > 0,
        "the broker hands messages to both processes: {shares:?}"
    );
    assert_eq!(shares[0] + shares[1], readings as u64, "each message once");
    pair.stop_through_process_one();
    assert_eq!(union(dir.path()), expected);
}
