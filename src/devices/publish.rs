//! Publish modes: the fleet sends per-interval readings itself, to an MQTT broker or as
//! NDJSON batches to an HTTP ingest endpoint, at a fixed rate over the whole fleet.

use std::io::Write;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;
use tracing::{info, warn};

use super::log::LogSender;
use super::{Answer, DeviceName, DeviceState, DevicesError, Fleet};

/// Longest wait between reconnection attempts or failed pushes.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Transport failures of one batch before the push gives up.
const PUSH_ATTEMPTS: u32 = 10;

/// How much to publish.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Limit {
    /// This many readings.
    Readings(u64),
    /// For this long.
    For(Duration),
}

/// Pace and amount of a publishing run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Plan {
    /// Readings per second over the whole fleet.
    pub rate: f64,
    /// When to stop.
    pub limit: Limit,
}

/// The outcome of a publishing run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct PublishSummary {
    /// Readings handed to the transport.
    pub sent: u64,
    /// Readings the other side acknowledged (PUBACK or HTTP 200; with QoS 0, written to
    /// the connection).
    pub acknowledged: u64,
    /// Seconds from start to the last acknowledgement.
    pub elapsed_s: f64,
    /// `acknowledged / elapsed_s`.
    pub readings_per_s: f64,
    /// Push mode: median time from sending a batch to its acknowledgement, ms
    /// (resends included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_p50_ms: Option<f64>,
    /// Push mode: 99th percentile of the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_p99_ms: Option<f64>,
}

impl PublishSummary {
    fn new(sent: u64, acknowledged: u64, started: Instant) -> Self {
        let elapsed_s = started.elapsed().as_secs_f64();
        PublishSummary {
            sent,
            acknowledged,
            elapsed_s,
            readings_per_s: if elapsed_s > 0.0 {
                acknowledged as f64 / elapsed_s
            } else {
                0.0
            },
            ack_p50_ms: None,
            ack_p99_ms: None,
        }
    }

    /// With the acknowledgement latencies of the batches, ms.
    fn with_latencies(mut self, mut ms: Vec<f64>) -> Self {
        ms.sort_by(f64::total_cmp);
        if !ms.is_empty() {
            self.ack_p50_ms = Some(crate::stats::quantile(&ms, 0.5));
            self.ack_p99_ms = Some(crate::stats::quantile(&ms, 0.99));
        }
        self
    }
}

/// Hands out readings at the planned pace, device after device.
struct Readings {
    fleet: Fleet,
    /// Devices that publish: those that would answer a poll with a valid reading.
    talking: Vec<u64>,
    states: Vec<DeviceState>,
    /// When each device last published, microseconds since start.
    last_us: Vec<Option<u64>>,
    /// The interval a device reports on its first reading: its share of the rate.
    nominal_us: u64,
    next: usize,
    plan: Plan,
    started: Instant,
    due_done: u64,
}

impl Readings {
    fn new(fleet: Fleet, plan: Plan) -> Result<Readings, DevicesError> {
        if !(plan.rate.is_finite() && plan.rate > 0.0) {
            return Err(DevicesError::Config(format!(
                "--rate must be a positive number, not {}",
                plan.rate
            )));
        }
        let talking: Vec<u64> = (0..fleet.devices())
            .filter(|&d| {
                fleet
                    .profile(d)
                    .is_some_and(|p| p.answer == Answer::Reading)
            })
            .collect();
        if talking.is_empty() {
            return Err(DevicesError::Config(
                "no device would publish: every device has a fault".into(),
            ));
        }
        let states = talking.iter().map(|&d| fleet.initial_state(d)).collect();
        let nominal_us = (talking.len() as f64 / plan.rate * 1e6) as u64;
        Ok(Readings {
            last_us: vec![None; talking.len()],
            fleet,
            talking,
            states,
            nominal_us,
            next: 0,
            plan,
            started: Instant::now(),
            due_done: 0,
        })
    }

    /// Readings due by now, at most `max`; waits until one is due. `None` at the end.
    async fn due(&mut self, max: u64) -> Option<u64> {
        loop {
            let elapsed = self.started.elapsed();
            let (due, done) = match self.plan.limit {
                Limit::Readings(n) => {
                    let due = ((elapsed.as_secs_f64() * self.plan.rate) as u64).min(n);
                    (due, self.due_done >= n)
                }
                Limit::For(d) => {
                    let due = (elapsed.min(d).as_secs_f64() * self.plan.rate) as u64;
                    (due, elapsed >= d && self.due_done >= due)
                }
            };
            if due > self.due_done {
                let n = (due - self.due_done).min(max.max(1));
                self.due_done += n;
                return Some(n);
            }
            if done {
                return None;
            }
            let next_at = (self.due_done + 1) as f64 / self.plan.rate;
            let wait = Duration::from_secs_f64(next_at).saturating_sub(elapsed);
            tokio::time::sleep(wait.max(Duration::from_micros(100))).await;
        }
    }

