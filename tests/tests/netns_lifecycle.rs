//! The agent over time, with real traffic in a namespace testbed: reloads
//! while packets flow, what a reload logs, SIGKILL and adoption, detach,
//! the attach time and feeds that status shows, expiry on a controllable
//! clock, and the skb fallback at jumbo MTU.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use intelwall_tests::agent::{Agent, AgentDirs, xdp_attached};
use intelwall_tests::agent_binary;
use intelwall_tests::netns::{Testbed, require_root};
use intelwall_tests::packet::Link;
use intelwall_tests::traffic::{Counts, Receiver, send_frames};

/// Sources that every feed and rule variant below flags.
const FLAGGED: [&str; 3] = ["192.0.2.10", "198.51.100.20", "2001:db8::10"];
/// Sources that every variant lists or not, but never selects.
const CLEAN: [&str; 3] = ["192.0.2.200", "198.51.100.200", "2001:db8::200"];

/// Feed variant A: flagged hosts are DDoS sources targeting France; the
/// clean ones target Germany.
const FEED_A: &str = r#"{"indicator":"192.0.2.10","datasets":["ddos"],"target_countries":["FR"]}
{"indicator":"198.51.100.20","datasets":["ddos"],"target_countries":["FR"]}
{"indicator":"2001:db8::10","datasets":["ddos"],"target_countries":["FR"]}
{"indicator":"192.0.2.200","datasets":["ddos"],"target_countries":["DE"]}
{"indicator":"198.51.100.200","datasets":["ddos"],"target_countries":["DE"]}
"#;

/// Feed variant B: flagged sources sit in botnet prefixes; the clean ones
/// are listed as scanners.
const FEED_B: &str = r#"{"indicator":"192.0.2.0/28","datasets":["botnet"]}
{"indicator":"198.51.100.16/29","datasets":["botnet"]}
{"indicator":"2001:db8::/120","datasets":["botnet"]}
{"indicator":"192.0.2.200","datasets":["scanner"]}
{"indicator":"2001:db8::200","datasets":["scanner"]}
"#;

const RULES_1: &str = r#"
[[rule]]
name = "ddos-fr"
expression = 'any(ip.intel.datasets[*] == "ddos") and any(ip.intel.target_countries[*] == "FR")'
action = "drop"

[[rule]]
name = "botnets"
expression = 'any(ip.intel.datasets[*] == "botnet")'
action = "drop"

[[rule]]
name = "scanners"
expression = 'any(ip.intel.datasets[*] == "scanner")'
action = "log"
"#;

const RULES_2: &str = r#"
[[rule]]
name = "watch"
expression = 'any(ip.intel.datasets[*] in {"scanner" "ddos"})'
action = "log"

[[rule]]
name = "hostile-not-de"
expression = 'any(ip.intel.datasets[*] in {"botnet" "ddos"}) and not any(ip.intel.target_countries[*] == "DE")'
action = "drop"
"#;

fn address(text: &str) -> IpAddr {
    text.parse().expect("valid address literal")
}

fn frames_from(testbed: &Testbed, sources: &[&str], copies: usize) -> Vec<Vec<u8>> {
    let link = Link::new(testbed.sender().mac, testbed.receiver().mac);
    let mut frames = Vec::new();
    for _ in 0..copies {
        for source in sources {
            let source = address(source);
            let destination = match source {
                IpAddr::V4(_) => IpAddr::V4(testbed.receiver().ipv4),
                IpAddr::V6(_) => IpAddr::V6(testbed.receiver().ipv6),
            };
            frames.push(link.udp(source, destination, b"lifecycle"));
        }
    }
    frames
}

/// Sends `copies` frames from each source and returns what arrived.
fn send_and_count(testbed: &Testbed, sources: &[&str], copies: usize) -> Counts {
    let receiver = Receiver::start(&testbed.receiver().netns, &testbed.receiver().interface)
        .expect("receiver starts");
    send_frames(
        &testbed.sender().netns,
        &testbed.sender().interface,
        frames_from(testbed, sources, copies),
    )
    .expect("frames sent");
    receiver.finish().expect("receiver finishes")
}

fn arrived(counts: &Counts, source: &str) -> u64 {
    counts.get(&address(source)).copied().unwrap_or(0)
}

