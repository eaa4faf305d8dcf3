//! Loads of small files in each format beyond the plain list and `jsonl`:
//! ranges, counts and trails in lists, CSV, Cloudflare, STIX 2 and MISP,
//! detection, compression, and the robustness cases run once per format.

use std::io::Write;

use super::tests::{Fixture, messages, net, now};
use super::*;
use crate::intel::Attribute;

/// Indicators that every format must treat alike: four load (two after
/// normalising) and six are rejected.
const CASES: [&str; 10] = [
    "203.0.113.5",
    "942.0.2.1",
    "0.0.0.0",
    "198.51.100.7",
    "192.0.2.77/24",
    "192.0.2.0/33",
    "0.0.0.0/0",
    "192.0.2.10/",
    "::ffff:192.0.2.200",
    "010.1.2.3",
];

/// Writes `indicators` as a feed of `format`, with one record each.
fn render(format: FeedFormat, indicators: &[&str]) -> String {
    let each = |template: &dyn Fn(&str) -> String, separator: &str| {
        let records: Vec<String> = indicators.iter().map(|i| template(i)).collect();
        records.join(separator)
    };
    match format {
        FeedFormat::List => each(&|i| i.to_owned(), "\n"),
        FeedFormat::Jsonl => each(&|i| format!(r#"{{"indicator": "{i}"}}"#), "\n"),
        FeedFormat::Csv => format!("# comment\nip,name\n{}", each(&|i| format!("{i},x"), "\n")),
        FeedFormat::Cloudflare => format!(
            r#"{{"success": true, "result": [{}]}}"#,
            each(
                &|i| format!(
                    r#"{{"uuid": "event-{i}", "indicator": "{i}", "indicatorType": "IPv4"}}"#
                ),
                ",\n"
            )
        ),
        FeedFormat::Stix2 => format!(
            r#"{{"type": "bundle", "id": "bundle--1", "objects": [{}]}}"#,
            each(
                &|i| format!(
                    r#"{{"type": "indicator", "id": "indicator--{i}", "pattern": "[ipv4-addr:value = '{i}']", "pattern_type": "stix", "valid_from": "2025-01-01T00:00:00Z"}}"#
                ),
                ",\n"
            )
        ),
        FeedFormat::Misp => format!(
            r#"{{"Event": {{"uuid": "e1", "info": "test", "Attribute": [{}]}}}}"#,
            each(
                &|i| format!(r#"{{"uuid": "attribute-{i}", "type": "ip-dst", "value": "{i}"}}"#),
                ",\n"
            )
        ),
    }
}

const ALL_FORMATS: [FeedFormat; 6] = [
    FeedFormat::List,
    FeedFormat::Jsonl,
    FeedFormat::Csv,
    FeedFormat::Cloudflare,
    FeedFormat::Stix2,
    FeedFormat::Misp,
];

fn fixture(format: FeedFormat, content: &str) -> Fixture {
    let mut fixture = Fixture::new(content.as_bytes());
    if format == FeedFormat::Csv {
        fixture.config.columns.indicator = Some("ip".to_owned());
    }
    fixture
}

#[test]
fn every_format_detected() {
    for format in ALL_FORMATS {
        let mut fixture = fixture(format, &render(format, &["192.0.2.1"]));
        let report = fixture.load().unwrap();
        assert_eq!(report.format, format);
        assert_eq!(report.indicators, 1, "{format}");
    }
}

#[test]
fn bad_records_skipped_in_every_format() {
    for format in ALL_FORMATS {
        let mut fixture = fixture(format, &render(format, &CASES));
        fixture.config.format = Some(format);
        let report = fixture.load().unwrap();
        assert_eq!(report.read, 10, "{format}");
        assert_eq!(report.indicators, 4, "{format}: {:#?}", report.diagnostics);
        assert_eq!(report.rejected, 6, "{format}");
        assert_eq!(report.normalised, 2, "{format}");
        assert_eq!(report.skipped, 0, "{format}");
        for prefix in [
            "203.0.113.5/32",
            "198.51.100.7/32",
            "192.0.2.0/24",
            "192.0.2.200/32",
        ] {
            assert!(
                fixture.intel.sightings(&net(prefix)).is_some(),
                "{format}: {prefix}"
            );
        }

        let errors: Vec<&Diagnostic> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .collect();
        assert_eq!(errors.len(), 6, "{format}");
        assert!(
            errors[0]
                .message
                .ends_with("`942.0.2.1`: octet 942 is greater than 255"),
            "{format}: {}",
            errors[0].message
        );
        // Line formats locate a record by line, documents by object id.
        let located = errors[0].line > 0
            || errors[0]
                .object
                .as_deref()
                .is_some_and(|id| id.contains("942.0.2.1"));
        assert!(located, "{format}: {}", errors[0]);
    }
}

#[test]
fn strict_fails_in_every_format() {
    for format in ALL_FORMATS {
        let mut fixture = fixture(format, &render(format, &["192.0.2.1", "942.0.2.1"]));
        fixture.config.strict = true;
        let error = fixture.load().unwrap_err();
        assert!(
            matches!(error, FeedError::Strict { .. }),
            "{format}: {error}"
        );
    }
}

#[test]
fn all_bad_fails_in_every_format() {
    for format in ALL_FORMATS {
        let mut fixture = fixture(format, &render(format, &["942.0.2.1", "bad"]));
        fixture.config.format = Some(format);
        let error = fixture.load().unwrap_err();
        assert!(
            matches!(error, FeedError::NothingLoaded { .. }),
            "{format}: {error}"
        );
    }
}

#[test]
fn crlf_bom_and_spaces_in_every_format() {
    for format in ALL_FORMATS {
        let clean = render(format, &["192.0.2.1", "198.51.100.0/24"]);
        let messy = format!("\u{FEFF}{}", clean.replace('\n', "  \r\n"));
        let mut fixture = fixture(format, &messy);
        let report = fixture.load().unwrap();
        assert_eq!(report.format, format);
        assert_eq!(report.indicators, 2, "{format}: {:#?}", report.diagnostics);
        assert!(
            report.diagnostics.is_empty(),
            "{format}: {:#?}",
            report.diagnostics
        );
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn compressed_files_in_every_format() {
    for format in ALL_FORMATS {
        let content = render(format, &["192.0.2.1", "198.51.100.0/24"]);
        let compressed = [
            ("feed.gz", gzip(content.as_bytes())),
            // The name says nothing: the magic number decides.
            ("feed.txt", zstd::encode_all(content.as_bytes(), 3).unwrap()),
        ];
        for (name, bytes) in compressed {
            let mut fixture = Fixture::named(name, &bytes);
            if format == FeedFormat::Csv {
                fixture.config.columns.indicator = Some("ip".to_owned());
            }
            let report = fixture.load().unwrap();
            assert_eq!(report.format, format, "{name}");
            assert_eq!(report.indicators, 2, "{format} {name}");
        }
    }
}

#[test]
fn parse_bytes_matches_file_load() {
    let config = FeedConfig {
        name: "fuzz".to_owned(),
        ..FeedConfig::default()
    };
    let mut intel = Intel::new();
    let report = parse_bytes(&config, b"192.0.2.1\nbad\n", &mut intel, now()).unwrap();
    assert_eq!(report.format, FeedFormat::List);
    assert_eq!(report.read, 2);
    assert_eq!(report.rejected, 1);

    let bundle = render(FeedFormat::Stix2, &["192.0.2.1"]);
    let mut intel = Intel::new();
    let report = parse_bytes(&config, &gzip(bundle.as_bytes()), &mut intel, now()).unwrap();
    assert_eq!(report.format, FeedFormat::Stix2);
    assert_eq!(report.indicators, 1);
}

// --- list ---

#[test]
fn list_range_loads_covering_prefixes() {
    let mut fixture =
        Fixture::new(b"192.0.2.1-192.0.2.6 # four prefixes\n198.51.100.0 - 198.51.100.255\n");
    let report = fixture.load().unwrap();
    assert_eq!(report.read, 2);
    assert_eq!(report.indicators, 5);
    assert_eq!(report.sightings, 5);
    for prefix in [
        "192.0.2.1/32",
        "192.0.2.2/31",
        "192.0.2.4/31",
        "192.0.2.6/32",
        "198.51.100.0/24",
    ] {
        assert!(fixture.intel.sightings(&net(prefix)).is_some(), "{prefix}");
    }
}

#[test]
fn list_wide_range_rejected() {
    let mut fixture = Fixture::new(b"10.0.0.0-10.255.255.255\n192.0.2.9-192.0.2.1\n192.0.2.1\n");
    let report = fixture.load().unwrap();
    assert_eq!(report.rejected, 2);
    assert_eq!(
        messages(&report),
        [
            (
                1,
                Severity::Error,
                "rejected range `10.0.0.0-10.255.255.255`: range covers more addresses than a /16; set `max_range_ipv4 = 8` in the feed's config to load it"
            ),
            (
                2,
                Severity::Error,
                "rejected range `192.0.2.9-192.0.2.1`: range start 192.0.2.9 is after its end 192.0.2.1"
            ),
        ]
    );

    fixture.config.max_range_ipv4 = Some(8);
    fixture.intel = Intel::new();
    let report = fixture.load().unwrap();
    assert_eq!(report.rejected, 1);
    assert!(fixture.intel.sightings(&net("10.0.0.0/8")).is_some());
}

#[test]
fn list_ipsum_count_becomes_score() {
    let content = "# IP\tnumber of (black)lists\n192.0.2.1\t10\n192.0.2.2\t3\n192.0.2.3 12\n192.0.2.4\n192.0.2.5\tx\n";
    let mut fixture = Fixture::new(content.as_bytes());
    fixture.config.score = Some(5);
    let report = fixture.load().unwrap();
    assert_eq!(report.indicators, 4);
    assert_eq!(report.rejected, 1);
    let score = |fixture: &Fixture, address: &str| {
        fixture.intel.sightings(&net(address)).unwrap()[0].score()
    };
    assert_eq!(score(&fixture, "192.0.2.1/32"), Some(100));
    assert_eq!(score(&fixture, "192.0.2.2/32"), Some(30));
    assert_eq!(score(&fixture, "192.0.2.3/32"), Some(100));
    // A line without a count keeps the config's score.
    assert_eq!(score(&fixture, "192.0.2.4/32"), Some(5));
    assert_eq!(
        messages(&report),
        [(
            6,
            Severity::Error,
            "unexpected text `x` after indicator `192.0.2.5`; a trailing comment must start with `#` or `;`"
        )]
    );

    fixture.config.score_per_count = Some(1);
    fixture.intel = Intel::new();
    fixture.load().unwrap();
    assert_eq!(score(&fixture, "192.0.2.2/32"), Some(3));
}

#[test]
fn list_spamhaus_json_records() {
    let content = concat!(
        r#"{"cidr":"198.51.100.0/24","sblid":"SBL000001","rir":"arin"}"#,
        "\n",
        r#"{"cidr":"2001:db8::/32","sblid":"SBL000002","rir":"ripencc"}"#,
        "\n",
        r#"{"sblid":"SBL000003"}"#,
        "\n",
        r#"{"cidr":"198.51.100.0/33"#,
        "\n",
        r#"{"type":"metadata","timestamp":1700000000,"size":3,"records":3,"copyright":"(c) 2024 The Spamhaus Project; #1"}"#,
        "\n",
    );
    let (fixture, report) = {
        let mut fixture = Fixture::new(content.as_bytes());
        let report = fixture.load().unwrap();
        (fixture, report)
    };
    assert_eq!(report.format, FeedFormat::List);
    // The metadata line is not a record.
    assert_eq!(report.read, 4);
    assert_eq!(report.indicators, 2);
    assert_eq!(report.rejected, 2);
    assert!(fixture.intel.sightings(&net("2001:db8::/32")).is_some());
    let found = messages(&report);
    assert_eq!(found[0], (3, Severity::Error, "missing key `cidr`"));
    assert_eq!(found[1].0, 4);
    assert!(
        found[1].2.starts_with("invalid JSON object: "),
        "{}",
        found[1].2
    );
    // The JSON ends after its 24th character.
    assert_eq!(report.diagnostics[1].column, Some(24));
}

#[test]
fn list_trails_need_skip_non_ip() {
    let content = "example.com\nhttp://192.0.2.9/gate.php\n192.0.2.1:443\n/panel/login.php\n192.0.2.2\n192.0.2.3:443:443\n942.0.2.1\n";
    let mut fixture = Fixture::new(content.as_bytes());
    let report = fixture.load().unwrap();
    assert_eq!(report.indicators, 1);
    assert_eq!(report.rejected, 6);
    assert_eq!(report.skipped, 0);
    assert_eq!(
        messages(&report)[2],
        (
            3,
            Severity::Error,
            "rejected indicator `192.0.2.1:443`: an address with a port; set `skip_non_ip = true` in the feed's config to load the address of such lines"
        )
    );

    fixture.config.skip_non_ip = true;
    fixture.intel = Intel::new();
    let report = fixture.load().unwrap();
    assert_eq!(report.read, 7);
    assert_eq!(report.indicators, 2);
    assert_eq!(report.skipped, 3);
    assert_eq!(report.rejected, 2);
    assert!(fixture.intel.sightings(&net("192.0.2.1/32")).is_some());
    let rejected: Vec<u64> = messages(&report).iter().map(|(line, _, _)| *line).collect();
    assert_eq!(rejected, [6, 7]);
}

// --- csv ---

const FEODO: &str = r#"################################################################
# abuse.ch Feodo Tracker Botnet C2 IP Blocklist (CSV)          #
#
"first_seen_utc","dst_ip","dst_port","c2_status","last_online","malware"
"2023-05-23 17:51:44","192.0.2.73","1194","online","2024-04-01","Pikabot"
"2024-02-08 19:20:49","198.51.100.155","5000","offline","2024-03-11T10:00:00Z","Pikabot, QakBot"
"2024-02-08 19:50:53","942.0.2.1","9785","offline","2024-03-04","Pikabot"
"2024-02-09 06:56:00","203.0.113.9","2078","offline","yesterday","Pikabot"
"2024-02-09 06:56:00","","2078","offline","2024-03-04","Pikabot"
"2024-02-09 16:29:51","203.0.113.143","2083","offline","2024-03-09 12:00:00","-"
# END 6 entries"#;

fn feodo_fixture() -> Fixture {
    let mut fixture = Fixture::named("ipblocklist.csv", FEODO.as_bytes());
    fixture.config.columns = CsvColumns {
        indicator: Some("dst_ip".to_owned()),
        attacker_names: Some("malware".to_owned()),
        last_seen: Some("last_online".to_owned()),
        ..CsvColumns::default()
    };
    fixture
}

#[test]
fn csv_maps_columns() {
    let mut fixture = feodo_fixture();
    let report = fixture.load().unwrap();
    assert_eq!(report.format, FeedFormat::Csv);
    assert_eq!(report.read, 6);
    assert_eq!(report.indicators, 3);
    assert_eq!(report.rejected, 3);

    let seconds = |text: &str| text.parse::<Timestamp>().unwrap().as_second();
    let sighting = |address: &str| fixture.intel.sightings(&net(address)).unwrap()[0];
    assert_eq!(
        sighting("192.0.2.73/32").last_seen,
        seconds("2024-04-01T00:00:00Z")
    );
    assert_eq!(
        sighting("198.51.100.155/32").last_seen,
        seconds("2024-03-11T10:00:00Z")
    );
    assert_eq!(
        sighting("203.0.113.143/32").last_seen,
        seconds("2024-03-09T12:00:00Z")
    );
    assert_eq!(
        fixture.values("198.51.100.155/32", Attribute::AttackerNames),
        [["Pikabot", "QakBot"]]
    );
    // A lone `-` is an absent value.
    assert_eq!(
        fixture.values("203.0.113.143/32", Attribute::AttackerNames),
        [Vec::<String>::new()]
    );

    let found = messages(&report);
    assert_eq!(
        found[0],
        (
            7,
            Severity::Error,
            "rejected indicator `942.0.2.1`: octet 942 is greater than 255"
        )
    );
    assert_eq!(found[1].0, 8);
    assert!(
        found[1]
            .2
            .starts_with("invalid last_seen `yesterday`; expected an RFC 3339")
    );
    assert_eq!(
        found[2],
        (9, Severity::Error, "missing indicator in column `dst_ip`")
    );
}

#[test]
fn csv_separator_and_score() {
    let content = "ip;score;actors;country\n192.0.2.1;80;APT28|Fancy Bear;ru\n192.0.2.2;101;x;DE\n192.0.2.3;;;\n";
    let mut fixture = Fixture::new(content.as_bytes());
    fixture.config.format = Some(FeedFormat::Csv);
    fixture.config.delimiter = Some(';');
    fixture.config.value_separator = Some("|".to_owned());
    fixture.config.columns = CsvColumns {
        indicator: Some("IP".to_owned()),
        score: Some("score".to_owned()),
        attacker_names: Some("actors".to_owned()),
        attacker_countries: Some("country".to_owned()),
        ..CsvColumns::default()
    };
    let report = fixture.load().unwrap();
    assert_eq!(report.indicators, 2);
    assert_eq!(
        messages(&report),
        [(
            3,
            Severity::Error,
            "invalid score `101`; expected an integer from 0 to 100"
        )]
    );
    assert_eq!(
        fixture.intel.sightings(&net("192.0.2.1/32")).unwrap()[0].score(),
        Some(80)
    );
    assert_eq!(
        fixture.values("192.0.2.1/32", Attribute::AttackerNames),
        [["APT28", "Fancy Bear"]]
    );
    assert_eq!(
        fixture.values("192.0.2.1/32", Attribute::AttackerCountries),
        [["RU"]]
    );
}

#[test]
fn csv_without_header_by_number() {
    let content = "# DShield style\n192.0.2.0\t192.0.2.255\t24\t170\tEXAMPLE\tIR\tabuse@example.net\n198.51.100.0\t198.51.100.255\t24\t169\t-\t-\t-\n";
    let mut fixture = Fixture::new(content.as_bytes());
    fixture.config.header = Some(false);
    fixture.config.delimiter = Some('\t');
    fixture.config.columns = CsvColumns {
        indicator: Some("1".to_owned()),
        range_end: Some("2".to_owned()),
        attacker_countries: Some("6".to_owned()),
        ..CsvColumns::default()
    };
    let report = fixture.load().unwrap();
    assert_eq!(report.indicators, 2, "{:#?}", report.diagnostics);
    assert_eq!(
        fixture.values("192.0.2.0/24", Attribute::AttackerCountries),
        [["IR"]]
    );
    assert_eq!(
        fixture.values("198.51.100.0/24", Attribute::AttackerCountries),
        [Vec::<String>::new()]
    );
}

#[test]
fn csv_config_errors() {
    let mut fixture = Fixture::new(b"ip,name\n192.0.2.1,x\n");
    fixture.config.format = Some(FeedFormat::Csv);
    let error = fixture.load().unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid feed config: a csv feed needs `columns.indicator`, the column of the address or prefix"
    );

    fixture.config.columns.indicator = Some("address".to_owned());
    let error = fixture.load().unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid feed config: column `address` not found in the header row; its columns are: ip, name"
    );

    fixture.config.header = Some(false);
    let error = fixture.load().unwrap_err();
    assert!(matches!(error, FeedError::InvalidConfig(_)), "{error}");

    fixture.config.columns.indicator = Some("1".to_owned());
    fixture.config.delimiter = Some('é');
    let error = fixture.load().unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("invalid feed config: invalid delimiter 'é'"),
        "{error}"
    );
}

// --- cloudflare ---

const CLOUDFLARE: &str = r#"{
  "result": [
    {"uuid": "e1", "attacker": "APT28", "attackerCountry": "ru", "targetCountry": "DE",
     "targetIndustry": "Energy", "datasetId": "ds-1", "date": "2025-03-01T10:00:00Z",
     "indicator": "192.0.2.1", "indicatorType": "IPv4", "category": "C2"},
    {"uuid": "e2", "indicator": "example.com", "indicatorType": "DOMAIN"},
    {"uuid": "e3", "indicator": "2001:db8::7", "indicatorType": "DOMAIN", "dataset": "named"},
    {"uuid": "e4", "indicator": "942.0.2.1", "indicatorType": "IPv4"},
    {"uuid": "e5", "indicator": "192.0.2.5", "indicatorType": "IPv4", "date": "soon"},
    {"uuid": "e6", "attacker": 7},
    "not an event",
    {"uuid": "e8", "event": "narrative only"},
    {"uuid": "e9", "indicators": [{"indicatorType": "IP", "value": "198.51.100.9"},
                                 {"indicatorType": "HASH", "value": "d41d8cd9"}]}
  ],
  "success": true
}"#;

#[test]
fn cloudflare_events_load() {
    let mut fixture = Fixture::named("events.json", CLOUDFLARE.as_bytes());
    let report = fixture.load().unwrap();
    assert_eq!(report.format, FeedFormat::Cloudflare);
    // e9 carries two indicators; every other event is one record.
    assert_eq!(report.read, 10);
    assert_eq!(report.indicators, 3);
    // e2, e8 and e9's hash.
    assert_eq!(report.skipped, 3);
    assert_eq!(report.rejected, 4);

    let value = |attribute| fixture.values("192.0.2.1/32", attribute);
    assert_eq!(value(Attribute::AttackerNames), [["APT28"]]);
    assert_eq!(value(Attribute::AttackerCountries), [["RU"]]);
    assert_eq!(value(Attribute::TargetCountries), [["DE"]]);
    assert_eq!(value(Attribute::TargetIndustries), [["Energy"]]);
    assert_eq!(value(Attribute::Datasets), [["ds-1"]]);
    let sighting = fixture.intel.sightings(&net("192.0.2.1/32")).unwrap()[0];
    assert_eq!(
        sighting.last_seen(),
        Some("2025-03-01T10:00:00Z".parse().unwrap())
    );
    // Labelled a domain, but an address all the same.
    assert_eq!(
        fixture.values("2001:db8::7/128", Attribute::Datasets),
        [["named"]]
    );
    assert!(fixture.intel.sightings(&net("198.51.100.9/32")).is_some());

    let objects: Vec<Option<&str>> = report
        .diagnostics
        .iter()
        .map(|d| d.object.as_deref())
        .collect();
    assert_eq!(
        objects,
        [Some("e4"), Some("e5"), Some("e6"), Some("result[6]")]
    );
    let path = fixture.config.path.display();
    assert_eq!(
        report.diagnostics[0].to_string(),
        format!("{path}: e4: error: rejected indicator `942.0.2.1`: octet 942 is greater than 255")
    );
}

#[test]
fn cloudflare_bare_array() {
    let mut fixture = Fixture::new(br#"[{"indicator": "192.0.2.1", "indicatorType": "ip"}]"#);
    fixture.config.format = Some(FeedFormat::Cloudflare);
    let report = fixture.load().unwrap();
    assert_eq!(report.indicators, 1);

    let mut fixture = Fixture::new(br#"{"success": false, "errors": [{"code": 10000}]}"#);
    fixture.config.format = Some(FeedFormat::Cloudflare);
    let error = fixture.load().unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("expected a `result` array of threat events"),
        "{error}"
    );
}

// --- stix2 ---

/// An indicator of each kind, joined to a campaign, an intrusion set, a
/// threat actor, identities and locations.
const BUNDLE: &str = r#"{
  "type": "bundle", "id": "bundle--1",
  "objects": [
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--v6", "pattern_type": "stix",
     "pattern": "[ipv4-addr:value = '2001:db8::5']", "valid_from": "2025-01-01T00:00:00Z",
     "modified": "2025-02-01T00:00:00Z", "confidence": 70},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--broken", "pattern_type": "stix",
     "pattern": "[ipv4-addr:value = '192.0.2.1'", "valid_from": "2025-01-01T00:00:00Z"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--list", "pattern_type": "stix",
     "pattern": "[ipv4-addr:value IN ('198.51.100.1', '198.51.100.0/30') OR domain-name:value = 'example.com']",
     "valid_from": "2025-01-01T00:00:00Z"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--domain", "pattern_type": "stix",
     "pattern": "[domain-name:value = 'example.com']", "valid_from": "2025-01-01T00:00:00Z"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--snort", "pattern_type": "snort",
     "pattern": "alert tcp any any -> 192.0.2.1 any", "valid_from": "2025-01-01T00:00:00Z"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--expired", "pattern_type": "stix",
     "pattern": "[ipv4-addr:value = '192.0.2.99']", "valid_from": "2020-01-01T00:00:00Z",
     "valid_until": "2021-01-01T00:00:00Z"},
    {"type": "indicator", "spec_version": "2.1", "id": "indicator--actor", "pattern_type": "stix",
     "pattern": "[ipv4-addr:value = '203.0.113.7']", "valid_from": "2025-01-01T00:00:00Z"},
    {"type": "indicator", "id": "indicator--and",
     "pattern": "[ipv4-addr:value = '192.0.2.8' AND network-traffic:dst_port = 443]"},
    {"type": "indicator", "id": "indicator--confidence", "pattern": "[ipv4-addr:value = '192.0.2.9']",
     "confidence": 150},
    {"type": "indicator", "id": "indicator--bad-value",
     "pattern": "[ipv4-addr:value IN ('192.0.2.10', '942.0.2.1', 'bad')]"},
    {"type": "campaign", "id": "campaign--1", "name": "Campaign One"},
    {"type": "intrusion-set", "id": "intrusion-set--1", "name": "Example Set"},
    {"type": "threat-actor", "id": "threat-actor--1", "name": "Example Actor"},
    {"type": "identity", "id": "identity--victims", "identity_class": "organization",
     "sectors": ["energy", "telecommunications"], "x_cta_country": ["DE"]},
    {"type": "location", "id": "location--fr", "country": "fr"},
    {"type": "location", "id": "location--origin", "country": "XX"},
    {"type": "relationship", "id": "relationship--1", "relationship_type": "indicates",
     "source_ref": "indicator--list", "target_ref": "campaign--1"},
    {"type": "relationship", "id": "relationship--2", "relationship_type": "attributed-to",
     "source_ref": "campaign--1", "target_ref": "intrusion-set--1"},
    {"type": "relationship", "id": "relationship--3", "relationship_type": "targets",
     "source_ref": "campaign--1", "target_ref": "identity--victims"},
    {"type": "relationship", "id": "relationship--4", "relationship_type": "located-at",
     "source_ref": "identity--victims", "target_ref": "location--fr"},
    {"type": "relationship", "id": "relationship--5", "relationship_type": "indicates",
     "source_ref": "indicator--actor", "target_ref": "threat-actor--1"},
    {"type": "relationship", "id": "relationship--6", "relationship_type": "originates-from",
     "source_ref": "threat-actor--1", "target_ref": "location--origin"},
    {"type": "relationship", "id": "relationship--7", "relationship_type": "targets",
     "source_ref": "threat-actor--1", "target_ref": "location--fr"},
    {"type": "ipv4-addr", "id": "ipv4-addr--1", "value": "192.0.2.50"},
    {"type": "observed-data", "id": "observed-data--1", "last_observed": "2025-05-01T00:00:00Z",
     "objects": {"0": {"type": "ipv6-addr", "value": "2001:db8::50"}, "1": {"type": "domain-name", "value": "example.org"}}}
  ]
}"#;

