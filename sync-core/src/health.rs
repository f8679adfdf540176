//! The health of a remote or a snapshot repository, for schedulers and
//! monitoring: how long ago the last success was (from the manifest's
//! `lastSyncedAt` or the newest snapshot record, never from object
//! timestamps), what a database has pending, and how far its event log is
//! behind.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::layout::EVENT_MANIFESTS;
use crate::parquedb::EventManifest;
use crate::repo::{BackupOptions, Repository};
use crate::sync::{Engine, StatusReport, SyncOptions};
use crate::tree::{LocalTree, StoreTree};

/// What [`Health`] found.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Health {
    /// The remote or repository.
    pub target: String,
    /// `remote` or `repository`.
    pub kind: &'static str,
    /// When the last sync committed or the newest snapshot was taken
    /// (ISO 8601); `None` when there is none.
    pub last_success: Option<String>,
    /// Seconds from then to the time of the check.
    pub age_seconds: Option<i64>,
    /// With a database: what differs from the remote or the newest
    /// snapshot.
    pub pending: Option<Pending>,
    /// With a database that has an event log: how far the remote is
    /// behind it.
    pub event_log: Option<EventLag>,
    /// Requests the check made.
    pub requests: u64,
}

/// Files that differ between a database and its remote or newest snapshot.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Pending {
    /// Changed or added locally.
    pub upload: usize,
    /// Changed or added remotely.
    pub download: usize,
    /// Deleted locally.
    pub deleted_locally: usize,
    /// Deleted remotely.
    pub deleted_remotely: usize,
    /// Changed on both sides.
    pub conflicts: usize,
    /// All of them.
    pub total: usize,
}

/// The event log's lag: sealed segments the database has and the remote
/// does not.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EventLag {
    /// The database's `nextSeq` (its manifest's, else its last seq + 1).
    pub local_next_seq: Option<u64>,
    /// The highest segment seq on the remote or in the snapshot.
    pub remote_last_seq: Option<u64>,
    /// Sealed segments not yet on the remote.
    pub segments_behind: u64,
    /// Milliseconds between the newest sealed event locally and the
    /// newest sealed event the remote holds, when both are known.
    pub lag_ms: Option<i64>,
}

/// Limits beyond which a check is unhealthy.
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub struct Thresholds {
    /// The oldest acceptable last success.
    pub max_age: Option<Duration>,
    /// The most files that may be pending.
    pub max_pending: Option<usize>,
    /// The most sealed segments the remote may lack.
    pub max_event_lag: Option<u64>,
}

impl Thresholds {
    /// Limits from their three values.
    pub fn new(
        max_age: Option<Duration>,
        max_pending: Option<usize>,
        max_event_lag: Option<u64>,
    ) -> Self {
        Thresholds {
            max_age,
            max_pending,
            max_event_lag,
        }
    }
}

/// A threshold a check exceeded.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Problem {
    /// `never`, `age`, `pending` or `event-lag`.
    pub kind: &'static str,
    /// One line for people: what is over which limit.
    pub message: String,
}

impl Health {
    /// The health of a synced remote: one GET of its manifest; with
    /// `local`, the status diff against it (the same GET).
    ///
    /// # Errors
    /// Store and manifest errors; [`crate::Error::NotManaged`] for a remote
    /// without a manifest when `local` is given.
    pub async fn of_remote(
        remote: StoreTree,
        local: Option<LocalTree>,
        sync: SyncOptions,
        now: DateTime<Utc>,
    ) -> Result<Health> {
        let target = remote.url().to_string();
        let mut health = Health::empty(target, "remote");
        match local {
            Some(local) => {
                let root = local.root().to_path_buf();
                let report = Engine::sync(local, remote.clone(), sync).status().await?;
                health.set_success(report.remote_synced_at.as_deref(), now);
                health.pending = Some(pending(&report));
                health.event_log = event_lag(&root, report.remote_last_segment, None);
            }
            None => {
                let manifest = remote.read_manifest().await?;
                let at = manifest
                    .as_ref()
                    .map(|m| m.manifest.last_synced_at.as_str());
                health.set_success(at, now);
            }
        }
        health.requests = remote.requests();
        Ok(health)
    }

