//! Ways to damage a copy of a sample database, one per check of
//! `pqsync verify`: each leaves real Parquet files behind that fail exactly
//! the check it is named for.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use parquet::column::reader::ColumnReader;
use parquet::column::writer::ColumnWriter;
use parquet::data_type::ByteArray;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use serde_json::Value;

/// Cuts the last `bytes` bytes off a file, as an interrupted copy would.
///
/// # Errors
/// I/O errors, or a file shorter than `bytes`.
pub fn truncate(file: &Path, bytes: u64) -> Result<()> {
    let len = fs::metadata(file)?.len();
    ensure!(len > bytes, "{} has only {len} bytes", file.display());
    fs::File::options()
        .write(true)
        .open(file)?
        .set_len(len - bytes)?;
    Ok(())
}

/// Overwrites the first half of a Parquet file's footer metadata with
/// `0xFF` bytes, keeping its size, both magics and the length word: only a
/// parse of the footer notices.
///
/// # Errors
/// I/O errors, or a file that is not Parquet.
pub fn corrupt_footer(file: &Path) -> Result<()> {
    let mut b = fs::read(file)?;
    let n = b.len();
    ensure!(
        n >= 12 && &b[n - 4..] == b"PAR1",
        "{} is not Parquet",
        file.display()
    );
    let len = u32::from_le_bytes(b[n - 8..n - 4].try_into()?) as usize;
    ensure!(len + 12 <= n, "bad footer length in {}", file.display());
    let start = n - 8 - len;
    for x in &mut b[start..start + len / 2] {
        *x = 0xFF;
    }
    fs::write(file, b)?;
    Ok(())
}

/// Rewrites a relationship file (or any file of required string and int64
/// columns) without its last row, as a lost reverse-index update would.
///
/// # Errors
/// I/O and Parquet errors; other column types are refused.
pub fn drop_last_row(file: &Path) -> Result<()> {
    let reader = SerializedFileReader::new(Bytes::from(fs::read(file)?))?;
    let schema = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .root_schema_ptr();
    let ncols = reader
        .metadata()
        .file_metadata()
        .schema_descr()
        .num_columns();
    let mut strings: Vec<Vec<ByteArray>> = vec![Vec::new(); ncols];
    let mut ints: Vec<Vec<i64>> = vec![Vec::new(); ncols];
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g)?;
        let n = usize::try_from(rg.metadata().num_rows())?;
        for c in 0..ncols {
            match rg.get_column_reader(c)? {
                ColumnReader::ByteArrayColumnReader(mut r) => {
                    r.read_records(n, None, None, &mut strings[c])?;
                }
                ColumnReader::Int64ColumnReader(mut r) => {
                    r.read_records(n, None, None, &mut ints[c])?;
                }
                _ => bail!(
                    "column {c} of {} is neither string nor int64",
                    file.display()
                ),
            }
        }
    }
    for c in 0..ncols {
        strings[c].pop();
        ints[c].pop();
    }
    let props = Arc::new(WriterProperties::builder().build());
    let mut out = Vec::new();
    let mut w = SerializedFileWriter::new(&mut out, schema, props)?;
    let mut rg = w.next_row_group()?;
    let mut c = 0;
    while let Some(mut col) = rg.next_column()? {
        match col.untyped() {
            ColumnWriter::ByteArrayColumnWriter(t) => {
                t.write_batch(&strings[c], None, None)?;
            }
            ColumnWriter::Int64ColumnWriter(t) => {
                t.write_batch(&ints[c], None, None)?;
            }
            _ => bail!("unexpected column type"),
        }
        col.close()?;
        c += 1;
    }
    rg.close()?;
    w.close()?;
    fs::write(file, out)?;
    Ok(())
}

/// Deletes event segment `seq` and, if `from_manifest`, its entry in
/// `events/_manifest.json` too (leaving a gap in the seq numbers).
///
/// # Errors
/// I/O errors, or a segment that is not there.
pub fn remove_segment(db: &Path, seq: u64, from_manifest: bool) -> Result<()> {
    let seg = db.join(format!("events/seg-{seq:04}.parquet"));
    fs::remove_file(&seg).with_context(|| format!("removing {}", seg.display()))?;
    if from_manifest {
        let path = db.join("events/_manifest.json");
        let mut m: Value = serde_json::from_slice(&fs::read(&path)?)?;
        let segs = m["segments"]
            .as_array_mut()
            .context("event manifest without segments")?;
        let before = segs.len();
        segs.retain(|s| s["seq"].as_u64() != Some(seq));
        ensure!(
            segs.len() + 1 == before,
            "seq {seq} is not in the event manifest"
        );
        fs::write(&path, serde_json::to_string_pretty(&m)? + "\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("sample-db")
            .join(name)
    }

    fn rows(b: Vec<u8>) -> i64 {
        SerializedFileReader::new(Bytes::from(b))
            .unwrap()
            .metadata()
            .file_metadata()
            .num_rows()
    }

    #[test]
    fn dropping_a_row_keeps_a_valid_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("posts.parquet");
        fs::copy(sample("rels/reverse/posts.parquet"), &f).unwrap();
        let before = rows(fs::read(&f).unwrap());
        drop_last_row(&f).unwrap();
        assert_eq!(rows(fs::read(&f).unwrap()), before - 1);
    }

    #[test]
    fn a_corrupt_footer_keeps_size_and_magic() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("data.parquet");
        fs::copy(sample("data/users/data.parquet"), &f).unwrap();
        let before = fs::read(&f).unwrap();
        corrupt_footer(&f).unwrap();
        let after = fs::read(&f).unwrap();
        assert_eq!(before.len(), after.len());
        assert_eq!(&after[..4], b"PAR1");
        assert_eq!(&after[after.len() - 4..], b"PAR1");
        assert!(SerializedFileReader::new(Bytes::from(after)).is_err());
    }
}
