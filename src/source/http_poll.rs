//! `connector = 'http_poll'`: polls every device's HTTP endpoint once per interval.
//!
//! Rounds are spread over the interval: device `i` of `n` is due `i/n` of the way into
//! each round, so a fleet is polled at an even rate instead of all at once. Each poll is
//! its own task holding one of `concurrency` permits and bounded by `timeout`, so a slow
//! or dead device never delays another; a device whose previous poll is still running
//! when it is due again is skipped and counted, never queued behind itself. Anything but
//! a JSON answer (an error status, HTML, a body over the limit, broken JSON, a timeout)
//! is counted for that device and becomes a dead letter naming its URL.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

use super::live::{Arrival, Feed, Reject};
use super::records::{Counters, Shaper, cut, split_body};
use crate::query::SourceSchema;
use crate::query::connector::{DeviceIds, HttpPollSpec, PollTimestamp};

/// Polls due within one tick go out together.
const TICK: Duration = Duration::from_millis(100);

/// Poll durations kept for the figures: the most recent ones.
pub const LATENCY_SAMPLES: usize = 16_384;

/// A device is reported as not answering after this many failed polls in a row.
pub const SILENT_AFTER: u64 = 3;

/// Why a poller cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// The device list file could not be read.
    #[error("cannot read the device list {path}: {source}")]
    DeviceList {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The device list is empty.
    #[error("the device list {0} names no device")]
    NoDevices(String),
    /// A named environment variable is not set.
    #[error("environment variable {0} (named by bearer_token_env) is not set")]
    MissingEnv(String),
    /// The CA file could not be used.
    #[error("cannot use ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// One polled device and what happened to it.
#[derive(Debug)]
struct Device {
    /// The id put in the URL template, or the device list's line.
    id: String,
    url: String,
    in_flight: AtomicBool,
    ok: AtomicU64,
    failed: AtomicU64,
    skipped: AtomicU64,
    failing_in_a_row: AtomicU64,
    last_error: std::sync::Mutex<Option<String>>,
}

/// What a device's polls came to, for the summary.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceReport {
    /// The device's id.
    pub id: String,
    /// Its URL.
    pub url: String,
    /// Polls answered with readings.
    pub ok: u64,
    /// Polls that failed.
    pub failed: u64,
    /// Times it was due while its previous poll was still running.
    pub skipped: u64,
    /// Failed polls since its last good one.
    pub failing_in_a_row: u64,
    /// The last failure.
    pub last_error: Option<String>,
}

/// What a poller did, for the summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PollReport {
    /// Devices this process polls (in a cluster, its share of the list).
    pub devices: u64,
    /// Rounds started.
    pub rounds: u64,
    /// Polls answered with readings.
    pub polls_ok: u64,
    /// Polls that failed (timeouts, errors, bad bodies).
    pub polls_failed: u64,
    /// Polls skipped because the device's previous poll was still running.
    pub polls_skipped: u64,
    /// Polls held back because the queries could not take more readings yet.
    pub polls_held: u64,
    /// Counters that went down (device reboots).
    pub counter_resets: u64,
    /// 32-bit counters that wrapped.
    pub counter_wraps: u64,
    /// Round completion time (first poll due to last answer), milliseconds: median.
    /// Polls are spread over the interval, so a healthy round takes about one interval.
    pub round_p50_ms: Option<f64>,
    /// ... and 99th percentile.
    pub round_p99_ms: Option<f64>,
    /// One poll, request to answer (or failure), milliseconds, over the last
    /// [`LATENCY_SAMPLES`] polls: median.
    pub poll_p50_ms: Option<f64>,
    /// ... and 99th percentile.
    pub poll_p99_ms: Option<f64>,
    /// Devices that failed their last [`SILENT_AFTER`] polls or more.
    pub silent_devices: Vec<DeviceReport>,
}

/// Polls a fleet into a [`Feed`].
pub struct Poller {
    spec: HttpPollSpec,
    table: String,
    devices: Vec<Arc<Device>>,
    client: reqwest::Client,
    shaper: Shaper,
    counters: Counters,
    feed: Arc<Feed>,
    held: AtomicU64,
    rounds: AtomicU64,
    round_ms: std::sync::Mutex<Vec<f64>>,
    poll_ms: std::sync::Mutex<std::collections::VecDeque<f64>>,
}

