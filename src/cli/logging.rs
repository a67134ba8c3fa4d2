//! Logging: human-readable lines on stderr, and for `run` also JSON lines in rotating
//! files under `<output>/_logs/`, which sync ships after the results.

use std::io::IsTerminal;
use std::path::Path;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{self, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Log files of this process. Dropping it flushes and closes them.
pub struct FileLogs {
    /// File name prefix, unique to this process.
    pub prefix: String,
    _guard: WorkerGuard,
}

fn filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("EDGEFLOW_LOG").unwrap_or_else(|_| EnvFilter::new(default))
}

/// Installs the global subscriber; with `file_dir`, also writes hourly-rotated JSON log
/// files there. A log folder that cannot be created costs the files, not the run.
/// `process` is this process's index in a cluster: its processes sync their logs to one
/// prefix, and two hosts can start the same pid in the same second.
pub fn init(file_dir: Option<&Path>, process: Option<usize>) -> Option<FileLogs> {
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Escape codes only help a person at a terminal; in files and pipes they are noise.
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter("warn"));
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let pid = std::process::id();
    let prefix = match process {
        Some(process) => format!("edgeflow-{stamp}-p{process}-{pid}"),
        None => format!("edgeflow-{stamp}-{pid}"),
    };
    let appender = file_dir.map(|dir| {
        rolling::Builder::new()
            .rotation(Rotation::HOURLY)
            .filename_prefix(&prefix)
            .filename_suffix("log")
            .build(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))
    });
    let (file_layer, logs, failure) = match appender {
        Some(Ok(appender)) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .with_writer(writer)
                .with_filter(filter("info"));
            let logs = FileLogs {
                prefix,
                _guard: guard,
            };
            (Some(layer), Some(logs), None)
        }
        Some(Err(e)) => (None, None, Some(e)),
        None => (None, None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .init();
    if let Some(e) = failure {
        tracing::warn!(error = %e, "Cannot write log files; logging to stderr only");
    }
    logs
}
