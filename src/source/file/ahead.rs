//! A worker's chunks of a file read one ahead, on a thread of their own.
//!
//! Reading a chunk is mostly the kernel copying it out of the page cache. On the
//! worker's thread that copy and decoding take turns; on another core the next chunk is
//! being copied while this one is decoded. The chunks, their bytes and their order are
//! the same as reading them inline ([`super::ChunkReader`] does both).

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel, sync_channel};
use std::thread::JoinHandle;

use super::{ChunkReader, RawChunk};
use crate::source::SourceError;

/// Chunks read and not yet taken: one waits while the next is read, so at most three
/// chunk buffers per worker are alive (being decoded, waiting, being read).
const READ_AHEAD: usize = 1;

/// The receiving end of a reading thread.
pub(super) struct ReadAhead {
    chunks: Receiver<Result<RawChunk, SourceError>>,
    /// Buffers decoded, for the reading thread to fill again.
    spare: Sender<Vec<u8>>,
    /// Chunks still to come: the thread ending before them is an error, not the end.
    remaining: u64,
    path: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl ReadAhead {
    /// Starts reading `reader`'s chunks on a thread for worker `worker`.
    pub(super) fn start(mut reader: ChunkReader, worker: usize) -> std::io::Result<Self> {
        let (send, chunks) = sync_channel(READ_AHEAD);
        let (spare, spares) = channel::<Vec<u8>>();
        let remaining = reader.remaining();
        let path = reader.path.clone();
        let thread = std::thread::Builder::new()
            .name(format!("edgeflow-read-{worker}"))
            .spawn(move || {
                while let Some(raw) = reader.read_next(spares.try_recv().unwrap_or_default()) {
                    let failed = raw.is_err();
                    // A closed channel: the worker is done with this input.
                    if send.send(raw).is_err() || failed {
                        break;
                    }
                }
            })?;
        Ok(ReadAhead {
            chunks,
            spare,
            remaining,
            path,
            thread: Some(thread),
        })
    }

    /// The next chunk, waiting for it if need be; `None` after the last.
    pub(super) fn next(&mut self) -> Result<Option<RawChunk>, SourceError> {
        if self.remaining == 0 {
            return Ok(None);
        }
        match self.chunks.recv() {
            Ok(Ok(raw)) => {
                self.remaining -= 1;
                Ok(Some(raw))
            }
            Ok(Err(e)) => {
                self.remaining = 0;
                Err(e)
            }
            Err(_) => {
                self.remaining = 0;
                Err(SourceError::Read {
                    path: self.path.clone(),
                    source: std::io::Error::other("the thread reading it stopped"),
                })
            }
        }
    }

    /// Hands a decoded chunk's buffer back to be filled again.
    pub(super) fn recycle(&self, buf: Vec<u8>) {
        // Gone: the thread has read its last chunk.
        self.spare.send(buf).ok();
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        // Closing the channel ends a thread waiting to hand a chunk over; it then holds
        // no file past its worker's input.
        let (_, closed) = sync_channel(0);
        drop(std::mem::replace(&mut self.chunks, closed));
        if let Some(thread) = self.thread.take() {
            thread.join().ok();
        }
    }
}
