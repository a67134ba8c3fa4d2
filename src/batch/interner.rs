//! Per-worker string interning: each distinct text value gets a dense `u32` id.
//!
//! Decoding interns text fields as it reads them, so grouping by a text column costs one
//! hash of the raw bytes per reading and nothing more: the id is the group key. Ids are
//! local to one worker; anything that crosses workers carries the text itself.

use hashbrown::HashTable;

/// A set of strings, each with a dense id in order of first appearance.
#[derive(Debug, Default)]
pub struct Interner {
    table: HashTable<u32>,
    /// `ends[i]` is where string `i` ends in `bytes`; it starts where `i - 1` ends.
    ends: Vec<u32>,
    bytes: String,
    hasher: foldhash::fast::FixedState,
}

impl Interner {
    /// An empty interner.
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `text`, adding it when new.
    #[inline]
    pub fn intern(&mut self, text: &str) -> u32 {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(text.as_bytes());
        let (ends, bytes) = (&self.ends, &self.bytes);
        let get = |id: u32| -> &str {
            let id = id as usize;
            let start = if id == 0 { 0 } else { ends[id - 1] as usize };
            &bytes[start..ends[id] as usize]
        };
        if let Some(&id) = self.table.find(hash, |&id| get(id) == text) {
            return id;
        }
        let id = self.ends.len() as u32;
        self.bytes.push_str(text);
        self.ends.push(self.bytes.len() as u32);
        let (ends, bytes, hasher) = (&self.ends, &self.bytes, &self.hasher);
        self.table.insert_unique(hash, id, |&other| {
            let other = other as usize;
            let start = if other == 0 { 0 } else { ends[other - 1] as usize };
            hasher.hash_one(&bytes.as_bytes()[start..ends[other] as usize])
        });
        id
    }

    /// The id of `text` if it was interned before.
    pub fn lookup(&self, text: &str) -> Option<u32> {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(text.as_bytes());
        self.table.find(hash, |&id| self.get(id) == text).copied()
    }

    /// The text of an id handed out by this interner.
    #[inline]
    pub fn get(&self, id: u32) -> &str {
        let id = id as usize;
        let start = if id == 0 { 0 } else { self.ends[id - 1] as usize };
        &self.bytes[start..self.ends[id] as usize]
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
        self.bytes.capacity() + self.ends.capacity() * 4 + self.table.capacity() * 5
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
            let s = format!("dev-{n}");
            let id = i.intern(&s);
            assert_eq!(i.get(id), s);
        }
        assert_eq!(i.len(), 10_003);
    }
}
