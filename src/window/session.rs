//! Session windows at each key's owner: gap-sized panes stitched into sessions.
//!
//! `SESSION(t, ts, gap)` is computed in two steps. Readings are aggregated into panes
//! of one gap, exactly like `TUMBLE(t, ts, gap)` (so lateness, merging partials over
//! workers and the kept state of a pane are those of any window), plus the first and
//! last event time of each (pane, key). The key's owner then stitches the merged panes,
//! in pane order, into sessions: a pane row joins every session of its key that it
//! comes within `gap` of, merging them when it bridges two.
//!
//! Two readings less than a gap apart lie in the same pane or in neighbouring ones, so
//! once every pane ending at or before `p` (a pane boundary) is stitched, a session
//! ending at or before `p` can neither grow nor merge: it is final. Final sessions are
//! collected into the file of their end ([`WindowSpec::session_file_span`]), written
//! when the watermark has passed that file's end. Everything here depends only on the
//! merged panes, so sessions are the same for any worker count.
//!
//! Under `allowed_lateness`, a pane can take readings after its sessions were written (a
//! correction, [`Sessions::correct`]). The sessions of a written file stay here while a
//! correction can still reach them: one can grow a written session, create one, or
//! bridge two (the merged session replaces both, and may end in another file). Every
//! file whose sessions changed is sent again, whole, as this worker's share of the file's
//! next revision ([`Sessions::written_share`]); the file's owner replaces this worker's
//! rows with it, so a superseded session leaves the latest view.
//!
//! [`WindowSpec::session_file_span`]: crate::query::WindowSpec::session_file_span

use std::collections::{BTreeMap, BTreeSet};

use super::aggregate::{Accumulator, Aggregate};
use super::closed::correction_due;
use super::key::{KeyIndex, KeyRows};
use super::state::{PartialWindow, key_owner};
use crate::query::QueryPlan;

/// One session of a key: its bounds and the slot holding its aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Session {
    /// First reading.
    first: i64,
    /// Last reading.
    last: i64,
    slot: u32,
    /// The file start a previous run kept it under, while it is unchanged since.
    kept_in: Option<i64>,
}

/// How a file's sessions relate to what the outputs already hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// Its sessions changed since a previous run wrote it (or it is new).
    Changed,
    /// A checkpoint kept it without writing it: it must be written.
    Unwritten,
    /// Exactly what a previous run wrote and kept.
    AsKept,
}

/// The sessions ending in one file's span, sorted by key and then start.
#[derive(Debug)]
pub struct SessionFile {
    /// Start of the span (the file's name).
    pub start: i64,
    /// End of the span.
    pub end: i64,
    /// One row per session.
    pub keys: KeyRows,
    /// The sessions' aggregates, slot `i` for row `i`.
    pub accs: Vec<Accumulator>,
    /// Whether it has to be written.
    pub freshness: Freshness,
}

/// The sessions of the keys one worker owns.
#[derive(Debug)]
pub struct Sessions {
    gap: i64,
    span: i64,
    first_agg: usize,
    last_agg: usize,
    /// Every key seen, by id.
    keys: KeyRows,
    index: KeyIndex,
    /// Open sessions by key id, sorted by `first`.
    open: Vec<Vec<Session>>,
    /// `(end, key)` of open sessions in buckets of one gap of end times (a bucket is
    /// put in order when it comes due); entries whose session has since grown or merged
    /// are skipped when they come up. Buckets rather than one heap: a million keys'
    /// ends made every pop a walk of cache misses down the heap.
    ends: BTreeMap<i64, Vec<(i64, u32)>>,
    accs: Vec<Accumulator>,
    free: Vec<u32>,
    /// Final sessions by the start of their file's span.
    closed: BTreeMap<i64, Vec<(u32, Session)>>,
    /// Files a previous run kept (unwritten by a checkpoint when true), which are
    /// written again once complete if anything in them changed.
    kept: BTreeMap<i64, bool>,
    /// Files whose sessions changed in this run.
    changed: BTreeSet<i64>,
    /// How long after its end a pane still takes corrections (zero: never).
    allowed_lateness: i64,
    /// Sessions of files already sent, by file start, while a correction can reach them.
    written: BTreeMap<i64, Vec<(u32, Session)>>,
}

