//! Every file in `queries/` runs: a query's output on a fixed generated input equals the
//! expected rows beside it (`queries/expected/<name>.csv`); a file in `queries/errors/`
//! fails with the message its first line states.
//!
//! `EDGEFLOW_BLESS=1 cargo test query_files` rewrites the expected files after a
//! deliberate change; review the diff.

use std::path::{Path, PathBuf};

use edgeflow::source::{GeneratorConfig, Input};

use super::support::{csv_line, read_rows, run};

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

#[test]
fn every_example_query_produces_its_expected_rows() {
    let files = sql_files(&root().join("queries"));
    assert!(
        files.len() >= 4,
        "queries/ should hold the canonical query and more examples"
    );
    let bless = std::env::var_os("EDGEFLOW_BLESS").is_some();
    for file in files {
        let plan = edgeflow::query::load(&file).unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let summary = run(
            &plan,
            Input::Generator(example_input()),
            dir.path(),
            2,
            64 * 1024,
        );
        assert!(summary.rows > 0, "{}: no rows", file.display());
        let rows = read_rows(&dir.path().join(&plan.name));
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
