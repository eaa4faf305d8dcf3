//! Reading the host: interface addresses, routing tables, resolv.conf and
//! the SSH session.

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use nix::ifaddrs::{InterfaceAddress, getifaddrs};
use nix::sys::socket::SockaddrStorage;

use super::{SafetyError, SafetyNet, SafetyReason, host_net, parse_address};

/// Route flags of `<linux/route.h>`, the same in both routing tables.
const RTF_UP: u32 = 0x0001;
const RTF_GATEWAY: u32 = 0x0002;

/// Lists every address of every interface in the calling thread's network
/// namespace, and the peer address of point-to-point interfaces.
///
/// glibc's getifaddrs queries the kernel over a netlink socket, and a socket
/// belongs to the namespace of the thread that opens it.
pub(super) fn interface_addresses() -> Result<Vec<SafetyNet>, SafetyError> {
    let addresses = getifaddrs().map_err(|source| SafetyError::Interfaces { source })?;
    let mut found = Vec::new();
    for entry in addresses {
        found.extend(own_address(&entry));
        found.extend(point_to_point_peer(&entry));
    }
    Ok(found)
}

fn own_address(entry: &InterfaceAddress) -> Option<SafetyNet> {
    let address = ip_of(entry.address.as_ref()?)?;
    Some(SafetyNet {
        net: host_net(address),
        reason: SafetyReason::OwnAddress {
            interface: entry.interface_name.clone(),
        },
    })
}

/// Returns the peer of a point-to-point interface (a tunnel or PPP), which is
/// the next hop of everything routed over it, like a gateway.
fn point_to_point_peer(entry: &InterfaceAddress) -> Option<SafetyNet> {
    let peer = ip_of(entry.destination.as_ref()?)?;
    if peer.is_unspecified() {
        return None;
    }
    Some(SafetyNet {
        net: host_net(peer),
        reason: SafetyReason::Gateway {
            interface: entry.interface_name.clone(),
        },
    })
}

/// Returns the IP address of an `AF_INET` or `AF_INET6` socket address; `None` for
/// other families, such as the `AF_PACKET` entries getifaddrs also returns.
fn ip_of(address: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

/// Reads a file, or returns an empty string when it does not exist: a host
/// without IPv6 has no `ipv6_route`, and one without systemd-resolved has no
/// `/run/systemd/resolve/resolv.conf`.
pub(super) fn read_optional(path: &Path) -> Result<String, SafetyError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(SafetyError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Extracts the gateways of an IPv4 routing table in the format of
/// `/proc/net/route`: a header line, then one route a line with the fields
/// Iface, Destination, Gateway, Flags, RefCnt, Use, Metric, Mask and more.
///
/// Addresses are 8 hex digits of the address as the kernel stores it in
/// memory (network byte order) printed as a native-endian integer, so
/// 192.0.2.1 reads `010200C0` on little-endian machines.
///
/// NOTE: the kernel prints only the main routing table here; gateways that
/// appear only in other tables (policy routing) are not found.
pub(super) fn parse_ipv4_routes(text: &str) -> Vec<SafetyNet> {
    let mut found = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [interface, _destination, gateway, flags, ..] = fields[..] else {
            continue;
        };
        let (Ok(gateway), Ok(flags)) = (
            u32::from_str_radix(gateway, 16),
            u32::from_str_radix(flags, 16),
        ) else {
            tracing::debug!(line, "skipped a line of the IPv4 routing table");
            continue;
        };
        if !is_gateway_route(flags) || gateway == 0 {
            continue;
        }
        let address = Ipv4Addr::from(gateway.to_ne_bytes());
        found.push(gateway_net(IpAddr::V4(address), interface));
    }
    found
}

/// Extracts the gateways of an IPv6 routing table in the format of
/// `/proc/net/ipv6_route`: no header, one route a line with the fields
/// destination, destination length, source, source length, next hop,
/// metric, reference count, use count, flags and interface. Addresses are 32
/// hex digits in network byte order; lengths and flags are hex.
pub(super) fn parse_ipv6_routes(text: &str) -> Vec<SafetyNet> {
    let mut found = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_, _, _, _, next_hop, _, _, _, flags, interface, ..] = fields[..] else {
            continue;
        };
        let (Ok(next_hop), Ok(flags)) = (
            u128::from_str_radix(next_hop, 16),
            u32::from_str_radix(flags, 16),
        ) else {
            tracing::debug!(line, "skipped a line of the IPv6 routing table");
            continue;
        };
        if !is_gateway_route(flags) || next_hop == 0 {
            continue;
        }
        found.push(gateway_net(IpAddr::V6(Ipv6Addr::from(next_hop)), interface));
    }
    found
}

fn is_gateway_route(flags: u32) -> bool {
    flags & RTF_UP != 0 && flags & RTF_GATEWAY != 0
}

fn gateway_net(address: IpAddr, interface: &str) -> SafetyNet {
    SafetyNet {
        net: host_net(address),
        reason: SafetyReason::Gateway {
            interface: interface.to_owned(),
        },
    }
}

/// Extracts the `nameserver` addresses of a file in the format of
/// resolv.conf. Lines starting with `#` or `;` are comments; an IPv6 zone
/// index (`fe80::1%eth0`) is dropped. A `nameserver` line whose address does
/// not parse is skipped with a warning, as the resolver itself skips it.
pub(super) fn parse_resolv_conf(text: &str, path: &Path) -> Vec<SafetyNet> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let value = words.next().unwrap_or("");
        match parse_address(value) {
            Some(address) => found.push(SafetyNet {
                net: host_net(address),
                reason: SafetyReason::Resolver,
            }),
            None => tracing::warn!(
                path = %path.display(),
                line = index + 1,
                value,
                "nameserver is not an IP address; not added to the safety allowlist"
            ),
        }
    }
    found
}

/// Extracts the client address from `SSH_CONNECTION` ("client-address
/// client-port server-address server-port").
pub(super) fn parse_ssh_connection(value: &str) -> Option<SafetyNet> {
    let client = value.split_whitespace().next()?;
    let Some(address) = parse_address(client) else {
        tracing::debug!(value, "SSH_CONNECTION does not start with an IP address");
        return None;
    };
    Some(SafetyNet {
        net: host_net(address),
        reason: SafetyReason::SshClient,
    })
}
