//! Interned attribute lists and profiles.
//!
//! A list is a sorted run of distinct symbols, stored once in one arena; a
//! profile is the five list ids of a sighting's attributes. Neither is
//! allocated on its own, and a lookup hashes the values in place, so
//! interning a combination seen before allocates nothing.
//!
//! Feeds with few combinations share almost every profile. Feeds whose lines
//! all differ (a random mix of actors, countries and industries) still share
//! lists, so a new profile costs 20 bytes and a hash table slot.

use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

use super::{Attribute, ProfileId, Symbol};

/// Hashes lists and profiles.
const HASHER: FxBuildHasher = FxBuildHasher;

/// Index of a list in [`Lists`].
pub type ListId = u32;

/// Sorted symbol lists, each stored once.
#[derive(Clone, Debug, Default)]
pub struct Lists {
    values: Vec<Symbol>,
    /// Start and length of each list in `values`.
    spans: Vec<(u32, u32)>,
    ids: HashTable<ListId>,
}

impl Lists {
    pub fn get(&self, id: ListId) -> &[Symbol] {
        let (start, len) = self.spans[id as usize];
        &self.values[start as usize..(start + len) as usize]
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn bytes(&self) -> usize {
        self.values.capacity() * size_of::<Symbol>()
            + self.spans.capacity() * size_of::<(u32, u32)>()
            + self.ids.capacity() * (size_of::<ListId>() + 1)
    }

    /// The id of `values`, which must be sorted and free of duplicates.
    pub fn intern(&mut self, values: &[Symbol]) -> ListId {
        let hash = HASHER.hash_one(values);
        let Lists {
            values: arena,
            spans,
            ids,
        } = self;
        let slice = |id: ListId| {
            let (start, len) = spans[id as usize];
            &arena[start as usize..(start + len) as usize]
        };
        if let Some(&id) = ids.find(hash, |&id| slice(id) == values) {
            return id;
        }
        let id = spans.len() as ListId;
        spans.push((arena.len() as u32, values.len() as u32));
        arena.extend_from_slice(values);
        let Lists {
            values: arena,
            spans,
            ids,
        } = self;
        ids.insert_unique(hash, id, |&id| {
            let (start, len) = spans[id as usize];
            HASHER.hash_one(&arena[start as usize..(start + len) as usize])
        });
        id
    }
}

/// Profiles that [`Profiles::intern`] indexes in full. Past this number, it
/// only remembers recent ones.
const INDEX_LIMIT: usize = 1 << 20;

/// Lookups past the index limit over which [`Profiles`] measures what the
/// index still finds.
const RETIRE_WINDOW: u32 = 1 << 16;

/// The index is retired when fewer than one lookup in this many finds a
/// profile in it. It then saves less than 2.5 bytes a profile (a repeat
/// costs 20) for a cache miss on every lookup.
const RETIRE_HIT_SHARE: u32 = 8;

/// Slots of [`Profiles::recent`], a power of two. At 112 KiB the table
/// stays in a core's L2 cache, so a lookup that finds nothing (the usual
/// outcome in a feed of distinct mixes) does not wait on main memory.
const RECENT_SLOTS: usize = 1 << 12;

/// The list ids of each profile, each combination stored once while the
/// store contains up to `INDEX_LIMIT` of them.
///
/// A feed whose every line carries its own mix of values would otherwise
/// grow an index as large as itself. Beyond the limit, a profile missing
/// from the index is looked up among recent ones, in a small table that
/// stays in the CPU caches, so one mix may then get several ids. Sightings that differ only in such ids still
/// merge (see [`super::TableBuilder::finish_with`]).
#[derive(Clone, Debug, Default)]
pub struct Profiles {
    lists: Vec<[ListId; 5]>,
    /// Slots with the lists beside the id, so that a lookup compares
    /// without reading `lists`. That saves a cache miss on the hot path of
    /// every feed load.
    ids: HashTable<(ProfileId, [ListId; 5])>,
    /// The last profile whose hash fell in each slot, once `ids` is full.
    /// Empty before that.
    recent: Vec<Option<(ProfileId, [ListId; 5])>>,
    /// Lookups that found or missed a profile in the full index, over the
    /// current window.
    index_hits: u32,
    index_misses: u32,
    /// Set when the full index stopped finding profiles: later lookups go
    /// to the recent ones only.
    index_retired: bool,
}

impl Profiles {
    pub fn get(&self, id: ProfileId) -> [ListId; 5] {
        self.lists[id as usize]
    }

    pub fn len(&self) -> usize {
        self.lists.len()
    }

    pub fn bytes(&self) -> usize {
        self.lists.capacity() * size_of::<[ListId; 5]>()
            + self.ids.capacity() * (size_of::<(ProfileId, [ListId; 5])>() + 1)
            + self.recent.capacity() * size_of::<Option<(ProfileId, [ListId; 5])>>()
    }

    /// Makes room for `additional` more profiles in the list of profiles
    /// (not in the index, which only grows as far as it must).
    pub fn reserve(&mut self, additional: usize) {
        self.lists.reserve_exact(additional);
    }

    pub fn all(&self) -> &[[ListId; 5]] {
        &self.lists
    }

