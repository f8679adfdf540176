//! The sync engine: one engine for push, pull, sync and mirror.
//!
//! ```text
//! manifests (local scan + one remote GET) → 3-way diff → Plan → execute
//! ```
//!
//! `execute` moves data first, writes nested manifests after the files of
//! their subtree, commits the remote manifest only when every transfer
//! succeeded, and deletes only after that commit. A run that fails part way
//! leaves the remote manifest as it was: new files stay invisible to readers,
//! replaced files are each swapped atomically (a reader that verifies hashes
//! notices the mix), and the next run moves only what is left.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures::StreamExt;
use serde::Serialize;

use crate::commit::{Changes, Lease};
use crate::diff::{diff3, Change, Resolution};
use crate::error::{Error, Result};
use crate::hash::hash_bytes;
use crate::local::{FileStat, LocalTree};
use crate::manifest::{now_iso, FileEntry, HashAlgorithm, Manifest, MANIFEST_PATH};
use crate::plan::{
    bucket, is_nested_manifest, Conflict, HeldBack, Mode, Plan, PlanState, Strategy,
};
use crate::progress::{Event, NoProgress, Operation, Progress, Reporter};
use crate::retry::RetryConfig;
use crate::store::{CommitMode, PartLog, PartRecord, RemoteManifest, StoreTree};

/// One side of a sync.
#[derive(Debug, Clone)]
pub enum Tree {
    /// A local directory.
    Local(LocalTree),
    /// An object-store prefix.
    Store(StoreTree),
}

impl From<LocalTree> for Tree {
    fn from(t: LocalTree) -> Self {
        Tree::Local(t)
    }
}

impl From<StoreTree> for Tree {
    fn from(t: StoreTree) -> Self {
        Tree::Store(t)
    }
}

/// Options for a run.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// Direction(s) data may move in.
    pub mode: Mode,
    /// Conflict strategy; `None` uses the mode's default.
    pub strategy: Option<Strategy>,
    /// Transfers in flight at once. Default 8.
    pub concurrency: usize,
    /// Whether deletions propagate. Default true.
    pub delete: bool,
    /// Hash algorithm; `None` follows the remote manifest (BLAKE3 for a new
    /// remote).
    pub hash: Option<HashAlgorithm>,
    /// Retry policy for transfers.
    pub retry: RetryConfig,
    /// The most files one run may delete on either side. Default 50%.
    pub max_delete: MaxDelete,
    /// Copy remote files that would be overwritten or deleted under this
    /// prefix (relative to the bucket) first.
    pub backup_dir: Option<String>,
    /// Skip the lease on stores without enforced conditional writes.
    pub force: bool,
    /// Shared with the stores' HTTP clients, which report every response
    /// status to it; 429 and 503 responses lower the transfers in flight.
    pub congestion: std::sync::Arc<crate::throttle::Congestion>,
    /// The paths this run may touch; others are neither sent, fetched nor
    /// deleted. Default: everything.
    pub selection: crate::select::Selection,
}

/// A limit on deletions per run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxDelete {
    /// At most this many files.
    Count(u64),
    /// At most this share of the files on the side losing them.
    Percent(f64),
}

impl MaxDelete {
    /// Whether deleting `n` of `total` files is within the limit.
    pub fn allows(self, n: usize, total: usize) -> bool {
        match self {
            MaxDelete::Count(max) => n as u64 <= max,
            MaxDelete::Percent(p) => (n as f64) <= total as f64 * p / 100.0,
        }
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for MaxDelete {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "--max-delete takes N or P% (e.g. 100 or 25%), not {s:?}"
            ))
        };
        match s.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(MaxDelete::Percent(p))
            }
            None => s.trim().parse().map(MaxDelete::Count).map_err(|_| bad()),
        }
    }
}

impl SyncOptions {
    /// Defaults for a mode.
    pub fn new(mode: Mode) -> Self {
        SyncOptions {
            mode,
            strategy: None,
            concurrency: 8,
            delete: true,
            hash: None,
            retry: RetryConfig::default(),
            max_delete: MaxDelete::Percent(50.0),
            backup_dir: None,
            force: false,
            congestion: Default::default(),
            selection: crate::select::Selection::all(),
        }
    }
}

/// A file that failed, with ParqueDB's field names.
#[derive(Clone, Debug, Serialize)]
pub struct FileError {
    /// The file.
    pub path: String,
    /// `upload`, `download`, `delete` or `commit`.
    pub operation: String,
    /// What went wrong.
    pub message: String,
}

/// The outcome of `execute`, with ParqueDB's field names plus
/// `bytesTransferred` and `requests`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncResult {
    /// True when every planned operation succeeded.
    pub success: bool,
    /// Files sent.
    pub uploaded: Vec<String>,
    /// Files fetched.
    pub downloaded: Vec<String>,
    /// Files deleted (on either side).
    pub deleted: Vec<String>,
    /// Conflicts this run resolved.
    pub conflicts_resolved: Vec<Conflict>,
    /// Conflicts left for a person.
    pub conflicts_pending: Vec<Conflict>,
    /// Failures.
    pub errors: Vec<FileError>,
    /// Changes this mode did not apply.
    pub held_back: Vec<HeldBack>,
    /// Whether the remote manifest was written.
    pub committed: bool,
    /// Bytes moved.
    pub bytes_transferred: u64,
    /// Requests made, planning included.
    pub requests: u64,
    /// Warnings.
    pub warnings: Vec<String>,
}

/// A status report, with ParqueDB's field names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// True when nothing differs.
    pub is_synced: bool,
    /// What differs.
    pub diff: StatusDiff,
    /// Uploads an interrupted run completed that are waiting to be committed.
    pub resumable: Vec<String>,
    /// Large uploads an interrupted run left part-way (the next push
    /// continues them).
    pub interrupted: Vec<String>,
    /// Requests made.
    pub requests: u64,
    /// Local files whose contents had to be read.
    pub files_hashed: usize,
    /// Warnings.
    pub warnings: Vec<String>,
}

/// The buckets of a status report.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDiff {
    /// Changed or added locally.
    pub to_upload: Vec<FileEntry>,
    /// Changed or added remotely.
    pub to_download: Vec<FileEntry>,
    /// Changed on both sides.
    pub conflicts: Vec<Conflict>,
    /// Identical on both sides.
    pub unchanged: Vec<String>,
    /// Deleted locally since the last sync (push deletes them remotely).
    pub deleted_locally: Vec<String>,
    /// Deleted remotely since the last sync (pull deletes them locally).
    pub deleted_remotely: Vec<String>,
}

