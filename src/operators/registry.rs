//! The device registry in the dataflow: its versions as a differential collection,
//! arranged on every worker, and the join of a closing window with it.
//!
//! **Time.** A registry change is stamped with the watermark at the moment it is read
//! (the registry operator follows the readings' frontier), and a window ending at `end`
//! reads the registry as of just before `end`. So a window joins the version in force
//! when the watermark passed its end, whichever worker owns it and whenever its rows are
//! written (again) — the first version is stamped before every window.
//!
//! **Placement.** Worker 0 reads the file and broadcasts the changes; every worker
//! arranges the whole registry, because a window is joined whole by its owner.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use differential_dataflow::AsCollection;
use differential_dataflow::operators::arrange::TraceAgent;
use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::trace::TraceReader;
use differential_dataflow::trace::cursor::{Cursor, cursor_list};
use differential_dataflow::trace::implementations::{ValBatcher, ValSpine};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::progress::frontier::AntichainRef;

use super::window_merge::final_watermark;
use super::{LateRows, Time};
use crate::engine::control::{Control, Metrics};
use crate::query::registry::{JoinKind, KeyFrom, RegistryJoin};
use crate::registry::{Change, History, Key, Registry, Reload, Row, Value};
use crate::stream::Continuation;
use crate::window::aggregate::{Accumulator, Aggregate};
use crate::window::key::{KeyColumn, KeyRows, KeyValue};
use crate::window::merge::regroup;

/// The registry as every worker holds it: device key to row, with each version's time.
pub type RegistryTrace = TraceAgent<ValSpine<Key, Row, Time, isize>>;

/// One update of the registry collection: a row, when, inserted (1) or retracted (-1).
pub type Update = ((Key, Row), Time, isize);

/// The registry, arranged: `progress` is complete up to the times its trace is
/// complete, which is what a join waits on.
pub struct Arranged<'s> {
    /// Carries no data; its frontier is the trace's.
    pub progress: StreamVec<'s, Time, ()>,
    /// The registry's versions.
    pub trace: RegistryTrace,
}

/// Where a query under `allowed_lateness` keeps the registry versions windows may still
/// be written under ([`History`]).
#[derive(Clone, Debug)]
pub struct KeptVersions {
    /// The file.
    pub path: PathBuf,
    /// The watermark the last run stopped at (`Time::MIN`: none): the registry file as
    /// it is now comes into force there.
    pub resumed: Time,
    /// How far before the watermark a window may still be written.
    pub reach: Time,
    /// The windows' slide: their ends are its multiples.
    pub slide: Time,
    /// The run's control: where the watermark stands once the input ended.
    pub control: Arc<Control>,
    /// What earlier runs left.
    pub stream: Arc<Continuation>,
    /// The query's allowed out-of-orderness.
    pub max_out_of_orderness: Time,
}

impl KeptVersions {
    /// Records a version in force from `at`, folds what no window can be written under
    /// any more, and saves the versions; a failure is logged (a later run then joins
    /// the windows it writes again with the file as it is then).
    fn record(&self, history: &mut History, at: Time, changes: Vec<Change>) {
        history.record(at, changes);
        history.fold_through(self.horizon());
        if let Err(e) = history.save(&self.path) {
            tracing::error!(file = %self.path.display(), error = %e, "Cannot keep the registry versions: a later run writing a window again joins the registry file as it is then");
        }
    }

    /// Where versions may fold: no window ending at or before it is written again, by
    /// this run or by one redoing it from its start (a watermark this run passed, or one
    /// a killed run reached, is no bound: a redo starts where this run did).
    fn horizon(&self) -> Time {
        self.resumed.saturating_sub(self.reach)
    }

