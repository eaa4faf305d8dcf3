//! Reading the per-CPU counters, from the loaded program or from the maps
//! pinned by a running (or stopped) agent.
//!
//! aya's per-CPU reads size their buffer for the possible CPUs
//! (/sys/devices/system/cpu/possible), not the online ones, so a CPU brought
//! online later, or one offline now that counted before, is never missed.

use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray};
use intelwall_common::{
    Counter, EVENT_COUNTER_SLOTS, PATH_COUNTER_SLOTS, TAG_COUNTER_SLOTS, map_name,
};

use super::DataplaneError;

/// Every counter at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Packets and bytes per interface slot, then per class id.
    pub classes: Vec<Vec<Counter>>,
    /// Packets and bytes per interface slot, then per
    /// [`intelwall_common::PathCounter`] slot.
    pub paths: Vec<Vec<Counter>>,
    /// Per [`intelwall_common::TagCounter`] slot.
    pub tags: Vec<Counter>,
    /// Per [`intelwall_common::EventCounter`] slot.
    pub events: Vec<Counter>,
}

/// Finds a map by name.
type FindMap<'a> = Box<dyn Fn(&str) -> Option<&'a Map> + 'a>;

/// The counter maps, found by name.
pub struct CounterMaps<'a> {
    find: FindMap<'a>,
}

impl<'a> CounterMaps<'a> {
    pub fn new(find: impl Fn(&str) -> Option<&'a Map> + 'a) -> CounterMaps<'a> {
        CounterMaps {
            find: Box::new(find),
        }
    }

    fn map(&self, name: &'static str) -> Result<&'a Map, DataplaneError> {
        (self.find)(name).ok_or(DataplaneError::MissingMap(name))
    }

    fn per_cpu<T: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<PerCpuArray<&'a MapData, T>, DataplaneError> {
        PerCpuArray::try_from(self.map(name)?)
            .map_err(|source| DataplaneError::Read { map: name, source })
    }

    /// The unnamed slot plus one per named interface, as the maps were
    /// sized at load.
    pub fn interface_slots(&self) -> Result<u32, DataplaneError> {
        Ok((self.max_entries(map_name::PATH_COUNTERS)? / PATH_COUNTER_SLOTS).max(1))
    }

    /// Class counters per interface slot, as the maps were sized at load.
    pub fn class_slots(&self) -> Result<u32, DataplaneError> {
        Ok(self.max_entries(map_name::CLASS_COUNTERS)? / self.interface_slots()?)
    }

    fn max_entries(&self, name: &'static str) -> Result<u32, DataplaneError> {
        let info = super::map_data(self.map(name)?)
            .info()
            .map_err(|source| DataplaneError::Read { map: name, source })?;
        Ok(info.max_entries())
    }

    /// Class counters of the first `classes` ids, per interface slot. Ids
    /// beyond the counters read as zero.
    pub fn class_counters(&self, classes: usize) -> Result<Vec<Vec<Counter>>, DataplaneError> {
        let per_slot = self.class_slots()?;
        let counted = classes.min(per_slot as usize) as u32;
        let map = self.per_cpu::<Counter>(map_name::CLASS_COUNTERS)?;
        (0..self.interface_slots()?)
            .map(|slot| {
                let first = slot * per_slot;
                let mut counters = sum_range(&map, map_name::CLASS_COUNTERS, first, counted)?;
                counters.resize(classes, Counter::default());
                Ok(counters)
            })
            .collect()
    }

    /// Path counters per interface slot.
    pub fn path_counters(&self) -> Result<Vec<Vec<Counter>>, DataplaneError> {
        let map = self.per_cpu::<Counter>(map_name::PATH_COUNTERS)?;
        (0..self.interface_slots()?)
            .map(|slot| {
                let first = slot * PATH_COUNTER_SLOTS;
                sum_range(&map, map_name::PATH_COUNTERS, first, PATH_COUNTER_SLOTS)
            })
            .collect()
    }

    pub fn snapshot(&self, classes: usize) -> Result<Snapshot, DataplaneError> {
        let tags = self.per_cpu::<Counter>(map_name::TAG_COUNTERS)?;
        let events = self.per_cpu::<Counter>(map_name::EVENT_COUNTERS)?;
        Ok(Snapshot {
            classes: self.class_counters(classes)?,
            paths: self.path_counters()?,
            tags: sum_range(&tags, map_name::TAG_COUNTERS, 0, TAG_COUNTER_SLOTS)?,
            events: sum_range(&events, map_name::EVENT_COUNTERS, 0, EVENT_COUNTER_SLOTS)?,
        })
    }
}

/// The pinned counter maps of a map set directory, opened without loading
/// any program.
pub struct PinnedCounterMaps {
    maps: Vec<(&'static str, Map)>,
}

impl PinnedCounterMaps {
    pub fn open(dir: &Path) -> Result<PinnedCounterMaps, DataplaneError> {
        let names = [
            map_name::CLASS_COUNTERS,
            map_name::PATH_COUNTERS,
            map_name::TAG_COUNTERS,
            map_name::EVENT_COUNTERS,
        ];
        let maps = names
            .into_iter()
            .map(|name| {
                let path = dir.join(name);
                let data = MapData::from_pin(&path).map_err(|source| DataplaneError::Pin {
                    path: path.clone(),
                    source: std::io::Error::other(source),
                })?;
                let map = Map::from_map_data(data)
                    .map_err(|source| DataplaneError::Read { map: name, source })?;
                Ok((name, map))
            })
            .collect::<Result<_, DataplaneError>>()?;
        Ok(PinnedCounterMaps { maps })
    }

    pub fn counters(&self) -> CounterMaps<'_> {
        CounterMaps::new(|name| {
            self.maps
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, map)| map)
        })
    }
}

/// `count` consecutive slots from `first`, each summed over CPUs.
fn sum_range(
    map: &PerCpuArray<&MapData, Counter>,
    name: &'static str,
    first: u32,
    count: u32,
) -> Result<Vec<Counter>, DataplaneError> {
    (first..first + count)
        .map(|index| {
            let per_cpu = map
                .get(&index, 0)
                .map_err(|source| DataplaneError::Read { map: name, source })?;
            Ok(per_cpu
                .iter()
                .fold(Counter::default(), |sum, counter| Counter {
                    packets: sum.packets + counter.packets,
                    bytes: sum.bytes + counter.bytes,
                }))
        })
        .collect()
}

/// Adds the counters of every interface slot together.
pub fn sum_slots(by_slot: &[Vec<Counter>]) -> Vec<Counter> {
    let len = by_slot.iter().map(Vec::len).max().unwrap_or(0);
    let mut total = vec![Counter::default(); len];
    for slot in by_slot {
        for (sum, counter) in total.iter_mut().zip(slot) {
            sum.packets += counter.packets;
            sum.bytes += counter.bytes;
        }
    }
    total
}
