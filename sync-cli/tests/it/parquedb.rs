//! What ParqueDB's own engine sees of what pqsync writes: the same file
//! set, the same entries. Judged by an independent listing of the remote.

use crate::lost::Remote;
use crate::{age, pqsync, sample_copy, tree_files, Output};

/// pqsync syncs exactly the files ParqueDB syncs: ParqueDB's prefix rule
/// (`.git`, `.DS_Store`, `node_modules`, `_meta/locks` at the top, which
/// also covers `.github/`), nothing more. `.DS_Store` in a subfolder,
/// `yarn.lock` and `x.tmpl.parquet` are data to both tools.
#[test]
fn the_same_file_set_as_parquedb() {
    for remote in Remote::each("fileset") {
        let db = sample_copy();
        let put = |rel: &str| {
            let p = db.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("bytes of {rel}")).unwrap();
            age(&p);
        };
        let synced = [
            "data/.DS_Store",
            "data/users/.DS_Store",
            "yarn.lock",
            "data/part.tmpl.parquet",
            "data/users/data.parquet.tmp",
            "sub/.git/HEAD",
            "data/node_modules/x.js",
        ];
        let ignored = [
            ".DS_Store",
            ".git/HEAD",
            ".github/workflows/ci.yml",
            "node_modules/x/y.js",
            "_meta/locks/writer",
        ];
        for p in synced.iter().chain(&ignored) {
            put(p);
        }
        // A real Parquet file, so verify's footer check passes.
        let parquet = std::fs::read(db.path().join("data/users/data.parquet")).unwrap();
        std::fs::write(db.path().join("data/part.tmpl.parquet"), parquet).unwrap();
        age(&db.path().join("data/part.tmpl.parquet"));
        let url = remote.url();
        pqsync(remote.server())
            .args(["push", &url, "-d"])
            .arg(db.path())
            .stdout_ok();
        let objects = remote.objects();
        for p in synced {
            assert!(objects.contains_key(p), "{p} was not pushed");
        }
        for p in ignored {
            assert!(!objects.contains_key(p), "{p} was pushed");
        }
        let m = remote.manifest().unwrap();
        let listed: Vec<&String> = m["files"].as_object().unwrap().keys().collect();
        let mut expected: Vec<String> = objects
            .keys()
            .filter(|k| *k != "_meta/manifest.json")
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(listed, expected.iter().collect::<Vec<_>>());
        // A clone gets the same set back, and both sides agree.
        let clone = tempfile::tempdir().unwrap();
        pqsync(remote.server())
            .args(["pull", &url, "-d"])
            .arg(clone.path())
            .stdout_ok();
        let got = tree_files(clone.path());
        for p in synced {
            assert!(got.contains_key(p), "{p} was not pulled");
        }
        pqsync(remote.server())
            .args(["status", "--exit-code", "-d"])
            .arg(clone.path())
            .stdout_ok();
        pqsync(remote.server()).args(["verify", &url]).stdout_ok();
        // status says what it ignored, and -v lists it.
        let out = pqsync(remote.server())
            .args(["status", "-v", "-d"])
            .arg(db.path())
            .assert()
            .success()
            .get_output()
            .clone();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("5 path(s) ignored"), "{text}");
        let listed = String::from_utf8_lossy(&out.stderr);
        for p in [
            ".DS_Store",
            ".git/",
            ".github/",
            "_meta/locks/",
            "node_modules/",
        ] {
            assert!(listed.contains(&format!("ignored  {p}\n")), "{p}: {listed}");
        }
        let v: serde_json::Value = serde_json::from_slice(
            &pqsync(remote.server())
                .args(["status", "--json", "-d"])
                .arg(db.path())
                .stdout_ok(),
        )
        .unwrap();
        assert_eq!(
            v["ignored"],
            serde_json::json!([
                ".DS_Store",
                ".git/",
                ".github/",
                "_meta/locks/",
                "node_modules/"
            ])
        );
    }
}

/// A name ParqueDB's backend cannot read (`..` inside a component) is
/// pushed, with a warning that names it.
#[test]
fn push_warns_about_names_parquedb_cannot_read() {
    let db = sample_copy();
    let parent = tempfile::tempdir().unwrap();
    let remote = parent.path().join("remote");
    let p = db.path().join("data/a..b.json");
    std::fs::write(&p, b"{}").unwrap();
    age(&p);
    let out = pqsync(None)
        .arg("push")
        .arg(&remote)
        .arg("-d")
        .arg(db.path())
        .assert()
        .success()
        .get_output()
        .clone();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("data/a..b.json: ParqueDB cannot read"),
        "{err}"
    );
    assert!(remote.join("data/a..b.json").exists());
}
