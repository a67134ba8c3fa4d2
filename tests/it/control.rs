//! The control plane of a live node: its REST routes with good and bad input, queries
//! started and stopped at run time while another keeps producing the right rows, a
//! query added over the API that survives a restart, `/metrics` read by Prometheus's
//! own parser, TLS, and `edgeflow ctl`. Real processes, real HTTP on 127.0.0.1.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::live::{
    Expected, LiveNode, add, http, line, push_node, push_query_without_idle, tempdir, write_query,
    written,
};
use crate::s3_server::{free_port, wait_until};

const ADMIN: &str = "admin-secret";
const READ: &str = "read-secret";
const INGEST: &str = "ingest-secret";

fn tokens() -> Vec<(&'static str, &'static str)> {
    vec![
        ("EDGEFLOW_ADMIN_TOKEN", ADMIN),
        ("EDGEFLOW_READ_TOKEN", READ),
        ("EDGEFLOW_INGEST_TOKEN", INGEST),
    ]
}

/// A request with a bearer token (or none); (status, JSON body or Null).
fn call(
    node: &LiveNode,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let (status, _, body) = http(node.port, method, path, &headers, body.as_bytes());
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn push(node: &LiveNode, token: Option<&str>, lines: &str) -> Value {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/x-ndjson")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth.as_str()));
    }
    let (status, _, body) = http(
        node.port,
        "POST",
        "/ingest/readings",
        &headers,
        lines.as_bytes(),
    );
    assert_eq!(status, 200, "push: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or(Value::Null)
}

fn state_of(node: &LiveNode, name: &str) -> String {
    let (_, detail) = call(
        node,
        "GET",
        &format!("/api/v1/queries/{name}"),
        Some(ADMIN),
        "",
    );
    detail["state"].as_str().unwrap_or("").to_owned()
}

fn add_body(name: &str, sql: &str) -> String {
    serde_json::json!({ "name": name, "sql": sql }).to_string()
}

#[test]
fn every_route_checks_its_token_and_its_input() {
    let dir = tempdir();
    let query = write_query(dir.path(), "steady", &push_query_without_idle());
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--workers",
            "1",
        ],
        &tokens(),
    );
    // Health needs no token; everything else does.
    assert_eq!(http(node.port, "GET", "/healthz", &[], b"").0, 200);
    wait_until("readyz says ready", Duration::from_secs(30), || {
        http(node.port, "GET", "/readyz", &[], b"").0 == 200
    });
    let (status, doc) = call(&node, "GET", "/api/v1/openapi.json", None, "");
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/api/v1/queries",
        "/api/v1/queries/{name}/stop",
        "/ingest/{table}",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }

    // 401 without or with a wrong token, 403 with a token lacking the scope.
    for route in [
        "/api/v1/queries",
        "/api/v1/queries/steady",
        "/metrics",
        "/api/v1/node",
    ] {
        assert_eq!(
            call(&node, "GET", route, None, "").0,
            401,
            "GET {route} without a token"
        );
        assert_eq!(
            call(&node, "GET", route, Some("wrong"), "").0,
            401,
            "GET {route}, wrong token"
        );
        assert_eq!(
            call(&node, "GET", route, Some(INGEST), "").0,
            403,
            "GET {route}, ingest token"
        );
        assert_eq!(
            call(&node, "GET", route, Some(READ), "").0,
            200,
            "GET {route}, read token"
        );
        assert_eq!(
            call(&node, "GET", route, Some(ADMIN), "").0,
            200,
            "GET {route}, admin token"
        );
    }
    let stop = "/api/v1/queries/steady/stop?windows=keep";
    assert_eq!(call(&node, "POST", stop, Some(READ), "").0, 403);
    assert_eq!(call(&node, "POST", stop, Some(INGEST), "").0, 403);
    assert_eq!(call(&node, "POST", stop, None, "").0, 401);
    assert_eq!(
        call(
            &node,
            "POST",
            "/api/v1/queries",
            Some(READ),
            &add_body("x", &push_query_without_idle())
        )
        .0,
        403
    );
    assert_eq!(
        call(&node, "DELETE", "/api/v1/queries/steady", Some(READ), "").0,
        403
    );
    let (status, _, _) = http(
        node.port,
        "POST",
        "/ingest/readings",
        &[("Authorization", &format!("Bearer {READ}"))],
        b"",
    );
    assert_eq!(status, 403, "a read token cannot push");

    // Invalid SQL: 400 with check's message, line and column.
    let (status, error) = call(
        &node,
        "POST",
        "/api/v1/queries",
        Some(ADMIN),
        &add_body(
            "broken",
            "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP)\nWITH (connector = 'http_push', event_time = 'ts');\nSELECT device_id, SUMM(x) FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id",
        ),
    );
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["line"], 3, "{error}");
    assert!(error["column"].as_u64().is_some_and(|c| c > 1), "{error}");
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.sql:3:")),
        "{error}"
    );
    let check = write_query(
        dir.path(),
        "broken",
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP)\nWITH (connector = 'http_push', event_time = 'ts');\nSELECT device_id, SUMM(x) FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id",
    );
    let checked = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args(["check", check.to_str().unwrap_or_default()])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let check_message = String::from_utf8_lossy(&checked.stderr);
    let api_message = error["error"].as_str().unwrap_or_default();
    let after_position = |m: &str| m.split_once(".sql:").map(|(_, rest)| rest.to_owned());
    assert_eq!(
        after_position(api_message),
        after_position(check_message.trim().trim_start_matches("error: ")),
        "the API and `edgeflow check` disagree"
    );
    assert_eq!(
        call(&node, "POST", "/api/v1/queries", Some(ADMIN), "{not json").0,
        400
    );
    assert_eq!(
        call(
            &node,
            "POST",
            "/api/v1/queries",
            Some(ADMIN),
            &add_body("../up", &push_query_without_idle())
        )
        .0,
        400
    );
    assert_eq!(
        call(
            &node,
            "POST",
            "/api/v1/queries",
            Some(ADMIN),
            &add_body("steady", &push_query_without_idle())
        )
        .0,
        409,
        "a second query named steady"
    );

    // Unknown queries: 404 on every route that names one.
    for (method, route) in [
        ("GET", "/api/v1/queries/nope"),
        ("POST", "/api/v1/queries/nope/start"),
        ("POST", "/api/v1/queries/nope/stop?windows=close"),
        ("DELETE", "/api/v1/queries/nope"),
    ] {
        assert_eq!(
            call(&node, method, route, Some(ADMIN), "").0,
            404,
            "{method} {route}"
        );
    }

    // State conflicts: 409. The stop needs its windows choice: 400 without it.
    assert_eq!(
        call(
            &node,
            "POST",
            "/api/v1/queries/steady/start",
            Some(ADMIN),
            ""
        )
        .0,
        409
    );
    assert_eq!(
        call(&node, "DELETE", "/api/v1/queries/steady", Some(ADMIN), "").0,
        409
    );
    assert_eq!(
        call(
            &node,
            "POST",
            "/api/v1/queries/steady/stop",
            Some(ADMIN),
            ""
        )
        .0,
        400
    );
    assert_eq!(
        call(
            &node,
            "POST",
            "/api/v1/queries/steady/stop?windows=maybe",
            Some(ADMIN),
            ""
        )
        .0,
        400
    );
    let (status, stopped) = call(&node, "POST", stop, Some(ADMIN), "");
    assert_eq!(
        (status, stopped["state"].as_str()),
        (200, Some("stopped")),
        "{stopped}"
    );
    assert_eq!(
        call(&node, "POST", stop, Some(ADMIN), "").0,
        409,
        "stop of a stopped query"
    );
    // No running query reads the table now: a push is refused, not accepted and lost.
    let auth = format!("Bearer {INGEST}");
    let (status, _, _) = http(
        node.port,
        "POST",
        "/ingest/readings",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/x-ndjson"),
        ],
        line("a", 1_767_225_600_000, 1).as_bytes(),
    );
    assert_eq!(status, 404);
    let (status, started) = call(
        &node,
        "POST",
        "/api/v1/queries/steady/start",
        Some(ADMIN),
        "",
    );
    assert_eq!(
        (status, started["state"].as_str()),
        (200, Some("running")),
        "{started}"
    );
    assert_eq!(
        call(
            &node,
            "POST",
            "/api/v1/queries/steady/stop?windows=discard",
            Some(ADMIN),
            ""
        )
        .0,
        200
    );
    let (status, removed) = call(&node, "DELETE", "/api/v1/queries/steady", Some(ADMIN), "");
    assert_eq!(status, 200, "{removed}");
    let (_, list) = call(&node, "GET", "/api/v1/queries", Some(READ), "");
    assert_eq!(list["queries"], serde_json::json!([]));
    let (code, _) = node.stop();
    assert_eq!(code, Some(0));
}

