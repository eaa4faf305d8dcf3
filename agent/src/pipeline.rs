//! From a config file to a compiled image: load feeds, parse rules, compile.
//! `check` and `run` share this path, so `check` validates exactly what `run`
//! would enforce.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jiff::Timestamp;

use std::collections::{HashMap, HashSet};

use crate::compile::{self, CompileError, Compiled, MapImage, Registry, RuleSpec};
use crate::config::{Config, ConfigError, FeedConfig};
use crate::feed::{self, FeedError, FeedReport};
use intelwall_common::map_name;

use crate::intel::Attribute;
use crate::intel::Intel;
use crate::rule::TextField;
use crate::rule::{self, Lists};
use crate::safety::{self, PrefixWarning, SafetyError, SafetyNet};
use crate::source::{self, Fetch, FetchOptions, SourceError, SourceReport, SourceStatus, TempCopy};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "{path}:{line}:{column}: list `{list}`: `{value}` is not an address or prefix: {reason}"
    )]
    List {
        path: PathBuf,
        line: usize,
        column: usize,
        list: String,
        value: String,
        reason: String,
    },
    #[error("feed `{feed}`: {source}")]
    Feed {
        feed: String,
        #[source]
        source: FeedError,
    },
    /// A `url` feed whose download failed, with no earlier download kept.
    #[error("feed `{feed}`: {source}; no earlier download is kept at {}", .path.display())]
    Download {
        feed: String,
        path: PathBuf,
        #[source]
        source: Box<SourceError>,
    },
    /// A `url` feed whose download did not load, with no earlier download
    /// kept.
    #[error(
        "feed `{feed}`: the download from {url} is not a valid feed: {source}; no earlier download is kept at {}",
        .path.display()
    )]
    InvalidDownload {
        feed: String,
        url: String,
        path: PathBuf,
        #[source]
        source: Box<FeedError>,
    },
    /// A rendered rule diagnostic: location, source line and caret.
    #[error("{0}")]
    Rule(String),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error("safety allowlist: {0}")]
    Safety(#[from] SafetyError),
    #[error(
        "{map} needs {needed} entries but [agent] max_map_entries is {limit}: \
         {limit} would load and {rejected} would not, so nothing was loaded; raise the limit or shrink the feeds"
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        limit: u32,
        rejected: usize,
    },
}

/// Everything `check` reports and `run` enforces.
pub struct Loaded {
    pub config: Config,
    pub intel: Intel,
    pub feeds: Vec<FeedReport>,
    /// Origin of each `url` feed's data, in config order.
    pub sources: Vec<SourceReport>,
    pub compiled: Compiled,
    pub timings: Timings,
    /// The safety allowlist as discovered at load.
    pub protected: Vec<SafetyNet>,
    /// Wide, private, reserved or protected prefixes found in the feeds.
    pub warnings: Vec<PrefixWarning>,
    /// Rule values that no loaded indicator carries.
    pub rule_warnings: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub feeds: Duration,
    pub compile: Duration,
}

/// Loads the config at `path`, its feeds and rules, and compiles them.
/// Downloads `url` feeds first, which blocks.
pub fn load(path: &Path, now: Timestamp) -> Result<Loaded, LoadError> {
    load_with(path, now, &FetchOptions::default(), &Registry::default())
}

/// [`load`] with the given retry settings for downloads, keeping the
/// predicate bits and class ids of a previous compilation where they still
/// apply.
pub fn load_with(
    path: &Path,
    now: Timestamp,
    fetch_options: &FetchOptions,
    previous: &Registry,
) -> Result<Loaded, LoadError> {
    let config = Config::load(path)?;
    let lists = parse_lists(&config)?;
    let protected = safety::discover(&config.safety)?;
    let mut rules = safety_rule(&protected);
    rules.extend(parse_rules(&config, &lists)?);

    let started = Instant::now();
    let mut inputs = fetch_feeds(&config, fetch_options)?;
    let (intel, feeds) = load_feeds(&config, &mut inputs, now)?;
    let sources = inputs
        .into_iter()
        .filter_map(|input| input.report)
        .collect();
    let feeds_took = started.elapsed();

    let warnings = safety::prefix_warnings(&intel, &config.safety, &protected);
    let mut rule_warnings = unused_values(&rules, &intel);
    rule_warnings.extend(invalid_countries(&intel));
    let started = Instant::now();
    let compiled = compile::compile(rules, &intel, now, previous)?;
    check_map_limit(&compiled.image, config.agent.max_map_entries)?;
    let timings = Timings {
        feeds: feeds_took,
        compile: started.elapsed(),
    };
    Ok(Loaded {
        config,
        intel,
        feeds,
        sources,
        compiled,
        timings,
        protected,
        warnings,
        rule_warnings,
    })
}

