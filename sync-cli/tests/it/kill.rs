//! `kill -9` at random moments: after every kill the remote manifest names
//! only complete objects with matching hashes, the next run completes, and
//! it re-sends at most the parts and files that were in flight.

use std::time::Instant;

use pqsync_core::object_store::aws::AmazonS3Builder;
use pqsync_core::object_store::{ObjectStore, ObjectStoreExt};
use pqsync_core::{HashAlgorithm, Manifest};
use pqsync_testdata::generate::{generate, GenOptions};
use pqsync_testdata::s3::S3Server;
use rand::{Rng, SeedableRng};

use crate::{age, binary, pqsync, tree_files};

/// The S3 prefix of an `s3://bucket/prefix` URL.
fn prefix_of(url: &str) -> &str {
    url.trim_start_matches("s3://").split_once('/').unwrap().1
}

/// Checks that every manifest entry names a complete object with the
/// entry's hash; returns how many entries the manifest has (0 if none yet).
async fn check_remote(store: &dyn ObjectStore, prefix: &str) -> usize {
    let mloc = format!("{prefix}/_meta/manifest.json");
    let bytes = match store.get(&mloc.as_str().into()).await {
        Ok(g) => g.bytes().await.unwrap(),
        Err(pqsync_core::object_store::Error::NotFound { .. }) => return 0,
        Err(e) => panic!("{e}"),
    };
    let m = Manifest::from_slice(&bytes, &mloc).unwrap();
    for (path, e) in &m.files {
        let loc = format!("{prefix}/{path}");
        let data = store
            .get(&loc.as_str().into())
            .await
            .unwrap_or_else(|err| panic!("manifest names {path}, which is missing: {err}"))
            .bytes()
            .await
            .unwrap();
        assert_eq!(data.len() as u64, e.size, "{path}: incomplete object");
        assert_eq!(
            HashAlgorithm::Blake3.digest(&data).to_string(),
            e.hash,
            "{path}: object does not match its manifest entry"
        );
    }
    m.files.len()
}

/// An S3 client of the test server that shares no code with pqsync's.
fn client_of(server: &S3Server) -> impl ObjectStore {
    AmazonS3Builder::new()
        .with_endpoint(&server.endpoint)
        .with_bucket_name(&server.bucket)
        .with_access_key_id(&server.access_key)
        .with_secret_access_key(&server.secret_key)
        .with_region(&server.region)
        .with_allow_http(true)
        .build()
        .unwrap()
}

