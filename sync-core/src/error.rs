//! The error type of `pqsync-core`.
//!
//! Every variant names the path or remote it concerns, and every error knows
//! whether it is worth retrying ([`Error::is_retryable`]). That class is
//! decided from the error's structure where the error is created (the
//! `object_store` error kind, the HTTP client's error kind, the I/O error
//! kind), never from its message.
//!
//! Messages are one line and do not repeat their source: a store error says
//! what failed in a few words, and the full chain stays available through
//! [`std::error::Error::source`] for a verbose report.

use std::error::Error as StdError;
use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A local file or directory could not be read or written.
    #[error("{}: {}", path.display(), io_summary(source))]
    Io {
        /// The local path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A manifest could not be parsed or failed validation.
    #[error("corrupt manifest {path}: {reason}")]
    ManifestCorrupt {
        /// Where the manifest was read from.
        path: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A manifest in a format version this pqsync does not know (written by
    /// a newer one).
    #[error("corrupt manifest {path}: unsupported version {version} (this pqsync reads version 1; upgrade pqsync)")]
    UnsupportedVersion {
        /// Where the manifest was read from.
        path: String,
        /// The version it declares.
        version: String,
    },

    /// A manifest or tree names a path that is unsafe to write.
    #[error("unsafe path {path:?} in {origin}: {reason}")]
    UnsafePath {
        /// The offending path, as given.
        path: String,
        /// Where the path came from (a manifest, the local tree, ...).
        origin: String,
        /// Why it is refused.
        reason: String,
    },

    /// A local file cannot be written because something else is in its
    /// place (a directory where the file goes, or a file where one of its
    /// directories goes).
    #[error("{path}: {reason}")]
    PathObstructed {
        /// The file that could not be written.
        path: String,
        /// What is in the way.
        reason: String,
    },

    /// A snapshot repository cannot do what was asked: it is not one, its
    /// format is unknown, a snapshot is missing or damaged, ... The reason
    /// names the fix.
    #[error("{url}: {reason}")]
    Repository {
        /// The repository, or the object in it, concerned.
        url: String,
        /// What is wrong, and what to do about it.
        reason: String,
    },

    /// The remote has no pqsync manifest where one is required.
    #[error("{url} is not managed by pqsync: no _meta/manifest.json there (push to it first)")]
    NotManaged {
        /// The remote URL.
        url: String,
    },

    /// A merge of shard records that cannot go ahead: a shard has not
    /// finished, or the destination changed since the shards ran.
    #[error("{reason}")]
    Shards {
        /// What is wrong, and what to do about it.
        reason: String,
    },

    /// A mirror's source holds no objects and no manifest: mirroring it
    /// would empty the destination.
    #[error("{url} holds no objects and no pqsync manifest, so mirroring it would delete everything at the destination; check the source URL (nothing was changed)")]
    EmptySource {
        /// The source URL.
        url: String,
    },

    /// The remote has no manifest, though the local directory holds a base
    /// for it: it lost its data rather than deleted it, and nothing local
    /// is deleted because of it.
    #[error("{url} has no manifest, though this directory last synced {known} files with it: the remote lost its data, it did not delete them; nothing was changed here. Restore it from this directory with `pqsync push {url}`")]
    RemoteLost {
        /// The remote.
        url: String,
        /// Files the base knew.
        known: usize,
    },

    /// The store says the bucket (or container) does not exist.
    #[error("{path}: the bucket does not exist (NoSuchBucket); check the bucket name in the remote URL, or create the bucket")]
    BucketNotFound {
        /// The remote path whose request failed.
        path: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },

    /// An object-store request failed.
    #[error("{path}: {}", store_summary(source))]
    Store {
        /// The remote path involved (URL form).
        path: String,
        /// Whether a retry may succeed.
        retryable: bool,
        /// The underlying error.
        #[source]
        source: object_store::Error,
    },

    /// Transferred bytes did not match the manifest entry.
    #[error("{path}: {what} mismatch: expected {expected}, got {actual}")]
    Mismatch {
        /// The file concerned.
        path: String,
        /// `"size"` or `"hash"`.
        what: &'static str,
        /// The manifest's value.
        expected: String,
        /// What was observed.
        actual: String,
        /// Whether a retry may succeed (a short read may; a wrong hash over
        /// the full size means the source itself is corrupt).
        retryable: bool,
    },

    /// A local file changed between the scan and the transfer.
    #[error("{path}: changed during the run ({detail}); left untouched, run again to pick it up")]
    ChangedDuringRun {
        /// The file concerned.
        path: String,
        /// What changed.
        detail: String,
    },

    /// A conditional write failed: another writer changed the object.
    #[error("{path}: changed by another writer since it was read")]
    Precondition {
        /// The object.
        path: String,
    },

    /// Another writer committed changes that overlap this run's.
    #[error("remote changed during {operation}: another writer also changed {} at {url}; nothing of this run was committed; see `pqsync status`, resolve, and run again", paths.join(", "))]
    RemoteChanged {
        /// `push`, `sync` or `mirror`.
        operation: &'static str,
        /// The remote.
        url: String,
        /// Paths both writers changed differently.
        paths: Vec<String>,
    },

    /// Other writers kept committing while this run tried to: every
    /// compare-and-swap attempt lost.
    #[error("{url}: gave up committing after {attempts} attempts lost to other writers' commits; run again")]
    CommitContention {
        /// The remote.
        url: String,
        /// Attempts made.
        attempts: u32,
    },

    /// The remote is locked by another writer's lease.
    #[error("{url} is being written by {holder} (lease until {until}); try again later, or pass --force if that writer is gone")]
    Leased {
        /// The remote.
        url: String,
        /// Who holds the lease.
        holder: String,
        /// When it expires.
        until: String,
    },

    /// An option or argument value is not valid.
    #[error("invalid {argument}: {reason}")]
    InvalidArgument {
        /// The option or value concerned (`max-delete`, `strategy`, `glob`, ...).
        argument: &'static str,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// A plan was handed to an engine other than the one that made it.
    #[error("this plan was made by another engine; plan and execute with the same engine")]
    ForeignPlan,

    /// Another pqsync run is using the directory.
    #[error(
        "another pqsync run is using {path}; wait for it to finish (or stop it), then run again"
    )]
    Busy {
        /// The directory.
        path: String,
    },

    /// A worker task panicked or was cancelled.
    #[error("{task} failed: {source}")]
    TaskFailed {
        /// What the task was doing.
        task: String,
        /// Why it ended.
        #[source]
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an object-store error, classifying it as retryable or permanent
    /// (and recognising a missing bucket).
    pub fn store(path: impl Into<String>, source: object_store::Error) -> Self {
        let path = path.into();
        if is_missing_bucket(&source) {
            return Error::BucketNotFound { path, source };
        }
        let retryable = store_error_is_retryable(&source);
        Error::Store {
            path,
            retryable,
            source,
        }
    }

    /// A worker task that did not finish.
    pub(crate) fn task(task: impl Into<String>, source: tokio::task::JoinError) -> Self {
        Error::TaskFailed {
            task: task.into(),
            source,
        }
    }

    /// Whether a retry of the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { retryable, .. } | Error::Mismatch { retryable, .. } => *retryable,
            Error::Io { source, .. } => io_is_transient(source.kind()),
            _ => false,
        }
    }

    /// Whether this is a "not found" error from a store.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Store {
                source: object_store::Error::NotFound { .. },
                ..
            }
        )
    }

    /// The store's error code (S3's `<Code>`, such as
    /// `SignatureDoesNotMatch` or `InvalidAccessKeyId`), when the failed
    /// request's response carried one.
    pub fn store_code(&self) -> Option<String> {
        match self {
            Error::Store { source, .. } | Error::BucketNotFound { source, .. } => {
                s3_error_code(source)
            }
            _ => None,
        }
    }
}

