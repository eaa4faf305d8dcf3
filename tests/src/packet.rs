//! Builders for the frames that tests send, and a parser for their source.
//!
//! Each builder returns the bytes of one layer with its payload appended, so
//! layers nest: `ethernet(.., ipv4.build(&udp(..)))`. Checksums and lengths
//! are filled in, except where a builder's documentation names a field that
//! it writes wrong on purpose. Frames carry no FCS and no padding to 60 bytes, because veth and
//! AF_PACKET pass short frames as they are.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An Ethernet MAC address.
pub type Mac = [u8; 6];

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// TPID of an 802.1Q (customer) VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// TPID of an 802.1ad (service, outer QinQ) VLAN tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// TCP flag bits for [`tcp`].
pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

const IPV4_MIN_HEADER: usize = 20;
const IPV4_MAX_OPTIONS: usize = 40;
const IPV6_HEADER: usize = 40;

/// The VLAN tags of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VlanTags {
    None,
    /// One 802.1Q tag.
    Single {
        vid: u16,
    },
    /// An 802.1ad outer tag followed by an 802.1Q inner tag (QinQ).
    Double {
        outer: u16,
        inner: u16,
    },
}

impl VlanTags {
    /// Number of 4-byte tags.
    pub fn count(self) -> usize {
        match self {
            VlanTags::None => 0,
            VlanTags::Single { .. } => 1,
            VlanTags::Double { .. } => 2,
        }
    }
}

/// Builds an Ethernet frame: addresses, VLAN tags, `ethertype`, `payload`.
pub fn ethernet(dst: Mac, src: Mac, tags: VlanTags, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + 4 * tags.count() + payload.len());
    frame.extend_from_slice(&dst);
    frame.extend_from_slice(&src);
    let mut push_tag = |tpid: u16, vid: u16| {
        frame.extend_from_slice(&tpid.to_be_bytes());
        // Priority and drop-eligible bits stay zero; the VID is 12 bits.
        frame.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    };
    match tags {
        VlanTags::None => {}
        VlanTags::Single { vid } => push_tag(ETHERTYPE_VLAN, vid),
        VlanTags::Double { outer, inner } => {
            push_tag(ETHERTYPE_QINQ, outer);
            push_tag(ETHERTYPE_VLAN, inner);
        }
    }
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The Ethernet part shared by the frames of one flow: addresses and tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    pub src: Mac,
    pub dst: Mac,
    pub tags: VlanTags,
}

impl Link {
    pub fn new(src: Mac, dst: Mac) -> Link {
        Link {
            src,
            dst,
            tags: VlanTags::None,
        }
    }

    /// Returns a copy of this link with other VLAN tags.
    pub fn with_tags(self, tags: VlanTags) -> Link {
        Link { tags, ..self }
    }

    /// Wraps `payload` of type `ethertype` in a frame on this link.
    pub fn frame(&self, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        ethernet(self.dst, self.src, self.tags, ethertype, payload)
    }

    /// Builds a UDP datagram from `src` to `dst` (both IPv4 or both IPv6),
    /// port 40000 to port 9, in a frame on this link.
    ///
    /// # Panics
    ///
    /// Panics when the two addresses are of different families.
    pub fn udp(&self, src: IpAddr, dst: IpAddr, payload: &[u8]) -> Vec<u8> {
        let datagram = udp(src, dst, 40000, 9, payload);
        match (src, dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let packet = Ipv4Header::new(src, dst, IPPROTO_UDP).build(&datagram);
                self.frame(ETHERTYPE_IPV4, &packet)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let packet = Ipv6Header::new(src, dst).build(IPPROTO_UDP, &datagram);
                self.frame(ETHERTYPE_IPV6, &packet)
            }
            _ => panic!("source {src} and destination {dst} are of different IP families"),
        }
    }
}

/// An IPv4 header to build; fields not listed get fixed, valid values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Header {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    pub ttl: u8,
    pub identification: u16,
    pub dont_fragment: bool,
    pub more_fragments: bool,
    /// Offset of this fragment's payload, in 8-byte units.
    pub fragment_offset: u16,
    /// Option bytes, padded to a multiple of 4 by [`Ipv4Header::with_options`].
    pub options: Vec<u8>,
}

