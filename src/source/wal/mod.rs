//! The write-ahead log of a live table: what a connector accepted, on disk before it
//! is acknowledged, until every query reading the table has it in a checkpoint.
//!
//! A table's log is a folder of segments, `<output>/_state/_wal/<table>/<first seq>.wal`,
//! each a header and checksummed records ([`record`]) numbered by one sequence that
//! never restarts. Records are appended to the newest segment; a segment past its size
//! is closed and a new one begun. Opening the log reads only the newest segment: a
//! torn last record (a crash mid-append) is cut off there, with a warning naming the
//! file and offset. Segments whose records every reader has checkpointed are deleted;
//! the newest is always kept, so the sequence goes on across restarts.
//!
//! The group commit (one fsync for every request waiting) is the feed's writer thread
//! ([`super::live`]); this module only knows files.

pub mod record;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use record::{Decoded, HEADER_BYTES};
pub use record::{Entry, WAL_VERSION};

/// A segment is closed and a new one begun past this size.
pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

/// A log that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// Reading or writing a segment failed.
    #[error("write-ahead log {}: {source}", path.display())]
    Io {
        /// The segment or folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A segment is not one this edgeflow can read.
    #[error("write-ahead log {}: {reason}", path.display())]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Where a table's log lives under the output root.
pub fn wal_dir(root: &Path, table: &str) -> PathBuf {
    root.join("_state").join("_wal").join(table)
}

fn segment_name(first: u64) -> String {
    format!("{first:020}.wal")
}

/// The segments in `dir`, by first sequence number.
fn segments(dir: &Path) -> Result<BTreeMap<u64, PathBuf>, WalError> {
    let io = |source| WalError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            found.insert(first, path);
        }
    }
    Ok(found)
}

fn read_segment(path: &Path) -> Result<Vec<u8>, WalError> {
    let bytes = std::fs::read(path).map_err(|source| WalError::Io {
        path: path.to_owned(),
        source,
    })?;
    record::check_header(&bytes).map_err(|reason| WalError::Corrupt {
        path: path.to_owned(),
        reason,
    })?;
    Ok(bytes)
}

/// What opening a log found.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Sequence number the next record gets.
    pub next_seq: u64,
    /// Sequence number of the last chunk boundary, if the log holds one.
    pub last_cut: Option<u64>,
    /// Latest arrival time of the records after the last chunk boundary, if any came
    /// after it: a crash left that chunk open, and it is to be cut at once.
    pub uncut_clock: Option<i64>,
    /// `Idempotency-Key` lines of the batches still in the log, so a batch logged just
    /// before a crash is known by its key even if the key file missed it.
    pub key_lines: Vec<String>,
    /// Counter lines of the polls still in the log, with their record numbers
    /// ([`crate::source::baselines`]).
    pub counters: Vec<(u64, String)>,
    /// A torn last record that was cut off: where, and what was wrong.
    pub torn: Option<String>,
}

impl Recovered {
    fn note(&mut self, seq: u64, entry: Entry) {
        match entry {
            Entry::Cut { .. } => {
                self.last_cut = Some(seq);
                self.uncut_clock = None;
            }
            Entry::Arrival(a) => {
                self.uncut_clock = Some(self.uncut_clock.map_or(a.at, |c| c.max(a.at)));
                self.key_lines.extend(a.key_line);
                self.counters.extend(a.counters.map(|line| (seq, line)));
            }
        }
    }
}

/// One table's log, open for appending.
pub struct Wal {
    dir: PathBuf,
    file: File,
    /// Segment first sequence numbers and sizes, the active one last.
    sizes: BTreeMap<u64, u64>,
    next_seq: u64,
    segment_bytes: u64,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("next_seq", &self.next_seq)
            .finish()
    }
}

