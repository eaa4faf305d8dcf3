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
}
