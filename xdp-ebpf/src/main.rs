//! The intelwall XDP program.
//!
//! Per packet: parse Ethernet and up to two VLAN tags, take the IPv4 or IPv6
//! source address, find its class (exact host table first, longest-prefix trie
//! on a miss), read the class's precomputed record from the active half of
//! the class table, count per interface, and return the fate. The agent has
//! already evaluated every rule for every class, so the cost per packet does
//! not grow with the number of rules. Frames that cannot be parsed pass
//! untouched and are counted by reason.
//!
//! The same record says what else to do: for a `tag` verdict, rewrite the
//! DSCP when asked and hand the mark to the TC program (`tag.rs`); for a
//! class that log rules match, sample events into the ring buffer (`log.rs`).
#![no_std]
#![no_main]

mod log;
mod parse;
mod rewrite;
mod tag;

use aya_ebpf::{
    Global,
    bindings::{BPF_F_MMAPABLE, xdp_action},
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use intelwall_common::{
    CLASS_NONE, COVER_V4_ENTRIES, ClassRecord, Control, Counter, DEFAULT_MAP_CAPACITY, Fate,
    GENERATIONS, INTERFACE_TABLE_ENTRIES, InterfaceSlot, MAX_CLASSES, PATH_COUNTER_SLOTS,
    PathCounter, TAG_COUNTER_SLOTS, TagCounter, UNNAMED_INTERFACE_SLOT, class_slot, cover,
    host_table::{self, Bucket},
    record_flags,
};

use crate::log::{Packet, log_matches};
use crate::parse::{Parsed, parse_source};
use crate::rewrite::{hand_mark, set_dscp_v4, set_dscp_v6};

/// Buckets of the IPv4 host table (`host_table` in the common crate); the
/// agent sizes the array at load time and writes it through `mmap`.
#[map(name = "HOSTS_V4")]
static HOSTS_V4: Array<Bucket> = Array::with_max_entries(DEFAULT_MAP_CAPACITY, BPF_F_MMAPABLE);

#[map(name = "HOSTS_V6")]
static HOSTS_V6: HashMap<[u8; 16], u32> = HashMap::with_max_entries(DEFAULT_MAP_CAPACITY, 0);

#[map(name = "PREFIXES_V4")]
static PREFIXES_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DEFAULT_MAP_CAPACITY, 0);

#[map(name = "PREFIXES_V6")]
static PREFIXES_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_MAP_CAPACITY, 0);

#[map(name = "COVER_V4")]
static COVER_V4: Array<u8> = Array::with_max_entries(COVER_V4_ENTRIES, 0);

#[map(name = "CLASSES")]
static CLASSES: Array<ClassRecord> = Array::with_max_entries(GENERATIONS * MAX_CLASSES, 0);

#[map(name = "CONTROL")]
static CONTROL: Array<u32> = Array::with_max_entries(intelwall_common::CONTROL_SLOTS, 0);

/// [`CLASS_COUNTERS_PER_SLOT`] counters per interface slot; the agent sets
/// the number of slots at load time (one per configured interface, plus the
/// unnamed slot).
#[map(name = "CLASS_COUNTERS")]
static CLASS_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_CLASSES, 0);

/// Class counters per interface slot, set by the agent at load time from the
/// class ids its image uses (with room for the transitional ids of an
/// update). A per-CPU array allocates every element on its own, so counters
/// for all `MAX_CLASSES` ids would take a tenth of a second to create and
/// 1 MiB a slot on each CPU.
#[unsafe(no_mangle)]
static CLASS_COUNTERS_PER_SLOT: Global<u32> = Global::new(MAX_CLASSES);

/// `PATH_COUNTER_SLOTS` counters per interface slot, sized like
/// CLASS_COUNTERS.
#[map(name = "PATH_COUNTERS")]
static PATH_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(PATH_COUNTER_SLOTS, 0);

#[map(name = "INTERFACES")]
static INTERFACES: Array<InterfaceSlot> = Array::with_max_entries(INTERFACE_TABLE_ENTRIES, 0);

#[map(name = "TAG_COUNTERS")]
static TAG_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(TAG_COUNTER_SLOTS, 0);

#[xdp]
pub fn intelwall(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u32;
    let slot = interface_slot(&ctx);
    let (class, family, l3) = match parse_source(&ctx) {
        Parsed::V4(addr, l3) => (lookup_v4(addr), 4, l3),
        Parsed::V6(addr, l3) => (lookup_v6(&addr), 6, l3),
        Parsed::Skipped(reason) => {
            count(&PATH_COUNTERS, path_index(slot, reason), u64::from(len));
            return xdp_action::XDP_PASS;
        }
    };
    let packet = Packet {
        ctx: &ctx,
        family,
        l3,
        length: len,
    };
    judge(&packet, class, slot)
}

/// The counter slot of the interface the packet came in on. One array read
/// indexed by the ifindex, not a hash lookup; the entry repeats the ifindex,
/// so an interface whose index collides with a configured one counts in the
/// unnamed slot instead of another interface's.
#[inline(always)]
fn interface_slot(ctx: &XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    match INTERFACES.get(ifindex % INTERFACE_TABLE_ENTRIES) {
        Some(entry) if entry.ifindex == ifindex => entry.slot,
        _ => UNNAMED_INTERFACE_SLOT,
    }
}

#[inline(always)]
fn path_index(slot: u32, path: PathCounter) -> u32 {
    slot * PATH_COUNTER_SLOTS + path as u32
}

