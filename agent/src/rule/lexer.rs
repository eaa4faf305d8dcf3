//! Splits a rule expression into tokens, each with its byte span.
//!
//! Field names, numbers and addresses are all lexed as one "word" (letters,
//! digits and `_ . : /`) and then told apart: a word with `:` or `/`, or one
//! that starts with a digit, is a number or an address; any other word is a
//! name or a keyword. That is what lets `fe80::1` and `ip.intel.score` share
//! one character class.

use std::net::IpAddr;
use std::ops::Range;

use ipnet::IpNet;

use super::diagnostic::RuleError;

pub(crate) type Span = Range<usize>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// A field name, possibly dotted, or a sighting field after `[*].`.
    Name(String),
    String(String),
    Number(u64),
    Address(IpNet),
    /// A named list, `$name`, without the `$`.
    List(String),
    Any,
    All,
    In,
    And,
    Or,
    Xor,
    Not,
    Equal,
    NotEqual,
    Less,
    LessEqual,
    Greater,
    GreaterEqual,
    LeftParen,
    RightParen,
    LeftBrace,
    RightBrace,
    LeftBracket,
    RightBracket,
    Star,
    Dot,
    Comma,
    End,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub span: Span,
}

/// Lexes all of `source`; the last token is always [`TokenKind::End`].
pub(crate) fn tokenize(source: &str) -> Result<Vec<Token>, RuleError> {
    let mut lexer = Lexer {
        source,
        position: 0,
    };
    let mut tokens = Vec::new();
    loop {
        let token = lexer.next_token()?;
        let end = token.kind == TokenKind::End;
        tokens.push(token);
        if end {
            return Ok(tokens);
        }
    }
}

struct Lexer<'a> {
    source: &'a str,
    position: usize,
}

impl Lexer<'_> {
    fn rest(&self) -> &str {
        &self.source[self.position..]
    }

    fn peek(&self) -> Option<char> {
        self.rest().chars().next()
    }

    fn next_token(&mut self) -> Result<Token, RuleError> {
        self.skip_whitespace();
        let start = self.position;
        let Some(c) = self.peek() else {
            return Ok(Token {
                kind: TokenKind::End,
                span: start..start,
            });
        };
        let kind = match c {
            '"' => self.string()?,
            'r' if self.rest()[1..].starts_with(['"', '#']) => self.raw_string()?,
            '$' => self.list()?,
            c if is_word_start(c) => self.word()?,
            _ => self.symbol(c)?,
        };
        Ok(Token {
            kind,
            span: start..self.position,
        })
    }

    fn skip_whitespace(&mut self) {
        let skipped = self.rest().len() - self.rest().trim_start().len();
        self.position += skipped;
    }

    fn symbol(&mut self, c: char) -> Result<TokenKind, RuleError> {
        let start = self.position;
        let two = self.rest().get(..2).unwrap_or("");
        let (kind, len) = match two {
            "==" => (TokenKind::Equal, 2),
            "!=" => (TokenKind::NotEqual, 2),
            "<=" => (TokenKind::LessEqual, 2),
            ">=" => (TokenKind::GreaterEqual, 2),
            "&&" => (TokenKind::And, 2),
            "||" => (TokenKind::Or, 2),
            "^^" => (TokenKind::Xor, 2),
            _ => match c {
                '!' => (TokenKind::Not, 1),
                '<' => (TokenKind::Less, 1),
                '>' => (TokenKind::Greater, 1),
                '(' => (TokenKind::LeftParen, 1),
                ')' => (TokenKind::RightParen, 1),
                '{' => (TokenKind::LeftBrace, 1),
                '}' => (TokenKind::RightBrace, 1),
                '[' => (TokenKind::LeftBracket, 1),
                ']' => (TokenKind::RightBracket, 1),
                '*' => (TokenKind::Star, 1),
                '.' => (TokenKind::Dot, 1),
                ',' => (TokenKind::Comma, 1),
                '=' | '&' | '|' | '^' => return Err(half_operator(c, start)),
                _ => {
                    let span = start..start + c.len_utf8();
                    return Err(RuleError::new(span, format!("unexpected character `{c}`")));
                }
            },
        };
        self.position += len;
        Ok(kind)
    }

    fn string(&mut self) -> Result<TokenKind, RuleError> {
        let start = self.position;
        self.position += 1;
        let mut value = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(unterminated_string(start..self.position));
            };
            self.position += c.len_utf8();
            match c {
                '"' => return Ok(TokenKind::String(value)),
                '\\' => value.push(self.escape()?),
                _ => value.push(c),
            }
        }
    }

    /// Reads the character after a backslash. Only `\"` and `\\` exist, as in
    /// Cloudflare's expressions.
    fn escape(&mut self) -> Result<char, RuleError> {
        let backslash = self.position - 1;
        match self.peek() {
            Some(c @ ('"' | '\\')) => {
                self.position += 1;
                Ok(c)
            }
            Some(c) => Err(RuleError::new(
                backslash..self.position + c.len_utf8(),
                format!("invalid escape `\\{c}` in string"),
            )
            .with_help("a string may escape only `\\\"` and `\\\\`; use a raw string r\"...\" for other backslashes")),
            None => Err(unterminated_string(backslash..self.position)),
        }
    }

    /// Reads `r"..."` or `r#"..."#` (any number of `#`), which take their
    /// content literally.
    fn raw_string(&mut self) -> Result<TokenKind, RuleError> {
        let start = self.position;
        self.position += 1;
        let hashes = self.rest().len() - self.rest().trim_start_matches('#').len();
        self.position += hashes;
        if self.peek() != Some('"') {
            let span = start..self.position;
            return Err(RuleError::new(span, "expected `\"` to open the raw string"));
        }
        self.position += 1;
        let terminator = format!("\"{}", "#".repeat(hashes));
        let Some(length) = self.rest().find(&terminator) else {
            let span = start..self.source.len();
            return Err(unterminated_string(span));
        };
        let value = self.rest()[..length].to_owned();
        self.position += length + terminator.len();
        Ok(TokenKind::String(value))
    }

    fn list(&mut self) -> Result<TokenKind, RuleError> {
        let start = self.position;
        self.position += 1;
        let length = self
            .rest()
            .find(|c: char| !is_list_char(c))
            .unwrap_or(self.rest().len());
        if length == 0 {
            return Err(
                RuleError::new(start..start + 1, "expected a list name after `$`").with_help(
                    "a named list is written `$name`, with a name from [lists] in the config",
                ),
            );
        }
        let name = self.rest()[..length].to_owned();
        self.position += length;
        Ok(TokenKind::List(name))
    }

    fn word(&mut self) -> Result<TokenKind, RuleError> {
        let start = self.position;
        let length = self
            .rest()
            .find(|c: char| !is_word_char(c))
            .unwrap_or(self.rest().len());
        self.position += length;
        let word = &self.source[start..self.position];
        let span = start..self.position;
        if word.contains([':', '/']) || word.starts_with(|c: char| c.is_ascii_digit()) {
            return literal(word, span);
        }
        Ok(keyword(word).unwrap_or_else(|| TokenKind::Name(word.to_owned())))
    }
}

