//! Loads the XDP program, writes a map image into its maps, attaches it to
//! interfaces and reads its counters.

mod batch;
mod counters;
mod hosts;
mod pinned;
mod update;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use aya::Ebpf;
use aya::EbpfLoader;
use aya::maps::{Array, Map, MapData};
use aya::programs::{
    ProgramError, SchedClassifier, TestRun, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId,
};
use intelwall_common::{
    CLASS_COUNTERS_PER_SLOT, COVER_V4_ENTRIES, ClassEntry, ClassRecord, Control, Counter,
    GENERATIONS, INTERFACE_TABLE_ENTRIES, InterfaceSlot, LogRule, MAX_CLASSES, MAX_LOG_RULES,
    PATH_COUNTER_SLOTS, TAG_PROGRAM, XDP_PROGRAM, class_slot, host_table, map_name, record_flags,
};

pub use batch::LpmKey;
pub use counters::{CounterMaps, PinnedCounterMaps, Snapshot, sum_slots};
pub use hosts::HostTable;
pub use pinned::unpin_link;
pub use update::UpdateStats;

use crate::compile::MapImage;
use crate::config::AttachMode;

/// The compiled XDP object, embedded so that one binary is all a host needs.
static XDP_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("INTELWALL_XDP_OBJECT"));

/// Smallest capacity of a host or prefix map, so that small feeds can grow a
/// little without the maps being rebuilt.
const MIN_MAP_CAPACITY: u32 = 1024;

/// Minimum number of class counters per interface slot.
const MIN_CLASS_CAPACITY: u32 = 1024;

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
        "HOSTS_V4 has no free slot within {probe} buckets of an address's home bucket \
         ({entries} entries in {buckets} buckets)",
        probe = host_table::MAX_PROBE
    )]
    HostTableFull { entries: usize, buckets: u32 },
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
    #[error("cannot attach the tag program to `{interface}`: {source}")]
    AttachTag {
        interface: String,
        #[source]
        source: ProgramError,
    },
}

/// What the class table holds for a class besides its verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassExtra {
    /// Bit `i`: the log rule in slot `i` matches the class.
    pub log_rules: u32,
    /// DSCP to write into the class's packets when its fate is `tag`.
    pub dscp: Option<u8>,
}

/// The extras of every class id, indexed by class id; ids beyond the end
/// have none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClassExtras(pub Vec<ClassExtra>);

impl ClassExtras {
    fn get(&self, class: u32) -> ClassExtra {
        self.0.get(class as usize).copied().unwrap_or_default()
    }

    /// The class table element for `entry` of class `class`.
    fn record(&self, class: u32, entry: ClassEntry) -> ClassRecord {
        let extra = self.get(class);
        let mut record = ClassRecord::from_entry(entry);
        record.log_rules = extra.log_rules;
        if let Some(dscp) = extra.dscp {
            record.flags |= record_flags::DSCP;
            record.dscp = dscp;
        }
        record
    }

    fn from_records(records: &[ClassRecord]) -> ClassExtras {
        ClassExtras(
            records
                .iter()
                .map(|record| ClassExtra {
                    log_rules: record.log_rules,
                    dscp: (record.flags & record_flags::DSCP != 0).then_some(record.dscp),
                })
                .collect(),
        )
    }
}

/// Capacities of the address maps, fixed when the program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub hosts_v4: u32,
    pub hosts_v6: u32,
    pub prefixes_v4: u32,
    pub prefixes_v6: u32,
    /// Class ids that the class counters cover, per interface slot: ids from
    /// 0 to `classes - 1`, at most `MAX_CLASSES`.
    pub classes: u32,
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
            classes: class_capacity(image.classes.len()),
        }
    }
}

/// Counters per interface slot for an image whose class ids stop below
/// `class_ids`. An update needs ids for the old classes, the new ones and
/// transitional ones at once, hence four times the ids, as a power of two.
fn class_capacity(class_ids: usize) -> u32 {
    let wanted = class_ids.saturating_mul(4).max(MIN_CLASS_CAPACITY as usize);
    u32::try_from(wanted.next_power_of_two())
        .unwrap_or(MAX_CLASSES)
        .min(MAX_CLASSES)
}