/// Writes `text` to `path` through a rename, as a feed publisher would, so
/// the agent never reads half a file.
fn replace_file(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    fs::write(&temp, text).expect("write temp file");
    fs::rename(&temp, path).expect("rename over the file");
}

fn write_config(
    dir: &Path,
    agent_dirs: &AgentDirs,
    mode: &str,
    rules: &str,
    extra_agent: &str,
) -> std::path::PathBuf {
    let config = format!(
        "{}\n[[interface]]\nname = \"veth-rx\"\nmode = \"{mode}\"\n\n\
         [[feed]]\nname = \"intel\"\npath = \"feed.jsonl\"\nformat = \"jsonl\"\n{rules}",
        agent_dirs.section(extra_agent)
    );
    let path = dir.join("intelwall.toml");
    replace_file(&path, &config);
    path
}

fn count_in(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

#[test]
fn reloads_under_traffic_never_leak() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::new().expect("testbed");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    replace_file(&dir.path().join("feed.jsonl"), FEED_A);
    let config = write_config(dir.path(), &agent_dirs, "native", RULES_1, "");
    let agent = Agent::start(
        &agent_binary(),
        &testbed.receiver().netns,
        "veth-rx",
        &config,
    )
    .expect("agent starts");

    let receiver = Receiver::start(&testbed.receiver().netns, &testbed.receiver().interface)
        .expect("receiver starts");
    let stop = Arc::new(AtomicBool::new(false));
    let sent_rounds = {
        let stop = Arc::clone(&stop);
        let sender = testbed.sender().clone();
        let round = frames_from(&testbed, &[&FLAGGED[..], &CLEAN[..]].concat(), 5);
        thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                send_frames(&sender.netns, &sender.interface, round.clone()).expect("frames sent");
                rounds += 1;
            }
            rounds
        })
    };

    for reload in 0..100 {
        let before = count_in(&agent.stderr_so_far(), "reloaded");
        let feed = if reload % 2 == 0 { FEED_B } else { FEED_A };
        let rules = if (reload / 2) % 2 == 0 {
            RULES_2
        } else {
            RULES_1
        };
        replace_file(&dir.path().join("feed.jsonl"), feed);
        write_config(dir.path(), &agent_dirs, "native", rules, "");
        // Wait for the agent to pick the change up, however it noticed it.
        let mut waited = 0;
        while count_in(&agent.stderr_so_far(), "reloaded") == before {
            thread::sleep(Duration::from_millis(20));
            waited += 1;
            assert!(
                waited < 3000,
                "reload {reload} never happened:\n{}",
                agent.stderr_so_far()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = sent_rounds.join().expect("sender thread");
    let counts = receiver.finish().expect("receiver finishes");
    let output = agent.stop().expect("agent stops");
    assert!(
        !output.stderr.contains("failed"),
        "a reload failed:\n{}",
        output.stderr
    );

    for source in FLAGGED {
        assert_eq!(
            arrived(&counts, source),
            0,
            "flagged {source} leaked during reloads"
        );
    }
    for source in CLEAN {
        assert_eq!(
            arrived(&counts, source),
            rounds * 5,
            "clean {source} lost packets during reloads"
        );
    }
}

#[test]
fn sigkill_keeps_protection_and_restart_adopts() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::new().expect("testbed");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    replace_file(&dir.path().join("feed.jsonl"), FEED_A);
    let config = write_config(dir.path(), &agent_dirs, "native", RULES_1, "");
    let sources = [&FLAGGED[..], &CLEAN[..]].concat();

    let agent = Agent::start(
        &agent_binary(),
        &testbed.receiver().netns,
        "veth-rx",
        &config,
    )
    .expect("agent starts");
    agent.stop_with(libc::SIGKILL).expect("agent killed");
    assert!(
        xdp_attached(&testbed.receiver().netns, "veth-rx").expect("ip link"),
        "the program went away with the agent"
    );
    let counts = send_and_count(&testbed, &sources, 10);
    for source in FLAGGED {
        assert_eq!(
            arrived(&counts, source),
            0,
            "{source} passed while no agent ran"
        );
    }
    for source in CLEAN {
        assert_eq!(
            arrived(&counts, source),
            10,
            "{source} lost packets while no agent ran"
        );
    }

    let agent = Agent::start(
        &agent_binary(),
        &testbed.receiver().netns,
        "veth-rx",
        &config,
    )
    .expect("agent restarts");
    assert!(
        agent.stderr_so_far().contains("adopted the pinned maps"),
        "the restarted agent did not adopt:\n{}",
        agent.stderr_so_far()
    );
    let counts = send_and_count(&testbed, &sources, 10);
    for source in FLAGGED {
        assert_eq!(
            arrived(&counts, source),
            0,
            "{source} passed after adoption"
        );
    }
    let second = Command::new(agent_binary())
        .args(["--netns", &testbed.receiver().netns, "run", "--config"])
        .arg(&config)
        .output()
        .expect("a second agent runs");
    assert!(
        !second.status.success(),
        "a second agent started beside the first"
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another intelwall agent already manages"),
        "unclear refusal: {}",
        String::from_utf8_lossy(&second.stderr)
    );
    let output = agent.stop_with(libc::SIGTERM).expect("agent stops");
    assert!(
        output.status.success(),
        "agent failed on SIGTERM:\n{}",
        output.stderr
    );
    assert!(
        xdp_attached(&testbed.receiver().netns, "veth-rx").expect("ip link"),
        "SIGTERM removed protection"
    );

    let status = Command::new(agent_binary())
        .args(["status", "--json", "--config"])
        .arg(&config)
        .output()
        .expect("status runs");
    let status: serde_json::Value =
        serde_json::from_slice(&status.stdout).expect("status prints JSON");
    assert_eq!(status["interfaces"][0]["name"], "veth-rx");
    assert!(
        status["agent_pid"].is_null(),
        "status names an agent after SIGTERM: {status}"
    );
    assert_eq!(status["maps"][0]["name"], "HOSTS_V4");
    // The IPv4 host map holds the feed's four hosts plus whatever the safety
    // allowlist found in the namespace; `check` there compiles the same.
    let check = Command::new(agent_binary())
        .args([
            "--netns",
            &testbed.receiver().netns,
            "check",
            "--json",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("check runs");
    let check: serde_json::Value =
        serde_json::from_slice(&check.stdout).expect("check prints JSON");
    let expected = check["maps"]["hosts_v4"].as_u64().expect("hosts_v4 count");
    assert!(expected >= 4, "check lost feed hosts: {check}");
    assert_eq!(status["maps"][0]["entries"], expected);

    let detach = Command::new(agent_binary())
        .args(["detach", "--iface", "veth-rx", "--config"])
        .arg(&config)
        .output()
        .expect("detach runs");
    assert!(
        detach.status.success(),
        "detach failed: {}",
        String::from_utf8_lossy(&detach.stderr)
    );
    assert!(
        !xdp_attached(&testbed.receiver().netns, "veth-rx").expect("ip link"),
        "detach left the program attached"
    );
    let counts = send_and_count(&testbed, &sources, 10);
    for source in sources {
        assert_eq!(
            arrived(&counts, source),
            10,
            "{source} blocked after detach"
        );
    }
    assert!(
        fs::read_dir(&agent_dirs.pin_dir).map_or(true, |entries| entries
            .filter_map(Result::ok)
            .all(|entry| !entry.file_name().to_string_lossy().starts_with("maps-"))),
        "detach left pinned maps behind"
    );
    let left: Vec<String> = fs::read_dir(&agent_dirs.pin_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !agent_dirs.pin_dir.exists(),
        "detach left {} behind, holding {left:?}",
        agent_dirs.pin_dir.display()
    );
}

/// Checks whether the agent's log reports an expiry and then a reload that
/// the expiry check set off.
fn expiry_applied(log: &str) -> bool {
    log.find("aged out")
        .is_some_and(|at| log[at..].contains("trigger=expiry check"))
}

/// Reads the `since` that `intelwall status` shows for the one interface.
fn attached_since(config: &Path) -> jiff::Timestamp {
    let status = status_json(config);
    let since = status["interfaces"][0]["since"]
        .as_str()
        .unwrap_or_else(|| panic!("status shows no `since`: {status}"));
    since
        .parse()
        .unwrap_or_else(|error| panic!("`since` {since:?} is no RFC 3339 time: {error}"))
}

/// Runs an agent until it is ready, checks whether it adopted the pinned
/// maps, and stops it with SIGTERM, which leaves its attachment in place.
fn run_and_leave(testbed: &Testbed, config: &Path, adopts: bool) {
    let agent = Agent::start(
        &agent_binary(),
        &testbed.receiver().netns,
        "veth-rx",
        config,
    )
    .expect("agent starts");
    let stderr = agent.stderr_so_far();
    assert_eq!(
        stderr.contains("adopted the pinned maps"),
        adopts,
        "expected adoption: {adopts}; agent stderr:\n{stderr}"
    );
    assert_eq!(
        status_json(config)["agent_pid"],
        agent.pid(),
        "status names the running agent"
    );
    let output = agent.stop_with(libc::SIGTERM).expect("agent stops");
    assert!(
        output.status.success(),
        "agent failed on SIGTERM ({}):\n{}",
        output.status,
        output.stderr
    );
}

#[test]
fn status_since_follows_attachment() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::new().expect("testbed");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    replace_file(&dir.path().join("feed.jsonl"), FEED_A);
    let config = write_config(dir.path(), &agent_dirs, "native", RULES_1, "");

    run_and_leave(&testbed, &config, false);
    let first = attached_since(&config);

    run_and_leave(&testbed, &config, true);
    assert_eq!(
        attached_since(&config),
        first,
        "adopting the unchanged attachment moved `since`"
    );

    // Another config: the next agent writes a new map set and swaps its
    // program onto the pinned link.
    let config = write_config(dir.path(), &agent_dirs, "native", RULES_2, "");
    run_and_leave(&testbed, &config, false);
    let replaced = attached_since(&config);
    assert!(
        replaced > first,
        "replacing the program kept `since` at {first}, now {replaced}"
    );

    // Without the link pin the program detaches while the state file stays,
    // so the next agent adopts the maps but attaches anew.
    fs::remove_file(agent_dirs.pin_dir.join("links").join("veth-rx")).expect("unpin the link");
    run_and_leave(&testbed, &config, true);
    let reattached = attached_since(&config);
    assert!(
        reattached > replaced,
        "attaching anew kept `since` at {replaced}, now {reattached}"
    );
}

#[test]
fn expiry_follows_the_clock() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::new().expect("testbed");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    let clock = dir.path().join("clock");
    fs::write(&clock, "2026-12-02T00:00:00Z").expect("write clock");
    replace_file(
        &dir.path().join("feed.jsonl"),
        r#"{"indicator":"192.0.2.10","datasets":["ddos"],"last_seen":"2026-12-01T00:00:00Z"}
{"indicator":"198.51.100.20","datasets":["ddos"],"last_seen":"2026-11-30T00:00:00Z"}
"#,
    );
    let rules = r#"
[[rule]]
name = "recent-ddos"
expression = 'any(ip.intel.datasets[*] == "ddos") and ip.intel.days_since_seen <= 7'
action = "drop"
"#;
    let config = write_config(
        dir.path(),
        &agent_dirs,
        "native",
        rules,
        "expiry_interval = \"1s\"",
    );
    let agent = Agent::start_with_env(
        &agent_binary(),
        &testbed.receiver().netns,
        "veth-rx",
        &config,
        &[("INTELWALL_CLOCK_FILE", clock.as_os_str())],
    )
    .expect("agent starts");
    let sources = ["192.0.2.10", "198.51.100.20"];
    let counts = send_and_count(&testbed, &sources, 10);
    assert_eq!(arrived(&counts, "192.0.2.10"), 0, "recent indicator passed");
    assert_eq!(
        arrived(&counts, "198.51.100.20"),
        0,
        "recent indicator passed"
    );

    // Eight days after the first sighting: 192.0.2.10 is 7 days old and
    // stays, 198.51.100.20 is 8 days old and ages out.
    fs::write(&clock, "2026-12-08T12:00:00Z").expect("write clock");
    // The agent reports the expiry when it compiles it and logs the reload
    // line once the maps enforce it, so traffic waits for both.
    let mut waited = 0;
    while !expiry_applied(&agent.stderr_so_far()) {
        thread::sleep(Duration::from_millis(50));
        waited += 1;
        assert!(
            waited < 1200,
            "no expiry reported:\n{}",
            agent.stderr_so_far()
        );
    }
    let counts = send_and_count(&testbed, &sources, 10);
    assert_eq!(
        arrived(&counts, "192.0.2.10"),
        0,
        "a 7-day-old indicator aged out early"
    );
    assert_eq!(
        arrived(&counts, "198.51.100.20"),
        10,
        "an 8-day-old indicator is still dropped"
    );
    drop(agent);
}

#[test]
fn jumbo_mtu_falls_back_to_skb() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::with_mtu(Some(9000)).expect("testbed");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    replace_file(&dir.path().join("feed.jsonl"), FEED_A);
    let config = write_config(dir.path(), &agent_dirs, "auto", RULES_1, "");
    let agent = Agent::start(
        &agent_binary(),
        &testbed.receiver().netns,
        "veth-rx",
        &config,
    )
    .expect("agent starts");
    let stderr = agent.stderr_so_far();
    let native_worked = !stderr.contains("attached in skb mode");
    let counts = send_and_count(&testbed, &[&FLAGGED[..], &CLEAN[..]].concat(), 10);
    for source in FLAGGED {
        assert_eq!(arrived(&counts, source), 0, "{source} passed at MTU 9000");
    }
    for source in CLEAN {
        assert_eq!(
            arrived(&counts, source),
            10,
            "{source} lost packets at MTU 9000"
        );
    }
    if !native_worked {
        assert!(
            stderr.contains("native XDP failed"),
            "fallback without a reason:\n{stderr}"
        );
    }
}

