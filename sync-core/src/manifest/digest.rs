//! Content hashes: the algorithms, the [`Digest`] a manifest entry holds,
//! and hashing files and streams in bounded memory.
//!
//! Small files are hashed through a fixed buffer; large BLAKE3 files through
//! memory maps with BLAKE3's own multi-threaded tree hashing (the technique
//! `b3sum` uses). The map is a sliding window of [`MMAP_WINDOW`] bytes rather
//! than the whole file, so hashing a 2 GiB file costs 32 MiB of resident
//! memory instead of 2 GiB, at the same speed.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// A content hash algorithm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgorithm {
    /// BLAKE3, pqsync's default: fast and parallel.
    #[default]
    Blake3,
    /// SHA-256 of the whole file, as ParqueDB writes.
    Sha256,
    /// MD5, which ParqueDB can read; pqsync compares in MD5 when a remote
    /// already uses it.
    Md5,
}

impl HashAlgorithm {
    /// The lowercase name used in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgorithm::Blake3 => "blake3",
            HashAlgorithm::Sha256 => "sha256",
            HashAlgorithm::Md5 => "md5",
        }
    }

    /// Length of a hex digest.
    pub fn hex_len(self) -> usize {
        match self {
            HashAlgorithm::Blake3 | HashAlgorithm::Sha256 => 64,
            HashAlgorithm::Md5 => 32,
        }
    }

    /// The digest of an in-memory buffer.
    pub fn digest(self, data: &[u8]) -> Digest {
        let mut h = ContentHasher::new(self);
        h.update(data);
        h.finalize()
    }
}

impl std::str::FromStr for HashAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "blake3" => Ok(HashAlgorithm::Blake3),
            "sha256" => Ok(HashAlgorithm::Sha256),
            "md5" => Ok(HashAlgorithm::Md5),
            other => Err(Error::InvalidArgument {
                argument: "hash",
                reason: format!(
                    "unknown hash algorithm {other:?} (expected blake3, sha256 or md5)"
                ),
            }),
        }
    }
}

impl std::fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A content hash of up to 32 bytes, kept as bytes and written as lowercase
/// hex. A manifest entry holds one, so keeping it binary halves what a hash
/// costs in memory for trees of millions of files.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    len: u8,
    bytes: [u8; 32],
}

impl Digest {
    /// Parses lowercase hex of an even length up to 64.
    pub fn from_hex(hex: &str) -> Option<Digest> {
        let raw = hex.as_bytes();
        if !raw.len().is_multiple_of(2) || raw.len() > 64 {
            return None;
        }
        // Lowercase hex digit values; 0xff marks anything else.
        const VALUE: [u8; 256] = {
            let mut t = [0xffu8; 256];
            let mut i = 0;
            while i < 10 {
                t[b'0' as usize + i] = i as u8;
                i += 1;
            }
            let mut i = 0;
            while i < 6 {
                t[b'a' as usize + i] = 10 + i as u8;
                i += 1;
            }
            t
        };
        let mut bytes = [0u8; 32];
        let mut bad = 0u8;
        for (out, pair) in bytes.iter_mut().zip(raw.chunks_exact(2)) {
            let (hi, lo) = (VALUE[usize::from(pair[0])], VALUE[usize::from(pair[1])]);
            bad |= hi | lo;
            *out = (hi << 4) | (lo & 0x0f);
        }
        if bad & 0xf0 != 0 {
            return None;
        }
        Some(Digest {
            len: (raw.len() / 2) as u8,
            bytes,
        })
    }

    /// A digest of up to 32 raw bytes (longer input is cut to 32).
    pub fn from_bytes(raw: &[u8]) -> Digest {
        let len = raw.len().min(32);
        let mut bytes = [0u8; 32];
        bytes[..len].copy_from_slice(&raw[..len]);
        Digest {
            len: len as u8,
            bytes,
        }
    }

    /// The digest's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Length of the hex form.
    pub fn hex_len(&self) -> usize {
        usize::from(self.len) * 2
    }
}

impl std::str::FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Digest::from_hex(s).ok_or_else(|| Error::InvalidArgument {
            argument: "digest",
            reason: format!("{s:?} is not a lowercase hex digest"),
        })
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hex through a table into one buffer: digests are formatted for
        // every file of every manifest, so one write, not one per byte.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bytes = self.as_bytes();
        let mut buf = [0u8; 128];
        let n = (bytes.len() * 2).min(buf.len());
        for (i, b) in bytes.iter().take(n / 2).enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 0x0f)];
        }
        f.write_str(std::str::from_utf8(&buf[..n]).expect("hex is ASCII"))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        Digest::from_hex(other).is_some_and(|d| d == *self)
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        *self == *other.as_str()
    }
}

impl PartialEq<Digest> for String {
    fn eq(&self, other: &Digest) -> bool {
        *other == *self.as_str()
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        const HEX: &[u8; 16] = b"0123456789abcdef";
        for (i, b) in self.as_bytes().iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        s.serialize_str(std::str::from_utf8(&buf[..self.hex_len()]).expect("hex is ASCII"))
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Digest;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a hex digest")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Digest, E> {
                Digest::from_hex(v).ok_or_else(|| E::custom(format!("malformed hash {v:?}")))
            }
        }
        d.deserialize_str(V)
    }
}

