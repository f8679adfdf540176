//! End-to-end tests: the real `pqsync` binary on the sample database, against
//! the in-process S3 server over HTTP (or an external server named by
//! `PQSYNC_TEST_S3_ENDPOINT`, such as Garage in CI's second lane), and against
//! local-directory remotes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

mod azure;
mod backup;
mod cli;
mod errors;
mod events;
mod health;
mod keys;
mod kill;
mod lost;
mod mirror;
mod output;
mod parquedb;
mod profiles;
mod scale;
mod scheduling;
mod shards;
mod state;
mod verify;
mod watch;

use assert_cmd::Command;
use pqsync_testdata::s3::S3Server;
use serde_json::Value;

fn sample_db() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/sample-db")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/fixtures")
        .join(name)
}

/// A copy of the sample database in a fresh directory.
fn sample_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&sample_db(), dir.path());
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        let target = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(e.path(), &target).unwrap();
            age(&target);
        }
    }
}

/// Moves a file's mtime an hour back, as for a database written earlier
/// (files modified within the last two seconds are always re-hashed).
fn age(path: &Path) {
    let t = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

/// Synced files of a tree with their bytes (pqsync's own state excluded).
fn tree_files(root: &Path) -> BTreeMap<String, Vec<u8>> {
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
            .to_string();
        if rel == "_meta/manifest.json" || rel.starts_with("_meta/.pqsync") {
            continue;
        }
        out.insert(rel, std::fs::read(e.path()).unwrap());
    }
    out
}

/// The real binary with a clean S3 environment (only `server`'s settings),
/// for tests that spawn and kill it themselves.
fn binary(server: Option<&S3Server>) -> std::process::Command {
    clean_env(
        std::process::Command::new(env!("CARGO_BIN_EXE_pqsync")),
        server,
    )
}

/// `cmd` with the environment [`binary`] gives pqsync.
fn clean_env(mut cmd: std::process::Command, server: Option<&S3Server>) -> std::process::Command {
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT",
        "AWS_ALLOW_HTTP",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "R2_JURISDICTION",
        "PQSYNC_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    // No profile or config file of the machine's user.
    cmd.env("AWS_CONFIG_FILE", state_home().join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            state_home().join("no-aws-credentials"),
        )
        .env("XDG_CONFIG_HOME", state_home().join("no-config-home"));
    if let Some(s) = server {
        cmd.envs(s.env());
    }
    cmd.env("PQSYNC_STATE_DIR", state_home());
    cmd
}

/// The state home every `pqsync` this test process starts uses: its own
/// temporary directory, not the user's.
fn state_home() -> &'static Path {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().unwrap()).path()
}

/// Where pqsync keeps the state of the database at `db`.
fn state_of(db: &Path) -> PathBuf {
    pqsync_core::state_dir_for(state_home(), db)
}

fn pqsync(server: Option<&S3Server>) -> Command {
    let mut cmd = Command::from_std(binary(server));
    cmd.arg("--no-progress");
    cmd
}

/// Another writer's edit: a clone pulls `url`, changes `rel` and pushes.
fn edit_elsewhere(server: Option<&S3Server>, url: &str, rel: &str, bytes: &[u8]) {
    let clone = tempfile::tempdir().unwrap();
    pqsync(server)
        .args(["pull", url, "-d"])
        .arg(clone.path())
        .stdout_ok();
    std::fs::write(clone.path().join(rel), bytes).unwrap();
    age(&clone.path().join(rel));
    pqsync(server)
        .args(["push", url, "-d"])
        .arg(clone.path())
        .stdout_ok();
}

/// Runs a command and returns what it printed, checking its exit status.
trait Output {
    /// stdout of a run that must succeed.
    fn stdout_ok(&mut self) -> Vec<u8>;
    /// stdout of a run that must exit with `code`.
    fn stdout_with(&mut self, code: i32) -> Vec<u8>;
    /// stderr of a run that must exit with `code`.
    fn stderr_with(&mut self, code: i32) -> Vec<u8>;
}

impl Output for Command {
    fn stdout_ok(&mut self) -> Vec<u8> {
        self.assert().success().get_output().stdout.clone()
    }
    fn stdout_with(&mut self, code: i32) -> Vec<u8> {
        self.assert().code(code).get_output().stdout.clone()
    }
    fn stderr_with(&mut self, code: i32) -> Vec<u8> {
        self.assert().code(code).get_output().stderr.clone()
    }
}

