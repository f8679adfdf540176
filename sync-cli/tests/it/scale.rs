//! Trees of many files: the status that merges the walk with the base as
//! both stream, the binary state files (and the JSON ones of earlier
//! versions), and memory that grows with the file count at a bounded rate.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::lost::Remote;
use crate::{age, binary, json_of, pqsync, sample_copy, state_of, Output};

/// The fast path's log line.
const FROM_BASE: &str = "compared with the base";

/// `status --json` of `db` against its remembered remote: the report, and
/// whether it was measured against the base alone.
fn status(db: &Path) -> (Value, bool) {
    status_on(None, db)
}

fn status_on(server: Option<&crate::S3Server>, db: &Path) -> (Value, bool) {
    let out = pqsync(server)
        .env("PQSYNC_LOG", "pqsync_core=info")
        .args(["status", "--json", "-d"])
        .arg(db)
        .output()
        .unwrap();
    assert!(
        out.status.code().is_some_and(|c| c < 2),
        "status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    (json_of(&out.stdout), stderr.contains(FROM_BASE))
}

/// The state files of `db` whose names start with `prefix`.
fn state_files(db: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(state_of(db))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .collect();
    found.sort();
    found
}

fn sorted(v: &Value) -> Vec<String> {
    crate::paths(v)
}

/// The edits both tests make in `d`: a file edited, a new file under an
/// awkward folder name, a file deleted. Returns their paths in that order.
fn edit_every_kind(d: &Path) -> (&'static str, &'static str, &'static str) {
    let edited = "data/posts/data.parquet";
    std::fs::write(d.join(edited), b"PAR1 edited PAR1").unwrap();
    age(&d.join(edited));
    let odd = "data/caf\u{e9} #%?+&~[]/n\u{e4}me [1].parquet";
    std::fs::create_dir_all(d.join(odd).parent().unwrap()).unwrap();
    std::fs::write(d.join(odd), b"PAR1 new PAR1").unwrap();
    let deleted = "data/users/data.parquet";
    std::fs::remove_file(d.join(deleted)).unwrap();
    (edited, odd, deleted)
}

/// While the remote manifest is the one the last sync left, a status
/// compares the directory with the base alone, and finds exactly what the
/// full comparison finds: edits, new files with awkward names, deletions,
/// and nothing of `.DS_Store`. Once another writer commits, or the manifest
/// is deleted behind pqsync's back, it compares with the remote again.
#[test]
fn status_against_the_base_agrees_with_the_full_comparison() {
    for remote in Remote::each("scale-status") {
        status_against_the_base(&remote);
    }
}

fn status_against_the_base(remote: &Remote) {
    let url = remote.url();
    let server = remote.server();
    let pqsync = |_: Option<()>| pqsync(server);
    let status = |d: &Path| status_on(server, d);
    let db = sample_copy();
    let d = db.path();
    pqsync(None).args(["push", &url, "-d"]).arg(d).stdout_ok();
    let (clean, fast) = status(d);
    assert!(fast, "an unchanged remote is compared through the base");
    assert_eq!(clean["isSynced"], true, "{clean}");

    // Edits of every kind.
    let (edited, odd, deleted) = edit_every_kind(d);
    for dir in ["", "data", "data/caf\u{e9} #%?+&~[]"] {
        std::fs::write(d.join(dir).join(".DS_Store"), b"finder").unwrap();
    }

    let (quick, fast) = status(d);
    assert!(fast);
    // ParqueDB skips `.DS_Store` at the top only; below, it is a file.
    let mut sent = vec![
        "data/.DS_Store".to_string(),
        "data/caf\u{e9} #%?+&~[]/.DS_Store".into(),
        odd.into(),
        edited.into(),
    ];
    sent.sort();
    assert_eq!(sorted(&quick["diff"]["toUpload"]), sent);
    assert_eq!(
        sorted(&quick["diff"]["deletedLocally"]),
        vec![deleted.to_string()]
    );
    assert_eq!(quick["isSynced"], false);
    // Without the stamp the base is not known to equal the remote: the
    // full comparison, which must say the same.
    for stamp in state_files(d, "base-") {
        if stamp.to_string_lossy().ends_with(".stamp.json") {
            std::fs::remove_file(stamp).unwrap();
        }
    }
    let (full, fast) = status(d);
    assert!(!fast, "no stamp, no shortcut");
    // (Files read to hash them may differ: the first run cached some.)
    let without_count = |mut v: Value| {
        v.as_object_mut().unwrap().remove("filesHashed");
        v
    };
    assert_eq!(without_count(quick), without_count(full));

    // A sync records the stamp again; then another writer commits.
    pqsync(None).args(["push", "-d"]).arg(d).stdout_ok();
    assert!(status(d).1);
    crate::edit_elsewhere(server, &url, edited, b"PAR1 theirs PAR1");
    let (after, fast) = status(d);
    assert!(!fast, "the remote manifest changed: compared with it");
    assert_eq!(
        sorted(&after["diff"]["toDownload"]),
        vec![edited.to_string()]
    );

    // The manifest deleted behind pqsync's back: an error, not "in sync".
    pqsync(None).args(["pull", "-d"]).arg(d).stdout_ok();
    assert!(status(d).1);
    remote.delete("_meta/manifest.json");
    let err = pqsync(None).args(["status", "-d"]).arg(d).stderr_with(1);
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("no manifest") || err.contains("lost"), "{err}");
}

