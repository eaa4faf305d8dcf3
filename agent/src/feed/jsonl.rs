//! The `jsonl` format: one JSON object a line, in intelwall's schema. An
//! example object, wrapped here but on one line in a file:
//!
//! ```text
//! {"indicator": "198.51.100.0/24", "attacker_names": ["APT1"],
//!  "attacker_countries": ["CN"], "target_countries": ["US"],
//!  "target_industries": ["energy"], "datasets": ["c2"],
//!  "last_seen": "2024-05-01T12:00:00Z", "score": 80}
//! ```
//!
//! Only `indicator` is required, and `null` counts as
//! absent. Each line is one sighting, so several lines for one indicator
//! are several sightings. The feed config's attributes are added to each
//! line's, its score applies when the line gives none, country codes are
//! folded to upper case, and a line without
//! `last_seen` is taken as seen at load time. Blank lines and lines starting
//! with `#` or `;` are skipped.
//!
//! A line that is not a JSON object, lacks `indicator`, repeats a key, has
//! a value of the wrong type, a score outside 0 to 100 or a `last_seen` that is
//! not RFC 3339 is rejected. An unknown key is ignored with a warning on the
//! first line that has it, so that a producer adding a field does not cost
//! the whole feed, while a misspelt attribute key still shows up once.

use std::borrow::Cow;
use std::fmt;
use std::io::BufRead;

use ipnet::IpNet;
use jiff::Timestamp;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::jsonl_scan::{GaveUp, scan_line};
use super::lines::{LineReader, LineText};
use super::load::{FeedLoad, intern_value};
use super::time::parse_utc_seconds;
use super::{FeedError, Location};
use crate::intel::{Attribute, Intel, Sighting, Symbol};

pub fn load<R: BufRead>(
    lines: &mut LineReader<R>,
    load: &mut FeedLoad<'_>,
) -> Result<(), FeedError> {
    let mut parser = LineParser::new(load);
    while let Some(line) = lines.next_line()? {
        match line.text {
            LineText::Text(text) => parser.load_line(load, line.number, text),
            LineText::TooLong => load.reject_too_long(line.number),
        }
    }
    Ok(())
}

/// Buffers reused from line to line, so that a line allocates nothing
/// unless it brings new strings or a new combination of attributes.
struct LineParser {
    /// The config's values for each attribute, added to every line's.
    config_values: [Vec<Symbol>; 5],
    /// The current line's values for each attribute, config's included.
    values: [Vec<Symbol>; 5],
    /// Unknown keys reported so far; each is reported once per feed.
    unknown_keys: Vec<String>,
}

/// The scalar fields of one line. Attribute values go straight into
/// [`LineParser::values`] instead.
#[derive(Default)]
pub(super) struct LineFields<'de> {
    pub(super) indicator: Option<Cow<'de, str>>,
    pub(super) last_seen: Option<Cow<'de, str>>,
    pub(super) score: Option<i64>,
}

impl LineParser {
    fn new(load: &mut FeedLoad<'_>) -> Self {
        LineParser {
            config_values: load.config_values(),
            values: Default::default(),
            unknown_keys: Vec::new(),
        }
    }

    /// Starts the line's values from the config's.
    fn reset_values(&mut self) {
        for (values, config_values) in self.values.iter_mut().zip(&self.config_values) {
            values.clear();
            values.extend_from_slice(config_values);
        }
    }

    fn load_line(&mut self, load: &mut FeedLoad<'_>, line: u64, raw: &str) {
        let text = raw.trim();
        if text.is_empty() || text.starts_with(['#', ';']) {
            return;
        }
        load.count_data_line();

        self.reset_values();
        let reported_keys = self.unknown_keys.len();
        let parsed = match scan_line(text, load.intel, &mut self.values) {
            Ok(fields) => Ok(fields),
            Err(GaveUp) => {
                self.reset_values();
                parse_line(text, load.intel, &mut self.values, &mut self.unknown_keys)
            }
        };
        for key in &self.unknown_keys[reported_keys..] {
            load.warn(
                line,
                format_args!(
                    "unknown key `{key}` ignored; later lines with this key are not reported"
                ),
            );
        }
        let fields = match parsed {
            Ok(fields) => fields,
            Err(error) => {
                reject_invalid_json(load, line, raw, &error);
                return;
            }
        };

        let Some((indicator, last_seen, score)) = check_fields(load, line, &fields) else {
            return;
        };
        let profile = load.intel.profile_of(&mut self.values);
        let sighting = Sighting {
            last_seen,
            profile,
            feed: load.feed,
            score,
        };
        load.add_sighting(indicator, sighting);
    }
}

/// Validates the scalar fields of a parsed line, rejecting the line on the
/// first problem. Returns the indicator, `last_seen` and score.
fn check_fields(
    load: &mut FeedLoad<'_>,
    line: u64,
    fields: &LineFields<'_>,
) -> Option<(IpNet, i64, u8)> {
    let Some(indicator) = &fields.indicator else {
        load.reject(line, format_args!("missing key `indicator`"));
        return None;
    };
    let score = match fields.score {
        None => load.default_score(),
        Some(score) => match u8::try_from(score) {
            Ok(score) if score <= 100 => score,
            _ => {
                load.reject(
                    line,
                    format_args!("score {score} is out of range; expected 0 to 100"),
                );
                return None;
            }
        },
    };
    let last_seen = match &fields.last_seen {
        None => load.now,
        Some(text) => match parse_utc_seconds(text).map(Ok).unwrap_or_else(|| {
            text.parse::<Timestamp>()
                .map(|timestamp| timestamp.as_second())
        }) {
            Ok(seconds) => seconds,
            Err(error) => {
                load.reject(
                    line,
                    format_args!(
                        "invalid last_seen `{text}`: {error}; expected an RFC 3339 timestamp such as 2024-05-01T12:00:00Z"
                    ),
                );
                return None;
            }
        },
    };
    let indicator = load.parse_indicator(line, indicator)?;
    Some((indicator, last_seen, score))
}

