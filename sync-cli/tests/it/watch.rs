//! `--watch`: segments shipped as they are sealed, also while a round runs
//! and across a lost connection, kill -9 and a restart; clean stops on
//! SIGTERM and SIGINT. Judged by the S3 server's backing directory and by
//! restores.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pqsync_testdata::s3::S3Server;

use super::*;

/// A TCP forwarder to the S3 server that can be cut off, and that delays
/// each connection so rounds take a while.
struct Switch {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
}

impl Switch {
    fn start(upstream: &str, delay: Duration) -> Self {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(AtomicU64::new(0));
        let (u, c) = (up.clone(), connections.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                c.fetch_add(1, Ordering::SeqCst);
                if !u.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let Ok(server) = TcpStream::connect(&upstream) else {
                        return;
                    };
                    let pipe = |mut from: TcpStream, mut to: TcpStream| {
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 16 * 1024];
                            while let Ok(n) = from.read(&mut buf) {
                                if n == 0 || to.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                            let _ = to.shutdown(std::net::Shutdown::Write);
                        })
                    };
                    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
                    pipe(server, client);
                });
            }
        });
        Switch {
            addr,
            up,
            connections,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Waits until `done` holds, for at most a minute.
fn eventually(what: &str, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Seals segment `seq` in `db`: a copy of segment 3 (with `seq` appended
/// so each is distinct), listed in the segment manifest.
fn seal(db: &Path, seq: u64) -> Vec<u8> {
    let events = db.join("events");
    let mut bytes = std::fs::read(events.join("seg-0003.parquet")).unwrap();
    bytes.extend_from_slice(format!("{seq}").as_bytes());
    let name = format!("seg-{seq:04}.parquet");
    std::fs::write(events.join(&name), &bytes).unwrap();
    let path = events.join("_manifest.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    m["segments"].as_array_mut().unwrap().push(serde_json::json!({
        "seq": seq, "path": format!("events/{name}"), "minTs": 1_767_900_000_000i64 + seq as i64,
        "maxTs": 1_767_900_000_000i64 + seq as i64, "count": 100, "sizeBytes": bytes.len()
    }));
    m["nextSeq"] = (seq + 1).into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    bytes
}

fn signal(child: &std::process::Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Waits for the child to exit, at most 30 s; its status and stderr.
fn finish(mut child: std::process::Child, log: &Path) -> (std::process::ExitStatus, String) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "watch did not stop: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn push_watch_ships_segments_through_outages_restarts_and_signals() {
    let server = S3Server::in_process();
    let switch = Switch::start(&server.endpoint, Duration::from_millis(150));
    let url = server.unique_url("watch");
    let prefix = url.splitn(4, '/').nth(3).unwrap().to_string();
    let stored = server
        .root
        .as_ref()
        .unwrap()
        .join(&server.bucket)
        .join(&prefix);
    let db = sample_copy();
    let logs = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        let log = logs.path().join(name);
        let child = binary(Some(&server))
            .env("AWS_ENDPOINT_URL", switch.endpoint())
            .args(["--no-progress", "push", &url, "-d"])
            .arg(db.path())
            .args(["--watch", "--debounce", "200ms", "--timeout", "2"])
            .arg("--metrics-file")
            .arg(logs.path().join("watch.prom"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (child, log)
    };
    let arrived = |seq: u64, bytes: &[u8]| {
        let path = stored.join(format!("events/seg-{seq:04}.parquet"));
        std::fs::read(path).is_ok_and(|b| b == bytes)
    };

    let (child, log) = spawn("first.log");
    eventually("the first round commits", || {
        stored.join("_meta/manifest.json").exists()
    });

    // A sealed segment reaches the remote within the debounce and a round.
    let bytes = seal(db.path(), 4);
    let lag = eventually("segment 4 is on the remote", || arrived(4, &bytes));
    eprintln!("watch lag for one sealed segment: {lag:?} (debounce 200 ms, 150 ms per connection)");
    // Each round writes its own figures while the watch goes on.
    let changed = format!("pqsync_run_files_changed{{command=\"push\",remote=\"{url}\"}} 2\n");
    eventually("the round's metrics are written", || {
        std::fs::read_to_string(logs.path().join("watch.prom")).is_ok_and(|m| m.contains(&changed))
    });

    // A segment written while a round runs is shipped by the next one.
    let b5 = seal(db.path(), 5);
    let seen = switch.connections.load(Ordering::SeqCst);
    eventually("a round starts", || {
        switch.connections.load(Ordering::SeqCst) > seen
    });
    let b6 = seal(db.path(), 6);
    eventually("segments 5 and 6 are on the remote", || {
        arrived(5, &b5) && arrived(6, &b6)
    });

    // A lost connection: the round fails, watching goes on, and the retry
    // ships the segment once the store answers again.
    switch.up.store(false, Ordering::SeqCst);
    let b7 = seal(db.path(), 7);
    eventually("the round fails", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("failed") && l.contains("retrying"))
    });
    switch.up.store(true, Ordering::SeqCst);
    eventually("segment 7 is on the remote", || arrived(7, &b7));

    // SIGTERM stops it cleanly.
    signal(&child, "-TERM");
    let (status, text) = finish(child, &log);
    assert!(status.success(), "{text}");
    assert!(text.contains("stopped"), "{text}");

    // kill -9, a segment sealed while nothing watches, and a restart.
    let (mut child, _) = spawn("second.log");
    std::thread::sleep(Duration::from_millis(500));
    child.kill().unwrap();
    child.wait().unwrap();
    let b8 = seal(db.path(), 8);
    let (child, log) = spawn("third.log");
    eventually("segment 8 is on the remote", || arrived(8, &b8));
    signal(&child, "-INT");
    let (status, text) = finish(child, &log);
    assert!(status.success(), "{text}");

    // The remote holds exactly the database, as read from the server's
    // own directory.
    let remote = tree_files(&stored);
    let local = tree_files(db.path());
    assert_eq!(
        remote.keys().collect::<Vec<_>>(),
        local.keys().collect::<Vec<_>>()
    );
    assert!(remote == local, "the remote differs from the database");
}

