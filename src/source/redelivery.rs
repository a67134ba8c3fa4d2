//! Recognising an MQTT QoS 1 redelivery of a message that is already in the table's
//! write-ahead log, so that a node killed between logging a message and acknowledging
//! it does not count the message twice.
//!
//! MQTT 3.1.1 (§4.4) has the broker resend, on a resumed session, every QoS 1 message
//! it has no PUBACK for, with the DUP flag and its original packet id; and a packet id
//! is only given to a new message once the PUBACK of the previous one arrived. So a
//! message that comes with DUP set and whose packet id and content (topic and payload)
//! equal those of the last message logged under that id is one already logged: it is
//! acknowledged again and not logged. Anything else is new, including a message the
//! node received but died before logging.
//!
//! Each logged message carries its mark (packet id and digest) in its log record, so
//! the marks survive a crash with the records; a new process reads them back from the
//! segments kept. The one case left is a redelivery that comes after the segment of
//! its first copy was deleted at a checkpoint *and* the process restarted in between:
//! the connection would have had to drop between logging and acknowledging, stay down
//! past a checkpoint, and the node crash before reconnecting. Such a message counts
//! twice, as plain QoS 1 does.

use std::collections::HashMap;
use std::sync::Mutex;

use md5::{Digest, Md5};

/// Where a QoS 1 message stands among those logged: its packet id and a digest of its
/// topic and payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pkid: u16,
    digest: [u8; 16],
}

impl Mark {
    /// The mark of a message received with `pkid` (none at QoS 0, whose id is 0).
    pub fn of(pkid: u16, topic: &str, payload: &[u8]) -> Option<Mark> {
        if pkid == 0 {
            return None;
        }
        let mut md5 = Md5::new();
        md5.update((topic.len() as u64).to_le_bytes());
        md5.update(topic.as_bytes());
        md5.update(payload);
        Some(Mark {
            pkid,
            digest: md5.finalize().into(),
        })
    }

    /// How the mark is kept in the log record of the message.
    pub fn line(&self) -> String {
        let hex: String = self.digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("mqtt {} {hex}", self.pkid)
    }

    /// Reads [`Mark::line`] back; `None` for anything else.
    fn parse(line: &str) -> Option<Mark> {
        let mut parts = line.split(' ');
        if parts.next() != Some("mqtt") {
            return None;
        }
        let pkid = parts.next()?.parse().ok()?;
        let hex = parts.next()?;
        if hex.len() != 32 || parts.next().is_some() {
            return None;
        }
        let mut digest = [0u8; 16];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Mark { pkid, digest })
    }
}

/// The mark of the last message logged (or being logged) under each packet id.
#[derive(Debug, Default)]
pub struct Marks {
    last: Mutex<HashMap<u16, [u8; 16]>>,
}

impl Marks {
    /// The marks read back from the log's records, oldest first.
    pub fn recovered(lines: &[String]) -> Marks {
        let marks = Marks::default();
        for mark in lines.iter().filter_map(|l| Mark::parse(l)) {
            marks.note(mark);
        }
        marks
    }

    /// Whether a message delivered again (`dup`) with `mark` is the last one logged
    /// under its packet id.
    pub fn logged(&self, mark: &Mark) -> bool {
        self.lock().get(&mark.pkid) == Some(&mark.digest)
    }

    /// The message with `mark` is being logged. Noted before its log write answers, so
    /// a redelivery that overtakes the answer is still recognised; [`Marks::forget`]
    /// takes it back if the write fails.
    pub fn note(&self, mark: Mark) {
        self.lock().insert(mark.pkid, mark.digest);
    }

    /// The message with `mark` could not be logged.
    pub fn forget(&self, mark: &Mark) {
        let mut last = self.lock();
        if last.get(&mark.pkid) == Some(&mark.digest) {
            last.remove(&mark.pkid);
        }
    }

    /// Packet ids with a mark.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no packet id has a mark.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u16, [u8; 16]>> {
        self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redelivery_is_the_last_message_logged_under_its_id_with_the_same_content() {
        let Some(first) = &Mark::of(7, "devices/a/traffic", b"{\"ts\":1}") else {
            panic!("QoS 1 has a mark");
        };
        assert_eq!(Mark::of(0, "t", b"x"), None, "QoS 0 has none");
        let lines = vec![
            first.line(),
            "{\"key\":\"a push key line\"}".to_owned(),
            "mqtt 7 not-hex".to_owned(),
        ];
        let marks = Marks::recovered(&lines);
        assert_eq!(marks.len(), 1);
        assert!(marks.logged(first));
        // The same id with other content, or other content under the topic: new.
        let other = Mark::of(7, "devices/a/traffic", b"{\"ts\":2}");
        assert!(other.is_some_and(|m| !marks.logged(&m)));
        let moved = Mark::of(7, "devices/b/traffic", b"{\"ts\":1}");
        assert!(moved.is_some_and(|m| !marks.logged(&m)));
        // The id is reused once acknowledged: the newest message under it counts.
        if let Some(m) = other {
            marks.note(m);
            assert!(!marks.logged(first));
            marks.forget(&m);
            assert!(!marks.logged(&m), "a failed write is not logged");
        }
        assert_eq!(Mark::parse(&first.line()), Some(*first));
    }
}
