//! `intelwall status` and `intelwall detach`: read or remove the pinned
//! state, whether or not an agent runs.

use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap, Map, MapData, MapType};
use intelwall_common::{host_table, map_name};
use serde::Serialize;

use crate::dataplane::HostTable;
use crate::pin::{PinLayout, PinnedFeed, PinnedInterface};

#[derive(Debug, Serialize)]
struct Status {
    pin_dir: String,
    state_file: String,
    fingerprint: Option<String>,
    format_version: Option<u32>,
    /// The process id of the agent that manages the pins, when one runs.
    agent_pid: Option<u32>,
    interfaces: Vec<PinnedInterface>,
    /// Interfaces whose tagged packets get their mark (a pinned TC link).
    tagging: Vec<String>,
    /// Distinct indicators across all feeds, or `None` when the state file
    /// does not record them.
    indicators: Option<u64>,
    feeds: Vec<PinnedFeed>,
    maps: Vec<MapFill>,
}

#[derive(Debug, Serialize)]
struct MapFill {
    name: &'static str,
    entries: usize,
    capacity: u32,
}

/// Prints what is attached where and how full the maps are.
pub fn status(layout: &PinLayout, json: bool) -> Result<()> {
    let state = layout.read_state();
    let pinned = layout.pinned_interfaces();
    let interfaces: Vec<PinnedInterface> = pinned
        .iter()
        .map(|name| {
            state
                .as_ref()
                .and_then(|state| {
                    state
                        .interfaces
                        .iter()
                        .find(|known| &known.name == name)
                        .cloned()
                })
                .unwrap_or_else(|| PinnedInterface {
                    name: name.clone(),
                    mode: "unknown".to_owned(),
                    since: "unknown".to_owned(),
                })
        })
        .collect();
    let maps = match &state {
        Some(state) => map_fill(&layout.maps_dir(state.map_set))?,
        None => Vec::new(),
    };
    let status = Status {
        pin_dir: layout.root.display().to_string(),
        state_file: layout.state_file.display().to_string(),
        fingerprint: state.as_ref().map(|state| state.fingerprint.clone()),
        format_version: state.as_ref().map(|state| state.version),
        agent_pid: agent_pid(layout),
        tagging: pinned
            .iter()
            .filter(|name| layout.tag_link(name).exists())
            .cloned()
            .collect(),
        interfaces,
        indicators: state.as_ref().and_then(|state| state.indicators),
        feeds: state.map_or_else(Vec::new, |state| state.feeds),
        maps,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status_text(&status));
    }
    Ok(())
}

fn status_text(status: &Status) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    if status.interfaces.is_empty() {
        let _ = writeln!(
            text,
            "not attached (no pinned links under {})",
            status.pin_dir
        );
        return text;
    }
    let _ = writeln!(
        text,
        "config fingerprint {} (format {})",
        status.fingerprint.as_deref().unwrap_or("unknown"),
        status
            .format_version
            .map_or("unknown".to_owned(), |version| version.to_string())
    );
    for interface in &status.interfaces {
        let marks = if status.tagging.contains(&interface.name) {
            ", tag marks set at TC ingress"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "attached to {} in {} mode since {}{marks}",
            interface.name, interface.mode, interface.since
        );
    }
    match status.agent_pid {
        Some(pid) => {
            let _ = writeln!(text, "agent running (pid {pid})");
        }
        None => {
            let _ = writeln!(
                text,
                "no agent running: the program enforces the maps as last written, and no \
                 feed reloads until an agent starts"
            );
        }
    }
    feeds_text(&mut text, status);
    for map in &status.maps {
        let percent = if map.capacity == 0 {
            0.0
        } else {
            100.0 * map.entries as f64 / f64::from(map.capacity)
        };
        let _ = writeln!(
            text,
            "{:<12} {:>10} of {:>10} entries ({percent:.1}%)",
            map.name, map.entries, map.capacity
        );
    }
    text
}

/// Appends the indicator total and one line per feed.
fn feeds_text(text: &mut String, status: &Status) {
    use std::fmt::Write as _;
    let Some(indicators) = status.indicators else {
        let _ = writeln!(
            text,
            "feeds: not recorded in the state file; the agent records them at its next start or reload"
        );
        return;
    };
    let _ = writeln!(
        text,
        "{indicators} distinct indicators from {} feeds",
        status.feeds.len()
    );
    for feed in &status.feeds {
        let loaded = feed
            .last_loaded
            .map_or("unknown".to_owned(), |time| time.to_string());
        let noun = if feed.indicators == 1 {
            "indicator"
        } else {
            "indicators"
        };
        let _ = writeln!(
            text,
            "feed {}: {} {noun}, last loaded {loaded}",
            feed.name, feed.indicators
        );
    }
}

