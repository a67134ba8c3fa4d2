//! `FIRST_VALUE(x)` and `LAST_VALUE(x)`: the value of the earliest or latest reading by
//! event time, not by arrival, so the answer does not depend on disorder or on the
//! worker count. NULLs are skipped; readings at the same event time are ordered by
//! value (the least is first, the greatest last), so ties too have one answer.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::scalar::Scalar;
use super::{ANY, Aggregate, Finished, Input, Pairs, for_valid_pairs, pick, validity};
use crate::batch::{Column, Interner};

/// Per slot: the event time and value of the first (or last) reading.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ByTime<V: Scalar> {
    /// `LAST_VALUE` when true.
    last: bool,
    /// Event time of the kept value.
    at: Vec<i64>,
    /// The kept value.
    v: Vec<V>,
    /// `ANY` flag.
    flags: Vec<u8>,
}

impl<V: Scalar> ByTime<V> {
    /// `LAST_VALUE` when `last`, else `FIRST_VALUE`.
    pub fn new(last: bool) -> Self {
        ByTime {
            last,
            at: Vec::new(),
            v: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// Whether a value at `t`, comparing to the slot's as `order` (asked only on a tie),
    /// replaces the slot's.
    #[inline(always)]
    fn replaces(&self, slot: usize, t: i64, order: impl FnOnce() -> Option<Ordering>) -> bool {
        if self.flags[slot] == 0 {
            return true;
        }
        let wanted = if self.last {
            Ordering::Greater
        } else {
            Ordering::Less
        };
        match t.cmp(&self.at[slot]) {
            Ordering::Equal => order() == Some(wanted),
            by_time => by_time == wanted,
        }
    }
}

impl<V: Scalar> Aggregate for ByTime<V> {
    fn empty_like(&self) -> Self {
        ByTime::new(self.last)
    }

    fn len(&self) -> usize {
        self.v.len()
    }

    fn bytes_per_slot(&self) -> usize {
        size_of::<V>() + 9
    }

    fn push_empty(&mut self) {
        self.at.push(0);
        self.v.push(V::default());
        self.flags.push(0);
    }

    fn reset(&mut self, slot: usize) {
        self.flags[slot] = 0;
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        let Some(column) = input.arg else { return };
        let Some(value) = V::values(column, input.interner) else {
            return;
        };
        for_valid_pairs!(pairs, column, |row, slot| {
            let (t, x) = (input.times[row], value(row));
            if self.replaces(slot, t, || V::compare(x, &self.v[slot])) {
                self.at[slot] = t;
                self.v[slot] = V::keep(x);
                self.flags[slot] = ANY;
            }
        });
    }

    fn gather(&self, slots: &[u32]) -> Self {
        ByTime {
            last: self.last,
            at: pick(&self.at, slots),
            v: pick(&self.v, slots),
            flags: pick(&self.flags, slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        if other.flags[from] != 0
            && self.replaces(to, other.at[from], || {
                other.v[from].partial_cmp(&self.v[to])
            })
        {
            self.at[to] = other.at[from];
            self.v[to] = other.v[from].clone();
            self.flags[to] = ANY;
        }
    }

    fn finish(&self, slots: &[usize], interner: &mut Interner) -> Finished {
        Finished::exact(Column {
            values: V::column(slots.iter().map(|&s| &self.v[s]).collect(), interner),
            validity: validity(slots, |s| self.flags[s] != 0),
        })
    }
}
