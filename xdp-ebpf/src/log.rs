//! Sampled events of log rules.
//!
//! A class record names its log rules in a bitmask. For each, the per-CPU
//! state decides whether this match is sampled (the first, then one in
//! `sample_every`, and at most `rate_per_cpu` a second). A packet that any
//! rule sampled becomes one event naming all of them, carrying the packet's
//! headers as they are; the agent reads addresses, protocol and ports from
//! them. A full ring buffer loses the event and counts it; the packet never
//! waits.

use aya_ebpf::{
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::XdpContext,
};
use intelwall_common::{
    EVENT_COUNTER_SLOTS, EVENT_HEADER_BYTES, EVENTS_RING_BYTES, Event, EventCounter, LogRule,
    LogState, MAX_LOG_RULES,
};

use crate::count;
use crate::parse::read;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// Headers are copied in chunks of this many bytes, then byte by byte.
const CHUNK: usize = 8;

#[map(name = "LOG_RULES")]
static LOG_RULES: Array<LogRule> = Array::with_max_entries(MAX_LOG_RULES, 0);

#[map(name = "LOG_STATE")]
static LOG_STATE: PerCpuArray<LogState> = PerCpuArray::with_max_entries(MAX_LOG_RULES, 0);

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

/// One word per CPU where the rules sampled for the current packet gather.
#[map(name = "LOG_SCRATCH")]
static LOG_SCRATCH: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "EVENT_COUNTERS")]
static EVENT_COUNTERS: PerCpuArray<intelwall_common::Counter> =
    PerCpuArray::with_max_entries(EVENT_COUNTER_SLOTS, 0);

/// The packet as an event describes it.
#[derive(Clone, Copy)]
pub struct Packet<'a> {
    pub ctx: &'a XdpContext,
    /// 4 or 6.
    pub family: u8,
    /// Offset of the IP header.
    pub l3: usize,
    pub length: u32,
}

/// Sends one event for `packet` when any log rule in `rules` samples it.
#[inline(always)]
pub fn log_matches(packet: &Packet<'_>, rules: u32, fate: u8) {
    // SAFETY: the helper has no arguments and no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // The sampled rules gather in map memory, not in a register. The
    // verifier tracks the exact value of a register, so each of the 2^32
    // possible masks would be a path of its own to check after the loop;
    // a value read back from a map is just "some u32", one path.
    let Some(gathered) = LOG_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: the per-CPU word belongs to this CPU while the program runs.
    unsafe { *gathered = 0 };
    // The verifier needs a bound it can see: one pass per bit of the mask,
    // stopping after the highest set bit (slots are handed out from 0).
    for slot in 0..MAX_LOG_RULES {
        if rules >> slot == 0 {
            break;
        }
        if rules & (1 << slot) != 0 && sampled(slot, now) {
            // SAFETY: as above.
            unsafe { *gathered |= 1 << slot };
        }
    }
    // SAFETY: as above.
    let sampled_rules = unsafe { *gathered };
    if sampled_rules != 0 {
        send(packet, sampled_rules, fate, now);
    }
}

/// Whether this match of the rule in `slot` is sampled, by its count and
/// its rate on this CPU.
#[inline(always)]
fn sampled(slot: u32, now: u64) -> bool {
    let (Some(rule), Some(state)) = (LOG_RULES.get(slot), LOG_STATE.get_ptr_mut(slot)) else {
        return false;
    };
    // A free slot: a class record still naming it during a reload logs
    // nothing.
    if rule.sample_every == 0 {
        return false;
    }
    // SAFETY: a per-CPU slot is only touched by this CPU, and XDP does not
    // preempt itself.
    let state = unsafe { &mut *state };
    let due = state.countdown == 0;
    state.countdown = if due {
        rule.sample_every - 1
    } else {
        state.countdown - 1
    };
    if !due {
        return false;
    }
    if rule.rate_per_cpu == 0 {
        return true;
    }
    if now.wrapping_sub(state.second_start_ns) >= NANOS_PER_SECOND {
        state.second_start_ns = now;
        state.sent_this_second = 0;
    }
    if state.sent_this_second >= rule.rate_per_cpu {
        return false;
    }
    state.sent_this_second += 1;
    true
}

#[inline(always)]
fn send(packet: &Packet<'_>, rules: u32, fate: u8, now: u64) {
    let length = u64::from(packet.length);
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count(&EVENT_COUNTERS, EventCounter::Lost as u32, length);
        return;
    };
    let event = entry.as_mut_ptr();
    // SAFETY: the entry is reserved for this program until submitted, and
    // every field is written before the submit.
    unsafe {
        (*event).time_ns = now;
        (*event).ifindex = packet.ctx.ingress_ifindex() as u32;
        (*event).length = packet.length;
        (*event).rules = rules;
        (*event).family = packet.family;
        (*event).fate = fate;
        (*event).header_len = copy_headers(packet, &mut (*event).headers) as u16;
    }
    entry.submit(0);
    count(&EVENT_COUNTERS, EventCounter::Sent as u32, length);
}

/// Copies up to [`EVENT_HEADER_BYTES`] of the packet from its IP header and
/// returns how many; bytes beyond that are left as the ring buffer had them
/// and the agent ignores them. Whole chunks first, then the remaining bytes
/// one at a time, each behind its own bounds check.
#[inline(always)]
fn copy_headers(packet: &Packet<'_>, headers: &mut [u8; EVENT_HEADER_BYTES]) -> usize {
    let mut copied = 0;
    for chunk in 0..EVENT_HEADER_BYTES / CHUNK {
        let at = chunk * CHUNK;
        let Some(bytes) = read::<[u8; CHUNK]>(packet.ctx, packet.l3 + at) else {
            break;
        };
        headers[at..at + CHUNK].copy_from_slice(&bytes);
        copied = at + CHUNK;
    }
    if copied < EVENT_HEADER_BYTES {
        for _ in 0..CHUNK - 1 {
            match read::<u8>(packet.ctx, packet.l3 + copied) {
                Some(byte) if copied < EVENT_HEADER_BYTES => {
                    headers[copied] = byte;
                    copied += 1;
                }
                _ => break,
            }
        }
    }
    copied
}
