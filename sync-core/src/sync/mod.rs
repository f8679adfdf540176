//! The sync pipeline: one engine for push, pull, sync and mirror.
//!
//! ```text
//! read both sides (source scan or manifest + one remote GET)
//!   → 3-way diff against the base (diff)
//!   → Plan (plan: buckets, deletion limit, request estimate)
//!   → execute (execute: guard, transfers, nested manifests, commit,
//!              deletions, local state)
//! ```
//!
//! `execute` moves data first, writes nested manifests after the files of
//! their subtree, commits the remote manifest only when every transfer
//! succeeded, and deletes only after that commit. A run that fails part way
//! leaves the remote manifest as it was: new files stay invisible to readers,
//! replaced files are each swapped atomically (a reader that verifies hashes
//! notices the mix), and the next run moves only what is left.
//!
//! The engine is built for one mode and one pair of trees, and picks the
//! [`Source`](source::Source) for its kind of tree then; nothing after that
//! asks which kind of tree it has.

mod commit;
mod diff;
mod execute;
mod fanout;
pub(crate) mod guard;
mod mode;
mod options;
mod plan;
mod repair;
mod report;
mod select;
mod shard;
mod source;
mod transfer;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use std::sync::Arc;

pub use diff::{diff3, Change, Diff3, PathDiff, Resolution};
pub use fanout::FanOut;
pub(crate) use guard::host_name;
pub use guard::LEASE_TTL;
pub use mode::{Mode, Strategy};
pub use options::{MaxDelete, SyncOptions};
pub use plan::{Conflict, HeldBack, Plan};
pub use repair::{Damage, Repair};
pub use report::{FileError, StatusDiff, StatusReport, SyncResult};
pub use select::Selection;
pub use shard::Shard;

use crate::error::{Error, Result};
use crate::layout::segment_seq;
use crate::manifest::HashAlgorithm;
use crate::runtime::{NoProgress, Operation, Progress, Reporter};
use crate::tree::local::JournalEntry;
use crate::tree::{LocalTree, RemoteManifest, StoreTree};
use plan::{bucket, limit_deletes};
use source::{refuse_reserved_paths, LocalSource, ReadOptions, Source, SourceView, StoreSource};

/// What a comparison of the two sides must do.
#[derive(Clone, Copy, Debug)]
struct Compare {
    /// A remote without a manifest is an error (pull, status).
    require_remote: bool,
    /// The base may be taken from the remote manifest when its stamp says
    /// they are equal (a status; a run that writes state reads the base).
    base_may_be_remote: bool,
    /// The local manifest is read (a run that writes local state needs it
    /// as a template).
    need_manifest: bool,
    /// The plan keeps the diff (a status reports it).
    keep_diff: bool,
}

/// The sync engine for one pair of trees.
///
/// ```no_run
/// # async fn demo() -> pqsync_core::Result<()> {
/// use std::sync::Arc;
/// use pqsync_core::{Engine, LocalTree, StoreTree, SyncOptions};
///
/// let store = Arc::new(object_store::memory::InMemory::new());
/// let remote = StoreTree::new(store, "prod", "memory:///prod");
/// let engine = Engine::push(LocalTree::new("./db"), remote, SyncOptions::default());
/// let plan = engine.plan().await?;
/// let result = engine.execute(plan).await?;
/// assert!(result.success);
/// # Ok(()) }
/// ```
pub struct Engine {
    id: u64,
    mode: Mode,
    source: Box<dyn Source>,
    remote: StoreTree,
    opts: SyncOptions,
    reporter: Arc<dyn Reporter>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("mode", &self.mode)
            .field("source", &self.source)
            .field("remote", &self.remote)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Sends `local`'s changes to `remote`; remote-side changes are
    /// reported, not fetched.
    pub fn push(local: LocalTree, remote: StoreTree, opts: SyncOptions) -> Engine {
        Engine::local(Mode::Push, local, remote, opts)
    }

    /// Fetches `remote`'s changes into `local`; local changes are reported,
    /// not sent.
    pub fn pull(local: LocalTree, remote: StoreTree, opts: SyncOptions) -> Engine {
        Engine::local(Mode::Pull, local, remote, opts)
    }

