//! The event log: ParqueDB's event segment manifest and the checks on its
//! sequence numbers.

use serde::{Deserialize, Serialize};

use crate::layout::EVENT_MANIFESTS;

/// ParqueDB's event segment manifest.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventManifest {
    /// Format version (1).
    #[serde(default)]
    pub version: Option<u64>,
    /// Sealed segments, in `seq` order.
    pub segments: Vec<Segment>,
    /// The seq the next segment will get.
    #[serde(default)]
    pub next_seq: Option<u64>,
    /// Events in all segments.
    #[serde(default)]
    pub total_events: Option<u64>,
}

/// One sealed segment of the event log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Sequence number, from 1, without gaps.
    pub seq: u64,
    /// Path of the segment file.
    pub path: String,
    /// Earliest event time (ms since the epoch).
    #[serde(default)]
    pub min_ts: Option<i64>,
    /// Latest event time (ms since the epoch).
    #[serde(default)]
    pub max_ts: Option<i64>,
    /// Events in the segment.
    #[serde(default)]
    pub count: Option<u64>,
    /// Size of the segment file.
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

impl Segment {
    /// The segment's path relative to the database root (manifests may
    /// name it relative to `events/`).
    pub fn file(&self) -> String {
        let p = self.path.trim_start_matches("./");
        if p.starts_with("events/") {
            p.to_string()
        } else {
            format!("events/{p}")
        }
    }
}

impl EventManifest {
    /// Parses an event segment manifest.
    ///
    /// # Errors
    /// A one-line reason.
    pub fn parse(bytes: &[u8]) -> std::result::Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("does not parse: {e}"))
    }

    /// Problems with the seq numbers: segments out of order, repeated seqs,
    /// gaps (a missing segment), and a `nextSeq` at or below a listed seq.
    pub fn seq_problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut prev: Option<u64> = None;
        for s in &self.segments {
            match prev {
                Some(p) if s.seq == p => out.push(format!("segment seq {} is listed twice", s.seq)),
                Some(p) if s.seq < p => out.push(format!(
                    "segment seq {} is listed after seq {p}: segments are out of order",
                    s.seq
                )),
                Some(p) if s.seq > p + 1 => out.push(if s.seq == p + 2 {
                    format!(
                        "segment seq {} is missing (gap between {p} and {})",
                        p + 1,
                        s.seq
                    )
                } else {
                    format!(
                        "segments seq {}..={} are missing (gap between {p} and {})",
                        p + 1,
                        s.seq - 1,
                        s.seq
                    )
                }),
                _ => {}
            }
            prev = Some(prev.map_or(s.seq, |p| p.max(s.seq)));
        }
        if let (Some(next), Some(last)) = (self.next_seq, prev) {
            if next <= last {
                out.push(format!(
                    "nextSeq {next} is not after the last segment's seq {last}"
                ));
            }
        }
        out
    }
}

/// Seq problems of a local directory's event segment manifest, for
/// `status`: gaps, repeats and disorder. Empty when there is no event log.
pub fn local_event_problems(root: &std::path::Path) -> Vec<String> {
    for mpath in EVENT_MANIFESTS {
        if let Ok(bytes) = std::fs::read(root.join(mpath)) {
            return match EventManifest::parse(&bytes) {
                Ok(m) => {
                    let mut out: Vec<String> = m
                        .seq_problems()
                        .into_iter()
                        .map(|w| format!("{mpath}: {w}"))
                        .collect();
                    for s in &m.segments {
                        if !root.join(s.file()).is_file() {
                            out.push(format!(
                                "{mpath}: segment seq {} ({}) is missing",
                                s.seq,
                                s.file()
                            ));
                        }
                    }
                    out
                }
                Err(why) => vec![format!("{mpath}: {why}")],
            };
        }
    }
    Vec::new()
}

