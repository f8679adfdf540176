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
        if remote.keeps_versions() {
            // Every write to a snapshot tree is create-only under a new
            // name: there is nothing for two writers to race for.
            return Ok(Guard::none());
        }
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

    /// The guard of a writer without a source of its own (a manifest
    /// rebuild): the remote's cached or probed capabilities, and the lease
    /// where commits need one.
    ///
    /// # Errors
    /// As [`Guard::take`].
    pub async fn for_remote(remote: &StoreTree) -> Result<Guard> {
        let source = super::source::StoreSource::new(remote.clone());
        let token = format!("{:032x}", rand::random::<u128>());
        Guard::take(&source, remote, &token, false).await
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
    let cached = match remote.read_state::<Capabilities>("capabilities.json").await {
        Ok(Some((c, _))) => Some(c),
        // A damaged cache is only a reason to probe again.
        Ok(None) | Err(Error::ManifestCorrupt { .. }) => None,
        Err(e) => return Err(e),
    };
    let caps = match cached {
        Some(c) => c,
        None => {
            let c = Capabilities::probed(remote.probe_conditional_writes().await?);
            remote.write_state("capabilities.json", &c).await?;
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

/// `lease.json` in a remote: who holds the lease, and until when.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaseRecord {
    /// The holding run's random token.
    #[serde(default)]
    token: String,
    /// `pqsync pid <pid> on <host>`, for messages.
    #[serde(default)]
    holder: String,
    /// The holder's host name.
    #[serde(default)]
    host: String,
    /// The holder's process id.
    #[serde(default)]
    pid: Option<u64>,
    /// Expiry, ISO-8601.
    #[serde(default)]
    expires_at: String,
    /// Expiry, ms since the epoch (0: expired).
    #[serde(default)]
    expires_at_ms: i64,
}

impl LeaseRecord {
    /// A lease for `token`, valid for [`LEASE_TTL`] from now.
    fn new(token: &str, holder: &str) -> Self {
        let expires =
            chrono::Utc::now() + chrono::Duration::from_std(LEASE_TTL).expect("small duration");
        LeaseRecord {
            token: token.to_string(),
            holder: holder.to_string(),
            host: host_name(),
            pid: Some(u64::from(std::process::id())),
            expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            expires_at_ms: expires.timestamp_millis(),
        }
    }

    /// Whether another run's live lease: not expired, and not left by a
    /// process on this machine that has died.
    fn blocks(&self, token: &str) -> bool {
        self.token != token
            && self.expires_at_ms > chrono::Utc::now().timestamp_millis()
            && !self.holder_is_dead_here()
    }

    /// Whether the lease was taken by a process on this machine that has
    /// since died (a killed run): such a lease is stale before it expires.
    fn holder_is_dead_here(&self) -> bool {
        let proc_root = std::path::Path::new("/proc");
        match self.pid {
            Some(pid) if self.host == host_name() && proc_root.is_dir() => {
                pid != u64::from(std::process::id()) && !proc_root.join(pid.to_string()).exists()
            }
            _ => false,
        }
    }
}

pub(crate) fn host_name() -> String {
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

impl Drop for Lease {
    /// A lease dropped without `release` (an error on the way out) stops
    /// being renewed and is released in the background while the runtime
    /// lives; otherwise it expires, or is taken over once this process has
    /// exited.
    fn drop(&mut self) {
        self.renew.abort();
        if self.token.is_empty() {
            return; // released already
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let remote = self.remote.clone();
            let token = std::mem::take(&mut self.token);
            handle.spawn(release(remote, token));
        }
    }
}

/// Removes the lease if it is still `token`'s.
async fn release(remote: StoreTree, token: String) {
    if let Ok(Some((v, _))) = remote.read_state::<LeaseRecord>("lease.json").await {
        if v.token == token {
            remote.delete_state("lease.json").await;
        }
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
        let check = |v: &LeaseRecord| -> Result<()> {
            if v.blocks(&token) {
                return Err(Error::Leased {
                    url: remote.url().to_string(),
                    holder: if v.holder.is_empty() {
                        "another writer".into()
                    } else {
                        v.holder.clone()
                    },
                    until: v.expires_at.clone(),
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
            .write_state("lease.json", &LeaseRecord::new(&token, &me))
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
                if let Ok(Some((v, _))) = renew_remote.read_state::<LeaseRecord>("lease.json").await
                {
                    if v.token != renew_token {
                        tracing::warn!(
                            "lost the lease on {} to another writer; the commit will be checked",
                            renew_remote.url()
                        );
                        break;
                    }
                }
                if let Err(e) = renew_remote
                    .write_state("lease.json", &LeaseRecord::new(&renew_token, &me))
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
    pub(crate) async fn release(mut self) {
        self.renew.abort();
        let token = std::mem::take(&mut self.token);
        release(self.remote.clone(), token).await;
    }
}

fn ignore_corrupt(e: Error) -> Result<Option<(LeaseRecord, Option<String>)>> {
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
        let mine = LeaseRecord::new("t", &holder());
        assert!(!mine.holder_is_dead_here(), "our own lease is live");
        assert!(mine.blocks("other token") && !mine.blocks("t"));
        let mut dead = mine.clone();
        dead.pid = Some(999_999_999);
        assert!(dead.holder_is_dead_here());
        assert!(
            !dead.blocks("other token"),
            "a dead holder's lease is stale"
        );
        let mut elsewhere = dead.clone();
        elsewhere.host = "another-machine".into();
        assert!(
            !elsewhere.holder_is_dead_here(),
            "no verdict on other hosts"
        );
        // A record without an expiry is expired.
        let old: LeaseRecord = serde_json::from_str(r#"{"token":"x"}"#).unwrap();
        assert!(!old.blocks("y"));
    }
}
