//! pqsync's own state for a local directory, typed. It lives outside the
//! directory, in `<state home>/databases/<name>-<key>/` ([`state_dir_for`]),
//! as rclone bisync and Unison keep theirs, so no other client of the
//! database ever sees it.
//!
//! | file | what it holds |
//! |---|---|
//! | `statcache.bin` | the stat cache ([`LocalTree::scan`]), binary, sorted by path (`statcache.json` in earlier versions, read once and replaced) |
//! | `remote.json` | the remote the directory last synced with |
//! | `base-<key>.bin` | the base (binary, sorted by path; `base-<key>.json` in earlier versions): the files both sides agreed on after the last run against the remote whose key is `<key>` |
//! | `base-<key>.stamp.json` | the remote manifest's commit id at that time, and whether the base equals it |
//! | `caps-<key>.json` | what the remote's capability probe found |
//! | `journal/<key>.log` | uploads an interrupted run completed, not yet committed |
//! | `journal/<key>.parts/` | one record per large upload in progress, part by part |
//! | `manifest.json.bak` | the manifest a rebuild replaced |
//! | `trash/<run>/<path>` | local versions a run replaced or deleted |
//! | `database.json` | the directory this state belongs to |
//!
//! `<key>` is the first 16 hex digits of the SHA-256 of the remote's
//! canonical URL ([`remote_key`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::records::{RecordReader, RecordWriter, BASE_MAGIC};
use super::{move_file, write_atomic, LocalTree};
use crate::error::{Error, Result};
use crate::manifest::{dense_map, FileEntry, HashAlgorithm, Manifest};
use crate::tree::store::{Capabilities, PartLog, PartRecord};

/// The variable that names another state home.
pub const STATE_HOME_VAR: &str = "PQSYNC_STATE_DIR";

/// Where pqsync keeps the state of local directories: `$PQSYNC_STATE_DIR`
/// when set, else the platform's state directory (`$XDG_STATE_HOME` or
/// `~/.local/state` on Linux), else its cache directory, followed by
/// `pqsync`.
pub fn default_state_home() -> PathBuf {
    if let Some(p) = std::env::var_os(STATE_HOME_VAR).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    dirs::state_dir()
        .or_else(dirs::cache_dir)
        .unwrap_or_else(std::env::temp_dir)
        .join("pqsync")
}

/// The state folder of the directory `root` under `home`:
/// `databases/<name>-<key>`, where `<name>` is the directory's own name
/// (for people reading the folder) and `<key>` the first 16 hex digits of
/// the SHA-256 of its canonical path. A directory that does not exist yet
/// is resolved through its nearest existing ancestor, so the key does not
/// change when a pull creates it.
pub fn state_dir_for(home: &Path, root: &Path) -> PathBuf {
    let canonical = canonical(root);
    let key = &HashAlgorithm::Sha256
        .digest(canonical.as_os_str().as_bytes())
        .to_string()[..16];
    let name = folder_name(
        &canonical
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
    );
    home.join("databases").join(format!("{name}-{key}"))
}

/// `name` as the readable part of a state folder's name: letters, digits,
/// `-`, `_` and `.` kept, anything else `_`, at most 40 characters (`root`
/// when empty).
pub(crate) fn folder_name(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if name.is_empty() {
        "root".into()
    } else {
        name
    }
}

/// `path` made absolute with symlinks resolved, through its nearest
/// existing ancestor when it does not exist yet.
fn canonical(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut missing = Vec::new();
    let mut at = abs.as_path();
    loop {
        if let Ok(c) = at.canonicalize() {
            let mut out = c;
            for part in missing.iter().rev() {
                out.push(part);
            }
            return out;
        }
        match (at.parent(), at.file_name()) {
            (Some(parent), Some(name)) => {
                missing.push(name.to_os_string());
                at = parent;
            }
            _ => return abs,
        }
    }
}

/// The database that `dir` belongs to: `dir` itself when it holds
/// `_meta/manifest.json` (or does not exist yet), else the nearest ancestor
/// that does, as git finds `.git`. `None` when no ancestor is a database
/// either: `dir` is a plain directory.
pub fn database_root(dir: &Path) -> Option<PathBuf> {
    let canonical = canonical(dir);
    canonical
        .ancestors()
        .find(|a| a.join(crate::layout::MANIFEST_PATH).is_file())
        .map(Path::to_path_buf)
}

