//! Carrying out a plan, phase by phase.
//!
//! 1. **guard**: find out how the remote's commits are protected, and take
//!    the lease where they need one;
//! 2. **abandoned uploads**: abort multipart uploads an earlier run left for
//!    content this run no longer sends;
//! 3. **data files**: concurrent, verified, retried transfers;
//! 4. **nested manifests** (`manifest.json`, `_manifest.json`), deepest
//!    first, each only if everything in its subtree arrived;
//! 5. **commit** the remote manifest, only if every transfer succeeded;
//! 6. **remote deletions**, only after the commit;
//! 7. **settle** the source: local deletions, local manifest, base, journal;
//! 8. **release** the lease and report.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use futures::StreamExt;

use super::commit::{apply, overlap, Changes};
use super::diff::Resolution;
use super::guard::Guard;
use super::mode::Mode;
use super::plan::{Conflict, Plan};
use super::report::{FileError, SyncResult};
use super::shard::{staging_dir, write_record, Shard};
use super::source::{fresh_manifest, Settle};
use super::transfer::{Dir, Moved, Run};
use super::Engine;
use crate::error::{Error, Result};
use crate::layout::{is_nested_manifest, MANIFEST_PATH};
use crate::manifest::{now_iso, FileEntry, Manifest};
use crate::runtime::{Event, Operation};
use crate::tree::{Announced, CommitMode, FileStat, RemoteManifest, Side};

/// How many times a commit is retried when other writers keep winning the
/// compare-and-swap.
const COMMIT_ATTEMPTS: u32 = 8;

/// Files to move, each with its direction.
/// Borrowed from the plan: an entry is copied only once its transfer has
/// succeeded, into the outcome.
type Jobs<'p> = Vec<(Dir, usize, &'p FileEntry)>;

/// What the run has done so far.
#[derive(Default)]
struct Outcome {
    uploaded: Vec<FileEntry>,
    /// Uploads of the plan that succeeded (by index), with the ETag the
    /// store gave each: moved into `uploaded` once the transfers are over,
    /// so that no upload is held twice.
    sent: Vec<(usize, Option<String>)>,
    downloaded: Vec<(FileEntry, FileStat)>,
    deleted: Vec<String>,
    errors: Vec<FileError>,
    /// Paths whose transfer failed (a nested manifest above them is held
    /// back).
    failed: Vec<String>,
    committed: bool,
    /// Warnings of the run (deletions left alone).
    warnings: Vec<String>,
    /// The latest remote manifest this run knows of: the plan's, then each
    /// one it commits.
    latest: Option<Arc<RemoteManifest>>,
    /// Remote deletions already made to clear the way for uploads.
    cleared: Vec<String>,
    /// Local deletions already made to clear the way for downloads.
    cleared_local: Vec<String>,
    /// The remote manifest's commit id after the run.
    remote_commit: Option<String>,
}

impl Outcome {
    /// The remote's files after the run: those of the latest manifest.
    fn remote_files(&self) -> &BTreeMap<String, FileEntry> {
        static EMPTY: BTreeMap<String, FileEntry> = BTreeMap::new();
        self.latest.as_ref().map_or(&EMPTY, |r| &r.manifest.files)
    }
}

impl Engine {
    /// Carries out a plan this engine made. Transfers run concurrently; the
    /// remote manifest is committed only if all of them succeeded;
    /// deletions follow the commit.
    ///
    /// Per-file failures are collected in [`SyncResult::errors`] rather than
    /// returned as `Err`.
    ///
    /// # Errors
    /// [`Error::ForeignPlan`] for a plan another engine made; otherwise only
    /// failures that stop the whole run, such as an unwritable state
    /// directory or a remote held by another writer's lease.
    pub async fn execute(&self, plan: Plan) -> Result<SyncResult> {
        if plan.engine != self.id {
            return Err(Error::ForeignPlan);
        }
        let _lock = self.source.lock()?;
        self.opts.congestion.configure(self.opts.concurrency);
        let run = Run {
            engine: self,
            processed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            total: plan.operations(),
            bytes_total: plan.bytes_up() + plan.bytes_down(),
            run_name: crate::tree::trash::run_name(std::time::SystemTime::now()),
            kept: Default::default(),
            overwritten: Default::default(),
            stage: self
                .opts
                .shard
                .filter(|_| !self.remote.keeps_versions())
                .map(|s| self.remote.state_tree(&staging_dir(s))),
        };
        let result = run.execute(plan).await;
        self.source.finished();
        result
    }
}

