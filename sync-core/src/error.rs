//! The error type of `pqsync-core`.
//!
//! Every variant names the path it concerns, and every error knows whether it
//! is worth retrying ([`Error::is_retryable`]): the classification is made
//! where the error is created, not guessed later from its message.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A local file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
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

    /// The remote has no pqsync manifest where one is required.
    #[error("{url} is not managed by pqsync: no _meta/manifest.json there (push to it first)")]
    NotManaged {
        /// The remote URL.
        url: String,
    },

    /// An object-store request failed.
    #[error("{path}: {source}")]
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

    /// A request was refused because of the engine's own configuration.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Wraps an object-store error, classifying it as retryable or permanent.
    pub fn store(path: impl Into<String>, source: object_store::Error) -> Self {
        let retryable = store_error_is_retryable(&source);
        Error::Store {
            path: path.into(),
            retryable,
            source,
        }
    }

    /// Whether a retry of the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Store { retryable, .. } | Error::Mismatch { retryable, .. } => *retryable,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
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
}

/// Classifies an object-store error. The HTTP client inside `object_store`
/// has already retried 5xx/429 responses by the time an error reaches us, but
/// errors raised while streaming a body (resets, truncation) are not retried
/// there, and they surface as `Generic`.
fn store_error_is_retryable(e: &object_store::Error) -> bool {
    use object_store::Error as E;
    match e {
        E::NotFound { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. }
        | E::NotModified { .. }
        | E::NotImplemented { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::UnknownConfigurationKey { .. } => false,
        E::Generic { source, .. } => {
            let msg = source.to_string();
            // Permanent HTTP statuses that object_store reports generically.
            !(msg.contains("403") || msg.contains("Forbidden") || msg.contains("400 Bad Request"))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let nf = Error::store(
            "s3://b/x",
            object_store::Error::NotFound {
                path: "x".into(),
                source: "gone".into(),
            },
        );
        assert!(!nf.is_retryable());
        assert!(nf.is_not_found());
        let generic = Error::store(
            "s3://b/x",
            object_store::Error::Generic {
                store: "S3",
                source: "connection reset by peer".into(),
            },
        );
        assert!(generic.is_retryable());
        let forbidden = Error::store(
            "s3://b/x",
            object_store::Error::Generic {
                store: "S3",
                source: "Client error with status 403 Forbidden".into(),
            },
        );
        assert!(!forbidden.is_retryable());
    }
}
