//! Recovery-point times: parsing what operators type into `--at-timestamp`, and printing times the
//! way `list` shows them. Times are Unix milliseconds throughout.

mod civil;

/// 9999-12-31T23:59:59Z: the last second RFC 3339 can write.
const LAST_SECOND: u64 = 253_402_300_799;

/// Why a string is not a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadTime {
    /// Neither RFC 3339 nor Unix seconds (or beyond 9999-12-31).
    NotATime,
    BeforeEpoch,
}

/// Parses RFC 3339 (`2026-11-25T21:04:05.5Z`, any offset, any fraction) or Unix seconds with an
/// optional fraction (`1764104645.25`). Fractions finer than a millisecond round down, which is
/// exact for "the newest point at or before T" since points are whole milliseconds.
pub fn parse(s: &str) -> Result<u64, BadTime> {
    let s = s.trim();
    let bad = || BadTime::NotATime;
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
        if secs.is_empty() || frac.contains('.') || secs.len() > 15 {
            return Err(bad());
        }
        let secs: u64 = secs.parse().map_err(|_| bad())?;
        // Beyond 9999-12-31 no RFC 3339 time exists to print it as.
        if secs > LAST_SECOND {
            return Err(bad());
        }
        let mut ms = 0u64;
        for (i, d) in frac.bytes().take(3).enumerate() {
            ms += u64::from(d - b'0') * 10u64.pow(2 - i as u32);
        }
        return secs.checked_mul(1000).map(|v| v + ms).ok_or_else(bad);
    }
    let ms = parse_rfc3339(s).ok_or_else(bad)?;
    u64::try_from(ms).map_err(|_| BadTime::BeforeEpoch)
}

/// RFC 3339's date-time (`2026-11-25T21:04:05.5+01:00`: `T` and `Z` in either case, any
/// fraction, a `Z` or a numeric offset) in Unix milliseconds, fractions rounded down. A leap
/// second (`:60`) is refused: no clock petrify reads writes one.
fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let d = b.get(r)?;
        d.iter().all(u8::is_ascii_digit).then_some(())?;
        std::str::from_utf8(d).ok()?.parse().ok()
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let secs = civil::seconds(i64::from(year), month, day, h, m, sec)?;
    let mut i = 19;
    let mut ms = 0i64;
    if sep(i, b".") {
        let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, d) in b[i + 1..i + 1 + digits].iter().take(3).enumerate() {
            ms += i64::from(d - b'0') * 10i64.pow(2 - k as u32);
        }
        i += 1 + digits;
    }
    let offset = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (oh, om) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let o = i64::from(oh * 3600 + om * 60);
            if *sign == b'-' { -o } else { o }
        }
        _ => return None,
    };
    Some((secs - offset) * 1000 + ms)
}

/// An HTTP date (RFC 9110 IMF-fixdate, `Sat, 28 Nov 2026 08:29:35 GMT`) in Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let mut f = s.split_ascii_whitespace();
    let (_weekday, day, month, year, hms, zone) = (
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
        f.next()?,
    );
    if zone != "GMT" || f.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as u32 + 1;
    let mut t = hms.split(':').map(|x| x.parse::<u32>().ok());
    let (h, m, sec) = (t.next()??, t.next()??, t.next()??);
    if t.next().is_some() {
        return None;
    }
    civil::seconds(year.parse().ok()?, month, day.parse().ok()?, h, m, sec)
}

/// `2026-11-25T21:04:05.123Z`
pub fn rfc3339_ms(ms: u64) -> String {
    let secs = ms / 1000;
    if secs > LAST_SECOND {
        return format!("@{}", unix(ms));
    }
    let (year, month, day) = civil::civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60,
        ms % 1000
    )
}

/// [`rfc3339_ms`] for a stream of times that share their minute (a list of a month of
/// points): the date and hour are worked out once a minute, not once a point.
#[derive(Default)]
pub struct Stamper {
    minute: Option<u64>,
    prefix: String,
}

