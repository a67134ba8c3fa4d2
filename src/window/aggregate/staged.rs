//! A sketch slot that keeps its first values as they came and builds the sketch from
//! them only when the sketch is needed: when the window closes, merges or is saved, or
//! once the slot holds many values.
//!
//! With thousands of open groups, updating each group's sketch in place touches a cache
//! line of its table or buffer that has long left the cache: the HLL's hash set probe
//! was most of its update time, and a t-digest appends 16 bytes per value to a buffer
//! sized for hundreds. Appending the value to a log (see [`StagedSlots`]) touches only
//! the log's end.
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

/// One staged sketch per slot of an aggregate. Stored as the list of slots alone (see
/// `sketch_bytes::staged`).
///
/// Values added to a slot wait in a log of their own, in the order they came, and reach
/// their slot's list when the slot is taken (or the state is read otherwise): appending
/// to one log is a store next to the last, where appending to the slot's own list read
/// its header and wrote its end in two places that had left the cache, and grew lists
/// whose final size was not known yet (a quarter of the update's time was the
/// allocator). Applied in order, the log leaves every slot as adding each value to it
/// directly would have, so sketches and their bytes are unchanged.
#[derive(Clone, Debug, Deserialize)]
#[serde(transparent, bound = "")]
pub struct StagedSlots<S: Replay> {
    #[serde(with = "super::sketch_bytes::staged")]
    slots: Vec<Option<Staged<S>>>,
    #[serde(skip)]
    log: Log<S::Value>,
}

/// A [`StagedSlots`] with no value waiting in its log: the only way to read a slot, so
/// no reader sees a slot without its latest values.
pub struct Settled<'a, S: Replay>(Cow<'a, StagedSlots<S>>);

impl<S: Replay> Settled<'_, S> {
    /// What `slot` holds, if it has seen a value.
    pub fn get(&self, slot: usize) -> Option<&Staged<S>> {
        self.0.slots[slot].as_ref()
    }
}

/// Values not yet in their slots' lists: `slots[i]` gets `values[i]`.
#[derive(Clone, Debug)]
struct Log<V> {
    slots: Vec<u32>,
    values: Vec<V>,
}

impl<V> Log<V> {
    /// Makes the room at least `room` values, exactly that when it grows, and gives room
    /// back when it has more than twice that (after a burst): not left to doubling,
    /// which overshoots by up to twice, nor moved at every window, which differ a little.
    fn fit(&mut self, room: usize) {
        let room = room.max(self.slots.len());
        if self.slots.capacity() > 2 * room {
            self.slots.shrink_to(room);
            self.values.shrink_to(room);
        } else if self.slots.capacity() < room {
            self.slots.reserve_exact(room - self.slots.len());
            self.values.reserve_exact(room - self.values.len());
        }
    }
}

impl<V> Default for Log<V> {
    fn default() -> Self {
        Log {
            slots: Vec::new(),
            values: Vec::new(),
        }
    }
}

/// Values the log may hold per slot of the state before it is applied whole: a
/// slot's list holds at most [`MAX_STAGED`] values, so the log, at half that per slot,
/// stays within the memory of lists that would hold the same values; a few hot keys
/// among many slots wait there longer than they would have as lists before turning
/// into their sketches, with the same bytes in the end.
const LOGGED_PER_SLOT: usize = MAX_STAGED / 2;

/// Marks a slot the log is not applied to now.
const KEEP: u32 = u32::MAX;

impl<S: Replay> Default for StagedSlots<S> {
    fn default() -> Self {
        StagedSlots {
            slots: Vec::new(),
            log: Log::default(),
        }
    }
}

impl<S: Replay> PartialEq for StagedSlots<S> {
    fn eq(&self, other: &Self) -> bool {
        let (ours, theirs) = (self.settled(), other.settled());
        ours.0.slots.len() == theirs.0.slots.len()
            && ours.0.slots.iter().zip(&theirs.0.slots).all(|(a, b)| {
                a.as_ref().map(SketchBytes::to_bytes) == b.as_ref().map(SketchBytes::to_bytes)
            })
    }
}

impl<S: Replay> Serialize for StagedSlots<S> {
    fn serialize<Z: serde::Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        super::sketch_bytes::staged::serialize(&self.settled().0.slots, serializer)
    }
}

impl<S: Replay> StagedSlots<S> {
    /// Bytes of one slot itself; what its sketch holds is [`StagedSlots::heap_bytes`].
    pub const BYTES_PER_SLOT: usize = size_of::<Option<Staged<S>>>();

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the slots' lists and sketches hold (`sketch_size` measures a sketch), and
    /// the log of values not yet in their lists.
    pub fn heap_bytes(&self, sketch_size: impl Fn(&S) -> usize) -> usize {
        let lists: usize = self
            .slots
            .iter()
            .flatten()
            .map(|s| s.heap_bytes(&sketch_size))
            .sum();
        lists
            + self.log.slots.capacity() * size_of::<u32>()
            + self.log.values.capacity() * size_of::<S::Value>()
    }

