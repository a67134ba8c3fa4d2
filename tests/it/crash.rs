//! The crash harness: a node taking readings pushed over HTTP and from an MQTT broker,
//! and a file run next to it, are killed with SIGKILL at seeded random moments while
//! the bucket goes away for a while. The push client resends every batch until it is
//! acknowledged (with an `Idempotency-Key`); the MQTT publisher's messages are
//! acknowledged by the broker, which keeps them for the node. At the end the rows, on
//! disk and in the bucket, equal the plain computation over exactly the acknowledged
//! readings and the file: none lost, none counted twice, no object written twice.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeflow::decode::Format;
use edgeflow::source::generator::{GeneratorConfig, Reading, TimestampFormat, write_readings};

use crate::live::{
    Expected, LiveNode, add, http, line, now_ms, started, tempdir, write_query, written,
};
use crate::live_mqtt::Broker;
use crate::oracle::{Spec, late_rows, oracle};
use crate::s3_server::{Forwarder, Moto, assert_target_mirrors, free_port, wait_until};
use crate::support::{assert_rows_eq, read_rows};

const QUERY: &str = "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'http_push', event_time = 'ts', max_out_of_orderness = '1s');
SELECT device_id, window_start, window_end, COUNT(*) AS n, SUM(bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '10' SECOND)
GROUP BY device_id, window_start, window_end;";

/// The same query over the MQTT table of the broker on `port`.
fn mqtt_query(port: u16) -> String {
    format!(
        "CREATE TABLE traffic (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'mqtt', broker = 'mqtt://127.0.0.1:{port}', topic = 'devices/+/traffic',
      qos = '1', client_id = 'crash-node', event_time = 'ts', max_out_of_orderness = '5s');
SELECT device_id, window_start, window_end, COUNT(*) AS n, SUM(bytes_in) AS bytes_in
FROM TUMBLE(traffic, ts, INTERVAL '10' SECOND)
GROUP BY device_id, window_start, window_end;"
    )
}

/// xorshift64*: a seeded, reproducible choice of kill moments.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

/// Batch `b`: eight readings over five devices, each pair sent in reverse order.
fn batch(b: i64, t0: i64) -> Vec<(String, i64, i64)> {
    (0..8)
        .map(|i| {
            let swapped = i ^ 1;
            let device = format!("d{}", (b + i) % 5);
            (device, t0 + b * 400 + swapped * 50, b * 10 + i)
        })
        .collect()
}

/// A client that sends batch after batch, each until it is acknowledged.
struct Client {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    resends: Arc<AtomicU64>,
    replayed: Arc<AtomicU64>,
    expected: Arc<Mutex<Expected>>,
    thread: std::thread::JoinHandle<()>,
}

impl Client {
    fn start(port: u16, t0: i64) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let resends = Arc::new(AtomicU64::new(0));
        let replayed = Arc::new(AtomicU64::new(0));
        let expected = Arc::new(Mutex::new(Expected::new()));
        let (s, a, r, p, e) = (
            stop.clone(),
            acked.clone(),
            resends.clone(),
            replayed.clone(),
            expected.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut b = 0i64;
            while !s.load(Ordering::SeqCst) {
                let readings = batch(b, t0);
                let body: String = readings.iter().map(|(d, t, v)| line(d, *t, *v)).collect();
                let key = format!("batch-{b}");
                let headers = [
                    ("Content-Type", "application/x-ndjson"),
                    ("Idempotency-Key", key.as_str()),
                ];
                // Resent until acknowledged, whatever happens to the node meanwhile.
                loop {
                    let (status, head, answer) =
                        http(port, "POST", "/ingest/readings", &headers, body.as_bytes());
                    if status == 200 {
                        assert!(
                            String::from_utf8_lossy(&answer).contains("\"accepted\":8"),
                            "batch {b}: {}",
                            String::from_utf8_lossy(&answer)
                        );
                        if head
                            .to_ascii_lowercase()
                            .contains("idempotent-replayed: true")
                        {
                            p.fetch_add(1, Ordering::SeqCst);
                        }
                        break;
                    }
                    assert!(
                        matches!(status, 0 | 503),
                        "batch {b}: {status} {}",
                        String::from_utf8_lossy(&answer)
                    );
                    r.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
                let mut expected = e.lock().unwrap_or_else(|p| p.into_inner());
                for (device, ts, bytes) in &readings {
                    add(&mut expected, device, *ts, *bytes);
                }
                drop(expected);
                a.fetch_add(1, Ordering::SeqCst);
                b += 1;
            }
        });
        Client {
            stop,
            acked,
            resends,
            replayed,
            expected,
            thread,
        }
    }

    fn acked(&self) -> u64 {
        self.acked.load(Ordering::SeqCst)
    }

    /// Stops after the batch in flight is acknowledged; returns what was.
    fn finish(self) -> (Expected, u64, u64) {
        self.stop.store(true, Ordering::SeqCst);
        if self.thread.join().is_err() {
            panic!("the client failed (see above)");
        }
        let expected = self
            .expected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (
            expected,
            self.resends.load(Ordering::SeqCst),
            self.replayed.load(Ordering::SeqCst),
        )
    }
}

