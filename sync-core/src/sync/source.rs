//! The side of a run that is not the remote, behind one interface: a local
//! directory (push, pull, sync) or a store prefix (the source of a mirror).
//!
//! The engine picks one [`Source`] when it is built and never asks again
//! which kind it has: everything that differs between the two (how the
//! file list and the base are read, how a file is streamed out, where the
//! journal and the capability cache live, what is left to do after the
//! commit) is a method here.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;

use super::commit::merged_base_iter;
use super::fanout::{FanOut, Share};
use super::mode::Mode;
use super::report::FileError;
use super::shard::{merged_view, remove_records};
use crate::error::{Error, Result};
use crate::layout::is_ignored;
use crate::layout::MANIFEST_PATH;
use crate::manifest::validate_path;
use crate::manifest::{now_iso, FileEntry, HashAlgorithm, Manifest};
use crate::parquedb::rebuild::object_entry;
use crate::tree::local::{folder_name, open_at, remote_key, BaseStamp, JournalEntry, RemoteState};
use crate::tree::store::COPY_MAX;
use crate::tree::{Capabilities, FileStat, LeftOut, LocalTree, PartLog, RemoteManifest, StoreTree};
use futures::StreamExt;

/// Called with the byte count of each chunk a transfer moves.
pub(crate) type OnBytes<'a> = &'a (dyn Fn(u64) + Send + Sync);

/// What reading the source found.
#[derive(Debug, Default)]
pub(crate) struct SourceView {
    /// Every file the source has, hashed.
    pub files: BTreeMap<String, FileEntry>,
    /// The stat each local file was hashed under.
    pub stats: HashMap<String, FileStat>,
    /// The base for the remote (`None`: a first sync).
    pub base: Option<BTreeMap<String, FileEntry>>,
    /// The base is the remote manifest itself (its stamp says so), so it
    /// was not read.
    pub base_is_remote: bool,
    /// Uploads an interrupted run completed, not yet committed.
    pub journal: Vec<JournalEntry>,
    /// The journal is a merge's shard records: an entry made against the
    /// remote manifest still in place (or against none, while there is
    /// none) is trusted without checking the object.
    pub journal_trusted: bool,
    /// The source's own manifest, its header only (the file list is left
    /// empty): the local `_meta/manifest.json` (see `manifest_digest`), or
    /// a mirror source's manifest, whose files are in `files`.
    pub manifest: Option<Manifest>,
    /// [`Manifest::entries_digest`] of the local manifest's file list.
    pub manifest_digest: Option<[u8; 32]>,
    /// Local files whose contents were read.
    pub files_hashed: usize,
    /// Things skipped, such as symlinks.
    pub warnings: Vec<String>,
    /// Paths that could not be read: neither sent nor taken for deleted.
    pub left_out: Vec<crate::tree::LeftOut>,
    /// Paths skipped as ParqueDB skips them (folders end in `/`).
    pub ignored: Vec<String>,
    /// A merge's files whose bytes wait in a shard's staging folder, with
    /// that folder (see [`super::shard`]).
    pub staged: Vec<(String, String)>,
    /// For a merge, how many shards the run was split into.
    pub shards: Option<u32>,
}

/// A status measured against the base ([`Source::status_from_base`]).
#[derive(Debug, Default)]
pub(crate) struct BaseStatus {
    /// Local files that differ from the base, or that it lacks.
    pub to_upload: Vec<FileEntry>,
    /// Paths the same on both sides, sorted.
    pub unchanged: Vec<String>,
    /// Paths of the base no longer in the directory.
    pub deleted_locally: Vec<String>,
    /// Local files whose contents were read.
    pub files_hashed: usize,
    /// Warnings, as a plan gives them.
    pub warnings: Vec<String>,
    /// Paths skipped as ParqueDB skips them.
    pub ignored: Vec<String>,
    /// The remote manifest's `lastSyncedAt`.
    pub remote_synced_at: Option<String>,
    /// The highest event-log segment the remote manifest lists.
    pub remote_last_segment: Option<u64>,
}

/// How to read the source.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadOptions {
    /// Hash with this algorithm.
    pub algorithm: HashAlgorithm,
    /// Skip reading the base when its stamp says it equals the remote
    /// manifest just read (a status needs nothing but the comparison).
    pub base_may_be_remote: bool,
    /// Read the local manifest (a run that writes local state needs it).
    pub need_manifest: bool,
    /// Hash every file again, trusting no recorded identity (`--checksum`).
    pub rehash: bool,
    /// Objects of an unmanaged source read at once.
    pub concurrency: usize,
    /// Read the destination's shard records instead of the source.
    pub merge_shards: bool,
    /// Only this shard's paths matter: an unmanaged source's other objects
    /// are not identified.
    pub shard: Option<super::Shard>,
}

/// What the run did, for the source to settle after the commit.
pub(crate) struct Settle<'a> {
    pub mode: Mode,
    pub view: &'a SourceView,
    /// The remote manifest the plan was made against.
    pub remote_before: Option<&'a RemoteManifest>,
    /// The latest remote manifest the run knows of (the one it committed,
    /// if it did).
    pub remote_latest: Option<&'a RemoteManifest>,
    /// The remote's files after the run, and the manifest's commit id.
    pub remote_after: &'a BTreeMap<String, FileEntry>,
    pub remote_commit: Option<&'a str>,
    pub downloaded: &'a [(FileEntry, FileStat)],
    /// Local deletions the plan makes (those not made early).
    pub delete_local: &'a [String],
    /// Local deletions made early, to clear the way for downloads.
    pub deleted_early: &'a [String],
    /// Nothing failed so far, so local deletions may go ahead.
    pub may_delete: bool,
    /// Every transfer succeeded and the commit, if one was needed, too.
    pub clean_run: bool,
    /// The run's trash folder, where deleted files go instead.
    pub keep: Option<&'a str>,
    /// Told of each local deletion.
    pub on_deleted: &'a (dyn Fn(&str) + Send + Sync),
    /// A push to a versioned copy (`--slug`): the directory's manifest and
    /// remembered remote stay as they are.
    pub versioned_copy: bool,
    /// For one shard of a split run whose record was written: the files it
    /// names (the shard's paths once the merge commits).
    pub shard_record: Option<&'a BTreeMap<String, FileEntry>>,
}

