//! Applies a new compiled image over the one the kernel enforces, so that the
//! whole change becomes visible to packets at one instant.
//!
//! The argument, step by step (docs/architecture.md has the long form):
//! 1. Every address entry whose class changes from `o` to `n` first gets a
//!    transitional class `t`, an id that neither image uses. In the active
//!    half of the class table `t` has the verdict of `o`; in the idle half it
//!    has the verdict of `n`. Writing `t` changes nothing a packet can see.
//! 2. The idle half receives the verdicts of every class of the new image.
//! 3. One 4-byte write flips the active half. Every address now shows its new
//!    verdict, all at once: entries that kept their class through the new
//!    table, the others through their transitional class.
//! 4. Cleanup: transitional entries are rewritten to `n` (same verdict),
//!    entries the new image drops are deleted (their lookup falls to the
//!    enclosing prefix, which already shows the new verdict), and the /16
//!    cover flags shrink to the new image. Before step 1 the flags grew to
//!    the union of both images, so no lookup is skipped in between.
//!
//! A failure before step 3 leaves the enforced verdicts untouched.

use std::borrow::Cow;
use std::collections::HashMap;

use intelwall_common::{CLASS_NONE, ClassRecord, MAX_CLASSES, map_name};

use super::batch::LpmKey;
use super::{ClassExtras, Dataplane, DataplaneError};
use crate::compile::{Enforced, MapImage};

/// What an update wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// Address entries added or given another class.
    pub upserted: usize,
    /// Address entries removed.
    pub removed: usize,
    /// Transitional classes used for the flip.
    pub transitional: usize,
}

impl UpdateStats {
    /// Whether only the class table changed.
    pub fn is_rules_only(&self) -> bool {
        self.upserted == 0 && self.removed == 0
    }
}

/// One address entry whose class changes.
#[derive(Clone, Copy, Debug)]
struct Change<K> {
    key: K,
    old_class: u32,
    new_class: u32,
    /// Whether the new image drops the entry.
    remove: bool,
}

/// The changes of one address map.
struct MapDiff<K> {
    changes: Vec<Change<K>>,
}

impl<K: Copy + Ord> MapDiff<K> {
    /// Compares two maps given as slices sorted by key, in one merging pass;
    /// `old_lookup` and `new_lookup` give the class a key would get from the
    /// rest of its image when the key itself is absent.
    fn new(
        old: &[(K, u32)],
        new: &[(K, u32)],
        old_lookup: impl Fn(&K) -> u32,
        new_lookup: impl Fn(&K) -> u32,
    ) -> MapDiff<K> {
        let mut changes = Vec::new();
        let (mut old_rest, mut new_rest) = (old, new);
        loop {
            let order = match (old_rest.first(), new_rest.first()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((old_key, _)), Some((new_key, _))) => old_key.cmp(new_key),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let (key, old_class) = old_rest[0];
                    changes.push(Change {
                        key,
                        old_class,
                        new_class: new_lookup(&key),
                        remove: true,
                    });
                    old_rest = &old_rest[1..];
                }
                std::cmp::Ordering::Greater => {
                    let (key, new_class) = new_rest[0];
                    changes.push(Change {
                        key,
                        old_class: old_lookup(&key),
                        new_class,
                        remove: false,
                    });
                    new_rest = &new_rest[1..];
                }
                std::cmp::Ordering::Equal => {
                    let ((key, old_class), (_, new_class)) = (old_rest[0], new_rest[0]);
                    if old_class != new_class {
                        changes.push(Change {
                            key,
                            old_class,
                            new_class,
                            remove: false,
                        });
                    }
                    old_rest = &old_rest[1..];
                    new_rest = &new_rest[1..];
                }
            }
        }
        MapDiff { changes }
    }
}

/// Every address map of an image as slices sorted by key. The compiler
/// emits entries in key order, so this borrows its vectors; an image read
/// back from the kernel is sorted first.
struct IndexedImage<'a> {
    hosts_v4: Cow<'a, [([u8; 4], u32)]>,
    hosts_v6: Cow<'a, [([u8; 16], u32)]>,
    prefixes_v4: Vec<(LpmKey<4>, u32)>,
    prefixes_v6: Vec<(LpmKey<16>, u32)>,
    /// Prefix lengths present, longest first, for longest-prefix lookups.
    lengths_v4: Vec<u8>,
    lengths_v6: Vec<u8>,
}