fn snapshot_tags(repo: &str) -> Vec<Vec<String>> {
    let v = json_of(&pqsync(None).args(["snapshots", repo, "--json"]).stdout_ok());
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn backup_watch_ships_the_event_log_between_full_snapshots() {
    let db = sample_copy();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let log = dir.path().join("watch.log");
    let child = binary(None)
        .args(["--no-progress", "backup", repo, "-d"])
        .arg(db.path())
        .args(["--watch", "--debounce", "200ms", "--every", "1h"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    eventually("the first snapshot", || {
        std::path::Path::new(repo).join("index").exists() && snapshot_tags(repo).len() == 1
    });
    // A data file changes: it waits for the next full snapshot.
    let data = db.path().join("data/users/data.parquet");
    let original = std::fs::read(&data).unwrap();
    std::fs::write(&data, b"not yet").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(snapshot_tags(repo).len(), 1);
    // A sealed segment is shipped at once, with the rest as before.
    let bytes = seal(db.path(), 4);
    eventually("an event-log snapshot", || snapshot_tags(repo).len() == 2);
    assert_eq!(snapshot_tags(repo)[1], ["event-log"]);
    signal(&child, "-TERM");
    let (status, text) = finish(child, &log);
    assert!(status.success(), "{text}");

    let out = dir.path().join("restored");
    pqsync(None)
        .args(["restore", &format!("{repo}:latest"), "-d"])
        .arg(&out)
        .stdout_ok();
    assert_eq!(
        std::fs::read(out.join("events/seg-0004.parquet")).unwrap(),
        bytes
    );
    assert_eq!(
        std::fs::read(out.join("data/users/data.parquet")).unwrap(),
        original
    );
}
