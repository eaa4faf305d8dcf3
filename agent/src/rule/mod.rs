//! The rule language: parsing, type checking and evaluation of expressions
//! that select addresses by their threat intel.
//!
//! The language follows Cloudflare's expressions for its threat-intel fields,
//! and Cloudflare's spellings (`cf.intel.ip.datasets`, ...) are accepted as
//! aliases, so an expression from its documentation compiles unchanged:
//!
//! ```text
//! any(cf.intel.ip.target_countries[*] == "FR") and any(cf.intel.ip.datasets[*] == "ddos")
//! ```
//!
//! # Fields
//!
//! | field | type |
//! |---|---|
//! | `ip.src` | the address |
//! | `ip.intel.attacker_names`, `ip.intel.attacker_countries`, `ip.intel.target_countries`, `ip.intel.target_industries`, `ip.intel.datasets` | string arrays: the union over the address's sightings |
//! | `ip.intel.feeds` | string array: names of the feeds with a sighting of the address |
//! | `ip.intel.score` | number: the highest score among the sightings |
//! | `ip.intel.days_since_seen` | number: whole days since the newest sighting's `last_seen` |
//! | `ip.intel.events` | array of sightings, with the fields `dataset`, `attacker_name`, `attacker_country`, `target_country`, `target_industry`, `feed`, `score` and `days_since_seen` |
//!
//! The sightings of an address are its own and those of every prefix that
//! contains it. String values are case-sensitive. Values of the country
//! fields must be ISO 3166-1 alpha-2 codes such as `"FR"`.
//!
//! # Operators
//!
//! - `any(f[*] == "v")`, `!=`, `in {"a" "b"}` (set values separated by
//!   spaces), and `all(...)` alike. The body may combine several comparisons
//!   of the same array: `any(ip.intel.datasets[*] == "ddos" or
//!   ip.intel.datasets[*] == "botnet")`.
//! - `any(ip.intel.events[*].dataset == "ddos" and
//!   ip.intel.events[*].target_country == "FR")` holds when one sighting
//!   satisfies the whole body, where the flattened
//!   `any(ip.intel.datasets[*] == "ddos") and any(ip.intel.target_countries[*] == "FR")`
//!   also holds when two different sightings each satisfy one half.
//! - `==`, `!=`, `<`, `<=`, `>`, `>=` (or `eq`, `ne`, `lt`, `le`, `gt`,
//!   `ge`) and `in {1 2}` on numbers.
//! - `ip.src in {192.0.2.0/24 2001:db8::/32}`, `ip.src in $name` with a list
//!   from the config's `[lists]`, and `ip.src == 192.0.2.1`.
//! - `not`/`!`, `and`/`&&`, `xor`/`^^`, `or`/`||` and parentheses. `not`
//!   binds tightest, then `and`, then `xor`, then `or`.
//!
//! # Edge cases
//!
//! - `any()` over no values is false; `all()` over no values is true, so
//!   `all(ip.intel.datasets[*] == "ddos")` holds for an address whose
//!   sightings carry no dataset. Pair it with an `any()` to require one.
//! - A comparison with an absent number is false, whatever the operator:
//!   with no score, both `ip.intel.score > 50` and `ip.intel.score != 50` are
//!   false, while `not ip.intel.score == 50` is true. The same holds for
//!   `score` and `days_since_seen` of one sighting.
//! - In `ip.intel.events[*]`, a field of one sighting may hold several
//!   values. `==` and `in` hold when any of them matches, and `!=` holds when
//!   none of them equals the value, so `!=` is exactly `not ==`. A sighting
//!   with no value in that field fails `==` and `in` and passes `!=`.
//! - `days_since_seen` rounds down, and a `last_seen` in the future counts as
//!   0 days.

mod ast;
mod check;
mod country;
mod diagnostic;
mod eval;
mod field;
mod lexer;
mod netset;
mod parser;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

pub use ast::{CompareOp, EventTest, Expr, Formula, NumberTest, Predicate, Quantifier, ValueTest};
pub use diagnostic::RuleError;
pub use eval::AddressView;
pub use field::{NumberField, TextField};
pub use netset::NetSet;

/// Whether `code` is an assigned ISO 3166-1 alpha-2 country code.
pub fn is_country_code(code: &str) -> bool {
    country::is_assigned(code)
}

/// Named address lists from the config's `[lists]`, which `ip.src in $name`
/// refers to.
pub type Lists = BTreeMap<String, Vec<ipnet::IpNet>>;

/// Parses and type-checks a rule expression.
pub fn parse(source: &str, lists: &Lists) -> Result<Expr, RuleError> {
    let syntax = parser::parse_syntax(source)?;
    let formula = check::check(&syntax, source, lists)?;
    Ok(Expr { formula })
}