    /// Exchanges changes both ways between `local` and `remote`.
    pub fn sync(local: LocalTree, remote: StoreTree, opts: SyncOptions) -> Engine {
        Engine::local(Mode::Sync, local, remote, opts)
    }

    /// Makes `destination` equal to `source`, a managed store prefix.
    pub fn mirror(source: StoreTree, destination: StoreTree, opts: SyncOptions) -> Engine {
        Engine::build(
            Mode::Mirror,
            Box::new(StoreSource::new(source, &destination)),
            destination,
            opts,
        )
    }

    /// Makes `destination` equal to the source of `fan`, one of several
    /// destinations that share what is read from it (see [`FanOut`]).
    pub fn mirror_shared(fan: &FanOut, destination: StoreTree, opts: SyncOptions) -> Engine {
        Engine::build(
            Mode::Mirror,
            Box::new(StoreSource::shared(fan, &destination)),
            destination,
            opts,
        )
    }

    /// Makes `snapshot` (a snapshot tree from the repository) equal to
    /// `local`, as a new snapshot.
    pub(crate) fn backup(local: LocalTree, snapshot: StoreTree, opts: SyncOptions) -> Engine {
        Engine::local(Mode::Backup, local, snapshot, opts)
    }

    /// Makes `local` equal to `snapshot`.
    pub(crate) fn restore(local: LocalTree, snapshot: StoreTree, opts: SyncOptions) -> Engine {
        Engine::local(Mode::Restore, local, snapshot, opts)
    }

    fn local(mode: Mode, local: LocalTree, remote: StoreTree, opts: SyncOptions) -> Engine {
        // One shard of a split push sees only its files and keeps its own
        // state.
        let source = match opts.shard {
            Some(s) => LocalSource::shard(local, s.index, s.count, &remote),
            None => LocalSource::new(local, &remote),
        };
        Engine::build(mode, Box::new(source), remote, opts)
    }

    fn build(mode: Mode, source: Box<dyn Source>, remote: StoreTree, opts: SyncOptions) -> Engine {
        static IDS: AtomicU64 = AtomicU64::new(1);
        Engine {
            id: IDS.fetch_add(1, Ordering::Relaxed),
            mode,
            source,
            remote,
            opts: SyncOptions {
                concurrency: opts.concurrency.max(1),
                ..opts
            },
            reporter: Arc::new(NoProgress),
        }
    }

    /// Reports progress and events to `reporter` (by default, nothing is
    /// reported).
    pub fn with_reporter(mut self, reporter: Arc<dyn Reporter>) -> Self {
        self.reporter = reporter;
        self
    }

    /// The engine's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The options in force.
    pub fn options(&self) -> &SyncOptions {
        &self.opts
    }

    /// The remote (for a mirror, the destination).
    pub fn remote(&self) -> &StoreTree {
        &self.remote
    }

    fn strategy(&self) -> Strategy {
        self.opts
            .strategy
            .unwrap_or_else(|| self.mode.default_strategy())
    }

    fn requests(&self) -> u64 {
        self.source.requests() + self.remote.requests()
    }

    /// Compares the trees and reports what differs, moving nothing. On an
    /// unchanged tree this reads no file contents (the stat cache answers)
    /// and makes one request.
    ///
    /// # Errors
    /// [`Error::NotManaged`] if the remote has no manifest; manifest, I/O
    /// and store errors otherwise.
    pub async fn status(&self) -> Result<StatusReport> {
        let compare = Compare {
            require_remote: true,
            base_may_be_remote: true,
            need_manifest: false,
            keep_diff: true,
        };
        let read = match self.status_from_base().await? {
            Ok(report) => return Ok(report),
            Err(read) => read,
        };
        let plan = self.make_plan(compare, read).await?;
        let mut report = status_report(plan);
        report.requests = self.requests();
        report.warnings.extend(self.source.status_warnings().await);
        Ok(report)
    }

