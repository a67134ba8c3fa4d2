//! Files, read by every worker in parallel with positional reads.
//!
//! Chunk `k` holds the lines that start in bytes `[k*C, (k+1)*C)` of the data (after a
//! CSV header), so each worker finds its chunk boundaries by itself, and reads its own
//! chunks: ahead of decoding on a thread of its own when the process has a core no
//! worker uses ([`ahead`]), else between decoding them.
//!
//! A worker reads its range and the rest of the last line starting in it, and nothing
//! else: a chunk inside a long line finds no line start and is empty, and the chunk where
//! the line starts scans past it once, keeping only its first KiB when it is over the
//! line limit. So every byte is read at most twice and a chunk holds at most `C + limit`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ChunkSource, LongLine, OpenInput, SCAN_BLOCK, SourceError, SourceLimits, SourcePoll};
use crate::batch::Interner;
use crate::decode::{CsvDecoder, Decoder, Format, JsonDecoder};
use crate::query::SourceSchema;
use ahead::ReadAhead;

mod ahead;

/// An input file, opened.
#[derive(Debug)]
pub struct FileInput {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// Whether a CSV header precedes the data (line numbers start at 2).
    header: bool,
    grid: Grid,
    max_line: usize,
    decoder: DecoderTemplate,
}

#[derive(Debug, Clone)]
enum DecoderTemplate {
    Json(Arc<SourceSchema>),
    Csv(CsvDecoder),
}

impl DecoderTemplate {
    fn decoder(&self, max_line: usize) -> Decoder {
        match self {
            DecoderTemplate::Json(schema) => Decoder::Json(JsonDecoder::new(schema)),
            DecoderTemplate::Csv(csv) => Decoder::Csv(csv.clone()),
        }
        .with_max_line_bytes(max_line)
    }
}

fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<usize, SourceError> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(SourceError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(done)
}

impl FileInput {
    /// Opens `path`, to be read from byte `position` on (0: the start; an earlier run
    /// stopped at a line start); for CSV, reads and checks the header.
    pub fn open(
        path: &Path,
        format: Format,
        schema: &SourceSchema,
        limits: SourceLimits,
        position: u64,
    ) -> Result<Self, SourceError> {
        let limits = limits.sane();
        let open_error = |source| SourceError::Open {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(open_error)?;
        let meta = file.metadata().map_err(open_error)?;
        if meta.is_dir() {
            return Err(open_error(std::io::Error::other("is a directory")));
        }
        let len = meta.len();
        let (data_start, decoder) = match format {
            Format::Jsonl => (0, DecoderTemplate::Json(Arc::new(schema.clone()))),
            Format::Csv => {
                let mut header = Vec::new();
                let mut block = vec![0u8; 64 * 1024];
                let mut offset = 0u64;
                loop {
                    let n = read_at(&file, path, &mut block, offset)?;
                    if let Some(nl) = memchr::memchr(b'\n', &block[..n]) {
                        header.extend_from_slice(&block[..=nl]);
                        break;
                    }
                    header.extend_from_slice(&block[..n]);
                    offset += n as u64;
                    if n == 0 {
                        break;
                    }
                    if header.len() > limits.max_line_bytes {
                        return Err(SourceError::HeaderTooLong {
                            path: path.to_owned(),
                            limit: limits.max_line_bytes,
                        });
                    }
                }
                let csv =
                    CsvDecoder::new(schema, &header).map_err(|source| SourceError::CsvHeader {
                        path: path.to_owned(),
                        source,
                    })?;
                (header.len() as u64, DecoderTemplate::Csv(csv))
            }
        };
        let from = data_start.max(position).min(len);
        let max_line = limits.max_line_bytes.max(1);
        let len = end_of_whole_lines(&file, path, len, from, &decoder, max_line)?;
        Ok(FileInput {
            path: path.to_owned(),
            file: Arc::new(file),
            len,
            header: data_start > 0,
            grid: Grid::new(data_start, from, limits.chunk_bytes as u64, len),
            max_line,
            decoder,
        })
    }

    fn chunks(&self) -> u64 {
        self.grid.chunks()
    }

    /// Reads the chunks of worker `worker` of `peers`.
    fn reader(&self, worker: usize, peers: usize) -> ChunkReader {
        ChunkReader {
            path: self.path.clone(),
            file: self.file.clone(),
            len: self.len,
            grid: self.grid,
            next: worker as u64,
            step: peers as u64,
            max_line: self.max_line,
            scratch: Vec::new(),
            bytes_read: 0,
        }
    }
}

/// Where the chunks of a file lie: on a grid of `chunk_bytes` from the start of its
/// data, whatever line a run starts at. Chunks decide watermarks and which readings are
/// corrections: a run resumed at a checkpoint (or after a crash) reads up to the next
/// grid line first, so that every chunk after holds the lines one uninterrupted run's
/// chunk holds, and writes what that run would.
#[derive(Clone, Copy, Debug)]
struct Grid {
    /// Where this run's data starts: a line start.
    from: u64,
    /// Where its first chunk ends: the first grid line after `from`.
    first_end: u64,
    chunk_bytes: u64,
    /// Where the data to read ends.
    len: u64,
}

impl Grid {
    /// The grid of `chunk_bytes` from `origin` (the data's first byte), read from `from`
    /// to `len`.
    fn new(origin: u64, from: u64, chunk_bytes: u64, len: u64) -> Self {
        let chunk_bytes = chunk_bytes.max(1);
        let from = from.clamp(origin, len.max(origin));
        let first_end = ((from - origin) / chunk_bytes)
            .saturating_add(1)
            .saturating_mul(chunk_bytes)
            .saturating_add(origin);
        Grid {
            from,
            first_end,
            chunk_bytes,
            len,
        }
    }

