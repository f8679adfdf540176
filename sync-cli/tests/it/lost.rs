//! Nothing is ever lost: the scenarios by which a sync could destroy the
//! only good copy, each run through the real binary on a directory remote
//! and on S3, and judged by what an independent client reads (the remote
//! directory itself, or the bucket through `object_store`), never by what
//! pqsync reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use pqsync_core::object_store::aws::AmazonS3Builder;
use pqsync_core::object_store::path::Path as ObjectPath;
use pqsync_core::object_store::{ObjectStore, ObjectStoreExt};
use pqsync_core::HashAlgorithm;
use pqsync_testdata::s3::S3Server;
use serde_json::Value;

use crate::{age, pqsync, sample_copy, tree_files, Output};

/// A remote as an independent client sees it.
pub enum Remote {
    /// A directory remote, read from the file system.
    Dir(tempfile::TempDir),
    /// A prefix of the S3 test server, read through `object_store`.
    S3 {
        server: Box<S3Server>,
        store: Arc<dyn ObjectStore>,
        prefix: String,
        rt: tokio::runtime::Runtime,
    },
}

impl Remote {
    pub fn dir() -> Remote {
        Remote::Dir(tempfile::tempdir().unwrap())
    }

    pub fn s3(name: &str) -> Remote {
        let server = S3Server::start();
        let url = server.unique_url(name);
        let prefix = url
            .trim_start_matches("s3://")
            .split_once('/')
            .unwrap()
            .1
            .to_string();
        let store = AmazonS3Builder::new()
            .with_endpoint(&server.endpoint)
            .with_bucket_name(&server.bucket)
            .with_access_key_id(&server.access_key)
            .with_secret_access_key(&server.secret_key)
            .with_region(&server.region)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap();
        Remote::S3 {
            server: Box::new(server),
            store: Arc::new(store),
            prefix,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Both kinds, for tests that run on each.
    pub fn each(name: &str) -> [Remote; 2] {
        [Remote::dir(), Remote::s3(name)]
    }

    /// The URL pqsync is given.
    pub fn url(&self) -> String {
        match self {
            Remote::Dir(d) => d.path().join("remote").display().to_string(),
            Remote::S3 { server, prefix, .. } => format!("s3://{}/{prefix}", server.bucket),
        }
    }

    /// The S3 server, for the binary's environment.
    pub fn server(&self) -> Option<&S3Server> {
        match self {
            Remote::Dir(_) => None,
            Remote::S3 { server, .. } => Some(server),
        }
    }

    fn root(&self) -> PathBuf {
        match self {
            Remote::Dir(d) => d.path().join("remote"),
            Remote::S3 { .. } => unreachable!("a directory remote only"),
        }
    }

    /// Every object under the remote (pqsync's own state left out), with
    /// its bytes.
    pub fn objects(&self) -> BTreeMap<String, Vec<u8>> {
        match self {
            Remote::Dir(_) => {
                let root = self.root();
                let mut out = BTreeMap::new();
                if !root.exists() {
                    return out;
                }
                for e in walkdir::WalkDir::new(&root) {
                    let e = e.unwrap();
                    if !e.file_type().is_file() {
                        continue;
                    }
                    let rel = e
                        .path()
                        .strip_prefix(&root)
                        .unwrap()
                        .to_string_lossy()
                        .to_string();
                    if !rel.starts_with("_meta/.pqsync") {
                        out.insert(rel, std::fs::read(e.path()).unwrap());
                    }
                }
                out
            }
            Remote::S3 {
                store, prefix, rt, ..
            } => rt.block_on(async {
                let listed: Vec<_> = store
                    .list(Some(&ObjectPath::parse(prefix.as_str()).unwrap()))
                    .try_collect()
                    .await
                    .unwrap();
                let mut out = BTreeMap::new();
                for meta in listed {
                    let rel = meta.location.as_ref()[prefix.len() + 1..].to_string();
                    if rel.starts_with("_meta/.pqsync") {
                        continue;
                    }
                    let bytes = store
                        .get(&meta.location)
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    out.insert(rel, bytes.to_vec());
                }
                out
            }),
        }
    }

    /// Every object under `sub` (a folder of the remote), by its path
    /// below that folder, with its bytes.
    fn under(&self, sub: &str) -> BTreeMap<String, Vec<u8>> {
        match self {
            Remote::Dir(_) => {
                let root = self.root().join(sub);
                let mut out = BTreeMap::new();
                for e in walkdir::WalkDir::new(&root).into_iter().flatten() {
                    if e.file_type().is_file() {
                        let rel = e.path().strip_prefix(&root).unwrap();
                        out.insert(
                            rel.to_string_lossy().to_string(),
                            std::fs::read(e.path()).unwrap(),
                        );
                    }
                }
                out
            }
            Remote::S3 {
                store, prefix, rt, ..
            } => rt.block_on(async {
                let root = format!("{prefix}/{sub}");
                let listed: Vec<_> = store
                    .list(Some(&ObjectPath::parse(root.as_str()).unwrap()))
                    .try_collect()
                    .await
                    .unwrap();
                let mut out = BTreeMap::new();
                for meta in listed {
                    let rel = meta.location.as_ref()[root.len() + 1..].to_string();
                    let got = store.get(&meta.location).await.unwrap();
                    out.insert(rel, got.bytes().await.unwrap().to_vec());
                }
                out
            }),
        }
    }

    /// The remote's trash, read independently: `(run, path)` → bytes.
    pub fn trash(&self) -> BTreeMap<(String, String), Vec<u8>> {
        self.under("_meta/.pqsync/trash")
            .into_iter()
            .map(|(rel, bytes)| {
                let (run, path) = rel.split_once('/').unwrap();
                ((run.to_string(), path.to_string()), bytes)
            })
            .collect()
    }

    /// The keys of pqsync's own state under the remote (`_meta/.pqsync/`),
    /// relative to that folder.
    pub fn state_keys(&self) -> Vec<String> {
        self.under("_meta/.pqsync").into_keys().collect()
    }

    /// Replaces one object behind pqsync's back. On S3, with
    /// `stored_hash`, the new object keeps that `pqsync-hash` metadata (bit
    /// rot: the bytes changed, the metadata did not).
    pub fn put(&self, rel: &str, bytes: &[u8], stored_hash: Option<&str>) {
        match self {
            Remote::Dir(_) => {
                let path = self.root().join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap()
            }
            Remote::S3 {
                store, prefix, rt, ..
            } => {
                let mut attributes = pqsync_core::object_store::Attributes::new();
                if let Some(h) = stored_hash {
                    attributes.insert(
                        pqsync_core::object_store::Attribute::Metadata("pqsync-hash".into()),
                        h.to_string().into(),
                    );
                }
                let opts = pqsync_core::object_store::PutOptions {
                    attributes,
                    ..Default::default()
                };
                rt.block_on(store.put_opts(
                    &ObjectPath::parse(format!("{prefix}/{rel}")).unwrap(),
                    bytes.to_vec().into(),
                    opts,
                ))
                .unwrap();
            }
        }
    }

    /// Deletes one object behind pqsync's back.
    pub fn delete(&self, rel: &str) {
        match self {
            Remote::Dir(_) => std::fs::remove_file(self.root().join(rel)).unwrap(),
            Remote::S3 {
                store, prefix, rt, ..
            } => rt
                .block_on(store.delete(&ObjectPath::parse(format!("{prefix}/{rel}")).unwrap()))
                .unwrap(),
        }
    }

    /// Deletes everything under the remote, pqsync's state included.
    pub fn wipe(&self) {
        match self {
            Remote::Dir(_) => std::fs::remove_dir_all(self.root()).unwrap(),
            Remote::S3 {
                store, prefix, rt, ..
            } => rt.block_on(async {
                let listed: Vec<_> = store
                    .list(Some(&ObjectPath::parse(prefix.as_str()).unwrap()))
                    .try_collect()
                    .await
                    .unwrap();
                for meta in listed {
                    store.delete(&meta.location).await.unwrap();
                }
            }),
        }
    }

    /// The remote manifest as JSON, if there is one.
    pub fn manifest(&self) -> Option<Value> {
        self.objects()
            .get("_meta/manifest.json")
            .map(|b| serde_json::from_slice(b).unwrap())
    }

    /// The invariant: every entry of the remote manifest names an object
    /// with exactly those bytes.
    pub fn assert_invariant(&self, when: &str) {
        let objects = self.objects();
        let Some(m) = self.manifest() else { return };
        for (path, e) in m["files"].as_object().unwrap() {
            let bytes = objects
                .get(path)
                .unwrap_or_else(|| panic!("{when}: the manifest names {path}, which is missing"));
            let alg: HashAlgorithm = e["hashAlgorithm"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                alg.digest(bytes).to_string(),
                e["hash"].as_str().unwrap(),
                "{when}: {path} holds other bytes than the manifest names"
            );
        }
    }
}

impl Remote {
    /// [`Remote::assert_invariant`] for every entry but `except`.
    pub fn assert_invariant_except(&self, except: &str, when: &str) {
        let objects = self.objects();
        let m = self.manifest().unwrap();
        for (path, e) in m["files"].as_object().unwrap() {
            if path == except {
                continue;
            }
            let alg: HashAlgorithm = e["hashAlgorithm"].as_str().unwrap().parse().unwrap();
            assert_eq!(
                alg.digest(&objects[path]).to_string(),
                e["hash"].as_str().unwrap(),
                "{when}: {path}"
            );
        }
    }
}

/// The synced files of a remote (its manifest left out).
pub(crate) fn data_of(remote: &Remote) -> BTreeMap<String, Vec<u8>> {
    let mut objects = remote.objects();
    objects.remove("_meta/manifest.json");
    objects
}

/// Scenario 2: the remote lost its manifest (or the whole prefix) and the
/// local tree grew. `sync` must not read that as "the remote deleted
/// everything": it stops, names the situation and the repair, and every
/// local file is still there.
#[test]
fn sync_after_the_remote_lost_its_manifest_deletes_nothing() {
    for wipe_all in [false, true] {
        for remote in Remote::each("lost-sync") {
            let db = sample_copy();
            let url = remote.url();
            pqsync(remote.server())
                .args(["push", &url, "-d"])
                .arg(db.path())
                .stdout_ok();
            for i in 0..30 {
                let p = db.path().join(format!("data/new{i}/data.parquet"));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, format!("new {i}")).unwrap();
                age(&p);
            }
            let before = tree_files(db.path());
            if wipe_all {
                remote.wipe();
            } else {
                remote.delete("_meta/manifest.json");
            }
            for cmd in ["sync", "pull"] {
                let err = pqsync(remote.server())
                    .args([cmd, "-d"])
                    .arg(db.path())
                    .stderr_with(1);
                let err = String::from_utf8_lossy(&err);
                assert!(err.contains("lost its data"), "{cmd}: {err}");
                assert!(err.contains("pqsync push"), "{cmd}: {err}");
                assert_eq!(
                    tree_files(db.path()),
                    before,
                    "{cmd}: nothing local changed"
                );
            }
        }
    }
}

/// Scenario 3: after the remote was wiped, push sends every file again and
/// says why; the remote then holds the database, as an independent client
/// and a fresh pull see it.
#[test]
fn push_repairs_a_wiped_remote() {
    for remote in Remote::each("lost-push") {
        let db = sample_copy();
        let url = remote.url();
        pqsync(remote.server())
            .args(["push", &url, "-d"])
            .arg(db.path())
            .stdout_ok();
        remote.wipe();
        let out = pqsync(remote.server())
            .args(["push", "--dry-run", "-d"])
            .arg(db.path())
            .assert()
            .success()
            .get_output()
            .clone();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("changed on the remote"), "{text}");
        assert!(
            text.contains(&format!(
                "would upload {} file(s)",
                tree_files(db.path()).len()
            )),
            "{text}"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("lost its data"));
        pqsync(remote.server())
            .args(["push", "-d"])
            .arg(db.path())
            .stdout_ok();
        assert_eq!(
            data_of(&remote),
            tree_files(db.path()),
            "the remote holds the database again"
        );
        remote.assert_invariant("after the repairing push");
        let restored = tempfile::tempdir().unwrap();
        pqsync(remote.server())
            .args(["pull", &url, "-d"])
            .arg(restored.path())
            .stdout_ok();
        assert_eq!(tree_files(restored.path()), tree_files(db.path()));
        pqsync(remote.server()).args(["verify", &url]).stdout_ok();
    }
}

