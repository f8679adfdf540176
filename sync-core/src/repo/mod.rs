//! The snapshot repository: deduplicated, immutable versions of databases
//! in one object-store prefix, with retention and point-in-time restore.
//!
//! A repository is a [`StoreTree`] with a fixed layout (`config`,
//! `objects/`, `index/snapshots/`, `index/marks/`; specified in
//! `docs/repository.md`). A backup is the sync engine pushing a directory
//! into a snapshot tree ([`Versions`]): the parent snapshot is the tree's
//! manifest, so only content that changed is sent, every object is
//! written create-only under its content hash, and the commit writes a new
//! snapshot record. A restore is the engine pulling a snapshot tree into a
//! directory. `forget` and `prune` are the only operations that delete.

mod crypto;
mod format;
mod known;
mod prune;
mod retention;
mod split;
mod target;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use object_store::{GetOptions, PutMode, PutOptions, PutPayload};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::sync::{Engine, MaxDelete, SyncOptions};
use crate::tree::{LocalTree, StoreTree};
use crypto::Keys;
pub use crypto::{KdfParams, KeyFile};
pub use format::{Mark, RepoConfig, SnapshotRecord, SnapshotSummary, DEFAULT_GRACE};
use format::{CONFIG, INDEX, KEYS, MARKS, SNAPSHOTS};
pub use prune::{CheckReport, PruneOptions, PruneReport, ReadData};
pub use retention::{Decision, ForgetReport, GroupBy, Policy};
pub use split::MergeReport;
use target::{NewSnapshot, Target};

/// A snapshot: its id and its record.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The BLAKE3 hash of the record (64 hex digits).
    pub id: String,
    /// The record.
    pub record: SnapshotRecord,
}

impl Snapshot {
    /// The first 8 hex digits of the id, as listings show it.
    pub fn short_id(&self) -> &str {
        &self.id[..8.min(self.id.len())]
    }

    /// The snapshot's time.
    pub fn time(&self) -> DateTime<Utc> {
        self.record.time().unwrap_or(DateTime::<Utc>::MIN_UTC)
    }
}

/// Which snapshot a command means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotSpec {
    /// The newest.
    Latest,
    /// The one whose id starts with these hex digits.
    Id(String),
    /// The newest at or before this time.
    At(DateTime<Utc>),
}

impl SnapshotSpec {
    /// Parses `latest` or an id prefix (at least 4 hex digits).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        if s == "latest" {
            return Ok(SnapshotSpec::Latest);
        }
        if s.len() >= 4 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(SnapshotSpec::Id(s.to_ascii_lowercase()));
        }
        Err(Error::InvalidArgument {
            argument: "snapshot",
            reason: format!("{s:?} is neither `latest` nor a snapshot id (at least 4 hex digits, as `pqsync snapshots` shows them)"),
        })
    }
}

/// Parses a point in time: RFC 3339 (`2026-02-01T12:00:00Z`), a time
/// without a zone (taken as UTC), or a date (`2026-02-01`, meaning the end
/// of that day, UTC, so the day's backups count).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the forms accepted.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let end = d.and_hms_milli_opt(23, 59, 59, 999).expect("a valid time");
        return Ok(end.and_utc());
    }
    Err(Error::InvalidArgument {
        argument: "time",
        reason: format!(
            "{s:?} is not a time: give RFC 3339 (2026-02-01T12:00:00Z) or a date (2026-02-01)"
        ),
    })
}

/// Which snapshots a command looks at.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Only this database (its `databaseId`, or its name).
    pub database: Option<String>,
    /// Only snapshots made on this host.
    pub host: Option<String>,
    /// Only snapshots with every one of these tags.
    pub tags: Vec<String>,
}

impl Filter {
    /// Whether `s` passes.
    pub fn matches(&self, s: &Snapshot) -> bool {
        let r = &s.record;
        self.database
            .as_ref()
            .is_none_or(|d| &r.database_id == d || &r.name == d)
            && self.host.as_ref().is_none_or(|h| &r.host == h)
            && self.tags.iter().all(|t| r.tags.contains(t))
    }
}

/// How a backup is made.
#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Tags the snapshot carries.
    pub tags: Vec<String>,
    /// The host it names (default: this machine's name).
    pub host: Option<String>,
    /// The sync options (concurrency, retries, ...).
    pub sync: SyncOptions,
    /// The time the snapshot records (default: now, when the backup
    /// starts), for importing backups made earlier.
    pub time: Option<DateTime<Utc>>,
}

