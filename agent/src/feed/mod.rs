//! Feed loaders: read a feed file and add its indicators to the intel store.
//!
//! [`load_feed`] opens the file, picks the format (from the config, or by
//! [`detect`]) and hands it to that format's parser. A bad record (a line,
//! or an object of a JSON document) never stops a load: it is reported as a
//! [`Diagnostic`] and skipped. The feed as a whole fails only when the file
//! cannot be read, is not UTF-8 (line formats) or not JSON (document
//! formats), has records of which none loads, or is strict and had a
//! rejected record.
//!
//! Line formats stream: [`FeedFormat::List`] (one address, prefix or range a
//! line, as Spamhaus, FireHOL, ipsum and Maltrail publish them),
//! [`FeedFormat::Jsonl`] (one JSON object a line with attributes) and
//! [`FeedFormat::Csv`] (columns mapped by the config). Document formats are
//! read whole into memory and parsed once: [`FeedFormat::Cloudflare`],
//! [`FeedFormat::Stix2`] and [`FeedFormat::Misp`]. Files compressed with gzip
//! or zstd are decompressed as they are read, whatever their name.

pub mod address;
mod cloudflare;
mod csv;
mod detect;
mod diagnostic;
mod input;
mod jsonl;
mod jsonl_scan;
mod lines;
mod list;
mod load;
mod misp;
mod parallel;
mod stix2;
mod time;

use std::fmt;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::Value;

pub use self::csv::CsvColumns;
pub use self::detect::detect;
pub use self::diagnostic::{Diagnostic, Location, MAX_DIAGNOSTICS, Severity};
use self::input::{Input, read_document};
use self::lines::LineReader;
use self::load::FeedLoad;
use crate::config::{FeedConfig, FeedFormat};
use crate::intel::Intel;

/// Counters and diagnostics of one feed load.
///
/// Every record ends up rejected, skipped or loaded, and a loaded record adds
/// a sighting or merges with one. So `read == rejected + skipped + merged +
/// sightings` for records that give one indicator each; a range, or a STIX
/// pattern with several addresses, adds one sighting or merge per prefix.
#[derive(Clone, Debug)]
pub struct FeedReport {
    pub name: String,
    pub path: PathBuf,
    /// The format used, from the config or detected.
    pub format: FeedFormat,
    /// Records read: data lines of a line format (not comments or blank
    /// lines), or the objects of a document that can carry an indicator
    /// (STIX indicators and address objects, MISP attributes, Cloudflare
    /// event indicators).
    pub read: u64,
    /// Distinct indicators (addresses and prefixes) of this feed, after
    /// duplicate lines merged and prefixes were normalised.
    pub indicators: u64,
    /// Sightings added to the store. Greater than `indicators` when lines of
    /// a `jsonl` feed give one indicator several times with different data.
    pub sightings: u64,
    /// Records skipped because of an error.
    pub rejected: u64,
    /// Records that are valid but carry no IP indicator: domains and URLs
    /// of a `skip_non_ip` list, non-IP STIX patterns, MISP attributes and
    /// Cloudflare indicators of other types, and expired STIX indicators.
    pub skipped: u64,
    /// Lines loaded after their indicator was rewritten: host bits cleared
    /// or an IPv4-mapped address folded to IPv4. Each has a warning.
    pub normalised: u64,
    /// Lines whose sighting (indicator, attributes, `last_seen` and score) was
    /// identical to one this feed had already loaded, and merged with it.
    pub merged: u64,
    /// Warnings and errors by line, at most [`MAX_DIAGNOSTICS`].
    pub diagnostics: Vec<Diagnostic>,
    /// Diagnostics past the cap, counted but not kept.
    pub diagnostics_omitted: u64,
}

impl FeedReport {
    fn new(config: &FeedConfig, format: FeedFormat) -> Self {
        FeedReport {
            name: config.name.clone(),
            path: config.path.clone(),
            format,
            read: 0,
            indicators: 0,
            sightings: 0,
            rejected: 0,
            skipped: 0,
            normalised: 0,
            merged: 0,
            diagnostics: Vec::new(),
            diagnostics_omitted: 0,
        }
    }
}

