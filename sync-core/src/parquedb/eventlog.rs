//! Reading ParqueDB's event log: which events match a query, and what an
//! entity or a namespace looked like at a time.
//!
//! A query reads only what it needs. Segments whose `minTs`/`maxTs` (from
//! the segment manifest) miss the time range are not opened. Of the rest,
//! the footer is read from the file's end, the row groups whose `ts`
//! statistics miss the range are skipped, and of those kept only the column
//! chunks of the needed columns are fetched, each as one range read.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader, RowGroupMetaData};
use parquet::file::reader::{ChunkReader, FileReader, Length};
use parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
use parquet::file::statistics::Statistics;
use parquet::record::Field;
use parquet::schema::types::Type;
use serde::Serialize;
use serde_json::Value;

use super::events::EventManifest;
use crate::error::{Error, Result};
use crate::layout::{segment_seq, CURRENT_EVENTS, EVENT_MANIFESTS};
use crate::tree::StoreTree;

/// Which events to list. Times are ms since the epoch; the range is
/// `[after, before)`.
#[derive(Clone, Debug, Default)]
pub struct EventQuery {
    /// Events of this namespace: an entity target `NS:ID`, or a
    /// relationship from or to `NS`.
    pub namespace: Option<String>,
    /// Only these operations (`CREATE`, `UPDATE`, `DELETE`, `REL_CREATE`,
    /// `REL_DELETE`); all when empty.
    pub ops: Vec<String>,
    /// Only events about this entity (`NS:ID`), as the target or as either
    /// end of a relationship.
    pub target: Option<String>,
    /// Events at or after this time.
    pub after: Option<i64>,
    /// Events before this time.
    pub before: Option<i64>,
    /// Read `before` and `after` too.
    pub full: bool,
}

impl EventQuery {
    /// Every event in `[after, before)`.
    pub fn between(after: Option<i64>, before: Option<i64>) -> Self {
        EventQuery {
            after,
            before,
            ..EventQuery::default()
        }
    }

    fn overlaps(&self, min: Option<i64>, max: Option<i64>) -> bool {
        let below = matches!((self.after, max), (Some(a), Some(m)) if m < a);
        let above = matches!((self.before, min), (Some(b), Some(m)) if m >= b);
        !below && !above
    }

    fn matches(&self, e: &EventRecord) -> bool {
        if self.after.is_some_and(|a| e.ts < a) || self.before.is_some_and(|b| e.ts >= b) {
            return false;
        }
        if !self.ops.is_empty() && !self.ops.iter().any(|o| o.eq_ignore_ascii_case(&e.op)) {
            return false;
        }
        let parts: Vec<&str> = e.target.split(':').collect();
        if let Some(ns) = &self.namespace {
            let hit = parts.first() == Some(&ns.as_str())
                || (parts.len() == 5 && parts[3] == ns.as_str());
            if !hit {
                return false;
            }
        }
        if let Some(t) = &self.target {
            let hit = e.target == *t
                || (parts.len() == 5
                    && (format!("{}:{}", parts[0], parts[1]) == *t
                        || format!("{}:{}", parts[3], parts[4]) == *t));
            if !hit {
                return false;
            }
        }
        true
    }
}

/// One event.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EventRecord {
    /// The event's id (a ULID).
    pub id: String,
    /// Its time, ms since the epoch.
    pub ts: i64,
    /// `CREATE`, `UPDATE`, `DELETE`, `REL_CREATE` or `REL_DELETE`.
    pub op: String,
    /// `ns:id`, or `fromNs:fromId:pred:toNs:toId`.
    pub target: String,
    /// Who made the change.
    pub actor: Option<String>,
    /// The state before (with `full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// The state after (with `full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// The file it was read from.
    pub file: String,
}