    /// Builds the plan: reads both sides, diffs them against the base and
    /// sorts every path into a bucket. Moves no data.
    ///
    /// # Errors
    /// [`Error::NotManaged`] when pulling from a remote without a manifest
    /// (or mirroring from a source without one); manifest, I/O and store
    /// errors otherwise.
    pub async fn plan(&self) -> Result<Plan> {
        let read = self.remote_through_base().await?;
        self.make_plan(
            Compare {
                require_remote: matches!(self.mode, Mode::Pull | Mode::Restore),
                base_may_be_remote: false,
                need_manifest: true,
                keep_diff: false,
            },
            read,
        )
        .await
    }

    /// For a push whose base was recorded equal to the remote manifest, the
    /// remote manifest without downloading it when it has not changed: one
    /// conditional GET (`If-None-Match` its ETag then) answers 304, and the
    /// base and the header recorded with it rebuild the manifest, checked
    /// against the file list its commit id is sealed to. Any other answer
    /// (a new ETag, no manifest, a store that ignores the header) is the
    /// manifest itself, so the plan costs the one request it always did.
    /// `None` when the push reads the manifest as usual.
    async fn remote_through_base(&self) -> Result<Option<PreRead>> {
        let o = &self.opts;
        let plain = self.mode == Mode::Push
            && o.shard.is_none()
            && !o.merge_shards
            && o.repair == Repair::Off
            && o.slug.is_none();
        let Some(etag) = self.source.base_manifest_etag().filter(|_| plain) else {
            return Ok(None);
        };
        let lock = self.source.lock()?;
        let (remote, rebuilt) = match self.remote.read_manifest_unless(&etag).await? {
            Some(read) => (read, false),
            None => match self.source.manifest_from_base().await? {
                Some(rebuilt) => {
                    tracing::info!(
                        "{}: the manifest is unchanged since the last sync; rebuilt from the base",
                        self.remote.url()
                    );
                    (Some(rebuilt), true)
                }
                None => (self.remote.read_manifest().await?, false),
            },
        };
        Ok(Some(PreRead {
            remote,
            lock,
            rebuilt,
        }))
    }

    /// A status of a directory whose remote manifest is unchanged since the
    /// base was recorded equal to it (one conditional GET finds that out):
    /// the walk is merged with the base as both stream, so neither the
    /// manifest nor a map of the tree is ever built. `Err` carries the
    /// manifest the GET returned instead, with the run lock held since,
    /// for the full comparison (`None` when the GET was not made).
    async fn status_from_base(&self) -> Result<std::result::Result<StatusReport, Option<PreRead>>> {
        let o = &self.opts;
        let plain = o.selection.is_all()
            && o.shard.is_none()
            && !o.merge_shards
            && o.repair == Repair::Off
            && !matches!(self.mode, Mode::Backup | Mode::Restore | Mode::Mirror);
        // (A `--hash` other than the remote's gets the full comparison and
        // its warning.)
        let Some((etag, _)) = self
            .source
            .base_etag()
            .filter(|(_, alg)| plain && self.opts.hash.is_none_or(|h| h == *alg))
        else {
            return Ok(Err(None));
        };
        let lock = self.source.lock()?;
        if let Some(read) = self.remote.read_manifest_unless(&etag).await? {
            return Ok(Err(Some(PreRead {
                remote: read,
                lock,
                rebuilt: false,
            })));
        }
        let Some(base) = self.source.status_from_base(&self.remote).await? else {
            return Ok(Err(None));
        };
        tracing::info!(
            "{}: the manifest is unchanged since the last sync; compared with the base",
            self.remote.url()
        );
        let mut warnings = base.warnings;
        for e in base.to_upload.iter().filter(|e| e.path.contains("..")) {
            warnings.push(format!(
                "{}: ParqueDB cannot read a path containing \"..\" (its pull of this remote will fail on it); rename it if ParqueDB reads this database",
                e.path
            ));
        }
        warnings.extend(self.source.status_warnings().await);
        let interrupted = self.source.interrupted(&self.remote, &base.to_upload);
        let diff = StatusDiff {
            unchanged_count: base.unchanged.len(),
            unchanged: base.unchanged,
            to_upload: base.to_upload,
            deleted_locally: base.deleted_locally,
            ..StatusDiff::default()
        };
        Ok(Ok(StatusReport {
            is_synced: diff.to_upload.is_empty() && diff.deleted_locally.is_empty(),
            diff,
            resumable: Vec::new(),
            interrupted,
            requests: self.requests(),
            files_hashed: base.files_hashed,
            warnings,
            remote_synced_at: base.remote_synced_at,
            remote_last_segment: base.remote_last_segment,
            ignored: base.ignored,
        }))
    }

