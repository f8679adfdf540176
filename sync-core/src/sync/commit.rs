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

use crate::manifest::{dense_map, FileEntry};

/// This run's changes to the remote: `Some` to write an entry, `None` to
/// remove it. Borrowed from the run's outcome, so a commit of a million
/// uploads does not copy them.
pub(crate) type Changes<'a> = BTreeMap<&'a str, Option<&'a FileEntry>>;

/// The remote's files after applying `ours` on top of `files`.
pub(crate) fn apply(
    files: &BTreeMap<String, FileEntry>,
    ours: &Changes<'_>,
) -> BTreeMap<String, FileEntry> {
    // One merge of the two sorted sides, collected into a map with full
    // nodes.
    let mut theirs = files.iter().peekable();
    let mut mine = ours.iter().peekable();
    dense_map(std::iter::from_fn(|| loop {
        let take_mine = match (theirs.peek(), mine.peek()) {
            (None, None) => return None,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some((t, _)), Some((m, _))) => {
                if t.as_str() == **m {
                    theirs.next();
                    true
                } else {
                    **m < t.as_str()
                }
            }
        };
        if take_mine {
            let (p, change) = mine.next().expect("peeked");
            if let Some(e) = change {
                return Some((p.to_string(), (*e).clone()));
            }
        } else {
            let (p, e) = theirs.next().expect("peeked");
            return Some((p.clone(), e.clone()));
        }
    }))
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
    ours: &Changes<'_>,
) -> Vec<String> {
    ours.iter()
        .filter(|(p, mine)| {
            let theirs_changed = !same(seen.get(**p), now.get(**p));
            theirs_changed && !same(now.get(**p), **mine)
        })
        .map(|(p, _)| p.to_string())
        .collect()
}

/// The base after a run, in path order: every path on which `local` and
/// `remote` now agree, as the remote manifest lists it (so a base equal to
/// the remote can stand in for its manifest); elsewhere the `old` base
/// stands, so unresolved differences keep their history. One merge of the three sorted maps, so
/// the base is never built in memory.
pub(crate) fn merged_base_iter<'a>(
    local: &'a BTreeMap<String, FileEntry>,
    remote: &'a BTreeMap<String, FileEntry>,
    old: &'a BTreeMap<String, FileEntry>,
) -> impl Iterator<Item = &'a FileEntry> + 'a {
    let mut l = local.iter().peekable();
    let mut r = remote.iter().peekable();
    let mut o = old.iter().peekable();
    std::iter::from_fn(move || loop {
        let next = [l.peek(), r.peek(), o.peek()]
            .into_iter()
            .flatten()
            .map(|(p, _)| *p)
            .min()?;
        let le = l.next_if(|(p, _)| *p == next).map(|(_, e)| e);
        let re = r.next_if(|(p, _)| *p == next).map(|(_, e)| e);
        let oe = o.next_if(|(p, _)| *p == next).map(|(_, e)| e);
        match (le, re) {
            (Some(le), Some(re)) if le.same_content(re) => return Some(re),
            (None, None) => {}
            _ => {
                if let Some(oe) = oe {
                    return Some(oe);
                }
            }
        }
    })
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
        let (c, x, a_mine, a_theirs) = (
            e("c", "mine"),
            e("x", "1"),
            e("a", "mine"),
            e("a", "theirs"),
        );
        let mut ours: Changes = BTreeMap::new();
        ours.insert("c", Some(&c));
        ours.insert("x", Some(&x));
        assert!(overlap(&seen, &now, &ours).is_empty());
        let merged = apply(&now, &ours);
        assert_eq!(
            merged.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["a", "c", "d", "x"]
        );
        assert_eq!(merged["a"].hash, e("a", "theirs").hash);
        // We also change a: overlap; unless we wrote the very same bytes.
        ours.insert("a", Some(&a_mine));
        assert_eq!(overlap(&seen, &now, &ours), vec!["a"]);
        ours.insert("a", Some(&a_theirs));
        assert!(overlap(&seen, &now, &ours).is_empty());
        // Deleting what they deleted is no overlap; deleting what they
        // changed is.
        ours.insert("b", None);
        assert!(overlap(&seen, &now, &ours).is_empty());
        ours.insert("d", None);
        assert_eq!(overlap(&seen, &now, &ours), vec!["d"]);
    }
}
