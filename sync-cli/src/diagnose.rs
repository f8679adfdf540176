//! Turning a failure into one line that names its cause and its fix.
//!
//! The cause is read from the error's structure: the core's error variant,
//! the object-store error kind, the HTTP client's error kind, and S3's error
//! code. What the remote is (its endpoint, where its credentials came from)
//! comes from the remotes the command opened.

use std::error::Error as StdError;
use std::time::Duration;

use object_store::client::{HttpError, HttpErrorKind};
use pqsync_backends::CredentialSource;
use pqsync_core::object_store;

use crate::{ExitStatus, UsageError};

/// What the command knows about a remote it opened.
#[derive(Debug, Clone)]
pub struct RemoteInfo {
    /// The canonical URL.
    pub url: String,
    /// The bucket or container, for stores.
    pub bucket: Option<String>,
    /// Where requests go.
    pub endpoint: Option<String>,
    /// Where its credentials come from.
    pub credentials: CredentialSource,
    /// `--timeout`.
    pub timeout: Duration,
}

/// A failure, explained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// A short class, stable for scripts: `usage`, `credentials`,
    /// `signature`, `access-key`, `bucket-not-found`, `connection`,
    /// `timeout`, `not-managed`, `manifest-corrupt`, `unsafe-path`,
    /// `remote-changed`, `leased`, `empty-source`, `shards`, `io`, `store` or
    /// `error`.
    pub kind: &'static str,
    /// One line: the cause and the fix.
    pub message: String,
    /// The path or remote concerned, when there is one.
    pub path: Option<String>,
}

impl Diagnosis {
    fn new(kind: &'static str, message: String, path: Option<String>) -> Self {
        Diagnosis {
            kind,
            message,
            path,
        }
    }

    /// The exit status the failure ends the command with.
    pub fn exit_status(&self) -> ExitStatus {
        if self.kind == "usage" {
            ExitStatus::Usage
        } else {
            ExitStatus::Failure
        }
    }
}

/// Explains `err`, which happened while `remotes` were open.
pub fn diagnose(err: &anyhow::Error, remotes: &[RemoteInfo]) -> Diagnosis {
    if let Some(u) = err.downcast_ref::<UsageError>() {
        return Diagnosis::new("usage", u.0.clone(), None);
    }
    if let Some(e) = err.downcast_ref::<pqsync_backends::Error>() {
        return backend(e);
    }
    if let Some(e) = err.downcast_ref::<pqsync_core::Error>() {
        return core(e, remotes);
    }
    Diagnosis::new("error", err.to_string(), None)
}

/// The causes below the top of `err`, each once: a message that only
/// repeats the one above it (object_store's messages embed their source)
/// is left out.
pub fn chain(err: &anyhow::Error) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut above = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !text.is_empty() && !above.contains(&text) && !out.contains(&text) {
            out.push(text.clone());
        }
        above = text;
    }
    out
}

fn backend(e: &pqsync_backends::Error) -> Diagnosis {
    use pqsync_backends::Error as E;
    let kind = match e {
        _ if e.is_usage() => "usage",
        E::NoCredentials { .. } => "credentials",
        E::Io { .. } => "io",
        _ => "error",
    };
    let path = match e {
        E::InvalidRemote { url, .. } | E::NoCredentials { url, .. } | E::Config { url, .. } => {
            Some(url.clone())
        }
        _ => None,
    };
    Diagnosis::new(kind, e.to_string(), path)
}

fn core(e: &pqsync_core::Error, remotes: &[RemoteInfo]) -> Diagnosis {
    use pqsync_core::Error as E;
    let msg = e.to_string();
    match e {
        E::InvalidArgument { .. } => Diagnosis::new("usage", msg, None),
        E::NotManaged { url } => Diagnosis::new("not-managed", msg, Some(url.clone())),
        E::EmptySource { url } => Diagnosis::new("empty-source", msg, Some(url.clone())),
        E::Shards { .. } => Diagnosis::new("shards", msg, None),
        E::RemoteLost { url, .. } => Diagnosis::new("remote-lost", msg, Some(url.clone())),
        E::BucketNotFound { path, .. } => {
            let r = remote_of(path, remotes);
            let bucket = r.and_then(|r| r.bucket.clone()).unwrap_or_default();
            let at = at(r);
            let url = r.map_or(path.as_str(), |r| r.url.as_str());
            Diagnosis::new(
                "bucket-not-found",
                format!("bucket {bucket:?} does not exist{at}; check the bucket name in {url}, or create the bucket"),
                Some(path.clone()),
            )
        }
        E::Store { path, source, .. } => store(e, path, source, remotes),
        E::ManifestCorrupt { path, .. } => Diagnosis::new(
            "manifest-corrupt",
            format!("{msg}; rebuild it with `pqsync init --rebuild-manifest`"),
            Some(path.clone()),
        ),
        E::UnsupportedVersion { path, .. } => {
            Diagnosis::new("manifest-version", msg, Some(path.clone()))
        }
        E::UnsafePath { path, .. } => Diagnosis::new("unsafe-path", msg, Some(path.clone())),
        E::RemoteChanged { url, .. } => Diagnosis::new("remote-changed", msg, Some(url.clone())),
        E::Leased { url, .. } => Diagnosis::new("leased", msg, Some(url.clone())),
        E::Busy { path } => Diagnosis::new("busy", msg, Some(path.clone())),
        E::Io { path, .. } => Diagnosis::new("io", msg, Some(path.display().to_string())),
        _ => Diagnosis::new("error", msg, None),
    }
}

