//! What the agent shows of its work, with real traffic in a namespace
//! testbed: per-rule counters where a log rule and a drop rule overlap,
//! sampled events as JSON lines, `intelwall stats` with and without a
//! running agent, Prometheus metrics read with a real parser, and tagging:
//! the mark seen by nftables inside the receiver's namespace, and the DSCP
//! rewritten with a valid IPv4 checksum.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{IpAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use intelwall_tests::agent::{Agent, AgentDirs};
use intelwall_tests::agent_binary;
use intelwall_tests::netns::{Testbed, require_root};
use intelwall_tests::packet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, Link, internet_checksum};
use intelwall_tests::traffic::{Capture, Receiver, send_frames};

/// Matches both rules below: the log rule counts it, the drop rule decides.
const BOTH: &str = "192.0.2.10";
/// Matches only the log rule.
const WATCHED: &str = "198.51.100.20";
/// Matches the tag rule.
const TAGGED_V4: &str = "192.0.2.30";
const TAGGED_V6: &str = "2001:db8::30";
/// Matches nothing.
const CLEAN: &str = "203.0.113.40";

const FEED: &str = r#"{"indicator":"192.0.2.10","datasets":["ddos"]}
{"indicator":"198.51.100.20","datasets":["scanner"]}
{"indicator":"192.0.2.30","datasets":["honeypot"]}
{"indicator":"2001:db8::30","datasets":["honeypot"]}
"#;

const RULES: &str = r#"
[[rule]]
name = "watch"
expression = 'any(ip.intel.datasets[*] in {"ddos" "scanner"})'
action = "log"
log = true
sample = "1/1"

[[rule]]
name = "drop-ddos"
expression = 'any(ip.intel.datasets[*] == "ddos")'
action = "drop"

[[rule]]
name = "to-honeypot"
expression = 'any(ip.intel.datasets[*] == "honeypot")'
action = "tag"
mark = 0x10
dscp = 46
"#;

/// Address the metrics are served on, inside the receiver's namespace.
const METRICS_ADDRESS: &str = "127.0.0.1:9464";
/// Polls for events, each [`POLL_INTERVAL`] apart.
const POLL_LIMIT: u32 = 600;
const POLL_INTERVAL: Duration = Duration::from_millis(100);

fn address(text: &str) -> IpAddr {
    text.parse().expect("valid address literal")
}

fn write_config(dir: &Path, agent_dirs: &AgentDirs) -> PathBuf {
    fs::write(dir.join("feed.jsonl"), FEED).expect("feed written");
    let config = format!(
        "{}\n[[interface]]\nname = \"veth-rx\"\nmode = \"native\"\n\n\
         [[feed]]\nname = \"intel\"\npath = \"feed.jsonl\"\nformat = \"jsonl\"\n{RULES}",
        agent_dirs.section("")
    );
    let path = dir.join("intelwall.toml");
    fs::write(&path, config).expect("config written");
    path
}

fn frames(testbed: &Testbed, sources: &[&str], copies: usize) -> Vec<Vec<u8>> {
    let link = Link::new(testbed.sender().mac, testbed.receiver().mac);
    let mut frames = Vec::new();
    for _ in 0..copies {
        for source in sources {
            let source = address(source);
            let destination = match source {
                IpAddr::V4(_) => IpAddr::V4(testbed.receiver().ipv4),
                IpAddr::V6(_) => IpAddr::V6(testbed.receiver().ipv6),
            };
            frames.push(link.udp(source, destination, b"observe"));
        }
    }
    frames
}

fn start_agent(testbed: &Testbed, config: &Path, events: &Path) -> Agent {
    Agent::start_with_args(
        &agent_binary(),
        &testbed.receiver().netns,
        "veth-rx",
        config,
        &[],
        &[
            OsStr::new("--events"),
            events.as_os_str(),
            OsStr::new("--metrics"),
            OsStr::new(METRICS_ADDRESS),
        ],
    )
    .expect("agent starts")
}

/// `intelwall --netns NS stats --json`, parsed.
fn stats(netns: &str, config: &Path) -> serde_json::Value {
    let output = Command::new(agent_binary())
        .args(["--netns", netns, "stats", "--json", "--config"])
        .arg(config)
        .output()
        .expect("stats runs");
    assert!(
        output.status.success(),
        "stats failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stats prints JSON")
}

fn rule_packets(stats: &serde_json::Value, rule: &str) -> u64 {
    stats["rules"]
        .as_array()
        .expect("rules array")
        .iter()
        .find(|entry| entry["name"] == rule)
        .and_then(|entry| entry["packets"].as_u64())
        .unwrap_or_else(|| panic!("rule {rule} missing from {stats}"))
}

/// Reads the events file until `expected` lines are there.
fn read_events(path: &Path, expected: usize, agent: &Agent) -> Vec<serde_json::Value> {
    for _ in 0..POLL_LIMIT {
        let text = fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).expect("each event line is JSON"))
            .collect();
        if lines.len() >= expected {
            return lines;
        }
        thread::sleep(POLL_INTERVAL);
    }
    panic!(
        "fewer than {expected} events in {}:\n{}\nagent stderr:\n{}",
        path.display(),
        fs::read_to_string(path).unwrap_or_default(),
        agent.stderr_so_far()
    );
}

