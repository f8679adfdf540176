//! The one place that decides what reaches stdout and stderr.
//!
//! A [`Printer`] has one mode: quiet (errors only), normal, verbose, or JSON
//! (stdout carries exactly one JSON document, on success and on failure).
//! Every line for stderr goes through it, and while progress bars are drawn
//! it prints through the bars' `suspend`, so a warning never tears a bar.

use std::io::Write;
use std::sync::Mutex;

use indicatif::MultiProgress;
use serde_json::{json, Value};

use crate::cli::OutputArgs;
use crate::diagnose::Diagnosis;

/// What the user asked to see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `-q`: errors only.
    Quiet,
    /// The default.
    Normal,
    /// `-v` (1) or `-vv` (2 and more).
    Verbose(u8),
    /// `--json`: one JSON document on stdout.
    Json,
}

/// Output policy and the live progress bars of a run.
#[derive(Debug)]
pub struct Printer {
    mode: Mode,
    /// `-v` count, also in JSON mode (for logs on stderr).
    verbosity: u8,
    quiet: bool,
    /// Whether progress bars may be drawn.
    bars_allowed: bool,
    /// The bars while they are drawn.
    bars: Mutex<Option<MultiProgress>>,
    /// Warnings printed so far, for the JSON document.
    warnings: Mutex<Vec<String>>,
    /// The last document a command produced, kept when metrics are
    /// written (`--metrics-file`).
    captured: Mutex<Option<Value>>,
    capture: std::sync::atomic::AtomicBool,
}

impl Printer {
    /// The policy for these flags.
    pub fn new(o: &OutputArgs) -> Self {
        use std::io::IsTerminal;
        let mode = match (o.json, o.quiet, o.verbose) {
            (true, _, _) => Mode::Json,
            (false, true, _) => Mode::Quiet,
            (false, false, 0) => Mode::Normal,
            (false, false, n) => Mode::Verbose(n),
        };
        Printer {
            mode,
            verbosity: o.verbose,
            quiet: o.quiet,
            bars_allowed: !o.no_progress && !o.quiet && std::io::stderr().is_terminal(),
            bars: Mutex::new(None),
            warnings: Mutex::new(Vec::new()),
            captured: Mutex::new(None),
            capture: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Keeps every document from now on, for [`Printer::last_document`].
    pub fn capture_documents(&self) {
        self.capture
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last document a command produced (with capture on).
    pub fn last_document(&self) -> Option<Value> {
        self.captured.lock().expect("captured lock").clone()
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether stdout is one JSON document.
    pub fn is_json(&self) -> bool {
        self.mode == Mode::Json
    }

    /// Whether per-file lines are wanted.
    pub fn is_verbose(&self) -> bool {
        self.verbosity > 0 && !self.quiet
    }

    /// Whether progress bars may be drawn.
    pub fn bars_allowed(&self) -> bool {
        self.bars_allowed
    }

    /// Sends `tracing` output to stderr at a level set by `-v`, through the
    /// printer (so it never tears a bar).
    pub fn init_logging(&'static self) {
        let level = match (self.quiet, self.verbosity) {
            (true, _) => "error",
            (false, 0) => "warn",
            // object_store logs each request it retries at info.
            (false, 1) => "warn,object_store::client::retry=info",
            (false, 2) => "pqsync=debug,pqsync_core=debug,pqsync_backends=debug,info",
            (false, _) => "debug",
        };
        let filter = tracing_subscriber::EnvFilter::try_from_env("PQSYNC_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(move || LogWriter(self))
            .with_target(false)
            .without_time()
            .try_init();
    }

    /// Draws `bars` until [`Printer::detach_bars`]: stderr lines go through
    /// their `suspend` meanwhile.
    pub fn attach_bars(&self, bars: MultiProgress) {
        *self.bars.lock().expect("bars lock") = Some(bars);
    }

    /// Stops routing stderr lines through the bars.
    pub fn detach_bars(&self) {
        *self.bars.lock().expect("bars lock") = None;
    }

    /// Writes one line to stderr, through the bars if they are drawn.
    fn stderr_line(&self, line: &str) {
        let bars = self.bars.lock().expect("bars lock").clone();
        match bars {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// A line of human output on stdout (not with `--json` or `-q`).
    pub fn info(&self, line: &str) {
        if matches!(self.mode, Mode::Normal | Mode::Verbose(_)) {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }

    /// The command's answer on stdout, also with `-q` (not with `--json`,
    /// where the document is the answer): `remote`'s URL, `list`'s paths.
    pub fn answer(&self, line: &str) {
        if !self.is_json() {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }

    /// A note about the answer on stderr (not with `-q`).
    pub fn note(&self, line: &str) {
        if !self.quiet {
            self.stderr_line(line);
        }
    }

    /// A line on stderr with `-v` only.
    pub fn detail(&self, line: &str) {
        if self.is_verbose() {
            self.stderr_line(line);
        }
    }

    /// A warning on stderr (not with `-q`); the JSON document carries it too.
    pub fn warn(&self, line: &str) {
        self.warnings
            .lock()
            .expect("warnings lock")
            .push(line.to_string());
        if !self.quiet {
            self.stderr_line(&format!("pqsync: warning: {line}"));
        }
    }

    /// An error about one item of a run that goes on (a failed file), one
    /// line on stderr.
    pub fn error(&self, line: &str) {
        self.stderr_line(&format!("pqsync: error: {}", line.replace('\n', " ")));
    }

    /// The JSON document (with `--json` only). An object without a
    /// `warnings` field gets one with the warnings printed so far.
    pub fn document<T: serde::Serialize>(&self, value: &T) {
        if self.capture.load(std::sync::atomic::Ordering::Relaxed) {
            *self.captured.lock().expect("captured lock") = serde_json::to_value(value).ok();
        }
        if self.is_json() {
            self.emit(value);
        }
    }

    /// A JSON document on stdout whatever the mode (`list --format json`),
    /// with `warnings` as for [`Printer::document`].
    pub fn emit<T: serde::Serialize>(&self, value: &T) {
        let mut doc = serde_json::to_value(value).expect("documents serialise");
        if let Value::Object(map) = &mut doc {
            if !map.contains_key("warnings") {
                let warnings = self.warnings.lock().expect("warnings lock").clone();
                map.insert("warnings".into(), json!(warnings));
            }
        }
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, &doc);
        let _ = writeln!(out);
    }

    /// Reports a failure that ends the command: one line on stderr naming
    /// the cause and the fix (with `-v`, the error's chain once); with
    /// `--json`, also `{"success": false, "error": {...}}` on stdout.
    pub fn failure(&self, d: &Diagnosis, chain: &[String]) {
        self.stderr_line(&format!("pqsync: error: {}", d.message));
        if self.is_verbose() {
            for cause in chain {
                self.stderr_line(&format!("  caused by: {cause}"));
            }
        }
        if self.is_json() {
            self.document(&json!({
                "success": false,
                "error": { "kind": d.kind, "message": d.message, "path": d.path },
            }));
        }
    }
}

/// `tracing`'s writer: whole lines through the printer.
struct LogWriter(&'static Printer);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        self.0.stderr_line(text.trim_end_matches('\n'));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Formats a byte count for people (`1.50 MiB`), as indicatif does.
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}
