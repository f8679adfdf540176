//! Copies inside one S3-compatible store, which `object_store` cannot do
//! between buckets (its copy stays inside one bucket) nor above the 5 GiB
//! a single CopyObject takes: signed `PUT`s with `x-amz-copy-source`, so
//! the bytes never leave the store.
//!
//! An object up to the copy limit goes in one CopyObject. A larger one is
//! copied in parts: a HEAD for its attributes and ETag, a multipart upload
//! created with those attributes, one UploadPartCopy per range (each
//! pinned to the ETag, so a concurrent overwrite fails the copy instead of
//! mixing two versions) and the completion.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
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

/// The largest object S3 (and R2) copies in one request.
pub const COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// The smallest part S3 takes (all but the last part of an upload).
const MIN_PART: u64 = 5 * 1024 * 1024;

/// The part size aimed at for a large copy: few requests, each well
/// below the limit one part copy has.
const PART: u64 = 1024 * 1024 * 1024;

/// The most parts one multipart upload holds.
const MAX_PARTS: u64 = 10_000;

/// Part copies in flight for one object.
const PARTS_IN_FLIGHT: usize = 4;

/// How long a connection to the endpoint may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long one copy request may take: the store copies up to the part
/// size (about 1 GiB) before it answers.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// Attempts of one request that the store answers with a 5xx (`SlowDown`,
/// `InternalError`, ...) or that fails on the way.
const ATTEMPTS: u32 = 4;

/// The variable that lowers the copy limit, for a store that takes less
/// than 5 GiB in one copy.
pub const COPY_LIMIT_ENV: &str = "PQSYNC_COPY_LIMIT";

/// Copies objects into one bucket from the store's buckets (itself
/// included).
pub struct BucketCopier {
    store: Arc<AmazonS3>,
    client: reqwest::Client,
    /// `scheme://host[:port]` of the path-style endpoint.
    endpoint: String,
    region: String,
    bucket: String,
    scope: String,
    limit: u64,
}

impl std::fmt::Debug for BucketCopier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketCopier")
            .field("scope", &self.scope)
            .field("bucket", &self.bucket)
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

/// A store's answer: its status, headers and body.
struct Answer {
    status: reqwest::StatusCode,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Answer {
    /// Whether the store did it: S3 can answer 200 and still report an
    /// error in the body (CopyObject, UploadPartCopy, the completion).
    fn ok(&self) -> bool {
        self.status.is_success() && !self.body.contains("<Error>")
    }

    /// The store's error, as `object_store` reports it.
    fn error(self, what: &str, source_key: &str) -> object_store::Error {
        if self.status.as_u16() == 404 {
            return object_store::Error::NotFound {
                path: source_key.to_string(),
                source: self.body.into(),
            };
        }
        if self.status.as_u16() == 412 {
            return object_store::Error::Precondition {
                path: source_key.to_string(),
                source: format!("{what}: {source_key} changed while it was copied").into(),
            };
        }
        let code = xml_text(&self.body, "Code");
        let message = xml_text(&self.body, "Message");
        let detail = match (&code, &message) {
            (Some(c), Some(m)) => format!("{c}: {m}"),
            (Some(c), None) => c.clone(),
            _ => self.body.chars().take(300).collect(),
        };
        let detail = detail.split_whitespace().collect::<Vec<_>>().join(" ");
        let hint = match detail.contains("copy source is larger") || code.as_deref() == Some("EntityTooLarge") {
            true => format!("; the store copies less in one request than pqsync assumed: set {COPY_LIMIT_ENV} to its limit in bytes"),
            false => String::new(),
        };
        generic(format!("{what} answered {}: {detail}{hint}", self.status))
    }
}

/// A request header.
fn pair(name: &str, value: String) -> object_store::Result<(String, http::HeaderValue)> {
    let value = http::HeaderValue::try_from(value)
        .map_err(|e| generic(format!("a {name} header pqsync cannot send: {e}")))?;
    Ok((name.to_string(), value))
}

fn generic(msg: String) -> object_store::Error {
    object_store::Error::Generic {
        store: "S3",
        source: msg.into(),
    }
}

/// The text of the first `<tag>` in `xml`, with XML's entities undone.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&#34;", "\"")
            .replace("&amp;", "&"),
    )
}

/// `text` with XML's special characters as entities.
fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The part size for copying `size` bytes with a copy limit of `limit`:
/// about [`PART`], never above the limit nor below S3's smallest part, and
/// large enough to need no more than 10,000 parts.
fn part_size(size: u64, limit: u64) -> u64 {
    PART.min(limit).max(size.div_ceil(MAX_PARTS)).max(MIN_PART)
}