    /// The health of a snapshot repository: its newest snapshot (of
    /// `local`'s database, when given), from one LIST and cached records;
    /// with `local`, what differs from that snapshot.
    ///
    /// # Errors
    /// Store errors and damaged records.
    pub async fn of_repository(
        repo: &Repository,
        local: Option<LocalTree>,
        sync: SyncOptions,
        now: DateTime<Utc>,
    ) -> Result<Health> {
        let mut health = Health::empty(repo.url().to_string(), "repository");
        match local {
            Some(local) => {
                let root = local.root().to_path_buf();
                let opts = BackupOptions {
                    sync,
                    ..BackupOptions::default()
                };
                let backup = repo.backup(local, opts).await?;
                let parent = backup.parent.clone();
                health.set_success(parent.as_ref().map(|p| p.record.time.as_str()), now);
                if let Some(p) = &parent {
                    let report = backup.engine().status().await?;
                    health.pending = Some(pending(&report));
                    let covered = p.record.event_log.as_ref();
                    health.event_log = event_lag(
                        &root,
                        covered.and_then(|c| c.last_seq),
                        covered.and_then(|c| c.max_ts),
                    );
                }
            }
            None => {
                let newest = repo.snapshots().await?.pop();
                health.set_success(newest.as_ref().map(|s| s.record.time.as_str()), now);
            }
        }
        health.requests = repo.requests();
        Ok(health)
    }

    fn empty(target: String, kind: &'static str) -> Health {
        Health {
            target,
            kind,
            last_success: None,
            age_seconds: None,
            pending: None,
            event_log: None,
            requests: 0,
        }
    }

    fn set_success(&mut self, at: Option<&str>, now: DateTime<Utc>) {
        let Some(at) = at else { return };
        self.last_success = Some(at.to_string());
        self.age_seconds = DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|t| (now - t.with_timezone(&Utc)).num_seconds());
    }

    /// Every limit of `t` this check exceeds; empty when healthy. A
    /// remote or repository with no success at all is a problem whatever
    /// the limits.
    pub fn problems(&self, t: &Thresholds) -> Vec<Problem> {
        let mut out = Vec::new();
        match (self.age_seconds, t.max_age) {
            (None, _) => out.push(Problem {
                kind: "never",
                message: format!(
                    "{} has no successful {} yet",
                    self.target,
                    if self.kind == "repository" {
                        "snapshot"
                    } else {
                        "sync"
                    }
                ),
            }),
            (Some(age), Some(max)) if age > max.as_secs() as i64 => out.push(Problem {
                kind: "age",
                message: format!(
                    "last {} {} ago, over --max-age {}",
                    if self.kind == "repository" {
                        "snapshot"
                    } else {
                        "sync"
                    },
                    human(age),
                    human(max.as_secs() as i64)
                ),
            }),
            _ => {}
        }
        if let (Some(p), Some(max)) = (self.pending, t.max_pending) {
            if p.total > max {
                out.push(Problem {
                    kind: "pending",
                    message: format!("{} file(s) pending, over --max-pending {max}", p.total),
                });
            }
        }
        if let (Some(l), Some(max)) = (self.event_log, t.max_event_lag) {
            if l.segments_behind > max {
                out.push(Problem {
                    kind: "event-lag",
                    message: format!(
                        "{} sealed event segment(s) not on the remote, over --max-event-lag {max}",
                        l.segments_behind
                    ),
                });
            }
        }
        out
    }
}

fn pending(r: &StatusReport) -> Pending {
    let d = &r.diff;
    let mut p = Pending {
        upload: d.to_upload.len(),
        download: d.to_download.len(),
        deleted_locally: d.deleted_locally.len(),
        deleted_remotely: d.deleted_remotely.len(),
        conflicts: d.conflicts.len(),
        total: 0,
    };
    p.total = p.upload + p.download + p.deleted_locally + p.deleted_remotely + p.conflicts;
    p
}

