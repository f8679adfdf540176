//! Turning a diff into a plan: what each bucket means for a given mode and
//! conflict strategy, what the deletion limit holds back, and what the run
//! will cost.

use std::collections::HashSet;

use serde::ser::SerializeStruct;
use serde::Serialize;

use super::diff::{Change, Diff3, PathDiff, Resolution};
use super::mode::{Mode, Strategy};
use super::options::MaxDelete;
use super::source::SourceView;
use crate::manifest::{FileEntry, HashAlgorithm};
use crate::tree::RemoteManifest;

/// A conflict and what the plan does about it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Conflict {
    /// The path.
    pub path: String,
    /// The local entry, absent if deleted locally.
    pub local: Option<FileEntry>,
    /// The remote entry, absent if deleted remotely.
    pub remote: Option<FileEntry>,
    /// What the timestamps suggest.
    pub suggested_resolution: Resolution,
    /// What this run does: `manual` means left pending.
    pub resolution: Resolution,
    /// Whether this run carries the resolution out. A push cannot fetch the
    /// remote version and a pull cannot send the local one; such a conflict
    /// is decided but held back for the other command.
    pub applied: bool,
}

/// A change this run does not apply, and why.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct HeldBack {
    /// The path.
    pub path: String,
    /// Its diff bucket.
    pub change: Change,
    /// Why it is not applied.
    pub reason: String,
}

/// What a run will do, computed without moving any data. Read it through
/// its accessors; hand it back to the engine that made it to carry it out
/// exactly as planned.
///
/// Buckets:
/// * [`uploads`](Plan::uploads): files sent to the remote (mirror: to the
///   destination);
/// * [`downloads`](Plan::downloads): files fetched to the local tree;
/// * [`delete_remote`](Plan::delete_remote) / [`delete_local`](Plan::delete_local):
///   files removed after the manifest is committed;
/// * [`conflicts`](Plan::conflicts): every conflict with its resolution
///   (pending ones are left untouched on both sides);
/// * [`held_back`](Plan::held_back): changes this mode does not apply
///   (remote changes on push, deletions with `--no-delete`, ...);
/// * [`unchanged`](Plan::unchanged): paths identical on both sides.
///
/// Serialised, it is the `--dry-run --json` document, with ParqueDB's field
/// names where ParqueDB has them.
#[derive(Debug)]
pub struct Plan {
    pub(crate) engine: u64,
    pub(crate) mode: Mode,
    pub(crate) strategy: Strategy,
    pub(crate) algorithm: HashAlgorithm,
    pub(crate) uploads: Vec<FileEntry>,
    pub(crate) already_sent: Vec<FileEntry>,
    pub(crate) downloads: Vec<FileEntry>,
    pub(crate) delete_remote: Vec<String>,
    pub(crate) delete_local: Vec<String>,
    pub(crate) conflicts: Vec<Conflict>,
    pub(crate) held_back: Vec<HeldBack>,
    pub(crate) unchanged: Vec<String>,
    pub(crate) diff: Vec<PathDiff>,
    pub(crate) requests_so_far: u64,
    pub(crate) requests_planned: u64,
    /// Of all the run's requests (made and planned), those R2 bills as
    /// class A and as class B.
    pub(crate) class_a: u64,
    pub(crate) class_b: u64,
    pub(crate) warnings: Vec<String>,
    pub(crate) interrupted: Vec<String>,
    pub(crate) refused: Vec<String>,
    pub(crate) view: SourceView,
    pub(crate) remote: Option<std::sync::Arc<RemoteManifest>>,
    pub(crate) needs_commit: bool,
    /// Remote objects found damaged, sent again among the uploads.
    pub(crate) repairs: Vec<super::repair::Damage>,
}

