//! `allowed_lateness`: a reading that arrives after its window closed, but within the
//! allowance, corrects the window (a new revision of its file); a later one goes to the
//! late table. The latest view equals a plain sequential computation at 1, 2 and 4
//! workers, in one run and over consecutive runs, and the files (revisions included)
//! are the same for any worker count.

use std::collections::BTreeMap;
use std::path::Path;

use edgeflow::engine::RunConfig;
use edgeflow::engine::control::EndOfInput;
use edgeflow::types::Value;

use super::support::{
    assert_rows_eq, assert_same_files, parquet_files, plan, read_rows, relative, result_files, run,
    run_within_deadline, sort_rows,
};
use super::traffic::{Reading, fleet, run_in_legs, run_in_two, write};

/// Readings of `devices` devices every 0.1 to 2 s in arrival order; most arrive within
/// 3 s, one in fifteen up to 30 s late and one in fifty up to 90 s late, so under a 2 s
/// out-of-orderness and a 20 s allowance there are on-time readings, corrections and
/// late ones.
fn readings(seed: u64, devices: usize, per_device: usize) -> Vec<Reading> {
    fleet(
        seed,
        devices,
        per_device,
        5_000,
        |rng| 100 + rng.below(1_900) as i64,
        |rng| {
            (match rng.below(50) {
                0 => rng.below(90_000),
                1..=3 => rng.below(30_000),
                _ => rng.below(3_000),
            }) as i64
        },
    )
}

/// Window sizes in milliseconds: `(slide, size)`; a tumbling window has both equal.
#[derive(Clone, Copy)]
struct Windows {
    slide: i64,
    size: i64,
}

impl Windows {
    fn sql(self) -> String {
        if self.slide == self.size {
            format!("TUMBLE(readings, ts, INTERVAL '{}' MILLISECOND)", self.size)
        } else {
            format!(
                "HOP(readings, ts, INTERVAL '{}' MILLISECOND, INTERVAL '{}' MILLISECOND)",
                self.slide, self.size
            )
        }
    }

    /// Starts of the windows holding `t`.
    fn starts(self, t: i64) -> Vec<i64> {
        let last = t.div_euclid(self.slide) * self.slide;
        (0..)
            .map(|k| last - k * self.slide)
            .take_while(|s| s + self.size > t)
            .collect()
    }
}

fn sql(windows: Windows, ooo_ms: i64, allowed_ms: i64) -> String {
    format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
           WITH (event_time = 'ts', max_out_of_orderness = '{ooo_ms}ms',
                 allowed_lateness = '{allowed_ms}ms');
         SELECT device_id, window_start, COUNT(*) AS readings, SUM(bytes_in) AS bytes_in,
                MAX(latency_ms) AS max_latency_ms
         FROM {}
         GROUP BY device_id, window_start",
        windows.sql()
    )
}

/// The sequential answer over readings in arrival order, continuing a stream whose
/// largest event time so far is `max_seen`: the watermark at a reading is the largest
/// earlier event time minus the out-of-orderness; a (reading, window) pair is late once
/// the watermark has passed the window's end by the allowance (or, for a window ending
/// at or before `refused`, at all), and counts in its window otherwise.
struct Oracle {
    windows: Windows,
    ooo_ms: i64,
    allowed_ms: i64,
    refused: Option<i64>,
    max_seen: Option<i64>,
    late: u64,
    corrections: u64,
    groups: BTreeMap<(String, i64), (i64, i64, f64)>,
}

impl Oracle {
    fn new(windows: Windows, ooo_ms: i64, allowed_ms: i64) -> Self {
        Oracle {
            windows,
            ooo_ms,
            allowed_ms,
            refused: None,
            max_seen: None,
            late: 0,
            corrections: 0,
            groups: BTreeMap::new(),
        }
    }

    fn feed(&mut self, readings: &[Reading]) {
        for r in readings {
            let watermark = self.max_seen.map(|m| m - self.ooo_ms);
            self.max_seen = Some(self.max_seen.map_or(r.ts_ms, |m| m.max(r.ts_ms)));
            for start in self.windows.starts(r.ts_ms) {
                let end = start + self.windows.size;
                let late = watermark.is_some_and(|w| {
                    end + self.allowed_ms <= w
                        || (end <= w && self.refused.is_some_and(|f| end <= f))
                });
                if late {
                    self.late += 1;
                    continue;
                }
                if watermark.is_some_and(|w| end <= w) {
                    self.corrections += 1;
                }
                let g = self
                    .groups
                    .entry((r.device.clone(), start))
                    .or_insert((0, 0, f64::MIN));
                g.0 += 1;
                g.1 += r.bytes_in;
                g.2 = g.2.max(r.latency_ms);
            }
        }
    }

