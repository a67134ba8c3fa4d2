//! The fast path: lines shaped like the last well-formed compact line.
//!
//! Producers write every record with the same keys in the same order and no spaces. After
//! the general parser reads such a line, its shape (the exact `"key":` tokens in order,
//! and which column each feeds) is kept, and later lines are matched token by token:
//! no key lookup, no duplicate or missing-field bookkeeping (the shape has every declared
//! column exactly once), numbers parsed in the same pass that scans them. Anything
//! unexpected (a space, another key order, an escape, a fraction where an integer belongs)
//! rolls the row back and hands the line to the general parser, which produces the
//! precise error or the value.

use super::scan::{skip_value, string};
use super::{JsonDecoder, Key};
use crate::batch::{Batch, Column, ColumnValues, Interner};
use crate::decode::deferred::UNRESOLVED;
use crate::decode::field::{MAX_EVENT_TIME, MIN_EVENT_TIME, timestamp_from_text_cached};
use crate::decode::number::{Decimal, decimal_prefix, integer_prefix, parse_f64};
use crate::time::{DateCache, MICROS_PER_MILLI};
use crate::types::DataType;

/// After this many lines in a row miss the shape, the next well-formed line sets a new one.
const RELEARN_AFTER: u32 = 16;

/// What to do with a value.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Skip an unknown field's value.
    Skip,
    /// Parse into column `.0`, whose type is known from the schema.
    Text(usize),
    BigInt(usize),
    Double(usize),
    Boolean(usize),
    Timestamp(usize),
}

/// One `"key":value` of the shape.
#[derive(Debug)]
struct Token {
    /// `"key":` exactly as it appears, after the comma that separates it from the value
    /// before (`,"key":`) but for the first: one comparison per field.
    prefix: Box<[u8]>,
    /// What the value is for.
    op: Op,
}

/// A learned line shape.
#[derive(Debug, Default)]
pub(super) struct Shape {
    tokens: Vec<Token>,
    misses: u32,
}

impl Shape {
    /// Whether the shape should be replaced by the next well-formed line.
    pub(super) fn wants(&self) -> bool {
        self.tokens.is_empty() || self.misses >= RELEARN_AFTER
    }

    /// Adopts the key sequence of a line the general parser read.
    pub(super) fn learn(&mut self, keys: &[Key], types: &[DataType]) {
        if keys.iter().any(|k| k.escaped) {
            return;
        }
        self.tokens = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut prefix = Vec::with_capacity(k.name.len() + 4);
                if i > 0 {
                    prefix.push(b',');
                }
                prefix.push(b'"');
                prefix.extend_from_slice(&k.name);
                prefix.extend_from_slice(b"\":");
                let op = match k.column.map(|c| (c, types[c])) {
                    None => Op::Skip,
                    Some((c, DataType::Text)) => Op::Text(c),
                    Some((c, DataType::BigInt)) => Op::BigInt(c),
                    Some((c, DataType::Double)) => Op::Double(c),
                    Some((c, DataType::Boolean)) => Op::Boolean(c),
                    Some((c, DataType::Timestamp)) => Op::Timestamp(c),
                };
                Token {
                    prefix: prefix.into(),
                    op,
                }
            })
            .collect();
        self.misses = 0;
    }

    /// Notes whether a line fit.
    pub(super) fn record(&mut self, hit: bool) {
        self.misses = if hit {
            0
        } else {
            self.misses.saturating_add(1)
        };
    }

    /// Whether there is a shape to try.
    pub(super) fn is_set(&self) -> bool {
        !self.tokens.is_empty()
    }
}

#[inline]
fn has_prefix(b: &[u8], at: usize, prefix: &[u8]) -> bool {
    b.get(at..at + prefix.len())
        .is_some_and(|s| crate::batch::bytes_eq(s, prefix))
}

/// A JSON integer at `i` of at most 18 digits: where it ends, and its value.
#[inline(always)]
fn integer(b: &[u8], i: usize) -> Option<(usize, i64)> {
    let (n, v) = integer_prefix(b.get(i..)?)?;
    Some((i + n, v))
}

/// A JSON number at `i` as a double; the common short decimal is converted exactly
/// without a second pass, anything longer goes to the careful parser.
#[inline(always)]
fn double(b: &[u8], i: usize) -> Option<(usize, f64)> {
    match decimal_prefix(b.get(i..)?) {
        Decimal::Short(n, v) => Some((i + n, v)),
        Decimal::Long => {
            // Exponents and long mantissas: find the token's end, then parse it carefully.
            let (end, _) = crate::decode::number::scan_json_number(b, i).ok()?;
            parse_f64(&b[i..end]).ok().map(|v| (end, v))
        }
        Decimal::Invalid => None,
    }
}

