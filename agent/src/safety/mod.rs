//! The safety allowlist: sources that no drop rule may drop, so that a feed
//! cannot lock the operator out of the host.
//!
//! [`discover`] collects, in the network namespace of the calling thread:
//!
//! - every address of every interface (IPv4 and IPv6, link-local included);
//! - the next hop of every route through a gateway, the default routes
//!   included, and the peer address of point-to-point interfaces;
//! - the `nameserver` addresses of `/etc/resolv.conf` and, when present, of
//!   systemd-resolved's `/run/systemd/resolve/resolv.conf`;
//! - the client address of the SSH session the agent was started from
//!   (`SSH_CONNECTION`), when there is one;
//! - the addresses and prefixes of `[safety] allow`.
//!
//! The compiler turns the result into a first rule that allows these sources
//! before any drop rule is evaluated. [`prefix_warnings`] reports feed
//! indicators that are wide, private, reserved, or overlap a protected
//! address.

mod host;
mod warnings;

#[cfg(test)]
mod netns_tests;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Serialize;

use crate::config::SafetyConfig;
use crate::intel::canonical_address;

pub use self::warnings::{
    PrefixExample, PrefixWarning, PrefixWarningKind, SpecialRange, prefix_warnings,
};

/// Returns the nets that `new` adds to the allowlist `old`, then those it
/// drops. A reload logs them, because they change verdicts when no file
/// changed (a new address on an interface, a new resolver).
pub fn allowlist_changes<'a>(
    old: &'a [SafetyNet],
    new: &'a [SafetyNet],
) -> (Vec<&'a SafetyNet>, Vec<&'a SafetyNet>) {
    let added = new.iter().filter(|net| !old.contains(net)).collect();
    let dropped = old.iter().filter(|net| !new.contains(net)).collect();
    (added, dropped)
}

/// A source address or network that drop rules must not drop.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct SafetyNet {
    /// Canonical: host bits cleared, IPv4-mapped IPv6 folded to IPv4. A
    /// single address is a /32 or /128.
    pub net: IpNet,
    pub reason: SafetyReason,
}

/// The reason a source is on the safety allowlist.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum SafetyReason {
    /// An address of one of this host's interfaces.
    OwnAddress { interface: String },
    /// A next-hop router reached through `interface`, or the peer of a
    /// point-to-point interface.
    Gateway { interface: String },
    /// A `nameserver` of resolv.conf.
    Resolver,
    /// An entry of `[safety] allow`.
    Configured,
    /// The client of the SSH session the agent was started from.
    SshClient,
}

impl fmt::Display for SafetyNet {
    /// Writes the net with its reason, for example "this host's address
    /// 10.0.0.5 on eth0".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let net = display_net(&self.net);
        match &self.reason {
            SafetyReason::OwnAddress { interface } => {
                write!(f, "this host's address {net} on {interface}")
            }
            SafetyReason::Gateway { interface } => write!(f, "the gateway {net} on {interface}"),
            SafetyReason::Resolver => write!(f, "the resolver {net}"),
            SafetyReason::Configured if self.net.prefix_len() == self.net.max_prefix_len() => {
                write!(f, "the management address {net} from [safety] allow")
            }
            SafetyReason::Configured => {
                write!(f, "the management network {net} from [safety] allow")
            }
            SafetyReason::SshClient => write!(f, "the SSH client {net} of this session"),
        }
    }
}

