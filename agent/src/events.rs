//! Sampled events: which rules log, how the kernel samples them, and how
//! the agent turns the ring buffer's records into JSON lines.
//!
//! The kernel works per class, so a class record carries a bitmask of the
//! log rules that match it (at most [`MAX_LOG_RULES`]). Each log rule has a
//! slot; a rule keeps its slot across reloads as long as it logs, so an
//! event read just after a reload is still named after the right rule.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use intelwall_common::{Event, Fate, LogRule, MAX_LOG_RULES};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::compile::Compiled;
use crate::config::{Action, Config};
use crate::dataplane::{ClassExtra, ClassExtras};

const IPPROTO_HOP_BY_HOP: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AUTH: u8 = 51;
const IPPROTO_DESTINATION_OPTIONS: u8 = 60;
const IPPROTO_SCTP: u8 = 132;

/// The rule in each log slot, by name; `None` for a free slot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSlots(pub Vec<Option<String>>);

/// A log rule as an event names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRuleInfo {
    pub name: String,
    pub action: Action,
}

/// The log slots, sampling settings and class extras of one compilation.
#[derive(Clone, Debug, Default)]
pub struct Observation {
    pub slots: LogSlots,
    /// Per slot, the rule it names.
    pub rules: Vec<Option<LogRuleInfo>>,
    /// Per slot, the sampling the kernel applies.
    pub settings: Vec<LogRule>,
    pub extras: ClassExtras,
    /// Rules that log but found no free slot.
    pub unlogged: Vec<String>,
}

impl Observation {
    /// Assigns log slots (keeping those of `previous`) and computes every
    /// class's extras. With `logging` off no class names a log rule, so the
    /// kernel does no sampling work at all.
    pub fn new(
        compiled: &Compiled,
        config: &Config,
        previous: &LogSlots,
        logging: bool,
    ) -> Observation {
        let cpus = online_cpus();
        let logging_rules: Vec<(&str, Action, crate::config::Sampling)> = config
            .rules
            .iter()
            .filter(|_| logging)
            .filter_map(|rule| {
                rule.sampling()
                    .map(|sampling| (rule.name.as_str(), rule.action, sampling))
            })
            .collect();
        let mut slots: Vec<Option<String>> = previous
            .0
            .iter()
            .map(|name| {
                name.clone()
                    .filter(|name| logging_rules.iter().any(|(known, _, _)| known == name))
            })
            .collect();
        slots.resize(MAX_LOG_RULES as usize, None);
        let mut unlogged = Vec::new();
        for (name, _, _) in &logging_rules {
            if slots.iter().any(|slot| slot.as_deref() == Some(name)) {
                continue;
            }
            match slots.iter_mut().find(|slot| slot.is_none()) {
                Some(free) => *free = Some((*name).to_owned()),
                None => unlogged.push((*name).to_owned()),
            }
        }
        let mut rules = vec![None; MAX_LOG_RULES as usize];
        let mut settings = vec![LogRule::default(); MAX_LOG_RULES as usize];
        for (slot, name) in slots.iter().enumerate() {
            let Some(name) = name else { continue };
            let Some((_, action, sampling)) =
                logging_rules.iter().find(|(known, _, _)| known == name)
            else {
                continue;
            };
            rules[slot] = Some(LogRuleInfo {
                name: name.clone(),
                action: *action,
            });
            settings[slot] = LogRule {
                sample_every: sampling.every,
                rate_per_cpu: sampling
                    .per_second
                    .map_or(0, |rate| rate.div_ceil(cpus).max(1)),
            };
        }
        let extras = class_extras(compiled, config, &slots);
        Observation {
            slots: LogSlots(slots),
            rules,
            settings,
            extras,
            unlogged,
        }
    }
}

/// Per class: the log rules it matches and, for a tag verdict, the DSCP of
/// the deciding rule.
fn class_extras(compiled: &Compiled, config: &Config, slots: &[Option<String>]) -> ClassExtras {
    let rule_config = |index: usize| {
        let name = &compiled.rules[index].name;
        config.rules.iter().find(|rule| &rule.name == name)
    };
    let log_bit = |index: usize| {
        let name = &compiled.rules[index].name;
        slots
            .iter()
            .position(|slot| slot.as_deref() == Some(name.as_str()))
            .map_or(0, |slot| 1u32 << slot)
    };
    ClassExtras(
        compiled
            .verdicts
            .iter()
            .map(|verdict| ClassExtra {
                log_rules: verdict
                    .matched
                    .iter()
                    .fold(0, |bits, &rule| bits | log_bit(rule)),
                dscp: match (verdict.fate, verdict.decided_by) {
                    (Fate::Tag, Some(rule)) => rule_config(rule).and_then(|rule| rule.dscp),
                    _ => None,
                },
            })
            .collect(),
    )
}

