//! Live input: readings that arrive while the node runs (polled, pushed, from MQTT),
//! handed from the connector that received them to every query that reads their table.
//!
//! A connector turns what it receives into JSON lines in the table's schema and
//! [`Feed::publish`]es them as one [`Arrival`]. Each query reading the table holds a
//! [`LiveInput`]: its own queue of arrivals, and a dispatcher thread that cuts them into
//! numbered chunks and deals chunk `k` to worker `k % n`, like standard input. Nothing
//! is dropped on the way: a connector asks [`Feed::has_room`] before it accepts more
//! (a push answers 503, a poll round waits), so a slow query holds its readings in
//! memory up to a bound instead of losing them.
//!
//! Two event-time rules are applied here, because only a live source knows the node's
//! clock at arrival: a reading stamped more than `max_ahead_of_clock` after it is a dead
//! letter, and a source that saw nothing for `idle_timeout` sends an empty chunk whose
//! largest event time is the clock, so the watermark follows the clock (minus the
//! out-of-orderness) and windows close on a quiet network.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use timely::scheduling::SyncActivator;

use super::{ChunkSource, OpenInput, SourceError, SourceLimits, SourcePoll, Wakers};
use crate::batch::Interner;
use crate::decode::{BadRecord, Decoder, JsonDecoder};
use crate::query::SourceSchema;

/// How long a chunk waits for more readings before it goes out part-full: short enough
/// that a window closes promptly, long enough to amortise a chunk's cost at high rates.
pub const LINGER: Duration = Duration::from_millis(500);

/// How often an idle source moves its watermark to the clock.
const IDLE_TICK: Duration = Duration::from_millis(500);

/// Readings held for one query, in bytes, before connectors are told to wait.
pub const DEFAULT_QUEUE_BYTES: usize = 256 << 20;

/// Chunks in flight per worker.
const QUEUE: usize = 2;

/// The node's clock, microseconds since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Something a connector received but could not turn into a reading: a device that
/// timed out or answered garbage. It becomes a dead letter.
#[derive(Clone, Debug)]
pub struct Reject {
    /// What went wrong, starting with where it came from (a URL, a topic).
    pub reason: String,
    /// What was received, if anything (cut to a KiB).
    pub raw: String,
}

/// What a connector received at one moment: readings as JSON lines, and rejects.
#[derive(Clone, Debug, Default)]
pub struct Arrival {
    /// One reading per line, each line ending in `\n`.
    pub lines: Vec<u8>,
    /// What could not be read.
    pub rejects: Vec<Reject>,
    /// The node's clock when it arrived, microseconds.
    pub at: i64,
}

impl Arrival {
    /// An arrival now.
    pub fn now(lines: Vec<u8>, rejects: Vec<Reject>) -> Self {
        Arrival {
            lines,
            rejects,
            at: now_micros(),
        }
    }

    fn bytes(&self) -> usize {
        self.lines.len()
            + self
                .rejects
                .iter()
                .map(|r| r.raw.len() + r.reason.len())
                .sum::<usize>()
    }
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Arc<Arrival>>,
    bytes: usize,
    closed: bool,
    /// The query stopped reading: arrivals pass it by.
    gone: bool,
}

/// One query's queue of arrivals.
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The hand-over from one table's connector to the queries that read it.
pub struct Feed {
    table: String,
    queues: Mutex<Vec<Arc<Queue>>>,
    capacity: usize,
    published: AtomicU64,
}

impl Feed {
    /// A feed for `table`, holding up to `capacity` bytes per query before
    /// [`Feed::has_room`] says no.
    pub fn new(table: &str, capacity: usize) -> Arc<Feed> {
        Arc::new(Feed {
            table: table.to_owned(),
            queues: Mutex::new(Vec::new()),
            capacity,
            published: AtomicU64::new(0),
        })
    }

