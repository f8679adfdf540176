//! Deterministic generator of ParqueDB-layout sample databases.
//!
//! [`generate`] writes a complete database tree (see `shared/PARQUEDB.md` for
//! the layout) from a handful of [`GenOptions`]. Every byte is a function of
//! the options alone: timestamps are derived from a fixed epoch
//! ([`EPOCH_MS`], 2026-01-01T00:00:00Z), never from the clock, and all
//! pseudo-random choices come from a small built-in SplitMix64 generator, so the
//! output is byte-identical across runs, machines and dependency upgrades of
//! `rand`. Each artifact draws from its own random stream, so asking for more
//! extra files or a bigger big file leaves every other file unchanged.
//!
//! # What is written
//!
//! | path | content |
//! |---|---|
//! | `_meta/schema.json` | namespaces, their fields, relationships, entity counts |
//! | `data/{ns}/data.parquet` | entities: `$id`, `$type`, `name`, `createdAt`, `version`, `data` |
//! | `rels/forward/{ns}.parquet` | relationships whose `fromNs` is `ns`, sorted by `fromId` |
//! | `rels/reverse/{ns}.parquet` | the same rows for relationships whose `toNs` is `ns`, sorted by `toId` |
//! | `events/seg-NNNN.parquet` | event-log segments, `seq` from 1 |
//! | `events/current.parquet` | the active event log (events after the last segment) |
//! | `events/_manifest.json` | event segment manifest |
//! | `indexes/bloom/{ns}.bloom` | bloom filter over the namespace's `$id`s (format below) |
//! | `indexes/secondary/{ns}.name.idx.parquet` | secondary index: `key` (the name), `id` (the `$id`) |
//! | `snapshots/extra/NNN/part-NNNNNN.parquet` | [`GenOptions::extra_files`] small entity files |
//! | `snapshots/big/data.parquet` | [`GenOptions::big_file_mib`] MiB of incompressible bytes |
//!
//! Namespaces are `users`, `posts`, `comments`, then `ns4`, `ns5`, ... An
//! entity's `$id` is `{ns}/{id}` where `id` is a 26-character ULID. The
//! relationship files carry the bare `id` in `fromId`/`toId` (the namespace is
//! in `fromNs`/`toNs`), and event targets are `ns:id` for entities and
//! `fromNs:fromId:predicate:toNs:toId` for relationships. Timestamps are
//! plain INT64 milliseconds since the Unix epoch. Strings are `UTF8`
//! `BYTE_ARRAY`s; JSON columns hold compact JSON text with sorted keys.
//! Parquet pages are uncompressed.
//!
//! # Bloom filter format
//!
//! A 24-byte little-endian header followed by the bit array:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `PQBF` |
//! | 4 | 1 | format version, `1` |
//! | 5 | 1 | `k`, the number of hash functions |
//! | 6 | 2 | reserved, zero |
//! | 8 | 8 | `m`, the number of bits (a positive multiple of 64) |
//! | 16 | 8 | number of keys inserted |
//! | 24 | m/8 | bits; bit `b` is `byte[b / 8] & (1 << (b % 8))` |
//!
//! A key (the entity's full `$id`) sets bits `(h1 + i * h2) mod m` for `i` in
//! `0..k` (wrapping u64 arithmetic), where `h1` is the 64-bit FNV-1a hash of
//! the key's UTF-8 bytes and `h2` is the SplitMix64 finalizer applied to `h1`,
//! with its lowest bit set. [`bloom_may_contain`] implements the lookup.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use parquet::basic::Compression;
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterPropertiesPtr};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::TypePtr;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The fixed epoch all generated timestamps derive from: 2026-01-01T00:00:00Z
/// in milliseconds since the Unix epoch.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// [`EPOCH_MS`] as ParqueDB writes timestamps in its sync manifest
/// (JavaScript's `Date.prototype.toISOString`).
pub const EPOCH_ISO: &str = "2026-01-01T00:00:00.000Z";

/// Value of `generatedBy` in `_meta/schema.json`; [`generate`] only clears a
/// non-empty output directory whose schema carries this marker.
pub const GENERATOR_MARKER: &str = "pqsync-testdata";

/// The top-level folders [`generate`] owns inside its output directory.
const OWNED_DIRS: [&str; 6] = ["_meta", "data", "rels", "events", "indexes", "snapshots"];

/// Size of one value in the big file (and of its writes).
const BIG_VALUE_BYTES: usize = 64 * 1024;
/// Values per row group in the big file (8 MiB row groups keep memory bounded).
const BIG_VALUES_PER_ROW_GROUP: usize = 128;
/// Entities per extra file.
const EXTRA_ROWS: usize = 3;
/// Extra files per `snapshots/extra/NNN/` folder.
const EXTRA_FILES_PER_DIR: usize = 1000;
/// Bloom filter: bits per key and number of hash functions.
const BLOOM_BITS_PER_KEY: u64 = 10;
const BLOOM_HASHES: u8 = 7;
const BLOOM_HEADER: usize = 24;

/// What to generate. [`GenOptions::default`] gives the committed
/// `testdata/sample-db`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenOptions {
    /// Number of entity namespaces (`users`, `posts`, `comments`, `ns4`, ...).
    pub namespaces: usize,
    /// Entities in each namespace's `data.parquet`.
    pub rows_per_namespace: usize,
    /// Number of sealed event segments (`events/seg-NNNN.parquet`).
    pub segments: usize,
    /// Events in each segment; `events/current.parquet` holds half as many.
    pub events_per_segment: usize,
    /// Number of small extra Parquet files under `snapshots/extra/`.
    pub extra_files: usize,
    /// Size of `snapshots/big/data.parquet` in MiB of payload; 0 writes no big file.
    pub big_file_mib: u64,
    /// Seed of every pseudo-random choice.
    pub seed: u64,
}

impl Default for GenOptions {
    /// The settings of the committed sample: 3 namespaces of 200 entities,
    /// 3 segments of 100 events, 6 extra files, no big file, seed 42.
    fn default() -> Self {
        Self {
            namespaces: 3,
            rows_per_namespace: 200,
            segments: 3,
            events_per_segment: 100,
            extra_files: 6,
            big_file_mib: 0,
            seed: 42,
        }
    }
}

/// What [`generate`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Number of files written.
    pub files: usize,
    /// Total size of the files written, in bytes.
    pub bytes: u64,
    /// Entities written to `data/{ns}/data.parquet` (extra files not counted).
    pub entities: usize,
    /// Distinct relationships (each is one row in forward and one in reverse).
    pub relationships: usize,
    /// Events written: all segments plus `events/current.parquet`.
    pub events: usize,
}