/// The source's side of the outcome.
#[derive(Default)]
pub(crate) struct Settled {
    pub deleted: Vec<String>,
    pub errors: Vec<FileError>,
}

/// One side of a run: what is sent to the remote, and (for a directory)
/// what receives from it.
#[async_trait]
pub(crate) trait Source: Send + Sync + std::fmt::Debug {
    /// The name a new database gets.
    fn database_name(&self) -> String;

    /// How a manifest's `syncedFrom` names this source in `mode`.
    fn synced_from(&self, mode: Mode) -> String;

    /// Requests made to the source so far.
    fn requests(&self) -> u64;

    /// The plan for `remote` sends `uploads` (a source shared by several
    /// mirrors counts its readers).
    fn planned(&self, _uploads: &[FileEntry], _remote: &StoreTree) {}

    /// The run is over, whatever it sent.
    fn finished(&self) {}

    /// The source's requests by billing class (none for a directory).
    fn usage(&self) -> crate::tree::Usage {
        crate::tree::Usage::default()
    }

    /// Takes the source's run lock for the length of one plan or execute,
    /// so two runs never read and write its state at once.
    fn lock(&self) -> Result<Option<crate::tree::RunLock>>;

    /// Whether the source keeps pqsync's state for the remote (base,
    /// journals, capability cache): a directory does, a mirror's source
    /// does not.
    fn keeps_state(&self) -> bool;

    /// Reads the source's files, and the base for `remote` (the manifest
    /// just read from the remote).
    async fn read(&self, remote: Option<&RemoteManifest>, opts: ReadOptions) -> Result<SourceView>;

    /// The ETag of the remote manifest the source's base was recorded
    /// equal to, and the algorithm its files are hashed with, when that
    /// base can stand in for it in a status (no run left uploads to commit,
    /// and the base is kept in a form that streams). `None` for a source
    /// without such a base.
    fn base_etag(&self) -> Option<(String, HashAlgorithm)> {
        None
    }

    /// The ETag of the remote manifest the base can be rebuilt into
    /// ([`Source::manifest_from_base`]), when it can.
    fn base_manifest_etag(&self) -> Option<String> {
        None
    }

    /// The remote manifest rebuilt from the base and the header recorded
    /// with it, for a remote whose manifest still has the ETag
    /// [`Source::base_manifest_etag`] names; `None` when the base turns out
    /// damaged or does not match the file list the commit id is sealed to.
    async fn manifest_from_base(&self) -> Result<Option<RemoteManifest>> {
        Ok(None)
    }

    /// A status measured against the base alone, for a remote whose
    /// manifest is still the one [`Source::base_etag`] names: the sorted
    /// walk and the base merged as they stream, with no map of either.
    /// `None` when the base is not usable after all (then the caller
    /// compares with the remote manifest).
    async fn status_from_base(&self, _remote: &StoreTree) -> Result<Option<BaseStatus>> {
        Ok(None)
    }

    /// The manifest whose identity (`databaseId`, `name`, ...) a new remote
    /// manifest takes: `current` is the remote's own.
    fn identity<'a>(
        &self,
        view: &'a SourceView,
        current: Option<&'a Manifest>,
    ) -> Option<&'a Manifest>;

    /// Requests sending `e` to `remote` takes, as `(reads of the source,
    /// all requests)`.
    fn upload_requests(&self, e: &FileEntry, remote: &StoreTree) -> (u64, u64);

    /// What the capability probe found for the remote, if cached here.
    fn cached_capabilities(&self) -> Option<Capabilities>;

    /// Caches what the probe found.
    fn save_capabilities(&self, caps: &Capabilities);

    /// Large uploads an earlier run left part way, among `uploads`.
    fn interrupted(&self, remote: &StoreTree, uploads: &[FileEntry]) -> Vec<String>;

    /// Aborts multipart uploads an earlier run started for content this run
    /// no longer sends.
    async fn abort_abandoned(&self, remote: &StoreTree, uploads: &[FileEntry]);

    /// Sends one file to the remote, verified against `e`. Returns the new
    /// object's ETag, where the store reports one.
    async fn upload(
        &self,
        e: &FileEntry,
        view: &SourceView,
        remote: &StoreTree,
        on_bytes: OnBytes<'_>,
    ) -> Result<Option<String>>;

    /// Fetches one file from the remote into the source, verified against
    /// `e`; with `keep`, a file it replaces goes to that run's trash folder.
    /// Called only in modes that fetch (never for a mirror).
    async fn download(
        &self,
        e: &FileEntry,
        view: &SourceView,
        remote: &StoreTree,
        keep: Option<&str>,
        on_bytes: OnBytes<'_>,
    ) -> Result<FileStat>;

    /// Deletes `paths` now, each only if it is still the version the scan
    /// saw (with `keep`, moving it to that run's trash folder); returns the
    /// paths deleted and the failures. Called only in modes that fetch.
    fn delete_now(
        &self,
        paths: &[String],
        view: &SourceView,
        keep: Option<&str>,
        on_deleted: &(dyn Fn(&str) + Send + Sync),
    ) -> (Vec<String>, Vec<FileError>);

    /// Where `run` keeps a replaced version of `path`, as the output names
    /// it.
    fn kept_location(&self, path: &str, run: &str) -> String;

    /// Removes the trash's runs older than `age`; returns the files removed.
    fn expire_trash(&self, age: std::time::Duration) -> Result<usize>;

    /// Records a completed upload, so a re-run does not send it again;
    /// `against` is the commit id of the remote manifest the run planned
    /// against.
    fn uploaded(&self, e: &FileEntry, against: Option<&str>);

    /// Takes back a recorded upload whose object was put back to its
    /// committed version, so a re-run sends it again.
    fn upload_undone(&self, path: &str);

    /// Everything after the commit: the stat cache learns the downloads,
    /// local deletions are carried out, and the local manifest, the base
    /// and the journal are brought up to date.
    async fn settle(&self, s: Settle<'_>) -> Result<Settled>;

    /// Warnings worth a status (gaps in a local event log).
    async fn status_warnings(&self) -> Vec<String>;
}

