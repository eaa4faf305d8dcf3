//! The compiled path against a straightforward interpreter, on random input.
//!
//! For random feeds, random rules and random addresses, the verdict the XDP
//! program reaches (BPF_PROG_TEST_RUN over the maps the agent writes) must
//! equal the verdict of evaluating every rule's expression, in order, over
//! the address's merged sightings. Then a second random state is applied as
//! a live diff over the first, and every address is checked again: this
//! covers the transitional classes and the stable bit and class registry.
//!
//! The generator is seeded, so a failure names a seed that reproduces it.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use intelwall::compile::Registry;
use intelwall::config::Action;
use intelwall::dataplane::{Capacity, Dataplane};
use intelwall::intel::Sighting;
use intelwall::pipeline::{self, Loaded};
use intelwall::rule::AddressView;
use intelwall::source::FetchOptions;
use intelwall_common::PathCounter;
use intelwall_tests::netns::require_root;
use intelwall_tests::packet::Link;
use jiff::Timestamp;

const CASES: u64 = 24;
const ADDRESSES_PER_CASE: usize = 48;
const NOW: &str = "2026-12-04T12:00:00Z";

const DATASETS: [&str; 3] = ["ddos", "botnet", "scanner"];
const COUNTRIES: [&str; 3] = ["FR", "DE", "US"];
const ACTORS: [&str; 2] = ["APT1", "APT2"];
const INDUSTRIES: [&str; 2] = ["Banking", "Health"];

/// Prefix lengths drawn for IPv4 and IPv6 indicators, all inside the
/// benchmark range 198.18.0.0/16 and 2001:db8:a::/48.
const V4_LENGTHS: [u8; 5] = [16, 20, 24, 28, 32];
const V6_LENGTHS: [u8; 4] = [48, 56, 64, 128];

struct Generator {
    rng: fastrand::Rng,
}

impl Generator {
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.rng.usize(..items.len())]
    }

    fn prefix(&mut self) -> ipnet::IpNet {
        if self.rng.u8(..4) == 0 {
            let len = *self.pick(&V6_LENGTHS);
            let address = Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xa,
                self.rng.u16(..4),
                0,
                0,
                0,
                self.rng.u16(..8),
            );
            ipnet::IpNet::new(IpAddr::V6(address), len)
                .expect("valid length")
                .trunc()
        } else {
            let len = *self.pick(&V4_LENGTHS);
            let address = Ipv4Addr::new(198, 18, self.rng.u8(..8), self.rng.u8(..16));
            ipnet::IpNet::new(IpAddr::V4(address), len)
                .expect("valid length")
                .trunc()
        }
    }

    fn values(&mut self, vocabulary: &[&str]) -> String {
        let count = self.rng.usize(..=2);
        let values: Vec<String> = (0..count)
            .map(|_| format!("\"{}\"", self.pick(vocabulary)))
            .collect();
        values.join(",")
    }

    fn jsonl_feed(&mut self) -> String {
        let mut text = String::new();
        for _ in 0..self.rng.usize(4..14) {
            let prefix = self.prefix();
            for _ in 0..self.rng.usize(1..=2) {
                let mut line = format!(
                    "{{\"indicator\":\"{prefix}\",\"datasets\":[{}],\"target_countries\":[{}],\"attacker_names\":[{}],\"target_industries\":[{}]",
                    self.values(&DATASETS),
                    self.values(&COUNTRIES),
                    self.values(&ACTORS),
                    self.values(&INDUSTRIES)
                );
                if self.rng.bool() {
                    let _ = write!(line, ",\"score\":{}", self.rng.u8(..=100));
                }
                if self.rng.bool() {
                    let days = self.rng.i64(0..20);
                    let seen = NOW.parse::<Timestamp>().expect("valid time")
                        - jiff::SignedDuration::from_hours(days * 24 + 1);
                    let _ = write!(line, ",\"last_seen\":\"{seen}\"");
                }
                line.push_str("}\n");
                text.push_str(&line);
            }
        }
        text
    }

    fn list_feed(&mut self) -> String {
        (0..self.rng.usize(0..6))
            .map(|_| format!("{}\n", self.prefix()))
            .collect()
    }

    fn atom(&mut self) -> String {
        match self.rng.u8(..10) {
            0 => format!("any(ip.intel.datasets[*] == \"{}\")", self.pick(&DATASETS)),
            1 => format!(
                "any(ip.intel.target_countries[*] in {{\"{}\" \"{}\"}})",
                self.pick(&COUNTRIES),
                self.pick(&COUNTRIES)
            ),
            2 => format!("all(ip.intel.datasets[*] != \"{}\")", self.pick(&DATASETS)),
            3 => format!("ip.intel.score > {}", self.rng.u8(..=100)),
            4 => format!("ip.intel.days_since_seen <= {}", self.rng.u8(..20)),
            5 => format!("ip.src in {{{}}}", self.prefix()),
            6 => format!(
                "any(ip.intel.events[*].dataset == \"{}\" and ip.intel.events[*].target_country == \"{}\")",
                self.pick(&DATASETS),
                self.pick(&COUNTRIES)
            ),
            7 => "any(ip.intel.feeds[*] == \"listed\")".to_owned(),
            8 => format!(
                "any(ip.intel.attacker_names[*] == \"{}\")",
                self.pick(&ACTORS)
            ),
            _ => format!(
                "any(ip.intel.target_industries[*] == \"{}\")",
                self.pick(&INDUSTRIES)
            ),
        }
    }

    fn expression(&mut self, depth: u8) -> String {
        if depth == 0 || self.rng.u8(..3) == 0 {
            return self.atom();
        }
        let left = self.expression(depth - 1);
        match self.rng.u8(..4) {
            0 => format!("({left} and {})", self.expression(depth - 1)),
            1 => format!("({left} or {})", self.expression(depth - 1)),
            2 => format!("({left} xor {})", self.expression(depth - 1)),
            _ => format!("not {left}"),
        }
    }

    fn rules(&mut self) -> String {
        let mut text = String::new();
        for index in 0..self.rng.usize(1..=6) {
            let action = *self.pick(&["drop", "allow", "tag", "log"]);
            let expression = self.expression(3);
            let _ = write!(
                text,
                "\n[[rule]]\nname = \"r{index}\"\nexpression = '{expression}'\naction = \"{action}\"\n"
            );
            if action == "tag" {
                text.push_str("mark = 0x10\n");
            }
        }
        text
    }

    fn address_inside(&mut self, prefix: ipnet::IpNet) -> IpAddr {
        match prefix {
            ipnet::IpNet::V4(net) => {
                let host_bits = 32 - u32::from(net.prefix_len());
                let offset = if host_bits == 0 {
                    0
                } else {
                    self.rng.u32(..) & ((1u64 << host_bits) - 1) as u32
                };
                IpAddr::V4(Ipv4Addr::from(u32::from(net.network()) | offset))
            }
            ipnet::IpNet::V6(net) => {
                let host_bits = 128 - u32::from(net.prefix_len());
                let offset = if host_bits == 0 {
                    0
                } else {
                    u128::from(self.rng.u64(..)) & ((1u128 << host_bits.min(127)) - 1)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(net.network()) | offset))
            }
        }
    }

    fn addresses(&mut self, loaded: &Loaded) -> Vec<IpAddr> {
        let indicators: Vec<ipnet::IpNet> = loaded.intel.indicators().map(|(net, _)| net).collect();
        (0..ADDRESSES_PER_CASE)
            .map(|_| {
                if !indicators.is_empty() && self.rng.bool() {
                    let net = *self.pick(&indicators);
                    self.address_inside(net)
                } else {
                    let net = self.prefix();
                    self.address_inside(net)
                }
            })
            .collect()
    }
}

