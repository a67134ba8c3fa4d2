//! The crash harness: a node taking pushed readings is killed with SIGKILL at seeded
//! random moments while a client resends every batch until it is acknowledged (with an
//! `Idempotency-Key`) and the bucket goes away for a while. At the end the rows, on
//! disk and in the bucket, equal the plain computation over exactly the acknowledged
//! readings: none lost, none counted twice, no object written twice.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::live::{
    Expected, LiveNode, add, http, line, now_ms, started, tempdir, write_query, written,
};
use crate::s3_server::{Forwarder, Moto, assert_target_mirrors, free_port, wait_until};

const QUERY: &str = "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'http_push', event_time = 'ts', max_out_of_orderness = '1s');
SELECT device_id, window_start, window_end, COUNT(*) AS n, SUM(bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '10' SECOND)
GROUP BY device_id, window_start, window_end;";

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
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let dir = tempdir();
    let moto = Moto::signed();
    moto.bucket("crash");
    let forwarder = Forwarder::start();
    forwarder.point_at(moto.port);
    let query = write_query(dir.path(), "crash", QUERY);
    let out = dir.path().join("out");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let url = "s3://crash/edge";
    let args = [
        "serve",
        query.to_str().unwrap_or_default(),
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
    let client = Client::start(port, now_ms() - 3_600_000);
    let mut replays = 0;
    for kill in 0..KILLS {
        // The bucket is unreachable from the 6th kill to the 13th.
        match kill {
            5 => forwarder.point_at(0),
            13 => forwarder.point_at(moto.port),
            _ => {}
        }
        let mut node = LiveNode::spawn(dir.path(), port, &args, &env);
        node.wait_healthy(|| started(port));
        // Some batches are taken by this node, then it dies at a random moment.
        let until = client.acked() + 1 + rng.below(300);
        wait_until(
            "batches to be acknowledged",
            Duration::from_secs(60),
            || client.acked() >= until,
        );
        std::thread::sleep(Duration::from_millis(rng.below(300)));
        if node.stderr().contains("Read back the write-ahead log") {
            replays += 1;
        }
        drop(node); // SIGKILL
    }
    let node = LiveNode::spawn(dir.path(), port, &args, &env);
    let mut node = node;
    node.wait_healthy(|| started(port));
    let until = client.acked() + 5;
    wait_until(
        "batches to be acknowledged",
        Duration::from_secs(60),
        || client.acked() >= until,
    );
    let (expected, resends, replayed) = client.finish();
    let started = Instant::now();
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        replays >= KILLS / 2,
        "only {replays} of {KILLS} restarts replayed the log"
    );
    assert!(resends > 0, "no kill ever cut a request off");
    let rows = written(&out, "crash");
    if rows != expected {
        let kept = dir.keep();
        for (k, v) in &rows {
            if expected.get(k) != Some(v) {
                eprintln!("DIFF {k:?}: got {v:?} want {:?}", expected.get(k));
            }
        }
        panic!("kept {}", kept.display());
    }
    assert_eq!(
        rows.values().map(|(n, _)| n).sum::<i64>(),
        expected.values().map(|(n, _)| n).sum::<i64>(),
        "readings counted ({replayed} batches answered again after a lost answer)"
    );
    assert_eq!(
        rows, expected,
        "the rows differ from the acknowledged readings"
    );
    // The bucket holds every file once, byte for byte as on disk.
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let mut found = Vec::new();
    conflicts(&summary, &mut found);
    assert!(found.is_empty(), "objects written twice: {found:?}");
    assert_target_mirrors(&out, url, &moto.options());
    // Checkpoints cut the log: what is left is the newest segment or two, not the
    // whole run's readings.
    let segments = std::fs::read_dir(out.join("_state/_wal/readings"))
        .map(|d| d.flatten().count())
        .unwrap_or(0);
    assert!(
        (1..=2).contains(&segments),
        "{segments} log segments are left"
    );
    eprintln!(
        "{KILLS} kills: {} readings acknowledged, {resends} resends, {replayed} answered again, final stop {:?}",
        expected.values().map(|(n, _)| n).sum::<i64>(),
        started.elapsed()
    );
}
