//! AWS profiles and the config file: two accounts on one server, each
//! allowed only its own bucket, as two accounts of one provider.

use std::path::Path;

use pqsync_testdata::s3::S3Server;

use super::*;

/// `~/.aws/config` and `~/.aws/credentials` with a profile for each account
/// of `server`, and no keys in the environment.
struct Profiles {
    dir: tempfile::TempDir,
}

impl Profiles {
    fn new(server: &S3Server) -> Self {
        let other = server.other.as_ref().expect("a second account");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config"),
            format!(
                "[profile main]\nregion = {region}\nendpoint_url = {ep}\n\n[profile offsite]\nregion = {region}\ns3 =\n  endpoint_url = {ep}\n",
                region = server.region,
                ep = server.endpoint
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            format!(
                "[main]\naws_access_key_id = {}\naws_secret_access_key = {}\n\n# the backup account\n[offsite]\naws_access_key_id={}\naws_secret_access_key={}\n",
                server.access_key, server.secret_key, other.access_key, other.secret_key
            ),
        )
        .unwrap();
        Profiles { dir }
    }

    /// pqsync with these files and no keys or endpoint in the environment.
    fn pqsync(&self) -> Command {
        let mut cmd = pqsync(None);
        cmd.env("AWS_CONFIG_FILE", self.dir.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                self.dir.path().join("credentials"),
            )
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        cmd
    }
}

/// The files under `root/bucket/prefix`, read from the server's backing
/// directory (keys are paths).
fn stored(server: &S3Server, bucket: &str, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    let dir = server.root.as_ref().unwrap().join(bucket).join(prefix);
    if !dir.exists() {
        return BTreeMap::new();
    }
    tree_files(&dir)
}

/// Asserts two trees hold the same files with the same bytes, naming the
/// first difference (not printing the bytes).
fn same(got: &BTreeMap<String, Vec<u8>>, want: &BTreeMap<String, Vec<u8>>) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in want {
        assert!(got[path] == *bytes, "{path} differs");
    }
}

fn prefix_of(url: &str) -> String {
    url.splitn(4, '/').nth(3).unwrap().to_string()
}

#[test]
fn each_remote_uses_its_own_profile_across_accounts() {
    let server = S3Server::in_process();
    let other = server.other.clone().unwrap();
    let p = Profiles::new(&server);
    let db = sample_copy();
    let src = server.unique_url("prof");
    let dst = format!("s3://{}/{}", other.bucket, prefix_of(&src));

    // Push with the main account's profile.
    p.pqsync()
        .args(["push", &format!("{src}?profile=main"), "-d"])
        .arg(db.path())
        .stdout_ok();
    same(
        &stored(&server, &server.bucket, &prefix_of(&src)),
        &tree_files(db.path()),
    );

    // The main account may not write to the other account's bucket.
    let err = p
        .pqsync()
        .args([
            "mirror",
            &format!("{src}?profile=main"),
            &format!("{dst}?profile=main"),
        ])
        .stderr_with(1);
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("denied") || err.contains("Denied"), "{err}");
    assert!(stored(&server, &other.bucket, &prefix_of(&dst)).is_empty());

    // Mirror reads with one account and writes with the other.
    p.pqsync()
        .args([
            "mirror",
            &format!("{src}?profile=main"),
            &format!("{dst}?profile=offsite"),
        ])
        .stdout_ok();
    same(
        &stored(&server, &other.bucket, &prefix_of(&dst)),
        &tree_files(db.path()),
    );

    // --profile names the profile of remotes that name none; a remote's
    // own wins over it.
    p.pqsync()
        .args(["status", &src, "--profile", "main", "--exit-code", "-d"])
        .arg(db.path())
        .stdout_ok();
    p.pqsync()
        .args([
            "status",
            &format!("{src}?profile=offsite"),
            "--profile",
            "main",
            "-d",
        ])
        .arg(db.path())
        .stderr_with(1);

    // AWS_PROFILE fills in for missing keys, but keys in the environment
    // win over it, as with the AWS CLI.
    p.pqsync()
        .env("AWS_PROFILE", "main")
        .args(["status", &src, "--exit-code", "-d"])
        .arg(db.path())
        .stdout_ok();
    p.pqsync()
        .env("AWS_PROFILE", "main")
        .env("AWS_ACCESS_KEY_ID", &other.access_key)
        .env("AWS_SECRET_ACCESS_KEY", &other.secret_key)
        .args(["status", &src, "-d"])
        .arg(db.path())
        .stderr_with(1);
}