/// Whether an I/O error of this kind may go away on its own.
fn io_is_transient(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::Interrupted
            | K::TimedOut
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::BrokenPipe
            | K::UnexpectedEof
    )
}

/// Classifies an object-store error from its structure. The HTTP client
/// inside `object_store` has already retried 5xx and 429 responses and
/// connection errors, within its budget, by the time an error reaches us;
/// a whole-transfer retry is worth it for:
/// * a transport failure (an `HttpError` anywhere in the chain: a body cut
///   off mid-stream, a reset during an upload) or a transient I/O error;
/// * a response whose S3 error code says the store is busy or failing
///   (`SlowDown`, `InternalError`, ...) after the client gave up on it;
/// * a failure that carries neither (a response the client could not
///   parse, a proxy's error page), as before the client's own retries
///   were known.
///
/// The dedicated kinds (not found, permission denied, precondition, ...)
/// and any other S3 error code (`InvalidArgument`, `AccessDenied`, ...) are
/// permanent.
fn store_error_is_retryable(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::Generic { source, .. } => match transport_failure(source.as_ref()) {
            Some(transient) => transient,
            None => s3_error_code(e).is_none_or(|c| TRANSIENT_CODES.contains(&c.as_str())),
        },
        E::JoinError { .. } => true,
        _ => false,
    }
}

/// S3 error codes of a store that is busy or failing, not of a bad request.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "RequestTimeout",
    "Throttling",
    "ThrottlingException",
    "TooManyRequests",
];

/// What the chain from `e` down says about a transport failure: `Some(true)`
/// for an HTTP transport error or a transient I/O error, `Some(false)` for
/// another I/O error (a full disk), `None` when it holds neither.
fn transport_failure(e: &(dyn StdError + 'static)) -> Option<bool> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<object_store::client::HttpError>() {
            return Some(true);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io_is_transient(io.kind()));
        }
        cur = err.source();
    }
    None
}