/// A backup, ready to plan and execute with [`Backup::engine`].
pub struct Backup {
    engine: Engine,
    target: Arc<Target>,
    /// The parent snapshot, if one was found.
    pub parent: Option<Snapshot>,
}

impl std::fmt::Debug for Backup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backup")
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Backup {
    /// The engine that makes the snapshot: plan it, then execute the plan.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Reports progress to `reporter`.
    pub fn with_reporter(mut self, reporter: Arc<dyn crate::runtime::Reporter>) -> Self {
        self.engine = self.engine.with_reporter(reporter);
        self
    }

    /// A handle that, once the engine has executed, gives the snapshot it
    /// committed.
    pub fn committed(&self) -> Committed {
        Committed(self.target.clone())
    }

    /// The engine, for a caller that drives it itself (keep
    /// [`Backup::committed`] first).
    pub fn into_engine(self) -> Engine {
        self.engine
    }
}

/// The snapshot a backup committed, once it has.
#[derive(Clone, Debug)]
pub struct Committed(Arc<Target>);

impl Committed {
    /// The snapshot, if the backup committed one.
    pub fn get(&self) -> Option<Snapshot> {
        self.0
            .committed
            .lock()
            .expect("committed")
            .clone()
            .map(|(id, record)| Snapshot { id, record })
    }
}

/// A snapshot repository at a store prefix.
#[derive(Clone, Debug)]
pub struct Repository {
    tree: StoreTree,
    config: RepoConfig,
    cache: Option<PathBuf>,
    /// The keys, once an encrypted repository is unlocked, and the id of
    /// the key file that opened.
    keys: Option<(Arc<Keys>, String)>,
    /// A key file this value wrote before it had a cache to keep it in.
    fresh_key: Option<(String, KeyFile)>,
}

impl Repository {
    pub(crate) fn from_parts(tree: StoreTree, config: RepoConfig) -> Self {
        Repository {
            tree,
            config,
            cache: None,
            keys: None,
            fresh_key: None,
        }
    }

