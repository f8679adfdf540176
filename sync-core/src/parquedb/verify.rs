//! `verify`: the checks ParqueDB's backup guide asks of a restore, run on a
//! directory or a remote.
//!
//! | check | severity |
//! |---|---|
//! | `manifest-present`: `_meta/manifest.json` exists and parses | critical |
//! | `files-exist`: every file the manifest lists is there | critical |
//! | `hashes-match`: every file's size and hash match the manifest (`--quick`: sizes only) | critical |
//! | `parquet-readable`: every `.parquet` file has both magics and a footer that parses | critical |
//! | `entity-counts`: rows per namespace match the `--compare` side | warning |
//! | `relationships-consistent`: forward and reverse files hold the same relationships | warning |
//! | `bloom-filters`: every namespace has a non-empty, well-formed bloom filter | warning |
//! | `event-segments`: segments are readable, ordered, without gaps, and agree with the event manifest | warning |
//!
//! A report passes when no critical check failed. Every error and warning
//! names the path it concerns.

use std::collections::{BTreeMap, BTreeSet};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use serde_json::{json, Value};

use super::bloom::check_bloom;
use super::events::EventManifest;
use super::footer::ParquetInfo;
use super::inspect::{inspect, Inspection};
use super::relationships::{read_relationships, RelDigest, RelFile};
use crate::error::{Error, Result};
use crate::layout::{
    bloom_path, is_parquet, is_segment_file, namespace_of, Role, EVENT_MANIFESTS, MANIFEST_PATH,
};
use crate::manifest::{Digest, HashAlgorithm, Manifest};
use crate::tree::Tree;

/// How to verify.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Check sizes and footers only, without reading whole files (ranged
    /// GETs on a remote).
    pub quick: bool,
    /// Files inspected at once.
    pub concurrency: usize,
    /// Include a per-file list in the report.
    pub detailed: bool,
}

impl VerifyOptions {
    /// Checks sizes and footers only (`--quick`).
    pub fn with_quick(mut self, quick: bool) -> Self {
        self.quick = quick;
        self
    }

    /// Inspects up to `n` files at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Lists every file in the report.
    pub fn with_detailed(mut self, detailed: bool) -> Self {
        self.detailed = detailed;
        self
    }
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            quick: false,
            concurrency: 8,
            detailed: false,
        }
    }
}

/// How much a failed check matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The restore must not be used.
    Critical,
    /// Worth a look; the restore may still be usable.
    Warning,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Check {
    /// The check's name, e.g. `hashes-match`.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// How much a failure matters.
    pub severity: Severity,
    /// What was expected, where that applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    /// What was found, where that applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actual: Option<Value>,
    /// A one-line summary.
    pub message: String,
}

/// A problem with one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Finding {
    /// The check that found it.
    pub check: &'static str,
    /// The path concerned, relative to the database root.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// What was checked for one file (detailed reports only).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FileReport {
    /// Relative path.
    pub path: String,
    /// Size found.
    pub size: u64,
    /// Hash found (not with `--quick`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash: Option<Digest>,
    /// Rows, for Parquet files whose footer parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Whether no error names this file.
    pub ok: bool,
}

/// Totals of a verification run.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VerifySummary {
    /// Files the manifest lists.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// Bytes read and hashed.
    pub hashed_bytes: u64,
    /// Parquet files whose footer was checked.
    pub parquet_files: usize,
    /// Requests made to remotes (target and `--compare` side).
    pub requests: u64,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// The verification report, in the shape ParqueDB's backup guide shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VerifyReport {
    /// No critical check failed.
    pub passed: bool,
    /// The directory or remote verified.
    pub target: String,
    /// The side entity counts were compared with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compare: Option<String>,
    /// Whether whole files were skipped (`--quick`).
    pub quick: bool,
    /// Every check, in the order of the guide's table.
    pub checks: Vec<Check>,
    /// Problems of failed warning-level checks, and notes.
    pub warnings: Vec<Finding>,
    /// Problems of failed critical checks.
    pub errors: Vec<Finding>,
    /// Totals.
    pub summary: VerifySummary,
    /// Per-file results (detailed reports only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileReport>,
}

