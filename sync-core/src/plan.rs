//! Turning a diff into a plan: what each bucket means for a given mode and
//! conflict strategy, and what the run will cost.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::diff::{Change, PathDiff, Resolution};
use crate::local::FileStat;
use crate::manifest::{FileEntry, HashAlgorithm, Manifest};
use crate::store::RemoteManifest;

/// The direction(s) a run may move data in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local → remote. Remote-side changes are reported, not fetched.
    Push,
    /// Remote → local. Local changes are reported, not sent.
    Pull,
    /// Both ways.
    Sync,
    /// One store prefix → another; the destination is made equal to the
    /// source.
    Mirror,
}

impl Mode {
    /// The conflict strategy used when none is given: `local-wins` for push
    /// and mirror, `remote-wins` for pull, `newest` for sync.
    pub fn default_strategy(self) -> Strategy {
        match self {
            Mode::Push | Mode::Mirror => Strategy::LocalWins,
            Mode::Pull => Strategy::RemoteWins,
            Mode::Sync => Strategy::Newest,
        }
    }

    fn sends(self) -> bool {
        matches!(self, Mode::Push | Mode::Sync | Mode::Mirror)
    }

    fn fetches(self) -> bool {
        matches!(self, Mode::Pull | Mode::Sync)
    }
}

/// How conflicts are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The local version wins.
    LocalWins,
    /// The remote version wins.
    RemoteWins,
    /// The version with the newer modification time wins; a tie is left
    /// pending.
    Newest,
    /// Nothing is resolved: conflicts are listed and both copies left alone.
    Manual,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::LocalWins => "local-wins",
            Strategy::RemoteWins => "remote-wins",
            Strategy::Newest => "newest",
            Strategy::Manual => "manual",
        })
    }
}

impl std::str::FromStr for Strategy {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "local-wins" => Ok(Strategy::LocalWins),
            "remote-wins" => Ok(Strategy::RemoteWins),
            "newest" => Ok(Strategy::Newest),
            "manual" => Ok(Strategy::Manual),
            other => Err(crate::Error::Invalid(format!(
                "unknown strategy {other:?} (expected local-wins, remote-wins, newest or manual)"
            ))),
        }
    }
}

/// A conflict and what the plan does about it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
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
pub struct HeldBack {
    /// The path.
    pub path: String,
    /// Its diff bucket.
    pub change: Change,
    /// Why it is not applied.
    pub reason: String,
}

/// What a run will do, computed without moving any data.
///
/// Buckets:
/// * `uploads`: files sent to the remote (mirror: to the destination);
/// * `downloads`: files fetched to the local tree;
/// * `delete_remote` / `delete_local`: files removed after the manifest is
///   committed;
/// * `conflicts`: every conflict with its resolution (pending ones are left
///   untouched on both sides);
/// * `held_back`: changes this mode does not apply (remote changes on push,
///   deletions with `--no-delete`, ...);
/// * `unchanged`: paths identical on both sides.
#[derive(Debug)]
pub struct Plan {
    /// The run's mode.
    pub mode: Mode,
    /// The conflict strategy in force.
    pub strategy: Strategy,
    /// The hash algorithm used for comparison.
    pub algorithm: HashAlgorithm,
    /// Files to send.
    pub uploads: Vec<FileEntry>,
    /// Uploads an interrupted earlier run already completed; they are
    /// committed without being sent again.
    pub already_sent: Vec<FileEntry>,
    /// Files to fetch.
    pub downloads: Vec<FileEntry>,
    /// Remote files to delete.
    pub delete_remote: Vec<String>,
    /// Local files to delete.
    pub delete_local: Vec<String>,
    /// Conflicts and their resolutions.
    pub conflicts: Vec<Conflict>,
    /// Changes not applied by this mode.
    pub held_back: Vec<HeldBack>,
    /// Paths that are the same on both sides.
    pub unchanged: Vec<String>,
    /// The paths that differ, with their entries, for status reports.
    pub diff: Vec<PathDiff>,
    /// Whether the remote already had a manifest.
    pub remote_managed: bool,
    /// Requests made to build the plan.
    pub requests_so_far: u64,
    /// Requests executing the plan will make.
    pub requests_planned: u64,
    /// Bytes to send.
    pub bytes_up: u64,
    /// Bytes to fetch.
    pub bytes_down: u64,
    /// Local files whose contents were read to build the plan.
    pub files_hashed: usize,
    /// Warnings from building the plan (skipped symlinks, ...).
    pub warnings: Vec<String>,
    /// Large uploads an interrupted run left part-way, which this run
    /// continues (`"path: N of M parts already sent"`).
    pub interrupted: Vec<String>,
    /// Safety stops: operations the plan refuses (over `--max-delete`).
    /// Executing such a plan applies the rest and reports these as errors.
    pub refused: Vec<String>,
    pub(crate) state: PlanState,
}

