//! Reading what a ParqueDB database holds, without moving it: the tree's
//! files, Parquet footers, relationship id columns, bloom filter headers and
//! the event segment manifest. `verify`, `stats` and the manifest rebuild
//! are built on these.
//!
//! Everything reads metadata where metadata suffices. A Parquet footer costs
//! a read of the file's last 64 KiB (one ranged GET on a remote, plus one
//! more for the leading magic when the file is larger than that); only the
//! relationship files are read whole, because their id columns are the
//! data being checked.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;

use bytes::Bytes;
use futures::TryStreamExt;
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::file::statistics::Statistics;
use serde::{Deserialize, Serialize};

use crate::engine::Tree;
use crate::error::{Error, Result};
use crate::hash::{hash_file, ContentHasher};
use crate::manifest::{HashAlgorithm, Manifest};
use crate::store::StoreTree;

/// How much of a Parquet file's end is read to find its footer; a footer
/// larger than this costs one more read.
pub const FOOTER_PROBE: u64 = 64 * 1024;

const MAGIC: &[u8; 4] = b"PAR1";
const ENCRYPTED_MAGIC: &[u8; 4] = b"PARE";

impl Tree {
    /// How the tree is named in messages: the directory or the URL.
    pub fn url(&self) -> String {
        match self {
            Tree::Local(t) => t.root().display().to_string(),
            Tree::Store(t) => t.url().to_string(),
        }
    }

    /// Requests made to the remote so far (0 for a directory).
    pub fn requests(&self) -> u64 {
        match self {
            Tree::Local(_) => 0,
            Tree::Store(t) => t.requests(),
        }
    }

    /// The tree's manifest, if it has one.
    ///
    /// # Errors
    /// [`Error::ManifestCorrupt`] if it does not parse; I/O and store errors.
    pub async fn manifest(&self) -> Result<Option<Manifest>> {
        match self {
            Tree::Local(t) => t.read_manifest(),
            Tree::Store(t) => Ok(t.read_manifest().await?.map(|r| r.manifest)),
        }
    }

    /// The files actually present, with their sizes (a walk of the
    /// directory, or a LIST of the prefix), and warnings about files left
    /// out.
    ///
    /// # Errors
    /// I/O and store errors.
    pub async fn list(&self) -> Result<(BTreeMap<String, u64>, Vec<String>)> {
        match self {
            Tree::Local(t) => {
                let t = t.clone();
                blocking(move || t.list()).await
            }
            Tree::Store(t) => Ok((t.list_files().await?, Vec::new())),
        }
    }

    /// Reads `range` of a file.
    ///
    /// # Errors
    /// I/O and store errors.
    pub async fn read_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes> {
        match self {
            Tree::Local(t) => {
                let path = t.abs(rel);
                blocking(move || {
                    let io = |e| Error::io(&path, e);
                    let mut f = std::fs::File::open(&path).map_err(io)?;
                    f.seek(SeekFrom::Start(range.start)).map_err(io)?;
                    let mut buf = Vec::with_capacity((range.end - range.start) as usize);
                    f.take(range.end - range.start)
                        .read_to_end(&mut buf)
                        .map_err(io)?;
                    Ok(Bytes::from(buf))
                })
                .await
            }
            Tree::Store(t) => t.read_range(rel, range).await,
        }
    }

    /// Reads a whole file into memory; for small files.
    ///
    /// # Errors
    /// I/O and store errors.
    pub async fn read_all(&self, rel: &str) -> Result<Bytes> {
        match self {
            Tree::Local(t) => {
                let path = t.abs(rel);
                blocking(move || {
                    std::fs::read(&path)
                        .map(Bytes::from)
                        .map_err(|e| Error::io(&path, e))
                })
                .await
            }
            Tree::Store(t) => t.read_all(rel).await,
        }
    }

