//! Types shared by the XDP program and the agent.
//!
//! This crate is the single source of truth for map names, sizes, flag values
//! and the layout of every key and value that crosses the kernel boundary.
//! Every shared struct is `#[repr(C)]` without implicit padding, and its size
//! is asserted at compile time so that both sides agree byte for byte.
#![cfg_attr(not(test), no_std)]

/// Map names as they appear in the ELF object and under the pin directory.
pub mod map_name {
    pub const HOSTS_V4: &str = "HOSTS_V4";
    pub const HOSTS_V6: &str = "HOSTS_V6";
    pub const PREFIXES_V4: &str = "PREFIXES_V4";
    pub const PREFIXES_V6: &str = "PREFIXES_V6";
    pub const COVER_V4: &str = "COVER_V4";
    pub const CLASSES: &str = "CLASSES";
    pub const CONTROL: &str = "CONTROL";
    pub const CLASS_COUNTERS: &str = "CLASS_COUNTERS";
    pub const PATH_COUNTERS: &str = "PATH_COUNTERS";
    pub const INTERFACES: &str = "INTERFACES";
    pub const LOG_RULES: &str = "LOG_RULES";
    pub const LOG_STATE: &str = "LOG_STATE";
    pub const EVENTS: &str = "EVENTS";
    pub const TAG_COUNTERS: &str = "TAG_COUNTERS";
    pub const EVENT_COUNTERS: &str = "EVENT_COUNTERS";
    pub const LOG_SCRATCH: &str = "LOG_SCRATCH";

    pub const ALL: [&str; 16] = [
        HOSTS_V4,
        HOSTS_V6,
        PREFIXES_V4,
        PREFIXES_V6,
        COVER_V4,
        CLASSES,
        CONTROL,
        CLASS_COUNTERS,
        PATH_COUNTERS,
        INTERFACES,
        LOG_RULES,
        LOG_STATE,
        EVENTS,
        TAG_COUNTERS,
        EVENT_COUNTERS,
        LOG_SCRATCH,
    ];
}

/// Global of the XDP program: class counters per interface slot in
/// [`map_name::CLASS_COUNTERS`].
pub const CLASS_COUNTERS_PER_SLOT: &str = "CLASS_COUNTERS_PER_SLOT";

/// Name of the XDP program in the ELF object.
pub const XDP_PROGRAM: &str = "intelwall";

/// Name of the TC ingress program that copies a tagged packet's mark from
/// the XDP metadata into the socket buffer.
pub const TAG_PROGRAM: &str = "intelwall_tag";

/// Class ids per generation. A class is one distinct predicate bitmask; class 0
/// is the empty bitmask, the class of every address that no map holds.
pub const MAX_CLASSES: u32 = 65_536;

/// Number of class table generations. The kernel reads the active one while
/// the agent writes the other, then the agent flips [`Control::Generation`].
pub const GENERATIONS: u32 = 2;

/// Class of an address that is in no map.
pub const CLASS_NONE: u32 = 0;

/// Default capacity of the host and prefix maps when the agent has no image
/// to size them from. The agent normally sizes each map from its contents.
pub const DEFAULT_MAP_CAPACITY: u32 = 1024;

/// Entries in [`map_name::COVER_V4`]: one per IPv4 /16.
pub const COVER_V4_ENTRIES: u32 = 1 << 16;

/// Flags in a [`map_name::COVER_V4`] entry. They let the kernel skip a lookup
/// that cannot hit: most addresses fall in a /16 that no indicator touches.
pub mod cover {
    /// Some host entry lies in this /16.
    pub const HOSTS: u8 = 1;
    /// Some prefix entry overlaps this /16.
    pub const PREFIXES: u8 = 2;
}

/// What happens to a packet, as stored in a [`ClassEntry`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fate {
    /// No deciding rule matched: the packet continues to the stack.
    Pass = 0,
    /// A `drop` rule decided.
    Drop = 1,
    /// An `allow` rule decided: the packet passes and later rules are ignored.
    Allow = 2,
    /// A `tag` rule decided: the packet passes carrying the rule's mark.
    Tag = 3,
}

