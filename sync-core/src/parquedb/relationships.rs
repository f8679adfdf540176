//! Relationship files (`rels/forward/{ns}.parquet`, `rels/reverse/{ns}.parquet`)
//! read through their id columns, in batches, into order-independent
//! digests that a forward and a reverse file can be compared by.

use std::collections::BTreeMap;

use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};

/// An order-independent digest of a multiset of relationships between two
/// namespaces: equal multisets give equal digests; a missing, extra or
/// altered row changes it (up to a 2^-128 chance).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelDigest {
    /// Number of rows.
    pub count: u64,
    sum: u64,
    xor: u64,
}

impl RelDigest {
    fn add(&mut self, key: &[&[u8]]) {
        let mut h = blake3::Hasher::new();
        for part in key {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let d = h.finalize();
        let b = d.as_bytes();
        self.count += 1;
        self.sum = self
            .sum
            .wrapping_add(u64::from_le_bytes(b[..8].try_into().expect("8")));
        self.xor ^= u64::from_le_bytes(b[8..16].try_into().expect("8"));
    }
}

/// A relationship file read through its id columns: a digest per
/// `(fromNs, toNs)` pair, and how many rows belong to another file.
#[derive(Debug, Clone, Default)]
pub struct RelFile {
    /// Digests keyed by `(fromNs, toNs)`.
    pub pairs: BTreeMap<(String, String), RelDigest>,
    /// Rows whose own namespace (`fromNs` for forward files, `toNs` for
    /// reverse ones) is not the file's.
    pub misplaced: u64,
}

/// Rows decoded at a time from each id column, so memory stays bounded
/// whatever the size of a row group.
const REL_BATCH: usize = 8192;

/// Reads a relationship file's `fromNs`, `fromId`, `predicate`, `toNs` and
/// `toId` columns (`predicate` may be absent) in batches and digests its
/// rows. `own_ns` is the file's namespace and `forward` its direction.
///
/// # Errors
/// A one-line reason when the file lacks the columns or does not decode.
pub fn read_relationships<R: ChunkReader + 'static>(
    file: R,
    own_ns: &str,
    forward: bool,
) -> std::result::Result<RelFile, String> {
    let reader = SerializedFileReader::new(file).map_err(|e| e.to_string())?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let find = |name: &str| {
        schema
            .columns()
            .iter()
            .position(|c| c.path().string() == name)
    };
    let need = |name: &str| find(name).ok_or_else(|| format!("has no {name} column"));
    let cols = [
        Some(need("fromNs")?),
        Some(need("fromId")?),
        find("predicate"),
        Some(need("toNs")?),
        Some(need("toId")?),
    ];
    let mut acc = Accumulator {
        own_ns: own_ns.as_bytes(),
        forward,
        misplaced: 0,
        pairs: Vec::new(),
    };
    for g in 0..reader.num_row_groups() {
        let rg = reader.get_row_group(g).map_err(|e| e.to_string())?;
        let n = usize::try_from(rg.metadata().num_rows()).map_err(|e| e.to_string())?;
        let mut readers = Vec::with_capacity(5);
        for col in cols {
            let Some(i) = col else {
                readers.push(None);
                continue;
            };
            let name = schema.column(i).path().string();
            let ColumnReader::ByteArrayColumnReader(r) =
                rg.get_column_reader(i).map_err(|e| e.to_string())?
            else {
                return Err(format!("column {name} is not a string column"));
            };
            readers.push(Some((name, r)));
        }
        read_row_group(&mut readers, n, g, &mut acc)?;
    }
    let mut out = RelFile {
        misplaced: acc.misplaced,
        ..RelFile::default()
    };
    let pairs = acc.pairs;
    for (f, t, d) in pairs {
        let key = (
            String::from_utf8_lossy(&f).into_owned(),
            String::from_utf8_lossy(&t).into_owned(),
        );
        let slot = out.pairs.entry(key).or_default();
        slot.count += d.count;
        slot.sum = slot.sum.wrapping_add(d.sum);
        slot.xor ^= d.xor;
    }
    Ok(out)
}

/// The id columns of one row group, in the order `fromNs`, `fromId`,
/// `predicate` (absent: `None`), `toNs`, `toId`, with their names.
type IdColumns = Vec<
    Option<(
        String,
        parquet::column::reader::ColumnReaderImpl<parquet::data_type::ByteArrayType>,
    )>,
>;

/// Digests of one file's rows, by `(fromNs, toNs)` as raw bytes.
struct Accumulator<'a> {
    own_ns: &'a [u8],
    forward: bool,
    misplaced: u64,
    pairs: Vec<(Vec<u8>, Vec<u8>, RelDigest)>,
}

impl Accumulator<'_> {
    /// Adds one row, given its five id values.
    fn row(&mut self, ids: [&[u8]; 5]) {
        let (from_ns, to_ns) = (ids[0], ids[3]);
        let own = if self.forward { from_ns } else { to_ns };
        if own != self.own_ns {
            self.misplaced += 1;
        }
        // Few namespace pairs per file: a linear scan beats allocating a
        // key per row.
        let i = match self
            .pairs
            .iter()
            .position(|(f, t, _)| f == from_ns && t == to_ns)
        {
            Some(i) => i,
            None => {
                let fresh = (from_ns.to_vec(), to_ns.to_vec(), RelDigest::default());
                self.pairs.push(fresh);
                self.pairs.len() - 1
            }
        };
        self.pairs[i].2.add(&ids);
    }
}

/// Decodes the `n` rows of row group `g`, [`REL_BATCH`] at a time.
fn read_row_group(
    readers: &mut IdColumns,
    n: usize,
    g: usize,
    acc: &mut Accumulator<'_>,
) -> std::result::Result<(), String> {
    let mut values: Vec<Vec<ByteArray>> = (0..5).map(|_| Vec::with_capacity(REL_BATCH)).collect();
    let mut def = Vec::with_capacity(REL_BATCH);
    let mut done = 0;
    while done < n {
        let want = REL_BATCH.min(n - done);
        for (slot, reader) in values.iter_mut().zip(readers.iter_mut()) {
            slot.clear();
            let Some((name, r)) = reader else { continue };
            def.clear();
            let (records, _, _) = r
                .read_records(want, Some(&mut def), None, slot)
                .map_err(|e| format!("column {name}: {e}"))?;
            if records != want || slot.len() != want {
                return Err(format!(
                    "column {name} of row group {g} has nulls or too few values"
                ));
            }
        }
        for row in 0..want {
            let get = |c: usize| values[c].get(row).map_or(&[][..], ByteArray::data);
            acc.row([get(0), get(1), get(2), get(3), get(4)]);
        }
        done += want;
    }
    Ok(())
}
