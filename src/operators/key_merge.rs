//! The first step of merging a window: every worker merges, for the keys it owns, the
//! partials all workers (and the state a previous run kept) hold for them, and sends the
//! result to the window's owner.
//!
//! Merging by key owner keeps the hashing work of a big window spread over every
//! worker; the window's owner then only appends parts that share no key
//! ([`WindowMerger::disjoint`]).

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::operators::generic::Operator;

use super::Time;
use super::window_merge::Collecting;
use crate::engine::control::Metrics;
use crate::window::merge::{WindowMerger, is_resumed, sorted_rows};
use crate::window::state::{PartialWindow, RESUMED, window_owner};

/// Merges partial windows at the owner of their keys.
pub trait KeyMerge<'s> {
    /// Routes partials to their keys' owner; once the frontier has passed a window,
    /// emits the merged keys of this worker, bound for the window's owner (`from` is
    /// [`RESUMED`] when only kept state fed them). Tells `metrics` what kept state waits
    /// here.
    fn key_merge(self, metrics: Arc<Metrics>) -> StreamVec<'s, Time, PartialWindow>;
}

impl<'s> KeyMerge<'s> for StreamVec<'s, Time, PartialWindow> {
    fn key_merge(self, metrics: Arc<Metrics>) -> StreamVec<'s, Time, PartialWindow> {
        let (index, peers) = (self.scope().index(), self.scope().peers());
        let exchange = super::window_pact::to_target();
        self.unary_frontier(exchange, "KeyMerge", move |_cap, _info| {
            let mut open = Collecting::new(WindowMerger::default);
            // Whether kept state waits here: it is counted again (a pass over its
            // parts) only when it may have changed, not at every activation.
            let mut holds_resumed = false;
            move |(input, frontier), output| {
                let mut recount = false;
                input.for_each_stamp(|cap, data| {
                    for parts in data {
                        for part in parts.drain(..) {
                            recount |= is_resumed(&part);
                            open.add(&cap, part);
                        }
                    }
                });
                let limit = frontier.frontier().first().copied().unwrap_or(Time::MAX);
                while let Some(closed) = open.next_closed(limit) {
                    recount |= holds_resumed;
                    let from = if closed.merger.is_fresh() {
                        index
                    } else {
                        RESUMED
                    };
                    let Some((keys, accs)) = closed.merger.merge() else {
                        continue;
                    };
                    // Sorted here, on every worker at once, so the window's owner only
                    // merges sorted runs.
                    let (keys, accs) = sorted_rows(keys, accs);
                    // A container of one: see `window_pact`.
                    output
                        .session(&closed.cap)
                        .give_container(&mut vec![PartialWindow {
                            start: closed.start,
                            end: closed.end,
                            target: window_owner(closed.start, peers),
                            from,
                            correction: closed.correction,
                            keys,
                            accs,
                        }]);
                }
                if recount {
                    let resumed = open.resumed();
                    holds_resumed = resumed.keys > 0;
                    metrics.resumed_now(index, resumed);
                }
            }
        })
    }
}
