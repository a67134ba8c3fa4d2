//! Putting one file into the target, idempotently.
//!
//! Keys are deterministic and puts are create-only, so a retry, a rerun or a second
//! machine can never write a key twice. When the key is already taken, the object is
//! compared with the local file (size, then the content hash we store as metadata, the
//! e-tag of a single-part put, or the bytes themselves for a local folder): the same
//! content counts as uploaded, other content is a conflict and is never overwritten. After
//! a failed or interrupted attempt the next one looks before it writes.
//!
//! A superseded revision's new key is filled from the local file when there is one, else
//! by a server-side copy of the old key (after a HEAD shows the new key free: S3 has no
//! create-only copy in object_store 0.13); the old key is deleted ([`retire`]) only once
//! the new one holds the bytes, and only if it holds our bytes.

use std::path::Path;
use std::time::Duration;

use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions,
    PutOptions, PutPayload,
};

use super::journal::Record;
use super::target::Target;
use crate::digest::md5_hex;

/// Metadata key holding the MD5 of the content.
const MD5_KEY: &str = "edgeflow-md5";

/// How large files go up.
#[derive(Clone, Copy, Debug)]
pub struct UploadConfig {
    /// Files at least this large use multipart uploads.
    pub multipart_threshold: u64,
    /// Size of each part.
    pub part_size: usize,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            multipart_threshold: 64 << 20,
            part_size: 8 << 20,
        }
    }
}

/// What an attempt achieved.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The object holds the file's bytes.
    Uploaded {
        /// Its e-tag.
        etag: Option<String>,
    },
    /// The key holds other content.
    Conflict {
        /// Size of what is there.
        remote_size: u64,
        /// Its e-tag.
        remote_etag: Option<String>,
    },
    /// It did not work this time.
    Failed {
        /// Why.
        reason: String,
        /// Whether trying again can help.
        retryable: bool,
    },
    /// The local file is gone, so there is nothing to upload.
    Missing,
    /// The journal path leads out of the output root; nothing was read.
    Unsafe(String),
    /// A superseded path's old key no longer holds our bytes.
    Retired {
        /// Whether this attempt deleted it (false: it was gone, or held other bytes).
        deleted: bool,
    },
}

/// Whether an object store error is worth retrying, and a message for people.
pub fn classify(error: &object_store::Error) -> (String, bool) {
    use object_store::Error as E;
    let message = tidy(&error.to_string());
    let retryable = match error {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => false,
        // A PUT answered 404 means the bucket is missing.
        E::NotFound { .. } => false,
        E::NotSupported { .. } | E::NotImplemented { .. } | E::InvalidPath { .. } => false,
        _ => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
            let mut network = false;
            while let Some(s) = source {
                network |= s
                    .downcast_ref::<object_store::client::HttpError>()
                    .is_some()
                    || s.downcast_ref::<std::io::Error>().is_some();
                source = s.source();
            }
            // Other 4xx answers (a malformed request, a missing bucket) will not change by
            // themselves; 408 and 429 are the server asking us to come back later.
            let client_error = ["status code: 4", "status: 4"]
                .iter()
                .any(|p| message.contains(p))
                && !["status code: 408", "status code: 429", "SlowDown"]
                    .iter()
                    .any(|p| message.contains(p));
            network || !client_error
        }
    };
    (message, retryable)
}

/// Replaces an S3 XML error body in a message with its code and message.
fn tidy(message: &str) -> String {
    let Some(start) = message.find("<?xml") else {
        return message.to_owned();
    };
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let from = message.find(&open)? + open.len();
        let to = message[from..].find("</")? + from;
        Some(message[from..to].to_owned())
    };
    let mut tidy = message[..start].trim_end().trim_end_matches(':').to_owned();
    if let Some(code) = tag("Code") {
        tidy.push_str(": ");
        tidy.push_str(&code);
    }
    if let Some(text) = tag("Message") {
        tidy.push_str(&format!(" ({text})"));
    }
    if let Some(end) = message.rfind("</Error>") {
        tidy.push_str(&message[end + "</Error>".len()..]);
    }
    tidy
}

/// The slowest uplink a request is waited for: below this a request is taken for
/// stalled, so an uplink that accepts connections and never answers (a dropped route, a
/// proxy that hangs) costs the backlog seconds, not the client's two-minute timeout.
const SLOWEST_UPLINK_BYTES_PER_S: u64 = 32 * 1024;

