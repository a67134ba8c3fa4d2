//! A device registry joined through differential dataflow: results per registry column
//! equal a plain sequential computation at 1, 2 and 4 workers and over consecutive runs
//! (INNER and LEFT, TUMBLE and HOP, with corrections); a registry change applies to the
//! windows that close after it is read, and a malformed one changes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edgeflow::types::Value;

use super::live::{LiveNode, http, line, now_ms, tempdir, write_query};
use super::s3_server::wait_until;
use super::support::{assert_rows_eq, plan, read_rows, run, sort_rows};
use super::traffic::{Reading, fleet, run_in_two, write};

/// Devices 0 to 29 send; the registry lists the 25 not divisible by 7, in three sites,
/// except device 10, whose site is not known yet (empty).
fn registry_site(device: usize) -> Option<Option<String>> {
    if device.is_multiple_of(7) {
        return None;
    }
    if device == 10 {
        return Some(None);
    }
    Some(Some(["lyon", "nice", "paris"][device % 3].to_owned()))
}

fn write_registry(path: &Path) {
    let mut csv = String::from("rack,device_id,site\n");
    for d in 0..30 {
        if let Some(site) = registry_site(d) {
            csv.push_str(&format!(
                "{},dev-{d:03},{}\n",
                d % 4,
                site.unwrap_or_default()
            ));
        }
    }
    std::fs::write(path, csv).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// 30 devices every 0.1 to 2 s, most arriving within 3 s, one in fifteen up to 25 s late.
fn readings(seed: u64) -> Vec<Reading> {
    fleet(
        seed,
        30,
        150,
        5_000,
        |rng| 100 + rng.below(1_900) as i64,
        |rng| {
            (match rng.below(15) {
                0 => rng.below(25_000),
                _ => rng.below(3_000),
            }) as i64
        },
    )
}

#[derive(Clone, Copy, Debug)]
struct Case {
    left: bool,
    slide: i64,
    size: i64,
    allowed: i64,
}

const OOO: i64 = 2_000;

fn sql(case: Case, registry: &Path) -> String {
    let window = if case.slide == case.size {
        format!("TUMBLE(readings, ts, INTERVAL '{}' MILLISECOND)", case.size)
    } else {
        format!(
            "HOP(readings, ts, INTERVAL '{}' MILLISECOND, INTERVAL '{}' MILLISECOND)",
            case.slide, case.size
        )
    };
    format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
           WITH (event_time = 'ts', max_out_of_orderness = '{OOO}ms',
                 allowed_lateness = '{}ms');
         CREATE TABLE devices (device_id TEXT, site TEXT, rack BIGINT)
           WITH (connector = 'file', path = '{}');
         SELECT d.site, window_start, COUNT(*) AS readings, SUM(r.bytes_in) AS bytes_in,
                MAX(latency_ms) AS max_latency_ms
         FROM {window} r {} devices d ON r.device_id = d.device_id
         GROUP BY d.site, window_start",
        case.allowed,
        registry.display(),
        if case.left { "LEFT JOIN" } else { "JOIN" },
    )
}

/// The sequential answer: readings in arrival order, a watermark of the largest earlier
/// event time minus the out-of-orderness, a (reading, window) pair late once the
/// watermark is at or past the window's end plus the allowance; each pair's device
/// looked up in the registry.
struct Oracle {
    case: Case,
    max_seen: Option<i64>,
    late: u64,
    /// Pairs without a registry row, by window end.
    unmatched: BTreeMap<i64, u64>,
    groups: BTreeMap<(Option<String>, i64), (i64, i64, f64)>,
}

impl Oracle {
    fn answer(case: Case, readings: &[Reading]) -> Oracle {
        let mut oracle = Oracle {
            case,
            max_seen: None,
            late: 0,
            unmatched: BTreeMap::new(),
            groups: BTreeMap::new(),
        };
        for r in readings {
            oracle.feed(r);
        }
        oracle
    }

