//! Embedding pqsync: push a database directory to an object store, then pull
//! it into a fresh directory, using only `pqsync-core`.
//!
//! ```text
//! cargo run -p pqsync-core --example push_pull -- [DATABASE_DIR]
//! ```
//!
//! The remote here is a local directory served through `object_store`'s
//! `LocalFileSystem`; any other `ObjectStore` (S3, R2, GCS, Azure) plugs in
//! the same way.

use std::sync::Arc;

use object_store::local::LocalFileSystem;
use pqsync_core::{Engine, LocalTree, StoreTree, SyncOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/sample-db").into());
    let work = tempfile::tempdir()?;
    // Work on a copy so the example never writes into the source tree.
    let local = work.path().join("db");
    copy_tree(std::path::Path::new(&db), &local)?;
    let bucket = work.path().join("bucket");
    std::fs::create_dir_all(&bucket)?;
    let store = Arc::new(LocalFileSystem::new_with_prefix(&bucket)?);
    let remote =
        || StoreTree::new(store.clone(), "prod", "file:///bucket/prod").with_attributes(false);

    // Push: plan first (a dry run is just printing the plan), then execute.
    let engine = Engine::push(LocalTree::new(&local), remote(), SyncOptions::default());
    let plan = engine.plan().await?;
    println!(
        "push plan: {} uploads ({} bytes), {} requests planned",
        plan.uploads().len(),
        plan.bytes_up(),
        plan.requests_planned()
    );
    let result = engine.execute(plan).await?;
    println!(
        "pushed {} files in {} requests",
        result.uploaded.len(),
        result.requests
    );

    // Status of the unchanged tree: one request, no file read.
    let status = Engine::sync(LocalTree::new(&local), remote(), SyncOptions::default())
        .status()
        .await?;
    println!(
        "in sync: {} ({} requests)",
        status.is_synced, status.requests
    );

    // Pull into an empty directory.
    let restored = work.path().join("restored");
    let engine = Engine::pull(LocalTree::new(&restored), remote(), SyncOptions::default());
    let result = engine.execute(engine.plan().await?).await?;
    println!(
        "pulled {} files into {}",
        result.downloaded.len(),
        restored.display()
    );
    assert!(result.success);
    Ok(())
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry?;
        let target = to.join(entry.path().strip_prefix(from).expect("under root"));
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if entry.file_type().is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
