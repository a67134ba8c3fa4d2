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
        of_coupons(coupons.to_vec())
    }
}

/// A sketch fed `coupons` in ascending order.
fn of_coupons(mut coupons: Vec<Coupon>) -> HllSketch {
    coupons.sort_unstable();
    let mut sketch = HllSketch::empty();
    for coupon in coupons {
        sketch.update_with_coupon(coupon);
    }
    sketch
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

/// An HLL sketch of numbers (`BIGINT`, `TIMESTAMP`, `DOUBLE`) whose slot keeps each
/// number's 64 bits until the sketch is built, and hashes them only then.
///
/// A number's bits hash to the coupon the number itself hashes to (both are the same
/// eight bytes to the hasher), so these sketches are the ones [`HllSketch`] slots of
/// coupons build. Bits, unlike coupons, can be stored and read back: a slot still
/// holding values keeps them in the stream state and between processes, so a window
/// resumed by the next run, or merged at another process, is built from all its values
/// in one order, the same bytes as one run over the whole input (while the slot holds
/// at most `MAX_STAGED` values; beyond, it hashes each value into its sketch as it
/// comes).
#[derive(Clone, Debug)]
pub struct NumberHll(HllSketch);

impl SketchBytes for NumberHll {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.serialize()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        HllSketch::from_bytes(bytes).map(NumberHll)
    }
}

impl Replay for NumberHll {
    type Value = u64;

    fn empty() -> Self {
        NumberHll(HllSketch::empty())
    }

    fn feed(&mut self, bits: u64) {
        self.0.update_with_coupon(Coupon::from_value(bits));
    }

    fn build(values: &[u64]) -> Self {
        NumberHll(of_coupons(
            values.iter().map(|&b| Coupon::from_value(b)).collect(),
        ))
    }

