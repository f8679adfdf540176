//! Rebuilding `_meta/manifest.json` from what a tree actually holds.
//!
//! A directory is walked and every file hashed, ignoring the stat cache. A
//! remote is listed; for each object one HEAD reads the content hash pqsync
//! stored in the object's metadata when it uploaded it, and only objects
//! without one (or with a hash of another algorithm, or a size that
//! disagrees with the listing) are streamed and hashed. The database's
//! identity (`databaseId`, `name`, `owner`, `slug`, `visibility`,
//! `metadata`) is kept from the old manifest when it can be read.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::layout::{content_type_for, MANIFEST_PATH};
use crate::manifest::{
    now_iso, validate_path, ContentHasher, Digest, FileEntry, HashAlgorithm, Manifest, Timestamp,
};
use crate::sync::guard::Guard;
use crate::tree::{CommitMode, LocalTree, StoreTree};

/// What a rebuild did.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
#[serde(rename_all = "camelCase")]
pub struct RebuildReport {
    /// The directory or remote.
    pub target: String,
    /// Files in the new manifest.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Files read and hashed.
    pub hashed: usize,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// Files whose hash came from object metadata (one HEAD each).
    pub from_metadata: usize,
    /// Requests made to the remote (0 for a directory).
    pub requests: u64,
    /// Files in the old manifest, if it could be read.
    pub previous_files: Option<usize>,
    /// Paths the old manifest lacked.
    pub added: Vec<String>,
    /// Paths the old manifest listed that are not there.
    pub removed: Vec<String>,
    /// Paths whose size or hash differs from the old manifest.
    pub changed: Vec<String>,
    /// Where the old manifest was saved, when it could not be parsed or
    /// differed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Objects left out because a run announced their deletion (remote
    /// only).
    pub left_out: Vec<String>,
}

/// The identity of the old manifest, read as leniently as possible: a
/// manifest that fails validation may still name its database.
fn identity(raw: Option<&[u8]>, fallback_name: &str) -> Manifest {
    if let Some(m) = raw.and_then(|b| Manifest::from_slice(b, "").ok()) {
        let mut m = m;
        m.files.clear();
        m.commit_id = None;
        return m;
    }
    let v: serde_json::Value = raw
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
    let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let id = text("databaseId").unwrap_or_else(|| {
        let id: u128 = rand::random();
        format!("{id:032x}")
    });
    let mut m = Manifest::new(id, text("name").unwrap_or_else(|| fallback_name.into()));
    m.owner = text("owner");
    m.slug = text("slug");
    m.metadata = v.get("metadata").filter(|x| x.is_object()).cloned();
    m.visibility = v
        .get("visibility")
        .and_then(|x| serde_json::from_value(x.clone()).ok())
        .unwrap_or_default();
    m
}

fn compare(report: &mut RebuildReport, old: Option<&[u8]>, new: &Manifest) {
    let Some(old) = old.and_then(|b| Manifest::from_slice(b, "").ok()) else {
        report.added = new.files.keys().cloned().collect();
        return;
    };
    report.previous_files = Some(old.files.len());
    for (p, e) in &new.files {
        match old.files.get(p) {
            None => report.added.push(p.clone()),
            Some(o) if !o.same_content(e) => report.changed.push(p.clone()),
            Some(_) => {}
        }
    }
    report.removed = old
        .files
        .keys()
        .filter(|p| !new.files.contains_key(*p))
        .cloned()
        .collect();
}

/// Rebuilds a directory's manifest by hashing every file, and writes it
/// (unless `dry_run`).
/// The old manifest, if it differs, is kept as
/// `_meta/.pqsync/manifest.json.bak`.
///
/// # Errors
/// [`Error::Io`].
pub async fn rebuild_local(
    tree: &LocalTree,
    alg: Option<HashAlgorithm>,
    dry_run: bool,
) -> Result<RebuildReport> {
    let t = tree.clone();
    crate::tree::blocking("rebuilding the manifest", move || {
        rebuild_local_blocking(&t, alg, dry_run)
    })
    .await
}

