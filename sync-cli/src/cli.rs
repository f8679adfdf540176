//! Command-line arguments. Each flag belongs to the commands it affects:
//! output flags are global, sync flags go with push, pull, sync and mirror,
//! selection flags with the commands that choose files, and remote flags
//! with the commands that open a remote.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes, shown in every command's help.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  an error (for verify: a critical check failed; for status --exit-code: not in sync)
  2  usage: a wrong flag, remote or setting, found before any request
  3  conflicts were left unresolved";

/// The variables a command that opens a remote reads.
const REMOTE_ENV: &str = "\
Environment:
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN   S3 and R2 credentials
  R2_ACCESS_KEY_ID, R2_SECRET_ACCESS_KEY                       R2 credentials (take precedence for r2://)
  AWS_PROFILE                                                  the AWS profile when no key variables are set (--profile and ?profile= win over the keys)
  AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE                 where profiles are (default ~/.aws/config and ~/.aws/credentials)
  AWS_REGION, AWS_DEFAULT_REGION                               S3 region (default: the profile's, else us-east-1)
  AWS_ENDPOINT_URL                                             S3 endpoint (--endpoint overrides it)
  AWS_ALLOW_HTTP=true                                          allow a plain-http endpoint
  AWS_EC2_METADATA_DISABLED=true                               never ask the instance metadata service for credentials
  R2_JURISDICTION                                              default, eu or fedramp (--jurisdiction and ?jurisdiction= override it)
  GOOGLE_*, AZURE_*                                            GCS and Azure settings, as object_store reads them
  PQSYNC_COPY_LIMIT                                            the most bytes the S3 store copies in one request (default 5 GiB); larger objects are copied in parts
  PQSYNC_PASSWORD                                              an encrypted repository's password (repository commands)
  PQSYNC_CONFIG                                                the config file (--config)
  PQSYNC_LOG                                                   log filter (tracing's EnvFilter syntax)";

/// Sync ParqueDB databases between local disk and object stores.
#[derive(Debug, Parser)]
#[command(
    name = "pqsync",
    version,
    about,
    propagate_version = true,
    after_help = "Run `pqsync help COMMAND` for a command's flags, examples and environment."
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Output flags, accepted by every command.
    #[command(flatten)]
    pub output: OutputArgs,
    /// Where pqsync keeps the state of local databases (stat cache, bases,
    /// journals, trash), outside the databases themselves. Default: the
    /// platform's state directory, `~/.local/state/pqsync` on Linux.
    #[arg(long, global = true, env = "PQSYNC_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// The config file: named remotes and repositories (`@NAME`) and
    /// defaults per command. Default: `pqsync.toml` in the platform's
    /// config directory (`~/.config/pqsync/pqsync.toml` on Linux), used
    /// when it exists.
    #[arg(long, global = true, env = "PQSYNC_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// After the command, write Prometheus metrics (duration, bytes,
    /// requests by R2 billing class, files changed, errors, last success)
    /// into FILE, atomically, for node_exporter's textfile collector.
    /// Series of other commands and remotes already in FILE are kept.
    #[arg(long, global = true, env = "PQSYNC_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send local changes to the remote.
    #[command(after_help = help(
        "pqsync push s3://bucket/prod -d ./db\n  pqsync push -d ./db --dry-run\n  pqsync push r2://0123456789abcdef0123456789abcdef/backups/prod -d ./db --namespaces posts,users",
        true,
    ))]
    Push(TransferArgs),
    /// Fetch remote changes into the local directory.
    #[command(after_help = help(
        "pqsync pull s3://bucket/prod -d ./restored\n  pqsync pull -d ./db --strategy manual",
        true,
    ))]
    Pull(TransferArgs),
    /// Exchange changes both ways.
    #[command(after_help = help(
        "pqsync sync -d ./db\n  pqsync sync s3://bucket/prod -d ./db --strategy newest --no-delete",
        true,
    ))]
    Sync(TransferArgs),
    /// Show what push, pull or sync would move, without moving anything.
    #[command(after_help = help(
        "pqsync status -d ./db\n  pqsync status -d ./db --exit-code --json",
        true,
    ))]
    Status(StatusArgs),
    /// Copy a managed prefix from one remote to another.
    #[command(after_help = help(
        "pqsync mirror s3://a/prod r2://0123456789abcdef0123456789abcdef/b/prod --jurisdiction eu\n  pqsync mirror s3://a/prod s3://b/prod -n",
        true,
    ))]
    Mirror(MirrorArgs),
    /// Print the remote DIR last synced with.
    #[command(after_help = help("pqsync remote -d ./db", false))]
    Remote(RemoteArgs),
    /// List the files of a database directory or remote.
    #[command(after_help = help(
        "pqsync list s3://bucket/prod --namespaces posts\n  pqsync list ./db --format json",
        true,
    ))]
    List(ListArgs),
    /// Check a database directory or remote: manifest, files, hashes,
    /// Parquet footers, entity counts, relationships, bloom filters and the
    /// event log. Exits 1 when a critical check fails.
    #[command(after_help = help(
        "pqsync verify s3://bucket/prod --quick\n  pqsync verify ./restored --compare s3://bucket/prod --output report.json\n  pqsync verify s3://bucket/backups/prod:latest",
        true,
    ))]
    Verify(VerifyArgs),
    /// Per-namespace files, bytes, entities and relationships, and the
    /// event log's segments, events and time range.
    #[command(after_help = help("pqsync stats s3://bucket/prod\n  pqsync stats ./db --json", true))]
    Stats(StatsArgs),
    /// Create a database's manifest, or rebuild it from what is there.
    #[command(after_help = help(
        "pqsync init -d ./db\n  pqsync init --rebuild-manifest -d ./db\n  pqsync init s3://bucket/prod --rebuild-manifest -n",
        true,
    ))]
    Init(InitArgs),
    /// List, restore or empty the versions runs overwrote or deleted.
    #[command(after_help = help(
        "pqsync trash list s3://bucket/prod\n  pqsync trash restore -d ./db --path data/users/data.parquet\n  pqsync trash restore s3://bucket/prod -d ./db --run 20261205T054012Z-9f3a61c2\n  pqsync trash empty -d ./db --older-than 2d",
        true,
    ))]
    Trash(TrashArgs),
    /// Save a snapshot of DIR in a snapshot repository (made on first
    /// use). Only content the repository does not hold yet is sent; nothing
    /// in the repository is overwritten or deleted.
    #[command(after_help = help(
        "pqsync backup s3://bucket/backups/prod -d ./db --tag daily\n  pqsync backup ./backups -d ./db -n",
        true,
    ))]
    Backup(BackupArgs),
    /// List a repository's snapshots: id, time, host, tags, files, size,
    /// added bytes and the event log each covers.
    #[command(after_help = help(
        "pqsync snapshots s3://bucket/backups/prod\n  pqsync snapshots ./backups --at 2026-02-01 --json",
        true,
    ))]
    Snapshots(SnapshotsArgs),
    /// Restore a snapshot into DIR: REPO:ID, REPO:latest, or the newest at
    /// or before --at. DIR is made equal to the snapshot; files it replaces
    /// or removes go to the local trash.
    #[command(after_help = help(
        "pqsync restore s3://bucket/backups/prod -d ./recovery --at 2026-02-01T12:00:00Z\n  pqsync restore s3://bucket/backups/prod:4f2a9c1e -d ./recovery --namespaces posts",
        true,
    ))]
    Restore(RestoreArgs),
    /// Show which files were added, changed and removed between two
    /// snapshots.
    #[command(after_help = help(
        "pqsync diff s3://bucket/backups/prod 4f2a 9b3d\n  pqsync diff ./backups --at 2026-02-01 latest",
        true,
    ))]
    Diff(DiffArgs),
    /// Remove snapshots a retention policy does not keep (restic's rules:
    /// the newest snapshot of each calendar period, rules ORed). Content
    /// goes with --prune or a later `pqsync prune`.
    #[command(after_help = help(
        "pqsync forget s3://bucket/backups/prod --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run\n  pqsync forget ./backups --keep-last 3 --prune",
        true,
    ))]
    Forget(ForgetArgs),
    /// Delete content no snapshot references, in two phases: marked now,
    /// deleted by a later prune once the grace period has passed. Safe
    /// while backups run elsewhere.
    #[command(after_help = help(
        "pqsync prune s3://bucket/backups/prod\n  pqsync prune ./backups --dry-run",
        true,
    ))]
    Prune(PruneArgs),
    /// Check a repository: snapshot records, every referenced object's
    /// presence and size, and with --read-data their content.
    #[command(after_help = help(
        "pqsync check s3://bucket/backups/prod\n  pqsync check ./backups --read-data-subset 10%",
        true,
    ))]
    Check(CheckArgs),
    /// Make an encrypted repository, or manage the passwords that open one.
    #[command(after_help = help(
        "PQSYNC_PASSWORD=... pqsync key init s3://bucket/backups/prod\n  pqsync key add s3://bucket/backups/prod --password-file old.txt --new-password-file new.txt\n  pqsync key list s3://bucket/backups/prod\n  pqsync key remove s3://bucket/backups/prod 3f9a",
        true,
    ))]
    Key(KeyArgs),
    /// Report how old a remote's last sync or a repository's newest
    /// snapshot is and, with -d, what is pending and how far the event log
    /// lags; exit 1 when a limit is exceeded.
    #[command(after_help = help(
        "pqsync health s3://bucket/prod --max-age 2h
  pqsync health -d ./db --max-age 2h --max-pending 100
  pqsync health s3://bucket/backups/prod -d ./db --format nagios
  pqsync health @offsite --format prometheus > /var/lib/node_exporter/pqsync_health.prom

