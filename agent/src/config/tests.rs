use std::path::Path;

use super::keys::{KeySpans, Step};
use super::*;

const PATH: &str = "/etc/intelwall/intelwall.toml";

/// Returns the error that `text` fails with, as `path:line:column: message`.
fn error_of(text: &str) -> String {
    Config::parse(Path::new(PATH), text.to_owned())
        .expect_err("the config is invalid")
        .to_string()
}

/// Returns the line, column and message of the error that `text` fails with.
fn located_error(text: &str) -> (usize, usize, String) {
    match Config::parse(Path::new(PATH), text.to_owned()).expect_err("the config is invalid") {
        ConfigError::Invalid {
            path,
            line,
            column,
            message,
        } => {
            assert_eq!(path, Path::new(PATH));
            (line, column, message)
        }
        other => panic!("expected an invalid config, got {other}"),
    }
}

/// Two feeds and two rules, each at a known line, to which a case appends
/// lines of its own.
const BASE: &str = r#"[agent]
state_dir = "/var/lib/intelwall"

[[feed]]
name = "drop"
path = "first.txt"

[[feed]]
name = "second"
path = "second.txt"

[[rule]]
name = "block"
expression = "true"
action = "drop"
"#;

/// [`BASE`] with `lines` added to the second feed, from line 11 on.
fn with_second_feed(lines: &str) -> String {
    BASE.replace(
        "path = \"second.txt\"\n",
        &format!("path = \"second.txt\"\n{lines}\n"),
    )
}

#[test]
fn unknown_feed_key_points_at_key() {
    let text = format!("{BASE}\n[[feed]]\nname = \"third\"\npath = \"third.txt\"\nscroe = 5\n");
    let (line, column, message) = located_error(&text);
    assert_eq!((line, column), (20, 1));
    assert!(message.contains("unknown field `scroe`"), "{message}");
    assert!(message.contains("`score`"), "{message}");
}

#[test]
fn unknown_agent_key_points_at_key() {
    let text = "# intelwall\n[agent]\npin_dir = \"/sys/fs/bpf/x\"\nstat_dir = \"/tmp\"\n";
    let (line, column, message) = located_error(text);
    assert_eq!((line, column), (4, 1));
    assert!(message.contains("unknown field `stat_dir`"), "{message}");
}

#[test]
fn unknown_nested_key_points_at_key() {
    let text = "[[feed]]\nname = \"a\"\npath = \"a.csv\"\n\n[feed.columns]\n\
                indicator = \"ip\"\nscroe = \"score\"\n";
    let (line, _, message) = located_error(text);
    assert_eq!(line, 7);
    assert!(message.contains("unknown field `scroe`"), "{message}");
}

#[test]
fn invalid_agent_value_points_at_key_line() {
    let text = "[agent]\npin_dir = \"/sys/fs/bpf/x\"\nexpiry_interval = \"soon\"\n";
    let (line, _, message) = located_error(text);
    assert_eq!(line, 3);
    assert!(message.contains("expected a duration"), "{message}");
}

#[test]
fn error_names_file_line_and_reason() {
    let text = with_second_feed("score = 101");
    assert_eq!(
        error_of(&text),
        format!("{PATH}:11:1: feed `second`: score must be 0 to 100, got 101")
    );
}

#[test]
fn zero_expiry_interval_points_at_key() {
    let text = "[agent]\npin_dir = \"/sys/fs/bpf/x\"\nexpiry_interval = \"0s\"\n";
    let (line, column, message) = located_error(text);
    assert_eq!((line, column), (3, 1));
    assert!(
        message.contains("`expiry_interval` must be greater"),
        "{message}"
    );
}

