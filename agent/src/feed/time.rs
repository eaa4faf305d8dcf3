//! Timestamps as feeds write them.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;

/// The forms [`parse_time`] accepts, for error messages.
pub const TIME_FORMS: &str = "an RFC 3339 timestamp such as 2024-05-01T12:00:00Z, or 2024-05-01 12:00:00 or 2024-05-01 in UTC";

/// Parses a timestamp into Unix seconds: RFC 3339 with an offset, or a date
/// and time without one (`2024-05-01 12:00:00`, as abuse.ch writes them), or
/// a date alone. The last two are taken as UTC, the zone those feeds use.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Some(timestamp.as_second());
    }
    let civil = match text.parse::<DateTime>() {
        Ok(civil) => civil,
        Err(_) => text
            .parse::<Date>()
            .ok()?
            .to_datetime(jiff::civil::Time::midnight()),
    };
    let zoned = civil.to_zoned(TimeZone::UTC).ok()?;
    Some(zoned.timestamp().as_second())
}

/// Reads `YYYY-MM-DDTHH:MM:SSZ` (years 1970 to 9999), the form nearly every
/// line of a large feed uses, into Unix seconds without jiff's general
/// parser. Returns `None` for any other text, valid or not, which the caller
/// then hands to jiff.
pub fn parse_utc_seconds(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 20
        || bytes[4] != b'-'
        || bytes[7] != b'-'
        || bytes[10] != b'T'
        || bytes[13] != b':'
        || bytes[16] != b':'
        || bytes[19] != b'Z'
    {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        bytes[range].iter().try_fold(0i64, |value, &byte| {
            byte.is_ascii_digit()
                .then(|| value * 10 + i64::from(byte - b'0'))
        })
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let valid = year >= 1970
        && (1..=12).contains(&month)
        && day >= 1
        && day <= days_in_month(year, month)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Returns the days from 1970-01-01 to a proleptic Gregorian date. Years
/// are counted from March, so that a leap day falls at the end of a year
/// and the day of the year needs no leap test.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Parses Unix seconds written as a decimal string, as MISP writes its
/// `timestamp` fields.
pub fn parse_unix_seconds(text: &str) -> Option<i64> {
    let seconds: i64 = text.trim().parse().ok()?;
    Timestamp::from_second(seconds).ok()?;
    Some(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seconds(rfc3339: &str) -> i64 {
        rfc3339.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn accepted_forms() {
        let expected = seconds("2024-04-01T10:20:30Z");
        assert_eq!(parse_time("2024-04-01T10:20:30Z"), Some(expected));
        assert_eq!(parse_time("2024-04-01T12:20:30+02:00"), Some(expected));
        assert_eq!(parse_time("2024-04-01 10:20:30"), Some(expected));
        assert_eq!(parse_time(" 2024-04-01 10:20:30 "), Some(expected));
        assert_eq!(
            parse_time("2024-04-01"),
            Some(seconds("2024-04-01T00:00:00Z"))
        );
        assert_eq!(
            parse_time("2015-05-15T09:12:16.432678Z"),
            Some(seconds("2015-05-15T09:12:16Z"))
        );
    }

    #[test]
    fn rejected_forms() {
        for text in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-04-01 25:00:00",
            "1712000000",
        ] {
            assert_eq!(parse_time(text), None, "{text:?}");
        }
    }

    #[test]
    fn unix_seconds() {
        assert_eq!(parse_unix_seconds("1774469231"), Some(1774469231));
        assert_eq!(parse_unix_seconds("x"), None);
        assert_eq!(parse_unix_seconds("99999999999999999"), None);
    }

    #[test]
    fn utc_seconds_match_jiff() {
        let mut rng = fastrand::Rng::with_seed(9);
        for _ in 0..20_000 {
            let seconds = rng.i64(0..253_402_300_800);
            let text = Timestamp::from_second(seconds).unwrap().to_string();
            assert_eq!(parse_utc_seconds(&text), Some(seconds), "{text}");
        }
        for text in [
            "2024-02-29T23:59:59Z",
            "2000-02-29T00:00:00Z",
            "1970-01-01T00:00:00Z",
        ] {
            let expected = text.parse::<Timestamp>().unwrap().as_second();
            assert_eq!(parse_utc_seconds(text), Some(expected), "{text}");
        }
    }

    #[test]
    fn utc_seconds_leave_other_forms_to_jiff() {
        for text in [
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:00:60Z",
            "1969-12-31T23:59:59Z",
            "2024-05-01t12:00:00z",
            "2024-05-01T12:00:00+00:00",
            "2024-05-01T12:00:00.5Z",
            "2024-05-01 12:00:00Z",
            "2024-0a-01T12:00:00Z",
        ] {
            assert_eq!(parse_utc_seconds(text), None, "{text}");
        }
    }
}
