//! Picking a feed's format from its content, for feeds whose config gives no
//! `format`.

use std::io::BufRead;

use serde_json::{Map, Value};

use super::FeedError;
use super::input::{Input, read_document};
use super::lines::{LineReader, LineText};
use crate::config::{FeedConfig, FeedFormat};

/// Detects the format of a feed. `open` opens its (decompressed) content,
/// and may be called twice.
///
/// A config with `columns` means `csv`. Otherwise the first line that is
/// neither blank nor a comment decides:
///
/// - a complete JSON object on one line is classified by its keys: a STIX
///   bundle (`"type": "bundle"`), a MISP event (`Event`), a Cloudflare
///   response (`result`), a Spamhaus DROP JSON record (`cidr`, or the
///   `metadata` line) as `list`, and anything else as `jsonl`.
/// - a line starting with `{` or `[` that is not a complete object is the
///   start of a document spread over several lines. The whole file is
///   parsed (and returned, so it is not parsed twice) and classified as
///   above; an array is a MISP list if its first item has `Event`, STIX if
///   it has a STIX `id`, and Cloudflare events otherwise. A file that does
///   not parse as one document is taken as `jsonl`, whose loader reports each
///   bad line.
/// - anything else, and a file without data, is `list`.
pub fn detect<R: BufRead>(
    config: &FeedConfig,
    open: impl Fn() -> Result<Input<R>, FeedError>,
) -> Result<(FeedFormat, Option<Value>), FeedError> {
    if !config.columns.is_empty() {
        return Ok((FeedFormat::Csv, None));
    }
    let mut lines = LineReader::new(open()?, &config.path);
    let Some(first) = first_data_line(&mut lines)? else {
        return Ok((FeedFormat::List, None));
    };
    if let Some(first) = &first
        && !first.starts_with(['{', '['])
    {
        return Ok((FeedFormat::List, None));
    }
    if let Some(object) = first
        .as_deref()
        .and_then(|line| serde_json::from_str::<Map<String, Value>>(line).ok())
    {
        let format = classify_object(&object).unwrap_or(FeedFormat::Jsonl);
        return Ok((format, None));
    }

    let bytes = read_document(open()?, &config.path)?;
    let Ok(document) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok((FeedFormat::Jsonl, None));
    };
    match classify_document(&document) {
        Some(format) => Ok((format, Some(document))),
        None => Err(FeedError::InvalidDocument {
            path: config.path.clone(),
            message: "unrecognised JSON document; expected a STIX bundle, a MISP event or a Cloudflare threat events response, or set `format` in the feed's config".to_owned(),
        }),
    }
}

/// The first line with data, trimmed; `Some(None)` when that line is too
/// long to keep, which only a JSON document plausibly is.
fn first_data_line<R: BufRead>(
    lines: &mut LineReader<R>,
) -> Result<Option<Option<String>>, FeedError> {
    while let Some(line) = lines.next_line()? {
        let LineText::Text(text) = line.text else {
            return Ok(Some(None));
        };
        let text = text.trim();
        if text.is_empty() || text.starts_with(['#', ';']) {
            continue;
        }
        return Ok(Some(Some(text.to_owned())));
    }
    Ok(None)
}

fn classify_object(object: &Map<String, Value>) -> Option<FeedFormat> {
    let text = |key: &str| object.get(key).and_then(Value::as_str);
    if text("type") == Some("bundle") || object.get("objects").is_some_and(Value::is_array) {
        return Some(FeedFormat::Stix2);
    }
    if object.contains_key("Event") || object.get("response").is_some_and(Value::is_array) {
        return Some(FeedFormat::Misp);
    }
    if object.get("result").is_some_and(Value::is_array) {
        return Some(FeedFormat::Cloudflare);
    }
    if object.contains_key("cidr") || text("type") == Some("metadata") {
        return Some(FeedFormat::List);
    }
    if object.contains_key("indicator") {
        return Some(FeedFormat::Jsonl);
    }
    None
}

fn classify_document(document: &Value) -> Option<FeedFormat> {
    match document {
        Value::Object(object) => classify_object(object),
        Value::Array(items) => {
            let Some(first) = items.first() else {
                return Some(FeedFormat::Cloudflare);
            };
            if first.get("Event").is_some() {
                return Some(FeedFormat::Misp);
            }
            let stix_id = first
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.contains("--"));
            if stix_id && first.get("type").is_some() {
                return Some(FeedFormat::Stix2);
            }
            Some(FeedFormat::Cloudflare)
        }
        _ => None,
    }
}
