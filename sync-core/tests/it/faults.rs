//! Partial failures: a run that cannot send every file commits nothing, and
//! the next run moves only what is left.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::ObjectStoreExt;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use pqsync_core::{Mode, StoreTree, SyncOptions};

use crate::support::*;

/// Fails every PUT whose path contains `needle` while `broken` is set, every
/// GET of such a path while `gets_broken` is set, and the first `transient`
/// PUTs of any path with a retryable error.
#[derive(Debug)]
struct Flaky {
    inner: InMemory,
    needle: String,
    broken: AtomicBool,
    gets_broken: AtomicBool,
    deletes_broken: AtomicBool,
    transient: AtomicU32,
}

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flaky")
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for Flaky {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.broken.load(Ordering::SeqCst) && location.as_ref().contains(&self.needle) {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "403 Forbidden (injected)".into(),
            });
        }
        if self
            .transient
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(object_store::Error::Generic {
                store: "Flaky",
                source: Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionReset,
                    "connection reset by peer (injected)",
                )),
            });
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
        if self.gets_broken.load(Ordering::SeqCst)
            && !options.head
            && location.as_ref().contains(&self.needle)
        {
            return Err(object_store::Error::PermissionDenied {
                path: location.to_string(),
                source: "403 Forbidden (injected)".into(),
            });
        }
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
        if self.deletes_broken.load(Ordering::SeqCst) {
            let needle = self.needle.clone();
            let refused = locations.map(move |l| {
                let l = l?;
                if l.as_ref().contains(&needle) {
                    return Err(object_store::Error::PermissionDenied {
                        path: l.to_string(),
                        source: "403 Forbidden (injected)".into(),
                    });
                }
                Ok(l)
            });
            let inner = self.inner.clone();
            return refused
                .then(move |l| {
                    let inner = inner.clone();
                    async move {
                        let l = l?;
                        let one = futures::stream::iter([Ok(l)]).boxed();
                        inner.delete_stream(one).next().await.unwrap()
                    }
                })
                .boxed();
        }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_transfer_blocks_commit_and_rerun_moves_only_the_rest() {
    let db = small_db();
    let flaky = Arc::new(Flaky {
        inner: InMemory::new(),
        needle: "data/posts".into(),
        broken: AtomicBool::new(true),
        gets_broken: AtomicBool::new(false),
        deletes_broken: AtomicBool::new(false),
        transient: AtomicU32::new(0),
    });
    let tree = || StoreTree::new(flaky.clone(), "db", "memory:///db");

    let r = push(db.path(), tree()).await;
    assert!(!r.success);
    assert!(!r.committed, "no manifest while a file is missing");
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].path, "data/posts/data.parquet");
    assert!(
        r.errors[0].message.contains("403"),
        "{}",
        r.errors[0].message
    );
    // The remote has no manifest, so readers see no half-synced tree.
    assert!(tree().read_manifest().await.unwrap().is_none());

    // The failure is fixed; the re-run sends only the missing file.
    flaky.broken.store(false, Ordering::SeqCst);
    let engine = engine_for(
        local(db.path()),
        tree(),
        (Mode::Push, SyncOptions::default()),
    );
    let plan = engine.plan().await.unwrap();
    assert_eq!(plan.uploads().len(), 1, "{:?}", plan.uploads());
    assert_eq!(plan.already_sent().len(), 8);
    let r = engine.execute(plan).await.unwrap();
    assert!(r.success && r.committed, "{:?}", r.errors);
    let m = tree().read_manifest().await.unwrap().unwrap().manifest;
    assert_eq!(m.files.len(), 9);

    let out = tempfile::tempdir().unwrap();
    pull(out.path(), tree()).await;
    assert_eq!(tree_files(db.path()), tree_files(out.path()));
}

