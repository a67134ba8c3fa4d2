//! Standard input: one reader thread cuts the stream into chunks at line breaks and deals
//! them to the workers in turn, waking each worker as its chunk arrives.
//!
//! A chunk holds at most `chunk_bytes + max_line_bytes` (plus one read): a last line that
//! grows past the limit is skipped to its end as it is read, keeping only its first KiB
//! for the dead letter. A read error goes to the worker due the next chunk, which fails
//! the run with it: a broken pipe or device is not the end of the input.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};

use timely::scheduling::SyncActivator;

use super::{
    ChunkSource, LongLine, OpenInput, SCAN_BLOCK, SourceError, SourceLimits, SourcePoll, Wakers,
};
use crate::batch::Interner;
use crate::decode::{CsvDecoder, Decoder, Format, JsonDecoder};
use crate::query::SourceSchema;

/// Chunks in flight per worker: enough to keep a worker busy while the reader reads.
const QUEUE: usize = 2;

/// What the reader thread sends: chunk `index`, its whole lines, and a last line that was
/// too long; or the read error that stopped it.
type Chunk = Result<(u64, Vec<u8>, Option<LongLine>), std::io::Error>;

/// Standard input, opened: the reader thread starts when the first worker asks for its
/// source.
pub struct StdinInput {
    schema: Arc<SourceSchema>,
    csv: Option<CsvDecoder>,
    limits: SourceLimits,
    hub: Mutex<Hub>,
}

#[derive(Default)]
struct Hub {
    receivers: Vec<Option<Receiver<Chunk>>>,
    wakers: Wakers,
    started: bool,
}

