//! A live node's processes move in lockstep, led by process 0.
//!
//! Every worker of every process builds a query's dataflows in one order, and a
//! checkpoint ends a query's dataflow and builds its successor: so which query
//! checkpoints when, and when the node stops, cannot be decided by each process's own
//! timer or signal. Process 0 decides (its `--checkpoint-every`, its `--for`, a signal
//! to it) and announces each step to the others before it takes it; a signal to another
//! process asks process 0 to stop the cluster. The steps travel as JSON lines on one
//! more connection from each process to process 0, opened on the cluster port after
//! timely's.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Cluster, ClusterError};

/// Marks the lockstep connection of a process to process 0.
const MAGIC: &[u8; 8] = b"EFSTEP01";

/// What process 0 tells every other process to do, in the order it does it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Checkpoint this query (end its dataflow at a chunk boundary, keep its windows,
    /// build its successor).
    Checkpoint(String),
    /// Stop the node: sources first, then every query keeps its windows.
    Stop,
}

/// This process's end of the lockstep.
pub struct Lockstep {
    role: Role,
}

enum Role {
    /// Process 0: announces steps to every other process, hears their stop requests.
    Leader {
        followers: Vec<(usize, TcpStream)>,
        requests: Receiver<usize>,
    },
    /// Any other process: takes the steps process 0 announces.
    Follower {
        leader: TcpStream,
        steps: Receiver<Step>,
    },
}

/// No step will come from process 0: its connection closed, or it sent what this
/// process cannot read (another edgeflow?).
#[derive(Debug, thiserror::Error)]
#[error(
    "process 0 of the cluster, which leads its checkpoints and stop, ended the lockstep without announcing the stop (its connection closed, or it sent a step this process cannot read: see process 0's log)"
)]
pub struct LeaderGone;

impl Cluster {
    /// Opens the lockstep connections on this process's cluster port (still open from
    /// [`Cluster::connect`]): every other process calls process 0.
    pub fn lockstep(&self, listener: TcpListener) -> Result<Lockstep, ClusterError> {
        let deadline = Instant::now() + self.connect_timeout;
        if self.process != 0 {
            drop(listener);
            let leader = self.dial(0, deadline)?;
            let mut frame = Vec::with_capacity(16);
            frame.extend_from_slice(MAGIC);
            frame.extend_from_slice(&(self.process as u64).to_le_bytes());
            (&leader)
                .write_all(&frame)
                .and_then(|()| leader.set_nodelay(true))
                .map_err(|e| self.failed(0, format!("lockstep connection: {e}")))?;
            let (sender, steps) = channel();
            let reader = leader
                .try_clone()
                .map_err(|e| self.failed(0, format!("lockstep connection: {e}")))?;
            std::thread::Builder::new()
                .name("edgeflow-lockstep".into())
                .spawn(move || read_steps(reader, &sender))
                .map_err(|e| self.failed(0, format!("lockstep reader: {e}")))?;
            return Ok(Lockstep {
                role: Role::Follower { leader, steps },
            });
        }
        let mut followers: Vec<(usize, TcpStream)> = Vec::new();
        let (sender, requests) = channel();
        while followers.len() + 1 < self.processes() {
            match listener.accept() {
                Ok((stream, from)) => {
                    let Some(peer) = self.lockstep_peer(&stream, deadline) else {
                        tracing::warn!(%from, "A connection to the cluster port that is not a lockstep peer; ignored");
                        continue;
                    };
                    if peer == 0
                        || peer >= self.processes()
                        || followers.iter().any(|f| f.0 == peer)
                    {
                        tracing::warn!(%from, peer, "A lockstep connection claiming a process this one does not expect; ignored");
                        continue;
                    }
                    let reader = stream
                        .try_clone()
                        .map_err(|e| self.failed(peer, format!("lockstep connection: {e}")))?;
                    let sender = sender.clone();
                    std::thread::Builder::new()
                        .name("edgeflow-lockstep".into())
                        .spawn(move || read_requests(peer, reader, &sender))
                        .map_err(|e| self.failed(peer, format!("lockstep reader: {e}")))?;
                    followers.push((peer, stream));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing = (1..self.processes())
                            .find(|p| !followers.iter().any(|f| f.0 == *p))
                            .unwrap_or(0);
                        return Err(self.failed(
                            missing,
                            "connected its workers but not its lockstep connection in time".into(),
                        ));
                    }
                    // The listener is non-blocking since `connect`: polled for the deadline.
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(self.failed(0, format!("accepting lockstep peers: {e}"))),
            }
        }
        Ok(Lockstep {
            role: Role::Leader {
                followers,
                requests,
            },
        })
    }

    /// Reads a lockstep greeting; the peer's index, or `None` for anything else.
    fn lockstep_peer(&self, stream: &TcpStream, deadline: Instant) -> Option<usize> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        stream.set_nonblocking(false).ok()?;
        stream.set_read_timeout(Some(left)).ok()?;
        let mut head = [0u8; 16];
        (&*stream).read_exact(&mut head).ok()?;
        if &head[..8] != MAGIC {
            return None;
        }
        stream.set_read_timeout(None).ok()?;
        stream.set_nodelay(true).ok()?;
        let mut index = [0u8; 8];
        index.copy_from_slice(&head[8..]);
        usize::try_from(u64::from_le_bytes(index)).ok()
    }
}

