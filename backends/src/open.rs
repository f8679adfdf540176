//! Opening a parsed remote as a store.

use std::sync::Arc;
use std::time::Duration;

use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::local::LocalFileSystem;
use object_store::multipart::MultipartStore;
use object_store::{ClientConfigKey, ObjectStore};

use crate::copy::BucketCopier;
use crate::error::{Error, Result};
use crate::http::{Budget, Connector, HttpObserver};
use crate::remote::{Jurisdiction, Remote};
use crate::s3;

/// The default of [`OpenOptions::timeout`]: 30 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to open a remote beyond what its URL says.
#[derive(Clone)]
pub struct OpenOptions {
    /// Endpoint override (`--endpoint`) for S3 and R2, taking precedence
    /// over `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, `AWS_ENDPOINT` and the
    /// R2 endpoint.
    pub endpoint: Option<String>,
    /// R2 jurisdiction (`--jurisdiction`); else the URL's, else
    /// `R2_JURISDICTION`, else the default.
    pub jurisdiction: Option<Jurisdiction>,
    /// The AWS profile for S3 and R2 remotes that do not name their own
    /// (`--profile`); its keys win over the environment's.
    pub profile: Option<String>,
    /// Create a local remote directory that does not exist yet (for pushes).
    pub create: bool,
    /// How long a request to an endpoint that does not answer may take to
    /// fail, retries included (`--timeout`; default [`DEFAULT_TIMEOUT`],
    /// values under a second count as a second). For S3, R2, GCS and Azure
    /// it becomes:
    ///
    /// * a connect timeout of `min(5 s, timeout)`;
    /// * a stall timeout of `timeout / 4`: an attempt fails when no response
    ///   has come that long after it was sent, or when its response body has
    ///   delivered nothing for that long while being read. A request body
    ///   adds one second per 32 KiB to the first limit, so an upload going
    ///   at 32 KiB/s or faster is not mistaken for a silent server;
    /// * no retry starts after `timeout * 2 / 3` (backoff from 100 ms,
    ///   doubling, at most 15 s; at most 10 retries).
    ///
    /// Against a server that accepts connections and never answers, a
    /// bodiless request therefore makes attempts of `timeout / 4` each
    /// (7.5 s at the default) until `timeout * 2 / 3` (20 s) has passed: the
    /// third attempt ends at about `3/4 timeout` plus backoff (≈23 s), under
    /// `timeout`. There is no whole-request deadline: a transfer that keeps
    /// moving is never cut, however long it takes. This replaces the
    /// request, connect and read timeouts the environment may set
    /// (`AWS_TIMEOUT`, `AWS_CONNECT_TIMEOUT`, `AWS_READ_TIMEOUT`, and their
    /// `GOOGLE_`/`AZURE_` forms).
    pub timeout: Duration,
    /// Told about every HTTP response and stalled request (to adapt
    /// concurrency to a store that answers 429 or 503, or to say which
    /// endpoint does not answer).
    pub observer: Option<Arc<dyn HttpObserver>>,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            endpoint: None,
            jurisdiction: None,
            profile: None,
            create: false,
            timeout: DEFAULT_TIMEOUT,
            observer: None,
        }
    }
}

impl std::fmt::Debug for OpenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenOptions")
            .field("endpoint", &self.endpoint)
            .field("jurisdiction", &self.jurisdiction)
            .field("profile", &self.profile)
            .field("create", &self.create)
            .field("timeout", &self.timeout)
            .field("observer", &self.observer.is_some())
            .finish()
    }
}

