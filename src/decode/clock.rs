//! Clock hygiene: readings stamped far ahead of the rest of their chunk are quarantined
//! before they can move the watermark.
//!
//! One device with a clock a year ahead would otherwise drag the watermark a year forward
//! and make every other reading late. The rule looks only at the chunk itself (a chunk
//! is the fixed-size unit the input is cut into, whatever the number of workers), so it
//! is deterministic and needs nothing from other workers:
//!
//! * sort the chunk's event times; from the median upwards, find the first gap between
//!   neighbours wider than `max_future_skew`;
//! * the readings above that gap are a *jump*. A jump carried by many readings (at least
//!   [`FOLLOW_FRACTION`] of the chunk and at least [`FOLLOW_MIN`] readings) is a real
//!   move of the fleet's clock and is followed (the search goes on above it); a jump
//!   carried by fewer is quarantined: dead-lettered as "timestamp too far ahead", as if
//!   it had never been read.
//!
//! The cost is nothing on the common path: a chunk whose event times all lie within
//! `max_future_skew` of each other is never sorted.

use super::{BadRecord, DecodedChunk, raw_line};

/// A jump is followed when at least this fraction of the chunk's readings carry it.
pub const FOLLOW_FRACTION: f64 = 0.25;
/// ... and at least this many readings.
pub const FOLLOW_MIN: usize = 4;

/// Reason given in the dead letters.
pub const TOO_FAR_AHEAD: &str = "timestamp too far ahead";

/// Quarantines the readings of `chunk` (decoded from `data`) whose event time (column
/// `event_time`) lies more than `max_future_skew` microseconds above the rest.
pub fn quarantine_future(
    chunk: &mut DecodedChunk,
    data: &[u8],
    event_time: usize,
    max_future_skew: i64,
) {
    let ts = chunk.batch.timestamps(event_time);
    let (Some(&min), Some(max)) = (ts.iter().min(), chunk.max_event_time) else {
        return;
    };
    if max.saturating_sub(min) <= max_future_skew {
        return;
    }
    let Some(limit) = accepted_limit(ts, max_future_skew) else {
        return;
    };
    quarantine_above(chunk, data, event_time, limit, |t| {
        format!(
            "{TOO_FAR_AHEAD}: {} is more than {} after the other readings around it (max_future_skew)",
            crate::time::format_rfc3339_micros(t),
            crate::time::format_duration(max_future_skew)
        )
    });
}

/// Reason given in the dead letters for a live reading ahead of the node's clock.
pub const AHEAD_OF_CLOCK: &str = "timestamp ahead of the node's clock";

/// Quarantines the readings of a live `chunk` stamped more than `max_ahead` after
/// `clock` (the node's clock when they arrived, microseconds): a device whose clock
/// is wrong must not drag the watermark into the future.
pub fn quarantine_ahead_of_clock(
    chunk: &mut DecodedChunk,
    data: &[u8],
    event_time: usize,
    clock: i64,
    max_ahead: i64,
) {
    let limit = clock.saturating_add(max_ahead);
    if chunk.max_event_time.is_none_or(|m| m <= limit) {
        return;
    }
    quarantine_above(chunk, data, event_time, limit, |t| {
        ahead_of_clock(t, clock, max_ahead)
    });
}

/// The reason a live reading stamped `t` is refused when the node's clock read `clock`
/// (microseconds both) and `max_ahead` is allowed: [`AHEAD_OF_CLOCK`], with the times.
pub fn ahead_of_clock(t: i64, clock: i64, max_ahead: i64) -> String {
    format!(
        "{AHEAD_OF_CLOCK}: {} is more than {} after the node's clock ({}) (max_ahead_of_clock)",
        crate::time::format_rfc3339_micros(t),
        crate::time::format_duration(max_ahead),
        crate::time::format_rfc3339_micros(clock),
    )
}

