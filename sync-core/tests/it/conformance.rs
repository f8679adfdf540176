//! The conformance suite: every behaviour below runs against a local
//! directory remote, the in-memory store, S3 over HTTP, and Azure Blob
//! Storage on Azurite.

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use pqsync_core::Resolution;
use pqsync_core::MANIFEST_PATH;
use pqsync_core::{HashAlgorithm, Mode, Strategy, SyncOptions, Trash, TRASH_DIR};

use crate::support::*;

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod dir {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&crate::support::RemoteKind::dir()).await
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let kind = crate::support::RemoteKind::Memory(std::sync::Arc::new(
                        object_store::memory::InMemory::new(),
                    ));
                    super::$name(&kind).await
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(&crate::support::RemoteKind::s3()).await
                }
            )*
        }
        /// On Azurite, in CI's Azure lane (skipped where
        /// `PQSYNC_TEST_AZURE_CONTAINER` is unset).
        mod azure {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(kind) = crate::support::RemoteKind::azure() else {
                        eprintln!("skipped: PQSYNC_TEST_AZURE_CONTAINER is unset");
                        return;
                    };
                    super::$name(&kind).await
                }
            )*
        }
    };
}

conformance!(
    status_uses_the_recorded_remote_as_its_base,
    push_then_pull_is_byte_identical,
    second_push_moves_only_changes,
    status_of_unchanged_tree_reads_nothing_and_makes_one_request,
    pull_propagates_deletions_but_first_sync_infers_none,
    concurrent_edits_conflict_and_manual_leaves_both,
    sync_newest_wins_both_ways,
    large_file_goes_multipart_and_round_trips,
    bit_rot_is_reported_and_local_copy_kept,
    sha256_remote_keeps_sha256,
    mirror_copies_and_second_mirror_is_noop,
    pull_from_unmanaged_remote_says_so,
    corrupt_remote_manifest_is_an_error_naming_the_manifest,
    hostile_remote_paths_are_refused,
    no_delete_keeps_remote_files,
    conflict_a_mode_cannot_apply_is_held_back_not_resolved,
    hash_flag_does_not_switch_an_existing_remote,
    probe_finds_whether_conditional_writes_are_enforced,
    concurrent_pushes_merge_and_overlaps_stop,
    max_delete_stops_a_mass_deletion,
    the_trash_keeps_overwritten_and_deleted_files,
    a_live_lease_blocks_a_second_writer_unless_forced,
);

async fn push_then_pull_is_byte_identical(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("roundtrip");
    let r = push(db.path(), remote.clone()).await;
    assert!(r.success && r.committed, "{:?}", r.errors);
    assert_eq!(r.uploaded.len(), 9);

    let out = tempfile::tempdir().unwrap();
    let r = pull(out.path(), kind.reopen(&remote)).await;
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(r.downloaded.len(), 9);
    assert_eq!(tree_files(db.path()), tree_files(out.path()));
    // Both sides now hold a manifest; the pulled one lists the same files.
    let local_m = local(out.path()).read_manifest().unwrap().unwrap();
    assert_eq!(local_m.files.len(), 9);
}

async fn second_push_moves_only_changes(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("changes");
    push(db.path(), remote.clone()).await;

    write_old(db.path(), "data/users/data.parquet", b"PAR1 users v2 PAR1");
    write_old(
        db.path(),
        "data/comments/data.parquet",
        b"PAR1 comments PAR1",
    );
    std::fs::remove_file(db.path().join("events/seg-0001.parquet")).unwrap();

    let remote2 = kind.reopen(&remote);
    let engine = engine_for(
        local(db.path()),
        remote2,
        (Mode::Push, SyncOptions::default()),
    );
    let plan = engine.plan().await.unwrap();
    let ups: Vec<_> = plan.uploads().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        ups,
        vec!["data/comments/data.parquet", "data/users/data.parquet"]
    );
    assert_eq!(plan.delete_remote(), vec!["events/seg-0001.parquet"]);
    assert_eq!(plan.unchanged().len(), 7);
    // GET manifest already made; 2 PUTs + 1 bulk delete + 1 manifest PUT,
    // plus the lease where commits cannot be compare-and-swap, plus the
    // deletion's guard: the manifest read again and, where objects carry
    // pqsync's hash, a HEAD of the object.
    let lease = if kind.conditional() { 0 } else { 2 };
    let guard = if matches!(kind, RemoteKind::Dir(_)) {
        1
    } else {
        2
    };
    // The trash: a COPY of the overwritten users file and of the deleted
    // segment, and one LIST for its expired runs; the deletion's
    // announcement: a PUT, and a DELETE after the deletes; the LIST of
    // other runs' announcements.
    let trash = 3 + 2 + 1;
    assert_eq!(plan.requests_so_far(), 1);
    assert_eq!(plan.requests_planned(), 4 + lease + guard + trash);
    let r = engine.execute(plan).await.unwrap();
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(r.uploaded.len(), 2);
    assert_eq!(r.deleted, vec!["events/seg-0001.parquet"]);
    if kind.conditional() {
        assert_eq!(r.requests, 5 + guard + trash);
    } else {
        // Lease: its object's PUT (the LIST is the announcements'), and
        // the release's DELETE.
        assert_eq!(r.requests, 5 + 2 + guard + trash);
    }
    let mut kept: Vec<&str> = r.kept.iter().map(|k| k.path.as_str()).collect();
    kept.sort();
    assert_eq!(kept, ["data/users/data.parquet", "events/seg-0001.parquet"]);

    let m = kind
        .reopen(&remote)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    assert!(!m.files.contains_key("events/seg-0001.parquet"));
    assert!(m.files.contains_key("data/comments/data.parquet"));
    // The deleted object is gone from the store too.
    let raw = kind.raw();
    let loc = kind.reopen(&remote).location("events/seg-0001.parquet");
    assert!(raw.head(&loc).await.is_err());
}

