//! The crate error: every failure that ends a command, classified for exit codes.

use std::path::PathBuf;

use crate::lock::LockError;
use crate::query::QueryError;
use crate::sink::SinkError;
use crate::source::SourceError;

/// Who can fix an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The user: a query, an input path, a flag.
    User,
    /// The environment: disk, network, object store.
    External,
    /// edgeflow itself: a bug.
    Internal,
}

/// A failure that ends a command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A query file could not be read or planned.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The input could not be opened or read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The output folder cannot be created or written.
    #[error("output {} is not writable: {source}", path.display())]
    Output {
        /// The output root.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing results failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// The stream state kept in the output folder cannot be used.
    #[error(transparent)]
    State(#[from] crate::stream::StateError),
    /// Another process holds the output folder, or its lock file cannot be made.
    #[error(transparent)]
    Locked(#[from] LockError),
    /// The live node cannot start or run.
    #[error(transparent)]
    Node(#[from] crate::serve::NodeError),
    /// The processes of a cluster cannot be connected, or disagree on what to compute.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The registry a query joins cannot be read, or a row of it is malformed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Registry(Vec<crate::registry::RegistryError>),
    /// A worker or the engine failed in a way that is our bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Who can fix it.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Query(_) | Error::Output { .. } | Error::Locked(_) | Error::Registry(_) => {
                ErrorKind::User
            }
            Error::State(crate::stream::StateError::Io { .. }) => ErrorKind::External,
            Error::State(_) => ErrorKind::User,
            Error::Source(
                SourceError::Open { .. }
                | SourceError::CsvHeader { .. }
                | SourceError::Generator(_),
            ) => ErrorKind::User,
            Error::Source(_) | Error::Sink(_) => ErrorKind::External,
            Error::Node(
                crate::serve::NodeError::Listen { .. }
                | crate::serve::NodeError::Runtime(_)
                | crate::serve::NodeError::LeaderGone(_)
                | crate::serve::NodeError::ClusterQuery { .. },
            ) => ErrorKind::External,
            Error::Node(_) => ErrorKind::User,
            Error::Cluster(
                crate::cluster::ClusterError::Connect { .. }
                | crate::cluster::ClusterError::Listen { .. },
            ) => ErrorKind::External,
            Error::Cluster(_) => ErrorKind::User,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }
}
