//! The XDP program on crafted frames, through BPF_PROG_TEST_RUN.
//!
//! One table of fixtures: each has a description, a frame, the expected XDP
//! action and the counter slot that must move. The maps hold a compiled image
//! of a small config, loaded exactly as `intelwall run` loads it, but no
//! interface is attached.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use intelwall::dataplane::{Capacity, Dataplane};
use intelwall::pipeline;
use intelwall_common::PathCounter;
use intelwall_tests::netns::require_root;
use intelwall_tests::packet::{
    ETHERTYPE_IPV4, ETHERTYPE_IPV6, ExtensionHeader, IPPROTO_UDP, Ipv4Header, Ipv6Header, Link,
    VlanTags, arp_reply, arp_request, ethernet, ipv4_with_ihl, neighbour_solicitation, truncated,
    udp,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

const SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
const RECEIVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 2];

// The safety allowlist would protect this host's own addresses, which differ
// from machine to machine; the fixtures must not depend on them.
const CONFIG: &str = r#"
[safety]
enabled = false

[[feed]]
name = "drop-list"
path = "drop.txt"
format = "list"
datasets = ["drop"]

[[feed]]
name = "threats"
path = "threats.jsonl"
format = "jsonl"

[[rule]]
name = "allow-partner"
expression = 'ip.src in {192.0.2.3}'
action = "allow"

[[rule]]
name = "drop-listed"
expression = 'any(ip.intel.datasets[*] == "drop")'
action = "drop"

[[rule]]
name = "ddos-fr"
expression = 'any(ip.intel.datasets[*] == "ddos") and any(ip.intel.target_countries[*] == "FR")'
action = "drop"

[[rule]]
name = "watch-botnets"
expression = 'any(ip.intel.datasets[*] == "botnet")'
action = "log"
"#;

const DROP_LIST: &str = "\
; documentation ranges only
192.0.2.0/24 ; SBL000001
198.51.100.7
2001:db8:bad::/48
2001:db8::7
";

const THREATS: &str = r#"{"indicator": "203.0.113.10", "datasets": ["ddos"], "target_countries": ["FR"]}
{"indicator": "203.0.113.20", "datasets": ["ddos"], "target_countries": ["DE"]}
{"indicator": "203.0.113.30", "datasets": ["botnet"]}
"#;

struct Fixture {
    description: &'static str,
    frame: Vec<u8>,
    action: u32,
    counter: PathCounter,
}

fn v4(text: &str) -> IpAddr {
    IpAddr::V4(text.parse::<Ipv4Addr>().expect("valid IPv4 literal"))
}

fn v6(text: &str) -> IpAddr {
    IpAddr::V6(text.parse::<Ipv6Addr>().expect("valid IPv6 literal"))
}

fn link() -> Link {
    Link::new(SENDER_MAC, RECEIVER_MAC)
}

fn udp_from(source: &str) -> Vec<u8> {
    let source = if source.contains(':') {
        v6(source)
    } else {
        v4(source)
    };
    let destination = match source {
        IpAddr::V4(_) => v4("10.0.0.2"),
        IpAddr::V6(_) => v6("fd00::2"),
    };
    link().udp(source, destination, b"fixture")
}

fn tagged_udp_from(source: &str, tags: VlanTags) -> Vec<u8> {
    link()
        .with_tags(tags)
        .udp(v4(source), v4("10.0.0.2"), b"fixture")
}

fn ipv4_frame(header: Ipv4Header) -> Vec<u8> {
    let datagram = udp(
        IpAddr::V4(header.src),
        IpAddr::V4(header.dst),
        40000,
        9,
        b"fixture",
    );
    link().frame(ETHERTYPE_IPV4, &header.build(&datagram))
}

fn ipv6_with_extensions(source: &str) -> Vec<u8> {
    let IpAddr::V6(source) = v6(source) else {
        unreachable!()
    };
    let destination: Ipv6Addr = "fd00::2".parse().expect("valid literal");
    let datagram = udp(
        IpAddr::V6(source),
        IpAddr::V6(destination),
        40000,
        9,
        b"fixture",
    );
    let packet = Ipv6Header::new(source, destination)
        .with_extension(ExtensionHeader::HopByHop)
        .with_extension(ExtensionHeader::DestinationOptions)
        .build(IPPROTO_UDP, &datagram);
    link().frame(ETHERTYPE_IPV6, &packet)
}

