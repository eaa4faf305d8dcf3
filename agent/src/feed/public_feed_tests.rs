//! Loads of real public feeds, as published, from the shared data directory
//! next to the repository. Each test skips, with a message, when the
//! directory is absent.

use std::path::{Path, PathBuf};

use jiff::Timestamp;

use super::*;
use crate::intel::Intel;

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
    let dir = intel_dir()?;
    let config = FeedConfig {
        name: file.to_owned(),
        path: dir.join(file),
        datasets: vec!["public".to_owned()],
        ..FeedConfig::default()
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
