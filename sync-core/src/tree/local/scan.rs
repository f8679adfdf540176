//! Walking a directory and hashing what changed since the last scan.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rayon::prelude::*;
use serde::Deserialize;

use super::records::{RecordReader, RecordWriter, CACHE_MAGIC};
use super::{FileStat, LocalTree};
use crate::error::{Error, Result};
use crate::layout::{content_type_for, is_ignored, is_ignored_dir, is_own, MANIFEST_PATH};
use crate::manifest::{dense_map, hash_file, Digest, FileEntry, HashAlgorithm};

/// Files modified this recently (relative to the scan) are not cached, so an
/// edit within the file system's timestamp granularity is never missed.
const RACY_WINDOW_NS: i128 = 2_000_000_000;

/// The stat cache, in its binary form ([`super::records`]).
const CACHE_FILE: &str = "statcache.bin";
/// The stat cache as earlier versions wrote it; read once, then
/// replaced by [`CACHE_FILE`].
const LEGACY_CACHE_FILE: &str = "statcache.json";

/// A legacy stat-cache record: size, mtime, ctime, inode, algorithm, hash.
#[derive(Clone, Debug, Deserialize)]
struct LegacyRecord(u64, i64, i64, u64, HashAlgorithm, Digest);

#[derive(Debug, Default, Deserialize)]
struct LegacyCache {
    version: u32,
    files: HashMap<String, LegacyRecord>,
}

/// A file a walk found, with its hash once known. A scan keeps one per
/// file in a vector sorted by path, so a tree of millions of files costs
/// little more than its paths.
#[derive(Debug)]
pub(crate) struct Found {
    /// Relative, `/`-separated path.
    pub rel: String,
    /// The stat it was (or will be) hashed under.
    pub stat: FileStat,
    /// Its modification time.
    pub modified: std::time::SystemTime,
    /// Its content hash: from the cache, or read.
    pub hash: Option<Digest>,
}

impl Found {
    /// The manifest entry for this file, hashed with `alg`.
    pub fn entry(&self, alg: HashAlgorithm) -> FileEntry {
        make_entry(
            &self.rel,
            self.stat,
            self.modified,
            alg,
            self.hash.expect("a scanned file is hashed"),
        )
    }
}

/// What a scan found besides the files themselves.
#[derive(Debug, Default)]
pub(crate) struct ScanInfo {
    /// Files whose contents had to be read (cache misses).
    pub hashed: usize,
    /// Bytes read to hash them.
    pub hashed_bytes: u64,
    /// Things skipped, such as symlinks.
    pub warnings: Vec<String>,
    /// Paths that could not be read.
    pub left_out: Vec<LeftOut>,
    /// Paths skipped because ParqueDB skips them.
    pub ignored: Vec<String>,
}

/// What a scan found in the stat cache.
#[derive(Debug, Default)]
struct CacheUse {
    /// Records the cache holds.
    records: usize,
    /// It was an older version's cache, to be replaced.
    legacy: bool,
}

/// Why a file was not hashed.
enum Hashing {
    /// It is gone since the walk.
    Gone,
    /// It could not be read: the reason.
    Unreadable(String),
}

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
    /// Paths that could not be read (a directory or file pqsync may not
    /// read, a FIFO, a socket, a file that kept changing): neither sent nor
    /// taken for deleted.
    pub left_out: Vec<LeftOut>,
    /// Paths skipped because ParqueDB skips them (a folder with a final
    /// `/`, its contents not walked); pqsync's own files are not listed.
    pub ignored: Vec<String>,
}

/// A path a scan could not read.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LeftOut {
    /// Relative path.
    pub path: String,
    /// Whether it is a directory (everything below it is left out too).
    pub dir: bool,
    /// Why.
    pub reason: String,
    /// What could not be done with it (`read`, or `upload` for a name the
    /// remote cannot hold), as results report the operation.
    pub operation: &'static str,
}

impl LeftOut {
    /// A file left out of a run because `operation` cannot be done.
    pub fn new(path: &str, reason: String, operation: &'static str) -> Self {
        LeftOut {
            path: path.to_string(),
            dir: false,
            reason,
            operation,
        }
    }

    /// Whether `path` is this one or lies below it.
    pub fn covers(&self, path: &str) -> bool {
        path == self.path
            || (self.dir
                && path
                    .strip_prefix(self.path.as_str())
                    .is_some_and(|rest| rest.starts_with('/')))
    }
}

