//! Compiles rules and intel into a map image.
//!
//! Every distinct predicate that the rules use gets one bit. Each map entry
//! (an indicator, or a prefix a rule names through `ip.src`) gets the bitmask
//! of the predicates that hold for it, evaluated over its own sightings plus
//! those of every prefix that contains it. Each distinct bitmask is a class.
//! The agent evaluates every rule once per class and stores the resulting
//! fate in the class table, so the kernel does one table read per packet
//! whatever the number of rules.
//!
//! An entry is written to the maps only when its class differs from the
//! class a lookup would find without it (that of its nearest enclosing
//! prefix, or the class of an address in no map). The empty record may set
//! bits too: `all(...)` over no values is true.

use std::fmt;
use std::net::IpAddr;

use intelwall_common::{CLASS_NONE, COVER_V4_ENTRIES, ClassEntry, Fate, MAX_CLASSES, cover};
use ipnet::IpNet;
use jiff::Timestamp;
use rustc_hash::FxHashMap;

use crate::config::Action;
use crate::intel::{FeedId, Intel, ListId, ProfileId, Sighting};
use crate::rule::{AddressView, Expr, Predicate, Quantifier};

/// Predicates a compilation may use: the width of a class bitmask.
pub const MAX_PREDICATES: usize = 128;

/// A bitmask of predicates, bit `i` for `Compiled::predicates[i]`.
pub type Bits = u128;

/// A rule ready to compile: name, checked expression, what it does.
#[derive(Clone, Debug)]
pub struct RuleSpec {
    pub name: String,
    /// The expression as written in the config.
    pub source: String,
    pub expr: Expr,
    pub action: Action,
    pub mark: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(
        "the rules use {count} distinct predicates, more than the {MAX_PREDICATES} a class bitmask holds; \
         rules from `{first_over}` on are over the budget (rules: {rules}); merge or drop conditions"
    )]
    TooManyPredicates {
        count: usize,
        first_over: String,
        rules: String,
    },
    #[error(
        "the intel splits into {count} classes (distinct predicate combinations), more than the table's {MAX_CLASSES}; \
         rules with many narrow predicates cause this"
    )]
    TooManyClasses { count: usize },
}

/// The verdict for one class and the rules that match it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassVerdict {
    pub fate: Fate,
    pub mark: u32,
    /// Index of the rule that decided the fate.
    pub decided_by: Option<usize>,
    /// Indices of every matching rule, `log` rules included, in rule order.
    pub matched: Vec<usize>,
}

impl ClassVerdict {
    /// The verdict stored for a free class id.
    fn unused() -> ClassVerdict {
        ClassVerdict {
            fate: Fate::Pass,
            mark: 0,
            decided_by: None,
            matched: Vec::new(),
        }
    }

    pub fn entry(&self) -> ClassEntry {
        ClassEntry {
            fate: self.fate as u32,
            mark: self.mark,
        }
    }
}

/// The contents of every kernel map, as the agent will write them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapImage {
    pub hosts_v4: Vec<([u8; 4], u32)>,
    pub hosts_v6: Vec<([u8; 16], u32)>,
    pub prefixes_v4: Vec<(u8, [u8; 4], u32)>,
    pub prefixes_v6: Vec<(u8, [u8; 16], u32)>,
    /// One flag byte per IPv4 /16, see [`intelwall_common::cover`].
    pub cover_v4: Vec<u8>,
    /// Class table, indexed by class id.
    pub classes: Vec<ClassEntry>,
    /// SHA-256 of the address entries and cover flags, set by [`compile`]
    /// so that two images can be found to hold the same entries without
    /// comparing millions of them. Code that changes the entries of a
    /// compiled image must reset it to `None`.
    pub entries_digest: Option<[u8; 32]>,
}

impl MapImage {
    /// Returns whether `self` and `other` hold the same address entries
    /// with the same class ids and the same cover flags, so that only
    /// their class tables may differ.
    pub fn same_entries(&self, other: &MapImage) -> bool {
        let lengths = |image: &MapImage| {
            (
                image.hosts_v4.len(),
                image.hosts_v6.len(),
                image.prefixes_v4.len(),
                image.prefixes_v6.len(),
            )
        };
        if lengths(self) != lengths(other) {
            return false;
        }
        match (self.entries_digest, other.entries_digest) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => {
                self.hosts_v4 == other.hosts_v4
                    && self.hosts_v6 == other.hosts_v6
                    && self.prefixes_v4 == other.prefixes_v4
                    && self.prefixes_v6 == other.prefixes_v6
                    && self.cover_v4 == other.cover_v4
            }
        }
    }

    /// Computes [`MapImage::entries_digest`]. Each map's part starts with
    /// its entry count, so that entries cannot move from one map to the next
    /// without changing the digest.
    pub fn digest_entries(&self) -> [u8; 32] {
        let mut digest = Digest::default();
        digest.part(&self.hosts_v4, |(key, class), out| {
            out.extend_from_slice(key);
            out.extend_from_slice(&class.to_le_bytes());
        });
        digest.part(&self.hosts_v6, |(key, class), out| {
            out.extend_from_slice(key);
            out.extend_from_slice(&class.to_le_bytes());
        });
        digest.part(&self.prefixes_v4, |(len, address, class), out| {
            out.push(*len);
            out.extend_from_slice(address);
            out.extend_from_slice(&class.to_le_bytes());
        });
        digest.part(&self.prefixes_v6, |(len, address, class), out| {
            out.push(*len);
            out.extend_from_slice(address);
            out.extend_from_slice(&class.to_le_bytes());
        });
        digest.part(&self.cover_v4, |flag, out| out.push(*flag));
        digest.finish()
    }
}

