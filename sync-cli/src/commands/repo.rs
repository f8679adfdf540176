//! The snapshot repository's commands: `backup`, `snapshots`, `restore`,
//! `diff`, `forget`, `prune` and `check`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use pqsync_core::{
    BackupOptions, Congestion, Filter, GroupBy, Policy, PruneOptions, ReadData, Repository,
    Snapshot, SnapshotSpec, SyncOptions, Trash,
};
use serde_json::json;

use super::transfer::{print_result, run_engine, Ran};
use super::Session;
use crate::cli::{
    BackupArgs, CheckArgs, DiffArgs, ForgetArgs, KeyAction, KeyArgs, PasswordFlags, PruneArgs,
    RemoteFlags, RestoreArgs, SnapshotFilterFlags, SnapshotsArgs,
};
use crate::printer::bytes;
use crate::{ExitStatus, UsageError};

/// Where snapshot records are cached: under the state home.
pub(crate) fn cache_dir() -> PathBuf {
    super::state_home().join("repositories")
}

/// Opens the repository at `url`, unlocking it when it is encrypted.
pub(crate) async fn open(
    s: &Session,
    url: &str,
    flags: &RemoteFlags,
    password: &PasswordFlags,
) -> Result<Repository> {
    let remote = s.parse_remote(url)?;
    let congestion = Arc::new(Congestion::default());
    let tree = s.open_remote(&remote, flags, false, &congestion)?;
    let repo = Repository::open(tree).await?.with_cache(cache_dir());
    unlock(repo, password).await
}

/// Unlocks an encrypted repository with the password the flags or
/// `PQSYNC_PASSWORD` give.
pub(crate) async fn unlock(repo: Repository, password: &PasswordFlags) -> Result<Repository> {
    if !repo.encrypted() {
        return Ok(repo);
    }
    let Some(pw) = read_password(password)? else {
        return Err(UsageError(format!(
            "{} is encrypted: give its password with PQSYNC_PASSWORD, --password-file or --password-command",
            repo.url()
        ))
        .into());
    };
    Ok(repo.unlock(pw.as_bytes()).await?)
}

/// The password from `--password-file`, `--password-command` or
/// `PQSYNC_PASSWORD`, in that order; `None` when none is given.
fn read_password(f: &PasswordFlags) -> Result<Option<String>> {
    let first_line = |text: &str| text.lines().next().unwrap_or("").to_string();
    if let Some(path) = &f.password_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--password-file {}: {e}", path.display())))?;
        return Ok(Some(first_line(&text)));
    }
    if let Some(cmd) = &f.password_command {
        let out = std::process::Command::new("sh")
            .args(["-c", cmd])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| UsageError(format!("--password-command: {e}")))?;
        if !out.status.success() {
            return Err(UsageError(format!(
                "--password-command {cmd:?} failed ({}); fix it, or give the password another way",
                out.status
            ))
            .into());
        }
        return Ok(Some(first_line(&String::from_utf8_lossy(&out.stdout))));
    }
    Ok(std::env::var("PQSYNC_PASSWORD").ok())
}

/// A new password: `--new-password-file`, else `PQSYNC_NEW_PASSWORD`.
fn read_new_password(file: Option<&std::path::Path>) -> Result<String> {
    let pw = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| UsageError(format!("--new-password-file {}: {e}", path.display())))?
            .lines()
            .next()
            .unwrap_or("")
            .to_string(),
        None => std::env::var("PQSYNC_NEW_PASSWORD").map_err(|_| {
            UsageError(
                "give the new password with --new-password-file or PQSYNC_NEW_PASSWORD".into(),
            )
        })?,
    };
    if pw.is_empty() {
        return Err(UsageError("the new password is empty".into()).into());
    }
    Ok(pw)
}

