//! `edgeflow query` over outputs that are not pristine, with hand-made Parquet files:
//! rewritten windows count once at their latest revision (local, bucket, or both);
//! statements other than queries are refused unless allowed; execution memory is
//! capped; odd table and column names work; and a corrupt file or odd folder is named
//! in a warning and skipped instead of failing every query.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use edgeflow::outputs::{Outputs, OutputsError, QueryResult};
use edgeflow::sync::target::Target;
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;

use super::s3_server::Moto;

/// 2026-01-01T00:00:00Z in microseconds.
const NEW_YEAR_US: i64 = 1_767_225_600_000_000;
const HOUR: &str = "date=2026-01-01/hour=00";

fn edgeflow() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_edgeflow"));
    command.env_remove("EDGEFLOW_SYNC");
    command
}

fn output(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run edgeflow: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A window file's bytes: one row per device with `readings` and a `Bytes-In` column
/// (a capital and a dash, as a user's SELECT alias may have).
fn window_file(devices: usize, readings: i64) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new(
            "window_start",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("readings", DataType::Int64, false),
        Field::new("Bytes-In", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(
                (0..devices).map(|d| format!("dev-{d:06}")),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(vec![NEW_YEAR_US; devices]).with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from(vec![readings; devices])),
            Arc::new(Int64Array::from_iter_values(
                (0..devices as i64).map(|d| d * 10),
            )),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None)
        .unwrap_or_else(|e| panic!("{e}"));
    writer.write(&batch).unwrap_or_else(|e| panic!("{e}"));
    writer.close().unwrap_or_else(|e| panic!("{e}"));
    bytes
}

/// Writes `bytes` at `relative` under `root`, making its folders.
fn put_local(root: &Path, relative: &str, bytes: &[u8]) {
    let path = root.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("{e}"));
    }
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn open(rt: &tokio::runtime::Runtime, root: Option<&Path>, remote: Option<&Target>) -> Outputs {
    rt.block_on(Outputs::open(root, remote))
        .unwrap_or_else(|e| panic!("opening the outputs: {e}"))
}

fn sql(rt: &tokio::runtime::Runtime, outputs: &Outputs, sql: &str) -> QueryResult {
    rt.block_on(outputs.sql(sql))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The single integer a one-row, one-column result holds.
fn single(result: &QueryResult) -> i64 {
    let batch = result
        .batches
        .iter()
        .find(|b| b.num_rows() > 0)
        .unwrap_or_else(|| panic!("no rows"));
    let column =
        arrow::compute::cast(batch.column(0), &DataType::Int64).unwrap_or_else(|e| panic!("{e}"));
    column
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0))
        .unwrap_or_else(|| panic!("not an integer"))
}

fn window(stamp: &str, revision: u32) -> String {
    format!("traffic/{HOUR}/window-{stamp}-r{revision}.parquet")
}

#[test]
fn a_rewritten_window_counts_once_at_its_latest_revision() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    // Window 00:00 written three times (the last one with 3 readings per device), window
    // 00:01 once, and a late file and an old-style worker file that must pass through.
    put_local(root, &window("20260101T000000Z", 0), &window_file(4, 1));
    put_local(root, &window("20260101T000000Z", 1), &window_file(4, 2));
    put_local(root, &window("20260101T000000Z", 2), &window_file(4, 3));
    put_local(root, &window("20260101T000100Z", 0), &window_file(4, 5));
    put_local(
        root,
        &format!("traffic/{HOUR}/window-20260101T000200Z-w0of2.parquet"),
        &window_file(4, 7),
    );
    put_local(
        root,
        &format!("traffic_late/{HOUR}/late-1767225600000000-w0of2.parquet"),
        &window_file(2, 1),
    );
    // The history table keeps every superseded revision.
    put_local(
        root,
        &format!("traffic_revisions/{HOUR}/window-20260101T000000Z-r0.parquet"),
        &window_file(4, 1),
    );
    put_local(
        root,
        &format!("traffic_revisions/{HOUR}/window-20260101T000000Z-r1.parquet"),
        &window_file(4, 2),
    );

    let rt = runtime();
    let outputs = open(&rt, Some(root), None);
    let traffic = outputs
        .tables()
        .iter()
        .find(|t| t.name == "traffic")
        .unwrap_or_else(|| panic!("no traffic table"));
    assert_eq!(traffic.files, 3, "one file per window");
    let result = sql(&rt, &outputs, "SELECT sum(readings) FROM traffic");
    assert_eq!(single(&result), 4 * (3 + 5 + 7));
    assert_eq!(result.files_scanned.len(), 3);
    assert!(
        result
            .files_scanned
            .iter()
            .all(|f| !f.ends_with("-r0.parquet") || f.contains("000100Z")),
        "{:?}",
        result.files_scanned
    );
    let rows = sql(&rt, &outputs, "SELECT count(*) FROM traffic_late");
    assert_eq!(single(&rows), 2);
    let history = sql(&rt, &outputs, "SELECT sum(readings) FROM traffic_revisions");
    assert_eq!(single(&history), 4 * (1 + 2));
    assert_eq!(outputs.take_warnings(), Vec::<String>::new());
}