/// Writes a sample database into `dir` and returns what was written.
///
/// `dir` is created if needed. If it exists and is not empty it must be an
/// earlier output of this generator (its `_meta/schema.json` has
/// `"generatedBy": "pqsync-testdata"`); the generator's own top-level folders
/// (`_meta`, `data`, `rels`, `events`, `indexes`, `snapshots`) are then removed
/// first, so stale files from a run with other options do not linger. Other
/// entries of `dir` are left alone.
///
/// # Errors
///
/// Fails if `dir` is a non-empty directory not written by this generator, or
/// on any I/O or Parquet encoding error (the message names the path).
pub fn generate(dir: &Path, opts: &GenOptions) -> Result<Summary> {
    ensure!(
        opts.namespaces > 0 || opts.extra_files == 0,
        "extra files need at least one namespace"
    );
    prepare_dir(dir)?;
    let mut out = Out::new(dir);
    let schemas = Schemas::new()?;
    let props = small_file_props();

    let specs: Vec<NsSpec> = (0..opts.namespaces).map(NsSpec::new).collect();

    // Entities.
    let entities: Vec<Vec<Entity>> = specs
        .iter()
        .map(|spec| {
            let mut rng = Rng::stream(opts.seed, &format!("entities/{}", spec.name));
            (0..opts.rows_per_namespace)
                .map(|i| {
                    let created_at = EPOCH_MS + i as i64 * 60_000 + rng.below(60_000) as i64;
                    make_entity(spec, i, created_at, &mut rng)
                })
                .collect()
        })
        .collect();
    let rels = make_relationships(&specs, &entities, opts.seed);

    // The schema first: its marker lets a later run clean up after a failed one.
    let schema = schema_json(&specs, &rels, opts);
    out.put("_meta/schema.json", pretty_json(&schema)?.as_bytes())?;

    for (spec, rows) in specs.iter().zip(&entities) {
        let bytes = entity_parquet(&schemas.entity, &props, spec, rows)?;
        out.put(&format!("data/{}/data.parquet", spec.name), &bytes)?;
    }

    // Relationships.
    for spec in &specs {
        let forward: Vec<&Rel> = rels.iter().filter(|r| r.from_ns == spec.name).collect();
        let mut reverse: Vec<&Rel> = rels.iter().filter(|r| r.to_ns == spec.name).collect();
        reverse.sort_by(|a, b| a.reverse_key().cmp(&b.reverse_key()));
        let bytes = rel_parquet(&schemas.rel, &props, &forward)?;
        out.put(&format!("rels/forward/{}.parquet", spec.name), &bytes)?;
        let bytes = rel_parquet(&schemas.rel, &props, &reverse)?;
        out.put(&format!("rels/reverse/{}.parquet", spec.name), &bytes)?;
    }

    // Indexes.
    for (spec, rows) in specs.iter().zip(&entities) {
        let ids: Vec<String> = rows.iter().map(|e| e.full_id(spec)).collect();
        out.put(
            &format!("indexes/bloom/{}.bloom", spec.name),
            &bloom_filter(&ids),
        )?;
        let mut pairs: Vec<(&str, &str)> = rows
            .iter()
            .zip(&ids)
            .map(|(e, id)| (e.name.as_str(), id.as_str()))
            .collect();
        pairs.sort_unstable();
        let bytes = write_parquet(
            &schemas.index,
            &props,
            &[
                Column::Str(pairs.iter().map(|p| p.0.into()).collect()),
                Column::Str(pairs.iter().map(|p| p.1.into()).collect()),
            ],
        )?;
        out.put(
            &format!("indexes/secondary/{}.name.idx.parquet", spec.name),
            &bytes,
        )?;
    }

    // Events.
    let events = write_events(&mut out, &schemas, &props, opts, &specs, &entities, &rels)?;

    // Extra files: many and tiny, so skip dictionaries and statistics.
    let tiny_props = tiny_file_props();
    for j in 0..opts.extra_files {
        let spec = &specs[j % specs.len()];
        let mut rng = Rng::stream(opts.seed, &format!("extra/{j}"));
        let base = EPOCH_MS + 90 * 86_400_000 + j as i64 * 1_000;
        let rows: Vec<Entity> = (0..EXTRA_ROWS)
            .map(|i| make_entity(spec, j * EXTRA_ROWS + i, base + i as i64, &mut rng))
            .collect();
        let bytes = entity_parquet(&schemas.entity, &tiny_props, spec, &rows)?;
        let path = format!(
            "snapshots/extra/{:03}/part-{j:06}.parquet",
            j / EXTRA_FILES_PER_DIR
        );
        out.put(&path, &bytes)?;
    }

    // Big file.
    if opts.big_file_mib > 0 {
        write_big_file(&mut out, &schemas.blob, opts)?;
    }

    Ok(Summary {
        files: out.files,
        bytes: out.bytes,
        entities: entities.iter().map(Vec::len).sum(),
        relationships: rels.len(),
        events,
    })
}

/// Builds the `_meta/manifest.json` that ParqueDB's own sync engine would
/// write for the database in `dir` after a local push.
///
/// Every file under `dir` is listed except the paths ParqueDB never syncs
/// (paths starting with `_meta/manifest.json`, `_meta/locks`, `.git`,
/// `.DS_Store` or `node_modules`). Each entry has the file's `path`, `size`,
/// SHA-256 `hash` (lowercase hex), `hashAlgorithm: "sha256"`, `modifiedAt`
/// fixed at [`EPOCH_ISO`] rather than the file's mtime (so the result is
/// reproducible), the FsBackend `etag` for that time and size, and
/// `contentType`.
/// `databaseId` is derived from `opts.seed`, `name` is `sample-db`,
/// `visibility` is `private`, `syncedFrom` is `local` and `lastSyncedAt` is
/// [`EPOCH_ISO`].
///
/// # Errors
///
/// Fails if `dir` cannot be walked or a file cannot be read.
pub fn parquedb_manifest(dir: &Path, opts: &GenOptions) -> Result<Value> {
    let mut paths = Vec::new();
    walk(dir, dir, &mut paths)?;
    let mut files = serde_json::Map::new();
    for rel in paths {
        if !parquedb_syncs(&rel) {
            continue;
        }
        let path = dir.join(&rel);
        let mut file = fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
        let mut hasher = Sha256::new();
        let size = std::io::copy(&mut file, &mut hasher)
            .with_context(|| format!("read {}", path.display()))?;
        let hash: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let entry = json!({
            "path": rel.clone(),
            "size": size,
            "hash": hash,
            "hashAlgorithm": "sha256",
            "modifiedAt": EPOCH_ISO,
            "etag": fs_etag(EPOCH_MS as u64, size),
            "contentType": content_type(&rel),
        });
        files.insert(rel, entry);
    }
    Ok(sorted(json!({
        "version": 1,
        "databaseId": database_id(opts.seed),
        "name": "sample-db",
        "visibility": "private",
        "lastSyncedAt": EPOCH_ISO,
        "syncedFrom": "local",
        "files": Value::Object(files),
    })))
}

/// Writes [`parquedb_manifest`] for `dir` to `out` as ParqueDB does
/// (`JSON.stringify(m, null, 2)`): its key order, 2-space indentation and
/// no trailing newline.
///
/// # Errors
///
/// Fails if the manifest cannot be built or `out` cannot be written.
pub fn write_parquedb_manifest(dir: &Path, opts: &GenOptions, out: &Path) -> Result<()> {
    let manifest = parquedb_manifest(dir, opts)?;
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    fs::write(out, parquedb_text(&manifest)).with_context(|| format!("write {}", out.display()))
}