impl VerifyReport {
    /// The failed checks.
    pub fn failed(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed)
    }
}

/// Collects checks and findings.
#[derive(Default)]
struct Report {
    checks: Vec<Check>,
    warnings: Vec<Finding>,
    errors: Vec<Finding>,
}

impl Report {
    fn finding(&mut self, sev: Severity, check: &'static str, path: &str, message: String) {
        let f = Finding {
            check,
            path: path.to_string(),
            message,
        };
        match sev {
            Severity::Critical => self.errors.push(f),
            Severity::Warning => self.warnings.push(f),
        }
    }

    fn check(
        &mut self,
        name: &'static str,
        severity: Severity,
        passed: bool,
        message: String,
        expected: Option<Value>,
        actual: Option<Value>,
    ) {
        self.checks.push(Check {
            name,
            passed,
            severity,
            expected,
            actual,
            message,
        });
    }
}

/// Runs every check on `target`; entity counts are compared with `compare`
/// when given.
///
/// # Errors
/// Only when the target cannot be read at all (an unreachable store, an
/// unreadable directory). Everything wrong with its contents is a finding
/// in the report.
pub async fn verify(
    target: &dyn Tree,
    compare: Option<&dyn Tree>,
    opts: &VerifyOptions,
) -> Result<VerifyReport> {
    let started = std::time::Instant::now();
    let mut r = Report::default();
    let (manifest, (present, list_warnings)) =
        futures::try_join!(read_manifest(target), target.list())?;
    for w in list_warnings {
        r.finding(WARN, "files-exist", "", w);
    }
    let manifest = check_manifest(manifest, &mut r);
    let mut summary = VerifySummary::default();
    if let Some(m) = &manifest {
        summary.files = m.files.len();
        summary.bytes = m.total_bytes();
    }
    check_files_exist(manifest.as_ref(), &present, &mut r);

    // Sizes, hashes and footers come from one pass over the files.
    let alg = manifest
        .as_ref()
        .and_then(Manifest::hash_algorithm)
        .filter(|_| !opts.quick);
    let mut inspected = inspect_all(target, &present, alg, opts.concurrency).await?;
    let mut spools: BTreeMap<String, std::fs::File> = inspected
        .iter_mut()
        .filter_map(|(p, got)| Some((p.clone(), got.as_mut().ok()?.spool.take()?)))
        .collect();
    if let Some(m) = &manifest {
        summary.hashed_bytes = check_hashes(m, &present, &inspected, alg, opts.quick, &mut r);
    }
    let footers = check_parquet(manifest.as_ref(), &inspected, &mut r);
    summary.parquet_files = inspected
        .iter()
        .filter(|(p, got)| match got {
            Ok(i) => i.parquet.is_some(),
            Err(_) => is_parquet(p),
        })
        .count();

    let counts = entity_counts(&footers);
    check_entity_counts(&counts, compare, opts.concurrency, &mut r).await;
    check_relationships(target, &present, &footers, &mut spools, &mut r).await?;
    drop(spools);
    check_blooms(target, &present, &counts, &mut r).await?;
    check_events(target, &present, &footers, &mut r).await?;

    summary.requests = target.requests() + compare.map_or(0, |c| c.requests());
    summary.elapsed_ms = started.elapsed().as_millis() as u64;
    let files = if opts.detailed {
        file_reports(&inspected, &present, &r)
    } else {
        Vec::new()
    };
    Ok(VerifyReport {
        passed: !r.checks.iter().any(|c| !c.passed && c.severity == CRIT),
        target: target.name(),
        compare: compare.map(|c| c.name()),
        quick: opts.quick,
        checks: r.checks,
        warnings: r.warnings,
        errors: r.errors,
        summary,
        files,
    })
}

const CRIT: Severity = Severity::Critical;
const WARN: Severity = Severity::Warning;

/// The outcome of every inspected file, by path.
type Inspected = BTreeMap<String, std::result::Result<Inspection, String>>;