impl Sessions {
    /// No sessions, for a `SESSION` plan (`None` for another window).
    pub fn new(plan: &QueryPlan) -> Option<Self> {
        let (first_agg, last_agg, gap) = plan.session_times()?;
        Some(Sessions {
            gap,
            span: plan.window.file_span(),
            first_agg,
            last_agg,
            keys: KeyRows::new(&plan.keys),
            index: KeyIndex::default(),
            open: Vec::new(),
            ends: BTreeMap::new(),
            accs: plan.aggregates.iter().map(Accumulator::new).collect(),
            free: Vec::new(),
            closed: BTreeMap::new(),
            kept: BTreeMap::new(),
            changed: Default::default(),
            allowed_lateness: plan.source.allowed_lateness,
            written: BTreeMap::new(),
        })
    }

    /// The pane size: sessions are final once the panes up to a multiple of it are in.
    pub fn gap(&self) -> i64 {
        self.gap
    }

    /// The start of the file a session ending at `end` belongs to.
    fn file_of(&self, end: i64) -> i64 {
        end.div_euclid(self.span).saturating_mul(self.span)
    }

    fn alloc(&mut self) -> u32 {
        match self.free.pop() {
            Some(s) => s,
            None => {
                for a in &mut self.accs {
                    a.push_empty();
                }
                (self.accs[0].len() - 1) as u32
            }
        }
    }

    fn release(&mut self, slots: &[u32]) {
        for a in &mut self.accs {
            a.reset_slots(slots);
        }
        self.free.extend_from_slice(slots);
    }

    fn key_id(&mut self, keys: &KeyRows, row: usize) -> u32 {
        let (id, new) = self.index.find_or_insert(&mut self.keys, keys, row);
        if new {
            self.open.push(Vec::new());
        }
        id as u32
    }

    fn mark_changed(&mut self, kept_in: Option<i64>) {
        if let Some(file) = kept_in {
            self.changed.insert(file);
        }
    }

    /// Takes back what a previous run kept: the sessions of file `start` whose keys
    /// `owned` says this worker owns. Every worker registers the file itself, so it is
    /// written again, even empty, when the sessions in it have moved on.
    pub fn resume(
        &mut self,
        start: i64,
        keys: &KeyRows,
        accs: &[Accumulator],
        unwritten: bool,
        owned: impl Fn(&KeyRows, usize) -> bool,
    ) {
        *self.kept.entry(start).or_default() |= unwritten;
        for (key, mut session) in self.take_back(keys, accs, owned) {
            session.kept_in = Some(start);
            let open = &mut self.open[key as usize];
            let at = open.partition_point(|s| s.first < session.first);
            // Most keys hold one session at a time: room for exactly what is there.
            open.reserve_exact(1);
            open.insert(at, session);
            self.push_end(session.last.saturating_add(self.gap), key);
        }
    }

    /// The kept sessions (`keys`, `accs`) of the keys `owned` says this worker owns, each
    /// in a slot of its own.
    fn take_back(
        &mut self,
        keys: &KeyRows,
        accs: &[Accumulator],
        owned: impl Fn(&KeyRows, usize) -> bool,
    ) -> Vec<(u32, Session)> {
        let mut taken = Vec::new();
        for row in 0..keys.len {
            if !owned(keys, row) {
                continue;
            }
            let Some((first, last)) = self.bounds(accs, row) else {
                continue;
            };
            let key = self.key_id(keys, row);
            let slot = self.alloc();
            for (to, from) in self.accs.iter_mut().zip(accs) {
                to.merge_slot(slot as usize, from, row);
            }
            let session = Session {
                first,
                last,
                slot,
                kept_in: None,
            };
            taken.push((key, session));
        }
        taken
    }

    /// The first and last reading time of row `row` of merged pane rows; `None` for a row
    /// without readings.
    fn bounds(&self, accs: &[Accumulator], row: usize) -> Option<(i64, i64)> {
        Some((
            accs[self.first_agg].int_extreme(row)?,
            accs[self.last_agg].int_extreme(row)?,
        ))
    }