#[test]
fn safety_allowlist_protects_the_gateway() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::new().expect("testbed");
    let gateway = testbed.sender().ipv4.to_string();
    testbed
        .receiver()
        .ip(&["route", "add", "default", "via", &gateway])
        .expect("default route via the sender");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    let network = format!("{}/24", testbed.sender().ipv4);
    let stranger = {
        let mut octets = testbed.sender().ipv4.octets();
        octets[3] = 77;
        std::net::Ipv4Addr::from(octets).to_string()
    };
    replace_file(
        &dir.path().join("feed.jsonl"),
        &format!(
            "{{\"indicator\":\"{}\",\"datasets\":[\"ddos\"]}}\n",
            network.parse::<ipnet::IpNet>().expect("prefix").trunc()
        ),
    );
    let rules = "\n[[rule]]\nname = \"ddos\"\nexpression = 'any(ip.intel.datasets[*] == \"ddos\")'\naction = \"drop\"\n";

    for enabled in [true, false] {
        let extra = if enabled {
            String::new()
        } else {
            "\n[safety]\nenabled = false\n".to_owned()
        };
        let config = write_config(
            dir.path(),
            &agent_dirs,
            "native",
            &format!("{rules}{extra}"),
            "",
        );
        let agent = Agent::start(
            &agent_binary(),
            &testbed.receiver().netns,
            "veth-rx",
            &config,
        )
        .expect("agent starts");
        let counts = send_and_count(&testbed, &[gateway.as_str(), stranger.as_str()], 10);
        let output = agent.stop().expect("agent stops");
        assert_eq!(
            arrived(&counts, &stranger),
            0,
            "a listed stranger passed (safety enabled: {enabled})"
        );
        if enabled {
            assert_eq!(
                arrived(&counts, &gateway),
                10,
                "the gateway was dropped:\n{}",
                output.stderr
            );
            assert!(
                output.stderr.contains("contains the gateway"),
                "no warning about the gateway:\n{}",
                output.stderr
            );
        } else {
            assert_eq!(
                arrived(&counts, &gateway),
                0,
                "the allowlist applied while disabled"
            );
        }
    }
}

