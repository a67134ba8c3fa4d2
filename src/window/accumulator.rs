//! Aggregate state, one column per aggregate over numbered slots.
//!
//! A slot is one open (group, window). Updates run a whole batch at a time, one tight loop
//! per aggregate over `(row, slot)` pairs, so adding an aggregate costs one more pass and
//! no per-reading dispatch. The same type travels between workers as the partial result
//! of a window and is merged slot by slot at the key's owner.
//!
//! `DOUBLE` sums use Neumaier's compensated summation so that the result hardly depends
//! on the order partial sums are combined in, which varies with the number of workers.
//!
//! Overflow is decided on the final value only, never on a partial: an integer sum keeps
//! its wrapped `i64` plus a count of wraps, so `[i64::MAX, 1, -1]` sums to `i64::MAX`
//! however it is split over workers, and a sum whose final value does not fit is NULL
//! and counted. A `DOUBLE` sum or average that ends infinite or NaN is NULL and counted
//! in the same way, so no output holds an infinity.

use serde::{Deserialize, Serialize};

use crate::batch::{Column, ColumnValues, Interner};
use crate::query::{AggregateCall, AggregateFunction};
use crate::types::DataType;

/// Set when a slot has seen a non-null value.
const ANY: u8 = 1;

/// The state of one aggregate for every slot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Accumulator {
    /// `COUNT(*)` and `COUNT(x)`.
    Count {
        /// Whether nulls are skipped (`COUNT(x)`).
        skip_nulls: bool,
        /// Count per slot.
        n: Vec<i64>,
    },
    /// `SUM` of `BIGINT`: the exact sum is `sum + wraps * 2^64`. Four bytes of wrap
    /// count instead of an `i128` keep the slot at 13 bytes; the count is exact while a
    /// slot has fewer than 2^31 readings (each reading wraps at most once).
    SumInt {
        /// Wrapping sum per slot.
        sum: Vec<i64>,
        /// Net number of times the sum wrapped (up positive, down negative).
        wraps: Vec<i32>,
        /// `ANY` flag per slot.
        flags: Vec<u8>,
    },
    /// `SUM` and `AVG` of `DOUBLE` (and `AVG` of `BIGINT`).
    SumFloat {
        /// Whether this is an average.
        avg: bool,
        /// Running sum.
        sum: Vec<f64>,
        /// Neumaier compensation.
        comp: Vec<f64>,
        /// Non-null values seen.
        n: Vec<u64>,
    },
    /// `MIN`/`MAX` of `BIGINT` and `TIMESTAMP`.
    ExtremeInt {
        /// `MAX` when true.
        max: bool,
        /// Current extreme.
        v: Vec<i64>,
        /// `ANY` flag.
        flags: Vec<u8>,
    },
    /// `MIN`/`MAX` of `DOUBLE`.
    ExtremeFloat {
        /// `MAX` when true.
        max: bool,
        /// Current extreme.
        v: Vec<f64>,
        /// `ANY` flag.
        flags: Vec<u8>,
    },
    /// `MIN`/`MAX` of `BOOLEAN`.
    ExtremeBool {
        /// `MAX` when true.
        max: bool,
        /// Current extreme.
        v: Vec<bool>,
        /// `ANY` flag.
        flags: Vec<u8>,
    },
    /// `MIN`/`MAX` of `TEXT`, kept as text so it can travel between workers.
    ExtremeText {
        /// `MAX` when true.
        max: bool,
        /// Current extreme.
        v: Vec<Option<String>>,
    },
}

#[inline]
fn neumaier(sum: &mut f64, comp: &mut f64, x: f64) {
    let t = *sum + x;
    if sum.abs() >= x.abs() {
        *comp += (*sum - t) + x;
    } else {
        *comp += (x - t) + *sum;
    }
    *sum = t;
}

/// The change in wrap count when adding `x` wrapped (`overflow`): up for a positive `x`,
/// down for a negative one. Branch-free, as it runs once per reading.
#[inline(always)]
fn wrap(overflow: bool, x: i64) -> i32 {
    i32::from(overflow) * (((x >> 63) as i32) | 1)
}

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

