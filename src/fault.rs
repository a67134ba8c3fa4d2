//! Injected faults, for the tests that prove a failed write loses nothing, corrupts
//! nothing and never hangs: the `fail` crate's points, compiled in only when its
//! `failpoints` feature is on. The dev-dependency turns it on for `cargo test`'s builds;
//! `cargo build` and the shipping profile carry none.
//!
//! `FAILPOINTS` names them when the binary starts, e.g.
//! `FAILPOINTS='commit-write=3*off->return(ENOSPC)'`: the first three file commits
//! succeed, every later one fails as on a full disk. Points:
//!
//! * `commit-write` (before a file's bytes are written), `commit-rename` (after its
//!   fsync, before the rename) and `commit-dir-fsync` (after the rename, before its
//!   folder is fsync'd);
//! * `journal-append` (before records are appended to the sync journal);
//! * `upload-answer-lost` (an object was put but the sync never heard back);
//! * `wal-write` (before records are appended to a live table's write-ahead log) and
//!   `wal-truncate` (before a checkpointed log segment is deleted).

/// Reads `FAILPOINTS`; the points stay set while the guard lives. `None` in builds
/// without fail points.
pub fn setup() -> Option<fail::FailScenario<'static>> {
    fail::has_failpoints().then(fail::FailScenario::setup)
}

/// The error a point's `return(ARG)` stands for: `ENOSPC` is a full disk, anything
/// else a generic I/O error naming the point.
pub fn io_error(point: &str, arg: Option<String>) -> std::io::Error {
    match arg.as_deref() {
        Some("ENOSPC") => std::io::Error::from(std::io::ErrorKind::StorageFull),
        _ => std::io::Error::other(format!("fault injected at {point}")),
    }
}

/// Returns the injected I/O error from the enclosing function when point `$name` fires.
macro_rules! io_fault {
    ($name:literal) => {
        fail::fail_point!($name, |arg| Err($crate::fault::io_error($name, arg)))
    };
}
pub(crate) use io_fault;