#[inline(always)]
fn lookup_v4(addr: [u8; 4]) -> u32 {
    let region = u32::from(addr[0]) << 8 | u32::from(addr[1]);
    let flags = match COVER_V4.get(region) {
        Some(flags) => *flags,
        None => return CLASS_NONE,
    };
    if flags & cover::HOSTS != 0
        && let Some(class) = host_v4(u32::from_be_bytes(addr))
    {
        return class;
    }
    if flags & cover::PREFIXES != 0
        && let Some(class) = PREFIXES_V4.get(Key::new(32, addr))
    {
        return *class;
    }
    CLASS_NONE
}

/// Finds `address` in the host table: its home bucket, then the next ones
/// while the one before carries the overflow flag.
#[inline(always)]
fn host_v4(address: u32) -> Option<u32> {
    let shift = *CONTROL.get(Control::HostShift as u32)?;
    if shift == 0 {
        return None;
    }
    let low = *CONTROL.get(Control::HostMultiplierLow as u32)?;
    let high = *CONTROL.get(Control::HostMultiplierHigh as u32)?;
    let multiplier = u64::from(high) << 32 | u64::from(low);
    let home = host_table::home(address, multiplier, shift & 63);
    for step in 0..host_table::MAX_PROBE {
        // A bucket past the end ends the probe: the agent never wraps.
        let slots = HOSTS_V4.get_ptr(home + step)?;
        for slot in 0..host_table::SLOTS {
            // SAFETY: the pointer comes from the map and stays valid for the
            // program's run. Each entry is read once, in one 8-byte load,
            // because the agent rewrites entries in place with single stores.
            let entry = unsafe { core::ptr::read_volatile(&(*slots).slots[slot]) };
            if let Some(class) = host_table::class_of(entry, address) {
                return Some(class);
            }
        }
        // SAFETY: as above.
        let header = unsafe { core::ptr::read_volatile(&(*slots).header) };
        if header & host_table::OVERFLOW == 0 {
            return None;
        }
    }
    None
}

#[inline(always)]
fn lookup_v6(addr: &[u8; 16]) -> u32 {
    // SAFETY: as in lookup_v4.
    if let Some(class) = unsafe { HOSTS_V6.get(addr) } {
        return *class;
    }
    match PREFIXES_V6.get(Key::new(128, *addr)) {
        Some(class) => *class,
        None => CLASS_NONE,
    }
}

// Inlined: a BPF function takes at most five arguments in registers, and
// the compiler may split a struct argument across more.
#[inline(always)]
fn judge(packet: &Packet<'_>, class: u32, slot: u32) -> u32 {
    let len = u64::from(packet.length);
    let generation = match CONTROL.get(Control::Generation as u32) {
        Some(generation) => *generation,
        None => 0,
    };
    // A class id outside the table can only come from a corrupted map; the
    // bounds check also keeps the verifier sure of the index below.
    let class = if class < MAX_CLASSES {
        class
    } else {
        CLASS_NONE
    };
    let record = match CLASSES.get(class_slot(generation, class)) {
        Some(record) => *record,
        None => ClassRecord::default(),
    };
    // The agent rebuilds the maps before it writes a class id beyond the
    // counters, so the check drops no count; it keeps slots apart.
    let per_slot = CLASS_COUNTERS_PER_SLOT.load();
    if class < per_slot {
        count(&CLASS_COUNTERS, slot * per_slot + class, len);
    }

    let fate = Fate::from_u32(record.fate).unwrap_or(Fate::Pass);
    let (action, path) = match fate {
        Fate::Drop => (xdp_action::XDP_DROP, PathCounter::Dropped),
        Fate::Allow => (xdp_action::XDP_PASS, PathCounter::Allowed),
        Fate::Tag => (xdp_action::XDP_PASS, PathCounter::Tagged),
        Fate::Pass => (xdp_action::XDP_PASS, PathCounter::Passed),
    };
    count(&PATH_COUNTERS, path_index(slot, path), len);

    if record.log_rules != 0 {
        log_matches(packet, record.log_rules, fate as u8);
    }
    if fate == Fate::Tag {
        tag(packet, &record);
    }
    action
}

/// Rewrites the DSCP when the record asks for it, then hands the mark on.
/// The mark comes last: after the metadata helper no frame access is
/// allowed without new bounds checks.
#[inline(always)]
fn tag(packet: &Packet<'_>, record: &ClassRecord) {
    let len = u64::from(packet.length);
    if record.flags & record_flags::DSCP != 0 {
        let rewritten = match packet.family {
            4 => set_dscp_v4(packet.ctx, packet.l3, record.dscp),
            _ => set_dscp_v6(packet.ctx, packet.l3, record.dscp),
        };
        if rewritten {
            count(&TAG_COUNTERS, TagCounter::DscpRewritten as u32, len);
        }
    }
    let counter = if hand_mark(packet.ctx, record.mark) {
        TagCounter::Marked
    } else {
        TagCounter::NoMetadata
    };
    count(&TAG_COUNTERS, counter as u32, len);
}

#[inline(always)]
pub(crate) fn count(counters: &PerCpuArray<Counter>, index: u32, len: u64) {
    // Per-CPU slots are only written by the CPU that owns them, and XDP does
    // not preempt itself, so plain additions are exact without atomics.
    if let Some(counter) = counters.get_ptr_mut(index) {
        // SAFETY: the pointer comes from the map and is valid for this CPU.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += len;
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
