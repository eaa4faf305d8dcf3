//! Resolves fields and checks types, turning the syntax tree into an
//! [`Expr`](super::Expr)'s formula of predicates.

use super::Lists;
use super::ast::{CompareOp, EventTest, Formula, NumberTest, Predicate, Quantifier, ValueTest};
use super::country;
use super::diagnostic::RuleError;
use super::field::{self, EventField, Field, NumberField, TextField};
use super::lexer::Span;
use super::netset::NetSet;
use super::parser::{Comparison, FieldPath, Literal, LiteralValue, Operation, Syntax};

pub(crate) fn check(
    syntax: &Syntax,
    source: &str,
    lists: &Lists,
) -> Result<Formula<Predicate>, RuleError> {
    let checker = Checker { source, lists };
    build(syntax, &mut |leaf| checker.top_level(leaf))
}

/// The array that one any() or all() iterates over, fixed by its first
/// comparison.
#[derive(Clone, Copy)]
enum Binding {
    Values(TextField),
    Events,
}

struct Checker<'a> {
    source: &'a str,
    lists: &'a Lists,
}

/// Maps the connectives of `syntax` onto a formula and hands every
/// comparison and quantified block to `leaf`.
fn build<A>(
    syntax: &Syntax,
    leaf: &mut impl FnMut(&Syntax) -> Result<Formula<A>, RuleError>,
) -> Result<Formula<A>, RuleError> {
    match syntax {
        Syntax::Not(inner) => Ok(Formula::Not(Box::new(build(inner, leaf)?))),
        Syntax::And(operands) => Ok(join(Connective::And, build_all(operands, leaf)?)),
        Syntax::Or(operands) => Ok(join(Connective::Or, build_all(operands, leaf)?)),
        Syntax::Xor(operands) => Ok(join(Connective::Xor, build_all(operands, leaf)?)),
        Syntax::Quantified { .. } | Syntax::Comparison(_) => leaf(syntax),
    }
}

fn build_all<A>(
    operands: &[Syntax],
    leaf: &mut impl FnMut(&Syntax) -> Result<Formula<A>, RuleError>,
) -> Result<Vec<Formula<A>>, RuleError> {
    operands
        .iter()
        .map(|operand| build(operand, leaf))
        .collect()
}

#[derive(Clone, Copy)]
enum Connective {
    And,
    Or,
    Xor,
}

/// Joins operands with a connective, splicing in the operands of any operand
/// that uses the same one, so that `a and (b and c)` and `a and b and c`
/// become the same formula.
fn join<A>(connective: Connective, operands: Vec<Formula<A>>) -> Formula<A> {
    let mut flat = Vec::with_capacity(operands.len());
    for operand in operands {
        match (connective, operand) {
            (Connective::And, Formula::And(inner))
            | (Connective::Or, Formula::Or(inner))
            | (Connective::Xor, Formula::Xor(inner)) => flat.extend(inner),
            (_, operand) => flat.push(operand),
        }
    }
    match connective {
        Connective::And => Formula::And(flat),
        Connective::Or => Formula::Or(flat),
        Connective::Xor => Formula::Xor(flat),
    }
}