/// Splits `REPO:ID` or `REPO:latest` into the repository and the snapshot.
/// The port of an `?endpoint=http://host:9000` at the end is not a
/// snapshot.
pub(crate) fn split_spec(arg: &str) -> Result<(String, Option<SnapshotSpec>)> {
    if let Some((repo, tail)) = arg.rsplit_once(':') {
        let endpoint_port = repo.contains('?')
            && repo.rsplit_once('=').is_some_and(|(_, value)| {
                value
                    .split_once("://")
                    .is_some_and(|(_, host)| !host.contains(['/', ':']))
            });
        let is_spec = !endpoint_port
            && (tail == "latest"
                || (tail.len() >= 4 && tail.bytes().all(|b| b.is_ascii_hexdigit())));
        if is_spec && !tail.contains('/') && !repo.is_empty() && !repo.ends_with(':') {
            return Ok((repo.to_string(), Some(SnapshotSpec::parse(tail)?)));
        }
    }
    Ok((arg.to_string(), None))
}

pub(crate) fn filter(f: &SnapshotFilterFlags) -> Filter {
    Filter {
        database: f.database.clone(),
        host: f.host.clone(),
        tags: f.tags.clone(),
    }
}

fn at(t: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    t.map(|t| pqsync_core::parse_time(t).map_err(|e| UsageError(e.to_string()).into()))
        .transpose()
}

/// A snapshot's JSON form in listings.
fn snapshot_json(s: &Snapshot) -> serde_json::Value {
    let r = &s.record;
    json!({
        "id": s.id,
        "shortId": s.short_id(),
        "time": r.time,
        "host": r.host,
        "tags": r.tags,
        "database": r.name,
        "databaseId": r.database_id,
        "source": r.source,
        "parent": r.parent,
        "files": r.summary.files,
        "bytes": r.summary.bytes,
        "addedObjects": r.summary.added_objects,
        "addedBytes": r.summary.added_bytes,
        "eventLog": r.event_log,
    })
}

fn coverage_text(s: &Snapshot) -> String {
    match &s.record.event_log {
        None => "-".into(),
        Some(c) => {
            let mut parts = Vec::new();
            if let Some(q) = c.last_seq {
                parts.push(format!("seq {q}"));
            }
            if let Some(ts) = c.max_ts.and_then(chrono::DateTime::from_timestamp_millis) {
                parts.push(ts.format("%Y-%m-%dT%H:%M:%SZ").to_string());
            }
            if let Some(id) = &c.last_event_id {
                parts.push(id.clone());
            }
            parts.join(" ")
        }
    }
}

/// A snapshot named by `REPO:ID`, `REPO:latest` or `REPO` with `at`, as a
/// read-only tree; `None` when `target` names no snapshot.
///
/// # Errors
/// Usage errors, a repository that is not one, and no such snapshot.
pub async fn snapshot_target(
    s: &Session,
    target: &str,
    at: Option<&str>,
    flags: &RemoteFlags,
    password: &PasswordFlags,
) -> Result<Option<Box<dyn pqsync_core::Tree>>> {
    let (url, spec) = split_spec(target)?;
    let spec = match (spec, self::at(at)?) {
        (Some(_), Some(_)) => {
            return Err(
                UsageError("give either REPO:ID (or :latest) or --at, not both".into()).into(),
            )
        }
        (Some(sp), None) => sp,
        (None, Some(t)) => SnapshotSpec::At(t),
        (None, None) => return Ok(None),
    };
    let repo = open(s, &url, flags, password).await?;
    let all = repo.snapshots().await?;
    let (snap, _) = repo.resolve(&all, &spec, &Filter::default())?;
    s.printer.note(&format!(
        "snapshot {} of {} from {}",
        snap.short_id(),
        snap.record.name,
        snap.record.time
    ));
    Ok(Some(Box::new(repo.snapshot_tree(snap).await?)))
}