/// A push `db` makes to its remembered remote: whether the manifest was
/// rebuilt from the base instead of downloaded.
fn push_on(server: Option<&crate::S3Server>, db: &Path) -> bool {
    let out = pqsync(server)
        .env("PQSYNC_LOG", "pqsync_core=info")
        .args(["push", "-d"])
        .arg(db)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "push failed: {stderr}");
    stderr.contains("rebuilt from the base")
}

/// While the remote manifest is the one the last sync left, a push does
/// not download it: the base and the header recorded with it rebuild it.
/// The manifest the push then commits, as an independent client reads it,
/// lists every untouched entry exactly as before (ETag, time and all), the
/// edit, the new file and not the deleted one. After another writer's
/// commit, or with a damaged base, it reads the manifest as before and
/// loses nothing of theirs.
#[test]
fn push_through_the_base_commits_what_a_full_read_would() {
    for remote in Remote::each("scale-push") {
        let url = remote.url();
        let server = remote.server();
        let db = sample_copy();
        let d = db.path();
        pqsync(server).args(["push", &url, "-d"]).arg(d).stdout_ok();
        let before = remote.manifest().unwrap()["files"].clone();
        let before = before.as_object().unwrap();

        let (edited, odd, deleted) = edit_every_kind(d);
        assert!(push_on(server, d), "the manifest was downloaded");
        let after = remote.manifest().unwrap()["files"].clone();
        let after = after.as_object().unwrap();
        for (path, entry) in before {
            if path != edited && path != deleted {
                assert_eq!(&after[path], entry, "{path} was rewritten");
            }
        }
        assert!(!after.contains_key(deleted));
        assert!(after.contains_key(odd));
        assert_ne!(after[edited]["hash"], before[edited]["hash"]);
        assert_eq!(after.len(), before.len());
        remote.assert_invariant("after a push through the base");
        let mut objects = crate::lost::data_of(&remote);
        let mut local = crate::tree_files(d);
        objects.retain(|p, _| !p.starts_with("_meta/.pqsync"));
        local.retain(|p, _| p != ".DS_Store");
        assert_eq!(objects, local, "the remote holds the directory");

        // Another writer commits: their file survives the next push.
        crate::edit_elsewhere(server, &url, "theirs.txt", b"theirs");
        std::fs::write(d.join("mine.txt"), b"mine").unwrap();
        assert!(!push_on(server, d), "the manifest changed: read again");
        let now = remote.manifest().unwrap();
        assert!(now["files"].get("theirs.txt").is_some(), "{now}");
        assert!(now["files"].get("mine.txt").is_some(), "{now}");

        // A base cut short is not rebuilt into a manifest.
        pqsync(server).args(["pull", "-d"]).arg(d).stdout_ok();
        std::fs::write(d.join("again.txt"), b"again").unwrap();
        for base in state_files(d, "base-") {
            if base.extension().is_some_and(|e| e == "bin") {
                let bytes = std::fs::read(&base).unwrap();
                std::fs::write(&base, &bytes[..bytes.len() / 2]).unwrap();
            }
        }
        assert!(!push_on(server, d), "a damaged base stood in");
        let files = remote.manifest().unwrap()["files"].clone();
        for p in ["theirs.txt", "mine.txt", "again.txt", edited, odd] {
            assert!(files.get(p).is_some(), "{p} is missing");
        }
        remote.assert_invariant("after a push with a damaged base");
    }
}

