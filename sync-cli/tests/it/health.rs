//! `health` and `--metrics-file` against fresh and stale remotes and
//! repositories, with the clock set by `PQSYNC_NOW`.

use chrono::{DateTime, Duration, Utc};
use pqsync_testdata::s3::S3Server;

use super::*;

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Seals one more event segment in the database: a copy of the last one as
/// `seg-0004.parquet`, listed in the segment manifest with its times.
fn seal_segment(db: &Path, max_ts: i64) {
    let events = db.join("events");
    std::fs::copy(
        events.join("seg-0003.parquet"),
        events.join("seg-0004.parquet"),
    )
    .unwrap();
    let path = events.join("_manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["segments"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "seq": 4, "path": "events/seg-0004.parquet", "minTs": max_ts - 1000,
            "maxTs": max_ts, "count": 100, "sizeBytes": 42563, "createdAt": max_ts
        }));
    m["nextSeq"] = 5.into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    age(&path);
    age(&events.join("seg-0004.parquet"));
}

fn health(server: Option<&S3Server>, now: DateTime<Utc>, args: &[&str]) -> Command {
    let mut c = pqsync(server);
    c.env("PQSYNC_NOW", at(now)).arg("health").args(args);
    c
}

#[test]
fn health_tells_fresh_from_stale_and_counts_what_is_pending() {
    let server = S3Server::start();
    let url = server.unique_url("health");
    let db = sample_copy();
    let d = db.path().to_str().unwrap();
    let t0 = Utc::now();
    pqsync(Some(&server))
        .args(["push", &url, "-d", d])
        .stdout_ok();

    // Fresh: healthy, from the manifest alone, in at most 2 requests.
    let before = server.request_count();
    let v = json_of(
        &health(
            Some(&server),
            t0 + Duration::hours(1),
            &[&url, "--max-age", "2h", "--json"],
        )
        .stdout_ok(),
    );
    assert_eq!(v["healthy"], true, "{v}");
    assert_eq!(v["kind"], "remote");
    let age = v["ageSeconds"].as_i64().unwrap();
    assert!((3590..=3700).contains(&age), "{v}");
    if server.is_in_process() {
        assert!(server.request_count() - before <= 2, "{v}");
    }
    let before = server.request_count();
    let v = json_of(
        &health(
            Some(&server),
            t0 + Duration::hours(1),
            &[
                &url,
                "-d",
                d,
                "--max-pending",
                "0",
                "--max-event-lag",
                "0",
                "--json",
            ],
        )
        .stdout_ok(),
    );
    assert_eq!(v["pending"]["total"], 0, "{v}");
    assert_eq!(v["eventLog"]["segmentsBehind"], 0, "{v}");
    assert_eq!(v["eventLog"]["localNextSeq"], 4, "{v}");
    if server.is_in_process() {
        assert!(server.request_count() - before <= 2, "unchanged check: {v}");
    }

    // Stale: exit 1 with the reason on one line.
    let out = health(
        Some(&server),
        t0 + Duration::hours(3),
        &[&url, "--max-age", "2h"],
    )
    .stdout_with(1);
    let out = String::from_utf8_lossy(&out);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("unhealthy: last sync 2h 59m ago") && out.contains("over --max-age 2h"),
        "{out}"
    );

    // Pending files and a sealed segment not yet shipped.
    seal_segment(db.path(), 1_767_900_000_000);
    std::fs::write(db.path().join("indexes/bloom/users.bloom"), b"changed").unwrap();
    let v = json_of(
        &health(
            Some(&server),
            t0 + Duration::hours(1),
            &[
                &url,
                "-d",
                d,
                "--max-pending",
                "2",
                "--max-event-lag",
                "0",
                "--json",
            ],
        )
        .stdout_with(1),
    );
    assert_eq!(v["pending"]["total"], 3, "{v}");
    assert_eq!(v["pending"]["upload"], 3, "{v}");
    assert_eq!(v["eventLog"]["segmentsBehind"], 1, "{v}");
    assert_eq!(v["eventLog"]["remoteLastSeq"], 3, "{v}");
    assert_eq!(
        v["eventLog"]["lagMs"],
        1_767_900_000_000i64 - 1_767_831_920_682,
        "{v}"
    );
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["pending", "event-lag"]);

    // Monitoring-plugin codes: WARNING for pending, CRITICAL for age.
    let out = health(
        Some(&server),
        t0 + Duration::hours(1),
        &[&url, "-d", d, "--max-pending", "2", "--format", "nagios"],
    )
    .stdout_with(1);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("PQSYNC WARNING - ") && out.contains("| age="),
        "{out}"
    );
    assert!(out.contains(" pending=3;2;;0"), "{out}");
    let out = health(
        Some(&server),
        t0 + Duration::hours(5),
        &[&url, "--max-age", "2h", "--format", "nagios"],
    )
    .stdout_with(2);
    assert!(String::from_utf8_lossy(&out).starts_with("PQSYNC CRITICAL - "));
    let out = health(Some(&server), t0, &[&url, "--format", "nagios"]).stdout_ok();
    assert!(String::from_utf8_lossy(&out).starts_with("PQSYNC OK - "));

    // Shipping the changes makes it healthy again.
    pqsync(Some(&server))
        .args(["push", &url, "-d", d])
        .stdout_ok();
    health(
        Some(&server),
        Utc::now(),
        &[
            &url,
            "-d",
            d,
            "--max-pending",
            "0",
            "--max-event-lag",
            "0",
            "--max-age",
            "1h",
        ],
    )
    .stdout_ok();

    // Prometheus text.
    let out = health(
        Some(&server),
        t0 + Duration::hours(3),
        &[&url, "--max-age", "2h", "--format", "prometheus"],
    )
    .stdout_with(1);
    let out = String::from_utf8_lossy(&out);
    let line = out
        .lines()
        .find(|l| l.starts_with("pqsync_health_ok{"))
        .unwrap();
    assert!(line.ends_with("} 0"), "{out}");
    assert!(
        out.contains("# TYPE pqsync_health_age_seconds gauge"),
        "{out}"
    );
}

