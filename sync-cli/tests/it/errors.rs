//! Failures a new user meets, through the real binary: each ends in one
//! line on stderr that names the cause and the fix, with a documented exit
//! code, and leaves nothing behind.
//!
//! These run against the in-process S3 server even in the Garage lane: they
//! test what pqsync says about a server's answer, and the answers (S3's
//! error codes) are the server's own.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use pqsync_testdata::s3::S3Server;

use super::{binary, sample_copy};

/// Runs pqsync with `env` on top of a clean environment; returns the exit
/// code, stdout and stderr.
fn run(args: &[&str], env: &[(&str, String)]) -> (i32, String, String) {
    let home = tempfile::tempdir().unwrap();
    let mut cmd = binary(None);
    cmd.arg("--no-progress")
        .args(args)
        // No ~/.aws of the machine running the tests.
        .env("HOME", home.path())
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_METADATA_ENDPOINT")
        .env_remove("AWS_EC2_METADATA_DISABLED");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The one line of an error report.
fn one_line(stderr: &str) -> &str {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got:\n{stderr}");
    let line = lines[0];
    assert!(line.starts_with("pqsync: error: "), "{line}");
    // Missing credentials name every source tried, the profile files too.
    assert!(line.len() < 600, "an error line is short: {line}");
    line
}

/// The environment that reaches `server`, with some variables replaced.
fn server_env(server: &S3Server, replace: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = vec![
        ("AWS_ACCESS_KEY_ID", server.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", server.secret_key.clone()),
        ("AWS_REGION", server.region.clone()),
        ("AWS_ENDPOINT_URL", server.endpoint.clone()),
        ("AWS_ALLOW_HTTP", "true".into()),
    ];
    for (k, v) in replace {
        env.retain(|(name, _)| name != k);
        if !v.is_empty() {
            let k: &'static str = Box::leak(k.to_string().into_boxed_str());
            env.push((k, v.to_string()));
        }
    }
    env
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    port
}

#[test]
fn no_credentials_names_every_source_tried() {
    let db = sample_copy();
    let d = db.path().to_str().unwrap();
    let server = S3Server::in_process();
    let url = format!("s3://{}/prod", server.bucket);
    // Instance metadata turned off: refused before any request.
    let env = server_env(
        &server,
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
    );
    let (code, _, err) = run(&["status", &url, "-d", d], &env);
    let line = one_line(&err);
    assert_eq!(code, 1, "{line}");
    for needle in [
        "no credentials",
        "AWS_ACCESS_KEY_ID",
        "instance metadata",
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(line.contains(needle), "{needle:?} missing: {line}");
    }
    assert_eq!(server.request_count(), 0, "nothing was asked of the store");

    // Instance metadata that does not answer (nothing listens there).
    let imds = format!("http://127.0.0.1:{}", closed_port());
    let env = server_env(
        &server,
        &[
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("AWS_METADATA_ENDPOINT", &imds),
        ],
    );
    let (code, _, err) = run(&["status", &url, "-d", d, "--timeout", "3"], &env);
    let line = one_line(&err);
    assert_eq!(code, 1, "{line}");
    for needle in [
        "no credentials",
        "AWS_ACCESS_KEY_ID",
        &format!("instance metadata at {imds}"),
        "set AWS_ACCESS_KEY_ID",
    ] {
        assert!(line.contains(needle), "{needle:?} missing: {line}");
    }
}

#[test]
fn a_wrong_secret_says_to_check_the_secret() {
    let db = sample_copy();
    let server = S3Server::in_process();
    let url = server.unique_url("secret");
    let env = server_env(&server, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]);
    for cmd in ["status", "push"] {
        let (code, _, err) = run(&[cmd, &url, "-d", db.path().to_str().unwrap()], &env);
        let line = one_line(&err);
        assert_eq!(code, 1, "{line}");
        assert!(line.contains("signature"), "{line}");
        assert!(line.contains("check AWS_SECRET_ACCESS_KEY"), "{line}");
        assert!(
            line.contains(&server.endpoint),
            "names the endpoint: {line}"
        );
    }
}

#[test]
fn an_unknown_access_key_says_to_check_the_key_id() {
    let db = sample_copy();
    let server = S3Server::in_process();
    let url = server.unique_url("key");
    let env = server_env(&server, &[("AWS_ACCESS_KEY_ID", "AKIDNOBODYKNOWS")]);
    let (code, _, err) = run(&["push", &url, "-d", db.path().to_str().unwrap()], &env);
    let line = one_line(&err);
    assert_eq!(code, 1, "{line}");
    assert!(line.contains("AKIDNOBODYKNOWS"), "{line}");
    assert!(line.contains("check AWS_ACCESS_KEY_ID"), "{line}");
}

#[test]
fn a_missing_bucket_is_named() {
    let db = sample_copy();
    let empty = tempfile::tempdir().unwrap();
    let server = S3Server::in_process();
    let env = server_env(&server, &[]);
    let url = "s3://no-such-bucket/prod";
    for (cmd, dir) in [("pull", empty.path()), ("push", db.path())] {
        let (code, _, err) = run(&[cmd, url, "-d", dir.to_str().unwrap()], &env);
        let line = one_line(&err);
        assert_eq!(code, 1, "{cmd}: {line}");
        assert!(
            line.contains("bucket \"no-such-bucket\" does not exist"),
            "{cmd}: {line}"
        );
        assert!(line.contains("create the bucket"), "{cmd}: {line}");
        assert!(!line.contains("not managed by pqsync"), "{cmd}: {line}");
    }
    // The pull left nothing behind.
    assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0);
}

