//! The intel store: every indicator (address or prefix) with its sightings.
//!
//! A sighting is one record of an indicator in one feed: the attribute values
//! that came with it, when it was last seen and its score. Indicators keep
//! every sighting rather than one flattened set per field, so that a rule can
//! ask for conditions that hold within a single sighting.
//!
//! Memory: strings are interned once; the five attribute lists of a sighting
//! are interned together as a [`Profile`], because a feed repeats the same few
//! combinations across thousands of lines. A sighting is then 16 bytes.

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;
use lasso::{Rodeo, Spur};
use rustc_hash::{FxBuildHasher, FxHashMap as HashMap};
use smallvec::SmallVec;

/// An interned string.
pub type Symbol = Spur;

/// Index of a feed in [`Intel::feeds`].
pub type FeedId = u16;

/// Index of a profile in [`Intel::profiles`].
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

/// The attribute lists of one sighting, each sorted and without duplicates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Profile {
    values: [Box<[Symbol]>; 5],
}

impl Profile {
    pub fn values(&self, attribute: Attribute) -> &[Symbol] {
        &self.values[attribute as usize]
    }
}

/// Builds a [`Profile`] from values in any order, possibly repeated.
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

    fn finish(mut self) -> Profile {
        let values = std::array::from_fn(|i| {
            let list = &mut self.values[i];
            list.sort_unstable();
            list.dedup();
            std::mem::take(list).into_boxed_slice()
        });
        Profile { values }
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

/// Sightings of one indicator; almost every indicator has one or two.
pub type Sightings = SmallVec<[Sighting; 1]>;

/// A feed as the store knows it.
#[derive(Clone, Debug)]
pub struct FeedInfo {
    pub name: String,
    pub symbol: Symbol,
}

/// Every indicator of every loaded feed, merged by indicator.
pub struct Intel {
    strings: Rodeo<Spur, FxBuildHasher>,
    profiles: Vec<Profile>,
    profile_ids: HashMap<Profile, ProfileId>,
    feeds: Vec<FeedInfo>,
    indicators: HashMap<IpNet, Sightings>,
}

impl std::fmt::Debug for Intel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Intel")
            .field("strings", &self.strings.len())
            .field("profiles", &self.profiles.len())
            .field("feeds", &self.feeds)
            .field("indicators", &self.indicators.len())
            .finish()
    }
}

impl Default for Intel {
    fn default() -> Intel {
        Intel {
            strings: Rodeo::with_hasher(FxBuildHasher),
            profiles: Vec::new(),
            profile_ids: HashMap::default(),
            feeds: Vec::new(),
            indicators: HashMap::default(),
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
        (self.feeds.len() - 1) as FeedId
    }

    pub fn feeds(&self) -> &[FeedInfo] {
        &self.feeds
    }

    pub fn feed(&self, id: FeedId) -> &FeedInfo {
        &self.feeds[usize::from(id)]
    }

    pub fn profile_id(&mut self, draft: ProfileDraft) -> ProfileId {
        let profile = draft.finish();
        if let Some(&id) = self.profile_ids.get(&profile) {
            return id;
        }
        let id = self.profiles.len() as ProfileId;
        self.profiles.push(profile.clone());
        self.profile_ids.insert(profile, id);
        id
    }

    pub fn profiles(&self) -> &[Profile] {
        &self.profiles
    }

    pub fn profile(&self, id: ProfileId) -> &Profile {
        &self.profiles[id as usize]
    }

    /// Adds a sighting of `indicator`. An identical sighting (same feed,
    /// profile, time and score) is merged rather than repeated. Returns
    /// whether the indicator was new to the store.
    pub fn add_sighting(&mut self, indicator: IpNet, sighting: Sighting) -> bool {
        match self.indicators.entry(indicator) {
            std::collections::hash_map::Entry::Occupied(mut entry) => {
                let sightings = entry.get_mut();
                if !sightings.contains(&sighting) {
                    sightings.push(sighting);
                }
                false
            }
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(smallvec::smallvec![sighting]);
                true
            }
        }
    }

    pub fn sightings(&self, indicator: &IpNet) -> Option<&[Sighting]> {
        self.indicators.get(indicator).map(|s| s.as_slice())
    }

    pub fn indicators(&self) -> impl Iterator<Item = (&IpNet, &[Sighting])> {
        self.indicators.iter().map(|(net, s)| (net, s.as_slice()))
    }

    pub fn indicator_count(&self) -> usize {
        self.indicators.len()
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
            if let Some(sightings) = self.indicators.get(&net) {
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
