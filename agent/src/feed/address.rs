//! Parsing of one indicator as feeds write it: an IPv4 or IPv6 address, or a
//! prefix in CIDR notation.
//!
//! Every indicator comes out in one canonical form, so that the same network
//! written two ways is one key in the intel store. A bare address becomes a
//! /32 or /128, host bits past the prefix length are cleared, and an
//! IPv4-mapped IPv6 address is folded to IPv4.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::intel::canonical_address;

/// Whether a /0 prefix, which covers every address of its family, may load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefaultRoute {
    Reject,
    Allow,
}

/// Changes made to an indicator to bring it to canonical form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Normalised {
    /// Bits past the prefix length were set and have been cleared.
    pub host_bits: bool,
    /// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) was folded to IPv4.
    pub ipv4_mapped: bool,
}

impl fmt::Display for Normalised {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ipv4_mapped, self.host_bits) {
            (true, true) => f.write_str("is an IPv4-mapped IPv6 address with host bits set"),
            (true, false) => f.write_str("is an IPv4-mapped IPv6 address"),
            (false, _) => f.write_str("has host bits set"),
        }
    }
}

/// Reasons an indicator is rejected. Messages leave out the indicator's text,
/// which the caller shows next to them.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IndicatorError {
    #[error("missing prefix length after `/`")]
    MissingPrefixLength,
    #[error("invalid prefix length `{0}`: expected a decimal number")]
    InvalidPrefixLength(String),
    #[error("prefix length /{length} is longer than /{max}, the maximum for {family}")]
    PrefixTooLong {
        length: u32,
        max: u8,
        family: &'static str,
    },
    #[error(
        "octet `{0}` has a leading zero, which some parsers read as octal; write it without the zero"
    )]
    LeadingZero(String),
    #[error("octet {0} is greater than 255")]
    OctetOutOfRange(String),
    #[error("not a valid IPv4 or IPv6 address")]
    InvalidAddress,
    #[error("{0} is the unspecified address, which names no host")]
    Unspecified(IpAddr),
    #[error(
        "{0} covers every {family} address; set `allow_default_route = true` in the feed's config to load it",
        family = family_name(.0.addr())
    )]
    DefaultRoute(IpNet),
    #[error("range mixes an IPv4 and an IPv6 address")]
    RangeFamilies,
    #[error("range start {first} is after its end {last}")]
    RangeReversed { first: IpAddr, last: IpAddr },
    #[error(
        "range covers more addresses than a /{limit}; set `{key} = {needed}` in the feed's config to load it"
    )]
    RangeTooWide {
        limit: u8,
        /// The smallest setting of the limit that accepts the range.
        needed: u32,
        key: &'static str,
    },
}

/// Widest `first-last` range accepted, per family, as the prefix length of
/// a prefix of the same size; 0 accepts every range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeLimit {
    pub ipv4: u8,
    pub ipv6: u8,
}

impl Default for RangeLimit {
    /// Returns a /16 for IPv4 and a /48 for IPv6: wide enough for the
    /// ranges of a few /24s that blocklists publish, narrow enough to catch a
    /// typo in a range's first octets.
    fn default() -> Self {
        RangeLimit { ipv4: 16, ipv6: 48 }
    }
}

/// Parses `text` (already trimmed) into a canonical prefix. The second value
/// lists the changes made to the text's prefix, if any.
pub fn parse_indicator(
    text: &str,
    default_route: DefaultRoute,
) -> Result<(IpNet, Option<Normalised>), IndicatorError> {
    let (address_text, length_text) = match text.split_once('/') {
        Some((address, length)) => (address, Some(length)),
        None => (text, None),
    };
    let address = parse_address(address_text)?;
    let length = match length_text {
        Some(length) => parse_prefix_length(length, address)?,
        None => max_prefix_length(address),
    };
    let written = IpNet::new(address, length).expect("parse_prefix_length checked the maximum");

    let mut normalised = Normalised::default();
    let folded = fold_ipv4_mapped(written);
    normalised.ipv4_mapped = folded != written;
    let net = folded.trunc();
    normalised.host_bits = net != folded;

    check_usable(net, default_route)?;
    let normalised = (normalised != Normalised::default()).then_some(normalised);
    Ok((net, normalised))
}

