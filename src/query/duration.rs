//! Durations in query files: `'5s'`, `'250ms'`, `'1 minute'` and `INTERVAL '1' MINUTE`.

use sqlparser::ast::{DateTimeField, Expr, Interval, Spanned, Value as SqlValue};

use super::error::{PlanError, PlanResult};
use crate::time::{
    MICROS_PER_DAY, MICROS_PER_HOUR, MICROS_PER_MILLI, MICROS_PER_MINUTE, MICROS_PER_SECOND,
};

const UNITS: &str = "us, ms, s, m, h, d (or microsecond, millisecond, second, minute, hour, day)";

fn unit_micros(unit: &str) -> Option<i64> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "us" | "microsecond" | "microseconds" => 1,
        "ms" | "millisecond" | "milliseconds" => MICROS_PER_MILLI,
        "s" | "sec" | "secs" | "second" | "seconds" => MICROS_PER_SECOND,
        "m" | "min" | "mins" | "minute" | "minutes" => MICROS_PER_MINUTE,
        "h" | "hr" | "hour" | "hours" => MICROS_PER_HOUR,
        "d" | "day" | "days" => MICROS_PER_DAY,
        _ => return None,
    })
}

/// `<number><unit>` or `<number> <unit>` split, the unit's microseconds looked up.
fn number_and_unit(text: &str) -> (&str, Option<i64>) {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    (number, unit_micros(unit.trim()))
}

/// Parses `<number><unit>` or `<number> <unit>` into microseconds; `None` when malformed
/// or too large. The unit is required: a bare `'5'` could be seconds or milliseconds.
pub fn parse_duration(text: &str) -> Option<i64> {
    let (number, unit) = number_and_unit(text);
    number.parse::<i64>().ok()?.checked_mul(unit?)
}

/// Whether `text` is a well-formed duration too large for the microsecond clock.
fn too_large(number: &str, unit: Option<i64>) -> bool {
    !number.is_empty()
        && unit.is_some()
        && number
            .parse::<i64>()
            .map_or(true, |n| unit.and_then(|u| n.checked_mul(u)).is_none())
}

/// A positive duration given as a string option value.
pub fn duration_option(
    text: &str,
    span: sqlparser::tokenizer::Span,
    allow_zero: bool,
) -> PlanResult<i64> {
    let (number, unit) = number_and_unit(text);
    match parse_duration(text) {
        Some(us) if us > 0 || (allow_zero && us == 0) => Ok(us),
        Some(_) => Err(PlanError::at(
            span,
            format!("expected a positive duration, found '{text}'"),
        )),
        None if too_large(number, unit) => Err(PlanError::at(
            span,
            format!("the duration '{text}' is too large"),
        )),
        None => Err(PlanError::at(
            span,
            format!("expected a duration like '5s' or '1m' (units: {UNITS}), found '{text}'"),
        )),
    }
}

/// A positive duration given as `INTERVAL '1' MINUTE`, `INTERVAL '1 minute'` or `'1m'`.
pub fn interval_expr(expr: &Expr, what: &str) -> PlanResult<i64> {
    let span = expr.span();
    let bad = || {
        PlanError::at(
            span,
            format!("expected {what} as INTERVAL '<n>' <unit>, like INTERVAL '1' MINUTE"),
        )
    };
    match expr {
        Expr::Interval(Interval {
            value,
            leading_field,
            last_field: None,
            ..
        }) => {
            let text = match value.as_ref() {
                Expr::Value(v) => match &v.value {
                    SqlValue::SingleQuotedString(s) | SqlValue::Number(s, _) => s.clone(),
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            };
            // The number and its unit's microseconds: from the field, or the text.
            let (number, unit) = match leading_field {
                None => number_and_unit(&text),
                Some(field) => {
                    let unit = match field {
                        DateTimeField::Microsecond | DateTimeField::Microseconds => 1,
                        DateTimeField::Millisecond | DateTimeField::Milliseconds => {
                            MICROS_PER_MILLI
                        }
                        DateTimeField::Second | DateTimeField::Seconds => MICROS_PER_SECOND,
                        DateTimeField::Minute | DateTimeField::Minutes => MICROS_PER_MINUTE,
                        DateTimeField::Hour | DateTimeField::Hours => MICROS_PER_HOUR,
                        DateTimeField::Day | DateTimeField::Days => MICROS_PER_DAY,
                        other => {
                            return Err(PlanError::at(
                                span,
                                format!(
                                    "interval unit {other} is not supported; use MILLISECOND, SECOND, MINUTE, HOUR or DAY"
                                ),
                            ));
                        }
                    };
                    (text.trim(), Some(unit))
                }
            };
            let us = number
                .parse::<i64>()
                .ok()
                .zip(unit)
                .and_then(|(n, u)| n.checked_mul(u));
            match us {
                Some(us) if us > 0 => Ok(us),
                None if too_large(number, unit) => Err(PlanError::at(
                    span,
                    format!("the {what} '{text}' is too large"),
                )),
                None if unit.is_none() => Err(PlanError::at(
                    span,
                    format!("expected {what} with a unit ({UNITS}), found '{text}'"),
                )),
                _ => Err(PlanError::at(
                    span,
                    format!("expected a positive {what}, found '{text}'"),
                )),
            }
        }
        Expr::Value(v) => match &v.value {
            SqlValue::SingleQuotedString(s) => duration_option(s, span, false),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Some(5 * MICROS_PER_SECOND));
        assert_eq!(parse_duration("250ms"), Some(250 * MICROS_PER_MILLI));
        assert_eq!(parse_duration("1 minute"), Some(MICROS_PER_MINUTE));
        assert_eq!(parse_duration("2h"), Some(2 * MICROS_PER_HOUR));
        assert_eq!(parse_duration("10"), None, "a unit is required");
        assert_eq!(parse_duration("999999999999 days"), None);
        assert!(too_large("999999999999", unit_micros("days")));
        assert!(!too_large("10", unit_micros("days")));
        assert!(!too_large("10", None));
        assert_eq!(parse_duration("5 fortnights"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
