//! Aggregate state, one column per aggregate over numbered slots.
//!
//! A slot is one open (group, window). Updates run a whole batch at a time, one tight loop
//! per aggregate over `(row, slot)` pairs, so adding an aggregate costs one more pass and
//! no per-reading dispatch. The same state travels between workers as the partial result
//! of a window and is merged slot by slot at the key's owner.
//!
//! Every aggregate is one type implementing [`Aggregate`], in a file of its own; the
//! [`Accumulator`] enum only names them (one line each), so the engine holds a plain
//! `Vec<Accumulator>` that serialises into the stream state and dispatches once per
//! batch, never per reading. Adding an aggregate is adding its file, its line in
//! `accumulators!` and its case in [`Accumulator::new`].

pub mod approx_distinct;
pub mod approx_percentile;
pub mod approx_top_k;
mod by_time;
mod count;
mod extreme;
mod scalar;
mod sketch_bytes;
mod staged;
mod sum_float;
mod sum_int;
mod variance;

use serde::{Deserialize, Serialize};

use crate::batch::{Column, ColumnValues, Interner};
use crate::query::{AggregateCall, AggregateFunction};
use crate::types::DataType;

pub use approx_distinct::{ApproxDistinct, NumberHll};
pub use approx_percentile::ApproxPercentile;
pub use approx_top_k::ApproxTopK;
pub use by_time::ByTime;
pub use count::Count;
pub use extreme::{Extreme, ExtremeText};
pub use sum_float::SumFloat;
pub use sum_int::SumInt;
pub use variance::Variance;

/// Set when a slot has seen a non-null value.
const ANY: u8 = 1;

/// Rows and slots of one batch update: row `rows[i]` goes to slot `slots[i]`.
#[derive(Debug, Default)]
pub struct Pairs {
    /// Row indexes into the batch.
    pub rows: Vec<u32>,
    /// Slot indexes.
    pub slots: Vec<u32>,
}

impl Pairs {
    /// Empties the pairs, keeping capacity.
    pub fn clear(&mut self) {
        self.rows.clear();
        self.slots.clear();
    }

    /// Adds one pair.
    #[inline]
    pub fn push(&mut self, row: u32, slot: u32) {
        self.rows.push(row);
        self.slots.push(slot);
    }
}

/// What one batch offers an aggregate.
#[derive(Clone, Copy)]
pub struct Input<'a> {
    /// The argument column (`None` only for `COUNT(*)`).
    pub arg: Option<&'a Column>,
    /// Event time of every row, for aggregates ordered by it.
    pub times: &'a [i64],
    /// Resolves text ids.
    pub interner: &'a Interner,
}

/// The final values of some slots.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// One value per slot asked for.
    pub column: Column,
    /// Values that did not fit their type (an integer sum outside `i64`, a `DOUBLE`
    /// that ended infinite or NaN), written as NULL and counted.
    pub overflows: u64,
}

impl Finished {
    fn exact(column: Column) -> Self {
        Finished {
            column,
            overflows: 0,
        }
    }
}

