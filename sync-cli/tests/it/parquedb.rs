//! What ParqueDB's own engine sees of what pqsync writes: the same file
//! set, the same entries. Judged by an independent listing of the remote.

use crate::lost::Remote;
use pqsync_core::HashAlgorithm;

use crate::{age, pqsync, sample_copy, tree_files, Output};

/// pqsync syncs exactly the files ParqueDB syncs: ParqueDB's prefix rule
/// (`.git`, `.DS_Store`, `node_modules`, `_meta/locks` at the top, which
/// also covers `.github/`), nothing more. `.DS_Store` in a subfolder,
/// `yarn.lock` and `x.tmpl.parquet` are data to both tools.
#[test]
fn the_same_file_set_as_parquedb() {
    for remote in Remote::each("fileset") {
        let db = sample_copy();
        let put = |rel: &str| {
            let p = db.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("bytes of {rel}")).unwrap();
            age(&p);
        };
        let synced = [
            "data/.DS_Store",
            "data/users/.DS_Store",
            "yarn.lock",
            "data/part.tmpl.parquet",
            "data/users/data.parquet.tmp",
            "sub/.git/HEAD",
            "data/node_modules/x.js",
        ];
        let ignored = [
            ".DS_Store",
            ".git/HEAD",
            ".github/workflows/ci.yml",
            "node_modules/x/y.js",
            "_meta/locks/writer",
        ];
        for p in synced.iter().chain(&ignored) {
            put(p);
        }
        // A real Parquet file, so verify's footer check passes.
        let parquet = std::fs::read(db.path().join("data/users/data.parquet")).unwrap();
        std::fs::write(db.path().join("data/part.tmpl.parquet"), parquet).unwrap();
        age(&db.path().join("data/part.tmpl.parquet"));
        let url = remote.url();
        pqsync(remote.server())
            .args(["push", &url, "-d"])
            .arg(db.path())
            .stdout_ok();
        let objects = remote.objects();
        for p in synced {
            assert!(objects.contains_key(p), "{p} was not pushed");
        }
        for p in ignored {
            assert!(!objects.contains_key(p), "{p} was pushed");
        }
        let m = remote.manifest().unwrap();
        let listed: Vec<&String> = m["files"].as_object().unwrap().keys().collect();
        let mut expected: Vec<String> = objects
            .keys()
            .filter(|k| *k != "_meta/manifest.json")
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(listed, expected.iter().collect::<Vec<_>>());
        // A clone gets the same set back, and both sides agree.
        let clone = tempfile::tempdir().unwrap();
        pqsync(remote.server())
            .args(["pull", &url, "-d"])
            .arg(clone.path())
            .stdout_ok();
        let got = tree_files(clone.path());
        for p in synced {
            assert!(got.contains_key(p), "{p} was not pulled");
        }
        pqsync(remote.server())
            .args(["status", "--exit-code", "-d"])
            .arg(clone.path())
            .stdout_ok();
        pqsync(remote.server()).args(["verify", &url]).stdout_ok();
        // status says what it ignored, and -v lists it.
        let out = pqsync(remote.server())
            .args(["status", "-v", "-d"])
            .arg(db.path())
            .assert()
            .success()
            .get_output()
            .clone();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("5 path(s) ignored"), "{text}");
        let listed = String::from_utf8_lossy(&out.stderr);
        for p in [
            ".DS_Store",
            ".git/",
            ".github/",
            "_meta/locks/",
            "node_modules/",
        ] {
            assert!(listed.contains(&format!("ignored  {p}\n")), "{p}: {listed}");
        }
        let v: serde_json::Value = serde_json::from_slice(
            &pqsync(remote.server())
                .args(["status", "--json", "-d"])
                .arg(db.path())
                .stdout_ok(),
        )
        .unwrap();
        assert_eq!(
            v["ignored"],
            serde_json::json!([
                ".DS_Store",
                ".git/",
                ".github/",
                "_meta/locks/",
                "node_modules/"
            ])
        );
    }
}

