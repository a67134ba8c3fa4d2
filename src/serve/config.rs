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
    /// `node = "edge-01"`: sync under `node=edge-01/` of the target, one folder of a
    /// fleet's bucket.
    pub node: Option<String>,
    /// `enabled = false` to keep results local.
    pub enabled: Option<bool>,
    /// `max_pending_bytes = "2GiB"`.
    pub max_pending_bytes: Option<String>,
    /// `on_quota = "backpressure"` or `"drop-oldest"`.
    pub on_quota: Option<String>,
}

/// Bearer tokens by scope. `ingest` may push readings; `read` may read status and
/// metrics; `admin` may do anything. Tokens also come from `EDGEFLOW_INGEST_TOKEN`,
/// `EDGEFLOW_READ_TOKEN` and `EDGEFLOW_ADMIN_TOKEN`, and from token files.
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

    /// Adds the token kept in `path` (its first line) to `scope`: a file readable only by
    /// the service keeps it out of the process list and the environment.
    pub fn add_file(&mut self, scope: Scope, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let token = text.lines().next().unwrap_or("").trim();
        if token.is_empty() {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: "the token file is empty".into(),
            });
        }
        let list = match scope {
            Scope::Ingest => &mut self.ingest,
            Scope::Read => &mut self.read,
            Scope::Admin => &mut self.admin,
        };
        list.push(token.to_owned());
        Ok(())
    }

    /// Whether `token` grants `scope`: admin tokens grant everything, read tokens the
    /// read scope, ingest tokens the ingest scope.
    pub fn check(&self, token: Option<&str>, scope: Scope) -> Access {
        if self.is_empty() {
            return Access::Granted;
        }
        let Some(token) = token else {
            return Access::Unknown;
        };
        let known = |list: &[String]| list.iter().any(|k| same(k.as_bytes(), token.as_bytes()));
        // Every list is compared, so the answer time does not tell which scope matched.
        let (admin, read, ingest) = (known(&self.admin), known(&self.read), known(&self.ingest));
        let granted = admin
            || match scope {
                Scope::Read => read,
                Scope::Ingest => ingest,
                Scope::Admin => false,
            };
        if granted {
            Access::Granted
        } else if read || ingest {
            Access::Forbidden
        } else {
            Access::Unknown
        }
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

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Push readings.
    Ingest,
    /// Read status and metrics.
    Read,
    /// Anything, including starting and stopping queries.
    Admin,
}

/// What a token is allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The request may go on.
    Granted,
    /// No token, or one this node does not know (401).
    Unknown,
    /// A known token without the scope (403).
    Forbidden,
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
