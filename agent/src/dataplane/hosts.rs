//! The IPv4 host table, written through shared memory.
//!
//! The layout and the probe rule are in `intelwall_common::host_table`, and
//! the XDP program reads the same buckets. The agent is the only writer, one
//! thread at a time. Every change is a single 8-byte store, and the overflow
//! flags on the way to a slot are set before the entry that needs them, so
//! each entry stays findable.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use intelwall_common::host_table::{
    Bucket, MAX_PROBE, OVERFLOW, SLOTS, class_of, entry, home, is_free,
};

/// An entry found no free slot within [`MAX_PROBE`] buckets of its home.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

/// The buckets of a HOSTS_V4 map, mapped into this process.
pub struct HostTable {
    buckets: NonNull<Bucket>,
    count: u32,
    multiplier: u64,
    shift: u32,
    writable: bool,
}

// SAFETY: the mapping is shared memory owned by this value, and every access
// goes through atomics. Writers are serialised by the module's single-writer
// rule.
unsafe impl Send for HostTable {}
// SAFETY: as above.
unsafe impl Sync for HostTable {}

impl HostTable {
    /// Maps the `count` elements of the array behind `map` for reading and
    /// writing. `multiplier` and `shift` must be the ones the XDP program
    /// reads from the control map.
    pub fn map(
        map: BorrowedFd<'_>,
        count: u32,
        multiplier: u64,
        shift: u32,
    ) -> io::Result<HostTable> {
        HostTable::map_with(map, count, multiplier, shift, true)
    }

    /// Maps the buckets read-only, to count or list entries. Lookups in
    /// such a table all start at bucket 0, since it has no multiplier.
    pub fn map_read_only(map: BorrowedFd<'_>, count: u32) -> io::Result<HostTable> {
        HostTable::map_with(map, count, 0, 63, false)
    }

    fn map_with(
        map: BorrowedFd<'_>,
        count: u32,
        multiplier: u64,
        shift: u32,
        writable: bool,
    ) -> io::Result<HostTable> {
        let protection = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh shared mapping of the map's fd; the kernel checks
        // that the length fits the array and that the map allows mmap.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_len(count),
                protection,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let buckets = NonNull::new(address.cast::<Bucket>())
            .ok_or_else(|| io::Error::other("mmap of the host table returned a null address"))?;
        Ok(HostTable {
            buckets,
            count,
            multiplier,
            shift,
            writable,
        })
    }

    /// Returns the number of home buckets, without the tail that only
    /// probes reach.
    pub fn buckets(&self) -> u32 {
        intelwall_common::host_table::buckets_of(self.count)
    }

    /// Returns the eight words of bucket `index` (header first) as atomics.
    fn words(&self, index: u32) -> &[AtomicU64; 8] {
        assert!(index < self.count, "bucket {index} of {}", self.count);
        // SAFETY: the index is in bounds of the mapping, which lives as
        // long as `self`. A bucket is 64 bytes of 8-byte aligned words, which
        // is the layout of `[AtomicU64; 8]`.
        unsafe {
            &*self
                .buckets
                .as_ptr()
                .add(index as usize)
                .cast::<[AtomicU64; 8]>()
        }
    }

    /// Returns the buckets a probe for `address` may visit.
    fn probe(&self, address: u32) -> std::ops::Range<u32> {
        let start = home(address, self.multiplier, self.shift);
        start..start.saturating_add(MAX_PROBE).min(self.count)
    }

    /// Finds the bucket and word index of `address`.
    fn find(&self, address: u32) -> Option<(u32, usize)> {
        for bucket in self.probe(address) {
            let words = self.words(bucket);
            for (slot, word) in words[1..].iter().enumerate() {
                if class_of(word.load(Ordering::Acquire), address).is_some() {
                    return Some((bucket, slot + 1));
                }
            }
            if words[0].load(Ordering::Acquire) & OVERFLOW == 0 {
                return None;
            }
        }
        None
    }

    /// Sets the class of `address`, adding it when absent.
    pub fn upsert(&self, address: u32, class: u32) -> Result<(), TableFull> {
        assert!(self.writable, "a read-only table is not written");
        if let Some((bucket, word)) = self.find(address) {
            self.words(bucket)[word].store(entry(address, class), Ordering::Release);
            return Ok(());
        }
        let probe = self.probe(address);
        for bucket in probe.clone() {
            let words = self.words(bucket);
            let Some(free) = words[1..]
                .iter()
                .position(|word| is_free(word.load(Ordering::Relaxed)))
            else {
                continue;
            };
            for passed in probe.start..bucket {
                self.words(passed)[0].fetch_or(OVERFLOW, Ordering::Release);
            }
            words[free + 1].store(entry(address, class), Ordering::Release);
            return Ok(());
        }
        Err(TableFull)
    }

    /// Removes `address`; returns whether it was there.
    pub fn remove(&self, address: u32) -> bool {
        assert!(self.writable, "a read-only table is not written");
        match self.find(address) {
            Some((bucket, word)) => {
                self.words(bucket)[word].store(0, Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Looks up the class of `address` as the XDP program does.
    pub fn get(&self, address: u32) -> Option<u32> {
        let (bucket, word) = self.find(address)?;
        class_of(self.words(bucket)[word].load(Ordering::Acquire), address)
    }

    /// Writes many entries. They are written in the order of their home
    /// buckets, so that the table is filled front to back instead of at
    /// random: at a million entries that is several times faster.
    pub fn upsert_all(&self, entries: &[([u8; 4], u32)]) -> Result<(), TableFull> {
        use rayon::prelude::*;
        let mut ordered: Vec<(u32, u32, u32)> = entries
            .par_iter()
            .map(|&(octets, class)| {
                let address = u32::from_be_bytes(octets);
                (home(address, self.multiplier, self.shift), address, class)
            })
            .collect();
        ordered.par_sort_unstable_by_key(|&(home, _, _)| home);
        ordered
            .into_iter()
            .try_for_each(|(_, address, class)| self.upsert(address, class))
    }

    #[cfg(test)]
    pub fn home_of(&self, address: u32) -> u32 {
        home(address, self.multiplier, self.shift)
    }

    /// Empties the table and hashes with `multiplier` from now on. Only for
    /// a table that no attached program reads yet.
    pub fn reset(&mut self, multiplier: u64) {
        for bucket in 0..self.count {
            for word in self.words(bucket) {
                word.store(0, Ordering::Relaxed);
            }
        }
        self.multiplier = multiplier;
    }

    /// Lists every entry, in bucket order.
    pub fn entries(&self) -> Vec<([u8; 4], u32)> {
        let mut entries = Vec::new();
        for bucket in 0..self.count {
            for word in &self.words(bucket)[1..] {
                let value = word.load(Ordering::Acquire);
                if !is_free(value) {
                    let address = value as u32;
                    if let Some(class) = class_of(value, address) {
                        entries.push((address.to_be_bytes(), class));
                    }
                }
            }
        }
        entries
    }

    /// Counts the entries in the table.
    pub fn len(&self) -> usize {
        (0..self.count)
            .map(|bucket| {
                self.words(bucket)[1..]
                    .iter()
                    .filter(|word| !is_free(word.load(Ordering::Relaxed)))
                    .count()
            })
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for HostTable {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `map_with` with this length and
        // nothing borrows it past `self`.
        unsafe {
            libc::munmap(self.buckets.as_ptr().cast(), mapped_len(self.count));
        }
    }
}

fn mapped_len(count: u32) -> usize {
    count as usize * std::mem::size_of::<Bucket>()
}

const _: () = assert!(SLOTS + 1 == 8);