/// A directory repository and a database directory must not lie one
/// inside the other: a backup would store its own repository, a restore
/// would overwrite it.
fn refuse_nesting(
    remote: &pqsync_backends::Remote,
    dir: &std::path::Path,
    verb: &str,
) -> Result<()> {
    let pqsync_backends::Remote::Dir { path } = remote else {
        return Ok(());
    };
    let real = |p: &std::path::Path| {
        // The nearest existing ancestor, resolved, with the rest appended.
        let mut head = p.to_path_buf();
        let mut tail = Vec::new();
        while !head.exists() {
            match (head.file_name().map(|n| n.to_owned()), head.parent()) {
                (Some(n), Some(parent)) => {
                    tail.push(n);
                    head = parent.to_path_buf();
                }
                _ => break,
            }
        }
        let mut out = std::fs::canonicalize(&head).unwrap_or(head);
        out.extend(tail.into_iter().rev());
        out
    };
    let (repo, db) = (real(path), real(dir));
    if repo.starts_with(&db) || db.starts_with(&repo) {
        return Err(UsageError(format!(
            "cannot {verb}: the repository {} and the directory {} lie one inside the other; keep the repository outside the database",
            repo.display(),
            db.display()
        ))
        .into());
    }
    Ok(())
}

/// `pqsync backup`; with `--watch`, again whenever DIR changes.
pub async fn backup(a: &BackupArgs, s: &Session) -> Result<ExitStatus> {
    if !a.watch.watch {
        return backup_once(a, s).await;
    }
    if a.dry_run || a.time.is_some() || a.shards.shard.is_some() || a.shards.merge_shards {
        return Err(UsageError(
            "--watch keeps backing up a database as it changes: use it without --dry-run, --time or shards"
                .into(),
        )
        .into());
    }
    super::local_tree(&a.dir, true)?;
    let opts = crate::watch::WatchOptions {
        debounce: a.watch.debounce,
        every: a.every,
    };
    crate::watch::watch(&a.dir, opts, s.printer, |round| {
        let mut once = a.clone();
        if round == crate::watch::Round::EventLog {
            once.event_log_only = true;
            once.tags.push("event-log".into());
        }
        async move { s.metered(backup_once(&once, s)).await }
    })
    .await
}

