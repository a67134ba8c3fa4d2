//! The live node: `edgeflow serve` fed over HTTP push, its event-time rules on a live
//! source, and what it writes when stopped. Real processes, real HTTP on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeflow::types::Value;

use crate::s3_server::{free_port, wait_until};
use crate::support::{dead_letters, parquet_files, read_rows, sort_rows};

/// The files of `queries/` over live sources, each run by a test here.
pub const LIVE_QUERY_FILES: &[&str] = &["live_traffic.sql"];

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"))
}

/// The node's clock, epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Whether the node on `port` has started its queries: `/readyz` says anything but
/// "starting" (a source may still be connecting).
pub fn started(port: u16) -> bool {
    let (status, _, body) = http(port, "GET", "/readyz", &[], b"");
    status == 200 || status == 503 && !body.starts_with(b"starting")
}

/// A running `edgeflow serve` (or `run` on a live query).
pub struct LiveNode {
    child: Option<Child>,
    pub port: u16,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl LiveNode {
    /// Starts `edgeflow <args>` with `--listen` on a free port and waits until it
    /// has started its queries.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> LiveNode {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let out = dir.join("out");
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--listen",
            &listen,
            "--output",
            out.to_str().unwrap_or_default(),
        ]);
        let mut node = LiveNode::spawn(dir, port, &all, env);
        node.wait_healthy(|| started(port));
        node
    }

    /// Waits until `healthy` says yes, failing with the node's log if it exits first.
    pub fn wait_healthy(&mut self, mut healthy: impl FnMut() -> bool) {
        let node = self;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !healthy() {
            if let Some(child) = node.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("the node exited with {status}: {}", node.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "the node never answered /healthz"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `edgeflow <args>` (which must name its own `--listen`) without waiting.
    pub fn spawn(dir: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> LiveNode {
        let stdout = dir.join(format!("node-{port}.out"));
        let stderr = dir.join(format!("node-{port}.err"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        command
            .args(args)
            .env_remove("EDGEFLOW_INGEST_TOKEN")
            .env_remove("EDGEFLOW_ADMIN_TOKEN")
            .env_remove("EDGEFLOW_READ_TOKEN")
            .stdout(file(&stdout))
            .stderr(file(&stderr));
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().unwrap_or_else(|e| panic!("edgeflow: {e}"));
        LiveNode {
            child: Some(child),
            port,
            stdout,
            stderr,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit; returns its code and stdout.
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.send("TERM");
        self.wait()
    }

    /// Sends the signal `name` (TERM, KILL, ...).
    pub fn send(&self, name: &str) {
        if let Some(child) = &self.child {
            signal(child, name);
        }
    }

    /// Waits for the node to exit by itself (within two minutes: longer is a hang);
    /// returns its code and stdout.
    pub fn wait(&mut self) -> (Option<i32>, String) {
        let Some(mut child) = self.child.take() else {
            return (None, String::new());
        };
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > Duration::from_secs(120) => {
                    child.kill().ok();
                    panic!("the node did not exit within 120 s: {}", self.stderr());
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("{e}"),
            }
        };
        (
            status.code(),
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
        )
    }
}

impl Drop for LiveNode {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

fn file(path: &Path) -> Stdio {
    Stdio::from(std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}")))
}

pub fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(ok.success());
}

/// Pushes JSON lines to the node's `readings` table under an Idempotency-Key:
/// (status, body).
fn push_keyed(port: u16, key: &str, lines: &str) -> (u16, Vec<u8>) {
    let headers = [
        ("Idempotency-Key", key),
        ("Content-Type", "application/x-ndjson"),
    ];
    let (status, _, body) = http(port, "POST", "/ingest/readings", &headers, lines.as_bytes());
    (status, body)
}

/// One HTTP/1.1 request over a plain socket: (status, headers, body).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    use std::io::Write;
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return (0, String::new(), Vec::new());
    };
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    if stream.write_all(request.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return (0, String::new(), Vec::new());
    }
    let reply = read_reply(&mut stream);
    if reply.is_empty() {
        return (0, String::new(), Vec::new());
    }
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(reply.len());
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = reply[(split + 4).min(reply.len())..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, head, body)
}

/// Reads one reply: up to its `Content-Length` when it has one (chromedriver answers
/// `Connection: close` and keeps the socket open), else to the end of the stream.
fn read_reply(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(split) = reply.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&reply[..split]).to_ascii_lowercase();
            let length = head.lines().find_map(|line| {
                line.strip_prefix("content-length:")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            });
            if length.is_some_and(|n| reply.len() >= split + 4 + n) {
                return reply;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return reply,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        let start = eol + 2;
        out.extend_from_slice(&data[start..(start + size).min(data.len())]);
        data = &data[(start + size + 2).min(data.len())..];
    }
}

/// A push table in ten-second windows, with an idle timeout.
pub const PUSH_QUERY: &str = "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'http_push', event_time = 'ts', max_out_of_orderness = '1s', idle_timeout = '1s');
SELECT device_id, window_start, window_end, COUNT(*) AS n, SUM(bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '10' SECOND)
GROUP BY device_id, window_start, window_end;";

/// [`PUSH_QUERY`] without its idle timeout: windows close by the watermark only, never
/// by the clock between two requests of a test.
pub fn push_query_without_idle() -> String {
    PUSH_QUERY.replace(", idle_timeout = '1s'", "")
}

/// `serve` of [`push_query_without_idle`] written as `name`, without sync, with `args`
/// after the query file.
pub fn push_node(dir: &Path, name: &str, args: &[&str]) -> LiveNode {
    let query = write_query(dir, name, &push_query_without_idle());
    let mut all = vec!["serve", query.to_str().unwrap_or_default(), "--no-sync"];
    all.extend_from_slice(args);
    LiveNode::start(dir, &all, &[])
}

pub fn write_query(dir: &Path, name: &str, sql: &str) -> PathBuf {
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, sql).unwrap_or_else(|e| panic!("{e}"));
    path
}

pub fn line(device: &str, ts: i64, bytes: i64) -> String {
    format!("{{\"device_id\":\"{device}\",\"ts\":{ts},\"bytes_in\":{bytes}}}\n")
}

/// (device, window start µs) -> (count, sum), the plain computation.
pub type Expected = BTreeMap<(String, i64), (i64, i64)>;

pub fn add(expected: &mut Expected, device: &str, ts_ms: i64, bytes: i64) {
    let start = ts_ms.div_euclid(10_000) * 10_000 * 1000;
    let e = expected.entry((device.to_owned(), start)).or_default();
    e.0 += 1;
    e.1 += bytes;
}

/// The latest revision of each window's rows, as (device, window start) -> (n, sum).
pub fn written(out: &Path, query: &str) -> Expected {
    let mut rows = read_rows(&out.join(query));
    sort_rows(&mut rows);
    let mut latest: BTreeMap<(String, i64), (i32, i64, i64)> = BTreeMap::new();
    for row in rows {
        let (Value::Text(device), Value::Timestamp(start), Value::BigInt(n), Value::BigInt(sum)) =
            (&row[0], &row[1], &row[3], &row[4])
        else {
            panic!("unexpected row {row:?}");
        };
        let revision = match row.last() {
            Some(Value::BigInt(r)) => *r as i32,
            _ => 0,
        };
        let entry = latest
            .entry((device.clone(), *start))
            .or_insert((revision, *n, *sum));
        if revision >= entry.0 {
            *entry = (revision, *n, *sum);
        }
    }
    latest
        .into_iter()
        .map(|(k, (_, n, s))| (k, (n, s)))
        .collect()
}

#[test]
fn push_needs_a_token_keeps_every_good_line_and_names_the_bad_ones() {
    let dir = tempdir();
    // No idle timeout: the clock must not close windows between the requests.
    let query = write_query(dir.path(), "pushed", &push_query_without_idle());
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--workers",
            "2",
        ],
        &[("EDGEFLOW_INGEST_TOKEN", "s3cret")],
    );
    let t0 = now_ms() - 30_000;
    let good = line("a", t0, 10);
    for auth in [None, Some("Bearer wrong"), Some("s3cret")] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
        let (status, head, _) = http(
            node.port,
            "POST",
            "/ingest/readings",
            &headers,
            good.as_bytes(),
        );
        assert_eq!(status, 401, "auth {auth:?}: {head}");
    }
    let mut expected = Expected::new();
    let mut batch = String::new();
    for i in 0..50 {
        let (device, ts, bytes) = (format!("d{}", i % 5), t0 + i * 700, 100 + i);
        batch.push_str(&line(&device, ts, bytes));
        add(&mut expected, &device, ts, bytes);
        if i % 10 == 3 {
            batch.push_str("{\"device_id\":\"broken\",\"ts\":\n");
        }
    }
    // A year ahead of the node's clock: refused, and never moves the watermark.
    batch.push_str(&line("future", now_ms() + 365 * 86_400_000, 1));
    let auth = [
        ("Authorization", "Bearer s3cret"),
        ("Content-Type", "application/x-ndjson"),
    ];
    let (status, head, body) = http(
        node.port,
        "POST",
        "/ingest/readings",
        &auth,
        batch.as_bytes(),
    );
    assert_eq!(status, 200, "{head}");
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer["accepted"], 50, "{answer}");
    assert_eq!(answer["rejected"], 6, "{answer}");
    let lines: Vec<u64> = answer["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["line"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(lines, vec![5, 16, 27, 38, 49, 56], "{answer}");
    assert!(
        answer["errors"][5]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("ahead of the node's clock")),
        "{answer}"
    );
    // A JSON array, gzip-compressed.
    let last = t0 + 49 * 700;
    let array = format!(
        "[{{\"device_id\":\"z\",\"ts\":{last},\"bytes_in\":7}}, {{\"device_id\":\"z\",\"ts\":{},\"bytes_in\":8}}]",
        last + 1
    );
    add(&mut expected, "z", last, 7);
    add(&mut expected, "z", last + 1, 8);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, array.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let gz = gz.finish().unwrap_or_else(|e| panic!("{e}"));
    let headers = [
        ("Authorization", "Bearer s3cret"),
        ("Content-Type", "application/json"),
        ("Content-Encoding", "gzip"),
    ];
    let (status, _, body) = http(node.port, "POST", "/ingest/readings", &headers, &gz);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let (status, _, _) = http(
        node.port,
        "POST",
        "/ingest/readings",
        &[
            ("Authorization", "Bearer s3cret"),
            ("Content-Type", "image/png"),
        ],
        b"x",
    );
    assert_eq!(status, 415);
    let (status, _, _) = http(node.port, "POST", "/ingest/nowhere", &auth, good.as_bytes());
    assert_eq!(status, 404);

    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(
        written(&dir.path().join("out"), "pushed"),
        expected,
        "{stdout}"
    );
    let letters = dead_letters(&dir.path().join("out"), "pushed");
    assert_eq!(letters.lines().count(), 6, "{letters}");
    assert!(letters.contains("line 5:"), "{letters}");
    assert!(letters.contains("POST /ingest/readings"), "{letters}");
}

