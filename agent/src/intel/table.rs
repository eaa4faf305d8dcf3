//! The indicators of one feed, as sorted arrays of (key, sighting) records.
//!
//! A feed's records are appended while it loads and sorted once at the end,
//! which merges duplicates without a hash table. The sort order is the
//! pre-order of the prefix tree: network address, then shorter prefix
//! first. The compiler walks prefixes and their addresses in that order, so
//! walking every feed at once is a merge of sorted runs.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use smallvec::SmallVec;

use super::{ProfileId, Sighting};

/// An IPv4 indicator: address in the high 32 bits, prefix length in the
/// low 8, so that integer order is the prefix tree's pre-order.
pub type V4Key = u64;

/// An IPv6 indicator: address halves, then prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct V6Key(u64, u64, u8);

fn v4_key(net: Ipv4Net) -> V4Key {
    (u64::from(u32::from(net.network())) << 8) | u64::from(net.prefix_len())
}

fn v4_net(key: V4Key) -> Ipv4Net {
    let address = Ipv4Addr::from((key >> 8) as u32);
    Ipv4Net::new(address, (key & 0xff) as u8).expect("a key contains a valid prefix length")
}

fn v6_key(net: Ipv6Net) -> V6Key {
    let address = u128::from(net.network());
    V6Key((address >> 64) as u64, address as u64, net.prefix_len())
}

fn v6_net(key: V6Key) -> Ipv6Net {
    let address = Ipv6Addr::from((u128::from(key.0) << 64) | u128::from(key.1));
    Ipv6Net::new(address, key.2).expect("a key contains a valid prefix length")
}

/// Sightings of one indicator; almost every indicator has one or two.
pub type Sightings = SmallVec<[Sighting; 2]>;

/// Counts of a finished table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// Distinct indicators.
    pub indicators: u64,
    /// Distinct sightings.
    pub sightings: u64,
    /// Records identical to another (same indicator, profile, time and
    /// score), merged into it.
    pub merged: u64,
}

/// Records of one feed, collected in any order.
#[derive(Debug, Default)]
pub struct TableBuilder {
    v4: Vec<(V4Key, Sighting)>,
    v6: Vec<(V6Key, Sighting)>,
}

impl TableBuilder {
    pub fn push(&mut self, indicator: IpNet, sighting: Sighting) {
        match indicator {
            IpNet::V4(net) => self.v4.push((v4_key(net.trunc()), sighting)),
            IpNet::V6(net) => self.v6.push((v6_key(net.trunc()), sighting)),
        }
    }

    /// Moves the records of `other` in. Into an empty builder, that takes
    /// `other`'s arrays without copying them.
    pub fn append(&mut self, other: &mut TableBuilder) {
        append_records(&mut self.v4, &mut other.v4);
        append_records(&mut self.v6, &mut other.v6);
    }

    /// Makes room for `additional` more records of each family at most, so
    /// that appending them copies the records once.
    pub fn reserve(&mut self, additional_v4: usize, additional_v6: usize) {
        self.v4.reserve_exact(additional_v4);
        self.v6.reserve_exact(additional_v6);
    }

