//! The checked expression: a boolean formula whose atoms are predicates over
//! one address, and the canonical text form of both.

use std::fmt;

use ipnet::IpNet;

use crate::intel::Attribute;

use super::field::{NumberField, TextField};
use super::netset::NetSet;

/// A checked rule expression.
///
/// Its `Display` is the canonical form: `ip.intel.*` names rather than
/// Cloudflare's aliases, keywords rather than symbols, sets sorted, and only
/// the parentheses that precedence needs. The canonical form parses back to
/// an equal `Expr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expr {
    pub(crate) formula: Formula<Predicate>,
}

impl Expr {
    /// Returns the distinct predicates, in the order they first appear.
    pub fn predicates(&self) -> Vec<Predicate> {
        let mut seen = std::collections::HashSet::new();
        let mut found = Vec::new();
        self.formula.visit_atoms(&mut |predicate| {
            if seen.insert(predicate) {
                found.push(predicate.clone());
            }
        });
        found
    }

    /// Evaluates the boolean structure, taking the truth of each predicate
    /// from `value_of`. `and` and `or` stop at the first operand that decides
    /// them, so `value_of` may not see every predicate.
    pub fn eval_with(&self, value_of: &mut dyn FnMut(&Predicate) -> bool) -> bool {
        self.formula.eval(&mut |predicate| value_of(predicate))
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.formula.fmt(f)
    }
}

/// A boolean combination of atoms. `And`, `Or` and `Xor` hold two or more
/// operands; `Xor` is true when an odd number of them are.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Formula<A> {
    Atom(A),
    Not(Box<Formula<A>>),
    And(Vec<Formula<A>>),
    Or(Vec<Formula<A>>),
    Xor(Vec<Formula<A>>),
}

impl<A> Formula<A> {
    pub fn eval<F: FnMut(&A) -> bool>(&self, atom: &mut F) -> bool {
        match self {
            Formula::Atom(value) => atom(value),
            Formula::Not(inner) => !inner.eval(atom),
            Formula::And(operands) => operands.iter().all(|operand| operand.eval(atom)),
            Formula::Or(operands) => operands.iter().any(|operand| operand.eval(atom)),
            Formula::Xor(operands) => operands
                .iter()
                .fold(false, |odd, operand| odd ^ operand.eval(atom)),
        }
    }

    /// Calls `visit` on every atom, left to right.
    pub fn visit_atoms<'a>(&'a self, visit: &mut impl FnMut(&'a A)) {
        match self {
            Formula::Atom(value) => visit(value),
            Formula::Not(inner) => inner.visit_atoms(visit),
            Formula::And(operands) | Formula::Or(operands) | Formula::Xor(operands) => {
                for operand in operands {
                    operand.visit_atoms(visit);
                }
            }
        }
    }

    /// Returns whether any atom satisfies `test`.
    pub fn any_atom(&self, test: &mut impl FnMut(&A) -> bool) -> bool {
        let mut found = false;
        self.visit_atoms(&mut |atom| found = found || test(atom));
        found
    }

    /// Binding strength, higher binds tighter: `not` > `and` > `xor` > `or`,
    /// as in Cloudflare's expressions.
    fn precedence(&self) -> u8 {
        match self {
            Formula::Or(_) => 1,
            Formula::Xor(_) => 2,
            Formula::And(_) => 3,
            Formula::Not(_) => 4,
            Formula::Atom(_) => 5,
        }
    }

    /// Writes the formula, wrapping it in parentheses when it binds looser
    /// than `min_precedence`, and each atom with `atom`.
    pub(crate) fn write(
        &self,
        f: &mut fmt::Formatter<'_>,
        min_precedence: u8,
        atom: &mut impl FnMut(&mut fmt::Formatter<'_>, &A) -> fmt::Result,
    ) -> fmt::Result {
        let precedence = self.precedence();
        let parenthesize = precedence < min_precedence;
        if parenthesize {
            f.write_str("(")?;
        }
        match self {
            Formula::Atom(value) => atom(f, value)?,
            Formula::Not(inner) => {
                f.write_str("not ")?;
                inner.write(f, precedence, atom)?;
            }
            Formula::And(operands) => write_operands(f, operands, " and ", precedence + 1, atom)?,
            Formula::Or(operands) => write_operands(f, operands, " or ", precedence + 1, atom)?,
            Formula::Xor(operands) => write_operands(f, operands, " xor ", precedence + 1, atom)?,
        }
        if parenthesize {
            f.write_str(")")?;
        }
        Ok(())
    }
}

fn write_operands<A>(
    f: &mut fmt::Formatter<'_>,
    operands: &[Formula<A>],
    separator: &str,
    min_precedence: u8,
    atom: &mut impl FnMut(&mut fmt::Formatter<'_>, &A) -> fmt::Result,
) -> fmt::Result {
    for (i, operand) in operands.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        operand.write(f, min_precedence, atom)?;
    }
    Ok(())
}

impl<A: fmt::Display> fmt::Display for Formula<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0, &mut |f, atom| atom.fmt(f))
    }
}

