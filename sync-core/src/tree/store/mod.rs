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

pub(crate) mod compress;
mod copy;
mod counting;
pub(crate) mod packs;
mod probe;
mod resumable;
mod trash;
mod upload;
mod versions;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    Attribute, CopyOptions, GetOptions, GetResult, ObjectMeta, ObjectStore, PutMode, PutOptions,
    PutPayload, UpdateVersion,
};

pub(crate) use compress::decompress_stream;
pub(crate) use packs::{chunk_json, decode_blob, units, Packed, Packs};
pub use probe::Capabilities;
pub(crate) use probe::{Announced, StateObject};
pub(crate) use resumable::{PartLog, PartRecord};
pub(crate) use versions::{compressed_size, Versions};

use crate::error::{Error, Result};
use crate::layout::{is_ignored, MANIFEST_PATH};
use crate::manifest::{FileEntry, Manifest};
pub use copy::{BucketCopy, PartCopy};
pub use counting::Usage;
use counting::{CountingMultipart, CountingStore, Meter};

/// Files larger than this are sent with a multipart upload.
pub(crate) const DEFAULT_MULTIPART_THRESHOLD: u64 = 16 * 1024 * 1024;

/// The smallest part size pqsync uses (S3 and R2 require at least 5 MiB).
pub(crate) const MIN_PART_SIZE: u64 = 8 * 1024 * 1024;

/// S3's and R2's limit on the number of parts.
const MAX_PARTS: u64 = 10_000;

/// Parts of one file in flight at once.
pub(crate) const PARTS_IN_FLIGHT: usize = 2;

/// Parts of one resumable upload in flight at once. A run killed
/// mid-upload loses (and the next run re-sends) at most this many parts;
/// with one, a 2 GiB upload to a loopback server took twice as long as with
/// three, because every part waited for the previous one's round trip.
pub(crate) const RESUMABLE_PARTS_IN_FLIGHT: usize = 3;

/// Objects per bulk-delete request (S3's DeleteObjects limit).
pub(crate) const DELETE_BATCH: u64 = 1000;

/// The largest object a store copies in one request (S3's CopyObject).
pub(crate) const COPY_MAX: u64 = 5 * 1024 * 1024 * 1024;

/// Object metadata key under which pqsync stores `"<alg>:<hex>"`.
pub(crate) const HASH_METADATA_KEY: &str = "pqsync-hash";

/// The same key on Azure, whose metadata names must be C# identifiers (a
/// `-` is refused as `InvalidMetadata`).
pub(crate) const AZURE_HASH_METADATA_KEY: &str = "pqsync_hash";

/// The size of every part but the last for a file of `size` bytes: at least
/// [`MIN_PART_SIZE`], and large enough to stay within 10,000 parts, rounded up
/// to a whole MiB.
pub(crate) fn part_size_for(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS);
    needed
        .div_ceil(MIB)
        .max(1)
        .saturating_mul(MIB)
        .max(MIN_PART_SIZE)
}