/// A push that overwrites some objects and then fails puts the committed
/// versions back: the manifest names exactly the bytes that are there, and
/// the next run sends the edits again rather than trusting its journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_push_puts_back_what_it_overwrote() {
    let db = small_db();
    let flaky = Arc::new(Flaky {
        inner: InMemory::new(),
        needle: "data/posts".into(),
        broken: AtomicBool::new(false),
        gets_broken: AtomicBool::new(false),
        deletes_broken: AtomicBool::new(false),
        transient: AtomicU32::new(0),
    });
    let store: Arc<dyn ObjectStore> = flaky.clone();
    let tree = || StoreTree::new(flaky.clone(), "db", "memory:///db");
    assert!(push(db.path(), tree()).await.success);
    write_old(db.path(), "data/users/data.parquet", b"PAR1 users v2 PAR1");
    write_old(db.path(), "rels/forward/users.parquet", b"PAR1 fwd v2 PAR1");
    write_old(db.path(), "data/posts/data.parquet", b"PAR1 posts v2 PAR1");

    flaky.broken.store(true, Ordering::SeqCst);
    let r = push(db.path(), tree()).await;
    assert!(!r.success && !r.committed, "{:?}", r.errors);
    assert_manifest_matches_objects(&store, "db").await;
    let users = store
        .get(&Path::from("db/data/users/data.parquet"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&users[..], b"PAR1 users v1 PAR1");

    flaky.broken.store(false, Ordering::SeqCst);
    let r = push(db.path(), tree()).await;
    assert!(r.success && r.committed, "{:?}", r.errors);
    let mut sent = r.uploaded.clone();
    sent.sort();
    assert_eq!(
        sent,
        [
            "data/posts/data.parquet",
            "data/users/data.parquet",
            "rels/forward/users.parquet"
        ]
    );
    assert_manifest_matches_objects(&store, "db").await;
    let out = tempfile::tempdir().unwrap();
    pull(out.path(), tree()).await;
    assert_eq!(tree_files(db.path()), tree_files(out.path()));
}

/// A push commits a deletion but cannot make it (or is killed first): its
/// announcement stays, and the next push that writes finishes it, keeping
/// the object in the trash, so the leftover is never in the way of a later
/// upload (on a directory remote, a file where a folder is needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_deletion_is_finished_by_the_next_push() {
    let db = small_db();
    let flaky = Arc::new(Flaky {
        inner: InMemory::new(),
        needle: "events/seg-0001".into(),
        broken: AtomicBool::new(false),
        gets_broken: AtomicBool::new(false),
        deletes_broken: AtomicBool::new(false),
        transient: AtomicU32::new(0),
    });
    let store: Arc<dyn ObjectStore> = flaky.clone();
    let tree = || StoreTree::new(flaky.clone(), "db", "memory:///db");
    assert!(push(db.path(), tree()).await.success);
    std::fs::remove_file(db.path().join("events/seg-0001.parquet")).unwrap();
    flaky.deletes_broken.store(true, Ordering::SeqCst);
    let opts = SyncOptions::default().with_max_delete("100%".parse().unwrap());
    let r = run(db.path(), tree(), (Mode::Push, opts.clone())).await;
    assert!(r.committed && !r.success, "{:?}", r.errors);
    let leftover = Path::from("db/events/seg-0001.parquet");
    assert!(store.head(&leftover).await.is_ok(), "the deletion failed");

    flaky.deletes_broken.store(false, Ordering::SeqCst);
    write_old(db.path(), "data/new/data.parquet", b"PAR1 new PAR1");
    let r = run(db.path(), tree(), (Mode::Push, opts)).await;
    assert!(r.success, "{:?}", r.errors);
    assert!(
        r.warnings.iter().any(|w| w.contains("finished 1 deletion")),
        "{:?}",
        r.warnings
    );
    assert!(store.head(&leftover).await.is_err(), "the leftover is gone");
    let kept: Vec<_> = r.kept.iter().map(|k| k.path.as_str()).collect();
    assert_eq!(kept, ["events/seg-0001.parquet"]);
    let announcements: Vec<_> = store
        .list(Some(&Path::from("db/_meta/.pqsync/pending")))
        .collect()
        .await;
    assert!(announcements.is_empty(), "{announcements:?}");
    assert_manifest_matches_objects(&store, "db").await;
}