#[test]
fn a_batch_resent_with_its_idempotency_key_counts_once_across_a_restart() {
    let dir = tempdir();
    let query = write_query(dir.path(), "keyed", &push_query_without_idle());
    let args = [
        "serve",
        query.to_str().unwrap_or_default(),
        "--no-sync",
        "--workers",
        "2",
    ];
    let t0 = now_ms() - 60_000;
    let mut expected = Expected::new();
    let mut first = String::new();
    for i in 0..20 {
        let (device, ts) = (format!("d{}", i % 3), t0 + i * 500);
        first.push_str(&line(&device, ts, i));
        add(&mut expected, &device, ts, i);
    }
    let push = |port: u16, key: Option<&str>, body: &str| {
        let mut headers = vec![("Content-Type", "application/x-ndjson")];
        headers.extend(key.map(|k| ("Idempotency-Key", k)));
        let (status, head, answer) =
            http(port, "POST", "/ingest/readings", &headers, body.as_bytes());
        let replayed = head
            .to_ascii_lowercase()
            .contains("idempotent-replayed: true");
        (
            status,
            replayed,
            String::from_utf8_lossy(&answer).into_owned(),
        )
    };
    let node = LiveNode::start(dir.path(), &args, &[]);
    let (status, replayed, answer) = push(node.port, Some("batch-1"), &first);
    assert_eq!((status, replayed), (200, false), "{answer}");
    assert!(answer.contains("\"accepted\":20"), "{answer}");
    // The answer was lost; the client sends the batch again.
    let again = push(node.port, Some("batch-1"), &first);
    assert_eq!(again, (200, true, answer.clone()));
    let (status, _, refusal) = push(node.port, Some("batch-1"), &line("d0", t0, 1));
    assert_eq!(status, 422, "another body under a used key: {refusal}");
    let (status, _, refusal) = push(node.port, Some("has space"), &first);
    assert_eq!(status, 400, "{refusal}");
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");

    // The node restarted: the key is still known, and a new key is new.
    let node = LiveNode::start(dir.path(), &args, &[]);
    assert_eq!(
        push(node.port, Some("batch-1"), &first),
        (200, true, answer)
    );
    let mut second = String::new();
    for i in 0..10 {
        let (device, ts) = (format!("d{}", i % 2), t0 + 20_000 + i * 500);
        second.push_str(&line(&device, ts, 100 + i));
        add(&mut expected, &device, ts, 100 + i);
    }
    let (status, replayed, answer) = push(node.port, Some("batch-2"), &second);
    assert_eq!((status, replayed), (200, false), "{answer}");
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(written(&dir.path().join("out"), "keyed"), expected);
}

