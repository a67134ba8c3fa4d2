//! `SESSION` windows equal a plain sequential sessionisation of the same readings, at 1,
//! 2 and 4 workers, with out-of-order and late readings, in one run and over
//! consecutive runs on one output folder (sessions that span two files, written open by
//! the first run, leave the first file when they grow).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use edgeflow::types::Value;

use super::live::{LiveNode, http, tempdir, write_query};
use super::s3_server::wait_until;

use super::support::{
    assert_rows_eq, assert_same_files, parquet_files, plan, read_rows, result_files, run, sort_rows,
};
use super::traffic::{Reading, fleet, jsonl, run_in_legs, run_in_two, write};

/// Readings of `devices` devices in arrival order: each device reports in bursts
/// (0.2 to 4 s apart) separated by silences (8 to 40 s), so sessions of a 5 s gap both
/// form and break; arrivals are late by up to 3 s, and one in fifty by up to 40 s.
pub(crate) fn readings(seed: u64, devices: usize, per_device: usize) -> Vec<Reading> {
    fleet(
        seed,
        devices,
        per_device,
        10_000,
        |rng| {
            if rng.below(6) == 0 {
                8_000 + rng.below(32_000) as i64
            } else {
                200 + rng.below(3_800) as i64
            }
        },
        |rng| {
            (if rng.below(50) == 0 {
                rng.below(40_000)
            } else {
                rng.below(3_000)
            }) as i64
        },
    )
}

fn sql(gap_ms: i64, ooo_ms: i64) -> String {
    sql_allowing(gap_ms, ooo_ms, 0)
}

pub(crate) fn sql_allowing(gap_ms: i64, ooo_ms: i64, allowed_ms: i64) -> String {
    format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
           WITH (event_time = 'ts', max_out_of_orderness = '{ooo_ms}ms',
                 allowed_lateness = '{allowed_ms}ms');
         SELECT device_id, window_start, window_end, COUNT(*) AS readings,
                SUM(bytes_in) AS bytes_in, MAX(latency_ms) AS max_latency_ms,
                FIRST_VALUE(bytes_in) AS first_bytes_in
         FROM SESSION(readings, ts, INTERVAL '{gap_ms}' MILLISECOND)
         GROUP BY device_id, window_start, window_end"
    )
}

/// The sequential answer: a reading is late when the watermark where it arrives (the
/// largest earlier event time minus the out-of-orderness) has passed the end of its
/// gap-sized pane; each device's other readings, by event time, start a new session
/// wherever they are a gap or more apart. Returns the rows and the late count.
fn oracle(readings: &[Reading], gap_ms: i64, ooo_ms: i64) -> (Vec<Vec<Value>>, u64) {
    let (rows, late, _) = oracle_allowing(readings, gap_ms, ooo_ms, 0);
    (rows, late)
}

/// [`oracle`] under an allowed lateness: a reading is late once the watermark has passed
/// its pane's end by the allowance; between the two it is a correction (counted, third).
pub(crate) fn oracle_allowing(
    readings: &[Reading],
    gap_ms: i64,
    ooo_ms: i64,
    allowed_ms: i64,
) -> (Vec<Vec<Value>>, u64, u64) {
    let mut by_device: BTreeMap<&str, Vec<&Reading>> = BTreeMap::new();
    let mut max_seen: Option<i64> = None;
    let (mut late, mut corrections) = (0, 0);
    for r in readings {
        let watermark = max_seen.map(|m| m - ooo_ms);
        max_seen = Some(max_seen.map_or(r.ts_ms, |m| m.max(r.ts_ms)));
        let pane_end = r.ts_ms.div_euclid(gap_ms) * gap_ms + gap_ms;
        if watermark.is_some_and(|w| pane_end + allowed_ms <= w) {
            late += 1;
            continue;
        }
        if watermark.is_some_and(|w| pane_end <= w) {
            corrections += 1;
        }
        by_device.entry(&r.device).or_default().push(r);
    }
    let us = |ms: i64| Value::Timestamp(ms * 1000);
    let mut rows = Vec::new();
    for (device, mut rs) in by_device {
        rs.sort_by_key(|r| r.ts_ms);
        let mut sessions: Vec<Vec<&Reading>> = Vec::new();
        for r in rs {
            match sessions.last_mut() {
                Some(s) if r.ts_ms - s[s.len() - 1].ts_ms < gap_ms => s.push(r),
                _ => sessions.push(vec![r]),
            }
        }
        for s in sessions {
            let (first, last) = (s[0].ts_ms, s[s.len() - 1].ts_ms);
            // FIRST_VALUE by event time; a tie goes to the least value.
            let first_bytes = s
                .iter()
                .filter(|r| r.ts_ms == first)
                .map(|r| r.bytes_in)
                .min()
                .unwrap_or_default();
            rows.push(vec![
                Value::Text(device.to_owned()),
                us(first),
                us(last + gap_ms),
                Value::BigInt(s.len() as i64),
                Value::BigInt(s.iter().map(|r| r.bytes_in).sum()),
                Value::Double(s.iter().map(|r| r.latency_ms).fold(f64::MIN, f64::max)),
                Value::BigInt(first_bytes),
            ]);
        }
    }
    sort_rows(&mut rows);
    (rows, late, corrections)
}

