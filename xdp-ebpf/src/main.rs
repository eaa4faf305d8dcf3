//! The intelwall XDP program.
//!
//! Per packet: parse Ethernet and up to two VLAN tags, take the IPv4 or IPv6
//! source address, find its class (exact host hash first, longest-prefix trie
//! on a miss), read the class's precomputed verdict from the active half of
//! the class table, count, and return the fate. The agent has already
//! evaluated every rule for every class, so the cost per packet does not grow
//! with the number of rules. Frames that cannot be parsed pass untouched and
//! are counted by reason.
#![no_std]
#![no_main]

mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::{Array, HashMap, LpmTrie, PerCpuArray, lpm_trie::Key},
    programs::XdpContext,
};
use intelwall_common::{
    CLASS_NONE, COVER_V4_ENTRIES, ClassEntry, Control, Counter, DEFAULT_MAP_CAPACITY, Fate,
    GENERATIONS, MAX_CLASSES, PATH_COUNTER_SLOTS, PathCounter, class_slot, cover,
};

use crate::parse::{Parsed, parse_source};

#[map(name = "HOSTS_V4")]
static HOSTS_V4: HashMap<[u8; 4], u32> = HashMap::with_max_entries(DEFAULT_MAP_CAPACITY, 0);

#[map(name = "HOSTS_V6")]
static HOSTS_V6: HashMap<[u8; 16], u32> = HashMap::with_max_entries(DEFAULT_MAP_CAPACITY, 0);

#[map(name = "PREFIXES_V4")]
static PREFIXES_V4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(DEFAULT_MAP_CAPACITY, 0);

#[map(name = "PREFIXES_V6")]
static PREFIXES_V6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(DEFAULT_MAP_CAPACITY, 0);

#[map(name = "COVER_V4")]
static COVER_V4: Array<u8> = Array::with_max_entries(COVER_V4_ENTRIES, 0);

#[map(name = "CLASSES")]
static CLASSES: Array<ClassEntry> = Array::with_max_entries(GENERATIONS * MAX_CLASSES, 0);

#[map(name = "CONTROL")]
static CONTROL: Array<u32> = Array::with_max_entries(intelwall_common::CONTROL_SLOTS, 0);

#[map(name = "CLASS_COUNTERS")]
static CLASS_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(MAX_CLASSES, 0);

#[map(name = "PATH_COUNTERS")]
static PATH_COUNTERS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(PATH_COUNTER_SLOTS, 0);

#[xdp]
pub fn intelwall(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    match parse_source(&ctx) {
        Parsed::V4(addr) => judge(lookup_v4(addr), len),
        Parsed::V6(addr) => judge(lookup_v6(&addr), len),
        Parsed::Skipped(reason) => {
            count(&PATH_COUNTERS, reason as u32, len);
            xdp_action::XDP_PASS
        }
    }
}

fn lookup_v4(addr: [u8; 4]) -> u32 {
    let region = u32::from(addr[0]) << 8 | u32::from(addr[1]);
    let flags = match COVER_V4.get(region) {
        Some(flags) => *flags,
        None => return CLASS_NONE,
    };
    if flags & cover::HOSTS != 0 {
        // SAFETY: the value is a u32 copied out at once; a concurrent update
        // of the same key replaces it whole, so no pointer is kept.
        if let Some(class) = unsafe { HOSTS_V4.get(addr) } {
            return *class;
        }
    }
    if flags & cover::PREFIXES != 0
        && let Some(class) = PREFIXES_V4.get(Key::new(32, addr))
    {
        return *class;
    }
    CLASS_NONE
}

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

fn judge(class: u32, len: u64) -> u32 {
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
    let entry = match CLASSES.get(class_slot(generation, class)) {
        Some(entry) => *entry,
        None => ClassEntry::default(),
    };
    count(&CLASS_COUNTERS, class, len);

    let (action, path) = match Fate::from_u32(entry.fate) {
        Some(Fate::Drop) => (xdp_action::XDP_DROP, PathCounter::Dropped),
        Some(Fate::Allow) => (xdp_action::XDP_PASS, PathCounter::Allowed),
        Some(Fate::Tag) => (xdp_action::XDP_PASS, PathCounter::Tagged),
        Some(Fate::Pass) | None => (xdp_action::XDP_PASS, PathCounter::Passed),
    };
    count(&PATH_COUNTERS, path as u32, len);
    action
}

#[inline(always)]
fn count(counters: &PerCpuArray<Counter>, index: u32, len: u64) {
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
