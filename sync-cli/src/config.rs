//! `pqsync.toml`: named remotes and repositories, and defaults per
//! command.
//!
//! The file is applied to the command line before it is parsed for good:
//! an argument `@NAME` (or `@NAME:ID` for a snapshot) becomes the URL of
//! the remote or repository `NAME`, with its profile, endpoint, region and
//! jurisdiction as URL options; then every setting the command takes and
//! the command line does not give is added as a flag, first from the
//! repository or remote the command names, then from `[defaults.COMMAND]`,
//! then from `[defaults]`. A flag on the command line always wins.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command};
use serde::Deserialize;

/// The variable naming the config file, as `--config` does.
pub const CONFIG_ENV: &str = "PQSYNC_CONFIG";

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Named remotes (`[remotes.NAME]`).
    #[serde(default)]
    remotes: BTreeMap<String, Location>,
    /// Named repositories (`[repositories.NAME]`).
    #[serde(default)]
    repositories: BTreeMap<String, Location>,
    /// `[defaults]` for every command, and `[defaults.COMMAND]` tables.
    #[serde(default)]
    defaults: toml::Table,
}

/// A named remote or repository.
#[derive(Debug, Deserialize)]
struct Location {
    /// `s3://…`, `r2://…`, `gs://…`, `az://…` or a directory.
    url: String,
    /// The AWS profile for its credentials (S3 and R2).
    profile: Option<String>,
    /// The endpoint (S3 and R2).
    endpoint: Option<String>,
    /// The region (S3).
    region: Option<String>,
    /// The R2 jurisdiction.
    jurisdiction: Option<String>,
    /// Every other key: flags of the commands that name it (`dir`,
    /// `password-file`, `keep-daily`, `tags`, …). `tags` and `host` label
    /// backups only, and `dir` is never a restore's destination.
    #[serde(flatten)]
    flags: toml::Table,
}

/// The config file in force: `--config FILE` on the command line, else
/// `PQSYNC_CONFIG`, else `pqsync.toml` in the platform's config directory
/// (`~/.config/pqsync/pqsync.toml` on Linux), and whether it was named
/// explicitly (then it must exist).
pub fn locate(args: &[OsString]) -> Option<(PathBuf, bool)> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(|p| (PathBuf::from(p), true));
        }
        if let Some(p) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some((PathBuf::from(p), true));
        }
    }
    if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    let dir = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some((dir.join("pqsync").join("pqsync.toml"), false))
}

/// Reads `path`; `Ok(None)` when it does not exist and was not named.
///
/// # Errors
/// A one-line message naming the file and what is wrong in it.
pub fn load(path: &Path, named: bool) -> Result<Option<Config>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the config file {}: {e}; create it, or name another with --config",
                path.display()
            ))
        }
    };
    let config: Config = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start].matches('\n').count() + 1)
            .unwrap_or(0);
        format!(
            "invalid config file {} (line {line}): {}; fix it or name another with --config",
            path.display(),
            e.message().trim()
        )
    })?;
    Ok(Some(config))
}

impl Config {
    /// Replaces each `@NAME[:ID]` argument by the URL it names, and returns
    /// the arguments with the named location's flags (at most one location
    /// is taken for flags: the first named).
    ///
    /// # Errors
    /// A message for an unknown name or a malformed location.
    fn resolve_names(
        &self,
        args: &[OsString],
    ) -> Result<(Vec<OsString>, Option<&Location>), String> {
        let mut out = Vec::with_capacity(args.len());
        let mut first = None;
        let mut after_dashes = false;
        for (i, a) in args.iter().enumerate() {
            let text = a.to_str().unwrap_or_default();
            if i == 0 || after_dashes || !text.starts_with('@') || text.len() < 2 {
                after_dashes |= a == "--";
                out.push(a.clone());
                continue;
            }
            let (name, spec) = match text[1..].split_once(':') {
                Some((n, s)) => (n, Some(s)),
                None => (&text[1..], None),
            };
            let location = self
                .repositories
                .get(name)
                .or_else(|| self.remotes.get(name))
                .ok_or_else(|| {
                    let mut known: Vec<&str> = self
                        .repositories
                        .keys()
                        .chain(self.remotes.keys())
                        .map(String::as_str)
                        .collect();
                    known.sort();
                    format!(
                        "no remote or repository named {name:?} in the config file (it has: {}); add [remotes.{name}] or [repositories.{name}], or write a directory named like this as ./{text}",
                        if known.is_empty() { "none".into() } else { known.join(", ") }
                    )
                })?;
            let mut url = location.url_with_settings(name)?;
            if let Some(spec) = spec {
                url.push(':');
                url.push_str(spec);
            }
            first.get_or_insert(location);
            out.push(url.into());
        }
        Ok((out, first))
    }
}