/// The `<Code>` of an S3-style XML error body carried in the error chain.
/// `object_store` keeps the body only inside its messages, so this is the
/// one place that reads one: the code is the protocol's own structured
/// field, and is used to explain a failure, never to decide a retry.
fn s3_error_code(e: &object_store::Error) -> Option<String> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if let Some(code) = xml_field(&text, "Code") {
            return Some(code.to_string());
        }
        cur = err.source();
    }
    None
}

fn xml_field<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(text[start..end].trim()).filter(|c| !c.is_empty())
}

fn is_missing_bucket(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::NotFound { .. } | object_store::Error::Generic { .. }
    ) && s3_error_code(e).as_deref() == Some("NoSuchBucket")
}

/// A few words for an object-store error, without its source chain.
fn store_summary(e: &object_store::Error) -> String {
    use object_store::Error as E;
    let code = s3_error_code(e);
    let with_code = |what: &str| match &code {
        Some(c) => format!("{what} ({c})"),
        None => what.to_string(),
    };
    match e {
        E::NotFound { .. } => with_code("not found"),
        E::PermissionDenied { .. } => with_code("permission denied (HTTP 403)"),
        E::Unauthenticated { .. } => with_code("not authenticated (HTTP 401)"),
        E::Precondition { .. } => "precondition failed".into(),
        E::AlreadyExists { .. } => "already exists".into(),
        E::NotModified { .. } => "not modified".into(),
        E::NotSupported { .. } | E::NotImplemented { .. } => "not supported by this store".into(),
        E::InvalidPath { .. } => "invalid object path".into(),
        E::JoinError { .. } => "a store task failed".into(),
        E::Generic { source, .. } => match &code {
            Some(c) => format!("the store answered {c}"),
            None => root_cause(source.as_ref()),
        },
        _ => e.to_string(),
    }
}

/// The innermost message of a chain: the cause a person can act on
/// (`Connection refused (os error 111)`), not the layers that wrapped it.
fn root_cause(e: &(dyn StdError + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let text = last.to_string();
    match text.split_once('\n') {
        Some((first, _)) => first.to_string(),
        None => text,
    }
}

fn io_summary(e: &std::io::Error) -> String {
    // An I/O error that wraps another (a store's) shows the innermost cause.
    match e.get_ref() {
        Some(inner) if inner.source().is_some() => root_cause(inner),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_error(kind: object_store::client::HttpErrorKind) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: Box::new(object_store::client::HttpError::new(
                kind,
                std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer"),
            )),
        }
    }

    #[test]
    fn classification_follows_structure_not_text() {
        let nf = Error::store(
            "s3://b/x",
            object_store::Error::NotFound {
                path: "x".into(),
                source: "gone".into(),
            },
        );
        assert!(!nf.is_retryable());
        assert!(nf.is_not_found());
        for kind in [
            object_store::client::HttpErrorKind::Request,
            object_store::client::HttpErrorKind::Timeout,
            object_store::client::HttpErrorKind::Decode,
        ] {
            assert!(Error::store("s3://b/x", http_error(kind)).is_retryable());
        }
        // A response the client gave up on: the store's code decides.
        let generic = |body: &str| {
            Error::store(
                "s3://b/x",
                object_store::Error::Generic {
                    store: "S3",
                    source: body.to_string().into(),
                },
            )
        };
        assert!(generic("503: <Error><Code>SlowDown</Code></Error>").is_retryable());
        assert!(!generic("400: <Error><Code>InvalidArgument</Code></Error>").is_retryable());
        assert!(generic("502 Bad Gateway: <html>proxy</html>").is_retryable());
        let denied = Error::store(
            "s3://b/x",
            object_store::Error::PermissionDenied {
                path: "x".into(),
                source: "Server returned non-2xx status code: 403 Forbidden".into(),
            },
        );
        assert!(!denied.is_retryable());
        let disk = Error::store(
            "file:///r/x",
            object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "no space left on device",
                )),
            },
        );
        assert!(!disk.is_retryable());
    }

    #[test]
    fn store_codes_and_missing_buckets() {
        let body = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        let e = Error::store(
            "s3://nope/prefix/_meta/manifest.json",
            object_store::Error::NotFound {
                path: "prefix/_meta/manifest.json".into(),
                source: body.into(),
            },
        );
        assert!(matches!(e, Error::BucketNotFound { .. }), "{e}");
        assert_eq!(e.store_code().as_deref(), Some("NoSuchBucket"));
        let sig = Error::store(
            "s3://b/x",
            object_store::Error::PermissionDenied {
                path: "x".into(),
                source: "403 Forbidden: <Error><Code>SignatureDoesNotMatch</Code></Error>".into(),
            },
        );
        assert_eq!(sig.store_code().as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(
            sig.to_string(),
            "s3://b/x: permission denied (HTTP 403) (SignatureDoesNotMatch)"
        );
    }

    #[test]
    fn messages_do_not_repeat_their_source() {
        let e = Error::store(
            "s3://b/x",
            http_error(object_store::client::HttpErrorKind::Connect),
        );
        let shown = e.to_string();
        assert_eq!(shown, "s3://b/x: reset by peer");
    }
}
