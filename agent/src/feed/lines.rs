//! Line-by-line reading of a feed file into one reused buffer.
//!
//! Line ends may be `\n` or `\r\n`, and a UTF-8 byte-order mark before the
//! first line is dropped, so files saved by Windows tools read as clean ones.

use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

use super::FeedError;

/// Maximum length of a line kept, in bytes. A longer line is reported as [`LineText::TooLong`]
/// instead of growing the buffer without bound on a file with no newlines.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;

const BOM: &[u8] = b"\xEF\xBB\xBF";

pub struct LineReader<R> {
    reader: R,
    path: PathBuf,
    buffer: Vec<u8>,
    /// Number of the line last returned, counted from 1.
    number: u64,
    /// Whether the reader starts at the start of the file, where a
    /// byte-order mark may be.
    at_file_start: bool,
}

pub struct Line<'a> {
    pub number: u64,
    pub text: LineText<'a>,
}

pub enum LineText<'a> {
    /// The line without its line end.
    Text(&'a str),
    /// The line was longer than [`MAX_LINE_BYTES`] and has been skipped.
    TooLong,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(reader: R, path: &Path) -> Self {
        LineReader {
            reader,
            path: path.to_owned(),
            buffer: Vec::with_capacity(256),
            number: 0,
            at_file_start: true,
        }
    }

    /// Creates a reader of part of a file that starts after a line end.
    /// Its line numbers count from that point.
    pub fn for_part(reader: R, path: &Path) -> Self {
        LineReader {
            at_file_start: false,
            ..LineReader::new(reader, path)
        }
    }

    /// Lines read so far.
    pub fn lines_read(&self) -> u64 {
        self.number
    }

    /// Reads the next line; `None` at the end of the file. A line that is
    /// not valid UTF-8 fails the whole feed, since its indicators could be
    /// misread.
    pub fn next_line(&mut self) -> Result<Option<Line<'_>>, FeedError> {
        let Some(too_long) = self.fill_line()? else {
            return Ok(None);
        };
        self.number += 1;
        if too_long {
            return Ok(Some(Line {
                number: self.number,
                text: LineText::TooLong,
            }));
        }

        let mut bytes = self.buffer.as_slice();
        if let Some(rest) = bytes.strip_suffix(b"\r") {
            bytes = rest;
        }
        if self.number == 1
            && self.at_file_start
            && let Some(rest) = bytes.strip_prefix(BOM)
        {
            bytes = rest;
        }
        let text = std::str::from_utf8(bytes).map_err(|source| FeedError::NotUtf8 {
            path: self.path.clone(),
            line: self.number,
            source,
        })?;
        Ok(Some(Line {
            number: self.number,
            text: LineText::Text(text),
        }))
    }

    /// Copies the next line, without its `\n`, into the buffer. Returns
    /// whether the line was too long (the buffer is then empty), or `None`
    /// at the end of the file.
    fn fill_line(&mut self) -> Result<Option<bool>, FeedError> {
        self.buffer.clear();
        let mut too_long = false;
        let mut read_any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(FeedError::Read {
                        path: self.path.clone(),
                        line: self.number + 1,
                        source,
                    });
                }
            };
            if available.is_empty() {
                // End of file: a last line without `\n` still counts.
                return Ok(read_any.then_some(too_long));
            }
            read_any = true;

            let newline = memchr::memchr(b'\n', available);
            let chunk = &available[..newline.unwrap_or(available.len())];
            if !too_long && self.buffer.len() + chunk.len() > MAX_LINE_BYTES {
                too_long = true;
                self.buffer.clear();
            }
            if !too_long {
                self.buffer.extend_from_slice(chunk);
            }
            let used = newline.map_or(available.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                return Ok(Some(too_long));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every line of `input`, with `None` for a too-long line.
    fn read_all(input: &[u8]) -> Result<Vec<Option<String>>, FeedError> {
        let mut reader = LineReader::new(input, Path::new("test.txt"));
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line()? {
            assert_eq!(line.number, lines.len() as u64 + 1);
            lines.push(match line.text {
                LineText::Text(text) => Some(text.to_owned()),
                LineText::TooLong => None,
            });
        }
        Ok(lines)
    }

    fn some(lines: &[&str]) -> Vec<Option<String>> {
        lines.iter().map(|line| Some((*line).to_owned())).collect()
    }

    #[test]
    fn crlf_and_bom_are_dropped() {
        let lines = read_all(b"\xEF\xBB\xBF192.0.2.1\r\n198.51.100.0/24 \r\n").unwrap();
        assert_eq!(lines, some(&["192.0.2.1", "198.51.100.0/24 "]));
    }

    #[test]
    fn bom_only_counts_on_first_line() {
        let lines = read_all(b"a\n\xEF\xBB\xBFb\n").unwrap();
        assert_eq!(lines, some(&["a", "\u{FEFF}b"]));
    }

    #[test]
    fn last_line_without_newline() {
        assert_eq!(read_all(b"a\nb").unwrap(), some(&["a", "b"]));
        assert_eq!(read_all(b"a\n\n").unwrap(), some(&["a", ""]));
        assert_eq!(read_all(b"").unwrap(), some(&[]));
    }

    #[test]
    fn too_long_line_is_skipped() {
        let mut input = vec![b'x'; MAX_LINE_BYTES + 1];
        input.extend_from_slice(b"\nnext\n");
        assert_eq!(
            read_all(&input).unwrap(),
            vec![None, Some("next".to_owned())]
        );
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let error = read_all(b"ok\n\xFF\n").unwrap_err();
        assert!(
            matches!(error, FeedError::NotUtf8 { line: 2, .. }),
            "{error}"
        );
    }
}
