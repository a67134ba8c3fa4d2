//! Per-worker string interning: each distinct text value gets a dense `u32` id.
//!
//! Decoding interns text fields as it reads them, so grouping by a text column costs one
//! hash of the raw bytes per reading and nothing more: the id is the group key. Ids are
//! local to one worker; anything that crosses workers carries the text itself.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Strings up to this long live in the hash-table entry itself, so finding one touches
/// the table and nothing else: at a million distinct keys every extra access is a cache
/// miss.
const INLINE: usize = 16;

/// A hash-table entry: the id, and the text inline when it is short.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u32,
    len: u32,
    inline: [u8; INLINE],
}

/// A set of strings, each with a dense id in order of first appearance.
#[derive(Debug, Default)]
pub struct Interner {
    table: HashTable<Entry>,
    /// `ends[i]` is where string `i` ends in `bytes`; it starts where `i - 1` ends.
    ends: Vec<u32>,
    /// UTF-8 text of every string, back to back.
    bytes: Vec<u8>,
    hasher: foldhash::fast::FixedState,
}

/// Equality of short byte strings without a call to `memcmp`: interned keys are mostly a
/// few bytes long, where the call costs more than the comparison.
#[inline(always)]
fn load4(s: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(s[at..at + 4].try_into().unwrap_or_default())
}

#[inline(always)]
fn load8(s: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(s[at..at + 8].try_into().unwrap_or_default())
}

/// Equality of short byte strings without a call to `memcmp`: interned keys and JSON key
/// tokens are mostly a few bytes long, where the call costs more than the comparison.
#[inline]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two overlapping loads cover any length in 4..=8 or 8..=16.
    match n {
        0 => true,
        1..4 => a[0] == b[0] && a[n / 2] == b[n / 2] && a[n - 1] == b[n - 1],
        4..8 => load4(a, 0) == load4(b, 0) && load4(a, n - 4) == load4(b, n - 4),
        8..=16 => load8(a, 0) == load8(b, 0) && load8(a, n - 8) == load8(b, n - 8),
        _ => a == b,
    }
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    #[inline]
    fn slice(ends: &[u32], id: u32) -> std::ops::Range<usize> {
        let id = id as usize;
        let start = if id == 0 { 0 } else { ends[id - 1] as usize };
        start..ends[id] as usize
    }

    /// The id of `text`, adding it when new.
    #[inline]
    pub fn intern(&mut self, text: &str) -> u32 {
        self.intern_utf8(text.as_bytes())
    }

    /// The id of `text`, which the caller has checked is UTF-8.
    #[inline]
    pub fn intern_utf8(&mut self, text: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(text);
        let (ends, bytes) = (&self.ends, &self.bytes);
        let found = self.table.find(hash, |e| {
            e.len as usize == text.len()
                && if text.len() <= INLINE {
                    bytes_eq(&e.inline[..text.len()], text)
                } else {
                    bytes_eq(&bytes[Self::slice(ends, e.id)], text)
                }
        });
        if let Some(e) = found {
            return e.id;
        }
        let id = self.ends.len() as u32;
        self.bytes.extend_from_slice(text);
        self.ends.push(self.bytes.len() as u32);
        let mut inline = [0u8; INLINE];
        if text.len() <= INLINE {
            inline[..text.len()].copy_from_slice(text);
        }
        let entry = Entry {
            id,
            len: text.len() as u32,
            inline,
        };
        let (ends, bytes, hasher) = (&self.ends, &self.bytes, &self.hasher);
        self.table.insert_unique(hash, entry, |e| {
            hasher.hash_one(&bytes[Self::slice(ends, e.id)])
        });
        id
    }

    /// The id of `text` if it was interned before.
    pub fn lookup(&self, text: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(text.as_bytes());
        self.table
            .find(hash, |e| self.get(e.id) == text)
            .map(|e| e.id)
    }

    /// The UTF-8 bytes of an id handed out by this interner.
    #[inline]
    pub fn get_bytes(&self, id: u32) -> &[u8] {
        &self.bytes[Self::slice(&self.ends, id)]
    }

    /// The text of an id handed out by this interner.
    #[inline]
    pub fn get(&self, id: u32) -> &str {
        // Only UTF-8 is ever interned, so the check cannot fail.
        std::str::from_utf8(&self.bytes[Self::slice(&self.ends, id)]).unwrap_or_default()
    }

    /// How many distinct strings are interned.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether nothing is interned yet.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Heap bytes held, for state accounting.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
            + self.ends.capacity() * 4
            + self.table.capacity() * (std::mem::size_of::<Entry>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_stable() {
        let mut i = Interner::new();
        assert_eq!(i.intern("b"), 0);
        assert_eq!(i.intern("a"), 1);
        assert_eq!(i.intern("b"), 0);
        assert_eq!(i.intern(""), 2);
        assert_eq!(i.get(1), "a");
        assert_eq!(i.get(2), "");
        assert_eq!(i.lookup("a"), Some(1));
        assert_eq!(i.lookup("c"), None);
        for n in 0..10_000 {
            let s = format!("dev-{n}-{}", "x".repeat(n % 20));
            let id = i.intern(&s);
            assert_eq!(i.get(id), s);
            assert_eq!(i.intern(&s), id);
        }
        assert_eq!(i.len(), 10_003);
    }

    #[test]
    fn short_equality() {
        for n in 0..40 {
            let a: Vec<u8> = (0..n).map(|k| k as u8).collect();
            assert!(bytes_eq(&a, &a.clone()));
            for k in 0..n {
                let mut b = a.clone();
                b[k] ^= 1;
                assert!(!bytes_eq(&a, &b), "{n} {k}");
            }
        }
    }
}