/// The remote a path or URL belongs to.
fn remote_of<'a>(path: &str, remotes: &'a [RemoteInfo]) -> Option<&'a RemoteInfo> {
    remotes
        .iter()
        .filter(|r| path == r.url || path.starts_with(&format!("{}/", r.url.trim_end_matches('/'))))
        .max_by_key(|r| r.url.len())
        .or(if remotes.len() == 1 {
            remotes.first()
        } else {
            None
        })
}

/// " at <endpoint>", when the endpoint is known.
fn at(r: Option<&RemoteInfo>) -> String {
    r.and_then(|r| r.endpoint.as_deref())
        .map(|e| format!(" at {e}"))
        .unwrap_or_default()
}

fn store(
    e: &pqsync_core::Error,
    path: &str,
    source: &object_store::Error,
    remotes: &[RemoteInfo],
) -> Diagnosis {
    let r = remote_of(path, remotes);
    let here = || Some(path.to_string());
    let endpoint = r
        .and_then(|r| r.endpoint.clone())
        .unwrap_or_else(|| path.to_string());
    let missing_credentials = r.and_then(|r| r.credentials.describe_missing());
    match e.store_code().as_deref() {
        Some("SignatureDoesNotMatch") => {
            return Diagnosis::new(
                "signature",
                format!("{endpoint} rejected the request signature for {path}: the secret key does not belong to the access key id; check AWS_SECRET_ACCESS_KEY"),
                here(),
            )
        }
        // AWS and most servers say InvalidAccessKeyId; some say
        // NotSignedUp for a key no account owns.
        Some("InvalidAccessKeyId" | "NotSignedUp") => {
            let id = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_default();
            return Diagnosis::new(
                "access-key",
                format!("{endpoint} does not know the access key id {id:?} used for {path}; check AWS_ACCESS_KEY_ID"),
                here(),
            );
        }
        _ => {}
    }
    match transport(source) {
        Some(HttpErrorKind::Connect) if missing_credentials.is_some() => {}
        Some(HttpErrorKind::Connect) => {
            return Diagnosis::new(
                "connection",
                format!(
                    "cannot connect to {endpoint} ({}); check the endpoint (--endpoint, AWS_ENDPOINT_URL) and that the server is running",
                    root_cause(source)
                ),
                here(),
            )
        }
        Some(HttpErrorKind::Timeout) if missing_credentials.is_none() => {
            let secs = r.map_or(30, |r| r.timeout.as_secs());
            return Diagnosis::new(
                "timeout",
                format!("{endpoint} did not answer within {secs} s; check the endpoint, or allow longer with --timeout"),
                here(),
            );
        }
        _ => {}
    }
    // With no credentials configured, object_store asks the instance
    // metadata service; its failure, or a store that refuses unsigned
    // requests, means there were none to find.
    let auth = matches!(
        source,
        object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. }
    );
    if let Some(m) = missing_credentials {
        if auth
            || transport(source).is_some()
            || matches!(source, object_store::Error::Generic { .. })
        {
            return Diagnosis::new("credentials", m, here());
        }
    }
    if auth {
        return Diagnosis::new(
            "credentials",
            format!("{e}; check that the credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY may use this bucket"),
            here(),
        );
    }
    Diagnosis::new("store", e.to_string(), here())
}

/// The HTTP client's error kind, when the chain holds a transport error.
fn transport(e: &(dyn StdError + 'static)) -> Option<HttpErrorKind> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>() {
            return Some(h.kind());
        }
        cur = err.source();
    }
    None
}

/// The innermost message of a chain (`Connection refused (os error 111)`).
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_printed_once() {
        let inner = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = anyhow::Error::new(inner).context("connecting to http://x: refused");
        assert_eq!(chain(&err), Vec::<String>::new());
        let err = anyhow::Error::new(std::io::Error::other("disk full")).context("writing x");
        assert_eq!(chain(&err), vec!["disk full".to_string()]);
    }
}