    /// Returns the number of records of each family: IPv4, then IPv6.
    pub fn family_lens(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Applies `change` to every sighting, on every core.
    pub fn rewrite(&mut self, change: impl Fn(&mut Sighting) + Sync) {
        use rayon::iter::{IntoParallelRefMutIterator, ParallelIterator};
        self.v4
            .par_iter_mut()
            .for_each(|(_, sighting)| change(sighting));
        self.v6
            .par_iter_mut()
            .for_each(|(_, sighting)| change(sighting));
    }

    /// Sorts the records and merges identical ones.
    pub fn finish(self) -> (IndicatorTable, TableCounts) {
        self.finish_with(|profile| profile)
    }

    /// [`TableBuilder::finish`], where records merge when their profiles
    /// have the same `content`: a store may hold one mix of values under
    /// several ids (see [`super::Intel::import_profiles`]).
    pub fn finish_with<C: Eq + std::hash::Hash>(
        self,
        content: impl Fn(ProfileId) -> C,
    ) -> (IndicatorTable, TableCounts) {
        let (v4, v4_counts) = sorted_run(self.v4, &content);
        let (v6, v6_counts) = sorted_run(self.v6, &content);
        let counts = TableCounts {
            indicators: v4_counts.indicators + v6_counts.indicators,
            sightings: v4_counts.sightings + v6_counts.sightings,
            merged: v4_counts.merged + v6_counts.merged,
        };
        let table = IndicatorTable {
            v4,
            v6,
            indicators: counts.indicators as usize,
        };
        (table, counts)
    }
}

fn append_records<T>(into: &mut Vec<T>, from: &mut Vec<T>) {
    if into.is_empty() && into.capacity() < from.len() {
        std::mem::swap(into, from);
    } else {
        into.append(from);
    }
}

fn sorted_run<K: Copy + Ord + Send, C: Eq + std::hash::Hash>(
    mut records: Vec<(K, Sighting)>,
    content: &impl Fn(ProfileId) -> C,
) -> (Vec<(K, Sighting)>, TableCounts) {
    use rayon::slice::ParallelSliceMut;
    // Sorting by every field puts identical records next to each other and
    // makes the order of one indicator's sightings independent of line order.
    records.par_sort_unstable_by_key(|(key, sighting)| {
        (
            *key,
            sighting.profile,
            sighting.last_seen,
            sighting.score,
            sighting.feed,
        )
    });
    let before = records.len() as u64;
    records.dedup();
    merge_equal_profiles(&mut records, content);
    records.shrink_to_fit();
    let mut indicators = 0;
    let mut previous = None;
    for (key, _) in &records {
        if previous != Some(*key) {
            indicators += 1;
            previous = Some(*key);
        }
    }
    let counts = TableCounts {
        indicators,
        sightings: records.len() as u64,
        merged: before - records.len() as u64,
    };
    (records, counts)
}

/// Runs of one indicator's records up to this long are merged by comparing
/// every pair; longer ones through a hash set.
const PAIRWISE_RUN: usize = 16;

/// Drops the records of an indicator that equal an earlier record of it in
/// every field once profile ids are replaced by `content`, the values they
/// stand for. Profiles are looked up only when the other fields are equal,
/// which is rare, so this is one pass over the records.
fn merge_equal_profiles<K: Copy + Ord, C: Eq + std::hash::Hash>(
    records: &mut Vec<(K, Sighting)>,
    content: &impl Fn(ProfileId) -> C,
) {
    let mut kept = 0;
    let mut start = 0;
    while start < records.len() {
        let key = records[start].0;
        let mut end = start + 1;
        while end < records.len() && records[end].0 == key {
            end += 1;
        }
        let run_kept = kept;
        if end - start > PAIRWISE_RUN {
            let mut seen = std::collections::HashSet::new();
            for index in start..end {
                let sighting = records[index].1;
                let fields = (sighting.last_seen, sighting.score, sighting.feed);
                if seen.insert((fields, content(sighting.profile))) {
                    records[kept] = records[index];
                    kept += 1;
                }
            }
        } else {
            for index in start..end {
                let sighting = records[index].1;
                let repeated = records[run_kept..kept].iter().any(|(_, earlier)| {
                    earlier.last_seen == sighting.last_seen
                        && earlier.score == sighting.score
                        && earlier.feed == sighting.feed
                        && content(earlier.profile) == content(sighting.profile)
                });
                if !repeated {
                    records[kept] = records[index];
                    kept += 1;
                }
            }
        }
        start = end;
    }
    records.truncate(kept);
}

impl AsRef<IndicatorTable> for IndicatorTable {
    fn as_ref(&self) -> &IndicatorTable {
        self
    }
}

/// The indicators of one feed, sorted.
#[derive(Clone, Debug, Default)]
pub struct IndicatorTable {
    v4: Vec<(V4Key, Sighting)>,
    v6: Vec<(V6Key, Sighting)>,
    indicators: usize,
}

impl IndicatorTable {
    /// Distinct indicators.
    pub fn indicators(&self) -> usize {
        self.indicators
    }

    /// Returns the number of records, one a sighting.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns the bytes the records take.
    pub fn bytes(&self) -> usize {
        self.v4.capacity() * size_of::<(V4Key, Sighting)>()
            + self.v6.capacity() * size_of::<(V6Key, Sighting)>()
    }

