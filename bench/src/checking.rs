//! `intelwall check` on the largest mixed feed with five rules of the kinds
//! users write: the time to parse, merge and compile, and the peak memory,
//! with no kernel work.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::stats::Summary;
use crate::subject::SAFETY_OFF;
use crate::system::{self, run_measured};

/// The five rules: attribute lists, a set, time and score, an event-scoped
/// pair, and an allow rule.
const RULES: &str = r#"
[[rule]]
name = "ddos-fr"
expression = 'any(ip.intel.datasets[*] == "ddos") and any(ip.intel.target_countries[*] == "FR")'
action = "drop"

[[rule]]
name = "named-actors"
expression = 'any(ip.intel.attacker_names[*] in {"Actor 01" "Actor 02" "Actor 03"})'
action = "drop"

[[rule]]
name = "recent-high-score"
expression = 'ip.intel.days_since_seen <= 7 and ip.intel.score > 80'
action = "tag"
mark = 1

[[rule]]
name = "botnet-finance"
expression = 'any(ip.intel.events[*].dataset == "botnet" and ip.intel.events[*].target_industry == "finance")'
action = "log"

[[rule]]
name = "scanners"
expression = 'any(ip.intel.datasets[*] == "scanner")'
action = "allow"
"#;

/// Seconds and peak RSS of `intelwall check` runs.
pub struct CheckRow {
    pub indicators: usize,
    pub runs: usize,
    pub seconds: Summary,
    pub peak_rss_mib: Summary,
}

/// Runs `intelwall check` `runs` times on `feed`, a jsonl file of
/// `indicators` indicators.
pub fn measure(
    agent: &Path,
    feed: &Path,
    indicators: usize,
    work: &Path,
    runs: usize,
    timeout: Duration,
) -> Result<CheckRow> {
    let config = write_config(work, feed)?;
    read_through(feed)?;
    let mut seconds = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        system::wait_until_idle();
        let mut command = Command::new(agent);
        command.arg("check").arg("--config").arg(&config);
        let measured = run_measured(&mut command, timeout)?;
        seconds.push(measured.elapsed.as_secs_f64());
        rss.push(measured.max_rss_kib as f64 / 1024.0);
    }
    Ok(CheckRow {
        indicators,
        runs,
        seconds: Summary::of(&seconds),
        peak_rss_mib: Summary::of(&rss),
    })
}

/// Reads `feed` once, untimed, so that every timed run finds it in the page
/// cache and none pays for the disk.
fn read_through(feed: &Path) -> Result<()> {
    let mut file =
        std::fs::File::open(feed).with_context(|| format!("cannot open {}", feed.display()))?;
    std::io::copy(&mut file, &mut std::io::sink())
        .with_context(|| format!("cannot read {}", feed.display()))?;
    Ok(())
}

fn write_config(dir: &Path, feed: &Path) -> Result<PathBuf> {
    let mut text = String::from(SAFETY_OFF);
    let _ = write!(
        text,
        "[[feed]]\nname = \"bench\"\npath = \"{}\"\nformat = \"jsonl\"\n{RULES}",
        feed.display()
    );
    let path = dir.join("check-five-rules.toml");
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Returns the rules, for the report.
pub fn rules() -> &'static str {
    RULES.trim()
}
