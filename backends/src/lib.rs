//! # pqsync-backends
//!
//! Turns a remote as a user writes it (`s3://bucket/prefix`,
//! `r2://ACCOUNT_ID/bucket/prefix`, `gs://…`, `az://…`, `file:///path` or a
//! plain path) plus the standard environment variables into an
//! [`ObjectStore`](object_store::ObjectStore) and a prefix inside it.
//!
//! Two steps: [`parse_remote`] turns text into a [`Remote`] without looking
//! at the environment, and [`open`] turns a `Remote` and [`OpenOptions`]
//! into an [`OpenedRemote`]. Both report what they can before any request:
//! mistyped URLs (`s3:/bucket`), R2 remotes without their account id,
//! plain-http endpoints without `AWS_ALLOW_HTTP=true`, and S3 remotes with
//! no credentials at all. Every store [`open`] builds gives up on an
//! endpoint that does not answer within [`OpenOptions::timeout`], and can
//! tell an [`HttpObserver`] about each response and stall.
//!
//! ```
//! use pqsync_backends::{open, parse_remote, OpenOptions, Remote};
//!
//! let remote = parse_remote("r2://0123456789ABCDEF0123456789abcdef/backups/prod?jurisdiction=eu")?;
//! let Remote::R2 { account, bucket, prefix, .. } = &remote else { unreachable!() };
//! assert_eq!(account, "0123456789abcdef0123456789abcdef");
//! assert_eq!((bucket.as_str(), prefix.as_str()), ("backups", "prod"));
//! assert_eq!(
//!     remote.canonical(),
//!     "r2://0123456789abcdef0123456789abcdef/backups/prod?jurisdiction=eu"
//! );
//!
//! // `contains` compares whole prefix components.
//! let prod = parse_remote("s3://backups/prod")?;
//! assert!(prod.contains(&parse_remote("s3://backups/prod/db")?));
//! assert!(!prod.contains(&parse_remote("s3://backups/prod2")?));
//!
//! // Mistyped URLs are refused rather than taken as directory names.
//! let err = parse_remote("s3:/backups").unwrap_err();
//! assert!(err.is_usage());
//! assert!(err.to_string().contains("did you mean s3://backups?"));
//!
//! // A directory opens as a store too.
//! let dir = tempfile::tempdir().unwrap();
//! let target = dir.path().join("remote");
//! let opts = OpenOptions { create: true, ..Default::default() };
//! let opened = open(&parse_remote(target.to_str().unwrap())?, &opts)?;
//! assert_eq!(opened.url, format!("file://{}", target.display()));
//! # Ok::<(), pqsync_backends::Error>(())
//! ```
//!
//! ## Settings
//! * S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`
//!   (or web identity, container or instance credentials),
//!   `AWS_REGION`/`AWS_DEFAULT_REGION` (default `us-east-1`),
//!   `AWS_ENDPOINT_URL`, and `AWS_ALLOW_HTTP=true` for plain-http endpoints.
//!   Requests are path-style whenever an endpoint is set.
//!   `AWS_EC2_METADATA_DISABLED=true` turns the instance metadata fallback
//!   off. `~/.aws` profiles are not read.
//! * R2: the same credentials (or `R2_ACCESS_KEY_ID`/`R2_SECRET_ACCESS_KEY`);
//!   the endpoint follows from the account id and the jurisdiction
//!   (`default`, `eu` or `fedramp`; `R2_JURISDICTION`), region `auto`.
//! * GCS and Azure: the variables `object_store` reads (`GOOGLE_*`,
//!   `AZURE_*`).
//!
//! ## Crate features
//! None. S3, R2, GCS, Azure and local directories are always built in.

mod copy;
mod error;
mod http;
mod open;
mod profile;
mod remote;
mod s3;

pub use copy::{BucketCopier, CopyRequests, COPY_LIMIT, COPY_LIMIT_ENV};
pub use error::{Error, JurisdictionOrigin, Result};
pub use http::{observing_connector, HttpObserver};
pub use open::{open, CredentialSource, OpenOptions, OpenedRemote, DEFAULT_TIMEOUT};
pub use remote::{looks_like_url, parse_remote, Jurisdiction, Remote, S3Settings};

#[cfg(test)]
mod test_env;