    fn queues(&self) -> Vec<Arc<Queue>> {
        self.queues
            .lock()
            .map(|q| q.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// A new reader of the table: every arrival published from now on reaches it.
    pub fn subscribe(self: &Arc<Self>, schema: &SourceSchema, limits: SourceLimits) -> LiveInput {
        let queue = Arc::new(Queue::default());
        if let Ok(mut queues) = self.queues.lock() {
            queues.retain(|q| {
                let state = q.lock();
                // A queue stays while its reader may still take from it.
                !(state.gone || state.closed && state.items.is_empty())
            });
            queues.push(queue.clone());
        }
        LiveInput {
            name: self.table.clone(),
            schema: Arc::new(schema.clone()),
            limits: limits.sane(),
            queue,
            hub: Mutex::new(Hub::default()),
        }
    }

    /// Whether every reader can take `bytes` more now. A connector that is told no
    /// must not accept what it would publish (answer 503, hold the poll round).
    pub fn has_room(&self, bytes: usize) -> bool {
        self.queues().iter().all(|q| {
            let state = q.lock();
            state.gone || state.closed || state.bytes.saturating_add(bytes) <= self.capacity
        })
    }

    /// Hands an arrival to every reader. Never drops: ask [`Feed::has_room`] first.
    pub fn publish(&self, arrival: Arrival) {
        if arrival.lines.is_empty() && arrival.rejects.is_empty() {
            return;
        }
        let readings = memchr::memchr_iter(b'\n', &arrival.lines).count() as u64;
        self.published.fetch_add(readings, Ordering::Relaxed);
        let bytes = arrival.bytes();
        let arrival = Arc::new(arrival);
        for queue in self.queues() {
            let mut state = queue.lock();
            if state.gone || state.closed {
                continue;
            }
            state.items.push_back(arrival.clone());
            state.bytes += bytes;
            drop(state);
            queue.ready.notify_one();
        }
    }

    /// Queries reading the table now.
    pub fn readers(&self) -> usize {
        self.queues()
            .iter()
            .filter(|q| {
                let state = q.lock();
                !state.gone && !state.closed
            })
            .count()
    }

    /// Readings published so far.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    /// No more arrivals: each reader's input ends once it has taken what is queued.
    pub fn close(&self) {
        for queue in self.queues() {
            queue.lock().closed = true;
            queue.ready.notify_all();
        }
    }
}

/// What the dispatcher hands a worker.
struct LiveChunk {
    index: u64,
    lines: Vec<u8>,
    rejects: Vec<Reject>,
    /// Latest arrival time in the chunk (or the clock, for an idle tick).
    clock: i64,
    /// An idle tick: the watermark may follow the clock.
    idle: bool,
}

#[derive(Default)]
struct Hub {
    receivers: Vec<Option<Receiver<LiveChunk>>>,
    wakers: Wakers,
    started: bool,
}

/// One query's live input: an [`OpenInput`] whose chunks come from a [`Feed`].
pub struct LiveInput {
    name: String,
    schema: Arc<SourceSchema>,
    limits: SourceLimits,
    queue: Arc<Queue>,
    hub: Mutex<Hub>,
}

impl std::fmt::Debug for LiveInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveInput")
            .field("table", &self.name)
            .finish()
    }
}

impl LiveInput {
    /// The query stopped reading (it ended or failed): what is queued is dropped and
    /// nothing more is queued for it, so it never holds back the others.
    pub fn leave(&self) {
        let mut state = self.queue.lock();
        state.gone = true;
        state.items.clear();
        state.bytes = 0;
    }

    /// The query stops reading: what is queued is still processed, nothing more is
    /// queued, and then its input ends.
    pub fn finish(&self) {
        self.queue.lock().closed = true;
        self.queue.ready.notify_all();
    }

    /// `<connector> <table>`, for summaries and dead letters.
    pub fn describe(&self) -> String {
        format!("{} {}", self.schema.connector.name(), self.name)
    }

    fn start(&self, hub: &mut Hub, peers: usize) {
        let mut senders = Vec::with_capacity(peers);
        for _ in 0..peers {
            let (tx, rx) = sync_channel(QUEUE);
            senders.push(tx);
            hub.receivers.push(Some(rx));
        }
        hub.wakers.resize(peers);
        let dispatcher = Dispatcher {
            queue: self.queue.clone(),
            senders,
            wakers: hub.wakers.clone(),
            chunk_bytes: self.limits.chunk_bytes,
            idle_timeout: self
                .schema
                .connector
                .idle_timeout
                .and_then(|us| u64::try_from(us).ok())
                .map(Duration::from_micros),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("live-{}", self.name))
            .spawn(move || dispatcher.run());
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the live input's dispatcher");
        }
        hub.started = true;
    }
}

impl OpenInput for LiveInput {
    fn worker_source(&self, worker: usize, peers: usize) -> Box<dyn ChunkSource> {
        let (receiver, wakers) = match self.hub.lock() {
            Ok(mut hub) => {
                if !hub.started {
                    self.start(&mut hub, peers);
                }
                (
                    hub.receivers.get_mut(worker).and_then(Option::take),
                    hub.wakers.clone(),
                )
            }
            Err(_) => (None, Wakers::default()),
        };
        Box::new(LiveChunks {
            worker,
            receiver,
            wakers,
            decoder: Decoder::Json(JsonDecoder::new(&self.schema))
                .with_max_line_bytes(self.limits.max_line_bytes),
            max_ahead: self.schema.connector.max_ahead_of_clock,
        })
    }