impl Accumulator {
    /// Empty state for an aggregate over an argument of type `arg`.
    pub fn new(call: &AggregateCall) -> Self {
        let arg = call.arg.as_ref().map(|a| a.ty);
        let max = call.func == AggregateFunction::Max;
        match (call.func, arg) {
            (AggregateFunction::CountStar, _) => Accumulator::Count {
                skip_nulls: false,
                n: Vec::new(),
            },
            (AggregateFunction::Count, _) => Accumulator::Count {
                skip_nulls: true,
                n: Vec::new(),
            },
            (AggregateFunction::Sum, Some(DataType::BigInt)) => Accumulator::SumInt {
                sum: Vec::new(),
                wraps: Vec::new(),
                flags: Vec::new(),
            },
            (AggregateFunction::Sum | AggregateFunction::Avg, _) => Accumulator::SumFloat {
                avg: call.func == AggregateFunction::Avg,
                sum: Vec::new(),
                comp: Vec::new(),
                n: Vec::new(),
            },
            (_, Some(DataType::BigInt | DataType::Timestamp)) => Accumulator::ExtremeInt {
                max,
                v: Vec::new(),
                flags: Vec::new(),
            },
            (_, Some(DataType::Double)) => Accumulator::ExtremeFloat {
                max,
                v: Vec::new(),
                flags: Vec::new(),
            },
            (_, Some(DataType::Boolean)) => Accumulator::ExtremeBool {
                max,
                v: Vec::new(),
                flags: Vec::new(),
            },
            (_, Some(DataType::Text) | None) => Accumulator::ExtremeText { max, v: Vec::new() },
        }
    }