async fn status_of_unchanged_tree_reads_nothing_and_makes_one_request(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("status");
    push(db.path(), remote.clone()).await;
    // Prime the stat cache (files written by the test are "racy" until aged).
    let engine = engine_for(
        local(db.path()),
        kind.reopen(&remote),
        (Mode::Sync, SyncOptions::default()),
    );
    let st = engine.status().await.unwrap();
    assert!(st.is_synced, "{:?}", st.diff);
    assert_eq!(st.files_hashed, 0, "unchanged files must not be read");
    assert_eq!(st.requests, 1);
    assert_eq!(st.diff.unchanged.len(), 9);
}

/// After a sync, status compares with the remote manifest that sync left
/// (recognised by its commit id) instead of reading the base: deletions are
/// still inferred, and once another writer commits, the base is read again.
async fn status_uses_the_recorded_remote_as_its_base(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("stamp");
    push(db.path(), remote.clone()).await;
    let state = local(db.path()).state_dir();
    let base: Vec<std::path::PathBuf> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            name.starts_with("base-") && name.ends_with(".bin")
        })
        .collect();
    assert_eq!(base.len(), 1, "{base:?}");
    // Without the base file, only the shortcut can still infer a deletion.
    let saved = std::fs::read(&base[0]).unwrap();
    std::fs::remove_file(&base[0]).unwrap();
    std::fs::remove_file(db.path().join("data/posts/data.parquet")).unwrap();
    let status = |tree| async {
        engine_for(local(db.path()), tree, (Mode::Sync, SyncOptions::default()))
            .status()
            .await
            .unwrap()
    };
    let st = status(kind.reopen(&remote)).await;
    assert_eq!(st.diff.deleted_locally, ["data/posts/data.parquet"]);
    assert!(st.diff.to_download.is_empty(), "{:?}", st.diff);

    // Another writer commits: the stamp no longer matches, the base is read
    // (here: absent, so nothing is inferred: the deleted file reads as
    // remote-only, and the file changed remotely as a conflict).
    let other = tempfile::tempdir().unwrap();
    pull(other.path(), kind.reopen(&remote)).await;
    write_old(
        other.path(),
        "data/users/data.parquet",
        b"PAR1 users v9 PAR1",
    );
    assert!(push(other.path(), kind.reopen(&remote)).await.committed);
    let st = status(kind.reopen(&remote)).await;
    let down: Vec<&str> = st
        .diff
        .to_download
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(down, ["data/posts/data.parquet"]);
    assert_eq!(st.diff.conflicts.len(), 1);
    // With the base back, the deletion is inferred again.
    std::fs::write(&base[0], saved).unwrap();
    let st = status(kind.reopen(&remote)).await;
    assert_eq!(st.diff.deleted_locally, ["data/posts/data.parquet"]);
    let down: Vec<&str> = st
        .diff
        .to_download
        .iter()
        .map(|e| e.path.as_str())
        .collect();
    assert_eq!(down, ["data/users/data.parquet"]);
}

