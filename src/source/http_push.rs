//! `connector = 'http_push'`: readings POSTed to `/ingest/<table>` as JSON lines or a
//! JSON array, gzip accepted.
//!
//! A request is checked whole before it is answered: every line is decoded with the
//! table's schema (and a reading too far ahead of the node's clock is refused), so the
//! answer says exactly what was accepted and names the bad lines, which go to the dead
//! letters. Nothing is accepted that the node cannot keep: when the queries cannot take
//! more, or the sync quota is full under `backpressure`, the answer is 503 with
//! `Retry-After`, never 200 and a silent drop.

use std::collections::HashSet;
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::idempotency::{Keys, Seen, body_digest, valid_key};
use super::live::{Arrival, Feed, KeyKeeper, Reject, now_micros};
use crate::batch::Interner;
use crate::decode::{Decoder, JsonDecoder};
use crate::query::SourceSchema;
use crate::query::connector::HttpPushSpec;

/// Bad lines named in an answer; the rest are only counted (all go to dead letters).
pub const ERRORS_IN_ANSWER: usize = 10;

/// The answer to an accepted request.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PushOutcome {
    /// Readings accepted.
    pub accepted: u64,
    /// Lines refused (dead-lettered).
    pub rejected: u64,
    /// The first few refusals, with their line numbers (1-based, in the request).
    pub errors: Vec<PushLineError>,
}

/// One refused line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PushLineError {
    /// Line in the request (element, for a JSON array), from 1.
    pub line: u64,
    /// Why.
    pub reason: String,
}

/// Why a request was refused whole.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushRefusal {
    /// The body is over the limit (413).
    #[error("body larger than {limit} bytes (max_body)")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// A content type or encoding the endpoint does not read (415).
    #[error("{0}")]
    Unsupported(String),
    /// The body cannot be read at all (400).
    #[error("{0}")]
    Malformed(String),
    /// The node cannot keep more now (503).
    #[error("the node cannot take more readings now; retry later")]
    Busy,
    /// The batch could not be written ahead to disk (503): it is not accepted.
    #[error("the batch could not be written to the node's log ({0}); retry later")]
    NotLogged(String),
    /// The `Idempotency-Key` was used before for another body (422).
    #[error(
        "Idempotency-Key {0} was used for another batch; a resend must repeat the first body byte for byte"
    )]
    KeyReused(String),
}

/// One pushable table.
pub struct PushTable {
    schema: Arc<SourceSchema>,
    spec: HttpPushSpec,
    feed: Arc<Feed>,
    /// Keys of batches accepted lately, and of those being ingested now.
    keys: Mutex<KeyTable>,
    /// Signalled when a key's batch is settled, for a resend that raced it.
    settled: Condvar,
}

/// How long a key line may wait in the keys file's page cache before an fsync: until
/// then its batch's log record, which holds the line too, is kept.
const KEYS_SYNC: Duration = Duration::from_secs(1);

/// The keys of one table. Only a key's own batches wait for each other: keyed batches
/// under different keys are decoded and logged at once, so they share the log's group
/// commit.
struct KeyTable {
    keys: Keys,
    /// Keys whose batch is being decoded and logged now.
    in_flight: HashSet<String>,
    /// Log records of batches whose key line is not fsync'd in the keys file yet.
    unkept: Vec<u64>,
    synced: Instant,
}

impl PushTable {
    /// The endpoint of `schema`'s table, publishing into `feed`, which asks it to keep
    /// its keys when the log is cut.
    pub fn new(
        schema: &SourceSchema,
        spec: &HttpPushSpec,
        feed: Arc<Feed>,
        keys: Keys,
    ) -> Arc<Self> {
        let table = Arc::new(PushTable {
            schema: Arc::new(schema.clone()),
            spec: spec.clone(),
            feed,
            keys: Mutex::new(KeyTable {
                keys,
                in_flight: HashSet::new(),
                unkept: Vec::new(),
                synced: Instant::now(),
            }),
            settled: Condvar::new(),
        });
        let keeper = Arc::downgrade(&table);
        table.feed.keep_keys_with(keeper);
        table
    }

