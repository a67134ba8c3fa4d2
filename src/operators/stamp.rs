//! Resolves each chunk's place in the input: the watermark where it starts and the line
//! number of its first line.
//!
//! Every worker hears every chunk's summary. Chunk `k` is released once the summaries of
//! chunks `0..k` are all known: its watermark is the largest event time among them minus
//! the allowed out-of-orderness, and it travels at that time. The watermark in force at
//! any reading is then exactly what one sequential pass over the input would have, for
//! any number of workers, and so is the set of late readings.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::vec::Broadcast;

use super::read_chunks::Backlog;
use super::{ChunkSummary, SourceChunk, StampedChunk, Time};
use crate::decode::{BadRecord, DecodedChunk};
use crate::engine::control::Control;

/// The contiguous prefix of the input whose summaries are known.
#[derive(Debug, Default)]
struct Prefix {
    /// Chunks `0..next` are summarised.
    next: u64,
    /// Largest event time in them.
    max_event_time: Option<i64>,
    /// Lines in them.
    lines: u64,
}

/// Stamps chunks with their watermark and line numbers.
pub trait Stamp<'s> {
    /// Stamps `self` (this worker's chunks) using every worker's `summaries`, starting
    /// from the largest event time `resumed_max` of earlier runs. Returns the stamped
    /// chunks and their bad records with global line numbers.
    fn stamp(
        self,
        summaries: StreamVec<'s, Time, ChunkSummary>,
        resumed_max: Option<i64>,
        max_out_of_orderness: i64,
        line_base: u64,
        backlog: Rc<Backlog>,
        control: Arc<Control>,
    ) -> (
        StreamVec<'s, Time, StampedChunk>,
        StreamVec<'s, Time, BadRecord>,
    );
}