#[test]
fn sessions_match_a_sequential_oracle_at_1_2_and_4_workers() {
    let (gap, ooo) = (5_000, 2_000);
    let input = readings(11, 60, 300);
    let (want, want_late) = oracle(&input, gap, ooo);
    assert!(want_late > 0, "the input should have late readings");
    assert!(
        want.len() > 60 * 10,
        "the input should break into many sessions, not {}",
        want.len()
    );
    let plan = plan(&sql(gap, ooo));
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = write(&dir.path().join("in.jsonl"), &input);
        let out = dir.path().join("out");
        let summary = run(&plan, file, &out, workers, 8 * 1024);
        let context = format!("{workers} workers");
        assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
        assert_eq!(summary.late, want_late, "{context}: late readings");
        assert_eq!(summary.readings, input.len() as u64, "{context}");
    }
}

#[test]
fn sessions_over_consecutive_runs_equal_one_run_and_are_written_once() {
    let (gap, ooo) = (5_000, 2_000);
    let input = readings(23, 40, 200);
    let (want, want_late) = oracle(&input, gap, ooo);
    let plan = plan(&sql(gap, ooo));
    // Cut where sessions are open, at several places, and change the worker count
    // between runs: the second run grows, merges and closes what the first kept.
    for (cut, first_workers, second_workers) in [(0.3, 1, 4), (0.5, 2, 2), (0.8, 4, 1)] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let at = (input.len() as f64 * cut) as usize;
        let out = dir.path().join("out");
        let (first, second) = run_in_two(
            &plan,
            dir.path(),
            &input,
            at,
            (first_workers, second_workers),
        );
        let context = format!("cut at {cut}, {first_workers} then {second_workers} workers");
        assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
        assert!(
            !parquet_files(&out.join("q_revisions")).is_empty(),
            "{context}: the second run should rewrite files the first wrote open"
        );
        assert_eq!(
            first.late + second.late,
            want_late,
            "{context}: late readings"
        );
    }
}

/// A run at 4 workers that goes on from a run at 2 keeps, per session still open at
/// the end, one part per worker, and the parts reach the state file in the order the
/// workers finish; the file is the same whichever finished first, so one input always
/// leaves the same state.
#[test]
fn sessions_kept_by_several_workers_save_the_same_state_file_every_time() {
    // A gap longer than any silence: every device's session is open at the end.
    let (gap, ooo) = (60_000, 2_000);
    let input = readings(29, 400, 40);
    let plan = plan(&sql(gap, ooo));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let at = input.len() / 2;
    let (first, second) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let states: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let out = dir.path().join(format!("out{i}"));
            run(&plan, write(&first, &input[..at]), &out, 2, 8 * 1024);
            run(&plan, write(&second, &input[at..]), &out, 4, 8 * 1024);
            let state = out.join("_state").join("q").join("stream.json");
            std::fs::read(&state).unwrap_or_else(|e| panic!("{}: {e}", state.display()))
        })
        .collect();
    let state: serde_json::Value =
        serde_json::from_slice(&states[0]).unwrap_or_else(|e| panic!("{e}"));
    let starts: Vec<&serde_json::Value> = state["open"]
        .as_array()
        .map(|open| open.iter().map(|w| &w["start"]).collect())
        .unwrap_or_default();
    assert!(
        starts
            .iter()
            .enumerate()
            .any(|(i, s)| starts[..i].contains(s)),
        "the runs should keep a session window in several parts: {starts:?}"
    );
    for (i, state) in states.iter().enumerate().skip(1) {
        assert!(state == &states[0], "run {i} saved another state file");
    }
}