/// ParqueDB's FsBackend ETag: `"<mtimeMs in base 36>-<size in base 36>"`,
/// quotes included.
fn fs_etag(mtime_ms: u64, size: u64) -> String {
    format!("\"{}-{}\"", base36(mtime_ms), base36(size))
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ascii")
}

/// A manifest as `JSON.stringify(m, null, 2)` prints the object ParqueDB
/// builds: its keys in ParqueDB's insertion order.
fn parquedb_text(m: &Value) -> String {
    const TOP: [&str; 8] = [
        "version",
        "databaseId",
        "name",
        "owner",
        "visibility",
        "lastSyncedAt",
        "files",
        "syncedFrom",
    ];
    const ENTRY: [&str; 7] = [
        "path",
        "size",
        "hash",
        "hashAlgorithm",
        "modifiedAt",
        "etag",
        "contentType",
    ];
    let mut fields = Vec::new();
    for k in TOP {
        let Some(v) = m.get(k) else { continue };
        let text = match v.as_object() {
            Some(files) if k == "files" && !files.is_empty() => {
                let entries: Vec<String> = files
                    .iter()
                    .map(|(path, e)| {
                        let inner: Vec<String> = ENTRY
                            .iter()
                            .filter_map(|f| e.get(f).map(|v| format!("      {}: {v}", json!(f))))
                            .collect();
                        format!("    {}: {{\n{}\n    }}", json!(path), inner.join(",\n"))
                    })
                    .collect();
                format!("{{\n{}\n  }}", entries.join(",\n"))
            }
            _ => v.to_string(),
        };
        fields.push(format!("  {}: {text}", json!(k)));
    }
    format!("{{\n{}\n}}", fields.join(",\n"))
}

/// Tells whether a bloom filter written by [`generate`] may contain `key`
/// (`false` means certainly absent).
///
/// # Errors
///
/// Fails if `filter` is not a well-formed filter in the format described in
/// the module docs.
pub fn bloom_may_contain(filter: &[u8], key: &str) -> Result<bool> {
    ensure!(
        filter.len() >= BLOOM_HEADER,
        "bloom filter shorter than its header"
    );
    ensure!(&filter[0..4] == b"PQBF", "bad bloom filter magic");
    ensure!(filter[4] == 1, "unknown bloom filter version {}", filter[4]);
    let k = filter[5];
    let m = u64::from_le_bytes(filter[8..16].try_into()?);
    ensure!(
        m > 0 && m % 64 == 0,
        "bloom filter bit count {m} is not a positive multiple of 64"
    );
    ensure!(
        (filter.len() - BLOOM_HEADER) as u64 * 8 == m,
        "bloom filter length does not match its bit count"
    );
    let bits = &filter[BLOOM_HEADER..];
    Ok(bloom_positions(key, k, m).all(|b| bits[(b / 8) as usize] & (1 << (b % 8)) != 0))
}

// ---------------------------------------------------------------------------
// Output directory

/// Tracks what was written.
struct Out {
    root: PathBuf,
    dirs: HashSet<PathBuf>,
    files: usize,
    bytes: u64,
}

impl Out {
    fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            dirs: HashSet::new(),
            files: 0,
            bytes: 0,
        }
    }

    /// Returns the absolute path of `rel`, creating its parent folder.
    fn prepare(&mut self, rel: &str) -> Result<PathBuf> {
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            if !self.dirs.contains(parent) {
                fs::create_dir_all(parent)
                    .with_context(|| format!("create {}", parent.display()))?;
                self.dirs.insert(parent.to_path_buf());
            }
        }
        Ok(path)
    }

    fn put(&mut self, rel: &str, bytes: &[u8]) -> Result<u64> {
        let path = self.prepare(rel)?;
        fs::write(&path, bytes).with_context(|| format!("write {}", path.display()))?;
        self.record(bytes.len() as u64);
        Ok(bytes.len() as u64)
    }

    fn record(&mut self, size: u64) {
        self.files += 1;
        self.bytes += size;
    }
}

