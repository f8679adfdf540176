//! A local directory tree: scanning with a stat cache, streaming reads, and
//! atomic, verified writes.
//!
//! # Contract
//! * A scan reads a file's contents only when its stat (size, mtime in ns,
//!   inode, ctime) differs from the cache in `_meta/.pqsync/statcache.json`.
//! * A read first checks that the file still has the stat the scan saw, so a
//!   file edited during a run is never sent under a stale hash.
//! * A write goes to a temporary file beside the target, is hashed while it
//!   streams, fsynced, and renamed into place only if size and hash match the
//!   manifest. No partial file is ever left where a real one belongs.
//! * Nothing is written through a symlink or outside the root.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::error::{Error, Result};
use crate::hash::{hash_file, ContentHasher};
use crate::ignore::{is_ignored, is_ignored_name};
use crate::manifest::{
    content_type_for, Digest, FileEntry, HashAlgorithm, Manifest, MANIFEST_PATH,
};

/// pqsync's private state directory inside a tree; never synced.
pub const STATE_DIR: &str = "_meta/.pqsync";

/// Chunk size for streaming local reads.
const READ_CHUNK: usize = 1024 * 1024;

/// Files modified this recently (relative to the scan) are not cached, so an
/// edit within the file system's timestamp granularity is never missed.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// The identity of a file's current version as the file system reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
    /// Status-change time, ns since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
}