    /// A file as a local, seekable [`std::fs::File`]: the file itself for a
    /// directory; for a remote, the object streamed into an anonymous
    /// temporary file (gone when dropped), so memory stays bounded.
    ///
    /// # Errors
    /// I/O and store errors.
    pub async fn open_file(&self, rel: &str) -> Result<std::fs::File> {
        match self {
            Tree::Local(t) => {
                let path = t.abs(rel);
                std::fs::File::open(&path).map_err(|e| Error::io(&path, e))
            }
            Tree::Store(t) => spool(t, rel, |_| {}).await,
        }
    }

    /// Inspects one file of `size` bytes (as listed): hashes it with `alg`
    /// if given, and parses its Parquet footer if `footer` is set. On a
    /// remote, hashing streams the object once and the footer comes from
    /// the same bytes; without hashing, the footer costs one or two ranged
    /// GETs. With `keep`, a remote object that is hashed is also kept in an
    /// anonymous temporary file ([`Inspection::spool`]) for a caller that
    /// reads it again, so it is fetched only once.
    ///
    /// # Errors
    /// I/O and store errors. A file that is not valid Parquet is not an
    /// error: it is reported in [`Inspection::parquet`].
    pub async fn inspect(
        &self,
        rel: &str,
        size: u64,
        alg: Option<HashAlgorithm>,
        footer: bool,
        keep: bool,
    ) -> Result<Inspection> {
        let mut out = Inspection {
            size,
            hash: None,
            parquet: None,
            spool: None,
        };
        let mut ends = None;
        if let Some(alg) = alg {
            let (hash, read, head, tail) = match self {
                Tree::Local(t) => {
                    let path = t.abs(rel);
                    let (hash, n) = blocking(move || hash_file(&path, alg, size)).await?;
                    (hash, n, None, None)
                }
                Tree::Store(t) => {
                    let mut hasher = ContentHasher::new(alg);
                    let mut ends = Ends::default();
                    let mut seen = |chunk: &[u8]| {
                        hasher.update(chunk);
                        ends.push(chunk);
                    };
                    if keep {
                        out.spool = Some(spool(t, rel, seen).await?);
                    } else {
                        let mut stream = t.open(rel).await?;
                        while let Some(chunk) = stream.try_next().await? {
                            seen(&chunk);
                        }
                    }
                    let (n, head, tail) = ends.finish();
                    (hasher.finalize_hex(), n, Some(head), Some(tail))
                }
            };
            out.size = read;
            out.hash = Some(hash);
            if let (Some(h), Some(t)) = (head, tail) {
                ends = Some((h, t));
            }
        }
        if footer {
            let size = out.size;
            let (head, tail) = match ends {
                Some(e) => e,
                None if size <= FOOTER_PROBE => {
                    let all = self.read_range(rel, 0..size).await?;
                    (all.slice(..all.len().min(4)), all)
                }
                None => {
                    let head = self.read_range(rel, 0..4).await?;
                    let tail = self.read_range(rel, size - FOOTER_PROBE..size).await?;
                    (head, tail)
                }
            };
            let parsed = match parse_footer(size, &head, &tail) {
                Err(FooterError::NeedTail(n)) if n <= size => {
                    let tail = self.read_range(rel, size - n..size).await?;
                    parse_footer(size, &head, &tail).map_err(|e| e.to_string())
                }
                other => other.map_err(|e| e.to_string()),
            };
            out.parquet = Some(parsed);
        }
        Ok(out)
    }
}

/// Streams an object into an anonymous temporary file (gone when dropped),
/// showing every chunk to `seen` on the way.
async fn spool(t: &StoreTree, rel: &str, mut seen: impl FnMut(&[u8])) -> Result<std::fs::File> {
    let tmp_dir = std::env::temp_dir();
    let io = |e| Error::io(&tmp_dir, e);
    let file = tempfile::tempfile().map_err(io)?;
    let mut out = tokio::fs::File::from_std(file.try_clone().map_err(io)?);
    let mut stream = t.open(rel).await?;
    while let Some(chunk) = stream.try_next().await? {
        seen(&chunk);
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
            .await
            .map_err(io)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(io)?;
    Ok(file)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Invalid(format!("a worker thread failed: {e}")))?
}