/// Kills per trial: `PQSYNC_KILL_TRIALS`, else `default`.
fn trials_or(default: usize) -> usize {
    std::env::var("PQSYNC_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn kill_nine_at_random_moments_then_resume() {
    let trials = trials_or(20);
    let server = S3Server::start();
    let store = client_of(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();

    let db = tempfile::tempdir().unwrap();
    generate(
        db.path(),
        &GenOptions {
            extra_files: 100,
            big_file_mib: 24,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let files = tree_files(db.path());
    for p in files.keys() {
        age(&db.path().join(p));
    }
    let total: u64 = files.values().map(|v| v.len() as u64).sum();
    let largest_single_put = files
        .values()
        .map(|v| v.len() as u64)
        .filter(|n| *n <= pqsync_core::StoreTree::MULTIPART_THRESHOLD)
        .max()
        .unwrap();
    let part = pqsync_core::StoreTree::part_size(24 << 20);
    drop(files);

    // Calibrate: how long a whole push takes.
    let started = Instant::now();
    pqsync(Some(&server))
        .args(["push", &server.unique_url("kill-calibrate"), "-d"])
        .arg(db.path())
        .assert()
        .success();
    let full = started.elapsed();

    let mut rng = rand::rngs::StdRng::seed_from_u64(20261122);
    let mut resent_max = 0u64;
    let mut resent_sum = 0u64;
    let mut killed_mid_run = 0;
    for trial in 0..trials {
        let url = server.unique_url(&format!("kill{trial}"));
        let prefix = prefix_of(&url).to_string();
        let delay = full.mul_f64(rng.random_range(0.02..1.0));
        let mut child = binary(Some(&server))
            .args(["--no-progress", "push", &url, "-d"])
            .arg(db.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        let t_check = Instant::now();
        rt.block_on(check_remote(&store, &prefix));
        let t_rerun = Instant::now();
        pqsync(Some(&server))
            .args(["push", &url, "-d"])
            .arg(db.path())
            .assert()
            .success();
        let rerun = t_rerun.elapsed();
        let listed = rt.block_on(check_remote(&store, &prefix));
        if std::env::var("PQSYNC_KILL_DEBUG").is_ok() {
            eprintln!(
                "trial {trial}: delay {delay:?} check {:?} rerun {rerun:?}",
                t_rerun - t_check
            );
        }
        assert_eq!(
            listed,
            tree_files(db.path()).len(),
            "trial {trial}: all files committed"
        );

        if let Some(log) = &server.log {
            let sent: u64 = log
                .entries()
                .iter()
                .filter(|(l, _)| l.starts_with("PUT") && l.contains(&format!("/{prefix}/")))
                .filter(|(l, _)| !l.contains("/_meta/"))
                .map(|(_, b)| b)
                .sum();
            let resent = sent.saturating_sub(total);
            // At most the parts in flight plus the small files in flight
            // (eight at a time).
            let parts_in_flight = pqsync_core::StoreTree::RESUMABLE_PARTS_IN_FLIGHT as u64;
            let bound = parts_in_flight * part + 8 * largest_single_put;
            if resent > bound {
                for (l, b) in log.entries().iter().filter(|(l, _)| {
                    l.contains(&prefix) && (l.contains("big") || l.contains("manifest"))
                }) {
                    eprintln!("{l} {b}");
                }
            }
            assert!(
                resent <= bound,
                "trial {trial}: re-sent {resent} bytes (bound {bound})"
            );
            resent_max = resent_max.max(resent);
            resent_sum += resent;
        }
    }
    eprintln!(
        "kill trials: {trials} ({killed_mid_run} killed mid-run), full push {full:?}, re-sent bytes: max {resent_max}, mean {}",
        resent_sum / trials.max(1) as u64
    );
    assert!(
        killed_mid_run * 2 >= trials,
        "most kills should land mid-run"
    );
}

/// `kill -9` during pulls: every file that appears at its real path is
/// complete and matches the remote manifest (partial downloads stay in
/// temporary files, which the next run removes), and the next run finishes
/// the restore.
#[test]
fn kill_nine_during_pull_never_leaves_a_partial_file() {
    let server = S3Server::start();
    let db = tempfile::tempdir().unwrap();
    generate(
        db.path(),
        &GenOptions {
            extra_files: 100,
            big_file_mib: 24,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let url = server.unique_url("pullkill");
    pqsync(Some(&server))
        .args(["push", &url, "-d"])
        .arg(db.path())
        .assert()
        .success();
    let expected = tree_files(db.path());

    let calibrate = tempfile::tempdir().unwrap();
    let started = Instant::now();
    pqsync(Some(&server))
        .args(["pull", &url, "-d"])
        .arg(calibrate.path())
        .assert()
        .success();
    let full = started.elapsed();

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for trial in 0..8 {
        let out = tempfile::tempdir().unwrap();
        let mut child = binary(Some(&server))
            .args(["--no-progress", "pull", &url, "-d"])
            .arg(out.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(rng.random_range(0.05..1.0)));
        child.kill().unwrap();
        child.wait().unwrap();
        for (path, bytes) in tree_files(out.path()) {
            if path.contains(".pqsync.tmp") {
                continue;
            }
            assert_eq!(
                Some(&bytes),
                expected.get(&path),
                "trial {trial}: {path} is partial or wrong"
            );
        }
        pqsync(Some(&server))
            .args(["pull", &url, "-d"])
            .arg(out.path())
            .assert()
            .success();
        let restored: Vec<String> = tree_files(out.path()).into_keys().collect();
        assert!(
            restored.iter().all(|p| !p.contains(".pqsync.tmp")),
            "trial {trial}: temporary files left: {restored:?}"
        );
        assert_eq!(tree_files(out.path()), expected, "trial {trial}");
    }
}

/// The objects under `prefix/_meta/.pqsync/trash/`, as the BLAKE3 hashes of
/// their bytes.
async fn trash_hashes(store: &dyn ObjectStore, prefix: &str) -> std::collections::HashSet<String> {
    use futures::TryStreamExt;
    let root = format!("{prefix}/_meta/.pqsync/trash");
    let listed: Vec<_> = store
        .list(Some(&root.as_str().into()))
        .try_collect()
        .await
        .unwrap();
    let mut out = std::collections::HashSet::new();
    for meta in listed {
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.insert(HashAlgorithm::Blake3.digest(&bytes).to_string());
    }
    out
}

/// The BLAKE3 hash of the object at `prefix/rel`, if there is one.
async fn object_hash(store: &dyn ObjectStore, prefix: &str, rel: &str) -> Option<String> {
    let loc = format!("{prefix}/{rel}");
    // A key that is now a folder on the test server's file system reads
    // as an error: no object there.
    let got = store.get(&loc.as_str().into()).await.ok()?;
    let bytes = got.bytes().await.ok()?;
    Some(HashAlgorithm::Blake3.digest(&bytes).to_string())
}

/// `kill -9` at random moments of a push that deletes 40 files, turns a
/// file into a directory and a directory into a file. After every kill the
/// contract holds: every manifest entry names an object with exactly those
/// bytes, and every version the last commit named is still somewhere, at
/// its path or in the trash. The next push completes the change.
#[test]
fn kill_nine_during_deletions_and_swaps_keeps_the_contract() {
    let trials = trials_or(8);
    let server = S3Server::start();
    let store = client_of(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let no_trash = std::env::var("PQSYNC_KILL_NO_TRASH").is_ok();
    let base = tempfile::tempdir().unwrap();
    generate(
        base.path(),
        &GenOptions {
            extra_files: 44,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let write = |root: &std::path::Path, rel: &str, bytes: &[u8]| {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        age(&p);
    };
    write(
        base.path(),
        "data/swap/a.parquet",
        b"a file that becomes a folder",
    );
    for i in 0..3 {
        write(
            base.path(),
            &format!("data/fold/part-{i}.parquet"),
            b"in a folder that becomes a file",
        );
    }
    for p in tree_files(base.path()).keys() {
        age(&base.path().join(p));
    }
    // The change each trial pushes: 40 deletions and the two swaps.
    let change = |root: &std::path::Path| {
        let extras: Vec<String> = tree_files(root)
            .into_keys()
            .filter(|p| p.starts_with("snapshots/extra/"))
            .take(40)
            .collect();
        for p in extras {
            std::fs::remove_file(root.join(p)).unwrap();
        }
        std::fs::remove_file(root.join("data/swap/a.parquet")).unwrap();
        write(
            root,
            "data/swap/a.parquet/part-0.parquet",
            b"now inside the folder",
        );
        std::fs::remove_dir_all(root.join("data/fold")).unwrap();
        write(root, "data/fold", b"now a file");
    };
    let copy_of = |src: &std::path::Path| {
        let dst = tempfile::tempdir().unwrap();
        for (p, bytes) in tree_files(src) {
            write(dst.path(), &p, &bytes);
        }
        dst
    };

    // Calibrate: how long the changing push takes.
    let calibrate = copy_of(base.path());
    let url = server.unique_url("swapkill-calibrate");
    pqsync(Some(&server))
        .args(["push", &url, "-d"])
        .arg(calibrate.path())
        .assert()
        .success();
    change(calibrate.path());
    let started = Instant::now();
    pqsync(Some(&server))
        .args(["push", "--max-delete", "100%", "-d"])
        .arg(calibrate.path())
        .assert()
        .success();
    let full = started.elapsed();

    let mut rng = rand::rngs::StdRng::seed_from_u64(20261205);
    let mut killed_mid_run = 0;
    for trial in 0..trials {
        let db = copy_of(base.path());
        let url = server.unique_url(&format!("swapkill{trial}"));
        let prefix = prefix_of(&url).to_string();
        pqsync(Some(&server))
            .args(["push", &url, "-d"])
            .arg(db.path())
            .assert()
            .success();
        let committed: Vec<(String, String)> = {
            let mloc = format!("{prefix}/_meta/manifest.json");
            let bytes = rt
                .block_on(async {
                    store
                        .get(&mloc.as_str().into())
                        .await
                        .unwrap()
                        .bytes()
                        .await
                })
                .unwrap();
            Manifest::from_slice(&bytes, &mloc)
                .unwrap()
                .files
                .into_values()
                .map(|e| (e.path, e.hash.to_string()))
                .collect()
        };
        change(db.path());
        let delay = full.mul_f64(rng.random_range(0.0..1.2));
        let mut child = binary(Some(&server))
            .args(["--no-progress", "push", "--max-delete", "100%"])
            .args(no_trash.then_some("--no-trash"))
            .arg("-d")
            .arg(db.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Requests the killed process had sent still complete on the server
        // (as they would on a real store); let them.
        std::thread::sleep(std::time::Duration::from_millis(300));

        // The contract, after the kill.
        rt.block_on(check_remote(&store, &prefix));
        let trash = rt.block_on(trash_hashes(&store, &prefix));
        for (path, hash) in &committed {
            let here = rt.block_on(object_hash(&store, &prefix, path));
            assert!(
                here.as_deref() == Some(hash.as_str()) || trash.contains(hash),
                "trial {trial}: the committed version of {path} is gone (delay {delay:?})"
            );
        }

        // The next push completes the change.
        pqsync(Some(&server))
            .args(["push", "--max-delete", "100%", "-d"])
            .arg(db.path())
            .assert()
            .success();
        let listed = rt.block_on(check_remote(&store, &prefix));
        assert_eq!(listed, tree_files(db.path()).len(), "trial {trial}");
        let restored = tempfile::tempdir().unwrap();
        pqsync(Some(&server))
            .args(["pull", &url, "-d"])
            .arg(restored.path())
            .assert()
            .success();
        assert_eq!(
            tree_files(restored.path()),
            tree_files(db.path()),
            "trial {trial}"
        );
        if std::env::var("PQSYNC_KILL_DEBUG").is_ok() {
            eprintln!("trial {trial}: delay {delay:?} of {full:?}");
        }
    }
    eprintln!(
        "swap kill trials: {trials} ({killed_mid_run} killed mid-run), changing push {full:?}"
    );
    assert!(
        killed_mid_run * 2 >= trials,
        "most kills should land mid-run"
    );
}

/// `kill -9` during a mirror (a directory without a manifest to S3): the
/// destination's manifest names only complete objects, and the next mirror
/// finishes without sending again what the killed one completed, beyond
/// the parts and files in flight (its journal and part log are in the
/// state home).
#[test]
fn kill_nine_during_mirror_then_resume() {
    let trials = trials_or(6);
    let server = S3Server::start();
    let store = client_of(&server);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let src = tempfile::tempdir().unwrap();
    generate(
        src.path(),
        &GenOptions {
            extra_files: 100,
            big_file_mib: 24,
            ..GenOptions::default()
        },
    )
    .unwrap();
    let files = tree_files(src.path());
    let total: u64 = files.values().map(|v| v.len() as u64).sum();
    let largest_single_put = files
        .values()
        .map(|v| v.len() as u64)
        .filter(|n| *n <= pqsync_core::StoreTree::MULTIPART_THRESHOLD)
        .max()
        .unwrap();
    let part = pqsync_core::StoreTree::part_size(24 << 20);
    let count = files.len();
    drop(files);

    let started = Instant::now();
    pqsync(Some(&server))
        .arg("mirror")
        .arg(src.path())
        .arg(server.unique_url("mirror-kill-calibrate"))
        .assert()
        .success();
    let full = started.elapsed();

    let mut rng = rand::rngs::StdRng::seed_from_u64(20261205);
    let mut killed_mid_run = 0;
    let mut resent_max = 0u64;
    for trial in 0..trials {
        let url = server.unique_url(&format!("mirror-kill{trial}"));
        let prefix = prefix_of(&url).to_string();
        let delay = full.mul_f64(rng.random_range(0.2..0.9));
        let mut child = binary(Some(&server))
            .args(["--no-progress", "mirror"])
            .arg(src.path())
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        rt.block_on(check_remote(&store, &prefix));

        pqsync(Some(&server))
            .arg("mirror")
            .arg(src.path())
            .arg(&url)
            .assert()
            .success();
        assert_eq!(
            rt.block_on(check_remote(&store, &prefix)),
            count,
            "trial {trial}: all files committed"
        );
        if let Some(log) = &server.log {
            let sent: u64 = log
                .entries()
                .iter()
                .filter(|(l, _)| l.starts_with("PUT") && l.contains(&format!("/{prefix}/")))
                .filter(|(l, _)| !l.contains("/_meta/"))
                .map(|(_, b)| b)
                .sum();
            let resent = sent.saturating_sub(total);
            let parts_in_flight = pqsync_core::StoreTree::RESUMABLE_PARTS_IN_FLIGHT as u64;
            let bound = parts_in_flight * part + 8 * largest_single_put;
            assert!(
                resent <= bound,
                "trial {trial}: re-sent {resent} bytes (bound {bound})"
            );
            resent_max = resent_max.max(resent);
            // Counted by object and part: what the killed run finished is
            // not sent again; only what was in flight (8 transfers, and the
            // parts of the large file in flight) may be.
            let mut sends: std::collections::HashMap<(String, Option<String>), u32> =
                Default::default();
            for (l, b) in log.entries() {
                if !l.starts_with("PUT") || !l.contains(&format!("/{prefix}/")) || b == 0 {
                    continue;
                }
                let (path, query) = l.split_once('?').unwrap_or((l.as_str(), ""));
                if path.contains("/_meta/") {
                    continue;
                }
                let part = query
                    .split('&')
                    .find(|q| q.starts_with("partNumber="))
                    .map(str::to_string);
                *sends.entry((path.to_string(), part)).or_default() += 1;
            }
            let again = |parts: bool| -> u32 {
                sends
                    .iter()
                    .filter(|((_, p), _)| p.is_some() == parts)
                    .map(|(_, n)| n - 1)
                    .sum()
            };
            assert!(
                again(false) <= 8,
                "trial {trial}: {} files sent twice",
                again(false)
            );
            assert!(
                u64::from(again(true)) <= parts_in_flight,
                "trial {trial}: {} parts sent twice",
                again(true)
            );
        }
    }
    eprintln!(
        "mirror kill trials: {trials} ({killed_mid_run} killed mid-run), full mirror {full:?}, re-sent at most {resent_max} bytes of {total}"
    );
    assert!(
        killed_mid_run * 2 >= trials,
        "most kills should land mid-run"
    );
}
