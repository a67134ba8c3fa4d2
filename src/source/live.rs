//! Live input: readings that arrive while the node runs (polled, pushed, from MQTT),
//! handed from the connector that received them to every query that reads their table.
//!
//! A connector turns what it receives into JSON lines in the table's schema and hands
//! them to the table's [`Feed`] as one [`Arrival`]. The feed's writer thread numbers
//! arrivals, appends them to the table's write-ahead log ([`super::wal`]) and, for a
//! push or an MQTT message, answers once they are durable: one fsync covers every
//! request waiting when it starts (group commit), so an acknowledged reading survives
//! a crash. The writer also decides where chunks end (at 1 MiB of readings, or
//! [`LINGER`] after the first) and logs each boundary as a record, so every query, and
//! a replay after a crash, cuts the same chunks and moves its watermark the same way.
//!
//! Each query reading the table holds a [`LiveInput`]: its own queue of records, and a
//! dispatcher thread that first reads back from the log what its checkpoint does not
//! reflect, then forms chunks from its queue and deals chunk `k` to worker `k % n`,
//! like standard input. Nothing is dropped on the way: a connector asks
//! [`Feed::has_room`] before it accepts more (a push answers 503, a poll round waits).
//!
//! Two event-time rules are applied here, because only a live source knows the node's
//! clock at arrival: a reading stamped more than `max_ahead_of_clock` after it is a dead
//! letter, and a source that saw nothing for `idle_timeout` gets an empty chunk whose
//! largest event time is the clock (logged like any boundary), so the watermark follows
//! the clock (minus the out-of-orderness) and windows close on a quiet network.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use timely::scheduling::SyncActivator;
use tokio::sync::oneshot;

use super::baselines::{self, Baselines};
use super::wal::{self, Entry, Wal, WalError};
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
#[derive(Clone, Debug, PartialEq)]
pub struct Reject {
    /// What went wrong, starting with where it came from (a URL, a topic).
    pub reason: String,
    /// What was received, if anything (cut to a KiB).
    pub raw: String,
}

/// What a connector received at one moment: readings as JSON lines, and rejects.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Arrival {
    /// One reading per line, each line ending in `\n`.
    pub lines: Vec<u8>,
    /// What could not be read.
    pub rejects: Vec<Reject>,
    /// The node's clock when it arrived, microseconds.
    pub at: i64,
    /// The `Idempotency-Key` line of a keyed push batch, logged with it so the key is
    /// known after a crash exactly when the batch is.
    pub key_line: Option<String>,
    /// Of a poll with counters: the values each device's delta was taken up to
    /// ([`crate::source::baselines::line`]), logged with its readings so that the next
    /// start takes the next delta from exactly there.
    pub counters: Option<String>,
}

impl Arrival {
    /// An arrival now.
    pub fn now(lines: Vec<u8>, rejects: Vec<Reject>) -> Self {
        Arrival {
            lines,
            rejects,
            at: now_micros(),
            key_line: None,
            counters: None,
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

/// How a live table's log reaches the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every acknowledgement waits for its fsync; one fsync covers every request
    /// waiting when it starts (group commit). Nothing acknowledged is lost.
    Always,
    /// Acknowledge once written and fsync at this interval: a power loss can lose what
    /// was acknowledged in the last interval (a process crash loses nothing).
    Every(Duration),
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "always" {
            return Ok(FsyncPolicy::Always);
        }
        crate::query::parse_duration(s)
            .filter(|&us| us > 0)
            .and_then(|us| u64::try_from(us).ok())
            .map(|us| FsyncPolicy::Every(Duration::from_micros(us)))
            .ok_or_else(|| {
                format!("fsync policy {s}: expected always, or an interval such as 10ms")
            })
    }
}

/// Where and how a feed logs what it accepts.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// The table's log folder ([`wal::wal_dir`]).
    pub dir: PathBuf,
    /// When acknowledgements wait for the disk.
    pub fsync: FsyncPolicy,
    /// Segment size.
    pub segment_bytes: u64,
}

/// How a feed cuts, holds and logs its table's readings.
#[derive(Clone, Debug)]
pub struct FeedConfig {
    /// Bytes held per query before [`Feed::has_room`] says no.
    pub capacity: usize,
    /// A chunk ends once it holds this many bytes of readings.
    pub chunk_bytes: usize,
    /// Nothing arrived for this long: chunks of no readings move the watermark to the
    /// node's clock.
    pub idle_timeout: Option<Duration>,
    /// The write-ahead log; none keeps readings in memory only (lost with the process).
    pub wal: Option<WalConfig>,
    /// Bytes of write-ahead logs, counted with those of the node's other feeds (for
    /// the local disk quota).
    pub logged: Arc<AtomicU64>,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            capacity: DEFAULT_QUEUE_BYTES,
            chunk_bytes: super::DEFAULT_CHUNK_BYTES,
            idle_timeout: None,
            wal: None,
            logged: Arc::default(),
        }
    }
}

/// A record as queries receive it.
type Logged = (u64, Arc<Entry>);

#[derive(Default)]
struct QueueState {
    items: VecDeque<Logged>,
    bytes: usize,
    /// The feed closed: the input ends once what is queued is taken.
    closed: bool,
    /// The input ends with the chunk cut at this record.
    end_after: Option<u64>,
    /// The query stopped reading: arrivals pass it by.
    gone: bool,
}

