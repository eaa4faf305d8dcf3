//! Running the agent inside a testbed namespace.
//!
//! The agent's contract: `intelwall run --config FILE` loads the feeds,
//! compiles the rules, writes the maps, then attaches the XDP program and
//! stays attached until SIGINT or SIGTERM, when it detaches and prints the
//! per-rule counters on stdout. Because it attaches only after writing its
//! maps, an attached program means the agent is ready.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Interval between checks for the attached program.
const ATTACH_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Checks before giving up on attachment: 120 s in all, generous for a debug
/// build loading large feeds on a busy machine.
const ATTACH_POLL_LIMIT: u32 = 1200;
/// Checks for the agent's exit after a signal, at [`EXIT_POLL_INTERVAL`].
const EXIT_POLL_LIMIT: u32 = 300;
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Agents pin their programs and maps under one fixed bpffs directory, so two
/// agents in one test binary would collide. This lock runs them one at a
/// time; test binaries themselves run one after another under `cargo test`.
static ONE_AGENT_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A running `intelwall run`, stopped on drop.
pub struct Agent {
    child: Option<Child>,
    netns: String,
    interface: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    /// Holds the agent's stdout and stderr files; removed on drop.
    _output_dir: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

/// What a stopped agent printed, and how it exited.
#[derive(Debug)]
pub struct AgentOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Agent {
    /// Starts `binary run --config CONFIG` in namespace `netns` and waits
    /// until its XDP program is attached to `interface`. Fails with the
    /// agent's stderr when it exits first or never attaches.
    pub fn start(binary: &Path, netns: &str, interface: &str, config: &Path) -> Result<Agent> {
        // A test that panicked while holding the lock leaves it poisoned;
        // its agent was still stopped by Drop, so the lock is usable.
        let serial = ONE_AGENT_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let output_dir =
            tempfile::tempdir().context("cannot create a directory for agent output")?;
        let stdout_path = output_dir.path().join("stdout");
        let stderr_path = output_dir.path().join("stderr");
        // Files rather than pipes, because an unread pipe fills up while the
        // test sends traffic and then blocks the agent's logging.
        let stdout = File::create(&stdout_path).context("cannot create the agent's stdout file")?;
        let stderr = File::create(&stderr_path).context("cannot create the agent's stderr file")?;

        // `ip netns exec` replaces itself with the command, so the child's
        // pid is the agent's and signals reach it directly.
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(binary)
            .arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("cannot start {} in namespace {netns}", binary.display()))?;

        let mut agent = Agent {
            child: Some(child),
            netns: netns.to_owned(),
            interface: interface.to_owned(),
            stdout_path,
            stderr_path,
            _output_dir: output_dir,
            _serial: serial,
        };
        agent.wait_attached()?;
        Ok(agent)
    }

    fn wait_attached(&mut self) -> Result<()> {
        for _ in 0..ATTACH_POLL_LIMIT {
            if xdp_attached(&self.netns, &self.interface)? {
                return Ok(());
            }
            let child = self.child.as_mut().expect("child present until stop");
            if let Some(status) = child.try_wait().context("cannot poll the agent")? {
                bail!(
                    "agent exited ({status}) before attaching to {}:\n{}",
                    self.interface,
                    self.stderr()
                );
            }
            thread::sleep(ATTACH_POLL_INTERVAL);
        }
        bail!(
            "agent did not attach to {} within {} s; its stderr so far:\n{}",
            self.interface,
            (ATTACH_POLL_INTERVAL * ATTACH_POLL_LIMIT).as_secs(),
            self.stderr()
        )
    }

    /// Sends SIGINT, waits for the agent to exit (killing it if it does not)
    /// and returns what it printed.
    pub fn stop(mut self) -> Result<AgentOutput> {
        let mut child = self.child.take().expect("child present until stop");
        let status = stop_child(&mut child, libc::SIGINT)?;
        Ok(AgentOutput {
            status,
            stdout: read_lossy(&self.stdout_path),
            stderr: self.stderr(),
        })
    }

    /// Returns the agent's pid, for sending it other signals such as SIGHUP.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child present until stop").id()
    }

    fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Errors are printed, not raised, because a panic while a failing
        // test unwinds would abort the test binary.
        match stop_child(&mut child, libc::SIGTERM) {
            Ok(status) if !status.success() => eprintln!("agent exited with {status} on SIGTERM"),
            Ok(_) => {}
            Err(error) => eprintln!("cannot stop the agent: {error:#}"),
        }
        let stderr = self.stderr();
        if !stderr.trim().is_empty() {
            eprintln!("agent stderr:\n{stderr}");
        }
    }
}

/// Sends `signal`, waits for the exit, and kills the process if it is still
/// running after [`EXIT_POLL_LIMIT`] checks.
fn stop_child(child: &mut Child, signal: libc::c_int) -> Result<ExitStatus> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    // SAFETY: kill(2) with a pid this process spawned and has not reaped.
    unsafe { libc::kill(pid, signal) };
    for _ in 0..EXIT_POLL_LIMIT {
        if let Some(status) = child.try_wait().context("cannot poll the agent")? {
            return Ok(status);
        }
        thread::sleep(EXIT_POLL_INTERVAL);
    }
    eprintln!(
        "agent did not exit within {} s of signal {signal}; killing it",
        (EXIT_POLL_INTERVAL * EXIT_POLL_LIMIT).as_secs()
    );
    child.kill().context("cannot kill the agent")?;
    child.wait().context("cannot reap the agent")
}

/// Returns whether an XDP program (native, generic or offloaded) is attached
/// to `interface` in namespace `netns`, as `ip -d link show` reports it.
pub fn xdp_attached(netns: &str, interface: &str) -> Result<bool> {
    let output = Command::new("ip")
        .args(["-n", netns, "-d", "link", "show", "dev", interface])
        .output()
        .context("cannot run `ip link show`")?;
    if !output.status.success() {
        bail!(
            "`ip -n {netns} link show dev {interface}` failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(reports_xdp(&String::from_utf8_lossy(&output.stdout)))
}

/// Looks for the words `ip -d link show` prints for an attached program:
/// "xdp", "xdpgeneric", "xdpdrv", "xdpoffload" or "xdpmulti" on the link
/// line, then "prog/xdp id N" on the detail line.
fn reports_xdp(link_show: &str) -> bool {
    link_show.split_whitespace().any(|word| {
        matches!(
            word,
            "xdp" | "xdpgeneric" | "xdpdrv" | "xdpoffload" | "xdpmulti" | "prog/xdp"
        )
    })
}

fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::reports_xdp;

    #[test]
    fn xdp_words_detected() {
        let attached = "2: veth-rx@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 xdpgeneric qdisc noqueue\n    prog/xdp id 42 name intelwall tag 0123 jited";
        assert!(reports_xdp(attached));
        let detached = "2: veth-rx@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue\n    veth addrgenmode eui64 numtxqueues 2";
        assert!(!reports_xdp(detached));
    }
}
