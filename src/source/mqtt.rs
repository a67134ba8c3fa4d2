//! `connector = 'mqtt'`: readings from an MQTT broker, one reading or a JSON array per
//! message.
//!
//! The client keeps a persistent session (a fixed client id, `clean_session` off), so
//! the broker queues QoS 1 messages while the node is away. A QoS 1 message is
//! acknowledged (PUBACK) only once its readings are durable in the table's write-ahead
//! log, in the order the messages came; while the queries cannot take more readings,
//! the node stops reading from the connection, so the broker holds the rest instead of
//! the node dropping them. QoS 1 is at least once by protocol: a message logged just
//! before a crash, whose PUBACK never left, is delivered again by the broker after the
//! restart. The node recognises such a redelivery by its packet id and content
//! ([`super::redelivery`]), acknowledges it and does not count it again. A lost connection is retried with a growing pause (100 ms doubling to 30 s),
//! reset by every successful connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::sync::watch;

use super::live::{Arrival, Feed, Reject};
use super::records::{Counters, Shaper, cut, split_body};
use super::redelivery::{Mark, Marks};
use crate::query::SourceSchema;
use crate::query::connector::MqttSpec;

/// The largest packet MQTT 3.1.1 can frame: a remaining length of 268,435,455 bytes and
/// a fixed header of at most 5.
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;

