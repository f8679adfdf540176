//! An object-store prefix as a sync tree.
//!
//! # Contract
//! * The tree's manifest is the object `<prefix>/_meta/manifest.json`; reading
//!   it is one GET. Listing is never needed to compute a diff.
//! * Writes are verified before they become visible: a small file is hashed
//!   in memory before its single PUT; a large one is hashed while its parts
//!   stream, and the multipart upload is completed only if size and hash match
//!   the manifest entry (otherwise it is aborted, so no reader ever sees it).
//! * Multipart parts are all the same size except the last, as R2 requires.
//! * Every request goes through a counting wrapper, so a run can report how
//!   many requests it made.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, CopyOptions, GetOptions, GetResult, ListResult, MultipartId,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, UpdateVersion, UploadPart,
};

use crate::error::{Error, Result};
use crate::hash::ContentHasher;
use crate::manifest::{FileEntry, Manifest, MANIFEST_PATH};

/// Files larger than this are sent with a multipart upload.
pub const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;

/// The smallest part size pqsync uses (S3 and R2 require at least 5 MiB).
pub const MIN_PART_SIZE: u64 = 8 * 1024 * 1024;

/// S3's and R2's limit on the number of parts.
const MAX_PARTS: u64 = 10_000;

/// Parts of one file in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Parts of one resumable upload in flight at once. A run killed
/// mid-upload loses (and the next run re-sends) at most this many parts;
/// with one, a 2 GiB upload to a loopback server took twice as long as with
/// three, because every part waited for the previous one's round trip.
pub const RESUMABLE_PARTS_IN_FLIGHT: usize = 3;

/// Objects per bulk-delete request (S3's DeleteObjects limit).
const DELETE_BATCH: u64 = 1000;

/// Object metadata key under which pqsync stores `"<alg>:<hex>"`.
pub const HASH_METADATA_KEY: &str = "pqsync-hash";

/// The size of every part but the last for a file of `size` bytes: at least
/// [`MIN_PART_SIZE`], and large enough to stay within 10,000 parts, rounded up
/// to a whole MiB.
pub fn part_size_for(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS);
    needed
        .div_ceil(MIB)
        .max(1)
        .saturating_mul(MIB)
        .max(MIN_PART_SIZE)
}

/// Where pqsync keeps its own objects inside a remote prefix; never synced.
pub const STATE_PREFIX: &str = "_meta/.pqsync";

/// How the manifest commit is guarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Only if there is no manifest yet (`If-None-Match: *`).
    Create,
    /// Only if the manifest still has this ETag (`If-Match`).
    Update(String),
    /// Unconditionally (stores without enforced conditional writes, where a
    /// lease guards the commit instead).
    Overwrite,
}

/// The remote manifest as read, with the ETag needed for a conditional write.
#[derive(Debug, Clone)]
pub struct RemoteManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// Its ETag, if the store reports one.
    pub etag: Option<String>,
}

/// A prefix in an object store.
#[derive(Clone)]
pub struct StoreTree {
    store: Arc<dyn ObjectStore>,
    multipart: Option<Arc<dyn MultipartStore>>,
    requests: Arc<AtomicU64>,
    prefix: Vec<String>,
    url: String,
    attributes: bool,
    multipart_threshold: u64,
}

impl std::fmt::Debug for StoreTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTree")
            .field("url", &self.url)
            .field("store", &self.store)
            .field("resumable", &self.multipart.is_some())
            .finish_non_exhaustive()
    }
}

