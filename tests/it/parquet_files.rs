//! The Parquet files: layout, schema, timestamp unit, compression, sort order.

use std::fs::File;

use arrow::datatypes::{DataType, TimeUnit};
use edgeflow::source::{GeneratorConfig, Input};
use edgeflow::types::Value;
use parquet::basic::{Compression, LogicalType, TimeUnit as PqTimeUnit};
use parquet::file::reader::{FileReader, SerializedFileReader};

use super::support::{parquet_files, plan, read_batches, row, run};

const CANONICAL: &str = include_str!("../../queries/device_traffic.sql");

#[test]
fn result_files_are_hive_partitioned_zstd_with_utc_micros() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = GeneratorConfig {
        devices: 50,
        readings: 5_000,
        rate: 20.0,
        ..GeneratorConfig::default()
    };
    let plan = plan(CANONICAL);
    let summary = run(&plan, Input::Generator(config), dir.path(), 2, 64 * 1024);
    let files = parquet_files(&dir.path().join("q"));
    assert_eq!(
        files.len() as u64,
        summary.files - parquet_files(&dir.path().join("q_late")).len() as u64
    );
    for path in &files {
        let rel = path
            .strip_prefix(dir.path())
            .unwrap_or(path)
            .display()
            .to_string();
        let parts: Vec<&str> = rel.split('/').collect();
        assert_eq!(parts.len(), 4, "{rel}");
        assert!(
            parts[1].starts_with("date=") && parts[1].len() == "date=2026-01-01".len(),
            "{rel}"
        );
        assert!(
            parts[2].starts_with("hour=") && parts[2].len() == "hour=00".len(),
            "{rel}"
        );
        assert!(
            parts[3].starts_with("window-") && parts[3].ends_with("-r0.parquet"),
            "{rel}"
        );

        let reader = SerializedFileReader::new(File::open(path).unwrap_or_else(|e| panic!("{e}")))
            .unwrap_or_else(|e| panic!("{e}"));
        let meta = reader.metadata();
        let schema = meta.file_metadata().schema_descr();
        let ws = schema.column(1);
        assert_eq!(ws.name(), "window_start");
        assert_eq!(
            ws.logical_type_ref(),
            Some(&LogicalType::timestamp(true, PqTimeUnit::MICROS))
        );
        // zstd, but for files too small to gain from it.
        let small =
            meta.file_metadata().num_rows() < edgeflow::sink::parquet::COMPRESS_FROM_ROWS as i64;
        for rg in meta.row_groups() {
            for c in rg.columns() {
                let compression = c.compression();
                assert!(
                    if small {
                        compression == Compression::UNCOMPRESSED
                    } else {
                        matches!(compression, Compression::ZSTD(_))
                    },
                    "{rel}: {compression:?}"
                );
            }
        }
    }
    let batches = read_batches(&dir.path().join("q"));
    let schema = batches[0].schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        [
            "device_id",
            "window_start",
            "window_end",
            "readings",
            "bytes_in",
            "bytes_out",
            "max_bytes_in",
            "avg_latency_ms",
            "revision"
        ]
    );
    assert_eq!(
        schema.field(1).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(schema.field(3).data_type(), &DataType::Int64);
    assert!(!schema.field(3).is_nullable());
    assert_eq!(schema.field(7).data_type(), &DataType::Float64);
    // Rows are sorted by key inside each file, and every window is one minute long.
    for batch in &batches {
        let keys: Vec<Value> = (0..batch.num_rows())
            .map(|i| row(batch, i)[0].clone())
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_by_key(|v| v.to_string());
        assert_eq!(keys, sorted);
        for i in 0..batch.num_rows() {
            let r = row(batch, i);
            match (&r[1], &r[2]) {
                (Value::Timestamp(s), Value::Timestamp(e)) => {
                    assert_eq!(e - s, 60_000_000);
                    assert_eq!(s % 60_000_000, 0);
                }
                other => panic!("{other:?}"),
            }
        }
    }
}

#[test]
fn null_aggregates_and_timestamp_extremes_round_trip() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let input = dir.path().join("in.jsonl");
    std::fs::write(
        &input,
        concat!(
            "{\"device_id\":\"a\",\"ts\":\"2026-01-01T00:00:01Z\",\"v\":null,\"ok\":true}\n",
            "{\"device_id\":\"a\",\"ts\":\"2026-01-01T00:00:02.5Z\",\"v\":null,\"ok\":false}\n",
            "{\"device_id\":null,\"ts\":\"2026-01-01T00:00:03Z\",\"v\":7,\"ok\":null}\n",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let plan = plan(
        "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, v BIGINT, ok BOOLEAN) WITH (event_time = 'ts');
         SELECT device_id, window_start, SUM(v) AS total, COUNT(v) AS n, MIN(ts) AS first, MAX(ok) AS any_ok,
                SUM(v) * 2 + 1 AS expr
         FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY device_id, window_start",
    );
    run(
        &plan,
        edgeflow::source::Input::File {
            path: input,
            format: edgeflow::decode::Format::Jsonl,
        },
        dir.path(),
        1,
        4096,
    );
    let batches = read_batches(&dir.path().join("q"));
    let rows: Vec<Vec<Value>> = batches
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| row(b, i)))
        .collect();
    let start = Value::Timestamp(1_767_225_600_000_000);
    assert_eq!(
        rows,
        vec![
            vec![
                Value::Null,
                start.clone(),
                Value::BigInt(7),
                Value::BigInt(1),
                Value::Timestamp(1_767_225_603_000_000),
                Value::Null,
                Value::BigInt(15),
                Value::BigInt(0)
            ],
            vec![
                Value::Text("a".into()),
                start,
                Value::Null,
                Value::BigInt(0),
                Value::Timestamp(1_767_225_601_000_000),
                Value::Boolean(true),
                Value::Null,
                Value::BigInt(0)
            ],
        ]
    );
    let schema = batches[0].schema();
    assert_eq!(
        schema.field(4).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(schema.field(5).data_type(), &DataType::Boolean);
}
