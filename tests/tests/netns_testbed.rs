//! Checks the testbed, sender and receiver on their own, with no XDP program
//! attached: every IP frame sent must arrive, whatever its shape, so that a
//! missing frame in the agent's tests can only be the program's doing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use intelwall_tests::netns::{Testbed, require_root};
use intelwall_tests::packet::{
    ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ExtensionHeader, IPPROTO_TCP, IPPROTO_UDP,
    Ipv4Header, Ipv6Header, Link, TCP_SYN, VlanTags, arp_request, ipv4_with_ihl, multicast_mac,
    neighbour_solicitation, solicited_node_address, tcp, udp,
};
use intelwall_tests::traffic::{Expectation, Receiver, check_arrivals, send_frames};

const TAGS: [VlanTags; 3] = [
    VlanTags::None,
    VlanTags::Single { vid: 100 },
    VlanTags::Double {
        outer: 200,
        inner: 100,
    },
];

fn v4(text: &str) -> Ipv4Addr {
    text.parse().expect("valid IPv4 literal")
}

fn v6(text: &str) -> Ipv6Addr {
    text.parse().expect("valid IPv6 literal")
}

/// Frames of every shape the builders make, from one source per shape.
fn frames_by_source(
    link: Link,
    dst4: Ipv4Addr,
    dst6: Ipv6Addr,
) -> Vec<(IpAddr, &'static str, Vec<u8>)> {
    let mut frames = Vec::new();
    for (index, tags) in TAGS.into_iter().enumerate() {
        let link = link.with_tags(tags);
        let src4 = IpAddr::V4(v4(&format!("192.0.2.{}", 10 + index)));
        let src6 = IpAddr::V6(v6(&format!("2001:db8::{}", 10 + index)));
        frames.push((src4, "udp v4", link.udp(src4, dst4.into(), b"testbed")));
        frames.push((src6, "udp v6", link.udp(src6, dst6.into(), b"testbed")));
    }

    let src = v4("192.0.2.20");
    let datagram = udp(src.into(), dst4.into(), 1, 2, b"options");
    let packet = Ipv4Header::new(src, dst4, IPPROTO_UDP)
        .with_options(&[1; 40])
        .build(&datagram);
    frames.push((
        src.into(),
        "ipv4 ihl 15",
        link.frame(ETHERTYPE_IPV4, &packet),
    ));

    let src = v4("192.0.2.21");
    let packet = Ipv4Header::new(src, dst4, IPPROTO_UDP)
        .fragment(100, true)
        .build(&[0; 64]);
    frames.push((
        src.into(),
        "non-first fragment",
        link.frame(ETHERTYPE_IPV4, &packet),
    ));

    let src = v4("192.0.2.22");
    let segment = tcp(src.into(), dst4.into(), 40000, 80, TCP_SYN, &[]);
    let packet = Ipv4Header::new(src, dst4, IPPROTO_TCP).build(&segment);
    frames.push((src.into(), "tcp syn", link.frame(ETHERTYPE_IPV4, &packet)));

    let src = v4("192.0.2.23");
    let packet = ipv4_with_ihl(src, dst4, 4, b"bad");
    frames.push((
        src.into(),
        "ipv4 ihl 4",
        link.frame(ETHERTYPE_IPV4, &packet),
    ));

    let src = v6("2001:db8::20");
    let datagram = udp(src.into(), dst6.into(), 1, 2, b"extensions");
    let packet = Ipv6Header::new(src, dst6)
        .with_extension(ExtensionHeader::HopByHop)
        .with_extension(ExtensionHeader::DestinationOptions)
        .build(IPPROTO_UDP, &datagram);
    frames.push((
        src.into(),
        "ipv6 ext headers",
        link.frame(ETHERTYPE_IPV6, &packet),
    ));

    let src = v6("2001:db8::21");
    let packet = neighbour_solicitation(link.src, src, dst6);
    let multicast = Link {
        dst: multicast_mac(solicited_node_address(dst6)),
        ..link
    };
    frames.push((
        src.into(),
        "neighbour solicitation",
        multicast.frame(ETHERTYPE_IPV6, &packet),
    ));
    frames
}

#[test]
fn testbed_passes_every_frame() {
    if !require_root() {
        return;
    }
    const COPIES: u64 = 20;
    let testbed = Testbed::new().expect("create testbed");
    let sender = testbed.sender();
    let receiver = testbed.receiver();
    let link = Link::new(sender.mac, receiver.mac);
    let shapes = frames_by_source(link, receiver.ipv4, receiver.ipv6);

    let mut frames = Vec::new();
    for _ in 0..COPIES {
        frames.extend(shapes.iter().map(|(_, _, frame)| frame.clone()));
        // Frames without an IP header must not disturb the counts.
        let arp = arp_request(sender.mac, sender.ipv4, receiver.ipv4);
        frames.push(Link::new(sender.mac, [0xff; 6]).frame(ETHERTYPE_ARP, &arp));
    }

    let counting = Receiver::start(&receiver.netns, &receiver.interface).expect("start receiver");
    send_frames(&sender.netns, &sender.interface, frames).expect("send frames");
    let arrived = counting.finish().expect("receive frames");

    let expectations: Vec<Expectation> = shapes
        .iter()
        .map(|(source, label, _)| Expectation {
            source: *source,
            label: (*label).to_owned(),
            sent: COPIES,
            expected: COPIES,
        })
        .collect();
    if let Err(report) = check_arrivals(&expectations, &arrived) {
        panic!("{report}");
    }
}

#[test]
fn testbed_jumbo_mtu() {
    if !require_root() {
        return;
    }
    let testbed = Testbed::with_mtu(Some(9000)).expect("create testbed with MTU 9000");
    let sender = testbed.sender();
    let receiver = testbed.receiver();
    let source = IpAddr::V4(v4("198.51.100.1"));
    let frame =
        Link::new(sender.mac, receiver.mac).udp(source, receiver.ipv4.into(), &[0xab; 8000]);

    let counting = Receiver::start(&receiver.netns, &receiver.interface).expect("start receiver");
    send_frames(&sender.netns, &sender.interface, vec![frame; 5]).expect("send jumbo frames");
    let arrived = counting.finish().expect("receive frames");
    assert_eq!(
        arrived.get(&source).copied(),
        Some(5),
        "all jumbo frames arrive: {arrived:?}"
    );
}

#[test]
fn testbed_names_unique() {
    if !require_root() {
        return;
    }
    let first = Testbed::new().expect("create first testbed");
    let second = Testbed::new().expect("create second testbed");
    assert_ne!(first.sender().netns, second.sender().netns);
    assert_ne!(first.receiver().netns, second.receiver().netns);
    let names = [first.sender().netns.clone(), first.receiver().netns.clone()];
    drop(first);
    let listed = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run ip netns list");
    let listed = String::from_utf8_lossy(&listed.stdout);
    for name in names {
        assert!(
            !listed.contains(&name),
            "namespace {name} remains after drop"
        );
    }
}
