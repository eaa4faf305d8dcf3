//! Loads of small feed files written for each case.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use jiff::Timestamp;
use tempfile::TempDir;

use super::*;
use crate::intel::Attribute;

const NOW: &str = "2026-01-01T00:00:00Z";

pub(super) struct Fixture {
    _dir: TempDir,
    pub(super) config: FeedConfig,
    pub(super) intel: Intel,
}

impl Fixture {
    /// Writes `content` to the file of a feed named "test", with every
    /// config option at its default.
    pub(super) fn new(content: &[u8]) -> Self {
        Fixture::named("feed.txt", content)
    }

    /// Writes `content` to `file_name` in a new directory, as the file of a
    /// feed named "test".
    pub(super) fn named(file_name: &str, content: &[u8]) -> Self {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join(file_name);
        std::fs::write(&path, content).unwrap();
        Fixture {
            _dir: dir,
            config: feed_config("test", path),
            intel: Intel::new(),
        }
    }

    pub(super) fn load(&mut self) -> Result<FeedReport, FeedError> {
        load_feed(&self.config, &mut self.intel, now())
    }

    /// Collects the values of `attribute` in every sighting of `indicator`,
    /// as sorted text.
    pub(super) fn values(&self, indicator: &str, attribute: Attribute) -> Vec<Vec<String>> {
        let sightings = self.intel.sightings(&net(indicator)).unwrap_or_default();
        sightings
            .iter()
            .map(|sighting| {
                let profile = self.intel.profile(sighting.profile);
                let values = profile.values(attribute).iter();
                let mut values: Vec<String> = values
                    .map(|symbol| self.intel.resolve(*symbol).to_owned())
                    .collect();
                values.sort();
                values
            })
            .collect()
    }
}

pub(super) fn feed_config(name: &str, path: PathBuf) -> FeedConfig {
    FeedConfig {
        name: name.to_owned(),
        path,
        ..FeedConfig::default()
    }
}

pub(super) fn now() -> Timestamp {
    NOW.parse().unwrap()
}

pub(super) fn net(text: &str) -> IpNet {
    text.parse().unwrap()
}

pub(super) fn messages(report: &FeedReport) -> Vec<(u64, Severity, &str)> {
    let diagnostics = report.diagnostics.iter();
    diagnostics
        .map(|d| (d.line, d.severity, d.message.as_str()))
        .collect()
}

fn load_ok(content: &str) -> (Fixture, FeedReport) {
    let mut fixture = Fixture::new(content.as_bytes());
    let report = fixture.load().unwrap();
    (fixture, report)
}

#[test]
fn list_loads_with_config_attributes() {
    let mut fixture = Fixture::new(b"192.0.2.1\n198.51.100.0/24\n");
    fixture.config.datasets = vec!["drop".to_owned()];
    fixture.config.attacker_names = vec!["APT1".to_owned(), "APT1".to_owned()];
    fixture.config.score = Some(70);
    let report = fixture.load().unwrap();

    assert_eq!(report.format, FeedFormat::List);
    assert_eq!(report.read, 2);
    assert_eq!(report.indicators, 2);
    assert_eq!(report.sightings, 2);
    let sightings = fixture.intel.sightings(&net("192.0.2.1/32")).unwrap();
    assert_eq!(sightings.len(), 1);
    assert_eq!(sightings[0].score(), Some(70));
    assert_eq!(sightings[0].last_seen(), Some(now()));
    assert_eq!(fixture.intel.feed(sightings[0].feed).name, "test");
    assert_eq!(
        fixture.values("192.0.2.1/32", Attribute::Datasets),
        [["drop"]]
    );
    assert_eq!(
        fixture.values("192.0.2.1/32", Attribute::AttackerNames),
        [["APT1"]]
    );
    assert_eq!(
        fixture.values("198.51.100.0/24", Attribute::Datasets),
        [["drop"]]
    );
}

#[test]
fn list_without_score_has_none() {
    let (fixture, _) = load_ok("192.0.2.1\n");
    let sightings = fixture.intel.sightings(&net("192.0.2.1/32")).unwrap();
    assert_eq!(sightings[0].score(), None);
}