fn online_cpus() -> u32 {
    aya::util::online_cpus()
        .map_or(1, |cpus| cpus.len() as u32)
        .max(1)
}

/// One event as a JSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// RFC 3339.
    pub time: String,
    pub interface: String,
    pub source: IpAddr,
    pub destination: Option<IpAddr>,
    /// IP protocol number (for IPv6, the one after the extension headers).
    pub protocol: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub source_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub destination_port: Option<u16>,
    /// Frame length in bytes.
    pub length: u32,
    pub rule: String,
    /// The rule's action.
    pub action: String,
    /// The packet's fate: passed, dropped, allowed or tagged.
    pub fate: String,
}

/// The addresses, protocol and ports of a packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub source: Option<IpAddr>,
    pub destination: Option<IpAddr>,
    pub protocol: Option<u8>,
    pub ports: Option<(u16, u16)>,
}

/// Reads a flow from the bytes of a packet starting at its IP header.
pub fn parse_flow(family: u8, headers: &[u8]) -> Flow {
    match family {
        4 => parse_ipv4(headers),
        _ => parse_ipv6(headers),
    }
}

/// IPv4: the header length field gives where the transport header starts,
/// and only a first fragment (or an unfragmented packet) has ports.
fn parse_ipv4(headers: &[u8]) -> Flow {
    let mut flow = Flow::default();
    if headers.len() < 20 {
        return flow;
    }
    let address = |at: usize| {
        IpAddr::V4(Ipv4Addr::new(
            headers[at],
            headers[at + 1],
            headers[at + 2],
            headers[at + 3],
        ))
    };
    flow.source = Some(address(12));
    flow.destination = Some(address(16));
    let protocol = headers[9];
    flow.protocol = Some(protocol);
    let fragment_offset = u16::from_be_bytes([headers[6], headers[7]]) & 0x1fff;
    if fragment_offset == 0 {
        let header_len = usize::from(headers[0] & 0x0f) * 4;
        flow.ports = ports(protocol, headers.get(header_len..));
    }
    flow
}