fn fixtures() -> Vec<Fixture> {
    let listed_v4: Ipv4Addr = "192.0.2.77".parse().expect("valid literal");
    let clean_v4: Ipv4Addr = "198.51.100.8".parse().expect("valid literal");
    let destination: Ipv4Addr = "10.0.0.2".parse().expect("valid literal");
    let three_tags = {
        let inner = tagged_udp_from(
            "198.51.100.7",
            VlanTags::Double {
                outer: 10,
                inner: 20,
            },
        );
        // Insert a third tag after the MAC addresses.
        let mut frame = inner[..12].to_vec();
        frame.extend_from_slice(&[0x81, 0x00, 0x00, 0x1e]);
        frame.extend_from_slice(&inner[12..]);
        frame
    };
    vec![
        Fixture {
            description: "IPv4 host entry",
            frame: udp_from("198.51.100.7"),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "IPv4 address inside a listed prefix",
            frame: udp_from("192.0.2.77"),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "IPv4 address in no feed",
            frame: udp_from("198.51.100.8"),
            action: XDP_PASS,
            counter: PathCounter::Passed,
        },
        Fixture {
            description: "allow rule before a broader drop (rule order decides)",
            frame: udp_from("192.0.2.3"),
            action: XDP_PASS,
            counter: PathCounter::Allowed,
        },
        Fixture {
            description: "jsonl indicator matching both conditions of ddos-fr",
            frame: udp_from("203.0.113.10"),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "jsonl indicator with ddos but another target country",
            frame: udp_from("203.0.113.20"),
            action: XDP_PASS,
            counter: PathCounter::Passed,
        },
        Fixture {
            description: "log rule match passes",
            frame: udp_from("203.0.113.30"),
            action: XDP_PASS,
            counter: PathCounter::Passed,
        },
        Fixture {
            description: "802.1Q tagged frame from a listed host",
            frame: tagged_udp_from("198.51.100.7", VlanTags::Single { vid: 100 }),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "QinQ frame from a listed prefix",
            frame: tagged_udp_from(
                "192.0.2.9",
                VlanTags::Double {
                    outer: 10,
                    inner: 20,
                },
            ),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "three VLAN tags: more than the parser follows",
            frame: three_tags,
            action: XDP_PASS,
            counter: PathCounter::VlanDepth,
        },
        Fixture {
            description: "IPv4 with four option bytes (IHL 6) from a listed prefix",
            frame: ipv4_frame(
                Ipv4Header::new(listed_v4, destination, IPPROTO_UDP).with_options(&[1, 1, 1, 0]),
            ),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "IPv4 with 40 option bytes (IHL 15) from a listed prefix",
            frame: ipv4_frame(
                Ipv4Header::new(listed_v4, destination, IPPROTO_UDP).with_options(&[1; 40]),
            ),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "non-first IPv4 fragment from a listed prefix",
            frame: ipv4_frame(
                Ipv4Header::new(listed_v4, destination, IPPROTO_UDP).fragment(185, false),
            ),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "IPv4 fragment from a clean source",
            frame: ipv4_frame(
                Ipv4Header::new(clean_v4, destination, IPPROTO_UDP).fragment(185, true),
            ),
            action: XDP_PASS,
            counter: PathCounter::Passed,
        },
        Fixture {
            description: "IPv4 header length 4 words",
            frame: link().frame(
                ETHERTYPE_IPV4,
                &ipv4_with_ihl(listed_v4, destination, 4, b"fixture"),
            ),
            action: XDP_PASS,
            counter: PathCounter::BadHeader,
        },
        Fixture {
            description: "IPv4 header claiming more bytes than the frame holds",
            frame: truncated(
                &ipv4_frame(
                    Ipv4Header::new(listed_v4, destination, IPPROTO_UDP).with_options(&[1; 40]),
                ),
                14 + 40,
            ),
            action: XDP_PASS,
            counter: PathCounter::Truncated,
        },
        Fixture {
            description: "IPv6 host entry",
            frame: udp_from("2001:db8::7"),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "IPv6 address inside a listed prefix",
            frame: udp_from("2001:db8:bad:1::1"),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "IPv6 with Hop-by-Hop and Destination Options from a listed host",
            frame: ipv6_with_extensions("2001:db8::7"),
            action: XDP_DROP,
            counter: PathCounter::Dropped,
        },
        Fixture {
            description: "IPv6 address in no feed",
            frame: udp_from("2001:db8::8"),
            action: XDP_PASS,
            counter: PathCounter::Passed,
        },
        Fixture {
            description: "IPv6 neighbour solicitation from a listed prefix",
            frame: link().frame(
                ETHERTYPE_IPV6,
                &neighbour_solicitation(
                    SENDER_MAC,
                    "2001:db8:bad::1".parse().expect("valid literal"),
                    "2001:db8:bad::2".parse().expect("valid literal"),
                ),
            ),
            action: XDP_PASS,
            counter: PathCounter::NeighbourDiscovery,
        },
        Fixture {
            description: "ARP request from a listed address",
            frame: arp_request(SENDER_MAC, listed_v4, destination),
            action: XDP_PASS,
            counter: PathCounter::NotIp,
        },
        Fixture {
            description: "ARP reply from a listed address",
            frame: arp_reply(SENDER_MAC, listed_v4, RECEIVER_MAC, destination),
            action: XDP_PASS,
            counter: PathCounter::NotIp,
        },
        // BPF_PROG_TEST_RUN rejects frames shorter than an Ethernet header,
        // as drivers never deliver them, so the shortest frame is 14 bytes.
        Fixture {
            description: "Ethernet header announcing IPv4, nothing after it",
            frame: ethernet(
                RECEIVER_MAC,
                SENDER_MAC,
                VlanTags::None,
                ETHERTYPE_IPV4,
                &[],
            ),
            action: XDP_PASS,
            counter: PathCounter::Truncated,
        },
        Fixture {
            description: "IPv4 frame cut inside the IP header",
            frame: truncated(&udp_from("198.51.100.7"), 14 + 10),
            action: XDP_PASS,
            counter: PathCounter::Truncated,
        },
        Fixture {
            description: "IPv6 frame cut inside the fixed header",
            frame: truncated(&udp_from("2001:db8::7"), 14 + 20),
            action: XDP_PASS,
            counter: PathCounter::Truncated,
        },
        Fixture {
            description: "VLAN tag cut short",
            frame: ethernet(RECEIVER_MAC, SENDER_MAC, VlanTags::None, 0x8100, &[0x00]),
            action: XDP_PASS,
            counter: PathCounter::Truncated,
        },
    ]
}