/// The events a query found, and what reading them cost.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EventScan {
    /// Matching events, by time then id.
    pub events: Vec<EventRecord>,
    /// Bytes read from the event files (footers and column chunks).
    pub bytes_read: u64,
    /// The size of every event file of the log.
    pub log_bytes: u64,
    /// Event files opened.
    pub files_read: usize,
    /// Event files skipped by their manifest times.
    pub files_skipped: usize,
    /// Row groups read.
    pub row_groups_read: usize,
    /// Row groups skipped by their `ts` statistics.
    pub row_groups_skipped: usize,
    /// The newest event time in the log (from the manifest or the files
    /// read), to state how far the log reaches.
    pub log_max_ts: Option<i64>,
    /// Event files that could not be read, each with why: their events are
    /// missing from `events`.
    pub unreadable: Vec<(String, String)>,
}

/// Where event files are read from: a database directory or a tree.
enum Source<'a> {
    Dir(&'a std::path::Path),
    Tree(&'a StoreTree, BTreeMap<String, u64>),
}

impl Source<'_> {
    fn size(&self, rel: &str) -> Option<u64> {
        match self {
            Source::Dir(root) => std::fs::metadata(root.join(rel)).ok().map(|m| m.len()),
            Source::Tree(_, sizes) => sizes.get(rel).copied(),
        }
    }

    async fn read_range(&self, rel: &str, range: Range<u64>) -> Result<Bytes> {
        match self {
            Source::Dir(root) => {
                use std::io::{Read, Seek, SeekFrom};
                let path = root.join(rel);
                let io = |e| Error::io(&path, e);
                let mut f = std::fs::File::open(&path).map_err(io)?;
                f.seek(SeekFrom::Start(range.start)).map_err(io)?;
                let mut buf = vec![0; (range.end - range.start) as usize];
                f.read_exact(&mut buf).map_err(io)?;
                Ok(buf.into())
            }
            Source::Tree(tree, _) => tree.read_range(rel, range).await,
        }
    }

    async fn read_all(&self, rel: &str) -> Option<Bytes> {
        match self {
            Source::Dir(root) => std::fs::read(root.join(rel)).ok().map(Bytes::from),
            Source::Tree(tree, sizes) => match sizes.contains_key(rel) {
                true => tree.read_all(rel).await.ok(),
                false => None,
            },
        }
    }

    fn files(&self) -> Vec<String> {
        match self {
            Source::Dir(root) => walkdir::WalkDir::new(root.join("events"))
                .into_iter()
                .flatten()
                .filter(|e| e.file_type().is_file())
                .filter_map(|e| {
                    let rel = e.path().strip_prefix(root).ok()?;
                    Some(rel.to_string_lossy().replace('\\', "/"))
                })
                .collect(),
            Source::Tree(_, sizes) => sizes.keys().cloned().collect(),
        }
    }
}

/// Lists the events of the database at `root` that `q` matches. An event
/// file that cannot be read is listed in [`EventScan::unreadable`].
///
/// # Errors
/// None so far; the signature leaves room for the tree's.
pub async fn events_in_dir(root: &std::path::Path, q: &EventQuery) -> Result<EventScan> {
    scan(&Source::Dir(root), q).await
}

/// Lists the events of the database `tree` holds (a synced remote or a
/// snapshot) that `q` matches. An event file that cannot be read is listed
/// in [`EventScan::unreadable`].
///
/// # Errors
/// [`Error::NotManaged`] when the tree has no manifest; store errors
/// reading it.
pub async fn events_in_tree(tree: &StoreTree, q: &EventQuery) -> Result<EventScan> {
    let Some(m) = tree.read_manifest().await? else {
        return Err(Error::NotManaged {
            url: tree.url().to_string(),
        });
    };
    let sizes = m
        .manifest
        .files
        .iter()
        .filter(|(p, _)| p.starts_with("events/"))
        .map(|(p, e)| (p.clone(), e.size))
        .collect();
    scan(&Source::Tree(tree, sizes), q).await
}

