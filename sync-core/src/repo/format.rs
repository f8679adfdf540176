//! The repository's objects as stored: the `config`, content objects,
//! snapshot records and prune marks (specified in `docs/repository.md`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::crypto::{EncryptionParams, Keys};
use crate::error::{Error, Result};
use crate::manifest::{FileEntry, HashAlgorithm, Manifest};
use crate::parquedb::EventCoverage;

/// The repository format this pqsync writes and reads.
pub const FORMAT: u32 = 1;

/// The key of the repository's configuration.
pub(crate) const CONFIG: &str = "config";
/// Where content objects live (`objects/<first 2 hex>/<hex>`).
pub(crate) const OBJECTS: &str = "objects";
/// Where snapshot records and prune marks live; one LIST reads both.
pub(crate) const INDEX: &str = "index";
/// Snapshot records: `index/snapshots/<id>`.
pub(crate) const SNAPSHOTS: &str = "index/snapshots";
/// The associated data snapshot records are sealed with.
const SNAPSHOT_AAD: &[u8] = b"index/snapshots";
/// Key files, one per password: `keys/<id>`.
pub(crate) const KEYS: &str = "keys";
/// The parts of a split backup waiting for their merge:
/// `index/shards/<N>/<K>`, each a snapshot record of one shard's files.
pub(crate) const SHARDS: &str = "index/shards";
/// Prune marks: `index/marks/<id>`.
pub(crate) const MARKS: &str = "index/marks";

/// The default time an unreferenced object stays marked before a prune
/// deletes it.
pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A repository's `config` object. Written once, when the repository is
/// made, and never changed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RepoConfig {
    /// The format version ([`FORMAT`]).
    pub pqsync_repository: u32,
    /// A random id (32 hex digits).
    pub id: String,
    /// When the repository was made (RFC 3339).
    pub created_at: String,
    /// How content is hashed and objects are named.
    pub hash: HashAlgorithm,
    /// Hex digits of the hash that name the fan-out directory.
    pub fanout: usize,
    /// Content-defined chunking, when files are split (`None`: whole
    /// files).
    #[serde(default)]
    pub chunking: Option<serde_json::Value>,
    /// Encryption parameters (`None`: objects are stored as they are).
    #[serde(default)]
    pub encryption: Option<serde_json::Value>,
    /// How long an unreferenced object stays marked before a prune may
    /// delete it (seconds). A backup that takes longer than half of this
    /// checks the marks again before it commits.
    pub grace_seconds: u64,
}

impl RepoConfig {
    /// A new repository's configuration.
    pub fn new(grace: std::time::Duration) -> Self {
        RepoConfig {
            pqsync_repository: FORMAT,
            id: format!("{:032x}", rand::random::<u128>()),
            created_at: crate::manifest::now_iso(),
            hash: HashAlgorithm::Blake3,
            fanout: 2,
            chunking: Some(Chunking::current()),
            encryption: None,
            grace_seconds: grace.as_secs(),
        }
    }

    /// Parses a `config`, refusing formats and features this pqsync does
    /// not know.
    ///
    /// # Errors
    /// [`Error::Repository`] naming what is unknown and the fix.
    pub fn parse(bytes: &[u8], url: &str) -> Result<Self> {
        let err = |reason: String| Error::Repository {
            url: url.to_string(),
            reason,
        };
        let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            err(format!(
                "its config does not parse ({e}); it is not a pqsync repository, or it is damaged"
            ))
        })?;
        match v.get("pqsyncRepository").and_then(|f| f.as_u64()) {
            Some(f) if f == u64::from(FORMAT) => {}
            Some(f) => {
                return Err(err(format!(
                    "repository format {f} is newer than this pqsync reads (format {FORMAT}); upgrade pqsync"
                )))
            }
            None => return Err(err("its config has no pqsyncRepository version; it is not a pqsync repository".into())),
        }
        let c: RepoConfig = serde_json::from_value(v).map_err(|e| {
            err(format!(
                "its config is damaged ({e}); run `pqsync check` on it"
            ))
        })?;
        let known_encryption = c.encryption.as_ref().is_none_or(|e| {
            serde_json::from_value::<EncryptionParams>(e.clone())
                .is_ok_and(|p| p == EncryptionParams::current())
        });
        let known_chunking = c
            .chunking
            .as_ref()
            .is_none_or(|v| v == &Chunking::current());
        if !known_chunking || !known_encryption {
            return Err(err(
                "the repository uses chunking or encryption parameters this pqsync does not know; upgrade pqsync".into(),
            ));
        }
        if c.fanout == 0 || c.fanout > 8 {
            return Err(err(format!(
                "its config has an unusable fanout {}",
                c.fanout
            )));
        }
        Ok(c)
    }

    /// The content-defined chunking (minimum, average and maximum chunk
    /// size) a file at `path` is kept in: ParqueDB's namespace data files
    /// (`data/<ns>/data.parquet`), in a repository made with chunking.
    pub fn chunking_for(&self, path: &str) -> Option<(u32, u32, u32)> {
        self.chunking.as_ref()?;
        let mut parts = path.split('/');
        let namespace_data = parts.next() == Some("data")
            && parts.next().is_some_and(|ns| !ns.is_empty())
            && parts.next() == Some("data.parquet")
            && parts.next().is_none();
        namespace_data.then_some((CHUNK_MIN, CHUNK_AVG, CHUNK_MAX))
    }

    /// Whether objects and snapshots are sealed.
    pub fn encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// The key of the object holding content `hex`.
    pub fn object_key(&self, hex: &str) -> String {
        let n = self.fanout.min(hex.len());
        format!("{OBJECTS}/{}/{hex}", &hex[..n])
    }
}

