//! `forget`, `prune` and `check`: the operations that read the whole
//! repository, and the only ones that delete.
//!
//! Prune needs no lock. It works in two phases over separate runs: an
//! object no snapshot references is first *marked* (a mark record with the
//! time it was found unreferenced); a later prune deletes it only if it is
//! still unreferenced once the mark is older than the grace period, and
//! unmarks it if a snapshot references it again. A backup never relies on
//! a marked object (it stores that content anew under another key), and a
//! backup running longer than half the grace period checks the marks again
//! before it commits. So an object a backup relies on is either unmarked
//! when the backup starts, or marked after it started and so not deletable
//! before the backup has committed (or given up).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use futures::{StreamExt, TryStreamExt};
use object_store::{PutMode, PutOptions, PutPayload};
use serde::Serialize;

use super::format::{Mark, MARKS, OBJECTS, SNAPSHOTS};
use super::retention::{apply, ForgetReport, GroupBy, Policy};
use super::{Filter, Objects, Repository, Snapshot};
use crate::error::{Error, Result};
use crate::manifest::{ContentHasher, FileEntry};
use crate::tree::Packed;

/// Content some snapshot references: a whole object, or a file's place in
/// a pack.
struct Referenced {
    /// The object holding it.
    object: String,
    /// One entry holding it (for its size, hash and a path to name).
    entry: FileEntry,
    /// The short ids of the snapshots that need it.
    needed_by: Vec<u32>,
}

/// How a prune runs.
#[derive(Clone, Debug, Default)]
pub struct PruneOptions {
    /// How long a mark must stand before its objects are deleted; never
    /// less than the repository's own grace period (`None`: that period).
    pub grace: Option<std::time::Duration>,
    /// Report, change nothing.
    pub dry_run: bool,
}

/// What a prune found and did.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PruneReport {
    /// Snapshots read.
    pub snapshots: usize,
    /// Objects in the repository before the prune.
    pub objects: usize,
    /// Objects some snapshot references.
    pub referenced: usize,
    /// Objects marked now, and their bytes.
    pub marked: usize,
    /// Bytes of the objects marked now.
    pub marked_bytes: u64,
    /// Marked objects still within the grace period.
    pub waiting: usize,
    /// Objects unmarked because a snapshot references them again.
    pub unmarked: usize,
    /// Objects deleted, and their bytes.
    pub deleted: usize,
    /// Bytes of the objects deleted.
    pub deleted_bytes: u64,
    /// Requests made.
    pub requests: u64,
}

/// How much content `check` reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ReadData {
    /// None: only that every object exists with its size.
    None,
    /// Every object.
    All,
    /// This share of the objects (0–100), chosen at random.
    Percent(f64),
}

/// What `check` found.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// Snapshots read (each checked against its id).
    pub snapshots: usize,
    /// Distinct file contents the snapshots reference (each a whole
    /// object, or a place in a pack).
    pub referenced: usize,
    /// Objects holding them.
    pub objects: usize,
    /// File contents that were read and hashed.
    pub read: usize,
    /// Problems, one line each, naming the object and the snapshots that
    /// need it.
    pub problems: Vec<String>,
    /// Objects no snapshot references (a prune removes them).
    pub unreferenced: usize,
}

impl Repository {
    /// Lists every object under `objects/` with its size.
    pub(crate) async fn objects(&self) -> Result<Objects> {
        let tree = self.tree();
        let root = tree.location(OBJECTS);
        let mut out = BTreeMap::new();
        let mut list = tree.store().list(Some(&root));
        while let Some(m) = list
            .try_next()
            .await
            .map_err(|e| Error::store(format!("{}/{OBJECTS}", self.url()), e))?
        {
            if let Some(rel) = tree.rel_of(&m.location) {
                out.insert(rel.to_string(), m.size);
            }
        }
        Ok(out)
    }

