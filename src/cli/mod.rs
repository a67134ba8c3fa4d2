//! Command-line definitions (clap) and one module per subcommand.

pub mod bench;
pub mod check;
pub mod ctl;
pub mod devices;
pub mod gen_cmd;
pub mod logging;
#[cfg(feature = "sql")]
pub mod query;
pub mod run;
pub mod serve;
pub mod sync;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use edgeflow::decode::Format;
use edgeflow::source::GeneratorConfig;
use edgeflow::source::generator::{DEFAULT_START_MS, TimestampFormat};

/// Edge stream processing: SQL-defined event-time windows over device readings,
/// written as Parquet.
#[derive(Debug, Parser)]
#[command(name = "edgeflow", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a query over an input to its end and write the windows as Parquet.
    Run(run::RunArgs),
    /// Run a live node: queries over devices polled, pushed or on MQTT, until stopped.
    Serve(serve::ServeArgs),
    /// Steer a running node: list, add, start, stop, remove and watch its queries.
    Ctl(ctl::CtlArgs),
    /// Validate a query file and print its plan.
    Check(check::CheckArgs),
    /// Write deterministic synthetic traffic readings as JSON lines (or CSV).
    Gen(gen_cmd::GenArgs),
    /// Run SQL over the Parquet outputs (local, in the bucket, or both); without SQL,
    /// an interactive shell.
    #[cfg(feature = "sql")]
    Query(query::QueryArgs),
    /// List the tables `query` sees.
    #[cfg(feature = "sql")]
    Tables(query::TablesArgs),
    /// `query` and `tables` in a build without them: says so rather than "unrecognized
    /// subcommand".
    #[cfg(not(feature = "sql"))]
    #[command(
        name = "query",
        alias = "tables",
        hide = true,
        disable_help_flag = true
    )]
    WithoutSql {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Upload an output folder's pending files to object storage.
    Sync(sync::SyncArgs),
    /// Show an output folder's sync journal: pending, uploaded, last error.
    Status(sync::StatusArgs),
    /// Measure the pipeline end to end at several worker counts, next to a plain loop.
    Bench(bench::BenchArgs),
    /// Simulate a device fleet: answer polls over HTTP, or publish readings over MQTT or
    /// HTTP push.
    Devices(devices::DevicesArgs),
}

/// Calls `on_signal` with the signal's number (2 or 15) on every SIGINT and SIGTERM,
/// from a thread of its own.
pub fn on_signals(on_signal: impl Fn(i32) + Send + 'static) {
    std::thread::spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        runtime.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            loop {
                let number = tokio::select! {
                    _ = int.recv() => 2,
                    _ = term.recv() => 15,
                };
                on_signal(number);
            }
        });
    });
}

/// timely's cluster settings: one run's workers over several processes.
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Processes in the cluster, each with `--workers` threads (timely's cluster mode;
    /// every process is started with the same arguments but `--process`, and on one
    /// host its own `--output` and, for a live node, `--listen`).
    #[arg(long, default_value_t = 1, requires = "hostfile")]
    pub processes: usize,
    /// This process's index in the cluster, from 0.
    #[arg(long, default_value_t = 0, requires = "hostfile")]
    pub process: usize,
    /// The cluster's processes, one `host:port` per line in process order (the same
    /// file for every process; each listens on its own line).
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,
    /// How long a process waits for the others to start and connect.
    #[arg(long, default_value = "60s", value_parser = crate::cli::duration, hide_short_help = true)]
    pub connect_timeout: std::time::Duration,
}

impl ClusterArgs {
    /// The cluster these settings describe; none for a single process.
    pub fn cluster(&self) -> anyhow::Result<Option<edgeflow::cluster::Cluster>> {
        let Some(hostfile) = &self.hostfile else {
            return Ok(None);
        };
        if self.processes == 0 {
            return Err(Usage("--processes must be at least 1".into()).into());
        }
        let cluster = edgeflow::cluster::Cluster::from_hostfile(
            hostfile,
            self.processes,
            self.process,
            self.connect_timeout,
        )
        .map_err(edgeflow::Error::from)?;
        Ok((cluster.processes() > 1).then_some(cluster))
    }
}

/// Settings of the synthetic reading generator, shared by `run` and `gen`.
#[derive(Debug, Clone, Args)]
pub struct GeneratorArgs {
    /// Distinct devices.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub devices: u64,
    /// Readings to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub readings: u64,
    /// Readings per second of event time, over all devices.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Event times are up to this many milliseconds out of order.
    #[arg(long, default_value_t = 2_000)]
    pub disorder_ms: u64,
    /// Fraction of readings that arrive one to ten minutes late.
    #[arg(long, default_value_t = 0.0005)]
    pub late_fraction: f64,
    /// Random seed; the same seed gives the same readings.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Event time of the first reading (RFC 3339).
    #[arg(long, default_value = "2026-01-01T00:00:00Z", value_parser = parse_start)]
    pub start: i64,
}

fn parse_start(text: &str) -> Result<i64, String> {
    edgeflow::time::parse_rfc3339(text.as_bytes())
        .map(|us| us.div_euclid(edgeflow::time::MICROS_PER_MILLI))
        .map_err(|e| e.to_string())
}

impl GeneratorArgs {
    /// The generator configuration.
    pub fn config(&self) -> Result<GeneratorConfig, String> {
        if !(self.rate.is_finite() && self.rate > 0.0) {
            return Err(format!(
                "--rate must be a positive number, not {}",
                self.rate
            ));
        }
        if !(0.0..=1.0).contains(&self.late_fraction) {
            return Err(format!(
                "--late-fraction must be between 0 and 1, not {}",
                self.late_fraction
            ));
        }
        Ok(GeneratorConfig {
            devices: self.devices,
            readings: self.readings,
            rate: self.rate,
            disorder_ms: self.disorder_ms,
            late_fraction: self.late_fraction,
            seed: self.seed,
            start_ms: self.start,
        })
    }
}

impl Default for GeneratorArgs {
    fn default() -> Self {
        let c = GeneratorConfig::default();
        GeneratorArgs {
            devices: c.devices,
            readings: c.readings,
            rate: c.rate,
            disorder_ms: c.disorder_ms,
            late_fraction: c.late_fraction,
            seed: c.seed,
            start: DEFAULT_START_MS,
        }
    }
}

/// Input format flags.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum GenFormat {
    /// JSON lines.
    Jsonl,
    /// CSV with a header.
    Csv,
}

impl From<GenFormat> for Format {
    fn from(f: GenFormat) -> Format {
        match f {
            GenFormat::Jsonl => Format::Jsonl,
            GenFormat::Csv => Format::Csv,
        }
    }
}

/// A path, or `-` for standard input/output.
pub fn is_dash(path: &std::path::Path) -> bool {
    path == std::path::Path::new("-")
}

/// Default output root of `run`.
pub fn default_output() -> PathBuf {
    PathBuf::from("edgeflow-out")
}

/// Timestamp format flag re-exported for `gen`.
pub type TsFormat = TimestampFormat;

/// A duration flag's value (`30s`, `5m`, `1h 30m`, `250ms`), with an error that says
/// what was expected.
pub fn duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("expected a duration like 30s, 5m or 1h30m, found '{text}' ({e})"))
}

/// A command line that asks for something `edgeflow` does not do: the user's to fix
/// (exit code 2), like a query error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);
