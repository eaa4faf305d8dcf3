//! Change latency on a loaded dataplane: a rules-only change and a feed
//! diff, each compiled against the enforced registry and applied with
//! `Dataplane::apply`, the agent's live-update path.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use intelwall::compile::{self, Compiled, RuleSpec};
use intelwall::config::Action;
use intelwall::pipeline::Loaded;

use crate::stats::Summary;
use crate::subject;

/// Rules the change measurements start from.
const RULES: usize = 32;
/// Indicators each feed diff adds.
pub const DIFF_INDICATORS: usize = 10_000;

/// One kind of change over the runs.
pub struct ChangeRow {
    pub change: &'static str,
    /// Seconds to read the change and compile the new image.
    pub compile: Summary,
    /// Seconds for `Dataplane::apply` to make it enforced.
    pub apply: Summary,
    /// Address entries written or removed, median over the runs.
    pub entries: Summary,
}

/// Measures both changes `runs` times on `loaded`, whose intel grows by
/// [`DIFF_INDICATORS`] a feed-diff run.
pub fn measure(loaded: &mut Loaded, work: &Path, runs: usize) -> Result<Vec<ChangeRow>> {
    let mut enforced = subject::recompile(loaded, RULES)?;
    let (mut dataplane, _) = subject::dataplane(&enforced)?;
    let drop_rules = enforced.rules.clone();
    let log_rules = as_log_rules(&drop_rules, subject::builtin_rules(&enforced));

    let mut rules = Samples::default();
    for run in 0..runs {
        // Alternating between drop and log keeps every predicate, so only
        // the class table changes.
        let specs = if run % 2 == 0 {
            &log_rules
        } else {
            &drop_rules
        };
        let started = Instant::now();
        let next = compile_over(loaded, specs.clone(), &enforced)?;
        let compiled = started.elapsed();
        let started = Instant::now();
        let stats = dataplane.apply(enforced.enforced(), next.enforced())?;
        rules.push(compiled, started.elapsed(), stats.upserted + stats.removed);
        enforced = next;
    }

    let mut diff = Samples::default();
    for run in 0..runs {
        let path = write_diff_feed(work, run)?;
        let mut feed = loaded
            .config
            .feeds
            .first()
            .context("the config has no feed")?
            .clone();
        feed.name = format!("diff-{run}");
        feed.path = path;
        let started = Instant::now();
        intelwall::feed::load_feed(&feed, &mut loaded.intel, loaded.compiled.now)
            .with_context(|| format!("cannot load {}", feed.path.display()))?;
        let next = compile_over(loaded, enforced.rules.clone(), &enforced)?;
        let compiled = started.elapsed();
        let started = Instant::now();
        let stats = dataplane.apply(enforced.enforced(), next.enforced())?;
        diff.push(compiled, started.elapsed(), stats.upserted + stats.removed);
        enforced = next;
    }
    Ok(vec![
        rules.row("rules-only change (32 rules, drop to log and back)"),
        diff.row("feed diff: 10,000 new indicators"),
    ])
}

#[derive(Default)]
struct Samples {
    compile: Vec<f64>,
    apply: Vec<f64>,
    entries: Vec<f64>,
}

impl Samples {
    fn push(&mut self, compile: std::time::Duration, apply: std::time::Duration, entries: usize) {
        self.compile.push(compile.as_secs_f64());
        self.apply.push(apply.as_secs_f64());
        self.entries.push(entries as f64);
    }

    fn row(&self, change: &'static str) -> ChangeRow {
        ChangeRow {
            change,
            compile: Summary::of(&self.compile),
            apply: Summary::of(&self.apply),
            entries: Summary::of(&self.entries),
        }
    }
}

fn compile_over(loaded: &Loaded, specs: Vec<RuleSpec>, enforced: &Compiled) -> Result<Compiled> {
    compile::compile(
        specs,
        &loaded.intel,
        loaded.compiled.now,
        &enforced.registry,
    )
    .context("cannot compile the changed rules")
}

/// Returns the same rules with every config rule's action turned to `log`.
/// The built-in rules stay as they are.
fn as_log_rules(rules: &[RuleSpec], builtin: usize) -> Vec<RuleSpec> {
    rules
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            let mut rule = rule.clone();
            if index >= builtin {
                rule.action = Action::Log;
            }
            rule
        })
        .collect()
}

/// Writes [`DIFF_INDICATORS`] indicators that the generated feeds never
/// hold: IPv4 hosts from 198.18.0.0/15 and one IPv6 host in ten from
/// 2001:db8:d1ff::/48, each run its own slice of both ranges.
fn write_diff_feed(work: &Path, run: usize) -> Result<std::path::PathBuf> {
    let mut text = String::with_capacity(DIFF_INDICATORS * 120);
    let base = (run * DIFF_INDICATORS) as u32;
    for index in 0..DIFF_INDICATORS as u32 {
        let indicator = if index % 10 == 9 {
            Ipv6Addr::from((0x2001_0db8_d1ff_u128 << 80) | u128::from(base + index)).to_string()
        } else {
            Ipv4Addr::from(0xc612_0000 | ((base + index) & 0x1_ffff)).to_string()
        };
        let _ = writeln!(
            text,
            r#"{{"indicator": "{indicator}", "datasets": ["ddos"], "target_countries": ["FR"], "score": {}}}"#,
            1 + index % 100
        );
    }
    let path = work.join(format!("diff-{run}.jsonl"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
