//! Splitting one push or mirror across machines: each run handles the
//! paths of its shard and leaves a record instead of committing; a merge
//! commits the union with the usual guard.
//!
//! A path's shard is [`crate::layout::shard_of`]: the same on every
//! machine and in every version. A shard run plans as the whole run would,
//! for its paths only (a push's shard scans and hashes only its own files,
//! and keeps its own stat cache and journal), uploads what they need,
//! deletes nothing, and, when every transfer succeeded, writes
//! `_meta/.pqsync/shards/<N>/<K>.json` at the remote: its paths as the
//! remote would hold them had it committed (its uploads and deletions over
//! the manifest it planned against, everything it left alone as it was),
//! and the commit id of that manifest. A merge reads the N records,
//! refuses unless all are there and were made against the manifest still
//! in place, and runs with their union as the source's files: what the
//! shards sent counts as already sent (from the records, without a
//! request), a path the union lacks is deleted (trash, `--max-delete` and
//! the commit guard as always), and the records go once the merge has
//! committed. A merge reads nothing of the source.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::source::SourceView;
use crate::error::{Error, Result};
use crate::manifest::{FileEntry, Manifest};
use crate::tree::local::JournalEntry;
use crate::tree::{LeftOut, RemoteManifest, StoreTree};

/// One shard of N: the paths whose hash falls in `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl Shard {
    /// Shard `index` of `count`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] unless `index < count`.
    pub fn new(index: u32, count: u32) -> Result<Shard> {
        if index >= count {
            return Err(Error::InvalidArgument {
                argument: "--shard",
                reason: format!(
                    "shard {index} of {count} does not exist: shards are numbered 0 to {}",
                    count.saturating_sub(1)
                ),
            });
        }
        Ok(Shard { index, count })
    }

    /// The shard `path` falls in, of `count`.
    pub fn of(path: &str, count: u32) -> u32 {
        crate::layout::shard_of(path, count)
    }

    /// Whether `path` is in this shard.
    pub fn contains(&self, path: &str) -> bool {
        Shard::of(path, self.count) == self.index
    }

    fn record_name(&self) -> String {
        format!("{SHARDS_DIR}/{}/{}.json", self.count, self.index)
    }
}

/// Where shard records live, under `_meta/.pqsync/`.
const SHARDS_DIR: &str = "shards";

/// What a shard run leaves at the destination.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ShardRecord {
    pub index: u32,
    pub count: u32,
    /// The commit id of the destination manifest the run planned against
    /// (`None`: there was none).
    pub against: Option<String>,
    /// The source's manifest identity (its files left out), for the merge's
    /// commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Manifest>,
    /// The shard's paths as the remote holds them once merged.
    pub files: Vec<FileEntry>,
    /// Paths of the shard the run could not read: the merge neither sends
    /// nor deletes them, so what the destination holds there stays.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// Paths whose new bytes wait under the shard's staging folder
    /// ([`staging_dir`]) instead of replacing the committed object: the
    /// merge copies them into place (inside the store) before it commits,
    /// so until then every reader finds the bytes the manifest names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<String>,
}

/// Where shard `shard`'s staged objects are, under `_meta/.pqsync/`.
pub(crate) fn staging_dir(shard: Shard) -> String {
    format!("staged/{}-{}", shard.count, shard.index)
}

/// Writes shard `shard`'s record at `remote`.
pub(crate) async fn write_record(
    remote: &StoreTree,
    shard: Shard,
    against: Option<String>,
    identity: Option<&Manifest>,
    files: &BTreeMap<String, FileEntry>,
    left_out: &[LeftOut],
    staged: Vec<String>,
) -> Result<()> {
    let identity = identity.map(Manifest::header);
    let record = ShardRecord {
        index: shard.index,
        count: shard.count,
        against,
        identity,
        files: files
            .values()
            .filter(|e| shard.contains(&e.path))
            .cloned()
            .collect(),
        left_out: left_out
            .iter()
            .filter(|l| l.dir || shard.contains(&l.path))
            .map(|l| {
                if l.dir {
                    format!("{}/", l.path)
                } else {
                    l.path.clone()
                }
            })
            .collect(),
        staged,
    };
    remote.write_state(&shard.record_name(), &record).await
}

