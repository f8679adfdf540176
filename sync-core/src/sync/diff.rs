//! The 3-way diff.
//!
//! Inputs are the local manifest, the remote manifest and the **base**: the
//! manifest both sides agreed on after the last successful sync. Each path
//! falls into exactly one [`Change`]:
//!
//! | local vs base | remote vs base | result |
//! |---|---|---|
//! | any | any, and local == remote | `Unchanged` (or nothing if absent on both) |
//! | same | changed, present | `Download` |
//! | same | deleted | `DeleteLocal` |
//! | changed, present | same | `Upload` |
//! | deleted | same | `DeleteRemote` |
//! | changed | changed differently | `Conflict` |
//! | no base entry: local only | | `Upload` |
//! | no base entry: remote only | | `Download` |
//! | no base entry: both, different | | `Conflict` |
//!
//! "Same" means same content (algorithm, size and hash). Identical content on
//! both sides is never a conflict. Without a base (first sync) no deletion is
//! ever inferred, since a path missing from one side reads as "added on the
//! other".

use std::collections::BTreeMap;

use serde::Serialize;

use crate::manifest::FileEntry;

/// Where one path stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// Same content on both sides.
    Unchanged,
    /// Changed or added locally only: send it.
    Upload,
    /// Changed or added remotely only: fetch it.
    Download,
    /// Deleted locally only: delete it remotely.
    DeleteRemote,
    /// Deleted remotely only: delete it locally.
    DeleteLocal,
    /// Changed differently on both sides.
    Conflict,
}

/// Which side a conflict should keep, as ParqueDB names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resolution {
    /// Keep the local version.
    KeepLocal,
    /// Keep the remote version.
    KeepRemote,
    /// Leave both alone for a person to decide.
    Manual,
}

impl std::fmt::Display for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Resolution::KeepLocal => "keep-local",
            Resolution::KeepRemote => "keep-remote",
            Resolution::Manual => "manual",
        })
    }
}

/// One path's diff. The entries are boxed: a first push of a million files
/// has a million diffs with one entry each, and three inline entries would
/// more than double what they cost.
#[derive(Clone, Debug, PartialEq)]
pub struct PathDiff {
    /// The path.
    pub path: String,
    /// Its bucket.
    pub change: Change,
    /// The local entry, if present.
    pub local: Option<Box<FileEntry>>,
    /// The remote entry, if present.
    pub remote: Option<Box<FileEntry>>,
    /// The base entry, if present.
    pub base: Option<Box<FileEntry>>,
}

impl PathDiff {
    /// For a conflict, ParqueDB's `suggestedResolution`: `manual` when the
    /// two modification times are less than a second apart (or one is not
    /// a time), else the newer side. A side that still has the file beats
    /// a side that deleted it.
    pub fn suggested_resolution(&self) -> Resolution {
        match (&self.local, &self.remote) {
            (Some(_), None) => Resolution::KeepLocal,
            (None, Some(_)) => Resolution::KeepRemote,
            (Some(l), Some(r)) => match (l.modified(), r.modified()) {
                (Some(lt), Some(rt)) => match (lt - rt).num_milliseconds() {
                    gap if gap.abs() < 1000 => Resolution::Manual,
                    gap if gap > 0 => Resolution::KeepLocal,
                    _ => Resolution::KeepRemote,
                },
                _ => Resolution::Manual,
            },
            (None, None) => Resolution::Manual,
        }
    }

    /// What the `newest` strategy decides, as ParqueDB's does: the side
    /// modified later, a tie going to local. A side that still has the file
    /// beats a side that deleted it; a time that is not one leaves it to a
    /// person.
    pub fn newest(&self) -> Resolution {
        match (&self.local, &self.remote) {
            (Some(_), None) => Resolution::KeepLocal,
            (None, Some(_)) => Resolution::KeepRemote,
            (Some(l), Some(r)) => match (l.modified(), r.modified()) {
                (Some(lt), Some(rt)) if lt >= rt => Resolution::KeepLocal,
                (Some(_), Some(_)) => Resolution::KeepRemote,
                _ => Resolution::Manual,
            },
            (None, None) => Resolution::Manual,
        }
    }
}

