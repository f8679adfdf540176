//! AWS shared configuration (`~/.aws/config`) and credentials
//! (`~/.aws/credentials`), read as the AWS CLI reads them.
//!
//! The files are parsed with `rust-ini`, set up the way botocore reads
//! them: values are taken literally (no quote or escape processing),
//! comments are whole lines starting with `#` or `;`, and indented lines
//! continue a value (the nested `s3 =` / `[services NAME]` form).

use std::path::{Path, PathBuf};

use ini::{Ini, ParseOption};

use crate::error::{Error, Result};

/// The profile settings pqsync uses, merged from both files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Profile {
    /// The profile's name.
    pub name: String,
    /// `aws_access_key_id`.
    pub access_key_id: Option<String>,
    /// `aws_secret_access_key`.
    pub secret_access_key: Option<String>,
    /// `aws_session_token`.
    pub session_token: Option<String>,
    /// `region`.
    pub region: Option<String>,
    /// The S3 endpoint: `endpoint_url` under `s3 =` in the profile or in its
    /// `services` section, else the profile's own `endpoint_url`.
    pub endpoint_url: Option<String>,
    /// The file the keys came from.
    pub keys_from: Option<PathBuf>,
    /// A way of getting credentials pqsync does not follow (`role_arn`,
    /// `sso_session`, `credential_process`, …), named by its setting.
    pub unsupported: Option<String>,
}

/// Why a profile was chosen: said in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Chosen {
    /// Named by the remote (`?profile=`, a config file) or `--profile`.
    Explicit,
    /// `AWS_PROFILE` (or `AWS_DEFAULT_PROFILE`).
    Env(&'static str),
    /// Nothing named one: the profile `default`, if the files have it.
    Default,
}

/// Where the two files are: `AWS_CONFIG_FILE` and
/// `AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/config` and
/// `~/.aws/credentials`.
#[derive(Clone, Debug)]
pub(crate) struct Files {
    pub config: Option<PathBuf>,
    pub credentials: Option<PathBuf>,
}

impl Files {
    /// The files the environment names.
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from);
        let pick = |var: &str, default: &str| match std::env::var_os(var) {
            Some(v) if !v.is_empty() => Some(expand_home(Path::new(&v), home.as_deref())),
            _ => home.as_ref().map(|h| h.join(".aws").join(default)),
        };
        Files {
            config: pick("AWS_CONFIG_FILE", "config"),
            credentials: pick("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        }
    }

    /// Both files joined by `joiner` (` or `, ` nor `), for messages.
    pub fn describe(&self, joiner: &str) -> String {
        let names: Vec<String> = [&self.credentials, &self.config]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        if names.is_empty() {
            "no AWS config files (HOME is not set)".into()
        } else {
            names.join(joiner)
        }
    }
}

/// `~/x` against `home`, as the AWS CLI expands these variables.
fn expand_home(path: &Path, home: Option<&Path>) -> PathBuf {
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

/// The profile in force and why: `explicit` if given, else `AWS_PROFILE`,
/// else `AWS_DEFAULT_PROFILE`, else `default`.
pub(crate) fn choose(explicit: Option<&str>) -> (String, Chosen) {
    if let Some(p) = explicit {
        return (p.to_string(), Chosen::Explicit);
    }
    for var in ["AWS_PROFILE", "AWS_DEFAULT_PROFILE"] {
        if let Some(p) = std::env::var(var).ok().filter(|p| !p.is_empty()) {
            return (p, Chosen::Env(var));
        }
    }
    ("default".into(), Chosen::Default)
}

/// Reads profile `name` from `files`. `Ok(None)` when neither file has it.
///
/// # Errors
/// [`Error::Profile`] when a file exists but cannot be read or parsed.
pub(crate) fn load(files: &Files, name: &str) -> Result<Option<Profile>> {
    let config = files.config.as_deref().map(read).transpose()?.flatten();
    let credentials = files
        .credentials
        .as_deref()
        .map(read)
        .transpose()?
        .flatten();
    let config_section = config.as_ref().and_then(|ini| {
        ini.section(Some(format!("profile {name}")))
            .or_else(|| (name == "default").then(|| ini.section(Some("default")))?)
    });
    let credentials_section = credentials.as_ref().and_then(|ini| ini.section(Some(name)));
    if config_section.is_none() && credentials_section.is_none() {
        return Ok(None);
    }
    let get = |key: &str| {
        credentials_section
            .and_then(|s| s.get(key))
            .or_else(|| config_section.and_then(|s| s.get(key)))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    let keys_from = if credentials_section.is_some_and(|s| s.contains_key("aws_access_key_id")) {
        files.credentials.clone()
    } else if config_section.is_some_and(|s| s.contains_key("aws_access_key_id")) {
        files.config.clone()
    } else {
        None
    };
    let services = get("services").and_then(|svc| {
        config
            .as_ref()?
            .section(Some(format!("services {svc}")))?
            .get("s3")
            .map(str::to_string)
    });
    let endpoint_url = nested(get("s3").as_deref(), "endpoint_url")
        .or_else(|| nested(services.as_deref(), "endpoint_url"))
        .or_else(|| get("endpoint_url"));
    let unsupported = [
        "role_arn",
        "credential_process",
        "sso_session",
        "sso_start_url",
        "web_identity_token_file",
    ]
    .into_iter()
    .find(|k| get(k).is_some())
    .map(str::to_string);
    Ok(Some(Profile {
        name: name.to_string(),
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
        session_token: get("aws_session_token").or_else(|| get("aws_security_token")),
        region: get("region"),
        endpoint_url,
        keys_from,
        unsupported,
    }))
}

/// A setting inside a nested value (`s3 =` followed by indented
/// `key = value` lines).
fn nested(value: Option<&str>, key: &str) -> Option<String> {
    value?.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        (k.trim() == key && !v.trim().is_empty()).then(|| v.trim().to_string())
    })
}

