//! `intelwall check --json` as a script reads it: one JSON document on
//! stdout whether the check passes or fails, and the exit status.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const RULE: &str = "[[rule]]\nname = \"listed\"\nexpression = 'any(ip.intel.datasets[*] == \"drop\")'\naction = \"drop\"\n";

/// Writes a config with the feeds `good.txt` and `bad.txt` and returns its
/// path.
fn write_config(dir: &Path, bad_feed: &str) -> PathBuf {
    std::fs::write(dir.join("good.txt"), "192.0.2.1\n").unwrap();
    std::fs::write(dir.join("bad.txt"), bad_feed).unwrap();
    let config = dir.join("intelwall.toml");
    std::fs::write(
        &config,
        format!(
            "[safety]\nenabled = false\n\n\
             [[feed]]\nname = \"good\"\npath = \"good.txt\"\ndatasets = [\"drop\"]\n\n\
             [[feed]]\nname = \"bad\"\npath = \"bad.txt\"\nformat = \"list\"\ndatasets = [\"drop\"]\n\n{RULE}"
        ),
    )
    .unwrap();
    config
}

fn check_json(config: &Path) -> (Output, serde_json::Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_intelwall"))
        .args(["check", "--json", "--config"])
        .arg(config)
        .output()
        .expect("intelwall runs");
    let document = serde_json::from_slice(&output.stdout).unwrap_or_else(|error| {
        panic!(
            "stdout is not one JSON document ({error}):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output, document)
}

#[test]
fn failed_feed_prints_json_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "not-an-address\n198.51.100.300\n");

    let (output, document) = check_json(&config);

    assert!(!output.status.success(), "a failed check exited 0");
    let error = &document["error"];
    assert_eq!(error["kind"], "feed", "{document:#}");
    assert_eq!(error["feed"], "bad", "{document:#}");
    let bad = dir.path().join("bad.txt");
    assert_eq!(error["file"], bad.display().to_string(), "{document:#}");
    let reason = error["reason"].as_str().expect("reason is a string");
    assert!(
        reason.starts_with("all 2 records were rejected"),
        "{document:#}"
    );
    let message = error["message"].as_str().expect("message is a string");
    assert!(message.starts_with("feed `bad`: "), "{document:#}");
    // The message is the line stderr shows after "error: ".
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("error: {message}")),
        "stderr: {stderr}"
    );
    let diagnostics = document["diagnostics"]
        .as_array()
        .expect("diagnostics is an array");
    assert_eq!(diagnostics.len(), 2, "{document:#}");
    assert!(
        diagnostics[1]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}:2: error: ", bad.display())),
        "{document:#}"
    );
}

#[test]
fn passed_check_has_null_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "198.51.100.1\n");

    let (output, document) = check_json(&config);

    assert!(
        output.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(document["error"].is_null(), "{document:#}");
    assert_eq!(document["feeds"].as_array().map(Vec::len), Some(2));
}

#[test]
fn broken_rule_names_its_position() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "198.51.100.1\n");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("== \"drop\")'", "== )'")).unwrap();

    let (output, document) = check_json(&config);

    assert!(!output.status.success(), "a failed check exited 0");
    let error = &document["error"];
    assert_eq!(error["kind"], "rule", "{document:#}");
    assert_eq!(error["rule"], "listed", "{document:#}");
    assert_eq!(error["file"], config.display().to_string(), "{document:#}");
    assert!(error["feed"].is_null(), "{document:#}");
    assert_eq!(error["line"], 17, "{document:#}");
    assert_eq!(error["column"], 43, "{document:#}");
    assert_eq!(document["diagnostics"], serde_json::json!([]));
}