impl Plan {
    /// An empty plan for the engine `engine`.
    pub(crate) fn new(
        engine: u64,
        mode: Mode,
        strategy: Strategy,
        algorithm: HashAlgorithm,
        view: SourceView,
        remote: Option<RemoteManifest>,
    ) -> Self {
        Plan {
            engine,
            mode,
            strategy,
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
            requests_so_far: 0,
            requests_planned: 0,
            class_a: 0,
            class_b: 0,
            warnings: Vec::new(),
            interrupted: Vec::new(),
            refused: Vec::new(),
            view,
            remote: remote.map(std::sync::Arc::new),
            needs_commit: false,
            repairs: Vec::new(),
        }
    }

    /// The run's mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The conflict strategy in force.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The hash algorithm files are compared in.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.algorithm
    }

    /// Files to send.
    pub fn uploads(&self) -> &[FileEntry] {
        &self.uploads
    }

    /// Uploads an interrupted earlier run already completed; they are
    /// committed without being sent again.
    pub fn already_sent(&self) -> &[FileEntry] {
        &self.already_sent
    }

    /// Files to fetch.
    pub fn downloads(&self) -> &[FileEntry] {
        &self.downloads
    }

    /// Remote files to delete (after the commit).
    pub fn delete_remote(&self) -> &[String] {
        &self.delete_remote
    }

    /// Local files to delete.
    pub fn delete_local(&self) -> &[String] {
        &self.delete_local
    }

    /// Conflicts and their resolutions.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Conflicts left for a person.
    pub fn pending_conflicts(&self) -> impl Iterator<Item = &Conflict> {
        self.conflicts
            .iter()
            .filter(|c| c.resolution == Resolution::Manual)
    }

    /// Changes this mode does not apply, and why.
    pub fn held_back(&self) -> &[HeldBack] {
        &self.held_back
    }

    /// Paths that are the same on both sides.
    pub fn unchanged(&self) -> &[String] {
        &self.unchanged
    }

    /// Whether the remote already had a manifest.
    pub fn remote_managed(&self) -> bool {
        self.remote.is_some()
    }

    /// Requests made to build the plan.
    pub fn requests_so_far(&self) -> u64 {
        self.requests_so_far
    }

    /// Requests executing the plan will make.
    pub fn requests_planned(&self) -> u64 {
        self.requests_planned
    }

    /// What the run's requests (those made to plan and those planned) cost
    /// at R2's prices, in US dollars: $4.50 per million class A requests
    /// (writes and listings) and $0.36 per million class B (reads).
    /// Storage and, on other stores, egress are not included.
    pub fn r2_cost_usd(&self) -> f64 {
        self.class_a as f64 * R2_CLASS_A_USD + self.class_b as f64 * R2_CLASS_B_USD
    }

    /// The run's requests R2 bills as class A and as class B.
    pub fn request_classes(&self) -> (u64, u64) {
        (self.class_a, self.class_b)
    }

    /// Remote objects found damaged by `--repair` or `--checksum`; each is
    /// among the uploads.
    pub fn repairs(&self) -> &[super::repair::Damage] {
        &self.repairs
    }

    /// Requests in all: planning plus execution.
    pub fn requests_total(&self) -> u64 {
        self.requests_so_far + self.requests_planned
    }

    /// Bytes to send.
    pub fn bytes_up(&self) -> u64 {
        self.uploads.iter().map(|e| e.size).sum()
    }

    /// Bytes to fetch.
    pub fn bytes_down(&self) -> u64 {
        self.downloads.iter().map(|e| e.size).sum()
    }

    /// Local files whose contents were read to build the plan.
    pub fn files_hashed(&self) -> usize {
        self.view.files_hashed
    }

    /// Warnings from building the plan (skipped symlinks, a misspelt
    /// namespace, ...).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Large uploads an interrupted run left part-way, which this run
    /// continues (`"path: N of M parts already sent"`).
    pub fn interrupted(&self) -> &[String] {
        &self.interrupted
    }

    /// Safety stops: operations the plan refuses (over `--max-delete`).
    /// Executing such a plan applies the rest and reports these as errors.
    pub fn refused(&self) -> &[String] {
        &self.refused
    }

    /// Whether executing the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.uploads.is_empty()
            && self.already_sent.is_empty()
            && self.downloads.is_empty()
            && self.delete_remote.is_empty()
            && self.delete_local.is_empty()
            && !self.needs_commit
    }

    /// Whether executing the plan writes to the remote at all.
    pub(crate) fn writes_remote(&self) -> bool {
        self.needs_commit || !self.uploads.is_empty() || !self.delete_remote.is_empty()
    }

    /// Transfers the plan makes: the size of the progress bar.
    pub(crate) fn operations(&self) -> u64 {
        (self.uploads.len()
            + self.downloads.len()
            + self.delete_local.len()
            + self.delete_remote.len()) as u64
    }
}