/// The sync engine for one pair of trees.
///
/// ```no_run
/// # async fn demo() -> pqsync_core::Result<()> {
/// use std::sync::Arc;
/// use pqsync_core::{Engine, LocalTree, Mode, NoProgress, StoreTree, SyncOptions};
///
/// let store = Arc::new(object_store::memory::InMemory::new());
/// let remote = StoreTree::new(store, "prod", "memory:///prod");
/// let engine = Engine::new(LocalTree::new("./db"), remote, SyncOptions::new(Mode::Push))?;
/// let plan = engine.plan().await?;
/// let result = engine.execute(plan, &NoProgress).await?;
/// assert!(result.success);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Engine {
    local: Tree,
    remote: StoreTree,
    opts: SyncOptions,
}

impl Engine {
    /// An engine moving data between `local` and `remote`. For
    /// [`Mode::Mirror`], `local` must be a store (the source); otherwise it
    /// must be a local directory.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a mode and tree kind that do not go together.
    pub fn new(local: impl Into<Tree>, remote: StoreTree, opts: SyncOptions) -> Result<Self> {
        let local = local.into();
        match (&local, opts.mode) {
            (Tree::Store(_), Mode::Mirror)
            | (Tree::Local(_), Mode::Push | Mode::Pull | Mode::Sync) => {}
            (Tree::Store(_), _) => {
                return Err(Error::Invalid(
                    "push, pull and sync need a local directory; use mirror between two remotes"
                        .into(),
                ))
            }
            (Tree::Local(_), Mode::Mirror) => {
                return Err(Error::Invalid(
                    "mirror copies between two remotes; use push for a local directory".into(),
                ))
            }
        }
        Ok(Engine {
            local,
            remote,
            opts: SyncOptions {
                concurrency: opts.concurrency.max(1),
                ..opts
            },
        })
    }

    /// The options in force.
    pub fn options(&self) -> &SyncOptions {
        &self.opts
    }

    fn strategy(&self) -> Strategy {
        self.opts
            .strategy
            .unwrap_or_else(|| self.opts.mode.default_strategy())
    }

    fn requests(&self) -> u64 {
        let src = match &self.local {
            Tree::Store(s) => s.requests(),
            Tree::Local(_) => 0,
        };
        src + self.remote.requests()
    }

    /// Key under which per-remote state (base manifest, journal) is kept.
    fn remote_key(&self) -> String {
        remote_key(self.remote.url())
    }

    /// Compares the trees and reports what differs, moving nothing. On an
    /// unchanged tree this reads no file contents (the stat cache answers)
    /// and makes one request.
    ///
    /// # Errors
    /// [`Error::NotManaged`] if the remote has no manifest; manifest and I/O
    /// errors otherwise.
    pub async fn status(&self) -> Result<StatusReport> {
        self.status_with(&NoProgress).await
    }

    /// [`Engine::status`] with progress reporting.
    ///
    /// # Errors
    /// As for [`Engine::status`].
    pub async fn status_with(&self, reporter: &dyn Reporter) -> Result<StatusReport> {
        let mut plan = self.plan_inner(reporter, true).await?;
        let mut diff = StatusDiff {
            to_upload: Vec::new(),
            to_download: Vec::new(),
            conflicts: std::mem::take(&mut plan.conflicts),
            unchanged: std::mem::take(&mut plan.unchanged),
            deleted_locally: Vec::new(),
            deleted_remotely: Vec::new(),
        };
        for d in &plan.diff {
            match d.change {
                Change::Upload => diff.to_upload.push(d.local.clone().expect("local entry")),
                Change::Download => diff
                    .to_download
                    .push(d.remote.clone().expect("remote entry")),
                Change::DeleteRemote => diff.deleted_locally.push(d.path.clone()),
                Change::DeleteLocal => diff.deleted_remotely.push(d.path.clone()),
                Change::Unchanged | Change::Conflict => {}
            }
        }
        let is_synced = diff.to_upload.is_empty()
            && diff.to_download.is_empty()
            && diff.conflicts.is_empty()
            && diff.deleted_locally.is_empty()
            && diff.deleted_remotely.is_empty()
            && plan.already_sent.is_empty();
        let mut warnings = plan.warnings;
        // Gaps in the event log are worth knowing before they are pushed.
        if let Tree::Local(t) = &self.local {
            let root = t.root().to_path_buf();
            let problems =
                tokio::task::spawn_blocking(move || crate::stats::local_event_problems(&root))
                    .await
                    .unwrap_or_default();
            warnings.extend(problems);
        }
        Ok(StatusReport {
            is_synced,
            diff,
            resumable: plan.already_sent.iter().map(|e| e.path.clone()).collect(),
            interrupted: plan.interrupted.clone(),
            requests: self.requests(),
            files_hashed: plan.files_hashed,
            warnings,
        })
    }

    /// Builds the plan: reads both manifests, diffs them against the base and
    /// sorts every path into a bucket. Moves no data.
    ///
    /// # Errors
    /// [`Error::NotManaged`] when pulling from a remote without a manifest;
    /// manifest and I/O errors otherwise.
    pub async fn plan(&self) -> Result<Plan> {
        self.plan_inner(&NoProgress, false).await
    }

    /// [`Engine::plan`] with progress reporting.
    ///
    /// # Errors
    /// As for [`Engine::plan`].
    pub async fn plan_with(&self, reporter: &dyn Reporter) -> Result<Plan> {
        self.plan_inner(reporter, false).await
    }