    fn feed(&mut self, r: &Reading) {
        let Case {
            slide,
            size,
            allowed,
            left,
        } = self.case;
        let watermark = self.max_seen.map(|m| m - OOO);
        self.max_seen = Some(self.max_seen.map_or(r.ts_ms, |m| m.max(r.ts_ms)));
        let device: usize = r.device["dev-".len()..].parse().unwrap_or(usize::MAX);
        let site = registry_site(device);
        let last = r.ts_ms.div_euclid(slide) * slide;
        for start in (0..)
            .map(|k| last - k * slide)
            .take_while(|s| s + size > r.ts_ms)
        {
            if watermark.is_some_and(|w| start + size + allowed <= w) {
                self.late += 1;
                continue;
            }
            let key = match (&site, left) {
                (Some(site), _) => site.clone(),
                (None, true) => None,
                (None, false) => {
                    *self.unmatched.entry(start + size).or_default() += 1;
                    continue;
                }
            };
            let g = self.groups.entry((key, start)).or_insert((0, 0, f64::MIN));
            g.0 += 1;
            g.1 += r.bytes_in;
            g.2 = g.2.max(r.latency_ms);
        }
    }

    /// Pairs without a registry row in windows the watermark has closed: a window still
    /// open at the end of the input is written as it stands, and what its join dropped
    /// counts once it closes.
    fn unmatched(&self) -> u64 {
        let watermark = self.max_seen.map_or(i64::MIN, |m| m - OOO);
        self.unmatched.range(..=watermark).map(|(_, n)| n).sum()
    }

