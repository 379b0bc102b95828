//! The UDP sockets of RFC 5881: control packets arrive on port 3784 and are accepted only with
//! TTL (hop limit) 255, which no router can forge from elsewhere (GTSM, section 5); they leave
//! with TTL 255 from a source port in 49152-65535 (section 4). The TTL of a received packet
//! comes from an `IP_TTL` / `IPV6_HOPLIMIT` control message, so the check is ours and explicit.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use tokio::io::Interest;
use tokio::net::UdpSocket;

/// RFC 5881 section 4: the destination port of single-hop control packets.
pub const CONTROL_PORT: u16 = 3784;
const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;

fn setsockopt(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value, passed with its size, on a descriptor we own.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), level, name, (&value as *const libc::c_int).cast(), size_of::<libc::c_int>() as libc::socklen_t)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); the descriptor is owned by the UdpSocket built from it below.
    let fd = unsafe { libc::socket(domain, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let sock = unsafe { <std::net::UdpSocket as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if addr.is_ipv6() {
        // The IPv4 socket takes IPv4; mapped addresses here would hide the real TTL option.
        setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 1)?;
    }
    let (storage, len) = sockaddr(addr);
    // SAFETY: storage holds a sockaddr_in/_in6 of length len.
    if unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (family checked).
            let sin: libc::sockaddr_in = unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))), u16::from_be(sin.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (family checked).
            let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            let ip = Ipv6Addr::from(sin6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(ip, u16::from_be(sin6.sin6_port), 0, sin6.sin6_scope_id)))
        }
        _ => None,
    }
}

/// The listening socket of one address family on port 3784.
pub struct Receiver {
    sock: UdpSocket,
}

/// One datagram as it arrived.
pub struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    /// `None` when the kernel gave no TTL (it always does once asked; treated as not 255).
    pub ttl: Option<u8>,
}

impl Receiver {
    pub fn bind(v6: bool, port: u16) -> io::Result<Receiver> {
        let any = if v6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        let sock = bind(SocketAddr::new(any, port))?;
        if v6 {
            setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, 1)?;
        } else {
            setsockopt(&sock, libc::IPPROTO_IP, libc::IP_RECVTTL, 1)?;
        }
        Ok(Receiver { sock: UdpSocket::from_std(sock)? })
    }

    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Datagram> {
        self.sock.async_io(Interest::READABLE, || recv_with_ttl(&self.sock, buf)).await
    }
}

fn recv_with_ttl(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    // SAFETY: zeroed sockaddr_storage is valid; the kernel fills at most msg_namelen of it.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // u64s keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 16];
    // SAFETY: all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { MaybeUninit::zeroed().assume_init() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 16]>() as _;
    // SAFETY: msg points at live buffers of the stated sizes.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let from = from_sockaddr(&name).ok_or_else(|| io::Error::other("datagram without a source address"))?;
    let mut ttl = None;
    // SAFETY: the CMSG macros walk the control buffer the kernel filled, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let (level, kind) = ((*cmsg).cmsg_level, (*cmsg).cmsg_type);
            if (level == libc::IPPROTO_IP && kind == libc::IP_TTL) || (level == libc::IPPROTO_IPV6 && kind == libc::IPV6_HOPLIMIT) {
                let value: libc::c_int = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                ttl = u8::try_from(value).ok();
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Datagram { len: n as usize, from, ttl })
}

/// A socket that sends the control packets of every session from one local address. A plain
/// non-blocking socket: sending never waits, and tokio's readiness tracking would refuse the
/// first packet of a socket it has not yet seen writable.
pub struct Sender {
    sock: std::net::UdpSocket,
}

impl Sender {
    /// Binds `local` (or the family's unspecified address) to a free port in 49152-65535,
    /// starting at a random one, with TTL 255 on everything sent.
    pub fn bind(local: IpAddr) -> io::Result<Sender> {
        let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
        let start = (std::collections::hash_map::RandomState::new().build_hasher().finish() % u64::from(span)) as u32;
        let mut last = io::Error::other("no free source port in 49152-65535");
        for i in 0..span {
            let port = SOURCE_PORTS.start() + ((start + i) % span) as u16;
            match bind(SocketAddr::new(local, port)) {
                Ok(sock) => {
                    if local.is_ipv6() {
                        setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, 255)?;
                    } else {
                        setsockopt(&sock, libc::IPPROTO_IP, libc::IP_TTL, 255)?;
                    }
                    return Ok(Sender { sock });
                }
                Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    pub fn local_port(&self) -> u16 {
        self.sock.local_addr().map_or(0, |a| a.port())
    }

    /// Sends without waiting: a full socket buffer drops the packet, as a congested link would;
    /// the next periodic packet follows anyway.
    pub fn send(&self, packet: &[u8], to: SocketAddr) -> io::Result<()> {
        self.sock.send_to(packet, to).map(|_| ())
    }
}
