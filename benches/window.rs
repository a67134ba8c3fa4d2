#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented entry points
//! Window aggregation: folding decoded batches into open windows, the per-reading work
//! after decoding. The number is readings folded per second on one thread for the
//! canonical query (one-minute tumbling windows, five aggregates), at 10k and at 1M
//! distinct keys, where state no longer fits in cache. Windows are closed outside the
//! measured loop.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgeflow::batch::{Batch, Column, Interner};
use edgeflow::decode::JsonDecoder;
use edgeflow::source::GeneratorConfig;
use edgeflow::source::generator::{TimestampFormat, write_readings};
use edgeflow::window::state::WindowState;

const READINGS: u64 = 200_000;

fn plan() -> edgeflow::query::QueryPlan {
    match edgeflow::query::parse(
        "q",
        std::path::Path::new("q.sql"),
        include_str!("../queries/device_traffic.sql"),
    ) {
        Ok(plan) => plan,
        Err(e) => panic!("{e}"),
    }
}

fn batch(devices: u64, interner: &mut Interner) -> Batch {
    let config = GeneratorConfig {
        devices,
        readings: READINGS,
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
    JsonDecoder::new(&plan().source)
        .decode(&bytes, interner)
        .batch
}

fn aggregate(c: &mut Criterion) {
    let plan = plan();
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(READINGS));
    for devices in [10_000u64, 1_000_000] {
        let mut interner = Interner::new();
        let batch = batch(devices, &mut interner);
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
        group.bench_function(format!("fold/{devices}-keys"), |b| {
            b.iter_batched_ref(
                || WindowState::new(&plan),
                |state| {
                    let mut late = Vec::new();
                    state.ingest(&batch, i64::MIN, None, &args, &interner, &mut late);
                    state.open_groups()
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, aggregate);
criterion_main!(benches);
