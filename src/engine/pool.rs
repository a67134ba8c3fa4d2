//! Timely workers that outlive their dataflows: queries come and go on one set of
//! worker threads.
//!
//! `edgeflow run` builds one dataflow and ends; a node builds a dataflow for every query
//! it starts, while the others keep running, and the dataflow leaves the workers when
//! its input has ended and everything in it is written. Every worker builds the
//! dataflows in the same order (timely matches a dataflow's channels across workers by
//! the order of construction), which one queue of commands per worker, fed in one
//! order under one lock, guarantees.

use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::Thread;

use super::dataflow::{self, Shared};
use crate::Error;
use crate::operators::Time;

/// What the workers are told.
enum Command {
    /// Build this dataflow and run it until it completes.
    Build(Arc<Job>),
    /// Leave once every dataflow has completed.
    Shutdown,
}

/// One query's dataflow on every worker, and who waits for it.
pub(super) struct Job {
    shared: Shared,
    left: Mutex<JobState>,
    finished: Condvar,
}

struct JobState {
    /// Workers on which the dataflow has not completed yet.
    workers: usize,
    /// A worker died (panicked) while it ran the dataflow.
    panicked: bool,
}

impl Job {
    fn worker_done(&self, panicked: bool) {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        left.workers = left.workers.saturating_sub(1);
        left.panicked |= panicked;
        if left.workers == 0 || panicked {
            self.finished.notify_all();
        }
    }

    /// Blocks until the dataflow has completed on every worker; `false` as soon as a
    /// worker died in it (the others then wait for its progress forever).
    pub(super) fn wait(&self) -> bool {
        let mut left = self.left.lock().unwrap_or_else(|p| p.into_inner());
        while left.workers > 0 && !left.panicked {
            left = self.finished.wait(left).unwrap_or_else(|p| p.into_inner());
        }
        !left.panicked
    }

    /// Whether the dataflow has completed on every worker, or died on one.
    pub(super) fn is_finished(&self) -> bool {
        self.left
            .lock()
            .map_or(true, |l| l.workers == 0 || l.panicked)
    }
}

/// The dataflows a worker runs; a worker that unwinds tells their waiters.
struct Running(Vec<(usize, Arc<Job>)>);

impl Drop for Running {
    fn drop(&mut self) {
        for (_, job) in self.0.drain(..) {
            job.worker_done(true);
        }
    }
}

/// The senders, under one lock so every worker sees the commands in one order.
struct Commands {
    senders: Vec<Sender<Command>>,
    /// Worker threads, woken after a command (an idle worker is parked).
    threads: Vec<Thread>,
}

/// A fixed set of timely worker threads running dataflows built on demand.
///
/// In a cluster ([`crate::cluster`]) the set spans processes: this process runs the
/// workers `first..first + local` of `peers`, and every process builds the same
/// dataflows in the same order.
pub struct Workers {
    peers: usize,
    processes: usize,
    first: usize,
    local: usize,
    commands: Arc<Mutex<Commands>>,
    guards: Mutex<Option<timely::communication::WorkerGuards<()>>>,
}

/// How a worker thread is handed to timely.
type Serve = Box<dyn Fn(&mut timely::worker::Worker) + Send + Sync>;

impl Workers {
    /// Starts `peers` worker threads (at least one).
    pub fn start(peers: usize) -> Result<Workers, Error> {
        let peers = peers.max(1);
        Self::launch(peers, 1, 0, |serve| {
            timely::execute(timely::Config::process(peers), serve)
        })
    }

    /// Starts `threads` worker threads as process `cluster.process` of a cluster, on
    /// the `sockets` [`crate::cluster::Cluster::connect`] made. From here on, a peer
    /// that dies ends this process too ([`crate::cluster::exit_when_a_peer_dies`]).
    pub fn start_cluster(
        threads: usize,
        cluster: &crate::cluster::Cluster,
        sockets: Vec<Option<std::net::TcpStream>>,
    ) -> Result<Workers, Error> {
        use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
        use timely::communication::allocator::{AllocatorBuilder, ProcessBuilder};
        let threads = threads.max(1);
        crate::cluster::exit_when_a_peer_dies(cluster.addresses.clone());
        let process = cluster.process;
        Self::launch(threads, cluster.processes(), process, move |serve| {
            let hooks = timely::communication::Hooks::default();
            let locals = ProcessBuilder::new_typed_vector(
                threads,
                hooks.refill.clone(),
                hooks.spill.clone(),
            );
            let (builders, guard) =
                initialize_networking_from_sockets(locals, sockets, process, threads, hooks)
                    .map_err(|e| format!("connecting the cluster's workers: {e}"))?;
            let builders = builders.into_iter().map(AllocatorBuilder::Tcp).collect();
            timely::execute::execute_from(
                builders,
                Box::new(guard),
                timely::WorkerConfig::default(),
                serve,
            )
        })
    }

