//! Runs `intelwall-bench --quick` and checks that the report is well
//! formed: every section present, every figure a number. It checks no
//! figure's value, because those depend on the machine.

use std::process::Command;

const SECTIONS: [&str; 8] = [
    "## Machine",
    "## Commands",
    "## 1. Per-packet cost in the kernel",
    "## 2. Cache-cold lookups",
    "## 3. End-to-end drop rate",
    "## 4. Loading, from file to enforced",
    "## 5. Change latency",
    "## Targets",
];

#[test]
fn quick_report_well_formed() {
    if !intelwall_tests::netns::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("BENCHMARKS.md");
    let status = Command::new(env!("CARGO_BIN_EXE_intelwall-bench"))
        .arg("--quick")
        .arg("--agent")
        .arg(intelwall_tests::agent_binary())
        .arg("--output")
        .arg(&report)
        .status()
        .unwrap();
    assert!(status.success(), "intelwall-bench --quick failed: {status}");
    let text = std::fs::read_to_string(&report).unwrap();

    for section in SECTIONS {
        assert!(text.contains(section), "missing section `{section}`");
    }
    let figures = figure_rows(&text);
    // Section 1 has two sizes of six cases, section 2 two sizes of hits and
    // misses, section 3 four filters, section 4 at least two subjects for
    // each of two feeds.
    assert!(figures >= 12 + 4 + 4 + 4, "only {figures} figure rows");
}

/// Checks every row of the measurement tables (sections 1 to 5) and returns
/// how many there were. A figure cell is `n/a`, a number, or
/// `median [min, max]`.
fn figure_rows(text: &str) -> usize {
    let start = text.find("## 1.").expect("section 1 present");
    let end = text.find("## Targets").expect("targets present");
    let mut rows = 0;
    for line in text[start..end].lines() {
        if !line.starts_with("| ") || line.starts_with("| ---") || is_header(line) {
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        for cell in &cells[1..] {
            check_figure(cell, line);
        }
        rows += 1;
    }
    rows
}

fn is_header(line: &str) -> bool {
    [
        "| case |",
        "| indicators |",
        "| filter |",
        "| subject |",
        "| change |",
    ]
    .iter()
    .any(|header| line.starts_with(header))
}

fn check_figure(cell: &str, line: &str) {
    if cell == "n/a" {
        return;
    }
    // Cold-lookup rows name the frame kind after the count: `5,000 (hit)`.
    let cell = cell.split(" (").next().unwrap();
    let numbers: Vec<&str> = cell
        .split(['[', ']', ','])
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .collect();
    let plain = cell.replace(',', "");
    if plain.parse::<f64>().is_ok() {
        return;
    }
    assert_eq!(
        numbers.len(),
        3,
        "cell `{cell}` is not `median [min, max]` in: {line}"
    );
    for number in numbers {
        assert!(
            number.parse::<f64>().is_ok(),
            "`{number}` in cell `{cell}` is not a number in: {line}"
        );
    }
}
