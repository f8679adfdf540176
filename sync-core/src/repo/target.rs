//! The snapshot tree a backup writes to and a restore reads from: the
//! repository's [`Versions`] for one run.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::{PutMode, PutOptions, PutPayload};

use super::crypto::Keys;
use super::format::{RepoConfig, SnapshotRecord, SnapshotSummary, SHARDS, SNAPSHOTS};
use crate::error::{Error, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::parquedb::EventCoverage;
use crate::tree::{Packs, RemoteManifest, StoreTree, Versions};

/// What a new snapshot records besides its tree.
#[derive(Clone, Debug)]
pub(crate) struct NewSnapshot {
    pub time: String,
    pub host: String,
    pub tags: Vec<String>,
    pub source: String,
    pub parent: Option<String>,
    pub event_log: Option<EventCoverage>,
}

/// One run's view of the repository as a tree.
#[derive(Debug)]
pub(crate) struct Target {
    pub config: RepoConfig,
    pub url: String,
    /// The snapshot shown as the tree's manifest.
    pub head: Option<Manifest>,
    /// Objects a prune has marked for deletion when the run started.
    pub marked: BTreeSet<String>,
    /// For a backup: what the snapshot records.
    pub new: Option<NewSnapshot>,
    pub started: Instant,
    /// Content stored under another key than its usual one, by tagged hash.
    pub relocated: Mutex<HashMap<String, String>>,
    /// Objects this run created, with their sizes.
    pub added: Mutex<HashMap<String, u64>>,
    /// Content kept compressed in its object, by tagged hash: the
    /// object's stored size.
    pub compressed: Mutex<HashMap<String, u64>>,
    /// Content cut into chunks, by tagged hash: each chunk's hex and size.
    pub chunked: Mutex<HashMap<String, Vec<(String, u64)>>>,
    /// The snapshot this run committed.
    pub committed: Mutex<Option<(String, SnapshotRecord)>>,
    /// Where the committed record is cached, given its id.
    pub cache: Option<std::path::PathBuf>,
    /// The keys of an encrypted repository.
    pub keys: Option<Arc<Keys>>,
    /// Whether the repository had no snapshot when the run started.
    pub first: bool,
    /// The packs small files go into and come from.
    pub packs: Packs,
}

impl Target {
    pub fn new(config: RepoConfig, url: &str, head: Option<Manifest>) -> Self {
        Target {
            packs: Packs::new(head.as_ref()),
            config,
            url: url.to_string(),
            head,
            marked: BTreeSet::new(),
            new: None,
            started: Instant::now(),
            relocated: Mutex::default(),
            added: Mutex::default(),
            compressed: Mutex::default(),
            chunked: Mutex::default(),
            committed: Mutex::default(),
            cache: None,
            keys: None,
            first: false,
        }
    }
}

#[async_trait]
impl Versions for Target {
    fn head(&self) -> Option<RemoteManifest> {
        self.head.clone().map(|manifest| RemoteManifest {
            manifest,
            etag: None,
        })
    }

    fn object(&self, e: &FileEntry) -> String {
        super::format::entry_object_keyed(&self.config, self.keys.as_deref(), e)
    }

    fn object_of_path(&self, rel: &str) -> Option<(String, u64)> {
        let e = self.head.as_ref()?.files.get(rel)?;
        Some((self.object(e), e.size))
    }

    fn entry_of_path(&self, rel: &str) -> Option<FileEntry> {
        self.head.as_ref()?.files.get(rel).cloned()
    }

    fn packs(&self) -> &Packs {
        &self.packs
    }

    fn pack_key(&self, hex: &str) -> String {
        self.config.object_key(hex)
    }

    fn seal_blob(&self, aad: &[u8], body: Vec<u8>) -> Vec<u8> {
        match &self.keys {
            Some(k) => k.seal(aad, &body),
            None => body,
        }
    }

    fn open_blob(&self, aad: &[u8], stored: &[u8], shown: &str) -> Result<Vec<u8>> {
        match &self.keys {
            Some(k) => k.open(aad, stored, shown),
            None => Ok(stored.to_vec()),
        }
    }

    fn stored_size(&self, n: u64) -> u64 {
        match &self.keys {
            Some(_) => super::crypto::sealed_size(n),
            None => n,
        }
    }

    fn seal(
        &self,
        key: &str,
        plain: BoxStream<'static, Result<Bytes>>,
    ) -> BoxStream<'static, Result<Bytes>> {
        match &self.keys {
            Some(k) => k.seal_stream(key.as_bytes().to_vec(), plain),
            None => plain,
        }
    }

    fn unseal(
        &self,
        key: &str,
        stored: BoxStream<'static, Result<Bytes>>,
    ) -> BoxStream<'static, Result<Bytes>> {
        match &self.keys {
            Some(k) => k.open_stream(
                key.as_bytes().to_vec(),
                stored,
                format!("{}/{key}", self.url),
            ),
            None => stored,
        }
    }

    fn sealed(&self) -> bool {
        self.keys.is_some()
    }

    fn reusable(&self, key: &str) -> bool {
        !self.marked.contains(key)
    }

    fn relocate(&self, e: &FileEntry) -> String {
        let usual = super::format::entry_object_keyed(&self.config, self.keys.as_deref(), e);
        let key = format!("{usual}.{:08x}", rand::random::<u32>());
        self.relocated
            .lock()
            .expect("relocated")
            .insert(e.tagged_hash(), key.clone());
        key
    }

    fn compressed(&self, e: &FileEntry, stored: u64) {
        self.compressed
            .lock()
            .expect("compressed")
            .insert(e.tagged_hash(), stored);
    }

    fn chunking(&self, e: &FileEntry) -> Option<(u32, u32, u32)> {
        self.config.chunking_for(&e.path)
    }

    fn chunked(&self, e: &FileEntry, chunks: Vec<(String, u64)>) {
        self.chunked
            .lock()
            .expect("chunked")
            .insert(e.tagged_hash(), chunks);
    }

    fn stored(&self, key: &str, size: u64) {
        self.added
            .lock()
            .expect("added")
            .insert(key.to_string(), size);
    }

    async fn commit(&self, tree: &StoreTree, m: &Manifest) -> Result<Option<String>> {
        let m = self.finished_tree(tree, m).await?;
        self.vouch(tree, &m).await?;
        let record = self.record_of(&m)?;
        let (bytes, id) = record.encode(self.keys.as_deref());
        let bytes = bytes::Bytes::from(bytes);
        put_record(tree, &self.url, &id, bytes.clone()).await?;
        if let Some(dir) = &self.cache {
            super::cache_put(&dir.join(&id), &bytes);
            let summary = SnapshotRecord {
                manifest: None,
                ..record.clone()
            };
            super::cache_put(
                &dir.join(&id).with_extension("summary"),
                &serde_json::to_vec(&summary).expect("a record serialises"),
            );
            let fresh = record.parent.is_none() && self.first;
            super::known::note_committed(dir, &id, &m, fresh);
            let objects = m
                .files
                .values()
                .flat_map(crate::tree::units)
                .map(|u| self.object(&u))
                .collect();
            super::known::cache_object_set(dir, &id, &objects);
        }
        *self.committed.lock().expect("committed") = Some((id.clone(), record));
        Ok(Some(id))
    }

    async fn record_shard(
        &self,
        tree: &StoreTree,
        index: u32,
        count: u32,
        m: &Manifest,
    ) -> Result<()> {
        let m = self.finished_tree(tree, m).await?;
        self.vouch(tree, &m).await?;
        let record = self.record_of(&m)?;
        let (bytes, _) = record.encode(self.keys.as_deref());
        let key = shard_key(&split_name(self.keys.as_deref(), &m.name), count, index);
        tree.store()
            .put_opts(
                &tree.location(&key),
                PutPayload::from(bytes),
                PutOptions::default(),
            )
            .await
            .map_err(|e| Error::store(format!("{}/{key}", self.url), e))?;
        Ok(())
    }
}