async fn backup_once(a: &BackupArgs, s: &Session) -> Result<ExitStatus> {
    if a.shards.merge_shards {
        return merge_backup(a, s).await;
    }
    if a.shards.shard.is_some() && a.time.is_some() {
        return Err(UsageError(
            "--time dates an imported backup; the shards of a split backup are dated by their start, which keeps their content safe from a prune: leave out --time".into(),
        )
        .into());
    }
    let time = at(a.time.as_deref())?;
    let local = super::local_tree(&a.dir, true)?;
    let remote = s.parse_remote(&a.repository)?;
    refuse_nesting(&remote, local.root(), "backup")?;
    let mut opts = SyncOptions::default().with_concurrency(usize::from(a.concurrency));
    if let Some(shard) = a.shards.shard {
        opts = opts.with_shard(shard);
    }
    if a.event_log_only {
        let events = pqsync_core::Selection::new(&[], &["events/**".to_string()], &[])?;
        opts = opts.with_selection(events);
    }
    let tree = s.open_remote(&remote, &a.remote_flags, !a.dry_run, &opts.congestion)?;
    let password = read_password(&a.password)?;
    if a.encrypt && password.is_none() {
        return Err(UsageError(
            "--encrypt needs a password: PQSYNC_PASSWORD, --password-file or --password-command"
                .into(),
        )
        .into());
    }
    let new_password = password.as_deref().filter(|_| a.encrypt).map(str::as_bytes);
    let (repo, new) = Repository::open_or_init(tree, a.grace, !a.dry_run, new_password).await?;
    if a.encrypt && !new && !repo.encrypted() {
        return Err(UsageError(format!(
            "{} is an existing repository without encryption; encryption is chosen when a repository is made (use a new prefix, or leave out --encrypt)",
            repo.url()
        ))
        .into());
    }
    let repo = unlock(repo.with_cache(cache_dir()), &a.password).await?;
    let backup = repo
        .backup(
            local,
            BackupOptions {
                tags: a.tags.clone(),
                host: a.host.clone(),
                sync: opts,
                time,
            },
        )
        .await?;
    let committed = backup.committed();
    let parent = backup.parent.clone();
    let mut title = format!(
        "backup {} -> {}{}",
        a.dir.display(),
        repo.url(),
        if new { " (new repository)" } else { "" }
    );
    if let Some(sh) = a.shards.shard {
        title.push_str(&format!(" (shard {}/{})", sh.index, sh.count));
    }
    let printer = s.printer;
    match run_engine(backup.into_engine(), &title, a.dry_run, printer).await? {
        Ran::Planned => Ok(ExitStatus::Success),
        Ran::Done(result, status) => {
            let snap = committed.get();
            printer.document(&json!({
                "success": result.success,
                "snapshot": snap.as_ref().map(snapshot_json),
                "parent": parent.as_ref().map(|p| p.id.clone()),
                "result": result,
            }));
            print_result(&result, &title, printer);
            match &snap {
                Some(sn) => printer.info(&format!(
                    "snapshot {} saved: {} files, {}; {} new object(s) ({}) stored{}",
                    sn.short_id(),
                    sn.record.summary.files,
                    bytes(sn.record.summary.bytes),
                    sn.record.summary.added_objects,
                    bytes(sn.record.summary.added_bytes),
                    parent
                        .as_ref()
                        .map(|p| format!("; parent {}", p.short_id()))
                        .unwrap_or_default()
                )),
                None => match (a.shards.shard, status) {
                    (Some(sh), ExitStatus::Success) => printer.info(&format!(
                        "shard {}/{} of the backup recorded at {}; once every shard has finished, run `pqsync backup {} --merge-shards`",
                        sh.index,
                        sh.count,
                        repo.url(),
                        a.repository
                    )),
                    _ => printer.info("no snapshot was saved"),
                },
            }
            Ok(status)
        }
    }
}

/// `pqsync backup --merge-shards`: one snapshot of a split backup's parts.
async fn merge_backup(a: &BackupArgs, s: &Session) -> Result<ExitStatus> {
    if a.dry_run || a.time.is_some() || a.encrypt || !a.tags.is_empty() || a.host.is_some() {
        return Err(UsageError(
            "--merge-shards saves the snapshots the shards left in parts, with the shards' tags and host: use it without --dry-run, --time, --encrypt, --tag or --host (give those to the shards)".into(),
        )
        .into());
    }
    let repo = open(s, &a.repository, &a.remote_flags, &a.password).await?;
    let mut report = repo.merge_shards().await?;
    if report.saved.is_empty() && report.refused.len() == 1 {
        let reason = report.refused.remove(0);
        return Err(pqsync_core::Error::Shards { reason }.into());
    }
    let printer = s.printer;
    printer.document(&json!({
        "success": report.refused.is_empty(),
        "snapshot": report.saved.first().map(snapshot_json),
        "snapshots": report.saved.iter().map(snapshot_json).collect::<Vec<_>>(),
        "refused": report.refused,
    }));
    for snap in &report.saved {
        printer.info(&format!(
            "snapshot {} of {} saved from the shards' parts: {} files, {}; {} new object(s) ({}) stored{}",
            snap.short_id(),
            snap.record.name,
            snap.record.summary.files,
            bytes(snap.record.summary.bytes),
            snap.record.summary.added_objects,
            bytes(snap.record.summary.added_bytes),
            snap.record
                .parent
                .as_ref()
                .map(|p| format!("; parent {}", &p[..8.min(p.len())]))
                .unwrap_or_default()
        ));
    }
    for reason in &report.refused {
        printer.error(reason);
    }
    Ok(match report.refused.is_empty() {
        true => ExitStatus::Success,
        false => ExitStatus::Failure,
    })
}

