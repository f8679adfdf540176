//! Every rule pqsync applies to ParqueDB paths, in one place: what is never
//! synced, where the manifests and pqsync's own state live, which namespace a
//! file belongs to, what an event segment is called, and a file's content
//! type.
//!
//! ParqueDB skips `_meta/manifest.json`, `_meta/locks`, `.git`, `.DS_Store`,
//! `node_modules` and temporary files (`*.tmp*`, `*.lock`). ParqueDB matches
//! by string prefix, which also skips `.github`; pqsync matches whole path
//! components instead. pqsync's own state directory, `_meta/.pqsync`, is never
//! synced either.

/// Where the sync manifest lives, relative to a tree's root.
pub const MANIFEST_PATH: &str = "_meta/manifest.json";

/// pqsync's private state inside a tree (a directory's stat cache, bases and
/// journals; a remote's capability cache and lease); never synced.
pub const STATE_DIR: &str = "_meta/.pqsync";

/// Where the event segment manifest may be, in order of preference.
pub const EVENT_MANIFESTS: [&str; 2] = ["events/_manifest.json", "events/manifest.json"];

/// Directory names skipped wherever they appear.
const IGNORED_NAMES: &[&str] = &[".git", ".DS_Store", "node_modules"];

/// Whether a relative, `/`-separated path is excluded from syncing.
pub fn is_ignored(path: &str) -> bool {
    if path == MANIFEST_PATH {
        return true;
    }
    let mut comps = path.split('/');
    if comps.next() == Some("_meta") && matches!(comps.next(), Some("locks" | ".pqsync")) {
        return true;
    }
    path.split('/').any(is_ignored_name)
}

/// Whether a single path component is excluded wherever it appears.
pub fn is_ignored_name(name: &str) -> bool {
    IGNORED_NAMES.contains(&name) || name.contains(".tmp") || name.ends_with(".lock")
}

/// Whether a path is a nested manifest (`manifest.json` or `_manifest.json`
/// below the root), which must be written after the files of its subtree.
pub fn is_nested_manifest(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == "manifest.json" || name == "_manifest.json"
}

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

/// The glob patterns that select a namespace's files: `data/{ns}/**`, its
/// two relationship files and `indexes/*/{ns}.*`.
pub fn namespace_globs(ns: &str) -> [String; 4] {
    [
        format!("data/{ns}/**"),
        format!("rels/forward/{ns}.parquet"),
        format!("rels/reverse/{ns}.parquet"),
        format!("indexes/*/{ns}.*"),
    ]
}

/// Whether a path is a Parquet file.
pub fn is_parquet(path: &str) -> bool {
    path.ends_with(".parquet")
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

/// The active event log, rewritten in place.
pub const CURRENT_EVENTS: &str = "events/current.parquet";

/// The bloom filter of a namespace.
pub fn bloom_path(ns: &str) -> String {
    format!("indexes/bloom/{ns}.bloom")
}

/// The content types ParqueDB writes; entries that carry one of them share
/// it rather than allocating a copy.
pub const CONTENT_TYPES: [&str; 6] = [
    "application/vnd.apache.parquet",
    "application/json",
    "application/x-ndjson",
    "text/csv",
    "text/plain",
    "application/octet-stream",
];

/// ParqueDB's content type for a path: the text after the last `.` of the
/// whole path (the whole path when it has none), lowercased, looked up in
/// ParqueDB's table. So `.ndjson` is `application/octet-stream`, a
/// top-level file named `json` is `application/json`, and a dot in a folder
/// name counts.
pub fn content_type_for(path: &str) -> &'static str {
    let ext = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    match ext.as_str() {
        "parquet" => CONTENT_TYPES[0],
        "json" => CONTENT_TYPES[1],
        "jsonl" => CONTENT_TYPES[2],
        "csv" => CONTENT_TYPES[3],
        "txt" => CONTENT_TYPES[4],
        _ => CONTENT_TYPES[5],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_by_component() {
        for p in [
            "_meta/manifest.json",
            "_meta/locks/writer",
            "_meta/.pqsync/statcache",
            ".git/HEAD",
            "data/.DS_Store",
            "node_modules/x/y.js",
            "data/users/data.parquet.tmp",
            "data/users/.data.parquet.pqsync.tmp-1234",
            "events/writer.lock",
        ] {
            assert!(is_ignored(p), "{p} should be ignored");
        }
        for p in [
            ".github/workflows/ci.yml",
            "_meta/schema.json",
            "_meta/manifest.json.bak",
            "data/my.gitignore",
            "data/node_modules_backup/x",
            "data/users/data.parquet",
        ] {
            assert!(!is_ignored(p), "{p} should be synced");
        }
    }

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
            content_type_for("X.PARQUET"),
            "application/vnd.apache.parquet"
        );
        // ParqueDB's table, as ParqueDB applies it.
        assert_eq!(content_type_for("x.ndjson"), "application/octet-stream");
        assert_eq!(content_type_for("json"), "application/json");
        assert_eq!(content_type_for("data/json"), "application/octet-stream");
        assert_eq!(content_type_for("v1.2/readme"), "application/octet-stream");
        assert_eq!(
            content_type_for("indexes/bloom/u.bloom"),
            "application/octet-stream"
        );
    }
}
