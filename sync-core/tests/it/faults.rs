//! Partial failures: a run that cannot send every file commits nothing, and
//! the next run moves only what is left.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};
use pqsync_core::{Engine, LocalTree, Mode, NoProgress, StoreTree, SyncOptions};

use crate::support::*;

/// Fails every PUT whose path contains `needle` while `broken` is set, and
/// the first `transient` PUTs of any path with a retryable error.
#[derive(Debug)]
struct Flaky {
    inner: InMemory,
    needle: String,
    broken: AtomicBool,
    transient: AtomicU32,
}

impl fmt::Display for Flaky {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Flaky")
    }
}

#[async_trait]
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
                source: "connection reset by peer (injected)".into(),
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
    let engine = Engine::new(
        LocalTree::new(db.path()),
        tree(),
        SyncOptions::new(Mode::Push),
    )
    .unwrap();
    let plan = engine.plan().await.unwrap();
    assert_eq!(plan.uploads.len(), 1, "{:?}", plan.uploads);
    assert_eq!(plan.already_sent.len(), 8);
    let r = engine.execute(plan, &NoProgress).await.unwrap();
    assert!(r.success && r.committed, "{:?}", r.errors);
    let m = tree().read_manifest().await.unwrap().unwrap().manifest;
    assert_eq!(m.files.len(), 9);

    let out = tempfile::tempdir().unwrap();
    pull(out.path(), tree()).await;
    assert_eq!(tree_files(db.path()), tree_files(out.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_within_one_run() {
    let db = small_db();
    let flaky = Arc::new(Flaky {
        inner: InMemory::new(),
        needle: String::new(),
        broken: AtomicBool::new(false),
        transient: AtomicU32::new(4),
    });
    let tree = StoreTree::new(flaky.clone(), "db", "memory:///db");
    let mut opts = SyncOptions::new(Mode::Push);
    opts.retry.initial_backoff = std::time::Duration::from_millis(1);
    let r = run(db.path(), tree, opts).await;
    assert!(r.success && r.committed, "{:?}", r.errors);
    assert_eq!(flaky.transient.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_changed_after_scan_is_not_sent_under_a_stale_hash() {
    let db = small_db();
    let store = Arc::new(InMemory::new());
    let engine = Engine::new(
        LocalTree::new(db.path()),
        StoreTree::new(store.clone(), "db", "memory:///db"),
        SyncOptions::new(Mode::Push),
    )
    .unwrap();
    let plan = engine.plan().await.unwrap();
    // Edited between plan and execute.
    std::fs::write(db.path().join("data/users/data.parquet"), b"edited mid-run").unwrap();
    let r = engine.execute(plan, &NoProgress).await.unwrap();
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
    let digest = |root: &std::path::Path| -> std::collections::BTreeMap<String, (u64, String)> {
        let scan = LocalTree::new(root)
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
    let mut opts = SyncOptions::new(Mode::Push);
    opts.retry.max_attempts = 8;
    let r = run(db.path(), tree(), opts).await;
    assert!(r.success && r.committed, "{:?}", r.errors);
    let out = tempfile::tempdir().unwrap();
    let mut opts = SyncOptions::new(Mode::Pull);
    opts.retry.max_attempts = 8;
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
