//! Sync: the same conformance suite against a local folder and a real S3-compatible
//! server (moto, signatures checked), then fault tests against the server. Every test
//! ends with the target holding exactly the local files, byte for byte, once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use edgeflow::sync::target::S3Options;
use object_store::ObjectStoreExt;

use super::s3_server::{
    Creds, Forwarder, Moto, assert_target_mirrors, env_for, free_port, local_outputs, put_object,
    target_objects, wait_until,
};

/// One-second windows over 200 s of event time: a few hundred small files.
const MANY_WINDOWS: &str = "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
WITH (event_time = 'ts', max_out_of_orderness = '2s');
SELECT device_id, window_start, COUNT(*) AS n, SUM(bytes_in) AS bytes_in
FROM TUMBLE(readings, ts, INTERVAL '1' SECOND)
GROUP BY device_id, window_start, window_end;";

const LONG: Duration = Duration::from_secs(120);

/// Where a test syncs to.
enum Place {
    Folder(PathBuf),
    S3 { moto: Moto, bucket: String },
}

impl Place {
    fn url(&self) -> String {
        match self {
            Place::Folder(dir) => format!("file://{}", dir.display()),
            Place::S3 { bucket, .. } => format!("s3://{bucket}/fleet/edge-7"),
        }
    }

    fn options(&self) -> S3Options {
        match self {
            Place::Folder(_) => S3Options::default(),
            Place::S3 { moto, .. } => moto.options(),
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        command.env_remove("EDGEFLOW_SYNC");
        if let Place::S3 { moto, .. } = self {
            moto.env(&mut command);
        }
        command
    }

    fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        target_objects(&self.url(), &self.options())
    }

    fn mirrors(&self, root: &Path) {
        assert_target_mirrors(root, &self.url(), &self.options());
    }
}

struct Case {
    dir: tempfile::TempDir,
    place: Place,
}

impl Case {
    fn folder() -> Case {
        let dir = tempdir();
        let place = Place::Folder(dir.path().join("bucket"));
        Case { dir, place }
    }

    fn s3(bucket: &str) -> Case {
        let moto = Moto::signed();
        moto.bucket(bucket);
        Case {
            dir: tempdir(),
            place: Place::S3 {
                moto,
                bucket: bucket.into(),
            },
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn query(&self, text: &str) -> PathBuf {
        let path = self.dir.path().join("many_windows.sql");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// `edgeflow run` of the canonical query over generated readings, syncing.
    fn run(&self, extra: &[&str]) -> Command {
        let mut command = self.place.command();
        command
            .arg("run")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/queries/device_traffic.sql"
            ))
            .args(["--readings", "20000", "--devices", "40", "--rate", "50"])
            .args(["--workers", "2", "--output"])
            .arg(self.out())
            .args(["--sync", &self.place.url()])
            .args(extra);
        command
    }

    fn run_many(&self, extra: &[&str]) -> Command {
        let query = self.query(MANY_WINDOWS);
        let mut command = self.place.command();
        command
            .arg("run")
            .arg(query)
            .args(["--readings", "40000", "--devices", "20", "--rate", "100"])
            .args(["--chunk-bytes", "4096"])
            .args(["--workers", "2", "--output"])
            .arg(self.out())
            .args(["--sync", &self.place.url()])
            .args(extra);
        command
    }

    fn sync(&self, extra: &[&str]) -> Command {
        let mut command = self.place.command();
        command
            .arg("sync")
            .arg(self.out())
            .args(["--to", &self.place.url()])
            .args(extra);
        command
    }

    /// Makes `command` sign with our key id but a wrong secret: the server refuses it.
    fn refused<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        let Place::S3 { moto, .. } = &self.place else {
            panic!("refused credentials need the S3 place")
        };
        let wrong = Creds {
            key: moto.creds.key.clone(),
            secret: "not-the-secret-0123456789".into(),
        };
        moto.env_with(command, &wrong)
    }

