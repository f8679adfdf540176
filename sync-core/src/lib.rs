//! # pqsync-core
//!
//! The engine behind `pqsync`: it keeps a ParqueDB database directory and an
//! object-store prefix (or two prefixes) in sync, moving only what changed,
//! and reads what a database holds without moving it.
//!
//! A run has four steps, each a separate, inspectable value:
//!
//! 1. **Manifests.** The local tree is scanned and hashed, with a stat cache
//!    so unchanged files are never read again ([`LocalTree`]); the remote
//!    tree's manifest is one GET ([`StoreTree`]).
//! 2. **3-way diff** against the base, the manifest both sides agreed on at
//!    the last sync ([`diff3`]): every path is unchanged, an upload, a
//!    download, a deletion on one side, or a conflict.
//! 3. **Plan** ([`Engine::plan`]): the diff sorted into buckets for the mode
//!    and conflict strategy, with its request count. Printing it is a dry
//!    run.
//! 4. **Execute** ([`Engine::execute`]): concurrent, streaming, verified
//!    transfers with retries; the remote manifest committed last, and only if
//!    every transfer succeeded; deletions after that commit.
//!
//! The source is laid out as that pipeline: `manifest/` (the format and
//! hashing), `layout.rs` (ParqueDB's path rules), `tree/local` and
//! `tree/store` (the two kinds of tree), `sync/` (diff, plan, execute,
//! transfer, commit, guard), `runtime/` (retries, throttling, progress) and
//! `parquedb/` (footers, relationships, the event log, and `verify`, `stats`
//! and the manifest rebuild built on them).
//!
//! ## Push, then push again
//!
//! A second push sends only the file that changed:
//!
//! ```
//! use std::sync::Arc;
//! use pqsync_core::{Engine, LocalTree, StoreTree, SyncOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pqsync_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir_all(dir.path().join("data/users")).unwrap();
//! std::fs::write(dir.path().join("data/users/data.parquet"), b"PAR1...PAR1").unwrap();
//!
//! let store = Arc::new(object_store::memory::InMemory::new());
//! let push = |store: Arc<object_store::memory::InMemory>| {
//!     let remote = StoreTree::new(store, "prod", "memory:///prod");
//!     Engine::push(LocalTree::new(dir.path()), remote, SyncOptions::default())
//! };
//!
//! let engine = push(store.clone());
//! let plan = engine.plan().await?;
//! assert_eq!(plan.uploads().len(), 1);
//! let result = engine.execute(plan).await?;
//! assert!(result.success && result.committed);
//!
//! std::fs::write(dir.path().join("data/users/data.parquet"), b"PAR1changedPAR1").unwrap();
//! let engine = push(store);
//! let result = engine.execute(engine.plan().await?).await?;
//! assert_eq!(result.uploaded, vec!["data/users/data.parquet"]);
//! # Ok(()) }
//! ```
//!
//! ## Pull into an empty directory
//!
//! ```
//! use std::sync::Arc;
//! use pqsync_core::{Engine, LocalTree, StoreTree, SyncOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pqsync_core::Result<()> {
//! let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! std::fs::create_dir_all(src.path().join("_meta")).unwrap();
//! std::fs::write(src.path().join("_meta/schema.json"), b"{}").unwrap();
//! let store = Arc::new(object_store::memory::InMemory::new());
//! let remote = || StoreTree::new(store.clone(), "prod", "memory:///prod");
//!
//! let push = Engine::push(LocalTree::new(src.path()), remote(), SyncOptions::default());
//! push.execute(push.plan().await?).await?;
//!
//! let pull = Engine::pull(LocalTree::new(dst.path()), remote(), SyncOptions::default());
//! let result = pull.execute(pull.plan().await?).await?;
//! assert_eq!(result.downloaded, vec!["_meta/schema.json"]);
//! assert_eq!(std::fs::read(dst.path().join("_meta/schema.json")).unwrap(), b"{}");
//! # Ok(()) }
//! ```
//!
//! ## Status
//!
//! ```
//! use std::sync::Arc;
//! use pqsync_core::{Engine, LocalTree, StoreTree, SyncOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pqsync_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("a.json"), b"1").unwrap();
//! let store = Arc::new(object_store::memory::InMemory::new());
//! let engine = || {
//!     let remote = StoreTree::new(store.clone(), "prod", "memory:///prod");
//!     Engine::sync(LocalTree::new(dir.path()), remote, SyncOptions::default())
//! };
//! let first = engine();
//! first.execute(first.plan().await?).await?;
//!
//! std::fs::write(dir.path().join("b.json"), b"2").unwrap();
//! let status = engine().status().await?;
//! assert!(!status.is_synced);
//! assert_eq!(status.diff.to_upload[0].path, "b.json");
//! assert_eq!(status.diff.unchanged, ["a.json"]);
//! # Ok(()) }
//! ```
//!
//! ## Verify
//!
//! ```
//! use pqsync_core::{verify, LocalTree, VerifyOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pqsync_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let db = LocalTree::new(dir.path());
//! // No manifest: the critical `manifest-present` check fails.
//! let report = verify(&db, None, &VerifyOptions::default()).await?;
//! assert!(!report.passed);
//! assert_eq!(report.checks[0].name, "manifest-present");
//! assert_eq!(report.checks.len(), 8);
//! # Ok(()) }
//! ```
//!
//! ## Versioned backups
//!
//! A [`Repository`] keeps deduplicated snapshots; a backup is the same
//! engine pushing into a snapshot, a restore pulling one back:
//!
//! ```
//! use std::sync::Arc;
//! use pqsync_core::{
//!     BackupOptions, Filter, GroupBy, LocalTree, Policy, PruneOptions, ReadData, Repository,
//!     SnapshotSpec, StoreTree, SyncOptions, DEFAULT_GRACE,
//! };
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pqsync_core::Result<()> {
//! let (db, restored) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
//! std::fs::create_dir_all(db.path().join("_meta")).unwrap();
//! std::fs::write(db.path().join("_meta/schema.json"), b"{}").unwrap();
//! let store = Arc::new(object_store::memory::InMemory::new());
//! let tree = StoreTree::new(store, "backups/prod", "memory:///backups/prod");
//! let (repo, _new) = Repository::open_or_init(tree, DEFAULT_GRACE, true, None).await?;
//!
//! // Two backups; the second stores nothing new.
//! for _ in 0..2 {
//!     let backup = repo.backup(LocalTree::new(db.path()), BackupOptions::default()).await?;
//!     let committed = backup.committed();
//!     let engine = backup.into_engine();
//!     assert!(engine.execute(engine.plan().await?).await?.success);
//!     println!("saved {}", committed.get().unwrap().short_id());
//! }
//! let all = repo.snapshots().await?;
//! assert_eq!(all.len(), 2);
//! assert_eq!(all[1].record.summary.added_objects, 0);
//!
//! // Restore the latest, then keep only it and prune.
//! let (latest, _) = repo.resolve(&all, &SnapshotSpec::Latest, &Filter::default())?;
//! let engine = repo.restore(latest, LocalTree::new(restored.path()), SyncOptions::default()).await?;
//! engine.execute(engine.plan().await?).await?;
//! assert_eq!(std::fs::read(restored.path().join("_meta/schema.json")).unwrap(), b"{}");
//! let keep_one = Policy { last: Some(1), ..Policy::default() };
//! repo.forget(&keep_one, &Filter::default(), GroupBy::default(), false).await?;
//! repo.prune(&PruneOptions::default()).await?;
//! assert!(repo.check(ReadData::All).await?.problems.is_empty());
//! # Ok(()) }
//! ```
//!
//! ## Crate features
//!
//! None: the crate always supports local directories and any
//! [`object_store::ObjectStore`]. Building stores from URLs lives in
//! `pqsync-backends`; the terminal UI lives in the `pqsync` binary.

mod error;
mod health;
mod layout;
mod manifest;
mod parquedb;
mod repo;
mod runtime;
mod sync;
mod tree;

pub use error::{Error, Result};
pub use health::{EventLag, Health, Pending, Problem, Thresholds};
pub use layout::{is_ignored, MANIFEST_PATH};
pub use manifest::{
    fs_etag, validate_path, ContentHasher, Digest, FileEntry, HashAlgorithm, Manifest, Timestamp,
    Visibility,
};
pub use parquedb::{
    entities_in_tree, entity_at, events_in_dir, events_in_tree, rebuild_local, rebuild_remote,
    replay, stats, verify, Check, EntityState, EventCoverage, EventManifest, EventQuery,
    EventRecord, EventScan, EventStats, FileReport, Finding, NamespaceStats, RebuildReport,
    Severity, Stats, VerifyOptions, VerifyReport, VerifySummary,
};
pub use repo::{
    diff_trees, parse_time, Backup, BackupOptions, CheckReport, Committed, Decision, Filter,
    ForgetReport, GroupBy, KdfParams, KeyFile, Mark, MergeReport, Policy, PruneOptions,
    PruneReport, ReadData, RepoConfig, Repository, Snapshot, SnapshotDiff, SnapshotRecord,
    SnapshotSpec, SnapshotSummary, DEFAULT_GRACE,
};
pub use runtime::{Congestion, Event, NoProgress, Operation, Progress, Reporter, RetryConfig};
pub use sync::{
    diff3, Change, Conflict, Damage, Diff3, Engine, FanOut, FileError, HeldBack, MaxDelete, Mode,
    PathDiff, Plan, Repair, Resolution, Selection, Shard, StatusDiff, StatusReport, Strategy,
    SyncOptions, SyncResult, LEASE_TTL,
};
pub use tree::{
    database_root, default_state_home, state_dir_for, BucketCopy, Capabilities, FileStat, Hashed,
    Kept, LeftOut, LocalScan, LocalTree, PartCopy, RemoteManifest, RunLock, Side, StoreTree, Trash,
    TrashedFile, Tree, Usage, DEFAULT_RETENTION, STATE_HOME_VAR, TRASH_DIR,
};

pub use object_store;
