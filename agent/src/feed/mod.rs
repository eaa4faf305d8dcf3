//! Feed parsers.