/// How an interface ended up attached.
#[derive(Debug)]
pub struct Attachment {
    pub interface: String,
    pub mode: &'static str,
    /// Why `auto` fell back to skb mode, when it did.
    pub fallback_reason: Option<String>,
    link: LinkHandle,
    /// The pinned link of the TC program that sets marks, when attached.
    tag_link: Option<std::path::PathBuf>,
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
    hosts_v4: HostTable,
    capacity: Capacity,
    generation: u32,
    attachments: Vec<Attachment>,
    /// Extras of the class table the kernel enforces.
    extras: ClassExtras,
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
        Dataplane::load_with(capacity, maps_dir, 0)
    }

    /// Like [`Dataplane::load_pinned`], with counters for `interfaces`
    /// named interfaces besides the unnamed slot. Each slot costs
    /// `capacity.classes` counters of 16 bytes per possible CPU.
    pub fn load_with(
        capacity: Capacity,
        maps_dir: Option<&std::path::Path>,
        interfaces: u32,
    ) -> Result<Dataplane, DataplaneError> {
        let (mut ebpf, capacity) = create_maps(capacity, maps_dir, interfaces)?;
        let hosts_v4 = open_host_table(&ebpf)?;
        verify_programs(&mut ebpf)?;
        Dataplane::from_loaded(ebpf, hosts_v4, capacity)
    }

    /// Loads the embedded program into new maps, as [`Dataplane::load_with`]
    /// does, and writes `image` into them as
    /// [`Dataplane::write_initial_with`] does. The addresses are written
    /// while the kernel verifies the program: the writes need only the maps,
    /// and each step takes a tenth of a second or more at a million
    /// indicators.
    pub fn load_written(
        capacity: Capacity,
        maps_dir: Option<&std::path::Path>,
        interfaces: u32,
        image: &MapImage,
        extras: ClassExtras,
    ) -> Result<Dataplane, DataplaneError> {
        check_capacity(capacity, image)?;
        let (mut ebpf, capacity) = create_maps(capacity, maps_dir, interfaces)?;
        let mut hosts_v4 = open_host_table(&ebpf)?;
        let address_maps = ADDRESS_MAPS
            .into_iter()
            .map(|name| Ok((name, owned_map_fd(&ebpf, name)?)))
            .collect::<Result<Vec<_>, DataplaneError>>()?;
        let find = |name: &'static str| {
            address_maps
                .iter()
                .find(|(known, _)| *known == name)
                .map(|(_, fd)| fd.as_fd())
                .ok_or(DataplaneError::MissingMap(name))
        };
        let (written, verified) = std::thread::scope(|scope| {
            let writer = scope.spawn(|| write_addresses(&find, &hosts_v4, image));
            let verified = verify_programs(&mut ebpf);
            let written = writer.join().expect("the address writer does not panic");
            (written, verified)
        });
        verified?;
        match written {
            Err(DataplaneError::HostTableFull { .. }) => {
                refill_hosts(&ebpf, &mut hosts_v4, &image.hosts_v4)?;
            }
            other => other?,
        }
        let mut dataplane = Dataplane::from_loaded(ebpf, hosts_v4, capacity)?;
        dataplane.extras = extras;
        dataplane.write_classes(&image.classes)?;
        Ok(dataplane)
    }

    fn from_loaded(
        ebpf: Ebpf,
        hosts_v4: HostTable,
        capacity: Capacity,
    ) -> Result<Dataplane, DataplaneError> {
        let mut dataplane = Dataplane {
            ebpf,
            hosts_v4,
            capacity,
            generation: 0,
            attachments: Vec::new(),
            extras: ClassExtras::default(),
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
        self.write_initial_with(image, ClassExtras::default())
    }

    /// [`Dataplane::write_initial`] with DSCP rewrites and log rules per
    /// class.
    pub fn write_initial_with(
        &mut self,
        image: &MapImage,
        extras: ClassExtras,
    ) -> Result<(), DataplaneError> {
        check_capacity(self.capacity, image)?;
        write_addresses(&|name| self.map_fd(name), &self.hosts_v4, image)?;
        self.extras = extras;
        self.write_classes(&image.classes)
    }

    /// Names the counter slot of each interface by ifindex; every other
    /// interface counts in the unnamed slot. Returns the interfaces that
    /// share a table entry with an earlier one and so count as unnamed.
    pub fn set_interface_slots(
        &self,
        interfaces: &[(u32, u32)],
    ) -> Result<Vec<u32>, DataplaneError> {
        let mut table = vec![InterfaceSlot::default(); INTERFACE_TABLE_ENTRIES as usize];
        let mut collided = Vec::new();
        for &(ifindex, slot) in interfaces {
            let entry = &mut table[(ifindex % INTERFACE_TABLE_ENTRIES) as usize];
            if entry.ifindex != 0 && entry.ifindex != ifindex {
                collided.push(ifindex);
                continue;
            }
            *entry = InterfaceSlot { ifindex, slot };
        }
        let keys: Vec<u32> = (0..INTERFACE_TABLE_ENTRIES).collect();
        let values: Vec<[u8; 8]> = table.iter().map(interface_slot_bytes).collect();
        self.update(map_name::INTERFACES, &keys, &values)?;
        Ok(collided)
    }

    /// Writes the sampling settings of the log rules, slot by slot.
    pub fn set_log_rules(&self, rules: &[LogRule]) -> Result<(), DataplaneError> {
        let count = rules.len().min(MAX_LOG_RULES as usize);
        let mut all = rules[..count].to_vec();
        all.resize(MAX_LOG_RULES as usize, LogRule::default());
        let keys: Vec<u32> = (0..MAX_LOG_RULES).collect();
        let values: Vec<[u8; 8]> = all.iter().map(log_rule_bytes).collect();
        self.update(map_name::LOG_RULES, &keys, &values)
    }

    /// Counter slots of the loaded maps: the unnamed slot plus one per named
    /// interface.
    pub fn interface_slots(&self) -> Result<u32, DataplaneError> {
        self.counter_maps().interface_slots()
    }

    /// The ring buffer of sampled events, for one reader. `None` once taken.
    pub fn take_events(&mut self) -> Option<Map> {
        self.ebpf.take_map(map_name::EVENTS)
    }

    /// Writes a class table into the idle half and makes it active, with
    /// the extras of the enforced table.
    pub fn write_classes(&mut self, classes: &[ClassEntry]) -> Result<(), DataplaneError> {
        let idle = (self.generation + 1) % GENERATIONS;
        let records: Vec<(u32, ClassRecord)> = classes
            .iter()
            .take(MAX_CLASSES as usize)
            .enumerate()
            .map(|(class, entry)| (class as u32, self.extras.record(class as u32, *entry)))
            .collect();
        self.write_class_slots(idle, &records)?;
        self.set_generation(idle)
    }

    /// Writes class records into one half of the class table.
    fn write_class_slots(
        &self,
        generation: u32,
        records: &[(u32, ClassRecord)],
    ) -> Result<(), DataplaneError> {
        let (slots, values): (Vec<u32>, Vec<[u8; 16]>) = records
            .iter()
            .map(|(class, record)| (class_slot(generation, *class), class_record_bytes(record)))
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

    /// Writes `(key, value)` pairs into `map`. The IPv4 host table is not a
    /// BPF hash map and is written through its mapping instead.
    fn update<K: batch::Plain, V: batch::Plain>(
        &self,
        map: &'static str,
        keys: &[K],
        values: &[V],
    ) -> Result<(), DataplaneError> {
        if map == map_name::HOSTS_V4 {
            let entries: Vec<([u8; 4], u32)> = host_keys(keys)
                .iter()
                .copied()
                .zip(host_classes(values).iter().copied())
                .collect();
            return self.write_hosts_v4(&entries);
        }
        write_map(&|name| self.map_fd(name), map, keys, values)
    }

    /// Deletes `keys` from `map` and skips keys that are already absent.
    fn delete<K: batch::Plain>(&self, map: &'static str, keys: &[K]) -> Result<(), DataplaneError> {
        if map == map_name::HOSTS_V4 {
            for octets in host_keys(keys) {
                self.hosts_v4.remove(u32::from_be_bytes(*octets));
            }
            return Ok(());
        }
        batch::delete(self.map_fd(map)?, keys)
            .map_err(|source| DataplaneError::Write { map, source })
    }

    fn write_hosts_v4(&self, entries: &[([u8; 4], u32)]) -> Result<(), DataplaneError> {
        write_hosts(&self.hosts_v4, entries)
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
            if let Some(path) = attachment.tag_link {
                pinned::unpin_link(&path).map_err(|source| DataplaneError::Pin { path, source })?;
            }
        }
        Ok(())
    }

    /// Packets and bytes per class, summed over all possible CPUs and every
    /// interface slot.
    pub fn class_counters(&self, classes: usize) -> Result<Vec<Counter>, DataplaneError> {
        let by_slot = self.counter_maps().class_counters(classes)?;
        Ok(counters::sum_slots(&by_slot))
    }

    /// Packets and bytes per [`intelwall_common::PathCounter`] slot, summed
    /// over every interface slot.
    pub fn path_counters(&self) -> Result<Vec<Counter>, DataplaneError> {
        let by_slot = self.counter_maps().path_counters()?;
        Ok(counters::sum_slots(&by_slot))
    }

    /// Every counter, per interface slot where the kernel keeps one.
    pub fn snapshot(&self, classes: usize) -> Result<Snapshot, DataplaneError> {
        self.counter_maps().snapshot(classes)
    }

    fn counter_maps(&self) -> CounterMaps<'_> {
        CounterMaps::new(|name| self.ebpf.map(name))
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

    /// Runs the program once on `frame` and returns its XDP action and the
    /// frame as it left, metadata area included: the kernel copies out from
    /// the start of the metadata, whose length the returned `usize` gives.
    pub fn test_run_output(
        &mut self,
        frame: &[u8],
    ) -> Result<(u32, usize, Vec<u8>), DataplaneError> {
        let program = program_mut(&mut self.ebpf)?;
        // Room for the frame plus any metadata the program adds in front.
        let mut out = vec![0u8; frame.len() + 256];
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex,
        // rx_queue_index, egress_ifindex. With a context to read back, the
        // kernel takes the frame's bounds from the context given, so it
        // must describe the whole frame.
        let mut context_in = [0u8; 24];
        context_in[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        let mut context_out = [0u8; 24];
        let mut options = TestRunOptions::new();
        options.data_in = Some(frame);
        options.data_out = Some(&mut out);
        options.ctx_in = Some(&context_in);
        options.ctx_out = Some(&mut context_out);
        let result = program.test_run(options).map_err(DataplaneError::TestRun)?;
        let field = |at: usize| {
            u32::from_ne_bytes(context_out[at..at + 4].try_into().expect("four bytes")) as usize
        };
        let (data, data_meta) = (field(0), field(8));
        let meta_len = data.saturating_sub(data_meta);
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value, meta_len, out))
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
        tag_link: None,
    })
}