    /// An empty accumulator of the same kind.
    pub fn empty_like(&self) -> Self {
        match self {
            Accumulator::Count { skip_nulls, .. } => Accumulator::Count {
                skip_nulls: *skip_nulls,
                n: Vec::new(),
            },
            Accumulator::SumInt { .. } => Accumulator::SumInt {
                sum: Vec::new(),
                wraps: Vec::new(),
                flags: Vec::new(),
            },
            Accumulator::SumFloat { avg, .. } => Accumulator::SumFloat {
                avg: *avg,
                sum: Vec::new(),
                comp: Vec::new(),
                n: Vec::new(),
            },
            Accumulator::ExtremeInt { max, .. } => Accumulator::ExtremeInt {
                max: *max,
                v: Vec::new(),
                flags: Vec::new(),
            },
            Accumulator::ExtremeFloat { max, .. } => Accumulator::ExtremeFloat {
                max: *max,
                v: Vec::new(),
                flags: Vec::new(),
            },
            Accumulator::ExtremeBool { max, .. } => Accumulator::ExtremeBool {
                max: *max,
                v: Vec::new(),
                flags: Vec::new(),
            },
            Accumulator::ExtremeText { max, .. } => Accumulator::ExtremeText {
                max: *max,
                v: Vec::new(),
            },
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        match self {
            Accumulator::Count { n, .. } => n.len(),
            Accumulator::SumInt { sum, .. } => sum.len(),
            Accumulator::SumFloat { sum, .. } => sum.len(),
            Accumulator::ExtremeInt { v, .. } => v.len(),
            Accumulator::ExtremeFloat { v, .. } => v.len(),
            Accumulator::ExtremeBool { v, .. } => v.len(),
            Accumulator::ExtremeText { v, .. } => v.len(),
        }
    }

    /// Whether there are no slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of state per slot.
    pub fn bytes_per_slot(&self) -> usize {
        match self {
            Accumulator::Count { .. } => 8,
            Accumulator::SumInt { .. } => 13,
            Accumulator::ExtremeInt { .. } | Accumulator::ExtremeFloat { .. } => 9,
            Accumulator::SumFloat { .. } => 24,
            Accumulator::ExtremeBool { .. } => 2,
            Accumulator::ExtremeText { .. } => 24,
        }
    }

    /// Adds one empty slot at the end.
    pub fn push_empty(&mut self) {
        match self {
            Accumulator::Count { n, .. } => n.push(0),
            Accumulator::SumInt { sum, wraps, flags } => {
                sum.push(0);
                wraps.push(0);
                flags.push(0);
            }
            Accumulator::SumFloat { sum, comp, n, .. } => {
                sum.push(0.0);
                comp.push(0.0);
                n.push(0);
            }
            Accumulator::ExtremeInt { v, flags, .. } => {
                v.push(0);
                flags.push(0);
            }
            Accumulator::ExtremeFloat { v, flags, .. } => {
                v.push(0.0);
                flags.push(0);
            }
            Accumulator::ExtremeBool { v, flags, .. } => {
                v.push(false);
                flags.push(0);
            }
            Accumulator::ExtremeText { v, .. } => v.push(None),
        }
    }

    /// Resets a slot to empty so it can be reused.
    pub fn reset(&mut self, slot: usize) {
        match self {
            Accumulator::Count { n, .. } => n[slot] = 0,
            Accumulator::SumInt { sum, wraps, flags } => {
                sum[slot] = 0;
                wraps[slot] = 0;
                flags[slot] = 0;
            }
            Accumulator::SumFloat { sum, comp, n, .. } => {
                sum[slot] = 0.0;
                comp[slot] = 0.0;
                n[slot] = 0;
            }
            Accumulator::ExtremeInt { flags, .. }
            | Accumulator::ExtremeFloat { flags, .. }
            | Accumulator::ExtremeBool { flags, .. } => flags[slot] = 0,
            Accumulator::ExtremeText { v, .. } => v[slot] = None,
        }
    }

    /// Folds the argument values of a batch into their slots. `arg` is `None` only for
    /// `COUNT(*)`.
    pub fn update(&mut self, pairs: &Pairs, arg: Option<&Column>, interner: &Interner) {
        match (self, arg) {
            (Accumulator::Count { skip_nulls, n }, arg) => match arg.filter(|_| *skip_nulls) {
                Some(column) => for_valid_pairs!(pairs, column, |_row, slot| { n[slot] += 1 }),
                None => {
                    for &slot in &pairs.slots {
                        n[slot as usize] += 1;
                    }
                }
            },
            (Accumulator::SumInt { sum, wraps, flags }, Some(column)) => {
                if let ColumnValues::BigInt(values) = &column.values {
                    for_valid_pairs!(pairs, column, |row, slot| {
                        let x = values[row];
                        let (s, overflow) = sum[slot].overflowing_add(x);
                        sum[slot] = s;
                        wraps[slot] = wraps[slot].wrapping_add(wrap(overflow, x));
                        flags[slot] |= ANY;
                    });
                }
            }
            (Accumulator::SumFloat { sum, comp, n, .. }, Some(column)) => match &column.values {
                ColumnValues::Double(values) => for_valid_pairs!(pairs, column, |row, slot| {
                    neumaier(&mut sum[slot], &mut comp[slot], values[row]);
                    n[slot] += 1;
                }),
                ColumnValues::BigInt(values) => for_valid_pairs!(pairs, column, |row, slot| {
                    neumaier(&mut sum[slot], &mut comp[slot], values[row] as f64);
                    n[slot] += 1;
                }),
                _ => {}
            },
            (Accumulator::ExtremeInt { max, v, flags }, Some(column)) => {
                if let ColumnValues::BigInt(values) | ColumnValues::Timestamp(values) =
                    &column.values
                {
                    let max = *max;
                    for_valid_pairs!(pairs, column, |row, slot| {
                        let x = values[row];
                        if flags[slot] == 0 || (max && x > v[slot]) || (!max && x < v[slot]) {
                            v[slot] = x;
                            flags[slot] = ANY;
                        }
                    });
                }
            }
            (Accumulator::ExtremeFloat { max, v, flags }, Some(column)) => {
                if let ColumnValues::Double(values) = &column.values {
                    let max = *max;
                    for_valid_pairs!(pairs, column, |row, slot| {
                        let x = values[row];
                        if flags[slot] == 0 || (max && x > v[slot]) || (!max && x < v[slot]) {
                            v[slot] = x;
                            flags[slot] = ANY;
                        }
                    });
                }
            }
            (Accumulator::ExtremeBool { max, v, flags }, Some(column)) => {
                if let ColumnValues::Boolean(values) = &column.values {
                    let max = *max;
                    for_valid_pairs!(pairs, column, |row, slot| {
                        let x = values[row];
                        if flags[slot] == 0 || (max && x && !v[slot]) || (!max && !x && v[slot]) {
                            v[slot] = x;
                            flags[slot] = ANY;
                        }
                    });
                }
            }
            (Accumulator::ExtremeText { max, v }, Some(column)) => {
                if let ColumnValues::Text(ids) = &column.values {
                    let max = *max;
                    for_valid_pairs!(pairs, column, |row, slot| {
                        let x = interner.get(ids[row]);
                        let better = match &v[slot] {
                            None => true,
                            Some(cur) => (max && x > cur.as_str()) || (!max && x < cur.as_str()),
                        };
                        if better {
                            v[slot] = Some(x.to_owned());
                        }
                    });
                }
            }
            _ => {}
        }
    }

    /// A new accumulator holding `slots` of this one, in that order.
    pub fn gather(&self, slots: &[u32]) -> Accumulator {
        fn pick<T: Clone>(v: &[T], slots: &[u32]) -> Vec<T> {
            slots.iter().map(|&s| v[s as usize].clone()).collect()
        }
        match self {
            Accumulator::Count { skip_nulls, n } => Accumulator::Count {
                skip_nulls: *skip_nulls,
                n: pick(n, slots),
            },
            Accumulator::SumInt { sum, wraps, flags } => Accumulator::SumInt {
                sum: pick(sum, slots),
                wraps: pick(wraps, slots),
                flags: pick(flags, slots),
            },
            Accumulator::SumFloat { avg, sum, comp, n } => Accumulator::SumFloat {
                avg: *avg,
                sum: pick(sum, slots),
                comp: pick(comp, slots),
                n: pick(n, slots),
            },
            Accumulator::ExtremeInt { max, v, flags } => Accumulator::ExtremeInt {
                max: *max,
                v: pick(v, slots),
                flags: pick(flags, slots),
            },
            Accumulator::ExtremeFloat { max, v, flags } => Accumulator::ExtremeFloat {
                max: *max,
                v: pick(v, slots),
                flags: pick(flags, slots),
            },
            Accumulator::ExtremeBool { max, v, flags } => Accumulator::ExtremeBool {
                max: *max,
                v: pick(v, slots),
                flags: pick(flags, slots),
            },
            Accumulator::ExtremeText { max, v } => Accumulator::ExtremeText {
                max: *max,
                v: pick(v, slots),
            },
        }
    }

    /// Resets `slots` to empty so they can be reused.
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

    /// Merges slot `from` of `other` (same kind) into slot `to` of `self`.
    pub fn merge_slot(&mut self, to: usize, other: &Accumulator, from: usize) {
        match (self, other) {
            (Accumulator::Count { n, .. }, Accumulator::Count { n: o, .. }) => n[to] += o[from],
            (
                Accumulator::SumInt { sum, wraps, flags },
                Accumulator::SumInt {
                    sum: os,
                    wraps: ow,
                    flags: of,
                },
            ) => {
                let (s, overflow) = sum[to].overflowing_add(os[from]);
                sum[to] = s;
                wraps[to] = wraps[to]
                    .wrapping_add(ow[from])
                    .wrapping_add(wrap(overflow, os[from]));
                flags[to] |= of[from];
            }
            (
                Accumulator::SumFloat { sum, comp, n, .. },
                Accumulator::SumFloat {
                    sum: os,
                    comp: oc,
                    n: on,
                    ..
                },
            ) => {
                neumaier(&mut sum[to], &mut comp[to], os[from]);
                neumaier(&mut sum[to], &mut comp[to], oc[from]);
                n[to] += on[from];
            }
            (
                Accumulator::ExtremeInt { max, v, flags },
                Accumulator::ExtremeInt {
                    v: ov, flags: of, ..
                },
            ) if of[from] != 0
                && (flags[to] == 0
                    || (*max && ov[from] > v[to])
                    || (!*max && ov[from] < v[to])) =>
            {
                v[to] = ov[from];
                flags[to] = ANY;
            }
            (
                Accumulator::ExtremeFloat { max, v, flags },
                Accumulator::ExtremeFloat {
                    v: ov, flags: of, ..
                },
            ) if of[from] != 0
                && (flags[to] == 0
                    || (*max && ov[from] > v[to])
                    || (!*max && ov[from] < v[to])) =>
            {
                v[to] = ov[from];
                flags[to] = ANY;
            }
            (
                Accumulator::ExtremeBool { max, v, flags },
                Accumulator::ExtremeBool {
                    v: ov, flags: of, ..
                },
            ) if of[from] != 0
                && (flags[to] == 0
                    || (*max && ov[from] && !v[to])
                    || (!*max && !ov[from] && v[to])) =>
            {
                v[to] = ov[from];
                flags[to] = ANY;
            }
            (Accumulator::ExtremeText { max, v }, Accumulator::ExtremeText { v: ov, .. }) => {
                if let Some(x) = &ov[from] {
                    let better = match &v[to] {
                        None => true,
                        Some(cur) => (*max && x > cur) || (!*max && x < cur),
                    };
                    if better {
                        v[to] = Some(x.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// The final values of the given slots as a column; text results are interned into
    /// `interner`. Returns the number of sums and averages that overflowed (an integer
    /// sum outside `i64`, a `DOUBLE` one that is infinite or NaN), reported as NULL.
    pub fn finish(&self, slots: &[usize], interner: &mut Interner) -> (Column, u64) {
        let mut overflows = 0;
        let column = match self {
            Accumulator::Count { n, .. } => Column {
                values: ColumnValues::BigInt(slots.iter().map(|&s| n[s]).collect()),
                validity: None,
            },
            Accumulator::SumInt { sum, wraps, flags } => {
                overflows = slots
                    .iter()
                    .filter(|&&s| flags[s] & ANY != 0 && wraps[s] != 0)
                    .count() as u64;
                Column {
                    values: ColumnValues::BigInt(slots.iter().map(|&s| sum[s]).collect()),
                    validity: validity(slots, |s| flags[s] & ANY != 0 && wraps[s] == 0),
                }
            }
            Accumulator::SumFloat { avg, sum, comp, n } => {
                let total = |s: usize| {
                    let total = sum[s] + comp[s];
                    if *avg && n[s] > 0 {
                        total / n[s] as f64
                    } else {
                        total
                    }
                };
                overflows = slots
                    .iter()
                    .filter(|&&s| n[s] > 0 && !total(s).is_finite())
                    .count() as u64;
                Column {
                    // A NULL slot holds 0 rather than the infinity, so nothing downstream
                    // (HAVING, output arithmetic) ever meets a non-finite value.
                    values: ColumnValues::Double(
                        slots
                            .iter()
                            .map(|&s| Some(total(s)).filter(|t| t.is_finite()).unwrap_or(0.0))
                            .collect(),
                    ),
                    validity: validity(slots, |s| n[s] > 0 && total(s).is_finite()),
                }
            }
            Accumulator::ExtremeInt { v, flags, .. } => Column {
                values: ColumnValues::BigInt(slots.iter().map(|&s| v[s]).collect()),
                validity: validity(slots, |s| flags[s] != 0),
            },
            Accumulator::ExtremeFloat { v, flags, .. } => Column {
                values: ColumnValues::Double(slots.iter().map(|&s| v[s]).collect()),
                validity: validity(slots, |s| flags[s] != 0),
            },
            Accumulator::ExtremeBool { v, flags, .. } => Column {
                values: ColumnValues::Boolean(slots.iter().map(|&s| v[s]).collect()),
                validity: validity(slots, |s| flags[s] != 0),
            },
            Accumulator::ExtremeText { v, .. } => Column {
                values: ColumnValues::Text(
                    slots
                        .iter()
                        .map(|&s| v[s].as_deref().map_or(0, |t| interner.intern(t)))
                        .collect(),
                ),
                validity: validity(slots, |s| v[s].is_some()),
            },
        };
        (column, overflows)
    }
}

/// The validity of `slots` when any is NULL; `None` (no null buffer at all, which Arrow
/// and the Parquet writer handle faster) when every value is set.
fn validity(slots: &[usize], valid: impl Fn(usize) -> bool) -> Option<Vec<bool>> {
    if slots.iter().all(|&s| valid(s)) {
        return None;
    }
    Some(slots.iter().map(|&s| valid(s)).collect())
}

/// Timestamps stay timestamps: `MIN`/`MAX` over a `TIMESTAMP` argument finish as
/// `TIMESTAMP` columns.
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
mod tests {
    use super::*;
    use crate::query::expr::{ColumnRef, TypedExpr};
    use proptest::prelude::*;

    fn call(func: AggregateFunction, ty: DataType) -> AggregateCall {
        let arg = TypedExpr::leaf(
            ColumnRef {
                index: 0,
                name: "x".into(),
            },
            ty,
        );
        AggregateCall {
            func,
            arg: Some(arg),
            output_type: ty,
        }
    }

    fn doubles(values: &[f64]) -> Column {
        Column {
            values: ColumnValues::Double(values.to_vec()),
            validity: None,
        }
    }

    fn fold(acc: &mut Accumulator, values: &[f64]) {
        let mut pairs = Pairs::default();
        for i in 0..values.len() {
            pairs.push(i as u32, 0);
        }
        if acc.is_empty() {
            acc.push_empty();
        }
        acc.update(&pairs, Some(&doubles(values)), &Interner::new());
    }

    #[test]
    fn integer_sums_overflow_to_null() {
        let mut acc = Accumulator::new(&call(AggregateFunction::Sum, DataType::BigInt));
        acc.push_empty();
        let column = Column {
            values: ColumnValues::BigInt(vec![i64::MAX, 1]),
            validity: None,
        };
        let mut pairs = Pairs::default();
        pairs.push(0, 0);
        pairs.push(1, 0);
        acc.update(&pairs, Some(&column), &Interner::new());
        let (out, overflows) = acc.finish(&[0], &mut Interner::new());
        assert_eq!(overflows, 1);
        assert_eq!(out.validity, Some(vec![false]));
    }

    fn bigints(values: &[i64]) -> Column {
        Column {
            values: ColumnValues::BigInt(values.to_vec()),
            validity: None,
        }
    }

    /// One slot of `call` folded over `values`.
    fn folded(c: &AggregateCall, values: &Column) -> Accumulator {
        let mut acc = Accumulator::new(c);
        acc.push_empty();
        let mut pairs = Pairs::default();
        for i in 0..values.len() {
            pairs.push(i as u32, 0);
        }
        acc.update(&pairs, Some(values), &Interner::new());
        acc
    }

    #[test]
    fn integer_sums_decide_overflow_on_the_final_value() {
        let c = call(AggregateFunction::Sum, DataType::BigInt);
        let whole = folded(&c, &bigints(&[i64::MAX, 1, -1]));
        let (out, overflows) = whole.finish(&[0], &mut Interner::new());
        assert_eq!(overflows, 0);
        assert_eq!(out.values, ColumnValues::BigInt(vec![i64::MAX]));
        assert_eq!(out.validity, None);
        // The same values split so that one partial overflows on its own.
        let mut merged = Accumulator::new(&c);
        merged.push_empty();
        for part in [&[i64::MAX, 1][..], &[-1][..]] {
            merged.merge_slot(0, &folded(&c, &bigints(part)), 0);
        }
        assert_eq!(merged.finish(&[0], &mut Interner::new()), (out, 0));
        // Going below i64::MIN is an overflow too.
        let low = folded(&c, &bigints(&[i64::MIN, -1]));
        let (out, overflows) = low.finish(&[0], &mut Interner::new());
        assert_eq!((out.validity, overflows), (Some(vec![false]), 1));
    }

    #[test]
    fn double_sums_and_averages_that_overflow_are_null_and_counted() {
        for func in [AggregateFunction::Sum, AggregateFunction::Avg] {
            let c = call(func, DataType::Double);
            let acc = folded(&c, &doubles(&[f64::MAX, f64::MAX, 1.0]));
            let (out, overflows) = acc.finish(&[0], &mut Interner::new());
            assert_eq!(overflows, 1, "{func:?}");
            assert_eq!(out.validity, Some(vec![false]), "{func:?}");
            assert_eq!(out.values, ColumnValues::Double(vec![0.0]), "{func:?}");
        }
        // Still NULL after merging with a finite partial, never NaN.
        let c = call(AggregateFunction::Sum, DataType::Double);
        let mut merged = folded(&c, &doubles(&[f64::MAX, f64::MAX]));
        merged.merge_slot(0, &folded(&c, &doubles(&[-1.0])), 0);
        let (out, overflows) = merged.finish(&[0], &mut Interner::new());
        assert_eq!((out.validity, overflows), (Some(vec![false]), 1));
    }

    #[test]
    fn per_slot_state_is_small() {
        let c = call(AggregateFunction::Sum, DataType::BigInt);
        assert_eq!(Accumulator::new(&c).bytes_per_slot(), 13);
    }

    /// Values that make integer sums wrap often: the extremes, near them, and small ones.
    fn wild_i64() -> impl Strategy<Value = i64> {
        prop_oneof![
            Just(i64::MAX),
            Just(i64::MIN),
            (i64::MAX - 1000..=i64::MAX),
            (i64::MIN..=i64::MIN + 1000),
            -1000i64..1000,
            any::<i64>(),
        ]
    }

    proptest! {
        /// Integer sums split at random points into partials and merged equal one pass,
        /// and both equal the exact sum: its value when it fits in i64, else NULL and one
        /// overflow.
        #[test]
        fn integer_sums_do_not_depend_on_the_split(
            values in prop::collection::vec(wild_i64(), 1..200),
            splits in prop::collection::vec(0usize..200, 0..6),
        ) {
            let c = call(AggregateFunction::Sum, DataType::BigInt);
            let whole = folded(&c, &bigints(&values));
            let mut cuts: Vec<usize> = splits.iter().map(|s| s % values.len()).collect();
            cuts.push(0);
            cuts.push(values.len());
            cuts.sort_unstable();
            let mut merged = Accumulator::new(&c);
            merged.push_empty();
            for w in cuts.windows(2) {
                merged.merge_slot(0, &folded(&c, &bigints(&values[w[0]..w[1]])), 0);
            }
            let exact: i128 = values.iter().map(|&v| i128::from(v)).sum();
            for acc in [&whole, &merged] {
                let (col, overflows) = acc.finish(&[0], &mut Interner::new());
                match i64::try_from(exact) {
                    Ok(v) => {
                        prop_assert_eq!(col, bigints(&[v]));
                        prop_assert_eq!(overflows, 0);
                    }
                    Err(_) => {
                        prop_assert_eq!(col.validity, Some(vec![false]));
                        prop_assert_eq!(overflows, 1);
                    }
                }
            }
        }

        /// Splitting values over workers and merging gives the same sum as one pass, bit
        /// for bit, for the kind of values readings carry.
        #[test]
        fn compensated_sums_do_not_depend_on_grouping(
            values in prop::collection::vec(0u32..100_000, 1..400),
            splits in prop::collection::vec(0usize..400, 0..4),
        ) {
            let values: Vec<f64> = values.iter().map(|&c| f64::from(c) / 100.0).collect();
            let c = call(AggregateFunction::Avg, DataType::Double);
            let mut whole = Accumulator::new(&c);
            fold(&mut whole, &values);
            let mut cuts: Vec<usize> = splits.iter().map(|s| s % values.len()).collect();
            cuts.push(0);
            cuts.push(values.len());
            cuts.sort_unstable();
            let mut merged = Accumulator::new(&c);
            merged.push_empty();
            for w in cuts.windows(2) {
                let mut part = Accumulator::new(&c);
                fold(&mut part, &values[w[0]..w[1]]);
                merged.merge_slot(0, &part, 0);
            }
            let (a, _) = whole.finish(&[0], &mut Interner::new());
            let (b, _) = merged.finish(&[0], &mut Interner::new());
            prop_assert_eq!(a, b);
        }
    }
}