/// `--max-delete` is measured against the files the base knew: deleting
/// the 27 files of a database that grew by 30 is over 50%.
#[test]
fn max_delete_counts_against_the_base() {
    let remote = Remote::dir();
    let db = sample_copy();
    let url = remote.url();
    pqsync(None)
        .args(["push", &url, "-d"])
        .arg(db.path())
        .stdout_ok();
    let clone = tempfile::tempdir().unwrap();
    pqsync(None)
        .args(["pull", &url, "-d"])
        .arg(clone.path())
        .stdout_ok();
    // The clone grows by 30 files, then the other side deletes all 27.
    for i in 0..30 {
        let p = clone.path().join(format!("data/new{i}/data.parquet"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("new {i}")).unwrap();
        age(&p);
    }
    for p in tree_files(db.path()).keys() {
        std::fs::remove_file(db.path().join(p)).unwrap();
    }
    pqsync(None)
        .args(["push", "--max-delete", "100%", "-d"])
        .arg(db.path())
        .stdout_ok();
    let before = tree_files(clone.path());
    let out = pqsync(None)
        .args(["sync", "--json", "-d"])
        .arg(clone.path())
        .stdout_with(1);
    let v: Value = serde_json::from_slice(&out).unwrap();
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("refusing to delete 27 of 27"), "{msg}");
    assert_eq!(tree_files(clone.path()), before, "nothing deleted locally");
}