impl Checker<'_> {
    fn text(&self, span: &Span) -> &str {
        &self.source[span.clone()]
    }

    fn top_level(&self, syntax: &Syntax) -> Result<Formula<Predicate>, RuleError> {
        match syntax {
            Syntax::Quantified {
                quantifier, body, ..
            } => self.quantified(*quantifier, body).map(Formula::Atom),
            Syntax::Comparison(comparison) => self.top_level_comparison(comparison),
            _ => unreachable!("build() passes only comparisons and quantified blocks"),
        }
    }

    fn top_level_comparison(
        &self,
        comparison: &Comparison,
    ) -> Result<Formula<Predicate>, RuleError> {
        let path = &comparison.field;
        match resolve_field(path)? {
            Field::Array(_) | Field::Events => Err(self.array_outside_quantifier(comparison)),
            Field::Number(number) => {
                reject_star(path, "a number")?;
                let test = self.number_test(comparison, number)?;
                Ok(Formula::Atom(Predicate::Number {
                    field: number,
                    test,
                }))
            }
            Field::Source => {
                reject_star(path, "an IP address")?;
                self.source_comparison(comparison)
            }
        }
    }

    fn array_outside_quantifier(&self, comparison: &Comparison) -> RuleError {
        let path = &comparison.field;
        let member = path.member.as_ref().map(|(name, _)| format!(".{name}"));
        let example = format!(
            "any({}[*]{} {} {})",
            path.name,
            member.as_deref().unwrap_or(""),
            self.text(&comparison.operator_span),
            self.text(&comparison.operation.operand_span()),
        );
        RuleError::new(
            path.span(),
            format!(
                "`{}` is an array, so it can be compared only inside any() or all()",
                path.name
            ),
        )
        .with_help(format!("write `{example}`"))
    }

    fn source_comparison(&self, comparison: &Comparison) -> Result<Formula<Predicate>, RuleError> {
        let subject = comparison.field.text();
        match &comparison.operation {
            Operation::Compare(operator @ (CompareOp::Eq | CompareOp::Ne), literal) => {
                let net = self.address(literal, &subject)?;
                if net.prefix_len() != net.max_prefix_len() {
                    return Err(RuleError::new(
                        literal.span.clone(),
                        format!("`{}` compares with one address, found CIDR `{net}`", operator.symbol()),
                    )
                    .with_help(format!("match a network with `in`: `{subject} in {{{net}}}`")));
                }
                let atom = Formula::Atom(Predicate::Source {
                    nets: NetSet::new([net]),
                    list: None,
                });
                Ok(match operator {
                    CompareOp::Ne => Formula::Not(Box::new(atom)),
                    _ => atom,
                })
            }
            Operation::Compare(operator, _) => Err(RuleError::new(
                comparison.operator_span.clone(),
                format!("`{}` compares numbers, but `{subject}` is an IP address", operator.symbol()),
            )
            .with_help("match a range of addresses with `in` and a CIDR, such as `ip.src in {192.0.2.0/24}`")),
            Operation::InSet(items, _) => {
                let nets = items
                    .iter()
                    .map(|literal| self.address(literal, &subject))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Formula::Atom(Predicate::Source {
                    nets: NetSet::new(nets),
                    list: None,
                }))
            }
            Operation::InList(name, span) => self.named_list(name, span),
        }
    }

    fn named_list(&self, name: &str, span: &Span) -> Result<Formula<Predicate>, RuleError> {
        let Some(nets) = self.lists.get(name) else {
            let help = match field::closest(name, self.lists.keys().map(String::as_str)) {
                Some(known) => format!("did you mean `${known}`?"),
                None => format!("define `{name}` under [lists] in the config"),
            };
            return Err(
                RuleError::new(span.clone(), format!("unknown list `${name}`")).with_help(help),
            );
        };
        Ok(Formula::Atom(Predicate::Source {
            nets: NetSet::new(nets.iter().copied()),
            list: Some(name.to_owned()),
        }))
    }

    fn address(&self, literal: &Literal, subject: &str) -> Result<ipnet::IpNet, RuleError> {
        match &literal.value {
            LiteralValue::Address(net) => Ok(*net),
            other => {
                let error = self.type_error(literal, other, subject, "an IP address");
                Err(match other {
                    LiteralValue::String(_) => {
                        error.with_help("write addresses without quotes, such as `192.0.2.1`")
                    }
                    _ => error,
                })
            }
        }
    }

    fn type_error(
        &self,
        literal: &Literal,
        value: &LiteralValue,
        subject: &str,
        kind: &str,
    ) -> RuleError {
        RuleError::new(
            literal.span.clone(),
            format!(
                "`{subject}` is {kind} and cannot be compared with {}",
                value.describe(self.text(&literal.span))
            ),
        )
    }

    fn number_test(
        &self,
        comparison: &Comparison,
        field: NumberField,
    ) -> Result<NumberTest, RuleError> {
        let subject = comparison.field.text();
        match &comparison.operation {
            Operation::Compare(operator, literal) => Ok(NumberTest::Compare {
                operator: *operator,
                value: self.number(literal, field, &subject)?,
            }),
            Operation::InSet(items, _) => {
                let mut values = items
                    .iter()
                    .map(|literal| self.number(literal, field, &subject))
                    .collect::<Result<Vec<_>, _>>()?;
                values.sort_unstable();
                values.dedup();
                Ok(NumberTest::In(values.into_boxed_slice()))
            }
            Operation::InList(name, span) => Err(list_on_non_address(name, span, &subject)),
        }
    }

    fn number(
        &self,
        literal: &Literal,
        field: NumberField,
        subject: &str,
    ) -> Result<u64, RuleError> {
        let LiteralValue::Number(value) = literal.value else {
            return Err(self.type_error(literal, &literal.value, subject, "a number"));
        };
        if let Some(max) = field.max()
            && value > max
        {
            return Err(RuleError::new(
                literal.span.clone(),
                format!("`{subject}` ranges from 0 to {max}, so it is never {value}"),
            ));
        }
        Ok(value)
    }

    fn value_test(
        &self,
        comparison: &Comparison,
        field: TextField,
    ) -> Result<ValueTest, RuleError> {
        let subject = comparison.field.text();
        match &comparison.operation {
            Operation::Compare(operator @ (CompareOp::Eq | CompareOp::Ne), literal) => {
                let value = self.string(literal, field, &subject)?;
                Ok(match operator {
                    CompareOp::Ne => ValueTest::Ne(value),
                    _ => ValueTest::Eq(value),
                })
            }
            Operation::Compare(operator, _) => Err(RuleError::new(
                comparison.operator_span.clone(),
                format!(
                    "`{}` compares numbers, but `{subject}` is a string",
                    operator.symbol()
                ),
            )
            .with_help("compare strings with `==`, `!=` or `in`")),
            Operation::InSet(items, _) => {
                let mut values = items
                    .iter()
                    .map(|literal| self.string(literal, field, &subject))
                    .collect::<Result<Vec<_>, _>>()?;
                values.sort_unstable();
                values.dedup();
                Ok(ValueTest::In(values.into_boxed_slice()))
            }
            Operation::InList(name, span) => Err(list_on_non_address(name, span, &subject)),
        }
    }

    fn string(
        &self,
        literal: &Literal,
        field: TextField,
        subject: &str,
    ) -> Result<String, RuleError> {
        let LiteralValue::String(value) = &literal.value else {
            return Err(self
                .type_error(literal, &literal.value, subject, "a string")
                .with_help("write strings in double quotes, such as \"ddos\""));
        };
        if field.is_country() && !country::is_assigned(value) {
            return Err(RuleError::new(
                literal.span.clone(),
                format!("`{value}` is not an ISO 3166-1 alpha-2 country code"),
            )
            .with_help(country::help(value)));
        }
        Ok(value.clone())
    }

    fn quantified(&self, quantifier: Quantifier, body: &Syntax) -> Result<Predicate, RuleError> {
        reject_nested_quantifier(body, quantifier)?;
        let first = first_comparison(body);
        let binding = match resolve_field(&first.field)? {
            Field::Array(field) => Binding::Values(field),
            Field::Events => Binding::Events,
            Field::Number(_) | Field::Source => {
                return Err(RuleError::new(
                    first.field.span(),
                    format!(
                        "{}() needs an array field such as `ip.intel.datasets[*]`, found `{}`",
                        quantifier.keyword(),
                        first.field.text()
                    ),
                )
                .with_help(format!(
                    "compare `{}` outside {}()",
                    first.field.name,
                    quantifier.keyword()
                )));
            }
        };
        match binding {
            Binding::Values(field) => {
                let test = build(body, &mut |leaf| {
                    let comparison = as_comparison(leaf);
                    self.check_binding(comparison, first, binding, quantifier)?;
                    self.value_test(comparison, field).map(Formula::Atom)
                })?;
                Ok(Predicate::Array {
                    quantifier,
                    field,
                    test,
                })
            }
            Binding::Events => {
                let test = build(body, &mut |leaf| {
                    let comparison = as_comparison(leaf);
                    self.check_binding(comparison, first, binding, quantifier)?;
                    self.event_test(comparison).map(Formula::Atom)
                })?;
                Ok(Predicate::Events { quantifier, test })
            }
        }
    }

    /// Checks that a comparison inside any() or all() reads the same array
    /// as the block's first comparison, through `[*]`.
    fn check_binding(
        &self,
        comparison: &Comparison,
        first: &Comparison,
        binding: Binding,
        quantifier: Quantifier,
    ) -> Result<(), RuleError> {
        let path = &comparison.field;
        let field = resolve_field(path)?;
        let same = match (binding, field) {
            (Binding::Values(bound), Field::Array(field)) => bound == field,
            (Binding::Events, Field::Events) => true,
            _ => false,
        };
        if !same {
            return Err(self.binding_mismatch(comparison, first, field, quantifier));
        }
        if path.star.is_none() {
            return Err(RuleError::new(
                path.name_span.clone(),
                format!("expected `[*]` after `{}`", path.name),
            )
            .with_help(format!(
                "inside {}(), array elements are read as `{}[*]`",
                quantifier.keyword(),
                path.name
            )));
        }
        match (binding, &path.member) {
            (Binding::Values(_), Some((member, span))) => Err(RuleError::new(
                span.clone(),
                format!(
                    "`{}[*]` is a string, which has no field `{member}`",
                    path.name
                ),
            )
            .with_help("fields of one sighting are read through `ip.intel.events[*]`")),
            (Binding::Events, None) => Err(RuleError::new(
                path.span(),
                format!(
                    "expected a sighting field after `{}[*]`, such as `.dataset`",
                    path.name
                ),
            )),
            _ => Ok(()),
        }
    }

    fn binding_mismatch(
        &self,
        comparison: &Comparison,
        first: &Comparison,
        field: Field,
        quantifier: Quantifier,
    ) -> RuleError {
        let keyword = quantifier.keyword();
        let span = comparison.field.span();
        match field {
            Field::Number(_) | Field::Source => RuleError::new(
                span,
                format!(
                    "inside {keyword}(), every comparison must read `{}[*]`, but this one reads `{}`",
                    first.field.name, comparison.field.name
                ),
            )
            .with_help(format!("move the comparison of `{}` out of {keyword}()", comparison.field.name)),
            Field::Array(_) | Field::Events => RuleError::new(
                span,
                format!(
                    "{keyword}() reads one array, but this comparison reads `{}` and the first one reads `{}`",
                    comparison.field.name, first.field.name
                ),
            )
            .with_help(format!(
                "use one {keyword}() per field, or `ip.intel.events[*]` to require both within one sighting"
            )),
        }
    }

    fn event_test(&self, comparison: &Comparison) -> Result<EventTest, RuleError> {
        let Some((member, span)) = &comparison.field.member else {
            unreachable!("check_binding() requires a member inside ip.intel.events[*]");
        };
        match field::lookup_event(member) {
            Some(EventField::Text(field)) => Ok(EventTest::Text {
                field,
                test: self.value_test(comparison, field)?,
            }),
            Some(EventField::Number(field)) => Ok(EventTest::Number {
                field,
                test: self.number_test(comparison, field)?,
            }),
            None => Err(
                RuleError::new(span.clone(), format!("unknown sighting field `{member}`"))
                    .with_help(field::unknown_event_field_help(member)),
            ),
        }
    }
}