/// `manifest-present`: `_meta/manifest.json` exists and parses.
fn check_manifest(
    manifest: std::result::Result<Option<Manifest>, Error>,
    r: &mut Report,
) -> Option<Manifest> {
    const NAME: &str = "manifest-present";
    match manifest {
        Ok(Some(m)) => {
            let msg = format!("{MANIFEST_PATH} lists {} files", m.files.len());
            r.check(NAME, CRIT, true, msg, None, None);
            Some(m)
        }
        Ok(None) => {
            r.finding(CRIT, NAME, MANIFEST_PATH, "missing".into());
            let msg =
                format!("no {MANIFEST_PATH}; rebuild it with `pqsync init --rebuild-manifest`");
            r.check(NAME, CRIT, false, msg, None, None);
            None
        }
        Err(e) => {
            r.finding(CRIT, NAME, MANIFEST_PATH, e.to_string());
            let msg = format!("{MANIFEST_PATH} is unreadable");
            r.check(NAME, CRIT, false, msg, None, None);
            None
        }
    }
}

/// `files-exist`: every file the manifest lists is there; files it does not
/// list are noted.
fn check_files_exist(manifest: Option<&Manifest>, present: &BTreeMap<String, u64>, r: &mut Report) {
    const NAME: &str = "files-exist";
    let Some(m) = manifest else {
        // Without a manifest there is nothing to check files against; the
        // checks are still listed, failed, so every report has all eight.
        for name in [NAME, "hashes-match"] {
            let msg = "not checked: there is no readable manifest".to_string();
            r.check(name, CRIT, false, msg, None, None);
        }
        return;
    };
    let missing: Vec<&str> = m
        .files
        .keys()
        .filter(|p| !present.contains_key(*p))
        .map(String::as_str)
        .collect();
    for p in &missing {
        r.finding(CRIT, NAME, p, "listed in the manifest but missing".into());
    }
    for p in present.keys().filter(|p| !m.files.contains_key(*p)) {
        r.finding(WARN, NAME, p, "present but not in the manifest".into());
    }
    let msg = if missing.is_empty() {
        format!("all {} listed files are present", m.files.len())
    } else {
        format!(
            "{} of {} listed files are missing",
            missing.len(),
            m.files.len()
        )
    };
    r.check(
        NAME,
        CRIT,
        missing.is_empty(),
        msg,
        Some(json!(m.files.len())),
        Some(json!(m.files.len() - missing.len())),
    );
}

/// `hashes-match`: every present file's size (and, unless `quick`, hash)
/// matches the manifest. Returns the bytes hashed.
fn check_hashes(
    m: &Manifest,
    present: &BTreeMap<String, u64>,
    inspected: &Inspected,
    alg: Option<HashAlgorithm>,
    quick: bool,
    r: &mut Report,
) -> u64 {
    const NAME: &str = "hashes-match";
    let mut bad = 0usize;
    let mut hashed_bytes = 0;
    for (path, e) in &m.files {
        let found = match inspected.get(path) {
            Some(Ok(found)) => found,
            Some(Err(err)) => {
                bad += 1;
                r.finding(CRIT, NAME, path, err.clone());
                continue;
            }
            None => continue,
        };
        if found.size != e.size {
            bad += 1;
            let msg = format!("size {} but the manifest says {}", found.size, e.size);
            r.finding(CRIT, NAME, path, msg);
        } else if let Some(h) = &found.hash {
            hashed_bytes += found.size;
            if alg == Some(e.hash_algorithm) && *h != e.hash {
                bad += 1;
                let msg = format!("{} {h} but the manifest says {}", e.hash_algorithm, e.hash);
                r.finding(CRIT, NAME, path, msg);
            }
        }
    }
    let what = if quick { "sizes" } else { "sizes and hashes" };
    let checked = m.files.keys().filter(|p| present.contains_key(*p)).count();
    let msg = if bad == 0 {
        format!("{what} of {checked} files match the manifest")
    } else {
        format!("{bad} of {checked} files do not match the manifest's {what}")
    };
    r.check(NAME, CRIT, bad == 0, msg, None, None);
    hashed_bytes
}

