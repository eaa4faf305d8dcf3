//! The `stix2` format: a STIX 2.0 or 2.1 bundle (`{"type": "bundle",
//! "objects": [...]}`), read whole into memory.
//!
//! Records are the objects that can carry an IP indicator:
//!
//! - `indicator` objects of pattern type `stix` (the default), whose pattern
//!   gives addresses as [`pattern`] describes. A pattern about other things
//!   (domains, file hashes) is skipped; one that does not parse, or that
//!   needs more than an address, is rejected with the object's id.
//! - `observed-data` objects with embedded `objects` (STIX 2.0), whose
//!   `ipv4-addr` and `ipv6-addr` objects load with `last_observed` as
//!   `last_seen`. One without them is skipped: in STIX 2.1 the observed
//!   objects are top-level and load themselves.
//! - top-level `ipv4-addr` and `ipv6-addr` objects (STIX 2.1), with the load
//!   time as `last_seen`.
//!
//! An indicator's attributes come from the objects that relationships join
//! to it. Attacker names are the `threat-actor` and `intrusion-set` objects
//! it `indicates`, directly or through a `campaign` it indicates that is
//! `attributed-to` them. Attacker countries are the `country` of `location`
//! objects those actors are `located-at` or `originates-from`. Targets are
//! what the indicator, its campaigns or its actors `targets`: an `identity`
//! gives its `sectors` as target industries and its `x_cta_country` (a
//! Cyber Threat Alliance extension) and `located-at` locations as target
//! countries, and a `location` gives its country.
//!
//! `last_seen` is the indicator's `modified`, else `valid_from`, else the
//! load time, and `confidence` (0 to 100) is its score. An indicator whose
//! `valid_until` is before the load time is skipped with a warning: STIX
//! defines it as no longer valid, and loading it would block on stale data.

mod pattern;

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use self::pattern::{PatternAddress, pattern_addresses};
use super::FeedError;
use super::diagnostic::Location;
use super::load::{FeedLoad, RecordAttributes};
use super::time::{TIME_FORMS, parse_time};
use crate::intel::{Attribute, Sighting};

#[derive(Deserialize)]
struct Indicator<'a> {
    #[serde(borrow)]
    pattern: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pattern_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    valid_from: Option<Cow<'a, str>>,
    #[serde(borrow)]
    valid_until: Option<Cow<'a, str>>,
    #[serde(borrow)]
    modified: Option<Cow<'a, str>>,
    confidence: Option<i64>,
}

pub fn load(document: &Value, load: &mut FeedLoad<'_>) -> Result<(), FeedError> {
    let objects = bundle_objects(document).ok_or_else(|| FeedError::InvalidDocument {
        path: load.config().path.clone(),
        message: "expected a STIX bundle: an object with an `objects` array".to_owned(),
    })?;
    let graph = Graph::new(objects);
    let mut attributes = RecordAttributes::new(load);
    for (index, object) in objects.iter().enumerate() {
        let position = format!("objects[{index}]");
        let id = object
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(&position);
        match object.get("type").and_then(Value::as_str) {
            Some("indicator") => load_indicator(load, &mut attributes, &graph, id, object),
            Some("observed-data") => load_observed_data(load, &mut attributes, id, object),
            Some(object_type) if address_object_type(object_type).is_some() => {
                load.count_data_line();
                attributes.start();
                let last_seen = load.now;
                load_address_object(load, &mut attributes, id, object_type, object, last_seen);
            }
            _ => {}
        }
    }
    Ok(())
}

/// The objects of a bundle; a bare array of objects is taken as well.
fn bundle_objects(document: &Value) -> Option<&Vec<Value>> {
    match document {
        Value::Array(objects) => Some(objects),
        Value::Object(bundle) => bundle.get("objects")?.as_array(),
        _ => None,
    }
}

fn load_indicator(
    load: &mut FeedLoad<'_>,
    attributes: &mut RecordAttributes,
    graph: &Graph<'_>,
    id: &str,
    object: &Value,
) {
    load.count_data_line();
    let at = Location::Object(id);
    let indicator = match Indicator::deserialize(object) {
        Ok(indicator) => indicator,
        Err(error) => {
            load.reject(at, format_args!("invalid indicator: {error}"));
            return;
        }
    };
    if indicator
        .pattern_type
        .as_deref()
        .is_some_and(|pattern_type| pattern_type != "stix")
    {
        load.skip();
        return;
    }
    let Some(pattern) = indicator.pattern.as_deref() else {
        load.reject(at, format_args!("missing key `pattern`"));
        return;
    };
    let addresses = match pattern_addresses(pattern) {
        Ok(addresses) => addresses,
        Err(error) => {
            load.reject(at, format_args!("invalid pattern `{pattern}`: {error}"));
            return;
        }
    };
    if addresses.is_empty() {
        load.skip();
        return;
    }
    let Some((last_seen, score)) = indicator_time_and_score(load, id, &indicator) else {
        return;
    };

    // One bad value rejects the indicator, once, so that each record is
    // counted as rejected at most once.
    let invalid = addresses
        .iter()
        .find(|address| !load.is_valid_indicator(address.value.trim()));
    if let Some(address) = invalid {
        load.parse_indicator(Location::Object(id), address.value.trim());
        return;
    }

    attributes.start();
    graph.push_context(load, attributes, id);
    let sighting = Sighting {
        last_seen,
        profile: attributes.profile_id(load.intel),
        feed: load.feed,
        score,
    };
    for address in addresses {
        load_pattern_address(load, id, &address, sighting);
    }
}