/// Runs shards 0, 1 and 3 of four at once while shard 2 is killed as it
/// starts, as a scheduler's failed pod; returns each finished shard's
/// stdout. Every one of the three must succeed.
fn three_shards_one_killed(shard: impl Fn(u32) -> std::process::Command) -> Vec<(u32, Vec<u8>)> {
    let running: Vec<_> = [0, 1, 3]
        .into_iter()
        .map(|k| {
            let child = shard(k)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (k, child)
        })
        .collect();
    let mut killed = shard(2)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    killed.kill().unwrap();
    killed.wait().unwrap();
    running
        .into_iter()
        .map(|(k, child)| {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "shard {k}/4 failed: {err}");
            (k, out.stdout)
        })
        .collect()
}

fn json_of(out: &[u8]) -> Value {
    serde_json::from_slice(out).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}): {}",
            String::from_utf8_lossy(out)
        )
    })
}

fn paths(v: &Value) -> Vec<String> {
    let mut p: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| match x {
            Value::String(s) => s.clone(),
            other => other["path"].as_str().unwrap().to_string(),
        })
        .collect();
    p.sort();
    p
}

fn file_count(root: &Path) -> usize {
    tree_files(root).len()
}

/// The scenario from the core issue: push; change one file, add one, delete
/// one; status shows exactly those; push moves exactly those with a request
/// count near the file count; pull into an empty directory is identical.
#[test]
fn push_change_status_push_pull_over_s3() {
    let server = S3Server::start();
    let url = server.unique_url("e2e");
    let db = sample_copy();
    let total = file_count(db.path());

    let out = pqsync(Some(&server))
        .args(["push", &url, "-d"])
        .arg(db.path())
        .arg("--json")
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(v["success"], true);
    assert_eq!(v["uploaded"].as_array().unwrap().len(), total);
    for key in [
        "downloaded",
        "deleted",
        "conflictsResolved",
        "conflictsPending",
        "errors",
        "bytesTransferred",
        "requests",
    ] {
        assert!(v.get(key).is_some(), "push --json lacks {key}");
    }
    // One GET of the manifest, one PUT per file, one manifest PUT; plus the
    // one-time probe of conditional writes (caps GET, PUT, PUT, [PUT,]
    // DELETE, caps PUT) and, where they are not enforced, the lease (its
    // object's PUT, and the release's DELETE).
    let (probe, lease) = if server.conditional_writes {
        (6, 0)
    } else {
        (5, 2)
    };
    // The LIST of `_meta/.pqsync/`: other runs' announced deletions (and,
    // under a lease, their leases).
    let announced = 1;
    assert_eq!(
        v["requests"],
        (total + 2 + probe + lease + announced) as u64
    );

    // One new file: the manifest's GET, the LIST of `_meta/`, the file's
    // and the manifest's PUTs; where conditional writes are not enforced,
    // also the lease object's PUT and DELETE (6 in all).
    std::fs::write(db.path().join("notes.txt"), b"one change").unwrap();
    age(&db.path().join("notes.txt"));
    let v = json_of(
        &pqsync(Some(&server))
            .args(["push", &url, "--json", "-d"])
            .arg(db.path())
            .stdout_ok(),
    );
    assert_eq!(paths(&v["uploaded"]), vec!["notes.txt"]);
    assert_eq!(v["requests"], 4 + lease as u64, "{v}");
    std::fs::remove_file(db.path().join("notes.txt")).unwrap();
    pqsync(Some(&server))
        .args(["push", &url, "-d"])
        .arg(db.path())
        .stdout_ok();

    // Change one, add one, delete one.
    let changed = "indexes/bloom/users.bloom";
    let added = "data/tags/data.parquet";
    let removed = "events/seg-0001.parquet";
    let mut bytes = std::fs::read(db.path().join(changed)).unwrap();
    bytes.extend_from_slice(b"more bits");
    std::fs::write(db.path().join(changed), bytes).unwrap();
    std::fs::create_dir_all(db.path().join("data/tags")).unwrap();
    std::fs::copy(
        db.path().join("data/users/data.parquet"),
        db.path().join(added),
    )
    .unwrap();
    std::fs::remove_file(db.path().join(removed)).unwrap();
    age(&db.path().join(changed));
    age(&db.path().join(added));

    // status (remote defaults to the one last used) shows exactly those three.
    let before = server.request_count();
    let out = pqsync(Some(&server))
        .args(["status", "--json", "-d"])
        .arg(db.path())
        .stdout_ok();
    let st = json_of(&out);
    assert_eq!(st["isSynced"], false);
    assert_eq!(paths(&st["diff"]["toUpload"]), vec![added, changed]);
    assert_eq!(paths(&st["diff"]["deletedLocally"]), vec![removed]);
    assert!(st["diff"]["toDownload"].as_array().unwrap().is_empty());
    assert!(st["diff"]["conflicts"].as_array().unwrap().is_empty());
    assert_eq!(st["diff"]["unchanged"].as_array().unwrap().len(), total - 2);
    if server.is_in_process() {
        assert_eq!(server.request_count() - before, 1, "status is one GET");
    }
    pqsync(Some(&server))
        .args(["status", "--exit-code", "-d"])
        .arg(db.path())
        .assert()
        .code(1);

    // push moves exactly those three.
    let before = server.request_count();
    let out = pqsync(Some(&server))
        .args(["push", "--json", "-d"])
        .arg(db.path())
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(paths(&v["uploaded"]), vec![added, changed]);
    assert_eq!(paths(&v["deleted"]), vec![removed]);
    // GET manifest + 2 PUTs + manifest PUT, then the guarded delete: the
    // manifest read again, a HEAD of the object, 1 bulk delete (+ the lease);
    // the trash: a COPY of the overwritten and of the deleted object, and a
    // LIST for its expired runs; the deletion's announcement, PUT and DELETE,
    // and the LIST of other runs' announcements.
    assert_eq!(v["requests"], 13 + lease);
    let kept: Vec<&str> = v["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["path"].as_str().unwrap())
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        kept.contains(&changed) && kept.contains(&removed),
        "{kept:?}"
    );
    if server.is_in_process() {
        let seen = server.request_count() - before;
        assert!(
            seen <= 3 + 10,
            "push made {seen} requests for 3 changed files"
        );
    }

    // An unchanged tree: status makes one request, reads nothing.
    let before = server.request_count();
    let out = pqsync(Some(&server))
        .args(["status", "--json", "--exit-code", "-d"])
        .arg(db.path())
        .stdout_ok();
    let st = json_of(&out);
    assert_eq!(st["isSynced"], true);
    assert_eq!(st["requests"], 1);
    assert_eq!(st["filesHashed"], 0);
    if server.is_in_process() {
        assert!(server.request_count() - before <= 2);
    }

    // A second push moves nothing and writes nothing.
    let out = pqsync(Some(&server))
        .args(["push", "--json", "-d"])
        .arg(db.path())
        .stdout_ok();
    let v = json_of(&out);
    assert!(v["uploaded"].as_array().unwrap().is_empty());
    assert_eq!(v["requests"], 1);
    assert_eq!(v["bytesTransferred"], 0);

    // Pull into an empty directory: byte-identical.
    let restored = tempfile::tempdir().unwrap();
    let target = restored.path().join("restored");
    pqsync(Some(&server))
        .args(["pull", &url, "-d"])
        .arg(&target)
        .assert()
        .success();
    assert_eq!(tree_files(db.path()), tree_files(&target));
    // The restored copy carries a manifest ParqueDB can read.
    let m: Value =
        serde_json::from_slice(&std::fs::read(target.join("_meta/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["version"], 1);
    assert_eq!(m["files"].as_object().unwrap().len(), total);
}

/// Two clones of one remote change the same file: `manual` lists the
/// conflict, keeps both copies and exits 3; nothing is overwritten silently.
#[test]
fn conflict_between_two_clones() {
    let server = S3Server::start();
    let url = server.unique_url("conflict");
    let a = sample_copy();
    pqsync(Some(&server))
        .args(["push", &url, "-d"])
        .arg(a.path())
        .assert()
        .success();
    let b = tempfile::tempdir().unwrap();
    pqsync(Some(&server))
        .args(["pull", &url, "-d"])
        .arg(b.path())
        .assert()
        .success();

    std::fs::write(a.path().join("_meta/schema.json"), b"{\"from\":\"A\"}").unwrap();
    std::fs::write(b.path().join("_meta/schema.json"), b"{\"from\":\"B\"}").unwrap();
    pqsync(Some(&server))
        .args(["push", "-d"])
        .arg(a.path())
        .assert()
        .success();

    let out = pqsync(Some(&server))
        .args(["sync", "--strategy", "manual", "--json", "-d"])
        .arg(b.path())
        .stdout_with(3);
    let v = json_of(&out);
    assert_eq!(paths(&v["conflictsPending"]), vec!["_meta/schema.json"]);
    let c = &v["conflictsPending"][0];
    assert!(c["local"].is_object() && c["remote"].is_object());
    assert!(["keep-local", "keep-remote", "manual"]
        .contains(&c["suggestedResolution"].as_str().unwrap()));
    assert_eq!(
        std::fs::read(b.path().join("_meta/schema.json")).unwrap(),
        b"{\"from\":\"B\"}"
    );

    // Human output names the conflict too.
    let out = pqsync(Some(&server))
        .args(["push", "--strategy", "manual", "-d"])
        .arg(b.path())
        .stdout_with(3);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("conflict left unresolved: _meta/schema.json"),
        "{text}"
    );

    // The remote still has A's version.
    let check = tempfile::tempdir().unwrap();
    pqsync(Some(&server))
        .args(["pull", &url, "-d"])
        .arg(check.path())
        .assert()
        .success();
    assert_eq!(
        std::fs::read(check.path().join("_meta/schema.json")).unwrap(),
        b"{\"from\":\"A\"}"
    );

    // Status reports it with ParqueDB's fields.
    let out = pqsync(Some(&server))
        .args(["status", "--json", "-d"])
        .arg(b.path())
        .stdout_ok();
    assert_eq!(
        paths(&json_of(&out)["diff"]["conflicts"]),
        vec!["_meta/schema.json"]
    );
}

/// `--dry-run` prints the plan with its request count and moves nothing.
#[test]
fn dry_run_prints_plan_and_transfers_nothing() {
    let server = S3Server::start();
    let url = server.unique_url("dry");
    let db = sample_copy();
    let total = file_count(db.path());
    let before = server.request_count();
    let out = pqsync(Some(&server))
        .args(["push", &url, "--dry-run", "-d"])
        .arg(db.path())
        .stdout_ok();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("dry run: nothing transferred"), "{text}");
    assert!(
        text.contains(&format!("would upload {total} file(s)")),
        "{text}"
    );
    // GET manifest, a PUT per file, manifest PUT, the LIST of other runs'
    // announced deletions, and the one-time probe of the remote's
    // conditional writes (6).
    assert!(
        text.contains(&format!("{} in all", total + 3 + 6)),
        "{text}"
    );
    if server.is_in_process() {
        assert_eq!(server.request_count() - before, 1, "only the manifest GET");
    }
    let out = pqsync(Some(&server))
        .args(["push", &url, "--dry-run", "--json", "-d"])
        .arg(db.path())
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(v["dryRun"], true);
    assert_eq!(v["toUpload"].as_array().unwrap().len(), total);
    assert_eq!(v["requests"], (total + 3 + 6) as u64);
    // Still nothing there.
    let empty = tempfile::tempdir().unwrap();
    let out = pqsync(Some(&server))
        .args(["pull", &url, "-d"])
        .arg(empty.path())
        .stderr_with(1);
    assert!(String::from_utf8_lossy(&out).contains("not managed by pqsync"));
}

#[test]
fn usage_errors_exit_2() {
    let db = sample_copy();
    pqsync(None)
        .args(["push", "--no-such-flag"])
        .assert()
        .code(2);
    pqsync(None)
        .args(["push", "ftp://x/y", "-d"])
        .arg(db.path())
        .assert()
        .code(2);
    let out = pqsync(None)
        .args(["push", "-d"])
        .arg(db.path())
        .stderr_with(2);
    assert!(String::from_utf8_lossy(&out).contains("no REMOTE given"));
    pqsync(None)
        .args(["push", "/tmp/x", "--strategy", "bogus"])
        .assert()
        .code(2);
}

/// A local-directory remote, the remembered default remote, and
/// `pqsync remote`.
#[test]
fn directory_remote_and_remembered_default() {
    let db = sample_copy();
    let remote_parent = tempfile::tempdir().unwrap();
    let remote = remote_parent.path().join("backup");
    pqsync(None)
        .arg("push")
        .arg(&remote)
        .arg("-d")
        .arg(db.path())
        .assert()
        .success();
    let out = pqsync(None)
        .args(["remote", "-d"])
        .arg(db.path())
        .stdout_ok();
    assert_eq!(
        String::from_utf8_lossy(&out).trim(),
        format!("file://{}", remote.display())
    );
    // The remote directory is a plain copy of the database.
    let mut remote_files = tree_files(&remote);
    remote_files.remove("_meta/manifest.json");
    assert_eq!(remote_files, tree_files(db.path()));
    assert!(remote.join("_meta/manifest.json").exists());

    std::fs::write(
        db.path().join("events/current.parquet"),
        b"rewritten active log",
    )
    .unwrap();
    let out = pqsync(None).args(["push", "-d"]).arg(db.path()).stdout_ok();
    assert!(
        String::from_utf8_lossy(&out).contains("1 uploaded"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(
        std::fs::read(remote.join("events/current.parquet")).unwrap(),
        b"rewritten active log"
    );

    let fresh = tempfile::tempdir().unwrap();
    pqsync(None)
        .args(["remote", "-d"])
        .arg(fresh.path())
        .assert()
        .code(1);
}

/// A corrupt remote manifest exits 1 with a message naming the manifest,
/// and the local tree is untouched.
#[test]
fn corrupt_remote_manifest_exits_1() {
    let remote = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(remote.path().join("_meta")).unwrap();
    std::fs::write(
        remote.path().join("_meta/manifest.json"),
        b"{\"version\": 1, \"fil",
    )
    .unwrap();
    let db = sample_copy();
    let before = tree_files(db.path());
    for cmd in ["pull", "push", "status"] {
        let out = pqsync(None)
            .arg(cmd)
            .arg(remote.path())
            .arg("-d")
            .arg(db.path())
            .stderr_with(1);
        let err = String::from_utf8_lossy(&out);
        assert!(err.contains("manifest"), "{cmd}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    }
    assert_eq!(tree_files(db.path()), before);
}

/// A manifest written by ParqueDB (sha256) is read, verified and kept in
/// sha256; nothing needs to move when the files match.
#[test]
fn reads_parquedb_sha256_manifest() {
    let remote = tempfile::tempdir().unwrap();
    copy_dir(&sample_db(), remote.path());
    std::fs::create_dir_all(remote.path().join("_meta")).unwrap();
    std::fs::copy(
        fixture("parquedb-manifest.json"),
        remote.path().join("_meta/manifest.json"),
    )
    .unwrap();

    let out_dir = tempfile::tempdir().unwrap();
    let out = pqsync(None)
        .arg("pull")
        .arg(remote.path())
        .arg("-d")
        .arg(out_dir.path())
        .arg("--json")
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(
        v["downloaded"].as_array().unwrap().len(),
        file_count(&sample_db())
    );
    assert_eq!(tree_files(out_dir.path()), tree_files(&sample_db()));
    let m: Value =
        serde_json::from_slice(&std::fs::read(out_dir.path().join("_meta/manifest.json")).unwrap())
            .unwrap();
    for (_, e) in m["files"].as_object().unwrap() {
        assert_eq!(e["hashAlgorithm"], "sha256");
    }
    let out = pqsync(None)
        .args(["status", "--json", "-d"])
        .arg(out_dir.path())
        .stdout_ok();
    assert_eq!(json_of(&out)["isSynced"], true);
}

/// `mirror` copies a managed prefix between two remotes (here two prefixes
/// of one bucket on the S3 server, copied by the server itself, then S3 to
/// a directory).
#[test]
fn mirror_between_remotes() {
    let server = S3Server::start();
    let src = server.unique_url("mirror-src");
    let dst = server.unique_url("mirror-dst");
    let db = sample_copy();
    pqsync(Some(&server))
        .args(["push", &src, "-d"])
        .arg(db.path())
        .assert()
        .success();
    let before = server.log.as_ref().map_or(0, |l| l.entries().len());
    let out = pqsync(Some(&server))
        .args(["mirror", &src, &dst, "--json"])
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(
        v["uploaded"].as_array().unwrap().len(),
        file_count(db.path())
    );
    // Within one bucket no byte of a file passes through pqsync: the
    // server copies each object (a PUT without a body).
    assert_eq!(v["bytesTransferred"], 0, "{v}");
    if let Some(log) = &server.log {
        let dst_prefix = format!("PUT /{}", dst.trim_start_matches("s3://"));
        let copies: Vec<_> = log.entries()[before..]
            .iter()
            .filter(|(l, _)| l.starts_with(&dst_prefix) && !l.contains("/_meta/"))
            .cloned()
            .collect();
        assert_eq!(copies.len(), file_count(db.path()) - 1, "{copies:?}");
        assert!(copies.iter().all(|(_, bytes)| *bytes == 0), "{copies:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    pqsync(Some(&server))
        .args(["mirror", &dst])
        .arg(dir.path())
        .assert()
        .success();
    let mut mirrored = tree_files(dir.path());
    mirrored.remove("_meta/manifest.json");
    assert_eq!(mirrored, tree_files(db.path()));
    // Nothing to do the second time.
    let out = pqsync(Some(&server))
        .args(["mirror", &src, &dst, "--json"])
        .stdout_ok();
    let v = json_of(&out);
    assert!(v["uploaded"].as_array().unwrap().is_empty());
    assert_eq!(v["requests"], 2);
}

/// `--max-delete` stops a mass deletion (exit 1, nothing deleted, other
/// changes still pushed); `--backup-dir` keeps what is overwritten and
/// deleted there, one folder per run.
#[test]
fn safety_flags() {
    let db = sample_copy();
    let parent = tempfile::tempdir().unwrap();
    let remote = parent.path().join("remote");
    pqsync(None)
        .arg("push")
        .arg(&remote)
        .arg("-d")
        .arg(db.path())
        .assert()
        .success();
    let all: Vec<String> = tree_files(db.path()).into_keys().collect();
    for p in all.iter().filter(|p| {
        p.starts_with("snapshots/") || p.starts_with("indexes/") || p.starts_with("rels/")
    }) {
        std::fs::remove_file(db.path().join(p)).unwrap();
    }
    std::fs::write(db.path().join("events/current.parquet"), b"new active log").unwrap();
    let out = pqsync(None)
        .args(["push", "--json", "-d"])
        .arg(db.path())
        .stdout_with(1);
    let v = json_of(&out);
    assert_eq!(paths(&v["uploaded"]), vec!["events/current.parquet"]);
    assert!(v["deleted"].as_array().unwrap().is_empty());
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("refusing to delete 18 of 27"), "{msg}");
    assert!(remote.join("indexes/bloom/users.bloom").exists());

    std::fs::write(db.path().join("_meta/schema.json"), b"{}").unwrap();
    pqsync(None)
        .args(["push", "--max-delete", "100%", "--backup-dir", "bk", "-d"])
        .arg(db.path())
        .assert()
        .success();
    assert!(!remote.join("indexes/bloom/users.bloom").exists());
    // One run folder under bk/, holding what the run replaced.
    let runs: Vec<_> = std::fs::read_dir(remote.join("bk"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let run = &runs[0];
    assert!(
        run.join("indexes/bloom/users.bloom").exists(),
        "deleted file kept in the backup dir"
    );
    // The first push's overwrite went to the default trash; this run's
    // versions went only to bk/.
    let default_runs: Vec<_> = std::fs::read_dir(remote.join("_meta/.pqsync/trash"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(default_runs.len(), 1, "{default_runs:?}");
    assert!(default_runs[0].join("events/current.parquet").exists());
    assert!(
        !default_runs[0].join("_meta/schema.json").exists(),
        "--backup-dir replaces the default trash"
    );
    assert_eq!(
        std::fs::read(run.join("_meta/schema.json")).unwrap(),
        std::fs::read(sample_db().join("_meta/schema.json")).unwrap(),
        "overwritten file kept in the backup dir"
    );
    pqsync(None)
        .args(["push", "--max-delete", "lots", "-d"])
        .arg(db.path())
        .assert()
        .code(2);
}

/// Two pushes from different directories into one remote at the same
/// moment: every file a successful push reports is in the final manifest.
#[test]
fn simultaneous_pushes_lose_nothing() {
    let server = S3Server::start();
    let url = server.unique_url("simultaneous");
    let base = sample_copy();
    pqsync(Some(&server))
        .args(["push", &url, "-d"])
        .arg(base.path())
        .assert()
        .success();
    let mut dirs = Vec::new();
    for who in ["a", "b"] {
        let d = tempfile::tempdir().unwrap();
        pqsync(Some(&server))
            .args(["pull", &url, "-d"])
            .arg(d.path())
            .assert()
            .success();
        for i in 0..20 {
            let p = d.path().join(format!("data/{who}/part-{i:03}.parquet"));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("{who} {i}")).unwrap();
            age(&p);
        }
        dirs.push(d);
    }
    let children: Vec<_> = dirs
        .iter()
        .map(|d| {
            binary(Some(&server))
                .args(["--no-progress", "--json", "push", "-d"])
                .arg(d.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outputs: Vec<_> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let check = tempfile::tempdir().unwrap();
    pqsync(Some(&server))
        .args(["pull", &url, "-d"])
        .arg(check.path())
        .assert()
        .success();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(check.path().join("_meta/manifest.json")).unwrap())
            .unwrap();
    let listed = manifest["files"].as_object().unwrap();
    let mut successes = 0;
    for out in &outputs {
        if out.status.success() {
            successes += 1;
            let v = json_of(&out.stdout);
            for p in paths(&v["uploaded"]) {
                assert!(
                    listed.contains_key(&p),
                    "{p} was reported pushed but is not in the manifest"
                );
            }
        } else {
            // The loser of a lease says why, in one line.
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("being written by") || err.contains("remote changed"),
                "{err}"
            );
        }
    }
    assert!(successes >= 1);
    if server.conditional_writes {
        assert_eq!(successes, 2, "with compare-and-swap both pushes merge");
        assert_eq!(listed.len(), file_count(base.path()) + 40);
    }
}

/// `--namespaces`, `--include` and `--exclude` limit what moves; a
/// selective pull never deletes files outside its selection.
#[test]
fn selective_transfer() {
    let server = S3Server::start();
    let url = server.unique_url("selective");
    let db = sample_copy();
    pqsync(Some(&server))
        .args(["push", &url, "-d"])
        .arg(db.path())
        .assert()
        .success();

    let posts = tempfile::tempdir().unwrap();
    let out = pqsync(Some(&server))
        .args(["pull", &url, "--namespaces", "posts", "--json", "-d"])
        .arg(posts.path())
        .stdout_ok();
    assert_eq!(
        paths(&json_of(&out)["downloaded"]),
        vec![
            "data/posts/data.parquet",
            "indexes/bloom/posts.bloom",
            "indexes/secondary/posts.name.idx.parquet",
            "rels/forward/posts.parquet",
            "rels/reverse/posts.parquet",
        ]
    );

    // A full clone; then the remote loses users' files and gains a new
    // posts file. A pull of posts only fetches the new file and keeps users.
    let clone = tempfile::tempdir().unwrap();
    pqsync(Some(&server))
        .args(["pull", &url, "-d"])
        .arg(clone.path())
        .assert()
        .success();
    std::fs::remove_file(db.path().join("data/users/data.parquet")).unwrap();
    std::fs::write(db.path().join("data/posts/data.0001.parquet"), b"new shard").unwrap();
    age(&db.path().join("data/posts/data.0001.parquet"));
    pqsync(Some(&server))
        .args(["push", "-d"])
        .arg(db.path())
        .assert()
        .success();
    let out = pqsync(Some(&server))
        .args(["pull", "--namespaces", "posts", "--json", "-d"])
        .arg(clone.path())
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(
        paths(&v["downloaded"]),
        vec!["data/posts/data.0001.parquet"]
    );
    assert!(v["deleted"].as_array().unwrap().is_empty());
    assert!(
        clone.path().join("data/users/data.parquet").exists(),
        "outside the selection: kept"
    );
    // Without the selection the deletion does arrive.
    let out = pqsync(Some(&server))
        .args(["pull", "--json", "-d"])
        .arg(clone.path())
        .stdout_ok();
    assert_eq!(
        paths(&json_of(&out)["deleted"]),
        vec!["data/users/data.parquet"]
    );

    // Globs: push only the event log, never bloom filters.
    let url2 = server.unique_url("selective-globs");
    let out = pqsync(Some(&server))
        .args([
            "push",
            &url2,
            "--include",
            "events/**",
            "--include",
            "indexes/**",
            "--exclude",
            "**/*.bloom",
            "--json",
            "-d",
        ])
        .arg(db.path())
        .stdout_ok();
    let up = paths(&json_of(&out)["uploaded"]);
    assert!(
        up.iter()
            .all(|p| p.starts_with("events/") || p.starts_with("indexes/secondary/")),
        "{up:?}"
    );
    assert!(up.iter().any(|p| p.starts_with("events/")));
    pqsync(None)
        .args(["push", "/tmp/x", "--include", "[", "-d"])
        .arg(db.path())
        .assert()
        .code(2);
    pqsync(None)
        .args(["push", "/tmp/x", "--namespaces", "../etc", "-d"])
        .arg(db.path())
        .assert()
        .code(2);
}

/// `pqsync list` on a directory (a scan) and on a remote (its manifest),
/// as paths or JSON, with the selection flags.
#[test]
fn list_directory_and_remote() {
    let server = S3Server::start();
    let url = server.unique_url("list");
    let db = sample_copy();
    let expected: Vec<String> = tree_files(db.path()).into_keys().collect();
    let out = pqsync(None).arg("list").arg(db.path()).stdout_ok();
    let listed: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(listed, expected);

    pqsync(Some(&server))
        .args(["push", &url, "-d"])
        .arg(db.path())
        .assert()
        .success();
    let before = server.request_count();
    let out = pqsync(Some(&server))
        .args(["list", &url, "--format", "json", "--namespaces", "users"])
        .stdout_ok();
    if server.is_in_process() {
        assert_eq!(
            server.request_count() - before,
            1,
            "one GET of the manifest"
        );
    }
    let v = json_of(&out);
    let paths = paths(&v["files"]);
    assert_eq!(paths.len(), 5, "{paths:?}");
    assert!(paths.iter().all(|p| p.contains("users")));
    let first = &v["files"][0];
    assert!(first["hash"].is_string() && first["size"].is_u64());
    assert_eq!(v["count"], 5);
    assert!(v["warnings"].as_array().unwrap().is_empty());
    let empty = server.unique_url("list-empty");
    let err = pqsync(Some(&server)).args(["list", &empty]).stderr_with(1);
    assert!(String::from_utf8_lossy(&err).contains("not managed by pqsync"));
}

/// One identity on both sides, as ParqueDB writes one manifest to both: a
/// first push gives the local and the remote manifest the same
/// `databaseId` and `name`; a pull into a fresh directory takes the
/// remote's; an existing local manifest keeps its own.
#[test]
fn one_database_id_on_both_sides() {
    let parent = tempfile::tempdir().unwrap();
    let read = |p: &Path| -> Value {
        serde_json::from_slice(&std::fs::read(p.join("_meta/manifest.json")).unwrap()).unwrap()
    };
    let db = sample_copy();
    let remote = parent.path().join("remote");
    pqsync(None)
        .arg("push")
        .arg(&remote)
        .arg("-d")
        .arg(db.path())
        .stdout_ok();
    let (local, remote_m) = (read(db.path()), read(&remote));
    assert_eq!(local["databaseId"], remote_m["databaseId"]);
    assert_eq!(local["name"], remote_m["name"]);

    let fresh = parent.path().join("fresh");
    pqsync(None)
        .arg("pull")
        .arg(&remote)
        .arg("-d")
        .arg(&fresh)
        .stdout_ok();
    assert_eq!(read(&fresh)["databaseId"], remote_m["databaseId"]);

    // A database that already has a manifest keeps its identity, and a new
    // remote takes it.
    let other = sample_copy();
    pqsync(None)
        .args(["init", "-d"])
        .arg(other.path())
        .stdout_ok();
    let own = read(other.path())["databaseId"].clone();
    let remote2 = parent.path().join("remote2");
    pqsync(None)
        .arg("push")
        .arg(&remote2)
        .arg("-d")
        .arg(other.path())
        .stdout_ok();
    assert_eq!(read(other.path())["databaseId"], own);
    assert_eq!(read(&remote2)["databaseId"], own);
}