impl<'a> IndexedImage<'a> {
    fn new(image: &'a MapImage) -> IndexedImage<'a> {
        IndexedImage {
            hosts_v4: sorted(&image.hosts_v4),
            hosts_v6: sorted(&image.hosts_v6),
            prefixes_v4: sorted_prefixes(&image.prefixes_v4),
            prefixes_v6: sorted_prefixes(&image.prefixes_v6),
            lengths_v4: lengths(image.prefixes_v4.iter().map(|(len, _, _)| *len)),
            lengths_v6: lengths(image.prefixes_v6.iter().map(|(len, _, _)| *len)),
        }
    }

    /// The class of the longest prefix strictly shorter than `max_len` that
    /// contains `address`, or class 0: one binary search per prefix length
    /// present.
    fn enclosing<const N: usize>(
        prefixes: &[(LpmKey<N>, u32)],
        lengths: &[u8],
        address: [u8; N],
        max_len: u8,
    ) -> u32 {
        for &len in lengths.iter().filter(|len| **len < max_len) {
            let key = LpmKey::new(len, mask(address, len));
            if let Ok(index) = prefixes.binary_search_by(|(candidate, _)| candidate.cmp(&key)) {
                return prefixes[index].1;
            }
        }
        CLASS_NONE
    }
}

fn sorted<K: Copy + Ord>(entries: &[(K, u32)]) -> Cow<'_, [(K, u32)]> {
    if entries.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        return Cow::Borrowed(entries);
    }
    let mut copy = entries.to_vec();
    copy.sort_unstable_by_key(|entry| entry.0);
    Cow::Owned(copy)
}

fn sorted_prefixes<const N: usize>(prefixes: &[(u8, [u8; N], u32)]) -> Vec<(LpmKey<N>, u32)> {
    let mut keyed: Vec<(LpmKey<N>, u32)> = prefixes
        .iter()
        .map(|(len, address, class)| (LpmKey::new(*len, *address), *class))
        .collect();
    if !keyed.windows(2).all(|pair| pair[0].0 < pair[1].0) {
        keyed.sort_unstable_by_key(|entry| entry.0);
    }
    keyed
}

fn lengths(all: impl Iterator<Item = u8>) -> Vec<u8> {
    let mut lengths: Vec<u8> = all.collect();
    lengths.sort_unstable_by(|a, b| b.cmp(a));
    lengths.dedup();
    lengths
}

fn mask<const N: usize>(mut address: [u8; N], len: u8) -> [u8; N] {
    let len = usize::from(len);
    for (index, byte) in address.iter_mut().enumerate() {
        let bits_here = len.saturating_sub(index * 8).min(8);
        *byte &= if bits_here == 0 {
            0
        } else {
            0xffu8 << (8 - bits_here)
        };
    }
    address
}

/// Allocates transitional class ids that neither image uses.
struct Transitions<'a> {
    old: Enforced<'a>,
    new: Enforced<'a>,
    ids: HashMap<(u32, u32), u32>,
    next: u32,
}

impl<'a> Transitions<'a> {
    fn new(old: Enforced<'a>, new: Enforced<'a>) -> Transitions<'a> {
        Transitions {
            old,
            new,
            ids: HashMap::new(),
            next: 1,
        }
    }

    fn class_for(&mut self, old_class: u32, new_class: u32) -> Result<u32, DataplaneError> {
        if old_class == new_class {
            return Ok(new_class);
        }
        if let Some(&id) = self.ids.get(&(old_class, new_class)) {
            return Ok(id);
        }
        while self.old.registry.is_class_in_use(self.next)
            || self.new.registry.is_class_in_use(self.next)
        {
            self.next += 1;
        }
        if self.next >= MAX_CLASSES {
            return Err(DataplaneError::ClassesExhausted {
                in_use: self.old.registry.class_count()
                    + self.new.registry.class_count()
                    + self.ids.len(),
            });
        }
        let id = self.next;
        self.next += 1;
        self.ids.insert((old_class, new_class), id);
        Ok(id)
    }
}