/// `parquet-readable`: every `.parquet` file has both magics and a footer
/// that parses. Returns the footers that did, by path.
fn check_parquet<'a>(
    manifest: Option<&Manifest>,
    inspected: &'a Inspected,
    r: &mut Report,
) -> BTreeMap<&'a str, &'a ParquetInfo> {
    const NAME: &str = "parquet-readable";
    let mut footers = BTreeMap::new();
    let mut unreadable = 0usize;
    for (path, got) in inspected {
        match got {
            Ok(Inspection {
                parquet: Some(Ok(info)),
                ..
            }) => {
                footers.insert(path.as_str(), info);
            }
            Ok(Inspection {
                parquet: Some(Err(why)),
                ..
            }) => {
                unreadable += 1;
                r.finding(CRIT, NAME, path, why.clone());
            }
            Err(why) if is_parquet(path) => {
                unreadable += 1;
                // Already reported under hashes-match when listed.
                if manifest.is_none_or(|m| !m.files.contains_key(path)) {
                    r.finding(CRIT, NAME, path, why.clone());
                }
            }
            _ => {}
        }
    }
    let all = footers.len() + unreadable;
    let msg = if unreadable == 0 {
        format!("all {} Parquet files have valid footers", footers.len())
    } else {
        format!("{unreadable} of {all} Parquet files are not readable")
    };
    r.check(
        NAME,
        CRIT,
        unreadable == 0,
        msg,
        Some(json!(all)),
        Some(json!(footers.len())),
    );
    footers
}

/// `entity-counts`: rows per namespace match the `compare` side's.
async fn check_entity_counts(
    counts: &BTreeMap<String, u64>,
    compare: Option<&dyn Tree>,
    concurrency: usize,
    r: &mut Report,
) {
    const NAME: &str = "entity-counts";
    let Some(other) = compare else {
        let msg = format!(
            "{} entities in {} namespaces (nothing to compare with; pass --compare)",
            counts.values().sum::<u64>(),
            counts.len()
        );
        r.check(NAME, WARN, true, msg, None, Some(json!(counts)));
        return;
    };
    let theirs = match compare_counts(other, concurrency).await {
        Ok(t) => t,
        Err(e) => {
            r.finding(WARN, NAME, "", format!("cannot read {}: {e}", other.name()));
            let msg = format!("{} could not be read", other.name());
            r.check(NAME, WARN, false, msg, None, Some(json!(counts)));
            return;
        }
    };
    let names: BTreeSet<&String> = counts.keys().chain(theirs.keys()).collect();
    let mut off = 0;
    for ns in names {
        let (a, b) = (counts.get(ns), theirs.get(ns));
        if a != b {
            off += 1;
            let show = |v: Option<&u64>| {
                v.map_or("no data files".to_string(), |n| format!("{n} entities"))
            };
            let msg = format!("{} here, {} on {}", show(a), show(b), other.name());
            r.finding(WARN, NAME, &format!("data/{ns}/"), msg);
        }
    }
    let msg = if off == 0 {
        format!(
            "entity counts of {} namespaces match {}",
            counts.len(),
            other.name()
        )
    } else {
        format!("{off} namespaces differ from {}", other.name())
    };
    r.check(
        NAME,
        WARN,
        off == 0,
        msg,
        Some(json!(theirs)),
        Some(json!(counts)),
    );
}

/// Per-file results of a detailed report.
fn file_reports(
    inspected: &Inspected,
    present: &BTreeMap<String, u64>,
    r: &Report,
) -> Vec<FileReport> {
    let bad: BTreeSet<&str> = r.errors.iter().map(|f| f.path.as_str()).collect();
    inspected
        .iter()
        .map(|(path, got)| {
            let (size, hash, rows) = match got {
                Ok(i) => (
                    i.size,
                    i.hash,
                    i.parquet
                        .as_ref()
                        .and_then(|p| p.as_ref().ok())
                        .map(|p| p.rows),
                ),
                Err(_) => (present[path], None, None),
            };
            FileReport {
                ok: !bad.contains(path.as_str()) && got.is_ok(),
                path: path.clone(),
                size,
                hash,
                rows,
            }
        })
        .collect()
}

