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
    CopyOptions, GetOptions, GetResult, ListResult, MultipartId, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

use super::DELETE_BATCH;

/// Counts every request made to the wrapped store. Bulk deletes count one
/// request per 1,000 objects, as S3 sends them.
#[derive(Debug)]
pub(super) struct CountingStore {
    pub(super) inner: Arc<dyn ObjectStore>,
    pub(super) requests: Arc<AtomicU64>,
}

impl CountingStore {
    fn hit(&self) {
        self.requests.fetch_add(1, Ordering::SeqCst);
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
    requests: Arc<AtomicU64>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MultipartUpload for CountingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.abort().await
    }
}

/// Counts requests made through the low-level multipart API.
pub(super) struct CountingMultipart {
    pub(super) inner: Arc<dyn MultipartStore>,
    pub(super) requests: Arc<AtomicU64>,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl MultipartStore for CountingMultipart {
    async fn create_multipart(&self, path: &Path) -> object_store::Result<MultipartId> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.create_multipart(path).await
    }

    async fn create_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<MultipartId> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.create_multipart_opts(path, opts).await
    }

    async fn put_part(
        &self,
        path: &Path,
        id: &MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<PartId> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<PartId>,
    ) -> object_store::Result<PutResult> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.complete_multipart(path, id, parts).await
    }

    async fn abort_multipart(&self, path: &Path, id: &MultipartId) -> object_store::Result<()> {
        self.requests.fetch_add(1, Ordering::SeqCst);
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
        self.hit();
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.hit();
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountingUpload {
            inner,
            requests: self.requests.clone(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.hit();
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.requests
            .fetch_add(ranges.len().max(1) as u64, Ordering::SeqCst);
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let requests = self.requests.clone();
        let seen = Arc::new(AtomicU64::new(0));
        let counted = locations
            .inspect(move |_| {
                if seen
                    .fetch_add(1, Ordering::SeqCst)
                    .is_multiple_of(DELETE_BATCH)
                {
                    requests.fetch_add(1, Ordering::SeqCst);
                }
            })
            .boxed();
        self.inner.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.hit();
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.hit();
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.hit();
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.hit();
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.hit();
        self.inner.rename_opts(from, to, options).await
    }
}