/// A condition whose truth depends only on one address and the sightings
/// that apply to it. The compiler gives each distinct predicate one bit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Predicate {
    /// `any(f[*] ...)` or `all(f[*] ...)` over the values of one array field,
    /// merged over all sightings.
    Array {
        quantifier: Quantifier,
        field: TextField,
        test: Formula<ValueTest>,
    },
    /// `any(ip.intel.events[*]...)` or `all(...)`: a test that must hold
    /// within one sighting (for `any`) or within each sighting (for `all`).
    Events {
        quantifier: Quantifier,
        test: Formula<EventTest>,
    },
    /// `ip.intel.score` or `ip.intel.days_since_seen` against a number.
    Number {
        field: NumberField,
        test: NumberTest,
    },
    /// `ip.src in {...}`, `ip.src in $list` or `ip.src == address`.
    Source {
        nets: NetSet,
        /// The list's name when the rule wrote `$name`.
        list: Option<String>,
    },
}

impl Predicate {
    /// Returns the networks of an `ip.src` predicate, sorted, IPv4-mapped IPv6
    /// networks folded to IPv4; `None` for every other predicate.
    pub fn addresses(&self) -> Option<&[IpNet]> {
        match self {
            Predicate::Source { nets, .. } => Some(nets.nets()),
            _ => None,
        }
    }

    /// Returns the attribute an attribute-array predicate tests, such as
    /// `Datasets` for `any(ip.intel.datasets[*] == "ddos")`.
    pub fn attribute(&self) -> Option<Attribute> {
        match self {
            Predicate::Array {
                field: TextField::Attribute(attribute),
                ..
            } => Some(*attribute),
            _ => None,
        }
    }

    /// Returns whether the predicate reads a sighting's feed name, so that
    /// its truth over a sighting depends on more than the profile.
    pub fn reads_feed(&self) -> bool {
        match self {
            Predicate::Array { field, .. } => *field == TextField::Feeds,
            Predicate::Events { test, .. } => test.any_atom(&mut |atom| {
                matches!(
                    atom,
                    EventTest::Text {
                        field: TextField::Feeds,
                        ..
                    }
                )
            }),
            Predicate::Number { .. } | Predicate::Source { .. } => false,
        }
    }

    /// Returns whether the predicate reads `days_since_seen`, so that its truth
    /// changes as time passes without any new intel.
    pub fn depends_on_time(&self) -> bool {
        match self {
            Predicate::Number { field, .. } => *field == NumberField::DaysSinceSeen,
            Predicate::Events { test, .. } => test.any_atom(&mut |atom| {
                matches!(
                    atom,
                    EventTest::Number {
                        field: NumberField::DaysSinceSeen,
                        ..
                    }
                )
            }),
            Predicate::Array { .. } | Predicate::Source { .. } => false,
        }
    }

    /// Returns every string literal the predicate compares with, paired with the
    /// field it is compared against. Within `ip.intel.events[*]` the pair
    /// names the array field of the same attribute (`dataset` gives
    /// `ip.intel.datasets`), so a caller can look for the value among that
    /// attribute's values.
    pub fn string_values(&self) -> Vec<(TextField, &str)> {
        let mut values = Vec::new();
        match self {
            Predicate::Array { field, test, .. } => test.visit_atoms(&mut |atom| {
                values.extend(atom.strings().map(|value| (*field, value)));
            }),
            Predicate::Events { test, .. } => test.visit_atoms(&mut |atom| {
                if let EventTest::Text { field, test } = atom {
                    values.extend(test.strings().map(|value| (*field, value)));
                }
            }),
            Predicate::Number { .. } | Predicate::Source { .. } => {}
        }
        values
    }
}

