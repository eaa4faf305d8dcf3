//! Loads of real public feeds, as published, from the shared data directory
//! next to the repository. Each test skips, with a message, when the
//! directory is absent.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::*;
use crate::intel::{Attribute, Intel};

fn intel_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/intel");
    if dir.is_dir() {
        return Some(dir);
    }
    eprintln!(
        "SKIPPED: public feed files not found at {}; these tests need the shared data directory",
        dir.display()
    );
    None
}

/// Loads one file of the shared directory as a feed of its own.
fn load(file: &str) -> Option<(Intel, FeedReport)> {
    load_with(file, FeedConfig::default())
}

/// Loads one file of the shared directory with the settings of `config`.
fn load_with(file: &str, config: FeedConfig) -> Option<(Intel, FeedReport)> {
    let dir = intel_dir()?;
    let config = FeedConfig {
        name: file.to_owned(),
        path: dir.join(file),
        datasets: vec!["public".to_owned()],
        ..config
    };
    let mut intel = Intel::new();
    let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
    let report = load_feed(&config, &mut intel, now).unwrap();
    Some((intel, report))
}

fn contains(intel: &Intel, indicator: &str) -> bool {
    intel.sightings(&indicator.parse().unwrap()).is_some()
}

fn assert_clean(report: &FeedReport) {
    assert_eq!(report.format, FeedFormat::List);
    assert_eq!(report.rejected, 0, "{:#?}", report.diagnostics);
    assert_eq!(report.normalised, 0, "{:#?}", report.diagnostics);
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
}

#[test]
fn spamhaus_drop_txt() {
    let Some((intel, report)) = load("drop.txt") else {
        return;
    };
    assert_clean(&report);
    assert_eq!(report.read, 1699);
    // 62.60.226.0/24 is listed twice, under SBL697779 and SBL671779. The SBL
    // ids are comments, so the second line merges into the first.
    assert_eq!(report.merged, 1);
    assert_eq!(report.indicators, 1698);
    assert_eq!(intel.indicator_count(), 1698);
    assert!(contains(&intel, "1.10.16.0/20"));
    assert!(contains(&intel, "62.60.226.0/24"));
    assert!(contains(&intel, "223.254.0.0/16"));
}

#[test]
fn spamhaus_dropv6_txt() {
    let Some((intel, report)) = load("dropv6.txt") else {
        return;
    };
    assert_clean(&report);
    assert_eq!(report.read, 91);
    assert_eq!(report.indicators, 91);
    assert!(contains(&intel, "2001:678:254::/48"));
}

#[test]
fn firehol_level1_netset() {
    let Some((intel, report)) = load("firehol_level1.netset") else {
        return;
    };
    // All 2511 lines load: every one is a prefix from /3 to /24 with no host
    // bits set. The list includes bogons such as 0.0.0.0/8, 10.0.0.0/8 and
    // 224.0.0.0/3, which are valid prefixes, and none is a /0 or the
    // unspecified address itself.
    assert_clean(&report);
    assert_eq!(report.read, 2511);
    assert_eq!(report.indicators, 2511);
    assert_eq!(report.merged, 0);
    assert!(contains(&intel, "0.0.0.0/8"));
    assert!(contains(&intel, "10.0.0.0/8"));
    assert!(contains(&intel, "224.0.0.0/3"));
    assert!(contains(&intel, "1.10.16.0/20"));
}

#[test]
fn firehol_spamhaus_drop_netset() {
    let Some((intel, report)) = load("spamhaus_drop.netset") else {
        return;
    };
    assert_clean(&report);
    assert_eq!(report.read, 986);
    assert_eq!(report.indicators, 986);
    assert!(contains(&intel, "1.10.16.0/20"));
}

#[test]
fn tor_exits_with_expanded_ipv6() {
    let Some((intel, report)) = load("tor-exit-nodes.lst") else {
        return;
    };
    assert_clean(&report);
    assert_eq!(report.read, 1746);
    assert_eq!(report.indicators, 1746);
    let ipv6 = intel
        .indicators()
        .filter(|(net, _)| matches!(net, ipnet::IpNet::V6(_)));
    assert_eq!(ipv6.count(), 619);
    // Written as 2001:0470:0001:0908:0000:0000:0000:9001 in the file.
    assert!(contains(&intel, "2001:470:1:908::9001/128"));
}

#[test]
fn firehol_feodo_empty() {
    let Some((intel, report)) = load("feodo.ipset") else {
        return;
    };
    assert_clean(&report);
    assert_eq!(report.read, 0);
    assert_eq!(report.indicators, 0);
    assert_eq!(intel.indicator_count(), 0);
}