/// Parses a range `first-last` (both ends included) into the smallest set
/// of canonical prefixes that covers exactly those addresses. Each end is
/// checked as an indicator is, and IPv4-mapped ends are folded to IPv4.
pub fn parse_range(
    text: &str,
    default_route: DefaultRoute,
    limit: RangeLimit,
) -> Result<Vec<IpNet>, IndicatorError> {
    let (first, last) = text.split_once('-').ok_or(IndicatorError::InvalidAddress)?;
    let first = canonical_address(parse_address(first.trim())?);
    let last = canonical_address(parse_address(last.trim())?);
    let prefixes: Vec<IpNet> = match (first, last) {
        (IpAddr::V4(first_v4), IpAddr::V4(last_v4)) => {
            if first_v4 > last_v4 {
                return Err(IndicatorError::RangeReversed { first, last });
            }
            let span = u32::from(last_v4) - u32::from(first_v4);
            check_range_width(span.leading_zeros(), limit.ipv4, "max_range_ipv4")?;
            ipnet::Ipv4Subnets::new(first_v4, last_v4, 0)
                .map(IpNet::V4)
                .collect()
        }
        (IpAddr::V6(first_v6), IpAddr::V6(last_v6)) => {
            if first_v6 > last_v6 {
                return Err(IndicatorError::RangeReversed { first, last });
            }
            let span = u128::from(last_v6) - u128::from(first_v6);
            check_range_width(span.leading_zeros(), limit.ipv6, "max_range_ipv6")?;
            ipnet::Ipv6Subnets::new(first_v6, last_v6, 0)
                .map(IpNet::V6)
                .collect()
        }
        _ => return Err(IndicatorError::RangeFamilies),
    };
    for prefix in &prefixes {
        check_usable(*prefix, default_route)?;
    }
    Ok(prefixes)
}

/// Checks a range against the limit. `needed` is the longest prefix length
/// whose prefix contains as many addresses as the range spans: the leading
/// zeros of `last - first`.
fn check_range_width(needed: u32, limit: u8, key: &'static str) -> Result<(), IndicatorError> {
    if needed < u32::from(limit) {
        return Err(IndicatorError::RangeTooWide { limit, needed, key });
    }
    Ok(())
}

fn parse_address(text: &str) -> Result<IpAddr, IndicatorError> {
    text.parse().map_err(|_| diagnose_invalid_address(text))
}

/// Finds the most specific reason an address failed to parse. Only called on
/// the error path, so it may take its time.
fn diagnose_invalid_address(text: &str) -> IndicatorError {
    let dotted_decimal =
        text.contains('.') && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !dotted_decimal {
        return IndicatorError::InvalidAddress;
    }
    for octet in text.split('.') {
        if octet.len() > 1 && octet.starts_with('0') {
            return IndicatorError::LeadingZero(octet.to_owned());
        }
        if octet.parse::<u8>().is_err() && !octet.is_empty() {
            return IndicatorError::OctetOutOfRange(octet.to_owned());
        }
    }
    IndicatorError::InvalidAddress
}

fn parse_prefix_length(text: &str, address: IpAddr) -> Result<u8, IndicatorError> {
    if text.is_empty() {
        return Err(IndicatorError::MissingPrefixLength);
    }
    // u32::from_str would also take a leading `+`, which no feed means.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(IndicatorError::InvalidPrefixLength(text.to_owned()));
    }
    let max = max_prefix_length(address);
    let too_long = |length| IndicatorError::PrefixTooLong {
        length,
        max,
        family: family_name(address),
    };
    let length: u32 = text.parse().map_err(|_| too_long(u32::MAX))?;
    match u8::try_from(length) {
        Ok(length) if length <= max => Ok(length),
        _ => Err(too_long(length)),
    }
}

/// Folds `::ffff:a.b.c.d/n` to `a.b.c.d/(n - 96)`. A mapped prefix shorter than
/// /96 also covers addresses outside the mapped range, so it stays IPv6.
fn fold_ipv4_mapped(net: IpNet) -> IpNet {
    let IpNet::V6(v6) = net else {
        return net;
    };
    if v6.prefix_len() < 96 {
        return net;
    }
    match canonical_address(IpAddr::V6(v6.addr())) {
        address @ IpAddr::V4(_) => {
            IpNet::new(address, v6.prefix_len() - 96).expect("a length of at most 32 fits IPv4")
        }
        IpAddr::V6(_) => net,
    }
}