/// `database.json`: the directory a state folder belongs to.
#[derive(Debug, Serialize, Deserialize)]
struct DatabaseRecord {
    root: String,
}

impl LocalTree {
    /// Writes a file under the state directory atomically. The first write
    /// also records which directory the state belongs to.
    pub(crate) fn write_state_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_state_with(name, |w| w.write_all(bytes))
    }

    /// [`LocalTree::write_state_file`] of what `write` streams.
    pub(crate) fn write_state_with(
        &self,
        name: &str,
        write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
    ) -> Result<()> {
        let dir = self.state_dir();
        if !dir.join("database.json").exists() {
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            let record = DatabaseRecord {
                root: canonical(self.root()).display().to_string(),
            };
            let bytes = serde_json::to_vec_pretty(&record).expect("record serialises");
            write_atomic(&dir.join("database.json"), &bytes)?;
        }
        super::write_atomic_with(&dir.join(name), write)
    }

    /// Moves the state an earlier version kept inside the database
    /// (`_meta/.pqsync/`) to the state directory, then removes it. A file
    /// the state directory already has is kept there and the old one
    /// dropped. Returns whether there was anything to move.
    ///
    /// # Errors
    /// [`Error::Io`] when a file cannot be moved; what was not moved stays
    /// where it was, so a later run tries again.
    pub fn migrate_state(&self) -> Result<bool> {
        let legacy = self.legacy_state_dir();
        if !legacy.is_dir() {
            return Ok(false);
        }
        let to = self.state_dir();
        for entry in walkdir::WalkDir::new(&legacy).contents_first(true) {
            let entry = entry.map_err(|e| Error::io(&legacy, e.into()))?;
            let rel = entry
                .path()
                .strip_prefix(&legacy)
                .expect("below the legacy dir");
            if entry.file_type().is_dir() {
                let _ = std::fs::remove_dir(entry.path());
                continue;
            }
            let dest = to.join(rel);
            if dest.exists() {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let parent = dest.parent().expect("a state file has a parent");
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
            move_file(entry.path(), &dest)?;
        }
        if legacy.exists() {
            std::fs::remove_dir_all(&legacy).map_err(|e| Error::io(&legacy, e))?;
        }
        tracing::info!(
            "moved pqsync's state out of {} to {}",
            legacy.display(),
            to.display()
        );
        Ok(true)
    }

    /// Reads a file under the state directory, `None` if it does not exist.
    pub(crate) fn read_state_file(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.state_dir().join(name);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    /// Removes a state file if present.
    pub(crate) fn remove_state_file(&self, name: &str) {
        let _ = std::fs::remove_file(self.state_dir().join(name));
    }

    /// Writes a state file only when its bytes would change.
    fn update_state_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        if self.read_state_file(name)?.as_deref() != Some(bytes) {
            self.write_state_file(name, bytes)?;
        }
        Ok(())
    }
}

/// The key under which a local directory keeps its state for a remote URL.
pub(crate) fn remote_key(url: &str) -> String {
    HashAlgorithm::Sha256.digest(url.as_bytes()).to_string()[..16].to_string()
}

/// The remote a local directory last synced with, from its state's
/// `remote.json`.
///
/// # Errors
/// [`Error::Io`] if the record exists but cannot be read;
/// [`Error::ManifestCorrupt`] if it does not parse.
pub(crate) fn last_remote(tree: &LocalTree) -> Result<Option<String>> {
    let Some(bytes) = tree.read_state_file("remote.json")? else {
        return Ok(None);
    };
    let record: RemoteRecord =
        serde_json::from_slice(&bytes).map_err(|e| Error::ManifestCorrupt {
            path: tree.state_dir().join("remote.json").display().to_string(),
            reason: e.to_string(),
        })?;
    Ok(Some(record.url))
}

/// `remote.json`: the remote a directory last synced with.
#[derive(Debug, Serialize, Deserialize)]
struct RemoteRecord {
    url: String,
}

