//! The result folder reads as one Hive-partitioned table in pyarrow, DuckDB and Polars,
//! with the same rows, types and partitions edgeflow wrote.

use edgeflow::source::{GeneratorConfig, Input};
use edgeflow::types::Value;

use super::support::{plan, read_rows, run};

/// The Python with pyarrow, duckdb and polars that `tests/run.sh` provisions.
pub fn python() -> String {
    let python = std::env::var("EDGEFLOW_PYTHON").unwrap_or_else(|_| {
        panic!("EDGEFLOW_PYTHON is not set: run the tests with ./tests/run.sh, which creates a Python environment with pyarrow, duckdb, polars and moto")
    });
    let ok = std::process::Command::new(&python)
        .args(["-c", "import pyarrow, duckdb, polars"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{python} lacks pyarrow, duckdb or polars: run ./tests/run.sh to (re)create the environment"
    );
    python
}

#[test]
fn outputs_read_back_in_pyarrow_duckdb_and_polars() {
    let python = python();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = GeneratorConfig {
        devices: 60,
        readings: 20_000,
        rate: 4.0,
        ..GeneratorConfig::default()
    };
    let plan = plan(include_str!("../../queries/device_traffic.sql"));
    run(&plan, Input::Generator(config), dir.path(), 2, 64 * 1024);
    let table = dir.path().join("q");
    let ours = read_rows(&table);
    let readings: i64 = ours
        .iter()
        .map(|r| if let Value::BigInt(n) = r[3] { n } else { 0 })
        .sum();
    let mut partitions: Vec<String> = ours
        .iter()
        .map(|r| match &r[1] {
            Value::Timestamp(t) => {
                let p = edgeflow::time::partition_path(*t);
                p.replace("date=", "").replace("/hour=", "/")
            }
            _ => String::new(),
        })
        .collect();
    partitions.sort();
    partitions.dedup();
    assert!(
        partitions.len() > 1,
        "the test should span several hour partitions"
    );

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/py/read_outputs.py");
    let out = std::process::Command::new(&python)
        .arg(script)
        .arg(&table)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    for reader in ["pyarrow", "duckdb", "polars"] {
        let r = &seen[reader];
        assert_eq!(r["rows"], ours.len(), "{reader}: {r}");
        assert_eq!(r["readings"], readings, "{reader}: {r}");
        let parts: Vec<String> = r["partitions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str())
                    .map(|p| {
                        // Readers type `hour` as an integer: compare "00" and "0" alike.
                        let (d, h) = p.split_once('/').unwrap_or((p, ""));
                        format!("{d}/{:02}", h.parse::<u32>().unwrap_or(99))
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(parts, partitions, "{reader}");
    }
    let columns = |reader: &str| -> Vec<String> {
        seen[reader]["columns"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        columns("pyarrow").contains(&"window_start:timestamp[us, tz=UTC]".to_owned()),
        "{:?}",
        columns("pyarrow")
    );
    assert!(
        columns("duckdb").contains(&"window_start:TIMESTAMP WITH TIME ZONE".to_owned()),
        "{:?}",
        columns("duckdb")
    );
    assert!(
        columns("polars")
            .iter()
            .any(|c| c.starts_with("window_start:Datetime(time_unit='us', time_zone='UTC')")),
        "{:?}",
        columns("polars")
    );
    assert!(columns("duckdb").contains(&"avg_latency_ms:DOUBLE".to_owned()));
}
