//! A node on several processes: its queries' workers span them (timely's cluster
//! mode), each process receives its own share of the live sources into its own
//! write-ahead log and output folder, and process 0 leads the steps every process must
//! take together ([`crate::cluster::lockstep`]).

use std::path::Path;

use crate::Error;
use crate::cluster::lockstep::Lockstep;
use crate::cluster::{Cluster, Hello, stream_fact};
use crate::engine::Workers;
use crate::query::QueryPlan;
use crate::stream::StreamState;

/// What every process of a node's cluster must be started with besides the queries.
pub struct Settings {
    /// `--fresh`: forget what earlier runs kept.
    pub fresh: bool,
    /// `--checkpoint-every`, which process 0 follows for every process.
    pub checkpoint_every: std::time::Duration,
}

/// A node process joined to its cluster.
pub struct Joined {
    /// The workers of every process.
    pub workers: Workers,
    /// Steps led by process 0.
    pub lockstep: Lockstep,
}

/// Connects this process to the others once each agrees on what the node computes:
/// the same edgeflow, workers and queries, and every query's stream at the same commit.
/// A process one commit ahead of a peer (it died between the processes' commits) goes
/// back to the commit before, whose log it kept, and replays from there.
pub fn join(
    cluster: &Cluster,
    queries: &[QueryPlan],
    output: &Path,
    workers: usize,
    settings: &Settings,
) -> Result<Joined, Error> {
    let fresh = settings.fresh;
    // Only process 0's `--checkpoint-every` counts: compared, so that no operator
    // believes another process checkpoints at its own.
    let mut hello = Hello::default()
        .with("edgeflow version", env!("CARGO_PKG_VERSION"))
        .with("processes", cluster.processes())
        .with("workers per process", workers)
        .with("--fresh", fresh)
        .with(
            "--checkpoint-every",
            humantime::format_duration(settings.checkpoint_every),
        );
    for plan in queries {
        hello = hello
            .with_plan(plan)
            .map_err(|e| Error::Internal(e.to_string()))?;
        if fresh {
            hello = hello
                .with_revisions(output, &plan.name)
                .map_err(|e| Error::Internal(e.to_string()))?;
        } else {
            // Each process logs its own traffic, so positions in the logs differ: the
            // processes compare how many runs (checkpoints included) each committed.
            let commits = |state: &StreamState| format!("committed runs: {}", state.commits);
            let now = match StreamState::load(output, plan) {
                Ok(state) => commits(&state),
                Err(e) => format!("unreadable ({e})"),
            };
            let before = StreamState::load_previous(output, plan)
                .ok()
                .flatten()
                .map(|state| commits(&state));
            hello = hello.with_position(stream_fact(&plan.name), now, before);
        }
    }
    let connected = cluster.connect(&hello)?;
    if fresh {
        crate::cluster::number_past_peers(output, queries, &connected)?;
    }
    for plan in queries {
        if connected.ahead.contains(&stream_fact(&plan.name)) {
            StreamState::roll_back(output, &plan.name)?;
            tracing::warn!(query = %plan.name, "This process committed a checkpoint a peer had not: back to the one before, replaying its log from there");
        }
    }
    let workers = Workers::start_cluster(workers, cluster, connected.sockets)?;
    let lockstep = cluster.lockstep(connected.listener)?;
    Ok(Joined { workers, lockstep })
}
