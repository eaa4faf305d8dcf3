//! What `check` and `run` print: feed and rule summaries, counters.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use intelwall_common::{Counter, PathCounter};
use serde::{Deserialize, Serialize};

use crate::cli::chain_text;
use crate::compile::Compiled;
use crate::config::ConfigError;
use crate::feed::FeedReport;
use crate::pipeline::{LoadError, Loaded};

/// Summary that `check` prints when everything loaded.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// Always `null` here, so that scripts can test `error` in the output
    /// of both a passed and a failed check.
    pub error: Option<CheckError>,
    pub feeds: Vec<FeedSummary>,
    pub rules: Vec<RuleSummary>,
    pub predicates: Vec<String>,
    pub classes: usize,
    pub maps: MapSummary,
    pub cost: CostSummary,
    pub diagnostics: Vec<String>,
    /// Addresses the safety allowlist keeps reachable, with the reason.
    pub protected: Vec<String>,
    /// Wide, private, reserved or protected prefixes found in feeds.
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct FeedSummary {
    pub name: String,
    pub path: String,
    pub format: String,
    pub read: u64,
    pub indicators: u64,
    pub rejected: u64,
    /// Valid records that hold no IP indicator (domains, hashes, URLs).
    pub skipped: u64,
    pub normalised: u64,
    pub merged: u64,
}

#[derive(Debug, Serialize)]
pub struct RuleSummary {
    pub name: String,
    pub action: String,
    pub expression: String,
    pub selected: u64,
}

/// Time and memory that loading took.
#[derive(Debug, Serialize)]
pub struct CostSummary {
    /// Reading and parsing every feed.
    pub feeds_ms: u64,
    /// Evaluating the rules over the indicators.
    pub compile_ms: u64,
    /// Bytes of the agent's memory that the loaded indicators take: their
    /// records, attribute lists and profiles (interned strings not
    /// included). The kernel maps are apart from this.
    pub intel_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct MapSummary {
    pub hosts_v4: usize,
    pub hosts_v6: usize,
    pub prefixes_v4: usize,
    pub prefixes_v6: usize,
}

impl CheckReport {
    pub fn new(loaded: &Loaded) -> CheckReport {
        let compiled = &loaded.compiled;
        CheckReport {
            error: None,
            feeds: loaded.feeds.iter().map(feed_summary).collect(),
            rules: rule_summaries(compiled),
            predicates: compiled
                .predicates
                .iter()
                .flatten()
                .map(ToString::to_string)
                .collect(),
            classes: compiled.registry.class_count(),
            maps: MapSummary {
                hosts_v4: compiled.image.hosts_v4.len(),
                hosts_v6: compiled.image.hosts_v6.len(),
                prefixes_v4: compiled.image.prefixes_v4.len(),
                prefixes_v6: compiled.image.prefixes_v6.len(),
            },
            cost: CostSummary {
                feeds_ms: loaded.timings.feeds.as_millis() as u64,
                compile_ms: loaded.timings.compile.as_millis() as u64,
                intel_bytes: loaded.intel.bytes() as u64,
            },
            diagnostics: loaded
                .feeds
                .iter()
                .flat_map(|feed| feed.diagnostics.iter().map(ToString::to_string))
                .collect(),
            protected: loaded.protected.iter().map(ToString::to_string).collect(),
            warnings: loaded
                .warnings
                .iter()
                .map(ToString::to_string)
                .chain(loaded.rule_warnings.iter().cloned())
                .collect(),
        }
    }

    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for feed in &self.feeds {
            let _ = writeln!(
                text,
                "feed {} ({}, {}): {} read, {} indicators, {} rejected, {} skipped, {} normalised, {} merged",
                feed.name,
                feed.format,
                feed.path,
                feed.read,
                feed.indicators,
                feed.rejected,
                feed.skipped,
                feed.normalised,
                feed.merged
            );
        }
        for rule in &self.rules {
            let _ = writeln!(
                text,
                "rule {} ({}): selects {} {}",
                rule.name,
                rule.action,
                rule.selected,
                if rule.selected == 1 {
                    "indicator"
                } else {
                    "indicators"
                }
            );
        }
        let _ = writeln!(
            text,
            "compiled: {} predicates, {} classes; map entries: {} IPv4 hosts, {} IPv6 hosts, {} IPv4 prefixes, {} IPv6 prefixes",
            self.predicates.len(),
            self.classes,
            self.maps.hosts_v4,
            self.maps.hosts_v6,
            self.maps.prefixes_v4,
            self.maps.prefixes_v6
        );
        let _ = writeln!(
            text,
            "took {} to load feeds and {} to compile; the loaded indicators take {} of memory",
            duration_text(self.cost.feeds_ms),
            duration_text(self.cost.compile_ms),
            size_text(self.cost.intel_bytes)
        );
        text
    }
}

/// Output of `check --json` when the load failed: the error, and the
/// diagnostics of the feed that failed, when it read records at all.
#[derive(Debug, Serialize)]
pub struct CheckFailure {
    pub error: CheckError,
    pub diagnostics: Vec<String>,
}