#[test]
fn stix2_bundle_loads() {
    let mut fixture = Fixture::named("bundle.json", BUNDLE.as_bytes());
    let report = fixture.load().unwrap();
    assert_eq!(report.format, FeedFormat::Stix2);
    // Ten indicators, one address object and one observed-data object.
    assert_eq!(report.read, 12);
    // domain, snort and expired.
    assert_eq!(report.skipped, 3);
    // broken pattern, AND, confidence and a bad value in a list, which
    // rejects the whole indicator once.
    assert_eq!(report.rejected, 4);
    assert!(fixture.intel.sightings(&net("192.0.2.10/32")).is_none());
    // 2001:db8::5, the two of the IN list, 203.0.113.7 and the two
    // address objects.
    assert_eq!(report.indicators, 6);

    // Case F3: the value decides the family.
    let v6 = fixture.intel.sightings(&net("2001:db8::5/128")).unwrap()[0];
    assert_eq!(v6.score(), Some(70));
    assert_eq!(
        v6.last_seen(),
        Some("2025-02-01T00:00:00Z".parse().unwrap())
    );

    for prefix in ["198.51.100.1/32", "198.51.100.0/30"] {
        let value = |attribute| fixture.values(prefix, attribute);
        assert_eq!(value(Attribute::AttackerNames), [["Example Set"]]);
        assert_eq!(
            value(Attribute::TargetIndustries),
            [["energy", "telecommunications"]]
        );
        assert_eq!(value(Attribute::TargetCountries), [["DE", "FR"]]);
    }
    let value = |attribute| fixture.values("203.0.113.7/32", attribute);
    assert_eq!(value(Attribute::AttackerNames), [["Example Actor"]]);
    assert_eq!(value(Attribute::AttackerCountries), [["XX"]]);
    assert_eq!(value(Attribute::TargetCountries), [["FR"]]);

    assert!(fixture.intel.sightings(&net("192.0.2.50/32")).is_some());
    let observed = fixture.intel.sightings(&net("2001:db8::50/128")).unwrap()[0];
    assert_eq!(
        observed.last_seen(),
        Some("2025-05-01T00:00:00Z".parse().unwrap())
    );
    assert!(fixture.intel.sightings(&net("192.0.2.99/32")).is_none());

    let found: Vec<(Option<&str>, Severity, &str)> = report
        .diagnostics
        .iter()
        .map(|d| (d.object.as_deref(), d.severity, d.message.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (
                Some("indicator--v6"),
                Severity::Warning,
                "pattern path is ipv4-addr:value but `2001:db8::5` is an ipv6-addr value; loaded as 2001:db8::5/128"
            ),
            (
                Some("indicator--broken"),
                Severity::Error,
                "invalid pattern `[ipv4-addr:value = '192.0.2.1'`: expected `]`, found the end of the pattern at character 30"
            ),
            (
                Some("indicator--expired"),
                Severity::Warning,
                "indicator expired at 2021-01-01T00:00:00Z (valid_until) and was skipped"
            ),
            (
                Some("indicator--and"),
                Severity::Error,
                "invalid pattern `[ipv4-addr:value = '192.0.2.8' AND network-traffic:dst_port = 443]`: `AND` combines an address with other conditions, which a block list cannot express"
            ),
            (
                Some("indicator--confidence"),
                Severity::Error,
                "confidence 150 is out of range; expected 0 to 100"
            ),
            (
                Some("indicator--bad-value"),
                Severity::Error,
                "rejected indicator `942.0.2.1`: octet 942 is greater than 255"
            ),
        ]
    );
}