impl fmt::Display for FeedReport {
    /// Formats one summary line; the diagnostics are shown separately.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "feed `{}` ({}, {}): {} records, {} indicators, {} sightings, {} rejected, {} skipped, {} normalised, {} merged",
            self.name,
            self.format,
            self.path.display(),
            self.read,
            self.indicators,
            self.sightings,
            self.rejected,
            self.skipped,
            self.normalised,
            self.merged
        )?;
        if self.diagnostics_omitted > 0 {
            write!(
                f,
                " ({} more diagnostics not kept)",
                self.diagnostics_omitted
            )?;
        }
        Ok(())
    }
}

/// Failures of a whole feed. Messages leave out the feed's name, which the
/// caller puts in front.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error("failed to open feed file {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to read feed file {} at line {line}: {source}", .path.display())]
    Read {
        path: PathBuf,
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: line is not valid UTF-8; feed files must be UTF-8 text", .path.display())]
    NotUtf8 {
        path: PathBuf,
        line: u64,
        #[source]
        source: std::str::Utf8Error,
    },
    #[error("{}: {message}", .path.display())]
    InvalidDocument { path: PathBuf, message: String },
    #[error("{} is not valid JSON: {source}", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{} is larger than {max} bytes after decompression", .path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("invalid feed config: {0}")]
    InvalidConfig(String),
    /// Every record was rejected, which means a broken file rather than
    /// an empty feed.
    #[error("{}; the first error: {first}", every_record_rejected(.report.read))]
    NothingLoaded {
        report: Box<FeedReport>,
        first: Box<Diagnostic>,
    },
    #[error(
        "the feed is strict and {} of {} records were rejected; the first error: {first}",
        .report.rejected,
        .report.read
    )]
    Strict {
        report: Box<FeedReport>,
        first: Box<Diagnostic>,
    },
}

/// Says that all `read` records were rejected, in words that fit one record.
fn every_record_rejected(read: u64) -> String {
    match read {
        1 => "its only record was rejected".to_owned(),
        read => format!("all {read} records were rejected"),
    }
}

impl FeedError {
    /// Returns the file the error is about, or `None` for an invalid feed
    /// config, because that error is about the config file.
    pub fn path(&self) -> Option<&Path> {
        match self {
            FeedError::Open { path, .. }
            | FeedError::Read { path, .. }
            | FeedError::NotUtf8 { path, .. }
            | FeedError::InvalidDocument { path, .. }
            | FeedError::Json { path, .. }
            | FeedError::TooLarge { path, .. } => Some(path),
            FeedError::NothingLoaded { report, .. } | FeedError::Strict { report, .. } => {
                Some(&report.path)
            }
            FeedError::InvalidConfig(_) => None,
        }
    }

    /// Returns the line, counted from 1, of an error about one line.
    pub fn line(&self) -> Option<u64> {
        let line = match self {
            FeedError::Read { line, .. } | FeedError::NotUtf8 { line, .. } => *line,
            FeedError::Json { source, .. } => source.line() as u64,
            _ => 0,
        };
        (line > 0).then_some(line)
    }

    /// Returns the diagnostics of the records read before the feed failed
    /// as a whole, or none when it failed before reading records.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            FeedError::NothingLoaded { report, .. } | FeedError::Strict { report, .. } => {
                &report.diagnostics
            }
            _ => &[],
        }
    }

    /// Moves the line an error names `lines` lines further into the file:
    /// for an error found in a part of the file that starts there.
    fn shift_lines(mut self, lines: u64) -> FeedError {
        match &mut self {
            FeedError::Read { line, .. } | FeedError::NotUtf8 { line, .. } => *line += lines,
            FeedError::NothingLoaded { first, .. } | FeedError::Strict { first, .. } => {
                first.shift_lines(lines)
            }
            _ => {}
        }
        self
    }
}

