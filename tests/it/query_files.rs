//! Every file in `queries/` runs: a query's output on a fixed generated input equals
//! DuckDB's answer over the same readings (`queries/expected/<name>.duckdb.sql`, run by
//! `tests/it/py/duckdb_oracle.py`) and the reviewed rows beside it
//! (`queries/expected/<name>.csv`); a file in `queries/errors/` fails with the message its
//! first line states.
//!
//! Queries over live sources run against the simulated fleet in `tests/it/live.rs`.
//!
//! `EDGEFLOW_BLESS=1 ./tests/run.sh --test it query_files` rewrites the expected rows after
//! a deliberate change, but only with an output DuckDB agrees with; review the diff.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use edgeflow::decode::Format;
use edgeflow::source::generator::{TimestampFormat, write_readings};
use edgeflow::source::{GeneratorConfig, Input};
use edgeflow::types::Value;

use super::interop::python;
use super::support::{assert_rows_eq, csv_line, read_batches, read_rows, run, sort_rows};

fn sql_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The input every example query runs on: two hours of readings from 40 devices.
pub fn example_input() -> GeneratorConfig {
    GeneratorConfig {
        devices: 40,
        readings: 30_000,
        rate: 4.0,
        disorder_ms: 4_000,
        late_fraction: 0.002,
        seed: 1,
        ..GeneratorConfig::default()
    }
}