/// Reads one file of a remote, as an independent client sees it.
pub(crate) fn object(remote: &Remote, rel: &str) -> Vec<u8> {
    remote
        .objects()
        .remove(rel)
        .unwrap_or_else(|| panic!("{rel} is missing"))
}

/// Scenario 8: a conflict is never a silent overwrite. A clone that lost
/// its base, two clones editing one file, a pull over a local edit, and a
/// first pull into a directory that already holds other bytes: each stops
/// the path with exit 3, and both versions still exist.
#[test]
fn conflicts_stop_instead_of_overwriting() {
    let rel = "_meta/schema.json";
    for remote in Remote::each("conflicts") {
        let url = remote.url();
        let srv = remote.server();
        let a = sample_copy();
        pqsync(srv)
            .args(["push", &url, "-d"])
            .arg(a.path())
            .stdout_ok();
        let b = tempfile::tempdir().unwrap();
        pqsync(srv)
            .args(["pull", &url, "-d"])
            .arg(b.path())
            .stdout_ok();

        // A commits an edit; B lost its base (a copied tree, a cleaned state
        // directory) and pushes: first-sync rules must not revert A's edit.
        std::fs::write(a.path().join(rel), b"{\"edited\":\"by A\"}").unwrap();
        age(&a.path().join(rel));
        pqsync(srv).args(["push", "-d"]).arg(a.path()).stdout_ok();
        std::fs::remove_dir_all(crate::state_of(b.path())).unwrap();
        let out = pqsync(srv)
            .args(["push", &url, "-d"])
            .arg(b.path())
            .stdout_with(3);
        assert!(String::from_utf8_lossy(&out).contains(&format!("conflict left unresolved: {rel}")));
        assert_eq!(
            object(&remote, rel),
            b"{\"edited\":\"by A\"}",
            "A's edit is kept"
        );
        // Nor does B's pull replace B's copy behind its back.
        let before = std::fs::read(b.path().join(rel)).unwrap();
        pqsync(srv)
            .args(["pull", "-d"])
            .arg(b.path())
            .stdout_with(3);
        assert_eq!(std::fs::read(b.path().join(rel)).unwrap(), before);
        remote.assert_invariant("after the stopped conflicts");

        // Both clones edit one file; the second push stops.
        let c = tempfile::tempdir().unwrap();
        pqsync(srv)
            .args(["pull", &url, "-d"])
            .arg(c.path())
            .stdout_ok();
        std::fs::write(a.path().join(rel), b"{\"v\":\"A2\"}").unwrap();
        std::fs::write(c.path().join(rel), b"{\"v\":\"C2\"}").unwrap();
        pqsync(srv).args(["push", "-d"]).arg(a.path()).stdout_ok();
        pqsync(srv)
            .args(["push", "-d"])
            .arg(c.path())
            .stdout_with(3);
        assert_eq!(object(&remote, rel), b"{\"v\":\"A2\"}");
        // The pull stops over C's local edit.
        pqsync(srv)
            .args(["pull", "-d"])
            .arg(c.path())
            .stdout_with(3);
        assert_eq!(
            std::fs::read(c.path().join(rel)).unwrap(),
            b"{\"v\":\"C2\"}"
        );
        // An explicit strategy resolves, as asked.
        pqsync(srv)
            .args(["push", "--strategy", "local-wins", "-d"])
            .arg(c.path())
            .stdout_ok();
        assert_eq!(object(&remote, rel), b"{\"v\":\"C2\"}");

        // A first pull into a directory that holds other bytes at a path.
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("_meta")).unwrap();
        std::fs::write(d.path().join(rel), b"local, never synced").unwrap();
        pqsync(srv)
            .args(["pull", &url, "-d"])
            .arg(d.path())
            .stdout_with(3);
        assert_eq!(
            std::fs::read(d.path().join(rel)).unwrap(),
            b"local, never synced"
        );
        remote.assert_invariant("at the end");
    }
}