/// IPv6: follows extension headers to the transport header; a fragment
/// with a non-zero offset has no ports.
fn parse_ipv6(headers: &[u8]) -> Flow {
    let mut flow = Flow::default();
    if headers.len() < 40 {
        return flow;
    }
    let address = |at: usize| {
        let mut octets = [0u8; 16];
        octets.copy_from_slice(&headers[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(octets))
    };
    flow.source = Some(address(8));
    flow.destination = Some(address(24));
    let mut next = headers[6];
    let mut offset = 40;
    loop {
        let Some(header) = headers.get(offset..offset + 4) else {
            flow.protocol = Some(next);
            return flow;
        };
        let len = match next {
            IPPROTO_HOP_BY_HOP | IPPROTO_ROUTING | IPPROTO_DESTINATION_OPTIONS => {
                (usize::from(header[1]) + 1) * 8
            }
            IPPROTO_AUTH => (usize::from(header[1]) + 2) * 4,
            IPPROTO_FRAGMENT => {
                if u16::from_be_bytes([header[2], header[3]]) & 0xfff8 != 0 {
                    flow.protocol = Some(header[0]);
                    return flow;
                }
                8
            }
            _ => break,
        };
        next = header[0];
        offset += len;
    }
    flow.protocol = Some(next);
    flow.ports = ports(next, headers.get(offset..));
    flow
}

fn ports(protocol: u8, transport: Option<&[u8]>) -> Option<(u16, u16)> {
    if !matches!(protocol, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        return None;
    }
    let bytes = transport?.get(..4)?;
    Some((
        u16::from_be_bytes([bytes[0], bytes[1]]),
        u16::from_be_bytes([bytes[2], bytes[3]]),
    ))
}

/// Turns kernel events into records: rule names, interface names and wall
/// clock times.
pub struct Decoder {
    pub rules: Vec<Option<LogRuleInfo>>,
    interfaces: BTreeMap<u32, String>,
}

impl Decoder {
    pub fn new(rules: Vec<Option<LogRuleInfo>>, interfaces: BTreeMap<u32, String>) -> Decoder {
        Decoder { rules, interfaces }
    }

    /// Returns one record per rule that sampled the packet.
    pub fn decode(&self, event: &Event, clock: &Clock) -> Vec<EventRecord> {
        let header_len = usize::from(event.header_len).min(event.headers.len());
        let flow = parse_flow(event.family, &event.headers[..header_len]);
        let Some(source) = flow.source else {
            return Vec::new();
        };
        let interface = self
            .interfaces
            .get(&event.ifindex)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {}", event.ifindex));
        let time = clock.wall_time(event.time_ns).to_string();
        let fate = match Fate::from_u32(u32::from(event.fate)) {
            Some(Fate::Drop) => "dropped",
            Some(Fate::Allow) => "allowed",
            Some(Fate::Tag) => "tagged",
            _ => "passed",
        };
        (0..MAX_LOG_RULES as usize)
            .filter(|slot| event.rules & (1 << slot) != 0)
            .filter_map(|slot| self.rules.get(slot).cloned().flatten())
            .map(|rule| EventRecord {
                time: time.clone(),
                interface: interface.clone(),
                source,
                destination: flow.destination,
                protocol: flow.protocol,
                source_port: flow.ports.map(|(port, _)| port),
                destination_port: flow.ports.map(|(_, port)| port),
                length: event.length,
                rule: rule.name,
                action: rule.action.to_string(),
                fate: fate.to_owned(),
            })
            .collect()
    }
}

/// Converts the kernel's monotonic clock into wall clock time.
pub struct Clock {
    /// Wall clock minus monotonic clock, in nanoseconds.
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Clock {
        let mut monotonic = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into a valid timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut monotonic) };
        let monotonic_ns =
            i128::from(monotonic.tv_sec) * 1_000_000_000 + i128::from(monotonic.tv_nsec);
        Clock {
            offset_ns: Timestamp::now().as_nanosecond() - monotonic_ns,
        }
    }

    pub fn wall_time(&self, monotonic_ns: u64) -> Timestamp {
        Timestamp::from_nanosecond(self.offset_ns + i128::from(monotonic_ns))
            .unwrap_or_else(|_| Timestamp::now())
    }
}

/// The destination of events: stdout for `-`, otherwise a file, appended to.
pub enum Sink {
    Stdout,
    File(std::fs::File),
}

impl Sink {
    pub fn open(path: &Path) -> std::io::Result<Sink> {
        if path == Path::new("-") {
            return Ok(Sink::Stdout);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Sink::File)
    }

    /// Writes records as JSON lines, one write per batch.
    pub fn write(&mut self, records: &[EventRecord]) -> std::io::Result<()> {
        let mut text = Vec::new();
        for record in records {
            serde_json::to_writer(&mut text, record).map_err(std::io::Error::other)?;
            text.push(b'\n');
        }
        match self {
            Sink::Stdout => {
                let mut stdout = std::io::stdout().lock();
                stdout.write_all(&text)?;
                stdout.flush()
            }
            Sink::File(file) => file.write_all(&text),
        }
    }
}

/// A message to the running event reader task.
pub enum ReaderUpdate {
    /// The ring buffer of new maps.
    Ring(aya::maps::Map),
    /// Rule names after a reload.
    Decoder(Decoder),
}

type Ring = aya::maps::RingBuf<aya::maps::MapData>;

/// Starts a task that turns ring buffer records into JSON lines in `sink`
/// and returns where to send it updates. Events are written in batches as
/// the ring buffer signals new data.
pub fn spawn_reader(
    ring: aya::maps::Map,
    decoder: Decoder,
    mut sink: Sink,
) -> anyhow::Result<tokio::sync::mpsc::UnboundedSender<ReaderUpdate>> {
    let mut ring = open_ring(ring)?;
    let (updates, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut decoder = decoder;
        loop {
            tokio::select! {
                update = receiver.recv() => match update {
                    Some(ReaderUpdate::Ring(map)) => {
                        // Drain the old ring first: its last events count too.
                        drain(&mut ring, &decoder, &mut sink);
                        match open_ring(map) {
                            Ok(new) => ring = new,
                            Err(error) => tracing::warn!(error = format!("{error:#}"), "cannot read the new events ring buffer"),
                        }
                    }
                    Some(ReaderUpdate::Decoder(new)) => decoder = new,
                    None => return,
                },
                guard = ring.readable_mut() => {
                    let Ok(mut guard) = guard else { return };
                    guard.clear_ready();
                    drop(guard);
                    drain(&mut ring, &decoder, &mut sink);
                }
            }
        }
    });
    Ok(updates)
}

