//! State shared by the format parsers while one feed loads: the store, the
//! feed's settings, the counters and the diagnostics.

use std::fmt;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use jiff::Timestamp;

use super::address::{self, DefaultRoute, RangeLimit};
use super::diagnostic::{Diagnostic, Location, MAX_DIAGNOSTICS, Severity};
use super::{FeedError, FeedReport};
use crate::config::{FeedConfig, FeedFormat};
use crate::intel::{
    Attribute, FeedId, Intel, ProfileDraft, ProfileId, Sighting, Symbol, TableBuilder,
};

/// One feed load in progress, handed to the format's parser.
pub struct FeedLoad<'a> {
    pub intel: &'a mut Intel,
    config: &'a FeedConfig,
    pub feed: FeedId,
    /// The load time in Unix seconds: the `last_seen` of lines that give none.
    pub now: i64,
    default_route: DefaultRoute,
    range_limit: RangeLimit,
    /// The file diagnostics name, when it is not the feed's path: an event
    /// file of a MISP feed directory.
    diagnostic_path: Option<PathBuf>,
    report: FeedReport,
    records: TableBuilder,
    /// Kept apart from the capped diagnostics so that a failure can always
    /// show it.
    first_rejection: Option<Diagnostic>,
}

impl<'a> FeedLoad<'a> {
    pub fn new(
        config: &'a FeedConfig,
        intel: &'a mut Intel,
        now: Timestamp,
        format: FeedFormat,
    ) -> Self {
        let feed = intel.add_feed(&config.name);
        let default_route = if config.allow_default_route {
            DefaultRoute::Allow
        } else {
            DefaultRoute::Reject
        };
        let defaults = RangeLimit::default();
        let range_limit = RangeLimit {
            ipv4: config.max_range_ipv4.unwrap_or(defaults.ipv4),
            ipv6: config.max_range_ipv6.unwrap_or(defaults.ipv6),
        };
        FeedLoad {
            intel,
            config,
            feed,
            now: now.as_second(),
            default_route,
            range_limit,
            diagnostic_path: None,
            report: FeedReport::new(config, format),
            records: TableBuilder::default(),
            first_rejection: None,
        }
    }