/// Builds the loader with the maps sized and, with `maps_dir`, pinned, and
/// creates the maps. The programs are not verified yet. Returns `capacity`
/// with the class counters' actual size, which reused pinned counters keep.
fn create_maps(
    capacity: Capacity,
    maps_dir: Option<&std::path::Path>,
    interfaces: u32,
) -> Result<(Ebpf, Capacity), DataplaneError> {
    raise_memlock_limit();
    let slots = interfaces + 1;
    // Reused pinned counters keep their size, which the program must use.
    let class_slots = maps_dir
        .and_then(|dir| PinnedCounterMaps::open(dir).ok())
        .and_then(|maps| maps.counters().class_slots().ok())
        .unwrap_or(capacity.classes);
    let host_elements = host_table::elements_for(host_table::buckets_for(capacity.hosts_v4));
    let mut loader = take_loader();
    loader
        .map_max_entries(map_name::HOSTS_V4, host_elements)
        .map_max_entries(map_name::HOSTS_V6, capacity.hosts_v6)
        .map_max_entries(map_name::PREFIXES_V4, capacity.prefixes_v4)
        .map_max_entries(map_name::PREFIXES_V6, capacity.prefixes_v6)
        .map_max_entries(map_name::CLASS_COUNTERS, slots * class_slots)
        .map_max_entries(map_name::PATH_COUNTERS, slots * PATH_COUNTER_SLOTS)
        .override_global(CLASS_COUNTERS_PER_SLOT, &class_slots, true);
    if let Some(dir) = maps_dir {
        std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Write {
            map: "pin directory",
            source,
        })?;
        for name in map_name::ALL {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let ebpf = loader.load(XDP_OBJECT).map_err(DataplaneError::Load)?;
    let capacity = Capacity {
        hosts_v4: host_table::capacity_of(host_elements),
        classes: class_slots,
        ..capacity
    };
    Ok((ebpf, capacity))
}

/// A loader made ahead of time by [`prepare_loader`].
static PREPARED_LOADER: Mutex<Option<JoinHandle<EbpfLoader<'static>>>> = Mutex::new(None);

/// Starts making a program loader on another thread, for the next
/// [`Dataplane`] load to take. A new loader parses the kernel's BTF
/// (/sys/kernel/btf/vmlinux), which takes about a tenth of a second, so an
/// agent calls this before it reads its feeds.
pub fn prepare_loader() {
    let mut prepared = PREPARED_LOADER
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if prepared.is_none() {
        *prepared = Some(std::thread::spawn(EbpfLoader::new));
    }
}

/// Returns the loader that [`prepare_loader`] made, or a new one.
fn take_loader() -> EbpfLoader<'static> {
    let prepared = PREPARED_LOADER
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    prepared
        .and_then(|thread| thread.join().ok())
        .unwrap_or_default()
}

