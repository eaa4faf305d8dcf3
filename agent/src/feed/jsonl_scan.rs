//! A scanner for the plain shape that almost every `jsonl` line has: one
//! object whose keys are known and distinct, whose strings have no escapes,
//! whose score is an integer, and whose attributes are lists of strings.
//!
//! On the bench's ten-million-indicator feed, parsing fell from about 18% to
//! about 15% of the load's CPU time with it (perf samples on the 2-core
//! test machine). Any other line, valid or not, makes it give up, and the
//! caller parses
//! the line with `serde_json`, which then accepts or reports it. So the
//! scanner never decides that a line is invalid, and it accepts only lines
//! that `serde_json` would parse to the same fields.

use std::borrow::Cow;

use super::jsonl::{Key, LineFields};
use super::load::intern_value;
use crate::intel::{Attribute, Intel, Symbol};

/// The scanner gave up on the line; `serde_json` must parse it.
pub struct GaveUp;

type Scan<T> = Result<T, GaveUp>;

/// Scans `text`, one trimmed line, interning attribute values into
/// `values` as they come. On [`GaveUp`], `values` may hold part of the
/// line's values, and the caller resets them.
pub fn scan_line<'a>(
    text: &'a str,
    intel: &mut Intel,
    values: &mut [Vec<Symbol>; 5],
) -> Scan<LineFields<'a>> {
    let mut scanner = Scanner {
        bytes: text.as_bytes(),
        text,
        at: 0,
    };
    let mut fields = LineFields::default();
    let mut seen_keys = 0u8;
    scanner.expect(b'{')?;
    if scanner.peek() == Some(b'}') {
        scanner.at += 1;
        return scanner.end().map(|()| fields);
    }
    loop {
        let name = scanner.string()?;
        let key = Key::from_name(name).ok_or(GaveUp)?;
        if seen_keys & key.bit() != 0 {
            return Err(GaveUp);
        }
        seen_keys |= key.bit();
        scanner.expect(b':')?;
        match key {
            Key::Indicator => fields.indicator = Some(Cow::Borrowed(scanner.string()?)),
            Key::LastSeen => {
                fields.last_seen = scanner.nullable(Scanner::string)?.map(Cow::Borrowed);
            }
            Key::Score => fields.score = scanner.nullable(Scanner::integer)?,
            Key::Attribute(attribute) => {
                scanner.attribute_values(intel, attribute, &mut values[attribute as usize])?;
            }
        }
        match scanner.next_byte()? {
            b',' => continue,
            b'}' => return scanner.end().map(|()| fields),
            _ => return Err(GaveUp),
        }
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.bytes.get(self.at).copied()
    }

    fn next_byte(&mut self) -> Scan<u8> {
        let byte = self.peek().ok_or(GaveUp)?;
        self.at += 1;
        Ok(byte)
    }

    fn expect(&mut self, byte: u8) -> Scan<()> {
        if self.next_byte()? == byte {
            Ok(())
        } else {
            Err(GaveUp)
        }
    }

    /// Succeeds when only white space follows.
    fn end(&mut self) -> Scan<()> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(GaveUp),
        }
    }

    /// Reads a string without escapes or control characters (JSON does not
    /// allow the latter raw inside strings).
    fn string(&mut self) -> Scan<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let end = string_end(self.bytes, start).ok_or(GaveUp)?;
        if self.bytes[end] != b'"' {
            return Err(GaveUp);
        }
        self.at = end + 1;
        // Both ends sit next to an ASCII quote, so they are character
        // boundaries of the line.
        Ok(&self.text[start..end])
    }

    /// Reads an integer in JSON's syntax (no leading zeros, no fraction or
    /// exponent) that fits an `i64`.
    fn integer(&mut self) -> Scan<i64> {
        self.skip_space();
        let start = self.at;
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let digits = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        let count = self.at - digits;
        if count == 0 || (count > 1 && self.bytes[digits] == b'0') {
            return Err(GaveUp);
        }
        if let Some(b'.' | b'e' | b'E') = self.bytes.get(self.at) {
            return Err(GaveUp);
        }
        self.text[start..self.at].parse().map_err(|_| GaveUp)
    }

    /// Reads `null`, or what `value` scans.
    fn nullable<T>(&mut self, value: impl FnOnce(&mut Self) -> Scan<T>) -> Scan<Option<T>> {
        if self.peek() == Some(b'n') {
            return self.literal_null().map(|()| None);
        }
        value(self).map(Some)
    }

    fn literal_null(&mut self) -> Scan<()> {
        if self.bytes[self.at..].starts_with(b"null") {
            self.at += 4;
            Ok(())
        } else {
            Err(GaveUp)
        }
    }

    /// Reads `null` or a list of strings, interning each into `values`.
    fn attribute_values(
        &mut self,
        intel: &mut Intel,
        attribute: Attribute,
        values: &mut Vec<Symbol>,
    ) -> Scan<()> {
        if self.peek() == Some(b'n') {
            return self.literal_null();
        }
        self.expect(b'[')?;
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(());
        }
        loop {
            let value = self.string()?;
            values.push(intern_value(intel, attribute, value));
            match self.next_byte()? {
                b',' => continue,
                b']' => return Ok(()),
                _ => return Err(GaveUp),
            }
        }
    }
}

