//! A backup split across machines: `backup --shard K/N` on each, then
//! `backup --merge-shards` once.
//!
//! A shard backs up only the paths whose hash falls in it (see
//! [`crate::sync::Shard`]), storing their content as any backup does, and
//! instead of a snapshot leaves its part at `index/shards/<N>/<K>`: a
//! snapshot record (sealed like one in an encrypted repository) whose tree
//! holds the shard's files. The merge reads the N parts, checks them, and
//! writes one snapshot of their union, then removes the parts.
//!
//! Content a part relies on is safe from a prune the way a backup's is
//! (see [`super::prune`]): it was unmarked when its shard started, so no
//! prune deletes it before that start plus the grace period. The merge
//! therefore refuses once three quarters of the grace period have passed
//! since the earliest shard started, and reads the marks again before it
//! commits.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

use super::format::{entry_object_keyed, SnapshotRecord, SnapshotSummary, SHARDS};
use super::{Repository, Snapshot};
use crate::error::{Error, Result};
use crate::sync::Shard;

/// One shard's part of a split backup, read back.
struct Part {
    index: u32,
    record: SnapshotRecord,
}

/// What a merge did with the split backups it found.
#[derive(Debug, Default)]
pub struct MergeReport {
    /// The snapshots saved, one per database whose shards had all
    /// finished.
    pub saved: Vec<Snapshot>,
    /// Why each other split was not merged, and what to run.
    pub refused: Vec<String>,
}

/// The parts waiting in the repository: by split folder, shard count and
/// shard.
type Waiting = BTreeMap<String, BTreeMap<u32, Vec<u32>>>;