/// One query's queue of records.
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

/// What the feed has published: its readers' queues, and where the log stands.
#[derive(Default)]
struct Published {
    queues: Vec<(u64, Arc<Queue>)>,
    /// Number of the last record published.
    last_seq: Option<u64>,
    /// Number of the last chunk boundary published.
    last_cut: Option<u64>,
    /// Each reader's first record it may still need (0 until it is known).
    pins: BTreeMap<u64, u64>,
    /// Keyed batches whose key is not in the push table's key file yet: the log keeps
    /// them, so a crash before the key is kept still finds it there.
    unkept_keys: std::collections::BTreeSet<u64>,
    /// Keeps those keys when the log would otherwise have to hold their records.
    key_keeper: Option<Weak<dyn KeyKeeper>>,
    next_reader: u64,
    closed: bool,
}

/// What keeps a table's `Idempotency-Key`s (its push endpoint). The log keeps every
/// keyed batch until its key is durable in the keys file; keys are made durable in
/// batches, and a checkpoint asks for the ones still waiting rather than keep their
/// records: after the last push of a burst nothing else would, and the log kept
/// everything from the burst on until the next push.
pub trait KeyKeeper: Send + Sync {
    /// Makes the keys of the batches logged so far durable and reports them kept
    /// ([`Feed::key_kept`]).
    fn keep_waiting_keys(&self);
}

/// A request to the feed's writer thread.
enum Request {
    /// Log and publish an arrival; answer once it is durable (as the policy says).
    Append(Arrival, Option<oneshot::Sender<Result<u64, String>>>),
    /// End the chunk being filled now; answer the number of the last boundary.
    Cut(oneshot::Sender<Option<u64>>),
    /// A reader's checkpoint moved, or where it begins became known: delete what no
    /// reader needs.
    Truncate,
    /// Readings were refused for want of room ([`Feed::refused`]).
    Refused,
    /// No more arrivals.
    Close,
}

/// The hand-over from one table's connector to the queries that read it, through the
/// table's write-ahead log.
pub struct Feed {
    table: String,
    capacity: usize,
    wal_dir: Option<PathBuf>,
    published: Arc<Mutex<Published>>,
    readings: Arc<AtomicU64>,
    wal_bytes: Arc<AtomicU64>,
    requests: Mutex<Option<Sender<Request>>>,
    writer: Mutex<WriterSlot>,
}

/// The feed's writer: its thread while the feed takes arrivals, then the writer itself.
/// A node's stop closes its feeds before its queries take their last checkpoints, and
/// those must still cut the log (or a clean stop would leave everything since the last
/// checkpoint to be replayed and deleted by the next start). Only a stopping node
/// closes a feed, so no other feed of the table opens its log meanwhile.
enum WriterSlot {
    Running(std::thread::JoinHandle<Writer>),
    Closed(Box<Writer>),
    Gone,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("table", &self.table).finish()
    }
}

/// What opening a feed recovered from its log.
#[derive(Debug, Default)]
pub struct Opened {
    /// `Idempotency-Key` lines of the batches logged last (see [`wal::Recovered`]).
    pub key_lines: Vec<String>,
    /// Each polled device's counters as last logged.
    pub baselines: Baselines,
}