    fn line_base(&self) -> u64 {
        1
    }

    fn total_bytes(&self) -> Option<u64> {
        None
    }

    fn position_after(&self, _chunks: Option<u64>) -> u64 {
        0
    }
}

/// Cuts one query's queue into chunks and deals them to the workers.
struct Dispatcher {
    queue: Arc<Queue>,
    senders: Vec<SyncSender<LiveChunk>>,
    wakers: Wakers,
    chunk_bytes: usize,
    idle_timeout: Option<Duration>,
}

/// The chunk being filled.
#[derive(Default)]
struct Filling {
    lines: Vec<u8>,
    rejects: Vec<Reject>,
    clock: i64,
    since: Option<Instant>,
}

impl Dispatcher {
    fn send(&self, index: &mut u64, chunk: LiveChunk) -> bool {
        let worker = (*index % self.senders.len() as u64) as usize;
        let ok = self.senders[worker].send(chunk).is_ok();
        self.wakers.wake(worker);
        *index += 1;
        ok
    }

    fn run(self) {
        let mut index = 0u64;
        let mut filling = Filling::default();
        let mut last_reading = Instant::now();
        let mut last_tick = Instant::now();
        loop {
            let (arrivals, closed) = {
                let mut state = self.queue.lock();
                if state.items.is_empty() && !state.closed {
                    let wait = if filling.since.is_some() {
                        LINGER
                    } else {
                        IDLE_TICK
                    };
                    state = self
                        .queue
                        .ready
                        .wait_timeout(state, wait)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                state.bytes = 0;
                (std::mem::take(&mut state.items), state.closed)
            };
            for arrival in &arrivals {
                if filling.since.is_none() {
                    filling.since = Some(Instant::now());
                }
                filling.lines.extend_from_slice(&arrival.lines);
                filling.rejects.extend(arrival.rejects.iter().cloned());
                filling.clock = filling.clock.max(arrival.at);
                if !arrival.lines.is_empty() {
                    last_reading = Instant::now();
                }
                if filling.lines.len() >= self.chunk_bytes && !self.flush(&mut index, &mut filling)
                {
                    return;
                }
            }
            let due = filling.since.is_some_and(|s| s.elapsed() >= LINGER);
            if (due || closed) && filling.since.is_some() && !self.flush(&mut index, &mut filling) {
                return;
            }
            if closed {
                break;
            }
            if let Some(idle) = self.idle_timeout
                && last_reading.elapsed() >= idle
                && last_tick.elapsed() >= IDLE_TICK
                && filling.since.is_none()
            {
                last_tick = Instant::now();
                let tick = LiveChunk {
                    index,
                    lines: Vec::new(),
                    rejects: Vec::new(),
                    clock: now_micros(),
                    idle: true,
                };
                if !self.send(&mut index, tick) {
                    return;
                }
            }
        }
        drop(self.senders);
        self.wakers.wake_all();
    }

    fn flush(&self, index: &mut u64, filling: &mut Filling) -> bool {
        let f = std::mem::take(filling);
        let chunk = LiveChunk {
            index: *index,
            lines: f.lines,
            rejects: f.rejects,
            clock: f.clock,
            idle: false,
        };
        self.send(index, chunk)
    }
}

/// A worker's end of a live input.
struct LiveChunks {
    worker: usize,
    receiver: Option<Receiver<LiveChunk>>,
    wakers: Wakers,
    decoder: Decoder,
    max_ahead: i64,
}

impl ChunkSource for LiveChunks {
    fn poll(&mut self, interner: &mut Interner) -> Result<SourcePoll, SourceError> {
        let Some(receiver) = &self.receiver else {
            return Ok(SourcePoll::Done);
        };
        match receiver.try_recv() {
            Ok(live) => {
                let mut chunk =
                    self.decoder
                        .decode_live(&live.lines, interner, live.clock, self.max_ahead);
                for reject in live.rejects {
                    chunk.bad.push(BadRecord {
                        line: chunk.lines,
                        reason: reject.reason,
                        raw: reject.raw,
                    });
                    chunk.lines += 1;
                }
                if live.idle {
                    chunk.max_event_time = chunk.max_event_time.max(Some(live.clock));
                }
                Ok(SourcePoll::Chunk(live.index, chunk))
            }
            Err(TryRecvError::Empty) => Ok(SourcePoll::Pending),
            Err(TryRecvError::Disconnected) => Ok(SourcePoll::Done),
        }
    }

    fn set_activator(&mut self, activator: SyncActivator) {
        self.wakers.set(self.worker, activator);
    }
}
