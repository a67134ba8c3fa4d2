//! Group keys: dense per-worker ids for the hot path, and key values for what crosses
//! workers.
//!
//! Grouping by one text column is the common case; its key id is the interned text id,
//! so it costs nothing beyond decoding. Other key shapes go through a tuple table.

use std::cmp::Ordering;
use std::hash::{BuildHasher, Hash, Hasher};

use hashbrown::HashTable;
use serde::{Deserialize, Serialize};

use crate::batch::{Batch, Column, ColumnValues, Interner};
use crate::query::GroupKey;
use crate::types::DataType;

/// A seeded hasher that is the same in every process, so every worker agrees on which
/// worker owns a key.
pub fn owner_hasher() -> foldhash::fast::FixedState {
    foldhash::fast::FixedState::with_seed(0x0edf_1e0f)
}

/// One part of a key tuple, as the tuple table stores it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Part {
    Null,
    Int(i64),
    Text(u32),
    Bool(bool),
    Float(u64),
}

fn part(column: &Column, row: usize) -> Part {
    if !column.is_valid(row) {
        return Part::Null;
    }
    match &column.values {
        ColumnValues::Text(v) => Part::Text(v[row]),
        ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => Part::Int(v[row]),
        ColumnValues::Double(v) => Part::Float(if v[row] == 0.0 { 0 } else { v[row].to_bits() }),
        ColumnValues::Boolean(v) => Part::Bool(v[row]),
    }
}

/// Maps rows to dense key ids and ids back to key values.
#[derive(Debug)]
pub struct KeyMapper(Mapper);

#[derive(Debug)]
enum Mapper {
    /// No `GROUP BY` columns besides the window: one key, id 0.
    Global,
    /// One `TEXT` column: id = interned id + 1, with 0 for NULL.
    Text {
        /// Source column.
        column: usize,
    },
    /// Anything else: a table of tuples.
    Tuple {
        /// Source columns.
        columns: Vec<usize>,
        /// Tuples by id.
        tuples: Vec<Box<[Part]>>,
        /// Ids by tuple.
        table: HashTable<u32>,
        /// Scratch tuple.
        scratch: Vec<Part>,
    },
}

impl KeyMapper {
    /// A mapper for the plan's keys.
    pub fn new(keys: &[GroupKey]) -> Self {
        KeyMapper(match keys {
            [] => Mapper::Global,
            [k] if k.ty == DataType::Text => Mapper::Text { column: k.column },
            _ => Mapper::Tuple {
                columns: keys.iter().map(|k| k.column).collect(),
                tuples: Vec::new(),
                table: HashTable::new(),
                scratch: Vec::new(),
            },
        })
    }

    /// Fills `ids` with the key id of every row of `batch`.
    pub fn key_ids(&mut self, batch: &Batch, ids: &mut Vec<u32>) {
        ids.clear();
        match &mut self.0 {
            Mapper::Global => ids.resize(batch.len, 0),
            Mapper::Text { column } => {
                let column = &batch.columns[*column];
                if let ColumnValues::Text(v) = &column.values {
                    match &column.validity {
                        None => ids.extend(v.iter().map(|&id| id + 1)),
                        Some(valid) => ids.extend(
                            v.iter()
                                .zip(valid)
                                .map(|(&id, &ok)| if ok { id + 1 } else { 0 }),
                        ),
                    }
                }
            }
            Mapper::Tuple {
                columns,
                tuples,
                table,
                scratch,
            } => {
                let hasher = foldhash::fast::FixedState::default();
                for row in 0..batch.len {
                    scratch.clear();
                    scratch.extend(columns.iter().map(|&c| part(&batch.columns[c], row)));
                    let hash = hasher.hash_one(&scratch[..]);
                    let id = match table.find(hash, |&id| *tuples[id as usize] == scratch[..]) {
                        Some(&id) => id,
                        None => {
                            let id = tuples.len() as u32;
                            tuples.push(scratch.clone().into_boxed_slice());
                            table.insert_unique(hash, id, |&other| {
                                hasher.hash_one(&tuples[other as usize][..])
                            });
                            id
                        }
                    };
                    ids.push(id);
                }
            }
        }
    }