/// What `execute` needs beyond the public buckets.
#[derive(Debug, Default)]
pub(crate) struct PlanState {
    pub local_files: BTreeMap<String, FileEntry>,
    pub local_stats: HashMap<String, FileStat>,
    pub local_manifest: Option<Manifest>,
    pub source_manifest: Option<Manifest>,
    pub remote: Option<RemoteManifest>,
    pub base: Option<BTreeMap<String, FileEntry>>,
    pub needs_commit: bool,
}

impl Plan {
    /// Whether executing the plan would change nothing.
    pub fn is_noop(&self) -> bool {
        self.uploads.is_empty()
            && self.already_sent.is_empty()
            && self.downloads.is_empty()
            && self.delete_remote.is_empty()
            && self.delete_local.is_empty()
            && !self.state.needs_commit
    }

    /// Conflicts left for a person.
    pub fn pending_conflicts(&self) -> impl Iterator<Item = &Conflict> {
        self.conflicts
            .iter()
            .filter(|c| c.resolution == Resolution::Manual)
    }
}

/// Decides a conflict. A deletion never beats a modification: whichever side
/// still has the file is kept, so no edit is lost to a delete.
pub fn resolve(strategy: Strategy, d: &PathDiff) -> Resolution {
    let r = match strategy {
        Strategy::LocalWins => Resolution::KeepLocal,
        Strategy::RemoteWins => Resolution::KeepRemote,
        Strategy::Newest => d.suggested_resolution(),
        Strategy::Manual => Resolution::Manual,
    };
    match r {
        Resolution::KeepLocal if d.local.is_none() => Resolution::KeepRemote,
        Resolution::KeepRemote if d.remote.is_none() => Resolution::KeepLocal,
        other => other,
    }
}

/// Sorts each path of a diff into the plan's buckets for `mode`.
pub(crate) fn bucket(
    plan: &mut Plan,
    diff: crate::diff::Diff3,
    delete: bool,
    journal: &std::collections::HashSet<(String, String)>,
) {
    let mode = plan.mode;
    let fetch_hint = "changed on the remote; pull to fetch it";
    let send_hint = "changed locally; push to send it";
    plan.unchanged = diff.unchanged;
    let diff = diff.changed;
    for d in &diff {
        match d.change {
            Change::Unchanged => {}
            Change::Upload => {
                let e = d.local.clone().expect("upload has a local entry");
                if mode.sends() {
                    if journal.contains(&(e.path.clone(), e.tagged_hash())) {
                        plan.already_sent.push(e);
                    } else {
                        plan.uploads.push(e);
                    }
                } else {
                    plan.held_back.push(held(d, send_hint));
                }
            }
            Change::Download => {
                if mode.fetches() {
                    plan.downloads
                        .push(d.remote.clone().expect("download has a remote entry"));
                } else {
                    plan.held_back.push(held(d, fetch_hint));
                }
            }
            Change::DeleteRemote => {
                if !mode.sends() {
                    plan.held_back.push(held(d, send_hint));
                } else if !delete {
                    plan.held_back
                        .push(held(d, "deletion skipped (--no-delete)"));
                } else {
                    plan.delete_remote.push(d.path.clone());
                }
            }
            Change::DeleteLocal => {
                if !mode.fetches() {
                    plan.held_back.push(held(d, fetch_hint));
                } else if !delete {
                    plan.held_back
                        .push(held(d, "deletion skipped (--no-delete)"));
                } else {
                    plan.delete_local.push(d.path.clone());
                }
            }
            Change::Conflict => {
                let resolution = resolve(plan.strategy, d);
                let applied = match resolution {
                    Resolution::KeepLocal if mode.sends() => {
                        plan.uploads
                            .push(d.local.clone().expect("kept local side exists"));
                        true
                    }
                    Resolution::KeepRemote if mode.fetches() => {
                        plan.downloads
                            .push(d.remote.clone().expect("kept remote side exists"));
                        true
                    }
                    Resolution::KeepLocal => {
                        plan.held_back
                            .push(held(d, "conflict: the local version wins; push to send it"));
                        false
                    }
                    Resolution::KeepRemote => {
                        plan.held_back.push(held(
                            d,
                            "conflict: the remote version wins; pull to fetch it",
                        ));
                        false
                    }
                    Resolution::Manual => false,
                };
                plan.conflicts.push(Conflict {
                    path: d.path.clone(),
                    local: d.local.clone(),
                    remote: d.remote.clone(),
                    suggested_resolution: d.suggested_resolution(),
                    resolution,
                    applied,
                });
            }
        }
    }
    plan.diff = diff;
}

fn held(d: &PathDiff, reason: &str) -> HeldBack {
    HeldBack {
        path: d.path.clone(),
        change: d.change,
        reason: reason.to_string(),
    }
}

/// Whether a path is a nested manifest (`manifest.json` or `_manifest.json`),
/// which must be written after the files in its subtree.
pub fn is_nested_manifest(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "manifest.json" || name == "_manifest.json"
}
