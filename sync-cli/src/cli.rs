//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Sync ParqueDB databases between local disk and object stores.
#[derive(Debug, Parser)]
#[command(name = "pqsync", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Flags shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send local changes to the remote.
    Push(TreeArgs),
    /// Fetch remote changes into the local directory.
    Pull(TreeArgs),
    /// Exchange changes both ways.
    Sync(TreeArgs),
    /// Show what push, pull or sync would move, without moving anything.
    Status(StatusArgs),
    /// Copy a managed prefix from one remote to another.
    Mirror(MirrorArgs),
    /// Print the remote DIR last synced with.
    Remote(RemoteArgs),
    /// List the files of a database directory or remote.
    List(ListArgs),
    /// Check a database directory or remote: manifest, files, hashes,
    /// Parquet footers, entity counts, relationships, bloom filters and the
    /// event log. Exits 1 when a critical check fails.
    Verify(VerifyArgs),
    /// Per-namespace files, bytes, entities and relationships, and the
    /// event log's segments, events and time range.
    Stats(StatsArgs),
    /// Create a database's manifest, or rebuild it from what is there.
    Init(InitArgs),
}

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A database directory or a remote URL. Default: the current directory.
    pub target: Option<String>,
    /// Compare entity counts with this directory or remote (e.g. the
    /// source of a restore).
    #[arg(long, value_name = "DIR|REMOTE")]
    pub compare: Option<String>,
    /// `summary`: the checks and problems; `detailed`: also every file.
    #[arg(long, value_enum, default_value = "summary")]
    pub format: VerifyFormat,
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Check sizes and Parquet footers only, without reading whole files
    /// (ranged GETs on a remote).
    #[arg(long)]
    pub quick: bool,
}

/// Report formats of `verify`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum VerifyFormat {
    /// Checks, errors and warnings.
    Summary,
    /// Also a line per file.
    Detailed,
}

/// Arguments of `stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// A database directory or a remote URL. Default: the current directory.
    pub target: Option<String>,
}

/// Arguments of `init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// A remote URL to work on instead of a directory.
    pub remote: Option<String>,
    /// The database directory.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// Replace an existing manifest with one built from the files actually
    /// there (a remote: LIST plus one HEAD per object; objects without
    /// pqsync's hash metadata are read and hashed).
    #[arg(long)]
    pub rebuild_manifest: bool,
}

/// Arguments of `list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// A database directory, or a remote URL (s3://, r2://, gs://, az://,
    /// file://). Default: the current directory.
    pub target: Option<String>,
    /// `paths`: one path per line; `json`: the manifest entries.
    #[arg(long, value_enum, default_value = "paths")]
    pub format: ListFormat,
}

/// Output formats of `list`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ListFormat {
    /// One path per line.
    Paths,
    /// A JSON array of file entries.
    Json,
}

/// A local directory and, optionally, a remote.
#[derive(Debug, Args)]
pub struct TreeArgs {
    /// Remote URL: s3://bucket[/prefix], r2://ACCOUNT/bucket[/prefix],
    /// gs://…, az://…, file:///path or a path. Defaults to the remote DIR
    /// last synced with.
    pub remote: Option<String>,
    /// The database directory.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The directory and remote to compare.
    #[command(flatten)]
    pub tree: TreeArgs,
    /// Exit with status 1 when the trees are not in sync.
    #[arg(long)]
    pub exit_code: bool,
}

/// Arguments of `mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The remote to copy from.
    pub source: String,
    /// The remote to copy to.
    pub destination: String,
}

/// Arguments of `remote`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The database directory.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
}

/// Conflict strategies.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StrategyArg {
    /// The local version wins.
    LocalWins,
    /// The remote version wins.
    RemoteWins,
    /// The newer modification time wins.
    Newest,
    /// List conflicts, leave both copies, exit 3.
    Manual,
}

/// Hash algorithms.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HashArg {
    /// BLAKE3 (the default for new remotes).
    Blake3,
    /// SHA-256, as ParqueDB writes.
    Sha256,
}

/// R2 jurisdictions.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum JurisdictionArg {
    /// The global endpoint.
    Default,
    /// The EU jurisdiction.
    Eu,
    /// The FedRAMP jurisdiction.
    Fedramp,
}

/// Flags accepted by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Print the plan, with its request count, and transfer nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// How conflicts are resolved (default: local-wins for push,
    /// remote-wins for pull, newest for sync).
    #[arg(long, global = true, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Transfers in flight at once.
    #[arg(long, global = true, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Do not propagate deletions.
    #[arg(long, global = true)]
    pub no_delete: bool,
    /// Stop before deleting more than N files, or P% of a side's files.
    #[arg(long, global = true, default_value = "50%", value_parser = parse_max_delete)]
    pub max_delete: pqsync_core::engine::MaxDelete,
    /// Copy remote files that would be overwritten or deleted under this
    /// prefix of the same bucket first.
    #[arg(long, global = true, value_name = "PREFIX")]
    pub backup_dir: Option<String>,
    /// On stores that ignore conditional writes, commit without taking the
    /// remote's lease.
    #[arg(long, global = true)]
    pub force: bool,
    /// Only these ParqueDB namespaces (comma-separated): data/NS/**, their
    /// relationship files and indexes/*/NS.*.
    #[arg(long, global = true, value_delimiter = ',', value_name = "NS,...")]
    pub namespaces: Vec<String>,
    /// Only paths matching this glob (repeatable; with --namespaces, either
    /// selects a path).
    #[arg(long, global = true, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never paths matching this glob (repeatable).
    #[arg(long, global = true, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Hash algorithm for a new remote (default blake3). A remote that
    /// already has a manifest keeps its algorithm.
    #[arg(long, global = true, value_enum)]
    pub hash: Option<HashArg>,
    /// Object-store endpoint, overriding AWS_ENDPOINT_URL and R2's.
    #[arg(long, global = true)]
    pub endpoint: Option<String>,
    /// R2 jurisdiction (default: the URL's `?jurisdiction=`, else
    /// R2_JURISDICTION, else the global endpoint). Applies to every r2://
    /// remote of the command.
    #[arg(long, global = true, value_enum)]
    pub jurisdiction: Option<JurisdictionArg>,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Print every file and retry (-vv for debug logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never draw progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

fn parse_max_delete(s: &str) -> Result<pqsync_core::engine::MaxDelete, String> {
    s.parse().map_err(|e: pqsync_core::Error| e.to_string())
}
