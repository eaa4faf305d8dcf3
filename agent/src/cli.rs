//! The `intelwall` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jiff::Timestamp;

use crate::config::{AttachMode, Config};
use crate::daemon::{self, RunOptions};
use crate::pin::PinLayout;
use crate::pipeline::{self, Loaded};
use crate::report::{CheckFailure, CheckReport};

#[derive(Debug, Parser)]
#[command(
    name = "intelwall",
    version,
    about = "Block or tag traffic at line rate with XDP, driven by threat intelligence",
    long_about = "Block or tag traffic at line rate with XDP, driven by threat intelligence.\n\n\
        Feeds of flagged addresses and prefixes, with attributes such as attacker names, \
        countries, target industries and datasets, are compiled together with rules written \
        in Cloudflare's threat-intel expression language into BPF maps that an XDP program \
        consults for every packet."
)]
pub struct Cli {
    /// Enter this network namespace (a name under /run/netns) before doing
    /// anything else, e.g. `--netns blue`. Unlike `ip netns exec`, this keeps
    /// the host's bpffs, so pins outlive the agent.
    #[arg(long, global = true, value_name = "NAME")]
    netns: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load feeds, compile rules, attach to the configured interfaces and
    /// enforce, reloading on file changes, SIGHUP and URL refreshes.
    ///
    /// SIGTERM leaves protection in place (pinned program and maps); SIGINT
    /// detaches and removes it. Both print per-rule counters on exit.
    Run {
        /// Config file (TOML), e.g. /etc/intelwall/intelwall.toml
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Print the counters at exit as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Write sampled events of logging rules as JSON lines to this file
        /// (appended to), or to stdout with `-`, e.g. /var/log/intelwall/events.jsonl.
        /// Rules log with `log = true` (the default for action "log") and
        /// `sample = "1/100"` and/or `rate = "50/s"`.
        #[arg(long, value_name = "PATH")]
        events: Option<PathBuf>,
        /// Serve Prometheus metrics at http://ADDRESS/metrics, e.g.
        /// 127.0.0.1:9464.
        #[arg(long, value_name = "ADDRESS")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Print the per-rule counters (packets and bytes, per interface) and
    /// the totals of the running or pinned instance; works while no agent
    /// runs, from the agent's network namespace (see --netns).
    Stats {
        /// Config file whose [agent] pin_dir and state_dir to read; the
        /// defaults (/sys/fs/bpf/intelwall, /var/lib/intelwall) otherwise.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON object (with --watch, one JSON line each time).
        #[arg(long)]
        json: bool,
        /// Print again every SECONDS (2 when not given), with rates per
        /// second, e.g. `--watch` or `--watch 5`.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
        watch: Option<f64>,
    },
    /// Show the sources that hit each rule most, from an events file that
    /// `intelwall run --events FILE` wrote; the counts are of sampled
    /// events, not of all packets.
    Top {
        /// Events file (JSON lines), or `-` for stdin, e.g.
        /// /var/log/intelwall/events.jsonl.
        #[arg(long, value_name = "PATH")]
        events: PathBuf,
        /// Sources to show per rule.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Only this rule, e.g. ddos-fr.
        #[arg(long, value_name = "NAME")]
        rule: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Validate the config, feeds and rules and compile them without touching
    /// the kernel; print per-feed and per-rule counts. Exits non-zero on any
    /// error.
    Check {
        /// Config file (TOML), e.g. examples/demo.toml
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Print one JSON object on stdout: the summary, or the error when
        /// the check fails.
        #[arg(long)]
        json: bool,
    },
    /// Show an address's attributes and sightings, the predicates that hold,
    /// every rule and whether it matches, and the verdict the XDP program
    /// reaches for it.
    Explain {
        /// Config file (TOML), e.g. examples/demo.toml
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// IPv4 or IPv6 address, e.g. 198.51.100.7
        address: std::net::IpAddr,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Show what is attached where, since when, whether an agent runs,
    /// with which config fingerprint, the feeds with their indicator counts
    /// and load times, and how full the maps are.
    Status {
        /// Config file whose [agent] pin_dir and state_dir to read; the
        /// defaults (/sys/fs/bpf/intelwall, /var/lib/intelwall) otherwise.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Remove the program from an interface and its pins; with no
    /// interface left, remove the pinned maps too.
    Detach {
        /// Interface to detach from, e.g. eth0; every interface when absent.
        #[arg(long, value_name = "IF")]
        iface: Option<String>,
        /// Config file whose [agent] pin_dir and state_dir to use; the
        /// defaults (/sys/fs/bpf/intelwall, /var/lib/intelwall) otherwise.
        #[arg(long, short, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Parses the command line, runs the command and maps errors to exit codes.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Run { .. }) {
        restore_sigpipe();
    }
    if let Some(name) = &cli.netns
        && let Err(error) = enter_netns(name)
    {
        eprintln!("error: {}", error_text(&error));
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run {
            config,
            json,
            events,
            metrics,
        } => daemon::run(RunOptions {
            config,
            json,
            events,
            metrics,
        }),
        Command::Stats {
            config,
            json,
            watch,
        } => watch_interval(watch).and_then(|watch| {
            layout_for(config.as_deref())
                .and_then(|layout| crate::stats::stats(&layout, json, watch))
        }),
        Command::Top {
            events,
            limit,
            rule,
            json,
        } => crate::top::top(&events, limit, rule.as_deref(), json),
        Command::Check { config, json } => check(&config, json),
        Command::Explain {
            config,
            address,
            json,
        } => crate::explain::explain(&config, address, json),
        Command::Status { config, json } => {
            layout_for(config.as_deref()).and_then(|layout| crate::status::status(&layout, json))
        }
        Command::Detach { iface, config } => layout_for(config.as_deref())
            .and_then(|layout| crate::status::detach(&layout, iface.as_deref())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", error_text(&error));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the
/// message already contains: many errors name their source in their own
/// message, and repeating it helps no one.
pub(crate) fn error_text(error: &anyhow::Error) -> String {
    chain_text(error.as_ref())
}

/// [`error_text`] for an error that is not wrapped in [`anyhow::Error`].
pub(crate) fn chain_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    let causes = std::iter::successors(Some(error), |cause| cause.source());
    for cause in causes {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

/// Lets a short-lived command end quietly when its output pipe closes
/// (`intelwall stats --watch | head`), as command-line tools do, instead of
/// failing on the write. The agent keeps ignoring SIGPIPE, so that a closed
/// events pipe never stops enforcement.
fn restore_sigpipe() {
    // SAFETY: setting a signal's disposition to the default is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INTELWALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a terminal; the journal and log files get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

/// Moves this thread, and every thread it starts later, into a network
/// namespace. Must run before any other thread exists.
fn enter_netns(name: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(name);
    let file = std::fs::File::open(&path)
        .with_context(|| format!("network namespace `{name}` not found at {}", path.display()))?;
    // SAFETY: the descriptor is a valid open namespace file.
    let result = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
    if result != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot enter network namespace `{name}`"));
    }
    Ok(())
}

fn watch_interval(seconds: Option<f64>) -> Result<Option<std::time::Duration>> {
    match seconds {
        None => Ok(None),
        Some(seconds) if seconds.is_finite() && seconds >= 0.1 => {
            Ok(Some(std::time::Duration::from_secs_f64(seconds)))
        }
        Some(seconds) => anyhow::bail!("--watch takes at least 0.1 seconds, got {seconds}"),
    }
}

fn layout_for(config: Option<&Path>) -> Result<PinLayout> {
    match config {
        Some(path) => {
            let config = Config::load(path)?;
            Ok(PinLayout::new(
                &config.agent.pin_dir,
                &config.agent.state_dir,
            ))
        }
        None => {
            let defaults = crate::config::AgentConfig::default();
            Ok(PinLayout::new(&defaults.pin_dir, &defaults.state_dir))
        }
    }
}

/// Prints every feed diagnostic and safety warning on stderr.
pub(crate) fn print_diagnostics(loaded: &Loaded) {
    if !loaded.config.safety.enabled {
        eprintln!(
            "warning: [safety] enabled = false: drop rules may cut this host off from its gateway, resolvers and operators"
        );
    }
    for warning in &loaded.warnings {
        eprintln!("warning: {warning}");
    }
    for warning in &loaded.rule_warnings {
        eprintln!("warning: {warning}");
    }
    // A feed kept from the previous load had its diagnostics shown then.
    for feed in loaded
        .feeds
        .iter()
        .filter(|feed| !loaded.reused.contains(&feed.name))
    {
        for diagnostic in &feed.diagnostics {
            eprintln!("{diagnostic}");
        }
        if feed.diagnostics_omitted > 0 {
            eprintln!(
                "{}: {} more diagnostics not shown",
                feed.path.display(),
                feed.diagnostics_omitted
            );
        }
    }
}

fn check(config: &Path, json: bool) -> Result<()> {
    let loaded = match pipeline::load(config, Timestamp::now()) {
        Ok(loaded) => loaded,
        Err(error) => {
            // Scripts that read stdout get a JSON document in either case.
            if json {
                let failure = CheckFailure::new(&error, config);
                println!("{}", serde_json::to_string_pretty(&failure)?);
            }
            return Err(error.into());
        }
    };
    print_diagnostics(&loaded);
    let report = CheckReport::new(&loaded);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

pub(crate) fn log_loaded(loaded: &Loaded) {
    for feed in &loaded.feeds {
        if loaded.reused.contains(&feed.name) {
            tracing::debug!(
                feed = %feed.name,
                indicators = feed.indicators,
                "feed unchanged since the last load; its indicators are kept"
            );
            continue;
        }
        tracing::info!(
            feed = %feed.name,
            read = feed.read,
            indicators = feed.indicators,
            rejected = feed.rejected,
            normalised = feed.normalised,
            "feed loaded"
        );
    }
    let compiled = &loaded.compiled;
    tracing::info!(
        rules = compiled.rules.len(),
        predicates = compiled.predicates.iter().flatten().count(),
        classes = compiled.registry.class_count(),
        indicators = loaded.intel.indicator_count(),
        feeds_ms = loaded.timings.feeds.as_millis() as u64,
        compile_ms = loaded.timings.compile.as_millis() as u64,
        "compiled"
    );
}

pub(crate) fn attach_hint(interface: &str, mode: AttachMode) -> String {
    match mode {
        AttachMode::Native => format!(
            "cannot attach to `{interface}` in native mode; the driver may lack XDP support, try mode = \"skb\" or \"auto\""
        ),
        _ => format!("cannot attach to `{interface}` in {mode} mode"),
    }
}
