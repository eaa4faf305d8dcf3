//! Links pinned in bpffs, and reading the maps back into an image.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap, MapData};
use aya::programs::links::FdLink;
use aya::programs::tc::{self, TcAttachType};
use aya::programs::{ProgramError, XdpMode};
use intelwall_common::{COVER_V4_ENTRIES, ClassRecord, MAX_CLASSES, class_slot, map_name};

use super::{
    Attachment, ClassExtras, Dataplane, DataplaneError, LinkHandle, attach_with, error_chain,
    interface_exists, program_mut, tag_program_mut,
};
use crate::compile::MapImage;
use crate::config::AttachMode;

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_UPDATE: libc::c_long = 29;

impl Dataplane {
    /// Attaches to `interface` and pins the link at `link_path`, so that the
    /// program stays attached when the agent exits. When a link is already
    /// pinned there, its program is replaced in one step (BPF_LINK_UPDATE):
    /// no packet passes unjudged in between, and the pin never goes away.
    pub fn attach_pinned(
        &mut self,
        interface: &str,
        mode: AttachMode,
        link_path: &Path,
    ) -> Result<&Attachment, DataplaneError> {
        if !interface_exists(interface) {
            return Err(DataplaneError::UnknownInterface(interface.to_owned()));
        }
        let attachment = if link_path.exists() {
            self.replace_pinned_program(interface, link_path)?
        } else {
            self.attach_and_pin(interface, mode, link_path)?
        };
        self.attachments.push(attachment);
        Ok(self.attachments.last().expect("just pushed"))
    }

    fn replace_pinned_program(
        &mut self,
        interface: &str,
        link_path: &Path,
    ) -> Result<Attachment, DataplaneError> {
        let link = open_pinned(link_path).map_err(|source| DataplaneError::Pin {
            path: link_path.to_owned(),
            source,
        })?;
        let program = program_mut(&mut self.ebpf)?;
        let program_fd = program.fd().map_err(DataplaneError::Verify)?;
        let program_fd = program_fd.as_fd().as_raw_fd();
        update_link(&link, program_fd).map_err(|source| DataplaneError::Pin {
            path: link_path.to_owned(),
            source,
        })?;
        Ok(Attachment {
            interface: interface.to_owned(),
            mode: "pinned",
            fallback_reason: None,
            link: LinkHandle::Pinned(link_path.to_owned()),
            tag_link: None,
        })
    }

    /// Attaches the TC program that sets the marks of tagged packets to the
    /// ingress of `interface`, and pins its link at `link_path`; a link
    /// already pinned there gets the new program in one step. Needs TCX
    /// (Linux 6.6): older kernels get a clsact filter instead, which stays
    /// until `intelwall detach` removes it, and `None` is returned.
    pub fn attach_tag_pinned(
        &mut self,
        interface: &str,
        link_path: &Path,
    ) -> Result<Option<std::path::PathBuf>, DataplaneError> {
        let pin_error = |source: std::io::Error| DataplaneError::Pin {
            path: link_path.to_owned(),
            source,
        };
        let program = tag_program_mut(&mut self.ebpf)?;
        if link_path.exists() {
            let link = open_pinned(link_path).map_err(pin_error)?;
            let program_fd = program.fd().map_err(DataplaneError::Verify)?;
            update_link(&link, program_fd.as_fd().as_raw_fd()).map_err(pin_error)?;
        } else {
            let attach_error = |source: ProgramError| DataplaneError::AttachTag {
                interface: interface.to_owned(),
                source,
            };
            if !has_tcx() {
                // Without TCX the filter hangs off a clsact qdisc, which may
                // already exist.
                let _ = tc::qdisc_add_clsact(interface);
                let id = program
                    .attach(interface, TcAttachType::Ingress)
                    .map_err(attach_error)?;
                let link = program.take_link(id).map_err(attach_error)?;
                // Dropping the link would remove the filter; it must stay.
                std::mem::forget(link);
                return Ok(None);
            }
            let id = program
                .attach(interface, TcAttachType::Ingress)
                .map_err(attach_error)?;
            let link = program.take_link(id).map_err(attach_error)?;
            let link = FdLink::try_from(link)
                .map_err(|source| pin_error(std::io::Error::other(source)))?;
            if let Some(dir) = link_path.parent() {
                std::fs::create_dir_all(dir).map_err(pin_error)?;
            }
            link.pin(link_path)
                .map_err(|source| pin_error(std::io::Error::other(source)))?;
        }
        if let Some(attachment) = self
            .attachments
            .iter_mut()
            .find(|attachment| attachment.interface == interface)
        {
            attachment.tag_link = Some(link_path.to_owned());
        }
        Ok(Some(link_path.to_owned()))
    }

