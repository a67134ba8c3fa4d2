//! `APPROX_TOP_K(x, k)`: the `k` most frequent values and their counts, from a frequent
//! items sketch (Apache DataSketches, a map of 256 counters). A value's count is exact
//! while a window has at most 192 distinct values; beyond, counts are upper bounds off
//! by at most 3.5/256 of the window's readings (the sketch's `maximum_error`), and any
//! value more frequent than that is listed. Ties in count are listed by value.
//!
//! The result is a `LIST<STRUCT<value, count>>` column, built here directly: it is not a
//! scalar, so a query can select it but not compute with it.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, ListBuilder, StringBuilder, StructBuilder};
use arrow::datatypes::{DataType as ArrowType, Field, Fields};
use datasketches::frequencies::{ErrorType, FrequentItemValue, FrequentItemsSketch};
use serde::{Deserialize, Serialize};

use super::sketch_bytes::{self, SketchBytes};
use super::{Aggregate, Finished, Input, Pairs, for_valid_pairs, pick, pick_reset};
use crate::batch::{Column, ColumnValues, Interner};

/// Counters in each sketch (a power of two).
pub const MAX_MAP_SIZE: usize = 256;

/// Most values a query may ask for.
pub const MAX_K: usize = 100;

/// A value type the sketch counts.
pub trait TopKValue: FrequentItemValue + Clone + Ord + std::fmt::Debug {
    /// The Arrow type of the `value` field.
    fn arrow_type() -> ArrowType;
    /// Appends `value` to a builder of that type.
    fn append(builder: &mut StructBuilder, value: &Self);
}

impl TopKValue for String {
    fn arrow_type() -> ArrowType {
        ArrowType::Utf8
    }

    fn append(builder: &mut StructBuilder, value: &Self) {
        if let Some(b) = builder.field_builder::<StringBuilder>(0) {
            b.append_value(value);
        }
    }
}

impl TopKValue for i64 {
    fn arrow_type() -> ArrowType {
        ArrowType::Int64
    }

    fn append(builder: &mut StructBuilder, value: &Self) {
        if let Some(b) = builder.field_builder::<Int64Builder>(0) {
            b.append_value(*value);
        }
    }
}

/// The type of an `APPROX_TOP_K` column over values of `value`.
pub fn result_type(value: ArrowType) -> ArrowType {
    ArrowType::List(Arc::new(Field::new(
        "item",
        ArrowType::Struct(fields(value)),
        true,
    )))
}

fn fields(value: ArrowType) -> Fields {
    Fields::from(vec![
        Field::new("value", value, false),
        Field::new("count", ArrowType::Int64, false),
    ])
}

impl<V: TopKValue> SketchBytes for FrequentItemsSketch<V> {
    fn to_bytes(&self) -> Vec<u8> {
        self.serialize()
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        FrequentItemsSketch::deserialize(bytes).map_err(|e| format!("frequent items: {e}"))
    }
}

fn empty<V: TopKValue>() -> FrequentItemsSketch<V> {
    FrequentItemsSketch::new(MAX_MAP_SIZE)
        .unwrap_or_else(|e| unreachable!("frequent items map size: {e}"))
}

/// The `k` most frequent values of a sketch, by count then value.
pub fn top<V: TopKValue>(sketch: &FrequentItemsSketch<V>, k: usize) -> Vec<(V, u64)> {
    let mut rows: Vec<(V, u64)> = sketch
        .frequent_items_with_threshold(ErrorType::NoFalseNegatives, 0)
        .into_iter()
        .map(|r| (r.item().clone(), r.estimate()))
        .collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rows.truncate(k);
    rows
}

/// One frequent-items sketch per slot, made on the first value.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(bound = "")]
pub struct ApproxTopK<V: TopKValue> {
    /// Values listed.
    k: usize,
    #[serde(with = "sketch_bytes")]
    sketches: Vec<Option<FrequentItemsSketch<V>>>,
}

impl<V: TopKValue> PartialEq for ApproxTopK<V> {
    fn eq(&self, other: &Self) -> bool {
        self.k == other.k
            && self.sketches.len() == other.sketches.len()
            && self.sketches.iter().zip(&other.sketches).all(|(a, b)| {
                a.as_ref().map(SketchBytes::to_bytes) == b.as_ref().map(SketchBytes::to_bytes)
            })
    }
}