#[test]
fn a_window_rewritten_while_the_bucket_lags_counts_once() {
    let moto = Moto::signed();
    moto.bucket("query-revisions");
    let url = "s3://query-revisions/site-1";
    let target = Target::open(url, &moto.options()).unwrap_or_else(|e| panic!("{e}"));
    let rt = runtime();
    let put_remote = |relative: &str, bytes: Vec<u8>| {
        let key = ObjectPath::from_iter(
            target
                .prefix
                .parts()
                .chain(ObjectPath::from(relative).parts()),
        );
        rt.block_on(target.store.put(&key, bytes.into()))
            .unwrap_or_else(|e| panic!("{key}: {e}"));
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    // r0 was synced and has since moved to the local history; r1 is local only.
    put_remote(&window("20260101T000000Z", 0), window_file(3, 1));
    put_local(root, &window("20260101T000000Z", 1), &window_file(3, 2));
    // Another window: both revisions in the bucket already, r1 also local.
    put_remote(&window("20260101T000100Z", 0), window_file(3, 10));
    put_remote(&window("20260101T000100Z", 1), window_file(3, 20));
    put_local(root, &window("20260101T000100Z", 1), &window_file(3, 20));

    let both = open(&rt, Some(root), Some(&target));
    let total = sql(&rt, &both, "SELECT sum(readings) FROM traffic");
    assert_eq!(single(&total), 3 * (2 + 20));
    assert_eq!(both.tables()[0].files, 2);

    // The bucket alone shows its latest revision of each window.
    let remote = open(&rt, None, Some(&target));
    let total = sql(&rt, &remote, "SELECT sum(readings) FROM traffic");
    assert_eq!(single(&total), 3 * (1 + 20));

    // So does the command line.
    let mut cli = edgeflow();
    moto.env(&mut cli);
    let out = output(
        cli.args(["query", "--format", "csv", "--remote", url, "--root"])
            .arg(root)
            .arg("SELECT sum(readings) AS n FROM traffic"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), format!("n\n{}\n", 3 * (2 + 20)));
}

#[test]
fn statements_other_than_queries_are_refused_unless_writes_are_allowed() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path().join("out");
    put_local(&root, &window("20260101T000000Z", 0), &window_file(2, 1));
    let copied = dir.path().join("copy.csv");
    let copy = format!(
        "COPY (SELECT device_id FROM traffic) TO '{}' STORED AS CSV",
        copied.display()
    );

    let rt = runtime();
    let outputs = open(&rt, Some(&root), None);
    for statement in [
        "CREATE TABLE t AS SELECT 1",
        "DROP VIEW traffic",
        "SET datafusion.execution.batch_size = 1",
        "INSERT INTO traffic SELECT * FROM traffic",
        copy.as_str(),
    ] {
        match rt.block_on(outputs.sql(statement)) {
            Err(OutputsError::ReadOnly { .. }) => {}
            Err(e) => panic!("{statement}: refused for another reason: {e}"),
            Ok(_) => panic!("{statement}: ran"),
        }
    }
    assert!(!copied.exists(), "COPY wrote {}", copied.display());
    assert_eq!(
        single(&sql(&rt, &outputs, "SELECT count(*) FROM traffic")),
        2,
        "the view is still there"
    );

    // The command line says why, and exits 2: the statement is the user's to change.
    let out = output(
        edgeflow()
            .args(["query", "--root"])
            .arg(&root)
            .arg("CREATE TABLE t AS SELECT 1"),
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("read-only") && err.contains("DDL") && err.contains("--allow-writes"),
        "{err}"
    );

    // So does the shell, statement by statement, and it goes on.
    let mut shell = edgeflow()
        .args(["query", "--root"])
        .arg(&root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut stdin) = shell.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(
                b"SET datafusion.execution.batch_size = 1;\nSELECT count(*) AS n FROM traffic;\n",
            )
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let out = shell.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    let err = text(&out.stderr);
    assert!(
        err.contains("read-only") && err.contains("SetVariable"),
        "{err}"
    );
    assert!(text(&out.stdout).contains("| 2 "), "{}", text(&out.stdout));

    // With --allow-writes, COPY runs (and writes where it was told to).
    let out = output(
        edgeflow()
            .args(["query", "--allow-writes", "--root"])
            .arg(&root)
            .arg(&copy),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let csv = std::fs::read_to_string(&copied).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(csv.lines().count(), 3, "{csv}");
}

#[test]
fn a_query_over_the_memory_limit_fails_with_resources_exhausted() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    for (i, stamp) in ["20260101T000000Z", "20260101T000100Z", "20260101T000200Z"]
        .iter()
        .enumerate()
    {
        put_local(root, &window(stamp, 0), &window_file(50_000, i as i64));
    }
    let query = "SELECT device_id, readings, count(*) FROM traffic GROUP BY 1, 2 ORDER BY 1, 2";
    let capped = output(
        edgeflow()
            .args([
                "query",
                "--memory-limit",
                "64KiB",
                "--format",
                "csv",
                "--root",
            ])
            .arg(root)
            .arg(query),
    );
    let err = text(&capped.stderr);
    assert_eq!(capped.status.code(), Some(1), "{err}");
    assert!(err.contains("Resources exhausted"), "{err}");

    let enough = output(
        edgeflow()
            .args([
                "query",
                "--memory-limit",
                "512MiB",
                "--format",
                "csv",
                "--root",
            ])
            .arg(root)
            .arg(query),
    );
    assert!(enough.status.success(), "{}", text(&enough.stderr));
    assert_eq!(text(&enough.stdout).lines().count(), 1 + 150_000);

    let nonsense = output(edgeflow().args(["query", "--memory-limit", "lots", "SELECT 1"]));
    assert_eq!(nonsense.status.code(), Some(2), "a usage error");
    assert!(text(&nonsense.stderr).contains("lots"));
}