/// Readings for minute `k` after `t0`, `per` per device over three devices, every
/// other one stamped 400 ms early, so they arrive out of order (within the query's one
/// second of out-of-orderness).
fn minute(k: i64, per: i64, t0: i64, expected: &mut [&mut Expected]) -> String {
    let start = t0 + k * 60_000;
    let mut lines = String::new();
    for i in 0..per {
        for (d, device) in (0i64..).zip(["a", "b", "c"]) {
            let early = if i > 0 && (i + d) % 2 == 1 { 400 } else { 0 };
            let ts = start + i * 60_000 / per - early;
            let bytes = 100 * k + i + d;
            lines.push_str(&line(device, ts, bytes));
            for e in expected.iter_mut() {
                add(e, device, ts, bytes);
            }
        }
    }
    lines
}

#[test]
fn a_query_started_and_stopped_at_run_time_leaves_the_others_rows_right() {
    for workers in ["1", "2", "4"] {
        let dir = tempdir();
        let query = write_query(dir.path(), "steady", &push_query_without_idle());
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
        let t0 = 1_767_225_600_000i64;
        let (mut steady, mut visitor) = (Expected::new(), Expected::new());
        push(&node, None, &minute(0, 20, t0, &mut [&mut steady]));
        // The visitor reads the same table from the moment it is added.
        let (status, added) = call(
            &node,
            "POST",
            "/api/v1/queries",
            None,
            &add_body("visitor", &push_query_without_idle()),
        );
        assert_eq!(status, 201, "{added}");
        push(
            &node,
            None,
            &minute(1, 20, t0, &mut [&mut steady, &mut visitor]),
        );
        push(
            &node,
            None,
            &minute(2, 20, t0, &mut [&mut steady, &mut visitor]),
        );
        let (status, stopped) = call(
            &node,
            "POST",
            "/api/v1/queries/visitor/stop?windows=close",
            None,
            "",
        );
        assert_eq!(
            (status, stopped["state"].as_str()),
            (200, Some("stopped")),
            "{stopped}"
        );
        // Its windows are final now: written, and nothing kept to resume.
        let out = dir.path().join("out");
        assert_eq!(
            written(&out, "visitor"),
            visitor,
            "visitor at {workers} workers"
        );
        push(&node, None, &minute(3, 20, t0, &mut [&mut steady]));
        let (status, detail) = call(&node, "GET", "/api/v1/queries/steady", None, "");
        assert_eq!(status, 200);
        assert_eq!(detail["state"], "running");
        let (code, _) = node.stop();
        assert_eq!(code, Some(0));
        assert_eq!(
            written(&out, "steady"),
            steady,
            "steady at {workers} workers"
        );
        assert_eq!(
            written(&out, "visitor"),
            visitor,
            "visitor after the node stopped"
        );
    }
}

