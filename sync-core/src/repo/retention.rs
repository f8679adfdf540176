//! Which snapshots a retention policy keeps, with restic's semantics:
//! calendar periods (in UTC), the newest snapshot of each period, as many
//! periods as the rule says counting back from the newest snapshot, and
//! the rules ORed.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use super::Snapshot;
use crate::error::{Error, Result};

/// The calendar period of a time, as a number that changes when the
/// period does.
type Period = fn(&DateTime<Utc>) -> i64;

/// A retention policy. A count of `None` leaves its rule out; `Some(-1)`
/// keeps every period (restic's `unlimited`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N snapshots.
    pub last: Option<i64>,
    /// The newest snapshot of each of the last N hours that have one.
    pub hourly: Option<i64>,
    /// ... of each of the last N days.
    pub daily: Option<i64>,
    /// ... of each of the last N ISO weeks.
    pub weekly: Option<i64>,
    /// ... of each of the last N months.
    pub monthly: Option<i64>,
    /// ... of each of the last N years.
    pub yearly: Option<i64>,
    /// Every snapshot no older than this before the newest one.
    pub within: Option<chrono::Duration>,
    /// Every snapshot carrying any of these tags.
    pub tags: Vec<String>,
}

impl Policy {
    /// Whether the policy names no rule at all.
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    fn rules(&self) -> Vec<(&'static str, i64, Period)> {
        fn last(_: &DateTime<Utc>) -> i64 {
            i64::MIN
        }
        fn hour(t: &DateTime<Utc>) -> i64 {
            day(t) * 100 + i64::from(t.hour())
        }
        fn day(t: &DateTime<Utc>) -> i64 {
            i64::from(t.year()) * 10_000 + i64::from(t.month()) * 100 + i64::from(t.day())
        }
        fn week(t: &DateTime<Utc>) -> i64 {
            let w = t.iso_week();
            i64::from(w.year()) * 100 + i64::from(w.week())
        }
        fn month(t: &DateTime<Utc>) -> i64 {
            i64::from(t.year()) * 100 + i64::from(t.month())
        }
        fn year(t: &DateTime<Utc>) -> i64 {
            i64::from(t.year())
        }
        [
            ("last", self.last, last as Period),
            ("hourly", self.hourly, hour),
            ("daily", self.daily, day),
            ("weekly", self.weekly, week),
            ("monthly", self.monthly, month),
            ("yearly", self.yearly, year),
        ]
        .into_iter()
        .filter_map(|(n, c, f)| c.map(|c| (n, c, f)))
        .collect()
    }

    /// Parses a duration such as `7d`, `2w`, `1y6mo` or `36h`: numbers
    /// with the units `y` (365 days), `mo` (30 days), `w`, `d`, `h`, `min`
    /// (or `m`) and `s`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the units.
    pub fn parse_duration(s: &str) -> Result<chrono::Duration> {
        let bad = || {
            Error::InvalidArgument {
            argument: "duration",
            reason: format!("{s:?} is not a duration: use a number and a unit, such as 7d, 2w, 3mo, 1y, 36h or 90min"),
        }
        };
        let mut total = chrono::Duration::zero();
        let mut rest = s.trim();
        if rest.is_empty() {
            return Err(bad());
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(bad());
            }
            let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let d = match unit {
                "y" => chrono::Duration::days(365 * n),
                "mo" => chrono::Duration::days(30 * n),
                "w" => chrono::Duration::weeks(n),
                "d" => chrono::Duration::days(n),
                "h" => chrono::Duration::hours(n),
                "min" | "m" => chrono::Duration::minutes(n),
                "s" => chrono::Duration::seconds(n),
                _ => return Err(bad()),
            };
            total += d;
        }
        Ok(total)
    }
}

/// What a policy decided about one snapshot.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// The snapshot's id.
    pub id: String,
    /// Its time.
    pub time: String,
    /// Why it is kept (`daily 2026-02-01`, `tag daily`, ...); empty when it
    /// is removed.
    pub reasons: Vec<String>,
}

