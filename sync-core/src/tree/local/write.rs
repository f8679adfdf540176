//! Streaming files out of the tree, and verified, atomic writes and guarded
//! deletes into it.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{same_version, sync_dir, FileStat, LocalTree};
use crate::error::{Error, Result};
use crate::manifest::{ContentHasher, FileEntry};

/// Chunk size for streaming local reads.
const READ_CHUNK: usize = 1024 * 1024;

/// Files up to this size are received in memory and written in one go.
const SMALL_FILE: u64 = 1024 * 1024;

impl LocalTree {
    /// Opens a file for streaming after checking it still has the stat the
    /// scan hashed it under.
    ///
    /// # Errors
    /// [`Error::ChangedDuringRun`] if it was modified or removed since the
    /// scan; [`Error::Io`] otherwise.
    pub async fn open(
        &self,
        rel: &str,
        expected: FileStat,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        open_at(self.abs(rel), rel, expected).await
    }
}

/// [`LocalTree::open`] for the file at `path`, named `rel` in errors.
pub(crate) async fn open_at(
    path: PathBuf,
    rel: &str,
    expected: FileStat,
) -> Result<BoxStream<'static, Result<Bytes>>> {
    // Opened, checked and (when small) read whole in one blocking call,
    // rather than one per step.
    let opened = {
        let path = path.clone();
        crate::tree::blocking("reading a file", move || {
            use std::io::Read;
            let mut file = match std::fs::File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(Error::io(&path, e)),
            };
            let md = file.metadata().map_err(|e| Error::io(&path, e))?;
            let now = FileStat::of(&md);
            if now.size > SMALL_FILE {
                return Ok(Some((now, Err(file))));
            }
            let mut buf = Vec::with_capacity(now.size as usize);
            file.read_to_end(&mut buf)
                .map_err(|e| Error::io(&path, e))?;
            Ok(Some((now, Ok(Bytes::from(buf)))))
        })
        .await?
    };
    let Some((now, opened)) = opened else {
        return Err(Error::ChangedDuringRun {
            path: rel.to_string(),
            detail: "deleted".into(),
        });
    };
    if !same_version(expected, now) {
        return Err(Error::ChangedDuringRun {
            path: rel.to_string(),
            detail: "modified since it was hashed".into(),
        });
    }
    let file = match opened {
        Ok(bytes) if bytes.is_empty() => return Ok(futures::stream::empty().boxed()),
        Ok(bytes) => return Ok(futures::stream::iter([Ok(bytes)]).boxed()),
        Err(file) => tokio::fs::File::from_std(file),
    };
    let stream = futures::stream::unfold(Some((file, path)), |state| async move {
        let (mut file, path) = state?;
        let mut buf = bytes::BytesMut::with_capacity(READ_CHUNK);
        loop {
            match file.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => return None,
                Ok(0) => return Some((Ok(buf.freeze()), None)),
                Ok(_) if buf.len() >= READ_CHUNK => {
                    return Some((Ok(buf.freeze()), Some((file, path))))
                }
                Ok(_) => continue,
                Err(e) => return Some((Err(Error::io(&path, e)), None)),
            }
        }
    });
    Ok(stream.boxed())
}