/// One error that stopped `check`.
#[derive(Debug, Default, Serialize)]
pub struct CheckError {
    /// Kind of input that failed: `config`, `list`, `feed`, `download`,
    /// `rule`, `compile`, `safety` or `capacity`.
    pub kind: &'static str,
    /// The whole error, as `check` prints it on stderr.
    pub message: String,
    /// The cause, without the feed or rule name and the position that the
    /// other fields give.
    pub reason: String,
    pub feed: Option<String>,
    pub rule: Option<String>,
    /// The address of a feed whose download did not load.
    pub url: Option<String>,
    /// The file to look at: the feed's file, or the config file.
    pub file: String,
    /// Line, counted from 1, where the error has one.
    pub line: Option<u64>,
    /// Column in characters, counted from 1, where the error has one.
    pub column: Option<u64>,
}

impl CheckFailure {
    /// Builds the output for `error`, returned by loading the config at `config`.
    pub fn new(error: &LoadError, config: &Path) -> CheckFailure {
        let diagnostics = match error {
            LoadError::Feed { source, .. } => source
                .diagnostics()
                .iter()
                .map(ToString::to_string)
                .collect(),
            _ => Vec::new(),
        };
        CheckFailure {
            error: CheckError {
                message: chain_text(error),
                ..CheckError::of(error, config)
            },
            diagnostics,
        }
    }
}

impl CheckError {
    /// Fills every field but `message` from the variant of `error`.
    fn of(error: &LoadError, config: &Path) -> CheckError {
        let config_file = config.display().to_string();
        let in_config = |kind, reason| CheckError {
            kind,
            reason,
            file: config_file.clone(),
            ..CheckError::default()
        };
        match error {
            LoadError::Config(ConfigError::Read { path, source }) => CheckError {
                file: path.display().to_string(),
                ..in_config("config", chain_text(source))
            },
            LoadError::Config(ConfigError::Invalid {
                path,
                line,
                column,
                message,
            }) => CheckError {
                file: path.display().to_string(),
                line: Some(*line as u64),
                column: Some(*column as u64),
                ..in_config("config", message.clone())
            },
            LoadError::List {
                path,
                line,
                column,
                list,
                value,
                reason,
            } => CheckError {
                file: path.display().to_string(),
                line: Some(*line as u64),
                column: Some(*column as u64),
                ..in_config(
                    "list",
                    format!("list `{list}`: `{value}` is not an address or prefix: {reason}"),
                )
            },
            LoadError::Feed { feed, source } => CheckError {
                feed: Some(feed.clone()),
                file: source
                    .path()
                    .map_or(config_file.clone(), |path| path.display().to_string()),
                line: source.line(),
                ..in_config("feed", chain_text(source))
            },
            LoadError::Download { feed, path, source } => CheckError {
                feed: Some(feed.clone()),
                file: path.display().to_string(),
                ..in_config("download", chain_text(source.as_ref()))
            },
            LoadError::InvalidDownload {
                feed,
                url,
                path,
                source,
            } => CheckError {
                feed: Some(feed.clone()),
                url: Some(url.clone()),
                file: path.display().to_string(),
                ..in_config(
                    "download",
                    format!(
                        "the download is not a valid feed: {}",
                        chain_text(source.as_ref())
                    ),
                )
            },
            LoadError::Rule {
                rule,
                path,
                line,
                column,
                message,
                ..
            } => CheckError {
                rule: Some(rule.clone()),
                file: path.display().to_string(),
                line: Some(*line as u64),
                column: Some(*column as u64),
                ..in_config("rule", message.clone())
            },
            LoadError::Compile(source) => in_config("compile", chain_text(source)),
            LoadError::Safety(source) => in_config("safety", chain_text(source)),
            LoadError::Capacity { .. } => in_config("capacity", chain_text(error)),
        }
    }
}

/// Formats milliseconds as ms below a second and as seconds above.
fn duration_text(ms: u64) -> String {
    match ms {
        0..1000 => format!("{ms} ms"),
        _ => format!("{:.1} s", ms as f64 / 1000.0),
    }
}

/// Formats bytes in KiB below a MiB and in MiB above.
fn size_text(bytes: u64) -> String {
    const MIB: u64 = 1024 * 1024;
    match bytes {
        0..MIB => format!("{:.1} KiB", bytes as f64 / 1024.0),
        _ => format!("{:.1} MiB", bytes as f64 / MIB as f64),
    }
}

fn feed_summary(report: &FeedReport) -> FeedSummary {
    FeedSummary {
        name: report.name.clone(),
        path: report.path.display().to_string(),
        format: report.format.to_string(),
        read: report.read,
        indicators: report.indicators,
        rejected: report.rejected,
        skipped: report.skipped,
        normalised: report.normalised,
        merged: report.merged,
    }
}

fn rule_summaries(compiled: &Compiled) -> Vec<RuleSummary> {
    compiled
        .rules
        .iter()
        .zip(&compiled.selected)
        .map(|(rule, selected)| RuleSummary {
            name: rule.name.clone(),
            action: rule.action.to_string(),
            expression: rule.source.clone(),
            selected: *selected,
        })
        .collect()
}