/// A table has one ingest, which shapes and checks every reading for the declaration it
/// started with: a query declaring the same table with other columns would be told
/// `accepted` for lines it then finds bad (and the other way round), so it is refused.
#[test]
fn a_query_declaring_a_running_table_otherwise_is_refused() {
    let dir = tempdir();
    let node = push_node(dir.path(), "steady", &[]);
    let other = push_query_without_idle().replace("bytes_in BIGINT)", "bytes_in DOUBLE)");
    assert_ne!(other, push_query_without_idle());
    let (status, body) = call(
        &node,
        "POST",
        "/api/v1/queries",
        None,
        &add_body("other", &other),
    );
    let shown = body.to_string();
    assert_eq!(status, 409, "{shown}");
    assert!(
        shown.contains("declares table `readings` otherwise"),
        "{shown}"
    );
    // Declared the same way, it shares the ingest.
    let (status, body) = call(
        &node,
        "POST",
        "/api/v1/queries",
        None,
        &add_body("same", &push_query_without_idle()),
    );
    assert_eq!(status, 201, "{body}");
    let (code, _) = node.stop();
    assert_eq!(code, Some(0));
}

#[test]
fn a_query_added_over_the_api_comes_back_after_a_restart_as_it_was_left() {
    let dir = tempdir();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let out = dir.path().join("out");
    let args = [
        "serve",
        "--no-sync",
        "--workers",
        "2",
        "--listen",
        &listen,
        "--output",
        out.to_str().unwrap_or_default(),
    ];
    let ready = |node: &LiveNode| http(node.port, "GET", "/readyz", &[], b"").0 == 200;

    // A node without query files: the operator adds one.
    let mut node = LiveNode::spawn(dir.path(), port, &args, &[]);
    node.wait_healthy(|| http(port, "GET", "/readyz", &[], b"").0 == 200);
    let (status, added) = call(
        &node,
        "POST",
        "/api/v1/queries",
        None,
        &add_body("added", &push_query_without_idle()),
    );
    assert_eq!(status, 201, "{added}");
    let t0 = 1_767_225_600_000i64;
    let mut expected = Expected::new();
    push(&node, None, &minute(0, 10, t0, &mut [&mut expected]));
    assert_eq!(node.stop().0, Some(0));

    // It comes back running, and resumes its kept window.
    let mut node = LiveNode::spawn(dir.path(), port, &args, &[]);
    node.wait_healthy(|| http(port, "GET", "/readyz", &[], b"").0 == 200);
    assert!(ready(&node));
    assert_eq!(state_of(&node, "added"), "running");
    push(&node, None, &minute(1, 10, t0, &mut [&mut expected]));
    let (status, _) = call(
        &node,
        "POST",
        "/api/v1/queries/added/stop?windows=keep",
        None,
        "",
    );
    assert_eq!(status, 200);
    assert_eq!(node.stop().0, Some(0));
    assert_eq!(written(&out, "added"), expected);

    // Stopped by the operator, it stays stopped across the restart.
    let mut node = LiveNode::spawn(dir.path(), port, &args, &[]);
    node.wait_healthy(|| http(port, "GET", "/readyz", &[], b"").0 == 200);
    assert_eq!(state_of(&node, "added"), "stopped");
    let (_, detail) = call(&node, "GET", "/api/v1/queries/added", None, "");
    assert_eq!(detail["origin"], "api");
    assert!(
        detail["sql"]
            .as_str()
            .is_some_and(|s| s.contains("http_push"))
    );
    // Removed, it is gone for good; its outputs stay.
    assert_eq!(
        call(&node, "DELETE", "/api/v1/queries/added", None, "").0,
        200
    );
    assert_eq!(node.stop().0, Some(0));
    let node = LiveNode::spawn(dir.path(), port, &args, &[]);
    let mut node = node;
    node.wait_healthy(|| http(port, "GET", "/readyz", &[], b"").0 == 200);
    assert_eq!(call(&node, "GET", "/api/v1/queries/added", None, "").0, 404);
    assert_eq!(node.stop().0, Some(0));
    assert_eq!(
        written(&out, "added"),
        expected,
        "outputs stay after the removal"
    );
}

