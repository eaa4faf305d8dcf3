//! The peer tools: installing them, xdp-filter loaded inside a testbed, and
//! the nftables and ipset files that hold the same addresses as a feed.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use intelwall_tests::netns::Testbed;

use crate::bpf;

/// Programs the bench runs and the Debian packages that provide them.
const PEERS: [(&str, &str); 5] = [
    ("xdp-filter", "xdp-tools"),
    ("bpftool", "bpftool"),
    ("nft", "nftables"),
    ("ipset", "ipset"),
    ("iptables", "iptables"),
];

/// Installs the peers that are missing with apt-get and returns one line per
/// package installed, for the report.
pub fn install_missing() -> Result<Vec<String>> {
    let missing: Vec<&str> = PEERS
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    eprintln!(
        "installing missing peers with apt-get: {}",
        missing.join(" ")
    );
    run_checked(Command::new("apt-get").arg("update"))?;
    run_checked(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(missing
        .iter()
        .map(|package| format!("installed {package} with apt-get"))
        .collect())
}

fn find_program(name: &str) -> Option<std::path::PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin", "/usr/local/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
}

/// Runs a command and fails with its stderr when it exits non-zero.
pub fn run_checked(command: &mut Command) -> Result<String> {
    let line = format!("{command:?}");
    let output = command
        .output()
        .with_context(|| format!("cannot start {line}"))?;
    if !output.status.success() {
        bail!(
            "{line} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a shell script inside a namespace.
pub fn netns_sh(netns: &str, script: &str) -> Result<String> {
    run_checked(Command::new("ip").args(["netns", "exec", netns, "sh", "-ec", script]))
}

/// xdp-filter attached to the receiver end of its own testbed, with its
/// program opened for BPF_PROG_TEST_RUN. Dropping it deletes the testbed,
/// which detaches the program.
pub struct XdpFilter {
    pub program: OwnedFd,
    /// Addresses in its IPv4 and IPv6 deny maps.
    pub entries: usize,
    /// Capacity of each of its maps (fixed when xdp-tools is built).
    pub capacity: usize,
    _testbed: Testbed,
}

/// The xdp-filter commands the bench runs, for the report.
pub const XDP_FILTER_COMMANDS: &str = "xdp-filter load -m native -f ipv4,ipv6 veth-rx; \
     xdp-filter ip ADDRESS -m src (one per hit address)";

impl XdpFilter {
    /// Loads xdp-filter with `hits` on its deny list, then fills its maps up
    /// to `total` entries (or its capacity) from `v4_fill` and `v6_fill`.
    pub fn load(
        hits: &[IpAddr],
        total: usize,
        v4_fill: &[Ipv4Addr],
        v6_fill: &[Ipv6Addr],
    ) -> Result<XdpFilter> {
        let testbed = Testbed::new()?;
        let receiver = testbed.receiver();
        // `ip netns exec` mounts a fresh /sys without bpffs, and xdp-filter
        // keeps its maps pinned there, so every xdp-filter command runs in
        // one shell that mounts bpffs first. The pins vanish with that mount
        // namespace, but the attached program and its maps stay.
        let mut script = format!(
            "mount -t bpf bpf /sys/fs/bpf\nxdp-filter load -m native -f ipv4,ipv6 {}\n",
            receiver.interface
        );
        for hit in hits {
            let _ = writeln!(script, "xdp-filter ip {hit} -m src");
        }
        netns_sh(&receiver.netns, &script).context("cannot load xdp-filter")?;

        let program_id = attached_program_id(&receiver.netns, &receiver.interface)?;
        let program = bpf::program_by_id(program_id)?;
        let maps = program_maps(program_id, Some("xdpfilt"))?;
        let v4 = maps
            .iter()
            .find(|map| map.name == "filter_ipv4")
            .context("xdp-filter's program has no map filter_ipv4")?;
        let v6 = maps
            .iter()
            .find(|map| map.name == "filter_ipv6")
            .context("xdp-filter's program has no map filter_ipv6")?;
        let capacity = v4.max_entries.min(v6.max_entries);
        let wanted = total.min(capacity);
        // Keep the feed's proportions: about one IPv6 host for eight IPv4.
        let v6_count = (wanted / 9).min(v6_fill.len());
        let v4_count = (wanted - v6_count)
            .saturating_sub(hits.len())
            .min(v4_fill.len());
        let hit_v4 = hits.iter().find_map(|hit| match hit {
            IpAddr::V4(address) => Some(address.octets().to_vec()),
            IpAddr::V6(_) => None,
        });
        let hit_v6 = hits.iter().find_map(|hit| match hit {
            IpAddr::V6(address) => Some(address.octets().to_vec()),
            IpAddr::V4(_) => None,
        });
        if let Some(key) = hit_v4 {
            let keys: Vec<u8> = v4_fill[..v4_count]
                .iter()
                .flat_map(|a| a.octets())
                .collect();
            fill_like(v4, &key, &keys)?;
        }
        if let Some(key) = hit_v6 {
            let keys: Vec<u8> = v6_fill[..v6_count]
                .iter()
                .flat_map(|a| a.octets())
                .collect();
            fill_like(v6, &key, &keys)?;
        }
        Ok(XdpFilter {
            program,
            entries: hits.len() + v4_count + v6_count,
            capacity,
            _testbed: testbed,
        })
    }
}

/// Writes `keys` into `map` with the value that xdp-filter's own CLI stored
/// for `template_key`, so the bench depends on no detail of its value format.
fn fill_like(map: &MapInfo, template_key: &[u8], keys: &[u8]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let fd = bpf::map_by_id(map.id)?;
    let cpus = bpf::possible_cpus()?;
    let slot = map.value_size.div_ceil(8) * 8;
    let value_size = if map.per_cpu {
        slot * cpus
    } else {
        map.value_size
    };
    let mut template = vec![0u8; value_size];
    bpf::lookup(fd.as_fd(), template_key, &mut template)
        .with_context(|| format!("cannot read xdp-filter's entry in {}", map.name))?;
    let count = keys.len() / map.key_size;
    let values = template.repeat(count);
    bpf::update_batch(fd.as_fd(), keys, map.key_size, &values, value_size)
        .with_context(|| format!("cannot fill xdp-filter's map {}", map.name))
}

/// Finds the id of the XDP program attached to `interface`, from the
/// `prog/xdp id N` that `ip -d link show` prints.
pub fn attached_program_id(netns: &str, interface: &str) -> Result<u32> {
    let text = run_checked(
        Command::new("ip").args(["-n", netns, "-d", "link", "show", "dev", interface]),
    )?;
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(3)
        .find(|window| window[0] == "prog/xdp" && window[1] == "id")
        .and_then(|window| window[2].parse().ok())
        .with_context(|| format!("no XDP program attached to {interface}: {text}"))
}

pub struct MapInfo {
    pub id: u32,
    pub name: String,
    pub key_size: usize,
    pub value_size: usize,
    pub max_entries: usize,
    per_cpu: bool,
}

/// Lists the maps of program `id` with bpftool, failing when the
/// program's name does not start with `name_prefix`.
pub fn program_maps(id: u32, name_prefix: Option<&str>) -> Result<Vec<MapInfo>> {
    let text = run_checked(Command::new("bpftool").args([
        "prog",
        "show",
        "id",
        &id.to_string(),
        "--json",
    ]))?;
    let program: serde_json::Value = serde_json::from_str(&text).context("bpftool's JSON")?;
    let name = program["name"].as_str().unwrap_or("");
    if let Some(prefix) = name_prefix
        && !name.starts_with(prefix)
    {
        bail!(
            "the program attached is `{name}`, not one named {prefix}*; \
             a libxdp dispatcher is not supported by the bench"
        );
    }
    let ids = program["map_ids"]
        .as_array()
        .context("bpftool printed no map_ids")?;
    let mut maps = Vec::new();
    for map_id in ids.iter().filter_map(serde_json::Value::as_u64) {
        let text = run_checked(Command::new("bpftool").args([
            "map",
            "show",
            "id",
            &map_id.to_string(),
            "--json",
        ]))?;
        let map: serde_json::Value = serde_json::from_str(&text).context("bpftool's JSON")?;
        let field = |key: &str| map[key].as_u64().unwrap_or(0) as usize;
        maps.push(MapInfo {
            id: map_id as u32,
            name: map["name"].as_str().unwrap_or("").to_owned(),
            key_size: field("bytes_key"),
            value_size: field("bytes_value"),
            max_entries: field("max_entries"),
            per_cpu: map["type"].as_str().unwrap_or("").starts_with("percpu"),
        });
    }
    Ok(maps)
}

/// Writes an nftables ruleset with the addresses in sets and a drop rule at
/// prerouting priority raw. `interval` sets are needed for prefixes.
pub fn write_nft_file(path: &Path, v4: &[String], v6: &[String], interval: bool) -> Result<()> {
    // auto-merge folds hosts into the listed prefixes that contain them,
    // because an interval set rejects overlapping elements otherwise.
    let flags = if interval {
        " flags interval; auto-merge;"
    } else {
        ""
    };
    let mut text = String::with_capacity((v4.len() + v6.len()) * 20 + 512);
    text.push_str("table inet intelwall_bench {\n");
    write_nft_set(&mut text, "flagged4", "ipv4_addr", flags, v4);
    write_nft_set(&mut text, "flagged6", "ipv6_addr", flags, v6);
    text.push_str(
        "  chain prerouting {\n    type filter hook prerouting priority raw; policy accept;\n    \
         ip saddr @flagged4 counter drop\n    ip6 saddr @flagged6 counter drop\n  }\n}\n",
    );
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn write_nft_set(text: &mut String, name: &str, kind: &str, flags: &str, elements: &[String]) {
    let _ = writeln!(text, "  set {name} {{\n    type {kind};{flags}");
    if !elements.is_empty() {
        text.push_str("    elements = { ");
        for (index, element) in elements.iter().enumerate() {
            if index > 0 {
                text.push_str(", ");
            }
            text.push_str(element);
        }
        text.push_str(" }\n");
    }
    text.push_str("  }\n");
}

/// Writes an `ipset restore` file: `hash:ip` sets for hosts only, `hash:net`
/// when prefixes are present, one per address family.
pub fn write_ipset_file(path: &Path, v4: &[String], v6: &[String], nets: bool) -> Result<()> {
    let kind = if nets { "hash:net" } else { "hash:ip" };
    let mut text = String::with_capacity((v4.len() + v6.len()) * 30 + 256);
    for (name, family, elements) in [("flagged4", "inet", v4), ("flagged6", "inet6", v6)] {
        let size = elements.len().max(1024);
        let _ = writeln!(
            text,
            "create {name} {kind} family {family} hashsize {} maxelem {size}",
            size.next_power_of_two()
        );
        for element in elements {
            let _ = writeln!(text, "add {name} {element}");
        }
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The iptables rules that make the ipset sets drop, in the raw table.
pub const IPTABLES_SCRIPT: &str = "iptables -t raw -A PREROUTING -m set --match-set flagged4 src -j DROP\n\
     ip6tables -t raw -A PREROUTING -m set --match-set flagged6 src -j DROP\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nft_file_lists_elements() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("set.nft");
        write_nft_file(&path, &["192.0.2.1".into(), "192.0.2.2".into()], &[], false).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("elements = { 192.0.2.1, 192.0.2.2 }"),
            "{text}"
        );
        assert!(text.contains("priority raw"), "{text}");
    }

    #[test]
    fn ipset_file_creates_both_families() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sets");
        write_ipset_file(
            &path,
            &["192.0.2.0/24".into()],
            &["2001:db8::1".into()],
            true,
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("create flagged4 hash:net family inet"),
            "{text}"
        );
        assert!(text.contains("add flagged6 2001:db8::1"), "{text}");
    }
}
