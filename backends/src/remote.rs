//! Parsing remotes as users write them.

use std::path::{Component, Path, PathBuf};

use url::Url;

use crate::error::{Error, JurisdictionOrigin, Result};

/// Which R2 jurisdiction's endpoint to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Jurisdiction {
    /// The default (global) endpoint.
    #[default]
    Default,
    /// The EU jurisdiction.
    Eu,
    /// The FedRAMP jurisdiction.
    Fedramp,
}

impl std::str::FromStr for Jurisdiction {
    type Err = String;

    /// Parses `default` (or the empty string), `eu` or `fedramp`, in any
    /// case.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "" | "default" => Ok(Jurisdiction::Default),
            "eu" => Ok(Jurisdiction::Eu),
            "fedramp" => Ok(Jurisdiction::Fedramp),
            _ => Err(format!(
                "unknown R2 jurisdiction {s:?} (expected default, eu or fedramp)"
            )),
        }
    }
}

impl std::fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Jurisdiction {
    /// The R2 endpoint for an account in this jurisdiction.
    pub fn r2_endpoint(self, account: &str) -> String {
        match self {
            Jurisdiction::Default => format!("https://{account}.r2.cloudflarestorage.com"),
            Jurisdiction::Eu => format!("https://{account}.eu.r2.cloudflarestorage.com"),
            Jurisdiction::Fedramp => format!("https://{account}.fedramp.r2.cloudflarestorage.com"),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Jurisdiction::Default => "default",
            Jurisdiction::Eu => "eu",
            Jurisdiction::Fedramp => "fedramp",
        }
    }
}

/// Parses a jurisdiction, reporting a bad value as
/// [`Error::InvalidJurisdiction`] from `origin`.
pub(crate) fn parse_jurisdiction(value: &str, origin: JurisdictionOrigin) -> Result<Jurisdiction> {
    value.parse().map_err(|_| Error::InvalidJurisdiction {
        value: value.to_string(),
        origin,
    })
}

/// How to reach an S3 or R2 remote, given with the remote itself
/// (`s3://bucket/prefix?profile=backup&endpoint=https://…&region=…`, or a
/// named remote in the config file) so that each remote of a `mirror` or
/// `backup` can use its own account. Each setting wins over the command's
/// flags and the environment. None of them changes where the tree is:
/// [`Remote::canonical`] leaves them out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct S3Settings {
    /// The AWS profile (in `~/.aws/config` and `~/.aws/credentials`) whose
    /// keys, region and endpoint to use.
    pub profile: Option<String>,
    /// The endpoint, as `--endpoint` would give it.
    pub endpoint: Option<String>,
    /// The region to sign requests for.
    pub region: Option<String>,
}

impl S3Settings {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self == &S3Settings::default()
    }
}

/// A parsed remote: where a tree lives.
///
/// Prefixes have no leading or trailing `/`, and their components are the
/// text the user wrote, percent-decoded: `s3://b/caf%C3%A9` and `s3://b/café`
/// both name the prefix `café`. (A URL parser percent-encodes such
/// characters, so decoding is the only way to keep what was typed; write `%`
/// itself as `%25`.)
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Remote {
    /// Amazon S3 or an S3-compatible server (`s3://bucket/prefix`).
    S3 {
        /// Bucket.
        bucket: String,
        /// Prefix inside the bucket.
        prefix: String,
        /// How to reach it (`?profile=`, `?endpoint=`, `?region=`).
        settings: S3Settings,
    },
    /// Cloudflare R2 (`r2://ACCOUNT_ID/bucket/prefix`).
    R2 {
        /// Cloudflare account id: 32 lowercase hex characters.
        account: String,
        /// Bucket.
        bucket: String,
        /// Prefix inside the bucket.
        prefix: String,
        /// Jurisdiction given in the URL (`?jurisdiction=eu`).
        jurisdiction: Option<Jurisdiction>,
        /// How to reach it (`?profile=`, `?endpoint=`).
        settings: S3Settings,
    },
    /// Google Cloud Storage (`gs://bucket/prefix`).
    Gcs {
        /// Bucket.
        bucket: String,
        /// Prefix inside the bucket.
        prefix: String,
    },
    /// Azure Blob Storage (`az://container/prefix`).
    Azure {
        /// Container.
        container: String,
        /// Prefix inside the container.
        prefix: String,
    },
    /// A local directory (a plain path or `file:///abs/path`).
    Dir {
        /// The directory, absolute.
        path: PathBuf,
    },
}

