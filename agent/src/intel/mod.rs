//! The intel store: every indicator (address or prefix) with its sightings.
//!
//! A sighting is one record of an indicator in one feed: the attribute values
//! that came with it, when it was last seen and its score. Indicators keep
//! every sighting rather than one flattened set per field, so that a rule can
//! ask for conditions that hold within a single sighting.
//!
//! Memory: strings are interned once, each attribute's list of values is
//! interned once, and a sighting's five lists are interned together as a
//! [`Profile`], because feeds repeat the same values and combinations across
//! millions of lines. A sighting is 16 bytes, and each feed keeps its
//! indicators in one sorted array rather than a hash map, so an IPv4
//! sighting costs 24 bytes in all (see `table.rs`).

mod profiles;
mod table;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use jiff::Timestamp;
use lasso::{Key, Rodeo, Spur};
use rustc_hash::FxBuildHasher;

pub use self::profiles::{ListId, Profile};
use self::profiles::{Lists, Profiles, intern_profile};
pub use self::table::{IndicatorTable, Indicators, Sightings, TableBuilder, TableCounts};

/// An interned string.
pub type Symbol = Spur;

/// Index of a feed in [`Intel::feeds`].
pub type FeedId = u16;

/// Index of a profile in the store; see [`Intel::profile`].
pub type ProfileId = u32;

/// The multi-valued attribute fields of a sighting, in the order of
/// [`Profile::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Attribute {
    AttackerNames,
    AttackerCountries,
    TargetCountries,
    TargetIndustries,
    Datasets,
}

impl Attribute {
    pub const ALL: [Attribute; 5] = [
        Attribute::AttackerNames,
        Attribute::AttackerCountries,
        Attribute::TargetCountries,
        Attribute::TargetIndustries,
        Attribute::Datasets,
    ];

    /// Key of the field in feed configs and JSON lines.
    pub const fn key(self) -> &'static str {
        match self {
            Attribute::AttackerNames => "attacker_names",
            Attribute::AttackerCountries => "attacker_countries",
            Attribute::TargetCountries => "target_countries",
            Attribute::TargetIndustries => "target_industries",
            Attribute::Datasets => "datasets",
        }
    }

    /// Whether values are ISO 3166-1 alpha-2 country codes.
    pub const fn is_country(self) -> bool {
        matches!(
            self,
            Attribute::AttackerCountries | Attribute::TargetCountries
        )
    }
}

/// Attribute values of a sighting in the making, in any order, possibly
/// repeated; [`Intel::profile_id`] sorts them and drops repeats.
#[derive(Clone, Debug, Default)]
pub struct ProfileDraft {
    values: [Vec<Symbol>; 5],
}

impl ProfileDraft {
    pub fn push(&mut self, attribute: Attribute, value: Symbol) {
        self.values[attribute as usize].push(value);
    }

    pub fn extend(&mut self, attribute: Attribute, values: impl IntoIterator<Item = Symbol>) {
        self.values[attribute as usize].extend(values);
    }

    pub fn values(&self, attribute: Attribute) -> &[Symbol] {
        &self.values[attribute as usize]
    }
}

/// One record of an indicator in one feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Sighting {
    /// Unix seconds of the last sighting; [`Sighting::NEVER`] when unknown.
    pub last_seen: i64,
    pub profile: ProfileId,
    pub feed: FeedId,
    /// 0 to 100; [`Sighting::NO_SCORE`] when the feed gave none.
    pub score: u8,
}

impl Sighting {
    pub const NEVER: i64 = i64::MIN;
    pub const NO_SCORE: u8 = u8::MAX;

    pub fn last_seen(&self) -> Option<Timestamp> {
        if self.last_seen == Self::NEVER {
            return None;
        }
        Timestamp::from_second(self.last_seen).ok()
    }

    pub fn score(&self) -> Option<u8> {
        (self.score != Self::NO_SCORE).then_some(self.score)
    }
}

/// Profiles of a fragment above which [`Intel::import_profiles`] copies
/// rather than deduplicates.
pub(crate) const IMPORT_DEDUP_LIMIT: usize = 1 << 16;

