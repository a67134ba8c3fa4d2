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
        /// The interned texts in sorted order, for closing windows in key order.
        order: TextOrder,
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
            [k] if k.ty == DataType::Text => Mapper::Text {
                column: k.column,
                order: TextOrder::default(),
            },
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
            Mapper::Text { column, .. } => {
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

    /// The positions of `keys` (ids from this mapper) in ascending key order, for a
    /// text key: by rank once the set of texts has settled, otherwise by value. `None`
    /// means the caller sorts the key values itself.
    pub fn sorted_positions(&mut self, keys: &[u32], interner: &Interner) -> Option<Vec<u32>> {
        let Mapper::Text { order, .. } = &mut self.0 else {
            return None;
        };
        if keys.len() > u32::MAX as usize {
            return None;
        }
        if !order.refresh(interner, keys.len()) {
            // Too many new texts to rank: this window's are sorted by value here, which
            // spares the key merge sorting the window's rows afterwards, a second copy of
            // every key and aggregate slot. NULL (id 0) first, as `KeyRows` orders it.
            let text = |p: usize| keys[p].checked_sub(1).map(|id| interner.get_bytes(id));
            let by_value = sort_by_head(
                keys.len(),
                |p| text(p).map_or(0, head),
                |a, b| text(a).cmp(&text(b)),
            );
            return Some(by_value.into_iter().map(|p| p as u32).collect());
        }
        // NULL (id 0) first, then texts by rank.
        let mut packed: Vec<u64> = keys
            .iter()
            .enumerate()
            .map(|(pos, &id)| {
                let rank = if id == 0 {
                    0
                } else {
                    u64::from(order.rank[id as usize - 1]) + 1
                };
                rank << 32 | pos as u64
            })
            .collect();
        radsort::sort_by_key(&mut packed, |p| p >> 32);
        Some(packed.iter().map(|&p| p as u32).collect())
    }

    /// Heap bytes of the mapper's own structures.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Mapper::Text { order, .. } => (order.sorted.capacity() + order.rank.capacity()) * 4,
            _ => 0,
        }
    }

    /// Starts fetching what [`KeyMapper::push_values`] reads for keys a few rows ahead:
    /// where the text of `far` ends, and the text of `near` (whose end `far` fetched
    /// earlier). A window of a million keys reads their texts in key order, all over the
    /// interner's megabytes.
    #[inline]
    pub fn prefetch_values(&self, near: Option<u32>, far: Option<u32>, interner: &Interner) {
        if let Mapper::Text { .. } = &self.0 {
            if let Some(id) = far.and_then(|id| id.checked_sub(1)) {
                interner.prefetch_end(id);
            }
            if let Some(id) = near.and_then(|id| id.checked_sub(1)) {
                interner.prefetch_text(id);
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

/// Interned texts in sorted order, kept across windows.
///
/// Devices report window after window, so once the set of keys settles, ordering a
/// closing window is a radix sort of small integer ranks instead of a sort of strings.
/// While many keys are new (a growing fleet, a million devices each seen a few times)
/// keeping ranks would cost more than it saves, and windows are sorted by value instead.
#[derive(Debug, Default)]
struct TextOrder {
    /// Interned ids `0..rank.len()` sorted by text.
    sorted: Vec<u32>,
    /// `rank[id]`: the position of id `id` in `sorted`.
    rank: Vec<u32>,
    /// Interner size at the previous call.
    seen: usize,
}

impl TextOrder {
    /// Ranks every interned text if few arrived since the previous call (compared with
    /// `window_keys`, the size of the window being closed); returns whether all are ranked.
    fn refresh(&mut self, interner: &Interner, window_keys: usize) -> bool {
        let n = interner.len();
        let grown = n.saturating_sub(self.seen);
        self.seen = n;
        let ranked = self.rank.len();
        if ranked == n {
            return true;
        }
        if grown.saturating_mul(4) > window_keys || n > u32::MAX as usize {
            return false;
        }
        let text = |id: u32| interner.get_bytes(id);
        let new = sort_by_text(ranked as u32..n as u32, interner);
        // Splice the new ids in, searching from where the previous one went: old ids are
        // copied in runs, and only the few around each new id are compared.
        let mut merged = Vec::with_capacity(n);
        let mut from = 0;
        for &id in &new {
            let at = gallop(&self.sorted, from, |old| text(old) < text(id));
            merged.extend_from_slice(&self.sorted[from..at]);
            merged.push(id);
            from = at;
        }
        merged.extend_from_slice(&self.sorted[from..]);
        self.rank.resize(n, 0);
        for (r, &id) in merged.iter().enumerate() {
            self.rank[id as usize] = r as u32;
        }
        self.sorted = merged;
        true
    }
}

/// The first position at or after `from` of `sorted` whose entry is not `below`, for a
/// `below` that holds for a prefix of `sorted`. Probes the 1st, 2nd, 4th, 8th, ... entry
/// from `from` on, then searches the last step: the ids a window adds, in their own
/// order, each land a short way after the previous one, and a comparison reads two
/// texts from anywhere in the interner, so a search from the start of what is left (20
/// comparisons over a million keys) costs over twice as many misses when one key in ten
/// is new.
fn gallop(sorted: &[u32], from: usize, below: impl Fn(u32) -> bool) -> usize {
    let rest = &sorted[from..];
    let (mut lo, mut step) = (0, 1);
    while step <= rest.len() && below(rest[step - 1]) {
        lo = step;
        step *= 2;
    }
    from + lo + rest[lo..step.min(rest.len())].partition_point(|&old| below(old))
}

/// The first twelve bytes of `text`, big-endian and zero-padded, above 32 free bits:
/// orders like the texts except between texts that tie on those bytes.
fn head(text: &[u8]) -> u128 {
    let mut buf = [0u8; 16];
    let n = text.len().min(12);
    buf[..n].copy_from_slice(&text[..n]);
    u128::from_be_bytes(buf)
}

/// Indexes `0..len` in the order of `cmp`: a radix sort on each index's `head` (see
/// [`head`]), which passes only over the bytes that differ between heads (ids like
/// `dev-000123` share most of theirs), then `cmp` within each run that ties on its head.
fn sort_by_head(
    len: usize,
    head_of: impl Fn(usize) -> u128,
    cmp: impl Fn(usize, usize) -> Ordering,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if len > u32::MAX as usize {
        order.sort_unstable_by(|&a, &b| cmp(a, b));
        return order;
    }
    let mut packed: Vec<u128> = (0..len).map(|i| head_of(i) | i as u128).collect();
    radsort::sort_by_key(&mut packed, |p| p >> 32);
    let mut start = 0;
    while start < len {
        let mut end = start + 1;
        while end < len && packed[end] >> 32 == packed[start] >> 32 {
            end += 1;
        }
        for (k, p) in packed[start..end].iter().enumerate() {
            order[start + k] = *p as u32 as usize;
        }
        if end - start > 1 {
            order[start..end].sort_unstable_by(|&a, &b| cmp(a, b));
        }
        start = end;
    }
    order
}

/// Interned ids `ids` sorted by their text.
fn sort_by_text(ids: std::ops::Range<u32>, interner: &Interner) -> Vec<u32> {
    let text = |i: usize| interner.get_bytes(ids.start + i as u32);
    sort_by_head(ids.len(), |i| head(text(i)), |a, b| text(a).cmp(text(b)))
        .into_iter()
        .map(|i| ids.start + i as u32)
        .collect()
}

/// Key values of many rows, by column: the keys of a partial window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyRows {
    /// One column per group key.
    pub columns: Vec<KeyColumn>,
    /// Number of rows.
    pub len: usize,
    /// Whether the rows are known to be in ascending key order.
    pub sorted: bool,
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
    fn heap_bytes(&self) -> usize {
        self.offsets.capacity() * 4 + self.bytes.capacity() + self.valid.capacity()
    }

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

    /// Values in `order` as an Arrow array, built from the bytes directly: one UTF-8
    /// check over the whole buffer instead of one per value.
    fn to_arrow(&self, order: &[usize]) -> arrow::array::StringArray {
        use arrow::array::StringArray;
        use arrow::buffer::{NullBuffer, OffsetBuffer};
        let mut bytes = Vec::with_capacity(self.bytes.len());
        let mut offsets = Vec::with_capacity(order.len() + 1);
        offsets.push(0i32);
        for &r in order {
            if let Some(v) = self.get(r) {
                bytes.extend_from_slice(v);
            }
            offsets.push(bytes.len() as i32);
        }
        let nulls = order
            .iter()
            .any(|&r| !self.valid[r])
            .then(|| NullBuffer::from_iter(order.iter().map(|&r| self.valid[r])));
        let offsets = OffsetBuffer::new(offsets.into());
        // Only UTF-8 is ever interned, and a window holds far less than 2 GiB of keys, so
        // this cannot fail; the builder path stays as the fallback all the same.
        StringArray::try_new(offsets, bytes.into(), nulls).unwrap_or_else(|_| {
            order
                .iter()
                .map(|&r| self.get(r).and_then(|t| std::str::from_utf8(t).ok()))
                .collect()
        })
    }
}

/// One key value, borrowed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeyValue<'a> {
    /// `TEXT`.
    Text(&'a [u8]),
    /// `BIGINT` and `TIMESTAMP`.
    Int(i64),
    /// `DOUBLE`.
    Double(f64),
    /// `BOOLEAN`.
    Bool(bool),
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

    /// Value `row`, `None` for NULL.
    pub fn value(&self, row: usize) -> Option<KeyValue<'_>> {
        match self {
            KeyColumn::Text(v) => v.get(row).map(KeyValue::Text),
            KeyColumn::Int(v) => v[row].map(KeyValue::Int),
            KeyColumn::Double(v) => v[row].map(KeyValue::Double),
            KeyColumn::Bool(v) => v[row].map(KeyValue::Bool),
        }
    }

    /// Appends a value from outside the window state (a registry's): `None` or a
    /// value of another kind is NULL.
    pub fn push_value(&mut self, value: Option<KeyValue<'_>>) {
        match (self, value) {
            (KeyColumn::Text(v), Some(KeyValue::Text(t))) => v.push(Some(t)),
            (KeyColumn::Int(v), Some(KeyValue::Int(i))) => v.push(Some(i)),
            (KeyColumn::Double(v), Some(KeyValue::Double(d))) => v.push(Some(d)),
            (KeyColumn::Bool(v), Some(KeyValue::Bool(b))) => v.push(Some(b)),
            (KeyColumn::Text(v), _) => v.push(None),
            (KeyColumn::Int(v), _) => v.push(None),
            (KeyColumn::Double(v), _) => v.push(None),
            (KeyColumn::Bool(v), _) => v.push(None),
        }
    }

    /// Appends row `row` of `other` (same kind).
    pub fn push_from(&mut self, other: &KeyColumn, row: usize) {
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
        use arrow::array::{BooleanArray, Float64Array, Int64Array, TimestampMicrosecondArray};
        use std::sync::Arc;
        match self {
            KeyColumn::Text(v) => Arc::new(v.to_arrow(order)),
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
    /// Heap bytes of the values.
    pub fn heap_bytes(&self) -> usize {
        self.columns
            .iter()
            .map(|c| match c {
                KeyColumn::Text(t) => t.heap_bytes(),
                KeyColumn::Int(v) => v.capacity() * std::mem::size_of::<Option<i64>>(),
                KeyColumn::Double(v) => v.capacity() * std::mem::size_of::<Option<f64>>(),
                KeyColumn::Bool(v) => v.capacity() * std::mem::size_of::<Option<bool>>(),
            })
            .sum()
    }

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
        KeyRows {
            columns,
            len: 0,
            sorted: false,
        }
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
        KeyRows {
            columns,
            len: 0,
            sorted: false,
        }
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

    /// The rows `rows` of `self`, in that order; sorted when `self` is (a subsequence of
    /// sorted rows is sorted).
    pub fn select(&self, rows: &[u32]) -> KeyRows {
        let mut out = self.empty_like();
        for &row in rows {
            out.push_from(self, row as usize);
        }
        out.sorted = self.sorted && rows.windows(2).all(|w| w[0] < w[1]);
        out
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
        self.sorted_order_then(|_, _| Ordering::Equal)
    }

    /// Row indexes in key order (NULL first), rows of one key in the order of `then`,
    /// and rows `then` ties in the order they are in (as a stable sort leaves them).
    pub fn sorted_order_then(&self, then: impl Fn(usize, usize) -> Ordering) -> Vec<usize> {
        let cmp = |a: usize, b: usize| {
            self.cmp_rows(a, self, b)
                .then_with(|| then(a, b))
                .then(a.cmp(&b))
        };
        match self.columns.first() {
            Some(KeyColumn::Text(text)) => {
                sort_by_head(self.len, |r| text.get(r).map_or(0, head), cmp)
            }
            _ => sort_by_head(self.len, |_| 0, cmp),
        }
    }
}

/// Finds rows of a [`KeyRows`] by value: the merge side of two-phase aggregation.
#[derive(Debug, Default)]
pub struct KeyIndex {
    table: HashTable<usize>,
}

impl KeyIndex {
    /// Heap bytes of the index.
    pub fn heap_bytes(&self) -> usize {
        self.table.capacity() * (std::mem::size_of::<usize>() + 1)
    }

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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text_mapper() -> KeyMapper {
        KeyMapper::new(&[GroupKey {
            column: 0,
            name: "k".into(),
            ty: DataType::Text,
        }])
    }

    /// Key values of `ids` (mapper ids: 0 is NULL) in the order given.
    fn values(ids: &[u32], interner: &Interner) -> Vec<Option<Vec<u8>>> {
        ids.iter()
            .map(|&id| (id > 0).then(|| interner.get_bytes(id - 1).to_vec()))
            .collect()
    }

    /// Key texts that tie on the first twelve bytes (the radix sort's head), hold NUL
    /// bytes (which pad a short head too) and bytes beyond ASCII.
    const TEXTS: &str = "(device-00000)?[ab\\x00é]{0,14}";

    /// `sorted_positions` of `window` puts its keys in the order of their values.
    fn closes_in_value_order(
        mapper: &mut KeyMapper,
        window: &[u32],
        interner: &Interner,
    ) -> Result<(), TestCaseError> {
        let order = mapper.sorted_positions(window, interner);
        prop_assert!(order.is_some(), "a text key always closes in order");
        let got: Vec<u32> = order
            .unwrap_or_default()
            .iter()
            .map(|&p| window[p as usize])
            .collect();
        let mut want = values(window, interner);
        want.sort();
        prop_assert_eq!(values(&got, interner), want);
        Ok(())
    }

    proptest! {
        /// Windows close in the order of their values (NULL first): sorted by value
        /// while most of their texts are new, by rank once the texts settle, whatever
        /// arrives later.
        #[test]
        fn closing_order_is_value_order(
            first in prop::collection::vec(TEXTS, 1..200),
            later in prop::collection::vec(prop::collection::vec(TEXTS, 1..60), 1..6),
        ) {
            let mut interner = Interner::new();
            let mut mapper = text_mapper();
            let intern = |texts: &[String], interner: &mut Interner| -> Vec<u32> {
                let mut ids: Vec<u32> = texts.iter().map(|t| interner.intern(t) + 1).collect();
                ids.push(0);
                ids.sort_unstable();
                ids.dedup();
                ids.reverse();
                ids
            };
            let ranked = |mapper: &KeyMapper, interner: &Interner| {
                matches!(&mapper.0, Mapper::Text { order, .. } if order.rank.len() == interner.len())
            };
            // Everything is new in the first window: sorted by value, nothing ranked.
            let window = intern(&first, &mut interner);
            closes_in_value_order(&mut mapper, &window, &interner)?;
            prop_assert!(!ranked(&mapper, &interner));
            for texts in &later {
                let window = intern(texts, &mut interner);
                closes_in_value_order(&mut mapper, &window, &interner)?;
            }
            // A window of known keys only ranks every text.
            let window = intern(&first, &mut interner);
            closes_in_value_order(&mut mapper, &window, &interner)?;
            prop_assert!(ranked(&mapper, &interner));
        }
    }

    proptest! {
        /// The galloping search finds what a binary search from `from` finds.
        #[test]
        fn gallop_lands_where_a_binary_search_does(
            mut sorted in prop::collection::vec(0u32..500, 0..300),
            pivot in 0u32..520,
            from in 0usize..300,
        ) {
            sorted.sort_unstable();
            let from = from.min(sorted.len());
            let want = from + sorted[from..].partition_point(|&x| x < pivot);
            prop_assert_eq!(gallop(&sorted, from, |x| x < pivot), want);
        }
    }

    #[test]
    fn sorted_order_ties_beyond_the_prefix() {
        let mut rows = KeyRows::new(&[GroupKey {
            column: 0,
            name: "k".into(),
            ty: DataType::Text,
        }]);
        let texts: [Option<&[u8]>; 5] = [
            Some(b"device-0000012"),
            None,
            Some(b"device-0000011"),
            Some(b"device-00000"),
            Some(b"a"),
        ];
        if let Some(KeyColumn::Text(column)) = rows.columns.first_mut() {
            for t in texts {
                column.push(t);
            }
        }
        rows.len = texts.len();
        assert_eq!(rows.sorted_order(), vec![1, 4, 3, 2, 0]);
    }
}
