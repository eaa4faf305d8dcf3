//! intelwall as the bench drives it: configs for generated feeds, the
//! library path from feed file to written maps, and recompiles with fewer
//! rules.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use intelwall::compile::{self, Compiled};
use intelwall::dataplane::{Capacity, ClassExtras, Dataplane};
use intelwall::pipeline::{self, Loaded};
use intelwall_tests::agent::AgentDirs;

/// Turns the safety allowlist off. It allows the host's own addresses,
/// gateways and resolvers, and a host's gateway may be a documentation
/// address that the bench uses as a hit (192.0.2.1 on some test machines).
/// Every agent the bench starts sits in a testbed namespace, where the
/// allowlist protects nothing.
pub const SAFETY_OFF: &str = "[safety]\nenabled = false\n\n";

/// Rule counts of the per-packet cases; the largest is the config's.
pub const RULE_COUNTS: [usize; 4] = [1, 10, 32, 64];

/// Writes a config for the generated jsonl feed at `feed` with `rules`
/// drop rules that all match the hit indicators. Rule `i` requires the
/// dataset `ddos` and a score of at least `i + 1`. So every rule has its own
/// predicate, and the hits (score 100) match all of them.
pub fn write_mixed_config(dir: &Path, feed: &Path, rules: usize) -> Result<PathBuf> {
    let mut text = format!(
        "{SAFETY_OFF}[[feed]]\nname = \"bench\"\npath = \"{}\"\nformat = \"jsonl\"\n",
        feed.display()
    );
    for index in 0..rules {
        let _ = write!(
            text,
            "\n[[rule]]\nname = \"drop-ddos-{index:02}\"\n\
             expression = 'any(ip.intel.datasets[*] == \"ddos\") and ip.intel.score >= {}'\n\
             action = \"drop\"\n",
            index + 1
        );
    }
    let path = dir.join(format!("mixed-{rules}.toml"));
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Writes a config that drops every address of the plain list at `feed`.
pub fn write_list_config(dir: &Path, feed: &Path) -> Result<PathBuf> {
    let mut text = String::new();
    let _ = write!(
        text,
        "{SAFETY_OFF}[[feed]]\nname = \"list\"\npath = \"{}\"\nformat = \"list\"\ndatasets = [\"drop\"]\n\n\
         [[rule]]\nname = \"drop-list\"\nexpression = 'any(ip.intel.datasets[*] == \"drop\")'\n\
         action = \"drop\"\n",
        feed.display()
    );
    let path = dir.join("list.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Adds an `[[interface]]` table and the `[agent]` table of `dirs` to a
/// copy of the config at `config`, so that each agent pins its maps in its
/// own directory.
pub fn for_agent(config: &Path, interface: &str, dirs: &AgentDirs) -> Result<PathBuf> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let path = config.with_extension("run.toml");
    let text = format!(
        "[[interface]]\nname = \"{interface}\"\nmode = \"native\"\n\n{text}\n{}",
        dirs.section("")
    );
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Loads the config's feeds and compiles its rules, as `intelwall run` does.
pub fn load(config: &Path) -> Result<Loaded> {
    pipeline::load(config, jiff::Timestamp::now())
        .with_context(|| format!("cannot load {}", config.display()))
}

/// Loads the XDP program with maps sized for `compiled` and writes its image,
/// returning the dataplane and the time the load and write took.
pub fn dataplane(compiled: &Compiled) -> Result<(Dataplane, Duration)> {
    let started = Instant::now();
    let dataplane = Dataplane::load_written(
        Capacity::for_image(&compiled.image),
        None,
        0,
        &compiled.image,
        ClassExtras::default(),
    )
    .context("cannot load the XDP program and write the map image")?;
    Ok((dataplane, started.elapsed()))
}

/// Number of built-in rules that the pipeline puts ahead of the config's:
/// the safety allowlist, when this host has addresses to protect.
pub fn builtin_rules(compiled: &Compiled) -> usize {
    compiled
        .rules
        .iter()
        .take_while(|rule| rule.name == pipeline::SAFETY_RULE)
        .count()
}

/// Compiles the built-in rules and the first `rules` rules of the config
/// over the intel of `loaded`.
pub fn recompile(loaded: &Loaded, rules: usize) -> Result<Compiled> {
    let specs = loaded.compiled.rules[..builtin_rules(&loaded.compiled) + rules].to_vec();
    compile::compile(
        specs,
        &loaded.intel,
        loaded.compiled.now,
        &Default::default(),
    )
    .with_context(|| format!("cannot compile {rules} rules"))
}
