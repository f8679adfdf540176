//! Shared fixtures: remote factories, sample trees and tree comparison.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::ObjectStore;
use pqsync_core::{Engine, LocalTree, Mode, StoreTree, SyncOptions, SyncResult};
use pqsync_testdata::s3::S3Server;

/// A kind of remote, able to hand out fresh, empty prefixes.
pub enum RemoteKind {
    /// `LocalFileSystem` on a temporary directory.
    Dir(tempfile::TempDir),
    /// `InMemory`.
    Memory(Arc<InMemory>),
    /// S3 over HTTP (in-process s3s server, or external via env).
    S3(Box<S3Server>, Arc<dyn ObjectStore>),
    /// Azure Blob Storage on Azurite (CI's Azure lane).
    Azure(Arc<MicrosoftAzure>),
}

impl RemoteKind {
    pub fn dir() -> RemoteKind {
        RemoteKind::Dir(tempfile::tempdir().unwrap())
    }

    pub fn s3() -> RemoteKind {
        let server = S3Server::start();
        let store = s3_store(&server);
        RemoteKind::S3(Box::new(server), store)
    }

    /// Azurite's container, when `PQSYNC_TEST_AZURE_CONTAINER` names one
    /// (CI's Azure lane starts Azurite and makes it; the endpoint is
    /// `AZURITE_BLOB_STORAGE_URL`, else Azurite's default).
    pub fn azure() -> Option<RemoteKind> {
        let container = std::env::var("PQSYNC_TEST_AZURE_CONTAINER").ok()?;
        let store = MicrosoftAzureBuilder::new()
            .with_use_emulator(true)
            .with_container_name(container)
            .build()
            .unwrap();
        Some(RemoteKind::Azure(Arc::new(store)))
    }

    /// A tree at a fresh prefix.
    pub fn tree(&self, name: &str) -> StoreTree {
        let prefix = unique(name);
        match self {
            RemoteKind::Dir(d) => {
                let fs = LocalFileSystem::new_with_prefix(d.path())
                    .unwrap()
                    .with_automatic_cleanup(true);
                StoreTree::new(
                    Arc::new(fs),
                    &prefix,
                    format!("file://{}/{prefix}", d.path().display()),
                )
                .with_attributes(false)
            }
            RemoteKind::Memory(m) => {
                StoreTree::new(m.clone(), &prefix, format!("memory:///{prefix}"))
            }
            RemoteKind::S3(server, store) => StoreTree::new(
                store.clone(),
                &prefix,
                format!("s3://{}/{prefix}", server.bucket),
            ),
            RemoteKind::Azure(store) => {
                StoreTree::new(store.clone(), &prefix, format!("az://azurite/{prefix}"))
                    .with_multipart_store(store.clone())
            }
        }
    }

    /// The same prefix again (a second client of the same remote).
    pub fn reopen(&self, tree: &StoreTree) -> StoreTree {
        let prefix = tree.url().rsplit('/').next().unwrap().to_string();
        match self {
            RemoteKind::Dir(d) => {
                let fs = LocalFileSystem::new_with_prefix(d.path())
                    .unwrap()
                    .with_automatic_cleanup(true);
                StoreTree::new(Arc::new(fs), &prefix, tree.url()).with_attributes(false)
            }
            RemoteKind::Memory(m) => {
                StoreTree::new(m.clone(), &prefix, tree.url()).with_multipart_store(m.clone())
            }
            RemoteKind::S3(server, store) => StoreTree::new(store.clone(), &prefix, tree.url())
                .with_multipart_store(s3_multipart(server)),
            RemoteKind::Azure(store) => StoreTree::new(store.clone(), &prefix, tree.url())
                .with_multipart_store(store.clone()),
        }
    }

    /// Whether commits are compare-and-swap here (otherwise a lease guards
    /// them, which costs a few more requests).
    pub fn conditional(&self) -> bool {
        match self {
            RemoteKind::Dir(_) => false,
            RemoteKind::Memory(_) => true,
            RemoteKind::S3(server, _) => server.conditional_writes,
            RemoteKind::Azure(_) => true,
        }
    }

    /// The raw store, for tampering.
    pub fn raw(&self) -> Arc<dyn ObjectStore> {
        match self {
            RemoteKind::Dir(d) => Arc::new(LocalFileSystem::new_with_prefix(d.path()).unwrap()),
            RemoteKind::Memory(m) => m.clone(),
            RemoteKind::S3(_, s) => s.clone(),
            RemoteKind::Azure(s) => s.clone(),
        }
    }
}