/// Profiles a store may gain over twice its baseline before
/// [`Intel::is_worth_rebuilding`] returns true.
const REBUILD_SLACK_PROFILES: usize = 1 << 16;

/// A feed as the store knows it.
#[derive(Clone, Debug)]
pub struct FeedInfo {
    pub name: String,
    pub symbol: Symbol,
}

/// Every indicator of every loaded feed: one sorted table a feed, merged
/// when read.
#[derive(Clone)]
pub struct Intel {
    strings: Rodeo<Spur, FxBuildHasher>,
    lists: Lists,
    profiles: Profiles,
    feeds: Vec<FeedInfo>,
    /// Indexed by [`FeedId`]; empty until the feed's load finishes. Shared,
    /// so that a reload that keeps a feed copies no indicators.
    tables: Vec<Arc<IndicatorTable>>,
    /// Profiles when the store was last built from nothing; see
    /// [`Intel::is_worth_rebuilding`].
    baseline_profiles: usize,
}

impl std::fmt::Debug for Intel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intel")
            .field("strings", &self.strings.len())
            .field("lists", &self.lists.len())
            .field("profiles", &self.profiles.len())
            .field("feeds", &self.feeds)
            .field(
                "records",
                &self.tables.iter().map(|table| table.len()).sum::<usize>(),
            )
            .finish()
    }
}

impl Default for Intel {
    fn default() -> Intel {
        Intel {
            strings: Rodeo::with_hasher(FxBuildHasher),
            lists: Lists::default(),
            profiles: Profiles::default(),
            feeds: Vec::new(),
            tables: Vec::new(),
            baseline_profiles: 0,
        }
    }
}

impl Intel {
    pub fn new() -> Intel {
        Intel::default()
    }

    pub fn intern(&mut self, value: &str) -> Symbol {
        self.strings.get_or_intern(value)
    }

    /// The symbol of a string if any loaded indicator or feed uses it.
    pub fn symbol(&self, value: &str) -> Option<Symbol> {
        self.strings.get(value)
    }

    pub fn resolve(&self, symbol: Symbol) -> &str {
        self.strings.resolve(&symbol)
    }

    /// Registers a feed and returns its id; a name registered before keeps
    /// its id.
    pub fn add_feed(&mut self, name: &str) -> FeedId {
        if let Some(id) = self.feeds.iter().position(|feed| feed.name == name) {
            return id as FeedId;
        }
        let symbol = self.intern(name);
        self.feeds.push(FeedInfo {
            name: name.to_owned(),
            symbol,
        });
        self.tables.push(Arc::default());
        (self.feeds.len() - 1) as FeedId
    }

    pub fn feeds(&self) -> &[FeedInfo] {
        &self.feeds
    }

    pub fn feed(&self, id: FeedId) -> &FeedInfo {
        &self.feeds[usize::from(id)]
    }

    pub fn profile_id(&mut self, mut draft: ProfileDraft) -> ProfileId {
        self.profile_of(&mut draft.values)
    }

    /// Returns the profile of attribute values indexed like
    /// [`Attribute::ALL`]. Each list is sorted and freed of repeats in place.
    pub fn profile_of(&mut self, values: &mut [Vec<Symbol>; 5]) -> ProfileId {
        intern_profile(&mut self.lists, &mut self.profiles, values)
    }