    /// Makes a new repository at `tree` (one create-only PUT of its
    /// `config`). With a `password`, the repository is encrypted: a random
    /// master key is made and wrapped under the password (one more PUT).
    ///
    /// # Errors
    /// [`Error::Repository`] if one is already there; store errors.
    pub async fn init(
        tree: StoreTree,
        grace: std::time::Duration,
        password: Option<&[u8]>,
    ) -> Result<Self> {
        let mut config = RepoConfig::new(grace);
        let keys = password.map(|_| Arc::new(Keys::generate()));
        if keys.is_some() {
            config.encryption = Some(
                serde_json::to_value(crypto::EncryptionParams::current())
                    .expect("params serialise"),
            );
        }
        let bytes = serde_json::to_vec_pretty(&config).expect("config serialises");
        match put_new(&tree, CONFIG, bytes).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::Repository {
                    url: tree.url().to_string(),
                    reason: "a repository is already there".into(),
                })
            }
            Err(e) => return Err(e),
        }
        let mut repo = Repository::from_parts(tree, config);
        if let (Some(k), Some(pw)) = (keys, password) {
            let file = k.wrap(pw);
            let id = repo.put_key(&file).await?;
            repo.fresh_key = Some((id.clone(), file));
            repo.keys = Some((k, id));
        }
        Ok(repo)
    }

    /// Wraps `keys` under `password` as a new key file; returns its id.
    async fn write_key(&self, keys: &Keys, password: &[u8]) -> Result<String> {
        let file = keys.wrap(password);
        let id = self.put_key(&file).await?;
        self.cache_key(&id, &file);
        Ok(id)
    }

    /// Stores a key file under a new id; returns the id.
    async fn put_key(&self, file: &KeyFile) -> Result<String> {
        let id = format!("{:032x}", rand::random::<u128>());
        let bytes = serde_json::to_vec_pretty(file).expect("key file serialises");
        put_new(&self.tree, &format!("{KEYS}/{id}"), bytes).await?;
        Ok(id)
    }

    /// Whether the repository is encrypted.
    pub fn encrypted(&self) -> bool {
        self.config.encrypted()
    }

    /// Opens an encrypted repository with `password`, trying the key files
    /// cached by an earlier run first (no request), then the repository's.
    /// A repository without encryption is returned as it is.
    ///
    /// # Errors
    /// [`Error::Repository`] when no key file opens with the password.
    pub async fn unlock(mut self, password: &[u8]) -> Result<Self> {
        if !self.encrypted() || self.keys.is_some() {
            return Ok(self);
        }
        let cached = self.cached_keys();
        let found = cached
            .iter()
            .find_map(|(id, f)| Keys::unwrap(f, password).map(|k| (Arc::new(k), id.clone())));
        let found = match found {
            Some(f) => Some(f),
            None => {
                let mut files = self.key_files().await?;
                // The run that makes a repository writes its first key
                // just after the config: a run that found the config of
                // one being made (the shards of a split backup starting at
                // once) waits for it.
                let made = chrono::DateTime::parse_from_rfc3339(&self.config.created_at)
                    .map(|t| Utc::now() - t.with_timezone(&Utc))
                    .unwrap_or(chrono::TimeDelta::MAX);
                let mut waits = 0;
                while files.is_empty() && made < chrono::TimeDelta::minutes(5) && waits < 20 {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    files = self.key_files().await?;
                    waits += 1;
                }
                if files.is_empty() {
                    return Err(Error::Repository {
                        url: self.url().to_string(),
                        reason: "the repository is encrypted but holds no key (the run that made it stopped before writing one); it cannot be opened: back up to a new prefix".into(),
                    });
                }
                for (id, f) in &files {
                    self.cache_key(id, f);
                }
                files.iter().find_map(|(id, f)| {
                    Keys::unwrap(f, password).map(|k| (Arc::new(k), id.clone()))
                })
            }
        };
        match found {
            Some(k) => {
                self.keys = Some(k);
                Ok(self)
            }
            None => Err(Error::Repository {
                url: self.url().to_string(),
                reason: "wrong password: no key of the repository opens with it".into(),
            }),
        }
    }

    /// The repository's key files (one LIST, and a GET each).
    ///
    /// # Errors
    /// Store errors.
    pub async fn key_files(&self) -> Result<Vec<(String, KeyFile)>> {
        let root = self.tree.location(KEYS);
        let listed: Vec<object_store::ObjectMeta> = self
            .tree
            .store()
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("{}/{KEYS}", self.url()), e))?;
        let mut out = Vec::new();
        for m in listed {
            let Some(id) = self
                .tree
                .rel_of(&m.location)
                .and_then(|r| r.strip_prefix("keys/"))
            else {
                continue;
            };
            let id = id.to_string();
            let bytes = self.tree.read_all(&format!("{KEYS}/{id}")).await?;
            match serde_json::from_slice::<KeyFile>(&bytes) {
                Ok(f) => out.push((id, f)),
                Err(e) => tracing::warn!("key file {id} does not parse: {e}"),
            }
        }
        Ok(out)
    }

    fn cached_keys(&self) -> Vec<(String, KeyFile)> {
        let Some(dir) = self
            .cache
            .as_ref()
            .map(|c| c.join(&self.config.id).join("keys"))
        else {
            return Vec::new();
        };
        std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let id = e.file_name().to_string_lossy().to_string();
                let f = serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok()?;
                Some((id, f))
            })
            .collect()
    }

    fn cache_key(&self, id: &str, f: &KeyFile) {
        if let Some(c) = &self.cache {
            let p = c.join(&self.config.id).join("keys").join(id);
            cache_put(&p, &serde_json::to_vec(f).expect("key file serialises"));
        }
    }

    fn forget_cached_key(&self, id: &str) {
        if let Some(c) = &self.cache {
            let _ = std::fs::remove_file(c.join(&self.config.id).join("keys").join(id));
        }
    }

    /// Adds a password: the master key wrapped under it, as a new key
    /// file. Returns its id.
    ///
    /// # Errors
    /// [`Error::Repository`] when the repository is not encrypted or not
    /// unlocked; store errors.
    pub async fn add_key(&self, password: &[u8]) -> Result<String> {
        let (keys, _) = self.unlocked()?;
        let id = self.write_key(keys, password).await?;
        Ok(id)
    }

    /// Removes a key file. The key this repository was unlocked with, and
    /// the last key, cannot be removed.
    ///
    /// # Errors
    /// [`Error::Repository`] for those, or an unknown id; store errors.
    pub async fn remove_key(&self, id_prefix: &str) -> Result<String> {
        let (_, current) = self.unlocked()?;
        let files = self.key_files().await?;
        let hits: Vec<&String> = files
            .iter()
            .map(|(id, _)| id)
            .filter(|id| id.starts_with(id_prefix))
            .collect();
        let err = |reason: String| Error::Repository {
            url: self.url().to_string(),
            reason,
        };
        let id = match hits.as_slice() {
            [one] => (*one).clone(),
            [] => {
                return Err(err(format!(
                    "no key id starts with {id_prefix} (see `pqsync key list`)"
                )))
            }
            _ => {
                return Err(err(format!(
                    "several key ids start with {id_prefix}; give more digits"
                )))
            }
        };
        if &id == current {
            return Err(err("that is the key this command opened the repository with; remove it with another password, or change it with `pqsync key passwd`".into()));
        }
        self.tree
            .delete_many(&[format!("{KEYS}/{id}")])
            .await
            .map_err(|mut f| f.remove(0).1)?;
        self.forget_cached_key(&id);
        Ok(id)
    }

    /// Changes the password the repository was unlocked with: a new key
    /// file, then the old one removed. Returns the new key's id.
    ///
    /// # Errors
    /// As [`Repository::add_key`].
    pub async fn change_password(&self, new_password: &[u8]) -> Result<String> {
        let (keys, current) = self.unlocked()?;
        let id = self.write_key(keys, new_password).await?;
        self.tree
            .delete_many(&[format!("{KEYS}/{current}")])
            .await
            .map_err(|mut f| f.remove(0).1)?;
        self.forget_cached_key(current);
        Ok(id)
    }

    /// The id of the key file this repository was unlocked with.
    pub fn key_in_use(&self) -> Option<&str> {
        self.keys.as_ref().map(|(_, id)| id.as_str())
    }

    fn unlocked(&self) -> Result<(&Arc<Keys>, &String)> {
        match &self.keys {
            Some((k, id)) => Ok((k, id)),
            None if self.encrypted() => Err(self.locked()),
            None => Err(Error::Repository {
                url: self.url().to_string(),
                reason: "the repository is not encrypted, so it has no keys".into(),
            }),
        }
    }

    fn locked(&self) -> Error {
        Error::Repository {
            url: self.url().to_string(),
            reason: "the repository is encrypted: give its password (PQSYNC_PASSWORD, --password-file or --password-command)".into(),
        }
    }

    /// The keys, when the repository is encrypted (an error when it is
    /// locked); `None` when it is not.
    fn keys(&self) -> Result<Option<Arc<Keys>>> {
        match (&self.keys, self.encrypted()) {
            (Some((k, _)), _) => Ok(Some(k.clone())),
            (None, true) => Err(self.locked()),
            (None, false) => Ok(None),
        }
    }

    /// Opens the repository at `tree` (one GET of its `config`).
    ///
    /// # Errors
    /// [`Error::Repository`] when there is none, or its format is unknown;
    /// store errors.
    pub async fn open(tree: StoreTree) -> Result<Self> {
        match Self::read_config(&tree).await? {
            Some(c) => Ok(Repository::from_parts(tree, c)),
            None => Err(Error::Repository {
                url: tree.url().to_string(),
                reason: "no snapshot repository here (no config object); make one with `pqsync backup URL -d DB`".into(),
            }),
        }
    }

    /// Opens the repository at `tree` if it holds one, with exactly one
    /// GET; `None` when it has no repository config (a missing bucket is
    /// not told apart from an empty prefix here).
    ///
    /// # Errors
    /// [`Error::Repository`] for an unknown format; store errors.
    pub async fn open_if_any(tree: StoreTree) -> Result<Option<Self>> {
        let shown = format!("{}/{CONFIG}", tree.url());
        let got = tree
            .store()
            .get_opts(&tree.location(CONFIG), GetOptions::default())
            .await;
        match got {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| Error::store(&shown, e))?;
                let config = RepoConfig::parse(&bytes, tree.url())?;
                Ok(Some(Repository::from_parts(tree, config)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(shown, e)),
        }
    }

    /// Opens the repository at `tree`, making it if there is none yet
    /// (encrypted under `password`, when one is given; unless `write` is
    /// false: then a new repository's configuration is returned without
    /// being saved, for a dry run). Returns whether it is new. An existing
    /// encrypted repository is returned locked: see [`Repository::unlock`].
    ///
    /// # Errors
    /// As [`Repository::open`] and [`Repository::init`].
    pub async fn open_or_init(
        tree: StoreTree,
        grace: std::time::Duration,
        write: bool,
        password: Option<&[u8]>,
    ) -> Result<(Self, bool)> {
        if let Some(c) = Self::read_config(&tree).await? {
            return Ok((Repository::from_parts(tree, c), false));
        }
        if !write {
            return Ok((Repository::from_parts(tree, RepoConfig::new(grace)), true));
        }
        // Refuse to turn a mirror's prefix into a repository.
        if tree.read_manifest().await?.is_some() {
            return Err(Error::Repository {
                url: tree.url().to_string(),
                reason: "this prefix holds a database pushed by `pqsync push`, not a snapshot repository; back up to another prefix".into(),
            });
        }
        match Self::init(tree.clone(), grace, password).await {
            Ok(r) => Ok((r, true)),
            // Another backup made it first.
            Err(Error::Repository { .. }) => Ok((Self::open(tree).await?, false)),
            Err(e) => Err(e),
        }
    }

    async fn read_config(tree: &StoreTree) -> Result<Option<RepoConfig>> {
        let shown = format!("{}/{CONFIG}", tree.url());
        match tree
            .store()
            .get_opts(&tree.location(CONFIG), GetOptions::default())
            .await
        {
            Ok(got) => {
                let bytes = got.bytes().await.map_err(|e| Error::store(&shown, e))?;
                RepoConfig::parse(&bytes, tree.url()).map(Some)
            }
            Err(object_store::Error::NotFound { .. }) => {
                tree.check_bucket().await?;
                Ok(None)
            }
            Err(e) => Err(Error::store(shown, e)),
        }
    }

    /// Keeps a copy of every snapshot record read under `dir` (records
    /// never change), so later commands do not read them again.
    pub fn with_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(dir.into());
        if let Some((id, file)) = self.fresh_key.take() {
            self.cache_key(&id, &file);
        }
        self
    }

    /// The repository's configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The URL the repository was opened with.
    pub fn url(&self) -> &str {
        self.tree.url()
    }

    /// Requests made so far.
    pub fn requests(&self) -> u64 {
        self.tree.requests()
    }

    pub(crate) fn tree(&self) -> &StoreTree {
        &self.tree
    }

    /// One LIST of `index/`: the snapshot ids and the mark ids.
    pub(crate) async fn index(&self) -> Result<(Vec<String>, Vec<String>)> {
        let root = self.tree.location(INDEX);
        let listed: Vec<object_store::ObjectMeta> = self
            .tree
            .store()
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("{}/{INDEX}", self.url()), e))?;
        let (mut snaps, mut marks) = (Vec::new(), Vec::new());
        for m in listed {
            let Some(rel) = self.tree.rel_of(&m.location) else {
                continue;
            };
            if let Some(id) = rel.strip_prefix(&format!("{SNAPSHOTS}/")) {
                snaps.push(id.to_string());
            } else if let Some(id) = rel.strip_prefix(&format!("{MARKS}/")) {
                marks.push(id.to_string());
            }
        }
        Ok((snaps, marks))
    }

    /// A snapshot's record, from the cache or one GET, without its tree
    /// (so that listing many snapshots holds only their summaries; the tree
    /// is [`Repository::tree_of`]).
    ///
    /// # Errors
    /// [`Error::Repository`] for a damaged record; store errors.
    pub async fn snapshot(&self, id: &str) -> Result<Snapshot> {
        // The summary (the record without its tree) is cached beside the
        // record, so listing many snapshots parses only summaries.
        let summary = self.cache_path(id).map(|p| p.with_extension("summary"));
        if let Some(record) = summary
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice::<SnapshotRecord>(&b).ok())
        {
            return Ok(Snapshot {
                id: id.to_string(),
                record,
            });
        }
        let mut record = self.record(id).await?;
        record.manifest = None;
        if let Some(p) = summary {
            cache_put(
                &p,
                &serde_json::to_vec(&record).expect("a record serialises"),
            );
        }
        Ok(Snapshot {
            id: id.to_string(),
            record,
        })
    }

    /// The entries of snapshot `id`'s tree, for reading the repository
    /// (prune, check) rather than restoring: the record is read once and
    /// its tree parsed on a blocking thread, without the checks a tree to
    /// be written needs (paths are not used).
    ///
    /// # Errors
    /// A record that cannot be read, or whose tree does not parse.
    pub(crate) async fn entries_of(&self, id: &str) -> Result<Vec<crate::manifest::FileEntry>> {
        #[derive(serde::Deserialize)]
        struct Files {
            files: BTreeMap<String, crate::manifest::FileEntry>,
        }
        let record = self.record(id).await?;
        let origin = format!("{}/{SNAPSHOTS}/{id}", self.url());
        crate::tree::blocking("reading a snapshot's tree", move || {
            let raw = record.manifest.ok_or_else(|| Error::ManifestCorrupt {
                path: origin.clone(),
                reason: "the snapshot record has no tree".into(),
            })?;
            serde_json::from_str::<Files>(raw.get())
                .map(|f| f.files.into_values().collect())
                .map_err(|e| Error::ManifestCorrupt {
                    path: origin,
                    reason: e.to_string(),
                })
        })
        .await
    }

    /// A whole snapshot record, from the cache or one GET.
    async fn record(&self, id: &str) -> Result<SnapshotRecord> {
        let cached = self.cache_path(id);
        let keys = self.keys()?;
        if let Some(bytes) = cached.as_ref().and_then(|p| std::fs::read(p).ok()) {
            if let Ok(record) = SnapshotRecord::decode(&bytes, id, self.url(), keys.as_deref()) {
                return Ok(record);
            }
        }
        let key = format!("{SNAPSHOTS}/{id}");
        let bytes = self.tree.read_all(&key).await?;
        let record = SnapshotRecord::decode(&bytes, id, self.url(), keys.as_deref())?;
        if let Some(p) = cached {
            cache_put(&p, &bytes);
        }
        Ok(record)
    }

    fn cache_path(&self, id: &str) -> Option<PathBuf> {
        Some(self.cache_dir()?.join(id))
    }

    /// Where this repository's snapshot records are cached.
    fn cache_dir(&self) -> Option<PathBuf> {
        Some(self.cache.as_ref()?.join(&self.config.id).join("snapshots"))
    }

    /// Every snapshot, oldest first.
    ///
    /// # Errors
    /// Store errors and damaged records.
    pub async fn snapshots(&self) -> Result<Vec<Snapshot>> {
        let (ids, _) = self.index().await?;
        self.load(ids).await
    }

    async fn load(&self, ids: Vec<String>) -> Result<Vec<Snapshot>> {
        let mut all: Vec<Snapshot> = futures::stream::iter(ids)
            .map(|id| async move { self.snapshot(&id).await })
            .buffer_unordered(16)
            .try_collect()
            .await?;
        all.sort_by(|a, b| a.time().cmp(&b.time()).then_with(|| a.id.cmp(&b.id)));
        Ok(all)
    }

    /// The objects prune marks name, with the marks' ids.
    pub(crate) async fn marks(&self, ids: &[String]) -> Result<Vec<(String, Mark)>> {
        futures::stream::iter(ids.to_vec())
            .map(|id| async move {
                let key = format!("{MARKS}/{id}");
                let bytes = self.tree.read_all(&key).await?;
                let mark: Mark = serde_json::from_slice(&bytes).map_err(|e| Error::Repository {
                    url: format!("{}/{key}", self.url()),
                    reason: format!("a prune mark does not parse ({e}); delete it and prune again"),
                })?;
                Ok((id, mark))
            })
            .buffer_unordered(16)
            .try_collect()
            .await
    }

    /// Every object any mark names.
    pub(crate) async fn marked(&self) -> Result<BTreeSet<String>> {
        let (_, marks) = self.index().await?;
        Ok(self
            .marks(&marks)
            .await?
            .into_iter()
            .flat_map(|(_, m)| m.objects.into_keys())
            .collect())
    }

    /// Picks the snapshot `spec` means among those `filter` passes. For a
    /// time after the newest, the newest is taken and the second value
    /// says by how much the time is past it.
    ///
    /// # Errors
    /// [`Error::Repository`] when none matches (naming the oldest, for a
    /// time before it), an id prefix is ambiguous, or a time is asked of
    /// snapshots of several databases.
    pub fn resolve<'a>(
        &self,
        all: &'a [Snapshot],
        spec: &SnapshotSpec,
        filter: &Filter,
    ) -> Result<(&'a Snapshot, Option<chrono::Duration>)> {
        let err = |reason: String| Error::Repository {
            url: self.url().to_string(),
            reason,
        };
        let chosen: Vec<&Snapshot> = all.iter().filter(|s| filter.matches(s)).collect();
        if chosen.is_empty() {
            return Err(err(
                "no snapshot matches (list them with `pqsync snapshots`)".into(),
            ));
        }
        match spec {
            SnapshotSpec::Id(prefix) => {
                let hits: Vec<&&Snapshot> = chosen
                    .iter()
                    .filter(|s| s.id.starts_with(prefix.as_str()))
                    .collect();
                match hits.as_slice() {
                    [one] => Ok((one, None)),
                    [] => Err(err(format!(
                        "no snapshot id starts with {prefix} (list them with `pqsync snapshots`)"
                    ))),
                    many => Err(err(format!(
                        "{} snapshots have ids starting with {prefix}; give more digits",
                        many.len()
                    ))),
                }
            }
            SnapshotSpec::Latest | SnapshotSpec::At(_) => {
                let dbs: BTreeSet<&str> = chosen.iter().map(|s| s.record.name.as_str()).collect();
                let ids: BTreeSet<&str> = chosen
                    .iter()
                    .map(|s| s.record.database_id.as_str())
                    .collect();
                if ids.len() > 1 {
                    return Err(err(format!(
                        "the repository holds snapshots of {} databases ({}); name one with --database",
                        ids.len(),
                        dbs.into_iter().collect::<Vec<_>>().join(", ")
                    )));
                }
                let newest = chosen.last().expect("not empty");
                let SnapshotSpec::At(t) = spec else {
                    return Ok((newest, None));
                };
                match chosen.iter().rev().find(|s| s.time() <= *t) {
                    Some(s) if std::ptr::eq(*s, *newest) => Ok((s, Some(*t - s.time()))),
                    Some(s) => Ok((s, None)),
                    None => {
                        let oldest = chosen[0];
                        Err(err(format!(
                            "no snapshot at or before {}; the oldest is {} at {}",
                            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                            oldest.short_id(),
                            oldest.record.time
                        )))
                    }
                }
            }
        }
    }

    /// Prepares a backup of `local`: finds the parent snapshot (the newest
    /// of the same database) and the marked objects (one LIST, plus a GET
    /// per uncached record and per mark), and builds the engine.
    ///
    /// # Errors
    /// Store errors and damaged records.
    pub async fn backup(&self, local: LocalTree, opts: BackupOptions) -> Result<Backup> {
        let time = opts.time.map_or_else(crate::manifest::now_iso, |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        });
        let (ids, mark_ids) = self.index().await?;
        let all = self.load(ids).await?;
        let marked: BTreeSet<String> = self
            .marks(&mark_ids)
            .await?
            .into_iter()
            .flat_map(|(_, m)| m.objects.into_keys())
            .collect();
        let source = std::fs::canonicalize(local.root())
            .unwrap_or_else(|_| local.root().to_path_buf())
            .display()
            .to_string();
        let own = local.read_manifest().ok().flatten();
        let parent = all
            .iter()
            .rev()
            .find(|s| match &own {
                Some(m) => s.record.database_id == m.database_id,
                None => s.record.source == source,
            })
            .cloned();
        let head = match &parent {
            Some(p) => {
                let mut m = self.tree_of(p).await?;
                // Content a prune has marked is not relied on: it is sent
                // again, under another key.
                let keys = self.keys()?;
                m.files.retain(|_, e| {
                    crate::tree::units(e).iter().all(|u| {
                        !marked.contains(&format::entry_object_keyed(
                            &self.config,
                            keys.as_deref(),
                            u,
                        ))
                    })
                });
                Some(m)
            }
            None => None,
        };
        let mut target = Target::new(self.config.clone(), self.url(), head);
        // Small files are also looked for in every snapshot, through the
        // local index of packed content, read only if this backup has a
        // small file its parent does not hold.
        let (repo, skip, listed) = (self.clone(), marked.clone(), all.clone());
        target.packs.with_more(Box::new(move || {
            let (repo, listed, skip) = (repo.clone(), listed.clone(), skip.clone());
            Box::pin(async move { repo.packed_places(&listed, &skip).await })
        }));
        target.first = all.is_empty();
        target.marked = marked;
        target.cache = self.cache_dir();
        target.keys = self.keys()?;
        target.new = Some(NewSnapshot {
            time,
            host: opts.host.unwrap_or_else(crate::sync::host_name),
            tags: opts.tags,
            source,
            parent: parent.as_ref().map(|p| p.id.clone()),
            event_log: crate::parquedb::local_coverage(local.root()),
        });
        let target = Arc::new(target);
        let tree = self.tree.clone().with_versions(target.clone());
        let sync = opts
            .sync
            .with_hash(self.config.hash)
            .with_delete(true)
            .with_max_delete(MaxDelete::Percent(100.0));
        Ok(Backup {
            engine: Engine::backup(local, tree, sync),
            target,
            parent,
        })
    }

    /// The engine that makes `local` equal to `snapshot`: plan it, then
    /// execute the plan. Files it replaces or removes go to the local
    /// trash.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] for a damaged snapshot.
    pub async fn restore(
        &self,
        snapshot: &Snapshot,
        local: LocalTree,
        opts: SyncOptions,
    ) -> Result<Engine> {
        let m = self.tree_of(snapshot).await?;
        let alg = m.hash_algorithm().unwrap_or(self.config.hash);
        let mut target = Target::new(self.config.clone(), self.url(), Some(m));
        target.keys = self.keys()?;
        let target = Arc::new(target);
        let tree = self.tree.clone().with_versions(target);
        Ok(Engine::restore(local, tree, opts.with_hash(alg)))
    }

    /// A snapshot as a read-only tree, for `verify`, `stats` and `list`
    /// without restoring it: its manifest is the snapshot's, and each path
    /// reads the object holding its content.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] for a damaged snapshot.
    pub async fn snapshot_tree(&self, snapshot: &Snapshot) -> Result<StoreTree> {
        let m = self.tree_of(snapshot).await?;
        let url = format!("{}:{}", self.url(), snapshot.short_id());
        let mut target = Target::new(self.config.clone(), &url, Some(m));
        target.keys = self.keys()?;
        Ok(self
            .tree
            .clone()
            .with_versions(Arc::new(target))
            .with_url(url))
    }

    /// The tree a snapshot holds (its record read again, from the cache or
    /// one GET).
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] for a damaged snapshot; store errors.
    pub async fn tree_of(&self, snapshot: &Snapshot) -> Result<Manifest> {
        let record = match &snapshot.record.manifest {
            None => self.record(&snapshot.id).await?,
            Some(_) => snapshot.record.clone(),
        };
        record.tree(&format!("{}/{SNAPSHOTS}/{}", self.url(), snapshot.id))
    }

    /// The object key holding an entry's content.
    pub fn object_of(&self, e: &crate::manifest::FileEntry) -> String {
        let keys = self.keys.as_ref().map(|(k, _)| k.as_ref());
        format::entry_object_keyed(&self.config, keys, e)
    }

    /// The stored size of an object holding `n` bytes of content.
    pub(crate) fn stored_size(&self, n: u64) -> u64 {
        if self.encrypted() {
            crypto::sealed_size(n)
        } else {
            n
        }
    }

    /// An object's content, opened when the repository is encrypted.
    pub(crate) async fn read_object(
        &self,
        key: &str,
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes>>> {
        let stored = self.tree.open(key).await?;
        Ok(match self.keys()? {
            Some(k) => k.open_stream(
                key.as_bytes().to_vec(),
                stored,
                format!("{}/{key}", self.url()),
            ),
            None => stored,
        })
    }
}