/// Warns about country values in the feeds that are not ISO 3166-1 alpha-2
/// codes: rules only accept such codes, so no rule can match these.
fn invalid_countries(intel: &Intel) -> Vec<String> {
    let mut invalid: Vec<(&'static str, &str)> = Vec::new();
    for attribute in Attribute::ALL
        .into_iter()
        .filter(|attribute| attribute.is_country())
    {
        for symbol in intel.attribute_values(attribute) {
            let value = intel.resolve(symbol);
            if !rule::is_country_code(value) {
                invalid.push((attribute.key(), value));
            }
        }
    }
    invalid
        .into_iter()
        .map(|(field, value)| {
            format!(
                "indicators carry \"{value}\" in {field}, which is not an ISO 3166-1 alpha-2 country code; no rule can match it"
            )
        })
        .collect()
}

/// Warns about string values that rules compare with but no loaded indicator
/// carries: values are case-sensitive, so these are often typos.
fn unused_values(rules: &[RuleSpec], intel: &Intel) -> Vec<String> {
    let mut known: HashMap<TextField, HashSet<&str>> = HashMap::new();
    for attribute in Attribute::ALL {
        let values = known.entry(TextField::Attribute(attribute)).or_default();
        values.extend(
            intel
                .attribute_values(attribute)
                .into_iter()
                .map(|symbol| intel.resolve(symbol)),
        );
    }
    known
        .entry(TextField::Feeds)
        .or_default()
        .extend(intel.feeds().iter().map(|feed| feed.name.as_str()));

    let mut warnings = Vec::new();
    for rule in rules {
        let mut reported = HashSet::new();
        for predicate in rule.expr.predicates() {
            for (field, value) in predicate.string_values() {
                let present = known
                    .get(&field)
                    .is_some_and(|values| values.contains(value));
                if !present && reported.insert((field, value.to_owned())) {
                    warnings.push(format!(
                        "rule `{}`: no loaded indicator has \"{value}\" in {}; values are case-sensitive",
                        rule.name,
                        field.name()
                    ));
                }
            }
        }
    }
    warnings
}

/// Rejects an image with more entries in one map than the configured limit.
fn check_map_limit(image: &MapImage, limit: u32) -> Result<(), LoadError> {
    let sizes = [
        (map_name::HOSTS_V4, image.hosts_v4.len()),
        (map_name::HOSTS_V6, image.hosts_v6.len()),
        (map_name::PREFIXES_V4, image.prefixes_v4.len()),
        (map_name::PREFIXES_V6, image.prefixes_v6.len()),
    ];
    for (map, needed) in sizes {
        if needed > limit as usize {
            return Err(LoadError::Capacity {
                map,
                needed,
                limit,
                rejected: needed - limit as usize,
            });
        }
    }
    Ok(())
}

/// Name of the built-in rule that keeps the safety allowlist reachable.
pub const SAFETY_RULE: &str = "safety-allowlist";

/// The built-in first rule: allow every protected address, so that no drop
/// rule can cut the host off from its gateway, resolvers or operators.
fn safety_rule(protected: &[SafetyNet]) -> Vec<RuleSpec> {
    if protected.is_empty() {
        return Vec::new();
    }
    let nets: Vec<String> = protected
        .iter()
        .map(|entry| entry.net.to_string())
        .collect();
    let source = format!("ip.src in {{{}}}", nets.join(" "));
    let expr = rule::parse(&source, &Lists::new()).expect("canonical prefixes always parse");
    vec![RuleSpec {
        name: SAFETY_RULE.to_owned(),
        source,
        expr,
        action: crate::config::Action::Allow,
        mark: 0,
    }]
}

/// Input of one feed: a pending download, and for `url` feeds the report.
struct FeedInput {
    /// A download that becomes the kept copy once it loads.
    download: Option<TempCopy>,
    /// Present for `url` feeds.
    report: Option<SourceReport>,
}

/// Downloads every `url` feed. A feed whose download fails falls back to its
/// kept copy, and fails the load only when there is none.
fn fetch_feeds(config: &Config, options: &FetchOptions) -> Result<Vec<FeedInput>, LoadError> {
    let mut inputs = Vec::with_capacity(config.feeds.len());
    for feed_config in &config.feeds {
        let Some(url) = &feed_config.url else {
            inputs.push(FeedInput {
                download: None,
                report: None,
            });
            continue;
        };
        let (download, status) = match source::fetch(feed_config, options) {
            Ok(Fetch::Unchanged) => (None, SourceStatus::Unchanged),
            Ok(Fetch::Downloaded(temp)) => {
                let bytes = temp.bytes();
                (Some(temp), SourceStatus::Downloaded { bytes })
            }
            Err(source) if feed_config.path.is_file() => {
                (None, fall_back(feed_config, source.to_string()))
            }
            Err(source) => {
                return Err(LoadError::Download {
                    feed: feed_config.name.clone(),
                    path: feed_config.path.clone(),
                    source: Box::new(source),
                });
            }
        };
        let report = SourceReport {
            feed: feed_config.name.clone(),
            url: url.clone(),
            path: feed_config.path.clone(),
            status,
        };
        inputs.push(FeedInput {
            download,
            report: Some(report),
        });
    }
    Ok(inputs)
}

/// Logs that a `url` feed loads its kept copy because of `error`.
fn fall_back(feed_config: &FeedConfig, error: String) -> SourceStatus {
    let age = source::kept_copy_age(&feed_config.path);
    tracing::warn!(
        feed = %feed_config.name,
        url = feed_config.url.as_deref().unwrap_or_default(),
        %error,
        path = %feed_config.path.display(),
        age = %source::describe_age(age),
        "loading the kept copy of the feed instead of a new download"
    );
    SourceStatus::KeptCopy { error, age }
}

/// Loads every feed into a new store.
///
/// A download that fails to load may already have added part of its
/// sightings, and the store cannot take them out again. So the pass starts
/// over on a new store, with that feed on its kept copy. Each restart turns
/// one download into a kept copy, so there are at most as many restarts as
/// downloads, and a load where every download is valid reads each feed once.
fn load_feeds(
    config: &Config,
    inputs: &mut [FeedInput],
    now: Timestamp,
) -> Result<(Intel, Vec<FeedReport>), LoadError> {
    'pass: loop {
        let mut intel = Intel::new();
        let mut reports = Vec::with_capacity(config.feeds.len());
        for (feed_config, input) in config.feeds.iter().zip(inputs.iter_mut()) {
            match load_input(feed_config, input, &mut intel, now)? {
                Some(report) => reports.push(report),
                None => continue 'pass,
            }
        }
        return Ok((intel, reports));
    }
}

