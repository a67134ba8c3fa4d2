//! Polling a simulated fleet (`edgeflow devices`, real HTTP on 127.0.0.1): the rows
//! equal a plain computation over what the simulator logged it served, counter deltas
//! and resets included, at 1, 2 and 4 workers; faulty devices are counted and
//! dead-lettered without costing the others a row; two queries on one table share
//! one poll per device and interval.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeflow::types::Value;

use crate::live::{LiveNode, http, signal, tempdir, write_query};
use crate::support::{dead_letters, parquet_files, read_rows};

/// A running `edgeflow devices`.
pub struct Fleet {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
}

impl Fleet {
    /// Starts the simulator with `args` on a free port, logging what it serves.
    pub fn start(dir: &Path, args: &[&str]) -> Fleet {
        let port_file = dir.join("fleet.port");
        let log = dir.join("served.jsonl");
        let child = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .arg("devices")
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--port-file"])
            .arg(&port_file)
            .arg("--log")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("edgeflow devices: {e}"));
        let mut fleet = Fleet {
            child: Some(child),
            port: 0,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while fleet.port == 0 {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                fleet.port = port;
            }
            if let Some(child) = fleet.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the simulator ended before listening: {status}");
            }
            assert!(Instant::now() < deadline, "the simulator never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        fleet
    }

    /// Readings served so far.
    pub fn served(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }

    /// Stops it gracefully (answers in flight are finished and logged) and returns
    /// every reading it served, in the order served.
    pub fn stop(mut self) -> Vec<serde_json::Value> {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
            assert!(status.success(), "the simulator ended with {status}");
        }
        std::fs::read_to_string(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()))
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// The polled table, counters as deltas, in two-second windows.
pub fn poll_query(port: u16, ids: &str, extra: &str) -> String {
    format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, bytes_out BIGINT,
                       packets BIGINT, latency_ms DOUBLE)
WITH (connector = 'http_poll', url = 'http://127.0.0.1:{port}/device/{{id}}', ids = '{ids}',
      interval = '1s', timeout = '1500ms', concurrency = '32',
      counters = 'bytes_in,bytes_out,packets', event_time = 'ts', max_out_of_orderness = '5s'{extra});
SELECT device_id, window_start, COUNT(*) AS n, SUM(bytes_in) AS bytes_in,
       SUM(bytes_out) AS bytes_out, SUM(packets) AS packets
FROM TUMBLE(readings, ts, INTERVAL '2' SECOND)
GROUP BY device_id, window_start;"
    )
}

/// (device, window start µs) -> [n, bytes_in, bytes_out, packets].
pub type Rows = BTreeMap<(String, i64), [i64; 4]>;

/// The plain computation: per device in the order served, deltas of the cumulative
/// counters (a drop is a reset: the new value is the delta); a device's first answer
/// yields no reading.
pub fn expected_rows(served: &[serde_json::Value]) -> (Rows, u64) {
    let mut previous: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    let mut rows = Rows::new();
    let mut resets = 0;
    for reading in served {
        let device = reading["device_id"].as_str().unwrap_or_default().to_owned();
        let now = ["bytes_in", "bytes_out", "packets"].map(|f| reading[f].as_u64().unwrap_or(0));
        let ts_ms = reading["ts"].as_i64().unwrap_or_default();
        let Some(before) = previous.insert(device.clone(), now) else {
            continue;
        };
        let mut delta = [0i64; 3];
        for i in 0..3 {
            delta[i] = if now[i] >= before[i] {
                (now[i] - before[i]) as i64
            } else {
                resets += 1;
                now[i] as i64
            };
        }
        let start = ts_ms.div_euclid(2_000) * 2_000_000;
        let row = rows.entry((device, start)).or_default();
        row[0] += 1;
        for i in 0..3 {
            row[i + 1] += delta[i];
        }
    }
    (rows, resets)
}