#[test]
fn one_keyed_batch_sent_eight_times_at_once_counts_once_while_other_keys_go_through() {
    let dir = tempdir();
    let query = write_query(dir.path(), "racing", &push_query_without_idle());
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--workers",
            "2",
        ],
        &[],
    );
    // Every batch within the first 5 s of one window, so the order in which the
    // batches land makes none of them late.
    let t0 = (now_ms() - 60_000).div_euclid(10_000) * 10_000;
    let ts = |i: i64| t0 + (i % 50) * 100;
    let mut expected = Expected::new();
    let body = |first: i64| -> String {
        (first..first + 50)
            .map(|i| line(&format!("d{}", i % 4), ts(i), i))
            .collect()
    };
    for i in 0..50 {
        add(&mut expected, &format!("d{}", i % 4), ts(i), i);
    }
    // Eight copies of batch 0 under one key, and batches 1..=8 under keys of their own,
    // all sent at once.
    let port = node.port;
    let answers: Vec<(String, u16, bool, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (key, body) = if i < 8 {
                    ("same".to_owned(), body(0))
                } else {
                    (format!("own-{i}"), body((i - 7) * 50))
                };
                s.spawn(move || {
                    let (status, head, answer) = http(
                        port,
                        "POST",
                        "/ingest/readings",
                        &[("Idempotency-Key", key.as_str())],
                        body.as_bytes(),
                    );
                    let replayed = head
                        .to_ascii_lowercase()
                        .contains("idempotent-replayed: true");
                    (
                        key,
                        status,
                        replayed,
                        String::from_utf8_lossy(&answer).into_owned(),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("a client failed")))
            .collect()
    });
    for i in 50..450 {
        add(&mut expected, &format!("d{}", i % 4), ts(i), i);
    }
    for (key, status, _, answer) in &answers {
        assert_eq!(*status, 200, "{key}: {answer}");
        assert!(answer.contains("\"accepted\":50"), "{key}: {answer}");
    }
    let same: Vec<_> = answers.iter().filter(|a| a.0 == "same").collect();
    assert_eq!(
        same.iter().filter(|a| !a.2).count(),
        1,
        "one copy is ingested, the others answered again: {same:?}"
    );
    assert!(answers.iter().filter(|a| a.0 != "same").all(|a| !a.2));
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    assert_eq!(written(&dir.path().join("out"), "racing"), expected);
}