    fn attach_and_pin(
        &mut self,
        interface: &str,
        mode: AttachMode,
        link_path: &Path,
    ) -> Result<Attachment, DataplaneError> {
        let program = program_mut(&mut self.ebpf)?;
        let mut attachment = match mode {
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
        let LinkHandle::Owned(id) = std::mem::replace(
            &mut attachment.link,
            LinkHandle::Pinned(link_path.to_owned()),
        ) else {
            unreachable!("attach_with returns an owned link");
        };
        let link = program.take_link(id).map_err(DataplaneError::Verify)?;
        let link = FdLink::try_from(link).map_err(|source| DataplaneError::Pin {
            path: link_path.to_owned(),
            source: std::io::Error::other(source),
        })?;
        if let Some(dir) = link_path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Pin {
                path: dir.to_owned(),
                source,
            })?;
        }
        link.pin(link_path).map_err(|source| DataplaneError::Pin {
            path: link_path.to_owned(),
            source: std::io::Error::other(source),
        })?;
        Ok(attachment)
    }

    /// Reads the maps back: address entries, cover flags and the active half
    /// of the class table (its first `classes` entries).
    pub fn read_image(&mut self, classes: usize) -> Result<MapImage, DataplaneError> {
        let mut image = MapImage {
            hosts_v4: self.hosts_v4.entries(),
            ..MapImage::default()
        };
        let hosts_v6: HashMap<&MapData, [u8; 16], u32> = self.typed(map_name::HOSTS_V6)?;
        for entry in hosts_v6.iter() {
            image
                .hosts_v6
                .push(entry.map_err(|source| read_error(map_name::HOSTS_V6, source))?);
        }
        let prefixes_v4: LpmTrie<&MapData, [u8; 4], u32> = self.typed(map_name::PREFIXES_V4)?;
        for entry in prefixes_v4.iter() {
            let (key, class) = entry.map_err(|source| read_error(map_name::PREFIXES_V4, source))?;
            image.prefixes_v4.push(prefix_entry(&key, class));
        }
        let prefixes_v6: LpmTrie<&MapData, [u8; 16], u32> = self.typed(map_name::PREFIXES_V6)?;
        for entry in prefixes_v6.iter() {
            let (key, class) = entry.map_err(|source| read_error(map_name::PREFIXES_V6, source))?;
            image.prefixes_v6.push(prefix_entry(&key, class));
        }
        let cover: Array<&MapData, u8> = self.typed(map_name::COVER_V4)?;
        image.cover_v4 = (0..COVER_V4_ENTRIES)
            .map(|slot| cover.get(&slot, 0))
            .collect::<Result<_, _>>()
            .map_err(|source| read_error(map_name::COVER_V4, source))?;
        let table: Array<&MapData, ClassRecord> = self.typed(map_name::CLASSES)?;
        let records: Vec<ClassRecord> = (0..classes.min(MAX_CLASSES as usize) as u32)
            .map(|class| table.get(&class_slot(self.generation, class), 0))
            .collect::<Result<_, _>>()
            .map_err(|source| read_error(map_name::CLASSES, source))?;
        image.classes = records.iter().map(ClassRecord::entry).collect();
        // Transitional classes of the next update repeat these extras.
        self.extras = ClassExtras::from_records(&records);
        Ok(image)
    }

    fn typed<'a, T>(&'a self, name: &'static str) -> Result<T, DataplaneError>
    where
        T: TryFrom<&'a aya::maps::Map, Error = aya::maps::MapError>,
    {
        let map = self
            .ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap(name))?;
        T::try_from(map).map_err(|source| read_error(name, source))
    }

    /// Capacities of the address maps as the kernel created them, which for
    /// reused pinned maps may differ from what was asked at load.
    pub fn actual_capacity(&self) -> Result<super::Capacity, DataplaneError> {
        let max_entries = |name: &'static str| -> Result<u32, DataplaneError> {
            let map = self
                .ebpf
                .map(name)
                .ok_or(DataplaneError::MissingMap(name))?;
            let info = super::map_data(map)
                .info()
                .map_err(|source| read_error(name, source))?;
            Ok(info.max_entries())
        };
        Ok(super::Capacity {
            hosts_v4: intelwall_common::host_table::capacity_of(max_entries(map_name::HOSTS_V4)?),
            hosts_v6: max_entries(map_name::HOSTS_V6)?,
            prefixes_v4: max_entries(map_name::PREFIXES_V4)?,
            prefixes_v6: max_entries(map_name::PREFIXES_V6)?,
            classes: max_entries(map_name::CLASS_COUNTERS)? / self.interface_slots()?,
        })
    }

    /// Pins every map into `dir` (for maps loaded without pins).
    pub fn pin_maps(&self, dir: &Path) -> Result<(), DataplaneError> {
        std::fs::create_dir_all(dir).map_err(|source| DataplaneError::Pin {
            path: dir.to_owned(),
            source,
        })?;
        for name in map_name::ALL {
            let map = self
                .ebpf
                .map(name)
                .ok_or(DataplaneError::MissingMap(name))?;
            let path = dir.join(name);
            super::map_data(map)
                .pin(&path)
                .map_err(|source| DataplaneError::Pin {
                    path,
                    source: std::io::Error::other(source),
                })?;
        }
        Ok(())
    }
}

