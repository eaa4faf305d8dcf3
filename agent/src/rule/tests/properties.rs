//! Property tests over random expressions and random records.

use proptest::prelude::*;

use super::{SightingSpec, lists, parse_ok, record, view};
use crate::intel::Attribute;
use crate::rule::NetSet;

const DATASETS: [&str; 4] = ["ddos", "botnet", "waf", "scan"];
const COUNTRIES: [&str; 3] = ["FR", "DE", "US"];
const FEEDS: [&str; 3] = ["alpha", "beta", "gamma"];
const NETS: [&str; 4] = ["192.0.2.0/24", "192.0.2.7", "2001:db8::/32", "10.0.0.0/8"];
const ADDRESSES: [&str; 4] = ["192.0.2.7", "192.0.2.8", "2001:db8::1", "198.51.100.1"];

fn pick(values: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(values)
}

fn quoted(value: &str) -> String {
    format!("\"{value}\"")
}

/// `{"a" "b"}` from one to three values of `pool`.
fn string_set(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::sample::subsequence(pool, 1..=3).prop_map(|values| {
        format!(
            "{{{}}}",
            values
                .iter()
                .map(|v| quoted(v))
                .collect::<Vec<_>>()
                .join(" ")
        )
    })
}

/// Generates a comparison of `subject` with a string from `pool`.
fn string_comparison(
    subject: String,
    pool: &'static [&'static str],
) -> impl Strategy<Value = String> {
    prop_oneof![
        (pick(pool), prop_oneof![Just("=="), Just("!=")]).prop_map({
            let subject = subject.clone();
            move |(value, operator)| format!("{subject} {operator} {}", quoted(value))
        }),
        string_set(pool).prop_map(move |set| format!("{subject} in {set}")),
    ]
}

fn number_comparison(subject: &'static str, max: u64) -> impl Strategy<Value = String> {
    const OPERATORS: [&str; 6] = ["==", "!=", "<", "<=", ">", ">="];
    prop_oneof![
        (pick(&OPERATORS), 0..=max)
            .prop_map(move |(operator, value)| format!("{subject} {operator} {value}")),
        proptest::collection::vec(0..=max, 1..3).prop_map(move |values| {
            let values: Vec<String> = values.iter().map(u64::to_string).collect();
            format!("{subject} in {{{}}}", values.join(" "))
        }),
    ]
}

/// Generates a boolean combination of leaves, with `not` and parentheses.
fn combine(leaf: BoxedStrategy<String>, depth: u32) -> BoxedStrategy<String> {
    leaf.prop_recursive(depth, 8, 3, |inner| {
        prop_oneof![
            inner.clone().prop_map(|a| format!("not {a}")),
            inner.clone().prop_map(|a| format!("({a})")),
            (
                inner.clone(),
                pick(&["and", "or", "xor", "&&", "||", "^^"]),
                inner
            )
                .prop_map(|(a, connective, b)| format!("{a} {connective} {b}")),
        ]
    })
    .boxed()
}

fn quantifier() -> impl Strategy<Value = &'static str> {
    pick(&["any", "all"])
}

fn array_predicate() -> impl Strategy<Value = String> {
    let fields: [(&'static str, &'static [&'static str]); 4] = [
        ("ip.intel.datasets", &DATASETS),
        ("cf.intel.ip.target_countries", &COUNTRIES),
        ("ip.intel.attacker_countries", &COUNTRIES),
        ("ip.intel.feeds", &FEEDS),
    ];
    (quantifier(), proptest::sample::select(fields.to_vec())).prop_flat_map(
        |(quantifier, (field, pool))| {
            let leaf = string_comparison(format!("{field}[*]"), pool).boxed();
            combine(leaf, 2).prop_map(move |body| format!("{quantifier}({body})"))
        },
    )
}

fn event_predicate() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        string_comparison("ip.intel.events[*].dataset".to_owned(), &DATASETS),
        string_comparison("ip.intel.events[*].target_country".to_owned(), &COUNTRIES),
        string_comparison("ip.intel.events[*].feed".to_owned(), &FEEDS),
        number_comparison("ip.intel.events[*].score", 100),
        number_comparison("ip.intel.events[*].days_since_seen", 10),
    ]
    .boxed();
    (quantifier(), combine(leaf, 2)).prop_map(|(quantifier, body)| format!("{quantifier}({body})"))
}

