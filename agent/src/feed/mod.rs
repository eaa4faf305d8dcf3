//! Feed loaders: read a feed file and add its indicators to the intel store.
//!
//! [`load_feed`] opens the file, picks the format (from the config, or from
//! the first data line) and hands the lines to that format's parser. A bad
//! line never stops a load: it is reported as a [`Diagnostic`] and skipped.
//! The feed as a whole fails only when the file cannot be read, is not UTF-8,
//! has data lines of which none loads, or is strict and had a rejected line.
//!
//! Formats: [`FeedFormat::List`] (one address or prefix a line, as Spamhaus
//! and FireHOL publish them) and [`FeedFormat::Jsonl`] (one JSON object a
//! line with attributes). A new line-based format (CSV) adds a module with
//! a `load` function like `list::load` and an arm in `load_lines`. A format
//! that spans the whole file (STIX bundles, MISP events, Cloudflare JSON)
//! would instead take the reader itself. Compressed files (gzip, zstd) would
//! wrap the file in a decoder in `LineReader::open`.

pub mod address;
mod diagnostic;
mod jsonl;
mod lines;
mod list;
mod load;

use std::fmt;
use std::io::BufRead;
use std::path::PathBuf;

use jiff::Timestamp;

pub use self::diagnostic::{Diagnostic, MAX_DIAGNOSTICS, Severity};
use self::lines::{LineReader, LineText};
use self::load::FeedLoad;
use crate::config::{FeedConfig, FeedFormat};
use crate::intel::Intel;

/// Counters and diagnostics of one feed load.
///
/// Every data line ends up in exactly one of three counters:
/// `read == rejected + merged + sightings`.
#[derive(Clone, Debug)]
pub struct FeedReport {
    pub name: String,
    pub path: PathBuf,
    /// The format used, from the config or detected.
    pub format: FeedFormat,
    /// Data lines read: lines holding an indicator or an object, not
    /// comments or blank lines.
    pub read: u64,
    /// Distinct indicators (addresses and prefixes) of this feed, after
    /// duplicate lines merged and prefixes were normalised.
    pub indicators: u64,
    /// Sightings added to the store. Greater than `indicators` when lines of
    /// a `jsonl` feed give one indicator several times with different data.
    pub sightings: u64,
    /// Data lines skipped because of an error.
    pub rejected: u64,
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
            "feed `{}` ({}, {}): {} data lines, {} indicators, {} sightings, {} rejected, {} normalised, {} merged",
            self.name,
            self.format,
            self.path.display(),
            self.read,
            self.indicators,
            self.sightings,
            self.rejected,
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
    /// Every data line was rejected, which means a broken file rather than
    /// an empty feed.
    #[error("all {} data lines were rejected; the first error: {first}", .report.read)]
    NothingLoaded {
        report: Box<FeedReport>,
        first: Box<Diagnostic>,
    },
    #[error(
        "the feed is strict and {} of {} data lines were rejected; the first error: {first}",
        .report.rejected,
        .report.read
    )]
    Strict {
        report: Box<FeedReport>,
        first: Box<Diagnostic>,
    },
}

/// Loads the feed `config` describes into `intel`, registering the feed
/// under its name. `now` is the `last_seen` of indicators whose line gives none.
///
/// On an error, `intel` may already hold some of the feed's sightings, so a
/// reload should load into a fresh store and keep the old one until every
/// feed has loaded. The counters assume this feed's name had no sightings in
/// `intel` before: lines identical to earlier ones count as merged.
pub fn load_feed(
    config: &FeedConfig,
    intel: &mut Intel,
    now: Timestamp,
) -> Result<FeedReport, FeedError> {
    let mut lines = LineReader::open(&config.path)?;
    let format = match config.format {
        Some(format) => format,
        None => {
            let format = detect_format(&mut lines)?;
            lines.rewind()?;
            format
        }
    };
    let mut load = FeedLoad::new(config, intel, now, format);
    load_lines(format, &mut lines, &mut load)?;
    load.finish()
}

fn load_lines<R: BufRead>(
    format: FeedFormat,
    lines: &mut LineReader<R>,
    load: &mut FeedLoad<'_>,
) -> Result<(), FeedError> {
    match format {
        FeedFormat::List => list::load(lines, load),
        FeedFormat::Jsonl => jsonl::load(lines, load),
    }
}

/// Picks `jsonl` when the first line that is neither blank nor a comment
/// starts with `{`, and `list` otherwise, including for a file with no data.
fn detect_format<R: BufRead>(lines: &mut LineReader<R>) -> Result<FeedFormat, FeedError> {
    while let Some(line) = lines.next_line()? {
        let LineText::Text(text) = line.text else {
            // Too long for any list line, so only JSON is plausible.
            return Ok(FeedFormat::Jsonl);
        };
        let text = text.trim_start();
        if text.is_empty() || text.starts_with(['#', ';']) {
            continue;
        }
        return Ok(if text.starts_with('{') {
            FeedFormat::Jsonl
        } else {
            FeedFormat::List
        });
    }
    Ok(FeedFormat::List)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod public_feed_tests;
