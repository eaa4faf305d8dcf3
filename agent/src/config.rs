//! The TOML configuration: interfaces, feeds, rules and named lists.
//!
//! Paths in the file are relative to the file's own directory. Every rule
//! expression keeps its position in the file, so a diagnostic can point at
//! the line and column of the offending token.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use self::keys::{KeySpans, Step};

mod keys;
#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// A key whose value deserialized but failed validation.
#[derive(Debug, PartialEq, Eq)]
pub struct InvalidKey {
    /// The key as the config file spells it, e.g. `refresh`.
    pub key: &'static str,
    pub message: String,
}

impl InvalidKey {
    pub fn new(key: &'static str, message: impl Into<String>) -> InvalidKey {
        InvalidKey {
            key,
            message: message.into(),
        }
    }
}

/// Attach mode of the XDP program.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver, before the kernel allocates a socket buffer.
    Native,
    /// Generic XDP, after the socket buffer exists; works on every driver.
    Skb,
    /// Native where the driver supports it, otherwise skb with a warning.
    #[default]
    Auto,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
            AttachMode::Auto => "auto",
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceConfig {
    pub name: String,
    #[serde(default)]
    pub mode: AttachMode,
}

/// Feed file formats.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// One address or prefix a line, with `#` and `;` comments.
    List,
    /// One JSON object a line in intelwall's schema.
    Jsonl,
    /// Comma-separated values with columns mapped to fields by `columns`.
    Csv,
    /// Cloudflare Threat Events JSON, as the API returns it.
    Cloudflare,
    /// A STIX 2.0 or 2.1 bundle.
    Stix2,
    /// A MISP event, or a MISP feed directory with its `manifest.json`.
    Misp,
}

impl fmt::Display for FeedFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeedFormat::List => "list",
            FeedFormat::Jsonl => "jsonl",
            FeedFormat::Csv => "csv",
            FeedFormat::Cloudflare => "cloudflare",
            FeedFormat::Stix2 => "stix2",
            FeedFormat::Misp => "misp",
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub name: String,
    /// The file the feed loads from, resolved against the config file's
    /// directory. For a feed with a `url`, the last good download is kept
    /// here; it defaults to `<state_dir>/feeds/<name>`.
    #[serde(default)]
    pub path: PathBuf,
    /// Where to download the feed from (http or https).
    pub url: Option<String>,
    /// How often to download a `url` feed again, e.g. "1h" or "15m".
    #[serde(default, with = "humantime_serde")]
    pub refresh: Option<std::time::Duration>,
    /// Detected from the content when absent.
    pub format: Option<FeedFormat>,
    /// Attributes given to every indicator of the feed, added to those the
    /// feed's own lines carry.
    #[serde(default)]
    pub attacker_names: Vec<String>,
    #[serde(default)]
    pub attacker_countries: Vec<String>,
    #[serde(default)]
    pub target_countries: Vec<String>,
    #[serde(default)]
    pub target_industries: Vec<String>,
    #[serde(default)]
    pub datasets: Vec<String>,
    /// Score for indicators whose line gives none, 0 to 100.
    pub score: Option<u8>,
    /// Turns any rejected line into a failure of the whole feed.
    #[serde(default)]
    pub strict: bool,
    /// Accepts `/0` prefixes, which would otherwise be rejected.
    #[serde(default)]
    pub allow_default_route: bool,
    /// Time allowed to connect to a `url` feed's server, TLS included;
    /// 10s when absent.
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<std::time::Duration>,
    /// Time allowed for one download attempt of a `url` feed, body
    /// included; 5m when absent.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<std::time::Duration>,
    /// Largest body accepted from a `url` feed, in bytes or with a unit
    /// such as "64 MiB"; 256 MiB when absent.
    #[serde(default, deserialize_with = "crate::source::deserialize_size")]
    pub max_size: Option<u64>,
    /// PEM file of the CA certificates that a `url` feed's server is
    /// verified against, in place of the bundled Mozilla roots. Must be an
    /// absolute path.
    pub ca_file: Option<PathBuf>,
    /// Widest `first-last` range a line may give, as the prefix length of a
    /// prefix of the same size: the default, 16, accepts IPv4 ranges of up to
    /// 65,536 addresses. 0 accepts every range.
    pub max_range_ipv4: Option<u8>,
    /// Widest IPv6 range, as `max_range_ipv4`; the default is 48.
    pub max_range_ipv6: Option<u8>,
    /// Score per blocklist for `list` lines that give a count after the
    /// address, as ipsum does: the score is the count times this, at most
    /// 100. The default is 10.
    pub score_per_count: Option<u8>,
    /// In a `list` feed, skips domain names and URLs (counted as skipped, not
    /// rejected) and loads the address of `IPv4:port` lines, as Maltrail
    /// trail files need. Off by default, so a typo in an address list is
    /// still rejected.
    #[serde(default)]
    pub skip_non_ip: bool,
    /// For `csv` feeds: the column of each field, by header name, or by
    /// number from 1 when `header = false`.
    #[serde(default)]
    pub columns: crate::feed::CsvColumns,
    /// For `csv` feeds: the field delimiter, one ASCII character such as
    /// "\t"; the default is ",".
    pub delimiter: Option<char>,
    /// For `csv` feeds: whether the first row after the `#` comment lines
    /// names the columns. The default is true.
    pub header: Option<bool>,
    /// For `csv` feeds: the separator of several values in one attribute
    /// cell; the default is ",". An empty string keeps each cell one value.
    pub value_separator: Option<String>,
}