impl Poller {
    /// Prepares to poll the devices of `spec` for `schema`'s table into `feed`, taking
    /// each device's next counter delta from `baselines` (what the table's log kept).
    pub fn new(
        spec: &HttpPollSpec,
        schema: &SourceSchema,
        feed: Arc<Feed>,
        share: super::ProcessShare,
        baselines: &super::baselines::Baselines,
    ) -> Result<Arc<Poller>, PollError> {
        let mut devices = device_list(spec)?;
        devices.retain(|d| share.polls(&d.id));
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &spec.headers {
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                reqwest::header::HeaderValue::from_str(value),
            ) {
                headers.insert(n, v);
            }
        }
        if let Some(env) = &spec.bearer_token_env {
            let token = std::env::var(env).map_err(|_| PollError::MissingEnv(env.clone()))?;
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| PollError::MissingEnv(env.clone()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("edgeflow/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(spec.concurrency.min(1024));
        if let Some(ca) = &spec.ca_file {
            let fail = |reason: String| PollError::CaFile {
                path: ca.display().to_string(),
                reason,
            };
            let pem = std::fs::read(ca).map_err(|e| fail(e.to_string()))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| fail(e.to_string()))?;
            builder = builder.add_root_certificate(cert);
        }
        let client = builder
            .build()
            .map_err(|e| PollError::Client(e.to_string()))?;
        let mut shaper =
            Shaper::new(schema).with_poll_time(spec.timestamp == PollTimestamp::PollTime);
        if !spec.counters.is_empty() {
            shaper = shaper.with_counters(
                schema,
                &spec.counters,
                spec.counter_bits,
                spec.interval_column,
            );
        }
        Ok(Arc::new(Poller {
            spec: spec.clone(),
            table: schema.name.clone(),
            devices,
            client,
            counters: Counters::resumed(&shaper, baselines),
            shaper,
            feed,
            held: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            round_ms: std::sync::Mutex::new(Vec::new()),
            poll_ms: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }))
    }

    /// Devices polled.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Polls round after round until `stop` turns true, then waits for the polls in
    /// flight (each bounded by the timeout).
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        if self.devices.is_empty() {
            // A cluster process whose share of the list is empty: its rounds would have
            // nothing to wait on.
            tracing::info!(table = %self.table, "No device falls to this process of the cluster: it polls none");
            while !*stop.borrow() {
                if stop.changed().await.is_err() {
                    break;
                }
            }
            return;
        }
        let n = self.devices.len();
        let interval = Duration::from_micros(u64::try_from(self.spec.interval).unwrap_or(1).max(1));
        let permits = Arc::new(Semaphore::new(self.spec.concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        let start = Instant::now();
        tracing::info!(table = %self.table, devices = n, interval = ?interval, "Polling devices");
        'rounds: for round in 0u64.. {
            let round_start = start + interval * u32::try_from(round).unwrap_or(u32::MAX);
            self.rounds.fetch_add(1, Ordering::Relaxed);
            let pending = Arc::new(RoundClock {
                left: AtomicU64::new(n as u64),
                started: round_start,
                poller: self.clone(),
            });
            let mut held = false;
            for (i, device) in self.devices.iter().enumerate() {
                // Due times are gathered into ticks: a handful of polls per wake-up
                // instead of one wake-up per device, still spread over the interval.
                let offset = interval.mul_f64(i as f64 / n as f64);
                let ticks = (offset.as_secs_f64() / TICK.as_secs_f64()).ceil();
                let due = round_start + TICK.mul_f64(ticks).min(interval);
                tokio::select! {
                    _ = tokio::time::sleep_until(due) => {}
                    _ = stop.changed() => break 'rounds,
                }
                if *stop.borrow() {
                    break 'rounds;
                }
                while tasks.try_join_next().is_some() {}
                if device.in_flight.swap(true, Ordering::AcqRel) {
                    device.skipped.fetch_add(1, Ordering::Relaxed);
                    pending.done();
                    continue;
                }
                if !self.feed.has_room(self.spec.max_body) {
                    // The queries are behind, or the local disk quota is full: asking a
                    // device now would mean holding or dropping its answer. It is asked
                    // again next round; its devices are not quiet (no idle tick).
                    self.held.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::replace(&mut held, true) {
                        self.feed.refused();
                    }
                    device.in_flight.store(false, Ordering::Release);
                    pending.done();
                    continue;
                }
                let poller = self.clone();
                let device = device.clone();
                let permits = permits.clone();
                let pending = pending.clone();
                tasks.spawn(async move {
                    if let Ok(_permit) = permits.acquire_owned().await {
                        poller.poll(&device).await;
                    }
                    device.in_flight.store(false, Ordering::Release);
                    pending.done();
                });
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn poll(&self, device: &Device) {
        let asked = Instant::now();
        let result = self.fetch(&device.url).await;
        if let Ok(mut ms) = self.poll_ms.lock() {
            if ms.len() >= LATENCY_SAMPLES {
                ms.pop_front();
            }
            ms.push_back(asked.elapsed().as_secs_f64() * 1000.0);
        }
        let at_ms = super::live::now_micros() / 1000;
        let mut arrival = Arrival {
            at: at_ms * 1000,
            ..Arrival::default()
        };
        match result {
            Ok(body) => {
                self.shaper.shape(
                    split_body(&body, &device.url),
                    Some(&device.id),
                    at_ms,
                    &self.counters,
                    &mut arrival,
                    &device.url,
                );
            }
            Err(reject) => arrival.rejects.push(reject),
        }
        let failed = !arrival.rejects.is_empty() && arrival.lines.is_empty();
        if failed {
            device.failed.fetch_add(1, Ordering::Relaxed);
            let in_a_row = device.failing_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
            if let Ok(mut last) = device.last_error.lock() {
                *last = arrival.rejects.first().map(|r| r.reason.clone());
            }
            if in_a_row == SILENT_AFTER {
                tracing::warn!(table = %self.table, device = %device.id, url = %device.url,
                    error = arrival.rejects.first().map_or("", |r| r.reason.as_str()),
                    "Device stopped answering");
            }
        } else {
            device.ok.fetch_add(1, Ordering::Relaxed);
            let was = device.failing_in_a_row.swap(0, Ordering::Relaxed);
            if was >= SILENT_AFTER {
                tracing::info!(table = %self.table, device = %device.id, failed_polls = was, "Device answers again");
            }
        }
        self.feed.publish(arrival);
    }

    /// One GET: the body of a 200 answer in JSON, or why not.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, Reject> {
        let timeout = Duration::from_micros(u64::try_from(self.spec.timeout).unwrap_or(1));
        let fail = |reason: String, raw: &[u8]| Reject {
            reason: format!("{url}: {reason}"),
            raw: cut(raw),
        };
        let request = async {
            let response = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| fail(describe(&e), b""))?;
            let status = response.status();
            let html = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.contains("html"));
            let mut body = Vec::new();
            let mut stream = response.bytes_stream();
            while let Some(part) = stream.next().await {
                let part = part.map_err(|e| fail(describe(&e), &body))?;
                if body.len() + part.len() > self.spec.max_body {
                    return Err(fail(
                        format!("body larger than {} bytes (max_body)", self.spec.max_body),
                        &body,
                    ));
                }
                body.extend_from_slice(&part);
            }
            if !status.is_success() {
                return Err(fail(format!("HTTP {status}"), &body));
            }
            if html {
                return Err(fail("expected JSON, got an HTML page".into(), &body));
            }
            Ok(body)
        };
        match tokio::time::timeout(timeout, request).await {
            Ok(result) => result,
            Err(_) => Err(fail(
                format!(
                    "no answer within {} (timeout)",
                    crate::time::format_duration(self.spec.timeout)
                ),
                b"",
            )),
        }
    }

    /// What the poller did so far.
    pub fn report(&self) -> PollReport {
        let mut report = PollReport {
            devices: self.devices.len() as u64,
            rounds: self.rounds.load(Ordering::Relaxed),
            polls_held: self.held.load(Ordering::Relaxed),
            ..PollReport::default()
        };
        for d in &self.devices {
            report.polls_ok += d.ok.load(Ordering::Relaxed);
            report.polls_failed += d.failed.load(Ordering::Relaxed);
            report.polls_skipped += d.skipped.load(Ordering::Relaxed);
            let in_a_row = d.failing_in_a_row.load(Ordering::Relaxed);
            if in_a_row >= SILENT_AFTER {
                report.silent_devices.push(DeviceReport {
                    id: d.id.clone(),
                    url: d.url.clone(),
                    ok: d.ok.load(Ordering::Relaxed),
                    failed: d.failed.load(Ordering::Relaxed),
                    skipped: d.skipped.load(Ordering::Relaxed),
                    failing_in_a_row: in_a_row,
                    last_error: d.last_error.lock().ok().and_then(|l| l.clone()),
                });
            }
        }
        let stats = self.counters.stats();
        report.counter_resets = stats.resets;
        report.counter_wraps = stats.wraps;
        if let Ok(ms) = self.poll_ms.lock() {
            let mut ms: Vec<f64> = ms.iter().copied().collect();
            ms.sort_by(f64::total_cmp);
            if !ms.is_empty() {
                report.poll_p50_ms = Some(crate::stats::quantile(&ms, 0.5));
                report.poll_p99_ms = Some(crate::stats::quantile(&ms, 0.99));
            }
        }
        if let Ok(ms) = self.round_ms.lock() {
            let mut ms = ms.clone();
            ms.sort_by(f64::total_cmp);
            if !ms.is_empty() {
                report.round_p50_ms = Some(crate::stats::quantile(&ms, 0.5));
                report.round_p99_ms = Some(crate::stats::quantile(&ms, 0.99));
            }
        }
        report
    }

    /// Every device's figures, for the status JSON.
    pub fn device_reports(&self) -> Vec<DeviceReport> {
        self.devices
            .iter()
            .map(|d| DeviceReport {
                id: d.id.clone(),
                url: d.url.clone(),
                ok: d.ok.load(Ordering::Relaxed),
                failed: d.failed.load(Ordering::Relaxed),
                skipped: d.skipped.load(Ordering::Relaxed),
                failing_in_a_row: d.failing_in_a_row.load(Ordering::Relaxed),
                last_error: d.last_error.lock().ok().and_then(|l| l.clone()),
            })
            .collect()
    }
}

/// Counts a round's polls down and records how long the round took.
struct RoundClock {
    left: AtomicU64,
    started: Instant,
    poller: Arc<Poller>,
}

impl RoundClock {
    fn done(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut ms) = self.poller.round_ms.lock()
        {
            // Bounded: the figures of the last day of 10 s rounds.
            if ms.len() >= 8640 {
                ms.remove(0);
            }
            ms.push(self.started.elapsed().as_secs_f64() * 1000.0);
        }
    }
}

