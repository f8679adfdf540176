//! `mirror` from a bucket that pqsync does not manage: objects another
//! client (boto3) wrote, with no `_meta/manifest.json`. What the
//! destination holds is read back with boto3, and by pulling it.

use std::collections::BTreeMap;

use pqsync_testdata::s3::S3Server;
use serde_json::Value;

use super::keys::{boto_delete, boto_list, boto_list_in, boto_put, Seen};
use super::{json_of, paths, pqsync, sample_copy, tree_files, Output};

/// Names a plain client writes freely: non-ASCII, URL specials, and
/// `.DS_Store` below the top level (ParqueDB's rule skips only the top
/// level's).
const ODD: [&str; 3] = [
    "misc/café #1 %41+&~[x].json",
    "data/.DS_Store",
    "misc/a b/é?.txt",
];

/// The key prefix of an `s3://bucket/prefix` URL.
fn prefix_of(server: &S3Server, url: &str) -> String {
    url.trim_start_matches(&format!("s3://{}/", server.bucket))
        .to_string()
}

/// The objects under a prefix, without pqsync's manifest and state.
fn data_objects(server: &S3Server, prefix: &str) -> BTreeMap<String, Seen> {
    let mut seen = boto_list(server, prefix);
    seen.retain(|k, _| k != "_meta/manifest.json" && !k.starts_with("_meta/.pqsync/"));
    seen
}

/// The sample database plus odd names, as a plain tree (no manifest).
fn plain_tree() -> tempfile::TempDir {
    let db = sample_copy();
    for (i, name) in ODD.iter().enumerate() {
        let p = db.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("odd file {i}")).unwrap();
    }
    db
}

fn sha256_of(m: &BTreeMap<String, Seen>) -> BTreeMap<String, String> {
    m.iter()
        .map(|(k, s)| (k.clone(), s.sha256.clone()))
        .collect()
}