    /// Keeps the last window boundary at or before `watermark` once it is past `kept`
    /// (what was kept before), so that a run redoing this one's windows knows which
    /// closed under the versions kept: called before the arrangement may move past
    /// `watermark`, so before any window ending there is joined.
    fn pass(&self, kept: &mut Option<Time>, watermark: Time) {
        let boundary = watermark
            .div_euclid(self.slide.max(1))
            .saturating_mul(self.slide.max(1));
        if kept.is_some_and(|k| k >= boundary) {
            return;
        }
        match History::save_through(&self.path, boundary) {
            Ok(()) => *kept = Some(boundary),
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "Cannot keep how far the registry versions were joined: a run redoing this one joins the registry file as it is then")
            }
        }
    }
}

/// Feeds `registry` into the dataflow, stamped by the frontier of `clock` (the
/// watermark), and arranges it on every worker; with `kept`, the versions earlier runs
/// recorded come first, each at its time.
pub fn arrange<'s>(
    clock: StreamVec<'s, Time, LateRows>,
    registry: Arc<Registry>,
    kept: Option<KeptVersions>,
    metrics: Arc<Metrics>,
) -> Arranged<'s> {
    let scope = clock.scope();
    let reader = scope.index() == 0;
    let reload = registry
        .table()
        .reload
        .map(|us| Duration::from_micros(us.max(1) as u64));
    let updates: StreamVec<'s, Time, Update> =
        clock.unary_frontier(Pipeline, "Registry", move |cap, info| {
            let activator = scope.activator_for(info.address.clone());
            // Only the reader holds back time: the others send nothing.
            let mut cap = reader.then_some(cap);
            let mut first = true;
            let (mut history, mut through) = match (&kept, reader) {
                (Some(kept), true) => (
                    History::load(&kept.path),
                    History::load_through(&kept.path),
                ),
                _ => (History::default(), None),
            };
            let mut next_check = reload.map(|every| Instant::now() + every);
            move |(input, frontier), output| {
                input.for_each_stamp(|_, _| {});
                let Some(held) = cap.as_mut() else { return };
                let at = *held.time();
                if first {
                    first = false;
                    Metrics::set(&metrics.registry_rows, registry.len() as u64);
                    match &kept {
                        None => output
                            .session(&*held)
                            .give_iterator(registry.initial().into_iter().map(|(d, r)| (d, at, r))),
                        Some(kept) => {
                            for (t, changes) in history.versions() {
                                let t = (*t).max(at);
                                output
                                    .session(&held.delayed(&t))
                                    .give_iterator(changes.iter().map(|(d, r)| (d.clone(), t, *r)));
                            }
                            // Windows closed before the last run stopped (or died)
                            // keep their versions; the file as it is now stands for
                            // the others.
                            let since = match history.last_time() {
                                Some(last) => kept
                                    .resumed
                                    .max(last)
                                    .max(through.unwrap_or(Time::MIN))
                                    .max(at),
                                None => at,
                            };
                            let changes = registry.changes_from(&history.latest());
                            if !changes.is_empty() || history.versions().is_empty() {
                                kept.record(&mut history, since, changes.clone());
                            }
                            output
                                .session(&held.delayed(&since))
                                .give_iterator(changes.into_iter().map(|(d, r)| (d, since, r)));
                        }
                    }
                }
                if let (Some(every), Some(due)) = (reload, next_check) {
                    let now = Instant::now();
                    if now >= due {
                        next_check = Some(now + every);
                        let reading = Instant::now();
                        match registry.reload() {
                            Reload::Unchanged => {}
                            Reload::Changed(changes) => {
                                Metrics::add(&metrics.registry_reloads, 1);
                                Metrics::add(&metrics.registry_changes, changes.len() as u64);
                                Metrics::set(&metrics.registry_rows, registry.len() as u64);
                                tracing::info!(
                                    registry = %registry.table().path.display(),
                                    changes = changes.len(),
                                    rows = registry.len(),
                                    read_ms = reading.elapsed().as_secs_f64() * 1e3,
                                    "Registry reloaded"
                                );
                                if let Some(kept) = &kept {
                                    kept.record(&mut history, at, changes.clone());
                                }
                                output
                                    .session(&*held)
                                    .give_iterator(changes.into_iter().map(|(d, r)| (d, at, r)));
                            }
                            Reload::Refused(errors) => {
                                Metrics::add(&metrics.registry_errors, 1);
                                for e in &errors {
                                    tracing::warn!(error = %e, "Registry not taken; the version in force stays");
                                }
                            }
                        }
                    }
                    activator.activate_after(next_check.map_or(every, |d| {
                        d.saturating_duration_since(Instant::now())
                    }));
                }
                match frontier.frontier().first() {
                    Some(&t) if t > at => {
                        if let Some(kept) = &kept {
                            kept.pass(&mut through, t);
                        }
                        held.downgrade(&t)
                    }
                    Some(_) => {}
                    None => {
                        // The input ended: the windows up to where the watermark
                        // stands are closed now (or all, when the end closes them).
                        // A failed run's frontier empties too, and closes nothing.
                        if let Some(kept) = kept.as_ref().filter(|k| k.control.input_ended()) {
                            let end = final_watermark(
                                &kept.control,
                                &kept.stream,
                                kept.max_out_of_orderness,
                            );
                            kept.pass(&mut through, end);
                        }
                        cap = None
                    }
                }
            }
        });
    arrange_updates(updates.broadcast())
}