    /// Appends the values of key `id` to `rows`.
    pub fn push_values(&self, id: u32, interner: &Interner, rows: &mut KeyRows) {
        match &self.0 {
            Mapper::Global => {}
            Mapper::Text { .. } => {
                if let Some(KeyColumn::Text(v)) = rows.columns.first_mut() {
                    v.push(if id == 0 {
                        None
                    } else {
                        Some(interner.get_bytes(id - 1))
                    });
                }
            }
            Mapper::Tuple { tuples, .. } => {
                for (column, part) in rows.columns.iter_mut().zip(tuples[id as usize].iter()) {
                    column.push_part(*part, interner);
                }
            }
        }
        rows.len += 1;
    }
}

/// Key values of many rows, by column: the keys of a partial window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyRows {
    /// One column per group key.
    pub columns: Vec<KeyColumn>,
    /// Number of rows.
    pub len: usize,
}

/// Text values back to back, as Arrow lays them out: no allocation per value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TextColumn {
    /// `offsets[i]..offsets[i + 1]` is value `i` in `bytes`.
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    valid: Vec<bool>,
}

impl TextColumn {
    fn push(&mut self, value: Option<&[u8]>) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        if let Some(v) = value {
            self.bytes.extend_from_slice(v);
        }
        self.offsets.push(self.bytes.len() as u32);
        self.valid.push(value.is_some());
    }

    /// Value `i`, `None` for NULL.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.valid[i].then(|| &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize])
    }

    /// The first sixteen bytes of value `i`, big-endian, zero-padded (0 for NULL): orders
    /// like the values themselves except between values that tie on those bytes.
    fn prefix(&self, i: usize) -> u128 {
        let Some(v) = self.get(i) else { return 0 };
        let mut buf = [0u8; 16];
        let n = v.len().min(16);
        buf[..n].copy_from_slice(&v[..n]);
        u128::from_be_bytes(buf)
    }
}

/// The values of one key column.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum KeyColumn {
    /// `TEXT`.
    Text(TextColumn),
    /// `BIGINT` and `TIMESTAMP`.
    Int(Vec<Option<i64>>),
    /// `DOUBLE`.
    Double(Vec<Option<f64>>),
    /// `BOOLEAN`.
    Bool(Vec<Option<bool>>),
}

impl KeyColumn {
    fn push_part(&mut self, part: Part, interner: &Interner) {
        match (self, part) {
            (KeyColumn::Text(v), Part::Text(id)) => v.push(Some(interner.get_bytes(id))),
            (KeyColumn::Int(v), Part::Int(i)) => v.push(Some(i)),
            (KeyColumn::Double(v), Part::Float(bits)) => v.push(Some(f64::from_bits(bits))),
            (KeyColumn::Bool(v), Part::Bool(b)) => v.push(Some(b)),
            (KeyColumn::Text(v), _) => v.push(None),
            (KeyColumn::Int(v), _) => v.push(None),
            (KeyColumn::Double(v), _) => v.push(None),
            (KeyColumn::Bool(v), _) => v.push(None),
        }
    }

    fn hash_row<H: Hasher>(&self, row: usize, state: &mut H) {
        match self {
            KeyColumn::Text(v) => v.get(row).hash(state),
            KeyColumn::Int(v) => v[row].hash(state),
            KeyColumn::Double(v) => v[row].map(f64::to_bits).hash(state),
            KeyColumn::Bool(v) => v[row].hash(state),
        }
    }

    fn cmp_rows(&self, a: usize, other: &KeyColumn, b: usize) -> Ordering {
        match (self, other) {
            (KeyColumn::Text(x), KeyColumn::Text(y)) => x.get(a).cmp(&y.get(b)),
            (KeyColumn::Int(x), KeyColumn::Int(y)) => x[a].cmp(&y[b]),
            (KeyColumn::Double(x), KeyColumn::Double(y)) => match (x[a], y[b]) {
                (Some(p), Some(q)) => p.total_cmp(&q),
                (p, q) => p.is_some().cmp(&q.is_some()),
            },
            (KeyColumn::Bool(x), KeyColumn::Bool(y)) => x[a].cmp(&y[b]),
            _ => Ordering::Equal,
        }
    }

