//! `intelwall explain`: why an address gets the verdict it gets.
//!
//! The verdict comes from the compiled image, looked up the way the XDP
//! program looks it up, so it is the kernel's verdict. The rules are also
//! run through the expression interpreter over the address's merged record;
//! a disagreement would be a compiler bug and is reported as an error.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;

use anyhow::Result;
use intelwall_common::Fate;
use serde::Serialize;

use crate::intel::{Attribute, Intel, Sighting, canonical_address};
use crate::pipeline::{self, Loaded};
use crate::rule::AddressView;

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub address: String,
    /// drop, allow, tag or pass.
    pub verdict: &'static str,
    pub decided_by: Option<String>,
    pub matched_rules: Vec<String>,
    pub mark: Option<u32>,
    pub class: u32,
    pub sightings: Vec<SightingView>,
    pub predicates: Vec<PredicateView>,
    pub rules: Vec<RuleView>,
}

#[derive(Debug, Serialize)]
pub struct SightingView {
    pub indicator: String,
    pub feed: String,
    pub attacker_names: Vec<String>,
    pub attacker_countries: Vec<String>,
    pub target_countries: Vec<String>,
    pub target_industries: Vec<String>,
    pub datasets: Vec<String>,
    pub last_seen: Option<String>,
    pub score: Option<u8>,
}

#[derive(Debug, Serialize)]
pub struct PredicateView {
    pub bit: usize,
    pub predicate: String,
    pub holds: bool,
}

#[derive(Debug, Serialize)]
pub struct RuleView {
    pub name: String,
    pub action: String,
    pub expression: String,
    pub matches: bool,
}

/// Loads the config and prints the explanation of `address`.
pub fn explain(config: &Path, address: IpAddr, json: bool) -> Result<()> {
    let loaded = pipeline::load(config, jiff::Timestamp::now())?;
    crate::cli::print_diagnostics(&loaded);
    let explanation = explanation(&loaded, address)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&explanation)?);
    } else {
        print!("{}", explanation_text(&explanation));
    }
    Ok(())
}

/// Explains the verdict for `address` under `loaded`.
pub fn explanation(loaded: &Loaded, address: IpAddr) -> Result<Explanation> {
    let address = canonical_address(address);
    let compiled = &loaded.compiled;
    let (class, verdict) = compiled.verdict_for(address);
    let bits = compiled.class_bits[class as usize].unwrap_or_default();

    let covering = loaded.intel.sightings_covering(address);
    let sightings: Vec<Sighting> = covering.iter().map(|(_, sighting)| *sighting).collect();
    let view = AddressView {
        intel: &loaded.intel,
        address,
        sightings: &sightings,
        now: compiled.now,
    };
    let rules: Vec<RuleView> = compiled
        .rules
        .iter()
        .enumerate()
        .map(|(index, rule)| RuleView {
            name: rule.name.clone(),
            action: rule.action.to_string(),
            expression: rule.source.clone(),
            matches: verdict.matched.contains(&index),
        })
        .collect();
    for (rule, view_rule) in compiled.rules.iter().zip(&rules) {
        let interpreted = rule.expr.eval(&view);
        anyhow::ensure!(
            interpreted == view_rule.matches,
            "rule `{}`: the compiled image says {} but the interpreter says {} for {address}; please report this",
            rule.name,
            view_rule.matches,
            interpreted
        );
    }

    Ok(Explanation {
        address: address.to_string(),
        verdict: fate_name(verdict.fate),
        decided_by: verdict
            .decided_by
            .map(|index| compiled.rules[index].name.clone()),
        matched_rules: verdict
            .matched
            .iter()
            .map(|index| compiled.rules[*index].name.clone())
            .collect(),
        mark: (verdict.fate == Fate::Tag).then_some(verdict.mark),
        class,
        sightings: covering
            .iter()
            .map(|(net, sighting)| sighting_view(&loaded.intel, &net.to_string(), sighting))
            .collect(),
        predicates: compiled
            .predicates
            .iter()
            .enumerate()
            .filter_map(|(bit, predicate)| {
                predicate.as_ref().map(|predicate| PredicateView {
                    bit,
                    predicate: predicate.to_string(),
                    holds: bits & (1 << bit) != 0,
                })
            })
            .collect(),
        rules,
    })
}

fn fate_name(fate: Fate) -> &'static str {
    match fate {
        Fate::Pass => "pass",
        Fate::Drop => "drop",
        Fate::Allow => "allow",
        Fate::Tag => "tag",
    }
}

fn sighting_view(intel: &Intel, indicator: &str, sighting: &Sighting) -> SightingView {
    let profile = intel.profile(sighting.profile);
    let values = |attribute: Attribute| -> Vec<String> {
        profile
            .values(attribute)
            .iter()
            .map(|symbol| intel.resolve(*symbol).to_owned())
            .collect()
    };
    SightingView {
        indicator: indicator.to_owned(),
        feed: intel.feed(sighting.feed).name.clone(),
        attacker_names: values(Attribute::AttackerNames),
        attacker_countries: values(Attribute::AttackerCountries),
        target_countries: values(Attribute::TargetCountries),
        target_industries: values(Attribute::TargetIndustries),
        datasets: values(Attribute::Datasets),
        last_seen: sighting.last_seen().map(|time| time.to_string()),
        score: sighting.score(),
    }
}