/// The sorted text of `attribute` in the first sighting of `indicator`.
fn values(intel: &Intel, indicator: &str, attribute: Attribute) -> Vec<String> {
    let sighting = intel.sightings(&indicator.parse().unwrap()).unwrap()[0];
    let profile = intel.profile(sighting.profile);
    let mut values: Vec<String> = profile
        .values(attribute)
        .iter()
        .map(|symbol| intel.resolve(*symbol).to_owned())
        .collect();
    values.sort();
    values
}

fn score(intel: &Intel, indicator: &str) -> Option<u8> {
    intel.sightings(&indicator.parse().unwrap()).unwrap()[0].score()
}

#[test]
fn ipsum_counts_become_scores() {
    let Some((intel, report)) = load("ipsum.txt") else {
        return;
    };
    // 120430 lines of `address<TAB>count`, each address once, no comments
    // past the header.
    assert_clean(&report);
    assert_eq!(report.read, 120430);
    assert_eq!(report.indicators, 120430);
    // Counts run from 1 to 10 lists; ten times the count is the score.
    assert_eq!(score(&intel, "77.90.185.20/32"), Some(100));
    assert_eq!(score(&intel, "162.251.62.103/32"), Some(10));
}

#[test]
fn feodo_ipblocklist_csv() {
    let config = FeedConfig {
        columns: CsvColumns {
            indicator: Some("dst_ip".to_owned()),
            attacker_names: Some("malware".to_owned()),
            last_seen: Some("last_online".to_owned()),
            ..CsvColumns::default()
        },
        ..FeedConfig::default()
    };
    let Some((intel, report)) = load_with("ipblocklist.csv", config) else {
        return;
    };
    // 28 rows after 8 comment lines and the quoted header; the closing
    // `# END 28 entries` line is a comment too.
    assert_eq!(report.format, FeedFormat::Csv);
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    assert_eq!(report.read, 28);
    assert_eq!(report.indicators, 28);
    assert_eq!(
        values(&intel, "192.9.135.73/32", Attribute::AttackerNames),
        ["Pikabot"]
    );
    let sighting = intel
        .sightings(&"192.9.135.73/32".parse().unwrap())
        .unwrap()[0];
    assert_eq!(
        sighting.last_seen(),
        Some("2024-04-01T00:00:00Z".parse().unwrap())
    );
}

#[test]
fn dshield_block_txt_as_csv() {
    let config = FeedConfig {
        header: Some(false),
        delimiter: Some('\t'),
        columns: CsvColumns {
            indicator: Some("1".to_owned()),
            range_end: Some("2".to_owned()),
            attacker_countries: Some("6".to_owned()),
            ..CsvColumns::default()
        },
        ..FeedConfig::default()
    };
    let Some((intel, report)) = load_with("dshield.txt", config) else {
        return;
    };
    // 20 tab-separated rows, each a start-end range of exactly one /24.
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    assert_eq!(report.read, 20);
    assert_eq!(report.indicators, 20);
    assert_eq!(
        values(&intel, "151.243.11.0/24", Attribute::AttackerCountries),
        ["IR"]
    );
    // The country column is `-` where DShield does not know it.
    assert!(values(&intel, "66.132.186.0/24", Attribute::AttackerCountries).is_empty());
}

#[test]
fn maltrail_lazarus_trails() {
    let config = FeedConfig {
        skip_non_ip: true,
        attacker_names: vec!["Lazarus".to_owned()],
        ..FeedConfig::default()
    };
    let Some((intel, report)) = load_with("maltrail-apt/apt_lazarus.txt", config) else {
        return;
    };
    // 5573 data lines: 4 bare IPv4 addresses and 871 `IPv4:port` lines
    // load; 4529 domains, 166 URLs and 3 `domain:port/path` lines are
    // skipped. Many addresses appear with several ports, so 301 lines merge
    // into the 574 distinct addresses.
    assert_eq!(report.read, 5573);
    assert_eq!(report.rejected, 0, "{:#?}", report.diagnostics);
    assert_eq!(report.skipped, 4698);
    assert_eq!(report.merged, 301);
    assert_eq!(report.indicators, 574);
    assert_eq!(
        report.sightings + report.merged + report.skipped,
        report.read
    );
    let (address, _) = intel.indicators().next().unwrap();
    assert_eq!(
        values(&intel, &address.to_string(), Attribute::AttackerNames),
        ["Lazarus"]
    );
}

