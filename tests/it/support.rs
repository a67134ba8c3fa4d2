//! Running queries in-process and reading their Parquet output back.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use arrow::array::{
    Array, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use edgeflow::engine::{self, RunConfig, RunSummary};
use edgeflow::query::{self, QueryPlan};
use edgeflow::source::Input;
use edgeflow::types::Value;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Plans query text, failing the test with the planner's message.
pub fn plan(text: &str) -> QueryPlan {
    match query::parse("q", Path::new("q.sql"), text) {
        Ok(plan) => plan,
        Err(e) => panic!("query does not plan: {e}"),
    }
}

/// Runs `plan` over `input` into `out`.
pub fn run(
    plan: &QueryPlan,
    input: Input,
    out: &Path,
    workers: usize,
    chunk_bytes: usize,
) -> RunSummary {
    let mut config = RunConfig::new(plan.clone(), input, out.to_owned());
    config.workers = workers;
    config.chunk_bytes = chunk_bytes;
    match run_within_deadline(config) {
        Ok(summary) => summary,
        Err(e) => panic!("run failed: {e}"),
    }
}

/// Far beyond any in-process run here (seconds); reached only by a hang.
const HANG: std::time::Duration = std::time::Duration::from_secs(300);

/// `engine::run` on a thread of its own, failing the test if it outlives [`HANG`], so a
/// hang fails one test instead of stalling the suite.
pub fn run_within_deadline(config: RunConfig) -> Result<RunSummary, edgeflow::Error> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(engine::run(config)).ok());
    match result.recv_timeout(HANG) {
        Ok(result) => result,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the run did not end within {HANG:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("the run panicked (its message is above)")
        }
    }
}

/// Every `.parquet` file under `dir`, sorted.
pub fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

/// All record batches of all Parquet files under `dir`.
pub fn read_batches(dir: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for path in parquet_files(dir) {
        let file = File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.build())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for batch in reader {
            out.push(batch.unwrap_or_else(|e| panic!("{}: {e}", path.display())));
        }
    }
    out
}

/// Row `i` of a batch as values.
pub fn row(batch: &RecordBatch, i: usize) -> Vec<Value> {
    batch
        .columns()
        .iter()
        .map(|c| {
            if c.is_null(i) {
                return Value::Null;
            }
            match c.data_type() {
                DataType::Utf8 => Value::Text(
                    c.as_any()
                        .downcast_ref::<StringArray>()
                        .map(|a| a.value(i).to_owned())
                        .unwrap_or_default(),
                ),
                DataType::Int64 => Value::BigInt(
                    c.as_any()
                        .downcast_ref::<Int64Array>()
                        .map(|a| a.value(i))
                        .unwrap_or_default(),
                ),
                DataType::Int32 => Value::BigInt(
                    c.as_any()
                        .downcast_ref::<arrow::array::Int32Array>()
                        .map(|a| i64::from(a.value(i)))
                        .unwrap_or_default(),
                ),
                DataType::Float64 => Value::Double(
                    c.as_any()
                        .downcast_ref::<Float64Array>()
                        .map(|a| a.value(i))
                        .unwrap_or_default(),
                ),
                DataType::Boolean => Value::Boolean(
                    c.as_any()
                        .downcast_ref::<BooleanArray>()
                        .map(|a| a.value(i))
                        .unwrap_or_default(),
                ),
                DataType::Timestamp(TimeUnit::Microsecond, _) => Value::Timestamp(
                    c.as_any()
                        .downcast_ref::<TimestampMicrosecondArray>()
                        .map(|a| a.value(i))
                        .unwrap_or_default(),
                ),
                other => panic!("unexpected column type {other}"),
            }
        })
        .collect()
}

/// Drops the `revision` column of result files, so rows compare with an oracle.
fn without_revision(batch: &RecordBatch) -> RecordBatch {
    match batch.schema().index_of(edgeflow::sink::REVISION_COLUMN) {
        Ok(i) => {
            let keep: Vec<usize> = (0..batch.num_columns()).filter(|&c| c != i).collect();
            batch
                .project(&keep)
                .unwrap_or_else(|e| panic!("dropping the revision column: {e}"))
        }
        Err(_) => batch.clone(),
    }
}

