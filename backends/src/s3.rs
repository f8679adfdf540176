//! S3 and R2 stores: endpoint, credentials and plain-HTTP checks made before
//! any request.

use std::sync::Arc;

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};

use crate::copy::{BucketCopier, COPY_LIMIT, COPY_LIMIT_ENV};
use object_store::ClientConfigKey;

use crate::error::{Error, JurisdictionOrigin, Result};
use crate::http::{Budget, Connector};
use crate::open::{CredentialSource, OpenOptions};
use crate::profile::{self, Chosen, Profile};
use crate::remote::{parse_jurisdiction, Jurisdiction, S3Settings};

/// object_store's instance metadata endpoint when `AWS_METADATA_ENDPOINT`
/// is not set.
const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";

const AWS_KEYS: &str = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY";
const R2_KEYS: &str = "R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY";

/// A built S3 or R2 store and what it will use.
pub(crate) struct Built {
    pub store: Arc<AmazonS3>,
    pub endpoint: String,
    pub credentials: CredentialSource,
    /// Copies into the bucket from the store's other buckets.
    pub copier: Arc<BucketCopier>,
}

/// Where an S3 or R2 store lives, and the remote's own settings.
pub(crate) enum Target<'a> {
    S3 {
        bucket: &'a str,
        settings: &'a S3Settings,
    },
    R2 {
        account: &'a str,
        bucket: &'a str,
        jurisdiction: Jurisdiction,
        settings: &'a S3Settings,
    },
}

impl Target<'_> {
    fn settings(&self) -> &S3Settings {
        match self {
            Target::S3 { settings, .. } | Target::R2 { settings, .. } => settings,
        }
    }
}

/// The R2 jurisdiction in force: `--jurisdiction`, else the URL's, else
/// `R2_JURISDICTION`, else the default.
pub(crate) fn r2_jurisdiction(
    flag: Option<Jurisdiction>,
    url: Option<Jurisdiction>,
) -> Result<Jurisdiction> {
    if let Some(j) = flag.or(url) {
        return Ok(j);
    }
    match std::env::var("R2_JURISDICTION") {
        Ok(v) => parse_jurisdiction(&v, JurisdictionOrigin::Env),
        Err(_) => Ok(Jurisdiction::Default),
    }
}

