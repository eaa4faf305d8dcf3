//! Running the agent inside a testbed namespace.
//!
//! The agent's contract: `intelwall run --config FILE` loads the feeds,
//! compiles the rules, writes the maps, then attaches the XDP program and
//! stays attached. SIGINT detaches and removes the pins, SIGTERM leaves them;
//! both print the per-rule counters on stdout. The agent reports readiness
//! as a systemd service does (READY=1 on the socket named by
//! NOTIFY_SOCKET), once its maps are written and every interface attached;
//! an attached program alone proves nothing after a restart, because the
//! pinned program stays attached while no agent runs.
//!
//! The agent runs with `--netns`, not under `ip netns exec`: it then keeps
//! the host's bpffs, so its pins outlive it as they do in production. Each
//! test gives its agents their own pin and state directories
//! ([`AgentDirs`]), so tests can run in parallel.

use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
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

/// Pin and state directories of one test's agents, removed on drop with
/// whatever is still pinned there.
pub struct AgentDirs {
    pub pin_dir: PathBuf,
    pub state_dir: PathBuf,
    _state: tempfile::TempDir,
}

impl AgentDirs {
    /// Unique directories for one test.
    pub fn new() -> Result<AgentDirs> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let state = tempfile::tempdir().context("cannot create a state directory")?;
        let unique = format!(
            "intelwall-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        Ok(AgentDirs {
            pin_dir: Path::new("/sys/fs/bpf").join(unique),
            state_dir: state.path().join("state"),
            _state: state,
        })
    }

    /// The `[agent]` table that points an agent at these directories, with
    /// `extra` lines (such as `expiry_interval = "1s"`) appended.
    pub fn section(&self, extra: &str) -> String {
        format!(
            "[agent]\npin_dir = \"{}\"\nstate_dir = \"{}\"\n{extra}\n",
            self.pin_dir.display(),
            self.state_dir.display()
        )
    }
}

impl Drop for AgentDirs {
    fn drop(&mut self) {
        // Removing the pins detaches anything an agent left attached.
        if let Err(error) = std::fs::remove_dir_all(&self.pin_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("cannot remove {}: {error}", self.pin_dir.display());
        }
    }
}

/// A running `intelwall run`, stopped on drop.
pub struct Agent {
    child: Option<Child>,
    netns: String,
    interface: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    /// Holds the agent's stdout and stderr files; removed on drop.
    _output_dir: tempfile::TempDir,
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
        Agent::start_with_env(binary, netns, interface, config, &[])
    }

    /// Like [`Agent::start`], with extra environment variables for the agent.
    pub fn start_with_env(
        binary: &Path,
        netns: &str,
        interface: &str,
        config: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Result<Agent> {
        Agent::start_with_args(binary, netns, interface, config, env, &[])
    }

    /// Like [`Agent::start_with_env`], with extra arguments for `run`, such
    /// as `--events FILE` or `--metrics ADDRESS`.
    pub fn start_with_args(
        binary: &Path,
        netns: &str,
        interface: &str,
        config: &Path,
        env: &[(&str, &std::ffi::OsStr)],
        args: &[&std::ffi::OsStr],
    ) -> Result<Agent> {
        let output_dir =
            tempfile::tempdir().context("cannot create a directory for agent output")?;
        let stdout_path = output_dir.path().join("stdout");
        let stderr_path = output_dir.path().join("stderr");
        // Files rather than pipes, because an unread pipe fills up while the
        // test sends traffic and then blocks the agent's logging.
        let stdout = File::create(&stdout_path).context("cannot create the agent's stdout file")?;
        let stderr = File::create(&stderr_path).context("cannot create the agent's stderr file")?;

        let notify_path = output_dir.path().join("notify");
        let notify =
            UnixDatagram::bind(&notify_path).context("cannot bind the readiness socket")?;
        notify
            .set_read_timeout(Some(ATTACH_POLL_INTERVAL))
            .context("cannot set a timeout on the readiness socket")?;
        let child = Command::new(binary)
            .env("NOTIFY_SOCKET", &notify_path)
            .args(["--netns", netns])
            .arg("run")
            .arg("--config")
            .arg(config)
            .args(args)
            .envs(env.iter().copied())
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
        };
        agent.wait_ready(&notify)?;
        Ok(agent)
    }

    fn wait_ready(&mut self, notify: &UnixDatagram) -> Result<()> {
        let mut message = [0u8; 512];
        for _ in 0..ATTACH_POLL_LIMIT {
            if let Ok(len) = notify.recv(&mut message)
                && String::from_utf8_lossy(&message[..len])
                    .lines()
                    .any(|line| line == "READY=1")
            {
                anyhow::ensure!(
                    xdp_attached(&self.netns, &self.interface)?,
                    "agent reported ready but nothing is attached to {}",
                    self.interface
                );
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

    /// Sends `signal` (for example SIGTERM, which leaves protection in place,
    /// or SIGKILL), waits for the agent to exit and returns what it printed.
    pub fn stop_with(mut self, signal: i32) -> Result<AgentOutput> {
        let mut child = self.child.take().expect("child present until stop");
        let status = stop_child(&mut child, signal)?;
        Ok(AgentOutput {
            status,
            stdout: read_lossy(&self.stdout_path),
            stderr: self.stderr(),
        })
    }

    /// Everything the agent logged so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr()
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
        // SIGINT: the agent detaches and removes its pins.
        match stop_child(&mut child, libc::SIGINT) {
            Ok(status) if !status.success() => eprintln!("agent exited with {status} on SIGINT"),
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
