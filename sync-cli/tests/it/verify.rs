//! `verify`, `stats` and `init --rebuild-manifest` through the real binary,
//! on directories and on S3: each verify check passes on the sample and
//! fails on a copy damaged for it (`pqsync_testdata::damage`).

use std::path::Path;

use pqsync_testdata::damage;
use pqsync_testdata::s3::S3Server;
use serde_json::Value;

use super::{json_of, pqsync, sample_copy, Output};

/// A copy of the sample with a manifest built from its files.
fn managed_copy() -> tempfile::TempDir {
    let db = sample_copy();
    pqsync(None)
        .arg("init")
        .arg("-d")
        .arg(db.path())
        .stdout_ok();
    db
}

fn rebuild(db: &Path) {
    pqsync(None)
        .args(["init", "--rebuild-manifest", "-d"])
        .arg(db)
        .stdout_ok();
}

/// Runs verify with `--json` and returns the report and the exit code.
fn verify(server: Option<&S3Server>, args: &[&str]) -> (Value, i32) {
    let out = pqsync(server)
        .arg("verify")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let code = out.status.code().unwrap();
    (json_of(&out.stdout), code)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report:#}"))
}

/// Names of the checks that failed.
fn failed(report: &Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

/// `(check, path)` of every finding in `key` (`errors` or `warnings`).
fn findings(report: &Value, key: &str) -> Vec<(String, String)> {
    report[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn push(server: &S3Server, db: &Path, url: &str) {
    pqsync(Some(server))
        .args(["push", url, "-d"])
        .arg(db)
        .stdout_ok();
}

const ALL_CHECKS: [&str; 8] = [
    "manifest-present",
    "files-exist",
    "hashes-match",
    "parquet-readable",
    "entity-counts",
    "relationships-consistent",
    "bloom-filters",
    "event-segments",
];

#[test]
fn sample_passes_every_check_locally_and_on_s3() {
    let server = S3Server::start();
    let db = managed_copy();
    let dir = db.path().to_str().unwrap();
    let (r, code) = verify(None, &[dir]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["passed"], true);
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ALL_CHECKS);
    assert!(failed(&r).is_empty(), "{r:#}");
    assert!(r["errors"].as_array().unwrap().is_empty());
    assert!(r["warnings"].as_array().unwrap().is_empty(), "{r:#}");
    assert_eq!(check(&r, "entity-counts")["actual"]["users"], 200);
    assert_eq!(r["summary"]["files"], 27);
    assert_eq!(r["summary"]["parquetFiles"], 22);

    let url = server.unique_url("verify-ok");
    push(&server, db.path(), &url);
    let before = server.request_count();
    let (full, code) = verify(Some(&server), &[&url]);
    assert_eq!(code, 0, "{full:#}");
    assert!(failed(&full).is_empty(), "{full:#}");
    if server.is_in_process() {
        // One GET per file gives its hash, its footer and, for the six
        // relationship files, the ids the relationship check reads; plus
        // the manifest, the listing, three bloom headers and the event
        // manifest.
        assert_eq!(server.request_count() - before, 1 + 1 + 27 + 3 + 1);
    }
    assert_eq!(full["summary"]["hashedBytes"], r["summary"]["hashedBytes"]);

    let before = server.request_count();
    let (quick, code) = verify(Some(&server), &[&url, "--quick"]);
    assert_eq!(code, 0, "{quick:#}");
    assert!(failed(&quick).is_empty(), "{quick:#}");
    assert_eq!(
        quick["summary"]["hashedBytes"], 0,
        "--quick reads no whole file"
    );
    if server.is_in_process() {
        // Every sample Parquet file is under 64 KiB: one ranged GET each,
        // plus the manifest, the listing, the relationship files, the bloom
        // headers and the event manifest.
        let made = server.request_count() - before;
        assert_eq!(made, quick["summary"]["requests"].as_u64().unwrap());
        assert_eq!(made, 1 + 1 + 22 + 6 + 3 + 1);
    }

    // --format detailed --output FILE writes the JSON report with every file.
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("report.json");
    let human = pqsync(Some(&server))
        .args(["verify", &url, "--format", "detailed", "--output"])
        .arg(&file)
        .stdout_ok();
    let human = String::from_utf8(human).unwrap();
    assert!(human.contains("ok    relationships-consistent"), "{human}");
    assert!(human.starts_with(&format!("verify {url}")), "{human}");
    let written = json_of(&std::fs::read(&file).unwrap());
    assert_eq!(written["passed"], true);
    let files = written["files"].as_array().unwrap();
    assert_eq!(files.len(), 27);
    let users = files
        .iter()
        .find(|f| f["path"] == "data/users/data.parquet")
        .unwrap();
    assert_eq!(users["rows"], 200);
    assert_eq!(users["ok"], true);
}

#[test]
fn truncated_file_fails_the_critical_checks() {
    let server = S3Server::start();
    let db = managed_copy();
    let victim = "data/posts/data.parquet";
    // Push first, then damage both sides: the remote through a damaged
    // re-upload is not possible (push verifies), so damage the local copy
    // and check the remote is still clean.
    let url = server.unique_url("verify-trunc");
    push(&server, db.path(), &url);
    damage::truncate(&db.path().join(victim), 100).unwrap();
    let (r, code) = verify(None, &[db.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["passed"], false);
    assert_eq!(failed(&r), ["hashes-match", "parquet-readable"], "{r:#}");
    let errors = findings(&r, "errors");
    assert!(
        errors.contains(&("hashes-match".into(), victim.into())),
        "{errors:?}"
    );
    assert!(
        errors.contains(&("parquet-readable".into(), victim.into())),
        "{errors:?}"
    );
    let msg = r["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("size"), "{msg}");
    // The human report names the path and exits 1.
    let out = pqsync(None).arg("verify").arg(db.path()).stdout_with(1);
    let out = String::from_utf8(out).unwrap();
    assert!(out.contains(&format!("  {victim}: ")), "{out}");
    assert!(out.contains("FAILED (2 critical)"), "{out}");

    let (remote, code) = verify(Some(&server), &[&url, "--quick"]);
    assert_eq!(code, 0, "the remote copy is intact: {remote:#}");
}

#[test]
fn corrupt_footer_under_a_rebuilt_manifest_is_caught_only_by_the_parquet_check() {
    let server = S3Server::start();
    let db = managed_copy();
    let victim = "data/comments/data.parquet";
    damage::corrupt_footer(&db.path().join(victim)).unwrap();
    rebuild(db.path());
    let (r, code) = verify(None, &[db.path().to_str().unwrap()]);
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(failed(&r), ["parquet-readable"], "{r:#}");
    assert_eq!(
        findings(&r, "errors"),
        [("parquet-readable".to_string(), victim.to_string())]
    );

    // The same bytes pushed to S3 fail the same way there, with and
    // without --quick.
    let url = server.unique_url("verify-footer");
    push(&server, db.path(), &url);
    for args in [vec![url.as_str()], vec![url.as_str(), "--quick"]] {
        let (r, code) = verify(Some(&server), &args);
        assert_eq!(code, 1, "{r:#}");
        assert_eq!(failed(&r), ["parquet-readable"], "{args:?}: {r:#}");
        assert_eq!(r["errors"][0]["path"], victim);
    }
}

#[test]
fn missing_segment_is_a_warning_in_verify_and_status() {
    let server = S3Server::start();
    // Segment file gone, manifest rebuilt to match: only the event check
    // can tell.
    let db = managed_copy();
    damage::remove_segment(db.path(), 2, false).unwrap();
    rebuild(db.path());
    let (r, code) = verify(None, &[db.path().to_str().unwrap()]);
    assert_eq!(code, 0, "a warning-level check: {r:#}");
    assert_eq!(failed(&r), ["event-segments"]);
    assert_eq!(
        findings(&r, "warnings"),
        [(
            "event-segments".to_string(),
            "events/seg-0002.parquet".to_string()
        )]
    );

    // Segment and its manifest entry gone: a gap in the seq numbers.
    let db = managed_copy();
    damage::remove_segment(db.path(), 2, true).unwrap();
    rebuild(db.path());
    let (r, _) = verify(None, &[db.path().to_str().unwrap()]);
    assert_eq!(failed(&r), ["event-segments"]);
    let w = &r["warnings"][0];
    assert_eq!(w["path"], "events/_manifest.json");
    assert_eq!(
        w["message"],
        "segment seq 2 is missing (gap between 1 and 3)"
    );

    // status reports the gap on every run, and verify on the remote sees
    // it once pushed.
    let url = server.unique_url("verify-gap");
    push(&server, db.path(), &url);
    let err = pqsync(Some(&server))
        .args(["status", &url, "-d"])
        .arg(db.path())
        .stderr_with(0);
    let err = String::from_utf8(err).unwrap();
    assert!(
        err.contains("events/_manifest.json: segment seq 2 is missing (gap between 1 and 3)"),
        "{err}"
    );
    let (r, code) = verify(Some(&server), &[&url, "--quick"]);
    assert_eq!(code, 0);
    assert_eq!(failed(&r), ["event-segments"]);
}

#[test]
fn relationships_that_disagree_are_reported_with_their_file() {
    let db = managed_copy();
    damage::drop_last_row(&db.path().join("rels/reverse/users.parquet")).unwrap();
    rebuild(db.path());
    let (r, code) = verify(None, &[db.path().to_str().unwrap()]);
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(failed(&r), ["relationships-consistent"], "{r:#}");
    let c = check(&r, "relationships-consistent");
    assert_eq!(c["expected"], 851);
    assert_eq!(c["actual"], 850);
    let w = findings(&r, "warnings");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].1, "rels/reverse/users.parquet");
}

#[test]
fn entity_counts_are_compared_with_another_side() {
    let server = S3Server::start();
    let db = managed_copy();
    let url = server.unique_url("verify-compare");
    push(&server, db.path(), &url);
    let dir = db.path().to_str().unwrap();
    let (r, code) = verify(Some(&server), &[dir, "--compare", &url]);
    assert_eq!(code, 0);
    assert!(failed(&r).is_empty(), "{r:#}");
    assert_eq!(r["compare"], url.as_str());

    // A database with fewer entities per namespace.
    let smaller = tempfile::tempdir().unwrap();
    let opts = pqsync_testdata::generate::GenOptions {
        rows_per_namespace: 150,
        ..Default::default()
    };
    pqsync_testdata::generate::generate(smaller.path(), &opts).unwrap();
    let (r, code) = verify(
        Some(&server),
        &[
            smaller.path().to_str().unwrap(),
            "--compare",
            &url,
            "--quick",
        ],
    );
    assert_eq!(code, 1, "the smaller copy has no manifest: {r:#}");
    assert_eq!(
        failed(&r),
        [
            "manifest-present",
            "files-exist",
            "hashes-match",
            "entity-counts"
        ],
        "every check is listed even without a manifest: {r:#}"
    );
    assert_eq!(r["checks"].as_array().unwrap().len(), ALL_CHECKS.len());
    let c = check(&r, "entity-counts");
    assert_eq!(c["expected"]["posts"], 200);
    assert_eq!(c["actual"]["posts"], 150);
    let w: Vec<String> = findings(&r, "warnings")
        .into_iter()
        .filter(|(c, _)| c == "entity-counts")
        .map(|(_, p)| p)
        .collect();
    assert_eq!(w, ["data/comments/", "data/posts/", "data/users/"]);
}

#[test]
fn missing_and_unlisted_files_and_bad_blooms() {
    let db = managed_copy();
    std::fs::remove_file(db.path().join("indexes/bloom/posts.bloom")).unwrap();
    std::fs::write(db.path().join("data/users/extra.txt"), b"x").unwrap();
    let (r, code) = verify(None, &[db.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(failed(&r), ["files-exist", "bloom-filters"], "{r:#}");
    assert_eq!(
        findings(&r, "errors"),
        [(
            "files-exist".to_string(),
            "indexes/bloom/posts.bloom".to_string()
        )]
    );
    let w = findings(&r, "warnings");
    assert!(
        w.contains(&("files-exist".into(), "data/users/extra.txt".into())),
        "{w:?}"
    );
    assert!(
        w.contains(&("bloom-filters".into(), "indexes/bloom/posts.bloom".into())),
        "{w:?}"
    );

    // A truncated bloom filter under a rebuilt manifest.
    let db = managed_copy();
    damage::truncate(&db.path().join("indexes/bloom/users.bloom"), 8).unwrap();
    rebuild(db.path());
    let (r, code) = verify(None, &[db.path().to_str().unwrap()]);
    assert_eq!(code, 0);
    assert_eq!(failed(&r), ["bloom-filters"]);

    // A corrupt manifest is a failed critical check, not a crash.
    let db = managed_copy();
    std::fs::write(db.path().join("_meta/manifest.json"), b"{\"version\": 1,").unwrap();
    let (r, code) = verify(None, &[db.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(failed(&r)[0], "manifest-present");
}

#[test]
fn stats_from_footers_locally_and_on_s3() {
    let server = S3Server::start();
    let db = managed_copy();
    let local = json_of(
        &pqsync(None)
            .arg("stats")
            .arg(db.path())
            .arg("--json")
            .stdout_ok(),
    );
    let users = &local["namespaces"]["users"];
    assert_eq!(users["entities"], 200);
    assert_eq!(users["files"], 5);
    let ns = local["namespaces"].as_object().unwrap();
    assert_eq!(ns.len(), 3);
    let sum = |k: &str| ns.values().map(|n| n[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("forwardRelationships"), 851);
    assert_eq!(sum("reverseRelationships"), 851);
    let ev = &local["events"];
    assert_eq!(ev["segments"], 3);
    assert_eq!(ev["events"], 350);
    assert_eq!(ev["currentEvents"], 50);
    assert!(ev["minTs"].as_i64().unwrap() < ev["maxTs"].as_i64().unwrap());
    assert!(ev["from"].as_str().unwrap().starts_with("2026-01-"));

    let url = server.unique_url("stats");
    push(&server, db.path(), &url);
    let remote = json_of(
        &pqsync(Some(&server))
            .args(["stats", &url, "--json"])
            .stdout_ok(),
    );
    assert_eq!(remote["namespaces"], local["namespaces"]);
    assert_eq!(remote["events"], local["events"]);
    assert_eq!(remote["files"], 27);

    let human = String::from_utf8(pqsync(None).arg("stats").arg(db.path()).stdout_ok()).unwrap();
    assert!(human.contains("events: 3 segments, 350 events"), "{human}");
}

#[test]
fn rebuild_remote_manifest_from_metadata_and_from_bytes() {
    let server = S3Server::start();
    let db = managed_copy();
    let url = server.unique_url("rebuild");
    push(&server, db.path(), &url);
    let before = json_of(
        &pqsync(Some(&server))
            .args(["list", &url, "--format", "json"])
            .stdout_ok(),
    );
    let out = pqsync(Some(&server))
        .args(["init", &url, "--rebuild-manifest", "--json"])
        .stdout_ok();
    let r = json_of(&out);
    assert_eq!(r["files"], 27);
    assert_eq!(
        r["fromMetadata"], 27,
        "pqsync's uploads carry their hash: {r:#}"
    );
    assert_eq!(r["hashed"], 0);
    assert_eq!(r["changed"].as_array().unwrap().len(), 0);
    if server.is_in_process() {
        // The guard's capabilities (the remote's cached answer, 1 GET), GET
        // manifest, LIST of announced deletions, LIST, 27 HEADs, PUT
        // manifest.
        assert_eq!(r["requests"], 32);
    }
    let after = json_of(
        &pqsync(Some(&server))
            .args(["list", &url, "--format", "json"])
            .stdout_ok(),
    );
    let hashes = |v: &Value| -> Vec<(String, String)> {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["path"].as_str().unwrap().into(),
                    e["hash"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    assert_eq!(hashes(&before), hashes(&after));
    // Without --rebuild-manifest, an existing manifest is left alone.
    pqsync(Some(&server)).args(["init", &url]).stderr_with(2);

    // A directory remote keeps no metadata: the rebuild hashes every file,
    // and a pull from the rebuilt remote restores the database.
    let remote_dir = tempfile::tempdir().unwrap();
    let file_url = format!("file://{}", remote_dir.path().display());
    push(&server, db.path(), &file_url);
    std::fs::remove_file(remote_dir.path().join("_meta/manifest.json")).unwrap();
    let dry = json_of(
        &pqsync(None)
            .args([
                "init",
                &file_url,
                "--rebuild-manifest",
                "--dry-run",
                "--json",
            ])
            .stdout_ok(),
    );
    assert_eq!(dry["files"], 27);
    assert!(
        !remote_dir.path().join("_meta/manifest.json").exists(),
        "--dry-run writes nothing"
    );
    let r = json_of(
        &pqsync(None)
            .args(["init", &file_url, "--rebuild-manifest", "--json"])
            .stdout_ok(),
    );
    assert_eq!(r["hashed"], 27);
    assert!(r["previousFiles"].is_null());
    let restore = tempfile::tempdir().unwrap();
    pqsync(None)
        .args(["pull", &file_url, "-d"])
        .arg(restore.path())
        .stdout_ok();
    let (v, code) = verify(
        None,
        &[
            restore.path().to_str().unwrap(),
            "--compare",
            db.path().to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{v:#}");
    assert!(failed(&v).is_empty(), "{v:#}");
}