fn rebuild_local_blocking(
    tree: &LocalTree,
    alg: Option<HashAlgorithm>,
    dry_run: bool,
) -> Result<RebuildReport> {
    let path = tree.abs(MANIFEST_PATH);
    let raw = match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(&path, e)),
    };
    let name = std::fs::canonicalize(tree.root())
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_else(|| "database".into());
    let mut manifest = identity(raw.as_deref(), &name);
    let alg = alg
        .or_else(|| {
            raw.as_deref()
                .and_then(|b| Manifest::from_slice(b, "").ok())
                .and_then(|m| m.hash_algorithm())
        })
        .unwrap_or_default();
    // Never trust the cache here: the point is to see what is on disk.
    tree.forget_hashes();
    let scan = tree.scan(alg)?;
    manifest.files = scan.files;
    manifest.last_synced_at = now_iso();
    manifest.synced_from = Some("rebuild".into());
    let mut report = RebuildReport {
        target: tree.root().display().to_string(),
        files: manifest.files.len(),
        bytes: manifest.total_bytes(),
        hashed: scan.hashed,
        hashed_bytes: scan.hashed_bytes,
        ..Default::default()
    };
    compare(&mut report, raw.as_deref(), &manifest);
    if dry_run {
        return Ok(report);
    }
    if let Some(old) = &raw {
        let differs = report.previous_files.is_none()
            || !report.added.is_empty()
            || !report.removed.is_empty()
            || !report.changed.is_empty();
        if differs {
            tree.write_state_file("manifest.json.bak", old)?;
            let bak = tree.state_dir().join("manifest.json.bak");
            report.backup = Some(bak.display().to_string());
        }
    }
    tree.write_manifest(&manifest)?;
    Ok(report)
}

/// Rebuilds a remote's manifest from a listing, one HEAD per object, and a
/// streamed hash of objects without pqsync's hash metadata, then writes it
/// with a conditional PUT against the manifest it replaces.
///
/// # Errors
/// [`Error::Store`]; [`Error::Precondition`] if another writer replaced the
/// manifest during the rebuild.
pub async fn rebuild_remote(
    tree: &StoreTree,
    alg: Option<HashAlgorithm>,
    concurrency: usize,
    dry_run: bool,
) -> Result<RebuildReport> {
    // The same guard as a push: a lease where commits cannot be
    // compare-and-swap, so no push commits and deletes while the objects
    // are listed.
    let guard = if dry_run {
        Guard::none()
    } else {
        Guard::for_remote(tree).await?
    };
    let result = rebuild_remote_guarded(tree, alg, concurrency, dry_run, guard.conditional).await;
    guard.release().await;
    result
}

