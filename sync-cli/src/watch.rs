//! `--watch`: stay running and ship changes as they happen.
//!
//! The database directory is watched with `notify` (inotify on Linux). A
//! change starts a round once no further change has come for the debounce
//! window (or, under a steady stream of writes, ten windows after the
//! first), so a burst of writes becomes one commit. Changes made while a
//! round runs start the next round. Memory does not grow with the changes:
//! the watcher keeps two flags and the time of the first change. A round
//! that fails (a lost connection, a store that does not answer) is retried
//! with a growing pause, from 5 s up to 5 minutes, while watching goes on.
//! A restart begins with a round, which ships whatever changed while
//! nothing watched. SIGTERM or SIGINT lets the running round finish and
//! then stops (exit 0); a second signal stops at once.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use notify::{EventKind, RecursiveMode, Watcher};

use crate::printer::Printer;
use crate::ExitStatus;

/// What a round ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Round {
    /// Everything that changed.
    Full,
    /// Only the event log (between the full rounds of `--every`).
    EventLog,
}

/// How rounds are started.
#[derive(Clone, Copy, Debug)]
pub struct WatchOptions {
    /// Quiet time after a change before a round starts.
    pub debounce: Duration,
    /// At most one full round per this interval; event-log changes are
    /// shipped in between.
    pub every: Option<Duration>,
}

/// Changes seen by the watcher since the last round began.
#[derive(Default)]
struct Seen {
    any: AtomicBool,
    events: AtomicBool,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    wake: tokio::sync::Notify,
}

impl Seen {
    fn note(&self, rel: &str) {
        if rel.starts_with("events/") {
            self.events.store(true, Ordering::SeqCst);
        }
        self.any.store(true, Ordering::SeqCst);
        *self.last.lock().expect("last lock") = Some(Instant::now());
        self.first
            .lock()
            .expect("first lock")
            .get_or_insert_with(Instant::now);
        self.wake.notify_one();
    }

    /// Takes the flags for a round: whether anything and whether the event
    /// log changed, and when the first change came.
    fn take(&self, round: Round) -> Option<Instant> {
        self.events.store(false, Ordering::SeqCst);
        if round == Round::Full {
            self.any.store(false, Ordering::SeqCst);
        }
        self.first.lock().expect("first lock").take()
    }
}

/// Whether a change to `rel` is one a round should ship (not pqsync's own
/// manifest, state or temporary files, nor a path ParqueDB ignores).
fn worth_shipping(rel: &str) -> bool {
    !rel.is_empty() && !pqsync_core::is_ignored(rel) && !rel.starts_with("_meta/restore-point.json")
}

/// Signals received: the first asks to stop after the round, the second at
/// once.
fn signals() -> Result<tokio::sync::watch::Receiver<u32>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::watch::channel(0u32);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

