//! Atomic file commits: write `*.inprogress`, fsync, rename, fsync the folder. A reader
//! sees the whole file or none of it, and a crash leaves at most an `.inprogress` file,
//! which the next run removes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
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
    file.write_all(bytes)?;
    file.sync_all()
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
}
