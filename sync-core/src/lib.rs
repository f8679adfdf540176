//! # pqsync-core
//!
//! The engine behind `pqsync`: it keeps a ParqueDB database directory and an
//! object-store prefix (or two prefixes) in sync, moving only what changed.
//!
//! A run has four steps, each a separate, inspectable value:
//!
//! 1. **Manifests.** The local tree is scanned and hashed, with a stat cache
//!    so unchanged files are never read again ([`LocalTree`]); the remote
//!    tree's manifest is one GET ([`StoreTree`]).
//! 2. **3-way diff** against the base, the manifest both sides agreed on at
//!    the last sync ([`diff::diff3`]): every path is unchanged, an upload, a
//!    download, a deletion on one side, or a conflict.
//! 3. **Plan** ([`Engine::plan`]): the diff sorted into buckets for the mode
//!    (push, pull, sync, mirror) and conflict strategy, with its request
//!    count. Printing it is a dry run.
//! 4. **Execute** ([`Engine::execute`]): concurrent, streaming, verified
//!    transfers with retries; the remote manifest committed last, and only if
//!    every transfer succeeded; deletions after the commit.
//!
//! ## Example
//!
//! Push a directory to an in-memory store, change a file, and see that the
//! second push sends only that file:
//!
//! ```
//! use std::sync::Arc;
//! use pqsync_core::{Engine, LocalTree, Mode, NoProgress, StoreTree, SyncOptions};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> pqsync_core::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir_all(dir.path().join("data/users")).unwrap();
//! std::fs::write(dir.path().join("data/users/data.parquet"), b"PAR1...PAR1").unwrap();
//! std::fs::write(dir.path().join("_meta/schema.json").to_path_buf(), b"{}").ok();
//!
//! let store = Arc::new(object_store::memory::InMemory::new());
//! let push = |store: Arc<object_store::memory::InMemory>| {
//!     let remote = StoreTree::new(store, "prod", "memory:///prod");
//!     Engine::new(LocalTree::new(dir.path()), remote, SyncOptions::new(Mode::Push))
//! };
//!
//! let engine = push(store.clone())?;
//! let plan = engine.plan().await?;
//! assert_eq!(plan.uploads.len(), 1);
//! let result = engine.execute(plan, &NoProgress).await?;
//! assert!(result.success && result.committed);
//!
//! std::fs::write(dir.path().join("data/users/data.parquet"), b"PAR1changedPAR1").unwrap();
//! let engine = push(store)?;
//! let status = engine.status().await?;
//! assert_eq!(status.diff.to_upload.len(), 1);
//! let result = engine.execute(engine.plan().await?, &NoProgress).await?;
//! assert_eq!(result.uploaded, vec!["data/users/data.parquet"]);
//! # Ok(()) }
//! ```
//!
//! ## Crate features
//!
//! None: the crate always supports local directories and any
//! [`object_store::ObjectStore`]. Building stores from URLs lives in
//! `pqsync-backends`; the terminal UI lives in the `pqsync` binary.

pub mod commit;
pub mod diff;
pub mod engine;
pub mod error;
pub mod hash;
pub mod ignore;
pub mod inspect;
pub mod local;
pub mod manifest;
pub mod plan;
pub mod progress;
pub mod rebuild;
pub mod retry;
pub mod select;
pub mod stats;
pub mod store;
pub mod throttle;
pub mod verify;

pub use commit::Capabilities;
pub use engine::{
    last_remote, remote_capabilities, Engine, FileError, MaxDelete, StatusDiff, StatusReport,
    SyncOptions, SyncResult, Tree,
};
pub use error::{Error, Result};
pub use local::LocalTree;
pub use manifest::{FileEntry, HashAlgorithm, Manifest};
pub use plan::{Conflict, Mode, Plan, Strategy};
pub use progress::{Event, NoProgress, Operation, Progress, Reporter};
pub use retry::RetryConfig;
pub use select::Selection;
pub use store::StoreTree;
pub use throttle::Congestion;

pub use object_store;