#[test]
fn tables_and_columns_with_capitals_dashes_and_spaces_work() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    for table in ["Traffic-EU", "x y", "traffic.v2"] {
        put_local(
            root,
            &format!("{table}/{HOUR}/window-20260101T000000Z-r0.parquet"),
            &window_file(3, 1),
        );
    }
    let rt = runtime();
    let outputs = open(&rt, Some(root), None);
    let names: Vec<&str> = outputs.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["Traffic-EU", "traffic.v2", "x y"]);
    for table in &names {
        let query = format!(
            "SELECT sum(\"Bytes-In\") FROM \"{table}\" WHERE hour = 0 AND date = DATE '2026-01-01'"
        );
        assert_eq!(single(&sql(&rt, &outputs, &query)), 10 + 20, "{table}");
        let described = rt
            .block_on(outputs.describe(table))
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        assert!(
            described.contains("Bytes-In") && described.contains("rows    3"),
            "{described}"
        );
    }
    let out = output(
        edgeflow()
            .args(["query", "--format", "csv", "--root"])
            .arg(root)
            .arg("SELECT max(\"Bytes-In\") AS m FROM \"Traffic-EU\""),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "m\n20\n");
}

#[test]
fn corrupt_files_and_odd_folders_are_named_and_skipped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    let good = window_file(5, 1);
    put_local(root, &window("20260101T000000Z", 0), &good);
    let truncated = window("20260101T000100Z", 0);
    put_local(root, &truncated, &good[..good.len() / 2]);
    let garbage = window("20260101T000200Z", 0);
    put_local(
        root,
        &garbage,
        b"this is not parquet, whatever its name says",
    );
    let odd_hour = "traffic/date=2026-01-01/hour=xx";
    put_local(root, &format!("{odd_hour}/window-x-r0.parquet"), &good);
    let odd_date = "traffic/date=garbage";
    put_local(
        root,
        &format!("{odd_date}/hour=00/window-x-r0.parquet"),
        &good,
    );
    let stray = "traffic/stray.parquet";
    put_local(root, stray, &good);
    put_local(root, "traffic/notes.txt", b"not Parquet, not a problem");
    put_local(root, "loose.parquet", &good);
    // A table whose every file is unreadable is no table; the others still are.
    let broken = format!("broken/{HOUR}/window-20260101T000000Z-r0.parquet");
    put_local(root, &broken, b"PAR1 garbage");

    let rt = runtime();
    let outputs = open(&rt, Some(root), None);
    let names: Vec<&str> = outputs.tables().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["traffic"]);
    assert_eq!(outputs.tables()[0].files, 1);
    let result = sql(&rt, &outputs, "SELECT sum(readings) FROM traffic");
    assert_eq!(single(&result), 5);
    let filtered = sql(
        &rt,
        &outputs,
        "SELECT count(*) FROM traffic WHERE date = DATE '2026-01-01' AND hour = 0",
    );
    assert_eq!(single(&filtered), 5, "pruned listings skip them too");
    let warnings = outputs.take_warnings().join("\n");
    for named in [
        truncated.as_str(),
        garbage.as_str(),
        odd_hour,
        odd_date,
        stray,
        "loose.parquet",
        broken.as_str(),
    ] {
        assert!(
            warnings.contains(&format!("skipping {named}:")),
            "{named} not named in\n{warnings}"
        );
    }
    assert!(!warnings.contains("notes.txt"), "{warnings}");
    let kept = window("20260101T000000Z", 0);
    assert!(
        !warnings.contains(&format!("skipping {kept}:")),
        "{warnings}"
    );

    // The command line answers, and says what it left out on stderr.
    let out = output(
        edgeflow()
            .args(["query", "--format", "csv", "--root"])
            .arg(root)
            .arg("SELECT sum(readings) AS n FROM traffic"),
    );
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_eq!(text(&out.stdout), "n\n5\n");
    for named in [truncated.as_str(), garbage.as_str(), odd_hour, odd_date] {
        assert!(
            err.lines()
                .any(|l| l.starts_with("warning: skipping ") && l.contains(named)),
            "{named} not in\n{err}"
        );
    }
}