fn is_word_start(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/')
}

fn is_list_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-')
}

fn keyword(word: &str) -> Option<TokenKind> {
    Some(match word {
        "any" => TokenKind::Any,
        "all" => TokenKind::All,
        "in" => TokenKind::In,
        "and" => TokenKind::And,
        "or" => TokenKind::Or,
        "xor" => TokenKind::Xor,
        "not" => TokenKind::Not,
        "eq" => TokenKind::Equal,
        "ne" => TokenKind::NotEqual,
        "lt" => TokenKind::Less,
        "le" => TokenKind::LessEqual,
        "gt" => TokenKind::Greater,
        "ge" => TokenKind::GreaterEqual,
        _ => return None,
    })
}

/// Reads a word that is a number, an address or a CIDR.
fn literal(word: &str, span: Span) -> Result<TokenKind, RuleError> {
    if word.bytes().all(|b| b.is_ascii_digit()) {
        return word
            .parse()
            .map(TokenKind::Number)
            .map_err(|_| RuleError::new(span, format!("number `{word}` is too large")));
    }
    if word.contains('/') {
        return cidr(word, span).map(TokenKind::Address);
    }
    match word.parse::<IpAddr>() {
        Ok(address) => Ok(TokenKind::Address(IpNet::from(address))),
        Err(_) if looks_like_decimal(word) => {
            Err(RuleError::new(span, format!("invalid number `{word}`"))
                .with_help("numbers in rules are whole numbers, such as `50`"))
        }
        Err(_) => Err(RuleError::new(span, format!("invalid IP address `{word}`"))),
    }
}

fn cidr(word: &str, span: Span) -> Result<IpNet, RuleError> {
    let net: IpNet = word.parse().map_err(|_| {
        RuleError::new(span.clone(), format!("invalid CIDR `{word}`"))
            .with_help("a CIDR is an address, `/` and a prefix length, such as `192.0.2.0/24` or `2001:db8::/32`")
    })?;
    if net.trunc() != net {
        return Err(RuleError::new(
            span,
            format!("CIDR `{word}` has bits set after its prefix length"),
        )
        .with_help(format!("did you mean `{}`?", net.trunc())));
    }
    Ok(net)
}

fn looks_like_decimal(word: &str) -> bool {
    word.split_once('.').is_some_and(|(whole, fraction)| {
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        digits(whole) && digits(fraction)
    })
}

fn unterminated_string(span: Span) -> RuleError {
    RuleError::new(span, "unterminated string").with_help("close the string with `\"`")
}

/// Builds the error for `=`, `&`, `|` or `^` written alone where the operator is the
/// doubled character.
fn half_operator(c: char, start: usize) -> RuleError {
    RuleError::new(start..start + 1, format!("expected `{c}{c}`, found `{c}`"))
}
