//! MQTT through a real mosquitto broker: QoS 1 readings all arrive across a broker
//! restart (persistent session, acknowledged only once handed to the queries).

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeflow::types::Value;

use crate::live::{LiveNode, http, signal, tempdir, write_query};
use crate::s3_server::{free_port, wait_until};
use crate::support::read_rows;

/// mosquitto on a loopback port with persistence in a folder of the test, so queued
/// QoS 1 messages and sessions survive a restart, and no limit on the messages queued
/// for a client that is away (mosquitto drops QoS 1 messages past 1000 by default).
pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    config: PathBuf,
}

impl Broker {
    pub fn start(dir: &Path) -> Broker {
        let port = free_port();
        let data = dir.join("mosquitto");
        std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
        Broker::with_config(
            dir,
            port,
            &format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nuser root\n",
                data.display()
            ),
        )
    }

    /// mosquitto with `config`; `port` is one it listens on.
    fn with_config(dir: &Path, port: u16, text: &str) -> Broker {
        let config = dir.join("mosquitto.conf");
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        let mut broker = Broker {
            child: None,
            port,
            config,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "mosquitto: {e} (install it: apt-get install -y mosquitto mosquitto-clients; ./tests/run.sh does)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("mosquitto ended: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto not listening after 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM (mosquitto saves its persistence file), then starts it again.
    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            child.wait().ok();
        }
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

/// `edgeflow devices` publishing `readings` readings of 20 devices at `rate` a second
/// with QoS 1 to the broker on `port`, logging each to `log`.
pub fn publisher(port: u16, readings: usize, rate: u32, log: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    command
        .args(["devices", "--devices", "20", "--seed", "5"])
        .args(["--rate", &rate.to_string()])
        .args(["--readings", &readings.to_string()])
        .args(["--qos", "1", "--client-id", "fleet-pub"])
        .arg("--mqtt")
        .arg(format!("mqtt://127.0.0.1:{port}"))
        .arg("--log")
        .arg(log)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// Publishes each line of `messages` as one QoS 1 message to `topic` with
/// `mosquitto_pub`, returning once the broker took them all.
fn publish_lines(port: u16, topic: &str, messages: &str) {
    let mut publish = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", topic, "-q", "1", "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("mosquitto_pub: {e} (./tests/run.sh installs mosquitto-clients)")
        });
    if let Some(mut stdin) = publish.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(messages.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert!(publish.wait().is_ok_and(|s| s.success()));
}

/// The node's `GET /api/v1/ingest`, or Null while it does not answer.
pub fn ingest(node: &LiveNode) -> serde_json::Value {
    let (_, _, body) = http(node.port, "GET", "/api/v1/ingest", &[], b"");
    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null)
}

/// `edgeflow serve` of the query `sql`, written as `name.sql` in `dir`, without sync
/// and with `extra` flags, once its MQTT client is connected (`what` says how).
fn serve_connected(dir: &Path, name: &str, sql: &str, extra: &[&str], what: &str) -> LiveNode {
    let query = write_query(dir, name, sql);
    let mut args = vec![
        "serve",
        query.to_str().unwrap_or_default(),
        "--no-sync",
        "--json",
    ];
    args.extend_from_slice(extra);
    let node = LiveNode::start(dir, &args, &[]);
    wait_until(what, Duration::from_secs(30), || {
        ingest(&node)["tables"]["readings"]["source"]["connected"] == true
    });
    node
}

#[test]
fn qos1_readings_all_arrive_across_a_broker_restart() {
    let dir = tempdir();
    let mut broker = Broker::start(dir.path());
    // One row per reading, so that every published reading can be found.
    let sql = format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, bytes_out BIGINT,
                       packets BIGINT, latency_ms DOUBLE)
WITH (connector = 'mqtt', broker = 'mqtt://127.0.0.1:{}', topic = 'devices/+/traffic', qos = '1',
      device_id_from_topic = '2', client_id = 'edge-node-test', event_time = 'ts',
      max_out_of_orderness = '1h');
