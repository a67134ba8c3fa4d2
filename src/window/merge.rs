//! The owner side of two-phase aggregation: merge the partial windows every worker sent
//! for a window into one state (its rows are computed by
//! [`crate::operators::window_rows`]).

use super::aggregate::{Accumulator, Aggregate};
use super::key::{KeyIndex, KeyRows};
use super::state::{PartialWindow, RESUMED, RESUMED_UNWRITTEN};

/// Collects the partials of one window.
#[derive(Debug, Default)]
pub struct WindowMerger {
    parts: Vec<PartialWindow>,
    fresh: bool,
    disjoint: bool,
}

/// Whether `part` is state an earlier run kept.
pub fn is_resumed(part: &PartialWindow) -> bool {
    part.from == RESUMED || part.from == RESUMED_UNWRITTEN
}

impl WindowMerger {
    /// A merger of parts that share no key (each already merged at its key's owner):
    /// merging them is appending them.
    pub fn disjoint() -> Self {
        WindowMerger {
            disjoint: true,
            ..WindowMerger::default()
        }
    }

    /// Adds one worker's partial.
    pub fn add(&mut self, part: PartialWindow) {
        self.fresh |= part.from != RESUMED;
        self.parts.push(part);
    }

    /// Groups and heap bytes of the parts an earlier run kept.
    pub fn resumed(&self) -> (usize, usize) {
        self.parts
            .iter()
            .filter(|p| is_resumed(p))
            .fold((0, 0), |(keys, bytes), p| {
                let accs: usize = p.accs.iter().map(Aggregate::heap_bytes).sum();
                (keys + p.keys.len, bytes + p.keys.heap_bytes() + accs)
            })
    }

    /// Whether this run added readings to the window (beyond what a previous run kept).
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// The parts as they came, for a merge of another kind (a session file's shares).
    pub fn into_parts(self) -> Vec<PartialWindow> {
        self.parts
    }

    /// Merges the partials: keys and accumulators with one slot per distinct key.
    pub fn merge(mut self) -> Option<(KeyRows, Vec<Accumulator>)> {
        // Merge in a fixed order (kept state first, then by worker) so that float sums
        // combine the same way on every run.
        self.parts
            .sort_by_key(|p| (p.from < RESUMED_UNWRITTEN, p.from));
        if self.parts.len() <= 1 {
            return self.parts.pop().map(|part| (part.keys, part.accs));
        }
        let parts = self.parts;
        // Parts that share no key may still hold rows of one key each (a session file's
        // sessions): their equal keys stay rows of their own.
        if let Some(merged) = merge_sorted(&parts, !self.disjoint) {
            return Some(merged);
        }
        if self.disjoint {
            return Some(append(&parts));
        }
        // Fold every part into one set of distinct keys.
        let mut fold = Fold::like(&parts[0].keys, &parts[0].accs);
        for part in &parts {
            fold.add(&part.keys, &part.accs);
        }
        Some((fold.keys, fold.accs))
    }
}

/// The part whose next row (`next[i]` of part `i`) comes first in key order, the
/// earliest part on a tie; `None` once every part is used up.
fn least_next(parts: &[PartialWindow], next: &[usize]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, part) in parts.iter().enumerate() {
        if next[i] >= part.keys.len {
            continue;
        }
        best = match best {
            Some(b) if parts[b].keys.cmp_rows(next[b], &part.keys, next[i]).is_le() => Some(b),
            _ => Some(i),
        };
    }
    best
}

/// Parts in key order merged by their sorted runs, the result in key order too, so the
/// owner never sorts a big window. With `fold`, equal keys meet as neighbours and fold
/// into one row, in the order of `parts` as a [`Fold`] folds them, but with no key
/// hashed (a [`Fold`] leaves first-seen order, to be sorted and every slot copied
/// again); without, every row stays a row. `None` when a part is not in key order (the
/// caller folds by hash, or appends).
fn merge_sorted(parts: &[PartialWindow], fold: bool) -> Option<(KeyRows, Vec<Accumulator>)> {
    if !parts.iter().all(|p| p.keys.sorted) {
        return None;
    }
    let mut keys = parts[0].keys.empty_like();
    let mut accs: Vec<Accumulator> = parts[0].accs.iter().map(Accumulator::empty_like).collect();
    let mut next = vec![0usize; parts.len()];
    while let Some(b) = least_next(parts, &next) {
        let (part, row) = (&parts[b], next[b]);
        next[b] += 1;
        let last = keys.len.checked_sub(1);
        match last.map(|last| keys.cmp_rows(last, &part.keys, row)) {
            Some(std::cmp::Ordering::Equal) if fold => {
                let at = keys.len - 1;
                for (to, from) in accs.iter_mut().zip(&part.accs) {
                    to.merge_slot(at, from, row);
                }
            }
            // A part out of key order: its equal keys need not meet.
            Some(std::cmp::Ordering::Greater) => return None,
            _ => {
                keys.push_from(&part.keys, row);
                for (to, from) in accs.iter_mut().zip(&part.accs) {
                    to.push_from(from, row);
                }
            }
        }
    }
    keys.sorted = true;
    Some((keys, accs))
}

/// Rows folded into one slot per distinct key.
struct Fold {
    index: KeyIndex,
    keys: KeyRows,
    accs: Vec<Accumulator>,
}

