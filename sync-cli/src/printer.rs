//! The one place that decides what reaches stdout and stderr.

use std::io::{IsTerminal, Write};

use crate::cli::GlobalArgs;

/// Output policy for a run.
#[derive(Debug, Clone)]
pub struct Printer {
    /// `--json`: stdout carries one JSON document and nothing else.
    pub json: bool,
    /// `-q`.
    pub quiet: bool,
    /// `-v` count.
    pub verbose: u8,
    /// Whether progress bars may be drawn.
    pub bars: bool,
}

impl Printer {
    /// The policy for these flags.
    pub fn new(g: &GlobalArgs) -> Self {
        Printer {
            json: g.json,
            quiet: g.quiet,
            verbose: g.verbose,
            bars: !g.no_progress && !g.quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Sends `tracing` output to stderr at a level set by `-v`.
    pub fn init_logging(&self) {
        let level = match (self.quiet, self.verbose) {
            (true, _) => "error",
            (false, 0) => "warn",
            // object_store logs each request it retries at info.
            (false, 1) => "warn,object_store::client::retry=info",
            (false, 2) => "pqsync=debug,pqsync_core=debug,info",
            (false, _) => "debug",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("PQSYNC_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .without_time()
            .try_init();
    }

    /// A line of human output (suppressed by `--json` and `-q`).
    pub fn info(&self, line: &str) {
        if !self.json && !self.quiet {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }

    /// A line shown with `-v` only.
    pub fn detail(&self, line: &str) {
        if self.verbose > 0 && !self.quiet {
            eprintln!("{line}");
        }
    }

    /// A warning on stderr (suppressed by `-q`).
    pub fn warn(&self, line: &str) {
        if !self.quiet {
            eprintln!("pqsync: warning: {line}");
        }
    }

    /// An error on stderr, one line.
    pub fn error(&self, line: &str) {
        let one_line = line.replace('\n', " ");
        eprintln!("pqsync: error: {one_line}");
    }

    /// The JSON document, when `--json` is set.
    pub fn json<T: serde::Serialize>(&self, value: &T) {
        if self.json {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut out, value);
            let _ = writeln!(out);
        }
    }
}

/// Formats a byte count for people: `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