    async fn plan_inner(&self, reporter: &dyn Reporter, for_status: bool) -> Result<Plan> {
        let mode = self.opts.mode;
        reporter.progress(&Progress {
            operation: Operation::Comparing,
            current_file: None,
            processed: 0,
            total: 0,
            bytes_transferred: 0,
            bytes_total: 0,
        });
        let remote = self.remote.read_manifest().await?;
        if let Some(r) = &remote {
            refuse_reserved_paths(&r.manifest, self.remote.url())?;
        }
        if remote.is_none() && (mode == Mode::Pull || for_status) {
            return Err(Error::NotManaged {
                url: self.remote.url().to_string(),
            });
        }
        // An existing remote's algorithm wins: switching algorithms would
        // make every file look different. `hash` applies to new remotes.
        let mut early_warnings = Vec::new();
        let remote_alg = remote.as_ref().and_then(|r| r.manifest.hash_algorithm());
        let algorithm = match (remote_alg, self.opts.hash) {
            (Some(r), Some(asked)) if r != asked => {
                early_warnings.push(format!(
                    "{} is hashed with {r}; comparing in {r} ({asked} applies to new remotes only)",
                    self.remote.url()
                ));
                r
            }
            (Some(r), _) => r,
            (None, asked) => asked.unwrap_or_default(),
        };

        let mut state = PlanState::default();
        let mut warnings = early_warnings;
        let mut files_hashed = 0;
        let mut journal = HashSet::new();
        let mut base_is_remote = false;
        let (local_files, base): (
            BTreeMap<String, FileEntry>,
            Option<BTreeMap<String, FileEntry>>,
        ) = match &self.local {
            Tree::Local(tree) => {
                // The walk and the base (a manifest-sized JSON file) are
                // independent: read them on two threads.
                let t = tree.clone();
                let scan = tokio::task::spawn_blocking(move || t.scan(algorithm));
                let t = tree.clone();
                let key = self.remote_key();
                // A status against the very manifest the base was recorded
                // with, when the base holds the same content, compares
                // with that manifest instead of reading the base.
                let same_as_remote = for_status
                    && remote
                        .as_ref()
                        .and_then(|r| r.manifest.commit_id.as_deref())
                        .is_some_and(|id| base_stamp(tree, &key).is_some_and(|s| s.matches(id)));
                let base = tokio::task::spawn_blocking(move || {
                    if same_as_remote {
                        Ok(None)
                    } else {
                        read_base(&t, &key)
                    }
                });
                let (scan, base) = tokio::join!(scan, base);
                let failed = |e| Error::Invalid(format!("scan task failed: {e}"));
                let scan = scan.map_err(failed)??;
                let base = base.map_err(failed)??;
                base_is_remote = same_as_remote;
                files_hashed = scan.hashed;
                warnings.extend(scan.warnings);
                state.local_stats = scan.stats;
                // Only a run that writes local state needs the local
                // manifest (as a template and to skip an unchanged rewrite).
                if !for_status {
                    state.local_manifest = tree.read_manifest()?;
                }
                journal = self.read_journal(tree)?;
                (scan.files, base)
            }
            Tree::Store(src) => {
                let Some(src_manifest) = src.read_manifest().await? else {
                    return Err(Error::NotManaged {
                        url: src.url().to_string(),
                    });
                };
                refuse_reserved_paths(&src_manifest.manifest, src.url())?;
                let files = src_manifest.manifest.files.clone();
                state.source_manifest = Some(src_manifest.manifest);
                // The destination is made equal to the source: its
                // current state is the base, so every difference reads
                // as a change at the source.
                let base = remote.as_ref().map(|r| r.manifest.files.clone());
                (files, base)
            }
        };
        let empty = BTreeMap::new();
        let remote_files = remote.as_ref().map_or(&empty, |r| &r.manifest.files);
        // A base hashed with another algorithm cannot be compared with.
        let base = base.filter(|b| b.values().all(|e| e.hash_algorithm == algorithm));
        let base_ref = if base_is_remote {
            Some(remote_files).filter(|b| b.values().all(|e| e.hash_algorithm == algorithm))
        } else {
            base.as_ref()
        };
        let mut diff = diff3(&local_files, remote_files, base_ref);
        if !self.opts.selection.is_all() {
            // Outside the selection nothing moves and nothing is deleted.
            diff.changed
                .retain(|d| self.opts.selection.contains(&d.path));
            diff.unchanged.retain(|p| self.opts.selection.contains(p));
        }

        let mut plan = Plan {
            mode,
            strategy: self.strategy(),
            algorithm,
            uploads: Vec::new(),
            already_sent: Vec::new(),
            downloads: Vec::new(),
            delete_remote: Vec::new(),
            delete_local: Vec::new(),
            conflicts: Vec::new(),
            held_back: Vec::new(),
            unchanged: Vec::new(),
            diff: Vec::new(),
            remote_managed: remote.is_some(),
            requests_so_far: 0,
            requests_planned: 0,
            bytes_up: 0,
            bytes_down: 0,
            files_hashed,
            warnings,
            refused: Vec::new(),
            interrupted: Vec::new(),
            state,
        };
        bucket(&mut plan, diff, self.opts.delete, &journal);
        if let (Tree::Local(t), true) = (&self.local, self.remote.resumable()) {
            let log = PartsJournal {
                tree: t,
                key: self.remote_key(),
            };
            for e in &plan.uploads {
                if let Some(r) = log.load(&e.path).filter(|r| r.hash == e.tagged_hash()) {
                    plan.interrupted.push(format!(
                        "{}: {} of {} parts already sent",
                        e.path,
                        r.parts.len(),
                        e.size.div_ceil(r.part_size)
                    ));
                }
            }
        }
        let remote_total = remote.as_ref().map_or(0, |r| r.manifest.files.len());
        self.limit_deletes(&mut plan, remote_total, local_files.len());
        plan.bytes_up = plan.uploads.iter().map(|e| e.size).sum();
        plan.bytes_down = plan.downloads.iter().map(|e| e.size).sum();
        let sends = matches!(mode, Mode::Push | Mode::Sync | Mode::Mirror);
        plan.state.needs_commit = sends
            && (remote.is_none()
                || !plan.uploads.is_empty()
                || !plan.already_sent.is_empty()
                || !plan.delete_remote.is_empty());
        let mut planned: u64 = plan
            .uploads
            .iter()
            .map(|e| self.remote.upload_requests(e.size))
            .sum();
        if matches!(self.local, Tree::Store(_)) {
            planned += plan.uploads.len() as u64; // one GET per mirrored object
        }
        planned += plan.downloads.len() as u64;
        planned += StoreTree::delete_requests(plan.delete_remote.len() as u64);
        if plan.state.needs_commit {
            planned += 1;
        }
        let writes_remote =
            plan.state.needs_commit || !plan.uploads.is_empty() || !plan.delete_remote.is_empty();
        if writes_remote {
            planned += self.guard_requests();
        }
        plan.requests_planned = planned;
        plan.requests_so_far = self.requests();
        plan.state.local_files = local_files;
        plan.state.base = base;
        plan.state.remote = remote;
        Ok(plan)
    }

    /// Requests the commit guard adds: the one-time probe where the
    /// capabilities are not cached, and the lease (acquire, re-read,
    /// read-back, release) where conditional writes are not enforced.
    fn guard_requests(&self) -> u64 {
        const PROBE: u64 = 6;
        const LEASE: u64 = 7;
        let cached = match &self.local {
            Tree::Local(t) => crate::commit::cached_capabilities(t, &self.remote_key()),
            Tree::Store(_) => None,
        };
        match cached {
            Some(c) if c.conditional_writes => 0,
            // --force skips the lease, not the re-read and read-back.
            Some(_) if self.opts.force => 2,
            Some(_) => LEASE,
            None if matches!(self.local, Tree::Store(_)) => 1, // the remote's cached answer
            None => PROBE,
        }
    }