    /// Every content the snapshots reference (an object's key, or a pack's
    /// key and `#offset` for a packed file), with one entry holding it and
    /// the snapshots that need it. Snapshots are read one at a time,
    /// so memory grows with the distinct objects, not with the snapshots.
    /// A snapshot that cannot be read is reported in `bad`; returns the
    /// short ids of those read (`needed_by` indexes them).
    async fn referenced(
        &self,
        ids: Vec<String>,
        bad: &mut Vec<String>,
    ) -> Result<(Vec<String>, HashMap<String, Referenced>)> {
        let mut out: HashMap<String, Referenced> = HashMap::new();
        let mut shorts: Vec<String> = Vec::new();
        let mut trees = futures::stream::iter(ids)
            .map(|id| async move { (self.entries_of(&id).await, id) })
            .buffer_unordered(1);
        while let Some((tree, id)) = trees.next().await {
            let tree = match tree {
                Ok(t) => t,
                Err(e) => {
                    bad.push(format!("snapshot {id}: {e}"));
                    continue;
                }
            };
            let n = shorts.len() as u32;
            shorts.push(id.chars().take(8).collect());
            for e in tree.iter().flat_map(crate::tree::units) {
                let object = self.object_of(&e);
                let unit = match Packed::of(&e) {
                    Some(p) => format!("{object}#{}", p.offset),
                    None => object.clone(),
                };
                let r = out.entry(unit).or_insert_with(|| Referenced {
                    object,
                    entry: e,
                    needed_by: Vec::new(),
                });
                if r.needed_by.last() != Some(&n) {
                    r.needed_by.push(n);
                }
            }
        }
        Ok((shorts, out))
    }

    /// Applies a retention policy to the snapshots `filter` passes, grouped
    /// by `group_by`, and (unless `dry_run`) deletes the snapshot records
    /// it does not keep. Deletes no content: `prune` does that.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty policy; store errors.
    pub async fn forget(
        &self,
        policy: &Policy,
        filter: &Filter,
        group_by: GroupBy,
        dry_run: bool,
    ) -> Result<ForgetReport> {
        let all: Vec<Snapshot> = self
            .snapshots()
            .await?
            .into_iter()
            .filter(|s| filter.matches(s))
            .collect();
        let groups = apply(policy, &all, group_by)?;
        let mut report = ForgetReport { groups, removed: 0 };
        if dry_run {
            return Ok(report);
        }
        let doomed: Vec<String> = report
            .groups
            .iter()
            .flat_map(|g| g.remove.iter().map(|d| format!("{SNAPSHOTS}/{}", d.id)))
            .collect();
        self.tree()
            .delete_many(&doomed)
            .await
            .map_err(|mut fails| fails.remove(0).1)?;
        report.removed = doomed.len();
        Ok(report)
    }

