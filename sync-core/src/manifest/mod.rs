//! The sync manifest, `_meta/manifest.json`, in ParqueDB's format.
//!
//! A manifest lists every tracked file with its size, content hash and
//! modification time. pqsync reads manifests written by ParqueDB (SHA-256)
//! and writes manifests ParqueDB can read: the same field names, 2-space
//! indentation, and keys sorted so that the output is deterministic.
//!
//! Parsing validates as it goes: an unknown `version`, a missing field, a
//! malformed hash or an unsafe path is an [`Error::ManifestCorrupt`] or
//! [`Error::UnsafePath`], never a panic and never a silent skip.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

mod digest;
mod time;

pub use digest::{hash_file, ContentHasher, Digest, HashAlgorithm};
pub use time::{fs_etag, now_iso, Timestamp};

use crate::error::{Error, Result};
use crate::layout::CONTENT_TYPES;

/// The only manifest format version pqsync understands.
pub const MANIFEST_VERSION: u32 = 1;

/// Who may read a database (ParqueDB's `visibility`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Anyone.
    Public,
    /// Anyone with the link.
    Unlisted,
    /// Only the owner (the default).
    #[default]
    Private,
}

/// The entry field recording a mirrored object's source ETag.
const SOURCE_ETAG: &str = "sourceEtag";

/// One tracked file.
///
/// Fields are declared in the order ParqueDB writes them; fields pqsync
/// does not know are kept, after those.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// Relative, `/`-separated path; equal to the entry's key.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Digest of the whole file (lowercase hex in JSON).
    pub hash: Digest,
    /// Algorithm of `hash`.
    pub hash_algorithm: HashAlgorithm,
    /// ISO-8601 modification time.
    pub modified_at: Timestamp,
    /// Store ETag, where one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// MIME type (the common ones are shared, not allocated per entry).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_type: Option<Cow<'static, str>>,
    /// Fields of the entry pqsync does not know (another ParqueDB version
    /// may write some), kept as they were; `None` for almost every entry,
    /// so they cost one pointer, and shared between copies of an entry.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub extra: Option<std::sync::Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl<'de> Deserialize<'de> for FileEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{Error as _, MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = FileEntry;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a file entry object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<FileEntry, A::Error> {
                let (mut path, mut size, mut hash, mut alg, mut modified) =
                    (None, None, None, None, None);
                let (mut etag, mut content_type) = (None, None);
                let mut extra: Option<serde_json::Map<String, serde_json::Value>> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "path" => path = Some(map.next_value()?),
                        "size" => size = Some(map.next_value()?),
                        "hash" => hash = Some(map.next_value()?),
                        "hashAlgorithm" => alg = Some(map.next_value()?),
                        "modifiedAt" => modified = Some(map.next_value()?),
                        "etag" => etag = map.next_value()?,
                        "contentType" => {
                            content_type = map.next_value::<Option<String>>()?.map(shared_type)
                        }
                        _ => {
                            let value = map.next_value()?;
                            extra
                                .get_or_insert_with(Default::default)
                                .insert(key, value);
                        }
                    }
                }
                Ok(FileEntry {
                    path: path.ok_or_else(|| A::Error::missing_field("path"))?,
                    size: size.ok_or_else(|| A::Error::missing_field("size"))?,
                    hash: hash.ok_or_else(|| A::Error::missing_field("hash"))?,
                    hash_algorithm: alg.ok_or_else(|| A::Error::missing_field("hashAlgorithm"))?,
                    modified_at: modified.ok_or_else(|| A::Error::missing_field("modifiedAt"))?,
                    etag,
                    content_type,
                    extra: extra.map(std::sync::Arc::new),
                })
            }
        }
        d.deserialize_map(V)
    }
}

impl FileEntry {
    /// Whether two entries describe the same bytes. Entries hashed with
    /// different algorithms are never considered equal.
    pub fn same_content(&self, other: &FileEntry) -> bool {
        self.hash_algorithm == other.hash_algorithm
            && self.size == other.size
            && self.hash == other.hash
    }

    /// The modification time, if it parses.
    pub fn modified(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.modified_at.to_datetime()
    }

    /// The version of the object a mirror copied this entry from, for a
    /// source without a pqsync manifest (its ETag, kept as `sourceEtag`).
    pub fn source_etag(&self) -> Option<&str> {
        self.extra.as_ref()?.get(SOURCE_ETAG)?.as_str()
    }

    /// Records the version of the object a mirror copies this entry from.
    pub fn set_source_etag(&mut self, etag: String) {
        let mut extra = self.extra.as_deref().cloned().unwrap_or_default();
        extra.insert(SOURCE_ETAG.into(), etag.into());
        self.extra = Some(std::sync::Arc::new(extra));
    }

