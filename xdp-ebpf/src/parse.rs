//! Packet parsing up to the IP source address.
//!
//! Contract: every access to the frame in this crate, read or write, goes
//! through [`ptr_at`], which checks that the whole `T` lies inside the frame
//! before returning a pointer to it. Offsets are plain `usize` values counted
//! from the start of the frame.

use aya_ebpf::programs::XdpContext;
use intelwall_common::{MAX_VLAN_TAGS, PathCounter};

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
pub const IPV4_MIN_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_ICMPV6: u8 = 58;
/// ICMPv6 router solicitation to redirect: the neighbour discovery messages.
const ND_FIRST_TYPE: u8 = 133;
const ND_LAST_TYPE: u8 = 137;
const IPV6_NEXT_HEADER_OFFSET: usize = 6;

/// Offset of the source address inside each IP header.
const IPV4_SOURCE_OFFSET: usize = 12;
const IPV6_SOURCE_OFFSET: usize = 8;

pub enum Parsed {
    /// An IPv4 source, and the offset of the IPv4 header.
    V4([u8; 4], usize),
    /// An IPv6 source, and the offset of the IPv6 header.
    V6([u8; 16], usize),
    /// Not judged; the reason is the counter slot to bump.
    Skipped(PathCounter),
}

/// Returns a pointer to a `T` at `offset` bytes into the frame, or `None` when
/// the frame is too short to hold it.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Option<T> {
    // SAFETY: ptr_at checked that the bytes lie inside the frame; packet data
    // has no alignment guarantee, hence the unaligned read.
    ptr_at::<T>(ctx, offset).map(|ptr| unsafe { ptr.read_unaligned() })
}

#[inline(always)]
pub fn read_be16(ctx: &XdpContext, offset: usize) -> Option<u16> {
    read::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

#[inline(always)]
pub fn parse_source(ctx: &XdpContext) -> Parsed {
    let Some(mut ether_type) = read_be16(ctx, ETH_HEADER_LEN - 2) else {
        return Parsed::Skipped(PathCounter::Truncated);
    };
    let mut offset = ETH_HEADER_LEN;

    // The verifier needs a bound it can see: the loop runs at most
    // MAX_VLAN_TAGS times and is unrolled.
    for _ in 0..MAX_VLAN_TAGS {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        // The inner EtherType sits in the last two bytes of the tag.
        let Some(inner) = read_be16(ctx, offset + VLAN_TAG_LEN - 2) else {
            return Parsed::Skipped(PathCounter::Truncated);
        };
        ether_type = inner;
        offset += VLAN_TAG_LEN;
    }

    match ether_type {
        ETH_P_IPV4 => parse_ipv4(ctx, offset),
        ETH_P_IPV6 => parse_ipv6(ctx, offset),
        ETH_P_8021Q | ETH_P_8021AD => Parsed::Skipped(PathCounter::VlanDepth),
        _ => Parsed::Skipped(PathCounter::NotIp),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, offset: usize) -> Parsed {
    let Some(header) = read::<[u8; IPV4_MIN_HEADER_LEN]>(ctx, offset) else {
        return Parsed::Skipped(PathCounter::Truncated);
    };
    let version = header[0] >> 4;
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if version != 4 || header_len < IPV4_MIN_HEADER_LEN {
        return Parsed::Skipped(PathCounter::BadHeader);
    }
    // Options are not read, but a header that claims more bytes than the
    // frame holds is truncated, not a packet to judge.
    if ctx.data() + offset + header_len > ctx.data_end() {
        return Parsed::Skipped(PathCounter::Truncated);
    }
    let mut source = [0u8; 4];
    source.copy_from_slice(&header[IPV4_SOURCE_OFFSET..IPV4_SOURCE_OFFSET + 4]);
    Parsed::V4(source, offset)
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, offset: usize) -> Parsed {
    let Some(version_byte) = read::<u8>(ctx, offset) else {
        return Parsed::Skipped(PathCounter::Truncated);
    };
    if version_byte >> 4 != 6 {
        return Parsed::Skipped(PathCounter::BadHeader);
    }
    let Some(next_header) = read::<u8>(ctx, offset + IPV6_NEXT_HEADER_OFFSET) else {
        return Parsed::Skipped(PathCounter::Truncated);
    };
    if ptr_at::<[u8; IPV6_HEADER_LEN]>(ctx, offset).is_none() {
        return Parsed::Skipped(PathCounter::Truncated);
    }
    // Neighbour discovery is sent straight to ICMPv6 in practice, so only the
    // fixed header's next header is checked. NOTE: a message behind extension
    // headers is judged like any other packet.
    if next_header == IPPROTO_ICMPV6
        && let Some(icmp_type) = read::<u8>(ctx, offset + IPV6_HEADER_LEN)
        && (ND_FIRST_TYPE..=ND_LAST_TYPE).contains(&icmp_type)
    {
        return Parsed::Skipped(PathCounter::NeighbourDiscovery);
    }
    match read::<[u8; 16]>(ctx, offset + IPV6_SOURCE_OFFSET) {
        Some(source) => Parsed::V6(source, offset),
        None => Parsed::Skipped(PathCounter::Truncated),
    }
}
