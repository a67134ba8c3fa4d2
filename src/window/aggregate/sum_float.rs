//! `SUM` and `AVG` of `DOUBLE` (and `AVG` of `BIGINT`).
//!
//! Sums use Neumaier's compensated summation so that the result hardly depends on the
//! order partial sums are combined in, which varies with the number of workers. A sum or
//! average that ends infinite or NaN is NULL and counted, so no output holds an infinity.

use serde::{Deserialize, Serialize};

use super::{Aggregate, Finished, Input, Pairs, for_valid_pairs, pick, pick_reset};
use crate::batch::{Column, ColumnValues, Interner};

/// Adds `x` to the compensated sum `(sum, comp)`.
#[inline]
pub(super) fn neumaier(sum: &mut f64, comp: &mut f64, x: f64) {
    let t = *sum + x;
    if sum.abs() >= x.abs() {
        *comp += (*sum - t) + x;
    } else {
        *comp += (x - t) + *sum;
    }
    *sum = t;
}

/// Calls `f(slot, x)` for every non-null numeric argument value of the pairs.
#[inline(always)]
pub(super) fn for_each_number(pairs: &Pairs, input: Input<'_>, mut f: impl FnMut(usize, f64)) {
    let Some(column) = input.arg else { return };
    match &column.values {
        ColumnValues::Double(values) => {
            for_valid_pairs!(pairs, column, |row, slot| { f(slot, values[row]) })
        }
        ColumnValues::BigInt(values) => {
            for_valid_pairs!(pairs, column, |row, slot| { f(slot, values[row] as f64) })
        }
        _ => {}
    }
}

/// `values` as a `DOUBLE` column, NULL where `valid` is false or the value is not finite.
///
/// Each value is computed once (an average is a division): a second pass runs only for
/// a window with NULLs, to build their validity.
pub(super) fn doubles(
    slots: &[usize],
    value: impl Fn(usize) -> f64,
    valid: impl Fn(usize) -> bool,
) -> Finished {
    let mut overflows = 0u64;
    let mut nulls = false;
    // A NULL slot holds 0 rather than the infinity, so nothing downstream (HAVING,
    // output arithmetic) ever meets a non-finite value.
    let values: Vec<f64> = slots
        .iter()
        .map(|&s| {
            if !valid(s) {
                nulls = true;
                return 0.0;
            }
            let v = value(s);
            if v.is_finite() {
                v
            } else {
                overflows += 1;
                nulls = true;
                0.0
            }
        })
        .collect();
    let validity = nulls.then(|| {
        slots
            .iter()
            .map(|&s| valid(s) && value(s).is_finite())
            .collect()
    });
    Finished {
        overflows,
        column: Column {
            values: ColumnValues::Double(values),
            validity,
        },
    }
}

/// Compensated sums and counts per slot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SumFloat {
    /// Whether this is an average.
    avg: bool,
    /// Running sum.
    sum: Vec<f64>,
    /// Neumaier compensation.
    comp: Vec<f64>,
    /// Non-null values seen.
    n: Vec<u64>,
}

impl SumFloat {
    /// `AVG` when `avg`, else `SUM`.
    pub fn new(avg: bool) -> Self {
        SumFloat {
            avg,
            ..SumFloat::default()
        }
    }
}

impl Aggregate for SumFloat {
    fn empty_like(&self) -> Self {
        SumFloat::new(self.avg)
    }

    fn len(&self) -> usize {
        self.sum.len()
    }

    fn bytes_per_slot(&self) -> usize {
        24
    }

    fn push_empty(&mut self) {
        self.sum.push(0.0);
        self.comp.push(0.0);
        self.n.push(0);
    }

    fn reset(&mut self, slot: usize) {
        self.sum[slot] = 0.0;
        self.comp[slot] = 0.0;
        self.n[slot] = 0;
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        let SumFloat { sum, comp, n, .. } = self;
        for_each_number(pairs, input, |slot, x| {
            neumaier(&mut sum[slot], &mut comp[slot], x);
            n[slot] += 1;
        });
    }

    fn gather(&self, slots: &[u32]) -> Self {
        SumFloat {
            avg: self.avg,
            sum: pick(&self.sum, slots),
            comp: pick(&self.comp, slots),
            n: pick(&self.n, slots),
        }
    }

    fn take(&mut self, slots: &[u32]) -> Self {
        SumFloat {
            avg: self.avg,
            sum: pick_reset(&mut self.sum, slots),
            comp: pick_reset(&mut self.comp, slots),
            n: pick_reset(&mut self.n, slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        neumaier(&mut self.sum[to], &mut self.comp[to], other.sum[from]);
        neumaier(&mut self.sum[to], &mut self.comp[to], other.comp[from]);
        self.n[to] += other.n[from];
    }

    fn finish(&self, slots: &[usize], _interner: &mut Interner) -> Finished {
        let SumFloat { avg, sum, comp, n } = self;
        let total = |s: usize| {
            let total = sum[s] + comp[s];
            if *avg && n[s] > 0 {
                total / n[s] as f64
            } else {
                total
            }
        };
        doubles(slots, total, |s| n[s] > 0)
    }
}