impl FileStat {
    fn of(md: &std::fs::Metadata) -> Self {
        FileStat {
            size: md.len(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
        }
    }
}

/// One stat-cache record: the stat a hash was computed for.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CacheRecord(u64, i64, i64, u64, HashAlgorithm, Digest);

#[derive(Debug, Default, Serialize, Deserialize)]
struct StatCache {
    version: u32,
    files: HashMap<String, CacheRecord>,
}

impl StatCache {
    /// Caches `e`'s hash under `st`, unless the file changed so recently
    /// (relative to `now_ns`) that a same-tick edit could go unnoticed.
    fn record(&mut self, e: &FileEntry, st: FileStat, now_ns: i128) {
        if i128::from(st.mtime_ns) + RACY_WINDOW_NS >= now_ns {
            return;
        }
        self.files.insert(
            e.path.clone(),
            CacheRecord(
                st.size,
                st.mtime_ns,
                st.ctime_ns,
                st.ino,
                e.hash_algorithm,
                e.hash,
            ),
        );
    }
}

/// A file found by a walk: relative path, stat, modification time.
type Walked = (String, FileStat, std::time::SystemTime);

/// The result of scanning a local tree.
#[derive(Debug, Default)]
pub struct LocalScan {
    /// Every syncable file, hashed.
    pub files: BTreeMap<String, FileEntry>,
    /// The stat each entry was hashed under.
    pub stats: HashMap<String, FileStat>,
    /// Files whose contents had to be read (cache misses).
    pub hashed: usize,
    /// Bytes read to hash them.
    pub hashed_bytes: u64,
    /// Things skipped, such as symlinks.
    pub warnings: Vec<String>,
}

/// A local directory.
#[derive(Debug, Clone)]
pub struct LocalTree {
    root: PathBuf,
}

impl LocalTree {
    /// A tree rooted at `root`, which need not exist yet.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalTree { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The state directory, `_meta/.pqsync`.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// Absolute path of a validated relative path.
    pub fn abs(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Walks the tree, hashing only files whose stat is not in the cache, and
    /// updates the cache. Blocking: call from a blocking thread.
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable directories or files.
    pub fn scan(&self, alg: HashAlgorithm) -> Result<LocalScan> {
        let started_ns = now_ns();
        let mut scan = LocalScan::default();
        if !self.root.exists() {
            return Ok(scan);
        }
        let cache = self.load_cache();
        let found = self.walk(&mut scan.warnings)?;
        let mut misses = Vec::new();
        for (rel, stat, modified) in found {
            match cache.files.get(&rel) {
                Some(CacheRecord(size, mtime, ctime, ino, a, hash))
                    if *a == alg
                        && *size == stat.size
                        && *mtime == stat.mtime_ns
                        && *ctime == stat.ctime_ns
                        && *ino == stat.ino =>
                {
                    scan.files
                        .insert(rel.clone(), make_entry(&rel, stat, modified, alg, *hash));
                    scan.stats.insert(rel, stat);
                }
                _ => misses.push((rel, stat, modified)),
            }
        }

        let hashed: Vec<Result<(String, FileStat, std::time::SystemTime, String)>> = misses
            .into_par_iter()
            .map(|(rel, stat, modified)| self.hash_stable(rel, stat, modified, alg))
            .collect();
        for r in hashed {
            let (rel, stat, modified, hash) = r?;
            scan.hashed += 1;
            scan.hashed_bytes += stat.size;
            scan.files.insert(
                rel.clone(),
                make_entry(&rel, stat, modified, alg, digest(&hash)),
            );
            scan.stats.insert(rel, stat);
        }
        if scan.hashed > 0 || cache.files.len() != scan.files.len() {
            self.save_cache(&scan, started_ns);
        }
        Ok(scan)
    }

    /// The regular files of the tree that pqsync tracks (ignored names,
    /// symlinks, unportable and Unicode-duplicate names left out, each with
    /// a warning), with their stat. Blocking.
    fn walk(&self, warnings: &mut Vec<String>) -> Result<Vec<Walked>> {
        let mut found: Vec<Walked> = Vec::new();
        let walker = walkdir::WalkDir::new(&self.root)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !is_skipped_dir(&self.root, e));
        for item in walker {
            let item = item.map_err(|e| {
                let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                Error::io(path, e.into())
            })?;
            if item.depth() == 0 {
                continue;
            }
            let Some(rel) = rel_path(&self.root, item.path()) else {
                warnings.push(format!(
                    "{}: skipped, the name is not valid UTF-8",
                    item.path().display()
                ));
                continue;
            };
            if is_ignored(&rel) {
                if item.file_type().is_file() {
                    remove_if_stale_temp(item.path());
                }
                continue;
            }
            let ft = item.file_type();
            if ft.is_symlink() {
                let target = std::fs::read_link(item.path())
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                warnings.push(format!(
                    "{rel}: symlink to {target:?} not followed and not synced"
                ));
                continue;
            }
            if !ft.is_file() {
                continue;
            }
            // A name a manifest cannot carry (a backslash, a control
            // character) would make the remote manifest unreadable.
            if let Err(e) = crate::manifest::validate_path(&rel, "the local tree") {
                warnings.push(format!("{e}; not synced"));
                continue;
            }
            let md = item
                .metadata()
                .map_err(|e| Error::io(item.path(), e.into()))?;
            let modified = md.modified().map_err(|e| Error::io(item.path(), e))?;
            found.push((rel, FileStat::of(&md), modified));
        }

        // Two names that are the same file once Unicode-normalised would
        // overwrite each other elsewhere: sync the first, report the other.
        // Distinct ASCII names are distinct after normalisation: only trees
        // with a non-ASCII name need the check (and its map of every name).
        if found.iter().all(|(rel, _, _)| rel.is_ascii()) {
            return Ok(found);
        }
        let mut seen_nfc = std::collections::HashMap::new();
        found.retain(|(rel, _, _)| {
            use unicode_normalization::UnicodeNormalization;
            let nfc: String = rel.nfc().collect();
            match seen_nfc.entry(nfc) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    warnings.push(format!(
                        "{rel}: same name as {:?} after Unicode normalisation; not synced",
                        first.get()
                    ));
                    false
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(rel.clone());
                    true
                }
            }
        });
        Ok(found)
    }

    /// The tracked files of the tree and their sizes, without reading them,
    /// plus warnings about what was left out. Blocking.
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable directories.
    pub fn list(&self) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        let mut warnings = Vec::new();
        if !self.root.exists() {
            return Ok((BTreeMap::new(), warnings));
        }
        let files = self
            .walk(&mut warnings)?
            .into_iter()
            .map(|(rel, stat, _)| (rel, stat.size))
            .collect();
        Ok((files, warnings))
    }

    /// Hashes a file and checks its stat did not move while it was read;
    /// a file that keeps changing is reported rather than hashed wrongly.
    fn hash_stable(
        &self,
        rel: String,
        mut stat: FileStat,
        mut modified: std::time::SystemTime,
        alg: HashAlgorithm,
    ) -> Result<(String, FileStat, std::time::SystemTime, String)> {
        let path = self.abs(&rel);
        for _ in 0..3 {
            let (hash, n) = hash_file(&path, alg, stat.size)?;
            let md = std::fs::symlink_metadata(&path).map_err(|e| Error::io(&path, e))?;
            let after = FileStat::of(&md);
            if after == stat && n == stat.size {
                return Ok((rel, stat, modified, hash));
            }
            stat = after;
            modified = md.modified().map_err(|e| Error::io(&path, e))?;
        }
        Err(Error::ChangedDuringRun {
            path: rel,
            detail: "it kept changing while being hashed".into(),
        })
    }

    fn cache_path(&self) -> PathBuf {
        self.state_dir().join("statcache.json")
    }

    fn load_cache(&self) -> StatCache {
        // A missing or unreadable cache only costs a rehash; never an error.
        std::fs::read(self.cache_path())
            .ok()
            .and_then(|b| serde_json::from_slice::<StatCache>(&b).ok())
            .filter(|c| c.version == 1)
            .unwrap_or_default()
    }

    fn save_cache(&self, scan: &LocalScan, started_ns: i128) {
        let mut cache = StatCache {
            version: 1,
            files: HashMap::with_capacity(scan.files.len()),
        };
        for (rel, e) in &scan.files {
            cache.record(e, scan.stats[rel], started_ns);
        }
        self.store_cache(&cache);
    }

    fn store_cache(&self, cache: &StatCache) {
        let bytes = serde_json::to_vec(cache).expect("cache serialises");
        if let Err(e) = self.write_state_file("statcache.json", &bytes) {
            tracing::warn!("could not save the stat cache: {e}");
        }
    }

    /// Records a file this run wrote, so the next scan need not read it.
    pub fn remember(&self, entries: &[(FileEntry, FileStat)]) {
        if entries.is_empty() {
            return;
        }
        let mut cache = self.load_cache();
        cache.version = 1;
        let now = now_ns();
        for (e, st) in entries {
            cache.record(e, *st, now);
        }
        self.store_cache(&cache);
    }

    /// Writes a file under the state directory atomically.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write_state_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let dir = self.state_dir();
        let target = dir.join(name);
        write_atomic(&target, bytes)
    }

    /// Reads a file under the state directory, `None` if it does not exist.
    ///
    /// # Errors
    /// [`Error::Io`] for anything but "not found".
    pub fn read_state_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.state_dir().join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Removes a state file if present.
    pub fn remove_state_file(&self, name: &str) {
        let _ = std::fs::remove_file(self.state_dir().join(name));
    }

    /// Reads the local `_meta/manifest.json`, if any.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] if it exists but does not parse.
    pub fn read_manifest(&self) -> Result<Option<Manifest>> {
        let path = self.abs(MANIFEST_PATH);
        match std::fs::read(&path) {
            Ok(b) => Manifest::from_slice(&b, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes the local `_meta/manifest.json` atomically.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        write_atomic(&self.abs(MANIFEST_PATH), &manifest.to_json_pretty())
    }

    /// The current stat of a file, `None` if it does not exist.
    ///
    /// # Errors
    /// [`Error::Io`] for anything but "not found".
    pub fn stat(&self, rel: &str) -> Result<Option<FileStat>> {
        let path = self.abs(rel);
        match std::fs::symlink_metadata(&path) {
            Ok(md) => Ok(Some(FileStat::of(&md))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Opens a file for streaming after checking it still has the stat the
    /// scan hashed it under.
    ///
    /// # Errors
    /// [`Error::ChangedDuringRun`] if it was modified or removed since the
    /// scan; [`Error::Io`] otherwise.
    pub async fn open(
        &self,
        rel: &str,
        expected: FileStat,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let path = self.abs(rel);
        let file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ChangedDuringRun {
                    path: rel.to_string(),
                    detail: "deleted".into(),
                })
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        let md = file.metadata().await.map_err(|e| Error::io(&path, e))?;
        let now = FileStat::of(&md);
        if now.size != expected.size || now.mtime_ns != expected.mtime_ns || now.ino != expected.ino
        {
            return Err(Error::ChangedDuringRun {
                path: rel.to_string(),
                detail: "modified since it was hashed".into(),
            });
        }
        let stream = futures::stream::unfold(Some((file, path)), |state| async move {
            let (mut file, path) = state?;
            let mut buf = bytes::BytesMut::with_capacity(READ_CHUNK);
            loop {
                match file.read_buf(&mut buf).await {
                    Ok(0) if buf.is_empty() => return None,
                    Ok(0) => return Some((Ok(buf.freeze()), None)),
                    Ok(_) if buf.len() >= READ_CHUNK => {
                        return Some((Ok(buf.freeze()), Some((file, path))))
                    }
                    Ok(_) => continue,
                    Err(e) => return Some((Err(Error::io(&path, e)), None)),
                }
            }
        });
        Ok(stream.boxed())
    }

    /// Streams bytes into `rel`, verifying them against `entry` before the
    /// file replaces whatever is there. `prior` is the stat the scan saw for
    /// the existing file (`None` if there was none); if the file has changed
    /// since, it is left alone.
    ///
    /// On success returns the new file's stat. `on_bytes` is called with each
    /// chunk's length as it is written.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the bytes do not match the entry,
    /// [`Error::ChangedDuringRun`] if the target changed locally,
    /// [`Error::UnsafePath`] if a parent is a symlink, [`Error::Io`] otherwise
    /// (a full disk included). The temporary file is removed on every error.
    pub async fn write(
        &self,
        entry: &FileEntry,
        mut stream: BoxStream<'static, Result<Bytes>>,
        prior: Option<FileStat>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<FileStat> {
        let rel = entry.path.as_str();
        let target = self.abs(rel);
        let parent = target
            .parent()
            .expect("validated path has a parent")
            .to_path_buf();
        self.ensure_dir(rel, &parent)?;
        let name = target
            .file_name()
            .expect("validated path has a name")
            .to_string_lossy()
            .to_string();
        let tmp = parent.join(format!(
            ".{name}.pqsync.tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .await
                .map_err(|e| Error::io(&tmp, e))?;
            let mut hasher = ContentHasher::new(entry.hash_algorithm);
            let mut total = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                if total > entry.size {
                    return Err(Error::Mismatch {
                        path: rel.to_string(),
                        what: "size",
                        expected: entry.size.to_string(),
                        actual: format!("more than {}", entry.size),
                        retryable: false,
                    });
                }
                hasher.update(&chunk);
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io(&tmp, e))?;
                on_bytes(chunk.len() as u64);
            }
            if total != entry.size {
                return Err(Error::Mismatch {
                    path: rel.to_string(),
                    what: "size",
                    expected: entry.size.to_string(),
                    actual: total.to_string(),
                    retryable: true,
                });
            }
            let hash = hasher.finalize_hex();
            if hash != entry.hash {
                return Err(Error::Mismatch {
                    path: rel.to_string(),
                    what: "hash",
                    expected: format!("{}:{}", entry.hash_algorithm, entry.hash),
                    actual: format!("{}:{hash}", entry.hash_algorithm),
                    retryable: false,
                });
            }
            file.flush().await.map_err(|e| Error::io(&tmp, e))?;
            let std_file = file.into_std().await;
            let tmp2 = tmp.clone();
            let mtime = entry.modified().map(std::time::SystemTime::from);
            tokio::task::spawn_blocking(move || -> Result<()> {
                if let Some(t) = mtime {
                    std_file.set_modified(t).map_err(|e| Error::io(&tmp2, e))?;
                }
                std_file.sync_all().map_err(|e| Error::io(&tmp2, e))
            })
            .await
            .map_err(|e| Error::io(&tmp, std::io::Error::other(e)))??;
            // The Unison rule: re-check the target just before replacing it.
            let current = self.stat(rel)?;
            let unchanged = match (prior, current) {
                (None, None) => true,
                (Some(p), Some(c)) => {
                    p.size == c.size && p.mtime_ns == c.mtime_ns && p.ino == c.ino
                }
                _ => false,
            };
            if !unchanged {
                return Err(Error::ChangedDuringRun {
                    path: rel.to_string(),
                    detail: "the local file changed since the scan".into(),
                });
            }
            if current.is_some() && target.is_dir() {
                return Err(Error::Invalid(format!(
                    "{rel}: a directory is in the way of this file"
                )));
            }
            tokio::fs::rename(&tmp, &target)
                .await
                .map_err(|e| Error::io(&target, e))?;
            let _ = sync_dir(&parent);
            let md = std::fs::symlink_metadata(&target).map_err(|e| Error::io(&target, e))?;
            Ok(FileStat::of(&md))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Creates `dir` (the parent of `rel`) and every missing ancestor,
    /// refusing to pass through a symlink or a file.
    fn ensure_dir(&self, rel: &str, dir: &Path) -> Result<()> {
        let relative = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut cur = self.root.clone();
        std::fs::create_dir_all(&cur).map_err(|e| Error::io(&cur, e))?;
        for comp in relative.components() {
            cur.push(comp);
            match std::fs::symlink_metadata(&cur) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(Error::UnsafePath {
                        path: rel.to_string(),
                        origin: "the local tree".into(),
                        reason: format!("{} is a symlink; not writing through it", cur.display()),
                    })
                }
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Invalid(format!(
                        "{rel}: {} is a file where a directory is needed",
                        cur.display()
                    )))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match std::fs::create_dir(&cur) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io(&cur, e)),
                    }
                }
                Err(e) => return Err(Error::io(&cur, e)),
            }
        }
        Ok(())
    }

    /// Deletes a file if it still has the stat the scan saw, then removes
    /// directories left empty.
    ///
    /// # Errors
    /// [`Error::ChangedDuringRun`] if it was modified since the scan.
    pub fn delete(&self, rel: &str, prior: Option<FileStat>) -> Result<()> {
        let path = self.abs(rel);
        let current = self.stat(rel)?;
        match (prior, current) {
            (_, None) => return Ok(()),
            (Some(p), Some(c))
                if p.size == c.size && p.mtime_ns == c.mtime_ns && p.ino == c.ino => {}
            _ => {
                return Err(Error::ChangedDuringRun {
                    path: rel.to_string(),
                    detail: "modified locally since the scan; not deleted".into(),
                })
            }
        }
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) {
                break;
            }
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }
}