fn explanation_text(explanation: &Explanation) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "address {}", explanation.address);
    if explanation.sightings.is_empty() {
        let _ = writeln!(text, "  in no feed");
    }
    for sighting in &explanation.sightings {
        let _ = writeln!(
            text,
            "  listed as {} by feed {}",
            sighting.indicator, sighting.feed
        );
        for (field, values) in [
            ("attacker_names", &sighting.attacker_names),
            ("attacker_countries", &sighting.attacker_countries),
            ("target_countries", &sighting.target_countries),
            ("target_industries", &sighting.target_industries),
            ("datasets", &sighting.datasets),
        ] {
            if !values.is_empty() {
                let _ = writeln!(text, "    {field}: {}", values.join(", "));
            }
        }
        if let Some(last_seen) = &sighting.last_seen {
            let _ = writeln!(text, "    last_seen: {last_seen}");
        }
        if let Some(score) = sighting.score {
            let _ = writeln!(text, "    score: {score}");
        }
    }
    let _ = writeln!(text, "predicates:");
    for predicate in &explanation.predicates {
        let mark = if predicate.holds { "true " } else { "false" };
        let _ = writeln!(text, "  [{mark}] {}", predicate.predicate);
    }
    let _ = writeln!(text, "rules, in order:");
    for rule in &explanation.rules {
        let outcome = if rule.matches { "matches" } else { "no match" };
        let decided = if explanation.decided_by.as_deref() == Some(rule.name.as_str()) {
            ", decides"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "  {} ({}): {outcome}{decided}",
            rule.name, rule.action
        );
    }
    let decided_by = explanation
        .decided_by
        .as_deref()
        .map_or("no deciding rule matched".to_owned(), |name| {
            format!("by rule {name}")
        });
    let _ = writeln!(text, "verdict: {} ({decided_by})", explanation.verdict);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[safety]
enabled = false

[[feed]]
name = "threats"
path = "threats.jsonl"

[[rule]]
name = "watch"
expression = 'any(ip.intel.datasets[*] == "scanner")'
action = "log"

[[rule]]
name = "ddos-fr"
expression = 'any(ip.intel.datasets[*] == "ddos") and any(ip.intel.target_countries[*] == "FR")'
action = "drop"

[[rule]]
name = "same-event"
expression = 'any(ip.intel.events[*].dataset == "ddos" and ip.intel.events[*].target_country == "FR")'
action = "tag"
mark = 0x20
"#;

    /// 192.0.2.0/24 was seen scanning, and 192.0.2.7 inside it in two
    /// unrelated events: DDoS against Germany, botnet against France.
    const FEED: &str = r#"{"indicator":"192.0.2.0/24","datasets":["scanner"],"last_seen":"2026-12-01T00:00:00Z"}
{"indicator":"192.0.2.7","datasets":["ddos"],"target_countries":["DE"],"score":70}
{"indicator":"192.0.2.7","datasets":["botnet"],"target_countries":["FR"]}
"#;

    fn loaded() -> (tempfile::TempDir, Loaded) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("threats.jsonl"), FEED).unwrap();
        let config = dir.path().join("intelwall.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let loaded = pipeline::load(&config, "2026-12-04T00:00:00Z".parse().unwrap()).unwrap();
        (dir, loaded)
    }

    #[test]
    fn flattened_match_decides_not_event_scoped() {
        let (_dir, loaded) = loaded();
        let explanation = explanation(&loaded, "192.0.2.7".parse().unwrap()).unwrap();
        assert_eq!(explanation.verdict, "drop");
        assert_eq!(explanation.decided_by.as_deref(), Some("ddos-fr"));
        assert_eq!(explanation.matched_rules, ["watch", "ddos-fr"]);
        assert_eq!(explanation.sightings.len(), 3);
        assert!(
            explanation
                .rules
                .iter()
                .any(|rule| rule.name == "same-event" && !rule.matches)
        );
    }

    #[test]
    fn prefix_sighting_applies_to_hosts_inside() {
        let (_dir, loaded) = loaded();
        let explanation = explanation(&loaded, "192.0.2.99".parse().unwrap()).unwrap();
        assert_eq!(explanation.verdict, "pass");
        assert_eq!(explanation.decided_by, None);
        assert_eq!(explanation.matched_rules, ["watch"]);
        assert_eq!(explanation.sightings[0].indicator, "192.0.2.0/24");
    }

    #[test]
    fn address_in_no_feed_passes() {
        let (_dir, loaded) = loaded();
        let explanation = explanation(&loaded, "198.51.100.1".parse().unwrap()).unwrap();
        assert_eq!(explanation.verdict, "pass");
        assert!(explanation.sightings.is_empty());
        assert!(explanation.matched_rules.is_empty());
        let text = explanation_text(&explanation);
        assert!(text.contains("in no feed"), "{text}");
        assert!(
            text.contains("verdict: pass (no deciding rule matched)"),
            "{text}"
        );
    }

    #[test]
    fn json_has_the_documented_keys() {
        let (_dir, loaded) = loaded();
        let explanation = explanation(&loaded, "192.0.2.7".parse().unwrap()).unwrap();
        let json = serde_json::to_value(&explanation).unwrap();
        for key in ["address", "verdict", "decided_by", "matched_rules"] {
            assert!(json.get(key).is_some(), "missing key {key} in {json}");
        }
        assert_eq!(json["address"], "192.0.2.7");
    }
}
