//! One file per subcommand; this module dispatches, and holds the
//! [`Session`] through which every command opens its trees.

mod completions;
mod events;
mod health;
mod init;
mod list;
mod recover;
mod remote;
pub(crate) mod repo;
mod stats;
mod status;
mod transfer;
mod trash;
mod verify;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Result;
use pqsync_backends::{HttpObserver, OpenOptions, Remote};
use pqsync_core::{Congestion, LocalTree, Selection, StoreTree, Tree};

use crate::cli::{Command, RemoteFlags, SelectFlags};
use crate::diagnose::RemoteInfo;
use crate::printer::Printer;
use crate::{ExitStatus, UsageError};

/// Runs the parsed command.
pub async fn run(command: Command, s: &Session) -> Result<ExitStatus> {
    use pqsync_core::Mode;
    match command {
        Command::Push(a) => transfer::run(Mode::Push, &a, s).await,
        Command::Pull(a) => transfer::run(Mode::Pull, &a, s).await,
        Command::Sync(a) => transfer::run(Mode::Sync, &a, s).await,
        Command::Mirror(a) => transfer::mirror(&a, s).await,
        Command::Status(a) => status::run(&a, s).await,
        Command::Remote(a) => remote::run(&a, s),
        Command::List(a) => list::run(&a, s).await,
        Command::Verify(a) => verify::run(&a, s).await,
        Command::Stats(a) => stats::run(&a, s).await,
        Command::Init(a) => init::run(&a, s).await,
        Command::Trash(a) => trash::run(&a, s).await,
        Command::Backup(a) => repo::backup(&a, s).await,
        Command::Snapshots(a) => repo::snapshots(&a, s).await,
        Command::Restore(a) => repo::restore(&a, s).await,
        Command::Diff(a) => repo::diff(&a, s).await,
        Command::Forget(a) => repo::forget(&a, s).await,
        Command::Prune(a) => repo::prune(&a, s).await,
        Command::Check(a) => repo::check(&a, s).await,
        Command::Key(a) => repo::key(&a, s).await,
        Command::Health(a) => health::run(&a, s).await,
        Command::Events(a) => events::run(&a, s).await,
        Command::Completions(a) => completions::completions(&a),
        Command::Man(a) => completions::man(&a, s),
    }
}

/// What one invocation has open: the printer, and every remote it opened
/// (a failure is explained with their endpoints and credentials).
#[derive(Debug)]
pub struct Session {
    /// Where output goes.
    pub printer: &'static Printer,
    remotes: Mutex<Vec<RemoteInfo>>,
    trees: Mutex<Vec<StoreTree>>,
    /// `--metrics-file` and the command's name, when metrics are wanted.
    metrics: OnceLock<(PathBuf, String)>,
    /// Whether rounds of `--watch` wrote the metrics already.
    pub(crate) metered_rounds: std::sync::atomic::AtomicBool,
}

