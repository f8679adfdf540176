//! `--metrics-file`: a run's figures in Prometheus text format, for
//! node_exporter's textfile collector.
//!
//! Every series is labelled by `command` and `remote`. The file is
//! rewritten atomically (a temporary file in the same directory, synced,
//! then renamed over it), keeping the series of other commands and remotes
//! already in it, so one file can serve a whole cron script. When a run
//! fails, its `pqsync_last_success_timestamp_seconds` keeps the value of
//! the last run that succeeded.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pqsync_core::Usage;
use serde_json::Value;

/// The families written, with their help text, in the order written.
const FAMILIES: [(&str, &str); 10] = [
    (
        "pqsync_last_success_timestamp_seconds",
        "When the command last succeeded against the remote (Unix time).",
    ),
    (
        "pqsync_run_timestamp_seconds",
        "When the last run ended (Unix time).",
    ),
    ("pqsync_run_success", "1 when the last run succeeded."),
    ("pqsync_run_duration_seconds", "How long the last run took."),
    (
        "pqsync_run_files_changed",
        "Files the last run uploaded, downloaded or deleted.",
    ),
    ("pqsync_run_errors", "Errors in the last run."),
    (
        "pqsync_run_requests",
        "Requests of the last run by R2 billing class (a, b, free).",
    ),
    (
        "pqsync_run_bytes_uploaded",
        "Bytes the last run sent in request bodies.",
    ),
    (
        "pqsync_run_bytes_downloaded",
        "Bytes the last run received in response bodies.",
    ),
    (
        "pqsync_run_requests_total",
        "Requests of the last run, all classes.",
    ),
];

/// What one run did.
#[derive(Debug)]
pub struct Run {
    /// The subcommand (`push`, `backup`, …).
    pub command: String,
    /// Each remote the run opened, in order, with its usage.
    pub remotes: Vec<(String, Usage)>,
    /// How long the run took.
    pub duration: Duration,
    /// Whether it succeeded.
    pub success: bool,
    /// The JSON document the command produced, if any (for files changed
    /// and errors).
    pub document: Option<Value>,
}

/// One sample: a family, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Escapes a label value (`\`, `"` and newlines).
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes `run` into `path` at time `now`.
///
/// # Errors
/// The I/O error, with the path.
pub fn write(path: &Path, run: &Run, now: SystemTime) -> std::io::Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(t) => parse(&t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let samples = merge(old, run, now);
    let text = render(&samples);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.unwrap_or_else(|| "metrics".into()),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The old samples of other commands and remotes, then this run's.
fn merge(old: Vec<Sample>, run: &Run, now: SystemTime) -> Vec<Sample> {
    let primary = run
        .remotes
        .last()
        .map(|(u, _)| u.clone())
        .unwrap_or_default();
    let ours = |s: &Sample| {
        s.label("command") == Some(run.command.as_str())
            && s.label("remote")
                .is_some_and(|r| r == primary || run.remotes.iter().any(|(u, _)| u == r))
    };
    let previous_success = old
        .iter()
        .find(|s| {
            s.name == "pqsync_last_success_timestamp_seconds"
                && s.label("command") == Some(run.command.as_str())
                && s.label("remote") == Some(primary.as_str())
        })
        .map(|s| s.value);
    let mut out: Vec<Sample> = old.into_iter().filter(|s| !ours(s)).collect();
    let labels = |remote: &str| {
        vec![
            ("command".to_string(), run.command.clone()),
            ("remote".to_string(), remote.to_string()),
        ]
    };
    let mut add = |name: &str, remote: &str, extra: Option<(&str, &str)>, value: f64| {
        let mut l = labels(remote);
        if let Some((k, v)) = extra {
            l.push((k.to_string(), v.to_string()));
        }
        out.push(Sample {
            name: name.to_string(),
            labels: l,
            value,
        });
    };
    let now_secs = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let success = if run.success {
        Some(now_secs)
    } else {
        previous_success
    };
    if let Some(t) = success {
        add("pqsync_last_success_timestamp_seconds", &primary, None, t);
    }
    add("pqsync_run_timestamp_seconds", &primary, None, now_secs);
    add(
        "pqsync_run_success",
        &primary,
        None,
        if run.success { 1.0 } else { 0.0 },
    );
    add(
        "pqsync_run_duration_seconds",
        &primary,
        None,
        run.duration.as_secs_f64(),
    );
    let (changed, errors) = outcome(run.document.as_ref());
    add("pqsync_run_files_changed", &primary, None, changed as f64);
    let errors = if run.success { errors } else { errors.max(1) };
    add("pqsync_run_errors", &primary, None, errors as f64);
    for (remote, u) in &run.remotes {
        let free = u.requests.saturating_sub(u.class_a + u.class_b);
        for (class, n) in [("a", u.class_a), ("b", u.class_b), ("free", free)] {
            add(
                "pqsync_run_requests",
                remote,
                Some(("class", class)),
                n as f64,
            );
        }
        add("pqsync_run_requests_total", remote, None, u.requests as f64);
        add(
            "pqsync_run_bytes_uploaded",
            remote,
            None,
            u.bytes_sent as f64,
        );
        add(
            "pqsync_run_bytes_downloaded",
            remote,
            None,
            u.bytes_received as f64,
        );
    }
    out
}

/// Files changed and errors, from a command's JSON document: the lengths
/// (or values) of `uploaded`, `downloaded` and `deleted`, and of `errors`.
fn outcome(doc: Option<&Value>) -> (u64, u64) {
    let Some(doc) = doc else { return (0, 0) };
    let count = |v: &Value| match v {
        Value::Array(a) => a.len() as u64,
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    };
    let changed = ["uploaded", "downloaded", "deleted"]
        .iter()
        .filter_map(|k| doc.get(*k))
        .map(count)
        .sum();
    let errors = doc.get("errors").map(count).unwrap_or(0);
    (changed, errors)
}

/// The text: each family's HELP and TYPE, then its samples.
fn render(samples: &[Sample]) -> String {
    let mut by_family: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_family.entry(s.name.as_str()).or_default().push(s);
    }
    let mut out = String::new();
    for (name, help) in FAMILIES {
        let Some(list) = by_family.get(name) else {
            continue;
        };
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for s in list {
            let labels: Vec<String> = s
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            out.push_str(&format!("{name}{{{}}} {}\n", labels.join(","), s.value));
        }
    }
    out
}

