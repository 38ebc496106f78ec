//! Timestamps in JSON views, written as chrono's serde writes a
//! `DateTime<Utc>` (RFC 3339, `Z`, a fraction of 0, 3, 6 or 9 digits as
//! needed) but without going through `core::fmt`: a page of 50 users has
//! 250 of them, and chrono's formatter was a tenth of the page's CPU.
//! Use with `#[serde(serialize_with = "crate::json::timestamp")]` (or
//! `optional_timestamp`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

pub fn timestamp<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 30];
    match rfc3339(t, &mut buf) {
        Some(text) => s.serialize_str(text),
        None => s.collect_str(&t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
    }
}

pub fn optional_timestamp<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => timestamp(t, s),
        None => s.serialize_none(),
    }
}

/// `t` as `YYYY-MM-DDTHH:MM:SS[.fff|.ffffff|.fffffffff]Z` in `buf`; `None`
/// for what this short form does not cover (years outside 0–9999, leap
/// seconds), which the caller leaves to chrono.
fn rfc3339<'a>(t: &DateTime<Utc>, buf: &'a mut [u8; 30]) -> Option<&'a str> {
    let (year, nanos) = (t.year(), t.nanosecond());
    if !(0..=9999).contains(&year) || nanos >= 1_000_000_000 {
        return None;
    }
    buf[..20].copy_from_slice(b"0000-00-00T00:00:00Z");
    put(buf, 0, year as u32, 4);
    put(buf, 5, t.month(), 2);
    put(buf, 8, t.day(), 2);
    put(buf, 11, t.hour(), 2);
    put(buf, 14, t.minute(), 2);
    put(buf, 17, t.second(), 2);
    let mut at = 19;
    let (fraction, digits) = match nanos {
        0 => (0, 0),
        n if n % 1_000_000 == 0 => (n / 1_000_000, 3),
        n if n % 1_000 == 0 => (n / 1_000, 6),
        n => (n, 9),
    };
    if digits > 0 {
        buf[at] = b'.';
        put(buf, at + 1, fraction, digits);
        at += 1 + digits;
    }
    buf[at] = b'Z';
    std::str::from_utf8(&buf[..=at]).ok()
}

/// `value`'s last `digits` decimal digits at `buf[at..]`.
fn put(buf: &mut [u8; 30], at: usize, mut value: u32, digits: usize) {
    for i in (at..at + digits).rev() {
        buf[i] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[derive(serde::Serialize)]
    struct Ours {
        #[serde(serialize_with = "timestamp")]
        t: DateTime<Utc>,
        #[serde(serialize_with = "optional_timestamp")]
        o: Option<DateTime<Utc>>,
    }

    #[derive(serde::Serialize)]
    struct Chrono {
        t: DateTime<Utc>,
        o: Option<DateTime<Utc>>,
    }

    fn same_as_chrono(t: DateTime<Utc>) {
        let ours = serde_json::to_string(&Ours { t, o: Some(t) }).unwrap();
        assert_eq!(ours, serde_json::to_string(&Chrono { t, o: Some(t) }).unwrap());
    }

    #[test]
    fn edges_are_written_as_chrono_writes_them() {
        for (secs, nanos) in [
            (0, 0),
            (1_764_666_000, 0),
            (1_764_666_000, 634_000_000),
            (1_764_666_000, 634_293_000),
            (1_764_666_000, 634_293_001),
            (1_764_666_000, 1_000),
            (1_764_666_000, 1),
            (253_402_300_799, 999_999_999), // 9999-12-31T23:59:59.999999999
            (-62_167_219_200, 0),           // 0000-01-01
            (-62_167_219_201, 0),           // -0001-12-31: chrono's own form
            (253_402_300_800, 0),           // +10000-01-01: chrono's own form
        ] {
            same_as_chrono(Utc.timestamp_opt(secs, nanos).unwrap());
        }
        let none = serde_json::to_string(&Ours { t: DateTime::UNIX_EPOCH, o: None }).unwrap();
        assert_eq!(none, r#"{"t":"1970-01-01T00:00:00Z","o":null}"#);
    }

    proptest! {
        #[test]
        fn any_instant_is_written_as_chrono_writes_it(secs in -62_167_219_200i64..253_402_300_800, micros in 0u32..1_000_000, exact in 0u8..4) {
            // PostgreSQL keeps microseconds; round some to whole seconds and milliseconds too.
            let nanos = match exact { 0 => 0, 1 => micros / 1000 * 1_000_000, _ => micros * 1000 };
            same_as_chrono(Utc.timestamp_opt(secs, nanos).unwrap());
        }
    }
}
