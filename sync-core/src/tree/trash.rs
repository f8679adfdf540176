//! Kept versions: what a run overwrote or deleted goes to a trash area on
//! the side where it was replaced, one folder per run, instead of being
//! destroyed.
//!
//! * On a remote: `<prefix>/_meta/.pqsync/trash/<run>/<path>`, a server-side
//!   copy made before the overwrite or the delete (or under the bucket
//!   prefix `--backup-dir` names instead);
//! * in a directory: `_meta/.pqsync/trash/<run>/<path>`, a hard link (or a
//!   copy) made before a download replaces the file, or the file itself,
//!   moved there instead of deleted.
//!
//! `<run>` is the run's UTC start time and a random suffix
//! (`20261205T054012Z-9f3a61c2`), so runs sort by time and a retention
//! period can be applied from the name alone, without a request per object.

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// The trash folder, relative to a tree's root.
pub const TRASH_DIR: &str = "_meta/.pqsync/trash";

/// How long kept versions stay by default: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Where a run keeps the versions it replaces.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Trash {
    /// In each side's own trash folder ([`TRASH_DIR`]).
    #[default]
    Default,
    /// Remote versions under this prefix of the bucket (`--backup-dir`);
    /// local ones in the default place.
    At(String),
    /// Nothing is kept (`--no-trash`).
    Off,
}

impl Trash {
    /// Whether replaced versions are kept.
    pub fn keeps(&self) -> bool {
        !matches!(self, Trash::Off)
    }

    /// A new run's folder name: the UTC time now and a random suffix.
    pub fn new_run_name() -> String {
        run_name(SystemTime::now())
    }
}

/// Which side of a run a version was kept on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The remote (or a mirror's destination).
    Remote,
    /// The local directory.
    Local,
}

/// A version a run kept instead of destroying it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Kept {
    /// The file's path in the tree.
    pub path: String,
    /// Where the replaced version was.
    pub side: Side,
    /// Where it is now: an object key on a remote, a path locally.
    pub location: String,
}

/// A kept version, as `pqsync trash list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct TrashedFile {
    /// The run that kept it (its folder in the trash).
    pub run: String,
    /// When that run started (RFC 3339), if its name says.
    pub kept_at: Option<String>,
    /// The file's path in the tree.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Where it is: an object key on a remote, a path locally.
    pub location: String,
}

/// A new run's trash folder name for a run starting at `now`.
pub(crate) fn run_name(now: SystemTime) -> String {
    let t: chrono::DateTime<chrono::Utc> = now.into();
    format!(
        "{}-{:08x}",
        t.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    )
}

/// When a run named by [`run_name`] started; `None` for any other name
/// (which retention then leaves alone).
pub(crate) fn run_time(run: &str) -> Option<SystemTime> {
    let stamp = run.split('-').next()?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%SZ").ok()?;
    Some(t.and_utc().into())
}

/// The RFC 3339 form of a run's start, for listings.
pub(crate) fn run_time_text(run: &str) -> Option<String> {
    run_time(run).map(|t| {
        chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    })
}

/// Whether a run folder is older than `age` at `now`.
pub(crate) fn expired(run: &str, age: Duration, now: SystemTime) -> bool {
    run_time(run)
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|d| d > age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_names_sort_by_time_and_carry_it() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_000_000);
        let a = run_name(t);
        let b = run_name(t + Duration::from_secs(1));
        assert!(a < b, "{a} < {b}");
        assert_eq!(run_time(&a), Some(t));
        assert_eq!(run_time_text(&a).as_deref(), Some("2026-11-30T00:53:20Z"));
        assert!(expired(
            &a,
            Duration::from_secs(5),
            t + Duration::from_secs(6)
        ));
        assert!(!expired(
            &a,
            Duration::from_secs(5),
            t + Duration::from_secs(4)
        ));
        assert!(!expired("not-a-run", Duration::ZERO, t));
    }
}