impl Remote {
    /// The canonical form, which names the same remote when parsed again:
    /// `s3://b/p`, `gs://b/p`, `az://c/p`, `r2://ACCOUNT/b/p` (plus
    /// `?jurisdiction=eu|fedramp` when not the default) or `file:///abs/path`.
    /// `%`, `?` and `#` in a prefix or path are percent-encoded; everything
    /// else is written as is.
    pub fn canonical(&self) -> String {
        let join = |scheme: &str, head: &str, prefix: &str| {
            if prefix.is_empty() {
                format!("{scheme}://{head}")
            } else {
                format!("{scheme}://{head}/{}", escape(prefix))
            }
        };
        match self {
            Remote::S3 { bucket, prefix, .. } => join("s3", bucket, prefix),
            Remote::Gcs { bucket, prefix } => join("gs", bucket, prefix),
            Remote::Azure { container, prefix } => join("az", container, prefix),
            Remote::R2 {
                account,
                bucket,
                prefix,
                jurisdiction,
                ..
            } => {
                let base = join("r2", &format!("{account}/{bucket}"), prefix);
                match jurisdiction {
                    Some(j) if *j != Jurisdiction::Default => format!("{base}?jurisdiction={j}"),
                    _ => base,
                }
            }
            Remote::Dir { path } => format!("file://{}", escape(&path.display().to_string())),
        }
    }

    /// How to reach an S3 or R2 remote (`None` for other kinds).
    pub fn settings(&self) -> Option<&S3Settings> {
        match self {
            Remote::S3 { settings, .. } | Remote::R2 { settings, .. } => Some(settings),
            _ => None,
        }
    }

    /// The same, for changing them (a config file's named remote adds its
    /// profile and endpoint). `None` for other kinds.
    pub fn settings_mut(&mut self) -> Option<&mut S3Settings> {
        match self {
            Remote::S3 { settings, .. } | Remote::R2 { settings, .. } => Some(settings),
            _ => None,
        }
    }

    /// The prefix inside the bucket or container (empty for a directory).
    pub fn prefix(&self) -> &str {
        match self {
            Remote::S3 { prefix, .. }
            | Remote::R2 { prefix, .. }
            | Remote::Gcs { prefix, .. }
            | Remote::Azure { prefix, .. } => prefix,
            Remote::Dir { .. } => "",
        }
    }

    /// The bucket or container (`None` for a directory).
    pub fn bucket(&self) -> Option<&str> {
        match self {
            Remote::S3 { bucket, .. } | Remote::R2 { bucket, .. } | Remote::Gcs { bucket, .. } => {
                Some(bucket)
            }
            Remote::Azure { container, .. } => Some(container),
            Remote::Dir { .. } => None,
        }
    }

    /// The scheme of the canonical form: `s3`, `r2`, `gs`, `az` or `file`.
    pub fn scheme_name(&self) -> &'static str {
        match self {
            Remote::S3 { .. } => "s3",
            Remote::R2 { .. } => "r2",
            Remote::Gcs { .. } => "gs",
            Remote::Azure { .. } => "az",
            Remote::Dir { .. } => "file",
        }
    }

    /// The kind of store, for messages: `S3`, `Cloudflare R2`,
    /// `Google Cloud Storage`, `Azure Blob Storage` or `local directory`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Remote::S3 { .. } => "S3",
            Remote::R2 { .. } => "Cloudflare R2",
            Remote::Gcs { .. } => "Google Cloud Storage",
            Remote::Azure { .. } => "Azure Blob Storage",
            Remote::Dir { .. } => "local directory",
        }
    }

    /// Whether `other` lies in the same bucket (or container) of the same
    /// store, reached the same way: the same kind, bucket, account and
    /// jurisdiction (R2), and the same [`S3Settings`]. One store client can
    /// then serve both, and copy objects between them inside the store.
    /// Directories never share a store.
    pub fn same_store(&self, other: &Remote) -> bool {
        match (self, other) {
            (
                Remote::S3 {
                    bucket, settings, ..
                },
                Remote::S3 {
                    bucket: b2,
                    settings: s2,
                    ..
                },
            ) => bucket == b2 && settings == s2,
            (
                Remote::R2 {
                    account,
                    bucket,
                    jurisdiction,
                    settings,
                    ..
                },
                Remote::R2 {
                    account: a2,
                    bucket: b2,
                    jurisdiction: j2,
                    settings: s2,
                    ..
                },
            ) => {
                account.eq_ignore_ascii_case(a2)
                    && bucket == b2
                    && jurisdiction.unwrap_or_default() == j2.unwrap_or_default()
                    && settings == s2
            }
            (Remote::Gcs { bucket, .. }, Remote::Gcs { bucket: b2, .. }) => bucket == b2,
            (Remote::Azure { container, .. }, Remote::Azure { container: c2, .. }) => {
                container == c2
            }
            _ => false,
        }
    }

    /// Whether `other` is the same location as `self` or lies inside it.
    ///
    /// Both must be the same kind in the same bucket (for R2 also the same
    /// account and jurisdiction, an R2 remote without `?jurisdiction=`
    /// counting as the default one), and `other`'s prefix must equal
    /// `self`'s or continue it after a `/`: `s3://b/prod` contains
    /// `s3://b/prod/db` but not `s3://b/prod2`. Directories are compared
    /// component by component after lexical normalisation (`.` dropped, `..`
    /// removing the previous component), without following symlinks.
    pub fn contains(&self, other: &Remote) -> bool {
        match (self, other) {
            (
                Remote::S3 { bucket, prefix, .. },
                Remote::S3 {
                    bucket: b2,
                    prefix: p2,
                    ..
                },
            )
            | (
                Remote::Gcs { bucket, prefix },
                Remote::Gcs {
                    bucket: b2,
                    prefix: p2,
                },
            )
            | (
                Remote::Azure {
                    container: bucket,
                    prefix,
                },
                Remote::Azure {
                    container: b2,
                    prefix: p2,
                },
            ) => bucket == b2 && prefix_contains(prefix, p2),
            (
                Remote::R2 {
                    account,
                    bucket,
                    prefix,
                    jurisdiction,
                    ..
                },
                Remote::R2 {
                    account: a2,
                    bucket: b2,
                    prefix: p2,
                    jurisdiction: j2,
                    ..
                },
            ) => {
                account.eq_ignore_ascii_case(a2)
                    && jurisdiction.unwrap_or_default() == j2.unwrap_or_default()
                    && bucket == b2
                    && prefix_contains(prefix, p2)
            }
            (Remote::Dir { path }, Remote::Dir { path: p2 }) => {
                lexical(p2).starts_with(lexical(path))
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.canonical())
    }
}

