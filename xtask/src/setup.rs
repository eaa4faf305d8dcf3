//! `cargo xtask setup`: install what the build and the tests need.
//!
//! The XDP program needs a compiler that can build `core` for
//! bpfel-unknown-none. Two routes work (agent/build.rs picks between them):
//! - A: a rustup nightly toolchain with the `rust-src` component;
//! - B: Debian's `rustc-web` with `rust-web-src` (/usr/bin/rustc, its library
//!   source under /usr/lib/rustlib), unlocked by RUSTC_BOOTSTRAP=1.
//!
//! Setup takes route A when the machine offers it and falls back to B. On
//! route B, bpf-linker is built against Debian's LLVM 22 (`llvm-22-dev`).
//! Every item is checked first, so a second run installs nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, bail};

use crate::process::{self, find_program, is_root};

const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_LIBRARY_SOURCE: &str = "/usr/lib/rustlib/src/rust/library";
const DEBIAN_COMPILER_PACKAGES: [&str; 4] =
    ["rustc-web", "rust-web-src", "cargo-web", "llvm-22-dev"];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const DEBIAN_CLIPPY_PACKAGE: &str = "rust-web-clippy";
/// bpf-linker 0.13 is the release built and checked against LLVM 22.
const BPF_LINKER_VERSION: &str = "^0.13";

/// Runtime tools: program, Debian package, what needs it.
const RUNTIME_TOOLS: [(&str, &str, &str); 3] = [
    ("ip", "iproute2", "network namespace tests and the demo"),
    ("bpftool", "bpftool", "inspecting loaded programs and maps"),
    ("nft", "nftables", "matching tagged packets' marks"),
];

/// The outcome of one setup item.
enum Status {
    Present(String),
    Installed(String),
    /// The missing part and the reason it could not be installed.
    Missing(String),
}

struct Item {
    name: &'static str,
    status: Status,
    /// An optional item that is missing does not fail setup.
    optional: bool,
}

/// Whether setup may install or only reports.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Install,
    Check,
}

/// Installs every missing item, prints one line per item, and fails when a
/// required item is still missing.
pub fn install() -> Result<()> {
    let items = Setup::new(Mode::Install).items();
    report(&items)
}

/// Checks every item without installing anything; fails with the first
/// missing required item.
pub fn check() -> Result<()> {
    let items = Setup::new(Mode::Check).items();
    for item in &items {
        if let (Status::Missing(why), false) = (&item.status, item.optional) {
            bail!(
                "{} is missing: {why}\nrun `cargo xtask setup` first",
                item.name
            );
        }
    }
    report(&items)
}

fn report(items: &[Item]) -> Result<()> {
    println!();
    let mut missing = 0;
    for item in items {
        let line = match &item.status {
            Status::Present(detail) => format!("present    {detail}"),
            Status::Installed(detail) => format!("installed  {detail}"),
            Status::Missing(why) if item.optional => format!("missing    (optional) {why}"),
            Status::Missing(why) => {
                missing += 1;
                format!("missing    {why}")
            }
        };
        println!("{:<18} {line}", item.name);
    }
    if missing > 0 {
        bail!("{missing} required item(s) missing; see the lines above");
    }
    Ok(())
}

struct Setup {
    mode: Mode,
    apt_updated: bool,
}

impl Setup {
    fn new(mode: Mode) -> Setup {
        Setup {
            mode,
            apt_updated: false,
        }
    }

    fn items(&mut self) -> Vec<Item> {
        let mut items = vec![
            Item {
                name: "rustfmt, clippy",
                status: self.host_components(),
                optional: false,
            },
            Item {
                name: "kernel compiler",
                status: self.kernel_compiler(),
                optional: false,
            },
            Item {
                name: "bpf-linker",
                status: self.bpf_linker(),
                optional: false,
            },
            Item {
                name: "kernel clippy",
                status: self.kernel_clippy(),
                optional: true,
            },
        ];
        for (program, package, purpose) in RUNTIME_TOOLS {
            items.push(Item {
                name: package,
                status: self.runtime_tool(program, package, purpose),
                optional: false,
            });
        }
        items
    }

    /// rustfmt and clippy for the toolchain that builds the workspace.
    fn host_components(&mut self) -> Status {
        let works = |tool: &str| {
            process::probe(process::cargo().args([tool, "--version"])).is_some_and(|(ok, _)| ok)
        };
        if works("fmt") && works("clippy") {
            return Status::Present("cargo fmt and cargo clippy run".into());
        }
        if self.mode == Mode::Check {
            return Status::Missing("`cargo fmt` or `cargo clippy` does not run".into());
        }
        let added =
            process::run(Command::new("rustup").args(["component", "add", "rustfmt", "clippy"]));
        match added {
            Ok(()) => Status::Installed("rustup components rustfmt and clippy".into()),
            Err(error) => Status::Missing(format!(
                "`rustup component add rustfmt clippy` failed: {error:#}"
            )),
        }
    }

