//! Paths that are never synced.
//!
//! ParqueDB skips `_meta/manifest.json`, `_meta/locks`, `.git`, `.DS_Store`,
//! `node_modules` and temporary files (`*.tmp*`, `*.lock`). ParqueDB matches
//! by string prefix, which also skips `.github`; pqsync matches whole path
//! components instead. pqsync's own state directory, `_meta/.pqsync`, is never
//! synced either.

/// Directory names skipped wherever they appear.
const IGNORED_NAMES: &[&str] = &[".git", ".DS_Store", "node_modules"];

/// Whether a relative, `/`-separated path is excluded from syncing.
pub fn is_ignored(path: &str) -> bool {
    if path == crate::manifest::MANIFEST_PATH {
        return true;
    }
    let mut comps = path.split('/');
    let first = comps.next().unwrap_or("");
    if first == "_meta" {
        if let Some(second) = path.split('/').nth(1) {
            if second == "locks" || second == ".pqsync" {
                return true;
            }
        }
    }
    path.split('/').any(is_ignored_name)
}

/// Whether a single path component is excluded wherever it appears.
pub fn is_ignored_name(name: &str) -> bool {
    IGNORED_NAMES.contains(&name) || name.contains(".tmp") || name.ends_with(".lock")
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
}