#[test]
fn stix2_not_a_bundle() {
    let mut fixture = Fixture::new(br#"{"type": "bundle", "id": "bundle--1", "objects": 5}"#);
    fixture.config.format = Some(FeedFormat::Stix2);
    let error = fixture.load().unwrap_err();
    assert!(
        matches!(error, FeedError::InvalidDocument { .. }),
        "{error}"
    );

    let mut fixture = Fixture::new(b"{\"type\": \"bundle\",\n \"objects\": [\n");
    fixture.config.format = Some(FeedFormat::Stix2);
    let error = fixture.load().unwrap_err();
    assert!(matches!(error, FeedError::Json { .. }), "{error}");
}

// --- misp ---

const EVENT: &str = r#"{"Event": {
  "uuid": "5f0c1a2b-0000-4000-8000-000000000001", "info": "Example campaign",
  "timestamp": "1735689600", "date": "2024-12-01",
  "Tag": [{"name": "tlp:amber"}, {"name": "misp-galaxy:threat-actor=\"Example Bear\""}],
  "Galaxy": [{"type": "threat-actor", "GalaxyCluster": [{"value": "Example Bear", "meta": {"country": ["ru"]}}]}],
  "Attribute": [
    {"uuid": "a1", "type": "ip-src", "value": "192.0.2.1", "timestamp": "1740000000"},
    {"uuid": "a2", "type": "ip-dst|port", "value": "198.51.100.2|443",
     "Tag": [{"name": "misp-galaxy:sector=\"Energy\""}]},
    {"uuid": "a3", "type": "domain", "value": "example.com"},
    {"uuid": "a4", "type": "ip-dst", "value": "192.0.2.4", "deleted": true},
    {"uuid": "a5", "type": "ip-dst", "value": "942.0.2.1"},
    {"uuid": "a6", "type": "ip-src", "value": "192.0.2.6", "last_seen": "2025-06-01T00:00:00.000000+00:00"},
    {"uuid": "a7", "type": "ip-src", "value": 7},
    {"uuid": "a8", "type": "ip-src", "value": "192.0.2.8", "last_seen": "later"}
  ],
  "Object": [{"name": "domain-ip", "Attribute": [
    {"uuid": "o1", "type": "domain|ip", "value": "example.net|203.0.113.10"},
    {"uuid": "o2", "type": "ip-dst", "value": "2001:db8::10"}
  ]}]
}}"#;