    /// Holds back every deletion on a side where the plan would delete more
    /// than `max_delete` allows, and records why.
    fn limit_deletes(&self, plan: &mut Plan, remote_total: usize, local_total: usize) {
        let limit = self.opts.max_delete;
        let sides = [
            (
                std::mem::take(&mut plan.delete_remote),
                remote_total,
                self.remote.url().to_string(),
                Change::DeleteRemote,
            ),
            (
                std::mem::take(&mut plan.delete_local),
                local_total,
                "the local tree".to_string(),
                Change::DeleteLocal,
            ),
        ];
        for (i, (paths, total, side, change)) in sides.into_iter().enumerate() {
            let kept = if paths.is_empty() || limit.allows(paths.len(), total) {
                paths
            } else {
                plan.refused.push(format!(
                    "refusing to delete {} of {total} files in {side} (over --max-delete {limit}); check the plan, then rerun with a higher --max-delete",
                    paths.len()
                ));
                for p in paths {
                    plan.held_back.push(HeldBack {
                        path: p,
                        change,
                        reason: format!("deletion refused: over --max-delete {limit}"),
                    });
                }
                Vec::new()
            };
            if i == 0 {
                plan.delete_remote = kept;
            } else {
                plan.delete_local = kept;
            }
        }
    }

    fn journal_name(&self) -> String {
        format!("journal/{}.log", self.remote_key())
    }

    fn read_journal(&self, tree: &LocalTree) -> Result<HashSet<(String, String)>> {
        let Some(bytes) = tree.read_state_file(&self.journal_name())? else {
            return Ok(HashSet::new());
        };
        Ok(String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(h, p)| (p.to_string(), h.to_string()))
            .collect())
    }

    /// Carries out a plan. Transfers run concurrently; the remote manifest is
    /// committed only if all of them succeeded; deletions follow the commit.
    ///
    /// Per-file failures are collected in [`SyncResult::errors`] rather than
    /// returned as `Err`.
    ///
    /// # Errors
    /// Only for failures that stop the whole run, such as an unwritable
    /// state directory.
    pub async fn execute(&self, plan: Plan, reporter: &dyn Reporter) -> Result<SyncResult> {
        self.opts.congestion.configure(self.opts.concurrency);
        let run = Run {
            engine: self,
            reporter,
            processed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total: (plan.uploads.len()
                + plan.downloads.len()
                + plan.delete_local.len()
                + plan.delete_remote.len()) as u64,
            bytes_total: plan.bytes_up + plan.bytes_down,
            journal: Mutex::new(None),
        };
        run.execute(plan).await
    }
}

/// The part log of resumable uploads, kept in the local state directory
/// under `journal/<remote key>.parts/`, one small file per upload.
struct PartsJournal<'a> {
    tree: &'a LocalTree,
    key: String,
}

impl PartsJournal<'_> {
    fn dir(&self) -> String {
        format!("journal/{}.parts", self.key)
    }

    fn name(&self, path: &str) -> String {
        format!(
            "{}/{}.json",
            self.dir(),
            &hash_bytes(path.as_bytes(), HashAlgorithm::Sha256)[..24]
        )
    }

    /// Every record an earlier run left.
    fn all(&self) -> Vec<PartRecord> {
        let dir = self.tree.state_dir().join(self.dir());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}

impl PartLog for PartsJournal<'_> {
    fn load(&self, path: &str) -> Option<PartRecord> {
        let bytes = self.tree.read_state_file(&self.name(path)).ok()??;
        serde_json::from_slice::<PartRecord>(&bytes)
            .ok()
            .filter(|r| r.path == path)
    }

    fn save(&self, record: &PartRecord) {
        let bytes = serde_json::to_vec(record).expect("record serialises");
        if let Err(e) = self.tree.write_state_file(&self.name(&record.path), &bytes) {
            tracing::warn!("could not record upload progress of {}: {e}", record.path);
        }
    }

    fn remove(&self, path: &str) {
        self.tree.remove_state_file(&self.name(path));
    }
}

/// How the remote is protected during one run.
struct Guard {
    /// Whether commits are compare-and-swap.
    conditional: bool,
    /// The lease held where they are not (and `--force` was not given).
    lease: Option<Lease>,
}

/// Shared state of one `execute`.
struct Run<'a> {
    engine: &'a Engine,
    reporter: &'a dyn Reporter,
    processed: AtomicU64,
    bytes: AtomicU64,
    total: u64,
    bytes_total: u64,
    journal: Mutex<Option<std::fs::File>>,
}

enum Dir {
    Up,
    Down,
}

