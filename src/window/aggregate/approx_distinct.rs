//! `APPROX_DISTINCT(x)`: distinct values from an HLL sketch (Apache DataSketches,
//! `lg_k` 12, 8-bit registers): a relative standard error of about 1.6%, exact while a
//! slot has seen few distinct values (the sketch keeps them as a list first).
//!
//! Values are hashed as Rust hashes them, the same on every worker, so partial sketches
//! merge exactly; a sketch filled here and one filled by another language's library from
//! the same values hash differently, so their unions overcount.

use datasketches::hll::{Coupon, HllSketch, HllType, HllUnion};
use serde::{Deserialize, Serialize};

use super::sketch_bytes::SketchBytes;
use super::staged::{Replay, Staged, StagedSlots};
use super::{Aggregate, Finished, Input, Pairs, for_valid_pairs};
use crate::batch::{Column, ColumnValues, Interner};

/// Log2 of the number of HLL registers.
pub const LG_K: u8 = 12;

impl SketchBytes for HllSketch {
    fn to_bytes(&self) -> Vec<u8> {
        self.serialize()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        HllSketch::deserialize(bytes).map_err(|e| format!("HLL sketch: {e}"))
    }
}

impl Replay for HllSketch {
    // The value's hash as the sketch takes it: hashed once, when the value comes.
    type Value = Coupon;

    fn empty() -> Self {
        // Valid parameters (lg_k 4..=21) cannot fail.
        HllSketch::new(LG_K, HllType::Hll8).unwrap_or_else(|e| unreachable!("HLL lg_k: {e}"))
    }

    fn feed(&mut self, coupon: Coupon) {
        self.update_with_coupon(coupon);
    }

    /// Feeds the coupons in ascending order: the sketch's list and hash set keep
    /// coupons where they came, so the same values in another order (another split over
    /// workers) would be other bytes.
    fn build(coupons: &[Coupon]) -> Self {
        let mut sorted = coupons.to_vec();
        sorted.sort_unstable();
        let mut sketch = Self::empty();
        for coupon in sorted {
            sketch.update_with_coupon(coupon);
        }
        sketch
    }
}

/// The union of two sketches.
pub fn union(a: &HllSketch, b: &HllSketch) -> HllSketch {
    let Ok(mut union) = HllUnion::new(LG_K) else {
        unreachable!("HLL lg_k {LG_K} is valid")
    };
    union.update(a);
    union.update(b);
    union.to_sketch(HllType::Hll8)
}

/// One HLL sketch per slot, made on the first value (kept as the values' coupons until
/// needed, see `staged`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApproxDistinct {
    sketches: StagedSlots<HllSketch>,
}

impl ApproxDistinct {
    /// Adds the value hashed to `coupon` (as `HllSketch::update` hashes it) to `slot`.
    #[inline]
    fn add(&mut self, slot: usize, coupon: Coupon) {
        self.sketches.add(slot, coupon);
    }
}

impl Aggregate for ApproxDistinct {
    fn empty_like(&self) -> Self {
        ApproxDistinct::default()
    }

    fn len(&self) -> usize {
        self.sketches.len()
    }

    fn bytes_per_slot(&self) -> usize {
        // The slot itself; a sketch grows with distinct values, up to 4 KiB.
        StagedSlots::<HllSketch>::BYTES_PER_SLOT
    }

    fn heap_bytes(&self) -> usize {
        self.sketches.heap_bytes(HllSketch::estimated_size)
    }

    fn push_empty(&mut self) {
        self.sketches.push_empty();
    }

    fn reset(&mut self, slot: usize) {
        self.sketches.reset(slot);
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        let Some(column) = input.arg else { return };
        match &column.values {
            ColumnValues::Text(ids) => for_valid_pairs!(pairs, column, |row, slot| {
                self.add(slot, Coupon::from_value(input.interner.get(ids[row])));
            }),
            ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => {
                for_valid_pairs!(pairs, column, |row, slot| {
                    self.add(slot, Coupon::from_value(v[row]))
                })
            }
            ColumnValues::Double(v) => for_valid_pairs!(pairs, column, |row, slot| {
                // One hash for 0.0 and -0.0, one for every NaN.
                let x = v[row];
                let bits = if x == 0.0 {
                    0
                } else if x.is_nan() {
                    f64::NAN.to_bits()
                } else {
                    x.to_bits()
                };
                self.add(slot, Coupon::from_value(bits));
            }),
            ColumnValues::Boolean(v) => {
                for_valid_pairs!(pairs, column, |row, slot| {
                    self.add(slot, Coupon::from_value(v[row]))
                })
            }
        }
    }

    fn gather(&self, slots: &[u32]) -> Self {
        ApproxDistinct {
            sketches: self.sketches.gather(slots),
        }
    }

    fn take(&mut self, slots: &[u32]) -> Self {
        ApproxDistinct {
            sketches: self.sketches.take(slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        self.sketches
            .merge_slot(to, &other.sketches, from, |ours, theirs| {
                *ours = union(ours, theirs)
            });
    }

    fn finish(&self, slots: &[usize], _interner: &mut Interner) -> Finished {
        Finished::exact(Column {
            values: ColumnValues::BigInt(
                slots
                    .iter()
                    .map(|&s| self.sketches.get(s).map_or(0, estimate))
                    .collect(),
            ),
            validity: None,
        })
    }

    fn sketches(&self, slots: &[usize]) -> Option<Vec<Option<Vec<u8>>>> {
        Some(self.sketches.bytes(slots))
    }

    fn finish_with_sketches(
        &self,
        slots: &[usize],
        interner: &mut Interner,
        with_sketches: bool,
    ) -> (Finished, Option<Vec<Option<Vec<u8>>>>) {
        if !with_sketches {
            return (self.finish(slots, interner), None);
        }
        // A slot still holding its values builds its sketch once for both.
        let mut counts = Vec::with_capacity(slots.len());
        let mut bytes = Vec::with_capacity(slots.len());
        for &s in slots {
            match self.sketches.get(s) {
                None => {
                    counts.push(0);
                    bytes.push(None);
                }
                Some(staged) => {
                    let sketch = staged.sketch();
                    counts.push(sketch.estimate().round() as i64);
                    bytes.push(Some(sketch.serialize()));
                }
            }
        }
        let finished = Finished::exact(Column {
            values: ColumnValues::BigInt(counts),
            validity: None,
        });
        (finished, Some(bytes))
    }
}

/// The distinct count a sketch estimates, as written.
fn estimate(sketch: &Staged<HllSketch>) -> i64 {
    sketch.sketch().estimate().round() as i64
}