/// The manifest, with a parse failure kept as a finding rather than an
/// error; store and I/O failures still abort.
async fn read_manifest(t: &dyn Tree) -> Result<std::result::Result<Option<Manifest>, Error>> {
    match t.manifest().await {
        Ok(m) => Ok(Ok(m)),
        Err(
            e @ (Error::ManifestCorrupt { .. }
            | Error::UnsupportedVersion { .. }
            | Error::UnsafePath { .. }),
        ) => Ok(Err(e)),
        Err(e) => Err(e),
    }
}

/// Inspects every present file: hashed with `alg` if given, footer parsed
/// for Parquet files. A file that vanished or failed to read is kept as an
/// error message.
async fn inspect_all(
    tree: &dyn Tree,
    present: &BTreeMap<String, u64>,
    alg: Option<HashAlgorithm>,
    concurrency: usize,
) -> Result<BTreeMap<String, std::result::Result<Inspection, String>>> {
    let results: Vec<(String, std::result::Result<Inspection, String>)> =
        futures::stream::iter(present.iter())
            .map(|(path, &size)| async move {
                // Relationship files are read again by their check: keep
                // a remote copy rather than fetch it twice.
                let keep = matches!(namespace_of(path), Some((_, Role::Forward | Role::Reverse)));
                let got = inspect(tree, path, size, alg, is_parquet(path), keep).await;
                match got {
                    Ok(i) => Ok((path.clone(), Ok(i))),
                    // Content a snapshot finds damaged fails this file.
                    Err(e)
                        if e.is_not_found()
                            || matches!(e, Error::Io { .. } | Error::Repository { .. }) =>
                    {
                        Ok((path.clone(), Err(format!("cannot be read: {e}"))))
                    }
                    Err(e) => Err(e),
                }
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
    Ok(results.into_iter().collect())
}

/// Rows of `data/{ns}/*.parquet`, per namespace.
fn entity_counts(footers: &BTreeMap<&str, &ParquetInfo>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (path, info) in footers {
        if let Some((ns, Role::Data)) = namespace_of(path) {
            *out.entry(ns.to_string()).or_insert(0) += info.rows;
        }
    }
    out
}

/// Entity counts of the other side, from its data files' footers.
async fn compare_counts(other: &dyn Tree, concurrency: usize) -> Result<BTreeMap<String, u64>> {
    let files: BTreeMap<String, u64> = match other.manifest().await? {
        Some(m) => m.files.into_values().map(|e| (e.path, e.size)).collect(),
        None => other.list().await?.0,
    };
    let data: BTreeMap<String, u64> = files
        .into_iter()
        .filter(|(p, _)| is_parquet(p) && matches!(namespace_of(p), Some((_, Role::Data))))
        .collect();
    let got = inspect_all(other, &data, None, concurrency).await?;
    let mut out = BTreeMap::new();
    for (path, i) in &got {
        if let (
            Some((ns, _)),
            Ok(Inspection {
                parquet: Some(Ok(info)),
                ..
            }),
        ) = (namespace_of(path), i)
        {
            *out.entry(ns.to_string()).or_insert(0) += info.rows;
        }
    }
    Ok(out)
}

/// `relationships-consistent`: forward and reverse files hold the same
/// relationships.
async fn check_relationships(
    tree: &dyn Tree,
    present: &BTreeMap<String, u64>,
    footers: &BTreeMap<&str, &ParquetInfo>,
    spools: &mut BTreeMap<String, std::fs::File>,
    r: &mut Report,
) -> Result<()> {
    let rel_files: Vec<RelPath<'_>> = present
        .keys()
        .filter_map(|p| match namespace_of(p) {
            Some((ns, Role::Forward)) => Some((p.as_str(), ns, true)),
            Some((ns, Role::Reverse)) => Some((p.as_str(), ns, false)),
            _ => None,
        })
        .collect();
    if rel_files.is_empty() {
        r.check(RELS, WARN, true, "no relationship files".into(), None, None);
        return Ok(());
    }
    // Files whose footer did not parse are already errors under
    // parquet-readable.
    let readable: Vec<RelPath<'_>> = rel_files
        .iter()
        .filter(|(p, _, _)| footers.contains_key(p))
        .copied()
        .collect();
    let mut read_ok = readable.len() == rel_files.len();
    let mut problems = 0;
    // (fromNs, toNs) -> digest, per direction, and which file holds it.
    let mut forward: RelSide<'_> = BTreeMap::new();
    let mut reverse: RelSide<'_> = BTreeMap::new();
    for ((path, ns, dir), parsed) in decode_relationships(tree, readable, spools).await? {
        match parsed {
            None => read_ok = false,
            Some(Ok(file)) => {
                if file.misplaced > 0 {
                    problems += 1;
                    let col = if dir { "fromNs" } else { "toNs" };
                    let msg = format!("{} rows have a {col} other than {ns}", file.misplaced);
                    r.finding(WARN, RELS, path, msg);
                }
                let side = if dir { &mut forward } else { &mut reverse };
                for (k, d) in file.pairs {
                    side.insert(k, (d, path));
                }
            }
            Some(Err(why)) => {
                problems += 1;
                let msg = format!("cannot read relationships: {why}");
                r.finding(WARN, RELS, path, msg);
            }
        }
    }
    problems += compare_directions(&forward, &reverse, r);
    let count = |m: &RelSide<'_>| -> u64 { m.values().map(|(d, _)| d.count).sum() };
    let (nf, nr) = (count(&forward), count(&reverse));
    let msg = if problems == 0 && read_ok {
        format!("{nf} forward and {nr} reverse relationships agree")
    } else if problems == 0 {
        "some relationship files could not be read".into()
    } else {
        format!("{problems} disagreements between forward and reverse relationships")
    };
    let passed = problems == 0 && read_ok;
    r.check(RELS, WARN, passed, msg, Some(json!(nf)), Some(json!(nr)));
    Ok(())
}

const RELS: &str = "relationships-consistent";

/// A relationship file: its path, its namespace, and whether it is a
/// forward file.
type RelPath<'a> = (&'a str, &'a str, bool);

/// Digests by `(fromNs, toNs)` for one direction, with the file each came
/// from.
type RelSide<'a> = BTreeMap<(String, String), (RelDigest, &'a str)>;

/// Decodes each relationship file on a blocking thread, two at a time (the
/// work is CPU-bound), reusing a copy kept from hashing where there is one.
/// `None` for a file that could not be opened.
async fn decode_relationships<'a>(
    tree: &dyn Tree,
    files: Vec<RelPath<'a>>,
    spools: &mut BTreeMap<String, std::fs::File>,
) -> Result<Vec<(RelPath<'a>, Option<std::result::Result<RelFile, String>>)>> {
    futures::stream::iter(files)
        .map(|(path, ns, dir)| ((path, ns, dir), spools.remove(path)))
        .map(|(rel, kept)| async move {
            let (path, ns, dir) = rel;
            let opened = match kept {
                Some(f) => Ok(f),
                None => tree.open_file(path).await,
            };
            let file = match opened {
                Ok(f) => f,
                Err(e) if e.is_not_found() || matches!(e, Error::Io { .. }) => {
                    return Ok((rel, None));
                }
                Err(e) => return Err(e),
            };
            let own = ns.to_string();
            let parsed = tokio::task::spawn_blocking(move || read_relationships(file, &own, dir))
                .await
                .map_err(|e| Error::task(format!("reading {path}"), e))?;
            Ok((rel, Some(parsed)))
        })
        .buffered(2)
        .try_collect()
        .await
}

