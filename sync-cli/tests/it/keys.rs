//! Object keys are manifest paths, byte for byte, judged by clients that
//! share no code with pqsync or its store library: the directory remote's
//! file names, the in-process server's backing directory, and boto3 (in
//! both S3 lanes).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use pqsync_core::HashAlgorithm;
use pqsync_testdata::s3::S3Server;
use serde_json::Value;

use crate::lost::Remote;
use crate::{age, pqsync, sample_copy, tree_files, Output};

/// Names other tools write and percent-encoding clients mangle. A
/// directory remote cannot hold a name whose text after its first `#` is
/// all digits (`a#1`): its store reserves that form for staging files.
pub const AWKWARD: &[&str] = &[
    "data/wéird/café.parquet",
    "data/wéird/v#2.parquet",
    "data/wéird/pct%41.json",
    "data/wéird/pct%2541.json",
    "data/wéird/q?x.txt",
    "data/wéird/st*r",
    "data/wéird/t~",
    "data/wéird/[b]",
    "data/wéird/{c}",
    "data/wéird/^h",
    "data/wéird/p|i",
    "data/wéird/<l>",
    "data/wéird/q\"",
    "data/wéird/back`tick",
    "data/wéird/sp ace.json",
    "data/wéird/ lead",
    "data/wéird/trail ",
    "data/wéird/plus+amp&eq=.csv",
    "data/wéird/x.tmpl.parquet",
    "data/wéird/.DS_Store",
    "data/.DS_Store",
    "yarn.lock",
    "日本語/ファイル.json",
];

/// Writes the awkward names into `root`: the `.parquet` ones are real
/// Parquet files (so `verify` can read them), the rest short text.
pub fn add_awkward(root: &Path) {
    let parquet = std::fs::read(root.join("data/users/data.parquet")).unwrap();
    for rel in AWKWARD {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        if rel.ends_with(".parquet") {
            std::fs::write(&p, &parquet).unwrap();
        } else {
            std::fs::write(&p, format!("bytes of {rel}")).unwrap();
        }
        age(&p);
    }
}

/// One object as an independent client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub size: u64,
    /// The ETag the store reports (S3 only).
    pub etag: Option<String>,
    pub sha256: String,
    pub content_type: Option<String>,
    pub metadata: BTreeMap<String, String>,
}

/// boto3's view of every object under `prefix` (keys relative to it).
pub fn boto_list(server: &S3Server, prefix: &str) -> BTreeMap<String, Seen> {
    boto_list_in(server, &server.bucket, prefix)
}

/// boto3's view of every object under `prefix` in `bucket`.
pub fn boto_list_in(server: &S3Server, bucket: &str, prefix: &str) -> BTreeMap<String, Seen> {
    let v = boto(server, &["list", bucket, prefix]);
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, o)| {
            let metadata = o["metadata"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            let seen = Seen {
                size: o["size"].as_u64().unwrap(),
                etag: o["etag"].as_str().map(str::to_string),
                sha256: o["sha256"].as_str().unwrap().to_string(),
                content_type: o["contentType"].as_str().map(str::to_string),
                metadata,
            };
            (k.clone(), seen)
        })
        .collect()
}

/// Uploads every file under `dir` to `prefix/<path>` with boto3.
pub fn boto_put(server: &S3Server, prefix: &str, dir: &Path) {
    boto(
        server,
        &["put", &server.bucket, prefix, dir.to_str().unwrap()],
    );
}

/// The bytes of the object `key` (a full key in the bucket), read by boto3.
pub fn boto_get(server: &S3Server, key: &str) -> Vec<u8> {
    boto_raw(server, &["get", &server.bucket, key])
}

/// Deletes the object `key` (a full key in the bucket) with boto3.
pub fn boto_delete(server: &S3Server, key: &str) {
    boto(server, &["delete", &server.bucket, key]);
}

fn boto(server: &S3Server, args: &[&str]) -> Value {
    let out = boto_raw(server, args);
    if out.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(&out).unwrap()
}

