//! Parses tokens into a syntax tree that keeps every span, before any field
//! or type is checked.
//!
//! Grammar, loosest first (Cloudflare's precedence):
//!
//! ```text
//! expression := xor  (("or"  | "||") xor)*
//! xor        := and  (("xor" | "^^") and)*
//! and        := not  (("and" | "&&") not)*
//! not        := ("not" | "!") not | primary
//! primary    := "(" expression ")" | ("any" | "all") "(" expression ")" | comparison
//! comparison := field operator value | field "in" set | field "in" $list
//! field      := name ("[*]" ("." name)?)?
//! set        := "{" value+ "}"
//! ```

use ipnet::IpNet;

use super::ast::{CompareOp, Quantifier};
use super::diagnostic::RuleError;
use super::lexer::{Span, Token, TokenKind, tokenize};

/// Nesting deeper than this is rejected, so that a hostile or generated rule
/// cannot overflow the stack of the recursive parser and evaluator.
pub(crate) const MAX_DEPTH: usize = 128;

#[derive(Clone, Debug)]
pub(crate) enum Syntax {
    Not(Box<Syntax>),
    And(Vec<Syntax>),
    Or(Vec<Syntax>),
    Xor(Vec<Syntax>),
    Quantified {
        quantifier: Quantifier,
        keyword: Span,
        body: Box<Syntax>,
    },
    Comparison(Comparison),
}

#[derive(Clone, Debug)]
pub(crate) struct Comparison {
    pub field: FieldPath,
    pub operator_span: Span,
    pub operation: Operation,
}

/// A field as written: `ip.intel.events`, `[*]`, `.dataset`.
#[derive(Clone, Debug)]
pub(crate) struct FieldPath {
    pub name: String,
    pub name_span: Span,
    /// Span of `[*]`, when present.
    pub star: Option<Span>,
    /// The name after `[*].`, when present.
    pub member: Option<(String, Span)>,
}

impl FieldPath {
    /// Returns the span from the name to the end of `[*]` or of the member.
    pub fn span(&self) -> Span {
        let end = match (&self.member, &self.star) {
            (Some((_, span)), _) | (None, Some(span)) => span.end,
            (None, None) => self.name_span.end,
        };
        self.name_span.start..end
    }

    /// Returns the path as written, with Cloudflare's alias if the rule used
    /// one.
    pub fn text(&self) -> String {
        let mut text = self.name.clone();
        if self.star.is_some() {
            text.push_str("[*]");
        }
        if let Some((member, _)) = &self.member {
            text.push('.');
            text.push_str(member);
        }
        text
    }
}

/// The operator and what it compares the field with.
#[derive(Clone, Debug)]
pub(crate) enum Operation {
    Compare(CompareOp, Literal),
    /// `in {...}`, with the span of the braces.
    InSet(Vec<Literal>, Span),
    /// `in $name`, with the span of `$name`.
    InList(String, Span),
}

