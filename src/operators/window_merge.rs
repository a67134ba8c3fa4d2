//! The owner side of a window: append the parts its key owners merged
//! ([`super::key_merge`]), and once the frontier has passed the window, compute its
//! rows.
//!
//! When the input ends, every window is flushed. Windows the watermark has not passed
//! are *open*: their rows are written as a revision so results
//! are visible, and their merged state is kept for the next run ([`crate::stream`]). A
//! window only this run's kept state feeds, with nothing new, is not written again.
//! After a fatal error nothing more is written: a failed run publishes nothing
//! half-done.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Capability, InputCapability};

use super::window_rows::window_rows;
use super::{ClosedWindow, Time};
use crate::engine::control::{Control, EndOfInput, Metrics};
use crate::query::QueryPlan;
use crate::stream::{Continuation, KeptWindow};
use crate::window::merge::WindowMerger;
use crate::window::state::PartialWindow;

/// The windows whose parts an operator is collecting, by end, each with the capability
/// to emit it at (the least time of its parts).
pub(super) struct Collecting {
    open: BTreeMap<(i64, i64), (Capability<Time>, WindowMerger)>,
    merger: fn() -> WindowMerger,
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
        let entry = self
            .open
            .entry((part.end, part.start))
            .or_insert_with(|| (cap.delayed(time, 0), (self.merger)()));
        if time < entry.0.time() {
            entry.0 = cap.delayed(time, 0);
        }
        entry.1.add(part);
    }

    /// The next window ending at or before `limit`: start, end, capability, parts.
    pub(super) fn next_closed(
        &mut self,
        limit: Time,
    ) -> Option<(i64, i64, Capability<Time>, WindowMerger)> {
        let entry = self.open.first_entry()?;
        let (end, start) = *entry.key();
        if end > limit {
            return None;
        }
        let (cap, merger) = entry.remove();
        Some((start, end, cap, merger))
    }

    /// Drops every window.
    pub(super) fn clear(&mut self) {
        self.open.clear();
    }
}

/// Where the watermark stands at the end of the input (`Time::MAX` before it, or when
/// the end closes every window): windows ending after it stay open.
pub(super) fn final_watermark(control: &Control, stream: &Continuation, ooo: i64) -> Time {
    if control.input_ended() && control.end_of_input() != EndOfInput::Close {
        control
            .max_event_time()
            .max(stream.max_event_time)
            .map_or(Time::MIN, |m| m.saturating_sub(ooo))
    } else {
        Time::MAX
    }
}

/// Merges partial windows at their owners.
pub trait WindowMerge<'s> {
    /// Routes partials to their window's owner and emits each closed window's rows.
    fn window_merge(
        self,
        plan: Arc<QueryPlan>,
        schema: SchemaRef,
        stream: Arc<Continuation>,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, ClosedWindow>;
}

impl<'s> WindowMerge<'s> for StreamVec<'s, Time, PartialWindow> {
    fn window_merge(
        self,
        plan: Arc<QueryPlan>,
        schema: SchemaRef,
        stream: Arc<Continuation>,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, ClosedWindow> {
        let exchange = Exchange::new(|p: &PartialWindow| p.target as u64);
        self.unary_frontier(exchange, "WindowMerge", move |_cap, _info| {
            let mut open = Collecting::new(WindowMerger::disjoint);
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    for parts in data {
                        for part in parts.drain(..) {
                            open.add(&cap, part);
                        }
                    }
                });
                let input_ended = frontier.frontier().is_empty();
                if input_ended && control.failed() {
                    open.clear();
                    return;
                }
                let limit = frontier.frontier().first().copied().unwrap_or(Time::MAX);
                let end_of_input = control.end_of_input();
                let final_watermark =
                    final_watermark(&control, &stream, plan.source.max_out_of_orderness);
                while let Some((start, end, cap, merger)) = open.next_closed(limit) {
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
                    if fresh && !checkpoint {
                        let revision = stream.next_revision(start);
                        match window_rows(&plan, &schema, start, end, &keys, &accs, revision) {
                            Ok(rows) => {
                                Metrics::add(&metrics.overflows, rows.overflows);
                                output.session(&cap).give(ClosedWindow {
                                    start,
                                    end,
                                    revision,
                                    batch: rows.batch,
                                });
                            }
                            Err(e) => {
                                control.fail(crate::Error::Internal(format!("window rows: {e}")))
                            }
                        }
                    }
                    // Sessions are kept where they are stitched (`SessionStitch`).
                    if still_open && !plan.window.is_session() {
                        stream.keep(KeptWindow {
                            start,
                            end,
                            keys,
                            accs,
                            unwritten: checkpoint && fresh,
                        });
                    }
                }
            }
        })
    }
}