    /// Appends row `row` of `other` (same kind).
    fn push_from(&mut self, other: &KeyColumn, row: usize) {
        match (self, other) {
            (KeyColumn::Text(v), KeyColumn::Text(o)) => v.push(o.get(row)),
            (KeyColumn::Int(v), KeyColumn::Int(o)) => v.push(o[row]),
            (KeyColumn::Double(v), KeyColumn::Double(o)) => v.push(o[row]),
            (KeyColumn::Bool(v), KeyColumn::Bool(o)) => v.push(o[row]),
            _ => {}
        }
    }

    /// The column as an Arrow array of type `ty`, rows in `order`.
    pub fn to_arrow(&self, order: &[usize], ty: DataType) -> arrow::array::ArrayRef {
        use arrow::array::{
            BooleanArray, Float64Array, Int64Array, StringBuilder, TimestampMicrosecondArray,
        };
        use std::sync::Arc;
        match self {
            KeyColumn::Text(v) => {
                let mut b = StringBuilder::with_capacity(order.len(), v.bytes.len());
                for &r in order {
                    // Only UTF-8 is ever interned, so every value converts.
                    b.append_option(v.get(r).map(|t| std::str::from_utf8(t).unwrap_or_default()));
                }
                Arc::new(b.finish())
            }
            KeyColumn::Int(v) if ty == DataType::Timestamp => Arc::new(
                TimestampMicrosecondArray::from(order.iter().map(|&r| v[r]).collect::<Vec<_>>())
                    .with_timezone("UTC"),
            ),
            KeyColumn::Int(v) => Arc::new(Int64Array::from(
                order.iter().map(|&r| v[r]).collect::<Vec<_>>(),
            )),
            KeyColumn::Double(v) => Arc::new(Float64Array::from(
                order.iter().map(|&r| v[r]).collect::<Vec<_>>(),
            )),
            KeyColumn::Bool(v) => Arc::new(BooleanArray::from(
                order.iter().map(|&r| v[r]).collect::<Vec<_>>(),
            )),
        }
    }

    /// The column as a batch column of type `ty`, interning text into `interner`.
    pub fn to_column(&self, order: &[usize], ty: DataType, interner: &mut Interner) -> Column {
        fn split<T: Copy + Default>(
            v: &[Option<T>],
            order: &[usize],
        ) -> (Vec<T>, Option<Vec<bool>>) {
            let values = order.iter().map(|&r| v[r].unwrap_or_default()).collect();
            let validity: Vec<bool> = order.iter().map(|&r| v[r].is_some()).collect();
            let any_null = validity.iter().any(|ok| !ok);
            (values, any_null.then_some(validity))
        }
        match self {
            KeyColumn::Text(v) => {
                let values = order
                    .iter()
                    .map(|&r| v.get(r).map_or(0, |t| interner.intern_utf8(t)))
                    .collect();
                let validity: Vec<bool> = order.iter().map(|&r| v.valid[r]).collect();
                let any_null = validity.iter().any(|ok| !ok);
                Column {
                    values: ColumnValues::Text(values),
                    validity: any_null.then_some(validity),
                }
            }
            KeyColumn::Int(v) => {
                let (values, validity) = split(v, order);
                let values = if ty == DataType::Timestamp {
                    ColumnValues::Timestamp(values)
                } else {
                    ColumnValues::BigInt(values)
                };
                Column { values, validity }
            }
            KeyColumn::Double(v) => {
                let (values, validity) = split(v, order);
                Column {
                    values: ColumnValues::Double(values),
                    validity,
                }
            }
            KeyColumn::Bool(v) => {
                let (values, validity) = split(v, order);
                Column {
                    values: ColumnValues::Boolean(values),
                    validity,
                }
            }
        }
    }
}