/// R2's price of one class A request, in US dollars.
const R2_CLASS_A_USD: f64 = 4.50 / 1_000_000.0;
/// R2's price of one class B request, in US dollars.
const R2_CLASS_B_USD: f64 = 0.36 / 1_000_000.0;

impl Serialize for Plan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let resumable: Vec<&str> = self.already_sent.iter().map(|e| e.path.as_str()).collect();
        let mut st = s.serialize_struct("Plan", 24)?;
        st.serialize_field("dryRun", &true)?;
        st.serialize_field("mode", &self.mode)?;
        st.serialize_field("strategy", &self.strategy)?;
        st.serialize_field("hashAlgorithm", &self.algorithm)?;
        st.serialize_field("toUpload", &self.uploads)?;
        st.serialize_field("toDownload", &self.downloads)?;
        st.serialize_field("toDeleteRemote", &self.delete_remote)?;
        st.serialize_field("toDeleteLocal", &self.delete_local)?;
        st.serialize_field("conflicts", &self.conflicts)?;
        st.serialize_field("heldBack", &self.held_back)?;
        st.serialize_field("resumable", &resumable)?;
        st.serialize_field("interrupted", &self.interrupted)?;
        st.serialize_field("unchanged", &self.unchanged)?;
        st.serialize_field("unchangedCount", &self.unchanged.len())?;
        st.serialize_field("bytesToUpload", &self.bytes_up())?;
        st.serialize_field("bytesToDownload", &self.bytes_down())?;
        st.serialize_field("requests", &self.requests_total())?;
        st.serialize_field("requestsPlanned", &self.requests_planned)?;
        st.serialize_field("requestsClassA", &self.class_a)?;
        st.serialize_field("requestsClassB", &self.class_b)?;
        st.serialize_field("costUsd", &self.r2_cost_usd())?;
        st.serialize_field("refused", &self.refused)?;
        st.serialize_field("toRepair", &self.repairs)?;
        st.serialize_field("warnings", &self.warnings)?;
        st.end()
    }
}

/// Decides a conflict. A deletion never beats a modification: whichever side
/// still has the file is kept, so no edit is lost to a delete.
pub(crate) fn resolve(strategy: Strategy, d: &PathDiff) -> Resolution {
    let r = match strategy {
        Strategy::LocalWins => Resolution::KeepLocal,
        Strategy::RemoteWins => Resolution::KeepRemote,
        Strategy::Newest => d.newest(),
        Strategy::Manual => Resolution::Manual,
    };
    match r {
        Resolution::KeepLocal if d.local.is_none() => Resolution::KeepRemote,
        Resolution::KeepRemote if d.remote.is_none() => Resolution::KeepLocal,
        other => other,
    }
}