#[test]
fn overlapping_prefixes_keep_own_attributes() {
    let (fixture, report) = load_ok(concat!(
        r#"{"indicator": "203.0.113.0/24", "attacker_names": ["APT1"], "datasets": ["c2"]}"#,
        "\n",
        r#"{"indicator": "203.0.113.128/25", "attacker_names": ["APT28"], "datasets": ["scanner"]}"#,
        "\n",
    ));
    assert_eq!(report.indicators, 2);
    assert_eq!(report.rejected, 0);

    let address: IpAddr = "203.0.113.200".parse().unwrap();
    let covering = fixture.intel.sightings_covering(address);
    let mut found: Vec<(IpNet, Vec<&str>)> = covering
        .iter()
        .map(|(prefix, sighting)| {
            let profile = fixture.intel.profile(sighting.profile);
            let names = profile.values(Attribute::AttackerNames).iter();
            (*prefix, names.map(|s| fixture.intel.resolve(*s)).collect())
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (net("203.0.113.0/24"), vec!["APT1"]),
            (net("203.0.113.128/25"), vec!["APT28"]),
        ]
    );
}

#[test]
fn prefix_cases_report_by_line() {
    let (fixture, report) = load_ok("192.0.2.77/24\n192.0.2.0/33\n0.0.0.0/0\n192.0.2.10/\n");
    assert_eq!(report.read, 4);
    assert_eq!(report.indicators, 1);
    assert_eq!(report.normalised, 1);
    assert_eq!(report.rejected, 3);
    assert!(fixture.intel.sightings(&net("192.0.2.0/24")).is_some());
    assert_eq!(
        messages(&report),
        [
            (
                1,
                Severity::Warning,
                "`192.0.2.77/24` has host bits set; loaded as 192.0.2.0/24"
            ),
            (
                2,
                Severity::Error,
                "rejected indicator `192.0.2.0/33`: prefix length /33 is longer than /32, the maximum for IPv4"
            ),
            (
                3,
                Severity::Error,
                "rejected indicator `0.0.0.0/0`: 0.0.0.0/0 covers every IPv4 address; set `allow_default_route = true` in the feed's config to load it"
            ),
            (
                4,
                Severity::Error,
                "rejected indicator `192.0.2.10/`: missing prefix length after `/`"
            ),
        ]
    );
}

#[test]
fn host_bits_warning_display() {
    let (fixture, report) = load_ok("192.0.2.77/24\n");
    let path = fixture.config.path.display();
    assert_eq!(
        report.diagnostics[0].to_string(),
        format!("{path}:1: warning: `192.0.2.77/24` has host bits set; loaded as 192.0.2.0/24")
    );
}

#[test]
fn default_route_loads_when_allowed() {
    let mut fixture = Fixture::new(b"0.0.0.0/0\n::/0\n");
    fixture.config.allow_default_route = true;
    let report = fixture.load().unwrap();
    assert_eq!(report.indicators, 2);
    assert_eq!(report.rejected, 0);
    assert!(fixture.intel.sightings(&net("0.0.0.0/0")).is_some());
}

#[test]
fn spamhaus_trailing_comment_ignored() {
    let (fixture, report) = load_ok("; Spamhaus DROP List\n198.51.100.0/24 ; SBL000001\n");
    assert_eq!(report.read, 1);
    assert_eq!(report.indicators, 1);
    assert!(report.diagnostics.is_empty());
    assert!(fixture.intel.sightings(&net("198.51.100.0/24")).is_some());
}

#[test]
fn bad_addresses_skipped_not_fatal() {
    let (fixture, report) = load_ok("203.0.113.5\n942.0.2.1\n0.0.0.0\n198.51.100.7\n");
    assert_eq!(report.read, 4);
    assert_eq!(report.indicators, 2);
    assert_eq!(report.rejected, 2);
    assert!(fixture.intel.sightings(&net("203.0.113.5/32")).is_some());
    assert!(fixture.intel.sightings(&net("198.51.100.7/32")).is_some());
    assert_eq!(
        messages(&report),
        [
            (
                2,
                Severity::Error,
                "rejected indicator `942.0.2.1`: octet 942 is greater than 255"
            ),
            (
                3,
                Severity::Error,
                "rejected indicator `0.0.0.0`: 0.0.0.0 is the unspecified address, which names no host"
            ),
        ]
    );
}

