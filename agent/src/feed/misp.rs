//! The `misp` format: MISP events, one file (`{"Event": {...}}`, a list of
//! them, or a search response `{"response": [...]}`) or a MISP feed: a
//! directory, or its `manifest.json`, whose manifest lists the UUIDs of the
//! events stored beside it as `<uuid>.json`. Each file is read whole into
//! memory, one at a time.
//!
//! Records are the attributes of each event, those inside its `Object`s
//! included. Attributes of type `ip-src` and `ip-dst` load their value,
//! `ip-src|port` and `ip-dst|port` the address before the `|`, and
//! `domain|ip` the address after it. Other types, and attributes marked
//! `deleted`, are skipped.
//!
//! Attributes, from the tags and galaxies of the event and of the attribute:
//!
//! - `misp-galaxy:threat-actor="NAME"` tags and threat-actor galaxy clusters
//!   give attacker names; a cluster's `meta.country` gives attacker countries.
//! - `misp-galaxy:sector="NAME"` tags give target industries.
//! - the event's `info` (its title) is a dataset, so that rules can select
//!   the indicators of one event.
//! - `tlp:` tags are ignored: they set how the data may be shared, not what
//!   it describes. Other tags are ignored too. MISP has no standard tag for a
//!   country that would say whether it is the attacker's or the target's, so
//!   none is read.
//!
//! `last_seen` is the attribute's `last_seen`, else its `timestamp` (Unix
//! seconds), else the event's `timestamp`, else the event's `date`, else the
//! load time. `to_ids` is not consulted: an address in an event is loaded
//! whether or not the event marks it for detection.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::FeedError;
use super::diagnostic::Location;
use super::input::{Input, read_document};
use super::load::{FeedLoad, RecordAttributes};
use super::time::{TIME_FORMS, parse_time, parse_unix_seconds};
use crate::intel::{Attribute, Intel, Sighting};

/// Whether `path` names a MISP feed: a directory, or a file named
/// `manifest.json`.
pub fn is_feed_path(path: &Path) -> bool {
    path.is_dir() || path.file_name().is_some_and(|name| name == "manifest.json")
}

/// Loads every event a MISP feed's manifest lists. An event file that is
/// missing or not valid JSON is rejected as one record, and the others load.
pub fn load_feed(path: &Path, load: &mut FeedLoad<'_>) -> Result<(), FeedError> {
    let (directory, manifest_path) = if path.is_dir() {
        (path.to_owned(), path.join("manifest.json"))
    } else {
        let directory = path.parent().unwrap_or(Path::new(".")).to_owned();
        (directory, path.to_owned())
    };
    let manifest = parse_file(&manifest_path)?;
    let Some(manifest) = manifest.as_object() else {
        return Err(FeedError::InvalidDocument {
            path: manifest_path,
            message: "expected an object of event UUIDs".to_owned(),
        });
    };

    let mut attributes = RecordAttributes::new(load);
    for uuid in manifest.keys() {
        // The UUID becomes a file name, so it must not reach outside the
        // feed's directory.
        if uuid.is_empty() || !uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            load.set_diagnostic_path(&manifest_path);
            load.count_data_line();
            load.reject(
                Location::Object(uuid),
                format_args!("invalid event UUID in the manifest"),
            );
            continue;
        }
        let event_path: PathBuf = directory.join(format!("{uuid}.json"));
        load.set_diagnostic_path(&event_path);
        let document = match parse_file(&event_path) {
            Ok(document) => document,
            Err(error) => {
                load.count_data_line();
                load.reject(Location::Object(uuid), format_args!("{error}"));
                continue;
            }
        };
        if let Err(message) = load_events(&document, load, &mut attributes) {
            load.count_data_line();
            load.reject(Location::Object(uuid), format_args!("{message}"));
        }
    }
    Ok(())
}

fn parse_file(path: &Path) -> Result<Value, FeedError> {
    let bytes = read_document(Input::open(path)?, path)?;
    serde_json::from_slice(&bytes).map_err(|source| FeedError::Json {
        path: path.to_owned(),
        source,
    })
}

/// Loads a file of MISP events.
pub fn load(document: &Value, load: &mut FeedLoad<'_>) -> Result<(), FeedError> {
    let mut attributes = RecordAttributes::new(load);
    load_events(document, load, &mut attributes).map_err(|message| FeedError::InvalidDocument {
        path: load.config().path.clone(),
        message,
    })
}

/// Loads the events of one document. Returns an error when it contains none.
fn load_events(
    document: &Value,
    load: &mut FeedLoad<'_>,
    attributes: &mut RecordAttributes,
) -> Result<(), String> {
    let events: Vec<&Value> = match document {
        Value::Object(object) if object.contains_key("Event") => vec![&object["Event"]],
        Value::Object(object) => match object.get("response") {
            Some(Value::Array(items)) => {
                items.iter().filter_map(|item| item.get("Event")).collect()
            }
            _ => return Err(NOT_AN_EVENT.to_owned()),
        },
        Value::Array(items) => items.iter().filter_map(|item| item.get("Event")).collect(),
        _ => return Err(NOT_AN_EVENT.to_owned()),
    };
    for event in events {
        load_event(event, load, attributes);
    }
    Ok(())
}

const NOT_AN_EVENT: &str =
    "expected a MISP event `{\"Event\": {...}}`, a list of them or a `response` list";

/// Event fields shared by every attribute of the event.
struct EventContext<'a> {
    uuid: &'a str,
    /// The event's `timestamp`, else its `date`, in Unix seconds.
    time: Option<i64>,
    info: Option<&'a str>,
    event: &'a Value,
}

