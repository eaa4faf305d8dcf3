//! Per-rule counters over time, and `intelwall stats`.
//!
//! The kernel counts per class and per interface slot. A rule's count is
//! the sum over the classes it matches. When a reload changes which classes
//! a rule matches, the counts so far are settled under the old matches, so
//! history is not re-attributed; when the maps are replaced, their counts
//! are settled before they go. The [`Ledger`] holds what was settled and
//! the class counters at the last settlement, and is written to the state
//! file with every update, so `stats` gives the same numbers as the agent,
//! whether or not the agent runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use intelwall_common::{Counter, EventCounter, PathCounter, TagCounter};
use serde::{Deserialize, Serialize};

use crate::compile::Compiled;
use crate::dataplane::{PinnedCounterMaps, Snapshot};
use crate::events::LogSlots;
use crate::pin::PinLayout;
use crate::report::{CounterReport, EventTotals, RuleCounter, TagTotals, Tally, totals};

/// Name of counter slot 0: interfaces the agent did not name.
pub const OTHER_INTERFACE: &str = "other";

/// A rule as the counters need it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMatches {
    pub name: String,
    pub action: String,
    /// Class ids whose packets the rule matches.
    pub classes: Vec<u32>,
}

/// Lists the rules of a compilation with the classes each matches.
pub fn rule_matches(compiled: &Compiled) -> Vec<RuleMatches> {
    compiled
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| RuleMatches {
            name: rule.name.clone(),
            action: rule.action.to_string(),
            classes: compiled.classes_matching(index).collect(),
        })
        .collect()
}

/// The counter part of the state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CounterState {
    /// Name of each counter slot; slot 0 is [`OTHER_INTERFACE`].
    pub slots: Vec<String>,
    pub rules: Vec<RuleMatches>,
    /// Class ids to read: one past the highest in use.
    pub class_limit: usize,
    /// Class counters at the last settlement, non-zero ones only:
    /// (slot, class, count).
    pub baseline: Vec<(u32, u32, Tally)>,
    /// Rule counts settled so far: rule, then interface.
    pub settled: BTreeMap<String, BTreeMap<String, Tally>>,
    /// Path counts of map sets already replaced: interface, then path name.
    pub settled_paths: BTreeMap<String, BTreeMap<String, Tally>>,
    /// Events and tags of map sets already replaced, by counter name.
    pub settled_other: BTreeMap<String, u64>,
    /// The rule in each log slot, for naming events.
    pub log_slots: LogSlots,
}

/// Counts settled so far, and the class counters they were settled at.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    slots: Vec<String>,
    baseline: Vec<Vec<Counter>>,
    settled: BTreeMap<String, BTreeMap<String, Tally>>,
    settled_paths: BTreeMap<String, BTreeMap<String, Tally>>,
    settled_other: BTreeMap<String, u64>,
}

impl Ledger {
    /// Creates a ledger for fresh maps whose slots have these names.
    pub fn new(slots: Vec<String>, baseline: Vec<Vec<Counter>>) -> Ledger {
        Ledger {
            slots,
            baseline,
            ..Ledger::default()
        }
    }

    pub fn from_state(state: &CounterState) -> Ledger {
        let mut baseline: Vec<Vec<Counter>> = vec![Vec::new(); state.slots.len().max(1)];
        for &(slot, class, tally) in &state.baseline {
            let Some(row) = baseline.get_mut(slot as usize) else {
                continue;
            };
            if row.len() <= class as usize {
                row.resize(class as usize + 1, Counter::default());
            }
            row[class as usize] = Counter {
                packets: tally.packets,
                bytes: tally.bytes,
            };
        }
        Ledger {
            slots: state.slots.clone(),
            baseline,
            settled: state.settled.clone(),
            settled_paths: state.settled_paths.clone(),
            settled_other: state.settled_other.clone(),
        }
    }

