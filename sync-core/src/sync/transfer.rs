//! Moving one file, with a transfer slot, retries and progress; and a batch
//! of files, concurrently.

use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;

use super::plan::Plan;
use super::Engine;
use crate::error::{Error, Result};
use crate::manifest::FileEntry;
use crate::runtime::{Event, Operation, Progress};
use crate::tree::FileStat;

/// Which way a file moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Source → remote.
    Up,
    /// Remote → source.
    Down,
}

impl Dir {
    /// ParqueDB's name for the operation, as results report it.
    pub fn operation_name(self) -> &'static str {
        match self {
            Dir::Up => "upload",
            Dir::Down => "download",
        }
    }

    fn operation(self) -> Operation {
        match self {
            Dir::Up => Operation::Uploading,
            Dir::Down => Operation::Downloading,
        }
    }
}

/// The shared state of one `execute`: the engine and the progress counters.
pub(crate) struct Run<'a> {
    pub engine: &'a Engine,
    pub processed: AtomicU64,
    pub bytes: AtomicU64,
    pub total: u64,
    pub bytes_total: u64,
}

impl Run<'_> {
    /// Reports where the run stands.
    pub fn progress(&self, operation: Operation, current: Option<&str>) {
        self.engine.reporter.progress(&Progress {
            operation,
            current_file: current.map(str::to_string),
            processed: self.processed.load(Ordering::Relaxed),
            total: self.total,
            bytes_transferred: self.bytes.load(Ordering::Relaxed),
            bytes_total: self.bytes_total,
        });
    }

    /// Counts one finished operation and reports it.
    pub fn done(&self, path: &str, operation: Operation, bytes: u64) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        self.engine.reporter.event(&Event::FileDone {
            path: path.to_string(),
            operation,
            bytes,
        });
        self.progress(operation, Some(path));
    }

    /// Reports a retry of `path`.
    pub fn retrying(&self, path: &str, attempt: u32, err: &Error) {
        self.engine.reporter.event(&Event::Retry {
            path: path.to_string(),
            attempt,
            error: err.to_string(),
        });
    }

    /// Moves every file of `jobs`, up to the run's concurrency at a time.
    pub async fn transfer_batch(
        &self,
        jobs: Vec<(Dir, FileEntry)>,
        plan: &Plan,
    ) -> Vec<(Dir, FileEntry, Result<Option<FileStat>>)> {
        futures::stream::iter(jobs)
            .map(|(dir, e)| async move {
                let r = self.transfer(dir, &e, plan).await;
                (dir, e, r)
            })
            .buffer_unordered(self.engine.opts.concurrency)
            .collect()
            .await
    }

    /// Moves one file, retrying transient failures. Returns the new local
    /// file's stat for a download.
    async fn transfer(&self, dir: Dir, e: &FileEntry, plan: &Plan) -> Result<Option<FileStat>> {
        let view = &plan.view;
        let engine = self.engine;
        let op = dir.operation();
        let _slot = engine.opts.congestion.acquire().await;
        self.progress(op, Some(&e.path));
        let on_bytes = |n: u64| {
            self.bytes.fetch_add(n, Ordering::Relaxed);
            self.progress(op, Some(&e.path));
        };
        let result = engine
            .opts
            .retry
            .run(
                || async {
                    match dir {
                        Dir::Up => {
                            self.back_up(e, plan).await?;
                            let remote = &engine.remote;
                            engine.source.upload(e, view, remote, &on_bytes).await?;
                            Ok(None)
                        }
                        Dir::Down => {
                            let remote = &engine.remote;
                            let stat = engine.source.download(e, view, remote, &on_bytes).await?;
                            Ok(Some(stat))
                        }
                    }
                },
                |attempt, err| self.retrying(&e.path, attempt, err),
            )
            .await;
        if result.is_ok() {
            if dir == Dir::Up {
                let against = plan
                    .remote
                    .as_ref()
                    .and_then(|r| r.manifest.commit_id.as_deref());
                engine.source.uploaded(e, against);
            }
            self.done(&e.path, op, e.size);
        }
        result
    }

    /// With `--backup-dir`, copies the remote object an upload is about to
    /// replace.
    async fn back_up(&self, e: &FileEntry, plan: &Plan) -> Result<()> {
        let Some(prefix) = &self.engine.opts.backup_dir else {
            return Ok(());
        };
        let exists = plan
            .remote
            .as_ref()
            .is_some_and(|r| r.manifest.files.contains_key(&e.path));
        if exists {
            self.engine.remote.backup(&e.path, prefix).await?;
        }
        Ok(())
    }
}
