//! `pqsync`: sync ParqueDB databases between local disk and object stores.
//!
//! The binary is a thin layer over `pqsync-core`: it parses arguments, opens
//! remotes through `pqsync-backends`, draws progress, explains failures, and
//! maps outcomes to exit codes (0 ok, 1 error, 2 usage, 3 conflicts left
//! unresolved).

mod cli;
mod commands;
mod config;
mod diagnose;
mod metrics;
mod printer;
mod progress;
mod watch;

use std::process::ExitCode;

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
    /// A monitoring plugin's code (`health --format nagios`): 0 OK,
    /// 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    Plugin(u8),
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> Self {
        ExitCode::from(match s {
            ExitStatus::Success => 0,
            ExitStatus::Failure => 1,
            ExitStatus::Usage => 2,
            ExitStatus::Conflicts => 3,
            ExitStatus::Plugin(code) => code,
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
    one_malloc_arena();
    run().into()
}

/// Keeps glibc's allocator to one arena unless `MALLOC_ARENA_MAX` says
/// otherwise. With an arena per thread, memory that the scan's and the
/// transfers' threads freed stays in their arenas, out of reach of the
/// threads that build the plan and the commit: a first push of a million
/// files peaked 250 to 510 MiB above its live heap, differently on each run,
/// and about 170 MiB above it with one arena. The threads here mostly wait
/// on the disk and the network, so they rarely contend for the one arena.
#[allow(unsafe_code)]
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread
        // exists; mallopt only sets a tunable of the allocator.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Parses the command line, runs the command, and explains a failure.
fn run() -> ExitStatus {
    let args = match with_config(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(message) => return config_failure(&message),
    };
    let (args, command_name) = match parse(args) {
        Ok(parsed) => parsed,
        Err(e) => return clap_failure(e),
    };
    // One printer for the whole process: progress bars, logs and the
    // failure report all go through it.
    let printer: &'static printer::Printer =
        Box::leak(Box::new(printer::Printer::new(&args.output)));
    printer.init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pqsync: error: cannot start the runtime: {e}");
            return ExitStatus::Failure;
        }
    };
    if let Some(home) = args.state_dir.clone() {
        commands::set_state_home(home);
    }
    let session = commands::Session::new(printer);
    if let Some(path) = &args.metrics_file {
        printer.capture_documents();
        session.set_metrics(path.clone(), command_name.clone());
    }
    let started = std::time::Instant::now();
    let status = match runtime.block_on(commands::run(args.command, &session)) {
        Ok(status) => status,
        Err(err) => {
            let d = diagnose::diagnose(&err, &session.remotes());
            printer.failure(&d, &diagnose::chain(&err));
            d.exit_status()
        }
    };
    let Some(path) = &args.metrics_file else {
        return status;
    };
    if session
        .metered_rounds
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        // `--watch` wrote each round's figures as it ended.
        return status;
    }
    let run = metrics::Run {
        command: command_name,
        remotes: session.usage(),
        duration: started.elapsed(),
        success: status == ExitStatus::Success,
        document: printer.last_document(),
    };
    match metrics::write(path, &run, std::time::SystemTime::now()) {
        Ok(()) => status,
        Err(e) => {
            eprintln!(
                "pqsync: error: cannot write metrics to {}: {e}; check that its directory exists and is writable",
                path.display()
            );
            if status == ExitStatus::Success {
                ExitStatus::Failure
            } else {
                status
            }
        }
    }
}

/// Parses the command line, and names the subcommand.
fn parse(args: Vec<std::ffi::OsString>) -> Result<(cli::Cli, String), clap::Error> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = cli::Cli::command().try_get_matches_from(args)?;
    let name = matches.subcommand_name().unwrap_or_default().to_string();
    Ok((cli::Cli::from_arg_matches(&matches)?, name))
}

/// The command line with the config file applied (see [`config`]).
fn with_config(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    use clap::CommandFactory;
    let Some((path, named)) = config::locate(&args) else {
        return Ok(args);
    };
    match config::load(&path, named)? {
        Some(c) => config::apply(&c, &args, &cli::Cli::command()),
        None => Ok(args),
    }
}

/// A config file that cannot be used: a usage error, before anything runs.
fn config_failure(message: &str) -> ExitStatus {
    if std::env::args().any(|a| a == "--json") {
        let doc = serde_json::json!({
            "success": false,
            "error": { "kind": "usage", "message": message, "path": null },
            "warnings": [],
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
    }
    eprintln!("pqsync: error: {message}");
    ExitStatus::Usage
}

/// A command line clap refused (or `--help`/`--version`, which clap prints).
/// With `--json` anywhere on it, the refusal is also a JSON document.
fn clap_failure(e: clap::Error) -> ExitStatus {
    use clap::error::ErrorKind;
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !informational && std::env::args().any(|a| a == "--json") {
        let text = e.render().to_string();
        let line = text
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("invalid command line")
            .trim_start_matches("error: ")
            .to_string();
        let doc = serde_json::json!({
            "success": false,
            "error": { "kind": "usage", "message": line, "path": null },
            "warnings": [],
        });
        println!("{}", serde_json::to_string_pretty(&doc).expect("JSON"));
    }
    let _ = e.print();
    if informational {
        ExitStatus::Success
    } else {
        ExitStatus::Usage
    }
}
