//! Every error message, with its span and help.

use super::parse_err;

/// Checks an error's message, the text under its span, and its help.
fn assert_error(source: &str, under_span: &str, message: &str, help: Option<&str>) {
    let error = parse_err(source);
    assert_eq!(error.message, message, "message for `{source}`");
    assert_eq!(
        &source[error.span.clone()],
        under_span,
        "span for `{source}`"
    );
    assert_eq!(error.help.as_deref(), help, "help for `{source}`");
}

#[test]
fn lexer_errors() {
    assert_error("ip.intel.score @ 5", "@", "unexpected character `@`", None);

    assert_error("ip.intel.score = 5", "=", "expected `==`, found `=`", None);

    assert_error(
        "ip.intel.score > 5 & ip.src in $office",
        "&",
        "expected `&&`, found `&`",
        None,
    );

    assert_error(
        "ip.intel.score > 5 | ip.src in $office",
        "|",
        "expected `||`, found `|`",
        None,
    );

    assert_error(
        "ip.intel.score > 5 ^ ip.src in $office",
        "^",
        "expected `^^`, found `^`",
        None,
    );

    assert_error(
        r#"any(ip.intel.datasets[*] == "ddos)"#,
        r#""ddos)"#,
        "unterminated string",
        Some("close the string with `\"`"),
    );

    assert_error(
        r#"any(ip.intel.datasets[*] == "a\qb")"#,
        r"\q",
        r"invalid escape `\q` in string",
        Some(
            r#"a string may escape only `\"` and `\\`; use a raw string r"..." for other backslashes"#,
        ),
    );

    assert_error(
        r#"any(ip.intel.datasets[*] == r#x)"#,
        "r#",
        "expected `\"` to open the raw string",
        None,
    );

    assert_error(
        r##"any(ip.intel.datasets[*] == r#"x")"##,
        r##"r#"x")"##,
        "unterminated string",
        Some("close the string with `\"`"),
    );

    assert_error(
        "ip.src in $",
        "$",
        "expected a list name after `$`",
        Some("a named list is written `$name`, with a name from [lists] in the config"),
    );

    assert_error(
        "ip.intel.score > 99999999999999999999999",
        "99999999999999999999999",
        "number `99999999999999999999999` is too large",
        None,
    );

    assert_error(
        "ip.src in {10.0.0.0/33}",
        "10.0.0.0/33",
        "invalid CIDR `10.0.0.0/33`",
        Some(
            "a CIDR is an address, `/` and a prefix length, such as `192.0.2.0/24` or `2001:db8::/32`",
        ),
    );

    assert_error(
        "ip.src in {192.0.2.5/24}",
        "192.0.2.5/24",
        "CIDR `192.0.2.5/24` has bits set after its prefix length",
        Some("did you mean `192.0.2.0/24`?"),
    );

    assert_error(
        "ip.intel.score > 1.5",
        "1.5",
        "invalid number `1.5`",
        Some("numbers in rules are whole numbers, such as `50`"),
    );

    assert_error(
        "ip.src == 1.2.3",
        "1.2.3",
        "invalid IP address `1.2.3`",
        None,
    );

    assert_error(
        "ip.src == fe80::1::2",
        "fe80::1::2",
        "invalid IP address `fe80::1::2`",
        None,
    );
}