#[test]
fn a_plain_http_endpoint_needs_allow_http() {
    let db = sample_copy();
    let server = S3Server::in_process();
    let env = server_env(&server, &[("AWS_ALLOW_HTTP", "")]);
    let url = server.unique_url("http");
    let (code, _, err) = run(&["push", &url, "-d", db.path().to_str().unwrap()], &env);
    let line = one_line(&err);
    assert_eq!(code, 2, "{line}");
    assert!(line.contains(&server.endpoint), "{line}");
    assert!(line.contains("AWS_ALLOW_HTTP=true"), "{line}");
    assert_eq!(server.request_count(), 0);
}

/// A copy limit pqsync cannot use is a usage error named before any
/// request, with the range it takes.
#[test]
fn a_bad_copy_limit_is_refused_before_any_request() {
    let db = sample_copy();
    let server = S3Server::in_process();
    let url = server.unique_url("limit");
    for bad in ["5GB", "1024", "99999999999"] {
        let env = server_env(&server, &[("PQSYNC_COPY_LIMIT", bad)]);
        let (code, _, err) = run(&["push", &url, "-d", db.path().to_str().unwrap()], &env);
        let line = one_line(&err);
        assert_eq!(code, 2, "{line}");
        assert!(line.contains("PQSYNC_COPY_LIMIT"), "{line}");
        assert!(
            line.contains("in bytes") && line.contains("unset it"),
            "{line}"
        );
    }
    assert_eq!(server.request_count(), 0);
}

#[test]
fn a_refused_connection_or_unknown_host_names_the_endpoint() {
    let db = sample_copy();
    let d = db.path().to_str().unwrap();
    let server = S3Server::in_process();
    for endpoint in [
        format!("http://127.0.0.1:{}", closed_port()),
        "http://no-such-host.invalid:9000".to_string(),
    ] {
        let env = server_env(&server, &[("AWS_ENDPOINT_URL", &endpoint)]);
        let (code, _, err) = run(
            &["status", "s3://bucket/prod", "-d", d, "--timeout", "3"],
            &env,
        );
        let line = one_line(&err);
        assert_eq!(code, 1, "{line}");
        assert!(
            line.contains(&format!("cannot connect to {endpoint}")),
            "{line}"
        );
        assert!(line.contains("check the endpoint"), "{line}");
    }
}

/// An endpoint that accepts connections and never answers: a one-request
/// command gives up within 30 s by default, saying what it waits for while
/// it retries.
#[test]
fn an_endpoint_that_never_answers_fails_within_30_seconds() {
    let db = sample_copy();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    // Accept and hold every connection, never writing a byte.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming().flatten() {
            held.push(conn);
        }
    });
    let server = S3Server::in_process();
    let env = server_env(&server, &[("AWS_ENDPOINT_URL", &endpoint)]);
    let started = Instant::now();
    let (code, out, err) = run(
        &[
            "status",
            "s3://bucket/prod",
            "-d",
            db.path().to_str().unwrap(),
            "--json",
        ],
        &env,
    );
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(code, 1, "{err}");
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("pqsync: warning: waiting for ") && l.contains(&endpoint)),
        "one line says what it waits for:\n{err}"
    );
    let last = lines.last().unwrap();
    assert!(
        last.contains(&format!("{endpoint} did not answer within 30 s")),
        "{err}"
    );
    assert!(last.contains("--timeout"), "{last}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["success"], false);
    assert_eq!(doc["error"]["kind"], "timeout");
}

/// `-v` shows the error's chain once, under its one line.
#[test]
fn verbose_shows_the_chain_once() {
    let db = sample_copy();
    let server = S3Server::in_process();
    let env = server_env(&server, &[("AWS_SECRET_ACCESS_KEY", "not-the-secret")]);
    let url = server.unique_url("verbose");
    let (_, _, err) = run(
        &["status", &url, "-d", db.path().to_str().unwrap(), "-v"],
        &env,
    );
    let causes: Vec<&str> = err
        .lines()
        .filter(|l| l.trim_start().starts_with("caused by:"))
        .collect();
    assert!(!causes.is_empty(), "{err}");
    let mut seen = std::collections::HashSet::new();
    for c in &causes {
        assert!(seen.insert(*c), "repeated cause {c:?} in:\n{err}");
    }
    let body_mentions = err.matches("SignatureDoesNotMatch").count();
    assert!(body_mentions <= 2, "the XML body is not repeated:\n{err}");
}
