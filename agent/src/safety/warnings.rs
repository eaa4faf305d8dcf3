//! Warnings about feed indicators that are wide, private, reserved, or
//! overlap a protected address.

use std::cmp::Reverse;
use std::collections::HashSet;
use std::fmt;
use std::sync::LazyLock;

use ipnet::IpNet;
use serde::Serialize;

use super::{SafetyNet, display_net};
use crate::config::SafetyConfig;
use crate::intel::{FeedId, IndicatorTable, Intel};

/// Examples a warning keeps; the rest are counted.
const MAX_EXAMPLES: usize = 5;

/// A named range of the special-purpose address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SpecialRange {
    pub net: IpNet,
    pub name: &'static str,
}

/// Ranges that carry traffic only inside a site or a provider's network.
static PRIVATE_RANGES: LazyLock<Vec<SpecialRange>> = LazyLock::new(|| {
    special_ranges(&[
        ("10.0.0.0/8", "RFC 1918 private"),
        ("172.16.0.0/12", "RFC 1918 private"),
        ("192.168.0.0/16", "RFC 1918 private"),
        ("100.64.0.0/10", "RFC 6598 carrier-grade NAT"),
        ("fc00::/7", "RFC 4193 unique local"),
        ("fe80::/10", "IPv6 link-local"),
    ])
});

/// Ranges that are never a legitimate source on the Internet (bogons).
///
/// The documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
/// 2001:db8::/32) are left out on purpose: the examples and tests use them
/// as stand-ins for real attackers, and listing them cannot drop real
/// traffic.
static RESERVED_RANGES: LazyLock<Vec<SpecialRange>> = LazyLock::new(|| {
    special_ranges(&[
        ("0.0.0.0/8", "\"this network\""),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "IPv4 link-local"),
        ("192.0.0.0/24", "IETF protocol assignment"),
        ("198.18.0.0/15", "RFC 2544 benchmarking"),
        ("224.0.0.0/4", "IPv4 multicast"),
        // Class E, with the limited broadcast address 255.255.255.255.
        ("240.0.0.0/4", "reserved class E"),
        // The unspecified address, loopback and IPv4-compatible addresses.
        ("::/8", "IPv6 reserved"),
        ("100::/64", "RFC 6666 discard-only"),
        ("fec0::/10", "deprecated site-local"),
        ("ff00::/8", "IPv6 multicast"),
    ])
});

fn special_ranges(table: &[(&str, &'static str)]) -> Vec<SpecialRange> {
    table
        .iter()
        .map(|&(net, name)| SpecialRange {
            net: net.parse().expect("valid range literal"),
            name,
        })
        .collect()
}

/// The problem shared by the indicators of a [`PrefixWarning`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PrefixWarningKind {
    /// Prefixes shorter than `min_len` bits (`[safety] wide_prefix_len`).
    Wide { min_len: u8 },
    /// Inside or around a private range.
    Private,
    /// Inside or around a reserved range (a bogon).
    Reserved,
    /// Inside or around an address or network of the safety allowlist.
    Protected { protected: SafetyNet },
}

/// One offending indicator of a warning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrefixExample {
    pub indicator: IpNet,
    /// For private and reserved indicators, the range they overlap.
    pub range: Option<SpecialRange>,
}

/// The indicators of one feed that share one problem: their number and the
/// first few, widest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PrefixWarning {
    pub feed: String,
    #[serde(flatten)]
    pub kind: PrefixWarningKind,
    /// Indicators of the feed with this problem.
    pub count: usize,
    /// At most five of them, widest prefix first, then by address.
    pub examples: Vec<PrefixExample>,
}

impl fmt::Display for PrefixWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let feed = &self.feed;
        let count = self.count;
        let examples = self.example_list();
        match &self.kind {
            PrefixWarningKind::Protected { protected } => {
                let host = protected.net.prefix_len() == protected.net.max_prefix_len();
                if count == 1 {
                    let verb = if host { "contains" } else { "overlaps" };
                    write!(
                        f,
                        "feed `{feed}` lists {examples}, which {verb} {protected}"
                    )?;
                } else {
                    let verb = if host { "contain" } else { "overlap" };
                    write!(
                        f,
                        "feed `{feed}` lists {count} indicators that {verb} {protected}: {examples}"
                    )?;
                }
                f.write_str("; the safety allowlist keeps it reachable")
            }
            PrefixWarningKind::Wide { min_len } => write!(
                f,
                "feed `{feed}` lists {count} {} shorter than /{min_len} \
                 ([safety] wide_prefix_len): {examples}",
                noun(count, "prefix", "prefixes")
            ),
            PrefixWarningKind::Private => write!(
                f,
                "feed `{feed}` lists {count} private {}: {examples}",
                noun(count, "indicator", "indicators")
            ),
            PrefixWarningKind::Reserved => write!(
                f,
                "feed `{feed}` lists {count} reserved (bogon) {}: {examples}",
                noun(count, "indicator", "indicators")
            ),
        }
    }
}

impl PrefixWarning {
    /// Formats the examples separated by commas, each private or reserved
    /// one with its range, then how many are not shown.
    fn example_list(&self) -> String {
        let mut parts: Vec<String> = self
            .examples
            .iter()
            .map(|example| match &example.range {
                Some(range) => format!(
                    "{} ({} range {})",
                    display_net(&example.indicator),
                    range.name,
                    range.net
                ),
                None => display_net(&example.indicator),
            })
            .collect();
        let hidden = self.count.saturating_sub(self.examples.len());
        if hidden > 0 {
            parts.push(format!("and {hidden} more"));
        }
        parts.join(", ")
    }
}

