//! Per-packet cost inside the kernel, through BPF_PROG_TEST_RUN: one frame
//! repeated many times (warm caches), and many distinct frames run once each
//! (cold lookups).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Result, bail};
use intelwall::compile::MapImage;
use intelwall::dataplane::Dataplane;
use intelwall::pipeline::Loaded;
use intelwall_tests::packet::{Link, VlanTags};

use crate::bpf::{self, XDP_DROP};
use crate::feedgen::{self, MixedFeed};
use crate::peers::XdpFilter;
use crate::stats::Summary;
use crate::subject::{self, RULE_COUNTS};

const XDP_PASS: u32 = 2;
const SENDER_MAC: [u8; 6] = [0x02, 0x69, 0x77, 0, 0, 1];
const RECEIVER_MAC: [u8; 6] = [0x02, 0x69, 0x77, 0, 0, 2];
const DESTINATION_V4: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
const DESTINATION_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x199, 0, 0, 0, 0, 0, 2);
/// UDP payload that makes an IPv4 frame 60 bytes, the Ethernet minimum
/// without FCS.
const PAYLOAD: [u8; 18] = [0; 18];
/// Rule count whose dataplane the cold lookups use.
const COLD_RULES: usize = 32;

/// How much of each measurement to do.
#[derive(Clone, Copy, Debug)]
pub struct KernelSettings {
    pub repeat: u32,
    pub runs: usize,
    pub cold_frames: usize,
    pub cold_runs: usize,
}

/// One per-packet case: a frame and the verdict intelwall must reach.
pub struct Case {
    pub name: &'static str,
    pub frame: Vec<u8>,
    pub drops: bool,
    /// Whether xdp-filter can match it; it has no prefix matching.
    pub xdp_filter_matches: bool,
}

/// Builds a UDP frame from `source` to the testbed receiver.
pub fn frame_from(source: IpAddr, tags: VlanTags) -> Vec<u8> {
    let destination = match source {
        IpAddr::V4(_) => IpAddr::V4(DESTINATION_V4),
        IpAddr::V6(_) => IpAddr::V6(DESTINATION_V6),
    };
    Link::new(SENDER_MAC, RECEIVER_MAC)
        .with_tags(tags)
        .udp(source, destination, &PAYLOAD)
}

pub fn cases() -> Vec<Case> {
    let case = |name, source: IpAddr, tags, drops, xdp_filter_matches| Case {
        name,
        frame: frame_from(source, tags),
        drops,
        xdp_filter_matches,
    };
    vec![
        case(
            "IPv4 host hit",
            feedgen::HIT_V4_HOST.into(),
            VlanTags::None,
            true,
            true,
        ),
        case(
            "IPv4 prefix hit",
            feedgen::HIT_V4_IN_PREFIX.into(),
            VlanTags::None,
            true,
            false,
        ),
        case(
            "IPv6 host hit",
            feedgen::HIT_V6_HOST.into(),
            VlanTags::None,
            true,
            true,
        ),
        case(
            "IPv6 prefix hit",
            feedgen::HIT_V6_IN_PREFIX.into(),
            VlanTags::None,
            true,
            false,
        ),
        case(
            "IPv4 miss",
            feedgen::MISS_V4.into(),
            VlanTags::None,
            false,
            true,
        ),
        case(
            "802.1Q-tagged IPv4 host hit",
            feedgen::HIT_V4_HOST.into(),
            VlanTags::Single { vid: 100 },
            true,
            true,
        ),
    ]
}

/// Per-packet cost of one case at one feed size.
pub struct CostRow {
    pub case: &'static str,
    pub floor: Summary,
    pub xdp_filter: Option<Summary>,
    /// One summary per entry of [`RULE_COUNTS`].
    pub intelwall: Vec<Summary>,
}

pub struct CostTable {
    pub indicators: usize,
    pub xdp_filter_entries: usize,
    pub xdp_filter_capacity: usize,
    pub rows: Vec<CostRow>,
}

/// Cold lookups at one feed size, in ns per packet.
pub struct ColdRow {
    pub indicators: usize,
    pub kind: &'static str,
    pub frames: usize,
    pub floor: Summary,
    pub intelwall: Summary,
    /// intelwall minus the floor, run by run.
    pub net: Summary,
}

/// Everything measured at one feed size.
pub struct SizeResult {
    pub costs: Option<CostTable>,
    pub cold: Vec<ColdRow>,
}

