//! Seeded traffic readings for the oracle tests: one reading type, a generator of random
//! numbers that needs no crate, and JSON lines of them.

use std::path::Path;

use edgeflow::decode::Format;
use edgeflow::engine::RunSummary;
use edgeflow::query::QueryPlan;
use edgeflow::source::Input;

use super::support::run;

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