    /// The next device's reading since its previous one, as JSON.
    fn next_json(&mut self, out: &mut Vec<u8>) -> u64 {
        let i = self.next;
        self.next = (self.next + 1) % self.talking.len();
        let device = self.talking[i];
        let now_us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let elapsed = match self.last_us[i] {
            Some(last) => now_us.saturating_sub(last),
            None => self.nominal_us,
        };
        self.last_us[i] = Some(now_us);
        if let Some(r) = self
            .fleet
            .interval(device, &mut self.states[i], elapsed, wall_ms())
        {
            self.fleet.write_json(&r, out);
        }
        device
    }
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Where and how to publish over MQTT.
#[derive(Clone, Debug, PartialEq)]
pub struct MqttConfig {
    /// `mqtt://HOST:PORT`.
    pub url: String,
    /// Topic with `{id}` standing for the device name (default `devices/{id}/traffic`).
    pub topic: String,
    /// 0 or 1 (default 1).
    pub qos: u8,
    /// Client id; the session is persistent, so a restarted publisher with the same id
    /// gets its unacknowledged messages resent by the broker's rules.
    pub client_id: String,
}

fn broker(url: &str) -> Result<(String, u16), DevicesError> {
    let parsed = url::Url::parse(url).map_err(|e| DevicesError::Mqtt(format!("{url}: {e}")))?;
    if parsed.scheme() != "mqtt" && parsed.scheme() != "tcp" {
        return Err(DevicesError::Mqtt(format!(
            "{url}: only mqtt://HOST:PORT (plain TCP) is supported"
        )));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| DevicesError::Mqtt(format!("{url}: no host")))?;
    Ok((host.to_owned(), parsed.port().unwrap_or(1883)))
}

/// Publishes readings to an MQTT broker, one message per reading, and returns once every
/// QoS 1 message is acknowledged. A lost broker is reconnected with backoff; messages
/// not yet acknowledged are resent on the new connection.
pub async fn publish_mqtt(
    fleet: Fleet,
    config: &MqttConfig,
    plan: Plan,
    log: Option<LogSender>,
) -> Result<PublishSummary, DevicesError> {
    let (host, port) = broker(&config.url)?;
    let qos = match config.qos {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        other => return Err(DevicesError::Mqtt(format!("--qos {other}: 0 or 1"))),
    };
    if !config.topic.contains("{id}") {
        warn!(topic = %config.topic, "The topic has no {{id}}: every device publishes to it");
    }
    let mut options = MqttOptions::new(config.client_id.clone(), host, port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_clean_session(false);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1_000);
    let (acks_tx, mut acks) = watch::channel(0u64);
    let driver = tokio::spawn(async move {
        let mut acked = 0u64;
        let mut written = 0u64;
        let mut backoff = Duration::from_millis(100);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    info!(
                        session_present = ack.session_present,
                        "Connected to the broker"
                    );
                    backoff = Duration::from_millis(100);
                }
                Ok(Event::Incoming(Packet::PubAck(_))) if qos == QoS::AtLeastOnce => {
                    acked += 1;
                    let _ = acks_tx.send(acked);
                }
                Ok(Event::Outgoing(Outgoing::Publish(_))) if qos == QoS::AtMostOnce => {
                    written += 1;
                    let _ = acks_tx.send(written);
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => {
                    // Polling the same event loop again reconnects and resends what the
                    // broker has not acknowledged.
                    warn!(error = %e, retry_in = ?backoff, "MQTT connection lost, reconnecting");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    });
    let mut readings = Readings::new(fleet, plan)?;
    let started = readings.started;
    let mut sent = 0u64;
    let mut topic = String::new();
    while let Some(n) = readings.due(1_000).await {
        for _ in 0..n {
            let mut payload = Vec::with_capacity(160);
            let device = readings.next_json(&mut payload);
            topic.clear();
            topic.push_str(
                &config
                    .topic
                    .replace("{id}", &DeviceName(device).to_string()),
            );
            let payload = Bytes::from(payload);
            if let Some(log) = &log {
                log.reading(payload.clone());
            }
            client
                .publish_bytes(topic.as_str(), qos, false, payload)
                .await
                .map_err(|e| DevicesError::Mqtt(e.to_string()))?;
            sent += 1;
        }
    }
    let _ = acks.wait_for(|&a| a >= sent).await;
    let acknowledged = (*acks.borrow()).min(sent);
    let summary = PublishSummary::new(sent, acknowledged, started);
    let _ = client.disconnect().await;
    if tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .is_err()
    {
        warn!("The MQTT connection did not close in 5 s");
    }
    Ok(summary)
}

/// Where and how to push NDJSON batches.
#[derive(Clone, Debug, PartialEq)]
pub struct PushConfig {
    /// The ingest endpoint.
    pub url: String,
    /// Readings per POST (default 1000).
    pub batch: usize,
    /// Gzip the body (`Content-Encoding: gzip`; default off).
    pub gzip: bool,
    /// Bearer token.
    pub token: Option<String>,
    /// Batches in flight at once (default 1).
    pub concurrency: usize,
}

/// A batch older than this is sent even if not full, so slow rates still flow.
const BATCH_AGE: Duration = Duration::from_secs(1);

/// POSTs readings as NDJSON batches. A 503 (or 429) is retried after its
/// `Retry-After`; transport errors and other 5xx are retried with backoff; any other
/// 4xx ends the run with [`DevicesError::Refused`].
pub async fn push(
    fleet: Fleet,
    config: &PushConfig,
    plan: Plan,
    log: Option<LogSender>,
) -> Result<PublishSummary, DevicesError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| DevicesError::Push {
            url: config.url.clone(),
            message: e.to_string(),
        })?;
    let mut readings = Readings::new(fleet, plan)?;
    let started = readings.started;
    let batch_size = config.batch.max(1);
    // Each batch carries an Idempotency-Key, so a batch resent after a lost answer is
    // counted once by the node.
    let run = format!(
        "{}-{}",
        std::process::id(),
        crate::source::live::now_micros()
    );
    let mut batches = 0u64;
    let mut sent = 0u64;
    let mut acknowledged = 0u64;
    let mut latencies = Vec::new();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut body = Vec::with_capacity(batch_size * 160);
    let mut in_batch = 0usize;
    let mut batch_started = Instant::now();
    let mut finished = false;
    while !finished || in_batch > 0 || !in_flight.is_empty() {
        // Room for another batch: fill it; otherwise wait for an answer.
        if !finished && in_flight.len() < config.concurrency.max(1) {
            let due = tokio::select! {
                due = readings.due((batch_size - in_batch) as u64) => due,
                () = tokio::time::sleep(BATCH_AGE.saturating_sub(batch_started.elapsed())), if in_batch > 0 => Some(0),
            };
            match due {
                None => finished = true,
                Some(n) => {
                    for _ in 0..n {
                        if in_batch == 0 {
                            batch_started = Instant::now();
                        }
                        readings.next_json(&mut body);
                        body.push(b'\n');
                        in_batch += 1;
                    }
                }
            }
        }
        let full = in_batch >= batch_size || (in_batch > 0 && batch_started.elapsed() >= BATCH_AGE);
        if in_batch > 0 && (full || finished) && in_flight.len() < config.concurrency.max(1) {
            let lines = Bytes::from(std::mem::take(&mut body));
            let count = std::mem::take(&mut in_batch) as u64;
            sent += count;
            batches += 1;
            let (client, config, key) =
                (client.clone(), config.clone(), format!("{run}-{batches}"));
            in_flight.spawn(async move {
                let posted = Instant::now();
                post(&client, &config, &lines, &key)
                    .await
                    .map(|()| (lines, count, posted.elapsed()))
            });
            continue;
        }
        if (finished || in_flight.len() >= config.concurrency.max(1))
            && let Some(done) = in_flight.join_next().await
        {
            let (lines, count, took) = done.map_err(|e| DevicesError::Push {
                url: config.url.clone(),
                message: e.to_string(),
            })??;
            acknowledged += count;
            latencies.push(took.as_secs_f64() * 1e3);
            if let Some(log) = &log {
                log.lines(lines);
            }
        }
    }
    Ok(PublishSummary::new(sent, acknowledged, started).with_latencies(latencies))
}

fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4),
        flate2::Compression::fast(),
    );
    encoder.write_all(data)?;
    encoder.finish()
}

/// The wait a 503 or 429 asks for: `Retry-After` in seconds, else one second.
fn retry_after(response: &reqwest::Response) -> Duration {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(1), Duration::from_secs)
}

/// Sends one batch until it is acknowledged with a 2xx.
async fn post(
    client: &reqwest::Client,
    config: &PushConfig,
    lines: &Bytes,
    key: &str,
) -> Result<(), DevicesError> {
    let failed = |message: String| DevicesError::Push {
        url: config.url.clone(),
        message,
    };
    let body = if config.gzip {
        Bytes::from(gzip(lines).map_err(|e| failed(e.to_string()))?)
    } else {
        lines.clone()
    };
    let mut failures = 0u32;
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut request = client
            .post(&config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
            .header("Idempotency-Key", key)
            .body(body.clone());
        if config.gzip {
            request = request.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        if let Some(token) = &config.token {
            request = request.bearer_auth(token);
        }
        let problem = match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            Ok(response)
                if response.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE
                    || response.status() == reqwest::StatusCode::TOO_MANY_REQUESTS =>
            {
                let wait = retry_after(&response);
                info!(status = %response.status(), retry_in = ?wait, "Ingest busy, resending the batch");
                tokio::time::sleep(wait).await;
                continue;
            }
            Ok(response) if response.status().is_client_error() => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                return Err(DevicesError::Refused {
                    url: config.url.clone(),
                    status,
                    body: text.chars().take(1_000).collect(),
                });
            }
            Ok(response) => format!("status {}", response.status()),
            Err(e) => e.to_string(),
        };
        failures += 1;
        if failures >= PUSH_ATTEMPTS {
            return Err(failed(format!("{problem} ({failures} attempts)")));
        }
        warn!(url = %config.url, error = %problem, retry_in = ?backoff, "Push failed, retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
