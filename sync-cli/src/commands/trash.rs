//! `pqsync trash`: list, restore or empty the versions runs kept.

use std::sync::Arc;

use anyhow::Result;
use pqsync_core::{Congestion, LocalTree, StoreTree, Trash, TrashedFile};
use serde_json::json;

use super::Session;
use crate::cli::{TrashAction, TrashArgs, TrashPlace};
use crate::printer::bytes;
use crate::{ExitStatus, UsageError};

/// The trash a command works on.
enum Place {
    Remote(StoreTree, Trash),
    Local(LocalTree),
}

impl Place {
    fn open(p: &TrashPlace, s: &Session) -> Result<Place> {
        let Some(url) = &p.remote else {
            return Ok(Place::Local(super::local_tree(&p.dir, true)?));
        };
        let remote = s.parse_remote(url)?;
        let congestion = Arc::new(Congestion::default());
        let tree = s.open_remote(&remote, &p.remote_flags, false, &congestion)?;
        let trash = match &p.backup_dir {
            Some(prefix) => Trash::At(prefix.clone()),
            None => Trash::Default,
        };
        Ok(Place::Remote(tree, trash))
    }

    fn name(&self) -> String {
        match self {
            Place::Remote(t, Trash::At(prefix)) => format!("{} (under {prefix})", t.url()),
            Place::Remote(t, _) => t.url().to_string(),
            Place::Local(t) => t.root().display().to_string(),
        }
    }

    async fn list(&self) -> Result<Vec<TrashedFile>> {
        Ok(match self {
            Place::Remote(t, trash) => t.trash_list(trash).await?,
            Place::Local(t) => t.trash_list()?,
        })
    }
}

/// Runs `trash list|restore|empty`.
pub async fn run(a: &TrashArgs, s: &Session) -> Result<ExitStatus> {
    match &a.action {
        TrashAction::List(p) => list(p, s).await,
        TrashAction::Restore(r) => restore(&r.place, r.run.as_deref(), &r.paths, s).await,
        TrashAction::Empty(e) => empty(&e.place, e.older_than, s).await,
    }
}

async fn list(p: &TrashPlace, s: &Session) -> Result<ExitStatus> {
    let place = Place::open(p, s)?;
    let files = place.list().await?;
    let printer = s.printer;
    printer.document(&json!({ "trash": place.name(), "files": files }));
    for f in &files {
        printer.answer(&format!("{}  {:>10}  {}", f.run, bytes(f.size), f.path));
    }
    let total: u64 = files.iter().map(|f| f.size).sum();
    printer.note(&format!(
        "{} kept version(s), {} in all, in the trash of {}",
        files.len(),
        bytes(total),
        place.name()
    ));
    Ok(ExitStatus::Success)
}

/// Whether `path` is `want` or lies under the folder `want`.
fn selected(path: &str, wanted: &[String]) -> bool {
    wanted.is_empty()
        || wanted.iter().any(|w| {
            let w = w.trim_end_matches('/');
            path == w || path.strip_prefix(w).is_some_and(|r| r.starts_with('/'))
        })
}

async fn restore(
    p: &TrashPlace,
    run: Option<&str>,
    paths: &[String],
    s: &Session,
) -> Result<ExitStatus> {
    let place = Place::open(p, s)?;
    let all = place.list().await?;
    // Each path's latest kept version (runs sort by time), or run's.
    let mut chosen: std::collections::BTreeMap<String, TrashedFile> = Default::default();
    for f in all {
        if run.is_some_and(|r| r != f.run) || !selected(&f.path, paths) {
            continue;
        }
        chosen.insert(f.path.clone(), f);
    }
    if chosen.is_empty() {
        return Err(UsageError(format!(
            "nothing in the trash of {} matches{}{}; see `pqsync trash list`",
            place.name(),
            run.map(|r| format!(" run {r}")).unwrap_or_default(),
            if paths.is_empty() {
                String::new()
            } else {
                format!(" the paths {}", paths.join(", "))
            }
        ))
        .into());
    }
    let dir = super::local_tree(&p.dir, false)?;
    let _lock = dir.lock()?;
    let this_run = Trash::new_run_name();
    let printer = s.printer;
    let mut restored = Vec::new();
    let mut errors = Vec::new();
    for f in chosen.values() {
        let stream = match &place {
            Place::Remote(t, _) => t.trash_open(&f.location).await,
            Place::Local(t) => t.trash_open(&f.run, &f.path).await,
        };
        let r = match stream {
            Ok(stream) => dir.restore_kept(&f.path, stream, f.size, &this_run).await,
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => {
                printer.detail(&format!("restored {} (kept by run {})", f.path, f.run));
                restored.push(f.path.clone());
            }
            Err(e) => {
                printer.error(&format!("{} (restore): {e}", f.path));
                errors.push(json!({ "path": f.path, "message": e.to_string() }));
            }
        }
    }
    printer.document(&json!({ "restored": restored, "errors": errors }));
    printer.info(&format!(
        "restored {} file(s) into {} from the trash of {}{}; `pqsync push` sends them",
        restored.len(),
        p.dir.display(),
        place.name(),
        if errors.is_empty() {
            String::new()
        } else {
            format!("; {} failed", errors.len())
        }
    ));
    Ok(if errors.is_empty() {
        ExitStatus::Success
    } else {
        ExitStatus::Failure
    })
}

async fn empty(
    p: &TrashPlace,
    older_than: Option<std::time::Duration>,
    s: &Session,
) -> Result<ExitStatus> {
    let place = Place::open(p, s)?;
    let deleted = match &place {
        Place::Remote(t, trash) => t.trash_empty(trash, older_than).await?,
        Place::Local(t) => t.trash_empty(older_than)?,
    };
    s.printer
        .document(&json!({ "trash": place.name(), "deleted": deleted }));
    s.printer.info(&format!(
        "deleted {deleted} kept version(s) from the trash of {}",
        place.name()
    ));
    Ok(ExitStatus::Success)
}
