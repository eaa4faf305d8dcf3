//! The `cloudflare` format: threat events as Cloudflare's Cloudforce One
//! API returns them from `GET /accounts/{account_id}/cloudforce-one/events`,
//! either the whole response (`{"result": [...], "success": true, ...}`) or
//! the bare array of events.
//!
//! The field names follow Cloudflare's API reference for reading and listing
//! events (developers.cloudflare.com, Cloudforce One threat events). Each
//! event has `indicator` and `indicatorType`, `attacker`, `attackerCountry`,
//! `targetCountry`, `targetIndustry`, `datasetId`, `date` and `uuid`, among
//! fields not read here. Events created with several indicators may carry an
//! `indicators` array of `{"indicatorType", "value"}` objects instead.
//! Fields are mapped to attributes by name; `dataset` is taken when
//! `datasetId` is absent, and `date` becomes `last_seen`.
//!
//! Each indicator value is one record. An IP indicator (`indicatorType` of
//! `IPv4`, `IPv6`, `IP` and the like, or any value that parses as an address
//! or prefix) loads; others (domains, hashes, JA3) are skipped, as is an
//! event with no indicator at all. The file is read whole into memory.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use super::FeedError;
use super::address::{self, DefaultRoute, RangeLimit};
use super::diagnostic::Location;
use super::load::{FeedLoad, RecordAttributes};
use super::time::{TIME_FORMS, parse_time};
use crate::intel::{Attribute, Sighting};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ThreatEvent<'a> {
    #[serde(borrow)]
    uuid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    indicator: Option<Cow<'a, str>>,
    #[serde(borrow)]
    indicator_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    indicators: Option<Vec<EventIndicator<'a>>>,
    #[serde(borrow)]
    attacker: Option<Cow<'a, str>>,
    #[serde(borrow)]
    attacker_country: Option<Cow<'a, str>>,
    #[serde(borrow)]
    target_country: Option<Cow<'a, str>>,
    #[serde(borrow)]
    target_industry: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dataset_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    dataset: Option<Cow<'a, str>>,
    #[serde(borrow)]
    date: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventIndicator<'a> {
    #[serde(borrow)]
    indicator_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    value: Option<Cow<'a, str>>,
}

pub fn load(document: &Value, load: &mut FeedLoad<'_>) -> Result<(), FeedError> {
    let events = match document {
        Value::Array(events) => events,
        Value::Object(response) => match response.get("result") {
            Some(Value::Array(events)) => events,
            _ => {
                return Err(FeedError::InvalidDocument {
                    path: load.config().path.clone(),
                    message: "expected a `result` array of threat events".to_owned(),
                });
            }
        },
        _ => {
            return Err(FeedError::InvalidDocument {
                path: load.config().path.clone(),
                message: "expected an object with a `result` array, or an array of threat events"
                    .to_owned(),
            });
        }
    };
    let mut attributes = RecordAttributes::new(load);
    for (index, event) in events.iter().enumerate() {
        load_event(load, &mut attributes, index, event);
    }
    Ok(())
}

fn load_event(
    load: &mut FeedLoad<'_>,
    attributes: &mut RecordAttributes,
    index: usize,
    value: &Value,
) {
    let position = format!("result[{index}]");
    let event = match ThreatEvent::deserialize(value) {
        Ok(event) => event,
        Err(error) => {
            let id = value
                .get("uuid")
                .and_then(Value::as_str)
                .unwrap_or(&position);
            load.count_data_line();
            load.reject(
                Location::Object(id),
                format_args!("invalid threat event: {error}"),
            );
            return;
        }
    };
    let id = event.uuid.as_deref().unwrap_or(&position);

    let mut indicators: Vec<(Option<&str>, &str)> = Vec::new();
    if let Some(indicator) = event.indicator.as_deref() {
        indicators.push((event.indicator_type.as_deref(), indicator));
    }
    for entry in event.indicators.iter().flatten() {
        if let Some(value) = entry.value.as_deref() {
            indicators.push((entry.indicator_type.as_deref(), value));
        }
    }
    if indicators.is_empty() {
        load.count_data_line();
        load.skip();
        return;
    }

    let last_seen = match event.date.as_deref() {
        None => load.now,
        Some(date) => match parse_time(date) {
            Some(seconds) => seconds,
            None => {
                for _ in &indicators {
                    load.count_data_line();
                    load.reject(
                        Location::Object(id),
                        format_args!("invalid date `{date}`; expected {TIME_FORMS}"),
                    );
                }
                return;
            }
        },
    };

    attributes.start();
    push_attributes(load, attributes, &event);
    let sighting = Sighting {
        last_seen,
        profile: attributes.profile_id(load.intel),
        feed: load.feed,
        score: load.default_score(),
    };

    for (kind, value) in indicators {
        load.count_data_line();
        let value = value.trim();
        if !is_ip_type(kind) && !parses_as_address(value) {
            load.skip();
            continue;
        }
        let at = Location::Object(id);
        let prefixes = if value.contains('-') {
            load.parse_range(at, value)
        } else {
            load.parse_indicator(at, value).map(|net| vec![net])
        };
        for prefix in prefixes.unwrap_or_default() {
            load.add_sighting(prefix, sighting);
        }
    }
}

fn push_attributes(
    load: &mut FeedLoad<'_>,
    attributes: &mut RecordAttributes,
    event: &ThreatEvent<'_>,
) {
    let dataset = event.dataset_id.as_deref().or(event.dataset.as_deref());
    let fields = [
        (Attribute::AttackerNames, event.attacker.as_deref()),
        (
            Attribute::AttackerCountries,
            event.attacker_country.as_deref(),
        ),
        (Attribute::TargetCountries, event.target_country.as_deref()),
        (
            Attribute::TargetIndustries,
            event.target_industry.as_deref(),
        ),
        (Attribute::Datasets, dataset),
    ];
    for (attribute, value) in fields {
        if let Some(value) = value {
            attributes.push(load.intel, attribute, value);
        }
    }
}

/// Checks whether an `indicatorType` names an IP indicator. The API's
/// reference gives `DOMAIN`, `IP`, `JA3` and `HASH` as examples, and the
/// other names accepted here are common spellings of an address type.
fn is_ip_type(kind: Option<&str>) -> bool {
    let Some(kind) = kind else {
        return false;
    };
    [
        "ip",
        "ipv4",
        "ipv6",
        "ip address",
        "ipv4-addr",
        "ipv6-addr",
        "cidr",
    ]
    .iter()
    .any(|name| kind.trim().eq_ignore_ascii_case(name))
}

/// Checks whether a value of another type is still an address, prefix or
/// range, so that a mislabelled IP indicator is not lost.
fn parses_as_address(value: &str) -> bool {
    if value.contains('-') {
        return address::parse_range(value, DefaultRoute::Allow, RangeLimit { ipv4: 0, ipv6: 0 })
            .is_ok();
    }
    address::parse_indicator(value, DefaultRoute::Allow).is_ok()
}