impl Run<'_> {
    async fn execute(&self, mut plan: Plan) -> Result<SyncResult> {
        if let Some(shard) = self.engine.opts.shard {
            return self.execute_shard(plan, shard).await;
        }
        let guard = self.guard(&plan).await?;
        let engine = self.engine;
        // Only a run that sends may decide an earlier upload is abandoned;
        // a pull leaves an interrupted push's progress for the next push.
        if plan.mode.sends() {
            engine
                .source
                .abort_abandoned(&engine.remote, &plan.uploads)
                .await;
        }
        let mut out = Outcome {
            latest: plan.remote.clone(),
            remote_commit: plan
                .remote
                .as_ref()
                .and_then(|r| r.manifest.commit_id.clone()),
            ..Outcome::default()
        };
        // A snapshot tree deletes nothing: a path missing from the new
        // snapshot is simply not listed in it.
        let deletes_objects = !engine.remote.keeps_versions();
        if plan.writes_remote() && deletes_objects {
            self.finish_announced(guard.listing.as_deref(), &plan, &mut out)
                .await;
        }
        let announced = deletes_objects && self.announce_deletions(&plan, &mut out).await;
        self.clear_the_way(&plan, &guard, &mut out).await;
        let (manifests, data) = self.jobs(&plan);
        self.transfer_all(data, &plan, &mut out).await;
        self.transfer_manifests(manifests, &plan, &mut out).await;
        self.take_sent(&mut plan, &mut out);
        if out.errors.is_empty() && !plan.view.staged.is_empty() {
            self.unstage(&plan, &mut out).await;
        }
        let all_ok = out.errors.is_empty();
        let committed = all_ok && plan.needs_commit && self.commit(&plan, &guard, &mut out).await;
        if let (true, Some(count)) = (committed, plan.view.shards) {
            self.clear_staged(count).await;
        }
        let clean_run = all_ok && (committed || !plan.needs_commit);
        if plan.needs_commit && !committed && deletes_objects {
            self.put_back(&plan, &mut out).await;
        }
        if committed && deletes_objects {
            let rest: Vec<String> = plan
                .delete_remote
                .iter()
                .filter(|p| !out.cleared.contains(p))
                .cloned()
                .collect();
            self.delete_remote(&plan, &rest, &mut out).await;
        }
        // An announcement stays until every deletion it names is made, so
        // a later run finishes what this one could not.
        let all_deleted = plan.delete_remote.iter().all(|p| out.deleted.contains(p));
        if announced && (all_deleted || !committed) {
            engine.remote.withdraw_deletions(&self.run_name).await;
        }
        let settled = self.settle(&plan, clean_run, &mut out, None).await;
        self.expire_trash(&mut out).await;
        // The lease goes whatever happened to the local state.
        guard.release().await;
        settled?;
        Ok(self.result(plan, out))
    }

    /// One shard of a split push or mirror: the shard's uploads, and then, if all
    /// of them succeeded, its record instead of a commit. No lease (the
    /// merge takes it), no deletion (the merge makes them).
    async fn execute_shard(&self, mut plan: Plan, shard: Shard) -> Result<SyncResult> {
        let engine = self.engine;
        engine
            .source
            .abort_abandoned(&engine.remote, &plan.uploads)
            .await;
        let against = plan
            .remote
            .as_ref()
            .and_then(|r| r.manifest.commit_id.clone());
        let mut out = Outcome {
            latest: plan.remote.clone(),
            remote_commit: against.clone(),
            ..Outcome::default()
        };
        let (manifests, data) = self.jobs(&plan);
        self.transfer_all(data, &plan, &mut out).await;
        self.transfer_manifests(manifests, &plan, &mut out).await;
        self.take_sent(&mut plan, &mut out);
        let mut clean = out.errors.is_empty();
        let mut recorded = None;
        if clean {
            // The record holds the shard's paths as the remote would hold
            // them had this run committed: its uploads and deletions over
            // the manifest it planned against, and everything it left
            // alone (another writer's change, an unreadable file, a held
            // back conflict) as it was.
            let mut ours: Changes = out
                .uploaded
                .iter()
                .map(|e| (e.path.as_str(), Some(e)))
                .collect();
            for p in &plan.delete_remote {
                ours.insert(p, None);
            }
            let before: BTreeMap<String, FileEntry> = plan
                .remote
                .iter()
                .flat_map(|r| &r.manifest.files)
                .filter(|(p, _)| shard.contains(p))
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect();
            let after = apply(&before, &ours);
            drop(ours);
            let staged: Vec<String> = out
                .uploaded
                .iter()
                .filter(|e| self.staged_at(e, &plan).is_some())
                .map(|e| e.path.clone())
                .collect();
            let written = if engine.remote.keeps_versions() {
                // A split backup: the shard's part of the snapshot, in the
                // repository.
                let current = plan.remote.as_ref().map(|r| &r.manifest);
                let part = self.remote_manifest(&plan, current, after.clone());
                engine
                    .opts
                    .retry
                    .run(
                        || engine.remote.record_shard(shard.index, shard.count, &part),
                        |n, e| self.retrying(MANIFEST_PATH, n, e),
                    )
                    .await
            } else {
                engine
                    .opts
                    .retry
                    .run(
                        || {
                            write_record(
                                &engine.remote,
                                shard,
                                against.clone(),
                                plan.view.manifest.as_ref(),
                                &after,
                                &plan.view.left_out,
                                staged.clone(),
                            )
                        },
                        |n, e| self.retrying(MANIFEST_PATH, n, e),
                    )
                    .await
            };
            match written {
                Ok(()) => recorded = Some(after),
                Err(e) => {
                    clean = false;
                    out.errors.push(FileError::new(
                        MANIFEST_PATH,
                        "commit",
                        format!("the shard record could not be written: {e}"),
                    ));
                }
            }
        }
        // A shard never commits: a clean run still clears its journal.
        let settled = self.settle(&plan, clean, &mut out, recorded.as_ref()).await;
        settled?;
        Ok(self.result(plan, out))
    }

    /// A merge's staged files: each is copied into place inside the store
    /// (the version it replaces kept in the trash first, and put back if
    /// the commit does not happen). A staged object already gone counts as
    /// copied when the object in place holds its content already.
    async fn unstage(&self, plan: &Plan, out: &mut Outcome) {
        let engine = self.engine;
        let remote = &engine.remote;
        let jobs = staged_to_commit(plan);
        let mut done = futures::stream::iter(jobs)
            .map(|(e, dir)| async move {
                let staging = remote.state_tree(dir);
                if let Err(err) = self.keep_replaced(e, plan).await {
                    return (e, Err(err));
                }
                let copied = engine
                    .opts
                    .retry
                    .run(
                        || remote.copy_from(&staging, e),
                        |n, err| self.retrying(&e.path, n, err),
                    )
                    .await;
                let copied = match copied {
                    Err(Error::Store {
                        source: object_store::Error::NotFound { .. },
                        ..
                    }) if remote.has_content(e).await => Ok(()),
                    Err(Error::Store {
                        source: object_store::Error::NotFound { .. },
                        ..
                    }) => Err(Error::Shards {
                        reason: format!(
                            "{}: the shard's staged copy is gone; run that shard again, then merge",
                            e.path
                        ),
                    }),
                    other => other,
                };
                (e, copied)
            })
            .buffer_unordered(engine.opts.concurrency.max(1));
        while let Some((e, r)) = done.next().await {
            match r {
                Ok(()) => self.done(&e.path, Operation::Uploading, 0),
                Err(err) => out.errors.push(FileError::new(&e.path, "upload", err)),
            }
        }
    }

    /// Removes everything in the staging folders of a merged split of
    /// `count` shards (one LIST each): what it copied into place, and what
    /// an earlier run of a shard staged that no record names any more.
    /// Best effort: what is left is overwritten or removed by the next
    /// split.
    async fn clear_staged(&self, count: u32) {
        for index in 0..count {
            let staging = self
                .engine
                .remote
                .state_tree(&staging_dir(Shard { index, count }));
            let Ok(objects) = staging.list_objects().await else {
                continue;
            };
            let paths: Vec<String> = objects.into_keys().collect();
            if paths.is_empty() {
                continue;
            }
            if let Err(failed) = staging.delete_many(&paths).await {
                for (p, e) in failed {
                    tracing::warn!("{p}: a staged copy was not removed: {e}");
                }
            }
        }
    }

    /// Phase 2a: a run that deletes remote files announces them before it
    /// commits, so a manifest rebuild meanwhile does not add them back
    /// (withdrawn after the deletions). Returns whether it announced any;
    /// if the announcement fails, the run commits nothing.
    async fn announce_deletions(&self, plan: &Plan, out: &mut Outcome) -> bool {
        if plan.delete_remote.is_empty() {
            return false;
        }
        let remote = &self.engine.remote;
        let files: Vec<Announced> = plan
            .delete_remote
            .iter()
            .filter_map(|p| {
                let e = plan.remote.as_ref()?.manifest.files.get(p)?;
                Some(Announced {
                    path: p.clone(),
                    hash: e.tagged_hash(),
                })
            })
            .collect();
        let r = self
            .engine
            .opts
            .retry
            .run(
                || remote.announce_deletions(&self.run_name, &files),
                |n, e| self.retrying(MANIFEST_PATH, n, e),
            )
            .await;
        match r {
            Ok(()) => true,
            Err(e) => {
                out.errors.push(FileError::new(
                    MANIFEST_PATH,
                    "commit",
                    format!("the deletions could not be announced: {e}"),
                ));
                false
            }
        }
    }

    /// Phase 2a, first: deletions another run announced, committed and did
    /// not finish (it was killed) are made now, so their objects are not in
    /// the way of this run's uploads (on a directory remote, a file where a
    /// folder is needed). Only paths the manifest no longer names, and only
    /// objects still holding the announced version, are deleted (kept in the
    /// trash first); an announcement with nothing left to do is removed.
    /// One LIST when there is nothing to finish.
    async fn finish_announced(
        &self,
        listing: Option<&[crate::tree::store::StateObject]>,
        plan: &Plan,
        out: &mut Outcome,
    ) {
        let remote = &self.engine.remote;
        let announced = match remote.pending_deletions(listing).await {
            Ok(a) => a,
            Err(e) => {
                out.warnings
                    .push(format!("announced deletions were not read: {e}"));
                return;
            }
        };
        // What this run commits without sending it again (a merge's
        // shards sent it, in place) is as good as named: an earlier run's
        // announced deletion of the same content must not take it.
        let sent: HashSet<&str> = plan.already_sent.iter().map(|e| e.path.as_str()).collect();
        let named = |p: &str| {
            sent.contains(p)
                || out
                    .latest
                    .as_ref()
                    .is_some_and(|r| r.manifest.files.contains_key(p))
        };
        for (run, files) in announced {
            if run == self.run_name {
                continue;
            }
            // A path the manifest still names belongs to a run that has not
            // committed (it may be running now): its announcement stays,
            // unless it is older than the trash's retention.
            let old = crate::tree::trash::expired(
                &run,
                self.engine.opts.trash_retention,
                std::time::SystemTime::now(),
            );
            let mut unsettled = !old && files.iter().any(|f| named(&f.path));
            let mut doomed = Vec::new();
            for f in files.iter().filter(|f| !named(&f.path)) {
                if self.holds(&f.path, &f.hash).await != Some(true) {
                    continue; // gone, or another version now: not ours
                }
                // Not kept, so not deleted.
                if self.engine.opts.trash.keeps() && self.keep_remote(&f.path).await.is_err() {
                    unsettled = true;
                } else {
                    doomed.push(f.path.clone());
                }
            }
            if remote.delete_many(&doomed).await.is_err() {
                continue;
            }
            if !doomed.is_empty() {
                out.warnings.push(format!(
                    "finished {} deletion(s) an interrupted run had committed",
                    doomed.len()
                ));
            }
            if !unsettled {
                remote.withdraw_deletions(&run).await;
            }
        }
    }

    /// Whether the object at `path` holds the version tagged `hash`: by its
    /// stored hash where objects carry one, else by reading it. `None` when
    /// there is no object.
    async fn holds(&self, path: &str, hash: &str) -> Option<bool> {
        let remote = &self.engine.remote;
        let (size, stored) = remote.head_hash(path).await.ok()?;
        if remote.keeps_attributes() {
            return Some(stored.as_deref() == Some(hash));
        }
        let (alg, _) = hash.split_once(':')?;
        let alg: crate::manifest::HashAlgorithm = alg.parse().ok()?;
        let h = crate::tree::Tree::hash(remote, path, size, alg, 0, false)
            .await
            .ok()?;
        Some(format!("{alg}:{}", h.digest) == hash)
    }

    /// Phase 1: the guard, where the plan writes to the remote.
    async fn guard(&self, plan: &Plan) -> Result<Guard> {
        if !plan.writes_remote() {
            return Ok(Guard::none());
        }
        let engine = self.engine;
        let token = format!("{:032x}", rand::random::<u128>());
        engine
            .opts
            .retry
            .run(
                || {
                    Guard::take(
                        engine.source.as_ref(),
                        &engine.remote,
                        &token,
                        engine.opts.force,
                    )
                },
                |n, e| self.retrying(MANIFEST_PATH, n, e),
            )
            .await
    }

    /// The plan's transfers: nested manifests apart from the data files.
    fn jobs<'p>(&self, plan: &'p Plan) -> (Jobs<'p>, Jobs<'p>) {
        let up = plan
            .uploads
            .iter()
            .enumerate()
            .map(|(i, e)| (Dir::Up, i, e));
        let down = plan
            .downloads
            .iter()
            .enumerate()
            .map(|(i, e)| (Dir::Down, i, e));
        up.chain(down)
            .partition(|(_, _, e)| is_nested_manifest(&e.path))
    }

    /// Moves the plan's uploads that succeeded into the outcome, each with
    /// the ETag the store gave it. The plan's list is spent.
    fn take_sent(&self, plan: &mut Plan, out: &mut Outcome) {
        if !plan.mode.fetches() {
            // The stats guard reads and writes of local files; a run that
            // only sends has made its last read.
            plan.view.stats = Default::default();
        }
        let mut sent = std::mem::take(&mut out.sent);
        sent.sort_unstable_by_key(|(i, _)| *i);
        let mut sent = sent.into_iter().peekable();
        // Filtered in place: at a million uploads a second list would be
        // another 150 MB.
        let mut uploads = std::mem::take(&mut plan.uploads);
        let mut i = 0;
        uploads.retain_mut(|e| {
            let kept = sent.next_if(|(j, _)| *j == i).map(|(_, etag)| {
                // The remote manifest names the object by the store's
                // ETag, as a manifest built from the store's listing would.
                if etag.is_some() {
                    e.etag = etag;
                }
            });
            i += 1;
            kept.is_some()
        });
        uploads.reserve_exact(plan.already_sent.len());
        uploads.extend(plan.already_sent.iter().cloned());
        if out.uploaded.is_empty() {
            out.uploaded = uploads;
        } else {
            out.uploaded.append(&mut uploads);
        }
    }

    /// Phase 3: the data files, concurrently, each filed into the outcome
    /// as it finishes.
    async fn transfer_all(&self, jobs: Jobs<'_>, plan: &Plan, out: &mut Outcome) {
        let mut done = std::pin::pin!(self.transfer_stream(jobs, plan));
        while let Some((dir, i, e, r)) = done.next().await {
            self.collect(dir, i, e, r, out);
        }
    }

    /// Phase 4: nested manifests, deepest first. A nested manifest must
    /// never describe files that failed to arrive: it is held back when
    /// anything in its subtree failed, including a deeper manifest.
    async fn transfer_manifests(&self, manifests: Jobs<'_>, plan: &Plan, out: &mut Outcome) {
        let mut by_depth: BTreeMap<std::cmp::Reverse<usize>, Jobs<'_>> = BTreeMap::new();
        for (dir, i, e) in manifests {
            let depth = std::cmp::Reverse(e.path.matches('/').count());
            by_depth.entry(depth).or_default().push((dir, i, e));
        }
        for (_, group) in by_depth {
            let mut ready = Vec::new();
            for (dir, i, e) in group {
                let subtree = e.path.rsplit_once('/').map_or("", |(d, _)| d);
                let blocked = out
                    .failed
                    .iter()
                    .any(|f| subtree.is_empty() || f.starts_with(&format!("{subtree}/")));
                if blocked {
                    out.errors.push(FileError::new(
                        &e.path,
                        dir.operation_name(),
                        "held back: files it describes failed to transfer",
                    ));
                    out.failed.push(e.path.clone());
                } else {
                    ready.push((dir, i, e));
                }
            }
            self.transfer_all(ready, plan, out).await;
        }
    }

    /// Files a finished transfer into the outcome.
    fn collect(&self, dir: Dir, i: usize, e: &FileEntry, r: Result<Moved>, out: &mut Outcome) {
        match r {
            Ok(Moved::Up { etag }) => out.sent.push((i, etag)),
            Ok(Moved::Down(stat)) => out.downloaded.push((e.clone(), stat)),
            Err(err) => {
                self.engine.reporter.event(&Event::Failed {
                    path: e.path.clone(),
                    error: err.to_string(),
                });
                out.failed.push(e.path.clone());
                out.errors
                    .push(FileError::new(&e.path, dir.operation_name(), err));
            }
        }
    }

    /// Phase 5: commits this run's changes, retried as a whole, without
    /// overwriting another writer's commit.
    async fn commit(&self, plan: &Plan, guard: &Guard, out: &mut Outcome) -> bool {
        let uploaded = std::mem::take(&mut out.uploaded);
        let mut ours: Changes = uploaded
            .iter()
            .map(|e| (e.path.as_str(), Some(e)))
            .collect();
        for p in &plan.delete_remote {
            ours.insert(p, None);
        }
        let committed = self.commit_changes(plan, guard, &ours, out).await;
        drop(ours);
        out.uploaded = uploaded;
        match committed {
            Ok(()) => true,
            Err(e) => {
                out.errors.push(FileError::new(MANIFEST_PATH, "commit", e));
                false
            }
        }
    }

    /// Phase 2b: what an upload or a download needs out of its way (a file
    /// that became a directory, or a directory that became a file) is
    /// deleted first. On the remote that deletion is committed on its own
    /// before any upload, so the manifest never names an object that is
    /// not there, whatever happens next; locally the file is deleted (if
    /// it is still the version the scan saw) before the downloads.
    async fn clear_the_way(&self, plan: &Plan, guard: &Guard, out: &mut Outcome) {
        let mut remote = in_the_way(&plan.delete_remote, &plan.uploads);
        // A merge's staged files are copied into place like uploads.
        let staged: Vec<FileEntry> = staged_to_commit(plan)
            .into_iter()
            .map(|(e, _)| e.clone())
            .collect();
        remote.extend(in_the_way(&plan.delete_remote, &staged));
        remote.sort_unstable();
        remote.dedup();
        // Not if the deletions could not be announced; never on a snapshot
        // tree, whose objects are not at the files' paths.
        if !remote.is_empty() && out.errors.is_empty() && !self.engine.remote.keeps_versions() {
            let ours: Changes = remote.iter().map(|p| (p.as_str(), None)).collect();
            match self.commit_changes(plan, guard, &ours, out).await {
                Ok(()) => {
                    self.delete_remote(plan, &remote, out).await;
                    out.cleared = remote;
                }
                Err(e) => out.errors.push(FileError::new(MANIFEST_PATH, "commit", e)),
            }
        }
        let local = in_the_way(&plan.delete_local, &plan.downloads);
        if !local.is_empty() {
            let on_deleted = |p: &str| self.done(p, Operation::Deleting, 0);
            let keep = self.local_keep();
            let (deleted, errors) =
                self.engine
                    .source
                    .delete_now(&local, &plan.view, keep, &on_deleted);
            if let Some(run) = keep {
                for p in &deleted {
                    self.kept_local(p, run);
                }
            }
            out.deleted.extend(deleted.iter().cloned());
            out.cleared_local = deleted;
            out.errors.extend(errors);
        }
    }

    /// Commits `ours` on top of the latest manifest this run knows of,
    /// retried as a whole, and records what was committed.
    async fn commit_changes(
        &self,
        plan: &Plan,
        guard: &Guard,
        ours: &Changes<'_>,
        out: &mut Outcome,
    ) -> Result<()> {
        let start = out.latest.clone();
        let committed = self
            .engine
            .opts
            .retry
            .run(
                || {
                    self.commit_once(
                        plan,
                        start.clone(),
                        ours,
                        guard.conditional,
                        guard.exclusive(plan.remote.as_ref().and_then(|r| r.etag.as_deref())),
                    )
                },
                |n, e| self.retrying(MANIFEST_PATH, n, e),
            )
            .await?;
        out.committed = true;
        out.remote_commit = committed.manifest.commit_id.clone();
        out.latest = Some(committed);
        Ok(())
    }

    /// One commit attempt: writes the manifest with compare-and-swap (or,
    /// without it, directly while this run's lease is fresh, else after a
    /// re-read and followed by a read-back), merging other writers'
    /// commits that do not overlap this run's changes.
    /// Returns the files the committed manifest lists, and its commit id.
    async fn commit_once(
        &self,
        plan: &Plan,
        start: Option<Arc<RemoteManifest>>,
        ours: &Changes<'_>,
        conditional: bool,
        exclusive: bool,
    ) -> Result<Arc<RemoteManifest>> {
        let remote = &self.engine.remote;
        let nonce = format!("{:032x}", rand::random::<u128>());
        let mut seen = start;
        for _ in 0..COMMIT_ATTEMPTS {
            let checked = !conditional && !exclusive;
            if checked {
                // Without a fresh lease: pick up whatever was committed
                // since the plan (an expired lease, a --force writer)
                // before writing.
                let now = remote.read_manifest().await?.map(Arc::new);
                seen = self.merge_point(seen, now, ours)?;
            }
            let empty = BTreeMap::new();
            let files = apply(seen.as_ref().map_or(&empty, |r| &r.manifest.files), ours);
            let mut manifest =
                self.remote_manifest(plan, seen.as_ref().map(|r| &r.manifest), files);
            manifest.seal_commit(&nonce);
            let commit_id = manifest.commit_id.clone().expect("sealed");
            // Never write a manifest no reader could load (a path listed as
            // a file and as a directory, ...).
            manifest.validate(&remote.display_path(MANIFEST_PATH))?;
            let mode = match (&seen, conditional) {
                (_, false) => CommitMode::Overwrite,
                (None, true) => CommitMode::Create,
                (Some(r), true) => match &r.etag {
                    Some(etag) => CommitMode::Update(etag.clone()),
                    None => CommitMode::Overwrite,
                },
            };
            match remote.write_manifest(&manifest, mode).await {
                Ok(etag) => {
                    if checked {
                        self.check_read_back(&commit_id).await?;
                    }
                    return Ok(Arc::new(RemoteManifest { manifest, etag }));
                }
                Err(Error::Precondition { .. }) => {
                    let now = remote.read_manifest().await?.map(Arc::new);
                    seen = self.merge_point(seen, now, ours)?;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::CommitContention {
            url: remote.url().to_string(),
            attempts: COMMIT_ATTEMPTS,
        })
    }

    /// Under a lease: reads the manifest back to check this run's commit is
    /// the one that stuck.
    async fn check_read_back(&self, commit_id: &str) -> Result<()> {
        let remote = &self.engine.remote;
        let stuck = remote.read_commit_id().await?;
        if stuck.as_deref() == Some(commit_id) {
            return Ok(());
        }
        Err(Error::RemoteChanged {
            operation: self.engine.mode.verb(),
            url: remote.url().to_string(),
            paths: vec![format!(
                "the manifest (another writer's commit replaced this run's, id {commit_id})"
            )],
        })
    }

    /// Moves the commit's starting point from `seen` to `now`, the manifest
    /// another writer committed, if their changes and ours do not overlap.
    fn merge_point(
        &self,
        seen: Option<Arc<RemoteManifest>>,
        now: Option<Arc<RemoteManifest>>,
        ours: &Changes<'_>,
    ) -> Result<Option<Arc<RemoteManifest>>> {
        let url = self.engine.remote.url();
        let empty = BTreeMap::new();
        let seen_files = seen.as_ref().map_or(&empty, |r| &r.manifest.files);
        let now_files = now.as_ref().map_or(&empty, |r| &r.manifest.files);
        let clash = overlap(seen_files, now_files, ours);
        if !clash.is_empty() {
            return Err(Error::RemoteChanged {
                operation: self.engine.mode.verb(),
                url: url.to_string(),
                paths: clash,
            });
        }
        let moved = match (&seen, &now) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(s), Some(n)) => s.manifest.files != n.manifest.files,
        };
        if moved {
            self.engine.reporter.event(&Event::Warning(format!(
                "{url} changed during this run; merged the other writer's commit"
            )));
        }
        Ok(now)
    }

    /// The manifest to commit: the identity of `current` (or the source's),
    /// with `files`.
    fn remote_manifest(
        &self,
        plan: &Plan,
        current: Option<&Manifest>,
        files: BTreeMap<String, FileEntry>,
    ) -> Manifest {
        let source = self.engine.source.as_ref();
        // The identity's header only: its file list (a mirror's source
        // manifest, a million entries) is replaced anyway.
        let mut m = source
            .identity(&plan.view, current)
            .map(Manifest::header)
            .unwrap_or_else(|| fresh_manifest(&source.database_name()));
        m.files = files;
        m.last_synced_at = now_iso();
        m.synced_from = Some(source.synced_from(plan.mode));
        if let Some(slug) = &self.engine.opts.slug {
            m.slug = Some(slug.clone());
        }
        m
    }

    /// Phase 6: remote deletions, after the commit. Unless the trash is
    /// off, an object is deleted only once it is kept in the trash.
    async fn delete_remote(&self, plan: &Plan, paths: &[String], out: &mut Outcome) {
        if paths.is_empty() {
            return;
        }
        let remote = &self.engine.remote;
        self.progress(Operation::Deleting, None);
        let mut doomed = self.still_doomed(plan, paths, out).await;
        if self.engine.opts.trash.keeps() {
            let kept: Vec<(String, Result<Option<String>>)> = futures::stream::iter(doomed)
                .map(|p| async move {
                    let r = self.keep_remote(&p).await;
                    (p, r)
                })
                .buffer_unordered(self.engine.opts.concurrency)
                .collect()
                .await;
            doomed = Vec::new();
            for (p, r) in kept {
                match r {
                    Ok(_) => doomed.push(p),
                    // Not kept, so not deleted: the manifest no longer lists
                    // it, and the object stays.
                    Err(e) => out.errors.push(FileError::new(
                        p,
                        "delete",
                        format!("not deleted: keeping it in the trash failed: {e}"),
                    )),
                }
            }
        }
        let failed: HashSet<String> = match remote.delete_many(&doomed).await {
            Ok(()) => HashSet::new(),
            // The manifest no longer lists these; a leftover object is
            // garbage, not a visible file.
            Err(fails) => fails
                .into_iter()
                .map(|(path, e)| {
                    out.errors.push(FileError::new(&path, "delete", e));
                    path
                })
                .collect(),
        };
        for p in doomed.into_iter().filter(|p| !failed.contains(p)) {
            self.done(&p, Operation::Deleting, 0);
            out.deleted.push(p);
        }
    }

    /// The planned remote deletions that are still this run's to make. The
    /// manifest is read again: a path a later commit names again is left
    /// alone. On stores that keep pqsync's hash metadata, an object that no
    /// longer holds the version this run's commit dropped (another writer
    /// has uploaded a new one, to be committed next) is left alone too.
    async fn still_doomed(&self, plan: &Plan, paths: &[String], out: &mut Outcome) -> Vec<String> {
        let remote = &self.engine.remote;
        let now = match remote.read_manifest().await {
            Ok(now) => now,
            Err(e) => {
                for p in paths {
                    let why = format!("not deleted: the manifest could not be read again: {e}");
                    out.errors.push(FileError::new(p, "delete", why));
                }
                return Vec::new();
            }
        };
        let named = |p: &str| {
            now.as_ref()
                .is_some_and(|n| n.manifest.files.contains_key(p))
        };
        let mut doomed = Vec::new();
        for p in paths {
            if named(p) {
                out.warnings.push(format!(
                    "{p}: not deleted: another writer committed it again during this run"
                ));
            } else {
                doomed.push(p.clone());
            }
        }
        if !remote.keeps_attributes() {
            return doomed;
        }
        let dropped = |p: &str| {
            plan.remote
                .as_ref()
                .and_then(|r| r.manifest.files.get(p))
                .map(|e| e.tagged_hash())
        };
        let checked: Vec<(String, Result<bool>)> = futures::stream::iter(doomed)
            .map(|p| async move {
                let same = match remote.head_hash(&p).await {
                    Ok((_, stored)) => stored.is_none() || stored == dropped(&p),
                    Err(e) if e.is_not_found() => true,
                    Err(e) => return (p, Err(e)),
                };
                (p, Ok(same))
            })
            .buffer_unordered(self.engine.opts.concurrency)
            .collect()
            .await;
        let mut out_doomed = Vec::new();
        for (p, same) in checked {
            match same {
                Ok(true) => out_doomed.push(p),
                Ok(false) => out.warnings.push(format!(
                    "{p}: not deleted: another writer has uploaded a new version of it"
                )),
                Err(e) => out.errors.push(FileError::new(p, "delete", e)),
            }
        }
        out_doomed.sort();
        out_doomed
    }

    /// Phase 7: the source's part of the outcome.
    async fn settle(
        &self,
        plan: &Plan,
        clean_run: bool,
        out: &mut Outcome,
        shard_record: Option<&BTreeMap<String, FileEntry>>,
    ) -> Result<()> {
        let remaining_local: Vec<String> = plan
            .delete_local
            .iter()
            .filter(|p| !out.cleared_local.contains(p))
            .cloned()
            .collect();
        let on_deleted = |p: &str| self.done(p, Operation::Deleting, 0);
        let settled = self
            .engine
            .source
            .settle(Settle {
                mode: plan.mode,
                view: &plan.view,
                remote_before: plan.remote.as_deref(),
                remote_latest: out.latest.as_deref(),
                remote_after: out.remote_files(),
                remote_commit: out.remote_commit.as_deref(),
                downloaded: &out.downloaded,
                delete_local: &remaining_local,
                deleted_early: &out.cleared_local,
                may_delete: out.errors.is_empty(),
                clean_run,
                keep: self.local_keep(),
                on_deleted: &on_deleted,
                versioned_copy: self.engine.opts.slug.is_some(),
                shard_record,
            })
            .await?;
        if let Some(run) = self.local_keep() {
            for p in &settled.deleted {
                self.kept_local(p, run);
            }
        }
        out.deleted.extend(settled.deleted);
        out.errors.extend(settled.errors);
        Ok(())
    }

    /// After a run that did not commit: puts back the committed versions
    /// of the objects it overwrote, so the manifest again names the bytes
    /// that are there. An object another writer has committed anew since
    /// the plan is left alone.
    async fn put_back(&self, plan: &Plan, out: &mut Outcome) {
        let overwritten = std::mem::take(&mut *self.overwritten.lock().expect("overwritten"));
        if overwritten.is_empty() {
            return;
        }
        let remote = &self.engine.remote;
        let now = match remote.read_manifest().await {
            Ok(now) => now,
            Err(e) => {
                out.warnings.push(format!(
                    "the objects this run replaced were not put back (the manifest could not be read: {e}); their committed versions are in the trash"
                ));
                return;
            }
        };
        let planned = plan.remote.as_ref().map(|r| &r.manifest.files);
        let committed_now = now.as_ref().map(|r| &r.manifest.files);
        for (path, key) in overwritten {
            let unchanged = match (
                planned.and_then(|f| f.get(&path)),
                committed_now.and_then(|f| f.get(&path)),
            ) {
                (Some(a), Some(b)) => a.same_content(b),
                _ => false,
            };
            if !unchanged {
                continue;
            }
            // Put back or not, this run's upload of it no longer counts.
            self.engine.source.upload_undone(&path);
            if let Err(e) = remote.put_back(&path, &key).await {
                out.errors.push(FileError::new(
                    &path,
                    "upload",
                    format!(
                        "the committed version could not be put back from the trash ({key}): {e}"
                    ),
                ));
            }
        }
    }

    /// A run that kept versions removes the trash's runs older than the
    /// retention period, on the sides where it kept them.
    async fn expire_trash(&self, out: &mut Outcome) {
        let kept = self.kept.lock().expect("kept").clone();
        let age = self.engine.opts.trash_retention;
        if kept.iter().any(|k| k.side == Side::Remote) {
            let trash = &self.engine.opts.trash;
            if let Err(e) = self.engine.remote.trash_empty(trash, Some(age)).await {
                out.warnings.push(format!(
                    "the remote trash's expired runs were not removed: {e}"
                ));
            }
        }
        if kept.iter().any(|k| k.side == Side::Local) {
            if let Err(e) = self.engine.source.expire_trash(age) {
                out.warnings.push(format!(
                    "the local trash's expired runs were not removed: {e}"
                ));
            }
        }
    }

    /// Phase 8: the result.
    fn result(&self, plan: Plan, mut out: Outcome) -> SyncResult {
        let engine = self.engine;
        // Decided conflicts this mode cannot carry out are in `held_back`.
        let (pending, rest): (Vec<Conflict>, Vec<Conflict>) = plan
            .conflicts
            .into_iter()
            .partition(|c| c.resolution == Resolution::Manual);
        let resolved: Vec<Conflict> = rest.into_iter().filter(|c| c.applied).collect();
        let mut uploaded: Vec<String> = out.uploaded.into_iter().map(|e| e.path).collect();
        uploaded.sort();
        let mut downloaded: Vec<String> = out.downloaded.into_iter().map(|(e, _)| e.path).collect();
        downloaded.sort();
        out.deleted.sort();
        // Safety stops are reported last: they hold back only deletions,
        // and everything else went ahead.
        let side = match plan.mode {
            Mode::Pull => "(local deletions)".to_string(),
            _ => engine.remote.url().to_string(),
        };
        for r in &plan.refused {
            out.errors.push(FileError::new(&side, "delete", r));
        }
        // Paths that could not be read were left out; the rest went ahead.
        for l in &plan.view.left_out {
            let why = format!("left out: {}", l.reason);
            out.errors.push(FileError::new(&l.path, l.operation, why));
        }
        let mut warnings = plan.warnings;
        warnings.append(&mut out.warnings);
        let congestion = &engine.opts.congestion;
        if congestion.cuts() > 0 {
            warnings.push(format!(
                "the store asked to slow down; transfers in flight went down to {} of {}",
                congestion.lowest(),
                engine.opts.concurrency
            ));
        }
        SyncResult {
            success: out.errors.is_empty(),
            uploaded,
            downloaded,
            deleted: out.deleted,
            conflicts_resolved: resolved,
            conflicts_pending: pending,
            errors: out.errors,
            held_back: plan.held_back,
            unchanged_count: plan.unchanged.len(),
            unchanged: plan.unchanged,
            committed: out.committed,
            bytes_transferred: self.bytes.load(std::sync::atomic::Ordering::SeqCst),
            files_hashed: plan.view.files_hashed,
            requests: engine.requests(),
            warnings,
            kept: std::mem::take(&mut *self.kept.lock().expect("kept")),
            repaired: plan.repairs,
        }
    }
}