fn noun(count: usize, singular: &'static str, plural: &'static str) -> &'static str {
    if count == 1 { singular } else { plural }
}

/// Lists the feed indicators that deserve a look before they drop traffic:
///
/// - prefixes shorter than `config.wide_prefix_len` bits, IPv4 and IPv6
///   alike;
/// - indicators inside or around a private range (RFC 1918, CGNAT
///   100.64.0.0/10, unique local fc00::/7, link-local fe80::/10);
/// - indicators inside or around a reserved range (0.0.0.0/8, loopback,
///   169.254.0.0/16, multicast, 240.0.0.0/4, ::/8, ff00::/8 and others);
/// - indicators inside or around a `protected` net, which the safety
///   allowlist keeps reachable whichever rule matches.
///
/// "Around" means the indicator contains the range: 8.0.0.0/6 counts as
/// private because it contains 10.0.0.0/8.
///
/// Warnings are grouped by feed and problem, and a protected net is a
/// problem of its own, so a feed with thousands of private prefixes yields
/// one warning with a count and a few examples. An indicator listed by
/// several feeds counts for each of them. Protected overlaps come first,
/// then wide, private and reserved indicators, each in feed order.
pub fn prefix_warnings(
    intel: &Intel,
    config: &SafetyConfig,
    protected: &[SafetyNet],
) -> Vec<PrefixWarning> {
    // Each problem is looked up in the feed's sorted table, so the cost
    // follows the offending indicators, not the feed's size.
    let mut groups: Vec<((Problem, FeedId), Group)> = Vec::new();
    for feed in 0..intel.feeds().len() as FeedId {
        let table = intel.table(feed);
        for (index, safety_net) in protected.iter().enumerate() {
            let found = table.overlapping(safety_net.net);
            let examples = found.into_iter().map(|indicator| PrefixExample {
                indicator,
                range: None,
            });
            push_group(&mut groups, (Problem::Protected(index), feed), examples);
        }
        let wide = table.shorter_than(config.wide_prefix_len);
        let examples = wide.into_iter().map(|indicator| PrefixExample {
            indicator,
            range: None,
        });
        push_group(&mut groups, (Problem::Wide, feed), examples);
        let private = first_ranges(table, &PRIVATE_RANGES);
        push_group(&mut groups, (Problem::Private, feed), private);
        let reserved = first_ranges(table, &RESERVED_RANGES);
        push_group(&mut groups, (Problem::Reserved, feed), reserved);
    }

    groups.sort_by_key(|&(key, _)| key);
    groups
        .into_iter()
        .map(|((problem, feed), group)| PrefixWarning {
            feed: intel.feed(feed).name.clone(),
            kind: match problem {
                Problem::Protected(index) => PrefixWarningKind::Protected {
                    protected: protected[index].clone(),
                },
                Problem::Wide => PrefixWarningKind::Wide {
                    min_len: config.wide_prefix_len,
                },
                Problem::Private => PrefixWarningKind::Private,
                Problem::Reserved => PrefixWarningKind::Reserved,
            },
            count: group.count,
            examples: group.examples,
        })
        .collect()
}

/// Adds a group for `key` unless `examples` is empty.
fn push_group(
    groups: &mut Vec<((Problem, FeedId), Group)>,
    key: (Problem, FeedId),
    examples: impl IntoIterator<Item = PrefixExample>,
) {
    let mut group = Group::default();
    for example in examples {
        group.add(example);
    }
    if group.count > 0 {
        groups.push((key, group));
    }
}

/// Returns the indicators of `table` that overlap any of `ranges`, each
/// with the first range in `ranges` that it overlaps.
fn first_ranges(table: &IndicatorTable, ranges: &[SpecialRange]) -> Vec<PrefixExample> {
    let mut seen: HashSet<IpNet> = HashSet::new();
    let mut examples = Vec::new();
    for range in ranges {
        for indicator in table.overlapping(range.net) {
            if seen.insert(indicator) {
                examples.push(PrefixExample {
                    indicator,
                    range: Some(*range),
                });
            }
        }
    }
    examples
}

/// The problems of one indicator, in the order warnings are sorted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Problem {
    /// Index into the protected nets.
    Protected(usize),
    Wide,
    Private,
    Reserved,
}

/// The indicators of one feed with one problem.
#[derive(Default)]
struct Group {
    count: usize,
    /// The widest indicators so far, sorted by [`example_order`].
    examples: Vec<PrefixExample>,
}

impl Group {
    fn add(&mut self, example: PrefixExample) {
        self.count += 1;
        let key = example_order(&example);
        let position = self
            .examples
            .partition_point(|kept| example_order(kept) < key);
        if position < MAX_EXAMPLES {
            self.examples.insert(position, example);
            self.examples.truncate(MAX_EXAMPLES);
        }
    }
}

/// Widest first (most host bits, so an IPv6 /48 comes before an IPv4 /24),
/// then by address, so examples do not depend on the store's hash order.
fn example_order(example: &PrefixExample) -> (Reverse<u8>, IpNet) {
    let indicator = example.indicator;
    let host_bits = indicator.max_prefix_len() - indicator.prefix_len();
    (Reverse(host_bits), indicator)
}
