//! The source operator: one chunk per activation from this worker's share of the input.
//!
//! It emits each chunk and, on a second output, the chunk's summary (largest event time,
//! line count) for every worker. Its capability sits at the watermark of the first chunk
//! this worker could still read: the largest event time among the chunks it has read and
//! the contiguous prefix of the input the stamp operator knows (`Backlog::known`),
//! minus the allowed out-of-orderness. Any chunk still to come follows both, so this is a
//! lower bound on its watermark, which is what the frontier must be; and because it
//! follows the chunks every worker reads, a worker dealt nothing for a while does not
//! hold every window open (a live source deals its chunks round-robin, so with two
//! workers one push moves only one reader's own maximum).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::{Scope, StreamVec};
use timely::scheduling::Activator;

use super::{ChunkSummary, SourceChunk, Time};
use crate::batch::Interner;
use crate::engine::control::{Control, Metrics};
use crate::source::{OpenInput, SourcePoll};

/// Chunks a worker may have read but not yet stamped: bounds memory while a worker
/// waits to learn about chunks other workers are reading.
const MAX_BACKLOG: usize = 4;

/// Steps the reader sits out after its worker closed a window: enough for the closed
/// window's parts to pass the key merge and the window merge, each a step after the
/// frontier moves, and reach the writer before another chunk is decoded.
const CLOSE_STEPS: u32 = 4;

/// How often a paused reader looks again.
const PAUSE_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Shared between this worker's reader and stamp operators: how many chunks wait for
/// their stamp, and how to wake the reader when the backlog drains.
#[derive(Default)]
pub struct Backlog {
    waiting: Cell<usize>,
    reader: RefCell<Option<Activator>>,
    /// Largest event time in the input's prefix whose summaries the stamp operator has
    /// seen: every chunk this worker has yet to read comes after that prefix.
    known: Cell<Option<i64>>,
    /// Steps the reader still sits out for a window that closed.
    held: Cell<u32>,
    /// Whose chunks this worker stamps ([`ChunkSummary::origin`]).
    origin: Cell<usize>,
}

impl Backlog {
    /// One more chunk waits.
    pub fn push(&self) {
        self.waiting.set(self.waiting.get() + 1);
    }

    /// One chunk was stamped; wakes the reader if it was held back.
    pub fn pop(&self) {
        let was = self.waiting.get();
        self.waiting.set(was.saturating_sub(1));
        if was >= MAX_BACKLOG
            && let Some(a) = self.reader.borrow().as_ref()
        {
            a.activate();
        }
    }

    /// Whose chunks this worker stamps: summaries of another process's own input
    /// ([`ChunkSummary::origin`]) say nothing about this one's.
    pub fn origin(&self) -> usize {
        self.origin.get()
    }

    fn full(&self) -> bool {
        self.waiting.get() >= MAX_BACKLOG
    }

    /// This worker closed a window: the reader sits out the next few steps. A closed
    /// window travels a stage per step, and each step would otherwise first decode a
    /// chunk (1–2 ms): the time from close to durable file is what an operator waits
    /// on, and the worker's core is free again within microseconds.
    pub fn hold_for_close(&self) {
        self.held.set(CLOSE_STEPS);
    }

    /// Whether the reader sits out this step (counting it).
    fn holding(&self) -> bool {
        let held = self.held.get();
        self.held.set(held.saturating_sub(1));
        held > 0
    }

    /// The stamp operator learnt the input's prefix up to a largest event time `max`;
    /// wakes the reader when that lets its capability move on.
    pub fn know(&self, max: Option<i64>) {
        if max > self.known.get() {
            self.known.set(max);
            if let Some(a) = self.reader.borrow().as_ref() {
                a.activate();
            }
        }
    }
}

/// Everything the reader needs besides the scope.
pub struct ReadChunks {
    /// The opened input.
    pub input: Arc<dyn OpenInput>,
    /// The query's allowed out-of-orderness, microseconds.
    pub max_out_of_orderness: i64,
    /// Largest event time of earlier runs on the same stream.
    pub resumed_max_event_time: Option<i64>,
    /// This worker's interner, shared with the window operator.
    pub interner: Rc<RefCell<Interner>>,
    /// Shared with the stamp operator.
    pub backlog: Rc<Backlog>,
    /// Run control (stop switch, fatal error).
    pub control: Arc<Control>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// This process's first worker and its number of workers: an input each process
    /// has of its own is dealt to these only.
    pub process: (usize, usize),
}

