//! Per-worker window aggregation: `WHERE`, window assignment, lateness, and partial
//! aggregates sent to each key's owner when the frontier passes a window's end.
//!
//! Aggregating locally before the exchange means readings never cross workers; only one
//! partial row per (window, key, worker) does. The operator holds one capability per open
//! window, at `end - 1`, so the owner's frontier cannot pass a window before every
//! worker's share of it has arrived.
//!
//! Corrections (readings within the allowed lateness of a window that had closed when
//! their chunk started) go out with their chunk, at its time, marked with when they are
//! due ([`PartialWindow::correction`], [`correction_due`]).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{ArrayRef, TimestampMicrosecondArray};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::StreamVec;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;

use super::read_chunks::Backlog;
use super::{LateRows, StampedChunk, Time};
use crate::batch::arrow::to_arrow;
use crate::batch::{Batch, Column, Interner};
use crate::engine::control::{Control, GaugeClock, Metrics};
use crate::eval::{Scope, eval, selection};
use crate::query::QueryPlan;
use crate::query::expr::ColumnRef;
use crate::window::closed::correction_due;
use crate::window::state::{LateRow, PartialWindow, WindowState};

/// Aggregates stamped chunks into per-worker partial windows.
pub trait WindowPartial<'s> {
    /// Returns partial windows (to be exchanged by `target`) and late readings.
    fn window_partial(
        self,
        plan: Arc<QueryPlan>,
        late_schema: SchemaRef,
        reader: ReaderShare,
        uncorrectable_until: i64,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> (
        StreamVec<'s, Time, PartialWindow>,
        StreamVec<'s, Time, LateRows>,
    );
}

/// What the window operator shares with its worker's reader: the interner the reader
/// fills, and the backlog through which a closing window holds the reader back.
pub struct ReaderShare {
    /// The worker's interner.
    pub interner: Rc<RefCell<Interner>>,
    /// The reader's backlog.
    pub backlog: Rc<Backlog>,
}

fn late_batch(
    schema: &SchemaRef,
    plan: &QueryPlan,
    batch: &Batch,
    late: &[LateRow],
    interner: &Interner,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let rows: Vec<usize> = late.iter().map(|l| l.row as usize).collect();
    let mut arrays: Vec<ArrayRef> = batch
        .columns
        .iter()
        .zip(&plan.source.columns)
        .map(|(c, f)| to_arrow(c, f.ty, interner, Some(&rows)))
        .collect();
    let times = |f: fn(&LateRow) -> i64| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(late.iter().map(f).collect::<Vec<_>>())
                .with_timezone("UTC"),
        )
    };
    arrays.push(times(|l| l.start));
    arrays.push(times(|l| l.end));
    arrays.push(times(|l| l.watermark));
    RecordBatch::try_new(schema.clone(), arrays)
}