fn resolve_field(path: &FieldPath) -> Result<Field, RuleError> {
    field::lookup(&path.name).ok_or_else(|| {
        RuleError::new(
            path.name_span.clone(),
            format!("unknown field `{}`", path.name),
        )
        .with_help(field::unknown_field_help(&path.name))
    })
}

fn reject_star(path: &FieldPath, kind: &str) -> Result<(), RuleError> {
    match &path.star {
        Some(star) => Err(RuleError::new(
            star.clone(),
            format!(
                "`{}` is {kind}, not an array, so it takes no `[*]`",
                path.name
            ),
        )),
        None => Ok(()),
    }
}

fn reject_nested_quantifier(body: &Syntax, outer: Quantifier) -> Result<(), RuleError> {
    match body {
        Syntax::Not(inner) => reject_nested_quantifier(inner, outer),
        Syntax::And(operands) | Syntax::Or(operands) | Syntax::Xor(operands) => operands
            .iter()
            .try_for_each(|operand| reject_nested_quantifier(operand, outer)),
        Syntax::Quantified {
            quantifier,
            keyword,
            ..
        } => Err(RuleError::new(
            keyword.clone(),
            format!(
                "{}() cannot contain {}()",
                outer.keyword(),
                quantifier.keyword()
            ),
        )
        .with_help("combine the two blocks outside, as in `any(...) and any(...)`")),
        Syntax::Comparison(_) => Ok(()),
    }
}

/// Returns the leftmost comparison. The body of any() contains at least one,
/// and no quantified blocks once [`reject_nested_quantifier`] passed.
fn first_comparison(body: &Syntax) -> &Comparison {
    match body {
        Syntax::Not(inner) => first_comparison(inner),
        Syntax::And(operands) | Syntax::Or(operands) | Syntax::Xor(operands) => {
            first_comparison(&operands[0])
        }
        Syntax::Comparison(comparison) => comparison,
        Syntax::Quantified { .. } => unreachable!("nested any() and all() are rejected first"),
    }
}

fn as_comparison(leaf: &Syntax) -> &Comparison {
    match leaf {
        Syntax::Comparison(comparison) => comparison,
        _ => unreachable!("nested any() and all() are rejected first"),
    }
}

fn list_on_non_address(name: &str, span: &Span, subject: &str) -> RuleError {
    RuleError::new(
        span.clone(),
        format!(
            "`${name}` is a list of addresses, so only `ip.src` can be tested against it, not `{subject}`"
        ),
    )
}
