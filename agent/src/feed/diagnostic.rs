//! Findings about single lines of a feed file.

use std::fmt;
use std::path::PathBuf;

/// Diagnostics kept per feed. A garbage file can have millions of bad lines,
/// so past this many only a count is kept.
pub const MAX_DIAGNOSTICS: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The line loaded, possibly changed (a normalised prefix) or with a
    /// part ignored (an unknown JSON key).
    Warning,
    /// The line was rejected and nothing of it loaded.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// A finding about one line of a feed file, shown as
/// `path:line: warning: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// Line number in the file, counted from 1.
    pub line: u64,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.path.display(),
            self.line,
            self.severity,
            self.message
        )
    }
}