impl JsonDecoder {
    /// Parses the line at `i` by the learned shape, pushing one row; returns the index of
    /// the line break (or end of data), or `None` (with the row partly pushed) when the
    /// line does not fit.
    #[inline]
    pub(super) fn fast_object(
        &mut self,
        b: &[u8],
        i: usize,
        batch: &mut Batch,
        interner: &mut Interner,
    ) -> Option<usize> {
        if b[i] != b'{' {
            return None;
        }
        let mut j = i + 1;
        let defer = interner.is_large();
        for token in &self.shape.tokens {
            if !has_prefix(b, j, &token.prefix) {
                return None;
            }
            j += token.prefix.len();
            j = match token.op {
                Op::Skip => skip_value(b, j, 1, &mut self.scratch).ok()?,
                Op::Text(c) if defer && b.get(j) == Some(&b'"') => {
                    let (end, value) = string(b, j + 1, &mut self.scratch).ok()?;
                    // Unescaping always shortens: a value of another length was copied
                    // out of the input, and only values in the input can wait for their
                    // ids. Such a rare line takes the general path.
                    let span = (j + 1, end - 1);
                    if value.len() != span.1 - span.0 {
                        return None;
                    }
                    self.deferred.push(interner.hash(value), span, c, batch.len);
                    push(&mut batch.columns[c], |v| v.push_text(UNRESOLVED), end)?
                }
                Op::Text(c) => text(b, j, &mut batch.columns[c], interner, &mut self.scratch)?,
                Op::BigInt(c) => {
                    let column = &mut batch.columns[c];
                    match integer(b, j) {
                        Some((end, x)) => push(column, |v| v.push_int(x), end)?,
                        None => null(b, j, column)?,
                    }
                }
                Op::Double(c) => {
                    let column = &mut batch.columns[c];
                    match double(b, j) {
                        Some((end, x)) => push(column, |v| v.push_double(x), end)?,
                        None => null(b, j, column)?,
                    }
                }
                Op::Boolean(c) => {
                    let column = &mut batch.columns[c];
                    if b[j..].starts_with(b"true") {
                        push(column, |v| v.push_bool(true), j + 4)?
                    } else if b[j..].starts_with(b"false") {
                        push(column, |v| v.push_bool(false), j + 5)?
                    } else {
                        null(b, j, column)?
                    }
                }
                Op::Timestamp(c) => {
                    let (end, us) = timestamp(b, j, &mut self.scratch, &mut self.dates)?;
                    push(&mut batch.columns[c], |v| v.push_int(us), end)?
                }
            };
        }
        if b.get(j) != Some(&b'}') {
            return None;
        }
        j += 1;
        match b.get(j) {
            None | Some(b'\n') => Some(j),
            Some(b'\r') if matches!(b.get(j + 1), None | Some(b'\n')) => Some(j + 1),
            _ => None,
        }
    }
}

/// Pushes a parsed value (the closure returns false on a type mismatch).
#[inline(always)]
fn push(
    column: &mut Column,
    f: impl FnOnce(&mut ColumnValues) -> bool,
    end: usize,
) -> Option<usize> {
    if !f(&mut column.values) {
        return None;
    }
    column.mark_pushed();
    Some(end)
}

/// A JSON `null` for a nullable column.
#[inline]
fn null(b: &[u8], i: usize, column: &mut Column) -> Option<usize> {
    if !b[i..].starts_with(b"null") {
        return None;
    }
    column.push_null();
    Some(i + 4)
}

#[inline]
fn text(
    b: &[u8],
    i: usize,
    column: &mut Column,
    interner: &mut Interner,
    scratch: &mut Vec<u8>,
) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return null(b, i, column);
    }
    let (end, value) = string(b, i + 1, scratch).ok()?;
    let id = interner.intern_utf8(value);
    push(column, |v| v.push_text(id), end)
}

/// An event time: integer epoch milliseconds or an RFC 3339 string, in range. Never null.
#[inline]
fn timestamp(
    b: &[u8],
    i: usize,
    scratch: &mut Vec<u8>,
    dates: &mut DateCache,
) -> Option<(usize, i64)> {
    let (end, us) = if b.get(i) == Some(&b'"') {
        let (end, text) = string(b, i + 1, scratch).ok()?;
        (end, timestamp_from_text_cached(text, dates).ok()?)
    } else {
        let (end, ms) = integer(b, i)?;
        (end, ms.checked_mul(MICROS_PER_MILLI)?)
    };
    (MIN_EVENT_TIME..=MAX_EVENT_TIME)
        .contains(&us)
        .then_some((end, us))
}

impl ColumnValues {
    #[inline(always)]
    fn push_text(&mut self, id: u32) -> bool {
        match self {
            ColumnValues::Text(v) => {
                v.push(id);
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    fn push_int(&mut self, x: i64) -> bool {
        match self {
            ColumnValues::BigInt(v) | ColumnValues::Timestamp(v) => {
                v.push(x);
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    fn push_double(&mut self, x: f64) -> bool {
        match self {
            ColumnValues::Double(v) => {
                v.push(x);
                true
            }
            _ => false,
        }
    }

    #[inline(always)]
    fn push_bool(&mut self, x: bool) -> bool {
        match self {
            ColumnValues::Boolean(v) => {
                v.push(x);
                true
            }
            _ => false,
        }
    }
}
