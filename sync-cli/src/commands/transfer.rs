//! `push`, `pull`, `sync` and `mirror`: the same engine on different trees.

use anyhow::Result;
use pqsync_backends::Remote;
use pqsync_core::{
    Engine, FanOut, Mode, Plan, Repair, Side, StoreTree, SyncOptions, SyncResult, Trash,
};

use super::Session;
use crate::cli::{MirrorArgs, SelectFlags, SyncFlags, TransferArgs};
use crate::printer::{bytes, Printer};
use crate::progress::CliReporter;
use crate::{ExitStatus, UsageError};

/// Engine options from a transfer's flags.
///
/// # Errors
/// A usage error for a malformed glob or namespace.
pub fn sync_options(flags: &SyncFlags, select: &SelectFlags) -> Result<SyncOptions> {
    let mut o = SyncOptions::default()
        .with_selection(super::selection(select)?)
        .with_concurrency(usize::from(flags.concurrency))
        .with_delete(!flags.no_delete)
        .with_max_delete(flags.max_delete)
        .with_force(flags.force);
    if let Some(s) = flags.strategy {
        o = o.with_strategy(s.into());
    }
    if let Some(h) = flags.hash {
        o = o.with_hash(h.into());
    }
    if flags.checksum {
        o = o.with_repair(Repair::Checksum);
    } else if flags.repair {
        o = o.with_repair(Repair::Listing);
    }
    o = o
        .with_trash(match (&flags.backup_dir, flags.no_trash) {
            (_, true) => Trash::Off,
            (Some(prefix), false) => Trash::At(prefix.clone()),
            (None, false) => Trash::Default,
        })
        .with_trash_retention(flags.trash_retention);
    Ok(o)
}

/// Push, pull or sync DIR with a remote; with `--watch`, push again
/// whenever DIR changes.
pub async fn run(mode: Mode, a: &TransferArgs, s: &Session) -> Result<ExitStatus> {
    if !a.watch.watch {
        return run_once(mode, a, s).await;
    }
    if mode != Mode::Push
        || a.sync.dry_run
        || a.slug.is_some()
        || a.shards.shard.is_some()
        || a.shards.merge_shards
    {
        return Err(UsageError(
            "--watch keeps pushing a database as it changes: use it with push, without --dry-run, --slug or shards".into(),
        )
        .into());
    }
    super::local_tree(&a.dir, true)?;
    let opts = crate::watch::WatchOptions {
        debounce: a.watch.debounce,
        every: None,
    };
    crate::watch::watch(&a.dir, opts, s.printer, |_| s.metered(run_once(mode, a, s))).await
}

async fn run_once(mode: Mode, a: &TransferArgs, s: &Session) -> Result<ExitStatus> {
    if mode == Mode::Pull && (a.sync.repair || a.sync.checksum) {
        return Err(UsageError(
            "--repair and --checksum send damaged remote files again from the local copy; use them with push or sync (to check a local copy, run `pqsync verify DIR`)".into(),
        )
        .into());
    }
    let sharded = a.shards.shard.is_some() || a.shards.merge_shards;
    if sharded && (mode != Mode::Push || a.slug.is_some()) {
        return Err(UsageError(format!(
            "--shard and --merge-shards split a push (or a mirror) across machines; {} does not take them",
            if a.slug.is_some() { "push --slug".to_string() } else { mode.to_string() }
        ))
        .into());
    }
    if a.slug.is_some() && mode != Mode::Push {
        return Err(UsageError(format!(
            "--slug names a versioned copy that push makes; {mode} does not take it (to fetch one, {mode} REMOTE/SLUG)"
        ))
        .into());
    }
    let local = super::local_tree(&a.dir, mode != Mode::Pull)?;
    let mut url = super::resolve_remote(a.remote.as_deref(), &local)?;
    let mut opts = sync_options(&a.sync, &a.select)?.with_merge_shards(a.shards.merge_shards);
    if let Some(shard) = a.shards.shard {
        opts = opts.with_shard(shard);
    }
    if let Some(slug) = &a.slug {
        let slug = slug.trim_matches('/');
        pqsync_core::validate_path(slug, "--slug").map_err(|e| {
            UsageError(format!(
                "{e}; a slug is a relative path such as backups/20260201"
            ))
        })?;
        url = format!("{}/{slug}", url.trim_end_matches('/'));
        opts = opts.with_slug(slug);
    }
    let remote = s.parse_remote(&url)?;
    let create = mode != Mode::Pull && !a.sync.dry_run;
    let remote = s.open_remote(&remote, &a.remote_flags, create, &opts.congestion)?;
    let (arrow, engine) = match mode {
        Mode::Push => ("->", Engine::push(local, remote, opts)),
        Mode::Pull => ("<-", Engine::pull(local, remote, opts)),
        _ => ("<->", Engine::sync(local, remote, opts)),
    };
    let mut title = format!(
        "{mode} {} {arrow} {}",
        a.dir.display(),
        engine.remote().url()
    );
    if let Some(sh) = a.shards.shard {
        title.push_str(&format!(" (shard {}/{})", sh.index, sh.count));
    }
    let status = execute(engine, &title, a.sync.dry_run, s.printer).await?;
    if let (Some(sh), ExitStatus::Success, false) = (a.shards.shard, status, a.sync.dry_run) {
        s.printer.info(&format!(
            "shard {}/{} recorded at {url}; once every shard has finished, run `pqsync push {url} -d {} --merge-shards`",
            sh.index,
            sh.count,
            a.dir.display()
        ));
    }
    Ok(status)
}

