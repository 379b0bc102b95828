//! Socket options the kernel offers for BGP: TCP MD5 signatures (RFC 2385) and TTL security
//! (RFC 5082). Plain `setsockopt` calls; the structures follow `linux/tcp.h`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

const TCP_MD5SIG: libc::c_int = 14;
const TCP_MD5SIG_MAXKEYLEN: usize = 80;
const IP_MINTTL: libc::c_int = 21;
const IPV6_MINHOPCOUNT: libc::c_int = 73;
const TCP_SAVE_SYN: libc::c_int = 27;
const TCP_SAVED_SYN: libc::c_int = 28;

/// `struct tcp_md5sig` from linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

fn setsockopt<T>(fd: &impl AsRawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` points to a live, properly sized T for the duration of the call.
    let rc =
        unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, (value as *const T).cast(), std::mem::size_of::<T>() as libc::socklen_t) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn sockaddr_storage(addr: IpAddr) -> libc::sockaddr_storage {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(a).to_be();
        }
        IpAddr::V6(a) => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
        }
    }
    ss
}

/// Installs (or with `None`, removes) the RFC 2385 key for `peer` on `fd`. On a listening
/// socket the key applies to connections accepted from that peer.
pub fn set_md5(fd: &impl AsRawFd, peer: IpAddr, key: Option<&str>) -> io::Result<()> {
    let key = key.map(str::as_bytes).unwrap_or_default();
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "TCP MD5 key longer than 80 octets"));
    }
    let mut sig = TcpMd5Sig {
        addr: sockaddr_storage(peer),
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; TCP_MD5SIG_MAXKEYLEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    match setsockopt(fd, libc::IPPROTO_TCP, TCP_MD5SIG, &sig) {
        // Removing a key that was never set is not a failure.
        Err(e) if key.is_empty() && e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    }
}

/// Outgoing TTL (IPv4) or hop limit (IPv6).
pub fn set_ttl(fd: &impl AsRawFd, v6: bool, ttl: u8) -> io::Result<()> {
    let v = libc::c_int::from(ttl);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &v)
    }
}

/// Drops received segments with a smaller TTL (RFC 5082 GTSM).
pub fn set_min_ttl(fd: &impl AsRawFd, v6: bool, min: u8) -> io::Result<()> {
    let v = libc::c_int::from(min);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, IPV6_MINHOPCOUNT, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, IP_MINTTL, &v)
    }
}

/// How a session protects and limits its packets' TTL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlMode {
    /// Send with this TTL; accept anything.
    Send(u8),
    /// RFC 5082: send with 255 and accept only packets that crossed at most `hops` routers
    /// less one, i.e. a minimum TTL of 256 - hops (255 for a directly connected peer, which
    /// is what FRR's `ttl-security hops 1` and BIRD's `ttl security on` expect).
    Gtsm { hops: u8 },
}

impl TtlMode {
    fn min_ttl(self) -> Option<u8> {
        match self {
            TtlMode::Send(_) => None,
            TtlMode::Gtsm { hops } => Some((256 - u16::from(hops.max(1))) as u8),
        }
    }

    fn apply(self, fd: &impl AsRawFd, v6: bool) -> io::Result<()> {
        match self {
            TtlMode::Send(ttl) => set_ttl(fd, v6, ttl),
            TtlMode::Gtsm { hops } => {
                set_ttl(fd, v6, 255)?;
                set_min_ttl(fd, v6, (256 - u16::from(hops.max(1))) as u8)
            }
        }
    }
}

/// Where and how to reach one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transport {
    pub peer: SocketAddr,
    /// Source address for outgoing connections.
    pub local_addr: Option<IpAddr>,
    pub md5_key: Option<String>,
    pub ttl: TtlMode,
    pub connect_timeout: Duration,
    /// The link of an IPv6 link-local peer (its scope): connections go out on it, and only
    /// connections that came in on it are accepted.
    pub interface: Option<String>,
}

impl Transport {
    pub fn new(peer: SocketAddr) -> Transport {
        Transport {
            peer,
            local_addr: None,
            md5_key: None,
            ttl: TtlMode::Send(255),
            connect_timeout: Duration::from_secs(5),
            interface: None,
        }
    }

    /// The interface index of [`Transport::interface`], looked up now: the link may come and
    /// go while the peer is configured.
    pub fn scope_id(&self) -> io::Result<Option<u32>> {
        let Some(name) = &self.interface else { return Ok(None) };
        interface_index(name).map(Some)
    }

    /// Opens the outgoing connection with every option set before the SYN leaves.
    pub async fn connect(&self) -> io::Result<TcpStream> {
        let v6 = self.peer.is_ipv6();
        let sock = if v6 { TcpSocket::new_v6()? } else { TcpSocket::new_v4()? };
        let scope = self.scope_id()?;
        let scoped = |addr: IpAddr, port: u16| match (addr, scope) {
            (IpAddr::V6(a), Some(scope)) if a.is_unicast_link_local() => SocketAddr::V6(std::net::SocketAddrV6::new(a, port, 0, scope)),
            _ => SocketAddr::new(addr, port),
        };
        if let Some(local) = self.local_addr {
            sock.bind(scoped(local, 0))?;
        }
        if let Some(key) = &self.md5_key {
            set_md5(&sock, self.peer.ip(), Some(key))?;
        }
        self.ttl.apply(&sock, v6)?;
        let stream = tokio::time::timeout(self.connect_timeout, sock.connect(scoped(self.peer.ip(), self.peer.port())))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    /// Applies the per-peer options to a connection the listener accepted.
    ///
    /// Errors: for a GTSM peer, a SYN that arrived with too small a TTL. The minimum TTL can
    /// only be set once the connection exists, so the handshake itself is checked through the
    /// SYN the kernel saved (`TCP_SAVED_SYN`); otherwise a far-away sender's first segments
    /// would slip in before the option took effect.
    pub fn adopt(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        if let Some(min) = self.ttl.min_ttl() {
            if let Some(ttl) = saved_syn_ttl(stream)? {
                if ttl < min {
                    return Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("SYN arrived with TTL {ttl}, GTSM requires {min}"),
                    ));
                }
            }
        }
        self.ttl.apply(stream, stream.local_addr()?.is_ipv6())
    }
}

/// The TTL (hop limit) of the SYN that opened an accepted connection, when the listener
/// saved it.
fn saved_syn_ttl(stream: &TcpStream) -> io::Result<Option<u8>> {
    let mut buf = [0u8; 512];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: buf and len describe a writable buffer of `len` bytes.
    let rc = unsafe { libc::getsockopt(stream.as_raw_fd(), libc::IPPROTO_TCP, TCP_SAVED_SYN, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 || len == 0 {
        return Ok(None);
    }
    Ok(match buf[0] >> 4 {
        4 if len > 8 => Some(buf[8]),
        6 if len > 7 => Some(buf[7]),
        _ => None,
    })
}

/// The index of the interface named `name`.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name with a NUL"))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}"))),
        index => Ok(index),
    }
}

/// A listening socket for BGP. IPv6 sockets are IPv6-only so IPv4 peers (and their MD5
/// keys) always live on the IPv4 socket.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let sock = if addr.is_ipv6() { TcpSocket::new_v6()? } else { TcpSocket::new_v4()? };
    sock.set_reuseaddr(true)?;
    if addr.is_ipv6() {
        let on: libc::c_int = 1;
        setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &on)?;
    }
    // SYN-ACKs leave before we know which peer connected; 255 satisfies any GTSM peer and
    // costs nothing for the rest.
    set_ttl(&sock, addr.is_ipv6(), 255)?;
    // Keep each connection's SYN so GTSM can check the TTL it arrived with (see `adopt`).
    let on: libc::c_int = 1;
    setsockopt(&sock, libc::IPPROTO_TCP, TCP_SAVE_SYN, &on)?;
    sock.bind(addr)?;
    sock.listen(128)
}