/// What the boto3 script printed, raw.
fn boto_raw(server: &S3Server, args: &[&str]) -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/independent/s3_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .envs(server.env())
        .output()
        .expect("python3 runs (.ci/run installs it with boto3)");
    assert!(
        out.status.success(),
        "boto3 {args:?} failed (.ci/run installs boto3): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Every file under `root` (relative, `/`-separated) with its SHA-256, as
/// the file system names it.
fn walk(root: &Path) -> BTreeMap<String, Seen> {
    let mut out = BTreeMap::new();
    if !root.exists() {
        return out;
    }
    for e in walkdir::WalkDir::new(root) {
        let e = e.unwrap();
        if !e.file_type().is_file() {
            continue;
        }
        let rel = e.path().strip_prefix(root).unwrap().to_str().unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        out.insert(
            rel.to_string(),
            Seen {
                size: bytes.len() as u64,
                etag: None,
                sha256: HashAlgorithm::Sha256.digest(&bytes).to_string(),
                content_type: None,
                metadata: BTreeMap::new(),
            },
        );
    }
    out
}

impl Remote {
    /// The bytes of one object under the remote, read by the independent
    /// client (the file system, or boto3).
    pub fn raw(&self, rel: &str) -> Vec<u8> {
        match self {
            Remote::Dir(d) => std::fs::read(d.path().join("remote").join(rel)).unwrap(),
            Remote::S3 { server, prefix, .. } => {
                boto_raw(server, &["get", &server.bucket, &format!("{prefix}/{rel}")])
            }
        }
    }

    /// Puts a whole tree under the remote with the independent client.
    pub fn put_tree(&self, dir: &Path) {
        match self {
            Remote::Dir(d) => crate::copy_dir(dir, &d.path().join("remote")),
            Remote::S3 { server, prefix, .. } => boto_put(server, prefix, dir),
        }
    }
    /// What a client other than pqsync and its store library lists under
    /// the remote, pqsync's remote state left out: the directory's file
    /// names, or boto3's listing (and, for the in-process server, its
    /// backing directory, which must name the same keys).
    pub fn independent(&self) -> BTreeMap<String, Seen> {
        let all = match self {
            Remote::Dir(d) => walk(&d.path().join("remote")),
            Remote::S3 { server, prefix, .. } => {
                let listed = boto_list(server, prefix);
                if let Some(root) = &server.root {
                    let on_disk: BTreeSet<String> = walk(&root.join(&server.bucket).join(prefix))
                        .into_keys()
                        .collect();
                    let keys: BTreeSet<String> = listed.keys().cloned().collect();
                    assert_eq!(on_disk, keys, "the server's files and boto3's keys differ");
                }
                listed
            }
        };
        all.into_iter()
            .filter(|(k, _)| !k.starts_with("_meta/.pqsync/"))
            .collect()
    }
}

/// The local files pqsync syncs, with their SHA-256.
fn local_view(root: &Path) -> BTreeMap<String, String> {
    tree_files(root)
        .into_iter()
        .map(|(k, b)| (k, HashAlgorithm::Sha256.digest(&b).to_string()))
        .collect()
}

/// Asserts that the independent listing holds exactly the manifest's
/// paths (plus the manifest), each with the manifest's size and the local
/// file's bytes.
fn assert_listing_matches(remote: &Remote, local: &BTreeMap<String, String>, when: &str) {
    let seen = remote.independent();
    let m = remote.manifest().expect("a remote manifest");
    let files = m["files"].as_object().unwrap();
    let mut expected: BTreeSet<String> = files.keys().cloned().collect();
    expected.insert("_meta/manifest.json".into());
    let listed: BTreeSet<String> = seen.keys().cloned().collect();
    assert_eq!(listed, expected, "{when}: listing and manifest differ");
    for (path, e) in files {
        assert_eq!(
            seen[path].size,
            e["size"].as_u64().unwrap(),
            "{when}: {path}"
        );
        assert_eq!(
            Some(&seen[path].sha256),
            local.get(path),
            "{when}: {path} holds other bytes than the local file"
        );
    }
    let local_paths: BTreeSet<String> = local.keys().cloned().collect();
    let manifest_paths: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(
        manifest_paths, local_paths,
        "{when}: manifest and local tree"
    );
}

/// Keys are paths byte for byte on every remote; `verify`, `list`,
/// `stats`, `init --rebuild-manifest` and a pull all work on such names.
#[test]
fn awkward_names_are_stored_byte_for_byte() {
    for remote in Remote::each("keys") {
        let db = sample_copy();
        add_awkward(db.path());
        let url = remote.url();
        let server = remote.server();
        pqsync(server)
            .args(["push", &url, "-d"])
            .arg(db.path())
            .stdout_ok();
        let local = local_view(db.path());
        for rel in AWKWARD {
            assert!(local.contains_key(*rel), "{rel} is not synced locally");
        }
        assert_listing_matches(&remote, &local, "after push");
        if let Remote::S3 { .. } = remote {
            let seen = remote.independent();
            let e = &seen["data/wéird/café.parquet"];
            assert_eq!(
                e.content_type.as_deref(),
                Some("application/vnd.apache.parquet")
            );
            assert!(e.metadata.contains_key("pqsync-hash"), "{e:?}");
        }

        pqsync(server).args(["verify", &url]).stdout_ok();
        let listed = json_paths(&pqsync(server).args(["list", &url, "--json"]).stdout_ok());
        for rel in AWKWARD {
            assert!(listed.contains(*rel), "list lacks {rel}");
        }
        let stats = String::from_utf8(pqsync(server).args(["stats", &url]).stdout_ok()).unwrap();
        assert!(stats.contains("wéird"), "{stats}");

        // The documented recovery for a lost manifest works on them.
        remote.delete("_meta/manifest.json");
        pqsync(server)
            .args(["init", "--rebuild-manifest", &url])
            .stdout_ok();
        assert_listing_matches(&remote, &local, "after the rebuild");

        let clone = tempfile::tempdir().unwrap();
        pqsync(server)
            .args(["pull", &url, "-d"])
            .arg(clone.path())
            .stdout_ok();
        assert_eq!(
            local_view(clone.path()),
            local,
            "a pull restores every name"
        );
    }
}

fn json_paths(out: &[u8]) -> BTreeSet<String> {
    let v: Value = serde_json::from_slice(out).unwrap();
    let files = v.get("files").unwrap_or(&v);
    match files {
        Value::Array(a) => a
            .iter()
            .map(|x| x["path"].as_str().unwrap().to_string())
            .collect(),
        Value::Object(o) => o.keys().cloned().collect(),
        _ => panic!("unexpected list output {v}"),
    }
}

/// A tree another tool uploaded with such names (no manifest) is adopted
/// by `init REMOTE` and pulled back whole.
#[test]
fn a_tree_another_tool_uploaded_is_adopted() {
    for remote in Remote::each("adopt") {
        let src = sample_copy();
        add_awkward(src.path());
        remote.put_tree(src.path());
        let url = remote.url();
        let server = remote.server();
        pqsync(server).args(["init", &url]).stdout_ok();
        let local = local_view(src.path());
        assert_listing_matches(&remote, &local, "after init");
        let clone = tempfile::tempdir().unwrap();
        pqsync(server)
            .args(["pull", &url, "-d"])
            .arg(clone.path())
            .stdout_ok();
        assert_eq!(local_view(clone.path()), local);
    }
}

/// A name with `#` and digits is a key like any other on S3. A directory
/// remote cannot hold it: that file is left out with an error naming the
/// cause and the fix, and everything else is committed.
#[test]
fn hash_digit_names_reach_s3_and_are_left_out_of_directories() {
    for remote in Remote::each("hashdigits") {
        let db = sample_copy();
        for rel in ["data/x/a#1", "data/x/b#22.json"] {
            let p = db.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, rel).unwrap();
            age(&p);
        }
        let url = remote.url();
        let push = || {
            pqsync(remote.server())
                .args(["push", &url, "-d"])
                .arg(db.path())
                .output()
                .unwrap()
        };
        let out = push();
        let seen = remote.independent();
        assert!(seen.contains_key("data/x/b#22.json"));
        match remote {
            Remote::S3 { .. } => {
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert!(seen.contains_key("data/x/a#1"), "{:?}", seen.keys());
            }
            Remote::Dir(_) => {
                assert_eq!(out.status.code(), Some(1));
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    err.contains("data/x/a#1") && err.contains("rename it"),
                    "{err}"
                );
                assert!(!seen.contains_key("data/x/a#1"));
                // The rest was committed: the manifest lists every other file.
                let m = remote.manifest().unwrap();
                let listed = m["files"].as_object().unwrap();
                assert!(listed.contains_key("data/x/b#22.json"));
                assert!(!listed.contains_key("data/x/a#1"));
                assert_eq!(listed.len() + 1, tree_files(db.path()).len());
                // A second run sends nothing again and says the same.
                let again = push();
                assert_eq!(again.status.code(), Some(1));
                assert!(String::from_utf8_lossy(&again.stdout).contains("0 uploaded"));
            }
        }
        remote.assert_invariant("after the push");
    }
}
