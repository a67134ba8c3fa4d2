//! A sketch slot that keeps its first values as they came and builds the sketch from
//! them only when the sketch is needed: when the window closes, merges or is saved, or
//! once the slot holds many values.
//!
//! With thousands of open groups, updating each group's sketch in place touches a cache
//! line of its table or buffer that has long left the cache: the HLL's hash set probe
//! was most of its update time, and a t-digest appends 16 bytes per value to a buffer
//! sized for hundreds. Appending the value to a short list touches only the list's end.
//! The sketch is built from the kept values in ascending order, whatever order they
//! came in, and two slots that still keep values merge by putting their values
//! together: a slot's sketch is then the same however its values were split over
//! workers, and (for the t-digest) exact while it holds fewer values than it keeps
//! centroids, since no merge of two digests compacted it. Once a slot holds more than
//! [`MAX_STAGED`] values it keeps the sketch and updates it in place.

use std::borrow::Cow;
use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use super::sketch_bytes::SketchBytes;

/// Values kept before a slot builds its sketch: beyond this a sketch is no larger than
/// the list (an HLL at `lg_k` 12 tops out at 4 KiB, a t-digest keeps at most a few
/// hundred centroids plus its unmerged buffer), so the slot updates it in place.
pub const MAX_STAGED: usize = 512;

/// A sketch that can be rebuilt by feeding it values.
pub trait Replay: Clone + SketchBytes {
    /// One value as the sketch takes it.
    type Value: Copy + Debug;
    /// An empty sketch of the settings every slot uses.
    fn empty() -> Self;
    /// Updates the sketch with one value.
    fn feed(&mut self, value: Self::Value);
    /// An empty sketch fed `values`. A sketch whose bytes depend on the order of its
    /// values feeds them in one order whatever order they came in, so that a slot's
    /// sketch does not depend on how its values were split over workers.
    fn build(values: &[Self::Value]) -> Self {
        let mut sketch = Self::empty();
        for &value in values {
            sketch.feed(value);
        }
        sketch
    }
    /// `values` as bytes to keep in the stream state and send to other processes, when
    /// [`Replay::load_values`] reads them back; `None` stores the slot as its sketch.
    fn store_values(_values: &[Self::Value]) -> Option<Vec<u8>> {
        None
    }
    /// Values stored by [`Replay::store_values`].
    fn load_values(_bytes: &[u8]) -> Result<Vec<Self::Value>, String> {
        Err("this sketch stores no values".into())
    }
    /// The standard serialised form, from a sketch no longer needed (the t-digest
    /// compacts itself to serialise, so it saves a copy).
    fn into_bytes(self) -> Vec<u8> {
        self.to_bytes()
    }
}

/// Values of eight bytes each, as [`Replay::store_values`] stores them (little-endian),
/// read back with `value`; an error naming `sketch` unless they are whole values, at
/// most [`MAX_STAGED`] of them.
pub fn eight_byte_values<T>(
    bytes: &[u8],
    sketch: &str,
    value: impl Fn([u8; 8]) -> T,
) -> Result<Vec<T>, String> {
    let (values, rest) = bytes.as_chunks::<8>();
    if !rest.is_empty() || values.len() > MAX_STAGED {
        return Err(format!("{sketch} values: {} bytes", bytes.len()));
    }
    Ok(values.iter().map(|&b| value(b)).collect())
}

/// One slot's sketch, or the values it has seen so far.
///
/// The sketch is boxed so that a slot is as small as a `Vec`: the update loop reads
/// every slot it appends to, and slots of 80 bytes or more fell out of the caches.
#[derive(Clone, Debug)]
pub enum Staged<S: Replay> {
    /// Values in the order they came; the sketch is an empty one fed these.
    Values(Vec<S::Value>),
    /// The sketch itself.
    Sketch(Box<S>),
}

impl<S: Replay> Staged<S> {
    /// No values yet, with room for `capacity` (at most [`MAX_STAGED`]).
    pub fn with_capacity(capacity: usize) -> Self {
        Staged::Values(Vec::with_capacity(capacity.min(MAX_STAGED)))
    }

    /// A slot holding `sketch`.
    pub fn sketch_of(sketch: S) -> Self {
        Staged::Sketch(Box::new(sketch))
    }

    /// Values kept and not yet in a sketch.
    pub fn staged_len(&self) -> usize {
        match self {
            Staged::Values(values) => values.len(),
            Staged::Sketch(_) => 0,
        }
    }

    /// Adds one value.
    #[inline]
    pub fn push(&mut self, value: S::Value) {
        match self {
            Staged::Values(values) if values.len() < MAX_STAGED => values.push(value),
            _ => self.sketch_mut().feed(value),
        }
    }