impl StoreTree {
    /// A tree at `prefix` (a `/`-separated path, possibly empty) in `store`.
    /// `url` is how the user named it and appears in messages.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: impl Into<String>) -> Self {
        let requests = Arc::new(AtomicU64::new(0));
        let counting: Arc<dyn ObjectStore> = Arc::new(CountingStore {
            inner: store,
            requests: requests.clone(),
        });
        StoreTree {
            store: counting,
            multipart: None,
            requests,
            prefix: prefix
                .split('/')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            url: url.into(),
            attributes: true,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
        }
    }

    /// Whether to send content type and the content hash as object
    /// attributes (stores on plain directories do not keep them).
    pub fn with_attributes(mut self, enabled: bool) -> Self {
        self.attributes = enabled;
        self
    }

    /// Gives the tree the store's low-level multipart API, so large uploads
    /// can be resumed part by part after a crash. `store` must be the same
    /// store as the tree's.
    pub fn with_multipart_store(mut self, store: Arc<dyn MultipartStore>) -> Self {
        self.multipart = Some(Arc::new(CountingMultipart {
            inner: store,
            requests: self.requests.clone(),
        }));
        self
    }

    /// Whether large uploads can resume after a crash.
    pub fn resumable(&self) -> bool {
        self.multipart.is_some()
    }

    /// Aborts a multipart upload an earlier run left behind.
    ///
    /// # Errors
    /// [`Error::Store`]; an upload that is already gone is not an error.
    pub async fn abort_upload(&self, rel: &str, upload_id: &str) -> Result<()> {
        let Some(mp) = &self.multipart else {
            return Ok(());
        };
        match mp
            .abort_multipart(&self.location(rel), &upload_id.to_string())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(self.display(rel), e)),
        }
    }

    /// Sets the size above which uploads are multipart.
    pub fn with_multipart_threshold(mut self, bytes: u64) -> Self {
        self.multipart_threshold = bytes.max(MIN_PART_SIZE);
        self
    }

    /// The URL the tree was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests made through this tree so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The store, wrapped in the request counter.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object path of a tree-relative path.
    pub fn location(&self, rel: &str) -> Path {
        Path::from_iter(self.prefix.iter().map(String::as_str).chain(rel.split('/')))
    }

    fn display(&self, rel: &str) -> String {
        format!("{}/{}", self.url.trim_end_matches('/'), rel)
    }

    /// Requests an upload of `size` bytes takes.
    pub fn upload_requests(&self, size: u64) -> u64 {
        if size <= self.multipart_threshold {
            1
        } else {
            2 + size.div_ceil(part_size_for(size))
        }
    }

    /// Requests deleting `n` objects takes.
    pub fn delete_requests(n: u64) -> u64 {
        n.div_ceil(DELETE_BATCH)
    }

    /// Reads the manifest; `None` if there is none.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] if it does not parse, [`Error::Store`] if
    /// the request fails.
    pub async fn read_manifest(&self) -> Result<Option<RemoteManifest>> {
        let loc = self.location(MANIFEST_PATH);
        let shown = self.display(MANIFEST_PATH);
        let got = match self.store.get_opts(&loc, GetOptions::default()).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(Error::store(shown, e)),
        };
        let etag = got.meta.e_tag.clone();
        let bytes = got.bytes().await.map_err(|e| Error::store(&shown, e))?;
        let manifest = Manifest::from_slice(&bytes, &shown)?;
        Ok(Some(RemoteManifest { manifest, etag }))
    }

    /// Writes the manifest (one PUT) under `mode`: [`CommitMode::Create`]
    /// for a remote without one, [`CommitMode::Update`] to replace exactly
    /// the version read, [`CommitMode::Overwrite`] where the store cannot
    /// check either. Returns the new ETag, if the store reports one.
    ///
    /// # Errors
    /// [`Error::Precondition`] when another writer got there first;
    /// [`Error::Store`] otherwise.
    pub async fn write_manifest(
        &self,
        manifest: &Manifest,
        mode: CommitMode,
    ) -> Result<Option<String>> {
        let loc = self.location(MANIFEST_PATH);
        let shown = self.display(MANIFEST_PATH);
        let put_mode = match mode {
            CommitMode::Create => PutMode::Create,
            CommitMode::Update(etag) => PutMode::Update(UpdateVersion {
                e_tag: Some(etag),
                version: None,
            }),
            CommitMode::Overwrite => PutMode::Overwrite,
        };
        let opts = PutOptions {
            mode: put_mode,
            attributes: self.attrs(None, "application/json"),
            ..Default::default()
        };
        match self
            .store
            .put_opts(&loc, PutPayload::from(manifest.to_json_pretty()), opts)
            .await
        {
            Ok(r) => Ok(r.e_tag),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Err(Error::Precondition { path: shown }),
            Err(e) => Err(Error::store(shown, e)),
        }
    }

    /// Finds out, with a few requests on a scratch object under
    /// `_meta/.pqsync/`, whether the store really enforces conditional
    /// writes. Some S3 servers accept `If-None-Match`/`If-Match` and ignore
    /// them; a compare-and-swap commit is only safe where they are enforced.
    ///
    /// # Errors
    /// [`Error::Store`] if the scratch object cannot be written.
    pub async fn probe_conditional_writes(&self) -> Result<bool> {
        let rel = format!("{STATE_PREFIX}/probe-{:016x}", rand::random::<u64>());
        let loc = self.location(&rel);
        let shown = self.display(&rel);
        let put = |mode: PutMode| {
            self.store.put_opts(
                &loc,
                PutPayload::from_static(b"pqsync conditional-write probe"),
                PutOptions {
                    mode,
                    ..Default::default()
                },
            )
        };
        let first = match put(PutMode::Create).await {
            Ok(r) => r,
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => return Ok(false),
            Err(e) => return Err(Error::store(shown, e)),
        };
        let create_enforced = matches!(
            put(PutMode::Create).await,
            Err(object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. })
        );
        let update_enforced = create_enforced
            && first.e_tag.is_some()
            && matches!(
                put(PutMode::Update(UpdateVersion {
                    e_tag: Some("\"pqsync-probe-not-a-real-etag\"".into()),
                    version: None,
                }))
                .await,
                Err(object_store::Error::Precondition { .. })
            );
        let _ = self
            .store
            .delete_stream(futures::stream::iter([Ok(loc.clone())]).boxed())
            .next()
            .await;
        Ok(create_enforced && update_enforced)
    }

    /// Reads a small JSON object under the remote's `_meta/.pqsync/`.
    ///
    /// # Errors
    /// [`Error::Store`] for anything but "not found".
    pub async fn read_state(
        &self,
        name: &str,
    ) -> Result<Option<(serde_json::Value, Option<String>)>> {
        let rel = format!("{STATE_PREFIX}/{name}");
        let shown = self.display(&rel);
        match self
            .store
            .get_opts(&self.location(&rel), GetOptions::default())
            .await
        {
            Ok(g) => {
                let etag = g.meta.e_tag.clone();
                let bytes = g.bytes().await.map_err(|e| Error::store(&shown, e))?;
                let v = serde_json::from_slice(&bytes).map_err(|e| Error::ManifestCorrupt {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                Ok(Some((v, etag)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(shown, e)),
        }
    }

    /// Writes a small JSON object under the remote's `_meta/.pqsync/`.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn write_state(&self, name: &str, value: &serde_json::Value) -> Result<()> {
        let rel = format!("{STATE_PREFIX}/{name}");
        let body = serde_json::to_vec_pretty(value).expect("JSON value serialises");
        self.store
            .put_opts(
                &self.location(&rel),
                PutPayload::from(body),
                PutOptions::default(),
            )
            .await
            .map_err(|e| Error::store(self.display(&rel), e))?;
        Ok(())
    }

    /// Deletes an object under the remote's `_meta/.pqsync/`.
    pub async fn delete_state(&self, name: &str) {
        let loc = self.location(&format!("{STATE_PREFIX}/{name}"));
        let _ = self
            .store
            .delete_stream(futures::stream::iter([Ok(loc)]).boxed())
            .next()
            .await;
    }

    /// Copies an object to `backup_prefix/rel` (relative to the store's
    /// root) before it is overwritten or deleted.
    ///
    /// # Errors
    /// [`Error::Store`]; a missing object is not an error.
    pub async fn backup(&self, rel: &str, backup_prefix: &str) -> Result<()> {
        let to = Path::from_iter(
            backup_prefix
                .split('/')
                .filter(|p| !p.is_empty())
                .chain(rel.split('/')),
        );
        match self
            .store
            .copy_opts(&self.location(rel), &to, CopyOptions::default())
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::store(self.display(rel), e)),
        }
    }

    fn attrs(&self, entry: Option<&FileEntry>, content_type: &str) -> Attributes {
        let mut a = Attributes::new();
        if self.attributes {
            a.insert(Attribute::ContentType, content_type.to_string().into());
            if let Some(e) = entry {
                a.insert(
                    Attribute::Metadata(HASH_METADATA_KEY.into()),
                    e.tagged_hash().into(),
                );
            }
        }
        a
    }

    /// Streams an object.
    ///
    /// # Errors
    /// [`Error::Store`]; a missing object is a permanent error.
    pub async fn open(&self, rel: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let shown = self.display(rel);
        let got: GetResult = self
            .store
            .get_opts(&self.location(rel), GetOptions::default())
            .await
            .map_err(|e| Error::store(&shown, e))?;
        Ok(got
            .into_stream()
            .map_err(move |e| Error::store(shown.clone(), e))
            .boxed())
    }

    /// Lists the tree's objects (one request per 1,000) with their sizes,
    /// leaving out what pqsync never syncs (the manifest itself, its own
    /// state, temporary and lock files).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn list_files(&self) -> Result<std::collections::BTreeMap<String, u64>> {
        Ok(self
            .list_objects()
            .await?
            .into_iter()
            .map(|(rel, meta)| (rel, meta.size))
            .collect())
    }

    /// [`StoreTree::list_files`] with each object's full listing entry
    /// (size, modification time, ETag).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn list_objects(&self) -> Result<std::collections::BTreeMap<String, ObjectMeta>> {
        let root = Path::from_iter(self.prefix.iter().map(String::as_str));
        let skip = self.prefix.len();
        let mut out = std::collections::BTreeMap::new();
        let mut listing = self.store.list(Some(&root));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| Error::store(&self.url, e))?;
            let rel = meta
                .location
                .parts()
                .skip(skip)
                .fold(String::new(), |mut acc, p| {
                    if !acc.is_empty() {
                        acc.push('/');
                    }
                    acc.push_str(p.as_ref());
                    acc
                });
            if rel.is_empty() || crate::ignore::is_ignored(&rel) {
                continue;
            }
            out.insert(rel, meta);
        }
        Ok(out)
    }

    /// Reads a byte range of an object (one ranged GET).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn read_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes> {
        let shown = self.display(rel);
        let opts = GetOptions {
            range: Some(object_store::GetRange::Bounded(range)),
            ..Default::default()
        };
        let got = self
            .store
            .get_opts(&self.location(rel), opts)
            .await
            .map_err(|e| Error::store(&shown, e))?;
        got.bytes().await.map_err(|e| Error::store(shown, e))
    }

    /// Reads a whole object into memory (one GET); for small files.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn read_all(&self, rel: &str) -> Result<Bytes> {
        let shown = self.display(rel);
        let got = self
            .store
            .get_opts(&self.location(rel), GetOptions::default())
            .await
            .map_err(|e| Error::store(&shown, e))?;
        got.bytes().await.map_err(|e| Error::store(shown, e))
    }

    /// The size of an object and the `"<alg>:<hex>"` content hash pqsync
    /// stored in its metadata when it uploaded it, if any (one HEAD).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn head_hash(&self, rel: &str) -> Result<(u64, Option<String>)> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        let r = self
            .store
            .get_opts(&self.location(rel), opts)
            .await
            .map_err(|e| Error::store(self.display(rel), e))?;
        let tagged = r
            .attributes
            .get(&Attribute::Metadata(HASH_METADATA_KEY.into()))
            .map(|v| v.to_string());
        Ok((r.meta.size, tagged))
    }

    /// The URL of a path in the tree, as shown in messages.
    pub fn display_path(&self, rel: &str) -> String {
        self.display(rel)
    }

    /// Streams bytes into an object, verified against `entry` before it
    /// becomes visible. `on_bytes` is called as bytes are sent.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the bytes differ from the entry,
    /// [`Error::Store`] if a request fails.
    pub async fn write(
        &self,
        entry: &FileEntry,
        mut stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        parts_log: Option<&dyn PartLog>,
    ) -> Result<()> {
        if entry.size > self.multipart_threshold {
            if let (Some(mp), Some(log)) = (&self.multipart, parts_log) {
                return self.write_resumable(mp, entry, stream, on_bytes, log).await;
            }
        }
        let rel = entry.path.as_str();
        let shown = self.display(rel);
        let loc = self.location(rel);
        let content_type = entry
            .content_type
            .as_deref()
            .unwrap_or_else(|| crate::manifest::content_type_for(rel))
            .to_string();
        let mut hasher = ContentHasher::new(entry.hash_algorithm);
        let mut total = 0u64;
        let too_long = |total: u64| Error::Mismatch {
            path: rel.to_string(),
            what: "size",
            expected: entry.size.to_string(),
            actual: format!("at least {total}"),
            retryable: false,
        };

        if entry.size <= self.multipart_threshold {
            let mut buf = BytesMut::with_capacity(entry.size as usize);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                if total > entry.size {
                    return Err(too_long(total));
                }
                hasher.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            verify(entry, total, hasher)?;
            let opts = PutOptions {
                attributes: self.attrs(Some(entry), &content_type),
                ..Default::default()
            };
            self.store
                .put_opts(&loc, PutPayload::from(buf.freeze()), opts)
                .await
                .map_err(|e| Error::store(&shown, e))?;
            on_bytes(total);
            return Ok(());
        }

        let part_size = part_size_for(entry.size) as usize;
        let opts = PutMultipartOptions {
            attributes: self.attrs(Some(entry), &content_type),
            ..Default::default()
        };
        let mut upload = self
            .store
            .put_multipart_opts(&loc, opts)
            .await
            .map_err(|e| Error::store(&shown, e))?;
        let result: Result<()> = async {
            let mut in_flight = FuturesUnordered::new();
            let mut part = BytesMut::with_capacity(part_size);
            loop {
                let Some(chunk) = stream.next().await else {
                    if !part.is_empty() {
                        send_part(
                            &mut upload,
                            &mut in_flight,
                            part.split().freeze(),
                            &shown,
                            on_bytes,
                        )
                        .await?;
                    }
                    break;
                };
                let mut chunk = chunk?;
                total += chunk.len() as u64;
                if total > entry.size {
                    return Err(too_long(total));
                }
                hasher.update(&chunk);
                while !chunk.is_empty() {
                    let take = (part_size - part.len()).min(chunk.len());
                    part.extend_from_slice(&chunk.split_to(take));
                    if part.len() == part_size {
                        let full = std::mem::replace(&mut part, BytesMut::with_capacity(part_size));
                        send_part(&mut upload, &mut in_flight, full.freeze(), &shown, on_bytes)
                            .await?;
                    }
                }
            }
            while !in_flight.is_empty() {
                join_part(&mut in_flight, &shown, on_bytes).await?;
            }
            let hasher = std::mem::replace(&mut hasher, ContentHasher::new(entry.hash_algorithm));
            verify(entry, total, hasher)?;
            upload
                .complete()
                .await
                .map_err(|e| Error::store(&shown, e))?;
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = upload.abort().await;
        }
        result
    }

    /// Deletes objects, in bulk where the store supports it. Objects that
    /// are already gone count as deleted. When a bulk request fails, the
    /// objects are retried one by one so each failure names its path.
    ///
    /// # Errors
    /// Every path that could not be deleted, with its error.
    pub async fn delete_many(
        &self,
        rels: &[String],
    ) -> std::result::Result<(), Vec<(String, Error)>> {
        let locs: Vec<object_store::Result<Path>> =
            rels.iter().map(|r| Ok(self.location(r))).collect();
        let mut bulk_failed = false;
        let mut results = self
            .store
            .delete_stream(futures::stream::iter(locs).boxed());
        while let Some(r) = results.next().await {
            match r {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(_) => bulk_failed = true,
            }
        }
        if !bulk_failed {
            return Ok(());
        }
        let mut failures = Vec::new();
        for rel in rels {
            let one = futures::stream::iter([Ok(self.location(rel))]).boxed();
            if let Some(Err(e)) = self.store.delete_stream(one).next().await {
                if !matches!(e, object_store::Error::NotFound { .. }) {
                    failures.push((rel.clone(), Error::store(self.display(rel), e)));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures)
        }
    }
}

