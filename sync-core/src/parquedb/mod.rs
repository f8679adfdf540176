//! What pqsync knows about ParqueDB's files beyond syncing them: Parquet
//! footers, relationship files, bloom filters and the event log, and the
//! three things built on reading them without moving them: `verify` (the
//! backup guide's checks), `stats` (what a database holds) and the manifest
//! rebuild.

mod bloom;
mod eventlog;
mod events;
mod footer;
mod inspect;
pub(crate) mod rebuild;
mod relationships;
mod stats;
mod verify;

pub use eventlog::{
    entities_in_tree, entity_at, events_in_dir, events_in_tree, replay, EntityState, EventQuery,
    EventRecord, EventScan,
};
pub(crate) use events::{local_coverage, local_event_problems};
pub use events::{EventCoverage, EventManifest};
pub use rebuild::{rebuild_local, rebuild_remote, RebuildReport};
pub use stats::{stats, EventStats, NamespaceStats, Stats};
pub use verify::{
    verify, Check, FileReport, Finding, Severity, VerifyOptions, VerifyReport, VerifySummary,
};
