//! Network namespace testbeds.
//!
//! A [`Testbed`] is two fresh namespaces, "tx" and "rx", joined by one veth
//! pair. The namespaces contain only loopback and their veth end and have no
//! routes beyond the veth's own subnet, so nothing sent inside a testbed can
//! reach the host's interfaces. Dropping the testbed deletes both
//! namespaces, which deletes the veth pair with them.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

use crate::packet::Mac;

/// Counter that makes namespace names unique within this process; the pid
/// makes them unique across processes.
static NEXT_TESTBED: AtomicU32 = AtomicU32::new(0);

/// One end of the veth pair and the namespace that contains it.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Name under /run/netns.
    pub netns: String,
    /// Name of the veth end inside [`Endpoint::netns`].
    pub interface: String,
    pub mac: Mac,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Endpoint {
    /// Runs `ip -n NETNS ARGS...` and returns its stdout; fails when `ip`
    /// exits non-zero, with its stderr in the error.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut command = Command::new("ip");
        command.arg("-n").arg(&self.netns).args(args);
        let output = run_output(&mut command)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `program ARGS...` inside the namespace through `ip netns exec`
    /// and returns its output, whatever its exit status.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.netns, program])
            .args(args)
            .output()
            .with_context(|| format!("cannot run {program} in namespace {}", self.netns))
    }
}

/// Two namespaces joined by a veth pair; deleted on drop.
#[derive(Debug)]
pub struct Testbed {
    sender: Endpoint,
    receiver: Endpoint,
    /// Namespaces created so far, so that a half-built testbed is removed too.
    created: Vec<String>,
}

impl Testbed {
    /// Creates a testbed with the default MTU of 1500.
    pub fn new() -> Result<Testbed> {
        Testbed::with_mtu(None)
    }

    /// Creates a testbed whose veth ends use `mtu` when given.
    pub fn with_mtu(mtu: Option<u32>) -> Result<Testbed> {
        let id = NEXT_TESTBED.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("iwt-{}-{id}", std::process::id());
        // Interface names only have to be unique inside their namespace, and
        // each namespace is new, so fixed names cannot collide.
        let mut testbed = Testbed {
            sender: Endpoint {
                netns: format!("{prefix}-tx"),
                interface: "veth-tx".into(),
                mac: [0x02, 0x69, 0x77, 0x00, 0x00, 0x01],
                ipv4: Ipv4Addr::new(10, 199, 0, 1),
                ipv6: "fd00:199::1".parse().expect("valid literal"),
            },
            receiver: Endpoint {
                netns: format!("{prefix}-rx"),
                interface: "veth-rx".into(),
                mac: [0x02, 0x69, 0x77, 0x00, 0x00, 0x02],
                ipv4: Ipv4Addr::new(10, 199, 0, 2),
                ipv6: "fd00:199::2".parse().expect("valid literal"),
            },
            created: Vec::new(),
        };
        testbed.build(mtu)?;
        Ok(testbed)
    }

    /// Returns the "tx" end, where tests send from.
    pub fn sender(&self) -> &Endpoint {
        &self.sender
    }

    /// Returns the "rx" end, where the agent attaches and arrivals are counted.
    pub fn receiver(&self) -> &Endpoint {
        &self.receiver
    }

    fn build(&mut self, mtu: Option<u32>) -> Result<()> {
        for netns in [self.sender.netns.clone(), self.receiver.netns.clone()] {
            run_output(Command::new("ip").args(["netns", "add", &netns]))?;
            self.created.push(netns);
        }
        // Creating the pair inside the tx namespace with its peer placed
        // straight into rx keeps both ends out of the root namespace.
        self.sender.ip(&[
            "link",
            "add",
            "name",
            &self.sender.interface,
            "type",
            "veth",
            "peer",
            "name",
            &self.receiver.interface,
            "netns",
            &self.receiver.netns,
        ])?;
        for endpoint in [&self.sender, &self.receiver] {
            configure_endpoint(endpoint, mtu)?;
        }
        Ok(())
    }
}

/// Sets the MAC, addresses and MTU of one veth end and brings it and
/// loopback up.
fn configure_endpoint(endpoint: &Endpoint, mtu: Option<u32>) -> Result<()> {
    let interface = endpoint.interface.as_str();
    let mac = format_mac(endpoint.mac);
    endpoint.ip(&["link", "set", "dev", interface, "address", &mac])?;
    if let Some(mtu) = mtu {
        endpoint.ip(&["link", "set", "dev", interface, "mtu", &mtu.to_string()])?;
    }
    let ipv4 = format!("{}/24", endpoint.ipv4);
    endpoint.ip(&["address", "add", &ipv4, "dev", interface])?;
    // Without `nodad` the address stays tentative for about a second.
    let ipv6 = format!("{}/64", endpoint.ipv6);
    endpoint.ip(&["address", "add", &ipv6, "dev", interface, "nodad"])?;
    endpoint.ip(&["link", "set", "dev", "lo", "up"])?;
    endpoint.ip(&["link", "set", "dev", interface, "up"])?;
    Ok(())
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Errors are printed, not raised: a panic here during a failing
        // test's unwinding would abort the whole test binary.
        for netns in self.created.iter().rev() {
            match Command::new("ip").args(["netns", "del", netns]).output() {
                Ok(output) if output.status.success() => {}
                Ok(output) => eprintln!(
                    "cannot delete namespace {netns}: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
                Err(error) => eprintln!("cannot run `ip netns del {netns}`: {error}"),
            }
        }
    }
}

/// Returns whether this process can build testbeds. When it cannot, prints
/// a line naming the current test and the reason, so a skip is never silent.
pub fn require_root() -> bool {
    let current = std::thread::current();
    let test = current.name().unwrap_or("this test");
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid != 0 {
        eprintln!(
            "SKIPPED {test}: network namespaces and XDP need root, and this runs as uid {uid}"
        );
        return false;
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(output) if output.status.success() => true,
        Ok(output) => {
            eprintln!(
                "SKIPPED {test}: `ip netns list` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            false
        }
        Err(error) => {
            eprintln!("SKIPPED {test}: cannot run `ip` (install iproute2): {error}");
            false
        }
    }
}

/// Formats a MAC address as `ip` expects it.
pub fn format_mac(mac: Mac) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Runs a command to completion; fails on a non-zero exit with the command
/// line and its stderr.
fn run_output(command: &mut Command) -> Result<Output> {
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
    Ok(output)
}
