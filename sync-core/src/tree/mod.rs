//! The two kinds of tree a sync moves data between: a local directory
//! ([`LocalTree`]) and an object-store prefix ([`StoreTree`]), and the
//! read-only view of either that `verify`, `stats` and `list` work through
//! ([`Tree`]).

pub(crate) mod local;
pub(crate) mod store;
pub(crate) mod trash;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::manifest::{hash_file, ContentHasher, Digest, HashAlgorithm, Manifest};

pub use local::{
    database_root, default_state_home, state_dir_for, FileStat, LeftOut, LocalScan, LocalTree,
    RunLock, STATE_HOME_VAR,
};
pub(crate) use store::{
    chunk_json, compressed_size, decode_blob, decompress_stream, units, Announced, CommitMode,
    Packed, Packs, PartLog, Versions,
};
pub use store::{BucketCopy, Capabilities, PartCopy, RemoteManifest, StoreTree, Usage};
pub use trash::{Kept, Side, Trash, TrashedFile, DEFAULT_RETENTION, TRASH_DIR};

/// A tree read without syncing it: a directory or a store prefix, alike.
///
/// Every method reads; none writes. On a store each call is one request
/// (a listing, one per page, counts once), counted in
/// [`Tree::requests`].
#[async_trait]
pub trait Tree: Send + Sync + std::fmt::Debug {
    /// How the tree is named in messages: the directory or the URL.
    fn name(&self) -> String;

    /// Requests made to a store so far (0 for a directory).
    fn requests(&self) -> u64;

    /// The tree's manifest, if it has one.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] if it does not parse; I/O and store errors.
    async fn manifest(&self) -> Result<Option<Manifest>>;

    /// The files actually present, with their sizes (a walk of the
    /// directory, or a LIST of the prefix), and warnings about files left
    /// out.
    ///
    /// # Errors
    /// I/O and store errors.
    async fn list(&self) -> Result<(BTreeMap<String, u64>, Vec<String>)>;

    /// Reads `range` of a file.
    ///
    /// # Errors
    /// I/O and store errors.
    async fn read_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes>;

    /// Reads a whole file into memory; for small files.
    ///
    /// # Errors
    /// I/O and store errors.
    async fn read_all(&self, rel: &str) -> Result<Bytes>;

    /// A file as a local, seekable [`std::fs::File`]: the file itself for a
    /// directory; for a store, the object streamed into an anonymous
    /// temporary file (gone when dropped), so memory stays bounded.
    ///
    /// # Errors
    /// I/O and store errors.
    async fn open_file(&self, rel: &str) -> Result<std::fs::File>;

    /// Hashes a file with `alg`. A store streams the object once and keeps
    /// its first 4 and last `tail` bytes ([`Hashed::ends`]) so a footer can
    /// be read without another request; with `keep`, it also keeps the
    /// whole object in an anonymous temporary file ([`Hashed::spool`]) for
    /// a caller that reads it again.
    ///
    /// # Errors
    /// I/O and store errors.
    async fn hash(
        &self,
        rel: &str,
        size: u64,
        alg: HashAlgorithm,
        tail: usize,
        keep: bool,
    ) -> Result<Hashed>;
}

/// What [`Tree::hash`] read.
#[derive(Debug)]
pub struct Hashed {
    /// The file's digest.
    pub digest: Digest,
    /// Bytes read.
    pub size: u64,
    /// The first 4 and the last `tail` bytes, when they came with the hash.
    pub ends: Option<(Bytes, Bytes)>,
    /// The object's bytes in a temporary file, when kept.
    pub spool: Option<std::fs::File>,
}

#[async_trait]
impl Tree for LocalTree {
    fn name(&self) -> String {
        self.root().display().to_string()
    }

    fn requests(&self) -> u64 {
        0
    }

    async fn manifest(&self) -> Result<Option<Manifest>> {
        self.read_manifest()
    }