    /// Adds the sightings of `indicator` to `out`.
    pub fn sightings_of(&self, indicator: IpNet, out: &mut Sightings) {
        match indicator {
            IpNet::V4(net) => extend_matching(&self.v4, v4_key(net), out),
            IpNet::V6(net) => extend_matching(&self.v6, v6_key(net), out),
        }
    }
}

impl IndicatorTable {
    /// Returns the distinct indicators that contain `net` or lie inside it,
    /// `net` itself included. Binary searches: one for the run of indicators
    /// inside `net`, one for each wider prefix length.
    pub fn overlapping(&self, net: IpNet) -> Vec<IpNet> {
        let mut found = Vec::new();
        match net.trunc() {
            IpNet::V4(net) => {
                for len in 0..net.prefix_len() {
                    let wider = Ipv4Net::new(net.network(), len)
                        .expect("shorter length")
                        .trunc();
                    if contains_key(&self.v4, v4_key(wider)) {
                        found.push(IpNet::V4(wider));
                    }
                }
                let first = v4_key(net);
                let last = (u64::from(u32::from(net.broadcast())) << 8) | 0xff;
                let inside = key_run(&self.v4, first, last);
                found.extend(distinct_keys(inside).map(|key| IpNet::V4(v4_net(key))));
            }
            IpNet::V6(net) => {
                for len in 0..net.prefix_len() {
                    let wider = Ipv6Net::new(net.network(), len)
                        .expect("shorter length")
                        .trunc();
                    if contains_key(&self.v6, v6_key(wider)) {
                        found.push(IpNet::V6(wider));
                    }
                }
                let first = v6_key(net);
                let broadcast = u128::from(net.broadcast());
                let last = V6Key((broadcast >> 64) as u64, broadcast as u64, u8::MAX);
                let inside = key_run(&self.v6, first, last);
                found.extend(distinct_keys(inside).map(|key| IpNet::V6(v6_net(key))));
            }
        }
        found
    }

    /// Returns the distinct indicators whose prefix is shorter than `len`.
    pub fn shorter_than(&self, len: u8) -> Vec<IpNet> {
        let v4 = distinct_keys(&self.v4)
            .filter(|key| ((key & 0xff) as u8) < len)
            .map(|key| IpNet::V4(v4_net(key)));
        let v6 = distinct_keys(&self.v6)
            .filter(|key| key.2 < len)
            .map(|key| IpNet::V6(v6_net(key)));
        v4.chain(v6).collect()
    }
}

fn contains_key<K: Copy + Ord>(records: &[(K, Sighting)], key: K) -> bool {
    records
        .binary_search_by(|(other, _)| other.cmp(&key))
        .is_ok()
}

/// Returns the records whose keys lie between `first` and `last`, both
/// included.
fn key_run<K: Copy + Ord>(records: &[(K, Sighting)], first: K, last: K) -> &[(K, Sighting)] {
    let start = records.partition_point(|(key, _)| *key < first);
    let end = records.partition_point(|(key, _)| *key <= last);
    &records[start..end.max(start)]
}

/// Returns each key of sorted `records` once, although an indicator has a
/// record for each sighting.
fn distinct_keys<K: Copy + Ord>(records: &[(K, Sighting)]) -> impl Iterator<Item = K> + '_ {
    records
        .iter()
        .enumerate()
        .filter(|&(index, (key, _))| index == 0 || records[index - 1].0 != *key)
        .map(|(_, (key, _))| *key)
}

fn extend_matching<K: Copy + Ord>(records: &[(K, Sighting)], key: K, out: &mut Sightings) {
    let start = records.partition_point(|(other, _)| *other < key);
    out.extend(
        records[start..]
            .iter()
            .take_while(|(other, _)| *other == key)
            .map(|(_, sighting)| *sighting),
    );
}

/// Every indicator of several tables, and extra prefixes with no sightings
/// of their own, in the prefix tree's pre-order: IPv4 first, then IPv6.
/// An indicator in several tables comes once, with the sightings of all.
pub struct Indicators<'a> {
    v4: Merge<'a, V4Key>,
    v6: Merge<'a, V6Key>,
}

