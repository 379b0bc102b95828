//! Counts the routes of one protocol through one IPv4 gateway in the calling thread's
//! namespace, straight from a netlink dump: a tenth of the time of decoding each route (the
//! failover benchmark polls it, so its cost is the benchmark's resolution).

use std::net::Ipv4Addr;

use anyhow::Result;
use gingham_agent::fib::wire;

pub(crate) const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
/// `struct rtmsg`, after the netlink header; the protocol is its sixth octet.
pub(crate) const RTMSG: usize = 12;

/// Our own socket, closed on drop.
pub(crate) struct Socket(pub(crate) libc::c_int);

impl Socket {
    /// A raw `NETLINK_ROUTE` socket, unbound.
    pub(crate) fn route() -> Result<Socket> {
        // SAFETY: a plain socket call; the descriptor is owned by the value returned.
        let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        anyhow::ensure!(fd >= 0, "netlink socket: {}", std::io::Error::last_os_error());
        Ok(Socket(fd))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: a descriptor this value owns.
        unsafe { libc::close(self.0) };
    }
}

/// Routes of `protocol` in the main and other tables that have `gateway` among their next hops.
pub fn routes_via(protocol: u8, gateway: Ipv4Addr) -> Result<usize> {
    let socket = Socket::route()?;
    let mut request = Vec::with_capacity(wire::HEADER + RTMSG);
    let start = wire::push_header(&mut request, RTM_GETROUTE, wire::NLM_F_REQUEST | wire::NLM_F_DUMP, 1);
    request.push(libc::AF_INET as u8);
    request.resize(wire::HEADER + RTMSG, 0);
    wire::finish(&mut request, start);
    // SAFETY: the buffer outlives the call.
    let sent = unsafe { libc::send(socket.0, request.as_ptr().cast(), request.len(), 0) };
    anyhow::ensure!(sent == request.len() as isize, "netlink send: {}", std::io::Error::last_os_error());
    let want = gateway.octets();
    let mut count = 0;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        // SAFETY: the buffer is valid for its length.
        let n = unsafe { libc::recv(socket.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
        anyhow::ensure!(n >= 0, "netlink recv: {}", std::io::Error::last_os_error());
        for (kind, _, payload) in wire::messages(&buf[..n as usize]) {
            match kind {
                wire::NLMSG_DONE => return Ok(count),
                wire::NLMSG_ERROR => anyhow::bail!("the route dump failed"),
                RTM_NEWROUTE if payload.len() >= RTMSG && payload[5] == protocol && has_gateway(&payload[RTMSG..], &want) => count += 1,
                _ => {}
            }
        }
    }
}

/// Whether route attributes name `gateway`, alone or in a multipath list.
fn has_gateway(attrs: &[u8], gateway: &[u8; 4]) -> bool {
    wire::attributes(attrs).any(|(kind, value)| match kind {
        RTA_GATEWAY => value == gateway,
        // struct rtnexthop (8 octets: its length, flags, hops, ifindex), then its attributes.
        RTA_MULTIPATH => {
            let mut at = 0;
            std::iter::from_fn(|| {
                let len = usize::from(u16::from_ne_bytes([*value.get(at)?, *value.get(at + 1)?]));
                if len < 8 || at + len > value.len() {
                    return None;
                }
                let hop = &value[at + 8..at + len];
                at += len.next_multiple_of(4);
                Some(hop)
            })
            .any(|hop| has_gateway(hop, gateway))
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut v = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&kind.to_ne_bytes());
        v.extend_from_slice(value);
        v.resize(v.len().next_multiple_of(4), 0);
        v
    }

    #[test]
    fn gateways_are_found_alone_and_in_multipath_lists() {
        let gw = [198, 18, 0, 13];
        assert!(has_gateway(&attr(RTA_GATEWAY, &gw), &gw));
        assert!(!has_gateway(&attr(RTA_GATEWAY, &[198, 18, 0, 12]), &gw));
        let hop = |g: [u8; 4]| {
            let inner = attr(RTA_GATEWAY, &g);
            let mut h = ((8 + inner.len()) as u16).to_ne_bytes().to_vec();
            h.extend_from_slice(&[0, 0, 3, 0, 0, 0]);
            h.extend_from_slice(&inner);
            h
        };
        let both = [hop([198, 18, 0, 12]), hop(gw)].concat();
        assert!(has_gateway(&attr(RTA_MULTIPATH, &both), &gw));
        assert!(!has_gateway(&attr(RTA_MULTIPATH, &hop([198, 18, 0, 12])), &gw));
        assert!(!has_gateway(&[8, 0, 5, 0, 198], &gw), "truncated");
    }
}