    /// `"<algorithm>:<hex>"`, the form stored in object metadata.
    pub fn tagged_hash(&self) -> String {
        format!("{}:{}", self.hash_algorithm, self.hash)
    }

    /// Checks that `total` bytes hashed into `hasher` are this entry's
    /// content: the one size-and-hash check every verified transfer ends
    /// with, before its bytes become visible.
    ///
    /// # Errors
    /// [`Error::Mismatch`]; a short read is retryable, wrong bytes of the
    /// right size are not.
    pub fn verify(&self, total: u64, hasher: ContentHasher) -> Result<()> {
        if total != self.size {
            return Err(Error::Mismatch {
                path: self.path.clone(),
                what: "size",
                expected: self.size.to_string(),
                actual: total.to_string(),
                retryable: total < self.size,
            });
        }
        let hash = hasher.finalize();
        if hash != self.hash {
            return Err(Error::Mismatch {
                path: self.path.clone(),
                what: "hash",
                expected: self.tagged_hash(),
                actual: format!("{}:{hash}", self.hash_algorithm),
                retryable: false,
            });
        }
        Ok(())
    }

    /// The error for a stream that delivered more than `self.size` bytes
    /// (`total` so far): the source is not the file the entry describes.
    pub fn too_long(&self, total: u64) -> Error {
        Error::Mismatch {
            path: self.path.clone(),
            what: "size",
            expected: self.size.to_string(),
            actual: format!("at least {total}"),
            retryable: false,
        }
    }
}

/// A content type, shared when it is one of the common ones.
pub(crate) fn shared_type(s: String) -> Cow<'static, str> {
    match CONTENT_TYPES.iter().find(|c| **c == s) {
        Some(c) => Cow::Borrowed(*c),
        None => Cow::Owned(s),
    }
}

/// The sync manifest of one tree.
///
/// Fields are declared in the order ParqueDB writes them (`version`,
/// `databaseId`, `name`, `owner`, `visibility`, `lastSyncedAt`, `files`,
/// `syncedFrom`), then `slug`, `metadata` and pqsync's `commitId`; fields
/// pqsync does not know are kept, after those.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Format version; always 1.
    pub version: u32,
    /// Stable identifier of the database.
    pub database_id: String,
    /// Human-readable name.
    pub name: String,
    /// Owner's user name.
    pub owner: Option<String>,
    /// Who may read it.
    pub visibility: Visibility,
    /// ISO-8601 time of the last successful sync.
    pub last_synced_at: String,
    /// Tracked files by relative path.
    pub files: BTreeMap<String, FileEntry>,
    /// Where the last sync came from (`local`, `remote:<url>`, ...).
    pub synced_from: Option<String>,
    /// URL-friendly name.
    pub slug: Option<String>,
    /// Free-form metadata, preserved as is.
    pub metadata: Option<Value>,
    /// pqsync's id for the commit that wrote this manifest; lets a writer
    /// check, after writing, that its commit is the one that stuck. It is
    /// sealed to the file list ([`Manifest::seal_commit`]): a manifest
    /// whose files no longer match its id (another tool rewrote the files
    /// and kept the field) is read without one.
    pub commit_id: Option<String>,
    /// Top-level fields pqsync does not know, kept as they were.
    pub extra: serde_json::Map<String, Value>,
}

/// How a manifest is written: its fields in ParqueDB's order, with the
/// file list borrowed (from the manifest, or from elsewhere for
/// [`Manifest::write_json_pretty_with`]).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ManifestOut<'a> {
    version: u32,
    database_id: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a String>,
    visibility: Visibility,
    last_synced_at: &'a str,
    files: &'a BTreeMap<String, FileEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    synced_from: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slug: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit_id: Option<&'a String>,
    #[serde(flatten)]
    extra: &'a serde_json::Map<String, Value>,
}

impl Serialize for Manifest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.out(&self.files).serialize(s)
    }
}

/// Reads a manifest field by field, keeping unknown ones in `extra`
/// (a derived `flatten` would buffer the whole `files` map first).
impl<'de> Deserialize<'de> for Manifest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_map(ManifestVisitor(None))
    }
}

/// Reads a manifest; with a hasher, the file list is digested entry by
/// entry as it streams ([`Manifest::entries_digest`]) and left empty.
struct ManifestVisitor<'h>(Option<&'h mut blake3::Hasher>);

