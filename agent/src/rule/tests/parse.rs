//! Parsing: precedence, operators, aliases, canonical forms and the
//! predicate accessors.

use super::{lists, net, parse_ok};
use crate::intel::Attribute;
use crate::rule::{NumberField, Predicate, TextField, parse};

const A: &str = "ip.intel.score > 1";
const B: &str = "ip.intel.score > 2";
const C: &str = "ip.intel.score > 3";
const D: &str = "ip.intel.score > 4";

/// Replaces the letters A to D, standing alone, with distinct predicates.
fn expand(template: &str) -> String {
    template
        .split(' ')
        .map(|word| {
            let (prefix, rest) =
                word.split_at(word.len() - word.trim_start_matches(['(', '!']).len());
            let core = rest.trim_end_matches(')');
            let suffix = &rest[core.len()..];
            let core = match core {
                "A" => A,
                "B" => B,
                "C" => C,
                "D" => D,
                other => other,
            };
            format!("{prefix}{core}{suffix}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn assert_same(left: &str, right: &str) {
    let (left, right) = (expand(left), expand(right));
    assert_eq!(
        parse_ok(&left),
        parse_ok(&right),
        "`{left}` and `{right}` differ"
    );
}

fn assert_differ(left: &str, right: &str) {
    let (left, right) = (expand(left), expand(right));
    assert_ne!(
        parse_ok(&left),
        parse_ok(&right),
        "`{left}` and `{right}` are equal"
    );
}

#[test]
fn and_binds_tighter_than_or() {
    assert_same("A or B and C", "A or (B and C)");
    assert_differ("A or B and C", "(A or B) and C");
}

#[test]
fn and_binds_tighter_than_xor() {
    assert_same("A xor B and C", "A xor (B and C)");
    assert_differ("A xor B and C", "(A xor B) and C");
}

#[test]
fn xor_binds_tighter_than_or() {
    assert_same("A or B xor C", "A or (B xor C)");
    assert_differ("A or B xor C", "(A or B) xor C");
}

#[test]
fn not_binds_tighter_than_and() {
    assert_same("not A and B", "(not A) and B");
    assert_differ("not A and B", "not (A and B)");
}

#[test]
fn symbols_match_keywords() {
    assert_same("!A && B || C ^^ D", "not A and B or C xor D");
}

#[test]
fn double_negation_is_kept() {
    assert_same("not not A", "not (not A)");
    assert_differ("not not A", "A");
}

#[test]
fn nested_parentheses_flatten() {
    assert_same("((A and (B and C)))", "A and B and C");
    assert_same("A or (B or (C or D))", "A or B or C or D");
}

#[test]
fn canonical_form_of_precedence() {
    let cases = [
        ("A or B and C", "A or B and C"),
        ("(A or B) and C", "(A or B) and C"),
        ("not (A xor B)", "not (A xor B)"),
        ("!A && (B || C) ^^ D", "not A and (B or C) xor D"),
    ];
    for (source, canonical) in cases {
        assert_eq!(
            parse_ok(&expand(source)).to_string(),
            expand(canonical),
            "{source}"
        );
    }
}

#[test]
fn every_operator_parses() {
    let sources = [
        r#"any(ip.intel.datasets[*] == "ddos")"#,
        r#"any(ip.intel.datasets[*] != "ddos")"#,
        r#"any(ip.intel.datasets[*] in {"ddos" "botnet"})"#,
        r#"all(ip.intel.datasets[*] == "ddos")"#,
        r#"all(ip.intel.datasets[*] != "ddos")"#,
        r#"all(ip.intel.datasets[*] in {"ddos"})"#,
        r#"any(ip.intel.datasets[*] eq "ddos")"#,
        r#"any(ip.intel.datasets[*] ne "ddos")"#,
        "ip.intel.score == 50",
        "ip.intel.score != 50",
        "ip.intel.score < 50",
        "ip.intel.score <= 50",
        "ip.intel.score > 50",
        "ip.intel.score >= 50",
        "ip.intel.score eq 50",
        "ip.intel.score ne 50",
        "ip.intel.score lt 50",
        "ip.intel.score le 50",
        "ip.intel.score gt 50",
        "ip.intel.score ge 50",
        "ip.intel.score in {50 60}",
        "ip.intel.days_since_seen <= 7",
        "ip.src in {192.0.2.0/24 2001:db8::/32}",
        "ip.src in {fe80::/10 ::1}",
        "ip.src in $office",
        "ip.src == 192.0.2.1",
        "ip.src != 2001:db8::1",
        r#"any(ip.intel.feeds[*] == "spamhaus-drop")"#,
        r#"any(ip.intel.attacker_names[*] == "APT28")"#,
        r#"any(ip.intel.target_industries[*] in {"Banking" "Healthcare"})"#,
        r#"any(ip.intel.attacker_countries[*] == "RU")"#,
        r#"any(ip.intel.events[*].dataset == "ddos" and ip.intel.events[*].target_country == "FR")"#,
        r#"all(ip.intel.events[*].score >= 50 or not ip.intel.events[*].feed in {"a" "b"})"#,
        r#"any(ip.intel.events[*].days_since_seen < 3 xor ip.intel.events[*].attacker_name != "x")"#,
        r#"any(ip.intel.events[*].attacker_country == "CN" and ip.intel.events[*].target_industry == "Energy")"#,
        r#"any(ip.intel.events[*].score in {90 100})"#,
        r#"any(ip.intel.datasets[*] == r"back\slash")"#,
        r##"any(ip.intel.datasets[*] == r#"say "hi""#)"##,
        r#"any(ip.intel.datasets[*] == "say \"hi\" \\ bye")"#,
    ];
    for source in sources {
        parse_ok(source);
    }
}

#[test]
fn aliases_equal_canonical_fields() {
    let pairs = [
        ("cf.intel.ip.attacker_names", "ip.intel.attacker_names"),
        (
            "cf.intel.ip.target_industries",
            "ip.intel.target_industries",
        ),
        (
            "cf.intel.ip.attacker_countries",
            "ip.intel.attacker_countries",
        ),
        ("cf.intel.ip.target_countries", "ip.intel.target_countries"),
        ("cf.intel.ip.datasets", "ip.intel.datasets"),
    ];
    for (alias, field) in pairs {
        let alias_expr = parse_ok(&format!(r#"any({alias}[*] == "FR")"#));
        let field_expr = parse_ok(&format!(r#"any({field}[*] == "FR")"#));
        assert_eq!(alias_expr, field_expr, "{alias}");
        assert_eq!(
            alias_expr.to_string(),
            format!(r#"any({field}[*] == "FR")"#)
        );
    }
}

#[test]
fn alias_and_field_mix_in_one_block() {
    let mixed = parse_ok(r#"any(cf.intel.ip.datasets[*] == "a" or ip.intel.datasets[*] == "b")"#);
    let plain = parse_ok(r#"any(ip.intel.datasets[*] == "a" or ip.intel.datasets[*] == "b")"#);
    assert_eq!(mixed, plain);
}

/// Expressions as Cloudflare's threat-intel documentation writes them.
#[test]
fn cloudflare_documented_expressions() {
    let sources = [
        r#"any(cf.intel.ip.attacker_names[*] == "APT28")"#,
        r#"any(cf.intel.ip.target_industries[*] in {"Banking" "Healthcare"})"#,
        r#"any(cf.intel.ip.datasets[*] == "ddos") and any(cf.intel.ip.target_countries[*] == "FR")"#,
        r#"not any(cf.intel.ip.datasets[*] == "ddos")"#,
        r#"any(cf.intel.ip.target_countries[*] == "FR") and any(cf.intel.ip.datasets[*] == "ddos")"#,
        r#"any(cf.intel.ip.attacker_countries[*] in {"CN" "RU" "KP"})"#,
        r#"any(cf.intel.ip.datasets[*] in {"ddos" "botnet" "waf"})"#,
        r#"any(cf.intel.ip.datasets[*] eq "waf") or any(cf.intel.ip.attacker_names[*] eq "Lazarus")"#,
        r#"(any(cf.intel.ip.datasets[*] == "ddos") or any(cf.intel.ip.datasets[*] == "botnet")) and not ip.src in {192.0.2.0/24}"#,
    ];
    for source in sources {
        parse_ok(source);
    }
}

#[test]
fn canonical_form_parses_back() {
    let sources = [
        r#"any(cf.intel.ip.datasets[*] in {"b" "a" "b"}) && !ip.intel.score lt 5"#,
        r#"all(ip.intel.events[*].dataset != "x" || ip.intel.events[*].days_since_seen >= 2)"#,
        "ip.src in {2001:db8::/32 192.0.2.0/24 192.0.2.7} or ip.src in $office",
        "ip.src != ::ffff:192.0.2.1",
        r#"any(ip.intel.datasets[*] == "quote \" and \\ backslash")"#,
        "ip.intel.score in {90 80 90} xor (ip.intel.days_since_seen > 3 or ip.intel.score > 1)",
    ];
    for source in sources {
        let expr = parse_ok(source);
        let canonical = expr.to_string();
        assert_eq!(
            parse_ok(&canonical),
            expr,
            "`{source}` printed as `{canonical}`"
        );
    }
}

#[test]
fn sets_are_sorted_and_deduplicated() {
    let expr = parse_ok(r#"any(ip.intel.datasets[*] in {"waf" "ddos" "waf"})"#);
    assert_eq!(
        expr.to_string(),
        r#"any(ip.intel.datasets[*] in {"ddos" "waf"})"#
    );
    let expr = parse_ok("ip.src in {192.0.2.9 192.0.2.0/24 ::ffff:192.0.2.9}");
    assert_eq!(expr.to_string(), "ip.src in {192.0.2.0/24 192.0.2.9}");
}

#[test]
fn source_equality_is_a_one_address_set() {
    assert_eq!(
        parse_ok("ip.src == 192.0.2.1"),
        parse_ok("ip.src in {192.0.2.1}")
    );
    assert_eq!(
        parse_ok("ip.src != 192.0.2.1").to_string(),
        "not ip.src in {192.0.2.1}"
    );
}

#[test]
fn predicates_are_distinct_in_order() {
    let expr = parse_ok(&expand("B and (A or B) and not A xor C"));
    let printed: Vec<String> = expr.predicates().iter().map(ToString::to_string).collect();
    assert_eq!(printed, [B, A, C]);
}

#[test]
fn predicate_of_each_kind() {
    let expr = parse_ok(
        r#"any(ip.intel.datasets[*] == "ddos") and ip.intel.score > 50 and ip.src in $office and any(ip.intel.events[*].feed == "f")"#,
    );
    let predicates = expr.predicates();
    assert!(matches!(
        predicates[0],
        Predicate::Array {
            field: TextField::Attribute(Attribute::Datasets),
            ..
        }
    ));
    assert!(matches!(
        predicates[1],
        Predicate::Number {
            field: NumberField::Score,
            ..
        }
    ));
    assert!(matches!(predicates[2], Predicate::Source { .. }));
    assert!(matches!(predicates[3], Predicate::Events { .. }));
}

#[test]
fn addresses_of_source_predicates() {
    let list = parse_ok("ip.src in $office").predicates();
    assert_eq!(
        list[0].addresses(),
        Some(&[net("192.0.2.0/24"), net("2001:db8::/32")][..])
    );
    assert_eq!(list[0].to_string(), "ip.src in $office");

    let set = parse_ok("ip.src in {::ffff:198.51.100.0/120 10.0.0.0/8}").predicates();
    assert_eq!(
        set[0].addresses(),
        Some(&[net("10.0.0.0/8"), net("198.51.100.0/24")][..])
    );

    let other = parse_ok("ip.intel.score > 1").predicates();
    assert_eq!(other[0].addresses(), None);
}

#[test]
fn empty_list_matches_nothing_but_parses() {
    let predicates = parse_ok("ip.src in $empty").predicates();
    assert_eq!(predicates[0].addresses(), Some(&[][..]));
}

#[test]
fn time_dependence() {
    let cases = [
        ("ip.intel.days_since_seen <= 7", true),
        (
            "any(ip.intel.events[*].dataset == \"a\" and ip.intel.events[*].days_since_seen < 2)",
            true,
        ),
        ("ip.intel.score > 7", false),
        ("any(ip.intel.events[*].score > 2)", false),
        ("any(ip.intel.datasets[*] == \"a\")", false),
        ("ip.src in $office", false),
    ];
    for (source, expected) in cases {
        let predicates = parse_ok(source).predicates();
        assert_eq!(predicates[0].depends_on_time(), expected, "{source}");
    }
}

#[test]
fn string_values_name_their_field() {
    let datasets = TextField::Attribute(Attribute::Datasets);
    let countries = TextField::Attribute(Attribute::TargetCountries);

    let array =
        parse_ok(r#"any(ip.intel.datasets[*] in {"b" "a"} or ip.intel.datasets[*] != "c")"#);
    assert_eq!(
        array.predicates()[0].string_values(),
        [(datasets, "a"), (datasets, "b"), (datasets, "c")]
    );

    let events = parse_ok(
        r#"any(ip.intel.events[*].dataset == "d" and ip.intel.events[*].target_country == "FR" and ip.intel.events[*].feed == "f" and ip.intel.events[*].score > 1)"#,
    );
    assert_eq!(
        events.predicates()[0].string_values(),
        [(datasets, "d"), (countries, "FR"), (TextField::Feeds, "f")]
    );

    let number = parse_ok("ip.intel.score > 1");
    assert!(number.predicates()[0].string_values().is_empty());
}

#[test]
fn deep_nesting_within_limit_parses() {
    let depth = 100;
    let source = format!("{}{A}{}", "(".repeat(depth), ")".repeat(depth));
    assert_eq!(parse(&source, &lists()).unwrap().to_string(), A);
    let source = format!("{}{A}", "not ".repeat(1000));
    assert!(parse(&source, &lists()).is_ok());
}

#[test]
fn whitespace_and_newlines_are_free() {
    let compact = parse_ok(r#"any(ip.intel.datasets[*]=="a")&&ip.intel.score>1"#);
    let spread = parse_ok("any(\n  ip.intel.datasets [*] == \"a\"\n)\n\tand ip.intel.score > 1\n");
    assert_eq!(compact, spread);
}