fn load_event(event: &Value, load: &mut FeedLoad<'_>, attributes: &mut RecordAttributes) {
    let text = |key| event.get(key).and_then(Value::as_str);
    let time = event
        .get("timestamp")
        .and_then(unix_seconds)
        .or_else(|| text("date").and_then(parse_time));
    let context = EventContext {
        uuid: text("uuid").unwrap_or("Event"),
        time,
        info: text("info"),
        event,
    };

    let direct = list(event, "Attribute").iter().enumerate();
    for (index, attribute) in direct {
        let position = format!("{}/Attribute[{index}]", context.uuid);
        load_attribute(load, attributes, &context, &position, attribute);
    }
    for (object_index, object) in list(event, "Object").iter().enumerate() {
        for (index, attribute) in list(object, "Attribute").iter().enumerate() {
            let position = format!("{}/Object[{object_index}]/Attribute[{index}]", context.uuid);
            load_attribute(load, attributes, &context, &position, attribute);
        }
    }
}

fn load_attribute(
    load: &mut FeedLoad<'_>,
    attributes: &mut RecordAttributes,
    context: &EventContext<'_>,
    position: &str,
    attribute: &Value,
) {
    load.count_data_line();
    let id = attribute
        .get("uuid")
        .and_then(Value::as_str)
        .unwrap_or(position);
    let at = Location::Object(id);
    let (Some(kind), Some(value)) = (
        attribute.get("type").and_then(Value::as_str),
        attribute.get("value").and_then(Value::as_str),
    ) else {
        load.reject(
            at,
            format_args!("attribute without a string `type` and `value`"),
        );
        return;
    };
    let deleted = attribute.get("deleted").is_some_and(is_true);
    let Some(address) = address_part(kind, value).filter(|_| !deleted) else {
        load.skip();
        return;
    };
    let last_seen = match attribute.get("last_seen").and_then(Value::as_str) {
        Some(text) => match parse_time(text) {
            Some(seconds) => seconds,
            None => {
                load.reject(
                    at,
                    format_args!("invalid last_seen `{text}`; expected {TIME_FORMS}"),
                );
                return;
            }
        },
        None => attribute
            .get("timestamp")
            .and_then(unix_seconds)
            .or(context.time)
            .unwrap_or(load.now),
    };
    let Some(net) = load.parse_indicator(at, address.trim()) else {
        return;
    };

    attributes.start();
    if let Some(info) = context.info {
        attributes.push(load.intel, Attribute::Datasets, info);
    }
    for source in [context.event, attribute] {
        push_tags(load.intel, attributes, source);
        push_galaxies(load.intel, attributes, source);
    }
    let sighting = Sighting {
        last_seen,
        profile: attributes.profile_id(load.intel),
        feed: load.feed,
        score: load.default_score(),
    };
    load.add_sighting(net, sighting);
}

/// The address in an attribute's value, for the types that hold one.
fn address_part<'v>(kind: &str, value: &'v str) -> Option<&'v str> {
    match kind {
        "ip-src" | "ip-dst" => Some(value),
        "ip-src|port" | "ip-dst|port" => value.split_once('|').map(|(address, _)| address),
        "domain|ip" => value.split_once('|').map(|(_, address)| address),
        _ => None,
    }
}

fn push_tags(intel: &mut Intel, attributes: &mut RecordAttributes, source: &Value) {
    for tag in list(source, "Tag") {
        let Some(name) = tag.get("name").and_then(Value::as_str) else {
            continue;
        };
        if let Some(actor) = galaxy_tag_value(name, "misp-galaxy:threat-actor") {
            attributes.push(intel, Attribute::AttackerNames, actor);
        } else if let Some(sector) = galaxy_tag_value(name, "misp-galaxy:sector") {
            attributes.push(intel, Attribute::TargetIndustries, sector);
        }
    }
}

/// The value of a tag `PREFIX="VALUE"`.
fn galaxy_tag_value<'t>(tag: &'t str, prefix: &str) -> Option<&'t str> {
    let quoted = tag.strip_prefix(prefix)?.strip_prefix('=')?;
    quoted.strip_prefix('"')?.strip_suffix('"')
}

/// Adds the threat-actor clusters of `source`'s galaxies: the cluster's
/// value as an attacker name and its `meta.country` as attacker countries.
fn push_galaxies(intel: &mut Intel, attributes: &mut RecordAttributes, source: &Value) {
    for galaxy in list(source, "Galaxy") {
        if galaxy.get("type").and_then(Value::as_str) != Some("threat-actor") {
            continue;
        }
        for cluster in list(galaxy, "GalaxyCluster") {
            if let Some(name) = cluster.get("value").and_then(Value::as_str) {
                attributes.push(intel, Attribute::AttackerNames, name);
            }
            let countries = cluster.get("meta").and_then(|meta| meta.get("country"));
            for country in strings(countries) {
                attributes.push(intel, Attribute::AttackerCountries, country);
            }
        }
    }
}

/// The array under `key`, or an empty one when it is absent or not an array.
fn list<'v>(value: &'v Value, key: &str) -> &'v [Value] {
    value
        .get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn strings(value: Option<&Value>) -> Vec<&str> {
    match value {
        Some(Value::String(text)) => vec![text.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Unix seconds written as a string (as MISP exports them) or a number.
fn unix_seconds(value: &Value) -> Option<i64> {
    match value {
        Value::String(text) => parse_unix_seconds(text),
        Value::Number(number) => number.as_i64(),
        _ => None,
    }
}

/// MISP writes booleans as JSON booleans, or in older exports as "1"/"0".
fn is_true(value: &Value) -> bool {
    match value {
        Value::Bool(flag) => *flag,
        Value::String(text) => text == "1" || text.eq_ignore_ascii_case("true"),
        Value::Number(number) => number.as_i64() == Some(1),
        _ => false,
    }
}