/// `/metrics` parsed by the Prometheus client library's own text parser, as
/// {family: {labels as "k=v,...": value}}.
fn parse_metrics(text: &str) -> serde_json::Map<String, Value> {
    let python = std::env::var("EDGEFLOW_PYTHON").unwrap_or_else(|_| {
        panic!("EDGEFLOW_PYTHON is not set: run the tests with ./tests/run.sh, which provisions prometheus_client")
    });
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out.setdefault(s.name, {})[labels] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("python: {e}"));
    use std::io::Write;
    child
        .stdin
        .take()
        .map(|mut s| s.write_all(text.as_bytes()))
        .unwrap_or_else(|| panic!("no stdin"))
        .unwrap_or_else(|e| panic!("{e}"));
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "the Prometheus parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    match serde_json::from_slice(&output.stdout) {
        Ok(Value::Object(map)) => map,
        other => panic!("parser output: {other:?}"),
    }
}

#[test]
fn metrics_parse_as_prometheus_text_and_equal_the_summary() {
    let dir = tempdir();
    let query = write_query(dir.path(), "steady", &push_query_without_idle());
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--workers",
            "2",
            "--json",
            "--checkpoint-every",
            "100ms",
        ],
        &tokens(),
    );
    let t0 = 1_767_225_600_000i64;
    let mut expected = Expected::new();
    let first = minute(0, 30, t0, &mut [&mut expected]);
    let pushed = push(&node, Some(INGEST), &first);
    assert_eq!(pushed["rejected"], 0, "{pushed}");
    // A checkpoint between the two pushes: the run goes on in another leg, and the
    // summary still shows one run with every figure.
    let state = dir.path().join("out/_state/steady/stream.json");
    let pushed_at = std::time::SystemTime::now();
    wait_until(
        "a checkpoint after the first push",
        Duration::from_secs(30),
        || {
            std::fs::metadata(&state)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t > pushed_at)
        },
    );
    let mut lines = minute(1, 30, t0, &mut [&mut expected]);
    lines.push_str("not json\n");
    let pushed = push(&node, Some(INGEST), &lines);
    assert_eq!(pushed["rejected"], 1, "{pushed}");
    // Stopping with close writes every window: the counters are final.
    let (status, _) = call(
        &node,
        "POST",
        "/api/v1/queries/steady/stop?windows=close",
        Some(ADMIN),
        "",
    );
    assert_eq!(status, 200);
    let auth = format!("Bearer {READ}");
    let (status, head, body) = http(
        node.port,
        "GET",
        "/metrics",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    let text = String::from_utf8_lossy(&body).into_owned();
    let metrics = parse_metrics(&text);
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0));
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let runs = summary["node"]["queries"].as_array().map_or(0, Vec::len);
    assert_eq!(
        runs, 1,
        "one summary per run, not per checkpoint: {summary}"
    );
    let run = &summary["node"]["queries"][0];
    let value = |family: &str, labels: &str| {
        metrics
            .get(family)
            .and_then(|f| f.get(labels))
            .and_then(Value::as_f64)
            .unwrap_or_else(|| panic!("{family}{{{labels}}} missing:\n{text}")) as u64
    };
    let q = "query=steady";
    assert_eq!(
        value("edgeflow_query_readings_total", q),
        run["readings"].as_u64().unwrap_or(0)
    );
    assert_eq!(value("edgeflow_query_readings_total", q), 180);
    assert_eq!(
        value("edgeflow_query_bad_total", q),
        run["bad"].as_u64().unwrap_or(0)
    );
    assert_eq!(value("edgeflow_query_bad_total", q), 1);
    assert_eq!(
        value("edgeflow_query_rows_total", q),
        run["rows"].as_u64().unwrap_or(0)
    );
    assert_eq!(value("edgeflow_query_rows_total", q), expected.len() as u64);
    assert_eq!(
        value("edgeflow_query_files_total", q),
        run["files"].as_u64().unwrap_or(0)
    );
    assert_eq!(
        value("edgeflow_query_late_total", q),
        run["late"].as_u64().unwrap_or(0)
    );
    assert_eq!(
        value("edgeflow_query_state", "query=steady,state=stopped"),
        1
    );
    assert_eq!(
        value("edgeflow_source_readings_total", "table=readings"),
        summary["node"]["received"]["readings"]
            .as_u64()
            .unwrap_or(0)
    );
    assert!(value("edgeflow_window_close_to_durable_seconds_count", q) > 0);
    assert!(!text.contains("device_id=\""), "no per-device labels");
}