fn source_predicate() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ip.src in $office".to_owned()),
        proptest::sample::subsequence(&NETS, 1..=3)
            .prop_map(|nets| format!("ip.src in {{{}}}", nets.join(" "))),
        (pick(&["==", "!="]), pick(&ADDRESSES))
            .prop_map(|(operator, address)| format!("ip.src {operator} {address}")),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        array_predicate(),
        event_predicate(),
        number_comparison("ip.intel.score", 100),
        number_comparison("ip.intel.days_since_seen", 10),
        source_predicate(),
    ]
    .boxed();
    combine(atom, 3)
}

fn sighting() -> impl Strategy<Value = SightingSpec> {
    (
        pick(&FEEDS),
        proptest::sample::subsequence(&DATASETS, 0..=2),
        proptest::sample::subsequence(&COUNTRIES, 0..=2),
        proptest::sample::subsequence(&COUNTRIES, 0..=1),
        proptest::option::of(0u8..=100),
        proptest::option::of(-86_400i64..11 * 86_400),
    )
        .prop_map(|(feed, datasets, targets, attackers, score, age)| {
            let mut spec = SightingSpec::new(feed);
            for value in datasets {
                spec = spec.with(Attribute::Datasets, value);
            }
            for value in targets {
                spec = spec.with(Attribute::TargetCountries, value);
            }
            for value in attackers {
                spec = spec.with(Attribute::AttackerCountries, value);
            }
            spec.score = score;
            spec.age_seconds = age;
            spec
        })
}

proptest! {
    #[test]
    fn eval_equals_eval_with(
        source in expression(),
        specs in proptest::collection::vec(sighting(), 0..4),
        address in pick(&ADDRESSES),
    ) {
        let expr = parse_ok(&source);
        let (intel, sightings) = record(&specs);
        let view = view(&intel, &sightings, address);
        let by_predicate = expr.eval_with(&mut |predicate| predicate.eval(&view));
        prop_assert_eq!(expr.eval(&view), by_predicate, "{}", source);
    }

    #[test]
    fn canonical_form_round_trips(source in expression()) {
        let expr = parse_ok(&source);
        let canonical = expr.to_string();
        let reparsed = crate::rule::parse(&canonical, &lists()).map_err(|error| error.message);
        prop_assert_eq!(reparsed.clone(), Ok(expr), "`{}` printed as `{}`", source, canonical);
        prop_assert_eq!(reparsed.unwrap().to_string(), canonical);
    }

    #[test]
    fn net_set_matches_linear_scan(
        nets in proptest::collection::vec((any::<u32>(), 8u8..=32), 0..40),
        probes in proptest::collection::vec(any::<u32>(), 1..20),
    ) {
        let nets: Vec<ipnet::IpNet> = nets
            .into_iter()
            .map(|(address, length)| {
                ipnet::Ipv4Net::new(std::net::Ipv4Addr::from(address), length).unwrap().trunc().into()
            })
            .collect();
        let set = NetSet::new(nets.clone());
        for probe in probes {
            // Probe inside the first net as well as at random.
            for address in [std::net::Ipv4Addr::from(probe), nets.first().map_or(probe.into(), |net| match net {
                ipnet::IpNet::V4(v4) => v4.network(),
                ipnet::IpNet::V6(_) => probe.into(),
            })] {
                let address = std::net::IpAddr::V4(address);
                let expected = nets.iter().any(|net| net.contains(&address));
                prop_assert_eq!(set.contains(address), expected, "{}", address);
            }
        }
    }
}
