//! Modification times as manifests write them: ISO-8601, as JavaScript's
//! `Date.toISOString()` prints them.

use serde::{Deserialize, Serialize};

/// A modification time as a manifest writes it (ISO-8601). pqsync's own
/// form (UTC, milliseconds, `Z`) is kept as a number; any other text is kept
/// as written, so a manifest read and written again is unchanged.
#[derive(Clone, PartialEq, Eq)]
pub enum Timestamp {
    /// Milliseconds since the Unix epoch, written as `2026-01-01T00:00:00.000Z`.
    Millis(i64),
    /// Any other text.
    Text(Box<str>),
}

impl Timestamp {
    /// The time at `ms` milliseconds since the Unix epoch.
    pub fn from_millis(ms: i64) -> Timestamp {
        Timestamp::Millis(ms)
    }

    /// Reads a manifest's text.
    pub fn parse(s: &str) -> Timestamp {
        match canonical_millis(s.as_bytes()) {
            Some(ms) => Timestamp::Millis(ms),
            None => Timestamp::Text(s.into()),
        }
    }

    /// The time, if the text is a valid RFC 3339 time.
    pub fn to_datetime(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Timestamp::Millis(ms) => chrono::DateTime::from_timestamp_millis(*ms),
            Timestamp::Text(s) => chrono::DateTime::parse_from_rfc3339(s)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc)),
        }
    }
}

/// Milliseconds since the epoch of a time written exactly as
/// `YYYY-MM-DDTHH:MM:SS.mmmZ` with valid fields (the only text that
/// [`Timestamp::Millis`] writes back unchanged); `None` for anything else.
/// Parsed by hand: manifests of a million files hold a million of these.
fn canonical_millis(b: &[u8]) -> Option<i64> {
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        b[r].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec, ms) = (num(11..13)?, num(14..16)?, num(17..19)?, num(20..23)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > month_days[(mo - 1) as usize] {
        return None;
    }
    if h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    // Days from 1970-01-01 to the date (the civil-from-days inverse).
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

fn iso_millis(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

impl From<&str> for Timestamp {
    fn from(s: &str) -> Self {
        Timestamp::parse(s)
    }
}

impl From<String> for Timestamp {
    fn from(s: String) -> Self {
        Timestamp::parse(&s)
    }
}

impl From<std::time::SystemTime> for Timestamp {
    /// A file time to the nearest millisecond, as Node's `stat` gives
    /// ParqueDB its `mtime`: `Math.round` of the fractional milliseconds, so
    /// a half rounds up (towards the future), before 1970 too.
    fn from(t: std::time::SystemTime) -> Self {
        let ns: i128 = match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i128,
            Err(e) => -(e.duration().as_nanos() as i128),
        };
        Timestamp::Millis((ns + 500_000).div_euclid(1_000_000) as i64)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Timestamp::Millis(ms) => match iso_millis(*ms) {
                Some(s) => f.write_str(&s),
                None => write!(f, "{ms}"),
            },
            Timestamp::Text(s) => f.write_str(s),
        }
    }
}

impl std::fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}", self = self.to_string())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an ISO-8601 time")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Timestamp, E> {
                Ok(Timestamp::parse(v))
            }
        }
        d.deserialize_str(V)
    }
}

/// The current time as ParqueDB writes it: `2026-01-31T12:00:00.000Z`.
pub fn now_iso() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// ParqueDB's FsBackend ETag of a file: `"<mtimeMs in base 36>-<size in
/// base 36>"`, quotes included. `mtimeMs` is Node's fractional millisecond
/// time (`sec * 1000 + nsec / 1e6`, in floating point), printed as
/// JavaScript's `Number.prototype.toString(36)` prints it, fraction and all.
pub fn fs_etag(mtime_ns: i64, size: u64) -> String {
    let sec = mtime_ns.div_euclid(1_000_000_000);
    let nsec = mtime_ns.rem_euclid(1_000_000_000);
    let ms = sec as f64 * 1000.0 + nsec as f64 / 1e6;
    format!(
        "\"{}-{}\"",
        js_radix_string(ms, 36),
        js_radix_string(size as f64, 36)
    )
}