    pub fn profile(&self, id: ProfileId) -> Profile<'_> {
        Profile::new(&self.lists, self.profiles.get(id))
    }

    /// Returns the list ids of a profile's attributes, indexed like
    /// [`Attribute::ALL`].
    pub fn profile_lists(&self, id: ProfileId) -> [ListId; 5] {
        self.profiles.get(id)
    }

    pub fn list(&self, id: ListId) -> &[Symbol] {
        self.lists.get(id)
    }

    pub fn list_count(&self) -> usize {
        self.lists.len()
    }

    pub fn profile_count(&self) -> usize {
        self.profiles.len()
    }

    /// Returns every distinct value that some profile gives `attribute`,
    /// sorted by symbol.
    pub fn attribute_values(&self, attribute: Attribute) -> Vec<Symbol> {
        let mut seen = vec![false; self.lists.len()];
        for lists in self.profiles.all() {
            seen[lists[attribute as usize] as usize] = true;
        }
        let mut values: Vec<Symbol> = seen
            .iter()
            .enumerate()
            .filter(|(_, seen)| **seen)
            .flat_map(|(id, _)| self.lists.get(id as ListId).iter().copied())
            .collect();
        values.sort_unstable();
        values.dedup();
        values
    }

    /// Copies the strings, lists and profiles of `fragment`, a store that
    /// one worker filled while loading part of a feed, and returns each of
    /// its profile ids' id here. Profiles are deduplicated only when the
    /// fragment has few: a fragment with millions has lines that each carry
    /// their own mix, and looking each up would cost more than the copies.
    pub fn import_profiles(&mut self, fragment: &Intel) -> Vec<ProfileId> {
        let mut symbols: Vec<Option<Symbol>> = vec![None; fragment.strings.len()];
        for (symbol, text) in fragment.strings.iter() {
            symbols[symbol.into_usize()] = Some(self.strings.get_or_intern(text));
        }
        let mut values = Vec::new();
        let list_ids: Vec<ListId> =
            (0..fragment.lists.len())
                .map(|id| {
                    values.clear();
                    values.extend(fragment.lists.get(id as ListId).iter().map(|symbol| {
                        symbols[symbol.into_usize()].expect("every symbol is copied")
                    }));
                    values.sort_unstable();
                    self.lists.intern(&values)
                })
                .collect();
        let dedup = fragment.profiles.len() <= IMPORT_DEDUP_LIMIT;
        fragment
            .profiles
            .all()
            .iter()
            .map(|lists| {
                let lists = lists.map(|id| list_ids[id as usize]);
                if dedup {
                    self.profiles.intern(lists)
                } else {
                    self.profiles.push_unindexed(lists)
                }
            })
            .collect()
    }

    /// Makes room for `additional` more profiles.
    pub fn reserve_profiles(&mut self, additional: usize) {
        self.profiles.reserve(additional);
    }

    /// Returns the indicators of `feed`.
    pub fn table(&self, feed: FeedId) -> &IndicatorTable {
        &self.tables[usize::from(feed)]
    }

    /// Installs the indicators of `feed`, replacing what it had.
    pub fn set_table(&mut self, feed: FeedId, table: IndicatorTable) {
        self.tables[usize::from(feed)] = Arc::new(table);
    }

    /// Drops the indicators of `feed`; its name stays registered.
    pub fn clear_table(&mut self, feed: FeedId) {
        self.tables[usize::from(feed)] = Arc::default();
    }

    /// Marks the store as freshly built: profiles added from here on by
    /// reloaded feeds count towards [`Intel::is_worth_rebuilding`].
    pub fn set_baseline(&mut self) {
        self.baseline_profiles = self.profiles.len();
    }

    /// Returns whether reloads have added so many profiles that a store
    /// built from nothing would be much smaller. Profiles are never freed: a reloaded
    /// feed adds those it does not share with what is loaded, and those of
    /// its old contents stay.
    pub fn is_worth_rebuilding(&self) -> bool {
        self.profiles.len() > 2 * self.baseline_profiles + REBUILD_SLACK_PROFILES
    }

    /// Adds sightings outside a feed load, merging identical ones: for
    /// tests and tools that build a store by hand.
    pub fn add_sightings(&mut self, sightings: impl IntoIterator<Item = (IpNet, Sighting)>) {
        let mut by_feed: Vec<TableBuilder> = Vec::new();
        for (indicator, sighting) in sightings {
            let feed = usize::from(sighting.feed);
            if by_feed.len() <= feed {
                by_feed.resize_with(feed + 1, TableBuilder::default);
            }
            by_feed[feed].push(indicator, sighting);
        }
        for (feed, mut builder) in by_feed.into_iter().enumerate() {
            if builder.is_empty() {
                continue;
            }
            let table = std::mem::take(&mut self.tables[feed]);
            for (indicator, sightings) in Indicators::new(std::slice::from_ref(&table), &[]) {
                for sighting in sightings {
                    builder.push(indicator, sighting);
                }
            }
            self.tables[feed] = Arc::new(builder.finish().0);
        }
    }

    /// Returns every sighting of `indicator` in any feed.
    pub fn sightings(&self, indicator: &IpNet) -> Option<Sightings> {
        let mut found = Sightings::new();
        for table in &self.tables {
            table.sightings_of(indicator.trunc(), &mut found);
        }
        (!found.is_empty()).then_some(found)
    }

    /// Returns every indicator with the sightings of every feed, in the
    /// prefix tree's pre-order, IPv4 first.
    pub fn indicators(&self) -> Indicators<'_> {
        Indicators::new(&self.tables, &[])
    }

    /// [`Intel::indicators`], with `extra` prefixes in their place in the
    /// order; those that are no indicator come with no sightings.
    pub fn indicators_with(&self, extra: &[IpNet]) -> Indicators<'_> {
        Indicators::new(&self.tables, extra)
    }

    /// Distinct indicators across feeds. Walks every table.
    pub fn indicator_count(&self) -> usize {
        match self.tables.iter().filter(|table| !table.is_empty()).count() {
            0 => 0,
            1 => self.tables.iter().map(|table| table.indicators()).sum(),
            _ => self.indicators().count(),
        }
    }

    /// Bytes held by the indicator tables, lists and profiles (not strings).
    pub fn bytes(&self) -> usize {
        self.tables.iter().map(|table| table.bytes()).sum::<usize>()
            + self.lists.bytes()
            + self.profiles.bytes()
    }

    /// Every sighting that applies to `address`: those of the address itself
    /// and of every prefix that contains it. This walks all prefix lengths, so
    /// it suits `explain` and tests, not bulk work.
    pub fn sightings_covering(&self, address: IpAddr) -> Vec<(IpNet, Sighting)> {
        let max_len = match address {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let mut found = Vec::new();
        for len in 0..=max_len {
            let Ok(net) = IpNet::new(address, len) else {
                continue;
            };
            let net = net.trunc();
            if let Some(sightings) = self.sightings(&net) {
                found.extend(sightings.iter().map(|s| (net, *s)));
            }
        }
        found
    }
}