/// The same S3 bucket through the low-level multipart API.
pub fn s3_multipart(server: &S3Server) -> Arc<dyn object_store::multipart::MultipartStore> {
    Arc::new(
        s3_builder(server, object_store::ClientOptions::new())
            .build()
            .unwrap(),
    )
}

fn s3_builder(server: &S3Server, options: object_store::ClientOptions) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_client_options(options.with_allow_http(true))
        .with_endpoint(&server.endpoint)
        .with_bucket_name(&server.bucket)
        .with_access_key_id(&server.access_key)
        .with_secret_access_key(&server.secret_key)
        .with_region(&server.region)
        .with_virtual_hosted_style_request(false)
}

pub fn s3_store(server: &S3Server) -> Arc<dyn ObjectStore> {
    s3_store_with(server, object_store::ClientOptions::new())
}

pub fn s3_store_with(
    server: &S3Server,
    options: object_store::ClientOptions,
) -> Arc<dyn ObjectStore> {
    Arc::new(s3_builder(server, options).build().unwrap())
}

pub fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{name}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Writes a file with an mtime in the past (so the stat cache may keep it).
pub fn write_old(root: &Path, rel: &str, data: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, data).unwrap();
    age(root, rel);
}

/// Moves a file's mtime ten minutes into the past.
pub fn age(root: &Path, rel: &str) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
    std::fs::File::options()
        .write(true)
        .open(root.join(rel))
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// A small database: a few data files, relationship files, segments and
/// the event segment manifest.
pub fn small_db() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    write_old(
        r,
        "_meta/schema.json",
        b"{\"namespaces\":[\"users\",\"posts\"]}",
    );
    write_old(r, "data/users/data.parquet", b"PAR1 users v1 PAR1");
    write_old(r, "data/posts/data.parquet", b"PAR1 posts v1 PAR1");
    write_old(r, "rels/forward/users.parquet", b"PAR1 fwd PAR1");
    write_old(r, "rels/reverse/posts.parquet", b"PAR1 rev PAR1");
    write_old(r, "events/seg-0001.parquet", b"PAR1 seg1 PAR1");
    write_old(r, "events/seg-0002.parquet", b"PAR1 seg2 PAR1");
    write_old(
        r,
        "events/_manifest.json",
        b"{\"version\":1,\"segments\":[1,2]}",
    );
    write_old(r, "indexes/bloom/users.bloom", b"bloom");
    dir
}

/// Every synced file of a local tree, with its bytes.
pub fn tree_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if pqsync_core::is_ignored(&rel) {
            continue;
        }
        out.insert(rel, std::fs::read(e.path()).unwrap());
    }
    out
}

/// The options of a run, with the mode the engine is built for.
pub type Opts = (Mode, SyncOptions);

/// One side of an engine: a directory (push, pull, sync) or a store prefix
/// (the source of a mirror).
pub trait Side {
    /// The engine for `mode` between this side and `remote`.
    fn engine(self, remote: StoreTree, opts: Opts) -> Engine;
}

impl Side for LocalTree {
    fn engine(self, remote: StoreTree, (mode, opts): Opts) -> Engine {
        match mode {
            Mode::Push => Engine::push(self, remote, opts),
            Mode::Pull => Engine::pull(self, remote, opts),
            Mode::Sync => Engine::sync(self, remote, opts),
            other => panic!("{other} needs a store as its source"),
        }
    }
}

impl Side for StoreTree {
    fn engine(self, remote: StoreTree, (mode, opts): Opts) -> Engine {
        assert_eq!(mode, Mode::Mirror, "a store is the source of a mirror only");
        Engine::mirror(self, remote, opts)
    }
}

/// The engine for `opts.0` between `side` and `remote`.
pub fn engine_for(side: impl Side, remote: StoreTree, opts: Opts) -> Engine {
    side.engine(remote, opts)
}

pub async fn run(dir: &Path, remote: StoreTree, opts: Opts) -> SyncResult {
    let engine = engine_for(local(dir), remote, opts);
    let plan = engine.plan().await.unwrap();
    engine.execute(plan).await.unwrap()
}

pub async fn push(local: &Path, remote: StoreTree) -> SyncResult {
    run(local, remote, (Mode::Push, SyncOptions::default())).await
}

pub async fn pull(local: &Path, remote: StoreTree) -> SyncResult {
    run(local, remote, (Mode::Pull, SyncOptions::default())).await
}

/// A local tree whose state lives in this test process's own state home
/// (a temporary directory), not the user's.
pub fn local(root: impl Into<std::path::PathBuf>) -> LocalTree {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().expect("a state home"));
    LocalTree::with_state_home(root, home.path())
}