/// A manifest from a store may not name a path pqsync never syncs (`.git`,
/// `_meta/.pqsync`, the manifest itself, ...): writing those could plant
/// hooks or rewrite pqsync's own state.
pub(crate) fn refuse_reserved_paths(m: &Manifest, url: &str) -> Result<()> {
    match m.files.keys().find(|p| is_ignored(p)) {
        Some(p) => Err(Error::UnsafePath {
            path: p.clone(),
            origin: format!("{url}/{MANIFEST_PATH}"),
            reason: "a reserved or ignored path that pqsync never syncs".into(),
        }),
        None => Ok(()),
    }
}

/// A local directory as the source of push, pull and sync.
#[derive(Debug)]
pub(crate) struct LocalSource {
    tree: LocalTree,
    state: RemoteState,
    /// Whether large uploads to the remote can resume part by part.
    resumable: bool,
    /// The directory whose state holds the base: the tree itself, or for
    /// one shard of a split push, the whole directory (the shard reads the
    /// base a push would, and never writes it).
    based: LocalTree,
    /// The remote (where a merge of a split push finds the shard records).
    remote: StoreTree,
    /// The shard count of the records a merge read, to remove them once
    /// it has committed.
    merged: std::sync::Mutex<Option<u32>>,
}

impl LocalSource {
    pub fn new(tree: LocalTree, remote: &StoreTree) -> Self {
        LocalSource {
            state: RemoteState::new(&tree, remote.url()),
            based: tree.clone(),
            tree,
            resumable: remote.resumable(),
            remote: remote.clone(),
            merged: Default::default(),
        }
    }

    /// Shard `index` of `count` of a push of `tree`: it scans only its
    /// files and keeps its own stat cache and journal, and plans against
    /// the directory's base.
    pub fn shard(tree: LocalTree, index: u32, count: u32, remote: &StoreTree) -> Self {
        LocalSource {
            based: tree.clone(),
            ..LocalSource::new(tree.shard(index, count), remote)
        }
    }

    /// The log of large uploads in progress, where uploads can resume.
    fn part_log(&self) -> Option<impl PartLog + '_> {
        self.resumable.then(|| self.state.parts())
    }

    /// For one shard of a split push, the shard's own base, where it has
    /// one. The base its last run left pending holds for each path where
    /// the remote now has what that run's record named (its merge
    /// committed it, or the remote had it anyway); elsewhere the base
    /// before it stands. `None` (the directory's base stands) for a whole
    /// directory, or a shard that has no base yet.
    fn shard_base(&self, remote: Option<&RemoteManifest>) -> Result<Option<RemoteState>> {
        if !self.tree.is_shard() {
            return Ok(None);
        }
        let own = RemoteState::new(&self.tree, self.state.url());
        if let Some((pending, expected)) = own.pending_base() {
            let old = match own.base()? {
                Some(b) => b,
                None => RemoteState::new(&self.based, self.state.url())
                    .base()?
                    .unwrap_or_default(),
            };
            let empty = BTreeMap::new();
            let now = remote.map_or(&empty, |r| &r.manifest.files);
            let paths: std::collections::BTreeSet<&String> = old
                .keys()
                .chain(pending.keys())
                .chain(expected.keys())
                .filter(|p| self.tree.keeps(p))
                .collect();
            let landed = |p: &str| match (now.get(p), expected.get(p)) {
                (Some(a), Some(b)) => a.same_content(b),
                (None, None) => true,
                _ => false,
            };
            let (mut base, mut waiting) = (Vec::new(), Vec::new());
            for p in paths {
                if landed(p) {
                    base.extend(pending.get(p));
                } else {
                    base.extend(old.get(p));
                    if pending.contains_key(p) || expected.contains_key(p) {
                        waiting.push(p);
                    }
                }
            }
            own.write_base(base.into_iter())?;
            // What has not landed yet stays pending: its record may still
            // be merged (a dry run or a failed run in between does not
            // drop it). The shard's next record replaces it.
            if waiting.is_empty() {
                own.clear_pending_base();
            } else {
                own.write_pending_base(
                    waiting.iter().filter_map(|p| pending.get(*p)),
                    waiting.iter().filter_map(|p| expected.get(*p)),
                )?;
            }
        }
        Ok(own.has_binary_base().then_some(own))
    }

    /// Deletes what the plan deletes locally, each only if it is still the
    /// version the scan saw.
    fn delete_local(
        &self,
        s: &Settle<'_>,
        out: &mut Settled,
        after: &mut BTreeMap<String, FileEntry>,
    ) {
        for p in s.delete_local {
            let prior = s.view.stats.get(p).copied();
            match self.tree.delete(p, prior, s.keep) {
                Ok(()) => {
                    after.remove(p);
                    out.deleted.push(p.clone());
                    (s.on_deleted)(p);
                }
                Err(e) => out.errors.push(FileError::new(p, "delete", e)),
            }
        }
    }

    /// Rewrites the local manifest when the tree's files changed.
    fn write_local_manifest(
        &self,
        s: &Settle<'_>,
        after: &BTreeMap<String, FileEntry>,
        commit: Option<&str>,
    ) -> Result<()> {
        if s.view.manifest.as_ref().is_some_and(|m| {
            s.view.manifest_digest == Some(Manifest::entries_digest(after))
                && m.commit_id.as_deref() == commit
        }) {
            return Ok(());
        }
        // One identity on both sides: the local manifest's where there is
        // one, else the remote's (a first push that made a new one, or a
        // pull into a fresh directory).
        let snapshot = s.remote_before.filter(|_| s.mode == Mode::Restore);
        let template = snapshot
            .map(|r| &r.manifest)
            .or(s.view.manifest.as_ref())
            .or(s.remote_latest.map(|r| &r.manifest))
            .or(s.remote_before.map(|r| &r.manifest));
        let mut m = template
            .map(Manifest::header)
            .unwrap_or_else(|| fresh_manifest(&self.database_name()));
        m.commit_id = commit
            .filter(|_| s.mode != Mode::Restore)
            .map(str::to_string);
        m.last_synced_at = now_iso();
        m.synced_from = Some(match s.mode {
            Mode::Pull | Mode::Restore => format!("remote:{}", self.state_url()),
            Mode::Sync => "bidirectional".into(),
            _ => "local".into(),
        });
        self.tree.write_manifest_with(&m, after)
    }

    fn state_url(&self) -> &str {
        self.state.url()
    }
}

/// An empty manifest with a new random `databaseId`.
pub(crate) fn fresh_manifest(name: &str) -> Manifest {
    let id: u128 = rand::random();
    Manifest::new(format!("{id:032x}"), name)
}

