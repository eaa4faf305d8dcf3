//! Loads the XDP program, writes a map image into its maps, attaches it to
//! interfaces and reads its counters.

mod batch;
mod pinned;
mod update;

use std::os::fd::{AsFd, BorrowedFd};

use aya::Ebpf;
use aya::EbpfLoader;
use aya::maps::{Array, Map, MapData, PerCpuArray};
use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId};
use intelwall_common::{
    COVER_V4_ENTRIES, ClassEntry, Control, Counter, GENERATIONS, MAX_CLASSES, PATH_COUNTER_SLOTS,
    XDP_PROGRAM, class_slot, map_name,
};

pub use batch::LpmKey;
pub use pinned::unpin_link;
pub use update::UpdateStats;

use crate::compile::MapImage;
use crate::config::AttachMode;

/// The compiled XDP object, embedded so that one binary is all a host needs.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("INTELWALL_XDP_OBJECT"));

/// Smallest capacity of a host or prefix map, so that small feeds can grow a
/// little without the maps being rebuilt.
const MIN_MAP_CAPACITY: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("cannot load the XDP object: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("the XDP object has no map `{0}`; the embedded object and the agent disagree")]
    MissingMap(&'static str),
    #[error("the kernel rejected the XDP program: {0}")]
    Verify(#[source] ProgramError),
    #[error("interface `{0}` does not exist")]
    UnknownInterface(String),
    #[error("cannot attach to `{interface}` in {mode} mode: {source}")]
    Attach {
        interface: String,
        mode: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("cannot write map {map}: {source}")]
    Write {
        map: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set an element of map {map}: {source}")]
    Set {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("cannot read map {map}: {source}")]
    Read {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{map} needs {needed} entries but its capacity is {capacity}")]
    Capacity {
        map: &'static str,
        needed: usize,
        capacity: u32,
    },
    #[error(
        "no free class id for the update: {in_use} ids in use of {MAX_CLASSES}; \
         the rules split the intel into too many classes"
    )]
    ClassesExhausted { in_use: usize },
    #[error("cannot pin or open {path}: {source}")]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("test run failed: {0}")]
    TestRun(#[source] ProgramError),
}

/// Capacities of the address maps, fixed when the program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub hosts_v4: u32,
    pub hosts_v6: u32,
    pub prefixes_v4: u32,
    pub prefixes_v6: u32,
}

impl Capacity {
    /// Capacities that hold `image` with a quarter to spare, so that feed
    /// refreshes of similar size fit without a rebuild.
    pub fn for_image(image: &MapImage) -> Capacity {
        let size = |entries: usize| {
            let wanted = entries.saturating_add(entries / 4);
            u32::try_from(wanted)
                .unwrap_or(u32::MAX)
                .max(MIN_MAP_CAPACITY)
        };
        Capacity {
            hosts_v4: size(image.hosts_v4.len()),
            hosts_v6: size(image.hosts_v6.len()),
            prefixes_v4: size(image.prefixes_v4.len()),
            prefixes_v6: size(image.prefixes_v6.len()),
        }
    }
}

/// How an interface ended up attached.
#[derive(Debug)]
pub struct Attachment {
    pub interface: String,
    pub mode: &'static str,
    /// Why `auto` fell back to skb mode, when it did.
    pub fallback_reason: Option<String>,
    link: LinkHandle,
}

/// How the agent holds an attachment.
#[derive(Debug)]
enum LinkHandle {
    /// Owned by the loaded program: it ends when the agent exits.
    Owned(XdpLinkId),
    /// Pinned in bpffs: it outlives the agent until the pin is removed.
    Pinned(std::path::PathBuf),
}

/// The loaded XDP program and its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    capacity: Capacity,
    generation: u32,
    attachments: Vec<Attachment>,
}

impl Dataplane {
    /// Loads the embedded program with maps of the given capacity.
    pub fn load(capacity: Capacity) -> Result<Dataplane, DataplaneError> {
        Dataplane::load_pinned(capacity, None)
    }

    /// Loads the embedded program with its maps pinned in `maps_dir`: maps
    /// already pinned there are reused as they are, missing ones are created
    /// and pinned.
    pub fn load_pinned(
        capacity: Capacity,
        maps_dir: Option<&std::path::Path>,
    ) -> Result<Dataplane, DataplaneError> {
        raise_memlock_limit();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(map_name::HOSTS_V4, capacity.hosts_v4)
            .map_max_entries(map_name::HOSTS_V6, capacity.hosts_v6)
            .map_max_entries(map_name::PREFIXES_V4, capacity.prefixes_v4)
            .map_max_entries(map_name::PREFIXES_V6, capacity.prefixes_v6);
        if let Some(dir) = maps_dir {
            std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Write {
                map: "pin directory",
                source,
            })?;
            for name in map_name::ALL {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(XDP_OBJECT).map_err(DataplaneError::Load)?;
        program_mut(&mut ebpf)?
            .load()
            .map_err(DataplaneError::Verify)?;
        let mut dataplane = Dataplane {
            ebpf,
            capacity,
            generation: 0,
            attachments: Vec::new(),
        };
        dataplane.generation = dataplane.control(Control::Generation)? & 1;
        Ok(dataplane)
    }

    /// Reads a slot of the CONTROL map.
    pub fn control(&self, slot: Control) -> Result<u32, DataplaneError> {
        let map = self
            .ebpf
            .map(map_name::CONTROL)
            .ok_or(DataplaneError::MissingMap(map_name::CONTROL))?;
        let control: Array<&MapData, u32> =
            Array::try_from(map).map_err(|source| DataplaneError::Read {
                map: map_name::CONTROL,
                source,
            })?;
        control
            .get(&(slot as u32), 0)
            .map_err(|source| DataplaneError::Read {
                map: map_name::CONTROL,
                source,
            })
    }

    /// Records the update sequence number; 0 marks an update under way.
    pub fn set_sequence(&self, sequence: u32) -> Result<(), DataplaneError> {
        self.update(map_name::CONTROL, &[Control::Sequence as u32], &[sequence])
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Writes `image` into empty maps: addresses and the cover table first,
    /// then the class table's idle half, then the flip that makes it active.
    pub fn write_initial(&mut self, image: &MapImage) -> Result<(), DataplaneError> {
        self.check_capacity(image)?;
        self.write_hosts(image)?;
        self.write_prefixes(image)?;
        self.write_cover(&image.cover_v4)?;
        self.write_classes(&image.classes)
    }

    fn check_capacity(&self, image: &MapImage) -> Result<(), DataplaneError> {
        let checks = [
            (
                map_name::HOSTS_V4,
                image.hosts_v4.len(),
                self.capacity.hosts_v4,
            ),
            (
                map_name::HOSTS_V6,
                image.hosts_v6.len(),
                self.capacity.hosts_v6,
            ),
            (
                map_name::PREFIXES_V4,
                image.prefixes_v4.len(),
                self.capacity.prefixes_v4,
            ),
            (
                map_name::PREFIXES_V6,
                image.prefixes_v6.len(),
                self.capacity.prefixes_v6,
            ),
        ];
        for (map, needed, capacity) in checks {
            if needed > capacity as usize {
                return Err(DataplaneError::Capacity {
                    map,
                    needed,
                    capacity,
                });
            }
        }
        Ok(())
    }

    fn write_hosts(&mut self, image: &MapImage) -> Result<(), DataplaneError> {
        let (keys, values): (Vec<[u8; 4]>, Vec<u32>) = image.hosts_v4.iter().copied().unzip();
        self.update(map_name::HOSTS_V4, &keys, &values)?;
        let (keys, values): (Vec<[u8; 16]>, Vec<u32>) = image.hosts_v6.iter().copied().unzip();
        self.update(map_name::HOSTS_V6, &keys, &values)
    }

    fn write_prefixes(&mut self, image: &MapImage) -> Result<(), DataplaneError> {
        let (keys, values): (Vec<LpmKey<4>>, Vec<u32>) = image
            .prefixes_v4
            .iter()
            .map(|(len, address, class)| {
                (
                    LpmKey {
                        prefix_len: u32::from(*len),
                        address: *address,
                    },
                    *class,
                )
            })
            .unzip();
        self.update(map_name::PREFIXES_V4, &keys, &values)?;
        let (keys, values): (Vec<LpmKey<16>>, Vec<u32>) = image
            .prefixes_v6
            .iter()
            .map(|(len, address, class)| {
                (
                    LpmKey {
                        prefix_len: u32::from(*len),
                        address: *address,
                    },
                    *class,
                )
            })
            .unzip();
        self.update(map_name::PREFIXES_V6, &keys, &values)
    }

    fn write_cover(&mut self, flags: &[u8]) -> Result<(), DataplaneError> {
        debug_assert_eq!(flags.len(), COVER_V4_ENTRIES as usize);
        let keys: Vec<u32> = (0..COVER_V4_ENTRIES).collect();
        let values: Vec<[u8; 1]> = flags.iter().map(|flag| [*flag]).collect();
        self.update(map_name::COVER_V4, &keys, &values)
    }

    /// Writes a class table into the idle half and makes it active.
    pub fn write_classes(&mut self, classes: &[ClassEntry]) -> Result<(), DataplaneError> {
        let idle = (self.generation + 1) % GENERATIONS;
        let entries: Vec<(u32, ClassEntry)> = classes
            .iter()
            .take(MAX_CLASSES as usize)
            .enumerate()
            .map(|(class, entry)| (class as u32, *entry))
            .collect();
        self.write_class_slots(idle, &entries)?;
        self.set_generation(idle)
    }

    /// Writes class entries into one half of the class table.
    fn write_class_slots(
        &self,
        generation: u32,
        entries: &[(u32, ClassEntry)],
    ) -> Result<(), DataplaneError> {
        let (slots, values): (Vec<u32>, Vec<ClassEntry>) = entries
            .iter()
            .map(|(class, entry)| (class_slot(generation, *class), *entry))
            .unzip();
        self.update(map_name::CLASSES, &slots, &values)
    }

    /// Makes `generation` the active half of the class table: one 4-byte
    /// write, which a packet sees either before or after.
    fn set_generation(&mut self, generation: u32) -> Result<(), DataplaneError> {
        self.update(
            map_name::CONTROL,
            &[Control::Generation as u32],
            &[generation],
        )?;
        self.generation = generation;
        Ok(())
    }

    fn update<K: batch::Plain, V: batch::Plain>(
        &self,
        map: &'static str,
        keys: &[K],
        values: &[V],
    ) -> Result<(), DataplaneError> {
        if keys.is_empty() {
            return Ok(());
        }
        batch::update(self.map_fd(map)?, keys, values)
            .map_err(|source| DataplaneError::Write { map, source })
    }

    fn map_fd(&self, name: &'static str) -> Result<BorrowedFd<'_>, DataplaneError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        Ok(map_data(map).fd().as_fd())
    }

    /// Attaches to `interface`. In `auto` mode native is tried first and skb
    /// mode is the fallback, with the reason kept for the operator.
    pub fn attach(
        &mut self,
        interface: &str,
        mode: AttachMode,
    ) -> Result<&Attachment, DataplaneError> {
        if !interface_exists(interface) {
            return Err(DataplaneError::UnknownInterface(interface.to_owned()));
        }
        let program = program_mut(&mut self.ebpf)?;
        let attachment = match mode {
            AttachMode::Native => attach_with(program, interface, XdpMode::Driver, "native", None)?,
            AttachMode::Skb => attach_with(program, interface, XdpMode::Skb, "skb", None)?,
            AttachMode::Auto => {
                match attach_with(program, interface, XdpMode::Driver, "native", None) {
                    Ok(attachment) => attachment,
                    Err(native_error) => {
                        let reason = error_chain(&native_error);
                        attach_with(program, interface, XdpMode::Skb, "skb", Some(reason))?
                    }
                }
            }
        };
        self.attachments.push(attachment);
        Ok(self.attachments.last().expect("just pushed"))
    }

    pub fn attachments(&self) -> &[Attachment] {
        &self.attachments
    }

    /// Detaches from every interface, pinned links included.
    pub fn detach_all(&mut self) -> Result<(), DataplaneError> {
        let attachments = std::mem::take(&mut self.attachments);
        let program = program_mut(&mut self.ebpf)?;
        for attachment in attachments {
            match attachment.link {
                LinkHandle::Owned(link) => {
                    program
                        .detach(link)
                        .map_err(|source| DataplaneError::Attach {
                            interface: attachment.interface.clone(),
                            mode: attachment.mode,
                            source,
                        })?
                }
                LinkHandle::Pinned(path) => pinned::unpin_link(&path)
                    .map_err(|source| DataplaneError::Pin { path, source })?,
            }
        }
        Ok(())
    }

    /// Packets and bytes per class, summed over all possible CPUs.
    pub fn class_counters(&self, classes: usize) -> Result<Vec<Counter>, DataplaneError> {
        self.sum_counters(
            map_name::CLASS_COUNTERS,
            classes.min(MAX_CLASSES as usize) as u32,
        )
    }

    /// Packets and bytes per [`intelwall_common::PathCounter`] slot.
    pub fn path_counters(&self) -> Result<Vec<Counter>, DataplaneError> {
        self.sum_counters(map_name::PATH_COUNTERS, PATH_COUNTER_SLOTS)
    }

    fn sum_counters(&self, name: &'static str, slots: u32) -> Result<Vec<Counter>, DataplaneError> {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        let counters: PerCpuArray<&MapData, Counter> = PerCpuArray::try_from(map)
            .map_err(|source| DataplaneError::Read { map: name, source })?;
        (0..slots)
            .map(|slot| {
                let per_cpu = counters
                    .get(&slot, 0)
                    .map_err(|source| DataplaneError::Read { map: name, source })?;
                Ok(per_cpu
                    .iter()
                    .fold(Counter::default(), |sum, counter| Counter {
                        packets: sum.packets + counter.packets,
                        bytes: sum.bytes + counter.bytes,
                    }))
            })
            .collect()
    }

    /// Runs the program once on `frame` through BPF_PROG_TEST_RUN and returns
    /// its XDP action.
    pub fn test_run(&mut self, frame: &[u8]) -> Result<u32, DataplaneError> {
        let program = program_mut(&mut self.ebpf)?;
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        let result = program.test_run(options).map_err(DataplaneError::TestRun)?;
        Ok(result.return_value)
    }

    /// Runs the program `repeat` times on `frame` and returns the kernel's
    /// average time per run.
    pub fn time_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<std::time::Duration, DataplaneError> {
        let program = program_mut(&mut self.ebpf)?;
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.repeat = repeat;
        let result = program.test_run(options).map_err(DataplaneError::TestRun)?;
        Ok(result.duration)
    }
}

fn attach_with(
    program: &mut Xdp,
    interface: &str,
    mode: XdpMode,
    mode_name: &'static str,
    fallback_reason: Option<String>,
) -> Result<Attachment, DataplaneError> {
    let link = program
        .attach(interface, mode)
        .map_err(|source| DataplaneError::Attach {
            interface: interface.to_owned(),
            mode: mode_name,
            source,
        })?;
    Ok(Attachment {
        interface: interface.to_owned(),
        mode: mode_name,
        fallback_reason,
        link: LinkHandle::Owned(link),
    })
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(XDP_PROGRAM)
        .ok_or(DataplaneError::MissingMap("program intelwall"))?
        .try_into()
        .map_err(DataplaneError::Verify)
}

fn map_data(map: &Map) -> &MapData {
    match map {
        Map::Array(data)
        | Map::HashMap(data)
        | Map::LpmTrie(data)
        | Map::PerCpuArray(data)
        | Map::PerCpuHashMap(data)
        | Map::RingBuf(data) => data,
        other => unreachable!("intelwall's object has no map of kind {other:?}"),
    }
}

fn interface_exists(name: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: name is a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Kernels before 5.11 charge BPF maps against RLIMIT_MEMLOCK. Newer ones use
/// the memory cgroup, and raising the limit may be forbidden (no
/// CAP_SYS_RESOURCE), so a failure here is only worth a debug line.
fn raise_memlock_limit() {
    let limit = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &limit) } != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "cannot raise RLIMIT_MEMLOCK; relying on memory cgroup accounting"
        );
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            eprintln!("SKIPPED: loading XDP programs needs root");
        }
        root
    }

    fn small() -> Capacity {
        Capacity {
            hosts_v4: 16,
            hosts_v6: 16,
            prefixes_v4: 16,
            prefixes_v6: 16,
        }
    }

    #[test]
    fn batch_delete_skips_absent_keys() {
        if !is_root() {
            return;
        }
        let mut dataplane = Dataplane::load(small()).unwrap();
        let image = MapImage {
            hosts_v4: vec![([192, 0, 2, 1], 1), ([192, 0, 2, 2], 1)],
            cover_v4: vec![0; COVER_V4_ENTRIES as usize],
            classes: vec![ClassEntry::default(); 2],
            ..MapImage::default()
        };
        dataplane.write_initial(&image).unwrap();
        let keys = [[192, 0, 2, 1], [192, 0, 2, 99], [192, 0, 2, 2]];
        batch::delete(dataplane.map_fd(map_name::HOSTS_V4).unwrap(), &keys).unwrap();
        let left = dataplane.read_image(2).unwrap();
        assert!(left.hosts_v4.is_empty(), "left behind: {:?}", left.hosts_v4);
    }

    #[test]
    fn write_beyond_capacity_is_refused() {
        if !is_root() {
            return;
        }
        let mut dataplane = Dataplane::load(small()).unwrap();
        let image = MapImage {
            hosts_v4: (0..17u8).map(|host| ([192, 0, 2, host], 1)).collect(),
            cover_v4: vec![0; COVER_V4_ENTRIES as usize],
            classes: vec![ClassEntry::default(); 2],
            ..MapImage::default()
        };
        let error = dataplane.write_initial(&image).unwrap_err();
        assert_eq!(
            error.to_string(),
            "HOSTS_V4 needs 17 entries but its capacity is 16"
        );
        let left = dataplane.read_image(2).unwrap();
        assert!(
            left.hosts_v4.is_empty(),
            "a refused image was partly written"
        );
    }
}