impl Fate {
    pub const fn from_u32(value: u32) -> Option<Fate> {
        match value {
            0 => Some(Fate::Pass),
            1 => Some(Fate::Drop),
            2 => Some(Fate::Allow),
            3 => Some(Fate::Tag),
            _ => None,
        }
    }
}

/// The verdict for every address of one class, precomputed by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassEntry {
    /// A [`Fate`] as `u32`.
    pub fate: u32,
    /// Mark given to tagged packets; zero otherwise.
    pub mark: u32,
}

/// Slots of the [`map_name::CONTROL`] array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Which half of the class table is active: 0 or 1.
    Generation = 0,
    /// The agent's update sequence number, matching its state file once an
    /// update is complete and 0 while one is under way. The XDP program does
    /// not read it.
    Sequence = 1,
    /// Low half of the odd multiplier that hashes an IPv4 address to its
    /// home bucket in [`map_name::HOSTS_V4`], as [`host_table`] describes.
    HostMultiplierLow = 2,
    /// High half of the multiplier.
    HostMultiplierHigh = 3,
    /// 64 minus log2 of the bucket count: the shift that turns the product
    /// into a bucket index. 0 before the agent has set the table up.
    HostShift = 4,
}

pub const CONTROL_SLOTS: u32 = 5;

/// A [`map_name::CLASSES`] element: the verdict the agent compiled for a
/// class, plus what tagging and logging need, so that a packet gets all of it
/// from the one class table read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassRecord {
    /// A [`Fate`] as `u32`.
    pub fate: u32,
    /// Mark given to tagged packets; zero otherwise.
    pub mark: u32,
    /// Bit `i` set: the log rule in slot `i` of [`map_name::LOG_RULES`]
    /// matches this class.
    pub log_rules: u32,
    /// [`record_flags`] bits.
    pub flags: u8,
    /// DSCP written into tagged packets when [`record_flags::DSCP`] is set.
    pub dscp: u8,
    pub _reserved: [u8; 2],
}

impl ClassRecord {
    /// A record that only carries a verdict: no DSCP rewrite, no logging.
    pub const fn from_entry(entry: ClassEntry) -> ClassRecord {
        ClassRecord {
            fate: entry.fate,
            mark: entry.mark,
            log_rules: 0,
            flags: 0,
            dscp: 0,
            _reserved: [0; 2],
        }
    }

    pub const fn entry(&self) -> ClassEntry {
        ClassEntry {
            fate: self.fate,
            mark: self.mark,
        }
    }
}

/// Flags of a [`ClassRecord`].
pub mod record_flags {
    /// Rewrite the DSCP of tagged packets to [`super::ClassRecord::dscp`].
    pub const DSCP: u8 = 1;
}

/// Largest DSCP value (six bits).
pub const MAX_DSCP: u8 = 63;

/// Slots in [`map_name::INTERFACES`]. The program finds its interface's
/// counter slot at `ifindex % INTERFACE_TABLE_ENTRIES`; the entry names the
/// ifindex it belongs to, so a collision is detected, never misattributed.
pub const INTERFACE_TABLE_ENTRIES: u32 = 256;

/// Counter slot of packets from an interface that [`map_name::INTERFACES`]
/// does not name. Configured interfaces use slots 1 and up.
pub const UNNAMED_INTERFACE_SLOT: u32 = 0;

/// A [`map_name::INTERFACES`] element.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InterfaceSlot {
    pub ifindex: u32,
    /// Counter slot: [`map_name::CLASS_COUNTERS`] has one counter per
    /// class id per slot (as many as the agent sized it for),
    /// [`map_name::PATH_COUNTERS`] `PATH_COUNTER_SLOTS`.
    pub slot: u32,
}

/// Rules with logging the class table can name: the width of
/// [`ClassRecord::log_rules`].
pub const MAX_LOG_RULES: u32 = 32;

/// How a log rule samples its matches, a [`map_name::LOG_RULES`] element
/// written by the agent.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRule {
    /// Log one match of every `sample_every`, counted per CPU; 1 logs all,
    /// 0 marks a free slot that logs nothing.
    pub sample_every: u32,
    /// Events a second one CPU may send for this rule; 0 for no limit. The
    /// agent divides the configured rate among the online CPUs.
    pub rate_per_cpu: u32,
}

