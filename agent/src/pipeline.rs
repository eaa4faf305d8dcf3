//! From a config file to a compiled image: load feeds, parse rules, compile.
//! `check` and `run` share this path, so `check` validates exactly what `run`
//! would enforce.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use jiff::Timestamp;

use crate::compile::{self, CompileError, Compiled, RuleSpec};
use crate::config::{Config, ConfigError};
use crate::feed::{self, FeedError, FeedReport};
use crate::intel::Intel;
use crate::rule::{self, Lists};

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
    /// A rendered rule diagnostic: location, source line and caret.
    #[error("{0}")]
    Rule(String),
    #[error(transparent)]
    Compile(#[from] CompileError),
}

/// Everything `check` reports and `run` enforces.
pub struct Loaded {
    pub config: Config,
    pub intel: Intel,
    pub feeds: Vec<FeedReport>,
    pub compiled: Compiled,
    pub timings: Timings,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub feeds: Duration,
    pub compile: Duration,
}

/// Loads the config at `path`, its feeds and rules, and compiles them.
pub fn load(path: &Path, now: Timestamp) -> Result<Loaded, LoadError> {
    let config = Config::load(path)?;
    let lists = parse_lists(&config)?;
    let rules = parse_rules(&config, &lists)?;

    let started = Instant::now();
    let mut intel = Intel::new();
    let mut feeds = Vec::with_capacity(config.feeds.len());
    for feed_config in &config.feeds {
        let report =
            feed::load_feed(feed_config, &mut intel, now).map_err(|source| LoadError::Feed {
                feed: feed_config.name.clone(),
                source,
            })?;
        feeds.push(report);
    }
    let feeds_took = started.elapsed();

    let started = Instant::now();
    let compiled = compile::compile(rules, &intel, now)?;
    let timings = Timings {
        feeds: feeds_took,
        compile: started.elapsed(),
    };
    Ok(Loaded {
        config,
        intel,
        feeds,
        compiled,
        timings,
    })
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
            LoadError::Rule(format!(
                "rule `{}`: {}",
                rule_config.name,
                error.render(source, &location)
            ))
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
