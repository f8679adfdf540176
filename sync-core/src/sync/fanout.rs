//! One mirror source shared by several destinations, each object read from
//! the source once.
//!
//! Every destination gets its own [`Engine`](super::Engine): its own plan,
//! guard, trash and commit, so one failing destination stops none of the
//! others. What they share is the source. When the plans are made, each
//! engine counts the objects it will stream (a copy inside one store reads
//! nothing). An object that more than one destination streams is fetched
//! once into a spool file on local disk, checked against its hash there,
//! sent to each destination from that file, and removed when the last
//! destination is done with it. Memory stays bounded by the transfers in
//! flight; the spool holds only objects some destination has yet to send.
//! An object only one destination needs is streamed straight through.
//!
//! A source without a manifest is listed by each plan, but each object is
//! hashed once: the identities found by the first plan are reused.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::TryStreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};
use crate::manifest::{ContentHasher, FileEntry};
use crate::tree::{FileStat, StoreTree};

/// A mirror source read once for several destinations: build one, then an
/// engine per destination with
/// [`Engine::mirror_shared`](super::Engine::mirror_shared). Plan every
/// engine before executing any, so each object's readers are known.
#[derive(Debug, Clone)]
pub struct FanOut {
    pub(crate) tree: StoreTree,
    pub(crate) spool: Arc<Spool>,
}

impl FanOut {
    /// Shares `source`, spooling objects several destinations need in a
    /// temporary folder under `spool_dir`.
    ///
    /// # Errors
    /// [`Error::Io`] if the folder cannot be made.
    pub fn new(source: StoreTree, spool_dir: &Path) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("pqsync-spool-")
            .tempdir_in(spool_dir)
            .map_err(|e| Error::io(spool_dir, e))?;
        Ok(FanOut {
            tree: source,
            spool: Arc::new(Spool {
                dir,
                slots: Mutex::new(HashMap::new()),
                identities: Mutex::new(HashMap::new()),
                reads: AtomicU64::new(0),
                next: AtomicU64::new(0),
            }),
        })
    }

    /// The source.
    pub fn source(&self) -> &StoreTree {
        &self.tree
    }

    /// Source objects read in full so far (to send or to hash).
    pub fn objects_read(&self) -> u64 {
        self.spool.reads.load(Ordering::Relaxed)
    }
}

/// The objects fetched for several destinations.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: tempfile::TempDir,
    /// By `path` and tagged hash: one object version.
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    /// Identities a listing's hashing found: path -> (source ETag, entry).
    identities: Mutex<HashMap<String, (String, FileEntry)>>,
    reads: AtomicU64,
    next: AtomicU64,
}

/// One object version that destinations stream.
#[derive(Debug, Default)]
struct Slot {
    /// Destinations that planned to stream it.
    wanted: AtomicUsize,
    /// Of those, the ones not yet done with it.
    readers: AtomicUsize,
    /// The spooled copy, once fetched (retried after a failed fetch).
    file: tokio::sync::OnceCell<(PathBuf, FileStat)>,
}

fn key(e: &FileEntry) -> String {
    format!("{}\n{}", e.path, e.tagged_hash())
}

impl Spool {
    /// Counts one more full read of a source object.
    pub(crate) fn read_one(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// What a previous plan found for `path` at source version `id`.
    pub(crate) fn identity(&self, path: &str, id: &str) -> Option<FileEntry> {
        let ids = self.identities.lock().expect("identities");
        ids.get(path)
            .filter(|(known, _)| known == id)
            .map(|(_, e)| e.clone())
    }

    /// Remembers what hashing `path` at version `id` found.
    pub(crate) fn remember(&self, path: &str, id: &str, e: &FileEntry) {
        self.identities
            .lock()
            .expect("identities")
            .insert(path.to_string(), (id.to_string(), e.clone()));
    }

    /// One destination will stream `e`.
    fn expect(&self, e: &FileEntry) {
        let mut slots = self.slots.lock().expect("slots");
        let slot = slots.entry(key(e)).or_default();
        slot.wanted.fetch_add(1, Ordering::SeqCst);
        slot.readers.fetch_add(1, Ordering::SeqCst);
    }

    /// The slot of `e`, if more than one destination streams it.
    fn shared(&self, e: &FileEntry) -> Option<Arc<Slot>> {
        let slots = self.slots.lock().expect("slots");
        slots
            .get(&key(e))
            .filter(|s| s.wanted.load(Ordering::SeqCst) > 1)
            .cloned()
    }

    /// One destination is done with the object of `key`: the last one
    /// removes the file.
    fn release(&self, key: &str) {
        let mut slots = self.slots.lock().expect("slots");
        let Some(slot) = slots.get(key) else { return };
        if slot.readers.fetch_sub(1, Ordering::SeqCst) <= 1 {
            if let Some((path, _)) = slot.file.get() {
                let _ = std::fs::remove_file(path);
            }
            slots.remove(key);
        }
    }

    /// Reads `e` from `tree` into a new spool file, checking its bytes.
    async fn fetch(&self, tree: &StoreTree, e: &FileEntry) -> Result<(PathBuf, FileStat)> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.path().join(format!("{n}"));
        let result = async {
            let mut file = tokio::fs::File::create(&path)
                .await
                .map_err(|err| Error::io(&path, err))?;
            let mut stream = tree.open(&e.path).await?;
            self.read_one();
            let mut hasher = ContentHasher::new(e.hash_algorithm);
            let mut total = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                total += chunk.len() as u64;
                if total > e.size {
                    return Err(e.too_long(total));
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|err| Error::io(&path, err))?;
            }
            e.verify(total, hasher)?;
            file.flush().await.map_err(|err| Error::io(&path, err))?;
            let md = file.metadata().await.map_err(|err| Error::io(&path, err))?;
            Ok(FileStat::of(&md))
        }
        .await;
        match result {
            Ok(stat) => Ok((path, stat)),
            Err(err) => {
                let _ = tokio::fs::remove_file(&path).await;
                Err(err)
            }
        }
    }
}

/// One destination's share of a [`FanOut`].
#[derive(Debug)]
pub(crate) struct Share {
    pub spool: Arc<Spool>,
    /// Objects this destination streams and has not finished with.
    pending: Mutex<HashSet<String>>,
}

impl Share {
    pub fn new(spool: Arc<Spool>) -> Self {
        Share {
            spool,
            pending: Mutex::new(HashSet::new()),
        }
    }

    /// This destination's plan streams `e`.
    pub fn expect(&self, e: &FileEntry) {
        if self.pending.lock().expect("pending").insert(key(e)) {
            self.spool.expect(e);
        }
    }

    /// The spooled copy of `e`, fetched from `tree` by the first reader,
    /// or `None` when this destination alone streams it.
    pub async fn spooled(
        &self,
        tree: &StoreTree,
        e: &FileEntry,
    ) -> Result<Option<(PathBuf, FileStat)>> {
        let Some(slot) = self.spool.shared(e) else {
            return Ok(None);
        };
        let file = slot
            .file
            .get_or_try_init(|| self.spool.fetch(tree, e))
            .await?;
        Ok(Some(file.clone()))
    }

    /// This destination sent `e`.
    pub fn done(&self, e: &FileEntry) {
        let k = key(e);
        if self.pending.lock().expect("pending").remove(&k) {
            self.spool.release(&k);
        }
    }

    /// The run ended: whatever it did not send is released.
    pub fn finish(&self) {
        let left: Vec<String> = self.pending.lock().expect("pending").drain().collect();
        for k in left {
            self.spool.release(&k);
        }
    }
}