/// One event file to look at, with its time range when the manifest says.
struct Candidate {
    rel: String,
    min: Option<i64>,
    max: Option<i64>,
}

async fn scan(src: &Source<'_>, q: &EventQuery) -> Result<EventScan> {
    let mut manifest = None;
    for p in EVENT_MANIFESTS {
        if let Some(b) = src.read_all(p).await {
            manifest = EventManifest::parse(&b).ok();
            break;
        }
    }
    let mut candidates: BTreeMap<String, Candidate> = BTreeMap::new();
    let mut out = EventScan::default();
    if let Some(m) = &manifest {
        for s in &m.segments {
            let rel = s.file();
            out.log_max_ts = out.log_max_ts.max(s.max_ts);
            candidates.insert(
                rel.clone(),
                Candidate {
                    rel,
                    min: s.min_ts,
                    max: s.max_ts,
                },
            );
        }
    }
    for rel in src.files() {
        if (segment_seq(&rel).is_some() || rel == CURRENT_EVENTS) && !candidates.contains_key(&rel)
        {
            candidates.insert(
                rel.clone(),
                Candidate {
                    rel,
                    min: None,
                    max: None,
                },
            );
        }
    }
    for c in candidates.values() {
        let Some(size) = src.size(&c.rel) else {
            continue;
        };
        out.log_bytes += size;
        if !q.overlaps(c.min, c.max) {
            out.files_skipped += 1;
            continue;
        }
        out.files_read += 1;
        // One damaged or missing file does not hide the others' events; the
        // caller decides whether a partial answer will do.
        if let Err(e) = read_file(src, &c.rel, size, q, &mut out).await {
            out.unreadable.push((c.rel.clone(), e.to_string()));
        }
    }
    out.events
        .sort_by(|a, b| a.ts.cmp(&b.ts).then_with(|| a.id.cmp(&b.id)));
    Ok(out)
}

/// The bytes of one file that were fetched, by offset.
struct Sparse {
    size: u64,
    ranges: BTreeMap<u64, Bytes>,
}

impl Sparse {
    /// The fetched bytes from `start` on (at least `len` of them).
    fn at(&self, start: u64, len: usize) -> parquet::errors::Result<Bytes> {
        self.ranges
            .range(..=start)
            .rev()
            .find(|(at, b)| start - **at + len as u64 <= b.len() as u64)
            .map(|(at, b)| b.slice((start - at) as usize..))
            .ok_or_else(|| {
                parquet::errors::ParquetError::General(format!(
                    "bytes {start}..{} were not fetched",
                    start + len as u64
                ))
            })
    }
}

impl Length for Sparse {
    fn len(&self) -> u64 {
        self.size
    }
}

impl ChunkReader for Sparse {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self.at(start, 0)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        Ok(self.at(start, length)?.slice(..length))
    }
}

/// The `ts` range of a row group, from its statistics.
fn ts_range(rg: &RowGroupMetaData, ts: usize) -> (Option<i64>, Option<i64>) {
    match rg.column(ts).statistics() {
        Some(Statistics::Int64(s)) => (s.min_opt().copied(), s.max_opt().copied()),
        _ => (None, None),
    }
}