/// A merge's view of the source: the union of the shard records at
/// `destination` as its files, each already sent (an entry made against the
/// manifest still in place is trusted without a request), the manifest now
/// there as the base, so a path the union lacks reads as deleted at the
/// source, and the paths a shard could not read left out. Returns the
/// shard count, to remove the records once the merge has committed.
///
/// # Errors
/// [`Error::Shards`] when a record is missing or stale; store errors.
pub(crate) async fn merged_view(
    destination: &StoreTree,
    remote: Option<&RemoteManifest>,
) -> Result<(SourceView, u32)> {
    let current = remote.and_then(|r| r.manifest.commit_id.as_deref());
    let records = read_records(destination, current).await?;
    let count = records.first().map_or(0, |r| r.count);
    let mut view = SourceView {
        // The remote's state is the base, in place rather than copied.
        base_is_remote: true,
        journal_trusted: true,
        shards: Some(count),
        ..SourceView::default()
    };
    for record in records {
        if view.manifest.is_none() {
            view.manifest = record.identity;
        }
        for e in record.files {
            view.journal.push(JournalEntry {
                path: e.path.clone(),
                tagged: e.tagged_hash(),
                against: record.against.clone(),
            });
            view.files.insert(e.path.clone(), e);
        }
        let dir = staging_dir(Shard {
            index: record.index,
            count: record.count,
        });
        view.staged
            .extend(record.staged.into_iter().map(|p| (p, dir.clone())));
        view.left_out.extend(record.left_out.into_iter().map(|p| {
            let (path, dir) = match p.strip_suffix('/') {
                Some(d) => (d.to_string(), true),
                None => (p, false),
            };
            LeftOut {
                dir,
                ..LeftOut::new(
                    &path,
                    "the shard that holds it could not read it".into(),
                    "read",
                )
            }
        }));
    }
    Ok((view, count))
}

/// The shard records at `remote`, checked: all N of one count, each made
/// against `current` (the commit id of the manifest now there).
///
/// # Errors
/// [`Error::Shards`] naming what is missing or stale.
pub(crate) async fn read_records(
    remote: &StoreTree,
    current: Option<&str>,
) -> Result<Vec<ShardRecord>> {
    let listing = remote.list_state().await?;
    let mut counts: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for o in &listing {
        let Some(rest) = o.name.strip_prefix(&format!("{SHARDS_DIR}/")) else {
            continue;
        };
        let Some((n, k)) = rest.trim_end_matches(".json").split_once('/') else {
            continue;
        };
        if let (Ok(n), Ok(k)) = (n.parse(), k.parse()) {
            counts.entry(n).or_default().push(k);
        }
    }
    let refuse = |reason: String| Error::Shards { reason };
    let (count, found) = match counts.len() {
        0 => {
            return Err(refuse(format!(
                "{} has no shard records: run the same command with `--shard K/N` for every K first",
                remote.url()
            )))
        }
        1 => counts.into_iter().next().expect("one count"),
        _ => {
            return Err(refuse(format!(
                "{} holds records of runs split {} ways; run one split to the end (its shards, then the merge) and remove the others under _meta/.pqsync/shards/",
                remote.url(),
                counts.keys().map(u32::to_string).collect::<Vec<_>>().join(" and ")
            )))
        }
    };
    let missing: Vec<String> = (0..count)
        .filter(|k| !found.contains(k))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!(
            "shard(s) {} of {} have not finished (no record yet); run them again, then merge",
            missing.join(", "),
            remote.url()
        )));
    }
    let mut records = Vec::new();
    for index in 0..count {
        let shard = Shard { index, count };
        let Some((record, _)) = remote
            .read_state::<ShardRecord>(&shard.record_name())
            .await?
        else {
            return Err(refuse(format!(
                "shard {index}/{count}'s record at {} disappeared; run that shard again",
                remote.url()
            )));
        };
        if let Some(stray) = record.files.iter().find(|e| !shard.contains(&e.path)) {
            return Err(refuse(format!(
                "shard {index}/{count}'s record names {}, which belongs to another shard; run that shard again",
                stray.path
            )));
        }
        records.push(record);
    }
    let stale: Vec<&ShardRecord> = records
        .iter()
        .filter(|r| r.against.as_deref() != current)
        .collect();
    if let Some(first) = stale.first() {
        return Err(refuse(format!(
            "{} changed since shard {}/{count} ran (it planned against commit {}, the manifest is now at {}); run the shards again, then merge",
            remote.url(),
            first.index,
            first.against.as_deref().unwrap_or("none"),
            current.unwrap_or("none")
        )));
    }
    Ok(records)
}

/// Removes the records of a merged split.
pub(crate) async fn remove_records(remote: &StoreTree, count: u32) {
    for index in 0..count {
        remote
            .delete_state(&Shard { index, count }.record_name())
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_paths_evenly_and_stably() {
        let paths: Vec<String> = (0..4000)
            .map(|i| format!("data/ns{i}/data.parquet"))
            .collect();
        let mut counts = [0usize; 4];
        for p in &paths {
            let k = Shard::of(p, 4);
            counts[k as usize] += 1;
            // Exactly one shard holds each path.
            let holders = (0..4)
                .filter(|&i| Shard::new(i, 4).unwrap().contains(p))
                .count();
            assert_eq!(holders, 1);
        }
        assert!(
            counts.iter().all(|&n| (800..1200).contains(&n)),
            "{counts:?}"
        );
        // The same on every machine and in every version: records written
        // by one pqsync are merged by another.
        let pinned: Vec<u32> = ["a", "data/users/data.parquet", "events/seg-0001.parquet"]
            .iter()
            .map(|p| Shard::of(p, 1000))
            .collect();
        assert_eq!(pinned, [143, 667, 188]);
        assert_eq!(Shard::of("anything", 1), 0);
        assert!(Shard::new(4, 4).is_err());
    }
}
