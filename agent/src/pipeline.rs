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
    /// A rule that does not parse. `rendered` is the diagnostic as printed:
    /// location, message, source line and caret.
    #[error("rule `{rule}`: {rendered}")]
    Rule {
        rule: String,
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        rendered: String,
    },
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
    /// The file each feed loaded from as it was when read, in config order.
    /// `None` stands for a directory or a file that could not be examined.
    pub stamps: Vec<Option<FileStamp>>,
    /// Feeds taken over from the previous load unread, by name.
    pub reused: Vec<String>,
    /// Feeds that failed to load on a reload, by name, with the error.
    /// Each keeps the indicators and report of its last good load.
    pub failed_feeds: Vec<(String, String)>,
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
    load_inner(path, now, fetch_options, previous, None)
}

/// Loads again after `previous`: a feed whose settings and file are
/// unchanged since `previous` read it keeps its indicators unread, and the
/// rest load as [`load_with`] loads them. `previous` itself is not changed,
/// so that it can stay enforced if this load fails.
pub fn reload(
    path: &Path,
    now: Timestamp,
    fetch_options: &FetchOptions,
    previous: &Loaded,
) -> Result<Loaded, LoadError> {
    load_inner(
        path,
        now,
        fetch_options,
        &previous.compiled.registry,
        Some(previous),
    )
}

fn load_inner(
    path: &Path,
    now: Timestamp,
    fetch_options: &FetchOptions,
    registry: &Registry,
    previous: Option<&Loaded>,
) -> Result<Loaded, LoadError> {
    let config = Config::load(path)?;
    let lists = parse_lists(&config)?;
    let protected = safety::discover(&config.safety)?;
    let mut rules = safety_rule(&protected);
    rules.extend(parse_rules(&config, &lists)?);

    let started = Instant::now();
    let mut inputs = fetch_feeds(&config, fetch_options)?;
    let previous = previous.filter(|previous| !previous.intel.is_worth_rebuilding());
    let (intel, feeds) = load_feeds(&config, &mut inputs, now, previous)?;
    let sources = inputs
        .into_iter()
        .filter_map(|input| input.report)
        .collect();
    let feeds_took = started.elapsed();

    let warnings = safety::prefix_warnings(&intel, &config.safety, &protected);
    let mut rule_warnings = unused_values(&rules, &intel);
    rule_warnings.extend(invalid_countries(&intel));
    let started = Instant::now();
    let compiled = compile::compile(rules, &intel, now, registry)?;
    check_map_limit(&compiled.image, config.agent.max_map_entries)?;
    let timings = Timings {
        feeds: feeds_took,
        compile: started.elapsed(),
    };
    Ok(Loaded {
        config,
        intel,
        feeds: feeds.reports,
        stamps: feeds.stamps,
        reused: feeds.reused,
        failed_feeds: feeds.failed,
        sources,
        compiled,
        timings,
        protected,
        warnings,
        rule_warnings,
    })
}