#[test]
fn a_quiet_source_closes_its_windows_after_idle_timeout() {
    let dir = tempdir();
    let query = write_query(dir.path(), "quiet", PUSH_QUERY);
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--workers",
            "2",
        ],
        &[],
    );
    // Readings of one window that has ended: once the source has been quiet for a
    // second, the watermark follows the clock and the window closes, with no more
    // readings and no stop. They start 100 ms into a window, so they never straddle two.
    let t = (now_ms() - 20_000).div_euclid(10_000) * 10_000 + 100;
    let mut batch = String::new();
    for i in 0..20 {
        batch.push_str(&line("dev", t + i, 1));
    }
    let (status, _, body) = http(node.port, "POST", "/ingest/readings", &[], batch.as_bytes());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let results = dir.path().join("out").join("quiet");
    wait_until(
        "the window to close while the node runs",
        Duration::from_secs(60),
        || !parquet_files(&results).is_empty(),
    );
    let rows = read_rows(&results);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][3], Value::BigInt(20));
    let (code, _) = node.stop();
    assert_eq!(code, Some(0));
}

/// A live source deals its chunks round-robin, so one push reaches one worker. The
/// windows it closes must close on every worker count, while the node runs and with no
/// idle timeout: a worker dealt nothing follows the chunks the others read.
#[test]
fn one_push_closes_its_windows_on_every_worker_count() {
    for workers in ["2", "4"] {
        let dir = tempdir();
        let query = write_query(dir.path(), "dealt", &push_query_without_idle());
        let node = LiveNode::start(
            dir.path(),
            &[
                "serve",
                query.to_str().unwrap_or_default(),
                "--no-sync",
                "--workers",
                workers,
            ],
            &[],
        );
        let out = dir.path().join("out");
        let start = (now_ms() - 60_000).div_euclid(10_000) * 10_000;
        let mut expected = Expected::new();
        let push = |readings: &[(&str, i64)], expected: &mut Expected| {
            let mut batch = String::new();
            for &(device, ts) in readings {
                batch.push_str(&line(device, ts, 5));
                add(expected, device, ts, 5);
            }
            let (status, _, body) =
                http(node.port, "POST", "/ingest/readings", &[], batch.as_bytes());
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        };
        // The last reading passes the first window's end by more than the second of
        // allowed out-of-orderness: the watermark it brings closes that window.
        push(
            &[
                ("a", start + 100),
                ("b", start + 4_000),
                ("a", start + 12_500),
            ],
            &mut expected,
        );
        let first: Expected = expected
            .iter()
            .filter(|((_, w), _)| *w == start * 1000)
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        wait_until(
            &format!("the first window to close at {workers} workers"),
            Duration::from_secs(60),
            || !parquet_files(&out.join("dealt")).is_empty(),
        );
        assert_eq!(written(&out, "dealt"), first, "{workers} workers");
        // A second push, dealt to another worker, closes the next window.
        push(&[("c", start + 25_000)], &mut expected);
        let closed = expected.len() - 1;
        wait_until(
            &format!("the second window to close at {workers} workers"),
            Duration::from_secs(60),
            || written(&out, "dealt").len() == closed,
        );
        let (code, stdout) = node.stop();
        assert_eq!(code, Some(0), "{stdout}");
        assert_eq!(written(&out, "dealt"), expected, "{workers} workers");
    }
}

