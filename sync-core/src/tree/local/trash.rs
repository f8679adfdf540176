//! A directory's trash: the local versions a run replaced, under
//! `trash/<run>/<path>` in its state directory, outside the database, so no
//! scan or sync ever reads it.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::LocalTree;
use crate::error::{Error, Result};
use crate::layout::is_ignored;
use crate::tree::trash::{expired, run_time_text, TrashedFile};

impl LocalTree {
    /// The trash folder of this directory.
    pub fn trash_dir(&self) -> PathBuf {
        self.state_dir().join("trash")
    }

    /// Where `run` keeps `rel`.
    fn kept_path(&self, rel: &str, run: &str) -> PathBuf {
        self.trash_dir().join(run).join(rel)
    }

    /// Keeps the file at `rel` in the folder of `run`, before a download
    /// replaces it: a hard link, so it costs no space or time (a copy where
    /// the file system has no hard links). Returns where it went.
    ///
    /// # Errors
    /// [`Error::Io`]; the caller must then not replace the file.
    pub(crate) fn keep(&self, rel: &str, run: &str) -> Result<PathBuf> {
        let from = self.abs(rel);
        let to = self.prepare_kept(rel, run)?;
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
        }
        Ok(to)
    }

    /// Moves the file at `rel` into the folder of `run`, instead of
    /// deleting it. Returns where it went.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub(crate) fn move_to_trash(&self, rel: &str, run: &str) -> Result<PathBuf> {
        let from = self.abs(rel);
        let to = self.prepare_kept(rel, run)?;
        super::move_file(&from, &to)?;
        Ok(to)
    }

    /// Creates the folders above `rel`'s place in the trash; a version
    /// already kept there by this run (a retried transfer) is replaced only
    /// by the same file, so the first version kept is the one that stays.
    fn prepare_kept(&self, rel: &str, run: &str) -> Result<PathBuf> {
        let to = self.kept_path(rel, run);
        let dir = to.parent().expect("a kept path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        if to.exists() {
            // Keep the earlier version under a second name rather than lose
            // either.
            let n = rand::random::<u32>();
            return Ok(to.with_file_name(format!(
                "{}.{n:08x}",
                to.file_name().unwrap_or_default().to_string_lossy()
            )));
        }
        Ok(to)
    }

    /// Streams the version `run` kept of `path`.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub async fn trash_open(
        &self,
        run: &str,
        path: &str,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        crate::manifest::validate_path(path, "the trash")?;
        let abs = self.kept_path(path, run);
        let md = std::fs::symlink_metadata(&abs).map_err(|e| Error::io(&abs, e))?;
        super::write::open_at(abs, path, super::FileStat::of(&md)).await
    }

    /// Every version kept in this directory's trash, oldest run first.
    ///
    /// # Errors
    /// [`Error::Io`] if the trash cannot be read.
    pub fn trash_list(&self) -> Result<Vec<TrashedFile>> {
        let root = self.trash_dir();
        let mut out = Vec::new();
        if !root.exists() {
            return Ok(out);
        }
        for e in walkdir::WalkDir::new(&root)
            .min_depth(2)
            .sort_by_file_name()
        {
            let e = e.map_err(|e| Error::io(&root, e.into()))?;
            if !e.file_type().is_file() {
                continue;
            }
            let Ok(rel) = e.path().strip_prefix(&root) else {
                continue;
            };
            let mut comps = rel.iter().map(|c| c.to_string_lossy().to_string());
            let run = comps.next().unwrap_or_default();
            let path: Vec<String> = comps.collect();
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            out.push(TrashedFile {
                kept_at: run_time_text(&run),
                run,
                path: path.join("/"),
                size,
                location: e.path().display().to_string(),
            });
        }
        Ok(out)
    }

    /// Deletes the runs older than `older_than` (every run with `None`).
    /// Returns how many files were deleted.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn trash_empty(&self, older_than: Option<Duration>) -> Result<usize> {
        let root = self.trash_dir();
        let runs = match std::fs::read_dir(&root) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io(&root, e)),
        };
        let now = SystemTime::now();
        let mut deleted = 0;
        for run in runs {
            let run = run.map_err(|e| Error::io(&root, e))?;
            let name = run.file_name().to_string_lossy().to_string();
            if older_than.is_some_and(|age| !expired(&name, age, now)) {
                continue;
            }
            deleted += count_files(&run.path());
            remove_any(&run.path())?;
        }
        Ok(deleted)
    }
}

