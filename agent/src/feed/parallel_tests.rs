//! A feed loaded in parts must give what a load on one core gives: the
//! same indicators and sightings, counts, and diagnostics at the same lines.

use std::fmt::Write as _;

use super::tests::{Fixture, now};
use super::*;
use crate::intel::Attribute;

/// Every sighting of the store as text, sorted: profile ids differ between
/// the two loads, the values they stand for must not.
fn dump(intel: &Intel) -> Vec<String> {
    let mut lines = Vec::new();
    for (net, sightings) in intel.indicators() {
        for sighting in sightings {
            let profile = intel.profile(sighting.profile);
            let mut line = format!(
                "{net} {} seen={} score={}",
                intel.feed(sighting.feed).name,
                sighting.last_seen,
                sighting.score
            );
            for attribute in Attribute::ALL {
                let mut values: Vec<&str> = profile
                    .values(attribute)
                    .iter()
                    .map(|symbol| intel.resolve(*symbol))
                    .collect();
                values.sort_unstable();
                let _ = write!(line, " {}={}", attribute.key(), values.join(","));
            }
            lines.push(line);
        }
    }
    lines.sort();
    lines
}

fn load_in_parts(fixture: &Fixture, format: FeedFormat, parts: usize) -> (Intel, FeedReport) {
    let mut intel = Intel::new();
    let size = std::fs::metadata(&fixture.config.path).unwrap().len();
    let report = parallel::load(&fixture.config, format, size, parts, &mut intel, now()).unwrap();
    (intel, report)
}

fn assert_same(fixture: &mut Fixture, format: FeedFormat) {
    fixture.config.format = Some(format);
    let whole = fixture.load().unwrap();
    for parts in [2, 3, 7, 64] {
        let (intel, report) = load_in_parts(fixture, format, parts);
        assert_eq!(dump(&intel), dump(&fixture.intel), "{parts} parts");
        let counts = |r: &FeedReport| {
            (
                r.read,
                r.indicators,
                r.sightings,
                r.rejected,
                r.skipped,
                r.normalised,
                r.merged,
            )
        };
        assert_eq!(counts(&report), counts(&whole), "{parts} parts");
        assert_eq!(report.diagnostics, whole.diagnostics, "{parts} parts");
    }
}

#[test]
fn jsonl_in_parts_matches_one_core() {
    let mut text = String::new();
    for line in 1..=400u32 {
        let address = format!("198.51.{}.{}", line / 200, line % 200 + 1);
        let entry = match line {
            // Bad lines, an unknown key in two parts, a prefix with host
            // bits, and the same sighting at both ends of the file.
            50 | 333 => "{\"indicator\": \"not an address\"}".to_owned(),
            7 | 301 => format!("{{\"indicator\": \"{address}\", \"colour\": \"red\"}}"),
            120 => "{\"indicator\": \"203.0.113.9/24\", \"datasets\": [\"scan\"]}".to_owned(),
            3 | 399 => "{\"indicator\": \"192.0.2.1\", \"datasets\": [\"c2\"], \"last_seen\": \"2025-12-01T00:00:00Z\"}".to_owned(),
            _ => format!(
                "{{\"indicator\": \"{address}\", \"datasets\": [\"d{}\"], \"target_countries\": [\"FR\", \"DE\"], \"score\": {}}}",
                line % 5,
                line % 101
            ),
        };
        text.push_str(&entry);
        text.push('\n');
    }
    text.push_str("{\"indicator\": \"2001:db8::1\", \"attacker_names\": [\"APT1\"]}");
    let mut fixture = Fixture::named("feed.jsonl", text.as_bytes());
    assert_same(&mut fixture, FeedFormat::Jsonl);
}

#[test]
fn list_in_parts_matches_one_core() {
    let mut text = String::from("\u{feff}# a list with a byte-order mark\r\n");
    for line in 0..300u32 {
        match line {
            40 => text.push_str("999.1.1.1\r\n"),
            41 => text.push_str("10.1.2.3/8 ; host bits\r\n"),
            _ => {
                let _ = write!(text, "203.0.{}.{}\r\n", line / 250, line % 250);
            }
        }
    }
    text.push_str("203.0.0.5\n");
    let mut fixture = Fixture::named("feed.txt", text.as_bytes());
    fixture.config.datasets = vec!["drop".to_owned()];
    assert_same(&mut fixture, FeedFormat::List);
}

#[test]
fn distinct_mixes_in_parts_merge_duplicates() {
    // Every line has its own attribute mix, so each half of the file has
    // more profiles than a part's store deduplicates when it joins. The
    // same line near both ends must still merge into one sighting.
    let lines = 2 * crate::intel::IMPORT_DEDUP_LIMIT + 1000;
    let duplicate = "{\"indicator\": \"192.0.2.1\", \"attacker_names\": [\"twice\"], \"last_seen\": \"2025-12-01T00:00:00Z\"}\n";
    let mut text = String::with_capacity(lines * 100);
    for line in 0..lines {
        if line == 10 || line == lines - 10 {
            text.push_str(duplicate);
            continue;
        }
        let _ = writeln!(
            text,
            "{{\"indicator\": \"10.{}.{}.{}\", \"attacker_names\": [\"actor {line}\"]}}",
            line >> 16,
            (line >> 8) & 0xff,
            line & 0xff
        );
    }
    let fixture = Fixture::named("feed.jsonl", text.as_bytes());
    let (one_intel, one_report) = load_in_parts(&fixture, FeedFormat::Jsonl, 1);
    assert_eq!(
        one_report.merged, 1,
        "the duplicate line merges on one core"
    );
    let (intel, report) = load_in_parts(&fixture, FeedFormat::Jsonl, 2);
    assert_eq!(report.merged, 1, "the duplicate line merges across parts");
    assert_eq!(report.sightings, one_report.sightings);
    assert_eq!(dump(&intel), dump(&one_intel));
}
