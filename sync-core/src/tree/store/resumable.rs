//! Resumable multipart uploads: the upload id and every finished part, with
//! the BLAKE3 digest of the bytes it carried, are logged through a
//! [`PartLog`], so an upload interrupted by a crash, a kill or a failed
//! attempt continues from its last finished part.
//!
//! A part is reused only when this run's bytes for it have the digest the
//! log recorded: a file edited while an earlier run sent it (and put back
//! since) has its stale parts sent again, so the completed object is exactly
//! the bytes this run read and checked against the manifest entry.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::StreamExt;
use object_store::multipart::MultipartStore;
use object_store::multipart::PartId;
use object_store::{PutMultipartOptions, PutPayload};

use super::{part_size_for, StoreTree, RESUMABLE_PARTS_IN_FLIGHT};
use crate::error::{Error, Result};
use crate::manifest::{ContentHasher, FileEntry};

/// Progress of one resumable multipart upload, saved after every part so a
/// later run can continue it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PartRecord {
    /// The file.
    pub path: String,
    /// `"<alg>:<hex>"` of the content being uploaded.
    pub hash: String,
    /// The store's upload id.
    pub upload_id: String,
    /// Size of every part but the last.
    pub part_size: u64,
    /// Finished parts: index → the store's part id (ETag).
    pub parts: std::collections::BTreeMap<usize, String>,
    /// Finished parts: index → hex BLAKE3 of the bytes sent. A part without
    /// one (logged by an older pqsync) is sent again.
    #[serde(default)]
    pub digests: std::collections::BTreeMap<usize, String>,
}

impl PartRecord {
    /// Whether part `idx` was sent with exactly the bytes `data`.
    fn holds(&self, idx: usize, data: &[u8]) -> bool {
        self.parts.contains_key(&idx)
            && self
                .digests
                .get(&idx)
                .is_some_and(|d| *d == blake3::hash(data).to_hex().as_str())
    }
}

/// Where resumable uploads keep their [`PartRecord`]s.
pub(crate) trait PartLog: Send + Sync {
    /// The record for a path, if an earlier attempt left one.
    fn load(&self, path: &str) -> Option<PartRecord>;
    /// Saves a record; called after every finished part.
    fn save(&self, record: &PartRecord);
    /// Forgets a path's record (completed or abandoned).
    fn remove(&self, path: &str);
}