/// Two runs on one directory never race: while one holds the directory,
/// another stops at once, saying so, and changes nothing.
#[test]
fn a_second_run_on_one_directory_waits_its_turn() {
    let remote = Remote::dir();
    let db = sample_copy();
    let url = remote.url();
    let held = std::fs::File::open(db.path()).unwrap();
    held.try_lock().unwrap();
    let before = tree_files(db.path());
    for args in [vec!["push", url.as_str()], vec!["status", url.as_str()]] {
        let err = pqsync(None)
            .args(&args)
            .arg("-d")
            .arg(db.path())
            .stderr_with(1);
        let err = String::from_utf8_lossy(&err);
        assert!(
            err.contains("another pqsync run is using"),
            "{args:?}: {err}"
        );
    }
    assert!(remote.objects().is_empty(), "nothing was sent");
    assert!(
        !db.path().join("_meta/.pqsync").exists() && !crate::state_of(db.path()).exists(),
        "no state was written"
    );
    assert_eq!(tree_files(db.path()), before);
    drop(held);
    pqsync(None)
        .args(["push", &url, "-d"])
        .arg(db.path())
        .stdout_ok();
    assert_eq!(data_of(&remote), tree_files(db.path()));
}

/// Scenario 7: a file replaced by a directory of the same name, and back.
/// Every push succeeds on both kinds of remote, a clone's pull follows each
/// swap, and the remote's bytes are the local tree's.
#[test]
fn a_file_that_became_a_directory_and_back() {
    let rel = "indexes/bloom/users.bloom";
    for remote in Remote::each("swap") {
        let url = remote.url();
        let srv = remote.server();
        let db = sample_copy();
        pqsync(srv)
            .args(["push", &url, "-d"])
            .arg(db.path())
            .stdout_ok();
        let clone = tempfile::tempdir().unwrap();
        pqsync(srv)
            .args(["pull", &url, "-d"])
            .arg(clone.path())
            .stdout_ok();

        // The file becomes a directory.
        std::fs::remove_file(db.path().join(rel)).unwrap();
        std::fs::create_dir_all(db.path().join(rel)).unwrap();
        std::fs::write(db.path().join(rel).join("part-0"), b"now a directory").unwrap();
        age(&db.path().join(rel).join("part-0"));
        pqsync(srv).args(["push", "-d"]).arg(db.path()).stdout_ok();
        assert_eq!(data_of(&remote), tree_files(db.path()), "file -> directory");
        remote.assert_invariant("after file -> directory");
        pqsync(srv)
            .args(["pull", "-d"])
            .arg(clone.path())
            .stdout_ok();
        assert_eq!(tree_files(clone.path()), tree_files(db.path()));

        // And back.
        std::fs::remove_dir_all(db.path().join(rel)).unwrap();
        std::fs::write(db.path().join(rel), b"a file again").unwrap();
        age(&db.path().join(rel));
        pqsync(srv).args(["push", "-d"]).arg(db.path()).stdout_ok();
        assert_eq!(data_of(&remote), tree_files(db.path()), "directory -> file");
        remote.assert_invariant("after directory -> file");
        pqsync(srv)
            .args(["pull", "-d"])
            .arg(clone.path())
            .stdout_ok();
        assert_eq!(tree_files(clone.path()), tree_files(db.path()));
    }
}