    pub fn to_state(
        &self,
        rules: Vec<RuleMatches>,
        class_limit: usize,
        log_slots: LogSlots,
    ) -> CounterState {
        let mut baseline = Vec::new();
        for (slot, row) in self.baseline.iter().enumerate() {
            for (class, counter) in row.iter().enumerate() {
                if counter.packets != 0 || counter.bytes != 0 {
                    baseline.push((slot as u32, class as u32, Tally::from(*counter)));
                }
            }
        }
        CounterState {
            slots: self.slots.clone(),
            rules,
            class_limit,
            baseline,
            settled: self.settled.clone(),
            settled_paths: self.settled_paths.clone(),
            settled_other: self.settled_other.clone(),
            log_slots,
        }
    }

    fn slot_name(&self, slot: usize) -> String {
        self.slots
            .get(slot)
            .cloned()
            .unwrap_or_else(|| OTHER_INTERFACE.to_owned())
    }

    fn delta(&self, slot: usize, class: usize, now: Counter) -> Tally {
        let before = self
            .baseline
            .get(slot)
            .and_then(|row| row.get(class))
            .copied()
            .unwrap_or_default();
        Tally::since(now, before)
    }

    /// Per rule and interface: what the classes counted since the last
    /// settlement, under `rules`' matches.
    fn unsettled(
        &self,
        rules: &[RuleMatches],
        classes: &[Vec<Counter>],
    ) -> BTreeMap<String, BTreeMap<String, Tally>> {
        let mut counts: BTreeMap<String, BTreeMap<String, Tally>> = BTreeMap::new();
        for rule in rules {
            let per_interface = counts.entry(rule.name.clone()).or_default();
            for (slot, row) in classes.iter().enumerate() {
                let mut sum = Tally::default();
                for &class in &rule.classes {
                    if let Some(now) = row.get(class as usize) {
                        sum.add(self.delta(slot, class as usize, *now));
                    }
                }
                if sum != Tally::default() {
                    per_interface
                        .entry(self.slot_name(slot))
                        .or_default()
                        .add(sum);
                }
            }
        }
        counts
    }

    /// Settles what the classes counted since the last settlement under
    /// `rules`' matches; `classes` becomes the new baseline.
    pub fn settle(&mut self, rules: &[RuleMatches], classes: &[Vec<Counter>]) {
        for (rule, per_interface) in self.unsettled(rules, classes) {
            let settled = self.settled.entry(rule).or_default();
            for (interface, tally) in per_interface {
                settled.entry(interface).or_default().add(tally);
            }
        }
        self.baseline = classes.to_vec();
    }

    /// Settles everything the old maps counted, then starts over on new
    /// maps with slots named `slots` and counters `baseline`.
    pub fn replace_maps(
        &mut self,
        rules: &[RuleMatches],
        old: &Snapshot,
        slots: Vec<String>,
        baseline: Vec<Vec<Counter>>,
    ) {
        self.settle(rules, &old.classes);
        for (slot, row) in old.paths.iter().enumerate() {
            let per_path = self.settled_paths.entry(self.slot_name(slot)).or_default();
            for path in PathCounter::ALL {
                if let Some(counter) = row.get(path as usize) {
                    per_path
                        .entry(path.name().to_owned())
                        .or_default()
                        .add(Tally::from(*counter));
                }
            }
        }
        for (name, value) in other_counters(old) {
            *self.settled_other.entry(name.to_owned()).or_default() += value;
        }
        self.slots = slots;
        self.baseline = baseline;
    }

