//! `push`, `pull`, `sync` and `mirror`: the same engine on different trees.

use anyhow::Result;
use pqsync_core::{Engine, Mode, Plan, SyncResult};
use serde::Serialize;

use crate::cli::{GlobalArgs, MirrorArgs, TreeArgs};
use crate::printer::{human_bytes, Printer};
use crate::progress::CliReporter;
use crate::ExitStatus;

/// Push, pull or sync DIR with a remote.
pub async fn run(
    mode: Mode,
    t: &TreeArgs,
    g: &GlobalArgs,
    printer: &Printer,
) -> Result<ExitStatus> {
    let url = super::resolve_remote(t.remote.as_deref(), &t.dir)?;
    let local = super::local_tree(&t.dir, mode != Mode::Pull)?;
    let opts = super::sync_options(mode, g)?;
    let remote = super::open_remote(&url, g, mode != Mode::Pull && !g.dry_run, &opts.congestion)?;
    let (verb, arrow) = match mode {
        Mode::Push => ("push", "->"),
        Mode::Pull => ("pull", "<-"),
        _ => ("sync", "<->"),
    };
    let title = format!("{verb} {} {arrow} {}", t.dir.display(), remote.url());
    let engine = Engine::new(local, remote, opts)?;
    execute(&engine, &title, g, printer).await
}

/// Mirror one remote prefix onto another.
pub async fn mirror(m: &MirrorArgs, g: &GlobalArgs, printer: &Printer) -> Result<ExitStatus> {
    let opts = super::sync_options(Mode::Mirror, g)?;
    let src = super::open_remote(&m.source, g, false, &opts.congestion)?;
    let dst = super::open_remote(&m.destination, g, !g.dry_run, &opts.congestion)?;
    let title = format!("mirror {} -> {}", src.url(), dst.url());
    let engine = Engine::new(src, dst, opts)?;
    execute(&engine, &title, g, printer).await
}

/// The `--dry-run --json` document.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PlanJson<'a> {
    dry_run: bool,
    mode: Mode,
    strategy: pqsync_core::Strategy,
    hash_algorithm: pqsync_core::HashAlgorithm,
    to_upload: &'a [pqsync_core::FileEntry],
    to_download: &'a [pqsync_core::FileEntry],
    to_delete_remote: &'a [String],
    to_delete_local: &'a [String],
    conflicts: &'a [pqsync_core::Conflict],
    held_back: &'a [pqsync_core::plan::HeldBack],
    resumable: Vec<&'a str>,
    interrupted: &'a [String],
    unchanged: usize,
    bytes_to_upload: u64,
    bytes_to_download: u64,
    requests: u64,
    requests_planned: u64,
}

async fn execute(
    engine: &Engine,
    title: &str,
    g: &GlobalArgs,
    printer: &Printer,
) -> Result<ExitStatus> {
    let reporter = CliReporter::new(printer);
    let plan = engine.plan_with(&reporter).await;
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            reporter.finish();
            return Err(e.into());
        }
    };
    for w in &plan.warnings {
        printer.warn(w);
    }
    if g.dry_run {
        reporter.finish();
        print_plan(&plan, title, printer);
        return Ok(ExitStatus::Success);
    }
    let pending = plan.pending_conflicts().count();
    let plan_warnings = plan.warnings.len();
    let result = engine.execute(plan, &reporter).await;
    reporter.finish();
    let result = result?;
    // Warnings the run added (the plan's were shown above).
    for w in result.warnings.iter().skip(plan_warnings) {
        printer.warn(w);
    }
    print_result(&result, title, printer);
    Ok(if !result.errors.is_empty() {
        ExitStatus::Failure
    } else if pending > 0 {
        ExitStatus::Conflicts
    } else {
        ExitStatus::Success
    })
}

