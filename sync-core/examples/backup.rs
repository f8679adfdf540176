//! Backs up a database directory into a snapshot repository (a local
//! directory), lists the snapshots and restores the latest one.
//!
//! ```sh
//! cargo run -p pqsync-core --example backup -- testdata/sample-db /tmp/pqsync-repo /tmp/pqsync-restored
//! ```

use std::sync::Arc;

use pqsync_core::object_store::local::LocalFileSystem;
use pqsync_core::{
    BackupOptions, Filter, LocalTree, Repository, SnapshotSpec, StoreTree, SyncOptions,
    DEFAULT_GRACE,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, repo_dir, restore_to] = args.as_slice() else {
        eprintln!("usage: backup DATABASE_DIR REPOSITORY_DIR RESTORE_DIR");
        std::process::exit(2);
    };
    std::fs::create_dir_all(repo_dir)?;
    let store = Arc::new(LocalFileSystem::new_with_prefix(repo_dir)?);
    let tree = StoreTree::new(store, "", format!("file://{repo_dir}")).with_attributes(false);
    let (repo, new) = Repository::open_or_init(tree, DEFAULT_GRACE, true, None).await?;
    if new {
        println!("made a repository in {repo_dir}");
    }

    let backup = repo
        .backup(LocalTree::new(db), BackupOptions::default())
        .await?;
    let committed = backup.committed();
    let engine = backup.into_engine();
    let result = engine.execute(engine.plan().await?).await?;
    let snap = committed.get().ok_or("the backup committed no snapshot")?;
    println!(
        "snapshot {}: {} files, {} new object(s), {} request(s)",
        snap.short_id(),
        snap.record.summary.files,
        snap.record.summary.added_objects,
        result.requests
    );

    let all = repo.snapshots().await?;
    for s in &all {
        println!(
            "  {}  {}  {} files",
            s.short_id(),
            s.record.time,
            s.record.summary.files
        );
    }
    let (latest, _) = repo.resolve(&all, &SnapshotSpec::Latest, &Filter::default())?;
    let engine = repo
        .restore(latest, LocalTree::new(restore_to), SyncOptions::default())
        .await?;
    let restored = engine.execute(engine.plan().await?).await?;
    println!(
        "restored {} into {restore_to}: {} file(s) written",
        latest.short_id(),
        restored.downloaded.len()
    );
    Ok(())
}
