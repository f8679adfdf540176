//! `pqsync events`: the event log of a database, a remote or a snapshot,
//! read as little as the query allows.

use std::path::Path;
use std::sync::Arc;

use anyhow::Result;
use pqsync_core::{Congestion, EventQuery, EventRecord, EventScan, Repository, SnapshotSpec};

use super::Session;
use crate::cli::EventsArgs;
use crate::{ExitStatus, UsageError};

/// A time argument as ms since the epoch. A bare date means the end of
/// that day (as elsewhere), or its start when `start_of_day` (for
/// `--after`).
pub fn millis(t: Option<&str>, start_of_day: bool) -> Result<Option<i64>> {
    t.map(|t| {
        if let (true, Ok(d)) = (
            start_of_day,
            chrono::NaiveDate::parse_from_str(t.trim(), "%Y-%m-%d"),
        ) {
            return Ok(d
                .and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp_millis());
        }
        pqsync_core::parse_time(t)
            .map(|t| t.timestamp_millis())
            .map_err(|e| UsageError(e.to_string()).into())
    })
    .transpose()
}

/// `NS/ID` or `NS:ID` as an event target, `NS:ID`.
pub fn target_of(s: &str) -> Result<String> {
    match s.split_once(['/', ':']) {
        Some((ns, id)) if !ns.is_empty() && !id.is_empty() => Ok(format!("{ns}:{id}")),
        _ => Err(UsageError(format!(
            "{s:?} does not name an entity; write NS/ID, as users/01KN35E2XRBTQ0BPP1YNK2BYFH"
        ))
        .into()),
    }
}

/// Lists the matching events.
pub async fn run(a: &EventsArgs, s: &Session) -> Result<ExitStatus> {
    let q = EventQuery {
        namespace: a.namespace.clone(),
        ops: a.ops.iter().map(|o| o.to_ascii_uppercase()).collect(),
        target: a.target.as_deref().map(target_of).transpose()?,
        after: millis(a.after.as_deref(), true)?,
        before: millis(a.before.as_deref(), true)?,
        full: a.full,
    };
    let (shown, scan) = read(&a.source, &q, s, a).await?;
    let printer = s.printer;
    if a.ndjson {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for e in &scan.events {
            serde_json::to_writer(&mut out, e)?;
            writeln!(out)?;
        }
    } else if printer.is_json() {
        printer.document(&serde_json::json!({
            "source": shown,
            "events": scan.events,
            "bytesRead": scan.bytes_read,
            "logBytes": scan.log_bytes,
            "filesRead": scan.files_read,
            "filesSkipped": scan.files_skipped,
            "rowGroupsRead": scan.row_groups_read,
            "rowGroupsSkipped": scan.row_groups_skipped,
            "unreadable": scan.unreadable.iter().map(|(f, why)| serde_json::json!({"path": f, "reason": why})).collect::<Vec<_>>(),
        }));
    } else {
        for e in &scan.events {
            println!("{}", line(e));
        }
    }
    for (file, why) in &scan.unreadable {
        printer.warn(&format!(
            "{file}: skipped, its events are missing from this listing ({why}); check it with `pqsync verify`"
        ));
    }
    printer.note(&summary(&shown, &scan));
    Ok(if scan.unreadable.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// `2026-01-08T00:29:44.307Z  01KEDG…  UPDATE  users:01K…  actor`, with
/// `before`/`after` on the next lines when read.
fn line(e: &EventRecord) -> String {
    let ts = chrono::DateTime::from_timestamp_millis(e.ts)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| e.ts.to_string());
    let mut l = format!(
        "{ts}  {}  {:<10}  {}  {}",
        e.id,
        e.op,
        e.target,
        e.actor.as_deref().unwrap_or("-")
    );
    for (k, v) in [("before", &e.before), ("after", &e.after)] {
        if let Some(v) = v {
            l.push_str(&format!("\n    {k}: {v}"));
        }
    }
    l
}

fn summary(shown: &str, scan: &EventScan) -> String {
    let share = if scan.log_bytes == 0 {
        0.0
    } else {
        scan.bytes_read as f64 * 100.0 / scan.log_bytes as f64
    };
    format!(
        "{} event(s) in {shown}; read {} of the log's {} bytes ({share:.1}%): {} file(s) opened, {} skipped by their times; {} row group(s) read, {} skipped",
        scan.events.len(),
        scan.bytes_read,
        scan.log_bytes,
        scan.files_read,
        scan.files_skipped,
        scan.row_groups_read,
        scan.row_groups_skipped
    )
}

/// Reads the events of `source`: a database directory, a synced remote, or
/// a repository's snapshot.
async fn read(
    source: &str,
    q: &EventQuery,
    s: &Session,
    a: &EventsArgs,
) -> Result<(String, EventScan)> {
    let is_dir = !pqsync_backends::looks_like_url(source);
    if is_dir && is_database(Path::new(source)) {
        let root = super::local_tree(Path::new(source), true)?;
        return Ok((
            root.root().display().to_string(),
            pqsync_core::events_in_dir(root.root(), q).await?,
        ));
    }
    let (url, spec) = super::repo::split_spec(source)?;
    let remote = s.parse_remote(&url)?;
    let congestion = Arc::new(Congestion::default());
    let tree = s.open_remote(&remote, &a.remote_flags, false, &congestion)?;
    match Repository::open_if_any(tree.clone()).await? {
        Some(repo) => {
            let repo = super::repo::unlock(repo, &a.password)
                .await?
                .with_cache(super::repo::cache_dir());
            let all = repo.snapshots().await?;
            let spec = spec.unwrap_or(SnapshotSpec::Latest);
            let (snap, _) = repo.resolve(&all, &spec, &pqsync_core::Filter::default())?;
            let view = repo.snapshot_tree(snap).await?;
            Ok((view.url().to_string(), pqsync_core::events_in_tree(&view, q).await?))
        }
        None if spec.is_some() => Err(UsageError(format!(
            "{url} is not a snapshot repository, so it has no snapshot {source:?}; name the remote without the suffix"
        ))
        .into()),
        None => Ok((tree.url().to_string(), pqsync_core::events_in_tree(&tree, q).await?)),
    }
}

/// Whether `dir` is a database directory (not a directory remote or
/// repository): it has an event log or a manifest, and no repository
/// config.
fn is_database(dir: &Path) -> bool {
    !dir.join("config").is_file()
        && (dir.join("events").is_dir() || dir.join(pqsync_core::MANIFEST_PATH).is_file())
}