/// The event log a database holds: its newest sealed segment and its
/// newest event.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventCoverage {
    /// The highest sealed segment seq.
    #[serde(default)]
    pub last_seq: Option<u64>,
    /// The id of the newest event (ParqueDB's ids are ULIDs, which sort by
    /// time), from the Parquet statistics of the `id` column.
    #[serde(default)]
    pub last_event_id: Option<String>,
    /// The newest event's `ts` (ms since the epoch).
    #[serde(default)]
    pub max_ts: Option<i64>,
}

/// What the event log of the database at `root` covers: the segment
/// manifest's last seq and newest `maxTs`, and the newest event id and
/// `ts` in the last segment's and `events/current.parquet`'s footers.
/// `None` when the database has no event log.
pub(crate) fn local_coverage(root: &std::path::Path) -> Option<EventCoverage> {
    let manifest = EVENT_MANIFESTS
        .iter()
        .find_map(|p| std::fs::read(root.join(p)).ok())
        .and_then(|b| EventManifest::parse(&b).ok());
    let mut c = EventCoverage::default();
    let mut files = vec!["events/current.parquet".to_string()];
    if let Some(m) = &manifest {
        let last = m.segments.iter().max_by_key(|s| s.seq);
        c.last_seq = last.map(|s| s.seq);
        c.max_ts = m.segments.iter().filter_map(|s| s.max_ts).max();
        files.extend(last.map(Segment::file));
    }
    for f in files {
        let Some(info) = local_footer(&root.join(&f)) else {
            continue;
        };
        if let Some((_, hi)) = info.ts_range {
            c.max_ts = Some(c.max_ts.map_or(hi, |m| m.max(hi)));
        }
        if let Some(id) = info.id_max {
            if c.last_event_id.as_deref().is_none_or(|m| id.as_str() > m) {
                c.last_event_id = Some(id);
            }
        }
    }
    (c != EventCoverage::default()).then_some(c)
}

/// A local Parquet file's footer, read from its last bytes.
fn local_footer(path: &std::path::Path) -> Option<super::footer::ParquetInfo> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    let mut head = [0u8; 4];
    f.read_exact(&mut head).ok()?;
    let mut want = super::footer::FOOTER_PROBE.min(size);
    for _ in 0..2 {
        f.seek(SeekFrom::Start(size - want)).ok()?;
        let mut tail = vec![0u8; want as usize];
        f.read_exact(&mut tail).ok()?;
        match super::footer::parse_footer(size, &head, &tail) {
            Ok(info) => return Some(info),
            Err(super::footer::FooterError::NeedTail(n)) if n <= size => want = n,
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(seqs: &[u64], next: u64) -> EventManifest {
        EventManifest {
            version: Some(1),
            segments: seqs
                .iter()
                .map(|&seq| Segment {
                    seq,
                    path: format!("events/seg-{seq:04}.parquet"),
                    min_ts: None,
                    max_ts: None,
                    count: None,
                    size_bytes: None,
                })
                .collect(),
            next_seq: Some(next),
            total_events: None,
        }
    }

    #[test]
    fn seq_gaps_and_disorder() {
        assert!(manifest(&[1, 2, 3], 4).seq_problems().is_empty());
        assert_eq!(
            manifest(&[1, 3], 4).seq_problems(),
            ["segment seq 2 is missing (gap between 1 and 3)"]
        );
        assert_eq!(
            manifest(&[1, 5], 6).seq_problems(),
            ["segments seq 2..=4 are missing (gap between 1 and 5)"]
        );
        assert_eq!(
            manifest(&[2, 1], 3).seq_problems(),
            ["segment seq 1 is listed after seq 2: segments are out of order"]
        );
        assert_eq!(
            manifest(&[1, 2], 2).seq_problems(),
            ["nextSeq 2 is not after the last segment's seq 2"]
        );
    }

    #[test]
    fn segment_paths_relative_to_events() {
        let s = |p: &str| Segment {
            seq: 1,
            path: p.into(),
            min_ts: None,
            max_ts: None,
            count: None,
            size_bytes: None,
        };
        assert_eq!(s("seg-0001.parquet").file(), "events/seg-0001.parquet");
        assert_eq!(
            s("events/seg-0001.parquet").file(),
            "events/seg-0001.parquet"
        );
    }
}