impl Run<'_> {
    fn progress(&self, operation: Operation, current: Option<&str>) {
        self.reporter.progress(&Progress {
            operation,
            current_file: current.map(str::to_string),
            processed: self.processed.load(Ordering::Relaxed),
            total: self.total,
            bytes_transferred: self.bytes.load(Ordering::Relaxed),
            bytes_total: self.bytes_total,
        });
    }

    async fn execute(&self, plan: Plan) -> Result<SyncResult> {
        let engine = self.engine;
        let Plan {
            mode,
            uploads,
            already_sent,
            downloads,
            delete_remote,
            delete_local,
            conflicts,
            held_back,
            warnings,
            refused,
            state,
            ..
        } = plan;
        // Guard the remote for the whole run where commits cannot be
        // compare-and-swapped.
        let writes_remote = state.needs_commit || !uploads.is_empty() || !delete_remote.is_empty();
        let guard = if writes_remote {
            let token = format!("{:032x}", rand::random::<u128>());
            engine
                .opts
                .retry
                .run(
                    || self.guard(&token),
                    |n, e| self.retrying(MANIFEST_PATH, n, e),
                )
                .await?
        } else {
            Guard {
                conditional: true,
                lease: None,
            }
        };
        self.abort_abandoned_uploads(&uploads).await;
        let mut errors: Vec<FileError> = Vec::new();
        let mut uploaded: Vec<FileEntry> = Vec::new();
        let mut downloaded: Vec<(FileEntry, FileStat)> = Vec::new();

        // Phase 1: data files; phase 2: nested manifests, deepest first.
        let mut jobs: Vec<(Dir, FileEntry)> = Vec::new();
        jobs.extend(uploads.into_iter().map(|e| (Dir::Up, e)));
        jobs.extend(downloads.into_iter().map(|e| (Dir::Down, e)));
        let (manifests, data): (Vec<_>, Vec<_>) = jobs
            .into_iter()
            .partition(|(_, e)| is_nested_manifest(&e.path));

        let concurrency = engine.opts.concurrency;
        let state_ref = &state;
        let results: Vec<_> = futures::stream::iter(data)
            .map(|(dir, e)| async move {
                let r = self.transfer(&dir, &e, state_ref).await;
                (dir, e, r)
            })
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut failed_paths: Vec<String> = Vec::new();

        for (dir, e, r) in results {
            if r.is_err() {
                failed_paths.push(e.path.clone());
            }
            self.collect(dir, e, r, &mut uploaded, &mut downloaded, &mut errors);
        }
        // A nested manifest must never describe files that failed to arrive:
        // it is held back when anything in its subtree failed, including a
        // deeper manifest. Deepest first.
        let mut depth_groups: BTreeMap<std::cmp::Reverse<usize>, Vec<(Dir, FileEntry)>> =
            BTreeMap::new();
        for (dir, e) in manifests {
            depth_groups
                .entry(std::cmp::Reverse(e.path.matches('/').count()))
                .or_default()
                .push((dir, e));
        }
        for (_, group) in depth_groups {
            let mut ready = Vec::new();
            for (dir, e) in group {
                let subtree = e.path.rsplit_once('/').map_or("", |(d, _)| d);
                let blocked = failed_paths
                    .iter()
                    .any(|f| subtree.is_empty() || f.starts_with(&format!("{subtree}/")));
                if blocked {
                    errors.push(FileError {
                        path: e.path.clone(),
                        operation: match dir {
                            Dir::Up => "upload",
                            Dir::Down => "download",
                        }
                        .into(),
                        message: "held back: files it describes failed to transfer".into(),
                    });
                    failed_paths.push(e.path.clone());
                } else {
                    ready.push((dir, e));
                }
            }
            let results: Vec<_> = futures::stream::iter(ready)
                .map(|(dir, e)| async move {
                    let r = self.transfer(&dir, &e, state_ref).await;
                    (dir, e, r)
                })
                .buffer_unordered(concurrency)
                .collect()
                .await;
            for (dir, e, r) in results {
                if r.is_err() {
                    failed_paths.push(e.path.clone());
                }
                self.collect(dir, e, r, &mut uploaded, &mut downloaded, &mut errors);
            }
        }
        drop(self.journal.lock().unwrap().take());
        uploaded.extend(already_sent);

        let all_ok = errors.is_empty();
        let local_tree = match &engine.local {
            Tree::Local(t) => Some(t),
            Tree::Store(_) => None,
        };
        if let Some(t) = local_tree {
            let remembered: Vec<(FileEntry, FileStat)> = downloaded.clone();
            let t = t.clone();
            let _ = tokio::task::spawn_blocking(move || t.remember(&remembered)).await;
        }

        // Commit the remote manifest.
        let mut committed = false;
        let mut deleted: Vec<String> = Vec::new();
        let remote_before: BTreeMap<String, FileEntry> = state
            .remote
            .as_ref()
            .map(|r| r.manifest.files.clone())
            .unwrap_or_default();
        let mut remote_final = remote_before.clone();
        let mut remote_commit = state
            .remote
            .as_ref()
            .and_then(|r| r.manifest.commit_id.clone());
        if all_ok && state.needs_commit {
            let mut ours: Changes = uploaded
                .iter()
                .map(|e| (e.path.clone(), Some(e.clone())))
                .collect();
            for p in &delete_remote {
                ours.insert(p.clone(), None);
            }
            let attempt = || self.commit(mode, &state, &ours, guard.conditional);
            let committed_files = engine
                .opts
                .retry
                .run(attempt, |n, e| self.retrying(MANIFEST_PATH, n, e))
                .await;
            match committed_files {
                Ok((files, id)) => {
                    committed = true;
                    remote_final = files;
                    remote_commit = Some(id);
                }
                Err(e) => errors.push(FileError {
                    path: crate::manifest::MANIFEST_PATH.into(),
                    operation: "commit".into(),
                    message: e.to_string(),
                }),
            }
        }
        let clean_run = all_ok && (committed || !state.needs_commit);

        // Deletions, after the commit.
        let mut delete_remote = delete_remote;
        if committed && !delete_remote.is_empty() {
            self.progress(Operation::Deleting, None);
            if let Some(prefix) = &engine.opts.backup_dir {
                let mut backed_up = Vec::new();
                for p in delete_remote {
                    match engine.remote.backup(&p, prefix).await {
                        Ok(()) => backed_up.push(p),
                        // Not backed up, so not deleted: the manifest no
                        // longer lists it, and the object stays.
                        Err(e) => errors.push(FileError {
                            path: p,
                            operation: "delete".into(),
                            message: format!("not deleted: backup to {prefix} failed: {e}"),
                        }),
                    }
                }
                delete_remote = backed_up;
            }
            match engine.remote.delete_many(&delete_remote).await {
                Ok(()) => {
                    for p in &delete_remote {
                        self.done(p, Operation::Deleting, 0);
                    }
                    deleted.extend(delete_remote.iter().cloned());
                }
                Err(fails) => {
                    // The manifest no longer lists these; a leftover object
                    // is garbage, not a visible file.
                    let failed: HashSet<&str> = fails.iter().map(|(p, _)| p.as_str()).collect();
                    for p in &delete_remote {
                        if !failed.contains(p.as_str()) {
                            self.done(p, Operation::Deleting, 0);
                            deleted.push(p.clone());
                        }
                    }
                    for (path, f) in fails {
                        errors.push(FileError {
                            path,
                            operation: "delete".into(),
                            message: f.to_string(),
                        });
                    }
                }
            }
        }

        // Local side: apply deletions, write manifest, base and record.
        if let Some(tree) = local_tree {
            let mut local_after = state.local_files.clone();
            for (e, _) in &downloaded {
                local_after.insert(e.path.clone(), e.clone());
            }
            if errors.is_empty() {
                for p in &delete_local {
                    let prior = state.local_stats.get(p).copied();
                    match tree.delete(p, prior) {
                        Ok(()) => {
                            local_after.remove(p);
                            deleted.push(p.clone());
                            self.done(p, Operation::Deleting, 0);
                        }
                        Err(e) => errors.push(FileError {
                            path: p.clone(),
                            operation: "delete".into(),
                            message: e.to_string(),
                        }),
                    }
                }
            }
            let remote_now = RemoteState {
                files: &remote_final,
                commit_id: remote_commit.as_deref(),
            };
            self.write_local_state(tree, mode, &state, &local_after, remote_now, clean_run)?;
        }

        // Decided conflicts this mode cannot carry out are in `held_back`.
        let conflicts_pending: Vec<Conflict> = conflicts
            .iter()
            .filter(|c| c.resolution == Resolution::Manual)
            .cloned()
            .collect();
        let conflicts_resolved: Vec<Conflict> =
            conflicts.into_iter().filter(|c| c.applied).collect();
        let mut up: Vec<String> = uploaded.iter().map(|e| e.path.clone()).collect();
        up.sort();
        let mut down: Vec<String> = downloaded.iter().map(|(e, _)| e.path.clone()).collect();
        down.sort();
        deleted.sort();
        // Safety stops are reported last: they hold back only deletions,
        // and everything else above went ahead.
        for r in &refused {
            errors.push(FileError {
                path: match mode {
                    Mode::Pull => "(local deletions)".into(),
                    _ => engine.remote.url().to_string(),
                },
                operation: "delete".into(),
                message: r.clone(),
            });
        }
        let congestion = &engine.opts.congestion;
        let mut warnings = warnings;
        if congestion.cuts() > 0 {
            warnings.push(format!(
                "the store asked to slow down; transfers in flight went down to {} of {}",
                congestion.lowest(),
                engine.opts.concurrency
            ));
        }
        if let Some(lease) = guard.lease {
            lease.release().await;
        }
        Ok(SyncResult {
            success: errors.is_empty(),
            uploaded: up,
            downloaded: down,
            deleted,
            conflicts_resolved,
            conflicts_pending,
            errors,
            held_back,
            committed,
            bytes_transferred: self.bytes.load(Ordering::SeqCst),
            requests: engine.requests(),
            warnings,
        })
    }

    /// Aborts multipart uploads an earlier run started for content this run
    /// no longer sends (the file changed, or is no longer planned), so the
    /// store does not keep their parts.
    async fn abort_abandoned_uploads(&self, uploads: &[FileEntry]) {
        let engine = self.engine;
        // Only a run that sends may decide an earlier upload is abandoned;
        // a pull leaves an interrupted push's progress for the next push.
        if engine.opts.mode == Mode::Pull {
            return;
        }
        let Tree::Local(t) = &engine.local else {
            return;
        };
        if !engine.remote.resumable() {
            return;
        }
        let log = PartsJournal {
            tree: t,
            key: engine.remote_key(),
        };
        let wanted: HashSet<(&str, String)> = uploads
            .iter()
            .map(|e| (e.path.as_str(), e.tagged_hash()))
            .collect();
        for record in log.all() {
            if !wanted.contains(&(record.path.as_str(), record.hash.clone())) {
                match engine
                    .remote
                    .abort_upload(&record.path, &record.upload_id)
                    .await
                {
                    Ok(()) => log.remove(&record.path),
                    Err(e) => tracing::warn!(
                        "could not abort an abandoned upload of {}: {e}",
                        record.path
                    ),
                }
            }
        }
    }

    /// Finds out how commits to the remote are protected, and takes the
    /// lease where a lease is needed.
    async fn guard(&self, token: &str) -> Result<Guard> {
        let engine = self.engine;
        let local = match &engine.local {
            Tree::Local(t) => Some(t),
            Tree::Store(_) => None,
        };
        let caps = crate::commit::capabilities(local, &engine.remote, &engine.remote_key()).await?;
        let lease = if caps.conditional_writes || engine.opts.force {
            None
        } else {
            Some(Lease::acquire(&engine.remote, token).await?)
        };
        Ok(Guard {
            conditional: caps.conditional_writes,
            lease,
        })
    }

    /// Commits this run's changes without overwriting another writer's
    /// commit; returns the files the committed manifest lists, and its
    /// commit id.
    async fn commit(
        &self,
        mode: Mode,
        state: &PlanState,
        ours: &Changes,
        conditional: bool,
    ) -> Result<(BTreeMap<String, FileEntry>, String)> {
        let engine = self.engine;
        let url = engine.remote.url().to_string();
        let commit_id = format!("{:032x}", rand::random::<u128>());
        let mut seen = state.remote.clone();
        for _ in 0..8 {
            if !conditional {
                // Under a lease: pick up whatever was committed since the
                // plan (an expired lease, a --force writer) before writing.
                let now = engine.remote.read_manifest().await?;
                seen = self.merge_point(&url, seen, now, ours)?;
            }
            let seen_files = seen
                .as_ref()
                .map(|r| r.manifest.files.clone())
                .unwrap_or_default();
            let files = crate::commit::apply(&seen_files, ours);
            let template = seen.as_ref().map(|r| &r.manifest);
            let mut manifest = self.remote_manifest(mode, state, template, files.clone());
            manifest.commit_id = Some(commit_id.clone());
            let commit_mode = match (&seen, conditional) {
                (_, false) => CommitMode::Overwrite,
                (None, true) => CommitMode::Create,
                (Some(r), true) => match &r.etag {
                    Some(etag) => CommitMode::Update(etag.clone()),
                    None => CommitMode::Overwrite,
                },
            };
            match engine.remote.write_manifest(&manifest, commit_mode).await {
                Ok(_) => {
                    if !conditional {
                        let back = engine.remote.read_manifest().await?;
                        let stuck = back.and_then(|b| b.manifest.commit_id);
                        if stuck.as_deref() != Some(commit_id.as_str()) {
                            return Err(Error::RemoteChanged {
                                operation: mode_verb(mode),
                                url,
                                paths: vec![format!(
                                    "the manifest (another writer's commit replaced this run's, id {commit_id})"
                                )],
                            });
                        }
                    }
                    return Ok((files, commit_id));
                }
                Err(Error::Precondition { .. }) => {
                    let now = engine.remote.read_manifest().await?;
                    seen = self.merge_point(&url, seen, now, ours)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::Invalid(format!(
            "{url}: gave up committing after repeated concurrent commits; run again"
        )))
    }

    /// Moves the commit's starting point from `seen` to `now`, the manifest
    /// another writer committed, if their changes and ours do not overlap.
    fn merge_point(
        &self,
        url: &str,
        seen: Option<RemoteManifest>,
        now: Option<RemoteManifest>,
        ours: &Changes,
    ) -> Result<Option<RemoteManifest>> {
        let empty = BTreeMap::new();
        let seen_files = seen.as_ref().map_or(&empty, |r| &r.manifest.files);
        let now_files = now.as_ref().map_or(&empty, |r| &r.manifest.files);
        let clash = crate::commit::overlap(seen_files, now_files, ours);
        if !clash.is_empty() {
            return Err(Error::RemoteChanged {
                operation: mode_verb(self.engine.opts.mode),
                url: url.to_string(),
                paths: clash,
            });
        }
        if let Some(n) = &now {
            if seen.as_ref().map(|s| &s.manifest.files) != Some(&n.manifest.files) {
                self.reporter.event(&Event::Warning(format!(
                    "{url} changed during this run; merged the other writer's commit"
                )));
            }
        }
        Ok(now)
    }

    fn retrying(&self, path: &str, attempt: u32, err: &Error) {
        self.reporter.event(&Event::Retry {
            path: path.to_string(),
            attempt,
            error: err.to_string(),
        });
    }

    fn collect(
        &self,
        dir: Dir,
        e: FileEntry,
        r: Result<Option<FileStat>>,
        uploaded: &mut Vec<FileEntry>,
        downloaded: &mut Vec<(FileEntry, FileStat)>,
        errors: &mut Vec<FileError>,
    ) {
        match (dir, r) {
            (Dir::Up, Ok(_)) => uploaded.push(e),
            (Dir::Down, Ok(Some(stat))) => downloaded.push((e, stat)),
            (Dir::Down, Ok(None)) => {}
            (dir, Err(err)) => {
                self.reporter.event(&Event::Failed {
                    path: e.path.clone(),
                    error: err.to_string(),
                });
                errors.push(FileError {
                    path: e.path,
                    operation: match dir {
                        Dir::Up => "upload",
                        Dir::Down => "download",
                    }
                    .into(),
                    message: err.to_string(),
                })
            }
        }
    }

    fn done(&self, path: &str, operation: Operation, bytes: u64) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        self.reporter.event(&Event::FileDone {
            path: path.to_string(),
            operation,
            bytes,
        });
        self.progress(operation, Some(path));
    }

    /// Moves one file, retrying transient failures.
    async fn transfer(
        &self,
        dir: &Dir,
        e: &FileEntry,
        state: &PlanState,
    ) -> Result<Option<FileStat>> {
        let engine = self.engine;
        let op = match dir {
            Dir::Up => Operation::Uploading,
            Dir::Down => Operation::Downloading,
        };
        let _slot = engine.opts.congestion.acquire().await;
        self.progress(op, Some(&e.path));
        let on_bytes = |n: u64| {
            self.bytes.fetch_add(n, Ordering::Relaxed);
            self.progress(op, Some(&e.path));
        };
        let result = engine
            .opts
            .retry
            .run(
                || async {
                    match dir {
                        Dir::Up => {
                            if let Some(prefix) = &engine.opts.backup_dir {
                                let exists = state
                                    .remote
                                    .as_ref()
                                    .is_some_and(|r| r.manifest.files.contains_key(&e.path));
                                if exists {
                                    engine.remote.backup(&e.path, prefix).await?;
                                }
                            }
                            let stream = match &engine.local {
                                Tree::Local(t) => {
                                    let stat = state.local_stats.get(&e.path).copied().ok_or_else(
                                        || Error::ChangedDuringRun {
                                            path: e.path.clone(),
                                            detail: "not seen by the scan".into(),
                                        },
                                    )?;
                                    let stream = t.open(&e.path, stat).await?;
                                    // Bytes that differ from the scan's hash
                                    // mean the file was edited while it was
                                    // being read; the upload is abandoned.
                                    let log = PartsJournal {
                                        tree: t,
                                        key: engine.remote_key(),
                                    };
                                    return match engine
                                        .remote
                                        .write(e, stream, &on_bytes, Some(&log))
                                        .await
                                    {
                                        Err(Error::Mismatch { .. }) => {
                                            Err(Error::ChangedDuringRun {
                                                path: e.path.clone(),
                                                detail: "modified while it was being sent".into(),
                                            })
                                        }
                                        other => other.map(|()| None),
                                    };
                                }
                                Tree::Store(s) => s.open(&e.path).await?,
                            };
                            engine.remote.write(e, stream, &on_bytes, None).await?;
                            Ok(None)
                        }
                        Dir::Down => {
                            let Tree::Local(t) = &engine.local else {
                                return Err(Error::Invalid("mirror never downloads".into()));
                            };
                            let stream = engine.remote.open(&e.path).await?;
                            let prior = state.local_stats.get(&e.path).copied();
                            let stat = t.write(e, stream, prior, &on_bytes).await?;
                            Ok(Some(stat))
                        }
                    }
                },
                |attempt, err| {
                    self.reporter.event(&Event::Retry {
                        path: e.path.clone(),
                        attempt,
                        error: err.to_string(),
                    })
                },
            )
            .await;
        if result.is_ok() {
            if let (Dir::Up, Tree::Local(t)) = (dir, &engine.local) {
                self.journal_append(t, e);
            }
            self.done(&e.path, op, e.size);
        }
        result
    }

    /// Records a completed upload so a re-run after a failure or a crash
    /// does not send it again.
    fn journal_append(&self, tree: &LocalTree, e: &FileEntry) {
        use std::io::Write;
        let mut guard = self.journal.lock().unwrap();
        if guard.is_none() {
            let path = tree.state_dir().join(self.engine.journal_name());
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            *guard = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok();
        }
        if let Some(f) = guard.as_mut() {
            let _ = writeln!(f, "{}\t{}", e.tagged_hash(), e.path);
        }
    }

    fn remote_manifest(
        &self,
        mode: Mode,
        state: &PlanState,
        current: Option<&Manifest>,
        files: BTreeMap<String, FileEntry>,
    ) -> Manifest {
        let engine = self.engine;
        let template = match mode {
            Mode::Mirror => state.source_manifest.clone(),
            _ => current.cloned().or_else(|| state.local_manifest.clone()),
        };
        let mut m = template.unwrap_or_else(|| self.fresh_manifest());
        m.files = files;
        m.last_synced_at = now_iso();
        m.synced_from = Some(match (mode, &engine.local) {
            (Mode::Mirror, Tree::Store(src)) => format!("remote:{}", src.url()),
            (Mode::Sync, _) => "bidirectional".into(),
            _ => "local".into(),
        });
        m
    }

    fn fresh_manifest(&self) -> Manifest {
        let name = match &self.engine.local {
            Tree::Local(t) => std::fs::canonicalize(t.root())
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
                .unwrap_or_else(|| "database".into()),
            Tree::Store(s) => s.url().rsplit('/').next().unwrap_or("database").to_string(),
        };
        let id: u128 = rand::random();
        Manifest::new(format!("{id:032x}"), name)
    }

    fn write_local_state(
        &self,
        tree: &LocalTree,
        mode: Mode,
        state: &PlanState,
        local_after: &BTreeMap<String, FileEntry>,
        remote_now: RemoteState<'_>,
        clean_run: bool,
    ) -> Result<()> {
        let engine = self.engine;
        let remote_final = remote_now.files;
        // The local manifest describes the local tree.
        let changed = state
            .local_manifest
            .as_ref()
            .is_none_or(|m| &m.files != local_after);
        if changed {
            let template = state
                .remote
                .as_ref()
                .map(|r| r.manifest.clone())
                .or_else(|| state.local_manifest.clone());
            let mut m = template.unwrap_or_else(|| self.fresh_manifest());
            m.commit_id = None;
            m.files = local_after.clone();
            m.last_synced_at = now_iso();
            m.synced_from = Some(match mode {
                Mode::Pull => format!("remote:{}", engine.remote.url()),
                Mode::Sync => "bidirectional".into(),
                _ => "local".into(),
            });
            tree.write_manifest(&m)?;
        }
        // The new base: every path on which both sides now agree; elsewhere
        // the old base stands, so unresolved differences keep their history.
        let old = state.base.clone().unwrap_or_default();
        let mut base = BTreeMap::new();
        let mut paths: std::collections::BTreeSet<&String> = local_after.keys().collect();
        paths.extend(remote_final.keys());
        paths.extend(old.keys());
        for p in paths {
            match (local_after.get(p), remote_final.get(p)) {
                (Some(l), Some(r)) if l.same_content(r) => {
                    base.insert(p.clone(), l.clone());
                }
                (None, None) => {}
                _ => {
                    if let Some(b) = old.get(p) {
                        base.insert(p.clone(), b.clone());
                    }
                }
            }
        }
        // Whether the base holds the same content as the remote manifest
        // now there: then a status that finds that manifest (by its commit
        // id) need not read the base at all.
        let equals_remote = base.len() == remote_final.len()
            && base
                .iter()
                .zip(remote_final)
                .all(|((p, b), (q, r))| p == q && b.same_content(r));
        let base_changed = state.base.as_ref() != Some(&base);
        let key = engine.remote_key();
        if base_changed {
            let mut m = Manifest::new("base", engine.remote.url());
            m.files = base;
            tree.write_state_file(&format!("base-{key}.json"), &m.to_json_pretty())?;
        }
        let stamp = BaseStamp {
            remote_commit_id: remote_now.commit_id.map(str::to_string),
            equals_remote,
        };
        let stamp_name = format!("base-{key}.stamp.json");
        let stamp_bytes = serde_json::to_vec(&stamp).expect("stamp serialises");
        if tree.read_state_file(&stamp_name)?.as_deref() != Some(&stamp_bytes[..]) {
            tree.write_state_file(&stamp_name, &stamp_bytes)?;
        }
        if clean_run {
            tree.remove_state_file(&engine.journal_name());
        }
        let record = serde_json::json!({ "url": engine.remote.url() });
        let record_bytes = serde_json::to_vec_pretty(&record).expect("record serialises");
        if tree.read_state_file("remote.json")?.as_deref() != Some(&record_bytes[..]) {
            tree.write_state_file("remote.json", &record_bytes)?;
        }
        Ok(())
    }
}

