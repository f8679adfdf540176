//! Selective transfer: which paths a run may touch.
//!
//! A [`Selection`] is built from ParqueDB namespaces and include/exclude
//! globs. A path outside the selection is left out of the diff altogether:
//! it is never transferred and never deleted, on either side, and the
//! remote manifest keeps whatever entry it had for it.
//!
//! A namespace `ns` selects `data/ns/**`, `rels/forward/ns.parquet`,
//! `rels/reverse/ns.parquet` and `indexes/*/ns.*`.

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::layout::{namespace_globs, namespace_of};

/// The paths a run may touch.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    namespaces: Vec<String>,
    description: Vec<String>,
}

fn glob(pattern: &str) -> Result<Glob> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::InvalidArgument {
            argument: "glob",
            reason: format!("{pattern:?}: {e}"),
        })
}

impl Selection {
    /// Everything.
    pub fn all() -> Self {
        Selection::default()
    }

    /// A selection of `namespaces` plus `include` globs, minus `exclude`
    /// globs. With no namespaces and no includes, everything not excluded
    /// is selected.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a malformed glob or namespace name.
    pub fn new(namespaces: &[String], include: &[String], exclude: &[String]) -> Result<Self> {
        let mut inc = GlobSetBuilder::new();
        let mut description = Vec::new();
        for ns in namespaces {
            if ns.is_empty() || ns.contains(['/', '\\', '*', '?', '[', ']', '{', '}']) || ns == ".."
            {
                return Err(Error::InvalidArgument {
                    argument: "namespace",
                    reason: format!("{ns:?} is not a namespace name"),
                });
            }
            for p in namespace_globs(ns) {
                inc.add(glob(&p)?);
            }
            description.push(format!("namespace {ns}"));
        }
        for p in include {
            inc.add(glob(p)?);
            description.push(format!("include {p}"));
        }
        let mut exc = GlobSetBuilder::new();
        for p in exclude {
            exc.add(glob(p)?);
            description.push(format!("exclude {p}"));
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| Error::InvalidArgument {
                argument: "glob",
                reason: e.to_string(),
            })
        };
        Ok(Selection {
            namespaces: namespaces.to_vec(),
            include: if namespaces.is_empty() && include.is_empty() {
                None
            } else {
                Some(build(inc)?)
            },
            exclude: if exclude.is_empty() {
                None
            } else {
                Some(build(exc)?)
            },
            description,
        })
    }

    /// Whether this selects everything.
    pub fn is_all(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// Whether a path is selected.
    pub fn contains(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|g| g.is_match(path))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(path))
    }

    /// The namespaces asked for that no path in `paths` belongs to (a
    /// misspelt `--namespaces post` selects nothing and should say so).
    pub fn unmatched_namespaces<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        if self.namespaces.is_empty() {
            return Vec::new();
        }
        let mut seen = std::collections::HashSet::new();
        for p in paths {
            if let Some((ns, _)) = namespace_of(p) {
                seen.insert(ns);
            }
        }
        self.namespaces
            .iter()
            .filter(|ns| !seen.contains(ns.as_str()))
            .cloned()
            .collect()
    }

    /// A short description for messages ("namespace posts, exclude *.bloom").
    pub fn describe(&self) -> String {
        if self.description.is_empty() {
            "everything".into()
        } else {
            self.description.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_select_their_files_only() {
        let s = Selection::new(&["posts".into(), "users".into()], &[], &[]).unwrap();
        for p in [
            "data/posts/data.parquet",
            "data/posts/data.0001.parquet",
            "rels/forward/posts.parquet",
            "rels/reverse/users.parquet",
            "indexes/bloom/posts.bloom",
            "indexes/secondary/users.name.idx.parquet",
        ] {
            assert!(s.contains(p), "{p}");
        }
        for p in [
            "data/comments/data.parquet",
            "data/postsx/data.parquet",
            "rels/forward/comments.parquet",
            "events/seg-0001.parquet",
            "_meta/schema.json",
            "indexes/bloom/sub/posts.bloom",
        ] {
            assert!(!s.contains(p), "{p}");
        }
    }

    #[test]
    fn include_and_exclude_globs() {
        let s = Selection::new(&[], &["events/**".into()], &["events/archive/**".into()]).unwrap();
        assert!(s.contains("events/seg-0001.parquet"));
        assert!(!s.contains("events/archive/2026/01/seg-0001.parquet"));
        assert!(!s.contains("data/users/data.parquet"));
        let s = Selection::new(&[], &[], &["*.bloom".into(), "indexes/**/*.bloom".into()]).unwrap();
        assert!(s.contains("data/users/data.parquet"));
        assert!(!s.contains("indexes/bloom/users.bloom"));
        assert!(Selection::all().contains("anything"));
        assert!(Selection::new(&["../x".into()], &[], &[]).is_err());
        assert!(Selection::new(&[], &["[".into()], &[]).is_err());
    }

    #[test]
    fn unmatched_namespaces_are_reported() {
        let s = Selection::new(&["post".into(), "users".into()], &[], &[]).unwrap();
        let paths = ["data/posts/data.parquet", "data/users/data.parquet"];
        assert_eq!(s.unmatched_namespaces(paths), ["post"]);
        assert!(Selection::all().unmatched_namespaces(paths).is_empty());
    }
}
