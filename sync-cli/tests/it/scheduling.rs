//! The scheduling examples in `docs/scheduling/`: the backup job script
//! runs end to end against the S3 server, and the cron, systemd, Kubernetes
//! and GitHub Actions examples run that same script on the guide's
//! schedule.

use pqsync_testdata::s3::S3Server;

use super::*;

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/scheduling")
}

fn metric(file: &Path, command: &str, repo: &str) -> Option<f64> {
    let text = std::fs::read_to_string(file).ok()?;
    let key = format!("pqsync_run_success{{command=\"{command}\",remote=\"{repo}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
}

#[test]
fn the_scheduled_job_backs_up_restores_forgets_and_checks_health() {
    let server = S3Server::start();
    let repo = server.unique_url("sched");
    let db = sample_copy();
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("pqsync.prom");
    let bin = Path::new(env!("CARGO_BIN_EXE_pqsync")).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let job = |now: Option<&str>| {
        let mut c = clean_env(std::process::Command::new("sh"), Some(&server));
        c.arg(docs().join("backup.sh"))
            .env("PATH", &path)
            .env("PQSYNC_DB", db.path())
            .env("PQSYNC_REPO", &repo)
            .env("PQSYNC_METRICS_FILE", &metrics)
            .env("TMPDIR", dir.path());
        if let Some(now) = now {
            c.env("PQSYNC_NOW", now);
        }
        c.output().unwrap()
    };
    let out = job(None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = json_of(
        &pqsync(Some(&server))
            .args(["snapshots", &repo, "--json"])
            .stdout_ok(),
    );
    assert_eq!(v["snapshots"].as_array().unwrap().len(), 1);
    assert_eq!(v["snapshots"][0]["tags"], serde_json::json!(["scheduled"]));
    for command in ["backup", "restore", "forget", "health"] {
        assert_eq!(metric(&metrics, command, &repo), Some(1.0), "{command}");
    }
    // The restore check cleaned up after itself.
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the metrics file is left"
    );

    // A day later with nothing newer, health fails the job, and says so in
    // the metrics an alert reads.
    let later = (chrono::Utc::now() + chrono::Duration::days(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = job(Some(&later));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("over --max-age 7h"), "{err}");
    assert_eq!(metric(&metrics, "health", &repo), Some(0.0));
    assert_eq!(metric(&metrics, "backup", &repo), Some(1.0));
}

#[test]
fn every_scheduler_example_runs_the_same_job_on_the_same_schedule() {
    let read = |name: &str| std::fs::read_to_string(docs().join(name)).unwrap();
    let cron = read("crontab");
    assert!(cron.contains("0 */6 * * * ") && cron.contains("pqsync-backup.sh"));
    let actions = read("github-actions.yml");
    assert!(actions.contains("cron: \"0 */6 * * *\""));
    assert!(actions.contains("run: sh docs/scheduling/backup.sh"));
    let k8s = read("kubernetes.yml");
    assert!(k8s.contains("schedule: \"0 */6 * * *\""));
    assert!(k8s.contains("[\"sh\", \"/scripts/backup.sh\"]"));
    assert!(k8s.contains("\"--watch\""));
    let timer = read("pqsync-backup.timer");
    assert!(timer.contains("OnCalendar=*-*-* 00/6:00:00"));
    assert!(read("pqsync-backup.service").contains("ExecStart=/usr/local/bin/pqsync-backup.sh"));
    let watch = read("pqsync-watch.service");
    assert!(watch.contains("--watch") && watch.contains("KillSignal=SIGTERM"));
    // The watch command line in the examples parses: the only complaint
    // is the missing database.
    let err = pqsync(None)
        .args(["backup", "s3://b/p", "-d", "/nonexistent/db", "--watch"])
        .args(["--every", "1h", "--debounce", "5s"])
        .stderr_with(2);
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("/nonexistent/db does not exist"), "{err}");
}

/// The sharded mirror example: four shard pods by JOB_COMPLETION_INDEX, then
/// one merge, with command lines that parse (run here with the index
/// substituted, against directories).
#[test]
fn the_sharded_mirror_example_runs() {
    let yml = std::fs::read_to_string(docs().join("mirror-shards.yml")).unwrap();
    assert!(yml.contains("completionMode: Indexed") && yml.contains("completions: 4"));
    assert!(yml.contains("\"--shard\", \"$(JOB_COMPLETION_INDEX)/4\""));
    assert!(yml.contains("\"--merge-shards\""));
    let src = crate::sample_copy();
    let dst = tempfile::tempdir().unwrap();
    let dst = dst.path().join("backup");
    for index in 0..4 {
        pqsync(None)
            .arg("mirror")
            .arg(src.path())
            .arg(&dst)
            .args(["--shard", &format!("{index}/4"), "--concurrency", "32"])
            .assert()
            .success();
    }
    pqsync(None)
        .arg("mirror")
        .arg(src.path())
        .arg(&dst)
        .arg("--merge-shards")
        .assert()
        .success();
    let mut copied = crate::tree_files(&dst);
    copied.retain(|k, _| !k.starts_with("_meta/.pqsync/") && k != "_meta/manifest.json");
    assert_eq!(copied, crate::tree_files(src.path()));
}