/// Item 9: what cannot be read (here a FIFO and a socket, since the tests
/// may run as root, for whom no permission bit denies a read) is reported
/// as that path's error; everything else is sent and committed, exit 1.
/// A synced file replaced by something unreadable is not taken for deleted.
#[test]
fn one_unreadable_path_does_not_stop_the_backup() {
    for remote in Remote::each("unreadable") {
        let url = remote.url();
        let srv = remote.server();
        let db = sample_copy();
        let fifo = db.path().join("data/users/incoming.fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let _socket =
            std::os::unix::net::UnixListener::bind(db.path().join("events/writer.sock")).unwrap();
        let out = pqsync(srv)
            .args(["push", &url, "--json", "-d"])
            .arg(db.path())
            .stdout_with(1);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["committed"], true, "{v:#}");
        let failed: Vec<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            failed,
            vec!["data/users/incoming.fifo", "events/writer.sock"]
        );
        assert_eq!(
            data_of(&remote),
            tree_files(db.path()),
            "everything else was sent"
        );
        remote.assert_invariant("after a push with unreadable paths");

        // A synced file replaced by a FIFO of its name is left alone remotely.
        let rel = "indexes/bloom/users.bloom";
        let old = object(&remote, rel);
        std::fs::remove_file(db.path().join(rel)).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(db.path().join(rel))
            .status()
            .unwrap()
            .success());
        let err = pqsync(srv)
            .args(["push", "-d"])
            .arg(db.path())
            .stderr_with(1);
        let err = String::from_utf8_lossy(&err);
        assert!(
            err.contains(rel) && err.contains("not a regular file"),
            "{err}"
        );
        assert_eq!(object(&remote, rel), old, "not deleted");
        remote.assert_invariant("after the FIFO replaced a file");
    }
}