fn prepare_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()));
    }
    let mut entries = fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))?;
    if entries.next().is_none() {
        return Ok(());
    }
    let schema_path = dir.join("_meta/schema.json");
    let ours = fs::read(&schema_path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["generatedBy"] == GENERATOR_MARKER);
    if !ours {
        bail!(
            "{} is not empty and was not written by {GENERATOR_MARKER} \
             (no generatedBy marker in _meta/schema.json); refusing to overwrite it",
            dir.display()
        );
    }
    for name in OWNED_DIRS {
        let path = dir.join(name);
        if path.exists() {
            fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Pseudo-random numbers and ids

/// SplitMix64: tiny, fast, and stable forever (unlike `rand`'s `StdRng`).
struct Rng(u64);

impl Rng {
    /// An independent stream for one artifact.
    fn stream(seed: u64, tag: &str) -> Self {
        Rng(mix64(seed ^ fnv1a64(tag.as_bytes())))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The SplitMix64 finalizer.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A ULID: 48-bit millisecond timestamp and 80 random bits, Crockford base32.
fn ulid(ts_ms: i64, rng: &mut Rng) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let random =
        (u128::from(rng.next_u64()) << 16 | u128::from(rng.next_u64() >> 48)) & ((1u128 << 80) - 1);
    let value = (u128::from(ts_ms as u64) & ((1u128 << 48) - 1)) << 80 | random;
    (0..26)
        .map(|i| ALPHABET[((value >> (125 - 5 * i)) & 31) as usize] as char)
        .collect()
}

fn database_id(seed: u64) -> String {
    let mut rng = Rng::stream(seed, "databaseId");
    format!("db_{}", ulid(EPOCH_MS, &mut rng).to_lowercase())
}

// ---------------------------------------------------------------------------
// Entities

/// One namespace: its name, entity type and outgoing relationships.
struct NsSpec {
    index: usize,
    name: String,
    type_name: String,
    /// `(predicate, target namespace index, percent of entities, max count)`.
    rels: Vec<(&'static str, usize, u64, u64)>,
}

impl NsSpec {
    fn new(index: usize) -> Self {
        let (name, type_name, rels) = match index {
            0 => ("users".into(), "User".into(), vec![("follows", 0, 60, 3)]),
            1 => ("posts".into(), "Post".into(), vec![("author", 0, 100, 1)]),
            2 => (
                "comments".into(),
                "Comment".into(),
                vec![
                    ("post", 1, 100, 1),
                    ("author", 0, 100, 1),
                    ("replyTo", 2, 25, 1),
                ],
            ),
            k => (
                format!("ns{}", k + 1),
                format!("Ns{}", k + 1),
                vec![("parent", k - 1, 100, 1), ("related", k, 30, 2)],
            ),
        };
        Self {
            index,
            name,
            type_name,
            rels,
        }
    }

    fn data_fields(&self) -> Value {
        match self.index {
            0 => json!({"email": "string", "age": "int", "active": "boolean"}),
            1 => {
                json!({"title": "string", "tags": "string[]", "views": "int", "published": "boolean"})
            }
            2 => json!({"body": "string", "likes": "int"}),
            _ => json!({"value": "int", "label": "string"}),
        }
    }
}

struct Entity {
    id: String,
    name: String,
    created_at: i64,
    version: i64,
    data: Value,
}

impl Entity {
    fn full_id(&self, spec: &NsSpec) -> String {
        format!("{}/{}", spec.name, self.id)
    }

    /// The entity's state as events carry it.
    fn state(&self, spec: &NsSpec, version: i64) -> Value {
        sorted(json!({
            "$id": self.full_id(spec),
            "$type": spec.type_name,
            "name": self.name,
            "createdAt": self.created_at,
            "version": version,
            "data": self.data,
        }))
    }
}

const FIRST_NAMES: [&str; 16] = [
    "Ada",
    "Alan",
    "Barbara",
    "Claude",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "Hedy",
    "Ivan",
    "John",
    "Katherine",
    "Linus",
    "Margaret",
    "Niklaus",
    "Radia",
];
const LAST_NAMES: [&str; 16] = [
    "Allen",
    "Backus",
    "Cerf",
    "Dijkstra",
    "Engelbart",
    "Floyd",
    "Hopper",
    "Kay",
    "Knuth",
    "Lamport",
    "Liskov",
    "McCarthy",
    "Perlman",
    "Ritchie",
    "Thompson",
    "Wirth",
];
const ADJECTIVES: [&str; 12] = [
    "Quiet",
    "Columnar",
    "Eventual",
    "Durable",
    "Sparse",
    "Atomic",
    "Lazy",
    "Immutable",
    "Sharded",
    "Streaming",
    "Ordered",
    "Idempotent",
];
const NOUNS: [&str; 12] = [
    "Parquet", "Manifest", "Segment", "Snapshot", "Index", "Bloom", "Replica", "Journal", "Lease",
    "Bucket", "Footer", "Schema",
];
const TAGS: [&str; 8] = [
    "sync", "storage", "events", "rust", "parquet", "backup", "s3", "design",
];
const PHRASES: [&str; 10] = [
    "Nice write-up",
    "This matches what we saw in production",
    "Could you share the benchmark",
    "I disagree with the second point",
    "Thanks, this fixed it for me",
    "What about deletions",
    "Works with R2 as well",
    "The footer is the key part",
    "Great explanation",
    "Does this survive a crash",
];

fn make_entity(spec: &NsSpec, i: usize, created_at: i64, rng: &mut Rng) -> Entity {
    let id = ulid(created_at, rng);
    let version = 1 + rng.below(5) as i64;
    let (name, data) = match spec.index {
        0 => {
            let first = rng.pick(&FIRST_NAMES);
            let last = rng.pick(&LAST_NAMES);
            let data = json!({
                "email": format!("{}.{}{i}@example.com", first.to_lowercase(), last.to_lowercase()),
                "age": 18 + rng.below(60),
                "active": !rng.chance(10),
            });
            (format!("{first} {last}"), data)
        }
        1 => {
            let title = format!("The {} {}", rng.pick(&ADJECTIVES), rng.pick(&NOUNS));
            let data = json!({
                "title": title,
                "tags": [rng.pick(&TAGS), rng.pick(&TAGS)],
                "views": rng.below(10_000),
                "published": rng.chance(80),
            });
            (title, data)
        }
        2 => {
            let body = format!("{} #{i}", rng.pick(&PHRASES));
            let data = json!({"body": body, "likes": rng.below(100)});
            (body.chars().take(24).collect(), data)
        }
        _ => {
            let label = format!("{} {}", rng.pick(&ADJECTIVES), rng.pick(&NOUNS));
            let data = json!({"value": rng.below(1_000_000), "label": label});
            (format!("{}-{i:05}", spec.name), data)
        }
    };
    Entity {
        id,
        name,
        created_at,
        version,
        data: sorted(data),
    }
}

fn entity_parquet(
    schema: &TypePtr,
    props: &WriterPropertiesPtr,
    spec: &NsSpec,
    rows: &[Entity],
) -> Result<Vec<u8>> {
    let ids: Vec<String> = rows.iter().map(|e| e.full_id(spec)).collect();
    write_parquet(
        schema,
        props,
        &[
            Column::Str(ids.iter().map(|s| s.as_str().into()).collect()),
            Column::Str(
                rows.iter()
                    .map(|_| spec.type_name.as_str().into())
                    .collect(),
            ),
            Column::Str(rows.iter().map(|e| e.name.as_str().into()).collect()),
            Column::I64(rows.iter().map(|e| e.created_at).collect()),
            Column::I64(rows.iter().map(|e| e.version).collect()),
            Column::Str(
                rows.iter()
                    .map(|e| e.data.to_string().into_bytes().into())
                    .collect(),
            ),
        ],
    )
}

// ---------------------------------------------------------------------------
// Relationships

/// One relationship. Ordered by the forward key.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rel {
    from_ns: String,
    from_id: String,
    predicate: &'static str,
    to_ns: String,
    to_id: String,
    created_at: i64,
}

impl Rel {
    fn reverse_key(&self) -> (&str, &str, &str, &str, &str) {
        (
            &self.to_ns,
            &self.to_id,
            self.predicate,
            &self.from_ns,
            &self.from_id,
        )
    }

    fn target(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}",
            self.from_ns, self.from_id, self.predicate, self.to_ns, self.to_id
        )
    }
}

/// All distinct relationships, sorted by (fromNs, fromId, predicate, toNs, toId).
fn make_relationships(specs: &[NsSpec], entities: &[Vec<Entity>], seed: u64) -> Vec<Rel> {
    let mut rels: BTreeMap<(String, String, &'static str, String, String), i64> = BTreeMap::new();
    for (spec, rows) in specs.iter().zip(entities) {
        let mut rng = Rng::stream(seed, &format!("rels/{}", spec.name));
        for (i, from) in rows.iter().enumerate() {
            for &(predicate, target, percent, max) in &spec.rels {
                let targets = &entities[target];
                if targets.is_empty() || !rng.chance(percent) {
                    continue;
                }
                for _ in 0..1 + rng.below(max) {
                    let j = rng.below(targets.len() as u64) as usize;
                    if target == spec.index && j == i {
                        continue; // no self-loops
                    }
                    let to = &targets[j];
                    let created_at =
                        from.created_at.max(to.created_at) + rng.below(3_600_000) as i64;
                    let key = (
                        spec.name.clone(),
                        from.id.clone(),
                        predicate,
                        specs[target].name.clone(),
                        to.id.clone(),
                    );
                    rels.entry(key).or_insert(created_at);
                }
            }
        }
    }
    rels.into_iter()
        .map(
            |((from_ns, from_id, predicate, to_ns, to_id), created_at)| Rel {
                from_ns,
                from_id,
                predicate,
                to_ns,
                to_id,
                created_at,
            },
        )
        .collect()
}

fn rel_parquet(schema: &TypePtr, props: &WriterPropertiesPtr, rels: &[&Rel]) -> Result<Vec<u8>> {
    write_parquet(
        schema,
        props,
        &[
            Column::Str(rels.iter().map(|r| r.from_ns.as_str().into()).collect()),
            Column::Str(rels.iter().map(|r| r.from_id.as_str().into()).collect()),
            Column::Str(rels.iter().map(|r| r.predicate.into()).collect()),
            Column::Str(rels.iter().map(|r| r.to_ns.as_str().into()).collect()),
            Column::Str(rels.iter().map(|r| r.to_id.as_str().into()).collect()),
            Column::I64(rels.iter().map(|r| r.created_at).collect()),
        ],
    )
}

// ---------------------------------------------------------------------------
// Events

struct Event {
    id: String,
    ts: i64,
    op: &'static str,
    target: String,
    before: Option<Value>,
    after: Option<Value>,
    actor: String,
    metadata: Option<Value>,
}

/// Produces a plausible, strictly time-ordered event stream over the entities
/// and relationships.
struct EventGen<'a> {
    rng: Rng,
    ts: i64,
    specs: &'a [NsSpec],
    /// Indexes of the namespaces that have entities.
    nonempty: Vec<usize>,
    entities: &'a [Vec<Entity>],
    rels: &'a [Rel],
}

impl EventGen<'_> {
    fn next_event(&mut self) -> Event {
        let rng = &mut self.rng;
        self.ts += 1 + rng.below(10_000) as i64;
        let ts = self.ts;
        let id = ulid(ts, rng);
        let roll = rng.below(100);
        let users = self.entities.first().filter(|u| !u.is_empty());
        let actor = match users {
            Some(users) if !rng.chance(20) => {
                users[rng.below(users.len() as u64) as usize].full_id(&self.specs[0])
            }
            _ => "system".to_string(),
        };
        let metadata = (!rng.chance(30)).then(|| {
            sorted(json!({
                "requestId": format!("req-{:08x}", rng.next_u64() as u32),
                "source": "pqsync-testdata",
            }))
        });
        let (op, target, before, after) = if roll >= 75 && !self.rels.is_empty() {
            let rel = rng.pick(self.rels);
            let state = json!({"predicate": rel.predicate, "createdAt": rel.created_at});
            if roll >= 95 {
                ("REL_DELETE", rel.target(), Some(sorted(state)), None)
            } else {
                ("REL_CREATE", rel.target(), None, Some(sorted(state)))
            }
        } else if self.nonempty.is_empty() {
            ("UPDATE", "system:config".to_string(), None, None)
        } else {
            let spec = &self.specs[*rng.pick(&self.nonempty)];
            let rows = &self.entities[spec.index];
            let e = &rows[rng.below(rows.len() as u64) as usize];
            let target = format!("{}:{}", spec.name, e.id);
            match roll {
                0..30 => ("CREATE", target, None, Some(e.state(spec, 1))),
                30..70 => (
                    "UPDATE",
                    target,
                    Some(e.state(spec, e.version)),
                    Some(e.state(spec, e.version + 1)),
                ),
                _ => ("DELETE", target, Some(e.state(spec, e.version)), None),
            }
        };
        Event {
            id,
            ts,
            op,
            target,
            before,
            after,
            actor,
            metadata,
        }
    }

    fn batch(&mut self, n: usize) -> Vec<Event> {
        (0..n).map(|_| self.next_event()).collect()
    }
}

