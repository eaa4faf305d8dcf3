//! Tests of the rule language, with helpers that build intel through the
//! store's public API.

mod diagnostics;
mod parse;
mod properties;
mod semantics;

use std::net::IpAddr;

use ipnet::IpNet;
use jiff::Timestamp;

use super::{AddressView, Expr, Lists, RuleError, parse};
use crate::intel::{Attribute, Intel, ProfileDraft, Sighting};

/// 2025-01-15T00:00:00Z, the `now` of every view.
const NOW_SECONDS: i64 = 1_736_899_200;
const DAY: i64 = 86_400;

fn now() -> Timestamp {
    Timestamp::from_second(NOW_SECONDS).unwrap()
}

/// `$office` is 192.0.2.0/24 and 2001:db8::/32; `$empty` has no entries.
fn lists() -> Lists {
    let mut lists = Lists::new();
    lists.insert(
        "office".to_owned(),
        vec![
            "192.0.2.0/24".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ],
    );
    lists.insert("empty".to_owned(), Vec::new());
    lists
}

fn parse_ok(source: &str) -> Expr {
    parse(source, &lists()).unwrap_or_else(|error| panic!("{}", error.render(source, "test")))
}

fn parse_err(source: &str) -> RuleError {
    match parse(source, &lists()) {
        Ok(expr) => panic!("`{source}` parsed as `{expr}`"),
        Err(error) => error,
    }
}

/// One sighting to add to an [`Intel`]: its feed, attribute values, score
/// and age in seconds.
#[derive(Clone, Debug, Default)]
struct SightingSpec {
    feed: String,
    values: Vec<(Attribute, String)>,
    score: Option<u8>,
    age_seconds: Option<i64>,
}

impl SightingSpec {
    fn new(feed: &str) -> SightingSpec {
        SightingSpec {
            feed: feed.to_owned(),
            ..SightingSpec::default()
        }
    }

    fn with(mut self, attribute: Attribute, value: &str) -> SightingSpec {
        self.values.push((attribute, value.to_owned()));
        self
    }

    fn score(mut self, score: u8) -> SightingSpec {
        self.score = Some(score);
        self
    }

    fn days_ago(mut self, days: i64) -> SightingSpec {
        self.age_seconds = Some(days * DAY);
        self
    }

    fn add_to(&self, intel: &mut Intel) -> Sighting {
        let feed = intel.add_feed(&self.feed);
        let mut draft = ProfileDraft::default();
        for (attribute, value) in &self.values {
            let symbol = intel.intern(value);
            draft.push(*attribute, symbol);
        }
        Sighting {
            last_seen: self
                .age_seconds
                .map_or(Sighting::NEVER, |age| NOW_SECONDS - age),
            profile: intel.profile_id(draft),
            feed,
            score: self.score.unwrap_or(Sighting::NO_SCORE),
        }
    }
}

/// Builds an intel store holding `specs` and returns their sightings.
fn record(specs: &[SightingSpec]) -> (Intel, Vec<Sighting>) {
    let mut intel = Intel::new();
    let sightings = specs.iter().map(|spec| spec.add_to(&mut intel)).collect();
    (intel, sightings)
}

fn view<'a>(intel: &'a Intel, sightings: &'a [Sighting], address: &str) -> AddressView<'a> {
    AddressView {
        intel,
        address: address.parse::<IpAddr>().unwrap(),
        sightings,
        now: now(),
    }
}

/// Evaluates `source` over an address with `specs`, checking that the
/// interpreter and the predicate-by-predicate evaluation agree.
fn holds(source: &str, specs: &[SightingSpec]) -> bool {
    holds_at(source, specs, "198.51.100.7")
}

fn holds_at(source: &str, specs: &[SightingSpec], address: &str) -> bool {
    let expr = parse_ok(source);
    let (intel, sightings) = record(specs);
    let view = view(&intel, &sightings, address);
    let direct = expr.eval(&view);
    let by_predicate = expr.eval_with(&mut |predicate| predicate.eval(&view));
    assert_eq!(
        direct, by_predicate,
        "eval and eval_with disagree on `{source}`"
    );
    direct
}

fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}
