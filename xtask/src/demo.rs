//! `cargo xtask demo`: the agent on examples/demo.toml in a namespace
//! testbed, with traffic from flagged and clean sources.
//!
//! Everything happens inside two namespaces created for the run, and all
//! files are written to a temporary directory. The testbed and the agent are
//! guards, so an error or Ctrl-C tears both down.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use intelwall_tests::agent::{Agent, AgentDirs};
use intelwall_tests::netns::Testbed;
use intelwall_tests::packet::{Link, VlanTags};
use intelwall_tests::traffic::{Expectation, Receiver, arrival_table, check_arrivals, send_frames};

/// Frames sent from each source.
const FRAMES_PER_SOURCE: u64 = 20;

/// A demo source: address, VLAN tags, whether its frames should arrive, and
/// which feed entry and rule decide that.
struct DemoSource {
    address: &'static str,
    tags: VlanTags,
    arrives: bool,
    reason: &'static str,
}

const SOURCES: [DemoSource; 12] = [
    DemoSource {
        address: "192.0.2.5",
        tags: VlanTags::None,
        arrives: true,
        reason: "in drop list 192.0.2.0/28, but allow-pentest decides first",
    },
    DemoSource {
        address: "192.0.2.9",
        tags: VlanTags::None,
        arrives: false,
        reason: "drop-list: in 192.0.2.0/28",
    },
    DemoSource {
        address: "198.51.100.23",
        tags: VlanTags::None,
        arrives: false,
        reason: "drop-list: listed host",
    },
    DemoSource {
        address: "2001:db8:dead::7",
        tags: VlanTags::None,
        arrives: false,
        reason: "drop-list: in 2001:db8:dead::/48",
    },
    DemoSource {
        address: "203.0.113.10",
        tags: VlanTags::Single { vid: 100 },
        arrives: false,
        reason: "ddos-fr: DDoS targeting FR (802.1Q VLAN 100)",
    },
    DemoSource {
        address: "203.0.113.11",
        tags: VlanTags::None,
        arrives: true,
        reason: "DDoS targeting DE only: no deciding rule",
    },
    DemoSource {
        address: "203.0.113.20",
        tags: VlanTags::None,
        arrives: true,
        reason: "watch-scanners: logged, passes",
    },
    DemoSource {
        address: "203.0.113.30",
        tags: VlanTags::None,
        arrives: true,
        reason: "botnet-finance: passes with mark 0x10",
    },
    DemoSource {
        address: "2001:db8:cafe::30",
        tags: VlanTags::None,
        arrives: true,
        reason: "botnet-finance: in 2001:db8:cafe::/64, mark 0x10",
    },
    DemoSource {
        address: "192.0.2.200",
        tags: VlanTags::None,
        arrives: true,
        reason: "clean",
    },
    DemoSource {
        address: "198.51.100.200",
        tags: VlanTags::None,
        arrives: true,
        reason: "clean",
    },
    DemoSource {
        address: "2001:db8:1::1",
        tags: VlanTags::None,
        arrives: true,
        reason: "clean",
    },
];

/// Set by the SIGINT and SIGTERM handler; checked between steps.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches SIGINT and SIGTERM so that the process unwinds through the
/// guards instead of dying with the testbed still in place. Children get
/// the default handlers back when they exec.
fn catch_interrupts() {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe { libc::signal(signal, on_signal as *const () as libc::sighandler_t) };
    }
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted; the testbed is removed on the way out");
    }
    Ok(())
}

