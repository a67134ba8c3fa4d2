#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented entry points
//! Decoding: JSON lines and CSV bytes to columnar batches, the first thing every reading
//! goes through. The number is readings decoded per second on one thread, input already
//! in memory (no I/O), for the canonical six-field schema.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use edgeflow::batch::Interner;
use edgeflow::decode::{CsvDecoder, Format, JsonDecoder};
use edgeflow::source::GeneratorConfig;
use edgeflow::source::generator::{TimestampFormat, write_readings};

const READINGS: u64 = 100_000;

fn input(format: Format, ts: TimestampFormat) -> Vec<u8> {
    let config = GeneratorConfig {
        readings: READINGS,
        ..GeneratorConfig::default()
    };
    let mut bytes = Vec::new();
    write_readings(&config, format, ts, &mut bytes).unwrap_or_default();
    bytes
}

fn schema() -> edgeflow::query::SourceSchema {
    let text = include_str!("../queries/device_traffic.sql");
    match edgeflow::query::parse("q", std::path::Path::new("q.sql"), text) {
        Ok(plan) => plan.source,
        Err(e) => panic!("{e}"),
    }
}

fn decode(c: &mut Criterion) {
    let schema = schema();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(READINGS));
    let json = input(Format::Jsonl, TimestampFormat::Millis);
    group.bench_function("jsonl/epoch-ms", |b| {
        let mut interner = Interner::new();
        let mut decoder = JsonDecoder::new(&schema);
        b.iter(|| decoder.decode(&json, &mut interner).batch.len)
    });
    let json_rfc = input(Format::Jsonl, TimestampFormat::Rfc3339);
    group.bench_function("jsonl/rfc3339", |b| {
        let mut interner = Interner::new();
        let mut decoder = JsonDecoder::new(&schema);
        b.iter(|| decoder.decode(&json_rfc, &mut interner).batch.len)
    });
    let csv = input(Format::Csv, TimestampFormat::Millis);
    let header_end = csv.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
    group.bench_function("csv/epoch-ms", |b| {
        let mut interner = Interner::new();
        let mut decoder = match CsvDecoder::new(&schema, &csv[..header_end]) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        b.iter(|| decoder.decode(&csv[header_end..], &mut interner).batch.len)
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
