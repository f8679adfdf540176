//! `az://` remotes on Azurite, in CI's Azure lane: a push read back by an
//! independent client (Shared Key requests from the Python standard
//! library), a pull, and a mirror round trip S3 → Azure → directory.
//! Skipped where `PQSYNC_TEST_AZURE_CONTAINER` is unset.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use pqsync_testdata::s3::S3Server;
use serde_json::Value;

use super::{json_of, pqsync, sample_copy, tree_files, Output};

/// Azurite's container, when the lane set one up.
fn container() -> Option<String> {
    std::env::var("PQSYNC_TEST_AZURE_CONTAINER")
        .ok()
        .filter(|c| !c.is_empty())
}

/// A fresh `az://` URL in the container.
fn url(container: &str, name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("az://{container}/t-{name}-{}-{nanos}", std::process::id())
}

/// Every blob under the URL's prefix, as the independent client sees it:
/// name -> SHA-256, without pqsync's manifest and state.
fn listed(container: &str, url: &str) -> BTreeMap<String, String> {
    let prefix = url.trim_start_matches(&format!("az://{container}/"));
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/independent/azure_client.py");
    let out = Command::new("python3")
        .arg(script)
        .args(["list", container, prefix])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "azure_client.py list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "_meta/manifest.json" && !k.starts_with("_meta/.pqsync/"))
        .map(|(k, o)| (k.clone(), o["sha256"].as_str().unwrap().to_string()))
        .collect()
}

fn sha256_tree(root: &Path) -> BTreeMap<String, String> {
    tree_files(root)
        .into_iter()
        .filter(|(k, _)| k != "_meta/manifest.json")
        .map(|(k, b)| (k, pqsync_core::HashAlgorithm::Sha256.digest(&b).to_string()))
        .collect()
}

/// Push, status and pull against Azurite; the blobs are the files.
#[test]
fn push_and_pull_on_azure() {
    let Some(c) = container() else {
        eprintln!("skipped: PQSYNC_TEST_AZURE_CONTAINER is unset");
        return;
    };
    let remote = url(&c, "push");
    let db = sample_copy();
    std::fs::write(db.path().join("data/é #1+&[x].json"), b"odd name").unwrap();
    pqsync(None)
        .args(["push", &remote, "-d"])
        .arg(db.path())
        .assert()
        .success();
    assert_eq!(listed(&c, &remote), sha256_tree(db.path()));
    let out = pqsync(None)
        .args(["status", "--json", "-d"])
        .arg(db.path())
        .stdout_ok();
    assert_eq!(json_of(&out)["isSynced"], true);
    let back = tempfile::tempdir().unwrap();
    pqsync(None)
        .args(["pull", &remote, "-d"])
        .arg(back.path())
        .assert()
        .success();
    assert_eq!(sha256_tree(back.path()), sha256_tree(db.path()));
}

/// A mirror round trip S3 → Azure → directory ends byte-identical, and a
/// second pass moves nothing.
#[test]
fn mirror_round_trip_s3_azure_directory() {
    let Some(c) = container() else {
        eprintln!("skipped: PQSYNC_TEST_AZURE_CONTAINER is unset");
        return;
    };
    let server = S3Server::start();
    let s3 = server.unique_url("rt");
    let az = url(&c, "rt");
    let db = sample_copy();
    pqsync(Some(&server))
        .args(["push", &s3, "-d"])
        .arg(db.path())
        .assert()
        .success();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy");
    pqsync(Some(&server))
        .args(["mirror", &s3, &az])
        .assert()
        .success();
    assert_eq!(listed(&c, &az), sha256_tree(db.path()));
    pqsync(Some(&server))
        .args(["mirror", &az])
        .arg(&copy)
        .assert()
        .success();
    assert_eq!(sha256_tree(&copy), sha256_tree(db.path()));
    let out = pqsync(Some(&server))
        .args(["mirror", &s3, &az, "--json"])
        .stdout_ok();
    assert!(json_of(&out)["uploaded"].as_array().unwrap().is_empty());
}
