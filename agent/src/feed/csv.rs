//! The `csv` format: delimited rows whose columns the feed's config maps to
//! fields, as in abuse.ch's Feodo Tracker `ipblocklist.csv`:
//!
//! ```toml
//! [[feed]]
//! name = "feodo"
//! path = "ipblocklist.csv"
//! format = "csv"
//! [feed.columns]
//! indicator = "dst_ip"
//! attacker_names = "malware"
//! last_seen = "last_online"
//! ```
//!
//! Lines starting with `#` are comments, before the header row or anywhere
//! after it. Columns are named by the header, or numbered from 1 with
//! `header = false` (DShield's `block.txt` has no header row). Cells are
//! trimmed, and an empty cell or a lone `-` (DShield's mark for an unknown
//! value) counts as absent. Attribute cells may hold several values split on
//! `value_separator` (default `,`). `last_seen` accepts RFC 3339, or
//! `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DD` in UTC, and is the load time when
//! absent. `score` is an integer from 0 to 100. An indicator cell may hold a
//! range `first-last`, or `range_end` may name a column with the range's last
//! address.
//!
//! Rows stream from the file; a bad row is reported by line and skipped.

use std::io::Read;

use serde::Deserialize;

use super::FeedError;
use super::load::{FeedLoad, RecordAttributes};
use super::time::{TIME_FORMS, parse_time};
use crate::intel::{Attribute, Sighting};

/// Columns of a `csv` feed, by header name or by number from 1. Only
/// `indicator` is required.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CsvColumns {
    pub indicator: Option<String>,
    /// The last address of a range whose first address is in `indicator`.
    pub range_end: Option<String>,
    pub score: Option<String>,
    pub last_seen: Option<String>,
    pub attacker_names: Option<String>,
    pub attacker_countries: Option<String>,
    pub target_countries: Option<String>,
    pub target_industries: Option<String>,
    pub datasets: Option<String>,
}

impl CsvColumns {
    /// Whether no column is mapped, as in the config of a non-CSV feed.
    pub fn is_empty(&self) -> bool {
        *self == CsvColumns::default()
    }

    fn attribute(&self, attribute: Attribute) -> Option<&String> {
        match attribute {
            Attribute::AttackerNames => self.attacker_names.as_ref(),
            Attribute::AttackerCountries => self.attacker_countries.as_ref(),
            Attribute::TargetCountries => self.target_countries.as_ref(),
            Attribute::TargetIndustries => self.target_industries.as_ref(),
            Attribute::Datasets => self.datasets.as_ref(),
        }
    }
}

/// Column indices, counted from 0, of the mapped fields.
struct ColumnIndices {
    indicator: (usize, String),
    range_end: Option<usize>,
    score: Option<usize>,
    last_seen: Option<usize>,
    attributes: Vec<(Attribute, usize)>,
}

pub fn load<R: Read>(input: R, load: &mut FeedLoad<'_>) -> Result<(), FeedError> {
    let config = load.config();
    let delimiter = delimiter_byte(config.delimiter)?;
    let separator = config
        .value_separator
        .clone()
        .unwrap_or_else(|| ",".to_owned());
    let mut reader = ::csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(::csv::Trim::All)
        .from_reader(input);

    let mut record = ::csv::StringRecord::new();
    let header = if config.header.unwrap_or(true) {
        if !read_record(&mut reader, &mut record, load)? {
            return Ok(());
        }
        Some(record.clone())
    } else {
        None
    };
    let columns = resolve_columns(&config.columns, header.as_ref())?;

    let mut attributes = RecordAttributes::new(load);
    while read_record(&mut reader, &mut record, load)? {
        let line = record.position().map_or(0, |position| position.line());
        load.count_data_line();
        load_row(load, &mut attributes, &columns, &separator, line, &record);
    }
    Ok(())
}

/// Reads the next record; `false` at the end. A row that is not UTF-8 is
/// rejected and the next one read, while a read error fails the feed.
fn read_record<R: Read>(
    reader: &mut ::csv::Reader<R>,
    record: &mut ::csv::StringRecord,
    load: &mut FeedLoad<'_>,
) -> Result<bool, FeedError> {
    loop {
        match reader.read_record(record) {
            // The reader turns a comment on a last line without a line end
            // (abuse.ch's `# END 28 entries`) into a record of one empty
            // field, so blank records are skipped like blank lines.
            Ok(true) if record.iter().all(str::is_empty) => continue,
            Ok(more) => return Ok(more),
            Err(error) => {
                let line = error.position().map_or(0, |position| position.line());
                if !matches!(error.kind(), ::csv::ErrorKind::Io(_)) {
                    load.count_data_line();
                    load.reject(line, format_args!("invalid row: {error}"));
                    continue;
                }
                let ::csv::ErrorKind::Io(source) = error.into_kind() else {
                    unreachable!("checked to be an I/O error above");
                };
                return Err(FeedError::Read {
                    path: load.config().path.clone(),
                    line,
                    source,
                });
            }
        }
    }
}

