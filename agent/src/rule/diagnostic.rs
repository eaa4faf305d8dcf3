//! Rule errors and their rendering as multi-line diagnostics.

use std::fmt;
use std::ops::Range;

/// An error in a rule expression, located by a byte span in its source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// Byte offsets into the expression; empty at the end of the input.
    pub span: Range<usize>,
    pub message: String,
    pub help: Option<String>,
}

impl RuleError {
    pub(crate) fn new(span: Range<usize>, message: impl Into<String>) -> RuleError {
        RuleError {
            span,
            message: message.into(),
            help: None,
        }
    }

    pub(crate) fn with_help(mut self, help: impl Into<String>) -> RuleError {
        self.help = Some(help.into());
        self
    }

    /// Formats the error the way compilers do: the message, `location`
    /// (such as `rules.toml:12:18`), the source line holding the start of the
    /// span, carets under the span, and the help if there is one.
    ///
    /// A span that runs past the end of its line is underlined to the end of
    /// that line. An empty span gets one caret.
    pub fn render(&self, source: &str, location: &str) -> String {
        let start = floor_char_boundary(source, self.span.start);
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..]
            .find('\n')
            .map_or(source.len(), |i| start + i);
        let line = &source[line_start..line_end];

        let end = floor_char_boundary(source, self.span.end.clamp(start, line_end));
        let indent = caret_indent(&source[line_start..start]);
        let width = source[start..end].chars().count().max(1);

        let mut out = format!(
            "error: {}\n  --> {location}\n   |\n   | {line}\n",
            self.message
        );
        out.push_str(&format!("   | {indent}{}\n", "^".repeat(width)));
        if let Some(help) = &self.help {
            out.push_str(&format!("help: {help}\n"));
        }
        out
    }
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RuleError {}

/// Whitespace that lines the caret up under `before`, keeping its tabs so a
/// terminal expands both lines alike.
fn caret_indent(before: &str) -> String {
    before
        .chars()
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect()
}

fn floor_char_boundary(text: &str, index: usize) -> usize {
    let mut index = index.min(text.len());
    while !text.is_char_boundary(index) {
        index -= 1;
    }
    index
}