impl Stamper {
    /// Writes `rfc3339_ms(ms)` to `out`.
    pub fn write(&mut self, out: &mut impl std::io::Write, ms: u64) -> std::io::Result<()> {
        let minute = ms / 60_000;
        if self.minute != Some(minute) {
            let full = rfc3339_ms(ms);
            // "YYYY-MM-DDTHH:MM:" then "SS.mmmZ"; a time the calendar cannot name keeps its
            // own form.
            match full.len().checked_sub(7).filter(|_| !full.starts_with('@')) {
                Some(cut) => {
                    self.prefix = full[..cut].to_string();
                    self.minute = Some(minute);
                }
                None => return out.write_all(full.as_bytes()),
            }
        }
        let in_minute = ms % 60_000;
        write!(
            out,
            "{}{:02}.{:03}Z",
            self.prefix,
            in_minute / 1000,
            in_minute % 1000
        )
    }
}

/// `1764104645.123`
pub fn unix(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamper_writes_what_rfc3339_ms_does() {
        let mut s = Stamper::default();
        for ms in [
            0,
            59_999,
            60_000,
            1_764_104_645_123,
            1_764_104_699_999,
            1_764_104_700_000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            s.write(&mut out, ms).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339_ms(ms), "{ms}");
        }
    }

    /// What `time` prints, in any offset and with any fraction, reads back as the same moment,
    /// and what petrify prints is what `time` prints.
    #[test]
    fn agrees_with_the_time_crate() {
        use time::format_description::well_known::Rfc3339;
        let mut next = crate::chain::tests::random(0x1234_5678_9abc_def1);
        for _ in 0..20_000 {
            let ms = next(LAST_SECOND * 1000 + 1000);
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap();
            let theirs = format!("{}.{:03}Z", &t.format(&Rfc3339).unwrap()[..19], ms % 1000);
            assert_eq!(rfc3339_ms(ms), theirs, "{ms}");
            let offset =
                time::UtcOffset::from_whole_seconds(next(2 * 86_340) as i32 - 86_340).unwrap();
            let offset =
                time::UtcOffset::from_hms(offset.whole_hours(), offset.minutes_past_hour(), 0)
                    .unwrap();
            let shifted = t.to_offset(offset);
            if shifted.year() < 0 || shifted.year() > 9999 {
                continue;
            }
            let written = shifted.format(&Rfc3339).unwrap();
            assert_eq!(parse(&written), Ok(ms), "{written}");
        }
    }

    #[test]
    fn parses_both_forms() {
        assert_eq!(parse("1764104645").unwrap(), 1_764_104_645_000);
        assert_eq!(parse("1764104645.1").unwrap(), 1_764_104_645_100);
        assert_eq!(parse("1764104645.123999").unwrap(), 1_764_104_645_123);
        assert_eq!(parse("2025-11-25T21:04:05Z").unwrap(), 1_764_104_645_000);
        assert_eq!(parse("2025-11-25T21:04:05.5Z").unwrap(), 1_764_104_645_500);
        assert_eq!(
            parse("2025-11-25T22:04:05.123456789+01:00").unwrap(),
            1_764_104_645_123
        );
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            ".",
            "1.2.3",
            "yesterday",
            "2025-13-01T00:00:00Z",
            "-5",
            "1969-12-31T23:59:59Z",
            "99999999999999999999",
            "2025-11-25 21:04:05",
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn parses_http_dates() {
        assert_eq!(
            parse_http_date("Tue, 25 Nov 2025 21:04:05 GMT"),
            Some(1_764_104_645)
        );
        for bad in [
            "",
            "Tue, 25 Nov 2025 21:04:05",
            "Tue, 25 Foo 2025 21:04:05 GMT",
            "x y z",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prints_what_it_parses() {
        let ms = 1_764_104_645_123;
        assert_eq!(rfc3339_ms(ms), "2025-11-25T21:04:05.123Z");
        assert_eq!(unix(ms), "1764104645.123");
        assert_eq!(parse(&rfc3339_ms(ms)).unwrap(), ms);
        assert_eq!(parse(&unix(ms)).unwrap(), ms);
        assert_eq!(rfc3339_ms(5), "1970-01-01T00:00:00.005Z");
    }
}