fn event_parquet(
    schema: &TypePtr,
    props: &WriterPropertiesPtr,
    events: &[Event],
) -> Result<Vec<u8>> {
    let json_col = |f: fn(&Event) -> &Option<Value>| {
        Column::OptStr(
            events
                .iter()
                .map(|e| f(e).as_ref().map(|v| v.to_string().into_bytes().into()))
                .collect(),
        )
    };
    write_parquet(
        schema,
        props,
        &[
            Column::Str(events.iter().map(|e| e.id.as_str().into()).collect()),
            Column::I64(events.iter().map(|e| e.ts).collect()),
            Column::Str(events.iter().map(|e| e.op.into()).collect()),
            Column::Str(events.iter().map(|e| e.target.as_str().into()).collect()),
            json_col(|e| &e.before),
            json_col(|e| &e.after),
            Column::Str(events.iter().map(|e| e.actor.as_str().into()).collect()),
            json_col(|e| &e.metadata),
        ],
    )
}

/// Writes the segments, `events/current.parquet` and `events/_manifest.json`;
/// returns the number of events written.
fn write_events(
    out: &mut Out,
    schemas: &Schemas,
    props: &WriterPropertiesPtr,
    opts: &GenOptions,
    specs: &[NsSpec],
    entities: &[Vec<Entity>],
    rels: &[Rel],
) -> Result<usize> {
    let mut gen = EventGen {
        rng: Rng::stream(opts.seed, "events"),
        ts: EPOCH_MS + 7 * 86_400_000,
        specs,
        nonempty: (0..specs.len())
            .filter(|&k| !entities[k].is_empty())
            .collect(),
        entities,
        rels,
    };
    let mut segments = Vec::with_capacity(opts.segments);
    let mut updated_at = gen.ts;
    for seq in 1..=opts.segments {
        let events = gen.batch(opts.events_per_segment);
        let bytes = event_parquet(&schemas.event, props, &events)?;
        let path = format!("events/seg-{seq:04}.parquet");
        let size = out.put(&path, &bytes)?;
        let min_ts = events.first().map_or(gen.ts, |e| e.ts);
        let max_ts = events.last().map_or(gen.ts, |e| e.ts);
        // A segment is sealed a moment after its last event.
        let created_at = max_ts + 1_000;
        updated_at = created_at;
        segments.push(json!({
            "seq": seq,
            "path": path,
            "minTs": min_ts,
            "maxTs": max_ts,
            "count": events.len(),
            "sizeBytes": size,
            "createdAt": created_at,
        }));
    }
    let in_segments = opts.segments * opts.events_per_segment;
    // Start the active log after the last seal.
    gen.ts = gen.ts.max(updated_at);
    let current = gen.batch(opts.events_per_segment / 2);
    let bytes = event_parquet(&schemas.event, props, &current)?;
    out.put("events/current.parquet", &bytes)?;

    let manifest = json!({
        "version": 1,
        "dataset": "sample",
        "segments": segments,
        "nextSeq": opts.segments + 1,
        "totalEvents": in_segments,
        "updatedAt": updated_at,
    });
    out.put("events/_manifest.json", pretty_json(&manifest)?.as_bytes())?;
    Ok(in_segments + current.len())
}

/// One event of a log written with [`event_segment`], for tests that know
/// the state every entity should have at every time.
#[derive(Clone, Debug)]
pub struct LogEvent {
    /// The event id (a ULID, or anything that sorts by time).
    pub id: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
    /// `CREATE`, `UPDATE`, `DELETE`, `REL_CREATE` or `REL_DELETE`.
    pub op: String,
    /// `ns:id`, or `fromNs:fromId:pred:toNs:toId`.
    pub target: String,
    /// State before.
    pub before: Option<Value>,
    /// State after.
    pub after: Option<Value>,
    /// Who.
    pub actor: String,
}