/// `edgeflow devices` publishing `readings` at QoS 1 to the broker on `port`, each
/// reading logged in `log` as it is handed to the client; it ends once the broker has
/// acknowledged them all.
fn publish(port: u16, readings: u64, rate: u32, seed: u64, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["devices", "--devices", "20", "--qos", "1"])
        .args(["--seed", &seed.to_string(), "--rate", &rate.to_string()])
        .args(["--readings", &readings.to_string()])
        .args(["--client-id", &format!("crash-pub-{seed}")])
        .arg("--mqtt")
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .arg("--log")
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("edgeflow devices: {e}"))
}

/// Waits for a publisher to end; it must have had every reading acknowledged.
fn published(mut publisher: Child, log: &Path, readings: u64, into: &mut Expected) -> i64 {
    let status = publisher.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "the MQTT publisher ended with {status}");
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{e}"));
    let mut latest = i64::MIN;
    let mut count = 0;
    for l in text.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let ts = r["ts"].as_i64().unwrap_or_default();
        add(
            into,
            r["device_id"].as_str().unwrap_or_default(),
            ts,
            r["bytes_in"].as_i64().unwrap_or_default(),
        );
        latest = latest.max(ts);
        count += 1;
    }
    assert_eq!(count, readings, "readings in {}", log.display());
    latest
}

/// An `edgeflow run` over a file next to the node, synced through the same forwarder.
/// It is killed only once a checkpoint has moved its position since it started, so
/// every life makes progress and the run ends after at most as many lives as kills.
struct FileRun {
    args: Vec<String>,
    env: Vec<(String, String)>,
    state: std::path::PathBuf,
    child: Option<Child>,
    started_at: u64,
    kills: usize,
    done: bool,
}

