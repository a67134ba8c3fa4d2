//! `APPROX_PERCENTILE(x, q)`: the `q` quantile from a t-digest (Apache DataSketches,
//! `k` 100).
//!
//! A t-digest rather than the KLL sketch: KLL compacts with random bits drawn from a
//! per-thread seed the library does not let us set, so the same window would give
//! other bytes on every run, and a rerun could not recognise its own files. The t-digest
//! is deterministic for a given order of values and merges, which edgeflow fixes. Its
//! error is smallest at the tails (p99, p99.9), where traffic questions are; in the
//! middle it is typically within 1% of rank at this `k`. While a slot holds fewer than
//! about 70 values the digest keeps a centroid per value, and the answer is one of them.

use datasketches::tdigest::TDigestMut;
use serde::{Deserialize, Serialize};

use super::sketch_bytes::SketchBytes;
use super::staged::{Replay, Settled, StagedSlots};
use super::sum_float::{doubles, for_each_number};
use super::{Aggregate, Finished, Input, Pairs};
use crate::batch::Interner;

/// The t-digest's compression.
pub const K: u16 = 100;

impl SketchBytes for TDigestMut {
    fn to_bytes(&self) -> Vec<u8> {
        self.clone().serialize()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        TDigestMut::deserialize(bytes).map_err(|e| format!("t-digest: {e}"))
    }
}

impl Replay for TDigestMut {
    type Value = f64;

    fn empty() -> Self {
        TDigestMut::new(K).unwrap_or_else(|e| unreachable!("t-digest k: {e}"))
    }

    fn feed(&mut self, value: f64) {
        self.update(value);
    }

    fn into_bytes(mut self) -> Vec<u8> {
        self.serialize()
    }

    fn store_values(values: &[f64]) -> Option<Vec<u8>> {
        Some(values.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn load_values(bytes: &[u8]) -> Result<Vec<f64>, String> {
        super::staged::eight_byte_values(bytes, "t-digest", f64::from_le_bytes)
    }

    /// Feeds the values in ascending order (-0.0 before 0.0), whatever order they came
    /// in, so a slot's digest is the same for any split of its values over workers.
    /// The digest sorts its buffer stably by mean when it compacts; fed sorted, its sort
    /// (most of the time of writing a window's digests: a comparison sort of 16-byte
    /// centroids) finds one run, and sorting the values here is several times cheaper:
    /// integer keys, no stability needed. Values that are not finite are ignored by
    /// `update` either way.
    fn build(values: &[f64]) -> Self {
        let mut digest = Self::empty();
        let mut keys = Vec::with_capacity(values.len());
        keys.extend(
            values
                .iter()
                .filter(|x| x.is_finite())
                .map(|&x| order_key(x)),
        );
        keys.sort_unstable();
        for key in keys {
            digest.update(from_order_key(key));
        }
        digest
    }
}

const NEG_ZERO: u64 = 1 << 63;

/// A key whose unsigned order is the order of the finite doubles (-0.0 below 0.0).
fn order_key(x: f64) -> u64 {
    let bits = x.to_bits();
    if bits & NEG_ZERO != 0 {
        !bits
    } else {
        bits | NEG_ZERO
    }
}

fn from_order_key(key: u64) -> f64 {
    f64::from_bits(if key & NEG_ZERO != 0 {
        key & !NEG_ZERO
    } else {
        !key
    })
}

/// One t-digest per slot, made on the first value (kept as the values until needed,
/// see `staged`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApproxPercentile {
    /// The quantile asked for, 0 to 1.
    q: f64,
    digests: StagedSlots<TDigestMut>,
}

impl ApproxPercentile {
    /// The `q` quantile.
    pub fn new(q: f64) -> Self {
        ApproxPercentile {
            q,
            digests: StagedSlots::default(),
        }
    }

    /// The quantile of `slot` of `digests` (settled).
    fn quantile(q: f64, digests: &Settled<'_, TDigestMut>, slot: usize) -> Option<f64> {
        let mut digest = digests.get(slot)?.sketch().into_owned();
        digest.quantile(q).ok().flatten()
    }
}

impl Aggregate for ApproxPercentile {
    fn empty_like(&self) -> Self {
        ApproxPercentile::new(self.q)
    }

    fn len(&self) -> usize {
        self.digests.len()
    }

    fn bytes_per_slot(&self) -> usize {
        // The slot itself; a digest grows to a few KiB.
        StagedSlots::<TDigestMut>::BYTES_PER_SLOT
    }

    fn heap_bytes(&self) -> usize {
        self.digests.heap_bytes(TDigestMut::estimated_size)
    }

    fn push_empty(&mut self) {
        self.digests.push_empty();
    }

    fn reset(&mut self, slot: usize) {
        self.digests.reset(slot);
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        let digests = &mut self.digests;
        for_each_number(pairs, input, |slot, x| digests.add(slot, x));
    }

    fn gather(&self, slots: &[u32]) -> Self {
        ApproxPercentile {
            q: self.q,
            digests: self.digests.gather(slots),
        }
    }

    fn take(&mut self, slots: &[u32]) -> Self {
        ApproxPercentile {
            q: self.q,
            digests: self.digests.take(slots),
        }
    }

    fn take_parts(&mut self, parts: &[Vec<u32>]) -> Vec<Self> {
        let q = self.q;
        let taken = self.digests.take_parts(parts);
        taken
            .into_iter()
            .map(|digests| ApproxPercentile { q, digests })
            .collect()
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        self.digests
            .merge_slot(to, &other.digests, from, |ours, theirs| ours.merge(theirs));
    }

    fn finish(&self, slots: &[usize], _interner: &mut Interner) -> Finished {
        let digests = self.digests.settled();
        let values: Vec<Option<f64>> = slots
            .iter()
            .map(|&s| Self::quantile(self.q, &digests, s))
            .collect();
        quantiles(&values)
    }

    fn sketches(&self, slots: &[usize]) -> Option<Vec<Option<Vec<u8>>>> {
        Some(self.digests.bytes(slots))
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
        let digests = self.digests.settled();
        let mut values = Vec::with_capacity(slots.len());
        let mut bytes = Vec::with_capacity(slots.len());
        for &s in slots {
            let Some(digest) = digests.get(s) else {
                values.push(None);
                bytes.push(None);
                continue;
            };
            // One compacted copy answers both: serialising compacts it, and the quantile
            // then reads the compacted centroids, so the digest is copied, sorted and
            // compacted once rather than twice. The slot's own digest stays uncompacted,
            // so later merges (partials, corrections) see the same state as before.
            let mut compacted = digest.sketch().into_owned();
            bytes.push(Some(compacted.serialize()));
            values.push(compacted.quantile(self.q).ok().flatten());
        }
        (quantiles(&values), Some(bytes))
    }
}

/// The quantiles found, as a `DOUBLE` column (NULL for a slot without values).
fn quantiles(values: &[Option<f64>]) -> Finished {
    let positions: Vec<usize> = (0..values.len()).collect();
    doubles(
        &positions,
        |i| values[i].unwrap_or(0.0),
        |i| values[i].is_some(),
    )
}