fn load_row(
    load: &mut FeedLoad<'_>,
    attributes: &mut RecordAttributes,
    columns: &ColumnIndices,
    separator: &str,
    line: u64,
    record: &::csv::StringRecord,
) {
    let (indicator_index, indicator_name) = &columns.indicator;
    let Some(indicator) = cell(record, Some(*indicator_index)) else {
        load.reject(
            line,
            format_args!("missing indicator in column `{indicator_name}`"),
        );
        return;
    };
    let score = match cell(record, columns.score) {
        None => load.default_score(),
        Some(text) => match text.parse::<u8>() {
            Ok(score) if score <= 100 => score,
            _ => {
                load.reject(
                    line,
                    format_args!("invalid score `{text}`; expected an integer from 0 to 100"),
                );
                return;
            }
        },
    };
    let last_seen = match cell(record, columns.last_seen) {
        None => load.now,
        Some(text) => match parse_time(text) {
            Some(seconds) => seconds,
            None => {
                load.reject(
                    line,
                    format_args!("invalid last_seen `{text}`; expected {TIME_FORMS}"),
                );
                return;
            }
        },
    };
    let prefixes = match cell(record, columns.range_end) {
        Some(last) => load.parse_range(line, &format!("{indicator}-{last}")),
        None if indicator.contains('-') => load.parse_range(line, indicator),
        None => load.parse_indicator(line, indicator).map(|net| vec![net]),
    };
    let Some(prefixes) = prefixes else {
        return;
    };

    attributes.start();
    for &(attribute, index) in &columns.attributes {
        let Some(text) = cell(record, Some(index)) else {
            continue;
        };
        if separator.is_empty() {
            attributes.push(load.intel, attribute, text);
            continue;
        }
        for value in text.split(separator) {
            attributes.push(load.intel, attribute, value);
        }
    }
    let sighting = Sighting {
        last_seen,
        profile: attributes.profile_id(load.intel),
        feed: load.feed,
        score,
    };
    for prefix in prefixes {
        load.add_sighting(prefix, sighting);
    }
}

/// A cell's text, or `None` when the row is too short or the cell is empty
/// or `-`.
fn cell(record: &::csv::StringRecord, index: Option<usize>) -> Option<&str> {
    let text = record.get(index?)?;
    (!text.is_empty() && text != "-").then_some(text)
}

fn delimiter_byte(delimiter: Option<char>) -> Result<u8, FeedError> {
    let delimiter = delimiter.unwrap_or(',');
    match u8::try_from(delimiter) {
        Ok(byte) if delimiter.is_ascii() && byte != b'"' && byte != b'#' => Ok(byte),
        _ => Err(FeedError::InvalidConfig(format!(
            "invalid delimiter {delimiter:?}: expected one ASCII character other than `\"` and `#`"
        ))),
    }
}

fn resolve_columns(
    columns: &CsvColumns,
    header: Option<&::csv::StringRecord>,
) -> Result<ColumnIndices, FeedError> {
    let Some(indicator) = &columns.indicator else {
        return Err(FeedError::InvalidConfig(
            "a csv feed needs `columns.indicator`, the column of the address or prefix".to_owned(),
        ));
    };
    let find = |name: &String| find_column(name, header);
    let mut attributes = Vec::new();
    for attribute in Attribute::ALL {
        if let Some(name) = columns.attribute(attribute) {
            attributes.push((attribute, find(name)?));
        }
    }
    Ok(ColumnIndices {
        indicator: (find(indicator)?, indicator.clone()),
        range_end: columns.range_end.as_ref().map(find).transpose()?,
        score: columns.score.as_ref().map(find).transpose()?,
        last_seen: columns.last_seen.as_ref().map(find).transpose()?,
        attributes,
    })
}

/// Finds a column by header name (exact, then ignoring ASCII case) or by
/// number from 1.
fn find_column(name: &str, header: Option<&::csv::StringRecord>) -> Result<usize, FeedError> {
    if let Some(header) = header {
        let names = || header.iter();
        let found = names()
            .position(|cell| cell == name)
            .or_else(|| names().position(|cell| cell.eq_ignore_ascii_case(name)));
        if let Some(index) = found {
            return Ok(index);
        }
    }
    match name.parse::<usize>() {
        Ok(number) if number >= 1 => Ok(number - 1),
        _ => Err(FeedError::InvalidConfig(match header {
            Some(header) => format!(
                "column `{name}` not found in the header row; its columns are: {}",
                header.iter().collect::<Vec<_>>().join(", ")
            ),
            None => format!(
                "column `{name}` must be a number from 1, because the feed has `header = false`"
            ),
        })),
    }
}