impl FileRun {
    fn new(dir: &Path, input: &Path, env: &[(&str, &str)]) -> FileRun {
        let query = dir.join("q.sql");
        std::fs::write(&query, Spec::minute().sql()).unwrap_or_else(|e| panic!("{e}"));
        let out = dir.join("out");
        let text = |p: &Path| p.to_string_lossy().into_owned();
        let args = [
            "run",
            &text(&query),
            "--input",
            &text(input),
            "--output",
            &text(&out),
            "--workers",
            "2",
            "--chunk-bytes",
            "65536",
            "--checkpoint-every",
            "100ms",
            "--sync",
            "s3://crash/file",
        ];
        FileRun {
            args: args.iter().map(|a| a.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            state: out.join("_state/q/stream.json"),
            child: None,
            started_at: 0,
            kills: 0,
            done: false,
        }
    }

    /// The input position of its last checkpoint.
    fn position(&self) -> u64 {
        std::fs::read(&self.state)
            .ok()
            .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
            .and_then(|v| v["inputs"][0]["position"].as_u64())
            .unwrap_or(0)
    }

    /// Where its latest life writes its log.
    fn stderr(&self) -> std::path::PathBuf {
        self.state
            .ancestors()
            .nth(4)
            .map_or_else(|| "run.stderr".into(), |d| d.join("run.stderr"))
    }

    /// Starts it unless it is running or done.
    fn resume(&mut self) {
        if self.done || self.child.is_some() {
            return;
        }
        self.started_at = self.position();
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        // Every life's log, one after the other.
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stderr())
            .unwrap_or_else(|e| panic!("{e}"));
        command
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(stderr);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        self.child = Some(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("edgeflow run: {e}")),
        );
    }

    /// Notes whether it ended (it must have succeeded), if `wait` once it has.
    fn ended(&mut self, wait: bool) -> bool {
        let Some(child) = self.child.as_mut() else {
            return self.done;
        };
        let status = if wait {
            Some(child.wait().unwrap_or_else(|e| panic!("{e}")))
        } else {
            child.try_wait().unwrap_or_else(|e| panic!("{e}"))
        };
        if let Some(status) = status {
            assert!(
                status.success(),
                "the file run ended with {status}: {}",
                std::fs::read_to_string(self.stderr()).unwrap_or_default()
            );
            self.child = None;
            self.done = true;
        }
        self.done
    }

    /// Kills it up to `kills` times, each at a random moment after its life has
    /// checkpointed past where it started, then lets it finish.
    fn crash_repeatedly(mut self, kills: usize, mut rng: Rng) -> FileRun {
        for _ in 0..kills {
            self.resume();
            let started_at = self.started_at;
            wait_until(
                "the file run to checkpoint",
                Duration::from_secs(120),
                || self.ended(false) || self.position() > started_at,
            );
            if self.done {
                break;
            }
            std::thread::sleep(Duration::from_millis(rng.below(200)));
            self.kill();
        }
        self.resume();
        self.ended(true);
        self
    }

    /// SIGKILL, if it is running and has checkpointed past where it started.
    fn kill(&mut self) {
        if self.ended(false) || self.position() <= self.started_at {
            return;
        }
        if let Some(mut child) = self.child.take() {
            child.kill().ok();
            child.wait().ok();
            self.kills += 1;
        }
    }
}

/// The dead letters in `dir` (not those moved aside), by line: each must appear once.
fn dead_letters(dir: &Path) -> BTreeMap<u64, String> {
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.extension().is_none_or(|x| x != "jsonl") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
        for l in text.lines() {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let line = v["line"].as_u64().unwrap_or_default();
            let raw = v["raw"].as_str().unwrap_or_default().to_owned();
            assert!(
                found.insert(line, raw).is_none(),
                "line {line} reported twice ({})",
                path.display()
            );
        }
    }
    found
}

/// Every `conflicts` list in a JSON summary, flattened.
fn conflicts(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "conflicts"
                    && let Some(list) = v.as_array()
                {
                    found.extend(list.iter().map(|c| c.to_string()));
                }
                conflicts(v, found);
            }
        }
        serde_json::Value::Array(list) => list.iter().for_each(|v| conflicts(v, found)),
        _ => {}
    }
}

