//! `cargo xtask test`: the full check that CI runs.

use std::process::Command;

use anyhow::Result;

use crate::process;
use crate::setup::{self, KernelClippy};

/// Environment that the outer build sets for the host target and that must
/// not reach the kernel crate's build.
const HOST_ONLY_VARIABLES: [&str; 7] = [
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_TARGET",
    "CARGO_TARGET_DIR",
    "RUSTDOCFLAGS",
];

pub fn run() -> Result<()> {
    setup::check()?;

    process::run(process::cargo().args(["build", "-p", "intelwall"]))?;
    let binary = crate::target_dir().join("debug/intelwall");
    println!("INTELWALL_BIN={}", binary.display());
    process::run(
        process::cargo()
            .args(["test", "--workspace"])
            .env("INTELWALL_BIN", &binary),
    )?;

    process::run(process::cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The kernel crate is outside the workspace, so `--all` skips it.
    process::run(process::cargo().args([
        "fmt",
        "--manifest-path",
        "xdp-ebpf/Cargo.toml",
        "--",
        "--check",
    ]))?;
    process::run(process::cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    kernel_clippy()?;
    println!("all checks passed");
    Ok(())
}

/// Runs clippy on the kernel crate for bpfel-unknown-none, or prints why it
/// is skipped.
fn kernel_clippy() -> Result<()> {
    let Some(clippy) = setup::kernel_clippy() else {
        println!(
            "SKIPPED clippy for xdp-ebpf: no clippy matches the kernel compiler \
             (Debian's rust-web-clippy or clippy for rustup nightly); `cargo xtask setup` installs one"
        );
        return Ok(());
    };
    let root = crate::workspace_root();
    let mut command = match clippy {
        KernelClippy::Debian { cargo_clippy } => {
            // cargo-clippy runs `$CARGO check` with its own clippy-driver,
            // which is built with the same rustc as /usr/bin/rustc.
            let mut command = Command::new(cargo_clippy);
            command
                .arg("clippy")
                .env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1");
            command
        }
        KernelClippy::Nightly => {
            let mut command = Command::new("rustup");
            command.args(["run", "nightly", "cargo", "clippy"]);
            command
        }
    };
    for variable in HOST_ONLY_VARIABLES {
        command.env_remove(variable);
    }
    command
        .current_dir(root.join("xdp-ebpf"))
        .args([
            "--release",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(root.join("target/bpf-clippy"))
        .args(["--", "-D", "warnings"]);
    process::run(&mut command)
}