/// The first four and last [`FOOTER_PROBE`] bytes of a stream.
#[derive(Default)]
struct Ends {
    n: u64,
    head: Vec<u8>,
    tail: Vec<u8>,
}

impl Ends {
    fn push(&mut self, chunk: &[u8]) {
        self.n += chunk.len() as u64;
        if self.head.len() < 4 {
            let take = (4 - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        self.tail.extend_from_slice(chunk);
        let keep = FOOTER_PROBE as usize;
        if self.tail.len() > 2 * keep {
            self.tail.drain(..self.tail.len() - keep);
        }
    }

    fn finish(self) -> (u64, Bytes, Bytes) {
        (self.n, Bytes::from(self.head), Bytes::from(self.tail))
    }
}

/// What inspecting one file found.
#[derive(Debug)]
pub struct Inspection {
    /// Bytes read (when hashed) or listed.
    pub size: u64,
    /// Hex digest, when asked for.
    pub hash: Option<String>,
    /// The footer's facts, or why the file is not valid Parquet; `None`
    /// when not asked for.
    pub parquet: Option<std::result::Result<ParquetInfo, String>>,
    /// The remote object's bytes in a temporary file, when kept.
    pub spool: Option<std::fs::File>,
}

/// What a Parquet footer says about its file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParquetInfo {
    /// Rows in the file (ParqueDB's entity or event count).
    pub rows: u64,
    /// Row groups.
    pub row_groups: usize,
    /// Minimum and maximum of an INT64 `ts` column, from its statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_range: Option<(i64, i64)>,
}

/// Why a footer could not be read from the bytes at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FooterError {
    /// The file is not valid Parquet.
    Invalid(String),
    /// The footer is longer than the tail given: read this many bytes from
    /// the end and try again.
    NeedTail(u64),
}

impl std::fmt::Display for FooterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FooterError::Invalid(m) => f.write_str(m),
            FooterError::NeedTail(n) => write!(f, "the footer needs the last {n} bytes"),
        }
    }
}

/// Checks a Parquet file of `size` bytes from its first bytes (`head`, at
/// least 4) and its last bytes (`tail`): both magics, a footer that parses,
/// row groups that add up and column chunks that lie inside the file.
///
/// # Errors
/// [`FooterError::Invalid`] with a one-line reason, or
/// [`FooterError::NeedTail`] when `tail` is too short for the footer.
pub fn parse_footer(
    size: u64,
    head: &[u8],
    tail: &[u8],
) -> std::result::Result<ParquetInfo, FooterError> {
    let bad = |m: String| Err(FooterError::Invalid(m));
    if size < 12 {
        return bad(format!("{size} bytes is too small for a Parquet file"));
    }
    if head.len() < 4 || &head[..4] != MAGIC {
        return bad("does not start with the Parquet magic PAR1".into());
    }
    if (tail.len() as u64) < 8 || tail.len() as u64 > size {
        return Err(FooterError::NeedTail(FOOTER_PROBE.min(size)));
    }
    let last: &[u8; 8] = tail[tail.len() - 8..].try_into().expect("8 bytes");
    if &last[4..] == ENCRYPTED_MAGIC {
        return bad("has an encrypted footer, which pqsync cannot read".into());
    }
    if &last[4..] != MAGIC {
        return bad("does not end with the Parquet magic PAR1 (truncated?)".into());
    }
    let footer = ParquetMetaDataReader::decode_footer_tail(last)
        .map_err(|e| FooterError::Invalid(format!("unreadable footer: {e}")))?;
    let len = footer.metadata_length() as u64;
    if len + 12 > size {
        return bad(format!(
            "footer length {len} does not fit in the file's {size} bytes (truncated?)"
        ));
    }
    if len + 8 > tail.len() as u64 {
        return Err(FooterError::NeedTail(len + 8));
    }
    let meta_bytes = &tail[tail.len() - 8 - len as usize..tail.len() - 8];
    let meta = ParquetMetaDataReader::decode_metadata(meta_bytes)
        .map_err(|e| FooterError::Invalid(format!("footer does not parse: {e}")))?;
    check_layout(&meta, size - 8 - len).map_err(FooterError::Invalid)
}