/// A directory for one test's config and feeds, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("intelwall-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        Scratch(dir)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).expect("temp dir is writable");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn loaded_dataplane(scratch: &Scratch) -> (Dataplane, pipeline::Loaded) {
    scratch.write("drop.txt", DROP_LIST);
    scratch.write("threats.jsonl", THREATS);
    let config = scratch.write("intelwall.toml", CONFIG);
    let loaded = pipeline::load(&config, jiff::Timestamp::now()).expect("fixture config loads");
    let image = &loaded.compiled.image;
    let mut dataplane = Dataplane::load(Capacity::for_image(image)).expect("XDP program loads");
    dataplane
        .write_initial(image)
        .expect("maps accept the image");
    (dataplane, loaded)
}

#[test]
fn xdp_fixture_table() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new("fixtures");
    let (mut dataplane, _) = loaded_dataplane(&scratch);

    let mut failures = Vec::new();
    for fixture in fixtures() {
        let before = dataplane.path_counters().expect("counters readable");
        let action = dataplane
            .test_run(&fixture.frame)
            .expect("BPF_PROG_TEST_RUN runs");
        let after = dataplane.path_counters().expect("counters readable");
        let slot = fixture.counter as usize;
        let moved = after[slot].packets - before[slot].packets;
        let other_moves: u64 = (0..after.len())
            .filter(|index| *index != slot)
            .map(|index| after[index].packets - before[index].packets)
            .sum();
        if action != fixture.action || moved != 1 || other_moves != 0 {
            failures.push(format!(
                "{}: expected action {} and counter {}, got action {action}, {moved} on {}, {other_moves} elsewhere",
                fixture.description,
                fixture.action,
                fixture.counter.name(),
                fixture.counter.name()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "fixtures failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn rule_counters_count_every_match() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new("rule-counters");
    let (mut dataplane, loaded) = loaded_dataplane(&scratch);

    // 203.0.113.30 matches only the log rule; 198.51.100.7 only drop-listed;
    // 192.0.2.3 matches allow-partner first and drop-listed too.
    let sends = [
        ("203.0.113.30", 3u64),
        ("198.51.100.7", 2),
        ("192.0.2.3", 4),
    ];
    for (source, times) in sends {
        let frame = udp_from(source);
        for _ in 0..times {
            dataplane.test_run(&frame).expect("BPF_PROG_TEST_RUN runs");
        }
    }

    let compiled = &loaded.compiled;
    let class_counters = dataplane
        .class_counters(compiled.verdicts.len())
        .expect("counters readable");
    let report = intelwall::report::CounterReport::new(
        compiled,
        &class_counters,
        &dataplane.path_counters().unwrap(),
    );
    let packets = |name: &str| {
        report
            .rules
            .iter()
            .find(|rule| rule.name == name)
            .map(|rule| rule.packets)
            .expect("rule is in the report")
    };
    assert_eq!(packets("watch-botnets"), 3);
    assert_eq!(packets("drop-listed"), 2 + 4);
    assert_eq!(packets("allow-partner"), 4);
    assert_eq!(packets("ddos-fr"), 0);
    assert_eq!(report.totals.dropped, 2);
    assert_eq!(report.totals.allowed, 4);
    assert_eq!(report.totals.passed, 3);
}

const TAG_CONFIG: &str = r#"
[[feed]]
name = "threats"
path = "threats.jsonl"
format = "jsonl"

[[rule]]
name = "to-honeypot"
expression = 'any(ip.intel.datasets[*] == "botnet")'
action = "tag"
mark = 0x10
dscp = 46
"#;

/// A tagged frame leaves XDP with the mark in its metadata (for the TC
/// program) and its DSCP rewritten under a still valid IPv4 checksum; an
/// untagged frame leaves as it came.
#[test]
fn tag_writes_metadata_and_dscp() {
    if !require_root() {
        return;
    }
    let scratch = Scratch::new("tag");
    scratch.write("threats.jsonl", THREATS);
    let config = scratch.write("intelwall.toml", TAG_CONFIG);
    let loaded = pipeline::load(&config, jiff::Timestamp::now()).expect("tag config loads");
    let observation = intelwall::events::Observation::new(
        &loaded.compiled,
        &loaded.config,
        &intelwall::events::LogSlots::default(),
        false,
    );
    let image = &loaded.compiled.image;
    let mut dataplane = Dataplane::load(Capacity::for_image(image)).expect("XDP program loads");
    dataplane
        .write_initial_with(image, observation.extras)
        .expect("maps accept the image");

    let tagged = udp_from("203.0.113.30");
    let (action, meta_len, out) = dataplane.test_run_output(&tagged).expect("test run");
    assert_eq!(action, XDP_PASS);
    assert_eq!(meta_len, 8, "metadata in front of the frame");
    let magic = u32::from_ne_bytes(out[0..4].try_into().unwrap());
    let mark = u32::from_ne_bytes(out[4..8].try_into().unwrap());
    assert_eq!(magic, intelwall_common::TAG_META_MAGIC);
    assert_eq!(mark, 0x10);
    let header = &out[meta_len + 14..meta_len + 34];
    assert_eq!(header[1] >> 2, 46, "DSCP");
    assert_eq!(
        intelwall_tests::packet::internet_checksum(header),
        0,
        "IPv4 checksum"
    );

    let clean = udp_from("203.0.113.20");
    let (action, meta_len, out) = dataplane.test_run_output(&clean).expect("test run");
    assert_eq!(action, XDP_PASS);
    assert_eq!(meta_len, 0);
    assert_eq!(out, clean);
}
