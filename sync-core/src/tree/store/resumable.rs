//! Resumable multipart uploads: the upload id and every finished part are
//! logged through a [`PartLog`], so an upload interrupted by a crash, a kill
//! or a failed attempt continues from its last finished part.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, FuturesUnordered};
use futures::StreamExt;
use object_store::multipart::MultipartStore;
use object_store::{PutMultipartOptions, PutPayload};

use super::{part_size_for, StoreTree, RESUMABLE_PARTS_IN_FLIGHT};
use crate::error::{Error, Result};
use crate::manifest::{ContentHasher, FileEntry};

/// Progress of one resumable multipart upload, saved after every part so a
/// later run can continue it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PartRecord {
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
}

/// Where resumable uploads keep their [`PartRecord`]s.
pub trait PartLog: Send + Sync {
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
        mut stream: BoxStream<'static, Result<Bytes>>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        log: &dyn PartLog,
    ) -> Result<()> {
        let rel = entry.path.as_str();
        let shown = self.display(rel);
        let loc = self.location(rel);
        let part_size = part_size_for(entry.size);
        let tagged = entry.tagged_hash();
        let mut record = match log.load(rel) {
            Some(r) if r.hash == tagged && r.part_size == part_size => r,
            Some(stale) => {
                let _ = self.abort_upload(rel, &stale.upload_id).await;
                log.remove(rel);
                self.new_record(mp, entry, part_size, log).await?
            }
            None => self.new_record(mp, entry, part_size, log).await?,
        };
        // A run killed between completing the upload and forgetting its
        // record leaves every part recorded: the object may already be there.
        if record.parts.len() as u64 == entry.size.div_ceil(part_size)
            && self.has_content(entry).await
        {
            log.remove(rel);
            return Ok(());
        }
        let mut hasher = ContentHasher::new(entry.hash_algorithm);
        let mut total = 0u64;
        let mut idx = 0usize;
        let mut part = BytesMut::with_capacity(part_size as usize);
        let mut in_flight = FuturesUnordered::new();
        let id = record.upload_id.clone();
        let send = |idx: usize, data: Bytes| {
            let mp = mp.clone();
            let loc = loc.clone();
            let id = id.clone();
            let len = data.len() as u64;
            tokio::spawn(async move {
                let r = mp.put_part(&loc, &id, idx, PutPayload::from(data)).await;
                (idx, len, r)
            })
        };
        let finish = |done: (
            usize,
            u64,
            object_store::Result<object_store::multipart::PartId>,
        ),
                      record: &mut PartRecord|
         -> Result<()> {
            let (i, len, r) = done;
            match r {
                Ok(pid) => {
                    record.parts.insert(i, pid.content_id);
                    log.save(record);
                    on_bytes(len);
                    Ok(())
                }
                Err(e @ object_store::Error::NotFound { .. }) => {
                    // The upload is gone (aborted or expired): start over.
                    log.remove(rel);
                    Err(Error::Store {
                        path: shown.clone(),
                        retryable: true,
                        source: e,
                    })
                }
                Err(e) => Err(Error::store(&shown, e)),
            }
        };
        let sent: Result<()> = async {
            loop {
                let chunk = stream.next().await;
                let end = chunk.is_none();
                if let Some(chunk) = chunk {
                    let mut chunk = chunk?;
                    total += chunk.len() as u64;
                    if total > entry.size {
                        return Err(entry.too_long(total));
                    }
                    hasher.update(&chunk);
                    while !chunk.is_empty() {
                        let take = (part_size as usize - part.len()).min(chunk.len());
                        part.extend_from_slice(&chunk.split_to(take));
                        if part.len() == part_size as usize {
                            let full = std::mem::replace(
                                &mut part,
                                BytesMut::with_capacity(part_size as usize),
                            );
                            if !record.parts.contains_key(&idx) {
                                while in_flight.len() >= RESUMABLE_PARTS_IN_FLIGHT {
                                    if let Some(done) = next_part(&mut in_flight, &shown).await? {
                                        finish(done, &mut record)?;
                                    }
                                }
                                in_flight.push(send(idx, full.freeze()));
                            }
                            idx += 1;
                        }
                    }
                }
                if end {
                    if !part.is_empty() && !record.parts.contains_key(&idx) {
                        while in_flight.len() >= RESUMABLE_PARTS_IN_FLIGHT {
                            if let Some(done) = next_part(&mut in_flight, &shown).await? {
                                finish(done, &mut record)?;
                            }
                        }
                        in_flight.push(send(idx, part.split().freeze()));
                    }
                    break;
                }
            }
            while let Some(done) = next_part(&mut in_flight, &shown).await? {
                finish(done, &mut record)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = sent {
            // Record whatever parts did finish, so the next attempt or run
            // does not send them again.
            while let Ok(Some(done)) = next_part(&mut in_flight, &shown).await {
                let _ = finish(done, &mut record);
            }
            return Err(e);
        }
        if let Err(e) = entry.verify(total, hasher) {
            let _ = self.abort_upload(rel, &record.upload_id).await;
            log.remove(rel);
            return Err(e);
        }
        let parts: Vec<object_store::multipart::PartId> = record
            .parts
            .values()
            .map(|c| object_store::multipart::PartId {
                content_id: c.clone(),
            })
            .collect();
        match mp.complete_multipart(&loc, &record.upload_id, parts).await {
            Ok(_) => {
                log.remove(rel);
                Ok(())
            }
            // Completed already (a lost response, or a run killed while its
            // completion was under way): the object carries this content's
            // hash, possibly only once the server has finished assembling it.
            Err(_) if self.appears_with_content(entry).await => {
                log.remove(rel);
                Ok(())
            }
            Err(e) => {
                // The upload is gone or unusable; the next attempt starts a
                // fresh one.
                log.remove(rel);
                Err(Error::Store {
                    path: shown,
                    retryable: true,
                    source: e,
                })
            }
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
        };
        // Logged before any part is sent, so a crash never orphans it.
        log.save(&record);
        Ok(record)
    }
}

type PartResult = (
    usize,
    u64,
    object_store::Result<object_store::multipart::PartId>,
);

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