/// A pull that cannot fetch a new event segment keeps the old event
/// manifest, so the local event log never names a segment that is not
/// there; the other files still arrive, and the next pull completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_that_misses_a_segment_keeps_the_old_event_manifest() {
    let db = small_db();
    let flaky = Arc::new(Flaky {
        inner: InMemory::new(),
        needle: "seg-0003".into(),
        broken: AtomicBool::new(false),
        gets_broken: AtomicBool::new(false),
        deletes_broken: AtomicBool::new(false),
        transient: AtomicU32::new(0),
    });
    let tree = || StoreTree::new(flaky.clone(), "db", "memory:///db");
    assert!(push(db.path(), tree()).await.success);
    let out = tempfile::tempdir().unwrap();
    assert!(pull(out.path(), tree()).await.success);
    let old_manifest = std::fs::read(out.path().join("events/_manifest.json")).unwrap();

    write_old(db.path(), "events/seg-0003.parquet", b"PAR1 seg3 PAR1");
    write_old(
        db.path(),
        "events/_manifest.json",
        b"{\"version\":1,\"segments\":[1,2,3]}",
    );
    write_old(db.path(), "data/users/data.parquet", b"PAR1 users v2 PAR1");
    assert!(push(db.path(), tree()).await.success);

    flaky.gets_broken.store(true, Ordering::SeqCst);
    let r = pull(out.path(), tree()).await;
    assert!(!r.success);
    let failed: Vec<&str> = r.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        failed,
        ["events/seg-0003.parquet", "events/_manifest.json"],
        "{:?}",
        r.errors
    );
    assert!(r.errors[1].message.contains("held back"));
    assert!(!out.path().join("events/seg-0003.parquet").exists());
    assert_eq!(
        std::fs::read(out.path().join("events/_manifest.json")).unwrap(),
        old_manifest,
        "the event manifest must not name a segment that failed to arrive"
    );
    assert_eq!(
        std::fs::read(out.path().join("data/users/data.parquet")).unwrap(),
        b"PAR1 users v2 PAR1"
    );

    flaky.gets_broken.store(false, Ordering::SeqCst);
    assert!(pull(out.path(), tree()).await.success);
    assert_eq!(tree_files(db.path()), tree_files(out.path()));
}

/// Scenario: a first push is cut off, the half-written prefix is deleted by
/// hand, and push runs again. The journal of completed uploads must not be
/// taken at its word: what it names is sent again unless the object is
/// still there with that content, and every manifest entry then names its
/// object's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_journal_never_commits_files_that_are_not_there() {
    let db = small_db();
    let flaky = Arc::new(Flaky {
        inner: InMemory::new(),
        needle: "data/posts".into(),
        broken: AtomicBool::new(true),
        gets_broken: AtomicBool::new(false),
        deletes_broken: AtomicBool::new(false),
        transient: AtomicU32::new(0),
    });
    let store: Arc<dyn ObjectStore> = flaky.clone();
    let tree = || StoreTree::new(flaky.clone(), "db", "memory:///db");
    let r = push(db.path(), tree()).await;
    assert!(!r.success && !r.committed);
    // The half-written prefix is deleted by hand.
    let listed: Vec<_> =
        futures::TryStreamExt::try_collect::<Vec<_>>(store.list(Some(&Path::from("db"))))
            .await
            .unwrap();
    let data = listed
        .iter()
        .filter(|m| !m.location.as_ref().contains("_meta/.pqsync"))
        .count();
    assert_eq!(data, 8, "eight files made it");
    for meta in &listed {
        store.delete(&meta.location).await.unwrap();
    }
    flaky.broken.store(false, Ordering::SeqCst);
    let engine = engine_for(
        local(db.path()),
        tree(),
        (Mode::Push, SyncOptions::default()),
    );
    let plan = engine.plan().await.unwrap();
    assert!(plan.already_sent().is_empty(), "{:?}", plan.already_sent());
    assert_eq!(plan.uploads().len(), 9);
    let r = engine.execute(plan).await.unwrap();
    assert!(r.success && r.committed, "{:?}", r.errors);
    assert_manifest_matches_objects(&store, "db").await;
}

/// Runs `hook` once, right after the next successful write of a remote
/// manifest through it: another writer acting between a commit and its
/// deletions.
struct AfterCommit {
    inner: Arc<InMemory>,
    hook: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl fmt::Display for AfterCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AfterCommit")
    }
}