/// The latest revision of every window's row.
pub fn written_rows(results: &Path) -> Rows {
    let mut latest: BTreeMap<(String, i64), (i64, [i64; 4])> = BTreeMap::new();
    for row in read_rows(results) {
        let (Value::Text(device), Value::Timestamp(start)) = (&row[0], &row[1]) else {
            panic!("unexpected row {row:?}");
        };
        let number = |v: &Value| match v {
            Value::BigInt(n) => *n,
            other => panic!("not a BIGINT: {other:?}"),
        };
        let values = [
            number(&row[2]),
            number(&row[3]),
            number(&row[4]),
            number(&row[5]),
        ];
        let revision = row.get(6).map_or(0, number);
        let slot = latest
            .entry((device.clone(), *start))
            .or_insert((revision, values));
        if revision >= slot.0 {
            *slot = (revision, values);
        }
    }
    latest.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

fn summary(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Waits until the fleet has served `n` readings (the node is polling).
pub fn wait_served(fleet: &Fleet, n: usize) {
    crate::s3_server::wait_until("the fleet to be polled", Duration::from_secs(120), || {
        fleet.served() >= n
    });
}

#[test]
fn polling_200_devices_gives_the_plain_computation_over_what_they_served() {
    for workers in ["1", "2", "4"] {
        let dir = tempdir();
        // Some devices reboot every third answer: their counters drop to zero.
        let fleet = Fleet::start(
            dir.path(),
            &[
                "--devices",
                "200",
                "--seed",
                "7",
                "--rebooting",
                "0.1",
                "--reboot-every",
                "3",
            ],
        );
        let query = write_query(dir.path(), "polled", &poll_query(fleet.port, "0..199", ""));
        let node = LiveNode::start(
            dir.path(),
            &[
                "serve",
                query.to_str().unwrap_or_default(),
                "--no-sync",
                "--json",
                "--workers",
                workers,
            ],
            &[],
        );
        // Four rounds of every device.
        wait_served(&fleet, 800);
        let served = fleet.stop();
        let (code, stdout) = node.stop();
        assert_eq!(code, Some(0), "{stdout}");
        let (want, resets) = expected_rows(&served);
        assert!(
            resets > 0,
            "no device rebooted: the test would not cover resets"
        );
        let got = written_rows(&dir.path().join("out").join("polled"));
        assert_eq!(got.len(), want.len(), "{workers} workers: windows");
        assert_eq!(got, want, "{workers} workers");
        let summary = summary(&stdout);
        let run = &summary["node"]["queries"][0];
        assert_eq!(run["late"], 0, "{workers} workers: {run}");
        let polls = &summary["node"]["polls"]["readings"];
        assert!(
            polls["counter_resets"].as_u64().unwrap_or(0) >= 1,
            "{polls}"
        );
    }
}

#[test]
fn faulty_devices_are_counted_and_dead_lettered_and_the_others_rows_are_complete() {
    let dir = tempdir();
    let faults = [
        ("3", "dead", "no answer within"),
        ("4", "500", "HTTP 500"),
        ("5", "html", "HTML"),
        ("6", "huge", "body larger than"),
        ("7", "broken", "broken JSON"),
        ("8", "ahead", "ahead of the node's clock"),
    ];
    let mut args = vec![
        "--devices".to_owned(),
        "20".to_owned(),
        "--seed".to_owned(),
        "3".to_owned(),
    ];
    for (id, mode, _) in faults {
        args.push("--fault".into());
        args.push(format!("{id}={mode}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let fleet = Fleet::start(dir.path(), &args);
    let port = fleet.port;
    let query = write_query(dir.path(), "faulty", &poll_query(fleet.port, "0..19", ""));
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--json",
            "--workers",
            "2",
        ],
        &[],
    );
    // Enough rounds for every faulty device to fail three times in a row.
    wait_served(&fleet, 15 * 5);
    let served = fleet.stop();
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    // The device whose clock is a year ahead answers, but its readings are quarantined
    // and never move the watermark: the others' windows are all there.
    let clocked: Vec<serde_json::Value> = served
        .iter()
        .filter(|r| r["device_id"] != "dev-000008")
        .cloned()
        .collect();
    let (want, _) = expected_rows(&clocked);
    assert_eq!(written_rows(&dir.path().join("out").join("faulty")), want);
    let summary = summary(&stdout);
    let polls = &summary["node"]["polls"]["readings"];
    let silent: BTreeMap<String, String> = polls["silent_devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    (
                        d["id"].as_str().unwrap_or_default().to_owned(),
                        d["last_error"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let letters = dead_letters(&dir.path().join("out"), "faulty");
    for (id, mode, reason) in faults {
        // Its last error may be the simulator's own shutdown; the dead letters hold
        // every failure. A device with a wrong clock answers: it is not silent.
        if mode != "ahead" {
            assert!(silent.contains_key(id), "device {id} not reported: {polls}");
        }
        // The reading of a wrong clock is dead-lettered as read, naming its device.
        let url = match mode {
            "ahead" => format!("dev-00000{id}"),
            _ => format!("http://127.0.0.1:{port}/device/{id}:"),
        };
        assert!(
            letters
                .lines()
                .any(|l| l.contains(&url) && l.contains(reason)),
            "no dead letter for device {id} with {reason}:\n{letters}"
        );
    }
    assert!(polls["polls_failed"].as_u64().unwrap_or(0) >= 15, "{polls}");
}

#[test]
fn two_queries_on_one_table_poll_each_device_once_and_stop_with_every_window_synced() {
    let dir = tempdir();
    let fleet = Fleet::start(dir.path(), &["--devices", "50", "--seed", "11"]);
    let sql = poll_query(fleet.port, "0..49", "");
    let first = write_query(dir.path(), "first", &sql);
    let second = write_query(
        dir.path(),
        "second",
        &sql.replace("INTERVAL '2' SECOND", "INTERVAL '4' SECOND"),
    );
    let target = dir.path().join("bucket");
    let target_url = format!("file://{}", target.display());
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            first.to_str().unwrap_or_default(),
            second.to_str().unwrap_or_default(),
            "--json",
            "--workers",
            "2",
            "--sync",
            &target_url,
        ],
        &[],
    );
    wait_served(&fleet, 50 * 4);
    let served = fleet.stop();
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let summary = summary(&stdout);
    let rounds = summary["node"]["polls"]["readings"]["rounds"]
        .as_u64()
        .unwrap_or(0) as usize;
    // One poll per device and round, whatever the number of queries.
    let mut per_device: BTreeMap<String, usize> = BTreeMap::new();
    for reading in &served {
        *per_device
            .entry(reading["device_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_device.len(), 50);
    assert!(
        per_device.values().all(|&n| n <= rounds),
        "a device was polled more than once a round ({rounds} rounds): {per_device:?}"
    );
    let (want, _) = expected_rows(&served);
    assert_eq!(written_rows(&dir.path().join("out").join("first")), want);
    let second_rows = written_rows(&dir.path().join("out").join("second"));
    let total = |rows: &Rows| rows.values().map(|r| r[1]).sum::<i64>();
    assert_eq!(
        total(&second_rows),
        total(&want),
        "both queries saw every reading"
    );
    // Every result file is in the target: SIGTERM waited for sync.
    assert_eq!(summary["sync"]["pending_files"], 0, "{}", summary["sync"]);
    let out = dir.path().join("out");
    for file in parquet_files(&out.join("first"))
        .into_iter()
        .chain(parquet_files(&out.join("second")))
    {
        let relative = file.strip_prefix(&out).unwrap_or(&file);
        assert!(
            target.join(relative).exists(),
            "{} not in the target",
            relative.display()
        );
    }
}

/// Per device: the sums of the three counters' deltas over `rows`.
fn device_totals(rows: &Rows) -> BTreeMap<String, [i64; 3]> {
    let mut totals: BTreeMap<String, [i64; 3]> = BTreeMap::new();
    for ((device, _), row) in rows {
        let total = totals.entry(device.clone()).or_default();
        for i in 0..3 {
            total[i] += row[i + 1];
        }
    }
    totals
}

/// A fleet of `devices` simulated devices (ids `0..devices-1`, seeded) and the query
/// polling all of them, written as `polled`.
fn polled_fleet(dir: &Path, devices: usize, seed: &str) -> (Fleet, PathBuf) {
    let count = devices.to_string();
    let fleet = Fleet::start(dir, &["--devices", &count, "--seed", seed]);
    let ids = format!("0..{}", devices - 1);
    let query = write_query(dir, "polled", &poll_query(fleet.port, &ids, ""));
    (fleet, query)
}

/// `serve` of `query` on two workers without sync, then `extra`.
fn serve_args<'a>(query: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "serve",
        query.to_str().unwrap_or_default(),
        "--no-sync",
        "--workers",
        "2",
    ];
    args.extend_from_slice(extra);
    args
}

/// A node restarted (a clean stop, then `kill -9`) takes each device's next delta from
/// its last logged answer: what the devices moved while the node was down is counted,
/// once. It was lost: the first answer after every start only set the baseline again.
#[test]
fn counters_go_on_across_a_clean_stop_and_a_kill() {
    let dir = tempdir();
    let (fleet, query) = polled_fleet(dir.path(), 20, "3");
    let args = serve_args(&query, &["--checkpoint-every", "500ms"]);
    let mut served = 0;
    for stop in ["TERM", "KILL", "TERM"] {
        let mut node = LiveNode::start(dir.path(), &args, &[]);
        // Three rounds of every device in each life.
        served += 60;
        wait_served(&fleet, served);
        node.send(stop);
        node.wait();
        served = fleet.served();
    }
    let answers = fleet.stop();
    let (want, _) = expected_rows(&answers);
    let got = written_rows(&dir.path().join("out").join("polled"));
    assert_eq!(device_totals(&got), device_totals(&want));
}

/// A query stopped on purpose, the node restarted, then the query started again: its
/// devices start anew (their first answer is a baseline), as without the restart; what
/// they moved while the query was stopped is not counted.
#[test]
fn a_query_stopped_on_purpose_starts_its_devices_anew_after_a_restart() {
    let dir = tempdir();
    let (fleet, query) = polled_fleet(dir.path(), 10, "5");
    let args = serve_args(&query, &[]);
    let node = LiveNode::start(dir.path(), &args, &[]);
    wait_served(&fleet, 30);
    let (status, _, body) = http(
        node.port,
        "POST",
        "/api/v1/queries/polled/stop?windows=keep",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let before = fleet.served();
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let node = LiveNode::start(dir.path(), &args, &[]);
    let (status, _, body) = http(node.port, "POST", "/api/v1/queries/polled/start", &[], b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    wait_served(&fleet, before + 30);
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let answers = fleet.stop();
    // Each life of the query on its own: the first answer after the start is a baseline.
    let (mut want, _) = expected_rows(&answers[..before]);
    let (after, _) = expected_rows(&answers[before..]);
    for (key, row) in after {
        let slot = want.entry(key).or_default();
        for i in 0..4 {
            slot[i] += row[i];
        }
    }
    let got = written_rows(&dir.path().join("out").join("polled"));
    assert_eq!(device_totals(&got), device_totals(&want));
}

/// A node whose query is refused at its start (here its folder says it belongs to a
/// cluster's process) polls no device: a poll would move the devices' counter
/// baselines past traffic no query counts. It polled once before its refusal, and the
/// next start lost that delta.
#[test]
fn a_query_refused_at_its_start_polls_no_device_and_loses_no_delta() {
    let dir = tempdir();
    let (fleet, query) = polled_fleet(dir.path(), 10, "7");
    let args = serve_args(&query, &["--checkpoint-every", "500ms"]);
    let node = LiveNode::start(dir.path(), &args, &[]);
    wait_served(&fleet, 30);
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let stream = dir.path().join("out/_state/polled/stream.json");
    let kept = std::fs::read_to_string(&stream).unwrap_or_default();
    let mut state: serde_json::Value = serde_json::from_str(&kept).unwrap_or_default();
    state["cluster"] = serde_json::json!({"processes": 2, "process": 0, "workers": 2});
    std::fs::write(&stream, state.to_string()).unwrap_or_default();

    let before = fleet.served();
    let node = LiveNode::start(dir.path(), &args, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, body) = http(node.port, "GET", "/api/v1/queries/polled", &[], b"");
        let detail: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if detail["state"] == "failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query was not refused: {detail}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Started again over the API: refused for its folder, a conflict, not the node's
    // failure.
    let (status, _, body) = http(node.port, "POST", "/api/v1/queries/polled/start", &[], b"");
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("process 0 of 2"), "{body}");
    let (_, stdout) = node.stop();
    assert_eq!(fleet.served(), before, "the refused query polled: {stdout}");

    std::fs::write(&stream, kept).unwrap_or_default();
    let node = LiveNode::start(dir.path(), &args, &[]);
    wait_served(&fleet, before + 30);
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let answers = fleet.stop();
    let (want, _) = expected_rows(&answers);
    let got = written_rows(&dir.path().join("out").join("polled"));
    assert_eq!(device_totals(&got), device_totals(&want));
}
