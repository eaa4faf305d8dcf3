//! State shared by the format parsers while one feed loads: the store, the
//! feed's settings, the counters and the diagnostics.

use std::fmt;

use ipnet::IpNet;
use jiff::Timestamp;

use super::address::{self, DefaultRoute};
use super::diagnostic::{Diagnostic, MAX_DIAGNOSTICS, Severity};
use super::{FeedError, FeedReport};
use crate::config::{FeedConfig, FeedFormat};
use crate::intel::{Attribute, FeedId, Intel, ProfileDraft, ProfileId, Sighting, Symbol};

/// One feed load in progress, handed to the format's parser.
pub struct FeedLoad<'a> {
    pub intel: &'a mut Intel,
    config: &'a FeedConfig,
    pub feed: FeedId,
    /// The load time in Unix seconds: the `last_seen` of lines that give none.
    pub now: i64,
    default_route: DefaultRoute,
    report: FeedReport,
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
        FeedLoad {
            intel,
            config,
            feed,
            now: now.as_second(),
            default_route,
            report: FeedReport::new(config, format),
            first_rejection: None,
        }
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
    /// rejecting the line when it is invalid.
    pub fn parse_indicator(&mut self, line: u64, text: &str) -> Option<IpNet> {
        match address::parse_indicator(text, self.default_route) {
            Ok((net, None)) => Some(net),
            Ok((net, Some(normalised))) => {
                self.report.normalised += 1;
                self.warn(line, format_args!("`{text}` {normalised}; loaded as {net}"));
                Some(net)
            }
            Err(error) => {
                self.reject(line, format_args!("rejected indicator `{text}`: {error}"));
                None
            }
        }
    }

    /// Adds one sighting of this feed, merging it with an identical one
    /// loaded before.
    pub fn add_sighting(&mut self, indicator: IpNet, sighting: Sighting) {
        let (identical, of_this_feed) = match self.intel.sightings(&indicator) {
            Some(sightings) => (
                sightings.contains(&sighting),
                sightings.iter().any(|known| known.feed == self.feed),
            ),
            None => (false, false),
        };
        if identical {
            self.report.merged += 1;
            return;
        }
        if !of_this_feed {
            self.report.indicators += 1;
        }
        self.report.sightings += 1;
        self.intel.add_sighting(indicator, sighting);
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

    pub fn warn(&mut self, line: u64, message: fmt::Arguments<'_>) {
        self.push(line, Severity::Warning, message);
    }

    /// Reports a line that does not load at all.
    pub fn reject(&mut self, line: u64, message: fmt::Arguments<'_>) {
        self.report.rejected += 1;
        if self.first_rejection.is_none() {
            self.first_rejection = Some(self.diagnostic(line, Severity::Error, message));
        }
        self.push(line, Severity::Error, message);
    }

    /// Ends the load: fails it when nothing of a non-empty file loaded, or
    /// when a strict feed had a rejected line.
    pub fn finish(self) -> Result<FeedReport, FeedError> {
        let report = self.report;
        let Some(first) = self.first_rejection else {
            return Ok(report);
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
        Ok(report)
    }

    /// Stores a diagnostic unless the cap is reached; the message is only
    /// formatted when it is stored.
    fn push(&mut self, line: u64, severity: Severity, message: fmt::Arguments<'_>) {
        if self.report.diagnostics.len() >= MAX_DIAGNOSTICS {
            self.report.diagnostics_omitted += 1;
            return;
        }
        let diagnostic = self.diagnostic(line, severity, message);
        self.report.diagnostics.push(diagnostic);
    }

    fn diagnostic(&self, line: u64, severity: Severity, message: fmt::Arguments<'_>) -> Diagnostic {
        Diagnostic {
            path: self.report.path.clone(),
            line,
            severity,
            message: message.to_string(),
        }
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