impl StoreTree {
    /// A multipart upload through the store's low-level API: the upload id
    /// and every finished part are logged, so an upload interrupted by a
    /// crash, a kill or a failed attempt continues from its last finished
    /// part instead of starting over. Parts already sent are read and hashed
    /// again (the hash covers the whole file) but not re-sent.
    pub(super) async fn write_resumable(
        &self,
        mp: &Arc<dyn MultipartStore>,
        entry: &FileEntry,
        stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        log: &dyn PartLog,
    ) -> Result<Option<String>> {
        let rel = entry.path.as_str();
        let part_size = part_size_for(entry.size);
        let fresh = match log.load(rel) {
            Some(r) if r.hash == entry.tagged_hash() && r.part_size == part_size => Ok(r),
            Some(stale) => {
                let _ = self.abort_upload(rel, &stale.upload_id).await;
                log.remove(rel);
                self.new_record(mp, entry, part_size, log).await
            }
            None => self.new_record(mp, entry, part_size, log).await,
        };
        let record = match fresh {
            Ok(r) => r,
            // A store whose low-level multipart API cannot carry the
            // object's attributes (Azure's block lists) refuses before any
            // request: its ordinary multipart upload, which can, is used
            // instead, and starts over if interrupted.
            Err(Error::Store {
                source:
                    object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. },
                ..
            }) => return self.write_multipart(entry, stream, on_bytes).await,
            Err(e) => return Err(e),
        };
        // A run killed between completing the upload and forgetting its
        // record leaves every part recorded: the object may already be there.
        if record.parts.len() as u64 == entry.size.div_ceil(part_size)
            && self.has_content(entry).await
        {
            log.remove(rel);
            return Ok(None);
        }
        let mut upload = Upload {
            mp,
            loc: self.location(rel),
            shown: self.display(rel),
            record,
            log,
            on_bytes,
            in_flight: FuturesUnordered::new(),
            gone: false,
            reused: 0,
            resent: 0,
        };
        let fed = upload.feed(entry, stream).await;
        // Record whatever parts did finish, so the next attempt or run does
        // not send them again.
        let drained = upload.drain().await;
        if upload.resent > 0 {
            tracing::info!(
                "{}: {} of the parts an earlier run sent held other bytes and were sent again ({} reused)",
                upload.shown,
                upload.resent,
                upload.reused
            );
        }
        let (total, hasher) = fed?;
        drained?;
        if let Err(e) = entry.verify(total, hasher) {
            let _ = self.abort_upload(rel, &upload.record.upload_id).await;
            log.remove(rel);
            return Err(e);
        }
        self.complete(&upload, entry).await
    }

    /// Completes an upload whose parts are all sent and whose bytes checked
    /// out.
    /// Returns the object's ETag, where the store reports one.
    async fn complete(&self, upload: &Upload<'_>, entry: &FileEntry) -> Result<Option<String>> {
        let parts: Vec<PartId> = upload
            .record
            .parts
            .values()
            .map(|c| PartId {
                content_id: c.clone(),
            })
            .collect();
        let done = upload
            .mp
            .complete_multipart(&upload.loc, &upload.record.upload_id, parts)
            .await;
        // Whatever happens, this upload is finished with: completed, or gone
        // or unusable (the next attempt starts a fresh one).
        upload.log.remove(&entry.path);
        match done {
            Ok(put) => Ok(put.e_tag),
            // Completed already (a lost response, or a run killed while its
            // completion was under way): the object carries this content's
            // hash, possibly only once the server has finished assembling it.
            Err(_) if self.appears_with_content(entry).await => Ok(None),
            Err(e) => Err(Error::Store {
                path: upload.shown.clone(),
                retryable: true,
                source: e,
            }),
        }
    }

    async fn new_record(
        &self,
        mp: &Arc<dyn MultipartStore>,
        entry: &FileEntry,
        part_size: u64,
        log: &dyn PartLog,
    ) -> Result<PartRecord> {
        let rel = entry.path.as_str();
        let opts = PutMultipartOptions {
            attributes: self.attrs(Some(entry)),
            ..Default::default()
        };
        let upload_id = mp
            .create_multipart_opts(&self.location(rel), opts)
            .await
            .map_err(|e| Error::store(self.display(rel), e))?;
        let record = PartRecord {
            path: rel.to_string(),
            hash: entry.tagged_hash(),
            upload_id,
            part_size,
            parts: Default::default(),
            digests: Default::default(),
        };
        // Logged before any part is sent, so a crash never orphans it.
        log.save(&record);
        Ok(record)
    }
}

/// One resumable upload in progress.
struct Upload<'a> {
    mp: &'a Arc<dyn MultipartStore>,
    loc: object_store::path::Path,
    shown: String,
    record: PartRecord,
    log: &'a dyn PartLog,
    on_bytes: &'a (dyn Fn(u64) + Send + Sync),
    in_flight: FuturesUnordered<tokio::task::JoinHandle<PartResult>>,
    /// The store no longer knows the upload: nothing more is recorded.
    gone: bool,
    /// Recorded parts reused, and recorded parts sent again because this
    /// run's bytes differ.
    reused: usize,
    resent: usize,
}

