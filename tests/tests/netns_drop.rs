//! End-to-end drop tests: the agent runs in a testbed's receiver namespace
//! and frames from flagged and clean sources are sent across the veth pair.
//! Flagged frames must never arrive and clean frames must all arrive,
//! untagged, with one 802.1Q tag and with QinQ tags.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use intelwall_tests::agent::{Agent, AgentDirs, xdp_attached};
use intelwall_tests::agent_binary;
use intelwall_tests::netns::{Testbed, require_root};
use intelwall_tests::packet::{ETHERTYPE_IPV4, IPPROTO_UDP, Ipv4Header, Link, VlanTags, udp};
use intelwall_tests::traffic::{Expectation, Receiver, check_arrivals, send_frames};
use ipnet::IpNet;

/// Frames per source and tag variant.
const FRAMES_PER_VARIANT: u64 = 10;

const TAGS: [VlanTags; 3] = [
    VlanTags::None,
    VlanTags::Single { vid: 100 },
    VlanTags::Double {
        outer: 200,
        inner: 100,
    },
];

/// A source address to send from, and whether the agent must drop it.
struct Source {
    address: IpAddr,
    flagged: bool,
    reason: String,
}

impl Source {
    fn new(address: &str, flagged: bool, reason: &str) -> Source {
        Source {
            address: address.parse().expect("valid address literal"),
            flagged,
            reason: reason.to_owned(),
        }
    }
}

/// Builds every frame for `sources`: each tag variant, plus an IPv4 header
/// with options for IPv4 sources. Returns the frames and the expectations.
fn build_traffic(testbed: &Testbed, sources: &[Source]) -> (Vec<Vec<u8>>, Vec<Expectation>) {
    let sender = testbed.sender();
    let receiver = testbed.receiver();
    let link = Link::new(sender.mac, receiver.mac);
    let mut frames = Vec::new();
    let mut expectations = Vec::new();
    for source in sources {
        let dst: IpAddr = match source.address {
            IpAddr::V4(_) => receiver.ipv4.into(),
            IpAddr::V6(_) => receiver.ipv6.into(),
        };
        let mut per_source = Vec::new();
        for tags in TAGS {
            let frame = link.with_tags(tags).udp(source.address, dst, b"intelwall");
            per_source.push(frame);
        }
        if let (IpAddr::V4(src), IpAddr::V4(dst)) = (source.address, dst) {
            // Options move the transport header; the verdict must not change.
            let datagram = udp(src.into(), dst.into(), 40000, 9, b"options");
            let packet = Ipv4Header::new(src, dst, IPPROTO_UDP)
                .with_options(&[1, 1, 1, 1, 1, 1, 1, 1])
                .build(&datagram);
            per_source.push(link.frame(ETHERTYPE_IPV4, &packet));
        }
        let sent = per_source.len() as u64 * FRAMES_PER_VARIANT;
        for _ in 0..FRAMES_PER_VARIANT {
            frames.extend(per_source.iter().cloned());
        }
        expectations.push(Expectation {
            source: source.address,
            label: source.reason.clone(),
            sent,
            expected: if source.flagged { 0 } else { sent },
        });
    }
    (frames, expectations)
}

/// Starts the agent with `config`, sends the traffic, stops the agent and
/// checks arrivals per source, then the agent's exit and detachment.
fn run_drop_test(config: &Path, sources: &[Source], rule_names: &[&str]) {
    let binary = agent_binary();
    let testbed = Testbed::new().expect("create testbed");
    let receiver = testbed.receiver();
    let agent = Agent::start(&binary, &receiver.netns, &receiver.interface, config)
        .expect("start the agent");

    let (frames, expectations) = build_traffic(&testbed, sources);
    let counting = Receiver::start(&receiver.netns, &receiver.interface).expect("start receiver");
    send_frames(&testbed.sender().netns, &testbed.sender().interface, frames).expect("send frames");
    let arrived = counting.finish().expect("receive frames");

    let output = agent.stop().expect("stop the agent");
    if let Err(report) = check_arrivals(&expectations, &arrived) {
        panic!("{report}\nagent stdout:\n{}", output.stdout);
    }
    assert!(
        output.status.success(),
        "agent exited with {} on SIGINT; stderr:\n{}",
        output.status,
        output.stderr
    );
    for rule in rule_names {
        assert!(
            output.stdout.contains(rule),
            "the counter table on stdout names no rule `{rule}`:\n{}",
            output.stdout
        );
    }
    let attached = xdp_attached(&receiver.netns, &receiver.interface).expect("query the link");
    assert!(
        !attached,
        "the XDP program is still attached after the agent stopped"
    );
}

