//! Prune without a lock: backups, forgets and prunes interleaved at the
//! dangerous moments, on a store that holds a backup just before it
//! commits. Whatever the interleaving, no snapshot in the repository ever
//! names content that is gone: `check` finds every object, and every
//! snapshot restores to exactly the tree that was backed up.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use pqsync_core::{
    BackupOptions, Filter, GroupBy, Policy, PruneOptions, ReadData, Repository, Snapshot,
    StoreTree, SyncOptions, SyncResult,
};
use tokio::sync::{oneshot, Notify};

use crate::support::*;

/// Holds the next PUT whose key contains `needle` (a snapshot commit under
/// `index/snapshots/`, or an upload under `objects/`) until released,
/// telling the test when it arrives.
struct Gate {
    inner: Arc<InMemory>,
    needle: Mutex<&'static str>,
    arrived: Arc<Notify>,
    release: Mutex<Option<oneshot::Receiver<()>>>,
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gate")
    }
}

impl fmt::Debug for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gate")
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for Gate {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let needle = *self.needle.lock().unwrap();
        if location.as_ref().contains(needle) {
            let wait = self.release.lock().unwrap().take();
            if let Some(rx) = wait {
                self.arrived.notify_one();
                let _ = rx.await;
            }
        }
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }
    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

// Long enough that a backup of the small database commits well within
// half of it on a loaded machine.
const GRACE: Duration = Duration::from_secs(4);

struct World {
    gate: Arc<Gate>,
    repo: Repository,
    db: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let gate = Arc::new(Gate {
            inner: Arc::new(InMemory::new()),
            needle: Mutex::new("index/snapshots/"),
            arrived: Arc::new(Notify::new()),
            release: Mutex::new(None),
        });
        let tree = StoreTree::new(gate.clone(), "repo", "memory:///repo");
        let (repo, made) = Repository::open_or_init(tree, GRACE, true, None)
            .await
            .unwrap();
        assert!(made);
        World {
            gate,
            repo,
            db: small_db(),
        }
    }

    async fn backup(&self) -> (SyncResult, Option<Snapshot>) {
        backup(&self.repo, self.db.path()).await
    }

    /// Runs a backup that stops at its first PUT whose key contains
    /// `needle`, runs `meanwhile` there, then lets the backup go on.
    async fn during<F: std::future::Future>(
        &self,
        needle: &'static str,
        meanwhile: F,
    ) -> ((SyncResult, Option<Snapshot>), F::Output) {
        *self.gate.needle.lock().unwrap() = needle;
        let (tx, rx) = oneshot::channel();
        *self.gate.release.lock().unwrap() = Some(rx);
        let driver = async {
            self.gate.arrived.notified().await;
            let out = meanwhile.await;
            tx.send(()).unwrap();
            out
        };
        tokio::join!(backup(&self.repo, self.db.path()), driver)
    }

    /// Forgets every snapshot there is.
    async fn forget_all(&self) {
        let nothing = Policy {
            tags: vec!["never-given".into()],
            ..Policy::default()
        };
        self.repo
            .forget(&nothing, &Filter::default(), GroupBy::default(), false)
            .await
            .unwrap();
    }

    async fn prune(&self) -> pqsync_core::PruneReport {
        self.repo.prune(&PruneOptions::default()).await.unwrap()
    }

    /// The invariant: every object any snapshot names is there, and each
    /// snapshot restores to the tree it was made of.
    async fn assert_whole(
        &self,
        expected: &[(&Snapshot, &std::collections::BTreeMap<String, Vec<u8>>)],
    ) {
        let report = self.repo.check(ReadData::All).await.unwrap();
        assert_eq!(report.problems, Vec::<String>::new());
        for (snap, files) in expected {
            let out = tempfile::tempdir().unwrap();
            let engine = self
                .repo
                .restore(snap, local(out.path()), SyncOptions::default())
                .await
                .unwrap();
            let r = engine.execute(engine.plan().await.unwrap()).await.unwrap();
            assert!(r.success, "{:?}", r.errors);
            assert_eq!(&tree_files(out.path()), *files);
        }
    }
}

