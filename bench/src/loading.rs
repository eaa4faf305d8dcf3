//! From feed file to enforced: intelwall (library path and the real
//! `intelwall run`), `ipset restore` and `nft -f`, each in a fresh testbed.

use std::io::BufRead;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use intelwall_tests::agent::{AgentDirs, xdp_attached};
use intelwall_tests::netns::Testbed;

use crate::peers::{self, IPTABLES_SCRIPT};
use crate::stats::Summary;
use crate::subject;
use crate::system::{self, run_measured};

const LIBRARY_SUBJECT: &str = "intelwall, library path (parse, compile, write maps)";

/// One way of loading one feed.
pub struct LoadRow {
    pub subject: &'static str,
    pub seconds: Summary,
    /// Peak resident memory of the loading process, in MiB.
    pub peak_rss_mib: Option<Summary>,
}

/// Memory of a running agent after it attached.
pub struct AgentMemory {
    pub rss_mib: f64,
    pub map_bytes: u64,
}

/// Loading of one feed by every subject.
pub struct LoadTable {
    pub feed: String,
    pub indicators: usize,
    pub runs: usize,
    pub rows: Vec<LoadRow>,
    pub agent_memory: Option<AgentMemory>,
    /// Subjects that failed or ran out of time, with the reason.
    pub failures: Vec<String>,
}

/// Feed file, the same addresses in peer syntax, and how to load them.
pub struct LoadInput<'a> {
    pub feed_name: String,
    pub config: &'a Path,
    pub indicators: usize,
    pub v4: Vec<String>,
    pub v6: Vec<String>,
    pub has_prefixes: bool,
    /// Seconds of a library-path load already measured elsewhere, reused
    /// instead of loading a large feed once more.
    pub library_seconds: Option<f64>,
}

/// Loads `input` `runs` times with each subject. A peer that fails or
/// exceeds `timeout` is reported, not fatal, because the comparison is still
/// worth having without it.
pub fn measure(
    input: &LoadInput<'_>,
    work: &Path,
    agent: &Path,
    runs: usize,
    timeout: Duration,
) -> Result<LoadTable> {
    let mut table = LoadTable {
        feed: input.feed_name.clone(),
        indicators: input.indicators,
        runs,
        rows: Vec::new(),
        agent_memory: None,
        failures: Vec::new(),
    };
    eprintln!("  loading {}: intelwall library", input.feed_name);
    let library_row = match input.library_seconds {
        Some(seconds) => LoadRow {
            subject: LIBRARY_SUBJECT,
            seconds: Summary::of(&[seconds]),
            peak_rss_mib: None,
        },
        None => library(input.config, runs)?,
    };
    table.rows.push(library_row);
    eprintln!("  loading {}: intelwall run", input.feed_name);
    match agent_run(input.config, agent, runs) {
        Ok((row, memory)) => {
            table.rows.push(row);
            table.agent_memory = Some(memory);
        }
        Err(error) => table.failures.push(format!("intelwall run: {error:#}")),
    }

    let ipset_file = work.join("load.ipset");
    peers::write_ipset_file(&ipset_file, &input.v4, &input.v6, input.has_prefixes)?;
    eprintln!("  loading {}: ipset restore", input.feed_name);
    match peer(runs, timeout, |netns| {
        let mut commands = vec![netns_command(
            netns,
            &["ipset", "restore", "-f", &ipset_file.display().to_string()],
        )];
        for line in IPTABLES_SCRIPT.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            commands.push(netns_command(netns, &words));
        }
        commands
    }) {
        Ok((seconds, rss)) => table.rows.push(LoadRow {
            subject: "ipset restore + iptables raw rule",
            seconds,
            peak_rss_mib: Some(rss),
        }),
        Err(error) => table.failures.push(format!("ipset: {error:#}")),
    }
    std::fs::remove_file(&ipset_file).ok();

    let nft_file = work.join("load.nft");
    peers::write_nft_file(&nft_file, &input.v4, &input.v6, input.has_prefixes)?;
    eprintln!("  loading {}: nft -f", input.feed_name);
    match peer(runs, timeout, |netns| {
        vec![netns_command(
            netns,
            &["nft", "-f", &nft_file.display().to_string()],
        )]
    }) {
        Ok((seconds, rss)) => table.rows.push(LoadRow {
            subject: "nft -f (set and drop rule)",
            seconds,
            peak_rss_mib: Some(rss),
        }),
        Err(error) => table.failures.push(format!("nftables: {error:#}")),
    }
    std::fs::remove_file(&nft_file).ok();
    Ok(table)
}

/// Builds `ip netns exec NETNS ARGS...`. `ip` replaces itself with the
/// program, so the child's pid is the program's, which peak memory needs.
fn netns_command(netns: &str, args: &[&str]) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns]).args(args);
    command
}

/// Loads through the library path in this process: parse, compile, load
/// the program, write the maps. Attaching is left out because it takes
/// milliseconds.
fn library(config: &Path, runs: usize) -> Result<LoadRow> {
    let seconds = Summary::measure(runs, || {
        system::wait_until_idle();
        let started = Instant::now();
        intelwall::dataplane::prepare_loader();
        let loaded = subject::load(config)?;
        let (dataplane, _) = subject::dataplane(&loaded.compiled)?;
        let elapsed = started.elapsed();
        drop(dataplane);
        drop(loaded);
        Ok(elapsed.as_secs_f64())
    })?;
    Ok(LoadRow {
        subject: LIBRARY_SUBJECT,
        seconds,
        peak_rss_mib: None,
    })
}