/// Writes a snapshot record's `bytes` at `index/snapshots/<id>`,
/// create-only: a record already there is this one (its id is its hash).
///
/// # Errors
/// [`Error::Store`].
pub(crate) async fn put_record(tree: &StoreTree, url: &str, id: &str, bytes: Bytes) -> Result<()> {
    let key = format!("{SNAPSHOTS}/{id}");
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match tree
        .store()
        .put_opts(&tree.location(&key), PutPayload::from(bytes), opts)
        .await
    {
        Ok(_)
        | Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(()),
        Err(e) => Err(Error::store(format!("{url}/{key}"), e)),
    }
}

/// Where shard `index` of `count` of a split backup of the database named
/// `split` (see [`split_name`]) leaves its part.
pub(crate) fn shard_key(split: &str, count: u32, index: u32) -> String {
    format!("{SHARDS}/{split}/{count}/{index}")
}

/// The folder of the split backups of the database named `name`: 16 hex
/// digits of its BLAKE3 hash (keyed in an encrypted repository, so the
/// key reveals no name), so that splits of several databases into one
/// repository keep their parts apart.
pub(crate) fn split_name(keys: Option<&Keys>, name: &str) -> String {
    let hex = match keys {
        Some(k) => k.content_name(name.as_bytes()),
        None => blake3::hash(name.as_bytes()).to_hex().to_string(),
    };
    hex[..16].to_string()
}