async fn backup(repo: &Repository, db: &std::path::Path) -> (SyncResult, Option<Snapshot>) {
    let b = repo
        .backup(local(db), BackupOptions::default())
        .await
        .unwrap();
    let committed = b.committed();
    let engine = b.into_engine();
    let plan = engine.plan().await.unwrap();
    let r = engine.execute(plan).await.unwrap();
    (r, committed.get())
}

/// A prune marks the content a backup relies on (its parent was forgotten
/// meanwhile) while the backup's commit is in flight; the commit lands
/// within half the grace period, so the next prune finds the content
/// referenced again and unmarks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prune_during_a_backup_never_deletes_what_it_commits() {
    let w = World::new().await;
    w.backup().await;
    write_old(
        w.db.path(),
        "data/users/data.parquet",
        b"PAR1 users v2 PAR1",
    );
    let ((r, snap), p1) = w
        .during("index/snapshots/", async {
            w.forget_all().await;
            w.prune().await
        })
        .await;
    assert!(p1.marked > 0, "{p1:?}");
    assert!(r.success, "{:?}", r.errors);
    let snap = snap.expect("committed");
    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
    let p2 = w.prune().await;
    assert!(p2.unmarked > 0, "{p2:?}");
    let files = tree_files(w.db.path());
    w.assert_whole(&[(&snap, &files)]).await;
}

/// A prune marks the content a backup relies on while the backup is held
/// mid-upload past half the grace period: before it commits, it reads
/// the marks again, finds its content marked and commits nothing. The next
/// backup stores that content anew, and a prune after the grace period
/// deletes only the old copies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backup_rechecks_the_marks_and_gives_up() {
    let w = World::new().await;
    w.backup().await;
    write_old(
        w.db.path(),
        "data/users/data.parquet",
        b"PAR1 users v2 PAR1",
    );
    let ((r, snap), ()) = w
        .during("objects/", async {
            w.forget_all().await;
            w.prune().await;
            tokio::time::sleep(GRACE / 2 + Duration::from_millis(100)).await;
        })
        .await;
    assert!(!r.success && snap.is_none());
    assert!(
        r.errors
            .iter()
            .any(|e| e.message.contains("a prune marked")),
        "{:?}",
        r.errors
    );
    let (r, snap) = w.backup().await;
    assert!(r.success, "{:?}", r.errors);
    let snap = snap.unwrap();
    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
    let p = w.prune().await;
    assert!(p.deleted > 0, "{p:?}");
    let files = tree_files(w.db.path());
    w.assert_whole(&[(&snap, &files)]).await;
}

/// Held past the whole grace period while a second prune deletes what the
/// first marked: the backup refuses to commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_outliving_the_grace_period_commits_nothing() {
    let w = World::new().await;
    w.backup().await;
    write_old(
        w.db.path(),
        "data/users/data.parquet",
        b"PAR1 users v2 PAR1",
    );
    let ((r, snap), p2) = w
        .during("objects/", async {
            w.forget_all().await;
            w.prune().await;
            tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
            w.prune().await
        })
        .await;
    assert!(p2.deleted > 0, "{p2:?}");
    assert!(!r.success && snap.is_none(), "{:?}", r.errors);
    assert!(
        r.errors.iter().any(|e| e.message.contains("grace period")),
        "{:?}",
        r.errors
    );
    w.assert_whole(&[]).await;
    // The next backup sends everything again and is whole.
    let (r, snap) = w.backup().await;
    assert!(r.success, "{:?}", r.errors);
    let files = tree_files(w.db.path());
    w.assert_whole(&[(&snap.unwrap(), &files)]).await;
}

/// Content marked before a backup starts is never relied on: the backup
/// stores it under another key, and the prune that deletes the marked
/// copy leaves the snapshot whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_content_is_stored_anew() {
    let w = World::new().await;
    w.backup().await;
    w.forget_all().await;
    let p1 = w.prune().await;
    let (r, snap) = w.backup().await;
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(r.uploaded.len(), tree_files(w.db.path()).len());
    let snap = snap.unwrap();
    tokio::time::sleep(GRACE + Duration::from_millis(200)).await;
    let p2 = w.prune().await;
    assert_eq!(p2.deleted, p1.marked, "{p2:?}");
    let files = tree_files(w.db.path());
    w.assert_whole(&[(&snap, &files)]).await;
}