/// `pqsync snapshots`.
pub async fn snapshots(a: &SnapshotsArgs, s: &Session) -> Result<ExitStatus> {
    let repo = open(s, &a.repository, &a.remote_flags, &a.password).await?;
    let until = at(a.at.as_deref())?;
    let f = filter(&a.filter);
    let all: Vec<Snapshot> = repo
        .snapshots()
        .await?
        .into_iter()
        .filter(|sn| f.matches(sn) && until.is_none_or(|t| sn.time() <= t))
        .collect();
    let printer = s.printer;
    printer.document(&json!({
        "repository": repo.url(),
        "snapshots": all.iter().map(snapshot_json).collect::<Vec<_>>(),
    }));
    printer.answer(&format!(
        "{:<8}  {:<20}  {:<12}  {:<12}  {:>6}  {:>10}  {:>10}  EVENT LOG",
        "ID", "TIME", "HOST", "TAGS", "FILES", "SIZE", "ADDED"
    ));
    for sn in &all {
        let r = &sn.record;
        printer.answer(&format!(
            "{:<8}  {:<20}  {:<12}  {:<12}  {:>6}  {:>10}  {:>10}  {}",
            sn.short_id(),
            sn.time().format("%Y-%m-%dT%H:%M:%SZ"),
            r.host,
            if r.tags.is_empty() {
                "-".into()
            } else {
                r.tags.join(",")
            },
            r.summary.files,
            bytes(r.summary.bytes),
            bytes(r.summary.added_bytes),
            coverage_text(sn)
        ));
    }
    printer.note(&format!("{} snapshot(s)", all.len()));
    Ok(ExitStatus::Success)
}

/// `pqsync restore`.
pub async fn restore(a: &RestoreArgs, s: &Session) -> Result<ExitStatus> {
    if a.entity.is_some() || a.namespace.is_some() {
        return super::recover::restore_from_events(a, s).await;
    }
    let dir = a.dir.as_deref().expect("clap requires -d");
    let (url, spec) = split_spec(&a.repository)?;
    let when = at(a.at.as_deref())?;
    let spec = match (spec, when) {
        (Some(_), Some(_)) => {
            return Err(
                UsageError("give either REPO:ID (or :latest) or --at, not both".into()).into(),
            )
        }
        (Some(sp), None) => sp,
        (None, Some(t)) => SnapshotSpec::At(t),
        (None, None) => SnapshotSpec::Latest,
    };
    let local = super::local_tree(dir, false)?;
    refuse_nesting(&s.parse_remote(&url)?, local.root(), "restore")?;
    let repo = open(s, &url, &a.remote_flags, &a.password).await?;
    let all = repo.snapshots().await?;
    let (snap, past) = repo.resolve(&all, &spec, &filter(&a.filter))?;
    let printer = s.printer;
    printer.note(&format!(
        "restoring snapshot {} of {} from {} (host {}{})",
        snap.short_id(),
        snap.record.name,
        snap.record.time,
        snap.record.host,
        past.map(|d| format!("; the time asked for is {} after it, the newest", human(d)))
            .unwrap_or_default()
    ));
    let mut opts = SyncOptions::default()
        .with_concurrency(usize::from(a.concurrency))
        .with_selection(super::selection(&a.select)?)
        .with_max_delete(pqsync_core::MaxDelete::Percent(100.0));
    if a.no_trash {
        opts = opts.with_trash(Trash::Off);
    }
    let engine = repo.restore(snap, local, opts).await?;
    let title = format!(
        "restore {}:{} -> {}",
        repo.url(),
        snap.short_id(),
        dir.display()
    );
    match run_engine(engine, &title, a.dry_run, printer).await? {
        Ran::Planned => Ok(ExitStatus::Success),
        Ran::Done(result, status) => {
            // A database with an event log gets its later segments and a
            // restore point; one without is restored as it was.
            let point = match when {
                Some(t) if result.success && snap.record.event_log.is_some() => {
                    Some(super::recover::add_later_segments(&repo, &all, snap, t, dir).await?)
                }
                _ => None,
            };
            printer.document(&json!({
                "success": result.success,
                "snapshot": snapshot_json(snap),
                "result": result,
                "restorePoint": point.as_ref().map(|p| &p.doc),
            }));
            print_result(&result, &title, printer);
            if let Some(p) = &point {
                printer.info(&p.line);
            }
            Ok(status)
        }
    }
}

