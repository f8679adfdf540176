//! How the remote is protected during a run.
//!
//! Where the store enforces conditional writes (S3, R2, GCS, Azure, the
//! in-memory store), the manifest commit is compare-and-swap
//! ([`commit`](super::commit)) and nothing more is needed. Some servers
//! accept the conditional headers and ignore them (Garage 2.5), and plain
//! directories cannot check an ETag. pqsync probes this once per remote and
//! caches the answer, in the local directory and in the remote's
//! `_meta/.pqsync/capabilities.json`. On such stores a **lease** guards the
//! run: each run writes its own lease object,
//! `_meta/.pqsync/leases/<token>.json` (holder and expiry), then lists
//! `_meta/.pqsync/` once, which also finds the deletions other runs
//! announced. A lease object the store wrote within [`LEASE_TTL`] whose
//! record has not expired belongs to a live writer: the run then withdraws
//! its own lease and stops. Two runs starting in the same instant both see
//! each other and both stop, so at most one goes on. A held lease is
//! renewed by writing its object again, and released by deleting it: a
//! lease costs two requests besides the shared LIST.
//!
//! A lease whose holder was a process on this machine that no longer runs
//! (a killed run) is taken over at once rather than after its expiry.
//! `lease.json`, the single lease object of earlier versions, is honoured
//! the same way.
//!
//! The LIST covers `_meta/`, so it also shows whether the manifest changed
//! between the plan and the lease. While the lease is fresh (renewed within
//! half its life) and the manifest unchanged, the commit writes the
//! manifest directly. Otherwise (another run committed in between, the
//! renewals failed for that long, or `--force`), the manifest is read again
//! before the commit, merged with, and read back after it, so a commit lost
//! to another writer is reported instead of left unnoticed.

use std::time::Duration;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::source::Source;
use crate::error::{Error, Result};
use crate::tree::store::StateObject;
use crate::tree::{Capabilities, StoreTree};

/// How long a lease lasts without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(60);

/// How often a held lease is renewed.
const LEASE_RENEW: Duration = Duration::from_secs(20);

/// Requests the probe takes (create, create again, update, delete, and the
/// remote cache's GET and PUT).
const PROBE_REQUESTS: u64 = 6;

/// Requests the lease takes besides the LIST a writing run makes anyway:
/// the lease object's PUT and the release's DELETE.
const LEASE_REQUESTS: u64 = 2;

/// Where runs' lease objects are, under `_meta/.pqsync/`.
const LEASES: &str = "leases";

/// The single lease object of earlier versions.
const LEGACY_LEASE: &str = "lease.json";

/// Tries a simultaneous start gets before it gives up.
const ACQUIRE_ATTEMPTS: u32 = 8;

/// How one attempt to take the lease ended.
enum Attempt {
    /// Taken: the listing, and when the lease object was written.
    Held(Vec<StateObject>, Arc<Mutex<Instant>>),
    /// Another run wrote its lease object at about the same moment: its
    /// holder and expiry.
    Simultaneous(String, String),
}

/// How the remote is protected during one run.
pub(crate) struct Guard {
    /// Whether commits are compare-and-swap.
    pub conditional: bool,
    /// The lease held where they are not (and `--force` was not given).
    pub lease: Option<Lease>,
    /// The listing of `_meta/.pqsync/` the lease made, for the run's other
    /// uses of it (the announced deletions).
    pub listing: Option<Vec<StateObject>>,
}

impl Guard {
    /// The guard of a run that does not write to the remote.
    pub fn none() -> Self {
        Guard {
            conditional: true,
            lease: None,
            listing: None,
        }
    }

    /// Whether this run alone may commit on top of the manifest whose ETag
    /// is `planned` (`None`: there was none): a lease held and renewed
    /// within half its life, and the manifest unchanged since the plan as
    /// the lease's listing showed it. Then the commit needs no re-read or
    /// read-back.
    pub fn exclusive(&self, planned: Option<&str>) -> bool {
        let Some(listing) = &self.listing else {
            return false;
        };
        let seen = listing.iter().find(|o| o.name == StateObject::MANIFEST);
        let unchanged = match (seen, planned) {
            (None, None) => true,
            (Some(o), Some(p)) => o.etag.as_deref() == Some(p),
            _ => false,
        };
        unchanged && self.lease.as_ref().is_some_and(Lease::fresh)
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
        let (lease, listing) = if caps.conditional_writes || force {
            (None, None)
        } else {
            let (lease, listing) = Lease::acquire(remote, token).await?;
            (Some(lease), Some(listing))
        };
        Ok(Guard {
            conditional: caps.conditional_writes,
            lease,
            listing,
        })
    }

