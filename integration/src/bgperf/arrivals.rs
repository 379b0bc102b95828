//! When a namespace's kernel came to hold N routes of one protocol and prefix length, read from the kernel's own
//! route announcements (`RTMGRP_IPV4_ROUTE`): the time of the N-th distinct prefix announced is
//! the time the kernel held N, whoever wrote them. Polling a counter or a dump instead adds the
//! poll's interval and cost to the figure (for the agent's metrics, up to a FIB batch of lag).
//!
//! Additions only: a route the kernel removes with its nexthop object is not announced, so
//! removals are timed otherwise.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use gingham_agent::fib::wire;

use super::spawn_in;
use crate::netns::Netns;
use crate::route_count::{Socket, RTMSG, RTM_NEWROUTE};

const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const RTA_DST: u16 = 1;
/// A full table announced faster than it is read must not overflow the socket: 100,000
/// announcements are about 10 MB.
const RECEIVE_BUFFER: libc::c_int = 64 << 20;
/// How often the reader looks whether it should stop.
const TICK: Duration = Duration::from_millis(100);

#[derive(Default)]
struct Seen {
    prefixes: HashSet<u32>,
    /// When the k-th distinct prefix (k = index + 1) was announced.
    times: Vec<Instant>,
    failed: Option<String>,
}