/// Mirror one remote prefix onto one or several others.
pub async fn mirror(a: &MirrorArgs, s: &Session) -> Result<ExitStatus> {
    let source = s.parse_remote(&a.source)?;
    let mut destinations = Vec::new();
    for d in &a.destinations {
        let destination = s.parse_remote(d)?;
        if source.contains(&destination) || destination.contains(&source) {
            return Err(UsageError(format!(
                "cannot mirror {source} to {destination}: one lies inside the other, so the mirror would copy onto (or delete) its own source; pick a destination outside the source"
            ))
            .into());
        }
        if destinations
            .iter()
            .any(|o: &Remote| o.contains(&destination) || destination.contains(o))
        {
            return Err(UsageError(format!(
                "{destination} is named twice, or lies inside another destination; give each destination once"
            ))
            .into());
        }
        destinations.push(destination);
    }
    if (a.shards.shard.is_some() || a.shards.merge_shards) && destinations.len() > 1 {
        return Err(UsageError(
            "--shard and --merge-shards split a mirror to one destination; give one DESTINATION"
                .into(),
        )
        .into());
    }
    let opts = mirror_options(a)?;
    let src = s.open_remote(&source, &a.remote_flags, false, &opts.congestion)?;
    if let [destination] = destinations.as_slice() {
        let dst = open_destination(a, s, &src, &source, destination, &opts)?;
        let mut title = format!("mirror {} -> {}", src.url(), dst.url());
        if let Some(sh) = a.shards.shard {
            title.push_str(&format!(" (shard {}/{})", sh.index, sh.count));
        }
        let status = execute(
            Engine::mirror(src, dst, opts),
            &title,
            a.sync.dry_run,
            s.printer,
        )
        .await?;
        if let (Some(sh), ExitStatus::Success, false) = (a.shards.shard, status, a.sync.dry_run) {
            s.printer.info(&format!(
                "shard {}/{} recorded at the destination; once every shard has finished, run `pqsync mirror {} {} --merge-shards`",
                sh.index, sh.count, a.source, a.destinations[0]
            ));
        }
        return Ok(status);
    }
    fan_out(a, s, src, &source, &destinations).await
}

/// The engine options of a mirror: the transfer flags, and its shard.
fn mirror_options(a: &MirrorArgs) -> Result<SyncOptions> {
    let mut opts = sync_options(&a.sync, &a.select)?;
    if let Some(shard) = a.shards.shard {
        opts = opts.with_shard(shard);
    }
    Ok(opts.with_merge_shards(a.shards.merge_shards))
}

/// The destination tree: beside the source when the store can copy inside
/// one bucket (no bytes pass through this machine), else opened on its own.
fn open_destination(
    a: &MirrorArgs,
    s: &Session,
    src: &StoreTree,
    source: &Remote,
    destination: &Remote,
    opts: &SyncOptions,
) -> Result<StoreTree> {
    if source.same_store(destination) && a.remote_flags.jurisdiction.is_none() {
        Ok(s.open_beside(src, destination))
    } else {
        s.open_remote(
            destination,
            &a.remote_flags,
            !a.sync.dry_run,
            &opts.congestion,
        )
    }
}

/// What happened at one destination of a fan-out.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    destination: String,
    success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Box<SyncResult>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Mirrors `src` to every destination: each is planned, then all run at