/// SHA-256 over entries written into a small buffer, so that hashing an
/// image copies none of its maps whole.
struct Digest {
    context: ring::digest::Context,
    buffer: Vec<u8>,
}

impl Default for Digest {
    fn default() -> Digest {
        Digest {
            context: ring::digest::Context::new(&ring::digest::SHA256),
            buffer: Vec::with_capacity(DIGEST_BUFFER_BYTES + 64),
        }
    }
}

const DIGEST_BUFFER_BYTES: usize = 64 * 1024;

impl Digest {
    fn part<T>(&mut self, entries: &[T], write: impl Fn(&T, &mut Vec<u8>)) {
        self.buffer
            .extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for entry in entries {
            write(entry, &mut self.buffer);
            if self.buffer.len() >= DIGEST_BUFFER_BYTES {
                self.context.update(&self.buffer);
                self.buffer.clear();
            }
        }
    }

    fn finish(mut self) -> [u8; 32] {
        self.context.update(&self.buffer);
        let digest = self.context.finish();
        digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
    }
}

/// Bits of predicates and ids of classes, kept from one compilation to the
/// next. A predicate keeps its bit and a bitmask keeps its class id for as
/// long as they are in use. So a rule edit that reuses predicates leaves
/// every address entry as it is, and a feed diff rewrites only the
/// addresses whose bitmask changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Registry {
    /// Canonical text of the predicate on each bit; `None` for a free bit.
    bits: BitNames,
    /// Bitmask of each class id; `None` for a free id. Id 0 is always the
    /// bitmask of an address in no map.
    classes: Vec<Option<Bits>>,
}

impl Registry {
    /// Class ids in use.
    pub fn class_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.classes
            .iter()
            .enumerate()
            .filter(|(_, bits)| bits.is_some())
            .map(|(id, _)| id as u32)
    }

    pub fn class_count(&self) -> usize {
        self.classes.iter().filter(|bits| bits.is_some()).count()
    }

    /// One past the highest class id in use.
    pub fn class_id_limit(&self) -> usize {
        self.classes
            .iter()
            .rposition(Option::is_some)
            .map_or(1, |id| id + 1)
    }

    pub fn is_class_in_use(&self, id: u32) -> bool {
        self.classes.get(id as usize).is_some_and(Option::is_some)
    }
}

/// The contents of the maps: an image and the registry that gives its class
/// ids their meaning.
#[derive(Clone, Copy, Debug)]
pub struct Enforced<'a> {
    pub registry: &'a Registry,
    pub image: &'a MapImage,
}

/// The result of a compilation.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// Predicates by bit; `None` where a bit is free.
    pub predicates: Vec<Option<Predicate>>,
    pub rules: Vec<RuleSpec>,
    /// Bitmask of each class id; `None` where an id is free. Class 0 is the
    /// record of an address in no map.
    pub class_bits: Vec<Option<Bits>>,
    /// Verdict of each class id; free ids hold a pass verdict matching no
    /// rule.
    pub verdicts: Vec<ClassVerdict>,
    /// Per rule, how many indicators of the intel store it selects.
    pub selected: Vec<u64>,
    pub image: MapImage,
    /// When time-dependent predicates were evaluated.
    pub now: Timestamp,
    /// Bits and class ids to start the next compilation from.
    pub registry: Registry,
}

impl Compiled {
    pub fn enforced(&self) -> Enforced<'_> {
        Enforced {
            registry: &self.registry,
            image: &self.image,
        }
    }

    /// Every class whose verdict lists `rule` among its matches.
    pub fn classes_matching(&self, rule: usize) -> impl Iterator<Item = u32> + '_ {
        self.verdicts
            .iter()
            .enumerate()
            .filter(move |(_, verdict)| verdict.matched.contains(&rule))
            .map(|(class, _)| class as u32)
    }

    /// The verdict the kernel reaches for `address`, computed from the image
    /// the same way the kernel looks it up.
    pub fn verdict_for(&self, address: IpAddr) -> (u32, &ClassVerdict) {
        let class = lookup_image(&self.image, address);
        (class, &self.verdicts[class as usize])
    }
}

impl fmt::Display for ClassVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.fate)
    }
}