    /// The sketch: built from the values, or borrowed.
    pub fn sketch(&self) -> Cow<'_, S> {
        match self {
            Staged::Values(values) => Cow::Owned(S::build(values)),
            Staged::Sketch(sketch) => Cow::Borrowed(&**sketch),
        }
    }

    /// The sketch, built in place first if need be.
    pub fn sketch_mut(&mut self) -> &mut S {
        if let Staged::Values(values) = self {
            *self = Staged::sketch_of(S::build(values));
        }
        match self {
            Staged::Sketch(sketch) => sketch,
            // Just built.
            Staged::Values(_) => unreachable!("a staged slot holds its sketch once built"),
        }
    }

    /// Bytes held beyond the slot itself.
    pub fn heap_bytes(&self, sketch_size: impl Fn(&S) -> usize) -> usize {
        match self {
            Staged::Values(values) => values.capacity() * size_of::<S::Value>(),
            Staged::Sketch(sketch) => size_of::<S>() + sketch_size(sketch),
        }
    }
}

impl<S: Replay> SketchBytes for Staged<S> {
    fn to_bytes(&self) -> Vec<u8> {
        match self.sketch() {
            Cow::Owned(sketch) => sketch.into_bytes(),
            Cow::Borrowed(sketch) => sketch.to_bytes(),
        }
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        S::from_bytes(bytes).map(Staged::sketch_of)
    }
}

/// One staged sketch per slot of an aggregate, and the room a new slot's list gets:
/// what the sketch aggregates share. Stored as the list of slots alone (see
/// `sketch_bytes::staged`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent, bound = "")]
pub struct StagedSlots<S: Replay> {
    #[serde(with = "super::sketch_bytes::staged")]
    slots: Vec<Option<Staged<S>>>,
    #[serde(skip)]
    hint: CapacityHint,
}

impl<S: Replay> Default for StagedSlots<S> {
    fn default() -> Self {
        StagedSlots {
            slots: Vec::new(),
            hint: CapacityHint::default(),
        }
    }
}

impl<S: Replay> PartialEq for StagedSlots<S> {
    fn eq(&self, other: &Self) -> bool {
        self.slots.len() == other.slots.len()
            && self.slots.iter().zip(&other.slots).all(|(a, b)| {
                a.as_ref().map(SketchBytes::to_bytes) == b.as_ref().map(SketchBytes::to_bytes)
            })
    }
}

impl<S: Replay> StagedSlots<S> {
    /// Bytes of one slot itself; what its sketch holds is [`StagedSlots::heap_bytes`].
    pub const BYTES_PER_SLOT: usize = size_of::<Option<Staged<S>>>();

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the slots' lists and sketches hold (`sketch_size` measures a sketch).
    pub fn heap_bytes(&self, sketch_size: impl Fn(&S) -> usize) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|s| s.heap_bytes(&sketch_size))
            .sum()
    }

    /// Adds an empty slot at the end.
    pub fn push_empty(&mut self) {
        self.slots.push(None);
    }

    /// Empties `slot`.
    pub fn reset(&mut self, slot: usize) {
        self.slots[slot] = None;
    }

    /// Makes `slot` hold `staged`.
    pub fn set(&mut self, slot: usize, staged: Staged<S>) {
        self.slots[slot] = Some(staged);
    }

    /// Adds `value` to `slot`, making its list on the first value.
    #[inline]
    pub fn add(&mut self, slot: usize, value: S::Value) {
        let room = self.hint.get();
        self.slots[slot]
            .get_or_insert_with(|| Staged::with_capacity(room))
            .push(value);
    }

    /// What `slot` holds, if it has seen a value.
    pub fn get(&self, slot: usize) -> Option<&Staged<S>> {
        self.slots[slot].as_ref()
    }

    /// Copies of `slots`, in that order.
    pub fn gather(&self, slots: &[u32]) -> Self {
        StagedSlots {
            slots: super::pick(&self.slots, slots),
            hint: CapacityHint::default(),
        }
    }

    /// Moves `slots` out (in that order), learning from them how much room a new
    /// slot's list needs.
    pub fn take(&mut self, slots: &[u32]) -> Self {
        let all = &self.slots;
        self.hint.learn(slots.iter().map(|&s| &all[s as usize]));
        StagedSlots {
            slots: super::pick_out(&mut self.slots, slots),
            hint: CapacityHint::default(),
        }
    }

    /// Folds `other`'s slot `from` into slot `to`: values kept by both stay values,
    /// together (the sketch built from them then is the one a single worker holding
    /// them all builds); otherwise `merge(ours, theirs)` merges the sketches.
    pub fn merge_slot(
        &mut self,
        to: usize,
        other: &Self,
        from: usize,
        merge: impl FnOnce(&mut S, &S),
    ) {
        let Some(theirs) = &other.slots[from] else {
            return;
        };
        match (&mut self.slots[to], theirs) {
            (Some(Staged::Values(ours)), Staged::Values(more))
                if ours.len() + more.len() <= MAX_STAGED =>
            {
                ours.extend_from_slice(more);
            }
            (Some(ours), theirs) => merge(ours.sketch_mut(), &theirs.sketch()),
            (slot @ None, theirs) => *slot = Some(theirs.clone()),
        }
    }

    /// The standard bytes of the sketches of `slots`, in that order.
    pub fn bytes(&self, slots: &[usize]) -> Vec<Option<Vec<u8>>> {
        super::sketch_bytes::of_slots(&self.slots, slots)
    }
}