/// Returns the pid of the process that holds the agent lock of `layout`.
/// It reads /proc/locks instead of trying the lock, because a lock taken
/// even for a moment would make an agent that starts then refuse to run.
fn agent_pid(layout: &PinLayout) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let lock = std::fs::metadata(layout.agent_lock()).ok()?;
    let device = lock.dev();
    // /proc/locks names a file as major:minor:inode, the first two in hex.
    let file = format!(
        "{:02x}:{:02x}:{}",
        libc::major(device),
        libc::minor(device),
        lock.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| holder_pid(line, &file))
}

/// Returns the pid in a /proc/locks line such as
/// `1: FLOCK  ADVISORY  WRITE 1234 fe:00:5407218 0 EOF` when it is a held
/// flock on `file`. Lines of waiting processes carry `->` and do not match.
fn holder_pid(line: &str, file: &str) -> Option<u32> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        [_, "FLOCK", _, _, pid, id, ..] if *id == file => pid.parse().ok(),
        _ => None,
    }
}

fn map_fill(dir: &Path) -> Result<Vec<MapFill>> {
    let mut fills = Vec::new();
    for name in [
        map_name::HOSTS_V4,
        map_name::HOSTS_V6,
        map_name::PREFIXES_V4,
        map_name::PREFIXES_V6,
    ] {
        let path = dir.join(name);
        let data = MapData::from_pin(&path)
            .with_context(|| format!("cannot open pinned map {}", path.display()))?;
        let info = data
            .info()
            .with_context(|| format!("cannot read {}", path.display()))?;
        let capacity = info.max_entries();
        // Maps pinned by an agent of pinned format 2 hold IPv4 hosts in a
        // hash map, which the match below counts.
        if name == map_name::HOSTS_V4 && matches!(info.map_type(), Ok(MapType::Array)) {
            let table = HostTable::map_read_only(data.fd().as_fd(), capacity)
                .with_context(|| format!("cannot map {}", path.display()))?;
            fills.push(MapFill {
                name,
                entries: table.len(),
                capacity: host_table::capacity_of(capacity),
            });
            continue;
        }
        let map =
            Map::from_map_data(data).with_context(|| format!("cannot read {}", path.display()))?;
        let entries = match name {
            map_name::HOSTS_V4 => HashMap::<_, [u8; 4], u32>::try_from(map)?.keys().count(),
            map_name::HOSTS_V6 => HashMap::<_, [u8; 16], u32>::try_from(map)?.keys().count(),
            map_name::PREFIXES_V4 => LpmTrie::<_, [u8; 4], u32>::try_from(map)?.keys().count(),
            _ => LpmTrie::<_, [u8; 16], u32>::try_from(map)?.keys().count(),
        };
        fills.push(MapFill {
            name,
            entries,
            capacity,
        });
    }
    Ok(fills)
}

