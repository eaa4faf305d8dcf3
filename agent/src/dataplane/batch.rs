//! Batched map writes through the bpf(2) syscall.
//!
//! aya 0.14 writes one element per syscall. BPF_MAP_UPDATE_BATCH and
//! BPF_MAP_DELETE_BATCH take arrays of keys (and values), which cut the time of a million-entry load by
//! about two thirds on this kernel (6.18).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// Elements per syscall. The kernel copies each batch in and holds bucket
/// locks per element, so a bounded chunk keeps a single call short.
const CHUNK: usize = 16_384;

/// Writes of fewer elements stay on the calling thread.
const PARALLEL_MIN: usize = 4 * CHUNK;

/// The `batch` member of `union bpf_attr` (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// A plain-old-data value that can be handed to the kernel as bytes.
///
/// # Safety
/// The type must have no padding and no invalid bit patterns.
pub unsafe trait Plain: Copy + Sync {}

// SAFETY: byte arrays and integers have no padding.
unsafe impl<const N: usize> Plain for [u8; N] {}
// SAFETY: as above.
unsafe impl Plain for u32 {}
// SAFETY: LpmKey is repr(C) with a u32 and a byte array, no padding.
unsafe impl<const N: usize> Plain for LpmKey<N> {}
// SAFETY: ClassEntry is repr(C) with two u32 fields, no padding.
unsafe impl Plain for intelwall_common::ClassEntry {}

/// Key of an LPM trie: prefix length in bits, then the address bytes.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LpmKey<const N: usize> {
    pub prefix_len: u32,
    pub address: [u8; N],
}

impl<const N: usize> LpmKey<N> {
    pub fn new(prefix_len: u8, address: [u8; N]) -> LpmKey<N> {
        LpmKey {
            prefix_len: u32::from(prefix_len),
            address,
        }
    }
}

/// Address first, then prefix length: the order in which the compiler emits
/// prefixes, so that images can be compared by merging.
impl<const N: usize> Ord for LpmKey<N> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let (address, len) = (self.address, self.prefix_len);
        let (other_address, other_len) = (other.address, other.prefix_len);
        address.cmp(&other_address).then(len.cmp(&other_len))
    }
}

impl<const N: usize> PartialOrd for LpmKey<N> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Writes every `(key, value)` pair, creating or replacing elements. A
/// large write is split across the cores: hash maps lock per bucket, so
/// writers on different CPUs rarely wait for each other.
pub fn update<K: Plain, V: Plain>(map: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    use rayon::prelude::*;
    assert_eq!(keys.len(), values.len(), "one value per key");
    let map_fd = map.as_raw_fd() as u32;
    let write = |(key_chunk, value_chunk): (&[K], &[V])| {
        let mut attr = BatchAttr {
            keys: key_chunk.as_ptr() as u64,
            values: value_chunk.as_ptr() as u64,
            count: key_chunk.len() as u32,
            map_fd,
            ..BatchAttr::default()
        };
        call(BPF_MAP_UPDATE_BATCH, &mut attr)
    };
    if keys.len() < PARALLEL_MIN {
        return keys
            .chunks(CHUNK)
            .zip(values.chunks(CHUNK))
            .try_for_each(write);
    }
    keys.par_chunks(CHUNK)
        .zip(values.par_chunks(CHUNK))
        .try_for_each(write)
}

/// Deletes every key present. A key already absent is not an error: callers
/// remove what they believe is there, and "already gone" is the goal.
pub fn delete<K: Plain>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<()> {
    let mut rest = keys;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(CHUNK)];
        let mut attr = BatchAttr {
            keys: chunk.as_ptr() as u64,
            count: chunk.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        match call(BPF_MAP_DELETE_BATCH, &mut attr) {
            Ok(()) => rest = &rest[chunk.len()..],
            // The kernel stops at the first absent key and reports in `count`
            // how many it deleted before it; skip the absent one and go on.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => {
                let done = attr.count as usize;
                rest = &rest[(done + 1).min(rest.len())..];
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn call(command: libc::c_long, attr: &mut BatchAttr) -> io::Result<()> {
    // SAFETY: attr is a valid bpf_attr prefix for the batch commands, and the
    // key and value pointers it holds stay borrowed for the whole call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
