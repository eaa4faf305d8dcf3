//! Evaluation over records built through the intel store's API.

use super::{
    DAY, NOW_SECONDS, SightingSpec, holds, holds_at, lists, net, now, parse_ok, record, view,
};
use crate::intel::Attribute::{
    AttackerCountries, AttackerNames, Datasets, TargetCountries, TargetIndustries,
};
use crate::intel::Sighting;
use crate::rule::{AddressView, NetSet};

/// Sighting A {ddos, DE} and sighting B {botnet, FR}.
fn split_record() -> Vec<SightingSpec> {
    vec![
        SightingSpec::new("alpha")
            .with(Datasets, "ddos")
            .with(TargetCountries, "DE"),
        SightingSpec::new("beta")
            .with(Datasets, "botnet")
            .with(TargetCountries, "FR"),
    ]
}

#[test]
fn flattened_fields_merge_sightings() {
    let source =
        r#"any(ip.intel.datasets[*] == "ddos") and any(ip.intel.target_countries[*] == "FR")"#;
    assert!(holds(source, &split_record()));
}

#[test]
fn event_scope_needs_one_sighting() {
    let source = r#"any(ip.intel.events[*].dataset == "ddos" and ip.intel.events[*].target_country == "FR")"#;
    assert!(!holds(source, &split_record()));
    let source = r#"any(ip.intel.events[*].dataset == "ddos" and ip.intel.events[*].target_country == "DE")"#;
    assert!(holds(source, &split_record()));
}

#[test]
fn all_events_must_hold() {
    let each_has_country = r#"all(ip.intel.events[*].target_country in {"DE" "FR"})"#;
    assert!(holds(each_has_country, &split_record()));
    let each_is_ddos = r#"all(ip.intel.events[*].dataset == "ddos")"#;
    assert!(!holds(each_is_ddos, &split_record()));
}