/// Progress of one resumable multipart upload, saved after every part so a
/// later run can continue it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartRecord {
    /// The file.
    pub path: String,
    /// `"<alg>:<hex>"` of the content being uploaded.
    pub hash: String,
    /// The store's upload id.
    pub upload_id: String,
    /// Size of every part but the last.
    pub part_size: u64,
    /// Finished parts: index → the store's part id (ETag).
    pub parts: std::collections::BTreeMap<usize, String>,
}

/// Where resumable uploads keep their [`PartRecord`]s.
pub trait PartLog: Send + Sync {
    /// The record for a path, if an earlier attempt left one.
    fn load(&self, path: &str) -> Option<PartRecord>;
    /// Saves a record; called after every finished part.
    fn save(&self, record: &PartRecord);
    /// Forgets a path's record (completed or abandoned).
    fn remove(&self, path: &str);
}

impl StoreTree {
    /// A multipart upload through the store's low-level API: the upload id
    /// and every finished part are logged, so an upload interrupted by a
    /// crash, a kill or a failed attempt continues from its last finished
    /// part instead of starting over. Parts already sent are read and hashed
    /// again (the hash covers the whole file) but not re-sent.
    async fn write_resumable(
        &self,
        mp: &Arc<dyn MultipartStore>,
        entry: &FileEntry,
        mut stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        log: &dyn PartLog,
    ) -> Result<()> {
        let rel = entry.path.as_str();
        let shown = self.display(rel);
        let loc = self.location(rel);
        let part_size = part_size_for(entry.size);
        let tagged = entry.tagged_hash();
        let mut record = match log.load(rel) {
            Some(r) if r.hash == tagged && r.part_size == part_size => r,
            Some(stale) => {
                let _ = self.abort_upload(rel, &stale.upload_id).await;
                log.remove(rel);
                self.new_record(mp, entry, part_size, log).await?
            }
            None => self.new_record(mp, entry, part_size, log).await?,
        };
        // A run killed between completing the upload and forgetting its
        // record leaves every part recorded: the object may already be there.
        if record.parts.len() as u64 == entry.size.div_ceil(part_size)
            && self.has_content(entry).await
        {
            log.remove(rel);
            return Ok(());
        }
        let mut hasher = ContentHasher::new(entry.hash_algorithm);
        let mut total = 0u64;
        let mut idx = 0usize;
        let mut part = BytesMut::with_capacity(part_size as usize);
        let mut in_flight = FuturesUnordered::new();
        let id = record.upload_id.clone();
        let send = |idx: usize, data: Bytes| {
            let mp = mp.clone();
            let loc = loc.clone();
            let id = id.clone();
            let len = data.len() as u64;
            tokio::spawn(async move {
                let r = mp.put_part(&loc, &id, idx, PutPayload::from(data)).await;
                (idx, len, r)
            })
        };
        let finish = |done: (
            usize,
            u64,
            object_store::Result<object_store::multipart::PartId>,
        ),
                      record: &mut PartRecord|
         -> Result<()> {
            let (i, len, r) = done;
            match r {
                Ok(pid) => {
                    record.parts.insert(i, pid.content_id);
                    log.save(record);
                    on_bytes(len);
                    Ok(())
                }
                Err(e @ object_store::Error::NotFound { .. }) => {
                    // The upload is gone (aborted or expired): start over.
                    log.remove(rel);
                    Err(Error::Store {
                        path: shown.clone(),
                        retryable: true,
                        source: e,
                    })
                }
                Err(e) => Err(Error::store(&shown, e)),
            }
        };
        let sent: Result<()> = async {
            loop {
                let chunk = stream.next().await;
                let end = chunk.is_none();
                if let Some(chunk) = chunk {
                    let mut chunk = chunk?;
                    total += chunk.len() as u64;
                    if total > entry.size {
                        return Err(Error::Mismatch {
                            path: rel.to_string(),
                            what: "size",
                            expected: entry.size.to_string(),
                            actual: format!("at least {total}"),
                            retryable: false,
                        });
                    }
                    hasher.update(&chunk);
                    while !chunk.is_empty() {
                        let take = (part_size as usize - part.len()).min(chunk.len());
                        part.extend_from_slice(&chunk.split_to(take));
                        if part.len() == part_size as usize {
                            let full = std::mem::replace(
                                &mut part,
                                BytesMut::with_capacity(part_size as usize),
                            );
                            if !record.parts.contains_key(&idx) {
                                while in_flight.len() >= RESUMABLE_PARTS_IN_FLIGHT {
                                    let done = join_task(&mut in_flight, &shown).await?;
                                    finish(done, &mut record)?;
                                }
                                in_flight.push(send(idx, full.freeze()));
                            }
                            idx += 1;
                        }
                    }
                }
                if end {
                    if !part.is_empty() && !record.parts.contains_key(&idx) {
                        while in_flight.len() >= RESUMABLE_PARTS_IN_FLIGHT {
                            let done = join_task(&mut in_flight, &shown).await?;
                            finish(done, &mut record)?;
                        }
                        in_flight.push(send(idx, part.split().freeze()));
                    }
                    break;
                }
            }
            while !in_flight.is_empty() {
                let done = join_task(&mut in_flight, &shown).await?;
                finish(done, &mut record)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            // Record whatever parts did finish, so the next attempt or run
            // does not send them again.
            while let Ok(done) = join_task(&mut in_flight, &shown).await {
                let _ = finish(done, &mut record);
            }
            return Err(e);
        }
        if let Err(e) = verify(entry, total, hasher) {
            let _ = self.abort_upload(rel, &record.upload_id).await;
            log.remove(rel);
            return Err(e);
        }
        let parts: Vec<object_store::multipart::PartId> = record
            .parts
            .values()
            .map(|c| object_store::multipart::PartId {
                content_id: c.clone(),
            })
            .collect();
        match mp.complete_multipart(&loc, &record.upload_id, parts).await {
            Ok(_) => {
                log.remove(rel);
                Ok(())
            }
            // Completed already (a lost response, or a run killed while its
            // completion was under way): the object carries this content's
            // hash, possibly only once the server has finished assembling it.
            Err(_) if self.appears_with_content(entry).await => {
                log.remove(rel);
                Ok(())
            }
            Err(e) => {
                // The upload is gone or unusable; the next attempt starts a
                // fresh one.
                log.remove(rel);
                Err(Error::Store {
                    path: shown,
                    retryable: true,
                    source: e,
                })
            }
        }
    }

    /// Whether the object already holds `entry`'s content, judged by its
    /// size and the content hash pqsync stores in its metadata (one HEAD).
    pub async fn has_content(&self, entry: &FileEntry) -> bool {
        if !self.attributes {
            return false;
        }
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&self.location(&entry.path), opts).await {
            Ok(r) => {
                r.meta.size == entry.size
                    && r.attributes
                        .get(&Attribute::Metadata(HASH_METADATA_KEY.into()))
                        .map(|v| v.as_ref() == entry.tagged_hash())
                        .unwrap_or(false)
            }
            Err(_) => false,
        }
    }