/// How the manifest commit is guarded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum CommitMode {
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
    /// The store under the counting wrapper: trees on the same one can
    /// copy objects to each other inside the store.
    origin: Arc<dyn ObjectStore>,
    /// The same for the multipart API.
    multipart_origin: Option<Arc<dyn MultipartStore>>,
    multipart: Option<Arc<dyn MultipartStore>>,
    requests: Arc<AtomicU64>,
    meter: Arc<Meter>,
    prefix: Vec<String>,
    url: String,
    attributes: bool,
    multipart_threshold: u64,
    /// Whether the store is `object_store`'s local file system, which
    /// refuses some names ([`StoreTree::refuses_name`]).
    local_fs: bool,
    /// Set on a snapshot tree: files are kept by content.
    versions: Option<Arc<dyn Versions>>,
    /// Copies into this tree's bucket from the store's other buckets.
    bucket_copy: Option<Arc<dyn BucketCopy>>,
    /// The metadata key of pqsync's content hash on this store.
    hash_key: &'static str,
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
    /// Files larger than this are sent with a multipart upload (unless
    /// [`StoreTree::with_multipart_threshold`] says otherwise).
    pub const MULTIPART_THRESHOLD: u64 = DEFAULT_MULTIPART_THRESHOLD;

    /// Parts of one resumable upload in flight at once: a run killed
    /// mid-upload re-sends at most this many parts.
    pub const RESUMABLE_PARTS_IN_FLIGHT: usize = RESUMABLE_PARTS_IN_FLIGHT;

    /// The object metadata key under which pqsync stores an uploaded
    /// object's `"<alg>:<hex>"` content hash.
    pub const HASH_METADATA_KEY: &'static str = HASH_METADATA_KEY;

    /// The size of every part but the last of a multipart upload of `size`
    /// bytes.
    pub fn part_size(size: u64) -> u64 {
        part_size_for(size)
    }

    /// A tree at `prefix` (a `/`-separated path, possibly empty) in `store`.
    /// `url` is how the user named it and appears in messages.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str, url: impl Into<String>) -> Self {
        let shown = store.to_string();
        let local_fs = shown.starts_with("LocalFileSystem(");
        let hash_key = if shown.starts_with("MicrosoftAzure") {
            AZURE_HASH_METADATA_KEY
        } else {
            HASH_METADATA_KEY
        };
        let meter = Arc::new(Meter::default());
        let requests = meter.requests.clone();
        let counting: Arc<dyn ObjectStore> = Arc::new(CountingStore {
            inner: store.clone(),
            meter: meter.clone(),
        });
        StoreTree {
            store: counting,
            multipart: None,
            origin: store,
            multipart_origin: None,
            requests,
            meter,
            prefix: prefix
                .split('/')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
            url: url.into(),
            attributes: true,
            multipart_threshold: DEFAULT_MULTIPART_THRESHOLD,
            local_fs,
            versions: None,
            bucket_copy: None,
            hash_key,
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
        self.multipart_origin = Some(store.clone());
        self.multipart = Some(Arc::new(CountingMultipart {
            inner: store,
            meter: self.meter.clone(),
        }));
        self
    }

    /// Whether objects carry pqsync's attributes (content type and
    /// `pqsync-hash`); stores on plain directories do not.
    pub(crate) fn keeps_attributes(&self) -> bool {
        self.attributes
    }

    /// Whether large uploads can resume after a crash.
    pub fn resumable(&self) -> bool {
        self.multipart.is_some()
    }

    /// Aborts a multipart upload an earlier run left behind.
    ///
    /// # Errors
    /// [`Error::Store`]; an upload that is already gone is not an error.
    pub(crate) async fn abort_upload(&self, rel: &str, upload_id: &str) -> Result<()> {
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

    /// A tree at `prefix` in the same store (the same bucket, endpoint and
    /// credentials), named `url`, with its own request count. Objects move
    /// between the two inside the store, without passing through this
    /// machine (see [`StoreTree::shares_store`]).
    pub fn sibling(&self, prefix: &str, url: impl Into<String>) -> StoreTree {
        let tree = StoreTree::new(self.origin.clone(), prefix, url)
            .with_attributes(self.attributes)
            .with_multipart_threshold(self.multipart_threshold);
        let mut tree = match &self.multipart_origin {
            Some(mp) => tree.with_multipart_store(mp.clone()),
            None => tree,
        };
        tree.bucket_copy = self.bucket_copy.clone();
        tree
    }

    /// The same tree with a request count of its own (one engine's share
    /// of a source several engines read).
    pub(crate) fn recounted(&self) -> StoreTree {
        self.sibling(&self.prefix.join("/"), self.url.clone())
    }

    /// Lets objects be copied into this tree from trees in the store's
    /// other buckets that share `copy`'s scope (see
    /// [`StoreTree::copies_across`]).
    pub fn with_bucket_copy(mut self, copy: Arc<dyn BucketCopy>) -> Self {
        self.bucket_copy = Some(copy);
        self
    }

    /// Whether the store can copy an object from `source`, a tree in
    /// another bucket reached through the same endpoint with the same
    /// credentials, to this tree by itself.
    pub fn copies_across(&self, source: &StoreTree) -> bool {
        match (&self.bucket_copy, &source.bucket_copy) {
            (Some(to), Some(from)) => to.scope() == from.scope() && to.bucket() != from.bucket(),
            _ => false,
        }
    }

    /// Copies `entry`'s object from `source` (in another bucket of the same
    /// store, see [`StoreTree::copies_across`]) to this tree, inside the
    /// store: one request, or a copy in parts above the store's limit for
    /// one; no bytes through this machine.
    ///
    /// # Errors
    /// [`Error::Store`]; an invalid-argument error when the two cannot.
    pub(crate) async fn copy_across(&self, source: &StoreTree, entry: &FileEntry) -> Result<()> {
        let (Some(to), Some(from)) = (&self.bucket_copy, &source.bucket_copy) else {
            return Err(Error::InvalidArgument {
                argument: "copy",
                reason: format!("{} cannot copy from {}", self.url, source.url),
            });
        };
        let from_key = source.location(&entry.path);
        let to_key = self.location(&entry.path);
        let copied = match entry.size > to.limit() {
            true => to
                .copy_in_parts(from.bucket(), from_key.as_ref(), to_key.as_ref())
                .await
                .map(|c| self.meter.hit_copy(c)),
            false => {
                self.meter.hit_write();
                to.copy(from.bucket(), from_key.as_ref(), to_key.as_ref())
                    .await
            }
        };
        copied.map_err(|e| Error::store(self.display(&entry.path), e))
    }

    /// Whether the store copies an object of any size inside itself (a
    /// directory; S3, which copies large objects in parts). Other stores
    /// are taken to copy at most [`COPY_MAX`] in one request.
    pub(crate) fn copies_any_size(&self) -> bool {
        self.local_fs || self.bucket_copy.is_some()
    }

    /// Copies the object at `from` to `to`, both in this tree's bucket,
    /// inside the store. An object larger than one copy request takes
    /// (`size`, when known) is copied in parts; when the size is not
    /// known, a copy the store refuses is tried in parts if the object
    /// turns out to be that large.
    pub(super) async fn copy_inside(
        &self,
        from: &Path,
        to: &Path,
        size: Option<u64>,
    ) -> object_store::Result<()> {
        let parts = |size: u64| self.bucket_copy.as_ref().filter(|c| size > c.limit());
        if let Some(copier) = size.and_then(parts) {
            let copied = copier
                .copy_in_parts(copier.bucket(), from.as_ref(), to.as_ref())
                .await?;
            self.meter.hit_copy(copied);
            return Ok(());
        }
        let refused = match self.store.copy_opts(from, to, CopyOptions::default()).await {
            Err(e) if size.is_none() && !matches!(e, object_store::Error::NotFound { .. }) => e,
            done => return done,
        };
        let Some(copier) = &self.bucket_copy else {
            return Err(refused);
        };
        let head = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        match self.store.get_opts(from, head).await.map(|r| r.meta) {
            Ok(meta) if meta.size > copier.limit() => {
                let copied = copier
                    .copy_in_parts(copier.bucket(), from.as_ref(), to.as_ref())
                    .await?;
                self.meter.hit_copy(copied);
                Ok(())
            }
            _ => Err(refused),
        }
    }

    /// Whether `other` lies in the same store as this tree (one made by
    /// [`StoreTree::sibling`]), so an object can be copied from one to the
    /// other by the store itself.
    pub fn shares_store(&self, other: &StoreTree) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.origin), Arc::as_ptr(&other.origin))
    }

    /// Copies `entry`'s object from `source` (a tree in the same store) to
    /// this tree, inside the store: one request (in parts above the
    /// store's limit for one), no bytes through this machine. The object
    /// keeps its attributes (the content type and pqsync's stored hash).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub(crate) async fn copy_from(&self, source: &StoreTree, entry: &FileEntry) -> Result<()> {
        self.copy_inside(
            &source.location(&entry.path),
            &self.location(&entry.path),
            Some(entry.size),
        )
        .await
        .map_err(|e| Error::store(self.display(&entry.path), e))
    }

    /// The tree at `dir` under this one's `_meta/.pqsync/`, on the same
    /// store: a file written there keeps its relative path, and
    /// [`StoreTree::copy_from`] brings it into this tree inside the store.
    pub(crate) fn state_tree(&self, dir: &str) -> StoreTree {
        let mut tree = self.clone();
        tree.prefix.extend(
            crate::layout::STATE_DIR
                .split('/')
                .chain(dir.split('/'))
                .map(str::to_string),
        );
        tree.url = format!(
            "{}/{}/{dir}",
            self.url.trim_end_matches('/'),
            crate::layout::STATE_DIR
        );
        tree.versions = None;
        tree
    }

    /// The URL the tree was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests made through this tree (and every clone of it) so far, by
    /// billing class, with the bytes sent and received.
    pub fn usage(&self) -> Usage {
        self.meter.usage()
    }

    /// Requests made through this tree so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The store, wrapped in the request counter.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The object path of a tree-relative path: the key is the prefix, a
    /// `/` and `rel`, byte for byte. Nothing is percent-encoded, so every
    /// other client lists the names the manifest holds (the store's client
    /// encodes the key on the wire and decodes it back).
    pub fn location(&self, rel: &str) -> Path {
        raw_path(self.prefix.iter().map(String::as_str).chain(rel.split('/')))
    }

    /// Why this store cannot hold an object named `rel`, if it cannot.
    /// Object stores hold every name a manifest may list; a directory
    /// remote (`object_store`'s local file system) reserves a file name
    /// whose text after its first `#` is all digits (`a#1`) for its own
    /// staging files.
    pub fn refuses_name(&self, rel: &str) -> Option<String> {
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let reserved = name
            .split_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        (self.local_fs && reserved).then(|| {
            "a directory remote cannot hold a file name whose text after its first `#` is all digits; rename it, or use an object-store remote".to_string()
        })
    }

    /// The object path of the tree's root (its prefix).
    pub(crate) fn root(&self) -> Path {
        raw_path(self.prefix.iter().map(String::as_str))
    }

    /// The tree-relative path of an object under the tree, exactly as the
    /// store listed its key; `None` for the prefix itself.
    pub(crate) fn rel_of<'a>(&self, location: &'a Path) -> Option<&'a str> {
        let key = location.as_ref();
        if self.prefix.is_empty() {
            return Some(key).filter(|k| !k.is_empty());
        }
        let mut rest = key;
        for part in &self.prefix {
            rest = rest.strip_prefix(part.as_str())?;
            rest = rest.strip_prefix('/')?;
        }
        Some(rest).filter(|r| !r.is_empty())
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
        if let Some(v) = &self.versions {
            return Ok(v.head());
        }
        let Some((bytes, etag)) = self.read_manifest_bytes().await? else {
            return Ok(None);
        };
        let manifest = Manifest::from_slice(&bytes, &self.display(MANIFEST_PATH))?;
        Ok(Some(RemoteManifest { manifest, etag }))
    }

    /// The commit id of the manifest now in place (`Ok(None)` for none, or
    /// a manifest without one), read without building its file list.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] when it does not parse; store errors.
    pub(crate) async fn read_commit_id(&self) -> Result<Option<String>> {
        #[derive(serde::Deserialize)]
        struct Id {
            #[serde(rename = "commitId")]
            commit_id: Option<String>,
        }
        if self.versions.is_some() {
            return Ok(self
                .read_manifest()
                .await?
                .and_then(|r| r.manifest.commit_id));
        }
        let Some((bytes, _)) = self.read_manifest_bytes().await? else {
            return Ok(None);
        };
        let id: Id = serde_json::from_slice(&bytes).map_err(|e| Error::ManifestCorrupt {
            path: self.display(MANIFEST_PATH),
            reason: e.to_string(),
        })?;
        Ok(id.commit_id)
    }

    /// The manifest, unless its ETag is still `etag`: one conditional GET
    /// (`If-None-Match`), which moves no body when nothing changed.
    /// `Ok(None)` means unchanged; `Ok(Some(m))` is what a
    /// [`StoreTree::read_manifest`] would have returned.
    ///
    /// # Errors
    /// As for [`StoreTree::read_manifest`].
    pub(crate) async fn read_manifest_unless(
        &self,
        etag: &str,
    ) -> Result<Option<Option<RemoteManifest>>> {
        if self.versions.is_some() {
            return Ok(Some(self.read_manifest().await?));
        }
        let shown = self.display(MANIFEST_PATH);
        let opts = GetOptions {
            if_none_match: Some(etag.to_string()),
            ..GetOptions::default()
        };
        let got = match self
            .store
            .get_opts(&self.location(MANIFEST_PATH), opts)
            .await
        {
            Err(object_store::Error::NotModified { .. }) => return Ok(None),
            got => got,
        };
        let got = match got.map_err(|e| Error::store(&shown, e)) {
            Ok(g) => g,
            Err(e) if e.is_not_found() => return Ok(Some(None)),
            Err(e) => return Err(e),
        };
        let etag = got.meta.e_tag.clone();
        let bytes = got.bytes().await.map_err(|e| Error::store(&shown, e))?;
        let manifest = Manifest::from_slice(&bytes, &shown)?;
        Ok(Some(Some(RemoteManifest { manifest, etag })))
    }

    /// The manifest's bytes and ETag, unparsed; `None` if there is none.
    ///
    /// # Errors
    /// [`Error::BucketNotFound`] when the bucket itself is missing;
    /// [`Error::Store`] if the request fails.
    pub(crate) async fn read_manifest_bytes(&self) -> Result<Option<(Bytes, Option<String>)>> {
        let shown = self.display(MANIFEST_PATH);
        let got = self
            .store
            .get_opts(&self.location(MANIFEST_PATH), GetOptions::default())
            .await;
        let got = match got.map_err(|e| Error::store(&shown, e)) {
            Ok(g) => g,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = got.meta.e_tag.clone();
        let bytes = got.bytes().await.map_err(|e| Error::store(&shown, e))?;
        Ok(Some((bytes, etag)))
    }

    /// Checks that the bucket holding the tree exists, with one LIST of the
    /// prefix: a store answers a missing manifest and a missing bucket alike
    /// to a GET on some servers, so a run that found no manifest asks once
    /// more before it says "not managed".
    ///
    /// # Errors
    /// [`Error::BucketNotFound`] when the bucket is missing;
    /// [`Error::Store`] when the listing fails otherwise.
    pub async fn check_bucket(&self) -> Result<()> {
        let root = self.root();
        match self.store.list_with_delimiter(Some(&root)).await {
            Ok(_) => Ok(()),
            Err(e) => match Error::store(&self.url, e) {
                // A store that cannot list (or a prefix that is not a
                // directory yet) says nothing about the bucket.
                Error::Store { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    /// Writes the manifest (one PUT) under `mode`: [`CommitMode::Create`]
    /// for a remote without one, [`CommitMode::Update`] to replace exactly
    /// the version read, [`CommitMode::Overwrite`] where the store cannot
    /// check either. Returns the new ETag, if the store reports one.
    ///
    /// # Errors
    /// [`Error::Precondition`] when another writer got there first;
    /// [`Error::Store`] otherwise.
    pub(crate) async fn write_manifest(
        &self,
        manifest: &Manifest,
        mode: CommitMode,
    ) -> Result<Option<String>> {
        if let Some(v) = &self.versions {
            return v.commit(self, manifest).await;
        }
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
        // A large manifest written without a condition streams through a
        // multipart upload (completed as one object, as atomically as a
        // PUT), so its JSON is never whole in memory. A conditional write
        // must be a single PUT.
        let size = manifest.json_len();
        if matches!(put_mode, PutMode::Overwrite) && size as u64 > self.multipart_threshold {
            if let Some(done) = self.put_manifest_in_parts(manifest, size).await {
                return done;
            }
        }
        let opts = PutOptions {
            mode: put_mode,
            attributes: self.attrs(None),
            ..Default::default()
        };
        let mut json = Vec::with_capacity(size);
        manifest
            .write_json_pretty(&mut json)
            .expect("writing to memory cannot fail");
        match self
            .store
            .put_opts(&loc, PutPayload::from(json), opts)
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

    /// Writes the manifest (`size` bytes of JSON) as a multipart upload,
    /// serialising each part as the upload takes it. `None` when the store
    /// cannot start one (then a single PUT does it).
    async fn put_manifest_in_parts(
        &self,
        manifest: &Manifest,
        size: usize,
    ) -> Option<Result<Option<String>>> {
        let shown = self.display(MANIFEST_PATH);
        let opts = object_store::PutMultipartOptions {
            attributes: self.attrs(None),
            ..Default::default()
        };
        let upload = match self
            .store
            .put_multipart_opts(&self.location(MANIFEST_PATH), opts)
            .await
        {
            Ok(u) => u,
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => return None,
            Err(e) => return Some(Err(Error::store(&shown, e))),
        };
        let part = part_size_for(size as u64) as usize;
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, part);
        for chunk in manifest.json_chunks(part) {
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Some(Err(Error::store(&shown, e)));
            }
            writer.put(Bytes::from(chunk));
        }
        Some(
            writer
                .finish()
                .await
                .map(|put| put.e_tag)
                .map_err(|e| Error::store(&shown, e)),
        )
    }

    /// Streams an object.
    ///
    /// # Errors
    /// [`Error::Store`]; a missing object is a permanent error.
    pub async fn open(&self, rel: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        if let Some(e) = self.versions.as_ref().and_then(|v| v.entry_of_path(rel)) {
            return self.open_entry(&e).await;
        }
        let key = self.object_rel(rel);
        let stored = self
            .stream(&self.location(&key), self.display(&key))
            .await?;
        Ok(match (&self.versions, &key) {
            (Some(v), std::borrow::Cow::Owned(key)) => v.unseal(key, stored),
            _ => stored,
        })
    }

    /// Streams the object at `loc`; errors name it as `shown`.
    async fn stream(&self, loc: &Path, shown: String) -> Result<BoxStream<'static, Result<Bytes>>> {
        let got: GetResult = self
            .store
            .get_opts(loc, GetOptions::default())
            .await
            .map_err(|e| Error::store(&shown, e))?;
        Ok(got
            .into_stream()
            .map_err(move |e| Error::store(shown.clone(), e))
            .boxed())
    }

    /// Lists the tree's objects (one request per 1,000) with their sizes,
    /// leaving out what pqsync never syncs (what ParqueDB ignores, and
    /// pqsync's own state and temporary files).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn list_files(&self) -> Result<BTreeMap<String, u64>> {
        if let Some(v) = &self.versions {
            // A snapshot tree's files are those of its snapshot whose
            // objects the listing finds, with the objects' sizes.
            let objects = self.list_objects().await?;
            let head = v.head().map(|h| h.manifest.files).unwrap_or_default();
            return Ok(head
                .into_values()
                .filter_map(|e| {
                    if let Some(p) = packs::Packed::of(&e) {
                        let size = objects.get(&p.object)?.size;
                        return (size >= p.offset + p.length).then_some((e.path, e.size));
                    }
                    if let Some(chunks) = packs::chunk_entries(&e) {
                        let whole = chunks.iter().all(|c| {
                            packs::Packed::of(c).is_some_and(|p| {
                                objects
                                    .get(&p.object)
                                    .is_some_and(|m| m.size >= p.offset + p.length)
                            })
                        });
                        return whole.then_some((e.path, e.size));
                    }
                    if let Some(stored) = versions::compressed_size(&e) {
                        let obj = self.object_entry(&e);
                        let size = objects.get(&obj.path)?.size;
                        return (size == stored).then_some((e.path, e.size));
                    }
                    let obj = self.object_entry(&e);
                    // A sealed object of the right size holds the file's
                    // size of content.
                    let size = objects.get(&obj.path)?.size;
                    Some((e.path, if size == obj.size { e.size } else { size }))
                })
                .collect());
        }
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
    pub async fn list_objects(&self) -> Result<BTreeMap<String, ObjectMeta>> {
        let root = self.root();
        let mut out = BTreeMap::new();
        let mut listing = self.store.list(Some(&root));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| Error::store(&self.url, e))?;
            let Some(rel) = self.rel_of(&meta.location) else {
                continue;
            };
            if is_ignored(rel) {
                continue;
            }
            out.insert(rel.to_string(), meta);
        }
        Ok(out)
    }

    /// Reads a byte range of an object (one ranged GET).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn read_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes> {
        if let Some(e) = self.packed_entry(rel) {
            let all = self.read_packed(&e).await?.unwrap_or_default();
            let end = usize::try_from(range.end)
                .unwrap_or(usize::MAX)
                .min(all.len());
            let start = usize::try_from(range.start).unwrap_or(usize::MAX).min(end);
            return Ok(all.slice(start..end));
        }
        if self.reads_through(rel) {
            // Sealed chunks do not line up with the content's bytes: read
            // the object through and keep the range.
            let mut stream = self.open(rel).await?;
            let (mut at, mut out) = (0u64, bytes::BytesMut::new());
            while let Some(chunk) = stream.try_next().await? {
                let end = at + chunk.len() as u64;
                if end > range.start && at < range.end {
                    let from = range.start.saturating_sub(at) as usize;
                    let to = (range.end.min(end) - at) as usize;
                    out.extend_from_slice(&chunk[from..to]);
                }
                at = end;
                if at >= range.end {
                    break;
                }
            }
            return Ok(out.freeze());
        }
        let rel = &self.object_rel(rel);
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

    /// Whether reading part of `rel` means reading it from the start: its
    /// bytes as stored are sealed or compressed.
    fn reads_through(&self, rel: &str) -> bool {
        self.versions.as_ref().is_some_and(|v| {
            v.sealed()
                || v.entry_of_path(rel).is_some_and(|e| {
                    versions::compressed_size(&e).is_some() || packs::chunk_entries(&e).is_some()
                })
        })
    }

    /// Reads a whole object into memory (one GET); for small files.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn read_all(&self, rel: &str) -> Result<Bytes> {
        if let Some(e) = self.packed_entry(rel) {
            return Ok(self.read_packed(&e).await?.unwrap_or_default());
        }
        if self.reads_through(rel) {
            let mut stream = self.open(rel).await?;
            let mut out = bytes::BytesMut::new();
            while let Some(chunk) = stream.try_next().await? {
                out.extend_from_slice(&chunk);
            }
            return Ok(out.freeze());
        }
        let rel = &self.object_rel(rel);
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
            .get(&Attribute::Metadata(self.hash_key.into()))
            .map(|v| v.to_string());
        Ok((r.meta.size, tagged))
    }

    /// The URL of a path in the tree, as shown in messages.
    pub fn display_path(&self, rel: &str) -> String {
        self.display(rel)
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

    /// Whether the object already holds `entry`'s content, judged by its
    /// size and the content hash pqsync stores in its metadata (one HEAD).
    pub async fn has_content(&self, entry: &FileEntry) -> bool {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        if let Some(v) = &self.versions {
            // A snapshot tree's objects are named by their content; one a
            // prune has marked is not relied on.
            if let Some(p) = packs::Packed::of(entry) {
                return v.reusable(&p.object)
                    && matches!(self.store.get_opts(&self.location(&p.object), opts).await,
                        Ok(r) if r.meta.size >= p.offset + p.length);
            }
            if packs::chunk_entries(entry).is_some() {
                return false;
            }
            if let Some(stored) = versions::compressed_size(entry) {
                let obj = self.object_entry(entry);
                return v.reusable(&obj.path)
                    && matches!(self.store.get_opts(&self.location(&obj.path), opts).await,
                        Ok(r) if r.meta.size == stored);
            }
            let obj = self.object_entry(entry);
            return v.reusable(&obj.path)
                && matches!(self.store.get_opts(&self.location(&obj.path), opts).await,
                    Ok(r) if r.meta.size == entry.size);
        }
        if !self.attributes {
            return false;
        }
        match self.store.get_opts(&self.location(&entry.path), opts).await {
            Ok(r) => {
                r.meta.size == entry.size
                    && r.attributes
                        .get(&Attribute::Metadata(self.hash_key.into()))
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
}

/// An object path made of `parts` exactly as they are: no part is
/// percent-encoded. A part the store's path type cannot hold (a control
/// character, `.`, `..` or empty; validated manifest paths have none) falls
/// back to the encoded form rather than naming another object.
pub(super) fn raw_path<'a>(parts: impl Iterator<Item = &'a str> + Clone) -> Path {
    let key = parts
        .clone()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    Path::parse(&key).unwrap_or_else(|_| Path::from_iter(parts.filter(|p| !p.is_empty())))
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

    /// A large manifest written without a condition goes up in parts, and
    /// what lands is exactly the JSON a single PUT would have written; a
    /// conditional write is always one PUT.
    #[tokio::test]
    async fn a_large_manifest_streams_in_parts() {
        let dir = tempfile::tempdir().unwrap();
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
        let url = format!("file://{}", dir.path().display());
        // As the CLI opens a directory: it keeps no attributes.
        let tree = StoreTree::new(Arc::new(fs), "db", &url)
            .with_attributes(false)
            .with_multipart_threshold(MIN_PART_SIZE);
        let mut m = Manifest::new("id", "n");
        for i in 0..60_000u64 {
            {
                let path = format!("data/{i:07}/caf\u{e9} #%.parquet");
                let e = FileEntry {
                    path: path.clone(),
                    size: i,
                    hash: crate::manifest::HashAlgorithm::Blake3.digest(&i.to_le_bytes()),
                    hash_algorithm: crate::manifest::HashAlgorithm::Blake3,
                    modified_at: crate::manifest::Timestamp::from_millis(i as i64),
                    etag: Some(format!("\"{i}\"")),
                    content_type: None,
                    extra: None,
                };
                m.files.insert(path, e);
            }
        }
        assert!(m.json_len() as u64 > 2 * MIN_PART_SIZE);
        let on_disk = dir.path().join("db").join(MANIFEST_PATH);
        let before = tree.requests();
        let etag = tree
            .write_manifest(&m, CommitMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&on_disk).unwrap(), m.to_json_pretty());
        assert!(tree.requests() - before > 1, "sent in parts");
        let got = tree.read_manifest().await.unwrap().unwrap();
        assert_eq!(
            got.etag, etag,
            "the ETag a read sees is the one the write reported"
        );
        assert_eq!(got.manifest.files.len(), m.files.len());

        m.files.pop_first();
        let before = tree.requests();
        tree.write_manifest(&m, CommitMode::Update(etag.unwrap()))
            .await
            .unwrap_err();
        assert_eq!(
            tree.requests() - before,
            1,
            "a conditional write is one PUT"
        );
    }
}
