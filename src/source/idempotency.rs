//! `Idempotency-Key` on pushes: a batch resent with the key of one already accepted
//! (because its answer was lost, or the node restarted) gets the first answer again and
//! is counted once. A key comes back with another body only by mistake: that is
//! refused, not guessed at.
//!
//! Keys live for the table's `idempotency_ttl` in
//! `<output>/_state/_push/<table>/idempotency.jsonl`, one JSON line per key. The line
//! is durable before the answer goes out as part of its batch's log record; the file
//! gets it at once and fsyncs it within a second, and the log keeps the record until
//! then. A torn last line (a crash while appending) is skipped; the file is rewritten
//! without expired keys once they make up most of it.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::http_push::PushOutcome;
use crate::jsonl_format::Format;

/// The keys file's layout; its first line says which version a file holds. Version 2
/// names bodies by [`body_digest`]; version 1 (and files without a header) by MD5.
pub const FORMAT: Format = Format {
    name: "edgeflow-idempotency-keys",
    version: 2,
};

/// How a version 2 body digest starts.
const SHA256: &str = "sha256:";

/// What a key remembers of its batch's body: SHA-256, which the CPU's SHA extensions
/// compute at about twice the speed of MD5 (every keyed push pays it).
pub fn body_digest(body: &[u8]) -> String {
    use std::fmt::Write;
    let digest = ring::digest::digest(&ring::digest::SHA256, body);
    let mut text = String::with_capacity(SHA256.len() + 64);
    text.push_str(SHA256);
    for byte in digest.as_ref() {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Longest key taken, in bytes (Stripe's limit; UUIDs and ULIDs fit many times).
pub const MAX_KEY_BYTES: usize = 255;

/// What a key says about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not seen within the time keys are kept: ingest the batch.
    New,
    /// The same batch was accepted before, with this answer.
    Again(PushOutcome),
    /// The key was used for another body.
    OtherBody,
}

/// Why the keys file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("idempotency keys {path}: {source}")]
pub struct KeysError {
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

/// One key, as kept on disk.
#[derive(Serialize, Deserialize)]
struct Line {
    key: String,
    /// When the batch was accepted, microseconds since the epoch.
    at: i64,
    /// [`body_digest`] of the body as sent (MD5 hex in version 1).
    body: String,
    outcome: PushOutcome,
}

/// The keys of one push table.
pub struct Keys {
    path: Option<PathBuf>,
    file: Option<File>,
    ttl: i64,
    entries: HashMap<String, Line>,
    /// Keys by age, for expiry.
    order: VecDeque<(i64, String)>,
    /// Lines in the file, live or not.
    lines: usize,
    /// Lines written since the last fsync.
    unsynced: bool,
}

impl Keys {
    /// Keys kept for `ttl` microseconds, in the file `path` (or in memory only), with
    /// those of earlier runs that have not expired by `now`.
    ///
    /// `logged` are key lines read back from the table's write-ahead log: a batch
    /// logged just before a crash is known by its key even if this file missed it.
    pub fn open(
        path: Option<PathBuf>,
        ttl: i64,
        now: i64,
        logged: &[String],
    ) -> Result<Keys, KeysError> {
        let mut keys = Keys {
            path,
            file: None,
            ttl,
            entries: HashMap::new(),
            order: VecDeque::new(),
            lines: 0,
            unsynced: false,
        };
        let Some(path) = keys.path.clone() else {
            return Ok(keys);
        };
        let fail = |source| KeysError {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        match File::open(&path) {
            Ok(file) => {
                for line in FORMAT.lines(BufReader::new(file)) {
                    let line = line.map_err(fail)?;
                    // A torn or foreign line cannot name a key we answered for.
                    let Ok(line) = serde_json::from_str(&line) else {
                        continue;
                    };
                    keys.insert(line);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
        for text in logged {
            if let Ok(line) = serde_json::from_str::<Line>(text)
                && !keys.entries.contains_key(&line.key)
            {
                keys.insert(line);
            }
        }
        keys.expire(now);
        keys.rewrite().map_err(fail)?;
        Ok(keys)
    }

    fn insert(&mut self, line: Line) {
        self.order.push_back((line.at, line.key.clone()));
        self.entries.insert(line.key.clone(), line);
    }

    fn expire(&mut self, now: i64) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_sub(*at) < self.ttl {
                break;
            }
            if let Some((at, key)) = self.order.pop_front()
                && self.entries.get(&key).is_some_and(|e| e.at == at)
            {
                self.entries.remove(&key);
            }
        }
    }

    /// Whether `key` was accepted before for `body`, whose [`body_digest`] is `digest`,
    /// as of `now`.
    pub fn check(&mut self, key: &str, digest: &str, body: &[u8], now: i64) -> Seen {
        self.expire(now);
        match self.entries.get(key) {
            None => Seen::New,
            Some(e) if e.body == digest => Seen::Again(e.outcome.clone()),
            // Kept by a version 1 file: the digest was MD5 then.
            Some(e) if !e.body.starts_with(SHA256) && e.body == crate::digest::md5_hex(body) => {
                Seen::Again(e.outcome.clone())
            }
            Some(_) => Seen::OtherBody,
        }
    }

    /// The line that records the batch of [`body_digest`] `digest` accepted under `key`
    /// with `outcome`: logged with the batch, then kept by [`Keys::record`].
    pub fn line(key: &str, digest: &str, outcome: &PushOutcome, now: i64) -> String {
        let line = Line {
            key: key.to_owned(),
            at: now,
            body: digest.to_owned(),
            outcome: outcome.clone(),
        };
        serde_json::to_string(&line).unwrap_or_default()
    }

    /// Keeps a key line made by [`Keys::line`]; durable once [`Keys::sync`] returns
    /// (the batch's log record holds the line until then).
    pub fn record(&mut self, text: &str) -> Result<(), KeysError> {
        let Ok(line) = serde_json::from_str::<Line>(text) else {
            return Ok(());
        };
        self.insert(line);
        let (Some(path), Some(file)) = (self.path.as_ref(), self.file.as_mut()) else {
            return Ok(());
        };
        let fail = |source| KeysError {
            path: path.clone(),
            source,
        };
        let mut text = text.as_bytes().to_vec();
        text.push(b'\n');
        file.write_all(&text).map_err(fail)?;
        self.unsynced = true;
        self.lines += 1;
        if self.lines > 1024 && self.lines > 2 * self.entries.len() {
            let path = path.clone();
            self.rewrite()
                .map_err(|source| KeysError { path, source })?;
        }
        Ok(())
    }

    /// Makes every key recorded so far durable.
    pub fn sync(&mut self) -> Result<(), KeysError> {
        if let (true, Some(path), Some(file)) = (self.unsynced, &self.path, &self.file) {
            file.sync_data().map_err(|source| KeysError {
                path: path.clone(),
                source,
            })?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// Writes the live keys to a fresh file and appends from there on.
    fn rewrite(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut text = FORMAT.header().into_bytes();
        for (at, key) in &self.order {
            if let Some(line) = self.entries.get(key).filter(|l| l.at == *at) {
                serde_json::to_writer(&mut text, line)?;
                text.push(b'\n');
            }
        }
        crate::sink::commit::commit_bytes(path, &text)?;
        self.unsynced = false;
        self.lines = self.entries.len();
        self.file = Some(OpenOptions::new().append(true).open(path)?);
        Ok(())
    }
}

/// Where a table's keys are kept under the output root.
pub fn keys_file(root: &Path, table: &str) -> PathBuf {
    root.join("_state")
        .join("_push")
        .join(table)
        .join("idempotency.jsonl")
}

/// Checks a key as sent: visible ASCII, at most [`MAX_KEY_BYTES`].
pub fn valid_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_BYTES} bytes long"
        ));
    }
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("Idempotency-Key must be visible ASCII without spaces".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(accepted: u64) -> PushOutcome {
        PushOutcome {
            accepted,
            ..PushOutcome::default()
        }
    }

    #[test]
    fn keys_answer_again_refuse_other_bodies_expire_and_survive_a_restart()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("t").join("idempotency.jsonl");
        let mut keys = Keys::open(Some(path.clone()), 100, 0, &[])?;
        assert_eq!(keys.check("a", "m1", b"", 0), Seen::New);
        keys.record(&Keys::line("a", "m1", &outcome(3), 0))?;
        keys.record(&Keys::line("b", "m2", &outcome(4), 50))?;
        assert_eq!(keys.check("a", "m1", b"", 10), Seen::Again(outcome(3)));
        assert_eq!(keys.check("a", "other", b"", 10), Seen::OtherBody);
        drop(keys);
        // A crash tore the last line.
        let mut file = OpenOptions::new().append(true).open(&path)?;
        file.write_all(b"{\"key\":\"c\",\"at\":6")?;
        // The batch of key d was logged, and the crash came before its key was kept.
        let logged = [Keys::line("d", "m4", &outcome(5), 55)];
        let mut keys = Keys::open(Some(path.clone()), 100, 60, &logged)?;
        assert_eq!(keys.check("a", "m1", b"", 60), Seen::Again(outcome(3)));
        assert_eq!(keys.check("d", "m4", b"", 60), Seen::Again(outcome(5)));
        assert_eq!(keys.check("c", "m3", b"", 60), Seen::New);
        assert_eq!(keys.check("a", "m1", b"", 100), Seen::New, "expired");
        assert_eq!(keys.check("b", "m2", b"", 100), Seen::Again(outcome(4)));
        drop(keys);
        let keys = Keys::open(Some(path.clone()), 100, 149, &[])?;
        assert_eq!(keys.entries.len(), 2, "only b and d are left");
        drop(keys);
        let text = std::fs::read_to_string(&path)?;
        assert_eq!(text.lines().next(), Some(FORMAT.header().trim_end()));
        // A newer edgeflow's file is refused by name, not read as if it had no keys.
        let newer = text.replacen(
            &format!("\"version\":{}", FORMAT.version),
            "\"version\":9",
            1,
        );
        std::fs::write(&path, newer)?;
        let refused = Keys::open(Some(path), 100, 149, &[]).err();
        let message = refused.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.contains("idempotency.jsonl") && message.contains("version 9"),
            "{message}"
        );
        Ok(())
    }

    #[test]
    fn a_key_kept_by_a_version_1_file_knows_its_body_by_md5()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("idempotency.jsonl");
        let body = b"{\"device_id\":\"d\",\"ts\":1}\n";
        // A file of the previous version: no header, MD5 bodies.
        let old = Keys::line("k", &crate::digest::md5_hex(body), &outcome(1), 0);
        std::fs::write(&path, format!("{old}\n"))?;
        let mut keys = Keys::open(Some(path), 100, 10, &[])?;
        let digest = body_digest(body);
        assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64);
        assert_eq!(keys.check("k", &digest, body, 10), Seen::Again(outcome(1)));
        assert_eq!(
            keys.check("k", &body_digest(b"other"), b"other", 10),
            Seen::OtherBody
        );
        Ok(())
    }

    #[test]
    fn keys_must_be_short_visible_ascii() {
        assert!(valid_key("7d0b6f1e-2b8a-4c55-9a55-0f5f3c1d9e21").is_ok());
        assert!(valid_key("").is_err());
        assert!(valid_key("a b").is_err());
        assert!(valid_key(&"k".repeat(256)).is_err());
    }
}
