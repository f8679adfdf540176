//! Compact binary state files: the stat cache and the base.
//!
//! Both are sorted by path and written and read as streams, so a tree of
//! millions of files never holds a parsed copy of either in memory: a scan
//! merges the cache with its sorted walk, and a status merges the base the
//! same way. A file starts with an 8-byte magic naming its kind and version;
//! records follow, each a little-endian length-prefixed path and fixed-size
//! fields. A damaged or foreign file reads as absent (the cache costs a
//! rehash, the base a first-sync comparison); it is never an error.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use crate::manifest::{Digest, FileEntry, HashAlgorithm, Timestamp};

use super::FileStat;

/// Magic of a stat cache file, version 1.
pub(crate) const CACHE_MAGIC: &[u8; 8] = b"PQSCACH1";
/// Magic of a base file, version 1.
pub(crate) const BASE_MAGIC: &[u8; 8] = b"PQSBASE1";

/// Longest path a record may carry; anything longer is damage.
const MAX_PATH: usize = 64 * 1024;
/// Marks an absent optional string.
const NONE: u32 = u32::MAX;

/// One stat-cache record: the stat a hash was computed for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CacheRecord {
    pub path: String,
    pub stat: FileStat,
    pub algorithm: HashAlgorithm,
    pub hash: Digest,
}

fn alg_code(a: HashAlgorithm) -> u8 {
    match a {
        HashAlgorithm::Blake3 => 0,
        HashAlgorithm::Sha256 => 1,
        HashAlgorithm::Md5 => 2,
    }
}

fn alg_of(code: u8) -> Option<HashAlgorithm> {
    Some(match code {
        0 => HashAlgorithm::Blake3,
        1 => HashAlgorithm::Sha256,
        2 => HashAlgorithm::Md5,
        _ => return None,
    })
}

/// Writes records of one kind, in the order given (callers give them
/// sorted by path).
pub(crate) struct RecordWriter<W: Write> {
    out: W,
}

impl<W: Write> RecordWriter<W> {
    /// Starts a file of the kind `magic` names.
    pub fn new(mut out: W, magic: &[u8; 8]) -> std::io::Result<Self> {
        out.write_all(magic)?;
        Ok(RecordWriter { out })
    }

    fn str(&mut self, s: &str) -> std::io::Result<()> {
        self.out.write_all(&(s.len() as u32).to_le_bytes())?;
        self.out.write_all(s.as_bytes())
    }

    fn opt_str(&mut self, s: Option<&str>) -> std::io::Result<()> {
        match s {
            Some(s) => self.str(s),
            None => self.out.write_all(&NONE.to_le_bytes()),
        }
    }

    fn digest(&mut self, alg: HashAlgorithm, d: &Digest) -> std::io::Result<()> {
        let raw = d.as_bytes();
        self.out.write_all(&[alg_code(alg), raw.len() as u8])?;
        self.out.write_all(raw)
    }

    /// Appends a stat-cache record.
    pub fn cache(
        &mut self,
        path: &str,
        stat: &FileStat,
        alg: HashAlgorithm,
        hash: &Digest,
    ) -> std::io::Result<()> {
        self.str(path)?;
        for v in [
            stat.size,
            stat.mtime_ns as u64,
            stat.ctime_ns as u64,
            stat.ino,
        ] {
            self.out.write_all(&v.to_le_bytes())?;
        }
        self.digest(alg, hash)
    }

    /// Appends a base entry, every field of it.
    pub fn entry(&mut self, e: &FileEntry) -> std::io::Result<()> {
        self.str(&e.path)?;
        self.out.write_all(&e.size.to_le_bytes())?;
        self.digest(e.hash_algorithm, &e.hash)?;
        match &e.modified_at {
            Timestamp::Millis(ms) => {
                self.out.write_all(&[0])?;
                self.out.write_all(&ms.to_le_bytes())?;
            }
            Timestamp::Text(t) => {
                self.out.write_all(&[1])?;
                self.str(t)?;
            }
        }
        self.opt_str(e.etag.as_deref())?;
        self.opt_str(e.content_type.as_deref())?;
        let extra = e
            .extra
            .as_ref()
            .map(|x| serde_json::to_string(x.as_ref()).expect("a JSON map serialises"));
        self.opt_str(extra.as_deref())
    }

    /// Flushes and returns the writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Reads records of one kind as a stream; `None` at the end or at the
/// first damaged record (the rest of a damaged file is not trusted).
pub(crate) struct RecordReader<R: Read> {
    input: BufReader<R>,
    damaged: bool,
    last: String,
}

impl RecordReader<std::fs::File> {
    /// Opens `path` if it exists and is a file of the kind `magic` names.
    pub fn open(path: &Path, magic: &[u8; 8]) -> Option<Self> {
        let file = std::fs::File::open(path).ok()?;
        RecordReader::new(file, magic)
    }
}

impl<R: Read> RecordReader<R> {
    /// Reads the header; `None` for another kind of file.
    pub fn new(input: R, magic: &[u8; 8]) -> Option<Self> {
        let mut input = BufReader::with_capacity(256 * 1024, input);
        let mut head = [0u8; 8];
        input.read_exact(&mut head).ok()?;
        (&head == magic).then_some(RecordReader {
            input,
            damaged: false,
            last: String::new(),
        })
    }

    /// Whether reading stopped at a damaged record rather than the end.
    pub fn damaged(&self) -> bool {
        self.damaged
    }

    fn at_end(&mut self) -> bool {
        self.input.fill_buf().map(|b| b.is_empty()).unwrap_or(true)
    }

    fn u8(&mut self) -> Option<u8> {
        let mut b = [0u8; 1];
        self.input.read_exact(&mut b).ok()?;
        Some(b[0])
    }

