//! Wires one worker's dataflow: source, stamp, windows, merge, sinks.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::Scope;

use super::control::{Control, Metrics};
use crate::batch::Interner;
use crate::operators::Time;
use crate::operators::dead_letter::DeadLetters;
use crate::operators::read_chunks::{Backlog, ReadChunks, read_chunks};
use crate::operators::stamp::Stamp;
use crate::operators::window_merge::WindowMerge;
use crate::operators::window_partial::WindowPartial;
use crate::operators::write_late::WriteLate;
use crate::operators::write_parquet::{OnCommit, WriteParquet};
use crate::query::QueryPlan;
use crate::sink::{Layout, late_schema, result_schema, unique_result_column};
use crate::source::OpenInput;
use crate::window::assign::WindowAssigner;

/// What every worker shares.
#[derive(Clone)]
pub struct Shared {
    /// The plan.
    pub plan: Arc<QueryPlan>,
    /// The opened input.
    pub input: Arc<dyn OpenInput>,
    /// Where outputs go.
    pub layout: Layout,
    /// Told about every committed file.
    pub on_commit: OnCommit,
    /// Input description for dead letters.
    pub input_name: String,
    /// Stop switch and fatal error.
    pub control: Arc<Control>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// Builds the dataflow of one worker in `scope`.
pub fn build(scope: Scope<'_, Time>, shared: &Shared) {
    let plan = shared.plan.clone();
    let interner = Rc::new(RefCell::new(Interner::new()));
    let backlog = Rc::new(Backlog::default());
    let ooo = plan.source.max_out_of_orderness;
    let (chunks, summaries) = read_chunks(
        scope,
        ReadChunks {
            input: shared.input.clone(),
            max_out_of_orderness: ooo,
            interner: interner.clone(),
            backlog: backlog.clone(),
            control: shared.control.clone(),
            metrics: shared.metrics.clone(),
        },
    );
    let (stamped, bad) = chunks.stamp(summaries, ooo, shared.input.line_base(), backlog);
    bad.dead_letters(
        shared.layout.dead_letter_file(),
        shared.input_name.clone(),
        shared.control.clone(),
    );
    let (partials, late) = stamped.window_partial(
        plan.clone(),
        late_schema(&plan),
        interner,
        shared.control.clone(),
        shared.metrics.clone(),
    );
    let epoch = WindowAssigner::new(plan.window).slide();
    late.write_late(
        shared.layout.clone(),
        epoch,
        shared.on_commit.clone(),
        shared.control.clone(),
        shared.metrics.clone(),
    );
    partials
        .window_merge(
            plan.clone(),
            result_schema(&plan),
            shared.control.clone(),
            shared.metrics.clone(),
        )
        .write_parquet(
            shared.layout.clone(),
            unique_result_column(&plan),
            shared.on_commit.clone(),
            shared.control.clone(),
            shared.metrics.clone(),
        );
}