#[async_trait]
impl Source for LocalSource {
    fn database_name(&self) -> String {
        std::fs::canonicalize(self.tree.root())
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
            .unwrap_or_else(|| "database".into())
    }

    fn synced_from(&self, mode: Mode) -> String {
        match mode {
            Mode::Sync => "bidirectional".into(),
            _ => "local".into(),
        }
    }

    fn requests(&self) -> u64 {
        0
    }

    fn keeps_state(&self) -> bool {
        true
    }

    fn lock(&self) -> Result<Option<crate::tree::RunLock>> {
        self.tree.lock()
    }

    async fn read(&self, remote: Option<&RemoteManifest>, opts: ReadOptions) -> Result<SourceView> {
        // The merge of a split push reads the shards' records, not the
        // directory.
        if opts.merge_shards {
            let (view, count) = merged_view(&self.remote, remote).await?;
            *self.merged.lock().expect("merged") = Some(count);
            return Ok(view);
        }
        // A status against the very manifest the base was recorded with,
        // when the base holds the same content, compares with that manifest
        // instead of reading the base.
        let based = RemoteState::new(&self.based, self.state.url());
        let base_is_remote = opts.base_may_be_remote
            && remote
                .and_then(|r| r.manifest.commit_id.as_deref())
                .is_some_and(|id| based.stamp().is_some_and(|s| s.matches(id)));
        // The walk and the base (a manifest-sized JSON file) are
        // independent: read them on two threads.
        let tree = self.tree.clone();
        let alg = opts.algorithm;
        let scan = crate::tree::blocking("scanning the directory", move || tree.scan(alg));
        let base = async {
            if base_is_remote {
                return Ok(None);
            }
            let state = match self.shard_base(remote)? {
                Some(own) => own,
                None => RemoteState::new(&self.based, self.state.url()),
            };
            crate::tree::blocking("reading the base", move || state.base()).await
        };
        let (scan, base) = tokio::join!(scan, base);
        let (scan, mut base) = (scan?, base?);
        // The local manifest's header and the digest of its files, read as
        // it streams (at a million files it is hundreds of MB as a map).
        let no_base = base.is_none() && !base_is_remote;
        let (manifest, manifest_digest) = if opts.need_manifest || no_base {
            match self.tree.read_manifest_digested()? {
                Some((m, d)) => (Some(m), Some(d)),
                None => (None, None),
            }
        } else {
            (None, None)
        };
        // A directory with no base for this remote (moved, copied, or its
        // state lost) recovers it from its manifest when that manifest
        // records the commit the remote is still at: both sides held exactly
        // those files then. Only then is the manifest read whole.
        if no_base {
            let now = remote.and_then(|r| r.manifest.commit_id.as_deref());
            let recorded = manifest.as_ref().and_then(|m| m.commit_id.as_deref());
            if recorded.is_some() && recorded == now && based.stamp().is_none() {
                if let Some(m) = self
                    .tree
                    .read_manifest()?
                    .filter(|m| m.commit_id.as_deref() == now)
                {
                    tracing::info!("no base for this remote; the local manifest records its commit, so it serves as the base");
                    base = Some(m.files);
                }
            }
        }
        Ok(SourceView {
            files: scan.files,
            stats: scan.stats,
            base,
            base_is_remote,
            journal: self.state.journal()?,
            journal_trusted: false,
            manifest_digest: manifest_digest.filter(|_| opts.need_manifest),
            // A run needs only the manifest's header and the digest of its
            // files.
            manifest: manifest.filter(|_| opts.need_manifest).map(|m| m.header()),
            files_hashed: scan.hashed,
            warnings: scan.warnings,
            left_out: scan.left_out,
            ignored: scan.ignored,
            staged: Vec::new(),
            shards: None,
        })
    }

    fn base_etag(&self) -> Option<(String, HashAlgorithm)> {
        let stamp = self.state.stamp()?;
        if !stamp.equals_remote || !self.state.has_binary_base() {
            return None;
        }
        if !self.state.journal().ok()?.is_empty() {
            return None;
        }
        Some((stamp.remote_etag?, stamp.hash_algorithm?))
    }

    fn base_manifest_etag(&self) -> Option<String> {
        let stamp = self.state.stamp()?;
        stamp.remote_header.as_ref()?;
        self.base_etag().map(|(etag, _)| etag)
    }

    async fn manifest_from_base(&self) -> Result<Option<RemoteManifest>> {
        let Some(stamp) = self.state.stamp() else {
            return Ok(None);
        };
        let (Some(header), Some(etag)) = (stamp.remote_header, stamp.remote_etag) else {
            return Ok(None);
        };
        let state = RemoteState::new(&self.tree, self.state.url());
        let Some(files) = crate::tree::blocking("reading the base", move || state.base()).await?
        else {
            return Ok(None);
        };
        let manifest = Manifest { files, ..header };
        let sealed = manifest
            .commit_id
            .as_deref()
            .is_some_and(|c| c.contains('.'))
            && manifest.commit_id == stamp.remote_commit_id
            && manifest.commit_is_sealed();
        Ok(sealed.then_some(RemoteManifest {
            manifest,
            etag: Some(etag),
        }))
    }

    async fn status_from_base(&self, remote: &StoreTree) -> Result<Option<BaseStatus>> {
        let Some(stamp) = self.state.stamp() else {
            return Ok(None);
        };
        let Some(alg) = stamp.hash_algorithm else {
            return Ok(None);
        };
        let tree = self.tree.clone();
        let state = RemoteState::new(&self.tree, self.state.url());
        let refuses = {
            let remote = remote.clone();
            move |p: &str| remote.refuses_name(p)
        };
        let got = crate::tree::blocking("comparing with the base", move || {
            Ok(compare_with_base(&tree, &state, alg, refuses))
        })
        .await?;
        let Some(mut status) = got? else {
            return Ok(None);
        };
        status.remote_synced_at = stamp.remote_synced_at;
        status.remote_last_segment = stamp.remote_last_segment;
        Ok(Some(status))
    }

