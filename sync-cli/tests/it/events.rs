//! The event log: `events` queries and recovery (`restore --entity`,
//! `--namespace`, `--at` with later segments) on databases whose events
//! the test writes itself, with every entity's state known at every time.

use std::collections::BTreeMap;

use pqsync_testdata::generate::{entity_file, event_segment, LogEvent};
use pqsync_testdata::s3::S3Server;
use serde_json::json;

use super::*;

/// Events start here (ms), one second apart.
const T0: i64 = 1_800_000_000_000;
const PER_SEGMENT: usize = 100;

/// A deterministic history over `users` (u0..u9) and `posts`: creates,
/// update chains, deletes, re-creates and relationship events.
fn history(n: usize) -> Vec<LogEvent> {
    let mut live: BTreeMap<String, i64> = BTreeMap::new();
    let mut seed: u64 = 42;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let mut out = Vec::new();
    for k in 0..n {
        let ts = T0 + k as i64 * 1000;
        let id = format!("{ts:013}-{k:05}");
        let user = format!("u{}", next() % 10);
        let target = format!("users:{user}");
        let state = |v: i64| {
            json!({"$id": format!("users/{user}"), "$type": "User", "name": format!("User {user}"),
                   "createdAt": T0, "version": v, "data": {"v": v, "k": k}})
        };
        let roll = next() % 10;
        let (op, before, after) = if roll >= 8 {
            let rel = format!("posts:p{}:author:{target}", next() % 5);
            let op = if roll == 9 {
                "REL_DELETE"
            } else {
                "REL_CREATE"
            };
            out.push(LogEvent {
                id,
                ts,
                op: op.into(),
                target: rel,
                before: None,
                after: Some(json!({"predicate": "author"})),
                actor: "system".into(),
            });
            continue;
        } else {
            match live.get(&user).copied() {
                None => {
                    live.insert(user.clone(), 1);
                    ("CREATE", None, Some(state(1)))
                }
                Some(v) if roll < 2 => {
                    live.remove(&user);
                    ("DELETE", Some(state(v)), None)
                }
                Some(v) => {
                    live.insert(user.clone(), v + 1);
                    ("UPDATE", Some(state(v)), Some(state(v + 1)))
                }
            }
        };
        out.push(LogEvent {
            id,
            ts,
            op: op.into(),
            target,
            before,
            after,
            actor: format!("users/u{}", next() % 10),
        });
    }
    out
}

/// Every user's state after the events up to and including `at`, computed
/// here from the history alone.
fn states_at(events: &[LogEvent], at: i64) -> BTreeMap<String, Value> {
    let mut m = BTreeMap::new();
    for e in events.iter().filter(|e| e.ts <= at) {
        let Some(id) = e.target.strip_prefix("users:") else {
            continue;
        };
        match e.op.as_str() {
            "DELETE" => {
                m.remove(id);
            }
            "CREATE" | "UPDATE" => {
                m.insert(id.to_string(), e.after.clone().unwrap());
            }
            _ => {}
        }
    }
    m
}

/// Writes `segments` segments of the history (in row groups of 25) and
/// their manifest into `db`; with `data_at`, also `data/users/data.parquet`
/// as of that time.
fn write_log(db: &Path, events: &[LogEvent], segments: usize, data_at: Option<i64>) {
    std::fs::create_dir_all(db.join("events")).unwrap();
    let mut listed = Vec::new();
    for (i, seg) in events.chunks(PER_SEGMENT).take(segments).enumerate() {
        let seq = i + 1;
        let path = format!("events/seg-{seq:04}.parquet");
        let bytes = event_segment(seg, 25).unwrap();
        std::fs::write(db.join(&path), &bytes).unwrap();
        age(&db.join(&path));
        listed.push(json!({
            "seq": seq, "path": path, "minTs": seg[0].ts, "maxTs": seg.last().unwrap().ts,
            "count": seg.len(), "sizeBytes": bytes.len(), "createdAt": seg.last().unwrap().ts + 500
        }));
    }
    let manifest = json!({"version": 1, "segments": listed, "nextSeq": segments + 1});
    let path = db.join("events/_manifest.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
    age(&path);
    if let Some(at) = data_at {
        let rows: Vec<Value> = states_at(events, at)
            .into_values()
            .map(|mut v| {
                v["data"] = Value::String(v["data"].to_string());
                v
            })
            .collect();
        let path = db.join("data/users/data.parquet");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, entity_file(&rows).unwrap()).unwrap();
        age(&path);
    }
}