/// A duration in words: `3d 4h`, `5h 12m`, `42s`.
fn human(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m {}s", s % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// A snapshot argument of `diff`: an id prefix, `latest`, or a time.
fn diff_spec(arg: &str) -> Result<SnapshotSpec> {
    SnapshotSpec::parse(arg).or_else(|_| {
        pqsync_core::parse_time(arg)
            .map(SnapshotSpec::At)
            .map_err(|_| {
                UsageError(format!(
                    "{arg:?} is not a snapshot: give an id prefix (4+ hex digits), `latest` or a time"
                ))
                .into()
            })
    })
}

/// `pqsync diff`.
pub async fn diff(a: &DiffArgs, s: &Session) -> Result<ExitStatus> {
    let repo = open(s, &a.repository, &a.remote_flags, &a.password).await?;
    let (from, to) = match (&a.at, &a.from, &a.to) {
        (Some(t), other, None) => (
            SnapshotSpec::At(at(Some(t))?.expect("given")),
            other
                .as_deref()
                .map_or(Ok(SnapshotSpec::Latest), diff_spec)?,
        ),
        (None, Some(f), t) => (
            diff_spec(f)?,
            t.as_deref().map_or(Ok(SnapshotSpec::Latest), diff_spec)?,
        ),
        _ => {
            return Err(UsageError(
                "name two snapshots (FROM [TO], TO defaults to latest), or --at TIME [TO]".into(),
            )
            .into())
        }
    };
    let all = repo.snapshots().await?;
    let f = filter(&a.filter);
    let (a_snap, _) = repo.resolve(&all, &from, &f)?;
    let (b_snap, _) = repo.resolve(&all, &to, &f)?;
    let d = pqsync_core::diff_trees(&repo.tree_of(a_snap).await?, &repo.tree_of(b_snap).await?);
    let printer = s.printer;
    printer.document(&json!({
        "from": a_snap.id,
        "to": b_snap.id,
        "added": d.added,
        "changed": d.changed,
        "removed": d.removed,
    }));
    for p in &d.added {
        printer.answer(&format!("+ {p}"));
    }
    for p in &d.changed {
        printer.answer(&format!("M {p}"));
    }
    for p in &d.removed {
        printer.answer(&format!("- {p}"));
    }
    printer.note(&format!(
        "{} -> {}: {} added, {} changed, {} removed",
        a_snap.short_id(),
        b_snap.short_id(),
        d.added.len(),
        d.changed.len(),
        d.removed.len()
    ));
    Ok(ExitStatus::Success)
}

/// `pqsync forget`.
pub async fn forget(a: &ForgetArgs, s: &Session) -> Result<ExitStatus> {
    let within = a
        .keep_within
        .as_deref()
        .map(Policy::parse_duration)
        .transpose()
        .map_err(|e| UsageError(e.to_string()))?;
    let policy = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within,
        tags: a.keep_tag.clone(),
    };
    if policy.is_empty() {
        return Err(UsageError(
            "no --keep-* option given: forget would remove every snapshot; give at least one (for example --keep-daily 7)".into(),
        )
        .into());
    }
    let group_by = GroupBy::parse(&a.group_by).map_err(|e| UsageError(e.to_string()))?;
    let repo = open(s, &a.repository, &a.remote_flags, &a.password).await?;
    let report = repo
        .forget(&policy, &filter(&a.filter), group_by, a.dry_run)
        .await?;
    let printer = s.printer;
    let (mut kept, mut removed) = (0, 0);
    for g in &report.groups {
        printer.info(&format!("snapshots of {}:", g.key));
        for d in &g.keep {
            printer.info(&format!(
                "  keep    {}  {}  {}",
                &d.id[..8],
                d.time,
                d.reasons.join(", ")
            ));
        }
        for d in &g.remove {
            printer.info(&format!("  remove  {}  {}", &d.id[..8], d.time));
        }
        kept += g.keep.len();
        removed += g.remove.len();
    }
    let prune = if a.prune && !a.dry_run {
        Some(
            repo.prune(&PruneOptions {
                grace: a.grace,
                dry_run: false,
            })
            .await?,
        )
    } else {
        None
    };
    printer.document(&json!({
        "dryRun": a.dry_run,
        "groups": report.groups,
        "kept": kept,
        "removed": removed,
        "prune": prune,
    }));
    printer.info(&format!(
        "{} kept, {} {}",
        kept,
        removed,
        if a.dry_run {
            "would be removed (dry run)"
        } else {
            "removed"
        }
    ));
    if let Some(p) = &prune {
        print_prune(p, printer);
    }
    Ok(ExitStatus::Success)
}