/// The journal's hash field for an upload that was taken back.
const REVOKED: &str = "-";

/// One completed upload in the journal: `<alg>:<hex> TAB path TAB commit`,
/// where commit is the id of the remote manifest the run planned against
/// (`-` for none; absent in journals of older versions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JournalEntry {
    /// The file.
    pub path: String,
    /// `"<alg>:<hex>"` of what was sent.
    pub tagged: String,
    /// The remote manifest's commit id when it was sent.
    pub against: Option<String>,
}

impl JournalEntry {
    fn parse(line: &str) -> Option<JournalEntry> {
        let mut fields = line.split('\t');
        let tagged = fields.next()?.to_string();
        let path = fields.next()?.to_string();
        let against = fields
            .next()
            .filter(|c| *c != "-" && !c.is_empty())
            .map(str::to_string);
        Some(JournalEntry {
            path,
            tagged,
            against,
        })
    }
}

/// A small record kept beside the base: the commit id of the remote
/// manifest at the time, and whether the base held the same content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BaseStamp {
    pub remote_commit_id: Option<String>,
    pub equals_remote: bool,
    /// The remote manifest's ETag when the base equals it: a status whose
    /// conditional GET finds the manifest unchanged compares with the base
    /// alone, without downloading the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_etag: Option<String>,
    /// That manifest's `lastSyncedAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_synced_at: Option<String>,
    /// The highest event-log segment it lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_last_segment: Option<u64>,
    /// The one algorithm all its entries are hashed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_algorithm: Option<HashAlgorithm>,
    /// That manifest without its files, when the base holds its entries
    /// exactly as it lists them: the base and this header rebuild it, so a
    /// push that finds the ETag unchanged need not download it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_header: Option<Manifest>,
}

impl BaseStamp {
    /// Whether the base equals the remote manifest whose commit id is `id`.
    pub fn matches(&self, id: &str) -> bool {
        self.equals_remote && self.remote_commit_id.as_deref() == Some(id)
    }
}

/// A directory's state for one remote.
#[derive(Debug)]
pub(crate) struct RemoteState {
    tree: LocalTree,
    url: String,
    key: String,
    /// The journal of completed uploads, opened on the first append.
    journal: Mutex<Option<std::fs::File>>,
}

impl RemoteState {
    /// The state `tree` keeps for the remote named `url`.
    pub fn new(tree: &LocalTree, url: &str) -> Self {
        RemoteState {
            tree: tree.clone(),
            url: url.to_string(),
            key: remote_key(url),
            journal: Mutex::new(None),
        }
    }