    /// Stitches the merged rows of one pane (panes come in order of their end).
    pub fn add_pane(&mut self, keys: &KeyRows, accs: &[Accumulator]) {
        let gap = self.gap;
        for row in 0..keys.len {
            let Some((first, last)) = self.bounds(accs, row) else {
                continue;
            };
            let key = self.key_id(keys, row);
            let open = &mut self.open[key as usize];
            // Sessions this row comes within a gap of: a run, since they are disjoint
            // and sorted.
            let from = open.partition_point(|s| s.last.saturating_add(gap) <= first);
            let to = open.partition_point(|s| s.first < last.saturating_add(gap));
            let joined: Vec<Session> = open.drain(from..to.max(from)).collect();
            let session = self.join(&joined, (first, last), accs, row);
            let open = &mut self.open[key as usize];
            open.reserve_exact(1);
            open.insert(from, session);
            self.push_end(session.last.saturating_add(gap), key);
        }
    }

    /// The session a pane row (`row` of `accs`, its readings from `first` to `last`)
    /// and the sessions it reaches (`joined`, by start) make: the row merges into the
    /// earliest's slot, then the others in order, so aggregates combine alike on every
    /// worker count.
    fn join(
        &mut self,
        joined: &[Session],
        (first, last): (i64, i64),
        accs: &[Accumulator],
        row: usize,
    ) -> Session {
        let slot = match joined.first() {
            Some(s) => s.slot,
            None => self.alloc(),
        };
        for (to, from) in self.accs.iter_mut().zip(accs) {
            to.merge_slot(slot as usize, from, row);
        }
        let mut session = Session {
            first,
            last,
            slot,
            kept_in: None,
        };
        for s in joined {
            session.first = session.first.min(s.first);
            session.last = session.last.max(s.last);
            self.mark_changed(s.kept_in);
        }
        let merged: Vec<u32> = joined.iter().skip(1).map(|s| s.slot).collect();
        for &other in &merged {
            for acc in &mut self.accs {
                let part = acc.gather(&[other]);
                acc.merge_slot(slot as usize, &part, 0);
            }
        }
        self.release(&merged);
        session
    }

    /// Makes every session ending at or before `limit` final (`limit` a pane boundary
    /// up to which every pane is stitched).
    pub fn close_until(&mut self, limit: i64) {
        let last_bucket = limit.div_euclid(self.gap.max(1));
        while let Some(mut bucket) = self.ends.first_entry() {
            if *bucket.key() > last_bucket {
                break;
            }
            // In order of (end, key), as one queue over every bucket would give them.
            bucket.get_mut().sort_unstable();
            let due = bucket.get().partition_point(|&(end, _)| end <= limit);
            let whole = due == bucket.get().len();
            let ends: Vec<(i64, u32)> = if whole {
                bucket.remove()
            } else {
                bucket.get_mut().drain(..due).collect()
            };
            for (end, key) in ends {
                let open = &mut self.open[key as usize];
                let Some(at) = open
                    .iter()
                    .position(|s| s.last.saturating_add(self.gap) == end)
                else {
                    continue;
                };
                let session = open.remove(at);
                if open.is_empty() {
                    // A key that went quiet holds no allocation.
                    open.shrink_to_fit();
                }
                self.close(key, session);
            }
            if !whole {
                break;
            }
        }
    }

    /// Queues the end of `key`'s session ending at `end`.
    fn push_end(&mut self, end: i64, key: u32) {
        self.ends
            .entry(end.div_euclid(self.gap.max(1)))
            .or_default()
            .push((end, key));
    }

    fn close(&mut self, key: u32, session: Session) {
        let file = self.file_of(session.last.saturating_add(self.gap));
        if session.kept_in != Some(file) {
            self.changed.insert(file);
            self.mark_changed(session.kept_in);
        }
        self.closed.entry(file).or_default().push((key, session));
    }