fn ndjson(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[test]
fn events_are_listed_from_the_row_groups_that_overlap() {
    let server = S3Server::start();
    let events = history(300);
    let db = tempfile::tempdir().unwrap();
    write_log(db.path(), &events, 3, None);
    let (after, before) = (T0 + 126_500, T0 + 140_500);
    let expect = |f: &dyn Fn(&LogEvent) -> bool| -> Vec<String> {
        events
            .iter()
            .filter(|e| f(e))
            .map(|e| e.id.clone())
            .collect()
    };
    let ids = |out: &[u8]| -> Vec<String> {
        ndjson(out)
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    };

    // A window inside one segment: the others are not opened, and row
    // groups outside it are skipped.
    let out = pqsync(None)
        .args(["events", db.path().to_str().unwrap(), "--ndjson"])
        .args(["--after", &iso(after), "--before", &iso(before)])
        .stdout_ok();
    assert_eq!(ids(&out), expect(&|e| e.ts >= after && e.ts < before));
    let v = json_of(
        &pqsync(None)
            .args(["events", db.path().to_str().unwrap(), "--json"])
            .args(["--after", &iso(after), "--before", &iso(before)])
            .stdout_ok(),
    );
    assert_eq!(v["filesRead"], 1, "{v}");
    assert_eq!(v["filesSkipped"], 2, "{v}");
    assert_eq!(v["rowGroupsRead"], 1, "{v}");
    assert_eq!(v["rowGroupsSkipped"], 3, "{v}");
    let log: u64 = (1..=3)
        .map(|s| {
            std::fs::metadata(db.path().join(format!("events/seg-{s:04}.parquet")))
                .unwrap()
                .len()
        })
        .sum();
    assert_eq!(v["logBytes"], log);
    assert!(v["bytesRead"].as_u64().unwrap() * 5 < log, "{v}");

    // Operations, namespaces and targets, with and without `before`/`after`.
    let out = pqsync(None)
        .args(["events", db.path().to_str().unwrap(), "--ndjson"])
        .args(["--op", "delete", "--namespace", "users"])
        .stdout_ok();
    assert_eq!(ids(&out), expect(&|e| e.op == "DELETE"));
    let out = pqsync(None)
        .args(["events", db.path().to_str().unwrap(), "--ndjson", "--full"])
        .args(["--target", "users/u3"])
        .stdout_ok();
    let got = ndjson(&out);
    assert_eq!(
        got.iter()
            .map(|v| v["id"].as_str().unwrap())
            .collect::<Vec<_>>(),
        expect(&|e| e.target == "users:u3" || e.target.ends_with(":users:u3"))
    );
    let first_update = got.iter().find(|v| v["op"] == "UPDATE").unwrap();
    let original = events.iter().find(|e| e.id == first_update["id"]).unwrap();
    assert_eq!(first_update["after"], original.after.clone().unwrap());
    assert_eq!(first_update["before"], original.before.clone().unwrap());

    // The same query against a remote reads the same events with range
    // reads.
    let url = server.unique_url("events");
    pqsync(Some(&server))
        .args(["push", &url, "-d", db.path().to_str().unwrap()])
        .stdout_ok();
    let before_requests = server.request_count();
    let v = json_of(
        &pqsync(Some(&server))
            .args(["events", &url, "--json"])
            .args(["--after", &iso(after), "--before", &iso(before)])
            .stdout_ok(),
    );
    let got: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, expect(&|e| e.ts >= after && e.ts < before));
    assert!(v["bytesRead"].as_u64().unwrap() * 5 < log, "{v}");
    if server.is_in_process() {
        // The manifest, the segment manifest, one footer and the column
        // chunks of one row group.
        assert!(server.request_count() - before_requests <= 10);
    }

    // One damaged segment among three: the others are still listed, the
    // damaged one is named, and the exit status says the answer is partial.
    std::fs::write(
        db.path().join("events/seg-0002.parquet"),
        b"not parquet at all",
    )
    .unwrap();
    let out = pqsync(None)
        .args(["events", db.path().to_str().unwrap(), "--ndjson"])
        .assert()
        .code(1);
    let out = out.get_output();
    assert_eq!(
        ids(&out.stdout),
        expect(&|e| !(PER_SEGMENT as i64..2 * PER_SEGMENT as i64).contains(&((e.ts - T0) / 1000)))
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("events/seg-0002.parquet: skipped"), "{err}");
}