/// Parses one line, interning attribute values into `values` as they come.
///
/// NOTE: values are interned before the line is checked, so a rejected line
/// can leave strings in the store that no indicator uses.
pub(super) fn parse_line<'de>(
    text: &'de str,
    intel: &mut Intel,
    values: &mut [Vec<Symbol>; 5],
    unknown_keys: &mut Vec<String>,
) -> Result<LineFields<'de>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = LineSeed {
        intel,
        values,
        unknown_keys,
    };
    let fields = seed.deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(fields)
}

/// Rejects line `line`, whose text `raw` contains JSON that `serde_json` could
/// not parse, naming the column of the error. The parsed text is `raw`
/// without surrounding white space, so the column counts the leading white
/// space back in.
pub fn reject_invalid_json(
    load: &mut FeedLoad<'_>,
    line: u64,
    raw: &str,
    error: &serde_json::Error,
) {
    let leading = raw.len() - raw.trim_start().len();
    let column = char_column(raw, leading + error.column());
    load.reject(
        Location::LineColumn { line, column },
        format_args!("invalid JSON object: {}", JsonMessage(error)),
    );
}

/// Converts a column that counts bytes from 1 into one that counts
/// characters from 1, so that it matches what editors show. `serde_json`
/// counts bytes, and gives 0 for an error before the first byte.
fn char_column(text: &str, byte_column: usize) -> u64 {
    let mut end = byte_column.min(text.len());
    // A column inside a multi-byte character names that character.
    while !text.is_char_boundary(end) {
        end += 1;
    }
    (text[..end].chars().count() as u64).max(1)
}

/// A `serde_json` error's message without the "at line 1 column N" that
/// `serde_json` appends, because the diagnostic shows the position itself.
struct JsonMessage<'a>(&'a serde_json::Error);

impl fmt::Display for JsonMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let error = self.0;
        let full = error.to_string();
        let suffix = format!(" at line {} column {}", error.line(), error.column());
        f.write_str(full.strip_suffix(&suffix).unwrap_or(&full))
    }
}

/// The keys of a line object.
#[derive(Clone, Copy)]
pub(super) enum Key {
    Indicator,
    LastSeen,
    Score,
    Attribute(Attribute),
}

impl Key {
    pub(super) fn from_name(name: &str) -> Option<Key> {
        match name {
            "indicator" => Some(Key::Indicator),
            "last_seen" => Some(Key::LastSeen),
            "score" => Some(Key::Score),
            _ => Attribute::ALL
                .into_iter()
                .find(|attribute| attribute.key() == name)
                .map(Key::Attribute),
        }
    }

    /// Bit of the key in the set of keys already seen on a line.
    pub(super) fn bit(self) -> u8 {
        let index = match self {
            Key::Indicator => 0,
            Key::LastSeen => 1,
            Key::Score => 2,
            Key::Attribute(attribute) => 3 + attribute as u8,
        };
        1 << index
    }
}

/// Deserializes a line object, borrowing strings from the line where they
/// have no escapes.
struct LineSeed<'a> {
    intel: &'a mut Intel,
    values: &'a mut [Vec<Symbol>; 5],
    unknown_keys: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for LineSeed<'_> {
    type Value = LineFields<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for LineSeed<'_> {
    type Value = LineFields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object with an `indicator` key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = LineFields::default();
        let mut seen_keys = 0u8;
        while let Some(Text(name)) = map.next_key::<Text<'de>>()? {
            let Some(key) = Key::from_name(&name) else {
                map.next_value::<IgnoredAny>()?;
                if !self.unknown_keys.iter().any(|known| *known == name) {
                    self.unknown_keys.push(name.into_owned());
                }
                continue;
            };
            if seen_keys & key.bit() != 0 {
                return Err(de::Error::custom(format_args!("duplicate key `{name}`")));
            }
            seen_keys |= key.bit();

            match key {
                Key::Indicator => fields.indicator = Some(map.next_value::<Text<'de>>()?.0),
                Key::LastSeen => {
                    fields.last_seen = map.next_value::<Option<Text<'de>>>()?.map(|text| text.0)
                }
                Key::Score => fields.score = map.next_value()?,
                Key::Attribute(attribute) => map.next_value_seed(ValuesSeed {
                    intel: &mut *self.intel,
                    attribute,
                    values: &mut self.values[attribute as usize],
                })?,
            }
        }
        Ok(fields)
    }
}

/// A JSON string, borrowed from the line unless it has escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(TextVisitor)
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Borrowed(value)))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Text(Cow::Owned(value.to_owned())))
    }
}

/// Interns the strings of an attribute's list (or `null`) into `values`.
struct ValuesSeed<'a> {
    intel: &'a mut Intel,
    attribute: Attribute,
    values: &'a mut Vec<Symbol>,
}

impl<'de> DeserializeSeed<'de> for ValuesSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for ValuesSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of strings")
    }

    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(()) = seq.next_element_seed(InternSeed {
            intel: &mut *self.intel,
            attribute: self.attribute,
            values: &mut *self.values,
        })? {}
        Ok(())
    }
}

/// Interns one string of an attribute's list.
struct InternSeed<'a> {
    intel: &'a mut Intel,
    attribute: Attribute,
    values: &'a mut Vec<Symbol>,
}

impl<'de> DeserializeSeed<'de> for InternSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for InternSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.values
            .push(intern_value(self.intel, self.attribute, value));
        Ok(())
    }
}
