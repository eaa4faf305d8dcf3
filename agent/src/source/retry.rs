//! Backoff between attempts and the server's `Retry-After`.

use std::time::Duration;

use jiff::Timestamp;
use ureq::http::HeaderMap;

use super::FetchOptions;

/// Computes the wait before the attempt after `attempt` (counted from 1), or `None`
/// when the server asked for a longer wait than `max_backoff` allows.
///
/// Without a `Retry-After` the wait is `backoff` doubled per attempt, capped
/// at `max_backoff`, then scaled by a random factor from 0.5 to 1 so that
/// agents that failed together do not retry together.
pub(super) fn delay(
    options: &FetchOptions,
    attempt: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    if let Some(wait) = retry_after {
        return (wait <= options.max_backoff).then_some(wait);
    }
    let factor = 1u32 << attempt.saturating_sub(1).min(16);
    let capped = options
        .backoff
        .saturating_mul(factor)
        .min(options.max_backoff);
    Some(capped.mul_f64(0.5 + fastrand::f64() / 2.0))
}

/// Reads `Retry-After`, which is either a number of seconds or an HTTP date
/// (RFC 9110, section 10.2.3). A date in the past means no wait.
pub(super) fn retry_after(headers: &HeaderMap, now: Timestamp) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let date = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let wait = date.duration_since(now);
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry_after: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", retry_after.parse().unwrap());
        headers
    }

    fn now() -> Timestamp {
        "2026-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn retry_after_seconds() {
        let wait = retry_after(&headers("120"), now());
        assert_eq!(wait, Some(Duration::from_secs(120)));
    }

    #[test]
    fn retry_after_http_date() {
        let wait = retry_after(&headers("Thu, 01 Jan 2026 00:00:30 GMT"), now());
        assert_eq!(wait, Some(Duration::from_secs(30)));
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let wait = retry_after(&headers("Wed, 31 Dec 2025 23:00:00 GMT"), now());
        assert_eq!(wait, Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        assert_eq!(retry_after(&headers("soon"), now()), None);
    }

    #[test]
    fn delay_doubles_within_jitter_and_cap() {
        let options = FetchOptions {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            ..FetchOptions::default()
        };
        for _ in 0..100 {
            let first = delay(&options, 1, None).unwrap();
            assert!(first >= Duration::from_millis(500), "{first:?}");
            assert!(first <= Duration::from_secs(1), "{first:?}");
            let third = delay(&options, 3, None).unwrap();
            assert!(third >= Duration::from_secs(2), "{third:?}");
            assert!(third <= Duration::from_secs(4), "{third:?}");
            let tenth = delay(&options, 10, None).unwrap();
            assert!(tenth <= Duration::from_secs(5), "{tenth:?}");
        }
    }

    #[test]
    fn delay_honours_retry_after_up_to_cap() {
        let options = FetchOptions {
            max_backoff: Duration::from_secs(30),
            ..FetchOptions::default()
        };
        let short = delay(&options, 1, Some(Duration::from_secs(7)));
        assert_eq!(short, Some(Duration::from_secs(7)));
        let long = delay(&options, 1, Some(Duration::from_secs(3600)));
        assert_eq!(long, None);
    }
}
