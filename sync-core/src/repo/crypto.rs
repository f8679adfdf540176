//! Encryption of a repository: a random master key wrapped under keys
//! derived from passwords (Argon2id), objects sealed with
//! XChaCha20-Poly1305 in 64 KiB chunks (a counter nonce and a last-chunk
//! flag, as in age's STREAM), and object names keyed by BLAKE3 so they say
//! nothing of the content. The byte layouts are in `docs/repository.md`.

use bytes::{Bytes, BytesMut};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Plaintext bytes per sealed chunk.
pub const CHUNK: usize = 64 * 1024;
/// The header: 4 magic bytes, a version byte and a 19-byte nonce prefix.
const MAGIC: &[u8; 4] = b"pqsE";
const HEADER: usize = 24;
const TAG: usize = 16;

/// The encryption parameters a repository's `config` records.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionParams {
    /// `xchacha20poly1305-stream`.
    pub cipher: String,
    /// Plaintext bytes per chunk (65536).
    pub chunk_size: usize,
    /// `argon2id`.
    pub kdf: String,
}

impl EncryptionParams {
    /// The parameters pqsync writes.
    pub fn current() -> Self {
        EncryptionParams {
            cipher: "xchacha20poly1305-stream".into(),
            chunk_size: CHUNK,
            kdf: "argon2id".into(),
        }
    }
}

/// The unlocked keys of a repository.
#[derive(Clone)]
pub struct Keys {
    data: [u8; 32],
    names: [u8; 32],
    master: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

impl Keys {
    /// Fresh random keys for a new repository.
    pub fn generate() -> Self {
        Keys::from_master(rand::random())
    }

    fn from_master(master: [u8; 32]) -> Self {
        Keys {
            data: blake3::derive_key("pqsync 2026-12 repository data key", &master),
            names: blake3::derive_key("pqsync 2026-12 repository object names", &master),
            master,
        }
    }

