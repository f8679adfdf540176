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
