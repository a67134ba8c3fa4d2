//! Mistakes in query files are reported as `file:line:column: what was expected`.

use std::path::Path;

const SOURCE: &str =
    "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes BIGINT, latency DOUBLE)
  WITH (event_time = 'ts', max_out_of_orderness = '5s');
";

fn error(text: &str) -> String {
    match edgeflow::query::parse("bad", Path::new("queries/bad.sql"), text) {
        Ok(plan) => panic!("expected an error, got a plan:\n{plan}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn mistakes_are_reported_with_file_line_and_column() {
    let cases: &[(&str, &str)] = &[
        // Syntax errors come from sqlparser with its position.
        (
            "SELEC device_id FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)",
            "queries/bad.sql:3:1: expected an SQL statement",
        ),
        (
            "SELECT device_id, COUNT(* FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE)",
            "queries/bad.sql:3:",
        ),
        // Names.
        (
            "SELECT device, window_start, COUNT(*) FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device, window_start",
            "queries/bad.sql:3:95: unknown column `device`; readings has: device_id, ts, bytes, latency",
        ),
        (
            "SELECT device_id, window_start, MEDIAN(bytes) FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start",
            "queries/bad.sql:3:33: unknown function `MEDIAN`; aggregates available: COUNT, SUM, MIN, MAX, AVG, STDDEV, STDDEV_POP, VARIANCE, VAR_POP, FIRST_VALUE, LAST_VALUE",
        ),
        (
            "SELECT device_id, window_start, COUNT(*) FROM TUMBLE(sensors, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start",
            "queries/bad.sql:3:54: expected the source table `readings` as the first argument of TUMBLE",
        ),
        // Semantics.
        (
            "SELECT device_id, bytes, window_start FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start",
            "queries/bad.sql:3:19: column `bytes` must appear in GROUP BY or inside an aggregate function",
        ),
        (
            "SELECT device_id, COUNT(*) FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id",
            "queries/bad.sql:3:84: expected GROUP BY ..., window_start, window_end",
        ),
        (
            "SELECT device_id, window_start, SUM(device_id) FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start",
            "queries/bad.sql:3:37: SUM expects a number, found TEXT",
        ),
        (
            "SELECT device_id, window_start, COUNT(*) FROM TUMBLE(readings, ts, INTERVAL '1' FORTNIGHT) GROUP BY device_id, window_start",
            "queries/bad.sql:3:",
        ),
        (
            "SELECT device_id, window_start, COUNT(*) FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) WHERE latency > 'high' GROUP BY device_id, window_start",
            "queries/bad.sql:3:",
        ),
        (
            "SELECT device_id, window_start, COUNT(*) FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) WHERE COUNT(*) > 1 GROUP BY device_id, window_start",
            "queries/bad.sql:3:95: aggregate function COUNT is not allowed in WHERE",
        ),
        (
            "SELECT device_id, window_start, COUNT(*) FROM SESSION(readings, ts) GROUP BY device_id, window_start",
            "queries/bad.sql:3:47: expected 3 arguments: SESSION(readings, <event time column>, <gap>)",
        ),
        (
            "SELECT device_id, window_start, COUNT(*) AS n, SUM(bytes) AS n FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start",
            "output column `n` appears twice",
        ),
    ];
    for (select, want) in cases {
        let got = error(&format!("{SOURCE}{select}"));
        assert!(
            got.starts_with(want) || got.contains(want),
            "query: {select}\n got: {got}\nwant: {want}"
        );
        assert!(got.starts_with("queries/bad.sql:"), "{got}");
    }
}

#[test]
fn source_declaration_mistakes_point_at_the_declaration() {
    let select = "\nSELECT window_start, COUNT(*) FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY window_start";
    let cases: &[(&str, &str)] = &[
        (
            "CREATE TABLE r (ts TIMESTAMP, tags ARRAY<TEXT>) WITH (event_time = 'ts');",
            "queries/bad.sql:1:31: type ARRAY<TEXT> is not supported",
        ),
        (
            "CREATE TABLE r (ts TIMESTAMP, v BIGINT);",
            "queries/bad.sql:1:14: expected WITH (event_time = '<timestamp column>')",
        ),
        (
            "CREATE TABLE r (ts TIMESTAMP, v BIGINT) WITH (event_time = 'v');",
            "queries/bad.sql:1:60: event_time column `v` must be TIMESTAMP, not BIGINT",
        ),
        (
            "CREATE TABLE r (ts TIMESTAMP) WITH (event_time = 'ts', max_out_of_orderness = 'soon');",
            "queries/bad.sql:1:79: expected a duration",
        ),
        (
            "CREATE TABLE r (ts TIMESTAMP) WITH (event_time = 'ts', watermark = '1s');",
            "queries/bad.sql:1:56: unknown option `watermark`",
        ),
        (
            "CREATE TABLE r (ts TIMESTAMP, ts BIGINT) WITH (event_time = 'ts');",
            "queries/bad.sql:1:31: column `ts` is declared twice",
        ),
    ];
    for (create, want) in cases {
        let got = error(&format!("{create}{select}"));
        assert!(
            got.starts_with(want),
            "query: {create}\n got: {got}\nwant: {want}"
        );
    }
    assert!(error("SELECT 1").starts_with("queries/bad.sql:1:1: expected CREATE TABLE"));
}

#[test]
fn plans_that_would_explode_are_refused_with_position() {
    let deep = format!("{}bytes > 0{}", "(".repeat(70), ")".repeat(70));
    let chain = (0..80)
        .map(|i| format!("bytes = {i}"))
        .collect::<Vec<_>>()
        .join(" OR ");
    let cases: Vec<(String, &str)> = vec![
        (
            "SELECT device_id, window_start, COUNT(*) FROM HOP(readings, ts, INTERVAL '1' SECOND, INTERVAL '1' HOUR) GROUP BY device_id, window_start".into(),
            "queries/bad.sql:3:95: a window size of 1h every 1s puts each reading in 3600 windows; at most 100 are allowed",
        ),
        (
            "SELECT window_start, COUNT(*) FROM TUMBLE(readings, ts, '500us') GROUP BY window_start".into(),
            "queries/bad.sql:3:57: window size is 500us, below the minimum of 1ms",
        ),
        (
            "SELECT window_start, COUNT(*) FROM HOP(readings, ts, '100us', INTERVAL '1' MINUTE) GROUP BY window_start".into(),
            "queries/bad.sql:3:54: hop slide is 100us, below the minimum of 1ms",
        ),
        (
            format!("SELECT window_start, COUNT(*) FROM TUMBLE(readings, ts, '1s') WHERE {deep} GROUP BY window_start"),
            "expression nested more than 64 levels deep",
        ),
        (
            format!("SELECT window_start, COUNT(*) FROM TUMBLE(readings, ts, '1s') WHERE {chain} GROUP BY window_start"),
            "expression nested more than 64 levels deep; for long lists of alternatives use IN (...)",
        ),
        (
            format!("SELECT window_start, COUNT(*) FROM TUMBLE(readings, ts, '1s') WHERE {} GROUP BY window_start", "NOT ".repeat(100) + "bytes > 0"),
            "expression nested more than 64 levels deep",
        ),
        // Deeper than sqlparser's own limit: the error is still ours, at the deepest
        // parenthesis.
        (
            format!("SELECT window_start, COUNT(*) FROM TUMBLE(readings, ts, '1s') WHERE {}bytes > 0{} GROUP BY window_start", "(".repeat(300), ")".repeat(300)),
            "queries/bad.sql:3:368: expression nested more than 64 levels deep",
        ),
    ];
    for (select, want) in &cases {
        let got = error(&format!("{SOURCE}{select}"));
        assert!(
            got.contains(want),
            "query: {select}\n got: {got}\nwant: {want}"
        );
        assert!(got.starts_with("queries/bad.sql:3:"), "{got}");
    }
}

#[test]
fn query_names_come_from_file_names_that_can_name_a_folder() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let text = format!(
        "{SOURCE}SELECT window_start, COUNT(*) FROM TUMBLE(readings, ts, '1s') GROUP BY window_start"
    );
    for (file, name) in [
        ("...sql", ".."),
        ("my query.sql", "my query"),
        ("a.b.sql", "a.b"),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, &text).unwrap_or_else(|e| panic!("{e}"));
        match edgeflow::query::load(&path) {
            Ok(plan) => panic!("{file}: planned as `{}`", plan.name),
            Err(e) => assert_eq!(
                e.to_string(),
                format!(
                    "{}: a query is named after its file, and `{name}` is not a valid query name: use only letters, digits, `_` and `-`",
                    path.display()
                )
            ),
        }
    }
    let ok = dir.path().join("Edge-7_traffic.sql");
    std::fs::write(&ok, &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        edgeflow::query::load(&ok).map(|p| p.name).ok().as_deref(),
        Some("Edge-7_traffic")
    );
}