    /// The name of the object holding content whose plaintext hash is
    /// `digest`: a keyed BLAKE3 hash, so names reveal nothing of the
    /// plaintext, yet equal content gets one name.
    pub fn content_name(&self, digest: &[u8]) -> String {
        blake3::keyed_hash(&self.names, digest).to_hex().to_string()
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&self.data).into())
    }

    /// Seals `plain` for the object `aad` names.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut s = Sealer::new(self, aad);
        let mut out = Vec::with_capacity(sealed_size(plain.len() as u64) as usize);
        out.extend_from_slice(&s.header());
        let mut chunks = plain.chunks(CHUNK).peekable();
        if chunks.peek().is_none() {
            out.extend_from_slice(&s.chunk(&[], true));
        }
        while let Some(c) = chunks.next() {
            out.extend_from_slice(&s.chunk(c, chunks.peek().is_none()));
        }
        out
    }

    /// Opens what [`Keys::seal`] sealed for `aad`.
    ///
    /// # Errors
    /// [`Error::Repository`] naming `what` and whether it was truncated or
    /// altered.
    pub fn open(&self, aad: &[u8], sealed: &[u8], what: &str) -> Result<Vec<u8>> {
        let mut o = Opener::new(self, aad, what);
        let mut out = Vec::with_capacity(sealed.len());
        o.push(sealed, &mut out)?;
        o.finish(&mut out)?;
        Ok(out)
    }

    /// A stream of the plaintext of a sealed stream, one chunk in memory
    /// at a time; an error names `what`.
    pub fn open_stream(
        &self,
        aad: Vec<u8>,
        sealed: BoxStream<'static, Result<Bytes>>,
        what: String,
    ) -> BoxStream<'static, Result<Bytes>> {
        let keys = self.clone();
        let state = (sealed, Some(Opener::new(&keys, &aad, &what)));
        futures::stream::unfold(state, |(mut input, opener)| async move {
            let mut opener = opener?;
            loop {
                let mut out = Vec::new();
                match input.next().await {
                    Some(Ok(b)) => {
                        if let Err(e) = opener.push(&b, &mut out) {
                            return Some((Err(e), (input, None)));
                        }
                        if !out.is_empty() {
                            return Some((Ok(Bytes::from(out)), (input, Some(opener))));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (input, None))),
                    None => {
                        return match opener.finish(&mut out) {
                            Ok(()) if out.is_empty() => None,
                            Ok(()) => Some((Ok(Bytes::from(out)), (input, None))),
                            Err(e) => Some((Err(e), (input, None))),
                        }
                    }
                }
            }
        })
        .boxed()
    }

    /// A stream of `plain` sealed for `aad`, one chunk in memory at a time.
    pub fn seal_stream(
        &self,
        aad: Vec<u8>,
        plain: BoxStream<'static, Result<Bytes>>,
    ) -> BoxStream<'static, Result<Bytes>> {
        let sealer = Sealer::new(self, &aad);
        let state = (plain, Some((sealer, BytesMut::new(), false)));
        futures::stream::unfold(state, |(mut input, st)| async move {
            let (mut s, mut buf, started) = st?;
            let mut out = Vec::new();
            if !started {
                out.extend_from_slice(&s.header());
            }
            loop {
                // A chunk goes out once more bytes follow it, so the last
                // one is known when the input ends.
                while buf.len() > CHUNK {
                    let c = buf.split_to(CHUNK);
                    out.extend_from_slice(&s.chunk(&c, false));
                }
                if !out.is_empty() {
                    return Some((Ok(Bytes::from(out)), (input, Some((s, buf, true)))));
                }
                match input.next().await {
                    Some(Ok(b)) => buf.extend_from_slice(&b),
                    Some(Err(e)) => return Some((Err(e), (input, None))),
                    None => {
                        out.extend_from_slice(&s.chunk(&buf, true));
                        return Some((Ok(Bytes::from(out)), (input, None)));
                    }
                }
            }
        })
        .boxed()
    }

    /// Wraps the master key under `password` (Argon2id, then
    /// XChaCha20-Poly1305).
    pub fn wrap(&self, password: &[u8]) -> KeyFile {
        let salt: [u8; 16] = rand::random();
        let params = KdfParams::default();
        let kek = params.derive(password, &salt);
        let nonce: [u8; 24] = rand::random();
        let wrapped = XChaCha20Poly1305::new((&kek).into())
            .encrypt(XNonce::from_slice(&nonce), self.master.as_slice())
            .expect("sealing 32 bytes cannot fail");
        KeyFile {
            kdf: params,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            wrapped: hex::encode(wrapped),
            created_at: crate::manifest::now_iso(),
            host: crate::sync::host_name(),
        }
    }

    /// Unwraps a key file with `password`; `None` when it does not open.
    pub fn unwrap(file: &KeyFile, password: &[u8]) -> Option<Keys> {
        let salt = hex::decode(&file.salt).ok()?;
        let nonce = hex::decode(&file.nonce).ok()?;
        let wrapped = hex::decode(&file.wrapped).ok()?;
        if nonce.len() != 24 {
            return None;
        }
        let kek = file.kdf.derive(password, &salt);
        let master = XChaCha20Poly1305::new((&kek).into())
            .decrypt(XNonce::from_slice(&nonce), wrapped.as_slice())
            .ok()?;
        let master: [u8; 32] = master.try_into().ok()?;
        Some(Keys::from_master(master))
    }
}

/// The size of `n` plaintext bytes once sealed.
pub fn sealed_size(n: u64) -> u64 {
    let chunks = n.div_ceil(CHUNK as u64).max(1);
    HEADER as u64 + n + TAG as u64 * chunks
}

/// Argon2id's cost parameters.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KdfParams {
    /// `argon2id`.
    pub algorithm: String,
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        KdfParams {
            algorithm: "argon2id".into(),
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    fn derive(&self, password: &[u8], salt: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let params =
            argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
                .unwrap_or_default();
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password_into(password, salt, &mut out)
            .expect("a 32-byte output and a 16-byte salt are valid");
        out
    }
}

