//! `edgeflow devices`: a simulated device fleet, polled over HTTP or publishing itself.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use edgeflow::devices::log::ReadingLog;
use edgeflow::devices::publish::{self, Limit, MqttConfig, Plan, PublishSummary, PushConfig};
use edgeflow::devices::server::{ServeConfig, Server};
use edgeflow::devices::{CounterBits, FaultSpec, Fleet, FleetConfig};

/// Arguments of `devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    /// Devices `0..N`, named `dev-000000`...
    #[arg(long, default_value_t = 1_000)]
    pub devices: u64,
    /// Random seed: the same seed gives the same fleet.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Serve mode: address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Serve mode: write the bound port here once listening (atomically).
    #[arg(long)]
    pub port_file: Option<PathBuf>,
    /// One JSON line per reading handed out (served with 200, published, or pushed and
    /// acknowledged).
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Fraction of devices that answer late.
    #[arg(long, default_value_t = 0.0)]
    pub slow: f64,
    /// How late slow devices answer.
    #[arg(long, default_value = "3s", value_parser = crate::cli::duration)]
    pub slow_delay: Duration,
    /// Fraction of devices that answer 500.
    #[arg(long, default_value_t = 0.0)]
    pub failing: f64,
    /// Fraction of devices whose counters restart near 0 now and then.
    #[arg(long, default_value_t = 0.0)]
    pub rebooting: f64,
    /// A rebooting device restarts about every this many requests.
    #[arg(long, default_value_t = 20)]
    pub reboot_every: u64,
    /// Fraction of devices whose clock is off by --clock-skew (ahead or behind).
    #[arg(long, default_value_t = 0.0)]
    pub skewed: f64,
    /// How far off a skewed device's clock is.
    #[arg(long, default_value = "5m", value_parser = crate::cli::duration)]
    pub clock_skew: Duration,
    /// Counter width: 32-bit counters wrap modulo 2^32.
    #[arg(long, default_value = "64")]
    pub counter_bits: CounterBits,
    /// Devices have no clock: readings carry no `ts`.
    #[arg(long)]
    pub no_clock: bool,
    /// Readings carry no `device_id`.
    #[arg(long)]
    pub no_device_id: bool,
    /// A fault of one device, ID=MODE with MODE one of slow, dead, 500, html, huge,
    /// broken, ahead, reboot. Repeatable.
    #[arg(long = "fault", value_name = "ID=MODE")]
    pub faults: Vec<FaultSpec>,
    /// Publish mode: MQTT broker, mqtt://HOST:PORT.
    #[arg(long, conflicts_with = "push")]
    pub mqtt: Option<String>,
    /// MQTT topic; `{id}` becomes the device name.
    #[arg(long, default_value = "devices/{id}/traffic")]
    pub topic: String,
    /// MQTT quality of service.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub qos: u8,
    /// MQTT client id (default edgeflow-devices-PID).
    #[arg(long)]
    pub client_id: Option<String>,
    /// Publish mode: POST NDJSON batches to this URL.
    #[arg(long)]
    pub push: Option<String>,
    /// Push mode: readings per POST.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,
    /// Push mode: gzip the bodies.
    #[arg(long)]
    pub gzip: bool,
    /// Push mode: batches in flight at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub concurrency: u64,
    /// Push mode: name of the environment variable holding the bearer token.
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
    /// Publish modes: readings per second over the whole fleet.
    #[arg(long, default_value_t = 1_000.0)]
    pub rate: f64,
    /// Publish modes: readings in total.
    #[arg(long, conflicts_with = "duration")]
    pub readings: Option<u64>,
    /// Publish modes: publish for this long.
    #[arg(long = "for", id = "duration", value_parser = crate::cli::duration)]
    pub duration: Option<Duration>,
    /// Publish modes: print the summary as JSON on standard output.
    #[arg(long)]
    pub json: bool,
}

impl DevicesArgs {
    fn fleet(&self) -> anyhow::Result<Fleet> {
        Ok(Fleet::new(FleetConfig {
            devices: self.devices,
            seed: self.seed,
            slow: self.slow,
            failing: self.failing,
            rebooting: self.rebooting,
            reboot_every: self.reboot_every,
            skewed: self.skewed,
            clock_skew: self.clock_skew,
            counter_bits: self.counter_bits,
            clock: !self.no_clock,
            device_id: !self.no_device_id,
            faults: self.faults.clone(),
        })?)
    }

