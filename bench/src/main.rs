//! `intelwall-bench`: measures intelwall against a trivial XDP program,
//! xdp-filter, nftables and iptables with ipset, and writes BENCHMARKS.md.
//! Run it through `cargo xtask bench`, which builds the release agent first.

mod bpf;
mod changes;
mod checking;
mod e2e;
mod feedgen;
mod kernel;
mod loading;
mod peers;
mod report;
mod stats;
mod subject;
mod system;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::kernel::KernelSettings;
use crate::loading::LoadInput;
use crate::report::{Results, group};

#[derive(Parser)]
#[command(about = "Benchmark intelwall against its peers and write BENCHMARKS.md")]
struct Cli {
    /// Smaller sizes and fewer repeats, for development and CI.
    #[arg(long)]
    quick: bool,
    /// The `intelwall` binary to run (a release build).
    #[arg(long, value_name = "FILE", default_value = "target/release/intelwall")]
    agent: PathBuf,
    /// Report file to write.
    #[arg(long, value_name = "FILE", default_value = "BENCHMARKS.md")]
    output: PathBuf,
    /// Only write the generated mixed jsonl feed of this many indicators
    /// into the directory DIR, for profiling a load by hand, and exit.
    #[arg(long, value_names = ["COUNT", "DIR"], num_args = 2)]
    write_feed: Option<Vec<String>>,
}