impl Wal {
    /// Opens (or creates) the log in `dir`, cutting a torn last record.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<(Wal, Recovered), WalError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| WalError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let found = segments(dir)?;
        let mut sizes = BTreeMap::new();
        let mut recovered = Recovered::default();
        for (&first, path) in &found {
            let mut head = [0u8; HEADER_BYTES];
            let read = File::open(path)
                .and_then(|mut f| f.read(&mut head))
                .map_err(io(path))?;
            if read < HEADER_BYTES && found.keys().next_back() == Some(&first) {
                // The newest segment was being created: begun again below.
                continue;
            }
            record::check_header(&head[..read]).map_err(|reason| WalError::Corrupt {
                path: path.clone(),
                reason,
            })?;
            let len = std::fs::metadata(path).map_err(io(path))?.len();
            sizes.insert(first, len);
        }
        let Some((&first, _)) = sizes.iter().next_back() else {
            let first = found.keys().next_back().copied().unwrap_or(0);
            let wal = Self::begin(dir, first, BTreeMap::new(), segment_bytes)?;
            recovered.next_seq = first;
            return Ok((wal, recovered));
        };
        // Keys of batches in older segments; the newest is read below.
        for (&older, _) in sizes.range(..first) {
            let bytes = read_segment(&dir.join(segment_name(older)))?;
            let mut offset = HEADER_BYTES;
            while let Decoded::Record(seq, entry, n) = record::decode(&bytes[offset..]) {
                offset += n;
                recovered.note(seq, entry);
            }
        }
        let path = dir.join(segment_name(first));
        let bytes = read_segment(&path)?;
        let mut offset = HEADER_BYTES;
        recovered.next_seq = first;
        loop {
            match record::decode(&bytes[offset..]) {
                Decoded::Record(seq, entry, n) => {
                    offset += n;
                    recovered.next_seq = seq + 1;
                    recovered.note(seq, entry);
                }
                Decoded::End => break,
                Decoded::Torn(what) => {
                    tracing::warn!(segment = %path.display(), offset, "Write-ahead log: cut a torn last record ({what}); it was never acknowledged");
                    recovered.torn = Some(format!("{} at byte {offset}: {what}", path.display()));
                    break;
                }
            }
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if recovered.torn.is_some() {
            file.set_len(offset as u64)
                .and_then(|()| file.sync_all())
                .map_err(io(&path))?;
        }
        let mut file = file;
        file.seek(SeekFrom::Start(offset as u64))
            .map_err(io(&path))?;
        sizes.insert(first, offset as u64);
        Ok((
            Wal {
                dir: dir.to_owned(),
                file,
                sizes,
                next_seq: recovered.next_seq,
                segment_bytes,
            },
            recovered,
        ))
    }

