//! Paths from the journal stay inside the output root.
//!
//! A journal path is also an object key and the place sync reads and deletes local files,
//! so a journal edited by hand (or by an attacker with write access to `_sync/`) must not
//! make sync upload `/etc/shadow` or delete files elsewhere. A path is accepted only when it
//! is relative, `/`-separated, free of `.`/`..`/empty parts, and neither it nor any folder
//! on the way resolves (through a symlink) to somewhere outside the root.

use std::path::{Component, Path, PathBuf};

/// Why a journal path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// `/x`, `C:\x` or `\x`.
    #[error("journal path `{0}` is absolute")]
    Absolute(String),
    /// `a/../b`, `./a`, `a//b`, or a backslash.
    #[error("journal path `{0}` is not a plain relative path (`..`, `.`, empty part or backslash)")]
    NotPlain(String),
    /// A symlink on the way leads out of the output root.
    #[error("journal path `{0}` resolves through a symlink to outside the output root")]
    Escapes(String),
}

/// Checks the form of a journal path, without touching the file system.
pub fn check_form(relative: &str) -> Result<(), PathError> {
    if relative.starts_with('/') || Path::new(relative).is_absolute() {
        return Err(PathError::Absolute(relative.into()));
    }
    // Backslashes would be separators on Windows and are never produced by the layout.
    if relative.is_empty()
        || relative.contains('\\')
        || relative
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(PathError::NotPlain(relative.into()));
    }
    if Path::new(relative)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(PathError::NotPlain(relative.into()));
    }
    Ok(())
}

/// The local file of a journal path, after checking that it stays inside `root`: its form,
/// and that the deepest part of it that exists resolves inside the root.
pub fn resolve(root: &Path, relative: &str) -> Result<PathBuf, PathError> {
    check_form(relative)?;
    let local = root.join(relative);
    // The engine moves files while sync looks (a superseded revision, late files a
    // `--fresh` run retires): a part that vanishes between the two looks below is
    // looked at again, not taken for a dangling symlink.
    for _ in 0..3 {
        if let Some(resolved) = resolve_once(root, relative, &local)? {
            return Ok(resolved);
        }
    }
    Ok(local)
}

/// [`resolve`], once; `None` when a part vanished while it was being looked at.
fn resolve_once(root: &Path, relative: &str, local: &Path) -> Result<Option<PathBuf>, PathError> {
    // Only the parts that exist can be symlinks; a missing tail cannot lead anywhere.
    let mut existing = local;
    loop {
        if std::fs::symlink_metadata(existing).is_ok() {
            break;
        }
        match existing.parent() {
            Some(parent) if parent.starts_with(root) => existing = parent,
            _ => return Ok(Some(local.to_owned())),
        }
    }
    let Ok(real_root) = root.canonicalize() else {
        return match existing == root {
            true => Ok(Some(local.to_owned())),
            false => Err(PathError::Escapes(relative.into())),
        };
    };
    let real = existing.canonicalize();
    match real {
        Ok(real) if real.starts_with(&real_root) => Ok(Some(local.to_owned())),
        Ok(_) => Err(PathError::Escapes(relative.into())),
        Err(_) if std::fs::symlink_metadata(existing).is_err() => Ok(None),
        // A dangling symlink on the way resolves nowhere; refusing is the safe answer.
        Err(_) if existing == root => Ok(Some(local.to_owned())),
        Err(_) => Err(PathError::Escapes(relative.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_dotted_paths_are_refused() {
        assert!(matches!(
            check_form("/etc/passwd"),
            Err(PathError::Absolute(_))
        ));
        for bad in ["a/../../b", "..", "./a", "a//b", "a\\b", "", "a/."] {
            assert!(
                matches!(check_form(bad), Err(PathError::NotPlain(_))),
                "{bad}"
            );
        }
        assert_eq!(
            check_form("q/date=2026-01-01/hour=00/window-1-r0.parquet"),
            Ok(())
        );
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused_and_inside_it_allowed()
    -> Result<(), Box<dyn std::error::Error>> {
        let outside = tempfile::tempdir()?;
        std::fs::write(outside.path().join("secret"), b"s")?;
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("q/date=x"))?;
        std::fs::write(root.path().join("q/date=x/f.parquet"), b"f")?;
        std::os::unix::fs::symlink(outside.path(), root.path().join("escape"))?;
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            root.path().join("q/date=x/link.parquet"),
        )?;
        std::os::unix::fs::symlink(root.path().join("q"), root.path().join("alias"))?;
        assert!(matches!(
            resolve(root.path(), "escape/secret"),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            resolve(root.path(), "escape/missing/deeper"),
            Err(PathError::Escapes(_))
        ));
        assert!(matches!(
            resolve(root.path(), "q/date=x/link.parquet"),
            Err(PathError::Escapes(_))
        ));
        assert_eq!(
            resolve(root.path(), "alias/date=x/f.parquet")?,
            root.path().join("alias/date=x/f.parquet")
        );
        assert_eq!(
            resolve(root.path(), "q/date=x/not-yet.parquet")?,
            root.path().join("q/date=x/not-yet.parquet")
        );
        Ok(())
    }
}