fn write_state(dir: &Path, generator: &mut Generator) -> std::path::PathBuf {
    std::fs::write(dir.join("threats.jsonl"), generator.jsonl_feed()).expect("write jsonl feed");
    std::fs::write(dir.join("listed.txt"), generator.list_feed()).expect("write list feed");
    let config = format!(
        "[safety]\nenabled = false\n\n\
         [[feed]]\nname = \"threats\"\npath = \"threats.jsonl\"\nformat = \"jsonl\"\n\n\
         [[feed]]\nname = \"listed\"\npath = \"listed.txt\"\nformat = \"list\"\ndatasets = [\"ddos\"]\n{}",
        generator.rules()
    );
    let path = dir.join("intelwall.toml");
    std::fs::write(&path, config).expect("write config");
    path
}

/// The interpreter's verdict: the first matching deciding rule, in order.
fn interpreted(loaded: &Loaded, address: IpAddr) -> PathCounter {
    let sightings: Vec<Sighting> = loaded
        .intel
        .sightings_covering(address)
        .into_iter()
        .map(|(_, sighting)| sighting)
        .collect();
    let view = AddressView {
        intel: &loaded.intel,
        address,
        sightings: &sightings,
        now: loaded.compiled.now,
    };
    for rule in &loaded.compiled.rules {
        if rule.action == Action::Log || !rule.expr.eval(&view) {
            continue;
        }
        return match rule.action {
            Action::Drop => PathCounter::Dropped,
            Action::Allow => PathCounter::Allowed,
            Action::Tag => PathCounter::Tagged,
            Action::Log => unreachable!("skipped above"),
        };
    }
    PathCounter::Passed
}

/// The kernel's verdict, read from which path counter the run moved.
fn kernel_verdict(dataplane: &mut Dataplane, address: IpAddr) -> PathCounter {
    let destination = match address {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
    };
    let frame =
        Link::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).udp(address, destination, b"property");
    let before = dataplane.path_counters().expect("counters readable");
    dataplane.test_run(&frame).expect("BPF_PROG_TEST_RUN runs");
    let after = dataplane.path_counters().expect("counters readable");
    PathCounter::ALL
        .into_iter()
        .find(|slot| after[*slot as usize].packets > before[*slot as usize].packets)
        .expect("every run moves one counter")
}

