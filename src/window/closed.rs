//! Closed windows kept for corrections: under `allowed_lateness`, the owner of a window
//! keeps its merged rows after writing it, until the watermark has passed its end plus
//! the allowance, so that readings arriving in that time (a correction) are merged into
//! the whole window and it is written again as its next revision.
//!
//! Corrections are written in batches: those found in chunks whose time falls in the
//! same slide-long interval make one revision, written once the frontier has passed
//! that interval ([`correction_due`]). So a window is rewritten at most about
//! `allowance / slide + 1` times, however many chunks carry corrections for it, and
//! which corrections share a revision depends only on the chunks' times.
//!
//! Pure state, no timely: the operator says when a window closed, when a correction
//! came, and where the frontier is.

use std::collections::BTreeMap;

use super::aggregate::Accumulator;
use super::key::KeyRows;
use super::merge::{WindowMerger, sorted_rows};
use super::state::{PartialWindow, RESUMED};
use crate::stream::KeptWindow;

/// The last time of the `slide`-long interval holding `time`: a correction found in a
/// chunk at `time` is whole, with every other correction of that interval, once the
/// frontier is past it.
pub fn correction_due(time: i64, slide: i64) -> i64 {
    time.div_euclid(slide.max(1))
        .saturating_add(1)
        .saturating_mul(slide.max(1))
        .saturating_sub(1)
}

/// A closed window's merged rows.
#[derive(Debug)]
pub struct ClosedWindowState {
    /// Window end.
    pub end: i64,
    /// Group keys, sorted.
    pub keys: KeyRows,
    /// One accumulator per aggregate, slot `i` for key row `i`.
    pub accs: Vec<Accumulator>,
    /// The last revision of it written, if any.
    pub revision: Option<u32>,
}

/// The closed windows of one owner still within the allowed lateness, by start.
#[derive(Debug)]
pub struct ClosedWindows {
    allowed_lateness: i64,
    slide: i64,
    windows: BTreeMap<i64, ClosedWindowState>,
}

impl ClosedWindows {
    /// None kept yet, under `allowed_lateness` (microseconds; zero keeps nothing), for
    /// windows every `slide`.
    pub fn new(allowed_lateness: i64, slide: i64) -> Self {
        ClosedWindows {
            allowed_lateness,
            slide,
            windows: BTreeMap::new(),
        }
    }

    /// Whether closed windows are kept at all (corrections can reach them).
    pub fn keeps(&self) -> bool {
        self.allowed_lateness > 0
    }

    /// Keeps the window starting at `start` that has just closed, if corrections can
    /// reach it.
    pub fn closed(&mut self, start: i64, window: ClosedWindowState) {
        if self.keeps() {
            self.windows.insert(start, window);
        }
    }

    /// Merges a correction (`keys`, `accs`) into the window starting at `start` and
    /// hands out the window as it now stands, with the revision to write it as; the
    /// caller keeps it again with [`ClosedWindows::closed`] once written. A window with
    /// nothing kept (its first readings are the correction) gets `first_revision`.
    pub fn correct(
        &mut self,
        start: i64,
        end: i64,
        keys: KeyRows,
        accs: Vec<Accumulator>,
        first_revision: u32,
    ) -> ClosedWindowState {
        match self.windows.remove(&start) {
            Some(base) => {
                let (keys, accs) = with_correction(base.keys, base.accs, keys, accs);
                ClosedWindowState {
                    end,
                    keys,
                    accs,
                    revision: Some(base.revision.map_or(0, |r| r + 1)),
                }
            }
            None => {
                let (keys, accs) = sorted_rows(keys, accs);
                ClosedWindowState {
                    end,
                    keys,
                    accs,
                    revision: Some(first_revision),
                }
            }
        }
    }

    /// Takes the window starting at `start` out, if kept.
    pub fn take(&mut self, start: i64) -> Option<ClosedWindowState> {
        self.windows.remove(&start)
    }

    /// Forgets the windows no correction can reach once the frontier is at `limit`: a
    /// correction's chunk time is below its window's end plus the allowance, and it is
    /// due at the end of that time's interval.
    pub fn expire(&mut self, limit: i64) {
        let (allowed, slide) = (self.allowed_lateness, self.slide);
        self.windows.retain(|_, w| {
            let last = w.end.saturating_add(allowed).saturating_sub(1);
            correction_due(last, slide) >= limit
        });
    }

    /// At the end of the input: the windows a correction can still reach from the final
    /// watermark on (one of this run's, cut short by a checkpoint, included), to keep
    /// for the next run; forgets them all.
    pub fn take_kept(&mut self, final_watermark: i64) -> Vec<KeptWindow> {
        let (allowed, slide) = (self.allowed_lateness, self.slide);
        std::mem::take(&mut self.windows)
            .into_iter()
            .filter(|(_, w)| {
                let last = w.end.saturating_add(allowed).saturating_sub(1);
                correction_due(last, slide) >= final_watermark
            })
            .map(|(start, w)| KeptWindow {
                start,
                end: w.end,
                keys: w.keys,
                accs: w.accs,
                unwritten: false,
                correction: None,
                prepacked: Default::default(),
            })
            .collect()
    }

    /// Forgets every window.
    pub fn clear(&mut self) {
        self.windows.clear();
    }
}