impl Location {
    /// The URL with `?profile=`, `?endpoint=`, `?region=` and
    /// `?jurisdiction=` added.
    fn url_with_settings(&self, name: &str) -> Result<String, String> {
        let mut url = self.url.clone();
        let pairs = [
            ("profile", &self.profile),
            ("endpoint", &self.endpoint),
            ("region", &self.region),
            ("jurisdiction", &self.jurisdiction),
        ];
        for (key, value) in pairs {
            let Some(value) = value else { continue };
            if !pqsync_backends::looks_like_url(&self.url) {
                return Err(format!(
                    "the config file's {name:?} is a directory ({}), which takes no {key}; remove it",
                    self.url
                ));
            }
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(key);
            url.push('=');
            url.push_str(&escape_query(value));
        }
        Ok(url)
    }
}

/// Percent-encodes what would end a query value early (`&`, `#`, `%`, `+`,
/// space).
fn escape_query(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '&' | '#' | '%' | '+' | ' ' => out.push_str(&format!("%{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Applies `config` to `args`: names resolved and settings added as flags.
///
/// # Errors
/// A message naming the setting that does not fit, or the name that is
/// not in the file. A command line clap refuses is returned as it is, for
/// clap to report.
pub fn apply(config: &Config, args: &[OsString], cli: &Command) -> Result<Vec<OsString>, String> {
    let (mut args, location) = config.resolve_names(args)?;
    let Ok(matches) = cli.clone().try_get_matches_from(&args) else {
        return Ok(args);
    };
    let Some((name, sub_matches)) = matches.subcommand() else {
        return Ok(args);
    };
    let Some(sub) = cli.find_subcommand(name) else {
        return Ok(args);
    };
    let mut extra = Vec::new();
    let mut taken = std::collections::HashSet::new();
    if let Some(loc) = location {
        for (key, value) in &loc.flags {
            // A restore never writes over the configured database by
            // default: its destination is always given. Tags and host label
            // the snapshots a backup makes; elsewhere they would filter.
            let backup_only = matches!(key.as_str(), "tags" | "tag" | "host");
            if (key == "dir" && name == "restore") || (backup_only && name != "backup") {
                continue;
            }
            match add(sub, sub_matches, key, value, &mut extra, &mut taken) {
                Ok(()) => {}
                // A repository's `keep-daily` is for forget, its `dir` for
                // backup: each command takes what applies to it.
                Err(_) if takes_anywhere(cli, key) => {}
                Err(e) => return Err(format!("config file, {:?}: {e}", loc.url)),
            }
        }
    }
    let mut layers = Vec::new();
    if let Some(toml::Value::Table(t)) = config.defaults.get(name) {
        layers.push((format!("[defaults.{name}]"), t));
    }
    layers.push(("[defaults]".to_string(), &config.defaults));
    for (label, table) in layers {
        for (key, value) in table {
            if matches!(value, toml::Value::Table(_)) {
                if label == "[defaults]" && cli.find_subcommand(key).is_none() {
                    return Err(format!(
                        "config file {label}: there is no command {key:?} to give defaults to"
                    ));
                }
                continue;
            }
            match add(sub, sub_matches, key, value, &mut extra, &mut taken) {
                Ok(()) => {}
                // `[defaults]` applies to the commands that take a setting.
                Err(_) if label == "[defaults]" && !takes_anywhere(cli, key) => {
                    return Err(format!(
                        "config file {label}: no command takes --{}",
                        key.replace('_', "-")
                    ))
                }
                Err(_) if label == "[defaults]" => {}
                Err(e) => return Err(format!("config file {label}: {e}")),
            }
        }
    }
    if !extra.is_empty() {
        // Flags go before a `--`, which ends them.
        let at = args.iter().position(|a| a == "--").unwrap_or(args.len());
        args.splice(at..at, extra);
    }
    Ok(args)
}

/// Whether any subcommand takes `key`.
fn takes_anywhere(cli: &Command, key: &str) -> bool {
    let id = key.replace('-', "_");
    cli.get_subcommands()
        .any(|c| c.get_arguments().any(|a| a.get_id() == id.as_str()))
}

/// Adds `--key value` for a setting the command takes and the command line
/// does not give.
fn add(
    sub: &Command,
    given: &ArgMatches,
    key: &str,
    value: &toml::Value,
    extra: &mut Vec<OsString>,
    taken: &mut std::collections::HashSet<String>,
) -> Result<(), String> {
    let id = key.replace('-', "_");
    let Some(arg) = sub
        .get_arguments()
        .find(|a| a.get_id() == id.as_str() && !a.is_positional())
    else {
        return Err(format!(
            "`pqsync {}` takes no --{}",
            sub.get_name(),
            key.replace('_', "-")
        ));
    };
    if !taken.insert(id.clone()) {
        return Ok(());
    }
    let on_command_line = |id: &str| {
        given
            .try_contains_id(id)
            .is_ok_and(|_| given.value_source(id) == Some(ValueSource::CommandLine))
    };
    if on_command_line(&id) {
        return Ok(());
    }
    // Two ways of giving one thing: the command line's choice stands.
    let rivals = [("password_file", "password_command")];
    for (a, b) in rivals {
        if (id == a && on_command_line(b)) || (id == b && on_command_line(a)) {
            return Ok(());
        }
    }
    let flag = OsString::from(format!("--{}", arg.get_long().unwrap_or(&id)));
    let scalar = |v: &toml::Value| -> Result<String, String> {
        match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(i) => Ok(i.to_string()),
            toml::Value::Float(f) => Ok(f.to_string()),
            toml::Value::Boolean(b) => Ok(b.to_string()),
            toml::Value::Datetime(d) => Ok(d.to_string()),
            _ => Err(format!("{key} must be a string, number or list of them")),
        }
    };
    match (arg.get_action(), value) {
        (ArgAction::SetTrue, toml::Value::Boolean(b)) => {
            if *b {
                extra.push(flag);
            }
        }
        (ArgAction::SetTrue, _) => return Err(format!("{key} must be true or false")),
        (_, toml::Value::Array(items)) => {
            for item in items {
                extra.push(flag.clone());
                extra.push(scalar(item)?.into());
            }
        }
        (_, v) => {
            extra.push(flag);
            extra.push(scalar(v)?.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Config {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn query_values_are_escaped() {
        assert_eq!(escape_query("a&b c#%+"), "a%26b%20c%23%25%2B");
        assert_eq!(escape_query("http://h:9000/x"), "http://h:9000/x");
    }

    #[test]
    fn names_become_urls_with_their_settings() {
        let c = cfg(
            "[remotes.prod]\nurl = \"s3://b/prod\"\nprofile = \"ops\"\nendpoint = \"http://127.0.0.1:9\"\n[repositories.r]\nurl = \"/srv/repo\"\n",
        );
        let args: Vec<OsString> = ["pqsync", "push", "@prod", "--", "@x"]
            .iter()
            .map(OsString::from)
            .collect();
        let (out, loc) = c.resolve_names(&args).unwrap();
        assert_eq!(
            out[2],
            "s3://b/prod?profile=ops&endpoint=http://127.0.0.1:9"
        );
        assert_eq!(out[4], "@x");
        assert!(loc.is_some());
        let args: Vec<OsString> = ["pqsync", "restore", "@r:latest"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(c.resolve_names(&args).unwrap().0[2], "/srv/repo:latest");
        let args: Vec<OsString> = ["pqsync", "push", "@nope"]
            .iter()
            .map(OsString::from)
            .collect();
        let err = c.resolve_names(&args).unwrap_err();
        assert!(err.contains("it has: prod, r"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<Config>("[remotes.x]\nurl = \"/a\"\n[bogus]\n").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
    }
}