/// A group of snapshots and what the policy decided for each.
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    /// The values the snapshots share (`host=...`, `database=...`, ...).
    pub key: String,
    /// Kept snapshots, newest first, with their reasons.
    pub keep: Vec<Decision>,
    /// Removed snapshots, newest first.
    pub remove: Vec<Decision>,
}

/// What `forget` decided (and did, unless it was a dry run).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForgetReport {
    /// Every group.
    pub groups: Vec<Group>,
    /// Snapshot records deleted.
    pub removed: usize,
}

/// How snapshots are grouped before a policy applies to each group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// By the host that made them.
    pub host: bool,
    /// By database (`databaseId`).
    pub database: bool,
    /// By their set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            database: true,
            tags: false,
        }
    }
}

impl GroupBy {
    /// Parses `host,database,tags` (any of them, comma-separated; empty for
    /// one group).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unknown field.
    pub fn parse(s: &str) -> Result<Self> {
        let mut g = GroupBy {
            host: false,
            database: false,
            tags: false,
        };
        for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match f {
                "host" => g.host = true,
                "database" => g.database = true,
                "tags" => g.tags = true,
                other => {
                    return Err(Error::InvalidArgument {
                        argument: "--group-by",
                        reason: format!("{other:?} is not host, database or tags"),
                    })
                }
            }
        }
        Ok(g)
    }

    fn key(&self, s: &Snapshot) -> String {
        let mut parts = Vec::new();
        if self.host {
            parts.push(format!("host={}", s.record.host));
        }
        if self.database {
            parts.push(format!("database={}", s.record.name));
        }
        if self.tags {
            let mut t = s.record.tags.clone();
            t.sort();
            parts.push(format!("tags={}", t.join(",")));
        }
        if self.database {
            // Names can repeat; ids cannot.
            parts.push(format!("id={}", &s.record.database_id));
        }
        parts.join(" ")
    }
}

/// Applies `policy` to `snapshots` (any order), grouped by `group_by`.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty policy: it would remove every
/// snapshot.
pub fn apply(policy: &Policy, snapshots: &[Snapshot], group_by: GroupBy) -> Result<Vec<Group>> {
    if policy.is_empty() {
        return Err(Error::InvalidArgument {
            argument: "policy",
            reason: "no --keep-* option given: forget would remove every snapshot; give at least one (for example --keep-daily 7)".into(),
        });
    }
    let mut groups: BTreeMap<String, Vec<&Snapshot>> = BTreeMap::new();
    for s in snapshots {
        groups.entry(group_by.key(s)).or_default().push(s);
    }
    Ok(groups
        .into_iter()
        .map(|(key, mut list)| {
            list.sort_by(|a, b| b.time().cmp(&a.time()).then_with(|| b.id.cmp(&a.id)));
            let (keep, remove) = apply_group(policy, &list);
            Group { key, keep, remove }
        })
        .collect())
}

/// One group, newest first.
fn apply_group(policy: &Policy, list: &[&Snapshot]) -> (Vec<Decision>, Vec<Decision>) {
    let mut rules: Vec<(&str, i64, Period, Option<i64>)> = policy
        .rules()
        .into_iter()
        .map(|(n, c, f)| (n, c, f, None))
        .collect();
    let newest = list.first().map(|s| s.time());
    let (mut keep, mut remove) = (Vec::new(), Vec::new());
    for (i, s) in list.iter().enumerate() {
        let t = s.time();
        let mut reasons = Vec::new();
        for (name, count, period, last) in &mut rules {
            if *count == 0 {
                continue;
            }
            // "last" counts every snapshot; the others the first (newest)
            // snapshot of each new period.
            let value = if *name == "last" {
                i as i64
            } else {
                period(&t)
            };
            if *last != Some(value) {
                *last = Some(value);
                if *count > 0 {
                    *count -= 1;
                }
                reasons.push(match *name {
                    "last" => "last".to_string(),
                    n => format!("{n} {}", label(n, &t)),
                });
            }
        }
        if let (Some(w), Some(n)) = (policy.within, newest) {
            if t >= n - w {
                reasons.push("within".into());
            }
        }
        for tag in &policy.tags {
            if s.record.tags.contains(tag) {
                reasons.push(format!("tag {tag}"));
            }
        }
        let d = Decision {
            id: s.id.clone(),
            time: s.record.time.clone(),
            reasons,
        };
        if d.reasons.is_empty() {
            remove.push(d);
        } else {
            keep.push(d);
        }
    }
    (keep, remove)
}