    fn kernel_compiler(&mut self) -> Status {
        if let Some(route) = kernel_route() {
            return Status::Present(route.describe());
        }
        if self.mode == Mode::Check {
            return Status::Missing(
                "neither rustup nightly with rust-src nor Debian's rustc-web with rust-web-src is installed"
                    .into(),
            );
        }
        // Route A first: rust-src is one download when nightly is present.
        let mut reasons = Vec::new();
        if nightly_rustc().is_some() {
            let added = process::run(Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                "nightly",
            ]));
            match added {
                Ok(()) if kernel_route().is_some() => {
                    return Status::Installed("rust-src for rustup nightly".into());
                }
                Ok(()) => reasons
                    .push("rust-src was added but its library directory is absent".to_owned()),
                Err(error) => reasons.push(format!("adding rust-src to nightly failed: {error:#}")),
            }
        } else {
            reasons.push("no rustup nightly toolchain".to_owned());
        }
        match self.apt_install(&DEBIAN_COMPILER_PACKAGES) {
            Ok(()) if kernel_route().is_some() => Status::Installed(format!(
                "Debian packages {}",
                DEBIAN_COMPILER_PACKAGES.join(" ")
            )),
            Ok(()) => {
                reasons.push(format!(
                    "{DEBIAN_RUSTC} or {DEBIAN_LIBRARY_SOURCE} is absent after installing"
                ));
                Status::Missing(reasons.join("; "))
            }
            Err(why) => {
                reasons.push(why);
                Status::Missing(reasons.join("; "))
            }
        }
    }

    fn bpf_linker(&mut self) -> Status {
        if let Some(path) = find_program("bpf-linker") {
            return Status::Present(path.display().to_string());
        }
        if self.mode == Mode::Check {
            return Status::Missing(
                "bpf-linker is neither on PATH nor in cargo's bin directory".into(),
            );
        }
        let mut install = process::cargo();
        install.args(["install", "bpf-linker"]);
        // With Debian's compiler, link against Debian's LLVM 22, the LLVM
        // that rustc-web 1.96 emits bitcode for.
        let debian = matches!(kernel_route(), Some(KernelRoute::Debian));
        if debian {
            if let Err(why) = self.apt_install(&["llvm-22-dev"]) {
                return Status::Missing(format!("bpf-linker needs LLVM 22: {why}"));
            }
            install
                .args([
                    "--version",
                    BPF_LINKER_VERSION,
                    "--no-default-features",
                    "--features",
                    "llvm-22",
                ])
                .env("LLVM_PREFIX", LLVM_PREFIX)
                .env(
                    "PATH",
                    process::path_with(&[Path::new(LLVM_PREFIX).join("bin")]),
                );
        }
        println!("bpf-linker: building with cargo install (about a minute)");
        match process::run(&mut install) {
            Ok(()) => Status::Installed(format!("bpf-linker ({})", process::describe(&install))),
            Err(error) => Status::Missing(format!("cargo install bpf-linker failed: {error:#}")),
        }
    }

    /// Clippy for the kernel crate, which must match the kernel compiler.
    fn kernel_clippy(&mut self) -> Status {
        if let Some(clippy) = kernel_clippy() {
            return Status::Present(clippy.describe());
        }
        match kernel_route() {
            None => Status::Missing("needs the kernel compiler first".into()),
            Some(_) if self.mode == Mode::Check => Status::Missing(
                "no clippy matches the kernel compiler; `cargo xtask setup` installs one".into(),
            ),
            Some(KernelRoute::Debian) => match self.apt_install(&[DEBIAN_CLIPPY_PACKAGE]) {
                Ok(()) if kernel_clippy().is_some() => {
                    Status::Installed(format!("Debian package {DEBIAN_CLIPPY_PACKAGE}"))
                }
                Ok(()) => {
                    Status::Missing(format!("{DEBIAN_CLIPPY_PACKAGE} installed no cargo-clippy"))
                }
                Err(why) => Status::Missing(why),
            },
            Some(KernelRoute::Nightly { .. }) => {
                let added = process::run(Command::new("rustup").args([
                    "component",
                    "add",
                    "clippy",
                    "--toolchain",
                    "nightly",
                ]));
                match added {
                    Ok(()) => Status::Installed("clippy for rustup nightly".into()),
                    Err(error) => {
                        Status::Missing(format!("adding clippy to nightly failed: {error:#}"))
                    }
                }
            }
        }
    }

    fn runtime_tool(&mut self, program: &str, package: &str, purpose: &str) -> Status {
        if let Some(path) = find_program(program) {
            return Status::Present(path.display().to_string());
        }
        if self.mode == Mode::Check {
            return Status::Missing(format!("`{program}` not found; needed for {purpose}"));
        }
        match self.apt_install(&[package]) {
            Ok(()) if find_program(program).is_some() => {
                Status::Installed(format!("Debian package {package}"))
            }
            Ok(()) => Status::Missing(format!("package {package} installed no `{program}`")),
            Err(why) => Status::Missing(format!("`{program}` for {purpose}: {why}")),
        }
    }

    /// Installs the packages of `packages` that dpkg does not list as
    /// installed; on failure returns what to do instead.
    fn apt_install(&mut self, packages: &[&str]) -> Result<(), String> {
        let missing: Vec<&str> = packages
            .iter()
            .copied()
            .filter(|package| !dpkg_installed(package))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing.join(" ");
        if find_program("apt-get").is_none() {
            return Err(format!(
                "apt-get not found; install the equivalent of Debian's {list} by hand"
            ));
        }
        if !is_root() {
            return Err(format!(
                "not root; run `apt-get update && apt-get install -y {list}` as root"
            ));
        }
        if !self.apt_updated {
            process::run(apt_get().arg("update")).map_err(|error| format!("{error:#}"))?;
            self.apt_updated = true;
        }
        process::run(
            apt_get()
                .args(["install", "-y", "--no-install-recommends"])
                .args(&missing),
        )
        .map_err(|error| format!("{error:#}"))
    }
}