    async fn make_plan(&self, compare: Compare, read: Option<PreRead>) -> Result<Plan> {
        if self.opts.merge_shards && !self.opts.selection.is_all() {
            return Err(Error::InvalidArgument {
                argument: "--merge-shards",
                reason: "a merge commits what every shard recorded; run it without --namespaces, --include or --exclude (give them to the shards)".into(),
            });
        }
        // A split backup merges in the repository, not through an engine.
        let splits = match self.opts.merge_shards {
            true => matches!(self.mode, Mode::Push | Mode::Mirror),
            false => matches!(self.mode, Mode::Push | Mode::Mirror | Mode::Backup),
        };
        if (self.opts.shard.is_some() || self.opts.merge_shards) && !splits {
            return Err(Error::InvalidArgument {
                argument: "--shard",
                reason: format!(
                    "a {} is not split into shards; only push, mirror and backup are",
                    self.mode
                ),
            });
        }
        let (read, held, rebuilt) = match read {
            Some(r) => (Some(r.remote), r.lock, r.rebuilt),
            None => (None, None, false),
        };
        let _lock = match held {
            Some(lock) => Some(lock),
            None => self.source.lock()?,
        };
        self.reporter.progress(&Progress {
            operation: Operation::Comparing,
            current_file: None,
            processed: 0,
            total: 0,
            bytes_transferred: 0,
            bytes_total: 0,
        });
        let remote = match read {
            Some(remote) => self.checked_remote(remote)?,
            None => self.read_remote().await?,
        };
        let (algorithm, warning) = self.algorithm(remote.as_ref());
        let read = ReadOptions {
            algorithm,
            base_may_be_remote: compare.base_may_be_remote || rebuilt,
            need_manifest: compare.need_manifest,
            rehash: self.opts.repair == Repair::Checksum,
            merge_shards: self.opts.merge_shards,
            shard: self.opts.shard,
            concurrency: self.opts.concurrency,
        };
        let mut view = self.source.read(remote.as_ref(), read).await?;
        // A snapshot has no history shared with the directory: a backup
        // makes the new snapshot equal to the directory, a restore makes
        // the directory equal to the snapshot.
        match self.mode {
            Mode::Backup => view.base = remote.as_ref().map(|r| r.manifest.files.clone()),
            Mode::Restore => view.base = Some(view.files.clone()),
            _ => {}
        }
        // A name the remote cannot hold stays out of the run, like an
        // unreadable file, instead of failing its upload and with it the
        // commit of everything else.
        let refused: Vec<crate::tree::LeftOut> = view
            .files
            .keys()
            .filter_map(|p| {
                let reason = self.remote.refuses_name(p)?;
                Some(crate::tree::LeftOut::new(p, reason, "upload"))
            })
            .collect();
        view.left_out.extend(refused);
        let mut warnings: Vec<String> = warning.into_iter().collect();
        if remote.is_none() {
            warnings.extend(self.no_remote_manifest(&compare, &mut view).await?);
        }
        // Deletions are measured against the files both sides last agreed
        // on, not against a tree that has grown since.
        let local_total = match (&view.base, &remote) {
            (Some(b), _) => b.len(),
            (None, Some(r)) if view.base_is_remote => r.manifest.files.len(),
            (None, _) => view.files.len(),
        };
        let diff = self.diff(&mut view, remote.as_ref(), algorithm);
        let journal = self
            .checked_journal(std::mem::take(&mut view.journal), remote.as_ref(), &view)
            .await;
        warnings.append(&mut view.warnings);
        warnings.extend(view.left_out.iter().map(|l| {
            format!(
                "{}: left out ({}); it is neither sent nor deleted",
                l.path, l.reason
            )
        }));
        warnings.extend(self.unmatched_namespaces(&view, remote.as_ref()));
        let remote_total = remote.as_ref().map_or(0, |r| r.manifest.files.len());
        let mut plan = Plan::new(self.id, self.mode, self.strategy(), algorithm, view, remote);
        plan.warnings = warnings;
        bucket(
            &mut plan,
            diff,
            self.opts.delete,
            &journal,
            compare.keep_diff,
        );
        self.find_damage(&mut plan).await?;
        // ParqueDB's file backend refuses any path containing `..`, even
        // inside a name; pqsync can carry it, ParqueDB cannot read it back.
        for e in plan.uploads.iter().filter(|e| e.path.contains("..")) {
            plan.warnings.push(format!(
                "{}: ParqueDB cannot read a path containing \"..\" (its pull of this remote will fail on it); rename it if ParqueDB reads this database",
                e.path
            ));
        }
        plan.interrupted = self.source.interrupted(&self.remote, &plan.uploads);
        let url = self.remote.url().to_string();
        limit_deletes(
            &mut plan,
            self.opts.max_delete,
            remote_total,
            local_total,
            &url,
        );
        // A backup always records a snapshot, changed or not.
        plan.needs_commit = self.mode == Mode::Backup
            || self.mode.sends()
                && (!plan.remote_managed()
                    || !plan.uploads.is_empty()
                    || !plan.already_sent.is_empty()
                    || !plan.delete_remote.is_empty());
        self.source.planned(&plan.uploads, &self.remote);
        plan.requests_planned = self.estimate(&plan);
        plan.requests_so_far = self.requests();
        let mut made = self.remote.usage();
        made += self.source.usage();
        let reads = self.estimate_reads(&plan);
        plan.class_b = made.class_b + reads;
        plan.class_a = made.class_a + plan.requests_planned.saturating_sub(reads);
        Ok(plan)
    }