#[test]
fn health_of_nothing_or_an_unreachable_store_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = health(
        None,
        Utc::now(),
        &[empty.to_str().unwrap(), "--max-age", "1h"],
    )
    .stdout_with(1);
    assert!(String::from_utf8_lossy(&out).contains("has no successful sync yet"));
    let out = health(
        None,
        Utc::now(),
        &[empty.to_str().unwrap(), "--format", "nagios"],
    )
    .stdout_with(2);
    assert!(String::from_utf8_lossy(&out).starts_with("PQSYNC CRITICAL - "));
    // Nothing listens on port 1: UNKNOWN, with the cause.
    let out = pqsync(None)
        .env("AWS_ACCESS_KEY_ID", "k")
        .env("AWS_SECRET_ACCESS_KEY", "s")
        .env("AWS_ALLOW_HTTP", "true")
        .args([
            "health",
            "s3://bucket/x",
            "--endpoint",
            "http://127.0.0.1:1",
            "--timeout",
            "2",
            "--format",
            "nagios",
        ])
        .stdout_with(3);
    let out = String::from_utf8_lossy(&out);
    assert!(
        out.starts_with("PQSYNC UNKNOWN - ") && out.contains("127.0.0.1:1"),
        "{out}"
    );
    let err = pqsync(None)
        .env("PQSYNC_NOW", "yesterday")
        .args(["health", empty.to_str().unwrap()])
        .stderr_with(2);
    assert!(String::from_utf8_lossy(&err).contains("PQSYNC_NOW"));
}

#[test]
fn health_of_a_repository_uses_its_newest_snapshot() {
    let server = S3Server::start();
    let repo = server.unique_url("health-repo");
    let db = sample_copy();
    let d = db.path().to_str().unwrap();
    let t0 = Utc::now();
    pqsync(Some(&server))
        .args(["backup", &repo, "-d", d])
        .stdout_ok();
    let before = server.request_count();
    let v = json_of(
        &health(
            Some(&server),
            t0 + Duration::minutes(30),
            &[
                &repo,
                "-d",
                d,
                "--max-age",
                "1h",
                "--max-pending",
                "0",
                "--json",
            ],
        )
        .stdout_ok(),
    );
    assert_eq!(v["kind"], "repository", "{v}");
    assert_eq!(v["pending"]["total"], 0, "{v}");
    assert_eq!(v["eventLog"]["remoteLastSeq"], 3, "{v}");
    if server.is_in_process() {
        assert!(server.request_count() - before <= 2, "{v}");
    }
    health(
        Some(&server),
        t0 + Duration::hours(2),
        &[&repo, "--max-age", "1h"],
    )
    .stdout_with(1);
    seal_segment(db.path(), 1_767_900_000_000);
    let v = json_of(
        &health(
            Some(&server),
            t0,
            &[&repo, "-d", d, "--max-event-lag", "0", "--json"],
        )
        .stdout_with(1),
    );
    assert_eq!(v["eventLog"]["segmentsBehind"], 1, "{v}");
    assert_eq!(v["pending"]["upload"], 2, "{v}");
}

