//! Facts about the machine and its processes: the machine description for
//! the report, CPU time from /proc/stat, peak memory, kernel map memory, and
//! commands run with their peak RSS.

use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Description of the machine, for the report.
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub memory_gib: f64,
    pub os: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, model)| model.trim().to_owned());
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".into(), |text| text.trim().to_owned());
        let memory_kib = proc_field("/proc/meminfo", "MemTotal:").unwrap_or(0);
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map_or_else(
                || "unknown".into(),
                |name| name.trim_matches('"').to_owned(),
            );
        Machine {
            cpu_model,
            cores,
            kernel,
            memory_gib: memory_kib as f64 / (1024.0 * 1024.0),
            os,
        }
    }
}

/// Reads the number after `field` in a `Name: value kB` file such as
/// /proc/meminfo or /proc/PID/status.
pub fn proc_field(path: impl AsRef<Path>, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Softirq time of one CPU, in USER_HZ ticks. Without
/// CONFIG_IRQ_TIME_ACCOUNTING the kernel samples it at each tick, so it is an
/// estimate that improves with the length of the window.
pub fn cpu_softirq_ticks(cpu: usize) -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let label = format!("cpu{cpu} ");
    let line = stat
        .lines()
        .find(|line| line.starts_with(&label))
        .with_context(|| format!("/proc/stat has no line for cpu{cpu}"))?;
    // Columns after the label: user nice system idle iowait irq softirq ...
    line.split_whitespace()
        .nth(7)
        .and_then(|value| value.parse().ok())
        .with_context(|| format!("no softirq column in `{line}`"))
}

/// Waits until the CPUs are quiet: at least 90% idle over three 100 ms
/// windows in a row, or 30 s at most. Deleting a namespace that held a
/// million-entry set, or the maps of a stopped agent, leaves the kernel
/// freeing them in the background on the cores that the next timed run
/// needs.
pub fn wait_until_idle() {
    const WINDOW: Duration = Duration::from_millis(100);
    const LIMIT: Duration = Duration::from_secs(30);
    let started = Instant::now();
    let mut quiet_windows = 0;
    let mut before = cpu_idle_and_total();
    while quiet_windows < 3 && started.elapsed() < LIMIT {
        std::thread::sleep(WINDOW);
        let now = cpu_idle_and_total();
        // Without /proc/stat there is nothing to wait for.
        let (Some((idle_before, total_before)), Some((idle, total))) = (before, now) else {
            return;
        };
        let elapsed = total.saturating_sub(total_before);
        let quiet = elapsed > 0 && idle.saturating_sub(idle_before) as f64 >= 0.9 * elapsed as f64;
        quiet_windows = if quiet { quiet_windows + 1 } else { 0 };
        before = now;
    }
}

/// Returns the idle ticks (idle and iowait) and all ticks of every CPU
/// together, from the first line of /proc/stat.
fn cpu_idle_and_total() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let columns: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|value| value.parse().ok())
        .collect();
    // Columns: user nice system idle iowait irq softirq steal guest
    // guest_nice; guest time is already counted in user and nice.
    let idle = columns.get(3)? + columns.get(4)?;
    let total = columns.iter().take(8).sum();
    Some((idle, total))
}

/// Length of a USER_HZ tick.
pub fn tick() -> Duration {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Duration::from_secs_f64(1.0 / hz.max(1) as f64)
}

/// Sums the `memlock` of every BPF map that process `pid` has open, from
/// /proc/PID/fdinfo: the kernel memory its maps are charged for.
pub fn map_memlock_bytes(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/fdinfo");
    let mut total = 0;
    for entry in std::fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let Ok(text) = std::fs::read_to_string(entry?.path()) else {
            continue;
        };
        if !text.contains("map_type:") {
            continue;
        }
        if let Some(memlock) = text
            .lines()
            .find_map(|line| line.strip_prefix("memlock:"))
            .and_then(|value| value.trim().parse::<u64>().ok())
        {
            total += memlock;
        }
    }
    Ok(total)
}

/// A finished command: how long it took and its peak resident memory.
pub struct Measured {
    pub elapsed: Duration,
    pub max_rss_kib: u64,
}

/// Runs `command` to completion and samples its VmHWM (peak RSS) every
/// 5 ms. The rusage of wait4(2) is no use here, because a child forked from
/// the large bench process carries the parent's RSS until it calls exec, and
/// Linux keeps that peak across exec. `ip netns exec` replaces itself with
/// the program it runs, so the figure is the program's. Kills the command
/// after `timeout` and fails.
pub fn run_measured(command: &mut Command, timeout: Duration) -> Result<Measured> {
    use std::os::unix::process::ExitStatusExt;

    let line = format!("{command:?}");
    let started = Instant::now();
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {line}"))?;
    let pid = child.id() as libc::pid_t;
    // stderr is read on a thread so that a chatty command cannot fill the
    // pipe and stall.
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        text
    });
    let mut peak_kib = 0;
    loop {
        // The sample before the reap is the last one taken while the
        // process still exists.
        if let Some(hwm) = proc_field(format!("/proc/{pid}/status"), "VmHWM:") {
            peak_kib = peak_kib.max(hwm);
        }
        let mut status = 0;
        // SAFETY: `pid` is this process's unreaped child; the pointer is valid.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            let elapsed = started.elapsed();
            let status = ExitStatus::from_raw(status);
            let stderr = reader.join().unwrap_or_default();
            if !status.success() {
                bail!("{line} failed ({status}): {}", stderr.trim());
            }
            return Ok(Measured {
                elapsed,
                max_rss_kib: peak_kib,
            });
        }
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context(format!("wait4 for {line}"));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{line} did not finish within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Runs `program ARGS` and returns its first output line, for tool versions.
pub fn version_of(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(output) => {
            let text = if output.stdout.is_empty() {
                output.stderr
            } else {
                output.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        }
        Err(_) => "not installed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softirq_ticks_of_cpu0() {
        assert!(cpu_softirq_ticks(0).is_ok());
    }

    #[test]
    fn measured_true_succeeds() {
        let measured = run_measured(&mut Command::new("true"), Duration::from_secs(10));
        assert!(measured.is_ok());
    }
}
