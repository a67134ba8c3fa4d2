//! Instants: microseconds since the Unix epoch, parsed from RFC 3339 text and formatted
//! for partition paths and file names.
//!
//! The parser is hand-written because it sits on the decoding hot path for string
//! timestamps; it accepts exactly RFC 3339 (`T` or space separator, fraction of up to
//! nine digits, `Z` or a `±HH:MM` offset) and is checked against chrono in the tests.

/// Microseconds in one millisecond, second, minute, hour and day.
pub const MICROS_PER_MILLI: i64 = 1_000;
/// Microseconds in a second.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
/// Microseconds in a minute.
pub const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
/// Microseconds in an hour.
pub const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
/// Microseconds in a day.
pub const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// Why a timestamp text was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Not in RFC 3339 shape.
    #[error("expected an RFC 3339 timestamp like 2026-01-31T12:00:00Z")]
    Syntax,
    /// A field is out of its range (month 13, hour 25, ...), or the time is outside the
    /// years 0000 to 9999.
    #[error(
        "timestamp out of range (a date or time field beyond its range, such as February 30 or hour 24, or a time outside the years 0000 to 9999)"
    )]
    Range,
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<i64, TimestampError> {
    let mut v = 0i64;
    for i in 0..n {
        let c = *b.get(at + i).ok_or(TimestampError::Syntax)?;
        if !c.is_ascii_digit() {
            return Err(TimestampError::Syntax);
        }
        v = v * 10 + i64::from(c - b'0');
    }
    Ok(v)
}

fn expect(b: &[u8], at: usize, c: u8) -> Result<(), TimestampError> {
    if b.get(at) == Some(&c) {
        Ok(())
    } else {
        Err(TimestampError::Syntax)
    }
}

/// Days from 1970-01-01 to the given civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Howard Hinnant's algorithm: exact for every representable date, no tables.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses an RFC 3339 timestamp into microseconds since the epoch.
///
/// Digits beyond microseconds are truncated toward the past, as Arrow does when casting
/// nanoseconds to microseconds.
pub fn parse_rfc3339(text: &[u8]) -> Result<i64, TimestampError> {
    parse_rfc3339_cached(text, &mut DateCache::default())
}

/// The last date [`parse_rfc3339_cached`] read (its ten bytes, `YYYY-MM-DD`) and its day
/// number: readings arrive roughly in time order, so most share the date before them.
#[derive(Clone, Copy, Debug, Default)]
pub struct DateCache(Option<([u8; 10], i64)>);

/// [`parse_rfc3339`], skipping the date's digits and calendar arithmetic when the date is
/// the one `cache` holds; the answer (and any error) is the same.
pub fn parse_rfc3339_cached(text: &[u8], cache: &mut DateCache) -> Result<i64, TimestampError> {
    let b = text;
    let known = match (cache.0, b.get(..10)) {
        (Some((date, days)), Some(head)) if date == head => Some(days),
        _ => None,
    };
    let (year, month, day) = match known {
        Some(_) => (0, 0, 0),
        None => {
            let year = digits(b, 0, 4)?;
            expect(b, 4, b'-')?;
            let month = digits(b, 5, 2)?;
            expect(b, 7, b'-')?;
            (year, month, digits(b, 8, 2)?)
        }
    };
    match b.get(10) {
        Some(b'T' | b't' | b' ') => {}
        _ => return Err(TimestampError::Syntax),
    }
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    let second = digits(b, 17, 2)?;
    let mut at = 19;
    let mut micros = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 6 {
                micros = micros * 10 + i64::from(b[at] - b'0');
            }
            at += 1;
        }
        let n = at - start;
        if n == 0 || n > 9 {
            return Err(TimestampError::Syntax);
        }
        for _ in n..6 {
            micros *= 10;
        }
    }
    let offset_minutes = match b.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, at + 1, 2)?;
            expect(b, at + 3, b':')?;
            let om = digits(b, at + 4, 2)?;
            if oh > 23 || om > 59 {
                return Err(TimestampError::Range);
            }
            at += 6;
            let m = oh * 60 + om;
            if sign == b'-' { -m } else { m }
        }
        _ => return Err(TimestampError::Syntax),
    };
    if at != b.len() {
        return Err(TimestampError::Syntax);
    }
    // A leap second (60) is accepted and folded onto the next second, as chrono does.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimestampError::Range);
    }
    let days = match known {
        Some(days) => days,
        None => {
            if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
                return Err(TimestampError::Range);
            }
            let days = days_from_civil(year, month, day);
            if let Some(head) = b.get(..10).and_then(|h| <[u8; 10]>::try_from(h).ok()) {
                cache.0 = Some((head, days));
            }
            days
        }
    };
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * MICROS_PER_SECOND + micros)
}