#[test]
fn any_over_empty_is_false() {
    let no_datasets = [SightingSpec::new("alpha").with(AttackerNames, "x")];
    assert!(!holds(
        r#"any(ip.intel.datasets[*] != "ddos")"#,
        &no_datasets
    ));
    assert!(!holds(r#"any(ip.intel.events[*].dataset != "ddos")"#, &[]));
}

#[test]
fn all_over_empty_is_true() {
    let no_datasets = [SightingSpec::new("alpha").with(AttackerNames, "x")];
    assert!(holds(
        r#"all(ip.intel.datasets[*] == "ddos")"#,
        &no_datasets
    ));
    assert!(holds(r#"all(ip.intel.events[*].dataset == "ddos")"#, &[]));
}

#[test]
fn all_values_must_hold() {
    let record = [
        SightingSpec::new("alpha").with(Datasets, "ddos"),
        SightingSpec::new("beta").with(Datasets, "botnet"),
    ];
    assert!(holds(
        r#"all(ip.intel.datasets[*] in {"ddos" "botnet"})"#,
        &record
    ));
    assert!(!holds(r#"all(ip.intel.datasets[*] == "ddos")"#, &record));
}

#[test]
fn array_body_combines_comparisons() {
    let record = [SightingSpec::new("alpha").with(Datasets, "botnet")];
    assert!(holds(
        r#"any(ip.intel.datasets[*] == "ddos" or ip.intel.datasets[*] == "botnet")"#,
        &record
    ));
    assert!(!holds(
        r#"any(ip.intel.datasets[*] == "ddos" and ip.intel.datasets[*] == "botnet")"#,
        &record
    ));
    assert!(holds(r#"any(not ip.intel.datasets[*] == "ddos")"#, &record));
}

#[test]
fn flattened_not_equal_per_value() {
    let record = [SightingSpec::new("alpha")
        .with(Datasets, "ddos")
        .with(Datasets, "botnet")];
    // `botnet` differs from "ddos", so some element satisfies `!=`.
    assert!(holds(r#"any(ip.intel.datasets[*] != "ddos")"#, &record));
    assert!(!holds(r#"all(ip.intel.datasets[*] != "ddos")"#, &record));
}

#[test]
fn event_not_equal_means_no_value_equals() {
    let record = [SightingSpec::new("alpha")
        .with(Datasets, "ddos")
        .with(Datasets, "botnet")];
    assert!(!holds(
        r#"any(ip.intel.events[*].dataset != "ddos")"#,
        &record
    ));
    assert!(holds(
        r#"any(ip.intel.events[*].dataset != "waf")"#,
        &record
    ));
    assert!(holds(
        r#"any(ip.intel.events[*].dataset == "botnet")"#,
        &record
    ));
}

#[test]
fn event_field_without_values() {
    let record = [SightingSpec::new("alpha").with(AttackerNames, "x")];
    assert!(!holds(
        r#"any(ip.intel.events[*].dataset == "ddos")"#,
        &record
    ));
    assert!(!holds(
        r#"any(ip.intel.events[*].dataset in {"ddos"})"#,
        &record
    ));
    assert!(holds(
        r#"any(ip.intel.events[*].dataset != "ddos")"#,
        &record
    ));
}

#[test]
fn absent_score_compares_false() {
    let record = [SightingSpec::new("alpha").with(Datasets, "ddos")];
    for operator in ["==", "!=", "<", "<=", ">", ">="] {
        assert!(
            !holds(&format!("ip.intel.score {operator} 50"), &record),
            "{operator}"
        );
    }
    assert!(!holds("ip.intel.score in {50}", &record));
    assert!(holds("not ip.intel.score == 50", &record));
    assert!(!holds("any(ip.intel.events[*].score != 50)", &record));
}

#[test]
fn absent_days_compare_false() {
    let record = [SightingSpec::new("alpha")];
    assert!(!holds("ip.intel.days_since_seen >= 0", &record));
    assert!(!holds("ip.intel.days_since_seen != 3", &record));
    assert!(!holds(
        "any(ip.intel.events[*].days_since_seen >= 0)",
        &record
    ));
}

#[test]
fn score_is_highest_sighting_score() {
    let record = [
        SightingSpec::new("alpha").score(30),
        SightingSpec::new("beta"),
        SightingSpec::new("gamma").score(80),
    ];
    assert!(holds("ip.intel.score == 80", &record));
    assert!(holds("ip.intel.score > 79", &record));
    assert!(!holds("ip.intel.score < 80", &record));
    assert!(holds("any(ip.intel.events[*].score < 50)", &record));
    assert!(!holds("all(ip.intel.events[*].score < 90)", &record));
}

#[test]
fn every_number_operator() {
    let record = [SightingSpec::new("alpha").score(50)];
    let cases = [
        ("== 50", true),
        ("!= 50", false),
        ("< 50", false),
        ("<= 50", true),
        ("> 50", false),
        (">= 50", true),
        ("in {40 50}", true),
        ("in {40 60}", false),
    ];
    for (comparison, expected) in cases {
        assert_eq!(
            holds(&format!("ip.intel.score {comparison}"), &record),
            expected,
            "{comparison}"
        );
    }
}

#[test]
fn days_count_from_newest_sighting() {
    let record = [
        SightingSpec::new("alpha").days_ago(10),
        SightingSpec::new("beta").days_ago(3),
        SightingSpec::new("gamma"),
    ];
    assert!(holds("ip.intel.days_since_seen == 3", &record));
    assert!(holds(
        "any(ip.intel.events[*].days_since_seen == 10)",
        &record
    ));
}

#[test]
fn days_round_down() {
    let mut almost_two = SightingSpec::new("alpha");
    almost_two.age_seconds = Some(2 * DAY - 1);
    assert!(holds("ip.intel.days_since_seen == 1", &[almost_two]));
}

#[test]
fn future_last_seen_counts_as_zero_days() {
    let mut ahead = SightingSpec::new("alpha");
    ahead.age_seconds = Some(-5 * DAY);
    assert!(holds("ip.intel.days_since_seen == 0", &[ahead]));
}

#[test]
fn days_follow_the_view_time() {
    let (intel, sightings) = record(&[SightingSpec::new("alpha").days_ago(1)]);
    let expr = parse_ok("ip.intel.days_since_seen <= 7");
    let mut view = view(&intel, &sightings, "192.0.2.1");
    assert!(expr.eval(&view));
    view.now = jiff::Timestamp::from_second(NOW_SECONDS + 7 * DAY).unwrap();
    assert!(!expr.eval(&view));
}

#[test]
fn feeds_field_names_feeds() {
    let record = split_record();
    assert!(holds(r#"any(ip.intel.feeds[*] == "beta")"#, &record));
    assert!(!holds(r#"any(ip.intel.feeds[*] == "gamma")"#, &record));
    assert!(holds(
        r#"any(ip.intel.events[*].feed == "alpha" and ip.intel.events[*].dataset == "ddos")"#,
        &record
    ));
    assert!(!holds(
        r#"any(ip.intel.events[*].feed == "alpha" and ip.intel.events[*].dataset == "botnet")"#,
        &record
    ));
}

#[test]
fn every_attribute_field() {
    let record = [SightingSpec::new("alpha")
        .with(AttackerNames, "APT28")
        .with(AttackerCountries, "RU")
        .with(TargetCountries, "FR")
        .with(TargetIndustries, "Banking")
        .with(Datasets, "ddos")];
    let sources = [
        r#"any(cf.intel.ip.attacker_names[*] == "APT28")"#,
        r#"any(cf.intel.ip.attacker_countries[*] == "RU")"#,
        r#"any(cf.intel.ip.target_countries[*] == "FR")"#,
        r#"any(cf.intel.ip.target_industries[*] in {"Banking" "Healthcare"})"#,
        r#"any(cf.intel.ip.datasets[*] == "ddos")"#,
        r#"any(ip.intel.events[*].attacker_name == "APT28" and ip.intel.events[*].attacker_country == "RU" and ip.intel.events[*].target_industry == "Banking")"#,
    ];
    for source in sources {
        assert!(holds(source, &record), "{source}");
    }
}

#[test]
fn values_are_case_sensitive() {
    let record = [SightingSpec::new("alpha").with(Datasets, "ddos")];
    assert!(!holds(r#"any(ip.intel.datasets[*] == "DDoS")"#, &record));
}

#[test]
fn literal_unknown_to_intel() {
    let record = [SightingSpec::new("alpha").with(Datasets, "ddos")];
    assert!(!holds(
        r#"any(ip.intel.datasets[*] == "never-loaded")"#,
        &record
    ));
    assert!(holds(
        r#"any(ip.intel.datasets[*] != "never-loaded")"#,
        &record
    ));
}

#[test]
fn connectives_evaluate() {
    let record = [SightingSpec::new("alpha").score(50)];
    let cases = [
        ("ip.intel.score > 10 and ip.intel.score > 60", false),
        ("ip.intel.score > 10 or ip.intel.score > 60", true),
        ("ip.intel.score > 10 xor ip.intel.score > 60", true),
        ("ip.intel.score > 10 xor ip.intel.score > 20", false),
        (
            "ip.intel.score > 10 xor ip.intel.score > 20 xor ip.intel.score > 30",
            true,
        ),
        ("not ip.intel.score > 60", true),
        ("!(ip.intel.score > 10 && ip.intel.score > 60)", true),
    ];
    for (source, expected) in cases {
        assert_eq!(holds(source, &record), expected, "{source}");
    }
}

#[test]
fn source_matches_sets_and_lists() {
    let cases = [
        ("ip.src in {192.0.2.0/24}", "192.0.2.200", true),
        ("ip.src in {192.0.2.0/24}", "192.0.3.1", false),
        ("ip.src in $office", "2001:db8::5", true),
        ("ip.src in $office", "2001:db9::5", false),
        ("ip.src in $empty", "192.0.2.1", false),
        ("ip.src == 192.0.2.1", "192.0.2.1", true),
        ("ip.src == 192.0.2.1", "192.0.2.2", false),
        ("ip.src != 192.0.2.1", "192.0.2.2", true),
        ("ip.src in {192.0.2.0/24}", "::ffff:192.0.2.9", true),
        ("ip.src in {::ffff:192.0.2.0/120}", "192.0.2.9", true),
        ("ip.src in {0.0.0.0/0}", "2001:db8::1", false),
    ];
    for (source, address, expected) in cases {
        assert_eq!(
            holds_at(source, &[], address),
            expected,
            "{source} at {address}"
        );
    }
}

#[test]
fn long_net_set_matches_like_short() {
    let mut nets: Vec<_> = (0..40u8).map(|i| net(&format!("10.{i}.0.0/16"))).collect();
    nets.push(net("172.16.5.0/24"));
    nets.push(net("2001:db8:1::/48"));
    nets.push(net("203.0.113.9/32"));
    let set = NetSet::new(nets.clone());
    for address in [
        "10.3.4.5",
        "10.40.0.1",
        "172.16.5.255",
        "172.16.6.1",
        "2001:db8:1:2::1",
        "2001:db8:2::1",
        "203.0.113.9",
        "203.0.113.10",
    ] {
        let address = address.parse().unwrap();
        let expected = nets.iter().any(|net| net.contains(&address));
        assert_eq!(set.contains(address), expected, "{address}");
    }
}

#[test]
fn expr_eval_equals_eval_with() {
    let (intel, sightings) = record(&split_record());
    let expr = parse_ok(r#"any(ip.intel.datasets[*] == "ddos") and not ip.src in $office"#);
    let view = AddressView {
        intel: &intel,
        address: "192.0.2.1".parse().unwrap(),
        sightings: &sightings,
        now: now(),
    };
    assert!(!expr.eval(&view));
    assert!(!expr.eval_with(&mut |predicate| predicate.eval(&view)));
    let _ = lists();
}

#[test]
fn never_seen_sighting_constant() {
    let (_, sightings) = record(&[SightingSpec::new("alpha")]);
    assert_eq!(sightings[0].last_seen, Sighting::NEVER);
}
