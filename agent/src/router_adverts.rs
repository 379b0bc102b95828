//! Router Advertisements on the links of link-local BGP peers. An unnumbered router (FRR's
//! `neighbor IF interface`, Cumulus, SONiC) learns who is on the other end of a link from the
//! RAs received there, and accepts a BGP connection only from an address it learned so; FRR
//! itself sends them for the same reason. Ours carry router lifetime 0 and no options: we
//! announce no default route and no prefix, so nothing on the link starts using us as a
//! router (RFC 4861 4.2, 6.3.4).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Between advertisements on a link once it is known (FRR's interval for unnumbered peers).
pub const INTERVAL: Duration = Duration::from_secs(10);
/// A new link gets its first few at this spacing, so a peer (or our own link-local address,
/// still tentative during duplicate address detection) does not wait a whole interval.
const INITIAL_INTERVAL: Duration = Duration::from_secs(1);
/// RFC 4861 10: MAX_INITIAL_RTR_ADVERTISEMENTS.
const INITIAL_COUNT: u32 = 3;

/// The ICMPv6 Router Advertisement we send (RFC 4861 4.2); the kernel fills in the checksum.
pub fn advertisement() -> [u8; 16] {
    let mut ra = [0u8; 16];
    ra[0] = 134; // type: Router Advertisement
                 // Code 0, checksum by the kernel, hop limit and flags unspecified, router lifetime 0
                 // (not a default router), reachable and retransmit times unspecified: all zero.
    ra
}

/// The task that sends them; [`RouterAdverts::set`] names the links.
#[derive(Clone)]
pub struct RouterAdverts {
    links: mpsc::Sender<BTreeSet<String>>,
}

impl RouterAdverts {
    pub fn spawn() -> RouterAdverts {
        let (links, rx) = mpsc::channel(4);
        tokio::spawn(run(rx));
        RouterAdverts { links }
    }

    /// Advertises on exactly these interfaces from now on.
    pub async fn set(&self, interfaces: BTreeSet<String>) {
        if self.links.send(interfaces).await.is_err() {
            tracing::warn!("router advertisement task has exited");
        }
    }
}

struct Link {
    due: Instant,
    initial_left: u32,
}

async fn run(mut rx: mpsc::Receiver<BTreeSet<String>>) {
    let mut links: BTreeMap<String, Link> = BTreeMap::new();
    let mut socket: Option<OwnedFd> = None;
    loop {
        let next = links.values().map(|l| l.due).min();
        tokio::select! {
            set = rx.recv() => {
                let Some(set) = set else { return };
                links.retain(|name, _| set.contains(name));
                for name in set {
                    links.entry(name).or_insert(Link { due: Instant::now(), initial_left: INITIAL_COUNT });
                }
            }
            () = gingham_bgp::session::sleep_until(next) => {
                let now = Instant::now();
                for (name, link) in links.iter_mut().filter(|(_, l)| l.due <= now) {
                    if let Err(e) = send(&mut socket, name) {
                        tracing::debug!(interface = %name, error = %e, "router advertisement not sent; trying again");
                    }
                    link.initial_left = link.initial_left.saturating_sub(1);
                    link.due = now + if link.initial_left > 0 { INITIAL_INTERVAL } else { INTERVAL };
                }
            }
        }
    }
}

fn send(socket: &mut Option<OwnedFd>, interface: &str) -> io::Result<()> {
    let index = gingham_bgp::session::interface_index(interface)?;
    let fd = match socket {
        Some(fd) => fd,
        None => socket.insert(open()?),
    };
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    to.sin6_addr.s6_addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets();
    // The all-nodes group of that link: the scope picks the interface (and the source, its
    // link-local address).
    to.sin6_scope_id = index;
    let ra = advertisement();
    // SAFETY: `ra` and `to` are live for the call and their lengths are passed with them.
    let rc = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            ra.as_ptr().cast(),
            ra.len(),
            0,
            (&to as *const libc::sockaddr_in6).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A raw ICMPv6 socket sending with hop limit 255, which receivers require of neighbour
/// discovery (RFC 4861 6.1.2).
fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the descriptor is owned by the OwnedFd built from it.
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, libc::IPPROTO_ICMPV6) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let hops: libc::c_int = 255;
    for option in [libc::IPV6_MULTICAST_HOPS, libc::IPV6_UNICAST_HOPS] {
        // SAFETY: `hops` is a live c_int for the duration of the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IPV6,
                option,
                (&hops as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertisement_claims_no_default_route() {
        let ra = advertisement();
        assert_eq!(ra[0], 134, "Router Advertisement");
        assert_eq!(u16::from_be_bytes([ra[6], ra[7]]), 0, "router lifetime 0: not a default router");
        assert_eq!(ra[5] & 0xc0, 0, "no managed/other configuration flags");
        assert_eq!(ra.len(), 16, "no options: no prefix is announced");
    }
}