/// An event segment holding `events`, as ParqueDB writes one (the
/// generator's event schema, with statistics), in row groups of
/// `rows_per_group` events.
///
/// # Errors
/// A Parquet writer error.
pub fn event_segment(events: &[LogEvent], rows_per_group: usize) -> Result<Vec<u8>> {
    let schemas = Schemas::new()?;
    let mut buf = Vec::new();
    let mut writer =
        SerializedFileWriter::new(&mut buf, schemas.event.clone(), small_file_props())?;
    for group in events.chunks(rows_per_group.max(1)) {
        let json_col = |f: fn(&LogEvent) -> &Option<Value>| {
            Column::OptStr(
                group
                    .iter()
                    .map(|e| f(e).as_ref().map(|v| v.to_string().into_bytes().into()))
                    .collect(),
            )
        };
        write_row_group(
            &mut writer,
            &[
                Column::Str(group.iter().map(|e| e.id.as_str().into()).collect()),
                Column::I64(group.iter().map(|e| e.ts).collect()),
                Column::Str(group.iter().map(|e| e.op.as_str().into()).collect()),
                Column::Str(group.iter().map(|e| e.target.as_str().into()).collect()),
                json_col(|e| &e.before),
                json_col(|e| &e.after),
                Column::Str(group.iter().map(|e| e.actor.as_str().into()).collect()),
                Column::OptStr(group.iter().map(|_| None).collect()),
            ],
        )?;
    }
    writer.close()?;
    Ok(buf)
}

/// A namespace data file (`data/{ns}/data.parquet`) holding `entities`,
/// each an object with `$id`, `$type`, `name`, `createdAt`, `version` and
/// `data` (stored as JSON text, as ParqueDB does).
///
/// # Errors
/// A Parquet writer error, or an entity missing a field.
pub fn entity_file(entities: &[Value]) -> Result<Vec<u8>> {
    let schemas = Schemas::new()?;
    let text = |k: &str| -> Result<Column> {
        entities
            .iter()
            .map(|e| {
                let v = e.get(k).context(format!("entity without {k}"))?;
                Ok(match v {
                    Value::String(s) => s.as_str().into(),
                    other => other.to_string().into_bytes().into(),
                })
            })
            .collect::<Result<Vec<ByteArray>>>()
            .map(Column::Str)
    };
    let int = |k: &str| -> Result<Column> {
        entities
            .iter()
            .map(|e| {
                e.get(k)
                    .and_then(Value::as_i64)
                    .context(format!("entity without {k}"))
            })
            .collect::<Result<Vec<i64>>>()
            .map(Column::I64)
    };
    write_parquet(
        &schemas.entity,
        &small_file_props(),
        &[
            text("$id")?,
            text("$type")?,
            text("name")?,
            int("createdAt")?,
            int("version")?,
            text("data")?,
        ],
    )
}

// ---------------------------------------------------------------------------
// Big file

/// Streams `big_file_mib` MiB of pseudo-random (incompressible) payload into
/// `snapshots/big/data.parquet`, one 8 MiB row group at a time.
fn write_big_file(out: &mut Out, schema: &TypePtr, opts: &GenOptions) -> Result<()> {
    let rel = "snapshots/big/data.parquet";
    let path = out.prepare(rel)?;
    let file = fs::File::create(&path).with_context(|| format!("create {}", path.display()))?;
    let props = Arc::new(
        WriterProperties::builder()
            .set_created_by(GENERATOR_MARKER.to_string())
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .build(),
    );
    let ctx = || format!("write {}", path.display());
    let mut writer =
        SerializedFileWriter::new(BufWriter::new(file), schema.clone(), props).with_context(ctx)?;
    let mut rng = Rng::stream(opts.seed, "big");
    let total = opts.big_file_mib * 1024 * 1024;
    let mut written = 0u64;
    let mut seq = 0i64;
    while written < total {
        let mut seqs = Vec::with_capacity(BIG_VALUES_PER_ROW_GROUP);
        let mut values = Vec::with_capacity(BIG_VALUES_PER_ROW_GROUP);
        while written < total && values.len() < BIG_VALUES_PER_ROW_GROUP {
            let len = (total - written).min(BIG_VALUE_BYTES as u64) as usize;
            let mut buf = vec![0u8; len];
            rng.fill(&mut buf);
            values.push(ByteArray::from(buf));
            seqs.push(seq);
            seq += 1;
            written += len as u64;
        }
        write_row_group(&mut writer, &[Column::I64(seqs), Column::Str(values)])
            .with_context(ctx)?;
    }
    let buf = writer.into_inner().with_context(ctx)?;
    let mut file = buf
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(ctx)?;
    file.flush().with_context(ctx)?;
    let size = file.metadata().with_context(ctx)?.len();
    out.record(size);
    Ok(())
}

// ---------------------------------------------------------------------------
// Schema

fn schema_json(specs: &[NsSpec], rels: &[Rel], opts: &GenOptions) -> Value {
    let mut namespaces = serde_json::Map::new();
    for spec in specs {
        let mut relationships = serde_json::Map::new();
        for &(predicate, target, _, max) in &spec.rels {
            let many = if max > 1 { "[]" } else { "" };
            relationships.insert(
                predicate.to_string(),
                json!(format!("-> {}{many}", specs[target].name)),
            );
        }
        let outgoing = rels.iter().filter(|r| r.from_ns == spec.name).count();
        let incoming = rels.iter().filter(|r| r.to_ns == spec.name).count();
        namespaces.insert(
            spec.name.clone(),
            json!({
                "$type": spec.type_name,
                "path": format!("data/{}/data.parquet", spec.name),
                "entityCount": opts.rows_per_namespace,
                "fields": {
                    "$id": "string!",
                    "$type": "string!",
                    "name": "string!",
                    "createdAt": "int64!",
                    "version": "int64!",
                    "data": "json!",
                },
                "dataFields": spec.data_fields(),
                "relationships": relationships,
                "relationshipCounts": {"forward": outgoing, "reverse": incoming},
                "indexes": {
                    "bloom": format!("indexes/bloom/{}.bloom", spec.name),
                    "name": format!("indexes/secondary/{}.name.idx.parquet", spec.name),
                },
            }),
        );
    }
    sorted(json!({
        "version": 1,
        "generatedBy": GENERATOR_MARKER,
        "seed": opts.seed,
        "namespaces": namespaces,
    }))
}

// ---------------------------------------------------------------------------
// Bloom filters

fn bloom_positions(key: &str, k: u8, m: u64) -> impl Iterator<Item = u64> {
    let h1 = fnv1a64(key.as_bytes());
    let h2 = mix64(h1) | 1;
    (0..u64::from(k)).map(move |i| h1.wrapping_add(i.wrapping_mul(h2)) % m)
}

