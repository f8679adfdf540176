//! CopyObject between two buckets of one S3-compatible store, which
//! `object_store` cannot do (its copy stays inside one bucket): one signed
//! `PUT` with `x-amz-copy-source`, so the bytes never leave the store.

use std::sync::Arc;

use object_store::aws::{AmazonS3, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// The bytes of a key S3 leaves as they are in a path: everything else is
/// percent-encoded, as SigV4's canonical URI wants.
const KEY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Copies objects into one bucket from the other buckets of its store.
pub struct BucketCopier {
    store: Arc<AmazonS3>,
    client: reqwest::Client,
    /// `scheme://host[:port]` of the path-style endpoint.
    endpoint: String,
    region: String,
    bucket: String,
    scope: String,
}

impl std::fmt::Debug for BucketCopier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketCopier")
            .field("scope", &self.scope)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl BucketCopier {
    pub(crate) fn new(
        store: Arc<AmazonS3>,
        endpoint: &str,
        region: &str,
        bucket: &str,
        identity: &str,
    ) -> Self {
        BucketCopier {
            store,
            client: reqwest::Client::new(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            bucket: bucket.to_string(),
            scope: format!("{}|{region}|{identity}", endpoint.trim_end_matches('/')),
        }
    }

    /// The endpoint, region and credentials: buckets with equal scopes can
    /// copy between each other. R2's jurisdictions have their own
    /// endpoints, so they never share one.
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The bucket copied into.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Copies `from_key` of `from_bucket` to `to_key` in this bucket, with
    /// its metadata.
    ///
    /// # Errors
    /// `NotFound` for a missing source object; `Generic` for any other
    /// failure, with the store's answer.
    pub async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_key: &str,
    ) -> object_store::Result<()> {
        let generic = |msg: String| object_store::Error::Generic {
            store: "S3",
            source: msg.into(),
        };
        let url = format!(
            "{}/{}/{}",
            self.endpoint,
            self.bucket,
            utf8_percent_encode(to_key, KEY)
        );
        let source = format!("/{from_bucket}/{}", utf8_percent_encode(from_key, KEY));
        let mut request: HttpRequest = ::http::Request::builder()
            .method("PUT")
            .uri(&url)
            .header("x-amz-copy-source", &source)
            .header("x-amz-metadata-directive", "COPY")
            .body(HttpRequestBody::empty())
            .map_err(|e| generic(e.to_string()))?;
        let credential = self.store.credentials().get_credential().await?;
        AwsAuthorizer::new(&credential, "s3", &self.region).try_authorize(&mut request, None)?;
        let response = self
            .client
            .put(&url)
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(|e| generic(format!("CopyObject to {url}: {e}")))?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        // S3 can answer 200 and still report an error in the body.
        if status.is_success() && !body.contains("<Error>") {
            return Ok(());
        }
        if status.as_u16() == 404 {
            return Err(object_store::Error::NotFound {
                path: format!("{from_bucket}/{from_key}"),
                source: body.into(),
            });
        }
        let detail: String = body.chars().take(300).collect();
        Err(generic(format!(
            "CopyObject from {from_bucket}/{from_key} to {url} answered {status}: {detail}"
        )))
    }
}