async fn pull_propagates_deletions_but_first_sync_infers_none(kind: &RemoteKind) {
    let a = small_db();
    let remote = kind.tree("deletes");
    push(a.path(), remote.clone()).await;
    let b = tempfile::tempdir().unwrap();
    pull(b.path(), kind.reopen(&remote)).await;

    // A deletes a file and pushes; B pulls and loses it too.
    std::fs::remove_file(a.path().join("indexes/bloom/users.bloom")).unwrap();
    let r = push(a.path(), kind.reopen(&remote)).await;
    assert_eq!(r.deleted, vec!["indexes/bloom/users.bloom"]);
    let r = pull(b.path(), kind.reopen(&remote)).await;
    assert_eq!(r.deleted, vec!["indexes/bloom/users.bloom"]);
    assert!(
        !b.path().join("indexes/bloom").exists(),
        "empty directories are removed"
    );
    assert_eq!(tree_files(a.path()), tree_files(b.path()));

    // A fresh directory with an extra file, first sync: nothing is deleted
    // anywhere, the extra file is uploaded and the rest downloaded.
    let c = tempfile::tempdir().unwrap();
    write_old(c.path(), "local-only.txt", b"mine");
    let r = run(
        c.path(),
        kind.reopen(&remote),
        (Mode::Sync, SyncOptions::default()),
    )
    .await;
    assert!(r.success, "{:?}", r.errors);
    assert!(r.deleted.is_empty());
    assert_eq!(r.uploaded, vec!["local-only.txt"]);
    assert_eq!(r.downloaded.len(), 8);
}

async fn concurrent_edits_conflict_and_manual_leaves_both(kind: &RemoteKind) {
    let a = small_db();
    let remote = kind.tree("conflict");
    push(a.path(), remote.clone()).await;
    let b = tempfile::tempdir().unwrap();
    pull(b.path(), kind.reopen(&remote)).await;

    write_old(
        a.path(),
        "data/posts/data.parquet",
        b"PAR1 posts from A PAR1",
    );
    write_old(
        b.path(),
        "data/posts/data.parquet",
        b"PAR1 posts from B PAR1",
    );
    // B also makes an unrelated change, which must still go through.
    write_old(
        b.path(),
        "data/users/data.parquet",
        b"PAR1 users from B PAR1",
    );
    let r = push(a.path(), kind.reopen(&remote)).await;
    assert_eq!(r.uploaded, vec!["data/posts/data.parquet"]);

    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.strategy = Some(Strategy::Manual);
    let r = run(b.path(), kind.reopen(&remote), opts).await;
    assert!(r.success);
    assert_eq!(r.uploaded, vec!["data/users/data.parquet"]);
    assert_eq!(r.conflicts_pending.len(), 1);
    assert_eq!(r.conflicts_pending[0].path, "data/posts/data.parquet");
    // Both copies untouched.
    assert_eq!(
        std::fs::read(b.path().join("data/posts/data.parquet")).unwrap(),
        b"PAR1 posts from B PAR1"
    );
    let out = tempfile::tempdir().unwrap();
    pull(out.path(), kind.reopen(&remote)).await;
    assert_eq!(
        std::fs::read(out.path().join("data/posts/data.parquet")).unwrap(),
        b"PAR1 posts from A PAR1"
    );
    // Status still reports it as a conflict.
    let engine = engine_for(
        local(b.path()),
        kind.reopen(&remote),
        (Mode::Sync, SyncOptions::default()),
    );
    let st = engine.status().await.unwrap();
    assert_eq!(st.diff.conflicts.len(), 1);
    assert!(!st.is_synced);

    // A push without a strategy stops it too: a true conflict is never
    // resolved by default.
    let r = push(b.path(), kind.reopen(&remote)).await;
    assert!(r.uploaded.is_empty(), "{:?}", r.uploaded);
    assert_eq!(r.conflicts_pending.len(), 1);
    // An explicit local-wins resolves it, and says so.
    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.strategy = Some(Strategy::LocalWins);
    let r = run(b.path(), kind.reopen(&remote), opts).await;
    assert_eq!(r.conflicts_resolved.len(), 1);
    assert_eq!(r.conflicts_resolved[0].resolution, Resolution::KeepLocal);
    assert_eq!(r.uploaded, vec!["data/posts/data.parquet"]);
}

async fn sync_newest_wins_both_ways(kind: &RemoteKind) {
    let a = small_db();
    let remote = kind.tree("newest");
    push(a.path(), remote.clone()).await;
    let b = tempfile::tempdir().unwrap();
    pull(b.path(), kind.reopen(&remote)).await;

    // A edits users (older edit), B edits users later; B also deletes posts
    // while A edits posts: modification beats deletion.
    write_old(a.path(), "data/users/data.parquet", b"A users");
    write_old(a.path(), "data/posts/data.parquet", b"A posts");
    push(a.path(), kind.reopen(&remote)).await;
    std::fs::write(b.path().join("data/users/data.parquet"), b"B users, newer").unwrap();
    std::fs::remove_file(b.path().join("data/posts/data.parquet")).unwrap();

    let r = run(
        b.path(),
        kind.reopen(&remote),
        (
            Mode::Sync,
            SyncOptions::default().with_strategy(Strategy::Newest),
        ),
    )
    .await;
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(r.conflicts_resolved.len(), 2, "{:?}", r.conflicts_resolved);
    assert_eq!(r.uploaded, vec!["data/users/data.parquet"]);
    assert_eq!(r.downloaded, vec!["data/posts/data.parquet"]);
    assert_eq!(
        std::fs::read(b.path().join("data/posts/data.parquet")).unwrap(),
        b"A posts"
    );
    let r = pull(a.path(), kind.reopen(&remote)).await;
    assert_eq!(r.downloaded, vec!["data/users/data.parquet"]);
    assert_eq!(tree_files(a.path()), tree_files(b.path()));
}

