//! `SUM` of `BIGINT`, exact whatever the split over workers.
//!
//! Overflow is decided on the final value only, never on a partial: the sum keeps its
//! wrapped `i64` plus a count of wraps, so `[i64::MAX, 1, -1]` sums to `i64::MAX` however
//! it is split over workers, and a sum whose final value does not fit is NULL and
//! counted.

use serde::{Deserialize, Serialize};

use super::{ANY, Aggregate, Finished, Input, Pairs, for_valid_pairs, pick, pick_reset, validity};
use crate::batch::{Column, ColumnValues, Interner};

/// The exact sum is `sum + wraps * 2^64`. Four bytes of wrap count instead of an `i128`
/// keep the slot at 13 bytes; the count is exact while a slot has fewer than 2^31
/// readings (each reading wraps at most once).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SumInt {
    /// Wrapping sum per slot.
    pub(crate) sum: Vec<i64>,
    /// Net number of times the sum wrapped (up positive, down negative).
    pub(crate) wraps: Vec<i32>,
    /// `ANY` flag per slot.
    pub(crate) flags: Vec<u8>,
}

/// The change in wrap count when adding `x` wrapped (`overflow`): up for a positive `x`,
/// down for a negative one. Branch-free, as it runs once per reading.
#[inline(always)]
fn wrap(overflow: bool, x: i64) -> i32 {
    i32::from(overflow) * (((x >> 63) as i32) | 1)
}

impl Aggregate for SumInt {
    fn empty_like(&self) -> Self {
        SumInt::default()
    }

    fn len(&self) -> usize {
        self.sum.len()
    }

    fn bytes_per_slot(&self) -> usize {
        13
    }

    fn push_empty(&mut self) {
        self.sum.push(0);
        self.wraps.push(0);
        self.flags.push(0);
    }

    fn reset(&mut self, slot: usize) {
        self.sum[slot] = 0;
        self.wraps[slot] = 0;
        self.flags[slot] = 0;
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        let Some(column) = input.arg else { return };
        let ColumnValues::BigInt(values) = &column.values else {
            return;
        };
        let SumInt { sum, wraps, flags } = self;
        for_valid_pairs!(pairs, column, |row, slot| {
            let x = values[row];
            let (s, overflow) = sum[slot].overflowing_add(x);
            sum[slot] = s;
            wraps[slot] = wraps[slot].wrapping_add(wrap(overflow, x));
            flags[slot] |= ANY;
        });
    }

    fn gather(&self, slots: &[u32]) -> Self {
        SumInt {
            sum: pick(&self.sum, slots),
            wraps: pick(&self.wraps, slots),
            flags: pick(&self.flags, slots),
        }
    }

    fn take(&mut self, slots: &[u32]) -> Self {
        SumInt {
            sum: pick_reset(&mut self.sum, slots),
            wraps: pick_reset(&mut self.wraps, slots),
            flags: pick_reset(&mut self.flags, slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        let (s, overflow) = self.sum[to].overflowing_add(other.sum[from]);
        self.sum[to] = s;
        self.wraps[to] = self.wraps[to]
            .wrapping_add(other.wraps[from])
            .wrapping_add(wrap(overflow, other.sum[from]));
        self.flags[to] |= other.flags[from];
    }

    fn finish(&self, slots: &[usize], _interner: &mut Interner) -> Finished {
        let SumInt { sum, wraps, flags } = self;
        let fits = |s: usize| flags[s] & ANY != 0 && wraps[s] == 0;
        Finished {
            column: Column {
                values: ColumnValues::BigInt(slots.iter().map(|&s| sum[s]).collect()),
                validity: validity(slots, fits),
            },
            overflows: slots
                .iter()
                .filter(|&&s| flags[s] & ANY != 0 && wraps[s] != 0)
                .count() as u64,
        }
    }
}
