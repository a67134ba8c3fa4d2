//! `COUNT(*)` and `COUNT(x)`.

use serde::{Deserialize, Serialize};

use super::{Aggregate, Finished, Input, Pairs, for_valid_pairs, pick, pick_reset};
use crate::batch::{Column, ColumnValues, Interner};

/// Rows (or non-null values) per slot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Count {
    /// Whether nulls are skipped (`COUNT(x)`).
    skip_nulls: bool,
    /// Count per slot.
    n: Vec<i64>,
}

impl Count {
    /// `COUNT(x)` when `skip_nulls`, else `COUNT(*)`.
    pub fn new(skip_nulls: bool) -> Self {
        Count {
            skip_nulls,
            n: Vec::new(),
        }
    }

    /// The count at `slot`.
    pub fn value(&self, slot: usize) -> i64 {
        self.n.get(slot).copied().unwrap_or(0)
    }
}

impl Aggregate for Count {
    fn empty_like(&self) -> Self {
        Count::new(self.skip_nulls)
    }

    fn len(&self) -> usize {
        self.n.len()
    }

    fn bytes_per_slot(&self) -> usize {
        8
    }

    fn push_empty(&mut self) {
        self.n.push(0);
    }

    fn reset(&mut self, slot: usize) {
        self.n[slot] = 0;
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        let n = &mut self.n;
        match input.arg.filter(|_| self.skip_nulls) {
            Some(column) => for_valid_pairs!(pairs, column, |_row, slot| { n[slot] += 1 }),
            None => {
                for &slot in &pairs.slots {
                    n[slot as usize] += 1;
                }
            }
        }
    }

    fn gather(&self, slots: &[u32]) -> Self {
        Count {
            skip_nulls: self.skip_nulls,
            n: pick(&self.n, slots),
        }
    }

    fn take(&mut self, slots: &[u32]) -> Self {
        Count {
            skip_nulls: self.skip_nulls,
            n: pick_reset(&mut self.n, slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        self.n[to] += other.n[from];
    }

    fn finish(&self, slots: &[usize], _interner: &mut Interner) -> Finished {
        Finished::exact(Column {
            values: ColumnValues::BigInt(slots.iter().map(|&s| self.n[s]).collect()),
            validity: None,
        })
    }
}