    async fn list(&self) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        let t = self.clone();
        blocking("listing a directory", move || t.list()).await
    }

    async fn read_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.abs(rel);
        blocking("reading a file", move || {
            let io = |e| Error::io(&path, e);
            let mut f = std::fs::File::open(&path).map_err(io)?;
            f.seek(SeekFrom::Start(range.start)).map_err(io)?;
            let mut buf = Vec::with_capacity((range.end - range.start) as usize);
            f.take(range.end - range.start)
                .read_to_end(&mut buf)
                .map_err(io)?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn read_all(&self, rel: &str) -> Result<Bytes> {
        let path = self.abs(rel);
        blocking("reading a file", move || {
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| Error::io(&path, e))
        })
        .await
    }

    async fn open_file(&self, rel: &str) -> Result<std::fs::File> {
        let path = self.abs(rel);
        std::fs::File::open(&path).map_err(|e| Error::io(&path, e))
    }

    async fn hash(
        &self,
        rel: &str,
        size: u64,
        alg: HashAlgorithm,
        _tail: usize,
        _keep: bool,
    ) -> Result<Hashed> {
        let path = self.abs(rel);
        let (digest, size) =
            blocking("hashing a file", move || hash_file(&path, alg, size)).await?;
        Ok(Hashed {
            digest,
            size,
            ends: None,
            spool: None,
        })
    }
}

#[async_trait]
impl Tree for StoreTree {
    fn name(&self) -> String {
        self.url().to_string()
    }

    fn requests(&self) -> u64 {
        StoreTree::requests(self)
    }

    async fn manifest(&self) -> Result<Option<Manifest>> {
        Ok(self.read_manifest().await?.map(|r| r.manifest))
    }

    async fn list(&self) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        Ok((self.list_files().await?, Vec::new()))
    }

    async fn read_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes> {
        StoreTree::read_range(self, rel, range).await
    }

    async fn read_all(&self, rel: &str) -> Result<Bytes> {
        StoreTree::read_all(self, rel).await
    }

    async fn open_file(&self, rel: &str) -> Result<std::fs::File> {
        spool(self, rel, |_| {}).await
    }

    async fn hash(
        &self,
        rel: &str,
        _size: u64,
        alg: HashAlgorithm,
        tail: usize,
        keep: bool,
    ) -> Result<Hashed> {
        let mut hasher = ContentHasher::new(alg);
        let mut ends = Ends::new(tail);
        let mut seen = |chunk: &[u8]| {
            hasher.update(chunk);
            ends.push(chunk);
        };
        let spooled = if keep {
            Some(spool(self, rel, &mut seen).await?)
        } else {
            let mut stream = self.open(rel).await?;
            while let Some(chunk) = stream.try_next().await? {
                seen(&chunk);
            }
            None
        };
        let (size, head, tail) = ends.finish();
        Ok(Hashed {
            digest: hasher.finalize(),
            size,
            ends: Some((head, tail)),
            spool: spooled,
        })
    }
}

/// Streams an object into an anonymous temporary file (gone when dropped),
/// showing every chunk to `seen` on the way.
async fn spool(t: &StoreTree, rel: &str, mut seen: impl FnMut(&[u8])) -> Result<std::fs::File> {
    let tmp_dir = std::env::temp_dir();
    let io = |e| Error::io(&tmp_dir, e);
    let file = tempfile::tempfile().map_err(io)?;
    let mut out = tokio::fs::File::from_std(file.try_clone().map_err(io)?);
    let mut stream = t.open(rel).await?;
    while let Some(chunk) = stream.try_next().await? {
        seen(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
            .await
            .map_err(io)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(io)?;
    Ok(file)
}

/// Runs blocking file work on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    task: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::task(task, e))?
}

/// The first four and the last `keep` bytes of a stream.
struct Ends {
    n: u64,
    keep: usize,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Ends {
    fn new(keep: usize) -> Self {
        Ends {
            n: 0,
            keep,
            head: Vec::with_capacity(4),
            tail: Vec::new(),
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.n += chunk.len() as u64;
        if self.head.len() < 4 {
            let take = (4 - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > 2 * self.keep {
            self.tail.drain(..self.tail.len() - self.keep);
        }
    }

    fn finish(self) -> (u64, Bytes, Bytes) {
        (self.n, Bytes::from(self.head), Bytes::from(self.tail))
    }
}
