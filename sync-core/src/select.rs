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

/// The paths a run may touch.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    description: Vec<String>,
}

fn glob(pattern: &str) -> Result<Glob> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|e| Error::Invalid(format!("invalid glob {pattern:?}: {e}")))
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
    /// [`Error::Invalid`] for a malformed glob or namespace name.
    pub fn new(namespaces: &[String], include: &[String], exclude: &[String]) -> Result<Self> {
        let mut inc = GlobSetBuilder::new();
        let mut description = Vec::new();
        for ns in namespaces {
            if ns.is_empty() || ns.contains(['/', '\\', '*', '?', '[', ']', '{', '}']) || ns == ".."
            {
                return Err(Error::Invalid(format!("invalid namespace name {ns:?}")));
            }
            for p in [
                format!("data/{ns}/**"),
                format!("rels/forward/{ns}.parquet"),
                format!("rels/reverse/{ns}.parquet"),
                format!("indexes/*/{ns}.*"),
            ] {
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
        let build = |b: GlobSetBuilder| b.build().map_err(|e| Error::Invalid(e.to_string()));
        Ok(Selection {
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
}
