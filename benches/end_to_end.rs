#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented entry points
//! A small end-to-end run: the canonical query over 200k generated readings as a JSON
//! lines file, through the whole pipeline (timely workers, stamping, windows, Parquet
//! files on disk) at one and two workers. The number is readings per second of wall
//! clock, set-up (writing the input file) outside the measured loop. For the full-size
//! figures use `edgeflow bench`.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgeflow::decode::Format;
use edgeflow::engine::{RunConfig, run};
use edgeflow::source::generator::{TimestampFormat, write_readings};
use edgeflow::source::{GeneratorConfig, Input};

const READINGS: u64 = 200_000;

fn end_to_end(c: &mut Criterion) {
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("{e}"),
    };
    let input = dir.path().join("readings.jsonl");
    let config = GeneratorConfig {
        readings: READINGS,
        ..GeneratorConfig::default()
    };
    let mut bytes = Vec::new();
    write_readings(&config, Format::Jsonl, TimestampFormat::Millis, &mut bytes).unwrap_or_default();
    if let Err(e) = std::fs::write(&input, bytes) {
        panic!("{e}");
    }
    let plan = match edgeflow::query::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/queries/device_traffic.sql"
    ))) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let mut group = c.benchmark_group("end-to-end");
    group.throughput(Throughput::Elements(READINGS));
    group.sample_size(10);
    for workers in [1, 2] {
        group.bench_function(format!("canonical/{workers}-workers"), |b| {
            b.iter(|| {
                let mut run_config = RunConfig::new(
                    plan.clone(),
                    Input::File {
                        path: input.clone(),
                        format: Format::Jsonl,
                    },
                    dir.path().join("out"),
                );
                run_config.workers = workers;
                run(run_config).map(|s| s.rows).unwrap_or_default()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