impl<'a> Indicators<'a> {
    pub fn new<T: AsRef<IndicatorTable>>(tables: &'a [T], extra: &[IpNet]) -> Indicators<'a> {
        let mut extra_v4 = Vec::new();
        let mut extra_v6 = Vec::new();
        for net in extra {
            match net {
                IpNet::V4(net) => extra_v4.push(v4_key(net.trunc())),
                IpNet::V6(net) => extra_v6.push(v6_key(net.trunc())),
            }
        }
        Indicators {
            v4: Merge::new(
                tables.iter().map(|table| table.as_ref().v4.as_slice()),
                extra_v4,
            ),
            v6: Merge::new(
                tables.iter().map(|table| table.as_ref().v6.as_slice()),
                extra_v6,
            ),
        }
    }
}

impl Iterator for Indicators<'_> {
    type Item = (IpNet, Sightings);

    fn next(&mut self) -> Option<(IpNet, Sightings)> {
        if let Some((key, sightings)) = self.v4.next() {
            return Some((IpNet::V4(v4_net(key)), sightings));
        }
        let (key, sightings) = self.v6.next()?;
        Some((IpNet::V6(v6_net(key)), sightings))
    }
}

/// A merge of sorted runs. Runs are few (one per feed), so the smallest
/// head is found by a scan rather than a heap.
struct Merge<'a, K> {
    runs: Vec<&'a [(K, Sighting)]>,
    extra: Vec<K>,
    extra_at: usize,
}