/// Checks `valid_until`, `modified`, `valid_from` and `confidence`. Returns
/// `None` when the indicator was rejected or, being expired, skipped.
fn indicator_time_and_score(
    load: &mut FeedLoad<'_>,
    id: &str,
    indicator: &Indicator<'_>,
) -> Option<(i64, u8)> {
    let at = Location::Object(id);
    let mut time = |key: &str, text: Option<&str>| -> Result<Option<i64>, ()> {
        let Some(text) = text else {
            return Ok(None);
        };
        match parse_time(text) {
            Some(seconds) => Ok(Some(seconds)),
            None => {
                load.reject(
                    at,
                    format_args!("invalid {key} `{text}`; expected {TIME_FORMS}"),
                );
                Err(())
            }
        }
    };
    let valid_until = time("valid_until", indicator.valid_until.as_deref()).ok()?;
    let modified = time("modified", indicator.modified.as_deref()).ok()?;
    let valid_from = time("valid_from", indicator.valid_from.as_deref()).ok()?;

    if let Some(valid_until) = valid_until.filter(|&until| until < load.now) {
        let until = jiff::Timestamp::from_second(valid_until).ok()?;
        load.warn(
            at,
            format_args!("indicator expired at {until} (valid_until) and was skipped"),
        );
        load.skip();
        return None;
    }
    let score = match indicator.confidence {
        None => load.default_score(),
        Some(confidence) => match u8::try_from(confidence) {
            Ok(score) if score <= 100 => score,
            _ => {
                load.reject(
                    at,
                    format_args!("confidence {confidence} is out of range; expected 0 to 100"),
                );
                return None;
            }
        },
    };
    let last_seen = modified.or(valid_from).unwrap_or(load.now);
    Some((last_seen, score))
}

/// Loads one address of a pattern, warning when its path named the other
/// family: the value decides, since that is what will be matched.
fn load_pattern_address(
    load: &mut FeedLoad<'_>,
    id: &str,
    address: &PatternAddress,
    sighting: Sighting,
) {
    let at = Location::Object(id);
    let Some(net) = load.parse_indicator(at, address.value.trim()) else {
        return;
    };
    let family = match net {
        ipnet::IpNet::V4(_) => "ipv4-addr",
        ipnet::IpNet::V6(_) => "ipv6-addr",
    };
    if family != address.object_type {
        load.warn(
            at,
            format_args!(
                "pattern path is {}:value but `{}` is an {family} value; loaded as {net}",
                address.object_type, address.value
            ),
        );
    }
    load.add_sighting(net, sighting);
}

fn load_observed_data(
    load: &mut FeedLoad<'_>,
    attributes: &mut RecordAttributes,
    id: &str,
    object: &Value,
) {
    load.count_data_line();
    let Some(embedded) = object.get("objects").and_then(Value::as_object) else {
        load.skip();
        return;
    };
    let addresses: Vec<(&'static str, &Value)> = embedded
        .values()
        .filter_map(|observed| {
            let object_type = observed.get("type").and_then(Value::as_str)?;
            Some((address_object_type(object_type)?, observed))
        })
        .collect();
    if addresses.is_empty() {
        load.skip();
        return;
    }
    let last_observed = object.get("last_observed").and_then(Value::as_str);
    let last_seen = match last_observed.map(|text| (text, parse_time(text))) {
        None => load.now,
        Some((_, Some(seconds))) => seconds,
        Some((text, None)) => {
            load.reject(
                Location::Object(id),
                format_args!("invalid last_observed `{text}`; expected {TIME_FORMS}"),
            );
            return;
        }
    };
    attributes.start();
    for (object_type, observed) in addresses {
        load_address_object(load, attributes, id, object_type, observed, last_seen);
    }
}

/// The STIX type of an address object, or `None` for another type.
fn address_object_type(object_type: &str) -> Option<&'static str> {
    match object_type {
        "ipv4-addr" => Some("ipv4-addr"),
        "ipv6-addr" => Some("ipv6-addr"),
        _ => None,
    }
}