    /// Removes content no snapshot references, in two phases (see the
    /// module documentation); safe while backups run.
    ///
    /// # Errors
    /// Store errors; a damaged snapshot stops the prune before it deletes
    /// anything (its objects would look unreferenced).
    pub async fn prune(&self, opts: &PruneOptions) -> Result<PruneReport> {
        let start = self.requests();
        let floor = std::time::Duration::from_secs(self.config().grace_seconds);
        let grace = opts.grace.map_or(floor, |g| g.max(floor));
        // Marks first, then snapshots, then objects: an object listed is
        // either referenced by a snapshot listed, or was written by a
        // backup that commits later (and relies on it only if unmarked).
        let (snap_ids, mark_ids) = self.index().await?;
        let marks = self.marks(&mark_ids).await?;
        // Each record's objects, from the local cache where it has them.
        let mut bad = Vec::new();
        let mut live: HashSet<String> = HashSet::new();
        let mut read = 0;
        let mut sets = futures::stream::iter(snap_ids)
            .map(|id| async move { (self.objects_of(&id).await, id) })
            .buffer_unordered(1);
        while let Some((got, id)) = sets.next().await {
            match got {
                Ok(objects) => {
                    live.extend(objects);
                    read += 1;
                }
                Err(e) => bad.push(format!("snapshot {id}: {e}")),
            }
        }
        // What the parts of a split backup rely on is kept as if their
        // snapshot were saved already.
        live.extend(self.part_objects().await?);
        if let Some(first) = bad.first() {
            // Its objects would look unreferenced: delete nothing.
            return Err(Error::Repository {
                url: self.url().to_string(),
                reason: format!("{first}; prune deletes nothing while a snapshot cannot be read (forget it, or repair it, first)"),
            });
        }
        let objects = self.objects().await?;
        let now = chrono::Utc::now();
        let mut report = PruneReport {
            snapshots: read,
            objects: objects.len(),
            referenced: live.len(),
            ..Default::default()
        };
        let mut still_marked: BTreeSet<String> = BTreeSet::new();
        let mut doomed: Vec<(String, u64)> = Vec::new();
        let mut rewrites: Vec<(String, Option<Mark>)> = Vec::new();
        for (id, mark) in &marks {
            let time = chrono::DateTime::parse_from_rfc3339(&mark.time)
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or(now);
            let ripe =
                now - time >= chrono::Duration::from_std(grace).unwrap_or(chrono::TimeDelta::MAX);
            let (again, unref): (Vec<_>, Vec<_>) =
                mark.objects.iter().partition(|(k, _)| live.contains(*k));
            report.unmarked += again.len();
            if ripe {
                doomed.extend(unref.iter().map(|(k, s)| ((*k).clone(), **s)));
                rewrites.push((id.clone(), None));
            } else {
                report.waiting += unref.len();
                still_marked.extend(unref.iter().map(|(k, _)| (*k).clone()));
                if !again.is_empty() {
                    let kept = Mark {
                        time: mark.time.clone(),
                        objects: unref.into_iter().map(|(k, s)| (k.clone(), *s)).collect(),
                    };
                    rewrites.push((id.clone(), Some(kept)));
                }
            }
        }
        let doomed_keys: BTreeSet<&str> = doomed.iter().map(|(k, _)| k.as_str()).collect();
        let fresh: BTreeMap<String, u64> = objects
            .iter()
            .filter(|(k, _)| {
                !live.contains(*k)
                    && !still_marked.contains(*k)
                    && !doomed_keys.contains(k.as_str())
            })
            .map(|(k, s)| (k.clone(), *s))
            .collect();
        report.marked = fresh.len();
        report.marked_bytes = fresh.values().sum();
        report.deleted = doomed.len();
        report.deleted_bytes = doomed.iter().map(|(_, s)| s).sum();
        if opts.dry_run {
            report.requests = self.requests() - start;
            return Ok(report);
        }
        // Deletions, then the marks that named them: a prune killed in
        // between deletes them again (already gone is fine).
        let keys: Vec<String> = doomed.into_iter().map(|(k, _)| k).collect();
        self.tree()
            .delete_many(&keys)
            .await
            .map_err(|mut f| f.remove(0).1)?;
        for (id, replacement) in rewrites {
            if let Some(m) = replacement.filter(|m| !m.objects.is_empty()) {
                self.write_mark(&m).await?;
            }
            self.tree()
                .delete_many(&[format!("{MARKS}/{id}")])
                .await
                .map_err(|mut f| f.remove(0).1)?;
        }
        if !fresh.is_empty() {
            self.write_mark(&Mark {
                time: crate::manifest::now_iso(),
                objects: fresh,
            })
            .await?;
        }
        report.requests = self.requests() - start;
        Ok(report)
    }

    async fn write_mark(&self, m: &Mark) -> Result<()> {
        let bytes = serde_json::to_vec(m).expect("a mark serialises");
        let key = format!("{MARKS}/{:032x}", rand::random::<u128>());
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.tree()
            .store()
            .put_opts(&self.tree().location(&key), PutPayload::from(bytes), opts)
            .await
            .map(|_| ())
            .map_err(|e| Error::store(format!("{}/{key}", self.url()), e))
    }

