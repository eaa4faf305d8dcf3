//! The `list` format: one address, prefix or range a line.
//!
//! This covers Spamhaus DROP (`198.51.100.0/24 ; SBL000001`), FireHOL
//! `.netset` and `.ipset` files and plain address lists as they are
//! published. `#` and `;` start a comment, at the start of a line or after
//! the indicator. Every indicator gets the attributes and score of the feed's
//! config, and the load time as `last_seen`, because a list only states that an
//! address is listed now.
//!
//! A line may also be:
//!
//! - a range `first-last`, loaded as the fewest prefixes that cover it. A
//!   range wider than `max_range_ipv4` or `max_range_ipv6` is rejected.
//! - an address followed by a count, as ipsum writes `192.0.2.1<TAB>7` (the
//!   number of blocklists naming the address). The score is the count times
//!   `score_per_count` (default 10), at most 100, so an address on ten or
//!   more lists scores 100. It replaces the config's `score`.
//! - a Spamhaus DROP JSON record, `{"cidr": "198.51.100.0/24", "sblid": ...}`.
//!   The `{"type": "metadata", ...}` line that ends those files is not data.
//! - with `skip_non_ip = true`, as Maltrail trail files need: a domain name
//!   or URL, counted as skipped, or `IPv4:port`, loaded as the address. Without
//!   it both are rejected, so that a typo in an address list is not lost.

use std::borrow::Cow;
use std::io::BufRead;

use serde::Deserialize;

use super::FeedError;
use super::jsonl::reject_invalid_json;
use super::lines::{LineReader, LineText};
use super::load::FeedLoad;
use crate::intel::Sighting;

/// Score per blocklist when the config gives no `score_per_count`.
const DEFAULT_SCORE_PER_COUNT: u8 = 10;

pub fn load<R: BufRead>(
    lines: &mut LineReader<R>,
    load: &mut FeedLoad<'_>,
) -> Result<(), FeedError> {
    let parser = ListParser::new(load);
    while let Some(line) = lines.next_line()? {
        match line.text {
            LineText::Text(text) => parser.load_line(load, line.number, text),
            LineText::TooLong => load.reject_too_long(line.number),
        }
    }
    Ok(())
}

struct ListParser {
    /// Every line of a list carries the same data, so the sighting is built
    /// once and only the indicator (and a line's count) changes.
    sighting: Sighting,
    score_per_count: u8,
    skip_non_ip: bool,
}

impl ListParser {
    fn new(load: &mut FeedLoad<'_>) -> Self {
        let config = load.config();
        ListParser {
            sighting: Sighting {
                last_seen: load.now,
                profile: load.config_profile(),
                feed: load.feed,
                score: load.default_score(),
            },
            score_per_count: config.score_per_count.unwrap_or(DEFAULT_SCORE_PER_COUNT),
            skip_non_ip: config.skip_non_ip,
        }
    }

    fn load_line(&self, load: &mut FeedLoad<'_>, line: u64, text: &str) {
        // Checked before comments are cut, because the strings of a JSON
        // record may contain `#` or `;`.
        if text.trim_start().starts_with('{') {
            self.load_spamhaus_json(load, line, text);
            return;
        }
        let Some(text) = data_text(text) else {
            return;
        };
        load.count_data_line();

        let mut sighting = self.sighting;
        let indicator = match text.split_once(char::is_whitespace) {
            None => text,
            // A range written with blanks, `first - last`.
            Some(_) if text.contains('-') => text,
            Some((indicator, rest)) => {
                let rest = rest.trim_start();
                let Some(count) = parse_count(rest) else {
                    // When the first word is no address either, that is the
                    // mistake to report (or a name to skip).
                    if !load.is_valid_indicator(indicator) {
                        self.load_indicator(load, line, indicator, sighting);
                        return;
                    }
                    load.reject(
                        line,
                        format_args!(
                            "unexpected text `{rest}` after indicator `{indicator}`; a trailing comment must start with `#` or `;`"
                        ),
                    );
                    return;
                };
                sighting.score = self.count_score(count);
                indicator
            }
        };
        self.load_indicator(load, line, indicator, sighting);
    }

    fn load_indicator(&self, load: &mut FeedLoad<'_>, line: u64, text: &str, sighting: Sighting) {
        // Names go first: a domain such as `dns-update.example` would
        // otherwise be read as a range.
        if self.skip_non_ip && is_name_or_url(text) {
            load.skip();
            return;
        }
        if text.contains('-') {
            for prefix in load.parse_range(line, text).unwrap_or_default() {
                load.add_sighting(prefix, sighting);
            }
            return;
        }
        let mut indicator = text;
        if let Some(address) = ipv4_before_port(text) {
            if !self.skip_non_ip {
                load.reject(
                    line,
                    format_args!(
                        "rejected indicator `{text}`: an address with a port; set `skip_non_ip = true` in the feed's config to load the address of such lines"
                    ),
                );
                return;
            }
            indicator = address;
        }
        if let Some(net) = load.parse_indicator(line, indicator) {
            load.add_sighting(net, sighting);
        }
    }