fn bloom_filter(keys: &[String]) -> Vec<u8> {
    let m = (keys.len() as u64 * BLOOM_BITS_PER_KEY).div_ceil(64).max(1) * 64;
    let mut out = Vec::with_capacity(BLOOM_HEADER + (m / 8) as usize);
    out.extend_from_slice(b"PQBF");
    out.push(1);
    out.push(BLOOM_HASHES);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&m.to_le_bytes());
    out.extend_from_slice(&(keys.len() as u64).to_le_bytes());
    out.resize(BLOOM_HEADER + (m / 8) as usize, 0);
    let bits = &mut out[BLOOM_HEADER..];
    for key in keys {
        for b in bloom_positions(key, BLOOM_HASHES, m) {
            bits[(b / 8) as usize] |= 1 << (b % 8);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Parquet and JSON helpers

struct Schemas {
    entity: TypePtr,
    rel: TypePtr,
    event: TypePtr,
    index: TypePtr,
    blob: TypePtr,
}

impl Schemas {
    fn new() -> Result<Self> {
        let parse = |s: &str| -> Result<TypePtr> { Ok(Arc::new(parse_message_type(s)?)) };
        Ok(Self {
            entity: parse(
                "message entity {
                    required binary $id (UTF8);
                    required binary $type (UTF8);
                    required binary name (UTF8);
                    required int64 createdAt;
                    required int64 version;
                    required binary data (UTF8);
                }",
            )?,
            rel: parse(
                "message relationship {
                    required binary fromNs (UTF8);
                    required binary fromId (UTF8);
                    required binary predicate (UTF8);
                    required binary toNs (UTF8);
                    required binary toId (UTF8);
                    required int64 createdAt;
                }",
            )?,
            event: parse(
                "message event {
                    required binary id (UTF8);
                    required int64 ts;
                    required binary op (UTF8);
                    required binary target (UTF8);
                    optional binary before (UTF8);
                    optional binary after (UTF8);
                    required binary actor (UTF8);
                    optional binary metadata (UTF8);
                }",
            )?,
            index: parse(
                "message name_index {
                    required binary key (UTF8);
                    required binary id (UTF8);
                }",
            )?,
            blob: parse(
                "message blob {
                    required int64 seq;
                    required binary payload;
                }",
            )?,
        })
    }
}

/// Properties of every file but the big one: uncompressed, and a fixed
/// `created_by` so that upgrading the `parquet` crate changes no bytes by
/// itself.
fn small_file_props() -> WriterPropertiesPtr {
    Arc::new(
        WriterProperties::builder()
            .set_created_by(GENERATOR_MARKER.to_string())
            .set_compression(Compression::UNCOMPRESSED)
            .build(),
    )
}

/// Properties of the extra files: like [`small_file_props`] but without
/// dictionaries, statistics or page indexes, which only cost time and bytes
/// for a handful of rows.
fn tiny_file_props() -> WriterPropertiesPtr {
    Arc::new(
        WriterProperties::builder()
            .set_created_by(GENERATOR_MARKER.to_string())
            .set_compression(Compression::UNCOMPRESSED)
            .set_dictionary_enabled(false)
            .set_statistics_enabled(EnabledStatistics::None)
            .set_offset_index_disabled(true)
            .build(),
    )
}

/// One column's values, in schema order.
enum Column {
    Str(Vec<ByteArray>),
    OptStr(Vec<Option<ByteArray>>),
    I64(Vec<i64>),
}

impl Column {
    fn len(&self) -> usize {
        match self {
            Column::Str(v) => v.len(),
            Column::OptStr(v) => v.len(),
            Column::I64(v) => v.len(),
        }
    }
}

/// Encodes `columns` as a Parquet file with one row group (none if empty).
fn write_parquet(
    schema: &TypePtr,
    props: &WriterPropertiesPtr,
    columns: &[Column],
) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut buf, schema.clone(), props.clone())?;
    if columns.first().is_some_and(|c| c.len() > 0) {
        write_row_group(&mut writer, columns)?;
    }
    writer.close()?;
    Ok(buf)
}

fn write_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    columns: &[Column],
) -> Result<()> {
    let rows = columns.first().map_or(0, Column::len);
    ensure!(
        columns.iter().all(|c| c.len() == rows),
        "columns of unequal length"
    );
    let mut rg = writer.next_row_group()?;
    for column in columns {
        let mut cw = rg
            .next_column()?
            .context("more columns than the schema has")?;
        match column {
            Column::Str(values) => {
                cw.typed::<ByteArrayType>()
                    .write_batch(values, None, None)?;
            }
            Column::OptStr(values) => {
                let defs: Vec<i16> = values.iter().map(|v| i16::from(v.is_some())).collect();
                let present: Vec<ByteArray> = values.iter().flatten().cloned().collect();
                cw.typed::<ByteArrayType>()
                    .write_batch(&present, Some(&defs), None)?;
            }
            Column::I64(values) => {
                cw.typed::<Int64Type>().write_batch(values, None, None)?;
            }
        }
        cw.close()?;
    }
    ensure!(
        rg.next_column()?.is_none(),
        "fewer columns than the schema has"
    );
    rg.close()?;
    Ok(())
}

/// Rebuilds `v` with every object's keys in sorted order, whatever
/// `serde_json` features other crates enable.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(map) => {
            let entries: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// 2-space indented JSON with sorted keys and a trailing newline.
fn pretty_json(v: &Value) -> Result<String> {
    let mut s = serde_json::to_string_pretty(&sorted(v.clone()))?;
    s.push('\n');
    Ok(s)
}

// ---------------------------------------------------------------------------
// ParqueDB manifest helpers

/// Collects the `/`-separated relative paths of all files under `dir`, sorted.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("read {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let ty = entry
            .file_type()
            .with_context(|| format!("stat {}", path.display()))?;
        if ty.is_dir() {
            walk(root, &path, out)?;
        } else if ty.is_file() {
            let rel = path.strip_prefix(root)?;
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
    }
    Ok(())
}

/// Whether ParqueDB's engine tracks `rel`: it skips a path whose whole
/// relative path starts with one of its ignore strings.
fn parquedb_syncs(rel: &str) -> bool {
    ![
        "_meta/manifest.json",
        "_meta/locks",
        ".git",
        ".DS_Store",
        "node_modules",
    ]
    .iter()
    .any(|p| rel.starts_with(p))
}

