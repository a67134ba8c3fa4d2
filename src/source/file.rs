//! Files, read by every worker in parallel with positional reads.
//!
//! Chunk `k` holds the lines that start in bytes `[k*C, (k+1)*C)` of the data (after a
//! CSV header), so each worker finds its chunk boundaries by itself: no reader thread,
//! no copying between threads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{ChunkSource, OpenInput, SourceError, SourcePoll};
use crate::batch::Interner;
use crate::decode::{CsvDecoder, Decoder, Format, JsonDecoder};
use crate::query::SourceSchema;

/// An input file, opened.
#[derive(Debug)]
pub struct FileInput {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    data_start: u64,
    chunk_bytes: u64,
    decoder: DecoderTemplate,
}

#[derive(Debug, Clone)]
enum DecoderTemplate {
    Json(Arc<SourceSchema>),
    Csv(CsvDecoder),
}

impl DecoderTemplate {
    fn decoder(&self) -> Decoder {
        match self {
            DecoderTemplate::Json(schema) => Decoder::Json(JsonDecoder::new(schema)),
            DecoderTemplate::Csv(csv) => Decoder::Csv(csv.clone()),
        }
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
    /// Opens `path`, to be read from byte `position` on (0: the start); for CSV, reads
    /// and checks the header.
    pub fn open(
        path: &Path,
        format: Format,
        schema: &SourceSchema,
        chunk_bytes: usize,
        position: u64,
    ) -> Result<Self, SourceError> {
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
                }
                let csv =
                    CsvDecoder::new(schema, &header).map_err(|source| SourceError::CsvHeader {
                        path: path.to_owned(),
                        source,
                    })?;
                (header.len() as u64, DecoderTemplate::Csv(csv))
            }
        };
        Ok(FileInput {
            path: path.to_owned(),
            file: Arc::new(file),
            len,
            data_start: data_start.max(position).min(len),
            chunk_bytes: chunk_bytes.max(1) as u64,
            decoder,
        })
    }

    fn chunks(&self) -> u64 {
        (self.len - self.data_start).div_ceil(self.chunk_bytes)
    }
}

impl OpenInput for FileInput {
    fn worker_source(&self, worker: usize, peers: usize) -> Box<dyn ChunkSource> {
        Box::new(FileChunks {
            path: self.path.clone(),
            file: self.file.clone(),
            len: self.len,
            data_start: self.data_start,
            chunk_bytes: self.chunk_bytes,
            chunks: self.chunks(),
            next: worker as u64,
            step: peers as u64,
            decoder: self.decoder.decoder(),
            buf: Vec::new(),
        })
    }

    fn line_base(&self) -> u64 {
        if self.data_start > 0 { 2 } else { 1 }
    }

    fn total_bytes(&self) -> Option<u64> {
        Some(self.len)
    }

    fn position_after(&self, chunks: Option<u64>) -> u64 {
        match chunks {
            Some(k) if k < self.chunks() => {
                let at = self.data_start + k * self.chunk_bytes;
                line_start(&self.file, &self.path, self.len, self.data_start, at)
                    .unwrap_or(self.len)
            }
            _ => self.len,
        }
    }
}

/// The first line start at or after `at` (a line starts after a line break), at or
/// after `data_start`.
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
    let mut block = [0u8; 4096];
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

struct FileChunks {
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    data_start: u64,
    chunk_bytes: u64,
    chunks: u64,
    next: u64,
    step: u64,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl FileChunks {
    fn line_start(&self, at: u64) -> Result<u64, SourceError> {
        line_start(&self.file, &self.path, self.len, self.data_start, at)
    }
}

impl ChunkSource for FileChunks {
    fn poll(&mut self, interner: &mut Interner) -> Result<SourcePoll, SourceError> {
        if self.next >= self.chunks {
            return Ok(SourcePoll::Done);
        }
        let k = self.next;
        self.next += self.step;
        let lo = self.data_start + k * self.chunk_bytes;
        let start = self.line_start(lo)?;
        let end = self.line_start(lo + self.chunk_bytes)?;
        let size = end.saturating_sub(start) as usize;
        self.buf.resize(size, 0);
        let n = read_at(&self.file, &self.path, &mut self.buf, start)?;
        self.buf.truncate(n);
        let chunk = self.decoder.decode(&self.buf, interner);
        Ok(SourcePoll::Chunk(k, chunk))
    }
}