    /// Takes one request's body: decodes it whole (the answer names each bad line),
    /// logs the good readings and answers once they are durable; with an
    /// `Idempotency-Key`, a batch accepted before under that key is answered as then
    /// (`Ok((outcome, true))`) and not ingested again.
    pub fn ingest_once(
        &self,
        key: Option<&str>,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
        origin: &str,
    ) -> Result<(PushOutcome, bool), PushRefusal> {
        let Some(key) = key else {
            let (outcome, arrival) = self.decode(content_type, content_encoding, body, origin)?;
            self.log(arrival)?;
            return Ok((outcome, false));
        };
        valid_key(key).map_err(PushRefusal::Malformed)?;
        let digest = body_digest(body);
        {
            let mut table = self.table();
            // A resend racing its first copy waits for that one's answer.
            while table.in_flight.contains(key) {
                table = self.settled.wait(table).unwrap_or_else(|p| p.into_inner());
            }
            match table.keys.check(key, &digest, body, now_micros()) {
                Seen::Again(outcome) => return Ok((outcome, true)),
                Seen::OtherBody => return Err(PushRefusal::KeyReused(key.to_owned())),
                Seen::New => {}
            }
            table.in_flight.insert(key.to_owned());
        }
        let logged = self
            .decode(content_type, content_encoding, body, origin)
            .and_then(|(outcome, mut arrival)| {
                // The key is logged with the batch: after a crash, both are there or
                // neither.
                let line = Keys::line(key, &digest, &outcome, now_micros());
                arrival.key_line = Some(line.clone());
                Ok((outcome, line, self.log(arrival)?))
            });
        let mut table = self.table();
        table.in_flight.remove(key);
        let result = logged.map(|(outcome, line, seq)| {
            // The batch is in: answer 200 even if the key cannot be kept, so the client
            // does not resend it; only a resend after a lost answer could then count
            // twice.
            if let Err(e) = table.keys.record(&line) {
                tracing::error!(error = %e, table = %self.schema.name, "Idempotency-Key not kept");
            }
            table.unkept.extend(seq);
            if table.synced.elapsed() >= KEYS_SYNC {
                self.keep_keys(&mut table);
            }
            (outcome, false)
        });
        drop(table);
        self.settled.notify_all();
        result
    }

    fn table(&self) -> MutexGuard<'_, KeyTable> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A push refused for want of room keeps the keys still waiting for their fsync and
    /// tells the feed ([`crate::source::live::Feed::refused`]): the log keeps every
    /// record whose key is not kept, keys were kept only by the pushes taken, and the log
    /// was cut only at checkpoints, which need readings taken; so once the log alone
    /// filled the quota (after an uplink outage) every push was refused for good.
    fn refused_for_room(&self) {
        self.keep_waiting_keys();
        self.feed.refused();
    }
}

impl KeyKeeper for PushTable {
    fn keep_waiting_keys(&self) {
        let mut table = self.table();
        if !table.unkept.is_empty() {
            self.keep_keys(&mut table);
        }
    }
}

impl PushTable {
    /// Fsyncs the keys file; the log need not keep the records of those keys any more.
    fn keep_keys(&self, table: &mut KeyTable) {
        match table.keys.sync() {
            Ok(()) => {
                for seq in table.unkept.drain(..) {
                    self.feed.key_kept(seq);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, table = %self.schema.name, "Idempotency-Keys not kept")
            }
        }
        table.synced = Instant::now();
    }

    /// The longest body taken, before decompression too.
    pub fn max_body(&self) -> usize {
        self.spec.max_body
    }

    /// Hands a batch to the table's log and waits until it is durable there; returns
    /// its record number (none: nothing to log).
    fn log(&self, arrival: Arrival) -> Result<Option<u64>, PushRefusal> {
        if arrival.lines.is_empty() && arrival.rejects.is_empty() && arrival.key_line.is_none() {
            return Ok(None);
        }
        match self.feed.append(arrival).blocking_recv() {
            Ok(Ok(seq)) => Ok(Some(seq)),
            Ok(Err(e)) => Err(PushRefusal::NotLogged(e)),
            Err(_) => Err(PushRefusal::NotLogged("the table stopped".into())),
        }
    }

