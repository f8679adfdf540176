//! Committing the remote manifest without losing another writer's commit.
//!
//! Where the store enforces conditional writes (S3, R2, GCS, Azure, the
//! in-memory store), the manifest is written with `If-Match` on the ETag read
//! at the start of the run, or `If-None-Match: *` for a first push. When the
//! precondition fails, the manifest is read again: if the other writer's
//! changes do not touch this run's paths, both are merged and the commit is
//! retried; otherwise the run stops with "remote changed during push".
//!
//! Some servers accept the conditional headers and ignore them (Garage 2.5),
//! and plain directories cannot check an ETag. pqsync probes this once per
//! remote and caches the answer. On such stores a **lease** guards the run: a
//! lock object under `_meta/.pqsync/lease.json` with a unique token and an
//! expiry, renewed while the run lasts. The commit re-reads the manifest
//! first (merging as above), writes it, then reads it back to check that it
//! carries this run's commit id; that catches a commit that lands between
//! the write and the read-back, not one that lands after it.
//!
//! A lease whose holder was a process on this machine that no longer runs
//! (a killed run) is taken over at once rather than after its expiry.
//!
//! The risk that remains on such stores: two writers that acquire the lease
//! within the same instant (before either sees the other's lease object), or
//! a writer using `--force`, can still race; the read-back then reports the
//! lost commit instead of leaving it unnoticed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use crate::error::{Error, Result};
use crate::local::LocalTree;
use crate::manifest::FileEntry;
use crate::store::StoreTree;

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// How often a held lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(20);

/// This run's changes to the remote: `Some` to write an entry, `None` to
/// remove it.
pub(crate) type Changes = BTreeMap<String, Option<FileEntry>>;

/// What the remote knows how to do, as found by the probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether conditional writes (`If-None-Match`, `If-Match`) are enforced.
    pub conditional_writes: bool,
    /// When the probe ran.
    pub probed_at: String,
}

impl Capabilities {
    fn to_json(&self) -> serde_json::Value {
        json!({ "conditionalWrites": self.conditional_writes, "probedAt": self.probed_at })
    }

    fn from_json(v: &serde_json::Value) -> Option<Self> {
        Some(Capabilities {
            conditional_writes: v.get("conditionalWrites")?.as_bool()?,
            probed_at: v
                .get("probedAt")
                .and_then(|t| t.as_str())
                .unwrap_or_default()
                .to_string(),
        })
    }
}

/// The name of the local cache of a remote's capabilities.
pub(crate) fn local_caps_name(remote_key: &str) -> String {
    format!("caps-{remote_key}.json")
}

/// The capabilities a local directory has cached for a remote, if any.
pub fn cached_capabilities(local: &LocalTree, remote_key: &str) -> Option<Capabilities> {
    let bytes = local.read_state_file(&local_caps_name(remote_key)).ok()??;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    Capabilities::from_json(&v)
}

/// Finds the remote's capabilities: from the local cache, else from the
/// remote's own cache (`_meta/.pqsync/capabilities.json`), else by probing
/// (and caching in both places).
///
/// # Errors
/// [`Error::Store`] if the remote cannot be read or probed.
pub(crate) async fn capabilities(
    local: Option<&LocalTree>,
    remote: &StoreTree,
    remote_key: &str,
) -> Result<Capabilities> {
    if let Some(c) = local.and_then(|l| cached_capabilities(l, remote_key)) {
        return Ok(c);
    }
    let caps = match remote.read_state("capabilities.json").await {
        Ok(Some((v, _))) => Capabilities::from_json(&v),
        // A damaged cache is only a reason to probe again.
        Ok(None) | Err(Error::ManifestCorrupt { .. }) => None,
        Err(e) => return Err(e),
    };
    let caps = match caps {
        Some(c) => c,
        None => {
            let c = Capabilities {
                conditional_writes: remote.probe_conditional_writes().await?,
                probed_at: crate::manifest::now_iso(),
            };
            remote
                .write_state("capabilities.json", &c.to_json())
                .await?;
            c
        }
    };
    if let Some(l) = local {
        let body = serde_json::to_vec_pretty(&caps.to_json()).expect("JSON serialises");
        let _ = l.write_state_file(&local_caps_name(remote_key), &body);
    }
    Ok(caps)
}

