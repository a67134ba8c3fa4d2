//! The key owner's step for `SESSION` windows: the panes [`super::key_merge`] merged for
//! this worker's keys are stitched into sessions ([`crate::window::session`]), and the
//! final sessions go to the owner of their file once the watermark has passed its end.
//!
//! The operator holds one capability, at the frontier it last saw, so nothing
//! downstream can pass a file before its sessions are sent. At the end of the input,
//! sessions still open are written as they stand and kept (or only kept by a
//! checkpoint, or dropped), like the open windows of `TUMBLE` and `HOP`; the next run
//! takes them back from the stream state and writes a file again only if what it holds
//! changed.

use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::Time;
use super::window_merge::final_watermark;
use crate::engine::control::{Control, EndOfInput, Metrics};
use crate::query::QueryPlan;
use crate::stream::{Continuation, KeptWindow};
use crate::window::session::{Freshness, SessionFile, Sessions};
use crate::window::state::{PartialWindow, RESUMED, RESUMED_UNWRITTEN, key_owner, window_owner};

/// Stitches merged panes into sessions at their keys' owner.
pub trait SessionStitch<'s> {
    /// Emits, for each file of sessions, this worker's share, bound for the file's
    /// owner; `from` says whether it differs from what a previous run kept.
    fn session_stitch(
        self,
        plan: Arc<QueryPlan>,
        stream: Arc<Continuation>,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, PartialWindow>;
}

impl<'s> SessionStitch<'s> for StreamVec<'s, Time, PartialWindow> {
    fn session_stitch(
        self,
        plan: Arc<QueryPlan>,
        stream: Arc<Continuation>,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> StreamVec<'s, Time, PartialWindow> {
        let (index, peers) = (self.scope().index(), self.scope().peers());
        self.unary_frontier(Pipeline, "SessionStitch", move |cap, _info| {
            let mut held = Some(cap);
            let mut sessions = Sessions::new(&plan);
            match sessions.as_mut() {
                Some(s) => {
                    for kept in &stream.resumed {
                        s.resume(
                            kept.start,
                            &kept.keys,
                            &kept.accs,
                            kept.unwritten,
                            |k, r| key_owner(k, r, peers) == index,
                        );
                    }
                }
                None => control.fail(crate::Error::Internal(
                    "session stitching in a plan without SESSION".into(),
                )),
            }
            let ooo = plan.source.max_out_of_orderness;
            move |(input, frontier), output| {
                let Some(sessions) = sessions.as_mut() else {
                    input.for_each_stamp(|_, _| {});
                    return;
                };
                input.for_each_stamp(|_, data| {
                    for parts in data {
                        for part in parts.drain(..) {
                            sessions.add_pane(&part.keys, &part.accs);
                        }
                    }
                });
                let now = frontier.frontier().first().copied();
                if now.is_none() && control.failed() {
                    held = None;
                    return;
                }
                let Some(cap) = held.as_mut() else { return };
                // Every pane ending at or before the frontier is stitched; at the end of
                // the input, the panes past the final watermark are flushed open.
                let limit = now
                    .unwrap_or(Time::MAX)
                    .min(final_watermark(&control, &stream, ooo));
                let gap = sessions.gap();
                let boundary = limit.div_euclid(gap).saturating_mul(gap);
                sessions.close_until(boundary);
                let mut files = sessions.take_files(boundary);
                for f in &files {
                    metrics.window_closing(f.start);
                }
                if now.is_none() {
                    let end = control.end_of_input();
                    sessions.close_all();
                    let open = sessions.take_files(Time::MAX);
                    match end {
                        EndOfInput::Discard => {}
                        EndOfInput::Checkpoint => {
                            for f in open {
                                // An empty share is kept only to say the file must be
                                // written: what it held moved elsewhere.
                                let unwritten = f.freshness != Freshness::AsKept;
                                if f.keys.len > 0 || unwritten {
                                    stream.keep(kept(&f, unwritten));
                                }
                            }
                        }
                        EndOfInput::Keep | EndOfInput::Close => {
                            for f in open.iter().filter(|f| f.keys.len > 0) {
                                stream.keep(kept(f, false));
                            }
                            files.extend(open);
                        }
                    }
                }
                let mut session = output.session(&*cap);
                for f in files {
                    if f.keys.len == 0 && f.freshness == Freshness::AsKept {
                        continue;
                    }
                    session.give(PartialWindow {
                        start: f.start,
                        end: f.end,
                        target: window_owner(f.start, peers),
                        from: match f.freshness {
                            Freshness::Changed => index,
                            Freshness::Unwritten => RESUMED_UNWRITTEN,
                            Freshness::AsKept => RESUMED,
                        },
                        correction: None,
                        keys: f.keys,
                        accs: f.accs,
                    });
                }
                drop(session);
                metrics.sessions_now(index, sessions.held() as u64, sessions.state_bytes() as u64);
                match now {
                    Some(t) if t > *cap.time() => cap.downgrade(&t),
                    Some(_) => {}
                    None => held = None,
                }
            }
        })
    }
}

fn kept(f: &SessionFile, unwritten: bool) -> KeptWindow {
    KeptWindow {
        start: f.start,
        end: f.end,
        keys: f.keys.clone(),
        accs: f.accs.clone(),
        unwritten,
        correction: None,
    }
}
