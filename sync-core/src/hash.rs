//! Streaming content hashes.
//!
//! Files are hashed in bounded memory: small files through a fixed buffer,
//! large BLAKE3 files through memory maps with BLAKE3's own multi-threaded
//! tree hashing (the technique `b3sum` uses). The map is a sliding window
//! of [`MMAP_WINDOW`] bytes rather than the whole file, so hashing a 2 GiB
//! file costs 32 MiB of resident memory instead of 2 GiB, at the same
//! speed.

use std::io::Read;
use std::path::Path;

use sha2::Digest;

use crate::error::{Error, Result};
use crate::manifest::HashAlgorithm;

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

    /// The digest as a [`Digest`].
    pub fn finalize_digest(self) -> crate::manifest::Digest {
        crate::manifest::Digest::from_hex(&self.finalize_hex()).expect("hex digest")
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

    /// The lowercase hex digest.
    pub fn finalize_hex(self) -> String {
        match self {
            ContentHasher::Blake3(h) => h.finalize().to_hex().to_string(),
            ContentHasher::Sha256(h) => hex::encode(h.finalize()),
            ContentHasher::Md5(h) => hex::encode(h.finalize()),
        }
    }
}

/// Hashes a whole file. Returns the hex digest and the number of bytes read.
///
/// # Errors
/// [`Error::Io`] with the file's path.
pub fn hash_file(path: &Path, alg: HashAlgorithm, size_hint: u64) -> Result<(String, u64)> {
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
        return Ok((h.finalize().to_hex().to_string(), h.count()));
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
    Ok((hasher.finalize_hex(), total))
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

/// Hashes an in-memory buffer into a [`Digest`](crate::manifest::Digest).
pub fn digest_bytes(data: &[u8], alg: HashAlgorithm) -> crate::manifest::Digest {
    crate::manifest::Digest::from_hex(&hash_bytes(data, alg)).expect("hex digest")
}

/// Hashes an in-memory buffer.
pub fn hash_bytes(data: &[u8], alg: HashAlgorithm) -> String {
    let mut h = ContentHasher::new(alg);
    h.update(data);
    h.finalize_hex()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(
            hash_bytes(b"abc", HashAlgorithm::Sha256),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash_bytes(b"abc", HashAlgorithm::Blake3),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(
            hash_bytes(b"abc", HashAlgorithm::Md5),
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
                assert_eq!(h, hash_bytes(&data, alg), "{name} {alg}");
            }
        }
    }
}