/// A manifest from a store may not name a path pqsync never syncs (`.git`,
/// `_meta/.pqsync`, the manifest itself, ...): writing those could plant
/// hooks or rewrite pqsync's own state.
fn refuse_reserved_paths(m: &Manifest, url: &str) -> Result<()> {
    match m.files.keys().find(|p| crate::ignore::is_ignored(p)) {
        Some(p) => Err(Error::UnsafePath {
            path: p.clone(),
            origin: format!("{url}/{}", crate::manifest::MANIFEST_PATH),
            reason: "a reserved or ignored path that pqsync never syncs".into(),
        }),
        None => Ok(()),
    }
}

fn mode_verb(mode: Mode) -> &'static str {
    match mode {
        Mode::Push => "push",
        Mode::Pull => "pull",
        Mode::Sync => "sync",
        Mode::Mirror => "mirror",
    }
}

/// The remote manifest a run leaves behind: its files and commit id.
#[derive(Clone, Copy)]
struct RemoteState<'a> {
    files: &'a BTreeMap<String, FileEntry>,
    commit_id: Option<&'a str>,
}

/// A small record kept beside the base: the commit id of the remote
/// manifest at the time, and whether the base held the same content.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BaseStamp {
    remote_commit_id: Option<String>,
    equals_remote: bool,
}

