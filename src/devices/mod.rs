//! A simulated fleet of network devices, for demos, tests and benchmarks of the pollers
//! and ingest paths.
//!
//! The fleet model here is pure: which device is slow, failing or rebooting, how fast its
//! counters grow and what each answer holds are functions of the seed, the device number,
//! the device's own state and the time the caller passes in. [`server`] answers polls
//! with it (cumulative counters, `GET /device/{id}`), [`publish`] sends per-interval
//! readings to an MQTT broker or an HTTP ingest endpoint, and [`log`] records every
//! reading actually handed out, so a test can compute the answer it expects.

pub mod log;
pub mod publish;
pub mod server;

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::source::generator::splitmix;

/// A year in milliseconds: how far ahead the clock of an `ahead` device runs.
const YEAR_MS: i64 = 365 * 86_400_000;

/// Bytes per packet used to derive packet counts from byte counts (a mix of full-size
/// frames and small acknowledgements).
const BYTES_PER_PACKET: u64 = 1_200;

/// Why the simulator cannot start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevicesError {
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving connections failed.
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
    /// The readings log cannot be created or written.
    #[error("readings log {}: {source}", path.display())]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The MQTT broker URL or topic is unusable.
    #[error("MQTT: {0}")]
    Mqtt(String),
    /// The ingest endpoint refused a batch for good (a 4xx other than 429).
    #[error("{url} refused a batch: {status} {body}")]
    Refused {
        /// The endpoint.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The ingest endpoint kept failing after retries.
    #[error("{url}: {message}")]
    Push {
        /// The endpoint.
        url: String,
        /// What went wrong last.
        message: String,
    },
}

/// Width of the simulated interface counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CounterBits {
    /// 32-bit counters wrap modulo 2^32, like SNMP `ifInOctets`.
    Bits32,
    /// 64-bit counters, which in practice never wrap.
    #[default]
    Bits64,
}

impl FromStr for CounterBits {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "32" => Ok(CounterBits::Bits32),
            "64" => Ok(CounterBits::Bits64),
            other => Err(format!("counters have 32 or 64 bits, not {other:?}")),
        }
    }
}

impl CounterBits {
    fn wrap(self, value: u64) -> u64 {
        match self {
            CounterBits::Bits32 => value & 0xFFFF_FFFF,
            CounterBits::Bits64 => value,
        }
    }
}

/// A fault given to one device with `--fault ID=MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers after the slow delay.
    Slow,
    /// Never answers: the request is held open until shutdown.
    Dead,
    /// Answers 500.
    Status500,
    /// Answers 200 with an HTML page.
    Html,
    /// Answers 200 with a JSON body of about 10 MB.
    Huge,
    /// Answers 200 with truncated JSON.
    Broken,
    /// Its clock runs a year ahead.
    Ahead,
    /// Its counters restart from 0 on every third request.
    Reboot,
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Ok(match text {
            "slow" => Fault::Slow,
            "dead" => Fault::Dead,
            "500" => Fault::Status500,
            "html" => Fault::Html,
            "huge" => Fault::Huge,
            "broken" => Fault::Broken,
            "ahead" => Fault::Ahead,
            "reboot" => Fault::Reboot,
            other => {
                return Err(format!(
                    "unknown fault {other:?}: one of slow, dead, 500, html, huge, broken, ahead, reboot"
                ));
            }
        })
    }
}

/// `ID=MODE`: a fault of one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultSpec {
    /// The device number.
    pub device: u64,
    /// What is wrong with it.
    pub fault: Fault,
}

impl FromStr for FaultSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (id, mode) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not ID=MODE"))?;
        let device = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a device number"))?;
        Ok(FaultSpec {
            device,
            fault: mode.trim().parse()?,
        })
    }
}