    /// Starts this process's `local` workers of `processes` through `execute`.
    fn launch(
        local: usize,
        processes: usize,
        process: usize,
        execute: impl FnOnce(Serve) -> Result<timely::communication::WorkerGuards<()>, String>,
    ) -> Result<Workers, Error> {
        let first = process * local;
        let mut senders = Vec::with_capacity(local);
        let mut receivers = Vec::with_capacity(local);
        for _ in 0..local {
            let (tx, rx) = channel();
            senders.push(tx);
            receivers.push(Some(rx));
        }
        let receivers = Arc::new(Mutex::new(receivers));
        let commands = Arc::new(Mutex::new(Commands {
            senders,
            threads: Vec::new(),
        }));
        let registry = commands.clone();
        let guards = execute(Box::new(move |worker| {
            let receiver = receivers.lock().ok().and_then(|mut r| {
                r.get_mut(worker.index().wrapping_sub(first))
                    .and_then(Option::take)
            });
            if let Ok(mut c) = registry.lock() {
                c.threads.push(std::thread::current());
            }
            if let Some(receiver) = receiver {
                serve(worker, &receiver);
            }
        }))
        .map_err(|e| Error::Internal(format!("starting workers: {e}")))?;
        Ok(Workers {
            peers: local * processes,
            processes,
            first,
            local,
            commands,
            guards: Mutex::new(Some(guards)),
        })
    }

    /// Worker threads, in every process of a cluster.
    pub fn peers(&self) -> usize {
        self.peers
    }

    /// Worker threads of this process.
    pub fn local(&self) -> usize {
        self.local
    }

    /// Index of this process's first worker (0 outside a cluster).
    pub fn first(&self) -> usize {
        self.first
    }

    /// The cluster these workers are a process of (none: a single process).
    pub fn cluster_shape(&self) -> Option<crate::stream::ClusterShape> {
        (self.processes > 1).then(|| crate::stream::ClusterShape {
            processes: self.processes,
            process: self.first / self.local.max(1),
            workers: self.peers,
        })
    }

    /// Builds `shared`'s dataflow on every worker; the job ends when it completes.
    pub(super) fn build(&self, shared: Shared) -> Result<Arc<Job>, Error> {
        let job = Arc::new(Job {
            shared,
            left: Mutex::new(JobState {
                workers: self.local,
                panicked: false,
            }),
            finished: Condvar::new(),
        });
        self.send(|| Command::Build(job.clone()))?;
        Ok(job)
    }

    fn send(&self, command: impl Fn() -> Command) -> Result<(), Error> {
        let commands = self
            .commands
            .lock()
            .map_err(|_| Error::Internal("the workers' command lock is poisoned".into()))?;
        for sender in &commands.senders {
            sender
                .send(command())
                .map_err(|_| Error::Internal("a timely worker has died".into()))?;
        }
        for thread in &commands.threads {
            thread.unpark();
        }
        Ok(())
    }

    /// Lets every running dataflow complete, then ends the worker threads; `false` if
    /// a worker panicked.
    pub fn shutdown(&self) -> bool {
        self.send(|| Command::Shutdown).ok();
        let guards = self.guards.lock().ok().and_then(|mut g| g.take());
        guards.is_none_or(|g| g.join().into_iter().all(|r| r.is_ok()))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if self.processes > 1 {
            // A cluster process that fails leaves without the clean goodbye: joining
            // would wait for its peers, whose workers wait for this process's forever.
            // Left running, the workers end with the process, and the peers stop with
            // an error naming it.
            if let Some(guards) = self.guards.lock().ok().and_then(|mut g| g.take()) {
                std::mem::forget(guards);
            }
            return;
        }
        self.shutdown();
    }
}

/// One worker's loop: build what it is told, step its dataflows, report those that
/// completed.
fn serve(worker: &mut timely::worker::Worker, commands: &Receiver<Command>) {
    let mut running = Running(Vec::new());
    let mut leaving = false;
    loop {
        loop {
            match commands.try_recv() {
                Ok(Command::Build(job)) => {
                    let index = worker.next_dataflow_index();
                    worker.dataflow::<Time, _, _>(|scope| dataflow::build(scope, &job.shared));
                    running.0.push((index, job));
                }
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => leaving = true,
                Err(TryRecvError::Empty) => break,
            }
            if leaving {
                break;
            }
        }
        if leaving && running.0.is_empty() {
            return;
        }
        worker.step_or_park(None);
        let installed = worker.installed_dataflows();
        running.0.retain(|(index, job)| {
            let alive = installed.contains(index);
            if !alive {
                job.worker_done(false);
            }
            alive
        });
    }
}