async fn large_file_goes_multipart_and_round_trips(kind: &RemoteKind) {
    let db = tempfile::tempdir().unwrap();
    // 20 MiB + a bit: three 8 MiB parts with the default settings.
    let big: Vec<u8> = (0..(20 * 1024 * 1024 + 4321))
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    write_old(db.path(), "data/big/data.parquet", &big);
    write_old(db.path(), "data/small/data.parquet", b"small");
    let remote = kind.tree("multipart");
    let engine = engine_for(
        local(db.path()),
        remote.clone(),
        (Mode::Push, SyncOptions::default()),
    );
    let plan = engine.plan().await.unwrap();
    // create + 3 parts + complete, 1 small PUT, 1 manifest PUT, the LIST
    // of other runs' announced deletions, and the first push's probe of
    // conditional writes.
    assert_eq!(plan.requests_planned(), 5 + 1 + 1 + 1 + 6);
    let r = engine.execute(plan).await.unwrap();
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(r.bytes_transferred, big.len() as u64 + 5);
    if let RemoteKind::S3(server, _) = kind {
        if let Some(log) = &server.log {
            let parts = log
                .lines()
                .iter()
                .filter(|l| l.starts_with("PUT") && l.contains("partNumber="))
                .count();
            assert_eq!(parts, 3, "{:#?}", log.lines());
        }
    }
    let out = tempfile::tempdir().unwrap();
    let r = pull(out.path(), kind.reopen(&remote)).await;
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(
        std::fs::read(out.path().join("data/big/data.parquet")).unwrap(),
        big
    );
}

async fn bit_rot_is_reported_and_local_copy_kept(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("bitrot");
    push(db.path(), remote.clone()).await;
    let out = tempfile::tempdir().unwrap();
    pull(out.path(), kind.reopen(&remote)).await;

    // Someone updates users; the stored object then rots (same size).
    write_old(db.path(), "data/users/data.parquet", b"PAR1 users v2 PAR1");
    push(db.path(), kind.reopen(&remote)).await;
    let loc = remote.location("data/users/data.parquet");
    kind.raw()
        .put(&loc, PutPayload::from_static(b"PAR1 users v2 PAR0"))
        .await
        .unwrap();

    let r = pull(out.path(), kind.reopen(&remote)).await;
    assert!(!r.success);
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].path, "data/users/data.parquet");
    assert!(
        r.errors[0].message.contains("hash mismatch"),
        "{}",
        r.errors[0].message
    );
    assert_eq!(
        std::fs::read(out.path().join("data/users/data.parquet")).unwrap(),
        b"PAR1 users v1 PAR1",
        "the local copy is kept"
    );
    let leftovers: Vec<_> = std::fs::read_dir(out.path().join("data/users"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        leftovers.len(),
        1,
        "no temporary file is left: {leftovers:?}"
    );
}

async fn sha256_remote_keeps_sha256(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("sha");
    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.hash = Some(HashAlgorithm::Sha256);
    run(db.path(), remote.clone(), opts).await;
    let m = kind
        .reopen(&remote)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    assert!(m
        .files
        .values()
        .all(|e| e.hash_algorithm == HashAlgorithm::Sha256));
    let expected = HashAlgorithm::Sha256
        .digest(b"PAR1 users v1 PAR1")
        .to_string();
    assert_eq!(m.files["data/users/data.parquet"].hash, expected);

    // Another client, no --hash: it compares in sha256 and finds no change.
    let out = tempfile::tempdir().unwrap();
    pull(out.path(), kind.reopen(&remote)).await;
    let engine = engine_for(
        local(out.path()),
        kind.reopen(&remote),
        (Mode::Push, SyncOptions::default()),
    );
    let plan = engine.plan().await.unwrap();
    assert_eq!(plan.algorithm(), HashAlgorithm::Sha256);
    assert!(plan.is_noop());
}

