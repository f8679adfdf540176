//! `push --shard K/N` and `push --merge-shards`: one push split across
//! processes that share a directory, judged by what an independent client
//! reads from the remote and by what a pull gets.

use std::collections::BTreeMap;
use std::path::Path;

use pqsync_core::Shard;
use serde_json::Value;

use crate::lost::{data_of, object, Remote};
use crate::{binary, edit_elsewhere, json_of, paths, pqsync, sample_copy, tree_files, Output};

/// What a push of `db` sends: every file but the top-level `.DS_Store`,
/// which ParqueDB skips.
fn synced(db: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = tree_files(db);
    files.remove(".DS_Store");
    files
}

/// Checks one shard run's report: it sent and hashed only its own paths.
fn own_paths_only(k: u32, v: &Value, files: &BTreeMap<String, Vec<u8>>) {
    for p in paths(&v["uploaded"]) {
        assert_eq!(Shard::of(&p, 4), k, "shard {k} sent {p}, another shard's");
    }
    let own = files.keys().filter(|p| Shard::of(p, 4) == k).count();
    let hashed = v["filesHashed"].as_u64().unwrap() as usize;
    assert!(
        hashed <= own,
        "shard {k} hashed {hashed} files, more than its {own}"
    );
    assert_eq!(v["committed"], false, "a shard never commits: {v}");
}

