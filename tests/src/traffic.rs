//! Sending frames into a testbed and counting what arrives.
//!
//! Both sides use AF_PACKET sockets bound to one veth end. A socket belongs
//! to the network namespace of the thread that creates it, so each side runs
//! in a dedicated thread that first joins the namespace with `setns`. The
//! receiver gets a frame only if the XDP program on its interface passed it,
//! because XDP runs before the kernel hands frames to packet sockets.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs::File;
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::packet::ip_source;

/// Frames sent back to back before the sender pauses. A veth end queues at
/// most a few hundred frames for its peer and drops the rest, so a burst
/// must stay well below that for every clean frame to arrive.
const BURST: usize = 32;
/// Pause after each burst, which lets the receiving side drain its queue.
const BURST_PAUSE: Duration = Duration::from_millis(2);
/// Attempts to send one frame while the kernel reports no buffer space.
const SEND_ATTEMPTS: u32 = 1000;

/// Receive timeout of the receiver socket; bounds how long the receiver
/// takes to notice a stop request.
const RECEIVE_TIMEOUT: Duration = Duration::from_millis(50);
/// Time without any frame after which a stopped receiver returns.
pub const QUIET_PERIOD: Duration = Duration::from_millis(500);
/// Receive buffer requested for the receiver socket, in bytes.
const RECEIVE_BUFFER: libc::c_int = 8 << 20;

/// Frames that arrived, per IP source address.
pub type Counts = BTreeMap<IpAddr, u64>;

/// Sends `frames` in order from `interface` in namespace `netns`, pacing
/// bursts so that the veth queue does not overflow.
pub fn send_frames(netns: &str, interface: &str, frames: Vec<Vec<u8>>) -> Result<()> {
    let interface = interface.to_owned();
    spawn_in_netns(netns, move || {
        let socket = PacketSocket::bind(&interface, 0)?;
        socket.bypass_qdisc();
        for burst in frames.chunks(BURST) {
            for frame in burst {
                socket.send(frame)?;
            }
            thread::sleep(BURST_PAUSE);
        }
        Ok(())
    })?
    .join()
    .map_err(|_| anyhow!("sender thread panicked"))?
}

/// Counts frames arriving on one interface until stopped.
pub struct Receiver {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Counts>>,
}

impl Receiver {
    /// Starts counting on `interface` in namespace `netns`. Returns once the
    /// socket is bound, so frames sent afterwards are all seen.
    pub fn start(netns: &str, interface: &str) -> Result<Receiver> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let interface = interface.to_owned();
        let stop_flag = Arc::clone(&stop);
        let thread = spawn_in_netns(netns, move || {
            let socket = PacketSocket::bind(&interface, libc::ETH_P_ALL as u16);
            let socket = match socket {
                Ok(socket) => {
                    let _ = ready_tx.send(());
                    socket
                }
                Err(error) => return Err(error),
            };
            socket.set_receive_options()?;
            count_until_quiet(&socket, &stop_flag)
        })?;
        if ready_rx.recv().is_err() {
            // The thread ended before binding; its result carries the reason.
            return match thread.join() {
                Ok(Err(error)) => Err(error),
                Ok(Ok(_)) => bail!("receiver ended before binding"),
                Err(_) => bail!("receiver thread panicked"),
            };
        }
        Ok(Receiver { stop, thread })
    }

    /// Stops counting once no frame has arrived for [`QUIET_PERIOD`], and
    /// returns the counts.
    pub fn finish(self) -> Result<Counts> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow!("receiver thread panicked"))?
    }
}

/// Keeps every frame arriving on one interface until stopped, for tests that
/// look inside what arrived (DSCP, checksums) rather than count it.
pub struct Capture {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<Vec<Vec<u8>>>>,
}