/// Loads the XDP and TC programs into the kernel, which verifies them.
fn verify_programs(ebpf: &mut Ebpf) -> Result<(), DataplaneError> {
    program_mut(ebpf)?.load().map_err(DataplaneError::Verify)?;
    tag_program_mut(ebpf)?
        .load()
        .map_err(DataplaneError::Verify)
}

/// The BPF maps that [`write_addresses`] fills besides the host table.
const ADDRESS_MAPS: [&str; 4] = [
    map_name::HOSTS_V6,
    map_name::PREFIXES_V4,
    map_name::PREFIXES_V6,
    map_name::COVER_V4,
];

/// Writes the hosts, prefixes and cover flags of `image` into the maps that
/// `map_fd` finds by name.
fn write_addresses<'a>(
    map_fd: &dyn Fn(&'static str) -> Result<BorrowedFd<'a>, DataplaneError>,
    hosts_v4: &HostTable,
    image: &MapImage,
) -> Result<(), DataplaneError> {
    let (keys, values): (Vec<[u8; 16]>, Vec<u32>) = image.hosts_v6.iter().copied().unzip();
    write_map(map_fd, map_name::HOSTS_V6, &keys, &values)?;
    let (keys, values) = prefix_keys(&image.prefixes_v4);
    write_map(map_fd, map_name::PREFIXES_V4, &keys, &values)?;
    let (keys, values) = prefix_keys(&image.prefixes_v6);
    write_map(map_fd, map_name::PREFIXES_V6, &keys, &values)?;
    debug_assert_eq!(image.cover_v4.len(), COVER_V4_ENTRIES as usize);
    let keys: Vec<u32> = (0..COVER_V4_ENTRIES).collect();
    let values: Vec<[u8; 1]> = image.cover_v4.iter().map(|flag| [*flag]).collect();
    write_map(map_fd, map_name::COVER_V4, &keys, &values)?;
    // Last, so that a host table that is full leaves every other map
    // written and a retry needs to write only the table again.
    write_hosts(hosts_v4, &image.hosts_v4)
}