/// A certificate for `localhost` made for the test, as (cert PEM, key PEM).
fn certificate() -> (String, String) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap_or_else(|e| panic!("rcgen: {e}"));
    (made.cert.pem(), made.signing_key.serialize_pem())
}

fn https(
    port: u16,
    ca: &str,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: &str,
) -> Result<(u16, String), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let cert = reqwest::Certificate::from_pem(ca.as_bytes()).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .add_root_certificate(cert)
            .tls_built_in_root_certs(false)
            .build()
            .map_err(|e| e.to_string())?;
        let response = client
            .request(method, format!("https://localhost:{port}{path}"))
            .bearer_auth(token)
            .header("Content-Type", "application/x-ndjson")
            .body(body.to_owned())
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        Ok((status, response.text().await.map_err(|e| e.to_string())?))
    })
}

#[test]
fn tls_serves_the_api_and_push_with_the_nodes_certificate() {
    let dir = tempdir();
    let (cert, key) = certificate();
    let (cert_file, key_file) = (dir.path().join("node.crt"), dir.path().join("node.key"));
    std::fs::write(&cert_file, &cert).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&key_file, &key).unwrap_or_else(|e| panic!("{e}"));
    let admin_file = dir.path().join("admin.token");
    std::fs::write(&admin_file, format!("{ADMIN}\n")).unwrap_or_else(|e| panic!("{e}"));
    let query = write_query(dir.path(), "steady", &push_query_without_idle());
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let out = dir.path().join("out");
    let mut node = LiveNode::spawn(
        dir.path(),
        port,
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--listen",
            &listen,
            "--output",
            out.to_str().unwrap_or_default(),
            "--tls-cert",
            cert_file.to_str().unwrap_or_default(),
            "--tls-key",
            key_file.to_str().unwrap_or_default(),
            "--admin-token-file",
            admin_file.to_str().unwrap_or_default(),
        ],
        &[],
    );
    node.wait_healthy(|| {
        https(port, &cert, reqwest::Method::GET, "/readyz", "", "").is_ok_and(|(s, _)| s == 200)
    });
    let (status, list) = https(
        port,
        &cert,
        reqwest::Method::GET,
        "/api/v1/queries",
        ADMIN,
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{list}");
    assert!(list.contains("\"steady\""));
    let (status, _) = https(
        port,
        &cert,
        reqwest::Method::GET,
        "/api/v1/queries",
        "wrong",
        "",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 401);
    let t0 = 1_767_225_600_000i64;
    let mut expected = Expected::new();
    let lines = minute(0, 10, t0, &mut [&mut expected]);
    let (status, answer) = https(
        port,
        &cert,
        reqwest::Method::POST,
        "/ingest/readings",
        ADMIN,
        &lines,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{answer}");
    // Plain HTTP on the TLS port gets no answer; a client that does not trust the
    // certificate is refused.
    assert_eq!(http(port, "GET", "/healthz", &[], b"").0, 0);
    let other = certificate().0;
    assert!(https(port, &other, reqwest::Method::GET, "/healthz", "", "").is_err());
    // `edgeflow ctl` over TLS with the CA file and the token file.
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &cert).unwrap_or_else(|e| panic!("{e}"));
    let ctl = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .args([
            "ctl",
            "--node",
            &format!("https://localhost:{port}"),
            "--ca-file",
            ca_file.to_str().unwrap_or_default(),
            "--token-file",
            admin_file.to_str().unwrap_or_default(),
            "stop",
            "steady",
            "--windows",
            "close",
        ])
        .env_remove("EDGEFLOW_ADMIN_TOKEN")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        ctl.status.success(),
        "{}",
        String::from_utf8_lossy(&ctl.stderr)
    );
    assert!(String::from_utf8_lossy(&ctl.stdout).contains("stopped"));
    assert_eq!(node.stop().0, Some(0));
    assert_eq!(written(&out, "steady"), expected);
}