    fn store_values(values: &[u64]) -> Option<Vec<u8>> {
        Some(values.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn load_values(bytes: &[u8]) -> Result<Vec<u64>, String> {
        super::staged::eight_byte_values(bytes, "HLL", u64::from_le_bytes)
    }
}

/// What an HLL slot keeps of a value until its sketch is built: the value's coupon
/// ([`HllSketch`], for `TEXT` and `BOOLEAN`), or a number's bits ([`NumberHll`]).
pub trait HllKind: Replay {
    /// Adds each row's value (NULLs skipped) to its slot.
    fn update(slots: &mut StagedSlots<Self>, pairs: &Pairs, input: Input<'_>);
    /// The sketch.
    fn hll(&self) -> &HllSketch;
    /// Wraps a sketch.
    fn of_hll(sketch: HllSketch) -> Self;
}

impl HllKind for HllSketch {
    fn update(slots: &mut StagedSlots<Self>, pairs: &Pairs, input: Input<'_>) {
        let Some(column) = input.arg else { return };
        match &column.values {
            ColumnValues::Text(ids) => for_valid_pairs!(pairs, column, |row, slot| {
                slots.add(slot, Coupon::from_value(input.interner.get(ids[row])));
            }),
            ColumnValues::Boolean(v) => for_valid_pairs!(pairs, column, |row, slot| {
                slots.add(slot, Coupon::from_value(v[row]))
            }),
            // Numbers go to `NumberHll` slots; only state an older edgeflow kept holds
            // numbers here, and kept state is merged, never updated.
            _ => for_number_bits(column, pairs, |slot, bits| {
                slots.add(slot, Coupon::from_value(bits))
            }),
        }
    }

    fn hll(&self) -> &HllSketch {
        self
    }

    fn of_hll(sketch: HllSketch) -> Self {
        sketch
    }
}

impl HllKind for NumberHll {
    fn update(slots: &mut StagedSlots<Self>, pairs: &Pairs, input: Input<'_>) {
        if let Some(column) = input.arg {
            for_number_bits(column, pairs, |slot, bits| slots.add(slot, bits));
        }
    }

    fn hll(&self) -> &HllSketch {
        &self.0
    }

    fn of_hll(sketch: HllSketch) -> Self {
        NumberHll(sketch)
    }
}

/// Calls `f(slot, bits)` for each row of a numeric `column` that is not NULL, with the
/// bits its coupon is hashed from: an integer's own, a double's with one value for 0.0
/// and -0.0 and one for every NaN.
fn for_number_bits(column: &Column, pairs: &Pairs, mut f: impl FnMut(usize, u64)) {
    match &column.values {
        ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => {
            for_valid_pairs!(pairs, column, |row, slot| { f(slot, v[row] as u64) })
        }
        ColumnValues::Double(v) => for_valid_pairs!(pairs, column, |row, slot| {
            let x = v[row];
            let bits = if x == 0.0 {
                0
            } else if x.is_nan() {
                f64::NAN.to_bits()
            } else {
                x.to_bits()
            };
            f(slot, bits);
        }),
        ColumnValues::Text(_) | ColumnValues::Boolean(_) => {}
    }
}

/// One HLL sketch per slot, made on the first value (kept as what `S` keeps of the
/// values until needed, see `staged`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ApproxDistinct<S: HllKind = HllSketch> {
    sketches: StagedSlots<S>,
}

impl<S: HllKind> PartialEq for ApproxDistinct<S> {
    fn eq(&self, other: &Self) -> bool {
        self.sketches == other.sketches
    }
}

impl<S: HllKind> Default for ApproxDistinct<S> {
    fn default() -> Self {
        ApproxDistinct {
            sketches: StagedSlots::default(),
        }
    }
}

impl<S: HllKind> ApproxDistinct<S> {
    /// Folds slot `from` of `other`, the same aggregate kept the other way, into slot
    /// `to`, by its sketch. Only state an edgeflow before [`NumberHll`] kept (a numeric
    /// argument's slots as coupons) meets state of this one so.
    pub fn merge_other_kind<T: HllKind>(
        &mut self,
        to: usize,
        other: &ApproxDistinct<T>,
        from: usize,
    ) {
        let theirs = other.sketches.settled();
        let Some(theirs) = theirs.get(from) else {
            return;
        };
        let mut one = StagedSlots::<S>::default();
        one.push_empty();
        one.set(
            0,
            Staged::sketch_of(S::of_hll(theirs.sketch().hll().clone())),
        );
        self.merge_slot(to, &ApproxDistinct { sketches: one }, 0);
    }
}

impl<S: HllKind> Aggregate for ApproxDistinct<S> {
    fn empty_like(&self) -> Self {
        ApproxDistinct::default()
    }

    fn len(&self) -> usize {
        self.sketches.len()
    }

    fn bytes_per_slot(&self) -> usize {
        // The slot itself; a sketch grows with distinct values, up to 4 KiB.
        StagedSlots::<S>::BYTES_PER_SLOT
    }

    fn heap_bytes(&self) -> usize {
        self.sketches.heap_bytes(|s| s.hll().estimated_size())
    }

    fn push_empty(&mut self) {
        self.sketches.push_empty();
    }

    fn reset(&mut self, slot: usize) {
        self.sketches.reset(slot);
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        S::update(&mut self.sketches, pairs, input);
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

    fn take_parts(&mut self, parts: &[Vec<u32>]) -> Vec<Self> {
        let taken = self.sketches.take_parts(parts);
        taken
            .into_iter()
            .map(|sketches| ApproxDistinct { sketches })
            .collect()
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        self.sketches
            .merge_slot(to, &other.sketches, from, |ours, theirs| {
                *ours = S::of_hll(union(ours.hll(), theirs.hll()))
            });
    }

    fn finish(&self, slots: &[usize], _interner: &mut Interner) -> Finished {
        let sketches = self.sketches.settled();
        Finished::exact(Column {
            values: ColumnValues::BigInt(
                slots
                    .iter()
                    .map(|&s| sketches.get(s).map_or(0, estimate))
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
        let sketches = self.sketches.settled();
        let mut counts = Vec::with_capacity(slots.len());
        let mut bytes = Vec::with_capacity(slots.len());
        for &s in slots {
            match sketches.get(s) {
                None => {
                    counts.push(0);
                    bytes.push(None);
                }
                Some(staged) => {
                    let sketch = staged.sketch();
                    counts.push(sketch.hll().estimate().round() as i64);
                    bytes.push(Some(sketch.hll().serialize()));
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
fn estimate<S: HllKind>(sketch: &Staged<S>) -> i64 {
    sketch.sketch().hll().estimate().round() as i64
}

#[cfg(test)]
mod tests {
    use super::super::Accumulator;
    use super::*;

    /// The bits `for_number_bits` keeps of a double.
    fn double_bits(x: f64) -> u64 {
        let mut bits = None;
        let column = Column {
            values: ColumnValues::Double(vec![x]),
            validity: None,
        };
        let mut pairs = Pairs::default();
        pairs.push(0, 0);
        for_number_bits(&column, &pairs, |_, b| bits = Some(b));
        bits.unwrap_or_else(|| panic!("no bits for {x}"))
    }

    /// Numbers kept as bits build the sketch their coupons build, hashed as before:
    /// an integer as itself, a double by its bits with one value for both zeros and one
    /// for every NaN.
    #[test]
    fn numbers_kept_as_bits_build_the_sketch_of_their_coupons() {
        let ints: Vec<i64> = (0..900).map(|i| (i * 7_919 % 600) - 300).collect();
        let from_bits = NumberHll::build(&ints.iter().map(|&v| v as u64).collect::<Vec<_>>());
        let coupons: Vec<Coupon> = ints.iter().map(|&v| Coupon::from_value(v)).collect();
        assert_eq!(from_bits.to_bytes(), HllSketch::build(&coupons).to_bytes());
        let doubles = [0.0, -0.0, f64::NAN, -f64::NAN, 1.5, -2.25, f64::INFINITY];
        let bits: Vec<u64> = doubles.iter().map(|&x| double_bits(x)).collect();
        let sketch = NumberHll::build(&bits);
        // 0.0 and -0.0 are one value, every NaN another.
        assert_eq!(sketch.hll().estimate().round(), 5.0);
        let coupons: Vec<Coupon> = [0u64, f64::NAN.to_bits(), 1.5f64.to_bits()]
            .into_iter()
            .chain([(-2.25f64).to_bits(), f64::INFINITY.to_bits()])
            .map(Coupon::from_value)
            .collect();
        assert_eq!(sketch.to_bytes(), HllSketch::build(&coupons).to_bytes());
    }

    /// A numeric slot still holding values keeps them in the stream state (JSON) and
    /// between processes (bincode), and is the same sketch once read back.
    #[test]
    fn number_slots_keep_their_values_in_stored_state() {
        let mut slots = StagedSlots::<NumberHll>::default();
        slots.push_empty();
        slots.push_empty();
        for i in 0..50u64 {
            slots.add(0, i * 3);
        }
        let json = serde_json::to_string(&slots).unwrap_or_else(|e| panic!("{e}"));
        assert!(json.starts_with(r#"[{"values":"#), "{json}");
        let binary = bincode::serialize(&slots).unwrap_or_else(|e| panic!("{e}"));
        for back in [
            serde_json::from_str::<StagedSlots<NumberHll>>(&json).unwrap_or_else(|e| panic!("{e}")),
            bincode::deserialize::<StagedSlots<NumberHll>>(&binary)
                .unwrap_or_else(|e| panic!("{e}")),
        ] {
            let back_slots = back.settled();
            assert!(matches!(back_slots.get(0), Some(Staged::Values(v)) if v.len() == 50));
            assert!(back_slots.get(1).is_none());
            assert!(back == slots);
        }
    }

    /// State kept by an edgeflow that hashed numbers on the worker (an HLL of coupons,
    /// stored as its sketch) merges into today's numeric state either way round: the
    /// union of both sketches.
    #[test]
    fn older_coupon_state_merges_with_numeric_state() {
        let mut older = ApproxDistinct::<HllSketch>::default();
        older.push_empty();
        let mut newer = ApproxDistinct::<NumberHll>::default();
        newer.push_empty();
        for v in 0..40i64 {
            older.sketches.add(0, Coupon::from_value(v));
            newer.sketches.add(0, (v + 20) as u64);
        }
        let mut into_newer = newer.clone();
        into_newer.merge_other_kind(0, &older, 0);
        let mut into_older = older.clone();
        into_older.merge_other_kind(0, &newer, 0);
        let count = |a: &Accumulator| a.finish(&[0], &mut Interner::new()).column.values;
        for merged in [
            Accumulator::ApproxDistinctNumber(into_newer),
            Accumulator::ApproxDistinct(into_older),
        ] {
            assert!(matches!(count(&merged), ColumnValues::BigInt(v) if v == [60]));
        }
        // Through the accumulators, as a window's merge meets them: resumed state comes
        // first, so a fold of the older kind takes this run's parts, and the other way.
        let (older, newer) = (
            Accumulator::ApproxDistinct(older),
            Accumulator::ApproxDistinctNumber(newer),
        );
        for (into, from) in [(&older, &newer), (&newer, &older)] {
            let mut acc = into.clone();
            acc.merge_slot(0, from, 0);
            assert!(matches!(count(&acc), ColumnValues::BigInt(v) if v == [60]));
        }
    }
}
