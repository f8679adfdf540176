//! What pqsync keeps locally about a repository's snapshots so that it
//! need not read every record each time: the index of packed content
//! (where the snapshots keep each small file's content, so a backup finds
//! content that any snapshot holds), and each record's set of objects (so
//! a prune reads only records it has not seen).
//!
//! It lives in the local cache beside the cached records, and names the
//! records it was built from. It is used only while every one of those is
//! still listed: a pack that a listed snapshot names is never deleted by a
//! prune (only unreferenced packs are), so every place in the index can be
//! relied on unless its pack is marked, which the backup checks. When a
//! record it was built from is gone (forgotten), it is built again from
//! the records that are left. A damaged or unreadable file is rebuilt too.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use super::{Repository, Snapshot};
use crate::tree::Packed;

const MAGIC: &[u8] = b"pqsync packed index 1\n";

/// Packed content by tagged hash, and the records it came from.
#[derive(Default)]
struct PackedIndex {
    records: BTreeSet<String>,
    places: HashMap<String, Packed>,
}

impl PackedIndex {
    fn encode(&self) -> Vec<u8> {
        let mut packs: Vec<&str> = self.places.values().map(|p| p.object.as_str()).collect();
        packs.sort_unstable();
        packs.dedup();
        let number: HashMap<&str, u32> = packs
            .iter()
            .enumerate()
            .map(|(i, k)| (*k, i as u32))
            .collect();
        let mut out = MAGIC.to_vec();
        let short = |out: &mut Vec<u8>, s: &str| {
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        };
        out.extend_from_slice(&(self.records.len() as u32).to_le_bytes());
        for r in &self.records {
            short(&mut out, r);
        }
        out.extend_from_slice(&(packs.len() as u32).to_le_bytes());
        for k in &packs {
            short(&mut out, k);
        }
        out.extend_from_slice(&(self.places.len() as u32).to_le_bytes());
        for (tagged, p) in &self.places {
            short(&mut out, tagged);
            out.extend_from_slice(&number[p.object.as_str()].to_le_bytes());
            out.extend_from_slice(&p.offset.to_le_bytes());
            out.extend_from_slice(&p.length.to_le_bytes());
            out.push(u8::from(p.zstd));
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let mut r = Reader(bytes.strip_prefix(MAGIC)?);
        let mut idx = PackedIndex::default();
        for _ in 0..r.u32()? {
            idx.records.insert(r.short()?);
        }
        let packs: Vec<String> = (0..r.u32()?).map(|_| r.short()).collect::<Option<_>>()?;
        for _ in 0..r.u32()? {
            let tagged = r.short()?;
            let object = packs.get(r.u32()? as usize)?.clone();
            let (offset, length) = (r.u64()?, r.u64()?);
            let zstd = r.take(1)?[0] == 1;
            idx.places.insert(
                tagged,
                Packed {
                    object,
                    offset,
                    length,
                    zstd,
                },
            );
        }
        r.0.is_empty().then_some(idx)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn short(&mut self) -> Option<String> {
        let n = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

impl Repository {
    /// Where `snapshots` (all the repository lists) keep packed content, by
    /// tagged hash, leaving out packs in `skip` (marked ones). Reads only
    /// the records the local index has not seen; a snapshot that cannot be
    /// read adds nothing.
    pub(crate) async fn packed_places(
        &self,
        snapshots: &[Snapshot],
        skip: &BTreeSet<String>,
    ) -> HashMap<String, Packed> {
        let path = self.cache_dir().map(|d| d.with_file_name("packed-index"));
        let listed: BTreeSet<&str> = snapshots.iter().map(|s| s.id.as_str()).collect();
        let mut idx = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| PackedIndex::decode(&b))
            .filter(|i| i.records.iter().all(|r| listed.contains(r.as_str())))
            .unwrap_or_default();
        let mut grew = false;
        for s in snapshots.iter().rev() {
            if idx.records.contains(&s.id) {
                continue;
            }
            let Ok(tree) = self.tree_of(s).await else {
                continue;
            };
            for e in tree.files.values().flat_map(crate::tree::units) {
                if let Some(p) = Packed::of(&e) {
                    idx.places.entry(e.tagged_hash()).or_insert(p);
                }
            }
            idx.records.insert(s.id.clone());
            grew = true;
        }
        if grew {
            if let Some(p) = path.as_deref() {
                save(p, &idx.encode());
            }
        }
        idx.places.retain(|_, p| !skip.contains(&p.object));
        idx.places
    }
}

/// The objects one snapshot names, as cached beside its record:
/// `<id>.objects`, checked against a hash of the id and the list so that a
/// damaged file is read as absent.
#[derive(serde::Serialize, serde::Deserialize)]
struct ObjectSet {
    record: String,
    objects: Vec<String>,
    check: String,
}

fn object_set_check(id: &str, objects: &[String]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(id.as_bytes());
    for o in objects {
        h.update(b"\n");
        h.update(o.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Caches the objects snapshot `id` names, in the record cache
/// `snapshots_dir`.
pub(crate) fn cache_object_set(snapshots_dir: &Path, id: &str, objects: &BTreeSet<String>) {
    let objects: Vec<String> = objects.iter().cloned().collect();
    let set = ObjectSet {
        record: id.to_string(),
        check: object_set_check(id, &objects),
        objects,
    };
    save(
        &snapshots_dir.join(id).with_extension("objects"),
        &serde_json::to_vec(&set).expect("an object set serialises"),
    );
}

impl Repository {
    /// The objects snapshot `id` names: from the local cache, else read
    /// from its record (and then cached).
    ///
    /// # Errors
    /// A record that cannot be read or parsed.
    pub(crate) async fn objects_of(&self, id: &str) -> crate::error::Result<BTreeSet<String>> {
        let dir = self.cache_dir();
        let cached = dir
            .as_ref()
            .and_then(|d| std::fs::read(d.join(id).with_extension("objects")).ok())
            .and_then(|b| serde_json::from_slice::<ObjectSet>(&b).ok())
            .filter(|s| s.record == id && s.check == object_set_check(id, &s.objects));
        if let Some(s) = cached {
            return Ok(s.objects.into_iter().collect());
        }
        let entries = self.entries_of(id).await?;
        let objects: BTreeSet<String> = entries
            .iter()
            .flat_map(crate::tree::units)
            .map(|u| self.object_of(&u))
            .collect();
        if let Some(d) = dir {
            cache_object_set(&d, id, &objects);
        }
        Ok(objects)
    }
}

fn save(path: &Path, bytes: &[u8]) {
    super::cache_put(path, bytes);
}

/// Adds a snapshot this machine just committed to the local index beside
/// the record cache `snapshots_dir`, if there is one, so the next backup
/// need not read that record. A listed record's places are always valid to
/// add; the index is still checked against the listing when it is used.
///
/// With `first` (the repository had no snapshot when the backup started),
/// an index is started with this snapshot alone.
pub(crate) fn note_committed(
    snapshots_dir: &Path,
    id: &str,
    tree: &crate::manifest::Manifest,
    first: bool,
) {
    let path = snapshots_dir.with_file_name("packed-index");
    let read = std::fs::read(&path)
        .ok()
        .and_then(|b| PackedIndex::decode(&b));
    let Some(mut idx) = read.or_else(|| first.then(PackedIndex::default)) else {
        return;
    };
    for e in tree.files.values().flat_map(crate::tree::units) {
        if let Some(p) = Packed::of(&e) {
            idx.places.entry(e.tagged_hash()).or_insert(p);
        }
    }
    idx.records.insert(id.to_string());
    save(&path, &idx.encode());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_index_round_trips_and_refuses_damage() {
        let mut idx = PackedIndex::default();
        idx.records.insert("ab".repeat(32));
        for i in 0..50u64 {
            idx.places.insert(
                format!("blake3:{i:064x}"),
                Packed {
                    object: format!("objects/0{}/pack{}", i % 3, i % 3),
                    offset: i * 100,
                    length: 99,
                    zstd: i % 2 == 0,
                },
            );
        }
        let bytes = idx.encode();
        let back = PackedIndex::decode(&bytes).unwrap();
        assert_eq!(back.records, idx.records);
        assert_eq!(back.places, idx.places);
        assert!(PackedIndex::decode(&bytes[..bytes.len() - 1]).is_none());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(PackedIndex::decode(&longer).is_none());
        assert!(PackedIndex::decode(b"something else").is_none());
    }
}