/// Watches one namespace from [`Arrivals::start`] until dropped.
pub struct Arrivals {
    seen: Arc<(Mutex<Seen>, Condvar)>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Arrivals {
    /// Subscribed before it returns: every route of `protocol` and prefix length `len` added
    /// afterwards is seen.
    pub fn start(ns: &Netns, protocol: u8, len: u8) -> Result<Arrivals> {
        let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (s, st) = (seen.clone(), stop.clone());
        let reader = spawn_in(ns, move || {
            let socket = match subscribe() {
                Ok(socket) => socket,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return Err(e);
                }
            };
            let _ = ready_tx.send(Ok(()));
            let result = read(&socket, (protocol, len), &s, &st);
            if let Err(e) = &result {
                s.0.lock().unwrap_or_else(|p| p.into_inner()).failed = Some(format!("{e:#}"));
                s.1.notify_all();
            }
            result
        })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Arrivals { seen, stop, reader: Some(reader) }),
            Ok(Err(e)) => bail!("route announcements: {e}"),
            Err(_) => bail!("the route announcement reader ended before subscribing"),
        }
    }

    /// When the kernel had announced `n` distinct prefixes, waiting up to `limit` for it.
    pub fn nth(&self, n: usize, limit: Duration) -> Result<Instant> {
        let (lock, changed) = &*self.seen;
        let deadline = Instant::now() + limit;
        let mut seen = lock.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(at) = n.checked_sub(1).and_then(|i| seen.times.get(i)) {
                return Ok(*at);
            }
            if let Some(e) = &seen.failed {
                bail!("route announcements: {e}");
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{} of {n} routes announced after {limit:?}", seen.times.len());
            }
            seen = changed.wait_timeout(seen, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn subscribe() -> Result<Socket> {
    let socket = Socket::route()?;
    let fd = socket.0;
    let set = |option: libc::c_int, value: *const libc::c_void, len: usize| {
        // SAFETY: `value` points at `len` readable octets for the call.
        if unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, option, value, len as libc::socklen_t) } != 0 {
            bail!("setsockopt {option}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    };
    // FORCE: above the system's rmem_max (we run as root, as the lab does).
    set(libc::SO_RCVBUFFORCE, (&RECEIVE_BUFFER as *const libc::c_int).cast(), std::mem::size_of::<libc::c_int>())?;
    let tick = libc::timeval { tv_sec: 0, tv_usec: TICK.as_micros() as libc::suseconds_t };
    set(libc::SO_RCVTIMEO, (&tick as *const libc::timeval).cast(), std::mem::size_of::<libc::timeval>())?;
    // SAFETY: an all-zero sockaddr_nl is valid; the family and groups are set below.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = RTMGRP_IPV4_ROUTE;
    // SAFETY: `addr` is a valid sockaddr_nl for the call.
    let r =
        unsafe { libc::bind(fd, (&addr as *const libc::sockaddr_nl).cast(), std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t) };
    if r != 0 {
        bail!("netlink bind: {}", std::io::Error::last_os_error());
    }
    Ok(socket)
}

/// Announcements taken in by one system call: one at a time, the reader's calls and wakeups
/// took most of a core while a table went in, a core the writer it times then lacked.
const BATCH: usize = 256;
/// Room for one announcement (a route with many next hops is still far below it).
const DATAGRAM: usize = 8 << 10;

fn read(socket: &Socket, kind: (u8, u8), seen: &(Mutex<Seen>, Condvar), stop: &AtomicBool) -> Result<()> {
    let mut buf = vec![0u8; BATCH * DATAGRAM];
    let mut iovecs: Vec<libc::iovec> =
        buf.chunks_mut(DATAGRAM).map(|c| libc::iovec { iov_base: c.as_mut_ptr().cast(), iov_len: c.len() }).collect();
    // SAFETY: an all-zero mmsghdr is valid; each is pointed at its own iovec below.
    let mut headers: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (h, iov) in headers.iter_mut().zip(iovecs.iter_mut()) {
        h.msg_hdr.msg_iov = iov;
        h.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // Waits (up to the socket's timeout) for one announcement, then takes what else is queued.
        // SAFETY: every header points at a live iovec over its own part of `buf`.
        let n =
            unsafe { libc::recvmmsg(socket.0, headers.as_mut_ptr(), BATCH as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => continue,
                // Announcements were dropped: the count can no longer be trusted.
                Some(libc::ENOBUFS) => bail!("the kernel dropped route announcements (receive buffer full)"),
                _ => bail!("netlink recvmmsg: {e}"),
            }
        }
        let now = Instant::now();
        let (lock, changed) = seen;
        let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
        let before = s.times.len();
        for (h, datagram) in headers.iter().zip(buf.chunks(DATAGRAM)).take(n as usize) {
            if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                bail!("a route announcement longer than {DATAGRAM} octets");
            }
            for prefix in added(&datagram[..h.msg_len as usize], kind) {
                if s.prefixes.insert(prefix) {
                    s.times.push(now);
                }
            }
        }
        if s.times.len() > before {
            changed.notify_all();
        }
    }
    Ok(())
}

/// The IPv4 prefixes of a (protocol, prefix length) a datagram of announcements adds (or
/// replaces).
fn added(datagram: &[u8], (protocol, len): (u8, u8)) -> impl Iterator<Item = u32> + '_ {
    wire::messages(datagram).filter_map(move |(kind, _, payload)| {
        // struct rtmsg: family, destination length, ..., the protocol at its sixth octet.
        if kind != RTM_NEWROUTE || payload.len() < RTMSG || payload[0] != libc::AF_INET as u8 || payload[1] != len || payload[5] != protocol
        {
            return None;
        }
        let dst = wire::attributes(&payload[RTMSG..]).find(|(k, _)| *k == RTA_DST).and_then(|(_, v)| <[u8; 4]>::try_from(v).ok());
        // A default route carries no destination attribute.
        Some(dst.map_or(0, u32::from_be_bytes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announcement(family: u8, dst_len: u8, protocol: u8, dst: Option<[u8; 4]>) -> Vec<u8> {
        let mut m = Vec::new();
        let start = wire::push_header(&mut m, RTM_NEWROUTE, 0, 0);
        m.extend_from_slice(&[family, dst_len, 0, 0, 254, protocol, 0, 1, 0, 0, 0, 0]);
        if let Some(dst) = dst {
            m.extend_from_slice(&8u16.to_ne_bytes());
            m.extend_from_slice(&RTA_DST.to_ne_bytes());
            m.extend_from_slice(&dst);
        }
        wire::finish(&mut m, start);
        m
    }

    #[test]
    fn only_ipv4_additions_of_the_protocol_and_length_count() {
        let v4 = libc::AF_INET as u8;
        let datagram = [
            announcement(v4, 24, 80, Some([10, 0, 1, 0])),
            announcement(v4, 24, 12, Some([10, 0, 2, 0])),
            announcement(v4, 26, 80, Some([10, 0, 3, 0])),
            announcement(libc::AF_INET6 as u8, 24, 80, None),
            announcement(v4, 24, 80, Some([10, 0, 4, 0])),
        ]
        .concat();
        let got: Vec<_> = added(&datagram, (80, 24)).collect();
        assert_eq!(got, vec![u32::from_be_bytes([10, 0, 1, 0]), u32::from_be_bytes([10, 0, 4, 0])]);
        let default = announcement(v4, 0, 80, None);
        assert_eq!(added(&default, (80, 0)).collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn the_nth_distinct_route_the_kernel_adds_is_timed_once() {
        let ns = Netns::new("arrivals").unwrap();
        let arrivals = Arrivals::start(&ns, 80, 24).unwrap();
        let before = Instant::now();
        for (prefix, protocol) in
            [("198.18.200.0/24", "80"), ("198.18.201.0/24", "80"), ("198.18.202.0/24", "12"), ("198.18.203.0/25", "80")]
        {
            ns.ip(&["route", "add", "blackhole", prefix, "proto", protocol]).unwrap();
        }
        // A route replaced is announced again, and is still one route.
        ns.ip(&["route", "replace", "blackhole", "198.18.200.0/24", "proto", "80", "metric", "0"]).unwrap();
        let second = arrivals.nth(2, Duration::from_secs(10)).unwrap();
        assert!(second >= before);
        let error = arrivals.nth(3, Duration::from_millis(300)).unwrap_err().to_string();
        assert!(error.contains("2 of 3"), "{error}");
        ns.ip(&["route", "add", "blackhole", "198.18.204.0/24", "proto", "80"]).unwrap();
        assert!(arrivals.nth(3, Duration::from_secs(10)).unwrap() >= second);
    }
}