impl StdinInput {
    /// Prepares to read stdin; for CSV, reads the header line now.
    pub fn open(
        format: Format,
        schema: &SourceSchema,
        limits: SourceLimits,
    ) -> Result<Self, SourceError> {
        let limits = limits.sane();
        let csv = match format {
            Format::Jsonl => None,
            Format::Csv => {
                let mut header = Vec::new();
                let mut byte = [0u8; 1];
                let mut stdin = std::io::stdin().lock();
                loop {
                    match stdin.read(&mut byte) {
                        Ok(0) => break,
                        Ok(_) => {
                            header.push(byte[0]);
                            if byte[0] == b'\n' {
                                break;
                            }
                            if header.len() > limits.max_line_bytes {
                                return Err(SourceError::HeaderTooLong {
                                    path: "-".into(),
                                    limit: limits.max_line_bytes,
                                });
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(source) => {
                            return Err(SourceError::Read {
                                path: "-".into(),
                                source,
                            });
                        }
                    }
                }
                // Stdin's own buffer keeps whatever was read past the header for the reader.
                Some(
                    CsvDecoder::new(schema, &header).map_err(|source| SourceError::CsvHeader {
                        path: "-".into(),
                        source,
                    })?,
                )
            }
        };
        Ok(StdinInput {
            schema: Arc::new(schema.clone()),
            csv,
            limits,
            hub: Mutex::new(Hub::default()),
        })
    }

    fn start(&self, hub: &mut Hub, peers: usize) {
        let mut senders: Vec<SyncSender<Chunk>> = Vec::with_capacity(peers);
        for _ in 0..peers {
            let (tx, rx) = sync_channel(QUEUE);
            senders.push(tx);
            hub.receivers.push(Some(rx));
        }
        hub.wakers.resize(peers);
        let wakers = hub.wakers.clone();
        let limits = self.limits;
        std::thread::spawn(move || read_stdin(senders, wakers, limits));
        hub.started = true;
    }
}

/// Reads stdin to its end, sending chunk `k` to worker `k % peers`; a read error is sent
/// in place of the next chunk and ends the reading.
fn read_stdin(senders: Vec<SyncSender<Chunk>>, wakers: Wakers, limits: SourceLimits) {
    let mut cutter = ChunkCutter::new(std::io::stdin().lock(), limits);
    let mut index = 0u64;
    loop {
        let worker = (index % senders.len() as u64) as usize;
        let (chunk, last) = match cutter.next_chunk() {
            Ok(None) => break,
            Ok(Some((bytes, long))) => (Ok((index, bytes, long)), false),
            Err(e) => (Err(e), true),
        };
        if senders[worker].send(chunk).is_err() {
            break;
        }
        wakers.wake(worker);
        index += 1;
        if last {
            break;
        }
    }
    drop(senders);
    wakers.wake_all();
}
/// Cuts a byte stream into chunks of whole lines within [`SourceLimits`].
struct ChunkCutter<R> {
    reader: R,
    limits: SourceLimits,
    /// The start of a line that the next chunk completes.
    carry: Vec<u8>,
    scratch: Vec<u8>,
    eof: bool,
}

impl<R: Read> ChunkCutter<R> {
    fn new(reader: R, limits: SourceLimits) -> Self {
        ChunkCutter {
            reader,
            limits,
            carry: Vec::new(),
            scratch: Vec::new(),
            eof: false,
        }
    }

    /// Reads into `buf[at..]`, retrying interruptions; 0 is the end of the input.
    fn read(&mut self, into_scratch: bool, at: usize) -> std::io::Result<usize> {
        loop {
            let buf = if into_scratch {
                &mut self.scratch[at..]
            } else {
                &mut self.carry[at..]
            };
            match self.reader.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// The next chunk: whole lines, and the last line when it was over the limit.
    /// `None` at the end of the input.
    fn next_chunk(&mut self) -> std::io::Result<Option<(Vec<u8>, Option<LongLine>)>> {
        // Read a chunk's worth past the carried start of a line, so that every call
        // makes progress even when that start is as long as a chunk.
        let want = self.carry.len() + self.limits.chunk_bytes;
        while !self.eof && self.carry.len() < want {
            let old = self.carry.len();
            self.carry.resize(want.max(old + 4096), 0);
            match self.read(false, old) {
                Ok(n) => {
                    self.carry.truncate(old + n);
                    self.eof = n == 0;
                }
                Err(e) => {
                    self.carry.truncate(old);
                    return Err(e);
                }
            }
        }
        let mut buf = std::mem::take(&mut self.carry);
        if self.eof {
            // Every line is whole; the decoder bounds the last one like any other.
            return Ok(Some(buf).filter(|b| !b.is_empty()).map(|b| (b, None)));
        }
        let tail = memchr::memrchr(b'\n', &buf).map_or(0, |p| p + 1);
        // One byte of slack for the `\r` of a CRLF line: the decoder judges the length.
        if buf.len() - tail <= self.limits.max_line_bytes + 1 {
            self.carry = buf.split_off(tail);
            return Ok(Some((buf, None)));
        }
        // The last line is already over the limit: keep its head, skip to its end.
        let mut long = LongLine::new(&buf[tail..]);
        buf.truncate(tail);
        self.scratch.resize(SCAN_BLOCK, 0);
        loop {
            let n = self.read(true, 0)?;
            if n == 0 {
                // No line break ends it, so a last `\r` is part of the line.
                long.cr = false;
                self.eof = true;
                break;
            }
            if let Some(k) = memchr::memchr(b'\n', &self.scratch[..n]) {
                long.extend(&self.scratch[..k]);
                self.carry.extend_from_slice(&self.scratch[k + 1..n]);
                break;
            }
            long.extend(&self.scratch[..n]);
        }
        Ok(Some((buf, Some(long))))
    }
}

impl OpenInput for StdinInput {
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
        let decoder = match &self.csv {
            Some(csv) => Decoder::Csv(csv.clone()),
            None => Decoder::Json(JsonDecoder::new(&self.schema)),
        }
        .with_max_line_bytes(self.limits.max_line_bytes);
        Box::new(StdinChunks {
            worker,
            receiver,
            wakers,
            decoder,
            max_line: self.limits.max_line_bytes,
        })
    }

    fn line_base(&self) -> u64 {
        if self.csv.is_some() { 2 } else { 1 }
    }

    fn total_bytes(&self) -> Option<u64> {
        None
    }

    fn position_after(&self, _chunks: Option<u64>) -> u64 {
        // Standard input cannot be read again: there is nothing to resume.
        0
    }
}

struct StdinChunks {
    worker: usize,
    receiver: Option<Receiver<Chunk>>,
    wakers: Wakers,
    decoder: Decoder,
    max_line: usize,
}

impl ChunkSource for StdinChunks {
    fn poll(&mut self, interner: &mut Interner) -> Result<SourcePoll, SourceError> {
        let Some(receiver) = &self.receiver else {
            return Ok(SourcePoll::Done);
        };
        match receiver.try_recv() {
            Ok(Ok((index, bytes, long))) => {
                let mut chunk = self.decoder.decode(&bytes, interner);
                if let Some(long) = long {
                    long.append_to(&mut chunk, self.max_line);
                }
                Ok(SourcePoll::Chunk(index, chunk))
            }
            Ok(Err(source)) => Err(SourceError::Read {
                path: "-".into(),
                source,
            }),
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
    use std::io::{Cursor, Read};

    use super::*;
    use crate::query;

    fn decoder() -> Decoder {
        match query::parse(
            "t",
            std::path::Path::new("t.sql"),
            "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts');
             SELECT COUNT(*) FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
        ) {
            Ok(p) => Decoder::Json(JsonDecoder::new(&p.source)).with_max_line_bytes(500),
            Err(e) => panic!("{e}"),
        }
    }

    fn good_lines(from: usize, n: usize) -> Cursor<Vec<u8>> {
        let text: String = (from..from + n)
            .map(|i| format!("{{\"device_id\":\"d{i}\",\"ts\":{i},\"v\":1}}\n"))
            .collect();
        Cursor::new(text.into_bytes())
    }

    const LIMITS: SourceLimits = SourceLimits {
        chunk_bytes: 1000,
        max_line_bytes: 500,
    };

    #[test]
    fn a_long_line_is_skipped_as_it_streams_by() {
        a_long_line_is_skipped(LIMITS);
        // A line start as long as a chunk must not stall the reader.
        a_long_line_is_skipped(SourceLimits {
            chunk_bytes: 500,
            max_line_bytes: 500,
        });
    }

    fn a_long_line_is_skipped(limits: SourceLimits) {
        let long = 10u64 << 20;
        let stream = good_lines(0, 50)
            .chain(std::io::repeat(b'x').take(long))
            .chain(Cursor::new(b"\n".to_vec()))
            .chain(good_lines(50, 50));
        let mut cutter = ChunkCutter::new(stream, limits);
        let mut decoder = decoder();
        let mut interner = Interner::new();
        let (mut good, mut bad, mut lines) = (0, Vec::new(), 0);
        loop {
            match cutter.next_chunk() {
                Ok(Some((bytes, long))) => {
                    assert!(
                        bytes.len() <= 1000 + 500 + 4096 + SCAN_BLOCK,
                        "chunk of {}",
                        bytes.len()
                    );
                    assert!(cutter.carry.capacity() <= 1000 + 500 + 4096 + SCAN_BLOCK);
                    let mut chunk = decoder.decode(&bytes, &mut interner);
                    if let Some(l) = long {
                        l.append_to(&mut chunk, 500);
                    }
                    good += chunk.batch.len;
                    bad.extend(chunk.bad.iter().map(|b| (lines + b.line, b.reason.clone())));
                    lines += chunk.lines;
                }
                Ok(None) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((good, lines), (100, 101));
        assert_eq!(
            bad,
            vec![(50, format!("line too long ({long} bytes, limit 500)"))]
        );
    }

    struct Broken;

    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("device gone"))
        }
    }

    #[test]
    fn a_read_error_is_reported_not_taken_for_the_end() {
        let mut cutter = ChunkCutter::new(good_lines(0, 10).chain(Broken), LIMITS);
        let mut outcome = Vec::new();
        for _ in 0..5 {
            match cutter.next_chunk() {
                Ok(Some(_)) => outcome.push("chunk"),
                Ok(None) => outcome.push("end"),
                Err(e) => {
                    assert_eq!(e.to_string(), "device gone");
                    outcome.push("error");
                    break;
                }
            }
        }
        assert_eq!(outcome.last(), Some(&"error"), "{outcome:?}");
        assert!(!outcome.contains(&"end"), "{outcome:?}");
    }
}
