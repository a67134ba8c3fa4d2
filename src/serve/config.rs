//! The node's own settings: `--config edgeflow.toml` for what is not per query (listen
//! address, tokens, output, sync, quota). Flags given on the command line win.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the config file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// It cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// It is not valid TOML for a node.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
}

/// `edgeflow.toml`. Every field is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// `listen = "127.0.0.1:7070"`.
    pub listen: Option<String>,
    /// `output = "/var/lib/edgeflow/out"`.
    pub output: Option<PathBuf>,
    /// `workers = 2`.
    pub workers: Option<usize>,
    /// `queries = "/etc/edgeflow/queries"`: files or folders served when none are given.
    #[serde(default)]
    pub queries: Vec<PathBuf>,
    /// `insecure = true`: listen beyond loopback without tokens.
    #[serde(default)]
    pub insecure: bool,
    /// `[tokens]`.
    #[serde(default)]
    pub tokens: Tokens,
    /// `[sync]`.
    #[serde(default)]
    pub sync: SyncFile,
}

/// `[sync]` of `edgeflow.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFile {
    /// `target = "s3://bucket/prefix"`.
    pub target: Option<String>,
    /// `enabled = false` to keep results local.
    pub enabled: Option<bool>,
    /// `max_pending_bytes = "2GiB"`.
    pub max_pending_bytes: Option<String>,
    /// `on_quota = "backpressure"` or `"drop-oldest"`.
    pub on_quota: Option<String>,
}

/// Bearer tokens by scope. `ingest` may push readings; `admin` may do anything.
/// Tokens also come from `EDGEFLOW_INGEST_TOKEN` and `EDGEFLOW_ADMIN_TOKEN`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokens {
    /// May push readings.
    #[serde(default)]
    pub ingest: Vec<String>,
    /// May do anything.
    #[serde(default)]
    pub admin: Vec<String>,
    /// May read status and metrics.
    #[serde(default)]
    pub read: Vec<String>,
}

impl Tokens {
    /// No token at all: nothing is checked (loopback only, or `--insecure`).
    pub fn is_empty(&self) -> bool {
        self.ingest.is_empty() && self.admin.is_empty() && self.read.is_empty()
    }

    /// Adds the tokens named by the environment.
    pub fn with_env(mut self) -> Self {
        for (var, list) in [
            ("EDGEFLOW_INGEST_TOKEN", &mut self.ingest),
            ("EDGEFLOW_ADMIN_TOKEN", &mut self.admin),
            ("EDGEFLOW_READ_TOKEN", &mut self.read),
        ] {
            if let Ok(token) = std::env::var(var)
                && !token.is_empty()
            {
                list.push(token);
            }
        }
        self
    }

    /// Whether `token` may read status and metrics.
    pub fn may_read(&self, token: Option<&str>) -> bool {
        self.is_empty()
            || token.is_some_and(|t| {
                self.read
                    .iter()
                    .chain(&self.admin)
                    .any(|k| same(k.as_bytes(), t.as_bytes()))
            })
    }

    /// Whether `token` may push readings.
    pub fn may_ingest(&self, token: Option<&str>) -> bool {
        self.is_empty()
            || token.is_some_and(|t| {
                self.ingest
                    .iter()
                    .chain(&self.admin)
                    .any(|k| same(k.as_bytes(), t.as_bytes()))
            })
    }
}

/// Compares in time independent of where the inputs differ, so a token cannot be
/// guessed byte by byte from answer times.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl NodeFile {
    /// Reads a node config file.
    pub fn load(path: &Path) -> Result<NodeFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_scope_and_compare() {
        let tokens = Tokens {
            ingest: vec!["in-1".into()],
            admin: vec!["root".into()],
            read: vec!["look".into()],
        };
        assert!(tokens.may_ingest(Some("in-1")));
        assert!(tokens.may_ingest(Some("root")));
        assert!(!tokens.may_ingest(Some("look")));
        assert!(!tokens.may_ingest(Some("in-2")));
        assert!(!tokens.may_ingest(None));
        assert!(Tokens::default().may_ingest(None));
    }

    #[test]
    fn a_config_file_with_a_typo_is_refused_with_its_position() {
        let e = toml::from_str::<NodeFile>("listen = \"0.0.0.0:7070\"\nlisen = 1\n");
        let message = e
            .map(|_| ())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("lisen"), "{message}");
        assert!(message.contains("line 2"), "{message}");
    }
}