/// What a matching rule does to the packet.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Drop,
    Allow,
    Tag,
    /// Counted, never decides the fate.
    Log,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Drop => "drop",
            Action::Allow => "allow",
            Action::Tag => "tag",
            Action::Log => "log",
        })
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub expression: Spanned<String>,
    pub action: Action,
    /// Packet mark for `tag` rules.
    #[serde(default)]
    pub mark: u32,
    /// DSCP (0 to 63) that `tag` rules write into the IP header as well.
    pub dscp: Option<u8>,
    /// Send sampled matches as events; on by default for `log` rules only.
    pub log: Option<bool>,
    /// Share of matches to log, "1/N"; "1/1" logs every match.
    pub sample: Option<String>,
    /// Most events a second, "N/s".
    pub rate: Option<String>,
}

/// Events a second a logging rule sends when it gives neither `sample` nor
/// `rate`, so that a rule over heavy traffic cannot flood the event stream.
pub const DEFAULT_EVENT_RATE: u32 = 100;

/// How a rule's matches become events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sampling {
    /// One match in this many is logged.
    pub every: u32,
    /// Most events a second; `None` for no limit.
    pub per_second: Option<u32>,
}

impl RuleConfig {
    /// The rule's sampling when it logs, `None` when it does not. Assumes
    /// a validated config.
    pub fn sampling(&self) -> Option<Sampling> {
        if !self.log.unwrap_or(self.action == Action::Log) {
            return None;
        }
        let every = self
            .sample
            .as_deref()
            .and_then(|text| parse_sample(text).ok());
        let per_second = self.rate.as_deref().and_then(|text| parse_rate(text).ok());
        let per_second = match (every, per_second) {
            (None, None) => Some(DEFAULT_EVENT_RATE),
            (_, rate) => rate,
        };
        Some(Sampling {
            every: every.unwrap_or(1),
            per_second,
        })
    }

    fn check_observability(&self) -> Result<(), InvalidKey> {
        if let Some(text) = &self.sample {
            parse_sample(text).map_err(|reason| {
                InvalidKey::new("sample", format!("rule `{}`: sample: {reason}", self.name))
            })?;
        }
        if let Some(text) = &self.rate {
            parse_rate(text).map_err(|reason| {
                InvalidKey::new("rate", format!("rule `{}`: rate: {reason}", self.name))
            })?;
        }
        if let Some(dscp) = self.dscp {
            if self.action != Action::Tag {
                return Err(InvalidKey::new(
                    "dscp",
                    format!(
                        "rule `{}`: `dscp` only applies to action \"tag\"",
                        self.name
                    ),
                ));
            }
            if dscp > intelwall_common::MAX_DSCP {
                return Err(InvalidKey::new(
                    "dscp",
                    format!("rule `{}`: dscp must be 0 to 63, got {dscp}", self.name),
                ));
            }
        }
        Ok(())
    }
}

/// Parses "1/N" with N at least 1.
pub fn parse_sample(text: &str) -> Result<u32, String> {
    let expected = || format!("expected \"1/N\" such as \"1/100\", got \"{text}\"");
    let (one, every) = text.trim().split_once('/').ok_or_else(expected)?;
    if one.trim() != "1" {
        return Err(expected());
    }
    match every.trim().parse::<u32>() {
        Ok(every) if every >= 1 => Ok(every),
        _ => Err(expected()),
    }
}

