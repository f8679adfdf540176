//! # pqsync-backends
//!
//! Turns a remote as a user writes it (`s3://bucket/prefix`,
//! `r2://ACCOUNT/bucket/prefix`, `gs://…`, `az://…`, `file:///path` or a plain
//! path) plus the standard environment variables into an
//! [`ObjectStore`](object_store::ObjectStore) and a prefix inside it.
//!
//! ```
//! use pqsync_backends::{parse_remote, Kind};
//!
//! let spec = parse_remote("r2://0123abcd/backups/prod?jurisdiction=eu").unwrap();
//! assert_eq!(spec.kind, Kind::R2);
//! assert_eq!(spec.bucket, "backups");
//! assert_eq!(spec.prefix, "prod");
//! ```
//!
//! ## Settings
//! * S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
//!   `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL`, and
//!   `AWS_ALLOW_HTTP=true` for plain-http endpoints. Requests are path-style
//!   whenever an endpoint is set.
//! * R2: the same credentials (or `R2_ACCESS_KEY_ID`/`R2_SECRET_ACCESS_KEY`);
//!   the endpoint follows from the account id and the jurisdiction
//!   (`default`, `eu` or `fedramp`; `R2_JURISDICTION`), region `auto`.
//! * GCS and Azure: the variables `object_store` reads (`GOOGLE_*`,
//!   `AZURE_*`).
//!
//! ## Crate features
//! None.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpRequest, HttpResponse, HttpService, ReqwestConnector,
};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

/// Errors from parsing or opening a remote.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The remote string is malformed.
    #[error("invalid remote {url:?}: {reason}")]
    InvalidRemote {
        /// The remote as given.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The store could not be configured (missing credentials, bad endpoint).
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

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kind of store a remote lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Amazon S3 or any S3-compatible server.
    S3,
    /// Cloudflare R2.
    R2,
    /// Google Cloud Storage.
    Gcs,
    /// Azure Blob Storage.
    Azure,
    /// A local directory.
    File,
}

/// Which R2 jurisdiction's endpoint to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jurisdiction {
    /// The default (global) endpoint.
    #[default]
    Default,
    /// The EU jurisdiction.
    Eu,
    /// The FedRAMP jurisdiction.
    Fedramp,
}

impl std::str::FromStr for Jurisdiction {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "" | "default" => Ok(Jurisdiction::Default),
            "eu" => Ok(Jurisdiction::Eu),
            "fedramp" => Ok(Jurisdiction::Fedramp),
            other => Err(format!(
                "unknown R2 jurisdiction {other:?} (expected default, eu or fedramp)"
            )),
        }
    }
}

impl Jurisdiction {
    /// The R2 endpoint for an account in this jurisdiction.
    pub fn r2_endpoint(self, account: &str) -> String {
        match self {
            Jurisdiction::Default => format!("https://{account}.r2.cloudflarestorage.com"),
            Jurisdiction::Eu => format!("https://{account}.eu.r2.cloudflarestorage.com"),
            Jurisdiction::Fedramp => format!("https://{account}.fedramp.r2.cloudflarestorage.com"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Jurisdiction::Default => "default",
            Jurisdiction::Eu => "eu",
            Jurisdiction::Fedramp => "fedramp",
        }
    }
}

/// A parsed remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    /// Store kind.
    pub kind: Kind,
    /// Bucket or container (empty for [`Kind::File`]).
    pub bucket: String,
    /// Prefix inside the bucket, without leading or trailing `/`.
    pub prefix: String,
    /// R2 account id.
    pub account: Option<String>,
    /// R2 jurisdiction given in the URL (`?jurisdiction=eu`).
    pub jurisdiction: Option<Jurisdiction>,
    /// Directory of a [`Kind::File`] remote.
    pub path: Option<PathBuf>,
}