/// The JSON stat cache and base an earlier version wrote are still used
/// (nothing is hashed again, and a deletion is still recognised as one),
/// then replaced by the binary files. A damaged binary file costs a rehash
/// or a first-sync comparison, never a wrong answer.
#[test]
fn state_of_an_earlier_version_is_read_then_replaced() {
    let remote = Remote::dir();
    let url = remote.url();
    let db = sample_copy();
    let d = db.path();
    pqsync(None).args(["push", &url, "-d"]).arg(d).stdout_ok();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(Path::new(&url).join("_meta/manifest.json")).unwrap(),
    )
    .unwrap();

    // The earlier formats, written by hand from the remote manifest and
    // the files' own stat.
    let mut cache = serde_json::Map::new();
    for (path, e) in manifest["files"].as_object().unwrap() {
        let md = std::fs::metadata(d.join(path)).unwrap();
        cache.insert(
            path.clone(),
            serde_json::json!([
                md.size(),
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                md.ctime() * 1_000_000_000 + md.ctime_nsec(),
                md.ino(),
                e["hashAlgorithm"],
                e["hash"],
            ]),
        );
    }
    let state = state_of(d);
    let base = state_files(d, "base-")
        .into_iter()
        .find(|p| p.extension().is_some_and(|x| x == "bin"))
        .expect("a binary base");
    let legacy_base = base.with_extension("json");
    std::fs::write(&legacy_base, serde_json::to_vec(&manifest).unwrap()).unwrap();
    std::fs::remove_file(&base).unwrap();
    std::fs::write(
        state.join("statcache.json"),
        serde_json::to_vec(&serde_json::json!({"version": 1, "files": cache})).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(state.join("statcache.bin")).unwrap();

    let deleted = "data/users/data.parquet";
    std::fs::remove_file(d.join(deleted)).unwrap();
    let (report, _) = status(d);
    assert_eq!(report["filesHashed"], 0, "{report}");
    assert_eq!(
        sorted(&report["diff"]["deletedLocally"]),
        vec![deleted.to_string()]
    );
    assert!(state.join("statcache.bin").is_file());
    assert!(!state.join("statcache.json").exists());

    pqsync(None).args(["push", "-d"]).arg(d).stdout_ok();
    assert!(base.is_file() && !legacy_base.exists());
    let (report, fast) = status(d);
    assert!(fast && report["isSynced"] == true, "{report}");

    // Damage: a stat cache cut short costs a rehash of what it lost.
    let cut = |f: &Path| {
        let bytes = std::fs::read(f).unwrap();
        std::fs::write(f, &bytes[..bytes.len() / 2]).unwrap();
    };
    cut(&state.join("statcache.bin"));
    let (report, fast) = status(d);
    assert!(fast && report["isSynced"] == true, "{report}");
    assert!(report["filesHashed"].as_u64().unwrap() > 0, "{report}");
    // A base cut short is not stood in for the remote.
    cut(&base);
    let (report, fast) = status(d);
    assert!(!fast, "a damaged base is not stood in for the remote");
    assert_eq!(report["isSynced"], true, "{report}");
}

/// Peak resident memory of one run of the binary, in bytes (the kernel's
/// count for the child, from `wait4`).
#[allow(unsafe_code)]
fn peak_rss(args: &[&str], dir: &Path) -> u64 {
    let child = binary(None)
        .arg("--no-progress")
        .arg("-q")
        .args(args)
        .arg("-d")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: `rusage` is plain data the kernel fills in; `pid` is our
    // child, waited for exactly once (here, not through `child`).
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::wait4(pid, &mut status, 0, &mut usage), pid);
        usage
    };
    std::mem::forget(child);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) < 2,
        "{args:?} failed"
    );
    usage.ru_maxrss as u64 * 1024
}

/// A tree of `n` small files (besides the sample database).
fn tree_of(n: usize) -> tempfile::TempDir {
    let db = sample_copy();
    for i in 0..n {
        let dir = db.path().join(format!("extra/{:04}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("file-{i:07}.bin")), i.to_le_bytes()).unwrap();
    }
    // Old enough for the stat cache to trust.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for e in walkdir::WalkDir::new(db.path()) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            std::fs::File::options()
                .write(true)
                .open(e.path())
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
    }
    db
}

/// Memory grows with the number of files at a bounded rate: a status of an
/// unchanged tree costs at most 400 bytes more per added file, measured
/// between two trees so the program's fixed cost cancels out.
#[test]
fn status_memory_grows_by_at_most_400_bytes_a_file() {
    let (small, large) = (10_000usize, 60_000usize);
    let mut peaks = Vec::new();
    for n in [small, large] {
        let remote = Remote::dir();
        let db = tree_of(n);
        pqsync(None)
            .args(["push", &remote.url(), "-d"])
            .arg(db.path())
            .stdout_ok();
        // The second status is the steady one (the first may write the
        // stat cache).
        peak_rss(&["status"], db.path());
        peaks.push(peak_rss(&["status"], db.path()));
        let (report, fast) = status(db.path());
        assert!(fast && report["isSynced"] == true);
    }
    let per_file = peaks[1].saturating_sub(peaks[0]) / (large - small) as u64;
    assert!(
        per_file <= 400,
        "status: {per_file} bytes more per file (peaks {peaks:?})"
    );
}
