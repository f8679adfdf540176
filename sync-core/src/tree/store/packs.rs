//! Small files of a snapshot tree, stored together: a *pack* is one object
//! holding the content of many small files back to back, each compressed
//! when that pays and sealed on its own in an encrypted repository. A
//! snapshot's entry for a packed file names the pack and the byte range
//! of its content (see [`Packed`]), so a file is read with one ranged GET,
//! and a restore that needs most of a pack reads it whole, once.
//!
//! A backup of many small files so costs a PUT per pack, not per file, and
//! a restore a GET per pack. Packs are named by the hash of their bytes and
//! written create-only, like every other object of the repository.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::{GetOptions, GetRange, PutMode, PutOptions, PutPayload};

use super::{StoreTree, Versions};
use crate::error::{Error, Result};
use crate::manifest::{FileEntry, Manifest};

/// Files up to this size go into packs; larger ones are objects of their
/// own.
pub(crate) const BLOB_MAX: u64 = 1 << 20;

/// A pack is written once it holds this much.
pub(crate) const PACK_TARGET: usize = 8 << 20;

/// Whole packs a reader keeps in memory at once.
const CACHED_PACKS: usize = 6;

/// A restore reads a pack whole once it needs at least this many of its
/// files; fewer are read by range.
const WHOLE_PACK_USES: usize = 4;

/// Compressed content is kept only when it saves at least 1/8 of the
/// bytes.
const MIN_SAVING: usize = 8;

/// The entry fields that place a file's content inside a pack.
const OFFSET: &str = "packOffset";
const LENGTH: &str = "packLength";
const COMPRESSION: &str = "compression";

/// Where a packed file's content is: `length` stored bytes at `offset` of
/// the pack `object`, compressed with zstd when `zstd` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Packed {
    /// The pack's key, relative to the repository.
    pub object: String,
    /// Where the content's stored bytes start.
    pub offset: u64,
    /// How many stored bytes it has.
    pub length: u64,
    /// Whether the stored bytes are a zstd frame.
    pub zstd: bool,
}

impl Packed {
    /// The place `e` records, if its content is packed.
    pub(crate) fn of(e: &FileEntry) -> Option<Packed> {
        let x = e.extra.as_ref()?;
        Some(Packed {
            object: x.get("object")?.as_str()?.to_string(),
            offset: x.get(OFFSET)?.as_u64()?,
            length: x.get(LENGTH)?.as_u64()?,
            zstd: x.get(COMPRESSION).and_then(|c| c.as_str()) == Some("zstd"),
        })
    }

    /// Records this place in `e`, replacing any it had.
    pub(crate) fn set(&self, e: &mut FileEntry) {
        let x = std::sync::Arc::make_mut(e.extra.get_or_insert_with(Default::default));
        x.insert("object".into(), self.object.clone().into());
        x.insert(OFFSET.into(), self.offset.into());
        x.insert(LENGTH.into(), self.length.into());
        if self.zstd {
            x.insert(COMPRESSION.into(), "zstd".into());
        } else {
            x.remove(COMPRESSION);
        }
    }

    /// The byte range of the pack holding the content.
    pub(crate) fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.length
    }
}

/// The associated data a packed file's content is sealed with: its own
/// content hash, so content moved to another entry's place does not open.
pub(crate) fn blob_aad(e: &FileEntry) -> Vec<u8> {
    tagged_aad(&e.tagged_hash())
}

fn tagged_aad(tagged: &str) -> Vec<u8> {
    format!("pqsync blob {tagged}").into_bytes()
}

/// The chunks of a file kept in content-defined chunks (its entry's
/// `chunks`), each as an entry of its own: `<path> (chunk <i>)`, with the
/// chunk's size, BLAKE3 hash and place in a pack. `None` for any other
/// file (or a list that does not parse).
pub(crate) fn chunk_entries(e: &FileEntry) -> Option<Vec<FileEntry>> {
    let list = e.extra.as_ref()?.get("chunks")?.as_array()?;
    list.iter()
        .enumerate()
        .map(|(i, c)| {
            let hash = crate::manifest::Digest::from_hex(c.get("hash")?.as_str()?)?;
            let mut x = serde_json::Map::new();
            for k in ["object", OFFSET, LENGTH, COMPRESSION] {
                if let Some(v) = c.get(k) {
                    x.insert(k.into(), v.clone());
                }
            }
            Some(FileEntry {
                path: format!("{} (chunk {i})", e.path),
                size: c.get("size")?.as_u64()?,
                hash,
                hash_algorithm: crate::manifest::HashAlgorithm::Blake3,
                modified_at: e.modified_at.clone(),
                etag: None,
                content_type: None,
                extra: Some(Arc::new(x)),
            })
        })
        .collect()
}