/// A window's rows with a correction's folded in, in key order. The window's rows come
/// first, so float sums combine in the same order on every run.
fn with_correction(
    keys: KeyRows,
    accs: Vec<Accumulator>,
    correction_keys: KeyRows,
    correction_accs: Vec<Accumulator>,
) -> (KeyRows, Vec<Accumulator>) {
    let part = |from, keys, accs| PartialWindow {
        start: 0,
        end: 0,
        target: 0,
        from,
        correction: None,
        keys,
        accs,
    };
    let mut merger = WindowMerger::default();
    merger.add(part(RESUMED, keys, accs));
    merger.add(part(0, correction_keys, correction_accs));
    match merger.merge() {
        Some((keys, accs)) => sorted_rows(keys, accs),
        None => (KeyRows::default(), Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{ColumnValues, Interner};
    use crate::query;
    use crate::window::aggregate::Aggregate;
    use crate::window::state::WindowState;
    use crate::window::state::tests::batch;

    const S: i64 = 1_000_000;

    /// The one window of `rows` (key, seconds, value), merged as its owner sees it.
    fn window(rows: &[(&str, i64, i64)], interner: &mut Interner) -> (KeyRows, Vec<Accumulator>) {
        let text = "CREATE TABLE r (k TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts', allowed_lateness = '1m');
             SELECT k, window_start, SUM(v) AS s FROM TUMBLE(r, ts, INTERVAL '10' SECOND) GROUP BY k, window_start";
        let plan = query::parse("t", std::path::Path::new("t.sql"), text)
            .unwrap_or_else(|e| panic!("{e}"));
        let rows: Vec<(&str, i64, i64)> = rows.iter().map(|&(k, t, v)| (k, t * S, v)).collect();
        let batch = batch(interner, &rows);
        let mut state = WindowState::new(&plan);
        let args = [Some(&batch.columns[2])];
        state.ingest(&batch, i64::MIN, None, &args, interner, &mut Vec::new());
        let part = state
            .close_until(i64::MAX, 0, 1, interner)
            .pop()
            .unwrap_or_else(|| panic!("one window"));
        (part.keys, part.accs)
    }

    fn sums(w: &ClosedWindowState, interner: &mut Interner) -> Vec<(String, i64)> {
        let order: Vec<usize> = (0..w.keys.len).collect();
        let keys = w.keys.columns[0].to_column(&order, crate::types::DataType::Text, interner);
        let sums = w.accs[0].finish(&order, interner).column.values;
        let (ColumnValues::Text(ids), ColumnValues::BigInt(sums)) = (keys.values, sums) else {
            panic!("text keys and integer sums")
        };
        ids.iter()
            .map(|&id| interner.get(id).to_owned())
            .zip(sums)
            .collect()
    }

    /// Closes the window `[0, 10 s)` holding `rows`, written as `revision`.
    fn close(
        closed: &mut ClosedWindows,
        rows: &[(&str, i64, i64)],
        revision: Option<u32>,
        interner: &mut Interner,
    ) {
        let (keys, accs) = window(rows, interner);
        let state = ClosedWindowState {
            end: 10 * S,
            keys,
            accs,
            revision,
        };
        closed.closed(0, state);
    }

    #[test]
    fn a_correction_rewrites_the_whole_window_until_the_allowance_passes() {
        let mut interner = Interner::new();
        let mut closed = ClosedWindows::new(60 * S, 10 * S);
        close(
            &mut closed,
            &[("b", 1, 10), ("a", 2, 1)],
            Some(0),
            &mut interner,
        );
        let (keys, accs) = window(&[("c", 3, 5), ("a", 4, 2)], &mut interner);
        let w = closed.correct(0, 10 * S, keys, accs, 0);
        assert_eq!(w.revision, Some(1));
        assert_eq!(
            sums(&w, &mut interner),
            vec![("a".into(), 3), ("b".into(), 10), ("c".into(), 5)]
        );
        // Written, the corrected window is kept again for later corrections.
        closed.closed(0, w);
        // A correction due at the end of the interval holding end plus allowance can
        // still come while the frontier is at that end; once past it, none.
        closed.expire(70 * S - 1);
        assert_eq!(closed.take_kept(70 * S - 1).len(), 1);
        close(&mut closed, &[("a", 1, 1)], None, &mut interner);
        closed.expire(70 * S);
        assert!(closed.take_kept(i64::MIN).is_empty());
    }

    #[test]
    fn corrections_are_due_at_the_end_of_their_slide() {
        assert_eq!(correction_due(0, 10), 9);
        assert_eq!(correction_due(9, 10), 9);
        assert_eq!(correction_due(10, 10), 19);
        assert_eq!(correction_due(-1, 10), -1);
        assert_eq!(correction_due(i64::MAX - 3, 10), i64::MAX - 1);
    }

    #[test]
    fn a_window_first_seen_in_a_correction_gets_the_next_revision() {
        let mut interner = Interner::new();
        let mut closed = ClosedWindows::new(60 * S, 10 * S);
        let (keys, accs) = window(&[("a", 1, 4)], &mut interner);
        let w = closed.correct(0, 10 * S, keys, accs, 3);
        assert_eq!(w.revision, Some(3));
        assert_eq!(sums(&w, &mut interner), vec![("a".into(), 4)]);
    }

    #[test]
    fn without_an_allowance_nothing_is_kept() {
        let mut interner = Interner::new();
        let mut closed = ClosedWindows::new(0, 10 * S);
        close(&mut closed, &[("a", 1, 4)], Some(0), &mut interner);
        assert!(closed.take_kept(i64::MIN).is_empty());
    }
}