/// GET `path` from `address` inside namespace `netns`.
fn http_get_in_netns(netns: &str, address: &str, path: &str) -> String {
    let namespace = File::open(format!("/run/netns/{netns}")).expect("namespace file");
    let address = address.to_owned();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n");
    thread::spawn(move || {
        // SAFETY: the descriptor is an open network namespace file; setns
        // moves only this thread.
        let result = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(result, 0, "setns: {}", std::io::Error::last_os_error());
        let mut stream = TcpStream::connect(&address).expect("metrics endpoint answers");
        stream.write_all(request.as_bytes()).expect("request sent");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response read");
        response
    })
    .join()
    .expect("metrics thread")
}

/// Samples by metric name and sorted labels.
type Samples = BTreeMap<(String, Vec<(String, String)>), f64>;

/// The metrics, parsed by prometheus-parse: sample name and labels to value.
fn scrape(netns: &str) -> Samples {
    let response = http_get_in_netns(netns, METRICS_ADDRESS, "/metrics");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "metrics answered {head}");
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("metrics parse");
    scrape
        .samples
        .into_iter()
        .map(|sample| {
            let mut labels: Vec<(String, String)> = sample
                .labels
                .iter()
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            labels.sort();
            let value = match sample.value {
                prometheus_parse::Value::Counter(value)
                | prometheus_parse::Value::Gauge(value)
                | prometheus_parse::Value::Untyped(value) => value,
                other => panic!("unexpected metric value {other:?}"),
            };
            ((sample.metric, labels), value)
        })
        .collect()
}

fn metric(metrics: &Samples, name: &str, rule: &str) -> f64 {
    metrics
        .iter()
        .find(|((metric, labels), _)| {
            metric == name
                && labels
                    .iter()
                    .any(|(key, value)| key == "rule" && value == rule)
        })
        .map(|(_, value)| *value)
        .unwrap_or_else(|| panic!("{name}{{rule=\"{rule}\"}} missing"))
}

#[test]
fn overlapping_rules_count_log_and_export() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::new().expect("testbed");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    let config = write_config(dir.path(), &agent_dirs);
    let events = dir.path().join("events.jsonl");
    let agent = start_agent(&testbed, &config, &events);
    let netns = testbed.receiver().netns.clone();

    let receiver = Receiver::start(&netns, &testbed.receiver().interface).expect("receiver");
    send_frames(
        &testbed.sender().netns,
        &testbed.sender().interface,
        frames(&testbed, &[BOTH, WATCHED, CLEAN], 5),
    )
    .expect("frames sent");
    let arrived = receiver.finish().expect("receiver finishes");
    assert_eq!(arrived.get(&address(BOTH)).copied().unwrap_or(0), 0);
    assert_eq!(arrived.get(&address(WATCHED)).copied().unwrap_or(0), 5);
    assert_eq!(arrived.get(&address(CLEAN)).copied().unwrap_or(0), 5);

    // Both rules count the packets they share; only the drop rule decided.
    let running = stats(&netns, &config);
    assert_eq!(rule_packets(&running, "watch"), 10, "{running}");
    assert_eq!(rule_packets(&running, "drop-ddos"), 5, "{running}");
    assert_eq!(running["totals"]["dropped"], 5, "{running}");
    let drop_rule = running["rules"]
        .as_array()
        .and_then(|rules| rules.iter().find(|rule| rule["name"] == "drop-ddos"))
        .expect("drop-ddos in stats");
    assert_eq!(
        drop_rule["interfaces"]["veth-rx"]["packets"], 5,
        "{running}"
    );

    // One event per packet of the log rule, none for the drop rule.
    let lines = read_events(&events, 10, &agent);
    assert_eq!(lines.len(), 10, "{lines:?}");
    for line in &lines {
        assert_eq!(line["rule"], "watch");
        assert_eq!(line["action"], "log");
        assert_eq!(line["interface"], "veth-rx");
        assert_eq!(line["destination"], testbed.receiver().ipv4.to_string());
        assert_eq!(line["protocol"], 17);
        assert_eq!(line["source_port"], 40000);
        assert_eq!(line["destination_port"], 9);
        assert!(line["length"].as_u64().unwrap_or(0) > 42, "{line}");
        assert!(line["time"].as_str().is_some_and(|time| time.contains('T')));
        let expected_fate = if line["source"] == BOTH {
            "dropped"
        } else {
            "passed"
        };
        assert_eq!(line["fate"], expected_fate, "{line}");
    }
    let dropped_events = lines.iter().filter(|line| line["source"] == BOTH).count();
    assert_eq!(dropped_events, 5);

    // The metrics say what stats says.
    let metrics = scrape(&netns);
    for rule in ["watch", "drop-ddos"] {
        assert_eq!(
            metric(&metrics, "intelwall_rule_packets_total", rule) as u64,
            rule_packets(&running, rule),
            "{rule}"
        );
    }
    assert!(
        metrics
            .keys()
            .any(|(name, _)| name == "intelwall_feed_last_success_timestamp_seconds")
    );
    assert!(
        metrics
            .keys()
            .any(|(name, _)| name == "intelwall_map_entries")
    );

    // With the agent gone (SIGTERM leaves the pins), stats reads the same.
    let output = agent.stop_with(libc::SIGTERM).expect("agent stops");
    assert!(output.status.success(), "{}", output.stderr);
    let stopped = stats(&netns, &config);
    assert_eq!(rule_packets(&stopped, "watch"), 10, "{stopped}");
    assert_eq!(rule_packets(&stopped, "drop-ddos"), 5, "{stopped}");
    assert_eq!(stopped["totals"]["dropped"], 5, "{stopped}");

    let top = Command::new(agent_binary())
        .args(["top", "--json", "--events"])
        .arg(&events)
        .output()
        .expect("top runs");
    let top: serde_json::Value = serde_json::from_slice(&top.stdout).expect("top prints JSON");
    assert_eq!(top[0]["rule"], "watch");
    assert_eq!(top[0]["sources"][0]["events"], 5);
}

