//! `edgeflow devices`, the fleet simulator, driven as a process over real sockets.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn edgeflow() -> Command {
    Command::new(env!("CARGO_BIN_EXE_edgeflow"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the simulator has written its port file; returns the port.
fn wait_for_port(child: &mut Child, port_file: &Path) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(port) = std::fs::read_to_string(port_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            return port;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the simulator ended before listening: {status}");
        }
        assert!(Instant::now() < deadline, "no port file after 60 s");
        std::thread::sleep(Duration::from_millis(10));
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// One HTTP/1.1 GET on a fresh connection.
fn get(port: u16, path: &str) -> Answer {
    try_get(port, path, Duration::from_secs(30)).unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

fn try_get(port: u16, path: &str, timeout: Duration) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        body: body.to_owned(),
    })
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn counter(reading: &serde_json::Value, field: &str) -> u64 {
    reading[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {reading}"))
}

fn terminate(child: &Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap_or_else(|e| panic!("kill: {e}"));
    assert!(killed.success());
}

#[test]
fn the_fleet_serves_growing_counters_and_faults_and_logs_exactly_what_it_served() {
    let dir = tempdir();
    let port_file = dir.path().join("port");
    let log = dir.path().join("served.jsonl");
    let mut child = edgeflow()
        .args(["devices", "--devices", "10", "--seed", "7"])
        .args(["--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .arg("--log")
        .arg(&log)
        .args([
            "--fault", "3=500", "--fault", "4=html", "--fault", "5=broken",
        ])
        .args(["--fault", "6=dead"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let port = wait_for_port(&mut child, &port_file);

    let health = get(port, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));

    let mut served = Vec::new();
    let first = get(port, "/device/0");
    assert_eq!(first.status, 200);
    assert!(first.content_type.starts_with("application/json"));
    let reading = json(&first.body);
    assert_eq!(reading["device_id"], "dev-000000");
    assert!(reading["ts"].is_i64());
    assert!(reading["latency_ms"].is_f64());
    let start = counter(&reading, "bytes_in");
    assert!(start > 0, "counters start from the device's uptime");
    served.push(first.body);
    // Poll until the counters have visibly moved: they must never go back meanwhile.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = reading;
    loop {
        let answer = get(port, "/device/0");
        assert_eq!(answer.status, 200);
        let reading = json(&answer.body);
        for field in ["bytes_in", "bytes_out", "packets"] {
            assert!(counter(&reading, field) >= counter(&last, field), "{field}");
        }
        assert!(reading["ts"].as_i64() >= last["ts"].as_i64());
        served.push(answer.body);
        if counter(&reading, "bytes_in") > start && counter(&reading, "packets") > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "counters did not grow in 30 s");
        last = reading;
    }
    for device in [1, 9] {
        let answer = get(port, &format!("/device/{device}"));
        assert_eq!(answer.status, 200);
        assert_eq!(json(&answer.body)["device_id"], format!("dev-{device:06}"));
        served.push(answer.body);
    }

    let failing = get(port, "/device/3");
    assert_eq!(failing.status, 500);
    let html = get(port, "/device/4");
    assert_eq!(html.status, 200);
    assert!(
        html.content_type.starts_with("text/html"),
        "{}",
        html.content_type
    );
    assert!(html.body.starts_with("<html>"));
    let broken = get(port, "/device/5");
    assert_eq!(broken.status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&broken.body).is_err());
    for missing in ["/device/10", "/device/x"] {
        let answer = get(port, missing);
        assert_eq!(answer.status, 404, "{missing}");
        assert!(json(&answer.body)["error"].is_string());
    }

    // A dead device holds its request open (the read times out); shutdown must not
    // wait for it.
    let dead = try_get(port, "/device/6", Duration::from_millis(300));
    assert!(dead.is_err(), "a dead device answered");
    let hanging = std::thread::spawn(move || {
        try_get(port, "/device/6", Duration::from_secs(60)).map(|a| a.status)
    });
    assert_eq!(get(port, "/healthz").status, 200);
    let stopping = Instant::now();
    terminate(&child);
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stopping.elapsed() < Duration::from_secs(20),
        "shutdown waited for the dead device"
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    // Whether the server had taken the request before it stopped or not, it has ended.
    let ended = hanging.join();
    assert!(
        matches!(ended, Ok(Ok(503)) | Ok(Err(_))),
        "dead device: {ended:?}"
    );

    let logged = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
    let logged: Vec<&str> = logged.lines().collect();
    assert_eq!(logged, served, "the log holds exactly the readings served");
}

#[test]
fn counters_of_32_bits_stay_below_2_to_the_32_and_devices_can_lack_clock_and_id() {
    let dir = tempdir();
    let port_file = dir.path().join("port");
    let mut child = edgeflow()
        .args(["devices", "--devices", "3", "--counter-bits", "32"])
        .args(["--no-clock", "--no-device-id", "--listen", "127.0.0.1:0"])
        .arg("--port-file")
        .arg(&port_file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let port = wait_for_port(&mut child, &port_file);
    for device in 0..3 {
        let answer = get(port, &format!("/device/{device}"));
        assert_eq!(answer.status, 200);
        let reading = json(&answer.body);
        let keys: Vec<&str> = reading
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        assert_eq!(keys.len(), 4, "{reading}");
        assert!(counter(&reading, "bytes_in") < 1 << 32);
    }
    terminate(&child);
    let status = child.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success());
}

/// A mosquitto broker on a free loopback port, stopped on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new("mosquitto")
            .args(["-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "mosquitto: {e} (install it: apt-get install -y mosquitto mosquitto-clients)"
                )
            });
        let mut broker = Broker { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("mosquitto ended: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto not listening after 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        broker
    }

    /// `mosquitto_sub` as the persistent QoS 1 session `id` on `topic`.
    fn subscriber(&self, id: &str, topic: &str) -> Command {
        let mut command = Command::new("mosquitto_sub");
        command
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-c", "-i", id, "-q", "1", "-t", topic]);
        command
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mqtt_mode_publishes_every_logged_reading_to_its_device_topic() {
    let broker = Broker::start();
    let topic = "devices/+/traffic";
    // The subscription exists before publishing starts; the broker keeps the messages
    // for the persistent session until it comes back to read them.
    let subscribed = broker
        .subscriber("it-sub", topic)
        .arg("-E")
        .status()
        .unwrap_or_else(|e| panic!("mosquitto_sub: {e}"));
    assert!(subscribed.success());

    let dir = tempdir();
    let log = dir.path().join("published.jsonl");
    let output = edgeflow()
        .args(["devices", "--devices", "20", "--fault", "2=dead"])
        .args(["--mqtt", &format!("mqtt://127.0.0.1:{}", broker.port)])
        .args([
            "--qos",
            "1",
            "--readings",
            "200",
            "--rate",
            "2000",
            "--json",
        ])
        .arg("--log")
        .arg(&log)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(summary["sent"], 200, "{summary}");
    assert_eq!(summary["acknowledged"], 200, "{summary}");

    let received = broker
        .subscriber("it-sub", topic)
        .args(["-v", "-C", "200", "-W", "30"])
        .output()
        .unwrap_or_else(|e| panic!("mosquitto_sub: {e}"));
    assert!(
        received.status.success(),
        "the subscriber got fewer than 200"
    );
    let mut received: Vec<String> = String::from_utf8_lossy(&received.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let logged = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{e}"));
    let mut expected: Vec<String> = logged
        .lines()
        .map(|line| {
            let device = json(line)["device_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert_ne!(device, "dev-000002", "a dead device published");
            format!("devices/{device}/traffic {line}")
        })
        .collect();
    received.sort();
    expected.sort();
    assert_eq!(received.len(), 200);
    assert_eq!(received, expected);
}