fn check_layout(meta: &ParquetMetaData, data_end: u64) -> std::result::Result<ParquetInfo, String> {
    let declared = meta.file_metadata().num_rows();
    let mut rows: i64 = 0;
    let mut ts: Option<(i64, i64)> = None;
    let ts_col = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == "ts");
    for (g, rg) in meta.row_groups().iter().enumerate() {
        rows += rg.num_rows();
        for col in rg.columns() {
            let (start, len) = col.byte_range();
            if start.checked_add(len).is_none_or(|end| end > data_end) {
                return Err(format!(
                    "column {} of row group {g} lies outside the file (bytes {start}+{len}, data ends at {data_end})",
                    col.column_path().string()
                ));
            }
        }
        if let Some(Statistics::Int64(s)) = ts_col.and_then(|i| rg.column(i).statistics()) {
            if let (Some(&lo), Some(&hi)) = (s.min_opt(), s.max_opt()) {
                ts = Some(ts.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }
    }
    if rows != declared || declared < 0 {
        return Err(format!(
            "footer declares {declared} rows but its row groups hold {rows}"
        ));
    }
    Ok(ParquetInfo {
        rows: declared as u64,
        row_groups: meta.num_row_groups(),
        ts_range: ts,
    })
}

// ---------------------------------------------------------------------------
// Layout

/// What a path is in the ParqueDB layout, for the namespace it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `data/{ns}/...`: entities.
    Data,
    /// `rels/forward/{ns}.parquet`.
    Forward,
    /// `rels/reverse/{ns}.parquet`.
    Reverse,
    /// `indexes/{kind}/{ns}.*`.
    Index,
}

/// The namespace a path belongs to and its role there, if any.
pub fn namespace_of(path: &str) -> Option<(&str, Role)> {
    let mut parts = path.split('/');
    match (parts.next()?, parts.next()?, parts.next()) {
        ("data", ns, Some(_)) => Some((ns, Role::Data)),
        ("rels", "forward", Some(f)) if parts.next().is_none() => {
            Some((f.strip_suffix(".parquet")?, Role::Forward))
        }
        ("rels", "reverse", Some(f)) if parts.next().is_none() => {
            Some((f.strip_suffix(".parquet")?, Role::Reverse))
        }
        ("indexes", _, Some(f)) if parts.next().is_none() => {
            let ns = f.split('.').next().filter(|n| !n.is_empty() && *n != f)?;
            Some((ns, Role::Index))
        }
        _ => None,
    }
}

/// Whether a path is a Parquet file.
pub fn is_parquet(path: &str) -> bool {
    path.ends_with(".parquet")
}

// ---------------------------------------------------------------------------
// Relationships

/// An order-independent digest of a multiset of relationships between two
/// namespaces: equal multisets give equal digests; a missing, extra or
/// altered row changes it (up to a 2^-128 chance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelDigest {
    /// Number of rows.
    pub count: u64,
    sum: u64,
    xor: u64,
}

