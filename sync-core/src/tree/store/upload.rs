//! Verified uploads: a small file in one PUT after it is hashed in memory; a
//! large one as a multipart upload that is completed only once its hash
//! checks out. Large uploads from a local directory go through
//! [`resumable`](super::resumable) instead, when the store offers its
//! low-level multipart API.

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::{
    Attribute, Attributes, PutMultipartOptions, PutOptions, PutPayload, WriteMultipart,
};

use super::{part_size_for, PartLog, StoreTree, PARTS_IN_FLIGHT};
use crate::error::{Error, Result};
use crate::layout::content_type_for;
use crate::manifest::{ContentHasher, FileEntry};

impl StoreTree {
    /// Streams bytes into an object, verified against `entry` before it
    /// becomes visible. `on_bytes` is called as bytes are sent. With a
    /// `parts_log` and a store whose multipart API the tree was given, a
    /// large upload is resumable part by part. Returns the new object's
    /// ETag, where the store reports one.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the bytes differ from the entry,
    /// [`Error::Store`] if a request fails.
    pub(crate) async fn write(
        &self,
        entry: &FileEntry,
        stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        parts_log: Option<&dyn PartLog>,
    ) -> Result<Option<String>> {
        if let Some(v) = &self.versions {
            return self
                .write_object(v.as_ref(), entry, stream, on_bytes, parts_log)
                .await;
        }
        self.write_paths(entry, stream, on_bytes, parts_log).await
    }

    /// [`StoreTree::write`] to the object named by the entry's path.
    pub(super) async fn write_paths(
        &self,
        entry: &FileEntry,
        stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        parts_log: Option<&dyn PartLog>,
    ) -> Result<Option<String>> {
        if entry.size <= self.multipart_threshold {
            return self.write_small(entry, stream, on_bytes).await;
        }
        match (&self.multipart, parts_log) {
            (Some(mp), Some(log)) => self.write_resumable(mp, entry, stream, on_bytes, log).await,
            _ => self.write_multipart(entry, stream, on_bytes).await,
        }
    }

    /// One PUT of a file held in memory, after its hash checks out.
    async fn write_small(
        &self,
        entry: &FileEntry,
        stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Option<String>> {
        let buf = collect_verified(entry, stream).await?;
        let total = buf.len() as u64;
        let opts = PutOptions {
            attributes: self.attrs(Some(entry)),
            ..Default::default()
        };
        let put = self
            .store
            .put_opts(&self.location(&entry.path), PutPayload::from(buf), opts)
            .await
            .map_err(|e| Error::store(self.display(&entry.path), e))?;
        on_bytes(total);
        Ok(put.e_tag)
    }

    /// A multipart upload through `object_store`'s [`WriteMultipart`]
    /// (equal parts, [`PARTS_IN_FLIGHT`] at a time), completed only if the
    /// bytes are the entry's and aborted otherwise.
    pub(super) async fn write_multipart(
        &self,
        entry: &FileEntry,
        stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Option<String>> {
        self.put_multipart_stream(entry, verified(entry, stream), on_bytes)
            .await
    }

    /// Streams bytes into a multipart upload to `obj`'s key, completed
    /// only if the stream ends without an error (a [`verified`] stream ends
    /// in one when its bytes are not the entry's) and aborted otherwise.
    pub(super) async fn put_multipart_stream(
        &self,
        obj: &FileEntry,
        mut stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<Option<String>> {
        let shown = self.display(&obj.path);
        let opts = PutMultipartOptions {
            attributes: self.attrs(Some(obj)),
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(&self.location(&obj.path), opts)
            .await
            .map_err(|e| Error::store(&shown, e))?;
        let mut writer =
            WriteMultipart::new_with_chunk_size(upload, part_size_for(obj.size) as usize);
        let fed: Result<()> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| Error::store(&shown, e))?;
                on_bytes(chunk.len() as u64);
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match fed {
            Ok(()) => writer
                .finish()
                .await
                .map(|put| put.e_tag)
                .map_err(|e| Error::store(&shown, e)),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// The attributes an uploaded object carries: its content type and,
    /// for an entry, `pqsync-hash: <alg>:<hex>` (none on stores that do not
    /// keep attributes).
    pub(super) fn attrs(&self, entry: Option<&FileEntry>) -> Attributes {
        let mut a = Attributes::new();
        if self.attributes {
            let content_type = match entry {
                Some(e) => e
                    .content_type
                    .as_deref()
                    .unwrap_or_else(|| content_type_for(&e.path))
                    .to_string(),
                None => "application/json".to_string(),
            };
            a.insert(Attribute::ContentType, content_type.into());
            if let Some(e) = entry {
                a.insert(
                    Attribute::Metadata(self.hash_key.into()),
                    e.tagged_hash().into(),
                );
            }
        }
        a
    }
}

/// A small file's bytes, read into memory and checked against `entry`.
///
/// # Errors
/// [`Error::Mismatch`] if they differ from the entry; stream errors.
pub(super) async fn collect_verified(
    entry: &FileEntry,
    mut stream: BoxStream<'static, Result<Bytes>>,
) -> Result<Bytes> {
    let mut hasher = ContentHasher::new(entry.hash_algorithm);
    let mut total = 0u64;
    let mut buf = BytesMut::with_capacity(entry.size as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        total += chunk.len() as u64;
        if total > entry.size {
            return Err(entry.too_long(total));
        }
        hasher.update(&chunk);
        buf.extend_from_slice(&chunk);
    }
    entry.verify(total, hasher)?;
    Ok(buf.freeze())
}

/// A stream's bytes, which must come to `len`.
///
/// # Errors
/// Stream errors; [`Error::Mismatch`] for another length.
pub(super) async fn collect_verified_len(
    mut stream: BoxStream<'static, Result<Bytes>>,
    len: u64,
) -> Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len as usize);
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk?);
    }
    if buf.len() as u64 != len {
        return Err(Error::Mismatch {
            path: "sealed object".into(),
            what: "size",
            expected: len.to_string(),
            actual: buf.len().to_string(),
            retryable: false,
        });
    }
    Ok(buf.freeze())
}

/// `stream`, checked against `entry` as it passes: a stream that ends with
/// other bytes than the entry's ends in [`Error::Mismatch`] instead.
pub(super) fn verified(
    entry: &FileEntry,
    stream: BoxStream<'static, Result<bytes::Bytes>>,
) -> BoxStream<'static, Result<bytes::Bytes>> {
    let e = entry.clone();
    let hasher = crate::manifest::ContentHasher::new(e.hash_algorithm);
    futures::stream::unfold(
        (stream, Some((e, hasher, 0u64))),
        |(mut s, st)| async move {
            let (e, mut h, mut n) = st?;
            match s.next().await {
                Some(Ok(b)) => {
                    n += b.len() as u64;
                    if n > e.size {
                        return Some((Err(e.too_long(n)), (s, None)));
                    }
                    h.update(&b);
                    Some((Ok(b), (s, Some((e, h, n)))))
                }
                Some(Err(err)) => Some((Err(err), (s, None))),
                None => match e.verify(n, h) {
                    Ok(()) => None,
                    Err(err) => Some((Err(err), (s, None))),
                },
            }
        },
    )
    .boxed()
}
