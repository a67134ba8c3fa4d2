//! The bytes of a WAL segment: a header, then framed records.
//!
//! ```text
//! header:  "EFWAL\r\n\0"  version u32 LE
//! record:  length u32 LE | crc32 u32 LE of the body | body (length bytes)
//! body:    kind u8 | seq u64 LE | clock i64 LE | kind's fields
//!   1 arrival: key line length u32 | key line | rejects u32 | (reason, raw)* as u32-prefixed text | lines
//!   2 cut:     idle u8
//!   3 arrival with counters (version 2): key line | counter line | rejects ... | lines
//!              (each text u32-prefixed; the counter line: [`crate::source::baselines`])
//! ```
//!
//! A crash can leave the last record of the last segment torn (short, or with bytes
//! the checksum does not cover); the reader stops there and says where, so the writer
//! cuts it off instead of misreading it.

use crate::source::live::{Arrival, Reject};

/// Format version written; readers take this one and refuse newer ones by name.
/// Version 2 added records of kind 3 (an older edgeflow would take one for damage).
pub const WAL_VERSION: u32 = 2;

const MAGIC: &[u8; 8] = b"EFWAL\r\n\0";

/// Bytes before the first record.
pub const HEADER_BYTES: usize = MAGIC.len() + 4;

/// Largest record read back; a longer length field is damage, not data.
const MAX_RECORD: usize = 1 << 30;

const ARRIVAL: u8 = 1;
const CUT: u8 = 2;
const COUNTED_ARRIVAL: u8 = 3;

/// What the log holds, in the order it was accepted.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    /// Readings (and rejects) as one connector received them.
    Arrival(Arrival),
    /// A chunk ends here: every query cuts its input at the same records, so a replay
    /// forms the chunks the first pass formed, and the watermark moves the same way.
    Cut {
        /// The chunk's clock: its latest arrival, or the node's clock for an idle tick.
        clock: i64,
        /// An idle tick: nothing arrived for the source's idle timeout.
        idle: bool,
    },
}

/// The segment header.
pub fn header() -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()..].copy_from_slice(&WAL_VERSION.to_le_bytes());
    h
}

/// Checks a segment header: `Err` says why the segment cannot be read.
pub fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < HEADER_BYTES || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not an edgeflow WAL segment (bad header)".into());
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[MAGIC.len()..HEADER_BYTES]);
    let version = u32::from_le_bytes(v);
    if version > WAL_VERSION {
        return Err(format!(
            "WAL format version {version}, this edgeflow reads up to version {WAL_VERSION}: run a newer edgeflow on this folder"
        ));
    }
    Ok(())
}

fn put_text(out: &mut Vec<u8>, text: &[u8]) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text);
}

/// Appends one framed record to `out`.
pub fn encode(out: &mut Vec<u8>, seq: u64, entry: &Entry) {
    let frame = out.len();
    out.extend_from_slice(&[0u8; 8]);
    let body = out.len();
    match entry {
        Entry::Arrival(a) => {
            out.push(if a.counters.is_some() {
                COUNTED_ARRIVAL
            } else {
                ARRIVAL
            });
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&a.at.to_le_bytes());
            put_text(out, a.key_line.as_deref().unwrap_or_default().as_bytes());
            if let Some(counters) = &a.counters {
                put_text(out, counters.as_bytes());
            }
            out.extend_from_slice(&(a.rejects.len() as u32).to_le_bytes());
            for r in &a.rejects {
                put_text(out, r.reason.as_bytes());
                put_text(out, r.raw.as_bytes());
            }
            out.extend_from_slice(&a.lines);
        }
        Entry::Cut { clock, idle } => {
            out.push(CUT);
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&clock.to_le_bytes());
            out.push(u8::from(*idle));
        }
    }
    let len = (out.len() - body) as u32;
    let crc = crc32fast::hash(&out[body..]);
    out[frame..frame + 4].copy_from_slice(&len.to_le_bytes());
    out[frame + 4..frame + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What [`decode`] found at an offset.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    /// A whole record, and the bytes it took.
    Record(u64, Entry, usize),
    /// Nothing more: the bytes end exactly here.
    End,
    /// A record that is cut short or does not match its checksum.
    Torn(String),
}

