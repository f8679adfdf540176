//! A store prefix whose files are kept by content: the view of one
//! snapshot in a snapshot repository.
//!
//! The engine treats it as any other remote. What differs is behind
//! [`Versions`]: the tree's manifest is the snapshot it was opened on (read
//! once, before the run), a file's object is named by its content rather
//! than its path, every object is written create-only, and a commit writes
//! a new snapshot instead of replacing a manifest. Nothing is ever
//! deleted or overwritten through such a tree.

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::{GetOptions, PutMode, PutOptions, PutPayload};

use super::packs::{chunk_entries, Packed, Packs, BLOB_MAX};
use super::{PartLog, RemoteManifest, StoreTree};
use crate::error::{Error, Result};
use crate::manifest::{FileEntry, Manifest};

/// What makes a store tree a snapshot tree.
#[async_trait]
pub(crate) trait Versions: Send + Sync + std::fmt::Debug {
    /// The manifest the tree shows: the snapshot it was opened on.
    fn head(&self) -> Option<RemoteManifest>;

    /// The tree-relative key of the object holding `e`'s content.
    fn object(&self, e: &FileEntry) -> String;

    /// The key of the object holding the file at `rel` in the snapshot the
    /// tree shows, and the file's size, if the snapshot has that file.
    fn object_of_path(&self, rel: &str) -> Option<(String, u64)>;

    /// The snapshot's entry for the file at `rel`, if it has that file.
    fn entry_of_path(&self, rel: &str) -> Option<FileEntry>;

    /// The packs small files go into and are read from.
    fn packs(&self) -> &Packs;

    /// The key of the pack whose bytes hash to `hex`.
    fn pack_key(&self, hex: &str) -> String;

    /// Seals one packed file's stored bytes (as they are, when objects are
    /// not sealed).
    fn seal_blob(&self, _aad: &[u8], body: Vec<u8>) -> Vec<u8> {
        body
    }

    /// Opens what [`Versions::seal_blob`] sealed; errors name `shown`.
    fn open_blob(&self, _aad: &[u8], stored: &[u8], _shown: &str) -> Result<Vec<u8>> {
        Ok(stored.to_vec())
    }

    /// The stored size of an object holding `n` bytes of content (larger
    /// than `n` when objects are sealed).
    fn stored_size(&self, n: u64) -> u64 {
        n
    }

    /// Seals content on its way into the object `key` (as it is, when
    /// objects are not sealed).
    fn seal(
        &self,
        _key: &str,
        plain: BoxStream<'static, Result<bytes::Bytes>>,
    ) -> BoxStream<'static, Result<bytes::Bytes>> {
        plain
    }

    /// Opens an object's bytes on their way out of `key`.
    fn unseal(
        &self,
        _key: &str,
        stored: BoxStream<'static, Result<bytes::Bytes>>,
    ) -> BoxStream<'static, Result<bytes::Bytes>> {
        stored
    }

    /// Whether objects are sealed (their byte ranges are not the
    /// content's).
    fn sealed(&self) -> bool {
        false
    }

    /// Whether an object that already exists at `key` may be relied on
    /// (one that a prune has marked for deletion may not).
    fn reusable(&self, key: &str) -> bool;

    /// Where content whose usual object may not be relied on goes instead.
    fn relocate(&self, e: &FileEntry) -> String;

    /// Told of each object the run created, with its size.
    fn stored(&self, key: &str, size: u64);

    /// Told that `e`'s content is kept compressed in its object, of
    /// `stored` bytes.
    fn compressed(&self, e: &FileEntry, stored: u64);

    /// The content-defined chunking (minimum, average and maximum chunk
    /// size) `e` is kept in, if it is a kind of file that is chunked.
    fn chunking(&self, _e: &FileEntry) -> Option<(u32, u32, u32)> {
        None
    }

    /// Told the chunks `e`'s content was cut into: each chunk's BLAKE3
    /// hex and size, in order.
    fn chunked(&self, _e: &FileEntry, _chunks: Vec<(String, u64)>) {}

    /// Records a snapshot of `m`; returns its id.
    async fn commit(&self, tree: &StoreTree, m: &Manifest) -> Result<Option<String>>;

    /// Records `m`, the files of shard `index` of `count` as a snapshot
    /// would hold them, as that shard's part of a split backup instead of
    /// a snapshot.
    async fn record_shard(
        &self,
        tree: &StoreTree,
        index: u32,
        count: u32,
        m: &Manifest,
    ) -> Result<()>;
}

/// How much of a large file decides whether it is kept compressed.
const SAMPLE: usize = 1 << 20;