    /// The remote manifest, checked for paths pqsync never writes.
    async fn read_remote(&self) -> Result<Option<RemoteManifest>> {
        let remote = self.remote.read_manifest().await?;
        self.checked_remote(remote)
    }

    /// `remote`, checked for paths pqsync never writes.
    fn checked_remote(&self, remote: Option<RemoteManifest>) -> Result<Option<RemoteManifest>> {
        if let Some(r) = &remote {
            refuse_reserved_paths(&r.manifest, self.remote.url())?;
        }
        Ok(remote)
    }

    /// A remote without a manifest. When the source holds a base for it,
    /// the remote lost its data (a wiped prefix, a deleted manifest); it did
    /// not delete the files: a push sends everything again (returning the
    /// warning that says so), and every other run stops before it could
    /// delete anything. Without a base it is new: an error where a manifest
    /// is required.
    ///
    /// # Errors
    /// [`Error::RemoteLost`], [`Error::NotManaged`] or
    /// [`Error::BucketNotFound`].
    async fn no_remote_manifest(
        &self,
        compare: &Compare,
        view: &mut SourceView,
    ) -> Result<Option<String>> {
        let url = self.remote.url().to_string();
        let known = view.base.as_ref().map_or(0, |b| b.len());
        if known == 0 {
            if compare.require_remote {
                self.remote.check_bucket().await?;
                return Err(Error::NotManaged { url });
            }
            return Ok(None);
        }
        self.remote.check_bucket().await?;
        if self.mode == Mode::Push && !compare.require_remote {
            // Nothing the base says was deleted remotely: every file goes
            // again, by first-sync rules.
            view.base = None;
            return Ok(Some(format!(
                "{url} has no manifest, though this directory last synced {known} files with it: the remote lost its data; sending every file again"
            )));
        }
        Err(Error::RemoteLost { url, known })
    }