    /// [`StoreTree::has_content`], asked a few times over about three
    /// seconds: a completion that is still being assembled shows up late.
    async fn appears_with_content(&self, entry: &FileEntry) -> bool {
        let mut wait = std::time::Duration::from_millis(200);
        for _ in 0..4 {
            if self.has_content(entry).await {
                return true;
            }
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
        self.has_content(entry).await
    }

    async fn new_record(
        &self,
        mp: &Arc<dyn MultipartStore>,
        entry: &FileEntry,
        part_size: u64,
        log: &dyn PartLog,
    ) -> Result<PartRecord> {
        let rel = entry.path.as_str();
        let content_type = entry
            .content_type
            .as_deref()
            .unwrap_or_else(|| crate::manifest::content_type_for(rel))
            .to_string();
        let opts = PutMultipartOptions {
            attributes: self.attrs(Some(entry), &content_type),
            ..Default::default()
        };
        let upload_id = mp
            .create_multipart_opts(&self.location(rel), opts)
            .await
            .map_err(|e| Error::store(self.display(rel), e))?;
        let record = PartRecord {
            path: rel.to_string(),
            hash: entry.tagged_hash(),
            upload_id,
            part_size,
            parts: Default::default(),
        };
        // Logged before any part is sent, so a crash never orphans it.
        log.save(&record);
        Ok(record)
    }
}

type PartResult = (
    usize,
    u64,
    object_store::Result<object_store::multipart::PartId>,
);

async fn join_task(
    in_flight: &mut FuturesUnordered<tokio::task::JoinHandle<PartResult>>,
    shown: &str,
) -> Result<PartResult> {
    match in_flight.next().await {
        Some(done) => done.map_err(|e| Error::Invalid(format!("{shown}: part task failed: {e}"))),
        None => Err(Error::Invalid(format!("{shown}: no part in flight"))),
    }
}

fn verify(entry: &FileEntry, total: u64, hasher: ContentHasher) -> Result<()> {
    if total != entry.size {
        return Err(Error::Mismatch {
            path: entry.path.clone(),
            what: "size",
            expected: entry.size.to_string(),
            actual: total.to_string(),
            retryable: true,
        });
    }
    let hash = hasher.finalize_hex();
    if hash != entry.hash {
        return Err(Error::Mismatch {
            path: entry.path.clone(),
            what: "hash",
            expected: entry.tagged_hash(),
            actual: format!("{}:{hash}", entry.hash_algorithm),
            retryable: false,
        });
    }
    Ok(())
}

type PartTasks = FuturesUnordered<tokio::task::JoinHandle<(object_store::Result<()>, u64)>>;

/// Starts one part upload, first waiting until fewer than
/// [`PARTS_IN_FLIGHT`] are running.
async fn send_part(
    upload: &mut Box<dyn MultipartUpload>,
    in_flight: &mut PartTasks,
    data: Bytes,
    shown: &str,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<()> {
    while in_flight.len() >= PARTS_IN_FLIGHT {
        join_part(in_flight, shown, on_bytes).await?;
    }
    let len = data.len() as u64;
    let fut: UploadPart = upload.put_part(PutPayload::from(data));
    in_flight.push(tokio::spawn(async move { (fut.await, len) }));
    Ok(())
}

async fn join_part(
    in_flight: &mut PartTasks,
    shown: &str,
    on_bytes: &(dyn Fn(u64) + Send + Sync),
) -> Result<()> {
    if let Some(done) = in_flight.next().await {
        let (r, len) =
            done.map_err(|e| Error::Invalid(format!("{shown}: part task failed: {e}")))?;
        r.map_err(|e| Error::store(shown, e))?;
        on_bytes(len);
    }
    Ok(())
}

/// Counts every request made to the wrapped store. Bulk deletes count one
/// request per 1,000 objects, as S3 sends them.
#[derive(Debug)]
struct CountingStore {
    inner: Arc<dyn ObjectStore>,
    requests: Arc<AtomicU64>,
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
struct CountingMultipart {
    inner: Arc<dyn MultipartStore>,
    requests: Arc<AtomicU64>,
}

#[async_trait]
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
    ) -> object_store::Result<object_store::multipart::PartId> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.put_part(path, id, part_idx, data).await
    }

    async fn complete_multipart(
        &self,
        path: &Path,
        id: &MultipartId,
        parts: Vec<object_store::multipart::PartId>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_equal_and_bounded() {
        const MIB: u64 = 1024 * 1024;
        assert_eq!(part_size_for(20 * MIB), MIN_PART_SIZE);
        assert_eq!(part_size_for(200 * 1024 * MIB) % MIB, 0);
        let big = 5 * 1024 * 1024 * MIB; // 5 TiB
        let p = part_size_for(big);
        assert!(big.div_ceil(p) <= MAX_PARTS);
        assert!(p >= 5 * MIB);
    }
}
