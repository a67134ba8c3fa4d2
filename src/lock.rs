//! One writer per output folder.
//!
//! Two processes writing (or syncing) the same output folder would interleave journal
//! lines and race on the same files, so `run` and `sync` hold an exclusive `flock` on
//! `<root>/_state/lock` for as long as they live. The kernel drops the lock when the
//! process exits, however it exits, so a crash never leaves a stale lock behind; the pid in
//! the file is only there to tell people who holds it. Readers (`edgeflow status`) do not
//! take the lock.
//!
//! The lock is the standard library's `File::try_lock`, which is `flock(LOCK_EX | LOCK_NB)`
//! on Linux and the BSDs: no extra crate and no `unsafe`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// The output folder could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the folder.
    #[error("output folder {} is in use by another edgeflow process ({}); wait for it to finish or stop it", path.display(), pid.map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}")))]
    Held {
        /// The output folder.
        path: PathBuf,
        /// The holder's process id, as it wrote it into the lock file.
        pid: Option<u32>,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock output folder {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// An exclusive lock on an output folder, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct OutputLock {
    file: File,
    path: PathBuf,
}

impl OutputLock {
    /// Where the lock of `root` lives.
    pub fn path_for(root: &Path) -> PathBuf {
        root.join("_state").join("lock")
    }

    /// Takes the lock of `root` without waiting, creating `<root>/_state/` as needed, and
    /// writes this process's id into the lock file.
    pub fn acquire(root: &Path) -> Result<OutputLock, LockError> {
        let path = Self::path_for(root);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        // Not truncated on open: the holder's pid must survive a second process opening it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    path: root.to_owned(),
                    pid: holder(&mut file),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let pid = format!("{}\n", std::process::id());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(pid.as_bytes()))
            .and_then(|()| file.sync_data())
            .map_err(io)?;
        Ok(OutputLock { file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes the release
        // independent of other handles to the same open file description.
        self.file.unlock().ok();
    }
}

/// The pid the holder wrote. It writes right after locking, so a reader racing it may see
/// an empty file: then the pid is unknown.
fn holder(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_names_the_holder_and_a_dropped_lock_frees_the_folder()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let root = dir.path().join("out");
        let first = OutputLock::acquire(&root)?;
        assert_eq!(
            std::fs::read_to_string(first.path())?.trim(),
            std::process::id().to_string()
        );
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts just as another process would.
        match OutputLock::acquire(&root) {
            Err(LockError::Held { path, pid }) => {
                assert_eq!(path, root);
                assert_eq!(pid, Some(std::process::id()));
                let message = LockError::Held { path, pid }.to_string();
                assert!(message.contains(&root.display().to_string()), "{message}");
                assert!(
                    message.contains(&format!("pid {}", std::process::id())),
                    "{message}"
                );
            }
            other => panic!("expected Held, got {other:?}"),
        }
        drop(first);
        let again = OutputLock::acquire(&root)?;
        drop(again);
        Ok(())
    }
}