    fn u32(&mut self) -> Option<u32> {
        let mut b = [0u8; 4];
        self.input.read_exact(&mut b).ok()?;
        Some(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Option<u64> {
        let mut b = [0u8; 8];
        self.input.read_exact(&mut b).ok()?;
        Some(u64::from_le_bytes(b))
    }

    fn string_of(&mut self, len: u32) -> Option<String> {
        let len = len as usize;
        if len > MAX_PATH {
            return None;
        }
        let mut buf = vec![0u8; len];
        self.input.read_exact(&mut buf).ok()?;
        String::from_utf8(buf).ok()
    }

    fn str(&mut self) -> Option<String> {
        let len = self.u32()?;
        self.string_of(len)
    }

    fn opt_str(&mut self) -> Option<Option<String>> {
        match self.u32()? {
            NONE => Some(None),
            len => self.string_of(len).map(Some),
        }
    }

    fn digest(&mut self) -> Option<(HashAlgorithm, Digest)> {
        let alg = alg_of(self.u8()?)?;
        let len = usize::from(self.u8()?);
        if len > 32 {
            return None;
        }
        let mut raw = [0u8; 32];
        self.input.read_exact(&mut raw[..len]).ok()?;
        Some((alg, Digest::from_bytes(&raw[..len])))
    }

    /// A record's path, checked to come after the one before it: records
    /// out of order are damage (a merge with them would go wrong).
    fn path(&mut self) -> Option<String> {
        let path = self.str()?;
        if !self.last.is_empty() && path <= self.last {
            return None;
        }
        self.last.clone_from(&path);
        Some(path)
    }

    fn next_with<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        if self.damaged || self.at_end() {
            return None;
        }
        let got = read(self);
        if got.is_none() {
            self.damaged = true;
        }
        got
    }

    /// The next stat-cache record.
    pub fn next_cache(&mut self) -> Option<CacheRecord> {
        self.next_with(|r| {
            let path = r.path()?;
            let stat = FileStat {
                size: r.u64()?,
                mtime_ns: r.u64()? as i64,
                ctime_ns: r.u64()? as i64,
                ino: r.u64()?,
            };
            let (algorithm, hash) = r.digest()?;
            Some(CacheRecord {
                path,
                stat,
                algorithm,
                hash,
            })
        })
    }

    /// The next base entry.
    pub fn next_entry(&mut self) -> Option<FileEntry> {
        self.next_with(|r| {
            let path = r.path()?;
            let size = r.u64()?;
            let (hash_algorithm, hash) = r.digest()?;
            let modified_at = match r.u8()? {
                0 => Timestamp::Millis(r.u64()? as i64),
                1 => Timestamp::Text(r.str()?.into()),
                _ => return None,
            };
            let etag = r.opt_str()?;
            let content_type = r.opt_str()?.map(crate::manifest::shared_type);
            let extra = match r.opt_str()? {
                Some(json) => Some(std::sync::Arc::new(serde_json::from_str(&json).ok()?)),
                None => None,
            };
            Some(FileEntry {
                path,
                size,
                hash,
                hash_algorithm,
                modified_at,
                etag,
                content_type,
                extra,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, n: u8) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: u64::from(n) * 1000,
            hash: HashAlgorithm::Blake3.digest(&[n]),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: Timestamp::from_millis(1_700_000_000_000 + i64::from(n)),
            etag: Some(format!("e{n}")),
            content_type: Some("application/json".into()),
            extra: None,
        }
    }

    #[test]
    fn entries_round_trip_with_every_field() {
        let mut odd = entry("caf\u{e9} #%?+&~[].parquet", 2);
        odd.hash_algorithm = HashAlgorithm::Md5;
        odd.hash = HashAlgorithm::Md5.digest(b"x");
        odd.modified_at = Timestamp::parse("yesterday-ish");
        odd.etag = None;
        odd.content_type = Some("x-custom/odd".to_string().into());
        odd.set_source_etag("\"abc\"".into());
        let all = vec![entry("a", 1), odd, entry("z/y", 3)];
        let mut w = RecordWriter::new(Vec::new(), BASE_MAGIC).unwrap();
        for e in &all {
            w.entry(e).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut r = RecordReader::new(bytes.as_slice(), BASE_MAGIC).unwrap();
        let back: Vec<FileEntry> = std::iter::from_fn(|| r.next_entry()).collect();
        assert!(!r.damaged());
        assert_eq!(back, all);
        // Another kind of file is not read as this one.
        assert!(RecordReader::new(bytes.as_slice(), CACHE_MAGIC).is_none());
    }

    #[test]
    fn damage_and_disorder_stop_the_stream() {
        let stat = FileStat {
            size: 1,
            mtime_ns: -5,
            ctime_ns: 7,
            ino: 9,
        };
        let h = HashAlgorithm::Blake3.digest(b"1");
        let mut w = RecordWriter::new(Vec::new(), CACHE_MAGIC).unwrap();
        w.cache("b", &stat, HashAlgorithm::Blake3, &h).unwrap();
        w.cache("a", &stat, HashAlgorithm::Blake3, &h).unwrap();
        let bytes = w.finish().unwrap();
        let mut r = RecordReader::new(bytes.as_slice(), CACHE_MAGIC).unwrap();
        let first = r.next_cache().unwrap();
        assert_eq!((first.path.as_str(), first.stat), ("b", stat));
        assert!(r.next_cache().is_none(), "out of order");
        assert!(r.damaged());
        // Cut short.
        let mut r = RecordReader::new(&bytes[..bytes.len() - 3], CACHE_MAGIC).unwrap();
        assert!(r.next_cache().is_some());
        assert!(r.next_cache().is_none());
        assert!(r.damaged());
    }
}