/// All rows under `dir` (without the `revision` column of result files), sorted.
pub fn read_rows(dir: &Path) -> Vec<Vec<Value>> {
    let mut rows: Vec<Vec<Value>> = read_batches(dir)
        .iter()
        .map(without_revision)
        .flat_map(|b| {
            (0..b.num_rows())
                .map(move |i| row(&b, i))
                .collect::<Vec<_>>()
        })
        .collect();
    sort_rows(&mut rows);
    rows
}

/// The `revision` of every result row under `dir`.
pub fn revisions(dir: &Path) -> Vec<i32> {
    read_batches(dir)
        .iter()
        .flat_map(|b| {
            b.column_by_name(edgeflow::sink::REVISION_COLUMN)
                .and_then(|c| c.as_any().downcast_ref::<arrow::array::Int32Array>())
                .map(|a| a.values().to_vec())
                .unwrap_or_default()
        })
        .collect()
}

/// Sorts rows by their text form: a total order good enough to line up two row sets.
pub fn sort_rows(rows: &mut [Vec<Value>]) {
    rows.sort_by_cached_key(|r| r.iter().map(sort_key).collect::<Vec<_>>());
}

fn sort_key(v: &Value) -> String {
    match v {
        Value::BigInt(i) | Value::Timestamp(i) => format!("{:020}", i.wrapping_add(i64::MAX / 2)),
        Value::Double(d) => format!("{d:030.9}"),
        other => other.to_string(),
    }
}

/// Whether two values are equal, doubles to a relative 1e-9.
pub fn close(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Double(x), Value::Double(y)) => {
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        _ => a == b,
    }
}

/// Asserts that two sorted row sets are equal (doubles to 1e-9).
pub fn assert_rows_eq(got: &[Vec<Value>], want: &[Vec<Value>], context: &str) {
    assert_eq!(got.len(), want.len(), "{context}: row counts differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let same = g.len() == w.len() && g.iter().zip(w).all(|(a, b)| close(a, b));
        assert!(same, "{context}: row {i} differs\n got  {g:?}\n want {w:?}");
    }
}

/// A row as CSV text, for golden files.
pub fn csv_line(row: &[Value]) -> String {
    row.iter()
        .map(|v| match v {
            Value::Null => String::new(),
            Value::Text(s) => s.clone(),
            Value::BigInt(i) => i.to_string(),
            Value::Double(d) => format!("{d:.6}"),
            Value::Boolean(b) => b.to_string(),
            Value::Timestamp(t) => edgeflow::time::format_rfc3339_micros(*t),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The text of every dead-letter file of `query` under the output root `out`, in order.
pub fn dead_letters(out: &Path, query: &str) -> String {
    let dir = out.join("_deadletter").join(query);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())))
        .collect()
}

/// The Parquet files under `root`, by path relative to it, with their bytes.
pub fn parquet_snapshot(root: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    parquet_files(root)
        .into_iter()
        .map(|p| {
            let name = p
                .strip_prefix(root)
                .map(|r| r.display().to_string())
                .unwrap_or_default();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, bytes)
        })
        .collect()
}

/// `p` relative to `root`, as text.
pub fn relative(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .map(PathBuf::from)
        .unwrap_or_else(|_| p.to_owned())
        .display()
        .to_string()
}

/// Every result file under `out` (the latest and the superseded revisions), by name,
/// with its bytes.
pub fn result_files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    [out.join("q"), out.join("q_revisions")]
        .iter()
        .flat_map(|d| parquet_files(d))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (relative(out, &p), bytes)
        })
        .collect()
}

/// Asserts that two sets of result files have the same names and bytes.
pub fn assert_same_files(
    got: &BTreeMap<String, Vec<u8>>,
    want: &BTreeMap<String, Vec<u8>>,
    context: &str,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{context}: file names"
    );
    for (name, bytes) in got {
        assert!(bytes == &want[name], "{context}: {name} differs");
    }
}

/// `command` set up to run the canonical query over `input` at two workers into `out`.
pub fn canonical_run<'c>(command: &'c mut Command, input: &Path, out: &Path) -> &'c mut Command {
    command
        .arg("run")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/queries/device_traffic.sql"
        ))
        .arg("--input")
        .arg(input)
        .args(["--workers", "2", "--output"])
        .arg(out)
}