impl RemoteSpec {
    /// The canonical form, which names the same remote when parsed again.
    pub fn canonical(&self) -> String {
        let join = |scheme: &str, head: &str| {
            if self.prefix.is_empty() {
                format!("{scheme}://{head}")
            } else {
                format!("{scheme}://{head}/{}", self.prefix)
            }
        };
        match self.kind {
            Kind::S3 => join("s3", &self.bucket),
            Kind::Gcs => join("gs", &self.bucket),
            Kind::Azure => join("az", &self.bucket),
            Kind::R2 => {
                let base = join(
                    "r2",
                    &format!("{}/{}", self.account.as_deref().unwrap_or(""), self.bucket),
                );
                match self.jurisdiction {
                    Some(j) if j != Jurisdiction::Default => {
                        format!("{base}?jurisdiction={}", j.as_str())
                    }
                    _ => base,
                }
            }
            Kind::File => format!(
                "file://{}",
                self.path
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ),
        }
    }
}

/// Parses a remote. Plain paths are made absolute against the current
/// directory.
///
/// # Errors
/// [`Error::InvalidRemote`] naming what is wrong.
pub fn parse_remote(input: &str) -> Result<RemoteSpec> {
    let invalid = |reason: &str| Error::InvalidRemote {
        url: input.to_string(),
        reason: reason.to_string(),
    };
    let Some((scheme, rest)) = input.split_once("://") else {
        if input.is_empty() {
            return Err(invalid("empty remote"));
        }
        let path = std::path::absolute(input).map_err(|e| invalid(&e.to_string()))?;
        return Ok(file_spec(path));
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let mut jurisdiction = None;
    if let Some(q) = query {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("jurisdiction", v)) => {
                    jurisdiction = Some(v.parse::<Jurisdiction>().map_err(|e| invalid(&e))?)
                }
                _ => return Err(invalid(&format!("unknown option {pair:?}"))),
            }
        }
    }
    let kind = match scheme {
        "s3" | "s3a" => Kind::S3,
        "r2" => Kind::R2,
        "gs" | "gcs" => Kind::Gcs,
        "az" | "azure" | "abfs" => Kind::Azure,
        "file" => {
            if !rest.starts_with('/') {
                return Err(invalid(
                    "file:// remotes need an absolute path, as in file:///srv/db",
                ));
            }
            return Ok(file_spec(PathBuf::from(rest)));
        }
        other => {
            return Err(invalid(&format!(
                "unknown scheme {other:?} (expected s3, r2, gs, az or file)"
            )))
        }
    };
    if jurisdiction.is_some() && kind != Kind::R2 {
        return Err(invalid("jurisdiction applies to r2:// remotes only"));
    }
    let mut parts = rest.split('/').filter(|p| !p.is_empty());
    let account = if kind == Kind::R2 {
        Some(
            parts
                .next()
                .ok_or_else(|| invalid("expected r2://ACCOUNT_ID/bucket[/prefix]"))?
                .to_string(),
        )
    } else {
        None
    };
    let bucket = parts
        .next()
        .ok_or_else(|| invalid("missing bucket name"))?
        .to_string();
    let prefix: Vec<&str> = parts.collect();
    if prefix.iter().any(|p| *p == "." || *p == "..") {
        return Err(invalid("`.` and `..` are not allowed in a prefix"));
    }
    Ok(RemoteSpec {
        kind,
        bucket,
        prefix: prefix.join("/"),
        account,
        jurisdiction,
        path: None,
    })
}

fn file_spec(path: PathBuf) -> RemoteSpec {
    RemoteSpec {
        kind: Kind::File,
        bucket: String::new(),
        prefix: String::new(),
        account: None,
        jurisdiction: None,
        path: Some(path),
    }
}

/// How to open a remote beyond what its URL says.
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// Endpoint override (`--endpoint`), taking precedence over
    /// `AWS_ENDPOINT_URL` and the R2 endpoint.
    pub endpoint: Option<String>,
    /// R2 jurisdiction (`--jurisdiction`); else the URL's, else
    /// `R2_JURISDICTION`, else the default.
    pub jurisdiction: Option<Jurisdiction>,
    /// Create a local remote directory that does not exist yet (for pushes).
    pub create: bool,
    /// Told the status of every HTTP response (to adapt concurrency to a
    /// store that answers 429 or 503).
    pub status_observer: Option<StatusObserver>,
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("endpoint", &self.endpoint)
            .field("jurisdiction", &self.jurisdiction)
            .field("create", &self.create)
            .field("status_observer", &self.status_observer.is_some())
            .finish()
    }
}

/// Receives the status code of every HTTP response a store gets.
pub type StatusObserver = Arc<dyn Fn(u16) + Send + Sync>;

