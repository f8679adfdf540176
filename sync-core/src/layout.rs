//! Every rule pqsync applies to ParqueDB paths, in one place: what is never
//! synced, where the manifests and pqsync's own state live, which namespace a
//! file belongs to, what an event segment is called, and a file's content
//! type.
//!
//! pqsync syncs exactly the files ParqueDB's engine syncs: ParqueDB skips a
//! path whose whole relative path *starts with* `_meta/manifest.json`,
//! `_meta/locks`, `.git`, `.DS_Store` or `node_modules` (a string prefix, so
//! also `.github/` and `node_modules_backup/`, but not `data/.DS_Store`,
//! `*.lock` or `*.tmp*` below the top level). pqsync also never syncs its own
//! files: its state directory `_meta/.pqsync` and its temporary download
//! files (`.NAME.pqsync.tmp-PID-RAND`).

/// Where the sync manifest lives, relative to a tree's root.
pub const MANIFEST_PATH: &str = "_meta/manifest.json";

/// pqsync's private state inside a tree (a directory's stat cache, bases and
/// journals; a remote's capability cache and lease); never synced.
pub const STATE_DIR: &str = "_meta/.pqsync";

/// Where the event segment manifest may be, in order of preference.
pub const EVENT_MANIFESTS: [&str; 2] = ["events/_manifest.json", "events/manifest.json"];

/// The prefixes ParqueDB's engine skips, tested against the whole path.
const PARQUEDB_IGNORED: &[&str] = &[
    MANIFEST_PATH,
    "_meta/locks",
    ".git",
    ".DS_Store",
    "node_modules",
];

/// The marker in the names of pqsync's temporary download files.
pub(crate) const TEMP_MARKER: &str = ".pqsync.tmp-";

/// Whether a relative, `/`-separated path is excluded from syncing: by
/// ParqueDB's prefix rule, or as one of pqsync's own files.
pub fn is_ignored(path: &str) -> bool {
    PARQUEDB_IGNORED.iter().any(|p| path.starts_with(p)) || is_own(path)
}

/// Whether a path is one of pqsync's own: its state directory or a
/// temporary download file (`.NAME.pqsync.tmp-PID-RAND`, a name no user
/// file has).
pub fn is_own(path: &str) -> bool {
    path == STATE_DIR
        || path
            .strip_prefix(STATE_DIR)
            .is_some_and(|rest| rest.starts_with('/'))
        || path
            .rsplit('/')
            .next()
            .is_some_and(|name| name.starts_with('.') && name.contains(TEMP_MARKER))
}

/// The shard of `count` that `path` falls in when a run is split across
/// machines: the first eight bytes of the BLAKE3 of its UTF-8 bytes, as a
/// little-endian integer, modulo `count`. The same on every machine and in
/// every version, so records written by one pqsync are merged by another.
pub fn shard_of(path: &str, count: u32) -> u32 {
    let h = blake3::hash(path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(count.max(1))) as u32
}

/// Whether everything under the directory `dir` is excluded, so a walk
/// need not enter it.
pub fn is_ignored_dir(dir: &str) -> bool {
    is_ignored(&format!("{dir}/"))
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
    segment_seq(path).is_some()
}

/// The seq of an event segment file (`events/seg-0042.parquet` → 42).
pub fn segment_seq(path: &str) -> Option<u64> {
    if !path.starts_with("events/") {
        return None;
    }
    path.rsplit('/')
        .next()
        .and_then(|n| n.strip_prefix("seg-"))
        .and_then(|n| n.strip_suffix(".parquet"))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
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
    fn ignores_as_parquedb_does_plus_its_own_files() {
        for p in [
            "_meta/manifest.json",
            "_meta/manifest.json.bak",
            "_meta/locks/writer",
            "_meta/.pqsync/statcache",
            ".git/HEAD",
            ".github/workflows/ci.yml",
            ".gitignore",
            ".DS_Store",
            "node_modules/x/y.js",
            "node_modules_backup/x",
            "data/users/.data.parquet.pqsync.tmp-1234-0000abcd",
        ] {
            assert!(is_ignored(p), "{p} should be ignored");
        }
        for p in [
            "_meta/schema.json",
            "_meta/.pqsyncx",
            "data/.DS_Store",
            "sub/.git/HEAD",
            "data/my.gitignore",
            "data/node_modules_backup/x",
            "data/node_modules/x",
            "data/users/data.parquet",
            "data/users/data.parquet.tmp",
            "data/part.tmpl.parquet",
            "yarn.lock",
            "events/writer.lock",
            "data/x.pqsync.tmp-1",
        ] {
            assert!(!is_ignored(p), "{p} should be synced");
        }
        assert!(is_ignored_dir(".git") && is_ignored_dir("node_modules_backup"));
        assert!(is_ignored_dir("_meta/.pqsync") && is_ignored_dir("_meta/locks"));
        assert!(!is_ignored_dir("_meta") && !is_ignored_dir("data/.git"));
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