impl BucketCopier {
    pub(crate) fn new(
        store: Arc<AmazonS3>,
        endpoint: &str,
        region: &str,
        bucket: &str,
        identity: &str,
        limit: u64,
    ) -> Self {
        BucketCopier {
            store,
            client: reqwest::Client::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap_or_default(),
            endpoint: endpoint.trim_end_matches('/').to_string(),
            region: region.to_string(),
            bucket: bucket.to_string(),
            scope: format!("{}|{region}|{identity}", endpoint.trim_end_matches('/')),
            limit: limit.max(MIN_PART),
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

    /// The largest object one CopyObject takes ([`COPY_LIMIT`], or less
    /// as [`COPY_LIMIT_ENV`] says); [`BucketCopier::copy_in_parts`] copies
    /// larger ones.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The path-style URL of `key` in `bucket`.
    fn url(&self, bucket: &str, key: &str) -> String {
        format!(
            "{}/{bucket}/{}",
            self.endpoint,
            utf8_percent_encode(key, KEY)
        )
    }

    /// Sends one signed request, again after a pause when the store
    /// answers with a 5xx or the request fails on the way (up to
    /// [`ATTEMPTS`] times): one failed part does not start a large copy
    /// over.
    async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(String, http::HeaderValue)],
        body: Bytes,
    ) -> object_store::Result<Answer> {
        let mut attempt = 1;
        loop {
            let sent = self
                .send_once(method.clone(), url, headers, body.clone())
                .await;
            let again = match &sent {
                Ok(a) => a.status.is_server_error(),
                Err(object_store::Error::Generic { .. }) => true,
                Err(_) => false,
            };
            if !again || attempt >= ATTEMPTS {
                return sent;
            }
            tokio::time::sleep(std::time::Duration::from_millis(250 << attempt)).await;
            attempt += 1;
        }
    }