impl Session {
    /// A session printing through `printer`.
    pub fn new(printer: &'static Printer) -> Self {
        Session {
            printer,
            remotes: Mutex::new(Vec::new()),
            trees: Mutex::new(Vec::new()),
            metrics: OnceLock::new(),
            metered_rounds: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Writes metrics into `path` for `command` (`--metrics-file`).
    pub fn set_metrics(&self, path: PathBuf, command: String) {
        let _ = self.metrics.set((path, command));
    }

    /// Runs one round of `--watch` and, with `--metrics-file`, writes its
    /// figures (the requests and bytes of this round only) when it ends, so
    /// a long-running watch is seen round by round.
    pub async fn metered<F>(&self, round: F) -> Result<ExitStatus>
    where
        F: std::future::Future<Output = Result<ExitStatus>>,
    {
        let before = self.usage();
        let started = std::time::Instant::now();
        let result = round.await;
        if let Some((path, command)) = self.metrics.get() {
            self.metered_rounds
                .store(true, std::sync::atomic::Ordering::Relaxed);
            let remotes = self
                .usage()
                .into_iter()
                .map(|(url, mut u)| {
                    if let Some((_, b)) = before.iter().find(|(b, _)| *b == url) {
                        u.subtract(b);
                    }
                    (url, u)
                })
                .collect();
            let run = crate::metrics::Run {
                command: command.clone(),
                remotes,
                duration: started.elapsed(),
                success: matches!(result, Ok(ExitStatus::Success)),
                document: self.printer.last_document(),
            };
            if let Err(e) = crate::metrics::write(path, &run, std::time::SystemTime::now()) {
                self.printer.warn(&format!(
                    "cannot write metrics to {}: {e}; check that its directory exists and is writable",
                    path.display()
                ));
            }
        }
        result
    }

    /// The remotes opened so far.
    pub fn remotes(&self) -> Vec<RemoteInfo> {
        self.remotes.lock().expect("remotes lock").clone()
    }

    /// Each remote opened so far (by canonical URL, once each) with the
    /// requests and bytes of every tree opened on it.
    pub fn usage(&self) -> Vec<(String, pqsync_core::Usage)> {
        let mut out: Vec<(String, pqsync_core::Usage)> = Vec::new();
        for t in self.trees.lock().expect("trees lock").iter() {
            match out.iter_mut().find(|(u, _)| u == t.url()) {
                Some((_, u)) => *u += t.usage(),
                None => out.push((t.url().to_string(), t.usage())),
            }
        }
        out
    }

    /// Parses a remote; a malformed one is a usage error.
    pub fn parse_remote(&self, url: &str) -> Result<Remote> {
        pqsync_backends::parse_remote(url).map_err(|e| UsageError(e.to_string()).into())
    }

    /// Opens a remote as a tree whose HTTP responses feed `congestion`.
    pub fn open_remote(
        &self,
        remote: &Remote,
        flags: &RemoteFlags,
        create: bool,
        congestion: &Arc<Congestion>,
    ) -> Result<StoreTree> {
        let observer = Observer {
            congestion: congestion.clone(),
            printer: self.printer,
            timeout: flags.timeout,
            warned: Mutex::new(HashSet::new()),
        };
        let opts = OpenOptions {
            endpoint: flags.endpoint.clone(),
            jurisdiction: flags.jurisdiction.map(Into::into),
            profile: flags.profile.clone(),
            create,
            timeout: flags.timeout,
            observer: Some(Arc::new(observer)),
        };
        let opened = pqsync_backends::open(remote, &opts)?;
        self.remotes.lock().expect("remotes lock").push(RemoteInfo {
            url: opened.url.clone(),
            bucket: remote.bucket().map(str::to_string),
            endpoint: opened.endpoint.clone(),
            credentials: opened.credentials.clone(),
            timeout: flags.timeout,
        });
        let tree = StoreTree::new(opened.store, &opened.prefix, opened.url)
            .with_attributes(opened.supports_attributes);
        let tree = match opened.multipart {
            Some(mp) => tree.with_multipart_store(mp),
            None => tree,
        };
        let tree = match opened.bucket_copy {
            Some(c) => tree.with_bucket_copy(Arc::new(CopyAcross(c))),
            None => tree,
        };
        self.trees.lock().expect("trees lock").push(tree.clone());
        Ok(tree)
    }

    /// `remote`, a prefix in the same bucket as `tree` (see
    /// [`Remote::same_store`]), as a tree on `tree`'s store: objects then
    /// move between the two inside the store.
    pub fn open_beside(&self, tree: &StoreTree, remote: &Remote) -> StoreTree {
        let url = remote.canonical();
        let beside = tree.sibling(remote.prefix(), url.clone());
        let mut remotes = self.remotes.lock().expect("remotes lock");
        if let Some(info) = remotes.iter().find(|r| r.url == tree.url()).cloned() {
            remotes.push(RemoteInfo { url, ..info });
        }
        drop(remotes);
        self.trees.lock().expect("trees lock").push(beside.clone());
        beside
    }

    /// A DIR|REMOTE argument as a tree to read: something that looks like
    /// a URL (even a mistyped one) is a remote, anything else an existing
    /// directory.
    pub fn open_target(&self, target: &str, flags: &RemoteFlags) -> Result<Box<dyn Tree>> {
        if pqsync_backends::looks_like_url(target) {
            let remote = self.parse_remote(target)?;
            let congestion = Arc::new(Congestion::default());
            Ok(Box::new(self.open_remote(
                &remote,
                flags,
                false,
                &congestion,
            )?))
        } else {
            Ok(Box::new(local_tree(Path::new(target), true)?))
        }
    }
}

/// Reports to the run's [`Congestion`] and prints one line per endpoint
/// that stops answering.
struct Observer {
    congestion: Arc<Congestion>,
    printer: &'static Printer,
    timeout: Duration,
    warned: Mutex<HashSet<String>>,
}

impl HttpObserver for Observer {
    fn response(&self, status: u16) {
        self.congestion.observe_status(status);
    }

    fn stalled(&self, endpoint: &str, waited: Duration) {
        if self
            .warned
            .lock()
            .expect("warned lock")
            .insert(endpoint.to_string())
        {
            self.printer.warn(&format!(
                "waiting for {endpoint}: no answer after {:.1} s; retrying for up to {} s in all (--timeout)",
                waited.as_secs_f64(),
                self.timeout.as_secs()
            ));
        }
    }
}

/// The paths `flags` select.
///
/// # Errors
/// A usage error for a malformed glob or namespace.
pub fn selection(flags: &SelectFlags) -> Result<Selection> {
    let mut exclude = flags.exclude.clone();
    for file in &flags.exclude_from {
        let text = std::fs::read_to_string(file).map_err(|e| {
            UsageError(format!(
                "cannot read the exclusions in {}: {e}; name a readable file of globs, one per line",
                file.display()
            ))
        })?;
        exclude.extend(
            text.lines()
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .map(str::to_string),
        );
    }
    Selection::new(&flags.namespaces, &flags.include, &exclude)
        .map_err(|e| UsageError(e.to_string()).into())
}

/// The remote named on the command line, or the one `dir` last synced with.
pub fn resolve_remote(given: Option<&str>, dir: &LocalTree) -> Result<String> {
    if let Some(r) = given {
        return Ok(r.to_string());
    }
    match dir.last_remote()? {
        Some(r) => Ok(r),
        None => Err(UsageError(format!(
            "no REMOTE given and {} has not synced with one yet; name one, e.g. `pqsync push s3://bucket/prefix -d {}`",
            dir.root().display(),
            dir.root().display()
        ))
        .into()),
    }
}

/// The state home `--state-dir` chose, if any.
static STATE_HOME: OnceLock<PathBuf> = OnceLock::new();

/// Keeps local state under `home` instead of the default for the rest of
/// the process (`--state-dir`).
pub fn set_state_home(home: PathBuf) {
    let _ = STATE_HOME.set(home);
}

/// The state home in force: `--state-dir`, else the default.
pub fn state_home() -> PathBuf {
    STATE_HOME
        .get()
        .cloned()
        .unwrap_or_else(pqsync_core::default_state_home)
}

/// The local tree for DIR, which must be a directory (or, for pulls, may not
/// exist yet).
///
/// DIR must be a database's root, not a folder inside one: when it has no
/// `_meta/manifest.json` but a parent folder does, the default `-d .` is
/// taken to mean that database (as git finds its repository from a
/// subdirectory), and any other DIR is refused, since syncing it would nest
/// a second database inside the first. State an earlier version kept inside
/// the database is moved to the state home.
pub fn local_tree(dir: &Path, must_exist: bool) -> Result<LocalTree> {
    if dir.exists() && !dir.is_dir() {
        return Err(UsageError(format!("{} is not a directory", dir.display())).into());
    }
    if must_exist && !dir.exists() {
        return Err(UsageError(format!("{} does not exist", dir.display())).into());
    }
    let mut root = dir.to_path_buf();
    if let Some(db) = pqsync_core::database_root(dir) {
        let is_root = std::fs::canonicalize(dir).is_ok_and(|c| c == db);
        if !is_root {
            if dir != Path::new(".") {
                return Err(UsageError(format!(
                    "{} is inside the database {}; name the database itself (-d {}), or a directory outside it",
                    dir.display(),
                    db.display(),
                    db.display()
                ))
                .into());
            }
            tracing::info!("using the database at {}", db.display());
            root = db;
        }
    }
    let tree = match STATE_HOME.get() {
        Some(home) => LocalTree::with_state_home(root, home),
        None => LocalTree::new(root),
    };
    // Under the run lock, so two runs do not move the same files; a run
    // that finds the lock taken leaves the move to the one holding it.
    if let Ok(Some(_lock)) = tree.lock() {
        tree.migrate_state()?;
    }
    Ok(tree)
}

/// The backends' copies inside an S3 store, as the engine asks for them.
#[derive(Debug)]
struct CopyAcross(Arc<pqsync_backends::BucketCopier>);

#[async_trait::async_trait]
impl pqsync_core::BucketCopy for CopyAcross {
    fn scope(&self) -> &str {
        self.0.scope()
    }

    fn bucket(&self) -> &str {
        self.0.bucket()
    }

    async fn copy(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_key: &str,
    ) -> pqsync_core::object_store::Result<()> {
        self.0.copy(from_bucket, from_key, to_key).await
    }

    fn limit(&self) -> u64 {
        self.0.limit()
    }

    async fn copy_in_parts(
        &self,
        from_bucket: &str,
        from_key: &str,
        to_key: &str,
    ) -> pqsync_core::object_store::Result<pqsync_core::PartCopy> {
        let made = self.0.copy_in_parts(from_bucket, from_key, to_key).await?;
        Ok(pqsync_core::PartCopy {
            reads: made.reads,
            writes: made.writes,
        })
    }
}
