//! Progress reporting.
//!
//! The engine never draws anything. It calls a [`Reporter`], whose methods all
//! default to doing nothing; the CLI implements it with terminal progress bars
//! or log lines. Field names follow ParqueDB's progress events.

use serde::Serialize;

/// What the engine is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// Building manifests and diffing.
    Comparing,
    /// Sending files to the remote (or mirror destination).
    Uploading,
    /// Fetching files from the remote.
    Downloading,
    /// Removing files.
    Deleting,
}

/// A progress snapshot, with ParqueDB's field names.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Current phase.
    pub operation: Operation,
    /// The file being worked on, if any.
    pub current_file: Option<String>,
    /// Files finished so far.
    pub processed: u64,
    /// Files planned in all.
    pub total: u64,
    /// Bytes moved so far.
    pub bytes_transferred: u64,
    /// Bytes planned in all.
    pub bytes_total: u64,
}

/// A notable event during a run.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// A file transfer or deletion finished.
    FileDone {
        /// The file.
        path: String,
        /// What was done.
        operation: Operation,
        /// Bytes moved for it.
        bytes: u64,
    },
    /// An operation failed and will be tried again.
    Retry {
        /// The file.
        path: String,
        /// The attempt that failed (1-based).
        attempt: u32,
        /// Why it failed.
        error: String,
    },
    /// A file failed for good in this run.
    Failed {
        /// The file.
        path: String,
        /// Why.
        error: String,
    },
    /// Something the user should know that does not stop the run.
    Warning(String),
}

/// Receives progress from the engine.
///
/// Implementations must be cheap: `progress` may be called for every chunk
/// transferred. Every method has a no-op default.
pub trait Reporter: Send + Sync {
    /// A new progress snapshot.
    fn progress(&self, _progress: &Progress) {}
    /// A notable event.
    fn event(&self, _event: &Event) {}
}

/// A reporter that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Reporter for NoProgress {}