/// Parses one file; `Ok(None)` when it does not exist.
fn read(path: &Path) -> Result<Option<Ini>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Profile {
                reason: format!("cannot read {}: {e}", path.display()),
            })
        }
    };
    let opt = ParseOption {
        enabled_quote: false,
        enabled_escape: false,
        enabled_indented_mutiline_value: true,
        enabled_preserve_key_leading_whitespace: false,
    };
    Ini::load_from_str_opt(&text, opt)
        .map(Some)
        .map_err(|e| Error::Profile {
            reason: format!(
                "cannot parse {} (line {}): {}; fix the file or point AWS_CONFIG_FILE/AWS_SHARED_CREDENTIALS_FILE elsewhere",
                path.display(),
                e.line,
                e.msg
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(config: &str, credentials: &str) -> (tempfile::TempDir, Files) {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path().join("config");
        let k = dir.path().join("credentials");
        std::fs::write(&c, config).unwrap();
        std::fs::write(&k, credentials).unwrap();
        let f = Files {
            config: Some(c),
            credentials: Some(k),
        };
        (dir, f)
    }

    #[test]
    fn reads_profiles_as_the_aws_cli_does() {
        let (_d, f) = files(
            "[default]\nregion = eu-west-1\n\n# a comment\n; another\n[profile backup]\nregion=auto\ns3 =\n  endpoint_url = https://a.example\n  addressing_style = path\n[profile svc]\nservices = local\nendpoint_url = https://generic.example\n[services local]\ns3 =\n  endpoint_url = http://127.0.0.1:9000\n[profile role]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = default\n",
            "[default]\naws_access_key_id = AKIDEFAULT\naws_secret_access_key = se#cret;\"quoted\"\n[backup]\naws_access_key_id=AKIBACKUP\naws_secret_access_key=s2\naws_session_token = tok\n",
        );
        let d = load(&f, "default").unwrap().unwrap();
        assert_eq!(d.access_key_id.as_deref(), Some("AKIDEFAULT"));
        assert_eq!(d.secret_access_key.as_deref(), Some("se#cret;\"quoted\""));
        assert_eq!(d.region.as_deref(), Some("eu-west-1"));
        assert_eq!(d.keys_from, f.credentials);
        let b = load(&f, "backup").unwrap().unwrap();
        assert_eq!(b.access_key_id.as_deref(), Some("AKIBACKUP"));
        assert_eq!(b.session_token.as_deref(), Some("tok"));
        assert_eq!(b.region.as_deref(), Some("auto"));
        assert_eq!(b.endpoint_url.as_deref(), Some("https://a.example"));
        let s = load(&f, "svc").unwrap().unwrap();
        assert_eq!(s.endpoint_url.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.access_key_id, None);
        let r = load(&f, "role").unwrap().unwrap();
        assert_eq!(r.unsupported.as_deref(), Some("role_arn"));
        assert_eq!(load(&f, "missing").unwrap(), None);
    }

    #[test]
    fn config_section_needs_the_profile_word_except_for_default() {
        let (_d, f) = files("[backup]\nregion = x\n[profile default]\nregion = y\n", "");
        assert_eq!(load(&f, "backup").unwrap(), None);
        assert_eq!(
            load(&f, "default").unwrap().unwrap().region.as_deref(),
            Some("y")
        );
    }

    #[test]
    fn missing_files_are_no_profile_and_broken_ones_an_error() {
        let f = Files {
            config: Some("/nonexistent/config".into()),
            credentials: None,
        };
        assert_eq!(load(&f, "default").unwrap(), None);
        let (_d, f) = files("[profile x\nregion = y\n", "");
        let err = load(&f, "x").unwrap_err().to_string();
        assert!(err.contains("cannot parse"), "{err}");
    }

    #[test]
    fn home_is_expanded() {
        assert_eq!(
            expand_home(Path::new("~/creds"), Some(Path::new("/home/u"))),
            PathBuf::from("/home/u/creds")
        );
        assert_eq!(
            expand_home(Path::new("/abs"), Some(Path::new("/home/u"))),
            PathBuf::from("/abs")
        );
    }
}
