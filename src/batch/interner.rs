//! Per-worker string interning: each distinct text value gets a dense `u32` id.
//!
//! Decoding interns text fields as it reads them, so grouping by a text column costs one
//! hash of the raw bytes per reading and nothing more: the id is the group key. Ids are
//! local to one worker; anything that crosses workers carries the text itself.
//!
//! The table is hand-rolled open addressing rather than a general hash map because its
//! slot layout is the cost at a million keys: see [`Slot`].

use std::hash::BuildHasher;

/// Strings up to this long live in the table slot itself, so finding one touches the
/// slot and nothing else: at a million distinct keys every extra access is a cache miss.
const INLINE: usize = 16;

/// Beyond this size the table no longer fits in one core's L2 cache (1 to 2 MiB on
/// current server cores, with room left for the accumulators).
const LARGE_TABLE_BYTES: usize = 1 << 20;

/// One slot of the open-addressing table. 32 bytes and aligned to 32, so a slot never
/// straddles two cache lines: a lookup that hits its first slot costs one miss, where a
/// table with separate control bytes costs two.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
struct Slot {
    /// The full hash: compared before the text, and reused when the table grows, so
    /// growing never reads the strings.
    hash: u64,
    /// The id plus one; 0 marks an empty slot.
    id: u32,
    len: u32,
    inline: [u8; INLINE],
}

const EMPTY: Slot = Slot {
    hash: 0,
    id: 0,
    len: 0,
    inline: [0; INLINE],
};

/// A set of strings, each with a dense id in order of first appearance.
#[derive(Debug, Default)]
pub struct Interner {
    /// Linear probing over a power-of-two table, at most seven eighths full: lookups of
    /// known keys (the common case) rarely probe past the next slot, and a fuller table
    /// stays in cache longer.
    slots: Vec<Slot>,
    /// `ends[i]` is where string `i` ends in `bytes`; it starts where `i - 1` ends. `u64`
    /// because a long-running worker can intern more than 4 GiB of text over its life,
    /// and a `u32` offset would wrap and hand back the wrong text.
    ends: Vec<u64>,
    /// UTF-8 text of every string, back to back.
    bytes: Vec<u8>,
    hasher: foldhash::fast::FixedState,
}

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
    fn slice(ends: &[u64], id: u32) -> std::ops::Range<usize> {
        let id = id as usize;
        let start = if id == 0 { 0 } else { ends[id - 1] as usize };
        start..ends[id] as usize
    }

    /// The id of `text`, adding it when new.
    #[inline]
    pub fn intern(&mut self, text: &str) -> u32 {
        self.intern_utf8(text.as_bytes())
    }

    /// The slot holding `text` (of hash `hash`), or the empty slot where it belongs.
    #[inline(always)]
    fn probe(&self, hash: u64, text: &[u8]) -> usize {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        loop {
            let slot = &self.slots[at];
            if slot.id == 0 {
                return at;
            }
            if slot.hash == hash && slot.len as usize == text.len() {
                let same = if text.len() <= INLINE {
                    bytes_eq(&slot.inline[..text.len()], text)
                } else {
                    bytes_eq(&self.bytes[Self::slice(&self.ends, slot.id - 1)], text)
                };
                if same {
                    return at;
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// The id of `text`, which the caller has checked is UTF-8.
    #[inline]
    pub fn intern_utf8(&mut self, text: &[u8]) -> u32 {
        self.intern_hashed(self.hash(text), text)
    }

    /// The hash the table files `text` under, for [`Interner::intern_hashed`].
    #[inline]
    pub fn hash(&self, text: &[u8]) -> u64 {
        self.hasher.hash_one(text)
    }

    /// Whether the table has outgrown a core's caches, so that nearly every lookup of a
    /// key waits on memory and lookups are worth batching (see
    /// `decode::deferred`).
    #[inline]
    pub fn is_large(&self) -> bool {
        self.slots.len() * size_of::<Slot>() > LARGE_TABLE_BYTES
    }

    /// Starts fetching the slot where a lookup of `hash` begins, so that a lookup a few
    /// keys later finds it in the cache.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        if !self.slots.is_empty() {
            prefetch_index::prefetch_index(&self.slots, hash as usize & (self.slots.len() - 1));
        }
    }

    /// The id of UTF-8 `text`, whose [`Interner::hash`] is `hash`.
    ///
    /// A known text (nearly every reading) is found where the decoder calls this; a new
    /// one is added out of line.
    #[inline(always)]
    pub fn intern_hashed(&mut self, hash: u64, text: &[u8]) -> u32 {
        if (self.ends.len() + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let at = self.probe(hash, text);
        match self.slots[at].id {
            0 => self.insert(at, hash, text),
            id => id - 1,
        }
    }

    /// Files new `text` at the empty slot `at`.
    #[inline(never)]
    fn insert(&mut self, at: usize, hash: u64, text: &[u8]) -> u32 {
        // Ids stay below 2^32: that many distinct texts would need over 128 GiB of slots,
        // so memory runs out long before an id could wrap.
        let id = self.ends.len() as u32;
        self.bytes.extend_from_slice(text);
        self.ends.push(self.bytes.len() as u64);
        let mut inline = [0u8; INLINE];
        if text.len() <= INLINE {
            inline[..text.len()].copy_from_slice(text);
        }
        self.slots[at] = Slot {
            hash,
            id: id + 1,
            // A text over 4 GiB (beyond any line limit) gets a length no lookup matches:
            // it is interned again rather than confused with another.
            len: u32::try_from(text.len()).unwrap_or(u32::MAX),
            inline,
        };
        id
    }

    /// Doubles the table, placing slots by their stored hashes.
    #[cold]
    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; capacity]);
        let mask = capacity - 1;
        for slot in old.into_iter().filter(|s| s.id != 0) {
            let mut at = slot.hash as usize & mask;
            while self.slots[at].id != 0 {
                at = (at + 1) & mask;
            }
            self.slots[at] = slot;
        }
    }

    /// The id of `text` if it was interned before.
    pub fn lookup(&self, text: &str) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = &self.slots[self.probe(self.hasher.hash_one(text.as_bytes()), text.as_bytes())];
        slot.id.checked_sub(1)
    }

    /// Starts fetching where the text of `id` ends ([`Interner::prefetch_text`] then
    /// finds it in the cache).
    #[inline]
    pub fn prefetch_end(&self, id: u32) {
        if (id as usize) < self.ends.len() {
            prefetch_index::prefetch_index(&self.ends, id as usize);
        }
    }

    /// Starts fetching the text of `id`, for a [`Interner::get_bytes`] a few ids later.
    #[inline]
    pub fn prefetch_text(&self, id: u32) {
        if let Some(&end) = self.ends.get(id as usize)
            && let Some(last) = (end as usize).checked_sub(1)
            && last < self.bytes.len()
        {
            prefetch_index::prefetch_index(&self.bytes, last);
        }
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
            + self.ends.capacity() * std::mem::size_of::<u64>()
            + self.slots.capacity() * std::mem::size_of::<Slot>()
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