fn same(a: Option<&FileEntry>, b: Option<&FileEntry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_content(b),
        _ => false,
    }
}

/// Classifies one path. Returns `None` when it is absent on both sides.
pub fn classify(
    local: Option<&FileEntry>,
    remote: Option<&FileEntry>,
    base: Option<&FileEntry>,
) -> Option<Change> {
    if local.is_none() && remote.is_none() {
        return None;
    }
    if same(local, remote) {
        return Some(Change::Unchanged);
    }
    let Some(base) = base else {
        return Some(match (local, remote) {
            (Some(_), None) => Change::Upload,
            (None, Some(_)) => Change::Download,
            _ => Change::Conflict,
        });
    };
    let local_same = same(local, Some(base));
    let remote_same = same(remote, Some(base));
    Some(match (local_same, remote_same) {
        (true, false) if remote.is_some() => Change::Download,
        (true, false) => Change::DeleteLocal,
        (false, true) if local.is_some() => Change::Upload,
        (false, true) => Change::DeleteRemote,
        // Both changed (and differently, since local != remote).
        _ => Change::Conflict,
    })
}

/// What [`diff3`] found: the paths that differ, with their entries, and the
/// paths that are the same on both sides (only their names: on a tree that
/// is in sync, that is almost every path, and carrying three entries for
/// each would multiply the memory a status needs).
#[derive(Clone, Debug, Default)]
pub struct Diff3 {
    /// Paths to act on, sorted by path.
    pub changed: Vec<PathDiff>,
    /// Paths identical on both sides, sorted.
    pub unchanged: Vec<String>,
}