#[test]
fn entities_and_namespaces_are_recovered_as_they_stood() {
    let events = history(400);
    let db = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let repo_url = repo.path().join("repo");
    let repo_url = repo_url.to_str().unwrap();
    let d = db.path().to_str().unwrap();
    // Snapshot 1: three segments and the data file as of their end.
    let s1_end = events[299].ts;
    write_log(db.path(), &events, 3, Some(s1_end));
    pqsync(None)
        .args(["backup", repo_url, "-d", d, "--time", &iso(s1_end + 500)])
        .stdout_ok();
    // Snapshot 2: a fourth segment, the data file at its end.
    let s2_end = events[399].ts;
    write_log(db.path(), &events, 4, Some(s2_end));
    pqsync(None)
        .args(["backup", repo_url, "-d", d, "--time", &iso(s2_end + 500)])
        .stdout_ok();

    // One entity at many times, against the states computed here.
    for k in (0..400).step_by(7) {
        let at = events[k].ts;
        for user in ["u1", "u4", "u7"] {
            let out = pqsync(None)
                .args(["restore", repo_url, "--entity", &format!("users/{user}")])
                .args(["--at", &iso(at), "--json"])
                .stdout_ok();
            let v = json_of(&out);
            let want = states_at(&events, at).remove(user);
            assert_eq!(v["exists"], want.is_some(), "{user} at {k}: {v}");
            assert_eq!(
                v["state"],
                want.clone().unwrap_or(Value::Null),
                "{user} at {k}"
            );
            if want.is_none() && !v["lastEvent"].is_null() {
                assert_eq!(v["lastEvent"]["op"], "DELETE");
                assert!(v["deleted"].is_object(), "{v}");
            }
        }
    }
    // Without --json: the state on stdout, or nothing and a note for a
    // deleted entity.
    let deleted = events
        .iter()
        .find(|e| e.op == "DELETE" && e.target.starts_with("users:"))
        .unwrap();
    let user = deleted.target.strip_prefix("users:").unwrap();
    let out = pqsync(None)
        .args(["restore", repo_url, "--entity", &format!("users/{user}")])
        .args(["--at", &iso(deleted.ts)])
        .assert()
        .success();
    let out = out.get_output();
    assert!(out.stdout.is_empty());
    assert!(String::from_utf8_lossy(&out.stderr).contains("was deleted at"));

    // A whole namespace: snapshot 1's data file, then snapshot 2's events.
    for at in [events[150].ts, s1_end, events[333].ts, events[399].ts + 10] {
        let out = pqsync(None)
            .args(["restore", repo_url, "--namespace", "users", "--ndjson"])
            .args(["--at", &iso(at)])
            .stdout_ok();
        let got: BTreeMap<String, Value> = ndjson(&out)
            .into_iter()
            .map(|v| {
                let id = v["$id"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("users/")
                    .to_string();
                (id, v)
            })
            .collect();
        assert_eq!(got, states_at(&events, at), "namespace at {at}");
    }
}

#[test]
fn a_point_in_time_restore_carries_later_segments() {
    let events = history(400);
    let db = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let repo = tempfile::tempdir().unwrap();
    let repo_url = repo.path().join("repo");
    let repo_url = repo_url.to_str().unwrap();
    let d = db.path().to_str().unwrap();
    let s1_end = events[299].ts;
    write_log(db.path(), &events, 3, None);
    pqsync(None)
        .args(["backup", repo_url, "-d", d, "--time", &iso(s1_end + 500)])
        .stdout_ok();
    write_log(db.path(), &events, 4, None);
    pqsync(None)
        .args([
            "backup",
            repo_url,
            "-d",
            d,
            "--time",
            &iso(events[399].ts + 500),
        ])
        .stdout_ok();

    // Between the snapshots: the first, plus segment 4 from the second.
    let at = events[350].ts + 300;
    let v = json_of(
        &pqsync(None)
            .args(["restore", repo_url, "--at", &iso(at), "--json", "-d"])
            .arg(out.path().join("db"))
            .stdout_ok(),
    );
    let root = out.path().join("db");
    assert_eq!(
        std::fs::read(root.join("events/seg-0004.parquet")).unwrap(),
        std::fs::read(db.path().join("events/seg-0004.parquet")).unwrap()
    );
    let point: Value =
        serde_json::from_slice(&std::fs::read(root.join("_meta/restore-point.json")).unwrap())
            .unwrap();
    assert_eq!(point["lastEventId"], events[350].id.as_str(), "{point}");
    assert_eq!(point["lastEventTs"], events[350].ts);
    assert_eq!(point["gapMs"], 300);
    assert_eq!(point["segmentsAdded"][0]["seq"], 4);
    assert_eq!(point["snapshot"], v["snapshot"]["id"]);
    // The snapshot restored is the first: its segment manifest lists 3.
    let m: Value =
        serde_json::from_slice(&std::fs::read(root.join("events/_manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["segments"].as_array().unwrap().len(), 3);

    // Before the first segment of the second snapshot starts: nothing added.
    let at = s1_end + 700;
    let out2 = tempfile::tempdir().unwrap();
    pqsync(None)
        .args(["restore", repo_url, "--at", &iso(at), "-d"])
        .arg(out2.path())
        .stdout_ok();
    assert!(!out2.path().join("events/seg-0004.parquet").exists());
    let point: Value = serde_json::from_slice(
        &std::fs::read(out2.path().join("_meta/restore-point.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(point["segmentsAdded"].as_array().unwrap().len(), 0);
    assert_eq!(point["lastEventTs"], s1_end);
}