/// Parses "N/s" with N at least 1.
pub fn parse_rate(text: &str) -> Result<u32, String> {
    let expected = || format!("expected \"N/s\" such as \"50/s\", got \"{text}\"");
    let (count, unit) = text.trim().split_once('/').ok_or_else(expected)?;
    if unit.trim() != "s" {
        return Err(expected());
    }
    match count.trim().parse::<u32>() {
        Ok(count) if count >= 1 => Ok(count),
        _ => Err(expected()),
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default, rename = "interface")]
    interfaces: Vec<InterfaceConfig>,
    #[serde(default, rename = "feed")]
    feeds: Vec<FeedConfig>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleConfig>,
    #[serde(default)]
    lists: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    agent: AgentConfig,
    #[serde(default)]
    safety: SafetyConfig,
}

/// The safety allowlist: addresses that no drop rule may drop.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetyConfig {
    /// Off only when set explicitly; the agent then warns at every start.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Management networks to keep reachable, as addresses or prefixes.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Feed prefixes shorter than this many bits draw a warning.
    #[serde(default = "default_wide_prefix_len")]
    pub wide_prefix_len: u8,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        SafetyConfig {
            enabled: true,
            allow: Vec::new(),
            wide_prefix_len: default_wide_prefix_len(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_wide_prefix_len() -> u8 {
    8
}

/// Settings of the agent process itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Directory for downloaded feeds and other state that must survive a
    /// restart, resolved against the config file's directory.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// bpffs directory where maps and links are pinned, so that protection
    /// outlives the agent. One agent per directory.
    #[serde(default = "default_pin_dir")]
    pub pin_dir: PathBuf,
    /// How often rules on `days_since_seen` are evaluated again, e.g. "1m".
    #[serde(default = "default_expiry_interval", with = "humantime_serde")]
    pub expiry_interval: std::time::Duration,
    /// Most entries any one address map may hold. A compiled image that
    /// needs more is rejected as a whole, never truncated.
    #[serde(default = "default_max_map_entries")]
    pub max_map_entries: u32,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            state_dir: default_state_dir(),
            pin_dir: default_pin_dir(),
            expiry_interval: default_expiry_interval(),
            max_map_entries: default_max_map_entries(),
        }
    }
}

/// Room for the largest public feeds many times over; a hash map entry
/// costs about 100 bytes of kernel memory, so this is about 5 GB per map.
fn default_max_map_entries() -> u32 {
    50_000_000
}

fn default_pin_dir() -> PathBuf {
    PathBuf::from("/sys/fs/bpf/intelwall")
}

fn default_expiry_interval() -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/intelwall")
}