/// Item 2: a push keeps on the remote what it overwrites or deletes, a
/// pull keeps locally what it replaces (the losing side of a conflict
/// included), and `pqsync trash` lists, restores and empties them. Judged
/// by the bytes an independent client reads from the remote's trash and by
/// what a restore puts on disk.
#[test]
fn replaced_versions_are_kept_and_restored() {
    for remote in Remote::each("trash") {
        let url = remote.url();
        let a = sample_copy();
        let original = tree_files(a.path());
        pqsync(remote.server())
            .args(["push", &url, "-d"])
            .arg(a.path())
            .stdout_ok();
        let b = tempfile::tempdir().unwrap();
        pqsync(remote.server())
            .args(["pull", &url, "-d"])
            .arg(b.path())
            .stdout_ok();

        // A edits one file and deletes another, and pushes.
        let schema = "_meta/schema.json";
        let bloom = "indexes/bloom/users.bloom";
        std::fs::write(a.path().join(schema), b"{\"a\":2}\n").unwrap();
        age(&a.path().join(schema));
        std::fs::remove_file(a.path().join(bloom)).unwrap();
        let out = pqsync(remote.server())
            .args(["push", "--json", "-d"])
            .arg(a.path())
            .stdout_ok();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["kept"].as_array().unwrap().len(), 2, "{v}");
        let trash = remote.trash();
        let runs: std::collections::BTreeSet<&String> = trash.keys().map(|(r, _)| r).collect();
        assert_eq!(runs.len(), 1, "one run folder: {runs:?}");
        let run = runs.into_iter().next().unwrap().clone();
        assert_eq!(trash[&(run.clone(), schema.into())], original[schema]);
        assert_eq!(trash[&(run.clone(), bloom.into())], original[bloom]);
        remote.assert_invariant("after the push");

        // B edited the same file: a pull stops there (and applies the rest:
        // the file A deleted goes to B's trash); with remote-wins, B's edit
        // goes to B's trash too.
        std::fs::write(b.path().join(schema), b"{\"b\":1}\n").unwrap();
        age(&b.path().join(schema));
        pqsync(remote.server())
            .args(["pull", "-d"])
            .arg(b.path())
            .stdout_with(3);
        assert!(!b.path().join(bloom).exists());
        let out = pqsync(remote.server())
            .args(["pull", "--strategy", "remote-wins", "--json", "-d"])
            .arg(b.path())
            .stdout_ok();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let kept: Vec<(&str, &str)> = v["kept"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| (k["path"].as_str().unwrap(), k["side"].as_str().unwrap()))
            .collect();
        assert_eq!(kept, [(schema, "local")], "{v}");
        assert_eq!(
            std::fs::read(b.path().join(schema)).unwrap(),
            b"{\"a\":2}\n"
        );
        assert!(!b.path().join(bloom).exists());

        // B gets its edit back; A's version, which it replaces, is kept in
        // turn.
        pqsync(remote.server())
            .args(["trash", "restore", "-d"])
            .arg(b.path())
            .args(["--path", schema])
            .stdout_ok();
        assert_eq!(
            std::fs::read(b.path().join(schema)).unwrap(),
            b"{\"b\":1}\n"
        );
        let listed = pqsync(remote.server())
            .args(["trash", "list", "--json", "-d"])
            .arg(b.path())
            .stdout_ok();
        let listed: Value = serde_json::from_slice(&listed).unwrap();
        let mut kept: Vec<&str> = listed["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        kept.sort();
        // The deleted file, B's edit, and A's version the restore replaced.
        assert_eq!(kept, [schema, schema, bloom], "{listed}");

        // The remote's trash restores into a fresh directory.
        let fresh = tempfile::tempdir().unwrap();
        pqsync(remote.server())
            .args(["trash", "restore", &url, "-d"])
            .arg(fresh.path())
            .stdout_ok();
        let restored = tree_files(fresh.path());
        assert_eq!(restored[schema], original[schema]);
        assert_eq!(restored[bloom], original[bloom]);

        // --no-trash keeps nothing; emptying removes everything kept.
        std::fs::write(a.path().join(schema), b"{\"a\":3}\n").unwrap();
        age(&a.path().join(schema));
        pqsync(remote.server())
            .args(["push", "--no-trash", "-d"])
            .arg(a.path())
            .stdout_ok();
        assert_eq!(remote.trash().len(), 2, "--no-trash kept nothing more");
        pqsync(remote.server())
            .args(["trash", "empty", &url, "--older-than", "1d"])
            .stdout_ok();
        assert_eq!(remote.trash().len(), 2, "nothing is a day old yet");
        pqsync(remote.server())
            .args(["trash", "empty", &url])
            .stdout_ok();
        assert!(remote.trash().is_empty());
        remote.assert_invariant("at the end");
    }
}