/// How many values a slot's list starts with room for: learnt from the slots of the last
/// window that closed, their mean count plus two standard deviations, so that nearly
/// every slot allocates once instead of growing from empty through every power of two
/// (with one reading a second per group, a minute's counts spread by about ±8 around 60:
/// room for the mean alone left half the slots to grow once more).
#[derive(Clone, Copy, Debug, Default)]
pub struct CapacityHint(usize);

impl CapacityHint {
    /// Room for a new slot's values.
    pub fn get(self) -> usize {
        self.0
    }

    /// Learns from the slots a window hands on as it closes.
    pub fn learn<'a, S: Replay + 'a>(
        &mut self,
        slots: impl Iterator<Item = &'a Option<Staged<S>>>,
    ) {
        let (mut used, mut sum, mut squares) = (0usize, 0f64, 0f64);
        for staged in slots.flatten() {
            let n = staged.staged_len() as f64;
            used += 1;
            sum += n;
            squares += n * n;
        }
        if used > 0 {
            let mean = sum / used as f64;
            let spread = (squares / used as f64 - mean * mean).max(0.0).sqrt();
            self.0 = ((mean + 2.0 * spread).ceil() as usize).min(MAX_STAGED);
        }
    }
}

#[cfg(test)]
mod tests {
    use datasketches::hll::{Coupon, HllSketch};
    use datasketches::tdigest::TDigestMut;
    use proptest::prelude::*;

    use super::*;

    /// Values fed one by one to a slot, across the point where it builds its sketch:
    /// the sketch built from the first values, then updated in place.
    fn staged_as_built_then_updated<S: Replay>(values: &[S::Value]) {
        let mut staged = Staged::<S>::with_capacity(3);
        for &v in values {
            staged.push(v);
        }
        let kept = values.len().min(MAX_STAGED);
        let mut expected = S::build(&values[..kept]);
        for &v in &values[kept..] {
            expected.feed(v);
        }
        assert_eq!(
            staged.to_bytes(),
            expected.to_bytes(),
            "{} values",
            values.len()
        );
        assert_eq!(
            matches!(staged, Staged::Sketch(_)),
            values.len() > MAX_STAGED
        );
    }

    /// Values split over two slots (two workers) and merged give the sketch of one
    /// slot that saw them all, in another order, while they fit in one slot's list.
    fn split_and_merged_as_one<S: Replay>(values: &[S::Value], merge: impl Fn(&mut S, &S)) {
        let mut one = StagedSlots::<S>::default();
        let (mut a, mut b) = (StagedSlots::<S>::default(), StagedSlots::<S>::default());
        for slots in [&mut one, &mut a, &mut b] {
            slots.push_empty();
        }
        for (i, &v) in values.iter().enumerate().rev() {
            one.add(0, v);
            if i % 3 == 0 { a.add(0, v) } else { b.add(0, v) }
        }
        a.merge_slot(0, &b, 0, &merge);
        assert_eq!(a.bytes(&[0]), one.bytes(&[0]), "{} values", values.len());
    }

    #[test]
    fn a_slots_sketch_is_its_values_in_one_order_however_they_were_split() {
        for n in [1, 2, 60, MAX_STAGED, MAX_STAGED + 1, 3 * MAX_STAGED] {
            // Ties, and both zeros once there are enough values.
            let xs: Vec<f64> = (0..n)
                .map(|i| match i % 211 {
                    5 => 0.0,
                    100 => -0.0,
                    _ => ((i * 7919) % 1013) as f64 / 7.0 - 20.0,
                })
                .collect();
            staged_as_built_then_updated::<TDigestMut>(&xs);
            let coupons: Vec<Coupon> = (0..n as i64)
                .map(|i| Coupon::from_value(i * 31 % 700))
                .collect();
            staged_as_built_then_updated::<HllSketch>(&coupons);
            if n <= MAX_STAGED {
                split_and_merged_as_one::<TDigestMut>(&xs, |a, b| a.merge(b));
                split_and_merged_as_one::<HllSketch>(&coupons, |a, b| {
                    *a = super::super::approx_distinct::union(a, b)
                });
            }
        }
    }