    /// The remote's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn base_name(&self) -> String {
        format!("base-{}.bin", self.key)
    }

    /// The base as earlier versions kept it: a manifest in JSON.
    fn legacy_base_name(&self) -> String {
        format!("base-{}.json", self.key)
    }

    fn stamp_name(&self) -> String {
        format!("base-{}.stamp.json", self.key)
    }

    fn journal_name(&self) -> String {
        format!("journal/{}.log", self.key)
    }

    fn caps_name(&self) -> String {
        format!("caps-{}.json", self.key)
    }

    /// The base, if there is a readable one. A damaged base only loses
    /// deletion inference: it is reported and the run continues as a first
    /// sync.
    pub fn base(&self) -> Result<Option<BTreeMap<String, FileEntry>>> {
        if let Some(mut reader) = self.base_reader() {
            let files =
                dense_map(std::iter::from_fn(|| reader.next_entry()).map(|e| (e.path.clone(), e)));
            if reader.damaged() {
                tracing::warn!(
                    "{}: damaged; treating this as a first sync",
                    self.tree.state_dir().join(self.base_name()).display()
                );
                return Ok(None);
            }
            return Ok(Some(files));
        }
        let name = self.legacy_base_name();
        let Some(bytes) = self.tree.read_state_file(&name)? else {
            return Ok(None);
        };
        let origin = self.tree.state_dir().join(&name).display().to_string();
        match Manifest::from_slice(&bytes, &origin) {
            Ok(m) => Ok(Some(m.files)),
            Err(e) => {
                tracing::warn!("{e}; treating this as a first sync");
                Ok(None)
            }
        }
    }

    /// The base as a stream of entries sorted by path, when it is kept in
    /// the binary form (a base an older version wrote is not streamed).
    pub fn base_reader(&self) -> Option<RecordReader<std::fs::File>> {
        RecordReader::open(&self.tree.state_dir().join(self.base_name()), BASE_MAGIC)
    }

    /// Whether the base is kept in the binary form that streams.
    pub fn has_binary_base(&self) -> bool {
        self.tree.state_dir().join(self.base_name()).is_file()
    }

    /// Replaces the base, streaming it to disk.
    pub fn write_base<'a>(&self, files: impl Iterator<Item = &'a FileEntry>) -> Result<()> {
        self.tree.write_state_with(&self.base_name(), |out| {
            let mut w = RecordWriter::new(out, BASE_MAGIC)?;
            for e in files {
                w.entry(e)?;
            }
            w.finish().map(drop)
        })?;
        self.tree.remove_state_file(&self.legacy_base_name());
        Ok(())
    }

    fn pending_name(&self) -> String {
        format!("pending-{}.bin", self.key)
    }

    fn expected_name(&self) -> String {
        format!("pending-{}.expected.bin", self.key)
    }

    /// Keeps a base that holds for each path only once the remote's file
    /// there is the one `expected` names (a shard's, once its merge has
    /// committed), beside the base in force until then.
    pub fn write_pending_base<'a>(
        &self,
        base: impl Iterator<Item = &'a FileEntry>,
        expected: impl Iterator<Item = &'a FileEntry>,
    ) -> Result<()> {
        for (name, files) in [
            (
                self.expected_name(),
                Box::new(expected) as Box<dyn Iterator<Item = _>>,
            ),
            (self.pending_name(), Box::new(base)),
        ] {
            self.tree.write_state_with(&name, |out| {
                let mut w = RecordWriter::new(out, BASE_MAGIC)?;
                for e in files {
                    w.entry(e)?;
                }
                w.finish().map(drop)
            })?;
        }
        Ok(())
    }

    /// The pending base and the files it expects, when both are there and
    /// whole.
    pub fn pending_base(
        &self,
    ) -> Option<(BTreeMap<String, FileEntry>, BTreeMap<String, FileEntry>)> {
        let dir = self.tree.state_dir();
        let read = |name: String| {
            let mut reader = RecordReader::open(&dir.join(name), BASE_MAGIC)?;
            let files =
                dense_map(std::iter::from_fn(|| reader.next_entry()).map(|e| (e.path.clone(), e)));
            (!reader.damaged()).then_some(files)
        };
        Some((read(self.pending_name())?, read(self.expected_name())?))
    }

    /// Drops the bases the shards of a split push keep for this remote
    /// (their stat caches and journals stay).
    pub fn drop_shard_bases(&self) {
        let Ok(shards) = std::fs::read_dir(self.tree.state_dir().join("shards")) else {
            return;
        };
        for shard in shards.flatten() {
            for name in [self.base_name(), self.pending_name(), self.expected_name()] {
                let _ = std::fs::remove_file(shard.path().join(name));
            }
        }
    }

    /// Drops the pending base.
    pub fn clear_pending_base(&self) {
        self.tree.remove_state_file(&self.pending_name());
        self.tree.remove_state_file(&self.expected_name());
    }

    /// The stamp written with the base, if it is readable.
    pub fn stamp(&self) -> Option<BaseStamp> {
        let bytes = self.tree.read_state_file(&self.stamp_name()).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records the stamp (only when it changed).
    pub fn write_stamp(&self, stamp: &BaseStamp) -> Result<()> {
        let bytes = serde_json::to_vec(stamp).expect("stamp serialises");
        self.tree.update_state_file(&self.stamp_name(), &bytes)
    }

    /// Records this remote as the one the directory last synced with.
    pub fn record_remote(&self) -> Result<()> {
        let record = RemoteRecord {
            url: self.url.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&record).expect("record serialises");
        self.tree.update_state_file("remote.json", &bytes)
    }

    /// Uploads an interrupted run completed, each with the commit id of
    /// the remote manifest that run planned against.
    pub fn journal(&self) -> Result<Vec<JournalEntry>> {
        let Some(bytes) = self.tree.read_state_file(&self.journal_name())? else {
            return Ok(Vec::new());
        };
        // A later line for a path replaces an earlier one; a revoked upload
        // (`-`) then matches no hash.
        let mut latest: BTreeMap<String, JournalEntry> = BTreeMap::new();
        for e in String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(JournalEntry::parse)
        {
            latest.insert(e.path.clone(), e);
        }
        Ok(latest
            .into_values()
            .filter(|e| e.tagged != REVOKED)
            .collect())
    }

    /// Takes back a recorded upload whose object was put back to its
    /// committed version, so a re-run sends it again.
    pub fn journal_revoke(&self, path: &str) {
        self.journal_line(&format!("{REVOKED}\t{path}\t-"));
    }

    /// Records a completed upload so a re-run after a failure or a crash
    /// does not send it again. Best effort: a journal that cannot be written
    /// only costs a re-send.
    pub fn journal_append(&self, e: &FileEntry, against: Option<&str>) {
        self.journal_line(&format!(
            "{}\t{}\t{}",
            e.tagged_hash(),
            e.path,
            against.unwrap_or("-")
        ));
    }

    /// Appends one line to the journal (best effort).
    fn journal_line(&self, line: &str) {
        let mut guard = self.journal.lock().expect("journal lock");
        if guard.is_none() {
            let path = self.tree.state_dir().join(self.journal_name());
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            *guard = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok();
        }
        if let Some(f) = guard.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    }

    /// Closes the journal (its appends are complete).
    pub fn journal_close(&self) {
        drop(self.journal.lock().expect("journal lock").take());
    }

    /// Forgets the journal: everything in it was committed.
    pub fn clear_journal(&self) {
        self.journal_close();
        self.tree.remove_state_file(&self.journal_name());
    }

    /// What the capability probe found for this remote, if it ran.
    pub fn capabilities(&self) -> Option<Capabilities> {
        let bytes = self.tree.read_state_file(&self.caps_name()).ok()??;
        serde_json::from_slice(&bytes).ok()
    }

    /// Caches what the capability probe found. Best effort: a missing cache
    /// only costs a probe.
    pub fn save_capabilities(&self, caps: &Capabilities) {
        let body = serde_json::to_vec_pretty(caps).expect("capabilities serialise");
        let _ = self.tree.write_state_file(&self.caps_name(), &body);
    }

    /// The part log of this remote's resumable uploads.
    pub fn parts(&self) -> PartsJournal<'_> {
        PartsJournal { state: self }
    }
}