#[test]
fn missing_credentials_name_every_source_tried() {
    let server = S3Server::in_process();
    let p = Profiles::new(&server);
    let url = server.unique_url("nocred");
    let db = sample_copy();
    let err = p
        .pqsync()
        .args(["push", &url, "--endpoint", &server.endpoint, "-d"])
        .arg(db.path())
        .stderr_with(1);
    let err = String::from_utf8_lossy(&err);
    let line = err
        .lines()
        .find(|l| l.contains("error"))
        .unwrap_or_default();
    for source in [
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (not set)",
        "AWS profile \"default\" (not in ",
        "credentials or ",
        "AWS_WEB_IDENTITY_TOKEN_FILE (not set)",
        "instance metadata (disabled by AWS_EC2_METADATA_DISABLED=true)",
        "name an AWS profile that has keys",
    ] {
        assert!(line.contains(source), "{source:?} missing from {line}");
    }

    let err = p
        .pqsync()
        .args(["push", &format!("{url}?profile=nope"), "-d"])
        .arg(db.path())
        .stderr_with(2);
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains("no AWS profile \"nope\"") && err.contains("credentials nor "),
        "{err}"
    );
    // Nothing was written.
    assert!(stored(&server, &server.bucket, &prefix_of(&url)).is_empty());
}

/// Writes `pqsync.toml` into `dir`.
fn config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("pqsync.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_config_file_names_remotes_repositories_and_defaults() {
    let server = S3Server::in_process();
    let other = server.other.clone().unwrap();
    let p = Profiles::new(&server);
    let db = sample_copy();
    let out = tempfile::tempdir().unwrap();
    let src = server.unique_url("cfg");
    let repo = format!("s3://{}/{}-repo", other.bucket, prefix_of(&src));
    let cfg_dir = tempfile::tempdir().unwrap();
    let cfg = config(
        cfg_dir.path(),
        &format!(
            r#"
[remotes.prod]
url = "{src}"
profile = "main"
dir = "{db}"

[repositories.offsite]
url = "{repo}"
profile = "offsite"
dir = "{db}"
tags = ["nightly"]
keep-daily = 7
keep_weekly = 4

[defaults]
concurrency = 4

[defaults.push]
no-delete = true
"#,
            db = db.path().display()
        ),
    );
    let run = || {
        let mut c = p.pqsync();
        c.env("PQSYNC_CONFIG", &cfg);
        c
    };

    // `push @prod` and `backup @offsite` need nothing else.
    run().args(["push", "@prod"]).stdout_ok();
    same(
        &stored(&server, &server.bucket, &prefix_of(&src)),
        &tree_files(db.path()),
    );
    let v = json_of(&run().args(["backup", "@offsite", "--json"]).stdout_ok());
    assert_eq!(v["success"], true, "{v}");
    let v = json_of(&run().args(["snapshots", "@offsite", "--json"]).stdout_ok());
    assert_eq!(
        v["snapshots"][0]["tags"],
        serde_json::json!(["nightly"]),
        "{v}"
    );

    // Defaults per command: push keeps remote files deleted locally.
    std::fs::remove_file(db.path().join("_meta/schema.json")).unwrap();
    run().args(["push", "@prod"]).stdout_ok();
    assert!(stored(&server, &server.bucket, &prefix_of(&src)).contains_key("_meta/schema.json"));
    // The command line wins over the file.
    run()
        .args(["backup", "@offsite", "--tag", "manual"])
        .stdout_ok();
    let v = json_of(&run().args(["snapshots", "@offsite", "--json"]).stdout_ok());
    let tags: Vec<String> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tags"].to_string())
        .collect();
    assert_eq!(tags, ["[\"nightly\"]", "[\"manual\"]"], "{v}");

    // A restore takes its destination from the command line only; the
    // snapshot suffix follows the name.
    run()
        .args(["restore", "@offsite:latest", "-d"])
        .arg(out.path())
        .stdout_ok();
    same(&tree_files(out.path()), &tree_files(db.path()));

    // The repository's retention policy applies to forget.
    let v = json_of(
        &run()
            .args(["forget", "@offsite", "--dry-run", "--json"])
            .stdout_ok(),
    );
    assert!(v.to_string().contains("daily"), "{v}");

    // Mistakes are one line, exit 2, before anything runs.
    let err = run().args(["push", "@nope"]).stderr_with(2);
    let err = String::from_utf8_lossy(&err);
    assert!(
        err.contains("no remote or repository named \"nope\"") && err.contains("offsite, prod"),
        "{err}"
    );
    let bad = config(
        cfg_dir.path(),
        "[remotes.x]\nurl = \"/a\"\nbogus = 1\n[defaults.push]\nno-such-flag = 1\n",
    );
    let err = p
        .pqsync()
        .env("PQSYNC_CONFIG", &bad)
        .args(["push", "@x"])
        .stderr_with(2);
    let err = String::from_utf8_lossy(&err);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no-such-flag") || err.contains("bogus"),
        "{err}"
    );
    let err = p
        .pqsync()
        .args(["--config", "/nonexistent/pqsync.toml", "push", "x"])
        .stderr_with(2);
    assert!(String::from_utf8_lossy(&err).contains("cannot read the config file"));
}
