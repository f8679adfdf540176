//! The crate's error type.

use std::path::PathBuf;

/// Errors from parsing or opening a remote. Every message is one line that
/// names the cause and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote string is malformed (a usage error).
    #[error("invalid remote {url:?}: {reason}")]
    InvalidRemote {
        /// The remote as given.
        url: String,
        /// What is wrong, and what was probably meant.
        reason: String,
    },
    /// An R2 jurisdiction is not one of `default`, `eu` or `fedramp` (a usage
    /// error).
    #[error("invalid R2 jurisdiction {value:?} in {origin}: expected default, eu or fedramp")]
    InvalidJurisdiction {
        /// The value as given.
        value: String,
        /// Where it was given.
        origin: JurisdictionOrigin,
    },
    /// An `http://` endpoint while plain HTTP is not allowed (a usage error).
    /// Detected when the remote is opened, before any request.
    #[error(
        "endpoint {endpoint} (from {origin}) uses plain http: set AWS_ALLOW_HTTP=true to allow it, or use an https:// endpoint"
    )]
    PlainHttp {
        /// The endpoint.
        endpoint: String,
        /// Where it came from: `--endpoint`, `AWS_ENDPOINT_URL_S3`,
        /// `AWS_ENDPOINT_URL` or `AWS_ENDPOINT`.
        origin: String,
    },
    /// No source of S3 or R2 credentials is configured and instance metadata
    /// is disabled (`AWS_EC2_METADATA_DISABLED=true`). Detected when the
    /// remote is opened, before any request.
    #[error("no credentials for {url}: tried {}; {fix}", tried.join(", "))]
    NoCredentials {
        /// The remote.
        url: String,
        /// Each source tried and why it gave nothing, for example
        /// `AWS_WEB_IDENTITY_TOKEN_FILE (not set)`.
        tried: Vec<String>,
        /// What to do about it.
        fix: String,
    },
    /// An AWS profile could not be used: a config or credentials file that
    /// cannot be read or parsed, a profile named by the remote or
    /// `--profile` that neither file has, or one whose credentials come
    /// from a source pqsync does not follow. Detected before any request.
    #[error("{reason}")]
    Profile {
        /// What is wrong and what to do, in one line.
        reason: String,
    },
    /// An environment setting pqsync reads has a value it cannot use (a
    /// usage error).
    #[error("{reason}")]
    Setting {
        /// The setting, its value, and what it takes, in one line.
        reason: String,
    },
    /// The store could not be configured (a malformed setting, for example).
    #[error("cannot open {url}: {source}")]
    Config {
        /// The remote.
        url: String,
        /// The store's error.
        #[source]
        source: object_store::Error,
    },
    /// A local remote directory could not be used.
    #[error("{}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the error is the user's to fix on the command line or in the
    /// environment ([`Error::InvalidRemote`], [`Error::InvalidJurisdiction`],
    /// [`Error::PlainHttp`], [`Error::Profile`], [`Error::Setting`]), as opposed to a failure of the store or the
    /// machine.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            Error::InvalidRemote { .. }
                | Error::InvalidJurisdiction { .. }
                | Error::PlainHttp { .. }
                | Error::Profile { .. }
                | Error::Setting { .. }
        )
    }
}

/// Where an R2 jurisdiction was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JurisdictionOrigin {
    /// The `R2_JURISDICTION` environment variable.
    Env,
    /// The `--jurisdiction` option.
    Flag,
    /// The remote's `?jurisdiction=` option.
    Url,
}

impl std::fmt::Display for JurisdictionOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JurisdictionOrigin::Env => "R2_JURISDICTION",
            JurisdictionOrigin::Flag => "--jurisdiction",
            JurisdictionOrigin::Url => "the remote's ?jurisdiction=",
        })
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
