//! What outlives the agent: pinned maps and links under the pin directory,
//! and a state file that says what the pinned maps hold.
//!
//! Layout under the pin directory (default /sys/fs/bpf/intelwall):
//! - `maps-<n>/<MAP>`: one set of maps, shared by every interface. A
//!   replacement writes a new set under a new `n` and removes the old one
//!   after the program switched over.
//! - `links/<interface>`: the XDP link of each interface. While it is pinned
//!   the program stays attached, whether or not an agent runs.
//! - `tag-links/<interface>`: the TC ingress link of the program that gives
//!   tagged packets their mark, pinned for the same reason.
//!
//! The state file (in the state directory) records the format version, the
//! config fingerprint, the current map set, the predicate and class registry
//! and a sequence number that is also written into the CONTROL map. An agent
//! adopts the pinned maps only when all of these agree; otherwise it builds
//! a fresh set and replaces the old one atomically. The file also records
//! the enforced feeds and their indicator counts, for `intelwall status`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::compile::Registry;
use crate::dataplane::Capacity;
use crate::stats::CounterState;

/// Version of the pinned layout and map formats. Maps pinned by an agent
/// with another version are never reused. Version 2: class records with
/// extras, counters per interface, events. Version 3: IPv4 hosts in a
/// memory-mapped table instead of a BPF hash map.
pub const FORMAT_VERSION: u32 = 3;