/// Removes a download temp file (`.NAME.pqsync.tmp-PID-RAND`) left behind by
/// a pqsync process that no longer runs, such as one that was killed.
fn remove_if_stale_temp(path: &Path) {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let Some((_, tail)) = name.split_once(".pqsync.tmp-") else {
        return;
    };
    let Some(pid) = tail.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return;
    };
    let proc_root = Path::new("/proc");
    if pid != std::process::id() && proc_root.is_dir() && !proc_root.join(pid.to_string()).exists()
    {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(
                "could not remove stale temporary file {}: {e}",
                path.display()
            );
        }
    }
}

/// A hasher's hex output as a digest.
fn digest(hex: &str) -> Digest {
    Digest::from_hex(hex).expect("hashers produce lowercase hex")
}

fn make_entry(
    rel: &str,
    stat: FileStat,
    modified: std::time::SystemTime,
    alg: HashAlgorithm,
    hash: Digest,
) -> FileEntry {
    FileEntry {
        path: rel.to_string(),
        size: stat.size,
        hash,
        hash_algorithm: alg,
        modified_at: modified.into(),
        etag: None,
        content_type: Some(content_type_for(rel).into()),
    }
}

fn is_skipped_dir(root: &Path, e: &walkdir::DirEntry) -> bool {
    if !e.file_type().is_dir() {
        return false;
    }
    let name = e.file_name().to_string_lossy();
    if is_ignored_name(&name) {
        return true;
    }
    match rel_path(root, e.path()) {
        Some(rel) => is_ignored(&rel),
        None => false,
    }
}