async fn mirror_copies_and_second_mirror_is_noop(kind: &RemoteKind) {
    let db = small_db();
    let src = kind.tree("mirror-src");
    push(db.path(), src.clone()).await;
    let dst = kind.tree("mirror-dst");
    let engine = engine_for(
        kind.reopen(&src),
        dst.clone(),
        (Mode::Mirror, SyncOptions::default()),
    );
    let r = engine.execute(engine.plan().await.unwrap()).await.unwrap();
    assert!(r.success && r.committed, "{:?}", r.errors);
    assert_eq!(r.uploaded.len(), 9);
    let src_m = kind
        .reopen(&src)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    let dst_m = kind
        .reopen(&dst)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    // The same entries, each naming its object by its own store's ETag.
    let without_etag = |files: &std::collections::BTreeMap<String, pqsync_core::FileEntry>| {
        let mut files = files.clone();
        for e in files.values_mut() {
            assert!(e.etag.is_some(), "{} has no etag", e.path);
            e.etag = None;
        }
        files
    };
    assert_eq!(without_etag(&src_m.files), without_etag(&dst_m.files));
    assert_eq!(src_m.database_id, dst_m.database_id);

    let engine = engine_for(
        kind.reopen(&src),
        kind.reopen(&dst),
        (Mode::Mirror, SyncOptions::default()),
    );
    let plan = engine.plan().await.unwrap();
    assert!(plan.is_noop());
    assert_eq!(plan.requests_so_far(), 2);

    // A deletion at the source propagates to the mirror.
    std::fs::remove_file(db.path().join("events/seg-0002.parquet")).unwrap();
    push(db.path(), kind.reopen(&src)).await;
    let engine = engine_for(
        kind.reopen(&src),
        kind.reopen(&dst),
        (Mode::Mirror, SyncOptions::default()),
    );
    let r = engine.execute(engine.plan().await.unwrap()).await.unwrap();
    assert_eq!(r.deleted, vec!["events/seg-0002.parquet"]);
    let out = tempfile::tempdir().unwrap();
    pull(out.path(), kind.reopen(&dst)).await;
    assert_eq!(tree_files(db.path()), tree_files(out.path()));
}

async fn pull_from_unmanaged_remote_says_so(kind: &RemoteKind) {
    let out = tempfile::tempdir().unwrap();
    let engine = engine_for(
        local(out.path()),
        kind.tree("empty"),
        (Mode::Pull, SyncOptions::default()),
    );
    let err = engine.plan().await.unwrap_err();
    assert!(err.to_string().contains("not managed by pqsync"), "{err}");
}