impl fmt::Debug for AfterCommit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AfterCommit")
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl ObjectStore for AfterCommit {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        if location.as_ref().ends_with("_meta/manifest.json") {
            let hook = self.hook.lock().unwrap().take();
            if let Some(hook) = hook {
                tokio::task::spawn_blocking(hook).await.unwrap();
            }
        }
        Ok(r)
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

/// Scenario: A deletes a file and commits; before A's deletions run, B
/// (who edited that file) pushes it back with an explicit local-wins and
/// commits. A's deletion must leave B's object alone: the manifest names
/// it, with B's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_never_removes_what_a_later_commit_names() {
    let inner = Arc::new(InMemory::new());
    let plain = || StoreTree::new(inner.clone(), "db", "memory:///db");
    let a = small_db();
    assert!(push(a.path(), plain()).await.success);
    let b = tempfile::tempdir().unwrap();
    assert!(pull(b.path(), plain()).await.success);

    std::fs::remove_file(a.path().join("data/posts/data.parquet")).unwrap();
    write_old(b.path(), "data/posts/data.parquet", b"PAR1 B's posts PAR1");
    let b_path = b.path().to_path_buf();
    let b_tree = plain();
    let racing = Arc::new(AfterCommit {
        inner: inner.clone(),
        // B runs on a runtime of its own, as another process would.
        hook: std::sync::Mutex::new(Some(Box::new(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let opts = SyncOptions::default().with_strategy(pqsync_core::Strategy::LocalWins);
            let r = rt.block_on(run(&b_path, b_tree, (Mode::Push, opts)));
            assert!(r.success && r.committed, "B's push: {:?}", r.errors);
            assert_eq!(r.uploaded, vec!["data/posts/data.parquet"]);
        }))),
    });
    let a_tree = StoreTree::new(racing.clone(), "db", "memory:///db");
    let opts = SyncOptions::default().with_max_delete("100%".parse().unwrap());
    let r = run(a.path(), a_tree, (Mode::Push, opts)).await;
    assert!(
        racing.hook.lock().unwrap().is_none(),
        "B pushed between A's commit and its deletes"
    );
    assert!(r.deleted.is_empty(), "{:?}", r.deleted);
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("data/posts/data.parquet") && w.contains("not deleted")),
        "{:?}",
        r.warnings
    );
    let store: Arc<dyn ObjectStore> = inner.clone();
    assert_manifest_matches_objects(&store, "db").await;
    let posts = store
        .get(&Path::from("db/data/posts/data.parquet"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&posts[..], b"PAR1 B's posts PAR1");
}