#[test]
fn maltrail_garbage_still_rejected() {
    let config = FeedConfig {
        skip_non_ip: true,
        ..FeedConfig::default()
    };
    let Some((_, report)) = load_with("maltrail-apt/apt_unclassified.txt", config) else {
        return;
    };
    // One line, `31.76.252.47:443:443`, is neither an address, an address
    // with a port, nor a name.
    assert_eq!(report.rejected, 1);
    assert_eq!(report.diagnostics[0].line, 2425);
    assert_eq!(report.read, 1545);
}

#[test]
fn stix_apt1_bundle() {
    let Some((intel, report)) = load("apt1.json") else {
        return;
    };
    // 12 indicators: 4 with `[ipv4-addr:value = 'a.b.c.d/15']` patterns
    // load, 8 about domain names are skipped. The address indicators only
    // `indicates` a malware object, so they carry no attacker name.
    assert_eq!(report.format, FeedFormat::Stix2);
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    assert_eq!(report.read, 12);
    assert_eq!(report.skipped, 8);
    assert_eq!(report.indicators, 4);
    for prefix in [
        "223.166.0.0/15",
        "58.246.0.0/15",
        "112.64.0.0/15",
        "139.226.0.0/15",
    ] {
        assert!(contains(&intel, prefix), "{prefix}");
    }
    let sighting = intel.sightings(&"58.246.0.0/15".parse().unwrap()).unwrap()[0];
    assert_eq!(
        sighting.last_seen(),
        Some("2015-05-15T09:12:16Z".parse().unwrap())
    );
}

#[test]
fn stix_solarphoenix_campaign_joins() {
    let Some((intel, report)) = load("solarphoenix.json") else {
        return;
    };
    // A STIX 2.0 bundle of 720 indicators: 55 with IPv4 patterns load, the
    // 665 domain and hash indicators are skipped. Every indicator
    // `indicates` the campaign, which is `attributed-to` the intrusion set
    // Solar Phoenix and `targets` an identity with four sectors and ten
    // countries.
    assert_eq!(report.format, FeedFormat::Stix2);
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    assert_eq!(report.read, 720);
    assert_eq!(report.skipped, 665);
    assert_eq!(report.indicators, 55);
    assert_eq!(
        values(&intel, "3.87.182.149/32", Attribute::AttackerNames),
        ["Solar Phoenix"]
    );
    assert_eq!(
        values(&intel, "3.87.182.149/32", Attribute::TargetIndustries),
        [
            "communications",
            "government-national",
            "technology",
            "telecommunications"
        ]
    );
    assert_eq!(
        values(&intel, "8.18.144.136/32", Attribute::TargetCountries),
        ["AE", "BE", "CA", "DE", "ES", "GB", "HK", "IL", "MX", "US"]
    );
    assert_eq!(
        values(&intel, "8.18.144.136/32", Attribute::Datasets),
        ["public"]
    );
}

#[test]
fn stix_c2_with_coa_and_infrastructure() {
    let Some((intel, report)) = load("indicators-for-C2-with-COA.json") else {
        return;
    };
    // Two indicators: `[ipv4-addr:value = '10.0.0.0']` (a /32, not the
    // 10.0.0.0/8 network) loads, the file hash is skipped.
    assert_eq!(report.read, 2);
    assert_eq!(report.skipped, 1);
    assert_eq!(report.indicators, 1);
    assert!(contains(&intel, "10.0.0.0/32"));

    let Some((intel, report)) = load("infrastructure.json") else {
        return;
    };
    // No indicators; the one ipv4-addr object loads, and the domain-name
    // object is not an address record.
    assert_eq!(report.read, 1);
    assert_eq!(report.indicators, 1);
    assert!(contains(&intel, "198.51.100.3/32"));
}

#[test]
fn misp_feed_directory() {
    let Some((intel, report)) = load("misp-feed") else {
        return;
    };
    // The manifest lists 3 events with 508, 155 and 201 `ip-src`
    // attributes: 864 records. The last two events repeat addresses of the
    // first, so 508 distinct addresses remain, each with a sighting per
    // event (the event's title is a dataset).
    assert_eq!(report.format, FeedFormat::Misp);
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    assert_eq!(report.read, 864);
    assert_eq!(report.sightings, 864);
    assert_eq!(report.indicators, 508);
    assert_eq!(intel.indicator_count(), 508);
    assert_eq!(
        values(&intel, "4.204.200.32/32", Attribute::Datasets),
        ["CrowdSec rolling feed (7 jours)", "public"]
    );
    // The attribute's own timestamp, 2026-03-25T20:07:11Z.
    let sighting = intel
        .sightings(&"4.204.200.32/32".parse().unwrap())
        .unwrap()[0];
    assert_eq!(sighting.last_seen, 1774469231);
}