/// A first mirror copies every object and records each one's ETag; a
/// second reads only the source's listing; a changed and a deleted object
/// are carried over (the replaced versions kept in the trash); what the
/// destination holds pulls back byte for byte.
#[test]
fn mirror_of_a_bucket_another_client_wrote() {
    let server = S3Server::start();
    let src = server.unique_url("plain-src");
    let dst = server.unique_url("plain-dst");
    let (src_prefix, dst_prefix) = (prefix_of(&server, &src), prefix_of(&server, &dst));
    let tree = plain_tree();
    boto_put(&server, &src_prefix, tree.path());
    let source = data_objects(&server, &src_prefix);
    assert_eq!(source.len(), tree_files(tree.path()).len());

    // The plan counts its requests by R2's billing class and prices them.
    let out = pqsync(Some(&server))
        .args(["mirror", &src, &dst, "--hash", "sha256", "-n", "--json"])
        .stdout_ok();
    let plan = json_of(&out);
    assert_eq!(plan["toUpload"].as_array().unwrap().len(), source.len());
    let (a, b) = (
        plan["requestsClassA"].as_u64().unwrap(),
        plan["requestsClassB"].as_u64().unwrap(),
    );
    // A GET of each object to copy, more GETs and HEADs to identify them.
    assert!(b >= source.len() as u64, "{plan}");
    // A PUT of each object, and the commit.
    assert!(a > source.len() as u64, "{plan}");
    let cost = plan["costUsd"].as_f64().unwrap();
    assert!((cost - (a as f64 * 4.5e-6 + b as f64 * 0.36e-6)).abs() < 1e-12);
    assert!(
        data_objects(&server, &dst_prefix).is_empty(),
        "a dry run copies nothing"
    );

    let out = pqsync(Some(&server))
        .args(["mirror", &src, &dst, "--hash", "sha256", "--json"])
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(v["uploaded"].as_array().unwrap().len(), source.len(), "{v}");
    eprintln!(
        "planned {} requests, made {}",
        plan["requests"], v["requests"]
    );
    let copied = data_objects(&server, &dst_prefix);
    assert_eq!(sha256_of(&copied), sha256_of(&source));
    // The manifest names every object with its content hash (checked here
    // with boto3's SHA-256) and the source version it came from.
    let manifest: Value = serde_json::from_slice(&super::keys::boto_get(
        &server,
        &format!("{dst_prefix}/_meta/manifest.json"),
    ))
    .unwrap();
    let files = manifest["files"].as_object().unwrap();
    assert_eq!(files.len(), source.len());
    for (path, seen) in &source {
        let e = &files[path];
        assert_eq!(e["hash"], seen.sha256.as_str(), "{path}");
        assert_eq!(e["size"], seen.size, "{path}");
        // The in-process server lists no ETags: its objects are known by
        // modification time and size instead.
        if server.is_in_process() {
            assert!(e["sourceEtag"].as_str().is_some(), "{path}");
        } else {
            assert_eq!(e["sourceEtag"].as_str(), seen.etag.as_deref(), "{path}");
        }
    }

    // Unchanged: the source's listing (after a GET that finds no manifest
    // there) and the destination's manifest answer it; no source object
    // is read.
    let before = server.log.as_ref().map(|l| l.entries().len());
    let out = pqsync(Some(&server))
        .args(["mirror", &src, &dst, "--json"])
        .stdout_ok();
    let v = json_of(&out);
    assert!(v["uploaded"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["deleted"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["requests"].as_u64().unwrap() <= 3, "{v}");
    if let (Some(log), Some(before)) = (&server.log, before) {
        let reads: Vec<_> = log.entries()[before..]
            .iter()
            .map(|(l, _)| l.clone())
            .filter(|l| {
                (l.starts_with("GET ") || l.starts_with("HEAD "))
                    && l.contains(&format!("/{src_prefix}/"))
                    && !l.ends_with("/_meta/manifest.json")
            })
            .collect();
        assert!(reads.is_empty(), "{reads:?}");
    }

    // One object rewritten and one deleted by the other client.
    let changed = "_meta/schema.json";
    let gone = ODD[0];
    let edit = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(edit.path().join("_meta")).unwrap();
    std::fs::write(edit.path().join(changed), b"{\"v\": 2}").unwrap();
    boto_put(&server, &src_prefix, edit.path());
    boto_delete(&server, &format!("{src_prefix}/{gone}"));
    let out = pqsync(Some(&server))
        .args(["mirror", &src, &dst, "--json"])
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(paths(&v["uploaded"]), vec![changed.to_string()], "{v}");
    assert_eq!(paths(&v["deleted"]), vec![gone.to_string()], "{v}");
    assert_eq!(
        sha256_of(&data_objects(&server, &dst_prefix)),
        sha256_of(&data_objects(&server, &src_prefix))
    );
    // The replaced and deleted versions are in the destination's trash.
    let trash: Vec<String> = boto_list(&server, &dst_prefix)
        .into_keys()
        .filter(|k| k.starts_with("_meta/.pqsync/trash/"))
        .collect();
    assert!(trash.iter().any(|k| k.ends_with(changed)), "{trash:?}");
    assert!(trash.iter().any(|k| k.ends_with(gone)), "{trash:?}");

    // A restore from the destination holds exactly the source's files.
    std::fs::remove_file(tree.path().join(gone)).unwrap();
    std::fs::write(tree.path().join(changed), b"{\"v\": 2}").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    pqsync(Some(&server))
        .args(["pull", &dst, "-d"])
        .arg(out_dir.path())
        .assert()
        .success();
    let mut pulled = tree_files(out_dir.path());
    pulled.remove("_meta/manifest.json");
    assert_eq!(pulled, tree_files(tree.path()));
}

/// An empty source (a mistyped prefix) is refused before anything at the
/// destination is touched.
#[test]
fn mirror_of_an_empty_source_deletes_nothing() {
    let server = S3Server::start();
    let dst = server.unique_url("plain-dst");
    let db = sample_copy();
    pqsync(Some(&server))
        .args(["push", &dst, "-d"])
        .arg(db.path())
        .assert()
        .success();
    let before = boto_list(&server, &prefix_of(&server, &dst));
    let err = pqsync(Some(&server))
        .args(["mirror", &server.unique_url("nothing-here"), &dst])
        .stderr_with(1);
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("holds no objects"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(boto_list(&server, &prefix_of(&server, &dst)), before);
}

/// A plain directory (no manifest) mirrors to a bucket, and the bucket's
/// objects are the directory's files.
#[test]
fn mirror_of_a_plain_directory() {
    let server = S3Server::start();
    let dst = server.unique_url("plain-dir");
    let tree = plain_tree();
    // A directory ParqueDB's rule skips at the top level stays behind.
    std::fs::write(tree.path().join(".DS_Store"), b"finder").unwrap();
    pqsync(Some(&server))
        .arg("mirror")
        .arg(tree.path())
        .arg(&dst)
        .assert()
        .success();
    let copied = data_objects(&server, &prefix_of(&server, &dst));
    let mut want = tree_files(tree.path());
    want.remove(".DS_Store");
    let want: BTreeMap<String, String> =
        want.into_iter().map(|(k, b)| (k, sha256_hex(&b))).collect();
    assert_eq!(sha256_of(&copied), want);
}

fn sha256_hex(bytes: &[u8]) -> String {
    pqsync_core::HashAlgorithm::Sha256.digest(bytes).to_string()
}

/// Every file of a tree but pqsync's manifest and state.
fn data_files(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = tree_files(root);
    files.retain(|k, _| k != "_meta/manifest.json" && !k.starts_with("_meta/.pqsync/"));
    files
}

/// `mirror SRC DST1 DST2 …` reads each source object once (counted by the
/// server) and sends it to every destination that needs it: two
/// directories stream from one read, a prefix of the source's bucket is
/// copied by the server. A destination that cannot be written is named,
/// exits 1, and stops none of the others.
#[test]
fn fan_out_reads_each_source_object_once() {
    let server = S3Server::start();
    let src = server.unique_url("fan-src");
    let same_bucket = server.unique_url("fan-copy");
    let db = plain_tree();
    pqsync(Some(&server))
        .args(["push", &src, "-d"])
        .arg(db.path())
        .assert()
        .success();
    let want = data_files(db.path());
    let dirs = tempfile::tempdir().unwrap();
    let (a, b) = (dirs.path().join("a"), dirs.path().join("b"));
    // A regular file where a folder must go: nothing can be written below.
    std::fs::write(dirs.path().join("blocker"), b"a file").unwrap();
    let broken = dirs.path().join("blocker/dst");

    let before = server.log.as_ref().map(|l| l.entries().len());
    let out = pqsync(Some(&server))
        .args(["mirror", &src, &same_bucket])
        .arg(&a)
        .arg(&b)
        .arg(&broken)
        .arg("--json")
        .assert()
        .code(1)
        .get_output()
        .clone();
    let v = json_of(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("blocker/dst"), "{stderr}");
    let outcomes = v["destinations"].as_array().unwrap();
    assert_eq!(outcomes.len(), 4, "{v}");
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o["success"] == false)
        .map(|o| o["destination"].as_str().unwrap())
        .collect();
    assert_eq!(failed.len(), 1, "{v}");
    assert!(failed[0].ends_with("blocker/dst"), "{failed:?}");

    // The destinations that could be written hold the source's files.
    assert_eq!(data_files(&a), want);
    assert_eq!(data_files(&b), want);
    let copied = data_objects(&server, &prefix_of(&server, &same_bucket));
    let want_sha: BTreeMap<String, String> = want
        .iter()
        .map(|(k, bytes)| (k.clone(), sha256_hex(bytes)))
        .collect();
    assert_eq!(sha256_of(&copied), want_sha);

    // Each source object was read once, for all the streaming destinations.
    assert_eq!(v["sourceObjectsRead"], want.len(), "{v}");
    if let (Some(log), Some(before)) = (&server.log, before) {
        let src_prefix = prefix_of(&server, &src);
        let mut gets: BTreeMap<String, usize> = BTreeMap::new();
        for (line, _) in &log.entries()[before..] {
            if let Some(key) = line
                .strip_prefix(&format!("GET /{}/{src_prefix}/", server.bucket))
                .filter(|k| !k.starts_with("_meta/"))
            {
                *gets.entry(key.to_string()).or_default() += 1;
            }
        }
        assert_eq!(gets.len(), want.len() - 1, "{gets:?}");
        assert!(gets.values().all(|n| *n == 1), "{gets:?}");
    }

    // Again, without the broken destination: nothing left to send.
    let out = pqsync(Some(&server))
        .args(["mirror", &src, &same_bucket])
        .arg(&a)
        .arg(&b)
        .arg("--json")
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(v["sourceObjectsRead"], 0, "{v}");
    for o in v["destinations"].as_array().unwrap() {
        assert!(
            o["result"]["uploaded"].as_array().unwrap().is_empty(),
            "{o}"
        );
    }
}

/// Between two buckets reached through one endpoint with one set of keys,
/// the store copies each object itself (CopyObject): no byte passes
/// through pqsync, and the copies are the source's bytes.
#[test]
fn mirror_between_buckets_copies_inside_the_store() {
    let server = S3Server::start();
    let bucket2 = server
        .second_bucket
        .clone()
        .expect("a second bucket (PQSYNC_TEST_S3_BUCKET2 for an external server)");
    let src = server.unique_url("xb-src");
    let dst_prefix = prefix_of(&server, &server.unique_url("xb-dst"));
    let dst = format!("s3://{bucket2}/{dst_prefix}");
    let tree = plain_tree();
    pqsync(Some(&server))
        .args(["push", &src, "-d"])
        .arg(tree.path())
        .assert()
        .success();
    let before = server.log.as_ref().map(|l| l.entries().len());
    let out = pqsync(Some(&server))
        .args(["mirror", &src, &dst, "--json"])
        .stdout_ok();
    let v = json_of(&out);
    let want = data_files(tree.path());
    assert_eq!(v["uploaded"].as_array().unwrap().len(), want.len(), "{v}");
    assert_eq!(v["bytesTransferred"], 0, "{v}");
    let mut copied = boto_list_in(&server, &bucket2, &dst_prefix);
    copied.retain(|k, _| k != "_meta/manifest.json" && !k.starts_with("_meta/.pqsync/"));
    let want_sha: BTreeMap<String, String> = want
        .iter()
        .map(|(k, bytes)| (k.clone(), sha256_hex(bytes)))
        .collect();
    assert_eq!(sha256_of(&copied), want_sha);
    // Each copy is a PUT without a body, and no source object was read.
    if let (Some(log), Some(before)) = (&server.log, before) {
        let entries = &log.entries()[before..];
        let puts: Vec<_> = entries
            .iter()
            .filter(|(l, _)| l.starts_with(&format!("PUT /{bucket2}/")) && !l.contains("/_meta/"))
            .collect();
        assert_eq!(puts.len(), want.len() - 1, "{puts:?}");
        assert!(puts.iter().all(|(_, bytes)| *bytes == 0), "{puts:?}");
        let src_prefix = prefix_of(&server, &src);
        let reads: Vec<_> = entries
            .iter()
            .filter(|(l, _)| l.starts_with(&format!("GET /{}/{src_prefix}/", server.bucket)))
            .filter(|(l, _)| !l.contains("/_meta/"))
            .collect();
        assert!(reads.is_empty(), "{reads:?}");
    }
    // A restore from the copy holds the database.
    let out_dir = tempfile::tempdir().unwrap();
    pqsync(Some(&server))
        .args(["pull", &dst, "-d"])
        .arg(out_dir.path())
        .assert()
        .success();
    assert_eq!(data_files(out_dir.path()), want);
}

/// Bytes no compressor shrinks, from a seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An object larger than one copy request takes (S3's 5 GiB, lowered here
/// to 5 MiB on both sides) is still copied inside the store, in parts:
/// between buckets, inside one bucket, and into the trash when a push
/// replaces it. Each copy keeps the bytes, content type and stored hash,
/// as boto3 reads them, and a restore from the copy gets the database.
#[test]
fn objects_above_the_copy_limit_are_copied_in_parts() {
    const LIMIT: u64 = 5 << 20;
    let server = S3Server::start();
    server.limit_copies(LIMIT);
    let bucket2 = server
        .second_bucket
        .clone()
        .expect("a second bucket (PQSYNC_TEST_S3_BUCKET2 for an external server)");
    let src = server.unique_url("big-src");
    let src_prefix = prefix_of(&server, &src);
    let beside = server.unique_url("big-beside");
    let dst_prefix = prefix_of(&server, &server.unique_url("big-dst"));
    let dst = format!("s3://{bucket2}/{dst_prefix}");
    let tree = plain_tree();
    let big = "data/café #%?+&~[] big.bin";
    // Three parts: 5 MiB, 5 MiB and the rest.
    let old = noise(13 << 20, 7);
    std::fs::create_dir_all(
        tree.path()
            .join("data/café #%?+&~[] big.bin")
            .parent()
            .unwrap(),
    )
    .unwrap();
    std::fs::write(tree.path().join(big), &old).unwrap();
    let run = || {
        let mut cmd = pqsync(Some(&server));
        cmd.env("PQSYNC_COPY_LIMIT", LIMIT.to_string());
        cmd
    };
    run()
        .args(["push", &src, "-d"])
        .arg(tree.path())
        .assert()
        .success();
    let want = data_files(tree.path());
    if server.is_in_process() {
        // A store that copies less in one request than pqsync assumes
        // refuses the copy; the message says what to set.
        let err = pqsync(Some(&server))
            .args(["mirror", &src, &format!("s3://{bucket2}/{dst_prefix}-x")])
            .stderr_with(1);
        let err = String::from_utf8(err).unwrap();
        let line = err.lines().find(|l| l.contains("big.bin")).unwrap_or(&err);
        assert!(line.contains("PQSYNC_COPY_LIMIT"), "{err}");
    }
    let source_seen = data_objects(&server, &src_prefix);
    let before = server.log.as_ref().map(|l| l.entries().len());

    // Between buckets.
    let v = json_of(&run().args(["mirror", &src, &dst, "--json"]).stdout_ok());
    // What the server saw of the mirror, before boto3 reads anything.
    let seen = (server.log.as_ref().zip(before)).map(|(l, b)| l.entries()[b..].to_vec());
    assert_eq!(v["bytesTransferred"], 0, "{v}");
    let mut copied = boto_list_in(&server, &bucket2, &dst_prefix);
    copied.retain(|k, _| k != "_meta/manifest.json" && !k.starts_with("_meta/.pqsync/"));
    assert_eq!(sha256_of(&copied), sha256_of(&source_seen));
    let (got, had) = (&copied[big], &source_seen[big]);
    assert_eq!(got.size, old.len() as u64);
    assert_eq!(got.content_type, had.content_type);
    assert!(got.metadata.contains_key("pqsync-hash"), "{got:?}");
    assert_eq!(got.metadata, had.metadata);
    if let Some(entries) = seen {
        let parts: Vec<_> = entries
            .iter()
            .filter(|(l, _)| {
                l.starts_with(&format!("PUT /{bucket2}/")) && l.contains("partNumber=")
            })
            .collect();
        assert_eq!(parts.len(), 3, "{parts:?}");
        assert!(parts.iter().all(|(_, bytes)| *bytes == 0), "{parts:?}");
        let refused = entries
            .iter()
            .filter(|(l, _)| l.starts_with("PUT ") && !l.contains("partNumber="))
            .filter(|(l, _)| l.contains("big.bin"))
            .count();
        assert_eq!(refused, 0, "no single copy of the large object was tried");
        let read = entries
            .iter()
            .filter(|(l, _)| l.starts_with("GET ") && l.contains("big.bin"))
            .count();
        assert_eq!(read, 0, "the large object passed through pqsync");
    }

    // Inside one bucket.
    let v = json_of(&run().args(["mirror", &src, &beside, "--json"]).stdout_ok());
    assert_eq!(v["bytesTransferred"], 0, "{v}");
    let beside_seen = data_objects(&server, &prefix_of(&server, &beside));
    assert_eq!(sha256_of(&beside_seen), sha256_of(&source_seen));
    assert_eq!(beside_seen[big].metadata, had.metadata);

    // A push that replaces it keeps the old version in the trash.
    let new = noise(13 << 20, 8);
    std::fs::write(tree.path().join(big), &new).unwrap();
    run()
        .args(["push", &src, "-d"])
        .arg(tree.path())
        .assert()
        .success();
    let all = boto_list(&server, &src_prefix);
    assert_eq!(all[big].sha256, sha256_hex(&new));
    let kept: Vec<_> = all
        .iter()
        .filter(|(k, _)| k.starts_with("_meta/.pqsync/trash/") && k.ends_with(big))
        .collect();
    assert_eq!(kept.len(), 1, "{:?}", all.keys().collect::<Vec<_>>());
    assert_eq!(kept[0].1.sha256, sha256_hex(&old));

    // A restore from the copy gets the database as it was mirrored.
    let out_dir = tempfile::tempdir().unwrap();
    run()
        .args(["pull", &dst, "-d"])
        .arg(out_dir.path())
        .assert()
        .success();
    assert_eq!(data_files(out_dir.path()), want);
}

/// `mirror --shard K/N` as four processes at once (one killed and run
/// again), then `--merge-shards`: the merge refuses while a shard is
/// missing or stale, and commits the union, deletions included, once all
/// have finished.
#[test]
fn sharded_mirror_merges_what_every_shard_sent() {
    let server = S3Server::start();
    let src = server.unique_url("shard-src");
    let dst = server.unique_url("shard-dst");
    let (src_prefix, dst_prefix) = (prefix_of(&server, &src), prefix_of(&server, &dst));
    let tree = plain_tree();
    for i in 0..40 {
        std::fs::write(
            tree.path().join(format!("misc/extra-{i}.txt")),
            format!("extra {i}"),
        )
        .unwrap();
    }
    boto_put(&server, &src_prefix, tree.path());
    let shard = |k: u32| {
        let mut cmd = super::binary(Some(&server));
        cmd.args([
            "--no-progress",
            "mirror",
            &src,
            &dst,
            "--shard",
            &format!("{k}/4"),
        ]);
        cmd
    };
    let merge = || {
        let mut cmd = pqsync(Some(&server));
        cmd.args(["mirror", &src, &dst, "--merge-shards", "--json"]);
        cmd
    };
    let records = || -> Vec<String> {
        boto_list(&server, &dst_prefix)
            .into_keys()
            .filter(|k| k.starts_with("_meta/.pqsync/shards/"))
            .collect()
    };
    let err = String::from_utf8(merge().stderr_with(1)).unwrap();
    assert!(err.contains("no shard records"), "{err}");

    // Shards 0, 1 and 3 at once; shard 2 killed as it starts.
    super::three_shards_one_killed(shard);
    if !records().iter().any(|k| k.ends_with("shards/4/2.json")) {
        let err = String::from_utf8(merge().stderr_with(1)).unwrap();
        assert!(err.contains("2/4"), "{err}");
        assert!(
            !boto_list(&server, &dst_prefix).contains_key("_meta/manifest.json"),
            "nothing is committed while a shard is missing"
        );
    }
    assert!(shard(2).status().unwrap().success());
    let out = merge().stdout_ok();
    let v = json_of(&out);
    assert!(v["committed"].as_bool().unwrap(), "{v}");
    assert_eq!(
        sha256_of(&data_objects(&server, &dst_prefix)),
        sha256_of(&data_objects(&server, &src_prefix))
    );
    assert!(records().is_empty(), "{:?}", records());

    // One object changed and one deleted at the source: the shards send
    // the change, the merge commits it and makes the deletion.
    let edit = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(edit.path().join("misc")).unwrap();
    std::fs::write(edit.path().join("misc/extra-1.txt"), b"changed").unwrap();
    boto_put(&server, &src_prefix, edit.path());
    boto_delete(&server, &format!("{src_prefix}/misc/extra-2.txt"));
    for k in 0..4 {
        assert!(shard(k).status().unwrap().success());
    }
    // Another writer commits first: the records are stale.
    pqsync(Some(&server))
        .args(["mirror", &src, &dst, "--no-delete"])
        .assert()
        .success();
    let err = String::from_utf8(merge().stderr_with(1)).unwrap();
    assert!(err.contains("changed since shard"), "{err}");
    for k in 0..4 {
        assert!(shard(k).status().unwrap().success());
    }
    let out = merge().stdout_ok();
    let v = json_of(&out);
    assert_eq!(
        paths(&v["deleted"]),
        vec!["misc/extra-2.txt".to_string()],
        "{v}"
    );
    assert_eq!(
        sha256_of(&data_objects(&server, &dst_prefix)),
        sha256_of(&data_objects(&server, &src_prefix))
    );
    let trash: Vec<String> = boto_list(&server, &dst_prefix)
        .into_keys()
        .filter(|k| k.starts_with("_meta/.pqsync/trash/"))
        .collect();
    assert!(
        trash.iter().any(|k| k.ends_with("misc/extra-2.txt")),
        "{trash:?}"
    );
}