/// What the fleet looks like. Fractions pick exactly `round(fraction * devices)` devices,
/// chosen from the seed; explicit faults come on top.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// Devices `0..devices` (default 1000).
    pub devices: u64,
    /// Random seed: the same seed gives the same fleet (default 42).
    pub seed: u64,
    /// Fraction of devices that answer after the slow delay (default 0).
    pub slow: f64,
    /// Fraction of devices that answer 500 (default 0).
    pub failing: f64,
    /// Fraction of devices whose counters restart near 0 now and then (default 0).
    pub rebooting: f64,
    /// A rebooting device restarts about every this many requests (default 20).
    pub reboot_every: u64,
    /// Fraction of devices whose clock is off by `clock_skew`, ahead or behind (default 0).
    pub skewed: f64,
    /// How far off a skewed clock is (default 5 minutes).
    pub clock_skew: Duration,
    /// Counter width (default 64 bits).
    pub counter_bits: CounterBits,
    /// Whether readings carry `ts` (default true).
    pub clock: bool,
    /// Whether readings carry `device_id` (default true).
    pub device_id: bool,
    /// Faults of single devices (default none); a later one for the same device wins
    /// where they conflict.
    pub faults: Vec<FaultSpec>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            devices: 1_000,
            seed: 42,
            slow: 0.0,
            failing: 0.0,
            rebooting: 0.0,
            reboot_every: 20,
            skewed: 0.0,
            clock_skew: Duration::from_secs(300),
            counter_bits: CounterBits::Bits64,
            clock: true,
            device_id: true,
            faults: Vec::new(),
        }
    }
}

/// How a device answers a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A valid reading.
    Reading,
    /// Never: the request hangs.
    Dead,
    /// HTTP 500.
    Status500,
    /// An HTML page with status 200.
    Html,
    /// About 10 MB of JSON.
    Huge,
    /// Truncated JSON.
    Broken,
}

/// When a device's counters restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reboot {
    /// Never.
    Never,
    /// About every this many requests, to a small value.
    About(u64),
    /// On every third request, to exactly 0.
    EveryThird,
}

/// The fixed traits of one device, drawn from the seed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Profile {
    /// Mean received bytes per second.
    pub bytes_in_per_s: f64,
    /// Mean sent bytes per second.
    pub bytes_out_per_s: f64,
    /// Typical latency, hundredths of a millisecond.
    pub latency_centi: u64,
    /// Device clock minus real time, milliseconds.
    pub clock_offset_ms: i64,
    /// How it answers.
    pub answer: Answer,
    /// Whether it answers late.
    pub slow: bool,
    /// When its counters restart.
    pub reboot: Reboot,
    /// Uptime before the simulator started, seconds: the initial counters are this much
    /// traffic, so they don't start at 0.
    pub uptime_s: f64,
}

/// The changing part of one device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceState {
    bytes_in: u64,
    bytes_out: u64,
    packets: u64,
    requests: u64,
    next_reboot: u64,
    /// Time of the previous reading, microseconds since the simulator started.
    last_us: u64,
    rng: u64,
}

/// One reading as handed out: cumulative counters when polled, per-interval amounts when
/// published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Device number.
    pub device: u64,
    /// Device clock, epoch milliseconds; `None` for devices without a clock.
    pub ts_ms: Option<i64>,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Packets, both directions.
    pub packets: u64,
    /// Latency, hundredths of a millisecond.
    pub latency_centi: u64,
}

impl Reading {
    /// Latency in milliseconds, exactly as its two-decimal text parses.
    pub fn latency_ms(&self) -> f64 {
        self.latency_centi as f64 / 100.0
    }
}

/// Traffic in one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Traffic {
    bytes_in: u64,
    bytes_out: u64,
    packets: u64,
}

