//! Recovery from the event log (the backup guide's "accidental deletion"
//! and "corrupted data" procedures): an entity or a namespace as it stood
//! at a time, and a point-in-time restore that carries the event segments
//! sealed after the snapshot it restores.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Result;
use chrono::{DateTime, Utc};
use pqsync_core::{EventManifest, EventQuery, Repository, Snapshot, SnapshotSpec};
use serde_json::{json, Value};

use super::Session;
use crate::cli::RestoreArgs;
use crate::{ExitStatus, UsageError};

/// A recovery needs every event file: a state rebuilt without one would be
/// wrong without showing it.
fn complete(scan: pqsync_core::EventScan) -> Result<pqsync_core::EventScan> {
    match scan.unreadable.first() {
        None => Ok(scan),
        Some((file, why)) => Err(anyhow::anyhow!(
            "event file {file} cannot be read ({why}); the state cannot be rebuilt without it: restore the snapshot and check it with `pqsync verify`"
        )),
    }
}

/// `restore --entity NS/ID --at T` and `restore --namespace NS --at T
/// --ndjson`: read from the snapshot named (default: the latest), with a
/// namespace's base taken from the newest snapshot whose event log ends at
/// or before T.
pub async fn restore_from_events(a: &RestoreArgs, s: &Session) -> Result<ExitStatus> {
    let (url, spec) = super::repo::split_spec(&a.repository)?;
    let at = pqsync_core::parse_time(a.at.as_deref().expect("clap requires --at"))
        .map_err(|e| UsageError(e.to_string()))?;
    let at_ms = at.timestamp_millis();
    let repo = super::repo::open(s, &url, &a.remote_flags, &a.password).await?;
    let all = repo.snapshots().await?;
    let filter = super::repo::filter(&a.filter);
    let (newest, _) = repo.resolve(&all, &spec.unwrap_or(SnapshotSpec::Latest), &filter)?;
    let view = repo.snapshot_tree(newest).await?;
    if let Some(entity) = &a.entity {
        let target = super::events::target_of(entity)?;
        let q = EventQuery {
            target: Some(target.clone()),
            before: Some(at_ms + 1),
            full: true,
            ..EventQuery::default()
        };
        let scan = complete(pqsync_core::events_in_tree(&view, &q).await?)?;
        let state = pqsync_core::entity_at(&scan.events, &target, at_ms);
        let doc = json!({
            "entity": entity,
            "at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "snapshot": newest.short_id(),
            "exists": state.state.is_some(),
            "state": state.state,
            "deleted": state.deleted,
            "lastEvent": state.last_event,
        });
        if s.printer.is_json() {
            s.printer.document(&doc);
        } else if let Some(st) = &state.state {
            println!("{}", serde_json::to_string_pretty(st)?);
        }
        match (&state.last_event, &state.deleted) {
            (Some(e), Some(before)) => s.printer.note(&format!(
                "{entity} was deleted at {} (event {}); its state before: {before}",
                ms(e.ts),
                e.id
            )),
            (None, _) => s.printer.note(&format!(
                "{entity} has no event at or before {} in snapshot {}'s event log",
                ms(at_ms),
                newest.short_id()
            )),
            _ => {}
        }
        return Ok(ExitStatus::Success);
    }
    let ns = a
        .namespace
        .as_deref()
        .expect("clap requires --entity or --namespace");
    // The base: the newest snapshot whose event log ends at or before T.
    let base = all.iter().rev().filter(|sn| filter.matches(sn)).find(|sn| {
        sn.record
            .event_log
            .as_ref()
            .and_then(|c| c.max_ts)
            .is_some_and(|m| m <= at_ms)
    });
    let (mut entities, from) = match base {
        Some(b) => {
            let tree = repo.snapshot_tree(b).await?;
            let from = b.record.event_log.as_ref().and_then(|c| c.max_ts);
            (pqsync_core::entities_in_tree(&tree, ns).await?, from)
        }
        None => (BTreeMap::new(), None),
    };
    let q = EventQuery {
        namespace: Some(ns.to_string()),
        after: from.map(|f| f + 1),
        before: Some(at_ms + 1),
        full: true,
        ..EventQuery::default()
    };
    let scan = complete(pqsync_core::events_in_tree(&view, &q).await?)?;
    pqsync_core::replay(&mut entities, &scan.events, ns);
    let mut out = std::io::stdout().lock();
    for v in entities.values() {
        serde_json::to_writer(&mut out, v)?;
        writeln!(out)?;
    }
    drop(out);
    s.printer.note(&format!(
        "{} entit(ies) of {ns} at {}: {} from snapshot {}, then {} event(s) from snapshot {}",
        entities.len(),
        ms(at_ms),
        base.map_or("none".to_string(), |b| format!("base {}", b.short_id())),
        base.map_or("-", |b| b.short_id()),
        scan.events.len(),
        newest.short_id()
    ));
    Ok(ExitStatus::Success)
}

