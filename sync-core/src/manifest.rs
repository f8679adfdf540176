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

use crate::error::{Error, Result};

/// Where the sync manifest lives, relative to a tree's root.
pub const MANIFEST_PATH: &str = "_meta/manifest.json";

/// The only manifest format version pqsync understands.
pub const MANIFEST_VERSION: u32 = 1;

/// A content hash algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// BLAKE3, pqsync's default: fast and parallel.
    #[default]
    Blake3,
    /// SHA-256 of the whole file, as ParqueDB writes.
    Sha256,
    /// MD5, which ParqueDB can read; pqsync compares in MD5 when a remote
    /// already uses it.
    Md5,
}

impl HashAlgorithm {
    /// The lowercase name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Blake3 => "blake3",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Md5 => "md5",
        }
    }

    /// Length of a hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            HashAlgorithm::Blake3 | HashAlgorithm::Sha256 => 64,
            HashAlgorithm::Md5 => 32,
        }
    }
}

impl std::str::FromStr for HashAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "blake3" => Ok(HashAlgorithm::Blake3),
            "sha256" => Ok(HashAlgorithm::Sha256),
            "md5" => Ok(HashAlgorithm::Md5),
            other => Err(Error::Invalid(format!(
                "unknown hash algorithm {other:?} (expected blake3, sha256 or md5)"
            ))),
        }
    }
}

impl std::fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A content hash of up to 32 bytes, kept as bytes and written as lowercase
/// hex. A manifest entry holds one, so keeping it binary halves what a hash
/// costs in memory for trees of millions of files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    len: u8,
    bytes: [u8; 32],
}

impl Digest {
    /// Parses lowercase hex of an even length up to 64.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let raw = hex.as_bytes();
        if !raw.len().is_multiple_of(2) || raw.len() > 64 {
            return None;
        }
        // Lowercase hex digit values; 0xff marks anything else.
        const VALUE: [u8; 256] = {
            let mut t = [0xffu8; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        };
        let mut bytes = [0u8; 32];
        let mut bad = 0u8;
        for (out, pair) in bytes.iter_mut().zip(raw.chunks_exact(2)) {
            let (hi, lo) = (VALUE[usize::from(pair[0])], VALUE[usize::from(pair[1])]);
            bad |= hi | lo;
            *out = (hi << 4) | (lo & 0x0f);
        }
        if bad & 0xf0 != 0 {
            return None;
        }
        Some(Digest {
            len: (raw.len() / 2) as u8,
            bytes,
        })
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length of the hex form.
    pub fn hex_len(&self) -> usize {
        usize::from(self.len) * 2
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::from_hex(s).ok_or_else(|| Error::Invalid(format!("{s:?} is not a hex digest")))
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        Digest::from_hex(other).is_some_and(|d| d == *self)
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

impl PartialEq<Digest> for String {
    fn eq(&self, other: &Digest) -> bool {
        *other == *self.as_str()
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.as_bytes().iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        s.serialize_str(std::str::from_utf8(&buf[..self.hex_len()]).expect("hex is ASCII"))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a hex digest")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Digest, E> {
                Digest::from_hex(v).ok_or_else(|| E::custom(format!("malformed hash {v:?}")))
            }
        }
        d.deserialize_str(V)
    }
}

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

/// One tracked file.
///
/// Fields are declared in the alphabetical order of their JSON names, so the
/// derived serialisation is already key-sorted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    /// MIME type (the common ones are shared, not allocated per entry).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "content_type_de"
    )]
    pub content_type: Option<Cow<'static, str>>,
    /// Store ETag, where one is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Digest of the whole file (lowercase hex in JSON).
    pub hash: Digest,
    /// Algorithm of `hash`.
    pub hash_algorithm: HashAlgorithm,
    /// ISO-8601 modification time.
    pub modified_at: Timestamp,
    /// Relative, `/`-separated path; equal to the entry's key.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
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

    /// `"<algorithm>:<hex>"`, the form stored in object metadata.
    pub fn tagged_hash(&self) -> String {
        format!("{}:{}", self.hash_algorithm, self.hash)
    }
}

/// The content types ParqueDB writes, shared by every entry that has one.
const CONTENT_TYPES: [&str; 6] = [
    "application/vnd.apache.parquet",
    "application/json",
    "application/x-ndjson",
    "text/csv",
    "text/plain",
    "application/octet-stream",
];

fn content_type_de<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Cow<'static, str>>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.map(|s| match CONTENT_TYPES.iter().find(|c| **c == s) {
        Some(c) => Cow::Borrowed(*c),
        None => Cow::Owned(s),
    }))
}

/// A modification time as a manifest writes it (ISO-8601). pqsync's own
/// form (UTC, milliseconds, `Z`) is kept as a number; any other text is kept
/// as written, so a manifest read and written again is unchanged.
#[derive(Clone, PartialEq, Eq)]
pub enum Timestamp {
    /// Milliseconds since the Unix epoch, written as `2026-01-01T00:00:00.000Z`.
    Millis(i64),
    /// Any other text.
    Text(Box<str>),
}