/// Files at least this large are hashed through memory maps with BLAKE3's
/// parallel tree hashing.
const MMAP_THRESHOLD: u64 = 16 * 1024 * 1024;

/// How much of a large file is mapped at a time (a multiple of the page
/// size and of BLAKE3's 1 KiB chunk).
pub const MMAP_WINDOW: u64 = 32 * 1024 * 1024;

/// Read buffer for streaming hashes.
const BUF_SIZE: usize = 256 * 1024;

/// An incremental hasher for one of the supported algorithms.
#[derive(Clone)]
pub enum ContentHasher {
    /// BLAKE3.
    Blake3(Box<blake3::Hasher>),
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// MD5.
    Md5(md5::Md5),
}

impl ContentHasher {
    /// A fresh hasher.
    pub fn new(alg: HashAlgorithm) -> Self {
        match alg {
            HashAlgorithm::Blake3 => ContentHasher::Blake3(Box::new(blake3::Hasher::new())),
            HashAlgorithm::Sha256 => ContentHasher::Sha256(sha2::Sha256::new()),
            HashAlgorithm::Md5 => ContentHasher::Md5(md5::Md5::new()),
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Blake3(h) => {
                h.update(data);
            }
            ContentHasher::Sha256(h) => h.update(data),
            ContentHasher::Md5(h) => h.update(data),
        }
    }

    /// The digest of everything fed so far.
    pub fn finalize(self) -> Digest {
        match self {
            ContentHasher::Blake3(h) => Digest::from_bytes(h.finalize().as_bytes()),
            ContentHasher::Sha256(h) => Digest::from_bytes(&h.finalize()),
            ContentHasher::Md5(h) => Digest::from_bytes(&h.finalize()),
        }
    }
}

/// Hashes a whole file. Returns the digest and the number of bytes read.
///
/// # Errors
/// [`Error::Io`] with the file's path.
pub fn hash_file(path: &Path, alg: HashAlgorithm, size_hint: u64) -> Result<(Digest, u64)> {
    let io = |e| Error::io(path, e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    if alg == HashAlgorithm::Blake3 && size_hint >= MMAP_THRESHOLD {
        let len = file.metadata().map_err(io)?.len();
        let mut h = blake3::Hasher::new();
        let mut offset = 0;
        while offset < len {
            let n = MMAP_WINDOW.min(len - offset);
            let window = map_window(&file, offset, n).map_err(io)?;
            h.update_rayon(&window);
            offset += n;
        }
        return Ok((Digest::from_bytes(h.finalize().as_bytes()), h.count()));
    }
    let mut hasher = ContentHasher::new(alg);
    let mut buf = vec![0u8; BUF_SIZE.min(size_hint.max(4096) as usize)];
    let mut total = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io(e)),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finalize(), total))
}

/// Maps `len` bytes of `file` from `offset` (a multiple of the page size)
/// read-only.
///
/// Mapping is the one unsafe operation in pqsync: the bytes can change under
/// the map if another process writes the file, and a process that truncates
/// it meanwhile makes reads past the new end fault. Both are the accepted
/// trade-off of every mmap-based hasher (BLAKE3's own `update_mmap`,
/// `b3sum`): a changed file is caught anyway, because the scan compares the
/// file's stat before and after hashing and hashes again when it moved.
#[allow(unsafe_code)]
fn map_window(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<memmap2::Mmap> {
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: read-only mapping of a regular file we opened; see above for
    // concurrent modification.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            HashAlgorithm::Sha256.digest(b"abc").to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            HashAlgorithm::Blake3.digest(b"abc").to_string(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(
            HashAlgorithm::Md5.digest(b"abc").to_string(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn file_hash_matches_buffer_hash_small_and_large() {
        let dir = tempfile::tempdir().unwrap();
        for (name, len) in [
            ("small", 1000usize),
            ("large", MMAP_THRESHOLD as usize + 12345),
            // Three map windows, the last one short and not page-aligned.
            ("windows", MMAP_WINDOW as usize * 2 + 4097),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let p = dir.path().join(name);
            std::fs::write(&p, &data).unwrap();
            for alg in [HashAlgorithm::Blake3, HashAlgorithm::Sha256] {
                let (h, n) = hash_file(&p, alg, len as u64).unwrap();
                assert_eq!(n, len as u64);
                assert_eq!(h, alg.digest(&data), "{name} {alg}");
            }
        }
    }

    #[test]
    fn digests_round_trip_as_lowercase_hex() {
        let hex = "00ff10ab".repeat(8);
        let d: Digest = hex.parse().unwrap();
        assert_eq!(d.to_string(), hex);
        assert_eq!(d.hex_len(), 64);
        assert_eq!(d, hex);
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{hex}\""));
        let md5: Digest = "900150983cd24fb0d6963f7d28e17f72".parse().unwrap();
        assert_eq!(md5.as_bytes().len(), 16);
        assert!(Digest::from_hex("0g").is_none());
        assert!(Digest::from_hex("AB").is_none());
        assert!(Digest::from_hex(&"0".repeat(66)).is_none());
    }
}