async fn corrupt_remote_manifest_is_an_error_naming_the_manifest(kind: &RemoteKind) {
    let remote = kind.tree("corrupt");
    kind.raw()
        .put(
            &remote.location(MANIFEST_PATH),
            PutPayload::from_static(b"{\"version\": 1, \"files\": {"),
        )
        .await
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let engine = engine_for(
        local(out.path()),
        kind.reopen(&remote),
        (Mode::Pull, SyncOptions::default()),
    );
    let err = engine.plan().await.unwrap_err().to_string();
    assert!(
        err.contains("manifest") && err.contains("truncated"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(out.path()).unwrap().next().is_none(),
        "nothing written"
    );
}

async fn hostile_remote_paths_are_refused(kind: &RemoteKind) {
    for bad in [
        "../escape",
        "/abs/x",
        "a/../../x",
        "C:\\x",
        ".git/hooks/pre-commit",
        "_meta/.pqsync/remote.json",
        "_meta/manifest.json",
    ] {
        let remote = kind.tree("hostile");
        let mut m = pqsync_core::Manifest::new("d", "n");
        m.files.insert(
            bad.to_string(),
            pqsync_core::FileEntry {
                path: bad.to_string(),
                size: 1,
                hash: HashAlgorithm::Blake3.digest(b"x"),
                hash_algorithm: HashAlgorithm::Blake3,
                modified_at: "2026-01-01T00:00:00.000Z".into(),
                etag: None,
                extra: None,
                content_type: None,
            },
        );
        kind.raw()
            .put(
                &remote.location(MANIFEST_PATH),
                PutPayload::from(m.to_json_pretty()),
            )
            .await
            .unwrap();
        let parent = tempfile::tempdir().unwrap();
        let out = parent.path().join("db");
        let engine = engine_for(
            local(&out),
            kind.reopen(&remote),
            (Mode::Pull, SyncOptions::default()),
        );
        let err = engine.plan().await.unwrap_err().to_string();
        assert!(err.contains("unsafe path"), "{bad}: {err}");
        assert!(
            err.contains(&format!("{bad:?}")),
            "{bad}: {err} names the path"
        );
        assert!(
            std::fs::read_dir(parent.path()).unwrap().next().is_none(),
            "nothing written"
        );
    }
}

async fn no_delete_keeps_remote_files(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("nodelete");
    push(db.path(), remote.clone()).await;
    std::fs::remove_file(db.path().join("events/seg-0001.parquet")).unwrap();
    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.delete = false;
    let r = run(db.path(), kind.reopen(&remote), opts).await;
    assert!(r.deleted.is_empty());
    assert_eq!(r.held_back.len(), 1);
    let m = kind
        .reopen(&remote)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    assert!(m.files.contains_key("events/seg-0001.parquet"));
}

async fn conflict_a_mode_cannot_apply_is_held_back_not_resolved(kind: &RemoteKind) {
    let a = small_db();
    let remote = kind.tree("heldconflict");
    push(a.path(), remote.clone()).await;
    let b = tempfile::tempdir().unwrap();
    pull(b.path(), kind.reopen(&remote)).await;
    // A deletes posts remotely; B edits it: the edit must survive a pull.
    std::fs::remove_file(a.path().join("data/posts/data.parquet")).unwrap();
    push(a.path(), kind.reopen(&remote)).await;
    write_old(b.path(), "data/posts/data.parquet", b"B's edit");
    // Without a strategy the pull stops the path, keeping the edit.
    let r = pull(b.path(), kind.reopen(&remote)).await;
    assert_eq!(r.conflicts_pending.len(), 1);
    assert_eq!(
        std::fs::read(b.path().join("data/posts/data.parquet")).unwrap(),
        b"B's edit"
    );
    // remote-wins cannot apply a deletion over an edit: held back.
    let pull_remote_wins = (
        Mode::Pull,
        SyncOptions::default().with_strategy(Strategy::RemoteWins),
    );
    let r = run(b.path(), kind.reopen(&remote), pull_remote_wins).await;
    assert!(r.success);
    assert!(
        r.conflicts_resolved.is_empty(),
        "{:?}",
        r.conflicts_resolved
    );
    assert!(r.conflicts_pending.is_empty());
    assert_eq!(r.held_back.len(), 1);
    assert!(
        r.held_back[0].reason.contains("push to send it"),
        "{}",
        r.held_back[0].reason
    );
    assert_eq!(
        std::fs::read(b.path().join("data/posts/data.parquet")).unwrap(),
        b"B's edit"
    );
    // The push that follows carries the edit back.
    let push_local_wins = (
        Mode::Push,
        SyncOptions::default().with_strategy(Strategy::LocalWins),
    );
    let r = run(b.path(), kind.reopen(&remote), push_local_wins).await;
    assert_eq!(r.uploaded, vec!["data/posts/data.parquet"]);
    assert_eq!(r.conflicts_resolved.len(), 1);
}

async fn hash_flag_does_not_switch_an_existing_remote(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("hashswitch");
    push(db.path(), remote.clone()).await;
    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.hash = Some(HashAlgorithm::Sha256);
    let engine = engine_for(local(db.path()), kind.reopen(&remote), opts);
    let plan = engine.plan().await.unwrap();
    assert_eq!(plan.algorithm(), HashAlgorithm::Blake3);
    assert!(plan.is_noop());
    assert!(
        plan.warnings()
            .iter()
            .any(|w| w.contains("new remotes only")),
        "{:?}",
        plan.warnings()
    );
}

async fn probe_finds_whether_conditional_writes_are_enforced(kind: &RemoteKind) {
    let remote = kind.tree("probe");
    assert_eq!(
        remote.probe_conditional_writes().await.unwrap(),
        kind.conditional()
    );
    // The scratch object is gone again.
    let listed: Vec<_> = kind
        .raw()
        .list(Some(&remote.location("_meta")))
        .collect::<Vec<_>>()
        .await;
    assert!(listed.is_empty(), "{listed:?}");
}

async fn concurrent_pushes_merge_and_overlaps_stop(kind: &RemoteKind) {
    let a = small_db();
    let remote = kind.tree("cas");
    push(a.path(), remote.clone()).await;
    let b = tempfile::tempdir().unwrap();
    pull(b.path(), kind.reopen(&remote)).await;

    // Both plan against the same remote state, then commit one after the
    // other: disjoint changes merge, and neither commit is lost.
    write_old(a.path(), "data/a-only/data.parquet", b"from A");
    write_old(b.path(), "data/b-only/data.parquet", b"from B");
    let ea = engine_for(
        local(a.path()),
        kind.reopen(&remote),
        (Mode::Push, SyncOptions::default()),
    );
    let eb = engine_for(
        local(b.path()),
        kind.reopen(&remote),
        (Mode::Push, SyncOptions::default()),
    );
    let (pa, pb) = (ea.plan().await.unwrap(), eb.plan().await.unwrap());
    let ra = ea.execute(pa).await.unwrap();
    let rb = eb.execute(pb).await.unwrap();
    assert!(ra.success && rb.success, "{:?} {:?}", ra.errors, rb.errors);
    let m = kind
        .reopen(&remote)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    assert!(m.files.contains_key("data/a-only/data.parquet"));
    assert!(m.files.contains_key("data/b-only/data.parquet"));
    // B learns of A's file as a download, not as something to delete.
    let st = engine_for(
        local(b.path()),
        kind.reopen(&remote),
        (Mode::Sync, SyncOptions::default()),
    )
    .status()
    .await
    .unwrap();
    assert_eq!(st.diff.to_download.len(), 1, "{:?}", st.diff);
    assert!(st.diff.deleted_remotely.is_empty());

    // Overlapping edits: the second commit stops and names the path.
    write_old(a.path(), "data/users/data.parquet", b"A's users");
    write_old(b.path(), "data/users/data.parquet", b"B's users");
    let ea = engine_for(
        local(a.path()),
        kind.reopen(&remote),
        (Mode::Push, SyncOptions::default()),
    );
    let eb = engine_for(
        local(b.path()),
        kind.reopen(&remote),
        (Mode::Push, SyncOptions::default()),
    );
    let (pa, pb) = (ea.plan().await.unwrap(), eb.plan().await.unwrap());
    assert!(ea.execute(pa).await.unwrap().success);
    let rb = eb.execute(pb).await.unwrap();
    assert!(!rb.success && !rb.committed);
    let msg = &rb.errors[0].message;
    assert!(
        msg.contains("remote changed during push") && msg.contains("data/users/data.parquet"),
        "{msg}"
    );
    let m = kind
        .reopen(&remote)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    assert_eq!(
        m.files["data/users/data.parquet"].hash,
        HashAlgorithm::Blake3.digest(b"A's users").to_string(),
        "A's commit stands"
    );
}

async fn max_delete_stops_a_mass_deletion(kind: &RemoteKind) {
    let db = small_db();
    let remote = kind.tree("maxdelete");
    push(db.path(), remote.clone()).await;
    for f in [
        "data/users/data.parquet",
        "data/posts/data.parquet",
        "rels/forward/users.parquet",
        "rels/reverse/posts.parquet",
        "events/seg-0001.parquet",
    ] {
        std::fs::remove_file(db.path().join(f)).unwrap();
    }
    write_old(db.path(), "events/seg-0003.parquet", b"new segment");
    // 5 of 9 is over the default 50%: deletions are held back, the rest goes.
    let r = push(db.path(), kind.reopen(&remote)).await;
    assert!(!r.success);
    assert!(r.deleted.is_empty());
    assert_eq!(r.uploaded, vec!["events/seg-0003.parquet"]);
    assert!(
        r.errors[0].message.contains("refusing to delete 5 of 9"),
        "{:?}",
        r.errors
    );
    let m = kind
        .reopen(&remote)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    assert!(m.files.contains_key("data/users/data.parquet"));
    assert!(m.files.contains_key("events/seg-0003.parquet"));
    // With the limit raised, they go.
    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.max_delete = "100%".parse().unwrap();
    let r = run(db.path(), kind.reopen(&remote), opts).await;
    assert!(r.success, "{:?}", r.errors);
    assert_eq!(r.deleted.len(), 5);
}

async fn the_trash_keeps_overwritten_and_deleted_files(kind: &RemoteKind) {
    for (name, trash) in [
        ("trash", Trash::Default),
        ("backup", Trash::At(unique("bk"))),
    ] {
        let db = small_db();
        let remote = kind.tree(name);
        push(db.path(), remote.clone()).await;
        write_old(db.path(), "data/users/data.parquet", b"users v2");
        std::fs::remove_file(db.path().join("data/posts/data.parquet")).unwrap();
        let mut opts = (Mode::Push, SyncOptions::default().with_trash(trash.clone()));
        opts.1.max_delete = "100%".parse().unwrap();
        let r = run(db.path(), kind.reopen(&remote), opts).await;
        assert!(r.success, "{:?}", r.errors);
        let raw = kind.raw();
        let get = |p: String| {
            let raw = raw.clone();
            async move {
                raw.get(&object_store::path::Path::from(p))
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap()
            }
        };
        let root = match &trash {
            Trash::At(prefix) => prefix.clone(),
            _ => remote.location(TRASH_DIR).to_string(),
        };
        let mut kept: Vec<(&str, &str)> = r
            .kept
            .iter()
            .map(|k| (k.path.as_str(), k.location.as_str()))
            .collect();
        kept.sort();
        assert_eq!(kept.len(), 2, "{kept:?}");
        // One run folder under the trash root, holding both old versions.
        let run_dir = kept[0]
            .1
            .strip_prefix(&format!("{root}/"))
            .and_then(|rest| rest.split_once('/'))
            .map(|(run, _)| run.to_string())
            .unwrap_or_else(|| panic!("{} is not under {root}", kept[0].1));
        for (path, old) in [
            ("data/posts/data.parquet", &b"PAR1 posts v1 PAR1"[..]),
            ("data/users/data.parquet", &b"PAR1 users v1 PAR1"[..]),
        ] {
            assert_eq!(&get(format!("{root}/{run_dir}/{path}")).await[..], old);
        }
        assert_eq!(
            &get(remote.location("data/users/data.parquet").to_string()).await[..],
            b"users v2"
        );
        // Listed, and emptied.
        let listed = remote.trash_list(&trash).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().all(|t| t.run == run_dir));
        assert_eq!(remote.trash_empty(&trash, None).await.unwrap(), 2);
        assert!(remote.trash_list(&trash).await.unwrap().is_empty());
    }
}