#[test]
fn crlf_bom_and_trailing_spaces_load_as_clean() {
    let clean = "# header\n192.0.2.1\n198.51.100.0/24 ; note\n2001:db8::/32\n";
    let dirty =
        "\u{FEFF}# header\r\n192.0.2.1  \r\n198.51.100.0/24\t; note \r\n  2001:db8::/32 \t\r\n";
    let (clean_fixture, clean_report) = load_ok(clean);
    let (dirty_fixture, dirty_report) = load_ok(dirty);

    assert_eq!(dirty_report.read, clean_report.read);
    assert_eq!(dirty_report.indicators, 3);
    assert!(dirty_report.diagnostics.is_empty());
    let mut clean_indicators: Vec<_> = clean_fixture.intel.indicators().map(|(n, _)| n).collect();
    let mut dirty_indicators: Vec<_> = dirty_fixture.intel.indicators().map(|(n, _)| n).collect();
    clean_indicators.sort();
    dirty_indicators.sort();
    assert_eq!(dirty_indicators, clean_indicators);
}

#[test]
fn bom_before_json_still_detected() {
    let (_, report) = load_ok("\u{FEFF}{\"indicator\": \"192.0.2.1\"}\r\n");
    assert_eq!(report.format, FeedFormat::Jsonl);
    assert_eq!(report.indicators, 1);
}

#[test]
fn leading_zero_octet_rejected() {
    let (fixture, report) = load_ok("010.1.2.3\n10.1.2.3\n");
    assert_eq!(report.rejected, 1);
    assert_eq!(report.indicators, 1);
    assert!(fixture.intel.sightings(&net("10.1.2.3/32")).is_some());
    assert_eq!(
        messages(&report),
        [(
            1,
            Severity::Error,
            "rejected indicator `010.1.2.3`: octet `010` has a leading zero, which some parsers read as octal; write it without the zero"
        )]
    );
}

#[test]
fn ipv4_mapped_folds_to_ipv4() {
    let (fixture, report) = load_ok("::ffff:192.0.2.1\n192.0.2.1\n");
    assert_eq!(report.read, 2);
    assert_eq!(report.normalised, 1);
    assert_eq!(report.indicators, 1);
    assert_eq!(report.merged, 1);
    assert!(fixture.intel.sightings(&net("192.0.2.1/32")).is_some());
    assert!(
        fixture
            .intel
            .sightings(&net("::ffff:192.0.2.1/128"))
            .is_none()
    );
    assert_eq!(
        messages(&report),
        [(
            1,
            Severity::Warning,
            "`::ffff:192.0.2.1` is an IPv4-mapped IPv6 address; loaded as 192.0.2.1/32"
        )]
    );
}

#[test]
fn duplicate_lines_merge() {
    let (fixture, report) = load_ok("192.0.2.1\n192.0.2.1/32\n192.0.2.1\n");
    assert_eq!(report.read, 3);
    assert_eq!(report.indicators, 1);
    assert_eq!(report.sightings, 1);
    assert_eq!(report.merged, 2);
    assert_eq!(
        fixture.intel.sightings(&net("192.0.2.1/32")).unwrap().len(),
        1
    );
}

#[test]
fn text_after_indicator_rejected() {
    let (_, report) = load_ok("192.0.2.1 192.0.2.2\n192.0.2.3\n");
    assert_eq!(report.rejected, 1);
    assert_eq!(
        messages(&report),
        [(
            1,
            Severity::Error,
            "unexpected text `192.0.2.2` after indicator `192.0.2.1`; a trailing comment must start with `#` or `;`"
        )]
    );
}

#[test]
fn strict_feed_fails_on_rejection() {
    let mut fixture = Fixture::new(b"192.0.2.1\n942.0.2.1\n192.0.2.300\n");
    fixture.config.strict = true;
    let error = fixture.load().unwrap_err();
    let FeedError::Strict { report, first } = &error else {
        panic!("expected a strict failure, got {error}");
    };
    assert_eq!(report.rejected, 2);
    assert_eq!(first.line, 2);
    let path = fixture.config.path.display();
    assert_eq!(
        error.to_string(),
        format!(
            "the feed is strict and 2 of 3 records were rejected; the first error: {path}:2: error: rejected indicator `942.0.2.1`: octet 942 is greater than 255"
        )
    );
}