    fn status(&self) -> serde_json::Value {
        let out = output(
            self.place
                .command()
                .arg("status")
                .arg(self.out())
                .arg("--json"),
        );
        assert_success(&out, "edgeflow status");
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("status JSON: {e}"))
    }

    /// After a run the target refused: every local output is still pending, and
    /// `edgeflow sync` with the right key then ships them all.
    fn pending_until_resynced(&self) {
        let local = local_outputs(&self.out());
        let status = self.status();
        assert_eq!(
            status["pending_files"].as_u64(),
            Some(local.len() as u64),
            "{status}"
        );
        assert_success(
            &output(&mut self.sync(&[])),
            "edgeflow sync with the right key",
        );
        self.place.mirrors(&self.out());
    }
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"))
}

fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The current state of every file in an output root's journal.
fn journal(root: &Path) -> BTreeMap<String, String> {
    let Ok(file) = std::fs::File::open(root.join("_sync/journal.jsonl")) else {
        return BTreeMap::new();
    };
    let mut states = BTreeMap::new();
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) {
            let path = record["path"].as_str().unwrap_or_default().to_owned();
            let state = record["state"].as_str().unwrap_or_default().to_owned();
            states.insert(path, state);
        }
    }
    states
}

fn count_state(root: &Path, state: &str) -> usize {
    journal(root).values().filter(|s| *s == state).count()
}

fn parquet_count(files: &BTreeMap<String, Vec<u8>>) -> usize {
    files.keys().filter(|k| k.ends_with(".parquet")).count()
}

// ---- conformance: the same behaviour for a local folder and for S3 ----

fn ships_results_then_logs_exactly_once(case: &Case) {
    let out = output(&mut case.run(&[]));
    assert_success(&out, "edgeflow run --sync");
    let summary = text(&out.stdout);
    assert!(summary.contains("-- sync"), "{summary}");
    case.place.mirrors(&case.out());
    let objects = case.place.objects();
    assert!(parquet_count(&objects) >= 4, "{:?}", objects.keys());
    let logs: Vec<&String> = objects.keys().filter(|k| k.starts_with("_logs/")).collect();
    assert_eq!(logs.len(), 1, "one log file per run: {logs:?}");
    let log = text(&objects[logs[0]]);
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()),
        "log lines are JSON: {log}"
    );
    assert!(log.contains("Run finished"), "{log}");
    let status = case.status();
    assert_eq!(status["pending_files"], 0, "{status}");
    assert_eq!(
        status["uploaded_files"].as_u64(),
        Some(objects.len() as u64)
    );
}

fn rerun_and_sync_all_change_nothing_and_repair(case: &Case) {
    assert_success(&output(&mut case.run(&[])), "first run");
    let before = case.place.objects();
    // The same readings give the same files: a rerun uploads nothing new and finds no
    // conflict; only its own log file is added.
    assert_success(&output(&mut case.run(&[])), "second run");
    let after = case.place.objects();
    assert_eq!(parquet_count(&after), parquet_count(&before));
    for (key, bytes) in &before {
        assert!(after.get(key) == Some(bytes), "{key} changed on rerun");
    }
    assert_success(&output(&mut case.sync(&[])), "edgeflow sync");
    case.place.mirrors(&case.out());
    // A target that lost objects is repaired by checking everything again.
    let lost = before
        .keys()
        .find(|k| k.ends_with(".parquet"))
        .cloned()
        .unwrap_or_default();
    delete_object(&case.place, &lost);
    assert!(!case.place.objects().contains_key(&lost));
    assert_success(&output(&mut case.sync(&["--all"])), "edgeflow sync --all");
    case.place.mirrors(&case.out());
}

