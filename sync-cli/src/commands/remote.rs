//! `pqsync remote`: which remote a directory last synced with.

use anyhow::Result;

use crate::cli::RemoteArgs;
use crate::printer::Printer;
use crate::ExitStatus;

/// Prints the recorded remote, or says there is none (exit 1).
pub fn run(args: &RemoteArgs, printer: &Printer) -> Result<ExitStatus> {
    match pqsync_core::last_remote(&args.dir)? {
        Some(url) => {
            let caps = pqsync_core::remote_capabilities(&args.dir, &url);
            if printer.json {
                printer.json(&serde_json::json!({
                    "remote": url,
                    "conditionalWrites": caps.as_ref().map(|c| c.conditional_writes),
                    "probedAt": caps.as_ref().map(|c| c.probed_at.clone()),
                }));
            } else {
                println!("{url}");
                if printer.verbose > 0 || !printer.quiet {
                    match caps {
                        Some(c) if c.conditional_writes => eprintln!(
                            "conditional writes: enforced; commits are compare-and-swap (probed {})",
                            c.probed_at
                        ),
                        Some(c) => eprintln!(
                            "conditional writes: ignored by this store; commits are guarded by a lease (probed {})",
                            c.probed_at
                        ),
                        None => eprintln!("conditional writes: not probed yet (the first run that writes to this remote probes them)"),
                    }
                }
            }
            Ok(ExitStatus::Success)
        }
        None => {
            if printer.json {
                printer.json(&serde_json::json!({ "remote": null }));
            } else {
                printer.error(&format!(
                    "{} has not synced with a remote yet",
                    args.dir.display()
                ));
            }
            Ok(ExitStatus::Failure)
        }
    }
}