/// Reports each `(fromNs, toNs)` pair whose forward and reverse digests
/// differ; returns how many do.
fn compare_directions(forward: &RelSide<'_>, reverse: &RelSide<'_>, r: &mut Report) -> usize {
    let keys: BTreeSet<&(String, String)> = forward.keys().chain(reverse.keys()).collect();
    let mut problems = 0;
    for k in keys {
        let (from, to) = k;
        let (f, b) = (forward.get(k), reverse.get(k));
        if f.map(|x| x.0) == b.map(|x| x.0) {
            continue;
        }
        problems += 1;
        let fwd_path = format!("rels/forward/{from}.parquet");
        let rev_path = format!("rels/reverse/{to}.parquet");
        let n = |x: Option<&(RelDigest, &str)>| x.map_or(0, |x| x.0.count);
        let msg = if n(f) == n(b) {
            format!(
                "{} relationships {from} → {to} here and in {fwd_path}, but not the same ones",
                n(b)
            )
        } else {
            format!(
                "{} relationships {from} → {to} here, {} in {fwd_path}",
                n(b),
                n(f)
            )
        };
        r.finding(WARN, RELS, &rev_path, msg);
    }
    problems
}

async fn check_blooms(
    tree: &dyn Tree,
    present: &BTreeMap<String, u64>,
    counts: &BTreeMap<String, u64>,
    r: &mut Report,
) -> Result<()> {
    const NAME: &str = "bloom-filters";
    let warn = Severity::Warning;
    let mut bad = 0;
    for ns in counts.keys() {
        let path = bloom_path(ns);
        let Some(&size) = present.get(&path) else {
            bad += 1;
            r.finding(
                warn,
                NAME,
                &path,
                format!("missing: namespace {ns} has no bloom filter"),
            );
            continue;
        };
        let header = if size == 0 {
            bytes::Bytes::new()
        } else {
            match tree.read_range(&path, 0..size.min(24)).await {
                Ok(h) => h,
                Err(e) if e.is_not_found() || matches!(e, Error::Io { .. }) => {
                    bad += 1;
                    r.finding(warn, NAME, &path, format!("cannot be read: {e}"));
                    continue;
                }
                Err(e) => return Err(e),
            }
        };
        if let Err(why) = check_bloom(size, &header) {
            bad += 1;
            r.finding(warn, NAME, &path, why);
        }
    }
    r.check(
        NAME,
        warn,
        bad == 0,
        if bad == 0 {
            format!("{} namespaces have valid bloom filters", counts.len())
        } else {
            format!(
                "{bad} of {} namespaces lack a valid bloom filter",
                counts.len()
            )
        },
        Some(json!(counts.len())),
        Some(json!(counts.len() - bad)),
    );
    Ok(())
}