    /// Adds a profile without indexing it, so that a later
    /// [`Profiles::intern`] of the same lists adds another.
    pub fn push_unindexed(&mut self, lists: [ListId; 5]) -> ProfileId {
        self.lists.push(lists);
        (self.lists.len() - 1) as ProfileId
    }

    pub fn intern(&mut self, lists: [ListId; 5]) -> ProfileId {
        let hash = HASHER.hash_one(lists);
        if self.index_retired {
            return self.intern_recent(hash, lists);
        }
        if let Some(&(id, _)) = self.ids.find(hash, |(_, known)| *known == lists) {
            self.index_hits += 1;
            return id;
        }
        if self.ids.len() >= INDEX_LIMIT {
            self.count_index_miss();
            return self.intern_recent(hash, lists);
        }
        let id = self.lists.len() as ProfileId;
        self.lists.push(lists);
        self.ids
            .insert_unique(hash, (id, lists), |(_, known)| HASHER.hash_one(known));
        id
    }

    /// Counts a lookup that missed the full index, and retires the index
    /// when it found almost nothing over the last [`RETIRE_WINDOW`] lookups.
    /// A feed whose every line has its own mix gains nothing from a lookup
    /// that costs a cache miss each time.
    fn count_index_miss(&mut self) {
        self.index_misses += 1;
        if self.index_misses + self.index_hits < RETIRE_WINDOW {
            return;
        }
        if self.index_hits * RETIRE_HIT_SHARE < self.index_misses + self.index_hits {
            self.index_retired = true;
        }
        self.index_hits = 0;
        self.index_misses = 0;
    }

    fn intern_recent(&mut self, hash: u64, lists: [ListId; 5]) -> ProfileId {
        if self.recent.is_empty() {
            self.recent = vec![None; RECENT_SLOTS];
        }
        let slot = (hash >> (64 - RECENT_SLOTS.trailing_zeros())) as usize;
        if let Some((id, known)) = self.recent[slot]
            && known == lists
        {
            return id;
        }
        let id = self.push_unindexed(lists);
        self.recent[slot] = Some((id, lists));
        id
    }
}

/// Sorts each attribute's values, drops repeats and interns the lists and
/// the profile they make.
pub fn intern_profile(
    lists: &mut Lists,
    profiles: &mut Profiles,
    values: &mut [Vec<Symbol>; 5],
) -> ProfileId {
    let ids: [ListId; 5] = std::array::from_fn(|index| {
        let list = &mut values[index];
        list.sort_unstable();
        list.dedup();
        lists.intern(list)
    });
    profiles.intern(ids)
}

/// A profile's values, borrowed from the store.
#[derive(Clone, Copy, Debug)]
pub struct Profile<'a> {
    lists: &'a Lists,
    ids: [ListId; 5],
}

impl<'a> Profile<'a> {
    pub fn new(lists: &'a Lists, ids: [ListId; 5]) -> Profile<'a> {
        Profile { lists, ids }
    }

    pub fn values(&self, attribute: Attribute) -> &'a [Symbol] {
        self.lists.get(self.ids[attribute as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lists(n: u32) -> [ListId; 5] {
        [n, n + 1, 0, 0, 1]
    }

    #[test]
    fn profiles_past_the_index_limit_keep_their_lists() {
        let mut profiles = Profiles::default();
        for n in 0..INDEX_LIMIT as u32 {
            assert_eq!(profiles.intern(lists(n)), n);
        }
        // A profile indexed before the limit is still found.
        assert_eq!(profiles.intern(lists(7)), 7);

        let first = profiles.intern(lists(u32::MAX - 10));
        assert_eq!(first as usize, INDEX_LIMIT);
        assert_eq!(
            profiles.intern(lists(u32::MAX - 10)),
            first,
            "recent one found"
        );
        let second = profiles.intern(lists(u32::MAX - 20));
        assert_ne!(second, first);
        assert_eq!(profiles.get(first), lists(u32::MAX - 10));
        assert_eq!(profiles.get(second), lists(u32::MAX - 20));
        assert_eq!(profiles.len(), INDEX_LIMIT + 2);
    }

    #[test]
    fn index_retires_when_it_finds_nothing() {
        let mut profiles = Profiles::default();
        for n in 0..INDEX_LIMIT as u32 {
            profiles.intern(lists(n));
        }
        // New mixes with one indexed repeat in five, over two windows:
        // still worth a lookup.
        for n in 0..2 * RETIRE_WINDOW {
            if n % 5 == 0 {
                assert_eq!(profiles.intern(lists(n)), n, "indexed profile found");
            } else {
                profiles.intern(lists(u32::MAX / 2 + n));
            }
        }
        assert!(!profiles.index_retired, "one hit in five keeps the index");
        // Only new mixes, over two windows (the first one may still hold
        // the hits above): the index stops being consulted.
        for n in 0..2 * RETIRE_WINDOW {
            profiles.intern(lists(u32::MAX / 4 + n));
        }
        assert!(profiles.index_retired, "no hits retire the index");
        let again = profiles.intern(lists(7));
        assert_ne!(again, 7, "a retired index finds no old profile");
        assert_eq!(
            profiles.get(again),
            lists(7),
            "the new id has the same lists"
        );
    }
}
