//! The open windows of one worker: which slot holds each (window, key), lateness, and
//! closing windows into partial results.
//!
//! Pure data structure: no timely, no I/O. The operator tells it the watermark each batch
//! starts under and when the frontier has passed a window; it answers with late rows,
//! newly opened windows (so the operator can hold a capability for each) and partial
//! aggregates routed to the worker that owns each key.
//!
//! Under `allowed_lateness` a reading for a window that closed before its batch started,
//! but less than the allowance ago, is a *correction*: it is aggregated apart from the
//! open windows and handed out with its batch ([`WindowState::take_corrections`]), so the
//! window's owner writes a new revision of that window. Which readings are corrections,
//! and which batch carries them, depends only on the watermarks, hence not on the worker
//! count.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::aggregate::{Accumulator, Aggregate, Input, Pairs};
use super::assign::WindowAssigner;
use super::key::{KeyMapper, KeyRows};
use crate::batch::{Batch, Column, Interner};
use crate::query::QueryPlan;

const NO_SLOT: u32 = u32::MAX;

/// A reading that arrived after its window was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LateRow {
    /// Row in its batch.
    pub row: u32,
    /// The window it missed.
    pub start: i64,
    /// End of that window.
    pub end: i64,
    /// The watermark in force when it arrived.
    pub watermark: i64,
}

/// Marks a partial that holds the state a previous run kept ([`crate::stream`]) rather
/// than a worker's share of this run.
pub const RESUMED: usize = usize::MAX;

/// The `from` of a part of a window a checkpoint kept before writing it: kept state
/// like [`RESUMED`] (merged first), but new to the outputs, so the window is written.
pub const RESUMED_UNWRITTEN: usize = usize::MAX - 1;

/// The worker of `peers` that merges every worker's partial for the key in `row`.
pub fn key_owner(keys: &KeyRows, row: usize, peers: usize) -> usize {
    (keys.hash_row(row) % peers.max(1) as u64) as usize
}

/// The rows of `keys` each worker of `peers` owns, for the workers that own some, in
/// worker order. With one worker every key is its own: no key is hashed.
pub fn rows_by_owner(keys: &KeyRows, peers: usize) -> Vec<(usize, Vec<u32>)> {
    if peers <= 1 {
        return vec![(0, (0..keys.len as u32).collect())];
    }
    let mut rows_of: Vec<Vec<u32>> = vec![Vec::new(); peers];
    for row in 0..keys.len {
        rows_of[key_owner(keys, row, peers)].push(row as u32);
    }
    rows_of
        .into_iter()
        .enumerate()
        .filter(|(_, rows)| !rows.is_empty())
        .collect()
}

/// Splits merged state (`accs` slot `i` for key row `i`) into partials bound for each
/// key's owner, marked as coming `from`.
pub fn split_by_key_owner(
    start: i64,
    end: i64,
    keys: &KeyRows,
    accs: &[Accumulator],
    from: usize,
    peers: usize,
) -> Vec<PartialWindow> {
    rows_by_owner(keys, peers)
        .into_iter()
        .map(|(target, rows)| PartialWindow {
            start,
            end,
            target,
            from,
            correction: None,
            keys: keys.select(&rows),
            accs: accs.iter().map(|a| a.gather(&rows)).collect(),
        })
        .collect()
}

/// The worker of `peers` that writes the window starting at `start`.
///
/// A window is owned whole by one worker, so its file is one file whatever the worker
/// count (its name and content do not depend on it); consecutive windows go to different
/// workers, which spreads the merging of a stream of windows.
pub fn window_owner(start: i64, peers: usize) -> usize {
    let mixed = (start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % peers.max(1) as u64) as usize
}

/// The aggregates of one worker's share of a window, bound for the worker that owns
/// the window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialWindow {
    /// Window start.
    pub start: i64,
    /// Window end.
    pub end: i64,
    /// Worker that owns these keys.
    pub target: usize,
    /// Worker that computed it, or [`RESUMED`].
    pub from: usize,
    /// For readings that arrived after the window closed (within the allowed
    /// lateness): when they are due, a time at or after the batches that carried them.
    /// Parts of one correction share it, and the owner writes them as one new revision
    /// once the frontier has passed it.
    ///
    /// Always serialized: timely encodes what crosses processes with bincode, which
    /// has no field names, so a skipped field would shift every field after it.
    pub correction: Option<i64>,
    /// Key values, one row per group.
    pub keys: KeyRows,
    /// One accumulator per aggregate, slot `i` for key row `i`.
    pub accs: Vec<Accumulator>,
}

