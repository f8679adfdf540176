//! Progress display: two indicatif bars (files and bytes) on a terminal,
//! per-file lines with `-v` otherwise.
//!
//! The ETA is the larger of two estimates, one from the files done and one
//! from the bytes moved: a run of many small files is paced by requests, not
//! bytes, and a byte-based estimate alone says minutes for a run of seconds
//! (or seconds for a run whose last file is the largest).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{HumanDuration, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pqsync_core::{Event, Operation, Progress, Reporter};

use crate::printer::{bytes, Printer};

/// The counters the ETA is computed from.
#[derive(Debug)]
struct Counters {
    started: Instant,
    files_done: AtomicU64,
    files_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
}

impl Counters {
    /// The larger of the files-based and the bytes-based estimates of the
    /// time left; `None` before anything is done.
    fn eta(&self) -> Option<Duration> {
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = |done: u64, total: u64| -> Option<f64> {
            (done > 0 && total >= done).then(|| elapsed * (total - done) as f64 / done as f64)
        };
        let files = left(
            self.files_done.load(Ordering::Relaxed),
            self.files_total.load(Ordering::Relaxed),
        );
        let bytes = left(
            self.bytes_done.load(Ordering::Relaxed),
            self.bytes_total.load(Ordering::Relaxed),
        );
        match (files, bytes) {
            (None, None) => None,
            (a, b) => Some(Duration::from_secs_f64(
                a.unwrap_or(0.0).max(b.unwrap_or(0.0)),
            )),
        }
    }
}

/// Reports engine progress to a person.
pub struct CliReporter {
    printer: &'static Printer,
    bars: Option<(MultiProgress, ProgressBar, ProgressBar)>,
    counters: Arc<Counters>,
}

impl CliReporter {
    /// Bars when the printer allows them, else `-v` lines only.
    pub fn new(printer: &'static Printer) -> Arc<Self> {
        let counters = Arc::new(Counters {
            started: Instant::now(),
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
        });
        let bars = printer.bars_allowed().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
            let files = multi.add(ProgressBar::new(0));
            files.set_style(
                ProgressStyle::with_template("{prefix:>11} [{bar:30}] {pos}/{len} files {wide_msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            files.set_prefix("comparing");
            let c = counters.clone();
            let bytes = multi.add(ProgressBar::new(0));
            bytes.set_style(
                ProgressStyle::with_template(
                    "{prefix:>11} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta_both}",
                )
                .expect("valid template")
                .with_key("eta_both", move |_: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = match c.eta() {
                        Some(d) => write!(w, "{}", HumanDuration(d)),
                        None => write!(w, "-"),
                    };
                })
                .progress_chars("=> "),
            );
            bytes.set_prefix("bytes");
            files.enable_steady_tick(Duration::from_millis(200));
            printer.attach_bars(multi.clone());
            (multi, files, bytes)
        });
        Arc::new(CliReporter {
            printer,
            bars,
            counters,
        })
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Some((multi, files, bytes)) = &self.bars {
            files.finish_and_clear();
            bytes.finish_and_clear();
            let _ = multi.clear();
            self.printer.detach_bars();
        }
    }
}

impl Drop for CliReporter {
    fn drop(&mut self) {
        self.finish();
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
        let c = &self.counters;
        c.files_done.store(p.processed, Ordering::Relaxed);
        c.files_total.store(p.total, Ordering::Relaxed);
        c.bytes_done.store(p.bytes_transferred, Ordering::Relaxed);
        c.bytes_total.store(p.bytes_total, Ordering::Relaxed);
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
        match e {
            Event::FileDone {
                path,
                operation,
                bytes: n,
            } => {
                let size = if *operation == Operation::Deleting {
                    String::new()
                } else {
                    format!(" ({})", bytes(*n))
                };
                self.printer
                    .detail(&format!("{:>11} {path}{size}", verb(*operation)));
            }
            Event::Retry {
                path,
                attempt,
                error,
            } => {
                self.printer.detail(&format!(
                    "      retry {path} (attempt {attempt} failed: {error})"
                ));
            }
            Event::Failed { path, error } => {
                self.printer.error(&format!("{path}: {error}"));
            }
            Event::Warning(w) => self.printer.warn(w),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_the_larger_of_files_and_bytes() {
        let c = Counters {
            started: Instant::now() - Duration::from_secs(10),
            files_done: AtomicU64::new(900),
            files_total: AtomicU64::new(1000),
            bytes_done: AtomicU64::new(10),
            bytes_total: AtomicU64::new(1000),
        };
        // Bytes say 990 s more; files say about 1 s: the larger wins.
        let eta = c.eta().unwrap().as_secs_f64();
        assert!((980.0..1000.0).contains(&eta), "{eta}");
        // Many small files with most bytes moved: files pace the run.
        c.files_done.store(100, Ordering::Relaxed);
        c.bytes_done.store(990, Ordering::Relaxed);
        let eta = c.eta().unwrap().as_secs_f64();
        assert!((89.0..91.0).contains(&eta), "{eta}");
        c.files_done.store(0, Ordering::Relaxed);
        c.bytes_done.store(0, Ordering::Relaxed);
        assert!(c.eta().is_none());
    }
}
