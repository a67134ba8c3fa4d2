//! The first line of edgeflow's append-only JSON-lines files (the sync journal, the
//! idempotency keys): `{"format":"edgeflow-sync-journal","version":1}`.
//!
//! An output folder outlives the binary that made it, so each such file says what it is
//! and which version of its layout it holds. A newer edgeflow reads every older version;
//! an older one refuses a newer file by name instead of skipping lines it cannot parse
//! (which, for a journal, would forget uploads and send them again). Files written before
//! headers existed start with a record: they are version 1.

/// A versioned JSON-lines layout.
#[derive(Clone, Copy, Debug)]
pub struct Format {
    /// What the file is, as written in its header.
    pub name: &'static str,
    /// The newest version this edgeflow writes and reads.
    pub version: u32,
}

/// A file this edgeflow must not read (the caller names the file).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Written by a newer edgeflow.
    #[error(
        "{name} format version {found}, this edgeflow reads versions up to {known}; run a newer edgeflow on this folder"
    )]
    Newer {
        /// Its format name.
        name: &'static str,
        /// The version it holds.
        found: u64,
        /// The newest one known here.
        known: u32,
    },
    /// Another kind of file under this name.
    #[error("expected a {expected} file, found a {found:?} header")]
    Foreign {
        /// What it should have been.
        expected: &'static str,
        /// What its header says it is.
        found: String,
    },
}

impl Format {
    /// The header line, newline included.
    pub fn header(&self) -> String {
        format!(
            "{{\"format\":\"{}\",\"version\":{}}}\n",
            self.name, self.version
        )
    }

    /// Whether `line`, the first of a file, is a header of this format (`false`: a file
    /// from before headers, whose first line is already a record).
    pub fn check_first_line(&self, line: &str) -> Result<bool, FormatError> {
        let Ok(serde_json::Value::Object(header)) = serde_json::from_str(line) else {
            return Ok(false);
        };
        let Some(found) = header.get("format") else {
            return Ok(false);
        };
        let found = found.as_str().unwrap_or_default();
        if found != self.name {
            return Err(FormatError::Foreign {
                expected: self.name,
                found: found.to_owned(),
            });
        }
        let version = header
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(u64::MAX);
        if version > u64::from(self.version) {
            return Err(FormatError::Newer {
                name: self.name,
                found: version,
                known: self.version,
            });
        }
        Ok(true)
    }

    /// The lines of a file of this format after its header. A header this edgeflow must
    /// not read ends the lines with an `InvalidData` error, naming the format.
    pub fn lines<R: std::io::BufRead>(
        self,
        reader: R,
    ) -> impl Iterator<Item = std::io::Result<String>> {
        reader
            .lines()
            .enumerate()
            .filter_map(move |(i, line)| match line {
                Ok(line) if i == 0 => match self.check_first_line(&line) {
                    Ok(true) => None,
                    Ok(false) => Some(Ok(line)),
                    Err(e) => Some(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e))),
                },
                other => Some(other),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Format = Format {
        name: "edgeflow-test",
        version: 2,
    };

    #[test]
    fn headers_of_this_or_older_versions_read_newer_and_foreign_ones_are_refused() {
        let own = F.header();
        assert!(matches!(F.check_first_line(own.trim_end()), Ok(true)));
        let older = r#"{"format":"edgeflow-test","version":1}"#;
        assert!(matches!(F.check_first_line(older), Ok(true)));
        // A file from before headers: its first line is a record.
        assert!(matches!(F.check_first_line(r#"{"path":"a"}"#), Ok(false)));
        assert!(matches!(F.check_first_line("{torn"), Ok(false)));
        let newer = r#"{"format":"edgeflow-test","version":3}"#;
        let err = F.check_first_line(newer).map(|_| ()).err();
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            text.contains("edgeflow-test")
                && text.contains("version 3")
                && text.contains("up to 2"),
            "{text}"
        );
        let foreign = r#"{"format":"edgeflow-other","version":1}"#;
        assert!(matches!(
            F.check_first_line(foreign),
            Err(FormatError::Foreign { .. })
        ));
    }
}