/// First pause before reconnecting.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why the MQTT source cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttError {
    /// A named environment variable is not set.
    #[error("environment variable {0} (named by {1}) is not set")]
    MissingEnv(String, &'static str),
    /// The CA certificates to trust for a TLS broker cannot be read.
    #[error("{}: {reason}", path.display())]
    Ca {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where the system keeps its CA bundle, on the usual Linux distributions.
const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// The PEM certificates to trust for a TLS broker: `ca_file`, else `SSL_CERT_FILE`, else
/// the system's bundle. Read at start, so a missing file is an error then, not a retry
/// loop of failed handshakes.
fn trusted_pem(ca_file: Option<&std::path::Path>) -> Result<Vec<u8>, MqttError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let path = match (ca_file, from_env) {
        (Some(path), _) => path.to_owned(),
        (None, Some(path)) => path,
        (None, None) => SYSTEM_CA_BUNDLES
            .iter()
            .map(std::path::PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| MqttError::Ca {
                path: SYSTEM_CA_BUNDLES[0].into(),
                reason: "no system CA bundle: name the broker's CA with ca_file".into(),
            })?,
    };
    let pem = std::fs::read(&path).map_err(|e| MqttError::Ca {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return Err(MqttError::Ca {
            path,
            reason: "no PEM certificate in the file".into(),
        });
    }
    Ok(pem)
}

/// What the MQTT source did, for the summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct MqttReport {
    /// Messages received.
    pub messages: u64,
    /// Connections made (the first and every reconnection).
    pub connections: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Connected now.
    pub connected: bool,
    /// The broker has the session's subscriptions: it keeps their messages for the
    /// node from now on, also while the node is away.
    pub subscribed: bool,
    /// Messages delivered again after a restart or a lost connection that were already
    /// in the log: acknowledged, not counted again.
    pub redelivered: u64,
    /// Holding a message rather than reading on: the queries are behind, or the local
    /// disk quota is full under `backpressure`. The broker keeps the messages after it.
    pub waiting_for_room: bool,
}

/// The answer of the table's log about one message's readings.
type Durable = oneshot::Receiver<Result<u64, String>>;

/// A message waiting for its PUBACK, in arrival order.
enum Pending {
    /// Acknowledged once its readings are durable in the log.
    Logging(rumqttc::Publish, Option<Mark>, Durable),
    /// A redelivery of a message logged before: acknowledged if that one was.
    Again(rumqttc::Publish, Mark),
}

/// Subscribes to a broker and publishes what arrives into a [`Feed`].
pub struct MqttSource {
    spec: MqttSpec,
    options: MqttOptions,
    shaper: Shaper,
    feed: Arc<Feed>,
    marks: Arc<Marks>,
    messages: AtomicU64,
    redelivered: Arc<AtomicU64>,
    connections: AtomicU64,
    disconnects: AtomicU64,
    connected: std::sync::atomic::AtomicBool,
    subscribed: std::sync::atomic::AtomicBool,
    waiting: std::sync::atomic::AtomicBool,
}

impl MqttSource {
    /// Prepares the client for `spec` (credentials are read from the environment now);
    /// `logged` are the marks read back from the table's log ([`super::redelivery`]).
    pub fn new(
        spec: &MqttSpec,
        schema: &SourceSchema,
        feed: Arc<Feed>,
        logged: &[String],
        share: super::ProcessShare,
    ) -> Result<Arc<MqttSource>, MqttError> {
        let client_id = spec
            .client_id
            .clone()
            .unwrap_or_else(|| format!("edgeflow-{}", schema.name));
        let (client_id, topics) = share.mqtt(client_id, &spec.topics);
        let spec = &MqttSpec {
            topics,
            ..spec.clone()
        };
        let mut options = MqttOptions::new(client_id, spec.host.clone(), spec.port);
        options
            .set_keep_alive(Duration::from_secs(15))
            .set_clean_session(false)
            .set_manual_acks(true)
            // Every packet the protocol can frame is read, and one over `max_body` is
            // a dead letter: refused by the client, it would drop the connection, and
            // the broker would deliver it again at each reconnect, ahead of the rest.
            .set_max_packet_size(MQTT_MAX_PACKET, 64 * 1024);
        let env =
            |name: &Option<String>, option: &'static str| -> Result<Option<String>, MqttError> {
                name.as_ref()
                    .map(|n| std::env::var(n).map_err(|_| MqttError::MissingEnv(n.clone(), option)))
                    .transpose()
            };
        if spec.tls {
            let ca = trusted_pem(spec.ca_file.as_deref())?;
            options.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Simple {
                    ca,
                    alpn: None,
                    client_auth: None,
                },
            ));
        }
        let user = env(&spec.username_env, "username_env")?;
        let password = env(&spec.password_env, "password_env")?;
        if user.is_some() || password.is_some() {
            options.set_credentials(user.unwrap_or_default(), password.unwrap_or_default());
        }
        Ok(Arc::new(MqttSource {
            spec: spec.clone(),
            options,
            shaper: Shaper::new(schema),
            feed,
            marks: Arc::new(Marks::recovered(logged)),
            messages: AtomicU64::new(0),
            redelivered: Arc::new(AtomicU64::new(0)),
            connections: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            connected: std::sync::atomic::AtomicBool::new(false),
            subscribed: std::sync::atomic::AtomicBool::new(false),
            waiting: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    /// What it did so far.
    pub fn report(&self) -> MqttReport {
        MqttReport {
            messages: self.messages.load(Ordering::Relaxed),
            connections: self.connections.load(Ordering::Relaxed),
            disconnects: self.disconnects.load(Ordering::Relaxed),
            connected: self.connected.load(Ordering::Relaxed),
            subscribed: self.subscribed.load(Ordering::Relaxed),
            redelivered: self.redelivered.load(Ordering::Relaxed),
            waiting_for_room: self.waiting.load(Ordering::Relaxed),
        }
    }

    /// Receives until `stop` turns true, then disconnects.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let (client, mut events) = AsyncClient::new(self.options.clone(), 1024);
        let qos = if self.spec.qos == 1 {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        let counters = Counters::default();
        let mut backoff = BACKOFF_MIN;
        // PUBACKs go out in the order the messages came (as MQTT asks), each once its
        // readings are durable in the table's log; a message whose readings could not
        // be logged is not acknowledged, and the broker delivers it again.
        let (acks, mut to_ack) = tokio::sync::mpsc::unbounded_channel::<Pending>();
        let acker = {
            let (client, feed, marks) = (client.clone(), self.feed.clone(), self.marks.clone());
            let redelivered = self.redelivered.clone();
            tokio::spawn(async move {
                while let Some(pending) = to_ack.recv().await {
                    match pending {
                        Pending::Logging(publish, mark, durable) => match durable.await {
                            Ok(Ok(seq)) => {
                                // The mark lives in memory from now on; the record need
                                // not be kept for it.
                                feed.key_kept(seq);
                                client.ack(&publish).await.ok();
                            }
                            _ => {
                                if let Some(mark) = &mark {
                                    marks.forget(mark);
                                }
                            }
                        },
                        // Its first copy's answer came before (the acks keep order):
                        // still marked means it was logged.
                        Pending::Again(publish, mark) => {
                            if marks.logged(&mark) {
                                redelivered.fetch_add(1, Ordering::Relaxed);
                                client.ack(&publish).await.ok();
                            }
                        }
                    }
                }
            })
        };
        loop {
            let event = tokio::select! {
                event = events.poll() => event,
                _ = stop.changed() => break,
            };
            if *stop.borrow() {
                break;
            }
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    backoff = BACKOFF_MIN;
                    self.connections.fetch_add(1, Ordering::Relaxed);
                    self.connected.store(true, Ordering::Relaxed);
                    tracing::info!(host = %self.spec.host, port = self.spec.port, session_present = ack.session_present, "Connected to the MQTT broker");
                    if ack.session_present {
                        self.subscribed.store(true, Ordering::Relaxed);
                    } else {
                        for topic in &self.spec.topics {
                            if let Err(e) = client.subscribe(topic.clone(), qos).await {
                                tracing::error!(topic = %topic, error = %e, "Cannot subscribe");
                            }
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    self.messages.fetch_add(1, Ordering::Relaxed);
                    let mark = Mark::of(publish.pkid, &publish.topic, &publish.payload);
                    if let Some(mark) = mark.filter(|m| publish.dup && self.marks.logged(m)) {
                        tracing::info!(topic = %publish.topic, pkid = publish.pkid, "A message delivered again is already in the write-ahead log: acknowledged, not counted again");
                        acks.send(Pending::Again(publish, mark)).ok();
                        continue;
                    }
                    let origin = format!("mqtt topic {}", publish.topic);
                    let parts = if publish.payload.len() > self.spec.max_body {
                        vec![Err(Reject {
                            reason: format!(
                                "{origin}: message of {} bytes, larger than {} bytes (max_body)",
                                publish.payload.len(),
                                self.spec.max_body
                            ),
                            raw: cut(&publish.payload),
                        })]
                    } else {
                        split_body(&publish.payload, &origin)
                    };
                    let device = self.spec.device_id_from_topic.and_then(|level| {
                        publish.topic.split('/').nth(level - 1).map(str::to_owned)
                    });
                    let at = super::live::now_micros();
                    let mut arrival = Arrival {
                        lines: Vec::new(),
                        rejects: Vec::new(),
                        at,
                        key_line: mark.map(|m| m.line()),
                        counters: None,
                    };
                    self.shaper.shape(
                        parts,
                        device.as_deref(),
                        at / 1000,
                        &counters,
                        &mut arrival,
                        &origin,
                    );
                    // Not reading on while the queries are full is what makes the
                    // broker hold the next messages: wait for room, never drop. The
                    // devices are sending meanwhile: no idle tick.
                    let mut waits = 0u32;
                    while !self.feed.readers_have_room(arrival.lines.len()) && !*stop.borrow() {
                        if waits.is_multiple_of(50) {
                            self.waiting.store(true, Ordering::Relaxed);
                            self.feed.refused();
                        }
                        waits = waits.wrapping_add(1);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    self.waiting.store(false, Ordering::Relaxed);
                    if *stop.borrow() {
                        // Not logged, so not acknowledged: the broker delivers it again
                        // at the next start.
                        break;
                    }
                    if let Some(mark) = mark {
                        self.marks.note(mark);
                    }
                    let durable = self.feed.append(arrival);
                    acks.send(Pending::Logging(publish, mark, durable)).ok();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    self.subscribed.store(true, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => {
                    if self.connected.swap(false, Ordering::Relaxed) {
                        self.disconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(host = %self.spec.host, port = self.spec.port, error = %e, retry_in = ?backoff, "MQTT connection lost");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => break,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        // What was logged is acknowledged before the session ends, or the broker would
        // deliver it again at the next start.
        drop(acks);
        let _ = tokio::time::timeout(Duration::from_secs(5), async {
            tokio::pin!(acker);
            loop {
                tokio::select! {
                    _ = &mut acker => break,
                    polled = events.poll() => if polled.is_err() { break },
                }
            }
        })
        .await;
        client.disconnect().await.ok();
        // Lets the disconnect go out; the broker keeps the session for the next start.
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while events.poll().await.is_ok() {}
        })
        .await;
    }
}