/// Four shards at once on one directory (one killed as it starts and run
/// again), then the merge: it refuses while a record is missing or stale
/// and commits the union once all are in. Another writer's addition, which
/// a push leaves alone, survives the merge; a local edit, addition and
/// deletion go through it; a file that became unreadable keeps its remote
/// version. Names with `# % ? + & ~ [ ]`, non-ASCII letters and a
/// `.DS_Store` in every folder go through like any other.
#[test]
fn sharded_push_merges_what_every_shard_sent() {
    for remote in Remote::each("push-shards") {
        let url = remote.url();
        let srv = remote.server();
        let db = sample_copy();
        let odd = "misc/café #%?+&~[]/naïve.txt";
        std::fs::create_dir_all(db.path().join(odd).parent().unwrap()).unwrap();
        std::fs::write(db.path().join(odd), "odd").unwrap();
        for i in 0..40 {
            std::fs::write(
                db.path().join(format!("misc/extra-{i}.txt")),
                format!("{i}"),
            )
            .unwrap();
        }
        let dirs: Vec<_> = walkdir::WalkDir::new(db.path())
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.path().to_path_buf())
            .collect();
        for d in dirs {
            std::fs::write(d.join(".DS_Store"), "finder").unwrap();
        }
        let files = synced(db.path());
        assert!(files.contains_key("misc/.DS_Store"));

        let shard = |k: u32| {
            let mut cmd = binary(srv);
            cmd.args(["--no-progress", "push", &url, "--json", "--shard"])
                .arg(format!("{k}/4"))
                .arg("-d")
                .arg(db.path());
            cmd
        };
        let merge = || {
            let mut cmd = pqsync(srv);
            cmd.args(["push", &url, "--merge-shards", "--json", "-d"])
                .arg(db.path());
            cmd
        };
        let records = || -> Vec<String> {
            remote
                .state_keys()
                .into_iter()
                .filter(|k| k.starts_with("shards/"))
                .collect()
        };
        let err = String::from_utf8(merge().stderr_with(1)).unwrap();
        assert!(err.contains("no shard records"), "{err}");
        let err = pqsync(srv)
            .args(["pull", &url, "--shard", "0/2", "-d"])
            .arg(db.path())
            .stderr_with(2);
        assert!(String::from_utf8_lossy(&err).contains("--shard"));

        // Shards 0, 1 and 3 at once, and shard 2 killed as it starts.
        for (k, out) in crate::three_shards_one_killed(shard) {
            own_paths_only(k, &json_of(&out), &files);
        }
        if !records().iter().any(|k| k == "shards/4/2.json") {
            let err = String::from_utf8(merge().stderr_with(1)).unwrap();
            assert!(err.contains("2/4"), "{err}");
            assert!(remote.manifest().is_none(), "nothing committed yet");
        }
        own_paths_only(
            2,
            &json_of(&assert_cmd::Command::from_std(shard(2)).stdout_ok()),
            &files,
        );
        let v = json_of(&merge().stdout_ok());
        assert_eq!(v["committed"], true, "{v}");
        assert_eq!(data_of(&remote), files, "the union of the shards");
        let listed: Vec<String> = remote.manifest().unwrap()["files"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(listed, files.keys().cloned().collect::<Vec<_>>());
        remote.assert_invariant("after the merge");
        assert!(records().is_empty(), "{:?}", records());
        let restored = tempfile::tempdir().unwrap();
        pqsync(srv)
            .args(["pull", &url, "-d"])
            .arg(restored.path())
            .stdout_ok();
        assert_eq!(tree_files(restored.path()), files, "what a pull gets");

        // Another writer adds a file; locally one file is edited, one
        // added, one deleted and one replaced by a FIFO nobody can read.
        edit_elsewhere(srv, &url, "elsewhere.txt", b"theirs");
        std::fs::write(db.path().join("misc/extra-1.txt"), "changed").unwrap();
        std::fs::write(db.path().join("misc/new.txt"), "new").unwrap();
        std::fs::remove_file(db.path().join("misc/extra-2.txt")).unwrap();
        // A file that became a folder, and a folder that became a file.
        std::fs::remove_file(db.path().join("misc/extra-3.txt")).unwrap();
        std::fs::create_dir(db.path().join("misc/extra-3.txt")).unwrap();
        std::fs::write(db.path().join("misc/extra-3.txt/inner.txt"), "inner").unwrap();
        let odd_dir = db.path().join(odd).parent().unwrap().to_path_buf();
        std::fs::remove_dir_all(&odd_dir).unwrap();
        std::fs::write(&odd_dir, "now a file").unwrap();
        let bloom = "indexes/bloom/users.bloom";
        let bloom_before = object(&remote, bloom);
        std::fs::remove_file(db.path().join(bloom)).unwrap();
        assert!(std::process::Command::new("mkfifo")
            .arg(db.path().join(bloom))
            .status()
            .unwrap()
            .success());
        // Every shard in turn; the one holding the FIFO fails it (exit 1).
        let run_all = |fifo: bool| {
            for k in 0..4 {
                let code = i32::from(fifo && Shard::of(bloom, 4) == k);
                let out = assert_cmd::Command::from_std(shard(k)).stdout_with(code);
                own_paths_only(k, &json_of(&out), &files);
            }
        };
        run_all(true);
        // Until the merge, every reader finds the bytes the manifest names:
        // a replacement waits in the shard's staging folder.
        remote.assert_invariant("between the shards and the merge");
        assert_eq!(object(&remote, "misc/extra-1.txt"), b"1");
        assert!(remote
            .state_keys()
            .iter()
            .any(|k| k.starts_with("staged/") && k.ends_with("/misc/extra-1.txt")));
        // A commit lands between the shards and the merge: the records
        // are stale, and nothing of theirs is committed.
        edit_elsewhere(srv, &url, "elsewhere-2.txt", b"theirs too");
        let err = String::from_utf8(merge().stderr_with(1)).unwrap();
        assert!(err.contains("changed since shard"), "{err}");
        assert_eq!(object(&remote, "misc/extra-1.txt"), b"1");
        run_all(true);
        let v = json_of(&merge().stdout_with(1));
        assert_eq!(v["committed"], true, "{v}");
        assert_eq!(
            paths(&v["deleted"]),
            vec![
                "misc/café #%?+&~[]/.DS_Store".to_string(),
                odd.to_string(),
                "misc/extra-2.txt".to_string(),
                "misc/extra-3.txt".to_string(),
            ],
            "{v:#}"
        );
        let errors: Vec<&str> = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert_eq!(errors, vec![bloom], "{v}");
        let now = data_of(&remote);
        assert_eq!(now["misc/extra-1.txt"], b"changed");
        assert_eq!(now["misc/new.txt"], b"new");
        assert!(!now.contains_key("misc/extra-2.txt"));
        assert_eq!(now["misc/extra-3.txt/inner.txt"], b"inner");
        assert!(!now.contains_key("misc/extra-3.txt"));
        assert_eq!(now["misc/café #%?+&~[]"], b"now a file");
        assert!(!now.contains_key(odd));
        assert_eq!(now[bloom], bloom_before, "left out, not deleted");
        assert_eq!(now["elsewhere.txt"], b"theirs", "another writer's file");
        assert_eq!(now["elsewhere-2.txt"], b"theirs too");
        assert!(remote.manifest().unwrap()["files"].get(bloom).is_some());
        remote.assert_invariant("after the second merge");
        assert!(
            remote.trash().keys().any(|(_, p)| p == "misc/extra-2.txt"),
            "the deletion is kept in the trash"
        );
        assert!(records().is_empty(), "{:?}", records());
        let staged: Vec<String> = remote
            .state_keys()
            .into_iter()
            .filter(|k| k.starts_with("staged/"))
            .collect();
        assert!(staged.is_empty(), "{staged:?}");

        // A dry run of a shard between its run and the merge, and then the
        // same file edited again: the shard knows its last record landed
        // (no conflict), and the merge commits the new bytes. A merge with
        // a selection is refused.
        std::fs::remove_file(db.path().join(bloom)).unwrap();
        std::fs::write(db.path().join(bloom), "bloom").unwrap();
        std::fs::write(db.path().join("misc/extra-1.txt"), "second").unwrap();
        run_all(false);
        let k = Shard::of("misc/extra-1.txt", 4);
        let mut dry = assert_cmd::Command::from_std(shard(k));
        dry.arg("--dry-run").stdout_ok();
        let out = merge().arg("--namespaces").arg("users").output().unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--merge-shards"));
        assert_eq!(json_of(&merge().stdout_ok())["committed"], true);
        std::fs::write(db.path().join("misc/extra-1.txt"), "third").unwrap();
        run_all(false);
        assert_eq!(json_of(&merge().stdout_ok())["committed"], true);
        let now = data_of(&remote);
        assert_eq!(now["misc/extra-1.txt"], b"third");
        assert_eq!(now[bloom], b"bloom");
        remote.assert_invariant("after the third merge");
    }
}