    fn chunks(&self) -> u64 {
        if self.len <= self.from {
            0
        } else {
            1 + self
                .len
                .saturating_sub(self.first_end)
                .div_ceil(self.chunk_bytes)
        }
    }

    /// Where chunk `k` begins: its first line is the first that starts there or after.
    fn start(&self, k: u64) -> u64 {
        match k {
            0 => self.from,
            k => (k - 1)
                .saturating_mul(self.chunk_bytes)
                .saturating_add(self.first_end),
        }
    }

    /// Where chunk `k` ends: its last line is the last that starts before.
    fn end(&self, k: u64) -> u64 {
        self.start(k.saturating_add(1)).min(self.len)
    }
}

impl OpenInput for FileInput {
    fn worker_source(&self, worker: usize, peers: usize) -> Box<dyn ChunkSource> {
        // Copying a chunk out of the page cache is about a sixth of a worker's time
        // over a file: on a core no worker uses, it overlaps with decoding.
        let spare_core =
            std::thread::available_parallelism().is_ok_and(|cores| cores.get() > peers);
        let chunks = match spare_core {
            true => ReadAhead::start(self.reader(worker, peers), worker)
                .map(Chunks::Ahead)
                .ok(),
            false => None,
        };
        Box::new(FileChunks {
            chunks: chunks.unwrap_or_else(|| Chunks::Inline {
                reader: self.reader(worker, peers),
                buf: Vec::new(),
            }),
            decoder: self.decoder.decoder(self.max_line),
            max_line: self.max_line,
        })
    }

    fn line_base(&self) -> u64 {
        if self.header { 2 } else { 1 }
    }

    fn total_bytes(&self) -> Option<u64> {
        Some(self.len)
    }

