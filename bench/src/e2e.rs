//! End-to-end drop rate through a veth pair: a sender pinned to one CPU
//! floods the receiver namespace with frames from flagged sources. veth
//! processes received frames in softirq on the sending CPU (its NAPI poll
//! with XDP, the backlog without), so that one CPU does all the work, and
//! its softirq time gives the receive cost per packet.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use intelwall_common::{PATH_COUNTER_SLOTS, PathCounter, map_name};
use intelwall_tests::agent::{Agent, AgentDirs};
use intelwall_tests::netns::Testbed;
use intelwall_tests::packet::VlanTags;

use crate::bpf;
use crate::kernel::frame_from;
use crate::peers::{self, IPTABLES_SCRIPT, netns_sh};
use crate::stats::Summary;
use crate::subject;
use crate::system;

const SENDER_CPU: usize = 0;
/// Frames per sendmmsg call.
const BATCH: usize = 64;
/// Distinct sources the sender cycles through.
const SOURCES: usize = 4096;
/// Time for the receiver to settle before a window starts.
const WARM_UP: Duration = Duration::from_millis(300);

/// The filters compared, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    None,
    Nftables,
    IptablesIpset,
    Intelwall,
}

impl Filter {
    pub const ALL: [Filter; 4] = [
        Filter::Intelwall,
        Filter::Nftables,
        Filter::IptablesIpset,
        Filter::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Filter::None => "no filter",
            Filter::Nftables => "nftables set, drop at prerouting priority raw",
            Filter::IptablesIpset => "iptables raw PREROUTING with an ipset match",
            Filter::Intelwall => "intelwall run (XDP, native mode)",
        }
    }
}

/// One filter's figures over the runs.
pub struct E2eRow {
    pub filter: Filter,
    /// Packets the sender handed to the veth, per second.
    pub offered_pps: Summary,
    /// Packets the filter dropped (for no filter: packets the receiver took
    /// in), per second.
    pub handled_pps: Summary,
    /// Softirq time of the sending CPU per handled packet, in ns.
    pub cpu_ns: Summary,
}

/// Runs every filter with `flagged` loaded, `runs` windows of `window` each.
pub fn measure(
    flagged: &[Ipv4Addr],
    list: &Path,
    work: &Path,
    agent: &Path,
    runs: usize,
    window: Duration,
) -> Result<Vec<E2eRow>> {
    let mut rng = fastrand::Rng::with_seed(3);
    let frames: Vec<Vec<u8>> = (0..SOURCES)
        .map(|_| frame_from(flagged[rng.usize(0..flagged.len())].into(), VlanTags::None))
        .collect();
    let mut rows = Vec::new();
    for filter in Filter::ALL {
        eprintln!("  end to end: {}", filter.name());
        let testbed = Testbed::new()?;
        // Holds the agent, if any; the testbed removes nftables, iptables
        // and ipset state with its namespaces.
        let agent_guard = install(filter, &testbed, flagged, list, work, agent)?;
        let receiver = testbed.receiver();
        let counter = DropCounter::new(filter, &receiver.netns, &receiver.interface)?;
        let mut offered = Vec::new();
        let mut handled = Vec::new();
        let mut cpu = Vec::new();
        for _ in 0..runs {
            let window = run_window(&testbed, &frames, &counter, window)?;
            let seconds = window.elapsed.as_secs_f64();
            offered.push(window.sent as f64 / seconds);
            handled.push(window.handled as f64 / seconds);
            let busy_ns = window.busy_ticks as f64 * system::tick().as_nanos() as f64;
            cpu.push(busy_ns / window.handled.max(1) as f64);
        }
        if let Some((agent, dirs)) = agent_guard {
            agent.stop()?;
            drop(dirs);
        }
        rows.push(E2eRow {
            filter,
            offered_pps: Summary::of(&offered),
            handled_pps: Summary::of(&handled),
            cpu_ns: Summary::of(&cpu),
        });
    }
    Ok(rows)
}

