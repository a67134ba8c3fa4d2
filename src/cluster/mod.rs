//! Cluster mode: one run's timely workers spread over several processes (on one host or
//! many), which exchange data over TCP the way timely does.
//!
//! timely connects the processes itself, but waits forever for a peer that never comes,
//! prints to standard output while it waits, and cannot tell a peer that runs another
//! query or another version from one that runs the same. So edgeflow opens the
//! connections here, with a deadline, and has every pair of processes compare a
//! [`Hello`] (what they are about to compute) before the sockets are handed to timely.
//! When a peer dies later, timely's receive thread panics; [`exit_when_a_peer_dies`]
//! turns that into an error naming the peer and ends the process (timely has no
//! fail-over, and the workers would otherwise wait for the dead peer's progress forever).

pub mod lockstep;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the processes of a cluster listen, and which of them this one is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index, `0..addresses.len()`.
    pub process: usize,
    /// `host:port` of every process, by index.
    pub addresses: Vec<String>,
    /// How long to wait for every peer to connect.
    pub connect_timeout: Duration,
}

/// A cluster that cannot be formed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The hostfile cannot be read.
    #[error("hostfile {}: {source}", path.display())]
    Hostfile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the hostfile is not `host:port`.
    #[error("{}:{line}: expected host:port (one process per line), found `{found}`", path.display())]
    HostfileLine {
        /// The file.
        path: PathBuf,
        /// Line number, from 1.
        line: usize,
        /// What the line holds.
        found: String,
    },
    /// The hostfile lists another number of processes than `--processes`.
    #[error("{} lists {listed} processes but --processes is {processes}", path.display())]
    HostCount {
        /// The file.
        path: PathBuf,
        /// Processes it lists.
        listed: usize,
        /// Processes asked for.
        processes: usize,
    },
    /// `--process` is not one of the processes.
    #[error("--process {process} is not below --processes {processes} (processes count from 0)")]
    ProcessIndex {
        /// Asked for.
        process: usize,
        /// Processes.
        processes: usize,
    },
    /// This process cannot listen where the hostfile says it does.
    #[error("process {process} cannot listen on {address} (its line in the hostfile): {source}")]
    Listen {
        /// This process.
        process: usize,
        /// Its address.
        address: String,
        /// Why.
        source: std::io::Error,
    },
    /// A peer did not connect in time, or its connection failed.
    #[error("process {peer} at {address}: {detail}")]
    Connect {
        /// The peer.
        peer: usize,
        /// Its address.
        address: String,
        /// What happened.
        detail: String,
    },
    /// The output folder holds a stream another cluster shape computed.
    #[error(
        "{} holds a stream computed as {was}, this run is {now}: a stream goes on only with the same processes and workers (or start it again with --fresh)", folder.display()
    )]
    Shape {
        /// The output folder.
        folder: PathBuf,
        /// The shape that computed it.
        was: String,
        /// This run's.
        now: String,
    },
    /// A peer is about to compute something else.
    #[error(
        "process {peer} at {address} differs in {what}: here `{ours}`, there `{theirs}`; every process of a cluster runs the same edgeflow, queries, input and output history"
    )]
    Mismatch {
        /// The peer.
        peer: usize,
        /// Its address.
        address: String,
        /// What differs.
        what: String,
        /// This process's value.
        ours: String,
        /// The peer's.
        theirs: String,
    },
}

/// What a process is about to compute, compared with every peer's before any data
/// moves, fact by fact in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hello(pub Vec<Fact>);

/// One fact of a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fact {
    /// What it is about.
    pub what: String,
    /// Its value here.
    pub value: String,
    /// For a position that a commit moves (a stream's), its value before this process's
    /// last commit: a peer still there is one commit behind, and this process goes
    /// back to it.
    #[serde(default)]
    pub previous: Option<String>,
    /// Not compared: each process takes every peer's value into account (the revisions
    /// a `--fresh` start numbers past, [`Hello::with_revisions`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub shared: bool,
}

/// How two hellos compare.
#[derive(Debug, PartialEq, Eq)]
enum Comparison {
    /// The same facts.
    Agree,
    /// The same but for facts on which this process is one commit ahead of the peer.
    Ahead(Vec<String>),
    /// A fact differs: (what, ours, theirs).
    Differ(String, String, String),
}

impl Hello {
    /// Adds a fact every process must agree on.
    pub fn with(mut self, what: impl Into<String>, value: impl ToString) -> Self {
        self.0.push(Fact {
            what: what.into(),
            value: value.to_string(),
            previous: None,
            shared: false,
        });
        self
    }

