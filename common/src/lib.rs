//! Types shared by the XDP program and the agent.
//!
//! This crate is the single source of truth for map names, sizes, flag values
//! and the layout of every key and value that crosses the kernel boundary.
//! Every shared struct is `#[repr(C)]` without implicit padding, and its size
//! is asserted at compile time so that both sides agree byte for byte.
#![no_std]

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

    pub const ALL: [&str; 9] = [
        HOSTS_V4,
        HOSTS_V6,
        PREFIXES_V4,
        PREFIXES_V6,
        COVER_V4,
        CLASSES,
        CONTROL,
        CLASS_COUNTERS,
        PATH_COUNTERS,
    ];
}

/// Name of the XDP program in the ELF object.
pub const XDP_PROGRAM: &str = "intelwall";

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
}

pub const CONTROL_SLOTS: u32 = 2;

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

/// Index into the class table for a class in a generation.
pub const fn class_slot(generation: u32, class: u32) -> u32 {
    (generation & 1) * MAX_CLASSES + class
}

const _: () = assert!(core::mem::size_of::<ClassEntry>() == 8);
const _: () = assert!(core::mem::size_of::<Counter>() == 16);
const _: () = assert!(GENERATIONS == 2);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are #[repr(C)] structs of plain integers without padding,
    // so every byte pattern is a valid value.
    unsafe impl aya::Pod for super::ClassEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counter {}
}