/// One wrapping of the master key: `keys/<id>`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyFile {
    /// How the wrapping key is derived from the password.
    pub kdf: KdfParams,
    /// The Argon2id salt (hex).
    pub salt: String,
    /// The XChaCha20-Poly1305 nonce (hex, 24 bytes).
    pub nonce: String,
    /// The sealed master key (hex).
    pub wrapped: String,
    /// When it was made.
    pub created_at: String,
    /// Where it was made.
    pub host: String,
}

/// Seals one object's chunks.
struct Sealer {
    cipher: XChaCha20Poly1305,
    prefix: [u8; 19],
    counter: u32,
    aad: Vec<u8>,
}

impl Sealer {
    fn new(keys: &Keys, aad: &[u8]) -> Self {
        Sealer {
            cipher: keys.cipher(),
            prefix: rand::random(),
            counter: 0,
            aad: aad.to_vec(),
        }
    }

    fn header(&self) -> [u8; HEADER] {
        let mut h = [0u8; HEADER];
        h[..4].copy_from_slice(MAGIC);
        h[4] = 1;
        h[5..].copy_from_slice(&self.prefix);
        h
    }

    fn chunk(&mut self, plain: &[u8], last: bool) -> Vec<u8> {
        let nonce = nonce(&self.prefix, self.counter, last);
        self.counter += 1;
        self.cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &self.aad,
                },
            )
            .expect("sealing a chunk cannot fail")
    }
}

fn nonce(prefix: &[u8; 19], counter: u32, last: bool) -> [u8; 24] {
    let mut n = [0u8; 24];
    n[..19].copy_from_slice(prefix);
    n[19..23].copy_from_slice(&counter.to_be_bytes());
    n[23] = u8::from(last);
    n
}

/// Opens one object's chunks as they arrive.
struct Opener {
    cipher: XChaCha20Poly1305,
    prefix: Option<[u8; 19]>,
    counter: u32,
    aad: Vec<u8>,
    buf: Vec<u8>,
    what: String,
}

impl Opener {
    fn new(keys: &Keys, aad: &[u8], what: &str) -> Self {
        Opener {
            cipher: keys.cipher(),
            prefix: None,
            counter: 0,
            aad: aad.to_vec(),
            buf: Vec::new(),
            what: what.to_string(),
        }
    }

    fn err(&self, reason: &str) -> Error {
        Error::Repository {
            url: self.what.clone(),
            reason: format!("{reason}; run `pqsync check --read-data` on the repository"),
        }
    }