impl<'de> serde::de::Visitor<'de> for ManifestVisitor<'_> {
    type Value = Manifest;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a manifest object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        mut self,
        mut map: A,
    ) -> std::result::Result<Manifest, A::Error> {
        use serde::de::Error as _;
        let mut version = None;
        let mut database_id = None;
        let mut name = None;
        let mut last_synced_at = None;
        let mut files = None;
        let mut m = Manifest::new(String::new(), String::new());
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => version = Some(map.next_value()?),
                "databaseId" => database_id = Some(map.next_value()?),
                "name" => name = Some(map.next_value()?),
                "owner" => m.owner = map.next_value()?,
                "visibility" => m.visibility = map.next_value()?,
                "lastSyncedAt" => last_synced_at = Some(map.next_value()?),
                "files" => {
                    files = Some(match self.0.as_deref_mut() {
                        Some(h) => {
                            map.next_value_seed(DigestFiles(h))?;
                            BTreeMap::new()
                        }
                        None => map.next_value::<DenseFiles>()?.0,
                    })
                }
                "syncedFrom" => m.synced_from = map.next_value()?,
                "slug" => m.slug = map.next_value()?,
                "metadata" => m.metadata = map.next_value()?,
                "commitId" => m.commit_id = map.next_value()?,
                _ => {
                    m.extra.insert(key, map.next_value()?);
                }
            }
        }
        m.version = version.ok_or_else(|| A::Error::missing_field("version"))?;
        m.database_id = database_id.ok_or_else(|| A::Error::missing_field("databaseId"))?;
        m.name = name.ok_or_else(|| A::Error::missing_field("name"))?;
        m.last_synced_at = last_synced_at.ok_or_else(|| A::Error::missing_field("lastSyncedAt"))?;
        m.files = files.ok_or_else(|| A::Error::missing_field("files"))?;
        Ok(m)
    }
}

/// Digests a manifest's `files` entry by entry, keeping none of them.
struct DigestFiles<'h>(&'h mut blake3::Hasher);

impl<'de> serde::de::DeserializeSeed<'de> for DigestFiles<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DigestFiles<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a map of file entries")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<(), A::Error> {
        while let Some((_, e)) = map.next_entry::<serde::de::IgnoredAny, FileEntry>()? {
            digest_entry(self.0, &e);
        }
        Ok(())
    }
}

/// Feeds every field of `e` to `h` ([`Manifest::entries_digest`]).
fn digest_entry(h: &mut blake3::Hasher, e: &FileEntry) {
    let mut text = |s: Option<&str>| match s {
        Some(s) => {
            h.update(&(s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        None => {
            h.update(&u64::MAX.to_le_bytes());
        }
    };
    text(Some(&e.path));
    text(Some(&e.size.to_string()));
    text(Some(&e.tagged_hash()));
    text(Some(&e.modified_at.to_string()));
    text(e.etag.as_deref());
    text(e.content_type.as_deref());
    let extra = e
        .extra
        .as_ref()
        .map(|x| serde_json::Value::Object((**x).clone()).to_string());
    text(extra.as_deref());
}

/// Collects pairs into a map whose nodes are full, holding at most a small
/// batch of them outside it at any time.
///
/// Inserting entries one by one leaves a B-tree's nodes about half empty
/// (over 100 MB at a million files), and `collect` keeps the whole input in a
/// vector while it builds the map (168 MB at a million entries). Here, each
/// batch of [`DENSE_BATCH`] pairs becomes a full map, and maps of about equal
/// size are merged by `append`, which frees the nodes it has read while it
/// fills new ones: each pair is moved a logarithmic number of times. The
/// pairs need not be sorted; of two equal keys the later one wins, as with
/// `collect`.
pub(crate) fn dense_map<K: Ord, V>(pairs: impl IntoIterator<Item = (K, V)>) -> BTreeMap<K, V> {
    // Fused: an input that has ended (or failed) is not asked again.
    let mut pairs = pairs.into_iter().fuse();
    // Maps of decreasing size, each holding later keys than the one before.
    let mut levels: Vec<BTreeMap<K, V>> = Vec::new();
    loop {
        let mut batch: BTreeMap<K, V> = pairs.by_ref().take(DENSE_BATCH).collect();
        if batch.is_empty() {
            break;
        }
        while levels.last().is_some_and(|l| l.len() <= batch.len()) {
            let mut earlier = levels.pop().expect("checked");
            earlier.append(&mut batch);
            batch = earlier;
        }
        levels.push(batch);
    }
    let mut map = levels.pop().unwrap_or_default();
    while let Some(mut earlier) = levels.pop() {
        earlier.append(&mut map);
        map = earlier;
    }
    map
}

/// Pairs [`dense_map`] collects at a time.
const DENSE_BATCH: usize = 1 << 14;

/// A manifest's `files`, read into a map with full nodes ([`dense_map`]).
struct DenseFiles(BTreeMap<String, FileEntry>);

impl<'de> Deserialize<'de> for DenseFiles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::{MapAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DenseFiles;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of file entries")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<DenseFiles, A::Error> {
                let mut failed = None;
                let files = dense_map(std::iter::from_fn(|| match map.next_entry() {
                    Ok(kv) => kv,
                    Err(e) => {
                        failed = Some(e);
                        None
                    }
                }));
                match failed {
                    Some(e) => Err(e),
                    None => Ok(DenseFiles(files)),
                }
            }
        }
        d.deserialize_map(V)
    }
}