impl LocalTree {
    /// Walks the tree, hashing only files whose stat is not in the cache, and
    /// updates the cache. Blocking: call from a blocking thread.
    ///
    /// # Errors
    /// [`Error::Io`] for unreadable directories or files.
    pub fn scan(&self, alg: HashAlgorithm) -> Result<LocalScan> {
        let (found, info) = self.scan_sorted(alg)?;
        let mut scan = LocalScan {
            hashed: info.hashed,
            hashed_bytes: info.hashed_bytes,
            warnings: info.warnings,
            left_out: info.left_out,
            ignored: info.ignored,
            ..LocalScan::default()
        };
        scan.files = dense_map(found.iter().map(|f| (f.rel.clone(), f.entry(alg))));
        scan.stats = found.into_iter().map(|f| (f.rel, f.stat)).collect();
        Ok(scan)
    }

    /// [`LocalTree::scan`] as a vector sorted by path, every file hashed:
    /// the walk, sorted, is merged with the sorted stat cache as it streams
    /// from disk, the misses are hashed in parallel, and the cache is
    /// written back as a stream when anything changed. Blocking.
    ///
    /// # Errors
    /// As for [`LocalTree::scan`].
    pub(crate) fn scan_sorted(&self, alg: HashAlgorithm) -> Result<(Vec<Found>, ScanInfo)> {
        let started_ns = now_ns();
        let mut info = ScanInfo::default();
        if !self.root.exists() {
            return Ok((Vec::new(), info));
        }
        let mut found = self.walk(&mut info.warnings, &mut info.left_out, &mut info.ignored)?;
        // One shard's view: the other shards' files are theirs to read (an
        // unreadable folder may hold this shard's files, so it stays).
        found.retain(|f| self.keeps(&f.rel));
        info.left_out.retain(|l| l.dir || self.keeps(&l.path));
        found.sort_unstable_by(|a, b| a.rel.cmp(&b.rel));
        let cached = self.apply_cache(&mut found, alg);

        let hashed = std::sync::atomic::AtomicUsize::new(0);
        let hashed_bytes = std::sync::atomic::AtomicU64::new(0);
        let failures: Vec<(usize, Hashing)> = found
            .par_iter_mut()
            .enumerate()
            .filter(|(_, f)| f.hash.is_none())
            .filter_map(|(i, f)| match self.hash_stable(f, alg) {
                Ok(()) => {
                    use std::sync::atomic::Ordering::Relaxed;
                    hashed.fetch_add(1, Relaxed);
                    hashed_bytes.fetch_add(f.stat.size, Relaxed);
                    None
                }
                Err(h) => Some((i, h)),
            })
            .collect();
        info.hashed = hashed.into_inner();
        info.hashed_bytes = hashed_bytes.into_inner();
        if !failures.is_empty() {
            let mut failed = failures.into_iter().peekable();
            let mut i = 0;
            found.retain(|f| {
                let this = i;
                i += 1;
                match failed.next_if(|(j, _)| *j == this) {
                    // Gone since the walk: not there, like any deleted file.
                    Some((_, Hashing::Gone)) => false,
                    Some((_, Hashing::Unreadable(reason))) => {
                        info.left_out.push(LeftOut {
                            path: f.rel.clone(),
                            dir: false,
                            reason,
                            operation: "read",
                        });
                        false
                    }
                    None => true,
                }
            });
        }
        if info.hashed > 0 || cached.records != found.len() || cached.legacy {
            self.save_cache(&found, alg, started_ns);
        }
        info.left_out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok((found, info))
    }