#[test]
fn misp_event_loads() {
    let mut fixture = Fixture::named("event.json", EVENT.as_bytes());
    let report = fixture.load().unwrap();
    assert_eq!(report.format, FeedFormat::Misp);
    assert_eq!(report.read, 10);
    assert_eq!(report.indicators, 5);
    assert_eq!(report.skipped, 2);
    assert_eq!(report.rejected, 3);

    for prefix in [
        "192.0.2.1/32",
        "198.51.100.2/32",
        "192.0.2.6/32",
        "203.0.113.10/32",
        "2001:db8::10/128",
    ] {
        assert_eq!(
            fixture.values(prefix, Attribute::Datasets),
            [["Example campaign"]],
            "{prefix}"
        );
        assert_eq!(
            fixture.values(prefix, Attribute::AttackerNames),
            [["Example Bear"]],
            "{prefix}"
        );
        assert_eq!(
            fixture.values(prefix, Attribute::AttackerCountries),
            [["RU"]],
            "{prefix}"
        );
    }
    assert_eq!(
        fixture.values("198.51.100.2/32", Attribute::TargetIndustries),
        [["Energy"]]
    );
    assert_eq!(
        fixture.values("192.0.2.1/32", Attribute::TargetIndustries),
        [Vec::<String>::new()]
    );

    let last_seen = |prefix: &str| fixture.intel.sightings(&net(prefix)).unwrap()[0].last_seen;
    assert_eq!(last_seen("192.0.2.1/32"), 1740000000);
    assert_eq!(last_seen("198.51.100.2/32"), 1735689600);
    let june = "2025-06-01T00:00:00Z"
        .parse::<Timestamp>()
        .unwrap()
        .as_second();
    assert_eq!(last_seen("192.0.2.6/32"), june);

    let objects: Vec<Option<&str>> = report
        .diagnostics
        .iter()
        .map(|d| d.object.as_deref())
        .collect();
    assert_eq!(objects, [Some("a5"), Some("a7"), Some("a8")]);
}

