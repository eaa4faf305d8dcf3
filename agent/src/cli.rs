//! The `intelwall` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use jiff::Timestamp;

use crate::dataplane::{Capacity, Dataplane};
use crate::pipeline::{self, Loaded};
use crate::report::{CheckReport, CounterReport};

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
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load feeds, compile rules, attach to the configured interfaces and
    /// enforce until SIGINT or SIGTERM; then detach and print per-rule counters.
    Run {
        /// Config file (TOML), e.g. /etc/intelwall/intelwall.toml
        #[arg(long, short, value_name = "FILE")]
        config: PathBuf,
        /// Print the counters at exit as one JSON object instead of a table.
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
        /// Print the summary as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// Parses the command line, runs the command and maps errors to exit codes.
pub fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, json } => run(config, json),
        Command::Check { config, json } => check(config, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INTELWALL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn load(config: &std::path::Path) -> Result<Loaded> {
    let loaded = pipeline::load(config, Timestamp::now())?;
    for feed in &loaded.feeds {
        for diagnostic in &feed.diagnostics {
            eprintln!("{diagnostic}");
        }
    }
    Ok(loaded)
}

fn check(config: PathBuf, json: bool) -> Result<()> {
    let loaded = load(&config)?;
    let report = CheckReport::new(&loaded);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn run(config: PathBuf, json: bool) -> Result<()> {
    let loaded = load(&config)?;
    log_loaded(&loaded);
    if loaded.config.interfaces.is_empty() {
        anyhow::bail!(
            "{}: no [[interface]] configured; add one, e.g. [[interface]] name = \"eth0\"",
            config.display()
        );
    }

    let started = Instant::now();
    let image = &loaded.compiled.image;
    let mut dataplane =
        Dataplane::load(Capacity::for_image(image)).context("cannot load the XDP program")?;
    dataplane
        .write_initial(image)
        .context("cannot write the compiled intel into the kernel maps")?;
    tracing::info!(
        entries = image.hosts_v4.len()
            + image.hosts_v6.len()
            + image.prefixes_v4.len()
            + image.prefixes_v6.len(),
        classes = image.classes.len(),
        took_ms = started.elapsed().as_millis() as u64,
        "maps written"
    );

    // The maps are complete before the first attach, so the first packet the
    // program sees is already judged against the whole image.
    for interface in &loaded.config.interfaces {
        let attachment = dataplane
            .attach(&interface.name, interface.mode)
            .with_context(|| attach_hint(&interface.name, interface.mode))?;
        if let Some(reason) = &attachment.fallback_reason {
            tracing::warn!(interface = %attachment.interface, %reason, "native XDP failed; attached in skb mode");
        }
        tracing::info!(interface = %attachment.interface, mode = attachment.mode, "attached");
    }

    wait_for_shutdown()?;

    let report = CounterReport::new(
        &loaded.compiled,
        &dataplane.class_counters(loaded.compiled.verdicts.len())?,
        &dataplane.path_counters()?,
    );
    dataplane.detach_all().context("cannot detach")?;
    tracing::info!("detached; protection removed");
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

fn log_loaded(loaded: &Loaded) {
    for feed in &loaded.feeds {
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
        predicates = compiled.predicates.len(),
        classes = compiled.verdicts.len(),
        indicators = loaded.intel.indicator_count(),
        feeds_ms = loaded.timings.feeds.as_millis() as u64,
        compile_ms = loaded.timings.compile.as_millis() as u64,
        "compiled"
    );
}

fn attach_hint(interface: &str, mode: crate::config::AttachMode) -> String {
    match mode {
        crate::config::AttachMode::Native => format!(
            "cannot attach to `{interface}` in native mode; the driver may lack XDP support, try mode = \"skb\" or \"auto\""
        ),
        _ => format!("cannot attach to `{interface}` in {mode} mode"),
    }
}

fn wait_for_shutdown() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received; shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received; shutting down"),
        }
        Ok(())
    })
}