    fn position_after(&self, chunks: Option<u64>) -> u64 {
        match chunks {
            Some(k) if k < self.chunks() => {
                let at = self.grid.start(k);
                line_start(&self.file, &self.path, self.len, self.grid.from, at).unwrap_or(self.len)
            }
            _ => self.len,
        }
    }
}

/// Where the data to read ends: at the end of the file, or at the start of its last line
/// when that line has no line break yet and does not parse. A writer may be in the
/// middle of it: dead-lettering it now and reading its rest as another line next time
/// would lose the reading, so it is left for the next run, which resumes there. A last
/// line that parses (a file whose writer leaves out the final line break) is read; a
/// line over the limit is a dead letter as anywhere else.
fn end_of_whole_lines(
    file: &File,
    path: &Path,
    len: u64,
    from: u64,
    decoder: &DecoderTemplate,
    max_line: usize,
) -> Result<u64, SourceError> {
    if len <= from {
        return Ok(len);
    }
    // A last line is mostly short: its last 4 KiB first, then as far back as the limit.
    let farthest = len.saturating_sub(max_line as u64 + 1).max(from);
    let mut lo = len.saturating_sub(4096).max(farthest);
    let (tail, start) = loop {
        let mut tail = vec![0u8; (len - lo) as usize];
        let n = read_at(file, path, &mut tail, lo)?;
        tail.truncate(n);
        if tail.last().is_none_or(|&b| b == b'\n') {
            return Ok(len);
        }
        match memchr::memrchr(b'\n', &tail) {
            Some(k) => break (tail, k + 1),
            None if lo == from => break (tail, 0),
            None if lo == farthest => return Ok(len),
            None => lo = farthest,
        }
    };
    let chunk = decoder
        .decoder(max_line)
        .decode(&tail[start..], &mut Interner::new());
    if chunk.bad.is_empty() {
        return Ok(len);
    }
    let line_start = lo + start as u64;
    tracing::warn!(
        path = %path.display(),
        byte = line_start,
        "the last line has no line break yet and does not parse: left for the next run, which reads it once it is whole"
    );
    Ok(line_start)
}

/// The first line start at or after `at` (a line starts after a line break), at or
/// after `data_start`: where the chunk starting at `at` begins ([`Grid::start`]).
fn line_start(
    file: &File,
    path: &Path,
    len: u64,
    data_start: u64,
    at: u64,
) -> Result<u64, SourceError> {
    if at <= data_start {
        return Ok(data_start);
    }
    let mut block = vec![0u8; SCAN_BLOCK];
    let mut offset = at - 1;
    while offset < len {
        let n = read_at(file, path, &mut block, offset)?;
        if n == 0 {
            break;
        }
        if let Some(k) = memchr::memchr(b'\n', &block[..n]) {
            return Ok(offset + k as u64 + 1);
        }
        offset += n as u64;
    }
    Ok(len)
}

/// One chunk's bytes as read, not yet decoded.
struct RawChunk {
    index: u64,
    /// What was read; the chunk's lines are `buf[skip..]`.
    buf: Vec<u8>,
    skip: usize,
    /// Input bytes the chunk covers.
    bytes: u64,
    /// Its last line, when that is over the limit (then cut from `buf`).
    long: Option<LongLine>,
}

/// Reads one worker's chunks of a file: chunk `next`, then every `step`th after it.
struct ChunkReader {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    grid: Grid,
    next: u64,
    step: u64,
    max_line: usize,
    /// Blocks read while skipping a long line.
    scratch: Vec<u8>,
    /// Bytes read so far, to check that work stays linear in the input.
    bytes_read: u64,
}

impl ChunkReader {
    /// Chunks still to read.
    fn remaining(&self) -> u64 {
        let chunks = self.grid.chunks();
        if self.next >= chunks {
            0
        } else {
            (chunks - self.next - 1) / self.step + 1
        }
    }

    /// The next chunk, read into `buf` (whatever it held), or `None` after the last.
    fn read_next(&mut self, buf: Vec<u8>) -> Option<Result<RawChunk, SourceError>> {
        if self.next >= self.grid.chunks() {
            return None;
        }
        let k = self.next;
        self.next += self.step;
        Some(self.read(k, buf))
    }

