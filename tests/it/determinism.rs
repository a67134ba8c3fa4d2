//! The same input, query and worker count give byte-identical files; any worker count
//! gives the same rows.

use edgeflow::source::{GeneratorConfig, Input};

use super::oracle::Spec;
use super::support::{parquet_snapshot, plan, read_rows, run};

#[test]
fn two_runs_write_identical_bytes_and_worker_counts_agree_on_rows() {
    let spec = Spec {
        size_ms: 10_000,
        slide_ms: 5_000,
        ooo_ms: 1_000,
        filtered: false,
    };
    let plan = plan(&spec.sql());
    let config = GeneratorConfig {
        devices: 300,
        readings: 20_000,
        rate: 500.0,
        disorder_ms: 3_000,
        late_fraction: 0.01,
        seed: 3,
        ..GeneratorConfig::default()
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let mut rows_by_workers = Vec::new();
    for workers in [1, 2, 4] {
        let a = dir.path().join(format!("a{workers}"));
        let b = dir.path().join(format!("b{workers}"));
        run(
            &plan,
            Input::Generator(config.clone()),
            &a,
            workers,
            8 * 1024,
        );
        run(
            &plan,
            Input::Generator(config.clone()),
            &b,
            workers,
            8 * 1024,
        );
        let (sa, sb) = (parquet_snapshot(&a), parquet_snapshot(&b));
        assert!(!sa.is_empty());
        assert_eq!(
            sa.keys().collect::<Vec<_>>(),
            sb.keys().collect::<Vec<_>>(),
            "{workers} workers: file names"
        );
        for (name, bytes) in &sa {
            assert!(
                sb.get(name) == Some(bytes),
                "{workers} workers: {name} differs between runs"
            );
        }
        rows_by_workers.push(read_rows(&a.join("q")));
    }
    // Exact equality, doubles included: partial sums are combined with compensation.
    assert_eq!(rows_by_workers[0], rows_by_workers[1], "1 vs 2 workers");
    assert_eq!(rows_by_workers[0], rows_by_workers[2], "1 vs 4 workers");
}

/// A sketch query writes the same bytes at any worker count while each group holds no
/// more values in a window than a slot keeps as values: partial sketches still holding
/// their values merge by putting them together, and the sketch is built from them in
/// one order.
#[test]
fn sketch_files_are_the_same_bytes_at_any_worker_count() {
    let spec = Spec {
        size_ms: 10_000,
        slide_ms: 10_000,
        ooo_ms: 1_000,
        filtered: false,
    };
    let sql = spec.sql().replace(
        " FROM TUMBLE(",
        ", APPROX_PERCENTILE(latency_ms, 0.99) AS p99, APPROX_DISTINCT(packets) AS kinds FROM TUMBLE(",
    );
    assert!(sql.contains("p99"), "{sql}");
    let plan = plan(&sql);
    // About 50 readings per device and window, from every worker.
    let config = GeneratorConfig {
        devices: 40,
        readings: 40_000,
        rate: 200.0,
        disorder_ms: 3_000,
        late_fraction: 0.01,
        seed: 5,
        ..GeneratorConfig::default()
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let snapshots: Vec<_> = [1, 2, 4]
        .into_iter()
        .map(|workers| {
            let out = dir.path().join(format!("w{workers}"));
            run(
                &plan,
                Input::Generator(config.clone()),
                &out,
                workers,
                8 * 1024,
            );
            parquet_snapshot(&out.join("q"))
        })
        .collect();
    assert!(!snapshots[0].is_empty());
    for (i, workers) in [(1, 2), (2, 4)] {
        assert!(
            snapshots[i] == snapshots[0],
            "{workers} workers write other bytes than 1"
        );
    }
}
