#![allow(missing_docs)] // criterion_group! and criterion_main! generate undocumented entry points
//! The device registry of a join, at 1M devices: reading the CSV, a reload that changes
//! 1% of the rows (read and diffed), the arrangement taking that diff, and the join of a
//! closing window holding every device (one lookup per device, then grouping by site).
//! The last, divided by the devices, is the join's cost per (device, window) row: what
//! a reading costs beyond the canonical query once its device's row is in the window.

use std::path::Path;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use edgeflow::operators::registry::{Update, arrange_updates, join_window};
use edgeflow::query::GroupKey;
use edgeflow::registry::Registry;
use edgeflow::types::DataType;
use edgeflow::window::aggregate::{Accumulator, Aggregate};
use edgeflow::window::key::{KeyRows, KeyValue};
use timely::dataflow::operators::probe::Handle;
use timely::dataflow::operators::{Input, Probe};

const DEVICES: usize = 1_000_000;

/// The registry CSV: `changed` says which devices are in their other site.
fn registry_csv(changed: impl Fn(usize) -> bool) -> String {
    let mut csv = String::with_capacity(DEVICES * 40);
    csv.push_str("device_id,site,zone\n");
    for d in 0..DEVICES {
        let site = (d % 200 + usize::from(changed(d))) % 200;
        csv.push_str(&format!("dev-{d:07},site-{site:03},zone-{}\n", site % 8));
    }
    csv
}

fn plan(registry: &Path) -> edgeflow::query::QueryPlan {
    let sql = format!(
        "CREATE TABLE readings (device_id TEXT, ts TIMESTAMP, bytes_in BIGINT)
           WITH (event_time = 'ts');
         CREATE TABLE devices (device_id TEXT, site TEXT, zone TEXT)
           WITH (connector = 'file', path = '{}', reload = '30s');
         SELECT d.site, window_start, COUNT(*) AS readings, SUM(r.bytes_in) AS bytes_in
         FROM TUMBLE(readings, ts, INTERVAL '1' MINUTE) r
         JOIN devices d ON r.device_id = d.device_id
         GROUP BY d.site, window_start",
        registry.display()
    );
    edgeflow::query::parse("q", Path::new("q.sql"), &sql).unwrap_or_else(|e| panic!("{e}"))
}

fn registry(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("devices.csv");
    let before = registry_csv(|_| false);
    let after = registry_csv(|d| d % 100 == 0);
    std::fs::write(&path, &before).unwrap_or_else(|e| panic!("{e}"));
    let plan = plan(&path);
    let join = plan.join.clone().unwrap_or_else(|| panic!("no join"));
    let mut group = c.benchmark_group("registry");
    group.sample_size(10);
    group.throughput(Throughput::Elements(DEVICES as u64));
    group.bench_function("read_1m", |b| {
        b.iter(|| Registry::open(&join.table, join.key).map(|r| r.len()))
    });
    // Each reload finds the other version: 1% of the rows changed.
    let registry = Registry::open(&join.table, join.key).unwrap_or_else(|e| panic!("{e:?}"));
    let mut flip = false;
    group.bench_function("reload_1pct_of_1m", |b| {
        b.iter_batched(
            || {
                flip = !flip;
                let text = if flip { &after } else { &before };
                std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
            },
            |()| registry.reload(),
            BatchSize::PerIteration,
        )
    });
    group.finish();

    // The arrangement, and the join against it, in one timely worker.
    std::fs::write(&path, &before).unwrap_or_else(|e| panic!("{e}"));
    let initial = Registry::open(&join.table, join.key).unwrap_or_else(|e| panic!("{e:?}"));
    std::fs::write(&path, &after).unwrap_or_else(|e| panic!("{e}"));
    let next = Registry::open(&join.table, join.key).unwrap_or_else(|e| panic!("{e:?}"));
    let forward: Vec<((String, edgeflow::registry::Row), isize)> = {
        let old = initial.initial();
        let new = next.initial();
        let mut old_rows: std::collections::HashMap<_, _> =
            old.into_iter().map(|(d, _)| d).collect();
        let mut diff = Vec::new();
        for ((k, row), _) in new {
            match old_rows.remove(&k) {
                Some(was) if was == row => {}
                Some(was) => {
                    diff.push(((k.clone(), was), -1));
                    diff.push(((k, row), 1));
                }
                None => diff.push(((k, row), 1)),
            }
        }
        assert_eq!(diff.len(), DEVICES / 100 * 2, "1% of the rows changed");
        diff
    };
    let base = initial.initial();
    let mut keys = KeyRows::new(&[GroupKey {
        column: 0,
        name: "device_id".into(),
        ty: DataType::Text,
    }]);
    for d in 0..DEVICES {
        keys.columns[0].push_value(Some(KeyValue::Text(format!("dev-{d:07}").as_bytes())));
        keys.len += 1;
    }
    let accs: Vec<Accumulator> = plan
        .aggregates
        .iter()
        .map(|call| {
            let mut acc = Accumulator::new(call);
            for _ in 0..DEVICES {
                acc.push_empty();
            }
            acc
        })
        .collect();
    // A worker on this thread, so Criterion stays here.
    let alloc = timely::communication::Allocator::Thread(
        timely::communication::allocator::thread::Thread::default(),
    );
    let worker = &mut timely::worker::Worker::new(
        timely::WorkerConfig::default(),
        alloc,
        Some(std::time::Instant::now()),
    );
    {
        let probe = Handle::new();
        let (mut input, mut trace) = worker.dataflow::<i64, _, _>(|scope| {
            let (input, updates) = scope.new_input::<Vec<Update>>();
            let arranged = arrange_updates(updates);
            arranged.progress.probe_with(&probe);
            (input, arranged.trace)
        });
        let mut time = 0i64;
        for ((k, row), diff) in base {
            input.send(((k, row), time, diff));
        }
        time += 1;
        input.advance_to(time);
        while probe.less_than(&time) {
            worker.step();
        }
        let mut group = c.benchmark_group("registry");
        group.sample_size(10);
        group.throughput(Throughput::Elements(forward.len() as u64));
        let mut sign = 1;
        group.bench_function("arrange_1pct_of_1m", |b| {
            b.iter(|| {
                // Forward, then back: the trace stays at 1M rows.
                for ((k, row), diff) in forward.iter().cloned() {
                    input.send(((k, row), time, diff * sign));
                }
                sign = -sign;
                time += 1;
                input.advance_to(time);
                while probe.less_than(&time) {
                    worker.step();
                }
                use differential_dataflow::trace::TraceReader;
                trace.set_logical_compaction(timely::progress::frontier::AntichainRef::new(&[
                    time - 1,
                ]));
            })
        });
        group.throughput(Throughput::Elements(DEVICES as u64));
        group.bench_function("join_window_of_1m_devices", |b| {
            b.iter(|| join_window(&join, &mut trace, time, &keys, &accs).keys.len)
        });
        group.finish();
    }
}

criterion_group!(benches, registry);
criterion_main!(benches);