/// Scenario 6, on a store without compare-and-swap: a manifest rebuild
/// takes the same lease as a push, so it cannot run while a push holds it
/// (and a push cannot run during a rebuild).
#[test]
fn a_rebuild_waits_for_a_push_holding_the_lease() {
    let remote = Remote::dir();
    let db = sample_copy();
    let url = remote.url();
    pqsync(None)
        .args(["push", &url, "-d"])
        .arg(db.path())
        .stdout_ok();
    let until_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 60_000;
    let lease = serde_json::json!({
        "token": "a-push-elsewhere",
        "holder": "pqsync pid 1 on other-host",
        "host": "other-host",
        "pid": 1,
        "expiresAt": "in a minute",
        "expiresAtMs": until_ms,
    });
    let lease_path = std::path::Path::new(&url).join("_meta/.pqsync/lease.json");
    std::fs::write(&lease_path, serde_json::to_vec(&lease).unwrap()).unwrap();
    let manifest_before = remote.manifest();
    let err = pqsync(None)
        .args(["init", &url, "--rebuild-manifest"])
        .stderr_with(1);
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains("being written by pqsync pid 1 on other-host"),
        "{err}"
    );
    assert_eq!(remote.manifest(), manifest_before, "nothing was written");
    std::fs::remove_file(&lease_path).unwrap();
    pqsync(None)
        .args(["init", &url, "--rebuild-manifest"])
        .stdout_ok();
    remote.assert_invariant("after the rebuild");
}