/// Sampling state of one log rule on one CPU, a [`map_name::LOG_STATE`]
/// element. Only the kernel writes it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// Matches left until the next sampled one.
    pub countdown: u32,
    /// Events already sent in the current second.
    pub sent_this_second: u32,
    /// Start of the current second, in `bpf_ktime_get_ns` time.
    pub second_start_ns: u64,
}

/// Bytes of the [`map_name::EVENTS`] ring buffer (a power of two and a
/// multiple of the page size).
pub const EVENTS_RING_BYTES: u32 = 256 * 1024;

/// Bytes of the packet an event carries, from the start of the IP header:
/// enough for an IPv4 header with the longest options, or an IPv6 header
/// with a few extension headers, plus the ports behind them.
pub const EVENT_HEADER_BYTES: usize = 128;

/// One packet that log rules sampled, written to the [`map_name::EVENTS`]
/// ring buffer. The kernel copies the headers as they are, and the agent
/// reads addresses, protocol and ports from them. So the XDP program has no
/// parser to verify beyond the one that finds the source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns`: CLOCK_MONOTONIC in nanoseconds.
    pub time_ns: u64,
    pub ifindex: u32,
    /// Frame length in bytes.
    pub length: u32,
    /// Bit `i`: the log rule in slot `i` sampled this packet.
    pub rules: u32,
    /// Bytes of `headers` that hold packet data.
    pub header_len: u16,
    /// 4 or 6.
    pub family: u8,
    /// The packet's [`Fate`].
    pub fate: u8,
    /// The packet from the start of its IP header.
    pub headers: [u8; EVENT_HEADER_BYTES],
}

impl Default for Event {
    fn default() -> Self {
        Event {
            time_ns: 0,
            ifindex: 0,
            length: 0,
            rules: 0,
            header_len: 0,
            family: 0,
            fate: 0,
            headers: [0; EVENT_HEADER_BYTES],
        }
    }
}

/// Slots of [`map_name::EVENT_COUNTERS`]; `packets` counts events.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventCounter {
    /// Events written to the ring buffer.
    Sent = 0,
    /// Sampled packets lost because the ring buffer was full.
    Lost = 1,
}

pub const EVENT_COUNTER_SLOTS: u32 = 2;

/// What the XDP program leaves in front of a tagged packet for the TC
/// program. The magic number separates our metadata from other programs'.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TagMeta {
    pub magic: u32,
    pub mark: u32,
}

/// [`TagMeta::magic`]: "iwtg".
pub const TAG_META_MAGIC: u32 = 0x6977_7467;

/// Slots of [`map_name::TAG_COUNTERS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TagCounter {
    /// Tagged packets whose mark was handed to the TC program.
    Marked = 0,
    /// Tagged packets that got no mark: the driver gives XDP no room for
    /// metadata.
    NoMetadata = 1,
    /// Tagged packets whose DSCP was rewritten.
    DscpRewritten = 2,
}

pub const TAG_COUNTER_SLOTS: u32 = 3;

/// Packets and bytes, the value of every per-CPU counter array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// Slots of [`map_name::PATH_COUNTERS`]: the fate of every packet, and why a
/// packet was not inspected.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathCounter {
    /// Inspected, no deciding rule matched.
    Passed = 0,
    Dropped = 1,
    Allowed = 2,
    Tagged = 3,
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    NotIp = 4,
    /// The frame ended before the header being parsed.
    Truncated = 5,
    /// More VLAN tags than the parser follows.
    VlanDepth = 6,
    /// An IPv4 header length below 5 words, or a wrong IP version nibble.
    BadHeader = 7,
    /// IPv6 neighbour discovery (ICMPv6 types 133 to 137), which always
    /// passes so that address resolution keeps working whatever is listed.
    NeighbourDiscovery = 8,
}

pub const PATH_COUNTER_SLOTS: u32 = 9;

impl PathCounter {
    pub const ALL: [PathCounter; PATH_COUNTER_SLOTS as usize] = [
        PathCounter::Passed,
        PathCounter::Dropped,
        PathCounter::Allowed,
        PathCounter::Tagged,
        PathCounter::NotIp,
        PathCounter::Truncated,
        PathCounter::VlanDepth,
        PathCounter::BadHeader,
        PathCounter::NeighbourDiscovery,
    ];