    /// The guard of a writer without a source of its own (a manifest
    /// rebuild): the remote's cached or probed capabilities, and the lease
    /// where commits need one.
    ///
    /// # Errors
    /// As [`Guard::take`].
    pub async fn for_remote(remote: &StoreTree) -> Result<Guard> {
        let source = super::source::StoreSource::new(remote.clone(), remote);
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
    /// The lease object's name under `_meta/.pqsync/` (empty once
    /// released).
    key: String,
    renew: tokio::task::JoinHandle<()>,
    /// When the lease object was last written.
    renewed: Arc<Mutex<Instant>>,
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
        if self.key.is_empty() {
            return; // released already
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let remote = self.remote.clone();
            let key = std::mem::take(&mut self.key);
            handle.spawn(async move { remote.delete_state(&key).await });
        }
    }
}

impl Lease {
    /// Takes the remote's lease for `token` (one per run): writes this
    /// run's lease object, then lists `_meta/.pqsync/` and fails if another
    /// live writer's lease is there. Returns the lease and the listing.
    ///
    /// # Errors
    /// [`Error::Leased`] naming the holder; [`Error::Store`].
    pub(crate) async fn acquire(
        remote: &StoreTree,
        token: &str,
    ) -> Result<(Lease, Vec<StateObject>)> {
        let me = holder();
        let key = format!("{LEASES}/{token}.json");
        let mut attempt = 0;
        let (listing, renewed) = loop {
            attempt += 1;
            match Self::try_acquire(remote, token, &key, &me).await? {
                Attempt::Held(listing, renewed) => break (listing, renewed),
                // Two runs that start together see each other and both
                // step back; each tries again after a random pause, so one
                // of them gets in first.
                Attempt::Simultaneous(..) if attempt < ACQUIRE_ATTEMPTS => {
                    let pause = 100 + rand::random::<u64>() % 500;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Attempt::Simultaneous(holder, until) => {
                    return Err(Error::Leased {
                        url: remote.url().to_string(),
                        holder,
                        until,
                    })
                }
            }
        };
        let renew_remote = remote.clone();
        let (renew_key, renew_token, renew_at) = (key.clone(), token.to_string(), renewed.clone());
        let renew = tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                match renew_remote
                    .write_state(&renew_key, &LeaseRecord::new(&renew_token, &me))
                    .await
                {
                    Ok(()) => *renew_at.lock().expect("renewed lock") = Instant::now(),
                    Err(e) => tracing::warn!(
                        "could not renew the lease on {}: {e}; the commit will be checked",
                        renew_remote.url()
                    ),
                }
            }
        });
        let lease = Lease {
            remote: remote.clone(),
            key,
            renew,
            renewed,
        };
        Ok((lease, listing))
    }

    /// One attempt: writes this run's lease object and lists `_meta/`.
    /// A live lease of another run that is older than a moment is an error
    /// at once; one written about when ours was means a simultaneous start.
    async fn try_acquire(remote: &StoreTree, token: &str, key: &str, me: &str) -> Result<Attempt> {
        remote
            .write_state(key, &LeaseRecord::new(token, me))
            .await?;
        let renewed = Arc::new(Mutex::new(Instant::now()));
        let listing = match remote.list_state().await {
            Ok(l) => l,
            Err(e) => {
                remote.delete_state(key).await;
                return Err(e);
            }
        };
        // Ages by the store's clock: this run's own object is "now".
        let now = listing
            .iter()
            .find(|o| o.name == key)
            .map_or_else(chrono::Utc::now, |o| o.modified);
        let ttl = chrono::Duration::from_std(LEASE_TTL).expect("small duration");
        let moment = chrono::Duration::seconds(2);
        for other in listing.iter().filter(|o| {
            o.name != key && (o.name == LEGACY_LEASE || o.name.starts_with(&format!("{LEASES}/")))
        }) {
            if other.modified + ttl < now {
                // Not written for a whole lease's life: its run is gone.
                remote.delete_state(&other.name).await;
                continue;
            }
            let record = match remote.read_state::<LeaseRecord>(&other.name).await {
                Ok(Some((r, _))) => r,
                // Gone meanwhile, or not a lease record at all.
                Ok(None) | Err(Error::ManifestCorrupt { .. }) => continue,
                Err(e) => {
                    remote.delete_state(key).await;
                    return Err(e);
                }
            };
            if !record.blocks(token) {
                // Expired, or left by a process here that has died.
                remote.delete_state(&other.name).await;
                continue;
            }
            remote.delete_state(key).await;
            let holder = if record.holder.is_empty() {
                "another writer".to_string()
            } else {
                record.holder.clone()
            };
            if other.modified + moment >= now && other.name != LEGACY_LEASE {
                return Ok(Attempt::Simultaneous(holder, record.expires_at));
            }
            return Err(Error::Leased {
                url: remote.url().to_string(),
                holder,
                until: record.expires_at,
            });
        }
        Ok(Attempt::Held(listing, renewed))
    }

    /// Whether the lease object was written within half the lease's life.
    pub(crate) fn fresh(&self) -> bool {
        self.renewed.lock().expect("renewed lock").elapsed() < LEASE_TTL / 2
    }

    /// Stops renewing and deletes the lease object.
    pub(crate) async fn release(mut self) {
        self.renew.abort();
        let key = std::mem::take(&mut self.key);
        self.remote.delete_state(&key).await;
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