/// Measures one feed size: the per-packet cases at every rule count when
/// `with_costs`, and the cold lookups with [`COLD_RULES`] rules.
pub fn measure_size(
    loaded: &Loaded,
    feed: &MixedFeed,
    settings: &KernelSettings,
    floor: &OwnedFd,
    with_costs: bool,
) -> Result<SizeResult> {
    let cases = cases();
    let xdp_filter = if with_costs {
        Some(XdpFilter::load(
            &[feedgen::HIT_V4_HOST.into(), feedgen::HIT_V6_HOST.into()],
            feed.indicators,
            &feed.sample_v4_hosts,
            &feed.sample_v6_hosts,
        )?)
    } else {
        None
    };
    // Every rule count's dataplane stays loaded, so that the runs below can
    // interleave them and the machine's drift falls on all alike.
    let mut dataplanes = Vec::new();
    let mut cold_frames = None;
    for rules in RULE_COUNTS {
        if !with_costs && rules != COLD_RULES {
            continue;
        }
        eprintln!("  {} indicators, {rules} rules", feed.indicators);
        let compiled = subject::recompile(loaded, rules)?;
        let (dataplane, _) = subject::dataplane(&compiled)?;
        if rules == COLD_RULES {
            let index = ImageIndex::new(&compiled.image);
            cold_frames = Some([
                cold_hit_frames(&index, feed, settings.cold_frames),
                cold_miss_frames(&index, settings.cold_frames),
            ]);
        }
        dataplanes.push((rules, dataplane));
    }

    let mut floor_samples = vec![Vec::new(); cases.len()];
    let mut filter_samples = vec![Vec::new(); cases.len()];
    let mut intelwall = vec![Vec::new(); cases.len()];
    if with_costs {
        for (_, dataplane) in &mut dataplanes {
            // A first run outside the figures takes the new program's first
            // touches of its code and maps out of the measurement.
            dataplane.time_run(&cases[0].frame, settings.repeat)?;
        }
        for (index, case) in cases.iter().enumerate() {
            let mut samples = vec![Vec::with_capacity(settings.runs); dataplanes.len()];
            for (_, dataplane) in &mut dataplanes {
                check_verdicts(dataplane, floor, xdp_filter.as_ref(), case)?;
            }
            for _ in 0..settings.runs {
                floor_samples[index].push(time_raw(floor, &case.frame, settings.repeat)?);
                if let (Some(filter), true) = (&xdp_filter, case.xdp_filter_matches) {
                    let nanos = time_raw(&filter.program, &case.frame, settings.repeat)?;
                    filter_samples[index].push(nanos);
                }
                for ((_, dataplane), samples) in dataplanes.iter_mut().zip(&mut samples) {
                    let duration = dataplane.time_run(&case.frame, settings.repeat)?;
                    samples.push(duration.as_nanos() as f64);
                }
            }
            intelwall[index] = samples.iter().map(|runs| Summary::of(runs)).collect();
        }
    }

    let (_, cold_dataplane) = dataplanes
        .iter_mut()
        .find(|(rules, _)| *rules == COLD_RULES)
        .expect("the cold rule count is always loaded");
    let frames = cold_frames.expect("built with the cold dataplane");
    let cold = measure_cold(cold_dataplane, floor, feed.indicators, frames, settings)?;
    let costs = xdp_filter.map(|filter| CostTable {
        indicators: feed.indicators,
        xdp_filter_entries: filter.entries,
        xdp_filter_capacity: filter.capacity,
        rows: cases
            .iter()
            .enumerate()
            .map(|(index, case)| CostRow {
                case: case.name,
                floor: Summary::of(&floor_samples[index]),
                xdp_filter: (!filter_samples[index].is_empty())
                    .then(|| Summary::of(&filter_samples[index])),
                intelwall: intelwall[index].clone(),
            })
            .collect(),
    });
    Ok(SizeResult { costs, cold })
}

/// Fails unless every program returns the expected action for `case`, so
/// that no figure comes from a path other than the one it is labelled with.
fn check_verdicts(
    dataplane: &mut Dataplane,
    floor: &OwnedFd,
    xdp_filter: Option<&XdpFilter>,
    case: &Case,
) -> Result<()> {
    let expected = if case.drops { XDP_DROP } else { XDP_PASS };
    let action = dataplane.test_run(&case.frame)?;
    if action != expected {
        bail!(
            "intelwall returned action {action} for `{}`, expected {expected}",
            case.name
        );
    }
    let action = bpf::test_run(floor.as_fd(), &case.frame, 1)?.action;
    if action != XDP_DROP {
        bail!("the floor program returned action {action}, expected {XDP_DROP}");
    }
    if let (Some(filter), true) = (xdp_filter, case.xdp_filter_matches) {
        let action = bpf::test_run(filter.program.as_fd(), &case.frame, 1)?.action;
        if action != expected {
            bail!(
                "xdp-filter returned action {action} for `{}`, expected {expected}",
                case.name
            );
        }
    }
    Ok(())
}

fn time_raw(program: &OwnedFd, frame: &[u8], repeat: u32) -> Result<f64> {
    Ok(f64::from(
        bpf::test_run(program.as_fd(), frame, repeat)?.nanos,
    ))
}