impl RelDigest {
    fn add(&mut self, key: &[&[u8]]) {
        let mut h = blake3::Hasher::new();
        for part in key {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let d = h.finalize();
        let b = d.as_bytes();
        self.count += 1;
        self.sum = self
            .sum
            .wrapping_add(u64::from_le_bytes(b[..8].try_into().expect("8")));
        self.xor ^= u64::from_le_bytes(b[8..16].try_into().expect("8"));
    }
}

/// A relationship file read through its id columns: a digest per
/// `(fromNs, toNs)` pair, and how many rows belong to another file.
#[derive(Debug, Clone, Default)]
pub struct RelFile {
    /// Digests keyed by `(fromNs, toNs)`.
    pub pairs: BTreeMap<(String, String), RelDigest>,
    /// Rows whose own namespace (`fromNs` for forward files, `toNs` for
    /// reverse ones) is not the file's.
    pub misplaced: u64,
}

/// Rows decoded at a time from each id column, so memory stays bounded
/// whatever the size of a row group.
const REL_BATCH: usize = 8192;

/// Reads a relationship file's `fromNs`, `fromId`, `predicate`, `toNs` and
/// `toId` columns (`predicate` may be absent) in batches and digests its
/// rows. `own_ns` is the file's namespace and `forward` its direction.
///
/// # Errors
/// A one-line reason when the file lacks the columns or does not decode.
pub fn read_relationships<R: ChunkReader + 'static>(
    file: R,
    own_ns: &str,
    forward: bool,
) -> std::result::Result<RelFile, String> {
    let reader = SerializedFileReader::new(file).map_err(|e| e.to_string())?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let find = |name: &str| {
        schema
            .columns()
            .iter()
            .position(|c| c.path().string() == name)
    };
    let need = |name: &str| find(name).ok_or_else(|| format!("has no {name} column"));
    let cols = [
        Some(need("fromNs")?),
        Some(need("fromId")?),
        find("predicate"),
        Some(need("toNs")?),
        Some(need("toId")?),
    ];
    let mut out = RelFile::default();
    let mut pairs: Vec<(Vec<u8>, Vec<u8>, RelDigest)> = Vec::new();
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g).map_err(|e| e.to_string())?;
        let n = usize::try_from(rg.metadata().num_rows()).map_err(|e| e.to_string())?;
        let mut readers = Vec::with_capacity(5);
        for col in cols {
            let Some(i) = col else {
                readers.push(None);
                continue;
            };
            let name = schema.column(i).path().string();
            let ColumnReader::ByteArrayColumnReader(r) =
                rg.get_column_reader(i).map_err(|e| e.to_string())?
            else {
                return Err(format!("column {name} is not a string column"));
            };
            readers.push(Some((name, r)));
        }
        let mut values: Vec<Vec<ByteArray>> =
            (0..5).map(|_| Vec::with_capacity(REL_BATCH)).collect();
        let mut def = Vec::with_capacity(REL_BATCH);
        let mut done = 0;
        while done < n {
            let want = REL_BATCH.min(n - done);
            for (slot, reader) in values.iter_mut().zip(readers.iter_mut()) {
                slot.clear();
                let Some((name, r)) = reader else { continue };
                def.clear();
                let (records, _, _) = r
                    .read_records(want, Some(&mut def), None, slot)
                    .map_err(|e| format!("column {name}: {e}"))?;
                if records != want || slot.len() != want {
                    return Err(format!(
                        "column {name} of row group {g} has nulls or too few values"
                    ));
                }
            }
            for row in 0..want {
                let get = |c: usize| values[c].get(row).map_or(&[][..], ByteArray::data);
                let (from_ns, to_ns) = (get(0), get(3));
                let own = if forward { from_ns } else { to_ns };
                if own != own_ns.as_bytes() {
                    out.misplaced += 1;
                }
                // Few namespace pairs per file: a linear scan beats
                // allocating a key per row.
                let i = match pairs
                    .iter()
                    .position(|(f, t, _)| f == from_ns && t == to_ns)
                {
                    Some(i) => i,
                    None => {
                        pairs.push((from_ns.to_vec(), to_ns.to_vec(), RelDigest::default()));
                        pairs.len() - 1
                    }
                };
                pairs[i].2.add(&[from_ns, get(1), get(2), to_ns, get(4)]);
            }
            done += want;
        }
    }
    for (f, t, d) in pairs {
        let key = (
            String::from_utf8_lossy(&f).into_owned(),
            String::from_utf8_lossy(&t).into_owned(),
        );
        let slot = out.pairs.entry(key).or_default();
        slot.count += d.count;
        slot.sum = slot.sum.wrapping_add(d.sum);
        slot.xor ^= d.xor;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Bloom filters

/// Checks a bloom filter from its first 24 bytes and its size: non-empty,
/// and, for filters in the `PQBF` format, a bit count that matches the
/// size. Filters in other formats only need to be non-empty.
///
/// # Errors
/// A one-line reason.
pub fn check_bloom(size: u64, header: &[u8]) -> std::result::Result<(), String> {
    if size == 0 {
        return Err("is empty".into());
    }
    if header.len() >= 24 && &header[..4] == b"PQBF" {
        let m = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        if m == 0 || m % 64 != 0 {
            return Err(format!("bit count {m} is not a positive multiple of 64"));
        }
        if 24 + m / 8 != size {
            return Err(format!(
                "declares {m} bits, which needs {} bytes, but the file has {size} (truncated?)",
                24 + m / 8
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Event log

/// Where the event segment manifest may be, in order of preference.
pub const EVENT_MANIFESTS: [&str; 2] = ["events/_manifest.json", "events/manifest.json"];

/// ParqueDB's event segment manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventManifest {
    /// Format version (1).
    #[serde(default)]
    pub version: Option<u64>,
    /// Sealed segments, in `seq` order.
    pub segments: Vec<Segment>,
    /// The seq the next segment will get.
    #[serde(default)]
    pub next_seq: Option<u64>,
    /// Events in all segments.
    #[serde(default)]
    pub total_events: Option<u64>,
}

/// One sealed segment of the event log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// Path of the segment file.
    pub path: String,
    /// Earliest event time (ms since the epoch).
    #[serde(default)]
    pub min_ts: Option<i64>,
    /// Latest event time (ms since the epoch).
    #[serde(default)]
    pub max_ts: Option<i64>,
    /// Events in the segment.
    #[serde(default)]
    pub count: Option<u64>,
    /// Size of the segment file.
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

impl Segment {
    /// The segment's path relative to the database root (manifests may
    /// name it relative to `events/`).
    pub fn file(&self) -> String {
        let p = self.path.trim_start_matches("./");
        if p.starts_with("events/") {
            p.to_string()
        } else {
            format!("events/{p}")
        }
    }
}

impl EventManifest {
    /// Parses an event segment manifest.
    ///
    /// # Errors
    /// A one-line reason.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))
    }

    /// Problems with the seq numbers: segments out of order, repeated seqs,
    /// gaps (a missing segment), and a `nextSeq` at or below a listed seq.
    pub fn seq_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut prev: Option<u64> = None;
        for s in &self.segments {
            match prev {
                Some(p) if s.seq == p => out.push(format!("segment seq {} is listed twice", s.seq)),
                Some(p) if s.seq < p => out.push(format!(
                    "segment seq {} is listed after seq {p}: segments are out of order",
                    s.seq
                )),
                Some(p) if s.seq > p + 1 => out.push(if s.seq == p + 2 {
                    format!(
                        "segment seq {} is missing (gap between {p} and {})",
                        p + 1,
                        s.seq
                    )
                } else {
                    format!(
                        "segments seq {}..={} are missing (gap between {p} and {})",
                        p + 1,
                        s.seq - 1,
                        s.seq
                    )
                }),
                _ => {}
            }
            prev = Some(prev.map_or(s.seq, |p| p.max(s.seq)));
        }
        if let (Some(next), Some(last)) = (self.next_seq, prev) {
            if next <= last {
                out.push(format!(
                    "nextSeq {next} is not after the last segment's seq {last}"
                ));
            }
        }
        out
    }
}

/// Whether a path looks like an event segment file
/// (`events/seg-NNNN.parquet` or `events/archive/YYYY/MM/seg-NNNN.parquet`).
pub fn is_segment_file(path: &str) -> bool {
    path.starts_with("events/")
        && path
            .rsplit('/')
            .next()
            .and_then(|n| n.strip_prefix("seg-"))
            .and_then(|n| n.strip_suffix(".parquet"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_of_layout_paths() {
        assert_eq!(
            namespace_of("data/users/data.parquet"),
            Some(("users", Role::Data))
        );
        assert_eq!(
            namespace_of("rels/forward/posts.parquet"),
            Some(("posts", Role::Forward))
        );
        assert_eq!(
            namespace_of("rels/reverse/posts.parquet"),
            Some(("posts", Role::Reverse))
        );
        assert_eq!(
            namespace_of("indexes/secondary/users.name.idx.parquet"),
            Some(("users", Role::Index))
        );
        assert_eq!(
            namespace_of("indexes/bloom/users.bloom"),
            Some(("users", Role::Index))
        );
        assert_eq!(namespace_of("events/seg-0001.parquet"), None);
        assert_eq!(namespace_of("data/users"), None);
        assert_eq!(namespace_of("rels/forward/x/y.parquet"), None);
    }

    #[test]
    fn segment_names() {
        assert!(is_segment_file("events/seg-0001.parquet"));
        assert!(is_segment_file("events/seg-10000.parquet"));
        assert!(is_segment_file("events/archive/2026/01/seg-0007.parquet"));
        assert!(!is_segment_file("events/current.parquet"));
        assert!(!is_segment_file("events/seg-.parquet"));
        assert!(!is_segment_file("data/seg-0001.parquet"));
    }

    fn manifest(seqs: &[u64], next: u64) -> EventManifest {
        EventManifest {
            version: Some(1),
            segments: seqs
                .iter()
                .map(|&seq| Segment {
                    seq,
                    path: format!("events/seg-{seq:04}.parquet"),
                    min_ts: None,
                    max_ts: None,
                    count: None,
                    size_bytes: None,
                })
                .collect(),
            next_seq: Some(next),
            total_events: None,
        }
    }

    #[test]
    fn seq_gaps_and_disorder() {
        assert!(manifest(&[1, 2, 3], 4).seq_problems().is_empty());
        assert_eq!(
            manifest(&[1, 3], 4).seq_problems(),
            ["segment seq 2 is missing (gap between 1 and 3)"]
        );
        assert_eq!(
            manifest(&[1, 5], 6).seq_problems(),
            ["segments seq 2..=4 are missing (gap between 1 and 5)"]
        );
        assert_eq!(
            manifest(&[2, 1], 3).seq_problems(),
            ["segment seq 1 is listed after seq 2: segments are out of order"]
        );
        assert_eq!(
            manifest(&[1, 2], 2).seq_problems(),
            ["nextSeq 2 is not after the last segment's seq 2"]
        );
    }

    #[test]
    fn segment_paths_relative_to_events() {
        let s = |p: &str| Segment {
            seq: 1,
            path: p.into(),
            min_ts: None,
            max_ts: None,
            count: None,
            size_bytes: None,
        };
        assert_eq!(s("seg-0001.parquet").file(), "events/seg-0001.parquet");
        assert_eq!(
            s("events/seg-0001.parquet").file(),
            "events/seg-0001.parquet"
        );
    }

    #[test]
    fn footers_catch_truncation_and_garbage() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/sample-db/data/users/data.parquet"
        ))
        .unwrap();
        let size = bytes.len() as u64;
        let info = parse_footer(size, &bytes, &bytes).unwrap();
        assert_eq!(info.rows, 200);

        let cut = &bytes[..bytes.len() - 100];
        let err = parse_footer(cut.len() as u64, cut, cut).unwrap_err();
        assert!(err.to_string().contains("PAR1"), "{err}");

        let mut flipped = bytes.clone();
        let n = flipped.len();
        // Inside the footer's Thrift bytes, just before the length word.
        for b in &mut flipped[n - 40..n - 8] {
            *b ^= 0x5a;
        }
        let err = parse_footer(size, &flipped, &flipped).unwrap_err();
        assert!(matches!(err, FooterError::Invalid(_)), "{err}");

        let short_tail = &bytes[bytes.len() - 8..];
        assert!(matches!(
            parse_footer(size, &bytes, short_tail),
            Err(FooterError::NeedTail(_))
        ));
    }

    #[test]
    fn bloom_headers() {
        let mut h = b"PQBF\x01\x07\0\0".to_vec();
        h.extend_from_slice(&128u64.to_le_bytes());
        h.extend_from_slice(&3u64.to_le_bytes());
        assert!(check_bloom(24 + 16, &h).is_ok());
        assert!(check_bloom(24 + 8, &h).unwrap_err().contains("truncated"));
        assert_eq!(check_bloom(0, &[]).unwrap_err(), "is empty");
        assert!(check_bloom(10, b"other").is_ok());
    }
}