fn print_plan(plan: &Plan, title: &str, printer: &Printer) {
    printer.json(&PlanJson {
        dry_run: true,
        mode: plan.mode,
        strategy: plan.strategy,
        hash_algorithm: plan.algorithm,
        to_upload: &plan.uploads,
        to_download: &plan.downloads,
        to_delete_remote: &plan.delete_remote,
        to_delete_local: &plan.delete_local,
        conflicts: &plan.conflicts,
        held_back: &plan.held_back,
        resumable: plan.already_sent.iter().map(|e| e.path.as_str()).collect(),
        interrupted: &plan.interrupted,
        unchanged: plan.unchanged.len(),
        bytes_to_upload: plan.bytes_up,
        bytes_to_download: plan.bytes_down,
        requests: plan.requests_so_far + plan.requests_planned,
        requests_planned: plan.requests_planned,
    });
    if printer.json {
        return;
    }
    printer.info(&format!(
        "plan: {title} (strategy {}, hash {})",
        plan.strategy, plan.algorithm
    ));
    if !plan.remote_managed {
        printer.info("  the remote has no pqsync manifest yet: it is treated as empty");
    }
    for e in &plan.uploads {
        printer.info(&format!(
            "  upload         {} ({})",
            e.path,
            human_bytes(e.size)
        ));
    }
    for e in &plan.already_sent {
        printer.info(&format!(
            "  resume         {} (sent by an interrupted run; will be committed)",
            e.path
        ));
    }
    for i in &plan.interrupted {
        printer.info(&format!("  continue       {i}"));
    }
    for e in &plan.downloads {
        printer.info(&format!(
            "  download       {} ({})",
            e.path,
            human_bytes(e.size)
        ));
    }
    for p in &plan.delete_remote {
        printer.info(&format!("  delete remote  {p}"));
    }
    for p in &plan.delete_local {
        printer.info(&format!("  delete local   {p}"));
    }
    for c in &plan.conflicts {
        let r = c.resolution.to_string();
        let what = if r == "manual" {
            "left pending".to_string()
        } else {
            r
        };
        printer.info(&format!("  conflict       {} ({what})", c.path));
    }
    for h in &plan.held_back {
        printer.info(&format!("  held back      {}: {}", h.path, h.reason));
    }
    printer.info(&format!(
        "would upload {} file(s) ({}), download {} ({}), delete {} remote and {} local; {} unchanged",
        plan.uploads.len(),
        human_bytes(plan.bytes_up),
        plan.downloads.len(),
        human_bytes(plan.bytes_down),
        plan.delete_remote.len(),
        plan.delete_local.len(),
        plan.unchanged.len()
    ));
    printer.info(&format!(
        "requests: {} made to plan, {} more to execute ({} in all)",
        plan.requests_so_far,
        plan.requests_planned,
        plan.requests_so_far + plan.requests_planned
    ));
    printer.info("dry run: nothing transferred");
}

fn print_result(r: &SyncResult, title: &str, printer: &Printer) {
    printer.json(r);
    for e in &r.errors {
        printer.error(&format!("{} ({}): {}", e.path, e.operation, e.message));
    }
    if printer.json {
        return;
    }
    for c in &r.conflicts_pending {
        printer.info(&format!(
            "conflict left unresolved: {} (changed on both sides; both copies kept; rerun with --strategy local-wins, remote-wins or newest)",
            c.path
        ));
    }
    for c in &r.conflicts_resolved {
        let how = c.resolution;
        printer.info(&format!("conflict resolved: {} ({how})", c.path));
    }
    if !r.held_back.is_empty() {
        printer.info(&format!(
            "{} change(s) not applied by this command (see `pqsync status`)",
            r.held_back.len()
        ));
    }
    printer.info(&format!(
        "{title}: {} uploaded, {} downloaded, {} deleted, {} transferred, {} request(s){}",
        r.uploaded.len(),
        r.downloaded.len(),
        r.deleted.len(),
        human_bytes(r.bytes_transferred),
        r.requests,
        if r.errors.is_empty() {
            String::new()
        } else {
            format!(
                "; {} failed, remote manifest {}; run again to retry what is left",
                r.errors.len(),
                if r.committed {
                    "updated"
                } else {
                    "not updated"
                }
            )
        }
    ));
}