#[test]
fn strict_feed_allows_warnings() {
    let mut fixture = Fixture::new(b"192.0.2.77/24\n");
    fixture.config.strict = true;
    let report = fixture.load().unwrap();
    assert_eq!(report.normalised, 1);
}

#[test]
fn every_line_bad_fails_feed() {
    let mut fixture = Fixture::new(b"# header\nnot an address\n942.0.2.1\n");
    let error = fixture.load().unwrap_err();
    let FeedError::NothingLoaded { report, first } = &error else {
        panic!("expected a failure, got {error}");
    };
    assert_eq!(report.read, 2);
    assert_eq!(report.rejected, 2);
    assert_eq!(first.line, 2);
    assert!(
        error
            .to_string()
            .starts_with("all 2 records were rejected; the first error: ")
    );
}

#[test]
fn empty_feed_loads_nothing() {
    for content in ["", "# only a header\n#\n\n", "; EOF\n"] {
        let (fixture, report) = load_ok(content);
        assert_eq!(report.read, 0, "{content:?}");
        assert_eq!(report.indicators, 0, "{content:?}");
        assert_eq!(report.format, FeedFormat::List, "{content:?}");
        assert_eq!(fixture.intel.indicator_count(), 0, "{content:?}");
        assert_eq!(fixture.intel.feeds().len(), 1, "{content:?}");
    }
}

#[test]
fn diagnostics_are_capped() {
    let mut content = "bad\n".repeat(MAX_DIAGNOSTICS + 500);
    content.push_str("192.0.2.1\n");
    let (_, report) = load_ok(&content);
    assert_eq!(report.rejected, MAX_DIAGNOSTICS as u64 + 500);
    assert_eq!(report.indicators, 1);
    assert_eq!(report.diagnostics.len(), MAX_DIAGNOSTICS);
    assert_eq!(report.diagnostics_omitted, 500);
    assert!(
        report
            .to_string()
            .ends_with("(500 more diagnostics not kept)")
    );
}

#[test]
fn first_error_survives_cap() {
    let mut content = "192.0.2.77/24\n".repeat(MAX_DIAGNOSTICS + 1);
    content.push_str("bad\n");
    let mut fixture = Fixture::new(content.as_bytes());
    fixture.config.strict = true;
    let error = fixture.load().unwrap_err();
    let FeedError::Strict { first, .. } = error else {
        panic!("expected a strict failure, got {error}");
    };
    assert_eq!(first.line, MAX_DIAGNOSTICS as u64 + 2);
}

#[test]
fn invalid_utf8_fails_feed() {
    let mut fixture = Fixture::new(b"192.0.2.1\n# caf\xE9\n");
    let error = fixture.load().unwrap_err();
    assert!(
        matches!(error, FeedError::NotUtf8 { line: 2, .. }),
        "{error}"
    );
}

#[test]
fn missing_file_fails_with_path() {
    let mut fixture = Fixture::new(b"");
    fixture.config.path = Path::new("/nonexistent/feed.txt").to_owned();
    let error = fixture.load().unwrap_err();
    assert!(matches!(error, FeedError::Open { .. }), "{error}");
    assert!(
        error
            .to_string()
            .starts_with("failed to open feed file /nonexistent/feed.txt: ")
    );
    assert!(std::error::Error::source(&error).is_some());
}

#[test]
fn configured_format_overrides_detection() {
    let mut fixture = Fixture::new(b"{\"indicator\": \"192.0.2.1\"}\n");
    fixture.config.format = Some(FeedFormat::List);
    let error = fixture.load().unwrap_err();
    assert!(matches!(error, FeedError::NothingLoaded { .. }), "{error}");
}

#[test]
fn jsonl_detected_after_comments() {
    let (_, report) = load_ok("# exported\n\n{\"indicator\": \"192.0.2.1\"}\n");
    assert_eq!(report.format, FeedFormat::Jsonl);
    assert_eq!(report.read, 1);
    assert_eq!(report.indicators, 1);
}