impl Manifest {
    /// An empty manifest for a new database.
    pub fn new(database_id: impl Into<String>, name: impl Into<String>) -> Self {
        Manifest {
            commit_id: None,
            version: MANIFEST_VERSION,
            database_id: database_id.into(),
            name: name.into(),
            owner: None,
            slug: None,
            visibility: Visibility::Private,
            last_synced_at: now_iso(),
            synced_from: None,
            files: BTreeMap::new(),
            metadata: None,
            extra: serde_json::Map::new(),
        }
    }

    /// Parses and validates a manifest. `origin` names where it came from and
    /// appears in every error.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] for malformed JSON, an unknown version or a
    /// bad entry; [`Error::UnsafePath`] for a path that could escape a tree.
    pub fn from_slice(bytes: &[u8], origin: &str) -> Result<Self> {
        let corrupt = |reason: String| Error::ManifestCorrupt {
            path: origin.to_string(),
            reason,
        };
        // Check the version before the full parse, so a future format gets a
        // precise message rather than a confusing field error.
        #[derive(Deserialize)]
        struct Head {
            version: Option<Value>,
        }
        let head: Head = serde_json::from_slice(bytes).map_err(|e| corrupt(json_reason(&e)))?;
        match head.version {
            Some(Value::Number(n)) if n.as_u64() == Some(u64::from(MANIFEST_VERSION)) => {}
            Some(v) => {
                return Err(Error::UnsupportedVersion {
                    path: origin.to_string(),
                    version: v.to_string(),
                })
            }
            None => return Err(corrupt("missing field `version`".into())),
        }
        let mut manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| corrupt(json_reason(&e)))?;
        manifest.validate(origin)?;
        if !manifest.commit_is_sealed() {
            tracing::debug!("{origin}: its commitId does not vouch for its files; ignoring it");
            manifest.commit_id = None;
        }
        Ok(manifest)
    }

    /// A digest of what the file list says about content: each path with
    /// its algorithm, hash and size (not times, ETags or content types, so
    /// a local and a remote manifest of the same files agree). 16 hex
    /// digits of BLAKE3.
    pub fn files_digest(&self) -> String {
        let mut h = blake3::Hasher::new();
        for e in self.files.values() {
            h.update(e.path.as_bytes());
            h.update(b"\0");
            h.update(e.tagged_hash().as_bytes());
            h.update(b"\0");
            h.update(&e.size.to_le_bytes());
        }
        h.finalize().to_hex()[..16].to_string()
    }

    /// A digest of every field of every entry of `files` (times, ETags and
    /// content types too): equal digests mean a manifest listing `files`
    /// would be written byte for byte the same, so a run can keep just the
    /// digest of a manifest it may not need to rewrite.
    pub(crate) fn entries_digest(files: &BTreeMap<String, FileEntry>) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for e in files.values() {
            digest_entry(&mut h, e);
        }
        *h.finalize().as_bytes()
    }

    /// Reads a manifest's header (its file list left empty) and the
    /// [`Manifest::entries_digest`] of its files, streaming from `input`:
    /// no copy of the JSON and no map of the files is made.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] or [`Error::UnsupportedVersion`], naming
    /// `origin`.
    pub(crate) fn read_digested(
        input: impl std::io::Read,
        origin: &str,
    ) -> Result<(Manifest, [u8; 32])> {
        let mut h = blake3::Hasher::new();
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
            256 * 1024,
            input,
        ));
        let read = serde::Deserializer::deserialize_map(&mut de, ManifestVisitor(Some(&mut h)))
            .and_then(|m| de.end().map(|()| m));
        let m = read.map_err(|e| Error::ManifestCorrupt {
            path: origin.to_string(),
            reason: json_reason(&e),
        })?;
        if m.version != MANIFEST_VERSION {
            return Err(Error::UnsupportedVersion {
                path: origin.to_string(),
                version: m.version.to_string(),
            });
        }
        Ok((m, *h.finalize().as_bytes()))
    }

    /// Sets the commit id to `nonce` sealed to the current file list:
    /// `<nonce>.<files digest>`. Call it after the files are final.
    pub fn seal_commit(&mut self, nonce: &str) {
        self.commit_id = Some(format!("{nonce}.{}", self.files_digest()));
    }

    /// Whether the commit id still vouches for the file list: sealed to
    /// these files, or an unsealed id of an earlier version (accepted as
    /// it was), or none at all.
    pub fn commit_is_sealed(&self) -> bool {
        match self.commit_id.as_deref().and_then(|id| id.split_once('.')) {
            Some((_, digest)) => digest == self.files_digest(),
            None => true,
        }
    }

    /// Checks every entry: safe path, key equal to `path`, well-formed hash.
    ///
    /// # Errors
    /// As for [`Manifest::from_slice`].
    pub fn validate(&self, origin: &str) -> Result<()> {
        let corrupt = |reason: String| Error::ManifestCorrupt {
            path: origin.to_string(),
            reason,
        };
        // Distinct ASCII keys are distinct after normalisation: only
        // manifests with a non-ASCII key need the map of every key.
        let all_ascii = self.files.keys().all(|k| k.is_ascii());
        let mut normalized: std::collections::HashMap<String, &str> =
            std::collections::HashMap::new();
        for (key, entry) in &self.files {
            validate_path(key, origin)?;
            // Two keys that name the same file once Unicode-normalised (as
            // macOS file systems do) would overwrite each other on disk.
            let nfc = if all_ascii {
                None
            } else {
                Some(key.nfc().collect::<String>())
            };
            if let Some(other) = nfc.and_then(|n| normalized.insert(n, key)) {
                return Err(Error::UnsafePath {
                    path: key.clone(),
                    origin: origin.to_string(),
                    reason: format!("same file as {other:?} after Unicode normalisation"),
                });
            }
            if entry.path != *key {
                return Err(corrupt(format!(
                    "entry {key:?} has path {:?}; the two must agree",
                    entry.path
                )));
            }
            let alg = entry.hash_algorithm;
            if entry.hash.hex_len() != alg.hex_len() {
                return Err(corrupt(format!(
                    "entry {key:?} has a malformed {alg} hash {:?}",
                    entry.hash.to_string()
                )));
            }
        }
        // A path cannot be both a file and a directory ("a" and "a/b").
        for key in self.files.keys() {
            let mut prefix = key.as_str();
            while let Some((parent, _)) = prefix.rsplit_once('/') {
                if self.files.contains_key(parent) {
                    return Err(Error::UnsafePath {
                        path: key.clone(),
                        origin: origin.to_string(),
                        reason: format!("{parent:?} is listed as a file but is also its directory"),
                    });
                }
                prefix = parent;
            }
        }
        Ok(())
    }

    /// Serialises as ParqueDB does (`JSON.stringify(m, null, 2)`): its key
    /// order, 2-space indentation and no final newline.
    ///
    /// The buffer is allocated at its exact size (a first pass counts the
    /// bytes), since at a million files it is hundreds of megabytes and a
    /// growing vector would double that.
    pub fn to_json_pretty(&self) -> Vec<u8> {
        let mut counter = Counter(0);
        self.write_json_pretty(&mut counter)
            .expect("counting cannot fail");
        let mut out = Vec::with_capacity(counter.0);
        self.write_json_pretty(&mut out)
            .expect("writing to memory cannot fail");
        out
    }

    fn out<'a>(&'a self, files: &'a BTreeMap<String, FileEntry>) -> ManifestOut<'a> {
        ManifestOut {
            version: self.version,
            database_id: &self.database_id,
            name: &self.name,
            owner: self.owner.as_ref(),
            visibility: self.visibility,
            last_synced_at: &self.last_synced_at,
            files,
            synced_from: self.synced_from.as_ref(),
            slug: self.slug.as_ref(),
            metadata: self.metadata.as_ref(),
            commit_id: self.commit_id.as_ref(),
            extra: &self.extra,
        }
    }

    /// A copy of everything but the file list (which is left empty).
    pub fn header(&self) -> Manifest {
        Manifest {
            version: self.version,
            database_id: self.database_id.clone(),
            name: self.name.clone(),
            owner: self.owner.clone(),
            visibility: self.visibility,
            last_synced_at: self.last_synced_at.clone(),
            files: BTreeMap::new(),
            synced_from: self.synced_from.clone(),
            slug: self.slug.clone(),
            metadata: self.metadata.clone(),
            commit_id: self.commit_id.clone(),
            extra: self.extra.clone(),
        }
    }

    /// Streams this manifest with `files` in place of its own file list,
    /// as [`Manifest::write_json_pretty`] writes it, without copying them.
    ///
    /// # Errors
    /// What `out` returns.
    pub fn write_json_pretty_with(
        &self,
        files: &BTreeMap<String, FileEntry>,
        out: &mut dyn std::io::Write,
    ) -> std::io::Result<()> {
        serde_json::to_writer_pretty(out, &self.out(files)).map_err(std::io::Error::other)
    }

    /// Bytes of [`Manifest::to_json_pretty`], without building them.
    pub fn json_len(&self) -> usize {
        let mut counter = Counter(0);
        self.write_json_pretty(&mut counter)
            .expect("counting cannot fail");
        counter.0
    }

    /// [`Manifest::to_json_pretty`]'s bytes in pieces of about `size`
    /// bytes, made one at a time as the iterator is advanced: a manifest of
    /// a million files can be uploaded without its JSON ever being whole in
    /// memory.
    pub fn json_chunks(&self, size: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
        JsonChunks::new(self, size.max(1))
    }

    /// Streams [`Manifest::to_json_pretty`]'s bytes to `out`.
    ///
    /// # Errors
    /// What `out` returns.
    pub fn write_json_pretty(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(out, self).map_err(std::io::Error::other)
    }

    /// The algorithm most entries use, or `None` for an empty manifest.
    pub fn hash_algorithm(&self) -> Option<HashAlgorithm> {
        let mut counts: BTreeMap<&'static str, (usize, HashAlgorithm)> = BTreeMap::new();
        for e in self.files.values() {
            counts
                .entry(e.hash_algorithm.as_str())
                .or_insert((0, e.hash_algorithm))
                .0 += 1;
        }
        counts.into_values().max_by_key(|(n, _)| *n).map(|(_, a)| a)
    }

    /// Total size of all tracked files.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }
}