/// Loads an `ipv4-addr` or `ipv6-addr` object's `value`.
fn load_address_object(
    load: &mut FeedLoad<'_>,
    attributes: &mut RecordAttributes,
    id: &str,
    object_type: &str,
    object: &Value,
    last_seen: i64,
) {
    let at = Location::Object(id);
    let Some(value) = object.get("value").and_then(Value::as_str) else {
        load.reject(
            at,
            format_args!("{object_type} object without a string `value`"),
        );
        return;
    };
    let sighting = Sighting {
        last_seen,
        profile: attributes.profile_id(load.intel),
        feed: load.feed,
        score: load.default_score(),
    };
    let address = PatternAddress {
        object_type: address_object_type(object_type).unwrap_or("ipv4-addr"),
        value: value.to_owned(),
    };
    load_pattern_address(load, id, &address, sighting);
}

/// The bundle's objects by id, and its relationships by source.
struct Graph<'a> {
    objects: HashMap<&'a str, &'a Value>,
    /// `(relationship_type, target_ref)` by `source_ref`.
    relationships: HashMap<&'a str, Vec<(&'a str, &'a str)>>,
}

impl<'a> Graph<'a> {
    fn new(objects: &'a [Value]) -> Self {
        let mut graph = Graph {
            objects: HashMap::new(),
            relationships: HashMap::new(),
        };
        for object in objects {
            let Some(id) = object.get("id").and_then(Value::as_str) else {
                continue;
            };
            graph.objects.insert(id, object);
            if object.get("type").and_then(Value::as_str) != Some("relationship") {
                continue;
            }
            let text = |key| object.get(key).and_then(Value::as_str);
            let (Some(kind), Some(source), Some(target)) = (
                text("relationship_type"),
                text("source_ref"),
                text("target_ref"),
            ) else {
                continue;
            };
            graph
                .relationships
                .entry(source)
                .or_default()
                .push((kind, target));
        }
        graph
    }

    fn object_type(&self, id: &str) -> Option<&'a str> {
        self.objects.get(id)?.get("type")?.as_str()
    }

    /// The targets of `source`'s relationships of `kind`.
    fn related(&self, source: &str, kind: &str) -> Vec<&'a str> {
        let Some(relationships) = self.relationships.get(source) else {
            return Vec::new();
        };
        relationships
            .iter()
            .filter(|(relationship, _)| *relationship == kind)
            .map(|(_, target)| *target)
            .collect()
    }

    fn text(&self, id: &str, key: &str) -> Option<&'a str> {
        self.objects.get(id)?.get(key)?.as_str()
    }

    fn strings(&self, id: &str, key: &str) -> Vec<&'a str> {
        let Some(values) = self.objects.get(id).and_then(|object| object.get(key)) else {
            return Vec::new();
        };
        match values {
            Value::String(value) => vec![value.as_str()],
            Value::Array(values) => values.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// Adds the attributes joined to an indicator, as the module
    /// documentation describes.
    fn push_context(
        &self,
        load: &mut FeedLoad<'_>,
        attributes: &mut RecordAttributes,
        indicator: &str,
    ) {
        let is_actor =
            |id: &&str| matches!(self.object_type(id), Some("threat-actor" | "intrusion-set"));
        let indicated = self.related(indicator, "indicates");
        let campaigns: Vec<&str> = indicated
            .iter()
            .copied()
            .filter(|id| self.object_type(id) == Some("campaign"))
            .collect();
        let mut actors: Vec<&str> = indicated.iter().copied().filter(is_actor).collect();
        for campaign in &campaigns {
            let attributed = self.related(campaign, "attributed-to");
            actors.extend(attributed.into_iter().filter(is_actor));
        }

        for actor in &actors {
            if let Some(name) = self.text(actor, "name") {
                attributes.push(load.intel, Attribute::AttackerNames, name);
            }
            for kind in ["located-at", "originates-from"] {
                for location in self.related(actor, kind) {
                    self.push_country(load, attributes, Attribute::AttackerCountries, location);
                }
            }
        }

        let sources = std::iter::once(indicator).chain(campaigns).chain(actors);
        for source in sources {
            for target in self.related(source, "targets") {
                self.push_target(load, attributes, target);
            }
        }
    }

    fn push_target(
        &self,
        load: &mut FeedLoad<'_>,
        attributes: &mut RecordAttributes,
        target: &str,
    ) {
        match self.object_type(target) {
            Some("identity") => {
                for sector in self.strings(target, "sectors") {
                    attributes.push(load.intel, Attribute::TargetIndustries, sector);
                }
                for country in self.strings(target, "x_cta_country") {
                    attributes.push(load.intel, Attribute::TargetCountries, country);
                }
                for location in self.related(target, "located-at") {
                    self.push_country(load, attributes, Attribute::TargetCountries, location);
                }
            }
            Some("location") => {
                self.push_country(load, attributes, Attribute::TargetCountries, target);
            }
            _ => {}
        }
    }

    fn push_country(
        &self,
        load: &mut FeedLoad<'_>,
        attributes: &mut RecordAttributes,
        attribute: Attribute,
        location: &str,
    ) {
        if self.object_type(location) != Some("location") {
            return;
        }
        if let Some(country) = self.text(location, "country") {
            attributes.push(load.intel, attribute, country);
        }
    }
}
