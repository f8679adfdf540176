//! pqsync's own state lives outside the database: every other client of
//! the directory sees only database files and `_meta/manifest.json`.

use std::collections::BTreeSet;
use std::path::Path;

use crate::lost::Remote;
use crate::{age, copy_dir, edit_elsewhere, pqsync, sample_copy, state_of, Output};

/// Every file under `root`, relative.
fn names(root: &Path) -> BTreeSet<String> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            e.path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .to_string()
        })
        .collect()
}

/// No command writes anything of pqsync's own into the database: status,
/// a dry run, push, pull, sync, verify and list leave exactly the
/// database's files and its manifest. The state is in the state home.
#[test]
fn no_command_writes_state_into_the_database() {
    let remote = Remote::dir();
    let url = remote.url();
    let db = sample_copy();
    let mut before = names(db.path());
    // Push makes the directory a database: its manifest, nothing else.
    before.insert("_meta/manifest.json".into());
    let run = |args: &[&str]| {
        let out = pqsync(None)
            .args(args)
            .arg("-d")
            .arg(db.path())
            .output()
            .unwrap();
        assert!(
            out.status.code().is_some_and(|c| c < 2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(names(db.path()), before, "{args:?} wrote into the database");
    };
    run(&["push", &url]);
    run(&["push", &url, "--dry-run"]);
    run(&["status", &url]);
    // Another writer's version, pulled over this one, which is kept.
    let rel = "data/posts/data.parquet";
    let original = std::fs::read(db.path().join(rel)).unwrap();
    edit_elsewhere(None, &url, rel, b"their edit");
    run(&["pull", &url]);
    assert_eq!(std::fs::read(db.path().join(rel)).unwrap(), b"their edit");
    run(&["sync", &url]);
    // (verify finds the edit is not Parquet: exit 1, and nothing written.)
    for cmd in ["verify", "list", "stats"] {
        pqsync(None).arg(cmd).arg(db.path()).output().unwrap();
        assert_eq!(names(db.path()), before, "{cmd} wrote into the database");
    }
    let state = names(&state_of(db.path()));
    assert!(state.contains("statcache.bin"), "{state:?}");
    assert!(state.contains("database.json"), "{state:?}");
    assert!(
        state
            .iter()
            .any(|p| p.starts_with("trash/") && p.ends_with(rel)),
        "the replaced version is kept in the state's trash: {state:?}"
    );
    // And the kept version is the one replaced, restorable by name.
    pqsync(None)
        .args(["trash", "restore", "--path", rel, "-d"])
        .arg(db.path())
        .stdout_ok();
    assert_eq!(std::fs::read(db.path().join(rel)).unwrap(), original);
}

/// A folder inside a database is not a database: naming it is refused and
/// creates nothing; run from inside it, pqsync finds the database above.
#[test]
fn a_folder_inside_a_database_is_refused_or_resolved_upward() {
    let remote = Remote::dir();
    let url = remote.url();
    let db = sample_copy();
    pqsync(None)
        .args(["push", &url, "-d"])
        .arg(db.path())
        .stdout_ok();
    let inner = db.path().join("data");
    for args in [
        vec!["status", url.as_str()],
        vec!["push", url.as_str(), "--dry-run"],
        vec!["pull", url.as_str()],
    ] {
        let err = pqsync(None)
            .args(&args)
            .arg("-d")
            .arg(&inner)
            .stderr_with(2);
        let err = String::from_utf8_lossy(&err);
        assert!(err.contains("is inside the database"), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
    assert!(!inner.join("_meta").exists(), "nothing was created inside");
    // From inside, with the default `-d .`: the database above.
    let out = pqsync(None)
        .current_dir(&inner)
        .args(["status", "--exit-code", "--json"])
        .stdout_ok();
    let v = crate::json_of(&out);
    assert_eq!(v["isSynced"], true, "{v}");
    assert!(!inner.join("_meta").exists());
}

/// State an earlier version kept in `_meta/.pqsync/` is moved out on first
/// use, trash included, and the folder is removed.
#[test]
fn state_inside_the_database_is_moved_out() {
    let remote = Remote::dir();
    let url = remote.url();
    let db = sample_copy();
    pqsync(None)
        .args(["push", &url, "-d"])
        .arg(db.path())
        .stdout_ok();
    let rel = "data/users/data.parquet";
    edit_elsewhere(None, &url, rel, b"their edit");
    pqsync(None)
        .args(["pull", &url, "-d"])
        .arg(db.path())
        .stdout_ok();
    // Put the state where earlier versions kept it.
    let state = state_of(db.path());
    let legacy = db.path().join("_meta/.pqsync");
    std::fs::rename(&state, &legacy).unwrap();
    let out = pqsync(None)
        .args(["trash", "list", "--json", "-d"])
        .arg(db.path())
        .stdout_ok();
    let listed = crate::json_of(&out);
    assert!(listed.to_string().contains(rel), "{listed}");
    assert!(!legacy.exists(), "the old state folder is gone");
    assert!(state.join("remote.json").exists());
    pqsync(None)
        .args(["status", "--exit-code", "-d"])
        .arg(db.path())
        .stdout_ok();
}

/// A copy of a database (no state of its own) recovers its base from the
/// commit its manifest records, so a deletion there still reaches the
/// remote; a copy whose remote has moved on since stops at the conflict
/// instead of guessing.
#[test]
fn a_copied_database_recovers_its_base_from_its_manifest() {
    for remote in Remote::each("copied") {
        let url = remote.url();
        let srv = remote.server();
        let db = sample_copy();
        pqsync(srv)
            .args(["push", &url, "-d"])
            .arg(db.path())
            .stdout_ok();
        let copy = tempfile::tempdir().unwrap();
        copy_dir(db.path(), copy.path());
        assert!(!state_of(copy.path()).exists());
        let gone = "rels/forward/posts.parquet";
        std::fs::remove_file(copy.path().join(gone)).unwrap();
        let out = pqsync(srv)
            .args(["sync", &url, "--json", "-d"])
            .arg(copy.path())
            .stdout_ok();
        let v = crate::json_of(&out);
        assert_eq!(v["deleted"], serde_json::json!([gone]), "{v}");
        assert!(
            !remote.objects().contains_key(gone),
            "the deletion reached the remote"
        );
        remote.assert_invariant("after the copy's sync");

        // A second copy, taken before another writer moved the remote on.
        let stale = tempfile::tempdir().unwrap();
        copy_dir(db.path(), stale.path());
        let rel = "data/users/data.parquet";
        std::fs::write(stale.path().join(rel), b"stale copy's edit").unwrap();
        age(&stale.path().join(rel));
        std::fs::write(db.path().join(rel), b"newer edit").unwrap();
        age(&db.path().join(rel));
        pqsync(srv)
            .args(["sync", &url, "-d"])
            .arg(db.path())
            .stdout_ok();
        pqsync(srv)
            .args(["sync", &url, "-d"])
            .arg(stale.path())
            .stdout_with(3);
        assert_eq!(
            remote.objects()[rel],
            b"newer edit",
            "the stale copy overwrote nothing"
        );
        assert_eq!(
            std::fs::read(stale.path().join(rel)).unwrap(),
            b"stale copy's edit"
        );
    }
}

/// With the state home on another file system (a tmpfs), where hard links
/// and renames into it fail: a replaced file is copied to the trash, a
/// deleted one copied and then removed, old state moved across, and every
/// kept version restores byte for byte.
#[test]
fn state_on_another_file_system() {
    use std::os::unix::fs::MetadataExt;
    let home = tempfile::tempdir_in("/dev/shm").expect("a tmpfs at /dev/shm");
    let remote = Remote::dir();
    let url = remote.url();
    let db = sample_copy();
    assert_ne!(
        std::fs::metadata(home.path()).unwrap().dev(),
        std::fs::metadata(db.path()).unwrap().dev(),
        "the state home must be on another file system for this test"
    );
    let run = |args: &[&str]| {
        pqsync(None)
            .env("PQSYNC_STATE_DIR", home.path())
            .args(args)
            .arg("-d")
            .arg(db.path())
            .stdout_ok()
    };
    run(&["push", &url]);
    // Old state inside the database is moved across.
    let state = pqsync_core::state_dir_for(home.path(), db.path());
    let legacy = db.path().join("_meta/.pqsync");
    crate::copy_dir(&state, &legacy);
    std::fs::remove_dir_all(&state).unwrap();
    run(&["status", "--exit-code", &url]);
    assert!(!legacy.exists());
    assert!(state.join("remote.json").is_file());

    let replaced = "data/posts/data.parquet";
    let deleted = "rels/forward/posts.parquet";
    let before_replaced = std::fs::read(db.path().join(replaced)).unwrap();
    let before_deleted = std::fs::read(db.path().join(deleted)).unwrap();
    // Another writer edits one file and deletes another.
    let other = tempfile::tempdir().unwrap();
    pqsync(None)
        .args(["pull", &url, "-d"])
        .arg(other.path())
        .stdout_ok();
    std::fs::write(other.path().join(replaced), b"their edit").unwrap();
    age(&other.path().join(replaced));
    std::fs::remove_file(other.path().join(deleted)).unwrap();
    pqsync(None)
        .args(["push", &url, "-d"])
        .arg(other.path())
        .stdout_ok();

    run(&["pull", &url]);
    assert_eq!(
        std::fs::read(db.path().join(replaced)).unwrap(),
        b"their edit"
    );
    assert!(!db.path().join(deleted).exists());
    run(&["trash", "restore", "--path", replaced, "--path", deleted]);
    assert_eq!(
        std::fs::read(db.path().join(replaced)).unwrap(),
        before_replaced
    );
    assert_eq!(
        std::fs::read(db.path().join(deleted)).unwrap(),
        before_deleted
    );
    assert!(!db.path().join("_meta/.pqsync").exists());
}

/// ParqueDB keeps fields it does not know, so its push copies the
/// `commitId` pqsync recorded in a local manifest into the remote manifest
/// it writes, over different files. pqsync must not take that for its own
/// commit: a directory whose base matched that commit would otherwise see
/// ParqueDB's edit as its own base and overwrite it.
#[test]
fn a_commit_id_parquedb_copied_over_other_files_is_not_trusted() {
    for remote in Remote::each("copiedid") {
        let url = remote.url();
        let srv = remote.server();
        let ours = sample_copy();
        pqsync(srv)
            .args(["push", &url, "-d"])
            .arg(ours.path())
            .stdout_ok();
        // ParqueDB on another machine: a copy of the database whose local
        // manifest carries the commit id, an edit, and ParqueDB's push,
        // which writes the object and that same manifest (files updated,
        // other fields kept) to the remote.
        let theirs = tempfile::tempdir().unwrap();
        copy_dir(ours.path(), theirs.path());
        let rel = "data/users/data.parquet";
        let edit = b"ParqueDB's edit".to_vec();
        let mut m: serde_json::Value = serde_json::from_slice(
            &std::fs::read(theirs.path().join("_meta/manifest.json")).unwrap(),
        )
        .unwrap();
        assert!(m["commitId"].is_string(), "{m}");
        let alg: pqsync_core::HashAlgorithm = m["files"][rel]["hashAlgorithm"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        m["files"][rel]["hash"] = alg.digest(&edit).to_string().into();
        m["files"][rel]["size"] = edit.len().into();
        remote.put(rel, &edit, None);
        remote.put("_meta/manifest.json", m.to_string().as_bytes(), None);

        // Our side edits the same file: status calls it a conflict, and
        // sync stops at it.
        std::fs::write(ours.path().join(rel), b"our edit").unwrap();
        age(&ours.path().join(rel));
        let status = crate::json_of(
            &pqsync(srv)
                .args(["status", &url, "--json", "-d"])
                .arg(ours.path())
                .stdout_ok(),
        );
        let conflicts = crate::paths(&status["diff"]["conflicts"]);
        assert_eq!(conflicts, vec![rel.to_string()], "{status}");
        pqsync(srv)
            .args(["sync", &url, "-d"])
            .arg(ours.path())
            .stdout_with(3);
        assert_eq!(remote.objects()[rel], edit, "ParqueDB's edit survives");
        assert_eq!(std::fs::read(ours.path().join(rel)).unwrap(), b"our edit");
    }
}
