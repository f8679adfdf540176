//! A remote's trash: server-side copies of the versions a run replaced.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::ObjectStore;

use super::StoreTree;
use crate::error::{Error, Result};
use crate::tree::trash::{expired, run_time_text, Trash, TrashedFile, TRASH_DIR};

/// Object paths to delete per bulk request when emptying a trash.
const PURGE_BATCH: usize = 1000;

impl StoreTree {
    /// Where `trash` keeps this tree's replaced versions; `None` when
    /// nothing is kept.
    fn trash_root(&self, trash: &Trash) -> Option<Path> {
        match trash {
            Trash::Off => None,
            Trash::Default => Some(self.location(TRASH_DIR)),
            Trash::At(prefix) => Some(super::raw_path(prefix.split('/'))),
        }
    }

    /// Copies the object at `rel` into the folder of `run` in the trash,
    /// before it is overwritten or deleted (one server-side COPY). Returns
    /// the copy's key, or `None` when there was no object to keep.
    ///
    /// # Errors
    /// [`Error::Store`] if the copy fails; the caller must then not replace
    /// the object.
    pub(crate) async fn keep(&self, rel: &str, trash: &Trash, run: &str) -> Result<Option<String>> {
        let Some(root) = self.trash_root(trash) else {
            return Ok(None);
        };
        let from = self.location(rel);
        let to = Path::from_iter(
            root.parts()
                .chain(std::iter::once(run.into()))
                .chain(from.parts().skip(self.prefix.len())),
        );
        match self.copy_inside(&from, &to, None).await {
            Ok(()) => Ok(Some(to.to_string())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::store(
                format!("{} (keeping it in the trash)", self.display(rel)),
                e,
            )),
        }
    }

    /// Copies a kept version (`key`, from [`StoreTree::keep`]) back to
    /// `rel`, undoing an overwrite that was never committed.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub(crate) async fn put_back(&self, rel: &str, key: &str) -> Result<()> {
        let from = Path::parse(key).map_err(|e| Error::store(key, object_store::Error::from(e)))?;
        self.copy_inside(&from, &self.location(rel), None)
            .await
            .map_err(|e| Error::store(self.display(rel), e))
    }

    /// Every version kept in `trash`, oldest run first (one LIST request
    /// per 1,000 objects).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn trash_list(&self, trash: &Trash) -> Result<Vec<TrashedFile>> {
        let Some(root) = self.trash_root(trash) else {
            return Ok(Vec::new());
        };
        let skip = root.parts().count();
        let mut out: Vec<TrashedFile> = self
            .store
            .list(Some(&root))
            .map_err(|e| Error::store(&self.url, e))
            .try_filter_map(|meta| async move {
                let mut parts = meta.location.parts().skip(skip);
                let Some(run) = parts.next() else {
                    return Ok(None);
                };
                let path: Vec<String> = parts.map(|p| p.as_ref().to_string()).collect();
                if path.is_empty() {
                    return Ok(None);
                }
                Ok(Some(TrashedFile {
                    kept_at: run_time_text(run.as_ref()),
                    run: run.as_ref().to_string(),
                    path: path.join("/"),
                    size: meta.size,
                    location: meta.location.to_string(),
                }))
            })
            .try_collect()
            .await?;
        out.sort_by(|a, b| (&a.run, &a.path).cmp(&(&b.run, &b.path)));
        Ok(out)
    }

    /// Streams a kept version by its key ([`TrashedFile::location`]).
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn trash_open(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        let loc = Path::parse(key).map_err(|e| Error::store(key, object_store::Error::from(e)))?;
        self.stream(&loc, format!("{}:{key}", self.url)).await
    }

    /// Deletes the runs in `trash` older than `older_than` (every run with
    /// `None`). Finding the runs is one delimited LIST; each expired run
    /// costs a LIST and a bulk DELETE per 1,000 objects. Returns how many
    /// objects were deleted.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn trash_empty(&self, trash: &Trash, older_than: Option<Duration>) -> Result<usize> {
        let Some(root) = self.trash_root(trash) else {
            return Ok(0);
        };
        let runs = self
            .store
            .list_with_delimiter(Some(&root))
            .await
            .map_err(|e| Error::store(&self.url, e))?
            .common_prefixes;
        let now = SystemTime::now();
        let mut deleted = 0;
        for run in runs {
            let name = run.filename().unwrap_or_default().to_string();
            if older_than.is_some_and(|age| !expired(&name, age, now)) {
                continue;
            }
            let keys: Vec<Path> = self
                .store
                .list(Some(&run))
                .map_ok(|m| m.location)
                .try_collect()
                .await
                .map_err(|e| Error::store(&self.url, e))?;
            let mut keys = keys.into_iter();
            loop {
                let batch: Vec<Path> = keys.by_ref().take(PURGE_BATCH).collect();
                if batch.is_empty() {
                    break;
                }
                let locs = futures::stream::iter(batch.into_iter().map(Ok)).boxed();
                let results: Vec<_> = self.store.delete_stream(locs).collect().await;
                for r in results {
                    match r {
                        Ok(_) => deleted += 1,
                        Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(Error::store(&self.url, e)),
                    }
                }
            }
        }
        Ok(deleted)
    }
}
