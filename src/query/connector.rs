//! `WITH (connector = '...', ...)`: where a table's readings come from, validated once.
//!
//! The option names are a contract (tests and users write them), in the convention of
//! Flink, RisingWave and Arroyo. Every connector knows its own options: one it does not
//! know, or one it needs and lacks, is a query error at the option's position. Secrets
//! are never option values: options name the environment variables that hold them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sqlparser::tokenizer::Span;

use super::duration::duration_option;
use super::error::{PlanError, PlanResult};
use super::plan::Field;
use super::schema::find_column;
use crate::decode::Format;
use crate::types::DataType;

/// Default `max_ahead_of_clock`: a live reading stamped further ahead of the node's own
/// clock is a bad device clock.
pub const DEFAULT_MAX_AHEAD_OF_CLOCK: i64 = 300_000_000;

/// Default longest body a push request or a polled device may send.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;

/// Default longest body a polled device may answer with.
pub const DEFAULT_MAX_POLL_BODY: usize = 1 << 20;

/// One `key = 'value'` of a `WITH` list, with where its parts are.
#[derive(Clone, Debug)]
pub struct TableOption {
    /// The key, lower case.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// Where the key is.
    pub key_span: Span,
    /// Where the value is.
    pub value_span: Span,
}

/// Where a table's readings come from, and the event-time rules of live sources.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Connector {
    /// The connector and its settings.
    pub kind: ConnectorKind,
    /// After this long without a reading, a live source's watermark follows the node's
    /// clock (minus the out-of-orderness), so windows close on a quiet network;
    /// microseconds. `None`: the watermark waits for readings.
    pub idle_timeout: Option<i64>,
    /// A live reading stamped more than this ahead of the node's clock is a dead letter
    /// and never moves the watermark; microseconds.
    pub max_ahead_of_clock: i64,
}

impl Connector {
    /// Whether readings arrive for as long as the node runs (no end of input).
    pub fn is_live(&self) -> bool {
        matches!(
            self.kind,
            ConnectorKind::HttpPoll(_) | ConnectorKind::HttpPush(_) | ConnectorKind::Mqtt(_)
        ) || matches!(&self.kind, ConnectorKind::File(f) if f.follow)
    }

    /// The connector's name as written in `connector = '...'`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            ConnectorKind::Unspecified => "unspecified",
            ConnectorKind::File(_) => "file",
            ConnectorKind::Stdin(_) => "stdin",
            ConnectorKind::Generator(_) => "generator",
            ConnectorKind::HttpPoll(_) => "http_poll",
            ConnectorKind::HttpPush(_) => "http_push",
            ConnectorKind::Mqtt(_) => "mqtt",
        }
    }
}

impl std::fmt::Display for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let micros = crate::time::format_duration;
        match &self.kind {
            ConnectorKind::Unspecified => f.write_str("none (run reads --input, or the generator)"),
            ConnectorKind::File(s) => write!(
                f,
                "file {}{}",
                s.path.display(),
                if s.follow { ", followed" } else { "" }
            ),
            ConnectorKind::Stdin(s) => write!(f, "stdin ({})", s.format),
            ConnectorKind::Generator(s) => write!(
                f,
                "generator ({} devices, {} readings, {}/s, seed {})",
                s.devices, s.readings, s.rate, s.seed
            ),
            ConnectorKind::HttpPoll(s) => {
                let devices = match &s.ids {
                    DeviceIds::Range { first, last } => format!("ids {first}..{last}"),
                    DeviceIds::File(path) => format!("devices from {}", path.display()),
                };
                write!(
                    f,
                    "http_poll {} over {devices}, every {}, timeout {}, {} at a time",
                    s.url,
                    micros(s.interval),
                    micros(s.timeout),
                    s.concurrency
                )?;
                if !s.counters.is_empty() {
                    write!(f, "; {} cumulative counters as deltas", s.counters.len())?;
                }
                Ok(())
            }
            ConnectorKind::HttpPush(_) => f.write_str("http_push (POST /ingest/<table>)"),
            ConnectorKind::Mqtt(s) => write!(
                f,
                "mqtt {}:{} topics {} at QoS {}",
                s.host,
                s.port,
                s.topics.join(", "),
                s.qos
            ),
        }
    }
}

