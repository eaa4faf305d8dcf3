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
