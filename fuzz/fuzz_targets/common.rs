//! Shared by the feed fuzz targets: parses bytes as one format and checks
//! the invariants every load must keep.

use intelwall::config::{FeedConfig, FeedFormat};
use intelwall::feed::{CsvColumns, FeedError, FeedReport, parse_bytes};
use intelwall::intel::Intel;

/// Parses `bytes` as `format` with the feed options a fuzzer should reach:
/// trails, ranges of any width and, for CSV, a header naming every field.
pub fn parse(format: FeedFormat, bytes: &[u8]) {
    let config = FeedConfig {
        name: "fuzz".to_owned(),
        path: "fuzz-input".into(),
        format: Some(format),
        skip_non_ip: true,
        max_range_ipv4: Some(0),
        max_range_ipv6: Some(0),
        columns: CsvColumns {
            indicator: Some("indicator".to_owned()),
            range_end: Some("range_end".to_owned()),
            score: Some("score".to_owned()),
            last_seen: Some("last_seen".to_owned()),
            attacker_names: Some("attacker_names".to_owned()),
            datasets: Some("datasets".to_owned()),
            ..CsvColumns::default()
        },
        ..FeedConfig::default()
    };
    let mut intel = Intel::new();
    let now = jiff::Timestamp::from_second(1_767_225_600).unwrap();
    match parse_bytes(&config, bytes, &mut intel, now) {
        Ok(report) => check(&report, &intel),
        Err(FeedError::NothingLoaded { report, .. } | FeedError::Strict { report, .. }) => {
            check(&report, &intel)
        }
        Err(_) => {}
    }
}

fn check(report: &FeedReport, intel: &Intel) {
    assert!(report.rejected + report.skipped <= report.read, "{report}");
    assert!(report.indicators <= report.sightings, "{report}");
    assert_eq!(
        report.indicators as usize,
        intel.indicator_count(),
        "{report}"
    );
}