#[derive(Debug)]
struct OpenWindow {
    start: i64,
    end: i64,
    /// Slot of each key id, `NO_SLOT` when the key has no reading in this window.
    slot_of_key: Vec<u32>,
    /// Key ids in order of first reading.
    keys: Vec<u32>,
    /// Their slots.
    slots: Vec<u32>,
}

#[derive(Debug)]
struct Slots {
    windows: Vec<OpenWindow>,
    last: usize,
    accs: Vec<Accumulator>,
    free: Vec<u32>,
    capacity: u32,
    opened: Vec<(i64, i64)>,
}

/// Readings ahead of the one being placed whose slot entry is fetched early.
const PREFETCH_AHEAD: usize = 16;

impl Slots {
    /// Starts fetching where [`Slots::slot`] will look up `key` in the window it used
    /// last: with a million keys the window's slot index is megabytes, and each lookup
    /// missed the cache.
    #[inline]
    fn prefetch(&self, key: u32) {
        if let Some(window) = self.windows.get(self.last)
            && (key as usize) < window.slot_of_key.len()
        {
            prefetch_index::prefetch_index(&window.slot_of_key, key as usize);
        }
    }

    #[inline]
    fn slot(&mut self, start: i64, end: i64, key: u32) -> u32 {
        let w = match self.windows.get(self.last) {
            Some(w) if w.start == start => self.last,
            _ => self.find_window(start, end),
        };
        let window = &mut self.windows[w];
        let k = key as usize;
        if k >= window.slot_of_key.len() {
            window.slot_of_key.resize(k + 1, NO_SLOT);
        }
        let slot = window.slot_of_key[k];
        if slot != NO_SLOT {
            return slot;
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                for a in &mut self.accs {
                    a.push_empty();
                }
                self.capacity += 1;
                self.capacity - 1
            }
        };
        let window = &mut self.windows[w];
        window.slot_of_key[k] = slot;
        window.keys.push(key);
        window.slots.push(slot);
        slot
    }

    #[cold]
    fn find_window(&mut self, start: i64, end: i64) -> usize {
        let at = self.windows.partition_point(|w| w.start < start);
        if self.windows.get(at).is_none_or(|w| w.start != start) {
            self.windows.insert(
                at,
                OpenWindow {
                    start,
                    end,
                    slot_of_key: Vec::new(),
                    keys: Vec::new(),
                    slots: Vec::new(),
                },
            );
            self.opened.push((start, end));
        }
        self.last = at;
        at
    }

    fn new(plan: &QueryPlan) -> Self {
        Slots {
            windows: Vec::new(),
            last: 0,
            accs: plan.aggregates.iter().map(Accumulator::new).collect(),
            free: Vec::new(),
            capacity: 0,
            opened: Vec::new(),
        }
    }

    /// Closes the first `count` windows (in order of start) into partials split by the
    /// worker (of `peers`) that owns each key, and frees their slots.
    fn close_first(
        &mut self,
        count: usize,
        keys: &mut KeyMapper,
        template: &KeyRows,
        (worker, peers): (usize, usize),
        interner: &Interner,
    ) -> Vec<PartialWindow> {
        let mut out = Vec::new();
        for window in self.windows.drain(..count).collect::<Vec<_>>() {
            let mut rows = template.empty_like();
            // Slots in key order when the mapper sorts (a text key); `window.slots`
            // keeps the allocation order, which resets and the free list walk faster.
            let mut key_order = Cow::Borrowed(&window.keys);
            let mut slot_order = Cow::Borrowed(&window.slots);
            if let Some(order) = keys.sorted_positions(&window.keys, interner) {
                key_order = Cow::Owned(order.iter().map(|&p| window.keys[p as usize]).collect());
                slot_order = Cow::Owned(order.iter().map(|&p| window.slots[p as usize]).collect());
                rows.sorted = true;
            }
            for (i, &key) in key_order.iter().enumerate() {
                let ahead = |n: usize| key_order.get(i + n).copied();
                keys.prefetch_values(ahead(PREFETCH_AHEAD), ahead(2 * PREFETCH_AHEAD), interner);
                keys.push_values(key, interner, &mut rows);
            }
            let owners = rows_by_owner(&rows, peers);
            let slots_of: Vec<Vec<u32>> = owners
                .iter()
                .map(|(_, owned)| owned.iter().map(|&r| slot_order[r as usize]).collect())
                .collect();
            // Every slot of the window goes to exactly one owner, so taking them
            // empties them all for reuse; taken for all owners at once, so an aggregate
            // that defers its updates settles them once per window.
            let mut accs_of: Vec<Vec<Accumulator>> = owners
                .iter()
                .map(|_| Vec::with_capacity(self.accs.len()))
                .collect();
            for acc in &mut self.accs {
                let parts = acc.take_parts(&slots_of);
                debug_assert_eq!(parts.len(), slots_of.len(), "one state per part");
                for (accs, part) in accs_of.iter_mut().zip(parts) {
                    accs.push(part);
                }
            }
            for ((target, owned), accs) in owners.into_iter().zip(accs_of) {
                // A part with every row takes the rows as they are rather than a copy.
                let part_keys = if owned.len() == rows.len {
                    std::mem::replace(&mut rows, template.empty_like())
                } else {
                    rows.select(&owned)
                };
                out.push(PartialWindow {
                    start: window.start,
                    end: window.end,
                    target,
                    from: worker,
                    correction: None,
                    keys: part_keys,
                    accs,
                });
            }
            self.free.extend_from_slice(&window.slots);
        }
        self.last = 0;
        out
    }

    fn heap_bytes(&self) -> usize {
        let heap: usize = self.accs.iter().map(Accumulator::heap_bytes).sum();
        let per_slot: usize = self.accs.iter().map(Accumulator::bytes_per_slot).sum();
        let index: usize = self
            .windows
            .iter()
            .map(|w| w.slot_of_key.capacity() * 4 + (w.keys.capacity() + w.slots.capacity()) * 4)
            .sum();
        per_slot * self.capacity as usize + heap + index + self.free.capacity() * 4
    }
}

