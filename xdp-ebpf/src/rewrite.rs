//! What a `tag` verdict changes: the DSCP in the IP header, and the mark
//! handed to the TC program through the XDP metadata area.

use aya_ebpf::{helpers::bpf_xdp_adjust_meta, programs::XdpContext};
use intelwall_common::{TAG_META_MAGIC, TagMeta, incremental_checksum};

use crate::parse::ptr_at;

/// Offset of the header checksum in the IPv4 header.
const IPV4_CHECKSUM_OFFSET: usize = 10;

/// Sets the DSCP of the IPv4 header at `l3`, keeping the ECN bits, and
/// updates the header checksum for the one changed 16-bit word.
#[inline(always)]
pub fn set_dscp_v4(ctx: &XdpContext, l3: usize, dscp: u8) -> bool {
    let Some(header) = ptr_at::<[u8; 12]>(ctx, l3) else {
        return false;
    };
    let header = header as *mut [u8; 12];
    // SAFETY: ptr_at checked that the 12 bytes lie inside the frame, and XDP
    // owns the frame while the program runs.
    let header = unsafe { &mut *header };
    let tos = (dscp << 2) | (header[1] & 0x03);
    let old_word = u16::from_be_bytes([header[0], header[1]]);
    let new_word = u16::from_be_bytes([header[0], tos]);
    let checksum = u16::from_be_bytes([
        header[IPV4_CHECKSUM_OFFSET],
        header[IPV4_CHECKSUM_OFFSET + 1],
    ]);
    let checksum = incremental_checksum(checksum, old_word, new_word).to_be_bytes();
    header[1] = tos;
    header[IPV4_CHECKSUM_OFFSET] = checksum[0];
    header[IPV4_CHECKSUM_OFFSET + 1] = checksum[1];
    true
}

/// Sets the DSCP of the IPv6 header at `l3`: the traffic class spans the low
/// nibble of byte 0 and the high nibble of byte 1; its low two bits (ECN)
/// are kept. IPv6 has no header checksum.
#[inline(always)]
pub fn set_dscp_v6(ctx: &XdpContext, l3: usize, dscp: u8) -> bool {
    let Some(header) = ptr_at::<[u8; 2]>(ctx, l3) else {
        return false;
    };
    let header = header as *mut [u8; 2];
    // SAFETY: as in set_dscp_v4.
    let header = unsafe { &mut *header };
    let ecn = (header[1] >> 4) & 0x03;
    let traffic_class = (dscp << 2) | ecn;
    header[0] = (header[0] & 0xf0) | (traffic_class >> 4);
    header[1] = (header[1] & 0x0f) | (traffic_class << 4);
    true
}

/// Puts a [`TagMeta`] with `mark` in front of the frame, where the TC
/// program finds it. Returns false when the driver leaves no room for
/// metadata. Must run after every other access to the frame: the helper
/// moves the metadata pointer, and the verifier then forgets every packet
/// bound it had checked.
#[inline(always)]
pub fn hand_mark(ctx: &XdpContext, mark: u32) -> bool {
    let size = core::mem::size_of::<TagMeta>();
    // SAFETY: the helper takes the program's own context; a negative delta
    // grows the metadata area in front of the frame.
    if unsafe { bpf_xdp_adjust_meta(ctx.ctx, -(size as i32)) } != 0 {
        return false;
    }
    let meta = ctx.metadata();
    // The verifier needs this check against the frame start before the
    // metadata area may be written.
    if meta + size > ctx.data() {
        return false;
    }
    let tag = TagMeta {
        magic: TAG_META_MAGIC,
        mark,
    };
    // SAFETY: the check above proved the metadata area holds a TagMeta.
    unsafe { (meta as *mut TagMeta).write_unaligned(tag) };
    true
}