    /// Sends one signed request once.
    async fn send_once(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(String, http::HeaderValue)],
        body: Bytes,
    ) -> object_store::Result<Answer> {
        let mut builder = ::http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            builder = builder.header(k.as_str(), v.clone());
        }
        let mut request: HttpRequest = builder
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| generic(e.to_string()))?;
        let credential = self.store.credentials().get_credential().await?;
        AwsAuthorizer::new(&credential, "s3", &self.region).try_authorize(&mut request, None)?;
        let response = self
            .client
            .request(method.clone(), url)
            .headers(request.headers().clone())
            .body(body)
            .send()
            .await
            .map_err(|e| generic(format!("{method} {url}: {e}")))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.unwrap_or_default();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    /// The `x-amz-copy-source` of `key` in `bucket`.
    fn source(bucket: &str, key: &str) -> String {
        format!("/{bucket}/{}", utf8_percent_encode(key, KEY))
    }

    /// Copies `from_key` of `from_bucket` to `to_key` in this bucket, with
    /// its metadata, in one CopyObject (up to [`BucketCopier::limit`]).
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
        let url = self.url(&self.bucket, to_key);
        let headers = [
            pair("x-amz-copy-source", Self::source(from_bucket, from_key))?,
            pair("x-amz-metadata-directive", "COPY".into())?,
        ];
        let answer = self
            .send(http::Method::PUT, &url, &headers, Bytes::new())
            .await?;
        if answer.ok() {
            return Ok(());
        }
        let what = format!("CopyObject from {from_bucket}/{from_key} to {url}");
        Err(answer.error(&what, &format!("{from_bucket}/{from_key}")))
    }

    /// Copies `from_key` of `from_bucket` (any size) to `to_key` in this
    /// bucket, with its content type and metadata, in parts of about
    /// 1 GiB. Returns the requests made: the HEAD first, then the writes.
    /// A failed copy aborts its upload.
    ///
    /// # Errors
    /// `NotFound` for a missing source object; `Precondition` when it
    /// changed during the copy; `Generic` for any other failure.
    pub async fn copy_in_parts(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_key: &str,
    ) -> object_store::Result<CopyRequests> {
        let named = format!("{from_bucket}/{from_key}");
        let head = self
            .send(
                http::Method::HEAD,
                &self.url(from_bucket, from_key),
                &[],
                Bytes::new(),
            )
            .await?;
        if !head.ok() {
            return Err(head.error(&format!("HEAD {named}"), &named));
        }
        let header = |name: &str| {
            head.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let size: u64 = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| generic(format!("HEAD {named} gave no size")))?;
        let etag = header("etag").ok_or_else(|| generic(format!("HEAD {named} gave no ETag")))?;
        if part_size(size, self.limit) > self.limit {
            return Err(generic(format!(
                "{named} ({size} bytes) cannot be copied in 10,000 parts of at most {} bytes; raise {COPY_LIMIT_ENV}",
                self.limit
            )));
        }
        // The attributes a CopyObject with the COPY directive keeps.
        let kept: Vec<(String, http::HeaderValue)> = head
            .headers
            .iter()
            .filter(|(k, _)| {
                let k = k.as_str();
                k.starts_with("x-amz-meta-")
                    || matches!(
                        k,
                        "content-type"
                            | "content-encoding"
                            | "content-disposition"
                            | "content-language"
                            | "cache-control"
                            | "expires"
                    )
            })
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let to_url = self.url(&self.bucket, to_key);
        let created = self
            .send(
                http::Method::POST,
                &format!("{to_url}?uploads="),
                &kept,
                Bytes::new(),
            )
            .await?;
        let mut requests = CopyRequests {
            reads: 1,
            writes: 1,
        };
        if !created.ok() {
            return Err(created.error(&format!("CreateMultipartUpload for {to_url}"), &named));
        }
        let upload_id = xml_text(&created.body, "UploadId").ok_or_else(|| {
            generic(format!(
                "CreateMultipartUpload for {to_url} gave no UploadId"
            ))
        })?;
        let upload = utf8_percent_encode(&upload_id, NON_ALPHANUMERIC).to_string();
        let outcome = match self
            .copy_parts(from_bucket, from_key, &to_url, &upload, &etag, size)
            .await
        {
            Ok(etags) => {
                requests.writes += etags.len() as u64 + 1;
                self.complete(&to_url, &upload, &etags, &named).await
            }
            Err(e) => Err(e),
        };
        let Err(failed) = outcome else {
            return Ok(requests);
        };
        // Leave no upload behind to be billed for.
        let aborted = self
            .send(
                http::Method::DELETE,
                &format!("{to_url}?uploadId={upload}"),
                &[],
                Bytes::new(),
            )
            .await;
        match aborted {
            Ok(a) if a.ok() || a.status.as_u16() == 404 => Err(failed),
            _ => Err(generic(format!(
                "{failed}; its multipart upload {upload_id} to {to_url} is left behind (a lifecycle rule that aborts incomplete uploads removes it)"
            ))),
        }
    }

    /// Copies the ranges of `size` bytes, each pinned to `etag`; returns
    /// the parts' ETags in order.
    async fn copy_parts(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_url: &str,
        upload: &str,
        etag: &str,
        size: u64,
    ) -> object_store::Result<Vec<String>> {
        let named = format!("{from_bucket}/{from_key}");
        let source = Self::source(from_bucket, from_key);
        let part = part_size(size, self.limit);
        let ranges: Vec<(u64, u64)> = (0..size.div_ceil(part).max(1))
            .map(|i| (i * part, ((i + 1) * part).min(size)))
            .collect();
        futures::stream::iter(ranges.into_iter().enumerate())
            .map(|(i, (start, end))| {
                let url = format!("{to_url}?partNumber={}&uploadId={upload}", i + 1);
                let named = &named;
                let source = source.clone();
                async move {
                    let mut headers = vec![
                        pair("x-amz-copy-source", source)?,
                        pair("x-amz-copy-source-if-match", etag.to_string())?,
                    ];
                    if size > 0 {
                        let range = format!("bytes={start}-{}", end - 1);
                        headers.push(pair("x-amz-copy-source-range", range)?);
                    }
                    let answer = self
                        .send(http::Method::PUT, &url, &headers, Bytes::new())
                        .await?;
                    if !answer.ok() {
                        return Err(answer.error(&format!("UploadPartCopy {}", i + 1), named));
                    }
                    xml_text(&answer.body, "ETag")
                        .ok_or_else(|| generic(format!("UploadPartCopy {} gave no ETag", i + 1)))
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Completes the upload from its parts' ETags.
    async fn complete(
        &self,
        to_url: &str,
        upload: &str,
        etags: &[String],
        named: &str,
    ) -> object_store::Result<()> {
        let mut xml = String::from("<CompleteMultipartUpload>");
        for (i, etag) in etags.iter().enumerate() {
            xml.push_str(&format!(
                "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
                i + 1,
                xml_escape(etag)
            ));
        }
        xml.push_str("</CompleteMultipartUpload>");
        let answer = self
            .send(
                http::Method::POST,
                &format!("{to_url}?uploadId={upload}"),
                &[pair("content-type", "application/xml".into())?],
                Bytes::from(xml),
            )
            .await?;
        if answer.ok() {
            return Ok(());
        }
        Err(answer.error(&format!("CompleteMultipartUpload for {to_url}"), named))
    }
}

/// The requests a copy in parts made, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyRequests {
    /// Reads (the HEAD).
    pub reads: u64,
    /// Writes (creating the upload, each part, the completion or abort).
    pub writes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_within_the_limit_and_s3_bounds() {
        let gib = 1024 * 1024 * 1024;
        assert_eq!(part_size(6 * gib, COPY_LIMIT), gib);
        assert_eq!(part_size(14 << 20, 6 << 20), 6 << 20);
        // 10,000 parts at most, even for an object of 50 TB.
        let huge: u64 = 50_000_000_000_000;
        assert!(huge.div_ceil(part_size(huge, COPY_LIMIT)) <= MAX_PARTS);
        assert_eq!(part_size(1, 1), MIN_PART);
    }

    #[test]
    fn xml_text_undoes_entities() {
        let body = "<CopyPartResult><ETag>&quot;9b2c&quot;</ETag></CopyPartResult>";
        assert_eq!(xml_text(body, "ETag").as_deref(), Some("\"9b2c\""));
        assert_eq!(xml_text(body, "UploadId"), None);
        assert_eq!(xml_escape("\"a&b\""), "&quot;a&amp;b&quot;");
    }
}