/// Formats microseconds since the epoch as RFC 3339 in UTC with microsecond precision,
/// dropping a zero fraction (`2026-01-01T00:00:00Z`, `2026-01-01T00:00:00.250Z`).
pub fn format_rfc3339_micros(us: i64) -> String {
    let days = us.div_euclid(MICROS_PER_DAY);
    let rem = us.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / MICROS_PER_SECOND;
    let frac = rem % MICROS_PER_SECOND;
    let mut out = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if frac != 0 {
        let f = format!("{frac:06}");
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// The Hive partition path (`date=YYYY-MM-DD/hour=HH`) that holds an instant.
pub fn partition_path(us: i64) -> String {
    let days = us.div_euclid(MICROS_PER_DAY);
    let hour = us.rem_euclid(MICROS_PER_DAY) / MICROS_PER_HOUR;
    let (y, m, d) = civil_from_days(days);
    format!("date={y:04}-{m:02}-{d:02}/hour={hour:02}")
}

/// The start of the hour that holds an instant.
pub fn hour_floor(us: i64) -> i64 {
    us.div_euclid(MICROS_PER_HOUR) * MICROS_PER_HOUR
}

/// A compact UTC stamp for file names: `20260101T000000Z`, with `.ffffff` only when the
/// instant is not on a whole second.
pub fn compact_stamp(us: i64) -> String {
    let days = us.div_euclid(MICROS_PER_DAY);
    let rem = us.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(days);
    let secs = rem / MICROS_PER_SECOND;
    let frac = rem % MICROS_PER_SECOND;
    let mut out = format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    );
    if frac != 0 {
        out.push_str(&format!(".{frac:06}"));
    }
    out.push('Z');
    out
}

/// Formats a duration in microseconds the way query files write it (`1m`, `5s`, `250ms`).
pub fn format_duration(us: i64) -> String {
    const UNITS: [(i64, &str); 6] = [
        (MICROS_PER_DAY, "d"),
        (MICROS_PER_HOUR, "h"),
        (MICROS_PER_MINUTE, "m"),
        (MICROS_PER_SECOND, "s"),
        (MICROS_PER_MILLI, "ms"),
        (1, "us"),
    ];
    if us == 0 {
        return "0s".into();
    }
    for (unit, name) in UNITS {
        if us % unit == 0 {
            return format!("{}{name}", us / unit);
        }
    }
    format!("{us}us")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_shapes() {
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339(b"1970-01-01T00:00:01.5Z"), Ok(1_500_000));
        assert_eq!(parse_rfc3339(b"1970-01-01T01:00:00+01:00"), Ok(0));
        assert_eq!(parse_rfc3339(b"1970-01-01 00:00:00.000001z"), Ok(1));
        assert_eq!(
            parse_rfc3339(b"2026-02-29T00:00:00Z"),
            Err(TimestampError::Range)
        );
        assert_eq!(
            parse_rfc3339(b"2026-01-01T00:00:00"),
            Err(TimestampError::Syntax)
        );
        assert_eq!(
            parse_rfc3339(b"2026-01-01T00:00:00.Z"),
            Err(TimestampError::Syntax)
        );
        assert_eq!(
            parse_rfc3339(b"2026-01-01T00:00:00Zx"),
            Err(TimestampError::Syntax)
        );
    }

    #[test]
    fn partitions_and_names() {
        let t = parse_rfc3339(b"2026-03-04T05:06:07.25Z").unwrap_or_default();
        assert_eq!(partition_path(t), "date=2026-03-04/hour=05");
        assert_eq!(compact_stamp(t), "20260304T050607.250000Z");
        assert_eq!(format_rfc3339_micros(t), "2026-03-04T05:06:07.25Z");
        assert_eq!(format_duration(60 * MICROS_PER_SECOND), "1m");
        assert_eq!(format_duration(1500 * MICROS_PER_MILLI), "1500ms");
    }

    proptest! {
        #[test]
        fn agrees_with_chrono(secs in -2_000_000_000i64..4_000_000_000i64, nanos in 0u32..1_000_000_000, offset in -1439i32..1439) {
            use chrono::{DateTime, FixedOffset, SecondsFormat};
            let tz = FixedOffset::east_opt(offset * 60).unwrap_or(FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
            let Some(dt) = DateTime::from_timestamp(secs, nanos) else { return Ok(()) };
            let text = dt.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::AutoSi, false);
            if text.starts_with('-') || text.starts_with('+') { return Ok(()) }
            let want = dt.timestamp_micros();
            prop_assert_eq!(parse_rfc3339(text.as_bytes()), Ok(want), "{}", text);
            let round = DateTime::parse_from_rfc3339(&format_rfc3339_micros(want)).map(|d| d.timestamp_micros());
            prop_assert_eq!(round, Ok(want));
        }

        /// One cache over a run of texts of few dates, valid and not (bad times, days
        /// past a month's end, torn tails): every answer is the uncached one.
        #[test]
        fn the_date_cache_changes_no_answer(texts in proptest::collection::vec(
            ("2026-0[12]-(01|29|30)", "[T ]", "([01][0-9]|2[0-5]):[0-6][0-9]:[0-6][0-9]", "(\\.[0-9]{1,10})?", "(Z|[+-]0[0-9]:[0-9]{2}|x|)"),
            1..40,
        )) {
            let mut cache = DateCache::default();
            for (date, sep, time, frac, zone) in texts {
                let text = format!("{date}{sep}{time}{frac}{zone}");
                prop_assert_eq!(
                    parse_rfc3339_cached(text.as_bytes(), &mut cache),
                    parse_rfc3339(text.as_bytes()),
                    "{}", text
                );
            }
        }

        #[test]
        fn civil_round_trip(days in -1_000_000i64..1_000_000) {
            let (y, m, d) = civil_from_days(days);
            prop_assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }
}
