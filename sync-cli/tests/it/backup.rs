//! The snapshot repository through the real binary, on a directory and on
//! S3, judged by what an independent client lists and reads (the
//! directory's files, boto3 and the server's backing directory) and by
//! what a restore writes, never by what pqsync reports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use pqsync_core::HashAlgorithm;
use serde_json::Value;

use crate::keys::{add_awkward, Seen};
use crate::lost::Remote;
use crate::{age, json_of, pqsync, sample_copy, tree_files, Output};

/// A snapshot record as stored: zstd-compressed JSON (the reference
/// zstd library decompresses it, not pqsync).
fn record_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(&zstd::decode_all(bytes).expect("a zstd frame")).unwrap()
}

fn sha(bytes: &[u8]) -> String {
    HashAlgorithm::Sha256.digest(bytes).to_string()
}

/// The repository's objects under `objects/`, by key.
fn objects(remote: &Remote) -> BTreeMap<String, Seen> {
    remote
        .independent()
        .into_iter()
        .filter(|(k, _)| k.starts_with("objects/"))
        .collect()
}

/// Where a record's entry keeps its content, as the format says: the
/// object it names (or the one named by its hash), and for a file kept in
/// a pack the byte range and whether it is a zstd frame.
fn place(e: &Value) -> (String, Option<(usize, usize, bool)>) {
    let hash = e["hash"].as_str().unwrap();
    let object = e
        .get("object")
        .and_then(Value::as_str)
        .map_or_else(|| format!("objects/{}/{hash}", &hash[..2]), str::to_string);
    let range = e.get("packOffset").map(|o| {
        (
            o.as_u64().unwrap() as usize,
            e["packLength"].as_u64().unwrap() as usize,
            e.get("compression").and_then(Value::as_str) == Some("zstd"),
        )
    });
    (object, range)
}

/// A file's content read out of the stored objects `all` by what its
/// entry says (the reference zstd library decompresses), or why not.
fn content_in(all: &BTreeMap<String, Vec<u8>>, e: &Value) -> Result<Vec<u8>, String> {
    if let Some(chunks) = e.get("chunks").and_then(Value::as_array) {
        // A chunked file: its chunks in order, each read like a packed
        // file and checked against its own BLAKE3.
        let mut out = Vec::new();
        for c in chunks {
            let bytes = content_in(all, c)?;
            if HashAlgorithm::Blake3.digest(&bytes).to_string() != c["hash"].as_str().unwrap() {
                return Err(format!("a chunk in {:?} is not its hash", place(c)));
            }
            out.extend_from_slice(&bytes);
        }
        return Ok(out);
    }
    let (object, range) = place(e);
    let bytes = all.get(&object).ok_or(format!("{object} is missing"))?;
    let zstd = e.get("compression").and_then(Value::as_str) == Some("zstd");
    match range {
        None if zstd => zstd::decode_all(&bytes[..]).map_err(|e| format!("{object}: {e}")),
        None => Ok(bytes.clone()),
        Some((at, len, zstd)) => {
            let slice = bytes
                .get(at..at + len)
                .ok_or(format!("{object} is shorter than {}", at + len))?;
            if zstd {
                zstd::decode_all(slice).map_err(|e| format!("{object}@{at}: {e}"))
            } else {
                Ok(slice.to_vec())
            }
        }
    }
}

/// Every snapshot's files, read independently out of the stored objects:
/// snapshot id → path → content.
fn restorable(remote: &Remote) -> BTreeMap<String, BTreeMap<String, Vec<u8>>> {
    let all = remote.objects();
    all.iter()
        .filter_map(|(k, b)| Some((k.strip_prefix("index/snapshots/")?.to_string(), b)))
        .map(|(id, b)| {
            let record = record_json(b);
            let files = record["manifest"]["files"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(p, e)| (p.clone(), content_in(&all, e).unwrap()))
                .collect();
            (id, files)
        })
        .collect()
}