    fn plan(&self) -> anyhow::Result<Plan> {
        let limit = match (self.readings, self.duration) {
            (Some(n), _) => Limit::Readings(n),
            (None, Some(d)) => Limit::For(d),
            (None, None) => anyhow::bail!("publish modes need --readings N or --for DURATION"),
        };
        Ok(Plan {
            rate: self.rate,
            limit,
        })
    }
}

/// Runs `devices`.
pub fn devices(args: &DevicesArgs) -> anyhow::Result<()> {
    let fleet = args.fleet()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let log = args.log.as_deref().map(ReadingLog::create).transpose()?;
    let sender = log.as_ref().map(ReadingLog::sender);
    let outcome = if let Some(url) = &args.mqtt {
        let config = MqttConfig {
            url: url.clone(),
            topic: args.topic.clone(),
            qos: args.qos,
            client_id: args
                .client_id
                .clone()
                .unwrap_or_else(|| format!("edgeflow-devices-{}", std::process::id())),
        };
        let plan = args.plan()?;
        runtime
            .block_on(publish::publish_mqtt(fleet, &config, plan, sender))
            .map(Some)
    } else if let Some(url) = &args.push {
        let token = match &args.token_env {
            Some(name) => Some(
                std::env::var(name)
                    .with_context(|| format!("--token-env {name}: the variable is not set"))?,
            ),
            None => None,
        };
        let config = PushConfig {
            url: url.clone(),
            batch: usize::try_from(args.batch).unwrap_or(usize::MAX),
            gzip: args.gzip,
            token,
            concurrency: usize::try_from(args.concurrency).unwrap_or(1),
        };
        let plan = args.plan()?;
        runtime
            .block_on(publish::push(fleet, &config, plan, sender))
            .map(Some)
    } else {
        runtime.block_on(serve(fleet, args, sender))?;
        Ok(None)
    };
    // Flush the log before reporting anything, whatever the outcome: a failed push
    // still leaves a log of what was acknowledged.
    let logged = log.map(ReadingLog::finish).transpose();
    let summary = outcome?;
    logged?;
    if let Some(summary) = summary {
        report(&summary, args.json)?;
    }
    Ok(())
}

async fn serve(
    fleet: Fleet,
    args: &DevicesArgs,
    log: Option<edgeflow::devices::log::LogSender>,
) -> anyhow::Result<()> {
    let devices = fleet.devices();
    let config = ServeConfig {
        listen: args.listen,
        slow_delay: args.slow_delay,
    };
    let server = Server::bind(fleet, &config, log).await?;
    let addr = server.local_addr()?;
    if let Some(path) = &args.port_file {
        write_atomically(path, &format!("{}\n", addr.port()))?;
    }
    eprintln!("edgeflow devices: {devices} devices listening on http://{addr}/device/{{id}}");
    let summary = server.run(shutdown_signal()).await?;
    eprintln!(
        "edgeflow devices: stopped after serving {} readings",
        summary.readings
    );
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Cannot listen for SIGTERM; only SIGINT stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Writes a temporary file beside `path` and renames it, so readers never see a
/// partial file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".tmp{}", std::process::id()));
    let temp = PathBuf::from(temp);
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, path))
        .with_context(|| format!("writing {}", path.display()))
}

fn report(summary: &PublishSummary, json: bool) -> anyhow::Result<()> {
    eprintln!(
        "edgeflow devices: {} readings sent, {} acknowledged in {:.2} s ({:.0} readings/s)",
        summary.sent, summary.acknowledged, summary.elapsed_s, summary.readings_per_s
    );
    if let (Some(p50), Some(p99)) = (summary.ack_p50_ms, summary.ack_p99_ms) {
        eprintln!("edgeflow devices: acknowledgement latency p50 {p50:.1} ms, p99 {p99:.1} ms");
    }
    if json {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, summary)?;
        writeln!(out)?;
    }
    Ok(())
}