/// Builds the store for `target`, named `url` in errors.
///
/// Settings are taken, each from the first place that has it:
/// * credentials: the keys of a profile the remote or `--profile` names;
///   for R2, `R2_ACCESS_KEY_ID`/`R2_SECRET_ACCESS_KEY`; the `AWS_*` keys; the
///   keys of the profile in force (`AWS_PROFILE`, else `default`); then web
///   identity, container and instance credentials;
/// * region (S3 only; R2 signs for `auto`): the remote's `?region=`,
///   `AWS_REGION`/`AWS_DEFAULT_REGION`, the profile's `region`, `us-east-1`;
/// * endpoint: the remote's `?endpoint=`, `--endpoint`,
///   `AWS_ENDPOINT_URL_S3`/`AWS_ENDPOINT_URL`/`AWS_ENDPOINT`, the profile's
///   `endpoint_url` (under `s3 =` first), then the provider's.
pub(crate) fn build(
    target: &Target<'_>,
    url: &str,
    opts: &OpenOptions,
    budget: Budget,
    connector: Connector,
) -> Result<Built> {
    let r2 = matches!(target, Target::R2 { .. });
    let settings = target.settings();
    let explicit = settings.profile.as_deref().or(opts.profile.as_deref());
    let (name, chosen) = profile::choose(explicit);
    let files = profile::Files::from_env();
    let found = profile::load(&files, &name)?;
    if found.is_none() && chosen != Chosen::Default {
        let given = match chosen {
            Chosen::Env(var) => format!("{var}={name}"),
            _ if settings.profile.is_some() => format!("the remote's profile {name:?}"),
            _ => format!("--profile {name}"),
        };
        return Err(Error::Profile {
            reason: format!(
                "no AWS profile {name:?} for {url} ({given}): neither {} has it; add a [profile {name}] section, or name a profile that exists",
                files.describe(" nor ")
            ),
        });
    }
    let profile_keys = found
        .as_ref()
        .filter(|p| p.access_key_id.is_some() && p.secret_access_key.is_some());
    let env_keys = env_has_keys(r2);
    // A profile named for this remote wins over the environment's keys; the
    // profile in force only fills in for them.
    let use_profile_keys = profile_keys.is_some() && (chosen == Chosen::Explicit || !env_keys);
    if let Some(p) = found.as_ref().filter(|p| p.unsupported.is_some()) {
        if profile_keys.is_none() && (chosen == Chosen::Explicit || !env_keys) {
            return Err(Error::Profile {
                reason: format!(
                    "AWS profile {:?} gets its credentials through {}, which pqsync does not follow: give the profile aws_access_key_id and aws_secret_access_key, or export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                    p.name,
                    p.unsupported.as_deref().unwrap_or_default()
                ),
            });
        }
    }
    let mut b = builder_from_env(use_profile_keys)
        .with_retry(budget.retry_config())
        .with_http_connector(connector)
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            format!("{}ms", budget.connect.as_millis()),
        );
    if let Some(p) = profile_keys.filter(|_| use_profile_keys) {
        b = b
            .with_access_key_id(p.access_key_id.clone().unwrap_or_default())
            .with_secret_access_key(p.secret_access_key.clone().unwrap_or_default());
        if let Some(t) = &p.session_token {
            b = b.with_token(t);
        }
    }
    let profile_endpoint = found.as_ref().and_then(|p| {
        let e = p.endpoint_url.clone()?;
        Some((e, format!("AWS profile {:?}", p.name)))
    });
    let (endpoint, origin) = match target {
        Target::S3 { bucket, .. } => {
            b = b.with_bucket_name(*bucket);
            if let Some(r) = &settings.region {
                b = b.with_region(r);
            } else if b.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
                let region = found.as_ref().and_then(|p| p.region.clone());
                b = b.with_region(region.as_deref().unwrap_or("us-east-1"));
            }
            match chosen_endpoint(settings, opts).or(profile_endpoint) {
                Some((endpoint, origin)) => (endpoint, Some(origin)),
                None => (default_s3_endpoint(&b, bucket), None),
            }
        }
        Target::R2 {
            account,
            bucket,
            jurisdiction,
            ..
        } => {
            b = b.with_bucket_name(*bucket).with_region("auto");
            if !use_profile_keys {
                if let (Ok(k), Ok(s)) = (
                    std::env::var("R2_ACCESS_KEY_ID"),
                    std::env::var("R2_SECRET_ACCESS_KEY"),
                ) {
                    b = b.with_access_key_id(k).with_secret_access_key(s);
                }
            }
            let given = settings
                .endpoint
                .as_ref()
                .map(|e| (e.clone(), "the remote's ?endpoint=".to_string()))
                .or_else(|| {
                    opts.endpoint
                        .as_ref()
                        .map(|e| (e.clone(), "--endpoint".to_string()))
                });
            match given {
                Some((e, origin)) => (e, Some(origin)),
                None => (jurisdiction.r2_endpoint(account), None),
            }
        }
    };
    if let Some(origin) = &origin {
        if endpoint
            .get(..7)
            .is_some_and(|s| s.eq_ignore_ascii_case("http://"))
            && !config_bool(&b, ClientConfigKey::AllowHttp)
        {
            return Err(Error::PlainHttp {
                endpoint,
                origin: origin.clone(),
            });
        }
    }
    if origin.is_some() || r2 {
        // Path-style whenever an endpoint is set. The S3-specific endpoint
        // (`AWS_ENDPOINT_URL_S3`) would win over the generic one inside
        // object_store, so set both.
        b = b
            .with_endpoint(&endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, &endpoint)
            .with_virtual_hosted_style_request(false);
    }
    let credentials = match profile_keys.filter(|_| use_profile_keys) {
        Some(p) => CredentialSource::Profile {
            name: p.name.clone(),
            file: p.keys_from.clone().unwrap_or_default(),
        },
        None => credential_source(&b, r2, &name, found.as_ref(), &files),
    };
    if let CredentialSource::InstanceMetadata { tried, fix, .. } = &credentials {
        if metadata_disabled() {
            let mut tried = tried.clone();
            tried.push("instance metadata (disabled by AWS_EC2_METADATA_DISABLED=true)".into());
            return Err(Error::NoCredentials {
                url: url.to_string(),
                tried,
                fix: fix.clone(),
            });
        }
    }
    // CopyObject between buckets goes path-style to the endpoint, under
    // the same region and keys.
    let copy_endpoint = if origin.is_some() || r2 {
        endpoint.clone()
    } else {
        let region = b
            .get_config_value(&AmazonS3ConfigKey::Region)
            .unwrap_or_else(|| "us-east-1".into());
        format!("https://s3.{region}.amazonaws.com")
    };
    let region = b
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".into());
    let identity = b
        .get_config_value(&AmazonS3ConfigKey::AccessKeyId)
        .unwrap_or_else(|| format!("{credentials:?}"));
    let bucket = b
        .get_config_value(&AmazonS3ConfigKey::Bucket)
        .unwrap_or_default();
    let store = Arc::new(b.build().map_err(|source| Error::Config {
        url: url.to_string(),
        source,
    })?);
    let copier = Arc::new(BucketCopier::new(
        store.clone(),
        &copy_endpoint,
        &region,
        &bucket,
        &identity,
        copy_limit()?,
    ));
    Ok(Built {
        store,
        endpoint,
        credentials,
        copier,
    })
}

