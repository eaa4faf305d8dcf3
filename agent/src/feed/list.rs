//! The `list` format: one address or prefix a line.
//!
//! This covers Spamhaus DROP (`198.51.100.0/24 ; SBL000001`), FireHOL
//! `.netset` and `.ipset` files and plain address lists as they are
//! published. `#` and `;` start a comment, at the start of a line or after
//! the indicator. Every indicator gets the attributes and score of the feed's
//! config, and the load time as `last_seen`, because a list only states that an
//! address is listed now.

use std::io::BufRead;

use super::FeedError;
use super::lines::{LineReader, LineText};
use super::load::FeedLoad;
use crate::intel::Sighting;

pub fn load<R: BufRead>(
    lines: &mut LineReader<R>,
    load: &mut FeedLoad<'_>,
) -> Result<(), FeedError> {
    // Every line of a list carries the same data, so the sighting is built
    // once and only the indicator changes.
    let sighting = Sighting {
        last_seen: load.now,
        profile: load.config_profile(),
        feed: load.feed,
        score: load.default_score(),
    };
    while let Some(line) = lines.next_line()? {
        let text = match line.text {
            LineText::Text(text) => text,
            LineText::TooLong => {
                load.reject_too_long(line.number);
                continue;
            }
        };
        let Some(text) = data_text(text) else {
            continue;
        };
        load.count_data_line();

        if let Some((indicator, rest)) = text.split_once(char::is_whitespace) {
            load.reject(
                line.number,
                format_args!(
                    "unexpected text `{}` after indicator `{indicator}`; a trailing comment must start with `#` or `;`",
                    rest.trim_start()
                ),
            );
            continue;
        }
        if let Some(indicator) = load.parse_indicator(line.number, text) {
            load.add_sighting(indicator, sighting);
        }
    }
    Ok(())
}

/// The line without its comment and surrounding blanks; `None` for a line
/// that contains no data.
pub fn data_text(line: &str) -> Option<&str> {
    let end = line.find(['#', ';']).unwrap_or(line.len());
    let text = line[..end].trim();
    (!text.is_empty()).then_some(text)
}