async fn rebuild_remote_guarded(
    tree: &StoreTree,
    alg: Option<HashAlgorithm>,
    concurrency: usize,
    dry_run: bool,
    conditional: bool,
) -> Result<RebuildReport> {
    let (old_raw, old_etag) = match tree.read_manifest_bytes().await? {
        Some((bytes, etag)) => (Some(bytes.to_vec()), etag),
        None => (None, None),
    };
    let name = tree
        .url()
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or("database")
        .to_string();
    let mut manifest = identity(old_raw.as_deref(), &name);
    let alg = alg
        .or_else(|| {
            old_raw
                .as_deref()
                .and_then(|b| Manifest::from_slice(b, "").ok())
                .and_then(|m| m.hash_algorithm())
        })
        .unwrap_or_default();
    // Deletions a push has announced are read after the manifest and before
    // the listing: a path one owns that the manifest no longer names is an
    // object about to go, not one to add back. (Had the push committed after
    // the manifest was read, the compare-and-swap below fails instead.)
    let pending: std::collections::HashSet<String> = tree
        .pending_deletions(None)
        .await?
        .into_iter()
        .flat_map(|(_, files)| files.into_iter().map(|f| f.path))
        .collect();
    let old_files = old_raw
        .as_deref()
        .and_then(|b| Manifest::from_slice(b, "").ok())
        .map(|m| m.files)
        .unwrap_or_default();
    let named = |p: &str| old_files.contains_key(p);
    let mut objects = tree.list_objects().await?;
    let mut report = RebuildReport {
        target: tree.url().to_string(),
        ..Default::default()
    };
    objects.retain(|rel, _| {
        let going = pending.contains(rel) && !named(rel);
        if going {
            report.left_out.push(rel.clone());
        }
        !going
    });
    let entries: Vec<(FileEntry, bool)> = futures::stream::iter(objects)
        .map(|(rel, meta)| object_entry(tree, rel, meta, alg))
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut files = BTreeMap::new();
    for (e, hashed) in entries {
        if hashed {
            report.hashed += 1;
            report.hashed_bytes += e.size;
        } else {
            report.from_metadata += 1;
        }
        files.insert(e.path.clone(), e);
    }
    manifest.files = files;
    manifest.last_synced_at = now_iso();
    manifest.synced_from = Some("rebuild".into());
    report.files = manifest.files.len();
    report.bytes = manifest.total_bytes();
    compare(&mut report, old_raw.as_deref(), &manifest);
    if dry_run {
        report.requests = tree.requests();
        return Ok(report);
    }
    let etag = if conditional { old_etag } else { None };
    commit(tree, &manifest, old_raw.is_some(), etag).await?;
    report.requests = tree.requests();
    Ok(report)
}

/// The manifest entry of one listed object: its hash from pqsync's
/// `pqsync-hash` metadata (one HEAD) when that is in `alg` and the sizes
/// agree, else from streaming and hashing the object. The flag says which.
pub(crate) async fn object_entry(
    tree: &StoreTree,
    rel: String,
    meta: object_store::ObjectMeta,
    alg: HashAlgorithm,
) -> Result<(FileEntry, bool)> {
    validate_path(&rel, tree.url())?;
    let (size, tagged) = tree.head_hash(&rel).await?;
    let want = format!("{alg}:");
    let from_meta = tagged
        .as_deref()
        .and_then(|t| t.strip_prefix(&want))
        .filter(|h| size == meta.size && h.len() == alg.hex_len())
        .and_then(Digest::from_hex);
    let (hash, size, hashed) = match from_meta {
        Some(h) => (h, size, false),
        None => {
            let mut stream = tree.open(&rel).await?;
            let mut h = ContentHasher::new(alg);
            let mut n = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                h.update(&chunk);
                n += chunk.len() as u64;
            }
            (h.finalize(), n, true)
        }
    };
    let entry = FileEntry {
        content_type: Some(content_type_for(&rel).into()),
        etag: meta.e_tag.clone(),
        extra: None,
        hash,
        hash_algorithm: alg,
        modified_at: Timestamp::from_millis(meta.last_modified.timestamp_millis()),
        path: rel,
        size,
    };
    Ok((entry, hashed))
}

/// Writes the rebuilt manifest, conditionally on the one it replaces (or on
/// there being none), and unconditionally on stores that cannot check an
/// ETag (plain directories).
async fn commit(
    tree: &StoreTree,
    manifest: &Manifest,
    had_one: bool,
    etag: Option<String>,
) -> Result<()> {
    let mode = match (had_one, etag) {
        (false, _) => CommitMode::Create,
        (true, Some(etag)) => CommitMode::Update(etag),
        (true, None) => CommitMode::Overwrite,
    };
    match tree.write_manifest(manifest, mode).await {
        Err(Error::Store {
            source: object_store::Error::NotImplemented { .. },
            ..
        }) => tree
            .write_manifest(manifest, CommitMode::Overwrite)
            .await
            .map(|_| ()),
        other => other.map(|_| ()),
    }
}