fn check_all(
    dataplane: &mut Dataplane,
    loaded: &Loaded,
    addresses: &[IpAddr],
    context: &str,
) -> Vec<String> {
    let mut failures = Vec::new();
    for address in addresses {
        let expected = interpreted(loaded, *address);
        let actual = kernel_verdict(dataplane, *address);
        if expected != actual {
            failures.push(format!(
                "{context}: {address}: interpreter says {}, kernel says {}",
                expected.name(),
                actual.name()
            ));
        }
    }
    failures
}

fn config_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn kernel_verdicts_match_the_interpreter() {
    if !require_root() {
        return;
    }
    let now: Timestamp = NOW.parse().expect("valid time");
    let capacity = Capacity {
        hosts_v4: 4096,
        hosts_v6: 4096,
        prefixes_v4: 4096,
        prefixes_v6: 4096,
        classes: 4096,
    };
    let mut failures = Vec::new();
    for seed in 0..CASES {
        let mut generator = Generator {
            rng: fastrand::Rng::with_seed(seed),
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_state(dir.path(), &mut generator);
        let first =
            pipeline::load_with(&config, now, &FetchOptions::default(), &Registry::default())
                .unwrap_or_else(|error| {
                    panic!(
                        "seed {seed}: load failed: {error}\n{}",
                        config_text(&config)
                    )
                });
        let mut dataplane = Dataplane::load(capacity).expect("XDP program loads");
        dataplane
            .write_initial(&first.compiled.image)
            .expect("maps accept the image");
        let addresses = generator.addresses(&first);
        let found = check_all(
            &mut dataplane,
            &first,
            &addresses,
            &format!("seed {seed}, initial"),
        );
        if !found.is_empty() {
            failures.extend(found);
            failures.push(config_text(&config));
            continue;
        }

        let config = write_state(dir.path(), &mut generator);
        let second = pipeline::load_with(
            &config,
            now,
            &FetchOptions::default(),
            &first.compiled.registry,
        )
        .unwrap_or_else(|error| panic!("seed {seed}: second load failed: {error}"));
        dataplane
            .apply(first.compiled.enforced(), second.compiled.enforced())
            .expect("the diff applies");
        let mut addresses = addresses;
        addresses.extend(generator.addresses(&second));
        let found = check_all(
            &mut dataplane,
            &second,
            &addresses,
            &format!("seed {seed}, after a diff"),
        );
        if !found.is_empty() {
            failures.extend(found);
            failures.push(config_text(&config));
        }
    }
    assert!(
        failures.is_empty(),
        "verdicts differ:\n{}",
        failures.join("\n")
    );
}

#[test]
fn rules_only_change_touches_no_entry() {
    if !require_root() {
        return;
    }
    let now: Timestamp = NOW.parse().expect("valid time");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("threats.jsonl"),
        "{\"indicator\":\"198.18.0.0/24\",\"datasets\":[\"ddos\"]}\n{\"indicator\":\"198.18.0.7\",\"datasets\":[\"botnet\"]}\n",
    )
    .expect("write feed");
    let config = dir.path().join("intelwall.toml");
    let write_rules = |first: &str, second: &str| {
        let text = format!(
            "[safety]\nenabled = false\n\n[[feed]]\nname = \"threats\"\npath = \"threats.jsonl\"\n\n\
             [[rule]]\nname = \"ddos\"\nexpression = 'any(ip.intel.datasets[*] == \"ddos\")'\naction = \"{first}\"\n\n\
             [[rule]]\nname = \"botnet\"\nexpression = 'any(ip.intel.datasets[*] == \"botnet\")'\naction = \"{second}\"\n"
        );
        std::fs::write(&config, text).expect("write config");
    };

    write_rules("drop", "allow");
    let first = pipeline::load_with(&config, now, &FetchOptions::default(), &Registry::default())
        .expect("first load");
    let mut dataplane =
        Dataplane::load(Capacity::for_image(&first.compiled.image)).expect("XDP program loads");
    dataplane
        .write_initial(&first.compiled.image)
        .expect("maps accept the image");
    let host: IpAddr = "198.18.0.7".parse().expect("valid literal");
    let neighbour: IpAddr = "198.18.0.8".parse().expect("valid literal");
    assert_eq!(kernel_verdict(&mut dataplane, host), PathCounter::Dropped);
    assert_eq!(
        kernel_verdict(&mut dataplane, neighbour),
        PathCounter::Dropped
    );

    // Same predicates, other actions and order of effect.
    write_rules("allow", "drop");
    let second = pipeline::load_with(
        &config,
        now,
        &FetchOptions::default(),
        &first.compiled.registry,
    )
    .expect("second load");
    assert_eq!(
        second.compiled.image.hosts_v4, first.compiled.image.hosts_v4,
        "a rules-only edit moved entries"
    );
    let stats = dataplane
        .apply(first.compiled.enforced(), second.compiled.enforced())
        .expect("the change applies");
    assert!(
        stats.is_rules_only(),
        "a rules-only edit wrote address entries: {stats:?}"
    );
    assert_eq!(kernel_verdict(&mut dataplane, host), PathCounter::Allowed);
    assert_eq!(
        kernel_verdict(&mut dataplane, neighbour),
        PathCounter::Allowed
    );
    assert_eq!(interpreted(&second, host), PathCounter::Allowed);
}