#[test]
fn syntax_errors() {
    assert_error(
        "ip.intel.score > 5 ip.intel.score < 9",
        "ip.intel.score",
        "expected `and`, `or`, `xor` or the end of the expression, found `ip.intel.score`",
        None,
    );

    assert_error(
        "(ip.intel.score > 5",
        "",
        "expected `)`, found end of input",
        None,
    );

    assert_error(
        r#"any(ip.intel.datasets[*] == "a" "b")"#,
        r#""b""#,
        r#"expected `)`, found `"b"`"#,
        None,
    );

    assert_error(
        "ip.intel.score > 5 and",
        "",
        "expected a field, `not`, `any(`, `all(` or `(`, found end of input",
        None,
    );

    assert_error(
        "",
        "",
        "expected a field, `not`, `any(`, `all(` or `(`, found end of input",
        None,
    );

    assert_error(
        "and ip.intel.score > 5",
        "and",
        "expected a field, `not`, `any(`, `all(` or `(`, found `and`",
        None,
    );

    assert_error(
        r#"any ip.intel.datasets[*] == "a""#,
        "ip.intel.datasets",
        "expected `(` after `any`, found `ip.intel.datasets`",
        None,
    );

    assert_error(
        r#"all ip.intel.datasets[*] == "a""#,
        "ip.intel.datasets",
        "expected `(` after `all`, found `ip.intel.datasets`",
        None,
    );

    assert_error(
        r#"any(ip.intel.datasets[0] == "a")"#,
        "0",
        "expected `*`, found `0`",
        Some("array elements are not read by index; write `[*]` inside any() or all()"),
    );

    assert_error(
        r#"any(ip.intel.datasets[* == "a")"#,
        "==",
        "expected `]`, found `==`",
        None,
    );

    assert_error(
        r#"any(ip.intel.events[*]. == "a")"#,
        "==",
        "expected a field name after `[*].`, found `==`",
        None,
    );

    assert_error(
        r#"any(ip.intel.datasets[*] "a")"#,
        r#""a""#,
        r#"expected an operator (`==`, `!=`, `<`, `<=`, `>`, `>=` or `in`), found `"a"`"#,
        None,
    );

    assert_error(
        "ip.src not in {192.0.2.0/24}",
        "not",
        "expected an operator (`==`, `!=`, `<`, `<=`, `>`, `>=` or `in`), found `not`",
        Some("negate the whole comparison: `not ip.src in {...}`"),
    );

    assert_error(
        "ip.src == {192.0.2.1}",
        "{",
        "expected a value, found `{`",
        Some("compare with a set using `in`, as in `ip.src in {192.0.2.0/24}`"),
    );

    assert_error(
        r#"any(ip.intel.datasets[*] in "a")"#,
        r#""a""#,
        r#"expected `{` or a `$list` after `in`, found `"a"`"#,
        None,
    );

    assert_error(
        r#"any(ip.intel.datasets[*] in {"a", "b"})"#,
        ",",
        "values in a set are separated by spaces, not commas",
        Some(r#"write the set as `{"a" "b"}`"#),
    );

    assert_error(
        r#"any(ip.intel.datasets[*] in {"a""#,
        "",
        "expected `}`, found end of input",
        None,
    );

    assert_error("ip.src in {}", "{}", "a set needs at least one value", None);

    assert_error(
        "any(ip.intel.datasets[*] == ddos)",
        "ddos",
        "expected a value (a string, number or IP address), found `ddos`",
        Some("strings are written in double quotes, such as \"ddos\""),
    );

    assert_error(
        "ip.intel.score > )",
        ")",
        "expected a value (a string, number or IP address), found `)`",
        None,
    );
}

#[test]
fn nesting_limit() {
    let source = format!("{}ip.intel.score > 1{}", "(".repeat(200), ")".repeat(200));
    let error = parse_err(&source);
    assert_eq!(error.message, "expression nests deeper than 128 levels");
    assert_eq!(error.span, 128..129);
}

#[test]
fn field_errors() {
    assert_error(
        r#"any(ip.intel.dataset[*] == "ddos")"#,
        "ip.intel.dataset",
        "unknown field `ip.intel.dataset`",
        Some("did you mean `ip.intel.datasets`?"),
    );

    assert_error(
        r#"any(cf.intel.ip.target_country[*] == "FR")"#,
        "cf.intel.ip.target_country",
        "unknown field `cf.intel.ip.target_country`",
        Some("did you mean `cf.intel.ip.target_countries`?"),
    );

    assert_error(
        r#"any(ip.intel.events.dataset == "ddos")"#,
        "ip.intel.events.dataset",
        "unknown field `ip.intel.events.dataset`",
        Some("sighting fields are read through `[*]`: `ip.intel.events[*].dataset`"),
    );

    assert_error(
        "http.host == 5",
        "http.host",
        "unknown field `http.host`",
        Some(
            "known fields are `ip.src`, `ip.intel.attacker_names`, `ip.intel.attacker_countries`, \
             `ip.intel.target_countries`, `ip.intel.target_industries`, `ip.intel.datasets`, \
             `ip.intel.feeds`, `ip.intel.score`, `ip.intel.days_since_seen`, `ip.intel.events`",
        ),
    );

    assert_error(
        r#"any(ip.intel.events[*].datasets == "ddos")"#,
        "datasets",
        "unknown sighting field `datasets`",
        Some("did you mean `dataset`?"),
    );

    assert_error(
        r#"any(ip.intel.events[*].colour == "red")"#,
        "colour",
        "unknown sighting field `colour`",
        Some(
            "a sighting has the fields `dataset`, `attacker_name`, `attacker_country`, `target_country`, \
             `target_industry`, `feed`, `score`, `days_since_seen`",
        ),
    );

    assert_error(
        "ip.intel.score[*] > 5",
        "[*]",
        "`ip.intel.score` is a number, not an array, so it takes no `[*]`",
        None,
    );

    assert_error(
        "ip.src[*] == 192.0.2.1",
        "[*]",
        "`ip.src` is an IP address, not an array, so it takes no `[*]`",
        None,
    );
}

#[test]
fn quantifier_errors() {
    assert_error(
        r#"ip.intel.datasets == "ddos""#,
        "ip.intel.datasets",
        "`ip.intel.datasets` is an array, so it can be compared only inside any() or all()",
        Some(r#"write `any(ip.intel.datasets[*] == "ddos")`"#),
    );

    assert_error(
        r#"cf.intel.ip.datasets[*] in {"a" "b"}"#,
        "cf.intel.ip.datasets[*]",
        "`cf.intel.ip.datasets` is an array, so it can be compared only inside any() or all()",
        Some(r#"write `any(cf.intel.ip.datasets[*] in {"a" "b"})`"#),
    );

    assert_error(
        r#"ip.intel.events[*].dataset == "ddos""#,
        "ip.intel.events[*].dataset",
        "`ip.intel.events` is an array, so it can be compared only inside any() or all()",
        Some(r#"write `any(ip.intel.events[*].dataset == "ddos")`"#),
    );

    assert_error(
        "any(ip.intel.score > 5)",
        "ip.intel.score",
        "any() needs an array field such as `ip.intel.datasets[*]`, found `ip.intel.score`",
        Some("compare `ip.intel.score` outside any()"),
    );

    assert_error(
        r#"any(ip.intel.datasets == "ddos")"#,
        "ip.intel.datasets",
        "expected `[*]` after `ip.intel.datasets`",
        Some("inside any(), array elements are read as `ip.intel.datasets[*]`"),
    );

    assert_error(
        r#"all(ip.intel.datasets[*].name == "ddos")"#,
        "name",
        "`ip.intel.datasets[*]` is a string, which has no field `name`",
        Some("fields of one sighting are read through `ip.intel.events[*]`"),
    );

    assert_error(
        r#"any(ip.intel.events[*] == "ddos")"#,
        "ip.intel.events[*]",
        "expected a sighting field after `ip.intel.events[*]`, such as `.dataset`",
        None,
    );

    assert_error(
        r#"any(ip.intel.datasets[*] == "ddos" and ip.intel.score > 5)"#,
        "ip.intel.score",
        "inside any(), every comparison must read `ip.intel.datasets[*]`, but this one reads `ip.intel.score`",
        Some("move the comparison of `ip.intel.score` out of any()"),
    );

    assert_error(
        r#"all(ip.intel.datasets[*] == "ddos" or ip.intel.target_countries[*] == "FR")"#,
        "ip.intel.target_countries[*]",
        "all() reads one array, but this comparison reads `ip.intel.target_countries` and the first one reads `ip.intel.datasets`",
        Some(
            "use one all() per field, or `ip.intel.events[*]` to require both within one sighting",
        ),
    );

    assert_error(
        r#"any(any(ip.intel.datasets[*] == "ddos"))"#,
        "any",
        "any() cannot contain any()",
        Some("combine the two blocks outside, as in `any(...) and any(...)`"),
    );

    assert_error(
        r#"all(ip.intel.datasets[*] == "a" and not any(ip.intel.feeds[*] == "b"))"#,
        "any",
        "all() cannot contain any()",
        Some("combine the two blocks outside, as in `any(...) and any(...)`"),
    );
}

#[test]
fn type_errors() {
    assert_error(
        r#"any(ip.intel.datasets[*] < "ddos")"#,
        "<",
        "`<` compares numbers, but `ip.intel.datasets[*]` is a string",
        Some("compare strings with `==`, `!=` or `in`"),
    );

    assert_error(
        r#"any(ip.intel.target_countries[*] in {"FR" 42})"#,
        "42",
        "`ip.intel.target_countries[*]` is a string and cannot be compared with number `42`",
        Some("write strings in double quotes, such as \"ddos\""),
    );

    assert_error(
        "any(ip.intel.events[*].feed == 192.0.2.1)",
        "192.0.2.1",
        "`ip.intel.events[*].feed` is a string and cannot be compared with IP address `192.0.2.1`",
        Some("write strings in double quotes, such as \"ddos\""),
    );

    assert_error(
        r#"ip.intel.score > "high""#,
        r#""high""#,
        r#"`ip.intel.score` is a number and cannot be compared with string `"high"`"#,
        None,
    );

    assert_error(
        r#"any(ip.intel.events[*].days_since_seen in {1 "2"})"#,
        r#""2""#,
        r#"`ip.intel.events[*].days_since_seen` is a number and cannot be compared with string `"2"`"#,
        None,
    );

    assert_error(
        "ip.intel.score == 150",
        "150",
        "`ip.intel.score` ranges from 0 to 100, so it is never 150",
        None,
    );

    assert_error(
        "any(ip.intel.events[*].score in {50 101})",
        "101",
        "`ip.intel.events[*].score` ranges from 0 to 100, so it is never 101",
        None,
    );

    assert_error(
        r#"ip.src == "192.0.2.1""#,
        r#""192.0.2.1""#,
        r#"`ip.src` is an IP address and cannot be compared with string `"192.0.2.1"`"#,
        Some("write addresses without quotes, such as `192.0.2.1`"),
    );

    assert_error(
        "ip.src in {192.0.2.1 7}",
        "7",
        "`ip.src` is an IP address and cannot be compared with number `7`",
        None,
    );

    assert_error(
        "ip.src > 192.0.2.1",
        ">",
        "`>` compares numbers, but `ip.src` is an IP address",
        Some("match a range of addresses with `in` and a CIDR, such as `ip.src in {192.0.2.0/24}`"),
    );

    assert_error(
        "ip.src == 10.0.0.0/8",
        "10.0.0.0/8",
        "`==` compares with one address, found CIDR `10.0.0.0/8`",
        Some("match a network with `in`: `ip.src in {10.0.0.0/8}`"),
    );

    assert_error(
        "ip.intel.score in $office",
        "$office",
        "`$office` is a list of addresses, so only `ip.src` can be tested against it, not `ip.intel.score`",
        None,
    );

    assert_error(
        "any(ip.intel.datasets[*] in $office)",
        "$office",
        "`$office` is a list of addresses, so only `ip.src` can be tested against it, not `ip.intel.datasets[*]`",
        None,
    );
}

#[test]
fn list_errors() {
    assert_error(
        "ip.src in $ofice",
        "$ofice",
        "unknown list `$ofice`",
        Some("did you mean `$office`?"),
    );

    assert_error(
        "ip.src in $partners",
        "$partners",
        "unknown list `$partners`",
        Some("define `partners` under [lists] in the config"),
    );
}

#[test]
fn country_errors() {
    assert_error(
        r#"any(ip.intel.target_countries[*] == "FRA")"#,
        r#""FRA""#,
        "`FRA` is not an ISO 3166-1 alpha-2 country code",
        Some(r#"country codes are two upper-case letters, such as "FR""#),
    );

    assert_error(
        r#"any(cf.intel.ip.attacker_countries[*] in {"RU" "cn"})"#,
        r#""cn""#,
        "`cn` is not an ISO 3166-1 alpha-2 country code",
        Some(r#"codes are upper case: did you mean "CN"?"#),
    );

    assert_error(
        r#"any(ip.intel.events[*].target_country == "UK")"#,
        r#""UK""#,
        "`UK` is not an ISO 3166-1 alpha-2 country code",
        Some(r#"the United Kingdom's code is "GB"; "UK" is only reserved"#),
    );
}

#[test]
fn country_codes_only_in_country_fields() {
    assert!(crate::rule::parse(r#"any(ip.intel.datasets[*] == "FRA")"#, &super::lists()).is_ok());
}

#[test]
fn render_points_at_span() {
    let source = r#"any(ip.intel.dataset[*] == "ddos")"#;
    let rendered = parse_err(source).render(source, "rules.toml:12:18");
    let expected = "\
error: unknown field `ip.intel.dataset`
  --> rules.toml:12:18
   |
   | any(ip.intel.dataset[*] == \"ddos\")
   |     ^^^^^^^^^^^^^^^^
help: did you mean `ip.intel.datasets`?
";
    assert_eq!(rendered, expected);
}

#[test]
fn render_on_later_line() {
    let source = "ip.intel.score > 5\n\tand ip.intel.scor < 9";
    let rendered = parse_err(source).render(source, "rules.toml:3:1");
    let expected = "\
error: unknown field `ip.intel.scor`
  --> rules.toml:3:1
   |
   | \tand ip.intel.scor < 9
   | \t    ^^^^^^^^^^^^^
help: did you mean `ip.intel.score`?
";
    assert_eq!(rendered, expected);
}

#[test]
fn render_at_end_of_input() {
    let source = "(ip.intel.score > 5";
    let rendered = parse_err(source).render(source, "x:1:20");
    let expected = "\
error: expected `)`, found end of input
  --> x:1:20
   |
   | (ip.intel.score > 5
   |                    ^
";
    assert_eq!(rendered, expected);
}

#[test]
fn display_is_the_message() {
    let error = parse_err("ip.src in {}");
    assert_eq!(error.to_string(), "a set needs at least one value");
}
