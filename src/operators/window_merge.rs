//! The owner side of a window: append the parts its key owners merged
//! ([`super::key_merge`]), and once the frontier has passed the window, hand its merged
//! state to the writer, which computes its rows ([`super::window_rows`]).
//!
//! When the input ends, every window is flushed. Windows the watermark has not passed
//! are *open*: their rows are written as a revision so results
//! are visible, and their merged state is kept for the next run ([`crate::stream`]). A
//! window only this run's kept state feeds, with nothing new, is not written again.
//! After a fatal error nothing more is written: a failed run publishes nothing
//! half-done.

use std::collections::BTreeMap;
use std::sync::Arc;

use differential_dataflow::trace::TraceReader;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};
use timely::progress::frontier::AntichainRef;

use super::registry::{RegistryTrace, join_window};
use super::{ClosedWindow, Time};
use crate::engine::control::{Control, EndOfInput, Metrics, OpenState};
use crate::query::QueryPlan;
use crate::stream::{Continuation, KeptWindow};
use crate::window::aggregate::Accumulator;
use crate::window::closed::{ClosedWindowState, ClosedWindows};
use crate::window::key::KeyRows;
use crate::window::merge::WindowMerger;
use crate::window::session::replace_shares;
use crate::window::state::PartialWindow;

/// The windows whose parts an operator is collecting, by the frontier that completes
/// them (a window's end; for a correction, the time it is due plus one), each with the
/// capability to emit it at (the least time of its parts).
pub(super) struct Collecting {
    open: BTreeMap<(i64, i64), Collected>,
    merger: fn() -> WindowMerger,
}

/// The parts of one window (or of one correction of it) collected so far.
pub(super) struct Collected {
    /// Window start.
    pub start: i64,
    /// Window end.
    pub end: i64,
    /// When a correction is due ([`PartialWindow::correction`]); `None` for the window.
    pub correction: Option<i64>,
    /// Where to emit what the parts merge into.
    pub cap: Capability<Time>,
    /// The parts.
    pub merger: WindowMerger,
}

impl Collecting {
    /// Collects parts merged by `merger`'s kind.
    pub(super) fn new(merger: fn() -> WindowMerger) -> Self {
        Collecting {
            open: BTreeMap::new(),
            merger,
        }
    }

    /// Adds a part that arrived under `cap`.
    pub(super) fn add(&mut self, cap: &InputCapability<Time>, part: PartialWindow) {
        let Some(time) = cap.least() else { return };
        // Every part of a correction comes at or before the time it is due, so once
        // the frontier is past that time the correction is whole.
        let complete_at = part.correction.map_or(part.end, |t| t.saturating_add(1));
        let entry = self
            .open
            .entry((complete_at, part.start))
            .or_insert_with(|| Collected {
                start: part.start,
                end: part.end,
                correction: part.correction,
                cap: cap.delayed(time, 0),
                merger: (self.merger)(),
            });
        if time < entry.cap.time() {
            entry.cap = cap.delayed(time, 0);
        }
        entry.merger.add(part);
    }

    /// The next window (or correction) the frontier at `limit` has completed.
    pub(super) fn next_closed(&mut self, limit: Time) -> Option<Collected> {
        let entry = self.open.first_entry()?;
        if entry.key().0 > limit {
            return None;
        }
        Some(entry.remove())
    }

    /// Drops every window.
    pub(super) fn clear(&mut self) {
        self.open.clear();
    }

    /// Windows holding state an earlier run (or checkpoint) kept, and that state's
    /// groups and bytes: it waits at its keys' owners for the window to close, not in
    /// the workers' window state, which counts only the readings of this run.
    pub(super) fn resumed(&self) -> OpenState {
        self.open
            .values()
            .filter(|c| c.correction.is_none())
            .map(|c| c.merger.resumed())
            .filter(|&(keys, _)| keys > 0)
            .fold(OpenState::default(), |all, (keys, bytes)| OpenState {
                windows: all.windows + 1,
                keys: all.keys + keys as u64,
                bytes: all.bytes + bytes as u64,
            })
    }
}

/// Where the watermark stands at the end of the input (`Time::MAX` before it, or when
/// the end closes every window): windows ending after it stay open.
pub(super) fn final_watermark(control: &Control, stream: &Continuation, ooo: i64) -> Time {
    if control.input_ended() && control.end_of_input() != EndOfInput::Close {
        // The summarised prefix is the whole input's, also in a cluster process that
        // read only a share of it.
        control
            .max_event_time()
            .max(control.stream_prefix().1)
            .max(stream.max_event_time)
            .map_or(Time::MIN, |m| m.saturating_sub(ooo))
    } else {
        Time::MAX
    }
}

/// A window's merged state: its group keys and one accumulator per aggregate.
type Rows = (KeyRows, Vec<Accumulator>);

/// Keeps a closed window (last written as `revision`) for later corrections, if its
/// state came back from the write.
fn keep_written(
    closed: &mut ClosedWindows,
    start: i64,
    end: i64,
    kept: Option<Rows>,
    revision: Option<u32>,
) {
    if let Some((keys, accs)) = kept {
        closed.closed(
            start,
            ClosedWindowState {
                end,
                keys,
                accs,
                revision,
            },
        );
    }
}