impl LocalTree {
    /// Streams bytes into `rel`, verifying them against `entry` before the
    /// file replaces whatever is there. `prior` is the stat the scan saw for
    /// the existing file (`None` if there was none); if the file has changed
    /// since, it is left alone.
    ///
    /// On success returns the new file's stat. `on_bytes` is called with each
    /// chunk's length as it is written.
    ///
    /// # Errors
    /// [`Error::Mismatch`] if the bytes do not match the entry,
    /// [`Error::ChangedDuringRun`] if the target changed locally,
    /// [`Error::UnsafePath`] if a parent is a symlink, [`Error::Io`] otherwise
    /// (a full disk included). The temporary file is removed on every error.
    pub async fn write(
        &self,
        entry: &FileEntry,
        stream: BoxStream<'static, Result<Bytes>>,
        prior: Option<FileStat>,
        keep: Option<&str>,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
    ) -> Result<FileStat> {
        let rel = entry.path.as_str();
        let target = self.abs(rel);
        let parent = target
            .parent()
            .expect("validated path has a parent")
            .to_path_buf();
        self.ensure_dir(rel, &parent)?;
        let name = target
            .file_name()
            .expect("validated path has a name")
            .to_string_lossy()
            .to_string();
        let tmp = parent.join(format!(
            ".{name}.pqsync.tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        // A file that replaces another is fsynced before its rename, so a
        // crash leaves the old version or the new one. A new file replaces
        // nothing: its bytes and name are made durable with the run's other
        // new files, by one `syncfs` before anything records them.
        let fresh = prior.is_none();
        let result = async {
            self.fill(entry, stream, &tmp, on_bytes, !fresh).await?;
            self.swap_in(rel, &tmp, &target, prior, keep)?;
            if fresh {
                self.wrote_unsynced();
            } else {
                let _ = sync_dir(&parent);
            }
            let md = std::fs::symlink_metadata(&target).map_err(|e| Error::io(&target, e))?;
            Ok(FileStat::of(&md))
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    /// Streams `entry`'s bytes into the new file `tmp`, checks them against
    /// the entry, sets the entry's modification time, and (with `fsync`)
    /// fsyncs.
    async fn fill(
        &self,
        entry: &FileEntry,
        mut stream: BoxStream<'static, Result<Bytes>>,
        tmp: &Path,
        on_bytes: &(dyn Fn(u64) + Send + Sync),
        fsync: bool,
    ) -> Result<()> {
        let mtime = entry.modified().map(std::time::SystemTime::from);
        if entry.size <= SMALL_FILE {
            // Checked in memory, then written in one blocking call rather
            // than one per step.
            let mut hasher = ContentHasher::new(entry.hash_algorithm);
            let mut buf = Vec::with_capacity(entry.size as usize);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                if (buf.len() + chunk.len()) as u64 > entry.size {
                    return Err(entry.too_long((buf.len() + chunk.len()) as u64));
                }
                hasher.update(&chunk);
                buf.extend_from_slice(&chunk);
            }
            entry.verify(buf.len() as u64, hasher)?;
            let path = tmp.to_path_buf();
            let n = buf.len() as u64;
            crate::tree::blocking("writing a downloaded file", move || {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                f.write_all(&buf).map_err(|e| Error::io(&path, e))?;
                if let Some(t) = mtime {
                    f.set_modified(t).map_err(|e| Error::io(&path, e))?;
                }
                if fsync {
                    f.sync_all().map_err(|e| Error::io(&path, e))?;
                }
                Ok(())
            })
            .await?;
            on_bytes(n);
            return Ok(());
        }
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .await
            .map_err(|e| Error::io(tmp, e))?;
        let mut hasher = ContentHasher::new(entry.hash_algorithm);
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            total += chunk.len() as u64;
            if total > entry.size {
                return Err(entry.too_long(total));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(tmp, e))?;
            on_bytes(chunk.len() as u64);
        }
        entry.verify(total, hasher)?;
        file.flush().await.map_err(|e| Error::io(tmp, e))?;
        let std_file = file.into_std().await;
        let path = tmp.to_path_buf();
        crate::tree::blocking("syncing a downloaded file", move || {
            if let Some(t) = mtime {
                std_file.set_modified(t).map_err(|e| Error::io(&path, e))?;
            }
            if fsync {
                std_file.sync_all().map_err(|e| Error::io(&path, e))?;
            }
            Ok(())
        })
        .await
    }

    /// Renames `tmp` over `target`, but only if the target is still what
    /// the scan saw (`prior`; the Unison rule) and is not a directory.
    fn swap_in(
        &self,
        rel: &str,
        tmp: &Path,
        target: &Path,
        prior: Option<FileStat>,
        keep: Option<&str>,
    ) -> Result<()> {
        let current = self.stat(rel)?;
        let unchanged = match (prior, current) {
            (None, None) => true,
            (Some(p), Some(c)) => same_version(p, c),
            _ => false,
        };
        if !unchanged {
            return Err(Error::ChangedDuringRun {
                path: rel.to_string(),
                detail: "the local file changed since the scan".into(),
            });
        }
        if current.is_some() && target.is_dir() {
            return Err(Error::PathObstructed {
                path: rel.to_string(),
                reason: "a directory is in the way of this file".into(),
            });
        }
        if let (Some(run), Some(_)) = (keep, current) {
            self.keep(rel, run)?;
        }
        std::fs::rename(tmp, target).map_err(|e| Error::io(target, e))
    }

    /// Creates `dir` (the parent of `rel`) and every missing ancestor,
    /// refusing to pass through a symlink or a file.
    pub(super) fn ensure_dir(&self, rel: &str, dir: &Path) -> Result<()> {
        let relative = dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        let mut cur = self.root.clone();
        std::fs::create_dir_all(&cur).map_err(|e| Error::io(&cur, e))?;
        for comp in relative.components() {
            cur.push(comp);
            match std::fs::symlink_metadata(&cur) {
                Ok(md) if md.file_type().is_symlink() => {
                    return Err(Error::UnsafePath {
                        path: rel.to_string(),
                        origin: "the local tree".into(),
                        reason: format!("{} is a symlink; not writing through it", cur.display()),
                    })
                }
                Ok(md) if md.is_dir() => {}
                Ok(_) => {
                    return Err(Error::PathObstructed {
                        path: rel.to_string(),
                        reason: format!("{} is a file where a directory is needed", cur.display()),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match std::fs::create_dir(&cur) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(Error::io(&cur, e)),
                    }
                }
                Err(e) => return Err(Error::io(&cur, e)),
            }
        }
        Ok(())
    }

    /// Deletes a file if it still has the stat the scan saw (with `keep`,
    /// moves it into that run's trash folder instead), then removes
    /// directories left empty.
    ///
    /// # Errors
    /// [`Error::ChangedDuringRun`] if it was modified since the scan.
    pub fn delete(&self, rel: &str, prior: Option<FileStat>, keep: Option<&str>) -> Result<()> {
        let path = self.abs(rel);
        let current = self.stat(rel)?;
        match (prior, current) {
            (_, None) => return Ok(()),
            (Some(p), Some(c)) if same_version(p, c) => {}
            _ => {
                return Err(Error::ChangedDuringRun {
                    path: rel.to_string(),
                    detail: "modified locally since the scan; not deleted".into(),
                })
            }
        }
        match keep {
            Some(run) => {
                self.move_to_trash(rel, run)?;
            }
            None => std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?,
        }
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) {
                break;
            }
            if std::fs::remove_dir(&d).is_err() {
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::HashAlgorithm;

    #[tokio::test]
    async fn write_rejects_wrong_bytes_and_leaves_no_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let tree = LocalTree::new(dir.path());
        let data = Bytes::from_static(b"hello world");
        let entry = FileEntry {
            path: "a/b.bin".into(),
            size: data.len() as u64,
            hash: HashAlgorithm::Blake3.digest(&data),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            etag: None,
            extra: None,
            content_type: None,
        };
        let bad = futures::stream::iter(vec![Ok(Bytes::from_static(b"hello WORLD"))]).boxed();
        let err = tree
            .write(&entry, bad, None, None, &|_| {})
            .await
            .unwrap_err();
        assert!(err.to_string().contains("hash mismatch"), "{err}");
        assert!(std::fs::read_dir(dir.path().join("a"))
            .unwrap()
            .next()
            .is_none());

        let good = futures::stream::iter(vec![Ok(data.clone())]).boxed();
        tree.write(&entry, good, None, None, &|_| {}).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("a/b.bin")).unwrap(), data);
    }

    #[tokio::test]
    async fn write_refuses_symlinked_parent() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let tree = LocalTree::new(dir.path());
        let entry = FileEntry {
            path: "link/x".into(),
            size: 1,
            hash: HashAlgorithm::Blake3.digest(b"x"),
            hash_algorithm: HashAlgorithm::Blake3,
            modified_at: "2026-01-01T00:00:00.000Z".into(),
            etag: None,
            extra: None,
            content_type: None,
        };
        let s = futures::stream::iter(vec![Ok(Bytes::from_static(b"x"))]).boxed();
        let err = tree
            .write(&entry, s, None, None, &|_| {})
            .await
            .unwrap_err();
        assert!(matches!(err, Error::UnsafePath { .. }), "{err}");
        assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
    }
}