SELECT device_id, ts, bytes_in, window_start, COUNT(*) AS n
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, ts, bytes_in, window_start;",
        broker.port
    );
    // The node's subscription exists before publishing starts.
    let node = serve_connected(
        dir.path(),
        "mqtt_in",
        &sql,
        &["--workers", "2"],
        "the node to connect",
    );
    let log = dir.path().join("published.jsonl");
    let readings = 3000;
    let mut publisher = publisher(broker.port, readings, 300, &log)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let logged = || {
        std::fs::read_to_string(&log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    wait_until(
        "a third of the readings to be published",
        Duration::from_secs(60),
        || logged() >= readings / 3,
    );
    broker.restart();
    let status = publisher.wait().unwrap_or_else(|e| panic!("{e}"));
    assert!(status.success(), "the publisher ended with {status}");

    let published: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("{e}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(published.len(), readings);
    let mut want: BTreeMap<(String, i64, i64), u64> = BTreeMap::new();
    for r in &published {
        let key = (
            r["device_id"].as_str().unwrap_or_default().to_owned(),
            r["ts"].as_i64().unwrap_or_default() * 1000,
            r["bytes_in"].as_i64().unwrap_or_default(),
        );
        *want.entry(key).or_default() += 1;
    }
    // Every reading the broker acknowledged reaches the node: stop it once it has them.
    wait_until(
        "the node to receive every reading",
        Duration::from_secs(120),
        || {
            ingest(&node)["tables"]["readings"]["received"]
                .as_u64()
                .is_some_and(|n| n >= readings as u64)
        },
    );
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let summary: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let received = summary["node"]["received"]["readings"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        received >= readings as u64,
        "{received} of {readings} readings received: {}",
        summary["node"]
    );
    let mut got: BTreeMap<(String, i64, i64), u64> = BTreeMap::new();
    for row in read_rows(&dir.path().join("out").join("mqtt_in")) {
        let (Value::Text(device), Value::Timestamp(ts), Value::BigInt(bytes), Value::BigInt(n)) =
            (&row[0], &row[1], &row[2], &row[4])
        else {
            panic!("unexpected row {row:?}");
        };
        *got.entry((device.clone(), *ts, *bytes)).or_default() += *n as u64;
    }
    let missing: Vec<_> = want
        .keys()
        .filter(|k| !got.contains_key(*k))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "readings lost across the restart: {missing:?}"
    );
    // At least once: a redelivered message may count twice, never more.
    for (key, n) in &got {
        let w = want.get(key).copied().unwrap_or(0);
        assert!(w > 0, "a reading nobody published: {key:?}");
        assert!(*n <= 2 * w, "{key:?} counted {n} times");
    }
    assert!(
        summary["node"]["mqtt"]["readings"]["disconnects"]
            .as_u64()
            .unwrap_or(0)
            >= 1,
        "the node never saw the broker go: {}",
        summary["node"]["mqtt"]
    );
}

#[test]
fn a_tls_broker_is_reached_with_the_ca_the_query_names() {
    let dir = tempdir();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap_or_else(|e| panic!("rcgen: {e}"));
    let (cert, key) = (dir.path().join("broker.pem"), dir.path().join("broker.key"));
    std::fs::write(&cert, made.cert.pem()).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap_or_else(|e| panic!("{e}"));
    // The node subscribes over TLS; the test publishes on a plain listener of the same
    // broker with mosquitto's own client.
    let (tls_port, plain_port) = (free_port(), free_port());
    let _broker = Broker::with_config(
        dir.path(),
        tls_port,
        &format!(
            "allow_anonymous true\nuser root\nlistener {tls_port} 127.0.0.1\ncertfile {}\nkeyfile {}\nlistener {plain_port} 127.0.0.1\n",
            cert.display(),
            key.display()
        ),
    );
    let sql = format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'mqtt', broker = 'mqtts://localhost:{tls_port}', ca_file = 'broker.pem',
      topic = 'devices/+/traffic', qos = '1', device_id_from_topic = '2',
      client_id = 'edge-node-tls', event_time = 'ts', max_out_of_orderness = '1h');
SELECT device_id, window_start, COUNT(*) AS n, SUM(bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start;"
    );
    let node = serve_connected(
        dir.path(),
        "mqtt_tls",
        &sql,
        &[],
        "the node to connect over TLS",
    );
    let messages: String = (0..20)
        .map(|i| {
            format!(
                "{{\"ts\": {}, \"bytes_in\": {i}}}\n",
                1_767_225_600_000i64 + i * 1000
            )
        })
        .collect();
    publish_lines(plain_port, "devices/d1/traffic", &messages);
    wait_until(
        "the node to receive the 20 readings",
        Duration::from_secs(30),
        || ingest(&node)["tables"]["readings"]["received"].as_u64() == Some(20),
    );
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let rows = read_rows(&dir.path().join("out").join("mqtt_tls"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], Value::Text("d1".into()), "{rows:?}");
    assert_eq!(rows[0][2], Value::BigInt(20), "{rows:?}");
    assert_eq!(rows[0][3], Value::BigInt((0..20).sum()), "{rows:?}");
}