/// Compiles `rules` over `intel`, evaluating time-dependent predicates at
/// `now`, keeping the bits and class ids of `previous` where they still apply.
pub fn compile(
    rules: Vec<RuleSpec>,
    intel: &Intel,
    now: Timestamp,
    previous: &Registry,
) -> Result<Compiled, CompileError> {
    let (predicates, bit_names) = assign_bits(&rules, previous)?;

    let mut classes = ClassAssigner::new(previous);
    let by_profile = profile_bits(&predicates, intel, now);
    let mut evaluators: Vec<Evaluator<'_>> = (0..rayon::current_num_threads())
        .map(|_| Evaluator::new(&predicates, intel, now, by_profile.as_deref()))
        .collect();
    let empty_bits = evaluators[0].bits(None, &[]);
    classes.set_miss_class(empty_bits);

    let extra = named_prefixes(&predicates);
    let (mut image, class_indicators) = if intel.profile_count() >= BATCHED_WALK_PROFILES {
        walk_in_batches(intel, &extra, &mut evaluators, &mut classes, empty_bits)
    } else {
        walk(intel, &extra, &mut evaluators[0], &mut classes)
    };

    let class_bits = classes.finish();
    let in_use = class_bits.iter().filter(|bits| bits.is_some()).count();
    if class_bits.len() > MAX_CLASSES as usize {
        return Err(CompileError::TooManyClasses { count: in_use });
    }
    let verdicts: Vec<ClassVerdict> = class_bits
        .iter()
        .map(|bits| match bits {
            Some(bits) => decide(&rules, &predicates, *bits),
            None => ClassVerdict::unused(),
        })
        .collect();

    let mut selected = vec![0u64; rules.len()];
    for (class, count) in class_indicators.iter().enumerate() {
        for rule in &verdicts[class].matched {
            selected[*rule] += count;
        }
    }

    image.classes = verdicts.iter().map(ClassVerdict::entry).collect();
    image.cover_v4 = cover_v4(&image);
    image.entries_digest = Some(image.digest_entries());
    let registry = Registry {
        bits: bit_names,
        classes: class_bits.clone(),
    };
    Ok(Compiled {
        predicates,
        rules,
        class_bits,
        verdicts,
        selected,
        image,
        now,
        registry,
    })
}

/// Canonical text of the predicate on each bit; `None` for a free bit.
type BitNames = Vec<Option<String>>;

/// Gives every distinct predicate of the rules a bit: the bit it had in
/// `previous` if it had one, otherwise the lowest free bit.
fn assign_bits(
    rules: &[RuleSpec],
    previous: &Registry,
) -> Result<(Vec<Option<Predicate>>, BitNames), CompileError> {
    let mut wanted: Vec<(Predicate, String, &str)> = Vec::new();
    for rule in rules {
        for predicate in rule.expr.predicates() {
            let name = predicate.to_string();
            if !wanted.iter().any(|(_, known, _)| *known == name) {
                wanted.push((predicate, name, rule.name.as_str()));
            }
        }
    }
    if wanted.len() > MAX_PREDICATES {
        let names: Vec<&str> = rules.iter().map(|rule| rule.name.as_str()).collect();
        return Err(CompileError::TooManyPredicates {
            count: wanted.len(),
            first_over: wanted[MAX_PREDICATES].2.to_owned(),
            rules: names.join(", "),
        });
    }

    let mut names: Vec<Option<String>> = previous
        .bits
        .iter()
        .map(|name| {
            name.clone()
                .filter(|name| wanted.iter().any(|(_, known, _)| known == name))
        })
        .collect();
    let mut predicates: Vec<Option<Predicate>> = vec![None; names.len()];
    for (predicate, name, _) in wanted {
        let bit = match names
            .iter()
            .position(|known| known.as_deref() == Some(name.as_str()))
        {
            Some(bit) => bit,
            None => match names.iter().position(Option::is_none) {
                Some(free) => free,
                None => {
                    names.push(None);
                    predicates.push(None);
                    names.len() - 1
                }
            },
        };
        if bit >= MAX_PREDICATES {
            // Bits kept for predicates in use plus new ones never exceed the
            // count checked above, so a free bit below the limit exists.
            unreachable!(
                "bit {bit} beyond {MAX_PREDICATES} with at most {MAX_PREDICATES} predicates"
            );
        }
        names[bit] = Some(name);
        predicates[bit] = Some(predicate);
    }
    Ok((predicates, names))
}

/// Returns every prefix a predicate names through `ip.src`. Each is an
/// entry of its own, whether or not a feed lists it.
fn named_prefixes(predicates: &[Option<Predicate>]) -> Vec<IpNet> {
    predicates
        .iter()
        .flatten()
        .filter_map(Predicate::addresses)
        .flatten()
        .map(IpNet::trunc)
        .collect()
}

/// A prefix whose contents the walk is inside.
struct OpenPrefix {
    net: IpNet,
    sightings: Vec<Sighting>,
    bits: ParentBits,
}

/// The bitmask of an entry's nearest enclosing prefix.
#[derive(Clone, Copy)]
enum ParentBits {
    /// No prefix encloses the entry: a lookup without it finds the class of
    /// an address in no map.
    None,
    /// The prefix is in the batch being filled, at this index.
    InBatch(usize),
    /// The prefix was in an earlier batch.
    Known(Bits),
}