/// A client error in a few words: what a reader of the dead letters needs.
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connect() {
        format!("cannot connect: {}", root_cause(error))
    } else {
        root_cause(error)
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

fn device_list(spec: &HttpPollSpec) -> Result<Vec<Arc<Device>>, PollError> {
    let device = |id: String, url: String| {
        Arc::new(Device {
            id,
            url,
            in_flight: AtomicBool::new(false),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            failing_in_a_row: AtomicU64::new(0),
            last_error: std::sync::Mutex::new(None),
        })
    };
    match &spec.ids {
        DeviceIds::Range { first, last } => Ok((*first..=*last)
            .map(|id| device(id.to_string(), spec.url.replace("{id}", &id.to_string())))
            .collect()),
        DeviceIds::File(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| PollError::DeviceList {
                path: path.display().to_string(),
                source,
            })?;
            let devices: Vec<_> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|line| {
                    if line.starts_with("http://") || line.starts_with("https://") {
                        let id = line
                            .trim_end_matches('/')
                            .rsplit('/')
                            .next()
                            .unwrap_or(line)
                            .to_owned();
                        device(id, line.to_owned())
                    } else {
                        device(line.to_owned(), spec.url.replace("{id}", line))
                    }
                })
                .collect();
            if devices.is_empty() {
                return Err(PollError::NoDevices(path.display().to_string()));
            }
            Ok(devices)
        }
    }
}