/// Scenario 6: a manifest rebuild runs between a push's commit and its
/// deletions. The rebuild lists objects the push has just dropped from the
/// manifest; it must not add them back, or the manifest names objects the
/// push then deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_during_a_push_never_adds_back_what_it_deletes() {
    let inner = Arc::new(InMemory::new());
    let plain = || StoreTree::new(inner.clone(), "db", "memory:///db");
    let a = small_db();
    assert!(push(a.path(), plain()).await.success);
    let gone = [
        "data/posts/data.parquet",
        "indexes/bloom/users.bloom",
        "rels/reverse/posts.parquet",
    ];
    for p in gone {
        std::fs::remove_file(a.path().join(p)).unwrap();
    }
    let rebuild_tree = plain();
    let rebuilt = Arc::new(std::sync::Mutex::new(None));
    let report = rebuilt.clone();
    let racing = Arc::new(AfterCommit {
        inner: inner.clone(),
        hook: std::sync::Mutex::new(Some(Box::new(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let r = rt.block_on(pqsync_core::rebuild_remote(&rebuild_tree, None, 4, false));
            *report.lock().unwrap() = Some(r.unwrap());
        }))),
    });
    let a_tree = StoreTree::new(racing.clone(), "db", "memory:///db");
    let opts = SyncOptions::default().with_max_delete("100%".parse().unwrap());
    let r = run(a.path(), a_tree, (Mode::Push, opts)).await;
    assert!(r.success, "{:?}", r.errors);
    assert!(
        racing.hook.lock().unwrap().is_none(),
        "the rebuild ran between the commit and the deletes"
    );
    let store: Arc<dyn ObjectStore> = inner.clone();
    assert_manifest_matches_objects(&store, "db").await;
    let m = plain().read_manifest().await.unwrap().unwrap().manifest;
    for p in gone {
        assert!(!m.files.contains_key(p), "{p} was added back");
    }
    assert_eq!(m.files.len(), 9 - gone.len());
    let report = rebuilt.lock().unwrap().take().unwrap();
    assert_eq!(report.left_out, gone, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_within_one_run() {
    let db = small_db();
    let flaky = Arc::new(Flaky {
        inner: InMemory::new(),
        needle: String::new(),
        broken: AtomicBool::new(false),
        gets_broken: AtomicBool::new(false),
        deletes_broken: AtomicBool::new(false),
        transient: AtomicU32::new(4),
    });
    let tree = StoreTree::new(flaky.clone(), "db", "memory:///db");
    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.retry.initial_backoff = std::time::Duration::from_millis(1);
    let r = run(db.path(), tree, opts).await;
    assert!(r.success && r.committed, "{:?}", r.errors);
    assert_eq!(flaky.transient.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changed_after_scan_is_not_sent_under_a_stale_hash() {
    let db = small_db();
    let store = Arc::new(InMemory::new());
    let engine = engine_for(
        local(db.path()),
        StoreTree::new(store.clone(), "db", "memory:///db"),
        (Mode::Push, SyncOptions::default()),
    );
    let plan = engine.plan().await.unwrap();
    // Edited between plan and execute.
    std::fs::write(db.path().join("data/users/data.parquet"), b"edited mid-run").unwrap();
    let r = engine.execute(plan).await.unwrap();
    assert!(!r.success);
    assert_eq!(r.errors.len(), 1);
    assert!(
        r.errors[0].message.contains("changed during the run"),
        "{}",
        r.errors[0].message
    );
    let tree = StoreTree::new(store, "db", "memory:///db");
    assert!(tree.read_manifest().await.unwrap().is_none());
}

/// Compares two trees by content hash (pqsync's own state excluded).
fn same_tree(a: &std::path::Path, b: &std::path::Path) {
    let digest =
        |root: &std::path::Path| -> std::collections::BTreeMap<String, (u64, pqsync_core::Digest)> {
            let scan = local(root)
                .scan(pqsync_core::HashAlgorithm::Blake3)
                .unwrap();
            scan.files
                .into_iter()
                .map(|(p, e)| (p, (e.size, e.hash)))
                .collect()
        };
    assert_eq!(digest(a), digest(b));
}

/// 1,000 files and a 200 MiB file through a proxy that breaks 10% of
/// connections (resets before and during responses, 500s, 503 SlowDowns,
/// truncated bodies, latency): one push and one pull, byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_through_a_faulty_network() {
    use pqsync_testdata::faults::{FaultConfig, FaultProxy};
    use pqsync_testdata::generate::{generate, GenOptions};
    let server = pqsync_testdata::s3::S3Server::start();
    let upstream: std::net::SocketAddr = server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = FaultProxy::start(
        upstream,
        FaultConfig {
            seed: 20261122,
            fault_rate: 0.10,
            latency: std::time::Duration::from_millis(50),
            slow_down_only: false,
        },
    );
    let mut through_proxy = pqsync_testdata::s3::S3Server::start_external_like(&server);
    through_proxy.endpoint = proxy.endpoint();
    // A new connection per request, so "10% of connections" is 10% of
    // requests rather than of a handful of pooled connections.
    let store = s3_store_with(
        &through_proxy,
        object_store::ClientOptions::new().with_pool_max_idle_per_host(0),
    );

    let db = tempfile::tempdir().unwrap();
    generate(
        db.path(),
        &GenOptions {
            extra_files: 1000,
            big_file_mib: 200,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let prefix = unique("faulty");
    let tree = || {
        StoreTree::new(
            store.clone(),
            &prefix,
            format!("s3://{}/{prefix}", server.bucket),
        )
    };
    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.retry.max_attempts = 8;
    let r = run(db.path(), tree(), opts).await;
    assert!(r.success && r.committed, "{:?}", r.errors);
    let out = tempfile::tempdir().unwrap();
    let mut opts = (Mode::Pull, SyncOptions::default());
    opts.1.retry.max_attempts = 8;
    let r = run(out.path(), tree(), opts).await;
    assert!(r.success, "{:?}", r.errors);
    same_tree(db.path(), out.path());
    let stats = &proxy.stats;
    eprintln!("fault proxy: {:?}", stats);
    let connections = stats.connections.load(std::sync::atomic::Ordering::SeqCst);
    assert!(connections > 1000, "{stats:?}");
    assert!(
        stats.faults() * 20 >= connections,
        "fewer faults than expected: {stats:?}"
    );
}

/// Fails every part upload from `fail_from` on (not retryable), counting
/// the part uploads that got through.
struct PartFailing {
    inner: Arc<dyn object_store::multipart::MultipartStore>,
    fail_from: std::sync::atomic::AtomicUsize,
    sent: AtomicU32,
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl object_store::multipart::MultipartStore for PartFailing {
    async fn create_multipart(
        &self,
        path: &Path,
    ) -> object_store::Result<object_store::MultipartId> {
        self.inner.create_multipart(path).await
    }
    async fn create_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<object_store::MultipartId> {
        self.inner.create_multipart_opts(path, opts).await
    }
    async fn put_part(
        &self,
        path: &Path,
        id: &object_store::MultipartId,
        part_idx: usize,
        data: PutPayload,
    ) -> object_store::Result<object_store::multipart::PartId> {
        if part_idx >= self.fail_from.load(Ordering::SeqCst) {
            return Err(object_store::Error::PermissionDenied {
                path: path.to_string(),
                source: "injected: connection lost for good".into(),
            });
        }
        let r = self.inner.put_part(path, id, part_idx, data).await;
        if r.is_ok() {
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
        r
    }
    async fn complete_multipart(
        &self,
        path: &Path,
        id: &object_store::MultipartId,
        parts: Vec<object_store::multipart::PartId>,
    ) -> object_store::Result<PutResult> {
        self.inner.complete_multipart(path, id, parts).await
    }
    async fn abort_multipart(
        &self,
        path: &Path,
        id: &object_store::MultipartId,
    ) -> object_store::Result<()> {
        self.inner.abort_multipart(path, id).await
    }
}

/// A large upload cut off after some parts continues from its last finished
/// part on the next run; a changed file abandons (aborts) the old upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_multipart_upload_resumes_from_its_last_part() {
    for kind in ["memory", "s3"] {
        let (store, mp, _server): (
            Arc<dyn ObjectStore>,
            Arc<dyn object_store::multipart::MultipartStore>,
            _,
        ) = if kind == "memory" {
            let m = Arc::new(InMemory::new());
            (m.clone(), m, None)
        } else {
            let server = pqsync_testdata::s3::S3Server::start();
            (s3_store(&server), s3_multipart(&server), Some(server))
        };
        let failing = Arc::new(PartFailing {
            inner: mp,
            fail_from: std::sync::atomic::AtomicUsize::new(2),
            sent: AtomicU32::new(0),
        });
        let prefix = unique("resume");
        let tree = || {
            StoreTree::new(store.clone(), &prefix, format!("test://{prefix}"))
                .with_multipart_store(failing.clone())
        };
        let db = tempfile::tempdir().unwrap();
        // Five 8 MiB parts.
        let big: Vec<u8> = (0..(40u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        write_old(db.path(), "data/small/data.parquet", b"small");
        assert!(push(db.path(), tree()).await.success, "{kind}");
        write_old(db.path(), "data/big/data.parquet", &big);

        let r = push(db.path(), tree()).await;
        assert!(!r.success && !r.committed, "{kind}");
        // A pull in between leaves the interrupted push's upload alone.
        let r = pull(db.path(), tree()).await;
        assert!(r.success, "{kind}: {:?}", r.errors);
        assert_eq!(
            failing.sent.load(Ordering::SeqCst),
            2,
            "{kind}: two parts made it"
        );
        // status reports the interrupted upload.
        let plan = engine_for(
            local(db.path()),
            tree(),
            (Mode::Push, SyncOptions::default()),
        )
        .plan()
        .await
        .unwrap();
        assert!(
            plan.interrupted()
                .iter()
                .any(|i| i.contains("data/big/data.parquet") && i.contains("2 of 5 parts")),
            "{kind}: {:?}",
            plan.interrupted()
        );

        failing.fail_from.store(usize::MAX, Ordering::SeqCst);
        failing.sent.store(0, Ordering::SeqCst);
        let r = push(db.path(), tree()).await;
        assert!(r.success && r.committed, "{kind}: {:?}", r.errors);
        assert_eq!(
            failing.sent.load(Ordering::SeqCst),
            3,
            "{kind}: only the missing parts are sent"
        );
        let out = tempfile::tempdir().unwrap();
        pull(out.path(), tree()).await;
        assert_eq!(
            std::fs::read(out.path().join("data/big/data.parquet")).unwrap(),
            big,
            "{kind}"
        );
        let journal = local(db.path()).state_dir().join("journal");
        let leftovers: Vec<_> = walkdir::WalkDir::new(&journal)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .collect();
        assert!(leftovers.is_empty(), "{kind}: {leftovers:?}");
    }
}

/// Scenario: a file edited in place while a push sends it, the push cut off
/// after the edited part went out, the edit undone, and push run again.
/// The parts log then names parts for the restored file's hash whose bytes
/// are the edited ones. The resumed push must send those parts again: the
/// object an independent client reads is the restored file, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_upload_never_reuses_parts_of_other_bytes() {
    for kind in ["memory", "s3"] {
        let (store, mp, _server): (
            Arc<dyn ObjectStore>,
            Arc<dyn object_store::multipart::MultipartStore>,
            _,
        ) = if kind == "memory" {
            let m = Arc::new(InMemory::new());
            (m.clone(), m, None)
        } else {
            let server = pqsync_testdata::s3::S3Server::start();
            (s3_store(&server), s3_multipart(&server), Some(server))
        };
        let failing = Arc::new(PartFailing {
            inner: mp,
            fail_from: std::sync::atomic::AtomicUsize::new(2),
            sent: AtomicU32::new(0),
        });
        let prefix = unique("edited");
        let tree = || {
            StoreTree::new(store.clone(), &prefix, format!("test://{prefix}"))
                .with_multipart_store(failing.clone())
        };
        let db = tempfile::tempdir().unwrap();
        // Five 8 MiB parts; the edit is inside part 1.
        let original: Vec<u8> = (0..(40u32 << 20))
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let mut edited = original.clone();
        for b in &mut edited[(9 << 20)..(9 << 20) + 4096] {
            *b ^= 0xff;
        }
        let rel = "data/big/data.parquet";
        write_old(db.path(), rel, &edited);
        let r = push(db.path(), tree()).await;
        assert!(!r.success, "{kind}: the first push is cut off");
        assert_eq!(failing.sent.load(Ordering::SeqCst), 2, "{kind}");

        // What the cut-off run left: parts 0 and 1 of the edited bytes, in a
        // record for the hash the scan took of the original file.
        let parts_dir = walkdir::WalkDir::new(local(db.path()).state_dir().join("journal"))
            .into_iter()
            .filter_map(|e| e.ok())
            .find(|e| e.file_type().is_file() && e.path().to_string_lossy().contains(".parts/"))
            .expect("a parts record")
            .into_path();
        let mut record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&parts_dir).unwrap()).unwrap();
        let original_hash = format!(
            "blake3:{}",
            pqsync_core::HashAlgorithm::Blake3.digest(&original)
        );
        record["hash"] = serde_json::json!(original_hash);
        std::fs::write(&parts_dir, serde_json::to_vec(&record).unwrap()).unwrap();

        // The edit is undone; push again.
        write_old(db.path(), rel, &original);
        failing.fail_from.store(usize::MAX, Ordering::SeqCst);
        failing.sent.store(0, Ordering::SeqCst);
        let r = push(db.path(), tree()).await;
        assert!(r.success && r.committed, "{kind}: {:?}", r.errors);
        assert_eq!(
            failing.sent.load(Ordering::SeqCst),
            4,
            "{kind}: part 1 sent again (8 MiB), parts 2-4 for the first time; part 0 reused"
        );
        // What an independent client reads.
        let loc = Path::from(format!("{prefix}/{rel}"));
        let stored = store.get(&loc).await.unwrap().bytes().await.unwrap();
        assert!(
            stored.as_ref() == original.as_slice(),
            "{kind}: the object is the restored file"
        );
        // And every manifest entry names exactly its object's bytes.
        assert_manifest_matches_objects(&store, &prefix).await;
    }
}

/// The invariant, checked through the store directly: every entry of the
/// remote manifest names an object with exactly those bytes.
async fn assert_manifest_matches_objects(store: &Arc<dyn ObjectStore>, prefix: &str) {
    let raw = store
        .get(&Path::from(format!("{prefix}/_meta/manifest.json")))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    for (path, e) in m["files"].as_object().unwrap() {
        let bytes = store
            .get(&Path::from(format!("{prefix}/{path}")))
            .await
            .unwrap_or_else(|err| panic!("{path} named by the manifest: {err}"))
            .bytes()
            .await
            .unwrap();
        let alg: pqsync_core::HashAlgorithm = e["hashAlgorithm"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            alg.digest(&bytes).to_string(),
            e["hash"].as_str().unwrap(),
            "{path}: the object holds other bytes than the manifest names"
        );
    }
}

/// Uploads carry their content hash in object metadata, so a later run can
/// tell an upload it completed before being killed from a missing one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploaded_objects_carry_their_content_hash() {
    for kind in [
        RemoteKind::Memory(Arc::new(InMemory::new())),
        RemoteKind::s3(),
    ] {
        let db = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(20u32 << 20)).map(|i| (i >> 7) as u8).collect();
        write_old(db.path(), "big.bin", &big);
        write_old(db.path(), "small.bin", b"small");
        let remote = kind.tree("hashmeta");
        assert!(push(db.path(), remote.clone()).await.success);
        let m = remote.read_manifest().await.unwrap().unwrap().manifest;
        for e in m.files.values() {
            assert!(remote.has_content(e).await, "{}", e.path);
            let mut other = e.clone();
            other.hash = "0".repeat(64).parse().unwrap();
            assert!(!remote.has_content(&other).await);
        }
    }
}

/// A full disk during a pull: a clean error for the file that did not fit,
/// every existing file intact, and no temporary file left behind. Uses a
/// small tmpfs, so it needs root (as CI has); elsewhere it says so and skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_during_pull_keeps_existing_files() {
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let mnt = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(mnt.path())
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    }
    let _unmount = Unmount(mnt.path().to_path_buf());

    let src = small_db();
    let store = Arc::new(InMemory::new());
    let tree = || StoreTree::new(store.clone(), "db", "memory:///db");
    assert!(push(src.path(), tree()).await.success);
    let local = mnt.path().join("db");
    assert!(pull(&local, tree()).await.success);

    // The remote gains a file larger than the whole file system, and a
    // changed small one.
    let big: Vec<u8> = (0..(6u32 << 20)).map(|i| (i >> 3) as u8).collect();
    write_old(src.path(), "data/big/data.parquet", &big);
    write_old(src.path(), "data/users/data.parquet", b"PAR1 users v2 PAR1");
    assert!(push(src.path(), tree()).await.success);

    let before = tree_files(&local);
    let r = pull(&local, tree()).await;
    assert!(!r.success);
    let failure = r
        .errors
        .iter()
        .find(|e| e.path == "data/big/data.parquet")
        .expect("the big file fails");
    assert!(
        failure.message.contains("No space left on device"),
        "{}",
        failure.message
    );
    assert_eq!(failure.message.lines().count(), 1);
    // What was there is intact (the small change may have arrived whole).
    let after = tree_files(&local);
    for (path, bytes) in &before {
        let now = &after[path];
        assert!(
            now == bytes || path == "data/users/data.parquet" && now == b"PAR1 users v2 PAR1",
            "{path} damaged"
        );
    }
    let leftovers: Vec<_> = walkdir::WalkDir::new(&local)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".pqsync.tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(!local.join("data/big/data.parquet").exists());
}