/// Moves the readings stamped after `limit` to the chunk's bad records.
fn quarantine_above(
    chunk: &mut DecodedChunk,
    data: &[u8],
    event_time: usize,
    limit: i64,
    reason: impl Fn(i64) -> String,
) {
    let ts = chunk.batch.timestamps(event_time);
    let keep: Vec<bool> = ts.iter().map(|&t| t <= limit).collect();
    let starts = good_line_starts(data, &chunk.bad);
    for (row, &t) in ts.iter().enumerate() {
        if keep[row] {
            continue;
        }
        let (line, start) = starts.get(row).copied().unwrap_or((0, 0));
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |k| start + k);
        chunk.bad.push(BadRecord {
            line,
            reason: reason(t),
            raw: raw_line(&data[start..end]),
        });
    }
    chunk.bad.sort_by_key(|b| b.line);
    chunk.batch.retain(&keep);
    chunk.max_event_time = chunk.batch.timestamps(event_time).iter().copied().max();
}

/// The (chunk line, byte offset) of every line that decoded to a reading, in order: the
/// lines that are neither blank (only spaces, tabs and carriage returns) nor bad. Both
/// decoders read one record per line, so row `i` of the batch came from entry `i`.
/// Computed only when a reading is quarantined, so decoding keeps no per-row offsets.
pub(crate) fn good_line_starts(data: &[u8], bad: &[BadRecord]) -> Vec<(u64, usize)> {
    let mut bad_lines: Vec<u64> = bad.iter().map(|b| b.line).collect();
    bad_lines.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    let mut line = 0u64;
    while start < data.len() {
        let end = memchr::memchr(b'\n', &data[start..]).map_or(data.len(), |k| start + k);
        let blank = data[start..end]
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r'));
        if !blank && bad_lines.binary_search(&line).is_err() {
            out.push((line, start));
        }
        line += 1;
        start = end + 1;
    }
    out
}

/// The largest event time to keep, or `None` when every reading stays.
fn accepted_limit(ts: &[i64], max_future_skew: i64) -> Option<i64> {
    let mut sorted = ts.to_vec();
    sorted.sort_unstable();
    let n = sorted.len();
    let follow = FOLLOW_MIN.max((n as f64 * FOLLOW_FRACTION).ceil() as usize);
    for i in (n - 1) / 2..n - 1 {
        if sorted[i + 1].saturating_sub(sorted[i]) > max_future_skew {
            let above = n - 1 - i;
            if above < follow {
                return Some(sorted[i]);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    const YEAR: i64 = 365 * 24 * 3600 * S;

    #[test]
    fn one_reading_a_year_ahead_is_cut_even_first() {
        let mut ts: Vec<i64> = (0..100).map(|i| i * S).collect();
        ts[0] = YEAR;
        assert_eq!(accepted_limit(&ts, 3600 * S), Some(99 * S));
    }

    #[test]
    fn gradual_progress_is_never_cut() {
        // Two hours of readings a minute apart, with a skew of ten minutes.
        let ts: Vec<i64> = (0..120).map(|i| i * 60 * S).collect();
        assert_eq!(accepted_limit(&ts, 600 * S), None);
    }

    #[test]
    fn a_jump_of_many_readings_is_followed_and_a_few_stragglers_above_it_are_not() {
        // 60 readings now, 40 two days later (the fleet's clock moved), 2 a year ahead.
        let mut ts: Vec<i64> = (0..60).map(|i| i * S).collect();
        ts.extend((0..40).map(|i| 2 * 24 * 3600 * S + i * S));
        ts.extend([YEAR, YEAR + S]);
        assert_eq!(
            accepted_limit(&ts, 3600 * S),
            Some(2 * 24 * 3600 * S + 39 * S)
        );
    }

    #[test]
    fn several_bad_devices_are_all_cut() {
        let mut ts: Vec<i64> = (0..1000).map(|i| i * 1000).collect();
        ts.extend([YEAR, 2 * YEAR, 3 * YEAR, YEAR / 2, YEAR / 3]);
        assert_eq!(accepted_limit(&ts, 3600 * S), Some(999 * 1000));
    }
}