/// Per-rule and total counters, as `run` prints them at exit and `stats`
/// prints them any time.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CounterReport {
    pub rules: Vec<RuleCounter>,
    pub totals: Totals,
    /// Totals per interface; "other" holds packets of interfaces the agent
    /// did not name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub interfaces: BTreeMap<String, Totals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<TagTotals>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventTotals>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RuleCounter {
    pub name: String,
    pub action: String,
    pub packets: u64,
    pub bytes: u64,
    /// Packets and bytes per interface.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub interfaces: BTreeMap<String, Tally>,
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub packets: u64,
    pub bytes: u64,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }

    /// What `now` counted since `before`; zero if the counter went back.
    pub fn since(now: Counter, before: Counter) -> Tally {
        Tally {
            packets: now.packets.saturating_sub(before.packets),
            bytes: now.bytes.saturating_sub(before.bytes),
        }
    }
}

impl From<Counter> for Tally {
    fn from(counter: Counter) -> Tally {
        Tally {
            packets: counter.packets,
            bytes: counter.bytes,
        }
    }
}

/// What became of tagged packets.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct TagTotals {
    /// Tagged packets whose mark went to the TC program.
    pub marked: u64,
    /// Tagged packets without a mark: the driver gives XDP no metadata room.
    pub no_metadata: u64,
    pub dscp_rewritten: u64,
}

/// Sampled events.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct EventTotals {
    /// Events written to the ring buffer.
    pub sent: u64,
    /// Events lost because the ring buffer was full.
    pub lost: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Totals {
    pub passed: u64,
    pub dropped: u64,
    pub allowed: u64,
    pub tagged: u64,
    pub not_inspected: u64,
    /// Packets not inspected, by reason.
    pub not_inspected_by_reason: BTreeMap<String, u64>,
}

impl CounterReport {
    /// Sums class counters into rule counters: a rule counts every packet of
    /// every class it matches, whether or not it decided the fate.
    pub fn new(
        compiled: &Compiled,
        class_counters: &[Counter],
        path_counters: &[Counter],
    ) -> CounterReport {
        let rules = compiled
            .rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let mut sum = Counter::default();
                for class in compiled.classes_matching(index) {
                    if let Some(counter) = class_counters.get(class as usize) {
                        sum.packets += counter.packets;
                        sum.bytes += counter.bytes;
                    }
                }
                RuleCounter {
                    name: rule.name.clone(),
                    action: rule.action.to_string(),
                    packets: sum.packets,
                    bytes: sum.bytes,
                    interfaces: BTreeMap::new(),
                }
            })
            .collect();
        CounterReport {
            rules,
            totals: totals(path_counters),
            ..CounterReport::default()
        }
    }

    /// Width of the rule name column: the longest name, at least "rule".
    pub fn name_width(&self) -> usize {
        self.rules
            .iter()
            .map(|rule| rule.name.len())
            .max()
            .unwrap_or(4)
            .max(4)
    }

    pub fn to_text(&self) -> String {
        let width = self.name_width();
        let mut text = String::new();
        let _ = writeln!(
            text,
            "{:<width$}  {:<6}  {:>12}  {:>14}",
            "rule", "action", "packets", "bytes"
        );
        for rule in &self.rules {
            let _ = writeln!(
                text,
                "{:<width$}  {:<6}  {:>12}  {:>14}",
                rule.name, rule.action, rule.packets, rule.bytes
            );
        }
        let totals = &self.totals;
        let _ = writeln!(
            text,
            "totals: {} passed, {} dropped, {} allowed, {} tagged, {} not inspected",
            totals.passed, totals.dropped, totals.allowed, totals.tagged, totals.not_inspected
        );
        for (interface, totals) in &self.interfaces {
            let _ = writeln!(
                text,
                "  {interface}: {} passed, {} dropped, {} allowed, {} tagged, {} not inspected",
                totals.passed, totals.dropped, totals.allowed, totals.tagged, totals.not_inspected
            );
        }
        if let Some(events) = &self.events {
            let _ = writeln!(
                text,
                "events: {} sent, {} lost to a full ring buffer",
                events.sent, events.lost
            );
        }
        text
    }
}

/// Totals from path counters, indexed by [`PathCounter`] slot.
pub fn totals(path_counters: &[Counter]) -> Totals {
    let mut totals = Totals::default();
    for path in PathCounter::ALL {
        let packets = path_counters
            .get(path as usize)
            .map_or(0, |counter| counter.packets);
        match path {
            PathCounter::Passed => totals.passed = packets,
            PathCounter::Dropped => totals.dropped = packets,
            PathCounter::Allowed => totals.allowed = packets,
            PathCounter::Tagged => totals.tagged = packets,
            _ => {
                totals.not_inspected += packets;
                totals
                    .not_inspected_by_reason
                    .insert(path.name().to_owned(), packets);
            }
        }
    }
    totals
}
