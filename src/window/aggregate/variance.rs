//! `STDDEV`/`STDDEV_SAMP`, `STDDEV_POP`, `VARIANCE`/`VAR_SAMP` and `VAR_POP`.
//!
//! The state is the count and compensated sums of `x` and `x²`, so partials merge by
//! addition and, like `SUM`, hardly depend on how readings were split over workers
//! (Welford's running mean would round differently for each split). The variance is
//! `(Σx² − (Σx)²/n) / d`, which in plain `f64` would cancel to noise when the spread is
//! small against the mean; the sums keep about twice an `f64`'s digits (each `x²` enters
//! with its rounding error, `(Σx)²` is formed with its own), so the difference keeps its
//! digits too.

use serde::{Deserialize, Serialize};

use super::sum_float::{doubles, for_each_number, neumaier};
use super::{Aggregate, Finished, Input, Pairs, pick};

use crate::batch::Interner;
use crate::query::AggregateFunction;

/// Count, compensated `Σx` and `Σx²` per slot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Variance {
    /// Population (divide by `n`) rather than sample (`n - 1`).
    population: bool,
    /// Standard deviation rather than variance.
    root: bool,
    n: Vec<u64>,
    /// `Σx` and its compensation.
    sum: Vec<[f64; 2]>,
    /// `Σx²` and its compensation.
    squares: Vec<[f64; 2]>,
}

impl Variance {
    /// The state of `func`, one of the four variance functions.
    pub fn new(func: AggregateFunction) -> Self {
        use AggregateFunction as F;
        Variance {
            population: matches!(func, F::StddevPop | F::VarPop),
            root: matches!(func, F::StddevSamp | F::StddevPop),
            ..Variance::default()
        }
    }

    fn value(&self, s: usize) -> f64 {
        let n = self.n[s] as f64;
        // The same sum can be held as different (sum, compensation) pairs: a slot merged
        // into an empty one (as a key owned by another worker is) holds the rounded sum
        // and its error. The terms below use the two halves separately, so they start
        // from the one pair of the value.
        let [s1, c1] = two_sum(self.sum[s]);
        let [s2, c2] = two_sum(self.squares[s]);
        // (Σx)²/n as hi + lo, carrying the digits an f64 would drop, so that Σx² − (Σx)²/n
        // cancels to the spread and not to rounding noise.
        let square = s1 * s1;
        let square_err = s1.mul_add(s1, -square) + 2.0 * s1 * c1 + c1 * c1;
        let hi = square / n;
        let lo = ((-hi).mul_add(n, square) + square_err) / n;
        let centred = (s2 - hi) + (c2 - lo);
        let divisor = if self.population { n } else { n - 1.0 };
        // Rounding may leave a tiny negative for values that are all equal. Squares
        // beyond the `f64` range leave an infinity or NaN, which `doubles` writes as
        // NULL and counts (`max` would have made NaN a zero).
        let var = if centred < 0.0 {
            0.0
        } else {
            centred / divisor
        };
        if self.root { var.sqrt() } else { var }
    }
}

/// The pair `[hi, lo]` with `hi` the rounded value of `sum + comp` and `lo` the exact
/// rest (Knuth's TwoSum): one pair per value, whichever pair held it.
fn two_sum([sum, comp]: [f64; 2]) -> [f64; 2] {
    let hi = sum + comp;
    let back = hi - comp;
    [hi, (sum - back) + (comp - (hi - back))]
}

fn add(pair: &mut [f64; 2], x: f64) {
    let [sum, comp] = pair;
    neumaier(sum, comp, x);
}

/// Adds `x²` exactly: the product and its rounding error.
///
/// Below about 1e-154 a square leaves the range of normal `f64`s and loses its digits
/// (`[3e-200, 1e-200]` would have a spread of 0): such a value makes the sum NaN, so the
/// group's variance is NULL and counted rather than wrong.
fn add_square(pair: &mut [f64; 2], x: f64) {
    let square = x * x;
    if square < f64::MIN_POSITIVE && x != 0.0 {
        pair[0] = f64::NAN;
        return;
    }
    add(pair, square);
    add(pair, x.mul_add(x, -square));
}

impl Aggregate for Variance {
    fn empty_like(&self) -> Self {
        Variance {
            population: self.population,
            root: self.root,
            ..Variance::default()
        }
    }

    fn len(&self) -> usize {
        self.n.len()
    }

    fn bytes_per_slot(&self) -> usize {
        40
    }

    fn push_empty(&mut self) {
        self.n.push(0);
        self.sum.push([0.0; 2]);
        self.squares.push([0.0; 2]);
    }

    fn reset(&mut self, slot: usize) {
        self.n[slot] = 0;
        self.sum[slot] = [0.0; 2];
        self.squares[slot] = [0.0; 2];
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        let Variance {
            n, sum, squares, ..
        } = self;
        for_each_number(pairs, input, |slot, x| {
            n[slot] += 1;
            add(&mut sum[slot], x);
            add_square(&mut squares[slot], x);
        });
    }

    fn gather(&self, slots: &[u32]) -> Self {
        Variance {
            population: self.population,
            root: self.root,
            n: pick(&self.n, slots),
            sum: pick(&self.sum, slots),
            squares: pick(&self.squares, slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        self.n[to] += other.n[from];
        for x in other.sum[from] {
            add(&mut self.sum[to], x);
        }
        for x in other.squares[from] {
            add(&mut self.squares[to], x);
        }
    }

    fn finish(&self, slots: &[usize], _interner: &mut Interner) -> Finished {
        let least = if self.population { 1 } else { 2 };
        doubles(slots, |s| self.value(s), |s| self.n[s] >= least)
    }
}
