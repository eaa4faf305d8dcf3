//! `intelwall top`: the sources that hit each rule most.
//!
//! It reads the events file that `intelwall run --events` writes, so it
//! sees sampled matches: with `sample = "1/100"` each event stands for about
//! a hundred packets, and a `rate` cap flattens the heaviest sources. The
//! ranking is still the one to look at first; the per-rule counters
//! (`intelwall stats`) give exact totals. Reading the file rather than the
//! ring buffer leaves the agent the only reader of the kernel's events.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::BufRead;
use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::events::EventRecord;

#[derive(Debug, Serialize)]
struct RuleTop {
    rule: String,
    events: u64,
    sources: Vec<SourceCount>,
}

#[derive(Debug, Serialize)]
struct SourceCount {
    source: IpAddr,
    events: u64,
    bytes: u64,
}

/// Counts events per rule and source, and prints the top `limit` sources
/// of each rule.
pub fn top(path: &Path, limit: usize, only: Option<&str>, json: bool) -> Result<()> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .with_context(|| format!("cannot open the events file {}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut counts: BTreeMap<String, HashMap<IpAddr, (u64, u64)>> = BTreeMap::new();
    let mut skipped = 0u64;
    for line in reader.lines() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let Ok(event) = serde_json::from_str::<EventRecord>(&line) else {
            skipped += 1;
            continue;
        };
        if only.is_some_and(|rule| rule != event.rule) {
            continue;
        }
        let entry = counts
            .entry(event.rule)
            .or_default()
            .entry(event.source)
            .or_default();
        entry.0 += 1;
        entry.1 += u64::from(event.length);
    }
    if skipped > 0 {
        tracing::warn!(
            lines = skipped,
            "lines that are not intelwall events were skipped"
        );
    }
    let tops = ranked(counts, limit);
    if json {
        println!("{}", serde_json::to_string_pretty(&tops)?);
    } else {
        print!("{}", text(&tops));
    }
    Ok(())
}

fn ranked(counts: BTreeMap<String, HashMap<IpAddr, (u64, u64)>>, limit: usize) -> Vec<RuleTop> {
    counts
        .into_iter()
        .map(|(rule, sources)| {
            let events = sources.values().map(|(events, _)| events).sum();
            let mut sources: Vec<SourceCount> = sources
                .into_iter()
                .map(|(source, (events, bytes))| SourceCount {
                    source,
                    events,
                    bytes,
                })
                .collect();
            sources.sort_by(|a, b| b.events.cmp(&a.events).then(a.source.cmp(&b.source)));
            sources.truncate(limit);
            RuleTop {
                rule,
                events,
                sources,
            }
        })
        .collect()
}

fn text(tops: &[RuleTop]) -> String {
    let mut text = String::new();
    for top in tops {
        let _ = writeln!(text, "{} ({} sampled events)", top.rule, top.events);
        for source in &top.sources {
            let _ = writeln!(
                text,
                "  {:<40} {:>10} events {:>12} bytes",
                source.source.to_string(),
                source.events,
                source.bytes
            );
        }
    }
    if tops.is_empty() {
        text.push_str("no events\n");
    }
    text
}