    fn count_score(&self, count: u32) -> u8 {
        let score = count.saturating_mul(u32::from(self.score_per_count));
        score.min(100) as u8
    }

    fn load_spamhaus_json(&self, load: &mut FeedLoad<'_>, line: u64, raw: &str) {
        let record: SpamhausRecord<'_> = match serde_json::from_str(raw.trim()) {
            Ok(record) => record,
            Err(error) => {
                load.count_data_line();
                reject_invalid_json(load, line, raw, &error);
                return;
            }
        };
        if record.kind.as_deref() == Some("metadata") {
            return;
        }
        load.count_data_line();
        let Some(cidr) = record.cidr else {
            load.reject(line, format_args!("missing key `cidr`"));
            return;
        };
        if let Some(net) = load.parse_indicator(line, cidr.trim()) {
            load.add_sighting(net, self.sighting);
        }
    }
}

/// A line of Spamhaus's JSON DROP lists. Their other keys (`sblid`, `rir`)
/// name the listing, not the attacker, so they are not kept.
#[derive(Deserialize)]
struct SpamhausRecord<'a> {
    #[serde(borrow)]
    cidr: Option<Cow<'a, str>>,
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

/// The line without its comment and surrounding blanks; `None` for a line
/// that contains no data.
pub fn data_text(line: &str) -> Option<&str> {
    let end = line.find(['#', ';']).unwrap_or(line.len());
    let text = line[..end].trim();
    (!text.is_empty()).then_some(text)
}

/// Parses the count after an ipsum address: decimal digits only, and values
/// past `u32::MAX` saturate, since any count that large scores 100.
fn parse_count(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u32::MAX))
}

/// The address of `a.b.c.d:port`, where the port is 1 to 65535. IPv6 needs
/// brackets to carry a port and has several colons, so it never matches.
fn ipv4_before_port(text: &str) -> Option<&str> {
    let (address, port) = text.split_once(':')?;
    let dotted = address.contains('.') && address.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let port_ok =
        port.bytes().all(|b| b.is_ascii_digit()) && matches!(port.parse::<u16>(), Ok(1..));
    (dotted && port_ok).then_some(address)
}

/// Whether `text` is a URL, a URL path, or a host name (with an optional
/// port and path) as trail files list them. Text with several colons or no
/// letters is address-like, so a broken address is still rejected.
fn is_name_or_url(text: &str) -> bool {
    if text.contains("://") {
        return true;
    }
    if text.starts_with('/') {
        return text.bytes().any(|b| b.is_ascii_alphabetic());
    }
    let host = text.split('/').next().unwrap_or(text);
    let host = match host.split_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return false,
        None => host,
    };
    host.contains('.')
        && host.bytes().any(|b| b.is_ascii_alphabetic())
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        for text in [
            "example.com",
            "dns-update.example",
            "http://192.0.2.1",
            "hxxp://example.org/x",
            "example.com:443/img/index.php",
            "example.com/path",
            "cafe.be",
            "/ecp/auth/index.aspx",
        ] {
            assert!(is_name_or_url(text), "{text}");
        }
        for text in [
            "192.0.2.1",
            "942.0.2.1",
            "192.0.2.1:443:443",
            "2001:db8::zz",
            "localhost",
            "192.0.2.0/24",
            "/24",
            "",
        ] {
            assert!(!is_name_or_url(text), "{text}");
        }
    }

    #[test]
    fn address_with_port() {
        assert_eq!(ipv4_before_port("192.0.2.1:443"), Some("192.0.2.1"));
        assert_eq!(ipv4_before_port("192.0.2.1:0"), None);
        assert_eq!(ipv4_before_port("192.0.2.1:65536"), None);
        assert_eq!(ipv4_before_port("192.0.2.1:443:443"), None);
        assert_eq!(ipv4_before_port("2001:db8::1"), None);
        assert_eq!(ipv4_before_port("::ffff:192.0.2.1"), None);
        assert_eq!(ipv4_before_port("192.0.2.1:+80"), None);
    }

    #[test]
    fn counts() {
        assert_eq!(parse_count("7"), Some(7));
        assert_eq!(parse_count("99999999999"), Some(u32::MAX));
        assert_eq!(parse_count("-1"), None);
        assert_eq!(parse_count("192.0.2.2"), None);
        assert_eq!(parse_count(""), None);
    }
}
