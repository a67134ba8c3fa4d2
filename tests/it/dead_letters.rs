//! Bad lines are counted and written to the dead-letter file with their line number,
//! reason and text; the good lines around them are all counted.

use edgeflow::decode::Format;
use edgeflow::source::Input;

use super::support::{plan, read_rows, run};

const QUERY: &str = "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts');
     SELECT device_id, window_start, COUNT(*) AS n, SUM(v) AS v FROM TUMBLE(r, ts, INTERVAL '1' MINUTE)
     GROUP BY device_id, window_start";

#[derive(serde::Deserialize, Debug)]
struct DeadLetter {
    input: String,
    line: u64,
    reason: String,
    raw: String,
}

#[test]
fn bad_lines_go_to_dead_letters_in_order_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut text = String::new();
    let mut good = String::new();
    let mut expected_bad: Vec<(u64, &str)> = Vec::new();
    let bad_lines = [
        ("{\"device_id\":\"d\",\"ts\":1000}", "missing field `v`"),
        (
            "{\"device_id\":\"d\",\"ts\":1000,\"v\":\"7\"}",
            "field `v`: expected BIGINT",
        ),
        (
            "{\"device_id\":\"d\",\"ts\":\"noon\",\"v\":1}",
            "field `ts`",
        ),
        (
            "{\"device_id\":\"d\",\"ts\":1000,\"v\":1",
            "expected ',' or '}'",
        ),
        ("[1,2,3]", "expected a JSON object"),
        (
            "{\"device_id\":7,\"ts\":1000,\"v\":1}",
            "field `device_id`: expected TEXT",
        ),
    ];
    for i in 0..400u64 {
        let line = format!(
            "{{\"device_id\":\"dev-{}\",\"ts\":{},\"v\":{i}}}\n",
            i % 7,
            1_000 * i
        );
        text.push_str(&line);
        good.push_str(&line);
        if i % 37 == 5 {
            let (bad, reason) = bad_lines[(i as usize / 37) % bad_lines.len()];
            text.push_str(bad);
            text.push('\n');
            expected_bad.push((text.lines().count() as u64, reason));
        }
    }
    let input = dir.path().join("in.jsonl");
    let clean = dir.path().join("clean.jsonl");
    std::fs::write(&input, &text).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&clean, &good).unwrap_or_else(|e| panic!("{e}"));
    let plan = plan(QUERY);
    let reference = dir.path().join("ref");
    run(
        &plan,
        Input::File {
            path: clean,
            format: Format::Jsonl,
        },
        &reference,
        1,
        1 << 20,
    );
    let want = read_rows(&reference.join("q"));
    for workers in [1, 2, 4] {
        let out = dir.path().join(format!("out{workers}"));
        let summary = run(
            &plan,
            Input::File {
                path: input.clone(),
                format: Format::Jsonl,
            },
            &out,
            workers,
            700,
        );
        assert_eq!(summary.bad, expected_bad.len() as u64);
        assert_eq!(summary.readings, 400);
        assert_eq!(
            read_rows(&out.join("q")),
            want,
            "{workers} workers: good lines all counted"
        );
        let letters: Vec<DeadLetter> = super::support::dead_letters(&out, "q")
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect();
        assert_eq!(letters.len(), expected_bad.len());
        for (letter, (line, reason)) in letters.iter().zip(&expected_bad) {
            assert_eq!(letter.line, *line, "{workers} workers: {letter:?}");
            assert!(
                letter.reason.contains(reason),
                "{workers} workers: {letter:?} should say {reason}"
            );
            assert_eq!(letter.input, input.display().to_string());
            assert_eq!(
                text.lines().nth(*line as usize - 1),
                Some(letter.raw.as_str())
            );
        }
    }
}

#[test]
fn csv_bad_records_carry_file_line_numbers_after_the_header() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = dir.path().join("in.csv");
    std::fs::write(
        &input,
        "ts,device_id,v\n1000,a,1\n2000,b,x\n3000,c\n4000,d,4\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = dir.path().join("out");
    let summary = run(
        &plan(QUERY),
        Input::File {
            path: input,
            format: Format::Csv,
        },
        &out,
        2,
        4096,
    );
    assert_eq!((summary.readings, summary.bad), (2, 2));
    let text = super::support::dead_letters(&out, "q");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines[0]["line"], 3);
    assert_eq!(lines[0]["raw"], "2000,b,x");
    assert!(
        lines[0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("field `v` (column 3)"))
    );
    assert_eq!(lines[1]["line"], 4);
    assert!(
        lines[1]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("expected 3 fields, found 2"))
    );
}
