//! `pqsync stats`: what a database holds, from manifests and footers.

use anyhow::Result;

use crate::cli::{GlobalArgs, StatsArgs};
use crate::printer::{human_bytes, Printer};
use crate::ExitStatus;

/// Prints per-namespace and event-log figures.
pub async fn run(args: &StatsArgs, g: &GlobalArgs, printer: &Printer) -> Result<ExitStatus> {
    let target = args.target.clone().unwrap_or_else(|| ".".into());
    let tree = super::open_target(&target, g)?;
    let stats = pqsync_core::stats::stats(&tree, usize::from(g.concurrency)).await?;
    for w in &stats.warnings {
        printer.warn(w);
    }
    printer.json(&stats);
    if !printer.json {
        printer.info(&format!(
            "{}: {} files, {}",
            stats.target,
            stats.files,
            human_bytes(stats.bytes)
        ));
        if !stats.namespaces.is_empty() {
            printer.info(&format!(
                "  {:<20} {:>7} {:>11} {:>10} {:>10} {:>10}",
                "namespace", "files", "bytes", "entities", "rels out", "rels in"
            ));
        }
        for (ns, n) in &stats.namespaces {
            printer.info(&format!(
                "  {:<20} {:>7} {:>11} {:>10} {:>10} {:>10}",
                ns,
                n.files,
                human_bytes(n.bytes),
                n.entities,
                n.forward_relationships,
                n.reverse_relationships
            ));
        }
        if let Some(e) = &stats.events {
            printer.info(&format!(
                "  events: {} segments, {} events ({} in current.parquet), {}{}",
                e.segments,
                e.events,
                e.current_events,
                human_bytes(e.bytes),
                match (&e.from, &e.to) {
                    (Some(a), Some(b)) => format!(", {a} .. {b}"),
                    _ => String::new(),
                }
            ));
        }
        printer.info(&format!("{} request(s)", stats.requests));
    }
    Ok(ExitStatus::Success)
}