impl Operation {
    /// Returns the span of what follows the operator.
    pub fn operand_span(&self) -> Span {
        match self {
            Operation::Compare(_, literal) => literal.span.clone(),
            Operation::InSet(_, span) | Operation::InList(_, span) => span.clone(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Compare(CompareOp),
    In,
}

#[derive(Clone, Debug)]
pub(crate) struct Literal {
    pub value: LiteralValue,
    pub span: Span,
}

#[derive(Clone, Debug)]
pub(crate) enum LiteralValue {
    String(String),
    Number(u64),
    Address(IpNet),
}

impl LiteralValue {
    /// Describes the literal for a type error, such as "string `\"FR\"`".
    pub fn describe(&self, text: &str) -> String {
        let kind = match self {
            LiteralValue::String(_) => "string",
            LiteralValue::Number(_) => "number",
            LiteralValue::Address(_) => "IP address",
        };
        format!("{kind} `{text}`")
    }
}

pub(crate) fn parse_syntax(source: &str) -> Result<Syntax, RuleError> {
    let tokens = tokenize(source)?;
    let mut parser = Parser {
        source,
        tokens,
        position: 0,
        depth: 0,
    };
    let syntax = parser.expression()?;
    let token = parser.peek();
    if token.kind != TokenKind::End {
        return Err(parser.unexpected("`and`, `or`, `xor` or the end of the expression"));
    }
    Ok(syntax)
}

struct Parser<'a> {
    source: &'a str,
    tokens: Vec<Token>,
    position: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        &self.tokens[self.position]
    }

    fn advance(&mut self) -> Token {
        let token = self.tokens[self.position].clone();
        if token.kind != TokenKind::End {
            self.position += 1;
        }
        token
    }

    fn eat(&mut self, kind: &TokenKind) -> Option<Token> {
        (self.peek().kind == *kind).then(|| self.advance())
    }

    fn expect(&mut self, kind: &TokenKind, expected: &str) -> Result<Token, RuleError> {
        self.eat(kind).ok_or_else(|| self.unexpected(expected))
    }

    /// Builds an error at the next token: "expected X, found Y".
    fn unexpected(&self, expected: &str) -> RuleError {
        let token = self.peek();
        RuleError::new(
            token.span.clone(),
            format!("expected {expected}, found {}", self.describe(token)),
        )
    }

    fn describe(&self, token: &Token) -> String {
        match token.kind {
            TokenKind::End => "end of input".to_owned(),
            _ => format!("`{}`", &self.source[token.span.clone()]),
        }
    }

    fn expression(&mut self) -> Result<Syntax, RuleError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let span = self.peek().span.clone();
            return Err(RuleError::new(
                span,
                format!("expression nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        let syntax = self.operands(&TokenKind::Or, Syntax::Or, Parser::xor);
        self.depth -= 1;
        syntax
    }

    fn xor(&mut self) -> Result<Syntax, RuleError> {
        self.operands(&TokenKind::Xor, Syntax::Xor, Parser::and)
    }

    fn and(&mut self) -> Result<Syntax, RuleError> {
        self.operands(&TokenKind::And, Syntax::And, Parser::not)
    }

    /// Parses `operand (connective operand)*` into one n-ary node, or the
    /// lone operand.
    fn operands(
        &mut self,
        connective: &TokenKind,
        node: fn(Vec<Syntax>) -> Syntax,
        operand: fn(&mut Self) -> Result<Syntax, RuleError>,
    ) -> Result<Syntax, RuleError> {
        let mut operands = vec![operand(self)?];
        while self.eat(connective).is_some() {
            operands.push(operand(self)?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            node(operands)
        })
    }

    fn not(&mut self) -> Result<Syntax, RuleError> {
        let mut negations = 0;
        while self.eat(&TokenKind::Not).is_some() {
            negations += 1;
        }
        let mut syntax = self.primary()?;
        for _ in 0..negations {
            syntax = Syntax::Not(Box::new(syntax));
        }
        Ok(syntax)
    }

    fn primary(&mut self) -> Result<Syntax, RuleError> {
        match self.peek().kind {
            TokenKind::LeftParen => {
                self.advance();
                let inner = self.expression()?;
                self.expect(&TokenKind::RightParen, "`)`")?;
                Ok(inner)
            }
            TokenKind::Any => self.quantified(Quantifier::Any),
            TokenKind::All => self.quantified(Quantifier::All),
            TokenKind::Name(_) => self.comparison().map(Syntax::Comparison),
            _ => Err(self.unexpected("a field, `not`, `any(`, `all(` or `(`")),
        }
    }

    fn quantified(&mut self, quantifier: Quantifier) -> Result<Syntax, RuleError> {
        let keyword = self.advance().span;
        let keyword_text = quantifier.keyword();
        self.expect(
            &TokenKind::LeftParen,
            &format!("`(` after `{keyword_text}`"),
        )?;
        let body = self.expression()?;
        self.expect(&TokenKind::RightParen, "`)`")?;
        Ok(Syntax::Quantified {
            quantifier,
            keyword,
            body: Box::new(body),
        })
    }

    fn comparison(&mut self) -> Result<Comparison, RuleError> {
        let field = self.field()?;
        let (operator, operator_span) = self.operator(&field)?;
        let operation = match operator {
            Operator::In => self.set_or_list()?,
            Operator::Compare(operator) => Operation::Compare(operator, self.value_operand()?),
        };
        Ok(Comparison {
            field,
            operator_span,
            operation,
        })
    }

    fn field(&mut self) -> Result<FieldPath, RuleError> {
        let token = self.advance();
        let TokenKind::Name(name) = token.kind else {
            unreachable!("primary() calls comparison() only at a name");
        };
        let mut field = FieldPath {
            name,
            name_span: token.span,
            star: None,
            member: None,
        };
        let Some(open) = self.eat(&TokenKind::LeftBracket) else {
            return Ok(field);
        };
        if self.eat(&TokenKind::Star).is_none() {
            return Err(self.unexpected("`*`").with_help(
                "array elements are not read by index; write `[*]` inside any() or all()",
            ));
        }
        let close = self.expect(&TokenKind::RightBracket, "`]`")?;
        field.star = Some(open.span.start..close.span.end);
        if self.eat(&TokenKind::Dot).is_some() {
            let token = self.peek().clone();
            let TokenKind::Name(member) = token.kind else {
                return Err(self.unexpected("a field name after `[*].`"));
            };
            self.advance();
            field.member = Some((member, token.span));
        }
        Ok(field)
    }

    fn operator(&mut self, field: &FieldPath) -> Result<(Operator, Span), RuleError> {
        let token = self.peek().clone();
        let operator = match token.kind {
            TokenKind::Equal => Operator::Compare(CompareOp::Eq),
            TokenKind::NotEqual => Operator::Compare(CompareOp::Ne),
            TokenKind::Less => Operator::Compare(CompareOp::Lt),
            TokenKind::LessEqual => Operator::Compare(CompareOp::Le),
            TokenKind::Greater => Operator::Compare(CompareOp::Gt),
            TokenKind::GreaterEqual => Operator::Compare(CompareOp::Ge),
            TokenKind::In => Operator::In,
            TokenKind::Not => {
                let text = field.text();
                return Err(self
                    .unexpected("an operator (`==`, `!=`, `<`, `<=`, `>`, `>=` or `in`)")
                    .with_help(format!(
                        "negate the whole comparison: `not {text} in {{...}}`"
                    )));
            }
            _ => {
                return Err(
                    self.unexpected("an operator (`==`, `!=`, `<`, `<=`, `>`, `>=` or `in`)")
                );
            }
        };
        self.advance();
        Ok((operator, token.span))
    }

    fn value_operand(&mut self) -> Result<Literal, RuleError> {
        if self.peek().kind == TokenKind::LeftBrace {
            return Err(self
                .unexpected("a value")
                .with_help("compare with a set using `in`, as in `ip.src in {192.0.2.0/24}`"));
        }
        self.literal()
    }

    fn set_or_list(&mut self) -> Result<Operation, RuleError> {
        let token = self.peek().clone();
        match token.kind {
            TokenKind::List(name) => {
                self.advance();
                Ok(Operation::InList(name, token.span))
            }
            TokenKind::LeftBrace => self.set(),
            _ => Err(self.unexpected("`{` or a `$list` after `in`")),
        }
    }

    fn set(&mut self) -> Result<Operation, RuleError> {
        let open = self.advance().span;
        let mut items = Vec::new();
        loop {
            match self.peek().kind {
                TokenKind::RightBrace => break,
                TokenKind::Comma => {
                    return Err(RuleError::new(
                        self.peek().span.clone(),
                        "values in a set are separated by spaces, not commas",
                    )
                    .with_help("write the set as `{\"a\" \"b\"}`"));
                }
                TokenKind::End => return Err(self.unexpected("`}`")),
                _ => items.push(self.literal()?),
            }
        }
        let close = self.advance().span;
        let span = open.start..close.end;
        if items.is_empty() {
            return Err(RuleError::new(span, "a set needs at least one value"));
        }
        Ok(Operation::InSet(items, span))
    }

    fn literal(&mut self) -> Result<Literal, RuleError> {
        let token = self.peek().clone();
        let value = match token.kind {
            TokenKind::String(value) => LiteralValue::String(value),
            TokenKind::Number(value) => LiteralValue::Number(value),
            TokenKind::Address(net) => LiteralValue::Address(net),
            TokenKind::Name(_) => {
                return Err(self
                    .unexpected("a value (a string, number or IP address)")
                    .with_help("strings are written in double quotes, such as \"ddos\""));
            }
            _ => return Err(self.unexpected("a value (a string, number or IP address)")),
        };
        self.advance();
        Ok(Literal {
            value,
            span: token.span,
        })
    }
}