/// Open windows and their aggregate state.
#[derive(Debug)]
pub struct WindowState {
    assigner: WindowAssigner,
    max_out_of_orderness: i64,
    allowed_lateness: i64,
    /// Windows ending at or before it are past correcting whatever the allowance: an
    /// earlier run closed them under a smaller one and kept nothing of them.
    uncorrectable_until: i64,
    event_time: usize,
    keys: KeyMapper,
    key_template: KeyRows,
    slots: Slots,
    /// Readings of windows that closed before their batch started, within the allowance.
    corrections: Slots,
    key_ids: Vec<u32>,
    pairs: Pairs,
    correction_pairs: Pairs,
    accepted_late: usize,
}

impl WindowState {
    /// Empty state for a plan.
    pub fn new(plan: &QueryPlan) -> Self {
        WindowState {
            assigner: WindowAssigner::new(plan.window),
            max_out_of_orderness: plan.source.max_out_of_orderness,
            allowed_lateness: plan.source.allowed_lateness,
            uncorrectable_until: i64::MIN,
            event_time: plan.source.event_time,
            keys: KeyMapper::new(&plan.keys),
            key_template: KeyRows::new(&plan.keys),
            slots: Slots::new(plan),
            corrections: Slots::new(plan),
            key_ids: Vec::new(),
            pairs: Pairs::default(),
            correction_pairs: Pairs::default(),
            accepted_late: 0,
        }
    }

    /// Treats readings of windows ending at or before `end` as late whatever the
    /// allowance (see [`crate::stream::Continuation::uncorrectable_until`]).
    pub fn refuse_corrections_until(&mut self, end: i64) {
        self.uncorrectable_until = end;
    }

