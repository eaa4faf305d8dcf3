//! Evaluation of predicates and expressions over one address.
//!
//! Strings are compared as `&str`: each interned value of a sighting is
//! resolved by index (no hashing) and compared with the literal, which
//! usually fails on the length alone. Nothing is allocated per call.

use std::net::IpAddr;

use jiff::Timestamp;

use super::ast::{EventTest, Expr, Predicate, Quantifier, ValueTest};
use super::field::{NumberField, TextField};
use crate::intel::{Intel, Sighting};

const SECONDS_PER_DAY: i64 = 86_400;

/// An address with every sighting that applies to it: its own and those of
/// every prefix that contains it, merged by the caller.
#[derive(Clone, Copy, Debug)]
pub struct AddressView<'a> {
    pub intel: &'a Intel,
    pub address: IpAddr,
    pub sightings: &'a [Sighting],
    /// The time `days_since_seen` counts up to.
    pub now: Timestamp,
}

impl AddressView<'_> {
    /// Returns whether `test` is true for some value of `field` in some
    /// sighting.
    fn any_value(&self, field: TextField, mut test: impl FnMut(&str) -> bool) -> bool {
        self.sightings
            .iter()
            .any(|sighting| any_value_of(self.intel, sighting, field, &mut test))
    }

    /// Returns the highest score among the sightings.
    fn score(&self) -> Option<u64> {
        self.sightings
            .iter()
            .filter_map(Sighting::score)
            .max()
            .map(u64::from)
    }

    /// Returns the whole days since the newest known `last_seen`.
    fn days_since_seen(&self) -> Option<u64> {
        let newest = self
            .sightings
            .iter()
            .map(|sighting| sighting.last_seen)
            .max()?;
        days_since(newest, self.now)
    }

    fn number(&self, field: NumberField) -> Option<u64> {
        match field {
            NumberField::Score => self.score(),
            NumberField::DaysSinceSeen => self.days_since_seen(),
        }
    }
}

impl Expr {
    /// Evaluates the expression over one address.
    pub fn eval(&self, view: &AddressView) -> bool {
        self.formula.eval(&mut |predicate| predicate.eval(view))
    }
}

impl Predicate {
    /// How the predicate's truth over a record follows from its truth over
    /// each sighting alone: `Any` for the OR, `All` for the AND. `Some` only
    /// when a sighting's truth depends on nothing but its profile and feed,
    /// so that callers may cache it under that pair.
    pub fn sighting_combination(&self) -> Option<Quantifier> {
        match self {
            Predicate::Array { quantifier, .. } => Some(*quantifier),
            Predicate::Events { quantifier, test } => {
                let mut numeric = false;
                test.visit_atoms(&mut |atom| numeric |= matches!(atom, EventTest::Number { .. }));
                (!numeric).then_some(*quantifier)
            }
            Predicate::Number { .. } | Predicate::Source { .. } => None,
        }
    }

    /// Evaluates an attribute-array predicate over one sighting's values of
    /// its attribute, which decide it alone. `None` for any other predicate.
    pub fn eval_values<'v>(&self, values: impl IntoIterator<Item = &'v str>) -> Option<bool> {
        let Predicate::Array {
            quantifier,
            field: TextField::Attribute(_),
            test,
        } = self
        else {
            return None;
        };
        let holds = |value: &str| test.eval(&mut |atom| atom.matches(value));
        let mut values = values.into_iter();
        Some(match quantifier {
            Quantifier::Any => values.any(holds),
            Quantifier::All => values.all(holds),
        })
    }

    /// Evaluates the predicate over one address.
    pub fn eval(&self, view: &AddressView) -> bool {
        match self {
            Predicate::Array {
                quantifier,
                field,
                test,
            } => {
                let holds = |value: &str| test.eval(&mut |atom| atom.matches(value));
                match quantifier {
                    Quantifier::Any => view.any_value(*field, holds),
                    Quantifier::All => !view.any_value(*field, |value| !holds(value)),
                }
            }
            Predicate::Events { quantifier, test } => {
                let holds = |sighting: &Sighting| {
                    test.eval(&mut |atom| atom.matches(view.intel, sighting, view.now))
                };
                match quantifier {
                    Quantifier::Any => view.sightings.iter().any(holds),
                    Quantifier::All => view.sightings.iter().all(holds),
                }
            }
            Predicate::Number { field, test } => {
                view.number(*field).is_some_and(|n| test.matches(n))
            }
            Predicate::Source { nets, .. } => nets.contains(view.address),
        }
    }
}

impl ValueTest {
    /// Tests one element of an array field.
    fn matches(&self, value: &str) -> bool {
        match self {
            ValueTest::Eq(expected) => value == expected,
            ValueTest::Ne(expected) => value != expected,
            ValueTest::In(expected) => expected.iter().any(|candidate| candidate == value),
        }
    }
}

impl EventTest {
    /// Tests one sighting. A text field with several values matches
    /// `==` and `in` when any value does, and `!=` when no value equals the
    /// literal, so that `!=` is always the negation of `==`.
    fn matches(&self, intel: &Intel, sighting: &Sighting, now: Timestamp) -> bool {
        match self {
            EventTest::Text { field, test } => match test {
                ValueTest::Ne(expected) => {
                    !any_value_of(intel, sighting, *field, &mut |value| value == expected)
                }
                ValueTest::Eq(_) | ValueTest::In(_) => {
                    any_value_of(intel, sighting, *field, &mut |value| test.matches(value))
                }
            },
            EventTest::Number { field, test } => {
                sighting_number(sighting, *field, now).is_some_and(|n| test.matches(n))
            }
        }
    }
}

fn any_value_of(
    intel: &Intel,
    sighting: &Sighting,
    field: TextField,
    test: &mut impl FnMut(&str) -> bool,
) -> bool {
    match field {
        TextField::Feeds => test(&intel.feed(sighting.feed).name),
        TextField::Attribute(attribute) => intel
            .profile(sighting.profile)
            .values(attribute)
            .iter()
            .any(|&symbol| test(intel.resolve(symbol))),
    }
}

fn sighting_number(sighting: &Sighting, field: NumberField, now: Timestamp) -> Option<u64> {
    match field {
        NumberField::Score => sighting.score().map(u64::from),
        NumberField::DaysSinceSeen => days_since(sighting.last_seen, now),
    }
}

/// Returns the whole days from `last_seen` (Unix seconds) to `now`, rounded down; `None`
/// for [`Sighting::NEVER`]. A time in the future counts as 0 days, so that a
/// feed whose clock runs ahead still reads as fresh.
fn days_since(last_seen: i64, now: Timestamp) -> Option<u64> {
    if last_seen == Sighting::NEVER {
        return None;
    }
    let seconds = now.as_second().saturating_sub(last_seen).max(0);
    Some((seconds / SECONDS_PER_DAY).unsigned_abs())
}