#[test]
fn a_session_query_explains_its_plan_and_refuses_a_top_n() {
    let p = plan(&sql(30_000, 0));
    assert!(
        p.window.to_string().contains("SESSION gap 30s"),
        "{}",
        p.window
    );
    let top = String::from(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT) WITH (event_time = 'ts');
         SELECT * FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY b DESC) AS rank
           FROM (SELECT device_id, window_start, window_end, SUM(bytes_in) AS b
                 FROM SESSION(readings, ts, INTERVAL '30' SECOND)
                 GROUP BY device_id, window_start, window_end)
         ) WHERE rank <= 3"
    );
    let err = match edgeflow::query::parse("q", Path::new("q.sql"), &top) {
        Ok(_) => panic!("a Top-N over sessions should not plan"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("q.sql:3:"), "{err}");
    assert!(
        err.contains("every session is a window of its own"),
        "{err}"
    );
}

/// Legs of a query saved in its stream state: one more at each checkpoint.
fn legs(out: &Path) -> u64 {
    std::fs::read(out.join("_state/q/stream.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["runs"].as_u64())
        .unwrap_or(0)
}

#[test]
fn live_sessions_survive_checkpoints_and_a_restart() {
    // Without and with corrections: a correction not yet due at a checkpoint is carried
    // over, and written sessions kept for corrections survive the restart.
    for allowed in [0, 20_000] {
        live_sessions_checkpointed(allowed);
    }
}

fn live_sessions_checkpointed(allowed: i64) {
    let (gap, ooo) = (5_000, 2_000);
    let input = readings(31, 20, 120);
    let (want, want_late, _) = oracle_allowing(&input, gap, ooo, allowed);
    let dir = tempdir();
    let sql = sql_allowing(gap, ooo, allowed).replace(
        "WITH (event_time",
        "WITH (connector = 'http_push', event_time",
    );
    let query = write_query(dir.path(), "q", &sql);
    let args = [
        "serve",
        query.to_str().unwrap_or_default(),
        "--no-sync",
        "--workers",
        "2",
        "--checkpoint-every",
        "100ms",
    ];
    let out = dir.path().join("out");
    let mut node = LiveNode::start(dir.path(), &args, &[]);
    for (i, part) in input.chunks(input.len() / 4 + 1).enumerate() {
        if i == 2 {
            // Open sessions are written as they stand and kept; the next start grows them.
            let (code, stdout) = node.stop();
            assert_eq!(code, Some(0), "{stdout}");
            node = LiveNode::start(dir.path(), &args, &[]);
        }
        let saved = legs(&out);
        for batch in part.chunks(100) {
            let (status, _, body) = http(
                node.port,
                "POST",
                "/ingest/readings",
                &[("Content-Type", "application/x-ndjson")],
                jsonl(batch).as_bytes(),
            );
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        }
        wait_until(
            "a checkpoint after the push",
            Duration::from_secs(60),
            || legs(&out) > saved,
        );
    }
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}");
    let context = format!("live, checkpointed, {allowed} ms allowed");
    assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
    assert_eq!(
        read_rows(&out.join("q_late")).len() as u64,
        want_late,
        "{context}: late readings"
    );
}

#[test]
fn a_session_written_open_leaves_its_file_when_it_grows_past_it() {
    let (gap, ooo) = (5_000, 1_000);
    let base = 1_767_225_600_000;
    let reading = |s: i64| Reading {
        device: "dev-000".into(),
        ts_ms: base + s * 1_000,
        bytes_in: s,
        latency_ms: 1.0,
    };
    let first: Vec<Reading> = (0..50).map(reading).collect();
    let second: Vec<Reading> = (50..130).map(reading).collect();
    let all: Vec<Reading> = first.iter().chain(&second).cloned().collect();
    let (want, _) = oracle(&all, gap, ooo);
    assert_eq!(want.len(), 1, "one session");
    let plan = plan(&sql(gap, ooo));
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    run(
        &plan,
        write(&dir.path().join("a.jsonl"), &first),
        &out,
        2,
        1024,
    );
    // Written as it stands, in the file of the minute it would end in.
    let open = read_rows(&out.join("q"));
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0][3], Value::BigInt(50));
    run(
        &plan,
        write(&dir.path().join("b.jsonl"), &second),
        &out,
        1,
        1024,
    );
    // The first file's next revision no longer holds it; the session is in the file of
    // its real end, once.
    assert_rows_eq(&read_rows(&out.join("q")), &want, "grown session");
    assert_eq!(parquet_files(&out.join("q_revisions")).len(), 1);
}

