//! What a store can do, found out once, and pqsync's own small objects in
//! a remote's `_meta/.pqsync/` (the capability cache, the lease and the
//! announcements of pending deletions).

use futures::{StreamExt, TryStreamExt};
use object_store::{GetOptions, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::StoreTree;
use crate::error::{Error, Result};
use crate::layout::STATE_DIR;
use crate::manifest::now_iso;

/// What a remote knows how to do, as found by the probe; cached as
/// `capabilities.json` in the remote and `caps-<key>.json` locally.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Capabilities {
    /// Whether conditional writes (`If-None-Match`, `If-Match`) are enforced.
    pub conditional_writes: bool,
    /// When the probe ran.
    #[serde(default)]
    pub probed_at: String,
}

impl Capabilities {
    /// The probe's findings, as of now.
    pub(crate) fn probed(conditional_writes: bool) -> Self {
        Capabilities {
            conditional_writes,
            probed_at: now_iso(),
        }
    }
}

impl StoreTree {
    /// Finds out, with a few requests on a scratch object under
    /// `_meta/.pqsync/`, whether the store really enforces conditional
    /// writes. Some S3 servers accept `If-None-Match`/`If-Match` and ignore
    /// them; a compare-and-swap commit is only safe where they are enforced.
    ///
    /// # Errors
    /// [`Error::Store`] if the scratch object cannot be written.
    pub async fn probe_conditional_writes(&self) -> Result<bool> {
        let rel = format!("{STATE_DIR}/probe-{:016x}", rand::random::<u64>());
        let loc = self.location(&rel);
        let shown = self.display(&rel);
        let put = |mode: PutMode| {
            self.store.put_opts(
                &loc,
                PutPayload::from_static(b"pqsync conditional-write probe"),
                PutOptions {
                    mode,
                    ..Default::default()
                },
            )
        };
        let first = match put(PutMode::Create).await {
            Ok(r) => r,
            Err(
                object_store::Error::NotImplemented { .. }
                | object_store::Error::NotSupported { .. },
            ) => return Ok(false),
            Err(e) => return Err(Error::store(shown, e)),
        };
        let create_enforced = matches!(
            put(PutMode::Create).await,
            Err(object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. })
        );
        let update_enforced = create_enforced
            && first.e_tag.is_some()
            && matches!(
                put(PutMode::Update(UpdateVersion {
                    e_tag: Some("\"pqsync-probe-not-a-real-etag\"".into()),
                    version: None,
                }))
                .await,
                Err(object_store::Error::Precondition { .. })
            );
        let _ = self
            .store
            .delete_stream(futures::stream::iter([Ok(loc.clone())]).boxed())
            .next()
            .await;
        Ok(create_enforced && update_enforced)
    }

    /// Reads a small JSON object under the remote's `_meta/.pqsync/`.
    ///
    /// # Errors
    /// [`Error::Store`] for anything but "not found".
    pub async fn read_state<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<(T, Option<String>)>> {
        let rel = format!("{STATE_DIR}/{name}");
        let shown = self.display(&rel);
        match self
            .store
            .get_opts(&self.location(&rel), GetOptions::default())
            .await
        {
            Ok(g) => {
                let etag = g.meta.e_tag.clone();
                let bytes = g.bytes().await.map_err(|e| Error::store(&shown, e))?;
                let v = serde_json::from_slice(&bytes).map_err(|e| Error::ManifestCorrupt {
                    path: shown.clone(),
                    reason: e.to_string(),
                })?;
                Ok(Some((v, etag)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(shown, e)),
        }
    }

    /// Writes a small JSON object under the remote's `_meta/.pqsync/`.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn write_state<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<()> {
        let rel = format!("{STATE_DIR}/{name}");
        let body = serde_json::to_vec_pretty(value).expect("state serialises");
        self.store
            .put_opts(
                &self.location(&rel),
                PutPayload::from(body),
                PutOptions::default(),
            )
            .await
            .map_err(|e| Error::store(self.display(&rel), e))?;
        Ok(())
    }

    /// Announces deletions a run is about to commit and make, as
    /// `_meta/.pqsync/pending/<run>.json`: each path with the tagged hash of
    /// the version it drops. A manifest rebuild that lists the objects
    /// meanwhile does not add them back, and a later run finishes them if
    /// this one is killed.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub(crate) async fn announce_deletions(&self, run: &str, files: &[Announced]) -> Result<()> {
        let record = PendingDeletions {
            files: files.to_vec(),
        };
        self.write_state(&format!("{PENDING_DIR}/{run}.json"), &record)
            .await
    }

    /// Withdraws a run's announcement (best effort: a stale one is finished
    /// or dropped by a later run).
    pub(crate) async fn withdraw_deletions(&self, run: &str) {
        self.delete_state(&format!("{PENDING_DIR}/{run}.json"))
            .await;
    }

    /// Every object under the remote's `_meta/.pqsync/` (one LIST of
    /// `_meta/`): its name relative to that folder, and when the store last
    /// wrote it (by the store's clock). The same LIST tells the manifest's
    /// ETag: [`StateObject::MANIFEST`] names it.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub(crate) async fn list_state(&self) -> Result<Vec<StateObject>> {
        let meta = self.location("_meta");
        let listed: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&meta))
            .try_collect()
            .await
            .map_err(|e| Error::store(&self.url, e))?;
        let state = format!("{}/", self.location(STATE_DIR).as_ref());
        let manifest = self.location(crate::layout::MANIFEST_PATH);
        Ok(listed
            .into_iter()
            .filter_map(|m| {
                let name = if m.location == manifest {
                    StateObject::MANIFEST.to_string()
                } else {
                    m.location.as_ref().strip_prefix(&state)?.to_string()
                };
                Some(StateObject {
                    name,
                    modified: m.last_modified,
                    etag: m.e_tag,
                })
            })
            .collect())
    }

    /// Every announcement of pending deletions, by run: from `listing` (a
    /// [`StoreTree::list_state`] already made) or one LIST, and one GET per
    /// announcement.
    ///
    /// # Errors
    /// [`Error::Store`]; an unreadable announcement is skipped.
    pub(crate) async fn pending_deletions(
        &self,
        listing: Option<&[StateObject]>,
    ) -> Result<Vec<(String, Vec<Announced>)>> {
        let listed;
        let listing = match listing {
            Some(l) => l,
            None => {
                listed = self.list_state().await?;
                &listed
            }
        };
        let names: Vec<String> = listing
            .iter()
            .filter_map(|o| o.name.strip_prefix(&format!("{PENDING_DIR}/")))
            .map(str::to_string)
            .collect();
        let mut out = Vec::new();
        for name in names {
            let rel = format!("{PENDING_DIR}/{name}");
            if let Ok(Some((rec, _))) = self.read_state::<PendingDeletions>(&rel).await {
                let run = name.trim_end_matches(".json").to_string();
                out.push((run, rec.files));
            }
        }
        Ok(out)
    }

    /// Deletes an object under the remote's `_meta/.pqsync/`.
    pub async fn delete_state(&self, name: &str) {
        let loc = self.location(&format!("{STATE_DIR}/{name}"));
        let _ = self
            .store
            .delete_stream(futures::stream::iter([Ok(loc)]).boxed())
            .next()
            .await;
    }
}

/// An object under a remote's `_meta/.pqsync/`, or its manifest.
#[derive(Clone, Debug)]
pub(crate) struct StateObject {
    /// Its name below `_meta/.pqsync/` (`pending/<run>.json`, …), or
    /// [`StateObject::MANIFEST`].
    pub name: String,
    /// When the store last wrote it.
    pub modified: chrono::DateTime<chrono::Utc>,
    /// Its ETag, where the store gives one.
    pub etag: Option<String>,
}

impl StateObject {
    /// The name that stands for `_meta/manifest.json` in a listing (no
    /// object under `_meta/.pqsync/` has it: names there have no `..`).
    pub const MANIFEST: &'static str = "../manifest.json";
}

/// Where runs announce their deletions, under `_meta/.pqsync/`.
const PENDING_DIR: &str = "pending";

/// `pending/<run>.json`: the deletions a run is committing.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PendingDeletions {
    files: Vec<Announced>,
}

/// One announced deletion: the path and the tagged hash of the version the
/// run drops.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Announced {
    pub path: String,
    pub hash: String,
}