    fn push(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.prefix.is_none() {
            if self.buf.len() < HEADER {
                return Ok(());
            }
            if &self.buf[..4] != MAGIC || self.buf[4] != 1 {
                return Err(
                    self.err("is not a sealed object of this repository format (tampered with?)")
                );
            }
            self.prefix = Some(self.buf[5..HEADER].try_into().expect("19 bytes"));
            self.buf.drain(..HEADER);
        }
        // A full chunk with more bytes after it is not the last one.
        while self.buf.len() > CHUNK + TAG {
            let c: Vec<u8> = self.buf.drain(..CHUNK + TAG).collect();
            let plain = self.open_chunk(&c, false)?;
            out.extend_from_slice(&plain);
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.prefix.is_none() {
            return Err(self.err("is truncated: its header is incomplete"));
        }
        let c = std::mem::take(&mut self.buf);
        if c.len() < TAG {
            return Err(self.err("is truncated: its last chunk is missing"));
        }
        match self.open_chunk(&c, true) {
            Ok(plain) => {
                out.extend_from_slice(&plain);
                Ok(())
            }
            Err(e) => {
                // It opens as an inner chunk: chunks after it were cut off.
                self.counter -= 1;
                if c.len() == CHUNK + TAG && self.open_chunk(&c, false).is_ok() {
                    return Err(
                        self.err("is truncated: chunks after the last one read are missing")
                    );
                }
                Err(e)
            }
        }
    }

    fn open_chunk(&mut self, c: &[u8], last: bool) -> Result<Vec<u8>> {
        let nonce = nonce(&self.prefix.expect("header read"), self.counter, last);
        let i = self.counter;
        self.counter += 1;
        self.cipher
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: c,
                    aad: &self.aad,
                },
            )
            .map_err(|_| {
                self.err(&format!(
                    "chunk {i} does not authenticate: the object was altered, its chunks reordered, or it belongs elsewhere"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    fn stream_of(bytes: Vec<u8>, piece: usize) -> BoxStream<'static, Result<Bytes>> {
        let pieces: Vec<Result<Bytes>> = bytes
            .chunks(piece.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(pieces).boxed()
    }

    async fn collect(s: BoxStream<'static, Result<Bytes>>) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut s = s;
        while let Some(b) = s.next().await {
            out.extend_from_slice(&b?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn round_trips_whole_and_streamed() {
        let k = Keys::generate();
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 200_000] {
            let plain = data(n);
            let sealed = k.seal(b"obj", &plain);
            assert_eq!(sealed.len() as u64, sealed_size(n as u64), "n={n}");
            assert_eq!(k.open(b"obj", &sealed, "x").unwrap(), plain);
            let streamed = collect(k.seal_stream(b"obj".to_vec(), stream_of(plain.clone(), 7000)))
                .await
                .unwrap();
            assert_eq!(streamed.len(), sealed.len());
            let opened =
                collect(k.open_stream(b"obj".to_vec(), stream_of(streamed, 5000), "x".into()))
                    .await
                    .unwrap();
            assert_eq!(opened, plain, "n={n}");
        }
    }

    #[test]
    fn tampering_truncation_reordering_and_the_wrong_object_are_caught() {
        let k = Keys::generate();
        let plain = data(3 * CHUNK + 100);
        let sealed = k.seal(b"obj", &plain);
        let err = |e: Error| e.to_string();

        let mut flipped = sealed.clone();
        flipped[HEADER + CHUNK + 40] ^= 1;
        let e = err(k.open(b"obj", &flipped, "objects/ab/cd").unwrap_err());
        assert!(e.contains("objects/ab/cd") && e.contains("chunk 1"), "{e}");

        // Cut at a chunk boundary: every remaining chunk is whole.
        let cut = &sealed[..HEADER + 2 * (CHUNK + TAG)];
        let e = err(k.open(b"obj", cut, "o").unwrap_err());
        assert!(e.contains("truncated"), "{e}");
        let e = err(k.open(b"obj", &sealed[..10], "o").unwrap_err());
        assert!(e.contains("truncated"), "{e}");

        let mut swapped = sealed.clone();
        let (a, b) = (HEADER, HEADER + CHUNK + TAG);
        let first: Vec<u8> = swapped[a..b].to_vec();
        let second: Vec<u8> = swapped[b..b + CHUNK + TAG].to_vec();
        swapped[a..b].copy_from_slice(&second);
        swapped[b..b + CHUNK + TAG].copy_from_slice(&first);
        let e = err(k.open(b"obj", &swapped, "o").unwrap_err());
        assert!(e.contains("chunk 0"), "{e}");

        assert!(k.open(b"another", &sealed, "o").is_err());
        assert!(Keys::generate().open(b"obj", &sealed, "o").is_err());
    }

    #[test]
    fn passwords_wrap_the_master_key() {
        let k = Keys::generate();
        let file = k.wrap(b"correct horse");
        let back = Keys::unwrap(&file, b"correct horse").unwrap();
        assert_eq!(back.content_name(b"x"), k.content_name(b"x"));
        assert!(Keys::unwrap(&file, b"wrong").is_none());
        // Names depend on the key, not only on the content.
        assert_ne!(Keys::generate().content_name(b"x"), k.content_name(b"x"));
    }
}
