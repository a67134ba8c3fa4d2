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
        let disjoint = self.disjoint;
        let mut parts = self.parts.into_iter();
        let first = parts.next()?;
        let first_meta = PartialWindow {
            keys: KeyRows::default(),
            accs: Vec::new(),
            ..first
        };
        let keys = first.keys;
        let accs = first.accs;
        let mut rest = parts.peekable();
        if rest.peek().is_none() {
            return Some((keys, accs));
        }
        if disjoint {
            let mut parts: Vec<PartialWindow> = std::iter::once(PartialWindow {
                keys,
                accs,
                ..first_meta
            })
            .chain(rest)
            .collect();
            return Some(append_disjoint(&mut parts));
        }
        // Fold every part into one set of distinct keys.
        let mut fold = Fold::like(&keys, &accs);
        fold.add(&keys, &accs);
        for part in rest {
            fold.add(&part.keys, &part.accs);
        }
        Some((fold.keys, fold.accs))
    }
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

/// Appends parts that share no key; when each is sorted, a merge of the sorted runs
/// keeps the result sorted, so the owner never sorts a big window.
fn append_disjoint(parts: &mut [PartialWindow]) -> (KeyRows, Vec<Accumulator>) {
    let mut keys = parts[0].keys.empty_like();
    let mut accs: Vec<Accumulator> = parts[0].accs.iter().map(Accumulator::empty_like).collect();
    let mut push = |part: &PartialWindow, row: usize, keys: &mut KeyRows| {
        keys.push_from(&part.keys, row);
        for (to, from) in accs.iter_mut().zip(&part.accs) {
            to.push_from(from, row);
        }
    };
    if parts.iter().all(|p| p.keys.sorted) {
        let mut next = vec![0usize; parts.len()];
        loop {
            let mut best: Option<usize> = None;
            for (i, part) in parts.iter().enumerate() {
                if next[i] >= part.keys.len {
                    continue;
                }
                best = match best {
                    Some(b) if parts[b].keys.cmp_rows(next[b], &part.keys, next[i]).is_le() => {
                        Some(b)
                    }
                    _ => Some(i),
                };
            }
            let Some(b) = best else { break };
            push(&parts[b], next[b], &mut keys);
            next[b] += 1;
        }
        keys.sorted = true;
    } else {
        for part in parts.iter() {
            for row in 0..part.keys.len {
                push(part, row, &mut keys);
            }
        }
    }
    (keys, accs)
}
