//! Running external commands and finding programs.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Creates a `cargo` command that runs in the workspace root with the cargo
/// that runs xtask.
pub fn cargo() -> Command {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(crate::workspace_root());
    command
}

/// Runs `command` with inherited output, printing it first; fails on a
/// non-zero exit.
pub fn run(command: &mut Command) -> Result<()> {
    let line = describe(command);
    println!("==> {line}");
    let status = command
        .status()
        .with_context(|| format!("cannot start {line}"))?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    Ok(())
}

/// Runs `command` quietly and returns whether it succeeded and its stdout;
/// `None` when it cannot start.
pub fn probe(command: &mut Command) -> Option<(bool, String)> {
    let output = command.output().ok()?;
    Some((
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    ))
}

/// Formats the program and arguments of `command`, joined by spaces.
pub fn describe(command: &Command) -> String {
    let mut words = vec![command.get_program().to_string_lossy().into_owned()];
    words.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    words.join(" ")
}

/// Returns cargo's bin directory, where `cargo install` puts programs.
pub fn cargo_bin_dir() -> Option<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Some(PathBuf::from(home).join("bin"));
    }
    env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"))
}

/// Finds `name` on PATH, in cargo's bin directory, or in /usr/sbin and
/// /sbin, which a non-root PATH often lacks.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|path| env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(cargo_bin_dir());
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Returns PATH with `dirs` in front.
pub fn path_with(dirs: &[PathBuf]) -> OsString {
    let mut all = dirs.to_vec();
    if let Some(path) = env::var_os("PATH") {
        all.extend(env::split_paths(&path));
    }
    env::join_paths(all).expect("PATH entries contain no separator")
}

/// Returns whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