/// A list feed in the Spamhaus DROP layout: hosts and prefixes, both
/// families, `;` comments.
const LIST_FEED: &str = "\
; test list: documentation ranges only
192.0.2.10 ; host
198.51.100.0/25 ; prefix
2001:db8:1::10 ; host
2001:db8:bad::/48 ; prefix
";

/// A JSON lines feed: two DDoS sources, only one of which targets France.
const JSONL_FEED: &str = r#"{"indicator":"203.0.113.5","datasets":["ddos"],"target_countries":["FR","BE"],"attacker_countries":["NL"],"last_seen":"2026-11-30T12:00:00Z","score":90}
{"indicator":"203.0.113.6","datasets":["ddos"],"target_countries":["DE"],"last_seen":"2026-11-30T12:00:00Z","score":80}
{"indicator":"2001:db8:dd05::/64","datasets":["ddos"],"target_countries":["FR"],"last_seen":"2026-11-29T08:30:00Z"}
"#;

const DOCUMENTATION_CONFIG: &str = r#"
[[interface]]
name = "INTERFACE"
mode = "native"

[[feed]]
name = "test-drop"
path = "drop.txt"
format = "list"
datasets = ["drop"]

[[feed]]
name = "test-ddos"
path = "ddos.jsonl"
format = "jsonl"

[[rule]]
name = "ddos-fr"
expression = 'any(ip.intel.datasets[*] == "ddos") and any(ip.intel.target_countries[*] == "FR")'
action = "drop"

[[rule]]
name = "listed"
expression = 'any(ip.intel.datasets[*] == "drop")'
action = "drop"
"#;

#[test]
fn drops_listed_sources() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().expect("create a config directory");
    fs::write(dir.path().join("drop.txt"), LIST_FEED).expect("write list feed");
    fs::write(dir.path().join("ddos.jsonl"), JSONL_FEED).expect("write jsonl feed");
    let config = dir.path().join("intelwall.toml");
    let agent_dirs = AgentDirs::new().expect("create agent directories");
    fs::write(
        &config,
        agent_dirs.section("") + &DOCUMENTATION_CONFIG.replace("INTERFACE", "veth-rx"),
    )
    .expect("write config");

    let sources = [
        Source::new("192.0.2.10", true, "list host"),
        Source::new("192.0.2.11", false, "next to a listed host"),
        Source::new("198.51.100.1", true, "first host of a listed /25"),
        Source::new("198.51.100.127", true, "last address of a listed /25"),
        Source::new("198.51.100.128", false, "just past a listed /25"),
        Source::new("2001:db8:1::10", true, "list host v6"),
        Source::new("2001:db8:1::11", false, "next to a listed v6 host"),
        Source::new("2001:db8:bad::99", true, "inside a listed /48"),
        Source::new("2001:db8:bad:ffff::1", true, "end of a listed /48"),
        Source::new("2001:db8:bae::1", false, "past a listed /48"),
        Source::new("203.0.113.5", true, "ddos targeting FR"),
        Source::new("203.0.113.6", false, "ddos targeting DE only"),
        Source::new("2001:db8:dd05::7", true, "ddos prefix targeting FR"),
        Source::new("203.0.113.200", false, "in no feed"),
    ];
    run_drop_test(&config, &sources, &["ddos-fr", "listed"]);
}

/// Directory of the shared real-world feeds, outside the repository.
fn real_intel_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/intel")
}

/// Parses the networks of a list feed: one address or prefix at the start
/// of each line, `#` and `;` starting comments.
fn parse_networks(text: &str) -> Vec<IpNet> {
    text.lines()
        .filter_map(|line| {
            let entry = line.split(['#', ';']).next()?.split_whitespace().next()?;
            entry
                .parse::<IpNet>()
                .ok()
                .or_else(|| entry.parse::<IpAddr>().ok().map(IpNet::from))
        })
        .collect()
}

/// Picks about `count` flagged sources spread over `networks`: the second
/// address of every n-th prefix (the address itself for a host entry).
fn flagged_samples(networks: &[IpNet], count: usize, feed: &str) -> Vec<Source> {
    let step = (networks.len() / count).max(1);
    networks
        .iter()
        .step_by(step)
        .take(count)
        .map(|net| {
            let address = match net.network() {
                IpAddr::V4(v4) if net.prefix_len() < 32 => {
                    IpAddr::V4(Ipv4Addr::from(u32::from(v4) + 1))
                }
                IpAddr::V6(v6) if net.prefix_len() < 128 => {
                    IpAddr::V6(Ipv6Addr::from(u128::from(v6) + 1))
                }
                host => host,
            };
            Source {
                address,
                flagged: true,
                reason: format!("in {net} ({feed})"),
            }
        })
        .collect()
}

