//! A local directory tree: scanning with a stat cache, streaming reads,
//! atomic, verified writes, guarded deletes, and pqsync's own state for each
//! remote the directory syncs with.
//!
//! # Contract
//! * A scan reads a file's contents only when its stat (size, mtime in ns,
//!   inode, ctime) differs from the cache in the state's `statcache.bin`
//!   ([`LocalTree::scan`]).
//! * pqsync's own state (stat cache, bases, journals, remote record,
//!   trash) lives outside the directory, in a per-user state home keyed by
//!   the directory's canonical path ([`state_dir_for`]); nothing but
//!   `_meta/manifest.json` is written into the database for pqsync itself.
//! * A read first checks that the file still has the stat the scan saw, so a
//!   file edited during a run is never sent under a stale hash.
//! * A write goes to a temporary file beside the target, is hashed while it
//!   streams, fsynced, and renamed into place only if size and hash match the
//!   manifest. No partial file is ever left where a real one belongs.
//! * Nothing is written through a symlink or outside the root.

mod records;
mod scan;
mod state;
mod trash;
mod write;

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::layout::{MANIFEST_PATH, STATE_DIR};
use crate::manifest::Manifest;

pub use scan::{LeftOut, LocalScan};
pub use state::{database_root, default_state_home, state_dir_for, STATE_HOME_VAR};
pub(crate) use state::{
    folder_name, last_remote, remote_key, BaseStamp, JournalEntry, RemoteState,
};
pub(crate) use write::open_at;

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
    pub(crate) fn of(md: &std::fs::Metadata) -> Self {
        FileStat {
            size: md.len(),
            mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
            ctime_ns: md.ctime() * 1_000_000_000 + md.ctime_nsec(),
            ino: md.ino(),
        }
    }
}

/// A local directory.
#[derive(Debug, Clone)]
pub struct LocalTree {
    root: PathBuf,
    state: PathBuf,
    /// Whether new files were written whose bytes are not yet known to be
    /// on disk (see [`LocalTree::sync_writes`]).
    unsynced: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// One shard's view of the tree, as `(index, count)`: only the files
    /// whose path falls in that shard ([`crate::layout::shard_of`]) are
    /// scanned, and the shard keeps its own state.
    shard: Option<(u32, u32)>,
}

