//! Atomic file commits: write `*.inprogress`, fsync, rename, fsync the folder. A reader
//! sees the whole file or none of it, and a crash leaves at most an `.inprogress` file,
//! which the next run removes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::fault::io_fault;

/// Suffix of files being written.
pub const IN_PROGRESS: &str = ".inprogress";

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `bytes` to `path` atomically and durably.
pub fn commit_bytes(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut temp = path.as_os_str().to_owned();
    temp.push(IN_PROGRESS);
    let temp = PathBuf::from(temp);
    if let Err(e) = write_durably(&temp, bytes) {
        // A full disk leaves no half-written file behind to fill it further.
        fs::remove_file(&temp).ok();
        return Err(e);
    }
    io_fault!("commit-rename");
    fs::rename(&temp, path)?;
    io_fault!("commit-dir-fsync");
    sync_dir(dir)
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    io_fault!("commit-write");
    match direct::write_blocks(path, bytes) {
        Some(written) => file.write_all_at(&bytes[written..], written as u64)?,
        None => file.write_all(bytes)?,
    }
    file.sync_all()
}

/// Writing a big file's whole blocks around the page cache.
///
/// A result file is written once and made durable; a later reader (the sync, a query)
/// finds it on the disk. Written through the page cache, each of its pages is first a
/// fresh page of memory: on a virtual machine that hands free memory back to its host,
/// that cost about 10 ms per MB here, more than encoding the file. With `O_DIRECT`,
/// the blocks go to the disk from one buffer the thread reuses.
mod direct {
    use std::cell::RefCell;
    use std::fs::OpenOptions;
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;

    /// Alignment `O_DIRECT` asks of the buffer, the offset and the length: 4 KiB
    /// covers disks of 512-byte and of 4 KiB sectors.
    const BLOCK: usize = 4096;

    /// Bytes per write; the buffer is this plus one block.
    const CHUNK: usize = 1 << 20;

    /// Files smaller than this are written through the page cache: for them the
    /// extra open costs more than it saves.
    const MIN_BYTES: usize = 256 << 10;

    thread_local! {
        static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Writes the whole blocks of `bytes` to the file at `path` (created and empty),
    /// returning how many bytes that is; `None` when the file is small or the file
    /// system refuses `O_DIRECT` (tmpfs does), and the caller writes everything.
    pub(super) fn write_blocks(path: &Path, bytes: &[u8]) -> Option<usize> {
        let whole = bytes.len() / BLOCK * BLOCK;
        if bytes.len() < MIN_BYTES {
            return None;
        }
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()?;
        BUFFER.with_borrow_mut(|buffer| {
            buffer.resize(CHUNK + BLOCK, 0);
            let skip = buffer.as_ptr().align_offset(BLOCK);
            if skip >= BLOCK {
                return None;
            }
            let aligned = &mut buffer[skip..skip + CHUNK];
            let mut offset = 0;
            while offset < whole {
                let n = CHUNK.min(whole - offset);
                aligned[..n].copy_from_slice(&bytes[offset..offset + n]);
                file.write_all_at(&aligned[..n], offset as u64).ok()?;
                offset += n;
            }
            Some(whole)
        })
    }
}

/// Moves the file at `from` to `to` (same file system) durably: both folders fsync'd.
pub fn move_durably(from: &Path, to: &Path) -> std::io::Result<()> {
    let to_dir = to.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(to_dir)?;
    fs::rename(from, to)?;
    sync_dir(to_dir)?;
    sync_dir(from.parent().unwrap_or(Path::new(".")))
}

/// Every committed `.parquet` file under `dir` (none when `dir` does not exist), sorted.
pub fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes `*.inprogress` files under `dir` left by a crashed run; returns how many.
pub fn remove_stale(dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(0);
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            removed += remove_stale(&path)?;
        } else if path.to_string_lossy().ends_with(IN_PROGRESS) {
            fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_cleans_up() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("a/b/file.parquet");
        commit_bytes(&path, b"hello")?;
        assert_eq!(fs::read(&path)?, b"hello");
        commit_bytes(&path, b"again")?;
        assert_eq!(fs::read(&path)?, b"again");
        fs::write(dir.path().join("a/b/x.parquet.inprogress"), b"half")?;
        assert_eq!(remove_stale(dir.path())?, 1);
        assert!(!dir.path().join("a/b/x.parquet.inprogress").exists());
        Ok(())
    }

    #[test]
    fn big_files_keep_every_byte_whatever_their_length() -> std::io::Result<()> {
        // Whole blocks around the page cache and the rest through it, or (where the
        // file system refuses `O_DIRECT`) all of it through it: the same bytes.
        let dir = tempfile::tempdir()?;
        for len in [
            0,
            5,
            4096,
            (1 << 20) + 4096,
            (3 << 20) + 123,
            (2 << 20) + 7,
            300_001,
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
            let path = dir.path().join(format!("f{len}.parquet"));
            commit_bytes(&path, &bytes)?;
            assert_eq!(fs::read(&path)?, bytes, "a file of {len} bytes");
            if len >= 256 << 10 {
                // Written again shorter: nothing of the longer file is left.
                commit_bytes(&path, &bytes[..len / 2])?;
                assert_eq!(fs::read(&path)?, bytes[..len / 2], "{len} then {}", len / 2);
            }
        }
        let whole = direct::write_blocks(&dir.path().join("g"), &vec![1u8; 300_001]);
        assert_eq!(
            whole, None,
            "no file to open at g: the caller writes it all"
        );
        Ok(())
    }
}