async fn read_file(
    src: &Source<'_>,
    rel: &str,
    size: u64,
    q: &EventQuery,
    out: &mut EventScan,
) -> Result<()> {
    let bad = |reason: String| Error::Repository {
        url: rel.to_string(),
        reason: format!("event file is not readable Parquet ({reason})"),
    };
    if size < 12 {
        return Err(bad("too short".into()));
    }
    // The footer: its length is in the last 8 bytes.
    // Footers of event segments are a few KiB: a small probe, and one more
    // read when the footer is longer.
    let probe = size.min((size / 16).clamp(4 * 1024, 64 * 1024));
    let mut tail = src.read_range(rel, size - probe..size).await?;
    out.bytes_read += tail.len() as u64;
    let footer_len = u32::from_le_bytes(
        tail[tail.len() - 8..tail.len() - 4]
            .try_into()
            .expect("4 bytes"),
    ) as u64;
    if footer_len + 8 > probe {
        let need = (footer_len + 8).min(size);
        tail = src.read_range(rel, size - need..size).await?;
        out.bytes_read += tail.len() as u64;
    }
    let tail_at = size - tail.len() as u64;
    let mut sparse = Sparse {
        size,
        ranges: BTreeMap::from([(tail_at, tail)]),
    };
    let meta: ParquetMetaData = ParquetMetaDataReader::new()
        .parse_and_finish(&sparse)
        .map_err(|e| bad(e.to_string()))?;
    let schema = meta.file_metadata().schema_descr();
    let index = |name: &str| (0..schema.num_columns()).find(|&i| schema.column(i).name() == name);
    let ts = index("ts").ok_or_else(|| bad("no ts column".into()))?;
    let mut wanted = vec!["id", "ts", "op", "target", "actor"];
    if q.full {
        wanted.extend(["before", "after"]);
    }
    let columns: Vec<usize> = wanted.iter().filter_map(|n| index(n)).collect();
    let keep: Vec<bool> = meta
        .row_groups()
        .iter()
        .map(|rg| {
            let (min, max) = ts_range(rg, ts);
            q.overlaps(min, max)
        })
        .collect();
    for (rg, kept) in meta.row_groups().iter().zip(&keep) {
        if let (_, Some(max)) = ts_range(rg, ts) {
            out.log_max_ts = out.log_max_ts.max(Some(max));
        }
        if !kept {
            out.row_groups_skipped += 1;
            continue;
        }
        out.row_groups_read += 1;
        // The chunks not fetched yet, adjacent ones joined into one read.
        let mut wanted: Vec<Range<u64>> = Vec::new();
        for &c in &columns {
            let (start, len) = rg.column(c).byte_range();
            if start + len > size {
                return Err(bad(format!("column chunk past the end ({start}+{len})")));
            }
            if sparse.at(start, len as usize).is_err() {
                wanted.push(start..start + len);
            }
        }
        wanted.sort_by_key(|r| r.start);
        let mut joined: Vec<Range<u64>> = Vec::new();
        for r in wanted {
            match joined.last_mut() {
                Some(last) if last.end == r.start => last.end = r.end,
                _ => joined.push(r),
            }
        }
        for r in joined {
            let b = src.read_range(rel, r.clone()).await?;
            out.bytes_read += b.len() as u64;
            sparse.ranges.insert(r.start, b);
        }
    }
    if !keep.iter().any(|k| *k) {
        return Ok(());
    }
    let projection = Type::group_type_builder(meta.file_metadata().schema().name())
        .with_fields(
            meta.file_metadata()
                .schema()
                .get_fields()
                .iter()
                .filter(|f| wanted.contains(&f.name()))
                .cloned()
                .collect(),
        )
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let keep = Arc::new(keep);
    let options = ReadOptionsBuilder::new()
        .with_predicate(Box::new(move |_, i| keep[i]))
        .build();
    let reader =
        SerializedFileReader::new_with_options(sparse, options).map_err(|e| bad(e.to_string()))?;
    let rows = reader
        .get_row_iter(Some(projection))
        .map_err(|e| bad(e.to_string()))?;
    for row in rows {
        let row = row.map_err(|e| bad(e.to_string()))?;
        let mut e = EventRecord {
            id: String::new(),
            ts: 0,
            op: String::new(),
            target: String::new(),
            actor: None,
            before: None,
            after: None,
            file: rel.to_string(),
        };
        for (name, field) in row.get_column_iter() {
            match (name.as_str(), field) {
                ("id", f) => e.id = text(f).unwrap_or_default(),
                ("ts", Field::Long(v) | Field::TimestampMillis(v)) => e.ts = *v,
                ("ts", Field::Int(v)) => e.ts = i64::from(*v),
                ("op", f) => e.op = text(f).unwrap_or_default(),
                ("target", f) => e.target = text(f).unwrap_or_default(),
                ("actor", f) => e.actor = text(f),
                ("before", f) => e.before = json(f),
                ("after", f) => e.after = json(f),
                _ => {}
            }
        }
        if q.matches(&e) {
            out.events.push(e);
        }
    }
    Ok(())
}