/// What holds `e`'s content: its chunks, or the entry itself.
pub(crate) fn units(e: &FileEntry) -> Vec<FileEntry> {
    chunk_entries(e).unwrap_or_else(|| vec![e.clone()])
}

/// A chunk's record in its file's entry: hash, size and place.
pub(crate) fn chunk_json(hex: &str, size: u64, p: &Packed) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("hash".into(), hex.into());
    m.insert("size".into(), size.into());
    m.insert("object".into(), p.object.clone().into());
    m.insert(OFFSET.into(), p.offset.into());
    m.insert(LENGTH.into(), p.length.into());
    if p.zstd {
        m.insert(COMPRESSION.into(), "zstd".into());
    }
    serde_json::Value::Object(m)
}

/// A file's content as stored in a pack: compressed when that pays, then
/// sealed by `v`. Returns the bytes and whether they are compressed.
pub(crate) fn encode_blob(v: &dyn Versions, tagged: &str, plain: &[u8]) -> (Vec<u8>, bool) {
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    // One compression context per thread, not one per file.
    let packed = COMPRESSOR
        .with(|c| {
            let mut c = c.borrow_mut();
            if c.is_none() {
                *c = zstd::bulk::Compressor::new(3).ok();
            }
            c.as_mut().map(|c| c.compress(plain))
        })
        .and_then(|r| r.ok())
        .filter(|z| z.len() + plain.len() / MIN_SAVING < plain.len());
    let zstd = packed.is_some();
    let body = packed.unwrap_or_else(|| plain.to_vec());
    (v.seal_blob(&tagged_aad(tagged), body), zstd)
}

/// Opens sealed bytes given their associated data.
pub(crate) type Opener<'a> = dyn Fn(&[u8], &[u8]) -> Result<Vec<u8>> + 'a;

/// The content of `e` from the stored bytes at its place `p`: opened,
/// decompressed and checked against the entry's size and hash. `shown`
/// names the pack in errors.
///
/// # Errors
/// [`Error::Repository`] naming the pack and the file when the bytes do
/// not open or are not the file's content.
pub(crate) fn decode_blob(
    stored: &[u8],
    p: &Packed,
    e: &FileEntry,
    open: &Opener<'_>,
    shown: &str,
) -> Result<Bytes> {
    let damaged = |why: String| {
        Error::Repository {
        url: shown.to_string(),
        reason: format!(
            "the {} bytes at offset {} for {} {why} (damaged); run `pqsync check --read-data` on the repository",
            p.length, p.offset, e.path
        ),
    }
    };
    if stored.len() as u64 != p.length {
        return Err(damaged(format!("are short ({} read)", stored.len())));
    }
    let body = open(&blob_aad(e), stored)?;
    let plain = if p.zstd {
        let cap = usize::try_from(e.size).unwrap_or(usize::MAX);
        thread_local! {
            static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        // One decompression context per thread, not one per file.
        DECOMPRESSOR
            .with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                match d.as_mut() {
                    Some(d) => d.decompress(&body, cap.max(1)),
                    None => zstd::bulk::decompress(&body, cap.max(1)),
                }
            })
            .map_err(|err| damaged(format!("do not decompress ({err})")))?
    } else {
        body
    };
    if plain.len() as u64 != e.size || e.hash_algorithm.digest(&plain) != e.hash {
        return Err(damaged("do not hold its content".into()));
    }
    Ok(Bytes::from(plain))
}

/// Blobs gathered for one pack that is not written yet.
#[derive(Default)]
struct Open {
    bytes: Vec<u8>,
    /// Tagged hash, offset, length, compressed.
    blobs: Vec<(String, u64, u64, bool)>,
    /// The tagged hashes in `blobs`.
    held: std::collections::HashSet<String>,
}

/// Loads packed content of other snapshots, by tagged hash.
pub(crate) type MoreKnown =
    Box<dyn Fn() -> futures::future::BoxFuture<'static, HashMap<String, Packed>> + Send + Sync>;