/// The magic number of bpffs in `statfs(2)`'s `f_type`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("cannot mount bpffs at {path}: {source}; mount it with `mount -t bpf bpf {path}`")]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the state file {path}: {source}")]
    WriteState {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Paths of everything pinned.
#[derive(Clone, Debug)]
pub struct PinLayout {
    pub root: PathBuf,
    pub state_file: PathBuf,
}

impl PinLayout {
    /// Returns the file whose lock an agent holds while it manages this
    /// layout.
    pub fn agent_lock(&self) -> PathBuf {
        self.state_file
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("agent.lock")
    }

    pub fn new(pin_dir: &Path, state_dir: &Path) -> PinLayout {
        PinLayout {
            root: pin_dir.to_owned(),
            state_file: state_dir.join("pinned.json"),
        }
    }

    pub fn maps_dir(&self, set: u64) -> PathBuf {
        self.root.join(format!("maps-{set}"))
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, interface: &str) -> PathBuf {
        self.links_dir().join(interface)
    }

    pub fn tag_links_dir(&self) -> PathBuf {
        self.root.join("tag-links")
    }

    pub fn tag_link(&self, interface: &str) -> PathBuf {
        self.tag_links_dir().join(interface)
    }

    /// Interfaces with a pinned link.
    pub fn pinned_interfaces(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.links_dir()) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| entry.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// Mounts bpffs on the pin directory's bpffs root when nothing is
    /// mounted there (inside `ip netns exec`, /sys is fresh and has no
    /// bpffs), and creates the directories.
    pub fn prepare(&self) -> Result<(), PinError> {
        let mount_point = bpffs_mount_point(&self.root);
        if !is_bpffs(&mount_point) {
            // A systemd service has a mount namespace of its own: a bpffs
            // mounted there would vanish, pins and protection with it, when
            // the service stops. The host must provide it.
            if std::env::var_os("INVOCATION_ID").is_some() {
                return Err(PinError::Mount {
                    path: mount_point,
                    source: std::io::Error::other(
                        "not bpffs, and a service must not mount its own",
                    ),
                });
            }
            mount_bpffs(&mount_point)?;
        }
        for dir in [self.root.clone(), self.links_dir(), self.tag_links_dir()] {
            std::fs::create_dir_all(&dir)
                .map_err(|source| PinError::CreateDir { path: dir, source })?;
        }
        Ok(())
    }

    pub fn read_state(&self) -> Option<PinnedState> {
        let text = std::fs::read_to_string(&self.state_file).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Writes the state file through a temporary file and a rename, so a
    /// crash leaves either the old or the new file.
    pub fn write_state(&self, state: &PinnedState) -> Result<(), PinError> {
        let error = |source| PinError::WriteState {
            path: self.state_file.clone(),
            source,
        };
        if let Some(dir) = self.state_file.parent() {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let temp = self.state_file.with_extension("json.tmp");
        let text = serde_json::to_string(state).expect("the state serialises");
        std::fs::write(&temp, text).map_err(error)?;
        std::fs::rename(&temp, &self.state_file).map_err(error)
    }

    /// Removes every pinned map set except `keep`.
    pub fn remove_map_sets(&self, keep: Option<u64>) {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let Some(set) = name.to_str().and_then(|name| name.strip_prefix("maps-")) else {
                continue;
            };
            if keep.is_none() || set.parse::<u64>().ok() != keep {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    pub fn remove_state(&self) {
        let _ = std::fs::remove_file(&self.state_file);
    }

    /// Removes `links/` and `tag-links/` when they are empty, then the pin
    /// directory itself when nothing else is left in it. A directory that
    /// still contains another interface's link, or that is a mount point,
    /// stays.
    pub fn remove_empty_dirs(&self) {
        for dir in [self.links_dir(), self.tag_links_dir(), self.root.clone()] {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::NotFound
                            | std::io::ErrorKind::DirectoryNotEmpty
                            | std::io::ErrorKind::ResourceBusy
                    ) => {}
                Err(error) => {
                    tracing::warn!(path = %dir.display(), %error, "cannot remove the pin directory");
                }
            }
        }
    }
}

/// The state file's contents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PinnedState {
    pub version: u32,
    /// Hash of the config file's text.
    pub fingerprint: String,
    /// Which `maps-<n>` directory holds the current maps.
    pub map_set: u64,
    pub capacity: PinnedCapacity,
    /// Also written into the CONTROL map once the maps match this file; a
    /// mismatch means an update was interrupted.
    pub sequence: u64,
    pub registry: Registry,
    pub interfaces: Vec<PinnedInterface>,
    /// What `intelwall stats` needs to read the counters without an agent.
    #[serde(default)]
    pub counters: CounterState,
    /// Distinct indicators across all feeds, or `None` in a state file of
    /// an agent that did not record them.
    #[serde(default)]
    pub indicators: Option<u64>,
    /// The enforced feeds, in config order. It is empty in a state file of
    /// an agent that did not record them.
    #[serde(default)]
    pub feeds: Vec<PinnedFeed>,
}

/// A feed as the agent enforces it, for `intelwall status`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinnedFeed {
    pub name: String,
    /// Distinct indicators of this feed.
    pub indicators: u64,
    /// When the feed last loaded, or a reload found it unchanged. A feed
    /// that failed to load keeps the time of its last good load.
    pub last_loaded: Option<jiff::Timestamp>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinnedCapacity {
    pub hosts_v4: u32,
    pub hosts_v6: u32,
    pub prefixes_v4: u32,
    pub prefixes_v6: u32,
    /// Absent from the states of agents whose class counters covered every
    /// class id.
    #[serde(default = "all_class_ids")]
    pub classes: u32,
}

fn all_class_ids() -> u32 {
    intelwall_common::MAX_CLASSES
}

impl From<Capacity> for PinnedCapacity {
    fn from(capacity: Capacity) -> Self {
        PinnedCapacity {
            hosts_v4: capacity.hosts_v4,
            hosts_v6: capacity.hosts_v6,
            prefixes_v4: capacity.prefixes_v4,
            prefixes_v6: capacity.prefixes_v6,
            classes: capacity.classes,
        }
    }
}

impl From<PinnedCapacity> for Capacity {
    fn from(capacity: PinnedCapacity) -> Self {
        Capacity {
            hosts_v4: capacity.hosts_v4,
            hosts_v6: capacity.hosts_v6,
            prefixes_v4: capacity.prefixes_v4,
            prefixes_v6: capacity.prefixes_v6,
            classes: capacity.classes,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PinnedInterface {
    pub name: String,
    pub mode: String,
    /// When the current attachment began, RFC 3339: when the link was
    /// pinned, or when an agent last put a program with a new map set on
    /// it. An agent that adopts the pinned maps keeps the time.
    pub since: String,
}

/// A short stable hash of the config text (FNV-1a, 64 bits), enough to tell
/// one config from another; not a security measure.
pub fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The directory where bpffs must be mounted for `dir`: /sys/fs/bpf for
/// anything below it, otherwise `dir` itself.
fn bpffs_mount_point(dir: &Path) -> PathBuf {
    let standard = Path::new("/sys/fs/bpf");
    if dir.starts_with(standard) {
        standard.to_owned()
    } else {
        dir.to_owned()
    }
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut stats: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is NUL-terminated and stats is a valid out pointer.
    let result = unsafe { libc::statfs(c_path.as_ptr(), &mut stats) };
    result == 0 && stats.f_type as i64 == BPF_FS_MAGIC
}

fn mount_bpffs(path: &Path) -> Result<(), PinError> {
    let error = |source| PinError::Mount {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(path).map_err(error)?;
    let target = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| error(std::io::Error::from(std::io::ErrorKind::InvalidInput)))?;
    // SAFETY: every pointer is a valid NUL-terminated string.
    let result = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if result != 0 {
        return Err(error(std::io::Error::last_os_error()));
    }
    tracing::info!(path = %path.display(), "mounted bpffs");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PinnedState {
        PinnedState {
            version: FORMAT_VERSION,
            fingerprint: fingerprint("[[feed]]"),
            map_set: 1,
            capacity: Capacity::for_image(&crate::compile::MapImage::default()).into(),
            sequence: 7,
            registry: Registry::default(),
            interfaces: Vec::new(),
            counters: CounterState::default(),
            indicators: Some(3),
            feeds: vec![PinnedFeed {
                name: "drop".to_owned(),
                indicators: 3,
                last_loaded: Some("2026-01-02T03:04:05Z".parse().unwrap()),
            }],
        }
    }

    #[test]
    fn state_feeds_survive_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PinLayout::new(&dir.path().join("pins"), &dir.path().join("state"));

        layout.write_state(&state()).unwrap();

        let read = layout.read_state().expect("the state file reads back");
        assert_eq!(read.indicators, Some(3));
        assert_eq!(read.feeds, state().feeds);
    }

    #[test]
    fn state_without_feeds_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let layout = PinLayout::new(&dir.path().join("pins"), &dir.path().join("state"));
        // A state file as agents wrote it before they recorded feeds.
        let mut old = serde_json::to_value(state()).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("indicators");
        fields.remove("feeds");
        std::fs::create_dir_all(layout.state_file.parent().unwrap()).unwrap();
        std::fs::write(&layout.state_file, old.to_string()).unwrap();

        let read = layout
            .read_state()
            .expect("an older state file still reads");
        assert_eq!(read.sequence, 7);
        assert_eq!(read.indicators, None);
        assert!(read.feeds.is_empty());
    }
}
