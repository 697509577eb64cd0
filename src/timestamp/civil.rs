//! The proleptic Gregorian calendar in UTC, for the few dates petrify reads and writes (RFC 3339,
//! HTTP dates): days since the Unix epoch to a date and back, by Howard Hinnant's algorithms
//! (<https://howardhinnant.github.io/date_algorithms.html>). A few lines of arithmetic instead of
//! a second date library beside the one rusty-s3 signs with; `time` checks them in the tests.

/// Days from 1970-01-01 to `year-month-day`, or `None` when that is not a date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// The date `days` after 1970-01-01: (year, month, day).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Seconds since the epoch of a date and time of day, or `None` when they are not one.
pub fn seconds(year: i64, month: u32, day: u32, h: u32, m: u32, s: u32) -> Option<i64> {
    if h > 23 || m > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    Some(days * 86_400 + i64::from(h * 3600 + m * 60 + s))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the `time` crate, over every day of 0000..=9999 and the edges of each.
    #[test]
    fn agrees_with_the_time_crate() {
        let first = time::Date::from_calendar_date(0, time::Month::January, 1).unwrap();
        let mut d = first;
        loop {
            let days = (d - time::Date::from_calendar_date(1970, time::Month::January, 1).unwrap())
                .whole_days();
            let (y, m, day) = (
                i64::from(d.year()),
                u8::from(d.month()) as u32,
                d.day() as u32,
            );
            assert_eq!(days_from_civil(y, m, day), Some(days), "{d}");
            assert_eq!(civil_from_days(days), (y, m, day), "{d}");
            match d.next_day() {
                Some(n) if n.year() <= 9999 => d = n,
                _ => break,
            }
        }
        for (y, m, day) in [
            (2023, 2, 29),
            (1900, 2, 29),
            (2025, 4, 31),
            (2025, 13, 1),
            (2025, 0, 1),
        ] {
            assert_eq!(days_from_civil(y, m, day), None, "{y}-{m}-{day}");
        }
        assert_eq!(days_from_civil(2000, 2, 29), Some(11_016));
        assert_eq!(seconds(2025, 11, 25, 21, 4, 5), Some(1_764_104_645));
        assert_eq!(seconds(2025, 11, 25, 24, 0, 0), None);
    }
}