impl Capture {
    /// Starts capturing on `interface` in namespace `netns`. Returns once the
    /// socket is bound, so frames sent afterwards are all kept.
    pub fn start(netns: &str, interface: &str) -> Result<Capture> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let interface = interface.to_owned();
        let stop_flag = Arc::clone(&stop);
        let thread = spawn_in_netns(netns, move || {
            let socket = PacketSocket::bind(&interface, libc::ETH_P_ALL as u16)?;
            let _ = ready_tx.send(());
            socket.set_receive_options()?;
            keep_until_quiet(&socket, &stop_flag)
        })?;
        if ready_rx.recv().is_err() {
            return match thread.join() {
                Ok(Err(error)) => Err(error),
                Ok(Ok(_)) => bail!("capture ended before binding"),
                Err(_) => bail!("capture thread panicked"),
            };
        }
        Ok(Capture { stop, thread })
    }

    /// Stops once no frame has arrived for [`QUIET_PERIOD`], and returns the
    /// frames in arrival order.
    pub fn finish(self) -> Result<Vec<Vec<u8>>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow!("capture thread panicked"))?
    }
}

fn keep_until_quiet(socket: &PacketSocket, stop: &AtomicBool) -> Result<Vec<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut buffer = vec![0u8; 65536];
    let mut last_frame = Instant::now();
    loop {
        match socket.receive(&mut buffer)? {
            Some(len) => {
                last_frame = Instant::now();
                frames.push(buffer[..len].to_vec());
            }
            None => {
                if stop.load(Ordering::Relaxed) && last_frame.elapsed() >= QUIET_PERIOD {
                    return Ok(frames);
                }
            }
        }
    }
}

fn count_until_quiet(socket: &PacketSocket, stop: &AtomicBool) -> Result<Counts> {
    let mut counts = Counts::new();
    let mut buffer = vec![0u8; 65536];
    let mut last_frame = Instant::now();
    loop {
        match socket.receive(&mut buffer)? {
            Some(len) => {
                last_frame = Instant::now();
                if let Some(source) = ip_source(&buffer[..len]) {
                    *counts.entry(source).or_default() += 1;
                }
            }
            None => {
                if stop.load(Ordering::Relaxed) && last_frame.elapsed() >= QUIET_PERIOD {
                    return Ok(counts);
                }
            }
        }
    }
}

/// Expected arrivals from one source, for [`check_arrivals`].
#[derive(Clone, Debug)]
pub struct Expectation {
    pub source: IpAddr,
    /// Why this source is expected to arrive or not, shown in the report.
    pub label: String,
    pub sent: u64,
    pub expected: u64,
}

/// Compares arrivals with expectations. Returns `Err` with a table of every
/// source (sent, expected, arrived, and a marker on each wrong row) when any
/// source's count differs.
pub fn check_arrivals(expectations: &[Expectation], arrived: &Counts) -> Result<(), String> {
    let report = arrival_table(expectations, arrived);
    let wrong = expectations
        .iter()
        .filter(|e| arrived.get(&e.source).copied().unwrap_or(0) != e.expected)
        .count();
    if wrong == 0 {
        Ok(())
    } else {
        Err(format!(
            "{wrong} of {} sources got a wrong number of frames through:\n{report}",
            expectations.len()
        ))
    }
}

/// Formats one row per source: source, label, sent, expected, arrived.
pub fn arrival_table(expectations: &[Expectation], arrived: &Counts) -> String {
    let mut table = format!(
        "{:<28} {:>6} {:>9} {:>8}  {}\n",
        "source", "sent", "expected", "arrived", "why"
    );
    for expectation in expectations {
        let count = arrived.get(&expectation.source).copied().unwrap_or(0);
        let marker = if count == expectation.expected {
            ""
        } else {
            "  <-- wrong"
        };
        let _ = writeln!(
            table,
            "{:<28} {:>6} {:>9} {:>8}  {}{marker}",
            expectation.source.to_string(),
            expectation.sent,
            expectation.expected,
            count,
            expectation.label
        );
    }
    table
}

