//! The value types aggregates keep as they are (`MIN`, `MAX`, `FIRST_VALUE`, ...): how
//! to read them from a column, compare them and write them back.

use std::cmp::Ordering;
use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::batch::{Column, ColumnValues, Interner};

/// A value kept whole in a slot. `Ref` is how a batch lends it, so text is compared
/// without a copy and only copied when it is kept.
pub trait Scalar: Clone + Debug + Default + PartialOrd + Serialize + DeserializeOwned {
    /// The value as a batch holds it.
    type Ref<'a>: Copy + PartialOrd;

    /// The batch's values of `column`, by row, when it holds this type.
    fn values<'a>(
        column: &'a Column,
        interner: &'a Interner,
    ) -> Option<impl Fn(usize) -> Self::Ref<'a>>;

    /// How a batch's value compares with a kept one.
    fn compare(x: Self::Ref<'_>, kept: &Self) -> Option<Ordering>;

    /// Keeps a lent value.
    fn keep(value: Self::Ref<'_>) -> Self;

    /// Kept values as a column (before NULLs are applied); text is interned.
    fn column(values: Vec<&Self>, interner: &mut Interner) -> ColumnValues;
}

impl Scalar for i64 {
    type Ref<'a> = i64;

    fn values<'a>(column: &'a Column, _: &'a Interner) -> Option<impl Fn(usize) -> i64> {
        match &column.values {
            ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => Some(|r: usize| v[r]),
            _ => None,
        }
    }

    fn compare(x: i64, kept: &Self) -> Option<Ordering> {
        x.partial_cmp(kept)
    }

    fn keep(value: i64) -> Self {
        value
    }

    fn column(values: Vec<&Self>, _: &mut Interner) -> ColumnValues {
        ColumnValues::BigInt(values.into_iter().copied().collect())
    }
}

impl Scalar for f64 {
    type Ref<'a> = f64;

    fn values<'a>(column: &'a Column, _: &'a Interner) -> Option<impl Fn(usize) -> f64> {
        match &column.values {
            ColumnValues::Double(v) => Some(|r: usize| v[r]),
            _ => None,
        }
    }

    fn compare(x: f64, kept: &Self) -> Option<Ordering> {
        x.partial_cmp(kept)
    }

    fn keep(value: f64) -> Self {
        value
    }

    fn column(values: Vec<&Self>, _: &mut Interner) -> ColumnValues {
        ColumnValues::Double(values.into_iter().copied().collect())
    }
}

impl Scalar for bool {
    type Ref<'a> = bool;

    fn values<'a>(column: &'a Column, _: &'a Interner) -> Option<impl Fn(usize) -> bool> {
        match &column.values {
            ColumnValues::Boolean(v) => Some(|r: usize| v[r]),
            _ => None,
        }
    }

    fn compare(x: bool, kept: &Self) -> Option<Ordering> {
        x.partial_cmp(kept)
    }

    fn keep(value: bool) -> Self {
        value
    }

    fn column(values: Vec<&Self>, _: &mut Interner) -> ColumnValues {
        ColumnValues::Boolean(values.into_iter().copied().collect())
    }
}

impl Scalar for String {
    type Ref<'a> = &'a str;

    fn values<'a>(column: &'a Column, interner: &'a Interner) -> Option<impl Fn(usize) -> &'a str> {
        match &column.values {
            ColumnValues::Text(ids) => Some(|r: usize| interner.get(ids[r])),
            _ => None,
        }
    }

    fn compare(x: &str, kept: &Self) -> Option<Ordering> {
        x.partial_cmp(kept.as_str())
    }

    fn keep(value: &str) -> Self {
        value.to_owned()
    }

    fn column(values: Vec<&Self>, interner: &mut Interner) -> ColumnValues {
        ColumnValues::Text(values.into_iter().map(|t| interner.intern(t)).collect())
    }
}