/// Loads one feed, from its download when there is one. Returns `None` when
/// the download did not load; `input` then points at the kept copy.
fn load_input(
    feed_config: &FeedConfig,
    input: &mut FeedInput,
    intel: &mut Intel,
    now: Timestamp,
) -> Result<Option<FeedReport>, LoadError> {
    let Some(temp) = input.download.take() else {
        let report =
            feed::load_feed(feed_config, intel, now).map_err(|source| LoadError::Feed {
                feed: feed_config.name.clone(),
                source,
            })?;
        return Ok(Some(report));
    };

    let temp_config = FeedConfig {
        path: temp.path().to_owned(),
        ..feed_config.clone()
    };
    match feed::load_feed(&temp_config, intel, now) {
        Ok(mut report) => {
            keep_download(feed_config, temp);
            point_at_kept_copy(&mut report, feed_config);
            Ok(Some(report))
        }
        Err(source) => {
            drop(temp);
            let url = feed_config.url.clone().unwrap_or_default();
            if !feed_config.path.is_file() {
                return Err(LoadError::InvalidDownload {
                    feed: feed_config.name.clone(),
                    url,
                    path: feed_config.path.clone(),
                    source: Box::new(source),
                });
            }
            let error = format!("the download is not a valid feed: {source}");
            let status = fall_back(feed_config, error);
            if let Some(report) = &mut input.report {
                report.status = status;
            }
            Ok(None)
        }
    }
}

/// Makes a download that loaded the kept copy. A failure leaves the older
/// copy in place while the loaded data stays in force, so it is logged rather
/// than returned. A restarted pass then loads the older copy, or fails when
/// there is none.
fn keep_download(feed_config: &FeedConfig, temp: TempCopy) {
    if let Err(error) = temp.commit() {
        tracing::warn!(
            feed = %feed_config.name,
            path = %feed_config.path.display(),
            %error,
            "failed to keep the new download; a restart would load the older copy"
        );
    }
}

/// Names the kept copy, not the deleted temporary file, in a report of a
/// download. The kept copy has the same lines, so line numbers still hold.
fn point_at_kept_copy(report: &mut FeedReport, feed_config: &FeedConfig) {
    report.path = feed_config.path.clone();
    for diagnostic in &mut report.diagnostics {
        diagnostic.path = feed_config.path.clone();
    }
}

fn parse_lists(config: &Config) -> Result<Lists, LoadError> {
    let mut lists = Lists::new();
    for (name, values) in &config.lists {
        let mut nets = Vec::with_capacity(values.len());
        for value in values {
            let net = parse_list_value(value).map_err(|reason| {
                let offset = config.text.find(&format!("\"{value}\"")).unwrap_or(0);
                let (line, column) = crate::config::line_column(&config.text, offset);
                LoadError::List {
                    path: config.path.clone(),
                    line,
                    column,
                    list: name.clone(),
                    value: value.clone(),
                    reason,
                }
            })?;
            nets.push(net);
        }
        lists.insert(name.clone(), nets);
    }
    Ok(lists)
}

