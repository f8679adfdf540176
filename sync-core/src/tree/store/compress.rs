//! zstd over byte streams, for large files a snapshot tree keeps
//! compressed: one zstd frame per object, produced and read a piece at a
//! time so memory does not grow with the file.

use std::io::Write;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;

use crate::error::{Error, Result};

/// The compression level objects are written with.
pub(crate) const LEVEL: i32 = 3;

/// Whether `sample` (the start of a file) compresses well enough for the
/// whole file to be stored compressed: by at least an eighth.
pub(crate) fn pays(sample: &[u8]) -> bool {
    zstd::bulk::compress(sample, LEVEL).is_ok_and(|z| z.len() + sample.len() / 8 < sample.len())
}

/// `plain` as one zstd frame, streamed.
pub(crate) fn compress_stream(
    plain: BoxStream<'static, Result<Bytes>>,
) -> BoxStream<'static, Result<Bytes>> {
    let encoder = zstd::stream::write::Encoder::new(Vec::new(), LEVEL).map_err(io_err);
    futures::stream::unfold((plain, Some(encoder)), |(mut input, encoder)| async move {
        let mut enc = match encoder? {
            Ok(e) => e,
            Err(e) => return Some((Err(e), (input, None))),
        };
        loop {
            match input.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = enc.write_all(&chunk) {
                        return Some((Err(io_err(e)), (input, None)));
                    }
                    if !enc.get_ref().is_empty() {
                        let out = std::mem::take(enc.get_mut());
                        return Some((Ok(Bytes::from(out)), (input, Some(Ok(enc)))));
                    }
                }
                Some(Err(e)) => return Some((Err(e), (input, None))),
                None => {
                    return match enc.finish() {
                        Ok(rest) if rest.is_empty() => None,
                        Ok(rest) => Some((Ok(Bytes::from(rest)), (input, None))),
                        Err(e) => Some((Err(io_err(e)), (input, None))),
                    }
                }
            }
        }
    })
    .boxed()
}

/// The plaintext of a zstd frame streamed from `stored`; an error names
/// `what`.
pub(crate) fn decompress_stream(
    stored: BoxStream<'static, Result<Bytes>>,
    what: String,
) -> BoxStream<'static, Result<Bytes>> {
    let damaged = move |e: std::io::Error| {
        Error::Repository {
        url: what.clone(),
        reason: format!(
            "does not decompress ({e}); it is damaged: run `pqsync check --read-data` on the repository"
        ),
    }
    };
    let decoder = zstd::stream::write::Decoder::new(Vec::new());
    futures::stream::unfold(
        (stored, decoder.ok(), damaged),
        |(mut input, decoder, damaged)| async move {
            let mut dec = decoder?;
            loop {
                match input.next().await {
                    Some(Ok(chunk)) => {
                        if let Err(e) = dec.write_all(&chunk) {
                            return Some((Err(damaged(e)), (input, None, damaged)));
                        }
                        if !dec.get_ref().is_empty() {
                            let out = std::mem::take(dec.get_mut());
                            return Some((Ok(Bytes::from(out)), (input, Some(dec), damaged)));
                        }
                    }
                    Some(Err(e)) => return Some((Err(e), (input, None, damaged))),
                    None => {
                        if let Err(e) = dec.flush() {
                            return Some((Err(damaged(e)), (input, None, damaged)));
                        }
                        let rest = std::mem::take(dec.get_mut());
                        return (!rest.is_empty())
                            .then(|| (Ok(Bytes::from(rest)), (input, None, damaged)));
                    }
                }
            }
        },
    )
    .boxed()
}

fn io_err(e: std::io::Error) -> Error {
    Error::Io {
        path: "zstd".into(),
        source: e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn streams_round_trip_and_damage_is_named() {
        let plain: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let pieces: Vec<Result<Bytes>> = plain
            .chunks(100_000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let stored: Vec<Bytes> = compress_stream(futures::stream::iter(pieces).boxed())
            .map(|r| r.unwrap())
            .collect()
            .await;
        let all: Vec<u8> = stored.concat();
        assert!(all.len() * 8 < plain.len());
        assert_eq!(zstd::decode_all(&all[..]).unwrap(), plain);
        let back: Vec<u8> = decompress_stream(
            futures::stream::iter(stored.into_iter().map(Ok)).boxed(),
            "x".into(),
        )
        .map(|r| r.unwrap())
        .collect::<Vec<Bytes>>()
        .await
        .concat();
        assert_eq!(back, plain);
        let mut bad = all.clone();
        bad[all.len() / 2] ^= 0xff;
        let got: Vec<Result<Bytes>> = decompress_stream(
            futures::stream::iter([Ok(Bytes::from(bad))]).boxed(),
            "obj".into(),
        )
        .collect()
        .await;
        assert!(
            got.iter().any(|r| r.is_err()) || {
                let out: Vec<u8> = got.into_iter().flat_map(|r| r.unwrap().to_vec()).collect();
                out != plain
            }
        );
        assert!(pays(&plain[..1 << 20]));
        let noise: Vec<u8> = (0..1 << 20).map(|_| rand::random::<u8>()).collect();
        assert!(!pays(&noise));
    }
}