/// Chunk sizes: FastCDC (2020) with these minimum, average and maximum.
const CHUNK_MIN: u32 = 64 * 1024;
const CHUNK_AVG: u32 = 256 * 1024;
const CHUNK_MAX: u32 = 1024 * 1024;

/// The `chunking` parameters this pqsync writes and reads.
struct Chunking;

impl Chunking {
    fn current() -> serde_json::Value {
        serde_json::json!({
            "algorithm": "fastcdc-2020",
            "minSize": CHUNK_MIN,
            "avgSize": CHUNK_AVG,
            "maxSize": CHUNK_MAX,
            "files": ["data/*/data.parquet"],
        })
    }
}

/// Figures about a snapshot.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSummary {
    /// Files in the snapshot.
    pub files: u64,
    /// Their total size.
    pub bytes: u64,
    /// Objects this backup stored that were not in the repository.
    pub added_objects: u64,
    /// Their size.
    pub added_bytes: u64,
}

/// One snapshot record: `index/snapshots/<id>`, stored as zstd-compressed
/// JSON (sealed, in an encrypted repository), where `id` is the BLAKE3
/// hash of the stored bytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRecord {
    /// The record format ([`FORMAT`]).
    pub snapshot: u32,
    /// When the backup started (RFC 3339, UTC). Never taken from object
    /// timestamps.
    pub time: String,
    /// The machine that made it.
    pub host: String,
    /// Tags given to the backup.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The backed-up directory.
    pub source: String,
    /// The snapshot this one was compared with, if any.
    #[serde(default)]
    pub parent: Option<String>,
    /// The database's `databaseId`.
    pub database_id: String,
    /// The database's name.
    pub name: String,
    /// The event log it covers, when the database has one.
    #[serde(default)]
    pub event_log: Option<EventCoverage>,
    /// Figures about it.
    pub summary: SnapshotSummary,
    /// The tree, as a ParqueDB manifest. An entry whose content is not in
    /// its usual object names it in `object`.
    /// `None` in the light summaries listings keep.
    pub manifest: Option<Box<serde_json::value::RawValue>>,
}

impl SnapshotRecord {
    /// The tree the snapshot holds.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] if it does not parse or validate.
    pub fn tree(&self, origin: &str) -> Result<Manifest> {
        match &self.manifest {
            Some(raw) => Manifest::from_slice(raw.get().as_bytes(), origin),
            None => Err(Error::ManifestCorrupt {
                path: origin.to_string(),
                reason: "the snapshot record has no tree".into(),
            }),
        }
    }

    /// The record's bytes as stored (sealed, with `keys`) and its id.
    pub(crate) fn encode(&self, keys: Option<&Keys>) -> (Vec<u8>, String) {
        let json = serde_json::to_vec(self).expect("a snapshot record serialises");
        let mut bytes = zstd::encode_all(&json[..], 3).expect("compressing in memory cannot fail");
        if let Some(k) = keys {
            bytes = k.seal(SNAPSHOT_AAD, &bytes);
        }
        let id = blake3::hash(&bytes).to_hex().to_string();
        (bytes, id)
    }

    /// Parses a record read from `key`, checking it is the one its id names.
    ///
    /// # Errors
    /// [`Error::Repository`] for a record that does not parse, a format
    /// this pqsync does not know, or bytes that do not match the id.
    pub(crate) fn decode(bytes: &[u8], id: &str, url: &str, keys: Option<&Keys>) -> Result<Self> {
        let shown = format!("{url}/{SNAPSHOTS}/{id}");
        let err = |reason: String| Error::Repository {
            url: shown.clone(),
            reason,
        };
        if blake3::hash(bytes).to_hex().as_str() != id {
            return Err(err("the snapshot's bytes do not match its id (damaged or tampered with); `pqsync forget` it and run `pqsync check`".into()));
        }
        let opened;
        let bytes = match keys {
            Some(k) => {
                opened = k.open(SNAPSHOT_AAD, bytes, &shown)?;
                &opened[..]
            }
            None => bytes,
        };
        let json = zstd::decode_all(bytes)
            .map_err(|e| err(format!("does not decompress ({e}); it is damaged")))?;
        // The format first, so a newer record is named as such rather than
        // as damaged.
        #[derive(Deserialize)]
        struct Format {
            snapshot: Option<serde_json::Value>,
        }
        let f: Format =
            serde_json::from_slice(&json).map_err(|e| err(format!("does not parse ({e})")))?;
        match f.snapshot.as_ref().and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(FORMAT) => {}
            other => {
                return Err(err(format!(
                    "snapshot format {other:?} is not one this pqsync reads (format {FORMAT}); upgrade pqsync"
                )))
            }
        }
        serde_json::from_slice(&json).map_err(|e| err(format!("is damaged ({e})")))
    }

    /// The snapshot's time.
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.time)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

/// The object key an entry's content is in: the one its `object` field
/// names, else the usual one (named by the content hash, keyed when the
/// repository is encrypted).
pub(crate) fn entry_object_keyed(
    config: &RepoConfig,
    keys: Option<&Keys>,
    e: &FileEntry,
) -> String {
    if let Some(o) = e
        .extra
        .as_ref()
        .and_then(|x| x.get("object"))
        .and_then(|o| o.as_str())
    {
        return o.to_string();
    }
    match keys {
        Some(k) => config.object_key(&k.content_name(e.hash.as_bytes())),
        None => config.object_key(&e.hash.to_string()),
    }
}

/// A prune's mark: objects found unreferenced at `time`, which a later
/// prune deletes once they have stayed unreferenced for the grace period.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    /// When the objects were found unreferenced (RFC 3339, UTC).
    pub time: String,
    /// The objects, by key, with their sizes.
    pub objects: BTreeMap<String, u64>,
}
