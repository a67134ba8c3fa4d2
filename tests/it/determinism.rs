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