#[test]
fn twenty_kill_9s_and_a_bucket_outage_lose_no_acknowledged_reading_and_count_none_twice() {
    const KILLS: usize = 20;
    const MQTT_READINGS: u64 = 6_000;
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let dir = tempdir();
    let moto = Moto::signed();
    moto.bucket("crash");
    let forwarder = Forwarder::start();
    forwarder.point_at(moto.port);
    let broker = Broker::start(dir.path());
    let query = write_query(dir.path(), "crash", QUERY);
    let mqtt = write_query(dir.path(), "crash_mqtt", &mqtt_query(broker.port));
    let out = dir.path().join("out");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = "s3://crash/edge";
    let args = [
        "serve",
        query.to_str().unwrap_or_default(),
        mqtt.to_str().unwrap_or_default(),
        "--workers",
        "2",
        "--listen",
        &listen,
        "--output",
        out.to_str().unwrap_or_default(),
        "--sync",
        url,
        "--checkpoint-every",
        "500ms",
        "--json",
    ];
    let endpoint = forwarder.endpoint();
    let env = [
        ("EDGEFLOW_LOG", "info"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", moto.creds.key.as_str()),
        ("AWS_SECRET_ACCESS_KEY", moto.creds.secret.as_str()),
    ];
    // The file: out of order, with late readings, over 50 minutes of event time.
    let file_dir = dir.path().join("file");
    std::fs::create_dir_all(&file_dir).unwrap_or_else(|e| panic!("{e}"));
    let file_config = GeneratorConfig {
        devices: 50,
        readings: 300_000,
        rate: 100.0,
        disorder_ms: 4_000,
        late_fraction: 0.01,
        seed: 13,
        ..GeneratorConfig::default()
    };
    // ... and a bad line after every 7,000th, each to be reported once.
    let input = file_dir.join("in.jsonl");
    let mut bad_lines = BTreeMap::new();
    {
        let mut text = Vec::new();
        write_readings(
            &file_config,
            Format::Jsonl,
            TimestampFormat::Millis,
            &mut text,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut with_bad = String::new();
        for (i, l) in String::from_utf8_lossy(&text).lines().enumerate() {
            with_bad.push_str(l);
            with_bad.push('\n');
            if i % 7_000 == 6_999 {
                let bad = format!("not a reading {i}");
                with_bad.push_str(&bad);
                with_bad.push('\n');
                bad_lines.insert(with_bad.lines().count() as u64, bad);
            }
        }
        std::fs::write(&input, with_bad).unwrap_or_else(|e| panic!("{e}"));
    }
    let file_run = FileRun::new(&file_dir, &input, &env);
    let file_run =
        std::thread::spawn(move || file_run.crash_repeatedly(KILLS, Rng(0x5eed_f11e_0000_0002)));

    // From a minute before a whole hour more than an hour ago: the pushed readings cross
    // into the next hour, so the node compacts a closed hour between kills, during the
    // outage too.
    let hour = 3_600_000;
    let client = Client::start(port, (now_ms() - hour).div_euclid(hour) * hour - 60_000);
    let mqtt_log = dir.path().join("published.jsonl");
    let mut publisher = None;
    let (mut replays, mut redelivered) = (0, 0);
    for kill in 0..KILLS {
        // The bucket is unreachable from the 6th kill to the 13th.
        match kill {
            5 => forwarder.point_at(0),
            13 => forwarder.point_at(moto.port),
            _ => {}
        }
        let mut node = LiveNode::spawn(dir.path(), port, &args, &env);
        node.wait_healthy(|| started(port));
        if publisher.is_none() {
            // Published from when the broker keeps the node's messages.
            wait_until("the node to subscribe", Duration::from_secs(30), || {
                let (_, _, body) = http(port, "GET", "/api/v1/ingest", &[], b"");
                serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|v| v["tables"]["traffic"]["source"]["subscribed"] == true)
            });
            publisher = Some(publish(broker.port, MQTT_READINGS, 300, 5, &mqtt_log));
        }
        // Some batches are taken by this node, then it dies at a random moment.
        let until = client.acked() + 1 + rng.below(300);
        wait_until(
            "batches to be acknowledged",
            Duration::from_secs(60),
            || client.acked() >= until,
        );
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        let log = node.stderr();
        if log.contains("Read back the write-ahead log") {
            replays += 1;
        }
        redelivered += log.matches("already in the write-ahead log").count();
        drop(node); // SIGKILL
    }
    let mut node = LiveNode::spawn(dir.path(), port, &args, &env);
    node.wait_healthy(|| started(port));
    let until = client.acked() + 5;
    wait_until(
        "batches to be acknowledged",
        Duration::from_secs(60),
        || client.acked() >= until,
    );
    let (expected, resends, replayed) = client.finish();
    // Everything the broker acknowledged, then one more reading: once the node has read
    // that one, it has read every message before it (a session delivers in order).
    let mut expected_mqtt = Expected::new();
    let last = published(
        publisher.take().unwrap_or_else(|| panic!("no publisher")),
        &mqtt_log,
        MQTT_READINGS,
        &mut expected_mqtt,
    );
    let sentinel_log = dir.path().join("sentinel.jsonl");
    let sentinel = published(
        publish(broker.port, 1, 10, 6, &sentinel_log),
        &sentinel_log,
        1,
        &mut expected_mqtt,
    );
    assert!(sentinel > last, "the sentinel is the newest reading");
    let read_through = edgeflow::time::format_rfc3339_micros((sentinel - 5_000) * 1000);
    wait_until(
        "the node to read the sentinel",
        Duration::from_secs(120),
        || {
            let (_, _, body) = http(port, "GET", "/api/v1/queries/crash_mqtt", &[], b"");
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["watermark"].as_str().map(str::to_owned))
                .is_some_and(|w| w >= read_through)
        },
    );
    redelivered += node
        .stderr()
        .matches("already in the write-ahead log")
        .count();
    let started = Instant::now();
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let file_run = file_run
        .join()
        .unwrap_or_else(|_| panic!("the file run failed (see above)"));
    assert!(
        replays >= KILLS / 2,
        "only {replays} of {KILLS} restarts replayed the log"
    );
    assert!(resends > 0, "no kill ever cut a request off");
    assert!(
        file_run.kills >= 5,
        "the file run was killed mid-way only {} times",
        file_run.kills
    );
    for (query, want) in [("crash", &expected), ("crash_mqtt", &expected_mqtt)] {
        let rows = written(&out, query);
        if rows != *want {
            for (k, v) in &rows {
                if want.get(k) != Some(v) {
                    eprintln!("{query} DIFF {k:?}: got {v:?} want {:?}", want.get(k));
                }
            }
            for k in want.keys().filter(|k| !rows.contains_key(*k)) {
                eprintln!("{query} MISSING {k:?}: want {:?}", want.get(k));
            }
            let kept = dir.keep();
            panic!(
                "{query}: the rows differ from the acknowledged readings; kept {}",
                kept.display()
            );
        }
    }
    let readings: Vec<Reading> = (0..file_config.readings)
        .map(|i| file_config.reading(i))
        .collect();
    let (want, want_late) = oracle(&Spec::minute(), &readings);
    let file_out = file_dir.join("out");
    assert_rows_eq(
        &read_rows(&file_out.join("q")),
        &want,
        "the file run, killed and resumed",
    );
    assert_eq!(late_rows(&file_out.join("q_late")), want_late);
    assert_eq!(
        dead_letters(&file_out.join("_deadletter/q")),
        bad_lines,
        "each bad line of the file is reported once, with its line number"
    );
    // The bucket holds every file once, byte for byte as on disk.
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let mut found = Vec::new();
    conflicts(&summary, &mut found);
    assert!(found.is_empty(), "objects written twice: {found:?}");
    assert_target_mirrors(&out, url, &moto.options());
    assert_target_mirrors(&file_out, "s3://crash/file", &moto.options());
    // Checkpoints cut the logs: what is left is the newest segment or two, not the
    // whole run's readings.
    for table in ["readings", "traffic"] {
        let segments = std::fs::read_dir(out.join("_state/_wal").join(table))
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        assert!(
            (1..=2).contains(&segments),
            "{table}: {segments} log segments are left"
        );
    }
    eprintln!(
        "{KILLS} kills: {} pushed readings acknowledged, {resends} resends, {replayed} answered again; {} MQTT readings ({redelivered} messages delivered again after a kill); the file run killed {} times; final stop {:?}",
        expected.values().map(|(n, _)| n).sum::<i64>(),
        expected_mqtt.values().map(|(n, _)| n).sum::<i64>(),
        file_run.kills,
        started.elapsed()
    );
}
