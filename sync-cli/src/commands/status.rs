//! `pqsync status`: what differs, without moving anything.

use anyhow::Result;
use pqsync_core::{Engine, Mode};

use crate::cli::{GlobalArgs, StatusArgs};
use crate::printer::{human_bytes, Printer};
use crate::progress::CliReporter;
use crate::ExitStatus;

/// Compares DIR with its remote and prints the differences.
pub async fn run(args: &StatusArgs, g: &GlobalArgs, printer: &Printer) -> Result<ExitStatus> {
    let dir = &args.tree.dir;
    let url = super::resolve_remote(args.tree.remote.as_deref(), dir)?;
    let local = super::local_tree(dir, true)?;
    let opts = super::sync_options(Mode::Sync, g)?;
    let remote = super::open_remote(&url, g, false, &opts.congestion)?;
    let engine = Engine::new(local, remote, opts)?;
    let reporter = CliReporter::new(printer);
    let report = engine.status_with(&reporter).await;
    reporter.finish();
    let report = report?;
    for w in &report.warnings {
        printer.warn(w);
    }
    printer.json(&report);
    if !printer.json {
        let d = &report.diff;
        printer.info(&format!("status of {} against {url}", dir.display()));
        for e in &d.to_upload {
            printer.info(&format!(
                "  upload            {} ({})",
                e.path,
                human_bytes(e.size)
            ));
        }
        for e in &d.to_download {
            printer.info(&format!(
                "  download          {} ({})",
                e.path,
                human_bytes(e.size)
            ));
        }
        for p in &d.deleted_locally {
            printer.info(&format!("  deleted locally   {p}"));
        }
        for p in &d.deleted_remotely {
            printer.info(&format!("  deleted remotely  {p}"));
        }
        for c in &d.conflicts {
            printer.info(&format!(
                "  conflict          {} (suggested: {})",
                c.path, c.suggested_resolution
            ));
        }
        for i in &report.interrupted {
            printer.info(&format!(
                "  interrupted push  {i} (the next push continues it)"
            ));
        }
        for p in &report.resumable {
            printer.info(&format!(
                "  interrupted push  {p} (sent, not yet committed; push to finish)"
            ));
        }
        if report.is_synced {
            printer.info(&format!(
                "in sync: {} files unchanged; {} request(s)",
                d.unchanged.len(),
                report.requests
            ));
        } else {
            printer.info(&format!(
                "{} to upload, {} to download, {} deleted locally, {} deleted remotely, {} conflicts, {} unchanged; {} request(s)",
                d.to_upload.len(),
                d.to_download.len(),
                d.deleted_locally.len(),
                d.deleted_remotely.len(),
                d.conflicts.len(),
                d.unchanged.len(),
                report.requests
            ));
        }
    }
    if args.exit_code && !report.is_synced {
        return Ok(ExitStatus::Failure);
    }
    Ok(ExitStatus::Success)
}