impl BaseStamp {
    /// Whether the base equals the remote manifest whose commit id is `id`.
    fn matches(&self, id: &str) -> bool {
        self.equals_remote && self.remote_commit_id.as_deref() == Some(id)
    }
}

fn base_stamp(tree: &LocalTree, key: &str) -> Option<BaseStamp> {
    let bytes = tree
        .read_state_file(&format!("base-{key}.stamp.json"))
        .ok()??;
    serde_json::from_slice(&bytes).ok()
}

/// The base (the file map both sides agreed on at the last sync with the
/// remote whose key is `key`), if there is a readable one.
fn read_base(tree: &LocalTree, key: &str) -> Result<Option<BTreeMap<String, FileEntry>>> {
    let name = format!("base-{key}.json");
    match tree.read_state_file(&name)? {
        None => Ok(None),
        Some(bytes) => {
            let origin = tree.state_dir().join(&name).display().to_string();
            match Manifest::from_slice(&bytes, &origin) {
                Ok(m) => Ok(Some(m.files)),
                Err(e) => {
                    // A damaged base only loses deletion inference; say so
                    // and continue as on a first sync.
                    tracing::warn!("{e}; treating this as a first sync");
                    Ok(None)
                }
            }
        }
    }
}

/// The key under which a local directory keeps its state for a remote URL.
pub fn remote_key(url: &str) -> String {
    hash_bytes(url.as_bytes(), HashAlgorithm::Sha256)[..16].to_string()
}

