//! `pqsync verify`: the backup guide's checks on a directory or remote.

use anyhow::{Context, Result};
use pqsync_core::{verify, Engine, Repair, Severity, SyncOptions, SyncResult, VerifyOptions};

use super::Session;
use crate::cli::{VerifyArgs, VerifyFormat};
use crate::printer::bytes;
use crate::{ExitStatus, UsageError};

/// Verifies the target; exit status 1 when a critical check failed.
pub async fn run(args: &VerifyArgs, s: &Session) -> Result<ExitStatus> {
    let printer = s.printer;
    let target = args.target.clone().unwrap_or_else(|| ".".into());
    let tree = match super::repo::snapshot_target(
        s,
        &target,
        args.at.as_deref(),
        &args.remote_flags,
        &args.password,
    )
    .await?
    {
        Some(t) => t,
        None => s.open_target(&target, &args.remote_flags)?,
    };
    let compare = args
        .compare
        .as_deref()
        .map(|c| s.open_target(c, &args.remote_flags))
        .transpose()?;
    let opts = VerifyOptions::default()
        .with_quick(args.quick)
        .with_concurrency(usize::from(args.concurrency))
        .with_detailed(args.format == VerifyFormat::Detailed);
    let report = verify(tree.as_ref(), compare.as_deref(), &opts).await?;
    if let Some(path) = &args.output {
        let mut body = serde_json::to_vec_pretty(&report)?;
        body.push(b'\n');
        std::fs::write(path, body)
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    let repaired = if args.repair && !report.passed {
        Some(repair(args, &target, s).await?)
    } else {
        None
    };
    match &repaired {
        Some(r) => {
            let mut doc = serde_json::to_value(&report)?;
            doc["repair"] = serde_json::to_value(r)?;
            printer.document(&doc);
        }
        None => printer.document(&report),
    }
    if printer.mode() == crate::printer::Mode::Quiet {
        // -q keeps only what failed.
        for f in &report.errors {
            printer.error(&format!("{}: {} [{}]", f.path, f.message, f.check));
        }
    }
    if !printer.is_json() {
        printer.info(&format!(
            "verify {}{}{}",
            report.target,
            report
                .compare
                .as_deref()
                .map(|c| format!(" against {c}"))
                .unwrap_or_default(),
            if report.quick { " (quick)" } else { "" }
        ));
        for c in &report.checks {
            let mark = match (c.passed, c.severity) {
                (true, _) => "ok  ",
                (false, Severity::Critical) => "FAIL",
                (false, Severity::Warning) => "warn",
            };
            printer.info(&format!("  {mark}  {:<26}{}", c.name, c.message));
        }
        if !report.errors.is_empty() {
            printer.info("errors:");
            for f in &report.errors {
                printer.info(&format!("  {}: {} [{}]", f.path, f.message, f.check));
            }
        }
        if !report.warnings.is_empty() {
            printer.info("warnings:");
            for f in &report.warnings {
                let path = if f.path.is_empty() { "-" } else { &f.path };
                printer.info(&format!("  {path}: {} [{}]", f.message, f.check));
            }
        }
        if !report.files.is_empty() {
            printer.info("files:");
            for f in &report.files {
                printer.info(&format!(
                    "  {}  {}  {}{}",
                    if f.ok { "ok  " } else { "FAIL" },
                    f.path,
                    bytes(f.size),
                    f.rows.map(|r| format!(", {r} rows")).unwrap_or_default()
                ));
            }
        }
        let s = &report.summary;
        let failed = report
            .failed()
            .filter(|c| c.severity == Severity::Critical)
            .count();
        printer.info(&format!(
            "{}: {} checks, {} errors, {} warnings; {} files, {} hashed in {:.2} s; {} request(s)",
            if report.passed {
                "passed".to_string()
            } else {
                format!("FAILED ({failed} critical)")
            },
            report.checks.len(),
            report.errors.len(),
            report.warnings.len(),
            s.files,
            bytes(s.hashed_bytes),
            s.elapsed_ms as f64 / 1000.0,
            s.requests
        ));
        if let Some(path) = &args.output {
            printer.info(&format!("report written to {}", path.display()));
        }
    }
    if let Some(r) = &repaired {
        for d in &r.repaired {
            printer.info(&format!(
                "repaired: {} ({} on the remote)",
                d.path, d.reason
            ));
        }
        for e in &r.errors {
            printer.error(&format!("{} ({}): {}", e.path, e.operation, e.message));
        }
        printer.info(&format!(
            "repair from {}: {} file(s) sent again, {}; run verify again to check",
            args.dir
                .as_ref()
                .map(|d| d.display().to_string())
                .unwrap_or_default(),
            r.uploaded.len(),
            if r.success { "done" } else { "incomplete" }
        ));
        return Ok(if r.success {
            ExitStatus::Success
        } else {
            ExitStatus::Failure
        });
    }
    Ok(if report.passed {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// `--repair`: a push from -d that looks for damaged objects (hashing every
/// one unless --quick) and sends them again.
async fn repair(args: &VerifyArgs, target: &str, s: &Session) -> Result<SyncResult> {
    if !pqsync_backends::looks_like_url(target) && !std::path::Path::new(target).is_dir() {
        return Err(UsageError(format!("{target} is not a directory or a remote")).into());
    }
    let dir = args.dir.as_ref().expect("clap requires -d with --repair");
    let opts = SyncOptions::default().with_repair(if args.quick {
        Repair::Listing
    } else {
        Repair::Checksum
    });
    let remote = s.parse_remote(target)?;
    let tree = s.open_remote(&remote, &args.remote_flags, false, &opts.congestion)?;
    let local = super::local_tree(dir, true)?;
    let engine = Engine::push(local, tree, opts);
    let plan = engine.plan().await?;
    Ok(engine.execute(plan).await?)
}