/// Runs `work` in a new thread that has joined namespace `netns`.
fn spawn_in_netns<T: Send + 'static>(
    netns: &str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<JoinHandle<Result<T>>> {
    let path = format!("/run/netns/{netns}");
    let handle = File::open(&path).with_context(|| format!("cannot open namespace {path}"))?;
    let thread = thread::Builder::new()
        .name(format!("netns {netns}"))
        .spawn(move || {
            // SAFETY: the descriptor is an open network namespace file, and
            // setns changes only this thread's namespace.
            let rc = unsafe { libc::setns(handle.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                return Err(io::Error::last_os_error())
                    .with_context(|| format!("setns into {path} failed"));
            }
            work()
        })
        .context("cannot spawn a thread")?;
    Ok(thread)
}

/// An AF_PACKET raw socket bound to one interface.
struct PacketSocket {
    fd: OwnedFd,
    interface: String,
}

impl PacketSocket {
    /// Opens a socket bound to `interface` that receives frames of
    /// `protocol` (an ETH_P_* value; 0 receives nothing).
    fn bind(interface: &str, protocol: u16) -> Result<PacketSocket> {
        // SAFETY: plain socket(2) call; the result is checked below.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error()).context("cannot open an AF_PACKET socket");
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let index = interface_index(interface)?;

        // The socket is opened with protocol 0 and given its protocol only
        // here, so that it never queues frames from other interfaces.
        // SAFETY: sockaddr_ll is plain data, valid when zeroed.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = protocol.to_be();
        address.sll_ifindex = index;
        // SAFETY: `address` is a valid sockaddr_ll and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const address).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("cannot bind an AF_PACKET socket to {interface}"));
        }
        Ok(PacketSocket {
            fd,
            interface: interface.to_owned(),
        })
    }

    /// Sends frames straight to the driver, skipping the qdisc. Best effort:
    /// the sender works without it, only slower.
    fn bypass_qdisc(&self) {
        let _ = set_option(
            self.fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            1,
        );
    }

    fn set_receive_options(&self) -> Result<()> {
        let fd = self.fd.as_raw_fd();
        // SO_RCVBUFFORCE exceeds net.core.rmem_max but needs CAP_NET_ADMIN;
        // SO_RCVBUF is the fallback, capped by rmem_max.
        if set_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RECEIVE_BUFFER).is_err() {
            set_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, RECEIVE_BUFFER)
                .context("cannot set the receive buffer")?;
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: RECEIVE_TIMEOUT.as_micros() as libc::suseconds_t,
        };
        // SAFETY: `timeout` is a valid timeval and the length matches it.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error()).context("cannot set the receive timeout");
        }
        Ok(())
    }

    /// Sends one frame, retrying while the kernel is out of buffer space.
    fn send(&self, frame: &[u8]) -> Result<()> {
        for _ in 0..SEND_ATTEMPTS {
            // SAFETY: the pointer and length describe `frame`.
            let sent =
                unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
            if sent >= 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            match error.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN) => thread::sleep(Duration::from_millis(1)),
                _ => {
                    return Err(error).with_context(|| {
                        format!(
                            "cannot send a {}-byte frame on {}",
                            frame.len(),
                            self.interface
                        )
                    });
                }
            }
        }
        bail!(
            "no buffer space to send on {} after {SEND_ATTEMPTS} attempts",
            self.interface
        )
    }

    /// Receives one incoming frame into `buffer` and returns its length;
    /// `None` when the receive timeout passes first. Frames this host sends
    /// out of the interface are skipped.
    fn receive(&self, buffer: &mut [u8]) -> Result<Option<usize>> {
        loop {
            // SAFETY: sockaddr_ll is plain data, valid when zeroed.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buffer and address pointers are valid for the lengths given.
            let len = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                    0,
                    (&raw mut from).cast(),
                    &mut from_len,
                )
            };
            if len < 0 {
                let error = io::Error::last_os_error();
                return match error.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => Ok(None),
                    _ => {
                        Err(error).with_context(|| format!("cannot receive on {}", self.interface))
                    }
                };
            }
            if from.sll_pkttype != libc::PACKET_OUTGOING {
                return Ok(Some(len as usize));
            }
        }
    }
}

fn set_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a valid c_int and the length matches it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&raw const value).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn interface_index(interface: &str) -> Result<libc::c_int> {
    let name = CString::new(interface).context("interface name contains a NUL byte")?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("interface {interface} not found"));
    }
    Ok(index as libc::c_int)
}