    /// Creates the segment that starts at `first` and makes it the active one.
    fn begin(
        dir: &Path,
        first: u64,
        mut sizes: BTreeMap<u64, u64>,
        segment_bytes: u64,
    ) -> Result<Wal, WalError> {
        let path = dir.join(segment_name(first));
        let io = |source| WalError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io)?;
        file.write_all(&record::header())
            .and_then(|()| file.sync_all())
            .map_err(io)?;
        // The new name is durable before a record in it is acknowledged.
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        sizes.insert(first, HEADER_BYTES as u64);
        Ok(Wal {
            dir: dir.to_owned(),
            file,
            sizes,
            next_seq: first,
            segment_bytes,
        })
    }

    /// Sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Bytes of records in every segment (what the local quota counts).
    pub fn bytes(&self) -> u64 {
        self.sizes
            .values()
            .map(|s| s.saturating_sub(HEADER_BYTES as u64))
            .sum()
    }

    /// Closes the active segment if it holds records and begins a new one, so that
    /// a checkpoint covering all of it can delete it.
    pub fn rotate(&mut self) -> Result<(), WalError> {
        let active = self.sizes.keys().next_back().copied().unwrap_or(0);
        if self.sizes.get(&active).copied().unwrap_or(0) <= HEADER_BYTES as u64 {
            return Ok(());
        }
        self.sync()?;
        let (dir, sizes) = (self.dir.clone(), std::mem::take(&mut self.sizes));
        *self = Self::begin(&dir, self.next_seq, sizes, self.segment_bytes)?;
        Ok(())
    }

    /// The log's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `entries`, numbered from [`Wal::next_seq`], without waiting for the
    /// disk ([`Wal::sync`] does); returns the number of the first.
    pub fn append(&mut self, entries: &[Entry]) -> Result<u64, WalError> {
        let active = self.sizes.keys().next_back().copied().unwrap_or(0);
        if self.sizes.get(&active).copied().unwrap_or(0) >= self.segment_bytes {
            self.rotate()?;
        }
        let first = self.next_seq;
        let mut bytes = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            record::encode(&mut bytes, first + i as u64, entry);
        }
        let active = self.sizes.keys().next_back().copied().unwrap_or(0);
        let before = self.sizes.get(&active).copied().unwrap_or(0);
        let path = || self.dir.join(segment_name(active));
        fail::fail_point!("wal-write", |arg| Err(WalError::Io {
            path: path(),
            source: crate::fault::io_error("wal-write", arg),
        }));
        if let Err(source) = self.file.write_all(&bytes) {
            // A part written (a full disk) would sit before the next records and end
            // every later read there: it goes.
            self.file
                .set_len(before)
                .and_then(|()| self.file.seek(SeekFrom::Start(before)).map(drop))
                .ok();
            return Err(WalError::Io {
                path: path(),
                source,
            });
        }
        *self.sizes.entry(active).or_default() += bytes.len() as u64;
        self.next_seq += entries.len() as u64;
        Ok(first)
    }

    /// Makes every appended record durable.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.file.sync_data().map_err(|source| WalError::Io {
            path: self.dir.clone(),
            source,
        })
    }

    /// Deletes the segments whose records all have numbers up to `checkpoint`; the
    /// active segment stays. Returns the bytes freed.
    pub fn truncate_through(&mut self, checkpoint: u64) -> Result<u64, WalError> {
        let firsts: Vec<u64> = self.sizes.keys().copied().collect();
        let mut freed = 0;
        for pair in firsts.windows(2) {
            let (first, next) = (pair[0], pair[1]);
            if next.saturating_sub(1) > checkpoint {
                break;
            }
            let path = self.dir.join(segment_name(first));
            fail::fail_point!("wal-truncate", |arg| Err(WalError::Io {
                path: path.clone(),
                source: crate::fault::io_error("wal-truncate", arg),
            }));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(WalError::Io { path, source }),
            }
            freed += self.sizes.remove(&first).unwrap_or(0);
        }
        Ok(freed)
    }
}