/// `event-segments`: the segments are readable, ordered, without gaps, and
/// agree with the event manifest.
async fn check_events(
    tree: &dyn Tree,
    present: &BTreeMap<String, u64>,
    footers: &BTreeMap<&str, &ParquetInfo>,
    r: &mut Report,
) -> Result<()> {
    let on_disk: Vec<&str> = present
        .keys()
        .map(String::as_str)
        .filter(|p| is_segment_file(p))
        .collect();
    let Some(mpath) = EVENT_MANIFESTS.iter().find(|p| present.contains_key(**p)) else {
        no_event_manifest(&on_disk, r);
        return Ok(());
    };
    let em = match tree.read_all(mpath).await {
        Ok(b) => EventManifest::parse(&b),
        Err(e) if e.is_not_found() || matches!(e, Error::Io { .. }) => {
            Err(format!("cannot be read: {e}"))
        }
        Err(e) => return Err(e),
    };
    let em = match em {
        Ok(m) => m,
        Err(why) => {
            r.finding(WARN, EVENTS, mpath, why);
            let msg = format!("{mpath} is unreadable");
            r.check(EVENTS, WARN, false, msg, None, None);
            return Ok(());
        }
    };
    let mut log = EventLogCheck::default();
    for p in em.seq_problems() {
        log.problems += 1;
        r.finding(WARN, EVENTS, mpath, p);
    }
    let mut listed = BTreeSet::new();
    for seg in &em.segments {
        listed.insert(seg.file());
        log.segment(seg, mpath, present, footers, r);
    }
    for p in on_disk.iter().filter(|p| !listed.contains(**p)) {
        log.problems += 1;
        r.finding(
            WARN,
            EVENTS,
            p,
            format!("segment file not listed in {mpath}"),
        );
    }
    if let Some(total) = em.total_events.filter(|&t| t != log.events) {
        if log.missing == 0 {
            log.problems += 1;
            let msg = format!(
                "totalEvents is {total} but the segments hold {} events",
                log.events
            );
            r.finding(WARN, EVENTS, mpath, msg);
        }
    }
    let msg = if log.problems == 0 {
        format!(
            "{} segments, {} events, in order and without gaps",
            em.segments.len(),
            log.events
        )
    } else {
        format!("{} problems in the event log", log.problems)
    };
    r.check(
        EVENTS,
        WARN,
        log.problems == 0,
        msg,
        em.total_events.map(|n| json!(n)),
        Some(json!(log.events)),
    );
    Ok(())
}