/// How long a request carrying `bytes` is waited for.
fn deadline(bytes: usize) -> Duration {
    Duration::from_secs(15 + bytes as u64 / SLOWEST_UPLINK_BYTES_PER_S)
}

/// `request`, or a retryable error once `limit` passed without an answer.
async fn answered<T>(
    limit: Duration,
    request: impl std::future::Future<Output = Result<T, object_store::Error>>,
) -> Result<T, object_store::Error> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "target",
                source: format!("no answer within {} s", limit.as_secs()).into(),
            })
        })
}

fn failed(error: &object_store::Error) -> Outcome {
    let (reason, retryable) = classify(error);
    Outcome::Failed { reason, retryable }
}

fn strip_quotes(etag: &str) -> &str {
    etag.trim_matches('"')
}

/// What the target holds under the record's key, compared with the local file; `Ok(None)`
/// if nothing.
async fn compare(
    target: &Target,
    record: &Record,
    local: &[u8],
) -> Result<Option<Outcome>, object_store::Error> {
    compare_key(target, &target.key(&record.path), record, Some(local)).await
}

/// What the target holds under `key`, compared with the record's size and content (the
/// local bytes when given, else its MD5); `Ok(None)` if nothing.
async fn compare_key(
    target: &Target,
    key: &ObjectPath,
    record: &Record,
    local: Option<&[u8]>,
) -> Result<Option<Outcome>, object_store::Error> {
    let looked = target.store.get_opts(
        key,
        GetOptions {
            head: true,
            ..GetOptions::default()
        },
    );
    let head = match answered(deadline(0), looked).await {
        Ok(h) => h,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let etag = head.meta.e_tag.clone();
    let conflict = Outcome::Conflict {
        remote_size: head.meta.size,
        remote_etag: etag.clone(),
    };
    if head.meta.size != record.size {
        return Ok(Some(conflict));
    }
    let same = if target.metadata {
        match head.attributes.get(&Attribute::Metadata(MD5_KEY.into())) {
            Some(md5) => md5.as_ref() == record.md5,
            None => etag
                .as_deref()
                .is_some_and(|e| strip_quotes(e) == record.md5),
        }
    } else {
        let remote = target.store.get(key).await?.bytes().await?;
        match local {
            Some(local) => remote.as_ref() == local,
            None => md5_hex(&remote) == record.md5,
        }
    };
    Ok(Some(if same {
        Outcome::Uploaded { etag }
    } else {
        conflict
    }))
}

/// Uploads the file of `record` under `root`. With `look_first`, checks the target before
/// writing (an earlier attempt may have landed).
pub async fn upload(
    target: &Target,
    root: &Path,
    record: &Record,
    config: UploadConfig,
    look_first: bool,
) -> Outcome {
    let local = match super::paths::resolve(root, &record.path) {
        Ok(local) => local,
        Err(e) => return Outcome::Unsafe(e.to_string()),
    };
    let bytes = match tokio::fs::read(local).await {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return match &record.from {
                Some(from) => copy_from(target, record, from).await,
                None => Outcome::Missing,
            };
        }
        Err(e) => {
            return Outcome::Failed {
                reason: format!("reading {}: {e}", record.path),
                retryable: true,
            };
        }
    };
    let key = target.key(&record.path);
    let multipart = bytes.len() as u64 >= config.multipart_threshold;
    if look_first || multipart {
        match compare(target, record, &bytes).await {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => {}
            Err(e) => return failed(&e),
        }
    }
    let mut attributes = Attributes::new();
    if target.metadata {
        attributes.insert(
            Attribute::Metadata(MD5_KEY.into()),
            record.md5.clone().into(),
        );
    }
    if !multipart {
        let options = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..PutOptions::default()
        };
        let put = target
            .store
            .put_opts(&key, PutPayload::from(bytes.clone()), options);
        return match answered(deadline(bytes.len()), put).await {
            Ok(result) => {
                // The object landed but its answer was lost: the retry must find it.
                fail::fail_point!("upload-answer-lost", |_| Outcome::Failed {
                    reason: "fault injected at upload-answer-lost".into(),
                    retryable: true,
                });
                Outcome::Uploaded { etag: result.e_tag }
            }
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => match compare(target, record, &bytes).await {
                Ok(Some(outcome)) => outcome,
                Ok(None) => Outcome::Failed {
                    reason: "the key was taken, then vanished".into(),
                    retryable: true,
                },
                Err(e) => failed(&e),
            },
            Err(e) => failed(&e),
        };
    }
    // Multipart uploads cannot be made create-only in object_store 0.13: we looked first,
    // and an incomplete upload is aborted, so a half-written object never becomes visible.
    let options = PutMultipartOptions {
        attributes,
        ..PutMultipartOptions::default()
    };
    let mut upload = match target.store.put_multipart_opts(&key, options).await {
        Ok(u) => u,
        Err(e) => return failed(&e),
    };
    for part in bytes.chunks(config.part_size.max(5 << 20)) {
        if let Err(e) = upload.put_part(PutPayload::from(part.to_vec())).await {
            upload.abort().await.ok();
            return failed(&e);
        }
    }
    match upload.complete().await {
        Ok(result) => Outcome::Uploaded { etag: result.e_tag },
        Err(e) => {
            upload.abort().await.ok();
            failed(&e)
        }
    }
}