/// Arranges registry updates on this worker, as they come (no exchange).
pub fn arrange_updates<'s>(updates: StreamVec<'s, Time, Update>) -> Arranged<'s> {
    let arranged = arrange_core::<_, _, ValBatcher<Key, Row, Time, isize>, ValSpine<_, _, _, _>>(
        updates.as_collection().inner,
        Pipeline,
        "RegistryArrange",
        ValBatcher::new,
    );
    let mut trace = arranged.trace;
    // Reads ask for versions by time (`lookup`), never for the batches themselves
    // as they were.
    trace.set_physical_compaction(AntichainRef::new(&[]));
    let progress: StreamVec<'s, Time, ()> = arranged
        .stream
        .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            "RegistryProgress",
            |_, _| |input, _output| input.for_each_stamp(|_, _| {}),
        );
    Arranged { progress, trace }
}

/// A window's rows joined with the registry.
#[derive(Debug)]
pub struct JoinedRows {
    /// The result keys, one row per distinct key (not sorted).
    pub keys: KeyRows,
    /// Their accumulators.
    pub accs: Vec<Accumulator>,
    /// Readings an `INNER` join dropped: their device has no registry row.
    pub unmatched: u64,
}

/// Joins the rows of the window ending at `end` (keyed by the readings' keys and the
/// join column) with the registry as of just before `end`, and groups them by the
/// result keys.
pub fn join_window(
    join: &RegistryJoin,
    trace: &mut RegistryTrace,
    end: Time,
    keys: &KeyRows,
    accs: &[Accumulator],
) -> JoinedRows {
    let mut joined = KeyRows::new(&join.result_keys());
    let mut taken: Vec<u32> = Vec::with_capacity(keys.len);
    let mut unmatched = 0u64;
    let mut add = |row: usize, found: Option<&Row>| {
        if found.is_none() && join.kind == JoinKind::Inner {
            unmatched += accs[join.count].count(row).unwrap_or(0).max(0) as u64;
            return;
        }
        for (to, key) in joined.columns.iter_mut().zip(&join.keys) {
            match key.from {
                KeyFrom::Reading(i) => to.push_from(&keys.columns[i], row),
                KeyFrom::Registry(c) => match join.row_position(c) {
                    Some(at) => to.push_value(found.and_then(|r| key_value(&r[at]))),
                    // The registry's key equals the readings' join column where it joins.
                    None if found.is_some() => to.push_from(&keys.columns[join.probe], row),
                    None => to.push_value(None),
                },
            }
        }
        joined.len += 1;
        taken.push(row as u32);
    };
    let spans = trace
        .spans_through(AntichainRef::new(&[]))
        .unwrap_or_default();
    let (mut cursor, storage) = cursor_list(spans.into_iter().filter_map(|s| s.inner).collect());
    let mut key = Key::new();
    // A cursor only seeks forward: probe in key order.
    for row in probe_order(keys, join.probe) {
        if !probe_key(keys, join.probe, row, &mut key) {
            add(row, None);
            continue;
        }
        cursor.seek_key(&storage, &key);
        let mut found = None;
        if cursor.get_key(&storage) == Some(&key) {
            while let Some(value) = cursor.get_val(&storage) {
                let mut count = 0isize;
                cursor.map_times(&storage, |t, d| {
                    if *t < end {
                        count += *d;
                    }
                });
                if count > 0 {
                    found = Some(value);
                    break;
                }
                cursor.step_val(&storage);
            }
        }
        add(row, found);
        cursor.rewind_vals(&storage);
    }
    let gathered: Vec<Accumulator> = accs.iter().map(|a| a.gather(&taken)).collect();
    let (keys, accs) = regroup(&joined, &gathered);
    JoinedRows {
        keys,
        accs,
        unmatched,
    }
}