/// Returns the feeds of `previous` that `next`'s config no longer has, by
/// name, with the number of indicators each had.
pub fn removed_feeds(previous: &Loaded, next: &Loaded) -> Vec<(String, u64)> {
    previous
        .feeds
        .iter()
        .filter(|old| next.config.feeds.iter().all(|new| new.name != old.name))
        .map(|old| (old.name.clone(), old.indicators))
        .collect()
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

/// The results of [`load_feeds`] besides the store, in config order.
struct LoadedFeeds {
    reports: Vec<FeedReport>,
    stamps: Vec<Option<FileStamp>>,
    reused: Vec<String>,
    failed: Vec<(String, String)>,
}

/// Loads every feed into a store: a new one, or a copy of `previous`'s in
/// which feeds unchanged since it keep their indicators.
fn load_feeds(
    config: &Config,
    inputs: &mut [FeedInput],
    now: Timestamp,
    previous: Option<&Loaded>,
) -> Result<(Intel, LoadedFeeds), LoadError> {
    let mut intel = match previous {
        Some(previous) => {
            let mut intel = previous.intel.clone();
            for removed in previous
                .config
                .feeds
                .iter()
                .filter(|old| config.feeds.iter().all(|new| new.name != old.name))
            {
                let id = intel.add_feed(&removed.name);
                intel.clear_table(id);
            }
            intel
        }
        None => Intel::new(),
    };
    let mut feeds = LoadedFeeds {
        reports: Vec::with_capacity(config.feeds.len()),
        stamps: Vec::with_capacity(config.feeds.len()),
        reused: Vec::new(),
        failed: Vec::new(),
    };
    for (feed_config, input) in config.feeds.iter().zip(inputs.iter_mut()) {
        let stamp = FileStamp::of(&feed_config.path);
        if input.download.is_none()
            && let Some(report) =
                previous.and_then(|previous| unchanged(previous, feed_config, stamp))
        {
            feeds.reports.push(report.clone());
            feeds.stamps.push(stamp);
            feeds.reused.push(feed_config.name.clone());
            continue;
        }
        // A download that does not load turns `input` into its kept copy,
        // which then loads like a file. The failed attempt left nothing in
        // the store, because a feed's indicators go in only when its load
        // succeeds.
        let downloaded = input.download.is_some();
        let loaded = loop {
            match load_input(feed_config, input, &mut intel, now) {
                Ok(Some(report)) => break Ok(report),
                Ok(None) => continue,
                Err(error) => break Err(error),
            }
        };
        let report = match loaded {
            Ok(report) => report,
            Err(error) => {
                // On a reload, a feed that no longer loads keeps the
                // indicators of its last good load, which its failed load
                // left in the store, so that other feeds' changes still
                // apply. Its file is read again at the next reload.
                let Some(kept) = previous.and_then(|previous| {
                    let index = previous
                        .config
                        .feeds
                        .iter()
                        .position(|old| old.name == feed_config.name)?;
                    previous.feeds.get(index)
                }) else {
                    return Err(error);
                };
                feeds
                    .failed
                    .push((feed_config.name.clone(), error.to_string()));
                feeds.reports.push(kept.clone());
                feeds.stamps.push(None);
                continue;
            }
        };
        feeds.reports.push(report);
        // A file is stamped before it is read, so that a change while it
        // loads shows at the next reload. A download is stamped once it has
        // become the kept copy.
        feeds.stamps.push(match downloaded {
            true => FileStamp::of(&feed_config.path),
            false => stamp,
        });
    }
    if previous.is_none() {
        intel.set_baseline();
    }
    Ok((intel, feeds))
}

/// Returns the report of `feed_config` in `previous` if the feed had the
/// same settings there and its file is still as `previous` read it.
fn unchanged<'a>(
    previous: &'a Loaded,
    feed_config: &FeedConfig,
    stamp: Option<FileStamp>,
) -> Option<&'a FeedReport> {
    let stamp = stamp?;
    let index = previous
        .config
        .feeds
        .iter()
        .position(|old| old == feed_config)?;
    (previous.stamps.get(index).copied().flatten() == Some(stamp))
        .then(|| previous.feeds.get(index))
        .flatten()
}

/// Identity and version of a feed file: a file rewritten in place changes
/// its size or modification time, and a file replaced by a rename changes
/// its inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified: std::time::SystemTime,
}