fn apt_get() -> Command {
    let mut command = Command::new("apt-get");
    command.env("DEBIAN_FRONTEND", "noninteractive");
    command
}

fn dpkg_installed(package: &str) -> bool {
    process::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|(ok, status)| ok && status.trim() == "install ok installed")
}

/// A compiler route for the kernel crate.
pub enum KernelRoute {
    Debian,
    Nightly { rustc: PathBuf },
}

impl KernelRoute {
    fn describe(&self) -> String {
        match self {
            KernelRoute::Debian => format!("Debian rustc-web ({DEBIAN_RUSTC}) with rust-web-src"),
            KernelRoute::Nightly { rustc } => {
                format!("rustup nightly with rust-src ({})", rustc.display())
            }
        }
    }
}

/// The route agent/build.rs will take, in its order: Debian's compiler
/// first, then rustup nightly with rust-src.
pub fn kernel_route() -> Option<KernelRoute> {
    if Path::new(DEBIAN_RUSTC).exists() && Path::new(DEBIAN_LIBRARY_SOURCE).exists() {
        return Some(KernelRoute::Debian);
    }
    let rustc = nightly_rustc()?;
    let library = rustc
        .parent()?
        .parent()?
        .join("lib/rustlib/src/rust/library");
    library.exists().then_some(KernelRoute::Nightly { rustc })
}

fn nightly_rustc() -> Option<PathBuf> {
    let (ok, stdout) =
        process::probe(Command::new("rustup").args(["which", "--toolchain", "nightly", "rustc"]))?;
    ok.then(|| PathBuf::from(stdout.trim()))
}

/// A clippy that matches the kernel compiler.
pub enum KernelClippy {
    /// Debian's cargo-clippy, whose clippy-driver is built with rustc-web.
    Debian { cargo_clippy: PathBuf },
    /// `cargo +nightly clippy`.
    Nightly,
}

impl KernelClippy {
    fn describe(&self) -> String {
        match self {
            KernelClippy::Debian { cargo_clippy } => format!("Debian {}", cargo_clippy.display()),
            KernelClippy::Nightly => "clippy for rustup nightly".into(),
        }
    }
}

/// Finds a clippy for the kernel route, if any is installed.
pub fn kernel_clippy() -> Option<KernelClippy> {
    match kernel_route()? {
        KernelRoute::Debian => {
            let cargo_clippy = PathBuf::from("/usr/bin/cargo-clippy");
            let driver = Path::new("/usr/bin/clippy-driver");
            (cargo_clippy.exists() && driver.exists())
                .then_some(KernelClippy::Debian { cargo_clippy })
        }
        KernelRoute::Nightly { .. } => {
            let (ok, _) = process::probe(Command::new("rustup").args([
                "which",
                "--toolchain",
                "nightly",
                "clippy-driver",
            ]))?;
            ok.then_some(KernelClippy::Nightly)
        }
    }
}