fn write_map<'a, K: batch::Plain, V: batch::Plain>(
    map_fd: &dyn Fn(&'static str) -> Result<BorrowedFd<'a>, DataplaneError>,
    map: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), DataplaneError> {
    if keys.is_empty() {
        return Ok(());
    }
    batch::update(map_fd(map)?, keys, values)
        .map_err(|source| DataplaneError::Write { map, source })
}

/// Rejects an image that does not fit maps of `capacity`.
fn check_capacity(capacity: Capacity, image: &MapImage) -> Result<(), DataplaneError> {
    let checks = [
        (
            map_name::CLASS_COUNTERS,
            image.classes.len(),
            capacity.classes,
        ),
        (map_name::HOSTS_V4, image.hosts_v4.len(), capacity.hosts_v4),
        (map_name::HOSTS_V6, image.hosts_v6.len(), capacity.hosts_v6),
        (
            map_name::PREFIXES_V4,
            image.prefixes_v4.len(),
            capacity.prefixes_v4,
        ),
        (
            map_name::PREFIXES_V6,
            image.prefixes_v6.len(),
            capacity.prefixes_v6,
        ),
    ];
    check_fits(&checks)
}

/// Rejects the first `(map, needed, capacity)` whose map is too small.
fn check_fits(checks: &[(&'static str, usize, u32)]) -> Result<(), DataplaneError> {
    for &(map, needed, capacity) in checks {
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

/// Returns a descriptor of map `name` of its own, which stays valid however
/// `ebpf` is borrowed meanwhile.
fn owned_map_fd(ebpf: &Ebpf, name: &'static str) -> Result<OwnedFd, DataplaneError> {
    let map = ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
    map_data(map)
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| DataplaneError::Write { map: name, source })
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(XDP_PROGRAM)
        .ok_or(DataplaneError::MissingMap("program intelwall"))?
        .try_into()
        .map_err(DataplaneError::Verify)
}

fn tag_program_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier, DataplaneError> {
    ebpf.program_mut(TAG_PROGRAM)
        .ok_or(DataplaneError::MissingMap("program intelwall_tag"))?
        .try_into()
        .map_err(DataplaneError::Verify)
}

/// The bytes of shared structs, for the batched writes, which take plain
/// byte arrays so that no padding can reach the kernel.
fn class_record_bytes(record: &ClassRecord) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[0..4].copy_from_slice(&record.fate.to_ne_bytes());
    bytes[4..8].copy_from_slice(&record.mark.to_ne_bytes());
    bytes[8..12].copy_from_slice(&record.log_rules.to_ne_bytes());
    bytes[12] = record.flags;
    bytes[13] = record.dscp;
    bytes
}

fn interface_slot_bytes(entry: &InterfaceSlot) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[0..4].copy_from_slice(&entry.ifindex.to_ne_bytes());
    bytes[4..8].copy_from_slice(&entry.slot.to_ne_bytes());
    bytes
}

fn log_rule_bytes(rule: &LogRule) -> [u8; 8] {
    let mut bytes = [0u8; 8];
    bytes[0..4].copy_from_slice(&rule.sample_every.to_ne_bytes());
    bytes[4..8].copy_from_slice(&rule.rate_per_cpu.to_ne_bytes());
    bytes
}

/// Splits image prefixes into trie keys and class values for a batched write.
fn prefix_keys<const N: usize>(prefixes: &[(u8, [u8; N], u32)]) -> (Vec<LpmKey<N>>, Vec<u32>) {
    prefixes
        .iter()
        .map(|(len, address, class)| (LpmKey::new(*len, *address), *class))
        .unzip()
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

/// Times a fresh load starts the host table over with a new multiplier
/// when an address finds no free slot.
const HOST_TABLE_RETRIES: u32 = 3;

/// Writes `entries` into `table`. A full table is reported with the
/// entries it contains.
fn write_hosts(table: &HostTable, entries: &[([u8; 4], u32)]) -> Result<(), DataplaneError> {
    table
        .upsert_all(entries)
        .map_err(|hosts::TableFull| DataplaneError::HostTableFull {
            entries: table.len(),
            buckets: table.buckets(),
        })
}

/// Writes `entries` into `table` again from empty, each time with a new
/// multiplier, which spreads the addresses anew, until every address has a
/// slot or [`HOST_TABLE_RETRIES`] attempts failed. Only for maps that no
/// attached program reads yet.
fn refill_hosts(
    ebpf: &Ebpf,
    table: &mut HostTable,
    entries: &[([u8; 4], u32)],
) -> Result<(), DataplaneError> {
    let mut result = Ok(());
    for _ in 0..HOST_TABLE_RETRIES {
        let multiplier = random_odd();
        table.reset(multiplier);
        write_multiplier(ebpf, multiplier)?;
        result = write_hosts(table, entries);
        if result.is_ok() {
            break;
        }
    }
    result
}

/// Writes the host table's multiplier into the control map.
fn write_multiplier(ebpf: &Ebpf, multiplier: u64) -> Result<(), DataplaneError> {
    let slots = [Control::HostMultiplierLow, Control::HostMultiplierHigh];
    write_control(
        ebpf,
        &slots,
        &[multiplier as u32, (multiplier >> 32) as u32],
    )
}

/// Writes `values` into `slots` of the control map of maps that are not
/// wrapped in a [`Dataplane`] yet.
fn write_control(ebpf: &Ebpf, slots: &[Control], values: &[u32]) -> Result<(), DataplaneError> {
    let control = ebpf
        .map(map_name::CONTROL)
        .ok_or(DataplaneError::MissingMap(map_name::CONTROL))?;
    let slots: Vec<u32> = slots.iter().map(|slot| *slot as u32).collect();
    batch::update(map_data(control).fd().as_fd(), &slots, values).map_err(|source| {
        DataplaneError::Write {
            map: map_name::CONTROL,
            source,
        }
    })
}

/// Maps the host table of freshly loaded maps. New maps get a random
/// multiplier, written to the control map before the shift, because a
/// nonzero shift marks the table ready for the XDP program. Reused pinned
/// maps keep their multiplier.
fn open_host_table(ebpf: &Ebpf) -> Result<HostTable, DataplaneError> {
    let map = |name: &'static str| ebpf.map(name).ok_or(DataplaneError::MissingMap(name));
    let hosts = map_data(map(map_name::HOSTS_V4)?);
    let elements = hosts
        .info()
        .map_err(|source| DataplaneError::Read {
            map: map_name::HOSTS_V4,
            source,
        })?
        .max_entries();
    let buckets = host_table::buckets_of(elements);
    let control: Array<&MapData, u32> =
        Array::try_from(map(map_name::CONTROL)?).map_err(|source| DataplaneError::Read {
            map: map_name::CONTROL,
            source,
        })?;
    let read = |slot: Control| {
        control
            .get(&(slot as u32), 0)
            .map_err(|source| DataplaneError::Read {
                map: map_name::CONTROL,
                source,
            })
    };
    let shift = host_table::shift_for(buckets);
    let multiplier = match read(Control::HostShift)? {
        0 => {
            let multiplier = random_odd();
            write_multiplier(ebpf, multiplier)?;
            write_control(ebpf, &[Control::HostShift], &[shift])?;
            multiplier
        }
        pinned if pinned == shift => {
            u64::from(read(Control::HostMultiplierHigh)?) << 32
                | u64::from(read(Control::HostMultiplierLow)?)
        }
        other => {
            return Err(DataplaneError::Write {
                map: map_name::HOSTS_V4,
                source: std::io::Error::other(format!(
                    "the control map's shift {other} does not match the {buckets} buckets \
                     of the table, so the pinned maps are inconsistent; detach and start \
                     the agent again"
                )),
            });
        }
    };
    HostTable::map(hosts.fd().as_fd(), elements, multiplier, shift).map_err(|source| {
        DataplaneError::Write {
            map: map_name::HOSTS_V4,
            source,
        }
    })
}

/// Returns a random odd 64-bit number, from the standard library's random
/// hash keys. It is unknown outside this host, so feeds cannot be crafted to
/// crowd one bucket.
fn random_odd() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos()),
    );
    hasher.finish() | 1
}