impl Upload<'_> {
    /// Reads the whole stream, hashing it and cutting it into parts; sends
    /// each part the record does not hold yet. Returns the bytes read and
    /// their hash.
    async fn feed(
        &mut self,
        entry: &FileEntry,
        mut stream: BoxStream<'static, Result<Bytes>>,
    ) -> Result<(u64, ContentHasher)> {
        let part_size = self.record.part_size as usize;
        let mut hasher = ContentHasher::new(entry.hash_algorithm);
        let mut total = 0u64;
        let mut idx = 0usize;
        let mut part = BytesMut::with_capacity(part_size);
        while let Some(chunk) = stream.next().await {
            let mut chunk = chunk?;
            total += chunk.len() as u64;
            if total > entry.size {
                return Err(entry.too_long(total));
            }
            hasher.update(&chunk);
            while !chunk.is_empty() {
                let take = (part_size - part.len()).min(chunk.len());
                part.extend_from_slice(&chunk.split_to(take));
                if part.len() == part_size {
                    let full = std::mem::replace(&mut part, BytesMut::with_capacity(part_size));
                    self.send(idx, full.freeze()).await?;
                    idx += 1;
                }
            }
        }
        if !part.is_empty() {
            self.send(idx, part.freeze()).await?;
        }
        Ok((total, hasher))
    }

    /// Starts sending part `idx` unless the record holds it with these very
    /// bytes, first waiting until fewer than [`RESUMABLE_PARTS_IN_FLIGHT`]
    /// are running. A recorded part whose bytes differ is sent again (the
    /// store keeps the last upload of a part number).
    async fn send(&mut self, idx: usize, data: Bytes) -> Result<()> {
        if self.record.holds(idx, &data) {
            self.reused += 1;
            return Ok(());
        }
        if self.record.parts.contains_key(&idx) {
            self.resent += 1;
        }
        while self.in_flight.len() >= RESUMABLE_PARTS_IN_FLIGHT {
            if let Some(done) = next_part(&mut self.in_flight, &self.shown).await? {
                self.finished(done)?;
            }
        }
        let (mp, loc, id) = (
            self.mp.clone(),
            self.loc.clone(),
            self.record.upload_id.clone(),
        );
        let len = data.len() as u64;
        self.in_flight.push(tokio::spawn(async move {
            let digest = blake3::hash(&data).to_hex().to_string();
            let r = mp.put_part(&loc, &id, idx, PutPayload::from(data)).await;
            (idx, len, digest, r)
        }));
        Ok(())
    }

    /// Records a part that finished (or says why it did not).
    fn finished(&mut self, (i, len, digest, r): PartResult) -> Result<()> {
        match r {
            Ok(pid) => {
                self.record.parts.insert(i, pid.content_id);
                self.record.digests.insert(i, digest);
                if !self.gone {
                    self.log.save(&self.record);
                }
                (self.on_bytes)(len);
                Ok(())
            }
            Err(e @ object_store::Error::NotFound { .. }) => {
                // The upload is gone (aborted or expired): start over.
                self.gone = true;
                self.log.remove(&self.record.path);
                Err(Error::Store {
                    path: self.shown.clone(),
                    retryable: true,
                    source: e,
                })
            }
            Err(e) => Err(Error::store(&self.shown, e)),
        }
    }

    /// Waits for every part in flight, recording each that finished; the
    /// first failure is returned once all have settled.
    async fn drain(&mut self) -> Result<()> {
        let mut first = Ok(());
        loop {
            let done = match next_part(&mut self.in_flight, &self.shown).await {
                Ok(Some(done)) => self.finished(done),
                Ok(None) => return first,
                Err(e) => Err(e),
            };
            if let (Err(e), true) = (done, first.is_ok()) {
                first = Err(e);
            }
        }
    }
}

/// A finished part: its index, length, the digest of its bytes, and the
/// store's answer.
type PartResult = (usize, u64, String, object_store::Result<PartId>);

/// Waits for the next part in flight to finish; `None` when none is.
async fn next_part(
    in_flight: &mut FuturesUnordered<tokio::task::JoinHandle<PartResult>>,
    shown: &str,
) -> Result<Option<PartResult>> {
    match in_flight.next().await {
        Some(done) => done
            .map(Some)
            .map_err(|e| Error::task(format!("uploading a part of {shown}"), e)),
        None => Ok(None),
    }
}