impl Timestamp {
    /// The time at `ms` milliseconds since the Unix epoch.
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp::Millis(ms)
    }

    /// Reads a manifest's text.
    pub fn parse(s: &str) -> Timestamp {
        match canonical_millis(s.as_bytes()) {
            Some(ms) => Timestamp::Millis(ms),
            None => Timestamp::Text(s.into()),
        }
    }

    /// The time, if the text is a valid RFC 3339 time.
    pub fn to_datetime(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Timestamp::Millis(ms) => chrono::DateTime::from_timestamp_millis(*ms),
            Timestamp::Text(s) => chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }
}

/// Milliseconds since the epoch of a time written exactly as
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` with valid fields (the only text that
/// [`Timestamp::Millis`] writes back unchanged); `None` for anything else.
/// Parsed by hand: manifests of a million files hold a million of these.
fn canonical_millis(b: &[u8]) -> Option<i64> {
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return None;
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    // Days from 1970-01-01 to the date (the civil-from-days inverse).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

fn iso_millis(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl From<&str> for Timestamp {
    fn from(s: &str) -> Self {
        Timestamp::parse(s)
    }
}

impl From<String> for Timestamp {
    fn from(s: String) -> Self {
        Timestamp::parse(&s)
    }
}

impl From<std::time::SystemTime> for Timestamp {
    fn from(t: std::time::SystemTime) -> Self {
        Timestamp::Millis(chrono::DateTime::<chrono::Utc>::from(t).timestamp_millis())
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Timestamp::Millis(ms) => match iso_millis(*ms) {
                Some(s) => f.write_str(&s),
                None => write!(f, "{ms}"),
            },
            Timestamp::Text(s) => f.write_str(s),
        }
    }
}

impl std::fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}", self = self.to_string())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an ISO-8601 time")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Timestamp, E> {
                Ok(Timestamp::parse(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// The sync manifest of one tree.
///
/// Fields are declared in the alphabetical order of their JSON names, so the
/// derived serialisation is already key-sorted (`files` is a sorted map and
/// `metadata` is sorted when written).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// pqsync's id for the commit that wrote this manifest; lets a writer
    /// check, after writing, that its commit is the one that stuck.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_id: Option<String>,
    /// Stable identifier of the database.
    pub database_id: String,
    /// Tracked files by relative path.
    pub files: BTreeMap<String, FileEntry>,
    /// ISO-8601 time of the last successful sync.
    pub last_synced_at: String,
    /// Free-form metadata, preserved as is.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "serialize_sorted"
    )]
    pub metadata: Option<Value>,
    /// Human-readable name.
    pub name: String,
    /// Owner's user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// URL-friendly name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<String>,
    /// Where the last sync came from (`local`, `remote:<url>`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_from: Option<String>,
    /// Format version; always [`MANIFEST_VERSION`].
    pub version: u32,
    /// Who may read it.
    #[serde(default)]
    pub visibility: Visibility,
}

fn serialize_sorted<S: serde::Serializer>(v: &Option<Value>, s: S) -> Result<S::Ok, S::Error> {
    v.clone().map(sort_keys).serialize(s)
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
                return Err(corrupt(format!(
                    "unsupported version {v} (this pqsync reads version {MANIFEST_VERSION}; upgrade pqsync)"
                )))
            }
            None => return Err(corrupt("missing field `version`".into())),
        }
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| corrupt(json_reason(&e)))?;
        manifest.validate(origin)?;
        Ok(manifest)
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

    /// Serialises with sorted keys, 2-space indentation and a final newline.
    pub fn to_json_pretty(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256 + self.files.len() * 320);
        serde_json::to_writer_pretty(&mut out, self).expect("manifest serialises");
        out.push(b'\n');
        out
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

fn json_reason(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof => format!("truncated JSON ({e})"),
        Category::Syntax => format!("not valid JSON ({e})"),
        Category::Data => format!("unexpected content ({e})"),
        Category::Io => e.to_string(),
    }
}

/// Rebuilds every object with its keys in sorted order, whatever map type
/// serde_json was compiled with.
fn sort_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, sort_keys(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sort_keys).collect()),
        other => other,
    }
}

/// The current time as ParqueDB writes it: `2026-01-31T12:00:00.000Z`.
pub fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Formats a system time the same way.
pub fn iso_from_system_time(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// ParqueDB's content type for a path.
pub fn content_type_for(path: &str) -> &'static str {
    let ext = path
        .rsplit('/')
        .next()
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("parquet") => "application/vnd.apache.parquet",
        Some("json") => "application/json",
        Some("jsonl") | Some("ndjson") => "application/x-ndjson",
        Some("csv") => "text/csv",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
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

    fn entry(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 3,
            hash: "ab".repeat(32).parse().unwrap(),
            hash_algorithm: HashAlgorithm::Sha256,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            etag: None,
            content_type: Some(content_type_for(path).into()),
        }
    }

    #[test]
    fn round_trip_is_sorted_and_two_space() {
        let mut m = Manifest::new("db1", "sample");
        m.last_synced_at = "2026-01-01T00:00:00.000Z".into();
        m.files.insert("z.parquet".into(), entry("z.parquet"));
        m.files.insert("a.json".into(), entry("a.json"));
        m.owner = Some("ops".into());
        m.synced_from = Some("local".into());
        m.metadata = Some(serde_json::json!({"z": 1, "a": {"y": 2, "b": 3}}));
        let text = String::from_utf8(m.to_json_pretty()).unwrap();
        assert!(text.starts_with("{\n  \"databaseId\": \"db1\",\n  \"files\": {\n    \"a.json\""));
        assert!(text.find("\"a.json\"").unwrap() < text.find("\"z.parquet\"").unwrap());
        // The derived field order is the sorted order.
        let oracle =
            serde_json::to_string_pretty(&sort_keys(serde_json::to_value(&m).unwrap())).unwrap();
        assert_eq!(text.trim_end(), oracle);
        let back = Manifest::from_slice(text.as_bytes(), "t").unwrap();
        assert_eq!(back, m);
        assert_eq!(back.to_json_pretty(), m.to_json_pretty());
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
    fn times_are_compact_yet_written_back_as_read() {
        let ours = Timestamp::parse("2026-01-01T00:00:01.250Z");
        assert_eq!(ours, Timestamp::Millis(1_767_225_601_250));
        assert_eq!(ours.to_string(), "2026-01-01T00:00:01.250Z");
        for other in [
            "2026-01-01T00:00:01Z",
            "2026-01-01T01:00:01.250+01:00",
            "2026-01-01T00:00:01.250000Z",
            "not a time",
        ] {
            let t = Timestamp::parse(other);
            assert!(matches!(t, Timestamp::Text(_)), "{other}");
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("{other:?}"));
        }
        assert_eq!(
            Timestamp::parse("2026-01-01T01:00:01.250+01:00").to_datetime(),
            ours.to_datetime()
        );
        assert_eq!(Timestamp::parse("not a time").to_datetime(), None);
        // The hand parser agrees with chrono over a range of dates.
        let mut ms = -62_135_596_800_000i64; // 0001-01-01
        while ms < 253_402_300_799_000 {
            let text = iso_millis(ms).unwrap();
            assert_eq!(canonical_millis(text.as_bytes()), Some(ms), "{text}");
            ms += 86_400_000 * 37 + 3_600_000 * 5 + 61_001;
        }
        for bad in [
            "2026-02-29T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T00:60:00.000Z",
            "2026-01-00T00:00:00.000Z",
            "2026-01-01 00:00:00.000Z",
        ] {
            assert_eq!(canonical_millis(bad.as_bytes()), None, "{bad}");
        }
        assert!(canonical_millis(b"2024-02-29T23:59:59.999Z").is_some());
        let e: FileEntry = serde_json::from_str(
            r#"{"contentType":"text/csv","hash":"00","hashAlgorithm":"md5","modifiedAt":"2026-01-01T00:00:00Z","path":"a","size":1}"#,
        )
        .unwrap();
        assert!(matches!(e.content_type, Some(Cow::Borrowed("text/csv"))));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"contentType":"text/csv","hash":"00","hashAlgorithm":"md5","modifiedAt":"2026-01-01T00:00:00Z","path":"a","size":1}"#
        );
    }

    #[test]
    fn digests_round_trip_as_lowercase_hex() {
        let hex = "00ff10ab".repeat(8);
        let d: Digest = hex.parse().unwrap();
        assert_eq!(d.to_string(), hex);
        assert_eq!(d.hex_len(), 64);
        assert_eq!(d, hex);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{hex}\""));
        let md5: Digest = "900150983cd24fb0d6963f7d28e17f72".parse().unwrap();
        assert_eq!(md5.as_bytes().len(), 16);
        assert!(Digest::from_hex("0g").is_none());
        assert!(Digest::from_hex("AB").is_none());
        assert!(Digest::from_hex(&"0".repeat(66)).is_none());
    }

    #[test]
    fn content_types() {
        assert_eq!(
            content_type_for("data/u/data.parquet"),
            "application/vnd.apache.parquet"
        );
        assert_eq!(
            content_type_for("events/_manifest.json"),
            "application/json"
        );
        assert_eq!(content_type_for("x.jsonl"), "application/x-ndjson");
        assert_eq!(
            content_type_for("indexes/bloom/u.bloom"),
            "application/octet-stream"
        );
    }
}