    /// Ends every open session where it stands: the end of the input, where what is
    /// open is written as it stands and kept.
    pub fn close_all(&mut self) {
        self.ends.clear();
        for key in 0..self.open.len() {
            for session in std::mem::take(&mut self.open[key]) {
                self.close(key as u32, session);
            }
        }
    }

    /// The files whose span ends at or before `limit`, every session in them final.
    /// Under an allowed lateness their sessions stay, as written, for corrections.
    pub fn take_files(&mut self, limit: i64) -> Vec<SessionFile> {
        self.take_until(limit, self.allowed_lateness > 0)
    }

    /// Every file left, after [`Sessions::close_all`] at the end of the input: what is
    /// open, written as it stands.
    pub fn take_open_files(&mut self) -> Vec<SessionFile> {
        self.take_until(i64::MAX, false)
    }

    fn take_until(&mut self, limit: i64, retain: bool) -> Vec<SessionFile> {
        let mut starts: Vec<i64> = self
            .closed
            .keys()
            .chain(self.kept.keys())
            .copied()
            .filter(|&s| s.saturating_add(self.span) <= limit)
            .collect();
        starts.sort_unstable();
        starts.dedup();
        starts
            .into_iter()
            .map(|s| self.take_file(s, retain))
            .collect()
    }

    fn take_file(&mut self, start: i64, retain: bool) -> SessionFile {
        let sessions = self.closed.remove(&start).unwrap_or_default();
        let unwritten = self.kept.remove(&start);
        let freshness = if self.changed.remove(&start) || unwritten.is_none() {
            Freshness::Changed
        } else if unwritten == Some(true) {
            Freshness::Unwritten
        } else {
            Freshness::AsKept
        };
        let (keys, accs, slots) = self.rows_of(&sessions);
        if retain {
            if !sessions.is_empty() {
                self.written.entry(start).or_default().extend(sessions);
            }
        } else {
            self.release(&slots);
        }
        SessionFile {
            start,
            end: start.saturating_add(self.span),
            keys,
            accs,
            freshness,
        }
    }

    /// The rows of `sessions`, sorted by key and then start, and the slots they come from.
    fn rows_of(&self, sessions: &[(u32, Session)]) -> (KeyRows, Vec<Accumulator>, Vec<u32>) {
        let mut rows = self.keys.empty_like();
        for (key, _) in sessions {
            rows.push_from(&self.keys, *key as usize);
        }
        let order = rows.sorted_order_then(|a, b| sessions[a].1.first.cmp(&sessions[b].1.first));
        let order32: Vec<u32> = order.iter().map(|&i| i as u32).collect();
        let mut keys = rows.select(&order32);
        keys.sorted = true;
        let slots: Vec<u32> = order.iter().map(|&i| sessions[i].1.slot).collect();
        let accs = self.accs.iter().map(|a| a.gather(&slots)).collect();
        (keys, accs, slots)
    }

    /// Applies a correction: the rows of a pane that took readings after the sessions
    /// ending at or before `boundary` became final (some of them written). A row joins
    /// every session of its key it comes within a gap of, wherever that session is
    /// (open, final, written), and the merged session goes where its end puts it.
    /// Returns the written files whose sessions changed: each must be sent again.
    pub fn correct(
        &mut self,
        keys: &KeyRows,
        accs: &[Accumulator],
        boundary: i64,
    ) -> BTreeSet<i64> {
        let gap = self.gap;
        let mut dirty = BTreeSet::new();
        for row in 0..keys.len {
            let Some((first, last)) = self.bounds(accs, row) else {
                continue;
            };
            let key = self.key_id(keys, row);
            let touches = |s: &Session| {
                s.last.saturating_add(gap) > first && s.first < last.saturating_add(gap)
            };
            // Every session of the key the row reaches: open, final, or written.
            let mut joined: Vec<Session> = Vec::new();
            let open = &mut self.open[key as usize];
            let from = open.partition_point(|s| s.last.saturating_add(gap) <= first);
            let to = open.partition_point(|s| s.first < last.saturating_add(gap));
            joined.extend(open.drain(from..to.max(from)));
            for sessions in self.closed.values_mut() {
                sessions.retain(|(k, s)| {
                    let hit = *k == key && touches(s);
                    if hit {
                        joined.push(*s);
                    }
                    !hit
                });
            }
            for (&file, sessions) in self.written.iter_mut() {
                sessions.retain(|(k, s)| {
                    let hit = *k == key && touches(s);
                    if hit {
                        joined.push(*s);
                        dirty.insert(file);
                    }
                    !hit
                });
            }
            self.closed.retain(|_, v| !v.is_empty());
            self.written.retain(|_, v| !v.is_empty());
            // Merged in order of start, into the earliest's slot: the same order on
            // every worker count.
            joined.sort_by_key(|s| s.first);
            let session = self.join(&joined, (first, last), accs, row);
            let end = session.last.saturating_add(gap);
            if end > boundary {
                // It can still grow with the panes to come.
                let open = &mut self.open[key as usize];
                let at = open.partition_point(|s| s.first < session.first);
                open.reserve_exact(1);
                open.insert(at, session);
                self.push_end(end, key);
            } else {
                let file = self.file_of(end);
                self.changed.insert(file);
                if file.saturating_add(self.span) <= boundary {
                    self.written.entry(file).or_default().push((key, session));
                    dirty.insert(file);
                } else {
                    self.closed.entry(file).or_default().push((key, session));
                }
            }
        }
        dirty
    }