    fn rows(&self) -> Vec<Vec<Value>> {
        let mut rows: Vec<Vec<Value>> = self
            .groups
            .iter()
            .map(|((site, start), (n, sum, max))| {
                vec![
                    site.clone().map_or(Value::Null, Value::Text),
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

const CASES: [Case; 3] = [
    Case {
        left: false,
        slide: 10_000,
        size: 10_000,
        allowed: 0,
    },
    Case {
        left: true,
        slide: 10_000,
        size: 10_000,
        allowed: 15_000,
    },
    Case {
        left: false,
        slide: 5_000,
        size: 15_000,
        allowed: 10_000,
    },
];

#[test]
fn joined_results_match_a_sequential_oracle_at_1_2_and_4_workers() {
    let dir = tempdir();
    let registry = dir.path().join("devices.csv");
    write_registry(&registry);
    let input = readings(3);
    for case in CASES {
        let oracle = Oracle::answer(case, &input);
        assert!(
            oracle.late > 0,
            "{case:?}: the input should have late pairs"
        );
        assert_eq!(
            oracle.unmatched() == 0,
            case.left,
            "{case:?}: only INNER drops readings"
        );
        let want = oracle.rows();
        // Device 10 is listed without a site; under LEFT, unlisted devices join it.
        assert!(
            want.iter().any(|r| r[0] == Value::Null),
            "{case:?}: a device listed without a site should give a NULL site"
        );
        let plan = plan(&sql(case, &registry));
        for workers in [1, 2, 4] {
            let run_dir = tempdir();
            let out = run_dir.path().join("out");
            let summary = run(
                &plan,
                write(&run_dir.path().join("in.jsonl"), &input),
                &out,
                workers,
                8 * 1024,
            );
            let context = format!("{case:?} at {workers} workers");
            assert_rows_eq(&read_rows(&out.join("q")), &want, &context);
            assert_eq!(summary.late, oracle.late, "{context}: late pairs");
            assert_eq!(
                summary.registry_unmatched,
                oracle.unmatched(),
                "{context}: pairs without a registry row"
            );
            assert_eq!(summary.registry_rows, 25, "{context}: registry rows");
        }
    }
}

#[test]
fn consecutive_runs_join_as_one_run_does() {
    let dir = tempdir();
    let registry = dir.path().join("devices.csv");
    write_registry(&registry);
    let input = readings(11);
    for (case, workers) in [(CASES[1], (1, 4)), (CASES[2], (4, 2))] {
        let oracle = Oracle::answer(case, &input);
        let run_dir = tempdir();
        let (first, second) = run_in_two(
            &plan(&sql(case, &registry)),
            run_dir.path(),
            &input,
            input.len() / 2,
            workers,
        );
        let context = format!("{case:?}, {} then {} workers", workers.0, workers.1);
        assert_rows_eq(
            &read_rows(&run_dir.path().join("out/q")),
            &oracle.rows(),
            &context,
        );
        assert_eq!(first.late + second.late, oracle.late, "{context}: late");
        assert_eq!(
            first.registry_unmatched + second.registry_unmatched,
            oracle.unmatched(),
            "{context}: unmatched"
        );
    }
}

/// Rows of the latest view as (site, window start in seconds after `t0`) -> count.
fn sites(out: &Path, t0: i64) -> BTreeMap<(String, i64), i64> {
    sites_of(out, "sites", t0)
}

/// [`sites`] of the result table `table`.
fn sites_of(out: &Path, table: &str, t0: i64) -> BTreeMap<(String, i64), i64> {
    read_rows(&out.join(table))
        .into_iter()
        .map(|r| match (&r[0], &r[1], &r[2]) {
            (Value::Text(site), Value::Timestamp(start), Value::BigInt(n)) => {
                ((site.clone(), (start / 1000 - t0) / 1000), *n)
            }
            other => panic!("unexpected row {other:?}"),
        })
        .collect()
}

#[test]
fn a_registry_change_applies_to_windows_closing_after_it_is_read() {
    let dir = tempdir();
    let registry = dir.path().join("devices.csv");
    std::fs::write(&registry, "device_id,site\na,lyon\nb,nice\n").unwrap_or_else(|e| panic!("{e}"));
    // No idle timeout: only readings move the watermark.
    let query = write_query(
        dir.path(),
        "sites",
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
           WITH (connector = 'http_push', event_time = 'ts');
         CREATE TABLE devices (device_id TEXT, site TEXT)
           WITH (connector = 'file', path = 'devices.csv', reload = '100ms');
         SELECT d.site, window_start, COUNT(*) AS n
         FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) r
         JOIN devices d ON r.device_id = d.device_id
         GROUP BY d.site, window_start",
    );
    let node = LiveNode::start(
        dir.path(),
        &[
            "serve",
            query.to_str().unwrap_or_default(),
            "--no-sync",
            "--workers",
            "1",
        ],
        // Reloads are logged at info.
        &[("EDGEFLOW_INGEST_TOKEN", "t"), ("EDGEFLOW_LOG", "info")],
    );
    let t0 = (now_ms() - 600_000).div_euclid(10_000) * 10_000;
    // Readings every second from a and b, for `seconds` seconds from `from`.
    let push = |from: i64, seconds: i64| {
        let body: String = (from..from + seconds)
            .flat_map(|s| [line("a", t0 + s * 1000, 1), line("b", t0 + s * 1000, 1)])
            .collect();
        let auth = [("Authorization", "Bearer t")];
        let (status, head, _) = http(
            node.port,
            "POST",
            "/ingest/readings",
            &auth,
            body.as_bytes(),
        );
        assert_eq!(status, 200, "{head}");
    };
    let out = dir.path().join("out");
    let wait_for_log = |text: &str| {
        wait_until(text, Duration::from_secs(60), || {
            node.stderr().contains(text)
        });
    };
    // The watermark reaches 29 s: [0, 10) and [10, 20) close and are joined.
    push(0, 30);
    wait_until("[10, 20) to close", Duration::from_secs(60), || {
        sites(&out, t0).contains_key(&("lyon".into(), 10))
    });
    // a moves to paris. [20, 30) is still open: it closes after the change is read, so
    // it joins the new version; the windows already written stay as they are.
    std::fs::write(&registry, "device_id,site\na,paris\nb,nice\n")
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_log("Registry reloaded");
    push(30, 12);
    wait_until("[30, 40) to close", Duration::from_secs(60), || {
        sites(&out, t0).contains_key(&("paris".into(), 30))
    });
    // A malformed registry changes nothing: b would move, but a row is broken.
    std::fs::write(&registry, "device_id,site\na,paris\nb,lyon\n,broken\n")
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_log("devices.csv:4: column `device_id`: expected the device's key");
    push(42, 10);
    wait_until("[40, 50) to close", Duration::from_secs(60), || {
        sites(&out, t0).contains_key(&("nice".into(), 40))
    });
    let stderr = node.stderr();
    let (code, stdout) = node.stop();
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let want: BTreeMap<(String, i64), i64> = [
        (("lyon", 0), 10),
        (("lyon", 10), 10),
        (("nice", 0), 10),
        (("nice", 10), 10),
        (("paris", 20), 10),
        (("nice", 20), 10),
        (("paris", 30), 10),
        (("nice", 30), 10),
        (("paris", 40), 10),
        (("nice", 40), 10),
    ]
    .into_iter()
    .map(|((site, start), n)| ((site.to_owned(), start), n))
    .collect();
    let got: BTreeMap<(String, i64), i64> = sites(&out, t0)
        .into_iter()
        .filter(|((_, start), _)| *start < 50)
        .collect();
    assert_eq!(got, want, "{stderr}");
}

/// The event time the registry-version tests start at (ms).
const T0_MS: i64 = 1_767_225_600_000;

/// A reading of `device` `s` seconds after [`T0_MS`].
fn reading_at(device: &str, s: i64) -> Reading {
    Reading {
        device: device.to_owned(),
        ts_ms: T0_MS + s * 1000,
        bytes_in: 1,
        latency_ms: 1.0,
    }
}

/// A registry of devices a (in site `a`) and b (in nice).
fn two_devices(registry: &Path, a: &str) {
    std::fs::write(registry, format!("device_id,site\na,{a}\nb,nice\n"))
        .unwrap_or_else(|e| panic!("{e}"));
}

/// Under an allowance, a correction that a later run makes to a window an earlier run
/// closed joins the registry version the window closed under, however the file changed
/// since, over several runs at other worker counts; a window still open at a run's end
/// joins the version in force at the next run's start.
#[test]
fn a_correction_in_a_later_run_joins_the_version_its_window_closed_under() {
    let dir = tempdir();
    let registry = dir.path().join("devices.csv");
    let version = |a: &str| two_devices(&registry, a);
    let plan = plan(&format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
           WITH (event_time = 'ts', allowed_lateness = '60s');
         CREATE TABLE devices (device_id TEXT, site TEXT)
           WITH (connector = 'file', path = '{}');
         SELECT d.site, window_start, COUNT(*) AS n
         FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) r
         JOIN devices d ON r.device_id = d.device_id
         GROUP BY d.site, window_start",
        registry.display()
    ));
    // a and b every second; the watermark follows the largest time (no out-of-orderness).
    let every_second = |from: i64, to: i64| -> Vec<Reading> {
        (from..to)
            .flat_map(|s| [reading_at("a", s), reading_at("b", s)])
            .collect()
    };
    let out = dir.path().join("out");
    let leg = |name: &str, readings: &[Reading], workers: usize| {
        run(
            &plan,
            write(&dir.path().join(name), readings),
            &out,
            workers,
            8 * 1024,
        )
    };
    // Run 1 closes [0, 10) and [10, 20) under a in lyon; [20, 30) stays open.
    version("lyon");
    leg("1.jsonl", &every_second(0, 30), 2);
    // Run 2, with a in paris: a correction to [0, 10) first, a reading for the window
    // left open, then [30, 40).
    version("paris");
    let mut second = vec![reading_at("a", 5), reading_at("b", 25)];
    second.extend(every_second(30, 45));
    leg("2.jsonl", &second, 1);
    // Run 3, with a in rome: corrections to [10, 20) (closed in run 1) and [30, 40)
    // (closed in run 2).
    version("rome");
    leg(
        "3.jsonl",
        &[
            reading_at("a", 15),
            reading_at("a", 35),
            reading_at("b", 46),
        ],
        4,
    );
    let got: BTreeMap<(String, i64), i64> = sites_of(&out, "q", T0_MS)
        .into_iter()
        .filter(|((_, start), _)| *start < 40)
        .collect();
    let want: BTreeMap<(String, i64), i64> = [
        (("lyon", 0), 11),
        (("nice", 0), 10),
        (("lyon", 10), 11),
        (("nice", 10), 10),
        // Open at the end of run 1 and written again by run 2: joined with the version
        // in force at run 2's start.
        (("paris", 20), 10),
        (("nice", 20), 11),
        (("paris", 30), 11),
        (("nice", 30), 10),
    ]
    .into_iter()
    .map(|((site, start), n)| ((site.to_owned(), start), n))
    .collect();
    assert_eq!(got, want);
}

/// A run that failed after its watermark passed some windows' ends (a full disk: as a
/// crash, nothing of it is kept) is redone after the registry file changed: the windows
/// the failed attempt closed join the version they closed under, as one uninterrupted
/// run has them, and only the window still open joins the file as it is now.
#[test]
fn a_run_redone_after_the_registry_changed_joins_what_the_failed_attempt_closed_as_it_did() {
    let dir = tempdir();
    let registry = dir.path().join("devices.csv");
    let version = |a: &str| two_devices(&registry, a);
    let query = write_query(
        dir.path(),
        "q",
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT, latency_ms DOUBLE)
           WITH (event_time = 'ts', allowed_lateness = '60s');
         CREATE TABLE devices (device_id TEXT, site TEXT)
           WITH (connector = 'file', path = 'devices.csv');
         SELECT d.site, window_start, COUNT(*) AS n
         FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) r
         JOIN devices d ON r.device_id = d.device_id
         GROUP BY d.site, window_start",
    );
    let readings: Vec<Reading> = (0..60)
        .flat_map(|s| ["a", "b"].map(|device| reading_at(device, s)))
        .collect();
    let input = dir.path().join("in.jsonl");
    write(&input, &readings);
    let out = dir.path().join("out");
    let run = |failpoints: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        command
            .arg("run")
            .arg(&query)
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(&out)
            .args(["--no-sync", "--workers", "2"]);
        if let Some(points) = failpoints {
            command.env("FAILPOINTS", points);
        }
        command.output().unwrap_or_else(|e| panic!("{e}"))
    };
    // One chunk: the watermark passes 50 s before any window is written; the third
    // file commit fails, as on a full disk.
    version("lyon");
    let failed = run(Some("commit-write=2*off->return(ENOSPC)"));
    assert!(!failed.status.success(), "the first attempt was to fail");
    version("paris");
    let redone = run(None);
    assert!(
        redone.status.success(),
        "{}",
        String::from_utf8_lossy(&redone.stderr)
    );
    let got: BTreeMap<(String, i64), i64> = sites_of(&out, "q", T0_MS).into_iter().collect();
    let mut want: BTreeMap<(String, i64), i64> = BTreeMap::new();
    for start in (0..60).step_by(10) {
        // [50, 60) was still open when the attempt failed.
        let a = if start < 50 { "lyon" } else { "paris" };
        want.insert((a.to_owned(), start), 10);
        want.insert(("nice".to_owned(), start), 10);
    }
    assert_eq!(got, want);
}

#[test]
fn a_malformed_registry_refuses_the_start_naming_file_and_line() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("devices.csv"),
        "device_id,site\na,lyon\na,nice\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let query = write_query(
        dir.path(),
        "sites",
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
           WITH (event_time = 'ts');
         CREATE TABLE devices (device_id TEXT, site TEXT)
           WITH (connector = 'file', path = 'devices.csv');
         SELECT d.site, window_start, COUNT(*) AS n
         FROM TUMBLE(readings, ts, INTERVAL '10' SECOND) r
         JOIN devices d ON r.device_id = d.device_id
         GROUP BY d.site, window_start",
    );
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, line("a", 1_767_225_600_000, 1)).unwrap_or_else(|e| panic!("{e}"));
    let output = Command::new(env!("CARGO_BIN_EXE_edgeflow"))
        .arg("run")
        .arg(&query)
        .arg("--input")
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("out"))
        .arg("--no-sync")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("devices.csv:3: `device_id` \"a\" is listed twice (first at line 2)"),
        "{stderr}"
    );
}