    fn read(&mut self, k: u64, mut buf: Vec<u8>) -> Result<RawChunk, SourceError> {
        let (lo, hi) = (self.grid.start(k), self.grid.end(k));
        // The byte before `lo` says whether a line starts at `lo`.
        let from = if lo > self.grid.from { lo - 1 } else { lo };
        buf.resize((hi - from) as usize, 0);
        let n = read_at(&self.file, &self.path, &mut buf, from)?;
        self.bytes_read += n as u64;
        buf.truncate(n);
        let skip = if lo > self.grid.from {
            match memchr::memchr(b'\n', &buf) {
                Some(p) => p + 1,
                // Inside a line that started in an earlier chunk, which reads it.
                None => buf.len(),
            }
        } else {
            0
        };
        if skip >= buf.len() {
            return Ok(RawChunk {
                index: k,
                skip: buf.len(),
                buf,
                bytes: 0,
                long: None,
            });
        }
        let start = from + skip as u64;
        let mut end = from + buf.len() as u64;
        let mut long = None;
        if end < self.len && buf.last() != Some(&b'\n') {
            let tail = memchr::memrchr(b'\n', &buf[skip..]).map_or(skip, |q| skip + q + 1);
            let line_start = from + tail as u64;
            (end, long) = self.finish_last_line(&mut buf, tail, line_start, end)?;
        }
        Ok(RawChunk {
            index: k,
            buf,
            skip,
            bytes: end - start,
            long,
        })
    }

