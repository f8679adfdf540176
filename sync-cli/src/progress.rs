//! Progress display: indicatif bars on a terminal, log lines otherwise.

use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pqsync_core::{Event, Operation, Progress, Reporter};

use crate::printer::{human_bytes, Printer};

/// Reports engine progress to a person.
pub struct CliReporter {
    printer: Printer,
    bars: Option<(MultiProgress, ProgressBar, ProgressBar)>,
}

impl CliReporter {
    /// Bars when the printer allows them, else `-v` log lines only.
    pub fn new(printer: &Printer) -> Self {
        let bars = printer.bars.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let files = multi.add(ProgressBar::new(0));
            files.set_style(
                ProgressStyle::with_template("{prefix:>11} [{bar:30}] {pos}/{len} files {wide_msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            files.set_prefix("comparing");
            let bytes = multi.add(ProgressBar::new(0));
            bytes.set_style(
                ProgressStyle::with_template(
                    "{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bytes.set_prefix("bytes");
            files.enable_steady_tick(Duration::from_millis(200));
            (multi, files, bytes)
        });
        CliReporter {
            printer: printer.clone(),
            bars,
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Some((multi, files, bytes)) = &self.bars {
            files.finish_and_clear();
            bytes.finish_and_clear();
            let _ = multi.clear();
        }
    }

    fn log(&self, line: String) {
        match &self.bars {
            Some((multi, ..)) => {
                let _ = multi.println(line);
            }
            None => self.printer.detail(&line),
        }
    }
}

fn verb(op: Operation) -> &'static str {
    match op {
        Operation::Comparing => "comparing",
        Operation::Uploading => "uploading",
        Operation::Downloading => "downloading",
        Operation::Deleting => "deleting",
    }
}

impl Reporter for CliReporter {
    fn progress(&self, p: &Progress) {
        if let Some((_, files, bytes)) = &self.bars {
            files.set_prefix(verb(p.operation));
            files.set_length(p.total);
            files.set_position(p.processed);
            if let Some(f) = &p.current_file {
                files.set_message(f.clone());
            }
            bytes.set_length(p.bytes_total);
            bytes.set_position(p.bytes_transferred.min(p.bytes_total));
        }
    }

    fn event(&self, e: &Event) {
        let verbose = self.printer.verbose > 0;
        match e {
            Event::FileDone {
                path,
                operation,
                bytes,
            } if verbose => {
                let size = if *operation == Operation::Deleting {
                    String::new()
                } else {
                    format!(" ({})", human_bytes(*bytes))
                };
                self.log(format!("{:>11} {path}{size}", verb(*operation)));
            }
            Event::Retry {
                path,
                attempt,
                error,
            } if verbose => {
                self.log(format!(
                    "      retry {path} (attempt {attempt} failed: {error})"
                ));
            }
            Event::Failed { path, error } if !self.printer.quiet => {
                self.log(format!("     failed {path}: {error}"));
            }
            Event::Warning(w) => self.printer.warn(w),
            _ => {}
        }
    }
}
