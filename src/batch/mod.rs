//! Columnar batches of decoded readings: the unit that flows through a worker.
//!
//! A [`Batch`] holds one chunk of input as typed columns in the order of the source
//! schema. Text is stored as interned ids ([`Interner`]), nulls as an optional validity
//! vector that only exists once a column has seen a null. Batches never cross workers, so
//! they need no serialization; what crosses workers is aggregated state.

pub mod arrow;
mod interner;

pub use interner::{Interner, bytes_eq};

use crate::types::{DataType, Value};

/// The values of one column.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnValues {
    /// Interned text ids.
    Text(Vec<u32>),
    /// `BIGINT` values.
    BigInt(Vec<i64>),
    /// `DOUBLE` values.
    Double(Vec<f64>),
    /// `BOOLEAN` values.
    Boolean(Vec<bool>),
    /// `TIMESTAMP` values in microseconds.
    Timestamp(Vec<i64>),
}

impl ColumnValues {
    /// An empty column of a type.
    pub fn with_capacity(ty: DataType, capacity: usize) -> Self {
        match ty {
            DataType::Text => ColumnValues::Text(Vec::with_capacity(capacity)),
            DataType::BigInt => ColumnValues::BigInt(Vec::with_capacity(capacity)),
            DataType::Double => ColumnValues::Double(Vec::with_capacity(capacity)),
            DataType::Boolean => ColumnValues::Boolean(Vec::with_capacity(capacity)),
            DataType::Timestamp => ColumnValues::Timestamp(Vec::with_capacity(capacity)),
        }
    }

    /// The number of values.
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Text(v) => v.len(),
            ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => v.len(),
            ColumnValues::Double(v) => v.len(),
            ColumnValues::Boolean(v) => v.len(),
        }
    }

    /// Whether the column is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn truncate(&mut self, len: usize) {
        match self {
            ColumnValues::Text(v) => v.truncate(len),
            ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => v.truncate(len),
            ColumnValues::Double(v) => v.truncate(len),
            ColumnValues::Boolean(v) => v.truncate(len),
        }
    }

    fn push_default(&mut self) {
        match self {
            ColumnValues::Text(v) => v.push(0),
            ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => v.push(0),
            ColumnValues::Double(v) => v.push(0.0),
            ColumnValues::Boolean(v) => v.push(false),
        }
    }
}

/// One typed column with optional nulls.
#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    /// The values; a null slot holds a default value.
    pub values: ColumnValues,
    /// `Some(v)` once the column has seen a null: `v[i]` is whether row `i` is valid.
    pub validity: Option<Vec<bool>>,
}

impl Column {
    /// An empty column.
    pub fn with_capacity(ty: DataType, capacity: usize) -> Self {
        Column {
            values: ColumnValues::with_capacity(ty, capacity),
            validity: None,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Whether row `i` holds a value.
    #[inline]
    pub fn is_valid(&self, i: usize) -> bool {
        self.validity.as_ref().is_none_or(|v| v[i])
    }

    /// Appends a null.
    pub fn push_null(&mut self) {
        let len = self.values.len();
        self.validity
            .get_or_insert_with(|| vec![true; len])
            .push(false);
        self.values.push_default();
    }

    /// Marks the last pushed value valid if the column tracks validity.
    #[inline]
    pub fn mark_pushed(&mut self) {
        if let Some(v) = &mut self.validity {
            v.push(true);
        }
    }

    /// Drops rows from `len` on: used to undo a partly decoded bad line.
    pub fn truncate(&mut self, len: usize) {
        self.values.truncate(len);
        if let Some(v) = &mut self.validity {
            v.truncate(len);
        }
    }

    /// Row `i` as a [`Value`], resolving text through `interner`.
    pub fn value(&self, i: usize, interner: &Interner) -> Value {
        if !self.is_valid(i) {
            return Value::Null;
        }
        match &self.values {
            ColumnValues::Text(v) => Value::Text(interner.get(v[i]).to_owned()),
            ColumnValues::BigInt(v) => Value::BigInt(v[i]),
            ColumnValues::Double(v) => Value::Double(v[i]),
            ColumnValues::Boolean(v) => Value::Boolean(v[i]),
            ColumnValues::Timestamp(v) => Value::Timestamp(v[i]),
        }
    }
}

/// Decoded readings of one chunk, one column per declared source column.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Columns in source-schema order.
    pub columns: Vec<Column>,
    /// Number of rows.
    pub len: usize,
}

impl Batch {
    /// An empty batch for a list of column types.
    pub fn new(types: &[DataType], capacity: usize) -> Self {
        Batch {
            columns: types
                .iter()
                .map(|&t| Column::with_capacity(t, capacity))
                .collect(),
            len: 0,
        }
    }

    /// Undoes the partly pushed row at index `self.len`, if any column has it.
    pub fn rollback_row(&mut self) {
        let len = self.len;
        for c in &mut self.columns {
            c.truncate(len);
        }
    }

    /// Keeps the rows whose `keep` entry is true, in order.
    pub fn retain(&mut self, keep: &[bool]) {
        fn filter<T: Copy>(v: &mut Vec<T>, keep: &[bool]) {
            let mut i = 0;
            v.retain(|_| {
                i += 1;
                keep.get(i - 1).copied().unwrap_or(true)
            });
        }
        for c in &mut self.columns {
            match &mut c.values {
                ColumnValues::Text(v) => filter(v, keep),
                ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => filter(v, keep),
                ColumnValues::Double(v) => filter(v, keep),
                ColumnValues::Boolean(v) => filter(v, keep),
            }
            if let Some(v) = &mut c.validity {
                filter(v, keep);
            }
        }
        self.len = keep.iter().filter(|k| **k).count() + self.len.saturating_sub(keep.len());
    }

    /// Timestamps of a column known to be the (non-null) event-time column.
    pub fn timestamps(&self, column: usize) -> &[i64] {
        match &self.columns[column].values {
            ColumnValues::Timestamp(v) => v,
            _ => &[],
        }
    }
}
