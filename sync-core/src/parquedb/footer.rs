//! Parquet footers: both magics, a footer that parses, row groups that add
//! up and column chunks inside the file, read from a file's first and last
//! bytes only.

use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;
use serde::Serialize;

/// How much of a Parquet file's end is read to find its footer; a footer
/// larger than this costs one more read.
pub const FOOTER_PROBE: u64 = 64 * 1024;

const MAGIC: &[u8; 4] = b"PAR1";
const ENCRYPTED_MAGIC: &[u8; 4] = b"PARE";

/// What a Parquet footer says about its file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParquetInfo {
    /// Rows in the file (ParqueDB's entity or event count).
    pub rows: u64,
    /// Row groups.
    pub row_groups: usize,
    /// Minimum and maximum of an INT64 `ts` column, from its statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ts_range: Option<(i64, i64)>,
    /// The largest value of a string `id` column (ParqueDB's event ids are
    /// ULIDs, so this is the newest event), from its statistics.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_max: Option<String>,
}

/// Why a footer could not be read from the bytes at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FooterError {
    /// The file is not valid Parquet.
    Invalid(String),
    /// The footer is longer than the tail given: read this many bytes from
    /// the end and try again.
    NeedTail(u64),
}

impl std::fmt::Display for FooterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FooterError::Invalid(m) => f.write_str(m),
            FooterError::NeedTail(n) => write!(f, "the footer needs the last {n} bytes"),
        }
    }
}

/// Checks a Parquet file of `size` bytes from its first bytes (`head`, at
/// least 4) and its last bytes (`tail`): both magics, a footer that parses,
/// row groups that add up and column chunks that lie inside the file.
///
/// # Errors
/// [`FooterError::Invalid`] with a one-line reason, or
/// [`FooterError::NeedTail`] when `tail` is too short for the footer.
pub fn parse_footer(
    size: u64,
    head: &[u8],
    tail: &[u8],
) -> std::result::Result<ParquetInfo, FooterError> {
    let bad = |m: String| Err(FooterError::Invalid(m));
    if size < 12 {
        return bad(format!("{size} bytes is too small for a Parquet file"));
    }
    if head.len() < 4 || &head[..4] != MAGIC {
        return bad("does not start with the Parquet magic PAR1".into());
    }
    if (tail.len() as u64) < 8 || tail.len() as u64 > size {
        return Err(FooterError::NeedTail(FOOTER_PROBE.min(size)));
    }
    let last: &[u8; 8] = tail[tail.len() - 8..].try_into().expect("8 bytes");
    if &last[4..] == ENCRYPTED_MAGIC {
        return bad("has an encrypted footer, which pqsync cannot read".into());
    }
    if &last[4..] != MAGIC {
        return bad("does not end with the Parquet magic PAR1 (truncated?)".into());
    }
    let footer = ParquetMetaDataReader::decode_footer_tail(last)
        .map_err(|e| FooterError::Invalid(format!("unreadable footer: {e}")))?;
    let len = footer.metadata_length() as u64;
    if len + 12 > size {
        return bad(format!(
            "footer length {len} does not fit in the file's {size} bytes (truncated?)"
        ));
    }
    if len + 8 > tail.len() as u64 {
        return Err(FooterError::NeedTail(len + 8));
    }
    let meta_bytes = &tail[tail.len() - 8 - len as usize..tail.len() - 8];
    let meta = ParquetMetaDataReader::decode_metadata(meta_bytes)
        .map_err(|e| FooterError::Invalid(format!("footer does not parse: {e}")))?;
    check_layout(&meta, size - 8 - len).map_err(FooterError::Invalid)
}

fn check_layout(meta: &ParquetMetaData, data_end: u64) -> std::result::Result<ParquetInfo, String> {
    let declared = meta.file_metadata().num_rows();
    let mut rows: i64 = 0;
    let mut ts: Option<(i64, i64)> = None;
    let ts_col = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == "ts");
    let id_col = meta
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .position(|c| c.path().string() == "id");
    let mut id_max: Option<String> = None;
    for (g, rg) in meta.row_groups().iter().enumerate() {
        rows += rg.num_rows();
        for col in rg.columns() {
            let (start, len) = col.byte_range();
            if start.checked_add(len).is_none_or(|end| end > data_end) {
                return Err(format!(
                    "column {} of row group {g} lies outside the file (bytes {start}+{len}, data ends at {data_end})",
                    col.column_path().string()
                ));
            }
        }
        if let Some(Statistics::Int64(s)) = ts_col.and_then(|i| rg.column(i).statistics()) {
            if let (Some(&lo), Some(&hi)) = (s.min_opt(), s.max_opt()) {
                ts = Some(ts.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
        }
        if let Some(Statistics::ByteArray(s)) = id_col.and_then(|i| rg.column(i).statistics()) {
            let hi = s
                .max_opt()
                .and_then(|v| std::str::from_utf8(v.data()).ok())
                .filter(|_| s.max_is_exact());
            if let Some(hi) = hi.filter(|h| id_max.as_deref().is_none_or(|m| *h > m)) {
                id_max = Some(hi.to_string());
            }
        }
    }
    if rows != declared || declared < 0 {
        return Err(format!(
            "footer declares {declared} rows but its row groups hold {rows}"
        ));
    }
    Ok(ParquetInfo {
        rows: declared as u64,
        row_groups: meta.num_row_groups(),
        ts_range: ts,
        id_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footers_catch_truncation_and_garbage() {
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/sample-db/data/users/data.parquet"
        ))
        .unwrap();
        let size = bytes.len() as u64;
        let info = parse_footer(size, &bytes, &bytes).unwrap();
        assert_eq!(info.rows, 200);

        let cut = &bytes[..bytes.len() - 100];
        let err = parse_footer(cut.len() as u64, cut, cut).unwrap_err();
        assert!(err.to_string().contains("PAR1"), "{err}");

        let mut flipped = bytes.clone();
        let n = flipped.len();
        // Inside the footer's Thrift bytes, just before the length word.
        for b in &mut flipped[n - 40..n - 8] {
            *b ^= 0x5a;
        }
        let err = parse_footer(size, &flipped, &flipped).unwrap_err();
        assert!(matches!(err, FooterError::Invalid(_)), "{err}");

        let short_tail = &bytes[bytes.len() - 8..];
        assert!(matches!(
            parse_footer(size, &bytes, short_tail),
            Err(FooterError::NeedTail(_))
        ));
    }
}