pub fn run() -> Result<()> {
    catch_interrupts();
    let binary = crate::build_release()?;
    check_interrupted()?;

    let testbed = Testbed::new().context("cannot create the namespace testbed")?;
    let receiver = testbed.receiver();
    let sender = testbed.sender();
    println!(
        "testbed: {} ({}) -> {} ({})",
        sender.netns, sender.interface, receiver.netns, receiver.interface
    );

    let work_dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let agent_dirs = AgentDirs::new()?;
    let config = write_config(work_dir.path(), &receiver.interface, &agent_dirs)?;
    check_interrupted()?;

    let agent = Agent::start(&binary, &receiver.netns, &receiver.interface, &config)?;
    println!("agent attached to {}", receiver.interface);
    check_interrupted()?;

    let (frames, expectations) = demo_traffic(&testbed)?;
    let counting = Receiver::start(&receiver.netns, &receiver.interface)?;
    send_frames(&sender.netns, &sender.interface, frames)?;
    let arrived = counting.finish()?;

    let output = agent.stop()?;
    println!("\nagent output (per-rule counters):\n{}", output.stdout);
    if !output.status.success() {
        eprintln!("agent exited with {}:\n{}", output.status, output.stderr);
    }
    println!(
        "receiver side, per source:\n{}",
        arrival_table(&expectations, &arrived)
    );
    check_arrivals(&expectations, &arrived).map_err(anyhow::Error::msg)?;
    println!("every source got the expected fate");
    Ok(())
}

/// Copies examples/ into `dir` and writes the config there with `interface`
/// in place of the example's interface names, and pin and state directories
/// of the demo's own, so it leaves nothing behind. Returns the config's path.
fn write_config(dir: &Path, interface: &str, agent_dirs: &AgentDirs) -> Result<std::path::PathBuf> {
    let examples = crate::workspace_root().join("examples");
    let feeds = dir.join("feeds");
    fs::create_dir(&feeds).context("cannot create the feeds directory")?;
    for entry in fs::read_dir(examples.join("feeds")).context("cannot list examples/feeds")? {
        let entry = entry?;
        fs::copy(entry.path(), feeds.join(entry.file_name()))
            .with_context(|| format!("cannot copy {}", entry.path().display()))?;
    }

    let source = examples.join("demo.toml");
    let text =
        fs::read_to_string(&source).with_context(|| format!("cannot read {}", source.display()))?;
    let mut config: toml::Table =
        toml::from_str(&text).with_context(|| format!("invalid TOML in {}", source.display()))?;
    let Some(toml::Value::Array(interfaces)) = config.get_mut("interface") else {
        bail!("{} has no [[interface]] table", source.display());
    };
    for table in interfaces.iter_mut().filter_map(toml::Value::as_table_mut) {
        table.insert("name".into(), toml::Value::String(interface.into()));
    }
    let mut agent = toml::Table::new();
    agent.insert(
        "pin_dir".into(),
        agent_dirs.pin_dir.display().to_string().into(),
    );
    agent.insert(
        "state_dir".into(),
        agent_dirs.state_dir.display().to_string().into(),
    );
    config.insert("agent".into(), toml::Value::Table(agent));
    let path = dir.join("demo.toml");
    fs::write(&path, toml::to_string(&config)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn demo_traffic(testbed: &Testbed) -> Result<(Vec<Vec<u8>>, Vec<Expectation>)> {
    let sender = testbed.sender();
    let receiver = testbed.receiver();
    let link = Link::new(sender.mac, receiver.mac);
    let mut frames = Vec::new();
    let mut expectations = Vec::new();
    for source in &SOURCES {
        let address: IpAddr = source.address.parse()?;
        let dst: IpAddr = match address {
            IpAddr::V4(_) => receiver.ipv4.into(),
            IpAddr::V6(_) => receiver.ipv6.into(),
        };
        let frame = link
            .with_tags(source.tags)
            .udp(address, dst, b"intelwall demo");
        frames.extend(std::iter::repeat_n(frame, FRAMES_PER_SOURCE as usize));
        expectations.push(Expectation {
            source: address,
            label: source.reason.to_owned(),
            sent: FRAMES_PER_SOURCE,
            expected: if source.arrives { FRAMES_PER_SOURCE } else { 0 },
        });
    }
    Ok((frames, expectations))
}