/// Rejects canonical prefixes that parse but are not sensible indicators.
fn check_usable(net: IpNet, default_route: DefaultRoute) -> Result<(), IndicatorError> {
    let address = net.addr();
    if net.prefix_len() == max_prefix_length(address) && address.is_unspecified() {
        return Err(IndicatorError::Unspecified(address));
    }
    if net.prefix_len() == 0 && default_route == DefaultRoute::Reject {
        return Err(IndicatorError::DefaultRoute(net));
    }
    Ok(())
}

fn max_prefix_length(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn family_name(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(IpNet, Option<Normalised>), IndicatorError> {
        parse_indicator(text, DefaultRoute::Reject)
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn bare_addresses_become_host_prefixes() {
        assert_eq!(parse("192.0.2.1"), Ok((net("192.0.2.1/32"), None)));
        assert_eq!(parse("2001:db8::1"), Ok((net("2001:db8::1/128"), None)));
    }

    #[test]
    fn fully_expanded_ipv6_loads() {
        let (prefix, normalised) = parse("2001:0470:0001:0908:0000:0000:0000:9001").unwrap();
        assert_eq!(prefix, net("2001:470:1:908::9001/128"));
        assert_eq!(normalised, None);
    }

    #[test]
    fn host_bits_are_cleared() {
        let (prefix, normalised) = parse("192.0.2.77/24").unwrap();
        assert_eq!(prefix, net("192.0.2.0/24"));
        let normalised = normalised.unwrap();
        assert!(normalised.host_bits);
        assert!(!normalised.ipv4_mapped);
        assert_eq!(normalised.to_string(), "has host bits set");
    }

    #[test]
    fn ipv4_mapped_folds_to_ipv4() {
        let (prefix, normalised) = parse("::ffff:192.0.2.1").unwrap();
        assert_eq!(prefix, net("192.0.2.1/32"));
        assert_eq!(
            normalised,
            Some(Normalised {
                host_bits: false,
                ipv4_mapped: true
            })
        );

        let (prefix, normalised) = parse("::ffff:198.51.100.9/120").unwrap();
        assert_eq!(prefix, net("198.51.100.0/24"));
        assert_eq!(
            normalised.unwrap().to_string(),
            "is an IPv4-mapped IPv6 address with host bits set"
        );
    }

    #[test]
    fn short_mapped_prefix_stays_ipv6() {
        let (prefix, normalised) = parse("::ffff:0.0.0.0/95").unwrap();
        assert_eq!(prefix, net("::fffe:0.0.0.0/95"));
        assert!(normalised.unwrap().host_bits);
    }

    #[test]
    fn prefix_length_errors() {
        assert_eq!(
            parse("192.0.2.0/33"),
            Err(IndicatorError::PrefixTooLong {
                length: 33,
                max: 32,
                family: "IPv4"
            })
        );
        assert_eq!(
            parse("192.0.2.10/"),
            Err(IndicatorError::MissingPrefixLength)
        );
        assert_eq!(
            parse("2001:db8::/129").unwrap_err().to_string(),
            "prefix length /129 is longer than /128, the maximum for IPv6"
        );
        assert_eq!(
            parse("192.0.2.0/+24"),
            Err(IndicatorError::InvalidPrefixLength("+24".to_owned()))
        );
        assert!(matches!(
            parse("192.0.2.0/99999999999"),
            Err(IndicatorError::PrefixTooLong { .. })
        ));
    }

    #[test]
    fn address_errors() {
        assert_eq!(
            parse("942.0.2.1"),
            Err(IndicatorError::OctetOutOfRange("942".to_owned()))
        );
        assert_eq!(
            parse("010.1.2.3"),
            Err(IndicatorError::LeadingZero("010".to_owned()))
        );
        assert_eq!(parse("192.0.2"), Err(IndicatorError::InvalidAddress));
        assert_eq!(parse("example.com"), Err(IndicatorError::InvalidAddress));
        assert_eq!(parse(""), Err(IndicatorError::InvalidAddress));
        assert_eq!(
            parse("010.1.2.3").unwrap_err().to_string(),
            "octet `010` has a leading zero, which some parsers read as octal; write it without the zero"
        );
    }

    #[test]
    fn unspecified_address_is_rejected() {
        assert!(matches!(
            parse("0.0.0.0"),
            Err(IndicatorError::Unspecified(_))
        ));
        assert!(matches!(
            parse("0.0.0.0/32"),
            Err(IndicatorError::Unspecified(_))
        ));
        assert!(matches!(parse("::"), Err(IndicatorError::Unspecified(_))));
        assert!(matches!(
            parse("::ffff:0.0.0.0"),
            Err(IndicatorError::Unspecified(_))
        ));
        // The prefix 0.0.0.0/8 ("this network") is a network, not the address.
        assert_eq!(parse("0.0.0.0/8"), Ok((net("0.0.0.0/8"), None)));
    }

    fn range(text: &str) -> Result<Vec<IpNet>, IndicatorError> {
        parse_range(text, DefaultRoute::Reject, RangeLimit::default())
    }

    fn nets(texts: &[&str]) -> Vec<IpNet> {
        texts.iter().map(|text| net(text)).collect()
    }

    #[test]
    fn range_splits_into_prefixes() {
        assert_eq!(range("192.0.2.0-192.0.2.255"), Ok(nets(&["192.0.2.0/24"])));
        assert_eq!(
            range("192.0.2.1 - 192.0.2.6"),
            Ok(nets(&[
                "192.0.2.1/32",
                "192.0.2.2/31",
                "192.0.2.4/31",
                "192.0.2.6/32"
            ]))
        );
        assert_eq!(range("192.0.2.9-192.0.2.9"), Ok(nets(&["192.0.2.9/32"])));
        assert_eq!(
            range("2001:db8::-2001:db8::1:ffff"),
            Ok(nets(&["2001:db8::/111"]))
        );
        assert_eq!(
            range("::ffff:192.0.2.0-::ffff:192.0.2.127"),
            Ok(nets(&["192.0.2.0/25"]))
        );
    }

    #[test]
    fn range_errors() {
        assert_eq!(
            range("192.0.2.9-192.0.2.1").unwrap_err().to_string(),
            "range start 192.0.2.9 is after its end 192.0.2.1"
        );
        assert_eq!(
            range("192.0.2.1-2001:db8::1"),
            Err(IndicatorError::RangeFamilies)
        );
        assert_eq!(
            range("192.0.2.1-192.0.2.300"),
            Err(IndicatorError::OctetOutOfRange("300".to_owned()))
        );
        assert_eq!(
            range("010.0.0.1-10.0.0.9"),
            Err(IndicatorError::LeadingZero("010".to_owned()))
        );
        assert_eq!(range("192.0.2.1-"), Err(IndicatorError::InvalidAddress));
        assert!(matches!(
            range("0.0.0.0-0.0.0.0"),
            Err(IndicatorError::Unspecified(_))
        ));
    }

    #[test]
    fn wide_range_needs_permission() {
        assert_eq!(
            range("10.0.0.0-10.255.255.255").unwrap_err().to_string(),
            "range covers more addresses than a /16; set `max_range_ipv4 = 8` in the feed's config to load it"
        );
        // One address more than a /16 is already too wide.
        assert!(matches!(
            range("10.0.0.0-10.1.0.0"),
            Err(IndicatorError::RangeTooWide { needed: 15, .. })
        ));
        assert_eq!(range("10.0.0.0-10.0.255.255"), Ok(nets(&["10.0.0.0/16"])));
        assert!(matches!(
            range("2001:db8::-2001:db9::"),
            Err(IndicatorError::RangeTooWide {
                key: "max_range_ipv6",
                ..
            })
        ));

        let any = RangeLimit { ipv4: 0, ipv6: 0 };
        assert_eq!(
            parse_range("0.0.0.0-255.255.255.255", DefaultRoute::Allow, any),
            Ok(nets(&["0.0.0.0/0"]))
        );
        assert!(matches!(
            parse_range("0.0.0.0-255.255.255.255", DefaultRoute::Reject, any),
            Err(IndicatorError::DefaultRoute(_))
        ));
        assert_eq!(
            parse_range(
                "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
                DefaultRoute::Allow,
                any
            ),
            Ok(nets(&["::/0"]))
        );
    }

    #[test]
    fn default_route_needs_permission() {
        assert_eq!(
            parse("0.0.0.0/0").unwrap_err().to_string(),
            "0.0.0.0/0 covers every IPv4 address; set `allow_default_route = true` in the feed's config to load it"
        );
        assert!(matches!(
            parse("::/0"),
            Err(IndicatorError::DefaultRoute(_))
        ));
        // Host bits do not hide a /0.
        assert!(matches!(
            parse("192.0.2.1/0"),
            Err(IndicatorError::DefaultRoute(_))
        ));
        assert_eq!(
            parse_indicator("::/0", DefaultRoute::Allow),
            Ok((net("::/0"), None))
        );
    }
}