    fn identity<'a>(
        &self,
        view: &'a SourceView,
        current: Option<&'a Manifest>,
    ) -> Option<&'a Manifest> {
        current.or(view.manifest.as_ref())
    }

    fn upload_requests(&self, e: &FileEntry, remote: &StoreTree) -> (u64, u64) {
        (0, remote.upload_requests(e.size))
    }

    fn cached_capabilities(&self) -> Option<Capabilities> {
        self.state.capabilities()
    }

    fn save_capabilities(&self, caps: &Capabilities) {
        self.state.save_capabilities(caps);
    }

    fn interrupted(&self, _remote: &StoreTree, uploads: &[FileEntry]) -> Vec<String> {
        interrupted_uploads(self.part_log().as_ref(), uploads)
    }

    async fn abort_abandoned(&self, remote: &StoreTree, uploads: &[FileEntry]) {
        if self.resumable {
            abort_abandoned_uploads(&self.state, remote, uploads).await;
        }
    }

    async fn upload(
        &self,
        e: &FileEntry,
        view: &SourceView,
        remote: &StoreTree,
        on_bytes: OnBytes<'_>,
    ) -> Result<Option<String>> {
        let stat = view
            .stats
            .get(&e.path)
            .copied()
            .ok_or_else(|| Error::ChangedDuringRun {
                path: e.path.clone(),
                detail: "not seen by the scan".into(),
            })?;
        let stream = self.tree.open(&e.path, stat).await?;
        let log = self.part_log();
        let log = log.as_ref().map(|l| l as &dyn PartLog);
        match remote.write(e, stream, on_bytes, log).await {
            // Bytes that differ from the scan's hash mean the file was
            // edited while it was being read; the upload is abandoned.
            Err(Error::Mismatch { .. }) => Err(Error::ChangedDuringRun {
                path: e.path.clone(),
                detail: "modified while it was being sent".into(),
            }),
            other => other,
        }
    }

    async fn download(
        &self,
        e: &FileEntry,
        view: &SourceView,
        remote: &StoreTree,
        keep: Option<&str>,
        on_bytes: OnBytes<'_>,
    ) -> Result<FileStat> {
        let stream = remote.open_entry(e).await?;
        let prior = view.stats.get(&e.path).copied();
        self.tree.write(e, stream, prior, keep, on_bytes).await
    }

    fn uploaded(&self, e: &FileEntry, against: Option<&str>) {
        self.state.journal_append(e, against);
    }

    fn upload_undone(&self, path: &str) {
        self.state.journal_revoke(path);
    }

    fn delete_now(
        &self,
        paths: &[String],
        view: &SourceView,
        keep: Option<&str>,
        on_deleted: &(dyn Fn(&str) + Send + Sync),
    ) -> (Vec<String>, Vec<FileError>) {
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for p in paths {
            match self.tree.delete(p, view.stats.get(p).copied(), keep) {
                Ok(()) => {
                    on_deleted(p);
                    deleted.push(p.clone());
                }
                Err(e) => errors.push(FileError::new(p, "delete", e)),
            }
        }
        (deleted, errors)
    }

    fn kept_location(&self, path: &str, run: &str) -> String {
        self.tree
            .trash_dir()
            .join(run)
            .join(path)
            .display()
            .to_string()
    }

    fn expire_trash(&self, age: std::time::Duration) -> Result<usize> {
        self.tree.trash_empty(Some(age))
    }

    async fn settle(&self, s: Settle<'_>) -> Result<Settled> {
        self.state.journal_close();
        let merged = self.merged.lock().expect("merged").take();
        let pending = self.tree.is_shard() && s.mode != Mode::Backup;
        if let (true, Some(after)) = (pending, s.shard_record) {
            // What both sides hold once the merge commits the record is
            // this shard's base from then on; until then the base stays.
            let old = s.view.base.as_ref().cloned().unwrap_or_default();
            let base =
                merged_base_iter(&s.view.files, after, &old).filter(|e| self.tree.keeps(&e.path));
            self.state.write_pending_base(base, after.values())?;
        }
        if s.mode == Mode::Backup || self.tree.is_shard() || merged.is_some() {
            // A backup leaves the database as it found it: no manifest
            // rewrite, and no base (a snapshot is never synced with). So
            // do the runs of a split push: a shard saw only its files, and
            // the merge none, so neither knows what the directory holds.
            if s.clean_run {
                self.state.clear_journal();
                if let Some(count) = merged {
                    remove_records(&self.remote, count).await;
                }
            }
            return Ok(Settled::default());
        }
        let tree = self.tree.clone();
        crate::tree::blocking("syncing downloaded files", move || tree.sync_writes()).await?;
        let remembered = s.downloaded.to_vec();
        let tree = self.tree.clone();
        let _ = crate::tree::blocking("updating the stat cache", move || {
            tree.remember(&remembered);
            Ok(())
        })
        .await;
        let mut out = Settled::default();
        // The directory's files after the run: the scan's, unless this run
        // changed the directory (a push leaves it as it was, and copies
        // nothing).
        let mut after = std::borrow::Cow::Borrowed(&s.view.files);
        if !s.deleted_early.is_empty() || !s.downloaded.is_empty() {
            let after = after.to_mut();
            for p in s.deleted_early {
                after.remove(p);
            }
            for (e, stat) in s.downloaded {
                // The local manifest names the file as ParqueDB's FsBackend
                // would: by its own mtime and size.
                let mut e = e.clone();
                e.etag = Some(crate::manifest::fs_etag(stat.mtime_ns, stat.size));
                after.insert(e.path.clone(), e);
            }
        }
        if s.may_delete && !s.delete_local.is_empty() {
            self.delete_local(&s, &mut out, after.to_mut());
        }
        let after = after.as_ref();
        // The local manifest records the remote's commit when both sides
        // now hold the same files, so a copy of this directory without
        // pqsync's state can recover its base from it.
        let agrees = after.len() == s.remote_after.len()
            && after
                .iter()
                .zip(s.remote_after)
                .all(|((p, a), (q, r))| p == q && a.same_content(r));
        let commit = s.remote_commit.filter(|_| agrees);
        if !s.versioned_copy {
            self.write_local_manifest(&s, after, commit)?;
        }
        if s.mode == Mode::Restore {
            // The restored database's manifest is written; it keeps no base
            // for the repository.
            return Ok(out);
        }
        // The new base: every path on which both sides now agree; elsewhere
        // the old base stands, so unresolved differences keep their history.
        // It is merged as it streams to disk, never built.
        let empty = BTreeMap::new();
        // A base that was the remote manifest itself was not read again.
        let old = match (&s.view.base, s.remote_before) {
            (Some(b), _) => b,
            (None, Some(r)) if s.view.base_is_remote => &r.manifest.files,
            (None, _) => &empty,
        };
        let had_base = s.view.base.is_some() || s.view.base_is_remote;
        let base = || merged_base_iter(after, s.remote_after, old);
        // One pass finds whether the base equals the remote manifest now
        // there (then a status that finds that manifest need not read the
        // base at all) and whether it differs from the old base (else it is
        // not rewritten).
        let (mut equals_remote, mut unchanged) = (true, had_base);
        // (And whether it holds the remote's entries field for field.)
        let mut exact = true;
        let mut remote_files = s.remote_after.values();
        let mut old_files = old.values();
        for b in base() {
            let r = remote_files.next();
            equals_remote &= r.is_some_and(|r| b.path == r.path && b.same_content(r));
            exact &= r == Some(b);
            unchanged &= old_files.next() == Some(b);
        }
        equals_remote &= remote_files.next().is_none();
        unchanged &= old_files.next().is_none();
        if !unchanged || !self.state.has_binary_base() {
            self.state.write_base(base())?;
        }
        self.state.write_stamp(&stamp(
            s.remote_latest,
            s.remote_after,
            s.remote_commit,
            equals_remote,
            exact && equals_remote,
        ))?;
        if s.clean_run {
            self.state.clear_journal();
        }
        // The bases the shards of an earlier split push keep for this
        // remote are older than this one: the next split starts from it.
        self.state.drop_shard_bases();
        if !s.versioned_copy {
            self.state.record_remote()?;
        }
        Ok(out)
    }

    async fn status_warnings(&self) -> Vec<String> {
        let root = self.tree.root().to_path_buf();
        crate::tree::blocking("reading the event log", move || {
            Ok(crate::parquedb::local_event_problems(&root))
        })
        .await
        .unwrap_or_default()
    }
}