/// The packs one run writes and reads.
#[derive(Default)]
pub(crate) struct Packs {
    /// Content the tree's snapshot already has in packs, by tagged hash.
    known: HashMap<String, Packed>,
    /// Where to look for content that is in neither: other snapshots'
    /// packs, loaded the first time a file is not found in `known`.
    more: Option<MoreKnown>,
    more_known: tokio::sync::OnceCell<HashMap<String, Packed>>,
    /// How many of the snapshot's files each pack holds.
    uses: HashMap<String, usize>,
    /// The pack being filled.
    open: Mutex<Open>,
    /// Packs whose upload failed; the commit tries them again.
    failed: Mutex<Vec<Open>>,
    /// Where this run put (or found) each content it was given.
    placed: Mutex<HashMap<String, Packed>>,
    /// Whole packs read lately.
    cache: Mutex<VecDeque<(String, Arc<tokio::sync::OnceCell<Bytes>>)>>,
}

impl std::fmt::Debug for Packs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Packs")
            .field("known", &self.known.len())
            .finish_non_exhaustive()
    }
}

impl Packs {
    /// The packs of a tree showing `head`.
    pub(crate) fn new(head: Option<&Manifest>) -> Self {
        let mut packs = Packs::default();
        for e in head.iter().flat_map(|m| m.files.values()).flat_map(units) {
            if let Some(p) = Packed::of(&e) {
                *packs.uses.entry(p.object.clone()).or_default() += 1;
                packs.known.insert(e.tagged_hash(), p);
            }
        }
        packs
    }

    /// Also looks for content in what `more` loads (once, and only when a
    /// file is not in the tree's own snapshot).
    pub(crate) fn with_more(&mut self, more: MoreKnown) {
        self.more = Some(more);
    }

    /// Where this run put each content it stored or found, by tagged hash.
    pub(crate) fn placed(&self) -> HashMap<String, Packed> {
        self.placed.lock().expect("placed").clone()
    }

    /// Takes `plain`, the verified content of `e`, into a pack, unless the
    /// snapshot (or this run) already holds it somewhere that may be relied
    /// on. A full pack is written before this returns; a pack whose upload
    /// fails is kept for [`Packs::finish`] to try again.
    pub(crate) async fn add(
        &self,
        tree: &StoreTree,
        v: &dyn Versions,
        e: &FileEntry,
        plain: &[u8],
    ) -> Result<()> {
        self.add_blob(tree, v, e.tagged_hash(), plain).await
    }

    /// [`Packs::add`] for content named by its tagged hash (a file's, or
    /// a chunk's).
    pub(crate) async fn add_blob(
        &self,
        tree: &StoreTree,
        v: &dyn Versions,
        tagged: String,
        plain: &[u8],
    ) -> Result<()> {
        if let Some(p) = self.known.get(&tagged).filter(|p| v.reusable(&p.object)) {
            self.placed
                .lock()
                .expect("placed")
                .insert(tagged, p.clone());
            return Ok(());
        }
        if self.placed.lock().expect("placed").contains_key(&tagged) {
            return Ok(());
        }
        if let Some(more) = &self.more {
            let more = self.more_known.get_or_init(more).await;
            if let Some(p) = more.get(&tagged).filter(|p| v.reusable(&p.object)) {
                self.placed
                    .lock()
                    .expect("placed")
                    .insert(tagged, p.clone());
                return Ok(());
            }
        }
        let (stored, zstd) = encode_blob(v, &tagged, plain);
        let full = {
            let mut open = self.open.lock().expect("open pack");
            if !open.held.insert(tagged.clone()) {
                return Ok(());
            }
            let offset = open.bytes.len() as u64;
            open.bytes.extend_from_slice(&stored);
            open.blobs.push((tagged, offset, stored.len() as u64, zstd));
            (open.bytes.len() >= PACK_TARGET).then(|| std::mem::take(&mut *open))
        };
        if let Some(pack) = full {
            if let Err((pack, _)) = self.write(tree, v, pack).await {
                self.failed.lock().expect("failed packs").push(pack);
            }
        }
        Ok(())
    }

