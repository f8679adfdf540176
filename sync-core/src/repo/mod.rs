//! The snapshot repository: deduplicated, versioned backups with retention
//! and point-in-time restore. This folder is where it lives; it has no
//! items yet, and the crate exports none.