/// Reads the records numbered `from..=until` of the log in `dir`, in order, one
/// segment in memory at a time.
pub fn replay(
    dir: &Path,
    from: u64,
    until: u64,
    mut each: impl FnMut(u64, Entry) -> bool,
) -> Result<(), WalError> {
    if from > until {
        return Ok(());
    }
    let found = segments(dir)?;
    let firsts: Vec<u64> = found.keys().copied().collect();
    for (i, (&first, path)) in found.iter().enumerate() {
        let last = firsts.get(i + 1).map_or(u64::MAX, |n| n.saturating_sub(1));
        if last < from || first > until {
            continue;
        }
        let bytes = read_segment(path)?;
        let mut offset = HEADER_BYTES;
        while let Decoded::Record(seq, entry, n) = record::decode(&bytes[offset..]) {
            offset += n;
            if seq > until {
                return Ok(());
            }
            if seq >= from && !each(seq, entry) {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The first record number the log in `dir` still holds (none: no log).
pub fn first_kept(dir: &Path) -> Option<u64> {
    segments(dir).ok()?.keys().next().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::live::Arrival;

    fn arrival(n: u8) -> Entry {
        Entry::Arrival(Arrival {
            lines: vec![b'x'; usize::from(n)],
            at: i64::from(n),
            ..Arrival::default()
        })
    }

    type Result = std::result::Result<(), Box<dyn std::error::Error>>;

    fn all(dir: &Path) -> std::result::Result<Vec<(u64, Entry)>, WalError> {
        let mut out = Vec::new();
        replay(dir, 0, u64::MAX, |s, e| {
            out.push((s, e));
            true
        })?;
        Ok(out)
    }

    #[test]
    fn records_survive_reopening_and_rotation_and_numbers_go_on() -> Result {
        let tmp = tempfile::tempdir()?;
        let (mut wal, rec) = Wal::open(tmp.path(), 64)?;
        assert_eq!(rec.next_seq, 0);
        for n in 0..10 {
            wal.append(&[
                arrival(n),
                Entry::Cut {
                    clock: 1,
                    idle: false,
                },
            ])?;
        }
        wal.sync()?;
        assert!(segments(tmp.path())?.len() > 2, "segments rotate");
        drop(wal);
        let (wal, rec) = Wal::open(tmp.path(), 64)?;
        assert_eq!((rec.next_seq, rec.last_cut, rec.torn), (20, Some(19), None));
        assert_eq!(rec.uncut_clock, None);
        assert_eq!(wal.next_seq(), 20);
        let read = all(tmp.path())?;
        assert_eq!(read.len(), 20);
        assert!(read.iter().enumerate().all(|(i, (s, _))| *s == i as u64));
        assert_eq!(read[4].1, arrival(2));
        Ok(())
    }

    #[test]
    fn a_torn_tail_is_cut_and_appending_goes_on_after_the_last_whole_record() -> Result {
        let tmp = tempfile::tempdir()?;
        let (mut wal, _) = Wal::open(tmp.path(), DEFAULT_SEGMENT_BYTES)?;
        wal.append(&[arrival(3), arrival(4)])?;
        wal.sync()?;
        drop(wal);
        let path = tmp.path().join(segment_name(0));
        let len = std::fs::metadata(&path)?.len();
        let file = OpenOptions::new().write(true).open(&path)?;
        file.set_len(len - 2)?;
        drop(file);
        let (mut wal, rec) = Wal::open(tmp.path(), DEFAULT_SEGMENT_BYTES)?;
        assert_eq!(rec.next_seq, 1);
        assert_eq!(
            (rec.last_cut, rec.uncut_clock),
            (None, Some(3)),
            "record 0 is not cut"
        );
        assert!(
            rec.torn
                .is_some_and(|t| t.contains("00000000000000000000.wal"))
        );
        wal.append(&[arrival(5)])?;
        drop(wal);
        assert_eq!(all(tmp.path())?, vec![(0, arrival(3)), (1, arrival(5))]);
        Ok(())
    }

    #[test]
    fn checkpointed_segments_go_and_the_newest_stays() -> Result {
        let tmp = tempfile::tempdir()?;
        let (mut wal, _) = Wal::open(tmp.path(), 40)?;
        for n in 0..6 {
            wal.append(&[arrival(n)])?;
        }
        // One record per segment: each is past the size once it holds one.
        assert_eq!(segments(tmp.path())?.len(), 6);
        assert!(wal.truncate_through(3)? > 0);
        assert_eq!(first_kept(tmp.path()), Some(4));
        wal.truncate_through(u64::MAX)?;
        assert_eq!(first_kept(tmp.path()), Some(5), "the active segment stays");
        drop(wal);
        let (_, rec) = Wal::open(tmp.path(), 40)?;
        assert_eq!(rec.next_seq, 6);
        Ok(())
    }

    #[test]
    fn a_segment_of_a_newer_edgeflow_is_refused() -> Result {
        let tmp = tempfile::tempdir()?;
        let mut h = record::header();
        h[8] = 9;
        std::fs::write(tmp.path().join(segment_name(0)), h)?;
        let Err(e) = Wal::open(tmp.path(), 64) else {
            panic!("a newer segment was opened");
        };
        let e = e.to_string();
        assert!(
            e.contains("version 9") && e.contains("newer edgeflow"),
            "{e}"
        );
        Ok(())
    }
}
