//! Findings about single records of a feed file: a line, or an object of a
//! JSON document.

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

/// Position of a record in its file. Line formats give the line, and the
/// column too where their parser reports one (a JSON line that does not
/// parse). Document formats give the object's id (or its index when it has
/// none), because the JSON parser keeps no line numbers for nested objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location<'a> {
    /// Line number, counted from 1.
    Line(u64),
    /// Line and column, both counted from 1, the column in characters.
    LineColumn { line: u64, column: u64 },
    /// Object id, such as a STIX id or a MISP attribute UUID.
    Object(&'a str),
}

impl From<u64> for Location<'_> {
    fn from(line: u64) -> Self {
        Location::Line(line)
    }
}

/// A finding about one record of a feed file, shown as
/// `path:line: warning: message`, `path:line:column: warning: message` or
/// `path: object id: warning: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// Line number in the file, counted from 1; 0 when `object` names the
    /// record instead.
    pub line: u64,
    /// Column in the line, in characters counted from 1, where the parser
    /// reports one.
    pub column: Option<u64>,
    /// Id of the JSON object the finding is about, for whole-document formats.
    pub object: Option<String>,
    pub severity: Severity,
    pub message: String,
}

impl Diagnostic {
    /// Moves a line finding `lines` lines further into the file.
    pub fn shift_lines(&mut self, lines: u64) {
        if self.object.is_none() {
            self.line += lines;
        }
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(object) => write!(
                f,
                "{}: {}: {}: {}",
                self.path.display(),
                object,
                self.severity,
                self.message
            ),
            None => {
                write!(f, "{}:{}", self.path.display(), self.line)?;
                if let Some(column) = self.column {
                    write!(f, ":{column}")?;
                }
                write!(f, ": {}: {}", self.severity, self.message)
            }
        }
    }
}