/// The pieces of [`Manifest::json_chunks`]: the header as serde writes it
/// for an empty file list, split where the list goes, with each entry
/// written between, indented to its depth, exactly as serde would.
struct JsonChunks<'a> {
    size: usize,
    /// Before the first entry, and after the last one.
    head: Vec<u8>,
    tail: Vec<u8>,
    files: std::collections::btree_map::Iter<'a, String, FileEntry>,
    started: bool,
    done: bool,
}

impl<'a> JsonChunks<'a> {
    fn new(m: &'a Manifest, size: usize) -> Self {
        let empty = BTreeMap::new();
        let header = serde_json::to_vec_pretty(&m.out(&empty)).expect("manifest serialises");
        const MARK: &[u8] = b"\n  \"files\": {}";
        let at = header
            .windows(MARK.len())
            .position(|w| w == MARK)
            .expect("a manifest has a top-level files field");
        let split = at + MARK.len() - 1;
        let (head, tail) = if m.files.is_empty() {
            (header, Vec::new())
        } else {
            let mut tail = b"\n  ".to_vec();
            tail.extend_from_slice(&header[split..]);
            (header[..split].to_vec(), tail)
        };
        JsonChunks {
            size,
            head,
            tail,
            files: m.files.iter(),
            started: false,
            done: false,
        }
    }
}

