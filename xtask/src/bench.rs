//! `cargo xtask bench`: builds the release agent and runs the bench crate,
//! which writes BENCHMARKS.md at the workspace root.

use anyhow::{Result, bail};

use crate::process;

pub fn run(quick: bool) -> Result<()> {
    if !process::is_root() {
        bail!("the bench needs root: it creates network namespaces and loads XDP programs");
    }
    let agent = crate::build_release()?;
    let output = crate::workspace_root().join("BENCHMARKS.md");
    let mut command = process::cargo();
    command
        .args(["run", "--release", "-p", "intelwall-bench", "--"])
        .arg("--agent")
        .arg(&agent)
        .arg("--output")
        .arg(&output);
    if quick {
        command.arg("--quick");
    }
    process::run(&mut command)
}