    pub fn config(&self) -> &'a FeedConfig {
        self.config
    }

    /// Names `path` in later diagnostics in place of the feed's path.
    pub fn set_diagnostic_path(&mut self, path: &Path) {
        self.diagnostic_path = Some(path.to_owned());
    }

    /// Returns the score for lines that give none.
    pub fn default_score(&self) -> u8 {
        self.config.score.unwrap_or(Sighting::NO_SCORE)
    }

    /// Interns the attribute values that the feed's config gives every line,
    /// indexed like [`Attribute::ALL`].
    pub fn config_values(&mut self) -> [Vec<Symbol>; 5] {
        Attribute::ALL.map(|attribute| {
            config_strings(self.config, attribute)
                .iter()
                .map(|value| intern_value(self.intel, attribute, value))
                .collect()
        })
    }

    /// Finds or adds the profile of the feed's config alone, for formats
    /// whose lines carry no attributes.
    pub fn config_profile(&mut self) -> ProfileId {
        let mut draft = ProfileDraft::default();
        for (attribute, values) in Attribute::ALL.into_iter().zip(self.config_values()) {
            draft.extend(attribute, values);
        }
        self.intel.profile_id(draft)
    }

    /// Counts a line that contains data, as opposed to a comment or a blank.
    pub fn count_data_line(&mut self) {
        self.report.read += 1;
    }

    /// Parses an indicator, warning when it had to be normalised and
    /// rejecting the record when it is invalid.
    pub fn parse_indicator<'l>(
        &mut self,
        at: impl Into<Location<'l>>,
        text: &str,
    ) -> Option<IpNet> {
        match address::parse_indicator(text, self.default_route) {
            Ok((net, None)) => Some(net),
            Ok((net, Some(normalised))) => {
                self.report.normalised += 1;
                self.warn(at, format_args!("`{text}` {normalised}; loaded as {net}"));
                Some(net)
            }
            Err(error) => {
                self.reject(at, format_args!("rejected indicator `{text}`: {error}"));
                None
            }
        }
    }

    /// Checks an indicator without reporting anything, so that a record with
    /// several indicators can be rejected once, as a whole.
    pub fn is_valid_indicator(&self, text: &str) -> bool {
        address::parse_indicator(text, self.default_route).is_ok()
    }

    /// Parses a range `first-last` into the prefixes that cover it,
    /// rejecting the record when it is invalid or wider than the feed allows.
    pub fn parse_range<'l>(
        &mut self,
        at: impl Into<Location<'l>>,
        text: &str,
    ) -> Option<Vec<IpNet>> {
        match address::parse_range(text, self.default_route, self.range_limit) {
            Ok(prefixes) => Some(prefixes),
            Err(error) => {
                self.reject(at, format_args!("rejected range `{text}`: {error}"));
                None
            }
        }
    }

    /// Counts a record that is valid but carries no IP indicator, such as a
    /// domain name in a trail file or a file hash in a STIX bundle.
    pub fn skip(&mut self) {
        self.report.skipped += 1;
    }

    /// Adds one sighting of this feed. Identical sightings merge when the
    /// load finishes.
    pub fn add_sighting(&mut self, indicator: IpNet, sighting: Sighting) {
        self.records.push(indicator, sighting);
    }

    pub fn reject_too_long(&mut self, line: u64) {
        self.count_data_line();
        self.reject(
            line,
            format_args!(
                "line is longer than {} bytes and was skipped",
                super::lines::MAX_LINE_BYTES
            ),
        );
    }

    pub fn warn<'l>(&mut self, at: impl Into<Location<'l>>, message: fmt::Arguments<'_>) {
        self.push(at.into(), Severity::Warning, message);
    }

    /// Reports a record that does not load at all.
    pub fn reject<'l>(&mut self, at: impl Into<Location<'l>>, message: fmt::Arguments<'_>) {
        let at = at.into();
        self.report.rejected += 1;
        if self.first_rejection.is_none() {
            self.first_rejection = Some(self.diagnostic(at, Severity::Error, message));
        }
        self.push(at, Severity::Error, message);
    }

    /// Ends the load: fails it when nothing of a non-empty file loaded, or
    /// when a strict feed had a rejected line. Otherwise the feed's
    /// indicators replace what the store held for it.
    pub fn finish(self) -> Result<FeedReport, FeedError> {
        let mut report = self.report;
        let intel = &*self.intel;
        let (table, counts) = self
            .records
            .finish_with(|profile| intel.profile_lists(profile));
        report.indicators = counts.indicators;
        report.sightings = counts.sightings;
        report.merged = counts.merged;
        let install = |report: FeedReport| {
            self.intel.set_table(self.feed, table);
            Ok(report)
        };
        let Some(first) = self.first_rejection else {
            return install(report);
        };
        if report.rejected == report.read {
            return Err(FeedError::NothingLoaded {
                report: Box::new(report),
                first: Box::new(first),
            });
        }
        if self.config.strict {
            return Err(FeedError::Strict {
                report: Box::new(report),
                first: Box::new(first),
            });
        }
        install(report)
    }

    /// Ends the load of one part of a feed, for [`FeedLoad::absorb`].
    pub fn into_part(self) -> LoadedPart {
        LoadedPart {
            report: self.report,
            records: self.records,
            first_rejection: self.first_rejection,
        }
    }

    /// Makes room for about `profiles` more profiles and `records` more
    /// records, so that the arrays of a large part do not grow by doubling:
    /// every doubling copies the array into fresh pages, which the kernel
    /// must zero first. Room that stays unused is address space only.
    pub fn reserve_lines(&mut self, profiles: usize, records: usize) {
        self.intel.reserve_profiles(profiles);
        self.records.reserve(records, records / 4);
    }

    /// Makes room in the store for the profiles of `parts`, so that
    /// absorbing them copies each once. Their records need no room: the
    /// first part's have room for all, and move in without a copy.
    pub fn reserve_for<'p>(&mut self, parts: impl Iterator<Item = &'p Intel>) {
        let profiles = parts.map(Intel::profile_count).sum();
        self.intel.reserve_profiles(profiles);
    }

    /// Takes in a part of this feed that another store loaded: its
    /// profiles, its records and its counts, with its line numbers moved
    /// on by `lines_before`, the lines of the file before the part. A
    /// warning whose message equals one already kept is dropped: each part
    /// reports once what the whole file reports once (an unknown key), and
    /// the count of normalised lines stays exact either way.
    pub fn absorb(&mut self, fragment: &Intel, part: LoadedPart, lines_before: u64) {
        let profiles = self.intel.import_profiles(fragment);
        let feed = self.feed;
        let mut records = part.records;
        records.rewrite(|sighting| {
            sighting.profile = profiles[sighting.profile as usize];
            sighting.feed = feed;
        });
        self.records.append(&mut records);

        let report = part.report;
        self.report.read += report.read;
        self.report.rejected += report.rejected;
        self.report.skipped += report.skipped;
        self.report.normalised += report.normalised;
        self.report.diagnostics_omitted += report.diagnostics_omitted;
        for mut diagnostic in report.diagnostics {
            diagnostic.shift_lines(lines_before);
            let repeated = diagnostic.severity == Severity::Warning
                && self.report.diagnostics.iter().any(|kept| {
                    kept.severity == Severity::Warning && kept.message == diagnostic.message
                });
            if repeated {
                continue;
            }
            if self.report.diagnostics.len() >= MAX_DIAGNOSTICS {
                self.report.diagnostics_omitted += 1;
            } else {
                self.report.diagnostics.push(diagnostic);
            }
        }
        if self.first_rejection.is_none()
            && let Some(mut first) = part.first_rejection
        {
            first.shift_lines(lines_before);
            self.first_rejection = Some(first);
        }
    }

    /// Stores a diagnostic unless the cap is reached; the message is only
    /// formatted when it is stored.
    fn push(&mut self, at: Location<'_>, severity: Severity, message: fmt::Arguments<'_>) {
        if self.report.diagnostics.len() >= MAX_DIAGNOSTICS {
            self.report.diagnostics_omitted += 1;
            return;
        }
        let diagnostic = self.diagnostic(at, severity, message);
        self.report.diagnostics.push(diagnostic);
    }

    fn diagnostic(
        &self,
        at: Location<'_>,
        severity: Severity,
        message: fmt::Arguments<'_>,
    ) -> Diagnostic {
        let (line, column, object) = match at {
            Location::Line(line) => (line, None, None),
            Location::LineColumn { line, column } => (line, Some(column), None),
            Location::Object(id) => (0, None, Some(id.to_owned())),
        };
        Diagnostic {
            path: self
                .diagnostic_path
                .clone()
                .unwrap_or_else(|| self.report.path.clone()),
            line,
            column,
            object,
            severity,
            message: message.to_string(),
        }
    }
}