PQSYNC_NOW=2026-12-05T12:00:00Z evaluates ages at that time instead of now.",
        true,
    ))]
    Health(HealthArgs),
    /// List the events of a database's event log (in a directory, on a
    /// remote or in a snapshot), reading only the segments and row groups
    /// whose times overlap the range, and only the columns shown.
    #[command(after_help = help(
        "pqsync events ./db --op DELETE --after 2026-12-01\n  pqsync events s3://bucket/prod --target users:01KN35E2XRBTQ0BPP1YNK2BYFH --full\n  pqsync events s3://bucket/backups/prod:latest --namespace posts --ndjson",
        true,
    ))]
    Events(EventsArgs),
    /// Print a shell completion script.
    #[command(after_help = help(
        "pqsync completions bash > ~/.local/share/bash-completion/completions/pqsync\n  pqsync completions zsh > ~/.zfunc/_pqsync",
        false,
    ))]
    Completions(CompletionsArgs),
    /// Write man pages (pqsync.1 and one per command) into a directory.
    #[command(after_help = help("pqsync man docs/man", false))]
    Man(ManArgs),
}

/// The help text after a command's flags: examples, the environment it
/// reads (for commands that open a remote), and the exit codes.
fn help(examples: &str, remote: bool) -> String {
    let env = if remote {
        format!("\n\n{REMOTE_ENV}")
    } else {
        String::new()
    };
    format!("Examples:\n  {examples}{env}\n\n{EXIT_CODES}")
}

