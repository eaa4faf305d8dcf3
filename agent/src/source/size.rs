//! The `max_size` setting: a byte count, as an integer or with a binary unit.

use serde::{Deserialize, Deserializer};

/// Deserialises an optional size given as an integer number of bytes or as
/// a string with a unit: `"512 KiB"`, `"64 MiB"`, `"1 GiB"` or `"100 B"`.
pub fn deserialize_size<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }

    match Size::deserialize(deserializer)? {
        Size::Bytes(bytes) => Ok(Some(bytes)),
        Size::Text(text) => parse_size(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let invalid = || format!("invalid size `{text}`; expected bytes or a unit, e.g. \"64 MiB\"");
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(invalid()),
    };
    number.checked_mul(multiplier).ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn size_units() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("100 B"), Ok(100));
        assert_eq!(parse_size("512KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1 GiB"), Ok(1 << 30));
    }

    #[test]
    fn size_rejects_unknown_unit() {
        assert!(parse_size("64 MB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("-1").is_err());
    }
}
