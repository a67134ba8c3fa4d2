//! Typed field values from text, shared by the JSON and CSV decoders.

use crate::batch::{Column, ColumnValues, Interner};
use crate::decode::number::{NumberError, parse_f64, parse_i64};
use crate::time::{DateCache, MICROS_PER_MILLI, TimestampError, parse_rfc3339_cached};
use crate::types::DataType;

/// Event times outside years 0000..=9999 are rejected, so window arithmetic never overflows.
pub const MIN_EVENT_TIME: i64 = -62_167_219_200_000_000;
/// See [`MIN_EVENT_TIME`].
pub const MAX_EVENT_TIME: i64 = 253_402_300_799_999_999;

/// Why a field value was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldError {
    /// A number where an integer was needed, text where a number was, and so on.
    Mistyped(&'static str),
    /// A number out of range.
    Range,
    /// A timestamp that is not epoch milliseconds or RFC 3339.
    Timestamp(TimestampError),
    /// Not valid UTF-8.
    Utf8,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldError::Mistyped(what) => f.write_str(what),
            FieldError::Range => f.write_str("number out of range (beyond 64 bits, or not finite: nan and inf are not numbers here)"),
            FieldError::Timestamp(e @ TimestampError::Syntax) => {
                write!(f, "{e}, or integer epoch milliseconds")
            }
            FieldError::Timestamp(e) => write!(f, "{e}"),
            FieldError::Utf8 => f.write_str("invalid UTF-8"),
        }
    }
}

/// Epoch milliseconds to microseconds, within the supported range.
#[inline]
pub fn millis_to_micros(ms: i64) -> Result<i64, FieldError> {
    match ms.checked_mul(MICROS_PER_MILLI) {
        Some(us) if (MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&us) => Ok(us),
        _ => Err(FieldError::Timestamp(TimestampError::Range)),
    }
}

/// A timestamp given as text: RFC 3339, or integer epoch milliseconds.
#[inline]
pub fn timestamp_from_text(text: &[u8]) -> Result<i64, FieldError> {
    timestamp_from_text_cached(text, &mut DateCache::default())
}

/// [`timestamp_from_text`], keeping the last RFC 3339 date read in `dates`.
#[inline]
pub fn timestamp_from_text_cached(text: &[u8], dates: &mut DateCache) -> Result<i64, FieldError> {
    // `parse_i64` stops at the first byte that is not a digit (RFC 3339's `-` after the
    // year), so this costs little when the text is not epoch milliseconds.
    if text.len() < 20
        && text.first() != Some(&b'+')
        && let Ok(ms) = parse_i64(text)
    {
        return millis_to_micros(ms);
    }
    let us = parse_rfc3339_cached(text, dates).map_err(FieldError::Timestamp)?;
    if (MIN_EVENT_TIME..=MAX_EVENT_TIME).contains(&us) {
        Ok(us)
    } else {
        Err(FieldError::Timestamp(TimestampError::Range))
    }
}

fn number_error(e: NumberError, ty: DataType) -> FieldError {
    match (e, ty) {
        (NumberError::Range, _) => FieldError::Range,
        (_, DataType::BigInt) => FieldError::Mistyped("expected BIGINT (an integer)"),
        _ => FieldError::Mistyped("expected DOUBLE (a number)"),
    }
}

/// Parses CSV-style text into `column` (which has type `ty`). Empty text is NULL.
/// `ascii` says the caller has checked the text is ASCII, so UTF-8.
#[inline]
pub fn push_text_value(
    column: &mut Column,
    text: &[u8],
    ascii: bool,
    interner: &mut Interner,
) -> Result<(), FieldError> {
    if text.is_empty() {
        column.push_null();
        return Ok(());
    }
    match &mut column.values {
        ColumnValues::Text(v) => {
            if !ascii {
                std::str::from_utf8(text).map_err(|_| FieldError::Utf8)?;
            }
            v.push(interner.intern_utf8(text));
        }
        ColumnValues::BigInt(v) => {
            v.push(parse_i64(text).map_err(|e| number_error(e, DataType::BigInt))?)
        }
        ColumnValues::Double(v) => {
            v.push(parse_f64(text).map_err(|e| number_error(e, DataType::Double))?)
        }
        ColumnValues::Boolean(v) => v.push(match text {
            b"true" | b"TRUE" | b"True" | b"t" | b"T" | b"1" => true,
            b"false" | b"FALSE" | b"False" | b"f" | b"F" | b"0" => false,
            _ => return Err(FieldError::Mistyped("expected BOOLEAN (true or false)")),
        }),
        ColumnValues::Timestamp(v) => v.push(timestamp_from_text(text)?),
    }
    column.mark_pushed();
    Ok(())
}