/// Item 5 (and scenario 3's last part): objects the remote lost or damaged
/// behind pqsync's back. A plain push trusts the manifest and sends
/// nothing; `push --repair` finds what is missing or of the wrong size (and
/// on S3 what carries no pqsync hash) from one LIST and HEADs and sends it
/// again; `push --checksum` also finds bit rot by hashing every object;
/// `verify --repair` does the same from a failed check. Judged by an
/// independent read of every object.
#[test]
fn push_repair_resends_what_the_remote_lost_or_damaged() {
    for remote in Remote::each("repair") {
        let url = remote.url();
        let db = sample_copy();
        let local = tree_files(db.path());
        pqsync(remote.server())
            .args(["push", &url, "-d"])
            .arg(db.path())
            .stdout_ok();
        let m = remote.manifest().unwrap();
        let hash_of = |p: &str| format!("blake3:{}", m["files"][p]["hash"].as_str().unwrap());
        let lost = "data/users/data.parquet";
        let truncated = "rels/forward/posts.parquet";
        let rotten = "indexes/bloom/comments.bloom";
        remote.delete(lost);
        remote.put(truncated, b"PAR1", None);
        let mut rot = local[rotten].clone();
        rot[0] ^= 0xff;
        remote.put(rotten, &rot, Some(&hash_of(rotten)));

        // A plain push trusts the manifest.
        let out = pqsync(remote.server())
            .args(["push", "--json", "-d"])
            .arg(db.path())
            .stdout_ok();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["uploaded"].as_array().unwrap().is_empty(), "{v}");

        // --repair: the lost and the truncated object, not the rotten one.
        let out = pqsync(remote.server())
            .args(["push", "--repair", "--json", "-d"])
            .arg(db.path())
            .stdout_ok();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let repaired: Vec<(&str, &str)> = v["repaired"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["path"].as_str().unwrap(), d["reason"].as_str().unwrap()))
            .collect();
        assert_eq!(
            repaired,
            [(lost, "missing"), (truncated, "wrong size")],
            "{v}"
        );
        let objects = data_of(&remote);
        assert_eq!(objects[lost], local[lost]);
        assert_eq!(objects[truncated], local[truncated]);
        assert_ne!(objects[rotten], local[rotten]);
        remote.assert_invariant_except(rotten, "after --repair");

        // --checksum finds the bit rot.
        let out = pqsync(remote.server())
            .args(["push", "--checksum", "--json", "-d"])
            .arg(db.path())
            .stdout_ok();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["repaired"][0]["path"], rotten, "{v}");
        assert_eq!(v["repaired"][0]["reason"], "other bytes", "{v}");
        assert_eq!(data_of(&remote), local);
        remote.assert_invariant("after --checksum");

        // verify --repair: the check fails, the repair sends the file again,
        // and a second check passes.
        remote.delete(lost);
        pqsync(remote.server())
            .args(["verify", &url])
            .stdout_with(1);
        pqsync(remote.server())
            .args(["verify", &url, "--repair", "-d"])
            .arg(db.path())
            .stdout_ok();
        assert_eq!(data_of(&remote), local);
        pqsync(remote.server()).args(["verify", &url]).stdout_ok();

        // pull --repair is refused: it would send from the local copy.
        pqsync(remote.server())
            .args(["pull", "--repair", "-d"])
            .arg(db.path())
            .stdout_with(2);
    }
}
