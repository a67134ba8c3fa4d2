//! Sync targets: `s3://bucket/prefix` on any S3-compatible endpoint, or `file:///path`.
//!
//! S3 settings come from flags that fall back to the standard AWS environment variables.
//! Custom endpoints get path-style requests. Credentials are handed to object_store and
//! never appear in a description, log line or error message of ours.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

/// S3 connection settings (each also readable from the usual AWS variable).
#[derive(Clone, Default, clap::Args)]
pub struct S3Options {
    /// S3-compatible endpoint, e.g. http://127.0.0.1:9000 (default: AWS).
    #[arg(long = "s3-endpoint", env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// Region.
    #[arg(long = "s3-region", env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
    /// Allow plain HTTP endpoints.
    #[arg(long = "s3-allow-http", env = "AWS_ALLOW_HTTP", value_parser = clap::builder::BoolishValueParser::new(), default_value = "false")]
    pub allow_http: bool,
    /// Access key id.
    #[arg(
        long = "aws-access-key-id",
        env = "AWS_ACCESS_KEY_ID",
        hide_env_values = true
    )]
    pub access_key_id: Option<String>,
    /// Secret access key.
    #[arg(
        long = "aws-secret-access-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials.
    #[arg(
        long = "aws-session-token",
        env = "AWS_SESSION_TOKEN",
        hide_env_values = true
    )]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field(
                "access_key_id",
                &self.access_key_id.as_ref().map(|_| "<set>"),
            )
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A target that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// Not `s3://bucket[/prefix]` or `file:///path`.
    #[error("sync target `{0}`: expected s3://bucket[/prefix] or file:///path")]
    Url(String),
    /// A node name that cannot be a folder of the bucket.
    #[error(
        "node name `{0}`: expected 1 to 64 of letters, digits, `.`, `_` and `-`, not starting with `.` or `_`"
    )]
    Node(String),
    /// object_store rejected the configuration.
    #[error("sync target {url}: {message}")]
    Config {
        /// The target, as given.
        url: String,
        /// Why.
        message: String,
    },
}

/// The folder a node's outputs go under in a fleet's bucket is this plus its name.
pub const NODE_FOLDER_PREFIX: &str = "node=";

/// Checks a node name: 1 to 64 of ASCII letters, digits, `.`, `_` and `-`, not starting
/// with `.` or `_` (which mark folders that are not outputs). It becomes part of every
/// object key and a value of the `node` column, so nothing that needs quoting is allowed.
pub fn check_node_name(name: &str) -> Result<(), TargetError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if (1..=64).contains(&name.len()) && name.bytes().all(allowed) && !name.starts_with(['.', '_'])
    {
        Ok(())
    } else {
        Err(TargetError::Node(name.into()))
    }
}

/// Where files are synced to.
#[derive(Clone, Debug)]
pub struct Target {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Key prefix under which output paths go.
    pub prefix: ObjectPath,
    /// The URL as given, for messages.
    pub url: String,
    /// Whether the store keeps user metadata (S3 does; a local folder does not).
    pub metadata: bool,
}

impl Target {
    /// The object key of an output path (relative to the output root).
    pub fn key(&self, relative: &str) -> ObjectPath {
        let mut key = self.prefix.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            key = key.clone().join(part);
        }
        key
    }

    /// Parses and opens a target URL.
    pub fn open(url: &str, s3: &S3Options) -> Result<Target, TargetError> {
        let config = |e: object_store::Error| TargetError::Config {
            url: url.into(),
            message: e.to_string(),
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(TargetError::Url(url.into()));
            }
            // Our uploader retries without limit; object_store's own retries are kept short
            // so that an outage comes back to us (and to --sync-timeout) quickly.
            let retry = RetryConfig {
                backoff: BackoffConfig {
                    init_backoff: Duration::from_millis(100),
                    max_backoff: Duration::from_secs(1),
                    base: 2.0,
                },
                max_retries: 2,
                retry_timeout: Duration::from_secs(10),
            };
            // `with_client_options` replaces every client option, `allow_http` included, so
            // it comes first.
            let options = ClientOptions::new()
                .with_connect_timeout(Duration::from_secs(5))
                .with_timeout(Duration::from_secs(120))
                .with_allow_http(s3.allow_http);
            let mut builder = AmazonS3Builder::new()
                .with_client_options(options)
                .with_allow_http(s3.allow_http)
                .with_bucket_name(bucket)
                .with_region(&s3.region)
                .with_retry(retry);
            if let Some(endpoint) = &s3.endpoint {
                builder = builder
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if let Some(key) = &s3.access_key_id {
                builder = builder.with_access_key_id(key);
            }
            if let Some(secret) = &s3.secret_access_key {
                builder = builder.with_secret_access_key(secret);
            }
            if let Some(token) = &s3.session_token {
                builder = builder.with_token(token);
            }
            let store = builder.build().map_err(config)?;
            let prefix =
                ObjectPath::parse(prefix.trim_matches('/')).map_err(|e| config(e.into()))?;
            Ok(Target {
                store: Arc::new(store),
                prefix,
                url: url.into(),
                metadata: true,
            })
        } else if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(TargetError::Url(url.into()));
            }
            std::fs::create_dir_all(path).map_err(|e| TargetError::Config {
                url: url.into(),
                message: e.to_string(),
            })?;
            let store = LocalFileSystem::new_with_prefix(path).map_err(config)?;
            Ok(Target {
                store: Arc::new(store),
                prefix: ObjectPath::default(),
                url: url.into(),
                metadata: false,
            })
        } else {
            Err(TargetError::Url(url.into()))
        }
    }

    /// The same store with `name` appended to the prefix: a subfolder of a local target,
    /// a deeper prefix in a bucket.
    pub fn subfolder(&self, name: &str) -> Result<Target, TargetError> {
        let url = format!("{}/{name}", self.url.trim_end_matches('/'));
        if !self.metadata {
            // A local folder store is rooted at its folder, so the subfolder is a new store.
            return Target::open(&url, &S3Options::default());
        }
        Ok(Target {
            store: self.store.clone(),
            prefix: self.key(name),
            url,
            metadata: self.metadata,
        })
    }

    /// Where node `name` of a fleet syncs within this target: its `node=NAME/` folder.
    pub fn for_node(&self, name: &str) -> Result<Target, TargetError> {
        check_node_name(name)?;
        self.subfolder(&format!("{NODE_FOLDER_PREFIX}{name}"))
    }

    /// A local folder target, for the default.
    pub fn local(dir: &std::path::Path) -> Result<Target, TargetError> {
        let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        Target::open(
            &format!("file://{}", absolute.display()),
            &S3Options::default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_plain_folder_names() {
        for good in ["edge-01", "site_a.gw3", "A"] {
            assert!(check_node_name(good).is_ok(), "{good}");
        }
        let long = "n".repeat(65);
        for bad in [
            "",
            ".hidden",
            "_logs",
            "a/b",
            "a b",
            "ü",
            "x=y",
            long.as_str(),
        ] {
            assert!(check_node_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_node_syncs_under_its_folder_of_the_target() -> Result<(), TargetError> {
        let dir = tempfile::tempdir().map_err(|e| TargetError::Url(e.to_string()))?;
        let target = Target::local(dir.path())?.for_node("edge-01")?;
        assert!(target.url.ends_with("/node=edge-01"), "{}", target.url);
        assert!(dir.path().join("node=edge-01").is_dir());
        Ok(())
    }
}