    /// Adds the revisions this process's folder recorded for `query`'s windows, for a
    /// `--fresh` start: a window's owner may be another process than the one that
    /// wrote it last (the worker count changed), and it must write it under a new name
    /// ([`number_past_peers`]).
    pub fn with_revisions(mut self, output: &Path, query: &str) -> Result<Self, serde_json::Error> {
        let revisions = crate::stream::Revisions {
            revisions: crate::stream::StreamState::recorded_revisions(output, query),
        };
        self.0.push(Fact {
            what: revisions_fact(query),
            value: serde_json::to_string(&revisions)?,
            previous: None,
            shared: true,
        });
        Ok(self)
    }

    /// Adds the fact of what `plan` computes (a digest of it, wherever its file is).
    pub fn with_plan(self, plan: &crate::query::QueryPlan) -> Result<Self, serde_json::Error> {
        let mut bare = plan.clone();
        bare.file = PathBuf::new();
        let text = serde_json::to_vec(&bare)?;
        Ok(self.with(
            format!("query {}", plan.name),
            crate::digest::md5_hex(&text),
        ))
    }

    /// Adds a position every process must be at, or at most one commit past.
    pub fn with_position(
        mut self,
        what: impl Into<String>,
        value: impl ToString,
        previous: Option<String>,
    ) -> Self {
        self.0.push(Fact {
            what: what.into(),
            value: value.to_string(),
            previous,
            shared: false,
        });
        self
    }

    fn fact(&self, what: &str) -> Option<&Fact> {
        self.0.iter().find(|f| f.what == what)
    }

    fn compare(&self, theirs: &Hello) -> Comparison {
        let mut ahead = Vec::new();
        let names = self
            .0
            .iter()
            .chain(&theirs.0)
            .filter(|f| !f.shared)
            .map(|f| &f.what);
        for what in names {
            let (ours, other) = (self.fact(what), theirs.fact(what));
            match (ours, other) {
                (Some(o), Some(t)) if o.value == t.value => {}
                (Some(o), Some(t)) if o.previous.as_ref() == Some(&t.value) => {
                    if !ahead.contains(what) {
                        ahead.push(what.clone());
                    }
                }
                // The peer is ahead: it goes back.
                (Some(o), Some(t)) if t.previous.as_ref() == Some(&o.value) => {}
                _ => {
                    let value =
                        |f: Option<&Fact>| f.map_or("(nothing)".to_owned(), |f| f.value.clone());
                    return Comparison::Differ(what.clone(), value(ours), value(other));
                }
            }
        }
        if ahead.is_empty() {
            Comparison::Agree
        } else {
            Comparison::Ahead(ahead)
        }
    }
}

/// A connected cluster: the sockets for timely, and the positions on which this process
/// is one commit ahead of a peer (a process that died between the processes' commits
/// left them apart) and must go back before the run.
#[derive(Debug)]
pub struct Connected {
    /// One socket per process, `None` at this process's own index.
    pub sockets: Vec<Option<TcpStream>>,
    /// The facts ([`Fact::what`]) to go back on.
    pub ahead: Vec<String>,
    /// This process's cluster port, still open: a node's processes connect to
    /// process 0 once more through it to move in lockstep ([`lockstep`]).
    pub listener: TcpListener,
    /// The peers' facts that are not compared ([`Fact::shared`]).
    pub shared: Vec<Fact>,
}

/// Marks an edgeflow cluster connection; anything else on the port is not a peer.
const MAGIC: &[u8; 8] = b"EFCLUST1";

/// How long a process that found a peer differing still greets the others, so they find
/// their differences too.
const REFUSED_GRACE: Duration = Duration::from_secs(5);

/// Longest hello accepted from a peer.
const MAX_HELLO_BYTES: u32 = 1 << 20;