impl Dataplane {
    /// Makes `new` the enforced image in place of `old`, which must be what
    /// the maps hold now. See the module documentation for why packets see
    /// either all of `old` or all of `new`.
    pub fn apply(
        &mut self,
        old: Enforced<'_>,
        new: Enforced<'_>,
    ) -> Result<UpdateStats, DataplaneError> {
        self.apply_with(old, new, ClassExtras::default())
    }

    /// [`Dataplane::apply`] with the DSCP rewrites and log rules of `new`'s
    /// classes; they take effect with the flip, like the verdicts.
    pub fn apply_with(
        &mut self,
        old: Enforced<'_>,
        new: Enforced<'_>,
        new_extras: ClassExtras,
    ) -> Result<UpdateStats, DataplaneError> {
        self.check_class_capacity(new.image.classes.len())?;
        if old.image.same_entries(new.image) {
            return self.apply_rules_only(new, new_extras);
        }
        let old_index = IndexedImage::new(old.image);
        let new_index = IndexedImage::new(new.image);
        self.check_peak_capacity(&old_index, &new_index)?;

        let hosts_v4 = MapDiff::new(
            &old_index.hosts_v4,
            &new_index.hosts_v4,
            |key| IndexedImage::enclosing(&old_index.prefixes_v4, &old_index.lengths_v4, *key, 33),
            |key| IndexedImage::enclosing(&new_index.prefixes_v4, &new_index.lengths_v4, *key, 33),
        );
        let hosts_v6 = MapDiff::new(
            &old_index.hosts_v6,
            &new_index.hosts_v6,
            |key| IndexedImage::enclosing(&old_index.prefixes_v6, &old_index.lengths_v6, *key, 129),
            |key| IndexedImage::enclosing(&new_index.prefixes_v6, &new_index.lengths_v6, *key, 129),
        );
        let prefixes_v4 = MapDiff::new(
            &old_index.prefixes_v4,
            &new_index.prefixes_v4,
            |key| {
                let len = key.prefix_len as u8;
                IndexedImage::enclosing(
                    &old_index.prefixes_v4,
                    &old_index.lengths_v4,
                    key.address,
                    len,
                )
            },
            |key| {
                let len = key.prefix_len as u8;
                IndexedImage::enclosing(
                    &new_index.prefixes_v4,
                    &new_index.lengths_v4,
                    key.address,
                    len,
                )
            },
        );
        let prefixes_v6 = MapDiff::new(
            &old_index.prefixes_v6,
            &new_index.prefixes_v6,
            |key| {
                let len = key.prefix_len as u8;
                IndexedImage::enclosing(
                    &old_index.prefixes_v6,
                    &old_index.lengths_v6,
                    key.address,
                    len,
                )
            },
            |key| {
                let len = key.prefix_len as u8;
                IndexedImage::enclosing(
                    &new_index.prefixes_v6,
                    &new_index.lengths_v6,
                    key.address,
                    len,
                )
            },
        );

        let mut transitions = Transitions::new(old, new);
        let staged_hosts_v4 = stage(&hosts_v4, &mut transitions)?;
        let staged_hosts_v6 = stage(&hosts_v6, &mut transitions)?;
        let staged_prefixes_v4 = stage(&prefixes_v4, &mut transitions)?;
        let staged_prefixes_v6 = stage(&prefixes_v6, &mut transitions)?;
        let transitional_limit = transitions.ids.values().max().map_or(0, |id| id + 1);
        self.check_class_capacity(transitional_limit as usize)?;

        // Step 0: cover flags grow to both images.
        let union_cover: Vec<u8> = old
            .image
            .cover_v4
            .iter()
            .zip(&new.image.cover_v4)
            .map(|(old_flags, new_flags)| old_flags | new_flags)
            .collect();
        self.write_cover_changes(&old.image.cover_v4, &union_cover)?;

        // Step 1: transitional classes, then the entries that use them.
        let active = self.generation;
        let idle = (active + 1) % intelwall_common::GENERATIONS;
        let mut active_entries: Vec<(u32, ClassRecord)> = Vec::new();
        let mut idle_entries: Vec<(u32, ClassRecord)> = new
            .image
            .classes
            .iter()
            .enumerate()
            .map(|(class, entry)| (class as u32, new_extras.record(class as u32, *entry)))
            .collect();
        for (&(old_class, new_class), &id) in &transitions.ids {
            let old_entry = old.image.classes[old_class as usize];
            let new_entry = new.image.classes[new_class as usize];
            active_entries.push((id, self.extras.record(old_class, old_entry)));
            idle_entries.push((id, new_extras.record(new_class, new_entry)));
        }
        self.write_class_slots(active, &active_entries)?;
        self.update(map_name::HOSTS_V4, &staged_hosts_v4.0, &staged_hosts_v4.1)?;
        self.update(map_name::HOSTS_V6, &staged_hosts_v6.0, &staged_hosts_v6.1)?;
        self.update(
            map_name::PREFIXES_V4,
            &staged_prefixes_v4.0,
            &staged_prefixes_v4.1,
        )?;
        self.update(
            map_name::PREFIXES_V6,
            &staged_prefixes_v6.0,
            &staged_prefixes_v6.1,
        )?;

        // Steps 2 and 3: the idle half, then the flip.
        self.write_class_slots(idle, &idle_entries)?;
        self.set_generation(idle)?;
        self.extras = new_extras;

        // Step 4: cleanup.
        let mut stats = UpdateStats {
            transitional: transitions.ids.len(),
            ..UpdateStats::default()
        };
        stats.add(&self.finish_map(map_name::HOSTS_V4, &hosts_v4)?);
        stats.add(&self.finish_map(map_name::HOSTS_V6, &hosts_v6)?);
        stats.add(&self.finish_map(map_name::PREFIXES_V4, &prefixes_v4)?);
        stats.add(&self.finish_map(map_name::PREFIXES_V6, &prefixes_v6)?);
        self.write_cover_changes(&union_cover, &new.image.cover_v4)?;
        Ok(stats)
    }