/// An HTTP connector that reports every response status to `observer`,
/// wrapping object_store's default (reqwest) client.
pub fn observing_connector(observer: StatusObserver) -> impl HttpConnector {
    ObservingConnector(observer)
}

struct ObservingConnector(StatusObserver);

impl std::fmt::Debug for ObservingConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObservingConnector")
    }
}

impl HttpConnector for ObservingConnector {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        let inner = ReqwestConnector::default().connect(options)?;
        Ok(HttpClient::new(Observing {
            inner,
            observer: self.0.clone(),
        }))
    }
}

struct Observing {
    inner: HttpClient,
    observer: StatusObserver,
}

impl std::fmt::Debug for Observing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observing")
    }
}

#[async_trait::async_trait]
impl HttpService for Observing {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let r = self.inner.execute(req).await;
        if let Ok(resp) = &r {
            (self.observer)(resp.status().as_u16());
        }
        r
    }
}

/// An opened remote.
#[derive(Clone)]
pub struct OpenedRemote {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix inside the store.
    pub prefix: String,
    /// Canonical URL, used in messages and as the key of per-remote state.
    pub url: String,
    /// Whether the store keeps object attributes (content type, metadata).
    pub supports_attributes: bool,
    /// The same store's low-level multipart API, where it has one; lets
    /// interrupted large uploads resume part by part.
    pub multipart: Option<Arc<dyn MultipartStore>>,
}

impl std::fmt::Debug for OpenedRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedRemote")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("supports_attributes", &self.supports_attributes)
            .field("multipart", &self.multipart.is_some())
            .finish()
    }
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: 10,
        retry_timeout: Duration::from_secs(180),
    }
}

/// Opens a remote.
///
/// # Errors
/// [`Error::Config`] for missing or invalid settings, [`Error::Io`] for an
/// unusable local directory.
pub fn open(spec: &RemoteSpec, opts: &OpenOptions) -> Result<OpenedRemote> {
    let mut spec = spec.clone();
    if spec.kind == Kind::R2 {
        let env_j = std::env::var("R2_JURISDICTION")
            .ok()
            .map(|v| v.parse::<Jurisdiction>())
            .transpose()
            .map_err(|reason| Error::InvalidRemote {
                url: "R2_JURISDICTION".into(),
                reason,
            })?;
        spec.jurisdiction = opts.jurisdiction.or(spec.jurisdiction).or(env_j);
    }
    let url = spec.canonical();
    let config = |source| Error::Config {
        url: url.clone(),
        source,
    };
    let env_endpoint = std::env::var("AWS_ENDPOINT_URL")
        .ok()
        .or_else(|| std::env::var("AWS_ENDPOINT").ok())
        .filter(|e| !e.is_empty());
    let (store, multipart): (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) = match spec.kind {
        Kind::S3 => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&spec.bucket)
                .with_retry(retry_config());
            if let Some(o) = &opts.status_observer {
                b = b.with_http_connector(ObservingConnector(o.clone()));
            }
            if std::env::var("AWS_REGION").is_err() && std::env::var("AWS_DEFAULT_REGION").is_err()
            {
                b = b.with_region("us-east-1");
            }
            if let Some(ep) = opts.endpoint.clone().or(env_endpoint) {
                b = b.with_endpoint(ep).with_virtual_hosted_style_request(false);
            }
            both(b.build().map_err(config)?)
        }
        Kind::R2 => {
            let account = spec.account.clone().unwrap_or_default();
            let endpoint = opts
                .endpoint
                .clone()
                .unwrap_or_else(|| spec.jurisdiction.unwrap_or_default().r2_endpoint(&account));
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&spec.bucket)
                .with_region("auto")
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_retry(retry_config());
            if let Some(o) = &opts.status_observer {
                b = b.with_http_connector(ObservingConnector(o.clone()));
            }
            if let (Ok(k), Ok(s)) = (
                std::env::var("R2_ACCESS_KEY_ID"),
                std::env::var("R2_SECRET_ACCESS_KEY"),
            ) {
                b = b.with_access_key_id(k).with_secret_access_key(s);
            }
            both(b.build().map_err(config)?)
        }
        Kind::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&spec.bucket)
                .with_retry(retry_config());
            if let Some(o) = &opts.status_observer {
                b = b.with_http_connector(ObservingConnector(o.clone()));
            }
            both(b.build().map_err(config)?)
        }
        Kind::Azure => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_container_name(&spec.bucket)
                .with_retry(retry_config());
            if let Some(o) = &opts.status_observer {
                b = b.with_http_connector(ObservingConnector(o.clone()));
            }
            both(b.build().map_err(config)?)
        }
        Kind::File => {
            let path = spec.path.clone().expect("file remotes have a path");
            if opts.create {
                std::fs::create_dir_all(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            let fs = if path.is_dir() {
                LocalFileSystem::new_with_prefix(&path).map_err(config)?
            } else {
                // Nothing there yet: reads find no manifest, which callers
                // report as "not managed by pqsync".
                LocalFileSystem::new_with_prefix("/")
                    .map_err(config)?
                    .with_automatic_cleanup(true)
            };
            let (fs, prefix) = if path.is_dir() {
                (fs.with_automatic_cleanup(true), String::new())
            } else {
                (
                    fs,
                    path.display()
                        .to_string()
                        .trim_start_matches('/')
                        .to_string(),
                )
            };
            return Ok(OpenedRemote {
                store: Arc::new(fs),
                prefix,
                url,
                supports_attributes: false,
                multipart: None,
            });
        }
    };
    Ok(OpenedRemote {
        store,
        prefix: spec.prefix.clone(),
        url,
        supports_attributes: true,
        multipart: Some(multipart),
    })
}