/// Reinterprets the keys of a HOSTS_V4 write as four address bytes each.
fn host_keys<K: batch::Plain>(keys: &[K]) -> &[[u8; 4]] {
    assert_eq!(std::mem::size_of::<K>(), 4, "HOSTS_V4 keys are 4 bytes");
    // SAFETY: `K` is plain data of 4 bytes, so the slice's bytes are
    // `keys.len()` valid `[u8; 4]` values, which need no alignment.
    unsafe { std::slice::from_raw_parts(keys.as_ptr().cast(), keys.len()) }
}

/// Reinterprets the values of a HOSTS_V4 write as class ids.
fn host_classes<V: batch::Plain>(values: &[V]) -> &[u32] {
    assert_eq!(std::mem::size_of::<V>(), 4, "HOSTS_V4 values are class ids");
    assert_eq!(
        values.as_ptr().align_offset(std::mem::align_of::<u32>()),
        0,
        "class ids are aligned"
    );
    // SAFETY: `V` is plain data of 4 bytes at a u32-aligned address, so the
    // slice contains `values.len()` valid u32 values.
    unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) }
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
            classes: 16,
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
        dataplane.delete(map_name::HOSTS_V4, &keys).unwrap();
        let left = dataplane.read_image(2).unwrap();
        assert!(left.hosts_v4.is_empty(), "left behind: {:?}", left.hosts_v4);
        let v6 = [[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]];
        dataplane.delete(map_name::HOSTS_V6, &v6).unwrap();
    }

    #[test]
    fn write_beyond_capacity_is_refused() {
        if !is_root() {
            return;
        }
        let mut dataplane = Dataplane::load(small()).unwrap();
        // The host table rounds its capacity up to whole buckets.
        let capacity = dataplane.capacity().hosts_v4;
        assert_eq!(
            capacity,
            host_table::capacity_of(host_table::elements_for(host_table::MIN_BUCKETS))
        );
        let image = MapImage {
            hosts_v4: (0..=capacity)
                .map(|host| ((0xc000_0000 | host).to_be_bytes(), 1))
                .collect(),
            cover_v4: vec![0; COVER_V4_ENTRIES as usize],
            classes: vec![ClassEntry::default(); 2],
            ..MapImage::default()
        };
        let error = dataplane.write_initial(&image).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "HOSTS_V4 needs {} entries but its capacity is {capacity}",
                capacity + 1
            )
        );
        let left = dataplane.read_image(2).unwrap();
        assert!(
            left.hosts_v4.is_empty(),
            "a refused image was partly written"
        );
    }

    /// Builds an Ethernet frame with an IPv4 UDP header from `source`. The
    /// program reads no further.
    fn ipv4_frame(source: [u8; 4]) -> Vec<u8> {
        let mut frame = vec![0u8; 42];
        frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        frame[14] = 0x45;
        frame[16..18].copy_from_slice(&28u16.to_be_bytes());
        frame[22] = 64;
        frame[23] = 17;
        frame[26..30].copy_from_slice(&source);
        frame[30..34].copy_from_slice(&[198, 51, 100, 1]);
        frame[38..40].copy_from_slice(&8u16.to_be_bytes());
        frame
    }

    #[test]
    fn class_counters_cover_their_capacity() {
        if !is_root() {
            return;
        }
        let mut dataplane = Dataplane::load(small()).unwrap();
        assert_eq!(dataplane.counter_maps().class_slots().unwrap(), 16);
        let mut classes = vec![ClassEntry::default(); 16];
        classes[15].fate = intelwall_common::Fate::Drop as u32;
        let mut cover_v4 = vec![0; COVER_V4_ENTRIES as usize];
        cover_v4[192 << 8] = intelwall_common::cover::HOSTS;
        let image = MapImage {
            hosts_v4: vec![([192, 0, 2, 1], 15)],
            cover_v4,
            classes,
            ..MapImage::default()
        };
        dataplane.write_initial(&image).unwrap();
        let action = dataplane.test_run(&ipv4_frame([192, 0, 2, 1])).unwrap();
        assert_eq!(action, 1, "XDP_DROP");
        let counters = dataplane.class_counters(16).unwrap();
        assert_eq!(counters[15].packets, 1, "the highest class id is counted");

        let mut wider = image.clone();
        wider.classes.push(ClassEntry::default());
        let registry = crate::compile::Registry::default();
        let old = crate::compile::Enforced {
            registry: &registry,
            image: &image,
        };
        let new = crate::compile::Enforced {
            registry: &registry,
            image: &wider,
        };
        let error = dataplane.apply(old, new).unwrap_err();
        assert_eq!(
            error.to_string(),
            "CLASS_COUNTERS needs 17 entries but its capacity is 16"
        );
    }

    /// Addresses whose home bucket in `dataplane`'s host table is `bucket`.
    fn sharing_home(dataplane: &Dataplane, bucket: u32, count: usize) -> Vec<u32> {
        (0xc633_6400u32..)
            .filter(|address| dataplane.hosts_v4.home_of(*address) == bucket)
            .take(count)
            .collect()
    }

    /// Builds an image of `crowd` in class 1, which drops, with the cover
    /// flags that send each address to the host table.
    fn crowd_image(crowd: &[u32]) -> MapImage {
        let mut classes = vec![ClassEntry::default(); 3];
        classes[1].fate = intelwall_common::Fate::Drop as u32;
        classes[2].fate = intelwall_common::Fate::Allow as u32;
        let mut cover_v4 = vec![0; COVER_V4_ENTRIES as usize];
        for address in crowd {
            cover_v4[(address >> 16) as usize] = intelwall_common::cover::HOSTS;
        }
        MapImage {
            hosts_v4: crowd.iter().map(|a| (a.to_be_bytes(), 1)).collect(),
            cover_v4,
            classes,
            ..MapImage::default()
        }
    }

    fn assert_dropped(dataplane: &mut Dataplane, addresses: &[u32]) {
        for address in addresses {
            let action = dataplane
                .test_run(&ipv4_frame(address.to_be_bytes()))
                .unwrap();
            assert_eq!(action, 1, "{address:#x} is dropped (XDP_DROP)");
        }
    }

    #[test]
    fn host_table_probes_past_full_buckets() {
        if !is_root() {
            return;
        }
        let mut dataplane = Dataplane::load(small()).unwrap();
        let capacity = host_table::MAX_PROBE as usize * host_table::SLOTS;
        // Three buckets' worth share home 3, so they spill into 4 and 5.
        let crowd = sharing_home(&dataplane, 3, 3 * host_table::SLOTS);
        let image = crowd_image(&crowd);
        dataplane.write_initial(&image).unwrap();
        assert_dropped(&mut dataplane, &crowd);
        // A removal in the home bucket leaves the flags that lead past it.
        let last = *crowd.last().unwrap();
        dataplane
            .delete(map_name::HOSTS_V4, &[crowd[0].to_be_bytes()])
            .unwrap();
        let action = dataplane.test_run(&ipv4_frame(last.to_be_bytes())).unwrap();
        assert_eq!(action, 1, "the last spilled address is still found");
        let action = dataplane
            .test_run(&ipv4_frame(crowd[0].to_be_bytes()))
            .unwrap();
        assert_eq!(action, 2, "the removed address passes (XDP_PASS)");
        // An update in place keeps one entry.
        dataplane
            .update(map_name::HOSTS_V4, &[last.to_be_bytes()], &[2u32])
            .unwrap();
        assert_eq!(dataplane.hosts_v4.get(last), Some(2));
        assert_eq!(dataplane.hosts_v4.len(), crowd.len() - 1);

        // Past MAX_PROBE buckets of one home there is no slot left.
        let crowd = sharing_home(&dataplane, 20, capacity + 1);
        let entries: Vec<([u8; 4], u32)> = crowd.iter().map(|a| (a.to_be_bytes(), 1)).collect();
        let error = dataplane.write_hosts_v4(&entries).unwrap_err();
        assert!(
            matches!(error, DataplaneError::HostTableFull { .. }),
            "{error}"
        );
        for address in &crowd[..capacity] {
            assert_eq!(dataplane.hosts_v4.get(*address), Some(1));
        }
    }

    #[test]
    fn full_host_table_refills_with_new_multiplier() {
        if !is_root() {
            return;
        }
        let mut dataplane = Dataplane::load(small()).unwrap();
        let crowd = sharing_home(
            &dataplane,
            10,
            host_table::MAX_PROBE as usize * host_table::SLOTS + 1,
        );
        let image = crowd_image(&crowd);
        let error = dataplane.write_initial(&image).unwrap_err();
        assert!(
            matches!(error, DataplaneError::HostTableFull { .. }),
            "{error}"
        );
        // The other maps were written before the table filled up.
        let written = dataplane.read_image(3).unwrap();
        assert_eq!(written.cover_v4, image.cover_v4);

        refill_hosts(&dataplane.ebpf, &mut dataplane.hosts_v4, &image.hosts_v4).unwrap();
        dataplane.write_classes(&image.classes).unwrap();
        assert_eq!(dataplane.hosts_v4.len(), crowd.len());
        assert_dropped(&mut dataplane, &crowd);
    }

    #[test]
    fn class_capacity_leaves_room_for_updates() {
        assert_eq!(class_capacity(2), MIN_CLASS_CAPACITY);
        assert_eq!(class_capacity(1000), 4096);
        assert_eq!(class_capacity(MAX_CLASSES as usize), MAX_CLASSES);
    }
}