/// The remote's files after applying `ours` on top of `files`.
pub(crate) fn apply(
    files: &BTreeMap<String, FileEntry>,
    ours: &Changes,
) -> BTreeMap<String, FileEntry> {
    let mut out = files.clone();
    for (p, change) in ours {
        match change {
            Some(e) => {
                out.insert(p.clone(), e.clone());
            }
            None => {
                out.remove(p);
            }
        }
    }
    out
}

fn same(a: Option<&FileEntry>, b: Option<&FileEntry>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same_content(b),
        _ => false,
    }
}

/// Paths another writer changed (from `seen` to `now`) that this run also
/// changes, to a different result.
pub(crate) fn overlap(
    seen: &BTreeMap<String, FileEntry>,
    now: &BTreeMap<String, FileEntry>,
    ours: &Changes,
) -> Vec<String> {
    ours.iter()
        .filter(|(p, mine)| {
            let theirs_changed = !same(seen.get(*p), now.get(*p));
            theirs_changed && !same(now.get(*p), mine.as_ref())
        })
        .map(|(p, _)| p.clone())
        .collect()
}

/// A held lease; renewed in the background until released.
pub(crate) struct Lease {
    remote: StoreTree,
    token: String,
    renew: tokio::task::JoinHandle<()>,
}

fn lease_body(token: &str, holder: &str) -> serde_json::Value {
    let expires =
        chrono::Utc::now() + chrono::Duration::from_std(LEASE_TTL).expect("small duration");
    json!({
        "token": token,
        "holder": holder,
        "host": host_name(),
        "pid": std::process::id(),
        "expiresAt": expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "expiresAtMs": expires.timestamp_millis(),
    })
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

fn holder() -> String {
    format!("pqsync pid {} on {}", std::process::id(), host_name())
}

/// Whether a lease was taken by a process on this machine that has since
/// died (a killed run): such a lease is stale before it expires.
fn holder_is_dead_here(v: &serde_json::Value) -> bool {
    let same_host = v.get("host").and_then(|h| h.as_str()) == Some(host_name().as_str());
    let pid = v.get("pid").and_then(|p| p.as_u64());
    let proc_root = std::path::Path::new("/proc");
    match pid {
        Some(pid) if same_host && proc_root.is_dir() => {
            pid != u64::from(std::process::id()) && !proc_root.join(pid.to_string()).exists()
        }
        _ => false,
    }
}

impl Drop for Lease {
    /// A lease dropped without `release` (a run that failed part way) stops
    /// being renewed, so it expires, or is taken over once this process has
    /// exited.
    fn drop(&mut self) {
        self.renew.abort();
    }
}

impl Lease {
    /// Takes the remote's lease for `token` (one per run, so a retried
    /// acquisition recognises its own lease), failing if another live writer
    /// holds it.
    ///
    /// # Errors
    /// [`Error::Leased`] naming the holder; [`Error::Store`].
    pub(crate) async fn acquire(remote: &StoreTree, token: &str) -> Result<Lease> {
        let token = token.to_string();
        let me = holder();
        let check = |v: &serde_json::Value| -> Result<()> {
            let theirs = v.get("token").and_then(|t| t.as_str()).unwrap_or_default();
            let until = v.get("expiresAtMs").and_then(|t| t.as_i64()).unwrap_or(0);
            let live = until > chrono::Utc::now().timestamp_millis() && !holder_is_dead_here(v);
            if theirs != token && live {
                return Err(Error::Leased {
                    url: remote.url().to_string(),
                    holder: v
                        .get("holder")
                        .and_then(|h| h.as_str())
                        .unwrap_or("another writer")
                        .to_string(),
                    until: v
                        .get("expiresAt")
                        .and_then(|h| h.as_str())
                        .unwrap_or("?")
                        .to_string(),
                });
            }
            Ok(())
        };
        if let Some((v, _)) = remote
            .read_state("lease.json")
            .await
            .or_else(ignore_corrupt)?
        {
            check(&v)?;
        }
        remote
            .write_state("lease.json", &lease_body(&token, &me))
            .await?;
        // Let a writer that raced us land its lease, then see who won.
        tokio::time::sleep(Duration::from_millis(150)).await;
        if let Some((v, _)) = remote
            .read_state("lease.json")
            .await
            .or_else(ignore_corrupt)?
        {
            check(&v)?;
        }
        let renew_remote = remote.clone();
        let renew_token = token.clone();
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                // Renew only a lease that is still ours: one that expired
                // during a stall and was taken over must not be clobbered.
                if let Ok(Some((v, _))) = renew_remote.read_state("lease.json").await {
                    if v.get("token").and_then(|t| t.as_str()) != Some(renew_token.as_str()) {
                        tracing::warn!(
                            "lost the lease on {} to another writer; the commit will be checked",
                            renew_remote.url()
                        );
                        break;
                    }
                }
                if let Err(e) = renew_remote
                    .write_state("lease.json", &lease_body(&renew_token, &me))
                    .await
                {
                    tracing::warn!("could not renew the lease on {}: {e}", renew_remote.url());
                }
            }
        });
        Ok(Lease {
            remote: remote.clone(),
            token,
            renew,
        })
    }

    /// Stops renewing and removes the lease if it is still ours.
    pub(crate) async fn release(self) {
        self.renew.abort();
        if let Ok(Some((v, _))) = self.remote.read_state("lease.json").await {
            if v.get("token").and_then(|t| t.as_str()) == Some(self.token.as_str()) {
                self.remote.delete_state("lease.json").await;
            }
        }
    }
}

