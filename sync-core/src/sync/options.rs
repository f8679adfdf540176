//! How a run behaves: [`SyncOptions`] and the deletion limit.

use std::sync::Arc;
use std::time::Duration;

use super::mode::Strategy;
use super::repair::Repair;
use super::select::Selection;
use super::shard::Shard;
use crate::error::{Error, Result};
use crate::manifest::HashAlgorithm;
use crate::runtime::{Congestion, RetryConfig};
use crate::tree::{Trash, DEFAULT_RETENTION};

/// Options for a run. Start from [`SyncOptions::default`] and change what
/// you need with the `with_*` methods:
///
/// ```
/// use pqsync_core::{MaxDelete, Strategy, SyncOptions};
///
/// let opts = SyncOptions::default()
///     .with_strategy(Strategy::Manual)
///     .with_concurrency(16)
///     .with_max_delete(MaxDelete::Count(10));
/// assert_eq!(opts.concurrency, 16);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SyncOptions {
    /// Conflict strategy; `None` uses the mode's default
    /// ([`Mode::default_strategy`](super::Mode::default_strategy)).
    pub strategy: Option<Strategy>,
    /// Transfers in flight at once. Default 8.
    pub concurrency: usize,
    /// Whether deletions propagate. Default true.
    pub delete: bool,
    /// Hash algorithm for a new remote; `None` follows the remote manifest
    /// (BLAKE3 for a new remote). An existing remote's algorithm always
    /// wins.
    pub hash: Option<HashAlgorithm>,
    /// Retry policy for transfers, the guard and the commit.
    pub retry: RetryConfig,
    /// The most files one run may delete on either side. Default 50%.
    pub max_delete: MaxDelete,
    /// Where versions this run overwrites or deletes are kept. Default: each
    /// side's trash ([`Trash::Default`]).
    pub trash: Trash,
    /// How long kept versions stay: a run that keeps anything removes the
    /// trash's runs older than this. Default 7 days.
    pub trash_retention: Duration,
    /// Skip the lease on stores without enforced conditional writes.
    pub force: bool,
    /// Shared with the stores' HTTP clients, which report every response
    /// status to it; 429 and 503 responses lower the transfers in flight.
    pub congestion: Arc<Congestion>,
    /// The paths this run may touch; others are neither sent, fetched nor
    /// deleted. Default: everything.
    pub selection: Selection,
    /// Whether a sending run looks for damaged remote objects to send
    /// again. Default: no.
    pub repair: Repair,
    /// A push to a versioned copy (`push --slug`): the remote manifest
    /// records this `slug`, and the directory's own manifest and its
    /// remembered remote are left as they are. Default: none.
    pub slug: Option<String>,
    /// A push or mirror that handles one shard of the paths and leaves a
    /// record instead of committing (see [`Shard`]). Default: none.
    pub shard: Option<Shard>,
    /// A push or mirror that commits the union of the shard records at the
    /// remote. Default: no.
    pub merge_shards: bool,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            strategy: None,
            concurrency: 8,
            delete: true,
            hash: None,
            retry: RetryConfig::default(),
            max_delete: MaxDelete::Percent(50.0),
            trash: Trash::Default,
            trash_retention: DEFAULT_RETENTION,
            force: false,
            congestion: Default::default(),
            selection: Selection::all(),
            repair: Repair::Off,
            slug: None,
            shard: None,
            merge_shards: false,
        }
    }
}

impl SyncOptions {
    /// Handles only the paths of `shard`, and leaves a shard record at the
    /// remote instead of committing (push and mirror only; a push's shard
    /// scans and hashes only its own files).
    pub fn with_shard(mut self, shard: Shard) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Commits the union of the remote's shard records (push and mirror
    /// only), without reading the source.
    pub fn with_merge_shards(mut self, merge: bool) -> Self {
        self.merge_shards = merge;
        self
    }

    /// Resolves conflicts with `strategy` instead of the mode's default.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }

    /// Runs up to `n` transfers at once (at least 1).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Whether deletions propagate.
    pub fn with_delete(mut self, delete: bool) -> Self {
        self.delete = delete;
        self
    }

    /// Hashes a new remote with `alg`.
    pub fn with_hash(mut self, alg: HashAlgorithm) -> Self {
        self.hash = Some(alg);
        self
    }

    /// Retries transfers, the guard and the commit with `retry`.
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = retry;
        self
    }

    /// Holds back a side's deletions beyond `limit`.
    pub fn with_max_delete(mut self, limit: MaxDelete) -> Self {
        self.max_delete = limit;
        self
    }

    /// Makes the push a versioned copy named `slug` (see
    /// [`SyncOptions::slug`]).
    pub fn with_slug(mut self, slug: impl Into<String>) -> Self {
        self.slug = Some(slug.into());
        self
    }

    /// Keeps the versions this run replaces as `trash` says.
    pub fn with_trash(mut self, trash: Trash) -> Self {
        self.trash = trash;
        self
    }

    /// Keeps replaced versions for `retention` (a run that keeps anything
    /// removes the trash's older runs).
    pub fn with_trash_retention(mut self, retention: Duration) -> Self {
        self.trash_retention = retention;
        self
    }

    /// Commits without the lease on stores without enforced conditional
    /// writes.
    pub fn with_force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// Shares `congestion` with the stores' HTTP clients.
    pub fn with_congestion(mut self, congestion: Arc<Congestion>) -> Self {
        self.congestion = congestion;
        self
    }

    /// Looks for damaged remote objects as `repair` says, and sends them
    /// again.
    pub fn with_repair(mut self, repair: Repair) -> Self {
        self.repair = repair;
        self
    }

    /// Touches only the paths `selection` selects.
    pub fn with_selection(mut self, selection: Selection) -> Self {
        self.selection = selection;
        self
    }
}

/// A limit on deletions per run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MaxDelete {
    /// At most this many files.
    Count(u64),
    /// At most this share of the files on the side losing them.
    Percent(f64),
}

impl MaxDelete {
    /// Whether deleting `n` of `total` files is within the limit.
    pub fn allows(self, n: usize, total: usize) -> bool {
        match self {
            MaxDelete::Count(max) => n as u64 <= max,
            MaxDelete::Percent(p) => (n as f64) <= total as f64 * p / 100.0,
        }
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for MaxDelete {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || Error::InvalidArgument {
            argument: "--max-delete",
            reason: format!("takes N or P% (e.g. 100 or 25%), not {s:?}"),
        };
        match s.strip_suffix('%') {
            Some(p) => {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                Ok(MaxDelete::Percent(p))
            }
            None => s.trim().parse().map(MaxDelete::Count).map_err(|_| bad()),
        }
    }
}