impl KeyRows {
    /// Empty rows for the plan's keys.
    pub fn new(keys: &[GroupKey]) -> Self {
        let columns = keys
            .iter()
            .map(|k| match k.ty {
                DataType::Text => KeyColumn::Text(TextColumn::default()),
                DataType::BigInt | DataType::Timestamp => KeyColumn::Int(Vec::new()),
                DataType::Double => KeyColumn::Double(Vec::new()),
                DataType::Boolean => KeyColumn::Bool(Vec::new()),
            })
            .collect();
        KeyRows { columns, len: 0 }
    }

    /// Rows with the same columns and no values.
    pub fn empty_like(&self) -> Self {
        let columns = self
            .columns
            .iter()
            .map(|c| match c {
                KeyColumn::Text(_) => KeyColumn::Text(TextColumn::default()),
                KeyColumn::Int(_) => KeyColumn::Int(Vec::new()),
                KeyColumn::Double(_) => KeyColumn::Double(Vec::new()),
                KeyColumn::Bool(_) => KeyColumn::Bool(Vec::new()),
            })
            .collect();
        KeyRows { columns, len: 0 }
    }

    /// A hash of row `row`'s values, the same in every worker and process.
    pub fn hash_row(&self, row: usize) -> u64 {
        let mut h = owner_hasher().build_hasher();
        for c in &self.columns {
            c.hash_row(row, &mut h);
        }
        h.finish()
    }

    /// Whether row `a` of `self` equals row `b` of `other`.
    pub fn row_eq(&self, a: usize, other: &KeyRows, b: usize) -> bool {
        self.cmp_rows(a, other, b) == Ordering::Equal
    }

    /// Orders row `a` of `self` against row `b` of `other` (NULL first).
    pub fn cmp_rows(&self, a: usize, other: &KeyRows, b: usize) -> Ordering {
        for (x, y) in self.columns.iter().zip(&other.columns) {
            match x.cmp_rows(a, y, b) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        Ordering::Equal
    }

    /// Appends row `row` of `other` to `self`.
    pub fn push_from(&mut self, other: &KeyRows, row: usize) {
        for (to, from) in self.columns.iter_mut().zip(&other.columns) {
            to.push_from(from, row);
        }
        self.len += 1;
    }

    /// Row indexes in key order (NULL first).
    pub fn sorted_order(&self) -> Vec<usize> {
        let (mut order, heads): (Vec<usize>, Vec<u128>) = match self.columns.first() {
            // Leading text: the first twelve bytes and the row index packed in one u128 sort
            // as plain integers; only runs that tie on those twelve bytes need a closer look.
            Some(KeyColumn::Text(text)) if self.len <= u32::MAX as usize => {
                let mut packed: Vec<u128> = (0..self.len)
                    .map(|r| (text.prefix(r) >> 32 << 32) | r as u128)
                    .collect();
                packed.sort_unstable();
                packed.iter().map(|&p| (p as u32 as usize, p >> 32)).unzip()
            }
            _ => ((0..self.len).collect(), vec![0; self.len]),
        };
        let mut start = 0;
        while start < order.len() {
            let mut end = start + 1;
            while end < order.len() && heads[end] == heads[start] {
                end += 1;
            }
            if end - start > 1 {
                order[start..end].sort_unstable_by(|&a, &b| self.cmp_rows(a, self, b));
            }
            start = end;
        }
        order
    }
}

/// Finds rows of a [`KeyRows`] by value: the merge side of two-phase aggregation.
#[derive(Debug, Default)]
pub struct KeyIndex {
    table: HashTable<usize>,
}

impl KeyIndex {
    /// The row of `rows` equal to row `row` of `probe`, appending it to `rows` when new;
    /// returns the row and whether it is new.
    pub fn find_or_insert(
        &mut self,
        rows: &mut KeyRows,
        probe: &KeyRows,
        row: usize,
    ) -> (usize, bool) {
        let hash = probe.hash_row(row);
        if let Some(&found) = self.table.find(hash, |&r| rows.row_eq(r, probe, row)) {
            return (found, false);
        }
        let new = rows.len;
        rows.push_from(probe, row);
        let rows_ref: &KeyRows = rows;
        self.table
            .insert_unique(hash, new, |&r| rows_ref.hash_row(r));
        (new, true)
    }
}
