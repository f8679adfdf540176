//! `pqsync health`: is the last sync or snapshot recent, is anything
//! pending, is the event log shipped; for cron, CI and monitoring.

use std::sync::Arc;

use anyhow::Result;
use chrono::{DateTime, Utc};
use pqsync_core::{Congestion, Health, Problem, Repository, SyncOptions, Thresholds};

use super::Session;
use crate::cli::{HealthArgs, HealthFormat};
use crate::ExitStatus;

/// The time ages are measured at: `PQSYNC_NOW` (RFC 3339) when set, else
/// now.
pub fn now() -> Result<DateTime<Utc>> {
    match std::env::var("PQSYNC_NOW") {
        Ok(t) if !t.is_empty() => Ok(DateTime::parse_from_rfc3339(&t)
            .map_err(|e| {
                crate::UsageError(format!(
                    "PQSYNC_NOW={t:?} is not an RFC 3339 time ({e}); write it as 2026-12-05T12:00:00Z"
                ))
            })?
            .with_timezone(&Utc)),
        _ => Ok(Utc::now()),
    }
}

/// Checks the remote or repository and prints the result in the chosen
/// format.
pub async fn run(a: &HealthArgs, s: &Session) -> Result<ExitStatus> {
    let format = if s.printer.is_json() {
        HealthFormat::Json
    } else {
        a.format
    };
    let checked = check(a, s).await;
    let health = match (checked, format) {
        (Ok(h), _) => h,
        (Err(e), HealthFormat::Nagios) => {
            let d = crate::diagnose::diagnose(&e, &s.remotes());
            println!("PQSYNC UNKNOWN - {}", d.message);
            return Ok(ExitStatus::Plugin(3));
        }
        (Err(e), _) => return Err(e),
    };
    let limits = Thresholds::new(a.max_age, a.max_pending, a.max_event_lag);
    let problems = health.problems(&limits);
    match format {
        HealthFormat::Text => println!("{}", text(&health, &problems)),
        HealthFormat::Json => {
            let mut doc = serde_json::to_value(&health)?;
            doc["healthy"] = problems.is_empty().into();
            doc["problems"] = serde_json::to_value(&problems)?;
            s.printer.emit(&doc);
        }
        HealthFormat::Prometheus => print!("{}", prometheus(&health, &problems)),
        HealthFormat::Nagios => {
            let (code, line) = nagios(&health, &problems, &limits);
            println!("{line}");
            return Ok(ExitStatus::Plugin(code));
        }
    }
    Ok(if problems.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

/// Opens the target (a repository when it holds one, else a synced
/// remote) and checks it.
async fn check(a: &HealthArgs, s: &Session) -> Result<Health> {
    let now = now()?;
    let local = a
        .dir
        .as_deref()
        .map(|d| super::local_tree(d, true))
        .transpose()?;
    let target = match (&a.target, &local) {
        (Some(t), _) => t.clone(),
        (None, Some(l)) => super::resolve_remote(None, l)?,
        (None, None) => {
            return Err(crate::UsageError(
                "name the remote or repository to check, or the database with -d".into(),
            )
            .into())
        }
    };
    let remote = s.parse_remote(&target)?;
    let congestion = Arc::new(Congestion::default());
    let tree = s.open_remote(&remote, &a.remote_flags, false, &congestion)?;
    let sync = SyncOptions::default();
    match Repository::open_if_any(tree.clone()).await? {
        Some(repo) => {
            let repo = super::repo::unlock(repo, &a.password)
                .await?
                .with_cache(super::repo::cache_dir());
            Ok(Health::of_repository(&repo, local, sync, now).await?)
        }
        None => Ok(Health::of_remote(tree, local, sync, now).await?),
    }
}

fn what(h: &Health) -> &'static str {
    if h.kind == "repository" {
        "snapshot"
    } else {
        "sync"
    }
}

/// `healthy: s3://b/p: last sync 2026-…Z (5m ago), 0 pending, event log 0 segment(s) behind; 1 request(s)`
fn text(h: &Health, problems: &[Problem]) -> String {
    let mut facts = vec![match (&h.last_success, h.age_seconds) {
        (Some(at), Some(age)) => format!("last {} {at} ({}s ago)", what(h), age),
        _ => format!("no {} yet", what(h)),
    }];
    if let Some(p) = h.pending {
        facts.push(format!("{} pending", p.total));
    }
    if let Some(l) = h.event_log {
        facts.push(format!(
            "event log {} segment(s) behind{}",
            l.segments_behind,
            l.lag_ms.map(|ms| format!(" ({ms} ms)")).unwrap_or_default()
        ));
    }
    let summary = format!(
        "{}: {}; {} request(s)",
        h.target,
        facts.join(", "),
        h.requests
    );
    if problems.is_empty() {
        format!("healthy: {summary}")
    } else {
        let reasons: Vec<&str> = problems.iter().map(|p| p.message.as_str()).collect();
        format!("unhealthy: {} ({summary})", reasons.join("; "))
    }
}

/// The monitoring-plugin line and code: CRITICAL for age or no success,
/// WARNING for pending files or event lag, with performance data.
fn nagios(h: &Health, problems: &[Problem], t: &Thresholds) -> (u8, String) {
    let critical = problems.iter().any(|p| matches!(p.kind, "never" | "age"));
    let (code, state) = match (critical, problems.is_empty()) {
        (true, _) => (2, "CRITICAL"),
        (false, false) => (1, "WARNING"),
        (false, true) => (0, "OK"),
    };
    let detail = if problems.is_empty() {
        match h.age_seconds {
            Some(age) => format!("last {} {age}s ago", what(h)),
            None => format!("no {} yet", what(h)),
        }
    } else {
        problems
            .iter()
            .map(|p| p.message.as_str())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let limit = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut perf = vec![format!(
        "age={}s;;{};0",
        h.age_seconds
            .map(|a| a.to_string())
            .unwrap_or_else(|| "U".into()),
        limit(t.max_age.map(|d| d.as_secs()))
    )];
    if let Some(p) = h.pending {
        perf.push(format!(
            "pending={};{};;0",
            p.total,
            limit(t.max_pending.map(|n| n as u64))
        ));
    }
    if let Some(l) = h.event_log {
        perf.push(format!(
            "event_lag={};{};;0",
            l.segments_behind,
            limit(t.max_event_lag)
        ));
    }
    (
        code,
        format!(
            "PQSYNC {state} - {}: {detail} | {}",
            h.target,
            perf.join(" ")
        ),
    )
}

/// The check's figures in Prometheus text format, labelled by remote.
fn prometheus(h: &Health, problems: &[Problem]) -> String {
    let label = format!("remote=\"{}\"", crate::metrics::escape_label(&h.target));
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{label}}} {v}\n"
            ));
        }
    };
    gauge(
        "pqsync_health_ok",
        "1 when every limit of the check holds.",
        Some(if problems.is_empty() { 1.0 } else { 0.0 }),
    );
    gauge(
        "pqsync_health_last_success_timestamp_seconds",
        "When the last sync committed or the newest snapshot was taken.",
        h.last_success
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis() as f64 / 1000.0),
    );
    gauge(
        "pqsync_health_age_seconds",
        "Seconds since the last success.",
        h.age_seconds.map(|a| a as f64),
    );
    gauge(
        "pqsync_health_pending_files",
        "Files that differ from the remote or the newest snapshot.",
        h.pending.map(|p| p.total as f64),
    );
    gauge(
        "pqsync_health_event_lag_segments",
        "Sealed event segments not yet on the remote.",
        h.event_log.map(|l| l.segments_behind as f64),
    );
    gauge(
        "pqsync_health_event_lag_seconds",
        "Time between the newest sealed event and the newest one shipped.",
        h.event_log
            .and_then(|l| l.lag_ms)
            .map(|ms| ms as f64 / 1000.0),
    );
    gauge(
        "pqsync_health_requests",
        "Requests the check made.",
        Some(h.requests as f64),
    );
    out
}