fn delete_object(place: &Place, relative: &str) {
    match place {
        Place::Folder(dir) => {
            std::fs::remove_file(dir.join(relative)).unwrap_or_else(|e| panic!("{e}"))
        }
        Place::S3 { .. } => {
            let target = edgeflow::sync::target::Target::open(&place.url(), &place.options())
                .unwrap_or_else(|e| panic!("{e}"));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("{e}"));
            runtime
                .block_on(target.store.delete(&target.key(relative)))
                .unwrap_or_else(|e| panic!("deleting {relative}: {e}"));
        }
    }
}

fn conflict_is_reported_and_never_overwritten(case: &Case) {
    // Learn the file names from a run without sync, then plant other content under one.
    let plain = output(
        case.run(&[])
            .arg("--no-sync")
            .args(["--sync-timeout", "1s"]),
    );
    assert!(
        !plain.status.success(),
        "--no-sync and --sync together must be refused"
    );
    let mut dry = case.place.command();
    dry.arg("run")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/queries/device_traffic.sql"
        ))
        .args(["--readings", "20000", "--devices", "40", "--rate", "50"])
        .args(["--workers", "2", "--no-sync", "--output"])
        .arg(case.out());
    assert_success(&output(&mut dry), "run without sync");
    let victim = local_outputs(&case.out())
        .keys()
        .find(|k| k.ends_with(".parquet"))
        .cloned()
        .unwrap_or_default();
    put_object(
        &case.place.url(),
        &case.place.options(),
        &victim,
        b"someone else's bytes",
    );

    let out = output(&mut case.run(&[]));
    assert_eq!(
        out.status.code(),
        Some(1),
        "a conflict fails the run: {}",
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    assert!(err.contains("conflict") && err.contains(&victim), "{err}");
    let objects = case.place.objects();
    assert_eq!(
        objects[&victim], b"someone else's bytes",
        "the conflicting object was overwritten"
    );
    let local = local_outputs(&case.out());
    for (key, bytes) in &local {
        if *key != victim {
            assert!(objects.get(key) == Some(bytes), "{key} not uploaded");
        }
    }
    assert_eq!(objects.len(), local.len());
    let status = case.status();
    assert_eq!(status["conflicts"], serde_json::json!([victim]), "{status}");
}

fn multipart_uploads_land_whole(case: &Case) {
    let out = output(&mut case.run(&["--multipart-threshold", "1"]));
    assert_success(&out, "run with multipart uploads");
    case.place.mirrors(&case.out());
    if let Place::S3 { moto, bucket } = &case.place {
        assert_eq!(
            moto.open_uploads(bucket).trim(),
            "[]",
            "multipart uploads left open"
        );
    }
}

fn retention_deletes_uploaded_local_copies(case: &Case) {
    let out = output(&mut case.run(&["--retention", "0s"]));
    assert_success(&out, "run with retention 0s");
    assert_eq!(
        parquet_count(&local_outputs(&case.out())),
        0,
        "local copies kept"
    );
    let status = case.status();
    let objects = case.place.objects();
    assert_eq!(
        status["uploaded_files"].as_u64(),
        Some(objects.len() as u64),
        "{status}"
    );
    assert!(parquet_count(&objects) >= 4);
}