    /// Refuses class ids that the class counters do not cover, so that the
    /// maps are rebuilt before any packet goes uncounted.
    fn check_class_capacity(&self, class_ids: usize) -> Result<(), DataplaneError> {
        super::check_fits(&[(map_name::CLASS_COUNTERS, class_ids, self.capacity.classes)])
    }

    fn check_peak_capacity(
        &self,
        old: &IndexedImage,
        new: &IndexedImage,
    ) -> Result<(), DataplaneError> {
        // Between steps 1 and 4 a map contains the keys of both images.
        let checks = [
            (
                map_name::HOSTS_V4,
                peak_entries(&old.hosts_v4, &new.hosts_v4),
                self.capacity.hosts_v4,
            ),
            (
                map_name::HOSTS_V6,
                peak_entries(&old.hosts_v6, &new.hosts_v6),
                self.capacity.hosts_v6,
            ),
            (
                map_name::PREFIXES_V4,
                peak_entries(&old.prefixes_v4, &new.prefixes_v4),
                self.capacity.prefixes_v4,
            ),
            (
                map_name::PREFIXES_V6,
                peak_entries(&old.prefixes_v6, &new.prefixes_v6),
                self.capacity.prefixes_v6,
            ),
        ];
        super::check_fits(&checks)
    }

    /// Rewrites transitional entries to their final class and deletes the
    /// entries the new image drops.
    fn finish_map<K: super::batch::Plain>(
        &self,
        map: &'static str,
        diff: &MapDiff<K>,
    ) -> Result<UpdateStats, DataplaneError> {
        let mut keys = Vec::new();
        let mut classes = Vec::new();
        let mut removed = Vec::new();
        for change in &diff.changes {
            if change.remove {
                removed.push(change.key);
            } else if change.old_class != change.new_class {
                keys.push(change.key);
                classes.push(change.new_class);
            }
        }
        self.update(map, &keys, &classes)?;
        if !removed.is_empty() {
            self.delete(map, &removed)?;
        }
        Ok(UpdateStats {
            upserted: diff.changes.len() - removed.len(),
            removed: removed.len(),
            transitional: 0,
        })
    }