/// For a file kept compressed in an object of its own: the object's stored
/// size (`None` for any other file).
pub(crate) fn compressed_size(e: &FileEntry) -> Option<u64> {
    let x = e.extra.as_ref()?;
    if x.contains_key("packOffset") || x.get("compression")?.as_str()? != "zstd" {
        return None;
    }
    x.get("storedSize")?.as_u64()
}

/// The first `n` bytes of `stream` (fewer if it is shorter), and the whole
/// stream again.
async fn peek(
    mut stream: BoxStream<'static, Result<bytes::Bytes>>,
    n: usize,
) -> Result<(bytes::Bytes, BoxStream<'static, Result<bytes::Bytes>>)> {
    let mut head: Vec<bytes::Bytes> = Vec::new();
    let mut got = 0;
    while got < n {
        match stream.next().await {
            Some(chunk) => {
                let chunk = chunk?;
                got += chunk.len();
                head.push(chunk);
            }
            None => break,
        }
    }
    let sample = match head.len() {
        1 => head[0].clone(),
        _ => bytes::Bytes::from(head.concat()),
    };
    let sample = sample.slice(..sample.len().min(n));
    let again = futures::stream::iter(head.into_iter().map(Ok))
        .chain(stream)
        .boxed();
    Ok((sample, again))
}

impl StoreTree {
    /// Makes this tree a snapshot tree.
    pub(crate) fn with_versions(mut self, v: std::sync::Arc<dyn Versions>) -> Self {
        self.versions = Some(v);
        self
    }

    /// Records `m` as shard `index` of `count`'s part of a split backup
    /// (see [`Versions::record_shard`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] on a tree that is not a snapshot tree;
    /// the repository's errors.
    pub(crate) async fn record_shard(&self, index: u32, count: u32, m: &Manifest) -> Result<()> {
        match &self.versions {
            Some(v) => v.record_shard(self, index, count, m).await,
            None => Err(Error::InvalidArgument {
                argument: "--shard",
                reason: format!("{} is not a snapshot repository", self.url),
            }),
        }
    }

    /// Names the tree `url` in messages.
    pub(crate) fn with_url(mut self, url: String) -> Self {
        self.url = url;
        self
    }

    /// Whether files are kept by content, so nothing is deleted or
    /// replaced in place.
    pub(crate) fn keeps_versions(&self) -> bool {
        self.versions.is_some()
    }