/// The objects the snapshot records name, as listed and parsed
/// independently.
fn named_objects(remote: &Remote) -> BTreeSet<String> {
    let all = remote.objects();
    all.iter()
        .filter(|(k, _)| k.starts_with("index/snapshots/"))
        .flat_map(|(_, b)| {
            let record = record_json(b);
            record["manifest"]["files"]
                .as_object()
                .unwrap()
                .values()
                .map(|e| place(e).0)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The snapshot records' ids, as listed.
fn snapshot_ids(remote: &Remote) -> BTreeSet<String> {
    remote
        .independent()
        .into_keys()
        .filter_map(|k| k.strip_prefix("index/snapshots/").map(str::to_string))
        .collect()
}

fn backup(remote: &Remote, db: &Path, extra: &[&str]) -> Value {
    let out = pqsync(remote.server())
        .args(["backup", &remote.url(), "-d"])
        .arg(db)
        .args(extra)
        .arg("--json")
        .stdout_ok();
    let v = json_of(&out);
    assert_eq!(v["success"], true, "{v}");
    v
}

fn restore(remote: &Remote, spec: &str, dir: &Path, extra: &[&str]) -> Value {
    let repo = if spec.is_empty() {
        remote.url()
    } else {
        format!("{}:{spec}", remote.url())
    };
    json_of(
        &pqsync(remote.server())
            .args(["restore", &repo, "-d"])
            .arg(dir)
            .args(extra)
            .arg("--json")
            .stdout_ok(),
    )
}

#[test]
fn backups_deduplicate_and_restore_every_version() {
    for remote in Remote::each("backup") {
        let db = sample_copy();
        add_awkward(db.path());
        let v1 = tree_files(db.path());

        // First backup: every distinct content once, small files together
        // in packs, every object named by the hash of its bytes.
        let first = backup(&remote, db.path(), &["--tag", "daily"]);
        let id1 = first["snapshot"]["id"].as_str().unwrap().to_string();
        let stored = objects(&remote);
        let contents: BTreeSet<String> = v1.values().map(|b| sha(b)).collect();
        assert!(stored.keys().all(|k| k.matches('/').count() == 2));
        assert!(stored.len() < contents.len(), "small files share packs");
        for (k, b) in remote
            .objects()
            .iter()
            .filter(|(k, _)| k.starts_with("objects/"))
        {
            let h = HashAlgorithm::Blake3.digest(b).to_string();
            assert_eq!(k, &format!("objects/{}/{h}", &h[..2]));
        }
        assert_eq!(snapshot_ids(&remote), BTreeSet::from([id1.clone()]));
        assert_eq!(restorable(&remote)[&id1], v1, "read out of the objects");
        // The record, read independently, lists every path with its size.
        let record = record_json(&remote.raw(&format!("index/snapshots/{id1}")));
        let places: BTreeSet<(String, Option<usize>)> = record["manifest"]["files"]
            .as_object()
            .unwrap()
            .values()
            .map(|e| {
                let (o, r) = place(e);
                (o, r.map(|r| r.0))
            })
            .collect();
        assert_eq!(places.len(), contents.len(), "each content stored once");
        assert_eq!(record["tags"], serde_json::json!(["daily"]));
        let listed: BTreeMap<String, u64> = record["manifest"]["files"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(p, e)| (p.clone(), e["size"].as_u64().unwrap()))
            .collect();
        let local: BTreeMap<String, u64> = v1
            .iter()
            .map(|(p, b)| (p.clone(), b.len() as u64))
            .collect();
        assert_eq!(listed, local);
        assert_eq!(record["eventLog"]["lastSeq"], 3, "{}", record["eventLog"]);

        // Unchanged: a new snapshot, no content read or sent, 3 requests.
        let again = backup(&remote, db.path(), &[]);
        assert_eq!(again["result"]["uploaded"].as_array().unwrap().len(), 0);
        assert_eq!(again["result"]["filesHashed"], 0, "the stat cache answers");
        assert!(
            again["result"]["requests"].as_u64().unwrap() <= 3,
            "{}",
            again["result"]["requests"]
        );
        assert_eq!(objects(&remote), stored, "nothing new stored");
        assert_eq!(snapshot_ids(&remote).len(), 2);

        // Two changed files: one new pack, at most k + 3 requests.
        std::fs::write(db.path().join("_meta/schema.json"), b"{\"v\":2}").unwrap();
        std::fs::write(db.path().join("data/wéird/q?x.txt"), b"changed").unwrap();
        std::fs::remove_file(db.path().join("yarn.lock")).unwrap();
        let v2 = tree_files(db.path());
        let third = backup(&remote, db.path(), &[]);
        assert_eq!(third["result"]["uploaded"].as_array().unwrap().len(), 2);
        assert!(third["result"]["requests"].as_u64().unwrap() <= 2 + 3);
        let after = objects(&remote);
        assert_eq!(after.len(), stored.len() + 1);
        assert!(
            stored.iter().all(|(k, s)| after.get(k) == Some(s)),
            "no object was replaced"
        );

        // Every version comes back whole, by id prefix and as latest.
        let out = tempfile::tempdir().unwrap();
        restore(&remote, "", out.path(), &[]);
        assert_eq!(tree_files(out.path()), v2);
        restore(&remote, &id1[..8], out.path(), &[]);
        assert_eq!(tree_files(out.path()), v1);
        restore(&remote, "latest", out.path(), &[]);
        assert_eq!(tree_files(out.path()), v2);
        // The restored database has a manifest ParqueDB reads: every file
        // with its size and hash.
        let m: Value =
            serde_json::from_slice(&std::fs::read(out.path().join("_meta/manifest.json")).unwrap())
                .unwrap();
        assert_eq!(m["files"].as_object().unwrap().len(), v2.len());
        // The source database was left as it was: no manifest written.
        assert!(!db.path().join("_meta/manifest.json").exists());

        // diff names what changed between the first and the latest.
        let d = json_of(
            &pqsync(remote.server())
                .args(["diff", &remote.url(), &id1[..6], "latest", "--json"])
                .stdout_ok(),
        );
        assert_eq!(
            d["changed"],
            serde_json::json!(["_meta/schema.json", "data/wéird/q?x.txt"])
        );
        assert_eq!(d["removed"], serde_json::json!(["yarn.lock"]));
        assert_eq!(d["added"], serde_json::json!([]));

        // check reads every object back against its hash.
        let c = json_of(
            &pqsync(remote.server())
                .args(["check", &remote.url(), "--read-data", "--json"])
                .stdout_ok(),
        );
        assert_eq!(c["success"], true, "{c}");
        assert_eq!(c["report"]["read"], contents.len() + 2);

        // verify runs the guide's checks on a snapshot without restoring
        // it, and finds damage in the objects it reads.
        let v = json_of(
            &pqsync(remote.server())
                .args(["verify", &format!("{}:latest", remote.url()), "--json"])
                .stdout_ok(),
        );
        assert_eq!(v["passed"], true, "{v}");
        let latest = snapshot_ids(&remote)
            .into_iter()
            .find(|id| restorable(&remote)[id] == v2)
            .unwrap();
        let record = record_json(&remote.raw(&format!("index/snapshots/{latest}")));
        let (key, range) = place(&record["manifest"]["files"]["data/users/data.parquet"]);
        let users = remote.raw(&key);
        let at = range.map_or(100, |r| r.0 + r.1 / 2);
        let mut bad = users.clone();
        bad[at] ^= 0xff;
        remote.put(&key, &bad, None);
        let v = json_of(
            &pqsync(remote.server())
                .args(["verify", &remote.url(), "--at", "2030-01-01", "--json"])
                .stdout_with(1),
        );
        assert_eq!(v["passed"], false, "{v}");
        assert!(v.to_string().contains("data/users/data.parquet"), "{v}");
        let c = pqsync(remote.server())
            .args(["check", &remote.url(), "--read-data"])
            .stderr_with(1);
        let c = String::from_utf8_lossy(&c);
        assert!(c.contains(&key) && c.contains("damaged"), "{c}");
    }
}

/// Backs up `db` at `time` after writing `content` into `log.json`;
/// returns the snapshot id and the tree it holds.
fn backup_at(
    remote: &Remote,
    db: &Path,
    time: &str,
    content: &str,
) -> (String, BTreeMap<String, Vec<u8>>) {
    let p = db.join("log.json");
    std::fs::write(&p, content).unwrap();
    age(&p);
    let v = backup(remote, db, &["--time", time, "--grace", "3s"]);
    (
        v["snapshot"]["id"].as_str().unwrap().to_string(),
        tree_files(db),
    )
}

#[test]
fn retention_point_in_time_and_two_phase_prune() {
    for remote in Remote::each("retain") {
        let db = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(db.path().join("_meta")).unwrap();
        std::fs::write(db.path().join("_meta/schema.json"), b"{}").unwrap();
        // Ten daily backups, each with its own log.json.
        let mut versions = Vec::new();
        for day in 1..=10 {
            let t = format!("2026-01-{day:02}T02:00:00Z");
            versions.push((
                t.clone(),
                backup_at(&remote, db.path(), &t, &format!("day {day}")),
            ));
        }
        let list = json_of(
            &pqsync(remote.server())
                .args(["snapshots", &remote.url(), "--json"])
                .stdout_ok(),
        );
        assert_eq!(list["snapshots"].as_array().unwrap().len(), 10);

        // --at picks the newest at or before the time.
        let out = tempfile::tempdir().unwrap();
        let v = restore(&remote, "", out.path(), &["--at", "2026-01-04T12:00:00Z"]);
        assert_eq!(v["snapshot"]["id"], versions[3].1 .0.as_str());
        assert_eq!(tree_files(out.path()), versions[3].1 .1);
        // A date means the end of that day.
        restore(&remote, "", out.path(), &["--at", "2026-01-06"]);
        assert_eq!(tree_files(out.path()), versions[5].1 .1);
        // Before the oldest: an error naming it.
        let err = pqsync(remote.server())
            .args(["restore", &remote.url(), "-d"])
            .arg(out.path())
            .args(["--at", "2025-12-31T00:00:00Z"])
            .stderr_with(1);
        let err = String::from_utf8_lossy(&err);
        assert!(
            err.contains(&versions[0].1 .0[..8]) && err.contains("oldest"),
            "{err}"
        );
        // After the newest: the newest, and how far past it.
        let err = pqsync(remote.server())
            .args(["restore", &remote.url(), "-d"])
            .arg(out.path())
            .args(["--at", "2026-01-12T02:00:00Z"])
            .stderr_with(0);
        assert!(
            String::from_utf8_lossy(&err).contains("2d 0h after it"),
            "{}",
            String::from_utf8_lossy(&err)
        );
        assert_eq!(tree_files(out.path()), versions[9].1 .1);

        // forget --dry-run shows what stays and why, and removes nothing.
        let plan = json_of(
            &pqsync(remote.server())
                .args([
                    "forget",
                    &remote.url(),
                    "--keep-daily",
                    "3",
                    "--keep-weekly",
                    "2",
                    "--dry-run",
                    "--json",
                ])
                .stdout_ok(),
        );
        let kept: Vec<&str> = plan["groups"][0]["keep"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| &d["time"].as_str().unwrap()[..10])
            .collect();
        // Daily: Jan 10, 9, 8. Weekly: Jan 10 (2026-W02), Jan 4 (W01).
        assert_eq!(
            kept,
            ["2026-01-10", "2026-01-09", "2026-01-08", "2026-01-04"]
        );
        assert_eq!(snapshot_ids(&remote).len(), 10);

        let before = objects(&remote);
        pqsync(remote.server())
            .args([
                "forget",
                &remote.url(),
                "--keep-daily",
                "3",
                "--keep-weekly",
                "2",
            ])
            .stdout_ok();
        let left = snapshot_ids(&remote);
        assert_eq!(left.len(), 4);
        assert_eq!(objects(&remote), before, "forget deletes no content");

        // The first prune only marks; a prune within the grace period
        // deletes nothing; one after it deletes exactly the unreferenced.
        let p1 = json_of(
            &pqsync(remote.server())
                .args(["prune", &remote.url(), "--json"])
                .stdout_ok(),
        );
        // What the kept snapshots' records name, read independently; every
        // other object is unreferenced.
        let named = named_objects(&remote);
        let unnamed: BTreeSet<&String> = before.keys().filter(|k| !named.contains(*k)).collect();
        assert!(!unnamed.is_empty());
        assert_eq!(p1["marked"], unnamed.len(), "{p1}");
        assert_eq!(p1["deleted"], 0);
        assert_eq!(objects(&remote), before);
        std::thread::sleep(std::time::Duration::from_millis(3200));
        let p2 = json_of(
            &pqsync(remote.server())
                .args(["prune", &remote.url(), "--json"])
                .stdout_ok(),
        );
        assert_eq!(p2["deleted"], unnamed.len(), "{p2}");
        let held: BTreeSet<String> = objects(&remote).into_keys().collect();
        assert_eq!(held, named, "exactly the objects the kept snapshots name");
        let readable = restorable(&remote);
        for (_, (id, files)) in versions.iter().filter(|(_, (id, _))| left.contains(id)) {
            assert_eq!(&readable[id], files, "read out of the objects");
        }
        // Every kept snapshot restores whole.
        for (_, (id, files)) in versions.iter().filter(|(_, (id, _))| left.contains(id)) {
            let out = tempfile::tempdir().unwrap();
            restore(&remote, &id[..8], out.path(), &[]);
            assert_eq!(&tree_files(out.path()), files);
        }
        let c = json_of(
            &pqsync(remote.server())
                .args(["check", &remote.url(), "--read-data", "--json"])
                .stdout_ok(),
        );
        assert_eq!(c["report"]["problems"], serde_json::json!([]));
        // An empty policy is refused before anything is read.
        let err = pqsync(remote.server())
            .args(["forget", &remote.url()])
            .stderr_with(2);
        assert!(String::from_utf8_lossy(&err).contains("--keep-daily"));
    }
}

/// An append-only proxy in front of the S3 server (see
/// `testdata/independent/append_only_proxy.py`): credentials that can
/// create objects, never delete or replace one.
struct AppendOnly {
    child: std::process::Child,
    endpoint: String,
    log: tempfile::NamedTempFile,
}

impl AppendOnly {
    fn start(server: &pqsync_testdata::s3::S3Server) -> AppendOnly {
        use std::io::BufRead;
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/independent/append_only_proxy.py");
        let log = tempfile::NamedTempFile::new().unwrap();
        let mut child = std::process::Command::new("python3")
            .arg(script)
            .arg(log.path())
            .envs(server.env())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs (.ci/run installs boto3)");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port: u16 = line.trim().parse().expect("the proxy prints its port");
        AppendOnly {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    /// The requests it refused: (method, key, status).
    fn refused(&self) -> Vec<(String, String, u64)> {
        std::fs::read_to_string(self.log.path())
            .unwrap()
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).unwrap();
                (
                    v["method"].as_str().unwrap().to_string(),
                    v["key"].as_str().unwrap().to_string(),
                    v["status"].as_u64().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for AppendOnly {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn backups_need_only_permission_to_create() {
    let remote = Remote::s3("append-only");
    let server = remote.server().unwrap();
    let proxy = AppendOnly::start(server);
    let via = || {
        let mut c = pqsync(Some(server));
        c.env("AWS_ENDPOINT_URL", &proxy.endpoint);
        c
    };
    let backup_via = |db: &Path| {
        let v = json_of(
            &via()
                .args(["backup", &remote.url(), "-d"])
                .arg(db)
                .arg("--json")
                .stdout_ok(),
        );
        assert_eq!(v["success"], true, "{v}");
        v
    };
    let one = sample_copy();
    let two = sample_copy();
    backup_via(one.path());
    backup_via(one.path());
    std::fs::write(one.path().join("_meta/schema.json"), b"{\"v\":2}").unwrap();
    backup_via(one.path());
    let stored = objects(&remote);
    // A second database with the same content: every object is already
    // there, and "already exists" is success.
    let v = backup_via(two.path());
    assert_eq!(objects(&remote), stored, "nothing replaced, nothing added");
    assert_eq!(snapshot_ids(&remote).len(), 4);
    let refused = proxy.refused();
    assert!(
        refused
            .iter()
            .all(|(m, k, s)| m == "PUT" && k.contains("/objects/") && *s == 412),
        "a backup only ever creates: {refused:?}"
    );
    // Reading needs nothing more.
    let out = tempfile::tempdir().unwrap();
    let id = v["snapshot"]["id"].as_str().unwrap();
    via()
        .args(["restore", &format!("{}:{}", remote.url(), &id[..8]), "-d"])
        .arg(out.path())
        .stdout_ok();
    assert_eq!(tree_files(out.path()), tree_files(two.path()));
    // Forgetting needs delete permission: one line saying so, and nothing
    // is gone.
    let err = via()
        .args(["forget", &remote.url(), "--keep-last", "1"])
        .stderr_with(1);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("403") || err.contains("denied"), "{err}");
    assert_eq!(snapshot_ids(&remote).len(), 4);
    assert_eq!(objects(&remote), stored);
}

/// Checks that every snapshot in the repository names objects that are
/// there, whole, with the content hash their entries give; returns the
/// number of snapshots. Everything is read in one pass of the store's
/// listing (the directory's files, or an S3 client of the server), so the
/// many kill trials stay fast; the tests above judge with boto3.
fn assert_snapshots_whole(remote: &Remote, when: &str) -> usize {
    let all = remote.objects();
    let snaps: Vec<&String> = all
        .keys()
        .filter(|k| k.starts_with("index/snapshots/"))
        .collect();
    for key in &snaps {
        let record = record_json(&all[*key]);
        for (path, e) in record["manifest"]["files"].as_object().unwrap() {
            let hash = e["hash"].as_str().unwrap();
            let bytes = content_in(&all, e)
                .unwrap_or_else(|why| panic!("{when}: {key} names {path}, but {why}"));
            assert_eq!(
                bytes.len() as u64,
                e["size"].as_u64().unwrap(),
                "{when}: {path} in {:?} is incomplete",
                place(e)
            );
            assert_eq!(
                HashAlgorithm::Blake3.digest(&bytes).to_string(),
                hash,
                "{when}: {:?} does not hold {path}",
                place(e)
            );
        }
    }
    snaps.len()
}

/// Runs the binary and kills it (SIGKILL) after `delay`; returns whether it
/// was still running then.
fn run_and_kill(
    remote: &Remote,
    args: &[&str],
    db: Option<&Path>,
    delay: std::time::Duration,
) -> bool {
    let mut cmd = crate::binary(remote.server());
    cmd.arg("--no-progress").args(args);
    if let Some(db) = db {
        cmd.arg("-d").arg(db);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

fn trials() -> usize {
    std::env::var("PQSYNC_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6)
}

/// `kill -9` of backups at random moments: no snapshot ever names content
/// that is not whole, and the next backup completes and restores whole.
#[test]
fn kill_nine_during_backup() {
    use rand::{Rng, SeedableRng};
    let remote = Remote::s3("kb");
    let db = tempfile::tempdir().unwrap();
    pqsync_testdata::generate::generate(
        db.path(),
        &pqsync_testdata::generate::GenOptions {
            extra_files: 60,
            big_file_mib: 20,
            ..Default::default()
        },
    )
    .unwrap();
    for p in tree_files(db.path()).keys() {
        age(&db.path().join(p));
    }
    let server = remote.server().unwrap();
    let started = std::time::Instant::now();
    // Short prefixes: the in-process server names a multipart upload's
    // metadata file after the base64 of bucket and key, which must fit in
    // 255 bytes.
    pqsync(Some(server))
        .args(["backup", &server.unique_url("kbc"), "-d"])
        .arg(db.path())
        .stdout_ok();
    let full = started.elapsed();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261205);
    let mut mid_run = 0;
    for trial in 0..trials() {
        // Each trial changes one file, so the repository grows by a version.
        let p = db.path().join("_meta/schema.json");
        std::fs::write(&p, format!("{{\"trial\":{trial}}}")).unwrap();
        age(&p);
        let delay = full.mul_f64(rng.random_range(0.05..1.0));
        if run_and_kill(&remote, &["backup", &remote.url()], Some(db.path()), delay) {
            mid_run += 1;
        }
        assert_snapshots_whole(&remote, &format!("trial {trial}, after the kill"));
        backup(&remote, db.path(), &[]);
        assert_snapshots_whole(&remote, &format!("trial {trial}, after the rerun"));
    }
    let out = tempfile::tempdir().unwrap();
    restore(&remote, "latest", out.path(), &[]);
    assert_eq!(tree_files(out.path()), tree_files(db.path()));
    assert!(mid_run > 0, "some kills land mid-run");
}

/// `kill -9` of prunes at random moments, marking and deleting: every
/// kept snapshot stays whole, and the next prune finishes the job.
#[test]
fn kill_nine_during_prune() {
    use rand::{Rng, SeedableRng};
    let remote = Remote::s3("kill-prune");
    let db = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(db.path().join("data")).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for trial in 0..trials().min(4) {
        // Two backups of 40 fresh files each, the first forgotten.
        for round in 0..2 {
            for i in 0..40 {
                let p = db.path().join(format!("data/f{i}.json"));
                std::fs::write(&p, format!("{trial}-{round}-{i}")).unwrap();
                age(&p);
            }
            backup(&remote, db.path(), &["--grace", "3s"]);
        }
        pqsync(remote.server())
            .args(["forget", &remote.url(), "--keep-last", "1"])
            .stdout_ok();
        let started = std::time::Instant::now();
        pqsync(remote.server())
            .args(["prune", &remote.url()])
            .stdout_ok();
        let took = started.elapsed();
        std::thread::sleep(std::time::Duration::from_millis(3100));
        // The deleting prune, killed somewhere along the way.
        let delay = took.mul_f64(rng.random_range(0.05..1.5));
        run_and_kill(&remote, &["prune", &remote.url()], None, delay);
        assert_eq!(
            assert_snapshots_whole(&remote, &format!("trial {trial}, after the kill")),
            1
        );
        let c = json_of(
            &pqsync(remote.server())
                .args(["check", &remote.url(), "--json"])
                .stdout_ok(),
        );
        assert_eq!(c["report"]["problems"], serde_json::json!([]));
        // Finish: whatever the killed prune left marked goes once ripe.
        std::thread::sleep(std::time::Duration::from_millis(3100));
        pqsync(remote.server())
            .args(["prune", &remote.url()])
            .stdout_ok();
        std::thread::sleep(std::time::Duration::from_millis(3100));
        pqsync(remote.server())
            .args(["prune", &remote.url()])
            .stdout_ok();
        let held: BTreeSet<String> = objects(&remote).into_keys().collect();
        assert_eq!(
            held,
            named_objects(&remote),
            "trial {trial}: only what the kept snapshot names is left"
        );
        let readable = restorable(&remote);
        assert_eq!(readable.len(), 1);
        assert_eq!(
            readable.values().next().unwrap(),
            &tree_files(db.path()),
            "trial {trial}"
        );
    }
}

/// The guide's own form: `push --slug backups/20260201` writes a plain,
/// ParqueDB-readable copy under REMOTE/SLUG with the slug in its manifest,
/// and leaves the directory's remembered remote and manifest alone.
#[test]
fn push_slug_writes_a_readable_versioned_copy() {
    for remote in Remote::each("slug") {
        let db = sample_copy();
        let main = format!("{}/prod", remote.url());
        pqsync(remote.server())
            .args(["push", &main, "-d"])
            .arg(db.path())
            .stdout_ok();
        let manifest_before = std::fs::read(db.path().join("_meta/manifest.json")).unwrap();
        pqsync(remote.server())
            .args(["push", &remote.url(), "--slug", "backups/20260201", "-d"])
            .arg(db.path())
            .stdout_ok();
        let listed = remote.independent();
        let copy: BTreeMap<String, String> = listed
            .iter()
            .filter_map(|(k, s)| {
                Some((
                    k.strip_prefix("backups/20260201/")?.to_string(),
                    s.sha256.clone(),
                ))
            })
            .filter(|(k, _)| !k.starts_with("_meta/.pqsync/"))
            .collect();
        let mut want: BTreeMap<String, String> = tree_files(db.path())
            .iter()
            .map(|(p, b)| (p.clone(), sha(b)))
            .collect();
        let m: Value =
            serde_json::from_slice(&remote.raw("backups/20260201/_meta/manifest.json")).unwrap();
        want.insert(
            "_meta/manifest.json".into(),
            copy["_meta/manifest.json"].clone(),
        );
        assert_eq!(copy, want);
        assert_eq!(m["slug"], "backups/20260201");
        assert_eq!(m["files"].as_object().unwrap().len(), want.len() - 1);
        // The directory still syncs with its own remote.
        let out = pqsync(remote.server())
            .args(["remote", "-d"])
            .arg(db.path())
            .stdout_ok();
        assert!(
            String::from_utf8_lossy(&out).contains("/prod"),
            "{}",
            String::from_utf8_lossy(&out)
        );
        assert_eq!(
            std::fs::read(db.path().join("_meta/manifest.json")).unwrap(),
            manifest_before
        );
        // Anyone can pull the copy.
        let out = tempfile::tempdir().unwrap();
        pqsync(remote.server())
            .args(["pull", &format!("{}/backups/20260201", remote.url()), "-d"])
            .arg(out.path())
            .stdout_ok();
        assert_eq!(tree_files(out.path()), tree_files(db.path()));
        // A slug that climbs out is refused before any request.
        let err = pqsync(remote.server())
            .args(["push", &remote.url(), "--slug", "../elsewhere", "-d"])
            .arg(db.path())
            .stderr_with(2);
        assert!(String::from_utf8_lossy(&err).contains("slug"));
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(hay, needle).is_some()
}

/// An encrypted repository, read by an independent client: no stored byte
/// or key carries a file's content, its hash or its path; the wrong
/// password is one line; and a tampered, truncated or reordered object is
/// caught and named, and never written where a restored file belongs.
#[test]
fn encrypted_repositories_reveal_nothing_and_catch_damage() {
    for remote in Remote::each("enc") {
        let db = sample_copy();
        // Larger than the multipart threshold, so it streams sealed.
        let big: Vec<u8> = (0..17u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(db.path().join("data/big.parquet"), &big).unwrap();
        age(&db.path().join("data/big.parquet"));
        let with_pw = |pw: &str| {
            let mut c = pqsync(remote.server());
            c.env("PQSYNC_PASSWORD", pw);
            c
        };
        let v = json_of(
            &with_pw("s3cret")
                .args(["backup", &remote.url(), "--encrypt", "--json", "-d"])
                .arg(db.path())
                .stdout_ok(),
        );
        assert_eq!(v["success"], true, "{v}");
        std::fs::write(
            db.path().join("_meta/schema.json"),
            b"{\"version\":\"two\"}",
        )
        .unwrap();
        with_pw("s3cret")
            .args(["backup", &remote.url(), "-d"])
            .arg(db.path())
            .stdout_ok();
        let files = tree_files(db.path());

        // Nothing readable is stored.
        let stored = remote.objects();
        assert!(stored.keys().any(|k| k.starts_with("keys/")));
        for (key, bytes) in &stored {
            for (path, plain) in &files {
                for h in [HashAlgorithm::Blake3, HashAlgorithm::Sha256] {
                    let hex = h.digest(plain).to_string();
                    assert!(!key.contains(&hex), "{key} names the hash of {path}");
                    assert!(
                        !contains(bytes, hex.as_bytes()),
                        "{key} holds the hash of {path}"
                    );
                }
                assert!(
                    !contains(bytes, path.as_bytes()),
                    "{key} holds the path {path}"
                );
                if plain.len() >= 64 {
                    let mid = plain.len() / 2;
                    assert!(
                        !contains(bytes, &plain[mid..mid + 32]),
                        "{key} holds bytes of {path}"
                    );
                }
            }
        }

        // The wrong password, and none at all.
        let err = with_pw("wrong")
            .args(["snapshots", &remote.url()])
            .stderr_with(1);
        let err = String::from_utf8_lossy(&err);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("wrong password"), "{err}");
        let err = pqsync(remote.server())
            .args(["snapshots", &remote.url()])
            .stderr_with(2);
        assert!(String::from_utf8_lossy(&err).contains("PQSYNC_PASSWORD"));

        // A round trip.
        let out = tempfile::tempdir().unwrap();
        with_pw("s3cret")
            .args(["restore", &remote.url(), "-d"])
            .arg(out.path())
            .stdout_ok();
        assert_eq!(tree_files(out.path()), files);

        // Damage to the big object: each kind is caught by check and by a
        // restore, which names the object and writes nothing in its place.
        let (key, original) = stored
            .iter()
            .filter(|(k, _)| k.starts_with("objects/"))
            .max_by_key(|(_, b)| b.len())
            .map(|(k, b)| (k.clone(), b.clone()))
            .unwrap();
        const SEALED_CHUNK: usize = 64 * 1024 + 16;
        let mut tampered = original.clone();
        tampered[24 + 3 * SEALED_CHUNK + 100] ^= 1;
        let truncated = original[..24 + 5 * SEALED_CHUNK].to_vec();
        let mut swapped = original.clone();
        let (a, b) = (24 + SEALED_CHUNK, 24 + 2 * SEALED_CHUNK);
        swapped[a..b].copy_from_slice(&original[b..b + SEALED_CHUNK]);
        swapped[b..b + SEALED_CHUNK].copy_from_slice(&original[a..b]);
        for (what, bytes, expect) in [
            ("tampered", tampered, "chunk 3"),
            ("truncated", truncated, "truncated"),
            ("swapped", swapped, "chunk 1"),
        ] {
            remote.put(&key, &bytes, None);
            let err = with_pw("s3cret")
                .args(["check", &remote.url(), "--read-data"])
                .stderr_with(1);
            let err = String::from_utf8_lossy(&err);
            assert!(err.contains(&key), "{what}: {err}");
            let fresh = tempfile::tempdir().unwrap();
            let err = with_pw("s3cret")
                .args(["restore", &remote.url(), "-d"])
                .arg(fresh.path())
                .stderr_with(1);
            let err = String::from_utf8_lossy(&err);
            assert!(
                err.contains("data/big.parquet") && err.contains(expect),
                "{what}: {err}"
            );
            assert!(
                !fresh.path().join("data/big.parquet").exists(),
                "{what}: a partial file was left"
            );
            remote.put(&key, &original, None);
        }
    }
}

/// Passwords of an encrypted repository: init, add, list, change and
/// remove, each checked by which passwords then open it.
#[test]
fn keys_add_list_change_and_remove() {
    let remote = Remote::dir();
    let repo = remote.url();
    let run = |pw: &str, args: &[&str]| {
        let mut c = pqsync(None);
        c.env("PQSYNC_PASSWORD", pw).args(args);
        c
    };
    run("alpha", &["key", "init", &repo]).stdout_ok();
    let db = sample_copy();
    run(
        "alpha",
        &["backup", &repo, "-d", db.path().to_str().unwrap()],
    )
    .stdout_ok();
    run("alpha", &["key", "add", &repo])
        .env("PQSYNC_NEW_PASSWORD", "beta")
        .stdout_ok();
    let list = json_of(&run("beta", &["key", "list", &repo, "--json"]).stdout_ok());
    let keys = list["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(keys.iter().filter(|k| k["current"] == true).count(), 1);
    run("beta", &["snapshots", &repo]).stdout_ok();
    // Changing alpha to gamma: alpha no longer opens it.
    run("alpha", &["key", "passwd", &repo])
        .env("PQSYNC_NEW_PASSWORD", "gamma")
        .stdout_ok();
    let err = run("alpha", &["snapshots", &repo]).stderr_with(1);
    assert!(String::from_utf8_lossy(&err).contains("wrong password"));
    run("gamma", &["snapshots", &repo]).stdout_ok();
    // The key in use cannot be removed; another one can, and then beta
    // no longer opens it.
    let list = json_of(&run("gamma", &["key", "list", &repo, "--json"]).stdout_ok());
    let ids: Vec<(String, bool)> = list["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["id"].as_str().unwrap().to_string(), k["current"] == true))
        .collect();
    let current = ids.iter().find(|(_, c)| *c).unwrap().0.clone();
    let other = ids.iter().find(|(_, c)| !*c).unwrap().0.clone();
    run("gamma", &["key", "remove", &repo, &current[..8]]).stderr_with(1);
    run("gamma", &["key", "remove", &repo, &other[..8]]).stdout_ok();
    run("beta", &["snapshots", &repo]).stderr_with(1);
    // The only key left cannot go.
    run("gamma", &["key", "remove", &repo, &current[..8]]).stderr_with(2);
    let out = tempfile::tempdir().unwrap();
    run(
        "gamma",
        &["restore", &repo, "-d", out.path().to_str().unwrap()],
    )
    .stdout_ok();
    assert_eq!(tree_files(out.path()), tree_files(db.path()));
}

/// Bad repositories get one line naming the cause, and nothing is written
/// where a restored file belongs: a config from a newer format, a record
/// whose bytes do not match its id, a record naming a hostile path, and a
/// missing repository.
#[test]
fn bad_repositories_are_refused_in_one_line() {
    let remote = Remote::dir();
    let repo = remote.url();
    let db = sample_copy();
    let v = backup(&remote, db.path(), &[]);
    let id = v["snapshot"]["id"].as_str().unwrap().to_string();
    let one_line = |out: Vec<u8>, want: &str| {
        let err = String::from_utf8_lossy(&out).to_string();
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("pqsync: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{err}");
        assert!(errors[0].contains(want), "{err}");
    };

    let missing = format!("{repo}-nothing-here");
    one_line(
        pqsync(None).args(["snapshots", &missing]).stderr_with(1),
        "no snapshot repository here",
    );

    // A record altered in place: its bytes no longer hash to its id.
    let key = format!("index/snapshots/{id}");
    let record = remote.raw(&key);
    let mut altered = record.clone();
    let n = altered.len();
    altered[n / 2] ^= 1;
    remote.put(&key, &altered, None);
    // This machine cached the record when it wrote it (and the cache is
    // checked against the id too); another machine reads the altered one.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = || {
        let mut c = pqsync(None);
        c.env("PQSYNC_STATE_DIR", elsewhere.path());
        c
    };
    let out = tempfile::tempdir().unwrap();
    one_line(
        other()
            .args(["restore", &format!("{repo}:{}", &id[..8]), "-d"])
            .arg(out.path())
            .stderr_with(1),
        "do not match its id",
    );
    assert!(tree_files(out.path()).is_empty());

    // A well-formed record (written by hand) naming a path outside the
    // directory: refused before anything is written.
    let mut json = record_json(&record);
    let files = json["manifest"]["files"].as_object_mut().unwrap();
    let (_, first) = files
        .iter()
        .next()
        .map(|(k, v)| (k.clone(), v.clone()))
        .unwrap();
    let mut evil = first.clone();
    evil["path"] = "../escaped.json".into();
    files.insert("../escaped.json".into(), evil);
    let bytes = zstd::encode_all(&serde_json::to_vec(&json).unwrap()[..], 3).unwrap();
    let evil_id = HashAlgorithm::Blake3.digest(&bytes).to_string();
    remote.put(&key, &record, None);
    remote.put(&format!("index/snapshots/{evil_id}"), &bytes, None);
    let out = tempfile::tempdir().unwrap();
    let target = out.path().join("db");
    one_line(
        other()
            .args(["restore", &format!("{repo}:{}", &evil_id[..8]), "-d"])
            .arg(&target)
            .stderr_with(1),
        "../escaped.json",
    );
    assert!(!out.path().join("escaped.json").exists());
    assert!(!target.exists() || tree_files(&target).is_empty());

    // A repository inside the database, or a restore into the repository.
    let inside = db.path().join("backups");
    let err = pqsync(None)
        .args(["backup"])
        .arg(&inside)
        .arg("-d")
        .arg(db.path())
        .stderr_with(2);
    assert!(
        String::from_utf8_lossy(&err).contains("inside"),
        "{}",
        String::from_utf8_lossy(&err)
    );
    assert!(!inside.exists());
    let err = pqsync(None)
        .args(["restore", &repo, "-d"])
        .arg(std::path::Path::new(&repo).join("restored"))
        .stderr_with(2);
    assert!(String::from_utf8_lossy(&err).contains("inside"));

    // A config from a newer format.
    let config = remote.raw("config");
    let mut c: Value = serde_json::from_slice(&config).unwrap();
    c["pqsyncRepository"] = 2.into();
    remote.put("config", &serde_json::to_vec(&c).unwrap(), None);
    one_line(
        pqsync(None).args(["snapshots", &repo]).stderr_with(1),
        "upgrade pqsync",
    );
    remote.put("config", &config, None);
}

/// The repository wiped behind pqsync's back: the next backup makes a new
/// one and stores everything again, instead of trusting this machine's
/// caches and journal, and it restores whole.
#[test]
fn a_wiped_repository_is_made_again_in_full() {
    for remote in Remote::each("wiped") {
        let db = sample_copy();
        backup(&remote, db.path(), &[]);
        remote.wipe();
        let v = backup(&remote, db.path(), &[]);
        let files = tree_files(db.path());
        assert_eq!(
            v["result"]["uploaded"].as_array().unwrap().len(),
            files.len()
        );
        assert_eq!(v["parent"], Value::Null);
        assert_eq!(snapshot_ids(&remote).len(), 1);
        assert_eq!(assert_snapshots_whole(&remote, "after the wipe"), 1);
        let out = tempfile::tempdir().unwrap();
        restore(&remote, "latest", out.path(), &[]);
        assert_eq!(tree_files(out.path()), files);
    }
}

/// The local index of packed content names places in packs that a forget
/// and prune may delete later; a backup after that must not rely on it.
/// Content that only forgotten snapshots held is stored anew, and every
/// snapshot restores whole.
#[test]
fn content_of_forgotten_snapshots_is_stored_again() {
    for remote in Remote::each("reindex") {
        let db = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(db.path().join("_meta")).unwrap();
        std::fs::write(db.path().join("_meta/schema.json"), b"{}").unwrap();
        let write = |content: &str| {
            let p = db.path().join("a.json");
            std::fs::write(&p, content).unwrap();
            age(&p);
        };
        // Three versions of a.json, each alone in its pack; each backup
        // after the first misses its parent and so reads (and keeps) the
        // index of every snapshot.
        backup(&remote, db.path(), &["--grace", "3s"]);
        for content in ["one", "two", "three"] {
            write(content);
            backup(&remote, db.path(), &["--grace", "3s"]);
        }
        pqsync(remote.server())
            .args(["forget", &remote.url(), "--keep-last", "1"])
            .stdout_ok();
        pqsync(remote.server())
            .args(["prune", &remote.url()])
            .stdout_ok();
        std::thread::sleep(std::time::Duration::from_millis(3200));
        let p = json_of(
            &pqsync(remote.server())
                .args(["prune", &remote.url(), "--json"])
                .stdout_ok(),
        );
        assert_eq!(p["deleted"], 2, "{p}");
        // "one" is only in a deleted pack now.
        write("one");
        backup(&remote, db.path(), &[]);
        assert_eq!(assert_snapshots_whole(&remote, "after the prune"), 2);
        let out = tempfile::tempdir().unwrap();
        restore(&remote, "latest", out.path(), &[]);
        assert_eq!(tree_files(out.path()), tree_files(db.path()));
    }
}

/// A large file whose start compresses is kept compressed in its object (a
/// zstd frame the reference library reads); one that does not is kept as
/// it is. Both restore whole, and damage to the compressed one is named.
#[test]
fn large_files_that_compress_are_stored_compressed() {
    for remote in Remote::each("compress") {
        let db = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(db.path().join("data/logs")).unwrap();
        let text: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("row {i} of a table that repeats itself\n").into_bytes())
            .collect();
        // Above the multipart threshold (16 MiB): streamed in parts.
        let big: Vec<u8> = (0..480_000)
            .flat_map(|i| format!("entry {i} of a log that repeats itself\n").into_bytes())
            .collect();
        let noise: Vec<u8> = (0..3 << 20).map(|_| rand::random::<u8>()).collect();
        std::fs::write(db.path().join("data/logs/big.parquet"), &big).unwrap();
        std::fs::write(db.path().join("data/logs/text.parquet"), &text).unwrap();
        std::fs::write(db.path().join("data/logs/noise.parquet"), &noise).unwrap();
        let v = backup(&remote, db.path(), &[]);
        let id = v["snapshot"]["id"].as_str().unwrap().to_string();
        let record = record_json(&remote.raw(&format!("index/snapshots/{id}")));
        let files = &record["manifest"]["files"];
        let (text_key, _) = place(&files["data/logs/text.parquet"]);
        let (noise_key, _) = place(&files["data/logs/noise.parquet"]);
        let stored_text = remote.raw(&text_key);
        assert!(stored_text.len() * 4 < text.len(), "{}", stored_text.len());
        assert!(zstd::decode_all(&stored_text[..]).unwrap() == text);
        assert_eq!(
            files["data/logs/text.parquet"]["storedSize"],
            stored_text.len()
        );
        let (big_key, _) = place(&files["data/logs/big.parquet"]);
        let stored_big = remote.raw(&big_key);
        assert!(big.len() > 16 << 20 && stored_big.len() * 4 < big.len());
        assert!(zstd::decode_all(&stored_big[..]).unwrap() == big);
        assert!(remote.raw(&noise_key) == noise, "kept as it is");
        let shas = |files: &BTreeMap<String, Vec<u8>>| -> BTreeMap<String, String> {
            files.iter().map(|(p, b)| (p.clone(), sha(b))).collect()
        };
        assert_eq!(
            shas(&restorable(&remote)[&id]),
            shas(&tree_files(db.path()))
        );
        let out = tempfile::tempdir().unwrap();
        restore(&remote, "latest", out.path(), &[]);
        assert_eq!(shas(&tree_files(out.path())), shas(&tree_files(db.path())));
        let c = json_of(
            &pqsync(remote.server())
                .args(["check", &remote.url(), "--read-data", "--json"])
                .stdout_ok(),
        );
        assert_eq!(c["report"]["problems"], serde_json::json!([]), "{c}");
        // Another directory with the same content finds both objects
        // there, in their forms, and stores nothing.
        let twin = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(twin.path().join("data/logs")).unwrap();
        std::fs::write(twin.path().join("data/logs/text.parquet"), &text).unwrap();
        std::fs::write(twin.path().join("data/logs/big.parquet"), &big).unwrap();
        std::fs::write(twin.path().join("data/logs/noise.parquet"), &noise).unwrap();
        let before = objects(&remote);
        let again = backup(&remote, twin.path(), &[]);
        assert_eq!(again["parent"], Value::Null);
        // (A store that ignores create-only writes, like Garage, takes the
        // same bytes again under the same key: nothing new either way.)
        assert_eq!(objects(&remote), before, "nothing new, nothing replaced");
        let twin_id = again["snapshot"]["id"].as_str().unwrap();
        assert_eq!(
            shas(&restorable(&remote)[twin_id]),
            shas(&tree_files(twin.path()))
        );

        let mut bad = stored_text.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        remote.put(&text_key, &bad, None);
        let err = pqsync(remote.server())
            .args(["check", &remote.url(), "--read-data"])
            .stderr_with(1);
        let err = String::from_utf8_lossy(&err);
        assert!(err.contains(&text_key), "{err}");
        let fresh = tempfile::tempdir().unwrap();
        pqsync(remote.server())
            .args(["restore", &remote.url(), "-d"])
            .arg(fresh.path())
            .stderr_with(1);
        assert!(!fresh.path().join("data/logs/text.parquet").exists());
    }
}

/// ParqueDB's namespace data files are kept in content-defined chunks, so
/// a rewrite that keeps most of the file (rows added in the middle) stores
/// only the chunks around the change; both versions read whole out of the
/// objects and restore, and damage to a chunk is named.
#[test]
fn namespace_data_files_are_chunked_and_a_rewrite_stores_little() {
    use rand::{Rng, SeedableRng};
    for remote in Remote::each("chunks") {
        let db = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(db.path().join("data/users")).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let v1: Vec<u8> = (0..6 << 20).map(|_| rng.random::<u8>()).collect();
        let path = db.path().join("data/users/data.parquet");
        std::fs::write(&path, &v1).unwrap();
        age(&path);
        let first = backup(&remote, db.path(), &[]);
        let id1 = first["snapshot"]["id"].as_str().unwrap().to_string();
        let record = record_json(&remote.raw(&format!("index/snapshots/{id1}")));
        let chunks = record["manifest"]["files"]["data/users/data.parquet"]["chunks"]
            .as_array()
            .expect("a namespace data file is chunked")
            .len();
        assert!((8..=96).contains(&chunks), "{chunks} chunks");

        // 1% more rows in the middle of the file.
        let mut v2 = v1.clone();
        let insert: Vec<u8> = (0..60_000).map(|_| rng.random::<u8>()).collect();
        v2.splice(3 << 20..3 << 20, insert);
        std::fs::write(&path, &v2).unwrap();
        age(&path);
        let second = backup(&remote, db.path(), &[]);
        let added = second["snapshot"]["addedBytes"].as_u64().unwrap();
        assert!(
            added * 5 < v2.len() as u64,
            "stored {added} of {}",
            v2.len()
        );
        let id2 = second["snapshot"]["id"].as_str().unwrap().to_string();

        let readable = restorable(&remote);
        let sha_of = |id: &str| sha(&readable[id]["data/users/data.parquet"]);
        assert_eq!(sha_of(&id1), sha(&v1));
        assert_eq!(sha_of(&id2), sha(&v2));
        let out = tempfile::tempdir().unwrap();
        restore(&remote, &id1[..8], out.path(), &[]);
        assert!(std::fs::read(out.path().join("data/users/data.parquet")).unwrap() == v1);
        restore(&remote, "latest", out.path(), &[]);
        assert!(std::fs::read(out.path().join("data/users/data.parquet")).unwrap() == v2);
        let c = json_of(
            &pqsync(remote.server())
                .args(["check", &remote.url(), "--read-data", "--json"])
                .stdout_ok(),
        );
        assert_eq!(c["report"]["problems"], serde_json::json!([]), "{c}");

        // A flipped byte in the first chunk's stored bytes.
        let record = record_json(&remote.raw(&format!("index/snapshots/{id2}")));
        let chunk = &record["manifest"]["files"]["data/users/data.parquet"]["chunks"][0];
        let (key, range) = place(chunk);
        let (at, len, _) = range.unwrap();
        let mut bad = remote.raw(&key);
        bad[at + len / 2] ^= 0x20;
        remote.put(&key, &bad, None);
        let err = pqsync(remote.server())
            .args(["check", &remote.url(), "--read-data"])
            .stderr_with(1);
        let err = String::from_utf8_lossy(&err);
        assert!(err.contains(&key), "{err}");
        let fresh = tempfile::tempdir().unwrap();
        pqsync(remote.server())
            .args(["restore", &remote.url(), "-d"])
            .arg(fresh.path())
            .stderr_with(1);
        assert!(!fresh.path().join("data/users/data.parquet").exists());
    }
}

/// `backup --shard K/N` as four processes at once on a new repository (one
/// killed as it starts and run again), then `backup --merge-shards`: the
/// merge refuses while a part is missing, a prune in between keeps what the
/// parts stored, and the merge saves one snapshot of the union, which both
/// a restore and an independent read of the stored objects give back byte
/// for byte. A second split with an edit, an addition and a deletion saves
/// the next snapshot; the first still restores as it was. Names with
/// `# % ? + & ~ [ ]`, non-ASCII letters and a `.DS_Store` in every folder
/// go through like any other.
#[test]
fn sharded_backup_saves_one_snapshot_of_every_part() {
    for remote in Remote::each("backup-shards") {
        let url = remote.url();
        let srv = remote.server();
        let db = sample_copy();
        add_awkward(db.path());
        std::fs::create_dir_all(db.path().join("misc/café #%?+&~[]")).unwrap();
        std::fs::write(db.path().join("misc/café #%?+&~[]/naïve.txt"), "odd").unwrap();
        let dirs: Vec<_> = walkdir::WalkDir::new(db.path())
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_dir())
            .map(|e| e.path().to_path_buf())
            .collect();
        for d in dirs {
            std::fs::write(d.join(".DS_Store"), "finder").unwrap();
        }
        let shard = |k: u32| {
            let mut cmd = crate::binary(srv);
            cmd.args(["--no-progress", "backup", &url, "--json", "--shard"])
                .arg(format!("{k}/4"))
                .arg("-d")
                .arg(db.path());
            cmd
        };
        let shard_ok = |k: u32| {
            let out = shard(k).output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "shard {k}/4: {err}");
        };
        let merge = || {
            let mut cmd = pqsync(srv);
            cmd.args(["backup", &url, "--merge-shards", "--json"]);
            cmd
        };
        let parts = || -> Vec<String> {
            remote
                .independent()
                .into_keys()
                .filter(|k| k.starts_with("index/shards/"))
                .collect()
        };
        let err = String::from_utf8(merge().stderr_with(1)).unwrap();
        assert!(err.contains("no snapshot repository here"), "{err}");

        // Shards 0, 1 and 3 at once, and shard 2 killed as it starts.
        for (k, out) in crate::three_shards_one_killed(shard) {
            let v = json_of(&out);
            assert!(v["snapshot"].is_null(), "a shard saves no snapshot: {v}");
            for p in crate::paths(&v["result"]["uploaded"]) {
                assert_eq!(pqsync_core::Shard::of(&p, 4), k, "shard {k} sent {p}");
            }
        }
        if !parts().iter().any(|k| k.ends_with("/4/2")) {
            let err = String::from_utf8(merge().stderr_with(1)).unwrap();
            assert!(err.contains("2/4"), "{err}");
        }
        assert!(
            snapshot_ids(&remote).is_empty(),
            "no snapshot before the merge"
        );
        shard_ok(2);
        assert_eq!(parts().len(), 4, "{:?}", parts());

        // A prune between the shards and the merge marks nothing the
        // parts stored.
        let p = json_of(&pqsync(srv).args(["prune", &url, "--json"]).stdout_ok());
        assert_eq!(p["marked"], 0, "{p}");

        let v = json_of(&merge().stdout_ok());
        let first = v["snapshot"]["id"].as_str().unwrap().to_string();
        let want = tree_files(db.path());
        assert!(want.contains_key("data/wéird/.DS_Store"));
        assert!(
            parts().is_empty(),
            "the merge removes the parts: {:?}",
            parts()
        );
        assert_eq!(snapshot_ids(&remote), BTreeSet::from([first.clone()]));
        // ParqueDB skips the top-level .DS_Store; the rest is the snapshot.
        let mut snapshot_files = want.clone();
        snapshot_files.remove(".DS_Store");
        assert_eq!(restorable(&remote)[&first], snapshot_files);
        let out = tempfile::tempdir().unwrap();
        restore(&remote, "latest", out.path(), &[]);
        let mut restored = tree_files(out.path());
        restored.remove("_meta/manifest.json");
        assert_eq!(restored, snapshot_files);

        // The second split: an edit, an addition, a deletion.
        std::fs::write(
            db.path().join("misc/café #%?+&~[]/naïve.txt"),
            "odd, edited",
        )
        .unwrap();
        age(&db.path().join("misc/café #%?+&~[]/naïve.txt"));
        std::fs::write(db.path().join("misc/new [1].txt"), "new").unwrap();
        std::fs::remove_file(db.path().join("data/wéird/q?x.txt")).unwrap();
        for k in 0..4 {
            shard_ok(k);
        }
        let v = json_of(&merge().stdout_ok());
        let second = v["snapshot"]["id"].as_str().unwrap().to_string();
        assert_eq!(
            v["snapshot"]["parent"].as_str(),
            Some(first.as_str()),
            "{v}"
        );
        let mut now = tree_files(db.path());
        now.remove(".DS_Store");
        let readable = restorable(&remote);
        assert_eq!(readable[&second], now);
        assert_eq!(readable[&first], snapshot_files);
        let out = tempfile::tempdir().unwrap();
        restore(&remote, &first[..8], out.path(), &[]);
        let mut restored = tree_files(out.path());
        restored.remove("_meta/manifest.json");
        assert_eq!(restored, snapshot_files);
        let c = json_of(
            &pqsync(srv)
                .args(["check", &url, "--read-data", "--json"])
                .stdout_ok(),
        );
        assert_eq!(c["report"]["problems"], serde_json::json!([]));
    }
}

/// Two shards at once make a new encrypted repository; its parts are
/// sealed like snapshot records (no path in their bytes), and a merge later than three
/// quarters of the grace period after the first shard started is refused,
/// saving nothing: a prune may have deleted what the parts rely on. Shards
/// run again are merged.
#[test]
fn split_backup_parts_are_sealed_and_a_late_merge_is_refused() {
    for remote in Remote::each("backup-shards-late") {
        let url = remote.url();
        let db = sample_copy();
        let run = |args: &[&str]| {
            let mut cmd = pqsync(remote.server());
            cmd.env("PQSYNC_PASSWORD", "split secret").args(args);
            cmd
        };
        // Both shards at once: the first run makes the encrypted
        // repository, and the other waits for its key. A store without
        // conditional writes cannot tell two runs making it apart, so
        // there shard 0 makes it first, as the guide says.
        let at_once = remote.server().is_none_or(|s| s.conditional_writes);
        let shards = || {
            let spawn = |k: u32| {
                let mut cmd = crate::binary(remote.server());
                cmd.env("PQSYNC_PASSWORD", "split secret")
                    .args(["--no-progress", "backup", &url, "--encrypt"])
                    .args(["--grace", "4s", "--shard", &format!("{k}/2"), "-d"])
                    .arg(db.path())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            };
            let finish = |k: u32, child: std::process::Child| {
                let out = child.wait_with_output().unwrap();
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success(), "shard {k}/2: {err}");
            };
            let first = spawn(0);
            if !at_once {
                finish(0, first);
                finish(1, spawn(1));
                return;
            }
            let second = spawn(1);
            finish(0, first);
            finish(1, second);
        };
        shards();
        let all = remote.objects();
        let parts: Vec<&Vec<u8>> = all
            .iter()
            .filter(|(k, _)| k.starts_with("index/shards/"))
            .map(|(_, b)| b)
            .collect();
        assert_eq!(parts.len(), 2);
        let split_folders: BTreeSet<&str> = all
            .keys()
            .filter_map(|k| k.strip_prefix("index/shards/")?.split('/').next())
            .collect();
        assert_eq!(split_folders.len(), 1, "{split_folders:?}");
        for b in &parts {
            for name in ["data/users/data.parquet", "schema.json", "users"] {
                assert!(!contains(b, name.as_bytes()), "a part reveals {name}");
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(3200));
        let err = run(&["backup", &url, "--merge-shards"]).stderr_with(1);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.contains("grace period") && err.contains("run the shards again"),
            "{err}"
        );
        assert!(snapshot_ids(&remote).is_empty(), "nothing was saved");
        shards();
        let v = json_of(&run(&["backup", &url, "--merge-shards", "--json"]).stdout_ok());
        let id = v["snapshot"]["id"].as_str().unwrap();
        assert_eq!(snapshot_ids(&remote), BTreeSet::from([id.to_string()]));
        let out = tempfile::tempdir().unwrap();
        run(&["restore", &format!("{url}:{}", &id[..8]), "-d"])
            .arg(out.path())
            .assert()
            .success();
        let mut restored = tree_files(out.path());
        restored.remove("_meta/manifest.json");
        let mut want = tree_files(db.path());
        want.remove("_meta/manifest.json");
        assert_eq!(restored, want);
    }
}

/// Two databases split into one repository at the same time keep their
/// parts apart: one merge saves a snapshot of each, and each restores to
/// its own database. While one database's split is missing a shard, the
/// merge saves the other's and names the shard to run.
#[test]
fn splits_of_two_databases_into_one_repository_stay_apart() {
    for remote in Remote::each("backup-shards-two") {
        let url = remote.url();
        let srv = remote.server();
        let home = tempfile::tempdir().unwrap();
        let a = home.path().join("alpha");
        let b = home.path().join("beta");
        crate::copy_dir(&crate::sample_db(), &a);
        crate::copy_dir(&crate::sample_db(), &b);
        std::fs::write(a.join("misc-alpha.txt"), "only in alpha").unwrap();
        std::fs::write(b.join("data/users/data.parquet"), "beta's own users").unwrap();
        std::fs::remove_file(b.join("rels/forward/users.parquet")).unwrap();
        let shard = |db: &Path, k: u32| {
            pqsync(srv)
                .args(["backup", &url, "--shard", &format!("{k}/2"), "-d"])
                .arg(db)
                .assert()
                .success();
        };
        shard(&a, 0);
        shard(&b, 0);
        shard(&b, 1);
        let out = pqsync(srv)
            .args(["backup", &url, "--merge-shards", "--json"])
            .stdout_with(1);
        let v = json_of(&out);
        assert_eq!(v["snapshots"].as_array().unwrap().len(), 1, "{v}");
        assert_eq!(v["snapshots"][0]["database"], "beta", "{v}");
        let refused = v["refused"][0].as_str().unwrap();
        assert!(
            refused.contains("1/2") && refused.contains("alpha"),
            "{refused}"
        );
        shard(&a, 1);
        let v = json_of(
            &pqsync(srv)
                .args(["backup", &url, "--merge-shards", "--json"])
                .stdout_ok(),
        );
        assert_eq!(v["snapshots"][0]["database"], "alpha", "{v}");
        let readable = restorable(&remote);
        assert_eq!(readable.len(), 2);
        let mut want: Vec<BTreeMap<String, Vec<u8>>> = [&a, &b]
            .iter()
            .map(|d| {
                let mut f = tree_files(d);
                f.remove("_meta/manifest.json");
                f
            })
            .collect();
        want.sort();
        let mut got: Vec<BTreeMap<String, Vec<u8>>> = readable
            .into_values()
            .map(|mut f| {
                f.remove("_meta/manifest.json");
                f
            })
            .collect();
        got.sort();
        assert_eq!(got, want);
    }
}