/// The result of loading one part of a feed, before it joins the others.
pub struct LoadedPart {
    report: FeedReport,
    records: TableBuilder,
    first_rejection: Option<Diagnostic>,
}

/// The attribute values of one record, the config's included, turned into a
/// profile id. Buffers are reused from record to record.
pub struct RecordAttributes {
    /// The config's values for each attribute, added to every record's.
    config_values: [Vec<Symbol>; 5],
    /// The current record's values for each attribute, config's included.
    pub values: [Vec<Symbol>; 5],
}

impl RecordAttributes {
    pub fn new(load: &mut FeedLoad<'_>) -> Self {
        RecordAttributes {
            config_values: load.config_values(),
            values: Default::default(),
        }
    }

    /// Starts a record with the config's values only.
    pub fn start(&mut self) {
        for (values, config_values) in self.values.iter_mut().zip(&self.config_values) {
            values.clear();
            values.extend_from_slice(config_values);
        }
    }

    /// Adds a value of the record, ignoring blank ones.
    pub fn push(&mut self, intel: &mut Intel, attribute: Attribute, value: &str) {
        let value = value.trim();
        if value.is_empty() {
            return;
        }
        let symbol = intern_value(intel, attribute, value);
        self.values[attribute as usize].push(symbol);
    }

    pub fn profile_id(&mut self, intel: &mut Intel) -> ProfileId {
        intel.profile_of(&mut self.values)
    }
}

/// Interns an attribute value. Country codes are folded to upper case, the
/// form ISO 3166-1 and rules use, so that `ru` in a feed matches `RU`.
pub fn intern_value(intel: &mut Intel, attribute: Attribute, value: &str) -> Symbol {
    if attribute.is_country() && value.bytes().any(|b| b.is_ascii_lowercase()) {
        return intel.intern(&value.to_ascii_uppercase());
    }
    intel.intern(value)
}

fn config_strings(config: &FeedConfig, attribute: Attribute) -> &[String] {
    match attribute {
        Attribute::AttackerNames => &config.attacker_names,
        Attribute::AttackerCountries => &config.attacker_countries,
        Attribute::TargetCountries => &config.target_countries,
        Attribute::TargetIndustries => &config.target_industries,
        Attribute::Datasets => &config.datasets,
    }
}