/// Returns whether `nft` runs; says why not otherwise, so a skip is loud.
fn require_nft() -> bool {
    match Command::new("nft").arg("--version").output() {
        Ok(output) if output.status.success() => true,
        _ => {
            eprintln!("SKIPPED: nft not found; `cargo xtask setup` installs nftables");
            false
        }
    }
}

fn nft(testbed: &Testbed, args: &str) -> String {
    let args: Vec<&str> = args.split_whitespace().collect();
    let output = testbed.receiver().exec("nft", &args).expect("nft runs");
    assert!(
        output.status.success(),
        "nft {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Packets counted by the rule that carries `comment` in the `t` table.
fn nft_counter(testbed: &Testbed, comment: &str) -> u64 {
    let listing = nft(testbed, "list chain inet t pre");
    let line = listing
        .lines()
        .find(|line| line.contains(comment))
        .unwrap_or_else(|| panic!("no rule {comment} in:\n{listing}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let position = words
        .iter()
        .position(|word| *word == "packets")
        .expect("a counter");
    words[position + 1].parse().expect("a packet count")
}

/// The IP header of a captured frame (no VLAN tags in this testbed), and
/// its family.
fn ip_header(frame: &[u8]) -> Option<(u16, &[u8])> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    Some((ethertype, frame.get(14..)?))
}

#[test]
fn tagged_packets_carry_mark_and_dscp() {
    if !require_root() || !require_nft() {
        return;
    }
    let testbed = Testbed::new().expect("testbed");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    let config = write_config(dir.path(), &agent_dirs);
    let events = dir.path().join("events.jsonl");
    let _agent = start_agent(&testbed, &config, &events);

    // Counters inside the receiver's namespace only.
    nft(&testbed, "add table inet t");
    nft(
        &testbed,
        "add chain inet t pre { type filter hook prerouting priority 0 ; }",
    );
    nft(
        &testbed,
        "add rule inet t pre meta mark 0x10 counter comment \"marked\"",
    );
    nft(
        &testbed,
        "add rule inet t pre meta mark 0 counter comment \"unmarked\"",
    );

    let capture = Capture::start(&testbed.receiver().netns, &testbed.receiver().interface)
        .expect("capture starts");
    send_frames(
        &testbed.sender().netns,
        &testbed.sender().interface,
        frames(&testbed, &[TAGGED_V4, TAGGED_V6, CLEAN], 4),
    )
    .expect("frames sent");
    let captured = capture.finish().expect("capture finishes");

    assert_eq!(
        nft_counter(&testbed, "marked"),
        8,
        "tagged v4 and v6 frames"
    );
    assert!(
        nft_counter(&testbed, "unmarked") >= 4,
        "clean frames carry no mark"
    );

    let mut seen = BTreeMap::<IpAddr, u64>::new();
    for frame in &captured {
        let Some(source) = intelwall_tests::packet::ip_source(frame) else {
            continue;
        };
        let Some((ethertype, header)) = ip_header(frame) else {
            continue;
        };
        let dscp = match ethertype {
            ETHERTYPE_IPV4 => {
                let header_len = usize::from(header[0] & 0x0f) * 4;
                assert_eq!(
                    internet_checksum(&header[..header_len]),
                    0,
                    "IPv4 header checksum of a frame from {source} is wrong"
                );
                header[1] >> 2
            }
            ETHERTYPE_IPV6 => ((header[0] & 0x0f) << 4 | header[1] >> 4) >> 2,
            _ => continue,
        };
        let expected = if source == address(CLEAN) { 0 } else { 46 };
        if [address(TAGGED_V4), address(TAGGED_V6), address(CLEAN)].contains(&source) {
            assert_eq!(dscp, expected, "DSCP of a frame from {source}");
            *seen.entry(source).or_default() += 1;
        }
    }
    for source in [TAGGED_V4, TAGGED_V6, CLEAN] {
        assert_eq!(
            seen.get(&address(source)).copied(),
            Some(4),
            "frames from {source}"
        );
    }
}