    /// Everything counted so far: settled counts plus what the maps counted
    /// since.
    pub fn report(&self, rules: &[RuleMatches], snapshot: &Snapshot) -> CounterReport {
        let unsettled = self.unsettled(rules, &snapshot.classes);
        let rules = rules
            .iter()
            .map(|rule| {
                let mut interfaces = self.settled.get(&rule.name).cloned().unwrap_or_default();
                for (interface, tally) in unsettled.get(&rule.name).into_iter().flatten() {
                    interfaces.entry(interface.clone()).or_default().add(*tally);
                }
                let mut sum = Tally::default();
                for tally in interfaces.values() {
                    sum.add(*tally);
                }
                RuleCounter {
                    name: rule.name.clone(),
                    action: rule.action.clone(),
                    packets: sum.packets,
                    bytes: sum.bytes,
                    interfaces,
                }
            })
            .collect();
        let mut per_interface: BTreeMap<String, Vec<Counter>> = BTreeMap::new();
        for (interface, paths) in &self.settled_paths {
            let row = per_interface
                .entry(interface.clone())
                .or_insert_with(path_row);
            for path in PathCounter::ALL {
                if let Some(tally) = paths.get(path.name()) {
                    row[path as usize].packets += tally.packets;
                    row[path as usize].bytes += tally.bytes;
                }
            }
        }
        for (slot, live) in snapshot.paths.iter().enumerate() {
            let row = per_interface
                .entry(self.slot_name(slot))
                .or_insert_with(path_row);
            for (sum, counter) in row.iter_mut().zip(live) {
                sum.packets += counter.packets;
                sum.bytes += counter.bytes;
            }
        }
        let all: Vec<Counter> =
            crate::dataplane::sum_slots(&per_interface.values().cloned().collect::<Vec<_>>());
        let interfaces = per_interface
            .iter()
            .filter(|(name, row)| {
                name.as_str() != OTHER_INTERFACE || row.iter().any(|counter| counter.packets != 0)
            })
            .map(|(name, row)| (name.clone(), totals(row)))
            .collect();
        let other = |name: &str, now: u64| self.settled_other.get(name).copied().unwrap_or(0) + now;
        let live: BTreeMap<&str, u64> = other_counters(snapshot).into_iter().collect();
        let live = |name: &str| live.get(name).copied().unwrap_or(0);
        CounterReport {
            rules,
            totals: totals(&all),
            interfaces,
            tags: Some(TagTotals {
                marked: other("tag_marked", live("tag_marked")),
                no_metadata: other("tag_no_metadata", live("tag_no_metadata")),
                dscp_rewritten: other("tag_dscp_rewritten", live("tag_dscp_rewritten")),
            }),
            events: Some(EventTotals {
                sent: other("events_sent", live("events_sent")),
                lost: other("events_lost", live("events_lost")),
            }),
        }
    }
}

fn path_row() -> Vec<Counter> {
    vec![Counter::default(); PathCounter::ALL.len()]
}

/// Lists the tag and event counters of a snapshot by name.
fn other_counters(snapshot: &Snapshot) -> Vec<(&'static str, u64)> {
    let tag = |slot: TagCounter| snapshot.tags.get(slot as usize).map_or(0, |c| c.packets);
    let event = |slot: EventCounter| snapshot.events.get(slot as usize).map_or(0, |c| c.packets);
    vec![
        ("tag_marked", tag(TagCounter::Marked)),
        ("tag_no_metadata", tag(TagCounter::NoMetadata)),
        ("tag_dscp_rewritten", tag(TagCounter::DscpRewritten)),
        ("events_sent", event(EventCounter::Sent)),
        ("events_lost", event(EventCounter::Lost)),
    ]
}

/// Reads the counters of the instance pinned under `layout`.
pub fn read_pinned(layout: &PinLayout) -> Result<CounterReport> {
    let state = layout.read_state().with_context(|| {
        format!(
            "no intelwall state at {}; is an agent running with this config (and --netns)?",
            layout.state_file.display()
        )
    })?;
    let dir = layout.maps_dir(state.map_set);
    let maps = PinnedCounterMaps::open(&dir)
        .with_context(|| format!("cannot open the pinned counters under {}", dir.display()))?;
    let snapshot = maps.counters().snapshot(state.counters.class_limit)?;
    let ledger = Ledger::from_state(&state.counters);
    Ok(ledger.report(&state.counters.rules, &snapshot))
}

/// `intelwall stats`: prints the counters once, or every `watch` interval
/// with rates per second.
pub fn stats(layout: &PinLayout, json: bool, watch: Option<Duration>) -> Result<()> {
    let Some(interval) = watch else {
        let report = read_pinned(layout)?;
        if json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", report.to_text());
        }
        return Ok(());
    };
    let mut previous: Option<(Instant, CounterReport)> = None;
    loop {
        let report = read_pinned(layout)?;
        let now = Instant::now();
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            // Clear the screen and go home, as `watch` does.
            print!(
                "\x1b[2J\x1b[H{}",
                watch_text(&report, previous.as_ref(), now)
            );
        }
        previous = Some((now, report));
        std::thread::sleep(interval);
    }
}

