//! `edgeflow bench`: the pipeline end to end at several worker counts, next to the plain
//! single-threaded loop, on the same file.
//!
//! Each engine run is a separate `edgeflow run --json` process, so that its peak memory is
//! its own; the plain loop runs in this process. The input file is generated once and
//! kept in the temporary folder for later benches.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use edgeflow::bench::report::{BaselineRun, BenchReport, EngineRun, Latency};
use edgeflow::bench::{baseline, svg};
use edgeflow::decode::Format;
use edgeflow::engine::RunSummary;
use edgeflow::source::GeneratorConfig;
use edgeflow::source::generator::{TimestampFormat, write_readings};

/// Arguments of `bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The query to run.
    #[arg(long, default_value = "queries/device_traffic.sql")]
    pub query: PathBuf,
    /// Devices in the generated input.
    #[arg(long, default_value_t = 10_000)]
    pub devices: u64,
    /// Readings in the generated input.
    #[arg(long, default_value_t = 4_000_000)]
    pub readings: u64,
    /// Worker counts to run, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub workers: Vec<usize>,
    /// A JSON lines file to use instead of generating one.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Runs per configuration; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Write the report as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw readings/s against workers and the latency distribution as SVG.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// Skip the plain loop (it implements the canonical query only).
    #[arg(long)]
    pub no_baseline: bool,
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn generated_input(devices: u64, readings: u64) -> anyhow::Result<PathBuf> {
    let path = std::env::temp_dir().join(format!(
        "edgeflow-bench-{devices}d-{readings}r-seed42.jsonl"
    ));
    if path.exists() {
        return Ok(path);
    }
    eprintln!("generating {} ...", path.display());
    let config = GeneratorConfig {
        devices,
        readings,
        ..GeneratorConfig::default()
    };
    let temp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&temp)?);
    write_readings(&config, Format::Jsonl, TimestampFormat::Millis, &mut out)?;
    std::io::Write::flush(&mut out)?;
    drop(out);
    std::fs::rename(&temp, &path)?;
    Ok(path)
}

fn engine_run(query: &Path, input: &Path, workers: usize) -> anyhow::Result<RunSummary> {
    let out = tempfile::tempdir()?;
    let exe = std::env::current_exe().context("locating the edgeflow executable")?;
    let output = Command::new(exe)
        .arg("run")
        .arg(query)
        .arg("--input")
        .arg(input)
        // Each run writes a fresh temporary output; syncing it would measure the target
        // and, with the default folder, collide with the files of earlier benches.
        .args([
            "--workers",
            &workers.to_string(),
            "--json",
            "--no-sync",
            "--output",
        ])
        .arg(out.path())
        .output()
        .context("starting edgeflow run")?;
    if !output.status.success() {
        bail!(
            "edgeflow run failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Runs `bench`.
pub fn bench(args: &BenchArgs) -> anyhow::Result<()> {
    if args.workers.is_empty() || args.workers.contains(&0) || args.runs == 0 {
        bail!("--workers needs counts of at least 1 and --runs at least 1");
    }
    let plan = edgeflow::query::load(&args.query)?;
    let input = match &args.input {
        Some(p) => p.clone(),
        None => generated_input(args.devices, args.readings)?,
    };
    // Read the file once so every run starts with it in the page cache.
    let data = std::fs::read(&input).with_context(|| format!("reading {}", input.display()))?;
    let input_bytes = data.len() as u64;
    let mut engine = Vec::new();
    let mut readings = 0;
    for &workers in &args.workers {
        let mut summaries = Vec::new();
        for _ in 0..args.runs {
            let s = engine_run(&args.query, &input, workers)?;
            eprintln!(
                "  {workers} worker(s): {:.0} readings/s",
                s.readings_per_second()
            );
            summaries.push(s);
        }
        summaries.sort_by(|a, b| a.readings_per_second().total_cmp(&b.readings_per_second()));
        let all: Vec<f64> = summaries
            .iter()
            .map(RunSummary::readings_per_second)
            .collect();
        let s = &summaries[summaries.len() / 2];
        readings = s.readings;
        let seconds = s.elapsed.as_secs_f64();
        engine.push(EngineRun {
            workers,
            seconds,
            readings_per_second: s.readings_per_second(),
            readings_per_second_per_core: s.readings_per_second() / workers as f64,
            input_mb_per_second: input_bytes as f64 / 1e6 / seconds,
            peak_rss_mb: s.peak_rss_bytes.map(|b| b as f64 / 1e6),
            state_bytes_per_key: s.state_bytes_per_group(),
            close_to_durable: s.close_to_durable_ms.map(Latency::from_ms),
            speedup: None,
            all_readings_per_second: all,
        });
    }
    let baseline = if args.no_baseline {
        None
    } else {
        let mut seconds = Vec::new();
        let mut rows = 0;
        for _ in 0..args.runs {
            let started = Instant::now();
            let result = baseline::aggregate(&data, 60_000, 5_000);
            seconds.push(started.elapsed().as_secs_f64());
            rows = result.rows();
            readings = readings.max(result.readings);
        }
        let seconds = median(&mut seconds);
        Some(BaselineRun {
            seconds,
            readings_per_second: readings as f64 / seconds,
            rows,
        })
    };
    let report = BenchReport {
        query: plan.file.display().to_string(),
        input: input.display().to_string(),
        input_bytes,
        readings,
        runs: args.runs,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        }),
        engine,
        baseline,
        cost_ratio: None,
    }
    .with_ratios();
    writeln!(std::io::stdout().lock(), "{report}")?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::render(&report))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