fn prefix_contains(outer: &str, inner: &str) -> bool {
    outer.is_empty()
        || inner == outer
        || inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// `path` with `.` components dropped and each `..` removing the component
/// before it (the root stays).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push(c);
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// Percent-encodes the characters that would change a URL's meaning.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// The scheme names pqsync knows, each with the canonical one.
const SCHEMES: &[(&str, &str)] = &[
    ("s3", "s3"),
    ("s3a", "s3"),
    ("r2", "r2"),
    ("gs", "gs"),
    ("gcs", "gs"),
    ("az", "az"),
    ("azure", "az"),
    ("abfs", "az"),
    ("file", "file"),
];

/// Whether a DIR|REMOTE argument should be parsed as a remote (with
/// [`parse_remote`]) rather than taken as a directory path: it has a scheme
/// (`word://`), or it starts like a mistyped one (`s3:/x`, `s3:x`, `s3//x`,
/// `GS:/b`, …) so that parsing it reports the mistake instead of a directory
/// named `s3:` being used.
pub fn looks_like_url(s: &str) -> bool {
    url_scheme(s).is_some() || mistyped(s).is_some()
}

/// The scheme of `s` when it starts with `scheme://`.
fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    (first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
    .then_some(scheme)
}

/// When `s` starts with a known scheme name followed by `:` but not `://`,
/// or by `//` without the colon, the remote that was probably meant.
fn mistyped(s: &str) -> Option<String> {
    for (name, canonical) in SCHEMES {
        let Some(head) = s.get(..name.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(name) {
            continue;
        }
        let rest = &s[name.len()..];
        if rest.starts_with("://") {
            return None;
        }
        let Some(tail) = rest.strip_prefix(':').or_else(|| rest.strip_prefix("//")) else {
            continue;
        };
        let tail = tail.trim_start_matches([':', '/']);
        return Some(match (*canonical, tail.is_empty()) {
            ("file", true) => "file:///ABSOLUTE/PATH".to_string(),
            ("file", false) => format!("file:///{tail}"),
            (scheme, true) => format!("{scheme}://BUCKET"),
            (scheme, false) => format!("{scheme}://{tail}"),
        });
    }
    None
}

/// Parses a remote.
///
/// * `s3://bucket[/prefix]` (also `s3a://`) for S3 and S3-compatible
///   servers;
/// * `r2://ACCOUNT_ID/bucket[/prefix][?jurisdiction=default|eu|fedramp]`
///   for Cloudflare R2, where `ACCOUNT_ID` is the 32-hex-character account
///   id (stored in lowercase);
/// * `gs://bucket[/prefix]` (also `gcs://`) for Google Cloud Storage;
/// * `az://container[/prefix]` (also `azure://`, `abfs://`) for Azure Blob
///   Storage;
/// * `file:///absolute/path`, or a plain path (made absolute against the
///   current directory), for a local directory.
///
/// Schemes are case-insensitive. Empty prefix components (`a//b`, a
/// trailing `/`) are dropped; prefix components are percent-decoded (see
/// [`Remote`]). Bucket names may contain ASCII letters, digits, `.`, `-` and
/// `_`, which admits every AWS, GCS and Azure name and the looser names of
/// some S3-compatible servers.
///
/// # Errors
/// [`Error::InvalidRemote`] naming what is wrong, including text that looks
/// like a mistyped URL (`s3:/bucket` → "did you mean s3://bucket?"), an
/// unknown scheme or option, an R2 remote without its account id, a bad
/// bucket name, and `.` or `..` in a prefix. [`Error::InvalidJurisdiction`]
/// for a bad `?jurisdiction=`.
pub fn parse_remote(input: &str) -> Result<Remote> {
    let invalid = |reason: String| Error::InvalidRemote {
        url: input.to_string(),
        reason,
    };
    if input.is_empty() {
        return Err(invalid("empty remote".into()));
    }
    if let Some(meant) = mistyped(input) {
        return Err(invalid(format!(
            "not a URL: did you mean {meant}? (write a local directory with this name as ./{input})"
        )));
    }
    let Some(scheme) = url_scheme(input) else {
        let path = std::path::absolute(input).map_err(|e| invalid(e.to_string()))?;
        return Ok(Remote::Dir { path });
    };
    let lower = scheme.to_ascii_lowercase();
    let Some(&(_, kind)) = SCHEMES.iter().find(|(name, _)| *name == lower) else {
        let hint = if lower == "http" || lower == "https" {
            "; for an S3-compatible server, write s3://BUCKET/prefix and give the server with --endpoint or AWS_ENDPOINT_URL"
        } else {
            ""
        };
        return Err(invalid(format!(
            "unknown scheme {lower:?} (expected s3, r2, gs, az or file){hint}"
        )));
    };
    let url = Url::parse(input).map_err(|e| invalid(format!("not a valid URL: {e}")))?;
    if url.fragment().is_some() {
        return Err(invalid(
            "unexpected `#`: write a `#` in a prefix as %23".into(),
        ));
    }
    if kind == "file" {
        return parse_file(&url).map_err(invalid);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(format!(
            "unexpected `@`: the {} comes right after {kind}://",
            if kind == "r2" { "account id" } else { "bucket" }
        )));
    }
    if url.port().is_some() {
        return Err(invalid(
            "unexpected port: give a custom endpoint with --endpoint or AWS_ENDPOINT_URL, \
             and the bucket right after the scheme"
                .into(),
        ));
    }
    let host = url.host_str().unwrap_or_default();
    let mut jurisdiction = None;
    let mut settings = S3Settings::default();
    for (key, value) in url.query_pairs() {
        let s3_like = kind == "s3" || kind == "r2";
        let slot = match &*key {
            "jurisdiction" if kind != "r2" => {
                return Err(invalid(
                    "?jurisdiction= applies to r2:// remotes only".into(),
                ))
            }
            "jurisdiction" if jurisdiction.is_some() => {
                return Err(invalid("?jurisdiction= given twice".into()))
            }
            "jurisdiction" => {
                jurisdiction = Some(parse_jurisdiction(&value, JurisdictionOrigin::Url)?);
                continue;
            }
            "profile" | "endpoint" | "region" if !s3_like => {
                return Err(invalid(format!(
                    "?{key}= applies to s3:// and r2:// remotes only"
                )))
            }
            "profile" => &mut settings.profile,
            "endpoint" => &mut settings.endpoint,
            "region" if kind == "r2" => {
                return Err(invalid(
                    "?region= applies to s3:// remotes only (R2 signs for region auto)".into(),
                ))
            }
            "region" => &mut settings.region,
            _ => {
                return Err(invalid(format!(
                    "unknown option {key:?} (expected profile, endpoint, region or, for r2://, jurisdiction)"
                )))
            }
        };
        if slot.is_some() {
            return Err(invalid(format!("?{key}= given twice")));
        }
        if value.is_empty() {
            return Err(invalid(format!("?{key}= is empty")));
        }
        *slot = Some(value.into_owned());
    }
    let mut parts = raw_path_components(input).map_err(invalid)?.into_iter();
    if kind == "r2" {
        let account = r2_account(host).map_err(invalid)?;
        let bucket = parts.next().ok_or_else(|| {
            invalid("missing bucket name: expected r2://ACCOUNT_ID/bucket[/prefix]".into())
        })?;
        check_bucket(&bucket).map_err(invalid)?;
        return Ok(Remote::R2 {
            account,
            bucket,
            prefix: parts.collect::<Vec<_>>().join("/"),
            jurisdiction,
            settings,
        });
    }
    if host.is_empty() {
        return Err(invalid(format!(
            "missing bucket name: expected {kind}://BUCKET[/prefix]"
        )));
    }
    check_bucket(host).map_err(invalid)?;
    let bucket = host.to_string();
    let prefix = parts.collect::<Vec<_>>().join("/");
    Ok(match kind {
        "s3" => Remote::S3 {
            bucket,
            prefix,
            settings,
        },
        "gs" => Remote::Gcs { bucket, prefix },
        _ => Remote::Azure {
            container: bucket,
            prefix,
        },
    })
}

fn parse_file(url: &Url) -> std::result::Result<Remote, String> {
    let relative = || "file:// remotes need an absolute path, as in file:///srv/db".to_string();
    if url
        .host_str()
        .is_some_and(|h| !h.is_empty() && h != "localhost")
    {
        return Err(relative());
    }
    if url.query().is_some() {
        return Err("file:// remotes take no options".into());
    }
    let path = url.to_file_path().map_err(|()| relative())?;
    Ok(Remote::Dir { path })
}

/// The percent-decoded, non-empty components of the path of a
/// `scheme://host/path?query` remote, read from the text as written (a URL
/// parser would have resolved `.` and `..` already).
fn raw_path_components(input: &str) -> std::result::Result<Vec<String>, String> {
    let after_scheme = &input[input.find("://").map_or(0, |i| i + 3)..];
    let end = after_scheme.find(['?', '#']).unwrap_or(after_scheme.len());
    let path = match after_scheme[..end].find('/') {
        Some(i) => &after_scheme[i..end],
        None => "",
    };
    let mut out = Vec::new();
    for raw in path.split('/').filter(|c| !c.is_empty()) {
        let Ok(part) = String::from_utf8(percent_decode(raw)) else {
            return Err(format!(
                "prefix component {raw:?} is not UTF-8 once percent-decoded"
            ));
        };
        if part == "." || part == ".." {
            return Err("`.` and `..` are not allowed in a prefix".into());
        }
        if part.contains('/') {
            return Err(format!(
                "prefix component {raw:?} holds an encoded `/`: separate components with a plain /"
            ));
        }
        if part.chars().any(char::is_control) {
            return Err(format!(
                "prefix component {raw:?} holds a control character"
            ));
        }
        out.push(part);
    }
    Ok(out)
}

/// Decodes each `%XX`; a `%` not followed by two hex digits stays as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn r2_account(host: &str) -> std::result::Result<String, String> {
    if host.len() == 32 && host.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(host.to_ascii_lowercase());
    }
    let got = if host.is_empty() {
        String::new()
    } else {
        format!(" (got {host:?})")
    };
    Err(format!(
        "r2:// remotes start with the 32-hex-character Cloudflare account id: \
         r2://ACCOUNT_ID/bucket[/prefix]{got}"
    ))
}

