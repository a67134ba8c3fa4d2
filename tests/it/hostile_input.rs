//! Hostile input through the real binary: a line of a gigabyte, a CSV quote that never
//! closes, a stdin that fails. Memory stays bounded (the child's own peak RSS, `VmHWM`,
//! from its `--json` summary), every good line around the damage is counted, and each
//! bad line is one dead letter of bounded size.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};

/// Generous: a debug build of the engine idles at a few tens of MB.
const RSS_BOUND: u64 = 200 << 20;

const LIMIT: u64 = edgeflow::decode::DEFAULT_MAX_LINE_BYTES as u64;

const JSON_QUERY: &str =
    "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts');
SELECT device_id, window_start, COUNT(*) AS n, SUM(v) AS v FROM TUMBLE(r, ts, INTERVAL '1' MINUTE)
GROUP BY device_id, window_start;
";

#[derive(serde::Deserialize, Debug)]
struct DeadLetter {
    line: u64,
    reason: String,
    raw: String,
}

#[derive(serde::Deserialize, Debug)]
struct Summary {
    readings: u64,
    bad: u64,
    peak_rss_bytes: Option<u64>,
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `edgeflow run` on 2 workers with `stdin` and returns (exit code, summary, stderr).
fn run(dir: &Path, query: &str, input: &[&str], stdin: Stdio) -> (i32, Option<Summary>, String) {
    let q = dir.join("q.sql");
    ok(std::fs::write(&q, query));
    let out = ok(Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .arg("run")
        .arg(&q)
        .args(input)
        .args(["--workers", "2", "--no-sync", "--json", "--output"])
        .arg(dir.join("out"))
        .stdin(stdin)
        .output());
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        serde_json::from_str(stdout.trim()).ok(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dead_letters(dir: &Path) -> Vec<DeadLetter> {
    super::support::dead_letters(&dir.join("out"), "q")
        .lines()
        .map(|l| ok(serde_json::from_str(l)))
        .collect()
}

/// Writes `n` bytes of `byte` without holding them in memory.
fn write_run(w: &mut impl Write, byte: u8, mut n: u64) {
    let block = vec![byte; 1 << 20];
    while n > 0 {
        let k = n.min(block.len() as u64) as usize;
        ok(w.write_all(&block[..k]));
        n -= k as u64;
    }
}

fn json_lines(w: &mut impl Write, from: u64, n: u64) {
    for i in from..from + n {
        ok(writeln!(
            w,
            "{{\"device_id\":\"dev-{}\",\"ts\":{},\"v\":1}}",
            i % 5,
            i * 10
        ));
    }
}

fn check_memory(what: &str, summary: &Summary) {
    let rss = summary.peak_rss_bytes.unwrap_or(u64::MAX);
    eprintln!("{what}: peak RSS {:.1} MB", rss as f64 / 1e6);
    assert!(rss < RSS_BOUND, "{what}: peak RSS {rss} bytes");
}

#[test]
fn a_gigabyte_line_is_one_dead_letter_in_bounded_memory() {
    let dir = ok(tempfile::tempdir());
    let input = dir.path().join("in.jsonl");
    let head = b"{\"device_id\":\"";
    let tail = b"\",\"ts\":1,\"v\":1}\n";
    let long = head.len() as u64 + (1 << 30) + tail.len() as u64 - 1;
    {
        let mut w = BufWriter::new(ok(File::create(&input)));
        json_lines(&mut w, 0, 1000);
        ok(w.write_all(head));
        // The rest of the gigabyte is a hole: zeros to the reader, no space on disk.
        write_run(&mut w, b'x', 1 << 12);
        ok(w.seek(SeekFrom::Current((1 << 30) - (1 << 12))));
        ok(w.write_all(tail));
        json_lines(&mut w, 1000, 1000);
        ok(w.flush());
    }
    let (code, summary, err) = run(
        dir.path(),
        JSON_QUERY,
        &["--input", &input.display().to_string()],
        Stdio::null(),
    );
    ok(std::fs::remove_file(&input));
    assert_eq!(code, 0, "{err}");
    let summary = summary.unwrap_or_else(|| panic!("no summary: {err}"));
    assert_eq!((summary.readings, summary.bad), (2000, 1));
    check_memory("1 GiB JSON line", &summary);
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].line, 1001);
    assert_eq!(
        letters[0].reason,
        format!("line too long ({long} bytes, limit {LIMIT})")
    );
    assert_eq!(letters[0].raw.len(), 1024);
    assert!(letters[0].raw.starts_with("{\"device_id\":\"xxx"));
}

#[test]
fn an_unclosed_csv_quote_is_cut_at_its_line_on_stdin_in_bounded_memory() {
    let dir = ok(tempfile::tempdir());
    let input = dir.path().join("in.csv");
    let pad = "p".repeat(1000);
    let good = |w: &mut BufWriter<File>, from: u64, n: u64| {
        for i in from..from + n {
            ok(writeln!(w, "dev-{},{},1,{pad}", i % 5, i * 10));
        }
    };
    // 1000 good lines, a quote that closes on no line, 100 MB of good lines, a quote
    // that opens a 2 MiB line with no line break, 1000 good lines.
    {
        let mut w = BufWriter::new(ok(File::create(&input)));
        ok(writeln!(w, "device_id,ts,v,pad"));
        good(&mut w, 0, 1000);
        ok(writeln!(w, "\"never closed,5,1,x"));
        good(&mut w, 1000, 100_000);
        ok(w.write_all(b"dev-0,7,1,\""));
        write_run(&mut w, b'q', 2 << 20);
        ok(w.write_all(b"\n"));
        good(&mut w, 101_000, 1000);
        ok(w.flush());
    }
    let stdin = Stdio::from(ok(File::open(&input)));
    let query = JSON_QUERY.replace("v BIGINT)", "v BIGINT, pad TEXT)");
    let (code, summary, err) = run(
        dir.path(),
        &query,
        &["--input", "-", "--format", "csv"],
        stdin,
    );
    ok(std::fs::remove_file(&input));
    assert_eq!(code, 0, "{err}");
    let summary = summary.unwrap_or_else(|| panic!("no summary: {err}"));
    assert_eq!((summary.readings, summary.bad), (102_000, 2));
    check_memory("100 MB CSV with unclosed quotes on stdin", &summary);
    let letters = dead_letters(dir.path());
    assert_eq!(letters.len(), 2);
    // The header is line 1.
    assert_eq!(letters[0].line, 1002);
    assert!(
        letters[0]
            .reason
            .contains("quoted field not closed on its line"),
        "{letters:?}"
    );
    assert_eq!(letters[0].raw, "\"never closed,5,1,x");
    assert_eq!(letters[1].line, 101_003);
    assert_eq!(
        letters[1].reason,
        format!("line too long ({} bytes, limit {LIMIT})", 11 + (2 << 20))
    );
    assert_eq!(letters[1].raw.len(), 1024);
}

#[test]
fn a_read_error_on_stdin_fails_the_run() {
    let dir = ok(tempfile::tempdir());
    // Reading a directory fails with EISDIR: a read error, not the end of the input.
    let stdin = Stdio::from(ok(File::open(dir.path())));
    let (code, _, err) = run(dir.path(), JSON_QUERY, &["--input", "-"], stdin);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("reading -"), "{err}");
}