fn text(f: &Field) -> Option<String> {
    match f {
        Field::Str(s) => Some(s.clone()),
        Field::Bytes(b) => std::str::from_utf8(b.data()).ok().map(str::to_string),
        Field::Null => None,
        other => Some(other.to_string()),
    }
}

/// A `before`/`after` value: JSON text parsed, anything else as text.
fn json(f: &Field) -> Option<Value> {
    let t = text(f)?;
    Some(serde_json::from_str(&t).unwrap_or(Value::String(t)))
}

/// The entities of namespace `ns` in the database `tree` holds, by id (the
/// part of `$id` after `ns/`): each row of `data/{ns}/data.parquet` and its
/// shards as a JSON object, with the `data` column's JSON text parsed, as
/// ParqueDB's events carry the state.
///
/// # Errors
/// A data file that is not valid Parquet; store errors.
pub async fn entities_in_tree(tree: &StoreTree, ns: &str) -> Result<BTreeMap<String, Value>> {
    let Some(m) = tree.read_manifest().await? else {
        return Err(Error::NotManaged {
            url: tree.url().to_string(),
        });
    };
    let dir = format!("data/{ns}/");
    let mut out = BTreeMap::new();
    for path in m.manifest.files.keys() {
        let Some(name) = path.strip_prefix(&dir) else {
            continue;
        };
        let is_data = name == "data.parquet"
            || name
                .strip_prefix("data.")
                .and_then(|n| n.strip_suffix(".parquet"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !is_data {
            continue;
        }
        let bytes = tree.read_all(path).await?;
        let bad = |e: parquet::errors::ParquetError| Error::Repository {
            url: format!("{}/{path}", tree.url()),
            reason: format!("data file is not readable Parquet ({e})"),
        };
        let reader = SerializedFileReader::new(bytes).map_err(bad)?;
        for row in reader.get_row_iter(None).map_err(bad)? {
            let row = row.map_err(bad)?;
            let mut v = serde_json::Map::new();
            for (name, field) in row.get_column_iter() {
                let value = match (name.as_str(), field) {
                    ("data", f) => json(f).unwrap_or(Value::Null),
                    (_, Field::Null) => Value::Null,
                    (_, Field::Bool(b)) => Value::Bool(*b),
                    (_, Field::Int(n)) => Value::from(*n),
                    (_, Field::Long(n) | Field::TimestampMillis(n)) => Value::from(*n),
                    (_, Field::Double(n)) => Value::from(*n),
                    (_, f) => text(f).map_or(Value::Null, Value::String),
                };
                v.insert(name.clone(), value);
            }
            let v = Value::Object(v);
            let id = v
                .get("$id")
                .and_then(Value::as_str)
                .map(|id| id.strip_prefix(&format!("{ns}/")).unwrap_or(id).to_string());
            if let Some(id) = id {
                out.insert(id, v);
            }
        }
    }
    Ok(out)
}

/// An entity's state at a time, from its events.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EntityState {
    /// `ns:id`.
    pub target: String,
    /// The `after` of the last event at or before the time; `None` when
    /// that event deleted it, or there is none.
    pub state: Option<Value>,
    /// When the last event deleted the entity: its state before.
    pub deleted: Option<Value>,
    /// The last event at or before the time.
    pub last_event: Option<EventRecord>,
}

/// The state of `target` (`ns:id`) after the events in `events` (sorted
/// by time) up to and including `at`.
pub fn entity_at(events: &[EventRecord], target: &str, at: i64) -> EntityState {
    let last = events
        .iter()
        .rfind(|e| e.target == target && e.ts <= at && !e.op.starts_with("REL_"))
        .cloned();
    let (state, deleted) = match &last {
        Some(e) if e.op.eq_ignore_ascii_case("DELETE") => (None, e.before.clone()),
        Some(e) => (e.after.clone(), None),
        None => (None, None),
    };
    EntityState {
        target: target.to_string(),
        state,
        deleted,
        last_event: last.map(|mut e| {
            e.before = None;
            e.after = None;
            e
        }),
    }
}

/// Applies `events` (sorted by time; entity events of namespace `ns` up to
/// the time wanted) to `base`, the entities by id: a CREATE or UPDATE sets
/// the `after`, a DELETE removes.
pub fn replay(base: &mut BTreeMap<String, Value>, events: &[EventRecord], ns: &str) {
    for e in events {
        let Some((e_ns, id)) = e.target.split_once(':') else {
            continue;
        };
        if e_ns != ns || e.op.starts_with("REL_") || id.contains(':') {
            continue;
        }
        if e.op.eq_ignore_ascii_case("DELETE") {
            base.remove(id);
        } else if let Some(after) = &e.after {
            base.insert(id.to_string(), after.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, ts: i64, op: &str, target: &str, after: Option<Value>) -> EventRecord {
        EventRecord {
            id: id.into(),
            ts,
            op: op.into(),
            target: target.into(),
            actor: None,
            before: Some(serde_json::json!({"v": "before"})),
            after,
            file: String::new(),
        }
    }

    #[test]
    fn queries_match_namespaces_ops_targets_and_times() {
        let q = EventQuery {
            namespace: Some("users".into()),
            ops: vec!["delete".into()],
            after: Some(10),
            before: Some(20),
            ..EventQuery::default()
        };
        assert!(q.matches(&ev("a", 10, "DELETE", "users:1", None)));
        assert!(!q.matches(&ev("a", 20, "DELETE", "users:1", None)));
        assert!(!q.matches(&ev("a", 15, "UPDATE", "users:1", None)));
        assert!(!q.matches(&ev("a", 15, "DELETE", "posts:1", None)));
        let rel = ev("a", 15, "REL_CREATE", "posts:9:author:users:1", None);
        let q = EventQuery {
            target: Some("users:1".into()),
            ..EventQuery::default()
        };
        assert!(q.matches(&rel));
        assert!(!q.matches(&ev("a", 1, "CREATE", "users:10", None)));
        assert!(q.overlaps(Some(0), None));
        let q = EventQuery::between(Some(10), Some(20));
        assert!(!q.overlaps(Some(0), Some(9)));
        assert!(!q.overlaps(Some(20), Some(30)));
        assert!(q.overlaps(Some(19), Some(30)));
    }

    #[test]
    fn state_at_follows_updates_deletes_and_recreates() {
        let v = |n: i64| Some(serde_json::json!({ "n": n }));
        let events = vec![
            ev("1", 1, "CREATE", "u:1", v(1)),
            ev("2", 2, "UPDATE", "u:1", v(2)),
            ev("3", 3, "DELETE", "u:1", None),
            ev("4", 4, "CREATE", "u:1", v(4)),
        ];
        assert_eq!(entity_at(&events, "u:1", 0).last_event, None);
        assert_eq!(entity_at(&events, "u:1", 2).state, v(2));
        let gone = entity_at(&events, "u:1", 3);
        assert_eq!(gone.state, None);
        assert!(gone.deleted.is_some());
        assert_eq!(entity_at(&events, "u:1", 9).state, v(4));
        let mut base = BTreeMap::from([("0".to_string(), serde_json::json!({"n": 0}))]);
        replay(&mut base, &events[..3], "u");
        assert_eq!(base.keys().collect::<Vec<_>>(), ["0"]);
    }
}