impl<V: TopKValue> ApproxTopK<V> {
    /// The `k` most frequent values.
    pub fn new(k: usize) -> Self {
        ApproxTopK {
            k,
            sketches: Vec::new(),
        }
    }

    fn slot(&mut self, slot: usize) -> &mut FrequentItemsSketch<V> {
        self.sketches[slot].get_or_insert_with(empty)
    }

    /// The result column of `slots`.
    fn list(&self, slots: &[usize]) -> ArrayRef {
        let values = StructBuilder::from_fields(fields(V::arrow_type()), 0);
        let mut list = ListBuilder::new(values).with_field(Arc::new(Field::new(
            "item",
            ArrowType::Struct(fields(V::arrow_type())),
            true,
        )));
        for &s in slots {
            if let Some(sketch) = &self.sketches[s] {
                for (value, count) in top(sketch, self.k) {
                    let entry = list.values();
                    V::append(entry, &value);
                    if let Some(b) = entry.field_builder::<Int64Builder>(1) {
                        b.append_value(i64::try_from(count).unwrap_or(i64::MAX));
                    }
                    entry.append(true);
                }
            }
            list.append(true);
        }
        Arc::new(list.finish())
    }
}

/// Values of `column` as the sketch's type.
trait Feed: TopKValue {
    fn feed(state: &mut ApproxTopK<Self>, pairs: &Pairs, column: &Column, interner: &Interner);
}

impl Feed for String {
    fn feed(state: &mut ApproxTopK<Self>, pairs: &Pairs, column: &Column, interner: &Interner) {
        if let ColumnValues::Text(ids) = &column.values {
            for_valid_pairs!(pairs, column, |row, slot| {
                state.slot(slot).update(interner.get(ids[row]).to_owned());
            });
        }
    }
}

impl Feed for i64 {
    fn feed(state: &mut ApproxTopK<Self>, pairs: &Pairs, column: &Column, _: &Interner) {
        if let ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) = &column.values {
            for_valid_pairs!(pairs, column, |row, slot| {
                state.slot(slot).update(v[row])
            });
        }
    }
}

#[allow(private_bounds)]
impl<V: Feed> Aggregate for ApproxTopK<V> {
    fn empty_like(&self) -> Self {
        ApproxTopK::new(self.k)
    }

    fn len(&self) -> usize {
        self.sketches.len()
    }

    fn bytes_per_slot(&self) -> usize {
        // The slot itself; a sketch grows with distinct values, up to a few KiB.
        size_of::<Option<FrequentItemsSketch<V>>>()
    }

    fn heap_bytes(&self) -> usize {
        self.sketches
            .iter()
            .flatten()
            .map(FrequentItemsSketch::estimated_size)
            .sum()
    }

    fn push_empty(&mut self) {
        self.sketches.push(None);
    }

    fn reset(&mut self, slot: usize) {
        self.sketches[slot] = None;
    }

    fn update(&mut self, pairs: &Pairs, input: Input<'_>) {
        if let Some(column) = input.arg {
            V::feed(self, pairs, column, input.interner);
        }
    }

    fn gather(&self, slots: &[u32]) -> Self {
        ApproxTopK {
            k: self.k,
            sketches: pick(&self.sketches, slots),
        }
    }

    fn take(&mut self, slots: &[u32]) -> Self {
        ApproxTopK {
            k: self.k,
            sketches: pick_reset(&mut self.sketches, slots),
        }
    }

    fn merge_slot(&mut self, to: usize, other: &Self, from: usize) {
        let Some(theirs) = &other.sketches[from] else {
            return;
        };
        match &mut self.sketches[to] {
            Some(ours) => ours.merge(theirs),
            slot @ None => *slot = Some(theirs.clone()),
        }
    }

    fn finish(&self, slots: &[usize], _interner: &mut Interner) -> Finished {
        // Never read: the planner keeps this aggregate out of expressions, and its
        // column comes from `result_column`.
        Finished::exact(Column {
            values: ColumnValues::BigInt(vec![0; slots.len()]),
            validity: None,
        })
    }

    fn sketches(&self, slots: &[usize]) -> Option<Vec<Option<Vec<u8>>>> {
        Some(sketch_bytes::of_slots(&self.sketches, slots))
    }

    fn result_column(&self, slots: &[usize]) -> Option<ArrayRef> {
        Some(self.list(slots))
    }
}