impl<'s> WindowPartial<'s> for StreamVec<'s, Time, StampedChunk> {
    fn window_partial(
        self,
        plan: Arc<QueryPlan>,
        late_schema: SchemaRef,
        reader: ReaderShare,
        uncorrectable_until: i64,
        control: Arc<Control>,
        metrics: Arc<Metrics>,
    ) -> (
        StreamVec<'s, Time, PartialWindow>,
        StreamVec<'s, Time, LateRows>,
    ) {
        let ReaderShare { interner, backlog } = reader;
        let worker = self.scope().index();
        let peers = self.scope().peers();
        let assigner = crate::window::assign::WindowAssigner::new(plan.window);
        let (window_size, slide) = (assigner.size(), assigner.slide());
        let mut builder = OperatorBuilder::new("WindowPartial".to_owned(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let (partial_out, partials) = builder.new_output::<Vec<PartialWindow>>();
        let (late_out, late) = builder.new_output::<Vec<LateRows>>();
        let mut partial_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<PartialWindow>>>::from(partial_out);
        let mut late_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<LateRows>>>::from(late_out);

        builder.build(move |_capabilities| {
            let mut state = WindowState::new(&plan);
            state.refuse_corrections_until(uncorrectable_until);
            let mut window_caps: BTreeMap<i64, Capability<Time>> = BTreeMap::new();
            let mut late_rows: Vec<LateRow> = Vec::new();
            let mut gauge = GaugeClock::default();
            move |frontiers| {
                let mut late_session = late_out.activate();
                let mut corrections = partial_out.activate();
                input.for_each_stamp(|cap, data| {
                    for chunks in data {
                        for StampedChunk {
                            watermark, batch, ..
                        } in chunks.drain(..)
                        {
                            let mut interner = interner.borrow_mut();
                            let leaf = |c: &ColumnRef| -> &Column { &batch.columns[c.index] };
                            let scope = Scope {
                                len: batch.len,
                                leaf: &leaf,
                            };
                            let selected = plan
                                .filter
                                .as_ref()
                                .map(|f| selection(f, &scope, &mut interner));
                            if let Some(s) = &selected {
                                Metrics::add(
                                    &metrics.filtered,
                                    s.iter().filter(|k| !**k).count() as u64,
                                );
                            }
                            let args: Vec<Option<Cow<'_, Column>>> = plan
                                .aggregates
                                .iter()
                                .map(|a| a.arg.as_ref().map(|e| eval(e, &scope, &mut interner)))
                                .collect();
                            let arg_refs: Vec<Option<&Column>> =
                                args.iter().map(|a| a.as_deref()).collect();
                            late_rows.clear();
                            state.ingest(
                                &batch,
                                watermark,
                                selected.as_deref(),
                                &arg_refs,
                                &interner,
                                &mut late_rows,
                            );
                            for (_start, end) in state.take_opened() {
                                window_caps
                                    .entry(end)
                                    .or_insert_with(|| cap.delayed(&(end - 1), 0));
                            }
                            Metrics::add(&metrics.corrections, state.accepted_late() as u64);
                            let time = cap.least().map_or(watermark, |t| watermark.max(*t));
                            let due = correction_due(time, slide);
                            let parts = state.take_corrections(due, worker, peers, &interner);
                            if !parts.is_empty() {
                                corrections
                                    .session(&cap.delayed(&time, 0))
                                    .give_iterator(parts.into_iter());
                            }
                            if !late_rows.is_empty() {
                                Metrics::add(&metrics.late, late_rows.len() as u64);
                                match late_batch(&late_schema, &plan, &batch, &late_rows, &interner)
                                {
                                    Ok(b) => {
                                        if let Some(time) = cap.least() {
                                            let late_cap = cap.delayed(time, 1);
                                            late_session
                                                .session(&late_cap)
                                                .give(LateRows { batch: b });
                                        }
                                    }
                                    Err(e) => control
                                        .fail(crate::Error::Internal(format!("late rows: {e}"))),
                                }
                            }
                        }
                    }
                });
                let limit = match frontiers[0].frontier().first() {
                    Some(&t) => t,
                    None => {
                        // Marked before the flush releases any window (see `WindowMerge`).
                        control.mark_input_ended();
                        Time::MAX
                    }
                };
                let closing = state.earliest_end().is_some_and(|end| end <= limit);
                if closing {
                    // The watermark has passed these windows' ends now: their time to
                    // durable starts here, before their state is taken. (A session's
                    // file closes later, at its stitcher.)
                    if !plan.window.is_session() {
                        for (&end, _) in window_caps.range(..=limit) {
                            metrics.window_closing(end - window_size);
                        }
                    }
                    metrics.sample_state(state.open_groups() as u64, state.state_bytes() as u64);
                    let parts = state.close_until(limit, worker, peers, &interner.borrow());
                    if !parts.is_empty() {
                        backlog.hold_for_close();
                    }
                    let session = &mut corrections;
                    for part in parts {
                        if let Some(cap) = window_caps.get(&part.end) {
                            // A container of one: see `window_pact`.
                            session.session(cap).give_container(&mut vec![part]);
                        }
                    }
                    window_caps.retain(|&end, _| end > limit);
                }
                if gauge.due(closing) {
                    metrics.state_now(
                        worker,
                        window_caps.len() as u64,
                        state.open_groups() as u64,
                        state.state_bytes() as u64,
                    );
                }
            }
        });
        (partials, late)
    }
}