fn label(rule: &str, t: &DateTime<Utc>) -> String {
    match rule {
        "hourly" => t.format("%Y-%m-%d %H:00").to_string(),
        "daily" => t.format("%Y-%m-%d").to_string(),
        "weekly" => {
            let w = t.iso_week();
            format!("{}-W{:02}", w.year(), w.week())
        }
        "monthly" => t.format("%Y-%m").to_string(),
        _ => t.format("%Y").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::{SnapshotRecord, SnapshotSummary};

    fn snap(time: &str, host: &str, tags: &[&str]) -> Snapshot {
        Snapshot {
            id: format!("{:064x}", blake3_like(time, host)),
            record: SnapshotRecord {
                snapshot: 1,
                time: time.into(),
                host: host.into(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
                source: "/db".into(),
                parent: None,
                database_id: "db1".into(),
                name: "db".into(),
                event_log: None,
                summary: SnapshotSummary::default(),
                manifest: None,
            },
        }
    }

    fn blake3_like(a: &str, b: &str) -> u128 {
        let h = blake3::hash(format!("{a}{b}").as_bytes());
        u128::from_le_bytes(h.as_bytes()[..16].try_into().unwrap())
    }

    /// The times kept, newest first, and those removed.
    fn run(policy: &Policy, snaps: &[Snapshot]) -> (Vec<String>, Vec<String>) {
        let groups = apply(policy, snaps, GroupBy::default()).unwrap();
        let mut keep = Vec::new();
        let mut remove = Vec::new();
        for g in groups {
            keep.extend(g.keep.into_iter().map(|d| d.time));
            remove.extend(g.remove.into_iter().map(|d| d.time));
        }
        (keep, remove)
    }

    #[test]
    fn the_guides_daily_weekly_monthly_policy() {
        // A snapshot at 02:00 every day from 2025-01-01 to 2026-02-01 (a
        // Sunday).
        let mut snaps = Vec::new();
        let mut d = chrono::NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let end = chrono::NaiveDate::from_ymd_opt(2026, 2, 1).unwrap();
        while d <= end {
            snaps.push(snap(&format!("{d}T02:00:00Z"), "h", &[]));
            d = d.succ_opt().unwrap();
        }
        let policy = Policy {
            daily: Some(7),
            weekly: Some(4),
            monthly: Some(12),
            ..Policy::default()
        };
        let (keep, remove) = run(&policy, &snaps);
        let days: Vec<&str> = keep.iter().map(|t| &t[..10]).collect();
        // Daily: Feb 1 and Jan 31..26. Weekly (ISO weeks, newest of each):
        // Feb 1 (W05), Jan 25, 18 and 11. Monthly: Feb 1, Jan 31, and the
        // last day of each month back to March 2025.
        assert_eq!(
            days,
            [
                "2026-02-01",
                "2026-01-31",
                "2026-01-30",
                "2026-01-29",
                "2026-01-28",
                "2026-01-27",
                "2026-01-26",
                "2026-01-25",
                "2026-01-18",
                "2026-01-11",
                "2025-12-31",
                "2025-11-30",
                "2025-10-31",
                "2025-09-30",
                "2025-08-31",
                "2025-07-31",
                "2025-06-30",
                "2025-05-31",
                "2025-04-30",
                "2025-03-31",
            ]
        );
        assert_eq!(keep.len() + remove.len(), snaps.len());
        let groups = apply(&policy, &snaps, GroupBy::default()).unwrap();
        let first = &groups[0].keep[0];
        assert_eq!(
            first.reasons,
            ["daily 2026-02-01", "weekly 2026-W05", "monthly 2026-02"]
        );
    }

    #[test]
    fn several_a_day_gaps_within_and_tags() {
        let snaps = [
            snap("2026-03-05T10:00:00Z", "h", &[]),
            snap("2026-03-05T08:00:00Z", "h", &[]),
            snap("2026-03-03T12:00:00Z", "h", &[]),
            snap("2026-03-03T09:00:00Z", "h", &[]),
            snap("2026-03-01T23:00:00Z", "h", &["keep"]),
        ];
        let p = Policy {
            last: Some(2),
            daily: Some(2),
            ..Policy::default()
        };
        let (keep, remove) = run(&p, &snaps);
        assert_eq!(
            keep,
            [
                "2026-03-05T10:00:00Z",
                "2026-03-05T08:00:00Z",
                "2026-03-03T12:00:00Z"
            ]
        );
        assert_eq!(remove, ["2026-03-03T09:00:00Z", "2026-03-01T23:00:00Z"]);

        // Within is measured from the newest snapshot, not from now.
        let p = Policy {
            within: Some(chrono::Duration::days(2)),
            tags: vec!["keep".into()],
            ..Policy::default()
        };
        let (keep, remove) = run(&p, &snaps);
        assert_eq!(
            keep,
            [
                "2026-03-05T10:00:00Z",
                "2026-03-05T08:00:00Z",
                "2026-03-03T12:00:00Z",
                "2026-03-01T23:00:00Z"
            ]
        );
        assert_eq!(remove, ["2026-03-03T09:00:00Z"]);
    }

    #[test]
    fn hours_iso_weeks_across_new_year_and_unlimited() {
        let snaps = [
            snap("2026-01-01T10:59:00Z", "h", &[]),
            snap("2026-01-01T10:01:00Z", "h", &[]),
            snap("2025-12-29T09:00:00Z", "h", &[]),
            snap("2025-12-28T09:00:00Z", "h", &[]),
            snap("2025-11-15T09:00:00Z", "h", &[]),
        ];
        let hourly = Policy {
            hourly: Some(2),
            ..Policy::default()
        };
        let (keep, _) = run(&hourly, &snaps);
        assert_eq!(keep, ["2026-01-01T10:59:00Z", "2025-12-29T09:00:00Z"]);
        // 2025-12-29 is a Monday of ISO week 2026-W01, like 2026-01-01;
        // 2025-12-28 ends 2025-W52.
        let weekly = Policy {
            weekly: Some(5),
            ..Policy::default()
        };
        let (keep, _) = run(&weekly, &snaps);
        assert_eq!(
            keep,
            [
                "2026-01-01T10:59:00Z",
                "2025-12-28T09:00:00Z",
                "2025-11-15T09:00:00Z"
            ]
        );
        let monthly = Policy {
            monthly: Some(-1),
            ..Policy::default()
        };
        let (keep, _) = run(&monthly, &snaps);
        assert_eq!(
            keep,
            [
                "2026-01-01T10:59:00Z",
                "2025-12-29T09:00:00Z",
                "2025-11-15T09:00:00Z"
            ]
        );
    }

    #[test]
    fn groups_apply_the_policy_each_and_empty_is_refused() {
        let snaps = [
            snap("2026-03-05T10:00:00Z", "a", &[]),
            snap("2026-03-04T10:00:00Z", "a", &[]),
            snap("2026-03-03T10:00:00Z", "b", &[]),
        ];
        let p = Policy {
            last: Some(1),
            ..Policy::default()
        };
        let (keep, remove) = run(&p, &snaps);
        assert_eq!(keep, ["2026-03-05T10:00:00Z", "2026-03-03T10:00:00Z"]);
        assert_eq!(remove, ["2026-03-04T10:00:00Z"]);
        let one_group = GroupBy::parse("").unwrap();
        let groups = apply(&p, &snaps, one_group).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups[0].keep.len(), 1);
        assert!(apply(&Policy::default(), &snaps, one_group).is_err());
        assert!(GroupBy::parse("paths").is_err());
    }

    #[test]
    fn durations_parse() {
        let d = |s| Policy::parse_duration(s).unwrap();
        assert_eq!(d("7d"), chrono::Duration::days(7));
        assert_eq!(d("1y6mo"), chrono::Duration::days(365 + 180));
        assert_eq!(d("36h"), chrono::Duration::hours(36));
        assert_eq!(d("2w"), chrono::Duration::weeks(2));
        assert!(Policy::parse_duration("7 days").is_err());
        assert!(Policy::parse_duration("").is_err());
    }
}
