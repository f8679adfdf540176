//! Counting wrappers: every request a tree makes passes through one, so a
//! run can report how many requests it made. Each wrapper implements every
//! method of its trait (none falls back to a default that would bypass the
//! count).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartId, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
    UploadPart,
};

use super::DELETE_BATCH;

/// What a tree's requests cost, as R2 bills them: class A (writes, lists,
/// multipart steps and copies), class B (reads and HEADs), and free
/// (deletes, aborts); and the bytes sent in bodies and received.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Usage {
    /// Every request.
    pub requests: u64,
    /// Class A requests.
    pub class_a: u64,
    /// Class B requests.
    pub class_b: u64,
    /// Bytes of request bodies (uploads).
    pub bytes_sent: u64,
    /// Bytes of response bodies read (downloads).
    pub bytes_received: u64,
}

impl Usage {
    /// Takes `earlier` counts away, leaving what came after them.
    pub fn subtract(&mut self, earlier: &Usage) {
        self.requests = self.requests.saturating_sub(earlier.requests);
        self.class_a = self.class_a.saturating_sub(earlier.class_a);
        self.class_b = self.class_b.saturating_sub(earlier.class_b);
        self.bytes_sent = self.bytes_sent.saturating_sub(earlier.bytes_sent);
        self.bytes_received = self.bytes_received.saturating_sub(earlier.bytes_received);
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, o: Usage) {
        self.requests += o.requests;
        self.class_a += o.class_a;
        self.class_b += o.class_b;
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
    }
}

/// The counters behind [`Usage`]; the total is the tree's request count.
#[derive(Debug, Default)]
pub(super) struct Meter {
    pub(super) requests: Arc<AtomicU64>,
    class_a: AtomicU64,
    class_b: AtomicU64,
    sent: AtomicU64,
    received: Arc<AtomicU64>,
}

/// A request's billing class.
#[derive(Clone, Copy)]
enum Class {
    A,
    B,
    Free,
}

impl Meter {
    fn hit(&self, class: Class, n: u64) {
        self.requests.fetch_add(n, Ordering::SeqCst);
        match class {
            Class::A => self.class_a.fetch_add(n, Ordering::Relaxed),
            Class::B => self.class_b.fetch_add(n, Ordering::Relaxed),
            Class::Free => 0,
        };
    }

    /// Counts one class A request made outside the store's client (a copy
    /// between buckets).
    pub(super) fn hit_write(&self) {
        self.hit(Class::A, 1);
    }

    /// Counts the requests of a copy in parts, made outside the store's
    /// client.
    pub(super) fn hit_copy(&self, copy: super::PartCopy) {
        self.hit(Class::B, copy.reads);
        self.hit(Class::A, copy.writes);
    }

    fn sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn received(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// The counts so far.
    pub(super) fn usage(&self) -> Usage {
        Usage {
            requests: self.requests.load(Ordering::SeqCst),
            class_a: self.class_a.load(Ordering::Relaxed),
            class_b: self.class_b.load(Ordering::Relaxed),
            bytes_sent: self.sent.load(Ordering::Relaxed),
            bytes_received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// Counts every request made to the wrapped store. Bulk deletes count one
/// request per 1,000 objects, as S3 sends them.
#[derive(Debug)]
pub(super) struct CountingStore {
    pub(super) inner: Arc<dyn ObjectStore>,
    pub(super) meter: Arc<Meter>,
}

impl CountingStore {
    fn hit(&self, class: Class) {
        self.meter.hit(class, 1);
    }
}

impl std::fmt::Display for CountingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[derive(Debug)]
struct CountingUpload {
    inner: Box<dyn MultipartUpload>,
    meter: Arc<Meter>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.meter.hit(Class::A, 1);
        self.meter.sent(data.content_length());
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.meter.hit(Class::A, 1);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.meter.hit(Class::Free, 1);
        self.inner.abort().await
    }
}

/// Counts requests made through the low-level multipart API.
pub(super) struct CountingMultipart {
    pub(super) inner: Arc<dyn MultipartStore>,
    pub(super) meter: Arc<Meter>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MultipartStore for CountingMultipart {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.meter.hit(Class::A, 1);
        self.inner.create_multipart(path).await
    }

    async fn create_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<MultipartId> {
        self.meter.hit(Class::A, 1);
        self.inner.create_multipart_opts(path, opts).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.meter.hit(Class::A, 1);
        self.meter.sent(data.content_length());
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.meter.hit(Class::A, 1);
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.meter.hit(Class::Free, 1);
        self.inner.abort_multipart(path, id).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for CountingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.hit(Class::A);
        self.meter.sent(payload.content_length());
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.hit(Class::A);
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            meter: self.meter.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.hit(Class::B);
        let mut result = self.inner.get_opts(location, options).await?;
        result.payload = match result.payload {
            GetResultPayload::Stream(stream) => {
                let received = self.meter.received.clone();
                GetResultPayload::Stream(
                    stream
                        .inspect(move |chunk| {
                            if let Ok(b) = chunk {
                                received.fetch_add(b.len() as u64, Ordering::Relaxed);
                            }
                        })
                        .boxed(),
                )
            }
            file => {
                self.meter
                    .received((result.range.end - result.range.start) as usize);
                file
            }
        };
        Ok(result)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.meter.hit(Class::B, ranges.len().max(1) as u64);
        let got = self.inner.get_ranges(location, ranges).await?;
        self.meter.received(got.iter().map(Bytes::len).sum());
        Ok(got)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let meter = self.meter.clone();
        let seen = Arc::new(AtomicU64::new(0));
        let counted = locations
            .inspect(move |_| {
                if seen
                    .fetch_add(1, Ordering::SeqCst)
                    .is_multiple_of(DELETE_BATCH)
                {
                    meter.hit(Class::Free, 1);
                }
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.hit(Class::A);
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.hit(Class::A);
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.hit(Class::A);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.hit(Class::A);
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.hit(Class::A);
        self.inner.rename_opts(from, to, options).await
    }
}
