#![no_main]

use intelwall::feed::address::{DefaultRoute, RangeLimit, parse_indicator, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    if let Ok((net, _)) = parse_indicator(text, DefaultRoute::Allow) {
        // Canonical form: no host bits, no IPv4-mapped IPv6 prefix of /96 or longer.
        assert_eq!(net, net.trunc(), "{text}");
        // Parsing the canonical text again gives the same prefix, unchanged.
        let again = parse_indicator(&net.to_string(), DefaultRoute::Allow);
        assert_eq!(again, Ok((net, None)), "{text}");
    }
    let any = RangeLimit { ipv4: 0, ipv6: 0 };
    if let Ok(prefixes) = parse_range(text, DefaultRoute::Allow, any) {
        assert!(!prefixes.is_empty(), "{text}");
        // The prefixes are in order and neither overlap nor leave gaps.
        for pair in prefixes.windows(2) {
            let end = number(pair[0].broadcast());
            assert_eq!(end + 1, number(pair[1].network()), "{text}");
        }
    }
});

fn number(address: std::net::IpAddr) -> u128 {
    match address {
        std::net::IpAddr::V4(v4) => u128::from(u32::from(v4)),
        std::net::IpAddr::V6(v6) => u128::from(v6),
    }
}