    /// Checks the repository: every snapshot record matches its id and
    /// parses, every object a snapshot references exists with the size its
    /// entry gives, and (with `read`) the objects' content hashes to what
    /// the entries say.
    ///
    /// # Errors
    /// Store errors; what is wrong with the repository is in the report.
    pub async fn check(&self, read: ReadData) -> Result<CheckReport> {
        let (snap_ids, _) = self.index().await?;
        let mut report = CheckReport::default();
        let (shorts, referenced) = self.referenced(snap_ids, &mut report.problems).await?;
        report.snapshots = shorts.len();
        let objects = self.objects().await?;
        report.referenced = referenced.len();
        let live: HashSet<&str> = referenced.values().map(|r| r.object.as_str()).collect();
        report.objects = live.len();
        // What a split backup's parts rely on is not prune's to remove.
        let parts: HashSet<String> = self.part_objects().await?.into_iter().collect();
        report.unreferenced = objects
            .keys()
            .filter(|k| !live.contains(k.as_str()) && !parts.contains(*k))
            .count();
        let mut to_read = Vec::new();
        let mut refs: Vec<(&String, &Referenced)> = referenced.iter().collect();
        refs.sort_by(|a, b| a.0.cmp(b.0));
        for (unit, r) in refs {
            let (e, key) = (&r.entry, &r.object);
            let who = r
                .needed_by
                .iter()
                .map(|&n| shorts[n as usize].as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let packed = Packed::of(e);
            let (fits, wanted) = match &packed {
                Some(p) => (
                    objects.get(key).is_some_and(|&s| s >= p.offset + p.length),
                    format!("at least {}", p.offset + p.length),
                ),
                None => {
                    let want =
                        crate::tree::compressed_size(e).unwrap_or_else(|| self.stored_size(e.size));
                    (objects.get(key) == Some(&want), want.to_string())
                }
            };
            match objects.get(key) {
                None => report.problems.push(format!(
                    "{key} ({}) is missing; snapshots {who} cannot be restored whole",
                    e.path
                )),
                Some(&size) if !fits => report.problems.push(format!(
                    "{key} ({}) has {size} bytes, not {wanted}; snapshots {who} need it",
                    e.path,
                )),
                Some(_) => {
                    let pick = match read {
                        ReadData::None => false,
                        ReadData::All => true,
                        ReadData::Percent(p) => rand::random::<f64>() * 100.0 < p,
                    };
                    if pick {
                        to_read.push((unit.clone(), e.clone(), who));
                    }
                }
            }
        }
        report.read = to_read.len();
        let damaged: Vec<Option<String>> = futures::stream::iter(to_read)
            .map(|(unit, e, who)| async move {
                let key = unit.split('#').next().unwrap_or_default().to_string();
                match self.hash_unit(&key, &e).await {
                    Ok(true) => None,
                    Ok(false) => Some(format!(
                        "{key} ({}) does not hold the content its name says (damaged); snapshots {who} need it",
                        e.path
                    )),
                    Err(err) => Some(format!("{key}: {err}")),
                }
            })
            .buffer_unordered(8)
            .collect()
            .await;
        report.problems.extend(damaged.into_iter().flatten());
        Ok(report)
    }

    /// Whether the content `e` names in `key` (whole, or at its place in
    /// the pack) is `e`'s.
    async fn hash_unit(&self, key: &str, e: &FileEntry) -> Result<bool> {
        let Some(p) = Packed::of(e) else {
            return self.hash_object(key, e).await;
        };
        let shown = format!("{}/{key}", self.url());
        let stored = match self.tree().read_range(key, p.range()).await {
            Ok(b) => b,
            Err(err) => return Err(err),
        };
        let keys = self.keys()?;
        let open = |aad: &[u8], b: &[u8]| match &keys {
            Some(k) => k.open(aad, b, &shown),
            None => Ok(b.to_vec()),
        };
        Ok(crate::tree::decode_blob(&stored, &p, e, &open, &shown).is_ok())
    }

    async fn hash_object(&self, key: &str, e: &FileEntry) -> Result<bool> {
        let mut stream = self.read_object(key).await?;
        if crate::tree::compressed_size(e).is_some() {
            stream = crate::tree::decompress_stream(stream, format!("{}/{key}", self.url()));
        }
        let mut h = ContentHasher::new(e.hash_algorithm);
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // Sealed content that does not open is damaged content.
                Err(Error::Repository { .. }) => return Ok(false),
                Err(e) => return Err(e),
            };
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        Ok(n == e.size && h.finalize() == e.hash)
    }
}
