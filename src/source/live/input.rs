//! A query's [`LiveInput`]: its queue of the feed's records, read back from the log
//! where its checkpoint left off, cut into chunks and dealt to the workers.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use timely::scheduling::SyncActivator;

use super::feed::Feed;
use super::*;
use crate::batch::Interner;
use crate::decode::{BadRecord, Decoder, JsonDecoder};
use crate::query::SourceSchema;
use crate::source::wal::{self, Entry};
use crate::source::{ChunkSource, OpenInput, SourceError, SourceLimits, SourcePoll, Wakers};

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
    /// Reader `id` of `feed`, whose queue holds every record from `next` on, reading
    /// from there unless [`LiveInput::begin`] says otherwise.
    pub(super) fn new(
        feed: Arc<Feed>,
        schema: &SourceSchema,
        limits: SourceLimits,
        id: u64,
        queue: Arc<Queue>,
        next: u64,
    ) -> Self {
        LiveInput {
            name: feed.table.clone(),
            schema: Arc::new(schema.clone()),
            limits: limits.sane(),
            feed,
            id,
            queue,
            queued_from: next,
            start: AtomicU64::new(next),
            next: Arc::new(AtomicU64::new(next)),
            hub: Mutex::new(Hub::default()),
        }
    }

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