fn key_value(value: &Value) -> Option<KeyValue<'_>> {
    match value {
        Value::Null => None,
        Value::Int(i) => Some(KeyValue::Int(*i)),
        Value::Float(bits) => Some(KeyValue::Double(f64::from_bits(*bits))),
        Value::Text(t) => Some(KeyValue::Text(t.as_bytes())),
        Value::Bool(b) => Some(KeyValue::Bool(*b)),
    }
}

/// Writes the arrangement's key for row `row` of join column `column` into `key`;
/// `false` for NULL, which joins nothing.
fn probe_key(keys: &KeyRows, column: usize, row: usize, key: &mut Key) -> bool {
    key.clear();
    match keys.columns[column].value(row) {
        Some(KeyValue::Text(t)) => match std::str::from_utf8(t) {
            Ok(t) => key.push_str(t),
            Err(_) => return false,
        },
        Some(KeyValue::Int(i)) => {
            use std::fmt::Write;
            let _ = write!(key, "{i}");
        }
        _ => return false,
    }
    true
}

/// The rows in the order of their join keys' text, which is the arrangement's order.
/// A window's rows usually come sorted by key already; then a text join column that is
/// the first key needs no sort.
fn probe_order(keys: &KeyRows, column: usize) -> Vec<usize> {
    let text = matches!(keys.columns[column], KeyColumn::Text(_));
    if keys.sorted && column == 0 && text {
        return (0..keys.len).collect();
    }
    let mut texts: Vec<(Key, usize)> = (0..keys.len)
        .map(|row| {
            let mut key = Key::new();
            probe_key(keys, column, row, &mut key);
            (key, row)
        })
        .collect();
    texts.sort_unstable();
    texts.into_iter().map(|(_, row)| row).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(key: &str, site: &str, diff: isize) -> Change {
        ((key.to_owned(), vec![Value::Text(site.to_owned())]), diff)
    }

    /// A run resumed at 1,000 records the file as it is from 5,000 (how far a killed run
    /// got, after a reload at 2,000): the versions of 500 and 2,000 must stay apart,
    /// since this run may write again every window ending after 900, and one ending at
    /// 1,500 closed under the version of 500 (folded into one at 2,000 it found none).
    #[test]
    fn versions_fold_only_below_where_the_run_started() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let kept = KeptVersions {
            path: dir.path().join("registry.bin"),
            resumed: 1_000,
            reach: 100,
            slide: 10,
            control: Arc::default(),
            stream: Arc::default(),
            max_out_of_orderness: 0,
        };
        let mut history = History::default();
        history.record(Time::MIN, vec![change("a", "lyon", 1)]);
        history.record(500, vec![change("a", "lyon", -1), change("a", "nice", 1)]);
        history.record(
            2_000,
            vec![change("a", "nice", -1), change("a", "paris", 1)],
        );
        kept.record(
            &mut history,
            5_000,
            vec![change("a", "paris", -1), change("a", "rome", 1)],
        );
        let times: Vec<Time> = history.versions().iter().map(|(t, _)| *t).collect();
        assert_eq!(times, vec![500, 2_000, 5_000], "{times:?}");
        assert_eq!(History::load(&kept.path), history);
    }
}
