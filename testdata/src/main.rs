//! `pqsync-testdata`: writes a deterministic ParqueDB-layout sample database.
//!
//! Run with no flags (from anywhere) to regenerate the committed
//! `testdata/sample-db`; see `testdata/README.md` for the flags.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use pqsync_testdata::generate::{generate, write_parquedb_manifest, GenOptions};

const USAGE: &str = "\
Usage: pqsync-testdata [OPTIONS]

Writes a deterministic ParqueDB-layout sample database.

Options:
  --out DIR                  output directory [default: testdata/sample-db of this crate]
  --namespaces N             entity namespaces (users, posts, comments, ns4, ...) [default: 3]
  --rows R                   entities per namespace [default: 200]
  --segments M               sealed event segments [default: 3]
  --events-per-segment E     events per segment [default: 100]
  --extra-files K            small extra parquet files under snapshots/extra/ [default: 6]
  --big-file-mib X           size of snapshots/big/data.parquet in MiB, 0 for none [default: 0]
  --seed S                   seed of all pseudo-random choices [default: 42]
  --parquedb-manifest FILE   also write the _meta/manifest.json ParqueDB would write for the output
  -h, --help                 print this help

A non-empty output directory is only overwritten if this tool wrote it.";

struct Args {
    out: PathBuf,
    opts: GenOptions,
    parquedb_manifest: Option<PathBuf>,
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>> {
    let mut parsed = Args {
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sample-db"),
        opts: GenOptions::default(),
        parquedb_manifest: None,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg, None),
        };
        let mut value = || -> Result<String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().with_context(|| format!("{flag} needs a value")),
            }
        };
        let o = &mut parsed.opts;
        match flag.as_str() {
            "--out" => parsed.out = PathBuf::from(value()?),
            "--namespaces" => o.namespaces = number(&flag, &value()?)?,
            "--rows" => o.rows_per_namespace = number(&flag, &value()?)?,
            "--segments" => o.segments = number(&flag, &value()?)?,
            "--events-per-segment" => o.events_per_segment = number(&flag, &value()?)?,
            "--extra-files" => o.extra_files = number(&flag, &value()?)?,
            "--big-file-mib" => o.big_file_mib = number(&flag, &value()?)?,
            "--seed" => o.seed = number(&flag, &value()?)?,
            "--parquedb-manifest" => parsed.parquedb_manifest = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?} (see --help)"),
        }
    }
    Ok(Some(parsed))
}

fn number<T: FromStr>(flag: &str, value: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    value
        .parse()
        .with_context(|| format!("{flag}: {value:?} is not a valid number"))
}

fn run() -> Result<()> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(());
    };
    let summary = generate(&args.out, &args.opts)
        .with_context(|| format!("generating {}", args.out.display()))?;
    println!(
        "wrote {} files, {} bytes to {} ({} entities, {} relationships, {} events)",
        summary.files,
        summary.bytes,
        args.out.display(),
        summary.entities,
        summary.relationships,
        summary.events,
    );
    if let Some(path) = &args.parquedb_manifest {
        write_parquedb_manifest(&args.out, &args.opts, path)?;
        println!("wrote ParqueDB manifest {}", path.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pqsync-testdata: {err:#}");
            ExitCode::FAILURE
        }
    }
}
