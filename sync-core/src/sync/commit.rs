//! Committing the remote manifest without losing another writer's commit.
//!
//! Where the store enforces conditional writes, the manifest is written with
//! `If-Match` on the ETag read at the start of the run, or
//! `If-None-Match: *` for a first push. When the precondition fails, the
//! manifest is read again: if the other writer's changes do not touch this
//! run's paths, both are merged and the commit is retried; otherwise the run
//! stops with "remote changed during push".
//!
//! Under a lease ([`guard`](super::guard)), the commit re-reads the manifest
//! first (merging as above), writes it, then reads it back to check that it
//! carries this run's commit id; that catches a commit that lands between
//! the write and the read-back, not one that lands after it.

use std::collections::BTreeMap;

use crate::manifest::FileEntry;

/// This run's changes to the remote: `Some` to write an entry, `None` to
/// remove it.
pub(crate) type Changes = BTreeMap<String, Option<FileEntry>>;

/// The remote's files after applying `ours` on top of `files`.
pub(crate) fn apply(
    files: &BTreeMap<String, FileEntry>,
    ours: &Changes,
) -> BTreeMap<String, FileEntry> {
    let mut out = files.clone();
    for (p, change) in ours {
        match change {
            Some(e) => {
                out.insert(p.clone(), e.clone());
            }
            None => {
                out.remove(p);
            }
        }
    }
    out
}

fn same(a: Option<&FileEntry>, b: Option<&FileEntry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_content(b),
        _ => false,
    }
}

/// Paths another writer changed (from `seen` to `now`) that this run also
/// changes, to a different result.
pub(crate) fn overlap(
    seen: &BTreeMap<String, FileEntry>,
    now: &BTreeMap<String, FileEntry>,
    ours: &Changes,
) -> Vec<String> {
    ours.iter()
        .filter(|(p, mine)| {
            let theirs_changed = !same(seen.get(*p), now.get(*p));
            theirs_changed && !same(now.get(*p), mine.as_ref())
        })
        .map(|(p, _)| p.clone())
        .collect()
}

/// The base after a run: every path on which `local` and `remote` now
/// agree; elsewhere the `old` base stands, so unresolved differences keep
/// their history.
pub(crate) fn merged_base(
    local: &BTreeMap<String, FileEntry>,
    remote: &BTreeMap<String, FileEntry>,
    old: &BTreeMap<String, FileEntry>,
) -> BTreeMap<String, FileEntry> {
    let mut paths: std::collections::BTreeSet<&String> = local.keys().collect();
    paths.extend(remote.keys());
    paths.extend(old.keys());
    let mut base = BTreeMap::new();
    for p in paths {
        match (local.get(p), remote.get(p)) {
            (Some(l), Some(r)) if l.same_content(r) => {
                base.insert(p.clone(), l.clone());
            }
            (None, None) => {}
            _ => {
                if let Some(b) = old.get(p) {
                    base.insert(p.clone(), b.clone());
                }
            }
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HashAlgorithm;

    fn e(p: &str, content: &str) -> FileEntry {
        FileEntry {
            content_type: None,
            etag: None,
            extra: None,
            hash: HashAlgorithm::Blake3.digest(content.as_bytes()),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            path: p.into(),
            size: content.len() as u64,
        }
    }

    #[test]
    fn disjoint_changes_merge_and_overlaps_are_reported() {
        let seen: BTreeMap<_, _> = [("a", "1"), ("b", "1"), ("c", "1")]
            .iter()
            .map(|(p, c)| (p.to_string(), e(p, c)))
            .collect();
        // The other writer changed a, deleted b and added d.
        let mut now = seen.clone();
        now.insert("a".into(), e("a", "theirs"));
        now.remove("b");
        now.insert("d".into(), e("d", "1"));
        // We change c and add x: no overlap.
        let mut ours: Changes = BTreeMap::new();
        ours.insert("c".into(), Some(e("c", "mine")));
        ours.insert("x".into(), Some(e("x", "1")));
        assert!(overlap(&seen, &now, &ours).is_empty());
        let merged = apply(&now, &ours);
        assert_eq!(
            merged.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["a", "c", "d", "x"]
        );
        assert_eq!(merged["a"].hash, e("a", "theirs").hash);
        // We also change a: overlap; unless we wrote the very same bytes.
        ours.insert("a".into(), Some(e("a", "mine")));
        assert_eq!(overlap(&seen, &now, &ours), vec!["a"]);
        ours.insert("a".into(), Some(e("a", "theirs")));
        assert!(overlap(&seen, &now, &ours).is_empty());
        // Deleting what they deleted is no overlap; deleting what they
        // changed is.
        ours.insert("b".into(), None);
        assert!(overlap(&seen, &now, &ours).is_empty());
        ours.insert("d".into(), None);
        assert_eq!(overlap(&seen, &now, &ours), vec!["d"]);
    }
}