/// once, sharing what is read from the source. A destination that fails
/// is named and stops none of the others.
async fn fan_out(
    a: &MirrorArgs,
    s: &Session,
    src: StoreTree,
    source: &Remote,
    destinations: &[Remote],
) -> Result<ExitStatus> {
    let printer = s.printer;
    let fan = FanOut::new(src.clone(), &std::env::temp_dir())?;
    let mut outcomes = Vec::new();
    let mut planned = Vec::new();
    let failed = |url: String, e: anyhow::Error| {
        let d = crate::diagnose::diagnose(&e, &s.remotes());
        printer.error(&format!("{url}: {}", d.message));
        Outcome {
            destination: url,
            success: false,
            result: None,
            error: Some(d.message),
        }
    };
    for destination in destinations {
        let url = destination.canonical();
        // Each destination slows down on its own when its store asks to.
        let opts = mirror_options(a)?;
        let engine = match open_destination(a, s, &src, source, destination, &opts) {
            Ok(dst) => Engine::mirror_shared(&fan, dst, opts),
            Err(e) => {
                outcomes.push(failed(url, e));
                continue;
            }
        };
        match engine.plan().await {
            Ok(plan) => {
                for w in plan.warnings() {
                    printer.warn(&format!("{url}: {w}"));
                }
                planned.push((url, engine, plan));
            }
            Err(e) => outcomes.push(failed(url, e.into())),
        }
    }
    if a.sync.dry_run {
        for (url, _, plan) in &planned {
            print_plan(plan, &format!("mirror {} -> {url}", src.url()), printer);
        }
        return Ok(if outcomes.is_empty() {
            ExitStatus::Success
        } else {
            ExitStatus::Failure
        });
    }
    let runs = planned.into_iter().map(|(url, engine, plan)| async move {
        let result = engine.execute(plan).await;
        (url, result)
    });
    for (url, result) in futures::future::join_all(runs).await {
        match result {
            Ok(r) => {
                print_result(&r, &format!("mirror {} -> {url}", src.url()), printer);
                outcomes.push(Outcome {
                    destination: url,
                    success: r.success,
                    result: Some(Box::new(r)),
                    error: None,
                });
            }
            Err(e) => outcomes.push(failed(url, e.into())),
        }
    }
    let ok = outcomes.iter().filter(|o| o.success).count();
    let failures: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.success)
        .map(|o| o.destination.as_str())
        .collect();
    printer.document(&serde_json::json!({
        "source": src.url(),
        "success": failures.is_empty(),
        "sourceObjectsRead": fan.objects_read(),
        "destinations": outcomes,
    }));
    if failures.is_empty() {
        printer.info(&format!(
            "mirror {}: {ok} destination(s) up to date; {} source object(s) read",
            src.url(),
            fan.objects_read()
        ));
        Ok(ExitStatus::Success)
    } else {
        printer.error(&format!(
            "mirror {}: {ok} of {} destination(s) up to date; failed: {}",
            src.url(),
            outcomes.len(),
            failures.join(", ")
        ));
        Ok(ExitStatus::Failure)
    }
}

/// Plans, prints the plan for a dry run, or executes it and prints the
/// result.
async fn execute(
    engine: Engine,
    title: &str,
    dry_run: bool,
    printer: &'static Printer,
) -> Result<ExitStatus> {
    match run_engine(engine, title, dry_run, printer).await? {
        Ran::Planned => Ok(ExitStatus::Success),
        Ran::Done(result, status) => {
            printer.document(&result);
            print_result(&result, title, printer);
            Ok(status)
        }
    }
}

/// What [`run_engine`] did.
pub(super) enum Ran {
    /// A dry run: the plan was printed.
    Planned,
    /// The run's result (not yet printed) and the exit status it calls for.
    Done(Box<SyncResult>, ExitStatus),
}

/// Plans with progress, prints the plan's warnings, and either prints the
/// plan (a dry run) or executes it.
pub(super) async fn run_engine(
    engine: Engine,
    title: &str,
    dry_run: bool,
    printer: &'static Printer,
) -> Result<Ran> {
    let reporter = CliReporter::new(printer);
    let engine = engine.with_reporter(reporter.clone());
    let plan = engine.plan().await;
    reporter.finish();
    let plan = plan?;
    for w in plan.warnings() {
        printer.warn(w);
    }
    if dry_run {
        print_plan(&plan, title, printer);
        return Ok(Ran::Planned);
    }
    let pending = plan.pending_conflicts().count();
    let plan_warnings = plan.warnings().len();
    let reporter = CliReporter::new(printer);
    let engine = engine.with_reporter(reporter.clone());
    let result = engine.execute(plan).await;
    reporter.finish();
    let result = result?;
    // Warnings the run added (the plan's were shown above).
    for w in result.warnings.iter().skip(plan_warnings) {
        printer.warn(w);
    }
    let status = if !result.errors.is_empty() {
        ExitStatus::Failure
    } else if pending > 0 {
        ExitStatus::Conflicts
    } else {
        ExitStatus::Success
    };
    Ok(Ran::Done(Box::new(result), status))
}