impl Ipv4Header {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8) -> Ipv4Header {
        Ipv4Header {
            src,
            dst,
            protocol,
            ttl: 64,
            identification: 1,
            dont_fragment: false,
            more_fragments: false,
            fragment_offset: 0,
            options: Vec::new(),
        }
    }

    /// Adds options, padded with End of Options List bytes so that the
    /// header length is a whole number of 4-byte words (IHL 6 to 15).
    ///
    /// # Panics
    ///
    /// Panics when the padded options exceed the 40 bytes IHL can express.
    pub fn with_options(mut self, options: &[u8]) -> Ipv4Header {
        let mut padded = options.to_vec();
        padded.resize(options.len().div_ceil(4) * 4, 0);
        assert!(
            padded.len() <= IPV4_MAX_OPTIONS,
            "IPv4 options of {} bytes exceed the maximum of {IPV4_MAX_OPTIONS}",
            padded.len()
        );
        self.options = padded;
        self
    }

    /// Makes this header a fragment at `offset` (in 8-byte units), with the
    /// More Fragments flag set when `more` is true.
    pub fn fragment(mut self, offset: u16, more: bool) -> Ipv4Header {
        self.fragment_offset = offset;
        self.more_fragments = more;
        self
    }

    /// Header length in bytes: 20 plus the options.
    pub fn header_len(&self) -> usize {
        IPV4_MIN_HEADER + self.options.len()
    }

    /// Builds the header followed by `payload`, with the total length and
    /// header checksum filled in.
    pub fn build(&self, payload: &[u8]) -> Vec<u8> {
        let ihl = (self.header_len() / 4) as u8;
        self.build_with_ihl(ihl, payload)
    }

    /// Writes `ihl` into the header length field whatever the real length,
    /// so that tests can build headers that claim a wrong length.
    fn build_with_ihl(&self, ihl: u8, payload: &[u8]) -> Vec<u8> {
        let total_len = u16::try_from(self.header_len() + payload.len())
            .expect("IPv4 packet fits the 16-bit total length");
        let mut flags_offset = self.fragment_offset & 0x1fff;
        if self.dont_fragment {
            flags_offset |= 0x4000;
        }
        if self.more_fragments {
            flags_offset |= 0x2000;
        }
        let mut packet = Vec::with_capacity(usize::from(total_len));
        packet.push(0x40 | (ihl & 0x0f));
        packet.push(0); // DSCP and ECN
        packet.extend_from_slice(&total_len.to_be_bytes());
        packet.extend_from_slice(&self.identification.to_be_bytes());
        packet.extend_from_slice(&flags_offset.to_be_bytes());
        packet.push(self.ttl);
        packet.push(self.protocol);
        packet.extend_from_slice(&[0, 0]); // checksum, filled in below
        packet.extend_from_slice(&self.src.octets());
        packet.extend_from_slice(&self.dst.octets());
        packet.extend_from_slice(&self.options);
        let checksum = internet_checksum(&packet[..self.header_len()]);
        packet[10..12].copy_from_slice(&checksum.to_be_bytes());
        packet.extend_from_slice(payload);
        packet
    }
}

/// Builds an IPv4 packet of 20 header bytes whose IHL field is `ihl`, for
/// parser tests: IHL below 5 is invalid, and a larger IHL claims options
/// that are not there. The checksum covers the 20 bytes written.
pub fn ipv4_with_ihl(src: Ipv4Addr, dst: Ipv4Addr, ihl: u8, payload: &[u8]) -> Vec<u8> {
    Ipv4Header::new(src, dst, IPPROTO_UDP).build_with_ihl(ihl, payload)
}

/// An IPv6 extension header that [`Ipv6Header`] can insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionHeader {
    HopByHop,
    DestinationOptions,
}

impl ExtensionHeader {
    fn protocol(self) -> u8 {
        match self {
            ExtensionHeader::HopByHop => IPPROTO_HOPOPTS,
            ExtensionHeader::DestinationOptions => IPPROTO_DSTOPTS,
        }
    }
}

/// An IPv6 header to build, with optional extension headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv6Header {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    /// Extension headers in order, each 8 bytes of padding options.
    pub extensions: Vec<ExtensionHeader>,
}

impl Ipv6Header {
    pub fn new(src: Ipv6Addr, dst: Ipv6Addr) -> Ipv6Header {
        Ipv6Header {
            src,
            dst,
            hop_limit: 64,
            extensions: Vec::new(),
        }
    }

