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

mod feed;
mod input;

pub use feed::{Feed, KeyKeeper, Opened};
pub use input::LiveInput;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::wal::Entry;

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
    /// The table's log folder ([`crate::source::wal::wal_dir`]).
    pub dir: PathBuf,
    /// When acknowledgements wait for the disk.
    pub fsync: FsyncPolicy,
    /// Segment size.
    pub segment_bytes: u64,
}

/// Whether the node can keep more readings now: false while the local disk quota is
/// full under `--on-quota backpressure` (the write-ahead log counts against it).
pub type Admit = Arc<dyn Fn() -> bool + Send + Sync>;

/// How a feed cuts, holds and logs its table's readings.
#[derive(Clone)]
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
    /// The local disk quota ([`Feed::has_room`] says no while it is full); none: no
    /// quota.
    pub admit: Option<Admit>,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            capacity: DEFAULT_QUEUE_BYTES,
            chunk_bytes: super::DEFAULT_CHUNK_BYTES,
            idle_timeout: None,
            wal: None,
            logged: Arc::default(),
            admit: None,
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::batch::Interner;
    use crate::query::SourceSchema;
    use crate::source::wal::{self, Wal, WalError};
    use crate::source::{OpenInput, SourceError, SourceLimits, SourcePoll};

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