fn print_plan(plan: &Plan, title: &str, printer: &Printer) {
    printer.document(plan);
    printer.info(&format!(
        "plan: {title} (strategy {}, hash {})",
        plan.strategy(),
        plan.algorithm()
    ));
    if !plan.remote_managed() {
        printer.info("  the remote has no pqsync manifest yet: it is treated as empty");
    }
    for e in plan.uploads() {
        printer.info(&format!("  upload         {} ({})", e.path, bytes(e.size)));
    }
    for d in plan.repairs() {
        printer.info(&format!(
            "  repair         {} ({} on the remote)",
            d.path, d.reason
        ));
    }
    for e in plan.already_sent() {
        printer.info(&format!(
            "  resume         {} (sent by an interrupted run; will be committed)",
            e.path
        ));
    }
    for i in plan.interrupted() {
        printer.info(&format!("  continue       {i}"));
    }
    for e in plan.downloads() {
        printer.info(&format!("  download       {} ({})", e.path, bytes(e.size)));
    }
    for p in plan.delete_remote() {
        printer.info(&format!("  delete remote  {p}"));
    }
    for p in plan.delete_local() {
        printer.info(&format!("  delete local   {p}"));
    }
    for c in plan.conflicts() {
        let what = match c.resolution {
            pqsync_core::Resolution::Manual => "left pending".to_string(),
            r => r.to_string(),
        };
        printer.info(&format!("  conflict       {} ({what})", c.path));
    }
    for h in plan.held_back() {
        printer.info(&format!("  held back      {}: {}", h.path, h.reason));
    }
    printer.info(&format!(
        "would upload {} file(s) ({}), download {} ({}), delete {} remote and {} local; {} unchanged",
        plan.uploads().len(),
        bytes(plan.bytes_up()),
        plan.downloads().len(),
        bytes(plan.bytes_down()),
        plan.delete_remote().len(),
        plan.delete_local().len(),
        plan.unchanged().len()
    ));
    let (a, b) = plan.request_classes();
    printer.info(&format!(
        "requests: {} made to plan, {} more to execute ({} in all: {a} class A, {b} class B, ${:.6} at R2's prices)",
        plan.requests_so_far(),
        plan.requests_planned(),
        plan.requests_total(),
        plan.r2_cost_usd()
    ));
    printer.info("dry run: nothing transferred");
}

/// The result's lines (its JSON document is printed by the caller).
pub(super) fn print_result(r: &SyncResult, title: &str, printer: &Printer) {
    for e in &r.errors {
        printer.error(&format!("{} ({}): {}", e.path, e.operation, e.message));
    }
    for c in &r.conflicts_pending {
        printer.info(&format!(
            "conflict left unresolved: {} (changed on both sides; both copies kept; rerun with --strategy local-wins, remote-wins or newest)",
            c.path
        ));
    }
    for c in &r.conflicts_resolved {
        printer.info(&format!("conflict resolved: {} ({})", c.path, c.resolution));
    }
    if !r.held_back.is_empty() {
        printer.info(&format!(
            "{} change(s) not applied by this command (see `pqsync status`)",
            r.held_back.len()
        ));
    }
    for d in &r.repaired {
        printer.info(&format!(
            "repaired: {} ({} on the remote)",
            d.path, d.reason
        ));
    }
    for k in &r.kept {
        printer.detail(&format!("kept           {} -> {}", k.path, k.location));
    }
    let remote = r.kept.iter().filter(|k| k.side == Side::Remote).count();
    let local = r.kept.len() - remote;
    let sides: Vec<String> = [
        (remote, "in the remote's trash"),
        (local, "in the local trash"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, place)| format!("{n} {place}"))
    .collect();
    if !sides.is_empty() {
        printer.info(&format!(
            "kept the versions this run replaced: {} (`pqsync trash list` shows them)",
            sides.join(", ")
        ));
    }
    let failed = if r.errors.is_empty() {
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
    };
    printer.info(&format!(
        "{title}: {} uploaded, {} downloaded, {} deleted, {} transferred, {} request(s){failed}",
        r.uploaded.len(),
        r.downloaded.len(),
        r.deleted.len(),
        bytes(r.bytes_transferred),
        r.requests,
    ));
}