#[test]
fn jsonl_line_fields_and_config_merge() {
    let mut fixture = Fixture::new(
        concat!(
            r#"{"indicator": "198.51.100.7", "attacker_names": ["APT28", "Fancy Bear"], "attacker_countries": ["RU"], "#,
            r#""target_countries": ["DE", "US"], "target_industries": ["energy"], "datasets": ["c2"], "#,
            r#""last_seen": "2025-12-31T10:00:00+01:00", "score": 90}"#,
            "\n",
            r#"{"indicator": "198.51.100.8"}"#,
            "\n",
        )
        .as_bytes(),
    );
    fixture.config.datasets = vec!["partner".to_owned(), "c2".to_owned()];
    fixture.config.score = Some(40);
    let report = fixture.load().unwrap();
    assert_eq!(report.read, 2);
    assert_eq!(report.indicators, 2);
    assert!(report.diagnostics.is_empty(), "{:?}", report.diagnostics);

    let full = fixture.intel.sightings(&net("198.51.100.7/32")).unwrap()[0];
    assert_eq!(full.score(), Some(90));
    assert_eq!(
        full.last_seen(),
        Some("2025-12-31T09:00:00Z".parse().unwrap())
    );
    let value = |attribute| fixture.values("198.51.100.7/32", attribute);
    assert_eq!(value(Attribute::AttackerNames), [["APT28", "Fancy Bear"]]);
    assert_eq!(value(Attribute::AttackerCountries), [["RU"]]);
    assert_eq!(value(Attribute::TargetCountries), [["DE", "US"]]);
    assert_eq!(value(Attribute::TargetIndustries), [["energy"]]);
    assert_eq!(value(Attribute::Datasets), [["c2", "partner"]]);

    let bare = fixture.intel.sightings(&net("198.51.100.8/32")).unwrap()[0];
    assert_eq!(bare.score(), Some(40));
    assert_eq!(bare.last_seen(), Some(now()));
    assert_eq!(
        fixture.values("198.51.100.8/32", Attribute::Datasets),
        [["c2", "partner"]]
    );
}

#[test]
fn jsonl_several_sightings_of_one_address() {
    let line = |last_seen: &str, dataset: &str| {
        format!(
            r#"{{"indicator": "192.0.2.9", "datasets": ["{dataset}"], "last_seen": "{last_seen}"}}"#
        )
    };
    let content = [
        line("2025-01-01T00:00:00Z", "scanner"),
        line("2025-06-01T00:00:00Z", "scanner"),
        line("2025-06-01T00:00:00Z", "c2"),
        line("2025-06-01T00:00:00Z", "c2"),
    ]
    .join("\n");
    let (fixture, report) = load_ok(&content);
    assert_eq!(report.read, 4);
    assert_eq!(report.indicators, 1);
    assert_eq!(report.sightings, 3);
    assert_eq!(report.merged, 1);

    let sightings = fixture.intel.sightings(&net("192.0.2.9/32")).unwrap();
    assert_eq!(sightings.len(), 3);
    let mut seen: Vec<(i64, Vec<String>)> = sightings
        .iter()
        .zip(fixture.values("192.0.2.9/32", Attribute::Datasets))
        .map(|(sighting, datasets)| (sighting.last_seen, datasets))
        .collect();
    seen.sort();
    let second = |text: &str| text.parse::<Timestamp>().unwrap().as_second();
    assert_eq!(
        seen,
        [
            (second("2025-01-01T00:00:00Z"), vec!["scanner".to_owned()]),
            (second("2025-06-01T00:00:00Z"), vec!["c2".to_owned()]),
            (second("2025-06-01T00:00:00Z"), vec!["scanner".to_owned()]),
        ]
    );
}

