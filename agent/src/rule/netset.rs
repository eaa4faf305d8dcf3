//! A set of networks with a membership test that stays fast for long lists.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net};

use crate::intel::canonical_address;

/// Sets up to this size are scanned; larger ones are searched per prefix
/// length.
const SCAN_LIMIT: usize = 16;

/// Networks in canonical form: IPv4-mapped IPv6 networks folded to IPv4,
/// host bits cleared, sorted and without duplicates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NetSet {
    nets: Box<[IpNet]>,
    /// The distinct prefix lengths among the IPv4 networks, then among the
    /// IPv6 ones.
    v4_lengths: Box<[u8]>,
    v6_lengths: Box<[u8]>,
}

impl NetSet {
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> NetSet {
        let mut nets: Vec<IpNet> = nets.into_iter().map(canonical_net).collect();
        nets.sort_unstable();
        nets.dedup();
        let lengths = |v4: bool| {
            let mut lengths: Vec<u8> = nets
                .iter()
                .filter(|net| matches!(net, IpNet::V4(_)) == v4)
                .map(IpNet::prefix_len)
                .collect();
            lengths.sort_unstable();
            lengths.dedup();
            lengths.into_boxed_slice()
        };
        NetSet {
            v4_lengths: lengths(true),
            v6_lengths: lengths(false),
            nets: nets.into_boxed_slice(),
        }
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// Returns whether any network contains `address`. An IPv4-mapped IPv6 address
    /// is tested as the IPv4 address.
    pub fn contains(&self, address: IpAddr) -> bool {
        let address = canonical_address(address);
        if self.nets.len() <= SCAN_LIMIT {
            return self.nets.iter().any(|net| net.contains(&address));
        }
        // Truncating the address to each prefix length in use and looking
        // the result up costs a few binary searches, however long the list.
        let lengths = match address {
            IpAddr::V4(_) => &self.v4_lengths,
            IpAddr::V6(_) => &self.v6_lengths,
        };
        lengths.iter().any(|&length| {
            IpNet::new(address, length)
                .is_ok_and(|net| self.nets.binary_search(&net.trunc()).is_ok())
        })
    }
}

impl fmt::Display for NetSet {
    /// Writes `{192.0.2.0/24 2001:db8::1}`, host networks as bare addresses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, net) in self.nets.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if net.prefix_len() == net.max_prefix_len() {
                write!(f, "{}", net.addr())?;
            } else {
                write!(f, "{net}")?;
            }
        }
        f.write_str("}")
    }
}

/// Folds an IPv4-mapped IPv6 network (inside ::ffff:0:0/96) to IPv4 and
/// clears host bits, so that one network has one spelling.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(folded) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(folded.trunc());
    }
    net.trunc()
}