/// A store that answers 503 SlowDown to a third of the connections: the run
/// lowers its concurrency (seen through the HTTP client's response
/// statuses), and still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_lowers_concurrency_and_the_run_completes() {
    use pqsync_testdata::faults::{FaultConfig, FaultProxy};
    let server = pqsync_testdata::s3::S3Server::start();
    let upstream: std::net::SocketAddr = server
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let proxy = FaultProxy::start(
        upstream,
        FaultConfig {
            seed: 3,
            fault_rate: 0.33,
            latency: std::time::Duration::ZERO,
            slow_down_only: true,
        },
    );
    let mut opts = (Mode::Push, SyncOptions::default());
    let congestion = opts.1.congestion.clone();
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(proxy.endpoint())
            .with_bucket_name(&server.bucket)
            .with_access_key_id(&server.access_key)
            .with_secret_access_key(&server.secret_key)
            .with_region(&server.region)
            .with_client_options(
                object_store::ClientOptions::new()
                    .with_allow_http(true)
                    .with_pool_max_idle_per_host(0),
            )
            .with_http_connector(pqsync_backends::observing_connector(Arc::new(move |s| {
                congestion.observe_status(s)
            })))
            .build()
            .unwrap(),
    );
    let db = tempfile::tempdir().unwrap();
    for i in 0..300 {
        write_old(
            db.path(),
            &format!("data/n{}/part-{i:04}.parquet", i % 7),
            format!("row {i}").as_bytes(),
        );
    }
    let prefix = unique("slowdown");
    opts.1.retry.max_attempts = 8;
    let r = run(
        db.path(),
        StoreTree::new(store, &prefix, "s3://slow"),
        opts.clone(),
    )
    .await;
    assert!(r.success && r.committed, "{:?}", r.errors);
    assert!(opts.1.congestion.cuts() > 0, "no slow-down seen");
    assert!(
        opts.1.congestion.lowest() < 8,
        "concurrency never went down"
    );
    assert!(
        r.warnings.iter().any(|w| w.contains("asked to slow down")),
        "{:?}",
        r.warnings
    );
    assert!(proxy.stats.slow_downs.load(Ordering::SeqCst) > 10);
}