    /// This worker's share of written file `start` as it now stands, to send again.
    pub fn written_share(&self, start: i64) -> SessionFile {
        let sessions = self.written.get(&start).map_or(&[][..], Vec::as_slice);
        let (keys, accs, _) = self.rows_of(sessions);
        SessionFile {
            start,
            end: start.saturating_add(self.span),
            keys,
            accs,
            freshness: Freshness::Changed,
        }
    }

    /// The last time a correction of the sessions of the file starting at `start` can
    /// be due: every pane that reaches them ends by the file's end.
    fn correctable_until(&self, start: i64) -> i64 {
        let end = start.saturating_add(self.span);
        correction_due(
            end.saturating_add(self.allowed_lateness).saturating_sub(1),
            self.gap,
        )
    }

    /// Forgets the written sessions no correction due at `limit` or later can reach.
    pub fn expire_written(&mut self, limit: i64) {
        let expired: Vec<i64> = self
            .written
            .keys()
            .copied()
            .filter(|&start| self.correctable_until(start) < limit)
            .collect();
        for start in expired {
            if let Some(sessions) = self.written.remove(&start) {
                let slots: Vec<u32> = sessions.iter().map(|(_, s)| s.slot).collect();
                self.release(&slots);
            }
        }
    }

    /// At the end of the input: this worker's share of every written file a correction
    /// can still reach after `final_watermark`, to keep for the next run.
    pub fn take_written(&mut self, final_watermark: i64) -> Vec<SessionFile> {
        let starts: Vec<i64> = self.written.keys().copied().collect();
        let kept = starts
            .into_iter()
            .filter(|&start| self.correctable_until(start) >= final_watermark)
            .map(|start| self.written_share(start))
            .collect();
        self.expire_written(i64::MAX);
        kept
    }

    /// Takes back the written sessions of file `start` a previous run kept (one entry
    /// per worker that kept a share), those whose keys `owned` says this worker owns.
    /// Once every entry is in, [`Sessions::written_share`] is this worker's share, for
    /// the file's owner to hold again as the file's written rows.
    pub fn resume_written(
        &mut self,
        start: i64,
        keys: &KeyRows,
        accs: &[Accumulator],
        owned: impl Fn(&KeyRows, usize) -> bool,
    ) {
        let taken = self.take_back(keys, accs, owned);
        self.written.entry(start).or_default().extend(taken);
    }

    /// Open sessions, those waiting for their file, and written ones kept for
    /// corrections, for the state gauges.
    pub fn held(&self) -> usize {
        self.open.iter().map(Vec::len).sum::<usize>()
            + self.closed.values().map(Vec::len).sum::<usize>()
            + self.written.values().map(Vec::len).sum::<usize>()
    }