/// Loads the feed `config` describes into `intel`, registering the feed
/// under its name. `now` is the `last_seen` of indicators whose record gives
/// none.
///
/// The feed's indicators replace those `intel` held for it, and only when
/// the load succeeds: on an error, `intel` gains at most strings and
/// profiles that no indicator uses. Records identical to others of this
/// load count as merged.
pub fn load_feed(
    config: &FeedConfig,
    intel: &mut Intel,
    now: Timestamp,
) -> Result<FeedReport, FeedError> {
    let path = config.path.as_path();
    if config
        .format
        .is_none_or(|format| format == FeedFormat::Misp)
        && misp::is_feed_path(path)
    {
        let mut load = FeedLoad::new(config, intel, now, FeedFormat::Misp);
        misp::load_feed(path, &mut load)?;
        return load.finish();
    }
    let (format, document) = match config.format {
        Some(format) => (format, None),
        None => detect(config, || Input::open(path))?,
    };
    let mut input = Input::open(path)?;
    if let Input::Plain(reader) = &mut input {
        let size = reader
            .get_ref()
            .metadata()
            .map_or(0, |metadata| metadata.len());
        let start = reader.fill_buf().map_err(|source| FeedError::Read {
            path: path.to_owned(),
            line: 1,
            source,
        })?;
        if parallel::suits(format, size, start) {
            let parts = rayon::current_num_threads();
            return parallel::load(config, format, size, parts, intel, now);
        }
    }
    load_input(config, format, document, input, intel, now)
}

/// Parses a feed held in memory, as [`load_feed`] parses a file: the
/// entry point of the fuzz targets. The format is `config.format`, or
/// detected from `bytes`; `config.path` only names the feed in diagnostics.
/// A MISP feed directory cannot be given this way, but a MISP event can.
pub fn parse_bytes(
    config: &FeedConfig,
    bytes: &[u8],
    intel: &mut Intel,
    now: Timestamp,
) -> Result<FeedReport, FeedError> {
    let open = || {
        Input::new(bytes).map_err(|source| FeedError::Read {
            path: config.path.clone(),
            line: 0,
            source,
        })
    };
    let (format, document) = match config.format {
        Some(format) => (format, None),
        None => detect(config, open)?,
    };
    load_input(config, format, document, open()?, intel, now)
}

/// Loads `input` in `format`. `document` is the JSON that detection already
/// parsed, if any, so that a document is not parsed twice.
fn load_input<R: BufRead>(
    config: &FeedConfig,
    format: FeedFormat,
    document: Option<Value>,
    input: Input<R>,
    intel: &mut Intel,
    now: Timestamp,
) -> Result<FeedReport, FeedError> {
    let path = config.path.as_path();
    let mut load = FeedLoad::new(config, intel, now, format);
    match format {
        FeedFormat::List => list::load(&mut LineReader::new(input, path), &mut load)?,
        FeedFormat::Jsonl => jsonl::load(&mut LineReader::new(input, path), &mut load)?,
        FeedFormat::Csv => csv::load(input, &mut load)?,
        FeedFormat::Cloudflare | FeedFormat::Stix2 | FeedFormat::Misp => {
            let document = match document {
                Some(document) => document,
                None => parse_document(input, path)?,
            };
            match format {
                FeedFormat::Cloudflare => cloudflare::load(&document, &mut load)?,
                FeedFormat::Stix2 => stix2::load(&document, &mut load)?,
                _ => misp::load(&document, &mut load)?,
            }
        }
    }
    load.finish()
}

fn parse_document<R: BufRead>(input: Input<R>, path: &Path) -> Result<Value, FeedError> {
    let bytes = read_document(input, path)?;
    serde_json::from_slice(&bytes).map_err(|source| FeedError::Json {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod public_feed_tests;

#[cfg(test)]
mod format_tests;

#[cfg(test)]
mod parallel_tests;