    /// Appends an extension header after those already present.
    pub fn with_extension(mut self, extension: ExtensionHeader) -> Ipv6Header {
        self.extensions.push(extension);
        self
    }

    /// Builds the header, its extension headers, then `payload` whose
    /// protocol is `next_header`.
    pub fn build(&self, next_header: u8, payload: &[u8]) -> Vec<u8> {
        let extensions_len = 8 * self.extensions.len();
        let payload_len = u16::try_from(extensions_len + payload.len())
            .expect("IPv6 payload fits the 16-bit payload length");
        let first_next = self
            .extensions
            .first()
            .map_or(next_header, |extension| extension.protocol());

        let mut packet = Vec::with_capacity(IPV6_HEADER + usize::from(payload_len));
        packet.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, class and flow 0
        packet.extend_from_slice(&payload_len.to_be_bytes());
        packet.push(first_next);
        packet.push(self.hop_limit);
        packet.extend_from_slice(&self.src.octets());
        packet.extend_from_slice(&self.dst.octets());
        for (index, _) in self.extensions.iter().enumerate() {
            let next = self
                .extensions
                .get(index + 1)
                .map_or(next_header, |extension| extension.protocol());
            // Next header, length 0 (8 bytes in all), then one PadN option
            // covering the remaining 6 bytes.
            packet.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
        }
        packet.extend_from_slice(payload);
        packet
    }
}

/// Builds a UDP header and payload with the checksum over the pseudo-header.
///
/// # Panics
///
/// Panics when the two addresses are of different families.
pub fn udp(src: IpAddr, dst: IpAddr, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("UDP datagram fits 16 bits");
    let mut datagram = Vec::with_capacity(usize::from(len));
    datagram.extend_from_slice(&src_port.to_be_bytes());
    datagram.extend_from_slice(&dst_port.to_be_bytes());
    datagram.extend_from_slice(&len.to_be_bytes());
    datagram.extend_from_slice(&[0, 0]);
    datagram.extend_from_slice(payload);
    let mut checksum = transport_checksum(src, dst, IPPROTO_UDP, &datagram);
    // Zero means "no checksum" in UDP over IPv4, so a computed zero is sent
    // as all ones (RFC 768).
    if checksum == 0 {
        checksum = 0xffff;
    }
    datagram[6..8].copy_from_slice(&checksum.to_be_bytes());
    datagram
}

/// Builds a TCP segment (sequence number 1, no options) with `flags` and the
/// checksum over the pseudo-header.
///
/// # Panics
///
/// Panics when the two addresses are of different families.
pub fn tcp(
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut segment = Vec::with_capacity(20 + payload.len());
    segment.extend_from_slice(&src_port.to_be_bytes());
    segment.extend_from_slice(&dst_port.to_be_bytes());
    segment.extend_from_slice(&1u32.to_be_bytes()); // sequence number
    segment.extend_from_slice(&0u32.to_be_bytes()); // acknowledgment number
    segment.push(5 << 4); // data offset: 5 words, no options
    segment.push(flags);
    segment.extend_from_slice(&u16::MAX.to_be_bytes()); // window
    segment.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    segment.extend_from_slice(payload);
    let checksum = transport_checksum(src, dst, IPPROTO_TCP, &segment);
    segment[16..18].copy_from_slice(&checksum.to_be_bytes());
    segment
}

/// ARP operation codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArpOperation {
    Request = 1,
    Reply = 2,
}

/// Builds an ARP packet for Ethernet and IPv4 (the payload of an
/// [`ETHERTYPE_ARP`] frame).
pub fn arp(
    operation: ArpOperation,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut packet = Vec::with_capacity(28);
    packet.extend_from_slice(&1u16.to_be_bytes()); // hardware type: Ethernet
    packet.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    packet.extend_from_slice(&[6, 4]); // address lengths
    packet.extend_from_slice(&(operation as u16).to_be_bytes());
    packet.extend_from_slice(&sender_mac);
    packet.extend_from_slice(&sender_ip.octets());
    packet.extend_from_slice(&target_mac);
    packet.extend_from_slice(&target_ip.octets());
    packet
}