#[test]
fn bad_readings_and_oversized_messages_are_dead_lettered_as_published_naming_their_topic() {
    let dir = tempdir();
    let broker = Broker::start(dir.path());
    let sql = format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (connector = 'mqtt', broker = 'mqtt://127.0.0.1:{}', topic = 'devices/+/traffic',
      qos = '1', device_id_from_topic = '2', client_id = 'edge-node-bad',
      event_time = 'ts', max_out_of_orderness = '1h', max_body = '4KiB');
SELECT device_id, window_start, COUNT(*) AS n, SUM(bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start;",
        broker.port
    );
    let node = serve_connected(dir.path(), "mqtt_bad", &sql, &[], "the node to connect");
    // Four readings as JSON lines: good, broken, a field of the wrong type (keys in the
    // device's order, which the node's reshaping would sort), good.
    let wrong_type = r#"{"ts": 1767225602000, "bytes_in": "lots"}"#;
    // Over max_body: refused by the MQTT client, it would drop the connection, and the
    // broker would deliver it again at every reconnect, ahead of the messages after it.
    let oversized = format!(
        r#"{{"ts": 1767225603500, "bytes_in": 1, "pad": "{}"}}"#,
        "x".repeat(5000)
    );
    // Stamped in 2100, far ahead of the node's clock, between two good readings.
    let ahead = r#"{"bytes_in": 3, "ts": 4102444800000}"#;
    let messages = [
        format!(
            "{{\"ts\": 1767225600000, \"bytes_in\": 5}}\n{{\"ts\": 176722\n{wrong_type}\n{{\"ts\": 1767225603000, \"bytes_in\": 7}}"
        ),
        oversized.clone(),
        // One object, pretty-printed: one reading.
        "{\n  \"ts\": 1767225604000,\n  \"bytes_in\": 11\n}\n".to_owned(),
        format!(
            "{{\"ts\": 1767225605000, \"bytes_in\": 1}}\n{ahead}\n{{\"ts\": 1767225606000, \"bytes_in\": 2}}"
        ),
    ];
    for message in &messages {
        let published = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-t", "devices/d7/traffic", "-q", "1", "-m", message])
            .status()
            .unwrap_or_else(|e| {
                panic!("mosquitto_pub: {e} (./tests/run.sh installs mosquitto-clients)")
            });
        assert!(published.success());
    }
    wait_until(
        "the node to receive the 5 good readings",
        Duration::from_secs(30),
        || ingest(&node)["tables"]["readings"]["received"].as_u64() == Some(5),
    );
    let source = &ingest(&node)["tables"]["readings"]["source"];
    assert_eq!(source["disconnects"], 0, "{source}");
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let rows = read_rows(&dir.path().join("out").join("mqtt_bad"));
    assert_eq!(
        rows,
        vec![vec![
            Value::Text("d7".into()),
            Value::Timestamp(1_767_225_600_000_000),
            Value::BigInt(5),
            Value::BigInt(26),
        ]]
    );
    let letters: Vec<serde_json::Value> =
        crate::support::dead_letters(&dir.path().join("out"), "mqtt_bad")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
    let seen: Vec<(&str, &str)> = letters
        .iter()
        .map(|l| {
            (
                l["reason"].as_str().unwrap_or_default(),
                l["raw"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let topic = "mqtt topic devices/d7/traffic";
    assert!(
        seen[0]
            .0
            .starts_with(&format!("{topic}: line 2: broken JSON")),
        "{seen:?}"
    );
    assert_eq!(seen[0].1, r#"{"ts": 176722"#);
    assert_eq!(
        seen[1],
        (
            format!(
                "{topic}: line 3: field `bytes_in`: expected BIGINT (an integer), found a string"
            )
            .as_str(),
            wrong_type
        )
    );
    assert_eq!(
        seen[2].0,
        format!(
            "{topic}: message of {} bytes, larger than 4096 bytes (max_body)",
            oversized.len()
        )
    );
    assert_eq!(seen[2].1, &oversized[..1024]);
    assert!(
        seen[3].0.starts_with(&format!(
            "{topic}: line 2: timestamp ahead of the node's clock"
        )),
        "{seen:?}"
    );
    assert_eq!(seen[3].1, ahead);
}