/// A merge's staged files that its commit names, with their staging
/// folders: only those are copied into place (one the plan leaves out, such
/// as a path a shard could not read, stays staged and goes with the rest).
fn staged_to_commit(plan: &Plan) -> Vec<(&FileEntry, &str)> {
    let committing: HashSet<&str> = plan.already_sent.iter().map(|e| e.path.as_str()).collect();
    plan.view
        .staged
        .iter()
        .filter(|(p, _)| committing.contains(p.as_str()))
        .filter_map(|(p, dir)| Some((plan.view.files.get(p)?, dir.as_str())))
        .collect()
}

/// The deletions of `deletes` in the way of a transfer of `transfers`: one
/// path is a folder of the other (a file that became a folder, or the
/// reverse). Two sets make it O(paths), where comparing every pair would
/// be O(deletions × transfers).
fn in_the_way(deletes: &[String], transfers: &[FileEntry]) -> Vec<String> {
    if deletes.is_empty() || transfers.is_empty() {
        return Vec::new();
    }
    let paths: HashSet<&str> = transfers.iter().map(|t| t.path.as_str()).collect();
    let folders: HashSet<&str> = transfers.iter().flat_map(|t| folders_of(&t.path)).collect();
    deletes
        .iter()
        .filter(|d| folders.contains(d.as_str()) || folders_of(d).any(|f| paths.contains(f)))
        .cloned()
        .collect()
}