/// Where an opened store's credentials come from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialSource {
    /// Keys from environment variables.
    Static {
        /// The variables, as `AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY` or
        /// `R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY`.
        variables: &'static str,
    },
    /// The keys of an AWS profile.
    Profile {
        /// The profile.
        name: String,
        /// The file holding its keys.
        file: std::path::PathBuf,
    },
    /// A web identity token (`AWS_WEB_IDENTITY_TOKEN_FILE` with
    /// `AWS_ROLE_ARN`) exchanged with STS.
    WebIdentity,
    /// The container credentials endpoint
    /// (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, or
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` with
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`).
    Container,
    /// The instance metadata service, asked on the first request because
    /// nothing else was configured.
    InstanceMetadata {
        /// The metadata endpoint (`AWS_METADATA_ENDPOINT`, else
        /// `http://169.254.169.254`).
        endpoint: String,
        /// The sources tried before it, each with why it gave nothing, as
        /// `AWS_WEB_IDENTITY_TOKEN_FILE (not set)`.
        tried: Vec<String>,
        /// What to do when it gives nothing either.
        fix: String,
    },
    /// Requests are not signed (`AWS_SKIP_SIGNATURE=true`).
    Unsigned,
    /// Whatever object_store finds for GCS or Azure (`GOOGLE_*`, `AZURE_*`,
    /// metadata services).
    Ambient,
    /// None needed (a local directory).
    None,
}

impl CredentialSource {
    /// For [`CredentialSource::InstanceMetadata`], the one-line message to
    /// show when a request failed because no credentials could be obtained:
    /// `no credentials found: tried AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    /// (not set), …, instance metadata at http://169.254.169.254 (gave
    /// none); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY`. `None` for
    /// every other source.
    pub fn describe_missing(&self) -> Option<String> {
        match self {
            CredentialSource::InstanceMetadata {
                endpoint,
                tried,
                fix,
            } => Some(format!(
                "no credentials found: tried {}, instance metadata at {endpoint} (gave none); {fix}",
                tried.join(", ")
            )),
            _ => None,
        }
    }
}

impl std::fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Static { variables } => f.write_str(variables),
            CredentialSource::Profile { name, file } => {
                write!(f, "AWS profile {name:?} in {}", file.display())
            }
            CredentialSource::WebIdentity => {
                f.write_str("web identity (AWS_WEB_IDENTITY_TOKEN_FILE)")
            }
            CredentialSource::Container => f.write_str("container credentials"),
            CredentialSource::InstanceMetadata { endpoint, .. } => {
                write!(f, "instance metadata at {endpoint}")
            }
            CredentialSource::Unsigned => f.write_str("none (AWS_SKIP_SIGNATURE=true)"),
            CredentialSource::Ambient => f.write_str("the environment"),
            CredentialSource::None => f.write_str("none"),
        }
    }
}

/// An opened remote.
#[derive(Clone)]
pub struct OpenedRemote {
    /// The store.
    pub store: Arc<dyn ObjectStore>,
    /// Prefix inside the store.
    pub prefix: String,
    /// Canonical URL (with the R2 jurisdiction in force), used in messages
    /// and as the key of per-remote state.
    pub url: String,
    /// Whether the store keeps object attributes (content type, metadata).
    pub supports_attributes: bool,
    /// The same store's low-level multipart API, where it has one; lets
    /// interrupted large uploads resume part by part.
    pub multipart: Option<Arc<dyn MultipartStore>>,
    /// Where the store's credentials come from.
    pub credentials: CredentialSource,
    /// The endpoint requests go to (`https://s3.us-east-1.amazonaws.com`,
    /// the `--endpoint`, the R2 endpoint, …), for messages such as "cannot
    /// connect to …"; `None` for a directory, or an Azure store whose
    /// account is not known yet.
    pub endpoint: Option<String>,
    /// For S3 and R2: copies into the bucket from the store's other
    /// buckets (same endpoint and credentials) without the bytes leaving
    /// the store.
    pub bucket_copy: Option<Arc<BucketCopier>>,
}

impl std::fmt::Debug for OpenedRemote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedRemote")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .field("supports_attributes", &self.supports_attributes)
            .field("multipart", &self.multipart.is_some())
            .field("credentials", &self.credentials)
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