/// [`Source::status_from_base`] for a directory: its walk, sorted and
/// hashed through the stat cache, merged with the base as the base streams.
/// `None` when the base turns out damaged or hashed otherwise.
fn compare_with_base(
    tree: &LocalTree,
    state: &RemoteState,
    alg: HashAlgorithm,
    refuses: impl Fn(&str) -> Option<String>,
) -> Result<Option<BaseStatus>> {
    let Some(mut base) = state.base_reader() else {
        return Ok(None);
    };
    let (found, info) = tree.scan_sorted(alg)?;
    let left_out = info.left_out;
    let mut refused = Vec::new();
    let mut out = BaseStatus {
        files_hashed: info.hashed,
        ignored: info.ignored,
        ..BaseStatus::default()
    };
    let mut next = base.next_entry();
    let gone = |b: FileEntry, left_out: &[LeftOut], out: &mut BaseStatus| {
        // A path that could not be read is not taken for deleted.
        if !left_out.iter().any(|l| l.covers(&b.path)) {
            out.deleted_locally.push(b.path);
        }
    };
    for f in found {
        while let Some(b) = next.take() {
            if b.path < f.rel {
                gone(b, &left_out, &mut out);
                next = base.next_entry();
            } else {
                next = Some(b);
                break;
            }
        }
        let same = next.as_ref().filter(|b| b.path == f.rel);
        if same.is_some_and(|b| b.hash_algorithm != alg) {
            return Ok(None);
        }
        // A name the remote cannot hold stays out of the run.
        if let Some(reason) = refuses(&f.rel) {
            refused.push(LeftOut::new(&f.rel, reason, "upload"));
            if same.is_some() {
                next = base.next_entry();
            }
            continue;
        }
        let unchanged = same.is_some_and(|b| b.size == f.stat.size && Some(b.hash) == f.hash);
        if same.is_some() {
            next = base.next_entry();
        }
        if unchanged {
            out.unchanged.push(f.rel);
        } else {
            out.to_upload.push(f.entry(alg));
        }
    }
    while let Some(b) = next {
        gone(b, &left_out, &mut out);
        next = base.next_entry();
    }
    if base.damaged() {
        return Ok(None);
    }
    out.warnings = info.warnings;
    out.warnings
        .extend(left_out.iter().chain(&refused).map(|l| {
            format!(
                "{}: left out ({}); it is neither sent nor deleted",
                l.path, l.reason
            )
        }));
    Ok(Some(out))
}

/// The stamp recorded with a base: the remote manifest's commit id, and,
/// when the base equals the remote's files (and `latest` is the manifest
/// that lists them), what a status needs to stand the base in for that
/// manifest while its ETag is unchanged.
fn stamp(
    latest: Option<&RemoteManifest>,
    files: &BTreeMap<String, FileEntry>,
    commit: Option<&str>,
    equals_remote: bool,
    exact: bool,
) -> BaseStamp {
    let mut stamp = BaseStamp {
        remote_commit_id: commit.map(str::to_string),
        equals_remote,
        remote_etag: None,
        remote_synced_at: None,
        remote_last_segment: None,
        hash_algorithm: None,
        remote_header: None,
    };
    let Some(latest) =
        latest.filter(|l| equals_remote && l.manifest.commit_id.as_deref() == commit)
    else {
        return stamp;
    };
    let mut algorithms = files.values().map(|e| e.hash_algorithm);
    let first = algorithms.next();
    if first.is_none() || algorithms.any(|a| Some(a) != first) {
        return stamp;
    }
    stamp.remote_etag.clone_from(&latest.etag);
    stamp.remote_synced_at = Some(latest.manifest.last_synced_at.clone());
    stamp.remote_last_segment = files
        .keys()
        .filter_map(|p| crate::layout::segment_seq(p))
        .max();
    stamp.hash_algorithm = first;
    // Only a commit id sealed to its file list, so that a base rebuilt
    // into this manifest can be checked against it.
    if exact && commit.is_some_and(|c| c.contains('.')) {
        stamp.remote_header = Some(latest.manifest.header());
    }
    stamp
}

/// The uploads of `uploads` that an interrupted run began, with the parts
/// it sent.
fn interrupted_uploads(log: Option<&impl PartLog>, uploads: &[FileEntry]) -> Vec<String> {
    let Some(log) = log else {
        return Vec::new();
    };
    uploads
        .iter()
        .filter_map(|e| {
            let r = log.load(&e.path).filter(|r| r.hash == e.tagged_hash())?;
            Some(format!(
                "{}: {} of {} parts already sent",
                e.path,
                r.parts.len(),
                e.size.div_ceil(r.part_size)
            ))
        })
        .collect()
}

