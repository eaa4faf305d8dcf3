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

/// The list ids of each profile, each combination stored once.
#[derive(Clone, Debug, Default)]
pub struct Profiles {
    lists: Vec<[ListId; 5]>,
    /// Slots with the lists beside the id, so that a lookup compares
    /// without reading `lists`. That saves a cache miss on the hot path of
    /// every feed load.
    ids: HashTable<(ProfileId, [ListId; 5])>,
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
        if let Some(&(id, _)) = self.ids.find(hash, |(_, known)| *known == lists) {
            return id;
        }
        let id = self.lists.len() as ProfileId;
        self.lists.push(lists);
        self.ids
            .insert_unique(hash, (id, lists), |(_, known)| HASHER.hash_one(known));
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