    /// Folds a batch into its windows.
    ///
    /// `watermark_floor` is the watermark in force at the batch's first row (from the
    /// largest event time of all earlier input); within the batch it rises with the rows
    /// before each one. A row whose window ends at or before its watermark is late and is
    /// reported in `late` instead, unless the allowed lateness has not passed since: then
    /// it joins its window if the window was still open when the batch started, or the
    /// batch's corrections if it was not. `selected[r] == false` skips a row (`WHERE`); `args`
    /// holds each aggregate's argument column (`None` for `COUNT(*)`).
    pub fn ingest(
        &mut self,
        batch: &Batch,
        watermark_floor: i64,
        selected: Option<&[bool]>,
        args: &[Option<&Column>],
        interner: &Interner,
        late: &mut Vec<LateRow>,
    ) {
        self.keys.key_ids(batch, &mut self.key_ids);
        self.pairs.clear();
        self.correction_pairs.clear();
        let assigner = self.assigner;
        let ooo = self.max_out_of_orderness;
        let ts = batch.timestamps(self.event_time);
        let first_late = late.len();
        let mut seen_max = i64::MIN;
        for (r, &t) in ts.iter().enumerate() {
            let watermark = watermark_floor.max(seen_max.saturating_sub(ooo));
            seen_max = seen_max.max(t);
            if selected.is_some_and(|s| !s[r]) {
                continue;
            }
            let key = self.key_ids[r];
            if let Some(&ahead) = self.key_ids.get(r + PREFETCH_AHEAD) {
                self.slots.prefetch(ahead);
            }
            let (slots, pairs) = (&mut self.slots, &mut self.pairs);
            assigner.for_each(t, |start, end| {
                if end <= watermark {
                    late.push(LateRow {
                        row: r as u32,
                        start,
                        end,
                        watermark,
                    });
                } else {
                    pairs.push(r as u32, slots.slot(start, end, key));
                }
            });
        }
        // Past their window's end, but maybe not past the allowance: sorted out here,
        // off the per-reading path.
        self.accepted_late = 0;
        if self.allowed_lateness > 0 {
            self.take_back_allowed(late, first_late, watermark_floor);
        }
        let input = Input {
            arg: None,
            times: ts,
            interner,
        };
        for (acc, &arg) in self.slots.accs.iter_mut().zip(args) {
            acc.update(&self.pairs, Input { arg, ..input });
        }
        if !self.correction_pairs.rows.is_empty() {
            for (acc, &arg) in self.corrections.accs.iter_mut().zip(args) {
                acc.update(&self.correction_pairs, Input { arg, ..input });
            }
        }
    }

    /// Takes back from `late[first..]` the pairs within the allowed lateness: into their
    /// window if it was still open when the batch started, into the batch's corrections
    /// otherwise.
    fn take_back_allowed(&mut self, late: &mut Vec<LateRow>, first: usize, watermark_floor: i64) {
        let (allowed, refused) = (self.allowed_lateness, self.uncorrectable_until);
        let mut still_late = first;
        for i in first..late.len() {
            let l = late[i];
            if l.end.saturating_add(allowed) <= l.watermark || l.end <= refused {
                late[still_late] = l;
                still_late += 1;
                continue;
            }
            self.accepted_late += 1;
            let key = self.key_ids[l.row as usize];
            if l.end <= watermark_floor {
                let slot = self.corrections.slot(l.start, l.end, key);
                self.correction_pairs.push(l.row, slot);
            } else {
                let slot = self.slots.slot(l.start, l.end, key);
                self.pairs.push(l.row, slot);
            }
        }
        late.truncate(still_late);
    }

    /// (reading, window) pairs of the last batch ingested that came after the
    /// watermark had passed their window's end, within the allowance.
    pub fn accepted_late(&self) -> usize {
        self.accepted_late
    }

    /// The corrections of the last batch ingested, as partials split by key owner and
    /// marked as due at `due` (see [`super::closed::correction_due`]).
    pub fn take_corrections(
        &mut self,
        due: i64,
        worker: usize,
        peers: usize,
        interner: &Interner,
    ) -> Vec<PartialWindow> {
        self.corrections.opened.clear();
        let count = self.corrections.windows.len();
        let mut parts = self.corrections.close_first(
            count,
            &mut self.keys,
            &self.key_template,
            (worker, peers),
            interner,
        );
        for part in &mut parts {
            part.correction = Some(due);
        }
        parts
    }

    /// Windows opened since the last call, as `(start, end)`.
    pub fn take_opened(&mut self) -> Vec<(i64, i64)> {
        std::mem::take(&mut self.slots.opened)
    }

    /// Closes every window with `end <= limit` and returns its partial aggregates, split
    /// by the worker (of `peers`) that owns each key.
    pub fn close_until(
        &mut self,
        limit: i64,
        worker: usize,
        peers: usize,
        interner: &Interner,
    ) -> Vec<PartialWindow> {
        let closing = self.slots.windows.partition_point(|w| w.end <= limit);
        self.slots.close_first(
            closing,
            &mut self.keys,
            &self.key_template,
            (worker, peers),
            interner,
        )
    }

    /// End of the earliest-ending open window.
    pub fn earliest_end(&self) -> Option<i64> {
        self.slots.windows.iter().map(|w| w.end).min()
    }

