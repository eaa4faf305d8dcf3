//! The part of the STIX patterning language that names IP addresses.
//!
//! A pattern such as `[ipv4-addr:value = '198.51.100.1' OR
//! ipv6-addr:value IN ('2001:db8::1', '2001:db8::2')]` is parsed whole, by
//! the patterning grammar that STIX 2.0 and 2.1 share, and
//! reduced to the addresses whose presence alone makes it match:
//!
//! - `=` and `ISSUBSET` on `ipv4-addr:value` or `ipv6-addr:value` give their
//!   value (an address or CIDR prefix); `IN` gives each value of its list.
//! - `OR` gives the addresses of every side; a side about something else (a
//!   domain name, a file hash) adds none.
//! - `AND` and `FOLLOWEDBY` with an address on either side are rejected: the
//!   pattern needs more than the address, which a block list cannot express.
//! - Other operators on an address (`!=`, `LIKE`, `MATCHES`, `NOT`, ...) are
//!   rejected for the same reason.
//! - Qualifiers (`WITHIN`, `REPEATS`, `START ... STOP`) are parsed and
//!   ignored, so the address is blocked at all times.
//!
//! Values are classified later by what they parse as, not by the object
//! type in the path, so `[ipv4-addr:value = '2001:db8::5']` yields an IPv6
//! address, and the path's type is kept only to warn about the mismatch.

use std::fmt;

/// An address value of a pattern, with the object type its path named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternAddress {
    /// `ipv4-addr` or `ipv6-addr`.
    pub object_type: &'static str,
    pub value: String,
}

/// Reasons a pattern yields no addresses that can be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("{message} at character {position}")]
    Syntax { position: usize, message: String },
    #[error(
        "`{operator}` combines an address with other conditions, which a block list cannot express"
    )]
    Combined { operator: &'static str },
    #[error("operator `{0}` on an address is not supported; expected `=`, `IN` or `ISSUBSET`")]
    Operator(String),
}

/// Parses `pattern` and returns the addresses that make it match; an empty
/// list for a pattern about something other than IP addresses.
pub fn pattern_addresses(pattern: &str) -> Result<Vec<PatternAddress>, PatternError> {
    let tokens = tokenize(pattern)?;
    let mut parser = Parser {
        tokens,
        next: 0,
        end: pattern.chars().count(),
    };
    let expression = parser.observation_expressions()?;
    if let Some(token) = parser.peek() {
        return Err(parser.unexpected(token));
    }
    match expression {
        Match::Addresses(addresses) => Ok(addresses),
        Match::Other => Ok(Vec::new()),
    }
}

/// The addresses a pattern, or a part of one, matches on.
enum Match {
    /// It matches whenever one of these addresses is seen.
    Addresses(Vec<PatternAddress>),
    /// It is about something else.
    Other,
}

fn either(left: Match, right: Match) -> Match {
    match (left, right) {
        (Match::Addresses(mut left), Match::Addresses(right)) => {
            left.extend(right);
            Match::Addresses(left)
        }
        (Match::Addresses(addresses), Match::Other)
        | (Match::Other, Match::Addresses(addresses)) => Match::Addresses(addresses),
        (Match::Other, Match::Other) => Match::Other,
    }
}

