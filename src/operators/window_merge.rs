//! The owner side of a window: merge every worker's partial for the keys this worker
//! owns, and once the frontier has passed the window, compute its rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::Operator;

use super::{ClosedWindow, Time};
use crate::engine::control::{Control, Metrics};
use crate::query::QueryPlan;
use crate::window::merge::{WindowMerger, window_rows};
use crate::window::state::PartialWindow;

/// Merges partial windows at their owners.
pub trait WindowMerge<'s> {
    /// Routes partials to their target worker and emits each closed window's rows.
    fn window_merge(
        self,
        plan: Arc<QueryPlan>,
        schema: SchemaRef,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, ClosedWindow>;
}

impl<'s> WindowMerge<'s> for StreamVec<'s, Time, PartialWindow> {
    fn window_merge(
        self,
        plan: Arc<QueryPlan>,
        schema: SchemaRef,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, ClosedWindow> {
        let exchange = Exchange::new(|p: &PartialWindow| p.target as u64);
        self.unary_frontier(exchange, "WindowMerge", move |_cap, _info| {
            let mut open: BTreeMap<(i64, i64), (Capability<Time>, WindowMerger)> = BTreeMap::new();
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    for parts in data {
                        for part in parts.drain(..) {
                            let Some(time) = cap.least() else { continue };
                            let entry = open
                                .entry((part.end, part.start))
                                .or_insert_with(|| (cap.delayed(time, 0), WindowMerger::default()));
                            if time < entry.0.time() {
                                entry.0 = cap.delayed(time, 0);
                            }
                            entry.1.add(part);
                        }
                    }
                });
                let limit = frontier.frontier().first().copied().unwrap_or(Time::MAX);
                while let Some(entry) = open.first_entry() {
                    let (end, start) = *entry.key();
                    if end > limit {
                        break;
                    }
                    let (cap, merger) = entry.remove();
                    metrics.window_closed(start);
                    let Some((keys, accs)) = merger.merge() else {
                        continue;
                    };
                    match window_rows(&plan, &schema, start, end, &keys, &accs) {
                        Ok(rows) => {
                            Metrics::add(&metrics.overflows, rows.overflows);
                            output.session(&cap).give(ClosedWindow {
                                start,
                                end,
                                batch: rows.batch,
                            });
                        }
                        Err(e) => control.fail(crate::Error::Internal(format!("window rows: {e}"))),
                    }
                }
            }
        })
    }
}
