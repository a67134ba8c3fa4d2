#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented entry points
//! Parquet encoding of closed windows: merged state to sorted result rows to a zstd
//! Parquet file in memory (no disk). The number is result rows per second for the
//! canonical query, for a window of 100k devices, split into the two steps. Result rows
//! are computed on one thread; encoding spreads a window's columns over up to
//! `min(cores, MAX_ENCODE_THREADS)` threads, as the engine does.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgeflow::batch::{Column, Interner};
use edgeflow::decode::JsonDecoder;
use edgeflow::operators::window_rows::window_rows;
use edgeflow::sink::{parquet::encode, result_schema, unique_result_column};
use edgeflow::source::GeneratorConfig;
use edgeflow::source::generator::{TimestampFormat, write_readings};
use edgeflow::window::state::WindowState;

const DEVICES: u64 = 100_000;

fn encode_windows(c: &mut Criterion) {
    let plan = match edgeflow::query::parse(
        "q",
        std::path::Path::new("q.sql"),
        include_str!("../queries/device_traffic.sql"),
    ) {
        Ok(plan) => plan,
        Err(e) => panic!("{e}"),
    };
    let config = GeneratorConfig {
        devices: DEVICES,
        readings: 600_000,
        rate: 1_000_000.0,
        ..GeneratorConfig::default()
    };
    let mut bytes = Vec::new();
    write_readings(
        &config,
        edgeflow::decode::Format::Jsonl,
        TimestampFormat::Millis,
        &mut bytes,
    )
    .unwrap_or_default();
    let mut interner = Interner::new();
    let batch = JsonDecoder::new(&plan.source)
        .decode(&bytes, &mut interner)
        .batch;
    let args: Vec<Option<&Column>> = plan
        .aggregates
        .iter()
        .map(|a| {
            a.arg.as_ref().and_then(|e| match &e.kind {
                edgeflow::query::expr::ExprKind::Leaf(c) => Some(&batch.columns[c.index]),
                _ => None,
            })
        })
        .collect();
    let mut state = WindowState::new(&plan);
    state.ingest(&batch, i64::MIN, None, &args, &interner, &mut Vec::new());
    let mut parts = state.close_until(i64::MAX, 0, 1, &interner);
    let part = parts.swap_remove(0);
    let schema = result_schema(&plan);
    let unique = unique_result_column(&plan);
    let unique: Vec<&str> = unique.as_deref().into_iter().collect();
    let rows = match window_rows(
        &plan, &schema, part.start, part.end, &part.keys, &part.accs, 0,
    ) {
        Ok(r) => r.batch,
        Err(e) => panic!("{e}"),
    };

    let mut group = c.benchmark_group("parquet");
    group.throughput(Throughput::Elements(rows.num_rows() as u64));
    group.sample_size(20);
    group.bench_function("result-rows/100k-keys", |b| {
        b.iter(|| {
            window_rows(
                &plan, &schema, part.start, part.end, &part.keys, &part.accs, 0,
            )
            .map(|r| r.batch.num_rows())
        })
    });
    group.bench_function("encode-zstd/100k-keys", |b| {
        b.iter(|| encode(&rows, &unique).map(|f| f.len()))
    });
    group.finish();
}

criterion_group!(benches, encode_windows);
criterion_main!(benches);
