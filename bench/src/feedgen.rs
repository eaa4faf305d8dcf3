//! Generated feeds for the bench. Addresses are unique by construction (a
//! bijective scramble of a counter). Attributes come from small
//! vocabularies, because real feeds repeat a few combinations. A fixed set
//! of documentation addresses is what every measured hit uses.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The hits that the per-packet cases look up. They sit in documentation
/// ranges, which `is_public_v4` rejects and the IPv6 generators (2a00::/12,
/// 2a10::/16) never reach, so they cannot collide with generated indicators.
pub const HIT_V4_HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const HIT_V4_PREFIX: (Ipv4Addr, u8) = (Ipv4Addr::new(198, 51, 100, 0), 24);
pub const HIT_V4_IN_PREFIX: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 77);
pub const HIT_V6_HOST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const HIT_V6_PREFIX: (Ipv6Addr, u8) = (Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0), 48);
pub const HIT_V6_IN_PREFIX: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 0x77);
/// An address in no feed, for the miss case.
pub const MISS_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);

const DATASETS: [&str; 7] = [
    "ddos",
    "botnet",
    "scanner",
    "bruteforce",
    "spam",
    "c2",
    "waf",
];
const COUNTRIES: [&str; 24] = [
    "RU", "CN", "US", "BR", "IN", "NL", "DE", "FR", "GB", "KR", "VN", "ID", "IR", "UA", "TR", "PL",
    "RO", "SG", "JP", "TW", "TH", "AR", "MX", "ZA",
];
const INDUSTRIES: [&str; 12] = [
    "finance",
    "government",
    "healthcare",
    "energy",
    "retail",
    "telecom",
    "education",
    "manufacturing",
    "media",
    "transport",
    "gaming",
    "hosting",
];
/// Attacker names per feed: enough that names do not repeat on every line.
const ATTACKER_NAMES: usize = 40;
/// Latest `last_seen` of a generated sighting; others are up to 30 days older.
const LAST_SEEN_EPOCH: i64 = 1_796_083_200; // 2026-12-01T00:00:00Z
const DAY: i64 = 86_400;

/// A generated jsonl feed of `count` indicators and samples of its entries.
pub struct MixedFeed {
    pub path: PathBuf,
    pub indicators: usize,
    pub sightings: usize,
    /// Up to the requested sample size of each kind, spread over the feed.
    pub sample_v4_hosts: Vec<Ipv4Addr>,
    pub sample_v6_hosts: Vec<Ipv6Addr>,
    /// One address inside each sampled prefix.
    pub sample_in_prefixes: Vec<IpAddr>,
}