/// What a local directory recorded about a remote's capabilities, if it has
/// written to it.
pub fn remote_capabilities(
    dir: &std::path::Path,
    url: &str,
) -> Option<crate::commit::Capabilities> {
    crate::commit::cached_capabilities(&LocalTree::new(dir), &remote_key(url))
}

/// The remote a local directory last synced with, from
/// `_meta/.pqsync/remote.json`.
///
/// # Errors
/// [`Error::Io`] if the record exists but cannot be read.
pub fn last_remote(dir: &std::path::Path) -> Result<Option<String>> {
    let tree = LocalTree::new(dir);
    let Some(bytes) = tree.read_state_file("remote.json")? else {
        return Ok(None);
    };
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| Error::ManifestCorrupt {
            path: tree.state_dir().join("remote.json").display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(v.get("url").and_then(|u| u.as_str()).map(str::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_and_tree_kinds_must_match() {
        let store = std::sync::Arc::new(object_store::memory::InMemory::new());
        let remote = StoreTree::new(store.clone(), "", "memory:///");
        let src = StoreTree::new(store, "x", "memory:///x");
        assert!(Engine::new(src.clone(), remote.clone(), SyncOptions::new(Mode::Push)).is_err());
        assert!(Engine::new(
            LocalTree::new("."),
            remote.clone(),
            SyncOptions::new(Mode::Mirror)
        )
        .is_err());
        assert!(Engine::new(src, remote, SyncOptions::new(Mode::Mirror)).is_ok());
    }
}
