//! A table's [`Feed`]: its writer thread numbers arrivals, logs them, answers once they
//! are durable, cuts chunks, and publishes every record to the queries' queues.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::input::LiveInput;
use super::*;
use crate::query::SourceSchema;
use crate::source::SourceLimits;
use crate::source::baselines::{self, Baselines};
use crate::source::wal::{self, Entry, Wal, WalError};

/// What the feed has published: its readers' queues, and where the log stands.
#[derive(Default)]
pub(super) struct Published {
    queues: Vec<(u64, Arc<Queue>)>,
    /// Number of the last record published.
    pub(super) last_seq: Option<u64>,
    /// Number of the last chunk boundary published.
    last_cut: Option<u64>,
    /// Each reader's first record it may still need (0 until it is known).
    pub(super) pins: BTreeMap<u64, u64>,
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
    pub(super) table: String,
    capacity: usize,
    admit: Option<Admit>,
    pub(super) wal_dir: Option<PathBuf>,
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
            admit: config.admit.clone(),
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

    pub(super) fn lock(&self) -> MutexGuard<'_, Published> {
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
    pub(super) fn truncate(&self) {
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
        drop(published);
        LiveInput::new(self.clone(), schema, limits, id, queue, next)
    }

    /// Whether the node can keep `bytes` more now (the local disk quota) and every
    /// reader can take them. A connector that is told no must not accept what it would
    /// publish (answer 503, hold the poll round).
    pub fn has_room(&self, bytes: usize) -> bool {
        self.admit.as_ref().is_none_or(|admit| admit()) && self.readers_have_room(bytes)
    }

    /// Whether every reader can take `bytes` more now, whatever the disk quota: the
    /// MQTT client's question. Waiting for a quota (an uplink outage: hours) would stop
    /// it answering the broker, which drops it after its keepalive and delivers its
    /// unacknowledged messages again.
    pub fn readers_have_room(&self, bytes: usize) -> bool {
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
    pub(super) fn cut_now(&self) -> Option<u64> {
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