/// The lag of the event log at `root` behind a remote whose newest segment
/// is `remote_last` (with its newest event at `remote_max_ts`, when
/// known); `None` when the database has no event segment manifest.
fn event_lag(
    root: &std::path::Path,
    remote_last: Option<u64>,
    remote_max_ts: Option<i64>,
) -> Option<EventLag> {
    let m = EVENT_MANIFESTS
        .iter()
        .find_map(|p| std::fs::read(root.join(p)).ok())
        .and_then(|b| EventManifest::parse(&b).ok())?;
    let local_last = m.segments.iter().map(|s| s.seq).max();
    let next = m.next_seq.or(local_last.map(|l| l + 1));
    let behind = match (local_last, remote_last) {
        (Some(l), Some(r)) => l.saturating_sub(r),
        (Some(_), None) => m.segments.len() as u64,
        _ => 0,
    };
    let max_ts_of = |seq: u64| m.segments.iter().find(|s| s.seq == seq)?.max_ts;
    let newest = m.segments.iter().filter_map(|s| s.max_ts).max();
    let shipped = remote_max_ts.or_else(|| remote_last.and_then(max_ts_of));
    let lag_ms = match (newest, shipped, behind) {
        (_, _, 0) => Some(0),
        (Some(n), Some(s), _) => Some((n - s).max(0)),
        _ => None,
    };
    Some(EventLag {
        local_next_seq: next,
        remote_last_seq: remote_last,
        segments_behind: behind,
        lag_ms,
    })
}

/// `2h 5m`, `45s`, `3d 4h`.
fn human(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(age: Option<i64>, pending: usize, behind: u64) -> Health {
        Health {
            target: "s3://b/p".into(),
            kind: "remote",
            last_success: age.map(|_| "2026-01-01T00:00:00.000Z".into()),
            age_seconds: age,
            pending: Some(Pending {
                total: pending,
                ..Pending::default()
            }),
            event_log: Some(EventLag {
                segments_behind: behind,
                ..EventLag::default()
            }),
            requests: 1,
        }
    }

    #[test]
    fn thresholds_name_what_is_over() {
        let t = Thresholds::new(Some(Duration::from_secs(7200)), Some(100), Some(0));
        assert!(health(Some(7200), 100, 0).problems(&t).is_empty());
        let kinds = |h: Health| h.problems(&t).iter().map(|p| p.kind).collect::<Vec<_>>();
        assert_eq!(
            kinds(health(Some(7201), 101, 1)),
            ["age", "pending", "event-lag"]
        );
        assert_eq!(kinds(health(None, 0, 0)), ["never"]);
        assert_eq!(
            health(Some(3 * 3600 + 60), 0, 0).problems(&t)[0].message,
            "last sync 3h 1m ago, over --max-age 2h 0m"
        );
        assert!(health(Some(10_000_000), 1000, 9)
            .problems(&Thresholds::default())
            .is_empty());
    }

    #[test]
    fn lag_counts_sealed_segments_the_remote_lacks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("events")).unwrap();
        std::fs::write(
            dir.path().join("events/_manifest.json"),
            r#"{"version":1,"nextSeq":4,"segments":[
                {"seq":1,"path":"seg-0001.parquet","minTs":0,"maxTs":1000},
                {"seq":2,"path":"seg-0002.parquet","minTs":1001,"maxTs":5000},
                {"seq":3,"path":"seg-0003.parquet","minTs":5001,"maxTs":9000}]}"#,
        )
        .unwrap();
        let l = event_lag(dir.path(), Some(1), None).unwrap();
        assert_eq!(
            (l.local_next_seq, l.segments_behind, l.lag_ms),
            (Some(4), 2, Some(8000))
        );
        let l = event_lag(dir.path(), Some(3), None).unwrap();
        assert_eq!((l.segments_behind, l.lag_ms), (0, Some(0)));
        let l = event_lag(dir.path(), None, None).unwrap();
        assert_eq!(l.segments_behind, 3);
        assert!(event_lag(&dir.path().join("none"), Some(1), None).is_none());
    }
}