/// The part log of resumable uploads, kept under `journal/<key>.parts/`,
/// one small file per upload.
pub(crate) struct PartsJournal<'a> {
    state: &'a RemoteState,
}

impl PartsJournal<'_> {
    fn dir(&self) -> String {
        format!("journal/{}.parts", self.state.key)
    }

    fn name(&self, path: &str) -> String {
        let id = HashAlgorithm::Sha256.digest(path.as_bytes()).to_string();
        format!("{}/{}.json", self.dir(), &id[..24])
    }

    /// Every record an earlier run left.
    pub fn all(&self) -> Vec<PartRecord> {
        let dir = self.state.tree.state_dir().join(self.dir());
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
            .filter_map(|b| serde_json::from_slice(&b).ok())
            .collect()
    }
}

impl PartLog for PartsJournal<'_> {
    fn load(&self, path: &str) -> Option<PartRecord> {
        let bytes = self.state.tree.read_state_file(&self.name(path)).ok()??;
        serde_json::from_slice::<PartRecord>(&bytes)
            .ok()
            .filter(|r| r.path == path)
    }

    fn save(&self, record: &PartRecord) {
        let bytes = serde_json::to_vec(record).expect("record serialises");
        if let Err(e) = self
            .state
            .tree
            .write_state_file(&self.name(&record.path), &bytes)
        {
            tracing::warn!("could not record upload progress of {}: {e}", record.path);
        }
    }

    fn remove(&self, path: &str) {
        self.state.tree.remove_state_file(&self.name(path));
    }
}