    /// Fills in the hash of each found file (sorted by path) whose stat the
    /// stat cache holds for `alg`, merging the two as the cache streams.
    fn apply_cache(&self, found: &mut [Found], alg: HashAlgorithm) -> CacheUse {
        let mut used = CacheUse::default();
        let fits = |f: &Found, stat: &FileStat, a: HashAlgorithm| a == alg && *stat == f.stat;
        if let Some(mut reader) =
            RecordReader::open(&self.state_dir().join(CACHE_FILE), CACHE_MAGIC)
        {
            let mut next = reader.next_cache();
            for f in found.iter_mut() {
                while next.as_ref().is_some_and(|r| r.path < f.rel) {
                    used.records += 1;
                    next = reader.next_cache();
                }
                if let Some(r) = next.as_ref().filter(|r| r.path == f.rel) {
                    if fits(f, &r.stat, r.algorithm) {
                        f.hash = Some(r.hash);
                    }
                }
            }
            while next.is_some() {
                used.records += 1;
                next = reader.next_cache();
            }
            return used;
        }
        // An older version's cache: read once, replaced on save.
        let Some(legacy) = self
            .read_state_file(LEGACY_CACHE_FILE)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<LegacyCache>(&b).ok())
            .filter(|c| c.version == 1)
        else {
            return used;
        };
        used.legacy = true;
        used.records = legacy.files.len();
        for f in found.iter_mut() {
            if let Some(LegacyRecord(size, mtime, ctime, ino, a, hash)) = legacy.files.get(&f.rel) {
                let stat = FileStat {
                    size: *size,
                    mtime_ns: *mtime,
                    ctime_ns: *ctime,
                    ino: *ino,
                };
                if fits(f, &stat, *a) {
                    f.hash = Some(*hash);
                }
            }
        }
        used
    }

    /// The regular files of the tree that pqsync tracks (ignored names,
    /// symlinks, unportable and Unicode-duplicate names left out, each with
    /// a warning), with their stat. Blocking.
    fn walk(
        &self,
        warnings: &mut Vec<String>,
        left_out: &mut Vec<LeftOut>,
        ignored: &mut Vec<String>,
    ) -> Result<Vec<Found>> {
        let mut found: Vec<Found> = Vec::new();
        let skipped_dirs = std::cell::RefCell::new(Vec::new());
        let walker = walkdir::WalkDir::new(&self.root)
            .follow_links(false)
            .into_iter()
            .filter_entry(|e| {
                let skip = e.depth() > 0 && is_skipped_dir(&self.root, e);
                if skip {
                    if let Some(rel) = rel_path(&self.root, e.path()).filter(|r| !is_own(r)) {
                        skipped_dirs.borrow_mut().push(format!("{rel}/"));
                    }
                }
                !skip
            });
        for item in walker {
            let item = match item {
                Ok(item) => item,
                // The root itself unreadable: there is nothing to sync.
                Err(e) if e.depth() == 0 => {
                    let path = e.path().map(Path::to_path_buf).unwrap_or_default();
                    return Err(Error::io(path, e.into()));
                }
                Err(e) => {
                    let rel = e.path().and_then(|p| rel_path(&self.root, p));
                    let dir = e
                        .path()
                        .is_some_and(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir()));
                    if let Some(rel) = rel {
                        let reason = std::io::Error::from(e).to_string();
                        left_out.push(LeftOut {
                            path: rel,
                            dir,
                            reason,
                            operation: "read",
                        });
                    }
                    continue;
                }
            };
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
                if !is_own(&rel) && rel != MANIFEST_PATH {
                    ignored.push(rel);
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
            if ft.is_dir() {
                continue;
            }
            if !ft.is_file() {
                use std::os::unix::fs::FileTypeExt;
                let what = if ft.is_fifo() {
                    "a FIFO"
                } else if ft.is_socket() {
                    "a socket"
                } else {
                    "a device"
                };
                left_out.push(LeftOut {
                    path: rel,
                    dir: false,
                    reason: format!("not a regular file ({what})"),
                    operation: "read",
                });
                continue;
            }
            // A name a manifest cannot carry (a backslash, a control
            // character) would make the remote manifest unreadable.
            if let Err(e) = crate::manifest::validate_path(&rel, "the local tree") {
                warnings.push(format!("{e}; not synced"));
                continue;
            }
            let read = item
                .metadata()
                .map_err(std::io::Error::from)
                .and_then(|md| Ok((md.modified()?, md)));
            match read {
                Ok((modified, md)) => found.push(Found {
                    rel,
                    stat: FileStat::of(&md),
                    modified,
                    hash: None,
                }),
                Err(e) => left_out.push(LeftOut {
                    path: rel,
                    dir: false,
                    reason: e.to_string(),
                    operation: "read",
                }),
            }
        }

        ignored.extend(skipped_dirs.into_inner());
        ignored.sort();
        // Two names that are the same file once Unicode-normalised would
        // overwrite each other elsewhere: sync the first, report the other.
        // Distinct ASCII names are distinct after normalisation: only trees
        // with a non-ASCII name need the check (and its map of every name).
        if found.iter().all(|f| f.rel.is_ascii()) {
            return Ok(found);
        }
        let mut seen_nfc = std::collections::HashMap::new();
        found.retain(|Found { rel, .. }| {
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
        let mut left_out = Vec::new();
        let files = self
            .walk(&mut warnings, &mut left_out, &mut Vec::new())?
            .into_iter()
            .map(|f| (f.rel, f.stat.size))
            .collect();
        warnings.extend(
            left_out
                .into_iter()
                .map(|l| format!("{}: left out: {}", l.path, l.reason)),
        );
        Ok((files, warnings))
    }

    /// Hashes a file and checks its stat did not move while it was read;
    /// a file that keeps changing is reported rather than hashed wrongly.
    fn hash_stable(&self, f: &mut Found, alg: HashAlgorithm) -> std::result::Result<(), Hashing> {
        let path = self.abs(&f.rel);
        let fail = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => Hashing::Gone,
            _ => Hashing::Unreadable(e.to_string()),
        };
        for _ in 0..3 {
            let (hash, n) = match hash_file(&path, alg, f.stat.size) {
                Ok(h) => h,
                Err(Error::Io { source, .. }) => return Err(fail(source)),
                Err(e) => return Err(Hashing::Unreadable(e.to_string())),
            };
            let md = std::fs::symlink_metadata(&path).map_err(fail)?;
            let after = FileStat::of(&md);
            if after == f.stat && n == f.stat.size {
                f.hash = Some(hash);
                return Ok(());
            }
            f.stat = after;
            f.modified = md.modified().map_err(fail)?;
        }
        Err(Hashing::Unreadable(
            "it kept changing while being hashed".into(),
        ))
    }

    /// Writes the stat cache for `found` (sorted, hashed with `alg`),
    /// leaving out files changed so recently before `started_ns` that a
    /// same-tick edit could go unnoticed. Best effort: a cache that cannot
    /// be written only costs a rehash.
    fn save_cache(&self, found: &[Found], alg: HashAlgorithm, started_ns: i128) {
        let written = self.write_state_with(CACHE_FILE, |out| {
            let mut w = RecordWriter::new(out, CACHE_MAGIC)?;
            for f in found.iter().filter(|f| cacheable(&f.stat, started_ns)) {
                if let Some(hash) = &f.hash {
                    w.cache(&f.rel, &f.stat, alg, hash)?;
                }
            }
            w.finish().map(drop)
        });
        match written {
            Ok(()) => self.remove_state_file(LEGACY_CACHE_FILE),
            Err(e) => tracing::warn!("could not save the stat cache: {e}"),
        }
    }

    /// Drops the stat cache, so the next scan reads every file.
    pub(crate) fn forget_hashes(&self) {
        self.remove_state_file(CACHE_FILE);
        self.remove_state_file(LEGACY_CACHE_FILE);
    }

    /// Records files this run wrote, so the next scan need not read them:
    /// the cache is rewritten as one merge of its records with these.
    pub fn remember(&self, entries: &[(FileEntry, FileStat)]) {
        if entries.is_empty() {
            return;
        }
        let now = now_ns();
        let mut new: Vec<&(FileEntry, FileStat)> = entries
            .iter()
            .filter(|(_, st)| cacheable(st, now))
            .collect();
        new.sort_by(|a, b| a.0.path.cmp(&b.0.path));
        new.dedup_by(|a, b| a.0.path == b.0.path);
        let old = RecordReader::open(&self.state_dir().join(CACHE_FILE), CACHE_MAGIC);
        let written = self.write_state_with(CACHE_FILE, |out| {
            let mut w = RecordWriter::new(out, CACHE_MAGIC)?;
            let mut old = old;
            let mut next = old.as_mut().and_then(|r| r.next_cache());
            for (e, st) in new {
                while let Some(r) = next.as_ref().filter(|r| r.path <= e.path) {
                    if r.path != e.path {
                        w.cache(&r.path, &r.stat, r.algorithm, &r.hash)?;
                    }
                    next = old.as_mut().and_then(|r| r.next_cache());
                }
                w.cache(&e.path, st, e.hash_algorithm, &e.hash)?;
            }
            while let Some(r) = next {
                w.cache(&r.path, &r.stat, r.algorithm, &r.hash)?;
                next = old.as_mut().and_then(|r| r.next_cache());
            }
            w.finish().map(drop)
        });
        if let Err(e) = written {
            tracing::warn!("could not save the stat cache: {e}");
        }
    }
}

/// Whether a file with this stat may be cached: not changed so recently
/// (relative to `now_ns`) that a same-tick edit could go unnoticed.
fn cacheable(st: &FileStat, now_ns: i128) -> bool {
    i128::from(st.mtime_ns) + RACY_WINDOW_NS < now_ns
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
        etag: Some(crate::manifest::fs_etag(stat.mtime_ns, stat.size)),
        extra: None,
        content_type: Some(content_type_for(rel).into()),
    }
}

fn is_skipped_dir(root: &Path, e: &walkdir::DirEntry) -> bool {
    if !e.file_type().is_dir() {
        return false;
    }
    match rel_path(root, e.path()) {
        Some(rel) => is_ignored_dir(&rel),
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
        std::fs::write(root.join(".DS_Store"), b"t").unwrap();
        std::fs::write(root.join("data/.x.parquet.pqsync.tmp-1-0000abcd"), b"t").unwrap();
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
}