#[test]
fn under_a_full_quota_push_answers_503_and_never_drops_what_it_accepted() {
    let dir = tempdir();
    let query = write_query(dir.path(), "quota", PUSH_QUERY);
    // A target nobody answers at keeps every file pending: one closed window fills a
    // 1-byte quota.
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--workers",
            "1",
            "--sync",
            "s3://nowhere/edge",
            "--s3-endpoint",
            &format!("http://127.0.0.1:{}", free_port()),
            "--s3-allow-http",
            "--max-pending-bytes",
            "1",
            "--sync-timeout",
            "1s",
        ],
        &[
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    let mut expected = Expected::new();
    let t = now_ms() - 60_000;
    let mut accepted = 0;
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while refused == 0 {
        assert!(
            Instant::now() < deadline,
            "never refused: the quota is not enforced"
        );
        let ts = t + i * 10_000;
        let (status, head, body) = http(
            node.port,
            "POST",
            "/ingest/readings",
            &[],
            line("q", ts, 5).as_bytes(),
        );
        match status {
            200 => {
                accepted += 1;
                add(&mut expected, "q", ts, 5);
            }
            503 => {
                refused += 1;
                assert!(
                    head.to_ascii_lowercase().contains("retry-after: "),
                    "{head}"
                );
            }
            other => panic!("{other}: {}", String::from_utf8_lossy(&body)),
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(accepted >= 1);
    let (code, stdout) = node.stop();
    // Sync could not finish: the node says so, but every accepted reading is written.
    assert!(code.is_some(), "{stdout}");
    assert_eq!(
        written(&dir.path().join("out"), "quota"),
        expected,
        "{stdout}"
    );
}

#[test]
fn a_followed_glob_reads_new_files_and_files_that_grew_as_they_appear() {
    let dir = tempdir();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap_or_else(|e| panic!("{e}"));
    let sql = push_query_without_idle().replace(
        "connector = 'http_push'",
        "connector = 'file', path = 'inbox/*.jsonl', follow = 'true', poll_interval = '100ms'",
    );
    let query = write_query(dir.path(), "hourly", &sql);
    let mut expected = Expected::new();
    let t0 = 1_767_225_600_000i64;
    let mut text = String::new();
    for i in 0..30 {
        text.push_str(&line("a", t0 + i * 1000, i));
        add(&mut expected, "a", t0 + i * 1000, i);
    }
    std::fs::write(inbox.join("h00.jsonl"), &text).unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .arg("run")
        .arg(&query)
        .arg("--output")
        .arg(&out)
        .args(["--no-sync", "--workers", "2", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let results = out.join("hourly");
    wait_until("the first file's windows", Duration::from_secs(60), || {
        parquet_files(&results).len() >= 2
    });
    // The next hour's file appears...
    let mut next = String::new();
    for i in 30..60 {
        next.push_str(&line("a", t0 + i * 1000, i));
        add(&mut expected, "a", t0 + i * 1000, i);
    }
    std::fs::write(inbox.join("h01.jsonl"), &next).unwrap_or_else(|e| panic!("{e}"));
    wait_until("the new file to be read", Duration::from_secs(60), || {
        written(&out, "hourly") == expected
    });
    // ... and an earlier one grows: it is read from where it was left.
    let mut grown = std::fs::OpenOptions::new()
        .append(true)
        .open(inbox.join("h00.jsonl"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::io::Write::write_all(&mut grown, line("b", t0 + 70_000, 7).as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    add(&mut expected, "b", t0 + 70_000, 7);
    drop(grown);
    wait_until("the grown file to be read", Duration::from_secs(60), || {
        written(&out, "hourly") == expected
    });
    signal(&child, "TERM");
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        pipe.read_to_string(&mut stdout).ok();
    }
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.code(), Some(143), "{stdout}");
    assert_eq!(written(&out, "hourly"), expected);
}

/// Keyed pushes fill a small quota with the write-ahead log alone (synced to a local
/// folder, so no file waits long): the node answers 503, and once a checkpoint lets the
/// log go it takes the resend. The log keeps every record whose Idempotency-Key is not
/// kept yet, and only a push taken used to keep keys: the node refused for good.
#[test]
fn a_node_whose_log_filled_the_quota_takes_the_resend_after_a_checkpoint() {
    let dir = tempdir();
    let query = write_query(dir.path(), "pushed", &push_query_without_idle());
    let target = format!("file://{}", dir.path().join("bucket").display());
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--sync",
            &target,
            "--max-pending-bytes",
            "16KiB",
            "--on-quota",
            "backpressure",
            "--checkpoint-every",
            "1s",
            "--workers",
            "1",
        ],
        &[],
    );
    let t0 = now_ms() - 30_000;
    let batch = |i: i64| -> String {
        (0..20)
            .map(|k| line(&format!("d{k}"), t0 + i, i * 20 + k))
            .collect()
    };
    let push = |i: i64| push_keyed(node.port, &format!("batch-{i}"), &batch(i)).0;
    let mut refused = 0;
    while push(refused) == 200 {
        refused += 1;
        assert!(refused < 5_000, "the quota never filled");
    }
    wait_until(
        "the refused batch taken on a resend",
        Duration::from_secs(60),
        || push(refused) == 200,
    );
    let (code, log) = node.stop();
    assert_eq!(code, Some(0), "{log}");
    let mut expected = Expected::new();
    for i in 0..=refused {
        for k in 0..20 {
            add(&mut expected, &format!("d{k}"), t0 + i, i * 20 + k);
        }
    }
    assert_eq!(written(&dir.path().join("out"), "pushed"), expected);
}

/// Posts `batches` batches of 20 readings (devices `d0`..`d19`, from `t0` on) to the
/// node's `readings` table, keyed `{keys}-{i}`, adding them to `expected`.
fn push_burst(port: u16, keys: &str, batches: i64, t0: i64, expected: &mut Expected) {
    for i in 0..batches {
        let batch: String = (0..20)
            .map(|k| {
                add(expected, &format!("d{k}"), t0 + i, i * 20 + k);
                line(&format!("d{k}"), t0 + i, i * 20 + k)
            })
            .collect();
        let key = format!("{keys}-{i}");
        let headers = [
            ("Idempotency-Key", key.as_str()),
            ("Content-Type", "application/x-ndjson"),
        ];
        let (status, _, body) = http(port, "POST", "/ingest/readings", &headers, batch.as_bytes());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
}

/// Bytes of the `readings` table's write-ahead log under `out`.
fn log_bytes(out: &Path) -> u64 {
    std::fs::read_dir(out.join("_state/_wal/readings"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Segment headers only: not one batch (20 readings, about 1 KB) is kept.
const HEADERS_ONLY: u64 = 200;

/// A burst of keyed pushes, then a quiet node: the checkpoints that follow cut the log.
/// The log keeps every record whose Idempotency-Key is not durable yet, and only a push
/// coming a second after the last fsync made keys durable: after the last push of a
/// burst nothing did, and the log held the whole burst until the next push.
#[test]
fn after_a_burst_of_keyed_pushes_the_checkpoints_cut_the_log() {
    let dir = tempdir();
    let node = push_node(
        dir.path(),
        "pushed",
        &["--checkpoint-every", "200ms", "--workers", "1"],
    );
    let mut expected = Expected::new();
    push_burst(node.port, "burst", 40, now_ms() - 30_000, &mut expected);
    let out = dir.path().join("out");
    wait_until(
        "the checkpoints after the burst to cut the log down to its segment headers",
        Duration::from_secs(30),
        || log_bytes(&out) < HEADERS_ONLY,
    );
    let (code, log) = node.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(written(&out, "pushed"), expected);
}

/// A clean stop cuts the log too: its queries' last checkpoints come after the feeds
/// closed, and were dropped, so a node that took no checkpoint in its life (a short one
/// between crashes) left everything it received for the next start to replay.
#[test]
fn a_clean_stop_leaves_nothing_in_the_log_for_the_next_start() {
    let dir = tempdir();
    let out = dir.path().join("out");
    let mut expected = Expected::new();
    let t0 = now_ms() - 30_000;
    for run in 0..2 {
        let node = push_node(
            dir.path(),
            "pushed",
            &["--checkpoint-every", "1h", "--workers", "1"],
        );
        push_burst(
            node.port,
            &format!("run{run}"),
            10,
            t0 + run * 1_000,
            &mut expected,
        );
        let (code, log) = node.stop();
        assert_eq!(code, Some(0), "{log}");
        assert!(
            log_bytes(&out) < HEADERS_ONLY,
            "run {run}: {} bytes of log left after a clean stop",
            log_bytes(&out)
        );
    }
    assert_eq!(written(&out, "pushed"), expected);
}
