//! S3 and R2 stores: endpoint, credentials and plain-HTTP checks made before
//! any request.

use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::ClientConfigKey;

use crate::error::{Error, JurisdictionOrigin, Result};
use crate::http::{Budget, Connector};
use crate::open::{CredentialSource, OpenOptions};
use crate::remote::{parse_jurisdiction, Jurisdiction};

/// object_store's instance metadata endpoint when `AWS_METADATA_ENDPOINT`
/// is not set.
const DEFAULT_METADATA_ENDPOINT: &str = "http://169.254.169.254";

const AWS_KEYS: &str = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY";
const R2_KEYS: &str = "R2_ACCESS_KEY_ID/R2_SECRET_ACCESS_KEY";

/// A built S3 or R2 store and what it will use.
pub(crate) struct Built {
    pub store: AmazonS3,
    pub endpoint: String,
    pub credentials: CredentialSource,
}

/// Where an S3 or R2 store lives.
pub(crate) enum Target<'a> {
    S3 {
        bucket: &'a str,
    },
    R2 {
        account: &'a str,
        bucket: &'a str,
        jurisdiction: Jurisdiction,
    },
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
pub(crate) fn build(
    target: &Target<'_>,
    url: &str,
    opts: &OpenOptions,
    budget: Budget,
    connector: Connector,
) -> Result<Built> {
    let mut b = AmazonS3Builder::from_env()
        .with_retry(budget.retry_config())
        .with_http_connector(connector)
        .with_config(
            AmazonS3ConfigKey::Client(ClientConfigKey::ConnectTimeout),
            format!("{}ms", budget.connect.as_millis()),
        );
    let (endpoint, origin) = match target {
        Target::S3 { bucket } => {
            b = b.with_bucket_name(*bucket);
            if b.get_config_value(&AmazonS3ConfigKey::Region).is_none() {
                b = b.with_region("us-east-1");
            }
            match chosen_endpoint(opts) {
                Some((endpoint, origin)) => (endpoint, Some(origin)),
                None => (default_s3_endpoint(&b, bucket), None),
            }
        }
        Target::R2 {
            account,
            bucket,
            jurisdiction,
        } => {
            b = b.with_bucket_name(*bucket).with_region("auto");
            if let (Ok(k), Ok(s)) = (
                std::env::var("R2_ACCESS_KEY_ID"),
                std::env::var("R2_SECRET_ACCESS_KEY"),
            ) {
                b = b.with_access_key_id(k).with_secret_access_key(s);
            }
            match &opts.endpoint {
                Some(e) => (e.clone(), Some("--endpoint".to_string())),
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
    if origin.is_some() || matches!(target, Target::R2 { .. }) {
        // Path-style whenever an endpoint is set. The S3-specific endpoint
        // (`AWS_ENDPOINT_URL_S3`) would win over the generic one inside
        // object_store, so set both.
        b = b
            .with_endpoint(&endpoint)
            .with_config(AmazonS3ConfigKey::S3Endpoint, &endpoint)
            .with_virtual_hosted_style_request(false);
    }
    let credentials = credential_source(&b, matches!(target, Target::R2 { .. }));
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
    let store = b.build().map_err(|source| Error::Config {
        url: url.to_string(),
        source,
    })?;
    Ok(Built {
        store,
        endpoint,
        credentials,
    })
}

/// `--endpoint`, else `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or
/// `AWS_ENDPOINT`, with where it came from.
fn chosen_endpoint(opts: &OpenOptions) -> Option<(String, String)> {
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
fn credential_source(b: &AmazonS3Builder, r2: bool) -> CredentialSource {
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
    let mut fix = if r2 {
        "set R2_ACCESS_KEY_ID and R2_SECRET_ACCESS_KEY (or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            .to_string()
    } else {
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY".to_string()
    };
    if let Some(profile) = unread_profile() {
        fix.push_str(&format!(
            "; pqsync does not read ~/.aws profiles yet (a later version will), so {profile} has no effect: export the keys instead"
        ));
    }
    CredentialSource::InstanceMetadata {
        endpoint: get(AmazonS3ConfigKey::MetadataEndpoint)
            .unwrap_or_else(|| DEFAULT_METADATA_ENDPOINT.into()),
        tried,
        fix,
    }
}

/// An AWS profile the user may expect pqsync to read: `AWS_PROFILE=…`, or
/// the shared credentials file when it exists.
fn unread_profile() -> Option<String> {
    if let Some(p) = std::env::var("AWS_PROFILE").ok().filter(|p| !p.is_empty()) {
        return Some(format!("AWS_PROFILE={p}"));
    }
    let file = match std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        Some(f) if !f.is_empty() => std::path::PathBuf::from(f),
        _ => std::path::PathBuf::from(std::env::var_os("HOME")?).join(".aws/credentials"),
    };
    file.is_file().then(|| file.display().to_string())
}