impl Lockstep {
    /// Whether this process leads (process 0).
    pub fn leads(&self) -> bool {
        matches!(self.role, Role::Leader { .. })
    }

    /// Process 0: tells every other process to take `step`, before taking it itself.
    /// A process that cannot be told is gone, which timely's connections report
    /// ([`super::exit_when_a_peer_dies`]).
    pub fn announce(&self, step: &Step) {
        let Role::Leader { followers, .. } = &self.role else {
            return;
        };
        for (peer, stream) in followers {
            if let Err(e) = send(stream, step) {
                tracing::warn!(peer, error = %e, ?step, "Cannot tell a process the node's next step");
            }
        }
    }

    /// Process 0: the process that asked the cluster to stop, if one did.
    pub fn stop_requested(&self) -> Option<usize> {
        match &self.role {
            Role::Leader { requests, .. } => requests.try_recv().ok(),
            Role::Follower { .. } => None,
        }
    }

    /// Any other process: the next step process 0 announced, waiting at most `wait`.
    pub fn next_step(&self, wait: Duration) -> Result<Option<Step>, LeaderGone> {
        let Role::Follower { steps, .. } = &self.role else {
            return Ok(None);
        };
        match steps.recv_timeout(wait) {
            Ok(step) => Ok(Some(step)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(LeaderGone),
        }
    }

    /// Any other process: asks process 0 to stop the cluster (this process was told
    /// to stop; it stops when process 0 announces it, with every other process).
    pub fn request_stop(&self) {
        if let Role::Follower { leader, .. } = &self.role
            && let Err(e) = send(leader, &Step::Stop)
        {
            tracing::warn!(error = %e, "Cannot ask process 0 to stop the cluster");
        }
    }
}

impl Drop for Lockstep {
    /// Closes the connections: their reader threads hold clones of the sockets, which
    /// would otherwise keep them open, and a peer learns of the end from their close.
    fn drop(&mut self) {
        let streams: Vec<&TcpStream> = match &self.role {
            Role::Leader { followers, .. } => followers.iter().map(|(_, s)| s).collect(),
            Role::Follower { leader, .. } => vec![leader],
        };
        for stream in streams {
            stream.shutdown(std::net::Shutdown::Both).ok();
        }
    }
}

fn send(stream: &TcpStream, step: &Step) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(step).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut writer = stream;
    writer.write_all(&line)?;
    writer.flush()
}

/// A follower's reader: process 0's steps, until it closes the connection.
fn read_steps(stream: TcpStream, steps: &Sender<Step>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<Step>(&line) {
            Ok(step) => {
                if steps.send(step).is_err() {
                    break;
                }
            }
            Err(e) => {
                // A step passed over would put this process out of step for good: it
                // ends as if process 0 were gone.
                tracing::error!(error = %e, line, "An unreadable step from process 0");
                break;
            }
        }
    }
}

/// Process 0's reader of one follower: its stop requests.
fn read_requests(peer: usize, stream: TcpStream, requests: &Sender<usize>) {
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        if serde_json::from_str::<Step>(&line).is_ok_and(|s| s == Step::Stop)
            && requests.send(peer).is_err()
        {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> Result<u16, std::io::Error> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    #[test]
    fn process_zero_leads_and_hears_stop_requests() -> Result<(), Box<dyn std::error::Error>> {
        let addresses = vec![
            format!("127.0.0.1:{}", free_port()?),
            format!("127.0.0.1:{}", free_port()?),
        ];
        let cluster = |process| Cluster {
            process,
            addresses: addresses.clone(),
            connect_timeout: Duration::from_secs(10),
        };
        let listener = TcpListener::bind(&addresses[0])?;
        listener.set_nonblocking(true)?;
        let follower = std::thread::spawn({
            let cluster = cluster(1);
            move || -> Result<Lockstep, ClusterError> {
                let unused = TcpListener::bind(&cluster.addresses[1])
                    .map_err(|e| cluster.failed(1, e.to_string()))?;
                cluster.lockstep(unused)
            }
        });
        let leader = cluster(0).lockstep(listener)?;
        let follower = follower.join().map_err(|_| "follower panicked")??;
        assert!(leader.leads() && !follower.leads());
        leader.announce(&Step::Checkpoint("q".into()));
        leader.announce(&Step::Stop);
        let wait = Duration::from_secs(10);
        assert_eq!(
            follower.next_step(wait)?,
            Some(Step::Checkpoint("q".into()))
        );
        assert_eq!(follower.next_step(wait)?, Some(Step::Stop));
        follower.request_stop();
        let asked = Instant::now();
        let mut heard = None;
        while heard.is_none() && asked.elapsed() < wait {
            heard = leader.stop_requested();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(heard, Some(1));
        drop(leader);
        assert!(
            follower.next_step(wait).is_err(),
            "a closed leader is reported"
        );
        Ok(())
    }
}