impl fmt::Display for Predicate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Predicate::Array {
                quantifier,
                field,
                test,
            } => {
                let subject = format!("{}[*]", field.name());
                write!(f, "{}(", quantifier.keyword())?;
                test.write(f, 0, &mut |f, atom| atom.write(f, &subject))?;
                f.write_str(")")
            }
            Predicate::Events { quantifier, test } => {
                write!(f, "{}(", quantifier.keyword())?;
                test.write(f, 0, &mut |f, atom| atom.fmt(f))?;
                f.write_str(")")
            }
            Predicate::Number { field, test } => test.write(f, field.name()),
            Predicate::Source {
                list: Some(name), ..
            } => write!(f, "ip.src in ${name}"),
            Predicate::Source { nets, list: None } => write!(f, "ip.src in {nets}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quantifier {
    /// True when the test holds for at least one element; false when there
    /// are none.
    Any,
    /// True when the test holds for every element, and so when there are none.
    All,
}

impl Quantifier {
    pub fn keyword(self) -> &'static str {
        match self {
            Quantifier::Any => "any",
            Quantifier::All => "all",
        }
    }
}

/// A comparison of a string value with literals.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueTest {
    Eq(String),
    Ne(String),
    /// Sorted, without duplicates.
    In(Box<[String]>),
}

impl ValueTest {
    pub(crate) fn strings(&self) -> impl Iterator<Item = &str> {
        let values: &[String] = match self {
            ValueTest::Eq(value) | ValueTest::Ne(value) => std::slice::from_ref(value),
            ValueTest::In(values) => values,
        };
        values.iter().map(String::as_str)
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, subject: &str) -> fmt::Result {
        match self {
            ValueTest::Eq(value) => write!(f, "{subject} == {}", Quoted(value)),
            ValueTest::Ne(value) => write!(f, "{subject} != {}", Quoted(value)),
            ValueTest::In(values) => {
                write!(f, "{subject} in {{")?;
                for (i, value) in values.iter().enumerate() {
                    let separator = if i > 0 { " " } else { "" };
                    write!(f, "{separator}{}", Quoted(value))?;
                }
                f.write_str("}")
            }
        }
    }
}

/// A comparison of a number with literals.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NumberTest {
    Compare {
        operator: CompareOp,
        value: u64,
    },
    /// Sorted, without duplicates.
    In(Box<[u64]>),
}

impl NumberTest {
    pub fn matches(&self, number: u64) -> bool {
        match self {
            NumberTest::Compare { operator, value } => operator.apply(number, *value),
            NumberTest::In(values) => values.contains(&number),
        }
    }

    fn write(&self, f: &mut fmt::Formatter<'_>, subject: &str) -> fmt::Result {
        match self {
            NumberTest::Compare { operator, value } => {
                write!(f, "{subject} {} {value}", operator.symbol())
            }
            NumberTest::In(values) => {
                let values: Vec<String> = values.iter().map(u64::to_string).collect();
                write!(f, "{subject} in {{{}}}", values.join(" "))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        }
    }

    pub fn apply(self, left: u64, right: u64) -> bool {
        match self {
            CompareOp::Eq => left == right,
            CompareOp::Ne => left != right,
            CompareOp::Lt => left < right,
            CompareOp::Le => left <= right,
            CompareOp::Gt => left > right,
            CompareOp::Ge => left >= right,
        }
    }
}

/// A comparison of one field of a sighting, inside `ip.intel.events[*]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EventTest {
    Text {
        field: TextField,
        test: ValueTest,
    },
    Number {
        field: NumberField,
        test: NumberTest,
    },
}

impl fmt::Display for EventTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventTest::Text { field, test } => {
                test.write(f, &format!("ip.intel.events[*].{}", field.event_name()))
            }
            EventTest::Number { field, test } => {
                test.write(f, &format!("ip.intel.events[*].{}", field.event_name()))
            }
        }
    }
}

/// A string written as a rule literal, with `"` and `\` escaped.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if matches!(c, '"' | '\\') {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}