    fn rows(&self) -> Vec<Vec<Value>> {
        let mut rows: Vec<Vec<Value>> = self
            .groups
            .iter()
            .map(|((device, start), (n, sum, max))| {
                vec![
                    Value::Text(device.clone()),
                    Value::Timestamp(start * 1000),
                    Value::BigInt(*n),
                    Value::BigInt(*sum),
                    Value::Double(*max),
                ]
            })
            .collect();
        sort_rows(&mut rows);
        rows
    }
}

/// Every result file's name under the query's folder and its revisions' folder.
fn file_names(out: &Path) -> Vec<String> {
    let mut names: Vec<String> = [out.join("q"), out.join("q_revisions")]
        .iter()
        .flat_map(|d| parquet_files(d))
        .map(|p| relative(out, &p))
        .collect();
    names.sort();
    names
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn corrections_match_a_sequential_oracle_at_1_2_and_4_workers() {
    let (ooo, allowed) = (2_000, 20_000);
    let input = readings(5, 40, 250);
    for windows in [
        Windows {
            slide: 10_000,
            size: 10_000,
        },
        Windows {
            slide: 5_000,
            size: 15_000,
        },
    ] {
        let mut oracle = Oracle::new(windows, ooo, allowed);
        oracle.feed(&input);
        let without = {
            let mut o = Oracle::new(windows, ooo, 0);
            o.feed(&input);
            o.late
        };
        assert!(
            oracle.late > 0,
            "the input should have readings past the allowance"
        );
        assert!(
            without > oracle.late,
            "the input should have readings within the allowance"
        );
        let want = oracle.rows();
        let plan = plan(&sql(windows, ooo, allowed));
        let mut first: Option<Vec<String>> = None;
        for workers in [1, 2, 4] {
            let dir = tempdir();
            let file = write(&dir.path().join("in.jsonl"), &input);
            let out = dir.path().join("out");
            let summary = run(&plan, file, &out, workers, 8 * 1024);
            let context = format!("{} at {workers} workers", windows.sql());
            assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
            assert_eq!(
                summary.late, oracle.late,
                "{context}: late (reading, window) pairs"
            );
            assert_eq!(
                summary.corrections, oracle.corrections,
                "{context}: corrections"
            );
            let names = file_names(&out);
            assert!(
                names.iter().any(|n| n.starts_with("q_revisions")),
                "{context}: corrections should supersede revisions: {names:?}"
            );
            match &first {
                None => first = Some(names),
                Some(names_1) => {
                    assert_eq!(&names, names_1, "{context}: files differ from 1 worker")
                }
            }
        }
    }
}

#[test]
fn corrections_reach_windows_an_earlier_run_closed() {
    let windows = Windows {
        slide: 10_000,
        size: 10_000,
    };
    let (ooo, allowed) = (2_000, 20_000);
    let input = readings(17, 30, 200);
    let mut oracle = Oracle::new(windows, ooo, allowed);
    oracle.feed(&input);
    let want = oracle.rows();
    let plan = plan(&sql(windows, ooo, allowed));
    for (cut, first_workers, second_workers) in [(0.3, 1, 4), (0.6, 4, 2)] {
        let dir = tempdir();
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
        assert_eq!(
            first.late + second.late,
            oracle.late,
            "{context}: late pairs"
        );
        assert_eq!(
            first.corrections + second.corrections,
            oracle.corrections,
            "{context}: corrections"
        );
        assert!(
            second.corrections > 0,
            "{context}: the second run corrected nothing"
        );
    }
}

/// One device's readings at these seconds after 2026-01-01T00:00:00Z, 1 byte each.
fn at_seconds(seconds: &[i64]) -> Vec<Reading> {
    seconds
        .iter()
        .map(|s| Reading {
            device: "dev-a".into(),
            ts_ms: 1_767_225_600_000 + s * 1000,
            bytes_in: 1,
            latency_ms: 1.0,
        })
        .collect()
}

/// (window start in seconds after the base, readings) of the latest view.
fn counts(out: &Path) -> Vec<(i64, i64)> {
    read_rows(&out.join("q"))
        .iter()
        .map(|r| match (&r[1], &r[2]) {
            (Value::Timestamp(start), Value::BigInt(n)) => {
                ((start / 1000 - 1_767_225_600_000) / 1000, *n)
            }
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

#[test]
fn a_larger_allowance_never_rewrites_a_window_closed_without_one() {
    let windows = Windows {
        slide: 10_000,
        size: 10_000,
    };
    let dir = tempdir();
    let out = dir.path().join("out");
    // Without an allowance the first run closes [80, 90) (watermark 98 s) and keeps
    // nothing of it.
    let first = run(
        &plan(&sql(windows, 2_000, 0)),
        write(
            &dir.path().join("a.jsonl"),
            &at_seconds(&[81, 85, 92, 99, 100]),
        ),
        &out,
        2,
        8 * 1024,
    );
    assert_eq!(first.late, 0);
    // Under 60 s, a reading for [80, 90) cannot be merged into anything kept: it is
    // late, not a window of one reading replacing the window of two. 105 and 97 come
    // after the watermark (128 s) passed their windows' ends, within the allowance.
    let second = run(
        &plan(&sql(windows, 2_000, 60_000)),
        write(
            &dir.path().join("b.jsonl"),
            &at_seconds(&[87, 95, 101, 130, 105, 97]),
        ),
        &out,
        2,
        8 * 1024,
    );
    assert_eq!(second.late, 1, "the reading for [80, 90)");
    assert_eq!(
        second.corrections, 2,
        "the readings for [100, 110) and [90, 100)"
    );
    assert_eq!(counts(&out), vec![(80, 2), (90, 4), (100, 3), (130, 1)]);
}

#[test]
fn closing_the_stream_ends_corrections() {
    let windows = Windows {
        slide: 10_000,
        size: 10_000,
    };
    let plan = plan(&sql(windows, 2_000, 60_000));
    let dir = tempdir();
    let out = dir.path().join("out");
    let config = RunConfig::new(
        plan.clone(),
        write(&dir.path().join("a.jsonl"), &at_seconds(&[81, 85, 100])),
        out.clone(),
    );
    config.control.set_end_of_input(EndOfInput::Close);
    let first = run_within_deadline(config).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.late, 0);
    // Every window was written final: a reading for one of them is late, whatever the
    // allowance says.
    let second = run(
        &plan,
        write(&dir.path().join("b.jsonl"), &at_seconds(&[86, 101])),
        &out,
        1,
        8 * 1024,
    );
    assert_eq!(second.late, 2);
    assert_eq!(second.corrections, 0);
    assert_eq!(counts(&out), vec![(80, 2), (100, 1)]);
}

#[test]
fn a_corrected_window_is_ranked_again() {
    let windows = Windows {
        slide: 10_000,
        size: 10_000,
    };
    let (ooo, allowed) = (2_000, 20_000);
    let input = readings(29, 30, 200);
    let mut oracle = Oracle::new(windows, ooo, allowed);
    oracle.feed(&input);
    // The three devices with the most bytes in each window, ties by device.
    let mut by_window: BTreeMap<i64, Vec<(&String, i64)>> = BTreeMap::new();
    for ((device, start), (_, sum, _)) in &oracle.groups {
        by_window.entry(*start).or_default().push((device, *sum));
    }
    let mut want: Vec<Vec<Value>> = Vec::new();
    for (start, mut groups) in by_window {
        groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (rank, (device, sum)) in groups.into_iter().take(3).enumerate() {
            want.push(vec![
                Value::Text(device.clone()),
                Value::Timestamp(start * 1000),
                Value::BigInt(sum),
                Value::BigInt(rank as i64 + 1),
            ]);
        }
    }
    sort_rows(&mut want);
    let plan = plan(&format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
           WITH (event_time = 'ts', max_out_of_orderness = '{ooo}ms',
                 allowed_lateness = '{allowed}ms');
         SELECT * FROM (
           SELECT *, ROW_NUMBER() OVER (PARTITION BY window_start ORDER BY bytes_in DESC) AS rank
           FROM (SELECT device_id, window_start, SUM(bytes_in) AS bytes_in
                 FROM {} GROUP BY device_id, window_start)
         ) WHERE rank <= 3",
        windows.sql()
    ));
    for workers in [1, 2, 4] {
        let dir = tempdir();
        let out = dir.path().join("out");
        let summary = run(
            &plan,
            write(&dir.path().join("in.jsonl"), &input),
            &out,
            workers,
            8 * 1024,
        );
        let context = format!("{workers} workers");
        assert!(summary.corrections > 0, "{context}: no corrections");
        assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
    }
}

#[test]
fn checkpoints_change_no_revision() {
    // A live query's legs end at checkpoints wherever its timer says; a crash replays
    // from the last one and ends its legs elsewhere. So a correction a checkpoint cuts
    // short must be carried over, not written: otherwise a revision's bytes would
    // depend on where legs ended, and a replay would conflict with what was uploaded.
    let windows = Windows {
        slide: 10_000,
        size: 10_000,
    };
    let (ooo, allowed) = (2_000, 20_000);
    let input = readings(41, 8, 120);
    // Integer aggregates only: a kept window's sums merge in another order than one
    // run's, which only float sums could tell.
    let plan = plan(&format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
           WITH (event_time = 'ts', max_out_of_orderness = '{ooo}ms',
                 allowed_lateness = '{allowed}ms');
         SELECT device_id, window_start, COUNT(*) AS readings, SUM(bytes_in) AS bytes_in
         FROM {} GROUP BY device_id, window_start",
        windows.sql()
    ));
    let one = tempdir();
    let (corrections, late) = run_in_legs(&plan, one.path(), &input, &[]);
    assert!(corrections > 0, "the input should have corrections");
    let want = result_files(&one.path().join("out"));
    assert!(
        want.keys().any(|n| n.starts_with("q_revisions")),
        "corrections should write revisions: {:?}",
        want.keys()
    );
    let n = input.len();
    for cuts in [vec![n / 3], vec![n / 5, n / 2, 4 * n / 5], vec![7, n - 7]] {
        let legs = tempdir();
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

/// `edgeflow run` over a file with a checkpoint after nearly every chunk writes the files
/// one run writes, byte for byte. A run resumed at a checkpoint used to cut the rest of
/// the file into chunks from where it resumed, off the grid of the whole file: the first
/// line of the next chunk moved into the one before, where the watermark stood lower,
/// so a correction could join its window's first revision (or the other way round) and
/// a rerun after a crash wrote other bytes under an uploaded name.
#[test]
fn a_file_run_checkpointed_after_every_chunk_writes_the_files_of_one_run() {
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    write(&input, &readings(43, 12, 500));
    let query = dir.path().join("q.sql");
    std::fs::write(
        &query,
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
           WITH (event_time = 'ts', max_out_of_orderness = '2s', allowed_lateness = '20s');
         SELECT device_id, window_start, COUNT(*) AS readings, SUM(bytes_in) AS bytes_in
         FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) GROUP BY device_id, window_start",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run = |out: &Path, workers: &str, every: &str| {
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_edgeflow"))
            .env_remove("EDGEFLOW_SYNC")
            .arg("run")
            .arg(&query)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(out)
            .args(["--no-sync", "--no-compaction", "--chunk-bytes", "4096"])
            .args(["--workers", workers, "--checkpoint-every", every])
            .output()
            .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"));
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        result_files(out)
    };
    let want = run(&dir.path().join("one"), "1", "1h");
    assert!(
        want.keys().any(|n| n.starts_with("q_revisions")),
        "corrections should write revisions: {:?}",
        want.keys()
    );
    for workers in ["1", "2"] {
        let out = dir.path().join(format!("legs{workers}"));
        let got = run(&out, workers, "1ms");
        let logs = std::fs::read_dir(out.join("_logs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect::<String>();
        // How many legs a run takes depends on the machine; a few are enough to cross
        // chunk edges with corrections on either side.
        let legs = logs.matches("Checkpoint: open windows").count();
        assert!(legs >= 2, "only {legs} checkpoints at {workers} workers");
        assert_same_files(
            &got,
            &want,
            &format!("{workers} workers, {legs} checkpoints"),
        );
    }
}