/// Picks `count` addresses that no network in `networks` contains, by
/// walking a fixed pseudo-random sequence so that runs are repeatable.
fn clean_samples(networks: &[IpNet], count: usize, v6: bool) -> Vec<Source> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut found = Vec::new();
    while found.len() < count {
        // xorshift64: cheap, fixed, good enough to spread the candidates.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let address = if v6 {
            // Global unicast space, 2000::/3.
            let high = (u128::from(state) << 64) | u128::from(state.rotate_left(17));
            IpAddr::V6(Ipv6Addr::from((high >> 3) | (1u128 << 125)))
        } else {
            IpAddr::V4(Ipv4Addr::from(state as u32))
        };
        if !networks.iter().any(|net| net.contains(&address)) {
            found.push(Source {
                address,
                flagged: false,
                reason: "in no listed prefix".to_owned(),
            });
        }
    }
    found
}

/// Quotes a string for TOML.
fn toml_string(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[test]
fn drops_real_feed_sources() {
    if !require_root() {
        return;
    }
    let intel = real_intel_dir();
    let drop_path = intel.join("drop.txt");
    let firehol_path = intel.join("firehol_level1.netset");
    let dropv6_path = intel.join("dropv6.txt");
    if !drop_path.is_file() || !firehol_path.is_file() {
        eprintln!(
            "SKIPPED drops_real_feed_sources: drop.txt or firehol_level1.netset not found in {}",
            intel.display()
        );
        return;
    }
    let read = |path: &Path| {
        fs::read_to_string(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
    };
    let drop = parse_networks(&read(&drop_path));
    let firehol = parse_networks(&read(&firehol_path));
    let dropv6 = if dropv6_path.is_file() {
        parse_networks(&read(&dropv6_path))
    } else {
        eprintln!(
            "dropv6.txt not found in {}; testing IPv4 only",
            intel.display()
        );
        Vec::new()
    };
    assert!(
        drop.len() > 100,
        "drop.txt parsed to only {} networks",
        drop.len()
    );
    assert!(
        firehol.len() > 100,
        "firehol_level1 parsed to only {} networks",
        firehol.len()
    );

    let mut sources = flagged_samples(&drop, 8, "Spamhaus DROP");
    sources.extend(flagged_samples(&firehol, 8, "FireHOL level1"));
    sources.extend(flagged_samples(&dropv6, 4, "Spamhaus DROPv6"));
    let all: Vec<IpNet> = drop
        .iter()
        .chain(&firehol)
        .chain(&dropv6)
        .copied()
        .collect();
    sources.extend(clean_samples(&all, 6, false));
    if !dropv6.is_empty() {
        sources.extend(clean_samples(&all, 3, true));
    }

    let agent_dirs = AgentDirs::new().expect("create agent directories");
    let mut config = agent_dirs.section("");
    config += &format!(
        "[[interface]]\nname = \"veth-rx\"\nmode = \"native\"\n\n\
         [[feed]]\nname = \"spamhaus-drop\"\npath = {}\nformat = \"list\"\ndatasets = [\"drop\"]\n\n\
         [[feed]]\nname = \"firehol-level1\"\npath = {}\nformat = \"list\"\ndatasets = [\"firehol\"]\n\n",
        toml_string(&drop_path.display().to_string()),
        toml_string(&firehol_path.display().to_string()),
    );
    if !dropv6.is_empty() {
        config.push_str(&format!(
            "[[feed]]\nname = \"spamhaus-dropv6\"\npath = {}\nformat = \"list\"\ndatasets = [\"drop\"]\n\n",
            toml_string(&dropv6_path.display().to_string())
        ));
    }
    config.push_str(
        "[[rule]]\nname = \"blocklists\"\n\
         expression = 'any(ip.intel.datasets[*] in {\"drop\" \"firehol\"})'\naction = \"drop\"\n",
    );
    let dir = tempfile::tempdir().expect("create a config directory");
    let config_path = dir.path().join("intelwall.toml");
    fs::write(&config_path, config).expect("write config");

    run_drop_test(&config_path, &sources, &["blocklists"]);
}