/// Runs `round` now and then whenever `root` changes, until a signal.
///
/// # Errors
/// The watcher cannot be set up (for example, the inotify limit is
/// reached).
pub async fn watch<F, Fut>(
    root: &Path,
    opts: WatchOptions,
    printer: &'static Printer,
    mut round: F,
) -> Result<ExitStatus>
where
    F: FnMut(Round) -> Fut,
    Fut: Future<Output = Result<ExitStatus>>,
{
    let root: PathBuf = std::fs::canonicalize(root)?;
    let seen = Arc::new(Seen::default());
    let for_watcher = seen.clone();
    let base = root.clone();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            // An overflow or a watcher error: rescan with a round.
            for_watcher.note("");
            return;
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        for p in &event.paths {
            if let Ok(rel) = p.strip_prefix(&base) {
                let rel = rel.to_string_lossy().replace('\\', "/");
                if worth_shipping(&rel) {
                    for_watcher.note(&rel);
                }
            }
        }
    })
    .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}; raise fs.inotify.max_user_watches, or run without --watch from a scheduler", root.display()))?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}; raise fs.inotify.max_user_watches, or run without --watch from a scheduler", root.display()))?;
    let mut stop = signals()?;
    printer.note(&format!(
        "watching {} (debounce {} ms{}); SIGTERM or Ctrl-C stops after the current round",
        root.display(),
        opts.debounce.as_millis(),
        opts.every
            .map(|e| format!(", a full round at most every {} s", e.as_secs()))
            .unwrap_or_default()
    ));
    let mut pending = Some(Round::Full);
    let mut last_full: Option<Instant> = None;
    let mut failures = 0u32;
    let mut retry_at: Option<Instant> = None;
    let mut rounds = 0u64;
    loop {
        if let Some(kind) = pending.take() {
            let first = seen.take(kind);
            rounds += 1;
            let run = round(kind);
            tokio::pin!(run);
            let outcome = loop {
                tokio::select! {
                    r = &mut run => break Some(r),
                    _ = stop.changed() => {
                        if *stop.borrow() >= 2 {
                            break None;
                        }
                        printer.note("stopping after the current round (signal again to stop now)");
                    }
                }
            };
            let Some(outcome) = outcome else {
                printer.note("stopped during a round; the next run continues it");
                return Ok(ExitStatus::Success);
            };
            match outcome {
                Ok(_) => {
                    failures = 0;
                    retry_at = None;
                    if kind == Round::Full {
                        last_full = Some(Instant::now());
                    }
                    if let Some(first) = first {
                        printer.info(&format!(
                            "round {rounds} ({}) shipped changes {:.3} s after the first of them",
                            if kind == Round::Full {
                                "full"
                            } else {
                                "event log"
                            },
                            first.elapsed().as_secs_f64()
                        ));
                    }
                }
                Err(e) => {
                    failures += 1;
                    let pause = Duration::from_secs(5 << failures.min(6).saturating_sub(1))
                        .min(Duration::from_secs(300));
                    let d = crate::diagnose::diagnose(&e, &[]);
                    printer.warn(&format!(
                        "round {rounds} failed: {}; retrying in {} s",
                        d.message,
                        pause.as_secs()
                    ));
                    seen.any.store(true, Ordering::SeqCst);
                    retry_at = Some(Instant::now() + pause);
                }
            }
            if *stop.borrow() >= 1 {
                printer.note("stopped");
                return Ok(ExitStatus::Success);
            }
        }
        // Wait for a change, a retry, the interval, or a signal.
        let due_full = match (opts.every, last_full, seen.any.load(Ordering::SeqCst)) {
            (Some(every), Some(at), true) => Some(at + every),
            _ => None,
        };
        let wake_at = [retry_at, due_full].into_iter().flatten().min();
        let sleep = async {
            match wake_at {
                Some(t) => tokio::time::sleep_until(t.into()).await,
                None => std::future::pending().await,
            }
        };
        let changed = seen.any.load(Ordering::SeqCst) && retry_at.is_none() && due_full.is_none();
        if !changed {
            tokio::select! {
                _ = seen.wake.notified() => {}
                _ = sleep => {}
                _ = stop.changed() => {
                    printer.note("stopped");
                    return Ok(ExitStatus::Success);
                }
            }
        }
        if retry_at.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        retry_at = None;
        // Debounce: wait until the tree has been quiet for the window
        // since its last change (at most ten windows in all).
        let started = Instant::now();
        loop {
            let last = seen.last.lock().expect("last lock").unwrap_or(started);
            let quiet_at = (last + opts.debounce).min(started + opts.debounce * 10);
            if Instant::now() >= quiet_at {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(quiet_at.into()) => {}
                _ = stop.changed() => {
                    printer.note("stopped");
                    return Ok(ExitStatus::Success);
                }
            }
        }
        let full_due = match (opts.every, last_full) {
            (Some(every), Some(at)) => at.elapsed() >= every,
            _ => true,
        };
        pending = if full_due && seen.any.load(Ordering::SeqCst) {
            Some(Round::Full)
        } else if seen.events.load(Ordering::SeqCst) {
            Some(Round::EventLog)
        } else {
            None
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_files_do_not_start_rounds() {
        assert!(worth_shipping("events/seg-0004.parquet"));
        assert!(worth_shipping("data/users/data.parquet"));
        assert!(!worth_shipping("_meta/manifest.json"));
        assert!(!worth_shipping(".DS_Store"));
        assert!(!worth_shipping("events/.seg-0004.parquet.pqsync.tmp-1-2"));
        assert!(!worth_shipping("_meta/restore-point.json"));
    }
}