/// A name ParqueDB's backend cannot read (`..` inside a component) is
/// pushed, with a warning that names it.
#[test]
fn push_warns_about_names_parquedb_cannot_read() {
    let db = sample_copy();
    let parent = tempfile::tempdir().unwrap();
    let remote = parent.path().join("remote");
    let p = db.path().join("data/a..b.json");
    std::fs::write(&p, b"{}").unwrap();
    age(&p);
    let out = pqsync(None)
        .arg("push")
        .arg(&remote)
        .arg("-d")
        .arg(db.path())
        .assert()
        .success()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data/a..b.json: ParqueDB cannot read"),
        "{err}"
    );
    assert!(remote.join("data/a..b.json").exists());
}

/// ParqueDB's content type for a path: the text after the last `.` of the
/// whole path, lowercased, in its five-entry table.
fn parquedb_content_type(path: &str) -> &'static str {
    let ext = path
        .rsplit_once('.')
        .map_or(path, |(_, e)| e)
        .to_lowercase();
    match ext.as_str() {
        "parquet" => "application/vnd.apache.parquet",
        "json" => "application/json",
        "jsonl" => "application/x-ndjson",
        "csv" => "text/csv",
        "txt" => "text/plain",
        _ => "application/octet-stream",
    }
}

/// The manifest ParqueDB's engine writes for the tree at `root`, from the
/// facts in PARQUEDB.md: insertion order, 2-space indent, no final newline,
/// SHA-256, `modifiedAt` rounded to the millisecond, the FsBackend `etag`
/// on every entry. It carries fields pqsync does not know, at the top and
/// in each entry, as a later ParqueDB might.
fn parquedb_manifest(root: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let q = |s: &str| serde_json::to_string(s).unwrap();
    let mut entries = Vec::new();
    let files = tree_files(root);
    for (path, bytes) in &files {
        let md = std::fs::metadata(root.join(path)).unwrap();
        let ns = md.mtime() as i128 * 1_000_000_000 + md.mtime_nsec() as i128;
        let ms = (ns + 500_000).div_euclid(1_000_000) as i64;
        let modified = chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.3fZ")
            .to_string();
        let etag = format!("\"{}-{}\"", base36(ms as u64), base36(bytes.len() as u64));
        let fields = [
            format!("\"path\": {}", q(path)),
            format!("\"size\": {}", bytes.len()),
            format!(
                "\"hash\": {}",
                q(&HashAlgorithm::Sha256.digest(bytes).to_string())
            ),
            "\"hashAlgorithm\": \"sha256\"".to_string(),
            format!("\"modifiedAt\": {}", q(&modified)),
            format!("\"etag\": {}", q(&etag)),
            format!("\"contentType\": {}", q(parquedb_content_type(path))),
            format!("\"checksumCRC32\": {}", q(&format!("crc-of-{path}"))),
        ];
        entries.push(format!(
            "    {}: {{\n      {}\n    }}",
            q(path),
            fields.join(",\n      ")
        ));
    }
    format!(
        "{{\n  \"version\": 1,\n  \"databaseId\": \"db-from-parquedb\",\n  \"name\": \"written by ParqueDB\",\n  \"visibility\": \"private\",\n  \"lastSyncedAt\": \"2026-03-01T10:00:00.000Z\",\n  \"files\": {{\n{}\n  }},\n  \"syncedFrom\": \"local\",\n  \"futureField\": {{\n    \"kept\": true\n  }}\n}}",
        entries.join(",\n")
    )
}

