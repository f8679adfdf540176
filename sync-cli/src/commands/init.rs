//! `pqsync init`: create a database's manifest, or rebuild it.

use anyhow::Result;
use pqsync_core::{rebuild_local, rebuild_remote, Manifest, RebuildReport};

use super::Session;
use crate::cli::InitArgs;
use crate::printer::{bytes, Printer};
use crate::{ExitStatus, UsageError};

/// Writes a manifest built from the files actually present. Without
/// `--rebuild-manifest`, an existing manifest is left alone.
pub async fn run(args: &InitArgs, s: &Session) -> Result<ExitStatus> {
    let alg = args.hash.map(Into::into);
    let report = match &args.remote {
        Some(url) => {
            let remote = s.parse_remote(url)?;
            let congestion = std::sync::Arc::new(Default::default());
            let remote = s.open_remote(&remote, &args.remote_flags, false, &congestion)?;
            if !args.rebuild_manifest && exists(remote.read_manifest().await.map(|r| r.is_some())) {
                return Err(already(url).into());
            }
            let concurrency = usize::from(args.concurrency);
            rebuild_remote(&remote, alg, concurrency, args.dry_run).await?
        }
        None => {
            let dir = super::local_tree(&args.dir, true)?;
            if !args.rebuild_manifest
                && exists(dir.read_manifest().map(|m: Option<Manifest>| m.is_some()))
            {
                return Err(already(&args.dir.display().to_string()).into());
            }
            rebuild_local(&dir, alg, args.dry_run).await?
        }
    };
    print(&report, args.dry_run, s.printer);
    Ok(ExitStatus::Success)
}

/// Whether a manifest is there; an unreadable one counts as there.
fn exists(found: pqsync_core::Result<bool>) -> bool {
    found.unwrap_or(true)
}

fn already(target: &str) -> UsageError {
    UsageError(format!(
        "{target} already has a manifest; pass --rebuild-manifest to replace it with one built from the files there"
    ))
}

fn print(r: &RebuildReport, dry_run: bool, printer: &Printer) {
    printer.document(r);
    if printer.is_json() {
        return;
    }
    if printer.is_verbose() {
        for p in &r.added {
            printer.info(&format!("  added    {p}"));
        }
        for p in &r.changed {
            printer.info(&format!("  changed  {p}"));
        }
        for p in &r.removed {
            printer.info(&format!("  removed  {p}"));
        }
    }
    printer.info(&format!(
        "manifest of {} {}: {} files, {}; {} hashed ({}), {} from object metadata; {} request(s)",
        r.target,
        if dry_run {
            "built (dry run, not written)"
        } else if r.previous_files.is_some() {
            "rebuilt"
        } else {
            "written"
        },
        r.files,
        bytes(r.bytes),
        r.hashed,
        bytes(r.hashed_bytes),
        r.from_metadata,
        r.requests
    ));
    match r.previous_files {
        Some(n) => printer.info(&format!(
            "compared with the old manifest ({n} files): {} added, {} changed, {} removed",
            r.added.len(),
            r.changed.len(),
            r.removed.len()
        )),
        None => printer.info("there was no readable manifest before"),
    }
    if let Some(b) = &r.backup {
        printer.info(&format!("the old manifest is saved as {b}"));
    }
    if !r.left_out.is_empty() {
        printer.warn(&format!(
            "left out {} object(s) a push is deleting (its deletion was announced): {}",
            r.left_out.len(),
            r.left_out.join(", ")
        ));
    }
}