fn rel_path(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?;
    let mut out = String::new();
    for comp in rel.components() {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str(comp.as_os_str().to_str()?);
    }
    Some(out)
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Writes a file atomically: temporary file, fsync, rename, fsync directory.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    let dir = target.parent().expect("target has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pqsync.tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(target, e))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Readable like any other file of the database, not 0600.
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(target, e))?;
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(target, e))?;
    tmp.persist(target)
        .map_err(|e| Error::io(target, e.error))?;
    let _ = sync_dir(dir);
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_skips_ignored_and_symlinks_and_uses_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("data/users")).unwrap();
        std::fs::create_dir_all(root.join(".git")).unwrap();
        std::fs::create_dir_all(root.join("_meta")).unwrap();
        std::fs::write(root.join("data/users/data.parquet"), b"PAR1xxPAR1").unwrap();
        std::fs::write(root.join(".git/HEAD"), b"ref").unwrap();
        std::fs::write(root.join("_meta/manifest.json"), b"{}").unwrap();
        std::fs::write(root.join("x.tmp"), b"t").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("evil")).unwrap();
        // Old mtime so the entry is cacheable.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(root.join("data/users/data.parquet"))
            .unwrap()
            .set_modified(old)
            .unwrap();

        let tree = LocalTree::new(root);
        let s1 = tree.scan(HashAlgorithm::Blake3).unwrap();
        assert_eq!(
            s1.files.keys().collect::<Vec<_>>(),
            vec!["data/users/data.parquet"]
        );
        assert_eq!(s1.hashed, 1);
        assert!(s1.warnings.iter().any(|w| w.contains("evil")));
        let s2 = tree.scan(HashAlgorithm::Blake3).unwrap();
        assert_eq!(s2.hashed, 0, "unchanged file must come from the cache");
        assert_eq!(s1.files, s2.files);
        // A different algorithm is a cache miss.
        let s3 = tree.scan(HashAlgorithm::Sha256).unwrap();
        assert_eq!(s3.hashed, 1);
    }

    #[test]
    fn scan_skips_names_a_manifest_cannot_carry() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("caf\u{e9}.parquet"), b"1").unwrap();
        std::fs::write(root.join("cafe\u{301}.parquet"), b"2").unwrap();
        std::fs::write(root.join("back\\slash"), b"3").unwrap();
        std::fs::write(root.join("ok.parquet"), b"4").unwrap();
        let scan = LocalTree::new(root).scan(HashAlgorithm::Blake3).unwrap();
        assert_eq!(scan.files.len(), 2, "{:?}", scan.files.keys());
        assert!(scan.files.contains_key("ok.parquet"));
        assert_eq!(scan.warnings.len(), 2, "{:?}", scan.warnings);
        let mut m = crate::manifest::Manifest::new("d", "n");
        m.files = scan.files;
        crate::manifest::Manifest::from_slice(&m.to_json_pretty(), "t")
            .expect("what is synced can be read back");
    }

    #[test]
    fn scan_removes_temp_files_of_dead_processes_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("data")).unwrap();
        // PID 999999999 cannot exist; our own PID is alive.
        let dead = root.join("data/.x.parquet.pqsync.tmp-999999999-0000abcd");
        let live = root.join(format!(
            "data/.y.parquet.pqsync.tmp-{}-0000abcd",
            std::process::id()
        ));
        std::fs::write(&dead, b"partial").unwrap();
        std::fs::write(&live, b"in progress").unwrap();
        let scan = LocalTree::new(root).scan(HashAlgorithm::Blake3).unwrap();
        assert!(scan.files.is_empty());
        assert!(!dead.exists());
        assert!(live.exists());
    }

    #[tokio::test]
    async fn write_rejects_wrong_bytes_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let tree = LocalTree::new(dir.path());
        let data = Bytes::from_static(b"hello world");
        let entry = FileEntry {
            path: "a/b.bin".into(),
            size: data.len() as u64,
            hash: crate::hash::digest_bytes(&data, HashAlgorithm::Blake3),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            etag: None,
            content_type: None,
        };
        let bad = futures::stream::iter(vec![Ok(Bytes::from_static(b"hello WORLD"))]).boxed();
        let err = tree.write(&entry, bad, None, &|_| {}).await.unwrap_err();
        assert!(err.to_string().contains("hash mismatch"), "{err}");
        assert!(std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .next()
            .is_none());

        let good = futures::stream::iter(vec![Ok(data.clone())]).boxed();
        tree.write(&entry, good, None, &|_| {}).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b.bin")).unwrap(), data);
    }

    #[tokio::test]
    async fn write_refuses_symlinked_parent() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let tree = LocalTree::new(dir.path());
        let entry = FileEntry {
            path: "link/x".into(),
            size: 1,
            hash: crate::hash::digest_bytes(b"x", HashAlgorithm::Blake3),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            etag: None,
            content_type: None,
        };
        let s = futures::stream::iter(vec![Ok(Bytes::from_static(b"x"))]).boxed();
        let err = tree.write(&entry, s, None, &|_| {}).await.unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }
}