const EVENTS: &str = "event-segments";

/// Segments on disk with no event manifest to list them.
fn no_event_manifest(on_disk: &[&str], r: &mut Report) {
    if on_disk.is_empty() {
        r.check(EVENTS, WARN, true, "no event log".into(), None, None);
        return;
    }
    for p in on_disk {
        let msg = "segment present but there is no event manifest".to_string();
        r.finding(WARN, EVENTS, p, msg);
    }
    let msg = format!("{} segments but no events/_manifest.json", on_disk.len());
    r.check(EVENTS, WARN, false, msg, None, Some(json!(on_disk.len())));
}

/// What checking the event manifest's segments found so far.
#[derive(Default)]
struct EventLogCheck {
    problems: usize,
    events: u64,
    /// Segments missing or unreadable (their events are not counted).
    missing: usize,
    /// The previous segment's seq and `maxTs`.
    prev_max: Option<(u64, i64)>,
}

impl EventLogCheck {
    /// Checks one listed segment against its file and footer.
    fn segment(
        &mut self,
        seg: &super::events::Segment,
        mpath: &str,
        present: &BTreeMap<String, u64>,
        footers: &BTreeMap<&str, &ParquetInfo>,
        r: &mut Report,
    ) {
        let file = seg.file();
        let problem = |r: &mut Report, msg: String| {
            r.finding(WARN, EVENTS, &file, msg);
        };
        let Some(&size) = present.get(&file) else {
            self.problems += 1;
            self.missing += 1;
            problem(
                r,
                format!("segment seq {} is listed in {mpath} but missing", seg.seq),
            );
            return;
        };
        if let Some(expected) = seg.size_bytes.filter(|&s| s != size) {
            self.problems += 1;
            problem(r, format!("{size} bytes but {mpath} says {expected}"));
        }
        let Some(info) = footers.get(file.as_str()) else {
            self.problems += 1;
            self.missing += 1;
            problem(r, format!("segment seq {} is not readable", seg.seq));
            return;
        };
        self.events += info.rows;
        if let Some(expected) = seg.count.filter(|&c| c != info.rows) {
            self.problems += 1;
            problem(
                r,
                format!("{} events but {mpath} says {expected}", info.rows),
            );
        }
        if let (Some((lo, hi)), Some(min), Some(max)) = (info.ts_range, seg.min_ts, seg.max_ts) {
            if lo < min || hi > max {
                self.problems += 1;
                problem(
                    r,
                    format!("events span ts {lo}..{hi}, outside {mpath}'s {min}..{max}"),
                );
            }
        }
        if let (Some((pseq, pmax)), Some(min)) = (self.prev_max, seg.min_ts) {
            if min < pmax {
                self.problems += 1;
                problem(
                    r,
                    format!(
                        "segment seq {} starts at ts {min}, before seq {pseq} ends ({pmax})",
                        seg.seq
                    ),
                );
            }
        }
        if let Some(max) = seg.max_ts {
            self.prev_max = Some((seg.seq, max));
        }
    }
}