/// Cases of values that deserialize but fail validation, as (lines added to
/// the second feed, line of the error, part of the message).
#[test]
fn feed_validation_points_at_key() {
    let cases = [
        ("score = 200", 11, "score must be 0 to 100, got 200"),
        (
            "strict = true\nrefresh = \"1h\"",
            12,
            "`refresh` needs a `url`",
        ),
        ("max_size = 10", 11, "`max_size` needs a `url`"),
        (
            "url = \"https://192.0.2.1/\"\nstrict = true\ntimeout = \"0s\"",
            13,
            "`timeout` must be greater than zero",
        ),
        ("url = \"ftp://192.0.2.1/\"", 11, "invalid `url`"),
        (
            "url = \"https://192.0.2.1/\"\nca_file = \"ca.pem\"",
            12,
            "absolute path",
        ),
    ];
    for (lines, expected_line, expected) in cases {
        let text = with_second_feed(lines);
        let (line, column, message) = located_error(&text);
        assert_eq!(line, expected_line, "{lines}: {message}");
        assert_eq!(column, 1, "{lines}: {message}");
        assert!(message.contains(expected), "{lines}: {message}");
        assert!(message.starts_with("feed `second`: "), "{lines}: {message}");
    }
}

#[test]
fn duplicate_feed_points_at_second_name() {
    let text = BASE.replace("name = \"second\"", "name = \"drop\"");
    let (line, column, message) = located_error(&text);
    assert_eq!((line, column), (9, 1));
    assert_eq!(message, "duplicate feed name `drop`");
}

#[test]
fn feed_without_source_points_at_name() {
    let text = BASE.replace("path = \"second.txt\"\n", "");
    let (line, _, message) = located_error(&text);
    assert_eq!(line, 9);
    assert_eq!(message, "feed `second`: set `path` or `url`");
}

/// As `feed_validation_points_at_key`, for lines appended to the rule,
/// which start at line 16.
#[test]
fn rule_validation_points_at_key() {
    let cases = [
        ("mark = 7", 16, "`mark` applies to action \"tag\" only"),
        (
            "log = true\nsample = \"2/3\"",
            17,
            "sample: expected \"1/N\"",
        ),
        ("rate = \"fast\"", 16, "rate: expected \"N/s\""),
        ("dscp = 10", 16, "`dscp` only applies to action \"tag\""),
    ];
    for (lines, expected_line, expected) in cases {
        let text = format!("{BASE}{lines}\n");
        let (line, column, message) = located_error(&text);
        assert_eq!(line, expected_line, "{lines}: {message}");
        assert_eq!(column, 1, "{lines}: {message}");
        assert!(message.contains(expected), "{lines}: {message}");
        assert!(message.starts_with("rule `block`: "), "{lines}: {message}");
    }
}

#[test]
fn tag_rule_without_mark_points_at_action() {
    let text = BASE.replace("action = \"drop\"", "action = \"tag\"");
    let (line, _, message) = located_error(&text);
    assert_eq!(line, 15);
    assert!(message.contains("needs a non-zero `mark`"), "{message}");
}

#[test]
fn tag_dscp_out_of_range_points_at_dscp() {
    let text = BASE.replace("action = \"drop\"", "action = \"tag\"\nmark = 1\ndscp = 64");
    let (line, _, message) = located_error(&text);
    assert_eq!(line, 17);
    assert!(
        message.contains("dscp must be 0 to 63, got 64"),
        "{message}"
    );
}

#[test]
fn key_spans_cover_dotted_and_inline_keys() {
    let text = "feed = [{ name = \"a\", score = 1 }]\n\n[agent]\nsub.key = 2\n";
    let spans = KeySpans::parse(text).expect("valid TOML");
    let score = spans
        .get(&[Step::Key("feed"), Step::Index(0), Step::Key("score")])
        .expect("score is set");
    assert_eq!(&text[score], "score");
    let key = spans
        .get(&[Step::Key("agent"), Step::Key("sub"), Step::Key("key")])
        .expect("sub.key is set");
    assert_eq!(&text[key], "key");
    assert_eq!(
        spans.get(&[Step::Key("feed"), Step::Index(1), Step::Key("score")]),
        None
    );
    assert_eq!(spans.get(&[Step::Key("feed"), Step::Index(0)]), None);
}
