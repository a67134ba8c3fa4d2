//! Unit tests of the aggregates.

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
        param: None,
    }
}

/// An input of `arg` with no event times.
fn input<'a>(arg: Option<&'a Column>, interner: &'a Interner) -> Input<'a> {
    Input {
        arg,
        times: &[],
        interner,
    }
}

/// The column and overflow count of slot 0.
fn finished(acc: &Accumulator) -> (Column, u64) {
    let f = acc.finish(&[0], &mut Interner::new());
    (f.column, f.overflows)
}

/// Where to cut `len` values into parts: 0, the splits, and `len`, in order.
fn cuts(splits: &[usize], len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = splits.iter().map(|s| s % len).collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    cuts
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
    acc.update(&pairs, input(Some(&doubles(values)), &Interner::new()));
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
    acc.update(&pairs, input(Some(&column), &Interner::new()));
    let (out, overflows) = finished(&acc);
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
    acc.update(&pairs, input(Some(values), &Interner::new()));
    acc
}

#[test]
fn integer_sums_decide_overflow_on_the_final_value() {
    let c = call(AggregateFunction::Sum, DataType::BigInt);
    let whole = folded(&c, &bigints(&[i64::MAX, 1, -1]));
    let (out, overflows) = finished(&whole);
    assert_eq!(overflows, 0);
    assert_eq!(out.values, ColumnValues::BigInt(vec![i64::MAX]));
    assert_eq!(out.validity, None);
    // The same values split so that one partial overflows on its own.
    let mut merged = Accumulator::new(&c);
    merged.push_empty();
    for part in [&[i64::MAX, 1][..], &[-1][..]] {
        merged.merge_slot(0, &folded(&c, &bigints(part)), 0);
    }
    assert_eq!(
        merged.finish(&[0], &mut Interner::new()),
        Finished {
            column: out,
            overflows: 0
        }
    );
    // Going below i64::MIN is an overflow too.
    let low = folded(&c, &bigints(&[i64::MIN, -1]));
    let (out, overflows) = finished(&low);
    assert_eq!((out.validity, overflows), (Some(vec![false]), 1));
}

#[test]
fn double_sums_and_averages_that_overflow_are_null_and_counted() {
    for func in [AggregateFunction::Sum, AggregateFunction::Avg] {
        let c = call(func, DataType::Double);
        let acc = folded(&c, &doubles(&[f64::MAX, f64::MAX, 1.0]));
        let (out, overflows) = finished(&acc);
        assert_eq!(overflows, 1, "{func:?}");
        assert_eq!(out.validity, Some(vec![false]), "{func:?}");
        assert_eq!(out.values, ColumnValues::Double(vec![0.0]), "{func:?}");
    }
    // Still NULL after merging with a finite partial, never NaN.
    let c = call(AggregateFunction::Sum, DataType::Double);
    let mut merged = folded(&c, &doubles(&[f64::MAX, f64::MAX]));
    merged.merge_slot(0, &folded(&c, &doubles(&[-1.0])), 0);
    let (out, overflows) = finished(&merged);
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
        let cuts = cuts(&splits, values.len());
        let mut merged = Accumulator::new(&c);
        merged.push_empty();
        for w in cuts.windows(2) {
            merged.merge_slot(0, &folded(&c, &bigints(&values[w[0]..w[1]])), 0);
        }
        let exact: i128 = values.iter().map(|&v| i128::from(v)).sum();
        for acc in [&whole, &merged] {
            let (col, overflows) = finished(acc);
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
        let cuts = cuts(&splits, values.len());
        let mut merged = Accumulator::new(&c);
        merged.push_empty();
        for w in cuts.windows(2) {
            let mut part = Accumulator::new(&c);
            fold(&mut part, &values[w[0]..w[1]]);
            merged.merge_slot(0, &part, 0);
        }
        let a = whole.finish(&[0], &mut Interner::new()).column;
        let b = merged.finish(&[0], &mut Interner::new()).column;
        prop_assert_eq!(a, b);
    }
}

fn folded_doubles(c: &AggregateCall, values: &[f64]) -> Accumulator {
    let mut acc = Accumulator::new(c);
    fold(&mut acc, values);
    acc
}

fn single_double(acc: &Accumulator) -> Option<f64> {
    let column = acc.finish(&[0], &mut Interner::new()).column;
    match (column.values, column.validity) {
        (_, Some(v)) if !v[0] => None,
        (ColumnValues::Double(v), _) => Some(v[0]),
        (other, _) => panic!("not a double: {other:?}"),
    }
}

/// Two-pass variance, the textbook way.
fn two_pass(values: &[f64], population: bool) -> f64 {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let m2: f64 = values.iter().map(|x| (x - mean) * (x - mean)).sum();
    m2 / if population { n } else { n - 1.0 }
}