/// Profiles from which [`walk_in_batches`] replaces [`walk`]. With fewer,
/// the per-profile table stays in the CPU caches, so evaluating an entry is
/// cheaper than handing it to another core. On the 2-core test machine, a
/// million-address list compiled in 44 ms on one thread against 120 ms in
/// batches. With ten million profiles, batches took 2.0 to 2.5 s against
/// 2.7 s.
const BATCHED_WALK_PROFILES: usize = 1 << 20;

/// Walks every entry in pre-order on this thread, returning the image and
/// the indicators of each class id.
fn walk(
    intel: &Intel,
    extra: &[IpNet],
    evaluator: &mut Evaluator<'_>,
    classes: &mut ClassAssigner<'_>,
) -> (MapImage, Vec<u64>) {
    let mut image = MapImage::default();
    let mut class_indicators: Vec<u64> = Vec::new();
    let mut open: Vec<(IpNet, Vec<Sighting>, u32)> = Vec::new();
    let mut sightings: Vec<Sighting> = Vec::new();
    for (net, own) in intel.indicators_with(extra) {
        while open.last().is_some_and(|(top, _, _)| !top.contains(&net)) {
            open.pop();
        }
        sightings.clear();
        for (_, ancestor, _) in &open {
            sightings.extend_from_slice(ancestor);
        }
        sightings.extend_from_slice(&own);
        let class = classes.class_of(evaluator.bits(Some(net), &sightings));
        if !own.is_empty() {
            let slot = class as usize;
            if class_indicators.len() <= slot {
                class_indicators.resize(slot + 1, 0);
            }
            class_indicators[slot] += 1;
        }
        let inherited = open.last().map_or(CLASS_NONE, |(_, _, class)| *class);
        if class != inherited {
            push_entry(&mut image, net, class);
        }
        if net.prefix_len() < net.max_prefix_len() {
            open.push((net, own.to_vec(), class));
        }
    }
    (image, class_indicators)
}