/// Messages that end a reload, one of which every reload logs.
const RELOAD_OUTCOMES: [&str; 4] = [
    "reload: nothing changed",
    "reloaded",
    "reload failed",
    "applying the new state failed",
];

/// Waits for the first reload outcome that the agent logs after byte
/// `offset` of its stderr, and returns that line and the offset past it.
fn next_reload_line(agent: &Agent, offset: usize) -> (String, usize) {
    loop {
        let stderr = agent.stderr_so_far();
        let mut position = offset;
        for line in stderr[offset..].split_inclusive('\n') {
            position += line.len();
            if line.ends_with('\n') && RELOAD_OUTCOMES.iter().any(|end| line.contains(end)) {
                return (line.to_owned(), position);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `intelwall status --json` for `config` and returns its output.
fn status_json(config: &Path) -> serde_json::Value {
    let output = Command::new(agent_binary())
        .args(["status", "--json", "--config"])
        .arg(config)
        .output()
        .expect("status runs");
    assert!(
        output.status.success(),
        "status failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("status prints JSON")
}

/// Returns each feed's name and indicator count as status shows them.
fn status_feeds(status: &serde_json::Value) -> Vec<(String, u64)> {
    let feeds = status["feeds"].as_array().expect("status lists feeds");
    feeds
        .iter()
        .map(|feed| {
            assert!(
                feed["last_loaded"].is_string(),
                "no load time for a feed: {status}"
            );
            (
                feed["name"].as_str().expect("feed name").to_owned(),
                feed["indicators"].as_u64().expect("indicator count"),
            )
        })
        .collect()
}

#[test]
fn reload_log_and_status_name_feeds() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::new().expect("testbed");
    let dir = tempfile::tempdir().expect("config directory");
    let agent_dirs = AgentDirs::new().expect("agent directories");
    replace_file(&dir.path().join("feed.jsonl"), FEED_A);
    replace_file(&dir.path().join("extra.txt"), "203.0.113.5\n203.0.113.6\n");
    let extra_feed =
        "\n[[feed]]\nname = \"extra\"\npath = \"extra.txt\"\ndatasets = [\"scanner\"]\n";
    // The safety allowlist follows the namespace's addresses, and the veth's
    // IPv6 link-local address stays tentative for about a second after the
    // link comes up. With the allowlist on, the first reload could then
    // change the maps although no file did.
    let safety_off = "\n[safety]\nenabled = false\n";
    let with_extra = format!("{RULES_1}{extra_feed}{safety_off}");
    let config = write_config(dir.path(), &agent_dirs, "native", &with_extra, "");
    let agent = Agent::start(
        &agent_binary(),
        &testbed.receiver().netns,
        "veth-rx",
        &config,
    )
    .expect("agent starts");
    let status = status_json(&config);
    assert_eq!(
        status_feeds(&status),
        [("intel".to_owned(), 5), ("extra".to_owned(), 2)]
    );
    assert_eq!(status["indicators"], 7, "{status}");

    // The same config text again leaves nothing to do, and the log line
    // reports that.
    let offset = agent.stderr_so_far().len();
    write_config(dir.path(), &agent_dirs, "native", &with_extra, "");
    let (line, offset) = next_reload_line(&agent, offset);
    assert!(line.contains("reload: nothing changed"), "{line}");
    let config_changed = format!("trigger=file changed: {}", config.display());
    assert!(line.contains(&config_changed), "{line}");
    assert!(!line.contains("rules_only"), "{line}");

    // A new feed file changes the maps, and the trigger names the file.
    let feed = dir.path().join("feed.jsonl");
    replace_file(&feed, FEED_B);
    let (line, offset) = next_reload_line(&agent, offset);
    assert!(line.contains("reloaded"), "{line}");
    let feed_changed = format!("trigger=file changed: {}", feed.display());
    assert!(line.contains(&feed_changed), "{line}");
    assert!(line.contains("entries_written="), "{line}");

    // Removing the extra feed logs its name and indicator count.
    let without_extra = format!("{RULES_1}{safety_off}");
    write_config(dir.path(), &agent_dirs, "native", &without_extra, "");
    let (line, offset) = next_reload_line(&agent, offset);
    assert!(line.contains("reloaded"), "{line}");
    let stderr = agent.stderr_so_far();
    let removal = stderr[..offset]
        .lines()
        .rev()
        .find(|line| line.contains("feed removed from the config"))
        .unwrap_or_else(|| panic!("no removal logged:\n{stderr}"));
    assert!(removal.contains("feed=extra"), "{removal}");
    assert!(removal.contains("indicators=2"), "{removal}");
    let status = status_json(&config);
    assert_eq!(status_feeds(&status), [("intel".to_owned(), 5)]);

    let output = agent.stop().expect("agent stops");
    assert!(
        !output.stderr.contains("failed"),
        "a reload failed:\n{}",
        output.stderr
    );
}