impl Repository {
    /// Saves one snapshot of each split backup whose shards have all left
    /// their part (the splits of each database are kept apart), and
    /// removes those parts. A split that cannot be merged yet is reported,
    /// and changes nothing.
    ///
    /// # Errors
    /// [`Error::Shards`] when the repository holds no parts; store errors.
    pub async fn merge_shards(&self) -> Result<MergeReport> {
        let waiting = self.shard_parts().await?;
        if waiting.is_empty() {
            return Err(Error::Shards {
                reason: format!(
                    "{} has no parts of a split backup: run `pqsync backup --shard K/N` for every K first",
                    self.url()
                ),
            });
        }
        let mut report = MergeReport::default();
        for (split, counts) in waiting {
            match self.merge_split(&split, counts).await {
                Ok(snapshot) => report.saved.push(snapshot),
                Err(Error::Shards { reason }) => report.refused.push(reason),
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// The name of the database a part in `split` backed up, for messages.
    async fn split_database(&self, split: &str, count: u32, index: u32) -> String {
        let keys = self.keys().ok().flatten();
        let key = super::target::shard_key(split, count, index);
        let Ok(bytes) = self.tree().read_all(&key).await else {
            return format!("split {split}");
        };
        let id = blake3::hash(&bytes).to_hex().to_string();
        match SnapshotRecord::decode(&bytes, &id, self.url(), keys.as_deref()) {
            Ok(r) => format!("database {:?}", r.name),
            Err(_) => format!("split {split}"),
        }
    }

    /// Merges the parts of one database's split backup.
    async fn merge_split(&self, split: &str, counts: BTreeMap<u32, Vec<u32>>) -> Result<Snapshot> {
        let keys = self.keys()?;
        let refuse = |reason: String| Error::Shards { reason };
        if counts.len() > 1 {
            let (&n, ks) = counts.iter().next().expect("two counts");
            let db = self.split_database(split, n, ks[0]).await;
            return Err(refuse(format!(
                "{db} has parts of backups split {} ways under {}/{SHARDS}/{split}/; remove the folder of the split you gave up (for example `aws s3 rm --recursive` on {SHARDS}/{split}/{n}/), then merge the other",
                counts.keys().map(u32::to_string).collect::<Vec<_>>().join(" and "),
                self.url()
            )));
        }
        let (count, found) = counts.into_iter().next().expect("one count");
        let missing: Vec<String> = (0..count)
            .filter(|k| !found.contains(k))
            .map(|k| format!("{k}/{count}"))
            .collect();
        if !missing.is_empty() {
            let db = self.split_database(split, count, found[0]).await;
            return Err(refuse(format!(
                "shard(s) {} of the backup of {db} to {} have not finished (no part yet); run them, then merge",
                missing.join(", "),
                self.url()
            )));
        }
        let parts: Vec<Part> = futures::stream::iter(0..count)
            .map(|index| {
                let keys = keys.clone();
                async move {
                    let key = super::target::shard_key(split, count, index);
                    let bytes = self.tree().read_all(&key).await?;
                    let id = blake3::hash(&bytes).to_hex().to_string();
                    let record = SnapshotRecord::decode(&bytes, &id, self.url(), keys.as_deref())
                        .map_err(|e| {
                        refuse(format!(
                            "shard {index}/{count}'s part at {}/{key} is damaged ({e}); run that shard again, then merge",
                            self.url()
                        ))
                    })?;
                    Ok::<_, Error>(Part { index, record })
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        // The snapshot names the database as shard 0 saw it (a directory
        // without a manifest gets a new identity in each shard).
        let first = &parts[0].record;
        // The earliest start: content every part relies on is safe until
        // it plus the grace period.
        let started = parts
            .iter()
            .map(|p| p.record.time().unwrap_or(DateTime::<Utc>::MIN_UTC))
            .min()
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let grace = chrono::Duration::seconds(self.config().grace_seconds as i64);
        let age = Utc::now() - started;
        if age * 4 >= grace * 3 {
            return Err(refuse(format!(
                "the first shard of this backup started {}s ago, too close to the repository's {}s grace period: a prune may delete content the parts rely on; nothing was committed: run the shards again (they send only what is missing), then merge",
                age.num_seconds(),
                grace.num_seconds()
            )));
        }
        let shown = |k: u32| {
            format!(
                "{}/{}",
                self.url(),
                super::target::shard_key(split, count, k)
            )
        };
        let mut union = first.tree(&shown(0))?;
        union.files.clear();
        let (mut added_objects, mut added_bytes) = (0, 0);
        for p in &parts {
            let tree = p.record.tree(&shown(p.index))?;
            if let Some(stray) = tree
                .files
                .keys()
                .find(|path| Shard::of(path, count) != p.index)
            {
                return Err(refuse(format!(
                    "shard {}/{count}'s part names {stray}, which belongs to another shard; run that shard again",
                    p.index
                )));
            }
            union.files.extend(tree.files);
            added_objects += p.record.summary.added_objects;
            added_bytes += p.record.summary.added_bytes;
        }
        union.validate(&format!("{}/{SHARDS}/{split}/{count}", self.url()))
            .map_err(|e| refuse(format!("the shards' parts do not make one tree ({e}): the directory changed between the shards' runs; run them again, then merge")))?;
        // A prune may have marked what a part stored, since nothing
        // referenced it yet.
        let marked = self.marked().await?;
        let hit = union.files.values().find(|e| {
            crate::tree::units(e)
                .iter()
                .any(|u| marked.contains(&entry_object_keyed(self.config(), keys.as_deref(), u)))
        });
        if let Some(e) = hit {
            return Err(refuse(format!(
                "a prune marked the content of {} for deletion before the merge; nothing was committed: run its shard again (it stores that content anew), then merge",
                e.path
            )));
        }
        let record = SnapshotRecord {
            time: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            summary: SnapshotSummary {
                files: union.files.len() as u64,
                bytes: union.total_bytes(),
                added_objects,
                added_bytes,
            },
            manifest: Some(serde_json::value::to_raw_value(&union).expect("a manifest serialises")),
            ..first.clone()
        };
        let (bytes, id) = record.encode(keys.as_deref());
        super::target::put_record(self.tree(), self.url(), &id, bytes.into()).await?;
        let parts: Vec<String> = (0..count)
            .map(|k| super::target::shard_key(split, count, k))
            .collect();
        if let Err(fails) = self.tree().delete_many(&parts).await {
            tracing::warn!(
                "the snapshot is saved, but {} part(s) of the split could not be removed: {}",
                fails.len(),
                fails[0].1
            );
        }
        Ok(Snapshot {
            id,
            record: SnapshotRecord {
                manifest: None,
                ..record
            },
        })
    }

    /// The objects the parts of split backups waiting for their merge rely
    /// on, so a prune keeps them as it keeps a snapshot's (one LIST, one
    /// GET per part). A part that cannot be read is left out: it cannot be
    /// merged either.
    ///
    /// # Errors
    /// Store errors.
    pub(crate) async fn part_objects(&self) -> Result<Vec<String>> {
        let keys = self.keys()?;
        let listed: Vec<object_store::ObjectMeta> = self
            .tree()
            .store()
            .list(Some(&self.tree().location(SHARDS)))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("{}/{SHARDS}", self.url()), e))?;
        let mut out = Vec::new();
        for m in listed {
            let Some(rel) = self.tree().rel_of(&m.location) else {
                continue;
            };
            let bytes = self.tree().read_all(rel).await?;
            let id = blake3::hash(&bytes).to_hex().to_string();
            let tree = SnapshotRecord::decode(&bytes, &id, self.url(), keys.as_deref())
                .and_then(|r| r.tree(&format!("{}/{rel}", self.url())));
            match tree {
                Ok(tree) => out.extend(
                    tree.files
                        .values()
                        .flat_map(crate::tree::units)
                        .map(|u| entry_object_keyed(self.config(), keys.as_deref(), &u)),
                ),
                Err(e) => tracing::warn!("{rel}: a part of a split backup that cannot be read ({e}) keeps nothing from a prune"),
            }
        }
        Ok(out)
    }

    /// The parts of split backups waiting in the repository (one LIST),
    /// by split folder, shard count and shard.
    ///
    /// # Errors
    /// Store errors.
    async fn shard_parts(&self) -> Result<Waiting> {
        let root = self.tree().location(SHARDS);
        let listed: Vec<object_store::ObjectMeta> = self
            .tree()
            .store()
            .list(Some(&root))
            .try_collect()
            .await
            .map_err(|e| Error::store(format!("{}/{SHARDS}", self.url()), e))?;
        let mut waiting = Waiting::new();
        for m in listed {
            let Some(rel) = self.tree().rel_of(&m.location) else {
                continue;
            };
            let mut fields = rel
                .strip_prefix(&format!("{SHARDS}/"))
                .unwrap_or("")
                .split('/');
            let (Some(split), Some(n), Some(k), None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            match (n.parse::<u32>(), k.parse::<u32>()) {
                (Ok(n), Ok(k)) if k < n => waiting
                    .entry(split.to_string())
                    .or_default()
                    .entry(n)
                    .or_default()
                    .push(k),
                _ => {}
            }
        }
        Ok(waiting)
    }
}