/// A window file whose `readings` column is text: a query changed under `--fresh`.
fn text_readings_file() -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("device_id", DataType::Utf8, false),
        Field::new("readings", DataType::Utf8, false),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["dev-000000"])),
            Arc::new(StringArray::from(vec!["many"])),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut bytes = Vec::new();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None)
        .unwrap_or_else(|e| panic!("{e}"));
    writer.write(&batch).unwrap_or_else(|e| panic!("{e}"));
    writer.close().unwrap_or_else(|e| panic!("{e}"));
    bytes
}

#[test]
fn a_file_whose_column_types_differ_from_the_newest_is_named_and_skipped() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let root = dir.path();
    // An older file from before the query changed, then the current ones.
    put_local(root, &window("20260101T000000Z", 0), &text_readings_file());
    let old = std::fs::File::options()
        .write(true)
        .open(root.join(window("20260101T000000Z", 0)))
        .unwrap_or_else(|e| panic!("{e}"));
    old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000))
        .unwrap_or_else(|e| panic!("{e}"));
    put_local(root, &window("20260101T000100Z", 0), &window_file(3, 2));
    put_local(root, &window("20260101T000200Z", 0), &window_file(2, 5));

    let rt = runtime();
    let outputs = open(&rt, Some(root), None);
    let result = sql(&rt, &outputs, "SELECT sum(readings) FROM traffic");
    assert_eq!(single(&result), 3 * 2 + 2 * 5);
    let warnings = outputs.take_warnings().join("\n");
    assert!(
        warnings.contains("window-20260101T000000Z-r0.parquet")
            && warnings.contains("column `readings` is Utf8 here but Int64"),
        "{warnings}"
    );
}