fn install(
    filter: Filter,
    testbed: &Testbed,
    flagged: &[Ipv4Addr],
    list: &Path,
    work: &Path,
    agent: &Path,
) -> Result<Option<(Agent, AgentDirs)>> {
    let receiver = testbed.receiver();
    let addresses: Vec<String> = flagged.iter().map(ToString::to_string).collect();
    match filter {
        Filter::None => Ok(None),
        Filter::Nftables => {
            let path = work.join("e2e.nft");
            peers::write_nft_file(&path, &addresses, &[], false)?;
            netns_sh(&receiver.netns, &format!("nft -f {}", path.display()))?;
            Ok(None)
        }
        Filter::IptablesIpset => {
            let path = work.join("e2e.ipset");
            peers::write_ipset_file(&path, &addresses, &[], false)?;
            netns_sh(
                &receiver.netns,
                &format!("ipset restore -f {}\n{IPTABLES_SCRIPT}", path.display()),
            )?;
            Ok(None)
        }
        Filter::Intelwall => {
            let dirs = AgentDirs::new()?;
            let config = subject::write_list_config(work, list)?;
            let config = subject::for_agent(&config, &receiver.interface, &dirs)?;
            let agent = Agent::start(agent, &receiver.netns, &receiver.interface, &config)?;
            Ok(Some((agent, dirs)))
        }
    }
}

fn pin(pid: i32, cpu: usize) -> Result<()> {
    // SAFETY: cpu_set_t is plain data, valid when zeroed; CPU_SET writes
    // inside it and sched_setaffinity reads it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(pid, size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("sched_setaffinity failed");
    }
    Ok(())
}

/// Reads how many packets a filter dropped so far.
enum DropCounter {
    /// rx_packets of the receiving interface, for no filter.
    Interface {
        netns: String,
        interface: String,
    },
    Nftables {
        netns: String,
    },
    Iptables {
        netns: String,
    },
    /// The agent's per-CPU `dropped` path counters, one per interface
    /// slot: the configured interface counts in its own slot.
    Intelwall {
        map: OwnedFd,
        value_size: usize,
        slots: u32,
    },
}

impl DropCounter {
    fn new(filter: Filter, netns: &str, interface: &str) -> Result<DropCounter> {
        let netns = netns.to_owned();
        Ok(match filter {
            Filter::None => DropCounter::Interface {
                netns,
                interface: interface.to_owned(),
            },
            Filter::Nftables => DropCounter::Nftables { netns },
            Filter::IptablesIpset => DropCounter::Iptables { netns },
            Filter::Intelwall => {
                let program = peers::attached_program_id(&netns, interface)?;
                let maps = peers::program_maps(program, Some("intelwall"))?;
                // bpftool shows map names cut to 15 bytes, as the kernel keeps them.
                let name = &map_name::PATH_COUNTERS[..map_name::PATH_COUNTERS.len().min(15)];
                let map = maps
                    .iter()
                    .find(|map| map.name == name)
                    .context("intelwall's program has no path counter map")?;
                DropCounter::Intelwall {
                    map: bpf::map_by_id(map.id)?,
                    value_size: map.value_size.div_ceil(8) * 8 * bpf::possible_cpus()?,
                    slots: map.max_entries as u32 / PATH_COUNTER_SLOTS,
                }
            }
        })
    }

    fn read(&self) -> Result<u64> {
        match self {
            DropCounter::Interface { netns, interface } => {
                let text = netns_sh(
                    netns,
                    &format!("cat /sys/class/net/{interface}/statistics/rx_packets"),
                )?;
                text.trim().parse().context("rx_packets is not a number")
            }
            DropCounter::Nftables { netns } => {
                let text = netns_sh(netns, "nft list chain inet intelwall_bench prerouting")?;
                Ok(sum_after(&text, "packets"))
            }
            DropCounter::Iptables { netns } => {
                let text = netns_sh(
                    netns,
                    "iptables -t raw -L PREROUTING -v -x -n; ip6tables -t raw -L PREROUTING -v -x -n",
                )?;
                // Rule lines start with the packet count; headers do not.
                Ok(text
                    .lines()
                    .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
                    .sum())
            }
            DropCounter::Intelwall {
                map,
                value_size,
                slots,
            } => {
                let cpus = bpf::possible_cpus()?;
                let mut value = vec![0u8; *value_size];
                let mut dropped = 0;
                for slot in 0..*slots {
                    let key =
                        (slot * PATH_COUNTER_SLOTS + PathCounter::Dropped as u32).to_ne_bytes();
                    bpf::lookup(map.as_fd(), &key, &mut value)?;
                    // Each CPU's part starts with its packet count.
                    dropped += value
                        .chunks(value_size / cpus)
                        .map(|part| u64::from_ne_bytes(part[..8].try_into().expect("8 bytes")))
                        .sum::<u64>();
                }
                Ok(dropped)
            }
        }
    }
}

/// Sums the numbers that follow `word` in `text`, as in nft's
/// `counter packets N bytes M`.
fn sum_after(text: &str, word: &str) -> u64 {
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|pair| pair[0] == word)
        .filter_map(|pair| pair[1].parse::<u64>().ok())
        .sum()
}