impl fmt::Display for SafetyReason {
    /// Writes where the protected source comes from.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SafetyReason::OwnAddress { interface } => {
                write!(f, "an address of this host on {interface}")
            }
            SafetyReason::Gateway { interface } => write!(f, "a gateway on {interface}"),
            SafetyReason::Resolver => f.write_str("a resolver of resolv.conf"),
            SafetyReason::Configured => f.write_str("an entry of [safety] allow"),
            SafetyReason::SshClient => f.write_str("the client of this SSH session"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("invalid [safety] allow entry \"{value}\": {reason}")]
    InvalidAllow { value: String, reason: String },
    #[error("cannot list the addresses of this host's interfaces: {source}")]
    Interfaces {
        #[source]
        source: nix::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The files and environment that discovery reads, apart from the interface
/// addresses, which always come from the kernel. Tests point these at
/// fixtures.
#[derive(Clone, Debug)]
pub struct HostSources {
    /// An IPv4 routing table in the format of `/proc/net/route`.
    pub ipv4_routes: PathBuf,
    /// An IPv6 routing table in the format of `/proc/net/ipv6_route`.
    pub ipv6_routes: PathBuf,
    /// Files in the format of resolv.conf. A file that does not exist is
    /// skipped.
    pub resolv_confs: Vec<PathBuf>,
    /// The value of `SSH_CONNECTION`: client address, client port, server
    /// address, server port.
    pub ssh_connection: Option<String>,
}

impl HostSources {
    /// The running host's files and environment.
    ///
    /// The routing tables are read through `/proc/thread-self/net`, which
    /// shows the network namespace of the calling thread. `/proc/net` would
    /// not do, because it links to `/proc/self/net`, which shows that of the
    /// main thread. Kernels before 3.17 lack `thread-self` and use
    /// `/proc/net`.
    pub fn system() -> HostSources {
        let thread_net = Path::new("/proc/thread-self/net");
        let net = if thread_net.exists() {
            thread_net
        } else {
            Path::new("/proc/net")
        };
        HostSources {
            ipv4_routes: net.join("route"),
            ipv6_routes: net.join("ipv6_route"),
            resolv_confs: vec![
                PathBuf::from("/etc/resolv.conf"),
                PathBuf::from("/run/systemd/resolve/resolv.conf"),
            ],
            ssh_connection: std::env::var("SSH_CONNECTION").ok(),
        }
    }
}

/// Discovers the safety allowlist of this host, in the network namespace of
/// the calling thread. Returns nothing when `[safety] enabled = false`; an
/// invalid `allow` entry is an error either way.
pub fn discover(config: &SafetyConfig) -> Result<Vec<SafetyNet>, SafetyError> {
    discover_in(config, &HostSources::system())
}

/// Discovers the safety allowlist as [`discover`] does, reading routes,
/// resolvers and the SSH client from `sources`.
///
/// The result lists own addresses first, then gateways, resolvers, the SSH
/// client and the `allow` entries. A net found twice is listed once, with
/// the first reason found.
pub fn discover_in(
    config: &SafetyConfig,
    sources: &HostSources,
) -> Result<Vec<SafetyNet>, SafetyError> {
    let configured = parse_allow(&config.allow)?;
    if !config.enabled {
        return Ok(Vec::new());
    }

    let mut found = host::interface_addresses()?;
    found.extend(host::parse_ipv4_routes(&host::read_optional(
        &sources.ipv4_routes,
    )?));
    found.extend(host::parse_ipv6_routes(&host::read_optional(
        &sources.ipv6_routes,
    )?));
    for path in &sources.resolv_confs {
        let text = host::read_optional(path)?;
        found.extend(host::parse_resolv_conf(&text, path));
    }
    if let Some(connection) = &sources.ssh_connection {
        found.extend(host::parse_ssh_connection(connection));
    }
    found.extend(configured.into_iter().map(|net| SafetyNet {
        net,
        reason: SafetyReason::Configured,
    }));

    let mut seen = HashSet::new();
    found.retain(|safety_net| seen.insert(safety_net.net));
    Ok(found)
}

/// Parses the entries of `[safety] allow`: IPv4 or IPv6 addresses, or
/// prefixes in CIDR notation. Host bits are cleared with a warning, a zone
/// index (`fe80::1%eth0`) is dropped and IPv4-mapped IPv6 is folded to IPv4.
/// The first invalid entry is an error that names it.
pub fn parse_allow(entries: &[String]) -> Result<Vec<IpNet>, SafetyError> {
    entries
        .iter()
        .map(|value| {
            parse_allow_entry(value).map_err(|reason| SafetyError::InvalidAllow {
                value: value.clone(),
                reason,
            })
        })
        .collect()
}

/// Parses one `allow` entry; the error is the reason it is invalid.
fn parse_allow_entry(value: &str) -> Result<IpNet, String> {
    let value = value.trim();
    if value.is_empty() {
        return Err(
            "empty; give an address such as 192.0.2.10 or a prefix such as 192.0.2.0/24".into(),
        );
    }
    let (address_text, length_text) = match value.split_once('/') {
        Some((address, length)) => (address, Some(length)),
        None => (value, None),
    };
    let address = parse_address(address_text)
        .ok_or_else(|| format!("`{address_text}` is not an IPv4 or IPv6 address"))?;
    let max_len = match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let len = match length_text {
        None => max_len,
        Some(text) => text
            .parse::<u8>()
            .map_err(|_| format!("prefix length `{text}` is not a number from 0 to {max_len}"))?,
    };
    if len > max_len {
        return Err(format!(
            "prefix length /{len} is longer than /{max_len}, the maximum for this address family"
        ));
    }
    if len == 0 {
        return Err(
            "a /0 prefix would exempt every source from every drop rule; \
             to turn the allowlist off, set `enabled = false` instead"
                .into(),
        );
    }

    let (address, len) = fold_mapped(address, len);
    let net = IpNet::new(address, len).expect("length checked against the family's maximum");
    let trunc = net.trunc();
    if trunc != net {
        tracing::warn!(
            entry = value,
            normalised = %trunc,
            "[safety] allow entry has host bits set; the whole prefix is allowed"
        );
    }
    Ok(trunc)
}

/// Parses an IPv4 or IPv6 address, ignoring an IPv6 zone index (`%eth0`).
fn parse_address(text: &str) -> Option<IpAddr> {
    let without_zone = match text.split_once('%') {
        Some((address, _zone)) if address.contains(':') => address,
        _ => text,
    };
    without_zone.parse().ok()
}

/// Folds an IPv4-mapped IPv6 prefix of at least /96 to IPv4, so that it
/// matches packets the way the maps store them.
fn fold_mapped(address: IpAddr, len: u8) -> (IpAddr, u8) {
    match canonical_address(address) {
        IpAddr::V4(v4) if address.is_ipv6() && len >= 96 => (IpAddr::V4(v4), len - 96),
        _ => (address, len),
    }
}

/// Formats a host prefix as the bare address, other prefixes in CIDR
/// notation.
pub(crate) fn display_net(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// Returns the host net (/32 or /128) of an address, in canonical form.
fn host_net(address: IpAddr) -> IpNet {
    IpNet::from(canonical_address(address))
}