impl Iterator for JsonChunks<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        if self.done {
            return None;
        }
        let mut out = std::mem::take(&mut self.head);
        out.reserve(self.size.min(1 << 24));
        while out.len() < self.size {
            let Some((key, entry)) = self.files.next() else {
                out.append(&mut self.tail);
                self.done = true;
                break;
            };
            out.extend_from_slice(if self.started { b",\n    " } else { b"\n    " });
            self.started = true;
            serde_json::to_writer(&mut out, key).expect("a key serialises");
            out.extend_from_slice(b": ");
            let value = serde_json::to_vec_pretty(entry).expect("an entry serialises");
            for (i, line) in value.split(|b| *b == b'\n').enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"\n    ");
                }
                out.extend_from_slice(line);
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

/// A writer that only counts bytes.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn json_reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => format!("truncated JSON ({e})"),
        Category::Syntax => format!("not valid JSON ({e})"),
        Category::Data => format!("unexpected content ({e})"),
        Category::Io => e.to_string(),
    }
}

/// Checks that a manifest path is relative, `/`-separated and cannot escape
/// the tree it is joined to.
///
/// # Errors
/// [`Error::UnsafePath`] naming the path and the rule it breaks.
pub fn validate_path(path: &str, origin: &str) -> Result<()> {
    let refuse = |reason: &str| {
        Err(Error::UnsafePath {
            path: path.to_string(),
            origin: origin.to_string(),
            reason: reason.to_string(),
        })
    };
    if path.is_empty() {
        return refuse("empty path");
    }
    if path.contains('\0') {
        return refuse("contains a NUL byte");
    }
    if path.chars().any(|c| c.is_control()) {
        return refuse("contains a control character");
    }
    if path.contains('\\') {
        return refuse("contains a backslash");
    }
    if path.starts_with('/') {
        return refuse("absolute path");
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return refuse("drive-letter path");
    }
    for comp in path.split('/') {
        match comp {
            "" => return refuse("empty path component"),
            "." | ".." => return refuse("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::content_type_for;

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 3,
            hash: "ab".repeat(32).parse().unwrap(),
            hash_algorithm: HashAlgorithm::Sha256,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            etag: None,
            extra: None,
            content_type: Some(content_type_for(path).into()),
        }
    }

    #[test]
    fn written_as_parquedb_writes_it_and_unknown_fields_kept() {
        let mut m = Manifest::new("db1", "sample");
        m.last_synced_at = "2026-01-01T00:00:00.000Z".into();
        m.files.insert("z.parquet".into(), entry("z.parquet"));
        m.files.insert("a.json".into(), entry("a.json"));
        m.owner = Some("ops".into());
        m.synced_from = Some("local".into());
        m.extra
            .insert("futureField".into(), serde_json::json!({"k": 1}));
        let text = String::from_utf8(m.to_json_pretty()).unwrap();
        // ParqueDB's key order, 2-space indentation, no final newline.
        let keys: Vec<usize> = [
            "\"version\"",
            "\"databaseId\"",
            "\"name\"",
            "\"owner\"",
            "\"visibility\"",
            "\"lastSyncedAt\"",
            "\"files\"",
            "\"syncedFrom\"",
            "\"futureField\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} missing")))
        .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.starts_with("{\n  \"version\": 1,\n  \"databaseId\": \"db1\""));
        assert!(!text.ends_with('\n'));
        let entry_keys: Vec<usize> = [
            "\"path\"",
            "\"size\"",
            "\"hash\"",
            "\"hashAlgorithm\"",
            "\"modifiedAt\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap())
        .collect();
        assert!(entry_keys.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.find("\"a.json\"").unwrap() < text.find("\"z.parquet\"").unwrap());
        let back = Manifest::from_slice(text.as_bytes(), "t").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.extra["futureField"], serde_json::json!({"k": 1}));
        assert_eq!(back.to_json_pretty(), m.to_json_pretty());
    }

    #[test]
    fn json_in_chunks_is_the_json_whole() {
        let mut m = Manifest::new("db1", "sample");
        for chunk in [1, 7, 64, 1 << 20] {
            let whole = m.to_json_pretty();
            assert_eq!(m.json_len(), whole.len());
            let pieces: Vec<Vec<u8>> = m.json_chunks(chunk).collect();
            assert_eq!(
                pieces.concat(),
                whole,
                "chunk {chunk}, {} files",
                m.files.len()
            );
            if m.files.is_empty() {
                m.files.insert("a.json".into(), entry("a.json"));
                m.files.insert(
                    "caf\u{e9} \"#%?+&~[]\".parquet".into(),
                    entry("caf\u{e9} \"#%?+&~[]\".parquet"),
                );
                let mut odd = entry("z/x");
                odd.set_source_etag("\"abc\"\n".into());
                m.files.insert("z/x".into(), odd);
                m.extra
                    .insert("later".into(), serde_json::json!({"files": {}}));
                m.metadata = Some(serde_json::json!([1, {"a": "b"}]));
                m.commit_id = Some("c".into());
            }
        }
        let other: BTreeMap<String, FileEntry> =
            [("q".to_string(), entry("q"))].into_iter().collect();
        let mut out = Vec::new();
        m.write_json_pretty_with(&other, &mut out).unwrap();
        let mut with = m.clone();
        with.files = other;
        assert_eq!(out, with.to_json_pretty());
    }

    #[test]
    fn a_streamed_read_digests_the_files_it_does_not_keep() {
        let mut m = Manifest::new("db1", "sample");
        m.files.insert("a.json".into(), entry("a.json"));
        m.files.insert("b/c.parquet".into(), entry("b/c.parquet"));
        m.commit_id = Some("x".into());
        let (header, digest) = Manifest::read_digested(m.to_json_pretty().as_slice(), "t").unwrap();
        assert!(header.files.is_empty());
        assert_eq!(header, m.header());
        assert_eq!(digest, Manifest::entries_digest(&m.files));
        let mut other = m.files.clone();
        other.get_mut("a.json").unwrap().etag = Some("\"e\"".into());
        assert_ne!(digest, Manifest::entries_digest(&other));
        for (bad, want) in [
            (
                "{\"version\": 2, \"databaseId\": \"d\", \"name\": \"n\", \"lastSyncedAt\": \"t\", \"files\": {}}",
                "version 2",
            ),
            ("{\"version\": 1, \"files\": {", "truncated"),
        ] {
            let err = Manifest::read_digested(bad.as_bytes(), "t").unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn rejects_bad_manifests() {
        let cases: &[(&str, &str)] = &[
            ("{\"version\": 1, \"files\": {", "truncated"),
            ("not json", "not valid JSON"),
            ("{\"version\": 2, \"files\": {}}", "unsupported version 2"),
            ("{\"files\": {}}", "missing field `version`"),
            (
                "{\"version\": 1, \"name\": \"x\", \"lastSyncedAt\": \"t\", \"files\": {}}",
                "databaseId",
            ),
        ];
        for (text, want) in cases {
            let err = Manifest::from_slice(text.as_bytes(), "remote").unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("manifest"), "{msg}");
            assert!(msg.contains(want), "{msg} should mention {want}");
        }
    }

    #[test]
    fn a_commit_id_is_dropped_when_the_files_changed_under_it() {
        let mut m = Manifest::new("d", "n");
        m.files.insert("a".into(), entry("a"));
        m.seal_commit("abc");
        let id = m.commit_id.clone().unwrap();
        assert!(id.starts_with("abc."), "{id}");
        let back = Manifest::from_slice(&m.to_json_pretty(), "m").unwrap();
        assert_eq!(back.commit_id.as_deref(), Some(id.as_str()));
        // Another tool rewrites the entry and keeps the field.
        let mut edited = back.clone();
        edited.files.get_mut("a").unwrap().size = 4;
        let read = Manifest::from_slice(&edited.to_json_pretty(), "m").unwrap();
        assert_eq!(read.commit_id, None);
        // An ETag or a time does not change what the id vouches for.
        let mut touched = back;
        touched.files.get_mut("a").unwrap().etag = Some("\"x\"".into());
        let read = Manifest::from_slice(&touched.to_json_pretty(), "m").unwrap();
        assert_eq!(read.commit_id.as_deref(), Some(id.as_str()));
    }

    #[test]
    fn rejects_hostile_paths() {
        for bad in [
            "../x",
            "/abs",
            "a/../../x",
            "C:\\x",
            "C:x",
            "a\0b",
            "",
            "a//b",
            "./a",
        ] {
            assert!(validate_path(bad, "m").is_err(), "{bad:?} accepted");
        }
        for good in [
            "data/users/data.parquet",
            "events/seg-0001.parquet",
            "a..b/c",
        ] {
            validate_path(good, "m").unwrap();
        }
    }

    #[test]
    fn normalisation_duplicates_and_file_directory_clashes_are_refused() {
        let mut m = Manifest::new("d", "n");
        m.files
            .insert("caf\u{e9}.parquet".into(), entry("caf\u{e9}.parquet"));
        m.files
            .insert("cafe\u{301}.parquet".into(), entry("cafe\u{301}.parquet"));
        let err = Manifest::from_slice(&m.to_json_pretty(), "remote")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Unicode normalisation"), "{err}");

        let mut m = Manifest::new("d", "n");
        m.files.insert("data".into(), entry("data"));
        m.files.insert(
            "data/users/data.parquet".into(),
            entry("data/users/data.parquet"),
        );
        let err = Manifest::from_slice(&m.to_json_pretty(), "remote")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("also its directory") && err.contains("data/users/data.parquet"),
            "{err}"
        );
    }

    #[test]
    fn key_and_path_must_agree() {
        let mut m = Manifest::new("d", "n");
        m.files.insert("a".into(), entry("b"));
        let text = m.to_json_pretty();
        let err = Manifest::from_slice(&text, "remote").unwrap_err();
        assert!(err.to_string().contains("must agree"));
    }

    #[test]
    fn malformed_hash_is_corrupt() {
        let mut m = Manifest::new("d", "n");
        m.files.insert("a".into(), entry("a"));
        let good = String::from_utf8(m.to_json_pretty()).unwrap();
        let hex = m.files["a"].hash.to_string();
        for bad in ["XYZ", "ABAB", "abc", &hex[..32]] {
            let text = good.replace(&hex, bad);
            let err = Manifest::from_slice(text.as_bytes(), "remote").unwrap_err();
            assert!(err.to_string().contains("malformed"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_dense_map_equals_a_collected_one_whatever_the_order() {
        // Several batches, keys out of order and repeated: the later value
        // of a key wins, as with `collect`.
        let n = DENSE_BATCH * 5 + 123;
        let pairs: Vec<(u64, usize)> = (0..n)
            .map(|i| {
                (
                    (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) % (n as u64 / 2),
                    i,
                )
            })
            .collect();
        let dense = dense_map(pairs.iter().copied());
        let collected: BTreeMap<u64, usize> = pairs.iter().copied().collect();
        assert_eq!(dense, collected);
        assert!(dense.len() < n, "the keys repeat");
        assert!(dense_map(std::iter::empty::<(u8, u8)>()).is_empty());
        // A failed read ends the input: nothing after it is asked for.
        let mut asked = 0;
        let partial = dense_map(std::iter::from_fn(|| {
            asked += 1;
            (asked <= 3).then_some((asked, ()))
        }));
        assert_eq!(partial.len(), 3);
        assert_eq!(asked, 4);
    }
}
