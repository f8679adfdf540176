//! `pqsync remote`: which remote a directory last synced with.

use anyhow::Result;

use crate::cli::RemoteArgs;
use crate::printer::Printer;
use crate::ExitStatus;

/// Prints the recorded remote, or says there is none (exit 1).
pub fn run(args: &RemoteArgs, printer: &Printer) -> Result<ExitStatus> {
    match pqsync_core::last_remote(&args.dir)? {
        Some(url) => {
            if printer.json {
                printer.json(&serde_json::json!({ "remote": url }));
            } else {
                println!("{url}");
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