/// A device reports at 0 s and 8 s (two sessions under a 5 s gap), both written once
/// the watermark passes; then the reading at 4 s arrives, within the allowance. The
/// latest view holds one session of three readings: the two written rows leave it.
#[test]
fn a_correction_that_bridges_two_written_sessions_replaces_both() {
    let (gap, ooo, allowed) = (5_000, 1_000, 120_000);
    let base = 1_767_225_600_000;
    let reading = |device: &str, s: i64| Reading {
        device: device.into(),
        ts_ms: base + s * 1_000,
        bytes_in: s,
        latency_ms: 1.0,
    };
    let mut input = vec![reading("a", 0), reading("a", 8)];
    // Another device moves the watermark well past both sessions' ends.
    input.extend((0..80).map(|s| reading("b", 10 + s)));
    input.push(reading("a", 4));
    input.extend((90..100).map(|s| reading("b", s)));
    let (want, late, corrections) = oracle_allowing(&input, gap, ooo, allowed);
    assert_eq!((late, corrections), (0, 1));
    let a_rows: Vec<&Vec<Value>> = want
        .iter()
        .filter(|r| r[0] == Value::Text("a".into()))
        .collect();
    assert_eq!(a_rows.len(), 1, "{a_rows:?}");
    assert_eq!(a_rows[0][3], Value::BigInt(3));
    let plan = plan(&sql_allowing(gap, ooo, allowed));
    for workers in [1, 2] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let out = dir.path().join("out");
        let summary = run(
            &plan,
            write(&dir.path().join("in.jsonl"), &input),
            &out,
            workers,
            256,
        );
        let context = format!("{workers} workers");
        assert_eq!(summary.corrections, 1, "{context}");
        assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
        // The file that held both sessions was written again without them.
        assert!(
            !parquet_files(&out.join("q_revisions")).is_empty(),
            "{context}: the written file should be superseded"
        );
    }
}

#[test]
fn corrected_sessions_match_a_sequential_oracle_at_1_2_and_4_workers() {
    let (gap, ooo, allowed) = (5_000, 2_000, 20_000);
    let input = readings(31, 50, 250);
    let (want, want_late, want_corrections) = oracle_allowing(&input, gap, ooo, allowed);
    assert!(
        want_late > 0,
        "the input should have readings past the allowance"
    );
    assert!(want_corrections > 0, "the input should have corrections");
    let plan = plan(&sql_allowing(gap, ooo, allowed));
    let mut first: Option<BTreeMap<String, Vec<u8>>> = None;
    for workers in [1, 2, 4] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = write(&dir.path().join("in.jsonl"), &input);
        let out = dir.path().join("out");
        let summary = run(&plan, file, &out, workers, 8 * 1024);
        let context = format!("{workers} workers");
        assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
        assert_eq!(summary.late, want_late, "{context}: late readings");
        assert_eq!(
            summary.corrections, want_corrections,
            "{context}: corrections"
        );
        let files = result_files(&out);
        assert!(
            files.keys().any(|n| n.starts_with("q_revisions")),
            "{context}: corrections should supersede files"
        );
        // Revisions, their names and their bytes do not depend on the worker count.
        match &first {
            None => first = Some(files),
            Some(want_files) => assert_same_files(&files, want_files, &context),
        }
    }
}

