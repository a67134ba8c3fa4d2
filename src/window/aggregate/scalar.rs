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

/// `Scalar` for a `Copy` type held in one column variant.
macro_rules! copy_scalar {
    ($($ty:ty => $($variant:ident)|+;)*) => {$(
        impl Scalar for $ty {
            type Ref<'a> = $ty;

            fn values<'a>(column: &'a Column, _: &'a Interner) -> Option<impl Fn(usize) -> $ty> {
                match &column.values {
                    $(ColumnValues::$variant(v))|+ => Some(|r: usize| v[r]),
                    _ => None,
                }
            }

            fn compare(x: $ty, kept: &Self) -> Option<Ordering> {
                x.partial_cmp(kept)
            }

            fn keep(value: $ty) -> Self {
                value
            }

            fn column(values: Vec<&Self>, _: &mut Interner) -> ColumnValues {
                // Integer scalars come back as BIGINT; `retype` restores TIMESTAMP.
                copy_scalar!(@first $($variant)|+)(values.into_iter().copied().collect())
            }
        }
    )*};
    (@first $first:ident $(| $rest:ident)*) => { ColumnValues::$first };
}

copy_scalar! {
    i64 => BigInt | Timestamp;
    f64 => Double;
    bool => Boolean;
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