    /// The uploads an interrupted run completed that may be committed
    /// without sending them again: those sent while the remote manifest
    /// had the commit id it has now; any other (a remote wiped, rebuilt or
    /// committed to since, or one without a manifest at all) only if a HEAD
    /// finds the object still carrying that content.
    async fn checked_journal(
        &self,
        journal: Vec<JournalEntry>,
        remote: Option<&RemoteManifest>,
        view: &SourceView,
    ) -> HashSet<(String, String)> {
        let now = remote.and_then(|r| r.manifest.commit_id.as_deref());
        let candidates: Vec<(JournalEntry, &crate::manifest::FileEntry)> = journal
            .into_iter()
            .filter_map(|j| {
                let e = view.files.get(&j.path)?;
                (e.tagged_hash() == j.tagged).then_some((j, e))
            })
            .collect();
        futures::stream::iter(candidates)
            .map(|(j, e)| async move {
                // A snapshot tree's objects may be pruned between runs: its
                // journal is always checked against the store.
                let trusted = (now.is_some() || view.journal_trusted)
                    && j.against.as_deref() == now
                    && !self.remote.keeps_versions();
                (trusted || self.remote.has_content(e).await).then_some((j.path, j.tagged))
            })
            .buffer_unordered(self.opts.concurrency)
            .filter_map(|x| async move { x })
            .collect()
            .await
    }

    /// The algorithm to compare in: an existing remote's wins, since
    /// switching would make every file look different; the option applies
    /// to new remotes. Returns a warning when the two disagree.
    fn algorithm(&self, remote: Option<&RemoteManifest>) -> (HashAlgorithm, Option<String>) {
        let remote_alg = remote.and_then(|r| r.manifest.hash_algorithm());
        match (remote_alg, self.opts.hash) {
            (Some(r), Some(asked)) if r != asked => (
                r,
                Some(format!(
                    "{} is hashed with {r}; comparing in {r} ({asked} applies to new remotes only)",
                    self.remote.url()
                )),
            ),
            (Some(r), _) => (r, None),
            (None, asked) => (asked.unwrap_or_default(), None),
        }
    }

    /// The 3-way diff of the source and the remote against the base, cut
    /// down to the selection. A base hashed with another algorithm cannot
    /// be compared with, and is dropped.
    fn diff(
        &self,
        view: &mut SourceView,
        remote: Option<&RemoteManifest>,
        algorithm: HashAlgorithm,
    ) -> Diff3 {
        let same_alg = |b: &std::collections::BTreeMap<String, crate::manifest::FileEntry>| {
            b.values().all(|e| e.hash_algorithm == algorithm)
        };
        if view.base.as_ref().is_some_and(|b| !same_alg(b)) {
            view.base = None;
        }
        let empty = std::collections::BTreeMap::new();
        let remote_files = remote.map_or(&empty, |r| &r.manifest.files);
        let base = if view.base_is_remote {
            Some(remote_files).filter(|b| same_alg(b))
        } else {
            view.base.as_ref()
        };
        let mut diff = diff3(&view.files, remote_files, base);
        if !view.left_out.is_empty() {
            // A path that could not be read is neither sent nor taken for
            // deleted: it stays out of the run, like an unselected one.
            let readable = |p: &str| !view.left_out.iter().any(|l| l.covers(p));
            diff.changed.retain(|d| readable(&d.path));
            diff.unchanged.retain(|p| readable(p));
        }
        if let Some(shard) = self.opts.shard {
            // Another shard's paths are another run's: neither sent nor
            // deleted here.
            diff.changed.retain(|d| shard.contains(&d.path));
            diff.unchanged.retain(|p| shard.contains(p));
        }
        let selection = &self.opts.selection;
        if !selection.is_all() {
            // Outside the selection nothing moves and nothing is deleted.
            diff.changed.retain(|d| selection.contains(&d.path));
            diff.unchanged.retain(|p| selection.contains(p));
        }
        diff
    }

    /// A warning for each `--namespaces` name that matches no namespace on
    /// either side.
    fn unmatched_namespaces(
        &self,
        view: &SourceView,
        remote: Option<&RemoteManifest>,
    ) -> Vec<String> {
        let remote_paths = remote
            .into_iter()
            .flat_map(|r| r.manifest.files.keys())
            .map(String::as_str);
        let paths = view.files.keys().map(String::as_str).chain(remote_paths);
        self.opts
            .selection
            .unmatched_namespaces(paths)
            .into_iter()
            .map(|ns| format!("namespace {ns:?} matches no file on either side; nothing of it is moved (check the spelling)"))
            .collect()
    }