/// Whether the environment holds keys: `AWS_ACCESS_KEY_ID` (or, for R2,
/// `R2_ACCESS_KEY_ID`), non-empty.
fn env_has_keys(r2: bool) -> bool {
    let set = |v: &str| std::env::var(v).is_ok_and(|v| !v.is_empty());
    set("AWS_ACCESS_KEY_ID") || (r2 && set("R2_ACCESS_KEY_ID"))
}

/// object_store's `from_env`, leaving out the environment's keys and token
/// when a profile's keys are to be used instead (a session token from the
/// environment would otherwise be sent with the profile's keys).
fn builder_from_env(without_keys: bool) -> AmazonS3Builder {
    let mut b = AmazonS3Builder::new();
    for (key, value) in std::env::vars_os() {
        let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
            continue;
        };
        if !key.starts_with("AWS_") {
            continue;
        }
        let Ok(config_key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() else {
            continue;
        };
        let is_key = matches!(
            config_key,
            AmazonS3ConfigKey::AccessKeyId
                | AmazonS3ConfigKey::SecretAccessKey
                | AmazonS3ConfigKey::Token
        );
        if !(without_keys && is_key) {
            b = b.with_config(config_key, value);
        }
    }
    b
}

/// The remote's `?endpoint=`, else `--endpoint`, else
/// `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or `AWS_ENDPOINT`, with where
/// it came from.
fn chosen_endpoint(settings: &S3Settings, opts: &OpenOptions) -> Option<(String, String)> {
    if let Some(e) = &settings.endpoint {
        return Some((e.clone(), "the remote's ?endpoint=".into()));
    }
    if let Some(e) = &opts.endpoint {
        return Some((e.clone(), "--endpoint".into()));
    }
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]
        .into_iter()
        .find_map(|var| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .map(|v| (v, var.to_string()))
        })
}

/// The AWS endpoint object_store uses when none is set.
fn default_s3_endpoint(b: &AmazonS3Builder, bucket: &str) -> String {
    let region = b
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".into());
    let virtual_hosted = b
        .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
        .is_some_and(|v| parse_bool(&v));
    if virtual_hosted {
        format!("https://{bucket}.s3.{region}.amazonaws.com")
    } else {
        format!("https://s3.{region}.amazonaws.com")
    }
}

/// A boolean client option as object_store will read it (false when unset
/// or unparsable, in which case the build itself fails).
fn config_bool(b: &AmazonS3Builder, key: ClientConfigKey) -> bool {
    b.get_config_value(&AmazonS3ConfigKey::Client(key))
        .is_some_and(|v| parse_bool(&v))
}

/// object_store's reading of a boolean setting.
fn parse_bool(v: &str) -> bool {
    matches!(
        v.to_ascii_lowercase().as_str(),
        "1" | "true" | "on" | "yes" | "y"
    )
}