/// JavaScript's `Number.prototype.toString(radix)` for a finite number:
/// the integer digits, then as many fraction digits as tell the number
/// apart from its neighbours, the last one rounded half to even (the
/// algorithm ECMAScript engines use for a radix other than 10).
pub fn js_radix_string(value: f64, radix: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    debug_assert!((2..=36).contains(&radix) && value.is_finite());
    if value == 0.0 {
        return "0".into();
    }
    let r = f64::from(radix);
    let negative = value < 0.0;
    let value = value.abs();
    let mut integer = value.floor();
    let mut fraction = value - integer;
    // Fraction digits only down to the precision the double holds.
    let mut delta = (0.5 * (value.next_up() - value)).max(0.0f64.next_up());
    let mut frac: Vec<u8> = Vec::new();
    if fraction >= delta {
        loop {
            fraction *= r;
            delta *= r;
            let digit = fraction as u32;
            frac.push(DIGITS[digit as usize]);
            fraction -= f64::from(digit);
            if (fraction > 0.5 || (fraction == 0.5 && digit & 1 == 1)) && fraction + delta > 1.0 {
                // Round up, carrying through the digits written so far.
                loop {
                    match frac.pop() {
                        None => {
                            integer += 1.0;
                            break;
                        }
                        Some(c) => {
                            let d = (c as char).to_digit(36).expect("a digit");
                            if d + 1 < radix {
                                frac.push(DIGITS[(d + 1) as usize]);
                                break;
                            }
                        }
                    }
                }
                break;
            }
            if fraction < delta {
                break;
            }
        }
    }
    // Integer digits; those below the double's precision are zeros.
    let mut int_digits: Vec<u8> = Vec::new();
    let exponent = |x: f64| ((x.to_bits() >> 52) & 0x7ff) as i64 - 1075;
    while exponent(integer / r) > 0 {
        integer /= r;
        int_digits.push(b'0');
    }
    loop {
        let remainder = integer % r;
        int_digits.push(DIGITS[remainder as usize]);
        integer = (integer - remainder) / r;
        if integer <= 0.0 {
            break;
        }
    }
    let mut out = String::with_capacity(int_digits.len() + frac.len() + 2);
    if negative {
        out.push('-');
    }
    out.extend(int_digits.iter().rev().map(|&b| b as char));
    if !frac.is_empty() {
        out.push('.');
        out.extend(frac.iter().map(|&b| b as char));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FileEntry;
    use std::borrow::Cow;

    #[test]
    fn file_times_round_to_the_millisecond_as_node_does() {
        use std::time::{Duration, UNIX_EPOCH};
        let after = |ns: u64| Timestamp::from(UNIX_EPOCH + Duration::from_nanos(ns)).to_string();
        let before = |ns: u64| Timestamp::from(UNIX_EPOCH - Duration::from_nanos(ns)).to_string();
        assert_eq!(after(1_621_911_824), "1970-01-01T00:00:01.622Z");
        assert_eq!(after(1_621_411_824), "1970-01-01T00:00:01.621Z");
        assert_eq!(after(1_500_000), "1970-01-01T00:00:00.002Z");
        assert_eq!(before(400_000), "1970-01-01T00:00:00.000Z");
        assert_eq!(before(500_000), "1970-01-01T00:00:00.000Z");
        assert_eq!(before(600_000), "1969-12-31T23:59:59.999Z");
        assert_eq!(before(1_621_911_824), "1969-12-31T23:59:58.378Z");
    }

    #[test]
    fn times_are_compact_yet_written_back_as_read() {
        let ours = Timestamp::parse("2026-01-01T00:00:01.250Z");
        assert_eq!(ours, Timestamp::Millis(1_767_225_601_250));
        assert_eq!(ours.to_string(), "2026-01-01T00:00:01.250Z");
        for other in [
            "2026-01-01T00:00:01Z",
            "2026-01-01T01:00:01.250+01:00",
            "2026-01-01T00:00:01.250000Z",
            "not a time",
        ] {
            let t = Timestamp::parse(other);
            assert!(matches!(t, Timestamp::Text(_)), "{other}");
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("{other:?}"));
        }
        assert_eq!(
            Timestamp::parse("2026-01-01T01:00:01.250+01:00").to_datetime(),
            ours.to_datetime()
        );
        assert_eq!(Timestamp::parse("not a time").to_datetime(), None);
        // The hand parser agrees with chrono over a range of dates.
        let mut ms = -62_135_596_800_000i64; // 0001-01-01
        while ms < 253_402_300_799_000 {
            let text = iso_millis(ms).unwrap();
            assert_eq!(canonical_millis(text.as_bytes()), Some(ms), "{text}");
            ms += 86_400_000 * 37 + 3_600_000 * 5 + 61_001;
        }
        for bad in [
            "2026-02-29T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T00:60:00.000Z",
            "2026-01-00T00:00:00.000Z",
            "2026-01-01 00:00:00.000Z",
        ] {
            assert_eq!(canonical_millis(bad.as_bytes()), None, "{bad}");
        }
        assert!(canonical_millis(b"2024-02-29T23:59:59.999Z").is_some());
        let text = r#"{"path":"a","size":1,"hash":"00","hashAlgorithm":"md5","modifiedAt":"2026-01-01T00:00:00Z","contentType":"text/csv"}"#;
        let e: FileEntry = serde_json::from_str(text).unwrap();
        assert!(matches!(e.content_type, Some(Cow::Borrowed("text/csv"))));
        assert_eq!(serde_json::to_string(&e).unwrap(), text);
    }

    /// Vectors printed by Node.js 20 (`(sec * 1000 + nsec / 1e6).toString(36)`
    /// and `fs.statSync(f).mtimeMs.toString(36)`), an implementation that
    /// shares nothing with this one.
    #[test]
    fn fs_etags_match_node() {
        let s = 1_000_000_000i64;
        for (sec, nsec, text) in [
            (1_764_920_000, 123_456_789, "misjsrqz.gg"),
            (1_764_920_000, 0, "misjsrnk"),
            (1_700_000_000, 999_999_999, "loyw3vu0"),
            (-1, 500_000_000, "-dw"),
            (-86_400, 1, "-1ffunz.zzzyc"),
            (0, 1, "0.0001ogs5wo29m8"),
            (1_234_567_890, 100_000_000, "fr5hugms"),
            (1_767_225_600, 621_911_824, "mjuohsh9.wts"),
        ] {
            assert_eq!(
                fs_etag(sec * s + nsec, 13132),
                format!("\"{text}-a4s\""),
                "{sec} s {nsec} ns"
            );
        }
        for (size, text) in [
            (0u64, "0"),
            (35, "z"),
            (36, "10"),
            (1295, "zz"),
            (1_048_576, "mh34"),
        ] {
            assert_eq!(js_radix_string(size as f64, 36), text);
        }
    }
}