async fn a_live_lease_blocks_a_second_writer_unless_forced(kind: &RemoteKind) {
    if kind.conditional() {
        return; // compare-and-swap stores need no lease
    }
    let db = small_db();
    let remote = kind.tree("lease");
    push(db.path(), remote.clone()).await;
    let until = chrono::Utc::now() + chrono::Duration::seconds(60);
    let lease = serde_json::json!({
        "token": "someone-else",
        "holder": "pqsync pid 1 on other-host",
        "expiresAt": until.to_rfc3339(),
        "expiresAtMs": until.timestamp_millis(),
    });
    remote.write_state("lease.json", &lease).await.unwrap();
    write_old(db.path(), "data/users/data.parquet", b"users v2");
    let engine = engine_for(
        local(db.path()),
        kind.reopen(&remote),
        (Mode::Push, SyncOptions::default()),
    );
    let err = engine
        .execute(engine.plan().await.unwrap())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("being written by pqsync pid 1 on other-host"),
        "{err}"
    );
    // Nothing was sent.
    let m = kind
        .reopen(&remote)
        .read_manifest()
        .await
        .unwrap()
        .unwrap()
        .manifest;
    assert_eq!(m.files["data/users/data.parquet"].size, 18);

    let mut opts = (Mode::Push, SyncOptions::default());
    opts.1.force = true;
    assert!(run(db.path(), kind.reopen(&remote), opts).await.success);

    // An expired lease is taken over.
    let past = chrono::Utc::now() - chrono::Duration::seconds(5);
    let stale =
        serde_json::json!({"token": "gone", "holder": "x", "expiresAtMs": past.timestamp_millis()});
    remote.write_state("lease.json", &stale).await.unwrap();
    write_old(db.path(), "data/users/data.parquet", b"users v3");
    let r = push(db.path(), kind.reopen(&remote)).await;
    assert!(r.success, "{:?}", r.errors);
    assert!(
        remote
            .read_state::<serde_json::Value>("lease.json")
            .await
            .unwrap()
            .is_none(),
        "released"
    );

    // Another run's lease object blocks the same way; once expired it is
    // taken over and removed, and a run leaves no lease object behind.
    remote
        .write_state("leases/someone.json", &lease)
        .await
        .unwrap();
    write_old(db.path(), "data/users/data.parquet", b"users v4");
    let engine = engine_for(
        local(db.path()),
        kind.reopen(&remote),
        (Mode::Push, SyncOptions::default()),
    );
    let err = engine
        .execute(engine.plan().await.unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("other-host"), "{err}");
    remote
        .write_state("leases/someone.json", &stale)
        .await
        .unwrap();
    let r = push(db.path(), kind.reopen(&remote)).await;
    assert!(r.success, "{:?}", r.errors);
    let left: Vec<_> = kind
        .raw()
        .list(Some(&remote.location("_meta/.pqsync/leases")))
        .collect::<Vec<_>>()
        .await;
    assert!(left.is_empty(), "{left:?}");
}