#[test]
fn jsonl_bad_lines_reported_and_skipped() {
    let lines = [
        r#"{"indicator": "192.0.2.1"}"#,
        r#"{"indicator": "192.0.2.2""#,
        r#"{"datasets": ["c2"]}"#,
        r#"{"indicator": "192.0.2.3", "score": 101}"#,
        r#"{"indicator": "192.0.2.4", "score": -1}"#,
        r#"{"indicator": "192.0.2.5", "last_seen": "yesterday"}"#,
        r#"{"indicator": "192.0.2.6", "datasets": "c2"}"#,
        r#"{"indicator": "192.0.2.7", "indicator": "192.0.2.8"}"#,
        r#"["192.0.2.9"]"#,
        r#"{"indicator": "192.0.2.10"} trailing"#,
        r#"{"indicator": "942.0.2.1"}"#,
        r#"{"indicator": 3221225985}"#,
        r#"{"indicator": "192.0.2.11", "score": 50.5}"#,
    ];
    let (fixture, report) = load_ok(&lines.join("\n"));
    assert_eq!(report.read, 13);
    assert_eq!(report.indicators, 1);
    assert_eq!(report.rejected, 12);
    assert!(fixture.intel.sightings(&net("192.0.2.1/32")).is_some());
    // The middle of the message is jiff's own and may change with its version.
    let last_seen_error = &report.diagnostics[4].message;
    assert!(last_seen_error.starts_with("invalid last_seen `yesterday`: "));
    assert!(
        last_seen_error.ends_with("; expected an RFC 3339 timestamp such as 2024-05-01T12:00:00Z")
    );
    assert_eq!(
        messages(&report),
        [
            (
                2,
                Severity::Error,
                "invalid JSON object: EOF while parsing an object"
            ),
            (3, Severity::Error, "missing key `indicator`"),
            (
                4,
                Severity::Error,
                "score 101 is out of range; expected 0 to 100"
            ),
            (
                5,
                Severity::Error,
                "score -1 is out of range; expected 0 to 100"
            ),
            (6, Severity::Error, last_seen_error.as_str()),
            (
                7,
                Severity::Error,
                "invalid JSON object: invalid type: string \"c2\", expected a list of strings"
            ),
            (
                8,
                Severity::Error,
                "invalid JSON object: duplicate key `indicator`"
            ),
            (
                9,
                Severity::Error,
                "invalid JSON object: invalid type: sequence, expected a JSON object with an `indicator` key"
            ),
            (
                10,
                Severity::Error,
                "invalid JSON object: trailing characters"
            ),
            (
                11,
                Severity::Error,
                "rejected indicator `942.0.2.1`: octet 942 is greater than 255"
            ),
            (
                12,
                Severity::Error,
                "invalid JSON object: invalid type: integer `3221225985`, expected a string"
            ),
            (
                13,
                Severity::Error,
                "invalid JSON object: invalid type: floating point `50.5`, expected i64"
            ),
        ]
    );
    // JSON errors name the column. The other rejections concern a whole
    // field, whose position the parser no longer has.
    let columns: Vec<Option<u64>> = report.diagnostics.iter().map(|d| d.column).collect();
    assert_eq!(
        columns,
        [
            Some(25),
            None,
            None,
            None,
            None,
            Some(43),
            Some(38),
            Some(1),
            Some(29),
            None,
            Some(24),
            Some(41)
        ]
    );
}

#[test]
fn jsonl_error_column_counts_characters() {
    // Two leading spaces and a two-byte `é` come before the bad value, and
    // the column counts characters of the line as it is in the file.
    let (_, report) = load_ok(concat!(
        r#"{"indicator": "192.0.2.1"}"#,
        "\n",
        r#"  {"indicator": "192.0.2.2", "attacker_names": ["é"], "score": x}"#,
        "\n",
    ));
    assert_eq!(report.rejected, 1);
    let diagnostic = &report.diagnostics[0];
    assert_eq!(diagnostic.line, 2);
    assert_eq!(diagnostic.column, Some(64));
    assert_eq!(
        diagnostic.to_string(),
        format!(
            "{}:2:64: error: invalid JSON object: expected value",
            diagnostic.path.display()
        )
    );
}

#[test]
fn jsonl_unknown_key_warned_once() {
    let (fixture, report) = load_ok(concat!(
        r#"{"indicator": "192.0.2.1", "confidence": "high", "atacker_names": ["x"]}"#,
        "\n",
        r#"{"indicator": "192.0.2.2", "confidence": {"nested": [1, 2]}}"#,
        "\n",
    ));
    assert_eq!(report.indicators, 2);
    assert_eq!(report.rejected, 0);
    assert!(fixture.intel.sightings(&net("192.0.2.2/32")).is_some());
    assert_eq!(
        messages(&report),
        [
            (
                1,
                Severity::Warning,
                "unknown key `confidence` ignored; later lines with this key are not reported"
            ),
            (
                1,
                Severity::Warning,
                "unknown key `atacker_names` ignored; later lines with this key are not reported"
            ),
        ]
    );
}

