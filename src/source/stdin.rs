//! Standard input: one reader thread cuts the stream into chunks at line breaks and deals
//! them to the workers in turn, waking each worker as its chunk arrives.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex};

use timely::scheduling::SyncActivator;

use super::{ChunkSource, OpenInput, SourceError, SourcePoll};
use crate::batch::Interner;
use crate::decode::{CsvDecoder, Decoder, Format, JsonDecoder};
use crate::query::SourceSchema;

/// Chunks in flight per worker: enough to keep a worker busy while the reader reads.
const QUEUE: usize = 2;

type Chunk = (u64, Vec<u8>);

/// Standard input, opened: the reader thread starts when the first worker asks for its
/// source.
pub struct StdinInput {
    schema: Arc<SourceSchema>,
    csv: Option<CsvDecoder>,
    chunk_bytes: usize,
    hub: Mutex<Hub>,
}

#[derive(Default)]
struct Hub {
    receivers: Vec<Option<Receiver<Chunk>>>,
    activators: Arc<Mutex<Vec<Option<SyncActivator>>>>,
    started: bool,
}

impl StdinInput {
    /// Prepares to read stdin; for CSV, reads the header line now.
    pub fn open(
        format: Format,
        schema: &SourceSchema,
        chunk_bytes: usize,
    ) -> Result<Self, SourceError> {
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
            chunk_bytes: chunk_bytes.max(1),
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
        hub.activators
            .lock()
            .map(|mut a| a.resize_with(peers, || None))
            .ok();
        let activators = hub.activators.clone();
        let chunk_bytes = self.chunk_bytes;
        std::thread::spawn(move || read_stdin(senders, activators, chunk_bytes));
        hub.started = true;
    }
}

/// Reads stdin to its end, sending chunk `k` to worker `k % peers`. Read errors end the
/// input; the engine reports the input as it got it.
fn read_stdin(
    senders: Vec<SyncSender<Chunk>>,
    activators: Arc<Mutex<Vec<Option<SyncActivator>>>>,
    chunk_bytes: usize,
) {
    let mut carry = Vec::new();
    let mut stdin = std::io::stdin().lock();
    let mut index = 0u64;
    let mut eof = false;
    let wake = |worker: usize| {
        if let Ok(a) = activators.lock()
            && let Some(Some(a)) = a.get(worker)
        {
            a.activate().ok();
        }
    };
    while !eof {
        let mut buf = std::mem::take(&mut carry);
        buf.reserve(chunk_bytes);
        while buf.len() < chunk_bytes {
            let old = buf.len();
            buf.resize(chunk_bytes.max(old + 4096), 0);
            match stdin.read(&mut buf[old..]) {
                Ok(0) => {
                    buf.truncate(old);
                    eof = true;
                    break;
                }
                Ok(n) => buf.truncate(old + n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => buf.truncate(old),
                Err(_) => {
                    buf.truncate(old);
                    eof = true;
                    break;
                }
            }
        }
        if !eof && let Some(nl) = memchr::memrchr(b'\n', &buf) {
            carry = buf.split_off(nl + 1);
        }
        if buf.is_empty() && eof {
            break;
        }
        let worker = (index % senders.len() as u64) as usize;
        if senders[worker].send((index, buf)).is_err() {
            break;
        }
        wake(worker);
        index += 1;
    }
    drop(senders);
    for worker in 0..activators.lock().map(|a| a.len()).unwrap_or(0) {
        wake(worker);
    }
}

impl OpenInput for StdinInput {
    fn worker_source(&self, worker: usize, peers: usize) -> Box<dyn ChunkSource> {
        let (receiver, activators) = match self.hub.lock() {
            Ok(mut hub) => {
                if !hub.started {
                    self.start(&mut hub, peers);
                }
                (
                    hub.receivers.get_mut(worker).and_then(Option::take),
                    hub.activators.clone(),
                )
            }
            Err(_) => (None, Arc::default()),
        };
        let decoder = match &self.csv {
            Some(csv) => Decoder::Csv(csv.clone()),
            None => Decoder::Json(JsonDecoder::new(&self.schema)),
        };
        Box::new(StdinChunks {
            worker,
            receiver,
            activators,
            decoder,
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
    activators: Arc<Mutex<Vec<Option<SyncActivator>>>>,
    decoder: Decoder,
}

impl ChunkSource for StdinChunks {
    fn poll(&mut self, interner: &mut Interner) -> Result<SourcePoll, SourceError> {
        let Some(receiver) = &self.receiver else {
            return Ok(SourcePoll::Done);
        };
        match receiver.try_recv() {
            Ok((index, bytes)) => Ok(SourcePoll::Chunk(
                index,
                self.decoder.decode(&bytes, interner),
            )),
            Err(TryRecvError::Empty) => Ok(SourcePoll::Pending),
            Err(TryRecvError::Disconnected) => Ok(SourcePoll::Done),
        }
    }

    fn set_activator(&mut self, activator: SyncActivator) {
        if let Ok(mut a) = self.activators.lock()
            && let Some(slot) = a.get_mut(self.worker)
        {
            *slot = Some(activator);
        }
    }
}