/// Output flags, accepted by every command (before or after it).
#[derive(Debug, Args)]
pub struct OutputArgs {
    /// Print one JSON document on stdout (also when a command fails).
    #[arg(long, global = true)]
    pub json: bool,
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Print every file and retry, and an error's full chain (-vv for debug
    /// logs).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never draw progress bars.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

/// How to reach a remote.
#[derive(Debug, Args, Clone)]
pub struct RemoteFlags {
    /// Object-store endpoint, overriding AWS_ENDPOINT_URL and R2's.
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// AWS profile (in ~/.aws/config and ~/.aws/credentials) for S3 and R2
    /// remotes that do not name their own with `?profile=`; its keys win
    /// over AWS_ACCESS_KEY_ID.
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// R2 jurisdiction (default: the URL's `?jurisdiction=`, else
    /// R2_JURISDICTION, else the global endpoint). Applies to every r2://
    /// remote of the command.
    #[arg(long, value_enum)]
    pub jurisdiction: Option<JurisdictionArg>,
    /// Give up on a store that does not answer for this long, retries
    /// included (seconds).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// Which files a command works on.
#[derive(Debug, Args, Clone, Default)]
pub struct SelectFlags {
    /// Only these ParqueDB namespaces (comma-separated): data/NS/**, their
    /// relationship files and indexes/*/NS.*.
    #[arg(long, value_delimiter = ',', value_name = "NS,...")]
    pub namespaces: Vec<String>,
    /// Only paths matching this glob (repeatable; with --namespaces, either
    /// selects a path).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Never paths matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Never paths matching the globs in FILE, one per line; blank lines
    /// and lines starting with `#` are skipped (repeatable).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
}

/// Staying running and shipping changes as they happen.
#[derive(Debug, Args, Clone)]
pub struct WatchFlags {
    /// Stay running: watch DIR and ship its changes as they happen, one
    /// commit per burst of writes, until SIGTERM or Ctrl-C (push and
    /// backup only).
    #[arg(long)]
    pub watch: bool,
    /// With --watch: how long DIR must be quiet before a round starts
    /// (e.g. 5s, 500ms).
    #[arg(long, value_name = "TIME", default_value = "5s", value_parser = parse_interval)]
    pub debounce: Duration,
}

/// How a transfer behaves.
#[derive(Debug, Args, Clone)]
pub struct SyncFlags {
    /// Print the plan, with its request count, and transfer nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// How conflicts are resolved. Default: a path both sides changed since
    /// the last sync stops with exit 3 (manual); mirror: local-wins.
    #[arg(long, value_enum)]
    pub strategy: Option<StrategyArg>,
    /// Transfers in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Do not propagate deletions.
    #[arg(long)]
    pub no_delete: bool,
    /// Stop before deleting more than N files, or P% of a side's files.
    #[arg(long, default_value = "50%", value_parser = parse_max_delete, value_name = "N|P%")]
    pub max_delete: pqsync_core::MaxDelete,
    /// Keep the remote versions this run overwrites or deletes under this
    /// prefix of the same bucket (for a directory remote: inside it),
    /// instead of the remote's own trash.
    #[arg(long, value_name = "PREFIX", conflicts_with = "no_trash")]
    pub backup_dir: Option<String>,
    /// Destroy what this run overwrites or deletes, instead of keeping it
    /// in each side's trash (`pqsync trash`).
    #[arg(long)]
    pub no_trash: bool,
    /// How long kept versions stay: a run that keeps anything removes the
    /// trash's older runs (e.g. 7d, 36h, 2w).
    #[arg(long, value_name = "AGE", default_value = "7d", value_parser = parse_age)]
    pub trash_retention: Duration,
    /// Also send again the files whose remote object is missing, has the
    /// wrong size or (where objects carry pqsync's hash) another stored hash:
    /// one LIST, plus a HEAD per object on S3, R2, GCS and Azure (push, sync,
    /// mirror).
    #[arg(long)]
    pub repair: bool,
    /// As --repair, and read and hash every remote object to find other
    /// bytes (bit rot).
    #[arg(long)]
    pub checksum: bool,
    /// On stores that ignore conditional writes, commit without taking the
    /// remote's lease.
    #[arg(long)]
    pub force: bool,
    /// Hash algorithm for a new remote (default blake3). A remote that
    /// already has a manifest keeps its algorithm.
    #[arg(long, value_enum)]
    pub hash: Option<HashArg>,
}

/// A local directory and, optionally, a remote.
#[derive(Debug, Args, Clone)]
pub struct TransferArgs {
    /// Remote URL: s3://bucket[/prefix], r2://ACCOUNT/bucket[/prefix],
    /// gs://…, az://…, file:///path or a path. Defaults to the remote DIR
    /// last synced with.
    pub remote: Option<String>,
    /// The database directory.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// Push only: push a plain, ParqueDB-readable copy to REMOTE/SLUG (for
    /// example `backups/20260201`), recording the slug in its manifest; the
    /// directory's remembered remote stays REMOTE. For versions with
    /// deduplication and retention, use `pqsync backup`.
    #[arg(long, value_name = "SLUG")]
    pub slug: Option<String>,
    /// Push only: stay running and push changes as they happen.
    #[command(flatten)]
    pub watch: WatchFlags,
    /// Push only: splitting the push across machines.
    #[command(flatten)]
    pub shards: ShardFlags,
    /// How the transfer behaves.
    #[command(flatten)]
    pub sync: SyncFlags,
    /// Which files it moves.
    #[command(flatten)]
    pub select: SelectFlags,
    /// How the remote is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// `--shard` and `--merge-shards`: one run split across machines.
#[derive(Debug, Args, Clone)]
pub struct ShardFlags {
    /// Push, mirror and backup only: handle only the paths of shard K of N
    /// (by a hash of the path), and leave a shard record at the remote (a
    /// part of the snapshot, for a backup) instead of committing; run every
    /// K from 0 to N-1 (on as many machines as you like), then
    /// `--merge-shards`.
    #[arg(long, value_name = "K/N", value_parser = parse_shard, conflicts_with = "merge_shards")]
    pub shard: Option<pqsync_core::Shard>,
    /// Push, mirror and backup only: commit the union of the shard records
    /// at the remote (every shard must have finished), deleting what the
    /// source no longer has; for a backup, save one snapshot of the parts.
    #[arg(long)]
    pub merge_shards: bool,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Remote URL; defaults to the remote DIR last synced with.
    pub remote: Option<String>,
    /// The database directory.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// Exit with status 1 when the trees are not in sync.
    #[arg(long)]
    pub exit_code: bool,
    /// Which files to compare.
    #[command(flatten)]
    pub select: SelectFlags,
    /// How the remote is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `health`.
#[derive(Debug, Args)]
pub struct HealthArgs {
    /// The remote or repository; defaults to the remote DIR last synced
    /// with.
    pub target: Option<String>,
    /// The database: also report the files pending and the event log's
    /// lag.
    #[arg(short = 'd', long = "dir")]
    pub dir: Option<PathBuf>,
    /// Unhealthy when the last success is older than this (e.g. 2h, 1d).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub max_age: Option<Duration>,
    /// Unhealthy when more files than this are pending (needs -d).
    #[arg(long, value_name = "N", requires = "dir")]
    pub max_pending: Option<usize>,
    /// Unhealthy when the remote lacks more sealed event segments than
    /// this (needs -d).
    #[arg(long, value_name = "SEGMENTS", requires = "dir")]
    pub max_event_lag: Option<u64>,
    /// How to print the result: one line of text, a JSON document, a
    /// monitoring plugin's line and exit code (0 OK, 1 WARNING for pending
    /// files or event lag, 2 CRITICAL for age or no success at all,
    /// 3 UNKNOWN when the check itself failed), or Prometheus text.
    #[arg(long, value_enum, default_value = "text")]
    pub format: HealthFormat,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the remote is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Output of `health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HealthFormat {
    /// One line.
    Text,
    /// A JSON document.
    Json,
    /// A Nagios/Icinga monitoring plugin line and exit code.
    Nagios,
    /// Prometheus text format.
    Prometheus,
}

/// Arguments of `events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// A database directory, a synced remote, or a repository (with
    /// `:ID` or `:latest` for a snapshot; default the latest).
    pub source: String,
    /// Only events of this namespace (entities, and relationships from or
    /// to it).
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Only these operations (repeatable): CREATE, UPDATE, DELETE,
    /// REL_CREATE, REL_DELETE.
    #[arg(long = "op", value_name = "OP")]
    pub ops: Vec<String>,
    /// Only events about this entity (`NS:ID`, or `NS/ID`).
    #[arg(long, value_name = "NS:ID")]
    pub target: Option<String>,
    /// Only events at or after this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME")]
    pub after: Option<String>,
    /// Only events before this time.
    #[arg(long, value_name = "TIME")]
    pub before: Option<String>,
    /// Also show each event's `before` and `after`.
    #[arg(long)]
    pub full: bool,
    /// One JSON object per event per line.
    #[arg(long)]
    pub ndjson: bool,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the remote is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `mirror`.
#[derive(Debug, Args)]
pub struct MirrorArgs {
    /// The remote to copy from: a pqsync remote, or any bucket, prefix or
    /// directory (read by listing it).
    pub source: String,
    /// The remotes to copy to, neither the source nor inside it; with
    /// several, each source object is read once and sent to every
    /// destination that needs it, and each destination commits on its own.
    #[arg(required = true, num_args = 1.., value_name = "DESTINATION")]
    pub destinations: Vec<String>,
    /// Splitting the mirror across machines.
    #[command(flatten)]
    pub shards: ShardFlags,
    /// How the transfer behaves.
    #[command(flatten)]
    pub sync: SyncFlags,
    /// Which files it moves.
    #[command(flatten)]
    pub select: SelectFlags,
    /// How the remotes are reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Where an encrypted repository's password comes from (else
/// `PQSYNC_PASSWORD`).
#[derive(Debug, Args, Clone, Default)]
pub struct PasswordFlags {
    /// Read the password from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "password_command")]
    pub password_file: Option<PathBuf>,
    /// Run CMD (with `sh -c`) and take the first line it prints as the
    /// password.
    #[arg(long, value_name = "CMD")]
    pub password_command: Option<String>,
}

/// Which snapshots a command looks at.
#[derive(Debug, Args, Clone, Default)]
pub struct SnapshotFilterFlags {
    /// Only snapshots of this database (its name or databaseId).
    #[arg(long, value_name = "NAME|ID")]
    pub database: Option<String>,
    /// Only snapshots made on this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
}

/// Arguments of `backup`.
#[derive(Debug, Args, Clone)]
pub struct BackupArgs {
    /// The repository: s3://bucket/prefix, r2://ACCOUNT/bucket/prefix,
    /// gs://…, az://…, file:///path or a path.
    pub repository: String,
    /// The database directory.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// A tag for the snapshot (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// The host the snapshot names (default: this machine's name).
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The time the snapshot records, instead of the backup's start (to
    /// import backups made earlier): RFC 3339 or a date.
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// Print what would be sent, and send nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Uploads in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// For a new repository: how long content no snapshot references stays
    /// marked before a prune deletes it. Backups must finish well within it.
    #[arg(long, value_name = "AGE", default_value = "1d", value_parser = parse_age)]
    pub grace: Duration,
    /// For a new repository: encrypt it under the password
    /// (PQSYNC_PASSWORD, --password-file or --password-command).
    #[arg(long)]
    pub encrypt: bool,
    /// Stay running and back up changes as they happen.
    #[command(flatten)]
    pub watch: WatchFlags,
    /// With --watch: take a full snapshot at most this often (e.g. 1h);
    /// in between, each new event segment is shipped at once, in a
    /// snapshot tagged `event-log` that takes every other file from the
    /// snapshot before it.
    #[arg(long, value_name = "AGE", value_parser = parse_age, requires = "watch")]
    pub every: Option<Duration>,
    /// Take only the event log from DIR, the rest from the parent
    /// snapshot (set by --watch --every between full snapshots).
    #[arg(skip)]
    pub event_log_only: bool,
    /// Splitting the backup across machines.
    #[command(flatten)]
    pub shards: ShardFlags,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `snapshots`.
#[derive(Debug, Args)]
pub struct SnapshotsArgs {
    /// The repository.
    pub repository: String,
    /// Only snapshots at or before this time (RFC 3339, or a date meaning
    /// the end of that day, UTC).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Which snapshots.
    #[command(flatten)]
    pub filter: SnapshotFilterFlags,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The repository, with `:ID` (a prefix of a snapshot id) or
    /// `:latest`; without either, --at or the latest snapshot.
    pub repository: String,
    /// The directory to restore into (made if missing).
    #[arg(short = 'd', long = "dir", required_unless_present_any = ["entity", "namespace"])]
    pub dir: Option<PathBuf>,
    /// Restore the newest snapshot at or before this time (RFC 3339, or a
    /// date meaning the end of that day, UTC), then add the sealed event
    /// segments of later snapshots up to it, and write
    /// `_meta/restore-point.json` for ParqueDB to replay to the time.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Print one entity (`NS/ID`) as it stood at --at, from the event log,
    /// as JSON; nothing on stdout when it was deleted (its last state is
    /// named on stderr).
    #[arg(
        long,
        value_name = "NS/ID",
        requires = "at",
        conflicts_with = "namespace"
    )]
    pub entity: Option<String>,
    /// Print every entity of a namespace as it stood at --at, one JSON
    /// object per line (with --ndjson): the newest snapshot's data file
    /// before the time, with the events after it applied.
    #[arg(long, value_name = "NS", requires_all = ["at", "ndjson"])]
    pub namespace: Option<String>,
    /// With --namespace: write newline-delimited JSON.
    #[arg(long)]
    pub ndjson: bool,
    /// Which snapshots --at and latest choose among.
    #[command(flatten)]
    pub filter: SnapshotFilterFlags,
    /// Print what would be restored, and change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Downloads in flight at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Destroy the local files the restore replaces or removes, instead of
    /// keeping them in the local trash.
    #[arg(long)]
    pub no_trash: bool,
    /// Which files to restore (the others are left as they are).
    #[command(flatten)]
    pub select: SelectFlags,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The repository.
    pub repository: String,
    /// The older snapshot: an id prefix, `latest`, or a time (default with
    /// --at: the snapshot at that time).
    pub from: Option<String>,
    /// The newer snapshot (default: latest).
    pub to: Option<String>,
    /// Compare the snapshot at this time with FROM (or the latest).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Which snapshots times and latest choose among.
    #[command(flatten)]
    pub filter: SnapshotFilterFlags,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `forget`.
#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The repository.
    pub repository: String,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the last N hours (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// Keep the newest snapshot of each of the last N days (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// Keep the newest snapshot of each of the last N ISO weeks (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// Keep the newest snapshot of each of the last N months (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// Keep the newest snapshot of each of the last N years (-1: all).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot within this long of the newest (e.g. 14d, 2w,
    /// 6mo, 1y).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep every snapshot with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub keep_tag: Vec<String>,
    /// Apply the policy to each group of snapshots sharing these
    /// (comma-separated: host, database, tags; empty for one group).
    #[arg(long, default_value = "host,database", value_name = "FIELDS")]
    pub group_by: String,
    /// Only these snapshots are considered.
    #[command(flatten)]
    pub filter: SnapshotFilterFlags,
    /// Show what would be kept and why, and remove nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Prune afterwards.
    #[arg(long)]
    pub prune: bool,
    /// With --prune: the grace period (never less than the repository's).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub grace: Option<Duration>,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The repository.
    pub repository: String,
    /// How long content must stay marked before it is deleted (never less
    /// than the repository's own grace period, set when it was made).
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub grace: Option<Duration>,
    /// Show what would be marked and deleted, and change nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The repository.
    pub repository: String,
    /// Also read and hash every referenced object.
    #[arg(long, conflicts_with = "read_data_subset")]
    pub read_data: bool,
    /// Also read and hash this share of the referenced objects, chosen at
    /// random (e.g. 10%).
    #[arg(long, value_name = "P%")]
    pub read_data_subset: Option<String>,
    /// The repository's password, when it is encrypted.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `key`.
#[derive(Debug, Args)]
pub struct KeyArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: KeyAction,
}

/// The `key` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Make a new, encrypted repository.
    Init(KeyInitArgs),
    /// Add a password.
    Add(KeyChangeArgs),
    /// List the key files: id, host, creation time; `*` marks the one the
    /// password opens.
    List(KeyRepoArgs),
    /// Remove a password (not the one given, and not the last).
    Remove(KeyRemoveArgs),
    /// Change the password given to a new one.
    Passwd(KeyChangeArgs),
}

/// A repository and its password.
#[derive(Debug, Args)]
pub struct KeyRepoArgs {
    /// The repository.
    pub repository: String,
    /// The password.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `key init`.
#[derive(Debug, Args)]
pub struct KeyInitArgs {
    /// The repository to make.
    pub repository: String,
    /// How long content no snapshot references stays marked before a prune
    /// deletes it.
    #[arg(long, value_name = "AGE", default_value = "1d", value_parser = parse_age)]
    pub grace: Duration,
    /// The password.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `key add` and `key passwd`.
#[derive(Debug, Args)]
pub struct KeyChangeArgs {
    /// The repository.
    pub repository: String,
    /// Read the new password from the first line of FILE (else
    /// PQSYNC_NEW_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub new_password_file: Option<PathBuf>,
    /// The current password.
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `key remove`.
#[derive(Debug, Args)]
pub struct KeyRemoveArgs {
    /// The repository.
    pub repository: String,
    /// The key's id (a unique prefix, as `key list` shows it).
    pub id: String,
    /// A password that opens the repository (not the key removed).
    #[command(flatten)]
    pub password: PasswordFlags,
    /// How the repository is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `remote`.
#[derive(Debug, Args)]
pub struct RemoteArgs {
    /// The database directory.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
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
    /// Which files to list.
    #[command(flatten)]
    pub select: SelectFlags,
    /// How a remote is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Output formats of `list`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ListFormat {
    /// One path per line.
    Paths,
    /// A JSON document with the file entries.
    Json,
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
    /// Verify the snapshot of the repository TARGET taken at or before this
    /// time, without restoring it (as `REPO:ID` or `REPO:latest` does).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
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
    /// Files inspected at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// When a remote fails the check, send its damaged files again from
    /// the database directory -d (as `push --checksum`, or `push --repair`
    /// with --quick).
    #[arg(long, requires = "repair_from")]
    pub repair: bool,
    /// The database directory --repair sends from.
    #[arg(short = 'd', long = "dir", value_name = "DIR", id = "repair_from")]
    pub dir: Option<PathBuf>,
    /// How remotes are reached.
    /// The repository's password, for a snapshot of an encrypted one.
    #[command(flatten)]
    pub password: PasswordFlags,
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
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
    /// Footers read at once.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// How a remote is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
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
    /// Build the manifest and report, but write nothing.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Hash algorithm (default: the old manifest's, else blake3).
    #[arg(long, value_enum)]
    pub hash: Option<HashArg>,
    /// Objects read at once on a remote.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// How the remote is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `trash`.
#[derive(Debug, Args)]
pub struct TrashArgs {
    /// What to do with the trash.
    #[command(subcommand)]
    pub action: TrashAction,
}

/// What `trash` does.
#[derive(Debug, Subcommand)]
pub enum TrashAction {
    /// List the kept versions, oldest run first.
    List(TrashPlace),
    /// Copy kept versions back into the directory (each path's latest,
    /// unless --run names one); a file they replace is kept in turn.
    Restore(TrashRestoreArgs),
    /// Delete kept versions for good.
    Empty(TrashEmptyArgs),
}

/// Which trash `trash` works on.
#[derive(Debug, Args)]
pub struct TrashPlace {
    /// A remote whose trash to work on; without one, the directory's own.
    pub remote: Option<String>,
    /// The database directory.
    #[arg(short = 'd', long = "dir", default_value = ".")]
    pub dir: PathBuf,
    /// The prefix a run was given with --backup-dir, instead of the
    /// remote's own trash.
    #[arg(long, value_name = "PREFIX", requires = "remote")]
    pub backup_dir: Option<String>,
    /// How the remote is reached.
    #[command(flatten)]
    pub remote_flags: RemoteFlags,
}

/// Arguments of `trash restore`.
#[derive(Debug, Args)]
pub struct TrashRestoreArgs {
    /// Which trash.
    #[command(flatten)]
    pub place: TrashPlace,
    /// Only versions this run kept (a name from `trash list`).
    #[arg(long, value_name = "RUN")]
    pub run: Option<String>,
    /// Only this path, or the files under this folder (repeatable).
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
}

/// Arguments of `trash empty`.
#[derive(Debug, Args)]
pub struct TrashEmptyArgs {
    /// Which trash.
    #[command(flatten)]
    pub place: TrashPlace,
    /// Only runs older than this (e.g. 7d, 36h, 2w); default: every run.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub older_than: Option<Duration>,
}

/// Arguments of `completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of `man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Where to write pqsync.1 and pqsync-COMMAND.1.
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

impl From<StrategyArg> for pqsync_core::Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::LocalWins => pqsync_core::Strategy::LocalWins,
            StrategyArg::RemoteWins => pqsync_core::Strategy::RemoteWins,
            StrategyArg::Newest => pqsync_core::Strategy::Newest,
            StrategyArg::Manual => pqsync_core::Strategy::Manual,
        }
    }
}

/// Hash algorithms.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum HashArg {
    /// BLAKE3 (the default for new remotes).
    Blake3,
    /// SHA-256, as ParqueDB writes.
    Sha256,
}

impl From<HashArg> for pqsync_core::HashAlgorithm {
    fn from(h: HashArg) -> Self {
        match h {
            HashArg::Blake3 => pqsync_core::HashAlgorithm::Blake3,
            HashArg::Sha256 => pqsync_core::HashAlgorithm::Sha256,
        }
    }
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

impl From<JurisdictionArg> for pqsync_backends::Jurisdiction {
    fn from(j: JurisdictionArg) -> Self {
        match j {
            JurisdictionArg::Default => pqsync_backends::Jurisdiction::Default,
            JurisdictionArg::Eu => pqsync_backends::Jurisdiction::Eu,
            JurisdictionArg::Fedramp => pqsync_backends::Jurisdiction::Fedramp,
        }
    }
}

fn parse_max_delete(s: &str) -> Result<pqsync_core::MaxDelete, String> {
    s.parse().map_err(|e: pqsync_core::Error| e.to_string())
}

/// A short interval: `500ms`, `5s`, `2m`, `1h` (a bare number is
/// seconds).
fn parse_interval(s: &str) -> Result<Duration, String> {
    match s.trim().strip_suffix("ms") {
        Some(ms) => ms
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{s:?} is not a time; write e.g. 500ms, 5s or 1m")),
        None => parse_age(s),
    }
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() && secs <= 86_400.0 => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// An age such as `7d`, `36h`, `90m`, `2w` or `3600s` (a bare number is
/// seconds).
fn parse_age(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => 0,
    };
    match num.parse::<u64>() {
        Ok(n) if secs > 0 => Ok(Duration::from_secs(n.saturating_mul(secs))),
        _ => Err(format!(
            "{s:?} is not an age; write a whole number with s, m, h, d or w (e.g. 7d)"
        )),
    }
}

/// `K/N` for `--shard`.
fn parse_shard(v: &str) -> Result<pqsync_core::Shard, String> {
    let (k, n) = v
        .split_once('/')
        .ok_or_else(|| format!("{v:?} is not K/N (for example 0/4)"))?;
    let k: u32 = k
        .trim()
        .parse()
        .map_err(|_| format!("{k:?} is not a shard number"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("{n:?} is not a shard count"))?;
    pqsync_core::Shard::new(k, n).map_err(|e| match e {
        pqsync_core::Error::InvalidArgument { reason, .. } => reason,
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn ages_parse_with_their_units() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_age("2w"), Ok(Duration::from_secs(14 * 86_400)));
        assert_eq!(parse_age("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("0d"), Ok(Duration::ZERO));
        assert!(parse_age("7 days").is_err());
        assert!(parse_age("d").is_err());
        assert!(parse_age("-1d").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