impl<'a, K: Copy + Ord> Merge<'a, K> {
    fn new(runs: impl Iterator<Item = &'a [(K, Sighting)]>, mut extra: Vec<K>) -> Merge<'a, K> {
        extra.sort_unstable();
        extra.dedup();
        Merge {
            runs: runs.filter(|run| !run.is_empty()).collect(),
            extra,
            extra_at: 0,
        }
    }

    fn next(&mut self) -> Option<(K, Sightings)> {
        let mut key = self.extra.get(self.extra_at).copied();
        for run in &self.runs {
            if let Some((head, _)) = run.first() {
                key = Some(key.map_or(*head, |key| key.min(*head)));
            }
        }
        let key = key?;
        if self.extra.get(self.extra_at) == Some(&key) {
            self.extra_at += 1;
        }
        let mut sightings = Sightings::new();
        for run in &mut self.runs {
            let matching = run.iter().take_while(|(head, _)| *head == key).count();
            sightings.extend(run[..matching].iter().map(|(_, sighting)| *sighting));
            *run = &run[matching..];
        }
        Some((key, sightings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    fn sighting(profile: u32, feed: u16) -> Sighting {
        Sighting {
            last_seen: 0,
            profile,
            feed,
            score: Sighting::NO_SCORE,
        }
    }

    #[test]
    fn keys_order_prefixes_before_what_they_contain() {
        let mut builder = TableBuilder::default();
        for text in [
            "10.0.0.5/32",
            "10.0.0.0/8",
            "9.255.255.255/32",
            "10.0.0.0/24",
            "2001:db8::1/128",
            "2001:db8::/32",
        ] {
            builder.push(net(text), sighting(0, 0));
        }
        let (table, counts) = builder.finish();
        assert_eq!(counts.indicators, 6);
        let order: Vec<String> = Indicators::new(std::slice::from_ref(&table), &[])
            .map(|(net, _)| net.to_string())
            .collect();
        assert_eq!(
            order,
            [
                "9.255.255.255/32",
                "10.0.0.0/8",
                "10.0.0.0/24",
                "10.0.0.5/32",
                "2001:db8::/32",
                "2001:db8::1/128"
            ]
        );
    }

    #[test]
    fn identical_records_merge_and_different_ones_stay() {
        let mut builder = TableBuilder::default();
        builder.push(net("192.0.2.1/32"), sighting(1, 0));
        builder.push(net("192.0.2.1/32"), sighting(1, 0));
        builder.push(net("192.0.2.1/32"), sighting(2, 0));
        builder.push(net("192.0.2.2/32"), sighting(1, 0));
        let (table, counts) = builder.finish();
        assert_eq!(
            counts,
            TableCounts {
                indicators: 2,
                sightings: 3,
                merged: 1
            }
        );
        let mut found = Sightings::new();
        table.sightings_of(net("192.0.2.1/32"), &mut found);
        assert_eq!(found.as_slice(), [sighting(1, 0), sighting(2, 0)]);
    }

    #[test]
    fn merge_joins_feeds_and_extra_prefixes() {
        let mut first = TableBuilder::default();
        first.push(net("192.0.2.1/32"), sighting(1, 0));
        first.push(net("192.0.2.3/32"), sighting(1, 0));
        let mut second = TableBuilder::default();
        second.push(net("192.0.2.1/32"), sighting(2, 1));
        second.push(net("192.0.2.2/32"), sighting(2, 1));
        let tables = [first.finish().0, second.finish().0];
        let merged: Vec<(String, usize)> =
            Indicators::new(&tables, &[net("192.0.2.0/24"), net("192.0.2.2/32")])
                .map(|(net, sightings)| (net.to_string(), sightings.len()))
                .collect();
        assert_eq!(
            merged,
            [
                ("192.0.2.0/24".to_owned(), 0),
                ("192.0.2.1/32".to_owned(), 2),
                ("192.0.2.2/32".to_owned(), 1),
                ("192.0.2.3/32".to_owned(), 1)
            ]
        );
    }

    /// Random nets inside 10.0.0.0/8 and 2001:db8::/32, so that many of
    /// them nest.
    fn random_nets(rng: &mut fastrand::Rng, count: usize) -> Vec<IpNet> {
        (0..count)
            .map(|_| {
                if rng.bool() {
                    let address = Ipv4Addr::from(0x0a00_0000 | rng.u32(..0x0001_0000) << 8);
                    IpNet::V4(Ipv4Net::new(address, rng.u8(8..=32)).unwrap().trunc())
                } else {
                    let low = u128::from(rng.u16(..)) << 80;
                    let address = Ipv6Addr::from(0x2001_0db8_u128 << 96 | low);
                    IpNet::V6(Ipv6Net::new(address, rng.u8(32..=128)).unwrap().trunc())
                }
            })
            .collect()
    }

    #[test]
    fn overlapping_matches_a_scan() {
        let mut rng = fastrand::Rng::with_seed(7);
        let nets = random_nets(&mut rng, 2_000);
        let mut builder = TableBuilder::default();
        for (index, net) in nets.iter().enumerate() {
            // Two sightings for some indicators: each must come once.
            builder.push(*net, sighting(index as u32, 0));
            if index % 3 == 0 {
                builder.push(*net, sighting(index as u32 + 1, 0));
            }
        }
        let (table, _) = builder.finish();
        let mut distinct = nets.clone();
        distinct.sort();
        distinct.dedup();

        for query in random_nets(&mut rng, 300) {
            let mut found = table.overlapping(query);
            found.sort();
            let expected: Vec<IpNet> = distinct
                .iter()
                .filter(|net| net.contains(&query) || query.contains(*net))
                .copied()
                .collect();
            assert_eq!(found, expected, "indicators overlapping {query}");
        }
    }

    #[test]
    fn shorter_than_lists_each_wide_prefix_once() {
        let mut builder = TableBuilder::default();
        for text in [
            "10.0.0.0/8",
            "10.0.0.0/8",
            "10.1.0.0/16",
            "2001:db8::/16",
            "2001:db8::/32",
        ] {
            builder.push(net(text), sighting(0, 0));
        }
        let (table, _) = builder.finish();
        assert_eq!(
            table.shorter_than(17),
            [net("10.0.0.0/8"), net("10.1.0.0/16"), net("2001::/16")]
        );
    }

    #[test]
    fn records_with_equal_profile_values_merge() {
        // Profiles 2k and 2k+1 stand for the same values. A short run is
        // compared pair by pair, a long one through a hash set.
        for run in [3u32, 40] {
            let mut builder = TableBuilder::default();
            for index in 0..run {
                let mut record = sighting(index * 2, 0);
                record.last_seen = i64::from(index);
                builder.push(net("192.0.2.1/32"), record);
            }
            let mut twin = sighting(1, 0);
            twin.last_seen = 0;
            builder.push(net("192.0.2.1/32"), twin);
            let mut other_time = sighting(3, 0);
            other_time.last_seen = 99;
            builder.push(net("192.0.2.1/32"), other_time);

            let (table, counts) = builder.finish_with(|profile| profile / 2);
            assert_eq!(counts.merged, 1, "run of {run}");
            assert_eq!(counts.sightings, u64::from(run) + 1, "run of {run}");
            assert_eq!(table.len(), run as usize + 1, "run of {run}");
        }
    }
}