/// ParqueDB's content type for a path.
fn content_type(rel: &str) -> &'static str {
    match rel
        .rsplit('.')
        .next()
        .unwrap_or(rel)
        .to_ascii_lowercase()
        .as_str()
    {
        "parquet" => "application/vnd.apache.parquet",
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        "csv" => "text/csv",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::reader::{FileReader, SerializedFileReader};
    use parquet::record::RowAccessor;

    fn small() -> GenOptions {
        GenOptions {
            namespaces: 4,
            rows_per_namespace: 25,
            segments: 2,
            events_per_segment: 10,
            extra_files: 5,
            big_file_mib: 1,
            seed: 7,
        }
    }

    fn files(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        walk(dir, dir, &mut out).unwrap();
        out
    }

    fn reader(path: &Path) -> SerializedFileReader<fs::File> {
        SerializedFileReader::new(fs::File::open(path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn rows(path: &Path) -> i64 {
        reader(path).metadata().file_metadata().num_rows()
    }

    fn assert_same_trees(a: &Path, b: &Path) {
        let names = files(a);
        assert_eq!(names, files(b), "file lists differ");
        for name in names {
            let (x, y) = (
                fs::read(a.join(&name)).unwrap(),
                fs::read(b.join(&name)).unwrap(),
            );
            assert!(x == y, "{name} differs");
        }
    }

    #[test]
    fn generation_is_deterministic() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let sa = generate(a.path(), &small()).unwrap();
        let sb = generate(b.path(), &small()).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(sa.files, files(a.path()).len());
        assert_same_trees(a.path(), b.path());
        let ma = parquedb_manifest(a.path(), &small()).unwrap();
        assert_eq!(ma, parquedb_manifest(b.path(), &small()).unwrap());

        // Regenerating over an earlier output (with other options) replaces it.
        let other = GenOptions {
            extra_files: 40,
            ..small()
        };
        generate(b.path(), &other).unwrap();
        generate(b.path(), &small()).unwrap();
        assert_same_trees(a.path(), b.path());

        // A different seed gives different data.
        let c = tempfile::tempdir().unwrap();
        generate(c.path(), &GenOptions { seed: 8, ..small() }).unwrap();
        let p = "data/users/data.parquet";
        assert_ne!(
            fs::read(a.path().join(p)).unwrap(),
            fs::read(c.path().join(p)).unwrap()
        );
    }

    #[test]
    fn parquet_files_are_valid_with_expected_row_counts() {
        let dir = tempfile::tempdir().unwrap();
        let opts = small();
        let summary = generate(dir.path(), &opts).unwrap();
        let mut parquet_files = 0;
        let mut total = 0;
        for name in files(dir.path()) {
            let path = dir.path().join(&name);
            total += fs::metadata(&path).unwrap().len();
            if !name.ends_with(".parquet") {
                continue;
            }
            parquet_files += 1;
            let bytes = fs::read(&path).unwrap();
            assert!(
                bytes.starts_with(b"PAR1") && bytes.ends_with(b"PAR1"),
                "{name}"
            );
            let n = rows(&path);
            let expected = if name.starts_with("data/") || name.starts_with("indexes/") {
                Some(opts.rows_per_namespace)
            } else if name.starts_with("events/seg-") {
                Some(opts.events_per_segment)
            } else if name == "events/current.parquet" {
                Some(opts.events_per_segment / 2)
            } else if name.starts_with("snapshots/extra/") {
                Some(EXTRA_ROWS)
            } else if name == "snapshots/big/data.parquet" {
                Some(16) // 1 MiB in 64 KiB values
            } else {
                None
            };
            if let Some(expected) = expected {
                assert_eq!(n, expected as i64, "{name}");
            }
        }
        // data + 2 rels + index per namespace, segments, current, extra, big
        assert_eq!(parquet_files, 4 * 4 + 2 + 1 + 5 + 1);
        assert_eq!(summary.bytes, total);
        let big = fs::metadata(dir.path().join("snapshots/big/data.parquet")).unwrap();
        assert!(big.len() >= 1 << 20 && big.len() < (1 << 20) + 4096);

        // The event segment manifest agrees with the files.
        let manifest: Value =
            serde_json::from_slice(&fs::read(dir.path().join("events/_manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["version"], 1);
        assert_eq!(manifest["nextSeq"], 3);
        assert_eq!(manifest["totalEvents"], 20);
        let mut last_ts = i64::MIN;
        for (i, seg) in manifest["segments"].as_array().unwrap().iter().enumerate() {
            assert_eq!(seg["seq"], i + 1);
            let path = dir.path().join(seg["path"].as_str().unwrap());
            assert_eq!(seg["sizeBytes"], fs::metadata(&path).unwrap().len());
            for row in reader(&path).into_iter() {
                let ts = row.unwrap().get_long(1).unwrap();
                assert!(ts > last_ts, "event timestamps must increase");
                last_ts = ts;
            }
            assert_eq!(seg["maxTs"], last_ts);
        }
    }

    #[test]
    fn forward_and_reverse_relationships_agree() {
        let dir = tempfile::tempdir().unwrap();
        let summary = generate(dir.path(), &small()).unwrap();
        let read = |kind: &str, ns: &str| -> BTreeMap<Vec<String>, i64> {
            let path = dir.path().join(format!("rels/{kind}/{ns}.parquet"));
            reader(&path)
                .into_iter()
                .map(|row| {
                    let row = row.unwrap();
                    let key = (0..5).map(|i| row.get_string(i).unwrap().clone()).collect();
                    (key, row.get_long(5).unwrap())
                })
                .collect()
        };
        let names = ["users", "posts", "comments", "ns4"];
        let (mut forward, mut reverse) = (BTreeMap::new(), BTreeMap::new());
        for ns in names {
            let f = read("forward", ns);
            assert!(f.keys().all(|k| k[0] == ns));
            let r = read("reverse", ns);
            assert!(r.keys().all(|k| k[3] == ns));
            assert!(!r.is_empty(), "reverse {ns} is empty");
            forward.extend(f);
            reverse.extend(r);
        }
        assert_eq!(forward.len(), summary.relationships);
        assert_eq!(forward, reverse);
    }

    #[test]
    fn bloom_filters_contain_every_id() {
        let dir = tempfile::tempdir().unwrap();
        generate(dir.path(), &small()).unwrap();
        let filter = fs::read(dir.path().join("indexes/bloom/posts.bloom")).unwrap();
        let mut ids = 0;
        for row in reader(&dir.path().join("data/posts/data.parquet")).into_iter() {
            let id = row.unwrap().get_string(0).unwrap().clone();
            assert!(id.starts_with("posts/") && id.len() == "posts/".len() + 26);
            assert!(bloom_may_contain(&filter, &id).unwrap());
            ids += 1;
        }
        assert_eq!(ids, 25);
        let false_hits = (0..1000)
            .filter(|i| bloom_may_contain(&filter, &format!("posts/absent-{i}")).unwrap())
            .count();
        assert!(false_hits < 100, "{false_hits} false positives");
        assert!(bloom_may_contain(b"nonsense", "x").is_err());
    }

    #[test]
    fn refuses_to_overwrite_foreign_directories() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious.txt"), "keep me").unwrap();
        assert!(generate(dir.path(), &small()).is_err());
        assert_eq!(
            fs::read_to_string(dir.path().join("precious.txt")).unwrap(),
            "keep me"
        );
    }

    #[test]
    fn ids_are_ulids() {
        let mut rng = Rng::stream(1, "t");
        let a = ulid(EPOCH_MS, &mut rng);
        let b = ulid(EPOCH_MS + 1, &mut rng);
        assert_eq!(a.len(), 26);
        assert!(a < b, "ULIDs sort by time");
        assert!(a.starts_with("01KDVDNA00"), "{a}"); // 2026-01-01T00:00:00Z
    }

    /// `testdata/sample-db` and `testdata/fixtures/parquedb-manifest.json`
    /// are what the generator writes with default options.
    #[test]
    fn committed_sample_is_up_to_date() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let committed = root.join("sample-db");
        let fresh = tempfile::tempdir().unwrap();
        generate(fresh.path(), &GenOptions::default()).unwrap();
        assert_same_trees(fresh.path(), &committed);
        let manifest = tempfile::NamedTempFile::new().unwrap();
        write_parquedb_manifest(fresh.path(), &GenOptions::default(), manifest.path()).unwrap();
        assert!(
            fs::read(manifest.path()).unwrap()
                == fs::read(root.join("fixtures/parquedb-manifest.json")).unwrap(),
            "fixtures/parquedb-manifest.json is stale; regenerate it (see testdata/README.md)"
        );
    }
}