/// `edgeflow ctl <args>` against the node on `port`, with the admin token.
fn ctl_output(port: u16, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .arg("ctl")
        .args(args)
        .env("EDGEFLOW_NODE", format!("http://127.0.0.1:{port}"))
        .env("EDGEFLOW_ADMIN_TOKEN", ADMIN)
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn ctl(port: u16, args: &[&str]) -> (bool, String, String) {
    let output = ctl_output(port, args);
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn ctl_lists_adds_starts_stops_and_removes_queries() {
    let dir = tempdir();
    let query = write_query(dir.path(), "steady", &push_query_without_idle());
    let node = LiveNode::start(
        dir.path(),
        &["serve", query.to_str().unwrap_or_default(), "--no-sync"],
        &tokens(),
    );
    let port = node.port;
    let (ok, list, err) = ctl(port, &["list"]);
    assert!(ok, "{err}");
    assert!(
        list.lines()
            .any(|l| l.starts_with("steady") && l.contains("running")),
        "{list}"
    );
    std::fs::create_dir_all(dir.path().join("more")).unwrap_or_else(|e| panic!("{e}"));
    let other = write_query(
        &dir.path().join("more"),
        "other",
        &push_query_without_idle().replace("COUNT(*) AS n", "MAX(bytes_in) AS n"),
    );
    let (ok, _, err) = ctl(
        port,
        &["add", other.to_str().unwrap_or_default(), "--stopped"],
    );
    assert!(ok, "{err}");
    let (ok, json, _) = ctl(port, &["--json", "list"]);
    assert!(ok);
    let json: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
    let states: Vec<(String, String)> = json["queries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|q| {
                    (
                        q["name"].as_str().unwrap_or("").to_owned(),
                        q["state"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        states,
        vec![
            ("other".into(), "stopped".into()),
            ("steady".into(), "running".into())
        ]
    );
    let (ok, _, err) = ctl(port, &["start", "other"]);
    assert!(ok, "{err}");
    let (ok, status, err) = ctl(port, &["status"]);
    assert!(ok, "{err}");
    assert!(
        status.contains("READINGS/S") && status.contains("other") && status.contains("steady"),
        "{status}"
    );
    // A mistake in a file: the node's message at the file's own path, line and
    // column, exit code 2 (the user's to fix).
    let bad = write_query(
        dir.path(),
        "bad",
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP)\nWITH (connector = 'http_push', event_time = 'ts', nonsense = '1');\nSELECT 1",
    );
    let output = ctl_output(port, &["add", bad.to_str().unwrap_or_default()]);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.trim()
            .starts_with(&format!("error: {}:2:", bad.display())),
        "as `edgeflow check` words it: {err}"
    );
    let (ok, _, err) = ctl(port, &["stop", "other", "--windows", "discard"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(port, &["stop", "other", "--windows", "discard"]);
    assert!(!ok && err.contains("409"), "{err}");
    let (ok, _, err) = ctl(port, &["remove", "other"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(port, &["status", "other"]);
    assert!(!ok && err.contains("404"), "{err}");
    assert_eq!(node.stop().0, Some(0));
}

#[test]
fn bodies_request_time_and_push_rate_are_limited() {
    let dir = tempdir();
    let query = write_query(dir.path(), "steady", &push_query_without_idle());
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--request-timeout",
            "1s",
            "--ingest-rate-limit",
            "5",
        ],
        &tokens(),
    );
    // An API body over 1 MiB: 413, and nothing is added.
    let huge = add_body(
        "huge",
        &format!("{}\n-- {}", push_query_without_idle(), "x".repeat(1 << 20)),
    );
    assert_eq!(
        call(&node, "POST", "/api/v1/queries", Some(ADMIN), &huge).0,
        413
    );
    assert_eq!(
        call(&node, "GET", "/api/v1/queries/huge", Some(ADMIN), "").0,
        404
    );

    // A body that stops coming: 408 once the request timeout passes.
    {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", node.port))
            .unwrap_or_else(|e| panic!("{e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap_or_else(|e| panic!("{e}"));
        let head = format!(
            "POST /api/v1/queries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"name\""
        );
        stream
            .write_all(head.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let mut reply = [0u8; 12];
        stream
            .read_exact(&mut reply)
            .unwrap_or_else(|e| panic!("no answer to a stalled body: {e}"));
        assert_eq!(
            &reply,
            b"HTTP/1.1 408",
            "{}",
            String::from_utf8_lossy(&reply)
        );
    }

    // Pushes over 5 per second from one client: 429 with Retry-After, and what was
    // refused is not counted as received.
    let auth = format!("Bearer {INGEST}");
    let (mut accepted, mut refused) = (0u64, 0u64);
    for i in 0..20 {
        let (status, head, _) = http(
            node.port,
            "POST",
            "/ingest/readings",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/x-ndjson"),
            ],
            line("a", 1_767_225_600_000 + i, 1).as_bytes(),
        );
        match status {
            200 => accepted += 1,
            429 => {
                assert!(
                    head.to_ascii_lowercase().contains("retry-after: 1"),
                    "{head}"
                );
                refused += 1;
            }
            other => panic!("push {i}: {other} {head}"),
        }
    }
    assert!(
        refused > 0,
        "20 pushes at once, 5 per second allowed: some refused"
    );
    assert!((5..20).contains(&accepted), "{accepted} accepted");
    let (_, ingest) = call(&node, "GET", "/api/v1/ingest", Some(READ), "");
    assert_eq!(
        ingest["tables"]["readings"]["received"], accepted,
        "{ingest}"
    );
    assert_eq!(node.stop().0, Some(0));
}

/// The open windows, groups and state bytes a query reports count the state a
/// checkpoint kept: after one, the window's 40 groups wait at their owners for the
/// window to close (they read 0 there before), and the figures say so until it does.
#[test]
fn open_figures_count_the_state_a_checkpoint_kept() {
    let dir = tempdir();
    let query = write_query(dir.path(), "pushed", &push_query_without_idle());
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--workers",
            "2",
            "--checkpoint-every",
            "1s",
        ],
        &tokens(),
    );
    let now = crate::live::now_ms();
    let lines: String = (0..40).map(|k| line(&format!("d{k}"), now, 1)).collect();
    push(&node, Some(INGEST), &lines);
    let kept = || {
        std::fs::read(dir.path().join("out/_state/pushed/stream.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .and_then(|state| state["open"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    wait_until(
        "a checkpoint keeping the window",
        Duration::from_secs(60),
        || kept() > 0,
    );
    let open = || call(&node, "GET", "/api/v1/queries/pushed", Some(READ), "").1["open"].clone();
    wait_until("the kept groups counted", Duration::from_secs(10), || {
        open()["keys"] == 40
    });
    let open = open();
    assert_eq!(open["windows"], 1, "{open}");
    assert!(open["bytes"].as_u64().is_some_and(|b| b > 0), "{open}");
    let (code, log) = node.stop();
    assert_eq!(code, Some(0), "{log}");
}
