//! Discovery inside a network namespace built for the test. Needs root; the
//! test skips with a message otherwise.

use std::fs::File;
use std::net::IpAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::sched::{CloneFlags, setns};

use super::*;

/// Makes namespace names unique within this process; the pid makes them
/// unique across processes.
static NEXT_NAMESPACE: AtomicU32 = AtomicU32::new(0);

/// A network namespace that is deleted on drop, with the veth pair and
/// routes inside it.
struct Namespace {
    name: String,
}

impl Namespace {
    fn create() -> Result<Namespace, String> {
        let id = NEXT_NAMESPACE.fetch_add(1, Ordering::Relaxed);
        let name = format!("iws-{}-{id}", std::process::id());
        run(&["netns", "add", &name])?;
        Ok(Namespace { name })
    }

    /// Runs `ip -n NAME ARGS...`; the error contains the command and its
    /// stderr.
    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run(&full)
    }

    fn output(&self, args: &[&str]) -> Result<String, String> {
        let output = Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .map_err(|error| format!("cannot run ip: {error}"))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the veth pair inside it.
        if let Err(error) = run(&["netns", "del", &self.name]) {
            eprintln!("cannot delete test namespace {}: {error}", self.name);
        }
    }
}

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|error| format!("cannot run ip {}: {error}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Builds the namespace: veth0 (02:69:77:00:00:05) with 10.77.0.5/24,
/// fd00:77::5/64 and its EUI-64 link-local address, its peer veth1 up but
/// without addresses, loopback down, and default routes through 10.77.0.1
/// and fd00:77::1, which no interface holds.
fn build(namespace: &Namespace) -> Result<(), String> {
    namespace.ip(&[
        "link",
        "add",
        "veth0",
        "address",
        "02:69:77:00:00:05",
        "type",
        "veth",
        "peer",
        "name",
        "veth1",
    ])?;
    namespace.ip(&["link", "set", "veth0", "addrgenmode", "eui64"])?;
    namespace.ip(&["link", "set", "veth1", "addrgenmode", "none"])?;
    namespace.ip(&["address", "add", "10.77.0.5/24", "dev", "veth0"])?;
    namespace.ip(&["address", "add", "fd00:77::5/64", "dev", "veth0", "nodad"])?;
    namespace.ip(&["link", "set", "veth1", "up"])?;
    namespace.ip(&["link", "set", "veth0", "up"])?;
    namespace.ip(&[
        "route",
        "add",
        "default",
        "via",
        "10.77.0.1",
        "dev",
        "veth0",
    ])?;
    namespace.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:77::1",
        "dev",
        "veth0",
    ])?;
    wait_for_link_local(namespace)
}

/// Waits up to 5 seconds for the link-local address of veth0. The kernel
/// adds it once the link has carrier, and learns of carrier asynchronously.
fn wait_for_link_local(namespace: &Namespace) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let addresses = namespace.output(&["-6", "-o", "address", "show", "dev", "veth0"])?;
        if addresses.contains(LINK_LOCAL) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{LINK_LOCAL} did not appear on veth0 within 5 seconds: {addresses}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// EUI-64 address of 02:69:77:00:00:05: ff:fe in the middle, and the
/// universal/local bit of the first byte flipped.
const LINK_LOCAL: &str = "fe80::69:77ff:fe00:5";

/// Runs [`discover_in`] on a thread that has joined the namespace, so the
/// rest of the test process stays where it is.
fn discover_inside(
    namespace: &Namespace,
    config: SafetyConfig,
    sources: HostSources,
) -> Result<Vec<SafetyNet>, String> {
    let path = format!("/run/netns/{}", namespace.name);
    let thread = std::thread::spawn(move || -> Result<Vec<SafetyNet>, String> {
        let file = File::open(&path).map_err(|error| format!("cannot open {path}: {error}"))?;
        setns(&file, CloneFlags::CLONE_NEWNET)
            .map_err(|error| format!("cannot join namespace {path}: {error}"))?;
        discover_in(&config, &sources).map_err(|error| error.to_string())
    });
    thread
        .join()
        .map_err(|_| "discovery thread panicked".to_string())?
}

fn skip_reason() -> Option<&'static str> {
    if !nix::unistd::geteuid().is_root() {
        return Some("creating a network namespace needs root");
    }
    if !std::path::Path::new("/proc/net/if_inet6").exists() {
        return Some("IPv6 is disabled on this host");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` command (iproute2) is not installed");
    }
    None
}

#[test]
fn discover_in_namespace() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED discover_in_namespace: {reason}");
        return;
    }
    let namespace = Namespace::create().expect("create namespace");
    build(&namespace).expect("build namespace");

    let dir = tempfile::tempdir().expect("create temp dir");
    let resolv_conf = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv_conf,
        "search test.example\nnameserver 10.77.0.53\nnameserver fd00:77::53\n",
    )
    .expect("write resolv.conf");
    let sources = HostSources {
        resolv_confs: vec![resolv_conf],
        ssh_connection: None,
        ..HostSources::system()
    };
    let config = SafetyConfig {
        allow: vec!["192.0.2.0/24".into()],
        ..SafetyConfig::default()
    };

    let found = discover_inside(&namespace, config, sources).expect("discover");

    let host = |text: &str| IpNet::from(text.parse::<IpAddr>().expect("valid address literal"));
    let on_veth0 = || "veth0".to_string();
    let mut expected = vec![
        SafetyNet {
            net: host("10.77.0.5"),
            reason: SafetyReason::OwnAddress {
                interface: on_veth0(),
            },
        },
        SafetyNet {
            net: host("fd00:77::5"),
            reason: SafetyReason::OwnAddress {
                interface: on_veth0(),
            },
        },
        SafetyNet {
            net: host(LINK_LOCAL),
            reason: SafetyReason::OwnAddress {
                interface: on_veth0(),
            },
        },
        SafetyNet {
            net: host("10.77.0.1"),
            reason: SafetyReason::Gateway {
                interface: on_veth0(),
            },
        },
        SafetyNet {
            net: host("fd00:77::1"),
            reason: SafetyReason::Gateway {
                interface: on_veth0(),
            },
        },
        SafetyNet {
            net: host("10.77.0.53"),
            reason: SafetyReason::Resolver,
        },
        SafetyNet {
            net: host("fd00:77::53"),
            reason: SafetyReason::Resolver,
        },
        SafetyNet {
            net: "192.0.2.0/24".parse().expect("valid net literal"),
            reason: SafetyReason::Configured,
        },
    ];
    // getifaddrs lists addresses in the kernel's order, which is not part
    // of the contract; compare as sorted lists.
    let mut found = found;
    found.sort_by_key(|safety_net| safety_net.net);
    expected.sort_by_key(|safety_net| safety_net.net);
    assert_eq!(found, expected);
}