/// Merges partial windows at their owners.
pub trait WindowMerge<'s> {
    /// Routes partials to their window's owner and emits each closed window's rows.
    ///
    /// With a registry join, `registry` holds its arrangement: a window closes once both
    /// the partials and the registry are complete up to its end.
    #[allow(clippy::too_many_arguments)]
    fn window_merge(
        self,
        registry: StreamVec<'s, Time, ()>,
        trace: Option<RegistryTrace>,
        plan: Arc<QueryPlan>,
        stream: Arc<Continuation>,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, ClosedWindow>;
}

impl<'s> WindowMerge<'s> for StreamVec<'s, Time, PartialWindow> {
    fn window_merge(
        self,
        registry: StreamVec<'s, Time, ()>,
        mut trace: Option<RegistryTrace>,
        plan: Arc<QueryPlan>,
        stream: Arc<Continuation>,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, ClosedWindow> {
        let exchange = super::window_pact::to_target();
        let peers = self.scope().peers();
        self.binary_frontier(
            registry,
            exchange,
            Pipeline,
            "WindowMerge",
            move |_cap, _info| {
                let mut open = Collecting::new(WindowMerger::disjoint);
                let window = crate::window::assign::WindowAssigner::new(plan.window);
                let slide = window.slide();
                let mut closed_windows = ClosedWindows::new(plan.source.allowed_lateness, slide);
                // Where the earlier runs left the watermark.
                let previous_watermark = stream.max_event_time.map_or(Time::MIN, |m| {
                    m.saturating_sub(plan.source.max_out_of_orderness)
                });
                let reach = correction_reach(&plan);
                move |(input, frontier), (registry, registry_frontier), output| {
                    input.for_each_stamp(|cap, data| {
                        for parts in data {
                            for part in parts.drain(..) {
                                open.add(&cap, part);
                            }
                        }
                    });
                    registry.for_each_stamp(|_, _| {});
                    let input_ended =
                        frontier.frontier().is_empty() && registry_frontier.frontier().is_empty();
                    if input_ended && control.failed() {
                        open.clear();
                        closed_windows.clear();
                        return;
                    }
                    let limit = frontier
                        .frontier()
                        .first()
                        .copied()
                        .unwrap_or(Time::MAX)
                        .min(
                            registry_frontier
                                .frontier()
                                .first()
                                .copied()
                                .unwrap_or(Time::MAX),
                        );
                    let end_of_input = control.end_of_input();
                    let final_watermark =
                        final_watermark(&control, &stream, plan.source.max_out_of_orderness);
                    // A window for the writer, joined with the registry first if the query
                    // joins one (`count`: its dropped readings are new to the count), and
                    // the state back when `keep` (it outlives the write). The writer takes
                    // the state itself when it can: a join makes new state, and state not
                    // kept moves; only state kept and not joined is copied.
                    let write = |trace: Option<&mut RegistryTrace>,
                                 start: i64,
                                 end: i64,
                                 (keys, accs): Rows,
                                 keep: bool,
                                 revision,
                                 count| {
                        let (written, kept) = match (&plan.join, trace) {
                            (Some(join), Some(trace)) => {
                                let joined = join_window(join, trace, end, &keys, &accs);
                                if count {
                                    Metrics::add(&metrics.registry_unmatched, joined.unmatched);
                                }
                                ((joined.keys, joined.accs), keep.then_some((keys, accs)))
                            }
                            _ => {
                                let kept = keep.then(|| (keys.clone(), accs.clone()));
                                ((keys, accs), kept)
                            }
                        };
                        let (keys, accs) = written;
                        let window = ClosedWindow {
                            start,
                            end,
                            revision,
                            keys,
                            accs,
                        };
                        (window, kept)
                    };
                    while let Some(closed) = open.next_closed(limit) {
                        let Collected {
                            start,
                            end,
                            correction,
                            cap,
                            merger,
                        } = closed;
                        if let (Some(_), Some((first_agg, _, _))) =
                            (correction, plan.session_times())
                        {
                            // Stitchers sent their whole shares of a written file of
                            // sessions again: they replace what those stitchers sent before.
                            let base = closed_windows.take(start);
                            let revision = base
                                .as_ref()
                                .and_then(|b| b.revision)
                                .map_or_else(|| stream.next_revision(start), |r| r + 1);
                            let (keys, accs) = replace_shares(
                                base.map(|b| (b.keys, b.accs)),
                                &merger.into_parts(),
                                peers,
                                first_agg,
                            );
                            let keep = closed_windows.keeps();
                            let rows = (keys, accs);
                            let (window, kept) =
                                write(trace.as_mut(), start, end, rows, keep, revision, false);
                            // A container of one: see `window_pact`.
                            output.session(&cap).give_container(&mut vec![window]);
                            keep_written(&mut closed_windows, start, end, kept, Some(revision));
                            continue;
                        }
                        if let Some(due) = correction {
                            // Readings within the allowed lateness of a window written
                            // already: the window again, with them, as its next revision.
                            let Some((keys, accs)) = merger.merge() else {
                                continue;
                            };
                            if end_of_input == EndOfInput::Checkpoint && due >= final_watermark {
                                // Cut short: the next leg's chunks may still add to it.
                                stream.keep(KeptWindow {
                                    start,
                                    end,
                                    keys,
                                    accs,
                                    unwritten: false,
                                    correction: Some(due),
                                    prepacked: Default::default(),
                                });
                                continue;
                            }
                            if let (Some(join), Some(trace)) = (&plan.join, trace.as_mut()) {
                                // Only the correction's own readings are new to the count.
                                let unmatched =
                                    join_window(join, trace, end, &keys, &accs).unmatched;
                                Metrics::add(&metrics.registry_unmatched, unmatched);
                            }
                            let first = stream.next_revision(start);
                            let corrected = closed_windows.correct(start, end, keys, accs, first);
                            let revision = corrected.revision.unwrap_or(first);
                            let rows = (corrected.keys, corrected.accs);
                            let keep = closed_windows.keeps();
                            let (window, kept) =
                                write(trace.as_mut(), start, end, rows, keep, revision, false);
                            // A container of one: see `window_pact`.
                            output.session(&cap).give_container(&mut vec![window]);
                            keep_written(&mut closed_windows, start, end, kept, Some(revision));
                            continue;
                        }
                        let still_open = end > final_watermark;
                        if still_open && end_of_input == EndOfInput::Discard {
                            continue;
                        }
                        if !still_open {
                            metrics.window_closed(start);
                        }
                        let fresh = merger.is_fresh();
                        let Some((keys, accs)) = merger.merge() else {
                            continue;
                        };
                        // A window only kept state feeds is already written as it stands; a
                        // checkpoint keeps its windows without writing them.
                        let checkpoint = still_open && end_of_input == EndOfInput::Checkpoint;
                        let mut revision = stream.next_revision(start).checked_sub(1);
                        // Whether the state outlives its write: kept for the next run, or
                        // for corrections. If not, the writer takes it as it is.
                        let retained = if still_open {
                            !plan.window.is_session()
                        } else {
                            closed_windows.keeps()
                        };
                        let (keys, accs) = if fresh && !checkpoint {
                            let next = stream.next_revision(start);
                            let rows = (keys, accs);
                            let (window, kept) = write(
                                trace.as_mut(),
                                start,
                                end,
                                rows,
                                retained,
                                next,
                                !still_open,
                            );
                            // A container of one: see `window_pact`.
                            output.session(&cap).give_container(&mut vec![window]);
                            let Some(kept) = kept else { continue };
                            revision = Some(next);
                            kept
                        } else {
                            if !still_open
                                && end > previous_watermark
                                && let (Some(join), Some(trace)) = (&plan.join, trace.as_mut())
                            {
                                // Open when an earlier run ended, closed now without anything
                                // new: its dropped readings count now. (A window an earlier
                                // run closed comes back only to take corrections; it was
                                // counted.)
                                let unmatched =
                                    join_window(join, trace, end, &keys, &accs).unmatched;
                                Metrics::add(&metrics.registry_unmatched, unmatched);
                            }
                            (keys, accs)
                        };
                        if still_open {
                            // Sessions are kept where they are stitched (`SessionStitch`).
                            if !plan.window.is_session() {
                                stream.keep(KeptWindow {
                                    start,
                                    end,
                                    keys,
                                    accs,
                                    unwritten: checkpoint && fresh,
                                    correction: None,
                                    prepacked: Default::default(),
                                });
                            }
                        } else {
                            let kept = Some((keys, accs));
                            keep_written(&mut closed_windows, start, end, kept, revision);
                        }
                    }
                    if input_ended {
                        // Closed windows still within the allowance at the final watermark
                        // are kept for the next run's corrections (a file of sessions by
                        // the stitchers, each its share).
                        for kept in closed_windows.take_kept(final_watermark) {
                            if !plan.window.is_session() {
                                stream.keep(kept);
                            }
                        }
                    } else {
                        // Not past the final watermark: flushing the open windows at the end
                        // of the input moves the frontier beyond it.
                        closed_windows.expire(limit.min(final_watermark));
                        if let Some(trace) = trace.as_mut() {
                            // Versions older than any window still to be written can merge.
                            let horizon = limit.min(final_watermark).saturating_sub(reach);
                            trace.set_logical_compaction(AntichainRef::new(&[horizon]));
                        }
                    }
                }
            },
        )
    }
}

/// How far before the watermark a window of `plan` may still be written: a correction's
/// reach (the allowance, plus a slide and a window).
pub fn correction_reach(plan: &QueryPlan) -> Time {
    let window = crate::window::assign::WindowAssigner::new(plan.window);
    plan.source
        .allowed_lateness
        .saturating_add(window.slide())
        .saturating_add(window.size())
}
