//! Query errors: where in the file, and what was expected.

use std::fmt;
use std::path::PathBuf;

use sqlparser::tokenizer::Span;

/// A 1-based line and column in a query file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: u64,
    /// Column, from 1.
    pub column: u64,
}

impl Position {
    /// The start of a sqlparser span; spans without a location map to line 1, column 1.
    pub fn of(span: Span) -> Self {
        if span.start.line == 0 {
            Position { line: 1, column: 1 }
        } else {
            Position {
                line: span.start.line,
                column: span.start.column,
            }
        }
    }
}

/// A query file that cannot be read, parsed or planned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The file could not be read.
    #[error("{}: cannot read query file: {source}", file.display())]
    Read {
        /// The query file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file name that cannot name the query's output folder.
    #[error(
        "{}: a query is named after its file, and `{name}` is not a valid query name: use only letters, digits, `_` and `-`",
        file.display()
    )]
    BadName {
        /// The query file.
        file: PathBuf,
        /// The name its file gives.
        name: String,
    },
    /// A syntax or planning mistake at a position.
    #[error("{}", Located(self))]
    At {
        /// The query file.
        file: PathBuf,
        /// Where the mistake is.
        position: Position,
        /// What was expected, or what is wrong.
        message: String,
    },
}

struct Located<'a>(&'a QueryError);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            QueryError::At {
                file,
                position,
                message,
            } => {
                write!(
                    f,
                    "{}:{}:{}: {message}",
                    file.display(),
                    position.line,
                    position.column
                )
            }
            other => write!(f, "{other}"),
        }
    }
}

impl QueryError {
    /// The position of a mistake, if the error has one.
    pub fn position(&self) -> Option<Position> {
        match self {
            QueryError::At { position, .. } => Some(*position),
            QueryError::Read { .. } | QueryError::BadName { .. } => None,
        }
    }

    /// The message without file and position.
    pub fn message(&self) -> String {
        match self {
            QueryError::At { message, .. } => message.clone(),
            QueryError::Read { source, .. } => source.to_string(),
            QueryError::BadName { .. } => self.to_string(),
        }
    }
}

/// A planning mistake before the file name is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError {
    /// Where.
    pub position: Position,
    /// What.
    pub message: String,
}

impl PlanError {
    /// A mistake at the start of `span`.
    pub fn at(span: Span, message: impl Into<String>) -> Self {
        PlanError {
            position: Position::of(span),
            message: message.into(),
        }
    }

    /// Attaches the file.
    pub fn in_file(self, file: PathBuf) -> QueryError {
        QueryError::At {
            file,
            position: self.position,
            message: self.message,
        }
    }

    /// Turns a sqlparser error ("... at Line: 3, Column: 5") into a positioned mistake.
    pub fn from_parser(error: &sqlparser::parser::ParserError) -> Self {
        let text = error.to_string();
        let text = text.strip_prefix("sql parser error: ").unwrap_or(&text);
        let (message, position) = match text.rfind(" at Line: ") {
            Some(at) => {
                let tail = &text[at + " at Line: ".len()..];
                let mut parts = tail.split(", Column: ");
                let line = parts
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(1);
                let column = parts
                    .next()
                    .and_then(|c| c.trim().parse().ok())
                    .unwrap_or(1);
                (&text[..at], Position { line, column })
            }
            None => (text, Position { line: 1, column: 1 }),
        };
        PlanError {
            position,
            message: message.replace("Expected: ", "expected "),
        }
    }
}

/// Result of a planning step.
pub type PlanResult<T> = Result<T, PlanError>;