/// `AWS_EC2_METADATA_DISABLED=true`, as the AWS CLI reads it.
fn metadata_disabled() -> bool {
    std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The credentials object_store will use, following its order: static keys,
/// web identity, container credentials, instance metadata.
fn credential_source(
    b: &AmazonS3Builder,
    r2: bool,
    profile_name: &str,
    profile: Option<&Profile>,
    files: &profile::Files,
) -> CredentialSource {
    let get = |key: AmazonS3ConfigKey| b.get_config_value(&key).filter(|v| !v.is_empty());
    if get(AmazonS3ConfigKey::SkipSignature).is_some_and(|v| parse_bool(&v)) {
        return CredentialSource::Unsigned;
    }
    let r2_key = std::env::var("R2_ACCESS_KEY_ID").is_ok();
    let r2_secret = std::env::var("R2_SECRET_ACCESS_KEY").is_ok();
    if r2 && r2_key && r2_secret {
        return CredentialSource::Static { variables: R2_KEYS };
    }
    let key = get(AmazonS3ConfigKey::AccessKeyId).is_some();
    let secret = get(AmazonS3ConfigKey::SecretAccessKey).is_some();
    if key || secret {
        return CredentialSource::Static {
            variables: AWS_KEYS,
        };
    }
    let token_file = get(AmazonS3ConfigKey::WebIdentityTokenFile).is_some();
    let role = get(AmazonS3ConfigKey::RoleArn).is_some();
    if token_file && role {
        return CredentialSource::WebIdentity;
    }
    let relative = get(AmazonS3ConfigKey::ContainerCredentialsRelativeUri).is_some();
    let full = get(AmazonS3ConfigKey::ContainerCredentialsFullUri).is_some();
    let auth_file = get(AmazonS3ConfigKey::ContainerAuthorizationTokenFile).is_some();
    if relative || (full && auth_file) {
        return CredentialSource::Container;
    }

    let mut tried = Vec::new();
    if r2 {
        tried.push(match (r2_key, r2_secret) {
            (true, false) => format!("{R2_KEYS} (only R2_ACCESS_KEY_ID set)"),
            (false, true) => format!("{R2_KEYS} (only R2_SECRET_ACCESS_KEY set)"),
            _ => format!("{R2_KEYS} (not set)"),
        });
    }
    tried.push(format!("{AWS_KEYS} (not set)"));
    tried.push(match profile {
        None => format!(
            "AWS profile {profile_name:?} (not in {})",
            files.describe(" or ")
        ),
        Some(_) => format!(
            "AWS profile {profile_name:?} (it has no aws_access_key_id/aws_secret_access_key)"
        ),
    });
    tried.push(if token_file {
        "AWS_WEB_IDENTITY_TOKEN_FILE (set, but AWS_ROLE_ARN is not)".into()
    } else {
        "AWS_WEB_IDENTITY_TOKEN_FILE (not set)".into()
    });
    tried.push(if full {
        "AWS_CONTAINER_CREDENTIALS_FULL_URI (set, but AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE is not)"
            .into()
    } else {
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/AWS_CONTAINER_CREDENTIALS_FULL_URI (not set)".into()
    });
    let fix = if r2 {
        "set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or name an AWS profile that has keys (--profile, ?profile=, AWS_PROFILE)"
            .to_string()
    } else {
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or name an AWS profile that has keys (--profile, ?profile=, AWS_PROFILE)".to_string()
    };
    CredentialSource::InstanceMetadata {
        endpoint: get(AmazonS3ConfigKey::MetadataEndpoint)
            .unwrap_or_else(|| DEFAULT_METADATA_ENDPOINT.into()),
        tried,
        fix,
    }
}

/// The largest object the store copies in one request: S3's 5 GiB, or
/// less as `PQSYNC_COPY_LIMIT` says for a store that takes less.
fn copy_limit() -> Result<u64> {
    let Ok(value) = std::env::var(COPY_LIMIT_ENV) else {
        return Ok(COPY_LIMIT);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if (5 << 20..=COPY_LIMIT).contains(&n) => Ok(n),
        _ => Err(Error::Setting {
            reason: format!(
                "{COPY_LIMIT_ENV}={value:?} is not a size pqsync can use: give the largest object the store copies in one request, in bytes, from 5242880 (5 MiB) to 5368709120 (5 GiB), or unset it for S3's 5 GiB"
            ),
        }),
    }
}