#[test]
fn corrected_sessions_over_consecutive_runs_equal_one_run() {
    // An allowance longer than the input's worst lateness (40 s) past one-minute files:
    // the first run keeps the files it wrote last, and the second corrects them.
    let (gap, ooo, allowed) = (5_000, 2_000, 90_000);
    let input = readings(37, 40, 200);
    let (want, want_late, want_corrections) = oracle_allowing(&input, gap, ooo, allowed);
    let plan = plan(&sql_allowing(gap, ooo, allowed));
    for (cut, first_workers, second_workers) in [
        (0.3, 1, 4),
        (0.4, 2, 4),
        (0.5, 2, 2),
        (0.6, 4, 2),
        (0.8, 4, 1),
    ] {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let at = (input.len() as f64 * cut) as usize;
        let (first, second) = run_in_two(
            &plan,
            dir.path(),
            &input,
            at,
            (first_workers, second_workers),
        );
        let context = format!("cut at {cut}, {first_workers} then {second_workers} workers");
        assert_rows_eq(
            &read_rows(&dir.path().join("out").join("q")),
            &want,
            &context,
        );
        assert_eq!(first.late + second.late, want_late, "{context}: late");
        assert_eq!(
            first.corrections + second.corrections,
            want_corrections,
            "{context}: corrections"
        );
    }
}

/// Legs cut by checkpoints write the same files, byte for byte, as one run: a correction
/// not yet due at a leg's end is carried over, not written.
#[test]
fn checkpoints_change_no_session_revision() {
    let (gap, ooo, allowed) = (5_000, 2_000, 20_000);
    let input = readings(43, 8, 150);
    let plan = plan(&sql_allowing(gap, ooo, allowed));
    let one = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (corrections, late) = run_in_legs(&plan, one.path(), &input, &[]);
    assert!(corrections > 0, "the input should have corrections");
    let want = result_files(&one.path().join("out"));
    let n = input.len();
    for cuts in [vec![n / 3], vec![n / 5, n / 2, 4 * n / 5], vec![7, n - 7]] {
        let legs = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let got = run_in_legs(&plan, legs.path(), &input, &cuts);
        assert_eq!(
            got,
            (corrections, late),
            "cut at {cuts:?}: corrections, late"
        );
        let files = result_files(&legs.path().join("out"));
        assert_same_files(&files, &want, &format!("cut at {cuts:?}"));
    }
}

/// The generated fleet of `edgeflow gen`: sparse devices (a reading every 30 s on
/// average, so sessions under a 20 s gap break often) and one reading in a hundred one
/// to ten minutes late. Under a 5 minute allowance most of those correct files an
/// earlier run wrote and kept, at every change of worker count between the runs.
#[test]
fn corrections_of_files_kept_by_several_workers_leave_no_session_twice() {
    use edgeflow::decode::Format;
    use edgeflow::source::GeneratorConfig;
    use edgeflow::source::generator::{TimestampFormat, write_readings};
    let config = GeneratorConfig {
        devices: 300,
        readings: 40_000,
        rate: 10.0,
        late_fraction: 0.01,
        seed: 5,
        ..GeneratorConfig::default()
    };
    let mut lines = Vec::new();
    write_readings(&config, Format::Jsonl, TimestampFormat::Millis, &mut lines)
        .unwrap_or_else(|e| panic!("{e}"));
    let text = String::from_utf8(lines).unwrap_or_else(|e| panic!("{e}"));
    let lines: Vec<&str> = text.lines().collect();
    let plan = plan(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("queries/corrected_sessions.sql"),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let part = |dir: &Path, name: &str, from: usize, to: usize| {
        let path = dir.join(name);
        std::fs::write(&path, lines[from..to].join("\n") + "\n").unwrap_or_else(|e| panic!("{e}"));
        edgeflow::source::Input::File {
            path,
            format: Format::Jsonl,
        }
    };
    let one = tempdir();
    let out = one.path().join("out");
    run(
        &plan,
        part(one.path(), "all.jsonl", 0, lines.len()),
        &out,
        1,
        64 * 1024,
    );
    let want = read_rows(&out.join("q"));
    let at = lines.len() / 2;
    for (first, second) in [(2, 4), (4, 2), (2, 2)] {
        let dir = tempdir();
        let out = dir.path().join("out");
        run(
            &plan,
            part(dir.path(), "a.jsonl", 0, at),
            &out,
            first,
            64 * 1024,
        );
        let kept = run(
            &plan,
            part(dir.path(), "b.jsonl", at, lines.len()),
            &out,
            second,
            64 * 1024,
        );
        assert!(kept.corrections > 0, "the second run should correct");
        assert_rows_eq(
            &read_rows(&out.join("q")),
            &want,
            &format!("{first} then {second} workers"),
        );
    }
}