#[test]
fn country_codes_fold_to_upper_case() {
    let mut fixture = Fixture::new(
        br#"{"indicator": "192.0.2.1", "attacker_countries": ["ru", "RU"], "attacker_names": ["apt"]}"#,
    );
    fixture.config.target_countries = vec!["de".to_owned()];
    fixture.load().unwrap();
    let value = |attribute| fixture.values("192.0.2.1/32", attribute);
    assert_eq!(value(Attribute::AttackerCountries), [["RU"]]);
    assert_eq!(value(Attribute::TargetCountries), [["DE"]]);
    assert_eq!(value(Attribute::AttackerNames), [["apt"]]);
}

#[test]
fn jsonl_null_fields_count_as_absent() {
    let mut fixture = Fixture::new(
        br#"{"indicator": "192.0.2.1", "datasets": null, "last_seen": null, "score": null}"#,
    );
    fixture.config.score = Some(5);
    let report = fixture.load().unwrap();
    assert_eq!(report.indicators, 1);
    let sighting = fixture.intel.sightings(&net("192.0.2.1/32")).unwrap()[0];
    assert_eq!(sighting.score(), Some(5));
    assert_eq!(sighting.last_seen(), Some(now()));
}

#[test]
fn jsonl_escaped_strings_load() {
    let (fixture, report) =
        load_ok(r#"{"indicator": "192.0.2.\u0031", "attacker_names": ["Caf\u00e9 \"Bear\""]}"#);
    assert_eq!(report.indicators, 1, "{:?}", report.diagnostics);
    assert_eq!(
        fixture.values("192.0.2.1/32", Attribute::AttackerNames),
        [["Café \"Bear\""]]
    );
}

#[test]
fn jsonl_normalises_and_merges() {
    let (fixture, report) = load_ok(concat!(
        r#"{"indicator": "203.0.113.9/24", "score": 10, "last_seen": "2025-01-01T00:00:00Z"}"#,
        "\n",
        r#"{"indicator": "203.0.113.0/24", "score": 10, "last_seen": "2025-01-01T00:00:00Z"}"#,
        "\n",
    ));
    assert_eq!(report.normalised, 1);
    assert_eq!(report.merged, 1);
    assert_eq!(report.indicators, 1);
    assert_eq!(
        fixture
            .intel
            .sightings(&net("203.0.113.0/24"))
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn feeds_share_indicators_in_store() {
    let dir = TempDir::new().unwrap();
    let first_path = dir.path().join("first.txt");
    let second_path = dir.path().join("second.txt");
    std::fs::write(&first_path, "192.0.2.1\n192.0.2.2\n").unwrap();
    std::fs::write(&second_path, "192.0.2.2\n192.0.2.3\n").unwrap();
    let mut intel = Intel::new();

    let first = load_feed(&feed_config("first", first_path), &mut intel, now()).unwrap();
    let second = load_feed(&feed_config("second", second_path), &mut intel, now()).unwrap();
    assert_eq!(first.indicators, 2);
    assert_eq!(second.indicators, 2);
    assert_eq!(second.merged, 0);
    assert_eq!(intel.indicator_count(), 3);
    let shared = intel.sightings(&net("192.0.2.2/32")).unwrap();
    assert_eq!(shared.len(), 2);
    assert_ne!(shared[0].feed, shared[1].feed);
}

#[test]
fn report_summary_line() {
    let (fixture, report) = load_ok("192.0.2.1\n192.0.2.1\nbad\n");
    let path = fixture.config.path.display();
    assert_eq!(
        report.to_string(),
        format!(
            "feed `test` (list, {path}): 3 records, 1 indicators, 1 sightings, 1 rejected, 0 skipped, 0 normalised, 1 merged"
        )
    );
}

#[test]
fn list_line_of_words_reports_the_first_word() {
    let mut fixture = Fixture::new(b"192.0.2.1\ngarbage line\n");
    let report = fixture.load().unwrap();
    assert_eq!(report.rejected, 1);
    assert_eq!(
        messages(&report),
        [(
            2,
            Severity::Error,
            "rejected indicator `garbage`: not a valid IPv4 or IPv6 address"
        )]
    );
}

#[test]
fn single_rejected_record_reads_as_one() {
    let mut fixture = Fixture::new(b"garbage\n");
    let error = fixture.load().unwrap_err().to_string();
    assert!(
        error.starts_with("its only record was rejected; the first error: "),
        "{error}"
    );
}