/// The folders `path` lies in, innermost last: `a`, `a/b` for `a/b/c`.
pub(super) fn folders_of(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HashAlgorithm;

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 1,
            hash: HashAlgorithm::Blake3.digest(path.as_bytes()),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            etag: None,
            content_type: None,
            extra: None,
        }
    }

    /// The sets find exactly the pairs where one path is a folder of the
    /// other, and no near miss (`a` and `ab/c`, `a` and `a.b`).
    #[test]
    fn deletions_in_the_way_are_those_on_a_folder_path() {
        let paths = [
            "a", "a/b", "a/b/c", "ab", "ab/c", "a.b", "x/y", "x", "x/y/z/w", "q/a",
        ];
        for (i, _) in paths.iter().enumerate() {
            let deletes: Vec<String> = paths
                .iter()
                .enumerate()
                .filter(|(j, _)| (i + j) % 3 == 0)
                .map(|(_, p)| p.to_string())
                .collect();
            let transfers: Vec<FileEntry> = paths
                .iter()
                .enumerate()
                .filter(|(j, _)| (i + j) % 3 != 0)
                .map(|(_, p)| entry(p))
                .collect();
            let nested = |a: &str, b: &str| {
                a.strip_prefix(b).is_some_and(|r| r.starts_with('/'))
                    || b.strip_prefix(a).is_some_and(|r| r.starts_with('/'))
            };
            let want: Vec<String> = deletes
                .iter()
                .filter(|d| transfers.iter().any(|t| nested(&t.path, d)))
                .cloned()
                .collect();
            assert_eq!(in_the_way(&deletes, &transfers), want, "case {i}");
        }
        assert_eq!(
            in_the_way(&["a".into(), "ab".into()], &[entry("a/b")]),
            vec!["a".to_string()]
        );
        assert_eq!(
            in_the_way(&["d/e/f".into()], &[entry("d")]),
            vec!["d/e/f".to_string()]
        );
    }
}