impl Feed {
    /// A feed for `table`; with a log, what it held is recovered (a torn last record
    /// cut) and its numbering goes on.
    pub fn open(table: &str, config: FeedConfig) -> Result<(Arc<Feed>, Opened), WalError> {
        let (wal, recovered) = match &config.wal {
            Some(w) => {
                let (wal, recovered) = Wal::open(&w.dir, w.segment_bytes)?;
                (Some(wal), recovered)
            }
            None => (None, wal::Recovered::default()),
        };
        let published = Arc::new(Mutex::new(Published {
            last_seq: recovered.next_seq.checked_sub(1),
            last_cut: recovered.last_cut,
            ..Published::default()
        }));
        let mut counters = baselines::Keeper::open(config.wal.as_ref().map(|w| w.dir.as_path()));
        for (seq, line) in &recovered.counters {
            counters.apply(*seq, line);
        }
        let baselines = counters.baselines().clone();
        let readings = Arc::new(AtomicU64::new(0));
        let own_bytes = wal.as_ref().map_or(0, Wal::bytes);
        let wal_bytes = config.logged.clone();
        wal_bytes.fetch_add(own_bytes, Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = Writer {
            table: table.to_owned(),
            wal,
            next_seq: recovered.next_seq,
            fsync: config.wal.as_ref().map_or(FsyncPolicy::Always, |w| w.fsync),
            chunk_bytes: config.chunk_bytes.max(1),
            idle_timeout: config.idle_timeout,
            published: published.clone(),
            readings: readings.clone(),
            wal_bytes: wal_bytes.clone(),
            own_bytes,
            counted: true,
            counters,
            requests: rx,
        };
        // A crash left the last chunk open: it is cut at once, so its readings do not
        // wait for the next arrival.
        let filling = match recovered.uncut_clock {
            Some(clock) => Filling {
                bytes: 0,
                clock,
                since: Instant::now().checked_sub(LINGER),
            },
            None => Filling::default(),
        };
        let handle = std::thread::Builder::new()
            .name(format!("feed-{table}"))
            .spawn(move || writer.run(filling))
            .map_err(|source| WalError::Io {
                path: PathBuf::from(table),
                source,
            })?;
        let feed = Feed {
            table: table.to_owned(),
            capacity: config.capacity,
            wal_dir: config.wal.map(|w| w.dir),
            published,
            readings,
            wal_bytes,
            requests: Mutex::new(Some(tx)),
            writer: Mutex::new(WriterSlot::Running(handle)),
        };
        Ok((
            Arc::new(feed),
            Opened {
                key_lines: recovered.key_lines,
                baselines,
            },
        ))
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, request: Request) -> bool {
        self.requests
            .lock()
            .ok()
            .and_then(|r| r.as_ref().map(|tx| tx.send(request).is_ok()))
            .unwrap_or(false)
    }

    /// Deletes what no reader needs: on the writer's thread, or here once closed.
    fn truncate(&self) {
        if self.send(Request::Truncate) {
            return;
        }
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if let WriterSlot::Closed(writer) = &mut *slot {
            writer.truncate();
        }
    }

    fn queues(&self) -> Vec<Arc<Queue>> {
        self.lock().queues.iter().map(|(_, q)| q.clone()).collect()
    }

    /// A new reader of the table. It reads what arrives from now on, or from a
    /// checkpoint given to [`LiveInput::begin`] before its first chunk.
    pub fn subscribe(self: &Arc<Self>, schema: &SourceSchema, limits: SourceLimits) -> LiveInput {
        let queue = Arc::new(Queue::default());
        let mut published = self.lock();
        published.queues.retain(|(_, q)| {
            let state = q.lock();
            // A queue stays while its reader may still take from it.
            !(state.gone || state.closed && state.items.is_empty())
        });
        let id = published.next_reader;
        published.next_reader += 1;
        published.queues.push((id, queue.clone()));
        published.pins.insert(id, 0);
        // A new reader reads what arrives from now on; its first chunk ends where the
        // others' does, so a replay of its log cuts the same chunks.
        let next = published.last_seq.map_or(0, |s| s + 1);
        let start = next;
        drop(published);
        LiveInput {
            name: self.table.clone(),
            schema: Arc::new(schema.clone()),
            limits: limits.sane(),
            feed: self.clone(),
            id,
            queue,
            queued_from: next,
            start: AtomicU64::new(start),
            next: Arc::new(AtomicU64::new(start)),
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

    /// Logs and hands an arrival to every reader, without waiting for the disk (a poll
    /// round: nobody is told "accepted"). Ask [`Feed::has_room`] first.
    pub fn publish(&self, arrival: Arrival) {
        if arrival.lines.is_empty() && arrival.rejects.is_empty() && arrival.counters.is_none() {
            return;
        }
        self.send(Request::Append(arrival, None));
    }

    /// Logs and hands an arrival to every reader; the answer comes once it is durable
    /// (per the fsync policy), with its record number, or says why it is not.
    pub fn append(&self, arrival: Arrival) -> oneshot::Receiver<Result<u64, String>> {
        let (tx, rx) = oneshot::channel();
        if !self.send(Request::Append(arrival, Some(tx))) {
            let (tx, rx) = oneshot::channel();
            tx.send(Err(format!("table {} takes no more readings", self.table)))
                .ok();
            return rx;
        }
        rx
    }

    /// The key of the batch logged as record `seq` is kept in the push table's key file:
    /// the log need not keep the record for it.
    pub fn key_kept(&self, seq: u64) {
        self.lock().unkept_keys.remove(&seq);
    }

    /// `keeper` keeps the table's keys when the log is cut. Held weakly: the keeper
    /// holds the feed.
    pub fn keep_keys_with(&self, keeper: Weak<dyn KeyKeeper>) {
        self.lock().key_keeper = Some(keeper);
    }

    /// Readings were refused for want of room. The devices are sending: the watermark
    /// must not follow the clock as on a quiet network (their readings, taken on a
    /// resend, would be late). And the log deletes now the segments every reader has
    /// checkpointed and whose keys are kept, as a checkpoint does: when the log fills the
    /// quota, no reading is taken, no query has anything to checkpoint, and waiting for
    /// the next checkpoint would wait for good.
    pub fn refused(&self) {
        self.send(Request::Refused);
    }

    /// Ends the chunk being filled; returns the number of the last chunk boundary.
    fn cut_now(&self) -> Option<u64> {
        let (tx, rx) = oneshot::channel();
        if self.send(Request::Cut(tx)) {
            return rx.blocking_recv().ok().flatten();
        }
        self.lock().last_cut
    }

    /// Queries reading the table now.
    pub fn readers(&self) -> usize {
        self.queues()
            .iter()
            .filter(|q| {
                let state = q.lock();
                !state.gone && !state.closed && state.end_after.is_none()
            })
            .count()
    }

    /// Whether [`Feed::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Readings published so far.
    pub fn published(&self) -> u64 {
        self.readings.load(Ordering::Relaxed)
    }

    /// Bytes of write-ahead logs on disk, this table's and those counted with it.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.load(Ordering::Relaxed)
    }

    /// No more arrivals: the chunk being filled is cut, and each reader's input ends
    /// once it has taken what is queued. Returns once the log is closed.
    pub fn close(&self) {
        self.send(Request::Close);
        if let Ok(mut requests) = self.requests.lock() {
            requests.take();
        }
        let mut slot = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*slot, WriterSlot::Running(_))
            && let WriterSlot::Running(handle) = std::mem::replace(&mut *slot, WriterSlot::Gone)
            && let Ok(writer) = handle.join()
        {
            *slot = WriterSlot::Closed(Box::new(writer));
        }
        drop(slot);
        let mut published = self.lock();
        published.closed = true;
        for (_, queue) in &published.queues {
            queue.lock().closed = true;
            queue.ready.notify_all();
        }
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Ok(mut requests) = self.requests.lock() {
            requests.take();
        }
    }
}

/// The chunk being filled, as the writer sees it.
#[derive(Default)]
struct Filling {
    bytes: usize,
    clock: i64,
    since: Option<Instant>,
}

impl Filling {
    fn add(&mut self, arrival: &Arrival) {
        self.since.get_or_insert_with(Instant::now);
        self.bytes += arrival.lines.len();
        self.clock = self.clock.max(arrival.at);
    }