impl LocalTree {
    /// Puts a kept version back at `rel`: streamed into a temporary file
    /// beside it, checked against `size`, fsynced and renamed into place. A
    /// file already at `rel` is kept in the folder of `run` first, so a
    /// restore loses nothing either.
    ///
    /// # Errors
    /// [`Error::UnsafePath`] for a path no manifest may carry,
    /// [`Error::PathObstructed`] where a directory is in the way,
    /// [`Error::Io`] (a full disk included); the temporary file is removed
    /// on every error.
    pub async fn restore_kept(
        &self,
        rel: &str,
        mut stream: BoxStream<'static, Result<Bytes>>,
        size: u64,
        run: &str,
    ) -> Result<()> {
        crate::manifest::validate_path(rel, "the trash")?;
        if is_ignored(rel) {
            return Err(Error::UnsafePath {
                path: rel.to_string(),
                origin: "the trash".into(),
                reason: "a reserved or ignored path that pqsync never syncs".into(),
            });
        }
        let target = self.abs(rel);
        let parent = target.parent().expect("a valid path has a parent");
        self.ensure_dir(rel, parent)?;
        if target.is_dir() {
            return Err(Error::PathObstructed {
                path: rel.to_string(),
                reason: "a directory is in the way of this file".into(),
            });
        }
        let tmp = parent.join(format!(
            ".{}.pqsync.tmp-{}-{:08x}",
            target.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id(),
            rand::random::<u32>()
        ));
        let result = async {
            let mut file = tokio::fs::File::create_new(&tmp)
                .await
                .map_err(|e| Error::io(&tmp, e))?;
            let mut total = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                total += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io(&tmp, e))?;
            }
            if total != size {
                return Err(Error::io(
                    &tmp,
                    std::io::Error::other(format!("got {total} bytes of {size}")),
                ));
            }
            file.sync_all().await.map_err(|e| Error::io(&tmp, e))?;
            if target.is_file() {
                self.keep(rel, run)?;
            }
            std::fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
            let _ = super::sync_dir(parent);
            Ok(())
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// Files under `dir`.
fn count_files(dir: &Path) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_file())
        .count()
}

/// Removes a file or a whole folder.
fn remove_any(p: &Path) -> Result<()> {
    let r = if p.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    };
    r.map_err(|e| Error::io(p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_versions_are_listed_and_expire_by_run() {
        let dir = tempfile::tempdir().unwrap();
        let tree = LocalTree::new(dir.path());
        std::fs::create_dir_all(dir.path().join("data/a")).unwrap();
        std::fs::write(dir.path().join("data/a/x.parquet"), b"old").unwrap();
        let old_run = "20200101T000000Z-00000001";
        let kept = tree.keep("data/a/x.parquet", old_run).unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"old");
        // Replacing the file leaves the kept version alone.
        std::fs::write(dir.path().join("data/a/x.tmp"), b"new").unwrap();
        std::fs::rename(
            dir.path().join("data/a/x.tmp"),
            dir.path().join("data/a/x.parquet"),
        )
        .unwrap();
        assert_eq!(std::fs::read(&kept).unwrap(), b"old");
        let new_run = crate::tree::trash::run_name(SystemTime::now());
        tree.move_to_trash("data/a/x.parquet", &new_run).unwrap();
        assert!(!dir.path().join("data/a/x.parquet").exists());

        let listed = tree.trash_list().unwrap();
        let runs: Vec<(&str, &str, u64)> = listed
            .iter()
            .map(|t| (t.run.as_str(), t.path.as_str(), t.size))
            .collect();
        assert_eq!(
            runs,
            [
                (old_run, "data/a/x.parquet", 3),
                (new_run.as_str(), "data/a/x.parquet", 3)
            ]
        );
        assert_eq!(
            tree.trash_empty(Some(Duration::from_secs(24 * 3600)))
                .unwrap(),
            1
        );
        assert_eq!(tree.trash_list().unwrap().len(), 1);
        assert_eq!(tree.trash_empty(None).unwrap(), 1);
        assert!(tree.trash_list().unwrap().is_empty());
    }
}
