//! The few bpf(2) commands the bench needs that no library here offers:
//! loading the two-instruction floor program, opening another tool's
//! program and maps by id, timing a program with BPF_PROG_TEST_RUN, and
//! batched updates of a per-CPU hash. Attribute layouts follow
//! `union bpf_attr` in the kernel's include/uapi/linux/bpf.h.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use anyhow::{Context, Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

const BPF_PROG_TYPE_XDP: u32 = 6;

/// XDP_DROP, the return value of the floor program.
pub const XDP_DROP: u32 = 1;

/// `r0 = XDP_DROP` (BPF_ALU64 | BPF_MOV | BPF_K, dst r0) and `exit`
/// (BPF_JMP | BPF_EXIT), as 8-byte instructions: opcode, registers,
/// 16-bit offset, 32-bit immediate.
const FLOOR_PROGRAM: [u64; 2] = [0xb7 | ((XDP_DROP as u64) << 32), 0x95];

fn bpf<T>(command: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a plain repr(C) attribute struct for `command`, and
    // its size is passed along, so the kernel reads and writes only inside it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<T>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned_fd(rc: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// Loads the floor: an XDP program that returns XDP_DROP and does nothing
/// else, so its test-run time is the harness's own cost per packet.
pub fn load_floor_program() -> Result<OwnedFd> {
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..9].copy_from_slice(b"iwb_floor");
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: FLOOR_PROGRAM.len() as u32,
        insns: FLOOR_PROGRAM.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..ProgLoadAttr::default()
    };
    let rc = bpf(BPF_PROG_LOAD, &mut attr).context("BPF_PROG_LOAD of the floor program failed")?;
    Ok(owned_fd(rc))
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    id: u32,
    next_id: u32,
    open_flags: u32,
}

/// Opens the program with kernel id `id`, for example one that another tool
/// loaded.
pub fn program_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        ..GetFdByIdAttr::default()
    };
    let rc = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)
        .with_context(|| format!("cannot open BPF program id {id}"))?;
    Ok(owned_fd(rc))
}

/// Opens the map with kernel id `id`.
pub fn map_by_id(id: u32) -> Result<OwnedFd> {
    let mut attr = GetFdByIdAttr {
        id,
        ..GetFdByIdAttr::default()
    };
    let rc = bpf(BPF_MAP_GET_FD_BY_ID, &mut attr)
        .with_context(|| format!("cannot open BPF map id {id}"))?;
    Ok(owned_fd(rc))
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// The result of one BPF_PROG_TEST_RUN call.
#[derive(Clone, Copy, Debug)]
pub struct TestRun {
    /// The program's return value (the XDP action) on the last run.
    pub action: u32,
    /// The kernel's mean time per run, in whole nanoseconds.
    pub nanos: u32,
}

/// Runs `program` `repeat` times on `frame`. The kernel times the runs
/// itself, so the syscall's own cost is not in [`TestRun::nanos`].
pub fn test_run(program: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> Result<TestRun> {
    let mut attr = TestRunAttr {
        prog_fd: program.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_in: frame.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN failed")?;
    Ok(TestRun {
        action: attr.retval,
        nanos: attr.duration,
    })
}

#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `keys.len() / key_size` entries into `map` with
/// BPF_MAP_UPDATE_BATCH. `values` contains one value of `value_size` bytes per
/// key (for a per-CPU map, one 8-byte-aligned slot per possible CPU).
pub fn update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    key_size: usize,
    values: &[u8],
    value_size: usize,
) -> Result<()> {
    let count = keys.len() / key_size;
    if values.len() != count * value_size {
        bail!(
            "{count} keys need {} value bytes, got {}",
            count * value_size,
            values.len()
        );
    }
    let mut done = 0;
    while done < count {
        let mut attr = BatchAttr {
            keys: keys[done * key_size..].as_ptr() as u64,
            values: values[done * value_size..].as_ptr() as u64,
            count: (count - done) as u32,
            map_fd: map.as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        let result = bpf(BPF_MAP_UPDATE_BATCH, &mut attr);
        // The kernel reports how many entries it wrote even on failure; an
        // interrupted batch resumes after them.
        done += attr.count as usize;
        match result {
            Ok(_) => {}
            Err(error) if error.raw_os_error() == Some(libc::EINTR) => {}
            Err(error) => {
                return Err(error).with_context(|| {
                    format!("BPF_MAP_UPDATE_BATCH failed after {done} of {count} entries")
                });
            }
        }
    }
    Ok(())
}

/// Returns the number of possible CPUs, which sizes per-CPU map values.
pub fn possible_cpus() -> Result<usize> {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible")
        .context("cannot read /sys/devices/system/cpu/possible")?;
    parse_cpu_list(text.trim())
        .with_context(|| format!("cannot parse the CPU list `{}`", text.trim()))
}

/// Counts the CPUs in a list such as `0-3,8,10-11`.
fn parse_cpu_list(list: &str) -> Result<usize> {
    let mut count = 0;
    for part in list.split(',') {
        count += match part.split_once('-') {
            Some((first, last)) => last.parse::<usize>()? - first.parse::<usize>()? + 1,
            None => {
                part.parse::<usize>()?;
                1
            }
        };
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn cpu_list_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-1").unwrap(), 2);
        assert_eq!(parse_cpu_list("0").unwrap(), 1);
        assert_eq!(parse_cpu_list("0-3,8,10-11").unwrap(), 7);
    }
}

#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Reads the value of `key` in `map` into `value`, which must be as large
/// as the map's value (for a per-CPU map, the slots of every possible CPU).
pub fn lookup(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<()> {
    const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..ElemAttr::default()
    };
    bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).context("BPF_MAP_LOOKUP_ELEM failed")?;
    Ok(())
}
