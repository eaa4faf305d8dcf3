//! Builds the XDP program and hands its path to the agent, which embeds it.
//!
//! The kernel crate needs a compiler that can build `core` for
//! bpfel-unknown-none, plus bpf-linker. Two routes work:
//! - Debian's `rustc-web` (/usr/bin/rustc) with `rust-web-src`, unlocked for
//!   `-Z build-std` by RUSTC_BOOTSTRAP=1;
//! - a rustup nightly toolchain with the `rust-src` component.
//!
//! Setting INTELWALL_XDP_OBJECT to a prebuilt object skips the build.
//! `cargo xtask setup` installs whichever route the machine can take.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LIBRARY_SOURCE: &str = "/usr/lib/rustlib/src/rust/library";
const TARGET: &str = "bpfel-unknown-none";

fn main() {
    println!("cargo:rerun-if-env-changed=INTELWALL_XDP_OBJECT");
    let object = match env::var_os("INTELWALL_XDP_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => build_object(),
    };
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=INTELWALL_XDP_OBJECT={}", object.display());
}

fn build_object() -> PathBuf {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("agent/ sits in the workspace root");
    for watched in [
        "xdp-ebpf/src",
        "xdp-ebpf/Cargo.toml",
        "common/src",
        "common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    let target_dir = root.join("target").join("bpf");
    let rustc = kernel_rustc().unwrap_or_else(|missing| {
        panic!("cannot build the XDP program: {missing}\nrun `cargo xtask setup` to install it")
    });
    let linker_dirs = linker_search_path();

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .current_dir(root.join("xdp-ebpf"))
        .args([
            "build",
            "--release",
            "--target",
            TARGET,
            "-Z",
            "build-std=core",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTC", &rustc)
        .env("RUSTC_BOOTSTRAP", "1")
        .env("PATH", linker_dirs);
    // The outer build's flags and wrappers are for the host target.
    for variable in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTDOCFLAGS",
    ] {
        command.env_remove(variable);
    }
    let status = command
        .status()
        .unwrap_or_else(|error| panic!("cannot start cargo for the XDP program: {error}"));
    if !status.success() {
        panic!("building the XDP program failed ({status}); see the compiler output above");
    }
    target_dir
        .join(TARGET)
        .join("release")
        .join("intelwall-xdp")
}

/// The compiler for the kernel crate, or a sentence naming what is missing.
fn kernel_rustc() -> Result<PathBuf, String> {
    if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_LIBRARY_SOURCE).exists() {
        return Ok(PathBuf::from(DEBIAN_RUSTC));
    }
    let nightly = Command::new("rustup")
        .args(["which", "--toolchain", "nightly", "rustc"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));
    if let Some(rustc) = nightly {
        let sysroot = rustc
            .parent()
            .and_then(Path::parent)
            .map(|toolchain| toolchain.join("lib/rustlib/src/rust/library"));
        if sysroot.is_some_and(|library| library.exists()) {
            return Ok(rustc);
        }
        return Err("rustup nightly has no rust-src component, and Debian's rustc-web with rust-web-src is not installed".into());
    }
    Err(
        "neither Debian's rustc-web with rust-web-src nor a rustup nightly toolchain is installed"
            .into(),
    )
}

/// PATH with cargo's bin directory in front, where `cargo install` puts
/// bpf-linker.
fn linker_search_path() -> std::ffi::OsString {
    let mut dirs = Vec::new();
    if let Some(home) = env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    } else if let Some(home) = env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    if let Some(path) = env::var_os("PATH") {
        dirs.extend(env::split_paths(&path));
    }
    env::join_paths(dirs).expect("PATH entries contain no separator")
}
