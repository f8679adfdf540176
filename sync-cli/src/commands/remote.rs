//! `pqsync remote`: which remote a directory last synced with.

use anyhow::Result;
use serde_json::json;

use super::Session;
use crate::cli::RemoteArgs;
use crate::ExitStatus;

/// Prints the recorded remote, or says there is none (exit 1).
pub fn run(a: &RemoteArgs, s: &Session) -> Result<ExitStatus> {
    let printer = s.printer;
    let dir = super::local_tree(&a.dir, true)?;
    let Some(url) = dir.last_remote()? else {
        printer.document(&json!({ "remote": null }));
        if !printer.is_json() {
            printer.error(&format!(
                "{} has not synced with a remote yet; push or pull with a REMOTE first",
                a.dir.display()
            ));
        }
        return Ok(ExitStatus::Failure);
    };
    let caps = dir.remote_capabilities(&url);
    printer.document(&json!({
        "remote": url,
        "conditionalWrites": caps.as_ref().map(|c| c.conditional_writes),
        "probedAt": caps.as_ref().map(|c| c.probed_at.clone()),
    }));
    if printer.is_json() {
        return Ok(ExitStatus::Success);
    }
    printer.answer(&url);
    let line = match caps {
        Some(c) if c.conditional_writes => format!(
            "conditional writes: enforced; commits are compare-and-swap (probed {})",
            c.probed_at
        ),
        Some(c) => format!(
            "conditional writes: ignored by this store; commits are guarded by a lease (probed {})",
            c.probed_at
        ),
        None => "conditional writes: not probed yet (the first run that writes to this remote probes them)".into(),
    };
    printer.note(&line);
    Ok(ExitStatus::Success)
}