fn both(left: Match, right: Match, operator: &'static str) -> Result<Match, PatternError> {
    match (left, right) {
        (Match::Other, Match::Other) => Ok(Match::Other),
        _ => Err(PatternError::Combined { operator }),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum TokenKind {
    Open,
    Close,
    OpenParen,
    CloseParen,
    Comma,
    /// A keyword, object path, number or boolean.
    Word(String),
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`.
    Comparison(&'static str),
    /// A quoted string, escapes resolved.
    Text(String),
    /// A `t'...'`, `b'...'` or `h'...'` literal.
    Typed(String),
}

#[derive(Clone, Debug)]
struct Token {
    kind: TokenKind,
    /// Position in the pattern, in characters from 1.
    position: usize,
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenKind::Open => f.write_str("["),
            TokenKind::Close => f.write_str("]"),
            TokenKind::OpenParen => f.write_str("("),
            TokenKind::CloseParen => f.write_str(")"),
            TokenKind::Comma => f.write_str(","),
            TokenKind::Word(word) => f.write_str(word),
            TokenKind::Comparison(operator) => f.write_str(operator),
            TokenKind::Text(text) => write!(f, "'{text}'"),
            TokenKind::Typed(text) => f.write_str(text),
        }
    }
}

fn syntax(position: usize, message: impl Into<String>) -> PatternError {
    PatternError::Syntax {
        position,
        message: message.into(),
    }
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, PatternError> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let position = i + 1;
        let simple = match c {
            '[' => Some(TokenKind::Open),
            ']' => Some(TokenKind::Close),
            '(' => Some(TokenKind::OpenParen),
            ')' => Some(TokenKind::CloseParen),
            ',' => Some(TokenKind::Comma),
            _ => None,
        };
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if let Some(kind) = simple {
            tokens.push(Token { kind, position });
            i += 1;
            continue;
        }
        let kind = if c == '\'' {
            let (text, next) = quoted(&chars, i)?;
            i = next;
            TokenKind::Text(text)
        } else if matches!(c, 't' | 'b' | 'h') && chars.get(i + 1) == Some(&'\'') {
            let (text, next) = quoted(&chars, i + 1)?;
            i = next;
            TokenKind::Typed(format!("{c}'{text}'"))
        } else if let Some((operator, length)) = comparison(&chars[i..]) {
            i += length;
            TokenKind::Comparison(operator)
        } else if is_word_char(c) {
            let (word, next) = word(&chars, i)?;
            i = next;
            TokenKind::Word(word)
        } else {
            return Err(syntax(position, format!("unexpected `{c}`")));
        };
        tokens.push(Token { kind, position });
    }
    Ok(tokens)
}

/// Reads a quoted string starting at the quote `chars[start]`; `\'` and
/// `\\` are its only escapes. Returns the text and the index after it.
fn quoted(chars: &[char], start: usize) -> Result<(String, usize), PatternError> {
    let mut text = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\'' => return Ok((text, i + 1)),
            '\\' => match chars.get(i + 1) {
                Some(&escaped @ ('\'' | '\\')) => {
                    text.push(escaped);
                    i += 2;
                }
                _ => return Err(syntax(i + 1, "invalid escape; expected `\\'` or `\\\\`")),
            },
            c => {
                text.push(c);
                i += 1;
            }
        }
    }
    Err(syntax(start + 1, "unterminated string"))
}

fn comparison(rest: &[char]) -> Option<(&'static str, usize)> {
    match rest {
        ['!', '=', ..] => Some(("!=", 2)),
        ['<', '=', ..] => Some(("<=", 2)),
        ['>', '=', ..] => Some((">=", 2)),
        ['=', ..] => Some(("=", 1)),
        ['<', ..] => Some(("<", 1)),
        ['>', ..] => Some((">", 1)),
        _ => None,
    }
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.' | '+')
}

/// Reads a keyword, number or object path. A path may hold quoted
/// components (`file:hashes.'SHA-256'`) and list indices (`to_refs[*]`),
/// which are read as part of the word.
fn word(chars: &[char], start: usize) -> Result<(String, usize), PatternError> {
    let mut word = String::new();
    let mut i = start;
    while i < chars.len() {
        let c = chars[i];
        if is_word_char(c) {
            word.push(c);
            i += 1;
        } else if c == '\'' && word.ends_with('.') {
            let (text, next) = quoted(chars, i)?;
            word.push_str(&format!("'{text}'"));
            i = next;
        } else if c == '[' && word.contains(':') {
            let close = chars[i..].iter().position(|&c| c == ']');
            let Some(close) = close else {
                return Err(syntax(i + 1, "unterminated list index"));
            };
            let index: String = chars[i..=i + close].iter().collect();
            if !index[1..index.len() - 1]
                .chars()
                .all(|c| c == '*' || c.is_ascii_digit())
            {
                break;
            }
            word.push_str(&index);
            i += close + 1;
        } else {
            break;
        }
    }
    Ok((word, i))
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// Length of the pattern in characters, for errors at its end.
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn peek_word(&self, keyword: &str) -> bool {
        matches!(self.peek(), Some(Token { kind: TokenKind::Word(word), .. }) if word == keyword)
    }

    fn advance(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn unexpected(&self, token: &Token) -> PatternError {
        syntax(token.position, format!("unexpected `{}`", token.kind))
    }

    fn expect(&mut self, kind: TokenKind, what: &str) -> Result<(), PatternError> {
        match self.advance() {
            Some(token) if token.kind == kind => Ok(()),
            Some(token) => Err(syntax(
                token.position,
                format!("expected {what}, found `{}`", token.kind),
            )),
            None => Err(syntax(
                self.end,
                format!("expected {what}, found the end of the pattern"),
            )),
        }
    }

    fn expect_word(&mut self, keyword: &str) -> Result<(), PatternError> {
        self.expect(TokenKind::Word(keyword.to_owned()), &format!("`{keyword}`"))
    }

    fn observation_expressions(&mut self) -> Result<Match, PatternError> {
        let mut left = self.observation_or()?;
        while self.peek_word("FOLLOWEDBY") {
            self.advance();
            let right = self.observation_or()?;
            left = both(left, right, "FOLLOWEDBY")?;
        }
        Ok(left)
    }

    fn observation_or(&mut self) -> Result<Match, PatternError> {
        let mut left = self.observation_and()?;
        while self.peek_word("OR") {
            self.advance();
            let right = self.observation_and()?;
            left = either(left, right);
        }
        Ok(left)
    }

    fn observation_and(&mut self) -> Result<Match, PatternError> {
        let mut left = self.qualified_observation()?;
        while self.peek_word("AND") {
            self.advance();
            let right = self.qualified_observation()?;
            left = both(left, right, "AND")?;
        }
        Ok(left)
    }

    fn qualified_observation(&mut self) -> Result<Match, PatternError> {
        let observation = match self.advance() {
            Some(Token {
                kind: TokenKind::Open,
                ..
            }) => {
                let inner = self.comparison_or()?;
                self.expect(TokenKind::Close, "`]`")?;
                inner
            }
            Some(Token {
                kind: TokenKind::OpenParen,
                ..
            }) => {
                let inner = self.observation_expressions()?;
                self.expect(TokenKind::CloseParen, "`)`")?;
                inner
            }
            Some(token) => {
                return Err(syntax(
                    token.position,
                    format!("expected `[` or `(`, found `{}`", token.kind),
                ));
            }
            None => {
                return Err(syntax(
                    self.end,
                    "expected `[`, found the end of the pattern",
                ));
            }
        };
        self.qualifiers()?;
        Ok(observation)
    }

    /// Skips `WITHIN n SECONDS`, `REPEATS n TIMES` and `START t'..' STOP t'..'`.
    fn qualifiers(&mut self) -> Result<(), PatternError> {
        loop {
            if self.peek_word("WITHIN") {
                self.advance();
                self.number()?;
                self.expect_word("SECONDS")?;
            } else if self.peek_word("REPEATS") {
                self.advance();
                self.number()?;
                self.expect_word("TIMES")?;
            } else if self.peek_word("START") {
                self.advance();
                self.timestamp()?;
                self.expect_word("STOP")?;
                self.timestamp()?;
            } else {
                return Ok(());
            }
        }
    }

    fn number(&mut self) -> Result<(), PatternError> {
        match self.advance() {
            Some(Token {
                kind: TokenKind::Word(word),
                ..
            }) if word.parse::<f64>().is_ok() => Ok(()),
            Some(token) => Err(syntax(
                token.position,
                format!("expected a number, found `{}`", token.kind),
            )),
            None => Err(syntax(
                self.end,
                "expected a number, found the end of the pattern",
            )),
        }
    }

    fn timestamp(&mut self) -> Result<(), PatternError> {
        match self.advance() {
            Some(Token {
                kind: TokenKind::Typed(text),
                ..
            }) if text.starts_with("t'") => Ok(()),
            Some(token) => Err(syntax(
                token.position,
                format!("expected a timestamp t'...', found `{}`", token.kind),
            )),
            None => Err(syntax(
                self.end,
                "expected a timestamp, found the end of the pattern",
            )),
        }
    }

    fn comparison_or(&mut self) -> Result<Match, PatternError> {
        let mut left = self.comparison_and()?;
        while self.peek_word("OR") {
            self.advance();
            let right = self.comparison_and()?;
            left = either(left, right);
        }
        Ok(left)
    }

    fn comparison_and(&mut self) -> Result<Match, PatternError> {
        let mut left = self.comparison_primary()?;
        while self.peek_word("AND") {
            self.advance();
            let right = self.comparison_primary()?;
            left = both(left, right, "AND")?;
        }
        Ok(left)
    }

    fn comparison_primary(&mut self) -> Result<Match, PatternError> {
        let Some(token) = self.advance() else {
            return Err(syntax(
                self.end,
                "expected a comparison, found the end of the pattern",
            ));
        };
        let path = match token.kind {
            TokenKind::OpenParen => {
                let inner = self.comparison_or()?;
                self.expect(TokenKind::CloseParen, "`)`")?;
                return Ok(inner);
            }
            TokenKind::Word(word) if word == "EXISTS" => {
                let path = self.object_path()?;
                return match address_type(&path) {
                    Some(_) => Err(PatternError::Operator("EXISTS".to_owned())),
                    None => Ok(Match::Other),
                };
            }
            TokenKind::Word(word) if word.contains(':') => word,
            kind => {
                return Err(syntax(
                    token.position,
                    format!("expected an object path such as ipv4-addr:value, found `{kind}`"),
                ));
            }
        };
        let negated = self.peek_word("NOT");
        if negated {
            self.advance();
        }
        let operator = self.operator()?;
        let values = self.operand(&operator)?;
        let Some(object_type) = address_type(&path) else {
            return Ok(Match::Other);
        };
        if negated {
            return Err(PatternError::Operator(format!("NOT {operator}")));
        }
        if !matches!(operator.as_str(), "=" | "IN" | "ISSUBSET") {
            return Err(PatternError::Operator(operator));
        }
        let addresses = values
            .into_iter()
            .map(|value| PatternAddress { object_type, value })
            .collect();
        Ok(Match::Addresses(addresses))
    }

    fn object_path(&mut self) -> Result<String, PatternError> {
        match self.advance() {
            Some(Token {
                kind: TokenKind::Word(word),
                ..
            }) if word.contains(':') => Ok(word),
            Some(token) => Err(syntax(
                token.position,
                format!("expected an object path, found `{}`", token.kind),
            )),
            None => Err(syntax(
                self.end,
                "expected an object path, found the end of the pattern",
            )),
        }
    }

    fn operator(&mut self) -> Result<String, PatternError> {
        const WORDS: [&str; 5] = ["IN", "LIKE", "MATCHES", "ISSUBSET", "ISSUPERSET"];
        match self.advance() {
            Some(Token {
                kind: TokenKind::Comparison(operator),
                ..
            }) => Ok(operator.to_owned()),
            Some(Token {
                kind: TokenKind::Word(word),
                ..
            }) if WORDS.contains(&word.as_str()) => Ok(word),
            Some(token) => Err(syntax(
                token.position,
                format!("expected a comparison operator, found `{}`", token.kind),
            )),
            None => Err(syntax(
                self.end,
                "expected a comparison operator, found the end of the pattern",
            )),
        }
    }

    /// Reads the right side of a comparison: a list for `IN`, one literal
    /// otherwise. Returns the string values; other literals give none.
    fn operand(&mut self, operator: &str) -> Result<Vec<String>, PatternError> {
        if operator != "IN" {
            return Ok(self.literal()?.into_iter().collect());
        }
        self.expect(TokenKind::OpenParen, "`(` after IN")?;
        let mut values = Vec::new();
        loop {
            values.extend(self.literal()?);
            match self.advance() {
                Some(Token {
                    kind: TokenKind::Comma,
                    ..
                }) => continue,
                Some(Token {
                    kind: TokenKind::CloseParen,
                    ..
                }) => return Ok(values),
                Some(token) => {
                    return Err(syntax(
                        token.position,
                        format!("expected `,` or `)`, found `{}`", token.kind),
                    ));
                }
                None => {
                    return Err(syntax(
                        self.end,
                        "expected `)`, found the end of the pattern",
                    ));
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Option<String>, PatternError> {
        match self.advance() {
            Some(Token {
                kind: TokenKind::Text(text),
                ..
            }) => Ok(Some(text)),
            Some(Token {
                kind: TokenKind::Typed(_),
                ..
            }) => Ok(None),
            Some(Token {
                kind: TokenKind::Word(word),
                ..
            }) if word == "true" || word == "false" || word.parse::<f64>().is_ok() => Ok(None),
            Some(token) => Err(syntax(
                token.position,
                format!("expected a value, found `{}`", token.kind),
            )),
            None => Err(syntax(
                self.end,
                "expected a value, found the end of the pattern",
            )),
        }
    }
}

/// The object type of an address path, or `None` for any other path.
fn address_type(path: &str) -> Option<&'static str> {
    match path {
        "ipv4-addr:value" => Some("ipv4-addr"),
        "ipv6-addr:value" => Some("ipv6-addr"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pattern: &str) -> Vec<String> {
        let addresses = pattern_addresses(pattern).unwrap();
        addresses.into_iter().map(|address| address.value).collect()
    }

    fn error(pattern: &str) -> String {
        pattern_addresses(pattern).unwrap_err().to_string()
    }

    #[test]
    fn equality_and_lists() {
        assert_eq!(
            values("[ipv4-addr:value = '198.51.100.1']"),
            ["198.51.100.1"]
        );
        assert_eq!(
            values("[ipv4-addr:value = '223.166.0.0/15']"),
            ["223.166.0.0/15"]
        );
        assert_eq!(
            values("[ipv6-addr:value IN ('2001:db8::1', '2001:db8::2')]"),
            ["2001:db8::1", "2001:db8::2"]
        );
        assert_eq!(
            values("[ipv4-addr:value ISSUBSET '198.51.100.0/24']"),
            ["198.51.100.0/24"]
        );
    }

    #[test]
    fn or_collects_addresses() {
        assert_eq!(
            values("[ipv4-addr:value = '192.0.2.1' OR ipv4-addr:value = '192.0.2.2']"),
            ["192.0.2.1", "192.0.2.2"]
        );
        assert_eq!(
            values("[ipv4-addr:value = '192.0.2.1'] OR [domain-name:value = 'example.com']"),
            ["192.0.2.1"]
        );
        assert_eq!(
            values("([ipv4-addr:value = '192.0.2.1']) OR ([ipv6-addr:value = '2001:db8::9'])"),
            ["192.0.2.1", "2001:db8::9"]
        );
    }

    #[test]
    fn path_type_kept_for_warning() {
        let addresses = pattern_addresses("[ipv4-addr:value = '2001:db8::5']").unwrap();
        assert_eq!(
            addresses,
            [PatternAddress {
                object_type: "ipv4-addr",
                value: "2001:db8::5".to_owned()
            }]
        );
    }

    #[test]
    fn other_objects_give_nothing() {
        assert!(values("[domain-name:value = 'example.com']").is_empty());
        assert!(values("[file:hashes.'SHA-256' = 'aec0']").is_empty());
        assert!(values("[file:hashes.MD5 = 'a' AND file:size > 10]").is_empty());
        assert!(values("[email-message:to_refs[*].value = 'x@example.com']").is_empty());
        assert!(
            values("[network-traffic:dst_port = 443 AND network-traffic:protocols[0] = 'tcp']")
                .is_empty()
        );
    }

    #[test]
    fn qualifiers_are_ignored() {
        assert_eq!(
            values("[ipv4-addr:value = '192.0.2.1'] WITHIN 600 SECONDS"),
            ["192.0.2.1"]
        );
        assert_eq!(
            values(
                "[ipv4-addr:value = '192.0.2.1'] START t'2016-06-01T00:00:00Z' STOP t'2016-07-01T00:00:00Z'"
            ),
            ["192.0.2.1"]
        );
        assert_eq!(
            values("[ipv4-addr:value = '192.0.2.1'] REPEATS 5 TIMES"),
            ["192.0.2.1"]
        );
    }

    #[test]
    fn combined_conditions_rejected() {
        assert_eq!(
            error("[ipv4-addr:value = '192.0.2.1' AND network-traffic:dst_port = 443]"),
            "`AND` combines an address with other conditions, which a block list cannot express"
        );
        assert!(matches!(
            pattern_addresses(
                "[ipv4-addr:value = '192.0.2.1'] FOLLOWEDBY [domain-name:value = 'a.example']"
            ),
            Err(PatternError::Combined {
                operator: "FOLLOWEDBY"
            })
        ));
        assert_eq!(
            error("[ipv4-addr:value != '192.0.2.1']"),
            "operator `!=` on an address is not supported; expected `=`, `IN` or `ISSUBSET`"
        );
        assert!(matches!(
            pattern_addresses("[ipv4-addr:value NOT = '192.0.2.1']"),
            Err(PatternError::Operator(_))
        ));
        assert!(matches!(
            pattern_addresses("[ipv4-addr:value MATCHES '^192']"),
            Err(PatternError::Operator(_))
        ));
    }

    #[test]
    fn syntax_errors_name_position() {
        assert_eq!(
            error("[ipv4-addr:value = '192.0.2.1'"),
            "expected `]`, found the end of the pattern at character 30"
        );
        assert_eq!(
            error("ipv4-addr:value = '192.0.2.1'"),
            "expected `[` or `(`, found `ipv4-addr:value` at character 1"
        );
        assert_eq!(
            error("[ipv4-addr:value = '192.0.2.1]"),
            "unterminated string at character 20"
        );
        assert_eq!(
            error("[ipv4-addr:value = '192.0.2.1'] junk"),
            "unexpected `junk` at character 33"
        );
        assert_eq!(
            error(""),
            "expected `[`, found the end of the pattern at character 0"
        );
        assert!(pattern_addresses("[ipv4-addr:value IN ('192.0.2.1',]").is_err());
        assert!(pattern_addresses("[ipv4-addr:value = ]").is_err());
        assert!(pattern_addresses("[= '192.0.2.1']").is_err());
        assert!(pattern_addresses("[ipv4-addr:value = 'a\\x']").is_err());
    }

    #[test]
    fn escaped_quotes_in_values() {
        assert_eq!(
            values("[domain-name:value = 'it\\'s' OR ipv4-addr:value = '192.0.2.1']"),
            ["192.0.2.1"]
        );
    }
}
