//! `pqsync list`: the files of a database directory or remote.

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use pqsync_core::{Congestion, FileEntry, LocalTree, Manifest};

use crate::cli::{GlobalArgs, ListArgs, ListFormat};
use crate::printer::Printer;
use crate::ExitStatus;

/// Lists a directory (from a scan, with the stat cache) or a remote (from
/// its manifest: one request), filtered by the selection flags.
pub async fn run(args: &ListArgs, g: &GlobalArgs, printer: &Printer) -> Result<ExitStatus> {
    let target = args.target.clone().unwrap_or_else(|| ".".into());
    let opts = super::sync_options(pqsync_core::Mode::Push, g)?;
    let files = if target.contains("://") {
        let remote = super::open_remote(&target, g, false, &Arc::new(Congestion::default()))?;
        match remote.read_manifest().await? {
            Some(r) => r.manifest.files,
            None => {
                return Err(pqsync_core::Error::NotManaged {
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
        .filter(|e| opts.selection.contains(&e.path))
        .collect();
    let mut out = std::io::stdout().lock();
    match args.format {
        ListFormat::Paths if !printer.json => {
            for e in &entries {
                writeln!(out, "{}", e.path)?;
            }
        }
        _ => {
            serde_json::to_writer_pretty(&mut out, &entries)?;
            writeln!(out)?;
        }
    }
    Ok(ExitStatus::Success)
}