/// Only the in-process S3 server logs requests: check the commit order there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_then_nested_manifests_then_sync_manifest_then_deletes() {
    let kind = RemoteKind::s3();
    let RemoteKind::S3(server, _) = &kind else {
        unreachable!()
    };
    let Some(log) = server.log.clone() else {
        return;
    };
    let db = small_db();
    let remote = kind.tree("order");
    push(db.path(), remote.clone()).await;
    write_old(db.path(), "events/seg-0003.parquet", b"PAR1 seg3 PAR1");
    write_old(
        db.path(),
        "events/_manifest.json",
        b"{\"version\":1,\"segments\":[2,3]}",
    );
    std::fs::remove_file(db.path().join("events/seg-0001.parquet")).unwrap();
    let before = log.lines().len();
    push(db.path(), kind.reopen(&remote)).await;
    let lines: Vec<String> = log.lines()[before..].to_vec();
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} not in {lines:#?}"))
    };
    let seg = pos("seg-0003.parquet");
    let events_manifest = pos("events/_manifest.json");
    let sync_manifest = lines
        .iter()
        .rposition(|l| l.starts_with("PUT") && l.contains("_meta/manifest.json"))
        .unwrap();
    let delete = lines
        .iter()
        .position(|l| l.starts_with("POST") && l.contains("delete"))
        .unwrap();
    assert!(seg < events_manifest, "{lines:#?}");
    assert!(events_manifest < sync_manifest, "{lines:#?}");
    assert!(sync_manifest < delete, "{lines:#?}");
}

/// Keeps the generic store import used on every platform.
#[allow(dead_code)]
fn _uses(_: &dyn ObjectStore) {}