fn print_prune(p: &pqsync_core::PruneReport, printer: &crate::printer::Printer) {
    printer.info(&format!(
        "prune: {} snapshot(s), {} object(s), {} referenced; marked {} ({}), deleted {} ({}), {} waiting out the grace period, {} unmarked; {} request(s)",
        p.snapshots,
        p.objects,
        p.referenced,
        p.marked,
        bytes(p.marked_bytes),
        p.deleted,
        bytes(p.deleted_bytes),
        p.waiting,
        p.unmarked,
        p.requests
    ));
}

/// `pqsync prune`.
pub async fn prune(a: &PruneArgs, s: &Session) -> Result<ExitStatus> {
    let repo = open(s, &a.repository, &a.remote_flags, &a.password).await?;
    let report = repo
        .prune(&PruneOptions {
            grace: a.grace,
            dry_run: a.dry_run,
        })
        .await?;
    s.printer.document(&report);
    print_prune(&report, s.printer);
    if a.dry_run {
        s.printer.info("dry run: nothing marked or deleted");
    }
    Ok(ExitStatus::Success)
}

/// `pqsync check`.
pub async fn check(a: &CheckArgs, s: &Session) -> Result<ExitStatus> {
    let read = match (&a.read_data, &a.read_data_subset) {
        (true, _) => ReadData::All,
        (false, Some(p)) => {
            let n: f64 = p
                .trim_end_matches('%')
                .parse()
                .ok()
                .filter(|n: &f64| (0.0..=100.0).contains(n))
                .ok_or_else(|| {
                    UsageError(format!(
                        "--read-data-subset {p:?} is not a percentage between 0 and 100 (e.g. 10%)"
                    ))
                })?;
            ReadData::Percent(n)
        }
        (false, None) => ReadData::None,
    };
    let repo = open(s, &a.repository, &a.remote_flags, &a.password).await?;
    let report = repo.check(read).await?;
    let printer = s.printer;
    printer.document(&json!({
        "success": report.problems.is_empty(),
        "report": report,
    }));
    for p in &report.problems {
        printer.error(p);
    }
    printer.info(&format!(
        "check: {} snapshot(s), {} distinct file content(s) in {} object(s), {} read and hashed, {} unreferenced object(s) (prune removes them): {}",
        report.snapshots,
        report.referenced,
        report.objects,
        report.read,
        report.unreferenced,
        if report.problems.is_empty() {
            "no problems".to_string()
        } else {
            format!("{} problem(s)", report.problems.len())
        }
    ));
    Ok(if report.problems.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// `pqsync key`.
pub async fn key(a: &KeyArgs, s: &Session) -> Result<ExitStatus> {
    let printer = s.printer;
    match &a.action {
        KeyAction::Init(k) => {
            let Some(pw) = read_password(&k.password)? else {
                return Err(UsageError(
                    "give the new repository's password with PQSYNC_PASSWORD, --password-file or --password-command".into(),
                )
                .into());
            };
            let remote = s.parse_remote(&k.repository)?;
            let congestion = Arc::new(Congestion::default());
            let tree = s.open_remote(&remote, &k.remote_flags, true, &congestion)?;
            let repo = Repository::init(tree, k.grace, Some(pw.as_bytes())).await?;
            printer.document(&json!({
                "repository": repo.url(),
                "id": repo.config().id,
                "key": repo.key_in_use(),
            }));
            printer.info(&format!(
                "made an encrypted repository at {} (id {}); keep the password safe: without it nothing can be restored",
                repo.url(),
                repo.config().id
            ));
        }
        KeyAction::Add(k) => {
            let repo = open(s, &k.repository, &k.remote_flags, &k.password).await?;
            let new = read_new_password(k.new_password_file.as_deref())?;
            let id = repo.add_key(new.as_bytes()).await?;
            printer.document(&json!({"added": id}));
            printer.info(&format!("added key {}", &id[..8]));
        }
        KeyAction::Passwd(k) => {
            let repo = open(s, &k.repository, &k.remote_flags, &k.password).await?;
            let new = read_new_password(k.new_password_file.as_deref())?;
            let id = repo.change_password(new.as_bytes()).await?;
            printer.document(&json!({"key": id, "removed": repo.key_in_use()}));
            printer.info(&format!(
                "password changed: key {} replaces {}",
                &id[..8],
                repo.key_in_use().map_or("", |k| &k[..8])
            ));
        }
        KeyAction::List(k) => {
            let repo = open(s, &k.repository, &k.remote_flags, &k.password).await?;
            let files = repo.key_files().await?;
            printer.document(&json!({
                "keys": files.iter().map(|(id, f)| json!({
                    "id": id,
                    "current": Some(id.as_str()) == repo.key_in_use(),
                    "host": f.host,
                    "createdAt": f.created_at,
                    "kdf": f.kdf,
                })).collect::<Vec<_>>(),
            }));
            for (id, f) in &files {
                let mark = if Some(id.as_str()) == repo.key_in_use() {
                    "*"
                } else {
                    " "
                };
                printer.answer(&format!(
                    "{mark} {}  {}  {}",
                    &id[..8],
                    f.created_at,
                    f.host
                ));
            }
        }
        KeyAction::Remove(k) => {
            let repo = open(s, &k.repository, &k.remote_flags, &k.password).await?;
            if repo.key_files().await?.len() <= 1 {
                return Err(UsageError(
                    "that is the repository's only key; add another first".into(),
                )
                .into());
            }
            let id = repo.remove_key(&k.id).await?;
            printer.document(&json!({"removed": id}));
            printer.info(&format!("removed key {}", &id[..8]));
        }
    }
    Ok(ExitStatus::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_suffixes_split_off_the_repository() {
        let (u, s) = split_spec("s3://b/backups/prod:4f2a9c1e").unwrap();
        assert_eq!(u, "s3://b/backups/prod");
        assert_eq!(s, Some(SnapshotSpec::Id("4f2a9c1e".into())));
        let (u, s) = split_spec("/tmp/repo:latest").unwrap();
        assert_eq!((u.as_str(), s), ("/tmp/repo", Some(SnapshotSpec::Latest)));
        let (u, s) = split_spec("s3://b/backups/prod").unwrap();
        assert_eq!((u.as_str(), s), ("s3://b/backups/prod", None));
        let (u, s) = split_spec("file:///tmp/x").unwrap();
        assert_eq!((u.as_str(), s), ("file:///tmp/x", None));
        let url = "s3://b/r?profile=p&endpoint=http://127.0.0.1:9000";
        assert_eq!(split_spec(url).unwrap(), (url.to_string(), None));
        let (u, s) = split_spec(&format!("{url}:latest")).unwrap();
        assert_eq!((u.as_str(), s), (url, Some(SnapshotSpec::Latest)));
    }
}
