//! Snapshots of what people read: the plan, status, results and errors, with
//! temporary paths replaced by placeholders.

use std::path::Path;

use crate::{age, pqsync, sample_copy};

/// Runs pqsync and returns stdout and stderr with `paths` replaced.
fn run(args: &[&str], paths: &[(&Path, &str)], code: i32) -> String {
    let out = pqsync(None)
        .args(args)
        .assert()
        .code(code)
        .get_output()
        .clone();
    let mut text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for (p, name) in paths {
        text = text.replace(&p.display().to_string(), name);
    }
    text
}

#[test]
fn human_output_of_a_backup_cycle() {
    let db = sample_copy();
    let parent = tempfile::tempdir().unwrap();
    let remote = parent.path().join("remote");
    let d = db.path().to_str().unwrap();
    let r = remote.to_str().unwrap();
    let paths = [(db.path(), "[DB]"), (remote.as_path(), "[REMOTE]")];

    let plan = run(&["push", r, "-d", d, "--dry-run"], &paths, 0);
    let first = plan.lines().take(3).collect::<Vec<_>>().join("\n");
    let tail = plan.lines().rev().take(3).collect::<Vec<_>>();
    insta::assert_snapshot!("dry_run_head", first);
    insta::assert_snapshot!(
        "dry_run_tail",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );

    insta::assert_snapshot!("first_push", run(&["push", r, "-d", d], &paths, 0));

    std::fs::write(db.path().join("_meta/schema.json"), b"{\"edited\":true}\n").unwrap();
    age(&db.path().join("_meta/schema.json"));
    std::fs::remove_file(db.path().join("events/seg-0003.parquet")).unwrap();
    insta::assert_snapshot!("status_after_edit", run(&["status", "-d", d], &paths, 0));
    insta::assert_snapshot!("second_push", run(&["push", "-d", d], &paths, 0));
    insta::assert_snapshot!("status_in_sync", run(&["status", "-d", d], &paths, 0));
}

#[test]
fn human_output_of_a_conflict_and_of_errors() {
    let a = sample_copy();
    let parent = tempfile::tempdir().unwrap();
    let remote = parent.path().join("remote");
    let b = parent.path().join("clone");
    let r = remote.to_str().unwrap();
    let (ad, bd) = (a.path().to_str().unwrap(), b.to_str().unwrap());
    let paths = [
        (a.path(), "[A]"),
        (b.as_path(), "[B]"),
        (remote.as_path(), "[REMOTE]"),
    ];
    run(&["push", r, "-d", ad], &paths, 0);
    run(&["pull", r, "-d", bd], &paths, 0);
    std::fs::write(a.path().join("_meta/schema.json"), b"A").unwrap();
    std::fs::write(b.join("_meta/schema.json"), b"B").unwrap();
    run(&["push", "-d", ad], &paths, 0);
    insta::assert_snapshot!(
        "manual_conflict",
        run(&["push", "--strategy", "manual", "-d", bd], &paths, 3)
    );

    std::fs::write(remote.join("_meta/manifest.json"), b"{\"version\": 7}").unwrap();
    insta::assert_snapshot!("unknown_version", run(&["pull", "-d", bd], &paths, 1));
    insta::assert_snapshot!(
        "bad_remote",
        run(&["status", "gopher://x", "-d", bd], &paths, 2)
    );
}

/// The JSON documents of a backup cycle, one shape per concept: `unchanged`
/// is always a list of paths with its count beside it, and every document
/// has `warnings`. Times and temporary paths are redacted.
#[test]
fn json_documents_of_a_backup_cycle() {
    let db = sample_copy();
    let parent = tempfile::tempdir().unwrap();
    let remote = parent.path().join("remote");
    let d = db.path().to_str().unwrap();
    let r = remote.to_str().unwrap();
    let json = |args: &[&str], code: i32| -> serde_json::Value {
        let out = pqsync(None)
            .args(args)
            .arg("--json")
            .assert()
            .code(code)
            .get_output()
            .clone();
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let plan = json(
        &["push", r, "-d", d, "--dry-run", "--namespaces", "users"],
        0,
    );
    insta::assert_json_snapshot!("json_dry_run", plan, {
        ".toUpload[].modifiedAt" => "[time]",
        ".toUpload[].etag" => "[etag]",
    });
    json(&["push", r, "-d", d], 0);
    std::fs::write(db.path().join("_meta/schema.json"), b"{\"edited\":true}\n").unwrap();
    age(&db.path().join("_meta/schema.json"));
    std::fs::remove_file(db.path().join("events/seg-0003.parquet")).unwrap();
    let status = json(&["status", "-d", d], 0);
    insta::assert_json_snapshot!("json_status", status, {
        ".diff.toUpload[].modifiedAt" => "[time]",
        ".diff.toUpload[].etag" => "[etag]",
    });
    let result = json(&["push", "-d", d], 0);
    insta::assert_json_snapshot!("json_push", result, {
        ".kept[].location" => insta::dynamic_redaction(|v, _| hide_run(v.as_str().unwrap())),
    });
    let failure = json(&["pull", &format!("{r}-missing"), "-d", d], 1);
    let parent_path = parent.path().display().to_string();
    let hide = move |v: insta::internals::Content, _: insta::internals::ContentPath<'_>| {
        v.as_str().unwrap().replace(&parent_path, "[PARENT]")
    };
    insta::assert_json_snapshot!("json_failure", failure, {
        ".error.message" => insta::dynamic_redaction(hide.clone()),
        ".error.path" => insta::dynamic_redaction(hide),
    });
}

/// A trash location with its run folder (`20261205T054012Z-9f3a61c2`, a
/// time and a random suffix) replaced by `[RUN]`.
fn hide_run(location: &str) -> String {
    location
        .split('/')
        .map(|c| {
            let run = c.len() == 25
                && c.as_bytes()[8] == b'T'
                && c.as_bytes()[15] == b'Z'
                && c.as_bytes()[16] == b'-';
            if run {
                "[RUN]"
            } else {
                c
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}