/// A file deleted by a push that was killed after its commit (its
/// deletion announced, not made), then added again with the same bytes and
/// sent by a shard: the merge, which finishes the killed run's deletions
/// first, keeps the object the shard sent, so the manifest it commits
/// names bytes that are there.
#[test]
fn a_merge_keeps_what_a_shard_sent_over_an_announced_deletion() {
    for remote in Remote::each("shard-announced") {
        let url = remote.url();
        let srv = remote.server();
        let db = sample_copy();
        let again = "misc/again [1].txt";
        std::fs::create_dir_all(db.path().join("misc")).unwrap();
        std::fs::write(db.path().join(again), "the same bytes").unwrap();
        pqsync(srv)
            .args(["push", &url, "-d"])
            .arg(db.path())
            .assert()
            .success();
        let hash = remote.manifest().unwrap()["files"][again]["hash"]
            .as_str()
            .unwrap()
            .to_string();
        std::fs::remove_file(db.path().join(again)).unwrap();
        pqsync(srv)
            .args(["push", &url, "-d"])
            .arg(db.path())
            .assert()
            .success();
        // What a push killed after its commit leaves: the deletion of the
        // old version announced, not made.
        let run = format!("{}-0badc0de", chrono::Utc::now().format("%Y%m%dT%H%M%SZ"));
        let announced =
            serde_json::json!({"files": [{"path": again, "hash": format!("blake3:{hash}")}]});
        remote.put(
            &format!("_meta/.pqsync/pending/{run}.json"),
            announced.to_string().as_bytes(),
            None,
        );
        std::fs::write(db.path().join(again), "the same bytes").unwrap();
        for k in 0..2 {
            pqsync(srv)
                .args(["push", &url, "--shard", &format!("{k}/2"), "-d"])
                .arg(db.path())
                .assert()
                .success();
        }
        pqsync(srv)
            .args(["push", &url, "--merge-shards", "-d"])
            .arg(db.path())
            .assert()
            .success();
        assert!(remote.manifest().unwrap()["files"].get(again).is_some());
        assert_eq!(data_of(&remote)[again], b"the same bytes");
        remote.assert_invariant("after the merge");
        let out = tempfile::tempdir().unwrap();
        pqsync(srv)
            .args(["pull", &url, "-d"])
            .arg(out.path())
            .assert()
            .success();
        assert_eq!(
            std::fs::read(out.path().join(again)).unwrap(),
            b"the same bytes"
        );
    }
}