    /// Writes the pack being filled and every pack whose upload failed.
    ///
    /// # Errors
    /// The first upload that fails again.
    pub(crate) async fn finish(&self, tree: &StoreTree, v: &dyn Versions) -> Result<()> {
        let mut todo = std::mem::take(&mut *self.failed.lock().expect("failed packs"));
        todo.push(std::mem::take(&mut *self.open.lock().expect("open pack")));
        let mut first = None;
        for pack in todo.into_iter().filter(|p| !p.blobs.is_empty()) {
            if let Err((pack, e)) = self.write(tree, v, pack).await {
                self.failed.lock().expect("failed packs").push(pack);
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Writes one pack; on failure hands it back with the error.
    async fn write(
        &self,
        tree: &StoreTree,
        v: &dyn Versions,
        mut pack: Open,
    ) -> std::result::Result<(), (Open, Error)> {
        let bytes = Bytes::from(std::mem::take(&mut pack.bytes));
        match self.put(tree, v, bytes.clone()).await {
            Ok(key) => {
                let mut placed = self.placed.lock().expect("placed");
                for (tagged, offset, length, zstd) in pack.blobs {
                    placed.insert(
                        tagged,
                        Packed {
                            object: key.clone(),
                            offset,
                            length,
                            zstd,
                        },
                    );
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!("writing a pack failed, to be tried again: {e}");
                pack.bytes = bytes.to_vec();
                Err((pack, e))
            }
        }
    }

    /// One create-only PUT of a pack under the name of its bytes; a pack
    /// that exists already with its size is the same pack.
    async fn put(&self, tree: &StoreTree, v: &dyn Versions, bytes: Bytes) -> Result<String> {
        let mut key = v.pack_key(&blake3::hash(&bytes).to_hex());
        if !v.reusable(&key) {
            // The same bytes under a name a prune has marked: never relied
            // on, so they go under another name.
            key = format!("{key}.{:08x}", rand::random::<u32>());
        }
        let size = bytes.len() as u64;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let loc = tree.location(&key);
        match tree
            .store()
            .put_opts(&loc, PutPayload::from(bytes), opts)
            .await
        {
            Ok(_) => {}
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                let head = GetOptions {
                    head: true,
                    ..Default::default()
                };
                let meta = tree
                    .store()
                    .get_opts(&loc, head)
                    .await
                    .map_err(|e| Error::store(tree.display_path(&key), e))?;
                if meta.meta.size != size {
                    return Err(Error::Repository {
                        url: tree.display_path(&key),
                        reason: "a pack with this content's name exists with another size; run `pqsync check` on the repository".into(),
                    });
                }
            }
            Err(e) => return Err(Error::store(tree.display_path(&key), e)),
        }
        v.stored(&key, size);
        Ok(key)
    }

    /// The content of `e`, packed at `p`: from a whole pack already read,
    /// else by reading the whole pack (when the snapshot has several of its
    /// files) or just the range.
    ///
    /// # Errors
    /// Store errors; [`Error::Repository`] for damaged content.
    pub(crate) async fn read(
        &self,
        tree: &StoreTree,
        v: &dyn Versions,
        e: &FileEntry,
        p: &Packed,
    ) -> Result<Bytes> {
        let shown = tree.display_path(&p.object);
        let whole = self.uses.get(&p.object).copied().unwrap_or(0) >= WHOLE_PACK_USES;
        let stored = if whole {
            let cell = self.cell(&p.object);
            let pack = cell
                .get_or_try_init(|| async {
                    let got = tree
                        .store()
                        .get_opts(&tree.location(&p.object), GetOptions::default())
                        .await
                        .map_err(|err| Error::store(&shown, err))?;
                    got.bytes().await.map_err(|err| Error::store(&shown, err))
                })
                .await?;
            let end = usize::try_from(p.offset + p.length).unwrap_or(usize::MAX);
            let start = usize::try_from(p.offset).unwrap_or(usize::MAX);
            pack.slice(start.min(pack.len())..end.min(pack.len()))
        } else {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(p.range())),
                ..Default::default()
            };
            let got = tree
                .store()
                .get_opts(&tree.location(&p.object), opts)
                .await
                .map_err(|err| Error::store(&shown, err))?;
            got.bytes().await.map_err(|err| Error::store(&shown, err))?
        };
        decode_blob(&stored, p, e, &|aad, b| v.open_blob(aad, b, &shown), &shown)
    }

    /// The cache cell of a whole pack, made (and the oldest dropped) when
    /// it is not there.
    fn cell(&self, key: &str) -> Arc<tokio::sync::OnceCell<Bytes>> {
        let mut cache = self.cache.lock().expect("pack cache");
        if let Some((_, c)) = cache.iter().find(|(k, _)| k == key) {
            return c.clone();
        }
        if cache.len() >= CACHED_PACKS {
            cache.pop_front();
        }
        let c = Arc::new(tokio::sync::OnceCell::new());
        cache.push_back((key.to_string(), c.clone()));
        c
    }
}