/// Removes the pinned link of `interface`, or of every interface. When no
/// link is left, removes the pinned maps, the state file and the emptied
/// pin directories too.
pub fn detach(layout: &PinLayout, interface: Option<&str>) -> Result<()> {
    let pinned = layout.pinned_interfaces();
    let targets: Vec<String> = match interface {
        Some(name) => {
            anyhow::ensure!(
                pinned.iter().any(|known| known == name),
                "intelwall is not attached to `{name}` (no pinned link at {})",
                layout.link(name).display()
            );
            vec![name.to_owned()]
        }
        None => pinned.clone(),
    };
    for name in &targets {
        crate::dataplane::unpin_link(&layout.link(name))
            .with_context(|| format!("cannot remove {}", layout.link(name).display()))?;
        let tag_link = layout.tag_link(name);
        if tag_link.exists() {
            crate::dataplane::unpin_link(&tag_link)
                .with_context(|| format!("cannot remove {}", tag_link.display()))?;
        }
        println!("detached from {name}");
    }
    if layout.pinned_interfaces().is_empty() {
        layout.remove_map_sets(None);
        layout.remove_state();
        println!("removed the pinned maps under {}", layout.root.display());
    }
    layout.remove_empty_dirs();
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    /// Creates a pin directory as an agent leaves it for `interfaces`, with
    /// plain files in place of the bpffs pins, which unpinning removes the
    /// same way. Every interface but the last gets a tag link.
    fn pinned_layout(dir: &Path, interfaces: &[&str]) -> PinLayout {
        let layout = PinLayout::new(&dir.join("pins"), &dir.join("state"));
        fs::create_dir_all(layout.links_dir()).unwrap();
        fs::create_dir_all(layout.tag_links_dir()).unwrap();
        fs::create_dir_all(layout.maps_dir(3)).unwrap();
        fs::write(layout.maps_dir(3).join(map_name::HOSTS_V4), "").unwrap();
        fs::create_dir_all(dir.join("state")).unwrap();
        fs::write(&layout.state_file, "{}").unwrap();
        for (index, name) in interfaces.iter().enumerate() {
            fs::write(layout.link(name), "").unwrap();
            if index + 1 < interfaces.len() {
                fs::write(layout.tag_link(name), "").unwrap();
            }
        }
        layout
    }

    #[test]
    fn lock_holder_read_from_proc_locks() {
        let file = "fe:00:5407218";
        let holder = "1: FLOCK  ADVISORY  WRITE 30519 fe:00:5407218 0 EOF";
        assert_eq!(holder_pid(holder, file), Some(30519));
        let other_file = "2: FLOCK  ADVISORY  WRITE 30519 fe:00:10133508 0 EOF";
        assert_eq!(holder_pid(other_file, file), None);
        let waiting = "1: -> FLOCK  ADVISORY  WRITE 4242 fe:00:5407218 0 EOF";
        assert_eq!(holder_pid(waiting, file), None);
        let posix = "3: POSIX  ADVISORY  WRITE 777 fe:00:5407218 0 EOF";
        assert_eq!(holder_pid(posix, file), None);
    }

    fn attached_status(indicators: Option<u64>, feeds: Vec<PinnedFeed>) -> Status {
        Status {
            pin_dir: "/sys/fs/bpf/intelwall".to_owned(),
            state_file: "/var/lib/intelwall/pinned.json".to_owned(),
            fingerprint: Some("0123456789abcdef".to_owned()),
            format_version: Some(3),
            agent_pid: Some(4242),
            interfaces: vec![PinnedInterface {
                name: "veth0".to_owned(),
                mode: "native".to_owned(),
                since: "2026-01-02T03:04:05Z".to_owned(),
            }],
            tagging: Vec::new(),
            indicators,
            feeds,
            maps: Vec::new(),
        }
    }

    #[test]
    fn status_text_lists_feeds() {
        let feeds = vec![
            PinnedFeed {
                name: "drop".to_owned(),
                indicators: 1200,
                last_loaded: Some("2026-01-02T03:04:05Z".parse().unwrap()),
            },
            PinnedFeed {
                name: "scan".to_owned(),
                indicators: 1,
                last_loaded: None,
            },
        ];

        let text = status_text(&attached_status(Some(1201), feeds));

        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[2], "agent running (pid 4242)");
        assert_eq!(lines[3], "1201 distinct indicators from 2 feeds");
        assert_eq!(
            lines[4],
            "feed drop: 1200 indicators, last loaded 2026-01-02T03:04:05Z"
        );
        assert_eq!(lines[5], "feed scan: 1 indicator, last loaded unknown");
    }

    #[test]
    fn status_text_says_no_agent_runs() {
        let mut status = attached_status(None, Vec::new());
        status.agent_pid = None;

        let text = status_text(&status);

        assert!(text.contains("no agent running"), "{text}");
    }

    #[test]
    fn status_text_without_recorded_feeds() {
        let text = status_text(&attached_status(None, Vec::new()));

        assert!(
            text.contains("feeds: not recorded in the state file"),
            "{text}"
        );
    }

    #[test]
    fn detach_one_keeps_other_pins() {
        let dir = tempfile::tempdir().unwrap();
        let layout = pinned_layout(dir.path(), &["veth0", "veth1"]);

        detach(&layout, Some("veth0")).unwrap();

        assert!(!layout.link("veth0").exists());
        assert!(!layout.tag_link("veth0").exists());
        assert!(layout.link("veth1").exists(), "the other link went away");
        assert!(layout.maps_dir(3).join(map_name::HOSTS_V4).exists());
        assert!(layout.state_file.exists());
        assert_eq!(layout.pinned_interfaces(), ["veth1"]);
    }

    #[test]
    fn detach_last_removes_pin_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = pinned_layout(dir.path(), &["veth0", "veth1"]);

        detach(&layout, Some("veth1")).unwrap();
        detach(&layout, Some("veth0")).unwrap();

        assert!(!layout.links_dir().exists(), "links/ stayed behind");
        assert!(!layout.tag_links_dir().exists(), "tag-links/ stayed behind");
        assert!(!layout.maps_dir(3).exists(), "the maps stayed behind");
        assert!(!layout.root.exists(), "the pin directory stayed behind");
        assert!(!layout.state_file.exists(), "the state file stayed behind");
    }

    #[test]
    fn detach_all_keeps_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let layout = pinned_layout(dir.path(), &["veth0"]);
        let foreign = layout.root.join("other-tool");
        fs::write(&foreign, "").unwrap();

        detach(&layout, None).unwrap();

        assert!(!layout.links_dir().exists(), "links/ stayed behind");
        assert!(!layout.tag_links_dir().exists(), "tag-links/ stayed behind");
        assert!(foreign.exists(), "a file detach does not own went away");
    }
}