/// A loaded configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub path: PathBuf,
    /// The file's text, kept to locate rule expressions in diagnostics.
    pub text: String,
    pub interfaces: Vec<InterfaceConfig>,
    pub feeds: Vec<FeedConfig>,
    pub rules: Vec<RuleConfig>,
    pub lists: BTreeMap<String, Vec<String>>,
    pub agent: AgentConfig,
    pub safety: SafetyConfig,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, text)
    }

    pub fn parse(path: &Path, text: String) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(&text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_column(&text, span.start))
                .unwrap_or((1, 1));
            ConfigError::Invalid {
                path: path.to_owned(),
                line,
                column,
                message: error.message().to_owned(),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = Config {
            path: path.to_owned(),
            text,
            interfaces: raw.interfaces,
            feeds: raw.feeds,
            rules: raw.rules,
            lists: raw.lists,
            agent: raw.agent,
            safety: raw.safety,
        };
        if config.agent.state_dir.is_relative() {
            config.agent.state_dir = base.join(&config.agent.state_dir);
        }
        for index in 0..config.feeds.len() {
            let feed = &config.feeds[index];
            if feed.path.as_os_str().is_empty() {
                if feed.url.is_none() {
                    // With neither key present, the error points at the
                    // feed's `name`.
                    return Err(config.entry_error(
                        "feed",
                        index,
                        "name",
                        format!("feed `{}`: set `path` or `url`", feed.name),
                    ));
                }
                let default = config.agent.state_dir.join("feeds").join(&feed.name);
                config.feeds[index].path = default;
            } else if config.feeds[index].path.is_relative() {
                config.feeds[index].path = base.join(&config.feeds[index].path);
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.agent.expiry_interval.is_zero() {
            return Err(self.key_error(
                &[Step::Key("agent"), Step::Key("expiry_interval")],
                "`expiry_interval` must be greater than zero, e.g. \"1m\"".to_owned(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (index, feed) in self.feeds.iter().enumerate() {
            let error = |key: &str, message: String| self.entry_error("feed", index, key, message);
            if !names.insert(("feed", feed.name.as_str())) {
                return Err(error(
                    "name",
                    format!("duplicate feed name `{}`", feed.name),
                ));
            }
            if let Some(score) = feed.score.filter(|score| *score > 100) {
                return Err(error(
                    "score",
                    format!("feed `{}`: score must be 0 to 100, got {score}", feed.name),
                ));
            }
            if let Err(invalid) = crate::source::check_settings(feed) {
                let message = format!("feed `{}`: {}", feed.name, invalid.message);
                return Err(error(invalid.key, message));
            }
        }
        for (index, rule) in self.rules.iter().enumerate() {
            let error = |key: &str, message: String| self.entry_error("rule", index, key, message);
            if rule.name == "safety-allowlist" {
                return Err(error(
                    "name",
                    "rule name `safety-allowlist` is reserved for the built-in safety rule"
                        .to_owned(),
                ));
            }
            if !names.insert(("rule", rule.name.as_str())) {
                return Err(error(
                    "name",
                    format!("duplicate rule name `{}`", rule.name),
                ));
            }
            if rule.action != Action::Tag && rule.mark != 0 {
                return Err(error(
                    "mark",
                    format!(
                        "rule `{}`: `mark` applies to action \"tag\" only, and this rule's action is \"{}\"",
                        rule.name, rule.action
                    ),
                ));
            }
            if rule.action == Action::Tag && rule.mark == 0 {
                return Err(error(
                    "action",
                    format!(
                        "rule `{}`: action \"tag\" needs a non-zero `mark`",
                        rule.name
                    ),
                ));
            }
            if let Err(invalid) = rule.check_observability() {
                return Err(error(invalid.key, invalid.message));
            }
        }
        Ok(())
    }

    /// Builds an error located at `key` of the `index`th `[[table]]` entry,
    /// or at the entry's `name` when the entry does not set `key`.
    fn entry_error(&self, table: &str, index: usize, key: &str, message: String) -> ConfigError {
        let path = [Step::Key(table), Step::Index(index), Step::Key(key)];
        let name = [Step::Key(table), Step::Index(index), Step::Key("name")];
        let spans = KeySpans::parse(&self.text);
        let span = spans
            .as_ref()
            .and_then(|spans| spans.get(&path).or_else(|| spans.get(&name)));
        self.error_at(span.map_or(0, |span| span.start), message)
    }

    /// Builds an error located at the last key of `path`, or at the start of
    /// the file when the file does not set that key.
    fn key_error(&self, path: &[Step<'_>], message: String) -> ConfigError {
        let span = KeySpans::parse(&self.text).and_then(|spans| spans.get(path));
        self.error_at(span.map_or(0, |span| span.start), message)
    }

    fn error_at(&self, offset: usize, message: String) -> ConfigError {
        let (line, column) = line_column(&self.text, offset);
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            column,
            message,
        }
    }

    /// Where the text of a rule's expression starts in the file: the byte
    /// offset just after the opening quote, and whether the string is a
    /// literal one (no escapes, so offsets inside map one to one).
    pub fn expression_origin(&self, rule: &RuleConfig) -> ExpressionOrigin {
        let span: Range<usize> = rule.expression.span();
        let raw = &self.text[span.clone()];
        let quote_len = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
            3
        } else {
            1
        };
        let literal = raw.starts_with('\'');
        let mut start = span.start + quote_len;
        // A multi-line string drops the newline right after its opening quotes.
        if quote_len == 3 && self.text[start..].starts_with('\n') {
            start += 1;
        }
        ExpressionOrigin {
            path: self.path.clone(),
            start,
            exact: literal,
            text: self.text.clone(),
        }
    }
}

/// Locates an expression inside the config file, for diagnostics.
#[derive(Clone, Debug)]
pub struct ExpressionOrigin {
    pub path: PathBuf,
    /// Byte offset in the file of the expression's first character.
    pub start: usize,
    /// Whether byte offsets in the expression map one to one onto the file;
    /// false for basic strings, whose escapes shift columns.
    pub exact: bool,
    text: String,
}

impl ExpressionOrigin {
    /// Line and column (both from 1) in the config file of a byte offset
    /// within the expression.
    pub fn position(&self, offset_in_expression: usize) -> (usize, usize) {
        let offset = if self.exact {
            self.start + offset_in_expression
        } else {
            self.start
        };
        line_column(&self.text, offset.min(self.text.len()))
    }
}

/// Line and column, both counted from 1, of a byte offset in `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