/// Writes [`example_input`] as JSON lines (epoch-millisecond timestamps) to `path`.
fn write_example_input(path: &Path) {
    let file = File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = BufWriter::new(file);
    write_readings(
        &example_input(),
        Format::Jsonl,
        TimestampFormat::Millis,
        &mut out,
    )
    .and_then(|()| out.flush())
    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A result as DuckDB computed it.
struct DuckDbAnswer {
    columns: Vec<String>,
    /// Sorted as [`read_rows`] sorts.
    rows: Vec<Vec<Value>>,
}

/// Runs the DuckDB query `sql` over the JSON-lines `readings` with `duckdb_oracle.py`.
fn duckdb_answer(python: &str, readings: &Path, sql: &Path) -> DuckDbAnswer {
    let script = root().join("tests/it/py/duckdb_oracle.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(readings)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| panic!("{python} {}: {e}", script.display()));
    assert!(
        output.status.success(),
        "DuckDB failed on {}:\n{}",
        sql.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{}: DuckDB's answer is not JSON: {e}", sql.display()));
    let columns: Vec<(String, String)> = json["columns"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: DuckDB's answer has no columns", sql.display()))
        .iter()
        .map(|c| {
            let text = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (text("name"), text("type"))
        })
        .collect();
    let mut rows: Vec<Vec<Value>> = json["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: DuckDB's answer has no rows", sql.display()))
        .iter()
        .map(|r| {
            let cells = r.as_array().map(Vec::as_slice).unwrap_or_default();
            assert_eq!(cells.len(), columns.len(), "{}: ragged row", sql.display());
            cells
                .iter()
                .zip(&columns)
                .map(|(cell, (_, ty))| duckdb_value(cell, ty))
                .collect()
        })
        .collect();
    sort_rows(&mut rows);
    DuckDbAnswer {
        columns: columns.into_iter().map(|(name, _)| name).collect(),
        rows,
    }
}

/// A DuckDB result cell as the engine's value of the same SQL type.
fn duckdb_value(cell: &serde_json::Value, ty: &str) -> Value {
    if cell.is_null() {
        return Value::Null;
    }
    let value = match ty {
        // DuckDB sums BIGINTs into a HUGEINT; the engine's BIGINT sum is NULL past i64.
        "BIGINT" | "HUGEINT" | "INTEGER" => Some(cell.as_i64().map_or(Value::Null, Value::BigInt)),
        "DOUBLE" => cell.as_f64().map(Value::Double),
        "TIMESTAMP" => cell.as_i64().map(Value::Timestamp),
        "VARCHAR" => cell.as_str().map(|s| Value::Text(s.to_owned())),
        "BOOLEAN" => cell.as_bool().map(Value::Boolean),
        other => panic!("DuckDB column type {other} has no edgeflow counterpart"),
    };
    value.unwrap_or_else(|| panic!("DuckDB returned {cell} as {ty}"))
}

/// The engine's result column names under `table` (without `revision`).
fn engine_columns(table: &Path) -> Vec<String> {
    let batches = read_batches(table);
    let Some(batch) = batches.first() else {
        panic!("{}: no batches", table.display());
    };
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != edgeflow::sink::REVISION_COLUMN)
        .collect()
}

/// Asserts that the reviewed rows (CSV, doubles to 6 decimals) are DuckDB's rows.
fn assert_golden_is(golden: &str, want: &[Vec<Value>], path: &Path) {
    let lines: Vec<&str> = golden.lines().collect();
    assert_eq!(
        lines.len(),
        want.len(),
        "{}: {} rows, DuckDB has {}",
        path.display(),
        lines.len(),
        want.len()
    );
    for (i, (line, row)) in lines.iter().zip(want).enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let same = fields.len() == row.len()
            && fields.iter().zip(row).all(|(field, value)| match value {
                // Printed with 6 decimals: off by at most half a unit in the last place.
                Value::Double(d) => field
                    .parse::<f64>()
                    .is_ok_and(|g| (g - d).abs() <= 1e-6 + 1e-9 * d.abs()),
                other => *field == csv_line(std::slice::from_ref(other)),
            });
        assert!(
            same,
            "{}:{}: {line}\n but DuckDB says {}",
            path.display(),
            i + 1,
            csv_line(row)
        );
    }
}

#[test]
fn every_example_query_produces_duckdbs_rows_and_its_expected_rows() {
    let files = sql_files(&root().join("queries"));
    assert!(
        files.len() >= 4,
        "queries/ should hold the canonical query and more examples"
    );
    let python = python();
    let input_dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let readings = input_dir.path().join("readings.jsonl");
    write_example_input(&readings);
    let bless = std::env::var_os("EDGEFLOW_BLESS").is_some();
    for file in files {
        let plan = edgeflow::query::load(&file).unwrap_or_else(|e| panic!("{e}"));
        if plan.source.connector.is_live() {
            // A live query runs against the simulated fleet instead (tests/it/live.rs).
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            assert!(
                super::live::LIVE_QUERY_FILES.contains(&name),
                "{}: a live query file needs a test in tests/it/live.rs",
                file.display()
            );
            continue;
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let summary = run(
            &plan,
            Input::Generator(example_input()),
            dir.path(),
            2,
            64 * 1024,
        );
        assert!(summary.rows > 0, "{}: no rows", file.display());
        let table = dir.path().join(&plan.name);
        let rows = read_rows(&table);

        let duckdb_sql = root()
            .join("queries/expected")
            .join(format!("{}.duckdb.sql", plan.name));
        assert!(
            duckdb_sql.is_file(),
            "{}: missing {}, the same query in DuckDB over the `readings` view and the windows of tests/it/py/duckdb_oracle.py",
            file.display(),
            duckdb_sql.display()
        );
        let duckdb = duckdb_answer(&python, &readings, &duckdb_sql);
        assert_eq!(
            engine_columns(&table),
            duckdb.columns,
            "{}: columns differ from DuckDB's",
            file.display()
        );
        assert_rows_eq(
            &rows,
            &duckdb.rows,
            &format!("{} vs DuckDB ({})", file.display(), duckdb_sql.display()),
        );

        let text: String = rows.iter().map(|r| csv_line(r) + "\n").collect();
        let expected_path = root()
            .join("queries/expected")
            .join(format!("{}.csv", plan.name));
        if bless {
            std::fs::create_dir_all(expected_path.parent().unwrap_or(Path::new("."))).ok();
            std::fs::write(&expected_path, &text).unwrap_or_else(|e| panic!("{e}"));
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with EDGEFLOW_BLESS=1 to create it)",
                expected_path.display()
            )
        });
        assert!(
            text == expected,
            "{}: output differs from {}",
            file.display(),
            expected_path.display()
        );
        assert_golden_is(&expected, &duckdb.rows, &expected_path);
    }
}

#[test]
fn every_error_example_fails_as_its_first_line_says() {
    let files = sql_files(&root().join("queries/errors"));
    assert!(!files.is_empty());
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}"));
        let want = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("-- error: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be `-- error: <message>`",
                    file.display()
                )
            });
        let relative = file.strip_prefix(root()).unwrap_or(&file).to_owned();
        match edgeflow::query::load(&relative) {
            Ok(_) => panic!("{}: planned, but should fail with {want}", file.display()),
            Err(e) => assert_eq!(e.to_string(), want, "{}", file.display()),
        }
    }
}
