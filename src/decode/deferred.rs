//! Text values interned a few hundred at a time instead of one per line.
//!
//! Once the interner's table has outgrown the caches (a million devices: 64 MiB), the
//! lookup of a line's key is a miss to memory, and interning it as the line is read
//! makes decoding wait for that miss on every line: one miss in flight at a time. Keys
//! are kept aside with their hashes and looked up together; each lookup first asks for
//! the slot of the key [`DISTANCE`] places ahead, so several misses overlap.
//!
//! Keys are interned in the order their lines came, and the decoder interns everything
//! kept before it interns anything else or undoes a line, so every key gets the id it
//! would have got one line at a time.

use crate::batch::{Batch, ColumnValues, Interner};

/// Values kept before they are interned: enough to keep several misses in flight, few
/// enough that the list stays in the L1 cache.
const BATCH: usize = 256;

/// How many keys ahead a slot is fetched: about as many misses as a core keeps in
/// flight at once.
const DISTANCE: usize = 8;

/// An id to be filled in: what stands in the column until then.
pub const UNRESOLVED: u32 = u32::MAX;

/// An interner holding the keys `k0` to `k49999`: past the size where keys wait, for
/// the decoders' tests of batched interning.
#[cfg(test)]
pub fn large_interner() -> Interner {
    let mut interner = Interner::new();
    for k in 0..50_000 {
        interner.intern(&format!("k{k}"));
    }
    interner
}

/// One text value waiting for its id.
#[derive(Clone, Copy, Debug)]
struct Pending {
    hash: u64,
    /// Where the value's bytes are in the decoded input.
    start: usize,
    end: usize,
    column: usize,
    row: usize,
}

/// Text values of the decoded input whose ids are not looked up yet.
#[derive(Clone, Debug, Default)]
pub struct DeferredTexts {
    pending: Vec<Pending>,
}

impl DeferredTexts {
    /// Keeps the value at `start..end` of the input (hashed to `hash`), whose id belongs
    /// in `row` of text column `column`.
    #[inline]
    pub fn push(&mut self, hash: u64, (start, end): (usize, usize), column: usize, row: usize) {
        self.pending.push(Pending {
            hash,
            start,
            end,
            column,
            row,
        });
    }

    /// Whether a batch is ready to be interned.
    #[inline]
    pub fn is_full(&self) -> bool {
        self.pending.len() >= BATCH
    }

    /// Interns every waiting value of `input` in the order they came and puts the ids in
    /// their rows of `batch`.
    pub fn resolve(&mut self, input: &[u8], batch: &mut Batch, interner: &mut Interner) {
        for p in self.pending.iter().take(DISTANCE) {
            interner.prefetch(p.hash);
        }
        for (i, p) in self.pending.iter().enumerate() {
            if let Some(ahead) = self.pending.get(i + DISTANCE) {
                interner.prefetch(ahead.hash);
            }
            let id = interner.intern_hashed(p.hash, &input[p.start..p.end]);
            if let ColumnValues::Text(ids) = &mut batch.columns[p.column].values {
                ids[p.row] = id;
            }
        }
        self.pending.clear();
    }
}