/// Builds an ARP request asking who has `target_ip`.
pub fn arp_request(sender_mac: Mac, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Vec<u8> {
    arp(
        ArpOperation::Request,
        sender_mac,
        sender_ip,
        [0; 6],
        target_ip,
    )
}

/// Builds an ARP reply telling `target` that `sender_ip` is at `sender_mac`.
pub fn arp_reply(
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    arp(
        ArpOperation::Reply,
        sender_mac,
        sender_ip,
        target_mac,
        target_ip,
    )
}

/// Returns the solicited-node multicast address of `target`
/// (ff02::1:ffXX:XXXX).
pub fn solicited_node_address(target: Ipv6Addr) -> Ipv6Addr {
    let t = target.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0xff, t[13], t[14], t[15],
    ])
}

/// Returns the Ethernet address of an IPv6 multicast group: 33:33 followed
/// by the group's last 32 bits.
pub fn multicast_mac(group: Ipv6Addr) -> Mac {
    let g = group.octets();
    [0x33, 0x33, g[12], g[13], g[14], g[15]]
}

/// Builds an IPv6 neighbour solicitation for `target` from `src` (an IPv6
/// packet to the solicited-node address, hop limit 255, with the sender's
/// link-layer address option). Send it to
/// `multicast_mac(solicited_node_address(target))`.
pub fn neighbour_solicitation(src_mac: Mac, src: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let dst = solicited_node_address(target);
    let mut message = Vec::with_capacity(32);
    message.extend_from_slice(&[135, 0, 0, 0]); // type, code, checksum
    message.extend_from_slice(&[0, 0, 0, 0]); // reserved
    message.extend_from_slice(&target.octets());
    message.extend_from_slice(&[1, 1]); // option: source link-layer address, 8 bytes
    message.extend_from_slice(&src_mac);
    let checksum = transport_checksum(IpAddr::V6(src), IpAddr::V6(dst), IPPROTO_ICMPV6, &message);
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    let header = Ipv6Header {
        hop_limit: 255,
        ..Ipv6Header::new(src, dst)
    };
    header.build(IPPROTO_ICMPV6, &message)
}

/// Returns the first `len` bytes of `frame`, as a frame cut short in transit.
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len.min(frame.len())].to_vec()
}

/// Computes the Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !fold_sum(ones_complement_sum(0, data))
}

/// Computes a TCP, UDP or ICMPv6 checksum: `segment` (with a zero checksum
/// field) preceded by the IPv4 or IPv6 pseudo-header.
fn transport_checksum(src: IpAddr, dst: IpAddr, protocol: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, protocol]);
            let len = u16::try_from(segment.len()).expect("segment fits 16 bits");
            pseudo.extend_from_slice(&len.to_be_bytes());
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            let len = u32::try_from(segment.len()).expect("segment fits 32 bits");
            pseudo.extend_from_slice(&len.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        }
        _ => panic!("source {src} and destination {dst} are of different IP families"),
    }
    let sum = ones_complement_sum(ones_complement_sum(0, &pseudo), segment);
    !fold_sum(sum)
}

