//! The fields a rule can read, their Cloudflare aliases, and name lookup with
//! "did you mean" suggestions.

use std::fmt;

use crate::intel::Attribute;

/// A string field: one of the sighting attributes, or the feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TextField {
    Attribute(Attribute),
    /// The names of the feeds that list the address.
    Feeds,
}

impl TextField {
    /// Name of the array field, such as `ip.intel.datasets`.
    pub fn name(self) -> &'static str {
        match self {
            TextField::Attribute(Attribute::AttackerNames) => "ip.intel.attacker_names",
            TextField::Attribute(Attribute::AttackerCountries) => "ip.intel.attacker_countries",
            TextField::Attribute(Attribute::TargetCountries) => "ip.intel.target_countries",
            TextField::Attribute(Attribute::TargetIndustries) => "ip.intel.target_industries",
            TextField::Attribute(Attribute::Datasets) => "ip.intel.datasets",
            TextField::Feeds => "ip.intel.feeds",
        }
    }

    /// Name of the field within one sighting, such as `dataset`.
    pub fn event_name(self) -> &'static str {
        match self {
            TextField::Attribute(Attribute::AttackerNames) => "attacker_name",
            TextField::Attribute(Attribute::AttackerCountries) => "attacker_country",
            TextField::Attribute(Attribute::TargetCountries) => "target_country",
            TextField::Attribute(Attribute::TargetIndustries) => "target_industry",
            TextField::Attribute(Attribute::Datasets) => "dataset",
            TextField::Feeds => "feed",
        }
    }

    pub fn is_country(self) -> bool {
        matches!(self, TextField::Attribute(attribute) if attribute.is_country())
    }
}

impl fmt::Display for TextField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A numeric field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NumberField {
    /// 0 to 100.
    Score,
    /// Whole days since the last sighting.
    DaysSinceSeen,
}

impl NumberField {
    pub fn name(self) -> &'static str {
        match self {
            NumberField::Score => "ip.intel.score",
            NumberField::DaysSinceSeen => "ip.intel.days_since_seen",
        }
    }

    pub fn event_name(self) -> &'static str {
        match self {
            NumberField::Score => "score",
            NumberField::DaysSinceSeen => "days_since_seen",
        }
    }

    /// Returns the largest value the field can hold, when it has a bound.
    pub fn max(self) -> Option<u64> {
        match self {
            NumberField::Score => Some(100),
            NumberField::DaysSinceSeen => None,
        }
    }
}

/// The kind of value a top-level field name refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Field {
    Array(TextField),
    Number(NumberField),
    /// `ip.src`.
    Source,
    /// `ip.intel.events`: the address's sightings.
    Events,
}

/// A field of one sighting, after `ip.intel.events[*].`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventField {
    Text(TextField),
    Number(NumberField),
}

const FIELDS: [(&str, Field); 15] = [
    ("ip.src", Field::Source),
    (
        "ip.intel.attacker_names",
        Field::Array(TextField::Attribute(Attribute::AttackerNames)),
    ),
    (
        "ip.intel.attacker_countries",
        Field::Array(TextField::Attribute(Attribute::AttackerCountries)),
    ),
    (
        "ip.intel.target_countries",
        Field::Array(TextField::Attribute(Attribute::TargetCountries)),
    ),
    (
        "ip.intel.target_industries",
        Field::Array(TextField::Attribute(Attribute::TargetIndustries)),
    ),
    (
        "ip.intel.datasets",
        Field::Array(TextField::Attribute(Attribute::Datasets)),
    ),
    ("ip.intel.feeds", Field::Array(TextField::Feeds)),
    ("ip.intel.score", Field::Number(NumberField::Score)),
    (
        "ip.intel.days_since_seen",
        Field::Number(NumberField::DaysSinceSeen),
    ),
    ("ip.intel.events", Field::Events),
    // Cloudflare's spellings, so that its documented expressions compile.
    (
        "cf.intel.ip.attacker_names",
        Field::Array(TextField::Attribute(Attribute::AttackerNames)),
    ),
    (
        "cf.intel.ip.attacker_countries",
        Field::Array(TextField::Attribute(Attribute::AttackerCountries)),
    ),
    (
        "cf.intel.ip.target_countries",
        Field::Array(TextField::Attribute(Attribute::TargetCountries)),
    ),
    (
        "cf.intel.ip.target_industries",
        Field::Array(TextField::Attribute(Attribute::TargetIndustries)),
    ),
    (
        "cf.intel.ip.datasets",
        Field::Array(TextField::Attribute(Attribute::Datasets)),
    ),
];

const EVENT_FIELDS: [(&str, EventField); 8] = [
    (
        "dataset",
        EventField::Text(TextField::Attribute(Attribute::Datasets)),
    ),
    (
        "attacker_name",
        EventField::Text(TextField::Attribute(Attribute::AttackerNames)),
    ),
    (
        "attacker_country",
        EventField::Text(TextField::Attribute(Attribute::AttackerCountries)),
    ),
    (
        "target_country",
        EventField::Text(TextField::Attribute(Attribute::TargetCountries)),
    ),
    (
        "target_industry",
        EventField::Text(TextField::Attribute(Attribute::TargetIndustries)),
    ),
    ("feed", EventField::Text(TextField::Feeds)),
    ("score", EventField::Number(NumberField::Score)),
    (
        "days_since_seen",
        EventField::Number(NumberField::DaysSinceSeen),
    ),
];

pub(crate) fn lookup(name: &str) -> Option<Field> {
    FIELDS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, field)| *field)
}

pub(crate) fn lookup_event(name: &str) -> Option<EventField> {
    EVENT_FIELDS
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, field)| *field)
}

/// Returns the help for an unknown field name.
pub(crate) fn unknown_field_help(name: &str) -> String {
    if let Some(member) = name.strip_prefix("ip.intel.events.") {
        return format!("sighting fields are read through `[*]`: `ip.intel.events[*].{member}`");
    }
    match closest(name, FIELDS.iter().map(|(known, _)| *known)) {
        Some(known) => format!("did you mean `{known}`?"),
        None => format!(
            "known fields are {}",
            FIELDS
                .iter()
                .filter(|(known, _)| known.starts_with("ip."))
                .map(|(known, _)| format!("`{known}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Returns the help for an unknown field after `ip.intel.events[*].`.
pub(crate) fn unknown_event_field_help(name: &str) -> String {
    match closest(name, EVENT_FIELDS.iter().map(|(known, _)| *known)) {
        Some(known) => format!("did you mean `{known}`?"),
        None => format!(
            "a sighting has the fields {}",
            EVENT_FIELDS
                .iter()
                .map(|(known, _)| format!("`{known}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Returns the candidate nearest to `name` by edit distance, if it is near enough to
/// be a typo: at most a quarter of the candidate's length, and at least 1.
pub(crate) fn closest<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(name, candidate), candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.chars().count() / 4).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}