/// Sorts each path of a diff into the plan's buckets for `mode`.
///
/// The diff itself is kept in the plan only when `keep_diff` (a status
/// reports it); otherwise the entries move into the buckets, so a plan of a
/// million uploads holds each entry once.
pub(crate) fn bucket(
    plan: &mut Plan,
    diff: Diff3,
    delete: bool,
    journal: &HashSet<(String, String)>,
    keep_diff: bool,
) {
    let mode = plan.mode;
    plan.unchanged = diff.unchanged;
    let mut kept = Vec::new();
    let skipped = "deletion skipped (--no-delete)";
    for mut d in diff.changed {
        // An entry the plan needs is copied while the diff is kept, and
        // moved otherwise.
        let side = |e: &mut Option<Box<FileEntry>>| match keep_diff {
            true => e.as_deref().cloned(),
            false => e.take().map(|b| *b),
        };
        match d.change {
            Change::Unchanged => {}
            Change::Upload if !mode.sends() => plan.held_back.push(held(&d, SEND_HINT)),
            Change::Upload => {
                let e = side(&mut d.local).expect("upload has a local entry");
                if journal.contains(&(e.path.clone(), e.tagged_hash())) {
                    plan.already_sent.push(e);
                } else {
                    plan.uploads.push(e);
                }
            }
            Change::Download if !mode.fetches() => plan.held_back.push(held(&d, FETCH_HINT)),
            Change::Download => plan
                .downloads
                .push(side(&mut d.remote).expect("download has a remote entry")),
            Change::DeleteRemote if !mode.sends() => plan.held_back.push(held(&d, SEND_HINT)),
            Change::DeleteLocal if !mode.fetches() => plan.held_back.push(held(&d, FETCH_HINT)),
            Change::DeleteRemote | Change::DeleteLocal if !delete => {
                plan.held_back.push(held(&d, skipped))
            }
            Change::DeleteRemote => plan.delete_remote.push(d.path.clone()),
            Change::DeleteLocal => plan.delete_local.push(d.path.clone()),
            Change::Conflict => conflict(plan, &d),
        }
        if keep_diff {
            kept.push(d);
        }
    }
    plan.diff = kept;
}

const FETCH_HINT: &str = "changed on the remote; pull to fetch it";
const SEND_HINT: &str = "changed locally; push to send it";

/// Decides a conflict for the plan's strategy, and carries the decision
/// out where the mode can (otherwise it is held back for the command that
/// can).
fn conflict(plan: &mut Plan, d: &PathDiff) {
    let mode = plan.mode;
    let resolution = resolve(plan.strategy, d);
    let applied = match resolution {
        Resolution::KeepLocal if mode.sends() => {
            plan.uploads
                .push(d.local.as_deref().cloned().expect("kept local side exists"));
            true
        }
        Resolution::KeepRemote if mode.fetches() => {
            plan.downloads.push(
                d.remote
                    .as_deref()
                    .cloned()
                    .expect("kept remote side exists"),
            );
            true
        }
        Resolution::KeepLocal => {
            let why = "conflict: the local version wins; push to send it";
            plan.held_back.push(held(d, why));
            false
        }
        Resolution::KeepRemote => {
            let why = "conflict: the remote version wins; pull to fetch it";
            plan.held_back.push(held(d, why));
            false
        }
        Resolution::Manual => false,
    };
    plan.conflicts.push(Conflict {
        path: d.path.clone(),
        local: d.local.as_deref().cloned(),
        remote: d.remote.as_deref().cloned(),
        suggested_resolution: d.suggested_resolution(),
        resolution,
        applied,
    });
}

fn held(d: &PathDiff, reason: &str) -> HeldBack {
    HeldBack {
        path: d.path.clone(),
        change: d.change,
        reason: reason.to_string(),
    }
}

/// Holds back every deletion on a side where the plan would delete more
/// than `limit` allows, and records why. `remote_total` and `local_total`
/// are the files each side had; `remote_url` names the remote.
pub(crate) fn limit_deletes(
    plan: &mut Plan,
    limit: MaxDelete,
    remote_total: usize,
    local_total: usize,
    remote_url: &str,
) {
    let remote = std::mem::take(&mut plan.delete_remote);
    plan.delete_remote = limit_side(
        plan,
        limit,
        remote,
        remote_total,
        remote_url,
        Change::DeleteRemote,
    );
    let local = std::mem::take(&mut plan.delete_local);
    plan.delete_local = limit_side(
        plan,
        limit,
        local,
        local_total,
        "the local tree",
        Change::DeleteLocal,
    );
}

fn limit_side(
    plan: &mut Plan,
    limit: MaxDelete,
    paths: Vec<String>,
    total: usize,
    side: &str,
    change: Change,
) -> Vec<String> {
    if paths.is_empty() || limit.allows(paths.len(), total) {
        return paths;
    }
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
}