/// The connectors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub enum ConnectorKind {
    /// No `connector` option: `run` reads `--input` or the generator.
    #[default]
    Unspecified,
    /// Files: one, or a glob.
    File(FileSpec),
    /// Standard input.
    Stdin(StdinSpec),
    /// The built-in generator.
    Generator(GeneratorSpec),
    /// Polls each device's HTTP endpoint.
    HttpPoll(HttpPollSpec),
    /// Readings pushed to `POST /ingest/<table>`.
    HttpPush(HttpPushSpec),
    /// Readings from an MQTT broker.
    Mqtt(MqttSpec),
}

/// `connector = 'file'`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileSpec {
    /// A path or glob, relative to the query file's folder when not absolute.
    pub path: PathBuf,
    /// Input format (default: from the extension).
    pub format: Option<Format>,
    /// Keep watching for new files matching the glob (the hourly-file pattern).
    pub follow: bool,
    /// How often a followed glob is listed again, microseconds.
    pub poll_interval: i64,
}

/// `connector = 'stdin'`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StdinSpec {
    /// Input format (default JSON lines).
    pub format: Format,
}

/// `connector = 'generator'`: the settings of `edgeflow gen`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneratorSpec {
    /// Distinct devices.
    pub devices: u64,
    /// Readings to generate.
    pub readings: u64,
    /// Readings per second of event time.
    pub rate: u64,
    /// Random seed.
    pub seed: u64,
}

/// Which devices `http_poll` polls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DeviceIds {
    /// `ids = 'A..B'`, both ends included.
    Range {
        /// First id.
        first: u64,
        /// Last id.
        last: u64,
    },
    /// `devices = 'FILE'`: one id, or one whole URL, per line.
    File(PathBuf),
}

/// Where `http_poll` takes event time from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PollTimestamp {
    /// The body's event-time field.
    Field,
    /// The node's clock when the answer arrived (devices without a clock).
    PollTime,
}

/// `connector = 'http_poll'`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpPollSpec {
    /// URL template; `{id}` is replaced by each device id.
    pub url: String,
    /// The devices.
    pub ids: DeviceIds,
    /// Time between two polls of one device, microseconds.
    pub interval: i64,
    /// Per-request timeout, microseconds.
    pub timeout: i64,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Columns holding cumulative counters: the source emits their deltas.
    pub counters: Vec<usize>,
    /// Width of the counters: 32 or 64 bits.
    pub counter_bits: u32,
    /// A declared `interval_ms BIGINT` column filled with the time since the device's
    /// previous answer (only with `counters`).
    pub interval_column: Option<usize>,
    /// Event time from the body or the poll time.
    pub timestamp: PollTimestamp,
    /// Environment variable holding a bearer token sent to every device.
    pub bearer_token_env: Option<String>,
    /// Extra request headers.
    pub headers: Vec<(String, String)>,
    /// PEM file of the certificate authority devices' TLS certificates chain to.
    pub ca_file: Option<PathBuf>,
    /// Longest body accepted from a device.
    pub max_body: usize,
}

/// `connector = 'http_push'`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HttpPushSpec {
    /// Longest request body (after decompression).
    pub max_body: usize,
    /// How long an `Idempotency-Key` is remembered, microseconds.
    #[serde(default = "default_idempotency_ttl")]
    pub idempotency_ttl: i64,
}

/// Keys are remembered a day unless the table says otherwise: longer than any client
/// keeps resending one batch.
pub const DEFAULT_IDEMPOTENCY_TTL: i64 = 24 * 3600 * 1_000_000;

fn default_idempotency_ttl() -> i64 {
    DEFAULT_IDEMPOTENCY_TTL
}