/// A uniform draw in `[0, 1)`.
fn unit(state: &mut u64) -> f64 {
    (splitmix(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// The random stream of `device` for one purpose (`salt`), so adding a draw for one trait
/// does not change the others.
fn stream(seed: u64, device: u64, salt: u64) -> u64 {
    let mut s = seed ^ device.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ salt;
    splitmix(&mut s)
}

const SALT_RATE: u64 = 0x1000;
const SALT_SLOW: u64 = 0x2000;
const SALT_FAILING: u64 = 0x3000;
const SALT_REBOOTING: u64 = 0x4000;
const SALT_SKEWED: u64 = 0x5000;
const SALT_STATE: u64 = 0x6000;

/// The fleet: every device's profile, validated.
#[derive(Clone, Debug)]
pub struct Fleet {
    config: FleetConfig,
    profiles: Vec<Profile>,
}

impl Fleet {
    /// Checks the settings and draws every device's profile.
    pub fn new(config: FleetConfig) -> Result<Fleet, DevicesError> {
        if config.devices == 0 {
            return Err(DevicesError::Config("--devices must be at least 1".into()));
        }
        let count = usize::try_from(config.devices)
            .map_err(|_| DevicesError::Config("--devices is too large".into()))?;
        for (name, f) in [
            ("--slow", config.slow),
            ("--failing", config.failing),
            ("--rebooting", config.rebooting),
            ("--skewed", config.skewed),
        ] {
            if !(0.0..=1.0).contains(&f) {
                return Err(DevicesError::Config(format!(
                    "{name} must be a fraction between 0 and 1, not {f}"
                )));
            }
        }
        if config.reboot_every == 0 {
            return Err(DevicesError::Config(
                "--reboot-every must be at least 1".into(),
            ));
        }
        if let Some(bad) = config.faults.iter().find(|f| f.device >= config.devices) {
            return Err(DevicesError::Config(format!(
                "--fault {}: there are only devices 0..{}",
                bad.device,
                config.devices - 1
            )));
        }
        let skew_ms = i64::try_from(config.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let mut profiles: Vec<Profile> = (0..config.devices)
            .map(|d| {
                let mut s = stream(config.seed, d, SALT_RATE);
                // Log-uniform over two orders of magnitude: a fleet has a few busy
                // uplinks and many quiet sensors.
                let bytes_in_per_s = 1_000.0 * 100f64.powf(unit(&mut s));
                let bytes_out_per_s = bytes_in_per_s * (0.05 + 0.5 * unit(&mut s));
                let latency_centi = 100 + (4_900.0 * unit(&mut s) * unit(&mut s)) as u64;
                let uptime_s = 3_600.0 + 30.0 * 86_400.0 * unit(&mut s);
                Profile {
                    bytes_in_per_s,
                    bytes_out_per_s,
                    latency_centi,
                    clock_offset_ms: 0,
                    answer: Answer::Reading,
                    slow: false,
                    reboot: Reboot::Never,
                    uptime_s,
                }
            })
            .collect();
        for d in pick(config.seed, count, config.slow, SALT_SLOW) {
            profiles[d].slow = true;
        }
        for d in pick(config.seed, count, config.failing, SALT_FAILING) {
            profiles[d].answer = Answer::Status500;
        }
        for d in pick(config.seed, count, config.rebooting, SALT_REBOOTING) {
            profiles[d].reboot = Reboot::About(config.reboot_every);
        }
        for d in pick(config.seed, count, config.skewed, SALT_SKEWED) {
            let behind = stream(config.seed, d as u64, SALT_SKEWED + 1) & 1 == 1;
            profiles[d].clock_offset_ms = if behind { -skew_ms } else { skew_ms };
        }
        for spec in &config.faults {
            // In range: checked above.
            let p = &mut profiles[spec.device as usize];
            match spec.fault {
                Fault::Slow => p.slow = true,
                Fault::Dead => p.answer = Answer::Dead,
                Fault::Status500 => p.answer = Answer::Status500,
                Fault::Html => p.answer = Answer::Html,
                Fault::Huge => p.answer = Answer::Huge,
                Fault::Broken => p.answer = Answer::Broken,
                Fault::Ahead => p.clock_offset_ms = p.clock_offset_ms.saturating_add(YEAR_MS),
                Fault::Reboot => p.reboot = Reboot::EveryThird,
            }
        }
        Ok(Fleet { config, profiles })
    }

    /// The settings.
    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// Number of devices.
    pub fn devices(&self) -> u64 {
        self.config.devices
    }

    /// The profile of `device`, if it exists.
    pub fn profile(&self, device: u64) -> Option<&Profile> {
        usize::try_from(device)
            .ok()
            .and_then(|d| self.profiles.get(d))
    }

    /// The state of `device` when the simulator starts: counters already show the
    /// traffic of its uptime.
    pub fn initial_state(&self, device: u64) -> DeviceState {
        let mut rng = stream(self.config.seed, device, SALT_STATE);
        let (bytes_in, bytes_out) = match self.profile(device) {
            Some(p) => (
                (p.bytes_in_per_s * p.uptime_s) as u64,
                (p.bytes_out_per_s * p.uptime_s) as u64,
            ),
            None => (0, 0),
        };
        let packets = (bytes_in + bytes_out) / BYTES_PER_PACKET + splitmix(&mut rng) % 1_000;
        let next_reboot = match self.profile(device).map(|p| p.reboot) {
            Some(Reboot::About(every)) => next_reboot(0, every, &mut rng),
            _ => u64::MAX,
        };
        DeviceState {
            bytes_in,
            bytes_out,
            packets,
            requests: 0,
            next_reboot,
            last_us: 0,
            rng,
        }
    }

    /// Traffic of `device` over `elapsed_us`, with some noise around its mean rates.
    fn traffic(&self, p: &Profile, state: &mut DeviceState, elapsed_us: u64) -> Traffic {
        let seconds = elapsed_us as f64 / 1e6;
        let noise_in = 0.8 + 0.4 * unit(&mut state.rng);
        let noise_out = 0.8 + 0.4 * unit(&mut state.rng);
        let bytes_in = (p.bytes_in_per_s * seconds * noise_in).round() as u64;
        let bytes_out = (p.bytes_out_per_s * seconds * noise_out).round() as u64;
        let extra = splitmix(&mut state.rng) % 4;
        let packets = if bytes_in + bytes_out > 0 {
            (bytes_in + bytes_out) / BYTES_PER_PACKET + extra
        } else {
            0
        };
        Traffic {
            bytes_in,
            bytes_out,
            packets,
        }
    }

    fn latency(&self, p: &Profile, state: &mut DeviceState) -> u64 {
        let u = unit(&mut state.rng);
        // One answer in fifty is a spike: queues fill up now and then.
        let factor = if u < 0.02 {
            5.0 + 10.0 * unit(&mut state.rng)
        } else {
            0.5 + u
        };
        ((p.latency_centi as f64 * factor) as u64).max(1)
    }

    fn clock(&self, p: &Profile, wall_ms: i64) -> Option<i64> {
        self.config
            .clock
            .then(|| wall_ms.saturating_add(p.clock_offset_ms))
    }

    /// Answers a poll of `device` at `now_us` (microseconds since the simulator started,
    /// monotonic) and real time `wall_ms`: the counters grow by the traffic since the
    /// device's previous poll, restart if it reboots now, and are reported modulo the
    /// counter width. `None` for a device that does not exist.
    pub fn poll(
        &self,
        device: u64,
        state: &mut DeviceState,
        now_us: u64,
        wall_ms: i64,
    ) -> Option<Reading> {
        let p = self.profile(device)?;
        let elapsed = now_us.saturating_sub(state.last_us);
        state.last_us = state.last_us.max(now_us);
        state.requests += 1;
        let t = self.traffic(p, state, elapsed);
        match p.reboot {
            Reboot::EveryThird if state.requests.is_multiple_of(3) => {
                state.bytes_in = 0;
                state.bytes_out = 0;
                state.packets = 0;
            }
            Reboot::About(every) if state.requests >= state.next_reboot => {
                // Up a few seconds since the restart: near 0, not exactly 0.
                let up = 1.0 + 9.0 * unit(&mut state.rng);
                state.bytes_in = (p.bytes_in_per_s * up) as u64;
                state.bytes_out = (p.bytes_out_per_s * up) as u64;
                state.packets = (state.bytes_in + state.bytes_out) / BYTES_PER_PACKET;
                state.next_reboot = next_reboot(state.requests, every, &mut state.rng);
            }
            _ => {
                state.bytes_in = state.bytes_in.wrapping_add(t.bytes_in);
                state.bytes_out = state.bytes_out.wrapping_add(t.bytes_out);
                state.packets = state.packets.wrapping_add(t.packets);
            }
        }
        let bits = self.config.counter_bits;
        Some(Reading {
            device,
            ts_ms: self.clock(p, wall_ms),
            bytes_in: bits.wrap(state.bytes_in),
            bytes_out: bits.wrap(state.bytes_out),
            packets: bits.wrap(state.packets),
            latency_centi: self.latency(p, state),
        })
    }

    /// A published reading of `device`: the traffic of the last `elapsed_us`
    /// microseconds, stamped with its clock at `wall_ms`. `None` for a device that does
    /// not exist.
    pub fn interval(
        &self,
        device: u64,
        state: &mut DeviceState,
        elapsed_us: u64,
        wall_ms: i64,
    ) -> Option<Reading> {
        let p = self.profile(device)?;
        state.requests += 1;
        let t = self.traffic(p, state, elapsed_us);
        Some(Reading {
            device,
            ts_ms: self.clock(p, wall_ms),
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
            packets: t.packets,
            latency_centi: self.latency(p, state),
        })
    }

    /// Appends `reading` as one JSON object (no newline), with the fields the fleet's
    /// devices report.
    pub fn write_json(&self, reading: &Reading, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = self.try_write_json(reading, out);
    }

    fn try_write_json(&self, r: &Reading, out: &mut Vec<u8>) -> std::io::Result<()> {
        out.push(b'{');
        let mut sep = "";
        if self.config.device_id {
            write!(out, "\"device_id\":\"{}\"", DeviceName(r.device))?;
            sep = ",";
        }
        if let Some(ts) = r.ts_ms {
            write!(out, "{sep}\"ts\":{ts}")?;
            sep = ",";
        }
        write!(
            out,
            "{sep}\"bytes_in\":{},\"bytes_out\":{},\"packets\":{},\"latency_ms\":{}.{:02}}}",
            r.bytes_in,
            r.bytes_out,
            r.packets,
            r.latency_centi / 100,
            r.latency_centi % 100
        )
    }
}

/// `dev-000042`, without allocating.
#[derive(Clone, Copy, Debug)]
pub struct DeviceName(pub u64);

impl fmt::Display for DeviceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dev-{:06}", self.0)
    }
}

/// The request count of the next reboot: `every` on average, at least 1 away.
fn next_reboot(now: u64, every: u64, rng: &mut u64) -> u64 {
    let half = every / 2;
    now + (half + splitmix(rng) % (every + 1)).max(1)
}

/// Exactly `round(fraction * count)` devices, those with the lowest draw of `salt`.
fn pick(seed: u64, count: usize, fraction: f64, salt: u64) -> Vec<usize> {
    let k = ((fraction * count as f64).round() as usize).min(count);
    if k == 0 {
        return Vec::new();
    }
    let mut draws: Vec<(u64, usize)> = (0..count)
        .map(|d| (stream(seed, d as u64, salt), d))
        .collect();
    if k < count {
        draws.select_nth_unstable(k - 1);
    }
    draws.truncate(k);
    draws.into_iter().map(|(_, d)| d).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(config: FleetConfig) -> Fleet {
        Fleet::new(config).unwrap_or_else(|e| panic!("{e}"))
    }

    fn polls(fleet: &Fleet, device: u64, n: u64) -> Vec<Reading> {
        let mut state = fleet.initial_state(device);
        (1..=n)
            .filter_map(|i| fleet.poll(device, &mut state, i * 1_000_000, 1_000 * i as i64))
            .collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_fleet_and_readings() {
        let config = FleetConfig {
            devices: 200,
            slow: 0.1,
            failing: 0.1,
            rebooting: 0.1,
            skewed: 0.1,
            ..FleetConfig::default()
        };
        let a = fleet(config.clone());
        let b = fleet(config.clone());
        let c = fleet(FleetConfig { seed: 7, ..config });
        assert_eq!(a.profiles, b.profiles);
        assert_ne!(a.profiles, c.profiles);
        for d in [0, 17, 199] {
            assert_eq!(polls(&a, d, 50), polls(&b, d, 50));
            assert_ne!(polls(&a, d, 50), polls(&c, d, 50));
        }
    }

    #[test]
    fn fractions_pick_exact_counts() {
        let f = fleet(FleetConfig {
            devices: 1_000,
            slow: 0.1,
            failing: 0.05,
            rebooting: 0.2,
            skewed: 0.5,
            ..FleetConfig::default()
        });
        let count = |pred: &dyn Fn(&Profile) -> bool| f.profiles.iter().filter(|p| pred(p)).count();
        assert_eq!(count(&|p| p.slow), 100);
        assert_eq!(count(&|p| p.answer == Answer::Status500), 50);
        assert_eq!(count(&|p| matches!(p.reboot, Reboot::About(20))), 200);
        assert_eq!(count(&|p| p.clock_offset_ms != 0), 500);
        assert!(count(&|p| p.clock_offset_ms == 300_000) > 100);
        assert!(count(&|p| p.clock_offset_ms == -300_000) > 100);
    }

    #[test]
    fn rates_spread_over_two_orders_of_magnitude() {
        let f = fleet(FleetConfig::default());
        let rates: Vec<f64> = f.profiles.iter().map(|p| p.bytes_in_per_s).collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        assert!(min >= 1_000.0 && max <= 100_000.0, "{min} .. {max}");
        assert!(max / min > 50.0, "{min} .. {max}");
    }

    #[test]
    fn counters_never_decrease_without_reboot_or_wrap() {
        let f = fleet(FleetConfig {
            devices: 50,
            ..FleetConfig::default()
        });
        for d in 0..50 {
            let readings = polls(&f, d, 100);
            assert!(readings[0].bytes_in > 0, "counters start from the uptime");
            for w in readings.windows(2) {
                assert!(w[1].bytes_in > w[0].bytes_in, "device {d}: {w:?}");
                assert!(w[1].bytes_out >= w[0].bytes_out, "device {d}: {w:?}");
                assert!(w[1].packets >= w[0].packets, "device {d}: {w:?}");
                assert!(w[1].ts_ms > w[0].ts_ms);
            }
        }
    }

    #[test]
    fn counters_grow_by_rate_times_elapsed_time() {
        let f = fleet(FleetConfig::default());
        let p = f.profiles[3];
        let mut state = f.initial_state(3);
        let first = f
            .poll(3, &mut state, 1_000_000, 0)
            .unwrap_or_else(|| panic!());
        let later = f
            .poll(3, &mut state, 11_000_000, 0)
            .unwrap_or_else(|| panic!());
        let grown = (later.bytes_in - first.bytes_in) as f64;
        let expected = p.bytes_in_per_s * 10.0;
        assert!(
            (grown / expected - 1.0).abs() <= 0.21,
            "{grown} vs {expected}"
        );
        let packets = later.packets - first.packets;
        let bytes = grown as u64 + (later.bytes_out - first.bytes_out);
        assert!(packets >= bytes / 1_200 && packets <= bytes / 1_200 + 3);
    }

    #[test]
    fn rebooting_devices_restart_near_zero_about_every_n_requests() {
        let f = fleet(FleetConfig {
            devices: 10,
            rebooting: 1.0,
            reboot_every: 20,
            ..FleetConfig::default()
        });
        let readings = polls(&f, 4, 400);
        let drops: Vec<&[Reading]> = readings
            .windows(2)
            .filter(|w| w[1].bytes_in < w[0].bytes_in)
            .collect();
        assert!((10..=40).contains(&drops.len()), "{} reboots", drops.len());
        for w in drops {
            assert!(w[1].bytes_in <= 1_000_000, "restarted near 0: {w:?}");
        }
    }

    #[test]
    fn a_reboot_fault_restarts_from_zero_on_every_third_request() {
        let f = fleet(FleetConfig {
            devices: 10,
            faults: vec![FaultSpec {
                device: 2,
                fault: Fault::Reboot,
            }],
            ..FleetConfig::default()
        });
        let readings = polls(&f, 2, 9);
        for (i, r) in readings.iter().enumerate() {
            let zero = r.bytes_in == 0 && r.bytes_out == 0 && r.packets == 0;
            assert_eq!(zero, (i + 1) % 3 == 0, "request {}: {r:?}", i + 1);
        }
    }

    #[test]
    fn counters_of_32_bits_wrap() {
        let f = fleet(FleetConfig {
            devices: 100,
            counter_bits: CounterBits::Bits32,
            ..FleetConfig::default()
        });
        let mut wrapped = 0;
        for d in 0..100 {
            let mut state = f.initial_state(d);
            let mut last = None;
            // A day between polls: fast devices wrap.
            for i in 1..=20u64 {
                let r = f
                    .poll(d, &mut state, i * 86_400_000_000, 0)
                    .unwrap_or_else(|| panic!());
                assert!(r.bytes_in < 1 << 32);
                if last.is_some_and(|l| r.bytes_in < l) {
                    wrapped += 1;
                }
                last = Some(r.bytes_in);
            }
        }
        assert!(wrapped > 0);
    }

    #[test]
    fn faults_override_the_drawn_behaviour() {
        let faults = [
            "1=slow", "2=dead", "3=500", "4=html", "5=huge", "6=broken", "7=ahead",
        ]
        .iter()
        .map(|t| t.parse().unwrap_or_else(|e| panic!("{e}")))
        .collect();
        let f = fleet(FleetConfig {
            devices: 10,
            faults,
            ..FleetConfig::default()
        });
        let answers: Vec<Answer> = f.profiles.iter().map(|p| p.answer).collect();
        assert_eq!(
            &answers[..7],
            &[
                Answer::Reading,
                Answer::Reading,
                Answer::Dead,
                Answer::Status500,
                Answer::Html,
                Answer::Huge,
                Answer::Broken
            ]
        );
        assert!(f.profiles[1].slow && !f.profiles[0].slow);
        assert_eq!(f.profiles[7].clock_offset_ms, YEAR_MS);
        assert!("3=nope".parse::<FaultSpec>().is_err());
        assert!("x=500".parse::<FaultSpec>().is_err());
        let out_of_range = FleetConfig {
            devices: 10,
            faults: vec![FaultSpec {
                device: 10,
                fault: Fault::Dead,
            }],
            ..FleetConfig::default()
        };
        assert!(Fleet::new(out_of_range).is_err());
    }

    #[test]
    fn json_has_the_documented_fields() {
        let reading = Reading {
            device: 42,
            ts_ms: Some(1_767_225_600_123),
            bytes_in: 10,
            bytes_out: 20,
            packets: 3,
            latency_centi: 1_205,
        };
        let mut out = Vec::new();
        fleet(FleetConfig::default()).write_json(&reading, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"device_id":"dev-000042","ts":1767225600123,"bytes_in":10,"bytes_out":20,"packets":3,"latency_ms":12.05}"#
        );
        let bare = fleet(FleetConfig {
            clock: false,
            device_id: false,
            ..FleetConfig::default()
        });
        out.clear();
        bare.write_json(
            &Reading {
                ts_ms: None,
                latency_centi: 7,
                ..reading
            },
            &mut out,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            r#"{"bytes_in":10,"bytes_out":20,"packets":3,"latency_ms":0.07}"#
        );
    }

    #[test]
    fn interval_readings_are_amounts_not_totals() {
        let f = fleet(FleetConfig::default());
        let mut state = f.initial_state(9);
        let r = f
            .interval(9, &mut state, 10_000_000, 5)
            .unwrap_or_else(|| panic!());
        let expected = f.profiles[9].bytes_in_per_s * 10.0;
        assert!((r.bytes_in as f64 / expected - 1.0).abs() <= 0.21);
        assert_eq!(r.ts_ms, Some(5));
    }
}
