//! Byte ranges of the keys of a config file, so that an error found by
//! validation after the file deserialized can point at the offending key.

use std::fmt;
use std::ops::Range;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

/// One step of a path from the document's root to a key.
#[derive(Clone, Copy, Debug)]
pub(super) enum Step<'a> {
    /// A key of a table, e.g. `agent` or `expiry_interval`.
    Key(&'a str),
    /// An element of an array, e.g. the third `[[feed]]` table.
    Index(usize),
}

/// A TOML document reduced to the byte range of every key.
#[derive(Debug)]
pub(super) struct KeySpans {
    root: Node,
}

#[derive(Debug)]
enum Node {
    Table(Vec<(Spanned<String>, Node)>),
    Array(Vec<Node>),
    Scalar,
}

impl KeySpans {
    /// Parses `text`, or returns `None` when it is not valid TOML.
    pub(super) fn parse(text: &str) -> Option<KeySpans> {
        let root = toml::from_str(text).ok()?;
        Some(KeySpans { root })
    }

    /// Returns the byte range of the last key of `path`, such as
    /// `[Key("feed"), Index(1), Key("score")]`, or `None` when the document
    /// has no such key. A path that ends in an array index has no key of its
    /// own.
    pub(super) fn get(&self, path: &[Step<'_>]) -> Option<Range<usize>> {
        let mut node = &self.root;
        let mut span = None;
        for step in path {
            match (step, node) {
                (Step::Key(key), Node::Table(entries)) => {
                    let (name, value) = entries.iter().find(|(name, _)| name.get_ref() == key)?;
                    span = Some(name.span());
                    node = value;
                }
                (Step::Index(index), Node::Array(elements)) => {
                    node = elements.get(*index)?;
                    span = None;
                }
                _ => return None,
            }
        }
        span
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any TOML value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        // The TOML deserializer gives each parsed key its byte range when
        // the key is read as `Spanned`.
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            let value = map.next_value::<Node>()?;
            entries.push((key, value));
        }
        Ok(Node::Table(entries))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<Node>()? {
            elements.push(element);
        }
        Ok(Node::Array(elements))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Scalar)
    }

    fn visit_str<E>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Scalar)
    }
}