/// `connector = 'mqtt'`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MqttSpec {
    /// Host of the broker.
    pub host: String,
    /// Port of the broker.
    pub port: u16,
    /// Topic filters, wildcards allowed.
    pub topics: Vec<String>,
    /// 0 or 1.
    pub qos: u8,
    /// 1-based topic level that holds the device id when the payload lacks it.
    pub device_id_from_topic: Option<usize>,
    /// MQTT client id; a fixed one keeps the broker's persistent session across restarts.
    pub client_id: Option<String>,
    /// Environment variable holding the user name.
    pub username_env: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// Longest message accepted.
    pub max_body: usize,
    /// TLS to the broker (`mqtts://`).
    #[serde(default)]
    pub tls: bool,
    /// CA certificates (PEM) to trust for the broker; without it, the system's bundle.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// Options every table takes, whatever its connector.
const COMMON: &[&str] = &[
    "connector",
    "event_time",
    "max_out_of_orderness",
    "allowed_lateness",
    "max_future_skew",
    "idle_timeout",
    "max_ahead_of_clock",
];

/// Builds the connector from a table's options (the options every table takes are read here too
/// where they concern live sources); `columns` are the declared columns and `base` the
/// query file's folder, for relative paths.
pub fn plan_connector(
    options: &[TableOption],
    columns: &[Field],
    table_span: Span,
    base: &Path,
) -> PlanResult<Connector> {
    let opts = Options { options, base };
    let name = opts.get("connector").map(|o| o.value.to_ascii_lowercase());
    let (kind, own): (ConnectorKind, &[&str]) = match name.as_deref() {
        None => (ConnectorKind::Unspecified, &[]),
        Some("file") => (ConnectorKind::File(file_spec(&opts, table_span)?), FILE),
        Some("stdin") => (
            ConnectorKind::Stdin(StdinSpec {
                format: opts.format()?.unwrap_or(Format::Jsonl),
            }),
            &["format"],
        ),
        Some("generator") => (
            ConnectorKind::Generator(GeneratorSpec {
                devices: opts.count("devices", 10_000)?,
                readings: opts.count("readings", 1_000_000)?,
                rate: opts.count("rate", 10_000)?,
                seed: opts.number("seed", 42)?,
            }),
            &["devices", "readings", "rate", "seed"],
        ),
        Some("http_poll") => (
            ConnectorKind::HttpPoll(poll_spec(&opts, columns, table_span)?),
            POLL,
        ),
        Some("http_push") => (
            ConnectorKind::HttpPush(HttpPushSpec {
                max_body: opts.bytes("max_body", DEFAULT_MAX_BODY)?,
                idempotency_ttl: opts
                    .duration("idempotency_ttl")?
                    .unwrap_or(DEFAULT_IDEMPOTENCY_TTL),
            }),
            &["max_body", "idempotency_ttl"],
        ),
        Some("mqtt") => (ConnectorKind::Mqtt(mqtt_spec(&opts, table_span)?), MQTT),
        Some(other) => {
            let option = opts.get("connector").map_or(table_span, |o| o.value_span);
            return Err(PlanError::at(
                option,
                format!(
                    "unknown connector '{other}'; expected one of: file, stdin, generator, http_poll, http_push, mqtt"
                ),
            ));
        }
    };
    for option in options {
        if !COMMON.contains(&option.key.as_str()) && !own.contains(&option.key.as_str()) {
            let mut known: Vec<&str> = COMMON.iter().chain(own).copied().collect();
            known.sort_unstable();
            return Err(PlanError::at(
                option.key_span,
                format!(
                    "unknown option `{}` for connector '{}'; expected one of: {}",
                    option.key,
                    name.as_deref().unwrap_or("(none)"),
                    known.join(", ")
                ),
            ));
        }
    }
    let connector = Connector {
        kind,
        idle_timeout: opts.duration("idle_timeout")?,
        max_ahead_of_clock: opts
            .duration("max_ahead_of_clock")?
            .unwrap_or(DEFAULT_MAX_AHEAD_OF_CLOCK),
    };
    if !connector.is_live() {
        for key in ["idle_timeout", "max_ahead_of_clock"] {
            if let Some(option) = opts.get(key) {
                return Err(PlanError::at(
                    option.key_span,
                    format!(
                        "`{key}` applies to live sources (http_poll, http_push, mqtt, file with follow = 'true'), not to connector '{}'",
                        connector.name()
                    ),
                ));
            }
        }
    }
    Ok(connector)
}