/// A cursor over a record's body.
struct Body<'a>(&'a [u8]);

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn text(&mut self) -> Option<String> {
        let n = self.u32()? as usize;
        self.take(n)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// Reads the record at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Decoded {
    if bytes.is_empty() {
        return Decoded::End;
    }
    if bytes.len() < 8 {
        return Decoded::Torn(format!("{} bytes of a record frame", bytes.len()));
    }
    let len = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    if len > MAX_RECORD || bytes.len() - 8 < len {
        return Decoded::Torn(format!(
            "a record of {len} bytes with {} left",
            bytes.len() - 8
        ));
    }
    let body = &bytes[8..8 + len];
    if crc32fast::hash(body) != crc {
        return Decoded::Torn("a record whose checksum does not match".into());
    }
    match parse(body) {
        Some((seq, entry)) => Decoded::Record(seq, entry, 8 + len),
        None => Decoded::Torn("a record of an unknown kind".into()),
    }
}

fn parse(body: &[u8]) -> Option<(u64, Entry)> {
    let mut b = Body(body);
    let kind = b.take(1)?[0];
    let seq = b.u64()?;
    let clock = b.u64()? as i64;
    let entry = match kind {
        ARRIVAL | COUNTED_ARRIVAL => {
            let key = b.text()?;
            let counters = if kind == COUNTED_ARRIVAL {
                Some(b.text()?)
            } else {
                None
            };
            let n = b.u32()? as usize;
            let mut rejects = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let reason = b.text()?;
                let raw = b.text()?;
                rejects.push(Reject { reason, raw });
            }
            Entry::Arrival(Arrival {
                lines: b.0.to_vec(),
                rejects,
                at: clock,
                key_line: (!key.is_empty()).then_some(key),
                counters,
            })
        }
        CUT => Entry::Cut {
            clock,
            idle: b.take(1)?[0] != 0,
        },
        _ => return None,
    };
    Some((seq, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrival() -> Entry {
        Entry::Arrival(Arrival {
            lines: b"{\"device_id\":\"a\"}\n".to_vec(),
            rejects: vec![Reject {
                reason: "line 2: broken".into(),
                raw: "{".into(),
            }],
            at: 1_700_000_000_000_000,
            key_line: Some("{\"key\":\"k\"}".into()),
            counters: None,
        })
    }

    fn counted_arrival() -> Entry {
        Entry::Arrival(Arrival {
            lines: b"{\"device_id\":\"a\",\"bytes_in\":5}\n".to_vec(),
            rejects: Vec::new(),
            at: 1_700_000_000_000_000,
            key_line: None,
            counters: Some("{\"a\":{\"values\":{\"bytes_in\":105},\"at_ms\":1}}".into()),
        })
    }

    #[test]
    fn records_read_back_as_written() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 7, &arrival());
        let cut = Entry::Cut {
            clock: -5,
            idle: true,
        };
        encode(&mut bytes, 8, &cut);
        encode(&mut bytes, 9, &counted_arrival());
        let Decoded::Record(7, first, n) = decode(&bytes) else {
            panic!("first record unread");
        };
        assert_eq!(first, arrival());
        let Decoded::Record(8, second, m) = decode(&bytes[n..]) else {
            panic!("second record unread");
        };
        assert_eq!(second, cut);
        assert_eq!(
            decode(&bytes[n + m..]),
            Decoded::Record(9, counted_arrival(), bytes.len() - n - m)
        );
        assert_eq!(decode(&bytes[bytes.len()..]), Decoded::End);
    }

    #[test]
    fn every_torn_tail_is_detected_never_misread() {
        let mut bytes = Vec::new();
        encode(&mut bytes, 1, &counted_arrival());
        for cut in 1..bytes.len() {
            assert!(
                matches!(decode(&bytes[..cut]), Decoded::Torn(_)),
                "a record cut at {cut} bytes was read"
            );
        }
        for flip in 8..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x20;
            assert!(matches!(decode(&damaged), Decoded::Torn(_)), "byte {flip}");
        }
    }

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let mut h = header();
        assert_eq!(check_header(&h), Ok(()));
        let newer = WAL_VERSION + 1;
        h[8..12].copy_from_slice(&newer.to_le_bytes());
        let Err(e) = check_header(&h) else {
            panic!("version {newer} was read");
        };
        assert!(e.contains(&format!("version {newer}")), "{e}");
        // Segments an earlier edgeflow wrote are read.
        h[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(check_header(&h), Ok(()));
        assert!(check_header(b"PAR1....").is_err());
    }
}
