//! `stats`: what a database holds, per namespace and for the event log,
//! from manifests and Parquet footers only.
//!
//! On a remote with a manifest this is one GET for the manifest plus one or
//! two ranged GETs per Parquet file under `data/`, `rels/` and `events/`,
//! and one GET for the event segment manifest.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;

use super::events::EventManifest;
use super::inspect::{inspect, Inspection};
use crate::error::{Error, Result};
use crate::layout::{
    is_parquet, is_segment_file, namespace_of, Role, CURRENT_EVENTS, EVENT_MANIFESTS,
};
use crate::tree::Tree;

/// Figures for one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct NamespaceStats {
    /// Files of the namespace: `data/{ns}/**`, its relationship files and
    /// `indexes/*/{ns}.*`.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Rows of `data/{ns}/*.parquet`, from their footers.
    pub entities: u64,
    /// Rows of `rels/forward/{ns}.parquet`: relationships from the namespace.
    pub forward_relationships: u64,
    /// Rows of `rels/reverse/{ns}.parquet`: relationships into it.
    pub reverse_relationships: u64,
}

/// Figures for the event log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct EventStats {
    /// Segment files (`events/seg-*.parquet`, archived ones included).
    pub segments: usize,
    /// Events in all segments and `events/current.parquet`.
    pub events: u64,
    /// Events in `events/current.parquet`.
    pub current_events: u64,
    /// Earliest event time, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_ts: Option<i64>,
    /// Latest event time, ms since the epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ts: Option<i64>,
    /// Earliest event time, ISO-8601.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Latest event time, ISO-8601.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Bytes of the event log.
    pub bytes: u64,
}

/// Figures for a whole database.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// The directory or remote.
    pub target: String,
    /// Files, from the manifest (or a listing when there is none).
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Per namespace.
    pub namespaces: BTreeMap<String, NamespaceStats>,
    /// The event log, if there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<EventStats>,
    /// Problems met on the way (unreadable footers, seq gaps).
    pub warnings: Vec<String>,
    /// Requests made to the remote.
    pub requests: u64,
}

/// Gathers [`Stats`] for a tree.
///
/// # Errors
/// When the tree cannot be read; an unreadable file is a warning.
pub async fn stats(tree: &dyn Tree, concurrency: usize) -> Result<Stats> {
    let mut out = Stats {
        target: tree.name(),
        ..Default::default()
    };
    let files: BTreeMap<String, u64> = match tree.manifest().await? {
        Some(m) => m.files.into_values().map(|e| (e.path, e.size)).collect(),
        None => {
            let (files, warnings) = tree.list().await?;
            out.warnings.extend(warnings);
            out.warnings
                .push("no _meta/manifest.json: figures come from a listing".into());
            files
        }
    };
    out.files = files.len();
    out.bytes = files.values().sum();
    let footers_of: Vec<(&String, u64)> = files
        .iter()
        .filter(|(p, _)| {
            is_parquet(p)
                && (p.starts_with("events/")
                    || matches!(
                        namespace_of(p),
                        Some((_, Role::Data | Role::Forward | Role::Reverse))
                    ))
        })
        .map(|(p, &s)| (p, s))
        .collect();
    let footers: Vec<(&String, Result<Inspection>)> = futures::stream::iter(footers_of)
        .map(|(p, s)| async move { (p, inspect(tree, p, s, None, true, false).await) })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut rows: BTreeMap<&str, u64> = BTreeMap::new();
    let mut ts: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (p, got) in footers {
        match got {
            Ok(Inspection {
                parquet: Some(Ok(info)),
                ..
            }) => {
                rows.insert(p, info.rows);
                if let Some(r) = info.ts_range {
                    ts.insert(p, r);
                }
            }
            Ok(Inspection {
                parquet: Some(Err(why)),
                ..
            }) => out.warnings.push(format!("{p}: {why}")),
            Ok(_) => {}
            Err(e) if e.is_not_found() || matches!(e, Error::Io { .. }) => {
                out.warnings.push(format!("{p}: cannot be read: {e}"));
            }
            Err(e) => return Err(e),
        }
    }
    for (p, &size) in &files {
        let Some((ns, role)) = namespace_of(p) else {
            continue;
        };
        let n = out.namespaces.entry(ns.to_string()).or_default();
        n.files += 1;
        n.bytes += size;
        let r = rows.get(p.as_str()).copied().unwrap_or(0);
        match role {
            Role::Data if is_parquet(p) => n.entities += r,
            Role::Forward => n.forward_relationships += r,
            Role::Reverse => n.reverse_relationships += r,
            _ => {}
        }
    }
    out.events = event_stats(tree, &files, &rows, &ts, &mut out.warnings).await?;
    out.requests = tree.requests();
    Ok(out)
}

async fn event_stats(
    tree: &dyn Tree,
    files: &BTreeMap<String, u64>,
    rows: &BTreeMap<&str, u64>,
    ts: &BTreeMap<&str, (i64, i64)>,
    warnings: &mut Vec<String>,
) -> Result<Option<EventStats>> {
    let event_files: Vec<&String> = files.keys().filter(|p| p.starts_with("events/")).collect();
    if event_files.is_empty() {
        return Ok(None);
    }
    let mut e = EventStats::default();
    let mut range: Option<(i64, i64)> = None;
    let mut widen = |lo: i64, hi: i64| {
        range = Some(range.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
    };
    for p in &event_files {
        e.bytes += files[*p];
        if !is_parquet(p) {
            continue;
        }
        let n = rows.get(p.as_str()).copied().unwrap_or(0);
        if is_segment_file(p) {
            e.segments += 1;
            e.events += n;
        } else if p.as_str() == CURRENT_EVENTS {
            e.current_events = n;
            e.events += n;
        }
        if let Some(&(lo, hi)) = ts.get(p.as_str()) {
            widen(lo, hi);
        }
    }
    if let Some(mpath) = EVENT_MANIFESTS.iter().find(|p| files.contains_key(**p)) {
        match tree.read_all(mpath).await.map(|b| EventManifest::parse(&b)) {
            Ok(Ok(m)) => {
                for s in &m.segments {
                    if let (Some(lo), Some(hi)) = (s.min_ts, s.max_ts) {
                        widen(lo, hi);
                    }
                }
                warnings.extend(
                    m.seq_problems()
                        .into_iter()
                        .map(|w| format!("{mpath}: {w}")),
                );
            }
            Ok(Err(why)) => warnings.push(format!("{mpath}: {why}")),
            Err(err) if err.is_not_found() || matches!(err, Error::Io { .. }) => {
                warnings.push(format!("{mpath}: cannot be read: {err}"));
            }
            Err(err) => return Err(err),
        }
    }
    if let Some((lo, hi)) = range {
        e.min_ts = Some(lo);
        e.max_ts = Some(hi);
        e.from = iso_ms(lo);
        e.to = iso_ms(hi);
    }
    Ok(Some(e))
}

fn iso_ms(ms: i64) -> Option<String> {
    let t = crate::manifest::Timestamp::from_millis(ms);
    t.to_datetime().map(|_| t.to_string())
}