/// Opens a remote. No request is made: problems that can be seen from the
/// settings alone are reported here, the rest on the first request.
///
/// For S3 and R2, requests are path-style whenever an endpoint is set; R2
/// uses region `auto`, the endpoint of its jurisdiction (`--jurisdiction`,
/// else the URL's, else `R2_JURISDICTION`) and prefers
/// `R2_ACCESS_KEY_ID`/`R2_SECRET_ACCESS_KEY` over the AWS keys; S3 defaults
/// to region `us-east-1`. A directory that does not exist opens (reads find
/// nothing) unless [`OpenOptions::create`] asks to create it.
///
/// # Errors
/// * [`Error::InvalidJurisdiction`] for a bad `R2_JURISDICTION`;
/// * [`Error::PlainHttp`] for an `http://` endpoint without
///   `AWS_ALLOW_HTTP=true`;
/// * [`Error::NoCredentials`] for S3 or R2 with no credentials configured
///   and `AWS_EC2_METADATA_DISABLED=true`;
/// * [`Error::Config`] for other invalid settings;
/// * [`Error::Io`] when a local directory cannot be created.
pub fn open(remote: &Remote, opts: &OpenOptions) -> Result<OpenedRemote> {
    let budget = Budget::new(opts.timeout);
    let connector = Connector {
        observer: opts.observer.clone(),
        stall: Some(budget.stall),
    };
    let connect_timeout = format!("{}ms", budget.connect.as_millis());
    let mut remote = remote.clone();
    if let Remote::R2 { jurisdiction, .. } = &mut remote {
        *jurisdiction = Some(s3::r2_jurisdiction(opts.jurisdiction, *jurisdiction)?);
    }
    let url = remote.canonical();
    let config = |source| Error::Config {
        url: url.clone(),
        source,
    };
    let mut copier = None;
    let (store, multipart, endpoint, credentials): (
        Arc<dyn ObjectStore>,
        Arc<dyn MultipartStore>,
        Option<String>,
        CredentialSource,
    ) = match &remote {
        Remote::S3 {
            bucket, settings, ..
        } => {
            let target = s3::Target::S3 { bucket, settings };
            let built = s3::build(&target, &url, opts, budget, connector)?;
            let (store, multipart) = shared(built.store);
            copier = Some(built.copier);
            (store, multipart, Some(built.endpoint), built.credentials)
        }
        Remote::R2 {
            account,
            bucket,
            jurisdiction,
            settings,
            ..
        } => {
            let target = s3::Target::R2 {
                account,
                bucket,
                jurisdiction: jurisdiction.unwrap_or_default(),
                settings,
            };
            let built = s3::build(&target, &url, opts, budget, connector)?;
            let (store, multipart) = shared(built.store);
            copier = Some(built.copier);
            (store, multipart, Some(built.endpoint), built.credentials)
        }
        Remote::Gcs { bucket, .. } => {
            let b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(budget.retry_config())
                .with_http_connector(connector)
                .with_config(
                    GoogleConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect_timeout,
                );
            let (store, multipart) = both(b.build().map_err(config)?);
            (
                store,
                multipart,
                Some("https://storage.googleapis.com".into()),
                CredentialSource::Ambient,
            )
        }
        Remote::Azure { container, .. } => {
            let b = MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_retry(budget.retry_config())
                .with_http_connector(connector)
                .with_config(
                    AzureConfigKey::Client(ClientConfigKey::ConnectTimeout),
                    &connect_timeout,
                );
            let endpoint = b.get_config_value(&AzureConfigKey::Endpoint).or_else(|| {
                b.get_config_value(&AzureConfigKey::AccountName)
                    .map(|a| format!("https://{a}.blob.core.windows.net"))
            });
            let (store, multipart) = both(b.build().map_err(config)?);
            (store, multipart, endpoint, CredentialSource::Ambient)
        }
        Remote::Dir { path } => return open_dir(path, url, opts.create),
    };
    Ok(OpenedRemote {
        store,
        prefix: remote.prefix().to_string(),
        url,
        supports_attributes: true,
        multipart: Some(multipart),
        credentials,
        endpoint,
        bucket_copy: copier,
    })
}