/// Folds an IPv4-mapped IPv6 address (::ffff:a.b.c.d) to IPv4, so that one
/// address has one spelling in the maps.
pub fn canonical_address(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile_with(intel: &mut Intel, name: &str) -> ProfileId {
        let mut draft = ProfileDraft::default();
        let symbol = intel.intern(name);
        draft.push(Attribute::AttackerNames, symbol);
        intel.profile_id(draft)
    }

    #[test]
    fn store_grown_by_reloads_asks_to_be_rebuilt() {
        let mut intel = Intel::new();
        for index in 0..1000 {
            profile_with(&mut intel, &format!("actor {index}"));
        }
        intel.set_baseline();
        assert!(!intel.is_worth_rebuilding());
        // A reloaded feed whose every line has a new actor.
        for index in 0..(1000 + REBUILD_SLACK_PROFILES) {
            profile_with(&mut intel, &format!("new actor {index}"));
        }
        assert!(!intel.is_worth_rebuilding());
        profile_with(&mut intel, "one more");
        assert!(intel.is_worth_rebuilding());
    }

    #[test]
    fn same_values_in_any_order_share_a_profile() {
        let mut intel = Intel::new();
        let (a, b) = (intel.intern("a"), intel.intern("b"));
        let mut first = ProfileDraft::default();
        first.extend(Attribute::Datasets, [b, a, b]);
        let mut second = ProfileDraft::default();
        second.extend(Attribute::Datasets, [a, b]);
        let id = intel.profile_id(first);
        assert_eq!(intel.profile_id(second), id);
        assert_eq!(intel.profile(id).values(Attribute::Datasets), [a, b]);
        assert_eq!(intel.profile(id).values(Attribute::AttackerNames), []);
    }
}