#[test]
fn variance_of_equal_values_is_zero_and_of_one_sample_null() {
    let sd = call(AggregateFunction::StddevSamp, DataType::Double);
    for x in [12.34, 1.0e9 + 0.1, 0.1, -7.77] {
        let got = single_double(&folded_doubles(&sd, &vec![x; 1000]));
        assert!(
            got.is_some_and(|v| v.abs() < 1e-9 * x.abs()),
            "{x}: {got:?}"
        );
    }
    assert_eq!(single_double(&folded_doubles(&sd, &[3.0])), None);
    let pop = call(AggregateFunction::VarPop, DataType::Double);
    assert_eq!(single_double(&folded_doubles(&pop, &[3.0])), Some(0.0));
}

#[test]
fn first_and_last_values_go_by_event_time_then_value() {
    let first = call(AggregateFunction::FirstValue, DataType::BigInt);
    let last = call(AggregateFunction::LastValue, DataType::BigInt);
    let values = bigints(&[5, 3, 9, 4, 1]);
    let times = [20, 10, 30, 10, 30];
    let mut pairs = Pairs::default();
    for i in 0..5 {
        pairs.push(i, 0);
    }
    let interner = Interner::new();
    let mut got = Vec::new();
    for c in [&first, &last] {
        let whole = {
            let mut acc = Accumulator::new(c);
            acc.push_empty();
            acc.update(
                &pairs,
                Input {
                    arg: Some(&values),
                    times: &times,
                    interner: &interner,
                },
            );
            acc
        };
        got.push(whole.finish(&[0], &mut Interner::new()).column);
    }
    assert_eq!(got, vec![bigints(&[3]), bigints(&[9])]);
}

proptest! {
    /// Variances merged from any split equal the two-pass answer, for values spread
    /// little around a large mean (where a naive formula cancels to noise).
    #[test]
    fn variances_merge_to_the_two_pass_answer(
        values in prop::collection::vec(0u32..1000, 2..300),
        offset in prop_oneof![Just(0.0), Just(1.0e6), Just(123_456.789)],
        splits in prop::collection::vec(0usize..300, 0..4),
    ) {
        let values: Vec<f64> = values.iter().map(|&c| offset + f64::from(c) / 100.0).collect();
        for (func, population) in [(AggregateFunction::VarSamp, false), (AggregateFunction::VarPop, true)] {
            let c = call(func, DataType::Double);
            let cuts = cuts(&splits, values.len());
            let mut merged = Accumulator::new(&c);
            merged.push_empty();
            for w in cuts.windows(2) {
                merged.merge_slot(0, &folded_doubles(&c, &values[w[0]..w[1]]), 0);
            }
            let want = two_pass(&values, population);
            for acc in [&folded_doubles(&c, &values), &merged] {
                let got = single_double(acc).unwrap_or(f64::NAN);
                prop_assert!((got - want).abs() <= 1e-9 * want.max(1e-6), "{func:?}: {got} vs {want}");
            }
        }
    }
}

/// A group whose state moves whole to the worker owning its key (merged into an empty
/// slot) gives the same bits as where it was folded: a window's file must not depend
/// on the worker count.
#[test]
fn a_variance_merged_into_an_empty_slot_keeps_its_bits() {
    let values = [3.12, 250.47, 40.43];
    for func in [
        AggregateFunction::StddevSamp,
        AggregateFunction::StddevPop,
        AggregateFunction::VarSamp,
        AggregateFunction::VarPop,
    ] {
        let c = call(func, DataType::Double);
        let folded = folded_doubles(&c, &values);
        let mut moved = Accumulator::new(&c);
        moved.push_empty();
        moved.merge_slot(0, &folded, 0);
        let (a, b) = (single_double(&folded), single_double(&moved));
        assert_eq!(
            a.map(f64::to_bits),
            b.map(f64::to_bits),
            "{func:?}: {a:?} vs {b:?}"
        );
    }
}

/// Squares beyond the `f64` range (or below its normal numbers) make the variance NULL
/// and count it, as a `DOUBLE` sum that overflows does; they never come out as a zero.
#[test]
fn a_variance_whose_squares_overflow_is_null_and_counted() {
    let sd = call(AggregateFunction::StddevSamp, DataType::Double);
    for values in [
        [-1e300, 1e300],
        [1e160, 5.0],
        [3e-200, 1e-200],
        [1e-300, 0.0],
    ] {
        let (column, overflows) = finished(&folded_doubles(&sd, &values));
        assert_eq!(overflows, 1, "{values:?}");
        assert_eq!(column.validity, Some(vec![false]), "{values:?}");
    }
}
