//! Wires one worker's dataflow: source, stamp, windows, merge, sinks.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::Scope;
use timely::dataflow::operators::Concat;
use timely::dataflow::operators::vec::ToStream;

use super::control::{Control, Metrics};
use crate::batch::Interner;
use crate::operators::Time;
use crate::operators::dead_letter::DeadLetters;
use crate::operators::key_merge::KeyMerge;
use crate::operators::read_chunks::{Backlog, ReadChunks, read_chunks};
use crate::operators::registry;
use crate::operators::session_stitch::SessionStitch;
use crate::operators::stamp::Stamp;
use crate::operators::window_merge::WindowMerge;
use crate::operators::window_partial::{ReaderShare, WindowPartial};
use crate::operators::write_late::WriteLate;
use crate::operators::write_parquet::{Notify, WriteParquet, Writers};
use crate::query::QueryPlan;
use crate::registry::Registry;
use crate::sink::{Layout, late_schema, unique_result_column};
use crate::source::OpenInput;
use crate::stream::Continuation;
use crate::window::assign::WindowAssigner;
use crate::window::state::{PartialWindow, RESUMED, RESUMED_UNWRITTEN, split_by_key_owner};

/// What every worker shares.
#[derive(Clone)]
pub struct Shared {
    /// The plan.
    pub plan: Arc<QueryPlan>,
    /// The opened input.
    pub input: Arc<dyn OpenInput>,
    /// Where outputs go.
    pub layout: Layout,
    /// Told about every committed and superseded file.
    pub notify: Notify,
    /// What earlier runs left and this run adds to the stream.
    pub stream: Arc<Continuation>,
    /// Line number of the first line this run reads.
    pub first_line: u64,
    /// Input description for dead letters.
    pub input_name: String,
    /// Stop switch and fatal error.
    pub control: Arc<Control>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The result writers' threads, joined when the workers are done.
    pub writers: Writers,
    /// The registry the query joins, if it joins one.
    pub registry: Option<Arc<Registry>>,
    /// This process's first worker (0 outside a cluster).
    pub first_worker: usize,
    /// This process's workers.
    pub local_workers: usize,
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
            resumed_max_event_time: shared.stream.max_event_time,
            interner: interner.clone(),
            backlog: backlog.clone(),
            control: shared.control.clone(),
            metrics: shared.metrics.clone(),
            process: (shared.first_worker, shared.local_workers),
        },
    );
    let (stamped, bad) = chunks.stamp(
        summaries,
        shared.stream.max_event_time,
        ooo,
        shared.first_line,
        backlog.clone(),
        shared.control.clone(),
    );
    bad.dead_letters(
        shared.layout.clone(),
        shared.input_name.clone(),
        shared.notify.commit.clone(),
        shared.control.clone(),
    );
    let (partials, late) = stamped.window_partial(
        plan.clone(),
        late_schema(&plan),
        ReaderShare { interner, backlog },
        shared.stream.uncorrectable_until,
        shared.control.clone(),
        shared.metrics.clone(),
    );
    let epoch = WindowAssigner::new(plan.window).slide();
    // The registry's versions are stamped by the watermark, which the late output's
    // frontier is.
    let (registry_progress, registry_trace) = match &shared.registry {
        Some(registry) => {
            // Under an allowance, a later run may write a closed window again: it must
            // find the version the window closed under.
            let kept = (plan.source.allowed_lateness > 0).then(|| registry::KeptVersions {
                path: crate::registry::History::path(shared.layout.root(), &plan.name),
                resumed: shared
                    .stream
                    .max_event_time
                    .map_or(Time::MIN, |m| m.saturating_sub(ooo)),
                reach: crate::operators::window_merge::correction_reach(&plan),
                slide: epoch,
                control: shared.control.clone(),
                stream: shared.stream.clone(),
                max_out_of_orderness: ooo,
            });
            let arranged =
                registry::arrange(late.clone(), registry.clone(), kept, shared.metrics.clone());
            (arranged.progress, Some(arranged.trace))
        }
        None => (Vec::<()>::new().to_stream(scope), None),
    };
    late.write_late(
        shared.layout.clone(),
        epoch,
        shared.notify.commit.clone(),
        shared.control.clone(),
        shared.metrics.clone(),
        shared.writers.clone(),
    );
    // Windows an earlier run left open join this run's partials at their keys' owners;
    // the first worker of each process hands out those its process kept.
    // Of a SESSION query, only corrections a checkpoint cut short go this way (kept
    // sessions go straight back to their stitcher, not through the panes).
    let resumed: Vec<PartialWindow> = if scope.index() == shared.first_worker {
        shared
            .stream
            .resumed
            .iter()
            .filter(|w| !plan.window.is_session() || w.correction.is_some())
            .flat_map(|w| {
                let from = if w.unwritten {
                    RESUMED_UNWRITTEN
                } else {
                    RESUMED
                };
                let mut parts =
                    split_by_key_owner(w.start, w.end, &w.keys, &w.accs, from, scope.peers());
                for part in &mut parts {
                    part.correction = w.correction;
                }
                parts
            })
            .collect()
    } else {
        Vec::new()
    };
    let merged = partials
        .concat(resumed.to_stream(scope))
        .key_merge(shared.metrics.clone());
    let merged = if plan.window.is_session() {
        merged.session_stitch(
            plan.clone(),
            shared.stream.clone(),
            shared.control.clone(),
            shared.metrics.clone(),
        )
    } else {
        merged
    };
    merged
        .window_merge(
            registry_progress,
            registry_trace,
            plan.clone(),
            shared.stream.clone(),
            shared.control.clone(),
            shared.metrics.clone(),
        )
        .write_parquet(
            plan.clone(),
            shared.layout.clone(),
            unique_result_column(&plan),
            shared.stream.clone(),
            shared.notify.clone(),
            shared.control.clone(),
            shared.metrics.clone(),
            shared.writers.clone(),
        );
}