    /// Doubles with many ties, both zeros, negatives and values `update` ignores.
    fn awkward_double() -> impl Strategy<Value = f64> {
        prop_oneof![
            (-40i32..40).prop_map(|i| f64::from(i) / 4.0),
            Just(0.0),
            Just(-0.0),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            any::<f64>(),
        ]
    }

    proptest! {
        #[test]
        fn a_digest_built_from_values_is_the_digest_fed_them_in_ascending_order(
            first in prop::collection::vec(awkward_double(), 0..700),
            more in prop::collection::vec(awkward_double(), 0..40),
            other in prop::collection::vec(awkward_double(), 1..80),
            turn in 0usize..700,
        ) {
            let ascending = |values: &[f64]| {
                let mut sorted = values.to_vec();
                sorted.sort_by(f64::total_cmp);
                let mut digest = TDigestMut::empty();
                for x in sorted {
                    digest.update(x);
                }
                digest
            };
            let built = TDigestMut::build(&first);
            prop_assert_eq!(built.to_bytes(), ascending(&first).to_bytes());
            let mut turned = first.clone();
            turned.rotate_left(turn.min(first.len()));
            prop_assert_eq!(TDigestMut::build(&turned).to_bytes(), built.to_bytes());
            // Built, then updated further and merged with another digest.
            let (mut built, mut fed) = (built, ascending(&first));
            for &x in &more {
                built.update(x);
                fed.update(x);
            }
            built.merge(&TDigestMut::build(&other));
            fed.merge(&ascending(&other));
            prop_assert_eq!(built.to_bytes(), fed.to_bytes());
        }
    }

    /// A t-digest slot still holding values keeps them through the stream state (JSON)
    /// and between processes (bincode), so a resumed or remote window merges by values;
    /// an HLL slot, whose coupons cannot be read back, travels as its sketch.
    #[test]
    fn stored_slots_keep_their_values_where_the_sketch_can_read_them_back() {
        let mut digests = StagedSlots::<TDigestMut>::default();
        let mut hlls = StagedSlots::<HllSketch>::default();
        for _ in 0..3 {
            digests.push_empty();
            hlls.push_empty();
        }
        for i in 0..40 {
            digests.add(0, f64::from(i) * 0.5 - 3.0);
            hlls.add(0, Coupon::from_value(i));
        }
        for i in 0..=MAX_STAGED {
            digests.add(2, i as f64);
        }
        let json = serde_json::to_string(&digests).unwrap_or_else(|e| panic!("{e}"));
        assert!(json.starts_with(r#"[{"values":"#), "{json}");
        let binary = bincode::serialize(&digests).unwrap_or_else(|e| panic!("{e}"));
        for back in [
            serde_json::from_str::<StagedSlots<TDigestMut>>(&json)
                .unwrap_or_else(|e| panic!("{e}")),
            bincode::deserialize::<StagedSlots<TDigestMut>>(&binary)
                .unwrap_or_else(|e| panic!("{e}")),
        ] {
            assert!(matches!(back.get(0), Some(Staged::Values(v)) if v.len() == 40));
            assert!(back.get(1).is_none());
            assert!(matches!(back.get(2), Some(Staged::Sketch(_))));
            assert!(back == digests);
        }
        let json = serde_json::to_string(&hlls).unwrap_or_else(|e| panic!("{e}"));
        let back: StagedSlots<HllSketch> =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        let estimate = |slots: &StagedSlots<HllSketch>| slots.get(0).map(|s| s.sketch().estimate());
        assert!(matches!(back.get(0), Some(Staged::Sketch(_))));
        assert_eq!(estimate(&back), estimate(&hlls));
        // Values that are not whole doubles are refused, naming the sketch.
        let bad = r#"[{"values":"AAE="}]"#;
        let err = serde_json::from_str::<StagedSlots<TDigestMut>>(bad)
            .map(|_| ())
            .map_or_else(
                |e| e.to_string(),
                |()| panic!("damaged values should not load"),
            );
        assert!(err.contains("t-digest values"), "{err}");
    }

    #[test]
    fn slots_stay_as_small_as_a_vec() {
        assert!(size_of::<Option<Staged<TDigestMut>>>() <= 32);
        assert!(size_of::<Option<Staged<HllSketch>>>() <= 32);
        let number = size_of::<Option<Staged<super::super::approx_distinct::NumberHll>>>();
        assert!(number <= 32);
    }
}