    /// Of the requests executing `plan` will make, the reads R2 bills as
    /// class B: the source's GET per upload, a GET per download, and the
    /// manifest read again and the HEAD per object before deletions. The
    /// rest are priced as class A (DELETEs, which R2 does not bill, too).
    fn estimate_reads(&self, plan: &Plan) -> u64 {
        let mut n: u64 = plan
            .uploads
            .iter()
            .map(|e| self.source.upload_requests(e, &self.remote).0)
            .sum::<u64>()
            + plan.downloads.len() as u64;
        if !plan.delete_remote.is_empty() {
            n += 1;
            if self.remote.keeps_attributes() {
                n += plan.delete_remote.len() as u64;
            }
        }
        n
    }

    /// Requests executing `plan` will make.
    fn estimate(&self, plan: &Plan) -> u64 {
        let mut n: u64 = plan
            .uploads
            .iter()
            .map(|e| self.source.upload_requests(e, &self.remote).1)
            .sum();
        n += plan.downloads.len() as u64;
        if !plan.delete_remote.is_empty() {
            // The announcement of the deletions (a PUT, and a DELETE once
            // they are made), the manifest read again before deleting, and
            // a HEAD per object where the store keeps pqsync's hash
            // metadata.
            n += 3 + StoreTree::delete_requests(plan.delete_remote.len() as u64);
            if self.remote.keeps_attributes() {
                n += plan.delete_remote.len() as u64;
            }
        }
        if self.opts.trash.keeps() {
            // A server-side COPY into the trash per committed object an
            // upload replaces or a deletion removes, and one delimited LIST
            // to expire old runs when anything was kept.
            let remote = plan.remote.as_ref().map(|r| &r.manifest.files);
            let replaced = plan
                .uploads
                .iter()
                .filter(|e| remote.is_some_and(|f| f.contains_key(&e.path)))
                .count() as u64;
            let kept = replaced + plan.delete_remote.len() as u64;
            if kept > 0 {
                n += kept + 1;
            }
        }
        if plan.needs_commit {
            n += 1;
        }
        if plan.writes_remote() {
            // The LIST of other runs' announced deletions.
            n += 1;
            n += guard::guard_requests(self.source.as_ref(), self.opts.force);
        }
        n
    }
}

/// A remote manifest read before the plan, under the run lock taken for
/// it.
struct PreRead {
    remote: Option<RemoteManifest>,
    lock: Option<crate::tree::RunLock>,
    /// The manifest was rebuilt from the base, so the base need not be
    /// read again: it is this manifest's file list.
    rebuilt: bool,
}

/// A status report from a plan made for one.
fn status_report(mut plan: Plan) -> StatusReport {
    let mut diff = StatusDiff {
        conflicts: std::mem::take(&mut plan.conflicts),
        unchanged: std::mem::take(&mut plan.unchanged),
        ..StatusDiff::default()
    };
    diff.unchanged_count = diff.unchanged.len();
    for d in std::mem::take(&mut plan.diff) {
        match d.change {
            Change::Upload => diff.to_upload.extend(d.local.map(|b| *b)),
            Change::Download => diff.to_download.extend(d.remote.map(|b| *b)),
            Change::DeleteRemote => diff.deleted_locally.push(d.path),
            Change::DeleteLocal => diff.deleted_remotely.push(d.path),
            Change::Unchanged | Change::Conflict => {}
        }
    }
    let is_synced = diff.to_upload.is_empty()
        && diff.to_download.is_empty()
        && diff.conflicts.is_empty()
        && diff.deleted_locally.is_empty()
        && diff.deleted_remotely.is_empty()
        && plan.already_sent.is_empty();
    let remote = plan.remote.as_ref().map(|r| &r.manifest);
    let remote_synced_at = remote.map(|m| m.last_synced_at.clone());
    let remote_last_segment =
        remote.and_then(|m| m.files.keys().filter_map(|p| segment_seq(p)).max());
    StatusReport {
        is_synced,
        diff,
        resumable: plan.already_sent.iter().map(|e| e.path.clone()).collect(),
        interrupted: std::mem::take(&mut plan.interrupted),
        requests: 0,
        files_hashed: plan.view.files_hashed,
        warnings: std::mem::take(&mut plan.warnings),
        remote_synced_at,
        remote_last_segment,
        ignored: std::mem::take(&mut plan.view.ignored),
    }
}