/// Runs `intelwall run` in a testbed and times it from process start until
/// its program is attached, checked every [`ATTACH_POLL`].
fn agent_run(config: &Path, agent: &Path, runs: usize) -> Result<(LoadRow, AgentMemory)> {
    let mut seconds = Vec::new();
    let mut rss = Vec::new();
    let mut memory = None;
    for _ in 0..runs {
        let testbed = Testbed::new()?;
        let receiver = testbed.receiver();
        let dirs = AgentDirs::new()?;
        let config = subject::for_agent(config, &receiver.interface, &dirs)?;
        system::wait_until_idle();
        let mut running = RunningAgent::start(agent, &receiver.netns, &config)?;
        let started = Instant::now();
        running.wait_attached(&receiver.netns, &receiver.interface)?;
        seconds.push(started.elapsed().as_secs_f64());
        let pid = running.child.id();
        let peak_kib = system::proc_field(format!("/proc/{pid}/status"), "VmHWM:")
            .context("cannot read the agent's VmHWM")?;
        let rss_mib = peak_kib as f64 / 1024.0;
        rss.push(rss_mib);
        memory = Some(AgentMemory {
            rss_mib,
            map_bytes: system::map_memlock_bytes(pid)?,
        });
        running.stop()?;
    }
    let row = LoadRow {
        subject: "intelwall run, start to attached",
        seconds: Summary::of(&seconds),
        peak_rss_mib: Some(Summary::of(&rss)),
    };
    Ok((row, memory.context("no run")?))
}

/// Interval between checks for the agent's attached program.
const ATTACH_POLL: Duration = Duration::from_millis(20);
/// Longest wait for an agent to attach: a 10,000,000-indicator feed takes
/// about two minutes on a 2-core VM, and the limit leaves room for slower
/// machines.
const ATTACH_LIMIT: Duration = Duration::from_secs(900);

/// An `intelwall run` process, stopped with SIGINT (or killed) on drop. The
/// bench has its own guard, rather than the tests' one, for a longer attach
/// limit and finer polling.
struct RunningAgent {
    child: std::process::Child,
}

impl RunningAgent {
    fn start(agent: &Path, netns: &str, config: &Path) -> Result<RunningAgent> {
        // `ip netns exec` replaces itself with the agent, so signals and
        // /proc/PID reach the agent itself.
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(agent)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", agent.display()))?;
        Ok(RunningAgent { child })
    }

    fn wait_attached(&mut self, netns: &str, interface: &str) -> Result<()> {
        let started = Instant::now();
        while started.elapsed() < ATTACH_LIMIT {
            if xdp_attached(netns, interface)? {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("intelwall run exited ({status}) before attaching");
            }
            std::thread::sleep(ATTACH_POLL);
        }
        anyhow::bail!(
            "intelwall run did not attach within {} s",
            ATTACH_LIMIT.as_secs()
        )
    }

    fn stop(mut self) -> Result<()> {
        self.signal_and_wait()
    }

    fn signal_and_wait(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) on a child this process spawned and has not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().context("cannot kill intelwall run")?;
        self.child.wait().context("cannot reap intelwall run")?;
        Ok(())
    }
}

impl Drop for RunningAgent {
    fn drop(&mut self) {
        if let Err(error) = self.signal_and_wait() {
            eprintln!("cannot stop intelwall run: {error:#}");
        }
    }
}

/// Runs the commands that `steps` builds for a fresh testbed's receiver
/// namespace, `runs` times, and returns total seconds and the largest peak
/// RSS of a step, in MiB.
fn peer(
    runs: usize,
    timeout: Duration,
    steps: impl Fn(&str) -> Vec<Command>,
) -> Result<(Summary, Summary)> {
    let mut seconds = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let testbed = Testbed::new()?;
        system::wait_until_idle();
        let mut total = Duration::ZERO;
        let mut peak = 0u64;
        for mut command in steps(&testbed.receiver().netns) {
            let measured = run_measured(&mut command, timeout)?;
            total += measured.elapsed;
            peak = peak.max(measured.max_rss_kib);
        }
        seconds.push(total.as_secs_f64());
        rss.push(peak as f64 / 1024.0);
    }
    Ok((Summary::of(&seconds), Summary::of(&rss)))
}

/// Reads the distinct indicators of a generated jsonl feed, split by
/// address family, in peer syntax. Sightings of one indicator are
/// consecutive lines in generated feeds, so comparing with the previous
/// line removes the repeats.
pub fn indicators_of(feed: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let file =
        std::fs::File::open(feed).with_context(|| format!("cannot open {}", feed.display()))?;
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    let mut previous = String::new();
    for line in std::io::BufReader::with_capacity(1 << 20, file).lines() {
        let line = line?;
        let Some(indicator) = line
            .split_once(r#""indicator": ""#)
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(indicator, _)| indicator)
        else {
            continue;
        };
        if indicator == previous {
            continue;
        }
        previous.clear();
        previous.push_str(indicator);
        if indicator.contains(':') {
            v6.push(indicator.to_owned());
        } else {
            v4.push(indicator.to_owned());
        }
    }
    Ok((v4, v6))
}

/// Returns the shell commands a peer load runs, for the report.
pub fn peer_commands() -> String {
    format!(
        "ipset restore -f FILE; {}; nft -f FILE",
        IPTABLES_SCRIPT.trim().replace('\n', "; ")
    )
}
