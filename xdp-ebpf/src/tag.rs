//! The TC ingress program that gives a tagged packet its mark.
//!
//! XDP runs before the kernel builds a socket buffer, so it cannot set
//! `skb->mark` itself. It leaves a [`TagMeta`] in the metadata area in front
//! of the frame; this program, attached to TC ingress of the same interface,
//! reads it and sets the mark, which nftables and iptables then match with
//! `meta mark` and `-m mark`. It never drops or redirects anything.

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use intelwall_common::{TAG_META_MAGIC, TagMeta};

#[classifier]
pub fn intelwall_tag(ctx: TcContext) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: skb is the context the kernel passed; the verifier rewrites
    // these field reads into the metadata and data pointers.
    let (meta, data) = unsafe { ((*skb).data_meta as usize, (*skb).data as usize) };
    // The verifier allows a read of the metadata area only after this check
    // against the start of the frame.
    if meta + core::mem::size_of::<TagMeta>() <= data {
        // SAFETY: the check above proved the bytes are there.
        let tag = unsafe { (meta as *const TagMeta).read_unaligned() };
        if tag.magic == TAG_META_MAGIC {
            ctx.set_mark(tag.mark);
        }
    }
    // TC_ACT_UNSPEC lets the next program or filter decide, and passes the
    // packet when there is none.
    TC_ACT_UNSPEC
}