/// The samples of a metrics file as `name{labels}` → value.
fn samples(path: &Path) -> BTreeMap<String, f64> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn metrics_files_hold_every_run_and_keep_the_last_success() {
    let server = S3Server::start();
    let url = server.unique_url("metrics");
    let db = sample_copy();
    let d = db.path().to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pqsync.prom");
    let before = server.request_count();
    let t0 = Utc::now().timestamp();
    pqsync(Some(&server))
        .args(["push", &url, "-d", d, "--metrics-file"])
        .arg(&file)
        .stdout_ok();
    let m = samples(&file);
    let key =
        |name: &str, extra: &str| format!("{name}{{command=\"push\",remote=\"{url}\"{extra}}}");
    assert_eq!(m[&key("pqsync_run_success", "")], 1.0);
    let total: u64 = tree_files(db.path()).values().map(|b| b.len() as u64).sum();
    assert_eq!(
        m[&key("pqsync_run_files_changed", "")],
        tree_files(db.path()).len() as f64
    );
    let sent = m[&key("pqsync_run_bytes_uploaded", "")] as u64;
    assert!(
        sent >= total && sent < total + 64 * 1024,
        "{sent} vs {total}"
    );
    let success = m[&key("pqsync_last_success_timestamp_seconds", "")] as i64;
    assert!((t0..=t0 + 120).contains(&success));
    if let Some(log) = &server.log {
        // Classes as R2 bills them, against what the server saw.
        let lines: Vec<String> = log.lines()[before as usize..].to_vec();
        let class_a = lines
            .iter()
            .filter(|l| {
                (l.starts_with("PUT ") || l.starts_with("POST ")) && !l.contains("?delete")
                    || (l.starts_with("GET ") && l.contains("list-type"))
            })
            .count();
        let class_b = lines
            .iter()
            .filter(|l| {
                (l.starts_with("GET ") && !l.contains("list-type")) || l.starts_with("HEAD ")
            })
            .count();
        assert_eq!(
            m[&key("pqsync_run_requests", ",class=\"a\"")],
            class_a as f64,
            "{lines:?}"
        );
        assert_eq!(
            m[&key("pqsync_run_requests", ",class=\"b\"")],
            class_b as f64,
            "{lines:?}"
        );
        assert_eq!(m[&key("pqsync_run_requests_total", "")], lines.len() as f64);
    }

    // A second command adds its own series; a failed push keeps the last
    // success of the one before it.
    let status_file = format!("{{command=\"status\",remote=\"{url}\"}}");
    pqsync(Some(&server))
        .args(["status", &url, "-d", d, "--metrics-file"])
        .arg(&file)
        .stdout_ok();
    std::fs::write(db.path().join("indexes/bloom/users.bloom"), b"changed").unwrap();
    pqsync(Some(&server))
        .args([
            "push",
            &url,
            "-d",
            d,
            "--endpoint",
            "http://127.0.0.1:1",
            "--timeout",
            "1",
        ])
        .arg("--metrics-file")
        .arg(&file)
        .assert()
        .code(1);
    let m = samples(&file);
    assert_eq!(m[&key("pqsync_run_success", "")], 0.0);
    assert!(m[&key("pqsync_run_errors", "")] >= 1.0);
    assert_eq!(m[&format!("pqsync_run_success{status_file}")], 1.0);
    assert_eq!(
        m[&key("pqsync_last_success_timestamp_seconds", "")] as i64,
        success
    );
    assert!(m.contains_key(&format!("pqsync_run_duration_seconds{status_file}")));
    // Written whole: no temporary file is left beside it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["pqsync.prom"]);
}