impl LocalTree {
    /// A tree rooted at `root`, which need not exist yet, with its state in
    /// the default state home ([`default_state_home`]).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::with_state_home(root, &default_state_home())
    }

    /// A tree rooted at `root` whose state lives under `home` (in the
    /// folder [`state_dir_for`] names).
    pub fn with_state_home(root: impl Into<PathBuf>, home: &Path) -> Self {
        let root = root.into();
        let state = state_dir_for(home, &root);
        LocalTree {
            root,
            state,
            unsynced: Default::default(),
            shard: None,
        }
    }

    /// A tree that only keeps state, in `state` (a mirror's journal of
    /// one source, which has no directory of its own).
    pub(crate) fn state_only(state: PathBuf) -> Self {
        LocalTree {
            root: state.clone(),
            state,
            unsynced: Default::default(),
            shard: None,
        }
    }

    /// Shard `index` of `count` of this tree, for one of several runs that
    /// split a push: its scan finds only the shard's files, its state (stat
    /// cache, journal, part log) is its own, and its run lock lets the
    /// other shards' runs share the directory while shutting out any
    /// other run.
    pub(crate) fn shard(&self, index: u32, count: u32) -> Self {
        LocalTree {
            state: self.state.join("shards").join(format!("{count}-{index}")),
            shard: Some((index, count)),
            ..self.clone()
        }
    }

    /// Whether this is one shard's view of the tree.
    pub(crate) fn is_shard(&self) -> bool {
        self.shard.is_some()
    }

    /// Whether the tree's scan keeps `rel` (every path, unless it is one
    /// shard's view).
    pub(crate) fn keeps(&self, rel: &str) -> bool {
        self.shard
            .is_none_or(|(index, count)| crate::layout::shard_of(rel, count) == index)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// pqsync's state for this directory: outside it, in the state home.
    pub fn state_dir(&self) -> PathBuf {
        self.state.clone()
    }

    /// Where earlier versions kept the state, inside the database
    /// (`_meta/.pqsync`); [`LocalTree::migrate_state`] moves it out.
    pub fn legacy_state_dir(&self) -> PathBuf {
        self.root.join(STATE_DIR)
    }

    /// Absolute path of a validated relative path.
    pub fn abs(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Takes this directory's run lock, so no other pqsync run on it can
    /// read or write its state meanwhile; released when the returned guard
    /// is dropped (or the process ends). A directory that does not exist yet
    /// has nothing to protect: no lock is taken.
    ///
    /// The runs of one split push ([`LocalTree::shard`]) share the
    /// directory's lock, and each holds its shard's own.
    ///
    /// # Errors
    /// [`Error::Busy`] while another run holds it; [`Error::Io`].
    pub fn lock(&self) -> Result<Option<RunLock>> {
        let dir = match std::fs::File::open(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&self.root, e)),
        };
        let busy = |path: &Path, e: std::fs::TryLockError| match e {
            std::fs::TryLockError::WouldBlock => Error::Busy {
                path: path.display().to_string(),
            },
            std::fs::TryLockError::Error(e) => Error::io(path, e),
        };
        if self.shard.is_none() {
            dir.try_lock().map_err(|e| busy(&self.root, e))?;
            return Ok(Some(RunLock { _held: vec![dir] }));
        }
        dir.try_lock_shared().map_err(|e| busy(&self.root, e))?;
        std::fs::create_dir_all(&self.state).map_err(|e| Error::io(&self.state, e))?;
        let own = std::fs::File::open(&self.state).map_err(|e| Error::io(&self.state, e))?;
        own.try_lock().map_err(|e| busy(&self.root, e))?;
        Ok(Some(RunLock {
            _held: vec![dir, own],
        }))
    }

    /// The remote this directory last synced with, from its state's
    /// `remote.json`.
    ///
    /// # Errors
    /// [`Error::Io`] if the record exists but cannot be read;
    /// [`Error::ManifestCorrupt`] if it does not parse.
    pub fn last_remote(&self) -> Result<Option<String>> {
        last_remote(self)
    }

    /// What this directory has cached about the capabilities of the remote
    /// named `url`, if it has written to it.
    pub fn remote_capabilities(&self, url: &str) -> Option<crate::tree::Capabilities> {
        RemoteState::new(self, url).capabilities()
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

    /// Reads the local `_meta/manifest.json`'s header and the digest of
    /// its files ([`Manifest::entries_digest`]), if it exists, streaming it
    /// from disk without building its file list.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] if it exists but does not parse.
    pub(crate) fn read_manifest_digested(&self) -> Result<Option<(Manifest, [u8; 32])>> {
        let path = self.abs(MANIFEST_PATH);
        match std::fs::File::open(&path) {
            Ok(f) => Manifest::read_digested(f, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Writes the local `_meta/manifest.json` atomically.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        write_atomic_with(&self.abs(MANIFEST_PATH), |w| manifest.write_json_pretty(w))
    }

    /// Writes `_meta/manifest.json` as `header` with `files` (whatever
    /// `header` itself lists is ignored), streamed to disk: the files are
    /// not copied into a manifest first.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn write_manifest_with(
        &self,
        header: &Manifest,
        files: &std::collections::BTreeMap<String, crate::manifest::FileEntry>,
    ) -> Result<()> {
        write_atomic_with(&self.abs(MANIFEST_PATH), |w| {
            header.write_json_pretty_with(files, w)
        })
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
}

/// Writes a file atomically: temporary file, fsync, rename, fsync directory.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub(crate) fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(target, |w| w.write_all(bytes))
}

/// [`write_atomic`] of what `write` streams (through a buffer), so a large
/// state file is never built in memory first.
///
/// # Errors
/// [`Error::Io`] naming the file.
pub(crate) fn write_atomic_with(
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> Result<()> {
    let dir = target.parent().expect("target has a parent");
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pqsync.tmp-")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    {
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut());
        write(&mut out).map_err(|e| Error::io(target, e))?;
        out.flush().map_err(|e| Error::io(target, e))?;
    }
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

impl LocalTree {
    /// Makes the files this tree wrote new (without an fsync each) durable:
    /// one `syncfs` of the file system holding the root. A run calls it
    /// before it records those files anywhere (stat cache, manifest), so a
    /// power loss can cost a new file, never a record of one that is not on
    /// disk; a file that replaced another was fsynced before its rename.
    ///
    /// # Errors
    /// [`Error::Io`] when the file system reports a failed write.
    pub fn sync_writes(&self) -> Result<()> {
        if !self
            .unsynced
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        let dir = std::fs::File::open(&self.root).map_err(|e| Error::io(&self.root, e))?;
        rustix::fs::syncfs(&dir).map_err(|e| {
            self.unsynced
                .store(true, std::sync::atomic::Ordering::SeqCst);
            Error::io(&self.root, e.into())
        })
    }

    /// Notes a new file whose bytes [`LocalTree::sync_writes`] must make
    /// durable.
    pub(crate) fn wrote_unsynced(&self) {
        self.unsynced
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Moves a file: a rename, or where `to` is on another file system (the
/// state home often is), a copy that is fsynced before the original is
/// removed, so a crash leaves one of the two whole.
///
/// # Errors
/// [`Error::Io`]; `from` is still there.
pub(crate) fn move_file(from: &Path, to: &Path) -> Result<()> {
    match std::fs::rename(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => {
            std::fs::copy(from, to).map_err(|e| Error::io(to, e))?;
            std::fs::File::open(to)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(to, e))?;
            std::fs::remove_file(from).map_err(|e| Error::io(from, e))
        }
        Err(e) => Err(Error::io(from, e)),
    }
}

/// A held run lock on a directory ([`LocalTree::lock`]); dropping it lets
/// the next run in.
#[derive(Debug)]
pub struct RunLock {
    _held: Vec<std::fs::File>,
}

/// Whether `now` is still the version `before` described: same size,
/// modification time and inode. (The ctime is left out: reading a file for
/// a hash can move it on some file systems.)
pub(crate) fn same_version(before: FileStat, now: FileStat) -> bool {
    before.size == now.size && before.mtime_ns == now.mtime_ns && before.ino == now.ino
}