const FILE: &[&str] = &["path", "format", "follow", "poll_interval"];
const POLL: &[&str] = &[
    "url",
    "ids",
    "devices",
    "interval",
    "timeout",
    "concurrency",
    "counters",
    "counter_bits",
    "timestamp",
    "bearer_token_env",
    "headers",
    "ca_file",
    "max_body",
];
const MQTT: &[&str] = &[
    "broker",
    "topic",
    "qos",
    "device_id_from_topic",
    "client_id",
    "username_env",
    "password_env",
    "max_body",
    "ca_file",
];

fn file_spec(opts: &Options<'_>, table_span: Span) -> PlanResult<FileSpec> {
    let path = opts.required("path", table_span, "a file path or glob")?;
    Ok(FileSpec {
        path: opts.base.join(&path.value),
        format: opts.format()?,
        follow: opts.flag("follow")?,
        poll_interval: opts.duration("poll_interval")?.unwrap_or(1_000_000),
    })
}

fn poll_spec(opts: &Options<'_>, columns: &[Field], table_span: Span) -> PlanResult<HttpPollSpec> {
    let url = opts.required(
        "url",
        table_span,
        "a URL template such as 'http://10.0.0.{id}/device/{id}'",
    )?;
    let parsed = url::Url::parse(&url.value.replace("{id}", "0")).map_err(|e| {
        PlanError::at(
            url.value_span,
            format!("expected an http:// or https:// URL: {e}"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(PlanError::at(
            url.value_span,
            format!(
                "expected an http:// or https:// URL, found scheme '{}'",
                parsed.scheme()
            ),
        ));
    }
    let ids = match (opts.get("ids"), opts.get("devices")) {
        (Some(_), Some(devices)) => {
            return Err(PlanError::at(
                devices.key_span,
                "give either `ids` or `devices`, not both",
            ));
        }
        (Some(ids), None) => id_range(ids)?,
        (None, Some(devices)) => DeviceIds::File(opts.base.join(&devices.value)),
        (None, None) => {
            return Err(PlanError::at(
                table_span,
                "http_poll needs the devices to poll: ids = 'FIRST..LAST' or devices = 'FILE'",
            ));
        }
    };
    if matches!(ids, DeviceIds::Range { .. }) && !url.value.contains("{id}") {
        return Err(PlanError::at(
            url.value_span,
            "expected `{id}` in the URL template: it is replaced by each device id",
        ));
    }
    let mut counters = Vec::new();
    if let Some(option) = opts.get("counters") {
        for name in option
            .value
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            let index = find_column(columns, name).ok_or_else(|| {
                PlanError::at(
                    option.value_span,
                    format!("counters names `{name}`, which is not a declared column"),
                )
            })?;
            if columns[index].ty != DataType::BigInt {
                return Err(PlanError::at(
                    option.value_span,
                    format!(
                        "counter column `{name}` must be BIGINT, not {}",
                        columns[index].ty
                    ),
                ));
            }
            counters.push(index);
        }
    }
    let counter_bits = match opts.get("counter_bits") {
        None => 64,
        Some(o) => match o.value.trim() {
            "32" => 32,
            "64" => 64,
            other => {
                return Err(PlanError::at(
                    o.value_span,
                    format!("expected counter_bits = '32' or '64', found '{other}'"),
                ));
            }
        },
    };
    let interval_column = find_column(columns, "interval_ms")
        .filter(|&i| columns[i].ty == DataType::BigInt && !counters.is_empty());
    let timestamp = match opts.get("timestamp") {
        None => PollTimestamp::Field,
        Some(o) => match o.value.trim().to_ascii_lowercase().as_str() {
            "field" | "body" => PollTimestamp::Field,
            "poll_time" => PollTimestamp::PollTime,
            other => {
                return Err(PlanError::at(
                    o.value_span,
                    format!("expected timestamp = 'field' or 'poll_time', found '{other}'"),
                ));
            }
        },
    };
    let mut headers = Vec::new();
    if let Some(option) = opts.get("headers") {
        for header in option
            .value
            .split(';')
            .map(str::trim)
            .filter(|h| !h.is_empty())
        {
            let Some((name, value)) = header.split_once(':') else {
                return Err(PlanError::at(
                    option.value_span,
                    format!("expected headers as 'Name: value; Name: value', found '{header}'"),
                ));
            };
            let (name, value) = (name.trim(), value.trim());
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err()
                || reqwest::header::HeaderValue::from_str(value).is_err()
            {
                return Err(PlanError::at(
                    option.value_span,
                    format!("not a valid HTTP header: '{header}'"),
                ));
            }
            if name.eq_ignore_ascii_case("authorization") {
                return Err(PlanError::at(
                    option.value_span,
                    "secrets do not belong in query files: name the environment variable holding the token with bearer_token_env",
                ));
            }
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    let concurrency = opts.count("concurrency", 64)?;
    Ok(HttpPollSpec {
        url: url.value.clone(),
        ids,
        interval: opts.duration("interval")?.unwrap_or(10_000_000),
        timeout: opts.duration("timeout")?.unwrap_or(2_000_000),
        concurrency: usize::try_from(concurrency).unwrap_or(usize::MAX),
        counters,
        counter_bits,
        interval_column,
        timestamp,
        bearer_token_env: opts.env_name("bearer_token_env")?,
        headers,
        ca_file: opts.get("ca_file").map(|o| opts.base.join(&o.value)),
        max_body: opts.bytes("max_body", DEFAULT_MAX_POLL_BODY)?,
    })
}

fn id_range(option: &TableOption) -> PlanResult<DeviceIds> {
    let bad = || {
        PlanError::at(
            option.value_span,
            format!(
                "expected ids = 'FIRST..LAST' (both included), found '{}'",
                option.value
            ),
        )
    };
    let (first, last) = option.value.split_once("..").ok_or_else(bad)?;
    let first: u64 = first.trim().parse().map_err(|_| bad())?;
    let last: u64 = last.trim().parse().map_err(|_| bad())?;
    if last < first {
        return Err(PlanError::at(
            option.value_span,
            format!(
                "ids '{}' is empty: the last id is below the first",
                option.value
            ),
        ));
    }
    Ok(DeviceIds::Range { first, last })
}

fn mqtt_spec(opts: &Options<'_>, table_span: Span) -> PlanResult<MqttSpec> {
    let broker = opts.required(
        "broker",
        table_span,
        "the broker, as 'mqtt://HOST:PORT' or 'mqtts://HOST:PORT' (TLS)",
    )?;
    let parsed = url::Url::parse(&broker.value).map_err(|e| {
        PlanError::at(
            broker.value_span,
            format!("expected 'mqtt://HOST:PORT' or 'mqtts://HOST:PORT': {e}"),
        )
    })?;
    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" | "tls" => true,
        other => {
            return Err(PlanError::at(
                broker.value_span,
                format!(
                    "expected 'mqtt://HOST:PORT' (TCP) or 'mqtts://HOST:PORT' (TLS), found scheme '{other}'"
                ),
            ));
        }
    };
    let ca_file = opts.get("ca_file");
    if let (Some(option), false) = (ca_file, tls) {
        return Err(PlanError::at(
            option.value_span,
            "ca_file is for a TLS broker: write the broker as 'mqtts://HOST:PORT'",
        ));
    }
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| PlanError::at(broker.value_span, "expected a host in the broker URL"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let topic = opts.required(
        "topic",
        table_span,
        "topic filters such as 'devices/+/traffic'",
    )?;
    let topics: Vec<String> = topic
        .value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    for t in &topics {
        if !rumqttc::valid_filter(t) {
            return Err(PlanError::at(
                topic.value_span,
                format!("'{t}' is not a valid MQTT topic filter"),
            ));
        }
    }
    if topics.is_empty() {
        return Err(PlanError::at(
            topic.value_span,
            "expected at least one topic filter",
        ));
    }
    let qos = match opts.get("qos").map(|o| (o, o.value.trim())) {
        None | Some((_, "0")) => 0,
        Some((_, "1")) => 1,
        Some((o, other)) => {
            return Err(PlanError::at(
                o.value_span,
                format!("expected qos = '0' or '1', found '{other}'"),
            ));
        }
    };
    let device_id_from_topic = match opts.get("device_id_from_topic") {
        None => None,
        Some(o) => Some(
            o.value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|&l| l >= 1)
                .ok_or_else(|| {
                    PlanError::at(
                        o.value_span,
                        format!("expected a topic level counted from 1, found '{}'", o.value),
                    )
                })?,
        ),
    };
    Ok(MqttSpec {
        host,
        port: parsed.port().unwrap_or(if tls { 8883 } else { 1883 }),
        topics,
        qos,
        device_id_from_topic,
        client_id: opts.get("client_id").map(|o| o.value.clone()),
        username_env: opts.env_name("username_env")?,
        password_env: opts.env_name("password_env")?,
        max_body: opts.bytes("max_body", DEFAULT_MAX_POLL_BODY)?,
        tls,
        ca_file: ca_file.map(|o| opts.base.join(&o.value)),
    })
}

/// The options of one table, looked up by key.
struct Options<'a> {
    options: &'a [TableOption],
    base: &'a Path,
}

impl<'a> Options<'a> {
    fn get(&self, key: &str) -> Option<&'a TableOption> {
        self.options.iter().find(|o| o.key == key)
    }

    fn required(&self, key: &str, table_span: Span, what: &str) -> PlanResult<&'a TableOption> {
        self.get(key).ok_or_else(|| {
            PlanError::at(
                table_span,
                format!("missing option `{key}`: expected {what}"),
            )
        })
    }

    fn duration(&self, key: &str) -> PlanResult<Option<i64>> {
        self.get(key)
            .map(|o| duration_option(&o.value, o.value_span, false))
            .transpose()
    }

    fn number(&self, key: &str, default: u64) -> PlanResult<u64> {
        match self.get(key) {
            None => Ok(default),
            Some(o) => o.value.trim().parse().map_err(|_| {
                PlanError::at(
                    o.value_span,
                    format!("expected a whole number for `{key}`, found '{}'", o.value),
                )
            }),
        }
    }

    fn count(&self, key: &str, default: u64) -> PlanResult<u64> {
        let n = self.number(key, default)?;
        match self.get(key) {
            Some(o) if n == 0 => Err(PlanError::at(
                o.value_span,
                format!("`{key}` must be at least 1"),
            )),
            _ => Ok(n),
        }
    }

    fn bytes(&self, key: &str, default: usize) -> PlanResult<usize> {
        match self.get(key) {
            None => Ok(default),
            Some(o) => match crate::size::parse_size(&o.value) {
                Ok(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
                _ => Err(PlanError::at(
                    o.value_span,
                    format!(
                        "expected a size such as '1MiB' for `{key}`, found '{}'",
                        o.value
                    ),
                )),
            },
        }
    }

    fn flag(&self, key: &str) -> PlanResult<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(o) => match o.value.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Ok(true),
                "false" | "no" | "off" => Ok(false),
                other => Err(PlanError::at(
                    o.value_span,
                    format!("expected `{key}` = 'true' or 'false', found '{other}'"),
                )),
            },
        }
    }

    fn format(&self) -> PlanResult<Option<Format>> {
        match self.get("format") {
            None => Ok(None),
            Some(o) => match o.value.trim().to_ascii_lowercase().as_str() {
                "jsonl" | "json" | "ndjson" => Ok(Some(Format::Jsonl)),
                "csv" => Ok(Some(Format::Csv)),
                other => Err(PlanError::at(
                    o.value_span,
                    format!("expected format = 'jsonl' or 'csv', found '{other}'"),
                )),
            },
        }
    }

    /// The name of an environment variable: never the secret itself.
    fn env_name(&self, key: &str) -> PlanResult<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(o) => {
                let name = o.value.trim();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    return Err(PlanError::at(
                        o.value_span,
                        format!(
                            "`{key}` names an environment variable (letters, digits, _), found '{}'; secrets are never written in query files",
                            o.value
                        ),
                    ));
                }
                Ok(Some(name.to_owned()))
            }
        }
    }
}