    /// Name used in logs, JSON and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            PathCounter::Passed => "passed",
            PathCounter::Dropped => "dropped",
            PathCounter::Allowed => "allowed",
            PathCounter::Tagged => "tagged",
            PathCounter::NotIp => "not_ip",
            PathCounter::Truncated => "truncated",
            PathCounter::VlanDepth => "vlan_depth",
            PathCounter::BadHeader => "bad_header",
            PathCounter::NeighbourDiscovery => "neighbour_discovery",
        }
    }

    /// Whether the packet was skipped by the parser rather than judged.
    pub const fn is_not_inspected(self) -> bool {
        (self as u32) >= PathCounter::NotIp as u32
    }
}

/// Maximum VLAN tags the parser follows (802.1ad outer plus 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;

/// Layout of [`map_name::HOSTS_V4`]: an open-addressed hash table of IPv4
/// hosts in a memory-mappable BPF array, one 64-byte bucket an element.
///
/// A BPF hash map takes its entries one at a time through bpf(2), which
/// copies and hashes each in the kernel. On the 2-core test machine that
/// cost about half a microsecond of CPU an entry, most of the time it took
/// to load a million addresses. The
/// agent instead writes this table through shared memory, in bucket order.
/// Every change is one aligned 8-byte store, so the XDP program reads an
/// entry either whole or not at all. NOTE: this is true where the JIT loads
/// 8 bytes in one instruction (64-bit hosts). A 32-bit JIT such as arm32
/// splits the load, so an entry rewritten in place could be read torn.
///
/// An address hashes to a home bucket. It sits in the first bucket from
/// there with a free slot, at most [`MAX_PROBE`] buckets on; every bucket it
/// passes carries [`OVERFLOW`] in its header, so a lookup stops at the first
/// bucket without the flag. Removing an entry leaves the flags set: a
/// lookup may look one bucket further than needed, never less.
pub mod host_table {
    /// Entry slots in a bucket, after its header word.
    pub const SLOTS: usize = 7;

    /// Buckets a lookup visits at most, the home bucket included.
    pub const MAX_PROBE: u32 = 8;

    /// Header bit: an entry lies beyond this bucket in its probe sequence.
    pub const OVERFLOW: u64 = 1;

    /// Entries a bucket holds on average when the table is at capacity:
    /// three of seven slots, so that a full bucket is rare and probes past
    /// the next one rarer still.
    pub const ENTRIES_PER_BUCKET: u32 = 3;

    /// Minimum number of buckets in a table.
    pub const MIN_BUCKETS: u32 = 64;

    /// One element of the array: a header word, then the entries. Each
    /// entry has the address in its low half and the class plus one in its
    /// high half. Zero is a free slot. The array of a memory-mappable map
    /// starts on a page, so every bucket fills one 64-byte cache line.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Bucket {
        pub header: u64,
        pub slots: [u64; SLOTS],
    }

    /// Returns the home bucket of `address` (its octets read big-endian):
    /// the top bits of its product with a random odd multiplier. This is
    /// multiply-shift hashing, under which two given addresses share a home
    /// with probability at most 2 / buckets.
    #[inline(always)]
    pub const fn home(address: u32, multiplier: u64, shift: u32) -> u32 {
        ((address as u64).wrapping_mul(multiplier) >> shift) as u32
    }

    #[inline(always)]
    pub const fn entry(address: u32, class: u32) -> u64 {
        address as u64 | ((class as u64 + 1) << 32)
    }

    /// Returns the class in `entry` when the entry is for `address`.
    #[inline(always)]
    pub const fn class_of(entry: u64, address: u32) -> Option<u32> {
        if entry as u32 == address && entry >> 32 != 0 {
            Some((entry >> 32) as u32 - 1)
        } else {
            None
        }
    }

    #[inline(always)]
    pub const fn is_free(entry: u64) -> bool {
        entry >> 32 == 0
    }

    /// Returns the buckets for a table of `entries` at capacity: a power of
    /// two, so that [`home`] needs only a shift.
    pub const fn buckets_for(entries: u32) -> u32 {
        let needed = entries.div_ceil(ENTRIES_PER_BUCKET);
        let buckets = match needed.checked_next_power_of_two() {
            Some(buckets) => buckets,
            None => 1 << 31,
        };
        if buckets < MIN_BUCKETS {
            MIN_BUCKETS
        } else {
            buckets
        }
    }

    /// Returns the array elements of a table of `buckets` home buckets.
    /// The array has [`MAX_PROBE`] - 1 more, so that an address homed in
    /// the last bucket has as many buckets to probe as any other and no
    /// probe wraps around.
    pub const fn elements_for(buckets: u32) -> u32 {
        buckets + (MAX_PROBE - 1)
    }

    /// Returns the home buckets of a table of `elements` array elements,
    /// the inverse of [`elements_for`].
    pub const fn buckets_of(elements: u32) -> u32 {
        elements.saturating_sub(MAX_PROBE - 1)
    }

    /// Returns the entries a table of `elements` array elements is sized
    /// for: [`ENTRIES_PER_BUCKET`] in each home bucket.
    pub const fn capacity_of(elements: u32) -> u32 {
        buckets_of(elements).saturating_mul(ENTRIES_PER_BUCKET)
    }

    /// Returns the shift of [`home`] for `buckets`, a power of two.
    pub const fn shift_for(buckets: u32) -> u32 {
        64 - buckets.trailing_zeros()
    }

    const _: () = assert!(core::mem::size_of::<Bucket>() == 64);
}