    /// Adds an empty slot at the end.
    pub fn push_empty(&mut self) {
        self.slots.push(None);
    }

    /// Empties `slot`.
    pub fn reset(&mut self, slot: usize) {
        self.apply_log();
        self.slots[slot] = None;
    }

    /// Makes `slot` hold `staged`.
    pub fn set(&mut self, slot: usize, staged: Staged<S>) {
        self.apply_log();
        self.slots[slot] = Some(staged);
    }

    /// Adds `value` to `slot`.
    #[inline]
    pub fn add(&mut self, slot: usize, value: S::Value) {
        self.log.slots.push(slot as u32);
        self.log.values.push(value);
        if self.log.slots.len() >= self.slots.len() * LOGGED_PER_SLOT {
            self.apply_log();
        }
    }

    /// This state with every logged value in its slot, to read slots from: itself when
    /// the log is empty, as it is in any state handed on by [`StagedSlots::take`] or
    /// [`StagedSlots::gather`]; otherwise a copy.
    pub fn settled(&self) -> Settled<'_, S> {
        if self.log.slots.is_empty() {
            return Settled(Cow::Borrowed(self));
        }
        let mut copy = self.clone();
        copy.apply_log();
        Settled(Cow::Owned(copy))
    }

    /// Copies of `slots`, in that order.
    pub fn gather(&self, slots: &[u32]) -> Self {
        StagedSlots {
            slots: super::pick(&self.settled().0.slots, slots),
            log: Log::default(),
        }
    }

    /// Moves `slots` out (in that order), with every value logged for them.
    pub fn take(&mut self, slots: &[u32]) -> Self {
        self.settle(slots.iter().copied());
        self.move_out(slots)
    }

    /// [`StagedSlots::take`] of each of `parts` (disjoint), settling the log once.
    pub fn take_parts(&mut self, parts: &[Vec<u32>]) -> Vec<Self> {
        self.settle(parts.iter().flatten().copied());
        parts.iter().map(|slots| self.move_out(slots)).collect()
    }

    /// `slots` (settled) moved out, in that order.
    fn move_out(&mut self, slots: &[u32]) -> Self {
        StagedSlots {
            slots: super::pick_reset(&mut self.slots, slots),
            log: Log::default(),
        }
    }

    /// Applies the log to `slots`, which are about to be taken. When more values stay
    /// logged than were taken (hopping windows, where each reading is logged for every
    /// window it falls in, or a long out-of-orderness keeping several windows open),
    /// they are applied too, so that scanning the log costs at most twice the values
    /// it moves into slots.
    fn settle(&mut self, slots: impl Iterator<Item = u32>) {
        let logged = self.log.slots.len();
        if logged == 0 {
            return;
        }
        let mut wanted = vec![KEEP; self.slots.len()];
        for s in slots {
            wanted[s as usize] = 0;
        }
        self.apply_log_to(wanted);
        if 2 * self.log.slots.len() > logged {
            self.apply_log();
        }
        // Consecutive windows log about as much as each other: room for what this take
        // found and an eighth more, where growing by doubling would leave up to twice
        // that, and a burst's room is given back at the next window.
        self.log.fit(logged + logged / 8);
    }

    /// Moves every logged value into its slot.
    fn apply_log(&mut self) {
        if !self.log.slots.is_empty() {
            self.apply_log_to(vec![0; self.slots.len()]);
        }
    }

    /// Moves the values logged for the slots not marked [`KEEP`] in `wanted` (zero
    /// otherwise) into those slots, in the order they came, and keeps the rest logged.
    /// A slot's new list gets room for exactly its values.
    fn apply_log_to(&mut self, mut wanted: Vec<u32>) {
        for &s in &self.log.slots {
            let count = &mut wanted[s as usize];
            if *count != KEEP {
                *count += 1;
            }
        }
        let Log { slots, values } = &mut self.log;
        let mut kept = 0;
        for i in 0..slots.len() {
            let (s, value) = (slots[i], values[i]);
            let room = wanted[s as usize];
            if room == KEEP {
                slots[kept] = s;
                values[kept] = value;
                kept += 1;
            } else {
                self.slots[s as usize]
                    .get_or_insert_with(|| Staged::with_capacity(room as usize))
                    .push(value);
            }
        }
        slots.truncate(kept);
        values.truncate(kept);
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
        self.apply_log();
        let other = other.settled();
        let Some(theirs) = other.get(from) else {
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
        super::sketch_bytes::of_slots(&self.settled().0.slots, slots)
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
            let back_slots = back.settled();
            assert!(matches!(back_slots.get(0), Some(Staged::Values(v)) if v.len() == 40));
            assert!(back_slots.get(1).is_none());
            assert!(matches!(back_slots.get(2), Some(Staged::Sketch(_))));
            assert!(back == digests);
        }
        let json = serde_json::to_string(&hlls).unwrap_or_else(|e| panic!("{e}"));
        let back: StagedSlots<HllSketch> =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        let estimate =
            |slots: &StagedSlots<HllSketch>| slots.settled().get(0).map(|s| s.sketch().estimate());
        assert!(matches!(back.settled().get(0), Some(Staged::Sketch(_))));
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

    /// A state holding `lists` as they are, to compare with one fed through the log.
    fn holding(lists: &[Option<Staged<TDigestMut>>]) -> StagedSlots<TDigestMut> {
        let mut slots = StagedSlots::default();
        for (i, list) in lists.iter().enumerate() {
            slots.push_empty();
            if let Some(list) = list {
                slots.set(i, list.clone());
            }
        }
        slots
    }

    /// Slot 0 gets about half the values, so it passes `MAX_STAGED` and fills the log.
    fn skewed_adds() -> impl Strategy<Value = Vec<(usize, i32)>> {
        let slot = prop_oneof![Just(0usize), 0usize..6];
        prop::collection::vec((slot, -50i32..50), 0..2500)
    }

    proptest! {
        /// Values wait in the log, however they are interleaved over slots and however
        /// often the log is applied (a hot slot fills it, a reset applies it, a take
        /// applies what it takes): each slot taken, left or saved holds its values in
        /// the order they came, as adding them one by one makes it, into its sketch
        /// past `MAX_STAGED`. The stored form of a list keeps that order, so comparing
        /// it catches values out of order, which a digest's bytes (built sorted) would
        /// not.
        #[test]
        fn logged_values_reach_their_slots_as_if_added_one_by_one(
            adds in skewed_adds(),
            more in skewed_adds(),
            taken in prop::collection::vec(0u32..6, 0..4),
            reset in prop::option::of(0usize..6),
        ) {
            let mut slots = StagedSlots::<TDigestMut>::default();
            let mut fed: Vec<Option<Staged<TDigestMut>>> = vec![None; 6];
            for _ in 0..6 {
                slots.push_empty();
            }
            let add = |slots: &mut StagedSlots<TDigestMut>,
                       fed: &mut Vec<Option<Staged<TDigestMut>>>,
                       adds: &[(usize, i32)]| {
                for &(slot, v) in adds {
                    slots.add(slot, f64::from(v));
                    fed[slot].get_or_insert_with(|| Staged::with_capacity(0)).push(f64::from(v));
                }
            };
            let (first, rest) = adds.split_at(adds.len() / 2);
            add(&mut slots, &mut fed, first);
            if let Some(slot) = reset {
                slots.reset(slot);
                fed[slot] = None;
            }
            add(&mut slots, &mut fed, rest);
            let json = |s: &StagedSlots<TDigestMut>| {
                serde_json::to_string(s).unwrap_or_else(|e| panic!("{e}"))
            };
            prop_assert_eq!(json(&slots), json(&holding(&fed)));
            let taken: Vec<u32> = taken.iter().enumerate()
                .filter(|(i, s)| !taken[..*i].contains(s))
                .map(|(_, &s)| s)
                .collect();
            let (one, two) = taken.split_at(taken.len() / 2);
            let parts = slots.take_parts(&[one.to_vec(), two.to_vec()]);
            for (part, slots_of) in parts.iter().zip([one, two]) {
                let lists: Vec<_> = slots_of.iter().map(|&s| fed[s as usize].take()).collect();
                prop_assert_eq!(json(part), json(&holding(&lists)));
            }
            // Taken slots are reused empty; the values left logged are still theirs.
            add(&mut slots, &mut fed, &more);
            let all: Vec<u32> = (0..6).collect();
            prop_assert_eq!(json(&slots.take(&all)), json(&holding(&fed)));
        }
    }

    #[test]
    fn slots_stay_as_small_as_a_vec() {
        assert!(size_of::<Option<Staged<TDigestMut>>>() <= 32);
        assert!(size_of::<Option<Staged<HllSketch>>>() <= 32);
        let number = size_of::<Option<Staged<super::super::approx_distinct::NumberHll>>>();
        assert!(number <= 32);
    }
}