    /// Bytes held: every slot's aggregates (sketches with what they hold), the sessions,
    /// the queue of their ends, and every key seen with its index.
    pub fn state_bytes(&self) -> usize {
        let slots = self.accs.first().map_or(0, Accumulator::len);
        let per_slot: usize = self.accs.iter().map(Accumulator::bytes_per_slot).sum();
        let heap: usize = self.accs.iter().map(Accumulator::heap_bytes).sum();
        let session = std::mem::size_of::<Session>();
        let sessions: usize = self
            .open
            .iter()
            .map(|s| std::mem::size_of::<Vec<Session>>() + s.capacity() * session)
            .sum();
        let closed: usize = self
            .closed
            .values()
            .chain(self.written.values())
            .map(|c| c.capacity() * std::mem::size_of::<(u32, Session)>())
            .sum();
        per_slot * slots
            + heap
            + sessions
            + closed
            + self
                .ends
                .values()
                .map(|b| b.capacity() * std::mem::size_of::<(i64, u32)>())
                .sum::<usize>()
            + self.free.capacity() * 4
            + self.keys.heap_bytes()
            + self.index.heap_bytes()
    }
}

/// A written file's rows (`base`) with the shares of a correction (`parts`, one per
/// stitcher that sent its share again) in place of the rows of the keys those stitchers
/// own under `peers` workers; sorted by key and then session start (aggregate
/// `first_agg`), as a file's rows are.
pub fn replace_shares(
    base: Option<(KeyRows, Vec<Accumulator>)>,
    parts: &[PartialWindow],
    peers: usize,
    first_agg: usize,
) -> (KeyRows, Vec<Accumulator>) {
    let senders: BTreeSet<usize> = parts.iter().map(|p| p.from).collect();
    let (mut keys, mut accs): (KeyRows, Vec<Accumulator>) = match (&base, parts.first()) {
        (Some((k, a)), _) => (
            k.empty_like(),
            a.iter().map(Accumulator::empty_like).collect(),
        ),
        (None, Some(p)) => (
            p.keys.empty_like(),
            p.accs.iter().map(Accumulator::empty_like).collect(),
        ),
        (None, None) => return (KeyRows::default(), Vec::new()),
    };
    let mut push = |from_keys: &KeyRows, from_accs: &[Accumulator], row: usize| {
        keys.push_from(from_keys, row);
        for (to, from) in accs.iter_mut().zip(from_accs) {
            to.push_from(from, row);
        }
    };
    if let Some((k, a)) = &base {
        for row in 0..k.len {
            if !senders.contains(&key_owner(k, row, peers)) {
                push(k, a, row);
            }
        }
    }
    for part in parts {
        for row in 0..part.keys.len {
            push(&part.keys, &part.accs, row);
        }
    }
    let start_of = |row: usize| accs[first_agg].int_extreme(row);
    let order: Vec<u32> = keys
        .sorted_order_then(|a, b| start_of(a).cmp(&start_of(b)))
        .into_iter()
        .map(|r| r as u32)
        .collect();
    let mut sorted = keys.select(&order);
    sorted.sorted = true;
    let accs = accs.iter().map(|a| a.gather(&order)).collect();
    (sorted, accs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{ColumnValues, Interner};
    use crate::query;
    use crate::window::state::WindowState;
    use crate::window::state::tests::batch;

    const S: i64 = 1_000_000;

    fn plan() -> QueryPlan {
        let text = "CREATE TABLE r (k TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts', max_out_of_orderness = '1m');
             SELECT k, window_start, window_end, COUNT(*) AS n, SUM(v) AS s
             FROM SESSION(r, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end";
        query::parse("t", std::path::Path::new("t.sql"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Panes of `rows` (key, seconds, value) as one worker closes them, in order.
    fn panes(plan: &QueryPlan, rows: &[(&str, i64, i64)]) -> Vec<(KeyRows, Vec<Accumulator>)> {
        let mut interner = Interner::new();
        let rows: Vec<(&str, i64, i64)> = rows.iter().map(|&(k, t, v)| (k, t * S, v)).collect();
        let batch = batch(&mut interner, &rows);
        let mut state = WindowState::new(plan);
        let mut late = Vec::new();
        let ts = Some(&batch.columns[1]);
        let args = [None, Some(&batch.columns[2]), ts, ts];
        state.ingest(&batch, i64::MIN, None, &args, &interner, &mut late);
        assert!(late.is_empty());
        let mut parts = state.close_until(i64::MAX, 0, 1, &interner);
        parts.sort_by_key(|p| p.end);
        parts.into_iter().map(|p| (p.keys, p.accs)).collect()
    }

    /// (key, first, last, count, sum) of every row of `files`, in file order.
    fn rows(files: &[SessionFile]) -> Vec<(String, i64, i64, i64, i64)> {
        let mut interner = Interner::new();
        let mut out = Vec::new();
        for f in files {
            let order: Vec<usize> = (0..f.keys.len).collect();
            let keys =
                f.keys.columns[0].to_column(&order, crate::types::DataType::Text, &mut interner);
            let ColumnValues::Text(ids) = keys.values else {
                panic!("text keys")
            };
            let n = f.accs[0].finish(&order, &mut interner).column.values;
            let s = f.accs[1].finish(&order, &mut interner).column.values;
            let (ColumnValues::BigInt(n), ColumnValues::BigInt(s)) = (n, s) else {
                panic!("counts and sums")
            };
            for r in 0..f.keys.len {
                out.push((
                    String::from_utf8_lossy(interner.get_bytes(ids[r])).into_owned(),
                    f.accs[2].int_extreme(r).unwrap_or(0) / S,
                    f.accs[3].int_extreme(r).unwrap_or(0) / S,
                    n[r],
                    s[r],
                ));
            }
        }
        out
    }

    #[test]
    fn a_session_grows_over_panes_and_is_final_once_its_gap_has_passed() {
        let plan = plan();
        let mut sessions = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        let panes = panes(
            &plan,
            &[
                ("a", 1, 1),
                ("a", 5, 2),
                ("a", 28, 4),
                ("b", 3, 10),
                ("a", 19, 8),
                ("a", 12, 16),
            ],
        );
        for (keys, accs) in &panes {
            sessions.add_pane(keys, accs);
        }
        // Ends: a at 38, b at 13. Only b is final at 30, and the file of 0..60 is not
        // complete before 60.
        sessions.close_until(30 * S);
        assert_eq!(sessions.held(), 2);
        assert!(sessions.take_files(30 * S).is_empty());
        sessions.close_until(40 * S);
        let files = sessions.take_files(60 * S);
        assert_eq!(
            rows(&files),
            vec![("a".into(), 1, 28, 5, 31), ("b".into(), 3, 3, 1, 10)]
        );
        assert_eq!(files[0].freshness, Freshness::Changed);
        assert_eq!(sessions.held(), 0);
    }

    #[test]
    fn a_reading_that_bridges_two_kept_sessions_merges_them() {
        let plan = plan();
        let mut first = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        for (keys, accs) in &panes(&plan, &[("a", 5, 1), ("a", 22, 2)]) {
            first.add_pane(keys, accs);
        }
        first.close_all();
        let kept = first.take_files(i64::MAX);
        assert_eq!(rows(&kept).len(), 2);
        let mut next = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        for f in &kept {
            next.resume(f.start, &f.keys, &f.accs, false, |_, _| true);
        }
        for (keys, accs) in &panes(&plan, &[("a", 13, 4)]) {
            next.add_pane(keys, accs);
        }
        next.close_until(60 * S);
        let files = next.take_files(60 * S);
        assert_eq!(rows(&files), vec![("a".into(), 5, 22, 3, 7)]);
        assert_eq!(files[0].freshness, Freshness::Changed);
    }

    #[test]
    fn a_correction_bridging_two_written_sessions_leaves_one_in_the_share_sent_again() {
        let mut plan = plan();
        plan.source.allowed_lateness = 120 * S;
        let mut sessions = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        for (keys, accs) in &panes(&plan, &[("a", 1, 1), ("a", 14, 2), ("b", 3, 5)]) {
            sessions.add_pane(keys, accs);
        }
        sessions.close_until(60 * S);
        let files = sessions.take_files(60 * S);
        assert_eq!(rows(&files).len(), 3);
        // a's reading at 7 s comes within the gap of both of a's written sessions.
        let correction = panes(&plan, &[("a", 7, 4)]);
        let (keys, accs) = &correction[0];
        let dirty = sessions.correct(keys, accs, 60 * S);
        assert_eq!(dirty.into_iter().collect::<Vec<_>>(), vec![0]);
        assert_eq!(
            rows(&[sessions.written_share(0)]),
            vec![("a".into(), 1, 14, 3, 7), ("b".into(), 3, 3, 1, 5)]
        );
        // Kept for corrections until none can be due, then forgotten.
        sessions.expire_written(90 * S);
        assert_eq!(sessions.held(), 2);
        sessions.expire_written(200 * S);
        assert_eq!(sessions.held(), 0);
    }

    #[test]
    fn readings_a_gap_apart_start_a_new_session() {
        let plan = plan();
        let mut sessions = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        let panes = panes(
            &plan,
            &[("a", 1, 1), ("a", 11, 2), ("a", 20, 4), ("a", 30, 8)],
        );
        for (keys, accs) in &panes {
            sessions.add_pane(keys, accs);
        }
        sessions.close_until(i64::MAX);
        assert_eq!(
            rows(&sessions.take_files(i64::MAX)),
            vec![
                ("a".into(), 1, 1, 1, 1),
                ("a".into(), 11, 20, 2, 6),
                ("a".into(), 30, 30, 1, 8)
            ]
        );
    }

    #[test]
    fn a_kept_file_is_written_again_only_when_its_sessions_change() {
        let plan = plan();
        let mut first = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        for (keys, accs) in &panes(&plan, &[("a", 1, 1), ("b", 2, 1)]) {
            first.add_pane(keys, accs);
        }
        first.close_all();
        let kept = first.take_files(i64::MAX);
        assert_eq!(kept.len(), 1);
        let resume = |s: &mut Sessions| {
            for f in &kept {
                s.resume(f.start, &f.keys, &f.accs, false, |_, _| true);
            }
        };
        // Nothing new: the file is as kept.
        let mut same = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        resume(&mut same);
        same.close_until(60 * S);
        let files = same.take_files(60 * S);
        assert_eq!(files[0].freshness, Freshness::AsKept);
        assert_eq!(rows(&files).len(), 2);
        // b goes on past the file's end: the file is written again without it.
        let mut grown = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        resume(&mut grown);
        for (keys, accs) in &panes(
            &plan,
            &[
                ("b", 8, 1),
                ("b", 17, 1),
                ("b", 26, 1),
                ("b", 35, 1),
                ("b", 44, 1),
                ("b", 53, 1),
            ],
        ) {
            grown.add_pane(keys, accs);
        }
        grown.close_until(60 * S);
        let files = grown.take_files(60 * S);
        assert_eq!(files[0].freshness, Freshness::Changed);
        assert_eq!(rows(&files), vec![("a".into(), 1, 1, 1, 1)]);
        assert_eq!(grown.held(), 1);
    }

    #[test]
    fn an_open_session_costs_its_aggregates_and_under_160_bytes_more() {
        let plan = plan();
        let mut sessions = Sessions::new(&plan).unwrap_or_else(|| panic!("a session plan"));
        let names: Vec<String> = (0..10_000).map(|i| format!("dev-{i:06}")).collect();
        let rows: Vec<(&str, i64, i64)> = names.iter().map(|n| (n.as_str(), 1, 1)).collect();
        for (keys, accs) in panes(&plan, &rows) {
            sessions.add_pane(&keys, &accs);
        }
        assert_eq!(sessions.held(), 10_000);
        let aggregates: usize = sessions.accs.iter().map(Accumulator::bytes_per_slot).sum();
        let per_session = sessions.state_bytes() / sessions.held();
        eprintln!("{per_session} bytes per open session, {aggregates} of them aggregates");
        assert!(
            per_session <= aggregates + 160,
            "{per_session} bytes per session, {aggregates} of them aggregates"
        );
    }
}