    /// Reads one request's body: `content_type` and `content_encoding` as sent,
    /// `origin` naming the request in dead letters.
    fn decode(
        &self,
        content_type: Option<&str>,
        content_encoding: Option<&str>,
        body: &[u8],
        origin: &str,
    ) -> Result<(PushOutcome, Arrival), PushRefusal> {
        let kind = content_type
            .map(|t| {
                t.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if !matches!(
            kind.as_str(),
            "" | "application/x-ndjson"
                | "application/ndjson"
                | "application/jsonl"
                | "application/json-lines"
                | "application/json"
                | "text/plain"
        ) {
            return Err(PushRefusal::Unsupported(format!(
                "content type {kind} is not read here: send application/x-ndjson (JSON lines) or application/json (an array)"
            )));
        }
        if body.len() > self.spec.max_body {
            return Err(PushRefusal::TooLarge {
                limit: self.spec.max_body,
            });
        }
        let inflated;
        let body = match content_encoding
            .map(|e| e.trim().to_ascii_lowercase())
            .as_deref()
        {
            None | Some("") | Some("identity") => body,
            Some("gzip") | Some("x-gzip") => {
                inflated = gunzip(body, self.spec.max_body)?;
                &inflated[..]
            }
            Some(other) => {
                return Err(PushRefusal::Unsupported(format!(
                    "content encoding {other} is not read here: send gzip or nothing"
                )));
            }
        };
        let lines = as_lines(body)?;
        if !self.feed.has_room(lines.len()) {
            self.refused_for_room();
            return Err(PushRefusal::Busy);
        }
        let mut decoder = Decoder::Json(JsonDecoder::new(&self.schema));
        let mut interner = Interner::new();
        let clock_now = now_micros();
        let chunk = decoder.decode_live(
            &lines,
            &mut interner,
            clock_now,
            self.schema.connector.max_ahead_of_clock,
        );
        let mut outcome = PushOutcome {
            accepted: chunk.batch.len as u64,
            rejected: chunk.bad.len() as u64,
            errors: Vec::new(),
        };
        let mut rejects = Vec::with_capacity(chunk.bad.len());
        let mut good = Vec::with_capacity(lines.len());
        let mut bad_lines: Vec<u64> = chunk.bad.iter().map(|b| b.line).collect();
        bad_lines.sort_unstable();
        for bad in &chunk.bad {
            if outcome.errors.len() < ERRORS_IN_ANSWER {
                outcome.errors.push(PushLineError {
                    line: bad.line + 1,
                    reason: bad.reason.clone(),
                });
            }
            rejects.push(Reject {
                reason: format!("{origin} line {}: {}", bad.line + 1, bad.reason),
                raw: bad.raw.clone(),
            });
        }
        for (i, line) in lines.split_inclusive(|&b| b == b'\n').enumerate() {
            if bad_lines.binary_search(&(i as u64)).is_err() && !line.trim_ascii().is_empty() {
                good.extend_from_slice(line);
                if !line.ends_with(b"\n") {
                    good.push(b'\n');
                }
            }
        }
        let arrival = Arrival {
            lines: good,
            rejects,
            at: clock_now,
            key_line: None,
            counters: None,
        };
        Ok((outcome, arrival))
    }
}

fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, PushRefusal> {
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| PushRefusal::Malformed(format!("broken gzip body: {e}")))?;
    if out.len() > limit {
        return Err(PushRefusal::TooLarge { limit });
    }
    Ok(out)
}

/// JSON lines as they are; a JSON array (or one object) as one line per element.
fn as_lines(body: &[u8]) -> Result<Vec<u8>, PushRefusal> {
    let trimmed = body.trim_ascii_start();
    if !trimmed.starts_with(b"[") {
        return Ok(body.to_vec());
    }
    let elements: Vec<serde_json::Value> = serde_json::from_slice(trimmed)
        .map_err(|e| PushRefusal::Malformed(format!("broken JSON array: {e}")))?;
    let mut lines = Vec::with_capacity(body.len());
    for element in elements {
        // One line per element, whatever its layout in the request.
        serde_json::to_writer(&mut lines, &element)
            .map_err(|e| PushRefusal::Malformed(e.to_string()))?;
        lines.push(b'\n');
    }
    Ok(lines)
}
