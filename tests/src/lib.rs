//! Helpers for intelwall's integration tests and demo.
//!
//! - [`netns`]: a [`netns::Testbed`] of two network namespaces joined by a
//!   veth pair, removed on drop, and [`netns::require_root`] for loud skips.
//! - [`packet`]: builders for Ethernet frames (VLAN tags, IPv4 with options
//!   and fragments, IPv6 extension headers, ARP, neighbour solicitation,
//!   malformed and truncated frames) and a parser for their IP source.
//! - [`traffic`]: an AF_PACKET sender and a receiver that counts arrived
//!   frames per IP source, each running inside a namespace.
//! - [`agent`]: an [`agent::Agent`] guard that runs `intelwall run` inside a
//!   namespace and stops it on drop.
//!
//! Everything here only touches namespaces and interfaces that it creates
//! itself, so tests cannot reach the host's own interfaces.

pub mod agent;
pub mod netns;
pub mod packet;
pub mod traffic;

use std::path::PathBuf;

/// Locates the `intelwall` binary: `$INTELWALL_BIN` when set, otherwise
/// `target/debug/intelwall` in this workspace.
///
/// # Panics
///
/// Panics when the binary does not exist, because every caller is a test that
/// cannot run without it.
pub fn agent_binary() -> PathBuf {
    let path = match std::env::var_os("INTELWALL_BIN") {
        Some(path) => PathBuf::from(path),
        None => workspace_root().join("target/debug/intelwall"),
    };
    assert!(
        path.is_file(),
        "intelwall binary not found at {}: run `cargo xtask test`, or `cargo build -p intelwall` \
         (INTELWALL_BIN overrides the path)",
        path.display()
    );
    path
}

/// Returns the workspace root, the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .expect("tests/ sits in the workspace root")
        .to_path_buf()
}
