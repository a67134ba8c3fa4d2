//! `MIN` and `MAX`.

use serde::{Deserialize, Serialize};

use super::scalar::Scalar;
use super::{ANY, Aggregate, Finished, Input, Pairs, for_valid_pairs, pick, pick_reset, validity};
use crate::batch::{Column, ColumnValues, Interner};

/// The least or greatest value per slot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Extreme<V: Scalar> {
    /// `MAX` when true.
    max: bool,
    /// Current extreme.
    v: Vec<V>,
    /// `ANY` flag.
    flags: Vec<u8>,
}

impl<V: Scalar> Extreme<V> {
    /// `MAX` when `max`, else `MIN`.
    pub fn new(max: bool) -> Self {
        Extreme {
            max,
            v: Vec::new(),
            flags: Vec::new(),
        }
    }
}

impl Extreme<i64> {
    /// The extreme at `slot`, if the slot saw a value.
    pub fn value(&self, slot: usize) -> Option<i64> {
        (self.flags.get(slot).is_some_and(|f| f & ANY != 0)).then(|| self.v[slot])
    }
}

use std::cmp::Ordering;

/// Whether a value that compares to the current extreme as `order` replaces it.
#[inline(always)]
fn better(max: bool, order: Option<Ordering>) -> bool {
    order
        == Some(if max {
            Ordering::Greater
        } else {
            Ordering::Less
        })
}

impl<V: Scalar> Aggregate for Extreme<V> {
    fn empty_like(&self) -> Self {
        Extreme::new(self.max)
    }

    fn len(&self) -> usize {
        self.v.len()
    }

    fn bytes_per_slot(&self) -> usize {
        size_of::<V>() + 1
    }

    fn push_empty(&mut self) {
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
        let Extreme { max, v, flags } = self;
        for_valid_pairs!(pairs, column, |row, slot| {
            let x = value(row);
            if flags[slot] == 0 || better(*max, V::compare(x, &v[slot])) {
                v[slot] = V::keep(x);
                flags[slot] = ANY;
            }
        });
    }

    fn gather(&self, slots: &[u32]) -> Self {
        Extreme {
            max: self.max,
            v: pick(&self.v, slots),
            flags: pick(&self.flags, slots),
        }
    }

    fn take(&mut self, slots: &[u32]) -> Self {
        // Only the flags say a slot is empty (see `reset`).
        Extreme {
            max: self.max,
            v: pick(&self.v, slots),
            flags: pick_reset(&mut self.flags, slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        if other.flags[from] != 0
            && (self.flags[to] == 0 || better(self.max, other.v[from].partial_cmp(&self.v[to])))
        {
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

/// `MIN`/`MAX` of `TEXT`, kept as text so it can travel between workers (ids are per
/// worker). Its own type only so that state saved by earlier versions still loads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExtremeText {
    /// `MAX` when true.
    max: bool,
    /// Current extreme.
    v: Vec<Option<String>>,
}

impl ExtremeText {
    /// `MAX` when `max`, else `MIN`.
    pub fn new(max: bool) -> Self {
        ExtremeText { max, v: Vec::new() }
    }

    fn fold(&mut self, slot: usize, x: &str) {
        let replace = match &self.v[slot] {
            None => true,
            Some(cur) => better(self.max, x.partial_cmp(cur.as_str())),
        };
        if replace {
            self.v[slot] = Some(x.to_owned());
        }
    }
}

impl Aggregate for ExtremeText {
    fn empty_like(&self) -> Self {
        ExtremeText::new(self.max)
    }

    fn len(&self) -> usize {
        self.v.len()
    }

    fn bytes_per_slot(&self) -> usize {
        24
    }

    fn push_empty(&mut self) {
        self.v.push(None);
    }

    fn reset(&mut self, slot: usize) {
        self.v[slot] = None;
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        let Some(column) = input.arg else { return };
        let ColumnValues::Text(ids) = &column.values else {
            return;
        };
        for_valid_pairs!(pairs, column, |row, slot| {
            self.fold(slot, input.interner.get(ids[row]));
        });
    }

    fn gather(&self, slots: &[u32]) -> Self {
        ExtremeText {
            max: self.max,
            v: pick(&self.v, slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        if let Some(x) = &other.v[from] {
            self.fold(to, x);
        }
    }

    fn finish(&self, slots: &[usize], interner: &mut Interner) -> Finished {
        Finished::exact(Column {
            values: ColumnValues::Text(
                slots
                    .iter()
                    .map(|&s| self.v[s].as_deref().map_or(0, |t| interner.intern(t)))
                    .collect(),
            ),
            validity: validity(slots, |s| self.v[s].is_some()),
        })
    }
}
