//! Sync: the same conformance suite against a local folder and a real S3-compatible
//! server (moto, signatures checked), then fault tests against the server. Every test
//! ends with the target holding exactly the local files, byte for byte, once.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use edgeflow::digest::md5_hex;
use edgeflow::sink::{CommittedFile, Superseded};
use edgeflow::sync::journal::{FileKind, FileState, Journal, Record};
use edgeflow::sync::target::{S3Options, Target};
use edgeflow::sync::upload::UploadConfig;
use edgeflow::sync::{QuotaPolicy, SyncConfig, Syncer};
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

fn journal_states(root: &Path) -> BTreeMap<String, String> {
    journal(root)
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

fn lost_upload_answers_are_retried_onto_the_same_objects(case: &Case) {
    // The first three objects land but their answers are lost (`src/fault.rs`). A late
    // file may be compacted into its hour while its upload is in flight: that lost
    // answer changes nothing and is logged at debug level, so the log says debug.
    let out = output(
        case.run(&[])
            .env("FAILPOINTS", "upload-answer-lost=3*return")
            .env("EDGEFLOW_LOG", "info,edgeflow::sync=debug"),
    );
    assert_success(&out, "edgeflow run --sync with lost answers");
    case.place.mirrors(&case.out());
    let status = case.status();
    assert_eq!(status["pending_files"], 0, "{status}");
    assert_eq!(
        status["conflicts"].as_array().map(Vec::len),
        Some(0),
        "{status}"
    );
    assert_eq!(
        status["uploaded_files"].as_u64(),
        Some(case.place.objects().len() as u64),
        "{status}"
    );
    let log = std::fs::read_dir(case.out().join("_logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert_eq!(
        log.matches("fault injected at upload-answer-lost").count(),
        3,
        "each lost answer is logged once: {log}"
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

// ---- superseded revisions: the target follows the engine's local move ----

const FROM: &str = "q/date=2026-01-01/hour=00/window-20260101T000000Z-r0.parquet";
const TO: &str = "q_revisions/date=2026-01-01/hour=00/window-20260101T000000Z-r0.parquet";

/// Writes a file under the output root as the sink would and describes it.
fn commit_file(root: &Path, relative: &str, bytes: &[u8]) -> CommittedFile {
    let path = root.join(relative);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    CommittedFile {
        relative: relative.into(),
        bytes: bytes.len() as u64,
        rows: 1,
        md5: md5_hex(bytes),
    }
}

/// Moves a file the way the engine moves a superseded revision.
fn move_local(root: &Path, from: &str, to: &str) {
    let target = root.join(to);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::rename(root.join(from), target).unwrap_or_else(|e| panic!("{e}"));
}

/// A syncer of the case's output folder, in this process, as `run` starts it.
fn start_syncer(case: &Case, retention: Duration) -> Syncer {
    std::fs::create_dir_all(case.out()).unwrap_or_else(|e| panic!("{e}"));
    let target =
        Target::open(&case.place.url(), &case.place.options()).unwrap_or_else(|e| panic!("{e}"));
    let config = SyncConfig {
        target,
        upload: UploadConfig::default(),
        max_pending_bytes: None,
        on_quota: QuotaPolicy::Backpressure,
        retention,
        own_logs: None,
        subfolder_per_output: false,
    };
    Syncer::start(&case.out(), config, false).unwrap_or_else(|e| panic!("{e}"))
}

fn finish_syncer(syncer: Syncer) {
    let (report, result) = syncer.finish(LONG, || {});
    if let Err(e) = result {
        panic!("sync did not finish: {e}\n{report}");
    }
}

fn superseded(from: &str, to: &str) -> Superseded {
    Superseded {
        from: from.into(),
        to: to.into(),
    }
}

fn supersede_before_upload_puts_only_the_new_key(case: &Case) {
    let root = case.out();
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    // Committed and journaled, not uploaded: the journal as a run leaves it when the
    // target was never reached.
    let file = commit_file(&root, FROM, b"revision 0 of a window");
    let mut journal = Journal::open(&root).unwrap_or_else(|e| panic!("{e}"));
    journal
        .put(Record {
            path: file.relative.clone(),
            size: file.bytes,
            md5: file.md5.clone(),
            kind: FileKind::Data,
            committed_ms: 1,
            from: None,
            attempts: 0,
            state: FileState::Committed,
        })
        .unwrap_or_else(|e| panic!("{e}"));
    drop(journal);
    move_local(&root, FROM, TO);
    let syncer = start_syncer(case, Duration::from_secs(3600));
    syncer.handle().superseded(&superseded(FROM, TO));
    finish_syncer(syncer);
    let objects = case.place.objects();
    assert_eq!(
        objects.keys().collect::<Vec<_>>(),
        [TO],
        "only the new key, with the file's bytes"
    );
    assert_eq!(objects[TO], b"revision 0 of a window");
    case.place.mirrors(&root);
    let states = journal_states(&root);
    assert_eq!(states[FROM], "moved");
    assert_eq!(states[TO], "uploaded");
    let status = case.status();
    assert_eq!(status["moved_files"], 1, "{status}");
    assert_eq!(status["superseded_files"], 0, "{status}");
    assert_eq!(status["pending_files"], 0, "{status}");
}

fn supersede_after_upload_moves_the_key(case: &Case) {
    let root = case.out();
    // Retention 0s: an uploaded file leaves local disk at the next housekeeping round.
    let syncer = start_syncer(case, Duration::ZERO);
    let kept = "q/date=2026-01-01/hour=01/window-20260101T010000Z-r0.parquet";
    let kept_to = "q_revisions/date=2026-01-01/hour=01/window-20260101T010000Z-r0.parquet";
    syncer
        .handle()
        .committed(&commit_file(&root, FROM, b"revision 0, deleted locally"));
    syncer
        .handle()
        .committed(&commit_file(&root, kept, b"revision 0, still local"));
    wait_until(
        "the old revision uploaded and deleted locally",
        LONG,
        || journal_states(&root).get(FROM).map(String::as_str) == Some("deleted"),
    );
    assert!(!root.join(FROM).exists());
    assert!(case.place.objects().contains_key(FROM));
    // The engine could not move a file retention deleted; it reports the move all the
    // same, and the target copies the object.
    syncer.handle().superseded(&superseded(FROM, TO));
    wait_until("the second file uploaded", LONG, || {
        matches!(
            journal_states(&root).get(kept).map(String::as_str),
            Some("uploaded" | "deleted")
        )
    });
    std::fs::create_dir_all(root.join(kept_to).parent().unwrap_or(&root))
        .unwrap_or_else(|e| panic!("{e}"));
    // Retention may get there first; then this file goes the copy way too.
    std::fs::rename(root.join(kept), root.join(kept_to)).ok();
    syncer.handle().superseded(&superseded(kept, kept_to));
    finish_syncer(syncer);
    let objects = case.place.objects();
    assert_eq!(
        objects.keys().map(String::as_str).collect::<Vec<_>>(),
        [TO, kept_to],
        "the old keys are gone, the new ones hold the bytes"
    );
    assert_eq!(objects[TO], b"revision 0, deleted locally");
    assert_eq!(objects[kept_to], b"revision 0, still local");
    let states = journal_states(&root);
    assert_eq!(states[FROM], "moved");
    assert_eq!(states[kept], "moved");
    assert!(
        matches!(states[TO].as_str(), "uploaded" | "deleted"),
        "{states:?}"
    );
    // Retention treats `_revisions` like any other folder: uploaded, so deleted locally.
    assert!(
        !root.join(kept_to).exists(),
        "an uploaded revision kept past retention"
    );
    assert_eq!(case.status()["moved_files"], 2);
}

/// The new key of a superseded revision already holds other bytes: a conflict, reported
/// and not overwritten, and the old key stays (deleting it would lose the revision).
fn supersede_onto_other_bytes_keeps_the_old_key(case: &Case) {
    let root = case.out();
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    let ours = b"our revision 0";
    let file = commit_file(&root, FROM, ours);
    put_object(&case.place.url(), &case.place.options(), FROM, ours);
    put_object(
        &case.place.url(),
        &case.place.options(),
        TO,
        b"someone else's bytes",
    );
    let mut journal = Journal::open(&root).unwrap_or_else(|e| panic!("{e}"));
    journal
        .put(Record {
            path: file.relative.clone(),
            size: file.bytes,
            md5: file.md5.clone(),
            kind: FileKind::Data,
            committed_ms: 1,
            from: None,
            attempts: 1,
            state: FileState::Uploaded {
                etag: None,
                at_ms: 1,
            },
        })
        .unwrap_or_else(|e| panic!("{e}"));
    drop(journal);
    move_local(&root, FROM, TO);
    let syncer = start_syncer(case, Duration::from_secs(3600));
    syncer.handle().superseded(&superseded(FROM, TO));
    let (report, result) = syncer.finish(LONG, || {});
    assert!(
        matches!(result, Err(edgeflow::sync::SyncError::Conflicts { ref files, .. }) if files == &[TO]),
        "{result:?}"
    );
    assert_eq!(report.superseded_files, 1);
    let objects = case.place.objects();
    assert_eq!(objects[TO], b"someone else's bytes", "overwritten");
    assert_eq!(
        objects[FROM], ours,
        "the old key went before the new one held the bytes"
    );
    let states = journal_states(&root);
    assert_eq!(states[FROM], "superseded");
    assert_eq!(states[TO], "conflict");
}

/// A crash after the new key was copied and before the old one was deleted (and before
/// the copy was journaled): the journal says "superseded" and "uploading", the target
/// holds both keys. `edgeflow sync` finishes the move.
fn crash_between_copy_and_delete_is_finished_by_sync(case: &Case) {
    let root = case.out();
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    let bytes = b"a revision caught mid-move";
    put_object(&case.place.url(), &case.place.options(), FROM, bytes);
    put_object(&case.place.url(), &case.place.options(), TO, bytes);
    let record = |path: &str, from: Option<&str>, state: FileState| Record {
        path: path.into(),
        size: bytes.len() as u64,
        md5: md5_hex(bytes),
        kind: FileKind::Data,
        committed_ms: 1,
        from: from.map(str::to_owned),
        attempts: 1,
        state,
    };
    let mut journal = Journal::open(&root).unwrap_or_else(|e| panic!("{e}"));
    journal
        .supersede(
            record(FROM, None, FileState::Superseded { to: TO.into() }),
            Some(record(TO, Some(FROM), FileState::Uploading)),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    drop(journal);
    assert_success(
        &output(&mut case.sync(&[])),
        "edgeflow sync after the crash",
    );
    let objects = case.place.objects();
    assert_eq!(objects.keys().collect::<Vec<_>>(), [TO]);
    assert_eq!(objects[TO], bytes);
    let states = journal_states(&root);
    assert_eq!(states[FROM], "moved");
    assert_eq!(states[TO], "uploaded");
}

/// The start-up scan finds files committed but not journaled under `<query>_revisions/`
/// too (and recognises an unreported move of a journaled file), and leaves the engine's
/// `_state/` and files being written alone.
fn startup_scan_takes_revisions_and_skips_state_and_inprogress(case: &Case) {
    let root = case.out();
    std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("{e}"));
    let moved = commit_file(&root, FROM, b"uploaded, then moved before a crash");
    assert_success(&output(&mut case.sync(&[])), "first sync");
    assert!(case.place.objects().contains_key(FROM));
    move_local(&root, &moved.relative, TO);
    let orphan = "q_revisions/date=2026-01-01/hour=02/window-20260101T020000Z-r3.parquet";
    commit_file(&root, orphan, b"never journaled");
    commit_file(&root, "_state/q/stream.parquet", b"engine state");
    commit_file(
        &root,
        "q/date=2026-01-01/hour=03/w.parquet.inprogress",
        b"half",
    );
    assert_success(&output(&mut case.sync(&[])), "sync after the crash");
    let objects = case.place.objects();
    assert_eq!(
        objects.keys().map(String::as_str).collect::<Vec<_>>(),
        [TO, orphan]
    );
    assert_eq!(journal_states(&root)[FROM], "moved");
}

/// Dead letters of an attempt that died before its checkpoint are moved aside by the
/// next start (`_deadletter/<query>/superseded/`); the target follows, also when the
/// process died between the move and the journal hearing of it.
fn dead_letters_moved_aside_follow_in_the_target(case: &Case) {
    let root = case.out();
    let from = "_deadletter/q/deadletters-n4-0.jsonl";
    let to = "_deadletter/q/superseded/deadletters-n4-0.jsonl";
    let syncer = start_syncer(case, Duration::from_secs(3600));
    let bytes = b"{\"input\":\"in.jsonl\",\"line\":3,\"reason\":\"bad\",\"raw\":\"x\"}\n";
    syncer.handle().committed(&commit_file(&root, from, bytes));
    finish_syncer(syncer);
    assert!(case.place.objects().contains_key(from));
    move_local(&root, from, to);
    assert_success(&output(&mut case.sync(&[])), "sync after the crash");
    let objects = case.place.objects();
    assert_eq!(objects.keys().map(String::as_str).collect::<Vec<_>>(), [to]);
    assert_eq!(objects[to], bytes);
    assert_eq!(journal_states(&root)[from], "moved");
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
    lost_upload_answers_are_retried_onto_the_same_objects,
    rerun_and_sync_all_change_nothing_and_repair,
    conflict_is_reported_and_never_overwritten,
    multipart_uploads_land_whole,
    retention_deletes_uploaded_local_copies,
    supersede_before_upload_puts_only_the_new_key,
    supersede_after_upload_moves_the_key,
    crash_between_copy_and_delete_is_finished_by_sync,
    supersede_onto_other_bytes_keeps_the_old_key,
    startup_scan_takes_revisions_and_skips_state_and_inprogress,
    dead_letters_moved_aside_follow_in_the_target
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
            .args(["--sync", &self.url()])
            .args(extra);
        if !extra.contains(&"--sync-timeout") {
            command.args(["--sync-timeout", "2m"]);
        }
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
    // Compaction would delete local files this test compares with the bucket; it is
    // tested with sync in `compaction.rs`.
    let child = case.spawn(&mut case.run_many(&["--no-compaction"]));
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

/// A target behind a route that takes connections and never answers: the requests
/// made then are given up in seconds (the HTTP client alone would wait two minutes), so
/// once the route is back every file is in the target well within the run's one-minute
/// `--sync-timeout`.
#[test]
fn a_target_that_never_answers_for_a_while_gets_every_file_once_it_does() {
    let case = Restartable::new("hanging-route");
    let _moto = case.start();
    case.forwarder.hang();
    let child = case.spawn(&mut case.run_many(&["--no-compaction", "--sync-timeout", "60s"]));
    wait_until("a request the route swallows", LONG, || {
        case.forwarder.held() > 0
    });
    case.forwarder.answer_again();
    finish(child, "run across a route that hung");
    assert!(case.forwarder.held() > 0);
    case.mirrors();
}

#[test]
fn server_killed_mid_upload_and_restarted_loses_nothing() {
    let case = Restartable::new("killed-mid-upload");
    let mut moto = case.start();
    // As above: the files uploaded before the kill are compared with local disk.
    let child = case.spawn(&mut case.run_many(&["--no-compaction"]));
    let out = case.out();
    wait_until("some uploads", LONG, || count_state(&out, "uploaded") >= 3);
    case.kill(&mut moto);
    wait_until("a failed upload", LONG, || count_state(&out, "failed") > 0);
    // Uploaded before the kill, so lost with moto's memory; nothing lands while it is down.
    let lost: Vec<String> = journal(&out)
        .into_iter()
        .filter(|(_, state)| state == "uploaded")
        .map(|(path, _)| path)
        .collect();
    let moto = case.start();
    finish(child, "run across a server restart");
    // The engine's own result: every file it had not uploaded before the kill is in the
    // target, byte for byte, and nothing else is.
    let mut expected = local_outputs(&out);
    for path in &lost {
        assert!(expected.remove(path).is_some(), "{path} not on local disk");
    }
    let remote = target_objects(&case.url(), &case.options());
    assert_eq!(
        remote.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "the target after the run is not local minus what the restart lost"
    );
    for (key, bytes) in &expected {
        assert!(remote[key] == *bytes, "{key} differs");
    }
    assert_eq!(
        count_state(&out, "committed") + count_state(&out, "failed"),
        0
    );
    // Then the repair: `sync --all` checks every file and puts back what the target lacks.
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

/// Pending result bytes in a journal right now, and the largest pending result file.
fn pending_data(root: &Path) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(root.join("_sync/journal.jsonl")) else {
        return (0, 0);
    };
    let mut records = BTreeMap::new();
    for line in text.lines() {
        if let Ok(record) = serde_json::from_str::<serde_json::Value>(line) {
            records.insert(
                record["path"].as_str().unwrap_or_default().to_owned(),
                record,
            );
        }
    }
    let sizes = records.values().filter(|r| {
        r["kind"] == "Data"
            && matches!(
                r["state"].as_str(),
                Some("committed" | "uploading" | "failed")
            )
    });
    sizes.fold((0, 0), |(sum, max), r| {
        let size = r["size"].as_u64().unwrap_or(0);
        (sum + size, max.max(size))
    })
}

#[test]
fn quota_backpressure_pauses_sources_and_loses_nothing() {
    const QUOTA: u64 = 20_000;
    let case = Restartable::new("quota-backpressure");
    let mut child = case.spawn(&mut case.run_many(&["--max-pending-bytes", "20KB"]));
    // Samples the journal while the run goes: the bound the quota promises.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (done, root) = (done.clone(), case.out());
        std::thread::spawn(move || {
            let mut worst = (0, 0);
            wait_until("the run to end", Duration::from_secs(600), || {
                let (pending, largest) = pending_data(&root);
                if pending > worst.0 {
                    worst = (pending, largest);
                }
                done.load(std::sync::atomic::Ordering::SeqCst)
            });
            worst
        })
    };
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
    let finished = finish(child, "run under backpressure");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let (peak, largest) = sampler
        .join()
        .unwrap_or_else(|_| panic!("sampler panicked"));
    let summary = text(&finished.stdout);
    assert!(
        summary.contains("readings     40000"),
        "{summary}\n{rest:?}"
    );
    assert!(pending_while_paused > 0);
    assert!(peak > QUOTA, "the quota never filled: peak {peak}");
    // The bound backpressure gives. A reader checks the quota before it takes each chunk,
    // so once pending bytes pass the quota no new reading enters; what is still written
    // afterwards is the output of chunks taken before, which are read ahead (up to
    // MAX_BACKLOG = 4 per worker waiting for their stamp) and then queued in the dataflow
    // for as long as the workers lag behind. That lag depends on scheduling, so the
    // overshoot is not "one file": measured 8 to 15 files (13 to 22 KB) past the 20 KB
    // quota, on 2 shared cores. A tighter bound needs the engine to count windows
    // admitted but not yet written. What is asserted: the overshoot stays within twice the
    // quota, while the whole run writes more than twenty times the quota, so the sources
    // did stop.
    let total: u64 = local_outputs(&case.out())
        .iter()
        .filter(|(k, _)| k.ends_with(".parquet"))
        .map(|(_, v)| v.len() as u64)
        .sum();
    assert!(total > 20 * QUOTA, "too little output to tell: {total}");
    assert!(
        peak <= 3 * QUOTA,
        "pending result bytes reached {peak} (files up to {largest} bytes), more than twice past the quota {QUOTA}"
    );
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

// ---- one writer per output folder, one target folder per output folder ----

#[test]
fn a_second_sync_of_a_locked_folder_fails_naming_the_holder() {
    let case = Case::folder();
    let root = case.out();
    commit_file(&root, FROM, b"some result");
    let lock = edgeflow::lock::OutputLock::acquire(&root).unwrap_or_else(|e| panic!("{e}"));
    let out = output(&mut case.sync(&[]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", std::process::id()))
            && err.contains(&root.display().to_string()),
        "{err}"
    );
    assert!(
        case.place.objects().is_empty(),
        "the locked-out sync uploaded"
    );
    // Reading the journal needs no lock.
    assert_eq!(case.status()["pending_files"], 0);
    drop(lock);
    assert_success(&output(&mut case.sync(&[])), "sync once the lock is free");
    case.place.mirrors(&root);
}

#[test]
fn two_output_folders_with_the_default_target_do_not_conflict() {
    let dir = tempdir();
    let run = |output_dir: &str, seed: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        command
            .env_remove("EDGEFLOW_SYNC")
            .current_dir(dir.path())
            .arg("run")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/queries/device_traffic.sql"
            ))
            .args(["--readings", "5000", "--devices", "10", "--rate", "50"])
            .args(["--workers", "2", "--seed", seed, "--output", output_dir]);
        output(&mut command)
    };
    // Different readings under the same query: the same file names, other bytes.
    assert_success(&run("out-a", "1"), "run into out-a");
    assert_success(&run("out-b", "2"), "run into out-b");
    let shared = dir.path().join("edgeflow-sync");
    let folders = |shared: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(shared)
            .unwrap_or_else(|e| panic!("{e}"))
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let names = folders(&shared);
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names[0].starts_with("out-a-") && names[1].starts_with("out-b-"),
        "{names:?}"
    );
    assert!(
        names.iter().all(|n| n
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))),
        "{names:?}"
    );
    for (folder, name) in [("out-a", &names[0]), ("out-b", &names[1])] {
        let url = format!("file://{}", shared.join(name).display());
        assert_target_mirrors(&dir.path().join(folder), &url, &S3Options::default());
        let mut status = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        status
            .current_dir(dir.path())
            .args(["status", folder, "--json"]);
        let out = output(&mut status);
        assert_success(&out, "edgeflow status");
        let json: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(json["target"].as_str(), Some(url.as_str()), "{json}");
        let mut text_status = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
        text_status.current_dir(dir.path()).args(["status", folder]);
        assert!(text(&output(&mut text_status).stdout).contains(&url));
    }
    // A rerun of a folder syncs to the same place.
    assert_success(&run("out-a", "1"), "rerun into out-a");
    assert_eq!(folders(&shared), names);
}