impl Cluster {
    /// Reads a hostfile (one `host:port` per line; blank lines and `#` comments
    /// skipped) for a cluster of `processes` of which this is `process`.
    pub fn from_hostfile(
        path: &Path,
        processes: usize,
        process: usize,
        connect_timeout: Duration,
    ) -> Result<Cluster, ClusterError> {
        let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Hostfile {
            path: path.to_owned(),
            source,
        })?;
        let mut addresses = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let valid = line
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !valid {
                return Err(ClusterError::HostfileLine {
                    path: path.to_owned(),
                    line: i + 1,
                    found: line.to_owned(),
                });
            }
            addresses.push(line.to_owned());
        }
        if addresses.len() != processes {
            return Err(ClusterError::HostCount {
                path: path.to_owned(),
                listed: addresses.len(),
                processes,
            });
        }
        if process >= processes {
            return Err(ClusterError::ProcessIndex { process, processes });
        }
        Ok(Cluster {
            process,
            addresses,
            connect_timeout,
        })
    }

    /// Processes in the cluster.
    pub fn processes(&self) -> usize {
        self.addresses.len()
    }

    /// Connects to every peer and compares `hello` with each.
    ///
    /// A peer that differs does not end the greetings: this process still greets the
    /// others (for a short while more), so each of them finds its own difference and
    /// stops too, rather than waiting the whole timeout for a process that stopped
    /// before it called.
    pub fn connect(&self, hello: &Hello) -> Result<Connected, ClusterError> {
        let mut deadline = Instant::now() + self.connect_timeout;
        let me = self.process;
        let payload = serde_json::to_vec(hello).map_err(|e| self.failed(me, e.to_string()))?;
        let listener =
            TcpListener::bind(&self.addresses[me]).map_err(|source| ClusterError::Listen {
                process: me,
                address: self.addresses[me].clone(),
                source,
            })?;
        let mut sockets: Vec<Option<TcpStream>> = (0..self.processes()).map(|_| None).collect();
        let mut ahead: Vec<String> = Vec::new();
        let mut shared: Vec<Fact> = Vec::new();
        let mut refused: Option<ClusterError> = None;
        let mut refuse = |error: ClusterError, deadline: &mut Instant| {
            *deadline = (*deadline).min(Instant::now() + REFUSED_GRACE);
            refused.get_or_insert(error);
        };
        // Lower-numbered processes listen for this one; higher-numbered ones call it.
        for (peer, slot) in sockets.iter_mut().enumerate().take(me) {
            let greeted = self.dial(peer, deadline).and_then(|stream| {
                let theirs = self.greet(&stream, peer, &payload, deadline, true)?;
                Ok((stream, theirs))
            });
            let (stream, theirs) = match greeted {
                Ok(greeted) => greeted,
                Err(e) => return Err(refused.unwrap_or(e)),
            };
            if theirs.0 != peer {
                return Err(self.failed(peer, format!("answered as process {}", theirs.0)));
            }
            if let Err(e) = self.compare(peer, hello, &theirs.1, &mut ahead) {
                refuse(e, &mut deadline);
            }
            shared.extend(theirs.1.0.into_iter().filter(|f| f.shared));
            *slot = Some(stream);
        }
        listener
            .set_nonblocking(true)
            .map_err(|e| self.failed(me, e.to_string()))?;
        while sockets.iter().skip(me + 1).any(Option::is_none) {
            match listener.accept() {
                Ok((stream, from)) => {
                    stream
                        .set_nonblocking(false)
                        .map_err(|e| self.failed(me, e.to_string()))?;
                    let (peer, theirs) = match self.greet(&stream, me, &payload, deadline, false) {
                        Ok(greeted) => greeted,
                        Err(e) => {
                            tracing::warn!(%from, error = %e, "A connection to the cluster port that is not a peer; ignored");
                            continue;
                        }
                    };
                    if peer <= me || peer >= self.processes() || sockets[peer].is_some() {
                        tracing::warn!(%from, peer, "A connection claiming a process this one does not expect; ignored");
                        continue;
                    }
                    if let Err(e) = self.compare(peer, hello, &theirs, &mut ahead) {
                        refuse(e, &mut deadline);
                    }
                    shared.extend(theirs.0.into_iter().filter(|f| f.shared));
                    sockets[peer] = Some(stream);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        if let Some(refused) = refused {
                            return Err(refused);
                        }
                        let missing = (me + 1..self.processes())
                            .find(|&p| sockets[p].is_none())
                            .unwrap_or(me);
                        return Err(self.failed(
                            missing,
                            format!(
                                "did not connect within {} s (is it started, with this hostfile?)",
                                self.connect_timeout.as_secs()
                            ),
                        ));
                    }
                    // Accepting is polled: a blocking accept could not honour the deadline.
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(self.failed(me, format!("accepting peers: {e}"))),
            }
        }
        if let Some(refused) = refused {
            return Err(refused);
        }
        for stream in sockets.iter().flatten() {
            stream
                .set_read_timeout(None)
                .and_then(|()| stream.set_write_timeout(None))
                .and_then(|()| stream.set_nodelay(true))
                .map_err(|e| self.failed(me, e.to_string()))?;
        }
        tracing::info!(
            process = me,
            processes = self.processes(),
            "Cluster connected: every peer agrees on what to compute"
        );
        Ok(Connected {
            sockets,
            ahead,
            listener,
            shared,
        })
    }

    /// Calls `peer` until it answers or the deadline passes (it may start later).
    pub(crate) fn dial(&self, peer: usize, deadline: Instant) -> Result<TcpStream, ClusterError> {
        let address = &self.addresses[peer];
        let mut warned = Instant::now();
        loop {
            match TcpStream::connect(address) {
                Ok(stream) => return Ok(stream),
                Err(e) if Instant::now() >= deadline => {
                    return Err(self.failed(
                        peer,
                        format!(
                            "not reachable within {} s: {e}",
                            self.connect_timeout.as_secs()
                        ),
                    ));
                }
                Err(e) => {
                    if warned.elapsed() >= Duration::from_secs(5) {
                        warned = Instant::now();
                        tracing::info!(peer, %address, error = %e, "Waiting for a cluster peer");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// Exchanges hellos on `stream`: the caller speaks first, the listener answers.
    /// Returns the peer's index and hello.
    fn greet(
        &self,
        stream: &TcpStream,
        peer_hint: usize,
        payload: &[u8],
        deadline: Instant,
        calling: bool,
    ) -> Result<(usize, Hello), ClusterError> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(100));
        let io = |e: std::io::Error| self.failed(peer_hint, format!("handshake: {e}"));
        stream.set_read_timeout(Some(left)).map_err(io)?;
        stream.set_write_timeout(Some(left)).map_err(io)?;
        let mut writer = stream;
        let mut reader = stream;
        let send = |writer: &mut &TcpStream| -> std::io::Result<()> {
            let mut frame = Vec::with_capacity(20 + payload.len());
            frame.extend_from_slice(MAGIC);
            frame.extend_from_slice(&(self.process as u64).to_le_bytes());
            frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            frame.extend_from_slice(payload);
            writer.write_all(&frame)?;
            writer.flush()
        };
        if calling {
            send(&mut writer).map_err(io)?;
        }
        let mut head = [0u8; 20];
        reader.read_exact(&mut head).map_err(io)?;
        if &head[..8] != MAGIC {
            return Err(self.failed(peer_hint, "is not an edgeflow cluster process".into()));
        }
        let mut index = [0u8; 8];
        index.copy_from_slice(&head[8..16]);
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[16..20]);
        let (index, len) = (u64::from_le_bytes(index), u32::from_le_bytes(len));
        if len > MAX_HELLO_BYTES {
            return Err(self.failed(peer_hint, format!("sent a {len}-byte hello")));
        }
        let mut body = vec![0u8; len as usize];
        reader.read_exact(&mut body).map_err(io)?;
        let hello: Hello = serde_json::from_slice(&body)
            .map_err(|e| self.failed(peer_hint, format!("sent a malformed hello: {e}")))?;
        if !calling {
            send(&mut writer).map_err(io)?;
        }
        Ok((usize::try_from(index).unwrap_or(usize::MAX), hello))
    }

    fn compare(
        &self,
        peer: usize,
        ours: &Hello,
        theirs: &Hello,
        ahead: &mut Vec<String>,
    ) -> Result<(), ClusterError> {
        match ours.compare(theirs) {
            Comparison::Agree => Ok(()),
            Comparison::Ahead(facts) => {
                for fact in facts {
                    tracing::warn!(
                        peer,
                        fact,
                        "This process committed a run its peer did not: it goes back to the state before"
                    );
                    if !ahead.contains(&fact) {
                        ahead.push(fact);
                    }
                }
                Ok(())
            }
            Comparison::Differ(what, ours, theirs) => Err(ClusterError::Mismatch {
                peer,
                address: self.addresses[peer].clone(),
                what,
                ours,
                theirs,
            }),
        }
    }

    pub(crate) fn failed(&self, peer: usize, detail: String) -> ClusterError {
        ClusterError::Connect {
            peer,
            address: self.addresses.get(peer).cloned().unwrap_or_default(),
            detail,
        }
    }
}

/// The hello fact of the revisions a process's folder recorded for a query's windows
/// ([`Hello::with_revisions`]).
pub fn revisions_fact(query: &str) -> String {
    format!("revisions of query {query}")
}

/// Before a `--fresh` start: every query's state records, for each window, the highest
/// revision any process's folder recorded, so the process that owns the window now
/// writes it past them. (Without it, a window written by process 0 and owned by
/// process 1 after the worker count changed was written again as the same revision
/// with other rows: two files of one name, one of them refused by the bucket.)
pub fn number_past_peers(
    output: &Path,
    plans: &[crate::query::QueryPlan],
    connected: &Connected,
) -> Result<(), crate::stream::StateError> {
    use crate::stream::{Revisions, StreamState};
    for plan in plans {
        let what = revisions_fact(&plan.name);
        let theirs: Vec<Revisions> = connected
            .shared
            .iter()
            .filter(|f| f.what == what)
            .filter_map(|f| serde_json::from_str(&f.value).ok())
            .collect();
        if theirs.iter().all(|r| r.revisions.is_empty()) {
            continue;
        }
        let mut state = StreamState::load_for_fresh(output, plan);
        for revisions in &theirs {
            state.raise_revisions(&revisions.revisions);
        }
        state.save(output, &plan.name)?;
    }
    Ok(())
}

/// The hello fact of where a query's stream stands ([`Hello::with_position`]).
pub fn stream_fact(query: &str) -> String {
    format!("stream of {query}")
}

/// Exit status of a process whose peer died.
pub const PEER_LOST_EXIT: i32 = 1;

/// How long a process that lost a peer waits for its other connections to fail before
/// it reports: a peer that stops because another died closes its sockets too, and which
/// of them this process notices first is chance.
const PEERS_LOST_GRACE: Duration = Duration::from_millis(200);

/// Peers found gone, by index, with timely's message; `Some` once one is.
static PEERS_LOST: std::sync::Mutex<Option<std::collections::BTreeMap<usize, String>>> =
    std::sync::Mutex::new(None);

/// Ends this process with an error naming the peers it lost when timely loses the
/// connection to one (its receive or send thread panics with "timely communication
/// error"): the workers would otherwise wait for the dead peer forever. Nothing of the
/// run is committed; the next run of the cluster redoes it.
///
/// The first such panic waits a moment (200 ms) and then names every peer lost by
/// then. Meanwhile any other panic in the process is a consequence and is held where it
/// happened (its thread parks instead of unwinding), so that no worker's failure ends
/// the process first with a message that hides the cause.
pub fn exit_when_a_peer_dies(addresses: Vec<String>) {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        let thread = std::thread::current();
        let peer = thread
            .name()
            .and_then(|n| {
                n.strip_prefix("timely:recv-")
                    .or_else(|| n.strip_prefix("timely:send-"))
            })
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|_| message.contains("timely communication error"));
        let first = {
            let mut lost = PEERS_LOST.lock().unwrap_or_else(|p| p.into_inner());
            match (peer, lost.as_mut()) {
                (None, None) => None,
                (None, Some(_)) => Some(false),
                (Some(peer), Some(gone)) => {
                    gone.entry(peer).or_insert_with(|| message.to_owned());
                    Some(false)
                }
                (Some(peer), None) => {
                    *lost = Some([(peer, message.to_owned())].into());
                    Some(true)
                }
            }
        };
        match first {
            None => previous(info),
            Some(false) => loop {
                std::thread::park();
            },
            Some(true) => {
                std::thread::sleep(PEERS_LOST_GRACE);
                let gone = PEERS_LOST
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_default();
                for (peer, cause) in &gone {
                    let address = addresses.get(*peer).map_or("?", String::as_str);
                    tracing::error!(peer, address, cause, "A cluster peer is gone");
                    eprintln!("error: process {peer} of the cluster ({address}) is gone ({cause})");
                }
                eprintln!(
                    "timely has no fail-over, so this process stops too, without committing its run (the next run of the cluster does it again)"
                );
                std::process::exit(PEER_LOST_EXIT);
            }
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hostfile(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap_or_else(|e| panic!("{e}"));
        file.write_all(text.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        file
    }

    #[test]
    fn a_hostfile_lists_one_process_per_line() {
        let file = hostfile("# two hosts\n10.0.0.1:2101\n\nedge-b:2101  # the second\n");
        let cluster = Cluster::from_hostfile(file.path(), 2, 1, Duration::from_secs(1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cluster.addresses, vec!["10.0.0.1:2101", "edge-b:2101"]);
        assert_eq!(cluster.process, 1);
    }

    #[test]
    fn a_bad_hostfile_line_is_named() {
        let file = hostfile("10.0.0.1:2101\nedge-b\n");
        let error = Cluster::from_hostfile(file.path(), 2, 0, Duration::from_secs(1))
            .err()
            .unwrap_or_else(|| panic!("expected an error"))
            .to_string();
        assert!(error.contains(":2: expected host:port"), "{error}");
        let error = Cluster::from_hostfile(file.path(), 3, 0, Duration::from_secs(1));
        assert!(error.is_err());
        let file = hostfile("a:1\nb:2\n");
        let error = Cluster::from_hostfile(file.path(), 2, 2, Duration::from_secs(1))
            .err()
            .unwrap_or_else(|| panic!("expected an error"))
            .to_string();
        assert!(
            error.contains("--process 2 is not below --processes 2"),
            "{error}"
        );
    }

    #[test]
    fn the_first_difference_between_hellos_is_named() {
        let ours = Hello::default().with("query", "a").with("input", "x");
        let theirs = Hello::default().with("query", "a").with("input", "y");
        assert_eq!(ours.compare(&ours.clone()), Comparison::Agree);
        assert_eq!(
            ours.compare(&theirs),
            Comparison::Differ("input".into(), "x".into(), "y".into())
        );
        let fewer = Hello::default().with("query", "a");
        assert_eq!(
            ours.compare(&fewer),
            Comparison::Differ("input".into(), "x".into(), "(nothing)".into())
        );
    }

    /// Each folder's revisions differ between processes and are shared, not compared.
    #[test]
    fn revisions_are_shared_not_compared() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let state = dir.path().join("_state/q");
        std::fs::create_dir_all(&state).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(
            state.join("stream.json"),
            r#"{"revisions": [[60000000, 0, 1, 2]]}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let with = |root: &Path| {
            Hello::default()
                .with("query", "a")
                .with_revisions(root, "q")
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (ours, theirs) = (with(dir.path()), with(elsewhere.path()));
        assert_ne!(ours.0[1].value, theirs.0[1].value);
        assert_eq!(ours.compare(&theirs), Comparison::Agree);
        let revisions: crate::stream::Revisions =
            serde_json::from_str(&ours.0[1].value).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(revisions.revisions.get(&60_000_000), Some(&2));
    }

    /// A process one commit ahead of a peer goes back; the peer does not; two
    /// commits apart, or apart otherwise, they differ.
    #[test]
    fn a_position_one_commit_ahead_goes_back() {
        let at = |value: &str, previous: Option<&str>| {
            Hello::default().with_position("stream of q", value, previous.map(str::to_owned))
        };
        let ahead = at("run 2", Some("run 1"));
        let behind = at("run 1", Some("run 0"));
        assert_eq!(
            ahead.compare(&behind),
            Comparison::Ahead(vec!["stream of q".into()])
        );
        assert_eq!(behind.compare(&ahead), Comparison::Agree);
        let far = at("run 3", Some("run 2"));
        assert!(matches!(far.compare(&behind), Comparison::Differ(..)));
        assert!(matches!(
            at("run 2", None).compare(&behind),
            Comparison::Differ(..)
        ));
    }

    /// Two processes in threads on 127.0.0.1: they connect and agree, or name what
    /// differs.
    #[test]
    fn peers_connect_and_compare_hellos() {
        let ports: Vec<u16> = (0..2)
            .map(|_| {
                TcpListener::bind("127.0.0.1:0")
                    .unwrap_or_else(|e| panic!("{e}"))
                    .local_addr()
                    .unwrap_or_else(|e| panic!("{e}"))
                    .port()
            })
            .collect();
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let run = |second: &'static str| {
            let handles: Vec<_> = (0..2)
                .map(|process| {
                    let cluster = Cluster {
                        process,
                        addresses: addresses.clone(),
                        connect_timeout: Duration::from_secs(20),
                    };
                    let value = if process == 0 { "q" } else { second };
                    std::thread::spawn(move || {
                        cluster
                            .connect(&Hello::default().with("query", value))
                            .map(|c| c.sockets.iter().filter(|s| s.is_some()).count())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| panic!("a process thread panicked"))
                })
                .collect::<Vec<_>>()
        };
        let agreed = run("q");
        assert!(agreed.iter().all(|r| matches!(r, Ok(1))), "{agreed:?}");
        let differ = run("other");
        for result in differ {
            let error = result
                .err()
                .unwrap_or_else(|| panic!("expected an error"))
                .to_string();
            assert!(error.contains("differs in query"), "{error}");
        }
    }
}