impl<'s> Stamp<'s> for StreamVec<'s, Time, SourceChunk> {
    fn stamp(
        self,
        summaries: StreamVec<'s, Time, ChunkSummary>,
        resumed_max: Option<i64>,
        max_out_of_orderness: i64,
        line_base: u64,
        backlog: Rc<Backlog>,
        control: Arc<Control>,
    ) -> (
        StreamVec<'s, Time, StampedChunk>,
        StreamVec<'s, Time, BadRecord>,
    ) {
        let mut builder = OperatorBuilder::new("Stamp".to_owned(), self.scope());
        let mut chunks_in = builder.new_input(self, Pipeline);
        let mut summaries_in = builder.new_input(summaries.broadcast(), Pipeline);
        let (stamped_out, stamped) = builder.new_output::<Vec<StampedChunk>>();
        let (bad_out, bad) = builder.new_output::<Vec<BadRecord>>();
        let mut stamped_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<StampedChunk>>>::from(stamped_out);
        let mut bad_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<BadRecord>>>::from(bad_out);

        builder.build(move |_capabilities| {
            let mut waiting: VecDeque<(u64, [Capability<Time>; 2], DecodedChunk)> = VecDeque::new();
            let mut known: BTreeMap<u64, ChunkSummary> = BTreeMap::new();
            let mut prefix = Prefix {
                max_event_time: resumed_max,
                ..Prefix::default()
            };
            move |frontiers| {
                chunks_in.for_each_stamp(|cap, data| {
                    for batch in data {
                        for SourceChunk { index, chunk } in batch.drain(..) {
                            let Some(time) = cap.least().copied() else {
                                continue;
                            };
                            let caps = [cap.delayed(&time, 0), cap.delayed(&time, 1)];
                            waiting.push_back((index, caps, chunk));
                        }
                    }
                });
                summaries_in.for_each_stamp(|_cap, data| {
                    for batch in data {
                        for s in batch.drain(..) {
                            if s.origin == backlog.origin() {
                                known.insert(s.index, s);
                            }
                        }
                    }
                });
                let mut stamped_session = stamped_out.activate();
                let mut bad_session = bad_out.activate();
                loop {
                    if waiting
                        .front()
                        .is_some_and(|(index, _, _)| *index == prefix.next)
                    {
                        let Some((index, caps, chunk)) = waiting.pop_front() else {
                            break;
                        };
                        let watermark = prefix
                            .max_event_time
                            .map_or(Time::MIN, |m| m.saturating_sub(max_out_of_orderness));
                        let time = watermark.max(*caps[0].time());
                        let first_line = line_base + prefix.lines;
                        let DecodedChunk { batch, bad, .. } = chunk;
                        stamped_session
                            .session(&caps[0].delayed(&time))
                            .give(StampedChunk {
                                index,
                                watermark,
                                batch,
                            });
                        if !bad.is_empty() {
                            let cap = caps[1].delayed(&time);
                            let mut session = bad_session.session(&cap);
                            for mut record in bad {
                                record.line += first_line;
                                session.give(record);
                            }
                        }
                        backlog.pop();
                        continue;
                    }
                    match known.remove(&prefix.next) {
                        Some(s) => {
                            if let Some(m) = s.max_event_time {
                                prefix.max_event_time =
                                    Some(prefix.max_event_time.map_or(m, |p| p.max(m)));
                            }
                            prefix.lines += s.lines;
                            prefix.next += 1;
                        }
                        None => break,
                    }
                }
                backlog.know(prefix.max_event_time);
                control.note_prefix(prefix.lines, prefix.max_event_time);
                // Every reader is done, yet chunks wait for one no reader will bring:
                // readers that stop on a failure leave such gaps. Holding the chunks'
                // capabilities would keep the dataflow from ever completing.
                if !waiting.is_empty() && frontiers.iter().all(|f| f.frontier().is_empty()) {
                    if !control.stopped() {
                        control.fail(crate::Error::Internal(format!(
                            "chunk {} of the input never arrived",
                            prefix.next
                        )));
                    }
                    waiting.clear();
                }
            }
        });
        (stamped, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Batch;
    use timely::dataflow::operators::capture::Extract;
    use timely::dataflow::operators::vec::Map;
    use timely::dataflow::operators::{Capture, ToStream};

    fn chunk(index: u64, max: i64, bad_lines: &[u64]) -> SourceChunk {
        let bad = bad_lines
            .iter()
            .map(|&line| BadRecord {
                line,
                reason: "bad".into(),
                raw: String::new(),
            })
            .collect();
        SourceChunk {
            index,
            chunk: DecodedChunk {
                batch: Batch::new(&[], 0),
                bad,
                lines: 10,
                max_event_time: Some(max),
                bytes: 0,
            },
        }
    }

    /// Ten-line chunks' summaries from (index, largest event time).
    fn summaries(chunks: &[(u64, i64)]) -> Vec<ChunkSummary> {
        chunks
            .iter()
            .map(|&(index, max)| ChunkSummary {
                index,
                max_event_time: Some(max),
                lines: 10,
                origin: 0,
            })
            .collect()
    }

    /// This worker owns chunks 1 and 3; the summaries of chunks 0 and 2 come from other
    /// workers, out of order. Each chunk is released with the watermark of everything
    /// before it, and its bad lines get file line numbers.
    #[test]
    fn releases_chunks_with_the_watermark_of_all_earlier_chunks() {
        let (stamped, bad) = timely::execute_directly(|worker| {
            worker.dataflow::<Time, _, _>(|scope| {
                let chunks = vec![chunk(1, 500, &[3]), chunk(3, 900, &[])]
                    .to_stream(scope)
                    .container::<Vec<_>>();
                let summaries = summaries(&[(2, 700), (3, 900), (0, 300), (1, 500)])
                    .to_stream(scope)
                    .container::<Vec<_>>();
                let (stamped, bad) = chunks.stamp(
                    summaries,
                    None,
                    100,
                    1,
                    Rc::new(Backlog::default()),
                    Arc::new(Control::default()),
                );
                (
                    stamped.map(|c| (c.index, c.watermark)).capture(),
                    bad.map(|r| r.line).capture(),
                )
            })
        });
        assert_eq!(
            stamped.extract(),
            vec![(200, vec![(1, 200)]), (600, vec![(3, 600)])]
        );
        // Chunk 1 starts after chunk 0's ten lines: its local line 3 is line 14.
        assert_eq!(bad.extract(), vec![(200, vec![14])]);
    }

    /// Readers that stopped on a failure never bring chunk 2: chunk 3 is dropped (the run
    /// has failed) instead of holding the dataflow open, and so is any such gap when no
    /// failure explains it, which then fails the run.
    #[test]
    fn a_gap_no_reader_will_fill_ends_the_dataflow() {
        for stopped in [true, false] {
            let control = Arc::new(Control::default());
            if stopped {
                control.stop();
            }
            let shared = control.clone();
            let stamped = timely::execute_directly(move |worker| {
                worker.dataflow::<Time, _, _>(|scope| {
                    let chunks = vec![chunk(1, 500, &[]), chunk(3, 900, &[])]
                        .to_stream(scope)
                        .container::<Vec<_>>();
                    let summaries = summaries(&[(0, 300), (1, 500), (3, 900)])
                        .to_stream(scope)
                        .container::<Vec<_>>();
                    let (stamped, _) = chunks.stamp(
                        summaries,
                        None,
                        100,
                        1,
                        Rc::new(Backlog::default()),
                        shared.clone(),
                    );
                    stamped.map(|c| c.index).capture()
                })
            });
            assert_eq!(stamped.extract(), vec![(200, vec![1])]);
            assert_eq!(control.failed(), !stopped);
        }
    }
}
