//! Inspecting one file of a tree: its hash and its Parquet footer, from one
//! read where one read suffices. `verify` and `stats` are built on this.
//!
//! Everything reads metadata where metadata suffices. A Parquet footer costs
//! a read of the file's last 64 KiB (one ranged GET on a remote, plus one
//! more for the leading magic when the file is larger than that); when the
//! file is being hashed anyway, the footer comes from the same stream.

use crate::error::Result;
use crate::manifest::{Digest, HashAlgorithm};
use crate::tree::Tree;

use super::footer::{parse_footer, FooterError, ParquetInfo, FOOTER_PROBE};

/// What inspecting one file found.
#[derive(Debug)]
pub struct Inspection {
    /// Bytes read (when hashed) or listed.
    pub size: u64,
    /// The digest, when asked for.
    pub hash: Option<Digest>,
    /// The footer's facts, or why the file is not valid Parquet; `None`
    /// when not asked for.
    pub parquet: Option<std::result::Result<ParquetInfo, String>>,
    /// The remote object's bytes in a temporary file, when kept.
    pub spool: Option<std::fs::File>,
}

/// Inspects one file of `size` bytes (as listed): hashes it with `alg` if
/// given, and parses its Parquet footer if `footer` is set. With `keep`, a
/// remote object that is hashed is also kept in an anonymous temporary file
/// ([`Inspection::spool`]) for a caller that reads it again, so it is
/// fetched only once.
///
/// # Errors
/// I/O and store errors. A file that is not valid Parquet is not an error:
/// it is reported in [`Inspection::parquet`].
pub async fn inspect(
    tree: &dyn Tree,
    rel: &str,
    size: u64,
    alg: Option<HashAlgorithm>,
    footer: bool,
    keep: bool,
) -> Result<Inspection> {
    let mut out = Inspection {
        size,
        hash: None,
        parquet: None,
        spool: None,
    };
    let mut ends = None;
    if let Some(alg) = alg {
        let hashed = tree
            .hash(rel, size, alg, FOOTER_PROBE as usize, keep)
            .await?;
        out.size = hashed.size;
        out.hash = Some(hashed.digest);
        out.spool = hashed.spool;
        ends = hashed.ends;
    }
    if footer {
        out.parquet = Some(read_footer(tree, rel, out.size, ends).await?);
    }
    Ok(out)
}

/// Parses a file's footer from `ends` (its first 4 and last bytes) when
/// given, else from ranged reads.
async fn read_footer(
    tree: &dyn Tree,
    rel: &str,
    size: u64,
    ends: Option<(bytes::Bytes, bytes::Bytes)>,
) -> Result<std::result::Result<ParquetInfo, String>> {
    let (head, tail) = match ends {
        Some(e) => e,
        None if size <= FOOTER_PROBE => {
            let all = tree.read_range(rel, 0..size).await?;
            (all.slice(..all.len().min(4)), all)
        }
        None => {
            let head = tree.read_range(rel, 0..4).await?;
            let tail = tree.read_range(rel, size - FOOTER_PROBE..size).await?;
            (head, tail)
        }
    };
    Ok(match parse_footer(size, &head, &tail) {
        Err(FooterError::NeedTail(n)) if n <= size => {
            let tail = tree.read_range(rel, size - n..size).await?;
            parse_footer(size, &head, &tail).map_err(|e| e.to_string())
        }
        other => other.map_err(|e| e.to_string()),
    })
}
