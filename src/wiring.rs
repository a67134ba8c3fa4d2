//! Where the engine meets sync. Neither knows the other: the engine tells closures about
//! committed and superseded files and asks one whether to pause its sources; sync offers
//! a [`SyncHandle`]. The command line and the node join the two here.

use std::sync::Arc;

use crate::engine::RunConfig;
use crate::engine::control::Control;
use crate::sink::{CommittedFile, Superseded};
use crate::sync::SyncHandle;

/// Makes the run of `config` report its files to `sync` and pause its sources while
/// sync's quota is full. Replaces `config.control` with a fresh one that has the pause.
pub fn attach_sync(config: &mut RunConfig, sync: &SyncHandle) {
    let committed = sync.clone();
    config.on_commit = Some(Arc::new(move |file: &CommittedFile| {
        committed.committed(file);
    }));
    let superseded = sync.clone();
    config.on_supersede = Some(Arc::new(move |moved: &Superseded| {
        superseded.superseded(moved);
    }));
    let compacted = sync.clone();
    config.on_compact = Some(Arc::new(move |from: &str, into: &str| {
        compacted.compacted(from, into)
    }));
    let quota = sync.clone();
    config.control = Arc::new(Control::with_pause(Some(Arc::new(move || {
        quota.over_quota()
    }))));
}