fn ms(t: i64) -> String {
    DateTime::from_timestamp_millis(t)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| t.to_string())
}

/// What a point-in-time restore added beyond its snapshot.
pub struct RestorePoint {
    /// The document written to `_meta/restore-point.json`.
    pub doc: Value,
    /// The line the output states.
    pub line: String,
}

/// After restoring `snap` into `dir` for time `at`: copies the sealed
/// event segments of later snapshots that hold events at or before `at`,
/// and writes `_meta/restore-point.json`.
///
/// # Errors
/// Store and I/O errors.
pub async fn add_later_segments(
    repo: &Repository,
    all: &[Snapshot],
    snap: &Snapshot,
    at: DateTime<Utc>,
    dir: &Path,
) -> Result<RestorePoint> {
    let at_ms = at.timestamp_millis();
    let covered = snap.record.event_log.clone().unwrap_or_default();
    let mut last = (covered.max_ts, covered.last_event_id.clone());
    let mut added: Vec<Value> = Vec::new();
    let mut have = covered.last_seq.unwrap_or(0);
    let later = all
        .iter()
        .filter(|s| s.record.database_id == snap.record.database_id && s.time() > snap.time());
    for l in later {
        let view = repo.snapshot_tree(l).await?;
        let Ok(bytes) = view.read_all("events/_manifest.json").await else {
            continue;
        };
        let Ok(m) = EventManifest::parse(&bytes) else {
            continue;
        };
        let mut segs: Vec<_> = m
            .segments
            .iter()
            .filter(|g| g.seq > have && g.min_ts.is_some_and(|t| t <= at_ms))
            .collect();
        segs.sort_by_key(|g| g.seq);
        let mut files = Vec::new();
        for g in segs {
            let rel = g.file();
            let bytes = view.read_all(&rel).await?;
            let path = dir.join(&rel);
            if let Some(p) = path.parent() {
                std::fs::create_dir_all(p)?;
            }
            let tmp = path.with_extension("parquet.pqsync-part");
            std::fs::write(&tmp, &bytes)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            have = g.seq;
            files.push(rel.clone());
            added.push(json!({
                "seq": g.seq, "path": rel, "minTs": g.min_ts, "maxTs": g.max_ts,
                "count": g.count, "fromSnapshot": l.short_id(),
            }));
        }
        if !files.is_empty() {
            let q = EventQuery::between(None, Some(at_ms + 1));
            let scan = complete(pqsync_core::events_in_tree(&view, &q).await?)?;
            if let Some(e) = scan.events.iter().rfind(|e| files.contains(&e.file)) {
                last = (Some(e.ts), Some(e.id.clone()));
            }
        }
    }
    let gap = last.0.map(|t| at_ms - t);
    let doc = json!({
        "version": 1,
        "at": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "snapshot": snap.id,
        "snapshotTime": snap.record.time,
        "lastEventId": last.1,
        "lastEventTs": last.0,
        "gapMs": gap,
        "segmentsAdded": added,
    });
    let meta = dir.join("_meta");
    std::fs::create_dir_all(&meta)?;
    let tmp = meta.join("restore-point.json.pqsync-part");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&doc)?)?;
    std::fs::rename(&tmp, meta.join("restore-point.json"))?;
    let line = format!(
        "restore point {}: snapshot {} plus {} later segment(s); the last event included is {} at {}, {} before the time asked for",
        ms(at_ms),
        snap.short_id(),
        added.len(),
        last.1.as_deref().unwrap_or("none"),
        last.0.map_or("-".into(), ms),
        gap.map_or("an unknown time".into(), |g| format!("{:.3} s", g as f64 / 1000.0))
    );
    Ok(RestorePoint { doc, line })
}