/// Walks every entry in pre-order like [`walk`], evaluating the bitmasks of
/// each batch of entries on every core.
fn walk_in_batches(
    intel: &Intel,
    extra: &[IpNet],
    evaluators: &mut [Evaluator<'_>],
    classes: &mut ClassAssigner<'_>,
    empty_bits: Bits,
) -> (MapImage, Vec<u64>) {
    let mut batch = Batch::default();
    let mut out = Output {
        image: MapImage::default(),
        class_indicators: Vec::new(),
        empty_bits,
    };
    let mut open: Vec<OpenPrefix> = Vec::new();
    for (net, own) in intel.indicators_with(extra) {
        while open.last().is_some_and(|top| !top.net.contains(&net)) {
            open.pop();
        }
        let start = batch.sightings.len();
        for ancestor in &open {
            batch.sightings.extend_from_slice(&ancestor.sightings);
        }
        batch.sightings.extend_from_slice(&own);
        let index = batch.entries.len();
        batch.entries.push(PendingEntry {
            net,
            sightings: start..batch.sightings.len(),
            is_indicator: !own.is_empty(),
            parent: open.last().map_or(ParentBits::None, |parent| parent.bits),
        });
        if net.prefix_len() < net.max_prefix_len() {
            open.push(OpenPrefix {
                net,
                sightings: own.to_vec(),
                bits: ParentBits::InBatch(index),
            });
        }
        if batch.entries.len() == BATCH_ENTRIES {
            batch.flush(evaluators, classes, &mut out, &mut open);
        }
    }
    batch.flush(evaluators, classes, &mut out, &mut open);
    (out.image, out.class_indicators)
}

/// Entries per batch: enough to keep every core busy, few enough that the
/// batch's sightings stay small.
const BATCH_ENTRIES: usize = 1 << 16;

/// An entry waiting for its bitmask.
struct PendingEntry {
    net: IpNet,
    /// Its sightings and those of every enclosing prefix, in
    /// [`Batch::sightings`].
    sightings: std::ops::Range<usize>,
    is_indicator: bool,
    parent: ParentBits,
}

/// Entries in walk order whose bitmasks are evaluated together, on every
/// core. Class ids are then given out in walk order on one thread, so that
/// they do not depend on how the work was split.
#[derive(Default)]
struct Batch {
    entries: Vec<PendingEntry>,
    sightings: Vec<Sighting>,
}

/// The walk's results.
struct Output {
    image: MapImage,
    /// Indicators per class id, to count what each rule selects.
    class_indicators: Vec<u64>,
    /// The bitmask of an address in no map.
    empty_bits: Bits,
}

impl Batch {
    fn flush(
        &mut self,
        evaluators: &mut [Evaluator<'_>],
        classes: &mut ClassAssigner<'_>,
        out: &mut Output,
        open: &mut [OpenPrefix],
    ) {
        use rayon::prelude::*;
        if self.entries.is_empty() {
            return;
        }
        let chunk = self.entries.len().div_ceil(evaluators.len());
        let sightings = &self.sightings;
        let bits: Vec<Bits> = evaluators
            .par_iter_mut()
            .zip(self.entries.par_chunks(chunk))
            .map(|(evaluator, entries)| {
                entries
                    .iter()
                    .map(|entry| {
                        evaluator.bits(Some(entry.net), &sightings[entry.sightings.clone()])
                    })
                    .collect::<Vec<Bits>>()
            })
            .collect::<Vec<_>>()
            .concat();

        for (entry, &entry_bits) in self.entries.iter().zip(&bits) {
            let class = classes.class_of(entry_bits);
            if entry.is_indicator {
                let slot = class as usize;
                if out.class_indicators.len() <= slot {
                    out.class_indicators.resize(slot + 1, 0);
                }
                out.class_indicators[slot] += 1;
            }
            // Equal bitmasks are the same class, so the entry changes what a
            // lookup finds only when its bitmask differs from its parent's.
            let inherited = match entry.parent {
                ParentBits::None => out.empty_bits,
                ParentBits::InBatch(index) => bits[index],
                ParentBits::Known(bits) => bits,
            };
            if entry_bits != inherited {
                push_entry(&mut out.image, entry.net, class);
            }
        }
        for prefix in open.iter_mut() {
            if let ParentBits::InBatch(index) = prefix.bits {
                prefix.bits = ParentBits::Known(bits[index]);
            }
        }
        self.entries.clear();
        self.sightings.clear();
    }
}

/// Evaluates the predicates over entries, caching per-sighting results.
///
/// Most predicates (`any(...)`, `all(...)`, event blocks without numbers)
/// combine a result per sighting that depends only on the sighting's
/// profile and feed, and most feeds repeat a few profiles across millions
/// of lines. So the results of all such predicates for one (profile, feed)
/// are kept, as a bitmask, and an entry's bits are the OR (for `any`) or
/// AND (for `all`) of its sightings' masks. The cache has a fixed number of
/// slots, each holding the last pair hashed to it: a feed whose every line
/// has its own profile gains nothing from a cache, and must not grow one
/// as large as itself.
struct Evaluator<'a> {
    predicates: &'a [Option<Predicate>],
    intel: &'a Intel,
    now: Timestamp,
    /// Bits combined as OR over sightings.
    any_bits: Bits,
    /// Bits combined as AND over sightings.
    all_bits: Bits,
    /// The bits among `any_bits | all_bits` that hold for one sighting of
    /// each profile, when they do not depend on the feed; see
    /// [`profile_bits`].
    by_profile: Option<&'a [Bits]>,
    /// (profile, feed) and the bits among `any_bits | all_bits` that hold
    /// for one sighting with that profile and feed, in the slot the pair
    /// hashes to. Used when `by_profile` is `None`.
    cache: Vec<Option<(ProfileId, FeedId, Bits)>>,
}

/// Maximum profiles for which [`profile_bits`] builds its table (256 MiB).
const MAX_PROFILE_TABLE: usize = 1 << 24;

/// Evaluates, for every profile, the predicates whose truth over a sighting
/// follows from its profile alone, on every core. `None` when a predicate
/// reads the feed name, or when the table would be too large; the
/// evaluators then cache by (profile, feed) instead. A table read is a few
/// nanoseconds where a cache on ten million sightings misses the CPU caches
/// at almost every read.
///
/// An attribute-array predicate depends on one attribute's list of values
/// alone, and lists are far fewer than profiles. So it is evaluated once per
/// list, and a profile takes its result by list id.
fn profile_bits(
    predicates: &[Option<Predicate>],
    intel: &Intel,
    now: Timestamp,
) -> Option<Vec<Bits>> {
    use rayon::prelude::*;
    let cached: Vec<(usize, &Predicate)> = predicates
        .iter()
        .enumerate()
        .filter_map(|(bit, predicate)| Some((bit, predicate.as_ref()?)))
        .filter(|(_, predicate)| predicate.sighting_combination().is_some())
        .collect();
    if cached.iter().any(|(_, predicate)| predicate.reads_feed())
        || intel.profile_count() > MAX_PROFILE_TABLE
    {
        return None;
    }
    let mut by_list: Vec<(Bits, usize, Vec<bool>)> = Vec::new();
    let mut by_profile: Vec<(usize, &Predicate)> = Vec::new();
    for (bit, predicate) in cached {
        match predicate.attribute() {
            Some(attribute) => {
                let results = (0..intel.list_count() as ListId)
                    .into_par_iter()
                    .map(|list| {
                        let values = intel.list(list).iter().map(|symbol| intel.resolve(*symbol));
                        predicate
                            .eval_values(values)
                            .expect("an attribute predicate evaluates over values")
                    })
                    .collect();
                by_list.push((1 << bit, attribute as usize, results));
            }
            None => by_profile.push((bit, predicate)),
        }
    }
    let table = (0..intel.profile_count() as ProfileId)
        .into_par_iter()
        .map(|profile| {
            let lists = intel.profile_lists(profile);
            let mut bits: Bits = 0;
            for (bit, attribute, results) in &by_list {
                if results[lists[*attribute] as usize] {
                    bits |= bit;
                }
            }
            if by_profile.is_empty() {
                return bits;
            }
            let sighting = Sighting {
                last_seen: Sighting::NEVER,
                profile,
                feed: 0,
                score: Sighting::NO_SCORE,
            };
            let view = AddressView {
                intel,
                address: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                sightings: std::slice::from_ref(&sighting),
                now,
            };
            for (bit, predicate) in &by_profile {
                if predicate.eval(&view) {
                    bits |= 1 << bit;
                }
            }
            bits
        })
        .collect();
    Some(table)
}

/// Maximum slots of the evaluator's cache: 32 MiB.
const MAX_CACHE_SLOTS: usize = 1 << 20;

/// Returns the cache size for `profiles` profiles: one slot a profile, a
/// power of two up to [`MAX_CACHE_SLOTS`].
fn cache_slots(profiles: usize) -> usize {
    profiles.next_power_of_two().clamp(1 << 10, MAX_CACHE_SLOTS)
}

/// Returns the slot of (profile, feed) among `slots`.
fn cache_slot(profile: ProfileId, feed: FeedId, slots: usize) -> usize {
    let key = (u64::from(feed) << 32) | u64::from(profile);
    // Fibonacci hashing spreads consecutive profile ids across the slots.
    (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - slots.trailing_zeros())) as usize
}