impl FileStamp {
    /// Returns the stamp of a regular file. A directory (a MISP feed, whose
    /// event files can change without changing it) or a path that cannot be
    /// examined has none.
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(path).ok()?;
        if !metadata.is_file() {
            return None;
        }
        Some(FileStamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified: metadata.modified().ok()?,
        })
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
            LoadError::Rule {
                rule: rule_config.name.clone(),
                path: config.path.clone(),
                line,
                column,
                message: error.message.clone(),
                rendered: rendered.to_owned(),
            }
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

    /// Writes the config of the reload tests: the `drop` feed, the `scan`
    /// feed with `scan_datasets` when given, and the rule dropping `drop`.
    fn reload_config(dir: &Path, scan_datasets: Option<&str>) -> std::path::PathBuf {
        let scan = scan_datasets.map_or(String::new(), |datasets| {
            format!("[[feed]]\nname = \"scan\"\npath = \"scan.txt\"\ndatasets = [{datasets}]\n\n")
        });
        write(
            dir,
            "intelwall.toml",
            &format!(
                "[safety]\nenabled = false\n\n\
                 [[feed]]\nname = \"drop\"\npath = \"drop.txt\"\ndatasets = [\"drop\"]\n\n\
                 {scan}{RULE}"
            ),
        )
    }

    fn fate(loaded: &Loaded, address: &str) -> intelwall_common::Fate {
        loaded.compiled.verdict_for(address.parse().unwrap()).1.fate
    }

    #[test]
    fn reload_reads_only_changed_feeds() {
        use intelwall_common::Fate;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "drop.txt", "192.0.2.1\n192.0.2.2\n");
        write(dir.path(), "scan.txt", "198.51.100.1\n");
        let config = reload_config(dir.path(), Some("\"drop\""));
        let first = load(&config, now()).unwrap();
        assert!(first.reused.is_empty());

        // A rename puts new contents in place the way feed tools do.
        write(dir.path(), "scan.new", "198.51.100.2\n");
        std::fs::rename(dir.path().join("scan.new"), dir.path().join("scan.txt")).unwrap();
        let second = reload(&config, now(), &FetchOptions::default(), &first).unwrap();
        assert_eq!(second.reused, ["drop"]);
        assert_eq!(fate(&second, "192.0.2.1"), Fate::Drop);
        assert_eq!(fate(&second, "198.51.100.1"), Fate::Pass);
        assert_eq!(fate(&second, "198.51.100.2"), Fate::Drop);
        assert_eq!(second.feeds[0].indicators, 2);
        assert_eq!(second.compiled.selected, [3]);
        assert_eq!(second.intel.indicator_count(), 3);
        // The previous load is left as it was, to stay enforced on failure.
        assert_eq!(fate(&first, "198.51.100.1"), Fate::Drop);

        // Nothing changed: every feed is kept.
        let third = reload(&config, now(), &FetchOptions::default(), &second).unwrap();
        assert_eq!(third.reused, ["drop", "scan"]);
        assert_eq!(third.compiled.image, second.compiled.image);
        assert!(third.compiled.image.entries_digest.is_some());
        assert!(third.compiled.image.same_entries(&second.compiled.image));
        assert!(!second.compiled.image.same_entries(&first.compiled.image));

        // The same hosts under other class ids are other entries.
        let mut recoloured = second.compiled.image.clone();
        recoloured.hosts_v4[0].1 += 1;
        recoloured.entries_digest = Some(recoloured.digest_entries());
        assert!(!recoloured.same_entries(&second.compiled.image));
        recoloured.entries_digest = None;
        assert!(!recoloured.same_entries(&second.compiled.image));
    }

    #[test]
    fn reload_rereads_feed_with_new_settings() {
        use intelwall_common::Fate;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "drop.txt", "192.0.2.1\n");
        write(dir.path(), "scan.txt", "198.51.100.1\n");
        let config = reload_config(dir.path(), Some("\"drop\""));
        let first = load(&config, now()).unwrap();
        assert_eq!(fate(&first, "198.51.100.1"), Fate::Drop);

        reload_config(dir.path(), Some("\"scan\""));
        let second = reload(&config, now(), &FetchOptions::default(), &first).unwrap();
        assert_eq!(second.reused, ["drop"]);
        assert_eq!(fate(&second, "198.51.100.1"), Fate::Pass);
    }

    #[test]
    fn reload_drops_removed_feed() {
        use intelwall_common::Fate;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "drop.txt", "192.0.2.1\n");
        write(dir.path(), "scan.txt", "198.51.100.1\n");
        let config = reload_config(dir.path(), Some("\"drop\""));
        let first = load(&config, now()).unwrap();
        reload_config(dir.path(), None);
        let second = reload(&config, now(), &FetchOptions::default(), &first).unwrap();
        assert_eq!(second.reused, ["drop"]);
        assert_eq!(fate(&second, "198.51.100.1"), Fate::Pass);
        assert_eq!(second.intel.indicator_count(), 1);
        assert_eq!(removed_feeds(&first, &second), [("scan".to_owned(), 1)]);
        assert_eq!(removed_feeds(&second, &second), []);
    }

    #[test]
    fn broken_feed_keeps_its_last_good_load() {
        use intelwall_common::Fate;
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "drop.txt", "192.0.2.1\n");
        write(dir.path(), "scan.txt", "198.51.100.1\n");
        let config = reload_config(dir.path(), Some("\"drop\""));
        let first = load(&config, now()).unwrap();
        write(dir.path(), "drop.txt", "192.0.2.7\n");
        write(dir.path(), "scan.txt", "not an address\n");

        let second = reload(&config, now(), &FetchOptions::default(), &first).unwrap();
        assert_eq!(second.failed_feeds.len(), 1);
        let (name, error) = &second.failed_feeds[0];
        assert_eq!(name, "scan");
        assert!(error.contains("rejected indicator `not`"), "{error}");
        // The broken feed keeps what it had, and the other feed's change applies.
        assert_eq!(fate(&second, "198.51.100.1"), Fate::Drop);
        assert_eq!(fate(&second, "192.0.2.7"), Fate::Drop);
        assert_eq!(fate(&second, "192.0.2.1"), Fate::Pass);
        assert_eq!(second.feeds[1].indicators, 1);
        // The previous load is left as it was.
        assert_eq!(fate(&first, "192.0.2.1"), Fate::Drop);
        assert_eq!(
            first.intel.sightings(&"192.0.2.7/32".parse().unwrap()),
            None
        );

        // Fixed, the feed loads again.
        write(dir.path(), "scan.txt", "198.51.100.2\n");
        let third = reload(&config, now(), &FetchOptions::default(), &second).unwrap();
        assert!(third.failed_feeds.is_empty());
        assert_eq!(third.reused, ["drop"]);
        assert_eq!(fate(&third, "198.51.100.1"), Fate::Pass);
        assert_eq!(fate(&third, "198.51.100.2"), Fate::Drop);
    }

    #[test]
    fn broken_new_feed_fails_the_reload() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "drop.txt", "192.0.2.1\n");
        let config = reload_config(dir.path(), None);
        let first = load(&config, now()).unwrap();
        write(dir.path(), "scan.txt", "not an address\n");
        reload_config(dir.path(), Some("\"drop\""));
        let Err(error) = reload(&config, now(), &FetchOptions::default(), &first) else {
            panic!("a new feed with no valid line loaded");
        };
        assert!(error.to_string().contains("feed `scan`"), "{error}");
    }
}