/// Runs every frame of a large set of distinct sources once (repeat 1), so
/// that each lookup touches map memory that the previous one did not. The
/// kernel times each run itself, which leaves out the syscall, but a single
/// timed run still contains the harness's fixed cost (two clock reads, the
/// frame setup). The floor program run over the same frames the same way
/// measures that cost, and the difference is intelwall's own.
fn measure_cold(
    dataplane: &mut Dataplane,
    floor: &OwnedFd,
    indicators: usize,
    [hits, misses]: [Vec<Vec<u8>>; 2],
    settings: &KernelSettings,
) -> Result<Vec<ColdRow>> {
    let mut rows = Vec::new();
    for (kind, frames) in [("hit", hits), ("miss", misses)] {
        if frames.is_empty() {
            bail!("no frames for cold {kind}s");
        }
        let mut floor_runs = Vec::new();
        let mut intelwall_runs = Vec::new();
        let mut net_runs = Vec::new();
        for _ in 0..settings.cold_runs {
            let mut floor_total = 0u64;
            for frame in &frames {
                floor_total += u64::from(bpf::test_run(floor.as_fd(), frame, 1)?.nanos);
            }
            let mut intelwall_total = 0u64;
            for frame in &frames {
                intelwall_total += dataplane.time_run(frame, 1)?.as_nanos() as u64;
            }
            let count = frames.len() as f64;
            let floor_each = floor_total as f64 / count;
            let intelwall_each = intelwall_total as f64 / count;
            floor_runs.push(floor_each);
            intelwall_runs.push(intelwall_each);
            net_runs.push(intelwall_each - floor_each);
        }
        rows.push(ColdRow {
            indicators,
            kind,
            frames: frames.len(),
            floor: Summary::of(&floor_runs),
            intelwall: Summary::of(&intelwall_runs),
            net: Summary::of(&net_runs),
        });
    }
    Ok(rows)
}

/// Frames from the feed's sampled indicators that have an entry in the image
/// (a hit in the maps, whatever the verdict), kinds in the feed's
/// proportions, shuffled so that consecutive frames share no cache lines.
fn cold_hit_frames(index: &ImageIndex, feed: &MixedFeed, count: usize) -> Vec<Vec<u8>> {
    let mut sources: Vec<IpAddr> = Vec::with_capacity(count);
    sources.extend(feed.sample_v4_hosts.iter().map(|a| IpAddr::V4(*a)));
    sources.extend(feed.sample_v6_hosts.iter().map(|a| IpAddr::V6(*a)));
    sources.extend(feed.sample_in_prefixes.iter().copied());
    let mut rng = fastrand::Rng::with_seed(7);
    rng.shuffle(&mut sources);
    sources.retain(|source| index.class(*source) != 0);
    sources.truncate(count);
    sources
        .into_iter()
        .map(|source| frame_from(source, VlanTags::None))
        .collect()
}

/// Frames from random public IPv4 addresses that no map entry covers in
/// the image. They spread over every /16 as real traffic does, so with a large
/// feed most of them pass the /16 cover check and miss in the host hash.
fn cold_miss_frames(index: &ImageIndex, count: usize) -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(11);
    let mut frames = Vec::with_capacity(count);
    while frames.len() < count {
        let address = Ipv4Addr::from(rng.u32(..));
        if feedgen::is_public_v4(address) && index.class(address.into()) == 0 {
            frames.push(frame_from(address.into(), VlanTags::None));
        }
    }
    frames
}

/// Hash sets over a map image, so that sorting a few hundred thousand
/// addresses into hits and misses does not scan the image for each one.
struct ImageIndex {
    hosts_v4: HashMap<[u8; 4], u32>,
    hosts_v6: HashMap<[u8; 16], u32>,
    prefixes_v4: HashMap<(u8, [u8; 4]), u32>,
    prefixes_v6: HashMap<(u8, [u8; 16]), u32>,
}

impl ImageIndex {
    fn new(image: &MapImage) -> ImageIndex {
        ImageIndex {
            hosts_v4: image.hosts_v4.iter().copied().collect(),
            hosts_v6: image.hosts_v6.iter().copied().collect(),
            prefixes_v4: image
                .prefixes_v4
                .iter()
                .map(|(len, network, class)| ((*len, *network), *class))
                .collect(),
            prefixes_v6: image
                .prefixes_v6
                .iter()
                .map(|(len, network, class)| ((*len, *network), *class))
                .collect(),
        }
    }

    /// Returns the class the kernel finds for `address`: its host entry,
    /// else its longest listed prefix, else 0.
    fn class(&self, address: IpAddr) -> u32 {
        match address {
            IpAddr::V4(address) => {
                let octets = address.octets();
                self.hosts_v4
                    .get(&octets)
                    .copied()
                    .unwrap_or_else(|| longest(&self.prefixes_v4, octets))
            }
            IpAddr::V6(address) => {
                let octets = address.octets();
                self.hosts_v6
                    .get(&octets)
                    .copied()
                    .unwrap_or_else(|| longest(&self.prefixes_v6, octets))
            }
        }
    }
}

fn longest<const N: usize>(prefixes: &HashMap<(u8, [u8; N]), u32>, address: [u8; N]) -> u32 {
    let bits = (N * 8) as u8;
    (0..=bits)
        .rev()
        .find_map(|len| prefixes.get(&(len, masked(address, len))).copied())
        .unwrap_or(0)
}

fn masked<const N: usize>(mut address: [u8; N], len: u8) -> [u8; N] {
    for (index, byte) in address.iter_mut().enumerate() {
        let start = index * 8;
        let keep = usize::from(len).saturating_sub(start).min(8);
        *byte &= (0xff_u16 << (8 - keep)) as u8;
    }
    address
}