/// Builds the source operator: chunks (to this worker's stamp operator) and summaries
/// (to be broadcast).
pub fn read_chunks<'s>(
    scope: Scope<'s, Time>,
    config: ReadChunks,
) -> (
    StreamVec<'s, Time, SourceChunk>,
    StreamVec<'s, Time, ChunkSummary>,
) {
    let ReadChunks {
        input,
        max_out_of_orderness,
        resumed_max_event_time,
        interner,
        backlog,
        control,
        metrics,
        process: (first, local),
    } = config;
    let mut builder = OperatorBuilder::new("ReadChunks".to_owned(), scope);
    let info = builder.operator_info();
    let (chunks_out, chunks) = builder.new_output::<Vec<SourceChunk>>();
    let (summaries_out, summaries) = builder.new_output::<Vec<ChunkSummary>>();
    let mut chunks_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<SourceChunk>>>::from(chunks_out);
    let mut summaries_out =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<ChunkSummary>>>::from(summaries_out);

    let activator = scope.activator_for(info.address.clone());
    *backlog.reader.borrow_mut() = Some(activator.clone());
    let (origin, mut source) = if input.per_process() {
        (first, input.worker_source(scope.index() - first, local))
    } else {
        (0, input.worker_source(scope.index(), scope.peers()))
    };
    backlog.origin.set(origin);
    source.set_activator(scope.worker().sync_activator_for(info.address.to_vec()));
    control.wake_on_stop(scope.worker().sync_activator_for(info.address.to_vec()));

    builder.build(move |capabilities| {
        let mut capabilities = Some(capabilities);
        let mut own_max: Option<i64> = resumed_max_event_time;
        move |_frontiers| {
            let Some(caps) = capabilities.as_mut() else {
                return;
            };
            if control.stopped() {
                capabilities = None;
                return;
            }
            let bound = own_max.max(backlog.known.get());
            let watermark = bound.map_or(Time::MIN, |m| m.saturating_sub(max_out_of_orderness));
            for cap in caps.iter_mut() {
                if *cap.time() < watermark {
                    cap.downgrade(&watermark);
                }
            }
            if backlog.full() {
                return;
            }
            if backlog.holding() {
                activator.activate();
                return;
            }
            if control.paused() {
                activator.activate_after(PAUSE_POLL);
                return;
            }
            let polled = source.poll(&mut interner.borrow_mut());
            match polled {
                Ok(SourcePoll::Chunk(index, chunk)) => {
                    // A graceful stop cut the input before this chunk.
                    if !control.claim_chunk(index) {
                        capabilities = None;
                        return;
                    }
                    control.note_chunk(chunk.lines, chunk.max_event_time);
                    Metrics::add(&metrics.readings, chunk.batch.len as u64);
                    Metrics::add(&metrics.bad, chunk.bad.len() as u64);
                    Metrics::add(&metrics.input_bytes, chunk.bytes);
                    let summary = ChunkSummary {
                        index,
                        max_event_time: chunk.max_event_time,
                        lines: chunk.lines,
                        origin,
                    };
                    if let Some(m) = chunk.max_event_time {
                        own_max = Some(own_max.map_or(m, |o| o.max(m)));
                    }
                    chunks_out
                        .activate()
                        .session(&caps[0])
                        .give(SourceChunk { index, chunk });
                    summaries_out.activate().session(&caps[1]).give(summary);
                    backlog.push();
                    // The next activation moves the capabilities past this chunk.
                    activator.activate();
                }
                // The source wakes us when data arrives.
                Ok(SourcePoll::Pending) => {}
                Ok(SourcePoll::Done) => capabilities = None,
                Err(e) => {
                    control.fail(e.into());
                    capabilities = None;
                }
            }
        }
    });
    (chunks, summaries)
}