/// Aborts the multipart uploads an interrupted run left that this run
/// does not continue.
async fn abort_abandoned_uploads(state: &RemoteState, remote: &StoreTree, uploads: &[FileEntry]) {
    let log = state.parts();
    let wanted: HashSet<(&str, String)> = uploads
        .iter()
        .map(|e| (e.path.as_str(), e.tagged_hash()))
        .collect();
    for record in log.all() {
        if wanted.contains(&(record.path.as_str(), record.hash.clone())) {
            continue;
        }
        match remote.abort_upload(&record.path, &record.upload_id).await {
            Ok(()) => log.remove(&record.path),
            Err(e) => tracing::warn!(
                "could not abort an abandoned upload of {}: {e}",
                record.path
            ),
        }
    }
}

/// A store prefix as the source of a mirror: read-only, no local state.
#[derive(Debug)]
pub(crate) struct StoreSource {
    tree: StoreTree,
    /// The mirror's destination (where a merge finds the shard records).
    destination: StoreTree,
    /// The shard count of the records a merge read, to remove them once
    /// it has committed.
    merged: std::sync::Mutex<Option<u32>>,
    /// This destination's share of a source read for several.
    share: Option<Share>,
    /// The journal of uploads to the destination (and their parts), in
    /// the state home, so a killed mirror resumes where it stopped.
    state: RemoteState,
    /// Whether large uploads to the destination can resume part by part.
    resumable: bool,
}

impl StoreSource {
    /// The source `tree` of a mirror to `destination`.
    pub fn new(tree: StoreTree, destination: &StoreTree) -> Self {
        let state = mirror_state(&tree, destination);
        StoreSource {
            tree,
            destination: destination.clone(),
            merged: Default::default(),
            share: None,
            state,
            resumable: destination.resumable(),
        }
    }

    /// The source of one of several mirrors of `fan`'s source.
    pub fn shared(fan: &FanOut, destination: &StoreTree) -> Self {
        StoreSource {
            share: Some(Share::new(fan.spool.clone())),
            // Its own request count: each destination reports its own.
            ..StoreSource::new(fan.tree.recounted(), destination)
        }
    }

    /// The log of large uploads in progress, where uploads can resume.
    fn part_log(&self) -> Option<impl PartLog + '_> {
        self.resumable.then(|| self.state.parts())
    }
}

impl StoreSource {
    /// Whether the store copies `e` to `remote` itself (in one store; in
    /// parts above the 5 GiB of one copy where the store can), so no byte
    /// passes through this machine.
    fn copies(&self, e: &FileEntry, remote: &StoreTree) -> bool {
        (self.tree.shares_store(remote) || remote.copies_across(&self.tree))
            && !remote.keeps_versions()
            && (e.size <= COPY_MAX || remote.copies_any_size())
    }

    /// Reads a source with no pqsync manifest (a bucket another tool
    /// wrote) by listing it. An object keeps the entry the destination
    /// recorded for it while its size and ETag (its `sourceEtag`) are
    /// unchanged, so a second mirror reads nothing but the listing; any
    /// other object is identified by its `pqsync-hash` metadata (one HEAD)
    /// or, failing that, read and hashed.
    async fn read_listing(
        &self,
        remote: Option<&RemoteManifest>,
        opts: ReadOptions,
    ) -> Result<SourceView> {
        let objects = self.tree.list_objects().await?;
        if objects.is_empty() {
            self.tree.check_bucket().await?;
            return Err(Error::EmptySource {
                url: self.tree.url().to_string(),
            });
        }
        let recorded = remote.map(|r| &r.manifest.files);
        let mut view = SourceView {
            journal: self.state.journal()?,
            // As for a managed source: the destination's state is the base.
            base_is_remote: true,
            ..SourceView::default()
        };
        let mut unknown = Vec::new();
        for (rel, meta) in objects {
            if opts.shard.is_some_and(|s| !s.contains(&rel)) {
                continue;
            }
            if let Err(e) = validate_path(&rel, self.tree.url()) {
                view.left_out
                    .push(LeftOut::new(&rel, e.to_string(), "read"));
                continue;
            }
            let id = source_identity(&meta);
            let known = recorded.and_then(|f| f.get(&rel)).filter(|e| {
                !opts.rehash
                    && e.size == meta.size
                    && e.hash_algorithm == opts.algorithm
                    && e.source_etag() == Some(id.as_str())
            });
            let found = self
                .share
                .as_ref()
                .and_then(|s| s.spool.identity(&rel, &id));
            match (known, found) {
                (Some(e), _) => {
                    view.files.insert(rel, e.clone());
                }
                (None, Some(e)) if !opts.rehash && e.hash_algorithm == opts.algorithm => {
                    view.files.insert(rel, e);
                }
                _ => unknown.push((rel, meta, id)),
            }
        }
        let tree = &self.tree;
        let mut read = futures::stream::iter(unknown)
            .map(|(rel, meta, id)| async move {
                let r = object_entry(tree, rel.clone(), meta, opts.algorithm).await;
                (rel, id, r)
            })
            .buffer_unordered(opts.concurrency.max(1));
        while let Some((rel, id, r)) = read.next().await {
            match r {
                Ok((mut e, hashed)) => {
                    e.etag = None;
                    e.set_source_etag(id.clone());
                    if hashed {
                        view.files_hashed += 1;
                    }
                    if let Some(share) = &self.share {
                        if hashed {
                            share.spool.read_one();
                        }
                        share.spool.remember(&rel, &id, &e);
                    }
                    view.files.insert(rel, e);
                }
                // Deleted since the listing: the source no longer has it.
                Err(Error::Store {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => {}
                Err(e) => view
                    .left_out
                    .push(LeftOut::new(&rel, e.to_string(), "read")),
            }
        }
        Ok(view)
    }
}

/// A mirror's state for one destination: under the state home's
/// `mirrors/<source name>-<key of the source URL>`, keyed there by the
/// destination's URL like a directory's state for a remote.
fn mirror_state(source: &StoreTree, destination: &StoreTree) -> RemoteState {
    let url = source.url();
    let name = folder_name(
        url.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default(),
    );
    let dir = crate::tree::default_state_home()
        .join("mirrors")
        .join(format!("{name}-{}", remote_key(url)));
    RemoteState::new(&LocalTree::state_only(dir), destination.url())
}

/// What identifies a listed object's version: its ETag, or its size and
/// modification time on a store that gives none.
fn source_identity(meta: &object_store::ObjectMeta) -> String {
    match &meta.e_tag {
        Some(tag) => tag.clone(),
        None => format!("{}-{}", meta.last_modified.timestamp_millis(), meta.size),
    }
}

#[async_trait]
impl Source for StoreSource {
    fn database_name(&self) -> String {
        self.tree
            .url()
            .rsplit('/')
            .next()
            .unwrap_or("database")
            .to_string()
    }

    fn synced_from(&self, _mode: Mode) -> String {
        format!("remote:{}", self.tree.url())
    }

    fn requests(&self) -> u64 {
        self.tree.requests()
    }

    fn usage(&self) -> crate::tree::Usage {
        self.tree.usage()
    }

    fn keeps_state(&self) -> bool {
        false
    }

    fn lock(&self) -> Result<Option<crate::tree::RunLock>> {
        Ok(None)
    }

    async fn read(&self, remote: Option<&RemoteManifest>, opts: ReadOptions) -> Result<SourceView> {
        if opts.merge_shards {
            let (view, count) = merged_view(&self.destination, remote).await?;
            *self.merged.lock().expect("merged") = Some(count);
            return Ok(view);
        }
        let Some(src) = self.tree.read_manifest().await? else {
            return self.read_listing(remote, opts).await;
        };
        refuse_reserved_paths(&src.manifest, self.tree.url())?;
        let mut manifest = src.manifest;
        Ok(SourceView {
            journal: self.state.journal()?,
            // Moved, not copied: the source manifest stands for its
            // identity (the commit writes it with the source's files).
            files: std::mem::take(&mut manifest.files),
            // The destination is made equal to the source: its current
            // state is the base, so every difference reads as a change at
            // the source.
            base_is_remote: true,
            manifest: Some(manifest),
            ..SourceView::default()
        })
    }

    fn identity<'a>(
        &self,
        view: &'a SourceView,
        _current: Option<&'a Manifest>,
    ) -> Option<&'a Manifest> {
        view.manifest.as_ref()
    }

