//! `pqsync list`: the files of a database directory or remote.

use anyhow::Result;
use pqsync_core::{Congestion, Error, FileEntry, LocalTree, Manifest};
use serde_json::json;

use super::Session;
use crate::cli::{ListArgs, ListFormat};
use crate::ExitStatus;

/// Lists a directory (from a scan, with the stat cache) or a remote (from
/// its manifest: one request), filtered by the selection flags.
pub async fn run(a: &ListArgs, s: &Session) -> Result<ExitStatus> {
    let printer = s.printer;
    let target = a.target.clone().unwrap_or_else(|| ".".into());
    let selection = super::selection(&a.select)?;
    let files = if pqsync_backends::looks_like_url(&target) {
        let remote = s.parse_remote(&target)?;
        let congestion = std::sync::Arc::new(Congestion::default());
        let remote = s.open_remote(&remote, &a.remote_flags, false, &congestion)?;
        match remote.read_manifest().await? {
            Some(r) => r.manifest.files,
            None => {
                return Err(Error::NotManaged {
                    url: remote.url().to_string(),
                }
                .into())
            }
        }
    } else {
        let dir = super::local_tree(std::path::Path::new(&target), true)?;
        let alg = dir
            .read_manifest()?
            .as_ref()
            .and_then(Manifest::hash_algorithm)
            .unwrap_or_default();
        let scan = tokio::task::spawn_blocking(move || LocalTree::scan(&dir, alg)).await??;
        for w in &scan.warnings {
            printer.warn(w);
        }
        scan.files
    };
    let entries: Vec<&FileEntry> = files
        .values()
        .filter(|e| selection.contains(&e.path))
        .collect();
    for ns in selection.unmatched_namespaces(files.keys().map(String::as_str)) {
        printer.warn(&format!(
            "namespace {ns:?} matches no file (check the spelling)"
        ));
    }
    if printer.is_json() || matches!(a.format, ListFormat::Json) {
        printer.emit(&json!({ "files": entries, "count": entries.len() }));
        return Ok(ExitStatus::Success);
    }
    for e in &entries {
        printer.answer(&e.path);
    }
    Ok(ExitStatus::Success)
}