/// One store behind both of its interfaces.
fn both<S: ObjectStore + MultipartStore>(
    store: S,
) -> (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) {
    let store = Arc::new(store);
    (store.clone(), store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let s = parse_remote("s3://bucket/a/b/").unwrap();
        assert_eq!(
            (s.kind, s.bucket.as_str(), s.prefix.as_str()),
            (Kind::S3, "bucket", "a/b")
        );
        assert_eq!(s.canonical(), "s3://bucket/a/b");
        let s = parse_remote("s3://bucket").unwrap();
        assert_eq!(s.prefix, "");
        assert_eq!(s.canonical(), "s3://bucket");
        let s = parse_remote("r2://acct/bkt/prod").unwrap();
        assert_eq!(s.account.as_deref(), Some("acct"));
        assert_eq!(s.canonical(), "r2://acct/bkt/prod");
        let s = parse_remote("r2://acct/bkt?jurisdiction=fedramp").unwrap();
        assert_eq!(s.jurisdiction, Some(Jurisdiction::Fedramp));
        assert_eq!(parse_remote(&s.canonical()).unwrap(), s);
        assert_eq!(parse_remote("gs://b/p").unwrap().kind, Kind::Gcs);
        assert_eq!(parse_remote("az://c/p").unwrap().kind, Kind::Azure);
        let f = parse_remote("file:///srv/db").unwrap();
        assert_eq!(f.path, Some(PathBuf::from("/srv/db")));
        assert_eq!(f.canonical(), "file:///srv/db");
        let rel = parse_remote("backups/db").unwrap();
        assert!(rel.path.unwrap().is_absolute());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "ftp://x/y",
            "s3://",
            "r2://acct",
            "r2://",
            "file://relative",
            "s3://b/../x",
            "s3://b/p?jurisdiction=eu",
            "r2://a/b?jurisdiction=mars",
            "",
        ] {
            assert!(parse_remote(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn r2_endpoints_follow_jurisdiction() {
        assert_eq!(
            Jurisdiction::Default.r2_endpoint("abc"),
            "https://abc.r2.cloudflarestorage.com"
        );
        assert_eq!(
            Jurisdiction::Eu.r2_endpoint("abc"),
            "https://abc.eu.r2.cloudflarestorage.com"
        );
        assert_eq!(
            Jurisdiction::Fedramp.r2_endpoint("abc"),
            "https://abc.fedramp.r2.cloudflarestorage.com"
        );
    }

    #[test]
    fn opens_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("remote");
        let spec = parse_remote(target.to_str().unwrap()).unwrap();
        let opened = open(
            &spec,
            &OpenOptions {
                create: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(target.is_dir());
        assert!(!opened.supports_attributes);
        assert_eq!(opened.prefix, "");
    }
}