/// A mirror source whose manifest names pqsync's own state objects is
/// refused before anything is copied.
#[tokio::test]
async fn mirror_refuses_a_source_naming_reserved_paths() {
    let store = Arc::new(InMemory::new());
    let mut m = pqsync_core::Manifest::new("d", "n");
    let rel = "_meta/.pqsync/lease.json";
    m.files.insert(
        rel.into(),
        pqsync_core::FileEntry {
            content_type: None,
            etag: None,
            extra: None,
            hash: pqsync_core::HashAlgorithm::Blake3.digest(b"x"),
            hash_algorithm: pqsync_core::HashAlgorithm::Blake3,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            path: rel.into(),
            size: 1,
        },
    );
    let src = StoreTree::new(store.clone(), "src", "memory:///src");
    use object_store::ObjectStoreExt;
    store
        .put(
            &src.location("_meta/manifest.json"),
            PutPayload::from(m.to_json_pretty()),
        )
        .await
        .unwrap();
    let dst = StoreTree::new(store.clone(), "dst", "memory:///dst");
    let engine = engine_for(src, dst, (Mode::Mirror, SyncOptions::default()));
    let err = engine.plan().await.unwrap_err().to_string();
    assert!(err.contains("unsafe path") && err.contains(rel), "{err}");
}