/// Writes `dir/mixed-COUNT.jsonl` with `count` generated indicators: 8 in 10
/// IPv4 hosts, 1 in 10 IPv6 hosts, 1 in 10 prefixes (IPv4 /24 and IPv6 /48),
/// each with 1 to 3 sightings, plus the hit indicators. Keeps up to `sample`
/// addresses of each kind for lookups.
pub fn write_mixed(dir: &Path, count: usize, sample: usize) -> Result<MixedFeed> {
    let path = dir.join(format!("mixed-{count}.jsonl"));
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = fastrand::Rng::with_seed(count as u64);
    let mut feed = MixedFeed {
        path: path.clone(),
        indicators: 0,
        sightings: 0,
        sample_v4_hosts: Vec::new(),
        sample_v6_hosts: Vec::new(),
        sample_in_prefixes: Vec::new(),
    };
    // Every kind keeps one address in `stride` of its own, so samples span
    // the whole feed rather than its start.
    let stride = (count / 10 / sample.max(1)).max(1) as u64;
    let mut counters = Counters::default();
    let mut line = String::with_capacity(512);

    for index in 0..count {
        let indicator = match index % 10 {
            0..=7 => {
                let address = counters.next_v4_host();
                if counters.v4 % stride == 0 && feed.sample_v4_hosts.len() < sample {
                    feed.sample_v4_hosts.push(address);
                }
                address.to_string()
            }
            8 => {
                let address = counters.next_v6_host();
                if counters.v6 % stride == 0 && feed.sample_v6_hosts.len() < sample {
                    feed.sample_v6_hosts.push(address);
                }
                address.to_string()
            }
            _ => {
                let (inside, text) = counters.next_prefix();
                if counters.prefixes % stride == 0 && feed.sample_in_prefixes.len() < sample {
                    feed.sample_in_prefixes.push(inside);
                }
                text
            }
        };
        // 7 in 10 indicators are seen once, 2 in 10 twice, 1 in 10 three times.
        let sightings = match rng.u8(0..10) {
            0..=6 => 1,
            7..=8 => 2,
            _ => 3,
        };
        for _ in 0..sightings {
            line.clear();
            random_sighting(&mut rng, &indicator, &mut line);
            out.write_all(line.as_bytes())?;
        }
        feed.indicators += 1;
        feed.sightings += sightings;
    }

    for indicator in hit_indicators() {
        writeln!(
            out,
            r#"{{"indicator": "{indicator}", "datasets": ["ddos"], "target_countries": ["FR"], "last_seen": "2026-12-01T00:00:00Z", "score": 100}}"#
        )?;
        feed.indicators += 1;
        feed.sightings += 1;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(feed)
}

/// Returns the indicators behind the per-packet hit cases, as feed text.
fn hit_indicators() -> [String; 4] {
    [
        HIT_V4_HOST.to_string(),
        format!("{}/{}", HIT_V4_PREFIX.0, HIT_V4_PREFIX.1),
        HIT_V6_HOST.to_string(),
        format!("{}/{}", HIT_V6_PREFIX.0, HIT_V6_PREFIX.1),
    ]
}

/// Appends one jsonl sighting of `indicator` with attribute counts typical
/// of commercial feeds: one or two datasets, up to two named actors, one or
/// two attacker countries, one to three target countries, up to two
/// industries.
fn random_sighting(rng: &mut fastrand::Rng, indicator: &str, line: &mut String) {
    let _ = write!(line, r#"{{"indicator": "{indicator}", "datasets": "#);
    push_list(line, rng, &DATASETS, 1..=2);
    line.push_str(r#", "attacker_names": ["#);
    for n in 0..rng.usize(0..=2) {
        if n > 0 {
            line.push_str(", ");
        }
        let _ = write!(line, r#""Actor {:02}""#, rng.usize(0..ATTACKER_NAMES));
    }
    line.push_str(r#"], "attacker_countries": "#);
    push_list(line, rng, &COUNTRIES, 1..=2);
    line.push_str(r#", "target_countries": "#);
    push_list(line, rng, &COUNTRIES, 1..=3);
    line.push_str(r#", "target_industries": "#);
    push_list(line, rng, &INDUSTRIES, 0..=2);
    let seen = jiff::Timestamp::from_second(LAST_SEEN_EPOCH - rng.i64(0..30 * DAY))
        .expect("the epoch range is valid");
    let _ = writeln!(
        line,
        r#", "last_seen": "{seen}", "score": {}}}"#,
        rng.u8(1..=100)
    );
}

fn push_list(
    line: &mut String,
    rng: &mut fastrand::Rng,
    words: &[&str],
    count: std::ops::RangeInclusive<usize>,
) {
    line.push('[');
    for n in 0..rng.usize(count) {
        if n > 0 {
            line.push_str(", ");
        }
        let _ = write!(line, r#""{}""#, words[rng.usize(0..words.len())]);
    }
    line.push(']');
}

/// Writes `dir/list-COUNT.txt` with `count` distinct IPv4 host addresses,
/// one a line, and returns its path and the addresses.
pub fn write_ipv4_list(dir: &Path, count: usize) -> Result<(PathBuf, Vec<Ipv4Addr>)> {
    let path = dir.join(format!("list-{count}.txt"));
    let file = File::create(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut counters = Counters::default();
    let mut addresses = Vec::with_capacity(count);
    for _ in 0..count {
        let address = counters.next_v4_host();
        writeln!(out, "{address}")?;
        addresses.push(address);
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((path, addresses))
}

/// Positions in the three address sequences.
#[derive(Default)]
struct Counters {
    v4: u64,
    v6: u64,
    prefixes: u64,
    v4_draws: u32,
    v4_prefix_draws: u32,
}

impl Counters {
    /// Multiplying by an odd constant is a bijection modulo 2^32, so the
    /// addresses are distinct for the first 2^32 draws and look random.
    fn next_v4_host(&mut self) -> Ipv4Addr {
        loop {
            self.v4_draws = self.v4_draws.wrapping_add(1);
            let address = Ipv4Addr::from(self.v4_draws.wrapping_mul(0x9e37_79b1));
            if is_public_v4(address) {
                self.v4 += 1;
                return address;
            }
        }
    }

    fn next_v6_host(&mut self) -> Ipv6Addr {
        self.v6 += 1;
        // The counter in the low bits keeps addresses distinct; the scramble
        // above it spreads them over 2a00::/12 as real addresses are.
        let spread = u128::from(self.v6.wrapping_mul(0x9e37_79b9_7f4a_7c15)) << 32;
        Ipv6Addr::from(
            (0x2a00_u128 << 112) | (spread & !(0xfff0_u128 << 112)) | u128::from(self.v6),
        )
    }

    /// Returns an address inside the next prefix and the prefix as text.
    fn next_prefix(&mut self) -> (IpAddr, String) {
        self.prefixes += 1;
        if self.prefixes % 10 < 7 {
            loop {
                self.v4_prefix_draws = self.v4_prefix_draws.wrapping_add(1);
                // A bijection modulo 2^24 over the /24 numbers.
                let network = (self.v4_prefix_draws.wrapping_mul(0x9e_3779) & 0x00ff_ffff) << 8;
                let base = Ipv4Addr::from(network);
                if is_public_v4(base) {
                    let inside = Ipv4Addr::from(network | 0x2a);
                    return (IpAddr::V4(inside), format!("{base}/24"));
                }
            }
        }
        let base = Ipv6Addr::from((0x2a10_u128 << 112) | (u128::from(self.prefixes) << 80));
        let inside = Ipv6Addr::from(u128::from(base) | 0x2a);
        (IpAddr::V6(inside), format!("{base}/48"))
    }
}

/// Rejects addresses that are not globally routed or that the bench uses
/// itself (documentation ranges, the 198.18.0.0/15 benchmark range).
pub fn is_public_v4(address: Ipv4Addr) -> bool {
    let [a, b, c, _] = address.octets();
    let reserved = a == 0
        || a == 10
        || a == 127
        || a >= 224
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19))
        || (a == 192 && b == 0 && c == 2)
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113);
    !reserved
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ipv4_list_is_distinct_and_public() {
        let dir = tempfile::tempdir().unwrap();
        let (_, addresses) = write_ipv4_list(dir.path(), 20_000).unwrap();
        let distinct: HashSet<_> = addresses.iter().collect();
        assert_eq!(distinct.len(), addresses.len());
        assert!(addresses.iter().all(|address| is_public_v4(*address)));
    }

    #[test]
    fn mixed_feed_has_every_kind() {
        let dir = tempfile::tempdir().unwrap();
        let feed = write_mixed(dir.path(), 1_000, 50).unwrap();
        assert_eq!(feed.indicators, 1_004);
        assert!(!feed.sample_v4_hosts.is_empty());
        assert!(!feed.sample_v6_hosts.is_empty());
        assert!(!feed.sample_in_prefixes.is_empty());
        let text = std::fs::read_to_string(&feed.path).unwrap();
        assert_eq!(text.lines().count(), feed.sightings);
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(value["indicator"].is_string(), "{line}");
        }
    }
}