    /// The key to read for `rel`: on a snapshot tree, the object holding
    /// the snapshot's file at `rel`; elsewhere (or for a key that is no
    /// file of the snapshot), `rel` itself.
    pub(crate) fn object_rel<'a>(&self, rel: &'a str) -> std::borrow::Cow<'a, str> {
        match self.versions.as_ref().and_then(|v| v.object_of_path(rel)) {
            Some((key, _)) => std::borrow::Cow::Owned(key),
            None => std::borrow::Cow::Borrowed(rel),
        }
    }

    /// `e` as the entry of its object: the same content, at the object's
    /// key.
    pub(crate) fn object_entry(&self, e: &FileEntry) -> FileEntry {
        match &self.versions {
            Some(v) => {
                let mut o = e.clone();
                o.size = v.stored_size(e.size);
                o.path = e
                    .extra
                    .as_ref()
                    .and_then(|x| x.get("object"))
                    .and_then(|o| o.as_str())
                    .map_or_else(|| v.object(e), str::to_string);
                o
            }
            None => e.clone(),
        }
    }

    /// Streams the object that holds `e`'s content.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn open_entry(
        &self,
        e: &FileEntry,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes>>> {
        if let Some(bytes) = self.read_packed(e).await? {
            return Ok(futures::stream::iter([Ok(bytes)]).boxed());
        }
        if let Some(chunks) = chunk_entries(e) {
            // One chunk after another, each read from its pack and
            // checked against its hash.
            let tree = self.clone();
            return Ok(futures::stream::iter(chunks)
                .then(move |c| {
                    let tree = tree.clone();
                    async move {
                        tree.read_packed(&c)
                            .await?
                            .ok_or_else(|| Error::Repository {
                                url: tree.url().to_string(),
                                reason: format!("{} has no place in a pack", c.path),
                            })
                    }
                })
                .boxed());
        }
        let key = self.object_entry(e).path;
        let stored = self
            .stream(&self.location(&key), self.display(&key))
            .await?;
        let opened = match &self.versions {
            Some(v) => v.unseal(&key, stored),
            None => stored,
        };
        Ok(match compressed_size(e) {
            Some(_) => super::compress::decompress_stream(opened, self.display(&key)),
            None => opened,
        })
    }

    /// Writes `entry`'s content as a create-only object. Content that is
    /// already stored (and may be relied on) is not sent again; returns the
    /// entry as the snapshot records it (with the object it went to, when
    /// that is not the usual one).
    pub(super) async fn write_object(
        &self,
        v: &dyn Versions,
        entry: &FileEntry,
        stream: BoxStream<'static, Result<bytes::Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        parts_log: Option<&dyn PartLog>,
    ) -> Result<Option<String>> {
        if entry.size <= BLOB_MAX.min(self.multipart_threshold) {
            let plain = super::upload::collect_verified(entry, stream).await?;
            v.packs().add(self, v, entry, &plain).await?;
            on_bytes(entry.size);
            return Ok(None);
        }
        if let Some(params) = v.chunking(entry) {
            return self.write_chunked(v, entry, stream, on_bytes, params).await;
        }
        // The start of the file decides whether it is kept compressed.
        let (sample, stream) = peek(stream, SAMPLE).await?;
        let mut obj = self.object_entry(entry);
        if !v.reusable(&obj.path) {
            obj.path = v.relocate(entry);
        }
        if super::compress::pays(&sample) {
            return self.write_compressed(v, entry, obj, stream, on_bytes).await;
        }
        // A large object is looked for before its bytes go out; a small
        // one is sent create-only, and "already exists" is the answer.
        if entry.size > self.multipart_threshold {
            if let Some(etag) = self.existing(&obj).await? {
                return Ok(etag);
            }
            let etag = if v.sealed() {
                let checked = super::upload::verified(entry, stream);
                let sealed = v.seal(&obj.path, checked);
                self.put_multipart_stream(&obj, sealed, on_bytes).await?
            } else {
                self.write_paths(&obj, stream, on_bytes, parts_log).await?
            };
            v.stored(&obj.path, obj.size);
            return Ok(etag);
        }
        let plain = super::upload::collect_verified(entry, stream).await?;
        let sealed = v.seal(&obj.path, futures::stream::iter([Ok(plain)]).boxed());
        let buf = super::upload::collect_verified_len(sealed, obj.size).await?;
        let total = buf.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            attributes: self.attrs(Some(&obj)),
            ..Default::default()
        };
        let put = self
            .store
            .put_opts(&self.location(&obj.path), PutPayload::from(buf), opts)
            .await;
        match put {
            Ok(r) => {
                on_bytes(entry.size);
                v.stored(&obj.path, total);
                Ok(r.e_tag)
            }
            Err(
                object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
            ) => match self.existing(&obj).await? {
                Some(etag) => Ok(etag),
                None => Err(Error::Store {
                    path: self.display(&obj.path),
                    retryable: false,
                    source: object_store::Error::Generic {
                        store: "repository",
                        source: "an object with this content's name exists with another size; run `pqsync check` on the repository".into(),
                    },
                }),
            },
            Err(e) => Err(Error::store(self.display(&obj.path), e)),
        }
    }

    /// Cuts `entry`'s content into content-defined chunks as it streams in,
    /// and takes each chunk into a pack unless the repository holds it
    /// already; the file's hash is checked over the whole stream.
    async fn write_chunked(
        &self,
        v: &dyn Versions,
        entry: &FileEntry,
        stream: BoxStream<'static, Result<bytes::Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        (min, avg, max): (u32, u32, u32),
    ) -> Result<Option<String>> {
        let mut stream = super::upload::verified(entry, stream);
        let mut buf: Vec<u8> = Vec::new();
        let mut chunks = Vec::new();
        loop {
            let next = stream.next().await;
            let done = next.is_none();
            if let Some(piece) = next {
                let piece = piece?;
                on_bytes(piece.len() as u64);
                buf.extend_from_slice(&piece);
            }
            // A cut depends only on the bytes up to the maximum chunk size
            // from the chunk's start, so a buffer that long cuts where the
            // whole file would.
            while buf.len() >= max as usize || (done && !buf.is_empty()) {
                let cut = fastcdc::v2020::FastCDC::new(&buf, min, avg, max)
                    .next()
                    .map_or(buf.len(), |c| c.length);
                let chunk: Vec<u8> = buf.drain(..cut).collect();
                let hex = blake3::hash(&chunk).to_hex().to_string();
                let tagged = format!("{}:{hex}", crate::manifest::HashAlgorithm::Blake3);
                v.packs().add_blob(self, v, tagged, &chunk).await?;
                chunks.push((hex, chunk.len() as u64));
            }
            if done {
                break;
            }
        }
        v.chunked(entry, chunks);
        Ok(None)
    }

    /// Writes `entry`'s content compressed (and then sealed, when objects
    /// are) into `obj`, unless the object is already there in either form.
    async fn write_compressed(
        &self,
        v: &dyn Versions,
        entry: &FileEntry,
        obj: FileEntry,
        stream: BoxStream<'static, Result<bytes::Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Option<String>> {
        let checked = super::upload::verified(entry, stream);
        let sealed = v.seal(&obj.path, super::compress::compress_stream(checked));
        if entry.size <= self.multipart_threshold {
            // Compressed in memory and sent create-only in one PUT; an
            // object that is there already is the answer.
            let mut sealed = sealed;
            let mut buf = bytes::BytesMut::new();
            while let Some(chunk) = sealed.next().await {
                buf.extend_from_slice(&chunk?);
            }
            let buf = buf.freeze();
            let n = buf.len() as u64;
            let opts = PutOptions {
                mode: PutMode::Create,
                attributes: self.attrs(Some(&obj)),
                ..Default::default()
            };
            let put = self
                .store
                .put_opts(&self.location(&obj.path), PutPayload::from(buf), opts)
                .await;
            return match put {
                Ok(r) => {
                    on_bytes(entry.size);
                    v.stored(&obj.path, n);
                    v.compressed(entry, n);
                    Ok(r.e_tag)
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => self
                    .found_in_either_form(v, entry, &obj)
                    .await?
                    .ok_or_else(|| {
                        Error::store(
                            self.display(&obj.path),
                            object_store::Error::NotFound {
                                path: obj.path.clone(),
                                source: "the object that was there is gone".into(),
                            },
                        )
                    }),
                Err(e) => Err(Error::store(self.display(&obj.path), e)),
            };
        }
        if let Some(etag) = self.found_in_either_form(v, entry, &obj).await? {
            return Ok(etag);
        }
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let count = counted.clone();
        let sealed = sealed
            .inspect(move |c| {
                if let Ok(c) = c {
                    count.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            })
            .boxed();
        let etag = self.put_multipart_stream(&obj, sealed, on_bytes).await?;
        let n = counted.load(std::sync::atomic::Ordering::Relaxed);
        v.stored(&obj.path, n);
        v.compressed(entry, n);
        Ok(etag)
    }

    /// `Some(etag)` when `obj` is there already, plain or compressed (told
    /// to `v`); `None` when it is not (one HEAD).
    async fn found_in_either_form(
        &self,
        v: &dyn Versions,
        entry: &FileEntry,
        obj: &FileEntry,
    ) -> Result<Option<Option<String>>> {
        let head = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&self.location(&obj.path), head).await {
            // The plain form is exactly the stored size of the content;
            // the compressed one is smaller by at least an eighth.
            Ok(r) if r.meta.size == obj.size => Ok(Some(r.meta.e_tag)),
            Ok(r) if r.meta.size < obj.size => {
                v.compressed(entry, r.meta.size);
                Ok(Some(r.meta.e_tag))
            }
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(self.display(&obj.path), e)),
        }
    }

    /// The content of `e` when the snapshot tree keeps it in a pack (read
    /// and checked whole); `None` for content that is an object of its own.
    ///
    /// # Errors
    /// Store errors; [`crate::Error::Repository`] for damaged content.
    pub(crate) async fn read_packed(&self, e: &FileEntry) -> Result<Option<bytes::Bytes>> {
        let (Some(v), Some(p)) = (&self.versions, Packed::of(e)) else {
            return Ok(None);
        };
        v.packs().read(self, v.as_ref(), e, &p).await.map(Some)
    }

    /// The snapshot's entry for `rel`, when this is a snapshot tree whose
    /// snapshot keeps that file in a pack.
    pub(crate) fn packed_entry(&self, rel: &str) -> Option<FileEntry> {
        let e = self.versions.as_ref()?.entry_of_path(rel)?;
        Packed::of(&e).map(|_| e)
    }

    /// `Some(etag)` when the object for `obj` exists with its size (one
    /// HEAD); `None` when it does not.
    async fn existing(&self, obj: &FileEntry) -> Result<Option<Option<String>>> {
        let opts = GetOptions {
            head: true,
            ..Default::default()
        };
        match self.store.get_opts(&self.location(&obj.path), opts).await {
            Ok(r) if r.meta.size == obj.size => Ok(Some(r.meta.e_tag)),
            Ok(_) => Ok(None),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(self.display(&obj.path), e)),
        }
    }
}