struct Window {
    elapsed: Duration,
    sent: u64,
    handled: u64,
    busy_ticks: u64,
}

/// Floods for `length` after a warm-up, reading the counters at the window's
/// edges while the sender keeps running.
fn run_window(
    testbed: &Testbed,
    frames: &[Vec<u8>],
    counter: &DropCounter,
    length: Duration,
) -> Result<Window> {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = spawn_sender(
        testbed,
        frames.to_vec(),
        Arc::clone(&stop),
        Arc::clone(&sent),
    )?;
    let result = (|| {
        thread::sleep(WARM_UP);
        // Each edge reads the slow filter counter first and then the fast
        // figures, so that all of them cover nearly the same interval.
        let handled_before = counter.read()?;
        let busy_before = system::cpu_softirq_ticks(SENDER_CPU)?;
        let sent_before = sent.load(Ordering::Relaxed);
        let started = Instant::now();
        thread::sleep(length);
        let handled_after = counter.read()?;
        let sent_after = sent.load(Ordering::Relaxed);
        let busy_after = system::cpu_softirq_ticks(SENDER_CPU)?;
        let elapsed = started.elapsed();
        Ok(Window {
            elapsed,
            sent: sent_after - sent_before,
            handled: handled_after.saturating_sub(handled_before),
            busy_ticks: busy_after - busy_before,
        })
    })();
    stop.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow!("sender thread panicked"))??;
    result
}

/// Starts the sender in the testbed's sender namespace, pinned to
/// [`SENDER_CPU`]: an AF_PACKET socket that bypasses the qdisc and sends
/// [`BATCH`] frames a sendmmsg call, counting frames the kernel accepted.
fn spawn_sender(
    testbed: &Testbed,
    frames: Vec<Vec<u8>>,
    stop: Arc<AtomicBool>,
    sent: Arc<std::sync::atomic::AtomicU64>,
) -> Result<thread::JoinHandle<Result<()>>> {
    let sender = testbed.sender();
    let path = format!("/run/netns/{}", sender.netns);
    let netns = File::open(&path).with_context(|| format!("cannot open {path}"))?;
    let interface = sender.interface.clone();
    Ok(thread::spawn(move || {
        // SAFETY: the descriptor is an open network namespace, and setns
        // changes only this thread's namespace.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns into the sender namespace");
        }
        // SAFETY: gettid has no preconditions.
        pin(unsafe { libc::gettid() }, SENDER_CPU)?;
        let socket = packet_socket(&interface)?;
        send_until(&socket, &frames, &stop, &sent)
    }))
}

fn packet_socket(interface: &str) -> Result<OwnedFd> {
    // SAFETY: plain socket(2) call.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("cannot open an AF_PACKET socket");
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };

    let name = std::ffi::CString::new(interface)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        bail!("interface {interface} not found in the sender namespace");
    }

    // SAFETY: sockaddr_ll is plain data, valid when zeroed.
    let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_ifindex = index as i32;
    // SAFETY: `address` is a valid sockaddr_ll and the length matches it.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const address).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot bind the sender socket");
    }

    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int and the length matches it. Failure only
    // makes the sender slower, so it is ignored.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(socket)
}

fn send_until(
    socket: &OwnedFd,
    frames: &[Vec<u8>],
    stop: &AtomicBool,
    sent: &std::sync::atomic::AtomicU64,
) -> Result<()> {
    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|frame| libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data, valid when zeroed.
    let mut messages: Vec<libc::mmsghdr> = (0..frames.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (message, iovec) in messages.iter_mut().zip(iovecs.iter_mut()) {
        message.msg_hdr.msg_iov = iovec;
        message.msg_hdr.msg_iovlen = 1;
    }
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        let count = BATCH.min(messages.len() - next);
        // SAFETY: the messages point at iovecs and frames that outlive the
        // call; `count` stays inside `messages`.
        let rc = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                messages[next..].as_mut_ptr(),
                count as u32,
                0,
            )
        };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => thread::yield_now(),
                _ => return Err(error).context("sendmmsg failed"),
            }
            continue;
        }
        sent.fetch_add(rc as u64, Ordering::Relaxed);
        next = (next + rc as usize) % messages.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::sum_after;

    #[test]
    fn nft_counters_summed() {
        let text = "ip saddr @flagged4 counter packets 12 bytes 720 drop\n\
                    ip6 saddr @flagged6 counter packets 3 bytes 180 drop";
        assert_eq!(sum_after(text, "packets"), 15);
    }
}