impl Target {
    /// `m` as the snapshot holds it: small files gathered into packs are
    /// written first, and each entry then names its pack and place, its
    /// chunks, or the object its content went to.
    async fn finished_tree(&self, tree: &StoreTree, m: &Manifest) -> Result<Manifest> {
        self.packs.finish(tree, self).await?;
        let placed = self.packs.placed();
        let mut m = m.clone();
        let relocated = self.relocated.lock().expect("relocated").clone();
        let compressed = self.compressed.lock().expect("compressed").clone();
        let chunked = self.chunked.lock().expect("chunked").clone();
        for e in m.files.values_mut() {
            let tagged = e.tagged_hash();
            if let Some(p) = placed.get(&tagged) {
                p.set(e);
                continue;
            }
            if let Some(chunks) = chunked.get(&tagged) {
                let mut list = Vec::with_capacity(chunks.len());
                for (hex, size) in chunks {
                    let key = format!("{}:{hex}", crate::manifest::HashAlgorithm::Blake3);
                    let p = placed.get(&key).ok_or_else(|| Error::Repository {
                        url: self.url.clone(),
                        reason: format!("a chunk of {} was not stored; nothing was committed: run the backup again", e.path),
                    })?;
                    list.push(crate::tree::chunk_json(hex, *size, p));
                }
                std::sync::Arc::make_mut(e.extra.get_or_insert_with(Default::default))
                    .insert("chunks".into(), list.into());
                continue;
            }
            if let Some(key) = relocated.get(&tagged) {
                std::sync::Arc::make_mut(e.extra.get_or_insert_with(Default::default))
                    .insert("object".into(), key.clone().into());
            }
            if let Some(stored) = compressed.get(&tagged) {
                let x = std::sync::Arc::make_mut(e.extra.get_or_insert_with(Default::default));
                x.insert("compression".into(), "zstd".into());
                x.insert("storedSize".into(), (*stored).into());
            }
        }
        Ok(m)
    }

    /// Checks that no prune can have deleted content `m` relies on before
    /// its record lands.
    ///
    /// A prune deletes an object no sooner than a grace period after it
    /// marked it. An object this run relies on was unmarked when the run
    /// started, so it cannot be gone before the start plus the grace
    /// period, and the record must land before then. Within half of it,
    /// write it (the other half is slack for the PUT in flight); within
    /// three quarters, first read the marks again (none made since the
    /// start can have been acted on yet), leaving a quarter of slack;
    /// later than that, nothing can be vouched for.
    async fn vouch(&self, tree: &StoreTree, m: &Manifest) -> Result<()> {
        let grace = std::time::Duration::from_secs(self.config.grace_seconds);
        let elapsed = self.started.elapsed();
        if elapsed * 4 >= grace * 3 {
            return Err(Error::Repository {
                url: self.url.clone(),
                reason: format!(
                    "this backup ran {}s, too close to the repository's {}s grace period: a prune may delete content it relies on before its commit lands; nothing was committed: run it again (it sends only what is missing)",
                    elapsed.as_secs(),
                    grace.as_secs()
                ),
            });
        }
        if elapsed * 2 >= grace {
            self.recheck_marks(tree, m).await?;
        }
        Ok(())
    }

    /// The snapshot record of `m`, as this run makes it.
    fn record_of(&self, m: &Manifest) -> Result<SnapshotRecord> {
        let Some(new) = &self.new else {
            return Err(Error::Repository {
                url: self.url.clone(),
                reason: "a restore does not write snapshots".into(),
            });
        };
        let added = self.added.lock().expect("added").clone();
        Ok(SnapshotRecord {
            snapshot: super::format::FORMAT,
            time: new.time.clone(),
            host: new.host.clone(),
            tags: new.tags.clone(),
            source: new.source.clone(),
            parent: new.parent.clone(),
            database_id: m.database_id.clone(),
            name: m.name.clone(),
            event_log: new.event_log.clone(),
            summary: SnapshotSummary {
                files: m.files.len() as u64,
                bytes: m.total_bytes(),
                added_objects: added.len() as u64,
                added_bytes: added.values().sum(),
            },
            manifest: Some(serde_json::value::to_raw_value(m).expect("a manifest serialises")),
        })
    }

    /// A backup that ran for longer than half the grace period reads the
    /// marks again: an object a prune marked after the run started may be
    /// deleted by a prune a grace period after that, so the snapshot must
    /// not rely on it.
    async fn recheck_marks(&self, tree: &StoreTree, m: &Manifest) -> Result<()> {
        let repo = super::Repository::from_parts(tree.clone(), self.config.clone());
        let marked = repo.marked().await?;
        let hit = m.files.values().find(|e| {
            crate::tree::units(e)
                .iter()
                .any(|u| marked.contains(&self.object(u)))
        });
        match hit {
            Some(e) => Err(Error::Repository {
                url: self.url.clone(),
                reason: format!(
                    "a prune marked the content of {} for deletion while this backup ran; nothing was committed: run the backup again (it stores that content anew)",
                    e.path
                ),
            }),
            None => Ok(()),
        }
    }
}
