//! `--repair` and `--checksum`: finding remote objects that no longer hold
//! what the manifest names, so a push sends them again from the source.

use futures::StreamExt;
use serde::Serialize;

use super::plan::Plan;
use super::Engine;
use crate::error::Result;
use crate::tree::Tree;

/// How hard a sending run looks for damaged remote objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Repair {
    /// Not at all: the manifest is trusted (the default).
    #[default]
    Off,
    /// One LIST: objects missing or of the wrong size; where objects carry
    /// pqsync's hash metadata, one HEAD each for a different stored hash,
    /// and an object without it is read and hashed.
    Listing,
    /// As `Listing`, and every object is read and hashed.
    Checksum,
}

/// A remote object found damaged, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Damage {
    /// The file.
    pub path: String,
    /// `missing`, `wrong size`, `other stored hash` or `other bytes`.
    pub reason: String,
}

impl Engine {
    /// Moves every path that is unchanged by the diff but whose remote
    /// object is damaged from `unchanged` to the uploads (the source's copy
    /// has the bytes the manifest names), and records why.
    ///
    /// # Errors
    /// [`crate::Error::Store`] if the listing fails.
    pub(crate) async fn find_damage(&self, plan: &mut Plan) -> Result<()> {
        if self.opts.repair == Repair::Off || !self.mode.sends() {
            return Ok(());
        }
        let Some(remote) = plan.remote.as_ref() else {
            return Ok(());
        };
        let listed = self.remote.list_files().await?;
        let checks = plan.unchanged.iter().filter_map(|p| {
            let e = remote.manifest.files.get(p)?;
            Some((e.clone(), listed.get(p).copied()))
        });
        let damaged: Vec<Damage> = futures::stream::iter(checks)
            .map(|(e, size)| async move {
                let reason = self.damage_of(&e, size).await?;
                Some(Damage {
                    path: e.path,
                    reason: reason.to_string(),
                })
            })
            .buffer_unordered(self.opts.concurrency)
            .filter_map(|d| async move { d })
            .collect()
            .await;
        let mut damaged = damaged;
        damaged.sort_by(|a, b| a.path.cmp(&b.path));
        for d in &damaged {
            if let Some(local) = plan.view.files.get(&d.path) {
                plan.uploads.push(local.clone());
                plan.unchanged.retain(|u| u != &d.path);
            }
        }
        plan.uploads.sort_by(|a, b| a.path.cmp(&b.path));
        plan.repairs = damaged;
        Ok(())
    }

    /// Why the object for `e` is damaged (`listed`: its size in the
    /// listing), or `None` when it is sound as far as this mode looks.
    async fn damage_of(
        &self,
        e: &crate::manifest::FileEntry,
        listed: Option<u64>,
    ) -> Option<&'static str> {
        match listed {
            None => return Some("missing"),
            Some(size) if size != e.size => return Some("wrong size"),
            _ => {}
        }
        let read = match self.opts.repair {
            Repair::Checksum => true,
            Repair::Listing if self.remote.keeps_attributes() => {
                match self.remote.head_hash(&e.path).await {
                    Ok((_, Some(stored))) if stored == e.tagged_hash() => false,
                    Ok((_, Some(_))) => return Some("other stored hash"),
                    // No stored hash to go by (uploaded by another tool):
                    // read it.
                    Ok((_, None)) => true,
                    Err(_) => return Some("missing"),
                }
            }
            _ => false,
        };
        if !read {
            return None;
        }
        match self
            .remote
            .hash(&e.path, e.size, e.hash_algorithm, 0, false)
            .await
        {
            Ok(h) if h.digest == e.hash && h.size == e.size => None,
            Ok(_) => Some("other bytes"),
            Err(_) => Some("missing"),
        }
    }
}