    fn write_cover_changes(&self, before: &[u8], after: &[u8]) -> Result<(), DataplaneError> {
        let (keys, values): (Vec<u32>, Vec<[u8; 1]>) = before
            .iter()
            .zip(after)
            .enumerate()
            .filter(|(_, (old, new))| old != new)
            .map(|(slot, (_, new))| (slot as u32, [*new]))
            .unzip();
        self.update(map_name::COVER_V4, &keys, &values)
    }
}

impl UpdateStats {
    fn add(&mut self, other: &UpdateStats) {
        self.upserted += other.upserted;
        self.removed += other.removed;
    }
}

impl Dataplane {
    /// A change that keeps every address entry (a rule edit that reuses the
    /// predicates, an action change, a reorder): the new verdicts go into the
    /// idle half of the class table, then one flip makes them visible. No
    /// address map is read or written.
    fn apply_rules_only(
        &mut self,
        new: Enforced<'_>,
        new_extras: ClassExtras,
    ) -> Result<UpdateStats, DataplaneError> {
        let idle = (self.generation + 1) % intelwall_common::GENERATIONS;
        let records: Vec<(u32, ClassRecord)> = new
            .image
            .classes
            .iter()
            .enumerate()
            .map(|(class, entry)| (class as u32, new_extras.record(class as u32, *entry)))
            .collect();
        self.write_class_slots(idle, &records)?;
        self.set_generation(idle)?;
        self.extras = new_extras;
        Ok(UpdateStats::default())
    }
}

/// Counts the keys of both maps together: a map's size at the peak of an
/// update.
fn peak_entries<K: Copy + Ord>(old: &[(K, u32)], new: &[(K, u32)]) -> usize {
    old.len() + new_only(old, new)
}

/// Keys of `new` that `old` lacks.
fn new_only<K: Copy + Ord>(old: &[(K, u32)], new: &[(K, u32)]) -> usize {
    let mut count = 0;
    let mut old_index = 0;
    for (key, _) in new {
        while old_index < old.len() && old[old_index].0 < *key {
            old_index += 1;
        }
        if old_index >= old.len() || old[old_index].0 != *key {
            count += 1;
        }
    }
    count
}

/// The keys and classes to write in step 1: the transitional class where
/// the class changes, the final class where it does not.
fn stage<K: Copy>(
    diff: &MapDiff<K>,
    transitions: &mut Transitions<'_>,
) -> Result<(Vec<K>, Vec<u32>), DataplaneError> {
    let mut keys = Vec::with_capacity(diff.changes.len());
    let mut classes = Vec::with_capacity(diff.changes.len());
    for change in &diff.changes {
        if change.remove && change.old_class == change.new_class {
            // The entry already shows the class it will fall back to.
            continue;
        }
        keys.push(change.key);
        classes.push(transitions.class_for(change.old_class, change.new_class)?);
    }
    Ok((keys, classes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(hosts: usize) -> MapImage {
        MapImage {
            hosts_v4: (0..hosts as u32).map(|n| (n.to_be_bytes(), 1)).collect(),
            hosts_v6: vec![([7; 16], 2)],
            prefixes_v4: vec![(24, [192, 0, 2, 0], 3)],
            ..MapImage::default()
        }
    }

    #[test]
    fn images_without_digest_compare_entries() {
        let old = image(300_000);
        assert!(old.same_entries(&old.clone()));

        let mut class_changed = old.clone();
        class_changed.hosts_v4[299_999].1 = 5;
        assert!(!old.same_entries(&class_changed));

        let mut key_changed = old.clone();
        key_changed.hosts_v4[0].0 = [10, 0, 0, 1];
        assert!(!old.same_entries(&key_changed));

        let mut v6_changed = old.clone();
        v6_changed.hosts_v6[0].1 = 1;
        assert!(!old.same_entries(&v6_changed));

        let mut prefix_changed = old.clone();
        prefix_changed.prefixes_v4[0].2 = 4;
        assert!(!old.same_entries(&prefix_changed));

        assert!(!old.same_entries(&image(299_999)));
    }
}