fn ignore_corrupt(e: Error) -> Result<Option<(serde_json::Value, Option<String>)>> {
    match e {
        Error::ManifestCorrupt { .. } => Ok(None),
        other => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HashAlgorithm;

    fn e(p: &str, content: &str) -> FileEntry {
        FileEntry {
            content_type: None,
            etag: None,
            hash: crate::hash::digest_bytes(content.as_bytes(), HashAlgorithm::Blake3),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            path: p.into(),
            size: content.len() as u64,
        }
    }

    #[test]
    fn a_lease_of_a_dead_local_process_is_stale() {
        let mine = lease_body("t", &holder());
        assert!(!holder_is_dead_here(&mine), "our own lease is live");
        let mut dead = mine.clone();
        dead["pid"] = json!(999_999_999u64);
        assert!(holder_is_dead_here(&dead));
        let mut elsewhere = dead.clone();
        elsewhere["host"] = json!("another-machine");
        assert!(
            !holder_is_dead_here(&elsewhere),
            "no verdict on other hosts"
        );
    }

    #[test]
    fn disjoint_changes_merge_and_overlaps_are_reported() {
        let seen: BTreeMap<_, _> = [("a", "1"), ("b", "1"), ("c", "1")]
            .iter()
            .map(|(p, c)| (p.to_string(), e(p, c)))
            .collect();
        // The other writer changed a, deleted b and added d.
        let mut now = seen.clone();
        now.insert("a".into(), e("a", "theirs"));
        now.remove("b");
        now.insert("d".into(), e("d", "1"));
        // We change c and add x: no overlap.
        let mut ours: Changes = BTreeMap::new();
        ours.insert("c".into(), Some(e("c", "mine")));
        ours.insert("x".into(), Some(e("x", "1")));
        assert!(overlap(&seen, &now, &ours).is_empty());
        let merged = apply(&now, &ours);
        assert_eq!(
            merged.keys().map(String::as_str).collect::<Vec<_>>(),
            vec!["a", "c", "d", "x"]
        );
        assert_eq!(merged["a"].hash, e("a", "theirs").hash);
        // We also change a: overlap; unless we wrote the very same bytes.
        ours.insert("a".into(), Some(e("a", "mine")));
        assert_eq!(overlap(&seen, &now, &ours), vec!["a"]);
        ours.insert("a".into(), Some(e("a", "theirs")));
        assert!(overlap(&seen, &now, &ours).is_empty());
        // Deleting what they deleted is no overlap; deleting what they
        // changed is.
        ours.insert("b".into(), None);
        assert!(overlap(&seen, &now, &ours).is_empty());
        ours.insert("d".into(), None);
        assert_eq!(overlap(&seen, &now, &ours), vec!["d"]);
    }
}