fn open_dir(path: &std::path::Path, url: String, create: bool) -> Result<OpenedRemote> {
    let config = |source| Error::Config {
        url: url.clone(),
        source,
    };
    if create {
        std::fs::create_dir_all(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
    }
    let (fs, prefix) = if path.is_dir() {
        (
            LocalFileSystem::new_with_prefix(path).map_err(config)?,
            String::new(),
        )
    } else {
        // Nothing there yet: reads find no manifest, which callers report as
        // "not managed by pqsync".
        (
            LocalFileSystem::new_with_prefix("/").map_err(config)?,
            path.display()
                .to_string()
                .trim_start_matches('/')
                .to_string(),
        )
    };
    Ok(OpenedRemote {
        store: Arc::new(fs.with_automatic_cleanup(true)),
        prefix,
        url,
        supports_attributes: false,
        multipart: None,
        credentials: CredentialSource::None,
        endpoint: None,
        bucket_copy: None,
    })
}

/// One store behind both of its interfaces.
fn both<S: ObjectStore + MultipartStore>(
    store: S,
) -> (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) {
    shared(Arc::new(store))
}

fn shared<S: ObjectStore + MultipartStore>(
    store: Arc<S>,
) -> (Arc<dyn ObjectStore>, Arc<dyn MultipartStore>) {
    (store.clone(), store)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use object_store::path::Path;
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::error::JurisdictionOrigin;
    use crate::parse_remote;
    use crate::test_env::Env;

    const ACCT: &str = "0123456789abcdef0123456789abcdef";

    fn with_keys(env: &mut Env) {
        env.set("AWS_ACCESS_KEY_ID", "test-key")
            .set("AWS_SECRET_ACCESS_KEY", "test-secret");
    }

    fn open_url(url: &str, opts: &OpenOptions) -> Result<OpenedRemote> {
        open(&parse_remote(url).unwrap(), opts)
    }

    #[test]
    fn opens_local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("remote");
        let remote = parse_remote(target.to_str().unwrap()).unwrap();
        let opened = open(&remote, &OpenOptions::default()).unwrap();
        assert!(!target.exists(), "opening alone must not create it");
        assert_eq!(
            opened.prefix,
            target.to_str().unwrap().trim_start_matches('/')
        );
        let opened = open(
            &remote,
            &OpenOptions {
                create: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(target.is_dir());
        assert!(!opened.supports_attributes);
        assert!(opened.multipart.is_none());
        assert_eq!(opened.prefix, "");
        assert_eq!(opened.url, format!("file://{}", target.display()));
        assert_eq!(opened.credentials, CredentialSource::None);
        assert_eq!(opened.endpoint, None);
    }

    #[test]
    fn s3_reports_endpoint_and_static_keys() {
        let mut env = Env::clean();
        with_keys(&mut env);
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert_eq!(opened.url, "s3://b/p");
        assert_eq!(opened.prefix, "p");
        assert!(opened.supports_attributes && opened.multipart.is_some());
        assert_eq!(
            opened.endpoint.as_deref(),
            Some("https://s3.us-east-1.amazonaws.com")
        );
        assert_eq!(
            opened.credentials,
            CredentialSource::Static {
                variables: "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
            }
        );
        assert_eq!(opened.credentials.describe_missing(), None);
        env.set("AWS_REGION", "eu-west-1");
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert_eq!(
            opened.endpoint.as_deref(),
            Some("https://s3.eu-west-1.amazonaws.com")
        );
        env.set("AWS_ENDPOINT_URL", "https://minio.example:9000");
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert_eq!(
            opened.endpoint.as_deref(),
            Some("https://minio.example:9000")
        );
        let opts = OpenOptions {
            endpoint: Some("https://other.example".into()),
            ..Default::default()
        };
        let opened = open_url("s3://b/p", &opts).unwrap();
        assert_eq!(opened.endpoint.as_deref(), Some("https://other.example"));
    }

    /// Buckets reached through one endpoint with one key copy between
    /// each other; R2's jurisdictions have endpoints of their own and
    /// never do, nor do two keys.
    #[test]
    fn bucket_copy_scope_is_endpoint_region_and_key() {
        let mut env = Env::clean();
        with_keys(&mut env);
        let acct = ACCT;
        let scope = |url: &str| {
            open_url(url, &OpenOptions::default())
                .unwrap()
                .bucket_copy
                .unwrap()
                .scope()
                .to_string()
        };
        assert_eq!(scope("s3://a/p"), scope("s3://b/q"));
        assert_ne!(scope("s3://a/p"), scope("s3://b/q?region=eu-west-1"));
        assert_eq!(
            scope(&format!("r2://{acct}/a/p")),
            scope(&format!("r2://{acct}/b/q"))
        );
        assert_ne!(
            scope(&format!("r2://{acct}/a/p")),
            scope(&format!("r2://{acct}/b/q?jurisdiction=eu"))
        );
        assert_ne!(
            scope(&format!("r2://{acct}/b/q?jurisdiction=eu")),
            scope(&format!("r2://{acct}/b/q?jurisdiction=fedramp"))
        );
        env.set("AWS_ACCESS_KEY_ID", "ANOTHERKEY");
        let other = scope("s3://b/q");
        env.set("AWS_ACCESS_KEY_ID", "test-key");
        assert_ne!(other, scope("s3://b/q"));
        assert!(open_url("/srv/x", &OpenOptions::default())
            .unwrap()
            .bucket_copy
            .is_none());
    }

    #[test]
    fn plain_http_needs_aws_allow_http() {
        let mut env = Env::clean();
        with_keys(&mut env);
        let opts = OpenOptions {
            endpoint: Some("http://127.0.0.1:9000".into()),
            ..Default::default()
        };
        let err = open_url("s3://b/p", &opts).unwrap_err();
        assert!(err.is_usage());
        assert!(
            matches!(&err, Error::PlainHttp { endpoint, origin }
                if endpoint == "http://127.0.0.1:9000" && origin == "--endpoint"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "endpoint http://127.0.0.1:9000 (from --endpoint) uses plain http: \
             set AWS_ALLOW_HTTP=true to allow it, or use an https:// endpoint"
        );
        let err = open_url(&format!("r2://{ACCT}/b"), &opts).unwrap_err();
        assert!(matches!(err, Error::PlainHttp { .. }), "{err:?}");

        env.set("AWS_ENDPOINT_URL", "HTTP://minio.local:9000");
        let err = open_url("s3://b/p", &OpenOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::PlainHttp { origin, .. } if origin == "AWS_ENDPOINT_URL"),
            "{err:?}"
        );
        env.set("AWS_ALLOW_HTTP", "false");
        assert!(matches!(
            open_url("s3://b/p", &OpenOptions::default()),
            Err(Error::PlainHttp { .. })
        ));

        env.set("AWS_ALLOW_HTTP", "true");
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert_eq!(opened.endpoint.as_deref(), Some("HTTP://minio.local:9000"));
        assert!(open_url("s3://b/p", &opts).is_ok());
    }

    #[test]
    fn no_credentials_when_metadata_is_disabled() {
        let mut env = Env::clean();
        env.set("AWS_EC2_METADATA_DISABLED", "true");
        let err = open_url("s3://b/p", &OpenOptions::default()).unwrap_err();
        assert!(!err.is_usage());
        assert_eq!(
            err.to_string(),
            "no credentials for s3://b/p: tried AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not set), \
             AWS profile \"default\" (not in /nonexistent/pqsync-test/credentials or /nonexistent/pqsync-test/config), \
             AWS_WEB_IDENTITY_TOKEN_FILE (not set), \
             AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/AWS_CONTAINER_CREDENTIALS_FULL_URI (not set), \
             instance metadata (disabled by AWS_EC2_METADATA_DISABLED=true); \
             set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or name an AWS profile that has keys (--profile, ?profile=, AWS_PROFILE)"
        );

        env.set("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/token")
            .set("R2_ACCESS_KEY_ID", "only-half");
        let err = open_url(&format!("r2://{ACCT}/b"), &OpenOptions::default()).unwrap_err();
        let Error::NoCredentials { tried, fix, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            [&tried[..2], &tried[3..4]].concat(),
            [
                "R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY (only R2_ACCESS_KEY_ID set)",
                "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not set)",
                "AWS_WEB_IDENTITY_TOKEN_FILE (set, but AWS_ROLE_ARN is not)",
            ]
        );
        assert!(fix.starts_with("set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY"));

        // Any real source of credentials is enough.
        env.set("AWS_ROLE_ARN", "arn:aws:iam::1:role/r");
        assert_eq!(
            open_url("s3://b", &OpenOptions::default())
                .unwrap()
                .credentials,
            CredentialSource::WebIdentity
        );
        env.remove("AWS_WEB_IDENTITY_TOKEN_FILE")
            .set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "/v2/creds");
        assert_eq!(
            open_url("s3://b", &OpenOptions::default())
                .unwrap()
                .credentials,
            CredentialSource::Container
        );
        env.remove("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
            .set("R2_SECRET_ACCESS_KEY", "other-half");
        assert_eq!(
            open_url(&format!("r2://{ACCT}/b"), &OpenOptions::default())
                .unwrap()
                .credentials,
            CredentialSource::Static {
                variables: "R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY"
            }
        );
        env.set("AWS_SKIP_SIGNATURE", "true");
        assert_eq!(
            open_url("s3://b", &OpenOptions::default())
                .unwrap()
                .credentials,
            CredentialSource::Unsigned
        );
    }

    #[test]
    fn profiles_give_keys_region_and_endpoint() {
        let mut env = Env::clean();
        let dir = tempfile::tempdir().unwrap();
        let (config, credentials) = (dir.path().join("config"), dir.path().join("credentials"));
        std::fs::write(
            &config,
            "[default]\nregion = eu-west-2\n[profile backup]\nendpoint_url = https://backup.example\n[profile sso]\nsso_session = corp\n",
        )
        .unwrap();
        std::fs::write(
            &credentials,
            "[default]\naws_access_key_id = AKIDEFAULT\naws_secret_access_key = s1\n[backup]\naws_access_key_id = AKIBACKUP\naws_secret_access_key = s2\n",
        )
        .unwrap();
        env.set("AWS_CONFIG_FILE", &config)
            .set("AWS_SHARED_CREDENTIALS_FILE", &credentials);
        let profile = |name: &str| CredentialSource::Profile {
            name: name.into(),
            file: credentials.clone(),
        };

        // The default profile fills in for missing variables.
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert_eq!(opened.credentials, profile("default"));
        assert_eq!(
            opened.endpoint.as_deref(),
            Some("https://s3.eu-west-2.amazonaws.com")
        );
        // Variables win over the profile in force ...
        with_keys(&mut env);
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert!(matches!(
            opened.credentials,
            CredentialSource::Static { .. }
        ));
        env.set("AWS_PROFILE", "backup");
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert!(matches!(
            opened.credentials,
            CredentialSource::Static { .. }
        ));
        assert_eq!(opened.endpoint.as_deref(), Some("https://backup.example"));
        // ... but not over a profile the remote or --profile names.
        let opened = open_url("s3://b/p?profile=backup", &OpenOptions::default()).unwrap();
        assert_eq!(opened.credentials, profile("backup"));
        let opts = OpenOptions {
            profile: Some("default".into()),
            ..Default::default()
        };
        assert_eq!(
            open_url("s3://b/p", &opts).unwrap().credentials,
            profile("default")
        );
        assert_eq!(
            open_url("s3://b/p?profile=backup", &opts)
                .unwrap()
                .credentials,
            profile("backup")
        );
        // The remote's endpoint wins over every other.
        let opened = open_url(
            "s3://b/p?profile=backup&endpoint=https://own.example",
            &OpenOptions::default(),
        )
        .unwrap();
        assert_eq!(opened.endpoint.as_deref(), Some("https://own.example"));

        for (url, expected) in [
            (
                "s3://b/p?profile=nope",
                "no AWS profile \"nope\" for s3://b/p (the remote's profile \"nope\"): neither",
            ),
            (
                "s3://b/p?profile=sso",
                "AWS profile \"sso\" gets its credentials through sso_session, which pqsync does not follow",
            ),
        ] {
            let err = open_url(url, &OpenOptions::default()).unwrap_err();
            assert!(err.is_usage());
            assert!(err.to_string().starts_with(expected), "{err}");
        }
        env.set("AWS_PROFILE", "nope");
        let err = open_url("s3://b/p", &OpenOptions::default()).unwrap_err();
        assert!(err.to_string().contains("(AWS_PROFILE=nope)"), "{err}");
    }

    #[test]
    fn instance_metadata_is_described_when_it_gives_nothing() {
        let mut env = Env::clean();
        env.set("AWS_METADATA_ENDPOINT", "http://127.0.0.1:1");
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert!(matches!(
            &opened.credentials,
            CredentialSource::InstanceMetadata { endpoint, .. } if endpoint == "http://127.0.0.1:1"
        ));
        assert_eq!(
            opened.credentials.describe_missing().unwrap(),
            "no credentials found: tried AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not set), \
             AWS profile \"default\" (not in /nonexistent/pqsync-test/credentials or /nonexistent/pqsync-test/config), \
             AWS_WEB_IDENTITY_TOKEN_FILE (not set), \
             AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/AWS_CONTAINER_CREDENTIALS_FULL_URI (not set), \
             instance metadata at http://127.0.0.1:1 (gave none); \
             set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
             or name an AWS profile that has keys (--profile, ?profile=, AWS_PROFILE)"
        );
        env.remove("AWS_METADATA_ENDPOINT");
        let opened = open_url("s3://b/p", &OpenOptions::default()).unwrap();
        assert!(opened
            .credentials
            .describe_missing()
            .unwrap()
            .contains("instance metadata at http://169.254.169.254 (gave none)"));
    }

    #[test]
    fn r2_jurisdiction_precedence() {
        let mut env = Env::clean();
        with_keys(&mut env);
        env.set("R2_JURISDICTION", "bogus");
        let err = open_url(&format!("r2://{ACCT}/b/p"), &OpenOptions::default()).unwrap_err();
        assert!(err.is_usage());
        assert!(
            matches!(&err, Error::InvalidJurisdiction { value, origin: JurisdictionOrigin::Env } if value == "bogus"),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "invalid R2 jurisdiction \"bogus\" in R2_JURISDICTION: expected default, eu or fedramp"
        );
        // A jurisdiction given on the command line or in the URL wins.
        let flag = OpenOptions {
            jurisdiction: Some(Jurisdiction::Fedramp),
            ..Default::default()
        };
        let opened = open_url(&format!("r2://{ACCT}/b/p?jurisdiction=eu"), &flag).unwrap();
        assert_eq!(opened.url, format!("r2://{ACCT}/b/p?jurisdiction=fedramp"));
        assert_eq!(
            opened.endpoint,
            Some(format!("https://{ACCT}.fedramp.r2.cloudflarestorage.com"))
        );
        let opened = open_url(
            &format!("r2://{ACCT}/b/p?jurisdiction=eu"),
            &OpenOptions::default(),
        )
        .unwrap();
        assert_eq!(
            opened.endpoint,
            Some(format!("https://{ACCT}.eu.r2.cloudflarestorage.com"))
        );
        env.set("R2_JURISDICTION", "EU");
        let opened = open_url(&format!("r2://{ACCT}/b/p"), &OpenOptions::default()).unwrap();
        assert_eq!(opened.url, format!("r2://{ACCT}/b/p?jurisdiction=eu"));
        env.remove("R2_JURISDICTION");
        let opened = open_url(&format!("r2://{ACCT}/b/p"), &OpenOptions::default()).unwrap();
        assert_eq!(opened.url, format!("r2://{ACCT}/b/p"));
        assert_eq!(
            opened.endpoint,
            Some(format!("https://{ACCT}.r2.cloudflarestorage.com"))
        );
        // R2 ignores AWS_ENDPOINT_URL but honours --endpoint.
        env.set("AWS_ENDPOINT_URL", "https://elsewhere.example");
        let opened = open_url(&format!("r2://{ACCT}/b/p"), &OpenOptions::default()).unwrap();
        assert_eq!(
            opened.endpoint,
            Some(format!("https://{ACCT}.r2.cloudflarestorage.com"))
        );
        let opts = OpenOptions {
            endpoint: Some("https://proxy.example".into()),
            ..Default::default()
        };
        let opened = open_url(&format!("r2://{ACCT}/b/p"), &opts).unwrap();
        assert_eq!(opened.endpoint.as_deref(), Some("https://proxy.example"));
    }

    #[derive(Default)]
    struct Recorder {
        statuses: Mutex<Vec<u16>>,
        stalls: Mutex<Vec<(String, Duration)>>,
    }

    impl HttpObserver for Recorder {
        fn response(&self, status: u16) {
            self.statuses.lock().unwrap().push(status);
        }
        fn stalled(&self, endpoint: &str, waited: Duration) {
            self.stalls
                .lock()
                .unwrap()
                .push((endpoint.to_string(), waited));
        }
    }

    /// An endpoint that accepts connections and never answers makes a
    /// request fail within the timeout, and the observer hears of it.
    #[tokio::test(flavor = "multi_thread")]
    async fn silent_endpoint_fails_within_the_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                held.push(conn);
            }
        });
        let recorder = Arc::new(Recorder::default());
        let timeout = Duration::from_secs(2);
        let opened = {
            let mut env = Env::clean();
            with_keys(&mut env);
            env.set("AWS_ALLOW_HTTP", "true");
            let opts = OpenOptions {
                endpoint: Some(format!("http://{addr}")),
                timeout,
                observer: Some(recorder.clone()),
                ..Default::default()
            };
            open_url("s3://bucket/p", &opts).unwrap()
        };
        let started = Instant::now();
        let err = opened
            .store
            .get(&Path::from("p/manifest"))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(
            took < timeout.mul_f64(1.2) + Duration::from_millis(500),
            "took {took:?}: {err}"
        );
        let stalls = recorder.stalls.lock().unwrap().clone();
        assert!(stalls.len() >= 2, "{stalls:?}");
        for (endpoint, waited) in &stalls {
            assert_eq!(endpoint, &format!("http://{addr}"));
            assert!(*waited >= timeout / 4, "{waited:?}");
        }
        assert!(recorder.statuses.lock().unwrap().is_empty());
    }

    /// A request body gets time to be sent on top of the stall limit: a
    /// slow upload is not mistaken for a silent server.
    #[tokio::test(flavor = "multi_thread")]
    async fn slow_upload_is_not_cut() {
        use std::io::{Read, Write};

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8];
            while !head.ends_with(b"\r\n\r\n") {
                conn.read_exact(&mut byte).unwrap();
                head.push(byte[0]);
            }
            let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            // Read the body at 40 KiB/s: about 2.4 s for 96 KiB, far past
            // the 0.5 s stall limit.
            let mut chunk = [0u8; 4096];
            let mut read = 0;
            while read < len {
                std::thread::sleep(Duration::from_millis(100));
                let n = conn.read(&mut chunk[..(len - read).min(4096)]).unwrap();
                read += n;
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nETag: \"e\"\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            std::thread::sleep(Duration::from_secs(1));
        });
        let recorder = Arc::new(Recorder::default());
        let opened = {
            let mut env = Env::clean();
            with_keys(&mut env);
            env.set("AWS_ALLOW_HTTP", "true");
            let opts = OpenOptions {
                endpoint: Some(format!("http://{addr}")),
                timeout: Duration::from_secs(2),
                observer: Some(recorder.clone()),
                ..Default::default()
            };
            open_url("s3://bucket/p", &opts).unwrap()
        };
        let started = Instant::now();
        opened
            .store
            .put(&Path::from("p/big"), vec![7u8; 96 * 1024].into())
            .await
            .unwrap();
        assert!(started.elapsed() > Duration::from_secs(2));
        assert!(recorder.stalls.lock().unwrap().is_empty());
        assert_eq!(*recorder.statuses.lock().unwrap(), [200]);
    }
}
