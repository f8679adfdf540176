//! `pqsync status`: what differs, without moving anything.

use anyhow::Result;
use pqsync_core::{Engine, SyncOptions};

use super::Session;
use crate::cli::StatusArgs;
use crate::printer::bytes;
use crate::progress::CliReporter;
use crate::ExitStatus;

/// Compares DIR with its remote and prints the differences.
pub async fn run(a: &StatusArgs, s: &Session) -> Result<ExitStatus> {
    let printer = s.printer;
    let local = super::local_tree(&a.dir, true)?;
    let url = super::resolve_remote(a.remote.as_deref(), &local)?;
    let remote = s.parse_remote(&url)?;
    let opts = SyncOptions::default().with_selection(super::selection(&a.select)?);
    let remote = s.open_remote(&remote, &a.remote_flags, false, &opts.congestion)?;
    let url = remote.url().to_string();
    let reporter = CliReporter::new(printer);
    let engine = Engine::sync(local, remote, opts).with_reporter(reporter.clone());
    let report = engine.status().await;
    reporter.finish();
    let report = report?;
    for w in &report.warnings {
        printer.warn(w);
    }
    printer.document(&report);
    let d = &report.diff;
    printer.info(&format!("status of {} against {url}", a.dir.display()));
    for e in &d.to_upload {
        printer.info(&format!(
            "  upload            {} ({})",
            e.path,
            bytes(e.size)
        ));
    }
    for e in &d.to_download {
        printer.info(&format!(
            "  download          {} ({})",
            e.path,
            bytes(e.size)
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
            d.unchanged_count, report.requests
        ));
    } else {
        printer.info(&format!(
            "{} to upload, {} to download, {} deleted locally, {} deleted remotely, {} conflicts, {} unchanged; {} request(s)",
            d.to_upload.len(),
            d.to_download.len(),
            d.deleted_locally.len(),
            d.deleted_remotely.len(),
            d.conflicts.len(),
            d.unchanged_count,
            report.requests
        ));
    }
    if !report.ignored.is_empty() {
        for p in &report.ignored {
            printer.detail(&format!("  ignored  {p}"));
        }
        printer.info(&format!(
            "{} path(s) ignored, as ParqueDB ignores them{}",
            report.ignored.len(),
            if printer.is_verbose() {
                ""
            } else {
                " (-v lists them)"
            }
        ));
    }
    if a.exit_code && !report.is_synced {
        return Ok(ExitStatus::Failure);
    }
    Ok(ExitStatus::Success)
}