/// Finds the first byte from `start` on that ends a plain JSON string or
/// makes it need the full parser: a quote, a backslash or a control
/// character. Strings in a line are short, so eight bytes are tested at a
/// time in a machine word rather than with a vector search, which costs more
/// to set up than such a string takes.
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut at = start;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte below n sets its high bit in (word - n * ONES) & !word.
        // The lowest byte flagged is always a true match, because a false
        // one can only come from a borrow out of a true one below it.
        let below = |n: u64, word: u64| word.wrapping_sub(n * ONES) & !word & HIGH;
        let special = below(1, word ^ (u64::from(b'"') * ONES))
            | below(1, word ^ (u64::from(b'\\') * ONES))
            | below(0x20, word);
        if special != 0 {
            return Some(at + special.trailing_zeros() as usize / 8);
        }
        at += 8;
    }
    bytes[at.min(bytes.len())..]
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .map(|offset| at + offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_end_matches_byte_search() {
        let mut rng = fastrand::Rng::with_seed(7);
        // Mostly letters, with the bytes that end a plain string and UTF-8
        // lead and continuation bytes now and then.
        let alphabet = b"abcXYZ019 -_.\"\\\x00\x1f\x7f\xc3\xa9\x80\xff";
        for _ in 0..20_000 {
            let len = rng.usize(0..40);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())])
                .collect();
            let start = rng.usize(0..=len);
            let expected = bytes[start..]
                .iter()
                .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
                .map(|offset| start + offset);
            assert_eq!(
                string_end(&bytes, start),
                expected,
                "{bytes:?} from {start}"
            );
        }
    }

    /// Scans `text` and parses it with `serde_json`, and checks that both
    /// give the same fields and values, or that the scanner gave up.
    /// Returns whether the scanner took the line.
    fn scanned_like_serde(text: &str) -> bool {
        let mut scan_intel = Intel::new();
        let mut scan_values: [Vec<Symbol>; 5] = Default::default();
        let scanned = scan_line(text, &mut scan_intel, &mut scan_values);

        let mut serde_intel = Intel::new();
        let mut serde_values: [Vec<Symbol>; 5] = Default::default();
        let mut unknown = Vec::new();
        let parsed = super::super::jsonl::parse_line(
            text,
            &mut serde_intel,
            &mut serde_values,
            &mut unknown,
        );
        let Ok(fields) = scanned else {
            return false;
        };
        let parsed = parsed.unwrap_or_else(|error| panic!("scanner took `{text}`: {error}"));
        assert_eq!(fields.indicator, parsed.indicator, "{text}");
        assert_eq!(fields.last_seen, parsed.last_seen, "{text}");
        assert_eq!(fields.score, parsed.score, "{text}");
        let strings = |intel: &Intel, values: &[Vec<Symbol>; 5]| -> Vec<Vec<String>> {
            values
                .iter()
                .map(|list| list.iter().map(|s| intel.resolve(*s).to_owned()).collect())
                .collect()
        };
        assert_eq!(
            strings(&scan_intel, &scan_values),
            strings(&serde_intel, &serde_values),
            "{text}"
        );
        true
    }

    #[test]
    fn plain_lines_are_scanned() {
        for text in [
            r#"{"indicator": "198.51.100.7", "datasets": ["c2", "ddos"], "score": 80}"#,
            r#"{"indicator":"2001:db8::1","attacker_names":["APT 1"],"last_seen":"2024-05-01T12:00:00Z"}"#,
            r#"{ "indicator" : "192.0.2.0/24" , "target_countries" : [ "fr" , "DE" ] , "score" : 0 }"#,
            r#"{"indicator": "192.0.2.1", "last_seen": null, "score": null, "datasets": null}"#,
            r#"{"indicator": "192.0.2.1", "target_industries": [], "score": -3}"#,
            r#"{"indicator": "192.0.2.1", "attacker_names": ["Ünïcode ☃"]}"#,
            "{}",
        ] {
            assert!(scanned_like_serde(text), "gave up on {text}");
        }
    }

    #[test]
    fn unusual_lines_go_to_serde() {
        for text in [
            r#"{"indicator": "192.0.2.1", "colour": "red"}"#,
            r#"{"indicator": "192.0.2.1", "indicator": "192.0.2.2"}"#,
            r#"{"indicator": "192.0.2.\u0031"}"#,
            r#"{"indicator": "192.0.2.1", "attacker_names": ["a\"b"]}"#,
            "{\"indicator\": \"192.0.2.1\t\"}",
            r#"{"indicator": "192.0.2.1", "score": 80.0}"#,
            r#"{"indicator": "192.0.2.1", "score": 1e2}"#,
            r#"{"indicator": "192.0.2.1", "score": 080}"#,
            r#"{"indicator": "192.0.2.1", "score": 99999999999999999999}"#,
            r#"{"indicator": "192.0.2.1", "score": "80"}"#,
            r#"{"indicator": "192.0.2.1", "datasets": "c2"}"#,
            r#"{"indicator": "192.0.2.1", "datasets": [1]}"#,
            r#"{"indicator": "192.0.2.1", "datasets": ["c2",]}"#,
            r#"{"indicator": "192.0.2.1",}"#,
            r#"{"indicator": "192.0.2.1"} trailing"#,
            r#"{"indicator": "192.0.2.1""#,
            r#"{"indicator": nul}"#,
            r#"["192.0.2.1"]"#,
            "",
        ] {
            assert!(!scanned_like_serde(text), "scanned {text}");
        }
    }

    #[test]
    fn random_lines_scan_like_serde() {
        // Lines built from pieces of valid and broken JSON: whatever the
        // scanner takes, serde_json must read the same way.
        const PIECES: [&str; 22] = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"indicator\"",
            "\"datasets\"",
            "\"score\"",
            "\"last_seen\"",
            "\"target_countries\"",
            "\"192.0.2.1\"",
            "\"fr\"",
            "\"a\\\"b\"",
            "null",
            "7",
            "-0",
            "01",
            "1.5",
            "\"x",
            "\u{2603}",
        ];
        let mut rng = fastrand::Rng::with_seed(3);
        let mut scanned_lines = 0;
        for _ in 0..20_000 {
            let mut text = String::from("{\"indicator\": \"192.0.2.1\"");
            for _ in 0..rng.usize(0..8) {
                text.push_str(PIECES[rng.usize(0..PIECES.len())]);
            }
            if scanned_like_serde(&text) {
                scanned_lines += 1;
            }
        }
        assert!(scanned_lines > 0, "the scanner took no random line");
    }
}