/// Formats the counters table with packets and bytes a second since the
/// last one.
fn watch_text(
    report: &CounterReport,
    previous: Option<&(Instant, CounterReport)>,
    now: Instant,
) -> String {
    let width = report.name_width();
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<width$}  {:<6}  {:>12}  {:>14}  {:>10}  {:>12}",
        "rule", "action", "packets", "bytes", "packets/s", "bytes/s"
    );
    for rule in &report.rules {
        let (packet_rate, byte_rate) = match previous {
            Some((then, old)) => {
                let seconds = now.duration_since(*then).as_secs_f64().max(1e-3);
                let before = old.rules.iter().find(|known| known.name == rule.name);
                let packets = before.map_or(0, |known| known.packets);
                let bytes = before.map_or(0, |known| known.bytes);
                (
                    rule.packets.saturating_sub(packets) as f64 / seconds,
                    rule.bytes.saturating_sub(bytes) as f64 / seconds,
                )
            }
            None => (0.0, 0.0),
        };
        let _ = writeln!(
            text,
            "{:<width$}  {:<6}  {:>12}  {:>14}  {:>10.1}  {:>12.1}",
            rule.name, rule.action, rule.packets, rule.bytes, packet_rate, byte_rate
        );
    }
    let totals = &report.totals;
    let _ = writeln!(
        text,
        "totals: {} passed, {} dropped, {} allowed, {} tagged, {} not inspected",
        totals.passed, totals.dropped, totals.allowed, totals.tagged, totals.not_inspected
    );
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter(packets: u64) -> Counter {
        Counter {
            packets,
            bytes: packets * 100,
        }
    }

    fn rule(name: &str, classes: &[u32]) -> RuleMatches {
        RuleMatches {
            name: name.to_owned(),
            action: "drop".to_owned(),
            classes: classes.to_vec(),
        }
    }

    fn snapshot(classes: Vec<Vec<Counter>>) -> Snapshot {
        Snapshot {
            classes,
            ..Snapshot::default()
        }
    }

    fn packets(report: &CounterReport, name: &str) -> u64 {
        report
            .rules
            .iter()
            .find(|rule| rule.name == name)
            .map_or(0, |rule| rule.packets)
    }

    #[test]
    fn rule_changes_keep_history() {
        let slots = vec![OTHER_INTERFACE.to_owned(), "eth0".to_owned()];
        let mut ledger = Ledger::new(slots, vec![vec![counter(0); 3]; 2]);
        let before = [rule("a", &[1]), rule("b", &[1, 2])];
        let counts = vec![
            vec![counter(0); 3],
            vec![counter(0), counter(5), counter(7)],
        ];
        ledger.settle(&before, &counts);
        // Rule a now matches class 2 instead; its 5 stay.
        let after = [rule("a", &[2]), rule("b", &[1, 2])];
        let later = vec![
            vec![counter(0); 3],
            vec![counter(0), counter(6), counter(10)],
        ];
        let report = ledger.report(&after, &snapshot(later));
        assert_eq!(packets(&report, "a"), 5 + 3);
        assert_eq!(packets(&report, "b"), 12 + 1 + 3);
        let eth0 = &report.rules[0].interfaces["eth0"];
        assert_eq!(eth0.packets, 8);
    }

    #[test]
    fn state_round_trip_gives_the_same_report() {
        let slots = vec![OTHER_INTERFACE.to_owned(), "eth0".to_owned()];
        let mut ledger = Ledger::new(slots, vec![vec![counter(0); 2]; 2]);
        let rules = [rule("a", &[1])];
        ledger.settle(
            &rules,
            &[vec![counter(1), counter(2)], vec![counter(0), counter(4)]],
        );
        let state = ledger.to_state(rules.to_vec(), 2, LogSlots::default());
        let text = serde_json::to_string(&state).unwrap();
        let restored = Ledger::from_state(&serde_json::from_str(&text).unwrap());
        let live = snapshot(vec![
            vec![counter(1), counter(3)],
            vec![counter(0), counter(9)],
        ]);
        assert_eq!(
            packets(&ledger.report(&rules, &live), "a"),
            packets(&restored.report(&rules, &live), "a")
        );
        assert_eq!(packets(&restored.report(&rules, &live), "a"), 2 + 4 + 1 + 5);
    }
}