/// What changed between two snapshots' trees.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SnapshotDiff {
    /// Paths only in the second.
    pub added: Vec<String>,
    /// Paths in both with other content.
    pub changed: Vec<String>,
    /// Paths only in the first.
    pub removed: Vec<String>,
}

/// Compares two trees path by path.
pub fn diff_trees(a: &Manifest, b: &Manifest) -> SnapshotDiff {
    let mut d = SnapshotDiff::default();
    for (p, e) in &b.files {
        match a.files.get(p) {
            None => d.added.push(p.clone()),
            Some(old) if !old.same_content(e) => d.changed.push(p.clone()),
            Some(_) => {}
        }
    }
    d.removed = a
        .files
        .keys()
        .filter(|p| !b.files.contains_key(*p))
        .cloned()
        .collect();
    d
}

/// Writes a new object create-only; `false` when one was already there.
async fn put_new(tree: &StoreTree, key: &str, bytes: Vec<u8>) -> Result<bool> {
    let opts = PutOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    match tree
        .store()
        .put_opts(&tree.location(key), PutPayload::from(bytes), opts)
        .await
    {
        Ok(_) => Ok(true),
        Err(
            object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. },
        ) => Ok(false),
        Err(e) => Err(Error::store(format!("{}/{key}", tree.url()), e)),
    }
}

/// Caches a snapshot record (best effort: a record that is not cached is
/// read again).
pub(crate) fn cache_put(path: &std::path::Path, bytes: &[u8]) {
    let _ = path.parent().map(std::fs::create_dir_all);
    let _ = write_atomic(path, bytes);
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map(|_| ()).map_err(|e| e.error)
}

/// Sizes of objects by key, as a LIST of `objects/` finds them.
pub(crate) type Objects = BTreeMap<String, u64>;