    /// Appends to `buf` the rest of its last line, which starts at `buf[tail..]` (file
    /// offset `line_start`) and goes on at file offset `offset`. Returns the offset after
    /// that line and, when the line is over the limit, the line (then cut from `buf`).
    fn finish_last_line(
        &mut self,
        buf: &mut Vec<u8>,
        tail: usize,
        line_start: u64,
        mut offset: u64,
    ) -> Result<(u64, Option<LongLine>), SourceError> {
        // Read on into the chunk while the line is within the limit, in blocks that
        // start small (most lines end within a few hundred bytes) and grow. One byte
        // more is let through for the `\r` of a CRLF line, which the decoder does not
        // count: it judges the line's exact length.
        let mut block = 4096;
        loop {
            let old = buf.len();
            buf.resize(old + block, 0);
            block = (block * 2).min(SCAN_BLOCK);
            let n = read_at(&self.file, &self.path, &mut buf[old..], offset)?;
            self.bytes_read += n as u64;
            buf.truncate(old + n);
            let nl = memchr::memchr(b'\n', &buf[old..]);
            if nl.map_or(buf.len(), |k| old + k) - tail > self.max_line + 1 {
                break;
            }
            match nl {
                Some(k) => {
                    buf.truncate(old + k + 1);
                    return Ok((offset + k as u64 + 1, None));
                }
                None if n == 0 => return Ok((offset, None)),
                None => offset += n as u64,
            }
        }
        // Over the limit: keep its head, then scan to its end keeping nothing. The scan
        // starts again at `offset`, so the last block read is looked at once more.
        let mut long = LongLine::new(&buf[tail..]);
        buf.truncate(tail);
        self.scratch.resize(SCAN_BLOCK, 0);
        loop {
            let n = read_at(&self.file, &self.path, &mut self.scratch, offset)?;
            self.bytes_read += n as u64;
            if let Some(k) = memchr::memchr(b'\n', &self.scratch[..n]) {
                long.len = offset + k as u64 - line_start;
                long.cr = match k {
                    0 => {
                        // The byte before the line break was read before this block.
                        let mut before = [0u8];
                        read_at(
                            &self.file,
                            &self.path,
                            &mut before,
                            offset.saturating_sub(1),
                        )? == 1
                            && before[0] == b'\r'
                    }
                    _ => self.scratch[k - 1] == b'\r',
                };
                return Ok((offset + k as u64 + 1, Some(long)));
            }
            if n == 0 {
                long.len = offset - line_start;
                // No line break ends it, so a last `\r` is part of the line.
                long.cr = false;
                return Ok((offset, Some(long)));
            }
            offset += n as u64;
        }
    }
}

/// Where a worker's chunks come from.
enum Chunks {
    /// Read on the worker's own thread, between decoding chunks.
    Inline { reader: ChunkReader, buf: Vec<u8> },
    /// Read ahead on a thread of their own.
    Ahead(ReadAhead),
}

/// One worker's share of a file: its chunks, read and decoded.
struct FileChunks {
    chunks: Chunks,
    decoder: Decoder,
    max_line: usize,
}

impl ChunkSource for FileChunks {
    fn poll(&mut self, interner: &mut Interner) -> Result<SourcePoll, SourceError> {
        let raw = match &mut self.chunks {
            Chunks::Inline { reader, buf } => match reader.read_next(std::mem::take(buf)) {
                Some(raw) => raw?,
                None => return Ok(SourcePoll::Done),
            },
            Chunks::Ahead(ahead) => match ahead.next()? {
                Some(raw) => raw,
                None => return Ok(SourcePoll::Done),
            },
        };
        let mut chunk = self.decoder.decode(&raw.buf[raw.skip..], interner);
        if let Some(long) = raw.long {
            long.append_to(&mut chunk, self.max_line);
        }
        chunk.bytes = raw.bytes;
        match &mut self.chunks {
            Chunks::Inline { buf, .. } => *buf = raw.buf,
            Chunks::Ahead(ahead) => ahead.recycle(raw.buf),
        }
        Ok(SourcePoll::Chunk(raw.index, chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{BadRecord, DecodedChunk};
    use crate::query;

    fn schema() -> SourceSchema {
        match query::parse(
            "t",
            Path::new("t.sql"),
            "CREATE TABLE r (device_id TEXT, ts TIMESTAMP, v BIGINT) WITH (event_time = 'ts');
             SELECT COUNT(*) FROM TUMBLE(r, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
        ) {
            Ok(p) => p.source,
            Err(e) => panic!("{e}"),
        }
    }

    /// Every chunk of `input` read by `peers` workers, in chunk order, with the bytes
    /// all workers read; the same chunks as read ahead on threads of their own.
    fn read_all(input: &FileInput, peers: usize) -> (Vec<(u64, DecodedChunk)>, u64) {
        let mut chunks = Vec::new();
        let mut read = 0;
        let mut interner = Interner::new();
        for w in 0..peers {
            let mut reader = input.reader(w, peers);
            let mut decoder = input.decoder.decoder(input.max_line);
            while let Some(raw) = reader.read_next(Vec::new()) {
                let raw = raw.unwrap_or_else(|e| panic!("{e}"));
                assert!(
                    raw.buf.capacity() as u64
                        <= input.grid.chunk_bytes + input.max_line as u64 + 2 * SCAN_BLOCK as u64,
                    "chunk buffer grew to {}",
                    raw.buf.capacity()
                );
                let mut chunk = decoder.decode(&raw.buf[raw.skip..], &mut interner);
                if let Some(long) = raw.long {
                    long.append_to(&mut chunk, input.max_line);
                }
                chunk.bytes = raw.bytes;
                chunks.push((raw.index, chunk));
            }
            read += reader.bytes_read;
        }
        chunks.sort_by_key(|(k, _)| *k);
        let ahead = read_ahead(input, peers);
        assert_eq!(
            ahead.iter().map(summary).collect::<Vec<_>>(),
            chunks.iter().map(summary).collect::<Vec<_>>(),
            "chunks read ahead differ from chunks read inline"
        );
        (chunks, read)
    }

    /// Every chunk of `input` read by `peers` workers reading ahead.
    fn read_ahead(input: &FileInput, peers: usize) -> Vec<(u64, DecodedChunk)> {
        let mut chunks = Vec::new();
        let mut interner = Interner::new();
        for w in 0..peers {
            let mut source = FileChunks {
                chunks: Chunks::Ahead(
                    ReadAhead::start(input.reader(w, peers), w).unwrap_or_else(|e| panic!("{e}")),
                ),
                decoder: input.decoder.decoder(input.max_line),
                max_line: input.max_line,
            };
            loop {
                match source.poll(&mut interner) {
                    Ok(SourcePoll::Chunk(k, c)) => chunks.push((k, c)),
                    Ok(_) => break,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        chunks.sort_by_key(|(k, _)| *k);
        chunks
    }

    /// What a test compares of a chunk: index, rows, lines, bytes and bad records.
    fn summary((k, c): &(u64, DecodedChunk)) -> (u64, usize, u64, u64, Vec<BadRecord>) {
        (*k, c.batch.len, c.lines, c.bytes, c.bad.clone())
    }

    /// Good rows, and bad records with file line numbers (1-based).
    fn outcome(chunks: &[(u64, DecodedChunk)], base: u64) -> (usize, Vec<BadRecord>, u64) {
        let mut line = base;
        let mut good = 0;
        let mut bad = Vec::new();
        let mut bytes = 0;
        for (_, c) in chunks {
            good += c.batch.len;
            bad.extend(c.bad.iter().map(|b| BadRecord {
                line: line + b.line,
                ..b.clone()
            }));
            line += c.lines;
            bytes += c.bytes;
        }
        (good, bad, bytes)
    }

    /// `text` written to `path` and opened in chunks of 1000 bytes with lines of at
    /// most 500.
    fn small_chunks(path: &Path, text: &str) -> FileInput {
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
        small_chunks_from(path, 0)
    }

    /// The file at `path` in chunks of 1000 bytes, read from byte `at`.
    fn small_chunks_from(path: &Path, at: u64) -> FileInput {
        let limits = SourceLimits {
            chunk_bytes: 1000,
            max_line_bytes: 500,
        };
        FileInput::open(path, Format::Jsonl, &schema(), limits, at)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn good_line(i: usize) -> String {
        format!("{{\"device_id\":\"d{i}\",\"ts\":{i},\"v\":1}}\n")
    }

    /// A run that resumes where an earlier one stopped (a line start just past a chunk
    /// edge) reads up to the next edge first, then the chunks of the whole file: the
    /// same lines in the same chunks as one run over the file.
    #[test]
    fn a_run_resumed_mid_file_reads_the_chunks_of_the_whole_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("in.jsonl");
        let text: String = (0..400).map(good_line).collect();
        let whole = small_chunks(&path, &text);
        let (chunks, _) = read_all(&whole, 1);
        let lines = |c: &DecodedChunk| c.batch.timestamps(1).to_vec();
        for k in 1..whole.chunks() {
            let at = whole.position_after(Some(k));
            let (rest, _) = read_all(&small_chunks_from(&path, at), 2);
            let got: Vec<_> = rest.iter().map(|(_, c)| lines(c)).collect();
            let want: Vec<_> = chunks[k as usize..].iter().map(|(_, c)| lines(c)).collect();
            assert_eq!(got, want, "resumed at chunk {k} (byte {at})");
            // Resumed anywhere else, the first chunk ends at the next edge.
            let mid = whole.position_after(Some(k)) + 40;
            let line = text[mid as usize..].find('\n').map_or(0, |p| p + 1) as u64 + mid;
            let (rest, _) = read_all(&small_chunks_from(&path, line), 1);
            let got: Vec<_> = rest[1..].iter().map(|(_, c)| lines(c)).collect();
            assert_eq!(got, want[1..], "resumed at byte {line}");
        }
    }

    #[test]
    fn long_lines_are_skipped_in_one_pass_for_any_worker_count() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("in.jsonl");
        let mut text = String::new();
        for i in 0..50 {
            text.push_str(&good_line(i));
        }
        // Far longer than a chunk, with no line break: old Mac line endings.
        let long = "{\"device_id\":\"x\"}\r".repeat(20_000);
        text.push_str(&long);
        text.push('\n');
        // Longer than the limit but within a chunk: the decoder catches it.
        text.push_str(&"y".repeat(700));
        text.push('\n');
        for i in 50..100 {
            text.push_str(&good_line(i));
        }
        // A long last line without a line break.
        text.push_str(&"z".repeat(5000));
        let input = small_chunks(&path, &text);
        for peers in [1, 2, 3] {
            let (chunks, read) = read_all(&input, peers);
            let (good, bad, bytes) = outcome(&chunks, 1);
            assert_eq!(good, 100, "{peers} workers");
            assert_eq!(bytes, text.len() as u64);
            let lines: Vec<u64> = bad.iter().map(|b| b.line).collect();
            assert_eq!(lines, vec![51, 52, 103], "{peers} workers");
            assert!(
                bad[0].reason.starts_with(&format!(
                    "line too long ({} bytes, limit 500); it holds a carriage return",
                    // It ends in `\r\n`: that `\r` is not counted.
                    long.len() - 1
                )),
                "{}",
                bad[0].reason
            );
            assert_eq!(bad[0].raw.len(), 1024);
            assert_eq!(bad[1].reason, "line too long (700 bytes, limit 500)");
            assert_eq!(bad[2].reason, "line too long (5000 bytes, limit 500)");
            // Each byte is read by its own chunk and at most once more by the chunk
            // where its line starts, plus a small block per chunk past its end.
            assert!(
                read <= 2 * text.len() as u64 + input.chunks() * 4096,
                "{peers} workers read {read} bytes of {}",
                text.len()
            );
        }
    }

    /// A JSON line of exactly `len` bytes before its ending.
    fn line_of(i: usize, len: usize, ending: &str) -> String {
        let bare = format!("{{\"device_id\":\"\",\"ts\":{i},\"v\":1}}").len();
        let id = "p".repeat(len - bare);
        format!("{{\"device_id\":\"{id}\",\"ts\":{i},\"v\":1}}{ending}")
    }

    #[test]
    fn a_crlf_line_of_the_limit_is_read_like_an_lf_line_of_the_limit() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("in.jsonl");
        let mut text = String::new();
        for i in 0..12 {
            // Lines at the limit pass, one byte over does not, whatever the ending;
            // chunks of 1000 bytes end inside most of them.
            let (len, ending) = [(500, "\r\n"), (500, "\n"), (501, "\r\n"), (501, "\n")][i % 4];
            text.push_str(&line_of(i, len, ending));
        }
        // Longer than a chunk: skipped by the reader's scan, which counts it the same.
        text.push_str(&line_of(12, 3000, "\r\n"));
        let input = small_chunks(&path, &text);
        for peers in [1, 2, 3] {
            let (chunks, _) = read_all(&input, peers);
            let (good, bad, bytes) = outcome(&chunks, 1);
            assert_eq!(good, 6, "{peers} workers: {bad:?}");
            assert_eq!(bytes, text.len() as u64);
            let lines: Vec<u64> = bad.iter().map(|b| b.line).collect();
            assert_eq!(lines, vec![3, 4, 7, 8, 11, 12, 13], "{peers} workers");
            for b in &bad[..6] {
                assert_eq!(b.reason, "line too long (501 bytes, limit 500)");
                assert!(b.raw.ends_with('}'), "{:?}", b.raw);
            }
            assert_eq!(bad[6].reason, "line too long (3000 bytes, limit 500)");
        }
    }

    #[test]
    fn csv_header_longer_than_the_limit_is_refused() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("in.csv");
        std::fs::write(&path, "x".repeat(200_000)).unwrap_or_else(|e| panic!("{e}"));
        let limits = SourceLimits {
            chunk_bytes: 1000,
            max_line_bytes: 500,
        };
        match FileInput::open(&path, Format::Csv, &schema(), limits, 0) {
            Err(SourceError::HeaderTooLong { limit: 500, .. }) => {}
            other => panic!("{other:?}"),
        }
    }
}