fn parse_list_value(value: &str) -> Result<IpNet, String> {
    if let Ok(net) = value.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    value
        .parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|error| error.to_string())
}

fn parse_rules(config: &Config, lists: &Lists) -> Result<Vec<RuleSpec>, LoadError> {
    let mut rules = Vec::with_capacity(config.rules.len());
    for rule_config in &config.rules {
        let source = rule_config.expression.get_ref();
        let expr = rule::parse(source, lists).map_err(|error| {
            let origin = config.expression_origin(rule_config);
            let (line, column) = origin.position(error.span.start);
            let location = format!("{}:{line}:{column}", config.path.display());
            let rendered = error.render(source, &location);
            let rendered = rendered.strip_prefix("error: ").unwrap_or(&rendered);
            LoadError::Rule(format!("rule `{}`: {rendered}", rule_config.name))
        })?;
        rules.push(RuleSpec {
            name: rule_config.name.clone(),
            source: source.clone(),
            expr,
            action: rule_config.action,
            mark: rule_config.mark,
        });
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn now() -> Timestamp {
        "2026-12-04T00:00:00Z".parse().unwrap()
    }

    const RULE: &str = "[[rule]]\nname = \"listed\"\nexpression = 'any(ip.intel.datasets[*] == \"drop\")'\naction = \"drop\"\n";

    #[test]
    fn map_limit_rejects_whole_image() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "hosts.txt",
            "192.0.2.1\n192.0.2.2\n192.0.2.3\n192.0.2.4\n192.0.2.5\n",
        );
        let config = write(
            dir.path(),
            "intelwall.toml",
            &format!(
                "[agent]\nmax_map_entries = 4\n\n[safety]\nenabled = false\n\n\
                 [[feed]]\nname = \"hosts\"\npath = \"hosts.txt\"\ndatasets = [\"drop\"]\n\n{RULE}"
            ),
        );
        let Err(error) = load(&config, now()) else {
            panic!("an image over the limit loaded");
        };
        assert_eq!(
            error.to_string(),
            "HOSTS_V4 needs 5 entries but [agent] max_map_entries is 4: 4 would load and 1 would not, \
             so nothing was loaded; raise the limit or shrink the feeds"
        );
    }

    #[test]
    fn map_limit_admits_exact_fit() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "hosts.txt",
            "192.0.2.1\n192.0.2.2\n192.0.2.3\n192.0.2.4\n",
        );
        let config = write(
            dir.path(),
            "intelwall.toml",
            &format!(
                "[agent]\nmax_map_entries = 4\n\n[safety]\nenabled = false\n\n\
                 [[feed]]\nname = \"hosts\"\npath = \"hosts.txt\"\ndatasets = [\"drop\"]\n\n{RULE}"
            ),
        );
        let loaded = load(&config, now()).unwrap();
        assert_eq!(loaded.compiled.image.hosts_v4.len(), 4);
    }

    #[test]
    fn unused_rule_value_warns() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "hosts.txt", "192.0.2.1\n");
        let config = write(
            dir.path(),
            "intelwall.toml",
            "[safety]\nenabled = false\n\n[[feed]]\nname = \"hosts\"\npath = \"hosts.txt\"\ndatasets = [\"drop\"]\n\n\
             [[rule]]\nname = \"typo\"\nexpression = 'any(ip.intel.datasets[*] == \"Drop\")'\naction = \"drop\"\n",
        );
        let loaded = load(&config, now()).unwrap();
        assert_eq!(
            loaded.rule_warnings,
            [
                "rule `typo`: no loaded indicator has \"Drop\" in ip.intel.datasets; values are case-sensitive"
            ]
        );
    }

    #[test]
    fn safety_rule_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "hosts.txt", "192.0.2.0/24\n");
        let config = write(
            dir.path(),
            "intelwall.toml",
            &format!(
                "[safety]\nallow = [\"192.0.2.3\"]\n\n\
                 [[feed]]\nname = \"hosts\"\npath = \"hosts.txt\"\ndatasets = [\"drop\"]\n\n{RULE}"
            ),
        );
        let loaded = load(&config, now()).unwrap();
        assert_eq!(loaded.compiled.rules[0].name, SAFETY_RULE);
        let (_, verdict) = loaded.compiled.verdict_for("192.0.2.3".parse().unwrap());
        assert_eq!(verdict.fate, intelwall_common::Fate::Allow);
        let (_, verdict) = loaded.compiled.verdict_for("192.0.2.4".parse().unwrap());
        assert_eq!(verdict.fate, intelwall_common::Fate::Drop);
    }
}