fn check_bucket(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty bucket name".into());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a bucket name"));
    }
    if name.len() > 255 {
        return Err(format!(
            "bucket name {name:?} is longer than 255 characters"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "bucket name {name:?} holds {c:?}: bucket names are letters, digits, `.`, `-` and `_`"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCT: &str = "0123456789abcdef0123456789abcdef";

    fn s3(bucket: &str, prefix: &str) -> Remote {
        Remote::S3 {
            bucket: bucket.into(),
            prefix: prefix.into(),
            settings: S3Settings::default(),
        }
    }

    fn reason(input: &str) -> String {
        match parse_remote(input) {
            Err(Error::InvalidRemote { reason, .. }) => reason,
            other => panic!("{input:?} gave {other:?}"),
        }
    }

    #[test]
    fn same_store_means_one_bucket_reached_one_way() {
        let p = |u: &str| parse_remote(u).unwrap();
        assert!(p("s3://b/x").same_store(&p("s3://b/y")));
        assert!(!p("s3://b/x").same_store(&p("s3://c/y")));
        assert!(!p("s3://b/x").same_store(&p("s3://b/y?profile=other")));
        assert!(p(&format!("r2://{ACCT}/b/x"))
            .same_store(&p(&format!("r2://{ACCT}/b/y?jurisdiction=default"))));
        assert!(!p(&format!("r2://{ACCT}/b/x"))
            .same_store(&p(&format!("r2://{ACCT}/b/y?jurisdiction=eu"))));
        assert!(!p("/srv/a").same_store(&p("/srv/a")));
        assert!(!p("s3://b/x").same_store(&p("gs://b/x")));
    }

    #[test]
    fn settings_ride_along_without_changing_the_location() {
        let r =
            parse_remote("s3://b/p?profile=backup&endpoint=http://127.0.0.1:9000&region=eu-west-1")
                .unwrap();
        let s = r.settings().unwrap();
        assert_eq!(s.profile.as_deref(), Some("backup"));
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s.region.as_deref(), Some("eu-west-1"));
        assert_eq!(r.canonical(), "s3://b/p");
        assert!(r.contains(&s3("b", "p/q")));
        let r = parse_remote(&format!("r2://{ACCT}/b?profile=r2&jurisdiction=eu")).unwrap();
        assert_eq!(r.settings().unwrap().profile.as_deref(), Some("r2"));
        assert_eq!(r.canonical(), format!("r2://{ACCT}/b?jurisdiction=eu"));
        for (bad, why) in [
            (
                "gs://b/p?profile=x",
                "applies to s3:// and r2:// remotes only",
            ),
            ("s3://b?profile=x&profile=y", "given twice"),
            ("s3://b?profile=", "is empty"),
        ] {
            assert!(reason(bad).contains(why), "{bad}: {}", reason(bad));
        }
        assert!(reason(&format!("r2://{ACCT}/b?region=x")).contains("region auto"));
    }

    #[test]
    fn parses_every_form() {
        let s = parse_remote("s3://bucket/a/b/").unwrap();
        assert_eq!(s, s3("bucket", "a/b"));
        assert_eq!(s.canonical(), "s3://bucket/a/b");
        assert_eq!((s.bucket(), s.prefix()), (Some("bucket"), "a/b"));
        let s = parse_remote("s3://bucket").unwrap();
        assert_eq!(s.prefix(), "");
        assert_eq!(s.canonical(), "s3://bucket");
        assert_eq!(
            parse_remote("s3a://bucket//a//b").unwrap(),
            s3("bucket", "a/b")
        );
        assert_eq!(parse_remote("S3://Bucket/x").unwrap(), s3("Bucket", "x"));

        let s = parse_remote(&format!("r2://{}/bkt/prod", ACCT.to_uppercase())).unwrap();
        assert_eq!(
            s,
            Remote::R2 {
                account: ACCT.into(),
                bucket: "bkt".into(),
                prefix: "prod".into(),
                jurisdiction: None,
                settings: S3Settings::default(),
            }
        );
        assert_eq!(s.canonical(), format!("r2://{ACCT}/bkt/prod"));
        let s = parse_remote(&format!("r2://{ACCT}/bkt?jurisdiction=fedramp")).unwrap();
        assert!(matches!(
            s,
            Remote::R2 {
                jurisdiction: Some(Jurisdiction::Fedramp),
                ..
            }
        ));
        assert_eq!(
            s.canonical(),
            format!("r2://{ACCT}/bkt?jurisdiction=fedramp")
        );
        assert_eq!(parse_remote(&s.canonical()).unwrap(), s);

        let g = parse_remote("gs://b/p").unwrap();
        assert_eq!(
            g,
            Remote::Gcs {
                bucket: "b".into(),
                prefix: "p".into()
            }
        );
        assert_eq!(parse_remote("gcs://b/p").unwrap(), g);
        let a = parse_remote("az://c/p").unwrap();
        assert_eq!(
            a,
            Remote::Azure {
                container: "c".into(),
                prefix: "p".into()
            }
        );
        assert_eq!(a.bucket(), Some("c"));
        assert_eq!(parse_remote("azure://c/p").unwrap(), a);
        assert_eq!(parse_remote("abfs://c/p").unwrap(), a);

        let f = parse_remote("file:///srv/db").unwrap();
        assert_eq!(
            f,
            Remote::Dir {
                path: PathBuf::from("/srv/db")
            }
        );
        assert_eq!(f.canonical(), "file:///srv/db");
        assert_eq!((f.bucket(), f.prefix()), (None, ""));
        assert_eq!(parse_remote("file://localhost/srv/db").unwrap(), f);
        let Remote::Dir { path } = parse_remote("backups/db").unwrap() else {
            panic!("not a directory")
        };
        assert!(path.is_absolute());
        assert!(path.ends_with("backups/db"));
    }

    #[test]
    fn names_each_kind() {
        let names: Vec<_> = [
            "s3://b",
            &format!("r2://{ACCT}/b"),
            "gs://b",
            "az://c",
            "file:///x",
        ]
        .iter()
        .map(|r| {
            let r = parse_remote(r).unwrap();
            (r.scheme_name(), r.kind_name())
        })
        .collect();
        assert_eq!(
            names,
            [
                ("s3", "S3"),
                ("r2", "Cloudflare R2"),
                ("gs", "Google Cloud Storage"),
                ("az", "Azure Blob Storage"),
                ("file", "local directory"),
            ]
        );
    }

    #[test]
    fn rejects_malformed() {
        for (bad, expected) in [
            (
                "ftp://x/y",
                "unknown scheme \"ftp\" (expected s3, r2, gs, az or file)",
            ),
            ("gopher://x", "unknown scheme \"gopher\""),
            ("https://minio:9000/b", "give the server with --endpoint"),
            ("s3://", "missing bucket name"),
            ("s3:///x", "missing bucket name"),
            ("file://relative", "file:// remotes need an absolute path"),
            ("file:///srv?x=1", "file:// remotes take no options"),
            ("s3://b/../x", "`.` and `..` are not allowed"),
            ("s3://b/a/./x", "`.` and `..` are not allowed"),
            ("s3://b/%2e%2E/x", "`.` and `..` are not allowed"),
            ("s3://b/a%2Fb", "encoded `/`"),
            ("s3://b/%FF", "not UTF-8"),
            ("s3://b/a%0Ab", "control character"),
            ("s3://b/p?jurisdiction=eu", "applies to r2:// remotes only"),
            ("s3://b/p?versioning=on", "unknown option \"versioning\""),
            ("s3://b/p#frag", "unexpected `#`"),
            ("s3://b:9000/p", "unexpected port"),
            ("s3://key@b/p", "unexpected `@`"),
            ("s3://my%20bucket/p", "bucket names are letters, digits"),
            ("s3://b!/p", "bucket names are letters, digits"),
            ("", "empty remote"),
        ] {
            let got = reason(bad);
            assert!(got.contains(expected), "{bad:?}: {got:?}");
        }
        assert!(parse_remote("s3://b/p").is_ok());
    }

    #[test]
    fn r2_needs_an_account_id() {
        for bad in [
            "r2://bucket/prefix",
            "r2://acct",
            "r2://",
            "r2://0123456789abcdef0123456789abcde/b",
            "r2://0123456789abcdef0123456789abcdeg/b",
        ] {
            let got = reason(bad);
            assert!(
                got.starts_with(
                    "r2:// remotes start with the 32-hex-character Cloudflare account id: \
                     r2://ACCOUNT_ID/bucket[/prefix]"
                ),
                "{bad:?}: {got:?}"
            );
        }
        assert!(reason("r2://bucket/prefix").ends_with("(got \"bucket\")"));
        assert!(reason(&format!("r2://{ACCT}")).contains("missing bucket name"));
        assert!(reason(&format!("r2://{ACCT}/")).contains("missing bucket name"));
        assert!(
            reason(&format!("r2://{ACCT}/b?jurisdiction=eu&jurisdiction=eu"))
                .contains("given twice")
        );
    }

    #[test]
    fn bad_url_jurisdiction_is_its_own_error() {
        let err = parse_remote(&format!("r2://{ACCT}/b?jurisdiction=mars")).unwrap_err();
        assert!(err.is_usage());
        match &err {
            Error::InvalidJurisdiction { value, origin } => {
                assert_eq!((value.as_str(), *origin), ("mars", JurisdictionOrigin::Url))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "invalid R2 jurisdiction \"mars\" in the remote's ?jurisdiction=: expected default, eu or fedramp"
        );
    }

    #[test]
    fn mistyped_urls_are_refused() {
        for (bad, meant) in [
            ("s3:/x", "s3://x"),
            ("s3:x", "s3://x"),
            ("s3//x", "s3://x"),
            ("s3:", "s3://BUCKET"),
            ("S3:/x/y", "s3://x/y"),
            ("s3a:/x", "s3://x"),
            ("r2:/x", "r2://x"),
            ("gs:/b", "gs://b"),
            ("GCS//b", "gs://b"),
            ("az:c", "az://c"),
            ("azure:/c", "az://c"),
            ("file:/srv/db", "file:///srv/db"),
            ("file:srv", "file:///srv"),
        ] {
            assert!(looks_like_url(bad), "{bad:?}");
            let got = reason(bad);
            assert!(
                got.starts_with(&format!("not a URL: did you mean {meant}?")),
                "{bad:?}: {got:?}"
            );
            assert!(parse_remote(bad).unwrap_err().is_usage());
        }
        assert!(reason("s3:/x").ends_with("(write a local directory with this name as ./s3:/x)"));
        for url in ["s3://b", "gopher://x", "S3://b", "file:///x"] {
            assert!(looks_like_url(url), "{url:?}");
        }
        for path in [
            "backups/db",
            "./s3:/x",
            "s3",
            "s3/x",
            "s3x:/y",
            "C:\\x",
            "/srv/s3:/x",
        ] {
            assert!(!looks_like_url(path), "{path:?}");
            assert!(
                matches!(parse_remote(path), Ok(Remote::Dir { .. })),
                "{path:?}"
            );
        }
    }

    #[test]
    fn prefixes_are_percent_decoded() {
        assert_eq!(parse_remote("s3://b/caf%C3%A9").unwrap(), s3("b", "café"));
        assert_eq!(parse_remote("s3://b/café").unwrap(), s3("b", "café"));
        assert_eq!(parse_remote("s3://b/a b/c").unwrap(), s3("b", "a b/c"));
        assert_eq!(parse_remote("s3://b/a%3Fb").unwrap(), s3("b", "a?b"));
        assert_eq!(parse_remote("s3://b/100%").unwrap(), s3("b", "100%"));
        assert_eq!(parse_remote("s3://b/100%25").unwrap(), s3("b", "100%"));
        assert_eq!(
            parse_remote("file:///srv/my%20db").unwrap(),
            Remote::Dir {
                path: PathBuf::from("/srv/my db")
            }
        );
    }

    #[test]
    fn canonical_forms_round_trip() {
        for remote in [
            s3("b", ""),
            s3("b", "a/b"),
            s3("b", "café/a b"),
            s3("b", "50%/a?b#c"),
            Remote::Gcs {
                bucket: "b".into(),
                prefix: "p".into(),
            },
            Remote::Azure {
                container: "c".into(),
                prefix: "".into(),
            },
            Remote::R2 {
                account: ACCT.into(),
                bucket: "b".into(),
                prefix: "p/q".into(),
                jurisdiction: Some(Jurisdiction::Eu),
                settings: S3Settings::default(),
            },
            Remote::R2 {
                account: ACCT.into(),
                bucket: "b".into(),
                prefix: "".into(),
                jurisdiction: None,
                settings: S3Settings::default(),
            },
            Remote::Dir {
                path: PathBuf::from("/srv/db"),
            },
            Remote::Dir {
                path: PathBuf::from("/srv/my db/50%?#"),
            },
        ] {
            let canonical = remote.canonical();
            assert_eq!(parse_remote(&canonical).unwrap(), remote, "{canonical}");
            assert_eq!(remote.to_string(), canonical);
        }
        assert_eq!(s3("b", "50%/a?b#c").canonical(), "s3://b/50%25/a%3Fb%23c");
    }

    #[test]
    fn contains_whole_components_only() {
        let p = |s: &str| parse_remote(s).unwrap();
        let prod = p("s3://b/prod");
        assert!(prod.contains(&prod));
        assert!(prod.contains(&p("s3://b/prod/")));
        assert!(prod.contains(&p("s3://b/prod/db/x")));
        assert!(!prod.contains(&p("s3://b/prod2")));
        assert!(!prod.contains(&p("s3://b")));
        assert!(!prod.contains(&p("s3://c/prod/db")));
        assert!(!prod.contains(&p("gs://b/prod/db")));
        assert!(p("s3://b").contains(&prod));
        assert!(p("gs://b/x").contains(&p("gcs://b/x/y")));
        assert!(p("az://c").contains(&p("azure://c/x")));

        let r2 = |rest: &str| p(&format!("r2://{ACCT}/{rest}"));
        assert!(r2("b/p").contains(&r2("b/p/q")));
        assert!(r2("b/p").contains(&r2("b/p/q?jurisdiction=default")));
        assert!(!r2("b/p").contains(&r2("b/p/q?jurisdiction=eu")));
        assert!(!r2("b/p").contains(&r2("b/pq")));
        assert!(!r2("b/p").contains(&p("r2://ffffffffffffffffffffffffffffffff/b/p/q")));
        assert!(!r2("b/p").contains(&p("s3://b/p/q")));

        assert!(p("/srv/db").contains(&p("/srv/db")));
        assert!(p("/srv/db").contains(&p("/srv/db/sub")));
        assert!(p("/srv/db").contains(&p("/srv/db/./sub/../x")));
        assert!(p("/srv/db").contains(&p("file:///srv/db/x")));
        assert!(!p("/srv/db").contains(&p("/srv/db2")));
        assert!(!p("/srv/db").contains(&p("/srv/db/../db2")));
        assert!(!p("/srv/db").contains(&p("/srv")));
        assert!(p("/").contains(&p("/srv")));
        assert!(!p("/srv/db").contains(&prod));
    }

    #[test]
    fn r2_endpoints_follow_jurisdiction() {
        assert_eq!(
            Jurisdiction::Default.r2_endpoint("abc"),
            "https://abc.r2.cloudflarestorage.com"
        );
        assert_eq!(
            Jurisdiction::Eu.r2_endpoint("abc"),
            "https://abc.eu.r2.cloudflarestorage.com"
        );
        assert_eq!(
            Jurisdiction::Fedramp.r2_endpoint("abc"),
            "https://abc.fedramp.r2.cloudflarestorage.com"
        );
        assert_eq!("EU".parse::<Jurisdiction>(), Ok(Jurisdiction::Eu));
        assert_eq!("".parse::<Jurisdiction>(), Ok(Jurisdiction::Default));
        assert!("mars".parse::<Jurisdiction>().is_err());
        assert_eq!(Jurisdiction::Fedramp.to_string(), "fedramp");
    }
}
