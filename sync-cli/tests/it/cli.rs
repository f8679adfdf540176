//! The command line itself: flags that belong to their commands, help with
//! examples, completions and man pages, remotes refused before any
//! request, and warnings for a selection that selects nothing.

use std::path::Path;

use super::{json_of, pqsync, sample_copy, Output};

/// stderr of a run that must exit with `code`, as text.
fn stderr_of(args: &[&str], code: i32) -> String {
    String::from_utf8_lossy(&pqsync(None).args(args).stderr_with(code)).into_owned()
}

#[test]
fn sync_flags_on_commands_they_do_not_affect_are_usage_errors() {
    let db = sample_copy();
    let d = db.path().to_str().unwrap();
    for args in [
        vec!["stats", d, "--max-delete", "3"],
        vec!["list", d, "--strategy", "manual"],
        vec!["verify", d, "--no-delete"],
        vec!["remote", "-d", d, "--namespaces", "users"],
        vec!["status", "-d", d, "--dry-run"],
        vec!["completions", "bash", "--endpoint", "http://x"],
    ] {
        let err = stderr_of(&args, 2);
        assert!(err.contains("unexpected argument"), "{args:?}: {err}");
    }
    // Output flags go anywhere.
    let out = pqsync(None).args(["stats", d, "--json"]).stdout_ok();
    assert!(json_of(&out)["warnings"].is_array());
    let out = pqsync(None).args(["--json", "stats", d]).stdout_ok();
    assert!(json_of(&out)["files"].as_u64().unwrap() > 0);
}

#[test]
fn dash_n_is_a_dry_run() {
    let db = sample_copy();
    let remote = tempfile::tempdir().unwrap();
    let target = remote.path().join("r");
    let out = pqsync(None)
        .arg("push")
        .arg(&target)
        .args(["-n", "-d"])
        .arg(db.path())
        .stdout_ok();
    assert!(String::from_utf8_lossy(&out).contains("dry run: nothing transferred"));
    assert!(!target.exists(), "a dry run creates nothing");
}

#[test]
fn every_command_help_has_examples_and_exit_codes() {
    for cmd in [
        "push",
        "pull",
        "sync",
        "status",
        "mirror",
        "remote",
        "list",
        "verify",
        "stats",
        "init",
        "completions",
        "man",
    ] {
        let out = pqsync(None).args([cmd, "--help"]).stdout_ok();
        let help = String::from_utf8_lossy(&out);
        assert!(help.contains("Examples:"), "{cmd}: {help}");
        assert!(help.contains("Exit codes:"), "{cmd}: {help}");
        let opens_remote = !matches!(cmd, "remote" | "completions" | "man");
        assert_eq!(
            help.contains("AWS_ACCESS_KEY_ID"),
            opens_remote,
            "{cmd} lists the variables it reads: {help}"
        );
    }
    // Sync flags appear only where they apply.
    let help =
        String::from_utf8_lossy(&pqsync(None).args(["stats", "--help"]).stdout_ok()).into_owned();
    assert!(!help.contains("--max-delete"), "{help}");
    let help =
        String::from_utf8_lossy(&pqsync(None).args(["push", "--help"]).stdout_ok()).into_owned();
    assert!(
        help.contains("--max-delete") && help.contains("-n, --dry-run"),
        "{help}"
    );
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef pqsync"),
        ("fish", "complete -c pqsync"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = pqsync(None).args(["completions", shell]).stdout_ok();
        let script = String::from_utf8_lossy(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["push", "mirror", "verify"] {
            assert!(script.contains(sub), "{shell} completes {sub}");
        }
    }
}

/// The man pages in `docs/man` are the ones the binary writes; regenerate
/// them with `cargo run -p pqsync -- man docs/man`.
#[test]
fn checked_in_man_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    pqsync(None).arg("man").arg(dir.path()).stdout_ok();
    let checked_in = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man");
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let generated = names(dir.path());
    assert!(generated.contains(&"pqsync.1".to_string()));
    assert!(generated.contains(&"pqsync-push.1".to_string()));
    assert_eq!(
        names(&checked_in),
        generated,
        "run `cargo run -p pqsync -- man docs/man`"
    );
    for name in &generated {
        assert_eq!(
            std::fs::read_to_string(checked_in.join(name)).unwrap(),
            std::fs::read_to_string(dir.path().join(name)).unwrap(),
            "{name} is out of date: run `cargo run -p pqsync -- man docs/man`"
        );
    }
}