fn open_ring(map: aya::maps::Map) -> anyhow::Result<tokio::io::unix::AsyncFd<Ring>> {
    let ring = Ring::try_from(map)?;
    // SAFETY: the ring buffer owns its map's descriptor, which stays open
    // and the same until the ring buffer is dropped, and the AsyncFd owns
    // the ring buffer.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|error| anyhow::anyhow!("cannot poll the events ring buffer: {error}"))
}

/// Writes every event the ring buffer holds.
fn drain(ring: &mut tokio::io::unix::AsyncFd<Ring>, decoder: &Decoder, sink: &mut Sink) {
    let clock = Clock::now();
    let mut records = Vec::new();
    let ring = ring.get_mut();
    while let Some(item) = ring.next() {
        if let Some(event) = event_from_bytes(&item) {
            records.extend(decoder.decode(&event, &clock));
        }
    }
    if records.is_empty() {
        return;
    }
    if let Err(error) = sink.write(&records) {
        tracing::warn!(%error, "cannot write events");
    }
}

/// Copies a kernel event out of a ring buffer item.
pub fn event_from_bytes(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < std::mem::size_of::<Event>() {
        return None;
    }
    // SAFETY: the length was checked, Event is plain data valid for any
    // bytes, and read_unaligned makes no alignment assumption.
    Some(unsafe { bytes.as_ptr().cast::<Event>().read_unaligned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(protocol: u8, header_len_words: u8, fragment: u16, rest: &[u8]) -> Vec<u8> {
        let mut header = vec![0u8; usize::from(header_len_words) * 4];
        header[0] = 0x40 | header_len_words;
        header[6..8].copy_from_slice(&fragment.to_be_bytes());
        header[9] = protocol;
        header[12..16].copy_from_slice(&[192, 0, 2, 10]);
        header[16..20].copy_from_slice(&[10, 199, 0, 2]);
        header.extend_from_slice(rest);
        header
    }

    #[test]
    fn ipv4_ports_come_after_the_options() {
        let packet = ipv4(IPPROTO_UDP, 7, 0, &[0x30, 0x39, 0x00, 0x35]);
        let flow = parse_flow(4, &packet);
        assert_eq!(flow.source, Some("192.0.2.10".parse().unwrap()));
        assert_eq!(flow.destination, Some("10.199.0.2".parse().unwrap()));
        assert_eq!(flow.ports, Some((12345, 53)));
    }

    #[test]
    fn later_ipv4_fragments_have_no_ports() {
        let packet = ipv4(IPPROTO_TCP, 5, 185, &[0x30, 0x39, 0x00, 0x35]);
        assert_eq!(parse_flow(4, &packet).ports, None);
        let first = ipv4(IPPROTO_TCP, 5, 0x2000, &[0x30, 0x39, 0x00, 0x35]);
        assert_eq!(parse_flow(4, &first).ports, Some((12345, 53)));
    }

    #[test]
    fn ipv6_ports_behind_extension_headers() {
        let mut packet = vec![0u8; 40];
        packet[0] = 0x60;
        packet[6] = IPPROTO_HOP_BY_HOP;
        packet[8] = 0x20;
        packet[24] = 0x20;
        // Hop-by-hop, 8 bytes, then a first fragment, then UDP.
        packet.extend_from_slice(&[IPPROTO_FRAGMENT, 0, 0, 0, 0, 0, 0, 0]);
        packet.extend_from_slice(&[IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 7]);
        packet.extend_from_slice(&[0x04, 0xd2, 0x00, 0x50]);
        let flow = parse_flow(6, &packet);
        assert_eq!(flow.protocol, Some(IPPROTO_UDP));
        assert_eq!(flow.ports, Some((1234, 80)));
        // The same with a non-zero fragment offset: no ports.
        packet[48 + 2] = 0x01;
        assert_eq!(parse_flow(6, &packet).ports, None);
    }
}
