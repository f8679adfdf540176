//! Moving one file, with a transfer slot, retries and progress; and a batch
//! of files, concurrently.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use futures::StreamExt;

use super::execute::folders_of;
use super::plan::Plan;
use super::Engine;
use crate::error::{Error, Result};
use crate::manifest::FileEntry;
use crate::runtime::{Event, Operation, Progress};
use crate::tree::store::COPY_MAX;
use crate::tree::{FileStat, Kept, Side, StoreTree};

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

/// What a finished transfer left.
#[derive(Debug)]
pub(crate) enum Moved {
    /// An upload: the new object's ETag, where the store reports one.
    Up { etag: Option<String> },
    /// A download: the new local file's stat.
    Down(FileStat),
}

/// The shared state of one `execute`: the engine, the progress counters
/// and the versions kept so far.
pub(crate) struct Run<'a> {
    pub engine: &'a Engine,
    pub processed: AtomicU64,
    pub bytes: AtomicU64,
    pub total: u64,
    pub bytes_total: u64,
    /// This run's folder in the trash.
    pub run_name: String,
    /// Versions kept so far, on either side.
    pub kept: Mutex<Vec<Kept>>,
    /// Remote objects this run overwrote, with the key of the kept version:
    /// put back if the run does not commit.
    pub overwritten: Mutex<Vec<(String, String)>>,
    /// A shard run's staging folder, where an upload that would replace a
    /// committed object goes instead (see [`super::shard`]).
    pub stage: Option<StoreTree>,
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

    /// Moves every file of `jobs`, up to the run's concurrency at a time,
    /// yielding each as it finishes.
    pub fn transfer_stream<'s, 'p: 's>(
        &'s self,
        jobs: Vec<(Dir, usize, &'p FileEntry)>,
        plan: &'s Plan,
    ) -> impl futures::Stream<Item = (Dir, usize, &'p FileEntry, Result<Moved>)> + 's {
        futures::stream::iter(jobs)
            .map(move |(dir, i, e)| async move {
                let r = self.transfer(dir, e, plan).await;
                (dir, i, e, r)
            })
            .buffer_unordered(self.engine.opts.concurrency)
    }

    /// Where a shard run sends `e` instead of its path: its staging
    /// folder, when the upload would replace an object the manifest names,
    /// or one of a file that became a folder or the reverse (the merge
    /// clears the way first), and the store can copy it into place (in one
    /// request, or in parts where the store can).
    pub fn staged_at(&self, e: &FileEntry, plan: &Plan) -> Option<&StoreTree> {
        let stage = self.stage.as_ref()?;
        let files = &plan.remote.as_ref()?.manifest.files;
        let below = format!("{}/", e.path);
        let in_the_way = files.contains_key(&e.path)
            || folders_of(&e.path).any(|f| files.contains_key(f))
            || files
                .range(below.clone()..)
                .next()
                .is_some_and(|(p, _)| p.starts_with(&below));
        (in_the_way && (e.size <= COPY_MAX || stage.copies_any_size())).then_some(stage)
    }

    /// Moves one file, retrying transient failures.
    async fn transfer(&self, dir: Dir, e: &FileEntry, plan: &Plan) -> Result<Moved> {
        let view = &plan.view;
        let engine = self.engine;
        let op = dir.operation();
        let _slot = engine.opts.congestion.acquire().await;
        self.progress(op, Some(&e.path));
        let on_bytes = |n: u64| {
            self.bytes.fetch_add(n, Ordering::Relaxed);
            self.progress(op, Some(&e.path));
        };
        let staged = match dir {
            Dir::Up => self.staged_at(e, plan),
            Dir::Down => None,
        };
        if dir == Dir::Up && staged.is_none() {
            self.keep_replaced(e, plan).await?;
        }
        let keep = self.local_keep();
        let result = engine
            .opts
            .retry
            .run(
                || async {
                    let remote = staged.unwrap_or(&engine.remote);
                    match dir {
                        Dir::Up => {
                            let etag = engine.source.upload(e, view, remote, &on_bytes).await?;
                            Ok(Moved::Up { etag })
                        }
                        Dir::Down => {
                            let stat = engine
                                .source
                                .download(e, view, remote, keep, &on_bytes)
                                .await?;
                            Ok(Moved::Down(stat))
                        }
                    }
                },
                |attempt, err| self.retrying(&e.path, attempt, err),
            )
            .await;
        if dir == Dir::Down && result.is_ok() && view.stats.contains_key(&e.path) {
            if let Some(run) = keep {
                self.kept_local(&e.path, run);
            }
        }
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

    /// The run's trash folder for local versions, unless nothing is kept.
    pub fn local_keep(&self) -> Option<&str> {
        self.engine
            .opts
            .trash
            .keeps()
            .then_some(self.run_name.as_str())
    }

    /// Records a local version kept in the trash.
    pub fn kept_local(&self, path: &str, run: &str) {
        let location = self.engine.source.kept_location(path, run);
        self.kept.lock().expect("kept").push(Kept {
            path: path.to_string(),
            side: Side::Local,
            location,
        });
    }

    /// Copies the committed version of a remote object into the trash
    /// before an upload replaces it (once per run, retried on its own: a
    /// retried upload must not keep its own first attempt's bytes).
    pub async fn keep_replaced(&self, e: &FileEntry, plan: &Plan) -> Result<()> {
        let committed = plan
            .remote
            .as_ref()
            .is_some_and(|r| r.manifest.files.contains_key(&e.path));
        if !committed || self.engine.remote.keeps_versions() {
            return Ok(());
        }
        if let Some(key) = self.keep_remote(&e.path).await? {
            self.overwritten
                .lock()
                .expect("overwritten")
                .push((e.path.clone(), key));
        }
        Ok(())
    }

    /// Copies the remote object at `path` into this run's trash folder,
    /// retrying transient failures. Returns the kept version's key.
    pub async fn keep_remote(&self, path: &str) -> Result<Option<String>> {
        let engine = self.engine;
        let trash = &engine.opts.trash;
        let key = engine
            .opts
            .retry
            .run(
                || engine.remote.keep(path, trash, &self.run_name),
                |attempt, err| self.retrying(path, attempt, err),
            )
            .await?;
        if let Some(key) = &key {
            self.kept.lock().expect("kept").push(Kept {
                path: path.to_string(),
                side: Side::Remote,
                location: key.clone(),
            });
        }
        Ok(key)
    }
}
