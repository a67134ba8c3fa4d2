//! The readings log: one JSON line per reading handed out, written by a thread of its own
//! so that request handlers only pay for a channel send.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;

use super::DevicesError;

enum Message {
    /// One reading; the writer adds the newline.
    Reading(Bytes),
    /// Lines that already end in newlines (a pushed NDJSON batch).
    Lines(Bytes),
    Stop,
}

/// Where handlers send readings to be logged. Cheap to clone.
#[derive(Clone, Debug)]
pub struct LogSender(mpsc::Sender<Message>);

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Message")
    }
}

impl LogSender {
    /// Logs one reading's JSON object.
    pub fn reading(&self, json: Bytes) {
        // The writer only goes away at `finish`, after every handler is done.
        let _ = self.0.send(Message::Reading(json));
    }

    /// Logs newline-terminated JSON lines as they are.
    pub fn lines(&self, ndjson: Bytes) {
        let _ = self.0.send(Message::Lines(ndjson));
    }
}

/// The open log: a writer thread and the sending side.
#[derive(Debug)]
pub struct ReadingLog {
    path: PathBuf,
    sender: LogSender,
    thread: JoinHandle<std::io::Result<u64>>,
}

impl ReadingLog {
    /// Creates (truncates) `path` and starts its writer.
    pub fn create(path: &Path) -> Result<ReadingLog, DevicesError> {
        let file = File::create(path).map_err(|source| DevicesError::Log {
            path: path.to_owned(),
            source,
        })?;
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("readings-log".into())
            .spawn(move || write_all(file, &receiver))
            .map_err(|source| DevicesError::Log {
                path: path.to_owned(),
                source,
            })?;
        Ok(ReadingLog {
            path: path.to_owned(),
            sender: LogSender(sender),
            thread,
        })
    }

    /// A sender for handlers.
    pub fn sender(&self) -> LogSender {
        self.sender.clone()
    }

    /// Writes what was sent before this call, flushes and closes the file; returns the
    /// number of lines written. Anything sent later is dropped.
    pub fn finish(self) -> Result<u64, DevicesError> {
        let _ = self.sender.0.send(Message::Stop);
        let error = |source| DevicesError::Log {
            path: self.path.clone(),
            source,
        };
        match self.thread.join() {
            Ok(result) => result.map_err(error),
            Err(_) => Err(error(std::io::Error::other("the log writer panicked"))),
        }
    }
}

fn write_all(file: File, receiver: &mpsc::Receiver<Message>) -> std::io::Result<u64> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut lines = 0u64;
    loop {
        // Flush whenever the queue runs dry, so the file is current while the simulator
        // is idle, and writes are batched while it is busy.
        let message = match receiver.try_recv() {
            Ok(m) => m,
            Err(mpsc::TryRecvError::Empty) => {
                out.flush()?;
                match receiver.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            }
            Err(mpsc::TryRecvError::Disconnected) => break,
        };
        match message {
            Message::Reading(json) => {
                out.write_all(&json)?;
                out.write_all(b"\n")?;
                lines += 1;
            }
            Message::Lines(text) => {
                out.write_all(&text)?;
                lines += memchr::memchr_iter(b'\n', &text).count() as u64;
            }
            Message::Stop => break,
        }
    }
    out.flush()?;
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(lines)
}
