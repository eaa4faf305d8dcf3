//! `cargo xtask`: the one entry point for setting up, building, testing and
//! demonstrating intelwall.

mod bench;
mod demo;
mod process;
mod setup;
mod test;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Set up, build, test and demonstrate intelwall"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks to build the XDP program and run the
    /// tests: a compiler route for bpfel-unknown-none, bpf-linker, rustfmt,
    /// clippy, iproute2, bpftool and nftables.
    Setup,
    /// Build the release agent (with its embedded XDP program) and print its path.
    Build,
    /// Check the toolchain, then run every test, the format check and clippy.
    Test,
    /// Run the agent on examples/demo.toml in a namespace testbed, send traffic
    /// from flagged and clean sources, and print what each rule did.
    Demo,
    /// Measure intelwall against a trivial XDP program, xdp-filter, nftables
    /// and iptables with ipset in namespace testbeds, and write BENCHMARKS.md.
    /// Installs missing peers with apt-get. A full run took about 10 minutes on a
    /// 2-core VM; `--quick` about 2.
    Bench {
        /// Smaller sizes and fewer repeats, for development and CI.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Task::Setup => setup::install(),
        Task::Build => {
            let binary = build_release()?;
            println!("{}", binary.display());
            Ok(())
        }
        Task::Test => test::run(),
        Task::Demo => demo::run(),
        Task::Bench { quick } => bench::run(quick),
    }
}

/// Builds the release agent and returns the binary's path.
fn build_release() -> Result<PathBuf> {
    process::run(process::cargo().args(["build", "--release", "-p", "intelwall"]))?;
    Ok(target_dir().join("release/intelwall"))
}

/// Returns the workspace root, the parent of the xtask directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("xtask/ sits in the workspace root")
        .to_path_buf()
}

/// Returns cargo's target directory: $CARGO_TARGET_DIR when set, else
/// <root>/target.
fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}