    fn upload_requests(&self, e: &FileEntry, remote: &StoreTree) -> (u64, u64) {
        if self.copies(e, remote) {
            (0, 1)
        } else {
            (1, 1 + remote.upload_requests(e.size))
        }
    }

    fn cached_capabilities(&self) -> Option<Capabilities> {
        None
    }

    fn save_capabilities(&self, _caps: &Capabilities) {}

    fn interrupted(&self, _remote: &StoreTree, uploads: &[FileEntry]) -> Vec<String> {
        interrupted_uploads(self.part_log().as_ref(), uploads)
    }

    async fn abort_abandoned(&self, remote: &StoreTree, uploads: &[FileEntry]) {
        if self.resumable {
            abort_abandoned_uploads(&self.state, remote, uploads).await;
        }
    }

    async fn upload(
        &self,
        e: &FileEntry,
        _view: &SourceView,
        remote: &StoreTree,
        on_bytes: OnBytes<'_>,
    ) -> Result<Option<String>> {
        // Within one store, the store copies the object itself.
        if self.copies(e, remote) {
            if self.tree.shares_store(remote) {
                remote.copy_from(&self.tree, e).await?;
            } else {
                remote.copy_across(&self.tree, e).await?;
            }
            return Ok(None);
        }
        let log = self.part_log();
        let log = log.as_ref().map(|l| l as &dyn PartLog);
        let Some(share) = &self.share else {
            let stream = self.tree.open(&e.path).await?;
            return remote.write(e, stream, on_bytes, log).await;
        };
        let stream = match share.spooled(&self.tree, e).await? {
            Some((file, stat)) => open_at(file, &e.path, stat).await?,
            None => {
                share.spool.read_one();
                self.tree.open(&e.path).await?
            }
        };
        let etag = remote.write(e, stream, on_bytes, log).await?;
        share.done(e);
        Ok(etag)
    }

    fn planned(&self, uploads: &[FileEntry], remote: &StoreTree) {
        if let Some(share) = &self.share {
            for e in uploads.iter().filter(|e| !self.copies(e, remote)) {
                share.expect(e);
            }
        }
    }

    fn finished(&self) {
        if let Some(share) = &self.share {
            share.finish();
        }
    }

    async fn download(
        &self,
        e: &FileEntry,
        _view: &SourceView,
        _remote: &StoreTree,
        _keep: Option<&str>,
        _on_bytes: OnBytes<'_>,
    ) -> Result<FileStat> {
        Err(Error::InvalidArgument {
            argument: "mode",
            reason: format!(
                "{}: a mirror never writes to its source {}",
                e.path,
                self.tree.url()
            ),
        })
    }

    fn uploaded(&self, e: &FileEntry, against: Option<&str>) {
        self.state.journal_append(e, against);
    }

    fn upload_undone(&self, path: &str) {
        self.state.journal_revoke(path);
    }

    fn delete_now(
        &self,
        paths: &[String],
        _view: &SourceView,
        _keep: Option<&str>,
        _on_deleted: &(dyn Fn(&str) + Send + Sync),
    ) -> (Vec<String>, Vec<FileError>) {
        let why = "a mirror never deletes from its source";
        (
            Vec::new(),
            paths
                .iter()
                .map(|p| FileError::new(p, "delete", why))
                .collect(),
        )
    }

    fn kept_location(&self, path: &str, _run: &str) -> String {
        path.to_string()
    }

    fn expire_trash(&self, _age: std::time::Duration) -> Result<usize> {
        Ok(0)
    }

    async fn settle(&self, s: Settle<'_>) -> Result<Settled> {
        self.state.journal_close();
        if s.clean_run {
            self.state.clear_journal();
            let merged = self.merged.lock().expect("merged").take();
            if let Some(count) = merged {
                remove_records(&self.destination, count).await;
            }
        }
        Ok(Settled::default())
    }

    async fn status_warnings(&self) -> Vec<String> {
        Vec::new()
    }
}
