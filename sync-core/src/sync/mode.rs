//! Which way a run moves data, and how it settles conflicts.

use serde::Serialize;

use crate::error::{Error, Result};

/// The direction(s) a run moves data in. Chosen by the engine's
/// constructor ([`Engine::push`](super::Engine::push),
/// [`pull`](super::Engine::pull), [`sync`](super::Engine::sync),
/// [`mirror`](super::Engine::mirror)), so a mode and a kind of tree that do
/// not go together cannot be asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Local → remote. Remote-side changes are reported, not fetched.
    Push,
    /// Remote → local. Local changes are reported, not sent.
    Pull,
    /// Both ways.
    Sync,
    /// One store prefix → another; the destination is made equal to the
    /// source.
    Mirror,
    /// Local → a new snapshot in a snapshot repository, made equal to the
    /// directory; the parent snapshot is never changed.
    Backup,
    /// A snapshot → local; the directory is made equal to the snapshot
    /// (files it replaces or removes go to the local trash).
    Restore,
}

impl Mode {
    /// The conflict strategy used when none is given: `manual` for push,
    /// pull and sync, so a path both sides changed since the last sync
    /// stops (exit 3) instead of one side's version silently replacing the
    /// other's, as git refuses a non-fast-forward push; `local-wins` for
    /// mirror, whose destination is made equal to its source.
    ///
    /// ParqueDB's own engine resolves implicitly (`local-wins` for push,
    /// `remote-wins` for pull, `newest` for sync); pqsync does that only
    /// when asked with an explicit strategy.
    pub fn default_strategy(self) -> Strategy {
        match self {
            Mode::Push | Mode::Pull | Mode::Sync => Strategy::Manual,
            Mode::Mirror | Mode::Backup => Strategy::LocalWins,
            Mode::Restore => Strategy::RemoteWins,
        }
    }

    /// Whether the mode sends data to the remote.
    pub fn sends(self) -> bool {
        matches!(self, Mode::Push | Mode::Sync | Mode::Mirror | Mode::Backup)
    }

    /// Whether the mode fetches data from the remote.
    pub fn fetches(self) -> bool {
        matches!(self, Mode::Pull | Mode::Sync | Mode::Restore)
    }

    /// The command's name: `push`, `pull`, `sync` or `mirror`.
    pub fn verb(self) -> &'static str {
        match self {
            Mode::Push => "push",
            Mode::Pull => "pull",
            Mode::Sync => "sync",
            Mode::Mirror => "mirror",
            Mode::Backup => "backup",
            Mode::Restore => "restore",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.verb())
    }
}

/// How conflicts are resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The local version wins.
    LocalWins,
    /// The remote version wins.
    RemoteWins,
    /// The version with the newer modification time wins; a tie is left
    /// pending.
    Newest,
    /// Nothing is resolved: conflicts are listed and both copies left alone.
    Manual,
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Strategy::LocalWins => "local-wins",
            Strategy::RemoteWins => "remote-wins",
            Strategy::Newest => "newest",
            Strategy::Manual => "manual",
        })
    }
}

impl std::str::FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "local-wins" => Ok(Strategy::LocalWins),
            "remote-wins" => Ok(Strategy::RemoteWins),
            "newest" => Ok(Strategy::Newest),
            "manual" => Ok(Strategy::Manual),
            other => Err(Error::InvalidArgument {
                argument: "strategy",
                reason: format!(
                    "unknown strategy {other:?} (expected local-wins, remote-wins, newest or manual)"
                ),
            }),
        }
    }
}
