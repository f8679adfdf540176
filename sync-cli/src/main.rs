//! `pqsync`: sync ParqueDB databases between local disk and object stores.
//!
//! The binary is a thin layer over `pqsync-core`: it parses arguments, opens
//! remotes through `pqsync-backends`, draws progress, and maps outcomes to
//! exit codes (0 ok, 1 error, 2 usage, 3 conflicts left unresolved).

mod cli;
mod commands;
mod printer;
mod progress;

use std::process::ExitCode;

use clap::Parser;

/// Documented exit statuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything succeeded (and, for `status --exit-code`, the trees agree).
    Success,
    /// An error, or `status --exit-code` found differences.
    Failure,
    /// The command line was wrong.
    Usage,
    /// Conflicts were left for a person to resolve.
    Conflicts,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        ExitCode::from(match s {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Conflicts => 3,
        })
    }
}

/// A command-line mistake, reported with exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    let printer = printer::Printer::new(&args.global);
    printer.init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pqsync: error: cannot start the runtime: {e}");
            return ExitStatus::Failure.into();
        }
    };
    match runtime.block_on(commands::run(args, &printer)) {
        Ok(status) => status.into(),
        Err(err) => {
            let usage = err.downcast_ref::<UsageError>().is_some();
            printer.error(&format!("{err:#}"));
            if usage {
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Failure.into()
            }
        }
    }
}
