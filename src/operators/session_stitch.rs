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

use std::collections::BTreeMap;
use std::sync::Arc;

use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use super::Time;
use super::window_merge::final_watermark;
use crate::engine::control::{Control, EndOfInput, GaugeClock, Metrics};
use crate::query::QueryPlan;
use crate::stream::{Continuation, KeptWindow};
use crate::window::key::KeyRows;
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

/// Panes and corrections received and not yet applied, in the order they are applied:
/// by the frontier that completes them (a pane's end; a correction's due time plus
/// one), panes first, then by pane start. Applying them in that order, never in order of
/// arrival, makes every session, file and revision the same for any worker count and
/// scheduling.
type Queue = BTreeMap<(Time, u8, i64), Vec<PartialWindow>>;
const PANE: u8 = 0;
const CORRECTION: u8 = 1;

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
            let ooo = plan.source.max_out_of_orderness;
            let previous_watermark = stream
                .max_event_time
                .map_or(Time::MIN, |m| m.saturating_sub(ooo));
            // Written files a previous run kept for corrections: their owners hold them
            // again, not to be written.
            let mut reloaded: Vec<SessionFile> = Vec::new();
            match sessions.as_mut() {
                Some(s) => {
                    let owned = |k: &KeyRows, r: usize| key_owner(k, r, peers) == index;
                    // Corrections a checkpoint cut short come back through the panes.
                    let mut written = std::collections::BTreeSet::new();
                    for kept in stream.resumed.iter().filter(|k| k.correction.is_none()) {
                        if kept.end <= previous_watermark {
                            s.resume_written(kept.start, &kept.keys, &kept.accs, owned);
                            written.insert(kept.start);
                        } else {
                            s.resume(kept.start, &kept.keys, &kept.accs, kept.unwritten, owned);
                        }
                    }
                    // One share per file, however many workers kept a part of it.
                    reloaded.extend(written.into_iter().map(|start| s.written_share(start)));
                }
                None => control.fail(crate::Error::Internal(
                    "session stitching in a plan without SESSION".into(),
                )),
            }
            let mut queue: Queue = BTreeMap::new();
            let mut gauge = GaugeClock::default();
            move |(input, frontier), output| {
                let Some(sessions) = sessions.as_mut() else {
                    input.for_each_stamp(|_, _| {});
                    return;
                };
                input.for_each_stamp(|_, data| {
                    for parts in data {
                        for part in parts.drain(..) {
                            let key = match part.correction {
                                Some(due) => (due.saturating_add(1), CORRECTION, part.start),
                                None => (part.end, PANE, part.start),
                            };
                            queue.entry(key).or_default().push(part);
                        }
                    }
                });
                let now = frontier.frontier().first().copied();
                if now.is_none() && control.failed() {
                    held = None;
                    return;
                }
                let Some(cap) = held.as_mut() else { return };
                let mut out: Vec<(Time, PartialWindow)> = Vec::new();
                for f in reloaded.drain(..) {
                    out.push((*cap.time(), share(f, RESUMED, None, peers)));
                }
                // At the end of the input, the panes past the final watermark are flushed
                // open: sessions close no further than it.
                let end_of_input = control.end_of_input();
                let final_watermark = final_watermark(&control, &stream, ooo);
                let gap = sessions.gap();
                let advance = |sessions: &mut Sessions, to: Time, out: &mut Vec<_>| {
                    let boundary = to.min(final_watermark).div_euclid(gap).saturating_mul(gap);
                    sessions.close_until(boundary);
                    for f in sessions.take_files(boundary) {
                        metrics.window_closing(f.start);
                        if f.keys.len == 0 && f.freshness == Freshness::AsKept {
                            continue;
                        }
                        out.push((*cap.time(), sent(f, index, peers)));
                    }
                    sessions.expire_written(to.min(final_watermark));
                    boundary
                };
                let upto = now.unwrap_or(Time::MAX);
                let mut dirty = std::collections::BTreeSet::new();
                while let Some(entry) = queue.first_entry() {
                    let (complete_at, kind, _) = *entry.key();
                    if complete_at > upto {
                        break;
                    }
                    let parts = entry.remove();
                    let boundary = advance(sessions, complete_at.saturating_sub(1), &mut out);
                    if kind == PANE {
                        for part in parts {
                            sessions.add_pane(&part.keys, &part.accs);
                        }
                        continue;
                    }
                    let due = complete_at.saturating_sub(1);
                    if end_of_input == EndOfInput::Checkpoint && due >= final_watermark {
                        // Cut short: the next leg's chunks may still add to it.
                        for part in parts {
                            stream.keep(KeptWindow {
                                start: part.start,
                                end: part.end,
                                keys: part.keys,
                                accs: part.accs,
                                unwritten: false,
                                correction: Some(due),
                                prepacked: Default::default(),
                            });
                        }
                        continue;
                    }
                    for part in parts {
                        dirty.extend(sessions.correct(&part.keys, &part.accs, boundary));
                    }
                    // The corrections due at one time (of every pane) make one revision
                    // of each file they change: this worker sends its share once.
                    let more = queue
                        .first_key_value()
                        .is_some_and(|(k, _)| k.0 == complete_at && k.1 == CORRECTION);
                    if !more {
                        for file in std::mem::take(&mut dirty) {
                            let f = sessions.written_share(file);
                            out.push((due.max(*cap.time()), share(f, index, Some(due), peers)));
                        }
                    }
                }
                advance(sessions, upto, &mut out);
                if now.is_none() {
                    // Written files still correctable are kept whatever becomes of the
                    // open ones, as closed windows are (`WindowMerge`).
                    for f in sessions.take_written(final_watermark) {
                        stream.keep(kept(&f, false));
                    }
                    sessions.close_all();
                    let open = sessions.take_open_files();
                    match end_of_input {
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
                            for f in open {
                                if f.keys.len == 0 && f.freshness == Freshness::AsKept {
                                    continue;
                                }
                                out.push((*cap.time(), sent(f, index, peers)));
                            }
                        }
                    }
                }
                for (time, part) in out {
                    // A container of one: see `window_pact`.
                    output
                        .session(&cap.delayed(&time))
                        .give_container(&mut vec![part]);
                }
                if gauge.due(now.is_none()) {
                    metrics.sessions_now(
                        index,
                        sessions.held() as u64,
                        sessions.state_bytes() as u64,
                    );
                }
                match now {
                    Some(t) if t > *cap.time() => cap.downgrade(&t),
                    Some(_) => {}
                    None => held = None,
                }
            }
        })
    }
}

/// A file's share as this worker sends it when the file is due: marked as new, as kept
/// but unwritten, or as exactly what a previous run kept.
fn sent(f: SessionFile, index: usize, peers: usize) -> PartialWindow {
    let from = match f.freshness {
        Freshness::Changed => index,
        Freshness::Unwritten => RESUMED_UNWRITTEN,
        Freshness::AsKept => RESUMED,
    };
    share(f, from, None, peers)
}

/// A file's share as a part bound for the file's owner.
fn share(f: SessionFile, from: usize, correction: Option<Time>, peers: usize) -> PartialWindow {
    PartialWindow {
        start: f.start,
        end: f.end,
        target: window_owner(f.start, peers),
        from,
        correction,
        keys: f.keys,
        accs: f.accs,
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
        prepacked: Default::default(),
    }
}