/// Diffs three manifests' file maps in one merge pass over the sorted
/// local and remote paths.
pub fn diff3(
    local: &BTreeMap<String, FileEntry>,
    remote: &BTreeMap<String, FileEntry>,
    base: Option<&BTreeMap<String, FileEntry>>,
) -> Diff3 {
    let mut out = Diff3::default();
    let mut li = local.iter().peekable();
    let mut ri = remote.iter().peekable();
    loop {
        let (path, l, r) = match (li.peek(), ri.peek()) {
            (None, None) => break,
            (Some((lp, _)), Some((rp, _))) if lp == rp => {
                let (p, l) = li.next().expect("peeked");
                let (_, r) = ri.next().expect("peeked");
                (p, Some(l), Some(r))
            }
            (Some((lp, _)), Some((rp, _))) if lp < rp => {
                let (p, l) = li.next().expect("peeked");
                (p, Some(l), None)
            }
            (Some(_), None) => {
                let (p, l) = li.next().expect("peeked");
                (p, Some(l), None)
            }
            _ => {
                let (p, r) = ri.next().expect("peeked");
                (p, None, Some(r))
            }
        };
        let b = base.and_then(|b| b.get(path));
        match classify(l, r, b) {
            Some(Change::Unchanged) => out.unchanged.push(path.clone()),
            Some(change) => out.changed.push(PathDiff {
                path: path.clone(),
                change,
                local: l.cloned().map(Box::new),
                remote: r.cloned().map(Box::new),
                base: b.cloned().map(Box::new),
            }),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HashAlgorithm;

    fn e(content: &str, ts: &str) -> FileEntry {
        FileEntry {
            path: "p".into(),
            size: content.len() as u64,
            hash: HashAlgorithm::Blake3.digest(content.as_bytes()),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: ts.into(),
            etag: None,
            extra: None,
            content_type: None,
        }
    }

    const T1: &str = "2026-01-01T00:00:00.000Z";
    const T2: &str = "2026-01-02T00:00:00.000Z";

    /// Every cell of the truth table: (local, remote, base) → change, where
    /// each side is absent (`-`) or one of the contents A, B, C.
    #[test]
    fn truth_table() {
        use Change::*;
        let a = e("A", T1);
        let b = e("B", T2);
        let c = e("C", T2);
        let cell = |x: &str| match x {
            "-" => None,
            "A" => Some(&a),
            "B" => Some(&b),
            "C" => Some(&c),
            _ => unreachable!(),
        };
        let table: &[(&str, &str, &str, Option<Change>)] = &[
            // No base entry.
            ("-", "-", "-", None),
            ("A", "-", "-", Some(Upload)),
            ("-", "A", "-", Some(Download)),
            ("A", "A", "-", Some(Unchanged)),
            ("A", "B", "-", Some(Conflict)),
            // Base present, nothing changed.
            ("A", "A", "A", Some(Unchanged)),
            // One side changed.
            ("B", "A", "A", Some(Upload)),
            ("A", "B", "A", Some(Download)),
            ("-", "A", "A", Some(DeleteRemote)),
            ("A", "-", "A", Some(DeleteLocal)),
            // Both changed the same way: never a conflict.
            ("B", "B", "A", Some(Unchanged)),
            ("-", "-", "A", None),
            // Both changed differently.
            ("B", "C", "A", Some(Conflict)),
            ("-", "B", "A", Some(Conflict)),
            ("B", "-", "A", Some(Conflict)),
        ];
        for (l, r, base, want) in table {
            assert_eq!(
                classify(cell(l), cell(r), cell(base)),
                *want,
                "local={l} remote={r} base={base}"
            );
        }
    }

    #[test]
    fn different_algorithms_are_not_equal() {
        let a = e("A", T1);
        let mut a2 = a.clone();
        a2.hash_algorithm = HashAlgorithm::Sha256;
        a2.hash = HashAlgorithm::Sha256.digest(b"A");
        assert_eq!(classify(Some(&a), Some(&a2), None), Some(Change::Conflict));
    }

    #[test]
    fn suggestions_follow_timestamps_and_prefer_existing() {
        let old = e("A", T1);
        let new = e("B", T2);
        let d = |l: Option<&FileEntry>, r: Option<&FileEntry>| PathDiff {
            path: "p".into(),
            change: Change::Conflict,
            local: l.cloned().map(Box::new),
            remote: r.cloned().map(Box::new),
            base: None,
        };
        assert_eq!(
            d(Some(&new), Some(&old)).suggested_resolution(),
            Resolution::KeepLocal
        );
        assert_eq!(
            d(Some(&old), Some(&new)).suggested_resolution(),
            Resolution::KeepRemote
        );
        assert_eq!(
            d(Some(&old), Some(&e("C", T1))).suggested_resolution(),
            Resolution::Manual
        );
        // ParqueDB's rules: less than a second apart is left to a person;
        // `newest` gives a tie (and any later local time) to local.
        let near = e("D", "2026-01-01T00:00:00.999Z");
        let far = e("E", "2026-01-01T00:00:01.000Z");
        assert_eq!(
            d(Some(&near), Some(&old)).suggested_resolution(),
            Resolution::Manual
        );
        assert_eq!(
            d(Some(&old), Some(&far)).suggested_resolution(),
            Resolution::KeepRemote
        );
        assert_eq!(d(Some(&near), Some(&old)).newest(), Resolution::KeepLocal);
        assert_eq!(d(Some(&old), Some(&near)).newest(), Resolution::KeepRemote);
        assert_eq!(
            d(Some(&old), Some(&e("C", T1))).newest(),
            Resolution::KeepLocal
        );
        assert_eq!(
            d(None, Some(&old)).suggested_resolution(),
            Resolution::KeepRemote
        );
        assert_eq!(
            d(Some(&old), None).suggested_resolution(),
            Resolution::KeepLocal
        );
    }

    #[test]
    fn first_sync_infers_no_deletion() {
        let mut local = BTreeMap::new();
        let mut remote = BTreeMap::new();
        local.insert("only-local".to_string(), e("L", T1));
        remote.insert("only-remote".to_string(), e("R", T1));
        local.insert("both".to_string(), e("B", T1));
        remote.insert("both".to_string(), e("B", T1));
        let d = diff3(&local, &remote, None);
        assert_eq!(d.unchanged, ["both"]);
        let changes: Vec<_> = d
            .changed
            .iter()
            .map(|p| (p.path.as_str(), p.change))
            .collect();
        assert_eq!(
            changes,
            vec![
                ("only-local", Change::Upload),
                ("only-remote", Change::Download)
            ]
        );
    }
}
