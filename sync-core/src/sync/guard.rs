//! How the remote is protected during a run.
//!
//! Where the store enforces conditional writes (S3, R2, GCS, Azure, the
//! in-memory store), the manifest commit is compare-and-swap
//! ([`commit`](super::commit)) and nothing more is needed. Some servers
//! accept the conditional headers and ignore them (Garage 2.5), and plain
//! directories cannot check an ETag. pqsync probes this once per remote and
//! caches the answer, in the local directory and in the remote's
//! `_meta/.pqsync/capabilities.json`. On such stores a **lease** guards the
//! run: a lock object under `_meta/.pqsync/lease.json` with a unique token
//! and an expiry, renewed while the run lasts.
//!
//! A lease whose holder was a process on this machine that no longer runs
//! (a killed run) is taken over at once rather than after its expiry.
//!
//! The risk that remains on such stores: two writers that acquire the lease
//! within the same instant (before either sees the other's lease object), or
//! a writer using `--force`, can still race; the commit's read-back then
//! reports the lost commit instead of leaving it unnoticed.

use std::time::Duration;

use serde_json::json;

use super::source::Source;
use crate::error::{Error, Result};
use crate::tree::{Capabilities, StoreTree};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// How often a held lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(20);

/// Requests the probe takes (create, create again, update, delete, and the
/// remote cache's GET and PUT).
const PROBE_REQUESTS: u64 = 6;

/// Requests the lease takes (read, write, read again, a re-read and a
/// read-back around the commit, and the release's read and delete).
const LEASE_REQUESTS: u64 = 7;

/// How the remote is protected during one run.
pub(crate) struct Guard {
    /// Whether commits are compare-and-swap.
    pub conditional: bool,
    /// The lease held where they are not (and `--force` was not given).
    pub lease: Option<Lease>,
}

impl Guard {
    /// The guard of a run that does not write to the remote.
    pub fn none() -> Self {
        Guard {
            conditional: true,
            lease: None,
        }
    }

    /// Finds out how commits to `remote` are protected, and takes the lease
    /// where one is needed.
    ///
    /// # Errors
    /// [`Error::Leased`] while another writer holds the lease;
    /// [`Error::Store`].
    pub async fn take(
        source: &dyn Source,
        remote: &StoreTree,
        token: &str,
        force: bool,
    ) -> Result<Guard> {
        let caps = capabilities(source, remote).await?;
        let lease = if caps.conditional_writes || force {
            None
        } else {
            Some(Lease::acquire(remote, token).await?)
        };
        Ok(Guard {
            conditional: caps.conditional_writes,
            lease,
        })
    }

    /// Lets go of the lease, if one is held.
    pub async fn release(self) {
        if let Some(lease) = self.lease {
            lease.release().await;
        }
    }
}

/// Requests the guard will add to a run that writes to the remote, as far
/// as the cached capabilities tell.
pub(crate) fn guard_requests(source: &dyn Source, force: bool) -> u64 {
    match source.cached_capabilities() {
        Some(c) if c.conditional_writes => 0,
        // --force skips the lease, not the re-read and read-back.
        Some(_) if force => 2,
        Some(_) => LEASE_REQUESTS,
        // A source without a cache of its own (a mirror's) reads the
        // remote's cached answer.
        None if !source.keeps_state() => 1,
        None => PROBE_REQUESTS,
    }
}

/// Finds the remote's capabilities: from the source's cache, else from the
/// remote's own cache (`_meta/.pqsync/capabilities.json`), else by probing
/// (and caching in both places).
async fn capabilities(source: &dyn Source, remote: &StoreTree) -> Result<Capabilities> {
    if let Some(c) = source.cached_capabilities() {
        return Ok(c);
    }
    let cached = match remote.read_state("capabilities.json").await {
        Ok(Some((v, _))) => Capabilities::from_json(&v),
        // A damaged cache is only a reason to probe again.
        Ok(None) | Err(Error::ManifestCorrupt { .. }) => None,
        Err(e) => return Err(e),
    };
    let caps = match cached {
        Some(c) => c,
        None => {
            let c = Capabilities::probed(remote.probe_conditional_writes().await?);
            remote
                .write_state("capabilities.json", &c.to_json())
                .await?;
            c
        }
    };
    source.save_capabilities(&caps);
    Ok(caps)
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
}
