//! Seeded traffic readings for the oracle tests: one reading type, a generator of random
//! numbers that needs no crate, and JSON lines of them.

use std::path::Path;

use edgeflow::decode::Format;
use edgeflow::engine::control::EndOfInput;
use edgeflow::engine::{RunConfig, RunSummary};
use edgeflow::query::QueryPlan;
use edgeflow::source::Input;

use super::support::{run, run_within_deadline};

/// One reading: device, event time (ms), bytes in, latency.
#[derive(Clone, Debug)]
pub struct Reading {
    pub device: String,
    pub ts_ms: i64,
    pub bytes_in: i64,
    pub latency_ms: f64,
}

/// SplitMix64: the same numbers everywhere for a seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `per_device` readings of each of `devices` devices, in arrival order: each device
/// starts up to `jitter_ms` after 2026-01-01T00:00:00Z and moves on by `step` between
/// readings; each reading arrives `delay` after its event time.
pub fn fleet(
    seed: u64,
    devices: usize,
    per_device: usize,
    jitter_ms: u64,
    mut step: impl FnMut(&mut Rng) -> i64,
    mut delay: impl FnMut(&mut Rng) -> i64,
) -> Vec<Reading> {
    let mut rng = Rng(seed);
    let base = 1_767_225_600_000;
    let mut all: Vec<(i64, Reading)> = Vec::new();
    for d in 0..devices {
        let mut t = base + rng.below(jitter_ms) as i64;
        for _ in 0..per_device {
            t += step(&mut rng);
            let late_by = delay(&mut rng);
            let reading = Reading {
                device: format!("dev-{d:03}"),
                ts_ms: t,
                bytes_in: rng.below(100_000) as i64,
                latency_ms: rng.below(10_000) as f64 / 100.0,
            };
            all.push((t + late_by, reading));
        }
    }
    all.sort_by_key(|(arrival, r)| (*arrival, r.device.clone()));
    all.into_iter().map(|(_, r)| r).collect()
}

/// The readings as JSON lines (`device_id`, `ts` in epoch ms, `bytes_in`, `latency_ms`).
pub fn jsonl(readings: &[Reading]) -> String {
    readings
        .iter()
        .map(|r| {
            format!(
                "{{\"device_id\":\"{}\",\"ts\":{},\"bytes_in\":{},\"latency_ms\":{}}}\n",
                r.device, r.ts_ms, r.bytes_in, r.latency_ms
            )
        })
        .collect()
}

/// Writes the readings to `path` as JSON lines: an input for a run.
pub fn write(path: &Path, readings: &[Reading]) -> Input {
    std::fs::write(path, jsonl(readings)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Input::File {
        path: path.to_owned(),
        format: Format::Jsonl,
    }
}

/// Runs `plan` over the readings as two consecutive files, cut at `at`, into `out` (in
/// `dir`): the first run on `workers.0` workers, the second on `workers.1`.
pub fn run_in_two(
    plan: &QueryPlan,
    dir: &Path,
    readings: &[Reading],
    at: usize,
    workers: (usize, usize),
) -> (RunSummary, RunSummary) {
    let out = dir.join("out");
    let first = run(
        plan,
        write(&dir.join("a.jsonl"), &readings[..at]),
        &out,
        workers.0,
        8 * 1024,
    );
    let second = run(
        plan,
        write(&dir.join("b.jsonl"), &readings[at..]),
        &out,
        workers.1,
        8 * 1024,
    );
    (first, second)
}

/// Runs `readings` cut at `cuts` as consecutive legs on one output folder (`dir/out`),
/// at 2 workers, every leg but the last ended by a checkpoint, as a live node's legs end.
/// Chunks of 64 bytes hold one reading each, so a cut leaves every reading's chunk, hence
/// its watermark, as is. Returns the corrections and late readings of all legs.
pub fn run_in_legs(
    plan: &QueryPlan,
    dir: &Path,
    readings: &[Reading],
    cuts: &[usize],
) -> (u64, u64) {
    let out = dir.join("out");
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(readings.len());
    let (mut corrections, mut late) = (0, 0);
    for (leg, pair) in bounds.windows(2).enumerate() {
        let file = write(
            &dir.join(format!("leg{leg}.jsonl")),
            &readings[pair[0]..pair[1]],
        );
        let mut config = RunConfig::new(plan.clone(), file, out.clone());
        config.workers = 2;
        config.chunk_bytes = 64;
        if leg + 2 < bounds.len() {
            config.control.set_end_of_input(EndOfInput::Checkpoint);
        }
        let summary = run_within_deadline(config).unwrap_or_else(|e| panic!("{e}"));
        corrections += summary.corrections;
        late += summary.late;
    }
    (corrections, late)
}
