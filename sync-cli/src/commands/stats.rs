//! `pqsync stats`: what a database holds, from manifests and footers.

use anyhow::Result;

use super::Session;
use crate::cli::StatsArgs;
use crate::printer::bytes;
use crate::ExitStatus;

/// Prints per-namespace and event-log figures.
pub async fn run(args: &StatsArgs, s: &Session) -> Result<ExitStatus> {
    let printer = s.printer;
    let target = args.target.clone().unwrap_or_else(|| ".".into());
    let tree = s.open_target(&target, &args.remote_flags)?;
    let stats = pqsync_core::stats(tree.as_ref(), usize::from(args.concurrency)).await?;
    for w in &stats.warnings {
        printer.warn(w);
    }
    printer.document(&stats);
    if !printer.is_json() {
        printer.info(&format!(
            "{}: {} files, {}",
            stats.target,
            stats.files,
            bytes(stats.bytes)
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
                bytes(n.bytes),
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
                bytes(e.bytes),
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