/// Adds `data` as big-endian 16-bit words to `sum`, padding an odd last
/// byte with zero.
fn ones_complement_sum(mut sum: u32, data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(2);
    for word in &mut words {
        sum += u32::from(u16::from_be_bytes([word[0], word[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold_sum(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Returns the IP source address of a frame, looking through any number of
/// 802.1Q and 802.1ad tags. Returns `None` for a frame that is not IPv4 or
/// IPv6, or that ends before the source address.
pub fn ip_source(frame: &[u8]) -> Option<IpAddr> {
    let mut offset = 12;
    loop {
        let ethertype = u16::from_be_bytes(frame.get(offset..offset + 2)?.try_into().ok()?);
        offset += 2;
        match ethertype {
            ETHERTYPE_VLAN | ETHERTYPE_QINQ => offset += 2,
            ETHERTYPE_IPV4 => {
                let bytes: [u8; 4] = frame.get(offset + 12..offset + 16)?.try_into().ok()?;
                return Some(IpAddr::from(bytes));
            }
            ETHERTYPE_IPV6 => {
                let bytes: [u8; 16] = frame.get(offset + 8..offset + 24)?.try_into().ok()?;
                return Some(IpAddr::from(bytes));
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC_MAC: Mac = [0x02, 0, 0, 0, 0, 1];
    const DST_MAC: Mac = [0x02, 0, 0, 0, 0, 2];

    fn v4(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn v6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    /// Sums `data` with its checksum field in place: valid data folds to
    /// 0xffff.
    fn verifies(data: &[u8]) -> bool {
        fold_sum(ones_complement_sum(0, data)) == 0xffff
    }

    #[test]
    fn checksum_rfc1071_example() {
        // The worked example of RFC 1071 section 3: the sum is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn checksum_odd_length() {
        assert_eq!(internet_checksum(&[0x12]), !0x1200);
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let packet = Ipv4Header::new(v4("192.0.2.1"), v4("198.51.100.2"), IPPROTO_UDP).build(b"x");
        assert!(verifies(&packet[..20]));
        assert_eq!(packet[0], 0x45);
        assert_eq!(u16::from_be_bytes([packet[2], packet[3]]), 21);
    }

    #[test]
    fn ipv4_options_set_ihl() {
        // Three option bytes pad to one word: IHL 6.
        let header =
            Ipv4Header::new(v4("192.0.2.1"), v4("192.0.2.2"), IPPROTO_UDP).with_options(&[1, 1, 1]);
        let packet = header.build(&[]);
        assert_eq!(packet[0], 0x46);
        assert_eq!(packet.len(), 24);
        assert!(verifies(&packet[..24]));
    }

    #[test]
    fn ipv4_maximum_options() {
        let header =
            Ipv4Header::new(v4("192.0.2.1"), v4("192.0.2.2"), IPPROTO_UDP).with_options(&[1; 40]);
        let packet = header.build(&[]);
        assert_eq!(packet[0] & 0x0f, 15);
        assert!(verifies(&packet[..60]));
    }

    #[test]
    #[should_panic(expected = "exceed the maximum")]
    fn ipv4_options_too_long() {
        let _ =
            Ipv4Header::new(v4("192.0.2.1"), v4("192.0.2.2"), IPPROTO_UDP).with_options(&[1; 41]);
    }

    #[test]
    fn ipv4_fragment_fields() {
        let packet = Ipv4Header::new(v4("192.0.2.1"), v4("192.0.2.2"), IPPROTO_UDP)
            .fragment(185, true)
            .build(&[0; 8]);
        let flags_offset = u16::from_be_bytes([packet[6], packet[7]]);
        assert_eq!(flags_offset & 0x1fff, 185);
        assert_eq!(flags_offset & 0x2000, 0x2000, "More Fragments is set");
        assert!(verifies(&packet[..20]));
    }

    #[test]
    fn ipv4_short_ihl_written() {
        let packet = ipv4_with_ihl(v4("192.0.2.1"), v4("192.0.2.2"), 4, &[]);
        assert_eq!(packet[0], 0x44);
        assert_eq!(packet.len(), 20);
    }

    #[test]
    fn udp_checksum_verifies_v4() {
        let src = IpAddr::V4(v4("192.0.2.1"));
        let dst = IpAddr::V4(v4("198.51.100.2"));
        let datagram = udp(src, dst, 1234, 53, b"hello");
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&v4("192.0.2.1").octets());
        pseudo.extend_from_slice(&v4("198.51.100.2").octets());
        pseudo.extend_from_slice(&[0, IPPROTO_UDP, 0, 13]);
        pseudo.extend_from_slice(&datagram);
        assert!(verifies(&pseudo));
        assert_eq!(u16::from_be_bytes([datagram[4], datagram[5]]), 13);
    }

    #[test]
    fn tcp_checksum_verifies_v6() {
        let src = v6("2001:db8::1");
        let dst = v6("2001:db8::2");
        let segment = tcp(src.into(), dst.into(), 1234, 443, TCP_SYN, &[]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&[0, 0, 0, 20, 0, 0, 0, IPPROTO_TCP]);
        pseudo.extend_from_slice(&segment);
        assert!(verifies(&pseudo));
        assert_eq!(segment[13], TCP_SYN);
    }

    #[test]
    fn ethernet_tag_layout() {
        let untagged = ethernet(DST_MAC, SRC_MAC, VlanTags::None, ETHERTYPE_IPV4, &[]);
        assert_eq!(untagged.len(), 14);
        assert_eq!(&untagged[12..14], &[0x08, 0x00]);

        let single = ethernet(
            DST_MAC,
            SRC_MAC,
            VlanTags::Single { vid: 100 },
            ETHERTYPE_IPV4,
            &[],
        );
        assert_eq!(&single[12..18], &[0x81, 0x00, 0x00, 100, 0x08, 0x00]);

        let double = ethernet(
            DST_MAC,
            SRC_MAC,
            VlanTags::Double {
                outer: 0x123,
                inner: 7,
            },
            ETHERTYPE_IPV6,
            &[],
        );
        assert_eq!(
            &double[12..22],
            &[0x88, 0xa8, 0x01, 0x23, 0x81, 0x00, 0x00, 7, 0x86, 0xdd]
        );
    }

    #[test]
    fn ipv6_extension_chain() {
        let header = Ipv6Header::new(v6("2001:db8::1"), v6("2001:db8::2"))
            .with_extension(ExtensionHeader::HopByHop)
            .with_extension(ExtensionHeader::DestinationOptions);
        let packet = header.build(IPPROTO_UDP, &[0; 8]);
        assert_eq!(packet.len(), 40 + 16 + 8);
        assert_eq!(u16::from_be_bytes([packet[4], packet[5]]), 24);
        assert_eq!(packet[6], IPPROTO_HOPOPTS);
        assert_eq!(
            packet[40], IPPROTO_DSTOPTS,
            "hop-by-hop points to dest options"
        );
        assert_eq!(packet[48], IPPROTO_UDP, "dest options point to UDP");
    }

    #[test]
    fn neighbour_solicitation_layout() {
        let src = v6("fe80::1");
        let target = v6("2001:db8::abcd:1234");
        let packet = neighbour_solicitation(SRC_MAC, src, target);
        let dst = solicited_node_address(target);
        assert_eq!(dst, v6("ff02::1:ffcd:1234"));
        assert_eq!(multicast_mac(dst), [0x33, 0x33, 0xff, 0xcd, 0x12, 0x34]);
        assert_eq!(packet[6], IPPROTO_ICMPV6);
        assert_eq!(packet[7], 255);
        assert_eq!(packet[40], 135);

        let message = &packet[40..];
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&(message.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, IPPROTO_ICMPV6]);
        pseudo.extend_from_slice(message);
        assert!(verifies(&pseudo));
    }

    #[test]
    fn arp_reply_layout() {
        let packet = arp_reply(SRC_MAC, v4("192.0.2.1"), DST_MAC, v4("192.0.2.2"));
        assert_eq!(packet.len(), 28);
        assert_eq!(&packet[6..8], &[0, 2]);
        assert_eq!(&packet[8..14], &SRC_MAC);
        assert_eq!(&packet[24..28], &[192, 0, 2, 2]);
    }

    #[test]
    fn ip_source_through_tags() {
        let src: IpAddr = "203.0.113.9".parse().unwrap();
        let dst: IpAddr = "10.0.0.1".parse().unwrap();
        for tags in [
            VlanTags::None,
            VlanTags::Single { vid: 5 },
            VlanTags::Double { outer: 6, inner: 5 },
        ] {
            let frame = Link::new(SRC_MAC, DST_MAC)
                .with_tags(tags)
                .udp(src, dst, b"");
            assert_eq!(ip_source(&frame), Some(src), "tags {tags:?}");
        }
        let src6: IpAddr = "2001:db8::9".parse().unwrap();
        let frame = Link::new(SRC_MAC, DST_MAC).udp(src6, "fd00::1".parse().unwrap(), b"");
        assert_eq!(ip_source(&frame), Some(src6));
    }

    #[test]
    fn ip_source_rejects_short_and_arp() {
        let frame = Link::new(SRC_MAC, DST_MAC).udp(
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            b"",
        );
        assert_eq!(ip_source(&truncated(&frame, 14 + 15)), None);
        let arp_frame = Link::new(SRC_MAC, DST_MAC).frame(
            ETHERTYPE_ARP,
            &arp_request(SRC_MAC, v4("192.0.2.1"), v4("192.0.2.2")),
        );
        assert_eq!(ip_source(&arp_frame), None);
    }

    #[test]
    fn truncated_cuts_at_any_byte() {
        let frame = Link::new(SRC_MAC, DST_MAC).frame(ETHERTYPE_IPV4, &[1, 2, 3]);
        for len in 0..=frame.len() {
            assert_eq!(truncated(&frame, len), frame[..len]);
        }
        assert_eq!(truncated(&frame, 1000), frame);
    }
}