    fn cut(&mut self) -> Entry {
        let clock = self.clock;
        *self = Filling::default();
        Entry::Cut { clock, idle: false }
    }
}

/// The feed's writer thread: numbers, logs (one fsync per batch of waiting requests),
/// publishes, and decides where chunks end.
struct Writer {
    table: String,
    wal: Option<Wal>,
    next_seq: u64,
    fsync: FsyncPolicy,
    chunk_bytes: usize,
    idle_timeout: Option<Duration>,
    published: Arc<Mutex<Published>>,
    readings: Arc<AtomicU64>,
    /// Log bytes of every feed of the node; this one's share is `own_bytes`.
    wal_bytes: Arc<AtomicU64>,
    own_bytes: u64,
    /// Whether the node's log bytes count this log (until the feed closes).
    counted: bool,
    /// Polled devices' counters as logged, kept before the records holding them go.
    counters: baselines::Keeper,
    requests: Receiver<Request>,
}

type Waiter = oneshot::Sender<Result<u64, String>>;

impl Writer {
    fn run(mut self, mut filling: Filling) -> Self {
        let mut last_reading = Instant::now();
        let mut last_tick = Instant::now();
        let mut last_sync = Instant::now();
        let mut unsynced = false;
        loop {
            let wait = match filling.since {
                Some(since) => LINGER.saturating_sub(since.elapsed()),
                None => IDLE_TICK,
            };
            let mut requests = Vec::new();
            match self.requests.recv_timeout(wait) {
                Ok(r) => requests.push(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => requests.push(Request::Close),
            }
            while let Ok(r) = self.requests.try_recv() {
                requests.push(r);
            }
            let mut entries = Vec::new();
            let mut waiters: Vec<(usize, Waiter)> = Vec::new();
            let mut cut_waiters = Vec::new();
            let (mut close, mut truncate) = (false, false);
            for request in requests {
                match request {
                    Request::Append(arrival, waiter) => {
                        filling.add(&arrival);
                        if !arrival.lines.is_empty() {
                            last_reading = Instant::now();
                        }
                        entries.push(Entry::Arrival(arrival));
                        if let Some(w) = waiter {
                            waiters.push((entries.len() - 1, w));
                        }
                        if filling.bytes >= self.chunk_bytes {
                            entries.push(filling.cut());
                        }
                    }
                    Request::Cut(w) => {
                        if filling.since.is_some() {
                            entries.push(filling.cut());
                        }
                        cut_waiters.push(w);
                    }
                    Request::Truncate => truncate = true,
                    Request::Refused => {
                        last_reading = Instant::now();
                        truncate = true;
                    }
                    Request::Close => close = true,
                }
            }
            let due = filling.since.is_some_and(|s| s.elapsed() >= LINGER);
            if (due || close) && filling.since.is_some() {
                entries.push(filling.cut());
            } else if let Some(idle) = self.idle_timeout
                && filling.since.is_none()
                && !self.lock().queues.is_empty()
                && last_reading.elapsed() >= idle
                && last_tick.elapsed() >= IDLE_TICK
                && !close
            {
                last_tick = Instant::now();
                entries.push(Entry::Cut {
                    clock: now_micros(),
                    idle: true,
                });
            }
            if !entries.is_empty() {
                let acknowledging = !waiters.is_empty();
                match self.log(&entries, acknowledging, &mut last_sync, &mut unsynced) {
                    Ok(first) => {
                        self.publish(first, entries);
                        for (i, w) in waiters {
                            w.send(Ok(first + i as u64)).ok();
                        }
                    }
                    Err(e) => {
                        tracing::error!(table = %self.table, error = %e, "Readings not logged: refused");
                        for (_, w) in waiters {
                            w.send(Err(e.to_string())).ok();
                        }
                    }
                }
            }
            if let FsyncPolicy::Every(every) = self.fsync
                && unsynced
                && (last_sync.elapsed() >= every || close)
            {
                self.sync(&mut last_sync, &mut unsynced);
            }
            let last_cut = self.lock().last_cut;
            for w in cut_waiters {
                w.send(last_cut).ok();
            }
            if truncate {
                self.truncate();
            }
            if close {
                if unsynced {
                    self.sync(&mut last_sync, &mut unsynced);
                }
                // The next feed of the table counts its log again when it opens.
                self.account(0);
                self.counted = false;
                return self;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes `entries` to the log and makes them as durable as the policy asks
    /// before they are acknowledged; returns the first one's number.
    fn log(
        &mut self,
        entries: &[Entry],
        acknowledging: bool,
        last_sync: &mut Instant,
        unsynced: &mut bool,
    ) -> Result<u64, WalError> {
        let Some(wal) = self.wal.as_mut() else {
            let first = self.next_seq;
            self.next_seq += entries.len() as u64;
            return Ok(first);
        };
        let first = wal.append(entries)?;
        *unsynced = true;
        // Records nobody waits for (a poll round, a chunk boundary) ride on the next
        // fsync: the file is sequential, so a later durable record makes them durable.
        if acknowledging && self.fsync == FsyncPolicy::Always {
            wal.sync()?;
            *unsynced = false;
            *last_sync = Instant::now();
        }
        let bytes = wal.bytes();
        self.next_seq = wal.next_seq();
        self.account(bytes);
        Ok(first)
    }

    fn sync(&mut self, last_sync: &mut Instant, unsynced: &mut bool) {
        if let Some(wal) = self.wal.as_mut()
            && let Err(e) = wal.sync()
        {
            tracing::error!(table = %self.table, error = %e, "Write-ahead log fsync failed");
            return;
        }
        *unsynced = false;
        *last_sync = Instant::now();
    }

    fn publish(&mut self, first: u64, entries: Vec<Entry>) {
        // The field, not `self.lock()`: the counters are updated under it.
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let mut readings = 0u64;
        for (i, entry) in entries.into_iter().enumerate() {
            let seq = first + i as u64;
            let bytes = match &entry {
                Entry::Arrival(a) => {
                    if let Some(line) = &a.counters {
                        self.counters.apply(seq, line);
                    }
                    readings += memchr::memchr_iter(b'\n', &a.lines).count() as u64;
                    if a.key_line.is_some() {
                        published.unkept_keys.insert(seq);
                    }
                    a.bytes()
                }
                Entry::Cut { .. } => {
                    published.last_cut = Some(seq);
                    0
                }
            };
            published.last_seq = Some(seq);
            let entry = Arc::new(entry);
            for (_, queue) in &published.queues {
                let mut state = queue.lock();
                if state.gone || state.closed || state.end_after.is_some_and(|e| e < seq) {
                    continue;
                }
                state.items.push_back((seq, entry.clone()));
                state.bytes += bytes;
                drop(state);
                queue.ready.notify_one();
            }
        }
        self.readings.fetch_add(readings, Ordering::Relaxed);
    }

    /// Deletes the segments every reader has checkpointed.
    fn truncate(&mut self) {
        let mut keep_from = self.keep_from();
        if keep_from.keys_hold_back() {
            let keeper = self.lock().key_keeper.as_ref().and_then(Weak::upgrade);
            // Not under the lock: the keeper reports its keys kept through it.
            if let Some(keeper) = keeper {
                keeper.keep_waiting_keys();
                keep_from = self.keep_from();
            }
        }
        let keep_from = keep_from.first();
        // No reader: none needs the log; a reader at 0 may need all of it.
        let Some(through) = keep_from.unwrap_or(self.next_seq).checked_sub(1) else {
            return;
        };
        if self.wal.is_some()
            && let Err(e) = self.counters.keep(self.next_seq.saturating_sub(1))
        {
            tracing::warn!(table = %self.table, error = %e, "Counter baselines not kept: the log keeps the records holding them");
            return;
        }
        if let Some(wal) = self.wal.as_mut() {
            // A new segment at every checkpoint lets the active one go at the next, so
            // the log holds about what came since the readers' previous checkpoints.
            if let Err(e) = wal.rotate() {
                tracing::warn!(table = %self.table, error = %e, "Write-ahead log segment not rotated");
            }
            match wal.truncate_through(through) {
                Ok(freed) if freed > 0 => {
                    tracing::debug!(table = %self.table, freed, "Write-ahead log segments checkpointed by every reader deleted");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(table = %self.table, error = %e, "Write-ahead log segments not deleted")
                }
            }
            let bytes = wal.bytes();
            self.account(bytes);
        }
    }

    fn keep_from(&self) -> KeepFrom {
        let published = self.lock();
        KeepFrom {
            readers: published.pins.values().copied().min(),
            keys: published.unkept_keys.first().copied(),
        }
    }

    /// Moves this log's share of the node's log bytes to `bytes`.
    fn account(&mut self, bytes: u64) {
        if !self.counted {
            return;
        }
        if bytes >= self.own_bytes {
            self.wal_bytes
                .fetch_add(bytes - self.own_bytes, Ordering::Relaxed);
        } else {
            self.wal_bytes
                .fetch_sub(self.own_bytes - bytes, Ordering::Relaxed);
        }
        self.own_bytes = bytes;
    }
}

/// The first log records the readers and the keys not kept yet need.
struct KeepFrom {
    readers: Option<u64>,
    keys: Option<u64>,
}

impl KeepFrom {
    /// Whether a key not kept yet holds records no reader needs.
    fn keys_hold_back(&self) -> bool {
        self.keys
            .is_some_and(|keys| self.readers.is_none_or(|readers| keys < readers))
    }

    fn first(&self) -> Option<u64> {
        self.readers.into_iter().chain(self.keys).min()
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
    feed: Arc<Feed>,
    id: u64,
    queue: Arc<Queue>,
    /// The queue holds every record from this number on.
    queued_from: u64,
    /// First record this reader takes.
    start: AtomicU64,
    /// First record not in a chunk handed to the workers yet.
    next: Arc<AtomicU64>,
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
    /// The table read.
    pub fn table(&self) -> &str {
        &self.name
    }

    /// Where the reader starts: at `resume` (the first record a checkpoint does not
    /// reflect) if the log still holds it, else with what arrives from now on.
    /// Returns the first record it reads.
    pub fn begin(&self, resume: Option<u64>) -> u64 {
        self.begin_keeping(resume, None)
    }

    /// [`LiveInput::begin`], the log keeping records from `keep` on for this reader
    /// even though it reads from later: a cluster process may have to go back one
    /// checkpoint ([`crate::stream::StreamState::roll_back`]) and replay from there.
    /// The reader's pin is set once, to the lower of the two: a truncation between
    /// setting it to the start and lowering it could delete what `keep` needs.
    pub fn begin_keeping(&self, resume: Option<u64>, keep: Option<u64>) -> u64 {
        let mut start = self.start.load(Ordering::SeqCst);
        if let (Some(resume), Some(dir)) = (resume, &self.feed.wal_dir) {
            let log_end = self.feed.lock().last_seq.map_or(0, |s| s + 1);
            let kept = wal::first_kept(dir).unwrap_or(log_end);
            if resume > log_end {
                tracing::warn!(table = %self.name, resume, log_end, "The write-ahead log ends before the query's checkpoint (was it deleted?): reading what arrives from now on");
            } else if resume < kept {
                tracing::warn!(table = %self.name, resume, kept, "Records the query had not checkpointed are no longer in the write-ahead log: reading from the first kept");
                start = kept;
            } else {
                // Records the queue holds before `resume` (a checkpoint's successor
                // subscribes before its predecessor's last chunk) are passed over.
                start = resume;
            }
        }
        self.start.store(start, Ordering::SeqCst);
        self.next.store(start, Ordering::SeqCst);
        self.pin(keep.map_or(start, |keep| keep.min(start)));
        // Until now the reader held the whole log: a checkpoint's successor begins after
        // its predecessor's truncation, which could delete nothing, and a quiet node
        // takes no further checkpoint to delete it.
        self.feed.truncate();
        start
    }

    /// Whether chunks were handed to the workers since [`LiveInput::begin`].
    pub fn has_read(&self) -> bool {
        self.position() > self.start.load(Ordering::SeqCst)
    }

    /// The first record not yet handed to the workers: once the query has processed
    /// what it was handed, everything before it is reflected in its outputs and state.
    pub fn position(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    /// Records before `next` are in the query's saved state: the log need not keep
    /// them for it.
    pub fn checkpointed(&self, next: u64) {
        self.pin(next);
        self.feed.truncate();
    }

    fn pin(&self, keep_from: u64) {
        if let Some(pin) = self.feed.lock().pins.get_mut(&self.id) {
            *pin = keep_from;
        }
    }

    /// The query stopped reading (it ended or failed): what is queued is dropped and
    /// nothing more is queued for it, so it never holds back the others.
    pub fn leave(&self) {
        let mut state = self.queue.lock();
        state.gone = true;
        state.items.clear();
        state.bytes = 0;
        drop(state);
        self.feed.lock().pins.remove(&self.id);
    }

    /// The query stops reading: the chunk being filled is cut, what is queued up to
    /// there is still processed, and then its input ends.
    pub fn finish(&self) {
        let end = self.feed.cut_now();
        let mut state = self.queue.lock();
        match end {
            Some(end) => state.end_after = Some(end),
            None => state.closed = true,
        }
        drop(state);
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
        let start = self.start.load(Ordering::SeqCst);
        let dispatcher = Dispatcher {
            table: self.name.clone(),
            queue: self.queue.clone(),
            replay: self
                .feed
                .wal_dir
                .clone()
                .filter(|_| start < self.queued_from)
                .map(|dir| (dir, start, self.queued_from - 1)),
            start,
            next: self.next.clone(),
            senders,
            wakers: hub.wakers.clone(),
            index: 0,
            filling: Chunk::default(),
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

    fn per_process(&self) -> bool {
        true
    }
}

/// The chunk a dispatcher is filling.
#[derive(Default)]
struct Chunk {
    lines: Vec<u8>,
    rejects: Vec<Reject>,
}

/// Forms one query's chunks at the feed's boundaries (read back from the log first,
/// then from its queue) and deals chunk `k` to worker `k % n`.
struct Dispatcher {
    table: String,
    queue: Arc<Queue>,
    /// Records to read back from the log first: folder, first, last.
    replay: Option<(PathBuf, u64, u64)>,
    start: u64,
    next: Arc<AtomicU64>,
    senders: Vec<SyncSender<LiveChunk>>,
    wakers: Wakers,
    index: u64,
    filling: Chunk,
}

/// What a record did to the dispatcher.
enum Step {
    Go,
    /// The input ends here.
    End,
    /// The workers are gone.
    Gone,
}

impl Dispatcher {
    fn take(&mut self, seq: u64, entry: &Entry, end_after: Option<u64>) -> Step {
        if seq < self.start {
            return Step::Go;
        }
        match entry {
            Entry::Arrival(a) => {
                self.filling.lines.extend_from_slice(&a.lines);
                self.filling.rejects.extend(a.rejects.iter().cloned());
                Step::Go
            }
            Entry::Cut { clock, idle } => {
                let chunk = std::mem::take(&mut self.filling);
                let live = LiveChunk {
                    index: self.index,
                    lines: chunk.lines,
                    rejects: chunk.rejects,
                    clock: *clock,
                    idle: *idle,
                };
                let worker = (self.index % self.senders.len() as u64) as usize;
                let sent = self.senders[worker].send(live).is_ok();
                self.wakers.wake(worker);
                self.index += 1;
                self.next.store(seq + 1, Ordering::SeqCst);
                if !sent {
                    Step::Gone
                } else if end_after.is_some_and(|e| seq >= e) {
                    Step::End
                } else {
                    Step::Go
                }
            }
        }
    }

    fn run(mut self) {
        if let Some((dir, from, until)) = self.replay.take() {
            let read_started = Instant::now();
            let mut step = Step::Go;
            let mut replayed = 0u64;
            let read = wal::replay(&dir, from, until, |seq, entry| {
                replayed += 1;
                let end_after = self.queue.lock().end_after;
                step = self.take(seq, &entry, end_after);
                matches!(step, Step::Go)
            });
            if let Err(e) = read {
                tracing::error!(table = %self.table, error = %e, "Cannot read back the write-ahead log");
            }
            tracing::info!(table = %self.table, from, until, replayed, ms = read_started.elapsed().as_millis() as u64, "Read back the write-ahead log");
            if !matches!(step, Step::Go) {
                return self.end();
            }
        }
        loop {
            let (items, closed, end_after) = {
                let mut state = self.queue.lock();
                if state.items.is_empty() && !state.closed && !state.gone {
                    state = self
                        .queue
                        .ready
                        .wait_timeout(state, IDLE_TICK)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                state.bytes = 0;
                (
                    std::mem::take(&mut state.items),
                    state.closed || state.gone,
                    state.end_after,
                )
            };
            for (seq, entry) in &items {
                match self.take(*seq, entry, end_after) {
                    Step::Go => {}
                    Step::End | Step::Gone => return self.end(),
                }
            }
            // Asked to end at a boundary already handed out.
            if end_after.is_some_and(|e| e < self.next.load(Ordering::SeqCst)) || closed {
                return self.end();
            }
        }
    }

    fn end(self) {
        drop(self.senders);
        self.wakers.wake_all();
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

#[cfg(test)]
mod tests {
    use super::*;

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    fn schema() -> std::result::Result<SourceSchema, crate::query::QueryError> {
        crate::query::parse(
            "t",
            std::path::Path::new("t.sql"),
            "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts');
             SELECT COUNT(*) FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
        )
        .map(|p| p.source)
    }

    fn logged_feed(dir: &std::path::Path) -> std::result::Result<Arc<Feed>, WalError> {
        let config = FeedConfig {
            wal: Some(WalConfig {
                dir: dir.to_owned(),
                fsync: FsyncPolicy::Always,
                segment_bytes: wal::DEFAULT_SEGMENT_BYTES,
            }),
            ..FeedConfig::default()
        };
        Feed::open("r", config).map(|(feed, _)| feed)
    }

    fn reading(ts: i64) -> Arrival {
        Arrival::now(
            format!("{{\"device_id\":\"a\",\"ts\":{ts},\"v\":1}}\n").into_bytes(),
            Vec::new(),
        )
    }

    /// Every reading a one-worker reader gets until its input ends.
    fn drain(input: &LiveInput) -> std::result::Result<usize, SourceError> {
        let mut source = input.worker_source(0, 1);
        let mut interner = Interner::new();
        let mut readings = 0;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match source.poll(&mut interner)? {
                SourcePoll::Chunk(_, chunk) => readings += chunk.batch.len,
                SourcePoll::Done => return Ok(readings),
                SourcePoll::Pending => {
                    assert!(Instant::now() < deadline, "the input never ended");
                    std::thread::yield_now();
                }
            }
        }
    }

    #[test]
    fn an_acknowledged_arrival_is_in_the_log_when_the_answer_comes() -> Result {
        let dir = tempfile::tempdir()?;
        let feed = logged_feed(dir.path())?;
        let seq = feed.append(reading(1)).blocking_recv()??;
        let mut found = Vec::new();
        wal::replay(dir.path(), 0, seq, |s, e| {
            found.push((s, e));
            true
        })?;
        assert!(matches!(&found[..], [(0, Entry::Arrival(a))] if a.lines == reading(1).lines));
        feed.close();
        Ok(())
    }

    #[test]
    fn a_checkpoints_successor_takes_nothing_its_predecessor_took() -> Result {
        let dir = tempfile::tempdir()?;
        let feed = logged_feed(dir.path())?;
        let schema = schema()?;
        let first = feed.subscribe(&schema, SourceLimits::default());
        first.begin(None);
        feed.append(reading(1)).blocking_recv()??;
        // The successor subscribes while the chunk is being filled, as a checkpoint
        // does; a reading comes before its predecessor ends at a boundary past both.
        let successor = feed.subscribe(&schema, SourceLimits::default());
        feed.append(reading(2)).blocking_recv()??;
        first.finish();
        assert_eq!(drain(&first)?, 2);
        let checkpoint = first.position();
        first.leave();
        assert_eq!(successor.begin(Some(checkpoint)), checkpoint);
        feed.append(reading(3)).blocking_recv()??;
        successor.finish();
        assert_eq!(drain(&successor)?, 1, "a reading was taken twice");
        feed.close();
        Ok(())
    }

    /// While readings are refused for want of room the devices are sending: no idle
    /// tick moves the watermark to the clock (a resend taken after it would be late).
    /// Without refusals, the same quiet time ticks.
    #[test]
    fn refused_readings_keep_the_idle_clock_from_ticking() -> Result {
        for refusing in [true, false] {
            let dir = tempfile::tempdir()?;
            let config = FeedConfig {
                idle_timeout: Some(Duration::from_secs(1)),
                wal: Some(WalConfig {
                    dir: dir.path().to_owned(),
                    fsync: FsyncPolicy::Always,
                    segment_bytes: wal::DEFAULT_SEGMENT_BYTES,
                }),
                ..FeedConfig::default()
            };
            let (feed, _) = Feed::open("r", config)?;
            let reader = feed.subscribe(&schema()?, SourceLimits::default());
            reader.begin(None);
            feed.append(reading(1)).blocking_recv()??;
            // Quiet for well over the idle timeout and the idle tick; a refusal every
            // 20 ms (a gap of a whole timeout would let a tick through).
            let until = Instant::now() + 5 * IDLE_TICK;
            while Instant::now() < until {
                if refusing {
                    feed.refused();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            feed.close();
            let mut idle_ticks = 0;
            wal::replay(dir.path(), 0, u64::MAX, |_, e| {
                idle_ticks += usize::from(matches!(e, Entry::Cut { idle: true, .. }));
                true
            })?;
            assert_eq!(idle_ticks == 0, refusing, "{idle_ticks} idle ticks");
        }
        Ok(())
    }

    /// A cluster process's successor keeps the log from its predecessor's start, in
    /// case it goes back one checkpoint; without that the checkpoint lets it go.
    #[test]
    fn a_reader_keeping_an_earlier_position_holds_the_log_from_there() -> Result {
        for keep in [false, true] {
            let dir = tempfile::tempdir()?;
            let feed = logged_feed(dir.path())?;
            let schema = schema()?;
            let first = feed.subscribe(&schema, SourceLimits::default());
            first.begin(None);
            let mut seqs = Vec::new();
            for ts in 0..4 {
                seqs.push(feed.append(reading(ts)).blocking_recv()??);
            }
            // A checkpoint: the successor subscribes, the predecessor's input ends at a
            // cut, and the successor begins where it ended.
            let successor = feed.subscribe(&schema, SourceLimits::default());
            first.finish();
            assert_eq!(drain(&first)?, 4);
            let end = first.position();
            successor.begin_keeping(Some(end), keep.then_some(seqs[1]));
            first.checkpointed(end);
            first.leave();
            feed.close();
            let kept = wal::first_kept(dir.path());
            if keep {
                assert!(kept.is_some_and(|k| k <= seqs[1]), "kept from {kept:?}");
            } else {
                assert!(kept.is_none_or(|k| k > seqs[3]), "kept from {kept:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn a_chunk_a_crash_left_open_is_cut_at_the_restart() -> Result {
        let dir = tempfile::tempdir()?;
        let schema = schema()?;
        {
            let (mut wal, _) = Wal::open(dir.path(), wal::DEFAULT_SEGMENT_BYTES)?;
            wal.append(&[Entry::Arrival(reading(1)), Entry::Arrival(reading(2))])?;
            wal.sync()?;
        }
        let feed = logged_feed(dir.path())?;
        let reader = feed.subscribe(&schema, SourceLimits::default());
        assert_eq!(reader.begin(Some(0)), 0);
        // Nothing new arrives; the two readings still reach the query.
        let mut source = reader.worker_source(0, 1);
        let mut interner = Interner::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut readings = 0;
        while readings < 2 {
            assert!(
                Instant::now() < deadline,
                "the recovered chunk was never cut"
            );
            if let SourcePoll::Chunk(_, chunk) = source.poll(&mut interner)? {
                readings += chunk.batch.len;
            }
            std::thread::yield_now();
        }
        feed.close();
        Ok(())
    }

    #[test]
    fn a_restart_reads_back_what_the_checkpoint_does_not_reflect() -> Result {
        let dir = tempfile::tempdir()?;
        let schema = schema()?;
        let feed = logged_feed(dir.path())?;
        let reader = feed.subscribe(&schema, SourceLimits::default());
        reader.begin(None);
        for ts in 0..3 {
            feed.append(reading(ts)).blocking_recv()??;
        }
        // The process dies: the reader's checkpoint is where it began.
        drop(reader);
        feed.close();
        let feed = logged_feed(dir.path())?;
        let reader = feed.subscribe(&schema, SourceLimits::default());
        assert_eq!(reader.begin(Some(0)), 0);
        reader.finish();
        assert_eq!(drain(&reader)?, 3);
        feed.close();
        Ok(())
    }
}