/// Index into the class table for a class in a generation.
pub const fn class_slot(generation: u32, class: u32) -> u32 {
    (generation & 1) * MAX_CLASSES + class
}

/// Updates an Internet checksum for one 16-bit word changed from `old` to
/// `new` (RFC 1624, equation 3: HC' = ~(~HC + ~m + m')), so that a header
/// rewrite need not sum the whole header again.
pub const fn incremental_checksum(checksum: u16, old: u16, new: u16) -> u16 {
    let mut sum = (!checksum) as u32 + (!old) as u32 + new as u32;
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

const _: () = assert!(core::mem::size_of::<ClassEntry>() == 8);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(core::mem::size_of::<ClassRecord>() == 16);
const _: () = assert!(core::mem::size_of::<InterfaceSlot>() == 8);
const _: () = assert!(core::mem::size_of::<LogRule>() == 8);
const _: () = assert!(core::mem::size_of::<LogState>() == 16);
const _: () = assert!(core::mem::size_of::<Event>() == 24 + EVENT_HEADER_BYTES);
const _: () = assert!(core::mem::size_of::<TagMeta>() == 8);
const _: () = assert!(MAX_LOG_RULES == u32::BITS);
const _: () = assert!(GENERATIONS == 2);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are #[repr(C)] structs of plain integers without padding,
    // so every byte pattern is a valid value.
    unsafe impl aya::Pod for super::ClassEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::host_table::Bucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: as above; the reserved bytes make the padding explicit.
    unsafe impl aya::Pod for super::ClassRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::InterfaceSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LogRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LogState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
}

#[cfg(test)]
mod tests {
    use super::incremental_checksum;

    /// The checksum a receiver computes: the one's complement of the one's
    /// complement sum of the header with its checksum field zeroed.
    fn full_checksum(header: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for (index, pair) in header.chunks(2).enumerate() {
            if index == 5 {
                continue;
            }
            sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn incremental_update_matches_a_full_sum() {
        let mut header: [u8; 20] = [
            0x45, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0, 0, 192, 0, 2, 10, 10,
            199, 0, 2,
        ];
        let checksum = full_checksum(&header);
        header[10..12].copy_from_slice(&checksum.to_be_bytes());
        for tos in [0x00u8, 0x28, 0xb8, 0xfc, 0xff, 0x01] {
            let old = u16::from_be_bytes([header[0], header[1]]);
            let new = u16::from_be_bytes([header[0], tos]);
            let current = u16::from_be_bytes([header[10], header[11]]);
            let updated = incremental_checksum(current, old, new);
            header[1] = tos;
            header[10..12].copy_from_slice(&updated.to_be_bytes());
            assert_eq!(updated, full_checksum(&header), "tos {tos:#04x}");
        }
    }
}