    /// Number of open (window, key) groups.
    pub fn open_groups(&self) -> usize {
        self.slots.windows.iter().map(|w| w.keys.len()).sum()
    }

    /// Bytes held for open groups: accumulators for every slot allocated (sketches with
    /// what they hold), plus the per-window key index.
    pub fn state_bytes(&self) -> usize {
        self.slots.heap_bytes() + self.corrections.heap_bytes() + self.keys.heap_bytes()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::batch::{Column, ColumnValues};
    use crate::query;
    use crate::window::aggregate::SumInt;

    fn plan(window: &str, ooo: &str) -> QueryPlan {
        let text = format!(
            "CREATE TABLE r (k TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts', max_out_of_orderness = '{ooo}');
             SELECT k, window_start, COUNT(*) AS n, SUM(v) AS s FROM {window} GROUP BY k, window_start"
        );
        query::parse("t", std::path::Path::new("t.sql"), &text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A batch of `(k TEXT, ts TIMESTAMP, v BIGINT)` rows, event times in microseconds.
    pub(crate) fn batch(interner: &mut Interner, rows: &[(&str, i64, i64)]) -> Batch {
        Batch {
            columns: vec![
                Column {
                    values: ColumnValues::Text(rows.iter().map(|r| interner.intern(r.0)).collect()),
                    validity: None,
                },
                Column {
                    values: ColumnValues::Timestamp(rows.iter().map(|r| r.1).collect()),
                    validity: None,
                },
                Column {
                    values: ColumnValues::BigInt(rows.iter().map(|r| r.2).collect()),
                    validity: None,
                },
            ],
            len: rows.len(),
        }
    }

    fn ingest(state: &mut WindowState, b: &Batch, floor: i64, interner: &Interner) -> Vec<LateRow> {
        let mut late = Vec::new();
        let args = [None, Some(&b.columns[2])];
        state.ingest(b, floor, None, &args, interner, &mut late);
        late
    }

    #[test]
    fn lateness_follows_the_floor_and_rises_within_a_batch() {
        let p = plan("TUMBLE(r, ts, INTERVAL '10' SECOND)", "2s");
        let mut interner = Interner::new();
        let mut state = WindowState::new(&p);
        let s = 1_000_000;
        // Floor at 10s: a reading in [0, 10) is late from the start. Within the batch the
        // reading at 25s raises the watermark to 23s, so the one at 15s after it is late.
        let b = batch(
            &mut interner,
            &[
                ("a", 5 * s, 1),
                ("a", 12 * s, 2),
                ("b", 25 * s, 3),
                ("a", 15 * s, 4),
                ("a", 21 * s, 5),
            ],
        );
        let late = ingest(&mut state, &b, 10 * s, &interner);
        assert_eq!(
            late,
            vec![
                LateRow {
                    row: 0,
                    start: 0,
                    end: 10 * s,
                    watermark: 10 * s
                },
                LateRow {
                    row: 3,
                    start: 10 * s,
                    end: 20 * s,
                    watermark: 23 * s
                },
            ]
        );
        assert_eq!(
            state.take_opened(),
            vec![(10 * s, 20 * s), (20 * s, 30 * s)]
        );
        assert_eq!(state.open_groups(), 3);
        let parts = state.close_until(20 * s, 0, 1, &interner);
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].keys.len, 1);
        assert_eq!(
            parts[0].accs[1],
            Accumulator::SumInt(SumInt {
                sum: vec![2],
                wraps: vec![0],
                flags: vec![1]
            })
        );
        assert_eq!(state.earliest_end(), Some(30 * s));
        // The freed slot is reused by the next new group.
        let b = batch(&mut interner, &[("c", 26 * s, 7)]);
        ingest(&mut state, &b, 23 * s, &interner);
        assert_eq!(state.slots.capacity, 3);
    }

    /// A reading at or before `QueryPlan::settled_through` the stream's latest time is
    /// late beyond the allowance in every window it falls in, as a run resumed under
    /// that time sees it: a consumed file forgotten there and fed again changes nothing.
    #[test]
    fn readings_settled_through_the_latest_time_are_late_beyond_the_allowance() {
        let s = 1_000_000;
        for window in [
            "TUMBLE(r, ts, INTERVAL '1' MINUTE)",
            "HOP(r, ts, INTERVAL '10' SECOND, INTERVAL '1' MINUTE)",
            "SESSION(r, ts, INTERVAL '25' SECOND)",
        ] {
            let text = format!(
                "CREATE TABLE r (k TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts', max_out_of_orderness = '5s', allowed_lateness = '2m');
                 SELECT k, window_start, COUNT(*) AS n, SUM(v) AS s FROM {window} GROUP BY k, window_start"
            );
            let p = query::parse("t", std::path::Path::new("t.sql"), &text)
                .unwrap_or_else(|e| panic!("{e}"));
            for latest in [3_600 * s, 3_600 * s + 7_777, 3_617 * s + 1] {
                let settled = p.settled_through(latest);
                for t in [settled, settled - 1, settled - 37 * s, settled - 60 * s] {
                    let mut interner = Interner::new();
                    let mut state = WindowState::new(&p);
                    let b = batch(&mut interner, &[("a", t, 1)]);
                    let floor = latest - 5 * s;
                    let late = ingest(&mut state, &b, floor, &interner);
                    let mut windows = 0;
                    state.assigner.for_each(t, |_, _| windows += 1);
                    assert_eq!(late.len(), windows, "{window}, {t} under {latest}");
                    assert_eq!(state.accepted_late(), 0, "{window}, {t} under {latest}");
                    assert_eq!(state.open_groups(), 0, "{window}, {t} under {latest}");
                }
                // Within the allowance of the watermark, a reading still counts.
                let mut interner = Interner::new();
                let mut state = WindowState::new(&p);
                let floor = latest - 5 * s;
                let b = batch(&mut interner, &[("a", floor - 120 * s + 1, 1)]);
                ingest(&mut state, &b, floor, &interner);
                assert!(state.accepted_late() > 0, "{window} under {latest}");
            }
        }
    }

    #[test]
    fn hopping_windows_and_owner_routing() {
        let p = plan(
            "HOP(r, ts, INTERVAL '5' SECOND, INTERVAL '10' SECOND)",
            "0s",
        );
        let mut interner = Interner::new();
        let mut state = WindowState::new(&p);
        let s = 1_000_000;
        let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
        let rows: Vec<(&str, i64, i64)> = keys.iter().map(|k| (k.as_str(), 7 * s, 1)).collect();
        let b = batch(&mut interner, &rows);
        assert!(ingest(&mut state, &b, i64::MIN, &interner).is_empty());
        assert_eq!(state.take_opened(), vec![(0, 10 * s), (5 * s, 15 * s)]);
        let parts = state.close_until(i64::MAX, 1, 3, &interner);
        // Two windows, each split over up to three key owners; every key once per window.
        assert_eq!(parts.iter().map(|p| p.keys.len).sum::<usize>(), 100);
        for part in &parts {
            assert_eq!(part.from, 1);
            for row in 0..part.keys.len {
                assert_eq!(key_owner(&part.keys, row, 3), part.target);
            }
        }
        assert_eq!(state.open_groups(), 0);
    }

    #[test]
    fn consecutive_windows_spread_over_owners() {
        let minute = 60_000_000;
        let owners: std::collections::BTreeSet<usize> =
            (0..16).map(|i| window_owner(i * minute, 4)).collect();
        assert_eq!(owners.len(), 4);
        assert!((0..16).all(|i| window_owner(i * minute, 1) == 0));
    }

    /// What crosses processes in timely's cluster mode is bincode: a part must come
    /// back as it went, with and without a correction.
    #[test]
    fn partial_windows_survive_bincode_with_and_without_a_correction() {
        let p = plan("TUMBLE(r, ts, INTERVAL '10' SECOND)", "0s");
        let mut interner = Interner::new();
        let mut state = WindowState::new(&p);
        let s = 1_000_000;
        let b = batch(
            &mut interner,
            &[("a", s, 1), ("b", 2 * s, 2), ("a", 3 * s, 3)],
        );
        ingest(&mut state, &b, i64::MIN, &interner);
        let mut parts = state.close_until(i64::MAX, 0, 2, &interner);
        assert!(!parts.is_empty());
        let corrected = PartialWindow {
            correction: Some(42 * s),
            ..parts[0].clone()
        };
        parts.push(corrected);
        for part in &parts {
            let bytes = bincode::serialize(part).unwrap_or_else(|e| panic!("{e}"));
            let back: PartialWindow =
                bincode::deserialize(&bytes).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&back, part);
        }
    }
}