/// The samples of a file this module wrote (other lines are dropped).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .filter(|s| FAMILIES.iter().any(|(n, _)| *n == s.name))
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let open = line.find('{')?;
    let close = line.rfind('}')?;
    let name = line[..open].to_string();
    let value = line[close + 1..].trim().parse().ok()?;
    let mut labels = Vec::new();
    let mut rest = &line[open + 1..close];
    while !rest.is_empty() {
        let eq = rest.find("=\"")?;
        let key = rest[..eq].trim_start_matches(',').to_string();
        let mut value = String::new();
        let mut chars = rest[eq + 2..].char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => {
                    end = Some(eq + 2 + i + 1);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key, value));
        rest = &rest[end?..];
    }
    Some(Sample {
        name,
        labels,
        value,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &str, remote: &str, success: bool) -> Run {
        Run {
            command: command.into(),
            remotes: vec![(remote.into(), Usage::default())],
            duration: Duration::from_millis(1500),
            success,
            document: Some(serde_json::json!({
                "uploaded": ["a", "b"], "downloaded": [], "deleted": 1, "errors": []
            })),
        }
    }

    #[test]
    fn samples_round_trip_through_the_text() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000);
        let samples = merge(Vec::new(), &run("push", "s3://b/\"q\"\\x", true), now);
        let text = render(&samples);
        assert!(
            text.contains(
                "pqsync_run_files_changed{command=\"push\",remote=\"s3://b/\\\"q\\\"\\\\x\"} 3\n"
            ),
            "{text}"
        );
        let mut back = parse(&text);
        let mut want = samples.clone();
        back.sort_by(|a, b| a.name.cmp(&b.name));
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back, want);
    }

    #[test]
    fn other_series_stay_and_a_failure_keeps_the_last_success() {
        let t1 = UNIX_EPOCH + Duration::from_secs(1_000);
        let t2 = UNIX_EPOCH + Duration::from_secs(2_000);
        let first = merge(Vec::new(), &run("push", "s3://b/p", true), t1);
        let with_backup = merge(first, &run("backup", "s3://b/r", true), t1);
        let after = merge(with_backup, &run("push", "s3://b/p", false), t2);
        let get = |cmd: &str, name: &str| {
            after
                .iter()
                .find(|s| s.name == name && s.label("command") == Some(cmd))
                .map(|s| s.value)
        };
        assert_eq!(
            get("push", "pqsync_last_success_timestamp_seconds"),
            Some(1000.0)
        );
        assert_eq!(get("push", "pqsync_run_timestamp_seconds"), Some(2000.0));
        assert_eq!(get("push", "pqsync_run_success"), Some(0.0));
        assert_eq!(get("backup", "pqsync_run_success"), Some(1.0));
        assert_eq!(
            after
                .iter()
                .filter(|s| s.name == "pqsync_run_success")
                .count(),
            2
        );
    }
}