/// Fills the key of a superseded revision's new place from its old key, in the target:
/// the local file is gone (retention deleted it after the old key was uploaded).
async fn copy_from(target: &Target, record: &Record, from: &str) -> Outcome {
    let to_key = target.key(&record.path);
    match compare_key(target, &to_key, record, None).await {
        Ok(Some(outcome)) => return outcome,
        Ok(None) => {}
        Err(e) => return failed(&e),
    }
    let from_key = target.key(from);
    match compare_key(target, &from_key, record, None).await {
        Ok(Some(Outcome::Uploaded { .. })) => {}
        // Neither the local disk nor the old key has the bytes: nothing can be put there.
        Ok(_) => return Outcome::Missing,
        Err(e) => return failed(&e),
    }
    // We looked: `to` was free. A local folder can copy create-only (a hard link); S3 in
    // object_store 0.13 cannot, so a writer racing us in the instant since the HEAD could
    // be overwritten. Keys are deterministic per output folder, which has one writer.
    let copied = if target.metadata {
        answered(deadline(0), target.store.copy(&from_key, &to_key)).await
    } else {
        answered(
            deadline(0),
            target.store.copy_if_not_exists(&from_key, &to_key),
        )
        .await
    };
    match copied {
        Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => return failed(&e),
    }
    match compare_key(target, &to_key, record, None).await {
        Ok(Some(outcome)) => outcome,
        Ok(None) => Outcome::Failed {
            reason: format!("copied {from} to {}, then it was not there", record.path),
            retryable: true,
        },
        Err(e) => failed(&e),
    }
}

/// Deletes the old key of a superseded revision (`record` is the old path's record) if it
/// holds our bytes; other bytes there are not ours to delete.
pub async fn retire(target: &Target, record: &Record) -> Outcome {
    let key = target.key(&record.path);
    match compare_key(target, &key, record, None).await {
        Ok(None) => Outcome::Retired { deleted: false },
        Ok(Some(Outcome::Uploaded { .. })) => {
            match answered(deadline(0), target.store.delete(&key)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {
                    Outcome::Retired { deleted: true }
                }
                Err(e) => failed(&e),
            }
        }
        Ok(Some(_)) => {
            tracing::warn!(file = %record.path, "The old key of a superseded revision holds other content; leaving it");
            Outcome::Retired { deleted: false }
        }
        Err(e) => failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::{answered, classify, deadline, tidy};
    use std::time::Duration;

    #[test]
    fn a_request_never_answered_fails_retryably_at_its_deadline() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let never = std::future::pending::<Result<(), object_store::Error>>();
        let Err(error) = runtime.block_on(answered(Duration::from_millis(20), never)) else {
            panic!("a request that never answers was answered");
        };
        let (reason, retryable) = classify(&error);
        assert!(reason.contains("no answer within"), "{reason}");
        assert!(retryable, "{reason}");
        // A 1 MiB upload is given the time of a 256 kbit/s uplink, a HEAD 15 s.
        assert_eq!(deadline(0), Duration::from_secs(15));
        assert_eq!(deadline(1 << 20), Duration::from_secs(15 + 32));
    }

    #[test]
    fn s3_error_bodies_shrink_to_code_and_message() {
        let raw = "Error performing PUT http://h/b/k in 20ms - Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The signature does not match.</Message><RequestId>x</RequestId></Error>";
        assert_eq!(
            tidy(raw),
            "Error performing PUT http://h/b/k in 20ms - Server returned non-2xx status code: 403 Forbidden: SignatureDoesNotMatch (The signature does not match.)"
        );
        assert_eq!(tidy("connection refused"), "connection refused");
    }
}
