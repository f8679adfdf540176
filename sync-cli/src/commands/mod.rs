//! One file per subcommand; this module dispatches and holds shared helpers.

mod init;
mod list;
mod remote;
mod stats;
mod status;
mod transfer;
mod verify;

use std::path::Path;

use anyhow::{Context, Result};
use pqsync_backends::{Jurisdiction, OpenOptions};
use std::sync::Arc;

use pqsync_core::{Congestion, HashAlgorithm, LocalTree, StoreTree, Strategy, SyncOptions, Tree};

use crate::cli::{Cli, Command, GlobalArgs, HashArg, JurisdictionArg, StrategyArg};
use crate::printer::Printer;
use crate::{ExitStatus, UsageError};

/// Runs the parsed command.
pub async fn run(cli: Cli, printer: &Printer) -> Result<ExitStatus> {
    use pqsync_core::Mode;
    let g = &cli.global;
    match cli.command {
        Command::Push(t) => transfer::run(Mode::Push, &t, g, printer).await,
        Command::Pull(t) => transfer::run(Mode::Pull, &t, g, printer).await,
        Command::Sync(t) => transfer::run(Mode::Sync, &t, g, printer).await,
        Command::Mirror(m) => transfer::mirror(&m, g, printer).await,
        Command::Status(s) => status::run(&s, g, printer).await,
        Command::Remote(r) => remote::run(&r, printer),
        Command::List(l) => list::run(&l, g, printer).await,
        Command::Verify(v) => verify::run(&v, g, printer).await,
        Command::Stats(s) => stats::run(&s, g, printer).await,
        Command::Init(i) => init::run(&i, g, printer).await,
    }
}

/// Engine options from the global flags.
///
/// # Errors
/// A usage error for a malformed glob or namespace.
pub fn sync_options(mode: pqsync_core::Mode, g: &GlobalArgs) -> Result<SyncOptions> {
    let mut o = SyncOptions::new(mode);
    o.selection = pqsync_core::Selection::new(&g.namespaces, &g.include, &g.exclude)
        .map_err(|e| UsageError(e.to_string()))?;
    o.concurrency = usize::from(g.concurrency);
    o.delete = !g.no_delete;
    o.max_delete = g.max_delete;
    o.backup_dir = g.backup_dir.clone();
    o.force = g.force;
    o.strategy = g.strategy.map(|s| match s {
        StrategyArg::LocalWins => Strategy::LocalWins,
        StrategyArg::RemoteWins => Strategy::RemoteWins,
        StrategyArg::Newest => Strategy::Newest,
        StrategyArg::Manual => Strategy::Manual,
    });
    o.hash = g.hash.map(|h| match h {
        HashArg::Blake3 => HashAlgorithm::Blake3,
        HashArg::Sha256 => HashAlgorithm::Sha256,
    });
    Ok(o)
}

/// Opens a remote as a sync tree whose HTTP responses feed `congestion`.
pub fn open_remote(
    url: &str,
    g: &GlobalArgs,
    create: bool,
    congestion: &Arc<Congestion>,
) -> Result<StoreTree> {
    let spec = pqsync_backends::parse_remote(url).map_err(|e| UsageError(e.to_string()))?;
    let opts = OpenOptions {
        endpoint: g.endpoint.clone(),
        jurisdiction: g.jurisdiction.map(|j| match j {
            JurisdictionArg::Default => Jurisdiction::Default,
            JurisdictionArg::Eu => Jurisdiction::Eu,
            JurisdictionArg::Fedramp => Jurisdiction::Fedramp,
        }),
        create,
        status_observer: Some({
            let c = congestion.clone();
            Arc::new(move |status| c.observe_status(status))
        }),
    };
    let opened = pqsync_backends::open(&spec, &opts)?;
    let tree = StoreTree::new(opened.store, &opened.prefix, opened.url)
        .with_attributes(opened.supports_attributes);
    Ok(match opened.multipart {
        Some(mp) => tree.with_multipart_store(mp),
        None => tree,
    })
}

/// A DIR|REMOTE argument as a tree: a URL (`scheme://`) opens a remote,
/// anything else is an existing directory.
pub fn open_target(target: &str, g: &GlobalArgs) -> Result<Tree> {
    if target.contains("://") {
        Ok(open_remote(target, g, false, &Arc::new(Congestion::default()))?.into())
    } else {
        Ok(local_tree(Path::new(target), true)?.into())
    }
}

/// The remote named on the command line, or the one DIR last synced with.
pub fn resolve_remote(given: Option<&str>, dir: &Path) -> Result<String> {
    if let Some(r) = given {
        return Ok(r.to_string());
    }
    match pqsync_core::last_remote(dir).context("reading the last-used remote")? {
        Some(r) => Ok(r),
        None => Err(UsageError(format!(
            "no REMOTE given and {} has not synced with one yet; name one, e.g. `pqsync push s3://bucket/prefix -d {}`",
            dir.display(),
            dir.display()
        ))
        .into()),
    }
}

/// The local tree for DIR, which must be a directory (or, for pulls, may not
/// exist yet).
pub fn local_tree(dir: &Path, must_exist: bool) -> Result<LocalTree> {
    if dir.exists() && !dir.is_dir() {
        return Err(UsageError(format!("{} is not a directory", dir.display())).into());
    }
    if must_exist && !dir.exists() {
        return Err(UsageError(format!("{} does not exist", dir.display())).into());
    }
    Ok(LocalTree::new(dir))
}