#[test]
fn mistyped_remotes_are_refused_before_any_request() {
    let db = sample_copy();
    let d = db.path().to_str().unwrap();
    for (remote, hint) in [
        ("s3:/bucket/x", "s3://bucket/x"),
        ("s3//bucket/x", "s3://bucket/x"),
        ("r2:/x", "r2://x"),
    ] {
        for args in [vec!["push", remote, "-d", d], vec!["list", remote]] {
            let err = stderr_of(&args, 2);
            assert!(err.contains(hint), "{args:?}: {err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
    // Nothing named like a scheme was created as a directory.
    assert!(!Path::new("s3:").exists());
}

#[test]
fn r2_account_ids_and_jurisdictions_are_checked_first() {
    let db = sample_copy();
    let d = db.path().to_str().unwrap();
    let err = stderr_of(&["status", "r2://bucket/prefix", "-d", d], 2);
    assert!(err.contains("32-hex-character"), "{err}");
    let acct = "0123456789abcdef0123456789abcdef";
    let err = stderr_of(
        &[
            "status",
            &format!("r2://{acct}/b/p?jurisdiction=mars"),
            "-d",
            d,
        ],
        2,
    );
    assert!(err.contains("mars"), "{err}");
    let err = stderr_of(
        &[
            "status",
            &format!("r2://{acct}/b/p"),
            "-d",
            d,
            "--jurisdiction",
            "mars",
        ],
        2,
    );
    assert!(err.contains("mars"), "{err}");
    let out = pqsync(None)
        .env("R2_JURISDICTION", "bogus")
        .args(["status", &format!("r2://{acct}/b/p"), "-d", d])
        .stderr_with(2);
    let err = String::from_utf8_lossy(&out);
    assert!(
        err.contains("R2_JURISDICTION") && err.contains("bogus"),
        "{err}"
    );
}

#[test]
fn a_mirror_onto_itself_or_into_itself_is_refused() {
    for (src, dst) in [
        ("s3://b/prod", "s3://b/prod"),
        ("s3://b/prod", "s3://b/prod/copy"),
        ("s3://b/prod/sub", "s3://b/prod"),
        ("/tmp/pqsync-src", "/tmp/pqsync-src/inner"),
    ] {
        let err = stderr_of(&["mirror", src, dst], 2);
        assert!(err.contains("inside"), "{src} -> {dst}: {err}");
    }
}

#[test]
fn a_namespace_that_matches_nothing_is_a_warning() {
    let db = sample_copy();
    let parent = tempfile::tempdir().unwrap();
    let remote = parent.path().join("r");
    let out = pqsync(None)
        .arg("push")
        .arg(&remote)
        .args(["--namespaces", "post", "--json", "-d"])
        .arg(db.path())
        .assert()
        .success()
        .get_output()
        .clone();
    let v = json_of(&out.stdout);
    assert!(v["uploaded"].as_array().unwrap().is_empty());
    let warnings: Vec<&str> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("\"post\"") && w.contains("matches no file")),
        "{warnings:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pqsync: warning: namespace \"post\""), "{err}");
}

/// A failure under `--json` is a document too, with the exit code it would
/// have anyway.
#[test]
fn failures_under_json_are_documents() {
    let db = sample_copy();
    let empty = tempfile::tempdir().unwrap();
    let out = pqsync(None)
        .arg("pull")
        .arg(empty.path().join("nothing-here"))
        .args(["--json", "-d"])
        .arg(db.path())
        .stdout_with(1);
    let v = json_of(&out);
    assert_eq!(v["success"], false);
    assert_eq!(v["error"]["kind"], "not-managed");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not managed by pqsync"));
    assert!(v["error"]["path"]
        .as_str()
        .unwrap()
        .contains("nothing-here"));
    assert!(v["warnings"].is_array());
    // A usage error, found by the argument parser or later.
    for args in [
        vec!["push", "--json", "--no-such-flag"],
        vec!["push", "s3:/x", "--json", "-d", db.path().to_str().unwrap()],
    ] {
        let v = json_of(&pqsync(None).args(&args).stdout_with(2));
        assert_eq!(v["success"], false, "{args:?}");
        assert_eq!(v["error"]["kind"], "usage", "{args:?}");
    }
}
