//! What a run reports: [`SyncResult`] from `execute` and [`StatusReport`]
//! from `status`, with ParqueDB's field names when serialised.

use serde::Serialize;

use super::plan::{Conflict, HeldBack};
use super::repair::Damage;
use crate::manifest::FileEntry;
use crate::tree::Kept;

/// A file that failed, with ParqueDB's field names.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct FileError {
    /// The file.
    pub path: String,
    /// `upload`, `download`, `delete` or `commit`.
    pub operation: String,
    /// What went wrong.
    pub message: String,
}

impl FileError {
    pub(crate) fn new(
        path: impl Into<String>,
        operation: &str,
        message: impl std::fmt::Display,
    ) -> Self {
        FileError {
            path: path.into(),
            operation: operation.to_string(),
            message: message.to_string(),
        }
    }
}

/// The outcome of `execute`, with ParqueDB's field names plus
/// `bytesTransferred` and `requests`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
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
    /// Paths that were the same on both sides.
    pub unchanged: Vec<String>,
    /// How many paths were the same on both sides.
    pub unchanged_count: usize,
    /// Whether the remote manifest was written.
    pub committed: bool,
    /// Bytes moved.
    pub bytes_transferred: u64,
    /// Local files whose contents were read to hash them (the stat cache
    /// answered for the others).
    pub files_hashed: usize,
    /// Requests made, planning included.
    pub requests: u64,
    /// Warnings, the plan's included.
    pub warnings: Vec<String>,
    /// Versions this run overwrote or deleted and kept in a trash.
    pub kept: Vec<Kept>,
    /// Remote objects found damaged and sent again (`--repair`,
    /// `--checksum`).
    pub repaired: Vec<Damage>,
}

/// A status report, with ParqueDB's field names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
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
    /// Local paths skipped as ParqueDB skips them (`.git`, `.DS_Store`,
    /// `node_modules` and `_meta/locks` at the top, ...); folders end in
    /// `/`.
    pub ignored: Vec<String>,
    /// The remote manifest's `lastSyncedAt`: when the last successful sync
    /// committed.
    #[serde(skip)]
    pub remote_synced_at: Option<String>,
    /// The highest event segment seq the remote manifest lists.
    #[serde(skip)]
    pub remote_last_segment: Option<u64>,
}

/// The buckets of a status report.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct StatusDiff {
    /// Changed or added locally.
    pub to_upload: Vec<FileEntry>,
    /// Changed or added remotely.
    pub to_download: Vec<FileEntry>,
    /// Changed on both sides.
    pub conflicts: Vec<Conflict>,
    /// Identical on both sides.
    pub unchanged: Vec<String>,
    /// How many paths are identical on both sides.
    pub unchanged_count: usize,
    /// Deleted locally since the last sync (push deletes them remotely).
    pub deleted_locally: Vec<String>,
    /// Deleted remotely since the last sync (pull deletes them locally).
    pub deleted_remotely: Vec<String>,
}