macro_rules! conformance {
    ($($name:ident),*) => {
        mod folder {
            $(#[test] fn $name() { super::$name(&super::Case::folder()); })*
        }
        mod s3 {
            $(#[test] fn $name() { super::$name(&super::Case::s3(&stringify!($name).replace('_', "-"))); })*
        }
    };
}

conformance!(
    ships_results_then_logs_exactly_once,
    rerun_and_sync_all_change_nothing_and_repair,
    conflict_is_reported_and_never_overwritten,
    multipart_uploads_land_whole,
    retention_deletes_uploaded_local_copies
);

// ---- faults, against the server ----

/// A case whose server can be killed and started again behind a fixed endpoint. A
/// restart empties moto, IAM included, so these servers do not check signatures.
struct Restartable {
    dir: tempfile::TempDir,
    forwarder: Forwarder,
    bucket: &'static str,
}

impl Restartable {
    fn new(bucket: &'static str) -> Restartable {
        Restartable {
            dir: tempdir(),
            forwarder: Forwarder::start(),
            bucket,
        }
    }

    /// Starts a fresh server, gives it the bucket, then puts it behind the endpoint.
    fn start(&self) -> Moto {
        let moto = Moto::open(free_port());
        moto.bucket(self.bucket);
        self.forwarder.point_at(moto.port);
        moto
    }

    /// Kills the server: uploads in flight are cut off, new connections fail.
    fn kill(&self, moto: &mut Moto) {
        self.forwarder.point_at(0);
        moto.kill();
    }

    fn url(&self) -> String {
        format!("s3://{}/edge", self.bucket)
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    fn creds() -> Creds {
        Creds {
            key: "edgeflow-test".into(),
            secret: "edgeflow-test-secret".into(),
        }
    }

    fn options(&self) -> S3Options {
        S3Options {
            endpoint: Some(self.forwarder.endpoint()),
            region: "us-east-1".into(),
            allow_http: true,
            access_key_id: Some(Self::creds().key),
            secret_access_key: Some(Self::creds().secret),
            session_token: None,
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        command.env_remove("EDGEFLOW_SYNC");
        env_for(&mut command, &self.forwarder.endpoint(), &Self::creds());
        command
    }

    fn run_many(&self, extra: &[&str]) -> Command {
        let query = self.dir.path().join("many_windows.sql");
        std::fs::write(&query, MANY_WINDOWS).unwrap_or_else(|e| panic!("{e}"));
        let mut command = self.command();
        command
            .arg("run")
            .arg(query)
            .args(["--readings", "40000", "--devices", "20", "--rate", "100"])
            .args(["--chunk-bytes", "4096"])
            .args(["--workers", "2", "--output"])
            .arg(self.out())
            .args(["--sync", &self.url(), "--sync-timeout", "2m"])
            .args(extra);
        command
    }

    fn spawn(&self, command: &mut Command) -> Child {
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start edgeflow: {e}"))
    }

    fn mirrors(&self) {
        assert_target_mirrors(&self.out(), &self.url(), &self.options());
    }
}

fn finish(child: Child, what: &str) -> Output {
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for edgeflow: {e}"));
    assert_success(&out, what);
    out
}

#[test]
fn server_down_at_start_and_up_later_loses_nothing() {
    let case = Restartable::new("down-at-start");
    let child = case.spawn(&mut case.run_many(&[]));
    let out = case.out();
    wait_until("the first failed upload", LONG, || {
        count_state(&out, "failed") > 0
    });
    let _moto = case.start();
    let done = finish(child, "run while the server comes up");
    let summary = text(&done.stdout);
    assert!(summary.contains("readings     40000"), "{summary}");
    case.mirrors();
}

#[test]
fn server_killed_mid_upload_and_restarted_loses_nothing() {
    let case = Restartable::new("killed-mid-upload");
    let mut moto = case.start();
    let child = case.spawn(&mut case.run_many(&[]));
    let out = case.out();
    wait_until("some uploads", LONG, || count_state(&out, "uploaded") >= 3);
    case.kill(&mut moto);
    wait_until("a failed upload", LONG, || count_state(&out, "failed") > 0);
    let moto = case.start();
    finish(child, "run across a server restart");
    // moto kept everything in memory, so the restart lost what was uploaded before it:
    // `sync --all` checks every file and puts back what the target lacks.
    let mut sync = case.command();
    sync.arg("sync")
        .arg(&out)
        .args(["--to", &case.url(), "--all"]);
    assert_success(&output(&mut sync), "edgeflow sync --all");
    case.mirrors();
    assert_eq!(moto.open_uploads(case.bucket).trim(), "[]");
}

#[test]
fn engine_killed_mid_sync_resumes_with_edgeflow_sync() {
    let case = Restartable::new("engine-killed");
    let _moto = case.start();
    let mut child = case.spawn(&mut case.run_many(&[]));
    let out = case.out();
    wait_until("some uploads", LONG, || count_state(&out, "uploaded") >= 3);
    child.kill().unwrap_or_else(|e| panic!("SIGKILL: {e}"));
    child.wait().ok();
    let mut sync = case.command();
    sync.arg("sync").arg(&out).args(["--to", &case.url()]);
    assert_success(&output(&mut sync), "edgeflow sync after SIGKILL");
    case.mirrors();
    // Running the same query again rewrites the same files: no conflict, no duplicate.
    finish(case.spawn(&mut case.run_many(&[])), "rerun after SIGKILL");
    case.mirrors();
}

#[test]
fn wrong_credentials_fail_clearly_and_keep_files_pending() {
    let case = Case::s3("wrong-credentials");
    let mut run = case.run(&[]);
    case.refused(&mut run);
    let out = output(&mut run);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("sync to") && err.contains("stopped") && err.contains("edgeflow sync"),
        "{err}"
    );
    assert!(!err.contains("not-the-secret"), "the secret leaked: {err}");
    assert!(!text(&out.stdout).contains("not-the-secret"));
    assert!(case.place.objects().is_empty());
    case.pending_until_resynced();
}

#[test]
fn quota_backpressure_pauses_sources_and_loses_nothing() {
    let case = Restartable::new("quota-backpressure");
    let mut child = case.spawn(&mut case.run_many(&["--max-pending-bytes", "20KB"]));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = BufReader::new(stderr).lines();
    let paused = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("Sources paused"));
    assert!(paused, "the sources never paused");
    let pending_while_paused =
        count_state(&case.out(), "failed") + count_state(&case.out(), "committed");
    let _moto = case.start();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let done = finish(child, "run under backpressure");
    let summary = text(&done.stdout);
    assert!(
        summary.contains("readings     40000"),
        "{summary}\n{rest:?}"
    );
    assert!(pending_while_paused > 0);
    case.mirrors();
    let status = edgeflow::sync::status(&case.out()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status.dropped_files, 0);
}

#[test]
fn quota_drop_oldest_drops_loudly_and_ships_the_rest() {
    let case = Case::s3("quota-drop-oldest");
    // With a refused key nothing leaves, so the quota fills and old files are dropped.
    let mut run = case.run_many(&["--max-pending-bytes", "30KB", "--on-quota", "drop-oldest"]);
    case.refused(&mut run);
    let out = output(&mut run);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let drops = err.matches("dropped the oldest pending file").count();
    assert!(drops > 0, "{err}");
    let status = case.status();
    assert_eq!(
        status["dropped_files"].as_u64(),
        Some(drops as u64),
        "{status}"
    );
    // The quota bounds result files; the run's own log file is journaled at the end.
    let logs: u64 = local_outputs(&case.out())
        .iter()
        .filter(|(k, _)| k.starts_with("_logs/"))
        .map(|(_, v)| v.len() as u64)
        .sum();
    let pending = status["pending_bytes"].as_u64().unwrap_or(u64::MAX);
    assert!(pending - logs <= 30_000, "{status}");
    assert_success(&output(&mut case.sync(&[])), "edgeflow sync after drops");
    case.place.mirrors(&case.out());
    assert_eq!(
        journal(&case.out())
            .values()
            .filter(|s| *s == "dropped")
            .count(),
        drops
    );
}

#[test]
fn quota_backpressure_does_not_hang_when_the_target_refuses() {
    let case = Case::s3("quota-backpressure-refused");
    let mut run = case.run_many(&["--max-pending-bytes", "20KB"]);
    case.refused(&mut run);
    let out = output(&mut run);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("readings     40000"),
        "{}",
        text(&out.stdout)
    );
    case.pending_until_resynced();
}