impl<'a> Evaluator<'a> {
    fn new(
        predicates: &'a [Option<Predicate>],
        intel: &'a Intel,
        now: Timestamp,
        by_profile: Option<&'a [Bits]>,
    ) -> Evaluator<'a> {
        let mut any_bits: Bits = 0;
        let mut all_bits: Bits = 0;
        for (bit, predicate) in predicates.iter().enumerate() {
            match predicate.as_ref().and_then(Predicate::sighting_combination) {
                Some(Quantifier::Any) => any_bits |= 1 << bit,
                Some(Quantifier::All) => all_bits |= 1 << bit,
                None => {}
            }
        }
        Evaluator {
            predicates,
            intel,
            now,
            any_bits,
            all_bits,
            by_profile,
            cache: match by_profile {
                Some(_) => Vec::new(),
                None => vec![None; cache_slots(intel.profile_count())],
            },
        }
    }

    /// The bitmask of an entry (`None`: an address in no map) whose record
    /// is `sightings`.
    fn bits(&mut self, net: Option<IpNet>, sightings: &[Sighting]) -> Bits {
        // An address in no map has no sightings, so any address can represent
        // it in field predicates. Address predicates are false for it because
        // every address they name is an entry of its own.
        let address = net.map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |net| {
            net.network()
        });
        let mut any_holds: Bits = 0;
        let mut all_hold: Bits = self.all_bits;
        for sighting in sightings {
            let holds = self.sighting_bits(address, sighting);
            any_holds |= holds & self.any_bits;
            all_hold &= holds;
        }
        let mut bits = any_holds | all_hold;

        let cached = self.any_bits | self.all_bits;
        for (bit, predicate) in self.predicates.iter().enumerate() {
            let Some(predicate) = predicate else {
                continue;
            };
            if cached & (1 << bit) != 0 {
                continue;
            }
            let holds = match predicate.addresses() {
                Some(named) => {
                    net.is_some_and(|net| named.iter().any(|member| member.contains(&net)))
                }
                None => predicate.eval(&AddressView {
                    intel: self.intel,
                    address,
                    sightings,
                    now: self.now,
                }),
            };
            if holds {
                bits |= 1 << bit;
            }
        }
        bits
    }

    /// The cached predicates that hold for one sighting alone.
    fn sighting_bits(&mut self, address: IpAddr, sighting: &Sighting) -> Bits {
        if let Some(table) = self.by_profile {
            return table[sighting.profile as usize];
        }
        let slot = cache_slot(sighting.profile, sighting.feed, self.cache.len());
        if let Some((profile, feed, bits)) = self.cache[slot]
            && profile == sighting.profile
            && feed == sighting.feed
        {
            return bits;
        }
        let view = AddressView {
            intel: self.intel,
            address,
            sightings: std::slice::from_ref(sighting),
            now: self.now,
        };
        let cached = self.any_bits | self.all_bits;
        let mut bits: Bits = 0;
        for (bit, predicate) in self.predicates.iter().enumerate() {
            if cached & (1 << bit) != 0
                && let Some(predicate) = predicate
                && predicate.eval(&view)
            {
                bits |= 1 << bit;
            }
        }
        self.cache[slot] = Some((sighting.profile, sighting.feed, bits));
        bits
    }
}