/// The state of one aggregate for every slot.
pub trait Aggregate: Sized {
    /// An empty state of the same kind and settings.
    fn empty_like(&self) -> Self;
    /// Number of slots.
    fn len(&self) -> usize;
    /// Whether there are no slots.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of state per slot (beyond what a value that grows, like text, holds).
    fn bytes_per_slot(&self) -> usize;
    /// Bytes held beyond the slots themselves: the sketches' own memory.
    fn heap_bytes(&self) -> usize {
        0
    }
    /// Adds one empty slot at the end.
    fn push_empty(&mut self);
    /// Empties `slot` so it can be reused.
    fn reset(&mut self, slot: usize);
    /// Folds a batch's rows into their slots.
    fn update(&mut self, pairs: &Pairs, input: Input<'_>);
    /// A new state holding `slots` of this one, in that order.
    fn gather(&self, slots: &[u32]) -> Self;
    /// Like [`Aggregate::gather`], but leaves `slots` empty (as [`Aggregate::reset`]
    /// does): a closing window hands its state on and frees its slots, so an aggregate
    /// that keeps a sketch per slot moves the sketch rather than copying and dropping it.
    fn take(&mut self, slots: &[u32]) -> Self {
        let taken = self.gather(slots);
        for &s in slots {
            self.reset(s as usize);
        }
        taken
    }
    /// [`Aggregate::take`] of each of `parts` (disjoint), in that order: a closing
    /// window's slots for each worker that owns some of its keys, in one call, so an
    /// aggregate that defers its updates (the sketches, see `staged`) settles them once
    /// per window rather than once per owner.
    fn take_parts(&mut self, parts: &[Vec<u32>]) -> Vec<Self> {
        parts.iter().map(|slots| self.take(slots)).collect()
    }
    /// Merges slot `from` of `other` into slot `to`.
    fn merge_slot(&mut self, to: usize, other: &Self, from: usize);
    /// The final values of `slots`; text results are interned into `interner`.
    fn finish(&self, slots: &[usize], interner: &mut Interner) -> Finished;
    /// For an aggregate that keeps a sketch: each slot's, in the library's standard
    /// serialised form (`None` for a slot without values), written beside the result
    /// so that results roll up by merging sketches.
    fn sketches(&self, _slots: &[usize]) -> Option<Vec<Option<Vec<u8>>>> {
        None
    }
    /// [`Aggregate::finish`] and, when `with_sketches`, [`Aggregate::sketches`] of the
    /// same `slots` in one call: a sketch that has to be compacted for both (the
    /// t-digest) is then compacted once.
    fn finish_with_sketches(
        &self,
        slots: &[usize],
        interner: &mut Interner,
        with_sketches: bool,
    ) -> (Finished, Option<Vec<Option<Vec<u8>>>>) {
        let finished = self.finish(slots, interner);
        (
            finished,
            with_sketches.then(|| self.sketches(slots)).flatten(),
        )
    }
    /// For an aggregate whose result is not a scalar (a list): its Arrow column for
    /// `slots`, written as it is; such an aggregate is never used in expressions.
    fn result_column(&self, _slots: &[usize]) -> Option<arrow::array::ArrayRef> {
        None
    }
}

/// Loops over the pairs whose row is not NULL in `column`.
macro_rules! for_valid_pairs {
    ($pairs:expr, $column:expr, |$row:ident, $slot:ident| $body:block) => {
        match &$column.validity {
            None => {
                for (&$row, &$slot) in $pairs.rows.iter().zip(&$pairs.slots) {
                    let ($row, $slot) = ($row as usize, $slot as usize);
                    $body
                }
            }
            Some(valid) => {
                for (&$row, &$slot) in $pairs.rows.iter().zip(&$pairs.slots) {
                    let ($row, $slot) = ($row as usize, $slot as usize);
                    if valid[$row] $body
                }
            }
        }
    };
}
pub(crate) use for_valid_pairs;

/// `v` with only `slots`, in that order.
fn pick<T: Clone>(v: &[T], slots: &[u32]) -> Vec<T> {
    slots.iter().map(|&s| v[s as usize].clone()).collect()
}

/// `v` at `slots`, in that order, each left at its default (zero) for reuse: what
/// [`pick`] and then [`Aggregate::reset`] of each slot do, in one pass. A closing window's
/// slots lie anywhere in the state, and the second pass missed the cache again.
fn pick_reset<T: Default>(v: &mut [T], slots: &[u32]) -> Vec<T> {
    slots
        .iter()
        .map(|&s| std::mem::take(&mut v[s as usize]))
        .collect()
}

/// The validity of `slots` when any is NULL; `None` (no null buffer at all, which Arrow
/// and the Parquet writer handle faster) when every value is set.
fn validity(slots: &[usize], valid: impl Fn(usize) -> bool) -> Option<Vec<bool>> {
    if slots.iter().all(|&s| valid(s)) {
        return None;
    }
    Some(slots.iter().map(|&s| valid(s)).collect())
}

/// Declares [`Accumulator`] over the aggregate types and forwards [`Aggregate`] to them.
macro_rules! accumulators {
    ($($(#[$doc:meta])* $variant:ident($ty:ty),)*) => {
        /// The state of one aggregate for every slot: one of the aggregate types.
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub enum Accumulator {
            $($(#[$doc])* $variant($ty),)*
        }

        impl Aggregate for Accumulator {
            fn empty_like(&self) -> Self {
                match self { $(Accumulator::$variant(a) => Accumulator::$variant(a.empty_like()),)* }
            }
            fn len(&self) -> usize {
                match self { $(Accumulator::$variant(a) => a.len(),)* }
            }
            fn bytes_per_slot(&self) -> usize {
                match self { $(Accumulator::$variant(a) => a.bytes_per_slot(),)* }
            }
            fn heap_bytes(&self) -> usize {
                match self { $(Accumulator::$variant(a) => a.heap_bytes(),)* }
            }
            fn push_empty(&mut self) {
                match self { $(Accumulator::$variant(a) => a.push_empty(),)* }
            }
            fn reset(&mut self, slot: usize) {
                match self { $(Accumulator::$variant(a) => a.reset(slot),)* }
            }
            fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
                match self { $(Accumulator::$variant(a) => a.update(pairs, input),)* }
            }
            fn gather(&self, slots: &[u32]) -> Self {
                match self { $(Accumulator::$variant(a) => Accumulator::$variant(a.gather(slots)),)* }
            }
            fn take(&mut self, slots: &[u32]) -> Self {
                match self { $(Accumulator::$variant(a) => Accumulator::$variant(a.take(slots)),)* }
            }
            fn take_parts(&mut self, parts: &[Vec<u32>]) -> Vec<Self> {
                match self {
                    $(Accumulator::$variant(a) => {
                        a.take_parts(parts).into_iter().map(Accumulator::$variant).collect()
                    })*
                }
            }
            fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
                match (self, other) {
                    $((Accumulator::$variant(a), Accumulator::$variant(o)) => a.merge_slot(to, o, from),)*
                    // State kept before numbers had their own HLL slots.
                    (Accumulator::ApproxDistinct(a), Accumulator::ApproxDistinctNumber(o)) => {
                        a.merge_other_kind(to, o, from)
                    }
                    (Accumulator::ApproxDistinctNumber(a), Accumulator::ApproxDistinct(o)) => {
                        a.merge_other_kind(to, o, from)
                    }
                    // Otherwise partials of one aggregate are always of one kind.
                    _ => {}
                }
            }
            fn finish(&self, slots: &[usize], interner: &mut Interner) -> Finished {
                match self { $(Accumulator::$variant(a) => a.finish(slots, interner),)* }
            }
            fn sketches(&self, slots: &[usize]) -> Option<Vec<Option<Vec<u8>>>> {
                match self { $(Accumulator::$variant(a) => a.sketches(slots),)* }
            }
            fn finish_with_sketches(
                &self,
                slots: &[usize],
                interner: &mut Interner,
                with_sketches: bool,
            ) -> (Finished, Option<Vec<Option<Vec<u8>>>>) {
                match self { $(Accumulator::$variant(a) => a.finish_with_sketches(slots, interner, with_sketches),)* }
            }
            fn result_column(&self, slots: &[usize]) -> Option<arrow::array::ArrayRef> {
                match self { $(Accumulator::$variant(a) => a.result_column(slots),)* }
            }
        }
    };
}

accumulators! {
    /// `COUNT(*)` and `COUNT(x)`.
    Count(Count),
    /// `SUM` of `BIGINT`.
    SumInt(SumInt),
    /// `SUM` and `AVG` of `DOUBLE`, `AVG` of `BIGINT`.
    SumFloat(SumFloat),
    /// `MIN`/`MAX` of `BIGINT` and `TIMESTAMP`.
    ExtremeInt(Extreme<i64>),
    /// `MIN`/`MAX` of `DOUBLE`.
    ExtremeFloat(Extreme<f64>),
    /// `MIN`/`MAX` of `BOOLEAN`.
    ExtremeBool(Extreme<bool>),
    /// `MIN`/`MAX` of `TEXT`.
    ExtremeText(ExtremeText),
    /// `STDDEV`, `VARIANCE` and their population forms.
    Variance(Variance),
    /// `FIRST_VALUE`/`LAST_VALUE` of `BIGINT` and `TIMESTAMP`, by event time.
    ByTimeInt(ByTime<i64>),
    /// `FIRST_VALUE`/`LAST_VALUE` of `DOUBLE`.
    ByTimeFloat(ByTime<f64>),
    /// `FIRST_VALUE`/`LAST_VALUE` of `BOOLEAN`.
    ByTimeBool(ByTime<bool>),
    /// `FIRST_VALUE`/`LAST_VALUE` of `TEXT`.
    ByTimeText(ByTime<String>),
    /// `APPROX_DISTINCT` of `TEXT` or `BOOLEAN`, an HLL sketch.
    ApproxDistinct(ApproxDistinct),
    /// `APPROX_DISTINCT` of `BIGINT`, `TIMESTAMP` or `DOUBLE`, an HLL sketch.
    ApproxDistinctNumber(ApproxDistinct<NumberHll>),
    /// `APPROX_PERCENTILE`, a t-digest.
    ApproxPercentile(ApproxPercentile),
    /// `APPROX_TOP_K` of `TEXT`, a frequent items sketch.
    ApproxTopKText(ApproxTopK<String>),
    /// `APPROX_TOP_K` of `BIGINT` and `TIMESTAMP`.
    ApproxTopKInt(ApproxTopK<i64>),
}

impl Accumulator {
    /// Empty state for `call`.
    pub fn new(call: &AggregateCall) -> Self {
        use AggregateFunction as F;
        let arg = call.arg.as_ref().map(|a| a.ty);
        let max = call.func == F::Max;
        let last = call.func == F::LastValue;
        match (call.func, arg) {
            (F::CountStar, _) => Accumulator::Count(Count::new(false)),
            (F::Count, _) => Accumulator::Count(Count::new(true)),
            (F::Sum, Some(DataType::BigInt)) => Accumulator::SumInt(SumInt::default()),
            (F::Sum | F::Avg, _) => Accumulator::SumFloat(SumFloat::new(call.func == F::Avg)),
            (
                F::ApproxDistinct,
                Some(DataType::BigInt | DataType::Timestamp | DataType::Double),
            ) => Accumulator::ApproxDistinctNumber(ApproxDistinct::default()),
            (F::ApproxDistinct, _) => Accumulator::ApproxDistinct(ApproxDistinct::default()),
            (F::ApproxTopK, Some(DataType::Text)) => {
                Accumulator::ApproxTopKText(ApproxTopK::new(call.param.unwrap_or(10.0) as usize))
            }
            (F::ApproxTopK, _) => {
                Accumulator::ApproxTopKInt(ApproxTopK::new(call.param.unwrap_or(10.0) as usize))
            }
            (F::ApproxPercentile, _) => {
                Accumulator::ApproxPercentile(ApproxPercentile::new(call.param.unwrap_or(0.5)))
            }
            (F::StddevSamp | F::StddevPop | F::VarSamp | F::VarPop, _) => {
                Accumulator::Variance(Variance::new(call.func))
            }
            (F::FirstValue | F::LastValue, Some(DataType::BigInt | DataType::Timestamp)) => {
                Accumulator::ByTimeInt(ByTime::new(last))
            }
            (F::FirstValue | F::LastValue, Some(DataType::Double)) => {
                Accumulator::ByTimeFloat(ByTime::new(last))
            }
            (F::FirstValue | F::LastValue, Some(DataType::Boolean)) => {
                Accumulator::ByTimeBool(ByTime::new(last))
            }
            (F::FirstValue | F::LastValue, _) => Accumulator::ByTimeText(ByTime::new(last)),
            (_, Some(DataType::BigInt | DataType::Timestamp)) => {
                Accumulator::ExtremeInt(Extreme::new(max))
            }
            (_, Some(DataType::Double)) => Accumulator::ExtremeFloat(Extreme::new(max)),
            (_, Some(DataType::Boolean)) => Accumulator::ExtremeBool(Extreme::new(max)),
            (_, Some(DataType::Text) | None) => Accumulator::ExtremeText(ExtremeText::new(max)),
        }
    }

    /// The value of a `MIN` or `MAX` of `BIGINT` or `TIMESTAMP` at `slot` (`None` for
    /// an empty slot or another aggregate): a session's first and last event time.
    pub fn int_extreme(&self, slot: usize) -> Option<i64> {
        match self {
            Accumulator::ExtremeInt(e) => e.value(slot),
            _ => None,
        }
    }

    /// The value of a `COUNT` at `slot` (`None` for another aggregate): the readings
    /// behind a row, for a registry join's count of those it drops.
    pub fn count(&self, slot: usize) -> Option<i64> {
        match self {
            Accumulator::Count(c) => Some(c.value(slot)),
            _ => None,
        }
    }

    /// Empties `slots` so they can be reused.
    pub fn reset_slots(&mut self, slots: &[u32]) {
        for &s in slots {
            self.reset(s as usize);
        }
    }

    /// Appends slot `slot` of `other` (same kind) as a new slot of `self`.
    pub fn push_from(&mut self, other: &Accumulator, slot: usize) {
        self.push_empty();
        let to = self.len() - 1;
        self.merge_slot(to, other, slot);
    }
}

/// Timestamps stay timestamps: aggregates over a `TIMESTAMP` argument that return one of
/// its values finish as `TIMESTAMP` columns.
pub fn retype(column: Column, ty: DataType) -> Column {
    match (column.values, ty) {
        (ColumnValues::BigInt(v), DataType::Timestamp) => Column {
            values: ColumnValues::Timestamp(v),
            validity: column.validity,
        },
        (values, _) => Column {
            values,
            validity: column.validity,
        },
    }
}

#[cfg(test)]
mod tests;