/// Sizes and repeat counts of one run.
struct Plan {
    kernel: KernelSettings,
    /// Feed sizes of the per-packet cases.
    cost_sizes: Vec<usize>,
    /// Feed sizes of the cold lookups; a superset of `cost_sizes`.
    cold_sizes: Vec<usize>,
    /// IPv4 addresses of the end-to-end filters and the list load.
    list_size: usize,
    e2e_runs: usize,
    e2e_window: Duration,
    list_load_runs: usize,
    /// Mixed indicators of the second load, measured once: one load of it
    /// takes minutes.
    mixed_load_size: usize,
    peer_timeout: Duration,
    change_runs: usize,
    /// Runs of `intelwall check` on the mixed load's feed.
    check_runs: usize,
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            return Plan {
                kernel: KernelSettings {
                    repeat: 100_000,
                    runs: 3,
                    cold_frames: 5_000,
                    cold_runs: 2,
                },
                cost_sizes: vec![1_000, 100_000],
                cold_sizes: vec![1_000, 100_000],
                list_size: 100_000,
                e2e_runs: 2,
                e2e_window: Duration::from_secs(1),
                list_load_runs: 2,
                mixed_load_size: 1_000_000,
                peer_timeout: Duration::from_secs(120),
                change_runs: 2,
                check_runs: 1,
            };
        }
        Plan {
            kernel: KernelSettings {
                repeat: 1_000_000,
                runs: 5,
                cold_frames: 100_000,
                cold_runs: 3,
            },
            cost_sizes: vec![1_000, 10_000_000],
            cold_sizes: vec![1_000, 1_000_000, 10_000_000],
            list_size: 1_000_000,
            e2e_runs: 3,
            e2e_window: Duration::from_secs(5),
            list_load_runs: 5,
            mixed_load_size: 10_000_000,
            peer_timeout: Duration::from_secs(300),
            change_runs: 2,
            check_runs: 3,
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(args) = &cli.write_feed {
        let count: usize = args[0]
            .parse()
            .with_context(|| format!("invalid indicator count `{}`", args[0]))?;
        let feed = feedgen::write_mixed(Path::new(&args[1]), count, 0)?;
        eprintln!(
            "wrote {} with {} indicators and {} sightings",
            feed.path.display(),
            group(feed.indicators),
            group(feed.sightings)
        );
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the bench needs root: it creates network namespaces and loads BPF programs");
    }
    if !cli.agent.is_file() {
        bail!(
            "agent binary {} not found; `cargo xtask bench` builds it",
            cli.agent.display()
        );
    }
    let started = Instant::now();
    let results = run(&cli)?;
    let text = report::render(&results);
    std::fs::write(&cli.output, text)
        .with_context(|| format!("cannot write {}", cli.output.display()))?;
    eprintln!(
        "wrote {} in {:.0} s",
        cli.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn run(cli: &Cli) -> Result<Results> {
    let plan = Plan::new(cli.quick);
    let installed = peers::install_missing()?;
    let work = tempfile::Builder::new()
        .prefix("intelwall-bench-")
        .tempdir()
        .context("cannot create a work directory")?;
    let floor = bpf::load_floor_program()?;

    let mut costs = Vec::new();
    let mut cold = Vec::new();
    let mut mixed_library_seconds = None;
    let mut mixed_feed = None;
    let mut changes = Vec::new();
    let mut change_size = 0;
    for &size in &plan.cold_sizes {
        eprintln!("kernel cost: {} indicators", group(size));
        let feed = feedgen::write_mixed(work.path(), size, plan.kernel.cold_frames)?;
        let config = subject::write_mixed_config(work.path(), &feed.path, 64)?;
        let load_started = Instant::now();
        let loaded = subject::load(&config)?;
        if size == plan.mixed_load_size {
            let (dataplane, _) = subject::dataplane(&loaded.compiled)?;
            mixed_library_seconds = Some(load_started.elapsed().as_secs_f64());
            drop(dataplane);
        }
        let with_costs = plan.cost_sizes.contains(&size);
        let result = kernel::measure_size(&loaded, &feed, &plan.kernel, &floor, with_costs)?;
        costs.extend(result.costs);
        cold.extend(result.cold);
        if Some(&size) == plan.cold_sizes.last() {
            eprintln!("change latency: {} indicators", group(size));
            let mut loaded = loaded;
            changes = changes::measure(&mut loaded, work.path(), plan.change_runs)?;
            change_size = loaded.intel.indicator_count();
        } else {
            drop(loaded);
        }
        if size == plan.mixed_load_size {
            mixed_feed = Some((feed, config));
        } else {
            std::fs::remove_file(&feed.path).ok();
        }
    }

    eprintln!(
        "end to end: {} flagged IPv4 addresses",
        group(plan.list_size)
    );
    let (list, addresses) = feedgen::write_ipv4_list(work.path(), plan.list_size)?;
    let e2e = e2e::measure(
        &addresses,
        &list,
        work.path(),
        &cli.agent,
        plan.e2e_runs,
        plan.e2e_window,
    )?;

    eprintln!("loading");
    let list_config = subject::write_list_config(work.path(), &list)?;
    let list_input = LoadInput {
        feed_name: "IPv4 address list".into(),
        config: &list_config,
        indicators: addresses.len(),
        v4: addresses.iter().map(ToString::to_string).collect(),
        v6: Vec::new(),
        has_prefixes: false,
        library_seconds: None,
    };
    drop(addresses);
    let mut loads = vec![loading::measure(
        &list_input,
        work.path(),
        &cli.agent,
        plan.list_load_runs,
        plan.peer_timeout,
    )?];
    drop(list_input);
    // A failure here leaves the other figures standing: the table reports
    // which subject failed and why.
    let mixed = match mixed_feed {
        Some(kept) => Ok(kept),
        None => write_mixed(&plan, work.path()),
    };
    eprintln!("check: {} mixed indicators", group(plan.mixed_load_size));
    let check = match &mixed {
        Ok((feed, _)) => checking::measure(
            &cli.agent,
            &feed.path,
            feed.indicators,
            work.path(),
            plan.check_runs,
            plan.peer_timeout,
        )
        .map_err(|error| format!("{error:#}")),
        Err(error) => Err(format!("{error:#}")),
    };
    let mixed_table = mixed.and_then(|(feed, config)| {
        mixed_load(
            feed,
            &config,
            mixed_library_seconds,
            work.path(),
            &cli.agent,
            &plan,
        )
    });
    match mixed_table {
        Ok(table) => loads.push(table),
        Err(error) => loads.push(loading::LoadTable {
            feed: "mixed jsonl feed with attributes, 64 rules".into(),
            indicators: plan.mixed_load_size,
            runs: 1,
            rows: Vec::new(),
            agent_memory: None,
            failures: vec![format!("the whole load: {error:#}")],
        }),
    }

    Ok(Results {
        quick: cli.quick,
        machine: system::Machine::describe(),
        date: jiff::Timestamp::now()
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        revision: revision(),
        tools: tool_versions(),
        installed,
        repeat: plan.kernel.repeat,
        runs: plan.kernel.runs,
        costs,
        cold,
        cold_frames: plan.kernel.cold_frames,
        e2e,
        e2e_flagged: plan.list_size,
        e2e_window_seconds: plan.e2e_window.as_secs_f64(),
        e2e_runs: plan.e2e_runs,
        loads,
        check,
        changes,
        change_size,
        commands: commands(cli.quick),
    })
}

/// Generates the mixed feed of the load, when its size was not among the
/// kernel measurements, with its 64-rule config.
fn write_mixed(plan: &Plan, work: &Path) -> Result<(feedgen::MixedFeed, PathBuf)> {
    let feed = feedgen::write_mixed(work, plan.mixed_load_size, 0)?;
    let config = subject::write_mixed_config(work, &feed.path, 64)?;
    Ok((feed, config))
}

/// Loads the generated mixed feed with every subject.
fn mixed_load(
    feed: feedgen::MixedFeed,
    config: &Path,
    library_seconds: Option<f64>,
    work: &Path,
    agent: &Path,
    plan: &Plan,
) -> Result<loading::LoadTable> {
    let (v4, v6) = loading::indicators_of(&feed.path)?;
    let input = LoadInput {
        feed_name: "mixed jsonl feed with attributes, 64 rules".into(),
        config,
        indicators: feed.indicators,
        v4,
        v6,
        has_prefixes: true,
        library_seconds,
    };
    loading::measure(&input, work, agent, 1, plan.peer_timeout)
}

/// Returns `$INTELWALL_REVISION` when set, for a build from an exported
/// tree, else what `git describe --always --dirty` prints for this
/// workspace.
fn revision() -> String {
    if let Ok(revision) = std::env::var("INTELWALL_REVISION") {
        return revision;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["describe", "--always", "--dirty"])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        _ => "unknown".into(),
    }
}

fn tool_versions() -> Vec<(String, String)> {
    // xdp-filter has no version option, so its package's version stands in.
    let xdp_tools = system::version_of(
        "dpkg-query",
        &["-W", "-f=xdp-tools ${Version}", "xdp-tools"],
    );
    let mut versions = vec![("xdp-filter".to_owned(), xdp_tools)];
    let others = [
        ("nft", vec!["--version"]),
        ("ipset", vec!["--version"]),
        ("iptables", vec!["--version"]),
        ("bpftool", vec!["--version"]),
    ];
    versions.extend(
        others
            .into_iter()
            .map(|(tool, args)| (tool.to_owned(), system::version_of(tool, &args))),
    );
    versions
}

fn commands(quick: bool) -> Vec<String> {
    let flag = if quick { " --quick" } else { "" };
    vec![
        format!("cargo xtask bench{flag}"),
        "# which runs, after `cargo build --release -p intelwall`:".into(),
        format!(
            "cargo run --release -p intelwall-bench -- --agent target/release/intelwall{flag} --output BENCHMARKS.md"
        ),
        "# peers, each inside a bench namespace (ip netns exec NS ...):".into(),
        format!("# {}", peers::XDP_FILTER_COMMANDS),
        format!("# {}", loading::peer_commands()),
    ]
}