/// Evaluates every rule over one class's bitmask, in order.
fn decide(rules: &[RuleSpec], predicates: &[Option<Predicate>], bits: Bits) -> ClassVerdict {
    let mut verdict = ClassVerdict {
        fate: Fate::Pass,
        mark: 0,
        decided_by: None,
        matched: Vec::new(),
    };
    for (index, rule) in rules.iter().enumerate() {
        let matches = rule.expr.eval_with(&mut |predicate| {
            let bit = predicates
                .iter()
                .position(|known| known.as_ref() == Some(predicate))
                .expect("every predicate of a rule has a bit");
            bits & (1 << bit) != 0
        });
        if !matches {
            continue;
        }
        verdict.matched.push(index);
        if verdict.decided_by.is_some() || rule.action == Action::Log {
            continue;
        }
        verdict.decided_by = Some(index);
        verdict.fate = match rule.action {
            Action::Drop => Fate::Drop,
            Action::Allow => Fate::Allow,
            Action::Tag => Fate::Tag,
            Action::Log => unreachable!("log rules never decide"),
        };
        if rule.action == Action::Tag {
            verdict.mark = rule.mark;
        }
    }
    verdict
}

/// Hands out class ids: a bitmask keeps the id it had in the previous
/// registry, and a new bitmask takes an id that the previous registry did not
/// use, so that no id changes meaning while old map entries may still
/// point at it.
struct ClassAssigner<'a> {
    previous: &'a Registry,
    previous_ids: FxHashMap<Bits, u32>,
    bits: Vec<Option<Bits>>,
    ids: FxHashMap<Bits, u32>,
    /// The last bitmask looked up and its id: neighbouring entries of a
    /// feed mostly share a class, so this skips most hash lookups.
    last: Option<(Bits, u32)>,
    next_free: usize,
}