#[test]
fn misp_feed_directory_loads() {
    let dir = tempfile::TempDir::new().unwrap();
    let manifest = r#"{
      "5f0c1a2b-0000-4000-8000-000000000001": {"info": "Example campaign"},
      "5f0c1a2b-0000-4000-8000-000000000002": {"info": "missing"},
      "../escape": {"info": "outside"}
    }"#;
    std::fs::write(dir.path().join("manifest.json"), manifest).unwrap();
    let event_path = dir.path().join("5f0c1a2b-0000-4000-8000-000000000001.json");
    std::fs::write(&event_path, gzip(EVENT.as_bytes())).unwrap();

    for path in [dir.path().to_owned(), dir.path().join("manifest.json")] {
        let mut config = super::tests::feed_config("misp", path);
        config.format = None;
        let mut intel = Intel::new();
        let report = load_feed(&config, &mut intel, now()).unwrap();
        assert_eq!(report.format, FeedFormat::Misp);
        assert_eq!(report.indicators, 5);
        // The event's ten attributes, the missing event and the bad UUID.
        assert_eq!(report.read, 12);
        assert_eq!(report.rejected, 5);
        let diagnostics = &report.diagnostics;
        assert_eq!(diagnostics[0].object.as_deref(), Some("../escape"));
        assert_eq!(diagnostics[0].message, "invalid event UUID in the manifest");
        assert_eq!(diagnostics[1].path, event_path);
        let missing = &diagnostics[4];
        assert_eq!(
            missing.object.as_deref(),
            Some("5f0c1a2b-0000-4000-8000-000000000002")
        );
        assert!(
            missing.message.starts_with("failed to open feed file "),
            "{}",
            missing.message
        );
    }
}

#[test]
fn misp_not_an_event() {
    let mut fixture = Fixture::new(br#"{"Events": []}"#);
    fixture.config.format = Some(FeedFormat::Misp);
    let error = fixture.load().unwrap_err();
    assert!(
        error.to_string().contains("expected a MISP event"),
        "{error}"
    );
}

#[test]
fn unknown_document_needs_format() {
    let mut fixture = Fixture::new(b"{\n  \"something\": []\n}\n");
    let error = fixture.load().unwrap_err();
    assert!(
        error.to_string().contains("unrecognised JSON document"),
        "{error}"
    );
}