fn base36(mut n: u64) -> String {
    let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(digits[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// A remote that ParqueDB wrote (its manifest form, `.DS_Store` in
/// subfolders, awkward names; uploaded by boto3 or copied) pulls back
/// whole, verifies, and keeps ParqueDB's identity, field order, unknown
/// fields and ETags when pqsync pushes a change to it.
#[test]
fn a_remote_parquedb_wrote_round_trips() {
    for remote in Remote::each("parquedb-written") {
        let src = sample_copy();
        crate::keys::add_awkward(src.path());
        let written = parquedb_manifest(src.path());
        std::fs::write(src.path().join("_meta/manifest.json"), &written).unwrap();
        remote.put_tree(src.path());
        let url = remote.url();
        let srv = remote.server();

        let clone = tempfile::tempdir().unwrap();
        pqsync(srv)
            .args(["pull", &url, "-d"])
            .arg(clone.path())
            .stdout_ok();
        assert_eq!(tree_files(clone.path()), tree_files(src.path()));
        for p in ["data/.DS_Store", "data/wéird/.DS_Store"] {
            assert!(clone.path().join(p).is_file(), "{p} was not restored");
        }
        pqsync(srv).args(["verify", &url]).stdout_ok();
        pqsync(srv)
            .args(["status", "--exit-code", "-d"])
            .arg(clone.path())
            .stdout_ok();
        let local: serde_json::Value = serde_json::from_slice(
            &std::fs::read(clone.path().join("_meta/manifest.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(local["databaseId"], "db-from-parquedb");

        let edited = "data/wéird/sp ace.json";
        std::fs::write(clone.path().join(edited), b"{\"edited\":true}").unwrap();
        age(&clone.path().join(edited));
        pqsync(srv)
            .args(["push", &url, "-d"])
            .arg(clone.path())
            .stdout_ok();

        let raw = remote.raw("_meta/manifest.json");
        assert!(!raw.ends_with(b"\n"), "no final newline");
        let text = String::from_utf8(raw).unwrap();
        let order = [
            "\"version\"",
            "\"databaseId\"",
            "\"name\"",
            "\"visibility\"",
            "\"lastSyncedAt\"",
            "\"files\"",
            "\"syncedFrom\"",
            "\"futureField\"",
        ];
        let at: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "key order: {at:?}");
        let before: serde_json::Value = serde_json::from_str(&written).unwrap();
        let after: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(after["databaseId"], "db-from-parquedb");
        assert_eq!(after["name"], "written by ParqueDB");
        assert_eq!(after["futureField"], before["futureField"]);
        let files = after["files"].as_object().unwrap();
        assert_eq!(files.len(), before["files"].as_object().unwrap().len());
        for (path, e) in files {
            assert_eq!(e["hashAlgorithm"], "sha256", "{path}");
            assert!(e["etag"].is_string(), "{path} has no etag: {e}");
            let old = &before["files"][path];
            if path == edited {
                assert_ne!(e["hash"], old["hash"]);
                assert_ne!(e["etag"], old["etag"], "the etag names the new object");
                if let Remote::S3 { .. } = remote {
                    // The store's ETag of the object pqsync sent, as boto3
                    // reads it.
                    let seen = remote.independent();
                    assert_eq!(e["etag"].as_str(), seen[path].etag.as_deref(), "{path}");
                }
            } else {
                assert_eq!(e["etag"], old["etag"], "{path}");
                assert_eq!(e["checksumCRC32"], old["checksumCRC32"], "{path}");
                assert_eq!(e["modifiedAt"], old["modifiedAt"], "{path}");
            }
        }
        remote.assert_invariant("after the push");
    }
}

/// Exclusions kept in a file (`--exclude-from`, as rsync and rclone take
/// them) leave those paths out of push and status; the independent
/// listing holds everything else. An unreadable file is a one-line usage
/// error that moves nothing.
#[test]
fn exclusions_come_from_a_file() {
    for remote in Remote::each("excludefrom") {
        let db = sample_copy();
        crate::keys::add_awkward(db.path());
        let rules = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            rules.path(),
            "# scratch files\n\ndata/wéird/*.json\r\nyarn.lock\n",
        )
        .unwrap();
        let url = remote.url();
        let srv = remote.server();
        let missing = db.path().join("no-such-rules");
        let err = pqsync(srv)
            .args(["push", &url, "--exclude-from"])
            .arg(&missing)
            .arg("-d")
            .arg(db.path())
            .stderr_with(2);
        let err = String::from_utf8_lossy(&err);
        assert!(err.contains("cannot read the exclusions"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(remote.independent().is_empty(), "nothing was sent");

        pqsync(srv)
            .args(["push", &url, "--exclude-from"])
            .arg(rules.path())
            .arg("-d")
            .arg(db.path())
            .stdout_ok();
        let seen = remote.independent();
        for gone in [
            "yarn.lock",
            "data/wéird/sp ace.json",
            "data/wéird/pct%41.json",
        ] {
            assert!(!seen.contains_key(gone), "{gone} was pushed");
        }
        for kept in [
            "data/wéird/café.parquet",
            "data/wéird/q?x.txt",
            "日本語/ファイル.json",
        ] {
            assert!(seen.contains_key(kept), "{kept} is missing");
        }
        pqsync(srv)
            .args(["status", "--exit-code", "--exclude-from"])
            .arg(rules.path())
            .arg("-d")
            .arg(db.path())
            .stdout_ok();
    }
}