impl<'a> ClassAssigner<'a> {
    fn new(previous: &'a Registry) -> ClassAssigner<'a> {
        let previous_ids = previous
            .classes
            .iter()
            .enumerate()
            .filter_map(|(id, bits)| bits.map(|bits| (bits, id as u32)))
            .collect();
        ClassAssigner {
            previous,
            previous_ids,
            bits: Vec::new(),
            ids: FxHashMap::default(),
            last: None,
            next_free: 1,
        }
    }

    /// Makes `bits` the bitmask of class 0, the class of an address in no map.
    fn set_miss_class(&mut self, bits: Bits) {
        self.bits = vec![Some(bits)];
        self.ids.insert(bits, CLASS_NONE);
    }

    fn class_of(&mut self, bits: Bits) -> u32 {
        if let Some((last_bits, id)) = self.last
            && last_bits == bits
        {
            return id;
        }
        let id = self.assign(bits);
        self.last = Some((bits, id));
        id
    }

    fn assign(&mut self, bits: Bits) -> u32 {
        if let Some(&id) = self.ids.get(&bits) {
            return id;
        }
        let id = match self.previous_ids.get(&bits) {
            Some(&id) if id != CLASS_NONE => id,
            _ => self.fresh_id(),
        };
        let slot = id as usize;
        if self.bits.len() <= slot {
            self.bits.resize(slot + 1, None);
        }
        self.bits[slot] = Some(bits);
        self.ids.insert(bits, id);
        id
    }

    fn fresh_id(&mut self) -> u32 {
        loop {
            let id = self.next_free;
            self.next_free += 1;
            let taken_now = self.bits.get(id).is_some_and(Option::is_some);
            let taken_before = self.previous.is_class_in_use(id as u32);
            if !taken_now && !taken_before {
                return id as u32;
            }
        }
    }

    fn finish(self) -> Vec<Option<Bits>> {
        self.bits
    }
}

fn push_entry(image: &mut MapImage, net: IpNet, class: u32) {
    match net {
        IpNet::V4(v4) if v4.prefix_len() == 32 => image.hosts_v4.push((v4.addr().octets(), class)),
        IpNet::V4(v4) => image
            .prefixes_v4
            .push((v4.prefix_len(), v4.network().octets(), class)),
        IpNet::V6(v6) if v6.prefix_len() == 128 => image.hosts_v6.push((v6.addr().octets(), class)),
        IpNet::V6(v6) => image
            .prefixes_v6
            .push((v6.prefix_len(), v6.network().octets(), class)),
    }
}

/// Flags for every /16 that contains a host entry or overlaps a prefix entry.
fn cover_v4(image: &MapImage) -> Vec<u8> {
    let mut flags = vec![0u8; COVER_V4_ENTRIES as usize];
    for (octets, _) in &image.hosts_v4 {
        flags[region(octets)] |= cover::HOSTS;
    }
    for (len, octets, _) in &image.prefixes_v4 {
        let first = region(octets);
        let count = if *len >= 16 { 1 } else { 1usize << (16 - len) };
        for slot in &mut flags[first..first + count] {
            *slot |= cover::PREFIXES;
        }
    }
    flags
}

fn region(octets: &[u8; 4]) -> usize {
    usize::from(octets[0]) << 8 | usize::from(octets[1])
}

/// Looks `address` up in an image as the XDP program does: host entry, then
/// the longest prefix, then class 0.
pub fn lookup_image(image: &MapImage, address: IpAddr) -> u32 {
    match crate::intel::canonical_address(address) {
        IpAddr::V4(v4) => {
            let octets = v4.octets();
            if let Some((_, class)) = image.hosts_v4.iter().find(|(host, _)| *host == octets) {
                return *class;
            }
            longest_match(&image.prefixes_v4, &octets)
        }
        IpAddr::V6(v6) => {
            let octets = v6.octets();
            if let Some((_, class)) = image.hosts_v6.iter().find(|(host, _)| *host == octets) {
                return *class;
            }
            longest_match(&image.prefixes_v6, &octets)
        }
    }
}

fn longest_match<const N: usize>(prefixes: &[(u8, [u8; N], u32)], address: &[u8; N]) -> u32 {
    prefixes
        .iter()
        .filter(|(len, network, _)| prefix_contains(*len, network, address))
        .max_by_key(|(len, _, _)| *len)
        .map_or(0, |(_, _, class)| *class)
}

fn prefix_contains<const N: usize>(len: u8, network: &[u8; N], address: &[u8; N]) -> bool {
    let len = usize::from(len);
    let full = len / 8;
    if network[..full] != address[..full] {
        return false;
    }
    let rest = len % 8;
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    network[full] & mask == address[full] & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intel::{Attribute, ProfileDraft};

    /// Builds a store with nested prefixes and hosts, several feeds and
    /// profiles, large enough for several batches.
    fn nested_intel() -> Intel {
        let mut intel = Intel::new();
        let feeds = [intel.add_feed("a"), intel.add_feed("b")];
        let datasets = ["ddos", "scanner", "c2"].map(|value| intel.intern(value));
        let profiles: Vec<ProfileId> = datasets
            .iter()
            .map(|dataset| {
                let mut draft = ProfileDraft::default();
                draft.push(Attribute::Datasets, *dataset);
                intel.profile_id(draft)
            })
            .collect();
        let mut rng = fastrand::Rng::with_seed(5);
        let mut sightings = Vec::new();
        for index in 0..150_000u32 {
            // Some prefixes contain others and hosts. Most hosts are alone.
            let len = match (index % 20_000, index % 1000) {
                (0, _) => 16,
                (_, 1 | 500) => 24,
                _ => 32,
            };
            let address = std::net::Ipv4Addr::from(0x0a00_0000 | (index << 3));
            let net = IpNet::V4(ipnet::Ipv4Net::new(address, len).unwrap().trunc());
            let sighting = Sighting {
                last_seen: 1_700_000_000 + i64::from(rng.u32(..1_000_000)),
                profile: profiles[rng.usize(..profiles.len())],
                feed: feeds[rng.usize(..2)],
                score: rng.u8(..=100),
            };
            sightings.push((net, sighting));
        }
        intel.add_sightings(sightings);
        intel
    }

    fn rule(source: &str) -> RuleSpec {
        RuleSpec {
            name: source.to_owned(),
            source: source.to_owned(),
            expr: crate::rule::parse(source, &crate::rule::Lists::default()).unwrap(),
            action: Action::Drop,
            mark: 0,
        }
    }

    #[test]
    fn batched_walk_matches_walk() {
        let intel = nested_intel();
        let rules = vec![
            rule(r#"any(ip.intel.datasets[*] == "ddos") and ip.intel.score > 50"#),
            rule(r#"all(ip.intel.datasets[*] == "scanner")"#),
            rule(r#"any(ip.intel.feeds[*] == "b") and ip.intel.days_since_seen < 400"#),
            rule("ip.src in {10.0.8.0/21}"),
        ];

        let now: Timestamp = "2024-01-01T00:00:00Z".parse().unwrap();
        let previous = Registry::default();
        let (predicates, _) = assign_bits(&rules, &previous).unwrap();
        let by_profile = profile_bits(&predicates, &intel, now);
        let extra = named_prefixes(&predicates);

        let run = |batched: bool| {
            let mut classes = ClassAssigner::new(&previous);
            let mut evaluators: Vec<Evaluator<'_>> = (0..3)
                .map(|_| Evaluator::new(&predicates, &intel, now, by_profile.as_deref()))
                .collect();
            let empty_bits = evaluators[0].bits(None, &[]);
            classes.set_miss_class(empty_bits);
            let (image, counts) = if batched {
                walk_in_batches(&intel, &extra, &mut evaluators, &mut classes, empty_bits)
            } else {
                walk(&intel, &extra, &mut evaluators[0], &mut classes)
            };
            (image, counts, classes.finish())
        };
        let (image, counts, classes) = run(false);
        let (batched_image, batched_counts, batched_classes) = run(true);

        assert!(classes.len() > 2, "the rules split the intel into classes");
        assert!(!image.prefixes_v4.is_empty(), "the image has prefixes");
        assert!(image.hosts_v4.len() > 10_000, "the image has hosts");

        assert_eq!(batched_classes, classes);
        assert_eq!(batched_counts, counts);
        assert_eq!(batched_image.hosts_v4, image.hosts_v4);
        assert_eq!(batched_image.prefixes_v4, image.prefixes_v4);
    }
}