impl Fold {
    /// Empty, for rows shaped like `keys` and `accs`.
    fn like(keys: &KeyRows, accs: &[Accumulator]) -> Self {
        Fold {
            index: KeyIndex::default(),
            keys: keys.empty_like(),
            accs: accs.iter().map(Accumulator::empty_like).collect(),
        }
    }

    /// Folds every row of `keys` and `accs` in.
    fn add(&mut self, keys: &KeyRows, accs: &[Accumulator]) {
        for row in 0..keys.len {
            let (at, new) = self.index.find_or_insert(&mut self.keys, keys, row);
            for (to, from) in self.accs.iter_mut().zip(accs) {
                if new {
                    to.push_from(from, row);
                } else {
                    to.merge_slot(at, from, row);
                }
            }
        }
    }
}

/// Rows with equal keys merged into one: after a registry join has mapped many rows of
/// a window to one key.
pub fn regroup(keys: &KeyRows, accs: &[Accumulator]) -> (KeyRows, Vec<Accumulator>) {
    let mut fold = Fold::like(keys, accs);
    fold.add(keys, accs);
    (fold.keys, fold.accs)
}

/// Rows in key order: `keys` sorted, and every accumulator's slots with them.
pub fn sorted_rows(keys: KeyRows, accs: Vec<Accumulator>) -> (KeyRows, Vec<Accumulator>) {
    if keys.sorted {
        return (keys, accs);
    }
    let order: Vec<u32> = keys.sorted_order().into_iter().map(|r| r as u32).collect();
    let mut keys = keys.select(&order);
    keys.sorted = true;
    let accs = accs.iter().map(|a| a.gather(&order)).collect();
    (keys, accs)
}

/// Parts that share no key, one after the other (parts in key order go through
/// [`merge_sorted`]).
fn append(parts: &[PartialWindow]) -> (KeyRows, Vec<Accumulator>) {
    let mut keys = parts[0].keys.empty_like();
    let mut accs: Vec<Accumulator> = parts[0].accs.iter().map(Accumulator::empty_like).collect();
    for part in parts {
        for row in 0..part.keys.len {
            keys.push_from(&part.keys, row);
            for (to, from) in accs.iter_mut().zip(&part.accs) {
                to.push_from(from, row);
            }
        }
    }
    (keys, accs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Interner;
    use crate::query::{self, QueryPlan};
    use crate::window::state::{WindowState, tests::batch};

    fn plan() -> QueryPlan {
        let text = "CREATE TABLE r (k TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts');
             SELECT k, window_start, COUNT(*) AS n, SUM(v) AS s
             FROM TUMBLE(r, ts, INTERVAL '10' SECOND) GROUP BY k, window_start";
        query::parse("t", std::path::Path::new("t.sql"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One window's part from each of three workers, most keys in two or three parts:
    /// merged by their sorted runs, in key order and equal to a fold by hash, which a
    /// part out of key order falls back to, and to one worker that saw every reading.
    #[test]
    fn sorted_parts_fold_as_a_fold_by_hash_does_and_stay_in_key_order() {
        let p = plan();
        let mut interner = Interner::new();
        let mut everything = WindowState::new(&p);
        let mut parts = Vec::new();
        for worker in 0..3usize {
            let rows: Vec<(String, i64, i64)> = (0..40usize)
                .filter(|k| (k + worker) % 3 != 0)
                .map(|k| {
                    (
                        format!("k{:02}", k * 7 % 40),
                        1_000_000,
                        (k * worker + 1) as i64,
                    )
                })
                .collect();
            let rows: Vec<(&str, i64, i64)> =
                rows.iter().map(|r| (r.0.as_str(), r.1, r.2)).collect();
            let b = batch(&mut interner, &rows);
            let args = [None, Some(&b.columns[2])];
            let mut late = Vec::new();
            let mut state = WindowState::new(&p);
            for s in [&mut state, &mut everything] {
                s.ingest(&b, i64::MIN, None, &args, &interner, &mut late);
            }
            for mut part in state.close_until(i64::MAX, worker, 1, &interner) {
                (part.keys, part.accs) = sorted_rows(part.keys, part.accs);
                parts.push(part);
            }
        }
        let merged = |parts: &[PartialWindow]| {
            let mut merger = WindowMerger::default();
            for part in parts.iter().rev() {
                merger.add(part.clone());
            }
            merger
                .merge()
                .unwrap_or_else(|| panic!("three parts merge"))
        };
        let (keys, accs) = merged(&parts);
        assert!(keys.sorted);
        let mut by_hash = Fold::like(&parts[0].keys, &parts[0].accs);
        for part in &parts {
            by_hash.add(&part.keys, &part.accs);
        }
        assert_eq!(
            (keys.clone(), accs.clone()),
            sorted_rows(by_hash.keys, by_hash.accs)
        );
        let mut out_of_order = parts.clone();
        out_of_order[1].keys.sorted = false;
        let (k, a) = merged(&out_of_order);
        assert!(!k.sorted, "a part out of key order is folded by hash");
        assert_eq!(sorted_rows(k, a), (keys.clone(), accs.clone()));
        let whole = everything.close_until(i64::MAX, 0, 1, &interner);
        let [one] = &whole[..] else {
            panic!("one window: {whole:?}")
        };
        assert_eq!(
            sorted_rows(one.keys.clone(), one.accs.clone()),
            (keys, accs)
        );
    }
}
