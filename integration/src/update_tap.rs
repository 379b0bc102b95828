//! When BGP UPDATEs reach a namespace: a packet socket inside it reads every TCP segment to or
//! from port 179 that arrives there and reports, with the time it was read, the IPv4 prefixes
//! each UPDATE announces. The pod-to-route benchmark uses it to split the path between the
//! sending node and the receiving node's kernel.
//!
//! It reads whole messages within one segment only (a benchmark's single-prefix UPDATEs always
//! are) and assumes no ADD-PATH identifiers on IPv4 unicast, as between lab nodes.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};

use crate::netns::Netns;

const ETH_P_IP: u16 = 0x0800;
const BGP_PORT: u16 = 179;
const UPDATE: u8 = 2;

/// One UPDATE's announced IPv4 prefixes, with the time the segment was read.
pub type Announced = (Instant, Vec<(Ipv4Addr, u8)>);

pub struct UpdateTap {
    pub updates: mpsc::Receiver<Announced>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UpdateTap {
    /// Starts reading in `ns`; returns once the socket is open, so nothing sent afterwards is
    /// missed.
    pub fn start(ns: &Netns) -> Result<UpdateTap> {
        let ns_file = std::fs::File::open(ns.path())?;
        let (tx, updates) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel::<Result<()>>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let socket = match open_in(&ns_file) {
                Ok(s) => {
                    let _ = ready_tx.send(Ok(()));
                    s
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut buf = vec![0u8; 65536];
            while !stopped.load(Ordering::Relaxed) {
                let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
                // SAFETY: buf and from outlive the call; the lengths passed are theirs.
                let n = unsafe {
                    libc::recvfrom(
                        socket.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                        (&mut from as *mut libc::sockaddr_ll).cast(),
                        &mut len,
                    )
                };
                let at = Instant::now();
                // Timeouts (to look at the stop flag) and errors alike: read again.
                if n <= 0 || from.sll_pkttype == libc::PACKET_OUTGOING {
                    continue;
                }
                let announced = announced_prefixes(&buf[..n as usize]);
                if !announced.is_empty() && tx.send((at, announced)).is_err() {
                    return;
                }
            }
        });
        ready.recv().context("the tap thread ended")??;
        Ok(UpdateTap { updates, stop, thread: Some(thread) })
    }
}

impl Drop for UpdateTap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn open_in(ns_file: &std::fs::File) -> Result<OwnedFd> {
    // SAFETY: setns on this thread only, with a namespace fd we hold open.
    if unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        anyhow::bail!("setns: {}", std::io::Error::last_os_error());
    }
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, i32::from(ETH_P_IP.to_be())) };
    if fd < 0 {
        anyhow::bail!("packet socket: {}", std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is not owned elsewhere.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval { tv_sec: 0, tv_usec: Duration::from_millis(100).as_micros() as libc::suseconds_t };
    // SAFETY: the option value is a timeval of the size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&timeout as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        anyhow::bail!("SO_RCVTIMEO: {}", std::io::Error::last_os_error());
    }
    Ok(socket)
}

/// The IPv4 prefixes announced by the UPDATEs wholly inside one IPv4 packet.
fn announced_prefixes(packet: &[u8]) -> Vec<(Ipv4Addr, u8)> {
    let mut out = Vec::new();
    let Some(payload) = bgp_payload(packet) else { return out };
    let mut rest = payload;
    while rest.len() >= 19 && rest[..16].iter().all(|b| *b == 0xff) {
        let len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
        if len < 19 || len > rest.len() {
            break;
        }
        if rest[18] == UPDATE {
            nlri(&rest[19..len], &mut out);
        }
        rest = &rest[len..];
    }
    out
}

fn bgp_payload(packet: &[u8]) -> Option<&[u8]> {
    let ihl = usize::from(*packet.first()? & 0x0f) * 4;
    if packet.first()? >> 4 != 4 || *packet.get(9)? != libc::IPPROTO_TCP as u8 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?])).min(packet.len());
    let tcp = packet.get(ihl..total)?;
    let (src, dst) = (u16::from_be_bytes([*tcp.first()?, *tcp.get(1)?]), u16::from_be_bytes([*tcp.get(2)?, *tcp.get(3)?]));
    if src != BGP_PORT && dst != BGP_PORT {
        return None;
    }
    let offset = usize::from(tcp.get(12)? >> 4) * 4;
    tcp.get(offset..)
}

fn nlri(body: &[u8], out: &mut Vec<(Ipv4Addr, u8)>) {
    let Some(withdrawn) = body.get(..2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else { return };
    let Some(attrs_at) = 2usize.checked_add(withdrawn) else { return };
    let Some(attrs) = body.get(attrs_at..attrs_at + 2).map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))) else { return };
    let Some(mut rest) = body.get(attrs_at + 2 + attrs..) else { return };
    while let Some((&bits, tail)) = rest.split_first() {
        let bytes = usize::from(bits).div_ceil(8);
        if bits > 32 || tail.len() < bytes {
            return;
        }
        let mut octets = [0u8; 4];
        octets[..bytes].copy_from_slice(&tail[..bytes]);
        out.push((Ipv4Addr::from(octets), bits));
        rest = &tail[bytes..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet_with(bgp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2];
        let tcp = [0xc0, 0x01, 0, 179, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x18, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&tcp);
        p.extend_from_slice(bgp);
        let total = p.len() as u16;
        p[2..4].copy_from_slice(&total.to_be_bytes());
        p
    }

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![0xff; 16];
        m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
        m.push(kind);
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn reads_the_announced_prefixes_of_every_update_in_a_segment() {
        // No withdrawals, 3 bytes of (opaque) attributes, then 198.18.5.7/32 and 198.19.0.0/26.
        let update = message(UPDATE, &[0, 0, 0, 3, 0x40, 1, 0, 32, 198, 18, 5, 7, 26, 198, 19, 0, 0]);
        let keepalive = message(4, &[]);
        let withdrawal = message(UPDATE, &[0, 5, 32, 198, 18, 9, 9, 0, 0]);
        let bgp = [keepalive, update, withdrawal].concat();
        assert_eq!(
            announced_prefixes(&packet_with(&bgp)),
            vec![(Ipv4Addr::new(198, 18, 5, 7), 32), (Ipv4Addr::new(198, 19, 0, 0), 26)],
            "withdrawn prefixes and keepalives are not announcements"
        );
    }

    #[test]
    fn ignores_other_traffic_and_cut_messages() {
        let mut other = packet_with(&message(UPDATE, &[0, 0, 0, 0, 32, 198, 18, 5, 7]));
        other[22..24].copy_from_slice(&80u16.to_be_bytes());
        assert!(announced_prefixes(&other).is_empty(), "not port 179");
        let update = message(UPDATE, &[0, 0, 0, 0, 32, 198, 18, 5, 7]);
        assert!(announced_prefixes(&packet_with(&update[..update.len() - 2])).is_empty(), "a message cut by the segment");
    }
}
