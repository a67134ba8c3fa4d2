//! The benchmark report: what `edgeflow bench` measured, for people and for machines.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One engine configuration, measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EngineRun {
    /// Worker threads.
    pub workers: usize,
    /// Median wall-clock seconds over the runs.
    pub seconds: f64,
    /// Readings per second (median run).
    pub readings_per_second: f64,
    /// Readings per second per worker.
    pub readings_per_second_per_core: f64,
    /// Input megabytes (10^6) per second.
    pub input_mb_per_second: f64,
    /// Peak resident memory, MB.
    pub peak_rss_mb: Option<f64>,
    /// Window state bytes per open (key, window) at the peak.
    pub state_bytes_per_key: Option<f64>,
    /// Window close to durable Parquet.
    pub close_to_durable: Option<Latency>,
    /// Readings per second over one worker's (filled by [`BenchReport::with_ratios`]).
    #[serde(default)]
    pub speedup: Option<f64>,
    /// Every run's readings per second, for spread.
    pub all_readings_per_second: Vec<f64>,
}

/// A latency's quantiles, named so a script reads them without knowing positions.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Latency {
    /// Median, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Largest, ms.
    pub max_ms: f64,
}

impl Latency {
    /// From `[p50, p99, max]` in ms, as run summaries carry them.
    pub fn from_ms([p50_ms, p99_ms, max_ms]: [f64; 3]) -> Self {
        Latency {
            p50_ms,
            p99_ms,
            max_ms,
        }
    }
}

/// The hand-written loop, measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BaselineRun {
    /// Median wall-clock seconds.
    pub seconds: f64,
    /// Readings per second.
    pub readings_per_second: f64,
    /// Result rows it computed (a sanity check against the engine).
    pub rows: usize,
}

/// Everything one `edgeflow bench` measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BenchReport {
    /// Query file.
    pub query: String,
    /// Input file.
    pub input: String,
    /// Input size in bytes.
    pub input_bytes: u64,
    /// Readings in the input.
    pub readings: u64,
    /// Runs per configuration.
    pub runs: usize,
    /// Cores of this machine.
    pub cores: usize,
    /// CPU model, when known.
    pub cpu: Option<String>,
    /// The engine at each worker count.
    pub engine: Vec<EngineRun>,
    /// The plain loop, when the query is the canonical one.
    pub baseline: Option<BaselineRun>,
    /// Engine on one worker over the plain loop (filled by [`BenchReport::with_ratios`]).
    #[serde(default)]
    pub cost_ratio: Option<f64>,
}

impl BenchReport {
    /// The report with its ratios written into it, for the JSON.
    pub fn with_ratios(mut self) -> Self {
        self.cost_ratio = self.cost_ratio();
        let speedups: Vec<Option<f64>> = self
            .engine
            .iter()
            .map(|r| self.speedup(r.workers))
            .collect();
        for (run, speedup) in self.engine.iter_mut().zip(speedups) {
            run.speedup = speedup;
        }
        self
    }

    /// Engine on one worker over the plain loop: at least 1 means COST = 1.
    pub fn cost_ratio(&self) -> Option<f64> {
        let one = self.engine.iter().find(|r| r.workers == 1)?;
        Some(one.readings_per_second / self.baseline.as_ref()?.readings_per_second)
    }

    /// Speed-up of each worker count over one worker.
    pub fn speedup(&self, workers: usize) -> Option<f64> {
        let one = self.engine.iter().find(|r| r.workers == 1)?;
        let n = self.engine.iter().find(|r| r.workers == workers)?;
        Some(n.readings_per_second / one.readings_per_second)
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "query    {}", self.query)?;
        writeln!(
            f,
            "input    {}  ({} readings, {:.1} MB)",
            self.input,
            self.readings,
            self.input_bytes as f64 / 1e6
        )?;
        writeln!(
            f,
            "machine  {} cores{}",
            self.cores,
            self.cpu
                .as_deref()
                .map(|c| format!(", {c}"))
                .unwrap_or_default()
        )?;
        writeln!(
            f,
            "runs     {} per configuration, median reported",
            self.runs
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:<10} {:>14} {:>14} {:>9} {:>9} {:>11} {:>9} {:>9} {:>8}",
            "workers",
            "readings/s",
            "per core",
            "MB/s",
            "speedup",
            "peak RSS MB",
            "B/key",
            "p50 ms",
            "p99 ms"
        )?;
        for r in &self.engine {
            let [p50, p99] = r
                .close_to_durable
                .map_or([None, None], |l| [Some(l.p50_ms), Some(l.p99_ms)]);
            writeln!(
                f,
                "{:<10} {:>14.0} {:>14.0} {:>9.1} {:>9} {:>11} {:>9} {:>9} {:>8}",
                r.workers,
                r.readings_per_second,
                r.readings_per_second_per_core,
                r.input_mb_per_second,
                opt(self.speedup(r.workers), 2),
                opt(r.peak_rss_mb, 1),
                opt(r.state_bytes_per_key, 0),
                opt(p50, 1),
                opt(p99, 1),
            )?;
        }
        if let Some(b) = &self.baseline {
            writeln!(
                f,
                "{:<10} {:>14.0} {:>14.0}",
                "plain loop", b.readings_per_second, b.readings_per_second
            )?;
            if let Some(ratio) = self.cost_ratio() {
                let verdict = if ratio >= 1.0 {
                    "COST = 1"
                } else {
                    "slower than the plain loop"
                };
                writeln!(f)?;
                write!(
                    f,
                    "engine on 1 worker / plain loop = {ratio:.2}  ({verdict})"
                )?;
            }
        }
        Ok(())
    }
}