fn prefix_entry<const N: usize>(key: &Key<[u8; N]>, class: u32) -> (u8, [u8; N], u32) {
    (key.prefix_len() as u8, key.data(), class)
}

fn read_error(map: &'static str, source: aya::maps::MapError) -> DataplaneError {
    DataplaneError::Read { map, source }
}

/// Removes a pinned link: the program detaches from its interface once no
/// process holds the link open.
pub fn unpin_link(link_path: &Path) -> std::io::Result<()> {
    std::fs::remove_file(link_path)
}

/// Whether the kernel has TCX links (Linux 6.6), which aya uses for TC
/// programs when it can and which can be pinned.
fn has_tcx() -> bool {
    use aya::util::KernelVersion;
    KernelVersion::current().is_ok_and(|version| version >= KernelVersion::new(6, 6, 0))
}

/// Opens a pinned bpffs object.
fn open_pinned(path: &Path) -> std::io::Result<OwnedFd> {
    let c_path =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let attr = ObjAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_OBJ_GET and c_path
    // outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &attr,
            std::mem::size_of::<ObjAttr>() as u32,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Points a link at another program in one step.
fn update_link(link: &OwnedFd, program_fd: i32) -> std::io::Result<()> {
    #[repr(C)]
    struct LinkUpdateAttr {
        link_fd: u32,
        new_prog_fd: u32,
        flags: u32,
        old_prog_fd: u32,
    }
    let attr = LinkUpdateAttr {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: program_fd as u32,
        flags: 0,
        old_prog_fd: 0,
    };
    // SAFETY: attr is a valid bpf_attr prefix for BPF_LINK_UPDATE.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_UPDATE,
            &attr,
            std::mem::size_of::<LinkUpdateAttr>() as u32,
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
